"""``fishcast run``, ``fishcast validate``, ``fishcast schema``."""

from __future__ import annotations

import json
import sys

import click

from .group import track


def parse_overrides(items) -> dict:
    """``--set key.path=value`` items -> {dotted key: value}; the value is read as YAML
    (so numbers, booleans, lists like [1, 2] work), safely: by the survey reader, which
    refuses object tags, duplicate keys, alias bombs and deep nesting."""
    from fishcast.errors import SurveyError
    from fishcast.yamlio import load_yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE (e.g. probes.weak_lensing.f_sky=0.4)",
                                     param_hint="--set")
        try:
            out[key.strip()] = load_yaml(raw, f"--set {key.strip()}")[0] if raw.strip() else None
        except SurveyError as exc:
            raise click.BadParameter(f"{item!r}: {'; '.join(m for _, _, m in exc.problems)}",
                                     param_hint="--set") from None
    return out


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a survey key before validation, e.g. --set probes.weak_lensing.f_sky=0.4 "
         "(repeatable; the value is read as YAML).")


def _progress_factory(quiet: bool):
    """A progress callback for the library: tqdm bars on a TTY, nothing otherwise."""
    show = not quiet and sys.stderr.isatty()
    bars = []

    def progress(label: str, total: int):
        if not show or total <= 0:
            return lambda: None
        from tqdm import tqdm

        bar = tqdm(total=total, desc=label, unit="pt", leave=False, file=sys.stderr)
        bars.append(bar)

        def tick():
            bar.update(1)
            if bar.n >= bar.total:
                bar.close()

        return tick

    def close():
        for b in bars:
            b.close()

    return progress, close


@click.command()
@click.argument("survey", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--allow-unstable", is_flag=True, help="Exit 0 even when the stability verdict is FAIL (the verdict is in the file either way); "
                   "a degenerate matrix needs --allow-degenerate.")
