"""Batch survey planning: one cosmology evaluation per distinct point over a whole grid,
the same Fisher matrices bit for bit on every backend, resuming a killed batch from the
cache, and a bad design failing alone.

CAMB costs ~0.5-2 s per Boltzmann run here, so every test uses one tiny survey (3 free
parameters, fixed 3-point steps: 5 cosmology points, 3 Boltzmann runs) and the expensive
runs are session fixtures.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fishcast import cosmology as _cosmo
from fishcast.pipeline.batch import AxisSpec, load_grid, plan_batch, run_batch
from fishcast.pipeline.cache import Cache
from fishcast.errors import InputError, SurveyError
from fishcast.pipeline.execute import ProcessExecutor, SerialExecutor, Task
from fishcast.io import read_fisher

BASE = """\
name: tiny-wl
cosmology:
  nonlinear_model: takahashi
  accuracy: {k_max: 10, n_k: 200, n_z: 60}
parameters:
  fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.815583, A_IA: 1.72, eta_IA: -0.41}
  free: [Omega_m, sigma8, A_IA]
derivatives: {mode: fixed, stencil: 3-point}
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
    integration: {z_max: 3.0, n_z: 101}
"""


def grid_text(f_sky, n_gal=(10, 30), ell_max=(1000, 1500), name="grid"):
    return f"""\
name: {name}
survey: base.yaml
figure_of_merit: [Omega_m, sigma8]
axes:
  probes.weak_lensing.f_sky: {list(f_sky)}
  probes.weak_lensing.n_gal: {list(n_gal)}
  probes.weak_lensing.ell.max: {list(ell_max)}
