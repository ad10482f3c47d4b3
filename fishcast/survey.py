"""Survey descriptions: YAML -> validated, immutable :class:`Survey`.

Validation happens before any computation. Every problem is reported with the file, the
line and the key, and what was expected (:class:`~fishcast.errors.SurveyError`). Unknown
keys are errors: a typo never falls back to a default.

Top-level layout (see the README for an annotated example)::

    name: my-survey
    cosmology:   {nonlinear_model: takahashi, accuracy: {...}}
    parameters:  {fiducial: {...}, free: [...], fixed: [...], priors: {...}}
    derivatives: {...}                      # optional, step-size sweep settings
    probes:      {weak_lensing: {...}, counts_in_cells: {...}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .cosmology import CosmologySettings, settings_for
from .derivatives import DerivativesConfig
from .diagnostics import DiagnosticsConfig
from . import parameters as _params
from .errors import FishcastError, SurveyError
from .parameters import AMPLITUDES, COSMOLOGICAL_DEFAULTS, COSMOLOGICAL_REQUIRED, Parameter, expand_patterns
from .probes import registered_probes, registry_version
from .probes.base import Probe, combined_requirements
from .yamlio import YamlDocument, dotted, line_of, where_in


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccuracyConfig(_Model):
    """CAMB accuracy and the tabulation grids of the cosmology (recorded in the output)."""

    accuracy_boost: float = Field(1.0, ge=0.5, le=8.0, description="CAMB AccuracyBoost")
    l_accuracy_boost: float = Field(1.0, ge=0.5, le=8.0, description="CAMB lAccuracyBoost")
    k_max: float | None = Field(None, gt=0.1, le=500.0, description="largest k [1/Mpc] of CAMB's transfer functions and of the P(k, z) "
                                "table; P(k) is extrapolated as a power law beyond (default: what the probes need, at least what the "
                                "nonlinear model needs at z_max: 5 to 15 for halofit, 5 to 21.4 for HMcode; 15 when no probe is "
                                "nonlinear)")
    n_k: int = Field(300, ge=50, le=5000, description="number of log-spaced k nodes of the P(k, z) table "
                     "(k_max not given, linear or nonlinear tables alike: n_k nodes over 1e-4 .. 30/Mpc, those up to k_max "
                     "kept)")
    z_max: float | None = Field(None, gt=0.0, le=20.0, description="largest tabulated redshift (default: what the probes need)")
    n_z: int = Field(100, ge=10, le=250, description="number of redshift nodes of the P(k, z) table (CAMB allows at most 250)")
    k_per_logint: int = Field(0, ge=0, le=100, description="CAMB k sampling of the transfer functions (0: CAMB's default)")
    transfer_high_precision: bool | None = Field(
        None, description="CAMB's dense k sampling of the transfer functions (Transfer.high_precision; default: what "
        "the probes need -- on for clustering, off for weak lensing alone, ~1.7x the cost of a Boltzmann run)")
    int_tol_boost: float | None = Field(
        None, ge=0.1, le=8.0, description="CAMB's Accuracy.IntTolBoost, the tolerance of the Boltzmann ODE integration "
        "(its tolerance / exp(accuracy_boost x int_tol_boost - 1); default: 0.3, measured to move P(k) by ~1e-6 "
        "at 0.85 of the cost of CAMB's 1; CAMB's 1 when accuracy_boost is not 1)")


class CosmologyConfig(_Model):
    """The theory backend."""

    backend: Literal["camb"] = Field("camb", description="cosmology backend (only CAMB for now)")
    nonlinear_model: Literal["takahashi", "mead2020", "none"] = Field(
        ..., description="nonlinear matter power: halofit 'takahashi', HMcode 'mead2020', or 'none' (linear)"
    )
    accuracy: AccuracyConfig = Field(default_factory=AccuracyConfig)


class ParametersConfig(_Model):
    """Fiducial values, which parameters are free, and Gaussian priors."""

    fiducial: dict[str, float] = Field(..., description="canonical name -> fiducial value (m_nu in eV)")
    free: list[str] = Field(..., min_length=1, description="free parameters (in the Fisher matrix); globs such as m_* allowed")
    fixed: list[str] = Field(default_factory=list, description="fixed parameters (optional: everything not free is fixed)")
    priors: dict[str, float] = Field(default_factory=dict, description="Gaussian 1-sigma priors on free parameters (globs allowed)")


class _ProbesBase(_Model):
    """The probes of the survey; at least one. Their Fisher matrices add (no cross-covariance)."""


class DiagnosticsSection(DiagnosticsConfig):
    """Thresholds of the conditioning and stability checks (see ``fishcast.diagnostics``)
    and whether to run the Gaussian-validity check (2N extra cosmology evaluations)."""

    gaussian_check: bool = Field(True, description="evaluate the real Delta chi^2 at +-1 sigma along each principal direction")
    gaussian_directions: Literal["cosmological", "cosmological_principal", "all"] = Field(
        "cosmological", description="cosmological: the principal directions of the marginalized errors of the "
        "parameters that need a Boltzmann run (one CAMB run each), then of n_s / sigma8 with those fixed (one CAMB run "
        "for all), every later parameter at its conditional best fit, then the nuisances at the fiducial cosmology "
        "(no CAMB run); cosmological_principal: the principal directions of all the nuisance-marginalized cosmological "
        "errors (one CAMB run each), then the nuisances; all: the principal directions of the whole covariance")
    gaussian_sides: Literal["adaptive", "both"] = Field(
        "adaptive", description="adaptive: evaluate the +1 sigma side of each direction, and the -1 sigma side only where "
        "the direction's verdict depends on it (else it is inferred from the quadratic model); both: always evaluate "
        "both sides (the full check: gaussian_directions: all, gaussian_sides: both)")

    def thresholds(self) -> DiagnosticsConfig:
        return DiagnosticsConfig(**self.model_dump(exclude={"gaussian_check", "gaussian_directions", "gaussian_sides"}))


class _SurveyBase(_Model):
    """A survey description file."""

    name: str = Field(..., min_length=1, max_length=200, description="survey name (used in output names)")
    description: str = Field("", max_length=10_000, description="free text")
    cosmology: CosmologyConfig
    parameters: ParametersConfig
    derivatives: DerivativesConfig = Field(default_factory=DerivativesConfig)
    diagnostics: DiagnosticsSection = Field(default_factory=DiagnosticsSection)


_MODELS: dict[tuple[int, int | None], tuple[type[BaseModel], type[BaseModel]]] = {}


def config_models(sections: Iterable[str] | None = None) -> tuple[type[BaseModel], type[BaseModel]]:
    """``(SurveyConfig, ProbesConfig)``: the survey model with one optional section per
    registered probe (:func:`fishcast.probes.register_probe`), built when the probe registry
    changes.

    ``sections``: the probe sections a survey file holds. Only those are validated by their
    probe's config model (whose module is imported then); every other registered section is
    still a known key, which the file does not hold (its value may only be absent or null).
    The survey of one probe so imports that probe's module only. Default: every section
    (the schema; ``SurveyConfig`` and ``ProbesConfig`` of this module)."""
    version = registry_version()
    entries = registered_probes()
    mask = None if sections is None else sum(1 << i for i, s in enumerate(entries) if s in set(sections))
    if mask is not None and mask == (1 << len(entries)) - 1:
        mask = None  # every section: the full models
    if (version, mask) not in _MODELS:
        fields = {section: (entry.config | None if mask is None or mask >> i & 1 else None,
                            Field(None, description=entry.description or None))
                  for i, (section, entry) in enumerate(entries.items())}
        suffix = "" if mask is None else f"{_PARTIAL}{mask}"
        probes = create_model(f"ProbesConfig{suffix}", __base__=_ProbesBase, __module__=__name__,
                              __doc__=_ProbesBase.__doc__, **fields)
        survey = create_model(f"SurveyConfig{suffix}", __base__=_SurveyBase, __module__=__name__,
                              __doc__=_SurveyBase.__doc__, probes=(probes, ...))
        for key in [k for k in _MODELS if k[0] != version]:
            del _MODELS[key]
        _MODELS[(version, mask)] = (survey, probes)
    return _MODELS[(version, mask)]


#: the models of some sections (:func:`config_models`) are named ``SurveyConfig_sections<m>``,
#: ``ProbesConfig_sections<m>`` (m: the sections' bits in registry order), which this module
#: gives back by name: a survey pickles (a batch design goes to a worker process)
_PARTIAL = "_sections"


def __getattr__(name: str):
    """``SurveyConfig`` and ``ProbesConfig`` always include every registered probe; the
    models of some sections by their names (see :data:`_PARTIAL`)."""
    for i, base in enumerate(("SurveyConfig", "ProbesConfig")):
        if name == base:
            return config_models()[i]
        rest = name[len(base + _PARTIAL):] if name.startswith(base + _PARTIAL) else ""
        if rest.isdigit():
            mask = int(rest)
            return config_models([s for j, s in enumerate(registered_probes()) if mask >> j & 1])[i]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Survey:
    """A validated survey, ready to run.

    ``fiducial`` holds every parameter of the model (cosmological with defaults filled in,
    and every nuisance parameter of every probe). ``free`` is the Fisher order.
    ``parameters``: the registry's description of every parameter in ``fiducial`` (nuisance
    ones as their probes declared them).
    """

    path: str
    text: str
    sha256: str
    config: "SurveyConfig"  # noqa: F821 (built from the probe registry: config_models)
    probes: tuple[Probe, ...]
    fiducial: Mapping[str, float]
    free: tuple[str, ...]
    priors: Mapping[str, float]
    settings: CosmologySettings
    parameters: Mapping[str, Parameter] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def cosmological_fiducial(self) -> dict[str, float]:
        return {k: v for k, v in self.fiducial.items() if _params.is_cosmological(k)}

    def parameter(self, name: str) -> Parameter:
        """The description of parameter ``name`` (unit, label, step scale, domain)."""
        return self.parameters.get(name) or _params.lookup(name)

    def unit(self, name: str) -> str:
        """Unit of parameter ``name`` ("" for dimensionless)."""
        return self.parameter(name).unit

    def where(self, *paths: tuple) -> str:
        """``file:line: key`` of the first of ``paths`` (key paths, e.g. ``("derivatives",
        "parameters", "h")``) that the survey file holds, else of the last one at the line of
        its nearest key in the file: how a problem found after loading (at planning) is
        located, as the loader locates its own."""
        return where_in(self.text, self.path, *paths)

    def locate(self, exc: Exception) -> Exception:
        """``exc`` when it is located already (a SurveyError, or its message starts with this
        survey's file name) or is no InputError; else an error of its kind with
        ``file:line: key`` in front of its message, the line that of the key path the error
        carries (``exc.key``, :func:`fishcast.errors.at_key`), or the file alone when it
        carries none (tests/test_located_errors.py finds such sites). For an InputError
        found after loading, that no site located (``fishcast run``, a batch design)."""
        from .errors import InputError, relocated

        text = str(exc)
        if not isinstance(exc, InputError) or isinstance(exc, SurveyError) or text.startswith(f"{self.path}:"):
            return exc
        where = self.where(tuple(exc.key)) if exc.key else self.path
        return relocated(exc, f"{where}: {text}")


def schema() -> dict:
    """JSON Schema of the survey format (every registered probe included)."""
    return config_models()[0].model_json_schema()


def load_survey(path: str | pathlib.Path, overrides: Mapping[str, object] | None = None) -> Survey:
    """Read, validate and build a survey file. Raises SurveyError (exit 2) on any problem.

    ``overrides`` maps dotted keys (``probes.weak_lensing.f_sky``) to values that replace
    (or add) entries of the file before validation: the batch grid's axes and ``--set``.
    """
    from .yamlio import read_yaml

    p = pathlib.Path(path)
    return survey_from_document(read_yaml(p, "survey file"), p.parent, overrides)


def apply_overrides(data: dict, overrides: Mapping[str, object], filename: str, lines=None) -> dict:
    """A copy of ``data`` with dotted keys replaced. List items are addressed by index.
    A key that cannot be set is located at the line of its longest prefix the file holds
    (``lines``: the file's line index, :func:`fishcast.yamlio.load_yaml`)."""
    import copy

    out = copy.deepcopy(data)
    for dotted_key, value in overrides.items():
        parts = [int(p) if p.isascii() and p.isdigit() else p for p in str(dotted_key).split(".")]
        node = out
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, dict):
                node = node.setdefault(part, {})
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                raise SurveyError(filename, [(_line(lines, parts), dotted_key, "cannot set this key: "
                                              f"{'.'.join(map(str, parts[:i]))} is not a mapping"
                                              f"{' (or the list is shorter)' if isinstance(node, list) else ''}")])
        last = parts[-1]
        if isinstance(node, dict):
            node[last] = copy.deepcopy(value)
        elif isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = copy.deepcopy(value)
        else:
            raise SurveyError(filename, [(_line(lines, parts), dotted_key, "cannot set this key: "
                                          f"{'.'.join(map(str, parts[:-1]))} is not a mapping"
                                          f"{' (or the list is shorter)' if isinstance(node, list) else ''}")])
    return out


def _line(lines, parts) -> int | None:
    """Line of the longest prefix of the key path ``parts`` in the line index (1, the top of
    the file, when none is: an override's key is then not in the file at all)."""
    return (line_of(lines, tuple(parts)) or 1) if lines is not None else None


class _Problems:
    """Problems found in a survey file, each with its line, dotted key and message."""

    def __init__(self, filename: str, lines):
        self.filename, self.lines = filename, lines
        self.items: list[tuple[int | None, str, str]] = []

    def __call__(self, path: tuple, msg: str) -> None:
        self.items.append((line_of(self.lines, path), dotted(path), msg))

    def raise_any(self) -> None:
        if self.items:
            raise SurveyError(self.filename, self.items)


def survey_from_text(text: str, filename: str = "<survey>", survey_dir: pathlib.Path | None = None,
                     overrides: Mapping[str, object] | None = None) -> Survey:
    """Validate a survey given as YAML text (``survey_dir`` resolves relative file paths):
    :func:`survey_from_document` of the parsed text."""
    return survey_from_document(YamlDocument.parse(text, filename), survey_dir, overrides)


def survey_from_document(doc: YamlDocument, survey_dir: pathlib.Path | None = None,
                         overrides: Mapping[str, object] | None = None) -> Survey:
    """Validate a survey given as a parsed YAML document (:func:`fishcast.yamlio.read_yaml`:
    a file is read and parsed once, whoever looks at it first); ``survey_dir`` resolves
    relative file paths. The document is not changed (the overrides apply to a copy): the
    designs of a grid share their base survey's.

    Steps: apply overrides, validate the model, build the probes, resolve the parameters
    (fiducials, free, fixed), priors, cosmology settings. Each step reports every problem it
    finds (file, line, key) before the run stops at its end."""
    text, filename = doc.text, doc.filename
    data, lines = _mapping(doc)
    if overrides:
        data, text = _with_overrides(data, text, overrides, filename, lines)
    config = _validate(data, lines, filename)
    problem = _Problems(filename, lines)
    check_numbers(config, data, (), problem)  # finite, and no YAML boolean taken for a number
    problem.raise_any()
    _check_memory(config, problem)  # before any probe allocates its grids
    problem.raise_any()
    sections = _build_probes(config, survey_dir if survey_dir is not None else pathlib.Path("."), problem)
    problem.raise_any()
    probes = list(sections.values())
    described = _declared_parameters(sections, problem)
    fiducial = _fiducials(config.parameters, described, problem)
    _check_one_bias_source(config.parameters.fiducial, described, config, problem)
    _check_flat(fiducial, config.parameters.free, problem)
    free = _free_names(config.parameters, described, problem)
    _check_domains(config, fiducial, free, sections, described, problem)
    priors = _priors(config.parameters, free, problem)
    problem.raise_any()
    settings = _settings(config, probes, problem)
    problem.raise_any()
    return Survey(
        path=filename, text=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), config=config,
        probes=tuple(probes), fiducial=fiducial, free=tuple(free), priors=priors, settings=settings,
        parameters={n: described.get(n) or _params.lookup(n) for n in fiducial},
    )


