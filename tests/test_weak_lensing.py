"""Tomographic cosmic shear (fishcast.probes.weak_lensing).

References, none of them fishcast:
* pyccl (LSST DESC Core Cosmology Library, https://github.com/LSSTDESC/CCL) for C_ell with
  and without intrinsic alignments, given the same CAMB P_nl(k, z) through pyccl.Pk2D;
* closed forms in an Einstein-de Sitter universe with a power-law P(k);
* the Gaussian covariance of band powers written out on the unique pairs (Knox 1995;
  physics.md section 3) and the definition of a square arcminute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fishcast.errors import ComputationError, FileFormatError, InputError
from fishcast.probes.weak_lensing import (
    ARCMIN2_PER_SR,
    WeakLensingConfig,
    WeakLensingProbe,
    build,
    ell_bands,
    ell_factor,
    knox_fisher,
    lensing_efficiency,
)
from fishcast.redshift import PhotoZModel, SmailNz, TomographicBins, equipopulated_edges

C = 299792.458  # km/s


# =======================================================================================
# Stand-in cosmology: Einstein-de Sitter with a power-law spectrum (no CAMB)
# =======================================================================================


class EdS:
    """A fishcast.probes.base.Cosmology (checked in test_contract.py). Omega_m = 1:
    chi = 2c/H0 (1 - (1+z)^-1/2), H = H0 (1+z)^3/2, D = 1/(1+z), f = 1;
    P(k, z) = amp k^-2 D(z)^2 [Mpc^3] (linear and "nonlinear" alike)."""

    z_max = 6.0
    Omega_m = 1.0
    sigma8 = 0.8  # not used by the probes: a number of the right kind
    has_nonlinear = True

    def __init__(self, H0=70.0, amp=100.0):
        self.H0 = H0
        self.h = H0 / 100.0
        self.amp = amp

    def chi_of(self, z):
        return 2 * C / self.H0 * (1 - (1 + np.asarray(z, dtype=float)) ** -0.5)

    def hubble_of(self, z):
        return self.H0 * (1 + np.asarray(z, dtype=float)) ** 1.5

    def growth_of(self, z):
        return 1.0 / (1 + np.asarray(z, dtype=float))

    def growth_rate_of(self, z):
        return np.ones_like(np.asarray(z, dtype=float))

    def pk(self, z, k, nonlinear=True):
        return self.amp * np.asarray(k, dtype=float) ** -2 / (1 + np.asarray(z, dtype=float)) ** 2

    def pk_h(self, z, k_h, nonlinear=False):
        return self.pk(z, np.asarray(k_h) * self.h, nonlinear) * self.h**3


class NarrowGaussian:
    """A parent n(z) that is a narrow Gaussian around z_s: a single source plane."""

    def __init__(self, zs, sigma):
        self.zs, self.sigma = zs, sigma

    def __call__(self, z):
        return np.exp(-0.5 * ((np.asarray(z) - self.zs) / self.sigma) ** 2)

    def cdf(self, z):
        from scipy.special import ndtr

        return ndtr((np.asarray(z) - self.zs) / self.sigma)


def wl_probe(bins, *, ell_min, ell_max, n_bands, f_sky, n_gal, sigma_e, noise_convention="per_component",
             ell_factor_kind="none", ia_model="nla", C_IA=0.0134, luminosity_ratio=None, shear_bias=False,
             photoz_shift=False, k_max=30.0):
    """The probe on given bins (a parent n(z) the YAML cannot express): its validated
    configuration, whose redshift sections (nz, bins, photoz) are placeholders that the given
    bins stand for. Every node is integrated over (z_tail 0): the closed forms and the 3x2pt
    probe built on these probes use the whole n(z)."""
    top = float(bins.z[-1])
    config = WeakLensingConfig.model_validate(dict(
        f_sky=f_sky, ell=dict(min=ell_min, max=ell_max, n_bands=n_bands), ell_factor=ell_factor_kind, n_gal=n_gal,
        shape_noise=dict(sigma_e=sigma_e, convention=noise_convention),
        nz=dict(type="smail", z0=0.5, beta=1.5), bins=dict(type="edges", edges=[0.0, 0.5 * top]),
        photoz=dict(sigma_b=0.05), intrinsic_alignment=dict(model=ia_model, C_IA=C_IA),
        shear_bias=shear_bias, photoz_shift=photoz_shift, integration=dict(z_max=top, k_max=k_max, z_tail=0.0),
    ))
    return WeakLensingProbe(config, bins, luminosity_ratio)


def single_plane_probe(zs=1.0, sigma=0.005, ell_factor_kind="none", ia_model="none", **kw):
    z = np.linspace(0.0, 2.0, 4001)
    bins = TomographicBins(NarrowGaussian(zs, sigma), np.array([0.0, 10.0]), PhotoZModel(sigma_b=1e-3), z)
    return wl_probe(bins=bins, ell_min=10, ell_max=3000, n_bands=8, f_sky=0.5, n_gal=10, sigma_e=0.3,
                    ell_factor_kind=ell_factor_kind, ia_model=ia_model, **kw)


def test_lensing_efficiency_single_plane_eds():
    """q(chi) = 3/2 Omega_m (H0/c)^2 chi (1+z) (chi_s - chi)/chi_s for one source plane."""
    cosmo = EdS()
    z = np.linspace(0.0, 1.2, 12001)
    nz = NarrowGaussian(1.0, 0.001)(z)[None, :]
    nz /= np.trapezoid(nz, z)
    chi = cosmo.chi_of(z)
    q = lensing_efficiency(z, chi, nz, 1.0, cosmo.H0)[0]
    chis = cosmo.chi_of(1.0)
    sel = z < 0.95
    ref = 1.5 * (cosmo.H0 / C) ** 2 * chi * (1 + z) * (chis - chi) / chis
    np.testing.assert_allclose(q[sel], ref[sel], rtol=1e-4, atol=1e-9 * ref.max())
    assert np.all(np.abs(q[z > 1.01]) < 1e-12 * ref.max())


def test_single_plane_cl_eds_closed_form():
    """EdS, P = A k^-2 D^2, one source plane: the Limber integrand is const (chi_s - chi)^2 chi^2,
    so C(ell) = 9/4 (H0/c)^4 A chi_s^3 / (30 (ell+1/2)^2) exactly."""
    cosmo = EdS()
    probe = single_plane_probe()
    cl = probe.signal(cosmo, {})[:, 0, 0]
    chis = cosmo.chi_of(1.0)
    ref = 2.25 * (cosmo.H0 / C) ** 4 * cosmo.amp * chis**3 / (30 * (probe.ell + 0.5) ** 2)
    np.testing.assert_allclose(cl, ref, rtol=1e-4)
    # the exact prefactor multiplies by (ell+2)!/((ell-2)! (ell+1/2)^4)
    cl_exact = single_plane_probe(ell_factor_kind="exact").signal(cosmo, {})[:, 0, 0]
    ell = probe.ell
    np.testing.assert_allclose(cl_exact, ref * (ell + 2) * (ell + 1) * ell * (ell - 1) / (ell + 0.5) ** 4, rtol=2e-4)


def test_intrinsic_alignment_single_plane_eds():
    """A narrow source plane: C_II = (A C_IA Omega_m F/D)^2 (H/c)/chi^2 P Int n^2 dz, with
    Int n^2 dz = 1/(2 sqrt(pi) sigma) for a Gaussian; the GI term is odd around z_s and the
    II term dominates the change for a narrow plane."""
    cosmo = EdS()
    sigma = 0.005
    probe = single_plane_probe(sigma=sigma, ia_model="nla")
    A, eta = 2.0, 0.5
    dcl = probe.signal(cosmo, {"A_IA": A, "eta_IA": eta})[:, 0, 0] - probe.signal(cosmo, {"A_IA": 0.0, "eta_IA": eta})[:, 0, 0]
    zs = 1.0
    amp = A * 0.0134 * 1.0 * (1 + zs) ** eta / cosmo.growth_of(zs)
    chis = cosmo.chi_of(zs)
    ref = amp**2 * cosmo.hubble_of(zs) / C / chis**2 * cosmo.pk(zs, (probe.ell + 0.5) / chis) / (2 * math.sqrt(math.pi) * sigma)
    np.testing.assert_allclose(dcl, ref, rtol=3e-3)


def test_ell_bands_and_factor():
    centres, edges, widths = ell_bands(10, 1500, 100)
    assert edges[0] == pytest.approx(10) and edges[-1] == pytest.approx(1500)
    np.testing.assert_allclose(np.diff(np.log(edges)), math.log(150) / 100)
    np.testing.assert_allclose(centres, np.sqrt(edges[1:] * edges[:-1]))
    np.testing.assert_allclose(widths, edges[1:] - edges[:-1])
    # physics.md: the exact factor is 2.3% below 1 at ell = 10
    assert float(ell_factor(10.0, "exact")) == pytest.approx(12 * 11 * 10 * 9 / 10.5**4)
    assert 1 - float(ell_factor(10.0, "exact")) == pytest.approx(0.0226, abs=5e-4)
    assert float(ell_factor(10.0, "none")) == 1.0


def test_noise_per_steradian():
    parent = SmailNz(0.9 / math.sqrt(2), 2, 1.5)
    z = np.linspace(0, 4, 201)
    bins = TomographicBins(parent, equipopulated_edges(parent, 10, 0.001, 2.5), PhotoZModel(0.05), z, True)
    probe = wl_probe(bins=bins, ell_min=10, ell_max=1500, n_bands=10, f_sky=0.3636, n_gal=30.0, sigma_e=0.3,
                     noise_convention="multiplies_inverse_density")
    # 1 arcmin^-2 = 1.18183e7 sr^-1 (physics.md); 3 galaxies per arcmin^2 per bin
    n_i = 3.0 * 1.18183e7
    np.testing.assert_allclose(probe.noise(), np.eye(10) * 0.09 / n_i, rtol=5e-5)  # 6 digits given
    assert ARCMIN2_PER_SR == pytest.approx((180 * 60 / math.pi) ** 2, rel=1e-15)


def test_noise_is_computed_once_at_construction(monkeypatch):
    """Every Knox product (the sweep's norms, the Fisher matrix, the validity check: ~100 per
    Euclid WL run) adds the shape noise: it is computed when the probe is built, never again;
    noise() hands out a copy (the probe stays immutable)."""
    from fishcast.probes.weak_lensing import WeakLensingProbe

    probe = single_plane_probe()
    calls = []
    real = WeakLensingProbe.density_per_sr
    monkeypatch.setattr(WeakLensingProbe, "density_per_sr", lambda self: calls.append(1) or real(self))
    cl = probe.signal(EdS(), {})
    for _ in range(3):
        probe.gram(cl, cl[None] * 0.1)
        probe.trace_form(cl, EdS())
    n = probe.noise()
    assert calls == []
    np.testing.assert_array_equal(n, np.diag(probe.sigma_e**2 / real(probe)))
    n[0, 0] = 1.0  # a copy: the probe's own is untouched
    assert probe.noise()[0, 0] != 1.0


def test_knox_gram_equals_explicit_gaussian_covariance_fisher():
    """F_ab = sum_ell d_a^T Cov^-1 d_b over the unique pairs (i<=j), Cov[C_ij, C_kl] =
    (Cb_ik Cb_jl + Cb_il Cb_jk) / modes_ell, equals the trace form."""
    rng = np.random.default_rng(7)
    n_ell, n, n_par = 4, 3, 3
    modes = rng.uniform(5, 50, n_ell)
    a = rng.normal(size=(n_ell, n, n))
    cb = a @ np.swapaxes(a, -1, -2) + n * np.eye(n)
    d = rng.normal(size=(n_par, n_ell, n, n))
    d = d + np.swapaxes(d, -1, -2)
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    ref = np.zeros((n_par, n_par))
    for l_ in range(n_ell):
        c = cb[l_]
        cov = np.array([[(c[i, k] * c[j, m] + c[i, m] * c[j, k]) / modes[l_] for (k, m) in pairs] for (i, j) in pairs])
        vec = np.array([[d[p, l_, i, j] for (i, j) in pairs] for p in range(n_par)])
        ref += vec @ np.linalg.solve(cov, vec.T)
    np.testing.assert_allclose(knox_fisher(cb, d, modes), ref, rtol=1e-10)
    with pytest.raises(InputError, match="shape"):
        knox_fisher(cb, d[0], modes)


def test_gram_adds_noise_and_uses_mode_counts():
    probe = single_plane_probe()
    cosmo = EdS()
    cl = probe.signal(cosmo, {})
    d = cl[None] * 0.1
    modes = (2 * probe.ell + 1) * 0.5 * probe.delta_ell
    cb = cl[:, 0, 0] + probe.noise()[0, 0]
    ref = np.sum(modes / 2 * (0.1 * cl[:, 0, 0] / cb) ** 2)
    assert probe.gram(cl, d)[0, 0] == pytest.approx(ref, rel=1e-12)
    assert probe.norm(cl, d[0]) == pytest.approx(math.sqrt(ref), rel=1e-12)


def three_bin_probe(**kw):
    parent = SmailNz(0.9 / math.sqrt(2), 2, 1.5)
    z = np.linspace(0, 3.0, 241)
    bins = TomographicBins(parent, equipopulated_edges(parent, 3, 0.001, 2.5),
                           PhotoZModel(sigma_b=0.05, f_out=0.1, z_o=0.1, sigma_o=0.05), z, True)
    args = dict(bins=bins, ell_min=10, ell_max=1000, n_bands=12, f_sky=0.3636, n_gal=30.0, sigma_e=0.3,
                noise_convention="multiplies_inverse_density")
    args.update(kw)
    return wl_probe(**args)


def test_shear_bias_and_photoz_shift_nuisances():
    cosmo = EdS()
    probe = three_bin_probe(shear_bias=True, photoz_shift=True)
    assert list(probe.nuisance_parameters()) == ["A_IA", "eta_IA", "m_1", "m_2", "m_3", "dz_1", "dz_2", "dz_3"]
    base = probe.signal(cosmo, {})
    m = np.array([0.01, -0.02, 0.005])
    biased = probe.signal(cosmo, {"m_1": m[0], "m_2": m[1], "m_3": m[2]})
    np.testing.assert_allclose(biased, base * np.outer(1 + m, 1 + m)[None], rtol=1e-13)
    # a photo-z shift to higher z raises the lensing signal of that bin
    shifted = probe.signal(cosmo, {"dz_2": 0.02})
    assert np.all(shifted[:, 1, 1] > base[:, 1, 1])
    np.testing.assert_array_equal(shifted[:, 0, 0], base[:, 0, 0])


def test_signal_is_smooth_in_photoz_shift():
    """Fixed integration nodes: the central difference converges as h^2 (no quadrature noise),
    measured in the Fisher metric."""
    cosmo = EdS()
    probe = three_bin_probe(photoz_shift=True)
    fid = probe.signal(cosmo, {})

    def deriv(h):
        return (probe.signal(cosmo, {"dz_2": h}) - probe.signal(cosmo, {"dz_2": -h})) / (2 * h)

    d = [deriv(h) for h in (4e-3, 2e-3, 1e-3)]
    e1 = probe.norm(fid, d[0] - d[1])
    e2 = probe.norm(fid, d[1] - d[2])
    assert e1 / e2 == pytest.approx(4.0, rel=0.1)
    assert e2 / probe.norm(fid, d[2]) < 1e-4


def test_signal_shape_symmetry_and_speed():
    import time

    cosmo = EdS()
    parent = SmailNz(0.9 / math.sqrt(2), 2, 1.5)
    z = np.linspace(0, 4.0, 301)
    bins = TomographicBins(parent, equipopulated_edges(parent, 10, 0.001, 2.5), PhotoZModel(0.05, f_out=0.1, z_o=0.1, sigma_o=0.05), z, True)
    probe = wl_probe(bins=bins, ell_min=10, ell_max=5000, n_bands=100, f_sky=0.36, n_gal=30, sigma_e=0.3,
                     shear_bias=True, photoz_shift=True)
    params = {"A_IA": 1.72, "eta_IA": -0.41, "dz_3": 0.01, "m_2": 0.01}
    cl = probe.signal(cosmo, params)
    assert cl.shape == (100, 10, 10)
    np.testing.assert_array_equal(cl, np.swapaxes(cl, 1, 2))  # exactly symmetric
    assert np.all(np.linalg.eigvalsh(cl + probe.noise()) > 0)
    t0 = time.perf_counter()
    for _ in range(5):
        probe.signal(cosmo, params)
    assert (time.perf_counter() - t0) / 5 < 0.1


def test_grid_too_short_is_refused():
    cosmo = EdS()
    cosmo.z_max = 2.0  # tabulated only up to z = 2
    with pytest.raises(ComputationError, match="tabulated up to"):
        three_bin_probe().signal(cosmo, {})


# =======================================================================================
# Configuration
# =======================================================================================

BASE = {
    "f_sky": 0.3636,
    "ell": {"min": 10, "max": 1500, "n_bands": 20},
    "n_gal": 30.0,
    "shape_noise": {"sigma_e": 0.3, "convention": "multiplies_inverse_density"},
    "nz": {"type": "smail", "z0": 0.6363961, "alpha": 2.0, "beta": 1.5},
    "bins": {"type": "equipopulated", "n_bins": 4, "z_min": 0.001, "z_max": 2.5},
    "photoz": {"sigma_b": 0.05, "f_out": 0.1, "z_o": 0.1, "sigma_o": 0.05},
    "intrinsic_alignment": {"model": "nla"},
    "integration": {"n_z": 121},
}


def cfg(**changes):
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return WeakLensingConfig.model_validate(d)


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"f_sky": 1.5}, "f_sky"),
        ({"f_sky": None}, "exactly one of f_sky and area_deg2"),
        ({"area_deg2": 15000.0}, "exactly one of f_sky and area_deg2"),
        ({"n_gal": -1.0}, "n_gal"),
        ({"ell": {"min": 100, "max": 10, "n_bands": 3}}, "must exceed ell.min"),
        ({"shape_noise": {"sigma_e": 0.3}}, "convention"),
        ({"shape_noise": {"sigma_e": 0.3, "convention": "total"}}, "ambiguous"),
        ({"photoz": {"sigma_b": 0.05, "f_out": 0.1}}, "z_o"),
        ({"integration": {"z_max": 2.0}}, "last bin edge"),
        ({"bins": {"type": "edges", "edges": [0.5, 0.3, 1.0]}}, "strictly increasing"),
        ({"nz": {"type": "gauss", "z0": 1.0}}, "type"),
        ({"colour": "blue"}, "colour"),
        ({"intrinsic_alignment": {"model": "nla", "C1": 0.0134}}, "C1"),
    ],
)
def test_config_refuses_bad_input(changes, needle):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=needle):
        cfg(**changes)


def test_config_nuisances_and_area():
    c = cfg(f_sky=None, area_deg2=14300.0, shear_bias=True, photoz_shift=True)
    assert c.sky_fraction == pytest.approx(14300.0 / 41252.96, rel=1e-6)
    assert list(c.nuisance_parameters()) == ["A_IA", "eta_IA"] + [f"m_{i}" for i in range(1, 5)] + [f"dz_{i}" for i in range(1, 5)]
    assert "beta_IA" not in c.nuisance_parameters()
    assert cfg(intrinsic_alignment={"model": "none"}).nuisance_parameters() == {}
    schema = WeakLensingConfig.model_json_schema()
    assert "shape_noise" in schema["required"] and "description" in str(schema)
    with pytest.raises(Exception):
        c.n_gal = 3.0  # frozen


def test_build_resolves_relative_paths_against_survey_dir(tmp_path):
    sub = tmp_path / "survey"
    sub.mkdir()
    zt = np.linspace(0, 4.5, 100)
    np.savetxt(sub / "nz.txt", np.column_stack([zt, zt**2 * np.exp(-((zt / 0.64) ** 1.5))]))
    np.savetxt(sub / "lum.txt", np.column_stack([zt, 0.2 + 0.5 * zt]))
    c = cfg(nz={"type": "table", "file": "nz.txt"},
            intrinsic_alignment={"model": "nla", "luminosity_ratio_file": "lum.txt"},
            bins={"type": "edges", "edges": [0.2, 0.6, 1.0, 2.0]})
    probe = build(c, sub)
    assert probe.n_bins == 3
    assert list(probe.nuisance_parameters()) == ["A_IA", "eta_IA", "beta_IA"]
    # beta_IA acts through the table: F_IA = (1+z)^eta (<L>/L*)^beta
    cosmo = EdS()
    a = probe.signal(cosmo, {"beta_IA": 0.0})
    b = probe.signal(cosmo, {"beta_IA": 1.0})
    assert np.max(np.abs(a / b - 1)) > 1e-3
    with pytest.raises(FileFormatError, match="missing.txt"):
        build(cfg(nz={"type": "table", "file": "missing.txt"}), sub)
    np.savetxt(sub / "short.txt", np.column_stack([zt[:50], 1 + zt[:50]]))
    with pytest.raises(FileFormatError, match="short.txt"):
        build(cfg(intrinsic_alignment={"model": "nla", "luminosity_ratio_file": "short.txt"}), sub)


def test_products_layout():
    probe = build(cfg(), __import__("pathlib").Path("."))
    out = probe.products(EdS(), {})
    assert set(out) >= {"ell", "ell_edges", "delta_ell", "cl", "noise", "z", "nz"}
    assert out["cl"][0].shape == (20, 4, 4) and out["noise"][0].shape == (4, 4)
    assert out["nz"][0].shape == (4, 121) and out["z"][0].shape == (121,)
    np.testing.assert_allclose(np.trapezoid(out["nz"][0], out["z"][0], axis=1), 1.0, rtol=1e-3)
    assert all(isinstance(u, str) for _, u in out.values())


# =======================================================================================
# Against pyccl, with CAMB's nonlinear spectrum in both
# =======================================================================================



@pytest.fixture(scope="module")
def ccl():
    return pytest.importorskip("pyccl")


def ccl_cosmology(ccl, cosmo):
    """A pyccl cosmology with CAMB's parameters (its own background) and CAMB's P_nl(k, z)."""
    d = cosmo.derived
    m_nu = float(cosmo.params.get("m_nu", 0.0))
    c = ccl.Cosmology(Omega_c=d["Omega_m"] - d["Omega_b"] - d["Omega_nu"], Omega_b=d["Omega_b"], h=d["h"],
                      n_s=d["n_s"], A_s=d["A_s"], m_nu=m_nu, mass_split="single",
                      w0=float(cosmo.params.get("w0", -1.0)), wa=float(cosmo.params.get("wa", 0.0)),
                      transfer_function="eisenstein_hu")
    pk = ccl.Pk2D(a_arr=1.0 / (1.0 + cosmo.z[::-1]), lk_arr=np.log(cosmo.k), pk_arr=np.log(cosmo.pk_nl[::-1]),
                  is_logp=True, extrap_order_lok=1, extrap_order_hik=1)
    return c, pk


def ccl_cls(ccl, cosmo, probe, params, ia_amplitude=None):
    """pyccl C_ell of the probe's bins; ia_amplitude(z) in our convention (A_IA F_IA(z))
    is rescaled to pyccl's C1 rho_crit = 5e-14 rho_crit (physics.md)."""
    c, pk = ccl_cosmology(ccl, cosmo)
    z = probe.z
    nz = probe.nz(params)
    tracers = []
    for i in range(probe.n_bins):
        ia = None
        if ia_amplitude is not None:
            ia = (z, ia_amplitude(z) * 0.0134 / (5e-14 * ccl.physical_constants.RHO_CRITICAL))
        tracers.append(ccl.WeakLensingTracer(c, dndz=(z, nz[i]), ia_bias=ia))
    out = np.zeros((probe.ell.size, probe.n_bins, probe.n_bins))
    for i in range(probe.n_bins):
        for j in range(i, probe.n_bins):
            out[:, i, j] = out[:, j, i] = ccl.angular_cl(c, tracers[i], tracers[j], probe.ell, p_of_k_a=pk,
                                                          limber_integration_method="spline")
    return out


