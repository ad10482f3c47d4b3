"""Batch survey planning: a grid of survey designs, every cosmology computed once.

A grid YAML names a base survey and the keys to vary::

    name: lsst-wl-grid
    survey: ../recipes/lsst-y10-wl.yaml     # relative to this file
    combine: product                        # product (every combination) or zip (i-th with i-th)
    set:                                    # overrides applied to every design (optional)
      probes.weak_lensing.area_deg2: null
    axes:                                   # dotted survey key -> values
      probes.weak_lensing.f_sky: [0.1, 0.25, 0.4]
      probes.weak_lensing.n_gal: {start: 10, stop: 40, num: 4}
      probes.weak_lensing.ell.max: {start: 1000, stop: 5000, num: 3, spacing: log, label: ell_max}
    figure_of_merit: [w0, wa]               # the pair of the summary's figure of merit

A design is the base survey with the axis values set (:func:`fishcast.survey.survey_from_document`
overrides; list items are addressed by index: ``probes.counts_in_cells.tracers.1.density.values``);
it is named from its axis values (``f_sky=0.1__n_gal=10__ell_max=1000``; list values joined
by ``_``). Axis labels default to the key without the ``probes.<probe>.``,
``parameters.fiducial.`` or ``cosmology.accuracy.`` prefix, dots replaced by ``_``.

Running a grid (:func:`run_batch`):

1. every design is validated and planned (fiducial plus every stencil point of every
   parameter: in the default adaptive mode, the starting window of each ladder); a design
   that does not validate fails alone, with its name and the reason;
2. the distinct cosmology points of all designs are collected (content addresses of
   :func:`fishcast.cosmology.point_key`: designs that differ only in survey specs such as
   f_sky, n_gal or ell_max share every point), read from the cache where present, and the
   rest computed once through the executor (:mod:`fishcast.pipeline.execute`), grouped so that points
   differing only in n_s, A_s, sigma8 share one Boltzmann run;
3. the probe work of each design (signals, derivatives, Fisher, diagnostics) runs as one task
   per design from those results and writes ``<output>/<design>.h5``
   (:func:`fishcast.io.write_forecast`, atomic). The results reach the design tasks by the
   executor (Dask scatters them once), or, for local processes with a cache, by the cache:
   each worker reads a point once and keeps it;
4. ``summary.h5`` and ``summary.csv`` (figure of merit and marginalized errors per design,
   failed designs with their reasons) and ``fom.png`` (figure of merit against each axis;
   needs matplotlib) are written.

Every design file is computed the same way whatever the backend: cosmology results are
bitwise identical whether computed, read from the cache, or sent between processes, and each
design's probe work is one deterministic function of them. The Gaussian-validity check of a
design (``diagnostics.gaussian_check``) needs up to 2N points that depend on that design's own
Fisher matrix: they cannot be planned ahead and are computed inside the design's task
(through the cache), as in a single run (:mod:`fishcast.pipeline.validity`): points outside
the model's domain are not computed, points the grid already evaluated are re-used, and a
failure there degrades that design's check (a WARN in its file and in the summary), never
the design. Switch it off in large grids to save its evaluations. So are the rungs an
adaptive sweep adds where its starting window does not pass (designs that share the
cosmology share them through the cache); ``derivatives.mode: sweep`` plans every rung ahead
instead.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import pathlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import FishcastError, InputError, SurveyError
from ..survey import Survey, check_numbers, pydantic_problems, survey_from_document
from .plan import plan_survey
from ..yamlio import YamlDocument, dotted, line_of

#: at most this many designs in one grid
MAX_DESIGNS = 100_000

#: an axis value: a YAML scalar, or a list/mapping (e.g. a density per redshift shell)
Scalar = Any

_LABEL_PREFIXES = (r"^probes\.[^.]+\.", r"^parameters\.fiducial\.", r"^cosmology\.accuracy\.", r"^cosmology\.")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AxisSpec(_Model):
    """One varied key: explicit ``values``, or a range ``start``..``stop`` (inclusive) with
    ``num`` points (linear or log spacing) or a ``step``."""

    values: list[Any] | None = Field(None, min_length=1, description="the values, in order (any YAML value)")
    start: int | float | None = Field(None, description="first value of a range")
    stop: int | float | None = Field(None, description="last value of a range (included)")
    num: int | None = Field(None, ge=1, le=MAX_DESIGNS, description="number of values of a range")
    step: int | float | None = Field(None, gt=0, description="spacing of a linear range (instead of num)")
    spacing: Literal["linear", "log"] = Field("linear", description="spacing of a range with num")
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+-]+$", max_length=60,
                              description="name of the axis in design names and the summary")

    @model_validator(mode="after")
    def _check(self) -> "AxisSpec":
        rng = (self.start, self.stop, self.num, self.step)
        if self.values is not None:
            if any(v is not None for v in rng):
                raise ValueError("give either values or a range (start, stop, num or step), not both")
            return self
        if self.start is None or self.stop is None:
            raise ValueError("a range needs start and stop (or give values)")
        if (self.num is None) == (self.step is None):
            raise ValueError("a range needs exactly one of num and step")
        if self.step is not None and self.spacing == "log":
            raise ValueError("a log range is given by num, not step")
        if self.spacing == "log" and (self.start <= 0 or self.stop <= 0):
            raise ValueError("a log range needs positive start and stop")
        if self.step is not None and self.stop < self.start:
            raise ValueError("stop must be >= start with a step")
        if self.step is not None and (self.stop - self.start) / self.step >= MAX_DESIGNS:
            raise ValueError(f"the range has more than {MAX_DESIGNS} values")
        return self

    def expand(self) -> list[Scalar]:
        """The values of the axis. Ranges of integers (start, stop, step integers; or num
        points that fall on integers) give integers; floats are rounded to 12 significant
        digits so that 0.1 + 2 x 0.1 is 0.3 in names and files."""
        if self.values is not None:
            return list(self.values)
        import numpy as np

        start, stop = self.start, self.stop
        if self.step is not None:
            n = int(math.floor((stop - start) / self.step * (1 + 1e-12) + 1e-9)) + 1
            vals = [start + i * self.step for i in range(n)]
        elif self.spacing == "log":
            vals = list(np.geomspace(start, stop, self.num))
        else:
            vals = list(np.linspace(start, stop, self.num))
        ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop, self.step) if x is not None)
        out: list[Scalar] = []
        for v in vals:
            v = float(f"{float(v):.12g}")
            out.append(int(round(v)) if ints and v == round(v) else v)
        return out


class GridConfig(_Model):
    """A grid of survey designs (see the module docstring)."""

    name: str = Field(..., min_length=1, max_length=200, description="grid name")
    description: str = Field("", max_length=10_000, description="free text")
    survey: str = Field(..., min_length=1, description="base survey YAML (relative to the grid file)")
    combine: Literal["product", "zip"] = Field("product", description="product: every combination; zip: i-th values together")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value, applied to every design")
    axes: dict[str, list[Any] | AxisSpec] = Field(..., min_length=1, description="dotted survey key -> values or range")
    figure_of_merit: tuple[str, str] = Field(("w0", "wa"), description="parameter pair of the summary's figure of merit")


@dataclass(frozen=True)
class Design:
    """One design: its name, its axis values (label -> value) and the survey overrides."""

    name: str
    values: Mapping[str, Scalar]
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class Grid:
    """A validated grid file."""

    path: str
    text: str
    sha256: str
    config: GridConfig
    base: pathlib.Path
    labels: tuple[str, ...]
    designs: tuple[Design, ...]

    @property
    def name(self) -> str:
        return self.config.name


#: columns of the summaries (summary.csv, summary.h5 /designs) an axis label may not take
SUMMARY_COLUMNS = frozenset({"design", "name", "status", "file", "trust", "fom", "reason", "values"})


def reserved_label(label: str) -> str | None:
    """Why ``label`` cannot name an axis (None: it can): a summary column, a prefix of the
    per-parameter columns (``sigma_``, ``fom_``), or a name made of dots only ('.', '..',
    which HDF5 and file paths read as folders)."""
    if label.strip(".") == "":
        return "is made of dots only (read as a folder in HDF5 paths)"
    if label.lower() in SUMMARY_COLUMNS:
        return "is a column of the summary"
    if label.lower().startswith(("sigma_", "fom_")):
        return "would collide with the summary's sigma_<parameter> / fom_<a>_<b> columns"
    return None


def axis_label(key: str) -> str:
    out = key
    for pat in _LABEL_PREFIXES:
        new = re.sub(pat, "", out)
        if new != out:
            out = new
            break
    return out.replace(".", "_")


def format_value(v: Scalar) -> str:
    """A value as it appears in a design name."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.10g}"
    if isinstance(v, (list, tuple)):
        return "_".join(format_value(x) for x in v)
    if isinstance(v, dict):
        return "_".join(f"{re.sub(r'[^A-Za-z0-9_.+-]', '-', str(k))}-{format_value(x)}" for k, x in v.items())
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", str(v))


