"""Benchmark (issue: weak-lensing forecast end to end), ratios from one run.

On the Euclid IST:F WL pessimistic recipe:
  * time outside CAMB / total time                       (target <= 0.15)
  * CAMB (Boltzmann) calls, against the bound 1 + (stencil points - 1) x (free cosmological
    parameters), nuisance parameters costing none.

Run:  python tests/benchmarks/bench_weak_lensing.py [--mode fixed|sweep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import ROOT, CambTimer, lumratio_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["fixed", "sweep"], default="fixed")
    ap.add_argument("--stencil", choices=["3-point", "5-point"], default="3-point")
    args = ap.parse_args()

    from fishcast.pipeline.forecast import run_forecast
    from fishcast.parameters import is_cosmological
    from fishcast.survey import load_survey

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {
            "probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file": str(lumratio_table(pathlib.Path(tmp))),
            "derivatives.mode": args.mode,
            "derivatives.stencil": args.stencil,
            "diagnostics.gaussian_check": False,
        }
        survey = load_survey(ROOT / "recipes" / "euclid-wl-pessimistic.yaml", overrides)
        timer = CambTimer()
        t0 = time.perf_counter()
        with timer.active():
            fc = run_forecast(survey, cache=None)
        total = time.perf_counter() - t0

    cosmo_free = [n for n in survey.free if is_cosmological(n)]
    rungs = len(next(iter(fc.sweeps.values())).steps)
    stencil_points = 2 * rungs + 1
    bound = 1 + (stencil_points - 1) * len(cosmo_free)
    outside = total - timer.seconds
    print(f"recipe: euclid-wl-pessimistic, derivatives mode {args.mode}, {rungs} rung(s) ({stencil_points} stencil points)")
    print(f"free parameters: {len(survey.free)} ({len(cosmo_free)} cosmological, {len(survey.free) - len(cosmo_free)} nuisance)")
    print(f"CAMB Boltzmann calls: {fc.camb_calls}   bound 1 + ({stencil_points} - 1) x {len(cosmo_free)} = {bound}"
          f"   calls / bound = {fc.camb_calls / bound:.3f}   [{'OK' if fc.camb_calls <= bound else 'OVER'}]")
    print(f"distinct cosmological points: {fc.n_points}   spectra computed: {timer.spectra}"
          f"   (n_s and sigma8 points reuse transfer functions)")
    print(f"time outside CAMB / total = {outside / total:.3f}   (target <= 0.15)   [{'OK' if outside / total <= 0.15 else 'OVER'}]")
    print(f"total / time of the CAMB calls = {total / timer.seconds:.3f}")


if __name__ == "__main__":
    main()