def test_rho_factor_of_pyccl(ccl):
    """physics.md: pyccl's NLA normalization C1 rho_crit = 5e-14 rho_crit = 0.013877."""
    assert 5e-14 * ccl.physical_constants.RHO_CRITICAL == pytest.approx(0.013877, rel=1e-4)


@pytest.mark.parametrize("ia", ["none", "nla"])
@pytest.mark.parametrize("factor", ["exact", "none"])
def test_shear_cl_matches_pyccl(ccl, fiducial_cosmo, ia, factor):
    probe = three_bin_probe(ia_model=ia, ell_factor_kind=factor)
    params = {"A_IA": 1.72, "eta_IA": -0.41}
    ours = probe.signal(fiducial_cosmo, params)
    amp = (lambda z: 1.72 * (1 + z) ** -0.41) if ia == "nla" else None
    ref = ccl_cls(ccl, fiducial_cosmo, probe, params, amp)
    if factor == "none":  # pyccl always applies (ell+2)!/((ell-2)! (ell+1/2)^4)
        ell = probe.ell
        ref = ref / ((ell + 2) * (ell + 1) * ell * (ell - 1) / (ell + 0.5) ** 4)[:, None, None]
    assert probe.ell.max() <= 1000
    np.testing.assert_allclose(ours, ref, rtol=0.01)
    if ia == "nla":  # the IA terms are a visible part of the signal being compared
        no_ia = three_bin_probe(ia_model="none", ell_factor_kind=factor).signal(fiducial_cosmo, params)
        assert np.max(np.abs(ours[:, 0, 0] / no_ia[:, 0, 0] - 1)) > 0.05