def _mapping(doc: YamlDocument) -> tuple[dict, object]:
    """The document's top-level mapping and its line index."""
    if not isinstance(doc.data, dict):
        raise SurveyError(doc.filename, [(1, "", "the top level must be a mapping of keys, not a "
                                          f"{type(doc.data).__name__}")])
    return doc.data, doc.lines


def _with_overrides(data: dict, text: str, overrides: Mapping[str, object], filename: str,
                    lines=None) -> tuple[dict, str]:
    """The data with the overrides applied, and the text with them recorded as comments."""
    data = apply_overrides(data, overrides, filename, lines)
    text = text + "\n# overrides applied by fishcast:\n" + "".join(
        f"#   {k} = {json.dumps(v)}\n" for k, v in overrides.items())
    return data, text


def _validate(data: dict, lines, filename: str):
    """The validated SurveyConfig: every registered probe's section is a known key, those
    the file holds are validated by their probe's model (:func:`config_models`)."""
    probes = data.get("probes")
    sections = [s for s in registered_probes() if s in probes] if isinstance(probes, dict) else []
    try:
        return config_models(sections)[0].model_validate(data)
    except ValidationError as exc:
        raise SurveyError(filename, pydantic_problems(exc, lines, data)) from None


def _build_probes(config, survey_dir: pathlib.Path, problem: _Problems) -> dict[str, Probe]:
    """Section -> probe, one per section given, in registry order, from its build function."""
    probes: dict[str, Probe] = {}
    entries = registered_probes()
    for section, entry in entries.items():
        cfg = getattr(config.probes, section, None)
        if cfg is None:
            continue
        try:
            probes[section] = entry.build(cfg, survey_dir)
        except FishcastError as exc:  # at the key the error names (a table's file: the key naming it), else the section
            problem(("probes", section) + tuple(getattr(exc, "key", ())), str(exc))
    if not probes and not problem.items:
        problem(("probes",), f"at least one probe is needed: {', '.join(entries)}")
    return probes


