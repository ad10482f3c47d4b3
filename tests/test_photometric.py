"""Photometric 3x2pt (fishcast.probes.photometric): shear, counts and their cross-spectra with
one joint Gaussian covariance.

References, none of them fishcast:
* pyccl (LSST DESC Core Cosmology Library) NumberCountsTracer (no RSD, no magnification) and
  WeakLensingTracer (with NLA intrinsic alignments) for C_ell, given the same CAMB
  P_nl(k, z) through pyccl.Pk2D;
* the Gaussian covariance of spectra, Cov[C_ab, C_cd] = (C_ac C_bd + C_ad C_bc)/N_modes
  (Knox 1995; IST:F eq. 137), written out with explicit loops, and the Fisher matrix of a
  Gaussian data vector D^T C^-1 D with an explicit inverse of the whole covariance;
* an Einstein-de Sitter universe with a power-law P(k) and a narrow redshift plane (closed
  form of the counts Limber integral), and the cosmic-variance floor of one tracer;
* the official Euclid IST:F Fisher matrices of WL + GCph + XC, flat w0waCDM (Euclid
  Collaboration: Blanchard et al. 2020, A&A 642, A191, Table 13; files in tests/data/istf/).
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from fishcast.errors import SurveyError
from fishcast.probes import photometric as ph
from fishcast.probes.weak_lensing import ARCMIN2_PER_SR
from fishcast.redshift import PhotoZModel, SmailNz, TomographicBins, equipopulated_edges
from tests.test_weak_lensing import EdS, NarrowGaussian, ccl_cosmology, wl_probe

DATA = pathlib.Path(__file__).parent / "data" / "istf"
RECIPES = pathlib.Path(__file__).parent.parent / "recipes"
C = 299792.458  # km/s


def _bins(n=3, z_top=3.0, n_z=241, equi=True):
    parent = SmailNz(0.9 / math.sqrt(2), 2, 1.5)
    z = np.linspace(0, z_top, n_z)
    edges = equipopulated_edges(parent, n, 0.001, 2.5) if equi else np.linspace(0.001, 2.5, n + 1)
    return TomographicBins(parent, edges, PhotoZModel(sigma_b=0.05, f_out=0.1, z_o=0.1, sigma_o=0.05), z, equi)


def make_probe(spectra=("WL", "GCph", "XC"), ranges=None, n_bands=12, samples=None, ia_model="nla",
               ell_factor_kind="exact", cross_covariance=True, shear_bias=False, photoz_shift=False,
               n_bins=3, f_sky=0.3636, lum=None):
    bins = _bins(n_bins)
    shear = wl_probe(bins, ell_min=10, ell_max=1000, n_bands=12, f_sky=f_sky, n_gal=30.0, sigma_e=0.3,
                     noise_convention="multiplies_inverse_density", ell_factor_kind=ell_factor_kind,
                     ia_model=ia_model, shear_bias=shear_bias, photoz_shift=photoz_shift, luminosity_ratio=lum)
    if samples is None:
        samples = [ph.CountsSample(name="g", bins=bins, n_gal=30.0, bias_model="per_bin",
                                   bias_values=[1.1, 1.3, 1.6][:n_bins] if n_bins == 3 else None,
                                   shares_source_bins=True)]
    ranges = ranges or {s: (10.0, 1000.0) for s in spectra}
    return ph.PhotometricProbe(shear=shear, samples=samples, spectra=spectra, ell_ranges=ranges, n_bands=n_bands,
                               f_sky=f_sky, cross_covariance=cross_covariance, ell_factor_kind=ell_factor_kind)


PARAMS = {"A_IA": 1.72, "eta_IA": -0.41}


# =======================================================================================
# C_ell against pyccl (same CAMB nonlinear spectrum on both sides)
# =======================================================================================


@pytest.fixture(scope="module")
def ccl():
    return pytest.importorskip("pyccl")


def _ccl_spectra(ccl, cosmo, probe, params, bias_of_z):
    """pyccl counts x counts and counts x shear of the probe's bins. bias_of_z[i](z) is the
    bias of counts bin i; IA amplitude rescaled to pyccl's C1 rho_crit (physics.md)."""
    c, pk = ccl_cosmology(ccl, cosmo)
    z = probe.z
    nz = probe.shear.nz(params)
    ia = (z, params["A_IA"] * (1 + z) ** params["eta_IA"] * 0.0134 / (5e-14 * ccl.physical_constants.RHO_CRITICAL))
    shear = [ccl.WeakLensingTracer(c, dndz=(z, nz[i]), ia_bias=ia) for i in range(probe.shear.n_bins)]
    counts = [ccl.NumberCountsTracer(c, has_rsd=False, dndz=(z, nz[i]), bias=(z, bias_of_z[i](z)), mag_bias=None)
              for i in range(len(bias_of_z))]
    n = len(counts)
    gg = np.zeros((probe.ell.size, n, n))
    gs = np.zeros((probe.ell.size, n, probe.shear.n_bins))
    for i in range(n):
        for j in range(n):
            if j >= i:
                gg[:, i, j] = gg[:, j, i] = ccl.angular_cl(c, counts[i], counts[j], probe.ell, p_of_k_a=pk,
                                                            limber_integration_method="spline")
            gs[:, i, j] = ccl.angular_cl(c, counts[i], shear[j], probe.ell, p_of_k_a=pk,
                                         limber_integration_method="spline")
    return gg, gs


