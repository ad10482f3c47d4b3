"""`fishcast validate` on a batch grid file validates every design without computing (issue 14,
class 8), and a degenerate matrix's stored trust reason names the parameters (class 7)."""

from __future__ import annotations

import pathlib

import numpy as np
from click.testing import CliRunner

from fishcast.cli.main import cli
from fishcast.diagnostics import DiagnosticsConfig, conditioning_report

ROOT = pathlib.Path(__file__).parent.parent


def test_validate_accepts_the_shipped_grid(tmp_path):
    before = set(tmp_path.iterdir())
    res = CliRunner().invoke(cli, ["validate", str(ROOT / "recipes" / "grid-wl-example.yaml")])
    assert res.exit_code == 0, res.output
    assert "grid of 27 designs: 27 valid, 0 failed" in res.output
    assert set(tmp_path.iterdir()) == before


def test_validate_grid_names_each_bad_design(tmp_path):
    (tmp_path / "base.yaml").write_text((ROOT / "recipes" / "lsst-y10-wl.yaml").read_text())
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\nsurvey: base.yaml\nset:\n  probes.weak_lensing.area_deg2: null\n"
                    "axes:\n  probes.weak_lensing.f_sky: [0.2, -1, 0.3]\n")
    res = CliRunner().invoke(cli, ["validate", str(grid)])
    assert res.exit_code == 2, res.output
    assert "2 valid, 1 failed" in res.output
    assert "design f_sky=-1: FAILED (validation)" in res.output
    assert "probes.weak_lensing.f_sky" in res.output
    res = CliRunner().invoke(cli, ["validate", str(grid), "--set", "name=x"])
    assert res.exit_code == 2


def test_degenerate_trust_reason_names_the_parameters():
    F = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # a and b exactly degenerate
    rep = conditioning_report(F, ["alpha", "beta", "gamma"], DiagnosticsConfig(), raise_on_degenerate=False)
    text = " ".join(rep.reasons)
    assert rep.verdict == "FAIL"
    named = text.split("weak directions", 1)[1]
    assert "alpha" in named and "beta" in named and "gamma" not in named, text
    assert "--allow-degenerate" in text
