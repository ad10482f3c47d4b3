"""The CAMB backend: the parameter map, derived quantities, shared transfer runs."""

from __future__ import annotations

import numpy as np
import pytest

from fishcast import cosmology
from fishcast.errors import ComputationError
from fishcast.parameters import camb_background_inputs, expand_patterns

from .conftest import ISTF_FIDUCIAL


def test_parameter_map_is_explicit():
    # hand computation: ombh2 = 0.05 * 0.67^2, omch2 = Omega_m h^2 - ombh2 - omnuh2
    p = dict(ISTF_FIDUCIAL)
    bg = camb_background_inputs(p, omnuh2=0.00064)
    assert bg["H0"] == pytest.approx(67.0)
    assert bg["ombh2"] == pytest.approx(0.05 * 0.4489)
    assert bg["omch2"] == pytest.approx(0.32 * 0.4489 - 0.05 * 0.4489 - 0.00064)
    assert bg["mnu"] == 0.06


def test_neutrino_density_follows_the_textbook_relation():
    # Omega_nu h^2 = sum m_nu / 93.14 eV (Lesgourgues & Pastor 2006) to about 1 %
    assert cosmology.neutrino_omnuh2(0.06) == pytest.approx(0.06 / 93.14, rel=0.01)
    assert cosmology.neutrino_omnuh2(0.0) == 0.0


def test_camb_derived_parameters_equal_the_fiducials(fiducial_cosmo):
    d = fiducial_cosmo.derived
    assert abs(d["Omega_m"] - 0.32) < 1e-4
    assert abs(d["sigma8"] - 0.815583) < 1e-4
    assert abs(d["h"] - 0.67) < 1e-4
    # neutrinos are inside Omega_m
    assert d["Omega_nu"] > 0
    assert d["Omega_m"] == pytest.approx((d["ombh2"] + d["omch2"] + d["omnuh2"]) / d["h"] ** 2)


def test_background_against_analytic_limits(fiducial_cosmo):
    c = fiducial_cosmo
    # H(0) = H0; D(0) = 1; f(z) -> ~Omega_m(z)^0.55 (Linder 2005) to 1 % at z = 1
    assert c.hubble_of(0.0) == pytest.approx(67.0, rel=1e-6)
    assert c.growth[0] == 1.0
    om = 0.32 * 2.0**3 / (0.32 * 2.0**3 + 0.68)
    assert c.growth_rate_of(1.0) == pytest.approx(om**0.55, rel=0.01)
    # chi(z) for flat LCDM: c Int dz/H, radiation-free estimate within 0.3 %
    z = np.linspace(0, 1, 2001)
    hz = 67.0 * np.sqrt(0.32 * (1 + z) ** 3 + 0.68)
    chi = np.trapezoid(299792.458 / hz, z)
    assert c.chi_of(1.0) == pytest.approx(chi, rel=3e-3)


def test_power_spectrum_interpolation_and_extrapolation(fiducial_cosmo):
    c = fiducial_cosmo
    k = c.k[50]
    assert c.pk(c.z[10], k, nonlinear=False) == pytest.approx(c.pk_lin[10, 50], rel=1e-8)
    # nonlinear >= linear at k ~ 1/Mpc, equal at large scales
    assert c.pk(0.0, 1.0) > 2 * c.pk(0.0, 1.0, nonlinear=False)
    assert c.pk(0.0, 1e-3) == pytest.approx(c.pk(0.0, 1e-3, nonlinear=False), rel=1e-3)
    # power-law extrapolation: continuous at k_max and falling beyond it
    kmax = c.k[-1]
    assert c.pk(0.5, kmax * (1 + 1e-9)) == pytest.approx(c.pk(0.5, kmax), rel=1e-6)
    assert c.pk(0.5, 5 * kmax) < c.pk(0.5, kmax)
    # h units: P_h(k_h) = P(k h) h^3
    h = c.derived["h"]
    assert c.pk_h(0.3, 0.1) == pytest.approx(c.pk(0.3, 0.1 * h, nonlinear=False) * h**3)


def test_primordial_points_share_one_boltzmann_run(fast_settings, fiducial_cosmo):
    before = cosmology.boltzmann_calls()
    pts = [dict(ISTF_FIDUCIAL, n_s=0.95), dict(ISTF_FIDUCIAL, sigma8=0.80), dict(ISTF_FIDUCIAL, n_s=0.97)]
    res = cosmology.compute_many(pts, fast_settings)
    assert cosmology.boltzmann_calls() - before == 1
    assert res[1].derived["sigma8"] == pytest.approx(0.80, rel=1e-6)
    # sigma8^2 proportional to A_s in linear theory: the linear spectrum scales exactly
    ratio = res[1].pk_lin / fiducial_cosmo.pk_lin
    assert np.allclose(ratio, (0.80 / 0.815583) ** 2, rtol=1e-6)