"""


GRID20 = grid_text([0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    (d / "base.yaml").write_text(BASE)
    (d / "grid20.yaml").write_text(GRID20)
    return d


@pytest.fixture(scope="session")
def serial(folder):
    """One design alone (no cache), then the 20-design grid serially with a fresh cache."""
    from fishcast.pipeline.forecast import run_forecast
    from fishcast.survey import load_survey

    grid = load_grid(folder / "grid20.yaml")
    one = run_forecast(load_survey(folder / "base.yaml", grid.designs[0].overrides), cache=None)
    cache = Cache(folder / "cache-serial")
    before = _cosmo.boltzmann_calls()
    res = run_batch(grid, folder / "serial", executor=SerialExecutor(), cache=cache)
    counted = _cosmo.boltzmann_calls() - before
    return {"one": one, "res": res, "counted": counted, "cache": cache}


# ------------------------------------------------------------------------- grid files
def test_grid_designs_named_from_axis_values(folder):
    grid = load_grid(folder / "grid20.yaml")
    assert len(grid.designs) == 20
    assert grid.labels == ("f_sky", "n_gal", "ell_max")
    assert grid.designs[0].name == "f_sky=0.1__n_gal=10__ell_max=1000"
    assert grid.designs[-1].overrides == {"probes.weak_lensing.f_sky": 0.5, "probes.weak_lensing.n_gal": 30,
                                          "probes.weak_lensing.ell.max": 1500}


def test_ranges_and_zip(folder):
    assert AxisSpec(start=10, stop=40, num=4).expand() == [10, 20, 30, 40]
    assert AxisSpec(start=0.1, stop=0.5, step=0.1).expand() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert AxisSpec(start=100, stop=10000, num=3, spacing="log").expand() == [100, 1000, 10000]
    (folder / "zip.yaml").write_text("name: z\nsurvey: base.yaml\ncombine: zip\naxes:\n"
                                     "  probes.weak_lensing.f_sky: [0.1, 0.2]\n"
                                     "  probes.weak_lensing.n_gal: {start: 10, stop: 20, num: 2, label: depth}\n")
    g = load_grid(folder / "zip.yaml")
    assert [d.name for d in g.designs] == ["f_sky=0.1__depth=10", "f_sky=0.2__depth=20"]
    # list values (a density per shell) address list items by index and join in names
    (folder / "lists.yaml").write_text("name: l\nsurvey: base.yaml\naxes:\n"
                                       "  probes.counts_in_cells.tracers.1.density.values: [[1.0e-4, 2.0e-4], [3.0e-4, 4.0e-4]]\n")
    g = load_grid(folder / "lists.yaml")
    assert [d.name for d in g.designs] == ["tracers_1_density_values=0.0001_0.0002",
                                           "tracers_1_density_values=0.0003_0.0004"]
    assert g.designs[1].overrides == {"probes.counts_in_cells.tracers.1.density.values": [3.0e-4, 4.0e-4]}


@pytest.mark.parametrize("text, line, key, words", [
    ("name: g\nsurvey: base.yaml\naxis:\n  a.b: [1]\n", 3, "axis", "unknown key"),
    ("name: g\nsurvey: base.yaml\ncombine: zip\naxes:\n  probes.weak_lensing.f_sky: [0.1, 0.2]\n"
     "  probes.weak_lensing.n_gal: [10]\n", 3, "combine", "equal length"),
    ("name: g\nsurvey: nowhere.yaml\naxes:\n  probes.weak_lensing.f_sky: [0.1]\n", 2, "survey", "does not exist"),
    ("name: g\nsurvey: base.yaml\naxes:\n  probes.weak_lensing.f_sky: {start: 0.1, stop: 0.2}\n", 4,
     "axes.probes.weak_lensing.f_sky", "num and step"),
])
def test_grid_errors_name_file_line_key(folder, text, line, key, words):
    p = folder / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SurveyError) as exc:
        load_grid(p)
    msg = str(exc.value)
    assert f"{p}:{line}: {key}" in msg and words in msg, msg


# ------------------------------------------------------------------------- planning once
def test_twenty_designs_cost_one_design(serial):
    """20 designs differing only in f_sky, n_gal, ell_max make exactly the Boltzmann runs
    of one design: counted in this process and summed over the tasks."""
    one, res = serial["one"], serial["res"]
    assert not res.failed and len(res.designs) == 20
    assert one.camb_calls == 3  # fiducial (+ sigma8 +- sharing its transfer run), Omega_m +-
    assert serial["counted"] == one.camb_calls
    assert res.stats.boltzmann_calls == one.camb_calls
    assert res.stats.points == one.n_points == 5
    assert res.stats.computed == 5 and res.stats.cache_hits == 0


def test_fom_scales_as_sky_fraction(serial):
    """Knox covariance ~ 1/f_sky, no priors: F ~ f_sky, so marginalized errors scale as
    f_sky^-1/2 and the figure of merit of a pair (1/sqrt(det C)) as f_sky (analytic)."""
    by = {d.name: d for d in serial["res"].designs}
    lo, hi = by["f_sky=0.1__n_gal=30__ell_max=1500"], by["f_sky=0.5__n_gal=30__ell_max=1500"]
    assert hi.fom / lo.fom == pytest.approx(5.0, rel=1e-9)
    for n in ("Omega_m", "sigma8", "A_IA"):
        assert lo.sigma[n] / hi.sigma[n] == pytest.approx(math.sqrt(5.0), rel=1e-9)
    # more galaxies and more multipoles never lose information
    assert by["f_sky=0.1__n_gal=30__ell_max=1500"].fom > by["f_sky=0.1__n_gal=10__ell_max=1500"].fom
    assert by["f_sky=0.1__n_gal=30__ell_max=1500"].fom > by["f_sky=0.1__n_gal=30__ell_max=1000"].fom


def test_outputs_and_summaries(serial):
    res = serial["res"]
    for d in res.designs:
        fisher, meta = read_fisher(d.path)
        assert np.array_equal(fisher.matrix, d.matrix)
        assert "probes.weak_lensing.f_sky" in meta["input_yaml"]
    lines = res.summary_csv.read_text().splitlines()
    assert lines[0].startswith("design,f_sky,n_gal,ell_max,status,file,trust,fom_Omega_m_sigma8,sigma_Omega_m")
    assert len(lines) == 21
    with h5py.File(res.summary_h5) as f:
        assert f.attrs["boltzmann_calls"] == 3 and f.attrs["n_failed"] == 0
        assert list(f["designs/values/f_sky"][:5]) == [0.1, 0.1, 0.1, 0.1, 0.2]
        names = [s.decode() for s in f["sigma/names"][()]]
        i = names.index("Omega_m")
        assert f["sigma/marginalized"][0, i] == res.designs[0].sigma["Omega_m"]
        assert f["designs/fom"][0] == res.designs[0].fom
    assert res.plot is not None and res.plot.stat().st_size > 0


# ------------------------------------------------------------------------- backends
def test_dask_local_cluster_bitwise_equal_to_serial(serial, folder):
    """A real LocalCluster with 2 worker processes (1 thread each; the serial run used CAMB's
    default threads in this process): every Fisher matrix equal bit for bit."""
    pytest.importorskip("distributed")
    from fishcast.pipeline.execute import DaskExecutor

    grid = load_grid(folder / "grid20.yaml")
    with DaskExecutor(cluster="local", workers=2) as ex:
        assert len(ex.client.scheduler_info()["workers"]) == 2
        res = run_batch(grid, folder / "dask", executor=ex, cache=Cache(folder / "cache-dask"), plot=False)
    assert not res.failed
    assert res.stats.computed == 5 and res.stats.boltzmann_calls == 3
    ref = {d.name: d for d in serial["res"].designs}
    for d in res.designs:
        a = read_fisher(d.path)[0].matrix
        b = read_fisher(ref[d.name].path)[0].matrix
        assert a.tobytes() == b.tobytes(), d.name


# ------------------------------------------------------------------------- kill and resume
def _entries(cache_dir: Path) -> int:
    return len(list(cache_dir.glob("*/*.npz"))) if cache_dir.exists() else 0


def test_killed_batch_resumes_from_cache(serial, folder):
    """SIGKILL to the process group of a running `fishcast batch` (its worker process too)
    once some evaluations are cached; the rerun reads every one of them, computes only the
    rest, and every output file is whole."""
    (folder / "grid4.yaml").write_text(grid_text([0.1, 0.5], n_gal=[30], ell_max=[1000, 1500]))
    cache_dir, out = folder / "cache-kill", folder / "kill"
    cmd = [sys.executable, "-c", "from fishcast.cli.main import main; main()", "batch", str(folder / "grid4.yaml"),
           "-o", str(out), "--cache-dir", str(cache_dir), "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _entries(cache_dir) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    cached = _entries(cache_dir)
    assert 1 <= cached < 5, "the kill must land half way"
    for f in out.glob("*.h5") if out.exists() else []:
        read_fisher(f)  # anything at an output name is whole

    cache = Cache(cache_dir)
    before = _cosmo.boltzmann_calls()
    res = run_batch(load_grid(folder / "grid4.yaml"), out, executor=SerialExecutor(), cache=cache, plot=False)
    assert not res.failed and len(res.designs) == 4
    assert res.stats.cache_hits == cached  # every cached evaluation reused
    assert res.stats.computed == 5 - cached
    assert cache.stats.damaged == 0
    assert _cosmo.boltzmann_calls() - before == res.stats.boltzmann_calls < 3 + 1
    ref = {d.name: d for d in serial["res"].designs}
    for f in sorted(out.glob("*.h5")):
        if f.name == "summary.h5":
            continue
        fisher, _ = read_fisher(f)
        assert fisher.matrix.tobytes() == read_fisher(ref[f.stem].path)[0].matrix.tobytes()
    assert len([f for f in out.glob("*.h5") if f.name != "summary.h5"]) == 4


# ------------------------------------------------------------------------- a bad design
def test_invalid_design_fails_alone(serial, folder):
    from fishcast.cli.main import cli

    (folder / "grid-bad.yaml").write_text(grid_text([0.2, 2], n_gal=[30], ell_max=[1500], name="bad"))
    shutil.copytree(folder / "cache-serial", folder / "cache-bad")
    out = folder / "bad"
    result = CliRunner().invoke(cli, ["batch", str(folder / "grid-bad.yaml"), "-o", str(out), "--workers", "1",
                                      "--cache-dir", str(folder / "cache-bad"), "-q"])
    text = result.output + (getattr(result, "stderr", "") or "")
    assert result.exit_code == 2, text
    assert "design f_sky=2__n_gal=30__ell_max=1500 FAILED (validation)" in text
    assert "f_sky" in text and "less than or equal to 1" in text
    read_fisher(out / "f_sky=0.2__n_gal=30__ell_max=1500.h5")
    assert not (out / "f_sky=2__n_gal=30__ell_max=1500.h5").exists()
    rows = (out / "summary.csv").read_text().splitlines()
    bad = [r for r in rows if r.startswith("f_sky=2__")]
    assert len(bad) == 1 and ",failed," in bad[0] and "validation:" in bad[0]
    with h5py.File(out / "summary.h5") as f:
        assert [s.decode() for s in f["failed/name"][()]] == ["f_sky=2__n_gal=30__ell_max=1500"]
        assert [s.decode() for s in f["designs/status"][()]] == ["ok", "failed"]


def test_no_valid_design_is_an_input_error(folder):
    (folder / "grid-none.yaml").write_text(grid_text([2, 3], n_gal=[30], ell_max=[1500], name="none"))
    grid = load_grid(folder / "grid-none.yaml")
    assert len(plan_batch(grid).failed) == 2
    with pytest.raises(InputError, match="no design of the grid is valid"):
        run_batch(grid, folder / "none")


# ------------------------------------------------------------------------- executors
def _ok(x):
    return x * 2


def _bad_input(x):
    raise InputError(f"bad value {x}")


def _flaky(flag: str):
    """Fails the first time (no flag file yet), succeeds the second."""
    p = Path(flag)
    if not p.exists():
        p.write_text("x")
        raise RuntimeError("transient")
    return "ok"


def _die(x):
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("make", [lambda: SerialExecutor(retries=1), lambda: ProcessExecutor(2, retries=1)],
                         ids=["serial", "process"])
def test_executor_failures_per_task(make, tmp_path):
    tasks = [Task("a", _ok, (1,)), Task("b", _bad_input, (2,)), Task("c", _flaky, (str(tmp_path / "flag"),)),
             Task("d", _ok, (4,))]
    seen = []
    with make() as ex:
        out = ex.run(tasks, on_done=lambda oc: seen.append(oc.name))
    assert [o.name for o in out] == ["a", "b", "c", "d"] and sorted(seen) == ["a", "b", "c", "d"]
    assert out[0].ok and out[0].value == 2 and out[3].value == 8
    assert not out[1].ok and out[1].attempts == 1 and out[1].exit_code == 2 and "bad value 2" in out[1].error
    assert out[2].ok and out[2].attempts == 2


def test_process_pool_survives_a_dead_worker():
    with ProcessExecutor(1, retries=1) as ex:
        out = ex.run([Task("dies", _die, (0,)), Task("fine", _ok, (3,))])
    assert not out[0].ok and "worker process died" in out[0].error and out[0].attempts == 2
    assert out[1].ok and out[1].value == 6


def test_recipe_grid_plans_the_points_of_one_design():
    """The example grid (27 LSST-like designs): every design valid, and the distinct points
    of the whole grid are exactly those of one design (planning only, no CAMB)."""
    from fishcast.pipeline.plan import plan_survey
    from fishcast.survey import load_survey

    path = Path(__file__).resolve().parents[1] / "recipes" / "grid-wl-example.yaml"
    grid = load_grid(path)
    bp = plan_batch(grid)
    assert len(grid.designs) == 27 and not bp.failed
    one = plan_survey(load_survey(grid.base, grid.designs[0].overrides))
    # designs that differ only in what their probes need (ell_max) share the largest CAMB
    # settings (pipeline.batch.shared_settings), so every design plans the grid's points
    assert len(bp.points) == len(one.keys)
    assert all(list(d.keys) == list(bp.points) for d in bp.planned)


def test_jobqueue_job_scripts_pin_one_thread_per_worker():
    """dask-jobqueue clusters are built (no job submitted): one worker process per core,
    one thread each, CAMB/BLAS threads fixed in the job script."""
    pytest.importorskip("dask_jobqueue")
    from fishcast.pipeline.execute import jobqueue_cluster

    c = jobqueue_cluster("slurm", {"cores": 4, "memory": "8GB", "queue": "normal"})
    try:
        script = c.job_script()
    finally:
        c.close()
    assert "#SBATCH -p normal" in script and "--cpus-per-task=4" in script
    assert "--nthreads 1" in script and "--nworkers 4" in script and "export OMP_NUM_THREADS=1" in script
    c = jobqueue_cluster("pbs", {"cores": 2, "memory": "4GB"})
    try:
        assert "#PBS" in c.job_script()
    finally:
        c.close()
    with pytest.raises(InputError, match="cores and memory"):
        jobqueue_cluster("slurm", {})


@pytest.mark.parametrize("args, words", [
    (["--jobs", "3"], "--jobs needs --cluster slurm"),
    (["--scheduler", "tcp://x:1", "--cluster", "slurm"], "not both"),
    (["--cluster-option", "cores=2"], "--cluster-option needs --cluster"),
])
def test_batch_option_errors(folder, args, words):
    from fishcast.cli.main import cli

    r = CliRunner().invoke(cli, ["batch", str(folder / "grid20.yaml"), "-o", str(folder / "x"), *args])
    assert r.exit_code == 2 and words in r.output


@pytest.mark.parametrize("workers", [["--workers", "2"], []], ids=["workers-2", "default"])
def test_run_with_workers_equals_the_batch_design(serial, folder, workers, monkeypatch):
    """`fishcast run --workers 2`, and `fishcast run` with the default (one worker per usable
    core, here made 2 whatever the machine; no $FISHCAST_WORKERS), cold cache, on the survey
    of one design, give the design's (serial) Fisher matrix bit for bit, and the file counts
    the Boltzmann runs made in the workers."""
    from fishcast.cli.main import cli
    from fishcast.pipeline import execute

    monkeypatch.delenv("FISHCAST_WORKERS", raising=False)
    monkeypatch.setattr(execute, "usable_cores", lambda: 2)
    made = []
    real = execute.make_executor

    def spy(*a, **kw):
        ex = real(*a, **kw)
        made.append((ex.backend, ex.workers, getattr(ex, "threads", None)))
        return ex

    monkeypatch.setattr(execute, "make_executor", spy)
    d = serial["res"].designs[0]
    sets = [f"--set=probes.weak_lensing.{k}={v}" for k, v in
            (("f_sky", d.values["f_sky"]), ("n_gal", d.values["n_gal"]), ("ell.max", d.values["ell_max"]))]
    name = "-".join(workers) or "default"
    out = folder / f"run{name}.h5"
    cache = folder / f"cache-run{name}"
    r = CliRunner().invoke(cli, ["run", str(folder / "base.yaml"), "-o", str(out), *workers, "-q",
                                 "--cache-dir", str(cache), *sets])
    assert r.exit_code == 0, r.output
    assert made == [("process", 2, 1)]  # workers x threads = the 2 usable cores
    assert len(list(cache.glob("*/*.npz"))) == 5
    assert read_fisher(out)[0].matrix.tobytes() == read_fisher(d.path)[0].matrix.tobytes()
    with h5py.File(out, "r") as f:
        assert int(f.attrs["camb_calls"]) == 3  # 5 points, the two sigma8 points share one run
