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
import sys
from pathlib import Path

import click


# ---------------------------------------------------------------------- helpers
def _split_names(value: str | tuple[str, ...] | None) -> list[str]:
    """``"a,b"`` or repeated options -> ``["a", "b"]``."""
    if not value:
        return []
    parts = value if isinstance(value, (tuple, list)) else (value,)
    return [n.strip() for p in parts for n in p.split(",") if n.strip()]


def _load(path: str, comparisons: bool = False):
    """Read a fishcast file; its provenance gains a ``read`` step with the file's hash.
    ``comparisons``: the multi-tracer and spectra comparisons too (in ``meta``, read while
    the file is open: see :func:`fishcast.io.read_fisher`)."""
    from fishcast import io as fio

    fisher, meta = fio.read_fisher(path, comparisons=comparisons)
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


def _write(output: str, fisher, inputs: list[tuple[str, dict]], probes=None, sources=()) -> None:
    """Write a derived file: the inputs' worst verdict and every fiducial travel with it; never
    over one of the files read (``sources``, default the inputs' paths)."""
    from fishcast import io as fio
    from fishcast.report import derived_meta

    fio.write_fisher_file(output, fisher, probes=probes or None, meta=derived_meta(inputs),
                          inputs=list(sources) or [p for p, _ in inputs])
    click.echo(f"wrote {output}")


def _check_output(output: str, inputs=()) -> None:
    """Refuse, before reading anything, an output that is a special file or one of ``inputs``."""
    from fishcast import io as fio

    fio.check_output_path(output, inputs)


# ---------------------------------------------------------------------- show
@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--params", default=None, help="Comma-separated parameters to list [default: all free].")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "latex"]), default="table", show_default=True)
@click.option("--fom", "foms", multiple=True, metavar="A,B",
              help="Also print the DETF figure of merit 1/sqrt(det Cov(A, B)) of this pair; repeatable.")
def show(file, params, fmt, foms):
    """Print the constraints of FILE: every free parameter with its fiducial, marginalized and
    conditional 1-sigma errors (absolute and relative), the w0-wa figure of merit where both
    are free (and of any pair given with --fom), and any warning that the forecast is not to
    be trusted (its stability verdict, root attributes trust / trust_reasons).

    Exit status: 0; 2 bad input; 3 the Fisher matrix is degenerate (conditional errors are
    printed, marginalized ones cannot be).
    """
    from fishcast import report

    fisher, meta = _load(file, comparisons=True)  # the file is opened once
    names = _split_names(params) or list(fisher.names)
    pairs = []
    for item in foms:
        pair = _split_names(item)
        if len(pair) != 2 or pair[0] == pair[1]:
            raise click.BadParameter(f"{item!r}: expected two different parameters A,B", param_hint="--fom")
        pairs.append((pair[0], pair[1]))
    if fmt == "table":
        text, c = report.show_text(file, fisher, meta, names, pairs)
    else:
        c = report.constraints(fisher, names, pairs, meta.get("projected"), meta)
        if fmt == "json":
            text = json.dumps(report.show_document(
                file, c, report.tracer_gains(file, names, meta.get("tracer_comparison")), meta,
                report.spectra_comparisons(file, names, meta.get("spectra_comparison"))), indent=2)
        else:
            text = report.constraints_latex(file, c)
    click.echo(text)
    if c.degenerate:
        sys.exit(3)


# ---------------------------------------------------------------------- derived files
@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--force", is_flag=True, help="Combine even if fiducials or units of shared parameters differ "
              "(the first file's values are kept; the disagreement is recorded in the provenance).")
def combine(files, output, force):
    """Add the Fisher matrices of independent FILES (aligned by parameter name; a parameter
    missing from a file is unconstrained by it) and write OUTPUT."""
    if len(files) < 2:
        raise click.UsageError("combine needs at least two files")
    _check_output(output, files)
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
def prior(file, gaussian, output):
    """Add independent Gaussian priors to FILE's Fisher matrix and write OUTPUT."""
    priors: dict[str, float] = {}
    for item in gaussian:
        name, sigma = _parse_prior(item)
        if name in priors:
            raise click.BadParameter(f"two priors on {name}", param_hint="--gaussian")
        priors[name] = sigma
    _check_output(output, [file])
    fisher, meta = _load(file)
    _write(output, fisher.add_prior(priors), [(file, meta)], meta.get("probes"))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--params", required=True, help="Comma-separated parameters to fix at their fiducials.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
def fix(file, params, output):
    """Fix parameters of FILE at their fiducial values (drop their rows) and write OUTPUT."""
    names = _split_names(params)
    _check_output(output, [file])
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
def marginalize(file, keep, output):
    """Marginalize FILE over every parameter not in --keep and write OUTPUT (the Fisher matrix
    of the kept parameters, inverse of their covariance block)."""
    names = _split_names(keep)
    _check_output(output, [file])
    fisher, meta = _load(file)
    _write(output, fisher.marginalize(names), [(file, meta)])


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "to", multiple=True, required=True,
              help="Derived parameter(s), comma-separated or repeated: S8, H0, ombh2, omch2, omh2, "
                   "Omega_c, A_s_1e9, logA.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
