"""Triangle plots of Fisher forecasts: 1- and 2-sigma ellipses drawn from the covariance.

matplotlib is an optional extra (``pip install 'fishcast[plot]'``); it is imported only when
a plot is made, and its absence raises :class:`MissingDependencyError` with that advice.

Nothing is sampled. For a pair of parameters with marginalized 2x2 covariance ``C`` (the
block of ``F^-1``), the contour enclosing probability ``p`` of a 2D Gaussian is
``x = mu + sqrt(dchi2) L (cos t, sin t)`` with ``C = L L^T`` and ``dchi2 = -2 ln(1 - p)``:
2.30 for 68.3% and 6.18 for 95.4% (Coe 2009, arXiv:0906.4123, table 1). The diagonal panels
show the marginalized 1D Gaussians, normalized to unit peak.

Forecast ``k`` always gets colour ``PALETTE[k]`` (Okabe & Ito's colour-blind safe set), so
the same order of files gives the same colours in every plot. Figures are made with
:class:`matplotlib.figure.Figure` directly (no pyplot global state, no display needed); the
format (PDF, PNG, SVG) follows the output file's extension.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fishcast.errors import FishcastError, InputError
from fishcast.fisher import FisherMatrix

__all__ = ["MissingDependencyError", "PALETTE", "DCHI2", "ellipse_points", "triangle_figure",
           "triangle_plot", "plot_params", "step_figure", "step_plot"]

#: Okabe & Ito (2008) colour-blind safe palette, black first.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

#: Delta chi^2 of the 1- and 2-sigma contours of a 2-parameter Gaussian (68.27%, 95.45%).
DCHI2 = (-2.0 * math.log(1.0 - math.erf(1.0 / math.sqrt(2.0))),
         -2.0 * math.log(1.0 - math.erf(2.0 / math.sqrt(2.0))))

#: Half-width of each axis in marginalized sigmas (the 2-sigma ellipse reaches sqrt(6.18) = 2.49).
AXIS_HALF_WIDTH = 3.2

SUFFIXES = (".pdf", ".png", ".svg")


class MissingDependencyError(FishcastError):
    """An optional dependency (matplotlib for plots) is not installed."""

    exit_code = 2


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            "plotting needs matplotlib, an optional extra: pip install 'fishcast[plot]'"
        ) from None
    return matplotlib, Figure


def ellipse_points(center: Sequence[float], cov2: np.ndarray, dchi2: float, n: int = 200) -> np.ndarray:
    """Points ``(n, 2)`` on the contour ``(x - mu)^T C^-1 (x - mu) = dchi2`` of a 2x2 covariance."""
    cov2 = np.asarray(cov2, dtype=float)
    L = np.linalg.cholesky(cov2)
    t = np.linspace(0.0, 2.0 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (np.asarray(center, dtype=float)[:, None] + math.sqrt(dchi2) * (L @ circle)).T


def plot_params(forecasts: Sequence[FisherMatrix], params: Sequence[str] | None = None) -> list[str]:
    """Parameters to plot: ``params`` (each must be in at least one forecast) or, by default,
    those common to every forecast, in the order of the first."""
    if params:
        params = list(params)
        for p in params:
            if not any(p in f for f in forecasts):
                known = sorted({n for f in forecasts for n in f.names})
                raise InputError(f"unknown parameter {p!r}; the forecasts have: {', '.join(known)}")
        if len(set(params)) != len(params):
            raise InputError("a parameter is named twice in --params")
        return params
    common = [n for n in forecasts[0].names if all(n in f for f in forecasts[1:])]
    if not common:
        raise InputError("the forecasts share no parameter; name the ones to plot")
    return common


def _center(f: FisherMatrix, name: str) -> float:
    v = f.fiducial_of(name)
    return v if math.isfinite(v) else 0.0


def triangle_figure(
    forecasts: Sequence[FisherMatrix],
    labels: Sequence[str],
    params: Sequence[str] | None = None,
    panel_size: float = 1.8,
    dpi: float = 100.0,
) -> tuple[Any, dict[tuple[int, int], Any], list[str]]:
    """Build the triangle figure. Returns ``(figure, axes, params)`` with ``axes[(row, col)]``
    for ``row >= col`` (diagonal: 1D marginals). Raises
    :class:`~fishcast.errors.DegenerateFisherError` if a forecast cannot be inverted."""
    if not forecasts:
        raise InputError("nothing to plot")
    if len(labels) != len(forecasts):
        raise InputError(f"{len(labels)} labels for {len(forecasts)} forecasts")
    from fishcast.io.exchange import latex_name

    _, Figure = _matplotlib()
    params = plot_params(forecasts, params)
    n = len(params)
    covs = [f.covariance() for f in forecasts]

    # Axis ranges: widest forecast, AXIS_HALF_WIDTH marginalized sigmas around its centre.
    lims = []
    for p in params:
        lo, hi = math.inf, -math.inf
        for f, c in zip(forecasts, covs):
            if p in f:
                i = f.index(p)
                s, mu = math.sqrt(c[i, i]), _center(f, p)
                lo, hi = min(lo, mu - AXIS_HALF_WIDTH * s), max(hi, mu + AXIS_HALF_WIDTH * s)
        lims.append((lo, hi))

    size = max(panel_size * n, 3.0)
    fig = Figure(figsize=(size, size), dpi=dpi)
    axes: dict[tuple[int, int], Any] = {}
    grid = fig.add_gridspec(n, n, hspace=0.06, wspace=0.06, left=0.14, right=0.97, bottom=0.12, top=0.97)
    for r in range(n):
        for c in range(r + 1):
            ax = fig.add_subplot(grid[r, c])
            axes[(r, c)] = ax
            ax.set_xlim(*lims[c])
            if r != c:
                ax.set_ylim(*lims[r])
            else:
                ax.set_ylim(0, 1.08)
                ax.set_yticks([])
            ax.tick_params(labelsize=7)
            if r == n - 1:
                ax.set_xlabel(f"${latex_name(params[c])}$")
            else:
                ax.set_xticklabels([])
            if c == 0 and r != 0:
                ax.set_ylabel(f"${latex_name(params[r])}$")
            elif r != c:
                ax.set_yticklabels([])

    handles = []
    for k, (f, cov, label) in enumerate(zip(forecasts, covs, labels)):
        color = PALETTE[k % len(PALETTE)]
        for r in range(n):
            for c in range(r + 1):
                pr, pc = params[r], params[c]
                if pr not in f or pc not in f:
                    continue
                ax = axes[(r, c)]
                if r == c:
                    i = f.index(pc)
                    s, mu = math.sqrt(cov[i, i]), _center(f, pc)
                    x = np.linspace(*lims[c], 400)
                    line, = ax.plot(x, np.exp(-0.5 * ((x - mu) / s) ** 2), color=color, lw=1.4)
                    if r == 0:
                        line.set_label(label)
                        handles.append(line)
                    continue
                idx = [f.index(pc), f.index(pr)]
                c2 = cov[np.ix_(idx, idx)]
                center = [_center(f, pc), _center(f, pr)]
                outer = ellipse_points(center, c2, DCHI2[1])
                inner = ellipse_points(center, c2, DCHI2[0])
                ax.fill(outer[:, 0], outer[:, 1], color=color, alpha=0.18, lw=0)
                ax.fill(inner[:, 0], inner[:, 1], color=color, alpha=0.40, lw=0)
                ax.plot(outer[:, 0], outer[:, 1], color=color, lw=1.0)
                ax.plot(inner[:, 0], inner[:, 1], color=color, lw=1.4)
    if n > 1:
        fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.97, 0.97), fontsize=9,
                   frameon=False, title="1σ and 2σ contours", title_fontsize=8)
    else:
        axes[(0, 0)].legend(handles=handles, fontsize=8, frameon=False)
    return fig, axes, params


def triangle_plot(
    forecasts: Sequence[FisherMatrix],
    labels: Sequence[str],
    path: str | os.PathLike,
    params: Sequence[str] | None = None,
    dpi: float = 150.0,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Draw the triangle plot of ``forecasts`` (legend: ``labels``) to ``path`` (.pdf, .png
    or .svg) with the one atomic writer. ``path`` is checked before drawing: never a special
    file, never one of ``inputs`` (the files the forecasts were read from)."""
    from .io.atomic import check_output_path, save_figure

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: plot format from the extension, one of {', '.join(SUFFIXES)}")
    check_output_path(path, inputs)
    fig, _, _ = triangle_figure(forecasts, labels, params, dpi=dpi)
    return save_figure(fig, path, fmt=path.suffix[1:].lower(), dpi=dpi)


