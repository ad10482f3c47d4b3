"""``/derivatives`` of a forecast file: the step-size sweep of every parameter.

Group ``/derivatives``: attribute ``names`` (JSON list, parameter order), with the
derivative settings when known (``config`` as JSON, ``mode``, ``stencil``, ``h_max``,
``tol_pass``, ``tol_warn``, ``tie_factor``, ``start_step``, ``n_rungs``, ``window``,
``start_rungs`` (the rungs of an adaptive start, 'window' resolved), ``start_margin``; in a
forecast file also ``rounds``, the rounds of evaluation the sweeps took); dataset ``names``
(UTF-8) in a forecast file. One subgroup per parameter, attribute
``fishcast_type = "ParameterSweep"``:

* attributes: ``name``, ``mode``, ``stencil``, ``verdict``, ``reason``, ``message``,
  ``parameter_units``, ``signal_units``, ``fiducial``, ``scale``, ``spread``, ``score``,
  ``tol_pass``, ``tol_warn``, ``chosen_rung``, ``window_start``, ``window_stop``,
  ``plateau_width``, ``chosen_step`` [parameter unit], ``chosen_relative_step``,
  ``stem_difference`` (NaN: none); the rungs used: ``rungs_used`` (rungs evaluated),
  ``search_rungs`` (mode 'adaptive': rungs of the range it could extend over, the full
  sweep's ladder; else ``rungs_used``), ``extended_up`` / ``extended_down`` (rungs added
  above / below the adaptive starting window), ``search_max_step`` / ``search_min_step``
  [parameter unit] (the adaptive range; NaN in other modes); what the verdict rests on:
  ``basis`` (``window``: the best window of ``window`` rungs; ``start``: an adaptive start of
  fewer rungs, passing when its change and fourth difference are within
  ``tol_pass / start_margin``; ``short``: an adaptive ladder of fewer rungs than a window
  that is not its start, never PASS; ``fixed``; ``fast``), ``plateau_rungs`` (the rungs of
  that window, ``window_stop - window_start``) and ``claim`` (both in words, e.g.
  ``2-rung start``, ``4-rung window``);
* datasets: ``steps`` [parameter unit], ``relative_steps`` [""], ``stencils`` (UTF-8),
  ``derivatives_3pt``, ``derivatives_5pt``, ``derivative``, ``stem_derivative``
  [signal unit / parameter unit], ``deltas``, ``norms``, ``even_changes`` [""] (the fourth
  difference of neighbouring central rungs, scaled like ``deltas`` under noise; NaN where a
  rung is one-sided).

Files written before ``basis`` existed read as ``window`` (modes 'sweep', 'adaptive') or
their mode ('fixed', 'fast'), with no ``even_changes``.

The numerics (:mod:`fishcast.derivatives`) keep no HDF5 code; this module is the contract.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..derivatives import START_MARGIN, DerivativesConfig, ParameterSweep
from .h5util import dataset, normalize_unit, quotient, string_dataset, text

__all__ = ["write_sweep", "read_sweep", "write_sweeps", "write_settings", "read_sweeps", "known_steps_from_hdf5",
           "known_rungs_from_hdf5", "is_sweep"]


def is_sweep(group) -> bool:
    """Whether an HDF5 group holds one :class:`ParameterSweep`."""
    t = group.attrs.get("fishcast_type") if hasattr(group, "attrs") else None
    return t is not None and text(t) == "ParameterSweep"


def write_sweep(group, sw: ParameterSweep) -> None:
    """Write one sweep into ``group`` (created by the caller)."""
    pu = normalize_unit(sw.parameter_units)
    du = quotient(sw.signal_units, sw.parameter_units)
    a = group.attrs
    a["fishcast_type"] = "ParameterSweep"
    for key in ("name", "mode", "stencil", "verdict", "reason", "message", "parameter_units", "signal_units"):
        a[key] = str(getattr(sw, key))
    for key in ("fiducial", "scale", "spread", "score", "tol_pass", "tol_warn"):
        a[key] = float(getattr(sw, key))
    a["chosen_rung"] = int(sw.chosen)
    a["window_start"], a["window_stop"] = int(sw.window[0]), int(sw.window[1])
    a["plateau_width"] = int(sw.plateau_width)
    a["chosen_step"] = sw.step
    a["chosen_relative_step"] = sw.relative_step
    a["stem_difference"] = float("nan") if sw.stem_difference is None else float(sw.stem_difference)
    a["rungs_used"], a["search_rungs"] = int(sw.rungs_used), int(sw.search_rungs)
    a["extended_up"], a["extended_down"] = int(sw.extended_up), int(sw.extended_down)
    hi, lo = sw.search_steps if sw.search_steps is not None else (float("nan"), float("nan"))
    a["search_max_step"], a["search_min_step"] = float(hi), float(lo)
    a["basis"], a["plateau_rungs"], a["claim"] = str(sw.basis), int(sw.plateau_rungs), sw.claim
    dataset(group, "steps", sw.steps, pu)
    dataset(group, "relative_steps", sw.relative_steps, "")
    string_dataset(group, "stencils", sw.stencils)
    dataset(group, "derivatives_3pt", sw.derivatives_3pt, du)
    dataset(group, "derivatives_5pt", sw.derivatives_5pt, du)
    dataset(group, "deltas", sw.deltas, "")
    dataset(group, "derivative", sw.derivative, du)
    dataset(group, "norms", sw.norms, "")
    dataset(group, "even_changes", sw.evens, "")
    if sw.stem_derivative is not None:
        dataset(group, "stem_derivative", sw.stem_derivative, du)


def read_sweep(group) -> ParameterSweep:
    """Read what :func:`write_sweep` wrote (schema 1.0 and 1.1; the rungs-used attributes,
    ``basis`` and ``even_changes`` are optional)."""
    a = group.attrs

    def s(key):
        return text(a[key])

    stem_diff = float(a["stem_difference"])
    return ParameterSweep(
        name=s("name"), fiducial=float(a["fiducial"]), scale=float(a["scale"]), mode=s("mode"),
        steps=group["steps"][()], relative_steps=group["relative_steps"][()],
        stencils=tuple(text(x) for x in group["stencils"][()]),
        derivatives_3pt=group["derivatives_3pt"][()], derivatives_5pt=group["derivatives_5pt"][()],
        deltas=group["deltas"][()], window=(int(a["window_start"]), int(a["window_stop"])),
        chosen=int(a["chosen_rung"]), stencil=s("stencil"), derivative=group["derivative"][()],
        plateau_width=int(a["plateau_width"]), spread=float(a["spread"]), score=float(a["score"]),
        verdict=s("verdict"), reason=s("reason"), message=s("message"),
        tol_pass=float(a["tol_pass"]), tol_warn=float(a["tol_warn"]),
        parameter_units=normalize_unit(s("parameter_units")), signal_units=normalize_unit(s("signal_units")),
        stem_derivative=group["stem_derivative"][()] if "stem_derivative" in group else None,
        stem_difference=None if math.isnan(stem_diff) else stem_diff,
        norms=group["norms"][()] if "norms" in group else np.zeros(0),
        extended_up=int(a.get("extended_up", 0)), extended_down=int(a.get("extended_down", 0)),
        search_steps=_search_steps(a),
        evens=group["even_changes"][()] if "even_changes" in group else np.zeros(0),
        basis=s("basis") if "basis" in a else ("window" if s("mode") in ("sweep", "adaptive") else s("mode")),
    )


def _search_steps(attrs) -> tuple[float, float] | None:
    """The adaptive range (largest, smallest step), None when not recorded (other modes,
    files written before mode 'adaptive')."""
    hi, lo = float(attrs.get("search_max_step", math.nan)), float(attrs.get("search_min_step", math.nan))
    return None if math.isnan(hi) or math.isnan(lo) else (hi, lo)


def write_sweeps(group, sweeps: Mapping[str, ParameterSweep] | Sequence[ParameterSweep],
                 config: DerivativesConfig | None = None) -> None:
    """Write sweeps as subgroups ``<group>/<name>`` (parameter order in attribute ``names``),
    with the config (JSON) and its tolerances as attributes of ``group``."""
    items = list(sweeps.values()) if isinstance(sweeps, Mapping) else list(sweeps)
    group.attrs["names"] = json.dumps([sw.name for sw in items])
    if config is not None:
        write_settings(group, config)
    for sw in items:
        write_sweep(group.create_group(sw.name), sw)


def write_settings(group, config: DerivativesConfig, rounds: int | None = None) -> None:
    """The derivative settings as attributes of ``group``: ``config`` (JSON), ``mode``,
    ``stencil``, ``h_max``, ``tol_pass``, ``tol_warn``, ``tie_factor``, ``start_step``,
    ``n_rungs``, ``window``, ``start_rungs`` ('window' resolved), ``start_margin``; and ``rounds`` (plan -> evaluate -> analyse -> extend rounds the
    run took; 1 unless adaptive) when given."""
    group.attrs["config"] = config.model_dump_json()
    for key in ("mode", "stencil"):
        group.attrs[key] = str(getattr(config, key))
    for key in ("h_max", "tol_pass", "tol_warn", "tie_factor", "start_step"):
        group.attrs[key] = float(getattr(config, key))
    for key in ("n_rungs", "window"):
        group.attrs[key] = int(getattr(config, key))
    group.attrs["start_rungs"] = int(config.n_start)
    group.attrs["start_margin"] = float(START_MARGIN)
    if rounds is not None:
        group.attrs["rounds"] = int(rounds)


def read_sweeps(group) -> dict[str, ParameterSweep]:
    """Read the sweeps of ``group`` (in the stored parameter order when recorded)."""
    if "names" in group.attrs:
        names = json.loads(text(group.attrs["names"]))
    else:
        names = [k for k in group if is_sweep(group[k])]
    return {n: read_sweep(group[n]) for n in names}


def known_steps_from_hdf5(group) -> dict[str, float]:
    """Chosen absolute steps stored in ``group`` (for derivative mode 'fast')."""
    return {name: float(group[name].attrs["chosen_step"]) for name in group if is_sweep(group[name])}


def known_rungs_from_hdf5(group) -> dict[str, int]:
    """The rungs each stored verdict rested on (``window_stop - window_start``: 2 for an
    adaptive 2-rung start, the window's size for a window; files of every version), so that
    mode 'adaptive' with ``steps_from`` starts from as many."""
    out = {}
    for name in group:
        if is_sweep(group[name]):
            a = group[name].attrs
            out[name] = int(a["window_stop"]) - int(a["window_start"])
    return out