@pytest.mark.parametrize("bias_model", ["per_bin", "power_law"])
def test_counts_and_galaxy_galaxy_lensing_match_pyccl(ccl, fiducial_cosmo, bias_model):
    bins = _bins(3)
    if bias_model == "per_bin":
        sample = ph.CountsSample(name="g", bins=bins, n_gal=30, bias_model="per_bin", bias_values=[1.1, 1.3, 1.6],
                                 shares_source_bins=True)
        bias_of_z = [lambda z, b=b: np.full_like(z, b) for b in (1.1, 1.3, 1.6)]
        params = dict(PARAMS)
    else:
        sample = ph.CountsSample(name="g", bins=bins, n_gal=30, bias_model="power_law", amp=0.9, index=0.7,
                                 shares_source_bins=True)
        params = {**PARAMS, "b_g_amp": 1.05, "b_g_index": 0.55}
        bias_of_z = [lambda z: 1.05 * (1 + z) ** 0.55] * 3
    probe = make_probe(samples=[sample])
    assert probe.ell.max() <= 1000 and probe.tracers[3:] == ("counts_g_1", "counts_g_2", "counts_g_3")
    cl = probe.signal(fiducial_cosmo, params)
    gg, gs = _ccl_spectra(ccl, fiducial_cosmo, probe, params, bias_of_z)
    # every spectrum of bins that overlap (correlation coefficient > 1%) within 1%; the one
    # pair that only touches through photo-z tails (counts 1 x counts 3, r ~ 2e-4) within
    # 0.1% of sqrt(C_11 C_33): there pyccl's own sampling of the product of two tails moves
    # its value by 0.6% when our n(z) grid is refined, while ours stays fixed to 1e-6
    # (test_spectra_are_converged_on_the_fixed_nodes)
    auto = np.sqrt(np.einsum("lii->li", cl))
    r = cl / (auto[:, :, None] * auto[:, None, :])
    overlap = np.all(np.abs(r) > 0.01, axis=0)
    assert overlap[3:, 3:].sum() == 7 and overlap[3:, :3].sum() >= 6  # the comparison is not empty
    ok = np.broadcast_to(overlap, cl.shape)
    np.testing.assert_allclose(cl[:, 3:, 3:][ok[:, 3:, 3:]], gg[ok[:, 3:, 3:]], rtol=0.01)
    # counts x shear, both orders (pyccl applies sqrt((l+2)!/(l-2)!)/(l+1/2)^2 on the shear side)
    np.testing.assert_allclose(cl[:, 3:, :3][ok[:, 3:, :3]], gs[ok[:, 3:, :3]], rtol=0.01)
    np.testing.assert_allclose(cl[:, :3, 3:], np.swapaxes(cl[:, 3:, :3], 1, 2), rtol=1e-14)
    scale = auto[:, :, None] * auto[:, None, :]
    assert np.all(np.abs(cl[:, 3:, 3:] - gg) < 1e-3 * scale[:, 3:, 3:])
    assert np.all(np.abs(cl[:, 3:, :3] - gs) < 1e-3 * scale[:, 3:, :3])
    # the IA term is a visible part of the compared galaxy-galaxy lensing (bin 2 counts x bin 2 shear)
    no_ia = probe.signal(fiducial_cosmo, {**params, "A_IA": 0.0})
    assert np.max(np.abs(cl[:, 4, 1] / no_ia[:, 4, 1] - 1)) > 0.05


def test_spectra_are_converged_on_the_fixed_nodes(fiducial_cosmo):
    """241 against 961 redshift nodes: every spectrum, the tail-only pair included, agrees
    to 1e-5 relative (the fixed-node Simpson integrals are converged)."""
    def spectra(n_z):
        bins = TomographicBins(SmailNz(0.9 / math.sqrt(2), 2, 1.5), _bins(3).edges,
                               PhotoZModel(sigma_b=0.05, f_out=0.1, z_o=0.1, sigma_o=0.05), np.linspace(0, 3.0, n_z), True)
        s = ph.CountsSample(name="g", bins=bins, n_gal=30, bias_model="per_bin", bias_values=[1.1, 1.3, 1.6])
        p = ph.PhotometricProbe(shear=None, samples=[s], spectra=["GCph"], ell_ranges={"GCph": (10, 1000)},
                                n_bands=12, f_sky=0.3)
        return p.signal(fiducial_cosmo, {})

    np.testing.assert_allclose(spectra(241), spectra(961), rtol=1e-5)


def test_shear_block_is_the_weak_lensing_signal(fiducial_cosmo):
    probe = make_probe(shear_bias=True)
    params = {**PARAMS, "m_1": 0.01, "m_2": -0.02, "m_3": 0.03}
    cl = probe.signal(fiducial_cosmo, params)
    np.testing.assert_allclose(cl[:, :3, :3], probe.shear.signal(fiducial_cosmo, params), rtol=1e-12)


