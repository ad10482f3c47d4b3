"""The one parameter registry: what fishcast knows about every parameter, in one place.

Each parameter (:class:`Parameter`) knows its unit, its LaTeX label, its names in other
codes' exchange formats (CosmoSIS ``section--name``, CosmicFish / IST:F names), its default
step scale and physical domain (bounds, whether each edge is open or closed: where a
central stencil would leave the domain, the derivative engine uses a one-sided stencil),
its default fiducial, and whether it is cosmological. Everything else reads from here:
``derivatives`` (steps, domains), ``io.exchange`` (labels, CosmoSIS names, aliases),
``survey`` (known names, defaults, units), ``diagnostics`` (domains) and the HDF5 writer
(units and labels). Nothing keeps a parallel table.

Unit convention (also in the README, HDF5 section): a unit is a plain string; ``""`` means
dimensionless (never ``"1"`` or ``None`` in the registry); otherwise SI-like symbols with
``/``, ``^`` and parentheses: ``"eV"``, ``"km/s/Mpc"``, ``"(Mpc/h)^3"``, ``"arcmin^-2"``.
The unit of a Fisher element F_ij is ``1/(unit_i unit_j)`` (:func:`fisher_unit`).

Cosmological parameters (what users think in) are registered in this module:

=========  =====  ==============================================================
name       unit   meaning
=========  =====  ==============================================================
Omega_m    --     total matter density today: baryons + CDM + massive neutrinos
Omega_b    --     baryon density today
h          --     H0 / (100 km/s/Mpc)
n_s        --     scalar spectral index
sigma8     --     rms linear total-matter fluctuation in 8 Mpc/h spheres at z = 0
A_s        --     primordial scalar amplitude at k = 0.05 / Mpc (alternative to sigma8)
w0, wa     --     dark energy w(a) = w0 + wa (1 - a), CAMB's PPF model (may cross -1)
m_nu       eV     sum of neutrino masses (one massive eigenstate, CAMB's default)
Omega_k    --     curvature density today
=========  =====  ==============================================================

So are the derived parameters of :mod:`fishcast.reparam` (S8, H0, ombh2, omch2, ...), for
their units and labels. Probes declare their nuisance parameters in the registry's terms:
:class:`NuisanceParameter` (one parameter) or :class:`ParameterFamily` (``m_{i}``,
``b_{tracer}_{shell}``), returned by the probe's ``nuisance_parameters()`` as a
:class:`NuisanceParameters` mapping; a probe module registers its families with
:func:`register` so that files and exchange formats find them by name.

CAMB takes (H0, ombh2, omch2, omnuh2 via mnu, omk, As, ns, w, wa). The map is:

    H0     = 100 h                      [km/s/Mpc]
    ombh2  = Omega_b h^2
    omnuh2 = CAMB's own value for m_nu (about m_nu / 93.1 eV, with its N_eff convention)
    omch2  = Omega_m h^2 - ombh2 - omnuh2
    As     = given, or chosen so that CAMB's sigma8(z=0) equals the requested sigma8
             (sigma8^2 is proportional to As in linear theory; fishcast rescales the
             primordial amplitude on the stored transfer functions, no second Boltzmann run).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "Domain", "Parameter", "NuisanceParameter", "ParameterFamily", "NuisanceParameters",
    "register", "unregister", "declare", "get", "lookup", "registered", "families",
    "unit_of", "latex_of", "cosmosis_name_of", "canonical_name", "aliases",
    "is_cosmological", "cosmological_names", "fisher_unit",
    "COSMOLOGICAL_UNITS", "COSMOLOGICAL_DEFAULTS", "COSMOLOGICAL_REQUIRED", "AMPLITUDES", "PRIMORDIAL",
    "expand_patterns", "camb_background_inputs",
]


# ---------------------------------------------------------------------------- descriptions
@dataclass(frozen=True)
class Domain:
    """The physical domain of a parameter: ``lower``/``upper`` bounds (None: unbounded), each
    edge closed (``*_inclusive`` True, the edge value is allowed) or open."""

    lower: float | None = None
    upper: float | None = None
    lower_inclusive: bool = False
    upper_inclusive: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the domain."""
        if self.lower is not None:
            if value < self.lower or (value == self.lower and not self.lower_inclusive):
                return False
        if self.upper is not None:
            if value > self.upper or (value == self.upper and not self.upper_inclusive):
                return False
        return True

    def text(self) -> str:
        """Interval notation, e.g. ``[0, inf)``."""
        lo = "-inf" if self.lower is None else f"{self.lower:g}"
        hi = "inf" if self.upper is None else f"{self.upper:g}"
        lb = "[" if (self.lower is not None and self.lower_inclusive) else "("
        ub = "]" if (self.upper is not None and self.upper_inclusive) else ")"
        return f"{lb}{lo}, {hi}{ub}"


