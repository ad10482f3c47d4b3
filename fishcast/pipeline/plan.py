"""Planning a forecast: which cosmologies must be evaluated, before any is.

:func:`plan` lists every distinct cosmological point the derivative stencils need (the
fiducial plus each rung of each cosmological parameter's ladder), so that each is computed
once (and, with a cache, once ever). Nuisance parameters re-use the fiducial cosmology: they
cost no CAMB call. Adaptive sweeps are planned in rounds: the first plans each parameter's
start (by default its two central rungs ``2h, h`` of the expected plateau: four points, see
:mod:`fishcast.derivatives`), :func:`extend_plan` adds the rungs the analysis of the
previous round asks for, and only their points are evaluated (the rounds are run by
:func:`fishcast.pipeline.forecast.sweep_in_rounds`). With ``steps_from`` the start is placed
around the earlier run's steps, with as many rungs as its verdicts rested on
(:func:`known_starts`). When CAMB fails at a planned point, :func:`where_failed` says which
parameter, rung and step needed it, and :func:`drop_failed` re-plans without the rungs that
need it (``derivatives.on_camb_failure: degrade``).

The data flow of a run (``DESIGN.md``): survey -> **plan** -> evaluate (execute, cache) ->
signals, derivatives, Fisher (:mod:`~fishcast.pipeline.forecast`) -> io.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .. import cosmology as _cosmo
from ..cosmology import CosmologyResult, CosmologySettings
from ..errors import ComputationError
from ..parameters import is_cosmological
from ..survey import Survey

__all__ = [
    "Plan", "Evaluator", "point_for", "cosmo_part", "stencils", "plan", "plan_survey", "evaluate",
    "known_steps", "known_starts", "extend_plan", "failed_key", "where_failed", "drop_failed",
]


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
    """De-duplicate the cosmological points needed by ``values`` (name -> stencil values).

    Every value is checked first: a finite number, and every cosmological point inside the
    ranges CAMB may be given (:mod:`fishcast.camb_ranges`); otherwise an
    :class:`~fishcast.errors.InputError` names the parameter and the stencil value, before
    anything is computed."""
    settings = survey.settings
    fid = cosmo_part(survey.fiducial)
    check_planned_point(survey, None, None, fid)
    seen: dict[str, dict[str, float]] = {_cosmo.point_key(fid, settings): fid}
    for name, vals in values.items():
        for v in vals:
            if not is_cosmological(name):
                check_planned_point(survey, name, v, None)
                continue
            pt = cosmo_part(point_for(survey, name, v))
            check_planned_point(survey, name, v, pt)
            seen.setdefault(_cosmo.point_key(pt, settings), pt)
    return Plan(values={k: tuple(v) for k, v in values.items()}, points=tuple(seen.values()), keys=tuple(seen))


def check_planned_point(survey: Survey, name: str | None, value: float | None,
                        point: Mapping[str, float] | None) -> None:
    """InputError unless the stencil ``value`` of ``name`` is finite and the cosmological
    ``point`` it makes (None for a nuisance parameter) may be given to CAMB."""
    import math

    from .. import camb_ranges
    from ..errors import InputError

    dconf = survey.config.derivatives
    from_file = [("derivatives", "steps_from")] if dconf.steps_from and dconf.mode in ("fast", "adaptive") else []

    def at(name_: str) -> str:
        # the line of the parameter's derivative settings, else of the file its step comes
        # from (steps_from), else of its fiducial
        return survey.where(("derivatives", "parameters", name_), *from_file, ("parameters", "fiducial", name_))

    def source(name_: str) -> str:  # where a step of a mode 'fast' / 'adaptive' ladder came from
        ov = dconf.parameters.get(name_)
        if not from_file or (ov is not None and ov.step is not None):
            return ""
        return f" (derivatives.steps_from gives the steps of mode '{dconf.mode}': {dconf.steps_from})"

    if name is not None and (value is None or not math.isfinite(float(value))):
        raise InputError(f"{at(name)}: a stencil value of {name} is {value!r} "
                         f"(fiducial {survey.fiducial[name]:g}); lower derivatives.parameters.{name}.h_max (or step)"
                         f"{source(name)}")
    if name is not None and float(value) == float(survey.fiducial[name]):
        raise InputError(f"{at(name)}: a step of {name} is lost in rounding (the stencil value "
                         f"equals the fiducial {survey.fiducial[name]:.17g} in double precision); raise "
                         f"derivatives.parameters.{name}.h_max (or step){source(name)}")
    found = camb_ranges.problems(point) if point is not None else []
    if not found:
        return
    what = "; ".join(m for _, m in found)
    if name is None:
        raise InputError(f"{survey.where(('parameters', 'fiducial'))}: the fiducial cosmology cannot be given to "
                         f"CAMB: {what}")
    raise InputError(f"{at(name)}: the stencil point {name} = {value:.8g} (fiducial "
                     f"{survey.fiducial[name]:.8g}) cannot be given to CAMB: {what}; lower "
                     f"derivatives.parameters.{name}.h_max (or step), or set its domain "
                     f"(derivatives.parameters.{name}.lower / upper) so that the stencil turns one-sided"
                     f"{source(name)}")


Evaluator = Callable[[Sequence[Mapping[str, float]], CosmologySettings], list[CosmologyResult]]


def evaluate(plan_: Plan, settings: CosmologySettings, evaluator: Evaluator | None = None) -> dict[str, CosmologyResult]:
    """Evaluate every planned point once; returns key -> CosmologyResult."""
    evaluator = evaluator or _cosmo.compute_many
    results = evaluator(list(plan_.points), settings)
    return dict(zip(plan_.keys, results))



def stencils(survey: Survey) -> tuple[dict[str, object], dict[str, tuple[float, ...]]]:
    """The derivative spec of every free parameter (``derivatives`` section, and the steps of
    an earlier run in modes 'fast' and 'adaptive', with the rungs its verdicts rested on) and
    the parameter values its stencils need."""
    from .. import derivatives as _der

    from ..errors import InputError, relocated

    dconf = survey.config.derivatives
    known, rungs = known_starts(survey)
    specs, values = {}, {}
    for n in survey.free:
        try:
            specs[n] = _der.resolve_spec(n, survey.fiducial[n], dconf, known.get(n), survey.parameter(n),
                                         known_rungs=rungs.get(n))
            values[n] = _der.plan_points(n, survey.fiducial[n], specs[n])
        except InputError as exc:
            # the YAML's own settings were checked at load: what is left comes from a step of
            # steps_from, else from the parameter's derivative settings
            paths = [("derivatives", "parameters", n)] + ([("derivatives", "steps_from")] if n in known else [])
            raise relocated(exc, f"{survey.where(*paths)}: {exc}"
                            + (f" (the step {known[n]:.6g} of {n} comes from derivatives.steps_from)"
                               if n in known else "")) from None
    return specs, values


def plan_survey(survey: Survey) -> Plan:
    """The :class:`Plan` of one survey, as :func:`fishcast.pipeline.forecast.run_forecast`
    makes it."""
    return plan(survey, stencils(survey)[1])


def known_steps(survey: Survey) -> dict[str, float]:
    """Chosen steps of an earlier run (derivatives modes 'fast' and 'adaptive', ``steps_from``)."""
    return known_starts(survey)[0]


def known_starts(survey: Survey) -> tuple[dict[str, float], dict[str, int]]:
    """Chosen steps of an earlier run (derivatives modes 'fast' and 'adaptive',
    ``steps_from``) and the rungs each of its verdicts rested on (2 for an adaptive 2-rung
    start, the window's size for a window: mode 'adaptive' starts from as many)."""
    dconf = survey.config.derivatives
    if dconf.mode not in ("fast", "adaptive") or not dconf.steps_from:
        return {}, {}
    from ..errors import InputError, relocated

    try:
        return _read_steps_from(survey)
    except InputError as exc:  # the HDF5 file's own message, after the YAML key that names it
        raise relocated(exc, f"{survey.where(('derivatives', 'steps_from'))}: {exc}") from None


def _read_steps_from(survey: Survey) -> tuple[dict[str, float], dict[str, int]]:
    """:func:`known_starts` from the file ``derivatives.steps_from`` names (its errors name
    the HDF5 file and the group; the caller puts the YAML key in front)."""
    dconf = survey.config.derivatives
    import pathlib

    from ..errors import FileFormatError
    from ..io import open_forecast
    from ..io.sweeps import known_rungs_from_hdf5, known_steps_from_hdf5

    path = pathlib.Path(dconf.steps_from)
    if not path.is_absolute():
        path = pathlib.Path(survey.path).parent / path
    import math

    with open_forecast(path) as f:
        if "derivatives" not in f:
            raise FileFormatError(f"{path}: no /derivatives group to take steps from")
        try:
            steps = known_steps_from_hdf5(f["derivatives"])
        except (TypeError, ValueError, KeyError) as exc:
            raise FileFormatError(f"{path}: /derivatives: a chosen step is not a number ({exc})") from None
        try:
            rungs = known_rungs_from_hdf5(f["derivatives"])
        except (TypeError, ValueError, KeyError) as exc:
            raise FileFormatError(f"{path}: /derivatives: a plateau window (window_start, window_stop) is not "
                                  f"a whole number ({exc})") from None
    for name, step in steps.items():
        if not (math.isfinite(step) and step > 0):
            raise FileFormatError(f"{path}: /derivatives/{name}: chosen_step = {step!r} is not a positive, "
                                  "finite step")
    return steps, rungs


def extend_plan(survey: Survey, specs: Mapping[str, object], sweeps: Mapping[str, object],
                failed: set[str] = frozenset()) -> dict[str, object]:
    """The next round of the adaptive sweeps: for each parameter of ``specs`` whose ladder
    grows, its new spec (:func:`fishcast.derivatives.extend_ladder`; ``sweeps[name]`` is the
    analysis of its current rungs, absent when it has fewer rungs than the window). A rung that
    needs a point of ``failed`` (keys where CAMB failed) is never added. Empty: every sweep is
    done."""
    from .. import derivatives as _der

    settings = survey.settings
    out = {}
    for name in specs:
        def available(v: float, name=name) -> bool:
            if not failed or not is_cosmological(name):
                return True
            return _cosmo.point_key(cosmo_part(point_for(survey, name, v)), settings) not in failed

        new = _der.extend_ladder(name, survey.fiducial[name], specs[name], sweeps.get(name), available)
        if new is not None:
            out[name] = new
    return out


def failed_key(plan_: Plan, message: str) -> str | None:
    """The planned point a CAMB failure message is about (it quotes
    :func:`fishcast.cosmology.describe_point` of the point), or None."""
    for k, pt in zip(plan_.keys, plan_.points):
        if _cosmo.describe_point(_cosmo.full_params(pt)) in message:
            return k
    return None


def where_failed(survey: Survey, specs: Mapping[str, object], plan_: Plan, message: str) -> str:
    """Which planned evaluation a failure message is about: the fiducial, or the parameter,
    rung and step of each derivative ladder that needs the failed point (matched by the
    point's description, :func:`fishcast.cosmology.describe_point`, which CAMB failures quote
    whether the point ran here or in a worker process)."""
    from .. import derivatives as _der

    settings = survey.settings
    key = failed_key(plan_, message)
    if key is None:
        return "(the failed point is not one of the planned evaluations)"
    if key == plan_.keys[0]:
        return "the failed point is the fiducial cosmology: no derivative can be taken"
    uses, names = [], []
    for name in survey.free:
        if not is_cosmological(name):
            continue
        ladder = _der.plan_ladder(name, survey.fiducial[name], specs[name])
        for value in ladder.values():
            if _cosmo.point_key(cosmo_part(point_for(survey, name, value)), settings) == key:
                uses.append(ladder.describe(value))
                names.append(name)
    if not uses:
        return "(the failed point is not one of the planned evaluations)"
    return ("the failed point is the derivative step " + "; ".join(uses)
            + f" (a smaller derivatives.parameters.{names[0]}.h_max, or a narrower domain, avoids it)")


def drop_failed(survey: Survey, specs, values, key: str, dconf, message: str):
    """Specs and stencil values without the rungs that need the failed point ``key``
    (``derivatives.on_camb_failure: degrade``); ComputationError when too little is left."""
    from .. import derivatives as _der

    settings = survey.settings
    specs, values = dict(specs), dict(values)
    for name in survey.free:
        if not is_cosmological(name):
            continue

        def available(v: float, name=name) -> bool:
            return _cosmo.point_key(cosmo_part(point_for(survey, name, v)), settings) != key

        new = _der.shrink_to_complete_rungs(name, survey.fiducial[name], specs[name], available, dconf)
        if new is None:
            raise ComputationError(
                f"{message}\nderivatives.on_camb_failure is 'degrade', but too few complete rungs of "
                f"{name}'s ladder are left without the failed point (a sweep needs {dconf.window}); "
                f"lower derivatives.parameters.{name}.h_max or raise n_rungs")
        if new is not specs[name]:
            specs[name] = new
            values[name] = _der.plan_points(name, survey.fiducial[name], new)
    return specs, values