def test_extended_nla_with_luminosity_table_matches_pyccl(ccl, fiducial_cosmo, tmp_path):
    zt = np.linspace(0.0, 3.5, 36)
    ratio = 0.3 + 0.6 * zt  # linear: our linear interpolation is exact on it
    probe = three_bin_probe(ell_factor_kind="exact", luminosity_ratio=(zt, ratio))
    assert "beta_IA" in probe.nuisance_parameters()
    params = {"A_IA": 1.72, "eta_IA": -0.41, "beta_IA": 2.17}
    ours = probe.signal(fiducial_cosmo, params)
    ref = ccl_cls(ccl, fiducial_cosmo, probe, params, lambda z: 1.72 * (1 + z) ** -0.41 * (0.3 + 0.6 * z) ** 2.17)
    np.testing.assert_allclose(ours, ref, rtol=0.01)


# =======================================================================================
# Marginalized errors against an independent Fisher computation from pyccl
# =======================================================================================

STEPS = {"Omega_m": 0.0032, "sigma8": 0.008}


@pytest.fixture(scope="module")
def stencil(fiducial_cosmo, fast_settings):
    """CAMB at Omega_m +- h and sigma8 +- h (3 Boltzmann runs: the sigma8 points share one)."""
    from fishcast.cosmology import compute_many

    base = dict(fiducial_cosmo.params)
    pts, keys = [], []
    for name, h in STEPS.items():
        for sign in (+1, -1):
            p = dict(base)
            p[name] = base[name] + sign * h
            pts.append(p)
            keys.append((name, sign))
    return dict(zip(keys, compute_many(pts, fast_settings)))


