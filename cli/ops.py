"""Working with forecasts: show, combine, prior, fix, marginalize, derive, compare, plot,
export, import.

Thin: parse options, call :mod:`fishcast.fisher` / :mod:`fishcast.io` /
:mod:`fishcast.io.exchange` / :mod:`fishcast.plotting`, print. Every derived file keeps the
provenance chain (each input's SHA-256 and the operations applied) in its root attribute
``provenance``, and inherits the worst stability verdict (``trust``) of its inputs.

Exit statuses: 0 success; 1 ``compare`` found differences; 2 bad input (missing or
unreadable file, not a fishcast file, unknown parameter, bad option); 3 the Fisher matrix
cannot be inverted (degenerate) where a command needs its inverse.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from .errors import handle_errors

#: Condition number of the correlation form above which ``show`` warns (derivkit's threshold;
#: inversion itself refuses above fishcast.fisher.COND_LIMIT).
COND_WARN = 1e12

_TRUST_ORDER = {"ok": 0, "warn": 1, "fail": 2}


# ---------------------------------------------------------------------- helpers
def _split_names(value: str | tuple[str, ...] | None) -> list[str]:
    """``"a,b"`` or repeated options -> ``["a", "b"]``."""
    if not value:
        return []
    parts = value if isinstance(value, (tuple, list)) else (value,)
    return [n.strip() for p in parts for n in p.split(",") if n.strip()]


def _load(path: str):
    """Read a fishcast file; its provenance gains a ``read`` step with the file's hash."""
    from fishcast import io as fio

    fisher, meta = fio.read_fisher(path)
    fisher = fisher.with_provenance({"operation": "read", "file": str(path),
                                     "sha256": fio.file_sha256(path)})
    return fisher, meta


def _fixed_fiducials(path: str) -> dict[str, float]:
    """Fiducials of every model parameter (free or fixed) from the file's /fiducial group."""
    from fishcast import io as fio

    with fio.open_forecast(path) as f:
        if "fiducial" not in f:
            return {}
        return {str(k): float(v) for k, v in f["fiducial"].attrs.items()}


def _merge_trust(inputs: list[tuple[str, dict]]) -> dict[str, Any]:
    """Worst verdict of the inputs; reasons prefixed with the file they come from."""
    trust, reasons = "ok", []
    for path, meta in inputs:
        t = str(meta.get("trust") or "ok")
        if _TRUST_ORDER.get(t, 1) > _TRUST_ORDER.get(trust, 1):
            trust = t
        reasons += [f"{path}: {r}" for r in meta.get("trust_reasons") or []]
    return {"trust": trust, "trust_reasons": reasons}


def _write(output: str, fisher, inputs: list[tuple[str, dict]], probes=None) -> None:
    from fishcast import io as fio

    meta = _merge_trust(inputs)
    fiducial_all: dict[str, float] = {}
    for _, m in inputs:  # fixed parameters' fiducials travel with the derived file
        for k, v in (m.get("fiducial_all") or {}).items():
            fiducial_all.setdefault(k, v)
    meta["fiducial_all"] = fiducial_all
    fio.write_fisher_file(output, fisher, probes=probes or None, meta=meta)
    click.echo(f"wrote {output}")


def _check_output(output: str) -> None:
    from fishcast import io as fio

    fio.check_output_path(output)


def _num(x: float | None, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt)


def _pct(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.3g}%"


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


