"""Multi-tracer galaxy clustering in redshift shells (Abramo 2012), Fourier-space Fisher.

Physics (see ``../shared/notes/physics.md`` sections 1-2).  Tracers ``a = 1..N`` share one
volume-limited redshift shell of comoving volume ``V`` [(Mpc/h)^3] with constant number
densities ``n_a`` [(h/Mpc)^3], linear biases ``b_a`` and growth rate ``f``.  The matter power
spectrum ``P(k)`` [(Mpc/h)^3] is the *linear* one at the shell's central redshift, ``k`` is in
[h/Mpc] and ``mu`` is the cosine of the angle between the wave vector and the line of sight.

Covariance of the tracer overdensities per Fourier mode (Kaiser RSD, Poisson shot noise,
optional Gaussian damping of each tracer's amplitude)::

    A_a(k, mu)   = (b_a + f mu^2) D_a(k, mu)
    D_a(k, mu)   = exp(-k^2 mu^2 sigma_a^2 / 2),  sigma_a^2 = sigma_FoG^2 + sigma_chi,a^2
    C_ab(k, mu)  = A_a A_b P(k) + delta_ab / n_a

``sigma_FoG`` [Mpc/h] is the line-of-sight displacement of a galaxy by its peculiar velocity
(Gaussian Fingers of God, common to all tracers; the auto power of tracer a is damped by
``exp(-k^2 mu^2 sigma_FoG^2)``), ``sigma_chi,a`` [Mpc/h] the line-of-sight displacement from
the redshift error of tracer a.  With RSD off, ``f = 0`` and the damping is off as well.

Fisher matrix of the shell (Gaussian field, trace term only, the 1/2 of the trace formula
and the half of k-space folded together)::

    F_ij = V/(8 pi^2) Int_{-1}^{1} dmu Int k^2 dk  Tr[C^-1 C_,i C^-1 C_,j]

Quadrature (fixed nodes, the same at every cosmology):

* k: ``n_k`` bands between ``k_min`` and ``k_max`` [h/Mpc]; each band is evaluated at its
  midpoint with the exact weight ``Int_band k^2 dk = (k_hi^3 - k_lo^3)/3``.  A band power
  ``P_i`` is the amplitude of P in band i (one node per band).
* mu: the integrand is even in mu; ``Int_{-1}^{1} dmu`` uses the ``n_mu`` positive nodes of
  the ``2 n_mu``-point Gauss-Legendre rule on [-1, 1] with doubled weights (they sum to 2;
  exact for even polynomials in mu of degree <= 4 n_mu - 2).

Alcock-Paczynski distortions are *not* modelled: the k and mu of a mode are those of the
fiducial cosmology at every parameter point.

Survey model: a sky area and redshift shells, each treated as volume-limited with constant
densities at its effective redshift (the shell midpoint); shells add.  The k bands of each
shell are fixed in h/Mpc; by default k_min = 2 pi / V^(1/3) with V the shell volume in a
fixed flat LCDM reference (Omega_m = 0.3), so that the nodes do not move with the cosmology.
The shell volume used as the Fisher weight is that of the fiducial cosmology (from
``cosmo.chi_of`` and h; flat-space volume).  A tracer with no objects in a shell is absent
from it (no information, no bias parameter there).

Layout: pure, vectorized numpy functions (no loop over modes or tracer pairs) -- quadrature,
the tracer covariance and its analytic derivatives, the band-power / bias / f Fisher
(:func:`band_fisher`), each tracer alone (:func:`single_tracer_band_fishers`), effective
volumes, the closed forms of physics.md section 2 and the projection :func:`project`; then
the survey configuration :class:`CountsInCellsConfig` and the probe
:class:`CountsInCellsProbe` made by :func:`build`.  The exact position-space counts-in-cells
Fisher of a box is in :mod:`fishcast.exact_cells`.
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fishcast.constants import C_KMS  # noqa: F401 (public here too)
from fishcast.errors import ComputationError, FileFormatError, InputError, NumericalError, at_key
from fishcast.parameters import Domain, NuisanceParameters, ParameterFamily, register
from fishcast.probes import rsd_model
from fishcast.probes.base import Cosmology, CosmologyRequirements, Probe
from fishcast.probes.sky import FULL_SKY_DEG2, SkyAreaConfig  # noqa: F401 (FULL_SKY_DEG2: public here too)

#: Largest ratio of a true to an observed wavenumber the Alcock-Paczynski mapping reaches at
#: the points of a run (k_true = k_obs sqrt((1 - mu^2)/q_perp^2 + mu^2/q_par^2) x h_fid/h
#: with ``observed_h: fiducial``): q_perp, q_par and h within 20 % of the fiducial (derivative
#: steps and validity checks move them by a few per cent).
AP_K_MARGIN = 1.25

# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------


def mu_quadrature(n_mu: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes mu in (0, 1) and weights for ``Int_{-1}^{1} dmu g(mu)`` of an even function g.

    The positive half of the ``2 n_mu``-point Gauss-Legendre rule on [-1, 1], weights
    doubled (they sum to 2): exact for even polynomials of degree <= 4 n_mu - 2.
    """
    if n_mu < 1:
        raise InputError(f"n_mu must be >= 1, got {n_mu}")
    from scipy.special import roots_legendre  # a banded eigenproblem: fast for large n_mu

    x, w = roots_legendre(2 * int(n_mu))
    pos = x > 0
    order = np.argsort(x[pos])
    return x[pos][order], 2.0 * w[pos][order]


def k_bands(k_min: float, k_max: float, n_k: int, spacing: str = "linear"):
    """Band edges, nodes and weights in k [h/Mpc].

    Returns ``(edges (n_k+1,), k (n_k,), k2dk (n_k,))`` where ``k`` is the midpoint of each
    band and ``k2dk = (k_hi^3 - k_lo^3)/3`` [(h/Mpc)^3] is the exact integral of k^2 over it.
    ``spacing`` is "linear" or "log" (edges equally spaced in k or in ln k).
    """
    if not (0.0 < k_min < k_max):
        raise InputError(f"need 0 < k_min < k_max, got k_min={k_min}, k_max={k_max} h/Mpc")
    if n_k < 1:
        raise InputError(f"n_k must be >= 1, got {n_k}")
    if spacing == "linear":
        edges = np.linspace(k_min, k_max, int(n_k) + 1)
    elif spacing == "log":
        edges = np.geomspace(k_min, k_max, int(n_k) + 1)
    else:
        raise InputError(f"k spacing must be 'linear' or 'log', got {spacing!r}")
    k = 0.5 * (edges[1:] + edges[:-1])
    k2dk = (edges[1:] ** 3 - edges[:-1] ** 3) / 3.0
    return edges, k, k2dk


def mode_weights(volume: float, k2dk: np.ndarray, w_mu: np.ndarray) -> np.ndarray:
    """Weights ``V/(8 pi^2) (Int_band k^2 dk) w_mu`` of the trace formula, shape (n_k, n_mu).

    volume [(Mpc/h)^3], k2dk [(h/Mpc)^3]: the weights are dimensionless (numbers of modes/4:
    their sum over mu is N_k/2 with N_k = V k^2 dk / (2 pi^2) the number of modes)."""
    return volume / (8.0 * np.pi**2) * np.asarray(k2dk)[:, None] * np.asarray(w_mu)[None, :]


# ---------------------------------------------------------------------------------------------
# the tracer covariance and its derivatives
# ---------------------------------------------------------------------------------------------


def damping(k: np.ndarray, mu: np.ndarray, sigma: np.ndarray | None, n_tracer: int) -> np.ndarray:
    """Amplitude damping ``D_a(k, mu) = exp(-k^2 mu^2 sigma_a^2 / 2)``, shape (n_k, n_mu, N).

    k [h/Mpc] (n_k,), mu (n_mu,), sigma [Mpc/h]: None (no damping), a scalar (all tracers)
    or (N,) per tracer, the total line-of-sight smearing sigma_a^2 = sigma_FoG^2 + sigma_chi,a^2.
    """
    k = np.asarray(k, dtype=float)
    mu = np.asarray(mu, dtype=float)
    if sigma is None:
        return np.ones((k.size, mu.size, n_tracer))
    s = np.broadcast_to(np.asarray(sigma, dtype=float), (n_tracer,))
    kmu2 = (k[:, None] * mu[None, :]) ** 2
    return np.exp(-0.5 * kmu2[..., None] * s[None, None, :] ** 2)


def _with_kernel(D: np.ndarray, kernel) -> np.ndarray:
    """Damping D (n_k, n_mu, N) times sqrt(kernel) (n_k, n_mu): a common factor K of the
    signal enters each tracer amplitude as sqrt(K)."""
    if kernel is None:
        return D
    return D * np.sqrt(np.asarray(kernel, dtype=float))[..., None]


def tracer_amplitudes(k, mu, b, f: float, sigma=None) -> np.ndarray:
    """``A_a(k, mu) = (b_a + f mu^2) D_a(k, mu)``, shape (n_k, n_mu, N) (dimensionless)."""
    b = np.atleast_1d(np.asarray(b, dtype=float))
    mu = np.asarray(mu, dtype=float)
    D = damping(k, mu, sigma, b.size)
    return (b[None, None, :] + f * mu[None, :, None] ** 2) * D


def tracer_covariance(k, mu, pk, b, f: float, n, sigma=None) -> np.ndarray:
    """Tracer covariance ``C_ab(k, mu) = A_a A_b P(k) + delta_ab / n_a`` [(Mpc/h)^3].

    k [h/Mpc] (n_k,), mu (n_mu,), pk [(Mpc/h)^3] (n_k,), b (N,), f growth rate, n
    [(h/Mpc)^3] (N,), sigma [Mpc/h] damping length (see :func:`damping`).
    Returns shape (n_k, n_mu, N, N).
    """
    n = np.atleast_1d(np.asarray(n, dtype=float))
    A = tracer_amplitudes(k, mu, b, f, sigma)
    pk = np.asarray(pk, dtype=float)
    C = A[..., :, None] * A[..., None, :] * pk[:, None, None, None]
    return C + np.diag(1.0 / n)


def covariance_derivatives(k, mu, pk, b, f: float, sigma=None):
    """Analytic derivatives of :func:`tracer_covariance` (the noise does not depend on them).

    Returns ``(dC_dlnP, dC_dlnb, dC_df)``:

    * ``dC_dlnP`` (n_k, n_mu, N, N): ``A_a A_b P`` -- the derivative w.r.t. ln P at each k
      node, i.e. w.r.t. the ln band power of that node's band (it is zero at other nodes);
    * ``dC_dlnb`` (N, n_k, n_mu, N, N): w.r.t. ln b_c, ``P b_c D_c (e_c A^T + A e_c^T)``;
    * ``dC_df`` (n_k, n_mu, N, N): w.r.t. f (not ln f), ``P mu^2 (D A^T + A D^T)``.
    """
    b = np.atleast_1d(np.asarray(b, dtype=float))
    N = b.size
    mu = np.asarray(mu, dtype=float)
    pk = np.asarray(pk, dtype=float)[:, None, None]
    D = damping(k, mu, sigma, N)
    A = (b[None, None, :] + f * mu[None, :, None] ** 2) * D
    dlnP = A[..., :, None] * A[..., None, :] * pk[..., None]
    # dA_a/dln b_c = delta_ac b_c D_c  -> G[c, ..., a]
    G = np.einsum("ca,...a->c...a", np.diag(b), D)
    outer = G[..., :, None] * A[None, ..., None, :]
    dlnb = (outer + np.swapaxes(outer, -1, -2)) * pk[None, ..., None]
    dA_df = mu[None, :, None] ** 2 * D
    o = dA_df[..., :, None] * A[..., None, :]
    df = (o + np.swapaxes(o, -1, -2)) * pk[..., None]
    return dlnP, dlnb, df


# ---------------------------------------------------------------------------------------------
# Fisher matrices
# ---------------------------------------------------------------------------------------------


