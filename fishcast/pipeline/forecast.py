"""The forecast: the planned cosmologies (:mod:`~fishcast.pipeline.plan`) evaluated once
each -> signals of every probe -> derivatives -> Fisher -> diagnostics.

Planning is separate from execution: :func:`fishcast.pipeline.plan.plan` lists every
distinct cosmological point before any is computed. The probes are used only through the
hooks declared on :class:`fishcast.probes.base.Probe`; their fiducial-dependent state (e.g.
the shell volumes of the fiducial cosmology) is returned by ``fiducial_context`` and handed
back to their Fisher metric, never stored on them.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import cosmology as _cosmo
from ..cosmology import CosmologyResult, CosmologySettings
from ..errors import ComputationError
from ..fisher import FisherMatrix
from ..parameters import is_cosmological
from ..probes.base import Cosmology, Probe
from ..survey import Survey
from .plan import (
    Evaluator, Plan, cosmo_part, drop_failed, evaluate, extend_plan, failed_key, plan, point_for, stencils,
    where_failed,
)


class DataVector:
    """All probes of a survey as one flat data vector with the sum of their Fisher metrics
    (probes are independent: no cross-covariance).

    Made at the fiducial (:meth:`at_fiducial`): the shapes of the probes' signals and their
    fiducial contexts (:meth:`fishcast.probes.base.Probe.fiducial_context`) are fixed then.
    """

    def __init__(self, probes: Sequence[Probe], shapes: Sequence[tuple[int, ...]], contexts: Sequence[Any]):
        self.probes = tuple(probes)
        self.shapes = tuple(tuple(s) for s in shapes)
        self.contexts = tuple(contexts)
        #: whether each probe's signal takes the fiducial context (a ``context`` argument)
        self._signal_context = tuple("context" in inspect.signature(p.signal).parameters for p in self.probes)
        if not len(self.probes) == len(self.shapes) == len(self.contexts):
            raise ValueError("one shape and one context per probe")

    @classmethod
    def at_fiducial(cls, probes: Sequence[Probe], cosmo: Cosmology,
                    params: Mapping[str, float]) -> tuple["DataVector", np.ndarray]:
        """The data vector of ``probes`` and its value at the fiducial ``cosmo``/``params``."""
        parts = [np.asarray(p.signal(cosmo, params), dtype=float) for p in probes]
        contexts = [p.fiducial_context(cosmo, params) for p in probes]
        dv = cls(probes, [a.shape for a in parts], contexts)
        return dv, np.concatenate([a.ravel() for a in parts])

    def signal(self, cosmo: Cosmology, params: Mapping[str, float]) -> np.ndarray:
        parts = [np.asarray(p.signal(cosmo, params, c) if t and c is not None else p.signal(cosmo, params), dtype=float)
                 for p, c, t in zip(self.probes, self.contexts, self._signal_context)]
        for p, a, shp in zip(self.probes, parts, self.shapes):
            if a.shape != shp:
                raise ComputationError(f"{p.name}: the signal has shape {a.shape} here and {shp} at the fiducial")
        return np.concatenate([a.ravel() for a in parts])

    def split(self, vec: np.ndarray) -> list[np.ndarray]:
        """Per-probe arrays from a flat vector (or a stack (n, flat))."""
        lead = vec.shape[:-1]
        out, i = [], 0
        for shp in self.shapes:
            n = int(np.prod(shp))
            out.append(vec[..., i:i + n].reshape(lead + shp))
            i += n
        return out

    def gram_per_probe(self, fid: np.ndarray, derivs: np.ndarray) -> list[np.ndarray]:
        fids = self.split(fid)
        ds = self.split(derivs)
        return [p.gram(f, d, c) for p, f, d, c in zip(self.probes, fids, ds, self.contexts)]

    def gram(self, fid: np.ndarray, derivs: np.ndarray) -> np.ndarray:
        return sum(self.gram_per_probe(fid, derivs))

    def norm(self, fid: np.ndarray, d: np.ndarray) -> float:
        return float(np.sqrt(max(self.gram(fid, d[None, :])[0, 0], 0.0)))


@dataclass(frozen=True)
class Signals:
    """The data vector at the fiducial and at every stencil value of every free parameter."""

    fiducial: np.ndarray
    at: Mapping[str, Mapping[float, np.ndarray]]


def signals(survey: Survey, plan_: Plan, cosmos: Mapping[str, CosmologyResult]) -> tuple[DataVector, Signals]:
    """The survey's data vector (made at the fiducial cosmology, the first planned point) and
    its value at every stencil value of every free parameter."""
    settings = survey.settings
    fid_cosmo = cosmos[plan_.keys[0]]
    dv, fid = DataVector.at_fiducial(survey.probes, fid_cosmo, survey.fiducial)
    at: dict[str, dict[float, np.ndarray]] = {}
    for name, vals in plan_.values.items():
        at[name] = {}
        for v in vals:
            params = point_for(survey, name, v)
            if is_cosmological(name):
                cosmo = cosmos[_cosmo.point_key(cosmo_part(params), settings)]
            else:
                cosmo = fid_cosmo
            at[name][float(v)] = dv.signal(cosmo, params)
    return dv, Signals(fiducial=fid, at=at)


#: the stages of a forecast whose CAMB cost is counted apart: the fiducial and every round of
#: the derivative sweeps, and the Gaussian-validity check
COST_STAGES = ("derivatives", "validity")


@dataclass
class CambCost:
    """What the cosmology evaluations of one forecast cost, per stage (:data:`COST_STAGES`):
    ``runs``, the Boltzmann (CAMB transfer-function) runs made, wherever they ran -- in this
    process or in worker processes (:func:`fishcast.cosmology.count_worker_calls`); and
    ``cache_hits``, the cosmology points read from the on-disk cache instead of computed. A point
    the run had already evaluated (the validity check re-using the fiducial or a stencil
    point) costs neither. Points that differ only in primordial parameters (sigma8, A_s,
    n_s) share one Boltzmann run; ``reused``, the points computed from a CAMB transfer object
    this process still held from an earlier call (:func:`fishcast.cosmology.transfer_store`:
    e.g. the validity check's n_s / sigma8 directions on the fiducial's): no Boltzmann run."""

    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COST_STAGES, 0))
    cache_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COST_STAGES, 0))
    reused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COST_STAGES, 0))

    @property
    def total(self) -> int:
        """Every Boltzmann run of the forecast."""
        return int(sum(self.runs.values()))

    @property
    def total_cache_hits(self) -> int:
        return int(sum(self.cache_hits.values()))

    @property
    def total_reused(self) -> int:
        """Points computed from a held transfer object (no Boltzmann run), every stage."""
        return int(sum(self.reused.values()))

    def counting(self, stage: str, factory: Callable):
        """``factory(cache, on_point)`` (an evaluator factory) whose evaluators add their
        Boltzmann runs and cache hits to ``stage``. Runs are read off
        :func:`fishcast.cosmology.boltzmann_calls` around each call (it counts the runs of
        worker processes too), so a call that fails still counts the runs it made; cache
        hits off ``cache.stats.hits`` of the cache the evaluator is given."""
        if stage not in self.runs:
            raise ValueError(f"unknown stage {stage!r}: one of {', '.join(COST_STAGES)}")

        def make(cache, on_point):
            evaluate = factory(cache, on_point)

            def counted(points, settings):
                runs0 = _cosmo.boltzmann_calls()
                reused0 = _cosmo.transfer_reuses()
                hits0 = _cache_hits(cache)
                try:
                    return evaluate(points, settings)
                finally:
                    self.runs[stage] += _cosmo.boltzmann_calls() - runs0
                    self.reused[stage] += _cosmo.transfer_reuses() - reused0
                    self.cache_hits[stage] += _cache_hits(cache) - hits0

            return counted

        return make


def _cache_hits(cache) -> int:
    """Points ``cache`` has served so far: those of the on-disk cache only (a retry after a
    CAMB failure re-reads this run's own results from a MemoryCache: no cache hit)."""
    from .cache import MemoryCache

    if cache is None or isinstance(cache, MemoryCache):
        return 0
    stats = getattr(cache, "stats", None)
    return int(getattr(stats, "hits", 0) or 0)


@dataclass
class Forecast:
    """Everything a run produced (written to HDF5 by :func:`fishcast.io_forecast.write`).

    ``camb_calls``: every Boltzmann run of the forecast (``camb_cost.total``, plus -- in a
    batch design -- the runs its planned points needed, computed once for the grid);
    ``camb_cost``: the same by stage, with the cache hits."""

    survey: Survey
    fisher: FisherMatrix  # all probes + priors
    probe_fisher: dict[str, FisherMatrix]
    prior_fisher: FisherMatrix
    derivatives: dict[str, np.ndarray]  # name -> chosen derivative of the flat data vector
    sweeps: dict[str, object]  # name -> fishcast.derivatives.ParameterSweep
    fiducial_cosmology: CosmologyResult
    products: dict[str, dict[str, tuple[np.ndarray, str]]]
    conditioning: object | None = None
    stability: object | None = None
    trust: str = "ok"
    trust_reasons: list[str] = field(default_factory=list)
    camb_calls: int = 0
    camb_cost: CambCost = field(default_factory=CambCost)
    n_points: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    #: rounds of plan -> evaluate -> analyse -> extend the derivative sweeps took (1 unless adaptive)
    rounds: int = 1
    #: probe name -> {dataset path: (array, units)} written under /fisher/probes/<probe>/
    probe_reports: dict[str, dict[str, tuple[np.ndarray, str]]] = field(default_factory=dict)


def fisher_from_derivatives(survey: Survey, dv: DataVector, fid_signal: np.ndarray,
                            derivs: Mapping[str, np.ndarray]) -> tuple[dict[str, FisherMatrix], FisherMatrix, FisherMatrix]:
    """Per-probe Fisher matrices, the prior matrix, and their sum."""
    names = list(survey.free)
    fid = [survey.fiducial[n] for n in names]
    units = [survey.unit(n) for n in names]  # from the parameter registry, via the survey
    stack = np.stack([derivs[n] for n in names])
    per_probe = {}
    for probe, F in zip(dv.probes, dv.gram_per_probe(fid_signal, stack)):
        per_probe[probe.name] = FisherMatrix(F, names, fid, units, provenance=[{"operation": "forecast", "probe": probe.name}])
    prior = np.diag([1.0 / survey.priors[n] ** 2 if n in survey.priors else 0.0 for n in names])
    prior_fm = FisherMatrix(prior, names, fid, units, provenance=[{"operation": "gaussian priors", "sigmas": dict(survey.priors)}])
    total = sum((f.matrix for f in per_probe.values()), np.zeros((len(names), len(names)))) + prior
    combined = FisherMatrix(total, names, fid, units, provenance=[{
        "operation": "forecast", "survey": survey.name, "input_sha256": survey.sha256,
        "probes": list(per_probe), "priors": dict(survey.priors),
        "note": "probes combined by adding Fisher matrices: cross-covariance between probes is neglected",
    }])
    return per_probe, prior_fm, combined


# ---------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------

Progress = Callable[[str, int], Callable[[], None]]
"""``progress(label, total)`` returns a function to call once per finished unit of work."""


def probe_reports(survey: Survey, dv: DataVector, fid_cosmo: Cosmology, fid_sig: np.ndarray,
                  derivs: Mapping[str, np.ndarray]) -> dict[str, dict[str, tuple[np.ndarray, str]]]:
    """Extra per-probe Fisher products (:meth:`fishcast.probes.base.Probe.reports`), for the
    probes that have any."""
    names = list(survey.free)
    stack = np.stack([derivs[n] for n in names])
    out: dict[str, dict[str, tuple[np.ndarray, str]]] = {}
    for probe, f_part, d_part, ctx in zip(dv.probes, dv.split(fid_sig), dv.split(stack), dv.contexts):
        rep = probe.reports(fid_cosmo, survey.fiducial, f_part, d_part, names, ctx)
        if rep:
            out[probe.name] = rep
    return out


def _no_progress(label: str, total: int) -> Callable[[], None]:
    return lambda: None


def run_forecast(survey: Survey, *, cache=None, progress: Progress | None = None,
                 evaluator_factory=None, allow_degenerate: bool = False) -> Forecast:
    """Run the forecast of ``survey``.

    ``cache``: a :class:`fishcast.pipeline.cache.Cache` or None. ``progress``: see :data:`Progress`.
    ``evaluator_factory(cache, on_point)`` builds the evaluator (serial by default; the batch
    module passes a parallel one).

    The fiducial's CAMB transfer object is kept in this process for the whole run
    (:func:`fishcast.cosmology.transfer_store`): the points that differ from it only in
    primordial parameters (n_s, sigma8: later sweep rounds, the Gaussian-validity check's
    n_s / sigma8 directions) cost no Boltzmann run. With a process pool, the fiducial is
    computed in this process while the workers start
    (:func:`fishcast.pipeline.execute.executor_evaluator_factory`), so that it is held here.
    """
    with _cosmo.transfer_store(keep=[(cosmo_part(survey.fiducial), survey.settings)]):
        return _run_forecast(survey, cache=cache, progress=progress, evaluator_factory=evaluator_factory,
                             allow_degenerate=allow_degenerate)


def _run_forecast(survey: Survey, *, cache, progress, evaluator_factory, allow_degenerate) -> Forecast:
    from .. import derivatives as _der
    from .cache import cached_evaluator

    progress = progress or _no_progress
    t0 = time.perf_counter()
    dconf = survey.config.derivatives
    specs, _ = stencils(survey)

    factory = evaluator_factory or (lambda c, on_point: cached_evaluator(c, on_point=on_point))
    if dconf.on_camb_failure == "degrade" and cache is None and evaluator_factory is None:
        from .cache import MemoryCache

        cache = MemoryCache()  # a retry must not recompute what finished
    cost = CambCost()
    t1 = time.perf_counter()
    derivative_factory = cost.counting("derivatives", factory)
    rounds = sweep_in_rounds(survey, specs, lambda label, n: derivative_factory(cache, progress(label, n)))
    cosmos, dv, sig, sweeps = rounds.cosmos, rounds.data_vector, rounds.signals, rounds.sweeps
    specs = rounds.specs  # the ladders as the rounds left them
    fid_sig = sig.fiducial
    derivs = {n: np.asarray(sweeps[n].derivative) for n in survey.free}
    t2 = t1 + rounds.seconds_evaluating
    per_probe, prior_fm, combined = fisher_from_derivatives(survey, dv, fid_sig, derivs)
    t3 = time.perf_counter()

    fid_cosmo = cosmos[rounds.fiducial_key]
    camb_failures = rounds.failures
    products = {p.name: p.products(fid_cosmo, survey.fiducial) for p in survey.probes}
    reports = probe_reports(survey, dv, fid_cosmo, fid_sig, derivs)
    fc = Forecast(
        survey=survey, fisher=combined, probe_fisher=per_probe, prior_fisher=prior_fm,
        derivatives=derivs, sweeps=sweeps, fiducial_cosmology=fid_cosmo, products=products,
        camb_calls=cost.total, camb_cost=cost, n_points=len(cosmos),
        probe_reports=reports, rounds=rounds.rounds,
    )
    check_cache = cache
    if check_cache is None and evaluator_factory is None:
        from .cache import MemoryCache

        check_cache = MemoryCache()  # a retry after a failed validity point keeps what finished
    validity_factory = cost.counting("validity", factory)
    _diagnose(fc, dv, sig, allow_degenerate,
              lambda n: validity_factory(check_cache, progress("validity-check evaluations", n)), cosmos, specs)
    fc.camb_calls = cost.total  # every Boltzmann run, the validity check's included
    if camb_failures:
        if fc.trust == "ok":
            fc.trust = "warn"
        fc.trust_reasons = [f"CAMB failed at a stencil point; the rungs needing it were dropped "
                            f"(derivatives.on_camb_failure: degrade): {m}" for m in camb_failures] + fc.trust_reasons
    t4 = time.perf_counter()
    fc.timings = {"plan": t1 - t0, "cosmology": t2 - t1, "signals_and_fisher": t3 - t2,
                  "diagnostics": t4 - t3, "total": t4 - t0}
    return fc


@dataclass
class SweepRounds:
    """What the rounds of :func:`sweep_in_rounds` produced: every cosmology evaluated (key ->
    result; the fiducial's key ``fiducial_key``), the data vector made at the fiducial, the
    signals at every stencil value, the final sweep and spec of every parameter, the CAMB
    failures whose rungs were dropped (``on_camb_failure: degrade``), the number of rounds and
    the time spent evaluating cosmologies [s]."""

    cosmos: dict[str, CosmologyResult]
    fiducial_key: str
    data_vector: DataVector
    signals: Signals
    sweeps: dict[str, object]
    specs: dict[str, object]
    failures: list[str]
    rounds: int
    seconds_evaluating: float


def sweep_in_rounds(survey: Survey, specs: Mapping[str, object],
                    evaluator_for: Callable[[str, int], Evaluator]) -> SweepRounds:
    """The derivative of the data vector with respect to every free parameter, in rounds:
    plan (the points of every rung planned so far, :func:`~fishcast.pipeline.plan.plan`) ->
    evaluate the new points only, all parameters together -> signals at the new values ->
    analyse -> extend the ladders of the adaptive sweeps that are not done
    (:func:`~fishcast.pipeline.plan.extend_plan`) -> ... until no ladder grows. Modes other
    than 'adaptive' take one round. Each point is evaluated once (and, through the
    evaluator's cache, once ever).

    ``evaluator_for(label, n)``: an evaluator for the ``n`` new points of a round. A CAMB
    failure stops the run, naming the evaluation it was; with ``derivatives.on_camb_failure:
    degrade`` the rungs that need the failed point are dropped (and never planned again) and
    the rounds go on; ComputationError when too few rungs are left.
    """
    from .. import derivatives as _der

    dconf = survey.config.derivatives
    degrade = dconf.on_camb_failure == "degrade"
    settings = survey.settings
    specs = dict(specs)
    values = {n: _der.plan_points(n, survey.fiducial[n], specs[n]) for n in survey.free}
    cosmos: dict[str, CosmologyResult] = {}
    failed: set[str] = set()
    failures: list[str] = []
    at: dict[str, dict[float, np.ndarray]] = {n: {} for n in survey.free}
    sweeps: dict[str, object] = {}
    done: set[str] = set()
    dv: DataVector | None = None
    fid_sig: np.ndarray | None = None
    rounds, seconds = 0, 0.0
    while True:
        plan_ = plan(survey, values)
        todo = [(k, p) for k, p in zip(plan_.keys, plan_.points) if k not in cosmos]
        if todo:
            label = "cosmology evaluations" + (f" (round {rounds + 1})" if rounds else "")
            t = time.perf_counter()
            try:
                results = evaluator_for(label, len(todo))([p for _, p in todo], settings)
            except ComputationError as exc:
                where = where_failed(survey, specs, plan_, str(exc))
                key = failed_key(plan_, str(exc))
                if not degrade or key is None or key == plan_.keys[0]:
                    raise ComputationError(f"{exc}\n{where}") from exc
                failures.append(f"{exc}; {where}")
                failed.add(key)
                specs, values = drop_failed(survey, specs, values, key, dconf, str(exc))
                continue
            finally:
                seconds += time.perf_counter() - t
            cosmos.update(zip((k for k, _ in todo), results))
        rounds += 1
        fid_cosmo = cosmos[plan_.keys[0]]
        if dv is None:
            dv, fid_sig = DataVector.at_fiducial(survey.probes, fid_cosmo, survey.fiducial)

        def norm(d: np.ndarray) -> float:
            return dv.norm(fid_sig, d)

        for name in survey.free:
            if name in done:
                continue
            for v in values[name]:
                if float(v) not in at[name]:
                    params = point_for(survey, name, v)
                    cosmo = (cosmos[_cosmo.point_key(cosmo_part(params), settings)]
                             if is_cosmological(name) else fid_cosmo)
                    at[name][float(v)] = dv.signal(cosmo, params)
            spec = specs[name]
            if spec.mode == "adaptive" and spec.n_rungs < 2:
                sweeps.pop(name, None)  # one rung left after a failure: no change to judge, grow first
            else:
                sweeps[name] = _der.analyse(name, survey.fiducial[name], spec, at[name], fid_sig, norm, dconf)
        grown = extend_plan(survey, {n: specs[n] for n in survey.free if n not in done}, sweeps, failed)
        done |= {n for n in survey.free if n not in grown}
        if not grown:
            break
        for name, spec in grown.items():
            specs[name] = spec
            values[name] = _der.plan_points(name, survey.fiducial[name], spec)
    # fewer complete rungs than a window and no way to grow (only after failed points): as before
    short = [n for n in survey.free if n not in sweeps or sweeps[n].basis == "short"]
    if short:
        n = short[0]
        raise ComputationError(
            "\n".join(failures) + f"\nderivatives.on_camb_failure is 'degrade', but too few complete rungs of "
            f"{n}'s ladder are left without the failed points (a sweep needs {dconf.window}); "
            f"lower derivatives.parameters.{n}.h_max or raise n_rungs")
    return SweepRounds(cosmos=cosmos, fiducial_key=plan_.keys[0], data_vector=dv,
                       signals=Signals(fiducial=fid_sig, at=at), sweeps={n: sweeps[n] for n in survey.free},
                       specs=specs, failures=failures, rounds=rounds, seconds_evaluating=seconds)


def _diagnose(fc: Forecast, dv: DataVector, sig: Signals, allow_degenerate: bool,
              evaluator=None, cosmos: Mapping[str, CosmologyResult] | None = None,
              specs: Mapping[str, object] | None = None) -> None:
    """Conditioning, stability of the errors, the Gaussian-validity check, and the verdict.

    The Gaussian-validity check (:mod:`fishcast.pipeline.validity`) re-uses ``cosmos`` (the
    run's evaluations) and screens its points against the domains of ``specs``; its failures
    degrade the check (a WARN), never the forecast. Its notes (a flagged direction that
    leaves every cosmological error within tolerance) do not change the verdict."""
    from .. import diagnostics as _diag
    from ..errors import DegenerateFisherError

    survey = fc.survey
    dconf = survey.config.diagnostics
    reasons: list[str] = []
    level = "ok"

    def worse(verdict: str) -> None:
        nonlocal level
        new = {"PASS": "ok", "WARN": "warn", "FAIL": "fail"}[str(verdict).upper()]
        order = {"ok": 0, "warn": 1, "fail": 2}
        if order[new] > order[level]:
            level = new

    for n, sw in fc.sweeps.items():
        if sw.verdict != "PASS":
            worse(sw.verdict)
            reasons.append(f"{n}: derivative {sw.verdict} ({sw.reason}){': ' + sw.message if sw.message else ''}")
    names = list(fc.fisher.names)
    report = _diag.conditioning_report(fc.fisher.matrix, names, dconf.thresholds(), units=fc.fisher.units,
                                       raise_on_degenerate=False)
    fc.conditioning = report
    if report.verdict != "PASS":
        reasons.extend(report.reasons)
        if not (allow_degenerate and report.covariance is None):
            worse(report.verdict)
    invertible = report.cholesky_ok and report.covariance is not None
    if not invertible and allow_degenerate:
        proj = _diag.project_degenerate(fc.fisher.matrix, names, None, dconf.thresholds())
        fc.extra["projection"] = proj
        worse("WARN")
        reasons.append("degenerate directions projected out (--allow-degenerate): " + proj.note)
    if invertible:
        prior = fc.prior_fisher.matrix
        fc.stability = _diag.error_stability(fc.sweeps, lambda d: dv.gram(sig.fiducial, d), prior, dconf.thresholds())
        if fc.stability.verdict != "PASS":
            worse(fc.stability.verdict)
            reasons.extend(fc.stability.reasons)
        if dconf.gaussian_check and evaluator is not None:
            from .validity import gaussian_validity

            try:
                gv = gaussian_validity(fc, dv, sig, evaluator, cosmos, specs)
            except DegenerateFisherError:
                gv = None
            if gv is not None:
                fc.extra["gaussian_validity"] = gv
                if gv.verdict != "PASS":
                    worse("WARN")
                    reasons.extend(gv.reasons)
    fc.trust = level
    fc.trust_reasons = reasons