def _declared_parameters(probes: Mapping[str, Probe], problem: _Problems) -> dict[str, Parameter]:
    """The probes' nuisance parameters (name -> description with the probe's fiducial),
    declared to the parameter registry; a declaration that contradicts the registry (another
    unit, label or domain under the same name) is a problem of the probe's section."""
    out: dict[str, Parameter] = {}
    owner: dict[str, str] = {}
    for section, probe in probes.items():
        nuisance = probe.nuisance_parameters()
        for name, fid in nuisance.items():
            if owner.get(name, section) != section:
                # two sections with one nuisance name would share it silently (and a shear
                # sample in both weak_lensing and photometric would be counted twice)
                problem(("probes", section), f"declares the nuisance parameter {name}, which probes.{owner[name]} "
                        "declares too: the two sections describe the same data (for cosmic shear with "
                        "clustering, use WL in probes.photometric.spectra instead of probes.weak_lensing)")
                continue
            owner[name] = section
            if isinstance(nuisance, _params.NuisanceParameters):
                desc = nuisance.description(name)
            else:  # a plain name -> fiducial mapping: the registry's description
                desc = dataclasses.replace(_params.lookup(name), fiducial=float(fid))
            clash = _params.declare(desc)
            if clash:
                problem(("probes", section), f"{clash}: the parameter registry already describes it")
            out[name] = desc
    return out