# =======================================================================================
# Closed forms (Einstein-de Sitter, power-law P, narrow plane; no CAMB)
# =======================================================================================


def _plane_sample(name, zs=1.0, sigma=0.01, n_gal=1.0, bias=1.5, z_top=2.0, n_z=2001):
    z = np.linspace(0.0, z_top, n_z)
    bins = TomographicBins(NarrowGaussian(zs, sigma), np.array([0.0, 10.0]), PhotoZModel(sigma_b=1e-3), z)
    return ph.CountsSample(name=name, bins=bins, n_gal=n_gal, bias_model="per_bin", bias_values=[bias])


def test_counts_narrow_plane_closed_form():
    """C_gg = b^2 (H/c) / chi^2 P((l+1/2)/chi) Int n^2 dz at the plane, Int n^2 dz =
    1/(2 sqrt(pi) sigma) for a Gaussian of width sigma (Limber, any cosmology)."""
    cosmo = EdS()
    sigma, zs, b = 0.01, 1.0, 1.5
    probe = ph.PhotometricProbe(shear=None, samples=[_plane_sample("p", zs, sigma, bias=b)], spectra=["GCph"],
                                ell_ranges={"GCph": (10, 1000)}, n_bands=6, f_sky=0.5)
    cl = probe.signal(cosmo, {})[:, 0, 0]
    chis = cosmo.chi_of(zs)
    ref = b**2 * cosmo.hubble_of(zs) / C / chis**2 * cosmo.pk(zs, (probe.ell + 0.5) / chis) / (2 * math.sqrt(math.pi) * sigma)
    np.testing.assert_allclose(cl, ref, rtol=2e-3)
    # shot noise 1/n, n per steradian (1 arcmin^-2 = (180*60/pi)^2 sr^-1)
    assert probe.noise()[0, 0] == pytest.approx(1.0 / (1.0 * (180 * 60 / math.pi) ** 2), rel=1e-12)


def test_noise_matrix_shape_and_shot_noise():
    probe = make_probe()
    n = probe.noise()
    per_bin_sr = 30.0 / 3 * ARCMIN2_PER_SR  # equi-populated: a third of 30 arcmin^-2 per bin
    np.testing.assert_allclose(np.diag(n)[:3], 0.09 / per_bin_sr, rtol=1e-12)
    np.testing.assert_allclose(np.diag(n)[3:], 1.0 / per_bin_sr, rtol=1e-12)
    assert np.count_nonzero(n - np.diag(np.diag(n))) == 0


def test_stepwise_bias_follows_true_redshift_intervals():
    """IST:F: b(z) = b_i for true z in the i-th photo-z interval, for every bin's kernel."""
    bins = _bins(3)
    s = ph.CountsSample(name="g", bins=bins, n_gal=30, bias_model="stepwise", bias_values=[1.0, 2.0, 3.0])
    b = s.bias({"b_g_1": 1.0, "b_g_2": 2.0, "b_g_3": 3.0})
    e = bins.edges
    for k, z in enumerate(bins.z):
        expect = 1.0 if z < e[1] else 2.0 if z < e[2] else 3.0
        assert np.all(b[:, k] == expect)


def test_nuisances_act_on_both_sides_of_galaxy_galaxy_lensing():
    cosmo = EdS()
    probe = make_probe(shear_bias=True, photoz_shift=True)
    names = probe.nuisance_parameters()
    assert {"A_IA", "eta_IA", "m_1", "m_3", "dz_1", "dz_3", "b_g_1", "b_g_3"} <= set(names)
    assert names["b_g_2"] == 1.3
    base = probe.signal(cosmo, PARAMS)
    # m_j multiplies the shear side only: C^{g_i shear_j} -> (1 + m_j) C
    m = probe.signal(cosmo, {**PARAMS, "m_2": 0.1})
    np.testing.assert_allclose(m[:, 3:, 1], 1.1 * base[:, 3:, 1], rtol=1e-12)
    np.testing.assert_allclose(m[:, 3:, 3:], base[:, 3:, 3:], rtol=1e-14)
    np.testing.assert_allclose(m[:, 1, 1], 1.21 * base[:, 1, 1], rtol=1e-12)
    # dz_1 moves both the counts and the shear bin 1: counts_1 x counts_1 changes, and the
    # counts n_1(z) equals the shifted shear n_1(z)
    d = {**PARAMS, "dz_1": 0.02}
    shifted = probe.signal(cosmo, d)
    assert np.max(np.abs(shifted[:, 3, 3] / base[:, 3, 3] - 1)) > 1e-3
    assert np.max(np.abs(shifted[:, 0, 0] / base[:, 0, 0] - 1)) > 1e-3
    s = probe.samples[0]
    np.testing.assert_array_equal(probe.counts_nz(s, d), probe.shear.nz(d))
    # the bias of bin i scales counts_i rows linearly
    b = probe.signal(cosmo, {**PARAMS, "b_g_2": 1.3 * 1.5})
    np.testing.assert_allclose(b[:, 4, 4], 1.5**2 * base[:, 4, 4], rtol=1e-12)
    np.testing.assert_allclose(b[:, 4, 0], 1.5 * base[:, 4, 0], rtol=1e-12)


