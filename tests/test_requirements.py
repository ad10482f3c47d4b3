"""CAMB computes only what the probes need (issue 15, item 1).

Each probe states the k range, z range and nonlinear spectrum it needs from its own settings
(weak lensing: k_max = (ell_max + 1/2) / chi_min from the lensing kernels, z_max from the
support of the n_i(z); 3x2pt: the same per spectrum type from its own kernels and ell_max;
clustering: the shells' k, linear only, at the backend's linear floor on the reference
table's nodes); the backend takes their union. Shown enough here against the reference, the
same forecast with the settings used before the requirements were read (k_max = 30/Mpc,
z_max = 4, the whole n_i(z) integrated): every signal element within 1e-3 and every
marginalized error within 0.5 %, on the shipped recipes (the LSST Y10 3x2pt errors since the
table keeps the reference's k nodes: see the comment above its test). Fixed
3-point stencils and the session's CAMB cache (the IST:F reference test runs the Euclid
recipes with the same settings and steps, and the 3x2pt recipes share their points with the
WL recipes of the same surveys, so they are computed once).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

from fishcast import cosmology

ROOT = pathlib.Path(__file__).parent.parent
FAST = {"derivatives.mode": "fixed", "derivatives.stencil": "3-point", "diagnostics.gaussian_check": False}
#: the settings used before the probes' requirements were read (CAMB's dense transfer
#: sampling and CAMB's own ODE tolerance included, whatever the defaults are)
REFERENCE = {"cosmology.accuracy.k_max": 30.0, "cosmology.accuracy.z_max": 4.0,
             "cosmology.accuracy.transfer_high_precision": True, "cosmology.accuracy.int_tol_boost": 1.0}


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
    is the share asked for: 1 %, and the default K_SHARE (4.5 %), within the 10 % of the grid
    on which chi_min is located."""
    from scipy.integrate import quad

    from fishcast.probes.weak_lensing import C_KMS, K_SHARE, REF_H, REF_OMEGA_M, limber_k_max

    z = np.linspace(0.0, 1.0, 2001)
    nz = np.zeros_like(z)
    nz[-2:] = 1.0
    nz /= np.trapezoid(nz, z)
    ell = 1000.0

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

    total = quad(f, 0.0, 1.0, epsrel=1e-8, limit=200)[0]
    found = {1e-2: limber_k_max(ell, z, nz[None, :], share=1e-2), K_SHARE: limber_k_max(ell, z, nz[None, :])}
    for asked, k_max in found.items():
        z_min = brentq(lambda x, k=k_max: chi(x) - (ell + 0.5) / k, 1e-6, 1.0)
        assert quad(f, 0.0, z_min, epsrel=1e-8)[0] / total == pytest.approx(asked, rel=0.1)


# ------------------------------------------------------------------ the recipes, against the reference
def _survey(recipe: str, extra: dict | None = None):
    from fishcast.survey import load_survey

    return load_survey(ROOT / "recipes" / f"{recipe}.yaml", {**FAST, **(extra or {})})


def _forecast(survey, cache_dir):
    from fishcast.pipeline.cache import Cache
    from fishcast.pipeline.forecast import run_forecast

    return run_forecast(survey, cache=Cache(cache_dir))


WL_RECIPES = ["euclid-wl-pessimistic", "euclid-wl-optimistic", "lsst-y10-wl"]
CLUSTERING_RECIPES = ["desi-multitracer", "two-tracer-toy", "euclid-gcsp-optimistic"]
#: fewer redshift nodes of the CAMB table (on both sides of the comparison) where it does not
#: matter: the shells' P(k, z) and distances at z <= 1.9 (errors move by < 0.1 %)
CHEAPER = {"euclid-gcsp-optimistic": {"cosmology.accuracy.n_z": 40}, "desi-multitracer": {"cosmology.accuracy.n_z": 40}}