def design_name(values: Mapping[str, Scalar]) -> str:
    return "__".join(f"{k}={format_value(v)}" for k, v in values.items())


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and validate a grid YAML; errors name file:line:key (:class:`SurveyError`).
    The designs themselves are validated when the grid is planned (:func:`plan_batch`)."""
    from ..yamlio import read_yaml

    p = pathlib.Path(path)
    return grid_from_document(read_yaml(p, "grid file"), p.parent)


def is_grid(data: object) -> bool:
    """Whether the data of a YAML document is a batch grid (top-level ``survey`` and ``axes``
    keys) rather than a survey."""
    return isinstance(data, dict) and "axes" in data and "survey" in data and "parameters" not in data


def validate_grid(grid: str | os.PathLike | YamlDocument) -> BatchPlan:
    """Validate and plan every design of a grid without computing anything (``fishcast
    validate GRID.yaml``): the designs that validated and those that did not. ``grid``: the
    grid file, or its document read already (its folder: that of the file it names)."""
    if isinstance(grid, YamlDocument):
        return plan_batch(grid_from_document(grid, pathlib.Path(grid.filename).parent))
    return plan_batch(load_grid(grid))


def grid_from_text(text: str, filename: str = "<grid>", grid_dir: pathlib.Path | None = None) -> Grid:
    """Validate a grid given as YAML text: :func:`grid_from_document` of the parsed text."""
    return grid_from_document(YamlDocument.parse(text, filename), grid_dir)


def grid_from_document(doc: YamlDocument, grid_dir: pathlib.Path | None = None) -> Grid:
    """Validate a grid given as a parsed YAML document (``grid_dir`` resolves the base
    survey's path); errors name file:line:key (:class:`SurveyError`)."""
    text, filename, data, lines = doc.text, doc.filename, doc.data, doc.lines
    if not isinstance(data, dict):
        raise SurveyError(filename, [(1, "", f"the top level must be a mapping of keys, not a {type(data).__name__}")])
    try:
        config = GridConfig.model_validate(data)
    except ValidationError as exc:
        raise SurveyError(filename, pydantic_problems(exc, lines, data)) from None
    problems: list[tuple[int | None, str, str]] = []

    def problem(path: tuple, msg: str) -> None:
        problems.append((line_of(lines, path), dotted(path), msg))

    check_numbers(config, data, (), problem)  # finite numbers, and no YAML boolean taken for one
    if problems:
        raise SurveyError(filename, problems)
    grid_dir = grid_dir if grid_dir is not None else pathlib.Path(".")
    base = pathlib.Path(config.survey)
    if not base.is_absolute():
        base = grid_dir / base
    if not base.is_file():
        problem(("survey",), f"the base survey {base} does not exist")

    keys = list(config.axes)
    values: dict[str, list[Scalar]] = {}
    labels: dict[str, str] = {}
    for key, spec in config.axes.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", key):
            problem(("axes", key), "an axis is a dotted survey key such as probes.weak_lensing.f_sky")
            continue
        if key in config.set:
            problem(("axes", key), "this key is also in 'set'")
        spec = spec if isinstance(spec, AxisSpec) else AxisSpec(values=spec)
        vals = spec.expand()
        if len(set(map(format_value, vals))) != len(vals):
            problem(("axes", key), "the values repeat (or are equal to 10 significant digits)")
        values[key] = vals
        label = spec.label or axis_label(key)
        if label in labels.values():
            problem(("axes", key), f"two axes have the label {label!r}: give one a 'label'")
        elif reserved_label(label):
            problem(("axes", key), f"the label {label!r} {reserved_label(label)}: give the axis another 'label'")
        labels[key] = label
    if config.combine == "zip" and len({len(v) for v in values.values()}) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in values.items())
        problem(("combine",), f"zip needs axes of equal length ({sizes})")
    if not problems:
        n = math.prod(len(v) for v in values.values()) if config.combine == "product" else len(next(iter(values.values())))
        if n > MAX_DESIGNS:
            problem(("axes",), f"{n} designs: at most {MAX_DESIGNS} in one grid")
    if problems:
        raise SurveyError(filename, problems)

    combos = itertools.product(*values.values()) if config.combine == "product" else zip(*values.values())
    designs = []
    for combo in combos:
        vals = {labels[k]: v for k, v in zip(keys, combo)}
        overrides = dict(config.set)
        overrides.update(dict(zip(keys, combo)))
        designs.append(Design(design_name(vals), vals, overrides))
    return Grid(path=filename, text=text, sha256=hashlib.sha256(text.encode()).hexdigest(), config=config,
                base=base, labels=tuple(labels[k] for k in keys), designs=tuple(designs))