UNBOUNDED = Domain()
POSITIVE = Domain(lower=0.0)


def _default_latex(name: str) -> str:
    return name.replace("_", r"\_")


@dataclass(frozen=True)
class Parameter:
    """Everything fishcast knows about one parameter.

    name: canonical name (the survey YAML, the HDF5 file, every table).
    fiducial: default fiducial value in ``unit`` (None: a survey must give one).
    unit: see the module docstring ("" for dimensionless).
    latex: LaTeX label without dollars (default: the name with escaped underscores).
    step_scale: the unit of the derivative's relative step, in ``unit``, used when the
        fiducial is zero, or always when ``offset`` is True.
    domain: physical domain; stencil points never leave it (one-sided stencils at an edge).
    offset: the parameter is an offset around a reference (wa, dz_i, m_i): its step scales
        with ``step_scale``, never with the fiducial.
    cosmological: the parameter enters through the cosmology backend (Boltzmann code).
    derived: a function of other parameters (:mod:`fishcast.reparam`), never a model input.
    primordial: changes only the primordial spectrum (stencil points re-use the fiducial's
        transfer functions: no new Boltzmann run).
    start_halvings: derivatives mode 'adaptive' only: the expected plateau of this parameter
        lies this many halvings of the step below ``derivatives.start_step`` (0: at it). The
        adaptive start is placed there; the sweep's ladder, modes 'fixed' / 'fast' and a
        known step (``step``, ``steps_from``) ignore it. Set from full sweeps (h: 1, see
        :mod:`fishcast.derivatives`).
    cosmosis: CosmoSIS ``section--name`` (None: ``fishcast_parameters--<name>``).
    aliases: names other codes (IST:F, CosmicFish) use for it; unambiguous ones only.
    """

    name: str
    fiducial: float | None = None
    unit: str = ""
    latex: str | None = None
    step_scale: float = 1.0
    domain: Domain = UNBOUNDED
    offset: bool = False
    cosmological: bool = False
    derived: bool = False
    primordial: bool = False
    cosmosis: str | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    start_halvings: int = 0

    def __post_init__(self) -> None:
        if self.start_halvings < 0:
            raise ValueError(f"parameter {self.name}: start_halvings must be >= 0")
        if self.latex is None:
            object.__setattr__(self, "latex", _default_latex(self.name))
        if not self.step_scale > 0:
            raise ValueError(f"parameter {self.name}: step_scale must be positive")
        if self.unit in ("1", "-"):
            raise ValueError(f"parameter {self.name}: a dimensionless unit is written \"\"")

    @property
    def cosmosis_name(self) -> str:
        return self.cosmosis or f"fishcast_parameters--{self.name.lower()}"

    def same_description(self, other: "Parameter") -> bool:
        """Whether two descriptions agree on everything but the name and the fiducial."""
        return _described(self) == _described(other)


def _described(p: Parameter) -> tuple:
    return tuple(getattr(p, f.name) for f in dataclasses.fields(Parameter) if f.name not in ("name", "fiducial"))


