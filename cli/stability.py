"""``fishcast stability OUT.h5 [--plot steps.pdf]``: the stability report of a forecast file.

Prints the derivative-step table and the matrix report stored in ``/derivatives`` and
``/diagnostics``; ``--plot`` draws, per parameter, the derivative against the step at
representative data points and the rung-to-rung change, with the chosen step marked.
"""

from __future__ import annotations

import pathlib

import click
import numpy as np

from fishcast.errors import FileFormatError, FishcastError, InputError


def _read(path: pathlib.Path):
    from fishcast.derivatives import read_sweeps
    from fishcast.diagnostics import read_diagnostics

    from fishcast.io import open_forecast

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


def _sweeps_in(group, read_sweeps) -> dict:
    """Sweeps directly in ``group``, or one level down (``/derivatives/<probe>/<param>``)."""
    if "names" in group.attrs or any(group[k].attrs.get("fishcast_type") == "ParameterSweep" for k in group):
        return read_sweeps(group)
    out = {}
    for key in group:
        for name, sw in read_sweeps(group[key]).items():
            out[f"{key}/{name}" if name in out or len(group) > 1 else name] = sw
    return out


def _representative(d: np.ndarray, n: int = 3) -> list[int]:
    """Flat indices of the largest |derivative| and of its 90th and 50th percentiles."""
    a = np.abs(np.ravel(d))
    order = np.argsort(a)
    picks = [order[-1], order[int(0.9 * (len(a) - 1))], order[int(0.5 * (len(a) - 1))]]
    out: list[int] = []
    for p in picks:
        if a[p] > 0 and int(p) not in out:
            out.append(int(p))
    return out[:n]


def _plot(sweeps: dict, path: pathlib.Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("--plot needs matplotlib: pip install 'fishcast[plot]'") from exc
    items = list(sweeps.items())
    if not items:
        raise FileFormatError("no derivative sweeps in the file: nothing to plot")
    fig, axes = plt.subplots(len(items), 2, figsize=(10, 2.8 * len(items)), squeeze=False)
    for row, (label, sw) in enumerate(items):
        ax, bx = axes[row]
        rel = sw.relative_steps
        dc = np.ravel(sw.derivative)
        for i in _representative(sw.derivative):
            ax.plot(rel, np.reshape(sw.derivatives_3pt, (len(rel), -1))[:, i] / dc[i], "o-", ms=3, label=f"element {i}")
        ax.axvline(sw.relative_step, color="k", ls="--", lw=0.8)
        ax.axvspan(rel[sw.window[1] - 1], rel[sw.window[0]], color="0.9", zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel(f"relative step of {sw.name}")
        ax.set_ylabel("3-point derivative / chosen")
        ax.set_title(f"{label}: {sw.verdict} ({sw.reason}), {sw.stencil}", fontsize=9)
        ax.legend(fontsize=7)
        if len(sw.deltas):
            mid = np.sqrt(rel[:-1] * rel[1:])
            bx.loglog(mid, np.maximum(sw.deltas, 1e-300), "o-", ms=3)
            bx.axhline(sw.tol_pass, color="g", ls=":", lw=0.8, label=f"pass {sw.tol_pass:g}")
            bx.axhline(sw.tol_warn, color="r", ls=":", lw=0.8, label=f"warn {sw.tol_warn:g}")
            bx.axvline(sw.relative_step, color="k", ls="--", lw=0.8, label="chosen step")
            bx.legend(fontsize=7)
        bx.set_xlabel(f"relative step of {sw.name}")
        bx.set_ylabel("rung-to-rung change (data metric)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@click.command("stability")
@click.argument("output", type=click.Path(path_type=pathlib.Path))
@click.option("--plot", "plot_path", type=click.Path(path_type=pathlib.Path), default=None,
              help="draw the derivative against the step per parameter (pdf/png by extension)")
@click.pass_context
def stability(ctx: click.Context, output: pathlib.Path, plot_path: pathlib.Path | None) -> None:
    """Print the derivative-step and conditioning report of a forecast file OUTPUT."""
    from fishcast.diagnostics import format_report

    try:
        if not output.is_file():
            raise InputError(f"{output}: no such file")
        sweeps, diags = _read(output)
        try:
            report = format_report(sweeps, diags.get("conditioning"), diags.get("error_stability"),
                                   diags.get("gaussian_validity"), diags.get("projection"))
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:  # values of the wrong kind
            raise FileFormatError(f"{output}: unexpected content in /derivatives or /diagnostics: "
                                  f"{type(exc).__name__}: {exc}") from None
        click.echo(report)
        if plot_path is not None:
            _plot(sweeps, plot_path)
            click.echo(f"step plots written to {plot_path}")
    except FishcastError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(exc.exit_code)


COMMANDS = [stability]