@pytest.mark.parametrize("recipe", WL_RECIPES)
def test_weak_lensing_asks_for_what_it_needs(recipe):
    """The settings read from the probe: a k_max and z_max of its own (not 30 and 4), the
    nonlinear spectrum; a user's accuracy.k_max / z_max override them."""
    sv = _survey(recipe)
    s = sv.settings
    probe = sv.probes[0]
    req = probe.requirements()
    assert req.nonlinear and s.nonlinear
    # k_max: the requirement (at least the backend's floor for the model at z_max) raised to
    # the next node of the reference table (at most one node spacing, ~4 % in k at n_k 300),
    # so that the table keeps the reference's nodes
    need = max(req.k_max, cosmology.nonlinear_k_floor(s.nonlinear_model, s.z_max))
    dlnk = np.log(cosmology.DEFAULT_K_MAX / s.k_min) / (cosmology.CosmologySettings.n_k - 1)
    assert need <= s.k_max < need * np.exp(dlnk) * (1 + 1e-9) and s.z_max == pytest.approx(req.z_max)
    assert req.k_max > 5.0 and req.k_max != 30.0
    assert req.z_max <= probe.z[-1]
    if recipe.startswith("euclid"):  # IST:F's n_i(z) are negligible above z ~ 3 (LSST's reach 4)
        assert req.z_max < 3.1
    over = _survey(recipe, {"cosmology.accuracy.k_max": 7.0, "cosmology.accuracy.z_max": 4.0}).settings
    assert (over.k_max, over.z_max) == (7.0, 4.0)


@pytest.mark.parametrize("recipe", CLUSTERING_RECIPES)
def test_clustering_asks_for_the_linear_spectrum_only(recipe):
    """The shells' k_max [h/Mpc] x 2 (the largest h a point may have) x 1.25 (AP), and for
    the IST:F model the reach of sigma_v (5 h/Mpc) and of the de-wiggling; the linear
    spectrum; the backend's floor, on the nodes of the reference table."""
    from fishcast.cosmology import DEFAULT_K_MAX, MIN_K_MAX_LINEAR, CosmologySettings

    sv = _survey(recipe)
    probe = sv.probes[0]
    req = probe.requirements()
    assert not req.nonlinear and sv.settings.nonlinear_model == "none"
    k_shells = float(probe.k_edges.max())  # [h/Mpc]
    if probe.config.needs_dispersions:
        assert req.k_max == pytest.approx(5.0 * 2.0)
    else:
        assert req.k_max == pytest.approx(k_shells * 2.0 * (1.25 if probe.config.alcock_paczynski else 1.0))
    assert MIN_K_MAX_LINEAR <= sv.settings.k_max < 1.05 * MIN_K_MAX_LINEAR < DEFAULT_K_MAX
    ref = CosmologySettings(k_max=DEFAULT_K_MAX, n_k=300).k_grid()
    np.testing.assert_allclose(sv.settings.k_grid(), ref[:sv.settings.n_k], rtol=1e-12)
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


# ------------------------------------------------------------------ 3x2pt (WL + GCph + XC)
PHOTOMETRIC_RECIPES = ["euclid-3x2pt-pessimistic", "lsst-y10-3x2pt"]


def _box_sample(name, z, lo, hi, bias=1.5):
    from fishcast.probes import photometric as ph
    from fishcast.redshift import PhotoZModel, TomographicBins, TabulatedNz

    zt = np.linspace(0.0, z[-1], 2001)
    parent = TabulatedNz(zt, ((zt >= lo) & (zt <= hi)).astype(float) + 1e-300)
    bins = TomographicBins(parent, np.array([lo, hi]), PhotoZModel(sigma_b=1e-3), z)
    return ph.CountsSample(name=name, bins=bins, n_gal=1.0, bias_model="per_bin", bias_values=[bias])


