"""Text import (IST:F / CosmicFish layout) and export (getdist, CosmoSIS, text)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fishcast.io import exchange as interop
from fishcast.errors import FileFormatError, InputError
from fishcast.fisher import FisherMatrix

# IST:F names as in the public Euclid IST:F Fisher matrices (Euclid Collaboration: Blanchard
# et al. 2020, fisher_for_public, WL w0wa flat); the matrix itself is a random SPD one here.
ISTF_NAMES = ["Omegam", "Omegab", "w0", "wa", "h", "ns", "sigma8", "aIA", "etaIA", "betaIA"]
ISTF_FID = [0.32, 0.05, -1.0, 0.0, 0.67, 0.96, 0.815584, 1.72, -0.41, 2.17]


def spd(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


@pytest.fixture
def istf(tmp_path):
    m = spd(len(ISTF_NAMES), 42)
    mat = tmp_path / "EuclidISTF_WL.txt"
    np.savetxt(mat, m, fmt="%.18e")
    pn = tmp_path / "EuclidISTF_WL.paramnames"
    pn.write_text("# CosmicFish layout: name    latex    fiducial\n" + "\n".join(
        f"{n}    \\mathrm{{{n}}} x    {f}" for n, f in zip(ISTF_NAMES, ISTF_FID)) + "\n")
    return mat, pn, m


def test_import_istf_with_paramnames(istf):
    mat, pn, m = istf
    f = interop.read_text_fisher(mat, pn)
    assert f.names == ("Omega_m", "Omega_b", "w0", "wa", "h", "n_s", "sigma8", "A_IA", "eta_IA", "beta_IA")
    np.testing.assert_array_equal(f.fiducial, ISTF_FID)
    np.testing.assert_array_equal(f.matrix, np.loadtxt(mat))
    np.testing.assert_allclose(f.marginalized_sigma(), np.sqrt(np.diag(np.linalg.inv(np.loadtxt(mat)))), rtol=1e-10)
    (step,) = f.provenance
    assert step["operation"] == "import" and len(step["sha256"]) == 64 and step["renamed"]["Omegam"] == "Omega_m"
    raw = interop.read_text_fisher(mat, pn, canonical=False)
    assert raw.names == tuple(ISTF_NAMES)


def test_paramnames_variants(tmp_path):
    p = tmp_path / "x.paramnames"
    p.write_text("omegabh2    \\Omega_b h^2    0.0226\nH0*  H_0\n\n# comment\ntau\n")
    assert interop.read_paramnames(p)[0] == ("omegabh2", r"\Omega_b h^2", 0.0226)
    name, latex, fid = interop.read_paramnames(p)[1]
    assert (name, latex) == ("H0", "H_0") and math.isnan(fid)
    assert interop.read_paramnames(p)[2][0] == "tau"


def test_import_header_names(tmp_path):
    p = tmp_path / "cf.dat"
    p.write_text("#\n# The parameters of this Fisher matrix are:\n#\n#    1    omegabh2\n#    2    ns\n#\n"
                 "4 1\n1 3\n")
    f = interop.read_text_fisher(p)
    assert f.names == ("ombh2", "n_s")


@pytest.mark.parametrize("content,match", [
    ("1 2\n3\n", "not a square"),
    ("1 2\n2 x\n", "not a row of numbers"),
    ("", "no matrix rows"),
])
def test_import_bad_matrix(tmp_path, content, match):
    p = tmp_path / "bad.txt"
    p.write_text(content)
    with pytest.raises(FileFormatError, match=match):
        interop.read_text_fisher(p, None)


def test_import_mismatch_and_missing(tmp_path, istf):
    mat, pn, _ = istf
    short = tmp_path / "short.paramnames"
    short.write_text("a\nb\n")
    with pytest.raises(FileFormatError, match="2 parameter names for a 10x10"):
        interop.read_text_fisher(mat, short)
    with pytest.raises(InputError, match="no such file"):
        interop.read_text_fisher(tmp_path / "nope.txt", pn)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe")
    with pytest.raises(FileFormatError, match="not a text file"):
        interop.read_text_fisher(binary, pn)
    with pytest.raises(FileFormatError, match="no parameter names"):
        interop.read_text_fisher(mat)


def test_text_export_round_trip(tmp_path, istf):
    mat, pn, _ = istf
    f = interop.read_text_fisher(mat, pn)
    paths = interop.export(f, "text", tmp_path / "out")
    assert [p.name for p in paths] == ["out.txt", "out.paramnames"]
    g = interop.read_text_fisher(paths[0], paths[1])
    assert g.names == f.names
    np.testing.assert_array_equal(g.matrix, f.matrix)
    np.testing.assert_array_equal(g.fiducial, f.fiducial)


def test_getdist_export_layout(tmp_path):
    f = FisherMatrix(spd(3, 1), ["Omega_m", "sigma8", "m_1"], [0.3, 0.8, 0.0])
    paths = interop.export(f, "getdist", tmp_path / "gd")
    pn, cov, fish = paths
    assert pn.read_text().splitlines() == ["Omega_m\t\\Omega_{\\rm m}", "sigma8\t\\sigma_8", "m_1\tm_{1}"]
    lines = cov.read_text().splitlines()
    assert lines[0] == "# Omega_m sigma8 m_1"  # getdist CovMat / Planck .covmat header
    np.testing.assert_allclose(np.loadtxt(cov), np.linalg.inv(f.matrix), rtol=1e-12)
    np.testing.assert_array_equal(np.loadtxt(fish), f.matrix)


def test_cosmosis_export_layout(tmp_path):
    f = FisherMatrix(spd(3, 2), ["Omega_m", "h", "A_IA"], [0.3, 0.7, 1.72])
    (p,) = interop.export(f, "cosmosis", tmp_path / "cs")
    lines = p.read_text().splitlines()
    assert lines[0] == "#cosmological_parameters--omega_m\tcosmological_parameters--h0\tintrinsic_alignment_parameters--a"
    assert "## omega_m = 0.3" in lines
    np.testing.assert_array_equal(np.loadtxt(p, comments="#"), f.matrix)


def test_export_unknown_format(tmp_path):
    with pytest.raises(InputError, match="unknown export format"):
        interop.export(FisherMatrix(np.eye(1), ["a"]), "fits", tmp_path / "x")
