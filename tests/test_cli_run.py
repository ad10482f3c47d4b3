"""`fishcast run / validate / schema / show` end to end, the HDF5 file contract, bad input,
and a kill during the write (issue: weak-lensing forecast end to end)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from fishcast.cli.main import cli

SMALL = textwrap.dedent("""\
    name: small-wl
    cosmology:
      nonlinear_model: takahashi
      accuracy: {k_max: 10, n_k: 200, n_z: 60}
    parameters:
      fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.815583, A_IA: 1.72, eta_IA: -0.41}
      free: [Omega_m, sigma8, A_IA, "m_*"]
      fixed: [h]
      priors: {"m_*": 0.01}
    derivatives: {mode: fixed}
    diagnostics: {gaussian_check: false}
    probes:
      weak_lensing:
        f_sky: 0.3636
        ell: {min: 10, max: 1500, n_bands: 12}
        n_gal: 30
        shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
        nz: {type: smail, z0: 0.6363961031, alpha: 2.0, beta: 1.5}
        bins: {type: equipopulated, n_bins: 3, z_min: 0.001, z_max: 2.5}
        photoz: {c_b: 1.0, z_b: 0.0, sigma_b: 0.05, c_o: 1.0, z_o: 0.1, sigma_o: 0.05, f_out: 0.1}
        intrinsic_alignment: {model: nla}
        shear_bias: true
        integration: {z_max: 3.0, n_z: 121}
    """)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cache_dir):
    d = tmp_path_factory.mktemp("run")
    (d / "small.yaml").write_text(SMALL)
    out = d / "small.h5"
    res = CliRunner().invoke(cli, ["run", str(d / "small.yaml"), "-o", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    return d, out, res.output


def test_run_prints_constraints_and_stability(small_run):
    _, _, output = small_run
    for word in ("Omega_m", "sigma8", "A_IA", "m_1", "sigma_marg", "Fisher matrix conditioning", "trust: ok"):
        assert word in output


def test_file_contract(small_run):
    _, out, _ = small_run
    with h5py.File(out, "r") as f:
        for attr in ("schema_version", "fishcast_version", "camb_version", "nonlinear_model", "input_yaml", "input_sha256"):
            assert attr in f.attrs, attr
        assert f.attrs["nonlinear_model"] == "takahashi"
        assert f.attrs["input_yaml"] == SMALL
        import hashlib

        assert f.attrs["input_sha256"] == hashlib.sha256(SMALL.encode()).hexdigest()
        # every model parameter, free or fixed, in /fiducial
        for name, value in {"Omega_m": 0.32, "h": 0.67, "m_nu": 0.06, "w0": -1.0, "m_2": 0.0}.items():
            assert f["fiducial"].attrs[name] == pytest.approx(value)
        names = [s.decode() for s in f["parameters/names"][()]]
        assert names == ["Omega_m", "sigma8", "A_IA", "m_1", "m_2", "m_3"]
        n = len(names)
        assert f["fisher/matrix"].shape == (n, n)
        assert f["fisher/probes/weak_lensing/matrix"].shape == (n, n)
        # combined = probe + priors (1/0.01^2 on the m_i)
        diff = f["fisher/matrix"][()] - f["fisher/probes/weak_lensing/matrix"][()]
        assert np.allclose(np.diag(diff), [0, 0, 0, 1e4, 1e4, 1e4])
        cov = f["constraints/covariance"][()]
        assert np.allclose(cov @ f["fisher/matrix"][()], np.eye(n), atol=1e-8)
        assert np.allclose(f["constraints/marginalized_sigma"][()], np.sqrt(np.diag(cov)))
        assert np.allclose(f["constraints/conditional_sigma"][()], 1 / np.sqrt(np.diag(f["fisher/matrix"][()])))
        wl = f["data/weak_lensing"]
        ell, cl, noise = wl["ell"][()], wl["cl"][()], wl["noise"][()]
        assert ell.shape == (12,) and np.all(np.diff(ell) > 0) and 10 < ell[0] < ell[-1] < 1500
        assert cl.shape == (12, 3, 3) and noise.shape == (3, 3)
        assert np.allclose(cl, np.transpose(cl, (0, 2, 1)))
        # noise 0.3^2 / n_i with n_i = 10 arcmin^-2 in sr^-1 (1 arcmin^-2 = (180*60/pi)^2 sr^-1)
        assert noise[0, 0] == pytest.approx(0.09 / (10 * (180 * 60 / np.pi) ** 2), rel=1e-10)
        z, nz = wl["z"][()], wl["nz"][()]
        assert nz.shape == (3, z.size)
        assert np.allclose(np.trapezoid(nz, z, axis=1), 1.0, rtol=2e-3)
        for ds in ("ell", "cl", "noise", "z", "nz"):
            assert "units" in wl[ds].attrs, ds
        assert "derivatives" in f and "diagnostics" in f
        assert f.attrs["trust"] == "ok"


def test_show_reads_the_file(small_run):
    _, out, _ = small_run
    res = CliRunner().invoke(cli, ["show", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    with h5py.File(out, "r") as f:
        sig = f["constraints/marginalized_sigma"][()]
    assert [p["sigma_marginalized"] for p in doc["parameters"]] == pytest.approx(list(sig))


def _count_opens(monkeypatch) -> list:
    """Every opening of a fishcast file for reading (``fishcast.io.hdf5._open``: the HDF5
    open and the walk of its structure, ~0.05 s on the Euclid WL file) is recorded."""
    from fishcast.io import hdf5

    opened = []
    real = hdf5._open

    def counting(path):
        opened.append(str(path))
        return real(path)

    monkeypatch.setattr(hdf5, "_open", counting)
    return opened


def test_run_and_show_open_the_output_once(small_run, cache_dir, tmp_path, monkeypatch):
    """The summary `fishcast run` prints (and `fishcast show`, table and json) reads the
    constraints, the multi-tracer and the spectra comparisons in one opening of the file
    (it was three: one per reader), and prints the same text as `fishcast show`."""
    d, _, _ = small_run
    opened = _count_opens(monkeypatch)
    out = tmp_path / "once.h5"
    res = CliRunner().invoke(cli, ["run", str(d / "small.yaml"), "-o", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    assert opened == [str(out)]
    for fmt in ("table", "json"):
        opened.clear()
        shown = CliRunner().invoke(cli, ["show", str(out), "--format", fmt])
        assert shown.exit_code == 0, shown.output
        assert opened == [str(out)], fmt
        if fmt == "table":
            assert shown.output.strip() in res.output


def test_second_run_uses_the_cache_and_gives_the_same_matrix(small_run, cache_dir, tmp_path):
    d, out, _ = small_run
    from fishcast import cosmology

    before = cosmology.boltzmann_calls()
    out2 = tmp_path / "again.h5"
    res = CliRunner().invoke(cli, ["run", str(d / "small.yaml"), "-o", str(out2), "--cache-dir", str(cache_dir), "-q"])
    assert res.exit_code == 0, res.output
    assert cosmology.boltzmann_calls() == before
    with h5py.File(out, "r") as a, h5py.File(out2, "r") as b:
        assert np.array_equal(a["fisher/matrix"][()], b["fisher/matrix"][()])


def test_version_and_help_on_every_command():
    runner = CliRunner()
    res = runner.invoke(cli, ["--version"])
    assert res.exit_code == 0 and "fishcast" in res.output
    for name, command in cli.commands.items():
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, name
        assert "Usage" in res.output


def test_schema_is_json_schema():
    res = CliRunner().invoke(cli, ["schema"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert "probes" in doc["properties"] and "parameters" in doc["required"]


def _mutate(text: str, path: tuple, value=None, delete=False) -> str:
    data = yaml.safe_load(text)
    node = data
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


BAD = {
    "missing key": (lambda: _mutate(SMALL, ("probes", "weak_lensing", "n_gal"), delete=True), "n_gal"),
    "wrong type": (lambda: _mutate(SMALL, ("probes", "weak_lensing", "f_sky"), "a lot"), "f_sky"),
    "negative density": (lambda: _mutate(SMALL, ("probes", "weak_lensing", "n_gal"), -30), "n_gal"),
    "f_sky above 1": (lambda: _mutate(SMALL, ("probes", "weak_lensing", "f_sky"), 1.2), "f_sky"),
    "unknown key": (lambda: SMALL.replace("n_gal: 30", "n_gal: 30\n    n_gals: 31"), "n_gals"),
    "free and fixed": (lambda: SMALL.replace("fixed: [h]", "fixed: [h, sigma8]"), "both free and fixed"),
    "unknown parameter": (lambda: SMALL.replace("free: [Omega_m,", "free: [Omega_mm,"), "Omega_m"),
    "beta_IA without table": (lambda: SMALL.replace("free: [Omega_m,", "free: [beta_IA, Omega_m,"), "luminosity_ratio_file"),
    "empty file": (lambda: "", "empty"),
    "not YAML": (lambda: "name: [unclosed\n  : :\n", "not valid YAML"),
    "python tag": (lambda: SMALL.replace("name: small-wl", "name: !!python/object/apply:os.system ['echo hacked']"), "not allowed"),
    "duplicate key": (lambda: SMALL.replace("n_gal: 30", "n_gal: 30\n    n_gal: 31"), "duplicate"),
    "binary file": (lambda: b"\x89HDF\r\n\x1a\n\x00\x00\xff", "not a text"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_a_located_message(case, tmp_path):
    make, expect = BAD[case]
    content = make()
    survey = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        survey.write_bytes(content)
    else:
        survey.write_text(content)
    out = tmp_path / "out.h5"
    res = CliRunner().invoke(cli, ["run", str(survey), "-o", str(out), "--no-cache", "-q"])
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit)  # no uncaught exception, hence no traceback
    assert "Traceback" not in res.output
    assert str(survey) in res.output and expect in res.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [survey]


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    survey = tmp_path / "bad.yaml"
    survey.write_text(SMALL.replace("f_sky: 0.3636", "f_sky: 2"))
    exe = pathlib.Path(sys.executable).with_name("fishcast")
    proc = subprocess.run([str(exe), "run", str(survey), "-o", str(tmp_path / "o.h5")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    line = SMALL.splitlines().index("    f_sky: 0.3636") + 1
    assert f"{survey}:{line}: probes.weak_lensing.f_sky" in proc.stderr


def test_output_folder_missing_is_bad_input_before_any_computation(tmp_path):
    survey = tmp_path / "s.yaml"
    survey.write_text(SMALL)
    res = CliRunner().invoke(cli, ["run", str(survey), "-o", str(tmp_path / "nope" / "o.h5"), "--no-cache"])
    assert res.exit_code == 2
    assert "does not exist" in res.output


KILL_SCRIPT = """
import sys, time
import numpy as np
from fishcast.io import atomic_h5
with atomic_h5(sys.argv[1]) as f:
    f.create_dataset("big", data=np.zeros(1000))
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_run_killed_during_the_write_leaves_no_file(tmp_path):
    out = tmp_path / "out.h5"
    out.write_bytes(b"previous result")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert out.read_bytes() == b"previous result"  # the old file is untouched
    out.unlink()
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists()


