"""``fishcast simfisher``, ``fishcast mock`` and ``fishcast convergence``: Fisher matrices from
simulations (the library: :mod:`fishcast.simfisher`, :mod:`fishcast.mock`,
:mod:`fishcast.io.simulations`).

Exit statuses: 0 success; 2 bad input (a SIMS file with missing datasets, wrong shapes, NaN,
too few simulations for the data length; a bad option); 3 the verdict is FAIL (more
simulations are needed; the file is written all the same) unless ``--allow-unconverged``.
"""

from __future__ import annotations

import sys

import click

SIMS_HELP = """SIMS is an HDF5 file: /fiducial (N_s, d) realizations at the fiducial point;
/derivatives (p, 2, N_d, d) realizations at theta - step (axis 1 index 0) and theta + step (1),
attribute seed_matched; /parameters/names, /parameters/fiducial, /parameters/step (the
half-step delta); optional /parameters/units and /reference/fisher. See the README."""


@click.command("simfisher", epilog=SIMS_HELP)
@click.argument("sims", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--likelihood", type=click.Choice(["hartlap", "sellentin-heavens"]), default="hartlap",
              show_default=True, help="Precision factor of the standard estimator.")
@click.option("--split-fraction", type=float, default=0.5, show_default=True,
              help="Fraction of the derivative simulations used to compress (compressed estimator).")
@click.option("--reshuffles", type=click.IntRange(min=1), default=20, show_default=True,
              help="Random compression/estimation splits averaged.")
@click.option("--tolerance", type=float, default=0.10, show_default=True,
              help="FAIL when standard and compressed errors differ by more than this (relative).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the reshuffling.")
@click.option("--allow-unconverged", is_flag=True, help="Exit 0 even when the verdict is FAIL.")
def simfisher(sims, output, likelihood, split_fraction, reshuffles, tolerance, seed, allow_unconverged):
    """Estimate Fisher matrices from the simulations in SIMS and write them to OUTPUT.

    /fisher/matrix is the combined estimator (Coulton & Wandelt 2023); the standard, compressed,
    combined and Soen-Sun estimators, their convergence and the verdict are under /simulations.
    """
    from fishcast import io as fio
    from fishcast import report
    from fishcast.io.simulations import read_simulations, write_simfisher_file
    from fishcast.simfisher import SimFisherConfig, estimate, marginalized_sigma

    fio.check_output_path(output, [sims])
    config = SimFisherConfig(likelihood=likelihood, split_fraction=split_fraction, reshuffles=reshuffles,
                             tolerance=tolerance, seed=seed)
    config.check()
    data = read_simulations(sims)
    result = estimate(data, config)
    meta = {"survey_name": data.attrs["survey_name"]} if "survey_name" in data.attrs else None
    write_simfisher_file(output, result, sims, meta)
    click.echo(f"{sims}: {result.n_fiducial} fiducial simulations, {result.n_derivative} per parameter and side, "
               f"data length {result.data_length}, {len(result.names)} parameters"
               f"{' (seed-matched)' if result.seed_matched else ''}")
    rows = {k: result.sigma(k) for k in ("standard", "compressed", "combined", "derivative_form")}
    ref = marginalized_sigma(result.reference) if result.reference is not None else None
    click.echo("marginalized 1-sigma errors:")
    click.echo(report.simfisher_sigma_text(result.names, rows, ref))
    click.echo(f"simfisher {result.verdict} ({result.reason}): {result.message}")
    click.echo(f"wrote {output} (/fisher/matrix: combined estimator)")
    message, code = report.simfisher_verdict(result.verdict, allow_unconverged)
    if code:
        click.echo(message, err=True)
        sys.exit(code)


@click.command("mock")
@click.argument("forecast", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="SIMS file to write.")
@click.option("--n-sims", type=click.IntRange(min=1), required=True, help="Fiducial realizations.")
@click.option("--n-deriv", type=click.IntRange(min=1), default=None,
              help="Realizations per parameter and side of each step [default: --n-sims].")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--seed-matched", is_flag=True,
              help="Derivative realization k reuses the noise of fiducial realization k.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache of CAMB results [default: $FISHCAST_CACHE_DIR or the platform cache folder].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
def mock(forecast, output, n_sims, n_deriv, seed, seed_matched, cache_dir, no_cache):
    """Gaussian realizations of the data vector of the forecast file FORECAST, at its fiducial
    and at its derivative steps, written as a SIMS file for fishcast simfisher."""
    from fishcast import io as fio
    from fishcast.io.simulations import write_simulations
    from fishcast.mock import describe, draw, model_from_forecast
    from fishcast.pipeline.cache import Cache, default_cache_dir

    fio.check_output_path(output, [forecast])
    cache = None if no_cache else Cache(cache_dir or default_cache_dir())
    model = model_from_forecast(forecast, cache)
    sims = draw(model, n_sims, seed, n_deriv, seed_matched, source=str(output))
    attrs = dict(describe(model))
    attrs.update(forecast=str(forecast), forecast_sha256=fio.file_sha256(forecast), seed=int(seed))
    write_simulations(output, sims, attrs)
    click.echo(f"wrote {output}: {sims.n_fiducial} fiducial and {sims.n_derivative} x 2 x {len(sims.names)} "
               f"derivative realizations of a data vector of length {sims.data_length}")
    if sims.n_fiducial <= sims.data_length + 2:
        click.echo(f"note: simfisher needs more than {sims.data_length + 2} fiducial realizations for this data "
                   "length", err=True)


@click.command("convergence")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw the marginalized errors against the number of simulations (pdf/png/svg by extension).")
def convergence(output, plot_path):
    """Print (and plot) how the errors of every estimator in a simfisher OUTPUT converge."""
    from fishcast.io.simulations import read_simfisher
    from fishcast.report import convergence_text

    if plot_path is not None:
        from fishcast import io as fio

        fio.check_output_path(plot_path, [output])
    info = read_simfisher(output)
    click.echo(convergence_text(output, info))
    if plot_path is not None:
        from fishcast.plotting import convergence_plot

        convergence_plot(info, plot_path, inputs=[output])
        click.echo(f"convergence plot written to {plot_path}")


COMMANDS = [simfisher, mock, convergence]
