"""Where a Limber spectrum takes its signal from: the redshift and wavenumber support of
tomographic kernels, which sets what a projected probe asks of the cosmology backend
(:meth:`fishcast.probes.base.Probe.requirements`). Shared by cosmic shear
(:mod:`fishcast.probes.weak_lensing`) and the photometric 3x2pt probe
(:mod:`fishcast.probes.photometric`).

Limber (flat universe, k = (ell + 1/2)/chi): a spectrum of two tracers with kernels W_a(z),
W_b(z) [1/Mpc] is

    C_ab(ell) = Int dz c/H(z) W_a(z) W_b(z) / chi(z)^2 P((ell + 1/2)/chi, z),

so its largest wavenumbers come from the smallest distances where the kernels are not
negligible. With P ~ k^slope locally, the integrand is proportional to

    I_ab(z) = |W_a(z) W_b(z)| c/H(z) chi^(-2 - slope)

(the same function at every ell: the share of C_ab from below a distance does not depend on
ell). :func:`chi_min` finds, for every pair, the distance chi_min [Mpc] below which at most
``share`` of the integral lies; a spectrum up to ell_max then needs P up to
k_max = (ell_max + 1/2) / chi_min [1/Mpc]. Beyond the k_max of the table the backend
extrapolates P as a power law with its local slope, so the share is not lost, only
approximated (to 0.1-2 % of itself, :data:`K_SHARE`).

The estimates use a fixed flat LCDM reference background (:data:`REF_OMEGA_M`,
:data:`REF_H`): requirements are known before any cosmology is computed. Kernels are given
on a grid refined toward z = 0 (:func:`reference_grid`), where the large wavenumbers come
from.

The redshift support (:func:`redshift_support`): the nodes a probe integrates over stop where
every n_i(z) has at most a tail of weight ``tail`` left above them; dropping a tail of weight
t changes a spectrum by ~2t or less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import C_KMS

__all__ = [
    "C_KMS", "Z_TAIL", "K_SHARE", "P_SLOPE", "DZ_MARGIN", "REF_OMEGA_M", "REF_H",
    "ReferenceGrid", "reference_grid", "redshift_support", "chi_min", "limber_k_max_of_pairs",
]

#: Largest weight of any n_i(z) allowed above the last redshift node a probe integrates over
#: (``integration.z_tail``); dropping a tail of weight t changes C_ij by ~2t or less.
Z_TAIL = 1e-5
#: Largest share of any C_ij(ell) allowed to come from wavenumbers above the k_max of the
#: cosmology table (``integration.k_share``). That share is not dropped: P(k) is extrapolated
#: beyond k_max as a power law with its local slope there, so the C_ell error is the share
#: times the extrapolation's relative error, which grows with the running of the slope
#: (d n/d ln k of P_nl near z = 0, where k > k_max comes from: -0.17 at 7/Mpc, -0.05 at
#: 20/Mpc for halofit takahashi; -0.28, -0.22 for HMcode 2020). Measured with CAMB 2.0.5,
#: 3-point stencils, against the k_max = 30/Mpc, z_max = 4 reference of
#: tests/test_requirements.py (C_ell error, largest change of a marginalized error):
#:
#: * Euclid WL pessimistic (ell <= 1500), share 0.02 -> 10.45/Mpc: 8e-5, 6.8e-4; 0.035 ->
#:   8.46: 1.8e-4, 1.1e-3; 0.04 -> 8.11: 2.1e-4, 7.9e-4; 0.045 -> 7.78: 2.5e-4, 9.4e-4; 0.05
#:   -> 7.15: 3.7e-4, 6.9e-4; 6.57/Mpc: 5.3e-4, 2.3e-3; 6.04: 7.7e-4, 7.7e-3 (n_s). The 3x2pt
#:   recipe has the same k_max (its shear spectra decide) and smaller error changes;
#: * Euclid WL optimistic (ell <= 5000), 0.02 -> 35.5/Mpc: 2.6e-5, 3.3e-3; 0.035 -> 27.6:
#:   2.5e-5, 1.8e-3; 0.04 -> 26.4: 2.4e-5, 1.3e-3; 0.045 -> 25.3: 2.4e-5, 9.3e-4; 0.05 -> 23.3:
#:   3.7e-5, 4.1e-3. Its errors scatter by a few 1e-3 with k_max (n_s, Omega_b, wa), the 30/Mpc
#:   reference's too: against a 45/Mpc one, 35.5/Mpc is off by 1.9e-3, 30/Mpc by 3.5e-3,
#:   25.3/Mpc by 1.4e-3 (share 0.05), 20.5/Mpc by 4.7e-3;
#: * LSST Y10 WL (ell <= 3000, HMcode), 0.02 -> 21.4/Mpc: 1.6e-4, 2.4e-3; 15.3/Mpc: 6.2e-4,
#:   2.6e-3; 12.4/Mpc: 1.3e-3, 1.0e-3. HMcode at z >= 3.3 sets its k_max (21.4/Mpc, see
#:   fishcast.cosmology.NONLINEAR_K_FLOOR), not the share.
#:
#: 0.045 is the largest share measured at which every shipped WL and 3x2pt recipe stays within
#: half the accuracy test's thresholds (C_ell 5e-4, errors 2.5e-3); at 0.05 the optimistic
#: recipe's errors do not. The C_ell error is 0.5-1 % of the share at 7-10/Mpc (takahashi),
#: 0.1 % at 25/Mpc, ~2 % for HMcode at 14/Mpc.
K_SHARE = 4.5e-2
#: Logarithmic slope of P(k) in the k_max estimate. Halofit/HMcode P_nl falls as k^-1.8 to
#: k^-2.3 for 3 < k < 30 /Mpc (and as k^-1.2 to k^-1.8 for 0.5 < k < 3 /Mpc); a shallower
#: slope gives the small distances (large k) more weight than they have, so the estimate
#: errs toward a larger k_max where the spectrum is steeper. A realistic slope for the shear
#: spectra (-2) does not make the estimate better: it moves the k_max of every WL recipe by
#: the same factor (with share 0.02: 7.48, 24.8, 14.5/Mpc for Euclid pessimistic, optimistic,
#: LSST Y10, against 10.4, 34.4, 20.6 at -1.5), which the share absorbs, and it would be too
#: steep for galaxy counts, whose k_max is ~1/Mpc where P_nl falls as k^-1.2.
P_SLOPE = -1.5
#: Photo-z shift allowed for in the redshift support when the shifts dz_i are free: n_i is
#: moved up by this much before its tail is measured (priors on dz_i are ~0.002-0.01).
DZ_MARGIN = 0.05
#: Reference background of the requirement estimates: flat LCDM, Omega_m = 0.3, h = 0.7
#: (requirements are known before any cosmology is computed; chi_min scales as 1/h).
REF_OMEGA_M, REF_H = 0.3, 0.7


@dataclass(frozen=True)
class ReferenceGrid:
    """Redshifts ``z`` refined toward 0 (the probe's nodes included), with the reference
    background there: comoving distance ``chi`` [Mpc] (0 at z = 0), E(z) = H(z)/H0 ``e_z``,
    the Hubble distance ``d_h`` = c/H0 [Mpc], and ``omega_m``, ``h`` of the reference."""

    z: np.ndarray
    chi: np.ndarray
    e_z: np.ndarray
    d_h: float
    omega_m: float
    h: float

    def interp(self, z_nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Rows of ``values`` (n, n_nodes) given on ``z_nodes``, linearly interpolated onto
        the refined grid: (n, n_grid)."""
        values = np.atleast_2d(np.asarray(values, dtype=float))
        return np.array([np.interp(self.z, z_nodes, v) for v in values])


def reference_grid(z: np.ndarray, omega_m: float = REF_OMEGA_M, h: float = REF_H) -> ReferenceGrid:
    """The fixed nodes ``z`` (increasing, z[0] = 0) refined toward z = 0 (200 log-spaced nodes
    below z[1], 500 linear ones up to z = 0.5), and the flat LCDM background (``omega_m``,
    ``h``) there (trapezoid in z of c/H)."""
    z = np.asarray(z, dtype=float)
    z_lo = min(1e-4, 0.1 * z[1])
    zf = np.union1d(np.concatenate([[0.0], np.geomspace(z_lo, z[1], 200)]), z)
    zf = np.union1d(zf, np.linspace(z_lo, min(0.5, z[-1]), 500))
    e_z = np.sqrt(omega_m * (1.0 + zf) ** 3 + 1.0 - omega_m)
    d_h = C_KMS / (100.0 * h)  # Hubble distance [Mpc]
    chi = d_h * np.concatenate([[0.0], np.cumsum(0.5 * (1 / e_z[1:] + 1 / e_z[:-1]) * np.diff(zf))])
    return ReferenceGrid(z=zf, chi=chi, e_z=e_z, d_h=d_h, omega_m=float(omega_m), h=float(h))


def redshift_support(z: np.ndarray, nz: np.ndarray, tail: float = Z_TAIL) -> int:
    """Number of leading nodes of ``z`` that carry every n_i(z) but a tail of weight at most
    ``tail`` (cumulative trapezoid on the fixed nodes; ``nz`` (n_bins, n_z) normalized per
    unit z). All nodes when ``tail`` is 0. At least 3 nodes."""
    z = np.asarray(z, dtype=float)
    nz = np.atleast_2d(np.asarray(nz, dtype=float))
    if tail <= 0:
        return z.size
    seg = 0.5 * (nz[:, 1:] + nz[:, :-1]) * np.diff(z)[None, :]
    above = np.cumsum(seg[:, ::-1], axis=1)[:, ::-1]  # above[:, a]: weight of [z_a, z_max]
    above = np.concatenate([above, np.zeros((nz.shape[0], 1))], axis=1)
    ok = np.all(above <= tail, axis=0)  # the weight above node a is negligible
    last = int(np.argmax(ok))  # first such node (ok[-1] is True)
    return max(last + 1, 3)


def chi_min(grid: ReferenceGrid, w_a: np.ndarray, w_b: np.ndarray, share: float = K_SHARE,
            slope: float = P_SLOPE) -> np.ndarray:
    """For every pair (a, b) of kernels ``w_a`` (n_a, n_grid), ``w_b`` (n_b, n_grid) [any
    unit] on the refined ``grid``: the distance chi_min [Mpc] below which the Limber
    integrand |W_a W_b| c/H chi^(-2 - slope) carries at most ``share`` of its integral
    (trapezoid in z). Returns (n_a, n_b); a pair with no weight at all gets the first
    positive distance of the grid."""
    chi = grid.chi
    w = np.divide(grid.d_h / grid.e_z * chi ** (-slope), chi**2, out=np.zeros_like(chi), where=chi > 0)
    integrand = np.abs(np.asarray(w_a)[:, None, :] * np.asarray(w_b)[None, :, :]) * w  # (n_a, n_b, n_grid)
    seg = 0.5 * (integrand[..., 1:] + integrand[..., :-1]) * np.diff(grid.z)
    cum = np.concatenate([np.zeros(integrand.shape[:-1] + (1,)), np.cumsum(seg, axis=-1)], axis=-1)
    total = cum[..., -1:]
    frac = np.divide(cum, total, out=np.ones_like(cum), where=total > 0)
    # first node at which the pair has accumulated more than ``share`` of its integral
    first = np.argmax(frac > share, axis=-1)
    return chi[np.maximum(first, 1)]


def limber_k_max_of_pairs(ell_max: float, grid: ReferenceGrid, w_a: np.ndarray, w_b: np.ndarray,
                          share: float = K_SHARE, slope: float = P_SLOPE) -> float:
    """Largest wavenumber [1/Mpc] the spectra of every pair of kernels ``w_a`` x ``w_b`` up
    to ``ell_max`` need: (ell_max + 1/2) / (the smallest :func:`chi_min` of the pairs)."""
    return (float(ell_max) + 0.5) / float(np.min(chi_min(grid, w_a, w_b, share, slope)))
