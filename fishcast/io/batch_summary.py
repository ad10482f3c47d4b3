"""The summary files of a batch grid: ``summary.h5`` and ``summary.csv``.

Both hold one row per design of the grid, in grid order: its name, axis values, status
(ok | failed), file, trust, the figure of merit of the grid's parameter pair and the
marginalized 1-sigma errors (``sigma_<parameter>``, in the parameter's unit; NaN where the
design failed or lacks the parameter), and the reason of a failure. Both are written
atomically (:mod:`fishcast.io.atomic`).

``summary.h5``: root attributes ``fishcast_version``, ``grid_name``, ``grid_yaml``,
``grid_sha256``, ``grid_path``, ``base_survey``, ``executor``, ``n_designs``, ``n_failed``,
``cosmology_points``, ``cache_hits``, ``points_computed``, ``boltzmann_calls``,
``timings_json``; ``/designs``: ``name``, ``status``, ``file``, ``trust``, ``reason``,
``fom`` (attribute ``parameters``), ``values/<axis label>``; ``/sigma``: ``names`` and
``marginalized`` (n_designs, n_parameters); ``/failed``: ``name``, ``stage``, ``reason``.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import math
import pathlib
from typing import Any

import numpy as np

from .. import __version__
from .atomic import atomic_h5, write_text
from .h5util import dataset, string_dataset, strings

__all__ = ["parameter_names", "summary_rows", "write_summary_csv", "write_summary_h5", "read_summary_h5"]


def _format_value(v) -> str:
    from ..pipeline.batch import format_value

    return format_value(v)


def parameter_names(res) -> list[str]:
    """Every parameter of the finished designs, in first-seen order."""
    names: list[str] = []
    for d in res.designs:
        names.extend(n for n in d.names if n not in names)
    return names


def summary_rows(res) -> list[dict[str, Any]]:
    """One row per design of the grid of a :class:`fishcast.pipeline.batch.BatchResult`,
    in grid order."""
    done = {d.name: d for d in res.designs}
    bad = {f.name: f for f in res.failed}
    names = parameter_names(res)
    rows = []
    for design in res.grid.designs:
        row: dict[str, Any] = {"design": design.name}
        row.update(design.values)
        if design.name in done:
            d = done[design.name]
            row.update(status="ok", file=d.path.name, trust=d.trust, fom=d.fom, reason="")
            row.update({f"sigma_{n}": d.sigma.get(n, float("nan")) for n in names})
        else:
            f = bad[design.name]
            row.update(status="failed", file="", trust="", fom=float("nan"), reason=f"{f.stage}: {f.reason}")
            row.update({f"sigma_{n}": float("nan") for n in names})
        rows.append(row)
    return rows


def _csv_value(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    if v is None:
        return "none"
    return str(v).replace("\n", " | ")


def write_summary_csv(path: pathlib.Path, res) -> pathlib.Path:
    """CSV: design, axis values, status, file, trust, figure of merit, marginalized 1-sigma
    errors (``sigma_<parameter>``, in the parameter's unit), reason of failure. Atomic."""
    rows = summary_rows(res)
    a, b = res.grid.config.figure_of_merit
    fom_col = f"fom_{a}_{b}"
    cols = ["design", *res.grid.labels, "status", "file", "trust", fom_col,
            *[f"sigma_{n}" for n in parameter_names(res)], "reason"]
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in rows:
        row[fom_col] = row.pop("fom")
        w.writerow([_csv_value(row.get(c, "")) for c in cols])
    write_text(path, buf.getvalue())
    return pathlib.Path(path)


def write_summary_h5(path: pathlib.Path, res) -> pathlib.Path:
    """``summary.h5`` (see the module docstring). Atomic."""
    rows = summary_rows(res)
    names = parameter_names(res)
    g = res.grid
    with atomic_h5(path) as f:
        f.attrs["fishcast_version"] = __version__
        f.attrs["grid_name"] = g.name
        f.attrs["grid_yaml"] = g.text
        f.attrs["grid_sha256"] = g.sha256
        f.attrs["grid_path"] = str(g.path)
        f.attrs["base_survey"] = str(g.base)
        f.attrs["executor"] = res.executor
        f.attrs["n_designs"] = len(rows)
        f.attrs["n_failed"] = len(res.failed)
        f.attrs["cosmology_points"] = int(res.stats.points)
        f.attrs["cache_hits"] = int(res.stats.cache_hits)
        f.attrs["points_computed"] = int(res.stats.computed)
        f.attrs["boltzmann_calls"] = int(res.stats.boltzmann_calls)
        f.attrs["timings_json"] = json.dumps(res.timings)
        dg = f.create_group("designs")
        for key, col in (("name", "design"), ("status", "status"), ("file", "file"), ("trust", "trust"),
                         ("reason", "reason")):
            string_dataset(dg, key, [r[col] for r in rows])
        dataset(dg, "fom", np.array([r["fom"] for r in rows], dtype=float),
                parameters=strings(g.config.figure_of_merit),
                description="DETF figure of merit 1/sqrt(det C) of the marginalized pair")
        vg = dg.create_group("values")
        for label in g.labels:
            vals = [r[label] for r in rows]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                dataset(vg, label, np.array(vals, dtype=float))
            else:
                string_dataset(vg, label, [_format_value(v) for v in vals])
        sg = f.create_group("sigma")
        string_dataset(sg, "names", names)
        dataset(sg, "marginalized",
                np.array([[r[f"sigma_{n}"] for n in names] for r in rows], dtype=float).reshape(len(rows), len(names)),
                description="marginalized 1-sigma error of each parameter, in its unit (see a design file's /parameters/units)")
        fg = f.create_group("failed")
        string_dataset(fg, "name", [x.name for x in res.failed])
        string_dataset(fg, "stage", [x.stage for x in res.failed])
        string_dataset(fg, "reason", [x.reason for x in res.failed])
    return pathlib.Path(path)


def read_summary_h5(path) -> dict[str, Any]:
    """Read a ``summary.h5``: ``{"attrs": root attributes, "designs": {column: list},
    "values": {axis label: list}, "sigma_names": [...], "sigma": (n_designs, n_parameters)
    array, "failed": {column: list}}``. Strings come back as ``str``."""
    from .h5util import read_strings, text
    from .hdf5 import open_forecast

    with open_forecast(path, require_schema=False) as f:
        attrs = {k: (text(v) if isinstance(v, (bytes, str)) else v.item() if hasattr(v, "item") else v)
                 for k, v in f.attrs.items()}
        dg = f["designs"]
        designs = {key: read_strings(dg[key]) for key in ("name", "status", "file", "trust", "reason")}
        designs["fom"] = [float(x) for x in dg["fom"][()]]
        values = {}
        for label, ds in dg["values"].items():
            values[label] = read_strings(ds) if ds.dtype.kind in "SOU" else [float(x) for x in ds[()]]
        return {
            "attrs": attrs, "designs": designs, "values": values,
            "fom_parameters": [text(x) for x in dg["fom"].attrs["parameters"]],
            "sigma_names": read_strings(f["sigma/names"]), "sigma": np.asarray(f["sigma/marginalized"][()], dtype=float),
            "failed": {key: read_strings(f["failed"][key]) for key in ("name", "stage", "reason")},
        }