# =======================================================================================
# The joint covariance and the Fisher matrix
# =======================================================================================


def test_gaussian_covariance_equals_loops_from_the_definition():
    rng = np.random.default_rng(1)
    n_ell, n = 3, 4
    x = rng.normal(size=(n_ell, n, n + 2))
    cb = x @ np.swapaxes(x, 1, 2)
    modes = np.array([10.0, 37.0, 120.0])
    a, b = ph.unique_pairs(n)
    cov = ph.gaussian_covariance(cb, a, b, modes)
    ref = np.zeros_like(cov)
    for l_ in range(n_ell):
        for p in range(a.size):
            for q in range(a.size):
                i, j, k, m = a[p], b[p], a[q], b[q]
                ref[l_, p, q] = (cb[l_, i, k] * cb[l_, j, m] + cb[l_, i, m] * cb[l_, j, k]) / modes[l_]
    np.testing.assert_allclose(cov, ref, rtol=1e-12, atol=0)


def _brute_force_fisher(probe, fid, derivs, cross=True):
    """Data vector entries (band, a, b, type) by explicit loops over bands and tracer pairs,
    the covariance of the whole vector from the definition, its explicit inverse."""
    kinds = ["shear" if t.startswith("shear") else "counts" for t in probe.tracers]
    cb = fid + probe.noise()[None]
    entries = []
    for l_ in range(probe.ell.size):
        for a in range(len(kinds)):
            for b in range(a, len(kinds)):
                t = {("shear", "shear"): "WL", ("counts", "counts"): "GCph"}.get((kinds[a], kinds[b]), "XC")
                lo, hi = probe.ell_ranges.get(t, (np.inf, -np.inf))
                if t in probe.spectra and lo <= probe.ell[l_] <= hi:
                    entries.append((l_, a, b, t))
    cov = np.zeros((len(entries), len(entries)))
    for p, (l1, a, b, t1) in enumerate(entries):
        for q, (l2, c, d, t2) in enumerate(entries):
            if l1 == l2 and (cross or t1 == t2):
                cov[p, q] = (cb[l1, a, c] * cb[l1, b, d] + cb[l1, a, d] * cb[l1, b, c]) / probe.modes[l1]
    D = np.array([[dv[l_, a, b] for (l_, a, b, _) in entries] for dv in derivs])
    return D @ np.linalg.inv(cov) @ D.T, entries


@pytest.mark.parametrize("cross", [True, False])
def test_joint_fisher_with_cut_bands_equals_brute_force(cross):
    """Different ell ranges per spectrum type: bands where a type is cut are absent from
    the data vector (not zero-padded); the Fisher equals the explicit construction."""
    cosmo = EdS()
    ranges = {"WL": (10, 1000), "GCph": (10, 150), "XC": (30, 400)}
    probe = make_probe(ranges=ranges, n_bands=8, cross_covariance=cross, n_bins=2)
    fid = probe.signal(cosmo, PARAMS)
    rng = np.random.default_rng(3)
    derivs = fid[None] * (1 + 0.3 * rng.normal(size=(3,) + fid.shape))
    derivs = 0.5 * (derivs + np.swapaxes(derivs, -1, -2))
    ref, entries = _brute_force_fisher(probe, fid, derivs, cross)
    ours = probe.fisher(fid, derivs)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    # the cut really removed spectra, and the data vector has the same entries
    assert probe.data_vector(fid).size == len(entries) < probe.ell.size * 10
    np.testing.assert_allclose(np.sort(probe.data_vector(fid)), np.sort([fid[e[:3]] for e in entries]), rtol=0)


def test_no_xc_and_no_cross_covariance_is_the_sum_of_wl_and_gcph():
    cosmo = EdS()
    no_xc = make_probe(spectra=("WL", "GCph"), cross_covariance=False)
    fid = no_xc.signal(cosmo, PARAMS)
    rng = np.random.default_rng(5)
    derivs = fid[None] * (1 + 0.2 * rng.normal(size=(4,) + fid.shape))
    derivs = 0.5 * (derivs + np.swapaxes(derivs, -1, -2))
    joint = no_xc.gram(fid, derivs)
    # the WL and GCph Fishers from probes that have only that spectrum
    f_wl = make_probe(spectra=("WL",)).gram(fid[:, :3, :3], derivs[:, :, :3, :3])
    f_gc = make_probe(spectra=("GCph",)).gram(fid[:, 3:, 3:], derivs[:, :, 3:, 3:])
    np.testing.assert_allclose(joint, f_wl + f_gc, rtol=1e-12)
    np.testing.assert_allclose(no_xc.fisher(fid, derivs, types=("WL",)), f_wl, rtol=1e-12)
    # with the cross-covariance the answer differs (counts and shear trace the same matter)
    with_cross = make_probe(spectra=("WL", "GCph")).gram(fid, derivs)
    assert np.max(np.abs(with_cross / joint - 1)) > 0.01
    # the comparison the file stores
    comp = make_probe().fisher_comparison(fid, derivs)
    assert set(comp) == {"WL", "GCph", "XC", "added_without_cross_covariance", "joint"}
    np.testing.assert_allclose(comp["added_without_cross_covariance"], comp["WL"] + comp["GCph"] + comp["XC"])
    np.testing.assert_allclose(comp["WL"], f_wl, rtol=1e-12)