def _check_domains(config, fiducial: Mapping[str, float], free: Sequence[str], sections: Mapping[str, Probe],
                   described: Mapping[str, Parameter], problem: _Problems) -> None:
    """Every free parameter's fiducial inside the physical domain its derivatives keep to
    (:func:`fishcast.derivatives.fiducial_outside_domain`, YAML overrides included), located
    where the value was given: ``parameters.fiducial.<name>``, or the section of the probe
    whose configuration sets it (a bias's ``values``, ...)."""
    from .derivatives import fiducial_outside_domain, plan_ladder, resolve_spec

    d = config.derivatives
    for name in free:
        if name not in fiducial:
            continue
        desc = described.get(name) or _params.lookup(name)
        why = fiducial_outside_domain(name, fiducial[name], d, desc)
        if why is None:
            # the ladder the YAML asks for (overrides included; a step from an earlier file,
            # steps_from, is checked when that file is read): a bad one is this file's problem
            try:
                plan_ladder(name, fiducial[name], resolve_spec(name, fiducial[name], d, parameter=desc))
            except FishcastError as exc:
                msg = str(exc)
                m = re.match(r"derivatives\.parameters\.([^.\s]+)\.([A-Za-z_]+)", msg)
                if m and m.group(1) in d.parameters:
                    where: tuple = ("derivatives", "parameters", m.group(1), m.group(2))
                elif name in d.parameters:
                    where = ("derivatives", "parameters", name)
                else:
                    where = ("derivatives",)
                problem(where, msg)
            continue
        if name in config.parameters.fiducial:
            problem(("parameters", "fiducial", name), why)
            continue
        owner = next((s for s, pr in sections.items() if name in pr.nuisance_parameters()), None)
        where = ("probes", owner) if owner is not None else ("parameters", "free")
        problem(where, f"{why} (its fiducial comes from {'probes.' + owner if owner else 'the registry'}; "
                f"give another value there, or widen the domain with derivatives.parameters.{name}.lower/upper)")