# ---------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedDesign:
    design: Design
    survey: Survey
    keys: tuple[str, ...]  # content addresses of its cosmology points, fiducial first


@dataclass(frozen=True)
class DesignFailure:
    name: str
    values: Mapping[str, Scalar]
    stage: str  # validation | cosmology | forecast
    reason: str
    exit_code: int


@dataclass(frozen=True)
class BatchPlan:
    """The designs that validated, those that did not, and every distinct cosmology point
    (key -> (point, settings)) they need, in first-seen order."""

    planned: tuple[PlannedDesign, ...]
    failed: tuple[DesignFailure, ...]
    points: Mapping[str, tuple[Mapping[str, float], Any]]


@dataclass(frozen=True)
class DerivedField:
    """A field of :class:`~fishcast.cosmology.CosmologySettings` that is derived from the
    probes' needs unless the user gives it (:func:`shared_settings`).

    given: the ``cosmology.accuracy`` keys any of which, given (not null), makes the field
        the user's; share: the value a group of designs computes with, from their settings
        (each derived on its own); blank: the field's value in the grouping key when derived
        (designs that differ only there share their points)."""

    given: tuple[str, ...]
    share: Callable[[Sequence[Any]], Any]
    blank: Any


def _largest_k(group: Sequence[Any]) -> Any:
    return max(group, key=lambda st: st.k_max)