def _whitener(C: np.ndarray) -> np.ndarray:
    """``L^-1`` with ``C = L L^T`` (Cholesky), batched over leading axes."""
    try:
        L = np.linalg.cholesky(C)
    except np.linalg.LinAlgError as exc:  # pragma: no cover - C has positive noise
        raise NumericalError(f"tracer covariance is not positive definite: {exc}") from exc
    return np.linalg.inv(L)


def _whiten(Linv: np.ndarray, dC: np.ndarray) -> np.ndarray:
    """``L^-1 dC L^-T`` (symmetric when dC is); Tr[C^-1 X C^-1 Y] = sum(whiten(X) * whiten(Y))."""
    return Linv @ dC @ np.swapaxes(Linv, -1, -2)


def fisher_trace(C: np.ndarray, dC: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """General trace-formula Fisher ``F_pq = sum_modes w Tr[C^-1 dC_p C^-1 dC_q]``.

    C (*modes, N, N), dC (n_par, *modes, N, N), weights broadcastable to ``modes`` (for one
    shell: :func:`mode_weights`).  Symmetric positive semi-definite by construction
    (computed as X W X^T with X the whitened derivatives).  Returns (n_par, n_par).
    """
    Linv = _whitener(C)
    X = _whiten(Linv[None], dC)
    n_par = X.shape[0]
    w = np.broadcast_to(np.asarray(weights, dtype=float), C.shape[:-2])
    Xw = X * np.sqrt(w)[None, ..., None, None]
    Xf = Xw.reshape(n_par, -1)
    F = Xf @ Xf.T
    return 0.5 * (F + F.T)


def band_parameter_names(n_k: int, tracers, rsd: bool) -> list[str]:
    """Names of the band-power/bias/f parameters of one shell: ``lnP_<i>`` for band i
    (1-based), ``lnb_<tracer>``, and ``f`` when RSD is on."""
    return [f"lnP_{i + 1}" for i in range(n_k)] + [f"lnb_{t}" for t in tracers] + (
        ["f"] if rsd else []
    )


@dataclass(frozen=True)
class Shell:
    """One redshift shell as the band Fisher functions see it (units as in
    :func:`tracer_covariance`).

    k [h/Mpc] (n_k,): the band nodes; k2dk [(h/Mpc)^3] (n_k,): Int_band k^2 dk; mu, w_mu
    (n_mu,): the mu quadrature of :func:`mu_quadrature`; pk [(Mpc/h)^3] (n_k,): P at the
    nodes; b (N,): linear biases; f: growth rate; n [(h/Mpc)^3] (N,): densities; volume
    [(Mpc/h)^3]; sigma [Mpc/h]: damping length (None, a scalar or (N,), see :func:`damping`);
    rsd: Kaiser RSD on (with rsd False, f is 0 and the damping is off); kernel (n_k, n_mu) or
    None: a common factor of the signal, ``P(k) -> P(k) K(k, mu)`` (e.g. the de-wiggling and
    Lorentzian Fingers of God of :mod:`fishcast.probes.rsd_model`, as P_eff / P_lin) -- the
    band powers remain those of P, f is varied at fixed K -- entering each tracer amplitude
    as sqrt(K).  Arrays are stored as float arrays (b and n at least 1-d).
    """

    k: np.ndarray
    k2dk: np.ndarray
    mu: np.ndarray
    w_mu: np.ndarray
    pk: np.ndarray
    b: np.ndarray
    f: float
    n: np.ndarray
    volume: float
    sigma: np.ndarray | float | None = None
    rsd: bool = True
    kernel: np.ndarray | None = None

    def __post_init__(self):
        put = object.__setattr__
        for name in ("k", "k2dk", "mu", "w_mu", "pk"):
            put(self, name, np.asarray(getattr(self, name), dtype=float))
        put(self, "b", np.atleast_1d(np.asarray(self.b, dtype=float)))
        put(self, "n", np.atleast_1d(np.asarray(self.n, dtype=float)))
        put(self, "rsd", bool(self.rsd))
        put(self, "f", float(self.f) if self.rsd else 0.0)
        put(self, "volume", float(self.volume))
        if not self.rsd:
            put(self, "sigma", None)
        if self.kernel is not None:
            put(self, "kernel", np.asarray(self.kernel, dtype=float))

    @property
    def n_tracer(self) -> int:
        return int(self.b.size)


def band_fisher(shell: Shell) -> np.ndarray:
    """Band-power / bias / f Fisher of one shell (Abramo 2012).

    Parameters, in this order: ``ln P_i`` for each k band (n_k), ``ln b_a`` for each tracer
    (N), and ``f`` if ``rsd`` (with rsd False, f and the damping are ignored).  Units as in
    :func:`tracer_covariance`; volume [(Mpc/h)^3].  The band-band block is diagonal (each
    band power changes only its own band).  Returns (n_k + N + rsd, n_k + N + rsd).

    Evaluation: the signal is rank one, ``C = P A A^T + diag(1/n)``, and every derivative is
    ``P (x A^T + A x^T)`` with x = A/2 (ln P), ``g_c = b_c D_c e_c`` (ln b_c) or ``mu^2 D``
    (f).  With ``<x, y> = x^T C^-1 y`` (Sherman-Morrison: ``C^-1 = diag(n) - alpha (nA)(nA)^T``,
    ``alpha = P/(1 + P sum n A^2)``), ``Tr[C^-1 (x A^T + A x^T) C^-1 (y A^T + A y^T)] =
    2 (<x,y><A,A> + <x,A><A,y>)``.  O(n_k n_mu N^2), no matrix inverses; checked against
    :func:`fisher_trace` in the tests.  The shell's ``kernel`` K, if any, multiplies P A A^T.
    """
    k, k2dk, mu, w_mu, b, f, n, volume, sigma, rsd = (
        shell.k, shell.k2dk, shell.mu, shell.w_mu, shell.b, shell.f, shell.n, shell.volume, shell.sigma, shell.rsd)
    pk = shell.pk
    N = b.size
    P = np.asarray(pk, dtype=float)[:, None]  # (n_k, 1)
    D = _with_kernel(damping(k, mu, sigma, N), shell.kernel)  # (n_k, n_mu, N)
    A = (b + f * mu[None, :, None] ** 2) * D
    nA = n * A
    sA = np.sum(nA * A, axis=-1)  # (n_k, n_mu)
    alpha = P / (1.0 + P * sA)
    AA = sA / (1.0 + P * sA)  # <A, A>
    # the vectors x of the nuisance derivatives, as (n_k, n_mu, n_x, N)
    xs = [np.einsum("c,kmc,ca->kmca", b, D, np.eye(N))]
    if rsd:
        xs.append((mu[None, :, None] ** 2 * D)[:, :, None, :])
    X = np.concatenate(xs, axis=2)
    nAX = np.einsum("kma,kmxa->kmx", nA, X)  # (nA . x)
    AX = nAX / (1.0 + P * sA)[..., None]  # <A, x>
    XX = np.einsum("kmxa,a,kmya->kmxy", X, n, X) - alpha[..., None, None] * nAX[..., :, None] * nAX[..., None, :]
    W = mode_weights(volume, k2dk, w_mu) * P**2  # (n_k, n_mu)
    n_k = P.shape[0]
    n_x = X.shape[2]
    F = np.zeros((n_k + n_x, n_k + n_x))
    idx = np.arange(n_k)
    F[idx, idx] = np.sum(W * AA**2, axis=1)  # x = y = A/2: 2 (AA^2/4 + AA^2/4)
    cross = np.einsum("km,km,kmx->kx", W, AA, AX) * 2.0  # x = A/2: 2 (<A,y>AA/2 + AA/2 <A,y>)
    F[:n_k, n_k:] = cross
    F[n_k:, :n_k] = cross.T
    F[n_k:, n_k:] = 2.0 * (np.einsum("km,kmxy,km->xy", W, XX, AA)
                           + np.einsum("km,kmx,kmy->xy", W, AX, AX))
    return 0.5 * (F + F.T)


def single_tracer_band_fishers(shell: Shell) -> np.ndarray:
    """Each tracer alone (FKP): the band/bias/f Fisher of tracer a using only its auto
    covariance ``C_aa``, embedded in the joint parameter list of :func:`band_fisher` (zeros on
    the other tracers' biases).  Vectorized over tracers.  Returns (N, n_par, n_par); their
    sum over the first axis is the naive sum of single-tracer Fishers."""
    k, k2dk, mu, w_mu, b, f, n, volume, sigma, rsd = (
        shell.k, shell.k2dk, shell.mu, shell.w_mu, shell.b, shell.f, shell.n, shell.volume, shell.sigma, shell.rsd)
    pk = shell.pk
    N = b.size
    D = _with_kernel(damping(k, mu, sigma, N), shell.kernel)  # (n_k, n_mu, N)
    A = (b[None, None, :] + f * mu[None, :, None] ** 2) * D
    pk3 = np.asarray(pk, dtype=float)[:, None, None]
    S = A**2 * pk3  # (n_k, n_mu, N) signal of each tracer
    Caa = S + 1.0 / n[None, None, :]
    W = mode_weights(volume, k2dk, w_mu)[..., None]  # (n_k, n_mu, 1)
    yP = S / Caa  # C^-1 dC/dlnP for each tracer
    yb = 2.0 * pk3 * b[None, None, :] * D * A / Caa
    yf = 2.0 * pk3 * mu[None, :, None] ** 2 * D * A / Caa
    n_k = S.shape[0]
    n_par = n_k + N + (1 if rsd else 0)
    F = np.zeros((N, n_par, n_par))
    ta = np.arange(N)
    ik = np.arange(n_k)
    F[:, ik, ik] = np.einsum("kma,kma->ak", W * yP, yP)
    F[ta, :n_k, n_k + ta] = np.einsum("kma,kma->ak", W * yP, yb)
    F[ta, n_k + ta, :n_k] = F[ta, :n_k, n_k + ta]
    F[ta, n_k + ta, n_k + ta] = np.einsum("kma,kma->a", W * yb, yb)
    if rsd:
        jf = n_k + N
        F[:, :n_k, jf] = np.einsum("kma,kma->ak", W * yP, yf)
        F[:, jf, :n_k] = F[:, :n_k, jf]
        F[ta, n_k + ta, jf] = np.einsum("kma,kma->a", W * yb, yf)
        F[ta, jf, n_k + ta] = F[ta, n_k + ta, jf]
        F[:, jf, jf] = np.einsum("kma,kma->a", W * yf, yf)
    return F


def effective_volumes(shell: Shell):
    """Effective volumes [(Mpc/h)^3] per k node, per tracer and combined.

    ``V_eff,a(k) = V (1/2) Int_{-1}^{1} dmu [P_a/(1+P_a)]^2`` with ``P_a = n_a A_a^2 P`` and the
    combined ``V_eff(k) = V (1/2) Int dmu [P_tot/(1+P_tot)]^2``, ``P_tot = sum_a P_a`` (the
    information on ln P with the biases known is ``N_k/2 V_eff/V``).
    Returns ``(per_tracer (n_k, N), combined (n_k,))``.
    """
    k, mu, w_mu, pk, b, f, n, volume, sigma = (
        shell.k, shell.mu, shell.w_mu, shell.pk, shell.b, shell.f, shell.n, shell.volume, shell.sigma)
    A = _with_kernel(tracer_amplitudes(k, mu, b, f, sigma), shell.kernel)
    Pa = n[None, None, :] * A**2 * np.asarray(pk, dtype=float)[:, None, None]
    Pt = Pa.sum(axis=-1)
    wm = 0.5 * np.asarray(w_mu)
    per = volume * np.einsum("m,kma->ka", wm, (Pa / (1.0 + Pa)) ** 2)
    comb = volume * np.einsum("m,km->k", wm, (Pt / (1.0 + Pt)) ** 2)
    return per, comb


def fkp_sigma_lnP(n_modes, nP):
    """Feldman-Kaiser-Peacock (1994): ``sigma(P)/P = sqrt(2/N_k) (1 + 1/(nP))``; nP
    dimensionless (n [(h/Mpc)^3] times b^2 P [(Mpc/h)^3]), N_k the number of modes."""
    return np.sqrt(2.0 / np.asarray(n_modes)) * (1.0 + 1.0 / np.asarray(nP))


# ---------------------------------------------------------------------------------------------
# closed forms (real space, f = 0; physics.md section 2), per unit phase-space volume:
# F_ij = Int d^3x d^3k/(2 pi)^3 f_ij, so f_ij = (1/2) Tr[C^-1 C_,i C^-1 C_,j] per mode.
# ``Pa`` = n_a b_a^2 P (dimensionless effective clustering strengths), shape (..., N).
# ---------------------------------------------------------------------------------------------


def closed_form_lnP_lnP(Pa) -> np.ndarray:
    """``f[lnP, lnP] = 1/2 [P_tot/(1+P_tot)]^2``, shape (...)."""
    Pt = np.sum(Pa, axis=-1)
    return 0.5 * (Pt / (1.0 + Pt)) ** 2


def closed_form_lnP_lnb(Pa) -> np.ndarray:
    """``f[lnP, ln b_g] = P_g P_tot / (1+P_tot)^2``, shape (..., N)."""
    Pa = np.asarray(Pa, dtype=float)
    Pt = Pa.sum(axis=-1, keepdims=True)
    return Pa * Pt / (1.0 + Pt) ** 2


def closed_form_lnb_lnb(Pa) -> np.ndarray:
    """``f[ln b_g, ln b_d] = [delta_gd P_g P_tot (1+P_tot) + P_g P_d (1-P_tot)]/(1+P_tot)^2``,
    shape (..., N, N)."""
    Pa = np.asarray(Pa, dtype=float)
    Pt = Pa.sum(axis=-1)[..., None, None]
    N = Pa.shape[-1]
    diag = np.eye(N) * (Pa * Pa.sum(axis=-1, keepdims=True) * (1.0 + Pa.sum(axis=-1, keepdims=True)))[..., None, :]
    off = Pa[..., :, None] * Pa[..., None, :] * (1.0 - Pt)
    return (diag + off) / (1.0 + Pt) ** 2


# ---------------------------------------------------------------------------------------------
# projection
# ---------------------------------------------------------------------------------------------


def project(F_band: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    """``F_theta = J^T F_band J`` with ``J[i, alpha] = d p_i / d theta_alpha``, p the
    band-power/bias/f parameters (ln P_i, ln b_a, f) of :func:`band_fisher`."""
    J = np.asarray(jacobian, dtype=float)
    F = J.T @ np.asarray(F_band, dtype=float) @ J
    return 0.5 * (F + F.T)


def geometry_parameter_names(n_k: int, tracers, rsd: bool) -> list[str]:
    """:func:`band_parameter_names` plus ``lnq_perp``, ``lnq_par`` (Alcock-Paczynski)."""
    return band_parameter_names(n_k, tracers, rsd) + ["lnq_perp", "lnq_par"]


def geometry_band_fisher(k, k2dk, mu, w_mu, pk, n_eff, b, f: float, n, volume: float,
                         sigma=None, rsd: bool = True, extra_noise=None) -> np.ndarray:
    """Band-power / bias / f Fisher of one shell with the two Alcock-Paczynski parameters
    ``ln q_perp``, ``ln q_par`` appended (parameter order of :func:`geometry_parameter_names`),
    at q_perp = q_par = 1.

    The observed covariance ``C = A A^T P(k_t) / (q_perp^2 q_par) + diag(1/n)`` with
    ``A_a = (b_a + f mu_t^2) D_a(k, mu)`` (damping in the observed frame), k_t, mu_t the true
    wavevector (:mod:`fishcast.probes.rsd_model`), P represented by its band powers at the
    nodes and its local slope ``n_eff = d ln P / d ln k`` [(n_k,)] -- so that, by the chain
    rule, ``J^T F J`` with J the derivatives of (ln P_i, ln b_a, f, ln q_perp, ln q_par)
    is the Fisher matrix of the full observed-frame model (Seo & Eisenstein 2003).  General
    trace formula with analytic derivatives; units as in :func:`band_fisher`.
    ``extra_noise`` (N,) adds to 1/n (a residual shot noise).
    """
    from fishcast.probes import rsd_model

    b = np.atleast_1d(np.asarray(b, dtype=float))
    n = np.atleast_1d(np.asarray(n, dtype=float))
    N = b.size
    f = float(f) if rsd else 0.0
    if not rsd:
        sigma = None
    mu = np.asarray(mu, dtype=float)
    P = np.asarray(pk, dtype=float)[:, None, None, None]  # (n_k, 1, 1, 1)
    D = damping(k, mu, sigma, N)  # (n_k, n_mu, N)
    A = (b + f * mu[None, :, None] ** 2) * D
    S = A[..., :, None] * A[..., None, :] * P  # (n_k, n_mu, N, N)
    noise = 1.0 / n + (0.0 if extra_noise is None else np.asarray(extra_noise, dtype=float))
    C = S + np.diag(noise)
    n_k = np.size(k)
    dk_perp, dk_par, dm2_perp, dm2_par = rsd_model.ap_log_derivatives(mu)  # (n_mu,)
    ne = np.asarray(n_eff, dtype=float)[:, None, None, None]
    derivs = []
    for i in range(n_k):  # ln P_i: only band i
        d = np.zeros_like(C)
        d[i] = S[i]
        derivs.append(d)
    for c in range(N):  # ln b_c
        g = np.zeros_like(A)
        g[..., c] = b[c] * D[..., c]
        o = g[..., :, None] * A[..., None, :] * P
        derivs.append(o + np.swapaxes(o, -1, -2))
    dA_dmu2 = f * D  # dA_a / d(mu_t^2)
    if rsd:
        o = (mu[None, :, None] ** 2 * D)[..., :, None] * A[..., None, :] * P
        derivs.append(o + np.swapaxes(o, -1, -2))
    for amp, dlnk, dm2 in ((-2.0, dk_perp, dm2_perp), (-1.0, dk_par, dm2_par)):
        d = S * (amp + ne * dlnk[None, :, None, None])
        o = (dA_dmu2 * dm2[None, :, None])[..., :, None] * A[..., None, :] * P
        derivs.append(d + o + np.swapaxes(o, -1, -2))
    return fisher_trace(C, np.array(derivs), mode_weights(volume, k2dk, w_mu))


# =============================================================================================
# Configuration (the ``probes.counts_in_cells`` section of a survey YAML)
# =============================================================================================

#: Largest k_max [h/Mpc] of the shells: far beyond where a linear (Kaiser) model of the
#: spectrum holds (~0.3 h/Mpc), and such that the probe's k need stays inside what the
#: backend tabulates (500/Mpc); a huge value (1e300) overflowed the band arithmetic before
K_MAX_LIMIT = 100.0
#: Omega_m of the flat LCDM reference used only for the *default* k_min of each shell (so
#: that the k nodes are fixed in h/Mpc and do not move with the cosmology)
REFERENCE_OMEGA_M = 0.3
DENSITY_UNITS = ("(h/Mpc)^3", "deg^-2 per unit z")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

# the nuisance parameters of this probe, in the terms of the parameter registry
#: linear bias of a tracer in a shell (shell index from 1)
BIAS_PER_SHELL = register(ParameterFamily(
    "b_{tracer}_{shell}", "", r"b_{\rm {tracer},{shell}}", domain=Domain(lower=0.0),
    description="linear bias of tracer {tracer} in shell {shell}"))
#: the leading coefficient of a tracer's b(z) form (inverse_growth: b = c0/D(z) > 0;
#: polynomial: b(0) = c0 > 0); registered before :data:`BIAS_COEFFICIENT`, which it shadows
#: for j = 0
BIAS_LEADING_COEFFICIENT = register(ParameterFamily(
    "b_{tracer}_c0", "", r"c^{\rm {tracer}}_{0}", domain=Domain(lower=0.0),
    description="coefficient c_0 of the b(z) form of tracer {tracer} (b at z = 0, or b D for inverse_growth)"))
#: coefficient j >= 1 of a tracer's polynomial b(z) = sum c_j z^j: any sign (a bias that
#: falls with z over the shells has c_1 < 0); b itself must stay positive in every shell,
#: checked at each point (:meth:`CountsInCellsProbe.biases`)
BIAS_COEFFICIENT = register(ParameterFamily(
    "b_{tracer}_c{j}", "", r"c^{\rm {tracer}}_{{j}}",
    description="coefficient c_{j} of the b(z) form of tracer {tracer}"))
#: ln b of a tracer in a shell (``bias.parameter: lnb``, as Euclid IST:F)
LN_BIAS_PER_SHELL = register(ParameterFamily(
    "lnb_{tracer}_{shell}", "", r"\ln b_{\rm {tracer},{shell}}", step_scale=1.0, offset=True,
    description="natural log of the linear bias of tracer {tracer} in shell {shell}"))
#: residual shot noise of a tracer in a shell, added to 1/n (fiducial 0)
RESIDUAL_SHOT_NOISE = register(ParameterFamily(
    "Ps_{tracer}_{shell}", "(Mpc/h)^3", r"P_{\rm s}^{\rm {tracer},{shell}}", step_scale=100.0, offset=True,
    fiducial=0.0, description="residual shot noise of tracer {tracer} in shell {shell}"))
#: sigma_v and sigma_p of a shell over their fiducial values (dispersions: free)
SIGMA_V_RATIO = register(ParameterFamily(
    "sv_{shell}", "", r"\sigma_v^{({shell})}/\sigma_v^{\rm fid}", domain=Domain(lower=0.0),
    fiducial=1.0, description="sigma_v of shell {shell} over its fiducial value"))
SIGMA_P_RATIO = register(ParameterFamily(
    "sp_{shell}", "", r"\sigma_p^{({shell})}/\sigma_p^{\rm fid}", domain=Domain(lower=0.0),
    fiducial=1.0, description="sigma_p of shell {shell} over its fiducial value"))
#: one sigma_v and one sigma_p for the whole survey over their fiducial value (dispersions: survey)
SIGMA_V_SURVEY = register(ParameterFamily(
    "sv_survey", "", r"\sigma_v/\sigma_v^{\rm fid}", domain=Domain(lower=0.0), fiducial=1.0,
    description="sigma_v of every shell over its fiducial value at the survey's mean redshift"))
SIGMA_P_SURVEY = register(ParameterFamily(
    "sp_survey", "", r"\sigma_p/\sigma_p^{\rm fid}", domain=Domain(lower=0.0), fiducial=1.0,
    description="sigma_p of every shell over its fiducial value at the survey's mean redshift"))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DensityConfig(_Model):
    """Number density of one tracer, with its unit stated.

    unit "(h/Mpc)^3": comoving number density n; "deg^-2 per unit z": dN/dz per square
    degree, converted to n = area Int_shell dN/dz dz / V_shell with the shell volume of the
    cosmology at hand.  Give either ``values`` (one per shell: n, or the mean dN/dz over the
    shell) or a table ``z`` + ``table`` (linear interpolation; for (h/Mpc)^3 the shell value
    is the volume-weighted mean Int n dV / V, for dN/dz the integral over the shell) or a
    two-column text ``file`` (z, value).  A tracer with no objects in a shell (value 0, or a
    table that vanishes over the shell) is absent from that shell: it carries no information
    there and has no bias parameter there.
    """

    unit: Literal["(h/Mpc)^3", "deg^-2 per unit z"] = Field(
        ..., description="unit of the numbers: '(h/Mpc)^3' (comoving density) or 'deg^-2 per unit z' (dN/dz per deg^2)")
    values: list[float] | None = Field(None, description="one value per redshift shell")
    z: list[float] | None = Field(None, description="redshifts of a table (increasing), with `table`")
    table: list[float] | None = Field(None, description="values at the redshifts `z`")
    file: pathlib.Path | None = Field(None, description="two-column text file (z, value), relative to the survey file")

    @model_validator(mode="after")
    def _one_form(self):
        forms = [self.values is not None, self.table is not None or self.z is not None, self.file is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of `values` (per shell), `z` + `table`, or `file`")
        if self.table is not None or self.z is not None:
            if self.table is None or self.z is None or len(self.z) != len(self.table) or len(self.z) < 2:
                raise ValueError("`z` and `table` must both be given, with the same length >= 2")
            if any(b <= a for a, b in zip(self.z, self.z[1:])):
                raise ValueError("`z` must increase")
            if any(v < 0 for v in self.table):
                raise ValueError("densities must be >= 0")
        if self.values is not None and (any(not v >= 0 for v in self.values) or not any(v > 0 for v in self.values)):
            raise ValueError("densities per shell must be >= 0 (0: the tracer is absent from that shell), "
                             "and > 0 in at least one shell")
        return self


class BiasConfig(_Model):
    """Linear bias of one tracer.

    form "per_shell": ``values`` = b in each shell; nuisance parameters b_<tracer>_<i>
    (shell index i from 1).  form "inverse_growth": b(z) = c0 / D(z) (D(0) = 1, the growth of
    the cosmology at hand), ``values`` = [c0]; nuisance b_<tracer>_c0.  form "polynomial":
    b(z) = sum_j c_j z^j, ``values`` = [c0, c1, ...]; nuisances b_<tracer>_c<j>.  b(z) is
    evaluated at each shell's effective redshift (its midpoint).
    """

    form: Literal["per_shell", "inverse_growth", "polynomial"] = Field(
        ..., description="'per_shell', 'inverse_growth' (b = c0/D(z)) or 'polynomial' (b = sum c_j z^j)")
    values: list[float | None] = Field(
        ..., min_length=1,
        description="per-shell biases (null where the tracer is absent), or the coefficients c_j (fiducial values)")
    parameter: Literal["b", "lnb"] = Field(
        "b", description="per_shell only: the nuisance parameters are b_<tracer>_<i> ('b') or ln b, "
                         "named lnb_<tracer>_<i> ('lnb', as Euclid IST:F); the marginalized errors of the "
                         "other parameters do not depend on this choice")

    @model_validator(mode="after")
    def _check(self):
        if self.form == "inverse_growth" and len(self.values) != 1:
            raise ValueError("inverse_growth takes one coefficient c0 (b = c0 / D(z))")
        if self.form == "per_shell" and any(v is not None and not v > 0 for v in self.values):
            raise ValueError("biases must be > 0")
        if self.form != "per_shell" and any(v is None for v in self.values):
            raise ValueError("b(z) coefficients must be numbers")
        if self.form != "per_shell" and self.parameter != "b":
            raise ValueError("parameter: lnb applies to form per_shell only")
        return self


class TracerConfig(_Model):
    """One galaxy population."""

    name: str = Field(..., description="tracer name (letters and digits, starting with a letter), used in parameter names")
    density: DensityConfig = Field(..., description="number density and its unit")
    bias: BiasConfig = Field(..., description="linear bias b(z)")
    sigma_z0: float = Field(0.0, ge=0.0, lt=1.0, description="redshift error sigma_z = sigma_z0 (1+z) (0: spectroscopic)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("tracer names are letters and digits starting with a letter (they go in parameter names)")
        return v


class CellsConfig(_Model):
    """The box of ``fisher_method: exact_cells``: per shell, a cube of n_side^3 cubic cells of
    side ``side`` [Mpc/h] at the shell's effective redshift, with the shell's densities."""

    side: float = Field(..., gt=0.0, le=1000.0, description="cell side [Mpc/h]")
    n_side: int = Field(..., ge=2, le=16, description="cells per box side (the box holds n_side^3 cells)")
    oversample: int = Field(4, ge=2, le=8, description="FFT grid of the cell correlation: oversample x n_side per axis")
    n_images: int = Field(2, ge=0, le=4, description="aliased images per axis in the cell power")


#: the largest (tracers x cells) covariance of fisher_method exact_cells (a dense matrix)
MAX_CELL_COVARIANCE = 3000


class CountsInCellsConfig(SkyAreaConfig):
    """Multi-tracer galaxy clustering in redshift shells (the ``probes.counts_in_cells``
    section).  k in h/Mpc throughout; the k bands are fixed (the same at every cosmology).
    The sky area (f_sky or area_deg2) as in :class:`~fishcast.probes.sky.SkyAreaConfig`."""

    z_edges: list[float] = Field(..., min_length=2, description="increasing redshift shell edges (n_shell + 1 values)")
    tracers: list[TracerConfig] = Field(..., min_length=1, description="the tracers sharing the sky area")
    k_min: float | None = Field(
        None, gt=0.0, description="lowest k [h/Mpc]; default per shell 2 pi / V^(1/3), V the shell volume in a flat LCDM reference with Omega_m = 0.3")
    k_max: float | list[float] = Field(..., description="highest k [h/Mpc]: one value, or one per shell")
    n_k: int = Field(20, ge=1, le=2000, description="number of k bands per shell")
    k_spacing: Literal["linear", "log"] = Field("linear", description="band edges equally spaced in k ('linear') or ln k ('log')")
    n_mu: int = Field(16, ge=1, le=500, description="number of Gauss-Legendre mu nodes on (0, 1)")
    rsd: bool = Field(True, description="Kaiser redshift-space distortions (growth rate from the cosmology)")
    fog_sigma_v: float = Field(0.0, ge=0.0, description="Finger-of-God velocity dispersion [km/s] (Gaussian damping; 0: off)")
    alcock_paczynski: bool = Field(
        True, description="model the observed frame: k and mu of each mode mapped with q_perp = D_A/D_A,fid, "
                          "q_par = H_fid/H and the amplitude 1/(q_perp^2 q_par) (false: k, mu fixed in h/Mpc of "
                          "the cosmology at hand, no geometry information)")
    fingers_of_god: Literal["gaussian", "lorentzian"] = Field(
        "gaussian", description="'gaussian': exp(-k^2 mu^2 sigma^2) with sigma from fog_sigma_v [km/s] (0: off); "
                                "'lorentzian': 1/(1 + f^2 k^2 mu^2 sigma_p^2), sigma_p from the fiducial linear P "
                                "(Euclid IST:F)")
    bao_damping: bool = Field(
        False, description="de-wiggled spectrum P_lin e^(-g k^2) + P_nw (1 - e^(-g k^2)), g = sigma_v^2 "
                           "[1 - mu^2 + mu^2 (1+f)^2], sigma_v from the fiducial linear P (Euclid IST:F); "
                           "P_nw: Eisenstein-Hu 1998 no-wiggle shape times the smoothed ratio")
    dispersions: Literal["fixed", "cosmology", "free", "survey"] = Field(
        "fixed", description="sigma_v = sigma_p per shell: 'fixed' (from the fiducial linear P), 'cosmology' "
                             "(from the linear P of the cosmology at hand), 'free' nuisances sv_<i>, sp_<i> "
                             "(their ratio to the fiducial value, fiducial 1), or 'survey': one sigma_v = sigma_p "
                             "for every shell, from the fiducial linear P at the survey's mean redshift (the mean "
                             "of the shells' mid redshifts), times two free nuisances sv_survey, sp_survey "
                             "(fiducial 1; Euclid IST:F pessimistic)")
    observed_h: Literal["fiducial", "varying"] = Field(
        "fiducial", description="the h of the observed k [h/Mpc]: 'fiducial' (the survey's coordinates: the k "
                                "nodes, shot noise and damping lengths do not move), or 'varying' (Euclid IST:F's "
                                "convention: the k range is fixed in h/Mpc of the cosmology at hand, so the "
                                "observed k in 1/Mpc moves with h)")
    residual_shot_noise: bool = Field(
        False, description="a residual shot noise P_s per tracer and shell, added to 1/n: nuisances "
                           "Ps_<tracer>_<i> [(Mpc/h)^3], fiducial 0 (Euclid IST:F)")
    fisher_method: Literal["fourier", "exact_cells"] = Field(
        "fourier", description="'fourier': the Fourier-space multi-tracer Fisher of each shell; 'exact_cells': the "
                               "exact position-space counts-in-cells Fisher (Abramo 2012) of a small volume-limited "
                               "box per shell (`cells`; real space: rsd false)")
    cells: CellsConfig | None = Field(None, description="the box of fisher_method exact_cells")

    @model_validator(mode="after")
    def _checks(self):
        z = self.z_edges
        if z[0] < 0 or any(b <= a for a, b in zip(z, z[1:])):
            raise ValueError("z_edges must be >= 0 and increasing")
        n_shell = len(z) - 1
        names = [t.name for t in self.tracers]
        if len(set(names)) != len(names):
            raise ValueError(f"tracer names must be unique, got {names}")
        for t in self.tracers:
            if t.density.values is not None and len(t.density.values) != n_shell:
                raise ValueError(f"tracer {t.name}: density.values needs one value per shell ({n_shell})")
            if t.bias.form == "per_shell" and len(t.bias.values) != n_shell:
                raise ValueError(f"tracer {t.name}: bias.values needs one value per shell ({n_shell})")
        kmax = self.k_max if isinstance(self.k_max, list) else [self.k_max]
        if isinstance(self.k_max, list) and len(self.k_max) != n_shell:
            raise ValueError(f"k_max: one value, or one per shell ({n_shell})")
        if any(not v > 0 for v in kmax):
            raise ValueError("k_max must be > 0")
        if any(v > K_MAX_LIMIT for v in kmax):
            raise ValueError(f"k_max must be at most {K_MAX_LIMIT:g} h/Mpc (far beyond linear clustering; the "
                             "backend tabulates P(k) to 500/Mpc at most)")
        if self.k_min is not None and any(v <= self.k_min for v in kmax):
            raise ValueError("k_max must exceed k_min in every shell")
        if self.fisher_method == "exact_cells":
            if self.cells is None:
                raise ValueError("fisher_method exact_cells needs `cells` (side [Mpc/h], n_side)")
            bad = [k for k, on in (("rsd", self.rsd), ("bao_damping", self.bao_damping),
                                   ("residual_shot_noise", self.residual_shot_noise)) if on]
            if bad:
                raise ValueError(f"fisher_method exact_cells is real space without damping: set {', '.join(bad)} false")
            size = len(self.tracers) * self.cells.n_side ** 3
            if size > MAX_CELL_COVARIANCE:
                raise ValueError(f"exact_cells: {len(self.tracers)} tracers x {self.cells.n_side}^3 cells = {size} "
                                 f"counts, more than {MAX_CELL_COVARIANCE} (a dense covariance): use fewer cells")
        elif self.cells is not None:
            raise ValueError("`cells` is used only with fisher_method: exact_cells")
        return self

    @property
    def needs_dispersions(self) -> bool:
        """Whether sigma_v / sigma_p (from the fiducial linear spectrum) enter the model."""
        return self.bao_damping or (self.rsd and self.fingers_of_god == "lorentzian")


# =============================================================================================
# The probe
# =============================================================================================


def reference_comoving_distance(z, omega_m: float = REFERENCE_OMEGA_M) -> np.ndarray:
    """Comoving distance [Mpc/h] in flat LCDM: (c/100) Int_0^z dz'/E(z') (64-point GL)."""
    z = np.atleast_1d(np.asarray(z, dtype=float))
    x, w = np.polynomial.legendre.leggauss(64)
    zz = 0.5 * z[:, None] * (x[None, :] + 1.0)
    E = np.sqrt(omega_m * (1.0 + zz) ** 3 + 1.0 - omega_m)
    return C_KMS / 100.0 * 0.5 * z * np.sum(w / E, axis=1)


@dataclass(frozen=True)
class FiducialVolumes:
    """The fiducial context of :class:`CountsInCellsProbe`: the shell volumes [(Mpc/h)^3]
    of the fiducial cosmology, (n_shell,), read-only."""

    volumes: np.ndarray


def shell_volumes(chi_edges_h, f_sky: float) -> np.ndarray:
    """Comoving volume [(Mpc/h)^3] of the shells between comoving distances chi_edges_h
    [Mpc/h] on a sky fraction f_sky (flat space: the curvature is ignored in the volume)."""
    c = np.asarray(chi_edges_h, dtype=float)
    return f_sky * 4.0 * np.pi / 3.0 * (c[1:] ** 3 - c[:-1] ** 3)


@dataclass(frozen=True, eq=False)
class ObservedFrame(FiducialVolumes):
    """The fiducial cosmology's frame of a survey's shells: what the observations are measured
    in, and what does not change with the parameters (physics.md section 2).  Lengths in
    Mpc/h of the FIDUCIAL h (``h``); per shell (n_shell,) or per shell and tracer (n_shell, N).

    The fiducial context of :class:`CountsInCellsProbe` (its :meth:`~CountsInCellsProbe.
    fiducial_context`), handed to ``signal``, ``gram`` and ``reports``; arrays read-only.
    volumes [(Mpc/h)^3] (from :class:`FiducialVolumes`): the shell volumes;
    chi [Mpc]: comoving (transverse, flat) distance at each shell's effective redshift;
    hubble [km/s/Mpc]: H(z_eff); volumes [(Mpc/h)^3]; densities [(h/Mpc)^3] (dN/dz per deg^2
    converted with the fiducial volume); damping [Mpc/h]: per-tracer line-of-sight smearing
    (Gaussian Fingers of God from a velocity dispersion in km/s and redshift errors, both
    fixed in the observed frame: a velocity or redshift error is a fixed displacement there);
    sigma_v [Mpc/h] (or None): sqrt(1/(6 pi^2) Int dk P_lin(k, z)) of the fiducial, z the
    shell's mid redshift (``dispersions: survey``: the survey's mean redshift in every shell);
    eh_shape: (Omega_m, Omega_b, h, n_s) of the fiducial, the Eisenstein-Hu reference shape of
    the no-wiggle spectrum (with ``bao_damping``).
    """

    h: float
    chi: np.ndarray
    hubble: np.ndarray
    densities: np.ndarray
    damping: np.ndarray
    sigma_v: np.ndarray | None
    eh_shape: tuple[float, float, float, float] | None = None


class CountsInCellsProbe(Probe):
    """Multi-tracer clustering in redshift shells (Abramo 2012).  Build it with :func:`build`.

    Signal: the tracer covariance ``C_ab(k, mu)`` per shell, shape (n_shell, n_k, n_mu, N, N)
    [(Mpc/h)^3], in the observed (fiducial) frame: k [h/Mpc] and mu are the observed ones, fixed
    nodes; with ``alcock_paczynski`` the power of the cosmology at hand is taken at the true
    (k, mu) of each mode and carries 1/(q_perp^2 q_par) (:mod:`fishcast.probes.rsd_model`).
    The linear ``P(k)`` comes from ``cosmo.pk_h`` and ``f`` from ``cosmo.growth_rate_of`` at each
    shell's effective redshift (its midpoint).  Shot noise 1/n, the damping lengths, the mode
    count and the volume are those of the fiducial frame (:class:`ObservedFrame`) and do not
    change with the parameters.

    The fiducial frame is the probe's fiducial context (:meth:`fiducial_context`, an
    immutable :class:`ObservedFrame`): :meth:`signal` models every other point in it (without
    it, the cosmology at hand is its own frame: right at the fiducial), and :meth:`gram` takes
    its shell volumes as the Fisher weights (the trace formula summed over shells).  The probe
    itself never changes.
    """

    name = "counts_in_cells"

    def __init__(self, config: CountsInCellsConfig, density_tables: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.config = config
        self.tracers = tuple(t.name for t in config.tracers)
        self.z_edges = np.asarray(config.z_edges, dtype=float)
        self.z_eff = 0.5 * (self.z_edges[1:] + self.z_edges[:-1])
        self.n_shell = self.z_edges.size - 1
        self.f_sky = config.sky_fraction
        self.rsd = bool(config.rsd)
        self._tables = dict(density_tables)
        n_shell = self.n_shell
        kmax = np.broadcast_to(np.asarray(config.k_max, dtype=float), (n_shell,))
        if config.k_min is not None:
            kmin = np.full(n_shell, float(config.k_min))
        else:
            v_ref = shell_volumes(reference_comoving_distance(self.z_edges), self.f_sky)
            kmin = 2.0 * np.pi / np.cbrt(v_ref)
        bad = np.nonzero(kmax <= kmin)[0]
        if bad.size:
            i = int(bad[0])
            with at_key("k_max"):
                raise InputError(f"shell {i + 1}: k_max = {kmax[i]:.4g} h/Mpc is not above k_min = {kmin[i]:.4g} h/Mpc")
        bands = [k_bands(lo, hi, config.n_k, config.k_spacing) for lo, hi in zip(kmin, kmax)]
        self.k_edges = np.array([b[0] for b in bands])  # (n_shell, n_k+1) [h/Mpc]
        self.k = np.array([b[1] for b in bands])  # (n_shell, n_k) [h/Mpc]
        self.k2dk = np.array([b[2] for b in bands])  # (n_shell, n_k) [(h/Mpc)^3]
        self.mu, self.w_mu = mu_quadrature(config.n_mu)
        self.present = self._presence()  # (n_shell, N) bool
        self._check_biases()

    def _presence(self) -> np.ndarray:
        """Which tracer has objects in which shell (cosmology-independent)."""
        lo, hi = self.z_edges[:-1], self.z_edges[1:]
        x, _ = np.polynomial.legendre.leggauss(32)
        zz = 0.5 * (hi - lo)[:, None] * (x[None, :] + 1.0) + lo[:, None]
        out = np.zeros((self.n_shell, len(self.tracers)), dtype=bool)
        for a, t in enumerate(self.config.tracers):
            if t.density.values is not None:
                out[:, a] = np.asarray(t.density.values) > 0
            else:
                zt, vt = self._tables[t.name]
                out[:, a] = np.any(np.interp(zz, zt, vt, left=0.0, right=0.0) > 0, axis=1)
            if not out[:, a].any():
                with at_key("tracers", a, "density"):
                    raise InputError(f"tracer {t.name} has no objects in any shell")
        return out

    def _check_biases(self) -> None:
        for a, t in enumerate(self.config.tracers):
            if t.bias.form != "per_shell":
                continue
            vals = t.bias.values
            with at_key("tracers", a, "bias", "values"):
                if len(vals) != self.n_shell:
                    raise InputError(f"tracer {t.name}: bias.values needs one value per shell ({self.n_shell})")
                missing = [i + 1 for i in range(self.n_shell) if self.present[i, a] and vals[i] is None]
                if missing:
                    raise InputError(f"tracer {t.name}: no bias given for shell(s) {missing}, where it has objects")

    # --- parameters ------------------------------------------------------------------------
    def nuisance_parameters(self) -> NuisanceParameters:
        """Nuisance parameters (typed, with their fiducial values): b_<tracer>_<shell from 1>
        for per-shell biases (only in shells where the tracer has objects; lnb_<tracer>_<shell>
        = ln b with ``bias.parameter: lnb``), b_<tracer>_c<j> for b(z) coefficients; with
        ``residual_shot_noise`` Ps_<tracer>_<shell> [(Mpc/h)^3] (fiducial 0); with free
        dispersions sv_<shell>, sp_<shell> (sigma_v, sigma_p over their fiducial values, 1), or
        with ``dispersions: survey`` sv_survey, sp_survey (the same for every shell)."""
        out = []
        for a, t in enumerate(self.config.tracers):
            if t.bias.form == "per_shell":
                fam = LN_BIAS_PER_SHELL if t.bias.parameter == "lnb" else BIAS_PER_SHELL
                conv = math.log if t.bias.parameter == "lnb" else float
                out += [fam.member(conv(float(v)), tracer=t.name, shell=i + 1)
                        for i, v in enumerate(t.bias.values) if self.present[i, a]]
            else:
                out += [(BIAS_LEADING_COEFFICIENT if j == 0 else BIAS_COEFFICIENT).member(float(v), tracer=t.name, j=j)
                        for j, v in enumerate(t.bias.values)]
        if self.config.residual_shot_noise:
            for a, t in enumerate(self.config.tracers):
                out += [RESIDUAL_SHOT_NOISE.member(0.0, tracer=t.name, shell=i + 1)
                        for i in range(self.n_shell) if self.present[i, a]]
        if self.config.needs_dispersions and self.config.dispersions == "free":
            out += [SIGMA_V_RATIO.member(1.0, shell=i + 1) for i in range(self.n_shell)]
            out += [SIGMA_P_RATIO.member(1.0, shell=i + 1) for i in range(self.n_shell)]
        if self.config.needs_dispersions and self.config.dispersions == "survey":
            out += [SIGMA_V_SURVEY.member(1.0), SIGMA_P_SURVEY.member(1.0)]
        return NuisanceParameters(out)

    def requirements(self) -> CosmologyRequirements:
        """The linear P(k, z) only, z up to the last shell edge, and k_max [1/Mpc]: the
        largest k of the shells [h/Mpc] dilated by the Alcock-Paczynski mapping (true k up to
        :data:`AP_K_MARGIN` times the observed one), with the reach of the IST:F model's
        de-wiggling and sigma_v (:func:`rsd_model.k_reach`), converted with the largest h a
        point may have (:data:`fishcast.camb_ranges.SAFE_RANGES`, h <= 2). The backend keeps
        its own floor above it (:data:`fishcast.cosmology.MIN_K_MAX_LINEAR`). CAMB's dense
        transfer sampling: the probe resolves the BAO wiggles (and de-wiggles, and maps them
        with Alcock-Paczynski), where P(k) moves by ~2.4e-3 without it; the DESI recipe's
        marginalized errors then move by 2.9e-2 (Omega_b) against the accuracy test's
        reference (threshold 5e-3; measured with CAMB 2.0.5, fishcast.cosmology, *Transfer
        sampling*)."""
        from fishcast.camb_ranges import SAFE_RANGES

        cfg = self.config
        k_true = float(self.k_edges.max()) * (AP_K_MARGIN if cfg.alcock_paczynski else 1.0)
        k_h = rsd_model.k_reach(k_true, cfg.bao_damping, cfg.needs_dispersions)
        return CosmologyRequirements(z_max=float(self.z_edges[-1]), k_max=k_h * SAFE_RANGES["h"].hi, nonlinear=False,
                                     transfer_high_precision=True)

    def _params(self, params: Mapping[str, float]) -> dict[str, float]:
        p = self.nuisance_parameters()
        p.update({k: float(v) for k, v in params.items() if k in p})
        return p

    # --- shell quantities ------------------------------------------------------------------
    def volumes(self, cosmo: Cosmology) -> np.ndarray:
        """Shell volumes [(Mpc/h)^3] from cosmo.chi_of [Mpc] and h."""
        h = _h_of(cosmo)
        return shell_volumes(np.asarray(cosmo.chi_of(self.z_edges)) * h, self.f_sky)

    def biases(self, cosmo: Cosmology, params: Mapping[str, float]) -> np.ndarray:
        """b_a in each shell, (n_shell, N) (1 where the tracer is absent: unused)."""
        p = self._params(params)
        out = np.empty((self.n_shell, len(self.tracers)))
        for a, t in enumerate(self.config.tracers):  # a loop over tracers to read the config
            if t.bias.form == "per_shell" and t.bias.parameter == "lnb":
                out[:, a] = np.exp([p.get(f"lnb_{t.name}_{i + 1}", 0.0) for i in range(self.n_shell)])
            elif t.bias.form == "per_shell":
                out[:, a] = [p.get(f"b_{t.name}_{i + 1}", 1.0) for i in range(self.n_shell)]
            elif t.bias.form == "inverse_growth":
                out[:, a] = p[f"b_{t.name}_c0"] / np.asarray(cosmo.growth_of(self.z_eff))
            else:
                c = np.array([p[f"b_{t.name}_c{j}"] for j in range(len(t.bias.values))])
                out[:, a] = np.polynomial.polynomial.polyval(self.z_eff, c)
        if not np.all(out[self.present] > 0):
            raise ComputationError(f"counts_in_cells: non-positive bias at this point: {out.tolist()}")
        return out

    def densities(self, cosmo: Cosmology) -> np.ndarray:
        """n_a in each shell [(h/Mpc)^3], (n_shell, N); 0 where the tracer is absent."""
        h = _h_of(cosmo)
        V = self.volumes(cosmo)
        x, w = np.polynomial.legendre.leggauss(32)
        lo, hi = self.z_edges[:-1], self.z_edges[1:]
        zz = 0.5 * (hi - lo)[:, None] * (x[None, :] + 1.0) + lo[:, None]  # (n_shell, 32)
        wz = 0.5 * (hi - lo)[:, None] * w[None, :]
        # dV/dz [(Mpc/h)^3] = f_sky 4 pi chi^2 c/H  (chi in Mpc/h, c/H in Mpc/h)
        chi = np.asarray(cosmo.chi_of(zz)) * h
        dVdz = self.f_sky * 4.0 * np.pi * chi**2 * C_KMS / np.asarray(cosmo.hubble_of(zz)) * h
        area = self.config.sky_area_deg2  # [deg^2]
        out = np.empty((self.n_shell, len(self.tracers)))
        for a, t in enumerate(self.config.tracers):
            d = t.density
            if d.values is not None:
                vals = np.asarray(d.values, dtype=float)
                out[:, a] = vals if d.unit == "(h/Mpc)^3" else area * vals * (hi - lo) / V
                continue
            zt, vt = self._tables[t.name]
            f = np.interp(zz, zt, vt, left=0.0, right=0.0)
            if d.unit == "(h/Mpc)^3":
                out[:, a] = np.sum(wz * f * dVdz, axis=1) / V
            else:
                out[:, a] = area * np.sum(wz * f, axis=1) / V
        return np.where(self.present, out, 0.0)

    def damping_lengths(self, cosmo: Cosmology) -> np.ndarray:
        """Total line-of-sight smearing sigma_a [Mpc/h] per shell and tracer (n_shell, N):
        sigma_a^2 = (sigma_v (1+z)/H)^2 + (c sigma_z0,a (1+z)/H)^2, times h."""
        h = _h_of(cosmo)
        H = np.asarray(cosmo.hubble_of(self.z_eff))
        s0 = np.array([t.sigma_z0 for t in self.config.tracers])
        fog = self.config.fog_sigma_v * (1.0 + self.z_eff) / H * h
        zerr = C_KMS * s0[None, :] * (1.0 + self.z_eff)[:, None] / H[:, None] * h
        return np.sqrt(fog[:, None] ** 2 + zerr**2)

    # --- the observed frame ------------------------------------------------------------------
    def observed_frame(self, cosmo: Cosmology, params: Mapping[str, float] | None = None) -> ObservedFrame:
        """The fiducial frame of this survey from the fiducial cosmology ``cosmo`` (and the
        fiducial parameters ``params``: Omega_b, n_s for the no-wiggle reference shape)."""
        sigma_v = None
        eh = None
        if self.config.bao_damping:
            eh = _shape_parameters(cosmo, params)
        if self.config.needs_dispersions:
            kk = np.geomspace(1e-4, 10.0, 1600)  # h/Mpc
            z = self.dispersion_redshifts()
            pk = np.asarray(cosmo.pk_h(z[:, None], kk[None, :], nonlinear=False))
            sigma_v = rsd_model.velocity_dispersion(kk, pk)
        frame = ObservedFrame(
            volumes=self.volumes(cosmo),
            h=_h_of(cosmo),
            chi=np.asarray(cosmo.chi_of(self.z_eff), dtype=float),
            hubble=np.asarray(cosmo.hubble_of(self.z_eff), dtype=float),
            densities=self.densities(cosmo),
            damping=self.damping_lengths(cosmo),
            sigma_v=sigma_v,
            eh_shape=eh,
        )
        for value in vars(frame).values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        return frame

    def fiducial_context(self, cosmo: Cosmology, params: Mapping[str, float]) -> ObservedFrame:
        """The observed frame of the fiducial cosmology (:class:`ObservedFrame`, immutable): the
        signal at other points is modelled in it, and its shell volumes are the Fisher weights
        of :meth:`gram` (they do not move with the parameters)."""
        return self.observed_frame(cosmo, params)

    def _frame(self, cosmo: Cosmology, frame) -> ObservedFrame:
        """The frame to model the signal in: the given fiducial context, or (None) the
        cosmology at hand's own (right at the fiducial point itself)."""
        if isinstance(frame, ObservedFrame):
            return frame
        if frame is not None and not isinstance(frame, FiducialVolumes):
            raise ComputationError(f"counts_in_cells: a fiducial context of type {type(frame).__name__} is not an "
                                   "observed frame; use probe.fiducial_context(fiducial cosmology, parameters)")
        return self.observed_frame(cosmo)

    def ap_factors(self, cosmo: Cosmology, frame: ObservedFrame) -> tuple[np.ndarray, np.ndarray]:
        """(q_perp, q_par) per shell: D_A/D_A,fid and H_fid/H, distances in Mpc (flat)."""
        chi = np.asarray(cosmo.chi_of(self.z_eff), dtype=float)
        H = np.asarray(cosmo.hubble_of(self.z_eff), dtype=float)
        return chi / frame.chi, frame.hubble / H

    def _k_ratio(self, cosmo: Cosmology, frame: ObservedFrame) -> float:
        """r with k [h/Mpc of the cosmology at hand] = r k_obs before the AP mapping:
        h_fid/h for ``observed_h: fiducial`` (the observed k is in h_fid/Mpc), 1 for
        ``observed_h: varying`` (the IST:F convention: the k range is fixed in h/Mpc of the
        cosmology at hand)."""
        if self.config.observed_h == "varying":
            return 1.0
        return frame.h / _h_of(cosmo)

    def _true_modes(self, cosmo: Cosmology, frame: ObservedFrame):
        """True wavevectors of the observed nodes in h/Mpc of the COSMOLOGY AT HAND and the
        amplitude conversion: returns (k_t (n_shell, n_k, n_mu), mu_t (same), amp (n_shell,))
        with P_obs [(Mpc/h_fid)^3] = amp * P_h(k_t) [(Mpc/h)^3].

        With Alcock-Paczynski: k_t = AP(r k_obs; q_perp, q_par) (:meth:`_k_ratio`, q in Mpc)
        and amp = (h_fid/h)^3 / (q_perp^2 q_par) (the power in Mpc^3 of the cosmology at
        hand, in the fiducial's (Mpc/h)^3).  Without: k_t = k_obs, mu_t = mu_obs, amp = 1
        (k in h/Mpc of the cosmology at hand)."""
        n_shell, n_k = self.k.shape
        if not self.config.alcock_paczynski:
            kt = np.broadcast_to(self.k[:, :, None], (n_shell, n_k, self.mu.size))
            mut = np.broadcast_to(self.mu[None, None, :], kt.shape)
            return kt, mut, np.ones(n_shell)
        qperp, qpar = self.ap_factors(cosmo, frame)
        r = self._k_ratio(cosmo, frame)
        kt, mut = rsd_model.ap_true_wavevector(r * self.k[:, :, None], self.mu[None, None, :],
                                               qperp[:, None, None], qpar[:, None, None])
        hr = frame.h / _h_of(cosmo)
        return kt, mut, rsd_model.ap_volume_factor(qperp, qpar) * hr**3

    def dispersion_redshifts(self) -> np.ndarray:
        """The redshift at which each shell's fiducial sigma_v = sigma_p is computed, (n_shell,):
        the shell's mid redshift, or with ``dispersions: survey`` the survey's mean redshift
        (the mean of the shells' mid redshifts) for every shell."""
        if self.config.dispersions == "survey":
            return np.full(self.n_shell, float(np.mean(self.z_eff)))
        return self.z_eff

    def _dispersions(self, cosmo: Cosmology, params, frame: ObservedFrame) -> tuple[np.ndarray, np.ndarray]:
        """sigma_v, sigma_p per shell [Mpc/h_fid] (sigma_p = sigma_v, IST:F): those of the
        fiducial ('fixed'), of the linear P of the cosmology at hand ('cosmology'), or the
        fiducial ones times the nuisances sv_<i>, sp_<i> ('free') or sv_survey, sp_survey
        ('survey': the fiducial is then that of the survey's mean redshift in every shell)."""
        mode = self.config.dispersions
        if mode == "cosmology":
            h = _h_of(cosmo)
            sv = self._velocity_dispersion(cosmo) * frame.h / h
            return sv, sv
        sv = np.asarray(frame.sigma_v, dtype=float)
        if mode == "fixed":
            return sv, sv
        p = self._params(params)
        if mode == "survey":
            return sv * p["sv_survey"], sv * p["sp_survey"]
        a = np.array([p[f"sv_{i + 1}"] for i in range(self.n_shell)])
        c = np.array([p[f"sp_{i + 1}"] for i in range(self.n_shell)])
        return sv * a, sv * c

    def _velocity_dispersion(self, cosmo: Cosmology) -> np.ndarray:
        """sigma_v [Mpc/h of cosmo] per shell from its linear P (fixed log-spaced k nodes)."""
        kk = np.geomspace(1e-4, 10.0, 1600)  # h/Mpc
        pk = np.asarray(cosmo.pk_h(self.z_eff[:, None], kk[None, :], nonlinear=False))
        return rsd_model.velocity_dispersion(kk, pk)

    def _nowiggle_ratio(self, cosmo: Cosmology, kt, frame: ObservedFrame) -> np.ndarray:
        """P_nw / P_lin at the true wavenumbers kt [h/Mpc of cosmo] (n_shell, ...): the
        no-wiggle spectrum on fixed k nodes (:func:`rsd_model.nowiggle_power`, the
        Eisenstein-Hu reference shape of the FIDUCIAL parameters, the smoothed ratio of the
        cosmology at hand), its log-ratio interpolated by a cubic spline in ln k."""
        from scipy.interpolate import CubicSpline

        h = _h_of(cosmo)
        kk = np.geomspace(1e-4, 20.0, 1200)  # 1/Mpc, fixed nodes
        pk = np.asarray(cosmo.pk_h(self.z_eff[:, None], kk[None, :] / h, nonlinear=False))
        om, ob, hf, ns = frame.eh_shape  # the fiducial's: a fixed reference shape, smoothed ratio
        pnw = rsd_model.nowiggle_power(kk, pk, om, ob, hf, ns)
        lr = np.log(pnw / pk)
        lnk = np.log(kk / h)
        return np.exp(np.stack([CubicSpline(lnk, lr[s])(np.log(kt[s])) for s in range(self.n_shell)]))

    def _shell_inputs(self, cosmo: Cosmology, params, frame: ObservedFrame | None = None):
        """Everything the covariance needs at this point: P_eff (n_shell, n_k, n_mu)
        [(Mpc/h_fid)^3] (AP, amplitude factor, de-wiggling and Lorentzian FoG applied), mu_t^2
        (n_shell, n_k, n_mu), f (n_shell,), b (n_shell, N), n, damping lengths, V, P_s."""
        frame = self._frame(cosmo, frame)
        kt, mut, amp = self._true_modes(cosmo, frame)
        P = np.asarray(cosmo.pk_h(self.z_eff[:, None, None], kt, nonlinear=False)) * amp[:, None, None]
        f = np.asarray(cosmo.growth_rate_of(self.z_eff), dtype=float) if self.rsd else np.zeros(self.n_shell)
        cfg = self.config
        h = _h_of(cosmo)
        if cfg.needs_dispersions:
            sv, sp = self._dispersions(cosmo, params, frame)
            kt_f = kt * h / frame.h  # true k in h_fid/Mpc, as the lengths sigma [Mpc/h_fid]
            fs = f[:, None, None]
            if cfg.bao_damping:
                e = np.exp(-rsd_model.bao_damping_exponent(kt_f, mut, fs, sv[:, None, None]))
                P = P * (e + self._nowiggle_ratio(cosmo, kt, frame) * (1.0 - e))
            if self.rsd and cfg.fingers_of_god == "lorentzian":
                P = P * rsd_model.lorentzian_fog(kt_f, mut, fs, sp[:, None, None])
        sig = None
        if self.rsd:
            # fixed displacements in the observed frame; with observed_h 'varying' the observed
            # k moves with h (IST:F), and so does k sigma
            sig = frame.damping * (h / frame.h if cfg.observed_h == "varying" else 1.0)
        return P, mut**2, f, self.biases(cosmo, params), frame.densities, sig, frame.volumes, self.residual_noise(params)

    def residual_noise(self, params) -> np.ndarray:
        """Residual shot noise P_s [(Mpc/h)^3] per shell and tracer (0 when off or absent)."""
        out = np.zeros((self.n_shell, len(self.tracers)))
        if not self.config.residual_shot_noise:
            return out
        p = self._params(params)
        for a, t in enumerate(self.tracers):
            for i in range(self.n_shell):
                if self.present[i, a]:
                    out[i, a] = p[f"Ps_{t}_{i + 1}"]
        return out

    def shot_noise(self, frame: ObservedFrame) -> np.ndarray:
        """1/n_a [(Mpc/h)^3] per shell and tracer, of the fiducial frame (inf where absent)."""
        with np.errstate(divide="ignore"):
            return np.where(self.present, 1.0 / np.where(self.present, frame.densities, 1.0), np.inf)

    def _covariance(self, P, mu2, f, b, n, sig, ps) -> np.ndarray:
        """C (n_shell, n_k, n_mu, N, N); an absent tracer gets a placeholder row/column: no
        signal, unit noise, constant in every parameter -- it carries no information."""
        N = len(self.tracers)
        if sig is None:
            D = np.ones((self.n_shell, self.k.shape[1], self.mu.size, N))
        else:
            kmu2 = (self.k[:, :, None] * self.mu[None, None, :]) ** 2
            D = np.exp(-0.5 * kmu2[..., None] * np.asarray(sig)[:, None, None, :] ** 2)
        A = (b[:, None, None, :] + f[:, None, None, None] * mu2[..., None]) * D
        A = np.where(self.present[:, None, None, :], A, 0.0)
        C = A[..., :, None] * A[..., None, :] * P[..., None, None]
        noise = np.where(self.present, 1.0 / np.where(self.present, n, 1.0) + ps, 1.0)
        idx = np.arange(N)
        C[..., idx, idx] += noise[:, None, None, :]
        return C

    # --- signal and metric -----------------------------------------------------------------
    def signal(self, cosmo: Cosmology, params: Mapping[str, float], context: ObservedFrame | None = None) -> np.ndarray:
        """Tracer covariance C_ab(k, mu) per shell, (n_shell, n_k, n_mu, N, N) [(Mpc/h)^3],
        in the observed frame ``context`` (:meth:`fiducial_context`; None: the cosmology at
        hand's own, i.e. at the fiducial point)."""
        frame = self._frame(cosmo, context)
        P, mu2, f, b, n, sig, V, ps = self._shell_inputs(cosmo, params, frame)
        C = self._covariance(P, mu2, f, b, n, sig, ps)
        if not np.all(np.isfinite(C)):
            raise ComputationError("counts_in_cells: non-finite tracer covariance at this point")
        return C

    def band_parameters(self, cosmo: Cosmology, params: Mapping[str, float], context: ObservedFrame | None = None,
                        geometry: bool = False) -> np.ndarray:
        """The band-power parameters of every shell at this point, (n_shell, n_k + N + rsd
        [+ 2]): ``ln P_i`` [P in (Mpc/h_fid)^3 at the fixed observed nodes k_i, before the
        Alcock-Paczynski mapping], ``ln b_a`` (0 where the tracer is absent), ``f`` (with RSD)
        and, with ``geometry``, ``ln q_perp``, ``ln q_par``.  Differentiating them w.r.t. theta
        gives the Jacobian J of ``F_theta = sum_shells J^T F_band J`` (:func:`project`) with the
        band Fisher of :meth:`band_power_report` (``fisher``; with geometry
        ``geometry_fisher``), which equals the probe's own Fisher (:meth:`gram`) for the
        Kaiser model (densities, damping and volumes are fixed in the fiducial frame)."""
        frame = self._frame(cosmo, context)
        if self.config.alcock_paczynski:
            r = self._k_ratio(cosmo, frame)
            hr = frame.h / _h_of(cosmo)
            pk = np.asarray(cosmo.pk_h(self.z_eff[:, None], self.k * r, nonlinear=False)) * hr**3
        else:
            pk = np.asarray(cosmo.pk_h(self.z_eff[:, None], self.k, nonlinear=False))
        f = np.asarray(cosmo.growth_rate_of(self.z_eff), dtype=float)
        b = self.biases(cosmo, params)
        lnb = np.where(self.present, np.log(np.where(self.present, b, 1.0)), 0.0)
        parts = [np.log(pk), lnb] + ([f[:, None]] if self.rsd else [])
        if geometry:
            qperp, qpar = self.ap_factors(cosmo, frame) if self.config.alcock_paczynski else (np.ones(self.n_shell),) * 2
            parts += [np.log(qperp)[:, None], np.log(qpar)[:, None]]
        return np.concatenate(parts, axis=1)

    def _volumes_for(self, context) -> np.ndarray:
        if not isinstance(context, FiducialVolumes):
            raise ComputationError(
                "counts_in_cells: the shell volumes of the fiducial cosmology are unknown; pass "
                "probe.fiducial_context(fiducial cosmology, parameters) as the context of gram()")
        if context.volumes.shape != (self.n_shell,):
            raise ComputationError(f"counts_in_cells: the fiducial context has {context.volumes.shape} "
                                   f"shell volumes, the probe has {self.n_shell} shells")
        return context.volumes

    def trace_form(self, signal: np.ndarray, cosmo: Cosmology) -> tuple[np.ndarray, np.ndarray]:
        """(the tracers' covariance P_ab + delta_ab/n_a of each (shell, k band, mu node) cell,
        (M, N, N); twice the probe's weights V k^2 dk w_mu / (8 pi^2), (M,)): the weights
        multiply Tr[...] without the 1/2 in :meth:`gram`, they are half the number of
        independent modes of each cell (see :meth:`fishcast.probes.base.Probe.trace_form`)."""
        n = len(self.tracers)
        w = 2.0 * self.mode_weights(self.volumes(cosmo))
        return np.asarray(signal).reshape(-1, n, n), np.asarray(w, dtype=float).reshape(-1)

    def mode_weights(self, volumes: np.ndarray) -> np.ndarray:
        """Trace-formula weights V_s/(8 pi^2) k^2dk w_mu per shell, (n_shell, n_k, n_mu)."""
        return volumes[:, None, None] / (8.0 * np.pi**2) * self.k2dk[:, :, None] * self.w_mu[None, None, :]

    def gram(self, fiducial_signal: np.ndarray, derivs: np.ndarray, context: FiducialVolumes | None = None,
             ) -> np.ndarray:
        """F_pq = sum_shells V/(8 pi^2) sum_k k^2dk sum_mu w_mu Tr[C^-1 dC_p C^-1 dC_q], V the
        fiducial shell volumes of ``context`` (from :meth:`fiducial_context`)."""
        W = self.mode_weights(self._volumes_for(context))
        return fisher_trace(np.asarray(fiducial_signal), np.asarray(derivs), W)

    def gram_by_tracer(self, fiducial_signal: np.ndarray, derivs: np.ndarray,
                       context: FiducialVolumes | None = None) -> np.ndarray:
        """Each tracer alone (its auto covariance only): (N, n_par, n_par); their sum over the
        first axis is the naive sum of single-tracer Fishers.  Same weights as :meth:`gram`."""
        W = self.mode_weights(self._volumes_for(context))
        C = np.asarray(fiducial_signal)
        d = np.asarray(derivs)
        Caa = np.diagonal(C, axis1=-2, axis2=-1)  # (*modes, N)
        y = np.diagonal(d, axis1=-2, axis2=-1) / Caa[None] * np.sqrt(W)[None, ..., None]
        y = np.moveaxis(y, -1, 0).reshape(Caa.shape[-1], d.shape[0], -1)  # (N, n_par, modes)
        return np.einsum("apm,aqm->apq", y, y)

    # --- outputs -----------------------------------------------------------------------------
    def _report_inputs(self, cosmo: Cosmology, params, context=None):
        """Inputs of the band-power report at the fiducial: P at the nodes, the common kernel
        P_eff(k, mu)/P(k) of the IST:F ingredients (None for the Kaiser model), and the rest."""
        frame = self._frame(cosmo, context)
        P, mu2, f, b, n, sig, V, ps = self._shell_inputs(cosmo, params, frame)
        pk = self.band_parameters(cosmo, params, frame)[:, :self.k.shape[1]]
        pk = np.exp(pk)
        kernel = P / pk[:, :, None] if self.config.needs_dispersions else None
        return frame, pk, kernel, f, b, n, sig, V, ps

    def products(self, cosmo: Cosmology, params: Mapping[str, float]) -> dict[str, tuple[np.ndarray, str]]:
        """At the fiducial ``cosmo`` (its own observed frame): k, mu, P, densities, biases,
        volumes, effective volumes, the model's ingredients."""
        frame, pk, kernel, f, b, n, sig, V, ps = self._report_inputs(cosmo, params)
        veff_t, veff = self._effective_volumes(pk, f, b, n, sig, V, kernel)
        cfg = self.config
        out = {
            "tracers": (np.array(self.tracers, dtype="S"), ""),
            "z_edges": (self.z_edges, ""),
            "z_eff": (self.z_eff, ""),
            "k": (self.k, "h/Mpc"),
            "k_edges": (self.k_edges, "h/Mpc"),
            "mu": (self.mu, ""),
            "mu_weights": (self.w_mu, ""),
            "pk": (pk, "(Mpc/h)^3"),
            "growth_rate": (f, ""),
            "density": (n, "(h/Mpc)^3"),
            "bias": (b, ""),
            "volume": (V, "(Mpc/h)^3"),
            "effective_volume": (veff, "(Mpc/h)^3"),
            "effective_volume_per_tracer": (veff_t, "(Mpc/h)^3"),
            "model": (np.array([
                f"observed frame: alcock_paczynski={str(cfg.alcock_paczynski).lower()} "
                "(shot noise, damping lengths, mode count and volume of the fiducial cosmology)",
                f"rsd={str(cfg.rsd).lower()}",
                f"fingers_of_god={cfg.fingers_of_god}"
                + (f" (fog_sigma_v={cfg.fog_sigma_v:g} km/s)" if cfg.fingers_of_god == "gaussian" else
                   " (sigma_p from the fiducial linear P)"),
                f"bao_damping={str(cfg.bao_damping).lower()}"
                + (" (no-wiggle: Eisenstein-Hu 1998 shape x Gaussian-smoothed ratio, width 0.25 in ln k)"
                   if cfg.bao_damping else ""),
                f"dispersions={cfg.dispersions}"
                + (f" (one sigma_v = sigma_p for every shell, of the fiducial at z = {float(np.mean(self.z_eff)):g}; "
                   "free ratios sv_survey, sp_survey)" if cfg.dispersions == "survey" else ""),
                f"observed_h={cfg.observed_h}",
                f"residual_shot_noise={str(cfg.residual_shot_noise).lower()}",
                "redshift errors: sigma_z0 per tracer " + ", ".join(f"{t.name}={t.sigma_z0:g}" for t in cfg.tracers),
                f"fisher_method={cfg.fisher_method}",
            ], dtype="S"), ""),
        }
        if sig is not None:
            out["damping_length"] = (sig, "Mpc/h")
        if frame.sigma_v is not None:
            sv, sp = self._dispersions(cosmo, params, frame)
            out["sigma_v"] = (sv, "Mpc/h")
            out["sigma_p"] = (sp, "Mpc/h")
        return out

    def reports(self, cosmo: Cosmology, params: Mapping[str, float], fiducial_signal: np.ndarray,
                derivs: np.ndarray, parameter_names, context: ObservedFrame | None = None,
                ) -> dict[str, tuple[np.ndarray, str]]:
        """The band-power report of every shell (:meth:`band_power_report`) and, on the
        survey's own parameters, each tracer alone, the naive sum of the single-tracer
        Fishers and the joint Fisher (``tracer_comparison/...``)."""
        out = self.band_power_report(cosmo, params, context)
        single = self.gram_by_tracer(fiducial_signal, derivs, context)
        out["tracer_comparison/parameter_names"] = (np.array(list(parameter_names), dtype="S"), "")
        out["tracer_comparison/tracers"] = (np.array(list(self.tracers), dtype="S"), "")
        out["tracer_comparison/single_tracer"] = (single, "1/(unit_i*unit_j)")
        out["tracer_comparison/naive_sum"] = (single.sum(axis=0), "1/(unit_i*unit_j)")
        out["tracer_comparison/joint"] = (self.gram(fiducial_signal, derivs, context), "1/(unit_i*unit_j)")
        return out

    def _shell(self, s: int, pk, f, b, n, sig, V, tracers=slice(None), kernel=None) -> Shell:
        """Shell ``s`` (from 0) for the band Fisher functions, with the given tracers (a mask
        or slice over the tracer axis; all by default) and the common kernel (n_shell, n_k,
        n_mu) or None."""
        return Shell(self.k[s], self.k2dk[s], self.mu, self.w_mu, pk[s], b[s, tracers], f[s], n[s, tracers], V[s],
                     sigma=None if sig is None else sig[s, tracers], rsd=self.rsd,
                     kernel=None if kernel is None else kernel[s])

    def _effective_volumes(self, pk, f, b, n, sig, V, kernel=None):
        per, comb = zip(*[effective_volumes(self._shell(s, pk, f, b, n, sig, V, kernel=kernel))
                          for s in range(self.n_shell)])
        return np.array(per), np.array(comb)

    def _log_slope(self, cosmo: Cosmology, frame: ObservedFrame) -> np.ndarray:
        """d ln P / d ln k at the observed nodes (n_shell, n_k), by a central difference in ln k."""
        eps = 1e-4
        r = self._k_ratio(cosmo, frame) if self.config.alcock_paczynski else 1.0
        up = np.log(np.asarray(cosmo.pk_h(self.z_eff[:, None], self.k * r * math.exp(eps), nonlinear=False)))
        dn = np.log(np.asarray(cosmo.pk_h(self.z_eff[:, None], self.k * r * math.exp(-eps), nonlinear=False)))
        return (up - dn) / (2.0 * eps)

    def band_power_report(self, cosmo: Cosmology, params: Mapping[str, float],
                          context: ObservedFrame | None = None) -> dict[str, tuple[np.ndarray, str]]:
        """Per shell i (from 1), the band-power / bias / f Fisher (Abramo 2012) and the
        single-tracer comparison, as ``{"shells/<i>/<dataset>": (array, units)}``:

        * ``tracers``: the tracers present in the shell (the others are left out of it; a
          shell without tracers has only the k and volume datasets);
        * ``parameter_names``: lnP_<band> (1-based), lnb_<tracer>, f (with RSD);
        * ``fisher``: the joint multi-tracer matrix; ``single_tracer`` (N, p, p): each tracer
          alone (FKP), embedded in the same parameter list; ``naive_sum``: their sum;
        * ``geometry_fisher`` / ``geometry_parameter_names`` (Kaiser model with
          Alcock-Paczynski): the joint matrix with ln q_perp, ln q_par appended
          (:func:`geometry_band_fisher`);
        * ``sigma_lnP``: conditional 1/sqrt(F_ii) of each band (biases and f known), rows
          joint / naive sum / each tracer alone, (2 + N, n_k);
        * ``sigma_f`` (with RSD): sigma(f) with P known and the biases marginalized, for
          joint / naive sum / each tracer alone, (2 + N,);
        * k, k_edges [h/Mpc], volume, effective volumes [(Mpc/h)^3], z range.
        Rows of the comparisons are named in ``comparison_rows``.  With the IST:F ingredients
        the band powers are those of P_lin and the de-wiggling / Lorentzian factor is held
        fixed (f varied at fixed damping).
        """
        frame, pk, kernel, f, b, n, sig, V, ps = self._report_inputs(cosmo, params, context)
        veff_t, veff = self._effective_volumes(pk, f, b, n, sig, V, kernel)
        geometry = self.config.alcock_paczynski and not self.config.needs_dispersions
        slope = self._log_slope(cosmo, frame) if geometry else None
        n_k = self.k.shape[1]
        out: dict[str, tuple[np.ndarray, str]] = {}
        for s in range(self.n_shell):
            m = self.present[s]
            names_s = [t for t, here in zip(self.tracers, m) if here]
            pre = f"shells/{s + 1}/"
            out[pre + "tracers"] = (np.array(names_s, dtype="S"), "")
            if m.any():
                N = int(m.sum())
                shell = self._shell(s, pk, f, b, n, sig, V, tracers=m, kernel=kernel)
                F = band_fisher(shell)
                Fs = single_tracer_band_fishers(shell)
                naive = Fs.sum(axis=0)
                mats = [F, naive] + list(Fs)
                with np.errstate(divide="ignore"):
                    sig_P = np.array([1.0 / np.sqrt(np.diag(M)[:n_k]) for M in mats])
                rows = np.array(["joint", "naive_sum"] + [f"{t}_alone" for t in names_s], dtype="S")
                out[pre + "parameter_names"] = (np.array(band_parameter_names(n_k, names_s, self.rsd), dtype="S"), "")
                out[pre + "fisher"] = (F, "")
                out[pre + "single_tracer"] = (Fs, "")
                out[pre + "naive_sum"] = (naive, "")
                out[pre + "comparison_rows"] = (rows, "")
                out[pre + "sigma_lnP"] = (sig_P, "")
                if geometry:
                    G = geometry_band_fisher(self.k[s], self.k2dk[s], self.mu, self.w_mu, pk[s], slope[s], b[s, m],
                                             f[s], n[s, m], V[s], sigma=shell.sigma, rsd=self.rsd, extra_noise=ps[s, m])
                    out[pre + "geometry_fisher"] = (G, "")
                    out[pre + "geometry_parameter_names"] = (
                        np.array(geometry_parameter_names(n_k, names_s, self.rsd), dtype="S"), "")
                if self.rsd:
                    idx = [list(range(n_k, n_k + N + 1))] * 2 + [[n_k + a, n_k + N] for a in range(N)]
                    out[pre + "sigma_f"] = (np.array([_marg_sigma_last(M, i) for M, i in zip(mats, idx)]), "")
            out[pre + "k"] = (self.k[s], "h/Mpc")
            out[pre + "k_edges"] = (self.k_edges[s], "h/Mpc")
            out[pre + "z_range"] = (self.z_edges[s:s + 2], "")
            out[pre + "volume"] = (np.array(V[s]), "(Mpc/h)^3")
            out[pre + "effective_volume"] = (veff[s], "(Mpc/h)^3")
            out[pre + "effective_volume_per_tracer"] = (veff_t[s], "(Mpc/h)^3")
        return out


def _h_of(cosmo) -> float:
    """h of a cosmology (``cosmo.h``, or ``cosmo.derived["h"]``)."""
    h = getattr(cosmo, "h", None)
    return float(h if h is not None else cosmo.derived["h"])


def _shape_parameters(cosmo, params: Mapping[str, float] | None) -> tuple[float, float, float, float]:
    """(Omega_m, Omega_b, h, n_s) of a cosmology, for the Eisenstein-Hu reference shape: from
    ``params`` where given, else from the cosmology's derived parameters."""
    d = dict(getattr(cosmo, "derived", {}) or {})
    d.update({k: float(v) for k, v in (params or {}).items()})
    try:
        return float(d["Omega_m"]), float(d["Omega_b"]), _h_of(cosmo), float(d["n_s"])
    except KeyError as exc:
        raise ComputationError(f"counts_in_cells: bao_damping needs the fiducial {exc.args[0]}") from None


def _marg_sigma_last(F: np.ndarray, idx: list[int]) -> float:
    """Marginalized sigma of the last parameter of the sub-block idx (inf if singular)."""
    M = F[np.ix_(idx, idx)]
    try:
        L = np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        return math.inf
    e = np.zeros(len(idx))
    e[-1] = 1.0
    y = np.linalg.solve(L, e)
    return float(np.sqrt(y @ y))


def _read_table(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    import io

    from ..io.reading import read_text

    import warnings

    try:
        with warnings.catch_warnings():  # an empty table: numpy warns, then the shape check refuses it
            warnings.simplefilter("ignore", UserWarning)
            data = np.loadtxt(io.StringIO(read_text(path, "density table")), ndmin=2)
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{path}: cannot read a two-column (z, value) table: {exc}") from None
    if data.shape[1] != 2 or data.shape[0] < 2:
        raise FileFormatError(f"{path}: need two columns (z, value) and at least two rows")
    z, v = data[:, 0], data[:, 1]
    if np.any(np.diff(z) <= 0) or np.any(v < 0) or not np.all(np.isfinite(data)):
        raise FileFormatError(f"{path}: z must increase and values must be finite and >= 0")
    return z, v


def build(config: CountsInCellsConfig, survey_dir: pathlib.Path) -> CountsInCellsProbe:
    """Make the probe from its validated configuration (relative table files are resolved
    against ``survey_dir``).  Raises InputError / FileFormatError on bad input."""
    tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, t in enumerate(config.tracers):
        d = t.density
        if d.file is not None:
            path = d.file if d.file.is_absolute() else pathlib.Path(survey_dir) / d.file
            with at_key("tracers", i, "density", "file"):
                tables[t.name] = _read_table(path)
        elif d.table is not None:
            tables[t.name] = (np.asarray(d.z, dtype=float), np.asarray(d.table, dtype=float))
    if config.fisher_method == "exact_cells":
        from fishcast.probes.exact_cells_probe import ExactCellsProbe

        return ExactCellsProbe(config, tables)
    return CountsInCellsProbe(config, tables)


# ---------------------------------------------------------------------------------------------
# the multi-tracer gain on the survey's own parameters
# ---------------------------------------------------------------------------------------------


def tracer_gain(names, joint: np.ndarray, single: np.ndarray, tracers, prior: np.ndarray | None = None,
                params=None) -> dict[str, object]:
    """Marginalized 1-sigma errors on ``params`` from each tracer alone (FKP), from the naive
    sum of the single-tracer Fisher matrices, and from the joint multi-tracer Fisher.

    names: the Fisher parameters; joint (p, p); single (N, p, p); prior (p, p) added to every
    matrix (the survey's Gaussian priors), or None. A parameter a tracer does not constrain at
    all (e.g. another tracer's bias) is dropped from that tracer's matrix before inversion;
    where the rest is degenerate, or a requested parameter was dropped, the error is NaN.
    Returns ``{"params": [...], "columns": [tracer..., "naive sum", "joint"], "sigma": (n_params, n_columns)}``.
    """
    from fishcast.errors import DegenerateFisherError
    from fishcast.fisher import FisherMatrix

    names = [str(n) for n in names]
    params = list(params) if params else names
    P = np.zeros_like(joint) if prior is None else np.asarray(prior)
    mats = [np.asarray(s) for s in single] + [np.asarray(single).sum(axis=0), np.asarray(joint)]
    cols = [str(t) for t in tracers] + ["naive sum", "joint"]
    sigma = np.full((len(params), len(mats)), np.nan)
    for j, M in enumerate(mats):
        F = M + P
        keep = [i for i in range(len(names)) if F[i, i] > 0]
        try:
            fm = FisherMatrix(F[np.ix_(keep, keep)], [names[i] for i in keep])
            s = fm.marginalized_sigma()
        except (DegenerateFisherError, InputError):
            continue
        for r, p in enumerate(params):
            if p in fm.names:
                sigma[r, j] = s[fm.index(p)]
    return {"params": params, "columns": cols, "sigma": sigma}