def test_shear_only_equals_knox_trace_form():
    """WL alone: the unique-spectra covariance form equals the trace form
    modes/2 Tr[Cb^-1 dC Cb^-1 dC] of the weak-lensing module (Knox; physics.md sec. 3)."""
    cosmo = EdS()
    probe = make_probe(spectra=("WL",))
    assert probe.tracers == ("shear_1", "shear_2", "shear_3")
    np.testing.assert_allclose(probe.ell, probe.shear.ell, rtol=1e-14)
    fid = probe.signal(cosmo, PARAMS)
    rng = np.random.default_rng(7)
    derivs = fid[None] * (1 + 0.2 * rng.normal(size=(3,) + fid.shape))
    derivs = 0.5 * (derivs + np.swapaxes(derivs, -1, -2))
    np.testing.assert_allclose(probe.gram(fid, derivs), probe.shear.gram(fid, derivs), rtol=1e-10)


def test_covariance_not_positive_definite_is_a_computation_error():
    from fishcast.errors import ComputationError

    probe = make_probe(spectra=("GCph",))
    fid = -np.ones((probe.ell.size, 3, 3)) - probe.noise()[None]
    with pytest.raises(ComputationError, match="positive definite"):
        probe.gram(fid, np.ones((1,) + fid.shape))


# =======================================================================================
# Several samples in the same bins: the multi-tracer gain
# =======================================================================================


def _fisher_lnA_lnb(probe, cosmo, params, vary):
    """Fisher of (ln A, ln b of each name in vary) at params: dC/dlnA = C (C is linear in P);
    the bias derivatives by central differences (C is quadratic in b: exact)."""
    fid = probe.signal(cosmo, params)
    ds = [fid]
    for n in vary:
        h = 1e-3 * params[n]
        up = probe.signal(cosmo, {**params, n: params[n] + h})
        dn = probe.signal(cosmo, {**params, n: params[n] - h})
        ds.append((up - dn) / (2 * h) * params[n])
    return probe.gram(fid, np.array(ds))


def test_red_blue_bias_ratio_beats_cosmic_variance_a_merged_sample_cannot():
    """One redshift bin, two samples (red b = 2, blue b = 1) with the matter amplitude free:
    sigma(ln b_blue/b_red) keeps falling as the densities grow (no cosmic variance: Seljak
    2009; McDonald & Seljak 2009), while the bias of the merged sample with the amplitude
    known stops at the cosmic-variance floor 1/sqrt(2 sum_l N_modes,l), as in the 3D
    multi-tracer probe (tests/test_multitracer.py)."""
    cosmo = EdS()
    ratio, merged = [], []
    for n_gal in [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]:
        red = _plane_sample("red", zs=0.8, sigma=0.1, n_gal=n_gal, bias=2.0, z_top=2.0, n_z=401)
        blue = _plane_sample("blue", zs=0.8, sigma=0.1, n_gal=n_gal, bias=1.0, z_top=2.0, n_z=401)
        two = ph.PhotometricProbe(shear=None, samples=[red, blue], spectra=["GCph"], ell_ranges={"GCph": (10, 300)},
                                  n_bands=10, f_sky=0.1)
        assert two.tracers == ("counts_red_1", "counts_blue_1")
        F = _fisher_lnA_lnb(two, cosmo, {"b_red_1": 2.0, "b_blue_1": 1.0}, ["b_blue_1"])  # ln b_red fixed
        ratio.append(np.sqrt(np.linalg.inv(F)[1, 1]))
        one = _plane_sample("all", zs=0.8, sigma=0.1, n_gal=2 * n_gal, bias=1.5, z_top=2.0, n_z=401)
        single = ph.PhotometricProbe(shear=None, samples=[one], spectra=["GCph"], ell_ranges={"GCph": (10, 300)},
                                     n_bands=10, f_sky=0.1)
        Fs = _fisher_lnA_lnb(single, cosmo, {"b_all_1": 1.5}, ["b_all_1"])
        merged.append(1.0 / np.sqrt(Fs[1, 1]))  # amplitude known
    floor = 1.0 / np.sqrt(2.0 * two.modes.sum())
    ratio, merged = np.array(ratio), np.array(merged)
    assert np.all(np.diff(ratio) < 0)
    assert np.all(ratio[3:-1] / ratio[4:] > 3.0)  # ~ n^-1/2 at high density
    assert np.all(merged >= floor * (1 - 1e-9))
    assert merged[-1] / floor < 1.001 and merged[-2] / merged[-1] < 1.01
    assert ratio[-1] < 0.01 * floor


