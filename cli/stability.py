"""``fishcast stability OUT.h5 [--plot steps.pdf]``: the stability report of a forecast file.

Prints the derivative-step table and the matrix report stored in ``/derivatives`` and
``/diagnostics`` (made by :func:`fishcast.report.stability_report`); ``--plot`` draws, per
parameter, the derivative against the step at representative data points and the
rung-to-rung change, with the chosen step marked (:func:`fishcast.plotting.step_plot`).
"""

from __future__ import annotations

import pathlib

import click


@click.command("stability")
@click.argument("output", type=click.Path(path_type=pathlib.Path))
@click.option("--plot", "plot_path", type=click.Path(path_type=pathlib.Path), default=None,
              help="draw the derivative against the step per parameter (pdf/png/svg by extension)")
def stability(output: pathlib.Path, plot_path: pathlib.Path | None) -> None:
    """Print the derivative-step and conditioning report of a forecast file OUTPUT.

    Exit status: 0; 2 bad input (missing file, not a forecast file, a bad --plot path)."""
    from fishcast.report import stability_report

    if plot_path is not None:
        from fishcast import io as fio

        fio.check_output_path(plot_path, [output])
    sweeps, text = stability_report(output)
    click.echo(text)
    if plot_path is not None:
        from fishcast.plotting import step_plot

        step_plot(sweeps, plot_path, inputs=[output])
        click.echo(f"step plots written to {plot_path}")


COMMANDS = [stability]