def test_counts_k_max_follows_the_kernel_and_ell_max():
    """GCph alone: k_max = (ell_max + 1/2)/chi_min, with ell_max the largest band centre used;
    counts nearer to us need larger k, a larger share allows smaller k; the z support stops
    above the highest bin (every node with photometric tails of 1e-3 (1+z) width)."""
    from fishcast.probes import photometric as ph

    z = np.linspace(0.0, 3.0, 301)

    def probe(lo, hi, ell_max=1000.0, **kw):
        return ph.PhotometricProbe(shear=None, samples=[_box_sample("g", z, lo, hi)], spectra=["GCph"],
                                   ell_ranges={"GCph": (10.0, ell_max)}, n_bands=10, f_sky=0.1, **kw)

    near, far = probe(0.3, 0.5), probe(1.0, 1.5)
    ell = near.ell.max()
    assert near.limber_k_max() > 1.5 * far.limber_k_max()
    big = probe(0.3, 0.5, ell_max=3000.0)
    assert big.limber_k_max() == pytest.approx(near.limber_k_max() * (big.ell.max() + 0.5) / (ell + 0.5), rel=1e-12)
    assert near.limber_k_max(share=0.1) < near.limber_k_max(share=1e-3)
    assert near.requirements().k_max == near.limber_k_max() and near.requirements().nonlinear
    assert probe(0.3, 0.5, k_max=7.0).requirements().k_max == 7.0  # integration.k_max, given
    # every node by default; with a tail cut, the nodes just above the bin (edges at 0.5)
    assert near.requirements().z_max == 3.0
    assert probe(0.3, 0.5, z_tail=1e-5).requirements().z_max == pytest.approx(0.52, abs=0.015)


def test_counts_k_max_matches_the_analytic_share():
    """GCph of one bin between z = 0.3 and 0.5: with P ~ k^-1.5 the Limber integrand of
    counts x counts is, per unit z, b^2 n(z)^2 H(z)/c chi^-1/2 (the kernel b n H/c, squared,
    times c/H chi^-2 P). Its share below the chi_min found -- integrated here with scipy's
    adaptive quad in the flat LCDM reference background computed here, n(z) the bin's own --
    is the 10 % asked for (within the 5 % of the grid that locates chi_min)."""
    from scipy.integrate import quad
    from scipy.optimize import brentq

    from fishcast.probes import photometric as ph
    from fishcast.probes.limber_support import C_KMS, REF_H, REF_OMEGA_M

    z = np.linspace(0.0, 1.0, 1001)
    probe = ph.PhotometricProbe(shear=None, samples=[_box_sample("g", z, 0.3, 0.5)], spectra=["GCph"],
                                ell_ranges={"GCph": (10.0, 1000.0)}, n_bands=4, f_sky=0.1)
    ell = probe.ell.max()
    chi_min = (ell + 0.5) / probe.limber_k_max(share=0.1)
    nz = probe.samples[0].bins.nz()[0]

    def e(x):
        return np.sqrt(REF_OMEGA_M * (1 + x) ** 3 + 1 - REF_OMEGA_M)

    d_h = C_KMS / (100 * REF_H)

    def chi(x):
        return d_h * quad(lambda y: 1.0 / e(y), 0.0, x, epsabs=0, epsrel=1e-10)[0]

    def f(x):
        return np.interp(x, z, nz) ** 2 * e(x) * chi(x) ** -0.5

    z_min = brentq(lambda x: chi(x) - chi_min, 0.2, 0.5)
    edges = list(z[(z > 0.25) & (z < 0.55)])  # n(z) is linear between the nodes
    share = (quad(f, 0.25, z_min, points=[x for x in edges if x < z_min], limit=400)[0]
             / quad(f, 0.25, 0.55, points=edges, limit=400)[0])
    assert share == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("recipe", PHOTOMETRIC_RECIPES)
