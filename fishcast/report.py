"""What the command line prints: rows, tables and verdict texts.

The click layer (``fishcast.cli``) parses options, calls the library and prints; everything
it prints that takes a decision or a number is made here, as plain Python values (rows of
dicts and lists of str/float/None, no numpy arrays) and as texts:

* :func:`format_table` -- the one text-table formatter (show, gains, compare, stability,
  batch, run);
* the constraints of a Fisher matrix (:func:`constraints`) and their renderings (table,
  LaTeX, JSON document), the multi-tracer gain (:func:`tracer_gains`);
* trust: the worst verdict of several inputs (:func:`merge_trust`), the warning text of an
  untrusted file (:func:`trust_warning`), the verdict of ``run`` (:func:`run_verdict`);
* comparisons of two forecast files (:func:`compare_files`), where inf and NaN against a
  finite value are differences;
* the derivative-step and conditioning report (:func:`diagnostics_text`, also
  ``fishcast.diagnostics.format_report``) and the one of a file (:func:`stability_report`);
* the batch summary (:func:`batch_text`).

Units: errors are in the units of their parameter (the ``units`` of each row, "" for
dimensionless); relative errors are sigma / |fiducial|, printed in percent; a figure of merit
is 1/sqrt(det Cov(a, b)) in the inverse units of the pair.

Nothing here prints or exits: errors are :mod:`fishcast.errors` exceptions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fishcast.errors import DegenerateFisherError, FileFormatError, FishcastError

#: Condition number of the correlation form above which ``show`` warns (derivkit's threshold;
#: inversion itself refuses above fishcast.fisher.COND_LIMIT).
COND_WARN = 1e12

#: trust verdicts from best to worst (root attribute ``trust`` of a forecast file)
TRUST_ORDER = {"ok": 0, "warn": 1, "fail": 2}

#: exit status of ``run`` for a forecast not to be trusted (FAIL verdict, degenerate matrix)
EXIT_UNTRUSTED = 3


# ============================================================================ the formatter
def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | Sequence[str] | None = None,
                 indent: str = "", sep: str = "  ") -> str:
    """A plain-text table: the header, a rule of dashes under each column, one line per row.

    ``align``: one character per column, ``<`` (left) or ``>`` (right); a single string of
    one character applies to every column; default: the first column left, the others right.
    Cells are converted with ``str`` (format numbers first, e.g. with :func:`num`); trailing
    blanks are stripped from every line."""
    header = [str(h) for h in header]
    body = [[str(c) for c in r] for r in rows]
    n = len(header)
    if any(len(r) != n for r in body):
        raise ValueError("every row of a table needs one cell per column")
    if align is None:
        align = "<" + ">" * (n - 1)
    elif len(align) == 1:
        align = align * n
    widths = [max([len(header[k])] + [len(r[k]) for r in body]) for k in range(n)]

    def line(cells):
        return (indent + sep.join(format(c, f"{a}{w}") for c, a, w in zip(cells, align, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def num(x: Any, fmt: str = ".4g") -> str:
    """A number as text; ``-`` for None and NaN (not available); other values with ``str``."""
    if x is None:
        return "-"
    if isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
        x = float(x)
        return "-" if math.isnan(x) else format(x, fmt)
    return str(x)


def pct(x: float | None) -> str:
    """A fraction in percent (``0.0123`` -> ``1.23%``); ``-`` when not finite or None."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.3g}%"


def json_safe(x: Any) -> Any:
    """``x`` with non-finite floats as None and numpy values as Python ones (valid JSON)."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


# ============================================================================ trust
def worst_trust(verdicts: Iterable[str]) -> str:
    """The worst of trust verdicts (``ok`` < ``warn`` < ``fail``; an unknown one counts as warn)."""
    worst = "ok"
    for t in verdicts:
        t = str(t or "ok")
        if TRUST_ORDER.get(t, 1) > TRUST_ORDER.get(worst, 1):
            worst = t
    return worst


def merge_trust(inputs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Worst verdict of the inputs ``(path, meta)``; reasons prefixed with the file they come from."""
    reasons = [f"{path}: {r}" for path, meta in inputs for r in (meta.get("trust_reasons") or [])]
    return {"trust": worst_trust(meta.get("trust") for _, meta in inputs), "trust_reasons": reasons}