def test_as_parametrization_matches_sigma8(fast_settings, fiducial_cosmo):
    p = dict(ISTF_FIDUCIAL)
    del p["sigma8"]
    p["A_s"] = fiducial_cosmo.derived["A_s"]
    r = cosmology.compute(p, fast_settings)
    assert r.derived["sigma8"] == pytest.approx(0.815583, rel=1e-6)


def test_unphysical_point_is_refused_before_camb(fast_settings):
    with pytest.raises(ComputationError, match="Omega_m"):
        cosmology.compute(dict(ISTF_FIDUCIAL, Omega_m=0.04), fast_settings)


def test_cache_round_trip(fiducial_cosmo):
    again = cosmology.CosmologyResult.from_arrays(fiducial_cosmo.to_arrays())
    assert np.array_equal(again.pk_nl, fiducial_cosmo.pk_nl)
    assert again.derived == fiducial_cosmo.derived
    assert again.params == fiducial_cosmo.params


def test_point_key_depends_on_inputs(fast_settings):
    k1 = cosmology.point_key(ISTF_FIDUCIAL, fast_settings)
    assert k1 == cosmology.point_key(dict(ISTF_FIDUCIAL), fast_settings)
    assert k1 != cosmology.point_key(dict(ISTF_FIDUCIAL, h=0.6700001), fast_settings)


def test_glob_expansion():
    names, unmatched = expand_patterns(["m_*", "h", "x_*"], ["h", "m_nu", "m_10", "m_2", "m_1"])
    assert names == ["m_1", "m_2", "m_10", "h"]  # natural order; a glob never matches m_nu
    assert unmatched == ["x_*"]


def test_sigma8_of_the_result_by_an_independent_quadrature(fiducial_cosmo):
    """The normalized result has the sigma8 asked for: sigma8^2 = Int dk k^2 P(k) W(kR)^2 /
    (2 pi^2), R = 8 Mpc/h, W(x) = 3 (sin x - x cos x)/x^3 (Peebles 1980, the top hat), integrated
    here with scipy's adaptive quad on the result's own linear P(k, z = 0) (its table and
    spline, not the backend's quadrature nodes), piecewise in ln k so that every piece holds a
    few oscillations of W^2 at most."""
    from scipy.integrate import quad

    c = fiducial_cosmo
    R = 8.0 / c.h  # [Mpc]

    def integrand(lnk):
        k = np.exp(lnk)
        x = k * R
        w = 3.0 * (np.sin(x) - x * np.cos(x)) / x**3 if x > 1e-2 else 1.0 - x**2 / 10.0
        return k**3 * float(c.pk(0.0, k, nonlinear=False)) * w**2 / (2.0 * np.pi**2)

    edges = np.concatenate([np.linspace(np.log(1e-5), np.log(0.05), 8),
                            np.log(np.linspace(0.05, 10.0, 400))[1:]])
    s2 = sum(quad(integrand, a, b, epsabs=0.0, epsrel=1e-10, limit=200)[0] for a, b in zip(edges[:-1], edges[1:]))
    assert np.sqrt(s2) == pytest.approx(ISTF_FIDUCIAL["sigma8"], rel=1e-4)
    assert c.derived["sigma8"] == pytest.approx(ISTF_FIDUCIAL["sigma8"], rel=1e-12)
    assert c.sigma8_z[0] == pytest.approx(c.derived["sigma8"], rel=1e-12)


#: the h step of the smoothness tests (IST:F fiducial, h +- 1 %)
DH = 0.01 * ISTF_FIDUCIAL["h"]


@pytest.fixture(scope="module")
def h_steps():
    """{k_max [1/Mpc]: (result at h - DH, result at h + DH)} on a small linear table (z = 0 ..
    1, 4 nodes), shared by the smoothness tests: 4 Boltzmann runs."""
    out = {}
    for k_max in (10.0, 20.0):
        s = cosmology.CosmologySettings(nonlinear_model="none", z_max=1.0, n_z=4, k_max=k_max)
        out[k_max] = tuple(cosmology.compute_many([dict(ISTF_FIDUCIAL, h=ISTF_FIDUCIAL["h"] - DH),
                                                   dict(ISTF_FIDUCIAL, h=ISTF_FIDUCIAL["h"] + DH)], s))
    return out