def test_3x2pt_asks_for_what_its_kernels_need(recipe):
    """k_max from the kernels of each spectrum type at its own ell_max (not 30), the
    largest of them; z_max from the n_i(z) tails; the nonlinear spectrum; the user's
    accuracy.k_max / z_max override."""
    sv = _survey(recipe)
    probe = sv.probes[0]
    req = probe.requirements()
    assert req.nonlinear and sv.settings.nonlinear
    # the backend's floor for the model at z_max, then raised to the next reference node (< 1 spacing)
    need = max(req.k_max, cosmology.nonlinear_k_floor(sv.settings.nonlinear_model, sv.settings.z_max))
    dlnk = np.log(cosmology.DEFAULT_K_MAX / sv.settings.k_min) / (cosmology.CosmologySettings.n_k - 1)
    assert need <= sv.settings.k_max < need * np.exp(dlnk) * (1 + 1e-9) and req.k_max != 30.0
    assert sv.settings.z_max == pytest.approx(req.z_max) and req.z_max <= probe.z[-1]
    from fishcast.probes import photometric as ph

    cfg = sv.config.probes.photometric
    per_type = {t: ph.build(cfg.model_copy(update={"spectra": [t]}), (ROOT / "recipes")).requirements().k_max
                for t in probe.spectra}
    assert req.k_max == max(per_type.values())
    # counts at ell <= 750 reach smaller k than shear at ell <= 1500 (Euclid) / 3000 (LSST)
    assert per_type["GCph"] < per_type["WL"] and per_type["XC"] < per_type["WL"]
    if recipe.startswith("euclid"):  # IST:F's n_i(z) are negligible above z ~ 3
        assert req.z_max < 3.1
    over = _survey(recipe, {"cosmology.accuracy.k_max": 7.0, "cosmology.accuracy.z_max": 4.0}).settings
    assert (over.k_max, over.z_max) == (7.0, 4.0)


def _used(probe) -> np.ndarray:
    """(n_ell, n, n) mask of the spectra in the 3x2pt data vector (each type in its bands)."""
    mask = np.zeros((probe.ell.size, len(probe.tracers), len(probe.tracers)), dtype=bool)
    for bands, spec in probe.spectra_in_band():
        mask[bands[:, None], probe._pa[spec][None, :], probe._pb[spec][None, :]] = True
    return mask | np.swapaxes(mask, 1, 2)


@pytest.fixture(scope="module")
def photometric_pairs(cache_dir):
    """recipe -> (forecast with the probe's settings, with the reference settings and every
    node integrated). Their CAMB points are those of the WL recipes of the same surveys (same
    fiducial, steps and settings), computed once in the session cache."""
    return {r: _pair(r, cache_dir, {"probes.photometric.integration.z_tail": 0.0}) for r in PHOTOMETRIC_RECIPES}


@pytest.mark.parametrize("recipe", PHOTOMETRIC_RECIPES)
def test_3x2pt_cl_match_the_reference(photometric_pairs, recipe):
    mine, ref = photometric_pairs[recipe]
    assert (ref.survey.settings.k_max, ref.survey.settings.z_max) == (30.0, 4.0)
    assert mine.survey.settings.k_max < 30.0
    (cl,), (cl_ref,) = _signals(mine), _signals(ref)
    # every C_ab(ell) of the data vector (each spectrum type in its own bands) within 1e-3 of
    # the reference, relative to sqrt(C_aa C_bb) (cross-spectra may pass through zero)
    d = np.sqrt(np.einsum("lii->li", cl_ref))
    rel = np.abs(cl - cl_ref) / (d[:, :, None] * d[:, None, :])
    assert np.max(rel[_used(mine.survey.probes[0])]) < 1e-3


#: The LSST Y10 3x2pt errors were not within 0.5 % of the reference until the P(k, z) table
#: kept the reference's k nodes for the nonlinear settings too (measured with CAMB 2.0.5,
#: 3-point stencils, h +- 1 %): the reference's marginalized errors moved by 4 % (h, n_s)
#: between k_max = 25 and 30/Mpc. GCph and XC turn a shift of d ln P/d h into a shift of the
#: sigma8 and bias directions, to which this forecast (ten lens biases) is very sensitive.
#: Two sources:
#: * the sigma8 normalization (A_s set from sigma8 at every point): with CAMB's sigma8, summed
#:   on its transfer nodes, d ln A_s/d h jumped with k_max (-3.4222, -3.4243, -3.4247,
#:   -3.4231 at 10, 20, 25, 30/Mpc on the IST:F fiducial); fishcast's own quadrature
#:   (fishcast.cosmology.linear_sigma8): -3.42059 +- 1.5e-5 at every k_max
#:   (tests/test_cosmology.py). The errors still moved as much, so this was not the cause;
#: * the table's nodes: n_k = 300 log-spaced nodes spanning [k_min, k_max] moved with k_max,
#:   and the bicubic spline of ln P between them moved d ln P/d h at the BAO scale (z = 0.5):
#:   3.5e-3 (linear, k = 0.23/Mpc) at 20.6 against 30/Mpc, 1.2e-2 (mead2020, k = 0.10/Mpc) at
#:   25 against 30/Mpc. On the reference table's nodes (fishcast.cosmology.reference_k_nodes,
#:   now used by settings_for for linear and nonlinear tables) these fall below 5e-4.