def _known(described: Mapping[str, Parameter]) -> list[str]:
    return list(_params.cosmological_names()) + list(described)


def _fiducials(pc: ParametersConfig, described: Mapping[str, Parameter], problem: _Problems) -> dict[str, float]:
    """Every model parameter's fiducial: given, else the registry's default (cosmological)
    or the probe's (nuisance); checked against the physical constraints."""
    known = _known(described)
    fiducial: dict[str, float] = {}
    for name, value in pc.fiducial.items():
        if name not in known:
            problem(("parameters", "fiducial", name), f"unknown parameter{_unknown_hint(name, described)}")
            continue
        if not math.isfinite(value):
            problem(("parameters", "fiducial", name), "must be a finite number")
            continue
        fiducial[name] = float(value)
    for name in COSMOLOGICAL_REQUIRED:
        if name not in pc.fiducial:
            problem(("parameters", "fiducial"), f"missing required fiducial value for {name}")
    if sum(a in pc.fiducial for a in AMPLITUDES) != 1:
        problem(("parameters", "fiducial"), f"give exactly one of {' and '.join(AMPLITUDES)}")
    for name, value in COSMOLOGICAL_DEFAULTS.items():
        fiducial.setdefault(name, value)
    for name, desc in described.items():
        fiducial.setdefault(name, float(desc.fiducial))
    _check_physical(fiducial, problem)
    return fiducial