def derived_meta(inputs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Root metadata of a file derived from ``inputs`` (combine, prior, fix, ...): their merged
    trust, and the fiducials of every model parameter (free or fixed) of the inputs, the first
    file's value where they repeat."""
    meta = merge_trust(inputs)
    fiducial_all: dict[str, float] = {}
    for _, m in inputs:
        for k, v in (m.get("fiducial_all") or {}).items():
            fiducial_all.setdefault(k, v)
    meta["fiducial_all"] = fiducial_all
    return meta


def trust_warning(meta: Mapping[str, Any]) -> str | None:
    """The warning of a file whose stability verdict is not ``ok`` (None when it is)."""
    trust = str(meta.get("trust") or "ok")
    if trust == "ok":
        return None
    reasons = meta.get("trust_reasons") or []
    return (f"stability verdict {trust.upper()}: the forecast is not to be trusted"
            + (": " + "; ".join(map(str, reasons)) if reasons else ""))


def _dominant_names(directions) -> list[str]:
    names: list[str] = []
    for _, weights in directions or ():
        for n in weights:
            if n not in names:
                names.append(str(n))
    return names


def run_verdict(trust: str, conditioning=None, projection=None, allow_unstable: bool = False) -> tuple[str | None, int]:
    """The closing message and exit status of ``run`` (the file is written either way).

    A degenerate Fisher matrix (``conditioning`` has no covariance and nothing was projected
    out) is exit 3 whatever ``allow_unstable`` says, and points to the remedies that apply:
    fix or add a prior on a named parameter, or ``--allow-degenerate``. A FAIL verdict of
    the stability checks is exit 3 unless ``allow_unstable``. Otherwise ``(None, 0)``."""
    degenerate = conditioning is not None and getattr(conditioning, "covariance", None) is None and projection is None
    if degenerate:
        names = _dominant_names(getattr(conditioning, "weak_directions", ()))
        which = f" (the weak directions are dominated by {', '.join(names)})" if names else ""
        return (f"fishcast: the Fisher matrix is degenerate: it cannot be inverted{which}; exit 3. "
                "The file is written with the conditional errors only. Fix one of the named parameters or add "
                "a prior on it (fishcast fix / fishcast prior), or rerun with --allow-degenerate to project the "
                "degenerate directions out (--allow-unstable does not apply to a degenerate matrix).",
                EXIT_UNTRUSTED)
    if trust == "fail" and not allow_unstable:
        return ("fishcast: the forecast FAILED its stability checks (see above); exit 3. "
                "Use --allow-unstable to accept it.", EXIT_UNTRUSTED)
    return None, 0


# ============================================================================ constraints
@dataclass
class Constraints:
    """The constraints of a Fisher matrix as ``show`` prints them.

    ``rows``: one dict per parameter (name, units, fiducial, sigma_marginalized,
    sigma_conditional, relative_marginalized, relative_conditional; None where not
    available); ``fom``: {(a, b): DETF figure of merit}; ``warnings``: texts; ``degenerate``:
    the marginalized errors cannot be computed (the matrix cannot be inverted)."""

    rows: list[dict[str, Any]]
    fom: dict[tuple[str, str], float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    degenerate: bool = False


def constraints(fisher, params: Sequence[str] | None = None, pairs: Sequence[tuple[str, str]] = (),
                projected: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None) -> Constraints:
    """The constraints of ``fisher`` (a :class:`fishcast.fisher.FisherMatrix`) on ``params``
    (default all), the figures of merit of ``pairs`` (and of (w0, wa) when both are free),
    and the warnings: the file's trust verdict (from ``meta``), a degenerate matrix, a
    condition number above :data:`COND_WARN`. ``projected``: the file's constraints with
    degenerate directions projected out (``run --allow-degenerate``), shown instead of
    nothing, with a warning. Unknown parameter names raise InputError."""
    params = list(params) if params else list(fisher.names)
    warnings: list[str] = []
    degenerate = False
    try:
        marg = fisher.marginalized_sigma()
    except DegenerateFisherError as exc:
        marg, degenerate = None, True
        warnings.append(str(exc))
        if projected is not None:
            marg, degenerate = np.asarray(projected["marginalized_sigma"]), False
            warnings.append("marginalized errors with the degenerate directions projected out: " + projected["note"])
    cond = fisher.conditional_sigma()
    rows = []
    for name in params:
        i = fisher.index(name)
        fid = float(fisher.fiducial[i])
        rel = abs(fid) if math.isfinite(fid) and fid != 0 else None
        m = float(marg[i]) if marg is not None else None
        c = float(cond[i])
        rows.append({
            "name": name, "units": fisher.units[i], "fiducial": fid,
            "sigma_marginalized": m, "sigma_conditional": c,
            "relative_marginalized": m / rel if (m is not None and rel) else None,
            "relative_conditional": c / rel if rel else None,
        })
    pairs = list(pairs)
    for a, b in pairs:  # unknown names are bad input even when the matrix is degenerate
        fisher.index(a), fisher.index(b)
    if "w0" in fisher and "wa" in fisher and ("w0", "wa") not in pairs:
        pairs = [("w0", "wa")] + pairs
    fom: dict[tuple[str, str], float] = {}
    exact = marg is not None and not (projected is not None and warnings)
    if exact:
        fom = {(a, b): float(fisher.figure_of_merit(a, b)) for a, b in pairs}
        k = fisher.condition_number()
        if k > COND_WARN:
            warnings.append(f"condition number of the correlation form {k:.3g} > {COND_WARN:g}: "
                            "the marginalized errors are sensitive to small errors in F")
    tw = trust_warning(meta or {})
    if tw:
        warnings.insert(0, tw)
    return Constraints(rows, fom, warnings, degenerate)


_CONSTRAINT_HEAD = ["parameter", "fiducial", "sigma_marg", "rel_marg", "sigma_cond", "rel_cond", "units"]


def constraint_cells(row: Mapping[str, Any]) -> list[str]:
    """The cells of one constraints row, in the order of the table's columns."""
    return [row["name"], num(row["fiducial"], ".6g"), num(row["sigma_marginalized"]), pct(row["relative_marginalized"]),
            num(row["sigma_conditional"]), pct(row["relative_conditional"]), row["units"] or ""]


def constraints_text(path: str, c: Constraints, meta: Mapping[str, Any]) -> str:
    """The ``fishcast show`` table."""
    out = [f"{path}" + (f"  (survey: {meta['survey_name']})" if meta.get("survey_name") else ""),
           format_table(_CONSTRAINT_HEAD, [constraint_cells(r) for r in c.rows], "<>>>>><"),
           "(1-sigma; marg: all other free parameters marginalized; cond: all others fixed; "
           "rel: sigma / |fiducial|)"]
    for (a, b), v in c.fom.items():
        out.append(f"FoM({a}, {b}) = {v:.4g}   [DETF: 1/sqrt(det Cov({a}, {b}))]")
    cost = camb_cost_text(meta)
    if cost:
        out.append(cost)
    out.append(f"trust: {str(meta.get('trust') or 'ok')}")
    out += [f"WARNING: {w}" for w in c.warnings]
    return "\n".join(out)


def camb_cost_text(meta: Mapping[str, Any]) -> str | None:
    """What a forecast's cosmology evaluations cost, from its file's root attributes: every
    Boltzmann run (``camb_calls``), by stage (``camb_calls_derivatives``,
    ``camb_calls_validity``), the points read from the cache (``cache_hits``) and those
    computed from a CAMB transfer object the process still held (``transfer_reuses``, no
    Boltzmann run); None for a file that records none (a combined or derived file)."""
    if meta.get("camb_calls") is None:
        return None

    def n(key: str) -> int:
        return int(meta.get(key) or 0)

    total = n("camb_calls")
    out = f"CAMB: {total} Boltzmann run{'s' if total != 1 else ''}"
    if meta.get("camb_calls_derivatives") is not None:
        out += (f" ({n('camb_calls_derivatives')} fiducial and derivatives, "
                f"{n('camb_calls_validity')} Gaussian-validity check)")
    if meta.get("cache_hits") is not None:
        hits = n("cache_hits")
        out += f"; {hits} cosmology point{'s' if hits != 1 else ''} read from the cache"
    if meta.get("transfer_reuses") is not None:
        reused = n("transfer_reuses")
        out += (f"; {reused} point{'s' if reused != 1 else ''} computed from a transfer function already held "
                f"(no Boltzmann run)")
    return out


def constraints_latex(path: str, c: Constraints) -> str:
    """The constraints as a LaTeX tabular (``fishcast show --format latex``)."""
    from fishcast.io.exchange import latex_name

    out = [f"% fishcast show {path}", r"\begin{tabular}{lrrrrr}", r"\hline",
           r"Parameter & Fiducial & $\sigma_{\rm marg}$ & $\sigma_{\rm marg}/|\theta|$ & "
           r"$\sigma_{\rm cond}$ & $\sigma_{\rm cond}/|\theta|$ \\", r"\hline"]
    for r in c.rows:
        cells = constraint_cells(r)[:-1]
        cells[0] = f"${latex_name(r['name'])}$"
        out.append(" & ".join(x.replace("%", r"\%") for x in cells) + r" \\")
    out += [r"\hline", r"\end{tabular}"]
    for (a, b), v in c.fom.items():
        out.append(f"% FoM({a}, {b}) = {v:.4g}")
    out += [f"% WARNING: {w}".replace("\n", "\n% ") for w in c.warnings]
    return "\n".join(out)


def tracer_gains(path: str, params: Sequence[str],
                 comparison: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The multi-tracer gain of each probe of the file ``path`` that stored a tracer
    comparison: ``{probe: {"columns": [tracer..., "naive sum", "joint"], "params": [...],
    "sigma": [[float | None per column] per parameter]}}`` (None: not constrained).
    ``comparison``: the file's comparisons already read (``read_fisher(path,
    comparisons=True)``), else they are read from ``path``."""
    from fishcast.io import read_tracer_comparison

    out = {}
    if comparison is None:
        comparison = read_tracer_comparison(path)
    if not comparison:
        return out
    from fishcast.probes.multitracer_clustering import tracer_gain

    for probe, comp in comparison.items():
        wanted = [p for p in params if p in comp["names"]]
        g = tracer_gain(comp["names"], comp["joint"], comp["single"], comp["tracers"], comp["prior"], wanted)
        sigma = [[float(v) if np.isfinite(v) else None for v in row] for row in np.asarray(g["sigma"])]
        out[probe] = {"columns": list(g["columns"]), "params": list(g["params"]), "sigma": sigma}
    return out


def gain_text(probe: str, g: Mapping[str, Any]) -> str:
    """The multi-tracer gain table of one probe."""
    return (f"multi-tracer gain ({probe}): marginalized 1-sigma from each tracer alone (FKP), the naive sum "
            "of single-tracer Fishers, and the joint multi-tracer Fisher (priors included; '-': not constrained)\n"
            + format_table(["parameter", *g["columns"]], [[p, *(num(v) for v in row)]
                                                          for p, row in zip(g["params"], g["sigma"])]))


def spectra_comparisons(path: str, params: Sequence[str],
                        comparison: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """What the cross-covariance is worth, per probe of the file ``path`` that stored a
    spectra comparison (photometric 3x2pt): ``{probe: {"columns": [type...,
    "added_without_cross_covariance", "joint"], "params": [...], "sigma": [[float | None per
    column] per parameter], "fom_w0_wa": [float | None per column]}}`` (None: not constrained).
    ``comparison``: as for :func:`tracer_gains`."""
    from fishcast.io import read_spectra_comparison

    out = {}
    if comparison is None:
        comparison = read_spectra_comparison(path)
    if not comparison:
        return out
    from fishcast.probes.photometric import spectra_comparison

    for probe, comp in comparison.items():
        wanted = [p for p in params if p in comp["names"]]
        g = spectra_comparison(comp["names"], comp["matrices"], comp["prior"], wanted)
        sigma = [[float(v) if np.isfinite(v) else None for v in row] for row in np.asarray(g["sigma"])]
        fom = [float(v) if np.isfinite(v) else None for v in np.asarray(g["fom"])]
        out[probe] = {"columns": list(g["columns"]), "params": list(g["params"]), "sigma": sigma, "fom_w0_wa": fom}
    return out


def spectra_text(probe: str, g: Mapping[str, Any]) -> str:
    """The spectra comparison table of one probe: each spectrum type alone, added without
    cross-covariance, joint; a FoM(w0, wa) row where both are free."""
    labels = {"added_without_cross_covariance": "added", "joint": "joint"}
    rows = [[p, *(num(v) for v in row)] for p, row in zip(g["params"], g["sigma"])]
    if any(v is not None for v in g["fom_w0_wa"]):
        rows.append(["FoM(w0, wa)", *(num(v) for v in g["fom_w0_wa"])])
    return (f"spectra ({probe}): marginalized 1-sigma from each spectrum type alone, their Fishers added "
            "without cross-covariance ('added'), and the joint covariance ('joint'); priors included; "
            "'-': not constrained\n"
            + format_table(["parameter", *(labels.get(c, c) for c in g["columns"])], rows))


def show_document(path: str, c: Constraints, gains: Mapping[str, Any], meta: Mapping[str, Any],
                  spectra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``fishcast show --format json``: a JSON-safe document (non-finite numbers as null)."""
    doc = {"file": str(path), "parameters": c.rows, "fom_w0_wa": c.fom.get(("w0", "wa")),
           "multi_tracer_gain": dict(gains), "spectra_comparison": dict(spectra or {}),
           "fom": [{"params": list(k), "value": v} for k, v in c.fom.items()],
           "trust": str(meta.get("trust") or "ok"), "trust_reasons": list(meta.get("trust_reasons") or []),
           "warnings": c.warnings}
    return json_safe(doc)


def show_text(path: str, fisher, meta: Mapping[str, Any], params: Sequence[str] | None = None,
              pairs: Sequence[tuple[str, str]] = ()) -> tuple[str, Constraints]:
    """The default ``fishcast show`` text of a file read as ``(fisher, meta)`` (also printed by
    ``fishcast run`` after writing): the constraints table, the multi-tracer gains and the
    3x2pt spectra comparison (from ``meta`` when it was read with them,
    ``read_fisher(path, comparisons=True)``: the file is not opened again)."""
    c = constraints(fisher, params, pairs, meta.get("projected"), meta)
    text = constraints_text(path, c, meta)
    names = [r["name"] for r in c.rows]
    for probe, g in tracer_gains(path, names, meta.get("tracer_comparison")).items():
        text += "\n" + gain_text(probe, g)
    for probe, g in spectra_comparisons(path, names, meta.get("spectra_comparison")).items():
        text += "\n" + spectra_text(probe, g)
    return text, c


# ============================================================================ compare
def _read_data(path: str) -> dict[str, Any]:
    """Every dataset under /data of a forecast file, by path relative to /data."""
    from fishcast import io as fio

    out: dict[str, Any] = {}
    with fio.open_forecast(path) as f:
        if "data" not in f:
            raise FileFormatError(f"{path}: no /data group (compare --on data needs files written by fishcast run)")

        def visit(name, obj):
            if hasattr(obj, "shape") and hasattr(obj, "dtype"):
                out[name] = obj[()]

        f["data"].visititems(visit)
    return out


def _difference(quantity: str, param: str, a: Any, b: Any, abs_diff: float = math.nan,
                rel_diff: float = math.nan) -> dict[str, Any]:
    return {"quantity": quantity, "param": param, "a": a, "b": b, "abs_diff": abs_diff, "rel_diff": rel_diff}


def compare_arrays(key: str, x: Any, y: Any, rtol: float, atol: float) -> dict[str, Any] | None:
    """The difference row of the dataset ``key`` of two files (None when they agree): the
    number of elements outside ``|x - y| <= atol + rtol max(|x|, |y|)`` and the worst one.
    A non-finite element against a finite one (or inf against -inf, NaN against inf) is a
    difference, and the worst; NaN against NaN and inf against inf of the same sign agree."""
    from fishcast.fisher import within_tolerance

    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return _difference("data", key, f"shape {x.shape}", f"shape {y.shape}")
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        return None if np.array_equal(x, y) else _difference("data", key, "differs", "differs")
    ok = within_tolerance(x, y, rtol, atol)
    if np.all(ok):
        return None
    x, y = x.astype(float), y.astype(float)
    scale = np.maximum(np.abs(x), np.abs(y))
    finite = np.isfinite(x) & np.isfinite(y)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = np.where(finite & (scale > 0), np.abs(x - y) / np.where(scale > 0, scale, 1.0), 0.0)
    rel = np.where(finite, rel, np.inf)  # a non-finite mismatch is the worst
    rel = np.where(ok, -1.0, rel)
    k = np.unravel_index(int(np.argmax(rel)), x.shape) if x.ndim else ()
    where = f"{key}[{','.join(map(str, k))}]" if x.ndim else key
    xa, ya = float(x[k]), float(y[k])
    with np.errstate(invalid="ignore", over="ignore"):
        diff = abs(xa - ya)
    return _difference(f"data ({int(np.sum(~ok))} of {x.size} differ; worst)", where, xa, ya,
                       diff, float(rel[k]) if math.isfinite(rel[k]) else math.inf if math.isinf(diff) else math.nan)


def compare_data(a: str, b: str, rtol: float, atol: float) -> tuple[list[dict[str, Any]], int]:
    """Differences between the /data datasets of the files ``a`` and ``b`` (rows as
    :func:`fishcast.fisher.compare`), and the number of datasets compared."""
    da, db = _read_data(a), _read_data(b)
    rows: list[dict[str, Any]] = []
    for key in sorted(set(da) | set(db)):
        if key not in da or key not in db:
            rows.append(_difference("data", key, "present" if key in da else "absent",
                                    "present" if key in db else "absent"))
            continue
        row = compare_arrays(key, da[key], db[key], rtol, atol)
        if row is not None:
            rows.append(row)
    return rows, len(set(da) | set(db))


def compare_files(a: str, b: str, on: str, rtol: float, atol: float, load=None) -> tuple[list[dict[str, Any]], int]:
    """Differences between the forecast files ``a`` and ``b`` on ``sigma``, ``fisher`` or
    ``data`` (see ``fishcast compare --help``). ``load(path) -> (fisher, meta)`` reads a file
    (default :func:`fishcast.io.read_fisher`)."""
    if on == "data":
        return compare_data(a, b, rtol, atol)
    from fishcast.fisher import compare

    if load is None:
        from fishcast.io import read_fisher as load
    return compare(load(a)[0], load(b)[0], on=on, rtol=rtol, atol=atol)


def compare_text(a: str, b: str, on: str, rows: Sequence[Mapping[str, Any]], n: int, rtol: float, atol: float) -> str:
    """The verdict of ``fishcast compare``: agreement in one line, or the table of differences."""
    if not rows:
        return f"{a} and {b} agree on {on} within rtol={rtol:g}, atol={atol:g} ({n} quantities compared)"
    cell = lambda v: num(v, ".6g")  # noqa: E731
    body = [[r["quantity"], r["param"], cell(r["a"]), cell(r["b"]), num(r["abs_diff"], ".3g"), num(r["rel_diff"], ".3g")]
            for r in rows]
    return (f"{a} (A) and {b} (B) differ on {on}: {len(rows)} of {n} quantities outside rtol={rtol:g}, atol={atol:g}\n"
            + format_table(["quantity", "parameter", "A", "B", "abs_diff", "rel_diff"], body, "<"))


# ============================================================================ stability
#: what the "rungs" column means in each derivatives mode
_MODE_TEXT = {
    "adaptive": "only the rungs the plateau needed, from a start around the expected plateau",
    "sweep": "every rung of the ladder",
    "fixed": "one step, no ladder",
    "fast": "a known step and its neighbours",
}


def sweeps_text(sweeps: Sequence | Mapping) -> str:
    """The derivative-step table: one line per parameter, then notes on every parameter whose
    verdict is not a plain PASS."""
    items = list(sweeps.values()) if isinstance(sweeps, Mapping) else list(sweeps)
    body, notes = [], []
    for sw in items:
        body.append([sw.name, f"{sw.step:.4g}", sw.parameter_units or "-", f"{sw.relative_step:.3g}",
                     f"{sw.rungs_used}/{sw.search_rungs}", sw.claim, str(sw.plateau_width), f"{sw.spread:.2g}",
                     sw.stencil, f"{sw.verdict} ({sw.reason})"])
        if sw.verdict != "PASS" or sw.reason != "ok":
            notes.append(f"  {sw.name}: {sw.message}")
        if sw.stem_difference is not None:
            notes.append(f"  {sw.name}: SteM linear-fit cross-check differs by {sw.stem_difference:.2g}")
    lines = ["Derivative steps (plateau width in rungs; spread and changes in the data's own metric)",
             format_table(["parameter", "step", "unit", "rel. step", "rungs", "verdict rests on", "plateau", "spread",
                           "stencil", "verdict"], body, "<><>><>><<")]
    if items:
        lines.append(f"(plateau: rungs within {items[0].tol_pass:g}; PASS <= {items[0].tol_pass:g}, "
                     f"WARN <= {items[0].tol_warn:g}, else FAIL)")
        modes = sorted({sw.mode for sw in items})
        text = "; ".join(f"{m}: {_MODE_TEXT.get(m, m)}" for m in modes)
        lines.append(f"(rungs: evaluated / the ladder's; {text})")
        if any(sw.basis == "start" for sw in items):
            from .derivatives import START_MARGIN

            lines.append(f"(N-rung start: the adaptive start's rungs agree -- rung-to-rung change and fourth "
                         f"difference <= tol_pass / {START_MARGIN:g}; no window of the full sweep was evaluated; "
                         "derivatives.start_rungs: window judges on a window)")
    return "\n".join(lines + notes)


def _direction_text(lam: float, weights: Mapping[str, float]) -> str:
    parts = ", ".join(f"{n} ({w:+.2f})" for n, w in weights.items())
    return f"eigenvalue {lam:.3g}: {parts}"


def gaussian_lines(g) -> list[str]:
    """The Gaussian-validity part of the report (a :class:`fishcast.diagnostics.GaussianValidity`):
    its cost, Delta chi^2 per point, one row per direction with the widths of the true contour
    and the largest change of a marginalized error, the verdict and the notes."""
    kinds = tuple(getattr(g, "kinds", ()) or ())
    if any(k in ("cosmological", "nuisance") for k in kinds):
        along = ("the principal directions of the marginalized cosmological errors (nuisances at their conditional "
                 "best fit) and of the nuisances (cosmology fixed)")
    else:
        along = "principal directions"
    out = [f"Gaussian validity: Delta chi^2 at +-{g.n_sigma:g} sigma along {along} (Fisher: {g.n_sigma**2:g})"]
    if g.status:
        out.append("  cost: " + g.cost_text())
    out.append("  " + "  ".join(f"{lab}: {'-' if np.isnan(v) else format(v, '.3g')}" for lab, v in zip(g.labels, g.delta_chi2)))
    if g.direction_verdicts and g.sigma_change is not None:
        interest = np.array(g.of_interest, dtype=bool) if g.of_interest else np.ones(len(g.names), dtype=bool)
        rows = []
        for j, verdict in enumerate(g.direction_verdicts):
            w = [g.width_ratio[i] if i < len(g.width_ratio) else np.nan for i in (2 * j, 2 * j + 1)]
            ch = np.where(interest, np.abs(g.sigma_change[j]), np.nan)
            if np.all(np.isnan(ch)):
                big = "-"
            else:
                k = int(np.nanargmax(ch))
                big = f"sigma({g.names[k]}) {g.sigma_change[j][k]:+.1%}"
            kind = {"cosmological": "cosmology", "nuisance": "nuisances"}.get(kinds[j] if j < len(kinds) else "", "")
            rows.append([str(j) + (f" ({kind})" if kind else ""), ", ".join(g.dominant(j)), num(w[0], ".3g"),
                         num(w[1], ".3g"), big, verdict])
        out.append(format_table(["dir", "dominated by", "width +", "width -", "largest change of a sigma", "verdict"],
                                rows, "<<>><<", indent="  "))
        out.append("  (width: where the true Delta chi^2 = n_sigma^2 contour lies along each side, against the "
                   "Fisher one; change of a sigma: that direction's true width put into the covariance)")
    tol = f"flag when |Delta chi^2/{g.n_sigma**2:g} - 1| > {g.tolerance:g}"
    if not math.isnan(g.sigma_tolerance):
        tol += f"; WARN when a flagged direction moves a cosmological sigma by > {g.sigma_tolerance:.0%}, else a note"
    out.append(f"  verdict: {g.verdict} ({tol})" + (": " + "; ".join(g.reasons) if g.reasons else ""))
    out.extend(f"  note: {n}" for n in g.notes)
    return out


def diagnostics_text(sweeps: Sequence | Mapping | None = None, conditioning=None, stability=None,
                     gaussian=None, projection=None) -> str:
    """The full stability report (``run``, ``stability``): the derivative-step table, then the
    conditioning of the Fisher matrix, the stability of the marginalized errors, the
    projected directions and the Gaussian-validity check, each with its verdict."""
    out = []
    if sweeps:
        out.append(sweeps_text(sweeps))
    if conditioning is not None:
        c = conditioning
        t = c.thresholds
        out.append("Fisher matrix conditioning")
        out.append(f"  symmetry error |F-F^T|/|F|     {c.symmetry_error:.2g}")
        out.append(f"  cond(R), correlation form       {c.cond_R:.3g}   (warn > {t.cond_warn:g}, refuse > {t.cond_refuse:g})")
        out.append(f"  cond(F) (unit-dependent)        {c.cond_F:.3g}")
        out.append(f"  Cholesky of R                   {'ok' if c.cholesky_ok else 'FAILED'}")
        out.append(f"  inversion residual max|R R^-1 - I|  {c.inversion_residual:.2g}")
        out.append("  weakest directions of R:")
        for lam, w in c.weak_directions:
            out.append("    " + _direction_text(lam, w))
        out.append(f"  verdict: {c.verdict}" + (": " + "; ".join(c.reasons) if c.reasons else ""))
    if stability is not None:
        s = stability
        out.append("Stability of marginalized errors (derivatives one rung up/down; noise at the plateau spread)")
        out.append(format_table(["parameter", "sigma", "rungs", "noise", "worst case"],
                                [[nm, f"{s.sigma[j]:.4g}", f"{s.rung_change[j]:.2%}", f"{s.noise_change[j]:.2%}",
                                  str(s.worst_case[j])] for j, nm in enumerate(s.names)], "<>>><", indent="  "))
        out.append(f"  verdict: {s.verdict} (warn > {s.thresholds.stability_warn:.0%}, fail > {s.thresholds.stability_fail:.0%})"
                   + (": " + "; ".join(s.reasons) if s.reasons else ""))
    if projection is not None:
        out.append("Projected out (--allow-degenerate): " + projection.note)
        for w in projection.removed:
            out.append("    " + ", ".join(f"{k} ({v:+.2f})" for k, v in w.items()))
    if gaussian is not None:
        out.extend(gaussian_lines(gaussian))
    return "\n".join(out)


def _sweeps_in(group, read_sweeps) -> dict:
    """Sweeps directly in ``group``, or one level down (``/derivatives/<probe>/<param>``)."""
    if "names" in group.attrs or any(group[k].attrs.get("fishcast_type") == "ParameterSweep" for k in group):
        return read_sweeps(group)
    out = {}
    for key in group:
        for name, sw in read_sweeps(group[key]).items():
            out[f"{key}/{name}" if name in out or len(group) > 1 else name] = sw
    return out


def read_stability(path) -> tuple[dict, dict]:
    """The derivative sweeps (label -> ParameterSweep) and the diagnostics reports stored in
    the forecast file ``path``; FileFormatError when it has neither or they cannot be read."""
    from fishcast.io import open_forecast
    from fishcast.io.diagnostics import read_diagnostics
    from fishcast.io.sweeps import read_sweeps

    try:
        with open_forecast(path, require_schema=False) as h:  # refuses a newer schema_version
            if "derivatives" not in h and "diagnostics" not in h:
                raise FileFormatError(f"{path}: no /derivatives or /diagnostics group (not a fishcast forecast file?)")
            sweeps = _sweeps_in(h["derivatives"], read_sweeps) if "derivatives" in h else {}
            diags = read_diagnostics(h["diagnostics"]) if "diagnostics" in h else {}
    except FishcastError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise FileFormatError(f"{path}: cannot read the stability data: {exc}") from exc
    return sweeps, diags


def stability_report(path) -> tuple[dict, str]:
    """The sweeps of the forecast file ``path`` and its stability report text
    (``fishcast stability``). FileFormatError for a file that is not a forecast file, or
    whose stored reports have values of the wrong kind."""
    from fishcast.io.reading import check_regular

    check_regular(path, "fishcast HDF5 file")  # missing, a FIFO, a folder: said as such
    sweeps, diags = read_stability(path)
    try:
        text = diagnostics_text(sweeps, diags.get("conditioning"), diags.get("error_stability"),
                                diags.get("gaussian_validity"), diags.get("projection"))
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:  # values of the wrong kind
        raise FileFormatError(f"{path}: unexpected content in /derivatives or /diagnostics: "
                              f"{type(exc).__name__}: {exc}") from None
    return sweeps, text


# ============================================================================ batch
def batch_text(res) -> str:
    """The summary of a finished batch (:class:`fishcast.pipeline.batch.BatchResult`): counts,
    cosmology points, one row per design (its axis values, FoM and trust), what was written."""
    s = res.stats
    n = len(res.designs) + len(res.failed)
    labels = list(res.grid.labels)
    rows = [[d.name, *(num(d.values.get(k), ".6g") for k in labels), num(d.fom), d.trust] for d in res.designs]
    rows += [[f.name, *(num(f.values.get(k), ".6g") for k in labels), "-", f"FAILED ({f.stage})"] for f in res.failed]
    out = [f"{res.grid.name}: {n} designs, {len(res.designs)} finished, {len(res.failed)} failed "
           f"[{res.executor}, {res.timings.get('total', 0):.1f} s]",
           f"cosmology points: {s.points} distinct, {s.cache_hits} from the cache, {s.computed} computed "
           f"({s.boltzmann_calls} Boltzmann runs)"]
    if rows:
        out.append(format_table(["design", *labels, "FoM", "trust"], rows, "<" + ">" * (len(labels) + 1) + "<"))
    out.append(f"written: {res.output}/<design>.h5, {res.summary_h5.name}, {res.summary_csv.name}"
               + (f", {res.plot.name}" if res.plot else ""))
    if res.plot_note:
        out.append(f"plot: {res.plot_note}")
    return "\n".join(out)


# ============================================================================ simulations
def simfisher_sigma_text(names: Sequence[str], columns: Mapping[str, Sequence[float]],
                         reference: Sequence[float] | None = None) -> str:
    """The marginalized 1-sigma errors of every estimator of ``fishcast simfisher`` (one
    column per estimator, ``reference``: those of a known Fisher matrix), in the units of
    each parameter."""
    head = ["parameter", *columns] + (["reference"] if reference is not None else [])
    rows = [[n, *(num(columns[c][i], ".5g") for c in columns)] + ([num(reference[i], ".5g")] if reference is not None else [])
            for i, n in enumerate(names)]
    return format_table(head, rows)


def convergence_text(path: str, info: Mapping[str, Any]) -> str:
    """``fishcast convergence``: per parameter, the errors of the standard, compressed and
    combined estimators against the number N_d of derivative simulations, then the verdict
    (``info`` as :func:`fishcast.io.simulations.read_simfisher` returns it)."""
    conv, names, attrs = info["convergence"], info["names"], info["attrs"]
    n = conv["n_derivative"]
    estimators = ("standard", "compressed", "combined")
    out = [f"{path}: errors against the number of derivative simulations per parameter and side"]
    for i, name in enumerate(names):
        out.append(f"  {name}")
        out.append(format_table(["N_d", *estimators],
                                [[str(int(n[k])), *(num(conv[f"{e}_sigma"][k, i], ".5g") for e in estimators)]
                                 for k in range(len(n))], ">", indent="    "))
    out.append(f"bracket ~ N_d^-{info['alpha']:.2g}; simfisher {attrs.get('verdict')} ({attrs.get('reason')}): "
               f"{attrs.get('message')}")
    return "\n".join(out)


def simfisher_verdict(verdict: str, allow_unconverged: bool) -> tuple[str | None, int]:
    """The closing message and exit status of ``fishcast simfisher`` (the file is written either way)."""
    if verdict == "FAIL" and not allow_unconverged:
        return ("fishcast: the simulations have not converged (see above); exit 3. "
                "Use --allow-unconverged to accept it.", EXIT_UNTRUSTED)
    return None, 0
