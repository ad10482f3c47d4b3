"""The HDF5 file: written atomically, read back with checks.

A forecast file is a product that people open with h5py, from other languages, years
later. Nothing is pickled; strings are UTF-8; units follow one convention
(:mod:`fishcast.io.h5util`: a ``units`` attribute with one plain unit string, ``""`` for
dimensionless; per-parameter units through ``units_from``/``units_rule``). Files are built
in memory and written by the one atomic writer (:mod:`fishcast.io.atomic`), so a crash or a
kill never leaves half a file at the output path, and a file already at the path is
untouched until the new one is complete. ``/derivatives`` is written by
:mod:`fishcast.io.sweeps`, ``/diagnostics`` by :mod:`fishcast.io.diagnostics`, batch
summaries by :mod:`fishcast.io.batch_summary`.

Layout (schema version :data:`SCHEMA_VERSION`), see also the README:

* root attributes: ``schema_version``, ``fishcast_version``, ``camb_version``,
  ``numpy_version``, ``h5py_version``, ``nonlinear_model``, ``input_yaml``,
  ``input_sha256``, ``survey_name``, ``created_utc``, ``trust`` (ok | warn | fail),
  ``trust_reasons`` (JSON list), ``provenance`` (JSON list of operations),
  ``cross_probe_covariance`` (a statement: neglected between probes; a probe with a joint
  covariance of its own spectra, such as photometric 3x2pt, appends what it includes).
* ``/fiducial``: one attribute per model parameter (free or fixed).
* ``/parameters/names``, ``/parameters/fiducial``, ``/parameters/units`` (the registry's
  convention, :mod:`fishcast.parameters`: "" dimensionless), ``/parameters/latex`` (labels),
  ``/parameters/prior_sigma`` (NaN where no prior). A Fisher element F_ij is in
  ``1/(unit_i unit_j)``.
* ``/cosmology``: attributes of the CAMB settings (accuracy, grids, nonlinear model).
* ``/fisher/matrix`` (all probes and priors), ``/fisher/priors``,
  ``/fisher/probes/<probe>/matrix``.
* ``/constraints/marginalized_sigma``, ``conditional_sigma``, ``covariance``,
  ``correlation``; attributes ``fom_w0_wa`` where both are free.
* ``/data/<probe>/...``: the probe's data (e.g. ``weak_lensing/ell``, ``cl``, ``noise``).
* ``/derivatives/...`` and ``/diagnostics/...``: derivative sweeps and conditioning.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .. import __version__
from ..errors import FileFormatError, InputError
from ..fisher import FisherMatrix
from ..parameters import latex_of
from .atomic import atomic_h5, check_output_path  # noqa: F401  (part of this module's API)
from .h5util import UNITS_RULES, dataset, per_parameter_units, read_strings, string_dataset, text, units_list

#: 1.1: units attributes follow one convention ("" dimensionless, one plain unit string,
#: per-parameter units as ``units_from``/``units_rule``; see :mod:`fishcast.io.h5util`).
#: Files of 1.0 are read as before.
SCHEMA_VERSION = "1.1"


def _h5py():
    import h5py

    return h5py


def write_parameters(f, fisher: FisherMatrix, priors: Mapping[str, float] | None = None) -> None:
    g = f.create_group("parameters")
    string_dataset(g, "names", fisher.names)
    per_parameter_units(dataset(g, "fiducial", fisher.fiducial), "unit_i")
    string_dataset(g, "units", units_list(fisher.units),
                    description='the unit of each parameter; "" for dimensionless')
    string_dataset(g, "latex", [latex_of(n) for n in fisher.names],
                   description="LaTeX label of each parameter (no dollars), from the parameter registry")
    if priors is not None:
        ds = dataset(g, "prior_sigma", [priors.get(n, np.nan) for n in fisher.names],
                     description="Gaussian prior 1-sigma in the units of each parameter; NaN: no prior")
        per_parameter_units(ds, "unit_i")


def write_constraints(f, fisher: FisherMatrix, projection=None) -> None:
    """``/constraints``: errors, covariance, correlation, figure of merit.

    A degenerate matrix gets no covariance: the group records why (attribute ``error``), or,
    with a ``projection`` (``--allow-degenerate``), the covariance with the degenerate
    directions projected out, and an attribute ``projected`` that says so.
    """
    from ..errors import DegenerateFisherError

    g = f.create_group("constraints")
    per_parameter_units(dataset(g, "conditional_sigma", fisher.conditional_sigma(),
                                description="1/sqrt(F_ii): all other parameters fixed"), "unit_i")
    try:
        cov = fisher.covariance()
    except DegenerateFisherError as exc:
        g.attrs["error"] = str(exc)
        if projection is None:
            return
        cov = np.asarray(projection.covariance)
        g.attrs["projected"] = projection.note
        per_parameter_units(dataset(g, "covariance", cov, description="covariance with the degenerate directions "
                                    "projected out (see attribute projected)"), "unit_i*unit_j")
        per_parameter_units(dataset(g, "marginalized_sigma", np.sqrt(np.diag(cov)),
                                    description="conditional on the removed combinations"), "unit_i")
        return
    per_parameter_units(dataset(g, "covariance", cov, description="inverse Fisher matrix, rows in /parameters/names order"),
                        "unit_i*unit_j")
    per_parameter_units(dataset(g, "marginalized_sigma", np.sqrt(np.diag(cov)), description="sqrt((F^-1)_ii)"), "unit_i")
    dataset(g, "correlation", fisher.correlation(), "")
    if "w0" in fisher.names and "wa" in fisher.names:
        g.attrs["fom_w0_wa"] = fisher.figure_of_merit("w0", "wa")


def write_fisher_group(parent, name: str, fisher: FisherMatrix, main: bool = False):
    """``<parent>/<name>/matrix`` and ``names``; ``main``: the rows are those of
    ``/parameters`` (so the units of ``/parameters/units`` apply)."""
    g = parent.create_group(name) if name else parent
    ds = dataset(g, "matrix", fisher.matrix, description="Fisher matrix, rows in the order of names")
    if main:
        per_parameter_units(ds, "1/(unit_i*unit_j)")
    string_dataset(g, "names", fisher.names)
    return g


def root_attributes(f, provenance=(), trust="ok", trust_reasons=()) -> None:
    import h5py

    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["fishcast_version"] = __version__
    f.attrs["numpy_version"] = np.__version__
    f.attrs["h5py_version"] = h5py.__version__
    f.attrs["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    f.attrs["provenance"] = json.dumps(list(provenance))
    f.attrs["trust"] = trust
    f.attrs["trust_reasons"] = json.dumps(list(trust_reasons))


def write_fisher_file(path, fisher: FisherMatrix, probes: Mapping[str, FisherMatrix] | None = None,
                      meta: Mapping[str, Any] | None = None, inputs=()) -> pathlib.Path:
    """Write a Fisher-only file (derived by combine, prior, fix, import, ...), atomically.

    ``meta`` may hold ``trust``, ``trust_reasons``, ``fiducial_all`` (every model parameter's
    fiducial, free or fixed, kept in ``/fiducial``) and other root attributes. ``inputs``:
    the files the command read, which ``path`` may not be (see
    :func:`fishcast.io.atomic.check_output_path`).
    """
    check_output_path(path, inputs)
    meta = dict(meta or {})
    fiducial_all = dict(meta.pop("fiducial_all", None) or {})
    with atomic_h5(path) as f:
        root_attributes(f, provenance=fisher.provenance, trust=meta.pop("trust", "ok"),
                        trust_reasons=meta.pop("trust_reasons", ()))
        for k, v in meta.items():
            f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)
        fg = f.create_group("fiducial")
        fiducial_all.update({n: float(v) for n, v in zip(fisher.names, fisher.fiducial)})
        for n, v in fiducial_all.items():
            fg.attrs[n] = v
        write_parameters(f, fisher)
        g = write_fisher_group(f, "fisher", fisher, main=True)
        if probes:
            pg = g.create_group("probes")
            for name, pf in probes.items():
                write_fisher_group(pg, name, pf)
        write_constraints(f, fisher)
    return pathlib.Path(path)


def _open(path):
    h5py = _h5py()
    from .reading import check_hdf5_tree, check_regular

    p = pathlib.Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: no such file")
    if p.is_dir():
        raise FileFormatError(f"{p}: is a folder, not a fishcast HDF5 file")
    check_regular(p, "fishcast HDF5 file")  # a FIFO or a device would block or never end
    try:
        ok = h5py.is_hdf5(str(p))
    except OSError as exc:
        raise FileFormatError(f"{p}: cannot read: {exc}") from None
    if not ok:
        raise FileFormatError(f"{p}: not an HDF5 file")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise FileFormatError(f"{p}: cannot open as HDF5 (truncated or damaged?): {exc}") from None
    try:
        check_hdf5_tree(f, str(p))
    except BaseException:
        f.close()
        raise
    return f


@contextlib.contextmanager
def open_forecast(path, require_schema: bool = True) -> Iterator[Any]:
    """Open a fishcast file read-only, checking that it is one and that its schema is known
    (``require_schema=False``: a file without ``schema_version`` is accepted, a newer one is
    not). Unexpected content met while the file is open raises FileFormatError naming it."""
    f = _open(path)
    try:
        try:
            version = f.attrs.get("schema_version")
        except Exception as exc:  # damaged attribute heap
            raise FileFormatError(f"{path}: cannot read attributes (damaged file?): {exc}") from None
        if version is None and require_schema:
            raise FileFormatError(f"{path}: not a fishcast file (no schema_version attribute)")
        version = text(version) if version is not None else "0"
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise FileFormatError(f"{path}: unreadable schema_version {version!r}") from None
        if major > int(SCHEMA_VERSION.split(".")[0]):
            raise FileFormatError(
                f"{path}: schema_version {version} is newer than this fishcast reads ({SCHEMA_VERSION}); "
                "upgrade fishcast"
            )
        try:
            yield f
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            # what was read is not what a fishcast file holds (another tool's file, damage)
            raise FileFormatError(f"{path}: damaged or unexpected content: {type(exc).__name__}: {exc}") from None
        except OSError as exc:  # a truncated dataset, a read error
            raise FileFormatError(f"{path}: cannot read (truncated or damaged?): {exc}") from None
    finally:
        f.close()


def _read_matrix(ds, n: int | None = None, dims: int = 2) -> np.ndarray:
    """A real (n, n) matrix (or ``dims``-d array whose last two axes are n x n) from a dataset."""
    values = ds[()]
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "iuf" or values.ndim != dims \
            or values.shape[-1] != values.shape[-2] or (n is not None and values.shape[-1] != n):
        want = f"({n}, {n})" if n is not None else "square"
        raise FileFormatError(f"{ds.file.filename}: {ds.name}: expected a real {want} matrix{' stack' if dims == 3 else ''}, found "
                              f"{getattr(values, 'dtype', type(values))} of shape {getattr(values, 'shape', ())}")
    return values.astype(float)


def _attr(f, name, default=None):
    v = f.attrs.get(name, default)
    if isinstance(v, np.ndarray):  # an array attribute (another tool's file): plain values
        v = [text(x) if isinstance(x, bytes) else x for x in v.tolist()] if v.ndim else v.item()
    return text(v) if isinstance(v, bytes) else v


def load_json(text, name):
    from .reading import load_json as _load

    return _load(text, name)


def read_fisher(path, comparisons: bool = False) -> tuple[FisherMatrix, dict[str, Any]]:
    """Read the combined Fisher matrix of a fishcast file and its metadata.

    ``meta`` holds the root attributes (``trust``, ``trust_reasons`` as a list, ``provenance``
    as a list, ...), ``probes`` (name -> FisherMatrix) and ``path``. ``comparisons``: also
    ``tracer_comparison`` and ``spectra_comparison`` (what :func:`read_tracer_comparison`
    and :func:`read_spectra_comparison` return), read while the file is open: what ``fishcast
    show`` prints, with the file opened (and its structure checked) once.
    """
    try:
        with open_forecast(path) as f:
            for need in ("fisher/matrix", "parameters/names"):
                if need not in f:
                    raise FileFormatError(f"{path}: not a fishcast file (no /{need})")
            names = read_strings(f["parameters/names"])
            fid = f["parameters/fiducial"][()] if "parameters/fiducial" in f else None
            units = units_list(read_strings(f["parameters/units"])) if "parameters/units" in f else None
            meta: dict[str, Any] = {k: _attr(f, k) for k in f.attrs}
            for key in ("trust_reasons", "provenance"):
                try:
                    meta[key] = load_json(meta.get(key) or "[]", f"{path}: attribute {key}")
                except (TypeError, FileFormatError):
                    meta[key] = []
            trust = meta.get("trust", "ok")
            if trust is not None and (not isinstance(trust, str) or trust not in ("ok", "warn", "fail")):
                raise FileFormatError(f"{path}: the trust attribute must be ok, warn or fail, found {trust!r}")
            try:
                fisher = FisherMatrix(f["fisher/matrix"][()], names, fid, units, provenance=meta["provenance"])
            except FileFormatError:
                raise
            except InputError as exc:  # NaN, wrong shape, negative diagonal, ...
                raise FileFormatError(f"{path}: /fisher/matrix: {exc}") from None
            probes = {}
            if "fisher/probes" in f:
                for pname, g in f["fisher/probes"].items():
                    if "matrix" in g:
                        pn = read_strings(g["names"]) if "names" in g else names
                        try:
                            probes[pname] = FisherMatrix(g["matrix"][()], pn,
                                                         [fisher.fiducial_of(n) if n in fisher else np.nan for n in pn])
                        except FileFormatError:
                            raise
                        except InputError as exc:
                            raise FileFormatError(f"{path}: /fisher/probes/{pname}/matrix: {exc}") from None
            meta["probes"] = probes
            meta["path"] = str(path)
            c = f["constraints"] if "constraints" in f else None
            if c is not None and "projected" in c.attrs and "marginalized_sigma" in c:
                meta["projected"] = {"note": _attr(c, "projected"), "marginalized_sigma": c["marginalized_sigma"][()]}
            meta["fiducial_all"] = ({str(k): float(v) for k, v in f["fiducial"].attrs.items()}
                                    if "fiducial" in f else {})
            if comparisons:
                meta["tracer_comparison"] = _tracer_comparison(f, path)
                meta["spectra_comparison"] = _spectra_comparison(f, path)
            return fisher, meta
    except (KeyError, ValueError, TypeError) as exc:
        raise FileFormatError(f"{path}: damaged or unexpected content: {exc}") from None
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read: {exc}") from None


def file_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_forecast(path, fc, inputs=()) -> pathlib.Path:
    """Write a :class:`fishcast.pipeline.forecast.Forecast` to ``path`` (atomically);
    ``inputs``: files that ``path`` may not be (the survey file is always one)."""
    from ..cosmology import camb_version
    from . import diagnostics as _diag_io
    from .sweeps import write_settings, write_sweep

    survey = fc.survey
    s = survey.settings
    check_output_path(path, [*inputs, *([survey.path] if survey.path else [])])
    with atomic_h5(path) as f:
        root_attributes(f, provenance=fc.fisher.provenance, trust=fc.trust, trust_reasons=fc.trust_reasons)
        f.attrs["camb_version"] = camb_version()
        f.attrs["nonlinear_model"] = s.nonlinear_model
        f.attrs["input_yaml"] = survey.text
        f.attrs["input_sha256"] = survey.sha256
        f.attrs["input_path"] = str(survey.path)
        f.attrs["survey_name"] = survey.name
        f.attrs["cross_probe_covariance"] = "; ".join(
            ["neglected: probe Fisher matrices are added"]
            + [str(p.covariance_note) for p in survey.probes if p.covariance_note])
        # every Boltzmann run of the forecast, wherever it ran, and by stage; cache hits apart
        f.attrs["camb_calls"] = int(fc.camb_calls)
        cost = getattr(fc, "camb_cost", None)
        if cost is not None:
            for stage, n in cost.runs.items():
                f.attrs[f"camb_calls_{stage}"] = int(n)
            for stage, n in cost.cache_hits.items():
                f.attrs[f"cache_hits_{stage}"] = int(n)
            f.attrs["cache_hits"] = int(cost.total_cache_hits)
            # points computed from a CAMB transfer object still held in the process: no Boltzmann run
            for stage, n in getattr(cost, "reused", {}).items():
                f.attrs[f"transfer_reuses_{stage}"] = int(n)
            f.attrs["transfer_reuses"] = int(sum(getattr(cost, "reused", {}).values()))
        f.attrs["cosmology_points"] = int(fc.n_points)
        f.attrs["timings_json"] = json.dumps(fc.timings)

        fg = f.create_group("fiducial")
        for n, v in survey.fiducial.items():
            fg.attrs[n] = float(v)
        write_parameters(f, fc.fisher, survey.priors)

        cg = f.create_group("cosmology")
        for k, v in vars(s).items():
            cg.attrs[k] = v
        cg.attrs["backend"] = "camb"
        cg.attrs["k_units"] = "1/Mpc"
        dg = cg.create_group("derived_at_fiducial")
        for k, v in fc.fiducial_cosmology.derived.items():
            dg.attrs[k] = v

        g = write_fisher_group(f, "fisher", fc.fisher, main=True)
        write_fisher_group(g, "priors", fc.prior_fisher)
        pg = g.create_group("probes")
        for name, pf in fc.probe_fisher.items():
            g2 = write_fisher_group(pg, name, pf)
            for dpath, (arr, units) in fc.probe_reports.get(name, {}).items():
                parent, _, leaf = dpath.rpartition("/")
                grp = g2.require_group(parent) if parent else g2
                if units in UNITS_RULES:  # one unit per parameter (a Fisher matrix of a report)
                    per_parameter_units(dataset(grp, leaf, arr), units)
                elif "unit_" in str(units):  # a misspelt rule must not become a unit string
                    raise ValueError(f"probe {name}: report {dpath}: units {units!r} is neither a unit nor one "
                                     f"of the per-parameter rules {UNITS_RULES}")
                else:
                    dataset(grp, leaf, arr, units)
        write_constraints(f, fc.fisher, fc.extra.get("projection"))

        data = f.create_group("data")
        for probe, products in fc.products.items():
            pgrp = data.create_group(probe)
            for name, (arr, units) in products.items():
                if isinstance(arr, Mapping):
                    _write_nested(pgrp.create_group(name), arr)
                else:
                    dataset(pgrp, name, arr, units)

        der = f.create_group("derivatives")
        string_dataset(der, "names", fc.fisher.names)
        dconf = getattr(getattr(fc.survey, "config", None), "derivatives", None)
        if dconf is not None:  # the mode and settings the sweeps were made with
            write_settings(der, dconf, getattr(fc, "rounds", 1))
        for name, sweep in fc.sweeps.items():
            sg = der.create_group(name)
            if sweep is not None:
                write_sweep(sg, sweep)
        diag = f.create_group("diagnostics")
        for label, obj in (("conditioning", fc.conditioning), ("stability", fc.stability)):
            if obj is not None and _diag_io.is_report(obj):
                _diag_io.write_report(diag.create_group(label), obj)
        for label, obj in fc.extra.items():
            if _diag_io.is_report(obj):
                _diag_io.write_report(diag.create_group(label), obj)
            elif isinstance(obj, Mapping):
                _write_nested(diag.create_group(label), obj)
    return pathlib.Path(path)


def _write_nested(group, mapping: Mapping[str, Any]) -> None:
    """Write a nested mapping: arrays/lists as datasets, scalars and strings as attributes,
    ``(array, units)`` tuples as datasets with units."""
    for k, v in mapping.items():
        k = str(k)
        if isinstance(v, Mapping):
            _write_nested(group.create_group(k), v)
        elif isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], str):
            dataset(group, k, v[0], v[1])
        elif isinstance(v, (str, bytes, int, float, bool, np.integer, np.floating, np.bool_)):
            group.attrs[k] = v
        elif v is None:
            group.attrs[k] = "none"
        else:
            dataset(group, k, v)


def read_tracer_comparison(path) -> dict[str, dict[str, Any]]:
    """Per probe with a multi-tracer comparison (``/fisher/probes/<probe>/tracer_comparison``):
    names, tracers, joint (p, p), single (N, p, p) and the prior matrix (p, p) of the file."""
    with open_forecast(path) as f:
        return _tracer_comparison(f, path)


def _tracer_comparison(f, path) -> dict[str, dict[str, Any]]:
    """:func:`read_tracer_comparison` of the open file ``f``."""
    out: dict[str, dict[str, Any]] = {}
    if "fisher/probes" not in f:
        return out
    prior = f["fisher/priors/matrix"][()] if "fisher/priors/matrix" in f else None
    for probe, g in f["fisher/probes"].items():
        if "tracer_comparison" not in g:
            continue
        c = g["tracer_comparison"]
        names = read_strings(c["parameter_names"])
        tracers = read_strings(c["tracers"])
        single = _read_matrix(c["single_tracer"], len(names), dims=3)
        if single.shape[0] != len(tracers):
            raise FileFormatError(f"{path}: {c.name}: {single.shape[0]} single-tracer matrices for "
                                  f"{len(tracers)} tracers")
        out[probe] = {
            "names": names,
            "tracers": tracers,
            "joint": _read_matrix(c["joint"], len(names)),
            "single": single,
            "prior": _read_matrix(f["fisher/priors/matrix"], len(names)) if prior is not None else None,
        }
    return out


def read_spectra_comparison(path) -> dict[str, dict[str, Any]]:
    """Per probe with a spectra comparison (``/fisher/probes/<probe>/comparison``, written by
    the photometric 3x2pt probe): names, spectra, matrices (label -> (p, p): each spectrum
    type alone, ``added_without_cross_covariance``, ``joint``) and the prior matrix."""
    with open_forecast(path) as f:
        return _spectra_comparison(f, path)


def _spectra_comparison(f, path) -> dict[str, dict[str, Any]]:
    """:func:`read_spectra_comparison` of the open file ``f``."""
    out: dict[str, dict[str, Any]] = {}
    if "fisher/probes" not in f:
        return out
    for probe, g in f["fisher/probes"].items():
        if "comparison" not in g:
            continue
        c = g["comparison"]
        try:
            names = read_strings(c["parameter_names"])
            spectra = read_strings(c["spectra"])
        except (KeyError, ValueError, TypeError) as exc:
            raise FileFormatError(f"{path}: {c.name}: damaged spectra comparison: {exc}") from None
        labels = [s for s in spectra if s in c] + [k for k in ("added_without_cross_covariance", "joint") if k in c]
        mats = {}
        for label in labels:
            if "matrix" not in c[label]:
                raise FileFormatError(f"{path}: {c[label].name} has no matrix")
            mats[label] = _read_matrix(c[label]["matrix"], len(names))
        out[probe] = {
            "names": names,
            "spectra": spectra,
            "matrices": mats,
            "prior": _read_matrix(f["fisher/priors/matrix"], len(names)) if "fisher/priors/matrix" in f else None,
        }
    return out
