"""``/diagnostics`` of a forecast file: the reports of :mod:`fishcast.diagnostics`.

One subgroup per report, recognized on reading by its attribute ``fishcast_type``
(``ConditioningReport``, ``ErrorStability``, ``GaussianValidity``, ``ProjectedFisher``)
whatever its name; ``verdict`` and ``reasons`` (JSON list) where the report has them; the
thresholds used as ``thresholds`` (JSON) and one ``threshold_<name>`` attribute each.
Per-parameter quantities are in ``names`` order; their units follow the convention of
:mod:`fishcast.io.h5util` (``units_from`` + ``units_rule``; ``""`` for dimensionless).

The numerics (:mod:`fishcast.diagnostics`) keep no HDF5 code; this module is the contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from ..diagnostics import (POINT_STATUSES, ConditioningReport, DiagnosticsConfig, ErrorStability, GaussianValidity,
                           ProjectedFisher)
from ..errors import InputError
from .h5util import dataset, per_parameter_units, read_strings, string_dataset, text

__all__ = ["write_report", "read_report", "write_diagnostics", "read_diagnostics", "KINDS"]

#: keyword / group name -> report class
KINDS = {"conditioning": ConditioningReport, "error_stability": ErrorStability,
         "gaussian_validity": GaussianValidity, "projection": ProjectedFisher}

_PARAMETERS_UNITS = "/parameters/units"


def _write_config(group, cfg: DiagnosticsConfig) -> None:
    group.attrs["thresholds"] = cfg.model_dump_json()
    for key, value in cfg.model_dump().items():
        group.attrs[f"threshold_{key}"] = value


def _read_config(group) -> DiagnosticsConfig:
    return DiagnosticsConfig.model_validate_json(text(group.attrs["thresholds"]))


def _strs(ds) -> tuple[str, ...]:
    return tuple(read_strings(ds))


def _reasons(a) -> tuple[str, ...]:
    return tuple(json.loads(text(a["reasons"])))


# ------------------------------------------------------------------------------ conditioning
def _write_conditioning(group, r: ConditioningReport) -> None:
    a = group.attrs
    a["symmetry_error"] = r.symmetry_error
    a["cond_F"] = r.cond_F
    a["cond_F_note"] = "unit-dependent: reflects the parameters' units, not the information"
    a["cond_R"] = r.cond_R
    a["cholesky_ok"] = bool(r.cholesky_ok)
    a["inversion_residual"] = r.inversion_residual
    a["verdict"] = r.verdict
    a["reasons"] = json.dumps(list(r.reasons))
    a["weak_directions"] = json.dumps([[lam, w] for lam, w in r.weak_directions])
    _write_config(group, r.thresholds)
    string_dataset(group, "names", r.names)
    dataset(group, "eigenvalues", r.eigenvalues, "")
    dataset(group, "eigenvectors", r.eigenvectors, "")
    source = None
    if r.units is not None:
        source = string_dataset(group, "units", r.units).name
    ds = dataset(group, "conditional_sigma", r.conditional_sigma)
    if source:
        per_parameter_units(ds, "unit_i", source)
    if r.covariance is not None:
        ds = dataset(group, "covariance", r.covariance)
        if source:
            per_parameter_units(ds, "unit_i*unit_j", source)
        ds = dataset(group, "marginalized_sigma", r.marginalized_sigma)
        if source:
            per_parameter_units(ds, "unit_i", source)


def _read_conditioning(group) -> ConditioningReport:
    a = group.attrs
    return ConditioningReport(
        names=_strs(group["names"]), symmetry_error=float(a["symmetry_error"]),
        cond_F=float(a["cond_F"]), cond_R=float(a["cond_R"]), cholesky_ok=bool(a["cholesky_ok"]),
        eigenvalues=group["eigenvalues"][()], eigenvectors=group["eigenvectors"][()],
        weak_directions=tuple((float(lam), dict(w)) for lam, w in json.loads(text(a["weak_directions"]))),
        covariance=group["covariance"][()] if "covariance" in group else None,
        marginalized_sigma=group["marginalized_sigma"][()] if "marginalized_sigma" in group else None,
        conditional_sigma=group["conditional_sigma"][()], inversion_residual=float(a["inversion_residual"]),
        verdict=text(a["verdict"]), reasons=_reasons(a), thresholds=_read_config(group),
        units=_strs(group["units"]) if "units" in group else None,
    )


# ------------------------------------------------------------------------------ stability
def _write_stability(group, r: ErrorStability) -> None:
    a = group.attrs
    a["verdict"] = r.verdict
    a["reasons"] = json.dumps(list(r.reasons))
    _write_config(group, r.thresholds)
    string_dataset(group, "names", r.names)
    string_dataset(group, "cases", r.cases)
    string_dataset(group, "worst_case", r.worst_case)
    per_parameter_units(dataset(group, "sigma", r.sigma), "unit_i", _PARAMETERS_UNITS)
    per_parameter_units(dataset(group, "sigma_cases", r.sigma_cases), "unit_i", _PARAMETERS_UNITS)
    for key in ("rung_change", "noise_change", "max_change"):
        dataset(group, key, getattr(r, key), "")


def _read_stability(group) -> ErrorStability:
    a = group.attrs
    return ErrorStability(
        names=_strs(group["names"]), sigma=group["sigma"][()], cases=_strs(group["cases"]),
        sigma_cases=group["sigma_cases"][()], rung_change=group["rung_change"][()],
        noise_change=group["noise_change"][()], max_change=group["max_change"][()],
        worst_case=_strs(group["worst_case"]), verdict=text(a["verdict"]),
        reasons=_reasons(a), thresholds=_read_config(group),
    )


# ------------------------------------------------------------------------------ projection
def _write_projection(group, r: ProjectedFisher) -> None:
    group.attrs["removed_directions"] = json.dumps(list(r.removed))
    group.attrs["note"] = r.note
    string_dataset(group, "names", r.names)
    per_parameter_units(dataset(group, "matrix", r.matrix), "1/(unit_i*unit_j)", _PARAMETERS_UNITS)
    dataset(group, "basis", r.basis, "")
    dataset(group, "reduced_matrix", r.reduced_matrix, "")
    per_parameter_units(dataset(group, "covariance", r.covariance), "unit_i*unit_j", _PARAMETERS_UNITS)
    per_parameter_units(dataset(group, "marginalized_sigma", r.marginalized_sigma), "unit_i", _PARAMETERS_UNITS)


def _read_projection(group) -> ProjectedFisher:
    return ProjectedFisher(
        names=_strs(group["names"]), removed=tuple(json.loads(text(group.attrs["removed_directions"]))),
        matrix=group["matrix"][()], basis=group["basis"][()], reduced_matrix=group["reduced_matrix"][()],
        covariance=group["covariance"][()], marginalized_sigma=group["marginalized_sigma"][()],
        note=text(group.attrs["note"]),
    )


# ------------------------------------------------------------------------------ Gaussian validity
def _write_gaussian(group, r: GaussianValidity) -> None:
    a = group.attrs
    a["n_sigma"] = r.n_sigma
    a["tolerance"] = r.tolerance
    a["threshold_gaussian_tolerance"] = r.tolerance
    a["verdict"] = r.verdict
    a["reasons"] = json.dumps(list(r.reasons))
    a["definition"] = ("delta_chi2 = norm(signal(point) - signal(fiducial))^2 in the Fisher metric; "
                       "Fisher predicts n_sigma^2")
    string_dataset(group, "labels", r.labels)
    string_dataset(group, "names", r.names)
    dataset(group, "delta_chi2", r.delta_chi2, "")
    dataset(group, "ratio", r.ratio, "")
    dataset(group, "flagged", np.asarray(r.flagged).astype(np.int8), "")
    if r.offsets is not None:
        per_parameter_units(dataset(group, "offsets", r.offsets), "unit_i", _PARAMETERS_UNITS)
    if r.status:
        # where each point came from, and what the check cost (issue 15 item 3, issue 16)
        string_dataset(group, "status", r.status)
        string_dataset(group, "point_notes", r.point_notes)
        a["status_values"] = ("evaluated: sent to the backend (or read from the cache); reused: a cosmology "
                              "this run had evaluated (no CAMB call); inferred: from the other side of the direction by "
                              "the quadratic model along it, where no verdict depends on it (no CAMB call); outside: "
                              "certainly outside "
                              "the domain where the model runs (not sent to CAMB); failed: the model did not run "
                              "there or gave a non-finite data vector")
        a["camb_runs"] = int(r.camb_runs)  # Boltzmann runs made for the check, wherever they ran
        for kind in POINT_STATUSES:
            a[f"n_{kind}"] = r.count(kind)
    if r.kinds:
        string_dataset(group, "direction_kinds", r.kinds)
        group["direction_kinds"].attrs["definition"] = (
            "per direction: principal (of the whole covariance); cosmological (of the nuisance-marginalized "
            "cosmological covariance, nuisances at their conditional best fit -F_nn^-1 F_nc delta_c); nuisance (of the "
            "conditional nuisance covariance F_nn^-1, cosmology at the fiducial)")
    if r.width_ratio is not None:
        dataset(group, "width_ratio", r.width_ratio, "")
        group["width_ratio"].attrs["definition"] = ("1/sqrt(delta_chi2 / n_sigma^2): distance to the true "
                                                    "Delta chi^2 = n_sigma^2 contour along that side, in units "
                                                    "of the Fisher distance")
    if r.sigma_change is not None:
        ds = dataset(group, "sigma_change", r.sigma_change, "")
        ds.attrs["definition"] = ("(direction, parameter): relative change of the marginalized error when the "
                                  "covariance takes the true width of that direction, C + (w^2 - 1) o o^T")
        dataset(group, "of_interest", np.asarray(r.of_interest, dtype=np.int8), "")
        string_dataset(group, "direction_verdicts", r.direction_verdicts)
        a["notes"] = json.dumps(list(r.notes))
        a["sigma_tolerance"] = r.sigma_tolerance
        a["threshold_gaussian_sigma_tolerance"] = r.sigma_tolerance


def _read_gaussian(group) -> GaussianValidity:
    a = group.attrs
    opt = {}
    if "status" in group:
        opt.update(status=_strs(group["status"]), point_notes=_strs(group["point_notes"]),
                   camb_runs=int(a.get("camb_runs", -1)))
    if "width_ratio" in group:
        opt["width_ratio"] = group["width_ratio"][()]
    if "direction_kinds" in group:
        opt["kinds"] = _strs(group["direction_kinds"])
    if "sigma_change" in group:
        opt.update(sigma_change=group["sigma_change"][()],
                   of_interest=tuple(bool(x) for x in group["of_interest"][()]),
                   direction_verdicts=_strs(group["direction_verdicts"]),
                   notes=tuple(json.loads(text(a["notes"]))) if "notes" in a else (),
                   sigma_tolerance=float(a.get("sigma_tolerance", float("nan"))))
    return GaussianValidity(
        labels=_strs(group["labels"]), n_sigma=float(a["n_sigma"]), delta_chi2=group["delta_chi2"][()],
        ratio=group["ratio"][()], flagged=group["flagged"][()].astype(bool), tolerance=float(a["tolerance"]),
        verdict=text(a["verdict"]), reasons=_reasons(a),
        offsets=group["offsets"][()] if "offsets" in group else None,
        names=_strs(group["names"]) if "names" in group else (), **opt,
    )


_IO: dict[type, tuple[Callable, Callable]] = {
    ConditioningReport: (_write_conditioning, _read_conditioning),
    ErrorStability: (_write_stability, _read_stability),
    ProjectedFisher: (_write_projection, _read_projection),
    GaussianValidity: (_write_gaussian, _read_gaussian),
}
_BY_NAME = {cls.__name__: cls for cls in _IO}


def is_report(obj) -> bool:
    """Whether ``obj`` is a report this module writes."""
    return type(obj) in _IO


def write_report(group, report) -> None:
    """Write one report into ``group`` (created by the caller)."""
    write, _ = _IO[type(report)]
    group.attrs["fishcast_type"] = type(report).__name__
    write(group, report)


def read_report(group):
    """Read one report written by :func:`write_report` (its class from ``fishcast_type``)."""
    cls = _BY_NAME[text(group.attrs["fishcast_type"])]
    return _IO[cls][1](group)


def write_diagnostics(group, **results) -> None:
    """Write results into subgroups of ``group`` (``/diagnostics``): keyword names
    conditioning, error_stability, gaussian_validity, projection (None values skipped)."""
    for key, res in results.items():
        if key not in KINDS:
            raise InputError(f"unknown diagnostics result {key!r}")
        if res is not None:
            write_report(group.create_group(key), res)


def read_diagnostics(group) -> dict[str, object]:
    """Read the results stored in ``group``: {kind: result} with kind one of conditioning,
    error_stability, gaussian_validity, projection. Subgroups are recognized by their
    ``fishcast_type`` attribute, whatever their name."""
    by_type = {cls.__name__: key for key, cls in KINDS.items()}
    out: dict[str, object] = {}
    for name in group:
        sub = group[name]
        t = sub.attrs.get("fishcast_type") if hasattr(sub, "attrs") else None
        t = text(t) if t is not None else None
        if t in by_type and by_type[t] not in out:
            out[by_type[t]] = read_report(sub)
    return out