@pytest.mark.parametrize("recipe", [PHOTOMETRIC_RECIPES[0], PHOTOMETRIC_RECIPES[1]])
def test_3x2pt_errors_match_the_reference(photometric_pairs, recipe):
    mine, ref = photometric_pairs[recipe]
    _check_errors(mine, ref)


@pytest.mark.parametrize("recipe", CLUSTERING_RECIPES)
def test_clustering_signal_and_errors_match_the_reference(recipe, cache_dir):
    """The linear-only table at the backend's floor (15/Mpc, the reference's nodes) against
    the reference at 30/Mpc: see fishcast.cosmology.MIN_K_MAX_LINEAR for what moves below."""
    cheap = CHEAPER.get(recipe, {})
    mine = _forecast(_survey(recipe, cheap), cache_dir)
    ref = _forecast(_survey(recipe, {**REFERENCE, **cheap}), cache_dir)
    assert ref.survey.settings.k_max == 30.0 and mine.survey.settings.z_max < 4.0
    assert mine.survey.settings.k_max < 16.0
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
    assert bool(attrs["transfer_high_precision"]) is s.transfer_high_precision
    assert attrs["int_tol_boost"] == s.int_tol_boost == cosmology.DEFAULT_INT_TOL_BOOST


# ------------------------------------------------------------------ CAMB's transfer sampling
#: whether each shipped recipe's probes need CAMB's dense transfer sampling
#: (Transfer.high_precision), as measured: see the probes' requirements() and
#: fishcast.cosmology.settings_for for the numbers
DENSE = {"euclid-wl-pessimistic": True, "euclid-wl-optimistic": True, "lsst-y10-wl": True,
         "euclid-3x2pt-pessimistic": True, "lsst-y10-3x2pt": True,
         "desi-multitracer": True, "two-tracer-toy": True, "euclid-gcsp-optimistic": True}


@pytest.mark.parametrize("recipe", list(DENSE))
def test_the_transfer_sampling_is_what_the_probes_need_and_reaches_camb(recipe):
    """Each probe states whether it needs CAMB's dense transfer sampling; the settings take
    it from the probes unless cosmology.accuracy.transfer_high_precision is given (either
    way); CAMB is set up with it (``set_matter_power`` alone would always switch it on)."""
    sv = _survey(recipe)
    assert sv.probes[0].requirements().transfer_high_precision is DENSE[recipe]
    assert sv.settings.transfer_high_precision is DENSE[recipe]
    fid = cosmology.full_params(sv.cosmological_fiducial)
    for given in (True, False):
        st = _survey(recipe, {"cosmology.accuracy.transfer_high_precision": given}).settings
        assert st.transfer_high_precision is given
        assert dataclasses.replace(st, transfer_high_precision=DENSE[recipe]) == sv.settings  # nothing else moves
        pars = cosmology._camb_params(fid, st, 2.1e-9)
        assert bool(pars.Transfer.high_precision) is given