def _free_names(pc: ParametersConfig, described: Mapping[str, Parameter], problem: _Problems) -> list[str]:
    """The free parameters in Fisher order (globs expanded); fixed ones checked."""
    known = _known(described)
    free_names: list[str] = []
    for i, pat in enumerate(pc.free):
        names, unmatched = expand_patterns([pat], known)
        if unmatched:
            problem(("parameters", "free", i), f"{pat!r} is not a parameter of this survey{_unknown_hint(pat, described)}")
        for n in names:
            if n in AMPLITUDES and n not in pc.fiducial:
                other = next(a for a in AMPLITUDES if a != n)
                problem(("parameters", "free", i), f"{n} is free but the fiducial amplitude is given as {other}")
            if n in free_names:
                problem(("parameters", "free", i), f"{n} is listed twice")
            else:
                free_names.append(n)
    for i, pat in enumerate(pc.fixed):
        names, unmatched = expand_patterns([pat], known)
        if unmatched:
            problem(("parameters", "fixed", i), f"{pat!r} is not a parameter of this survey")
        for n in names:
            if n in free_names:
                problem(("parameters", "fixed", i), f"{n} is both free and fixed")
    return free_names


def _priors(pc: ParametersConfig, free_names: list[str], problem: _Problems) -> dict[str, float]:
    """Gaussian 1-sigma priors on free parameters (globs expanded)."""
    priors: dict[str, float] = {}
    for pat, sigma in pc.priors.items():
        names, unmatched = expand_patterns([pat], free_names)
        if unmatched:
            problem(("parameters", "priors", pat), "priors apply to free parameters only; this is not a free parameter")
        if not (sigma > 0 and math.isfinite(sigma)):
            problem(("parameters", "priors", pat), "a prior is a positive, finite 1-sigma width")
        for n in names:
            priors[n] = float(sigma)
    return priors


def _settings(config, probes: Sequence[Probe], problem: _Problems) -> CosmologySettings:
    """The cosmology backend's settings (:func:`fishcast.cosmology.settings_for`): the accuracy
    section, with the redshift range, k_max and nonlinear spectrum the probes need."""
    acc = config.cosmology.accuracy
    reqs = combined_requirements(pr.requirements() for pr in probes)
    z_need = reqs.z_max
    z_max = acc.z_max if acc.z_max is not None else max(z_need, 0.5)
    _check_requirements(probes, problem)
    if z_max < z_need:
        problem(("cosmology", "accuracy", "z_max"), f"the probes need redshifts up to {z_need:.3g}; z_max is {z_max:.3g}")
    return settings_for(  # the probes' requirements (k_max, nonlinear), the user's accuracy.k_max overriding
        reqs,
        nonlinear_model=config.cosmology.nonlinear_model,
        z_max=float(z_max),
        n_z=acc.n_z,
        k_max=acc.k_max,
        n_k=acc.n_k,
        accuracy_boost=acc.accuracy_boost,
        l_accuracy_boost=acc.l_accuracy_boost,
        k_per_logint=acc.k_per_logint,
        transfer_high_precision=acc.transfer_high_precision,
        int_tol_boost=acc.int_tol_boost,
    )


def _schema_limit(field: str) -> float:
    """The upper bound the schema gives ``cosmology.accuracy.<field>``: one limit for what the
    user sets and what a probe asks for."""
    return next(m.le for m in AccuracyConfig.model_fields[field].metadata if hasattr(m, "le"))


def _check_requirements(probes: Sequence[Probe], problem: _Problems) -> None:
    """A probe's requirements become CAMB inputs (z_max, k_max): finite and within the limits
    of ``cosmology.accuracy`` (a huge z_edges or k_max in a probe section is located there)."""
    z_limit, k_limit = _schema_limit("z_max"), _schema_limit("k_max")
    for pr in probes:
        r = pr.requirements()
        if not (math.isfinite(r.z_max) and r.z_max <= z_limit):
            problem(("probes", pr.name), f"needs the cosmology up to z = {r.z_max:.6g}; fishcast tabulates it "
                                         f"up to z = {z_limit:g} at most")
        if not (math.isfinite(r.k_max) and r.k_max <= k_limit):
            problem(("probes", pr.name), f"needs P(k) up to k = {r.k_max:.6g} / Mpc; fishcast tabulates it "
                                         f"up to k = {k_limit:g} / Mpc at most")