#: The settings derived from the probes' needs, shared by a batch grid's designs: a new such
#: setting is one entry. k_max and n_k come from the same design (a derived k_max comes with
#: its n_k, the reference table's nodes up to it: fishcast.cosmology.reference_k_nodes),
#: unless the user gave n_k.
DERIVED_FIELDS: dict[str, DerivedField] = {
    "k_max": DerivedField(("k_max",), lambda g: _largest_k(g).k_max, 0.0),
    "n_k": DerivedField(("k_max", "n_k"), lambda g: _largest_k(g).n_k, 0),
    "z_max": DerivedField(("z_max",), lambda g: max(st.z_max for st in g), 0.0),
    "transfer_high_precision": DerivedField(("transfer_high_precision",),
                                            lambda g: any(st.transfer_high_precision for st in g), False),
}


def shared_settings(surveys: list[Survey]) -> list[Survey]:
    """Designs whose CAMB settings differ only in what their probes ask for
    (:data:`DERIVED_FIELDS`: e.g. a grid over ell_max) are given the group's value of each
    (the largest k_max with its n_k, the largest z_max, CAMB's dense transfer sampling when
    any of them needs it), so that every cosmology point is computed once for the whole
    grid. A field the user gave (``cosmology.accuracy``) is kept as given."""
    import dataclasses

    def derived(sv: Survey) -> frozenset[str]:
        acc = sv.config.cosmology.accuracy
        return frozenset(name for name, d in DERIVED_FIELDS.items()
                         if not any(k in acc.model_fields_set and getattr(acc, k) is not None for k in d.given))

    groups: dict[tuple, list[int]] = {}
    for i, sv in enumerate(surveys):
        free = derived(sv)
        rest = dataclasses.replace(sv.settings, **{n: DERIVED_FIELDS[n].blank for n in free})
        groups.setdefault((rest, free), []).append(i)
    out = list(surveys)
    for (_, free), idx in groups.items():
        group = [surveys[i].settings for i in idx]
        shared = {n: DERIVED_FIELDS[n].share(group) for n in free}
        for i in idx:
            st = surveys[i].settings
            new = dataclasses.replace(st, **shared)
            if new != st:
                out[i] = dataclasses.replace(surveys[i], settings=new)
    return out


@functools.lru_cache(maxsize=1024)
def _where_in_grid(text: str, path: str, section: str, key: str) -> str:
    """``GRID:LINE: section.key`` of the grid file ``path`` (its ``text`` parsed once per
    key, not once per design)."""
    from ..yamlio import where_in

    return where_in(text, path, (section, key))