def test_two_samples_in_the_same_bins_have_their_own_biases_and_noise():
    bins = _bins(3)
    red = ph.CountsSample(name="red", bins=bins, n_gal=10, bias_model="per_bin", shares_source_bins=True)
    blue = ph.CountsSample(name="blue", bins=bins, n_gal=20, bias_model="per_bin", shares_source_bins=True)
    probe = make_probe(samples=[red, blue])
    assert probe.tracers[3:] == tuple(f"counts_{s}_{i}" for s in ("red", "blue") for i in (1, 2, 3))
    nuis = probe.nuisance_parameters()
    centre = 0.5 * (bins.edges[0] + bins.edges[1])
    assert nuis["b_red_1"] == pytest.approx(math.sqrt(1 + centre)) and "b_blue_3" in nuis
    noise = np.diag(probe.noise())
    np.testing.assert_allclose(noise[3:6] / noise[6:9], 2.0)
    cl = probe.signal(EdS(), PARAMS)
    # red_i x blue_i: the product of biases; no cross shot noise (disjoint samples)
    np.testing.assert_allclose(cl[:, 3, 6] ** 2, cl[:, 3, 3] * cl[:, 6, 6], rtol=1e-10)


# =======================================================================================
# The survey YAML section
# =======================================================================================

SMALL = """
name: small-3x2pt
cosmology: {nonlinear_model: takahashi}
parameters:
  fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.815583}
  free: [Omega_m, sigma8, "b_*", A_IA]
probes:
  photometric:
    f_sky: 0.3636
    spectra: [WL, GCph, XC]
    ell: {n_bands: 8, WL: {min: 10, max: 1500}, GCph: {min: 10, max: 750}, XC: {min: 10, max: 750}}
    sources:
      n_gal: 30
      shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
      nz: {type: smail, z0: 0.6363961031, alpha: 2.0, beta: 1.5}
      bins: {type: equipopulated, n_bins: 3, z_min: 0.001, z_max: 2.5}
      photoz: {sigma_b: 0.05}
      intrinsic_alignment: {model: nla}
    counts:
      - {name: g, n_gal: 30, bias: {model: per_bin}}
    integration: {n_z: 121, z_max: 3.0}
"""


def _survey(text=SMALL, **over):
    from fishcast.survey import survey_from_text

    return survey_from_text(text, "small.yaml", overrides=over or None)


def test_yaml_section_builds_the_probe():
    s = _survey()
    (probe,) = s.probes
    assert isinstance(probe, ph.PhotometricProbe)
    assert s.free == ("Omega_m", "sigma8", "b_g_1", "b_g_2", "b_g_3", "A_IA")
    assert probe.ell_ranges == {"WL": (10, 1500), "GCph": (10, 750), "XC": (10, 750)}
    assert s.fiducial["b_g_1"] == pytest.approx(math.sqrt(1 + 0.5 * (probe.shear.bins.edges[0] + probe.shear.bins.edges[1])))


@pytest.mark.parametrize("over, key, needle", [
    ({"probes.photometric.spectra": ["WL", "WL"]}, "probes.photometric", "twice"),
    ({"probes.photometric.spectra": ["GCph", "Shear"]}, "probes.photometric.spectra[1]", "WL"),
    ({"probes.photometric.ell": {"n_bands": 8, "WL": {"min": 10, "max": 100}}}, "probes.photometric", "ell.GCph"),
    ({"probes.photometric.counts": []}, "probes.photometric", "counts sample"),
    ({"probes.photometric.counts.0.name": "1bad"}, "probes.photometric.counts[0].name", "pattern"),
    ({"probes.photometric.counts.0.bias": {"model": "per_bin", "values": [1, 2]}}, "probes.photometric", "2 bias values for 3 bins"),
    ({"probes.photometric.counts.0.bias": {"model": "cubic"}}, "probes.photometric.counts[0].bias.model", "per_bin"),
    ({"probes.photometric.counts.0.colour": "red"}, "probes.photometric.counts[0].colour", "unknown key"),
    ({"probes.photometric.ell.GCph": {"min": 700, "max": 720}}, "probes.photometric", "no multipole band"),
    ({"probes.photometric.integration.z_max": 2.0}, "probes.photometric", "must exceed the last bin edge"),
])
def test_bad_yaml_is_a_located_survey_error(over, key, needle):
    with pytest.raises(SurveyError) as exc:
        _survey(**over)
    text = str(exc.value)
    assert key in text and needle in text, text


def test_validate_exits_2_on_bad_photometric_section(tmp_path):
    from click.testing import CliRunner

    from fishcast.cli.main import cli

    path = tmp_path / "bad.yaml"
    path.write_text(SMALL.replace("spectra: [WL, GCph, XC]", "spectra: [WL, GCph, XC, CMB]"))
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "probes.photometric.spectra[3]" in res.output and str(path) in res.output


def test_the_new_probes_add_no_cosmology_evaluation():
    """The 3x2pt nuisances are free: the planned CAMB points equal a WL-only forecast's."""
    from fishcast.derivatives import plan_points, resolve_spec
    from fishcast.pipeline.forecast import plan

    s = _survey()
    wl_text = SMALL.replace("spectra: [WL, GCph, XC]", "spectra: [WL]").replace('"b_*", ', "")
    s_wl = _survey(wl_text)

    def points(sv):
        dconf = sv.config.derivatives
        values = {n: plan_points(n, sv.fiducial[n], resolve_spec(n, sv.fiducial[n], dconf)) for n in sv.free}
        return plan(sv, values).keys

    assert len(s.free) > len(s_wl.free)
    assert points(s) == points(s_wl)