# ------------------------------------------------------------------------------ step sweeps
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


def step_figure(sweeps: dict):
    """Per parameter (one row): the 3-point derivative against the relative step at
    representative data elements (divided by the chosen derivative), and the rung-to-rung
    change in the data metric with the pass/warn tolerances; the chosen step dashed, the
    plateau window shaded. ``sweeps``: label -> :class:`fishcast.derivatives.ParameterSweep`."""
    items = list(sweeps.items())
    if not items:
        raise InputError("no derivative sweeps: nothing to plot")
    _, Figure = _matplotlib()
    fig = Figure(figsize=(10, 2.8 * len(items)), layout="constrained")
    axes = fig.subplots(len(items), 2, squeeze=False)
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
    return fig


def step_plot(sweeps: dict, path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """``fishcast stability --plot``: :func:`step_figure` written to ``path`` (format from the
    extension) with the one atomic writer; never over a special file or one of ``inputs``."""
    from .io.atomic import check_output_path, save_figure

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: plot format from the extension, one of {', '.join(SUFFIXES)}")
    check_output_path(path, inputs)
    return save_figure(step_figure(sweeps), path)


# ------------------------------------------------------------------------------ simulation convergence
def convergence_figure(info: dict):
    """Per parameter: the marginalized error of every estimator against the number of
    derivative simulations, relative to the combined estimate at the full set (and the
    reference). The score form, whose axis is the number of fiducial simulations, is in the
    file (/simulations/convergence/score_form_sigma) and not drawn here. ``info`` as
    :func:`fishcast.io.simulations.read_simfisher` returns it."""
    _, Figure = _matplotlib()
    conv, names = info["convergence"], info["names"]
    n = conv["n_derivative"]
    fig = Figure(figsize=(6, 2.6 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False)
    styles = {"standard": "v-", "compressed": "^-", "combined": "o-", "derivative_form": "s:"}
    for i, (name, ax) in enumerate(zip(names, axes[:, 0])):
        norm = conv["combined_sigma"][-1, i]
        for est, st in styles.items():
            ax.plot(n, conv[f"{est}_sigma"][:, i] / norm, st, ms=3, label=est.replace("_", " "))
        if "reference_sigma" in info:
            ax.axhline(info["reference_sigma"][i] / norm, color="k", lw=0.8, label="reference")
        ax.set_xscale("log")
        ax.set_xlabel("derivative simulations per parameter and side")
        ax.set_ylabel(f"sigma({name}) / combined")
        ax.legend(fontsize=7)
    a = info["attrs"]
    fig.suptitle(f"simfisher {a.get('verdict')}: bracket ~ N^-{info['alpha']:.2g}", fontsize=9)
    return fig


def convergence_plot(info: dict, path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """``fishcast convergence --plot``: :func:`convergence_figure` written to ``path`` (format
    from the extension) with the one atomic writer; never over a special file or one of ``inputs``."""
    from .io.atomic import check_output_path, save_figure

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: plot format from the extension, one of {', '.join(SUFFIXES)}")
    check_output_path(path, inputs)
    return save_figure(convergence_figure(info), path)
