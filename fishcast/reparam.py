"""Derived parameters and the Jacobians that move a Fisher matrix onto them.

Each derived parameter ``p`` is a function of the canonical parameters ``theta`` and replaces
one of them in the Fisher matrix (S8 replaces sigma8, H0 replaces h, ...). For a set of
targets the forward map ``p = g(theta)`` (identity on the parameters not replaced) has the
square Jacobian ``M_ai = d p_a / d theta_i`` at the fiducial; the Fisher matrix of the new
parameters is ``F' = J^T F J`` with ``J = M^-1`` (Coe 2009, arXiv:0906.4123, eq. 6). All
targets are functions of the *original* parameters, so several can be derived at once
(e.g. ``ombh2``, ``omch2`` and ``H0`` together).

Derived parameters (name: definition [units], replaces); their units and labels are those of
the parameter registry (:mod:`fishcast.parameters`):

* ``S8``: ``sigma8 sqrt(Omega_m / 0.3)``, replaces ``sigma8``.
* ``H0``: ``100 h`` [km/s/Mpc], replaces ``h``.
* ``ombh2``: ``Omega_b h^2``, replaces ``Omega_b``.
* ``omch2``: ``(Omega_m - Omega_b) h^2 - Omega_nu h^2``, replaces ``Omega_m``. ``Omega_nu h^2``
  is CAMB's, as the forecast itself used it (:func:`fishcast.cosmology.neutrino_omnuh2`, one
  massive eigenstate: ``sum m_nu / 93.04 eV``), linear in ``sum m_nu`` to 3e-7.
* ``omh2``: ``Omega_m h^2``, replaces ``Omega_m``.
* ``Omega_c``: ``Omega_m - Omega_b - Omega_nu``, replaces ``Omega_m``.
* ``A_s_1e9``: ``1e9 A_s``, replaces ``A_s``.
* ``logA``: ``ln(1e10 A_s)``, replaces ``A_s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fishcast.errors import InputError
from fishcast.parameters import latex_of, unit_of

__all__ = ["DerivedParameter", "DERIVED", "jacobian", "omnuh2_per_ev"]


def omnuh2_per_ev() -> float:
    """Omega_nu h^2 per eV of sum m_nu, as CAMB computes it for this project's cosmology
    (:func:`fishcast.cosmology.neutrino_omnuh2`; ~1/93.04; CAMB is imported on first use)."""
    from fishcast.cosmology import neutrino_omnuh2

    return neutrino_omnuh2(1.0)


@dataclass(frozen=True)
class DerivedParameter:
    """A parameter defined as a function of canonical ones.

    ``value(v)`` and ``gradient(v)`` take a mapping of the ``requires`` parameters to their
    fiducial values; ``gradient`` returns ``{name: d p / d name}`` for each of ``requires``.
    """

    name: str
    replaces: str
    requires: tuple[str, ...]
    value: Callable[[Mapping[str, float]], float]
    gradient: Callable[[Mapping[str, float]], dict[str, float]]
    description: str = ""
    #: where the definition and its gradient exist (``None``: everywhere), and its text
    domain: Callable[[Mapping[str, float]], bool] | None = None
    domain_text: str = ""

    @property
    def units(self) -> str:
        """Unit of the derived parameter, from the parameter registry."""
        return unit_of(self.name)

    @property
    def latex(self) -> str:
        """LaTeX label of the derived parameter, from the parameter registry."""
        return latex_of(self.name)


def _omnuh2(v: Mapping[str, float]) -> float:
    from fishcast.cosmology import neutrino_omnuh2

    return neutrino_omnuh2(v["m_nu"]) if v["m_nu"] else 0.0


DERIVED: dict[str, DerivedParameter] = {
    p.name: p
    for p in [
        DerivedParameter(
            "S8", "sigma8", ("sigma8", "Omega_m"),
            lambda v: v["sigma8"] * math.sqrt(v["Omega_m"] / 0.3),
            lambda v: {
                "sigma8": math.sqrt(v["Omega_m"] / 0.3),
                "Omega_m": 0.5 * v["sigma8"] / math.sqrt(0.3 * v["Omega_m"]),
            },
            "sigma8 sqrt(Omega_m/0.3)", lambda v: v["Omega_m"] > 0, "Omega_m > 0",
        ),
        DerivedParameter(
            "H0", "h", ("h",), lambda v: 100.0 * v["h"], lambda v: {"h": 100.0},
            "100 h",
        ),
        DerivedParameter(
            "ombh2", "Omega_b", ("Omega_b", "h"),
            lambda v: v["Omega_b"] * v["h"] ** 2,
            lambda v: {"Omega_b": v["h"] ** 2, "h": 2.0 * v["Omega_b"] * v["h"]},
            "Omega_b h^2",
        ),
        DerivedParameter(
            "omch2", "Omega_m", ("Omega_m", "Omega_b", "h", "m_nu"),
            lambda v: (v["Omega_m"] - v["Omega_b"]) * v["h"] ** 2 - _omnuh2(v),
            lambda v: {
                "Omega_m": v["h"] ** 2,
                "Omega_b": -v["h"] ** 2,
                "h": 2.0 * (v["Omega_m"] - v["Omega_b"]) * v["h"],
                "m_nu": -omnuh2_per_ev(),
            },
            "Omega_c h^2 = (Omega_m - Omega_b) h^2 - Omega_nu h^2",
        ),
        DerivedParameter(
            "omh2", "Omega_m", ("Omega_m", "h"),
            lambda v: v["Omega_m"] * v["h"] ** 2,
            lambda v: {"Omega_m": v["h"] ** 2, "h": 2.0 * v["Omega_m"] * v["h"]},
            "Omega_m h^2",
        ),
        DerivedParameter(
            "Omega_c", "Omega_m", ("Omega_m", "Omega_b", "h", "m_nu"),
            lambda v: v["Omega_m"] - v["Omega_b"] - _omnuh2(v) / v["h"] ** 2,
            lambda v: {
                "Omega_m": 1.0,
                "Omega_b": -1.0,
                "h": 2.0 * _omnuh2(v) / v["h"] ** 3,
                "m_nu": -omnuh2_per_ev() / v["h"] ** 2,
            },
            "Omega_m - Omega_b - Omega_nu", lambda v: v["h"] != 0, "h != 0",
        ),
        DerivedParameter(
            "A_s_1e9", "A_s", ("A_s",), lambda v: 1e9 * v["A_s"], lambda v: {"A_s": 1e9},
            "1e9 A_s",
        ),
        DerivedParameter(
            "logA", "A_s", ("A_s",), lambda v: math.log(1e10 * v["A_s"]),
            lambda v: {"A_s": 1.0 / v["A_s"]}, "ln(1e10 A_s)", lambda v: v["A_s"] > 0, "A_s > 0",
        ),
    ]
}


def jacobian(
    names: Sequence[str],
    fiducial: Sequence[float],
    targets: Sequence[str],
    fixed: Mapping[str, float] | None = None,
    units: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Jacobian ``J[i, a] = d theta_i / d p_a`` taking parameters ``names`` to ``targets``.

    Returns ``(J, new_names, new_fiducial, new_units)``: each target takes the place (row
    position) of the parameter it replaces; other parameters are kept. ``fixed`` supplies
    fiducials of parameters that are not in ``names`` but enter a definition (a fixed
    parameter contributes to the value, not to the Jacobian). Raises :class:`InputError` for
    an unknown target, a replaced parameter that is not free, a missing fiducial, two targets
    replacing the same parameter, or a non-invertible map.
    """
    names = list(names)
    fid = np.asarray(fiducial, dtype=float)
    targets = list(targets)
    if not targets:
        raise InputError("no derived parameter given")
    values: dict[str, float] = {k: float(v) for k, v in (fixed or {}).items()}
    values.update({nm: float(x) for nm, x in zip(names, fid) if not math.isnan(x)})
    pos = {nm: i for i, nm in enumerate(names)}
    m = np.eye(len(names))
    new_names = list(names)
    new_fid = np.array(fid, dtype=float)
    new_units = list(units) if units is not None else [""] * len(names)
    replaced: dict[str, str] = {}
    for t in targets:
        if t not in DERIVED:
            raise InputError(f"unknown derived parameter {t!r}; known: {', '.join(DERIVED)}")
        d = DERIVED[t]
        if t in pos:
            raise InputError(f"{t} is already a parameter of this forecast")
        if d.replaces not in pos:
            raise InputError(
                f"{t} replaces {d.replaces}, which is not a free parameter of this forecast "
                f"(free: {', '.join(names)})"
            )
        if d.replaces in replaced:
            raise InputError(f"{t} and {replaced[d.replaces]} both replace {d.replaces}: choose one")
        replaced[d.replaces] = t
        missing = [r for r in d.requires if r not in values]
        if missing:
            raise InputError(
                f"{t} = {d.description} needs the fiducial of {', '.join(missing)}, "
                "which this forecast does not record"
            )
        v = {r: values[r] for r in d.requires}
        at = ", ".join(f"{r} = {x:g}" for r, x in v.items())
        if not all(math.isfinite(x) for x in v.values()):
            raise InputError(f"{t} = {d.description} cannot be evaluated at a non-finite fiducial ({at})")
        try:
            inside = d.domain is None or bool(d.domain(v))
            grad = d.gradient(v) if inside else {}
            value = d.value(v) if inside else math.nan
        except (ZeroDivisionError, ValueError, OverflowError):
            inside, grad, value = False, {}, math.nan
        if not inside or not math.isfinite(value) or not all(math.isfinite(g) for g in grad.values()):
            need = f"; it needs {d.domain_text}" if d.domain_text else ""
            raise InputError(f"{t} = {d.description} is singular or undefined at the fiducial ({at}){need}")
        row = pos[d.replaces]
        m[row, :] = 0.0
        for r, g in grad.items():
            if r in pos:  # a fixed parameter does not vary: no column
                m[row, pos[r]] = g
        new_names[row] = t
        new_fid[row] = value
        new_units[row] = d.units
    try:
        cond = np.linalg.cond(m)
    except np.linalg.LinAlgError:
        cond = math.inf
    if not math.isfinite(cond) or cond > 1e12:
        raise InputError(f"the map to {', '.join(targets)} is not invertible at the fiducial")
    j = np.linalg.solve(m, np.eye(len(names)))
    return j, new_names, new_fid, new_units
