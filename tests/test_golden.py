"""The CI reproducibility check: today's forecast of tests/golden/small-wl.yaml agrees with
the golden file kept in the repository (`fishcast compare`). The golden file guards against
change only; correctness is tested elsewhere against pyccl and analytic results.
Regenerate it only on purpose: python tests/golden/regenerate.py (say why in the commit)."""

from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner

from fishcast.cli.main import cli

GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def today(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("golden") / "today.h5"
    res = CliRunner().invoke(cli, ["run", str(GOLDEN / "small-wl.yaml"), "-o", str(out), "--cache-dir", str(cache_dir), "-q"])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("on", ["sigma", "fisher", "data"])
def test_forecast_matches_the_golden_file(today, on):
    res = CliRunner().invoke(cli, ["compare", str(GOLDEN / "small-wl.h5"), str(today), "--rtol", "1e-3", "--on", on])
    assert res.exit_code == 0, res.output
    assert "agree" in res.output