def test_an_error_during_the_write_removes_the_temporary_file(tmp_path, monkeypatch):
    from fishcast import io as fio

    out = tmp_path / "o.h5"
    with pytest.raises(RuntimeError):
        with fio.atomic_h5(out) as f:
            f.create_dataset("x", data=[1.0])
            raise RuntimeError("disk full (simulated)")
    assert list(tmp_path.iterdir()) == []


def test_derived_files_keep_every_fiducial_and_the_provenance(small_run, tmp_path):
    _, out, _ = small_run
    fixed = tmp_path / "fixed.h5"
    res = CliRunner().invoke(cli, ["fix", str(out), "--params", "A_IA", "-o", str(fixed)])
    assert res.exit_code == 0, res.output
    with h5py.File(fixed, "r") as f:
        assert f["fiducial"].attrs["m_nu"] == pytest.approx(0.06)  # fixed in the survey
        assert f["fiducial"].attrs["A_IA"] == pytest.approx(1.72)  # fixed by the operation
        ops = [step["operation"] for step in json.loads(f.attrs["provenance"])]
        assert "forecast" in ops and "read" in ops and any("fix" in o for o in ops)


@pytest.mark.parametrize("block, key, line_offset", [
    ("derivatives:\n  mode: adaptive\n  start_rungs: 7\n", "derivatives.start_rungs", 2),
    ("derivatives:\n  mode: sweep\n  tol_warn: 1.0e-4\n  tol_pass: 2.0e-3\n", "derivatives.tol_warn", 2),
])
def test_a_check_across_keys_is_located_at_the_key_it_names(block, key, line_offset, tmp_path):
    """A model-level check (two keys of one mapping compared) names the first key in its
    message: the error is located at that key's own line, not at the mapping's."""
    text = SMALL.replace("derivatives: {mode: fixed}\n", "")
    assert text != SMALL
    lines = text.splitlines()
    start = len(lines) + 1  # the block starts on the line after the last
    survey = tmp_path / "bad.yaml"
    survey.write_text(text + ("\n" if not text.endswith("\n") else "") + block)
    res = CliRunner().invoke(cli, ["run", str(survey), "-o", str(tmp_path / "o.h5"), "--no-cache", "-q"])
    assert res.exit_code == 2, res.output
    assert f"{survey}:{start + line_offset}: {key}:" in res.output, res.output


