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