def test_the_normalization_is_smooth_in_h_whatever_k_max(h_steps):
    """A_s from a requested sigma8 (IST:F fiducial, h +- 1 %): d ln A_s/d h is the same at
    k_max = 10 and 20/Mpc to 1e-4, and equals CAMB's own converged value (its sigma8 with
    k_per_logint = 30, the same with k_max 10 and 30/Mpc: -3.42072, measured with CAMB 2.0.5)
    to 3e-4. With CAMB's sigma8 at its default k sampling it moved by 2.1e-3 between these two
    k_max (-3.42221, -3.42433) and was 2e-3 off the converged value."""
    slopes = []
    for k_max in (10.0, 20.0):
        lo, hi = h_steps[k_max]
        assert lo.derived["sigma8"] == pytest.approx(ISTF_FIDUCIAL["sigma8"], rel=1e-12)
        slopes.append((np.log(hi.derived["A_s"]) - np.log(lo.derived["A_s"])) / (2 * DH))
    assert abs(slopes[0] - slopes[1]) < 1e-4
    assert slopes == pytest.approx([-3.42072] * 2, abs=3e-4)


def growth_equation_rate(derived, params, z, source="cb"):
    """f(z) = d ln D / d ln a of the scale-independent linear growth equation

        D'' + (2 + d ln H / d ln a) D' = 3/2 Omega_src(a) D,   ' = d / d ln a,
        Omega_src(a) = Omega_src a^-3 H0^2 / H(a)^2,

    with H(z) from CAMB's background alone (camb.get_background: no perturbations, no
    fishcast code) for the cosmology a result reports (its H0, ombh2, omch2; m_nu, w0, wa of
    its parameters; dark energy PPF as the backend's), integrated by scipy's solve_ivp from
    a = 1e-3 (D = D' = a; the decaying mode is down by (a / 1e-3)^-5/2 by z = 3). The
    source: ``cb`` baryons + CDM, (ombh2 + omch2) / h^2 -- the convention of CLASS's
    background.c, whose growth equation leaves the massive neutrinos out of the source
    (they do not cluster below their free-streaming length); ``m`` all matter, the
    neutrinos as a^-3 (ignoring their relativistic past, enough to tell the two apart)."""
    import camb
    from scipy.integrate import solve_ivp
    from scipy.interpolate import CubicSpline

    m_nu = float(params["m_nu"])
    pars = camb.CAMBparams()
    pars.set_cosmology(H0=derived["H0"], ombh2=derived["ombh2"], omch2=derived["omch2"], mnu=m_nu,
                       num_massive_neutrinos=1 if m_nu > 0 else 0)
    pars.set_dark_energy(w=float(params["w0"]), wa=float(params["wa"]), dark_energy_model="ppf")
    assert pars.omnuh2 == pytest.approx(derived["omnuh2"], rel=1e-10, abs=1e-14)
    bg = camb.get_background(pars)
    h2 = (derived["H0"] / 100.0) ** 2
    omega = (derived["ombh2"] + derived["omch2"] + (derived["omnuh2"] if source == "m" else 0.0)) / h2
    lna = np.linspace(np.log(1e-3) - 0.2, 0.05, 4000)
    lnh = CubicSpline(lna, np.log(bg.hubble_parameter(np.exp(-lna) - 1.0) / derived["H0"]))
    dlnh = lnh.derivative()

    def rhs(x, y):
        om = omega * np.exp(-3.0 * x - 2.0 * lnh(x))
        return [y[1], -(2.0 + dlnh(x)) * y[1] + 1.5 * om * y[0]]

    sol = solve_ivp(rhs, [np.log(1e-3), 0.0], [1e-3, 1e-3], rtol=1e-10, atol=1e-16, dense_output=True)
    d, dp = sol.sol(-np.log1p(np.asarray(z, dtype=float)))
    return dp / d


def test_growth_rate_against_the_growth_equation(fiducial_cosmo):
    """The growth rate (fishcast.cosmology.cb_growth_rate: CAMB's velocity-density
    f sigma8_cb / sigma8_cb) is that of baryons + CDM: within 1e-3 of the scale-independent
    growth equation sourced by baryons + CDM (CLASS's convention, :func:`growth_equation_rate`)
    at the IST:F fiducial (m_nu = 0.06 eV), from z = 0 to 2.5 and at the Euclid GCsp shells
    (measured: within 1.5e-4). Sourced by all matter the equation gives a growth rate 2.6e-3
    higher, so the test tells the two apart; the previous definition (f sigma8 over the
    total-matter sigma8) was 4.2e-3 to 4.4e-3 above this one."""
    c = fiducial_cosmo
    z = np.array([0.0, 0.5, 1.0, 1.2, 1.4, 1.65, 2.5])
    f = c.growth_rate_of(z)
    ref = growth_equation_rate(c.derived, c.params, z, "cb")
    np.testing.assert_allclose(f, ref, rtol=1e-3)
    all_matter = growth_equation_rate(c.derived, c.params, z, "m")
    assert np.all(all_matter / f - 1 > 1.5e-3), all_matter / f - 1


