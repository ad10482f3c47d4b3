"""The forecast pipeline: plan -> evaluate each cosmology once -> signals -> derivatives ->
Fisher -> diagnostics.

Planning is separate from execution: :func:`plan` lists every distinct cosmological point
the derivative stencils need (the fiducial plus each rung of each cosmological parameter's
ladder), so that each is computed once (and, with a cache, once ever). Nuisance parameters
re-use the fiducial cosmology: they cost no CAMB call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import cosmology as _cosmo
from .cosmology import CosmologyResult, CosmologySettings
from .fisher import FisherMatrix
from .parameters import is_cosmological, unit_of
from .probes.base import Probe
from .survey import Survey


class DataVector:
    """All probes of a survey as one flat data vector with the sum of their Fisher metrics
    (probes are independent: no cross-covariance)."""

    def __init__(self, probes: Sequence[Probe]):
        self.probes = tuple(probes)
        self._shapes: list[tuple[int, ...]] | None = None

    def signal(self, cosmo: CosmologyResult, params: Mapping[str, float]) -> np.ndarray:
        parts = [np.asarray(p.signal(cosmo, params), dtype=float) for p in self.probes]
        if self._shapes is None:
            self._shapes = [a.shape for a in parts]
        return np.concatenate([a.ravel() for a in parts])

    def split(self, vec: np.ndarray) -> list[np.ndarray]:
        """Per-probe arrays from a flat vector (or a stack (n, flat))."""
        assert self._shapes is not None
        lead = vec.shape[:-1]
        out, i = [], 0
        for shp in self._shapes:
            n = int(np.prod(shp))
            out.append(vec[..., i:i + n].reshape(lead + shp))
            i += n
        return out

    def gram_per_probe(self, fid: np.ndarray, derivs: np.ndarray) -> list[np.ndarray]:
        fids = self.split(fid)
        ds = self.split(derivs)
        return [p.gram(f, d) for p, f, d in zip(self.probes, fids, ds)]

    def gram(self, fid: np.ndarray, derivs: np.ndarray) -> np.ndarray:
        return sum(self.gram_per_probe(fid, derivs))

    def norm(self, fid: np.ndarray, d: np.ndarray) -> float:
        return float(np.sqrt(max(self.gram(fid, d[None, :])[0, 0], 0.0)))


@dataclass(frozen=True)
class Plan:
    """Every evaluation a forecast needs.

    ``values[name]``: the parameter values at which the model is evaluated for parameter
    ``name`` (besides the fiducial). ``points``: the distinct cosmological points (dicts of
    cosmological parameters), the fiducial first; ``keys``: their content addresses.
    """

    values: Mapping[str, tuple[float, ...]]
    points: tuple[Mapping[str, float], ...]
    keys: tuple[str, ...]


def point_for(survey: Survey, name: str, value: float) -> dict[str, float]:
    """All parameters at the fiducial, with ``name`` set to ``value``."""
    p = dict(survey.fiducial)
    p[name] = float(value)
    return p


def cosmo_part(params: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in params.items() if is_cosmological(k)}


def plan(survey: Survey, values: Mapping[str, Sequence[float]]) -> Plan:
    """De-duplicate the cosmological points needed by ``values`` (name -> stencil values)."""
    settings = survey.settings
    fid = cosmo_part(survey.fiducial)
    seen: dict[str, dict[str, float]] = {_cosmo.point_key(fid, settings): fid}
    for name, vals in values.items():
        if not is_cosmological(name):
            continue
        for v in vals:
            pt = cosmo_part(point_for(survey, name, v))
            seen.setdefault(_cosmo.point_key(pt, settings), pt)
    return Plan(values={k: tuple(v) for k, v in values.items()}, points=tuple(seen.values()), keys=tuple(seen))


Evaluator = Callable[[Sequence[Mapping[str, float]], CosmologySettings], list[CosmologyResult]]


def evaluate(plan_: Plan, settings: CosmologySettings, evaluator: Evaluator | None = None) -> dict[str, CosmologyResult]:
    """Evaluate every planned point once; returns key -> CosmologyResult."""
    evaluator = evaluator or _cosmo.compute_many
    results = evaluator(list(plan_.points), settings)
    return dict(zip(plan_.keys, results))


@dataclass(frozen=True)
class Signals:
    """The data vector at the fiducial and at every stencil value of every free parameter."""

    fiducial: np.ndarray
    at: Mapping[str, Mapping[float, np.ndarray]]


def signals(survey: Survey, dv: DataVector, plan_: Plan, cosmos: Mapping[str, CosmologyResult]) -> Signals:
    settings = survey.settings
    fid_cosmo = cosmos[plan_.keys[0]]
    fid = dv.signal(fid_cosmo, survey.fiducial)
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
    return Signals(fiducial=fid, at=at)


@dataclass
class Forecast:
    """Everything a run produced (written to HDF5 by :func:`fishcast.io_forecast.write`)."""

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
    n_points: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)


def fisher_from_derivatives(survey: Survey, dv: DataVector, fid_signal: np.ndarray,
                            derivs: Mapping[str, np.ndarray]) -> tuple[dict[str, FisherMatrix], FisherMatrix, FisherMatrix]:
    """Per-probe Fisher matrices, the prior matrix, and their sum."""
    names = list(survey.free)
    fid = [survey.fiducial[n] for n in names]
    units = [unit_of(n) for n in names]
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