def derive(file, to, output):
    """Reparametrize FILE with the Jacobian of derived parameters (S8 = sigma8 sqrt(Omega_m/0.3)
    replaces sigma8, H0 = 100 h replaces h, ...) and write OUTPUT."""
    targets = _split_names(to)
    _check_output(output, [file])
    fisher, meta = _load(file)
    fixed = {k: v for k, v in _fixed_fiducials(file).items() if k not in fisher}
    _write(output, fisher.derive(targets, fixed=fixed), [(file, meta)])


# ---------------------------------------------------------------------- compare
@click.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-3, show_default=True, help="Relative tolerance.")
@click.option("--atol", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Absolute tolerance.")
@click.option("--on", "on", type=click.Choice(["sigma", "fisher", "data"]), default="sigma", show_default=True,
              help="sigma: fiducials, marginalized and conditional errors, w0-wa FoM; fisher: every "
                   "element F_ij, judged relative to sqrt(F_ii F_jj); data: every dataset under /data.")
def compare(a, b, rtol, atol, on):
    """Check that forecasts A and B agree: |x_A - x_B| <= atol + rtol * max(|x_A|, |x_B|) for
    every compared quantity (parameters matched by name).

    Exit status: 0 within tolerance; 1 they differ (a table names each quantity and parameter);
    2 bad input (missing or unreadable file, not a fishcast file); 3 a Fisher matrix cannot be
    inverted (--on sigma).
    """
    from fishcast import report

    rows, n = report.compare_files(a, b, on, rtol, atol, load=_load)
    click.echo(report.compare_text(a, b, on, rows, n, rtol, atol))
    if rows:
        sys.exit(1)


# ---------------------------------------------------------------------- plot, export, import
@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Figure to write; the format follows the extension (.pdf, .png, .svg).")
@click.option("--params", default=None, help="Comma-separated parameters [default: those common to all files].")
@click.option("--labels", default=None, help="Comma-separated legend labels [default: the file names].")
def plot(files, output, params, labels):
    """Triangle plot of FILES overlaid: 1- and 2-sigma ellipses drawn from each covariance,
    1D marginals on the diagonal, a legend naming each file. Needs matplotlib
    (pip install 'fishcast[plot]')."""
    from fishcast.plotting import triangle_plot

    label_list = _split_names(labels) if labels else list(files)
    if len(label_list) != len(files):
        raise click.BadParameter(f"{len(label_list)} labels for {len(files)} files", param_hint="--labels")
    forecasts = [_load(f)[0] for f in files]
    triangle_plot(forecasts, label_list, output, params=_split_names(params) or None, inputs=list(files))
    click.echo(f"wrote {output}")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "fmt", type=click.Choice(["getdist", "cosmosis", "text"]), required=True)
@click.option("-o", "--output", default=None, help="Output base name, without extension [default: FILE without .h5].")
def export(file, fmt, output):
    """Write FILE's Fisher matrix for another code. getdist: BASE.paramnames, BASE.covmat
    (covariance, '# names' header) and BASE.fisher; cosmosis: BASE.txt as its Fisher sampler
    writes it; text: BASE.txt and BASE.paramnames (readable by fishcast import)."""
    from fishcast.io.exchange import export as export_fisher

    fisher, _ = _load(file)
    base = output if output is not None else str(Path(file).with_suffix(""))
    for p in export_fisher(fisher, fmt, base, inputs=[file]):
        click.echo(f"wrote {p}")


@click.command("import")
@click.argument("matrix", type=click.Path(dir_okay=False))
@click.option("--paramnames", type=click.Path(dir_okay=False), default=None,
              help="Parameter names, one per line in matrix order: 'name [latex] [fiducial]' "
                   "[default: names from a '# a b c' header in MATRIX].")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--keep-names", is_flag=True, help="Do not rename other codes' names (Omegam, ns, aIA, ...) "
              "to fishcast's canonical ones.")
def import_(matrix, paramnames, output, keep_names):
    """Import a text Fisher matrix as IST:F and CosmicFish write them (whitespace-separated
    square matrix, '#' comments) into a fishcast HDF5 file."""
    from fishcast.io.exchange import read_text_fisher

    _check_output(output, [matrix, paramnames])
    fisher = read_text_fisher(matrix, paramnames, canonical=not keep_names)
    renamed = fisher.provenance[-1].get("renamed")
    if renamed:
        click.echo("renamed: " + ", ".join(f"{k} -> {v}" for k, v in renamed.items()))
    _write(output, fisher, [], sources=[p for p in (matrix, paramnames) if p])


COMMANDS = [show, combine, prior, fix, marginalize, derive, compare, plot, export, import_]