# ---------------------------------------------------------------------- show
def _constraints(fisher, params: list[str], pairs: list[tuple[str, str]], projected: dict | None = None
                 ) -> tuple[list[dict], dict[tuple[str, str], float], list[str], bool]:
    """Rows of the constraints table, the figures of merit of ``pairs`` (and of (w0, wa) when
    both are free), warnings, and whether the matrix is degenerate. ``projected``: the file's
    constraints with degenerate directions projected out (``run --allow-degenerate``), shown
    instead of nothing, with a warning."""
    from fishcast.errors import DegenerateFisherError

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
    for a, b in pairs:  # unknown names are bad input even when the matrix is degenerate
        fisher.index(a), fisher.index(b)
    if "w0" in fisher and "wa" in fisher and ("w0", "wa") not in pairs:
        pairs = [("w0", "wa")] + list(pairs)
    fom = {}
    exact = marg is not None and not (projected is not None and warnings)
    if exact:
        fom = {(a, b): fisher.figure_of_merit(a, b) for a, b in pairs}
    if exact:
        k = fisher.condition_number()
        if k > COND_WARN:
            warnings.append(f"condition number of the correlation form {k:.3g} > {COND_WARN:g}: "
                            "the marginalized errors are sensitive to small errors in F")
    return rows, fom, warnings, degenerate