# =======================================================================================
# End to end: the HDF5 file and `fishcast show`
# =======================================================================================


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cache_dir):
    from click.testing import CliRunner

    from fishcast.cli.main import cli

    d = tmp_path_factory.mktemp("photo")
    path = d / "small.yaml"
    path.write_text(SMALL)
    out = d / "small.h5"
    res = CliRunner().invoke(cli, ["run", str(path), "-o", str(out), "-q", "--cache-dir", str(cache_dir),
                                   "--set", "derivatives.mode=fixed", "--set", "diagnostics.gaussian_check=false",
                                   "--set", "cosmology.accuracy.n_z=40", "--set", "cosmology.accuracy.n_k=150",
                                   "--set", "cosmology.accuracy.k_max=10"])
    assert res.exit_code in (0, 3), res.output
    return out


def test_hdf5_layout(small_run):
    import h5py

    from fishcast.io import read_fisher

    fisher, meta = read_fisher(small_run)
    with h5py.File(small_run, "r") as f:
        d = f["data/photometric"]
        tracers = [t.decode() for t in d["tracers"][()]]
        assert tracers == ["shear_1", "shear_2", "shear_3", "counts_g_1", "counts_g_2", "counts_g_3"]
        assert d["cl"].shape == (8, 6, 6) and d["noise"].shape == (6, 6) and d["ell"].shape == (8,)
        assert [s.decode() for s in d["spectra"][()]] == ["WL", "GCph", "XC"]
        assert bool(d["cross_covariance"][()])
        assert d["bands_used/WL"][()].sum() == 8 and d["bands_used/GCph"][()].sum() < 8
        assert "included" in f.attrs["cross_probe_covariance"]
        g = f["fisher/probes/photometric"]
        c = g["comparison"]
        joint = c["joint/matrix"][()]
        np.testing.assert_allclose(joint, g["matrix"][()], rtol=1e-12)
        np.testing.assert_allclose(c["added_without_cross_covariance/matrix"][()],
                                   c["WL/matrix"][()] + c["GCph/matrix"][()] + c["XC/matrix"][()], rtol=1e-12)
        names = [n.decode() for n in c["parameter_names"][()]]
        assert names == list(fisher.names)
        # WL alone knows nothing of galaxy bias; GCph alone nothing of IA
        i_b, i_ia = names.index("b_g_1"), names.index("A_IA")
        assert c["WL/matrix"][i_b, i_b] == 0 and c["GCph/matrix"][i_ia, i_ia] == 0
    assert set(meta["probes"]) == {"photometric"}


def test_show_prints_the_cross_covariance_comparison(small_run):
    import json

    from click.testing import CliRunner

    from fishcast.cli.main import cli

    res = CliRunner().invoke(cli, ["show", str(small_run)])
    assert res.exit_code == 0, res.output
    assert "spectra (photometric)" in res.output
    header = [ln for ln in res.output.splitlines() if ln.startswith("parameter") and "joint" in ln][0]
    assert header.split() == ["parameter", "WL", "GCph", "XC", "added", "joint"]
    res = CliRunner().invoke(cli, ["show", str(small_run), "--format", "json"])
    doc = json.loads(res.output)
    comp = doc["spectra_comparison"]["photometric"]
    assert comp["columns"][-2:] == ["added_without_cross_covariance", "joint"]
    sig = np.array(comp["sigma"], dtype=float)
    # the joint error on sigma8 is below every single-spectrum error
    r = comp["params"].index("sigma8")
    assert sig[r, -1] < np.nanmin(sig[r, :3])


# =======================================================================================
# Euclid IST:F: the recipes against the official Fisher matrices
# =======================================================================================

ISTF_FOM = {"pessimistic": 367.0, "optimistic": 1033.0}  # Blanchard et al. 2020, Table 13
ISTF_NAMES = {"Omegam": "Omega_m", "Omegab": "Omega_b", "w0": "w0", "wa": "wa", "h": "h", "ns": "n_s",
              "sigma8": "sigma8"}


@pytest.fixture(scope="session")
def istf_runs(tmp_path_factory, cache_dir):
    """Both IST:F 3x2pt recipes as shipped (only the stencil fixed at 3 points, 1% steps).
    They share every CAMB evaluation through the session cache, with each other and with
    tests/test_istf_reference.py (the same cosmology, accuracy and steps): 11 CAMB runs at
    the recipe's accuracy (~35 s on one core) when this file runs alone, none more in the
    whole suite; the 3x2pt signals and Fishers add ~5 s."""
    from click.testing import CliRunner

    from fishcast.cli.main import cli

    d = tmp_path_factory.mktemp("istf")
    out = {}
    for setting in ("pessimistic", "optimistic"):
        path = d / f"{setting}.h5"
        res = CliRunner().invoke(cli, [
            "run", str(RECIPES / f"euclid-3x2pt-{setting}.yaml"), "-o", str(path), "-q", "--cache-dir", str(cache_dir),
            "--set", "derivatives.mode=fixed", "--set", "derivatives.stencil=3-point",
            "--set", "diagnostics.gaussian_check=false"])
        assert res.exit_code in (0, 3), res.output
        out[setting] = path
    return out


