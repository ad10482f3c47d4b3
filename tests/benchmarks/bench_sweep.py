"""Benchmark (issue 15 item 2, adaptive sweeps; earlier: derivatives that choose their own
step), ratios and counts from one run.

On the Euclid IST:F WL pessimistic recipe (Gaussian-validity check off, so that only the
derivatives are counted), each mode with its own empty cache:
  * CAMB Boltzmann calls of the default (adaptive) run / of the full 8-rung sweep, the rungs
    each parameter used and what its verdict rests on (the 2-rung start or a 4-rung window),
    the rounds, and whether every verdict is the same;
  * CAMB calls made / distinct transfer-function points needed, per mode     (must be 1.0)
  * sweep wall time / (mean CAMB call time x calls / workers)                 (target <= 1.15)
  * fast mode (steps from the full sweep's file, neighbouring rungs only): its CAMB calls as
    a fraction of the full sweep's.

Run:  python tests/benchmarks/bench_sweep.py [--rungs 8] [--cheap]
(--cheap: the test suite's reduced CAMB settings, for a quick look; the numbers to quote come
from the recipe as shipped.)
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import ROOT, CambTimer, lumratio_table  # noqa: E402

CHEAP = {"cosmology.accuracy.n_z": 12, "cosmology.accuracy.n_k": 80, "cosmology.accuracy.k_max": 2.0,
         "cosmology.accuracy.accuracy_boost": 0.5, "probes.weak_lensing.ell.n_bands": 8,
         "probes.weak_lensing.integration.n_z": 101}


def distinct_transfer_points(survey, fc) -> int:
    """Cosmological points that differ in more than the primordial parameters (n_s, A_s,
    sigma8 re-use the fiducial's transfer functions), the fiducial included."""
    from fishcast.parameters import PRIMORDIAL, is_cosmological

    distinct = {()}
    for name, sw in fc.sweeps.items():
        if is_cosmological(name) and name not in PRIMORDIAL:
            x = survey.fiducial[name]
            for st, s in zip(sw.stencils, sw.steps):
                pts = {"central": (x - s, x + s), "forward": (x + s, x + 2 * s), "backward": (x - s, x - 2 * s)}[st]
                distinct |= {(name, float(v)) for v in pts}
    return len(distinct)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rungs", type=int, default=8)
    ap.add_argument("--cheap", action="store_true", help="the test suite's reduced CAMB settings")
    args = ap.parse_args()

    from fishcast import io as fio
    from fishcast.pipeline.forecast import run_forecast
    from fishcast.parameters import is_cosmological
    from fishcast.survey import load_survey

    recipe = ROOT / "recipes" / "euclid-wl-pessimistic.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        base = {
            "probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file": str(lumratio_table(tmp)),
            "diagnostics.gaussian_check": False,
            "derivatives.n_rungs": args.rungs,
            **(CHEAP if args.cheap else {}),
        }
        runs = {}
        for mode in ("adaptive", "sweep"):
            survey = load_survey(recipe, {**base, "derivatives.mode": mode})
            timer = CambTimer()
            t0 = time.perf_counter()
            with timer.active():
                fc = run_forecast(survey, cache=None)
            runs[mode] = (survey, fc, time.perf_counter() - t0, timer)
        out = tmp / "sweep.h5"
        fio.write_forecast(out, runs["sweep"][1])
        fast = load_survey(recipe, {**base, "derivatives.mode": "fast", "derivatives.steps_from": str(out)})
        fc_fast = run_forecast(fast, cache=None)

    survey, full = runs["sweep"][0], runs["sweep"][1]
    ad = runs["adaptive"][1]
    n_cosmo = sum(1 for n in survey.free if is_cosmological(n))
    print(f"recipe: euclid-wl-pessimistic{' (cheap CAMB settings)' if args.cheap else ''}, ladder of "
          f"{args.rungs} rungs, {len(survey.free)} free parameters ({n_cosmo} cosmological), Gaussian check off")
    print(f"CAMB calls, default (adaptive) / full sweep = {ad.camb_calls} / {full.camb_calls} = "
          f"{ad.camb_calls / full.camb_calls:.3f}   ({ad.rounds} rounds)")
    print(f"{'parameter':<10} {'rungs used':>10} {'up':>3} {'down':>4}  {'adaptive':<8} {'full':<8} "
          f"{'rel. step (ad/full)':>20}  adaptive verdict rests on")
    same = True
    for name in survey.free:
        a, f = ad.sweeps[name], full.sweeps[name]
        same &= a.verdict == f.verdict
        print(f"{name:<10} {a.rungs_used:>5} / {f.rungs_used:<2} {a.extended_up:>3} {a.extended_down:>4}  "
              f"{a.verdict:<8} {f.verdict:<8} {a.relative_step:>9.4g} / {f.relative_step:<9.4g}  {a.claim}")
    print(f"verdicts equal: {'yes' if same else 'NO'}")
    for mode, (sv, fc, wall, timer) in runs.items():
        needed = distinct_transfer_points(sv, fc)
        mean_call = timer.transfer_seconds / max(timer.transfer_runs, 1)
        print(f"[{mode}] CAMB calls made / distinct points needed = {fc.camb_calls} / {needed} = "
              f"{fc.camb_calls / needed:.3f}   (must be 1.0)")
        print(f"[{mode}] wall time / (CAMB call time x calls / workers) = {wall:.1f} s / ({mean_call:.2f} s x "
              f"{fc.camb_calls} / 1) = {wall / (mean_call * fc.camb_calls):.3f}   (target <= 1.15)")
    print(f"wall time, adaptive / full sweep = {runs['adaptive'][2]:.1f} s / {runs['sweep'][2]:.1f} s = "
          f"{runs['adaptive'][2] / runs['sweep'][2]:.3f}")
    print(f"fast mode calls / full sweep calls = {fc_fast.camb_calls} / {full.camb_calls} = "
          f"{fc_fast.camb_calls / full.camb_calls:.3f}")


if __name__ == "__main__":
    main()