def set_by_grid(grid: Grid, design: Design, message: str) -> str:
    """``message`` (a design's located error, ``BASE:LINE: KEY: ...`` per line) with, after
    each line whose key the design sets from the grid (the key, a key below it, or the
    mapping that holds it), where the grid sets it: ``(this design sets KEY = VALUE:
    GRID:LINE: axes.KEY)`` -- the line of the base survey holds the value the grid replaced."""
    def norm(key: str) -> str:
        return re.sub(r"\[(\d+)\]", r".\1", key)

    out = []
    for line in message.splitlines():
        out.append(line)
        m = re.match(r"^.*?:\d+: (\S+?): ", line)
        if not m:
            continue
        key = norm(m.group(1))
        for ok, value in design.overrides.items():
            o = norm(str(ok))
            if key == o or key.startswith(o + ".") or o.startswith(key + "."):
                section = "axes" if ok in grid.config.axes else "set"
                out[-1] += f" (this design sets {ok} = {format_value(value)}: {_where_in_grid(grid.text, grid.path, section, ok)})"
                break
    return "\n".join(out)


def plan_batch(grid: Grid) -> BatchPlan:
    """Validate and plan every design; collect the distinct cosmology points (designs that
    differ only in what their probes need share settings: :func:`shared_settings`)."""
    from ..yamlio import read_yaml

    planned, failed = [], []
    points: dict[str, tuple[Mapping[str, float], Any]] = {}
    loaded = []
    # the base survey is read and parsed once, every design validated from its document (a
    # copy with the design's keys set); a base that cannot be read fails every design
    try:
        base: YamlDocument | FishcastError = read_yaml(grid.base, "survey file")
    except FishcastError as exc:
        base = exc
    for d in grid.designs:
        try:
            if isinstance(base, FishcastError):
                raise base.with_traceback(None)
            loaded.append((d, survey_from_document(base, grid.base.parent, d.overrides)))
        except FishcastError as exc:
            failed.append(DesignFailure(d.name, d.values, "validation", set_by_grid(grid, d, str(exc)), exc.exit_code))
    for d, survey in zip([d for d, _ in loaded], shared_settings([sv for _, sv in loaded])):
        try:
            p = plan_survey(survey)
        except FishcastError as exc:
            failed.append(DesignFailure(d.name, d.values, "validation", set_by_grid(grid, d, str(exc)), exc.exit_code))
            continue
        for key, pt in zip(p.keys, p.points):
            points.setdefault(key, (pt, survey.settings))
        planned.append(PlannedDesign(d, survey, tuple(p.keys)))
    return BatchPlan(tuple(planned), tuple(failed), points)


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CachedResult:
    """A cosmology result to be read from the cache at ``root`` by the worker (instead of
    being pickled to it with every design): local process pools share the disk."""

    root: str
    key: str


#: per-process memo of results read from the cache by design tasks (key -> result)
_MEMO: dict[str, Any] = {}
_MEMO_MAX = 256


def _resolve(cosmos: Mapping[str, Any]) -> dict[str, Any]:
    from .cache import Cache

    out = {}
    for k, v in cosmos.items():
        if isinstance(v, CachedResult):
            if k not in _MEMO:
                got = Cache(v.root).get(k)
                if got is None:  # gone meanwhile (cache cleared): recomputed through the cache
                    continue
                if len(_MEMO) >= _MEMO_MAX:
                    _MEMO.pop(next(iter(_MEMO)))
                _MEMO[k] = got
            v = _MEMO[k]
        out[k] = v
    return out


def design_task(survey: Survey, cosmos: Mapping[str, Any], output: str, cache_root: str | None,
                allow_degenerate: bool, fom_pair: tuple[str, str], camb_calls: int = 0) -> dict[str, Any]:
    """The probe work of one design, in a worker: forecast from the given cosmology results
    (:class:`CachedResult` references are read from the cache; points not given -- the
    Gaussian-validity check's -- go through the cache), write the HDF5 file, return the
    summary numbers."""
    import numpy as np

    cosmos = _resolve(cosmos)

    from .cache import Cache, cached_evaluator
    from ..cosmology import point_key
    from ..errors import DegenerateFisherError
    from .forecast import run_forecast
    from ..io import write_forecast

    def factory(cache, on_point):
        fallback = cached_evaluator(Cache(cache_root) if cache_root else None)

        def evaluate(points, settings):
            keys = [point_key(p, settings) for p in points]
            missing = [i for i, k in enumerate(keys) if k not in cosmos]
            extra = dict(zip(missing, fallback([points[i] for i in missing], settings))) if missing else {}
            return [cosmos[k] if k in cosmos else extra[i] for i, k in enumerate(keys)]

        return evaluate

    from ..errors import InputError

    try:
        fc = run_forecast(survey, evaluator_factory=factory, allow_degenerate=allow_degenerate)
    except InputError as exc:  # found after loading: named by file, line and key (as `fishcast run` does)
        located = survey.locate(exc)
        if located is exc:
            raise
        raise located from None
    # the Boltzmann runs its planned points needed (computed once for the whole grid, or
    # read from the cache), plus any this task made itself (the validity check's points, the
    # rungs an adaptive sweep added)
    own_calls = int(fc.camb_calls)
    fc.camb_cost.runs["derivatives"] += int(camb_calls)
    fc.camb_calls = int(camb_calls) + own_calls
    write_forecast(output, fc)
    names = list(fc.fisher.names)
    try:
        sigma = dict(zip(names, map(float, fc.fisher.marginalized_sigma())))
    except DegenerateFisherError:
        sigma = {n: float("nan") for n in names}
    fom = float("nan")
    if all(n in names for n in fom_pair):
        try:
            fom = float(fc.fisher.figure_of_merit(*fom_pair))
        except DegenerateFisherError:
            pass
    return {"names": names, "matrix": np.array(fc.fisher.matrix), "sigma": sigma, "fom": fom,
            "trust": fc.trust, "trust_reasons": list(fc.trust_reasons), "camb_calls": own_calls}