@pytest.mark.parametrize("setting", ["pessimistic", "optimistic"])
def test_istf_3x2pt_recipe_reproduces_the_official_forecast(istf_runs, setting):
    """FoM(w0, wa) within 10% of IST:F's Table 13, and every cosmological marginalized error
    within 10% of the official matrix EuclidISTF_GCph_WL_XC_w0wa_flat_<setting>.txt
    (euclidist-forecasting/fisher_for_public, All_Results; copied in tests/data/istf)."""
    from fishcast.io import read_fisher
    from fishcast.io.exchange import read_text_fisher

    base = DATA / f"EuclidISTF_GCph_WL_XC_w0wa_flat_{setting}"
    ref = read_text_fisher(f"{base}.txt", f"{base}.paramnames", canonical=False)
    ours, meta = read_fisher(istf_runs[setting])
    assert ref.figure_of_merit() == pytest.approx(ISTF_FOM[setting], rel=0.01)  # the file is Table 13
    assert ours.figure_of_merit() == pytest.approx(ISTF_FOM[setting], rel=0.10)
    s_ref = ref.marginalized_sigma()
    s_ours = ours.marginalized_sigma()
    for istf_name, name in ISTF_NAMES.items():
        a, b = s_ours[ours.index(name)], s_ref[ref.index(istf_name)]
        assert a == pytest.approx(b, rel=0.10), f"{name}: {a:.4g} against IST:F {b:.4g}"
    # the same nuisances as IST:F: IA and ten biases, all free
    assert {f"b_g_{i}" for i in range(1, 11)} | {"A_IA", "eta_IA", "beta_IA"} <= set(ours.names)
    assert meta["camb_calls"] <= 11


def test_weak_lensing_and_photometric_shear_together_are_refused():
    """Both sections would declare A_IA (and m_i, dz_i): the same shear counted twice."""
    wl = """
  weak_lensing:
    f_sky: 0.3636
    ell: {min: 10, max: 1500, n_bands: 8}
    n_gal: 30
    shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
    nz: {type: smail, z0: 0.6363961031, alpha: 2.0, beta: 1.5}
    bins: {type: equipopulated, n_bins: 3, z_min: 0.001, z_max: 2.5}
    photoz: {sigma_b: 0.05}
    intrinsic_alignment: {model: nla}
    integration: {n_z: 121, z_max: 3.0}
"""
    with pytest.raises(SurveyError) as exc:
        _survey(SMALL + wl)
    assert "probes.photometric" in str(exc.value) and "A_IA" in str(exc.value)


def test_probe_pickles_and_stays_sealed():
    import pickle

    probe = make_probe()
    cosmo = EdS()
    fid = probe.signal(cosmo, PARAMS)
    ctx = probe.fiducial_context(cosmo, PARAMS)
    f1 = probe.gram(fid, fid[None], ctx)
    clone = pickle.loads(pickle.dumps(probe))
    np.testing.assert_allclose(clone.gram(fid, fid[None], ctx), f1, rtol=1e-14)
    np.testing.assert_array_equal(clone.signal(cosmo, PARAMS), fid)
    with pytest.raises(AttributeError):
        clone.spectra = ("WL",)


def test_fiducial_metric_is_an_immutable_context():
    import pickle

    probe = make_probe()
    fid = probe.signal(EdS(), PARAMS)
    ctx = probe.fiducial_context(EdS(), PARAMS)
    with pytest.raises(AttributeError):
        ctx.types = ("WL",)
    with pytest.raises(ValueError):
        ctx.blocks[0][2][0, 0, 0] = 1.0
    d = fid[None] * 1.1
    np.testing.assert_allclose(probe.gram(fid, d, ctx), probe.gram(fid, d), rtol=1e-14)
    again = pickle.loads(pickle.dumps(ctx))
    np.testing.assert_array_equal(again.blocks[0][2], ctx.blocks[0][2])
    # a context for other spectra is not used for the joint Fisher
    wl_ctx = probe.fiducial_metric(fid, types=("WL",))
    np.testing.assert_allclose(probe.fisher(fid, d, types=("WL",), context=wl_ctx),
                               probe.fisher(fid, d, types=("WL",)), rtol=1e-14)


def test_ia_fiducial_without_shear_spectra_names_the_photometric_section():
    text = SMALL.replace("spectra: [WL, GCph, XC]", "spectra: [GCph]").replace(
        "fiducial: {Omega_m: 0.32,", "fiducial: {A_IA: 1.7, Omega_m: 0.32,").replace(', A_IA]', ']')
    with pytest.raises(SurveyError) as exc:
        _survey(text)
    assert "parameters.fiducial.A_IA" in str(exc.value) and "probes.photometric" in str(exc.value)


def test_report_matrices_carry_per_parameter_units(small_run):
    from fishcast.io import open_forecast
    from fishcast.io.h5util import read_units

    with open_forecast(small_run) as f:
        units = read_units(f["fisher/probes/photometric/comparison/joint/matrix"])
        assert units == [u.decode() if isinstance(u, bytes) else u for u in f["parameters/units"][()]]
        assert read_units(f["data/photometric/noise"]) == "sr"