@dataclass(frozen=True)
class NuisanceParameter(Parameter):
    """A probe's nuisance parameter: not cosmological, with a fiducial (the probe's default).

    ``NuisanceParameter("A_IA", 1.72, "", r"\\mathcal{A}_{\\rm IA}")``.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cosmological or self.derived:
            raise ValueError(f"nuisance parameter {self.name} cannot be cosmological or derived")
        if self.fiducial is None:
            raise ValueError(f"nuisance parameter {self.name} needs a fiducial value")


_FIELD = re.compile(r"\{(\w+)\}")
#: what each placeholder of a family pattern matches (default: digits)
_FIELD_REGEX = {"tracer": r"[A-Za-z][A-Za-z0-9]*"}


@dataclass(frozen=True)
class ParameterFamily:
    """A family of nuisance parameters named by a pattern, e.g. ``m_{i}`` (shear bias of bin
    i), ``b_{tracer}_{shell}``. Placeholders match digits, except ``{tracer}`` (a tracer name:
    letters and digits starting with a letter). ``latex`` and ``cosmosis`` are templates with
    the same placeholders (only ``{field}`` of the pattern's fields is replaced, so LaTeX
    braces stay: ``r"\\Delta z_{{i}}"`` gives ``\\Delta z_{3}``)."""

    pattern: str
    unit: str = ""
    latex: str | None = None
    step_scale: float = 1.0
    domain: Domain = UNBOUNDED
    offset: bool = False
    fiducial: float | None = None
    cosmosis: str | None = None
    description: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(_FIELD.findall(self.pattern))

    def _regex(self) -> re.Pattern:
        parts, last = [], 0
        for m in _FIELD.finditer(self.pattern):
            parts.append(re.escape(self.pattern[last:m.start()]))
            parts.append(f"(?P<{m.group(1)}>{_FIELD_REGEX.get(m.group(1), r'[0-9]+')})")
            last = m.end()
        parts.append(re.escape(self.pattern[last:]))
        return re.compile("".join(parts))

    def match(self, name: str) -> dict[str, str] | None:
        """The placeholder values of ``name`` if it belongs to the family, else None."""
        m = self._regex().fullmatch(name)
        return m.groupdict() if m else None

    def _fill(self, template: str, values: Mapping[str, object]) -> str:
        return _FIELD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)

    def member(self, fiducial: float | None = None, **values) -> NuisanceParameter:
        """The member with the given placeholder values, e.g. ``member(0.0, i=3)``."""
        missing = set(self.fields) - set(values)
        if missing:
            raise ValueError(f"{self.pattern}: give {', '.join(sorted(missing))}")
        name = self._fill(self.pattern, values)
        fid = self.fiducial if fiducial is None else fiducial
        return NuisanceParameter(
            name=name, fiducial=fid, unit=self.unit,
            latex=self._fill(self.latex, values) if self.latex is not None else None,
            step_scale=self.step_scale, domain=self.domain, offset=self.offset,
            cosmosis=self._fill(self.cosmosis, values) if self.cosmosis is not None else None,
            description=self._fill(self.description, values),
        )

    def describe(self, name: str) -> Parameter | None:
        """The description of member ``name`` (fiducial: the family's default, or 0)."""
        values = self.match(name)
        if values is None:
            return None
        fid = self.fiducial if self.fiducial is not None else 0.0
        return self.member(fid, **values)


class NuisanceParameters(dict):
    """What a probe's ``nuisance_parameters()`` returns: a mapping name -> fiducial value
    (what the probe's signal reads) that carries each parameter's typed description.

    Build it from descriptions: ``NuisanceParameters([A_IA, SHEAR_BIAS.member(0.0, i=1)])``.
    """

    def __init__(self, parameters: Iterable[NuisanceParameter] = ()):
        params = list(parameters)
        super().__init__((p.name, float(p.fiducial)) for p in params)
        self._described = {p.name: p for p in params}

    def description(self, name: str) -> NuisanceParameter:
        """The typed description of ``name`` (its fiducial: the probe's)."""
        return self._described[name]

    def descriptions(self) -> tuple[NuisanceParameter, ...]:
        return tuple(self._described[n] for n in self)


# ---------------------------------------------------------------------------- the registry
_PARAMETERS: dict[str, Parameter] = {}
_FAMILIES: list[ParameterFamily] = []


def register(item: Parameter | ParameterFamily, *, replace: bool = False) -> Parameter | ParameterFamily:
    """Add a parameter or a family to the registry (returns it, for module constants).
    A name registered twice with a different description is an error unless ``replace``."""
    if isinstance(item, ParameterFamily):
        if item in _FAMILIES:
            return item
        clash = [f.pattern for f in _FAMILIES if f.pattern == item.pattern]
        if clash and not replace:
            raise ValueError(f"parameter family {item.pattern} is already registered differently")
        _FAMILIES[:] = [f for f in _FAMILIES if f.pattern != item.pattern] + [item]
        return item
    old = _PARAMETERS.get(item.name)
    if old is not None and not replace and not old.same_description(item):
        raise ValueError(f"parameter {item.name} is already registered with another description: {old}")
    if old is None or replace:
        _PARAMETERS[item.name] = item
    return item


def unregister(name: str) -> None:
    """Remove a parameter (by name) or a family (by pattern); unknown names are ignored."""
    _PARAMETERS.pop(name, None)
    _FAMILIES[:] = [f for f in _FAMILIES if f.pattern != name]


def declare(param: Parameter) -> str | None:
    """Make a probe's declared parameter known by name (a survey declares its probes').

    Returns None when the registry agrees (or did not know the name, which is then
    registered), else a message saying how the declaration conflicts with the registry."""
    known = get(param.name)
    if known is None:
        register(param)
        return None
    if known.same_description(param):
        return None
    diff = [f"{f.name} {getattr(param, f.name)!r} (registry: {getattr(known, f.name)!r})"
            for f in dataclasses.fields(Parameter)
            if f.name not in ("name", "fiducial") and getattr(param, f.name) != getattr(known, f.name)]
    return f"{param.name} is declared with " + ", ".join(diff)


def _builtin_probes() -> None:
    """The built-in probes register their nuisance parameters when imported."""
    import fishcast.probes  # noqa: F401


def get(name: str) -> Parameter | None:
    """The registered description of ``name`` (exact name, then families), or None."""
    _builtin_probes()
    p = _PARAMETERS.get(name)
    if p is not None:
        return p
    for fam in _FAMILIES:
        d = fam.describe(name)
        if d is not None:
            return d
    return None


def lookup(name: str) -> Parameter:
    """The description of ``name``; an unknown name gets the defaults (dimensionless,
    unbounded, step scale 1, not cosmological, its name as label)."""
    return get(name) or Parameter(name)


def registered() -> Mapping[str, Parameter]:
    """Every parameter registered by name (families not expanded), in registration order."""
    _builtin_probes()
    return dict(_PARAMETERS)


def families() -> tuple[ParameterFamily, ...]:
    _builtin_probes()
    return tuple(_FAMILIES)


def unit_of(name: str) -> str:
    """Unit string of a parameter ("" for dimensionless or unknown)."""
    return lookup(name).unit


def latex_of(name: str) -> str:
    """LaTeX label (no dollars) of a parameter."""
    return lookup(name).latex


def cosmosis_name_of(name: str) -> str:
    """CosmoSIS ``section--name`` of a parameter."""
    return lookup(name).cosmosis_name


def aliases() -> dict[str, str]:
    """Other codes' name -> canonical name, for every registered parameter."""
    _builtin_probes()
    return {a: p.name for p in _PARAMETERS.values() for a in p.aliases}


def canonical_name(name: str) -> str:
    """The canonical name of ``name`` (itself when it is no other code's alias)."""
    return aliases().get(name, name)


def is_cosmological(name: str) -> bool:
    """Whether ``name`` is a cosmological model parameter (it needs a cosmology evaluation).
    Derived parameters (S8, H0, ...) are not model parameters."""
    p = _PARAMETERS.get(name)
    return p is not None and p.cosmological and not p.derived


def cosmological_names() -> tuple[str, ...]:
    """The cosmological model parameters, in registration order."""
    return tuple(n for n, p in _PARAMETERS.items() if p.cosmological and not p.derived)


def fisher_unit(unit_i: str, unit_j: str) -> str:
    """Unit of the Fisher element F_ij: ``1/(unit_i unit_j)`` ("" when both are "")."""
    us = [f"({u})" if any(c in u for c in "/^ ") else u for u in (unit_i, unit_j) if u]
    if not us:
        return ""
    if len(us) == 1:
        return f"1/{us[0]}"
    if us[0] == us[1]:
        return f"1/{us[0]}^2"
    return f"1/({us[0]} {us[1]})"


# ---------------------------------------------------------------------------- cosmology
_CP = "cosmological_parameters--"

for _p in (
    Parameter("Omega_m", unit="", latex=r"\Omega_{\rm m}", domain=POSITIVE, cosmological=True,
              cosmosis=_CP + "omega_m", aliases=("Omegam", "OmegaM", "Omega_M", "Om"),
              description="total matter density today: baryons + CDM + massive neutrinos"),
    Parameter("Omega_b", latex=r"\Omega_{\rm b}", domain=POSITIVE, cosmological=True,
              cosmosis=_CP + "omega_b", aliases=("Omegab", "OmegaB", "Ob"), description="baryon density today"),
    # h: P(k in 1/Mpc) moves strongly with h, so 3-point truncation reaches lower steps than for
    # the other parameters: the full sweeps choose relative step 0.0031 (fishcast.derivatives)
    Parameter("h", latex="h", domain=POSITIVE, cosmological=True, cosmosis=_CP + "h0",
              description="H0 / (100 km/s/Mpc)", start_halvings=1),
    Parameter("n_s", latex=r"n_{\rm s}", cosmological=True, primordial=True, cosmosis=_CP + "n_s",
              aliases=("ns",), description="scalar spectral index"),
    Parameter("sigma8", latex=r"\sigma_8", domain=POSITIVE, cosmological=True, primordial=True,
              cosmosis=_CP + "sigma8_input", aliases=("s8", "sigma_8"),
              description="rms linear total-matter fluctuation in 8 Mpc/h spheres at z = 0"),
    Parameter("A_s", latex=r"A_{\rm s}", step_scale=2.1e-9, domain=POSITIVE, cosmological=True, primordial=True,
              cosmosis=_CP + "a_s", aliases=("As",),
              description="primordial scalar amplitude at k = 0.05 / Mpc (alternative to sigma8)"),
    Parameter("w0", fiducial=-1.0, latex="w_0", cosmological=True, cosmosis=_CP + "w",
              description="dark energy equation of state today (CAMB's PPF model)"),
    # wa is an offset around 0: a 5% top step of the scale 1 moves C_ell by ~1e-3
    Parameter("wa", fiducial=0.0, latex="w_a", step_scale=1.0, offset=True, cosmological=True,
              cosmosis=_CP + "wa", description="dark energy w(a) = w0 + wa (1 - a)"),
    # m_nu = 0 is a valid (massless) model, hence closed at 0; the scale 0.06 eV (minimal
    # normal hierarchy) serves when the fiducial is 0
    Parameter("m_nu", fiducial=0.06, unit="eV", latex=r"\Sigma m_\nu", step_scale=0.06,
              domain=Domain(lower=0.0, lower_inclusive=True), cosmological=True, cosmosis=_CP + "mnu",
              aliases=("mnu", "Mnu", "summnu"), description="sum of neutrino masses"),
    # Omega_k: scale 0.1, so the top step 5e-3 changes distances about as much as wa's
    Parameter("Omega_k", fiducial=0.0, latex=r"\Omega_K", step_scale=0.1, offset=True, cosmological=True,
              cosmosis=_CP + "omega_k", aliases=("Omegak", "OmegaK"), description="curvature density today"),
    # derived (fishcast.reparam): labels, units, exchange names; never model inputs
    Parameter("Omega_c", latex=r"\Omega_{\rm c}", domain=POSITIVE, cosmological=True, derived=True,
              description="Omega_m - Omega_b - Omega_nu"),
    Parameter("ombh2", latex=r"\Omega_{\rm b} h^2", domain=POSITIVE, cosmological=True, derived=True,
              cosmosis=_CP + "ombh2", aliases=("omegabh2",), description="Omega_b h^2"),
    Parameter("omch2", latex=r"\Omega_{\rm c} h^2", domain=POSITIVE, cosmological=True, derived=True,
              cosmosis=_CP + "omch2", aliases=("omegach2",), description="Omega_c h^2"),
    Parameter("omh2", latex=r"\Omega_{\rm m} h^2", cosmological=True, derived=True, description="Omega_m h^2"),
    Parameter("H0", unit="km/s/Mpc", latex="H_0", step_scale=67.0, domain=POSITIVE, cosmological=True,
              derived=True, cosmosis=_CP + "hubble", description="100 h"),
    Parameter("S8", latex="S_8", domain=POSITIVE, cosmological=True, derived=True, cosmosis=_CP + "s8",
              description="sigma8 sqrt(Omega_m / 0.3)"),
    Parameter("A_s_1e9", latex=r"10^9 A_{\rm s}", cosmological=True, derived=True, description="1e9 A_s"),
    Parameter("logA", latex=r"\ln(10^{10} A_{\rm s})", cosmological=True, derived=True, description="ln(1e10 A_s)"),
):
    register(_p)
del _p

#: the primordial amplitude: a survey gives exactly one of these
AMPLITUDES: tuple[str, ...] = ("sigma8", "A_s")

#: cosmological parameters -> unit ("" for dimensionless); a view of the registry
COSMOLOGICAL_UNITS: dict[str, str] = {n: _PARAMETERS[n].unit for n in cosmological_names()}

#: fiducial values used when a survey does not give one (documented in the README)
COSMOLOGICAL_DEFAULTS: dict[str, float] = {
    n: _PARAMETERS[n].fiducial for n in cosmological_names() if _PARAMETERS[n].fiducial is not None}

#: cosmological parameters a survey must give a fiducial for (plus exactly one of sigma8, A_s)
COSMOLOGICAL_REQUIRED: tuple[str, ...] = tuple(
    n for n in cosmological_names() if _PARAMETERS[n].fiducial is None and n not in AMPLITUDES)

#: parameters that change only the primordial spectrum: stencil points of these re-use the
#: transfer functions of the fiducial (no new Boltzmann run)
PRIMORDIAL: frozenset[str] = frozenset(n for n in cosmological_names() if _PARAMETERS[n].primordial)


# ---------------------------------------------------------------------------- helpers
def expand_patterns(patterns: list[str], known: list[str]) -> tuple[list[str], list[str]]:
    """Expand glob patterns (``m_*``) against the known parameter names, keeping order.

    Globs match nuisance parameters only: ``m_*`` means the shear biases m_1, m_2, ... and
    never the cosmological ``m_nu``; cosmological parameters are always named in full.
    Returns ``(names, unmatched_patterns)``.
    """
    out: list[str] = []
    unmatched: list[str] = []
    for pat in patterns:
        if any(c in pat for c in "*?["):
            hits = [n for n in known if fnmatch.fnmatchcase(n, pat) and not is_cosmological(n)]
            if not hits:
                unmatched.append(pat)
            hits.sort(key=_natural_key)
            out.extend(h for h in hits if h not in out)
        else:
            if pat not in known:
                unmatched.append(pat)
            elif pat not in out:
                out.append(pat)
    return out, unmatched


def _natural_key(name: str):
    return [int(t) if t.isascii() and t.isdigit() else t for t in re.split(r"([0-9]+)", name)]


def camb_background_inputs(p: Mapping[str, float], omnuh2: float) -> dict[str, float]:
    """CAMB background inputs from canonical parameters.

    ``omnuh2`` is CAMB's neutrino density for ``p["m_nu"]`` (it depends on CAMB's N_eff
    convention, so it is asked of CAMB, see :func:`fishcast.cosmology.neutrino_omnuh2`).
    Returns H0 [km/s/Mpc], ombh2, omch2, mnu [eV], omk.
    """
    h = p["h"]
    h2 = h * h
    ombh2 = p["Omega_b"] * h2
    omch2 = p["Omega_m"] * h2 - ombh2 - omnuh2
    return {"H0": 100.0 * h, "ombh2": ombh2, "omch2": omch2, "mnu": p["m_nu"], "omk": p["Omega_k"]}
