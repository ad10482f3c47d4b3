"""Derivatives that choose their own step: step ladders, stencils, plateau, verdict.

Method (see ``notes/derivatives.md``; Bhandari, Leonard, Rau & Mandelbaum 2021, RNAAS 5, 234,
"Fisher Matrix Stability"). For a parameter ``p`` with fiducial ``x`` and scale ``s``
(``|x|``, or a declared scale when the fiducial is zero or an offset, e.g. ``wa``, ``dz_i``):

1. Ladder ``h_k = s * h_max / 2^k``, ``k = 0 .. K-1`` (absolute steps, in the parameter's
   unit). Each rung gives a second-order derivative ``D3_k``: the central 3-point stencil
   ``(f(x+h) - f(x-h)) / 2h`` (error ``h^2 f'''/6``), or, where ``x - h`` (``x + h``) would
   leave the parameter's physical domain, the one-sided 3-point stencil
   ``(-3 f(x) + 4 f(x+h) - f(x+2h)) / 2h`` (error ``-h^2 f'''/3``; mirrored for backward).
   Since ``2 h_k = h_{k-1}``, a one-sided rung re-uses the point of the rung above.
2. Richardson on neighbouring rungs of the same stencil, ``D5_k = (4 D3_k - D3_{k-1}) / 3``,
   cancels the ``h^2`` term: for central rungs it is exactly the 5-point stencil at ``h_k``.
   It costs no model evaluation.
3. Rung-to-rung change in the data's own (Fisher) metric:
   ``delta_k = |D3_k - D3_{k+1}| / |D3_{k+1}|`` with ``|d| = norm(d) = sqrt(gram(d, d))``.
4. Plateau: the window of ``W`` (default 4) consecutive rungs with the smallest
   ``max(delta)`` inside it; windows whose score is within ``tie_factor`` of the best are
   ties, broken toward larger steps. The chosen rung is the second rung of the window, so
   that the 5-point estimate ``(4 D3_c - D3_{c-1}) / 3`` uses plateau rungs only.
5. Verdict: PASS when the window's score is at most ``tol_pass``, WARN up to ``tol_warn``,
   FAIL above; with a reason: ``ok``, ``boundary`` (a one-sided stencil was used),
   ``noise-limited`` (delta grows as the step shrinks), ``truncation-limited`` (delta falls
   like ``h^2`` down to the smallest step), ``no plateau``, ``zero derivative``, or
   ``unchecked`` (fixed mode with a single rung).

Point generation and analysis are separate pure steps: :func:`plan_points` lists every
parameter value a parameter needs (never a value outside its domain), the pipeline evaluates
each distinct point once, and :func:`analyse` turns the signals at those values into a
:class:`ParameterSweep`. Signal arrays may have any shape; ``norm`` is the probe's Fisher
metric on a difference of derivatives.

Modes (``derivatives.mode`` in the survey YAML): ``adaptive`` (the default): the same ladder,
plateau and verdict, but only the rungs it needs: a short start around the expected plateau
(below), extended one rung at a time, up or down (:func:`extend_ladder`), until a window of
``W`` rungs passes or the whole ladder is evaluated -- whose analysis is then the full
sweep's, so a parameter that does not pass gets the full sweep's verdict and reason;
``sweep``: every rung of the ladder (above); ``fixed`` (one step per parameter,
``fixed_step`` relative or the ``step`` override absolute: a single rung with the 3-point
stencil, or the rungs ``2h, h`` with the 5-point stencil, which then also yields one
rung-to-rung check); ``fast`` (a known step ``h`` from an earlier output file or the YAML:
rungs ``2h, h, h/2``, chosen rung ``h``, verdict from the two changes).

The adaptive start (``start_rungs``, default 2). The expected plateau is the window of ``W``
rungs from ``start_step`` down (rungs 2..5 of the default ladder, relative steps 0.0125 ..
0.0016), or ``2h, h, h/2, h/4`` around a known step ``h`` (``steps_from``, or a YAML
``step``). The start evaluates ``start_rungs`` of them: the central ones (rungs 3 and 4 by
default: ``2h`` = 0.00625 and ``h`` = 0.0031 relative, the log-centre of the plateau
1e-3 .. 1e-2 measured with CAMB, notes/derivatives.md), or, around a known step, ``2h, h``
(the rung the earlier run chose is chosen again, from the same points). Two central rungs
cost four model evaluations, ``x +- h, x +- 2h``; with the fiducial they give five values:
enough for the 3-point derivatives ``D3(2h)`` and ``D3(h)``, the 5-point one at ``h``, and
the two residuals of a quadratic through five points:

* the odd one, the rung-to-rung change ``delta = |D3(2h) - D3(h)| / |D3(h)|`` (data metric);
* the even one, the fourth difference ``f(x+2h) + f(x-2h) - 4 (f(x+h) + f(x-h)) + 6 f(x)``
  (zero for any cubic), scaled as ``even = |Delta4| / (sqrt(112) h |D3(h)|)``: for
  independent noise of size ``s`` per evaluation both residuals then have the expected size
  ``sqrt(0.625) s / (h |D3(h)|)`` (variances ``(2/16 + 2/4) s^2 / h^2`` and ``70 s^2``),
  while a truncation error shows in ``delta`` (order ``h^2 f'''``) and hardly in ``even``
  (order ``h^3 f''''``). The even residual is an independent measure of the noise: a change
  that is small because the noise of the two rungs happens to cancel is caught by it. (On
  CAMB's noise-limited ladders of the shipped recipes, ``even / delta`` is 0.9 .. 1.2; on
  truncation-limited ones below 0.02.)

The start establishes the plateau (verdict PASS, basis ``start``, chosen rung ``h``,
derivative the 5-point one at ``h``) when ``max(delta, even) <= tol_pass / START_MARGIN``.
The margin makes a start PASS imply a passing window: if the change of a pair of rungs is a
truncation part growing like ``h^2`` (x4 per rung up) plus a noise part growing like ``1/h``
(x2 per rung down), then, whatever their split, one of the three ``W = 4`` windows that
contain the start pair has all its changes within ``START_MARGIN = 2.15`` times the start's
(the worst split is 47% truncation), so the full sweep would pass too. Otherwise the ladder
grows from the start as any adaptive ladder: first up when the even residual says the change
is mostly noise (``even >= delta / 2``: it estimates the noise part of the change), else
down; then toward the end with the smaller change, until a whole window of ``W`` rungs
passes (fewer rungs than a window, once grown, never pass). A start of ``W`` rungs
(``start_rungs: window``) is the earlier behaviour: the start is a window and is analysed as
one. What a short start cannot see is a plateau narrower than a window that contains the
start pair and whose changes break those growth laws one rung away; the start then says PASS
where the full sweep would not. The basis of every verdict (``start`` or ``window``, and the
rungs it rests on) is recorded with the sweep and printed by ``fishcast stability``;
``start_rungs: window`` restores the window-based claim.

Measured (full 8-rung sweeps of every shipped recipe, replayed with each start): the start at
the central rungs 3, 4 with the margin gives the full sweep's verdict on every parameter of
every recipe, at the test suite's cheap CAMB settings and on the Euclid WL pessimistic recipe
as shipped, where Omega_m, Omega_b, w0 and wa pass at the start and h grew down two rungs
to a window: 25 CAMB runs, against 41 with the earlier 4-rung start and 81 for the full
sweep (tests/benchmarks/bench_sweep.py).

A parameter's expected plateau may lie lower: the registry's ``start_halvings`` hint
(:class:`fishcast.parameters.Parameter`) moves the start that many rungs down the same ladder
(the expected plateau becomes rungs ``2 + k .. 5 + k``, clipped to the ladder). It is used by
the adaptive start only: the ladder, modes 'sweep', 'fixed' and 'fast', a known step
(``step``, ``steps_from``) and a user's ``start_step`` otherwise stay as they are. h has 1:
P(k in 1/Mpc) moves strongly with h, so the 3-point truncation dominates the changes down to
lower steps. Full 8-rung sweeps of h as shipped (rung-to-rung changes from relative step 0.05
down): Euclid WL pessimistic 1.3e-3, 1.4e-3, 3.3e-3, 1.6e-3, 7.9e-4, 1.6e-4, 3.7e-4 and WL
optimistic 3.5e-3, 1.4e-2, 1.5e-3, 1.5e-3, 7.0e-4, 2.3e-4, 5.6e-4 (both PASS at relative
step 0.0016, the window of rungs 4..7); the start at rungs 4, 5 (0.0031, 0.0016) has change
7.9e-4 / 7.0e-4 and fourth difference 1.6e-4 / 1.5e-4, within ``tol_pass / START_MARGIN`` =
9.3e-4: PASS at the start, at the full sweep's own step and derivative, 4 CAMB runs for h
where the start at rungs 3, 4 (change 1.6e-3) needed 8. On the 3x2pt optimistic recipe h
WARNs in the full sweep (best window 2.7e-3) and the adaptive ladder grows to the whole
ladder from either start (the full sweep's verdict). The Euclid WL pessimistic sweeps then
take 21 CAMB runs. The pair one rung higher (rungs 2, 3) costs more
(CAMB's noise in h sits there) and, without the margin, passed Omega_m on two clustering
recipes where the full sweep WARNs. A 3-point stencil comparison at one step (x+h, x-h, x+2h: central against one-sided)
was not taken: it has a single residual (a third difference, truncation and noise together),
so it can neither catch a coincidence of noise nor say which way to grow, and it gives no
5-point derivative; the 2-rung start costs one point more and has both residuals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import parameters as _params
from .errors import ComputationError, InputError
from .parameters import Domain, Parameter

__all__ = [
    "DerivativesConfig",
    "ParameterOverride",
    "ParameterDomain",
    "ParameterSpec",
    "Ladder",
    "ParameterSweep",
    "ACCURACY_SETTINGS",
    "domain_of",
    "resolve_spec",
    "plan_ladder",
    "plan_points",
    "extend_ladder",
    "analyse",
    "run_sweep",
    "fast_steps",
]

#: moved to :mod:`fishcast.io.sweeps` (the HDF5 contract lives in fishcast.io); still
#: importable from here for old importers
_MOVED_TO_IO = ("known_steps_from_hdf5", "write_sweeps", "read_sweeps")


def __getattr__(name: str):
    if name in _MOVED_TO_IO:
        from .io import sweeps

        return getattr(sweeps, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: mode 'adaptive': a start of fewer than ``window`` rungs passes when its change and its
#: fourth difference are within ``tol_pass / START_MARGIN``. 2.15: over the split of a change
#: into a truncation part (x4 per rung up) and a noise part (x2 per rung down), the largest
#: ratio of the best 4-rung window containing the start pair (its largest change) to the
#: start pair's change (2.147, at a 47% truncation share; see the module docstring)
START_MARGIN = 2.15

#: the fourth difference scaled to the size of the rung-to-rung change under independent
#: noise per evaluation: sqrt(70 / 0.625)
_EVEN_SCALE = math.sqrt(112.0)

#: fishcast.cosmology settings (``cosmology.accuracy`` in the survey YAML) whose increase
#: lowers CAMB's numerical noise; named in the message of a noise-limited parameter.
ACCURACY_SETTINGS = ("accuracy_boost", "l_accuracy_boost", "k_max", "k_per_logint")

_TINY = 1e-300


# ---------------------------------------------------------------------------- domains
@dataclass(frozen=True)
class ParameterDomain:
    """Default scale, physical domain and unit of a parameter: the derivative engine's view
    of its :class:`fishcast.parameters.Parameter` (the registry is the only table).

    scale: the unit of the relative step when the fiducial cannot serve (it is zero or an
        offset). ``scale_always`` True: the declared scale is used even for a non-zero
        fiducial (offsets such as ``wa``, ``dz_i``, ``m_i``).
    lower / upper: domain bounds (None: unbounded); ``*_inclusive`` False means strict.
    cosmological: the parameter enters through the Boltzmann code (noise advice names the
        CAMB accuracy settings).
    start_halvings: mode 'adaptive': the expected plateau lies this many halvings below
        ``start_step`` (the registry's hint; the ladder itself does not move).
    """

    scale: float = 1.0
    scale_always: bool = False
    lower: float | None = None
    upper: float | None = None
    lower_inclusive: bool = False
    upper_inclusive: bool = False
    units: str = ""
    cosmological: bool = False
    start_halvings: int = 0

    @classmethod
    def of(cls, param: Parameter) -> "ParameterDomain":
        d = param.domain
        return cls(scale=param.step_scale, scale_always=param.offset, lower=d.lower, upper=d.upper,
                   lower_inclusive=d.lower_inclusive, upper_inclusive=d.upper_inclusive, units=param.unit,
                   cosmological=param.cosmological, start_halvings=param.start_halvings)


def domain_of(name: str) -> ParameterDomain:
    """The default :class:`ParameterDomain` of ``name`` from the parameter registry
    (unbounded, scale 1 if unknown). Users declare more (or override) under
    ``derivatives.parameters``."""
    return ParameterDomain.of(_params.lookup(name))


# ---------------------------------------------------------------------------- config
class ParameterOverride(BaseModel):
    """Per-parameter settings under ``derivatives.parameters.<name>`` (glob patterns such as
    ``dz_*`` allowed; an exact name wins over a pattern). Declares new parameters too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    h_max: float | None = Field(None, gt=0, description="top relative step (times scale)")
    n_rungs: int | None = Field(None, ge=1, le=30, description="number of rungs of the ladder")
    scale: float | None = Field(None, gt=0, description="unit of the relative step, in the parameter's unit")
    step: float | None = Field(
        None, gt=0, description="absolute step in the parameter's unit: the step of mode 'fixed', the known step of "
        "mode 'fast', and the chosen rung of mode 'adaptive''s start (its rungs are 2*step, step, ...)"
    )
    lower: float | None = Field(None, description="lower bound of the physical domain (inclusive)")
    upper: float | None = Field(None, description="upper bound of the physical domain (inclusive)")
    units: str | None = Field(None, description="unit of the parameter (e.g. eV)")


class DerivativesConfig(BaseModel):
    """The ``derivatives:`` section of a survey YAML: how derivatives choose their step.

    Defaults, from CAMB 2.0.5 measurements (notes/derivatives.md): derivatives of P_lin are
    stable to ~1e-4 and of P_nl (mead2020) to 1e-4..1e-3 in the signal-to-noise metric on a
    plateau of relative steps 1e-3..1e-2, with noise below ~1e-4 and 3-point truncation above
    ~3e-2. Hence h_max = 0.05 and 8 rungs (0.05 .. 3.9e-4), ``tol_pass`` = 2e-3 (twice the
    worst plateau change measured) and ``tol_warn`` = 1e-2 (a 1% change of a derivative in
    the data metric moves Fisher errors by up to ~1%). Mode 'adaptive' starts from the two
    central rungs (relative 0.00625, 0.0031: the log-centre of that plateau) of the expected
    plateau (``start_step`` 0.0125 .. 0.0016), ``start_rungs`` = 2; see the module docstring.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["adaptive", "sweep", "fixed", "fast"] = Field(
        "adaptive",
        description="adaptive: a start of 'start_rungs' rungs around the expected plateau, extended rung by rung "
        "(within the sweep's ladder) only until the plateau is established; sweep: every rung of the ladder; "
        "fixed: one step per parameter; fast: reuse known steps and check only the neighbouring rungs",
    )
    h_max: float = Field(0.05, gt=0, description="top relative step of the ladder (times the parameter's scale)")
    n_rungs: int = Field(8, ge=2, le=30, description="rungs of the ladder; each halves the step (mode 'adaptive': "
                         "the range it may extend over; only the rungs it needs are evaluated)")
    start_step: float = Field(0.0125, gt=0, description="mode 'adaptive': relative step (times scale) of the first "
                              "rung of the expected plateau, snapped to the ladder; the expected plateau is 'window' "
                              "rungs from there down (default rungs 2..5 of the default ladder: 0.0125 .. 0.0016), "
                              "and the start evaluates its central 'start_rungs' rungs")
    start_rungs: int | Literal["window"] = Field(
        2, description="mode 'adaptive': rungs evaluated first (2 .. window). 2: the central rungs 2h, h of the "
        "expected plateau, which establish it when their rung-to-rung change and fourth difference are within "
        "tol_pass / 2.15 (a margin that implies a passing window), else the ladder grows to a passing window; "
        "'window' (or the window's size): start from the whole expected plateau, as before")
    window: int = Field(4, ge=2, le=10, description="plateau window (rungs); 3 can pick false plateaus at tiny steps")
    tol_pass: float = Field(2e-3, gt=0, description="PASS when the plateau's rung-to-rung change (data metric) is at most this")
    tol_warn: float = Field(1e-2, gt=0, description="WARN up to this, FAIL above")
    tie_factor: float = Field(1.5, ge=1, description="windows whose score is within this factor of the best are ties, broken toward larger steps")
    stencil: Literal["3-point", "5-point"] = Field(
        "5-point", description="derivative reported: 3-point central, or 5-point by Richardson from neighbouring rungs (no extra calls)"
    )
    fixed_step: float = Field(0.01, gt=0, description="relative step (times scale) of mode 'fixed' when no 'step' override is given")
    stem_check: bool = Field(False, description="cross-check with a SteM-style linear fit over the plateau points")
    on_camb_failure: Literal["stop", "degrade"] = Field(
        "stop",
        description="when CAMB fails at a stencil point: 'stop' the run (exit 4, the finished evaluations stay "
        "in the cache), or 'degrade': drop the rungs that need the failed points and analyse the longest "
        "run of complete rungs left (the verdict becomes WARN and says so; a failure at the fiducial, or too "
        "few rungs left, still stops)",
    )
    steps_from: str | None = Field(None, description="modes 'fast' and 'adaptive': earlier fishcast output file whose "
                                   "chosen steps are reused (fast: checked against the neighbouring rungs; adaptive: "
                                   "the start is placed around them)")
    parameters: dict[str, ParameterOverride] = Field(default_factory=dict, description="per-parameter overrides and declarations")

    @model_validator(mode="after")
    def _check(self) -> "DerivativesConfig":
        if self.tol_warn < self.tol_pass:
            raise ValueError("tol_warn must be >= tol_pass")
        if self.mode in ("sweep", "adaptive") and self.n_rungs < self.window:
            raise ValueError(f"n_rungs ({self.n_rungs}) must be >= window ({self.window}) in mode '{self.mode}'")
        if self.start_rungs != "window" and not 2 <= self.start_rungs <= self.window:
            raise ValueError(f"start_rungs ({self.start_rungs}) must be between 2 and window ({self.window}), "
                             "or 'window'")
        return self

    @property
    def n_start(self) -> int:
        """Rungs of the adaptive start (``start_rungs``, 'window' resolved)."""
        return self.window if self.start_rungs == "window" else int(self.start_rungs)

    def override_for(self, name: str) -> ParameterOverride:
        """The override of ``name``: exact key, else the first matching glob pattern."""
        import fnmatch

        if name in self.parameters:
            return self.parameters[name]
        for pat, ov in self.parameters.items():
            if any(c in pat for c in "*?[") and fnmatch.fnmatchcase(name, pat):
                return ov
        return ParameterOverride()


# ---------------------------------------------------------------------------- spec / ladder
@dataclass(frozen=True)
class ParameterSpec:
    """Everything needed to plan and analyse one parameter's derivative (resolved from the
    defaults table and the config by :func:`resolve_spec`).

    top_step: the largest absolute step [parameter unit]; rungs halve it ``n_rungs - 1`` times.
    chosen: fixed rung index for modes 'fixed' and 'fast' (None for 'sweep' and 'adaptive').
    max_step / min_step: mode 'adaptive': the largest and smallest step [parameter unit] the
        ladder may be extended to (the full sweep's ladder, and the expected plateau); None
        otherwise. ``top_step`` and ``n_rungs`` are then the rungs planned so far.
    extended_up / extended_down: mode 'adaptive': rungs added above / below the start.
    start_rungs: mode 'adaptive': the rungs of the start (``DerivativesConfig.n_start``); 0
        otherwise.
    window: the plateau window (rungs) of modes 'sweep' and 'adaptive'.
    """

    name: str
    mode: str
    scale: float
    top_step: float
    n_rungs: int
    lower: float | None = None
    upper: float | None = None
    lower_inclusive: bool = False
    upper_inclusive: bool = False
    units: str = ""
    cosmological: bool = False
    chosen: int | None = None
    max_step: float | None = None
    min_step: float | None = None
    extended_up: int = 0
    extended_down: int = 0
    start_rungs: int = 0
    window: int = 4

    @property
    def at_start(self) -> bool:
        """Mode 'adaptive': the rungs planned are the start's, none added nor dropped."""
        return (self.mode == "adaptive" and self.start_rungs > 0 and self.n_rungs == self.start_rungs
                and self.extended_up == 0 and self.extended_down == 0)

    @property
    def short_start(self) -> bool:
        """Mode 'adaptive' at a start of fewer rungs than the window (judged by the start's own
        criterion, see the module docstring)."""
        return self.at_start and self.start_rungs < self.window

    @property
    def steps(self) -> np.ndarray:
        """The planned absolute steps, largest first [parameter unit]."""
        return self.top_step * 2.0 ** -np.arange(self.n_rungs, dtype=float)

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the parameter's physical domain."""
        return self.domain.contains(value)

    def domain_text(self) -> str:
        return self.domain.text()

    @property
    def domain(self) -> Domain:
        return Domain(self.lower, self.upper, self.lower_inclusive, self.upper_inclusive)


def effective_domain(name: str, config: DerivativesConfig | None = None,
                     parameter: Parameter | None = None) -> Domain:
    """The physical domain of ``name`` the derivative engine keeps to: the parameter's
    description (``parameter``, else the registry's), narrowed or widened by the YAML
    override ``derivatives.parameters.<name>.lower`` / ``upper`` (inclusive bounds)."""
    config = config or DerivativesConfig()
    dom = ParameterDomain.of(parameter) if parameter is not None else domain_of(name)
    ov = config.override_for(name)
    lower, lower_inc = dom.lower, dom.lower_inclusive
    upper, upper_inc = dom.upper, dom.upper_inclusive
    if ov.lower is not None:
        lower, lower_inc = float(ov.lower), True
    if ov.upper is not None:
        upper, upper_inc = float(ov.upper), True
    return Domain(lower, upper, lower_inc, upper_inc)


def fiducial_outside_domain(name: str, fiducial: float, config: DerivativesConfig | None = None,
                            parameter: Parameter | None = None) -> str | None:
    """Why the fiducial of ``name`` is outside its :func:`effective_domain`, or None."""
    dom = effective_domain(name, config, parameter)
    if dom.contains(float(fiducial)):
        return None
    return f"fiducial {name} = {float(fiducial):g} is outside its physical domain {dom.text()}"


def resolve_spec(name: str, fiducial: float, config: DerivativesConfig | None = None,
                 known_step: float | None = None, parameter: Parameter | None = None,
                 known_rungs: int | None = None) -> ParameterSpec:
    """Resolve the ladder of ``name`` at ``fiducial`` from the parameter's description and
    ``config``.

    known_step: an absolute step from an earlier run (modes 'fast' and 'adaptive'); the YAML
    ``step`` override wins over it. In mode 'fast' a parameter without a known step is swept.
    Mode 'adaptive' starts from ``config.n_start`` rungs of the expected plateau, a window
    of ``config.window`` rungs: from ``start_step`` (snapped to the sweep's ladder) down, of
    which the start takes the central rungs (the upper-central ones when the counts differ
    by an odd number); or, with a known step ``h``, the rungs ``2h, h, h/2, ...`` from the
    top (``h`` is then the chosen rung of the start, as in the run that chose it). It may grow
    over the sweep's ladder (``h_max``, ``n_rungs``) by :func:`extend_ladder`.
    known_rungs: with ``known_step`` (not a YAML ``step``), the rungs the earlier verdict rested
    on (``ParameterSweep.plateau_rungs``): the start has at least as many (at most
    ``window``), so that an earlier window is the start and gives the same derivative from the
    same points.
    parameter: the parameter's description (a survey's, e.g. a probe's own nuisance
    parameter); default: the registry's (:func:`domain_of`).
    Raises InputError if the fiducial is outside the parameter's domain.
    """
    config = config or DerivativesConfig()
    dom = ParameterDomain.of(parameter) if parameter is not None else domain_of(name)
    ov = config.override_for(name)
    fid = float(fiducial)
    if ov.scale is not None:
        scale = float(ov.scale)
    elif dom.scale_always or fid == 0.0:
        scale = dom.scale
    else:
        scale = abs(fid)
    bounds = effective_domain(name, config, parameter)
    lower, lower_inc, upper, upper_inc = bounds.lower, bounds.lower_inclusive, bounds.upper, bounds.upper_inclusive
    units = ov.units if ov.units is not None else dom.units
    h_max = ov.h_max if ov.h_max is not None else config.h_max
    n_rungs = ov.n_rungs if ov.n_rungs is not None else config.n_rungs
    step = ov.step if ov.step is not None else known_step
    mode = config.mode
    chosen: int | None = None
    max_step = min_step = None
    if mode == "fast" and step is None:
        mode = "sweep"
    if mode in ("sweep", "adaptive"):
        top = scale * h_max
        if n_rungs < config.window:
            raise InputError(f"derivatives.parameters.{name}.n_rungs ({n_rungs}) must be >= window ({config.window})")
    start = 0
    if mode == "adaptive":
        full_top, full_bottom = top, top * 2.0 ** -(n_rungs - 1)
        W, start = config.window, config.n_start
        if step is not None:
            top = 2.0 * float(step)
            offset = 0
            if ov.step is None and known_rungs is not None:
                start = min(max(start, int(known_rungs)), W)
        else:  # the ladder's rung nearest to start_step (exact powers of two: the same floats as the sweep's)
            k0 = int(round(math.log2(h_max / config.start_step))) + dom.start_halvings
            top = full_top * 2.0 ** -min(max(k0, 0), n_rungs - W)
            offset = (W - start) // 2  # the central rungs of the expected plateau
        max_step = max(full_top, top)
        min_step = min(full_bottom, top * 2.0 ** -(W - 1))
        top = top * 2.0 ** -offset
        n_rungs = start
    elif mode == "fixed":
        h = float(step) if step is not None else scale * config.fixed_step
        if config.stencil == "5-point":
            top, n_rungs, chosen = 2.0 * h, 2, 1
        else:
            top, n_rungs, chosen = h, 1, 0
    elif mode == "fast":
        top, n_rungs, chosen = 2.0 * float(step), 3, 1
    spec = ParameterSpec(name=name, mode=mode, scale=scale, top_step=float(top), n_rungs=int(n_rungs),
                         lower=lower, upper=upper, lower_inclusive=lower_inc, upper_inclusive=upper_inc,
                         units=units, cosmological=dom.cosmological, chosen=chosen,
                         max_step=max_step, min_step=min_step, start_rungs=start, window=config.window)
    if not spec.contains(fid):
        raise InputError(f"fiducial {name} = {fid:g} is outside its physical domain {spec.domain_text()}")
    return spec


def fast_steps(step: float) -> np.ndarray:
    """The rungs mode 'fast' evaluates around a known absolute step: ``[2h, h, h/2]``."""
    return float(step) * np.array([2.0, 1.0, 0.5])


@dataclass(frozen=True)
class Ladder:
    """The planned rungs of one parameter.

    steps: absolute steps (K,) [parameter unit], largest first.
    stencils: per rung "central" | "forward" | "backward".
    points: per rung the parameter values evaluated (two each; the fiducial is extra).
    """

    name: str
    fiducial: float
    steps: np.ndarray
    stencils: tuple[str, ...]
    points: tuple[tuple[float, float], ...]

    def values(self) -> list[float]:
        """Every distinct parameter value needed (the fiducial not included), sorted."""
        return sorted({v for pair in self.points for v in pair})

    def describe(self, value: float) -> str:
        """Where ``value`` sits in the ladder, for error messages (e.g. a CAMB failure)."""
        for k, pair in enumerate(self.points):
            if any(_same(value, v) for v in pair):
                return (f"{self.name} = {value:.8g} (rung {k}, step {self.steps[k]:.4g}, "
                        f"{self.stencils[k]} stencil, fiducial {self.fiducial:.8g})")
        return f"{self.name} = {value:.8g} (not in the ladder; fiducial {self.fiducial:.8g})"


def _same(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def plan_ladder(name: str, fiducial: float, spec: ParameterSpec) -> Ladder:
    """The ladder of ``name``: steps, stencil per rung (central where the domain allows,
    one-sided otherwise) and the values each rung evaluates. No value leaves the domain;
    raises InputError when a rung fits no stencil (lower ``h_max`` then)."""
    x = float(fiducial)
    steps = spec.top_step * 2.0 ** -np.arange(spec.n_rungs, dtype=float)
    stencils: list[str] = []
    points: list[tuple[float, float]] = []
    for h in steps:
        h = float(h)
        lo, hi = x - h, x + h
        if spec.contains(lo) and spec.contains(hi):
            stencils.append("central")
            points.append((lo, hi))
        elif spec.contains(hi) and spec.contains(x + 2.0 * h):
            stencils.append("forward")
            points.append((hi, x + 2.0 * h))
        elif spec.contains(lo) and spec.contains(x - 2.0 * h):
            stencils.append("backward")
            points.append((lo, x - 2.0 * h))
        else:
            raise InputError(
                f"{name}: no stencil with step {h:.4g} around {x:g} fits in the domain {spec.domain_text()}; "
                f"lower derivatives.parameters.{name}.h_max (or step)"
            )
    return Ladder(name=name, fiducial=x, steps=steps, stencils=tuple(stencils), points=tuple(points))


def shrink_to_complete_rungs(name: str, fiducial: float, spec: ParameterSpec,
                             available: Callable[[float], bool], config: DerivativesConfig | None = None
                             ) -> ParameterSpec | None:
    """The spec restricted to the longest run of consecutive rungs whose points are all
    ``available`` (the others needed a point where the model failed); ``spec`` itself when
    every rung is complete, None when too few rungs are left to analyse (fewer than the
    plateau window in a sweep, or the chosen rung lost in modes 'fixed'/'fast')."""
    import dataclasses

    config = config or DerivativesConfig()
    ladder = plan_ladder(name, fiducial, spec)
    ok = [all(available(v) for v in pair) for pair in ladder.points]
    if all(ok):
        return spec
    best, start = (0, 0), None
    for k, good in enumerate(ok + [False]):
        if good and start is None:
            start = k
        elif not good and start is not None:
            if k - start > best[1] - best[0]:
                best = (start, k)
            start = None
    a, b = best
    if b - a == 0:
        return None
    if spec.chosen is not None:
        if not a <= spec.chosen < b:
            return None
        chosen = spec.chosen - a
    else:
        chosen = None  # mode 'adaptive' keeps even a short run: extend_ladder grows it again
        if b - a < (1 if spec.mode == "adaptive" else config.window):
            return None
    return dataclasses.replace(spec, top_step=float(spec.top_step * 2.0 ** -a), n_rungs=b - a, chosen=chosen)


def _rung_fits(name: str, fiducial: float, spec: ParameterSpec, rung: int,
               available: Callable[[float], bool] | None) -> bool:
    """Whether rung ``rung`` of ``spec`` fits a stencil in the domain and its points can be
    evaluated (``available``: False for a point where the model failed)."""
    try:
        ladder = plan_ladder(name, fiducial, spec)
    except InputError:
        return False
    return available is None or all(available(v) for v in ladder.points[rung])


def extend_ladder(name: str, fiducial: float, spec: ParameterSpec, sweep: "ParameterSweep | None",
                  available: Callable[[float], bool] | None = None) -> ParameterSpec | None:
    """The next ladder of an adaptive sweep, or None when it is done.

    Done when the mode is not 'adaptive', when ``sweep`` (the analysis of ``spec``'s rungs)
    is PASS -- the plateau is established: ``window`` consecutive rungs whose changes are all
    within ``tol_pass``, or the start's criterion (module docstring) -- or when no rung can be
    added: the ladder then covers the sweep's whole range (``spec.max_step`` ..
    ``spec.min_step``), and its analysis is the full sweep's. Otherwise one rung is added, a
    step twice the largest (up) or half the smallest (down): toward the end of the ladder
    whose rung-to-rung change is smaller (up on a tie: larger steps are preferred, as in the
    plateau choice), since changes fall toward the plateau (noise grows as the step shrinks,
    truncation as it grows). With a single change (a 2-rung start) the fourth difference
    decides: it measures the noise part of the change (about equal to the change under noise,
    a small fraction ~ w h / 5 of it under truncation), so up when it is at least half the
    change (noise dominates), else down; up when it is not defined (one-sided rungs).
    ``sweep`` None (a ladder cut to one rung by a failed point): down first, where the model
    is nearer the fiducial. A rung that leaves the domain, or needs a point that is not
    ``available`` (the model failed there), is not added; the ladder stays contiguous, so that
    side is closed.
    """
    import dataclasses

    if spec.mode != "adaptive" or (sweep is not None and sweep.verdict == "PASS"):
        return None
    rel = 1e-9
    up = down = None
    if spec.max_step is not None and 2.0 * spec.top_step <= spec.max_step * (1.0 + rel):
        cand = dataclasses.replace(spec, top_step=2.0 * spec.top_step, n_rungs=spec.n_rungs + 1,
                                   extended_up=spec.extended_up + 1)
        up = cand if _rung_fits(name, fiducial, cand, 0, available) else None
    smallest = spec.top_step * 2.0 ** -(spec.n_rungs - 1)
    if spec.min_step is not None and 0.5 * smallest >= spec.min_step * (1.0 - rel):
        cand = dataclasses.replace(spec, n_rungs=spec.n_rungs + 1, extended_down=spec.extended_down + 1)
        down = cand if _rung_fits(name, fiducial, cand, cand.n_rungs - 1, available) else None
    if sweep is None or len(sweep.deltas) == 0:
        order = (down, up)
    elif len(sweep.deltas) == 1 and len(sweep.evens) == 1 and not np.isnan(sweep.evens[0]):
        order = (up, down) if sweep.evens[0] >= 0.5 * sweep.deltas[0] else (down, up)
    else:
        d = np.where(np.isfinite(sweep.deltas), sweep.deltas, np.inf)
        order = (up, down) if d[0] <= d[-1] else (down, up)
    return next((c for c in order if c is not None), None)


def plan_points(name: str, fiducial: float, spec: ParameterSpec) -> list[float]:
    """Every value of ``name`` at which the model must be evaluated (fiducial excluded: it is
    given to :func:`analyse` as ``fid_signal``). Keys of ``signals`` in :func:`analyse` must be
    these floats (exact; a relative difference of 1e-12 is tolerated)."""
    return plan_ladder(name, fiducial, spec).values()


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class ParameterSweep:
    """The derivative of the signal with respect to one parameter, and how it was chosen.

    Units: steps in the parameter's unit (``parameter_units``); derivatives in
    ``signal unit / parameter unit``; deltas and spreads are dimensionless (data metric).

    steps (K,), relative_steps (K,) = steps / scale, stencils (K,) per-rung stencil,
    derivatives_3pt (K, *shape): second-order per-rung derivatives (central or one-sided),
    derivatives_5pt (K, *shape): Richardson ``(4 D3_k - D3_{k-1}) / 3`` (NaN for rung 0 and
    where the stencils of rungs k-1 and k differ),
    deltas (K-1,): ``|D3_k - D3_{k+1}| / |D3_{k+1}|`` in the data metric,
    window (start, stop): plateau rungs ``start .. stop-1``; chosen: rung index,
    extended_up / extended_down: mode 'adaptive': rungs added above / below its start;
    search_steps: its range (largest, smallest step) [parameter unit], else None,
    evens (K-1,): the fourth difference of neighbouring central rungs in the data metric,
    scaled like ``deltas`` under noise (NaN where a rung is one-sided; see :func:`_evens`),
    basis: what the verdict rests on -- 'window' (the best window of ``W`` rungs), 'start'
    (mode 'adaptive': its start of fewer rungs, passing within ``tol_pass / START_MARGIN``),
    'short' (mode 'adaptive': fewer rungs than a window, not the start: never PASS), 'fixed',
    'fast'; the rungs it rests on are ``window`` (``plateau_rungs``),
    derivative: the reported derivative (stencil ``stencil``), plateau_width: rungs
    connected to the chosen one by changes <= tol_pass, spread: max over the window of
    ``|D3_i - D3_c| / |D3_c|``, verdict PASS|WARN|FAIL, reason, message.
    """

    name: str
    fiducial: float
    scale: float
    mode: str
    steps: np.ndarray
    relative_steps: np.ndarray
    stencils: tuple[str, ...]
    derivatives_3pt: np.ndarray
    derivatives_5pt: np.ndarray
    deltas: np.ndarray
    window: tuple[int, int]
    chosen: int
    stencil: str
    derivative: np.ndarray
    plateau_width: int
    spread: float
    score: float
    verdict: str
    reason: str
    message: str
    tol_pass: float
    tol_warn: float
    parameter_units: str = ""
    signal_units: str = ""
    stem_derivative: np.ndarray | None = None
    stem_difference: float | None = None
    norms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extended_up: int = 0
    extended_down: int = 0
    search_steps: tuple[float, float] | None = None
    evens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    basis: str = ""

    @property
    def plateau_rungs(self) -> int:
        """The rungs the verdict rests on: the plateau window's (2 for an adaptive 2-rung
        start, ``window`` for a window)."""
        return int(self.window[1] - self.window[0])

    @property
    def claim(self) -> str:
        """What the verdict rests on, in words (e.g. '2-rung start', '4-rung window')."""
        n = self.plateau_rungs
        return {"window": f"{n}-rung window", "start": f"{n}-rung start", "short": f"{n} rungs (short)",
                "fixed": "fixed step" + (f", {n} rungs" if n > 1 else ""), "fast": f"known step, {n} rungs"
                }.get(self.basis, self.basis or "-")

    @property
    def rungs_used(self) -> int:
        """The rungs evaluated (in mode 'adaptive', those the search needed)."""
        return len(self.steps)

    @property
    def search_rungs(self) -> int:
        """Mode 'adaptive': the rungs of the range it could extend over (the full sweep's
        ladder); otherwise the rungs evaluated."""
        if self.search_steps is None:
            return self.rungs_used
        hi, lo = self.search_steps
        return int(round(math.log2(hi / lo))) + 1

    @property
    def step(self) -> float:
        """The chosen absolute step [parameter unit]."""
        return float(self.steps[self.chosen])

    @property
    def relative_step(self) -> float:
        return float(self.relative_steps[self.chosen])

    @property
    def derivative_3pt(self) -> np.ndarray:
        """The 3-point (second-order) derivative at the chosen rung."""
        return self.derivatives_3pt[self.chosen]

    @property
    def derivative_5pt(self) -> np.ndarray:
        """The 5-point (Richardson) derivative at the chosen rung (NaN if unavailable there)."""
        return self.derivatives_5pt[self.chosen]

    @property
    def one_sided(self) -> bool:
        """Whether the reported derivative uses a one-sided stencil."""
        return "forward" in self.stencil or "backward" in self.stencil

    def derivative_at(self, rung: int) -> np.ndarray:
        """The derivative the chosen stencil gives at ``rung`` (5-point where available there,
        else the rung's 3-point); used by the error-stability check."""
        return self.derivatives_5pt[rung] if self.has_5pt(rung) else self.derivatives_3pt[rung]

    def has_5pt(self, rung: int) -> bool:
        """Whether the reported stencil is 5-point and available at ``rung``."""
        return ("5-point" in self.stencil and 0 <= rung < len(self.steps)
                and bool(np.all(np.isfinite(self.derivatives_5pt[rung]))))


# ---------------------------------------------------------------------------- analysis
def _lookup(signals: Mapping[float, np.ndarray], value: float, ladder: Ladder) -> np.ndarray:
    arr = signals.get(value)
    if arr is None:
        for key, a in signals.items():
            if _same(float(key), value):
                arr = a
                break
    if arr is None:
        raise ComputationError(f"no signal was computed at {ladder.describe(value)}")
    arr = np.asarray(arr, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ComputationError(f"the signal is not finite at {ladder.describe(value)}")
    return arr


def _rung_derivatives(ladder: Ladder, signals, fid: np.ndarray) -> np.ndarray:
    out = []
    for h, st, (p1, p2) in zip(ladder.steps, ladder.stencils, ladder.points):
        a, b = _lookup(signals, p1, ladder), _lookup(signals, p2, ladder)
        if st == "central":  # points (x-h, x+h)
            out.append((b - a) / (2.0 * h))
        elif st == "forward":  # points (x+h, x+2h)
            out.append((-3.0 * fid + 4.0 * a - b) / (2.0 * h))
        else:  # backward: points (x-h, x-2h)
            out.append((3.0 * fid - 4.0 * a + b) / (2.0 * h))
    return np.stack(out)


def _diagnose(deltas: np.ndarray, steps: np.ndarray) -> str:
    """Why no rung window is flat enough: 'noise-limited' if the changes grow as the step
    shrinks below their minimum, 'truncation-limited' if they fall steeply (~h^2) down to the
    minimum and not further, else 'no plateau'."""
    d = np.maximum(np.asarray(deltas, dtype=float), _TINY)
    if len(d) < 2 or not np.all(np.isfinite(d)):
        return "no plateau"
    logd = np.log(d)
    logh = np.log(np.sqrt(steps[:-1] * steps[1:]))
    m = int(np.argmin(d))
    noise = truncation = False
    if len(d) - m >= 2:
        slope = np.polyfit(logh[m:], logd[m:], 1)[0]
        noise = slope < -0.5 and d[-1] >= 2.0 * d[m]
    if m >= 1:
        slope = np.polyfit(logh[: m + 1], logd[: m + 1], 1)[0]
        truncation = slope > 1.0 and d[0] >= 2.0 * d[m]
    if noise:
        return "noise-limited"
    if truncation:
        return "truncation-limited"
    return "no plateau"


def _advice(reason: str, spec: ParameterSpec, name: str) -> str:
    if reason == "noise-limited":
        if spec.cosmological:
            return ("the derivative is limited by numerical noise: raise the CAMB accuracy "
                    "(cosmology.accuracy: " + ", ".join(ACCURACY_SETTINGS) + ") or use larger steps "
                    f"(derivatives.parameters.{name}.h_max)")
        return ("the derivative is limited by numerical noise in the probe's own computation "
                f"(integration grids); use larger steps (derivatives.parameters.{name}.h_max)")
    if reason == "truncation-limited":
        return ("the change falls like h^2 down to the smallest step: the ladder stops before the "
                f"plateau; add rungs (derivatives.parameters.{name}.n_rungs) or lower h_max")
    if reason == "no plateau":
        return "the derivative does not settle at any step: the signal may not be smooth in this parameter"
    if reason == "zero derivative":
        return f"the data do not depend on {name}: fix it or remove it from the free parameters"
    return ""


def analyse(name: str, fiducial: float, spec: ParameterSpec, signals: Mapping[float, np.ndarray],
            fid_signal: np.ndarray, norm: Callable[[np.ndarray], float],
            config: DerivativesConfig | None = None, *, signal_units: str = "") -> ParameterSweep:
    """Derivative of the signal with respect to ``name`` from the signals at the planned
    values (``signals[value]``, values from :func:`plan_points`) and at the fiducial.

    Steps: per-rung derivatives and their changes (:func:`_rungs`), the plateau window and
    chosen rung (:func:`_choose`), the reported stencil, the plateau's width and spread, the
    verdict (:func:`_verdict`), and the optional SteM cross-check.

    norm: length of a signal-shaped array in the data's Fisher metric, ``sqrt(gram(d, d))``.
    Raises ComputationError if a planned value is missing or its signal is not finite.
    """
    config = config or DerivativesConfig()
    ladder = plan_ladder(name, fiducial, spec)
    fid = np.asarray(fid_signal, dtype=float)
    d3, d5, norms, deltas = _rungs(ladder, signals, fid, norm)
    evens = _evens(ladder, signals, fid, norms, norm)
    basis = _basis(spec, len(ladder.steps))
    window, chosen, score = _choose(spec, config, deltas, evens, basis)
    use5 = config.stencil == "5-point" and chosen >= 1 and bool(np.all(np.isfinite(d5[chosen])))
    st = ladder.stencils[chosen]
    stencil = (f"5-point {st} (Richardson)" if use5 else f"3-point {st}")
    derivative = d5[chosen] if use5 else d3[chosen]
    width, spread = _plateau(config, d3, norms, deltas, window, chosen, norm)
    used = {ladder.stencils[chosen]} | ({ladder.stencils[chosen - 1]} if use5 else set())
    verdict, reason, message = _verdict(name, spec, config, ladder, norms, deltas, evens, window, score, used, basis)

    stem = stem_diff = None
    nc = norms[chosen]
    if config.stem_check and len(ladder.steps) >= 2:
        stem = _stem_slope(ladder, window, signals, fid)
        stem_diff = float(norm(stem - derivative)) / nc if nc > 0 else math.inf

    return ParameterSweep(
        name=name, fiducial=float(fiducial), scale=spec.scale, mode=spec.mode,
        steps=ladder.steps.copy(), relative_steps=ladder.steps / spec.scale, stencils=ladder.stencils,
        derivatives_3pt=d3, derivatives_5pt=d5, deltas=deltas, window=window, chosen=chosen,
        stencil=stencil, derivative=np.array(derivative), plateau_width=int(width), spread=float(spread),
        score=score, verdict=verdict, reason=reason, message=message,
        tol_pass=config.tol_pass, tol_warn=config.tol_warn, parameter_units=spec.units,
        signal_units=signal_units, stem_derivative=stem, stem_difference=stem_diff, norms=norms,
        extended_up=spec.extended_up, extended_down=spec.extended_down,
        search_steps=None if spec.max_step is None else (float(spec.max_step), float(spec.min_step)),
        evens=evens, basis=basis,
    )


def _rungs(ladder: Ladder, signals, fid: np.ndarray, norm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per rung: the 3-point derivatives D3 (K, *shape), the Richardson D5 (NaN where the
    rung above uses another stencil), their norms (K,), and the changes ``delta_k =
    |D3_k - D3_{k+1}| / |D3_{k+1}|`` (K-1,) in the data metric."""
    d3 = _rung_derivatives(ladder, signals, fid)
    K = len(ladder.steps)
    d5 = np.full_like(d3, np.nan)
    for k in range(1, K):
        if ladder.stencils[k] == ladder.stencils[k - 1]:
            d5[k] = (4.0 * d3[k] - d3[k - 1]) / 3.0
    norms = np.array([float(norm(d)) for d in d3])
    deltas = np.empty(K - 1)
    for k in range(K - 1):
        num = float(norm(d3[k] - d3[k + 1]))
        deltas[k] = 0.0 if num == 0.0 else (num / norms[k + 1] if norms[k + 1] > 0 else math.inf)
    return d3, d5, norms, deltas


def _evens(ladder: Ladder, signals, fid: np.ndarray, norms: np.ndarray, norm) -> np.ndarray:
    """Per pair of neighbouring central rungs ``(k, k+1)`` (steps ``2h, h``), the even
    residual of the five values ``f(x), f(x +- h), f(x +- 2h)``: the fourth difference
    ``|f(x+2h) + f(x-2h) - 4 (f(x+h) + f(x-h)) + 6 f(x)| / (sqrt(112) h |D3(h)|)`` in the data
    metric (zero for a cubic; under independent noise per evaluation the same expected size as
    the rung-to-rung change ``delta_k``). (K-1,); NaN where a rung of the pair is one-sided."""
    K = len(ladder.steps)
    out = np.full(max(K - 1, 0), np.nan)
    for k in range(K - 1):
        if ladder.stencils[k] != "central" or ladder.stencils[k + 1] != "central":
            continue
        (a_lo, a_hi), (b_lo, b_hi) = ladder.points[k], ladder.points[k + 1]
        d4 = (_lookup(signals, a_lo, ladder) + _lookup(signals, a_hi, ladder)
              - 4.0 * (_lookup(signals, b_lo, ladder) + _lookup(signals, b_hi, ladder)) + 6.0 * fid)
        num = float(norm(d4))
        den = _EVEN_SCALE * float(ladder.steps[k + 1]) * norms[k + 1]
        out[k] = 0.0 if num == 0.0 else (num / den if den > 0 else math.inf)
    return out


def _basis(spec: ParameterSpec, K: int) -> str:
    """What a verdict on ``K`` rungs of ``spec`` rests on: 'window' (the best of the windows
    of ``spec.window`` rungs, modes 'sweep' and 'adaptive'), 'start' (an adaptive start of
    fewer rungs than the window, judged by the start's criterion), 'short' (an adaptive ladder
    grown, or cut by a failed point, to fewer rungs than the window: it cannot pass), 'fixed',
    'fast'."""
    if spec.mode == "sweep" or (spec.mode == "adaptive" and K >= spec.window):
        return "window"
    if spec.mode == "adaptive":
        return "start" if spec.short_start else "short"
    return spec.mode


def _start_score(deltas: np.ndarray, evens: np.ndarray) -> float:
    """The largest rung-to-rung change and fourth difference (where defined) of a short ladder."""
    vals = [float(x) for x in deltas] + [float(x) for x in evens if not np.isnan(x)]
    return max(vals) if vals else float("nan")


def _choose(spec: ParameterSpec, config: DerivativesConfig, deltas: np.ndarray, evens: np.ndarray, basis: str
            ) -> tuple[tuple[int, int], int, float]:
    """``(window, chosen rung, score)``: on a 'window' basis the plateau window of
    ``config.window`` rungs with the smallest largest change (near ties, within
    ``tie_factor``, toward larger steps, but never from a window within ``tol_pass`` to one
    above it) and its second rung; on a 'start' or 'short' basis every rung as the window, its
    second rung chosen, and the largest change or fourth difference as the score; in modes
    'fixed'/'fast' the spec's rung and every rung as the window."""
    K = len(deltas) + 1
    if basis == "window":
        W = min(config.window, K)
        scores = np.array([np.max(deltas[k:k + W - 1]) for k in range(K - W + 1)])
        best = float(np.min(scores))
        ties = np.nonzero(scores <= best * config.tie_factor)[0] if best > 0 else np.nonzero(scores == 0)[0]
        if best <= config.tol_pass:  # a tie never trades a passing window for one that does not pass
            ties = ties[scores[ties] <= config.tol_pass]
        start = int(ties[0])
        return (start, start + W), start + 1, float(scores[start])
    if basis in ("start", "short"):
        return (0, K), min(1, K - 1), _start_score(deltas, evens)
    chosen = int(spec.chosen if spec.chosen is not None else K - 1)
    return (0, K), chosen, (float(np.max(deltas)) if K > 1 else float("nan"))


def _plateau(config: DerivativesConfig, d3: np.ndarray, norms: np.ndarray, deltas: np.ndarray,
             window: tuple[int, int], chosen: int, norm) -> tuple[int, float]:
    """The plateau width (rungs connected to the chosen one by changes <= tol_pass) and the
    spread ``max_window |D3_i - D3_c| / |D3_c|``."""
    K = len(d3)
    left = right = chosen
    while left > 0 and deltas[left - 1] <= config.tol_pass:
        left -= 1
    while right < K - 1 and deltas[right] <= config.tol_pass:
        right += 1
    nc = norms[chosen]
    spread = (max(float(norm(d3[i] - d3[chosen])) for i in range(*window)) / nc) if nc > 0 else math.inf
    return right - left + 1, spread


def _verdict(name: str, spec: ParameterSpec, config: DerivativesConfig, ladder: Ladder, norms: np.ndarray,
             deltas: np.ndarray, evens: np.ndarray, window: tuple[int, int], score: float, used: set[str],
             basis: str) -> tuple[str, str, str]:
    """``(verdict, reason, message)`` of the sweep; ``used``: the stencils of the rungs the
    reported derivative uses (a one-sided one is named with the domain boundary); ``basis``:
    see :func:`_basis` (a 'start' passes within ``tol_pass / START_MARGIN``, a 'short' ladder
    never passes)."""
    K = len(ladder.steps)
    boundary = bool(used - {"central"})
    limit = config.tol_pass / START_MARGIN if basis == "start" else config.tol_pass
    if not np.any(norms > 0):
        verdict, reason = "FAIL", "zero derivative"
        message = _advice(reason, spec, name)
    elif K == 1:
        verdict, reason = "WARN", "unchecked"
        message = "fixed mode with one step: no convergence check (use the 5-point stencil or mode 'sweep')"
    elif basis != "short" and score <= limit:
        verdict = "PASS"
        reason = "boundary" if boundary else "ok"
        if basis == "start":
            even = [float(x) for x in evens if not np.isnan(x)]
            message = (f"plateau from the {K}-rung start (no {spec.window}-rung window evaluated): changes "
                       f"<= {float(np.max(deltas)):.2g}" + (f", fourth difference <= {max(even):.2g}" if even else "")
                       + f" (<= tol_pass / {START_MARGIN:g} = {limit:.2g})")
        else:
            message = (f"plateau: changes <= {score:.2g} over rungs {window[0]}..{window[1] - 1}")
    elif basis in ("start", "short"):
        verdict = "WARN" if score <= config.tol_warn else "FAIL"
        reason = "no plateau"
        what = (f"the {K}-rung start changes by {score:.2g} (> tol_pass / {START_MARGIN:g} = {limit:.2g})"
                if basis == "start" else f"only {K} rungs could be evaluated (changes <= {score:.2g})")
        message = (f"{what}; no {spec.window}-rung window could be evaluated (the ladder cannot grow: domain, range "
                   f"or failed points); raise derivatives.parameters.{name}.n_rungs or change h_max")
    else:
        verdict = "WARN" if score <= config.tol_warn else "FAIL"
        if spec.mode == "fixed":
            reason = "no plateau"
            message = (f"the 3-point derivatives at steps h and 2h differ by {score:.2g} (> {config.tol_pass:g}); "
                       "mode 'fixed' cannot tell noise from truncation: use mode 'sweep'")
        else:
            reason = _diagnose(deltas, ladder.steps)
            message = f"best window changes by {score:.2g} (> {config.tol_pass:g}); " + _advice(reason, spec, name)
    if boundary:
        sides = "/".join(sorted(used - {"central"}))
        message += (f"; one-sided ({sides}) stencil at the domain boundary {spec.domain_text()} of {name}")
    return verdict, reason, message


def _stem_slope(ladder: Ladder, window: tuple[int, int], signals, fid: np.ndarray) -> np.ndarray:
    """SteM-style cross-check (Camera, Carbone & Moscardini 2012): least-squares slope of a
    straight line through the fiducial and every point of the plateau rungs, per element."""
    x = ladder.fiducial
    ts = [0.0]
    fs = [fid]
    for k in range(*window):
        for v in ladder.points[k]:
            ts.append(v - x)
            fs.append(_lookup(signals, v, ladder))
    t = np.array(ts)
    # de-duplicate offsets shared by neighbouring one-sided rungs
    t, idx = np.unique(t, return_index=True)
    f = np.stack([fs[i] for i in idx])
    tc = t - t.mean()
    fc = f - f.mean(axis=0)
    return np.tensordot(tc, fc, axes=(0, 0)) / np.sum(tc * tc)


def run_sweep(name: str, fiducial: float, spec: ParameterSpec, model: Callable[[float], np.ndarray],
              fid_signal: np.ndarray, norm: Callable[[np.ndarray], float],
              config: DerivativesConfig | None = None, *, signal_units: str = "") -> ParameterSweep:
    """The derivative of ``model`` (parameter value -> signal) with respect to ``name``, for
    one parameter and any mode: the planned values are evaluated (each once), analysed, and in
    mode 'adaptive' the ladder is extended (:func:`extend_ladder`) and only the new values are
    evaluated, until it is done. The forecast pipeline runs the same rounds for every
    parameter at once (:mod:`fishcast.pipeline.plan`), so that each round's cosmologies are
    computed together."""
    config = config or DerivativesConfig()
    fid = np.asarray(fid_signal, dtype=float)
    signals: dict[float, np.ndarray] = {}
    while True:
        for v in plan_points(name, fiducial, spec):
            if v not in signals:
                signals[v] = np.asarray(model(v), dtype=float)
        sweep = analyse(name, fiducial, spec, signals, fid, norm, config, signal_units=signal_units)
        nxt = extend_ladder(name, fiducial, spec, sweep)
        if nxt is None:
            return sweep
        spec = nxt
