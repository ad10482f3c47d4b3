"""The IST:F spectroscopic ingredients (fishcast/probes/rsd_model.py) against things written
independently: pyccl's Eisenstein & Hu no-wiggle linear spectrum (an independent code),
closed-form integrals, and the limits of the de-wiggled spectrum (Blanchard et al. 2020,
sec. 3.2: P_dw -> P_lin without damping, -> P_nw for large damping)."""

from __future__ import annotations

import numpy as np
import pytest

from fishcast.probes import rsd_model


def test_eisenstein_hu_nowiggle_shape_matches_pyccl():
    """k^n_s T_0(k)^2 against pyccl's 'eisenstein_hu_nowiggles' linear P at z = 0: the ratio
    is constant in k (the normalization differs) to 1e-3."""
    ccl = pytest.importorskip("pyccl")
    om, ob, h, ns = 0.32, 0.05, 0.67, 0.96
    c = ccl.Cosmology(Omega_c=om - ob, Omega_b=ob, h=h, n_s=ns, sigma8=0.8, T_CMB=rsd_model.T_CMB,
                      transfer_function="eisenstein_hu_nowiggles", m_nu=0.0)
    k = np.geomspace(1e-3, 2.0, 40)  # 1/Mpc
    ours = k**ns * rsd_model.eisenstein_hu_nowiggle_transfer(k, om, ob, h) ** 2
    ref = ccl.linear_matter_power(c, k, 1.0)
    r = ours / ref
    np.testing.assert_allclose(r / r.mean(), 1.0, rtol=1e-3)


def test_nowiggle_power_keeps_the_broadband_and_removes_wiggles():
    """A smooth spectrum times (1 + 0.05 sin(k r_s)), r_s = 150 Mpc: P_nw follows the smooth
    spectrum within 1 % above k = 0.05/Mpc and 0.1 % above 0.1/Mpc (a 5 % wiggle removed),
    within 3 % down to 0.02/Mpc (there a wiggle is longer than the 0.25 smoothing width in
    ln k and partly survives: the limit of this no-wiggle choice), and equals a spectrum that
    has no wiggles to begin with within 0.3 %."""
    om, ob, h, ns = 0.32, 0.05, 0.67, 0.96
    k = np.geomspace(1e-4, 20.0, 1200)
    smooth = 2e4 * k**ns * rsd_model.eisenstein_hu_nowiggle_transfer(k, om, ob, h) ** 2 * (1 + 0.1 * np.log1p(k))
    wiggly = smooth * (1 + 0.05 * np.sin(k * 150.0) * np.exp(-((k / 0.3) ** 2)))
    pnw = rsd_model.nowiggle_power(k, wiggly, om, ob, h, ns)
    for lo, tol in ((0.02, 3e-2), (0.05, 1e-2), (0.1, 1e-3)):
        band = (k > lo) & (k < 0.5)
        np.testing.assert_allclose(pnw[band] / smooth[band], 1.0, rtol=tol)
    sel = (k > 0.02) & (k < 0.5)
    assert np.max(np.abs(wiggly[sel] / smooth[sel] - 1)) > 0.02  # there were wiggles to remove
    np.testing.assert_allclose(rsd_model.nowiggle_power(k, smooth, om, ob, h, ns)[sel] / smooth[sel], 1.0, rtol=3e-3)
    with pytest.raises(ValueError):
        rsd_model.nowiggle_power(np.linspace(0.01, 1, 10), np.ones(10), om, ob, h, ns)


def test_velocity_dispersion_of_a_gaussian_spectrum():
    """P = A exp(-k^2 R^2): Int_0^inf P dk = A sqrt(pi) / (2 R), sigma_v^2 = that / (6 pi^2)."""
    A, R = 3e4, 4.0
    k = np.geomspace(1e-10, 10.0, 40000)
    sv = rsd_model.velocity_dispersion(k, A * np.exp(-(k * R) ** 2))
    assert sv == pytest.approx(np.sqrt(A * np.sqrt(np.pi) / (2 * R) / (6 * np.pi**2)), rel=1e-6)


def test_dewiggled_power_limits_and_damping_factors():
    k = np.array([0.05, 0.1, 0.2])
    mu = np.array([0.0, 0.5, 1.0])[:, None]
    plin, pnw = np.array([1.1, 0.9, 1.05]), np.ones(3)
    f, sv = 0.8, 5.0
    np.testing.assert_allclose(rsd_model.dewiggled_power(plin, pnw, k, mu, f, 0.0), plin + 0 * mu)
    np.testing.assert_allclose(rsd_model.dewiggled_power(plin, pnw, k, mu, f, 1e3), pnw + 0 * mu)
    # g_mu = sigma_v^2 [1 - mu^2 + mu^2 (1+f)^2]: transverse modes damped by sigma_v, radial by (1+f) sigma_v
    g = rsd_model.bao_damping_exponent(k, mu, f, sv)
    np.testing.assert_allclose(g[0], (sv * k) ** 2)
    np.testing.assert_allclose(g[2], ((1 + f) * sv * k) ** 2)
    np.testing.assert_allclose(rsd_model.lorentzian_fog(k, mu, f, sv)[2], 1 / (1 + (f * k * sv) ** 2))
    assert np.all(rsd_model.lorentzian_fog(k, mu, f, sv)[0] == 1.0)
    # sigma_r = c sigma_z (1+z) / H: 0.001 at z = 1 with H = 150 km/s/Mpc -> 3.997 Mpc
    assert rsd_model.redshift_error_length(1.0, 150.0, 0.001) == pytest.approx(299792.458 * 0.002 / 150.0)
