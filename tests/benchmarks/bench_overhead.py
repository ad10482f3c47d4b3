"""Benchmark (issue 15): the CPU and the wall time that ``fishcast run`` spends outside CAMB
and outside the forecast. Ratios from one run.

One default ``fishcast run`` of the Euclid IST:F WL pessimistic recipe (``--no-cache -q``,
default workers = all usable cores), in a child process. Every Python process of its tree
(the main process, the pool's forkserver and its workers) loads a ``sitecustomize`` written
here, which times, in CPU seconds (``time.process_time``: every thread of the process), the
calls into CAMB's own functions (the outermost one when they nest) and, when the process
ends (at exit, or at ``os._exit``: how the pool's workers end), writes the process's total
CPU and its CPU inside CAMB. In the main process it also notes, on the wall clock, when
``fishcast.pipeline.forecast.run_forecast`` starts and returns (a timing wrapper; nothing
else of fishcast is touched).

It prints:
  * the wall time of the run and its parts: before the forecast (interpreter start-up,
    imports, loading the survey, starting the pool), the forecast (``run_forecast``), after it
    (writing the HDF5 file, the summary unless -q, the pool's shutdown, the exit); the time
    outside the forecast as ratios to the wall time and to the forecast's
  * main process CPU outside CAMB / CAMB CPU of the run (all processes)   (the goal: small)
  * the main process's CPU: total, inside CAMB, outside CAMB; its import share (a separate
    child that only imports what ``fishcast run`` imports)
  * per worker: CPU total, inside CAMB, outside CAMB (imports, fishcast's own spectra code);
    the forkserver's CPU (its imports, once)

Run:  python tests/benchmarks/bench_overhead.py [--workers N] [--rounds R] [--summary]
(--rounds: repeat the run, print the median of each number; --summary: without -q, the
stability report and the constraints are printed too, as an interactive run does.)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import ROOT, lumratio_table  # noqa: E402

RECIPE = ROOT / "recipes" / "euclid-wl-pessimistic.yaml"

#: loaded by every Python process of the run's tree (PYTHONPATH): CPU inside CAMB, at exit
SITECUSTOMIZE = r'''
import atexit, json, os, sys, time

_OUT = os.environ.get("FISHCAST_BENCH_CPU_DIR")
_CAMB = {"cpu": 0.0, "depth": 0, "transfer": 0}
_FORECAST = {"start": None, "end": None}  # wall clock (time.time) of run_forecast, main process
_NAMES = {
    "camb": ("get_transfer_functions", "get_results", "get_background"),
    "camb.results.CAMBdata": ("power_spectra_from_transfer", "get_matter_power_interpolator",
                              "get_linear_matter_power_spectrum", "get_matter_power_spectrum", "get_sigma8",
                              "get_sigma8_0", "get_fsigma8", "comoving_radial_distance", "hubble_parameter",
                              "calc_power_spectra", "calc_transfers"),
    "camb.CAMBparams": ("set_cosmology", "set_matter_power", "set_dark_energy", "set_accuracy"),
}


def _timed(fn, transfer):
    def inner(*a, **k):
        outer = _CAMB["depth"] == 0
        _CAMB["depth"] += 1
        t = time.process_time() if outer else 0.0
        try:
            return fn(*a, **k)
        finally:
            _CAMB["depth"] -= 1
            if outer:
                _CAMB["cpu"] += time.process_time() - t
                _CAMB["transfer"] += transfer
    return inner


def _patch(camb):
    from camb import results
    owners = {"camb": camb, "camb.results.CAMBdata": results.CAMBdata, "camb.CAMBparams": camb.CAMBparams}
    for owner, names in _NAMES.items():
        obj = owners[owner]
        for name in names:
            fn = getattr(obj, name, None)
            if fn is not None:
                setattr(obj, name, _timed(fn, int(name == "get_transfer_functions")))


def _timed_forecast(module):
    run = module.run_forecast

    def run_forecast(*a, **k):
        _FORECAST["start"] = time.time()
        try:
            return run(*a, **k)
        finally:
            _FORECAST["end"] = time.time()
    module.run_forecast = run_forecast


class _Hook:
    """After ``import camb`` (wherever it happens first), wrap its functions; after the
    import of fishcast's forecast module, time ``run_forecast``."""

    AFTER = {"camb": _patch, "fishcast.pipeline.forecast": _timed_forecast}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.AFTER or getattr(self, "_busy", False):
            return None
        import importlib.util
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        loader = spec.loader
        run = loader.exec_module
        then = self.AFTER[fullname]

        def exec_module(module):
            run(module)
            then(module)
        loader.exec_module = exec_module
        return spec