def test_growth_rate_is_smooth_in_h_whatever_k_max(h_steps):
    """d ln f / d h at z = 1 (h +- 1 %) is the same at k_max = 10 and 20/Mpc to 1e-3
    (relative; measured 2e-4) and within 10 % of the growth equation's (0.0089; CAMB's
    velocity-density f at 8 Mpc/h: 0.00856). sigma8_cb from CAMB's get_sigmaR against
    f sigma8 from its get_sigma8 quadrature -- two quadratures whose offset moves with h --
    gave 0.0166 and 0.0109 (CAMB 2.0.5); fishcast takes sigma8_cb in the numerics of
    f sigma8 (cb_growth_rate)."""
    slopes, ode = [], []
    for k_max in (10.0, 20.0):
        lo, hi = h_steps[k_max]
        assert lo.z[-1] == 1.0
        slopes.append((np.log(hi.growth_rate[-1]) - np.log(lo.growth_rate[-1])) / (2 * DH))
        f_lo, f_hi = (growth_equation_rate(r.derived, r.params, [1.0])[0] for r in (lo, hi))
        ode.append((np.log(f_hi) - np.log(f_lo)) / (2 * DH))
    assert slopes[1] == pytest.approx(slopes[0], rel=1e-3)
    assert slopes[0] == pytest.approx(ode[0], rel=0.1)


def test_growth_rate_without_massive_neutrinos():
    """With m_nu = 0 baryons + CDM are all the matter (CAMB's delta_nonu is its delta_tot):
    the growth rate is within 1e-3 of the growth equation on either source, which coincide."""
    p = dict(ISTF_FIDUCIAL, m_nu=0.0)
    res = cosmology.compute(p, cosmology.CosmologySettings(nonlinear_model="none", z_max=1.0, n_z=4, k_max=10.0))
    assert res.derived["omnuh2"] == 0.0
    np.testing.assert_allclose(res.growth_rate, growth_equation_rate(res.derived, res.params, res.z, "cb"), rtol=1e-3)
    np.testing.assert_allclose(res.growth_rate, growth_equation_rate(res.derived, res.params, res.z, "m"), rtol=1e-3)


def test_halofit_reads_the_linear_table_up_to_the_floor():
    """What cosmology.NONLINEAR_K_FLOOR protects: halofit (takahashi) takes its nonlinear scale
    at z = 3.27 from the linear P(k) up to k_max. On the reference table's nodes, P_nl at
    k <= k_max/3 (no extrapolation) and z = 3.27 is within 1e-4 of the k_max = 30/Mpc table at
    the floor there (8.8/Mpc), and 2e-3 off at 5.1/Mpc (measured with CAMB 2.0.5: 8e-6 and
    2e-3); at z = 0.5 the low k_max is enough (5e-6)."""
    z_top = 3.27
    floor = cosmology.nonlinear_k_floor("takahashi", z_top)
    assert floor == pytest.approx(8.8)

    def table(k_need):
        k_max, n_k = cosmology.reference_k_nodes(k_need, 1e-4, 300)
        return cosmology.compute(ISTF_FIDUCIAL, cosmology.CosmologySettings(
            nonlinear_model="takahashi", z_max=z_top, n_z=4, k_max=k_max, n_k=n_k))

    ref, at_floor, low = table(30.0), table(floor), table(5.0)

    def off(res, z):
        k = np.geomspace(0.01, res.k[-1] / 3, 200)
        return np.max(np.abs(res.pk(z, k) / ref.pk(z, k) - 1))

    assert off(at_floor, z_top) < 1e-4
    assert off(low, z_top) > 1e-3
    assert off(low, 0.5) < 1e-4


def test_tophat_window_against_its_series_and_the_closed_form():
    """W(x) = 3 j1(x)/x = 3 (sin x - x cos x)/x^3 = 1 - x^2/10 + x^4/280 - x^6/15120 + ...
    (the series of j1, Abramowitz & Stegun 10.1.2): the series to x^6 on both sides of the
    switch at x = 1e-2, the closed form at large x."""
    x = np.array([1e-4, 1e-3, 5e-3, 1e-2 * (1 - 1e-9), 1e-2, 2e-2])
    np.testing.assert_allclose(cosmology.tophat_window(x), 1 - x**2 / 10 + x**4 / 280 - x**6 / 15120, rtol=1e-11)
    big = np.array([0.5, 4.4934, 30.0])  # 4.4934: the first zero, tan x = x
    np.testing.assert_allclose(cosmology.tophat_window(big), 3 * (np.sin(big) - big * np.cos(big)) / big**3, rtol=1e-14)
    assert abs(cosmology.tophat_window(4.493409457909064)) < 1e-12
