"""Benchmark (issue 11: the Euclid IST:F spectroscopic recipe end to end), ratios from one run.

On recipes/euclid-gcsp-pessimistic.yaml (observed frame, de-wiggling, Lorentzian FoG, free
sigma_v/sigma_p, ln b and P_s nuisances):
  * CAMB (Boltzmann) calls against one per distinct cosmological point that needs new
    transfer functions (n_s and sigma8 points reuse the fiducial's), nuisances costing none;
  * time outside CAMB / total time                       (target <= 0.15)

Run:  python tests/benchmarks/bench_gcsp.py [--mode fixed|sweep] [--stencil 3-point|5-point]
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import ROOT, CambTimer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["fixed", "sweep"], default="fixed")
    ap.add_argument("--stencil", choices=["3-point", "5-point"], default="3-point")
    ap.add_argument("--recipe", default="euclid-gcsp-pessimistic")
    args = ap.parse_args()

    from fishcast.cosmology import transfer_key
    from fishcast.parameters import is_cosmological
    from fishcast.pipeline.forecast import plan, run_forecast
    from fishcast import derivatives as der
    from fishcast.survey import load_survey

    overrides = {"derivatives.mode": args.mode, "derivatives.stencil": args.stencil,
                 "diagnostics.gaussian_check": False}
    survey = load_survey(ROOT / "recipes" / f"{args.recipe}.yaml", overrides)
    specs = {n: der.resolve_spec(n, survey.fiducial[n], survey.config.derivatives) for n in survey.free}
    values = {n: der.plan_points(n, survey.fiducial[n], specs[n]) for n in survey.free}
    pl = plan(survey, values)
    from fishcast.cosmology import full_params

    distinct_transfer = len({transfer_key(full_params(p)) for p in pl.points})
    timer = CambTimer()
    t0 = time.perf_counter()
    with timer.active():
        fc = run_forecast(survey, cache=None)
    total = time.perf_counter() - t0
    cosmo_free = [n for n in survey.free if is_cosmological(n)]
    outside = total - timer.seconds
    print(f"recipe: {args.recipe}, derivatives mode {args.mode} {args.stencil}")
    print(f"free parameters: {len(survey.free)} ({len(cosmo_free)} cosmological, "
          f"{len(survey.free) - len(cosmo_free)} nuisance)")
    print(f"distinct cosmological points: {fc.n_points}   needing their own transfer functions: {distinct_transfer}")
    print(f"CAMB Boltzmann calls: {fc.camb_calls}   calls / distinct transfer points = "
          f"{fc.camb_calls / distinct_transfer:.3f}   [{'OK' if fc.camb_calls <= distinct_transfer else 'OVER'}]")
    print(f"time outside CAMB / total = {outside / total:.3f}   (target <= 0.15)   "
          f"[{'OK' if outside / total <= 0.15 else 'OVER'}]")
    print(f"timings: {', '.join(f'{k} {v:.2f} s' for k, v in fc.timings.items())}")


if __name__ == "__main__":
    main()