def _table(path: str, rows: list[dict], fom, meta: dict, warnings: list[str]) -> str:
    head = ["parameter", "fiducial", "sigma_marg", "rel_marg", "sigma_cond", "rel_cond", "units"]
    body = [[r["name"], _num(r["fiducial"], ".6g"), _num(r["sigma_marginalized"]), _pct(r["relative_marginalized"]),
             _num(r["sigma_conditional"]), _pct(r["relative_conditional"]), r["units"] or ""] for r in rows]
    widths = [max(len(h), *(len(b[k]) for b in body)) for k, h in enumerate(head)]
    align = ["<", ">", ">", ">", ">", ">", "<"]

    def line(cells):
        return "  ".join(format(c, f"{a}{w}") for c, a, w in zip(cells, align, widths)).rstrip()

    out = [f"{path}" + (f"  (survey: {meta['survey_name']})" if meta.get("survey_name") else ""),
           line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    out.append("(1-sigma; marg: all other free parameters marginalized; cond: all others fixed; "
               "rel: sigma / |fiducial|)")
    for (a, b), v in fom.items():
        out.append(f"FoM({a}, {b}) = {v:.4g}   [DETF: 1/sqrt(det Cov({a}, {b}))]")
    trust = str(meta.get("trust") or "ok")
    out.append(f"trust: {trust}")
    out += [f"WARNING: {w}" for w in warnings]
    return "\n".join(out)


def _latex(path: str, rows: list[dict], fom, warnings: list[str]) -> str:
    from fishcast.io.exchange import latex_name

    out = [f"% fishcast show {path}", r"\begin{tabular}{lrrrrr}", r"\hline",
           r"Parameter & Fiducial & $\sigma_{\rm marg}$ & $\sigma_{\rm marg}/|\theta|$ & "
           r"$\sigma_{\rm cond}$ & $\sigma_{\rm cond}/|\theta|$ \\", r"\hline"]
    for r in rows:
        cells = [f"${latex_name(r['name'])}$", _num(r["fiducial"], ".6g"), _num(r["sigma_marginalized"]),
                 _pct(r["relative_marginalized"]).replace("%", r"\%"), _num(r["sigma_conditional"]),
                 _pct(r["relative_conditional"]).replace("%", r"\%")]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\hline", r"\end{tabular}"]
    for (a, b), v in fom.items():
        out.append(f"% FoM({a}, {b}) = {v:.4g}")
    out += [f"% WARNING: {w}".replace("\n", "\n% ") for w in warnings]
    return "\n".join(out)


def _tracer_gains(file: str, params: list[str]) -> dict[str, dict]:
    """The multi-tracer gain of each probe that stored a tracer comparison."""
    from fishcast.io import read_tracer_comparison
    from fishcast.probes.multitracer_clustering import tracer_gain

    out = {}
    for probe, comp in read_tracer_comparison(file).items():
        wanted = [p for p in params if p in comp["names"]]
        out[probe] = tracer_gain(comp["names"], comp["joint"], comp["single"], comp["tracers"],
                                 comp["prior"], wanted)
    return out


def _gain_table(probe: str, g: dict) -> str:
    head = ["parameter"] + [f"{c}" for c in g["columns"]]
    body = [[p] + [_num(v) if np.isfinite(v) else "-" for v in row] for p, row in zip(g["params"], g["sigma"])]
    widths = [max(len(h), *(len(b[k]) for b in body)) if body else len(h) for k, h in enumerate(head)]

    def line(cells):
        return "  ".join(format(c, ("<" if k == 0 else ">") + str(w)) for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"multi-tracer gain ({probe}): marginalized 1-sigma from each tracer alone (FKP), the naive sum "
           "of single-tracer Fishers, and the joint multi-tracer Fisher (priors included; '-': not constrained)",
           line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


def show_table(file: str) -> str:
    """The default ``fishcast show FILE`` table (used by ``fishcast run`` after writing)."""
    fisher, meta = _load(file)
    rows, fom, warnings, _ = _constraints(fisher, list(fisher.names), [], meta.get("projected"))
    trust = str(meta.get("trust") or "ok")
    if trust != "ok":
        reasons = meta.get("trust_reasons") or []
        warnings.insert(0, f"stability verdict {trust.upper()}: the forecast is not to be trusted"
                        + (": " + "; ".join(map(str, reasons)) if reasons else ""))
    text = _table(file, rows, fom, meta, warnings)
    for probe, g in _tracer_gains(file, list(fisher.names)).items():
        text += "\n" + _gain_table(probe, g)
    return text


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--params", default=None, help="Comma-separated parameters to list [default: all free].")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "latex"]), default="table", show_default=True)
@click.option("--fom", "foms", multiple=True, metavar="A,B",
              help="Also print the DETF figure of merit 1/sqrt(det Cov(A, B)) of this pair; repeatable.")
@handle_errors
def show(file, params, fmt, foms):
    """Print the constraints of FILE: every free parameter with its fiducial, marginalized and
    conditional 1-sigma errors (absolute and relative), the w0-wa figure of merit where both
    are free (and of any pair given with --fom), and any warning that the forecast is not to
    be trusted (its stability verdict, root attributes trust / trust_reasons).

    Exit status: 0; 2 bad input; 3 the Fisher matrix is degenerate (conditional errors are
    printed, marginalized ones cannot be).
    """
    fisher, meta = _load(file)
    names = _split_names(params) or list(fisher.names)
    pairs = []
    for item in foms:
        pair = _split_names(item)
        if len(pair) != 2 or pair[0] == pair[1]:
            raise click.BadParameter(f"{item!r}: expected two different parameters A,B", param_hint="--fom")
        pairs.append((pair[0], pair[1]))
    rows, fom, warnings, degenerate = _constraints(fisher, names, pairs, meta.get("projected"))
    trust = str(meta.get("trust") or "ok")
    if trust != "ok":
        reasons = meta.get("trust_reasons") or []
        warnings.insert(0, f"stability verdict {trust.upper()}: the forecast is not to be trusted"
                        + (": " + "; ".join(map(str, reasons)) if reasons else ""))
    gains = _tracer_gains(file, names)
    if fmt == "json":
        doc = {"file": str(file), "parameters": rows, "fom_w0_wa": fom.get(("w0", "wa")),
               "multi_tracer_gain": {probe: {"columns": g["columns"], "params": g["params"],
                                             "sigma": g["sigma"].tolist()} for probe, g in gains.items()},
               "fom": [{"params": list(k), "value": v} for k, v in fom.items()], "trust": trust,
               "trust_reasons": meta.get("trust_reasons") or [], "warnings": warnings}
        click.echo(json.dumps(_json_safe(doc), indent=2))
    elif fmt == "latex":
        click.echo(_latex(file, rows, fom, warnings))
    else:
        click.echo(_table(file, rows, fom, meta, warnings))
        for probe, g in gains.items():
            click.echo(_gain_table(probe, g))
    if degenerate:
        sys.exit(3)


# ---------------------------------------------------------------------- derived files
@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--force", is_flag=True, help="Combine even if fiducials or units of shared parameters differ "
              "(the first file's values are kept; the disagreement is recorded in the provenance).")
@handle_errors
def combine(files, output, force):
    """Add the Fisher matrices of independent FILES (aligned by parameter name; a parameter
    missing from a file is unconstrained by it) and write OUTPUT."""
    if len(files) < 2:
        raise click.UsageError("combine needs at least two files")
    _check_output(output)
    loaded = [(f, *_load(f)) for f in files]
    total = loaded[0][1]
    for _, fisher, _ in loaded[1:]:
        total = total.combine(fisher, force=force)
    probes: dict = {}
    for k, (_, _, meta) in enumerate(loaded):
        for pname, pf in (meta.get("probes") or {}).items():
            probes[pname if pname not in probes else f"{pname}_{k + 1}"] = pf
    partial = [n for n in total.names if not all(n in fisher for _, fisher, _ in loaded)]
    if partial:
        click.echo(f"aligned by name; not in every file (unconstrained where absent): {', '.join(partial)}")
    _write(output, total, [(f, m) for f, _, m in loaded], probes)


def _parse_prior(item: str) -> tuple[str, float]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"{item!r}: expected name=sigma, e.g. h=0.01", param_hint="--gaussian")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise click.BadParameter(f"{item!r}: sigma {value!r} is not a number", param_hint="--gaussian") from None


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--gaussian", "gaussian", multiple=True, required=True, metavar="NAME=SIGMA",
              help="Gaussian prior of 1-sigma SIGMA (in the parameter's units) on NAME; repeatable.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@handle_errors
