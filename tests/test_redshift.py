"""Source redshift distributions (fishcast.redshift).

References: closed forms (Simpson exact on cubics, incomplete-gamma CDF checked by
quadrature), brute-force numerical integration of the Euclid IST:F photo-z model written out
here from Blanchard et al. 2020 (A&A 642, A191, eq. 115), and the definitions of
equi-populated bins and of a shift.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from fishcast.errors import FileFormatError, InputError
from fishcast.redshift import (
    PhotoZModel,
    SmailNz,
    TabulatedNz,
    TomographicBins,
    equipopulated_edges,
    integration_weights,
    read_table,
)

ISTF_PARENT = SmailNz(z0=0.9 / math.sqrt(2.0), alpha=2.0, beta=1.5)
ISTF_PHOTOZ = PhotoZModel(sigma_b=0.05, c_b=1.0, z_b=0.0, f_out=0.1, c_o=1.0, z_o=0.1, sigma_o=0.05)
Z = np.linspace(0.0, 4.0, 401)


def istf_pdf(zp, z):
    """p(z_p|z) of Euclid IST:F eq. 115, written out independently of fishcast."""
    core = 0.9 / (math.sqrt(2 * math.pi) * 0.05 * (1 + z)) * math.exp(-0.5 * ((z - zp) / (0.05 * (1 + z))) ** 2)
    out = 0.1 / (math.sqrt(2 * math.pi) * 0.05 * (1 + z)) * math.exp(-0.5 * ((z - zp - 0.1) / (0.05 * (1 + z))) ** 2)
    return core + out


def smail_table(tmp_path, name="nz.txt"):
    zt = np.linspace(0.0, 4.0, 161)
    path = tmp_path / name
    np.savetxt(path, np.column_stack([zt, 7.0 * ISTF_PARENT(zt)]), header="z n(z)")
    return path


def test_simpson_weights_are_exact_on_cubics():
    z = np.linspace(0.3, 2.0, 41)
    w = integration_weights(z)
    f = 1 + 2 * z - z**2 + 0.5 * z**3
    exact = lambda x: x + x**2 - x**3 / 3 + 0.125 * x**4  # noqa: E731
    assert w @ f == pytest.approx(exact(2.0) - exact(0.3), rel=1e-12)


def test_smail_cdf_and_quantile_match_quadrature():
    norm = quad(ISTF_PARENT, 0, np.inf)[0]
    for zz in (0.3, 0.9, 2.0):
        assert float(ISTF_PARENT.cdf(zz)) == pytest.approx(quad(ISTF_PARENT, 0, zz)[0] / norm, rel=1e-9)
    assert float(ISTF_PARENT.cdf(ISTF_PARENT.quantile(0.37))) == pytest.approx(0.37, rel=1e-10)


@pytest.mark.parametrize("kind", ["smail", "table"])
def test_equipopulated_bins_have_equal_parent_counts(kind, tmp_path):
    parent = ISTF_PARENT if kind == "smail" else TabulatedNz.from_file(smail_table(tmp_path))
    edges = equipopulated_edges(parent, 10, 0.001, 2.5)
    assert edges[0] == 0.001 and edges[-1] == 2.5
    counts = np.array([quad(parent, a, b, epsabs=0, epsrel=1e-11, limit=500)[0] for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(counts / counts.sum(), 0.1, rtol=1e-7)
    bins = TomographicBins(parent, edges, ISTF_PHOTOZ, Z, equipopulated=True)
    np.testing.assert_array_equal(bins.fractions, np.full(10, 0.1))


def test_given_edges_fractions_are_parent_shares():
    edges = np.array([0.2, 0.5, 1.0, 2.0])
    bins = TomographicBins(ISTF_PARENT, edges, ISTF_PHOTOZ, Z)
    counts = np.array([quad(ISTF_PARENT, a, b)[0] for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(bins.fractions, counts / counts.sum(), rtol=1e-9)


@pytest.mark.parametrize("kind", ["smail", "table"])
def test_nz_normalized_on_the_grid(kind, tmp_path):
    parent = ISTF_PARENT if kind == "smail" else TabulatedNz.from_file(smail_table(tmp_path))
    bins = TomographicBins(parent, equipopulated_edges(parent, 5, 0.001, 2.5), ISTF_PHOTOZ, Z, True)
    nz = bins.nz()
    assert nz.shape == (5, Z.size)
    assert np.all(nz >= 0)
    # independent quadrature (trapezoid on the same nodes, accurate to ~1e-4 here)
    np.testing.assert_allclose(np.trapezoid(nz, Z, axis=1), 1.0, rtol=2e-4)
    np.testing.assert_allclose(nz @ integration_weights(Z), 1.0, rtol=1e-12)
    shifted = bins.nz(np.array([0.0, 0.03, -0.02, 0.01, 0.05]))
    np.testing.assert_allclose(np.trapezoid(shifted, Z, axis=1), 1.0, rtol=2e-4)


def test_erf_bin_probability_matches_brute_force_integration():
    for z in (0.05, 0.7, 1.9):
        for lo, hi in ((0.001, 0.418), (0.9, 1.02), (1.576, 2.5)):
            brute = quad(lambda zp: istf_pdf(zp, z), lo, hi, epsabs=1e-14, epsrel=1e-12)[0]
            assert float(ISTF_PHOTOZ.bin_probability(z, lo, hi)) == pytest.approx(brute, rel=1e-9, abs=1e-14)
            # the pdf itself is the IST:F formula
            assert float(ISTF_PHOTOZ.pdf(0.5 * (lo + hi), z)) == pytest.approx(istf_pdf(0.5 * (lo + hi), z), rel=1e-12)


def test_single_gaussian_is_the_f_out_zero_case():
    lsst = PhotoZModel(sigma_b=0.05)  # LSST DESC SRD: scatter 0.05 (1+z)
    z = 1.2
    brute = quad(lambda zp: math.exp(-0.5 * ((z - zp) / (0.05 * 2.2)) ** 2) / (math.sqrt(2 * math.pi) * 0.11), 1.0, 1.3)[0]
    assert float(lsst.bin_probability(z, 1.0, 1.3)) == pytest.approx(brute, rel=1e-10)
    # contiguous bins covering all photometric redshifts hold every galaxy
    edges = np.array([-50.0, 0.3, 0.8, 1.5, 50.0])
    p = lsst.bin_probability(np.linspace(0, 3, 31)[None, :], edges[:-1, None], edges[1:, None])
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-12)


@pytest.mark.parametrize("kind", ["smail", "table"])
def test_shift_moves_the_mean_by_dz(kind, tmp_path):
    parent = ISTF_PARENT if kind == "smail" else TabulatedNz.from_file(smail_table(tmp_path))
    edges = np.array([0.4, 0.8, 1.2, 1.8])
    bins = TomographicBins(parent, edges, ISTF_PHOTOZ, Z)
    w = integration_weights(Z)
    dz = np.array([0.02, -0.035, 0.01])
    mean0 = (bins.nz() * Z) @ w
    mean1 = (bins.nz(dz) * Z) @ w
    np.testing.assert_allclose(mean1 - mean0, dz, atol=2e-6)
    # the shifted distribution is the unshifted one evaluated at z - dz (interior nodes)
    ref = np.interp(Z - dz[1], Z, bins.nz()[1])
    np.testing.assert_allclose(bins.nz(dz)[1][50:300], ref[50:300], atol=2e-3 * ref.max())


def test_shift_is_smooth():
    """Second differences of n_i(z - dz) in dz scale as h^2 (a smooth function of dz)."""
    bins = TomographicBins(ISTF_PARENT, np.array([0.5, 1.0]), ISTF_PHOTOZ, Z)
    f = lambda d: bins.nz(np.array([d]))[0]  # noqa: E731
    d2 = [np.abs(f(h) - 2 * f(0.0) + f(-h)).max() for h in (1e-2, 5e-3)]
    assert d2[0] / d2[1] == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("0 1 2\n1 2 3\n2 3 4\n3 4 5\n", "two columns"),
        ("0 1\n1 x\n2 3\n3 4\n", "not a number"),
        ("0 1\n2 2\n1 3\n3 4\n", "strictly increasing"),
        ("0 1\n1 2\n", "at least 4 rows"),
        ("", "at least 4 rows"),
        ("0 1\n1 nan\n2 3\n3 4\n", "non-finite"),
    ],
)
def test_bad_tables_raise_file_format_error_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "bad_nz.dat"
    path.write_text(content)
    with pytest.raises(FileFormatError, match=needle) as exc:
        TabulatedNz.from_file(path)
    assert "bad_nz.dat" in str(exc.value)


def test_missing_table_and_negative_values(tmp_path):
    with pytest.raises(FileFormatError, match="nowhere.txt"):
        read_table(tmp_path / "nowhere.txt")
    path = tmp_path / "neg.txt"
    path.write_text("0 1\n1 -2\n2 3\n3 4\n")
    with pytest.raises(FileFormatError, match="neg.txt"):
        TabulatedNz.from_file(path)


def test_invalid_models_are_refused():
    with pytest.raises(InputError):
        SmailNz(z0=-1.0, alpha=2.0, beta=1.5)
    with pytest.raises(InputError):
        PhotoZModel(sigma_b=0.05, f_out=1.0)
    with pytest.raises(InputError):
        equipopulated_edges(ISTF_PARENT, 3, 1.0, 0.5)
    with pytest.raises(InputError):
        TomographicBins(ISTF_PARENT, np.array([1.0, 0.5]), ISTF_PHOTOZ, Z)