def _unknown_hint(name: str, nuisance: Mapping[str, object]) -> str:
    if name == "beta_IA":
        return (" (beta_IA needs an <L>/L* table: set intrinsic_alignment.luminosity_ratio_file of "
                "probes.weak_lensing or probes.photometric.sources, with WL or XC in its spectra)")
    if name in ("A_IA", "eta_IA"):
        return (" (no probe has intrinsic alignments: they are off in probes.weak_lensing, or "
                "probes.photometric has no WL or XC in its spectra)")
    import difflib

    close = difflib.get_close_matches(name, _known(nuisance), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_one_bias_source(given: Mapping[str, float], described: Mapping[str, Parameter], config, problem) -> None:
    """A tracer bias is given by its probe (``probes.counts_in_cells.tracers[i].bias.values``);
    the same bias in ``parameters.fiducial`` (``given``) with a different value is refused
    (which one would be meant is a guess), with both places named."""
    cic = getattr(config.probes, "counts_in_cells", None)
    if cic is None:
        return
    for name, value in given.items():
        if name not in described or not (name.startswith("b_") or name.startswith("lnb_")):
            continue
        probe_value = float(described[name].fiducial)
        if not math.isfinite(value) or math.isclose(value, probe_value, rel_tol=1e-12, abs_tol=0.0):
            continue
        tracer = name.split("_")[1]
        where = next((f"probes.counts_in_cells.tracers.{i}.bias.values" for i, t in enumerate(cic.tracers)
                      if t.name == tracer), "probes.counts_in_cells")
        problem(("parameters", "fiducial", name),
                f"{name} = {value:g} here, but {where} gives {probe_value:g}: give each bias in one place "
                "(the tracer's bias.values), or the same value in both")


def _check_flat(f: Mapping[str, float], free, problem) -> None:
    """Non-flat cosmologies are refused: the lensing kernels, the shell volumes and the
    Alcock-Paczynski distances use flat-space comoving distances (no f_K(chi))."""
    why = ("non-flat cosmologies are not supported: lensing kernels, shell volumes and the "
           "Alcock-Paczynski distances use flat-space distances (f_K(chi) = chi), so the forecast "
           "would be silently wrong")
    if f.get("Omega_k", 0.0) != 0.0:
        problem(("parameters", "fiducial", "Omega_k"), f"Omega_k = {f['Omega_k']:g}: {why}; use Omega_k = 0")
    for i, name in enumerate(free):
        if name == "Omega_k":
            problem(("parameters", "free", i), f"Omega_k may not be free: {why}")


#: the most memory a forecast may plan to hold [bytes]: FISHCAST_MEMORY_LIMIT_GB (GiB), else 16 GiB
def memory_limit() -> int:
    import os

    try:
        gb = float(os.environ.get("FISHCAST_MEMORY_LIMIT_GB", "16"))
    except ValueError:
        gb = 16.0
    return int(gb * 1024**3) if math.isfinite(gb) and gb > 0 else 16 * 1024**3


def _check_memory(config: SurveyConfig, problem) -> None:
    """Refuse, before anything is allocated, a weak-lensing data vector (bins x bands x
    redshift nodes) whose forecast would hold more than :func:`memory_limit`."""
    wl = getattr(config.probes, "weak_lensing", None)
    if wl is None:
        return
    from .probes import weak_lensing as _wl
    d = config.derivatives
    rungs = max([d.n_rungs] + [o.n_rungs for o in d.parameters.values() if o.n_rungs is not None])
    n_free = max(sum(wl.n_bins if any(c in p for c in "*?[") else 1 for p in config.parameters.free), 1)
    n_vectors = 1 + 2 * (rungs if d.mode == "sweep" else 3) * n_free + 4 * n_free
    need = _wl.memory_estimate(wl, n_vectors)
    limit = memory_limit()
    if need > limit:
        problem(("probes", "weak_lensing", "ell", "n_bands"),
                f"{wl.n_bins} bins x {wl.ell.n_bands} bands x {wl.integration.n_z} redshift nodes with "
                f"{n_free} free parameters would need about {need / 1024**3:.3g} GiB, more than the limit "
                f"{limit / 1024**3:.3g} GiB (FISHCAST_MEMORY_LIMIT_GB); use fewer bands, bins or integration.n_z")


def _check_physical(f: Mapping[str, float], report) -> None:
    """The fiducial cosmology must be a point CAMB may be given (finite, inside the safe
    ranges of :mod:`fishcast.camb_ranges`): checked here, located, before anything is planned."""
    from . import camb_ranges

    path = ("parameters", "fiducial")
    found = []

    def problem(where: tuple, msg: str) -> None:
        found.append(where)
        report(where, msg)

    if f.get("h", 1) <= 0:
        problem(path + ("h",), "h must be positive")
    if f.get("Omega_b", 1) <= 0:
        problem(path + ("Omega_b",), "Omega_b must be positive")
    if "Omega_m" in f and "Omega_b" in f and f["Omega_m"] <= f["Omega_b"]:
        problem(path + ("Omega_m",), "Omega_m (baryons + CDM + neutrinos) must exceed Omega_b")
    if f.get("m_nu", 0) < 0:
        problem(path + ("m_nu",), "m_nu (sum of neutrino masses, eV) must be >= 0")
    for n in ("sigma8", "A_s"):
        if n in f and f[n] <= 0:
            problem(path + (n,), f"{n} must be positive")
    if "n_s" in f and not 0.5 < f["n_s"] < 1.5:
        problem(path + ("n_s",), "n_s must lie in (0.5, 1.5)")
    if any(_params.is_cosmological(n) and not math.isfinite(v) for n, v in f.items()):
        return
    cosmo = {n: v for n, v in f.items() if _params.is_cosmological(n)}
    if {"h", "Omega_b", "Omega_m", "n_s"} <= set(cosmo) and not found:
        for name, msg in camb_ranges.problems(cosmo):
            problem(path + (name,), msg)


def check_numbers(model: BaseModel, data, loc: tuple, problem) -> None:
    """Every number of a validated model is finite, and came from a YAML number: pydantic
    (lax) turns ``true`` into 1.0 and accepts ``.inf`` where a float is expected; neither is
    what the user meant. Walks the model alongside the raw data, so every model of every
    probe is covered without a strict type on each field."""
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            raw = data.get(name) if isinstance(data, dict) else None
            check_numbers(getattr(model, name), raw, loc + (name,), problem)
    elif isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            raw = data[i] if isinstance(data, (list, tuple)) and i < len(data) else None
            check_numbers(item, raw, loc + (i,), problem)
    elif isinstance(model, dict):
        for k, item in model.items():
            raw = data.get(k) if isinstance(data, dict) else None
            check_numbers(item, raw, loc + (k,), problem)
    elif isinstance(model, (int, float)) and not isinstance(model, bool):
        if isinstance(data, bool):
            problem(loc, f"a number is expected, not the boolean {str(data).lower()}")
        elif isinstance(model, float) and not math.isfinite(model):
            problem(loc, f"must be a finite number (got {model!r})")


def _data_path(loc: tuple, data) -> tuple:
    """The path in the data of a pydantic error location: pydantic inserts union tags
    (the value of a ``type`` discriminator, or a model/function name) that are not keys."""
    out = []
    node = data
    for i, part in enumerate(loc):
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(node, dict) and node.get("type") == part and nxt is not None and nxt in node:
            continue  # a discriminator tag that is also a key name (bins: {type: edges, edges: [...]})
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and node.get("type") == part:
            continue
        elif isinstance(part, str) and _looks_like_tag(part):
            continue
        else:
            out.append(part)
            node = None
    return tuple(out)


#: pydantic error types of a number's range: a YAML boolean that failed one was taken for 0/1
_NUMERIC_CHECKS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"}


def pydantic_problems(exc: ValidationError, lines, data=None) -> list[tuple[int | None, str, str]]:
    out = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        path = _data_path(loc, data)
        msg = err.get("msg", "invalid")
        path = _refine_to_named_key(path, err)
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling; see `fishcast schema`)"
        elif err.get("type") == "missing":
            msg = "missing required key"
        elif isinstance(err.get("input"), bool) and err.get("type") in _NUMERIC_CHECKS:
            msg = f"a number is expected, not the boolean {str(err['input']).lower()}"
        else:
            inp = err.get("input")
            if not isinstance(inp, (dict, list)):
                msg = f"{msg} (got {inp!r})"
        out.append((line_of(lines, path), dotted(path), msg))
    return out