def prior(file, gaussian, output):
    """Add independent Gaussian priors to FILE's Fisher matrix and write OUTPUT."""
    priors: dict[str, float] = {}
    for item in gaussian:
        name, sigma = _parse_prior(item)
        if name in priors:
            raise click.BadParameter(f"two priors on {name}", param_hint="--gaussian")
        priors[name] = sigma
    _check_output(output)
    fisher, meta = _load(file)
    _write(output, fisher.add_prior(priors), [(file, meta)], meta.get("probes"))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--params", required=True, help="Comma-separated parameters to fix at their fiducials.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@handle_errors
def fix(file, params, output):
    """Fix parameters of FILE at their fiducial values (drop their rows) and write OUTPUT."""
    names = _split_names(params)
    _check_output(output)
    fisher, meta = _load(file)
    fixed = fisher.fix(names)
    probes = {}
    for pname, pf in (meta.get("probes") or {}).items():
        drop = [n for n in names if n in pf]
        if len(drop) < len(pf):
            probes[pname] = pf.fix(drop) if drop else pf
    _write(output, fixed, [(file, meta)], probes)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--keep", required=True, help="Comma-separated parameters to keep; all others are marginalized.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@handle_errors
def marginalize(file, keep, output):
    """Marginalize FILE over every parameter not in --keep and write OUTPUT (the Fisher matrix
    of the kept parameters, inverse of their covariance block)."""
    names = _split_names(keep)
    _check_output(output)
    fisher, meta = _load(file)
    _write(output, fisher.marginalize(names), [(file, meta)])


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "to", multiple=True, required=True,
              help="Derived parameter(s), comma-separated or repeated: S8, H0, ombh2, omch2, omh2, "
                   "Omega_c, A_s_1e9, logA.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@handle_errors
def derive(file, to, output):
    """Reparametrize FILE with the Jacobian of derived parameters (S8 = sigma8 sqrt(Omega_m/0.3)
    replaces sigma8, H0 = 100 h replaces h, ...) and write OUTPUT."""
    targets = _split_names(to)
    _check_output(output)
    fisher, meta = _load(file)
    fixed = {k: v for k, v in _fixed_fiducials(file).items() if k not in fisher}
    _write(output, fisher.derive(targets, fixed=fixed), [(file, meta)])