@click.option("--allow-degenerate", is_flag=True, help="Project out degenerate directions instead of refusing (recorded in the file).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache of CAMB results [default: $FISHCAST_CACHE_DIR or the platform cache folder].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
@click.option("--workers", type=click.IntRange(min=1), default=None, envvar="FISHCAST_WORKERS",
              help="Compute the cosmology points in this many local worker processes, CAMB threads per "
                   "worker = usable cores / workers [default: $FISHCAST_WORKERS, else one per usable core]; "
                   "1: in this process. The result is the same bit for bit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary.")
@set_option
def run(survey, output, allow_unstable, allow_degenerate, cache_dir, no_cache, workers, quiet, overrides):
    """Run the forecast of SURVEY (a YAML file) and write it to OUTPUT (HDF5).

    Exit status: 0 success; 2 bad input; 3 the forecast is not to be trusted (the file is
    written all the same): a FAIL verdict unless --allow-unstable, or a degenerate Fisher
    matrix unless --allow-degenerate; 4 a computation failed.
    """
    from .main import library_imports

    with library_imports():
        from fishcast.pipeline.execute import make_executor, usable_cores

    # the worker pool's server starts first: it imports numpy, scipy, CAMB and fishcast on the
    # other core while this process imports and loads the survey (closed in every case below)
    n_workers = workers if workers is not None else usable_cores()
    executor = make_executor(n_workers) if n_workers > 1 else None
    try:
        if executor is not None:
            executor.prestart()
        return _run(survey, output, allow_unstable, allow_degenerate, cache_dir, no_cache, quiet, overrides,
                    executor)
    finally:
        if executor is not None:
            executor.close()


def _run(survey, output, allow_unstable, allow_degenerate, cache_dir, no_cache, quiet, overrides, executor):
    import pathlib

    from .main import library_imports

    with library_imports():
        from fishcast import io as fio
        from fishcast import report
        from fishcast.errors import InputError
        from fishcast.pipeline.cache import Cache, default_cache_dir
        from fishcast.pipeline.execute import executor_evaluator_factory
        from fishcast.pipeline.forecast import run_forecast
        from fishcast.survey import load_survey
        from fishcast.cosmology import camb_version

        camb_version()  # imports CAMB: every run needs it (a point's content address carries its version)

    sv = load_survey(survey, parse_overrides(overrides))
    if pathlib.Path(output).resolve() == pathlib.Path(survey).resolve():
        raise InputError(f"the output {output} is the survey file itself: give another -o")
    fio.check_output_path(output, [survey])  # no special file; not the survey by another name
    cache = None if no_cache else Cache(cache_dir or default_cache_dir())
    track(cache, output)
    progress, close = _progress_factory(quiet)
    try:
        factory = executor_evaluator_factory(executor) if executor is not None else None
        try:
            fc = run_forecast(sv, cache=cache, progress=progress, allow_degenerate=allow_degenerate,
                              evaluator_factory=factory)
        except InputError as exc:  # found after loading: named by file, line and key as the loader's
            located = sv.locate(exc)
            if located is exc:
                raise
            raise located from None
    finally:
        if executor is not None:
            executor.close()  # the pool is done: free its workers before writing and reporting
        close()
    if cache is not None and cache.stats.write_failed:
        click.echo(f"warning: {cache.stats.write_failed} cosmology evaluations could not be kept in the cache at "
                   f"{cache.root} ({cache.stats.write_error}); the forecast is complete, a rerun computes them again",
                   err=True)
    fio.write_forecast(output, fc, inputs=[survey])
    if not quiet:
        click.echo(report.diagnostics_text(fc.sweeps, fc.conditioning, fc.stability, fc.extra.get("gaussian_validity"),
                                           fc.extra.get("projection")))
        fisher, meta = fio.read_fisher(output, comparisons=True)  # the file is opened once
        click.echo(report.show_text(output, fisher, meta)[0])
    message, code = report.run_verdict(fc.trust, fc.conditioning, fc.extra.get("projection"), allow_unstable)
    if code:
        click.echo(message, err=True)
        sys.exit(code)


@click.command()
@click.argument("survey", type=click.Path(dir_okay=False))
@set_option
def validate(survey, overrides):
    """Validate SURVEY (a survey YAML file, or a batch grid file: then every design) without
    computing anything."""
    import pathlib

    from fishcast.pipeline.batch import is_grid, validate_grid
    from fishcast.survey import survey_from_document
    from fishcast.yamlio import read_yaml

    from fishcast.errors import FishcastError

    try:  # read and parsed once, then validated as a grid or as a survey
        doc, unreadable = read_yaml(survey, "survey file"), None
    except FishcastError as exc:  # not a grid: the survey's error, after the --set values' own
        doc, unreadable = None, exc
    if doc is not None and is_grid(doc.data):
        if overrides:
            raise click.UsageError("--set applies to a survey; a grid sets its designs' keys in its own 'set:' section")
        bp = validate_grid(doc)
        for d in bp.planned:
            click.echo(f"{survey}: design {d.design.name}: valid ({len(d.keys)} cosmology points)")
        for f in bp.failed:
            click.echo(f"{survey}: design {f.name}: FAILED ({f.stage}): {f.reason}", err=True)
        click.echo(f"{survey}: grid of {len(bp.planned) + len(bp.failed)} designs: {len(bp.planned)} valid, "
                   f"{len(bp.failed)} failed; {len(bp.points)} distinct cosmology points")
        if bp.failed:
            sys.exit(2)
        return
    sets = parse_overrides(overrides)
    if unreadable is not None:
        raise unreadable
    sv = survey_from_document(doc, pathlib.Path(survey).parent, sets)
    probes = ", ".join(p.name for p in sv.probes)
    click.echo(f"{survey}: valid. probes: {probes}; free parameters ({len(sv.free)}): {', '.join(sv.free)}")


@click.command()
def schema():
    """Print the JSON Schema of the survey YAML format."""
    from fishcast.survey import schema as _schema

    click.echo(json.dumps(_schema(), indent=2))


COMMANDS = [run, validate, schema]
