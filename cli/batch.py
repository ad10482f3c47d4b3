"""``fishcast batch``: a grid of survey designs, every cosmology computed once."""

from __future__ import annotations

import sys

import click

from .group import track


def _cluster_options(items) -> dict:
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--cluster-option")
        try:
            import yaml

            opts[key.strip()] = yaml.safe_load(value)
        except Exception:
            opts[key.strip()] = value
    return opts


@click.command()
@click.argument("grid", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for one HDF5 per design, summary.h5, summary.csv and fom.png (created if needed).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes [default: one per usable core]; with --cluster local, Dask workers.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Use a running Dask scheduler, e.g. tcp://host:8786.")
@click.option("--cluster", type=click.Choice(["local", "slurm", "pbs"]), default=None,
              help="Start a Dask cluster: a LocalCluster, or batch jobs through dask-jobqueue.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Batch jobs to start with --cluster slurm|pbs [default 1].")
@click.option("--cluster-option", multiple=True, metavar="KEY=VALUE",
              help="Passed to SLURMCluster/PBSCluster (e.g. cores=8, memory=16GB, queue=normal, walltime=02:00:00); "
                   "repeatable. Defaults come from the dask-jobqueue configuration.")
@click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
              help="Retries of a task that failed for a reason other than bad input or a CAMB failure (e.g. a lost worker).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache of CAMB results [default: $FISHCAST_CACHE_DIR or the platform cache folder]; "
                   "on a cluster it must be on a shared filesystem.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache (a killed batch then starts over).")
@click.option("--allow-degenerate", is_flag=True, help="Project out degenerate directions instead of refusing (per design; recorded).")
@click.option("--no-plot", is_flag=True, help="Do not draw fom.png.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary.")
def batch(grid, output, workers, scheduler, cluster, jobs, cluster_option, retries, cache_dir, no_cache,
          allow_degenerate, no_plot, quiet):
    """Run every design of GRID (a grid YAML: base survey + axes) into the folder OUTPUT.

    Every distinct cosmology point of all designs is computed once (and cached); the probe
    work runs per design. Local worker processes by default; --scheduler or --cluster for Dask.

    Exit status: 0 every design finished; otherwise that of the first failed design (2 its
    input is invalid, 4 a computation failed, 1 other) -- the other designs are written all
    the same, and summary.csv lists the failed ones with their reasons.
    """
    from fishcast.pipeline.batch import load_grid, run_batch
    from fishcast.report import batch_text
    from fishcast.pipeline.cache import Cache, default_cache_dir
    from fishcast.pipeline.execute import make_executor
    from .run import _progress_factory

    if scheduler and cluster:
        raise click.UsageError("give --scheduler or --cluster, not both")
    if jobs is not None and cluster not in ("slurm", "pbs"):
        raise click.UsageError("--jobs needs --cluster slurm or --cluster pbs")
    if cluster_option and cluster not in ("slurm", "pbs", "local"):
        raise click.UsageError("--cluster-option needs --cluster")
    g = load_grid(grid)
    cache = None if no_cache else Cache(cache_dir or default_cache_dir())
    track(cache, output, kind="batch")
    progress, close = _progress_factory(quiet)
    try:
        with make_executor(workers, address=scheduler, cluster=cluster, jobs=jobs, retries=retries,
                           cluster_options=_cluster_options(cluster_option)) as ex:
            res = run_batch(g, output, executor=ex, cache=cache, progress=progress,
                            allow_degenerate=allow_degenerate, plot=not no_plot)
    finally:
        close()
    for f in res.failed:
        click.echo(f"design {f.name} FAILED ({f.stage}): {f.reason}", err=True)
    if not quiet:
        click.echo(batch_text(res))
    if res.exit_code:
        sys.exit(res.exit_code)


COMMANDS = [batch]