# ---------------------------------------------------------------------- compare
def _read_data(path: str) -> dict[str, Any]:
    """Every dataset under /data, by path relative to /data."""
    from fishcast import io as fio
    from fishcast.errors import FileFormatError

    out: dict[str, Any] = {}
    with fio.open_forecast(path) as f:
        if "data" not in f:
            raise FileFormatError(f"{path}: no /data group (compare --on data needs files written by fishcast run)")

        def visit(name, obj):
            if hasattr(obj, "shape") and hasattr(obj, "dtype"):
                out[name] = obj[()]

        f["data"].visititems(visit)
    return out


def _compare_data(a: str, b: str, rtol: float, atol: float) -> tuple[list[dict], int]:
    import numpy as np

    from fishcast.fisher import within_tolerance

    da, db = _read_data(a), _read_data(b)
    rows: list[dict] = []
    for key in sorted(set(da) | set(db)):
        if key not in da or key not in db:
            rows.append({"quantity": "data", "param": key, "a": "present" if key in da else "absent",
                         "b": "present" if key in db else "absent", "abs_diff": math.nan, "rel_diff": math.nan})
            continue
        x, y = np.asarray(da[key]), np.asarray(db[key])
        if x.shape != y.shape:
            rows.append({"quantity": "data", "param": key, "a": f"shape {x.shape}", "b": f"shape {y.shape}",
                         "abs_diff": math.nan, "rel_diff": math.nan})
            continue
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            if not np.array_equal(x, y):
                rows.append({"quantity": "data", "param": key, "a": "differs", "b": "differs",
                             "abs_diff": math.nan, "rel_diff": math.nan})
            continue
        ok = within_tolerance(x, y, rtol, atol)
        if not np.all(ok):
            x, y = x.astype(float), y.astype(float)
            scale = np.maximum(np.abs(x), np.abs(y))
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(scale > 0, np.abs(x - y) / scale, 0.0)
            rel = np.where(ok, -1.0, rel)
            k = np.unravel_index(int(np.nanargmax(rel)), x.shape) if x.ndim else ()
            where = f"{key}[{','.join(map(str, k))}]" if x.ndim else key
            rows.append({"quantity": f"data ({int(np.sum(~ok))} of {x.size} differ; worst)", "param": where,
                         "a": float(x[k]), "b": float(y[k]), "abs_diff": float(abs(x[k] - y[k])),
                         "rel_diff": float(rel[k])})
    return rows, len(set(da) | set(db))


def _fmt_cell(v: Any) -> str:
    return _num(v, ".6g") if isinstance(v, float) else str(v)


