"""What a forecast's cosmology evaluations cost, honestly counted (issue 15): the file records
every Boltzmann run of the whole forecast, wherever it ran (this process or worker
processes), by stage (fiducial and derivative sweeps / Gaussian-validity check), and the
points read from the cache apart; the count is the number of distinct cosmologies actually
sent to CAMB (a spy on the backend's CAMB entry point, not the code's own counter).

Real CAMB on a small weak-lensing survey with one nuisance parameter (A_IA), fixed 3-point
derivatives and the default validity check.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from fishcast import cosmology as _cosmo

SMALL = textwrap.dedent("""\
    name: small-ia
    cosmology:
      nonlinear_model: none
      accuracy: {k_max: 5, n_k: 100, n_z: 30}
    parameters:
      fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.815583, w0: -1.0, wa: 0.0,
                 A_IA: 1.72, eta_IA: -0.41}
      free: [Omega_m, w0, A_IA]
    derivatives: {mode: fixed}   # the counting is the same in every mode; fewer CAMB runs
    probes:
      weak_lensing:
        f_sky: 0.1
        ell: {min: 20, max: 300, n_bands: 5}
        n_gal: 10
        shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
        nz: {type: smail, z0: 0.6363961031, alpha: 2.0, beta: 1.5}
        bins: {type: equipopulated, n_bins: 2, z_min: 0.001, z_max: 2.5}
        photoz: {c_b: 1.0, z_b: 0.0, sigma_b: 0.05, c_o: 1.0, z_o: 0.1, sigma_o: 0.05, f_out: 0.1}
        intrinsic_alignment: {model: nla}
        integration: {z_max: 3.0, n_z: 81}
    """)

COUNTS = ("camb_calls", "camb_calls_derivatives", "camb_calls_validity", "cache_hits", "cache_hits_derivatives",
          "cache_hits_validity", "transfer_reuses", "transfer_reuses_derivatives", "transfer_reuses_validity")


@pytest.fixture
def spy(monkeypatch):
    """Every point this process sends to CAMB (the backend's parameter builder runs once per
    Boltzmann run, just before it)."""
    seen: list[dict] = []
    real = _cosmo._camb_params

    def record(p, settings, As):
        seen.append(dict(p))
        return real(p, settings, As)

    monkeypatch.setattr(_cosmo, "_camb_params", record)
    return seen


def _run(tmp_path, name, *extra):
    from fishcast.cli.main import cli
    from fishcast.io import open_forecast
    from fishcast.io.diagnostics import read_diagnostics

    survey = tmp_path / "s.yaml"
    if not survey.exists():
        survey.write_text(SMALL)
    out = tmp_path / f"{name}.h5"
    res = CliRunner().invoke(cli, ["run", str(survey), "-o", str(out), *extra])
    assert res.exit_code in (0, 3), res.output
    with open_forecast(out) as f:
        attrs = {k: int(f.attrs[k]) for k in (*COUNTS, "cosmology_points")}
        gv = read_diagnostics(f["diagnostics"])["gaussian_validity"]
    return attrs, gv, res.output


def _distinct_runs(points) -> int:
    return len({_cosmo.transfer_key(_cosmo.full_params(p)) for p in points})


def test_workers_1_and_2_record_the_same_count_and_it_is_what_camb_ran(tmp_path, spy):
    one, gv, output = _run(tmp_path, "one", "--no-cache", "--workers", "1")
    # the count is what CAMB actually ran, each cosmology once
    assert one["camb_calls"] == len(spy) == _distinct_runs(spy)
    assert one["camb_calls"] == one["camb_calls_derivatives"] + one["camb_calls_validity"]
    assert one["camb_calls_validity"] == gv.camb_runs >= 1
    assert one["cache_hits"] == 0
    # the validity check's runs: its evaluated points (each a distinct cosmology), no more
    evaluated = [i for i, s in enumerate(gv.status) if s == "evaluated"]
    assert one["camb_calls_validity"] == len(evaluated)
    sent_for_check = spy[one["camb_calls_derivatives"]:]
    assert len(sent_for_check) == one["camb_calls_validity"]
    # the report and the summary say it
    assert (f"CAMB: {one['camb_calls']} Boltzmann runs ({one['camb_calls_derivatives']} fiducial and derivatives, "
            f"{one['camb_calls_validity']} Gaussian-validity check); 0 cosmology points read from the cache") in output
    assert f"({gv.camb_runs} Boltzmann run" in output

    del spy[:]
    two, gv2, _ = _run(tmp_path, "two", "--no-cache", "--workers", "2")
    # the fiducial is computed in this process (while the workers start: its transfer
    # functions are kept here), every other run in the worker processes ...
    fid = _cosmo.transfer_key(_cosmo.full_params(spy[0])) if spy else None
    assert len(spy) == 1 and fid == _cosmo.transfer_key(_cosmo.full_params(
        {"Omega_m": 0.32, "Omega_b": 0.05, "h": 0.67, "n_s": 0.96, "sigma8": 0.815583, "w0": -1.0, "wa": 0.0}))
    assert two == one  # ... and they are counted all the same
    assert gv2.status == gv.status


def test_cache_hits_are_counted_apart_and_the_cheaper_check(tmp_path, spy):
    """A second run on the same cache makes no Boltzmann run: every point it needs is a
    cache hit, by stage. The full check (all principal directions, both sides) on the same
    cache costs one run per point that moves the cosmology; the default check one per
    cosmological direction, plus the -1 sigma sides a verdict depends on."""
    cache = str(tmp_path / "cache")
    first, gv, _ = _run(tmp_path, "first", "--cache-dir", cache)
    assert first["cache_hits"] == 0 and first["camb_calls"] == len(spy) > 0
    del spy[:]
    again, gv_again, output = _run(tmp_path, "again", "--cache-dir", cache)
    assert spy == [] and again["camb_calls"] == 0
    assert again["cache_hits_derivatives"] == first["cosmology_points"]
    assert again["cache_hits_validity"] == gv.count("evaluated")
    assert again["cache_hits"] == again["cache_hits_derivatives"] + again["cache_hits_validity"]
    assert f"{again['cache_hits']} cosmology points read from the cache" in output
    assert gv_again.status == gv.status

    # the default check: the +side of each of the 2 cosmological directions (Omega_m, w0 with
    # A_IA at its conditional best fit), the A_IA direction on the fiducial cosmology
    assert gv.kinds == ("cosmological", "cosmological", "nuisance")
    assert [gv.status[i] for i in (4, 5)] == ["reused", "reused"]
    assert [gv.status[i] for i in (0, 2)] == ["evaluated", "evaluated"]
    assert first["camb_calls_validity"] == gv.count("evaluated") <= 4
    del spy[:]
    full, gv_full, _ = _run(tmp_path, "full", "--cache-dir", cache, "--set", "diagnostics.gaussian_directions=all",
                            "--set", "diagnostics.gaussian_sides=both")
    assert gv_full.kinds == ("principal",) * 3 and gv_full.count("inferred") == 0
    assert full["camb_calls_derivatives"] == 0 and full["camb_calls_validity"] == len(spy) == 6
    assert gv.count("evaluated") < full["camb_calls_validity"]


def test_a_boltzmann_run_that_fails_in_a_worker_is_counted(monkeypatch, fast_settings):
    """A cosmology task that fails inside CAMB (here: the transfer-function call raises) made
    its Boltzmann run all the same: the failed outcome carries it to the parent process,
    through the same worker entry point the process pool and Dask use."""
    import camb

    from fishcast.pipeline.execute import EvaluationStats, SerialExecutor, _call, _evaluate, _outcome, Task, \
        evaluation_task

    def broken(pars):
        raise RuntimeError("injected failure inside CAMB")

    monkeypatch.setattr(camb, "get_transfer_functions", broken)
    point = {"Omega_m": 0.31, "Omega_b": 0.05, "h": 0.67, "n_s": 0.96, "sigma8": 0.8}
    before = _cosmo.boltzmann_calls()
    value = _call(evaluation_task, ([point], fast_settings, None))
    assert _cosmo.boltzmann_calls() - before == 1  # the run was made (and counted here, in-process)
    oc = _outcome(Task("t", evaluation_task), value, 1)
    assert not oc.ok and "injected failure" in oc.error and oc.boltzmann_calls == 1
    # the evaluation statistics of a pool add it, as they add the successful tasks' runs
    stats = EvaluationStats()
    out = _evaluate(SerialExecutor(retries=0), [(point, fast_settings)], None, None, stats)
    assert not out[0].ok and stats.boltzmann_calls == 1 and stats.failures


def test_the_default_check_evaluates_n_s_and_sigma8_directions_in_one_run(tmp_path, spy):
    """The default basis (gaussian_directions: cosmological) on the small survey with n_s and
    sigma8 free too: one Boltzmann run per direction of the transfer parameters (Omega_m, w0;
    the +side, and a -side only where a verdict depends on it), at most one run for both n_s / sigma8
    directions (their points keep the fiducial's transfer functions: one batch, both sides),
    none for A_IA: 2 + 1 = 3, where the previous basis (cosmological_principal: every
    cosmological direction moves Omega_m and w0) costs one run per direction, 4. Counted by
    the spy on CAMB's entry point (distinct transfer functions), on the same cache (the
    derivatives are read from it).

    The first run computed the fiducial itself and still holds its CAMB transfer object
    (fishcast.cosmology.transfer_store): the n_s / sigma8 points cost no Boltzmann run at all
    there (counted as transfer reuses, in the file and the printed line); a run that read
    the fiducial from the cache pays the one run."""
    (tmp_path / "s.yaml").write_text(SMALL.replace("free: [Omega_m, w0, A_IA]", "free: [Omega_m, w0, n_s, sigma8, A_IA]"))
    cache = str(tmp_path / "cache")
    first, gv, output = _run(tmp_path, "split", "--cache-dir", cache)
    checked = spy[first["camb_calls_derivatives"]:]
    assert first["camb_calls_validity"] == gv.camb_runs == len(checked) == _distinct_runs(checked)
    assert gv.kinds == ("cosmological",) * 4 + ("nuisance",)
    # directions 2, 3: n_s / sigma8 with Omega_m, w0 at the fiducial; both sides evaluated, in one run
    fid = {"Omega_m": 0.32, "w0": -1.0}
    assert [gv.status[i] for i in (4, 5, 6, 7)] == ["evaluated"] * 4 and [gv.status[i] for i in (8, 9)] == ["reused"] * 2
    for i in (2, 3):
        assert all(gv.offsets[i][j] == 0.0 for j in (0, 1)), gv.offsets[i]
    shared = [p for p in checked if all(p[k] == v for k, v in fid.items())]
    assert shared == []  # no Boltzmann run for the four n_s / sigma8 points: the fiducial's is held
    assert first["transfer_reuses_validity"] == first["transfer_reuses"] == 4
    assert "; 4 points computed from a transfer function already held (no Boltzmann run)" in output
    # Omega_m, w0 directions: one run per side evaluated (a +side outside CAMB's domain, w0 + wa > 0,
    # is not sent: its -side is evaluated instead); the n_s / sigma8 directions: none
    transfer_sides = sum(gv.status[i] == "evaluated" for i in range(4))
    assert 2 <= transfer_sides and first["camb_calls_validity"] == transfer_sides

    # the same check with the fiducial read from the cache (its transfer functions are not held):
    # one Boltzmann run for the four n_s / sigma8 points (both moved: not a stencil point), none
    # for the rest (cache hits)
    import pathlib

    from fishcast.pipeline.cache import Cache

    held = Cache(cache)
    forgot = 0
    for e in pathlib.Path(cache).glob("*/*.npz"):
        r = held.get(e.stem)
        if (r is not None and all(r.params[k] == v for k, v in fid.items())
                and r.params["n_s"] != 0.96 and r.params["sigma8"] != 0.815583):
            e.unlink()
            forgot += 1
    assert forgot == 4
    del spy[:]
    again, gv_again, _ = _run(tmp_path, "again", "--cache-dir", cache)
    assert again["camb_calls_derivatives"] == 0 and again["transfer_reuses"] == 0
    assert again["camb_calls_validity"] == len(spy) == 1 and again["cache_hits_validity"] == transfer_sides
    assert [gv_again.status[i] for i in (4, 5, 6, 7)] == ["evaluated"] * 4

    # with a pool (--workers 2, a cold cache): the fiducial computed in this process, the n_s /
    # sigma8 points there on its transfer functions, the rest in the workers (the last of a
    # stage on both threads): the same counts, and the same numbers bit for bit
    from fishcast.io import read_fisher

    del spy[:]
    pooled, gv_pooled, _ = _run(tmp_path, "pooled", "--cache-dir", str(tmp_path / "cold"), "--workers", "2")
    assert pooled == first and len(spy) == 1  # only the fiducial ran in this process
    assert read_fisher(tmp_path / "pooled.h5")[0].matrix.tobytes() == read_fisher(tmp_path / "split.h5")[0].matrix.tobytes()
    assert gv_pooled.status == gv.status
    assert np.asarray(gv_pooled.delta_chi2).tobytes() == np.asarray(gv.delta_chi2).tobytes()
    del spy[:]
    old, gv_old, _ = _run(tmp_path, "principal", "--cache-dir", cache, "--set",
                          "diagnostics.gaussian_directions=cosmological_principal")
    assert old["camb_calls_derivatives"] == 0 and gv_old.kinds == ("cosmological",) * 4 + ("nuisance",)
    assert old["camb_calls_validity"] == len(spy) == _distinct_runs(spy) >= 4
    assert first["camb_calls_validity"] < old["camb_calls_validity"]
