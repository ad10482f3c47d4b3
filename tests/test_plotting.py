"""Triangle plots: files are written, and the ellipses are where the covariance puts them."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fishcast.errors import InputError  # noqa: E402
from fishcast.fisher import FisherMatrix  # noqa: E402
from fishcast import plotting  # noqa: E402

COV = np.array([[0.01, 0.004, 0.0], [0.004, 0.04, 0.01], [0.0, 0.01, 0.09]])
NAMES = ["Omega_m", "w0", "wa"]
FID = [0.3, -1.0, 0.0]


def forecasts():
    wide = FisherMatrix(np.linalg.inv(COV), NAMES, FID)
    narrow = FisherMatrix(np.linalg.inv(COV / 9.0), NAMES, FID)
    return [wide, narrow]


def test_dchi2_values():
    # 2-parameter Gaussian contours: 2.30 and 6.17 (Coe 2009, table 1; Numerical Recipes 15.6).
    assert plotting.DCHI2[0] == pytest.approx(2.30, abs=0.005)
    assert plotting.DCHI2[1] == pytest.approx(6.18, abs=0.005)


def test_ellipse_points_lie_on_the_contour():
    c2 = COV[:2, :2]
    pts = plotting.ellipse_points([0.3, -1.0], c2, 2.3)
    d = pts - [0.3, -1.0]
    chi2 = np.einsum("ni,ij,nj->n", d, np.linalg.inv(c2), d)
    np.testing.assert_allclose(chi2, 2.3, rtol=1e-12)


def test_writes_pdf_and_png(tmp_path):
    fs = forecasts()
    pdf = plotting.triangle_plot(fs, ["wide.h5", "narrow.h5"], tmp_path / "t.pdf")
    png = plotting.triangle_plot(fs, ["wide.h5", "narrow.h5"], tmp_path / "t.png")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    with pytest.raises(InputError, match="extension"):
        plotting.triangle_plot(fs, ["a", "b"], tmp_path / "t.jpgx")


def test_png_has_ellipses_where_the_covariance_puts_them(tmp_path):
    import matplotlib.image

    fs = forecasts()
    dpi = 100
    fig, axes, params = plotting.triangle_figure(fs, ["wide.h5", "narrow.h5"], dpi=dpi)
    assert params == NAMES
    path = tmp_path / "t.png"
    fig.savefig(path, dpi=dpi)
    img = matplotlib.image.imread(path)
    height = img.shape[0]

    def pixel(ax, x, y):
        px, py = ax.transData.transform((x, y))
        return img[int(round(height - py)), int(round(px)), :3]

    def near_colored(ax, x, y):
        px, py = ax.transData.transform((x, y))
        r, c = int(round(height - py)), int(round(px))
        patch = img[r - 1:r + 2, c - 1:c + 2, :3]
        return np.any(np.abs(patch - 1.0).sum(axis=-1) > 0.3)

    # Panel (w0 vs Omega_m): points on the 1- and 2-sigma contours of both forecasts,
    # computed here from the 2x2 marginalized covariance by hand (eigen-decomposition).
    ax = axes[(1, 0)]
    for scale in (1.0, 1.0 / 9.0):
        c2 = COV[:2, :2] * scale
        evals, evecs = np.linalg.eigh(c2)
        for dchi2 in (2.30, 6.18):
            for k in range(2):
                for sign in (1, -1):
                    x, y = np.array([0.3, -1.0]) + sign * math.sqrt(dchi2 * evals[k]) * evecs[:, k]
                    assert near_colored(ax, x, y), (scale, dchi2, k, sign)
    # Inside the narrow 1-sigma ellipse: filled, and coloured with the narrow forecast's colour
    # (orange channel dominates blue there).
    r, g, b = pixel(ax, 0.3, -1.0)
    assert r > b
    # Outside every 2-sigma ellipse (a panel corner): background.
    (lo_x, hi_x), (lo_y, hi_y) = ax.get_xlim(), ax.get_ylim()
    corner = (lo_x + 0.1 * (hi_x - lo_x), hi_y - 0.1 * (hi_y - lo_y))
    d = np.array(corner) - [0.3, -1.0]
    assert d @ np.linalg.inv(COV[:2, :2]) @ d > 6.18  # outside the widest 2-sigma contour
    assert np.allclose(pixel(ax, *corner), 1.0)
    # Diagonal: the 1D marginal peaks at the fiducial, and the curve is drawn there.
    assert near_colored(axes[(2, 2)], 0.0, 1.0)
    # Legend names each file.
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["wide.h5", "narrow.h5"]


def test_params_selection_and_errors():
    fs = forecasts()
    fig, axes, params = plotting.triangle_figure(fs, ["a", "b"], params=["wa", "w0"])
    assert params == ["wa", "w0"] and set(axes) == {(0, 0), (1, 0), (1, 1)}
    with pytest.raises(InputError, match="unknown parameter 'S8'"):
        plotting.triangle_figure(fs, ["a", "b"], params=["S8"])
    other = FisherMatrix(np.eye(1), ["A_IA"])
    with pytest.raises(InputError, match="share no parameter"):
        plotting.triangle_figure([fs[0], other], ["a", "b"])


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(plotting.MissingDependencyError, match=r"fishcast\[plot\]"):
        plotting.triangle_plot(forecasts(), ["a", "b"], tmp_path / "x.png")


def test_core_does_not_import_matplotlib():
    code = ("import sys, fishcast.plotting, fishcast.io.exchange, fishcast.cli.main; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)