def test_marginalized_errors_match_independent_pyccl_fisher(ccl, fiducial_cosmo, stencil):
    probe = three_bin_probe(ell_factor_kind="exact")
    a_ia, eta = 1.72, -0.41
    params = {"A_IA": a_ia, "eta_IA": eta}
    names = ["Omega_m", "sigma8", "A_IA"]
    h_a = 0.1

    # fishcast: signal at the stencil points, central differences, probe.gram
    fid = probe.signal(fiducial_cosmo, params)
    d_ours = [(probe.signal(stencil[(n, 1)], params) - probe.signal(stencil[(n, -1)], params)) / (2 * STEPS[n]) for n in STEPS]
    d_ours.append((probe.signal(fiducial_cosmo, {**params, "A_IA": a_ia + h_a})
                   - probe.signal(fiducial_cosmo, {**params, "A_IA": a_ia - h_a})) / (2 * h_a))
    sigma_ours = np.sqrt(np.diag(np.linalg.inv(probe.gram(fid, np.array(d_ours)))))

    # independent: pyccl C_ell at the same points, own differences, own Knox formula
    def amp(a):
        return lambda z: a * (1 + z) ** eta

    ref_fid = ccl_cls(ccl, fiducial_cosmo, probe, params, amp(a_ia))
    d_ref = [(ccl_cls(ccl, stencil[(n, 1)], probe, params, amp(a_ia)) - ccl_cls(ccl, stencil[(n, -1)], probe, params, amp(a_ia)))
             / (2 * STEPS[n]) for n in STEPS]
    d_ref.append((ccl_cls(ccl, fiducial_cosmo, probe, params, amp(a_ia + h_a))
                  - ccl_cls(ccl, fiducial_cosmo, probe, params, amp(a_ia - h_a))) / (2 * h_a))
    edges = np.geomspace(10, 1000, 13)
    ell = np.sqrt(edges[1:] * edges[:-1])
    dell = np.diff(edges)
    n_per_sr = 30.0 / 3 * (180 * 60 / math.pi) ** 2
    noise = np.eye(3) * 0.3**2 / n_per_sr
    fisher = np.zeros((3, 3))
    for l_ in range(ell.size):
        cinv = np.linalg.inv(ref_fid[l_] + noise)
        for a in range(3):
            for b in range(3):
                fisher[a, b] += (2 * ell[l_] + 1) * 0.3636 * dell[l_] / 2 * np.trace(cinv @ d_ref[a][l_] @ cinv @ d_ref[b][l_])
    sigma_ref = np.sqrt(np.diag(np.linalg.inv(fisher)))
    np.testing.assert_allclose(sigma_ours, sigma_ref, rtol=0.02)  # agree to ~1e-3 in practice
    # not a trivial case: the Omega_m - sigma8 degeneracy inflates the marginalized errors
    assert np.all(sigma_ref[:2] > 3.0 / np.sqrt(np.diag(fisher))[:2])


