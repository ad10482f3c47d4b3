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


def _count_reads_and_parses(monkeypatch):
    """Count the YAML files read (fishcast.yamlio.read_yaml_file) and the texts parsed
    (fishcast.yamlio.load_yaml) from here on."""
    from fishcast import yamlio

    counts = {"read": [], "parse": 0}
    read, load = yamlio.read_yaml_file, yamlio.load_yaml

    def counting_read(path, *args, **kwargs):
        counts["read"].append(pathlib.Path(path).name)
        return read(path, *args, **kwargs)

    def counting_load(*args, **kwargs):
        counts["parse"] += 1
        return load(*args, **kwargs)

    monkeypatch.setattr(yamlio, "read_yaml_file", counting_read)
    monkeypatch.setattr(yamlio, "load_yaml", counting_load)
    return counts


def test_validate_reads_and_parses_each_file_once(monkeypatch):
    """`fishcast validate FILE` reads and parses the file once (it was read and parsed to tell
    a grid from a survey, then again as the one or the other), and a grid's base survey once
    for all its designs (it was read and parsed once per design: 27 times for the shipped
    grid); `fishcast batch` plans a grid the same way (plan_batch). PyYAML's reader is most
    of the time of a validate after its imports."""
    counts = _count_reads_and_parses(monkeypatch)
    res = CliRunner().invoke(cli, ["validate", str(ROOT / "recipes" / "euclid-wl-pessimistic.yaml")])
    assert res.exit_code == 0, res.output
    assert counts == {"read": ["euclid-wl-pessimistic.yaml"], "parse": 1}

    counts = _count_reads_and_parses(monkeypatch)
    res = CliRunner().invoke(cli, ["validate", str(ROOT / "recipes" / "grid-wl-example.yaml")])
    assert res.exit_code == 0 and "27 valid" in res.output, res.output
    assert counts == {"read": ["grid-wl-example.yaml", "lsst-y10-wl.yaml"], "parse": 2}


def test_a_base_survey_that_cannot_be_parsed_fails_every_design(tmp_path):
    """The base survey, read once for the grid, fails each design with its located message
    (as when each design read it) when it cannot be parsed."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\nsurvey: base.yaml\naxes:\n  probes.weak_lensing.f_sky: [0.2, 0.3]\n")
    (tmp_path / "base.yaml").write_text("name: [unclosed\n")
    res = CliRunner().invoke(cli, ["validate", str(grid)])
    assert res.exit_code == 2, res.output
    assert "0 valid, 2 failed" in res.output
    failed = [ln for ln in res.output.splitlines() if "FAILED (validation)" in ln]
    assert len(failed) == 2 and all("base.yaml:" in ln and "not valid YAML" in ln for ln in failed), res.output