def _refine_to_named_key(path: tuple, err: Mapping) -> tuple:
    """A check across several keys of one mapping (a model validator) is reported by pydantic
    at the mapping itself; when its message starts with the name of a key that the mapping
    holds ("start_rungs (7) must be ...", "tol_warn must be >= tol_pass"), or a dotted path
    below it ("integration.z_max (3) must exceed ..."), the error is located at that key (as
    deep as the mapping holds it), so that the file's line is the key's own; a message
    "tracer NAME: ..." is located in the item of ``tracers`` of that name first."""
    inp = err.get("input")
    if err.get("type") != "value_error" or not isinstance(inp, dict):
        return path
    text = str(err.get("msg", ""))
    text = text[len("Value error, "):] if text.startswith("Value error, ") else text
    path = tuple(path)
    # "tracer B: bias.values needs ...": the item of the list of tracers named B
    m = re.match(r"tracer (\S+): ", text)
    if m and isinstance(inp.get("tracers"), list):
        i = next((i for i, t in enumerate(inp["tracers"]) if isinstance(t, dict) and str(t.get("name")) == m.group(1)),
                 None)
        if i is not None:
            path, inp, text = path + ("tracers", i), inp["tracers"][i], text[m.end():]
    # a key, or a dotted key path ("integration.z_max (3) must ..."), as deep as the input holds it
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", text)
    for part in (m.group(0).split(".") if m else ()):
        if not (isinstance(inp, dict) and part in inp):
            break
        path, inp = path + (part,), inp[part]
    return path


def _looks_like_tag(part) -> bool:
    s = str(part)
    return s[:1].isupper() or s.startswith("function-") or "[" in s