def test_a_bad_transfer_sampling_is_located(tmp_path):
    from fishcast.errors import SurveyError

    text = (ROOT / "recipes" / "euclid-wl-pessimistic.yaml").read_text().replace(
        "nonlinear_model: takahashi", "nonlinear_model: takahashi\n  accuracy:\n    transfer_high_precision: maybe", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("../data/", str(ROOT / "data") + "/"))
    line = text.splitlines().index("    transfer_high_precision: maybe") + 1
    from fishcast.survey import load_survey

    with pytest.raises(SurveyError) as exc:
        load_survey(bad)
    assert f"bad.yaml:{line}: cosmology.accuracy.transfer_high_precision" in str(exc.value)


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
    # CAMB's dense transfer sampling: the grid's points get it when any design's probes need
    # it (a design whose probes would not, stood in for by its settings); a value the user
    # gave stays
    sparse = dataclasses.replace(a, settings=dataclasses.replace(a.settings, transfer_high_precision=False))
    out = shared_settings([sparse, b])
    assert out[0].settings == out[1].settings and out[0].settings.transfer_high_precision
    off = _survey("euclid-wl-pessimistic", {"cosmology.accuracy.transfer_high_precision": False})
    out = shared_settings([off, b])
    assert not out[0].settings.transfer_high_precision and out[1].settings.transfer_high_precision
    assert out[0].settings == off.settings  # its points differ anyway: nothing to share
    # a key written as null is not given: derived, and shared (fishcast.pipeline.batch.DERIVED_FIELDS)
    null = _survey("euclid-wl-pessimistic", {"cosmology.accuracy.k_max": None,
                                             "cosmology.accuracy.transfer_high_precision": None})
    assert null.settings == a.settings
    out = shared_settings([null, b])
    assert out[0].settings == out[1].settings == b.settings


# ------------------------------------------------------------------ CAMB's ODE tolerance
@pytest.mark.parametrize("recipe", ["euclid-wl-pessimistic", "euclid-3x2pt-pessimistic", "desi-multitracer"])
def test_the_ode_tolerance_is_a_setting_that_reaches_camb(recipe):
    """CAMB's Accuracy.IntTolBoost: fishcast's measured default (see fishcast.cosmology, *ODE
    tolerance*) unless cosmology.accuracy.int_tol_boost is given; CAMB's own 1 when the
    user sets another accuracy_boost (measured at 1 only); nothing else moves; CAMB is set
    up with it (set_accuracy alone leaves CAMB's 1)."""
    sv = _survey(recipe)
    assert sv.settings.int_tol_boost == cosmology.DEFAULT_INT_TOL_BOOST
    fid = cosmology.full_params(sv.cosmological_fiducial)
    assert cosmology._camb_params(fid, sv.settings, 2.1e-9).Accuracy.IntTolBoost == cosmology.DEFAULT_INT_TOL_BOOST
    for given in (0.5, 1.0, 2.0):
        st = _survey(recipe, {"cosmology.accuracy.int_tol_boost": given}).settings
        assert st.int_tol_boost == given
        assert dataclasses.replace(st, int_tol_boost=sv.settings.int_tol_boost) == sv.settings  # nothing else moves
        assert cosmology._camb_params(fid, st, 2.1e-9).Accuracy.IntTolBoost == given
    for boost in (0.5, 2.0):
        boosted = _survey(recipe, {"cosmology.accuracy.accuracy_boost": boost}).settings
        assert boosted.int_tol_boost == 1.0 and boosted.accuracy_boost == boost
    assert _survey(recipe, {"cosmology.accuracy.accuracy_boost": 2.0,
                            "cosmology.accuracy.int_tol_boost": 0.5}).settings.int_tol_boost == 0.5


@pytest.mark.parametrize("value", ["fast", "0.0", "-1", "9", ".nan", "true"])
def test_a_bad_ode_tolerance_is_located(tmp_path, value):
    from fishcast.errors import SurveyError
    from fishcast.survey import load_survey

    text = (ROOT / "recipes" / "euclid-wl-pessimistic.yaml").read_text().replace(
        "nonlinear_model: takahashi", f"nonlinear_model: takahashi\n  accuracy:\n    int_tol_boost: {value}", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("../data/", str(ROOT / "data") + "/"))
    line = text.splitlines().index(f"    int_tol_boost: {value}") + 1
    with pytest.raises(SurveyError) as exc:
        load_survey(bad)
    assert f"bad.yaml:{line}: cosmology.accuracy.int_tol_boost" in str(exc.value)


def test_a_bad_ode_tolerance_never_reaches_camb():
    """The library refuses what the schema refuses (a program building its settings)."""
    from fishcast.errors import InputError

    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InputError, match="int_tol_boost"):
            cosmology.CosmologySettings(int_tol_boost=bad)
    assert cosmology.CosmologySettings(int_tol_boost=2).int_tol_boost == 2.0
