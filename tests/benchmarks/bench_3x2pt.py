"""Benchmark (issue 12: photometric 3x2pt), ratios from one run.

On the Euclid IST:F 3x2pt pessimistic recipe (WL + GCph + XC, one joint covariance):
  * time outside CAMB / total time                               (target <= 0.25)
  * CAMB (Boltzmann) calls of the 3x2pt forecast against those of a WL-only forecast of
    the same cosmological parameters, run here too (target: equal; the galaxy biases and
    the other nuisances cost no CAMB call)
  * the share of the 3x2pt Fisher metric (covariance factorization + whitening) in the
    time outside CAMB.

Run:  python tests/benchmarks/bench_3x2pt.py [--mode fixed|sweep] [--stencil 3-point|5-point] [--no-wl-run]

--no-wl-run compares the planned cosmological points of the two forecasts (the CAMB calls
are a function of them) instead of running the WL-only forecast too.

It also prints (issue 15, item 1) the time per CAMB run with the settings derived from the
probes' needs relative to the k_max = 30/Mpc, z_max = 4 settings used before, at the fiducial,
interleaved, median of --camb-repeats (one thread): for the 3x2pt recipes (Euclid IST:F
pessimistic, LSST Y10) and, for the linear-only floor, the DESI multi-tracer recipe.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import ROOT, CambTimer  # noqa: E402


def _run(survey):
    from fishcast.pipeline.forecast import run_forecast

    timer = CambTimer()
    t0 = time.perf_counter()
    with timer.active():
        fc = run_forecast(survey, cache=None)
    return fc, time.perf_counter() - t0, timer


def _planned_keys(survey) -> tuple[str, ...]:
    from fishcast.derivatives import plan_points, resolve_spec
    from fishcast.pipeline.forecast import plan

    dconf = survey.config.derivatives
    values = {n: plan_points(n, survey.fiducial[n], resolve_spec(n, survey.fiducial[n], dconf)) for n in survey.free}
    return plan(survey, values).keys


def camb_cost(recipe: str, repeats: int) -> tuple[float, float, object]:
    """Median seconds of one CAMB evaluation of the recipe's fiducial with its derived
    settings and with k_max = 30/Mpc, z_max = 4 (n_k and the rest as derived; for a linear-only
    table the reference's 300 nodes up to 30/Mpc), interleaved, in this process."""
    import dataclasses
    import statistics

    from fishcast.cosmology import DEFAULT_K_MAX, compute
    from fishcast.parameters import is_cosmological
    from fishcast.survey import load_survey

    sv = load_survey(ROOT / "recipes" / f"{recipe}.yaml")
    derived = sv.settings
    reference = dataclasses.replace(derived, k_max=DEFAULT_K_MAX, z_max=4.0,  # the settings before: dense transfers
                                    n_k=derived.n_k if derived.nonlinear else 300, transfer_high_precision=True)
    point = {n: v for n, v in sv.fiducial.items() if is_cosmological(n)}
    times: dict[str, list[float]] = {"derived": [], "reference": []}
    for _ in range(repeats):
        for name, st in (("derived", derived), ("reference", reference)):
            t0 = time.perf_counter()
            compute(point, st)
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["derived"]), statistics.median(times["reference"]), derived


def print_camb_costs(repeats: int) -> None:
    from fishcast.pipeline.execute import configure_worker

    configure_worker(1)
    for recipe in ("euclid-3x2pt-pessimistic", "lsst-y10-3x2pt", "desi-multitracer"):
        t_der, t_ref, st = camb_cost(recipe, repeats)
        print(f"{recipe}: derived settings k_max {st.k_max:.3g}/Mpc, z_max {st.z_max:.3g}, "
              f"{'nonlinear ' + st.nonlinear_model if st.nonlinear else 'linear only'}; "
              f"time per CAMB run, derived / k_max 30, z_max 4 = {t_der / t_ref:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["fixed", "sweep"], default="sweep")
    ap.add_argument("--stencil", choices=["3-point", "5-point"], default="3-point")
    ap.add_argument("--no-wl-run", action="store_true", help="plan the WL-only forecast instead of running it")
    ap.add_argument("--camb-repeats", type=int, default=3, help="repeats of the CAMB cost measurement (0: skip it)")
    ap.add_argument("--camb-only", action="store_true", help="only the CAMB cost measurement")
    args = ap.parse_args()
    if args.camb_repeats > 0:
        print_camb_costs(args.camb_repeats)
    if args.camb_only:
        return

    from fishcast.parameters import is_cosmological
    from fishcast.probes import photometric as ph
    from fishcast.survey import load_survey

    recipe = ROOT / "recipes" / "euclid-3x2pt-pessimistic.yaml"
    common = {  # the recipe as shipped (its <L>/L* table is data/istf_lumratio.dat)
        "derivatives.mode": args.mode,
        "derivatives.stencil": args.stencil,
        "diagnostics.gaussian_check": False,
    }
    survey = load_survey(recipe, common)
    probe = survey.probes[0]
    # time the Fisher metric: wrap the probe's per-band whitening and Fisher products
    metric = {"seconds": 0.0, "calls": 0}
    original = ph.PhotometricProbe.fisher

    def timed(self, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            metric["seconds"] += time.perf_counter() - t
            metric["calls"] += 1

    ph.PhotometricProbe.fisher = timed
    try:
        fc, total, timer = _run(survey)
    finally:
        ph.PhotometricProbe.fisher = original
    wl_only = load_survey(recipe, {**common, "probes.photometric.spectra": ["WL"],
                                   "parameters.free": [n for n in survey.free if not n.startswith("b_")]})
    fc_wl = None if args.no_wl_run else _run(wl_only)

    cosmo_free = [n for n in survey.free if is_cosmological(n)]
    outside = total - timer.seconds
    print(f"recipe: euclid-3x2pt-pessimistic, derivatives mode {args.mode} ({args.stencil})")
    print(f"tracers: {len(probe.tracers)}, unique spectra: {probe._pa.size}, ell bands: {probe.ell.size}")
    print(f"free parameters: {len(survey.free)} ({len(cosmo_free)} cosmological, {len(survey.free) - len(cosmo_free)} nuisance);"
          f" WL-only forecast: {len(wl_only.free)}")
    same_points = _planned_keys(survey) == _planned_keys(wl_only)
    print(f"planned cosmological points: 3x2pt {fc.n_points}, the same as the WL-only forecast's: "
          f"{'yes' if same_points else 'NO'}")
    if fc_wl is not None:
        ok = fc.camb_calls == fc_wl[0].camb_calls
        print(f"CAMB Boltzmann calls: 3x2pt {fc.camb_calls}, WL only {fc_wl[0].camb_calls}   "
              f"ratio {fc.camb_calls / max(fc_wl[0].camb_calls, 1):.3f}   [{'OK' if ok else 'MORE'}]")
    else:
        print(f"CAMB Boltzmann calls: 3x2pt {fc.camb_calls} (WL only not run: --no-wl-run)")
    print(f"time outside CAMB / total = {outside / total:.3f}   (target <= 0.25)   "
          f"[{'OK' if outside / total <= 0.25 else 'OVER'}]")
    print(f"Fisher metric ({metric['calls']} calls) / time outside CAMB = {metric['seconds'] / outside:.3f}")
    if fc_wl is not None:
        print(f"3x2pt total / WL-only total = {total / fc_wl[1]:.3f}")
    print("timings of the 3x2pt run: " + ", ".join(f"{k} {v / total:.3f}" for k, v in fc.timings.items() if k != "total")
          + " (fractions of the total)")


if __name__ == "__main__":
    main()