def test_probe_pickles_for_worker_processes(tmp_path):
    """Probes travel to process pools and dask workers."""
    import pickle

    zt = np.linspace(0, 4.5, 100)
    np.savetxt(tmp_path / "nz.txt", np.column_stack([zt, zt**2 * np.exp(-zt)]))
    probe = build(cfg(nz={"type": "table", "file": "nz.txt"}, photoz_shift=True), tmp_path)
    clone = pickle.loads(pickle.dumps(probe))
    params = {"dz_1": 0.01}
    np.testing.assert_array_equal(clone.signal(EdS(), params), probe.signal(EdS(), params))


def test_probe_is_built_from_its_config(tmp_path):
    """build() = WeakLensingProbe(config, make_bins(config), table): the probe reads every
    setting from the validated configuration."""
    from fishcast.probes.weak_lensing import build, make_bins

    c = cfg(f_sky=None, area_deg2=15000.0, n_gal=25.0, shear_bias=True, ell_factor="exact")
    probe = build(c, tmp_path)
    assert probe.config is c
    assert probe.f_sky == pytest.approx(15000.0 / 41252.96, rel=1e-6)
    assert probe.n_gal == 25.0 and probe.ell_factor_kind == "exact" and probe.shear_bias
    assert probe.ell.size == c.ell.n_bands and c.integration.k_max is None
    from fishcast.probes.weak_lensing import limber_k_max  # no k_max given: what the kernels need
    assert probe.requirements().k_max == limber_k_max(probe.ell.max(), probe.z, probe.nz(), c.integration.k_share)
    given = cfg(integration={"z_max": 4.0, "n_z": 121, "k_max": 12.5})
    assert build(given, tmp_path).requirements().k_max == 12.5
    bins = make_bins(c, tmp_path)
    np.testing.assert_array_equal(bins.edges, probe.bins.edges)
    np.testing.assert_array_equal(bins.z, probe.z)
