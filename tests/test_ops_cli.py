"""The forecast-handling commands (show, combine, prior, fix, marginalize, derive, compare,
plot, export, import) through click's CliRunner, plus one call of the installed script."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fishcast import io as fio
from fishcast.cli.main import cli
from fishcast.fisher import FisherMatrix

NAMES = ["Omega_m", "sigma8", "h", "w0", "wa"]
FID = [0.32, 0.815583, 0.67, -1.0, 0.0]


def spd(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def write(path, matrix, names=NAMES, fid=FID, **meta):
    fio.write_fisher_file(path, FisherMatrix(matrix, names, fid), meta=meta)
    return path


def show_json(path, *extra):
    r = run("show", path, "--format", "json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


@pytest.fixture
def a_h5(tmp_path):
    return write(tmp_path / "a.h5", spd(5, 1))


def test_import_istf_text_show_matches_numpy(tmp_path):
    # IST:F-style text matrix (names as in the public Euclid IST:F WL Fisher matrices).
    names = ["Omegam", "Omegab", "w0", "wa", "h", "ns", "sigma8", "aIA", "etaIA", "betaIA"]
    fid = [0.32, 0.05, -1.0, 0.0, 0.67, 0.96, 0.815584, 1.72, -0.41, 2.17]
    m = spd(10, 7)
    txt = tmp_path / "EuclidISTF_WL.txt"
    np.savetxt(txt, m)
    pn = tmp_path / "EuclidISTF_WL.paramnames"
    pn.write_text("".join(f"{n}    {n}    {v}\n" for n, v in zip(names, fid)))
    out = tmp_path / "istf.h5"
    r = run("import", txt, "--paramnames", pn, "-o", out)
    assert r.exit_code == 0, r.output
    doc = show_json(out)
    direct = np.sqrt(np.diag(np.linalg.inv(np.loadtxt(txt))))
    got = np.array([p["sigma_marginalized"] for p in doc["parameters"]])
    np.testing.assert_allclose(got, direct, rtol=1e-10)
    assert [p["name"] for p in doc["parameters"]][:2] == ["Omega_m", "Omega_b"]
    cov = np.linalg.inv(np.loadtxt(txt))[2:4, 2:4]
    assert doc["fom_w0_wa"] == pytest.approx(1 / math.sqrt(np.linalg.det(cov)), rel=1e-10)
    # The import is recorded with the text files' hashes.
    with h5py.File(out) as f:
        prov = json.loads(f.attrs["provenance"])
    assert prov[0]["sha256"] == hashlib.sha256(txt.read_bytes()).hexdigest()


def test_show_table_lists_everything(a_h5):
    r = run("show", a_h5)
    assert r.exit_code == 0
    cov = np.linalg.inv(spd(5, 1))
    for i, name in enumerate(NAMES):
        line = next(l for l in r.output.splitlines() if l.startswith(name + " "))
        assert f"{math.sqrt(cov[i, i]):.4g}" in line
        assert f"{1 / math.sqrt(spd(5, 1)[i, i]):.4g}" in line
    assert "FoM(w0, wa) = " in r.output and "trust: ok" in r.output
    # Relative error of sigma8: sigma / fiducial, in percent.
    assert f"{100 * math.sqrt(cov[1, 1]) / FID[1]:.3g}%" in r.output
    # Any pair's DETF figure of merit: 1/sqrt(det Cov_ab).
    r = run("show", a_h5, "--fom", "Omega_m,sigma8")
    det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
    assert f"FoM(Omega_m, sigma8) = {1 / math.sqrt(det):.4g}" in r.output
    assert run("show", a_h5, "--fom", "Omega_m").exit_code == 2
    assert run("show", a_h5, "--fom", "Omega_m,S8").exit_code == 2
    r = run("show", a_h5, "--params", "sigma8", "--format", "latex")
    assert r.exit_code == 0 and r"\sigma_8" in r.output and r"\begin{tabular}" in r.output


def test_show_warns_when_not_trusted(tmp_path):
    p = write(tmp_path / "w.h5", spd(5, 1), trust="fail", trust_reasons=["wa: no plateau in the step sweep"])
    r = run("show", p)
    assert r.exit_code == 0
    assert "WARNING: stability verdict FAIL" in r.output and "wa: no plateau" in r.output
    assert show_json(p)["trust"] == "fail"


def test_show_degenerate_exits_3_and_names_parameters(tmp_path):
    v = np.array([1.0, 2.0, 0, 0, 0])
    m = np.outer(v, v) + np.diag([0, 0, 1.0, 1.0, 1.0])
    r = run("show", write(tmp_path / "d.h5", m))
    assert r.exit_code == 3
    assert "Omega_m" in r.output and "sigma8" in r.output and "cannot be inverted" in r.output


def test_bad_inputs_exit_2(tmp_path, a_h5):
    txt = tmp_path / "x.txt"
    txt.write_text("not hdf5\n")
    nofisher = tmp_path / "nofisher.h5"
    with h5py.File(nofisher, "w") as f:
        f.attrs["schema_version"] = "1.0"
    for args in (["show", tmp_path / "missing.h5"], ["show", txt], ["show", nofisher],
                 ["show", a_h5, "--params", "Omega_x"], ["fix", a_h5, "--params", "Omega_x", "-o", tmp_path / "o.h5"],
                 ["prior", a_h5, "--gaussian", "h=-1", "-o", tmp_path / "o.h5"],
                 ["prior", a_h5, "--gaussian", "h", "-o", tmp_path / "o.h5"],
                 ["combine", a_h5, tmp_path / "missing.h5", "-o", tmp_path / "o.h5"],
                 ["derive", a_h5, "--to", "S9", "-o", tmp_path / "o.h5"],
                 ["marginalize", a_h5, "--keep", "w0", "-o", tmp_path / "nodir" / "o.h5"],
                 ["import", txt, "-o", tmp_path / "o.h5"]):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "o.h5").exists()


def test_combine_prior_fix_marginalize(tmp_path, a_h5):
    F = spd(5, 1)
    out = tmp_path / "c.h5"
    assert run("combine", a_h5, a_h5, "-o", out).exit_code == 0
    fc, meta = fio.read_fisher(out)
    np.testing.assert_allclose(fc.covariance(), np.linalg.inv(F) / 2, rtol=1e-10)
    step = meta["provenance"][-1]
    assert step["operation"] == "combine"
    assert step["inputs"][0][-1]["sha256"] == hashlib.sha256(Path(a_h5).read_bytes()).hexdigest()

    # Disjoint parameters: block-diagonal union, reported.
    b = write(tmp_path / "b.h5", spd(2, 2), names=["A_IA", "eta_IA"], fid=[1.72, -0.41])
    r = run("combine", a_h5, b, "-o", out)
    assert r.exit_code == 0 and "A_IA" in r.output
    fc, _ = fio.read_fisher(out)
    assert fc.names == tuple(NAMES + ["A_IA", "eta_IA"])
    np.testing.assert_array_equal(fc.matrix[:5, 5:], 0.0)

    # Different fiducials: refused, naming the parameter and both values; --force combines.
    shifted = write(tmp_path / "s.h5", F, fid=[0.31] + FID[1:])
    r = run("combine", a_h5, shifted, "-o", out)
    assert r.exit_code == 2 and "Omega_m" in r.output and "0.32" in r.output and "0.31" in r.output
    assert run("combine", a_h5, shifted, "-o", out, "--force").exit_code == 0

    assert run("prior", a_h5, "--gaussian", "h=0.01", "--gaussian", "wa=0.5", "-o", out).exit_code == 0
    expected = F.copy()
    expected[2, 2] += 1e4
    expected[4, 4] += 4.0
    np.testing.assert_allclose(fio.read_fisher(out)[0].matrix, expected, rtol=1e-12)

    assert run("fix", a_h5, "--params", "wa,h", "-o", out).exit_code == 0
    ff, _ = fio.read_fisher(out)
    assert ff.names == ("Omega_m", "sigma8", "w0")
    np.testing.assert_array_equal(ff.matrix, F[np.ix_([0, 1, 3], [0, 1, 3])])

    assert run("marginalize", a_h5, "--keep", "w0,wa", "-o", out).exit_code == 0
    fm, _ = fio.read_fisher(out)
    np.testing.assert_allclose(fm.matrix, np.linalg.inv(np.linalg.inv(F)[3:, 3:]), rtol=1e-10)


def test_derive_S8_matches_hand_built_jacobian(tmp_path, a_h5):
    out = tmp_path / "s8.h5"
    assert run("derive", a_h5, "--to", "S8", "-o", out).exit_code == 0
    fd, _ = fio.read_fisher(out)
    om, s8 = FID[0], FID[1]
    S8 = s8 * math.sqrt(om / 0.3)
    # Old parameters per new (Omega_m, S8, h, w0, wa): sigma8 = S8 sqrt(0.3 / Omega_m).
    J = np.eye(5)
    J[1, 1] = math.sqrt(0.3 / om)
    J[1, 0] = -0.5 * S8 * math.sqrt(0.3) * om**-1.5
    F = spd(5, 1)
    assert fd.names == ("Omega_m", "S8", "h", "w0", "wa")
    assert fd.fiducial_of("S8") == pytest.approx(S8, rel=1e-14)
    np.testing.assert_allclose(fd.matrix, J.T @ F @ J, rtol=1e-10)


def test_compare_exit_codes_and_names_the_parameter(tmp_path):
    # wa uncorrelated with the rest, so that perturbing its information moves only its errors.
    F = spd(5, 3)
    F[4, :4] = F[:4, 4] = 0.0
    a = write(tmp_path / "a.h5", F)
    same = write(tmp_path / "same.h5", F)
    Fp = F.copy()
    Fp[4, 4] *= 1.05  # sigma(wa) changes by 2.4%
    pert = write(tmp_path / "pert.h5", Fp)

    r = run("compare", a, same, "--rtol", "1e-6")
    assert r.exit_code == 0, r.output
    assert "agree" in r.output
    r = run("compare", a, pert, "--rtol", "0.01")
    assert r.exit_code == 1
    diff_lines = [l for l in r.output.splitlines() if l.startswith(("marginalized_sigma", "conditional_sigma", "fom"))]
    assert diff_lines and all(" wa " in l or "w0-wa" in l for l in diff_lines)
    assert any(l.startswith("marginalized_sigma") and " wa " in l for l in diff_lines)
    # Within a looser tolerance: agree.
    assert run("compare", a, pert, "--rtol", "0.05").exit_code == 0
    assert run("compare", a, pert, "--atol", "1.0").exit_code == 0
    # On the Fisher matrix: the one element.
    r = run("compare", a, pert, "--on", "fisher", "--rtol", "0.01")
    assert r.exit_code == 1 and "F[wa,wa]" in r.output and "F[w0,w0]" not in r.output
    # Bad input.
    assert run("compare", a, tmp_path / "missing.h5").exit_code == 2
    assert run("compare", a, same, "--on", "data").exit_code == 2  # Fisher-only files have no /data


def test_compare_on_data(tmp_path, a_h5):
    paths = []
    for k, scale in enumerate((1.0, 1.0, 1.2)):
        p = tmp_path / f"d{k}.h5"
        write(p, spd(5, 1))
        with h5py.File(p, "a") as f:
            cl = np.arange(1.0, 13.0).reshape(3, 2, 2)
            cl[1, 0, 1] *= scale
            f.create_dataset("data/weak_lensing/cl", data=cl)
        paths.append(p)
    assert run("compare", paths[0], paths[1], "--on", "data").exit_code == 0
    r = run("compare", paths[0], paths[2], "--on", "data", "--rtol", "0.01")
    assert r.exit_code == 1 and "weak_lensing/cl[1,0,1]" in r.output


def test_plot_and_export(tmp_path, a_h5):
    b = write(tmp_path / "b.h5", spd(5, 1) * 4)
    for ext in ("pdf", "png"):
        out = tmp_path / f"t.{ext}"
        r = run("plot", a_h5, b, "-o", out, "--params", "Omega_m,w0,wa")
        assert r.exit_code == 0, r.output
        assert out.stat().st_size > 1000
    assert run("plot", a_h5, "-o", tmp_path / "t.png", "--params", "nope").exit_code == 2
    r = run("export", a_h5, "--to", "getdist", "-o", tmp_path / "gd")
    assert r.exit_code == 0
    cov = np.loadtxt(tmp_path / "gd.covmat")
    np.testing.assert_allclose(cov, np.linalg.inv(spd(5, 1)), rtol=1e-12)
    assert (tmp_path / "gd.covmat").read_text().splitlines()[0] == "# " + " ".join(NAMES)
    r = run("export", a_h5, "--to", "cosmosis", "-o", tmp_path / "cs")
    assert r.exit_code == 0 and (tmp_path / "cs.txt").read_text().startswith("#cosmological_parameters--omega_m\t")
    r = run("export", a_h5, "--to", "text", "-o", tmp_path / "tx")
    assert r.exit_code == 0
    # Text export re-imports to the same matrix.
    assert run("import", tmp_path / "tx.txt", "--paramnames", tmp_path / "tx.paramnames",
               "-o", tmp_path / "back.h5").exit_code == 0
    np.testing.assert_array_equal(fio.read_fisher(tmp_path / "back.h5")[0].matrix, spd(5, 1))


def test_console_script_entry_point(a_h5):
    exe = Path(sys.executable).with_name("fishcast")
    if not exe.exists():
        pytest.skip("fishcast console script not installed next to this interpreter")
    r = subprocess.run([str(exe), "show", str(a_h5), "--params", "w0,wa"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "FoM(w0, wa)" in r.stdout
    r = subprocess.run([str(exe), "show", str(a_h5) + ".missing"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file" in r.stderr
