"""Canonical parameter names, units, defaults and the map to CAMB's inputs.

Cosmological parameters (what users think in):

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

import fnmatch
import re
from collections.abc import Mapping

#: cosmological parameters -> unit ("" for dimensionless)
COSMOLOGICAL_UNITS: dict[str, str] = {
    "Omega_m": "",
    "Omega_b": "",
    "h": "",
    "n_s": "",
    "sigma8": "",
    "A_s": "",
    "w0": "",
    "wa": "",
    "m_nu": "eV",
    "Omega_k": "",
}

#: fiducial values used when a survey does not give one (documented in the README)
COSMOLOGICAL_DEFAULTS: dict[str, float] = {"w0": -1.0, "wa": 0.0, "m_nu": 0.06, "Omega_k": 0.0}

#: cosmological parameters a survey must give a fiducial for (plus exactly one of sigma8, A_s)
COSMOLOGICAL_REQUIRED: tuple[str, ...] = ("Omega_m", "Omega_b", "h", "n_s")

#: parameters that change only the primordial spectrum: stencil points of these re-use the
#: transfer functions of the fiducial (no new Boltzmann run)
PRIMORDIAL: frozenset[str] = frozenset({"n_s", "sigma8", "A_s"})

_NUISANCE_UNITS_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"A_IA|eta_IA|beta_IA", ""),
    (r"m_\d+", ""),
    (r"dz_\d+", ""),
    (r"b\w*", ""),
)


def is_cosmological(name: str) -> bool:
    """Whether ``name`` is a cosmological parameter (it needs a cosmology evaluation)."""
    return name in COSMOLOGICAL_UNITS


def unit_of(name: str) -> str:
    """Unit string of a canonical parameter name ("" for dimensionless)."""
    if name in COSMOLOGICAL_UNITS:
        return COSMOLOGICAL_UNITS[name]
    return ""


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
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


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
