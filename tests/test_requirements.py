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


# ------------------------------------------------------------------ the recipes, against the reference
def _survey(recipe: str, extra: dict | None = None):
    from fishcast.survey import load_survey

    return load_survey(ROOT / "recipes" / f"{recipe}.yaml", {**FAST, **(extra or {})})


def _forecast(survey, cache_dir):
    from fishcast.pipeline.cache import Cache
    from fishcast.pipeline.forecast import run_forecast

    return run_forecast(survey, cache=Cache(cache_dir))


WL_RECIPES = ["euclid-wl-pessimistic", "euclid-wl-optimistic", "lsst-y10-wl"]
CLUSTERING_RECIPES = ["desi-multitracer", "two-tracer-toy"]


@pytest.mark.parametrize("recipe", WL_RECIPES)
def test_weak_lensing_asks_for_what_it_needs(recipe):
    """The settings read from the probe: a k_max and z_max of its own (not 30 and 4), the
    nonlinear spectrum; a user's accuracy.k_max / z_max override them."""
    sv = _survey(recipe)
    s = sv.settings
    probe = sv.probes[0]
    req = probe.requirements()
    assert req.nonlinear and s.nonlinear
    assert s.k_max == pytest.approx(req.k_max) and s.z_max == pytest.approx(req.z_max)
    assert req.k_max > 5.0 and req.k_max != 30.0
    assert req.z_max <= probe.z[-1]
    if recipe.startswith("euclid"):  # IST:F's n_i(z) are negligible above z ~ 3 (LSST's reach 4)
        assert req.z_max < 3.1
    over = _survey(recipe, {"cosmology.accuracy.k_max": 7.0, "cosmology.accuracy.z_max": 4.0}).settings
    assert (over.k_max, over.z_max) == (7.0, 4.0)


@pytest.mark.parametrize("recipe", CLUSTERING_RECIPES)
def test_clustering_asks_for_the_linear_spectrum_only(recipe):
    sv = _survey(recipe)
    req = sv.probes[0].requirements()
    assert not req.nonlinear and sv.settings.nonlinear_model == "none"
    assert req.k_max < 1.0  # the shells' k_max [h/Mpc > 1/Mpc]
    from fishcast.cosmology import MIN_K_MAX_LINEAR

    assert sv.settings.k_max == MIN_K_MAX_LINEAR  # the backend's floor (CAMB's transfer sampling)
    assert sv.settings.z_max == pytest.approx(max(req.z_max, 0.5))


def _pair(recipe, cache_dir, reference_extra):
    mine = _forecast(_survey(recipe), cache_dir)
    ref = _forecast(_survey(recipe, {**REFERENCE, **reference_extra}), cache_dir)
    return mine, ref


def _signals(fc):
    return [np.asarray(p.signal(fc.fiducial_cosmology, fc.survey.fiducial)) for p in fc.survey.probes]


def _check_errors(mine, ref):
    names = list(ref.fisher.names)
    assert list(mine.fisher.names) == names
    s, s_ref = mine.fisher.marginalized_sigma(), ref.fisher.marginalized_sigma()
    worst = int(np.argmax(np.abs(s / s_ref - 1)))
    assert abs(s[worst] / s_ref[worst] - 1) < 5e-3, f"{names[worst]}: {s[worst]:.6g} vs {s_ref[worst]:.6g}"


@pytest.fixture(scope="module")
def wl_pairs(cache_dir):
    """recipe -> (forecast with the probes' settings, with the reference settings and the
    whole n_i(z) integrated). The Euclid recipes share their reference points."""
    return {r: _pair(r, cache_dir, {"probes.weak_lensing.integration.z_tail": 0.0}) for r in WL_RECIPES}


@pytest.mark.parametrize("recipe", WL_RECIPES)
def test_weak_lensing_cl_and_errors_match_the_reference(wl_pairs, recipe):
    mine, ref = wl_pairs[recipe]
    assert (ref.survey.settings.k_max, ref.survey.settings.z_max) == (30.0, 4.0)
    (cl,), (cl_ref,) = _signals(mine), _signals(ref)
    # every C_ij(ell) within 1e-3 of the reference, relative to sqrt(C_ii C_jj) (cross-spectra
    # with intrinsic alignments may pass through zero)
    d = np.sqrt(np.einsum("lii->li", cl_ref))
    assert np.max(np.abs(cl - cl_ref) / (d[:, :, None] * d[:, None, :])) < 1e-3
    _check_errors(mine, ref)


@pytest.mark.parametrize("recipe", CLUSTERING_RECIPES)
def test_clustering_signal_and_errors_match_the_reference(recipe, cache_dir):
    mine, ref = _pair(recipe, cache_dir, {})
    assert ref.survey.settings.k_max == 30.0 and mine.survey.settings.z_max < 4.0
    for a, b in zip(_signals(mine), _signals(ref)):
        scale = np.max(np.abs(b))
        assert np.max(np.abs(a - b)) < 1e-3 * scale
    _check_errors(mine, ref)


def test_the_settings_used_are_in_the_file(wl_pairs, tmp_path):
    from fishcast import io as fio

    mine, _ = wl_pairs["euclid-wl-pessimistic"]
    out = tmp_path / "f.h5"
    fio.write_forecast(out, mine)
    with fio.open_forecast(out) as f:
        attrs = dict(f["cosmology"].attrs)
    s = mine.survey.settings
    assert attrs["k_max"] == s.k_max and attrs["z_max"] == s.z_max and attrs["nonlinear_model"] == "takahashi"
    assert attrs["k_max"] < 30.0


def test_a_batch_over_ell_max_shares_its_cosmology_points():
    """Designs that differ in what their probes need (ell_max -> k_max) are given the largest,
    so that every cosmology point is computed once for the grid; a k_max the user gave stays."""
    from fishcast.pipeline.batch import shared_settings

    a, b = _survey("euclid-wl-pessimistic"), _survey("euclid-wl-pessimistic", {"probes.weak_lensing.ell.max": 3000})
    assert b.settings.k_max > a.settings.k_max
    out = shared_settings([a, b])
    assert out[0].settings == out[1].settings == b.settings
    given = _survey("euclid-wl-pessimistic", {"cosmology.accuracy.k_max": 8.0})
    out = shared_settings([a, b, given])
    assert out[2].settings.k_max == 8.0 and out[0].settings.k_max == b.settings.k_max