_DONE = []


def _report():
    if _DONE:
        return
    _DONE.append(1)
    with open(os.path.join(_OUT, f"{os.getpid()}.json"), "w") as f:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "cpu": time.process_time(),
                   "camb_cpu": _CAMB["cpu"], "transfer_runs": _CAMB["transfer"],
                   "camb_loaded": "camb" in sys.modules, "forecast": _FORECAST}, f)


def _exit_after_report(code, _exit=os._exit):
    try:
        _report()
    finally:
        _exit(code)


if _OUT:
    sys.meta_path.insert(0, _Hook())
    atexit.register(_report)
    os._exit = _exit_after_report  # a forked pool worker ends by os._exit: no atexit
'''

#: the main process of the run: ``fishcast run`` itself
RUN = "import sys; from fishcast.cli.main import main; sys.argv[0] = 'fishcast'; main()"

#: what ``fishcast run`` imports before and while it runs (cli/run.py, the forecast, the
#: file writer and CAMB), timed alone
IMPORTS = ("import time; t = time.process_time(); from fishcast.cli.main import cli; cli.list_commands(None); "
           "from fishcast import io, report; from fishcast.pipeline.cache import Cache; "
           "from fishcast.pipeline.forecast import run_forecast; from fishcast.survey import load_survey; "
           "from fishcast.pipeline.execute import make_executor; io.write_forecast; import camb; "
           "print(time.process_time())")


def one_run(tmp: pathlib.Path, lum: pathlib.Path, workers: int | None, r: int, summary: bool = False) -> dict:
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    cpu_dir = tmp / f"cpu{r}"
    cpu_dir.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["FISHCAST_BENCH_CPU_DIR"] = str(cpu_dir)
    cmd = [sys.executable, "-c", RUN, "run", str(RECIPE), "-o", str(tmp / f"run{r}.h5"), "--no-cache",
           "--allow-unstable", "--set", f"probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file={lum}"]
    if not summary:
        cmd.append("-q")
    if workers is not None:
        cmd += ["--workers", str(workers)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    t1 = time.time()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"fishcast run failed ({proc.returncode}):\n{out}\n{err}")
    recs = [json.loads(p.read_text()) for p in cpu_dir.glob("*.json")]
    main = [x for x in recs if x["pid"] == proc.pid]
    if len(main) != 1:
        raise SystemExit("the main process wrote no CPU record (did its atexit run?)")
    main = main[0]
    fc = main["forecast"]
    if fc["start"] is None or fc["end"] is None:
        raise SystemExit("the main process did not time run_forecast")
    others = [x for x in recs if x["pid"] != proc.pid]
    parents = {x["ppid"] for x in others}
    # the forkserver: the parent of others (the workers it forked; it writes its own record
    # when it ends, after the main process: its parent may no longer be the main process then)
    servers = [x for x in others if x["pid"] in parents]
    workers_ = [x for x in others if x["camb_loaded"] and x not in servers]
    helpers = [x for x in others if not x["camb_loaded"] and x not in servers]
    camb_total = main["camb_cpu"] + sum(w["camb_cpu"] for w in workers_)
    imports = float(subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True,
                                   check=True).stdout.strip())
    return {
        "main_cpu": main["cpu"], "main_camb": main["camb_cpu"], "main_out": main["cpu"] - main["camb_cpu"],
        "imports": imports, "camb_total": camb_total,
        "transfer_runs": main["transfer_runs"] + sum(w["transfer_runs"] for w in workers_),
        "n_workers": len(workers_),
        "worker_cpu": [w["cpu"] for w in workers_], "worker_camb": [w["camb_cpu"] for w in workers_],
        "helpers_cpu": sum(h["cpu"] for h in helpers), "server_cpu": sum(x["cpu"] for x in servers),
        "wall": t1 - t0, "before": fc["start"] - t0, "forecast": fc["end"] - fc["start"], "after": t1 - fc["end"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=None, help="fishcast run --workers (default: fishcast's default)")
    ap.add_argument("--rounds", type=int, default=1, help="runs; the median of each number is printed")
    ap.add_argument("--summary", action="store_true", help="run without -q (the report and constraints printed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        lum = lumratio_table(tmp)
        runs = [one_run(tmp, lum, args.workers, r, args.summary) for r in range(args.rounds)]

    def med(key):
        return float(np.median([x[key] for x in runs]))

    def med_sum(key):
        return float(np.median([sum(x[key]) for x in runs]))

    camb = med("camb_total")
    print(f"recipe: {RECIPE.name}; default fishcast run (--no-cache{'' if args.summary else ', -q'}), "
          f"workers: {runs[0]['n_workers'] or 'none'}; "
          f"cores usable: {len(os.sched_getaffinity(0))}; rounds: {args.rounds}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")
    print(f"CAMB: {med('transfer_runs'):.0f} Boltzmann runs, {camb:.2f} s CPU inside CAMB's functions (all processes)")
    print(f"main process: {med('main_cpu'):.2f} s CPU, of which {med('main_camb'):.2f} s in CAMB and "
          f"{med('main_out'):.2f} s outside; the imports of 'fishcast run' alone: {med('imports'):.2f} s")
    if runs[0]["n_workers"]:
        wc, wk = med_sum("worker_cpu"), med_sum("worker_camb")
        n = runs[0]["n_workers"]
        print(f"workers ({n}): {wc:.2f} s CPU, of which {wk:.2f} s in CAMB and {wc - wk:.2f} s outside "
              f"({(wc - wk) / n:.2f} s per worker: imports, fishcast's spectra code); other helper processes "
              f"{med('helpers_cpu'):.2f} s")
    outside = [x["before"] + x["after"] for x in runs]
    print(f"wall: {med('wall'):.2f} s = {med('before'):.2f} s before the forecast (start-up, imports, survey, pool "
          f"start) + {med('forecast'):.2f} s forecast + {med('after'):.2f} s after it (file, "
          f"{'summary, ' if args.summary else ''}pool shutdown, exit)")
    if runs[0]["n_workers"]:
        print(f"forkserver: {med('server_cpu'):.2f} s CPU (its imports, once)")
    print(f"wall outside the forecast / wall of the run           = "
          f"{float(np.median([o / x['wall'] for o, x in zip(outside, runs)])):.4f}")
    print(f"wall outside the forecast / wall of the forecast      = "
          f"{float(np.median([o / x['forecast'] for o, x in zip(outside, runs)])):.4f}")
    print(f"main process CPU outside CAMB / CAMB CPU of the run = {med('main_out') / camb:.4f}")
    print(f"main imports / CAMB CPU of the run                   = {med('imports') / camb:.4f}")
    if runs[0]["n_workers"]:
        print(f"all CPU outside CAMB (main + workers) / CAMB CPU     = "
              f"{(med('main_out') + med_sum('worker_cpu') - med_sum('worker_camb')) / camb:.4f}")


if __name__ == "__main__":
    main()