@click.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-3, show_default=True, help="Relative tolerance.")
@click.option("--atol", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Absolute tolerance.")
@click.option("--on", "on", type=click.Choice(["sigma", "fisher", "data"]), default="sigma", show_default=True,
              help="sigma: fiducials, marginalized and conditional errors, w0-wa FoM; fisher: every "
                   "element F_ij, judged relative to sqrt(F_ii F_jj); data: every dataset under /data.")
@handle_errors
def compare(a, b, rtol, atol, on):
    """Check that forecasts A and B agree: |x_A - x_B| <= atol + rtol * max(|x_A|, |x_B|) for
    every compared quantity (parameters matched by name).

    Exit status: 0 within tolerance; 1 they differ (a table names each quantity and parameter);
    2 bad input (missing or unreadable file, not a fishcast file); 3 a Fisher matrix cannot be
    inverted (--on sigma).
    """
    from fishcast.fisher import compare as compare_fishers

    if on == "data":
        rows, n = _compare_data(a, b, rtol, atol)
    else:
        fa, _ = _load(a)
        fb, _ = _load(b)
        rows, n = compare_fishers(fa, fb, on=on, rtol=rtol, atol=atol)
    if not rows:
        click.echo(f"{a} and {b} agree on {on} within rtol={rtol:g}, atol={atol:g} ({n} quantities compared)")
        return
    head = ["quantity", "parameter", "A", "B", "abs_diff", "rel_diff"]
    body = [[r["quantity"], r["param"], _fmt_cell(r["a"]), _fmt_cell(r["b"]), _num(r["abs_diff"], ".3g"),
             _num(r["rel_diff"], ".3g")] for r in rows]
    widths = [max(len(h), *(len(x[k]) for x in body)) for k, h in enumerate(head)]
    click.echo(f"{a} (A) and {b} (B) differ on {on}: {len(rows)} of {n} quantities outside "
               f"rtol={rtol:g}, atol={atol:g}")
    for cells in [head, ["-" * w for w in widths]] + body:
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    sys.exit(1)


# ---------------------------------------------------------------------- plot, export, import
@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Figure to write; the format follows the extension (.pdf, .png, .svg).")
@click.option("--params", default=None, help="Comma-separated parameters [default: those common to all files].")
@click.option("--labels", default=None, help="Comma-separated legend labels [default: the file names].")
@handle_errors
def plot(files, output, params, labels):
    """Triangle plot of FILES overlaid: 1- and 2-sigma ellipses drawn from each covariance,
    1D marginals on the diagonal, a legend naming each file. Needs matplotlib
    (pip install 'fishcast[plot]')."""
    from fishcast.plotting import triangle_plot

    label_list = _split_names(labels) if labels else list(files)
    if len(label_list) != len(files):
        raise click.BadParameter(f"{len(label_list)} labels for {len(files)} files", param_hint="--labels")
    forecasts = [_load(f)[0] for f in files]
    triangle_plot(forecasts, label_list, output, params=_split_names(params) or None)
    click.echo(f"wrote {output}")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "fmt", type=click.Choice(["getdist", "cosmosis", "text"]), required=True)
@click.option("-o", "--output", default=None, help="Output base name, without extension [default: FILE without .h5].")
@handle_errors
def export(file, fmt, output):
    """Write FILE's Fisher matrix for another code. getdist: BASE.paramnames, BASE.covmat
    (covariance, '# names' header) and BASE.fisher; cosmosis: BASE.txt as its Fisher sampler
    writes it; text: BASE.txt and BASE.paramnames (readable by fishcast import)."""
    from fishcast.io.exchange import export as export_fisher

    fisher, _ = _load(file)
    base = output if output is not None else str(Path(file).with_suffix(""))
    for p in export_fisher(fisher, fmt, base):
        click.echo(f"wrote {p}")


@click.command("import")
@click.argument("matrix", type=click.Path(dir_okay=False))
@click.option("--paramnames", type=click.Path(dir_okay=False), default=None,
              help="Parameter names, one per line in matrix order: 'name [latex] [fiducial]' "
                   "[default: names from a '# a b c' header in MATRIX].")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--keep-names", is_flag=True, help="Do not rename other codes' names (Omegam, ns, aIA, ...) "
              "to fishcast's canonical ones.")
@handle_errors
def import_(matrix, paramnames, output, keep_names):
    """Import a text Fisher matrix as IST:F and CosmicFish write them (whitespace-separated
    square matrix, '#' comments) into a fishcast HDF5 file."""
    from fishcast.io.exchange import read_text_fisher

    _check_output(output)
    fisher = read_text_fisher(matrix, paramnames, canonical=not keep_names)
    renamed = fisher.provenance[-1].get("renamed")
    if renamed:
        click.echo("renamed: " + ", ".join(f"{k} -> {v}" for k, v in renamed.items()))
    _write(output, fisher, [])


COMMANDS = [show, combine, prior, fix, marginalize, derive, compare, plot, export, import_]
