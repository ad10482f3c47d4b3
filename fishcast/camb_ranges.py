"""The inputs fishcast lets through to CAMB: finite numbers inside safe ranges.

CAMB is Fortran. Some inputs make it raise a Python exception (fishcast reports those as a
failed point, exit 4), but others end the process from inside the Fortran code, with no
Python exception to catch: e.g. ``h = 0.9`` ... ``h = 100`` with CAMB 2.0.5 stops with
``thermo out of bounds`` / ``ERROR STOP`` (measured in this repository; the process exits
with status 1 and no message of fishcast). So every point is checked here *before* CAMB is
called, and a survey whose fiducial, derivative ladder or validity check would leave these
ranges is refused as bad input, naming the parameter.

The ranges are far wider than any current constraint (Planck 2018 + BAO: h = 0.677 +- 0.004)
and far inside what CAMB handles (measured with CAMB 2.0.5: h up to 10, Omega_m up to 5,
sigma8 from 1e-6 to 100, m_nu up to 5 eV, w0 down to -1e6 all run).

==========  =================  =====================================================
quantity    safe range         why
==========  =================  =====================================================
h           [0.2, 2.0]         H0 = 20 .. 200 km/s/Mpc; CAMB aborts the process near
                               h = 90, raises from h = 20 and at h = 0.05
Omega_b     (0, 1)             and Omega_b h^2 in [0.001, 0.5] (CAMB's recombination
                               fails below ~1e-6 x h^2)
Omega_m     (Omega_b, 3]       total matter; Omega_c h^2 = Omega_m h^2 - Omega_b h^2 -
                               Omega_nu h^2 must stay > 0
Omega_k     [-0.5, 0.95]       a closed universe with Omega_k = -0.9 stops expanding
n_s         [0.5, 1.5]
sigma8      [1e-3, 10]
A_s [1]     [1e-12, 1e-6]      at k = 0.05/Mpc
m_nu [eV]   [0, 10]            sum of masses, one massive eigenstate
w0          [-10, 1]
wa          [-10, 10]          and w0 + wa <= 0 (CAMB's PPF refuses w > 0 at high z)
==========  =================  =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ComputationError


@dataclass(frozen=True)
class Range:
    """A closed interval [lo, hi] of a CAMB input; ``open_lo`` makes the lower edge strict."""

    lo: float
    hi: float
    open_lo: bool = False
    open_hi: bool = False
    unit: str = ""

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if x < self.lo or (self.open_lo and x == self.lo):
            return False
        if x > self.hi or (self.open_hi and x == self.hi):
            return False
        return True

    def text(self) -> str:
        lb = "(" if self.open_lo else "["
        rb = ")" if self.open_hi else "]"
        unit = f" {self.unit}" if self.unit else ""
        return f"{lb}{self.lo:g}, {self.hi:g}{rb}{unit}"


#: safe range of every cosmological parameter fishcast hands to CAMB (see the module table)
SAFE_RANGES: dict[str, Range] = {
    "h": Range(0.2, 2.0),
    "Omega_b": Range(0.0, 1.0, open_lo=True, open_hi=True),
    "Omega_m": Range(0.0, 3.0, open_lo=True),
    "Omega_k": Range(-0.5, 0.95),
    "n_s": Range(0.5, 1.5),
    "sigma8": Range(1e-3, 10.0),
    "A_s": Range(1e-12, 1e-6),
    "m_nu": Range(0.0, 10.0, unit="eV"),
    "w0": Range(-10.0, 1.0),
    "wa": Range(-10.0, 10.0),
}

#: safe range of the physical baryon density Omega_b h^2
OMBH2 = Range(1e-3, 0.5)

#: Omega_nu h^2 per eV of m_nu (CAMB's value, 1/93.14 eV, within 0.1 %); used only to tell
#: whether Omega_m leaves room for cold dark matter before CAMB is asked
_OMNUH2_PER_EV = 1.0 / 93.14


def problems(point: Mapping[str, float]) -> list[tuple[str, str]]:
    """What is wrong with a point of cosmological parameters for CAMB: a list of
    ``(parameter, message)`` (each message names its quantity), empty when CAMB may be called. Every value must be a finite
    number inside :data:`SAFE_RANGES`, with Omega_b h^2 in :data:`OMBH2`, room for cold
    dark matter (Omega_m h^2 > Omega_b h^2 + Omega_nu h^2) and w0 + wa <= 0."""
    out: list[tuple[str, str]] = []
    vals: dict[str, float] = {}
    for name, value in point.items():
        try:
            x = float(value)
        except (TypeError, ValueError):
            out.append((name, f"{name} is not a number (got {value!r})"))
            continue
        if not math.isfinite(x):
            out.append((name, f"{name} must be a finite number (got {x!r})"))
            continue
        vals[name] = x
        rng = SAFE_RANGES.get(name)
        if rng is not None and not rng.contains(x):
            out.append((name, f"{name} = {x:.6g} is outside the range fishcast lets through to CAMB {rng.text()}"))
    if out:
        return out
    h, ob, om = vals.get("h"), vals.get("Omega_b"), vals.get("Omega_m")
    if h is not None and ob is not None:
        ombh2 = ob * h * h
        if not OMBH2.contains(ombh2):
            out.append(("Omega_b", f"Omega_b h^2 = {ombh2:.4g} is outside the range fishcast lets through to "
                                   f"CAMB {OMBH2.text()}"))
        if om is not None:
            omnuh2 = vals.get("m_nu", 0.06) * _OMNUH2_PER_EV
            omch2 = om * h * h - ombh2 - omnuh2
            if omch2 <= 0:
                out.append(("Omega_m", f"Omega_m = {om:.6g} leaves no cold dark matter: it must exceed Omega_b + "
                                       f"Omega_nu = {ob:.6g} + {omnuh2 / (h * h):.4g} (m_nu = "
                                       f"{vals.get('m_nu', 0.06):g} eV)"))
    w0, wa = vals.get("w0", -1.0), vals.get("wa", 0.0)
    if w0 + wa > 0:
        out.append(("wa", f"w0 + wa = {w0 + wa:.6g} must not be positive (w(a -> 0) = w0 + wa; CAMB's PPF "
                          "dark energy refuses w > 0 at high redshift)"))
    return out


def check(point: Mapping[str, float], what: str = "the point") -> None:
    """Raise :class:`~fishcast.errors.ComputationError` when ``point`` may not reach CAMB.

    The last guard before a CAMB call: input is checked earlier (survey validation and
    planning refuse it as bad input, naming the key); reaching this means a point was made
    without that check."""
    found = problems(point)
    if found:
        desc = ", ".join(f"{k}={v:.6g}" if isinstance(v, (int, float)) else f"{k}={v!r}"
                         for k, v in sorted(point.items()))  # as cosmology.describe_point
        raise ComputationError(f"refusing to call CAMB at {what} ({desc}): "
                               + "; ".join(m for _, m in found))