@dataclass(frozen=True)
class DesignResult:
    """A design that finished: its file, Fisher matrix, errors and figure of merit."""

    name: str
    values: Mapping[str, Scalar]
    path: pathlib.Path
    names: tuple[str, ...]
    matrix: Any
    sigma: Mapping[str, float]
    fom: float
    trust: str
    trust_reasons: tuple[str, ...] = ()


@dataclass
class BatchResult:
    grid: Grid
    output: pathlib.Path
    designs: list[DesignResult]
    failed: list[DesignFailure]
    stats: Any  # fishcast.pipeline.execute.EvaluationStats
    executor: str
    timings: dict[str, float] = field(default_factory=dict)
    summary_h5: pathlib.Path | None = None
    summary_csv: pathlib.Path | None = None
    plot: pathlib.Path | None = None
    plot_note: str = ""
    #: designs whose files were already complete and current: read, not recomputed
    resumed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every design finished, else the exit status of the first failure."""
        return self.failed[0].exit_code if self.failed else 0


Progress = Callable[[str, int], Callable[[], None]]


def _no_progress(label: str, total: int) -> Callable[[], None]:
    return lambda: None


def run_batch(grid: Grid, output: str | os.PathLike, *, executor=None, cache=None,
              progress: Progress | None = None, allow_degenerate: bool = False,
              plot: bool = True) -> BatchResult:
    """Run every design of ``grid``; write ``<output>/<design>.h5``, the summaries and the plot.

    ``executor``: a :class:`fishcast.pipeline.execute.Executor` (default: serial, in this process);
    ``cache``: a :class:`fishcast.pipeline.cache.Cache` or None; ``progress``: see
    :data:`fishcast.pipeline.forecast.Progress`. Failed designs are reported in the result (and the
    summary), never raised; an error that concerns every design (a bad grid, an output folder
    that cannot be written, an output name that is a special file or an input, no design
    valid) raises.
    """
    from .execute import EvaluationStats, SerialExecutor

    progress = progress or _no_progress
    executor = executor or SerialExecutor()
    out = prepare_output(grid, output)

    t0 = time.perf_counter()
    bp = plan_batch(grid)
    if not bp.planned:
        from ..yamlio import where_in

        raise InputError(f"{where_in(grid.text, grid.path, ('survey',))}: no design of the grid is valid:\n"
                         + "\n".join(f"{f.name}: {f.reason}" for f in bp.failed))

    bp, resumed = _resume(bp, grid, out)

    t1 = time.perf_counter()
    stats = EvaluationStats()
    cosmos, errors = _evaluate_points(bp, executor, cache, progress, stats)

    t2 = time.perf_counter()
    runnable, failed = _split_by_cosmology(bp, errors)
    done, failed_designs = _run_designs(runnable, cosmos, grid, out, executor, cache, progress, stats,
                                        allow_degenerate, bp.points)
    done = [*resumed, *done]
    order = {d.name: i for i, d in enumerate(grid.designs)}
    failed = sorted([*bp.failed, *failed, *failed_designs], key=lambda f: order[f.name])
    t3 = time.perf_counter()

    res = BatchResult(grid, out, done, failed, stats, executor.describe(), resumed=[d.name for d in resumed])
    res.timings = {"plan": t1 - t0, "cosmology": t2 - t1, "designs": t3 - t2}
    _write_summaries(res, out, plot)
    res.timings["total"] = time.perf_counter() - t0
    return res


#: the files a batch writes into its output folder besides one ``<design>.h5`` per design
SUMMARY_FILES = ("summary.h5", "summary.csv", "fom.png")


def prepare_output(grid: Grid, output: str | os.PathLike) -> pathlib.Path:
    """Create the output folder and check, before anything is computed, that every file the
    batch writes there may be written: none is a special file (FIFO, device, folder, or a
    symbolic link to one), and none is the grid file or the base survey."""
    from ..io.atomic import check_output_path

    out = pathlib.Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise InputError(f"cannot write into {out}")
    inputs = [p for p in (grid.path, grid.base) if p and os.path.exists(p)]
    for name in (*SUMMARY_FILES, *(f"{d.name}.h5" for d in grid.designs)):
        check_output_path(out / name, inputs)
    return out


def _resume(bp: BatchPlan, grid: Grid, out: pathlib.Path) -> tuple[BatchPlan, list[DesignResult]]:
    """Designs whose files are complete and current (:func:`current_design_file`) are read,
    not redone: ``(the plan of the others, only the points they need; the designs read)``."""
    resumed: list[DesignResult] = []
    todo = []
    for pd in bp.planned:
        prev = current_design_file(out / f"{pd.design.name}.h5", pd, fom_pair=tuple(grid.config.figure_of_merit))
        if prev is not None:
            resumed.append(prev)
        else:
            todo.append(pd)
    needed = {k for pd in todo for k in pd.keys}
    return BatchPlan(tuple(todo), bp.failed, {k: v for k, v in bp.points.items() if k in needed}), resumed


def _evaluate_points(bp: BatchPlan, executor, cache, progress: Progress, stats):
    """Every distinct cosmology point of the grid, once: ``(results by key, error by key)``."""
    from .execute import _evaluate

    keys = list(bp.points)
    tick = progress("cosmology evaluations", len(keys))
    results = _evaluate(executor, [bp.points[k] for k in keys], cache, tick, stats)
    cosmos = {k: r for k, r in zip(keys, results) if not _is_failure(r)}
    errors = {k: r.error for k, r in zip(keys, results) if _is_failure(r)}
    return cosmos, errors


def _split_by_cosmology(bp: BatchPlan, errors: Mapping[str, str]):
    """Designs whose every point was computed, and failures of those that need a failed one."""
    runnable, failed = [], []
    for pd in bp.planned:
        bad = [k for k in pd.keys if k in errors]
        if bad:
            failed.append(DesignFailure(pd.design.name, pd.design.values, "cosmology", errors[bad[0]], 4))
        else:
            runnable.append(pd)
    return runnable, failed


def _run_designs(runnable, cosmos, grid: Grid, out: pathlib.Path, executor, cache, progress: Progress, stats,
                 allow_degenerate: bool, points: Mapping[str, tuple[Mapping[str, float], Any]]):
    """The probe work of each design, one task per design (writes ``<out>/<design>.h5``):
    ``(finished designs, failed designs)``."""
    from .execute import Task

    root = str(cache.root) if cache is not None else None
    needed = {k: cosmos[k] for pd in runnable for k in pd.keys}
    if executor.backend == "process" and root is not None:
        shared = {k: CachedResult(root, k) for k in needed}
    else:
        shared = executor.share(needed)
    fom_pair = tuple(grid.config.figure_of_merit)
    tasks = [Task(pd.design.name, design_task,
                  (pd.survey, {k: shared[k] for k in pd.keys}, str(out / f"{pd.design.name}.h5"), root,
                   allow_degenerate, fom_pair, boltzmann_runs(pd, points)))
             for pd in runnable]
    tick = progress("designs", len(tasks))
    outcomes = executor.run(tasks, on_done=lambda oc: tick())
    done: list[DesignResult] = []
    failed: list[DesignFailure] = []
    for pd, oc in zip(runnable, outcomes):
        d = pd.design
        if not oc.ok:
            failed.append(DesignFailure(d.name, d.values, "forecast", oc.error, oc.exit_code or 1))
            continue
        v = oc.value
        stats.boltzmann_calls += v["camb_calls"]
        done.append(DesignResult(d.name, d.values, out / f"{d.name}.h5", tuple(v["names"]), v["matrix"],
                                 v["sigma"], v["fom"], v["trust"], tuple(v["trust_reasons"])))
    return done, failed


def _write_summaries(res: BatchResult, out: pathlib.Path, plot: bool) -> None:
    """``summary.h5``, ``summary.csv`` and (``plot``) ``fom.png``; a plot that cannot be made
    (no matplotlib, no finite figure of merit) is a note, not an error."""
    from ..io.batch_summary import write_summary_csv, write_summary_h5

    res.summary_h5 = write_summary_h5(out / "summary.h5", res)
    res.summary_csv = write_summary_csv(out / "summary.csv", res)
    if plot:
        try:
            res.plot = plot_fom(out / "fom.png", res)
        except FishcastError as exc:
            res.plot_note = str(exc)


def boltzmann_runs(pd: PlannedDesign, points: Mapping[str, tuple[Mapping[str, float], Any]]) -> int:
    """The Boltzmann (CAMB transfer) runs the planned points of a design need: points that
    differ only in primordial parameters share one (:func:`fishcast.cosmology.compute_many`)."""
    from .. import cosmology as _cosmo

    groups = set()
    for k in pd.keys:
        if k in points:
            pt, settings = points[k]
            groups.add((repr(settings), _cosmo.transfer_key(_cosmo.full_params(pt))))
    return len(groups)


def current_design_file(path: pathlib.Path, pd: PlannedDesign, fom_pair: tuple[str, str]) -> DesignResult | None:
    """The result stored in a design's file when the file is complete and current -- a
    readable fishcast file of this design's exact input (``input_sha256``) written by this
    fishcast version -- else None (the design is computed again; a damaged or stale file is
    replaced)."""
    import math as _math

    from .. import __version__
    from ..errors import DegenerateFisherError
    from ..io import read_fisher

    if not path.is_file():
        return None
    try:
        fisher, meta = read_fisher(path)
    except FishcastError:
        return None
    if meta.get("input_sha256") != pd.survey.sha256 or meta.get("fishcast_version") != __version__:
        return None
    names = tuple(fisher.names)
    try:
        sigma = dict(zip(names, map(float, fisher.marginalized_sigma())))
    except DegenerateFisherError:
        sigma = {n: _math.nan for n in names}
    fom = _math.nan
    if all(n in names for n in fom_pair):
        try:
            fom = float(fisher.figure_of_merit(*fom_pair))
        except DegenerateFisherError:
            pass
    return DesignResult(pd.design.name, pd.design.values, path, names, fisher.matrix, sigma, fom,
                        str(meta.get("trust") or "ok"), tuple(str(r) for r in meta.get("trust_reasons") or ()))


def _is_failure(r) -> bool:
    from .execute import Outcome

    return isinstance(r, Outcome)


# ---------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------

def plot_fom(path: pathlib.Path, res: BatchResult) -> pathlib.Path | None:
    """Figure of merit against each axis: one panel per axis; every finished design is a
    point, joined to the designs that share its values on the other axes. Needs matplotlib (imported here); returns None when no design has a finite FoM."""
    from ..plotting import PALETTE, _matplotlib

    pts = [d for d in res.designs if math.isfinite(d.fom) and d.fom > 0]
    if not pts:
        res.plot_note = "no design has a finite figure of merit: no plot"
        return None
    _, Figure = _matplotlib()
    labels = res.grid.labels
    a, b = res.grid.config.figure_of_merit
    fig = Figure(figsize=(4.0 * len(labels), 3.4), layout="constrained")
    axs = fig.subplots(1, len(labels), squeeze=False)[0]
    for ax, label in zip(axs, labels):
        xs = [d.values[label] for d in pts]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if not numeric:
            cats = list(dict.fromkeys(format_value(x) for x in xs))
            xs = [cats.index(format_value(x)) for x in xs]
            ax.set_xticks(range(len(cats)), cats, rotation=30)
        others = [lab for lab in labels if lab != label]
        lines: dict[tuple, list[tuple[float, float]]] = {}
        for x, d in zip(xs, pts):
            lines.setdefault(tuple(format_value(d.values[o]) for o in others), []).append((x, d.fom))
        for j, (key, xy) in enumerate(lines.items()):
            xy.sort()
            tag = ", ".join(f"{o}={v}" for o, v in zip(others, key))
            ax.plot([p[0] for p in xy], [p[1] for p in xy], "o-", color=PALETTE[j % len(PALETTE)], alpha=0.8,
                    label=tag or None, markersize=4, linewidth=1)
        if others and 1 < len(lines) <= 6:
            ax.legend(fontsize="x-small")
        ax.set_xlabel(label)
        ax.set_ylabel(f"FoM({a}, {b})")
        ax.set_yscale("log")
    fig.suptitle(res.grid.name)
    from ..io.atomic import save_figure

    return save_figure(fig, path, fmt="png", dpi=120)
