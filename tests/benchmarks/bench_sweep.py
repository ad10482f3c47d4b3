"""Benchmark (issue: derivatives that choose their own step), ratios from one run.

On the Euclid IST:F WL pessimistic recipe in sweep mode (Gaussian check off):
  * CAMB Boltzmann calls made / distinct transfer-function points needed   (must be 1.0)
  * sweep wall time / (mean CAMB call time x calls / workers)               (target <= 1.15)
  * fast mode (steps from the sweep's file, neighbouring rungs only): its CAMB calls as a
    fraction of the full sweep's.

Run:  python tests/benchmarks/bench_sweep.py [--rungs 8]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import ROOT, CambTimer, lumratio_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rungs", type=int, default=8)
    args = ap.parse_args()

    from fishcast import io as fio
    from fishcast.pipeline.forecast import run_forecast
    from fishcast.parameters import PRIMORDIAL, is_cosmological
    from fishcast.survey import load_survey

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        base = {
            "probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file": str(lumratio_table(tmp)),
            "diagnostics.gaussian_check": False,
            "derivatives.n_rungs": args.rungs,
        }
        survey = load_survey(ROOT / "recipes" / "euclid-wl-pessimistic.yaml", {**base, "derivatives.mode": "sweep"})
        timer = CambTimer()
        t0 = time.perf_counter()
        with timer.active():
            fc = run_forecast(survey, cache=None)
        wall = time.perf_counter() - t0
        out = tmp / "sweep.h5"
        fio.write_forecast(out, fc)

        # distinct transfer-function points: cosmological points that differ in more than the
        # primordial parameters (n_s, A_s, sigma8 re-use the fiducial's transfer functions)
        distinct = {()}  # the fiducial
        for name, sw in fc.sweeps.items():
            if is_cosmological(name) and name not in PRIMORDIAL:
                for v in set(float(x) for s in sw.steps for x in (survey.fiducial[name] + s, survey.fiducial[name] - s)):
                    distinct.add((name, v))
        needed = len(distinct)
        mean_call = timer.transfer_seconds / max(timer.transfer_runs, 1)

        fast = load_survey(ROOT / "recipes" / "euclid-wl-pessimistic.yaml",
                           {**base, "derivatives.mode": "fast", "derivatives.steps_from": str(out)})
        fc_fast = run_forecast(fast, cache=None)

    n_cosmo = sum(1 for n in survey.free if is_cosmological(n))
    print(f"recipe: euclid-wl-pessimistic, sweep of {args.rungs} rungs, {n_cosmo} cosmological parameters")
    print(f"CAMB calls made / distinct points needed = {fc.camb_calls} / {needed} = {fc.camb_calls / needed:.3f}   (must be 1.0)")
    print(f"sweep wall time / (CAMB call time x calls / workers) = {wall:.1f} s / ({mean_call:.2f} s x {fc.camb_calls} / 1)"
          f" = {wall / (mean_call * fc.camb_calls):.3f}   (target <= 1.15)")
    print(f"fast mode calls / full sweep calls = {fc_fast.camb_calls} / {fc.camb_calls} = {fc_fast.camb_calls / fc.camb_calls:.3f}")
    bad = [n for n, sw in fc.sweeps.items() if sw.verdict != "PASS"]
    print(f"verdicts: {len(fc.sweeps) - len(bad)} PASS" + (f"; not PASS: {', '.join(bad)}" if bad else ""))


if __name__ == "__main__":
    main()