@pytest.mark.parametrize("block, where, expect", [
    ("derivatives:\n  mode: sweep\n  parameters:\n    sigma8: {n_rungs: 2}\n",
     (3, "derivatives.parameters.sigma8.n_rungs"), "must be >= window"),
    ("derivatives:\n  mode: sweep\n  parameters:\n    sigma8:\n      lower: 0.81\n      upper: 0.82\n",
     (3, "derivatives.parameters.sigma8"), "no stencil"),
    ("derivatives:\n  mode: sweep\n  parameters:\n    Omega_m:\n      lower: 0.33\n",
     (None, "parameters.fiducial.Omega_m"), "outside its physical domain [0.33, inf)"),
])
def test_a_ladder_the_file_cannot_have_is_refused_at_load_with_its_line(block, where, expect, tmp_path):
    """A per-parameter derivative setting that no ladder can satisfy (too few rungs for the
    window, a domain narrower than the step, a fiducial outside a narrowed domain) is found
    when the file is read, located at the key (was: an unlocated message once the run had
    started)."""
    text = SMALL.replace("derivatives: {mode: fixed}\n", "")
    start = len(text.splitlines()) + 1
    survey = tmp_path / "bad.yaml"
    survey.write_text(text + block)
    res = CliRunner().invoke(cli, ["run", str(survey), "-o", str(tmp_path / "o.h5"), "--no-cache", "-q"])
    assert res.exit_code == 2, res.output
    offset, key = where
    line = start + offset if offset is not None else SMALL.splitlines().index(
        next(ln for ln in SMALL.splitlines() if ln.lstrip().startswith("fiducial:"))) + 1
    assert f"{survey}:{line}: {key}:" in res.output and expect in res.output, res.output
    assert not (tmp_path / "o.h5").exists()
