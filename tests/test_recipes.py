"""Every recipe in recipes/ validates as shipped and runs end to end (on reduced grids to
keep CI fast), and its file opens with the reader and `fishcast show`."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from fishcast.cli.main import cli
from fishcast.io import read_fisher

RECIPES = sorted(p for p in (pathlib.Path(__file__).parent.parent / "recipes").glob("*.yaml")
                 if not p.name.startswith("grid-"))


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert {"euclid-wl-pessimistic.yaml", "euclid-wl-optimistic.yaml", "lsst-y10-wl.yaml",
            "euclid-3x2pt-pessimistic.yaml", "euclid-3x2pt-optimistic.yaml", "lsst-y10-3x2pt.yaml"} <= names


#: cheap CAMB settings for the recipe tests (AccuracyBoost 0.5, 12 redshift nodes, k to 2/Mpc):
#: shared with tests/test_adaptive_recipes.py, so that both use the same cached evaluations
CHEAP = {
    "diagnostics.gaussian_check": False,
    "cosmology.accuracy.n_z": 12,
    "cosmology.accuracy.n_k": 80,
    "cosmology.accuracy.k_max": 2.0,
    "cosmology.accuracy.accuracy_boost": 0.5,
}


def reductions(data: dict, lumratio: pathlib.Path) -> dict:
    """Overrides that shrink a recipe's grids (only for the sections it has); the derivatives
    keep the default mode (adaptive)."""
    out = dict(CHEAP)
    probes = data.get("probes", {})
    if "weak_lensing" in probes:
        wl = probes["weak_lensing"]
        out["probes.weak_lensing.ell.n_bands"] = 8
        out["probes.weak_lensing.integration.n_z"] = 101
        if wl.get("intrinsic_alignment", {}).get("luminosity_ratio_file"):
            out["probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file"] = str(lumratio)
    if "photometric" in probes:
        photo = probes["photometric"]
        out["probes.photometric.ell.n_bands"] = 8
        out["probes.photometric.integration.n_z"] = 101
        if (photo.get("sources") or {}).get("intrinsic_alignment", {}).get("luminosity_ratio_file"):
            out["probes.photometric.sources.intrinsic_alignment.luminosity_ratio_file"] = str(lumratio)
    return out


def _reductions(data: dict, lumratio: pathlib.Path) -> list[str]:
    """:func:`reductions` as --set options."""
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in reductions(data, lumratio).items()]


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_names_its_source(recipe):
    text = recipe.read_text()
    comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
    assert comments, f"{recipe.name} must name its source in a comment"
    assert any(ch.isdigit() for ch in " ".join(comments)), "the source (paper, arXiv id, year) is named"


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_end_to_end(recipe, tmp_path, lumratio, cache_dir):
    data = yaml.safe_load(recipe.read_text())
    sets = _reductions(data, lumratio)
    args = []
    for s in sets:
        args += ["--set", s]
    runner = CliRunner()
    # as shipped (only the table path replaced), then reduced
    lum = [a for s in sets if "luminosity" in s for a in ("--set", s)]
    res = runner.invoke(cli, ["validate", str(recipe)] + lum)
    assert res.exit_code == 0, res.output
    out = tmp_path / f"{recipe.stem}.h5"
    res = runner.invoke(cli, ["run", str(recipe), "-o", str(out), "--cache-dir", str(cache_dir), "-q"] + args)
    assert res.exit_code in (0, 3), res.output
    fisher, meta = read_fisher(out)
    assert list(fisher.names) == list(dict.fromkeys(fisher.names))
    assert np.all(np.isfinite(fisher.matrix))
    assert meta["survey_name"] == data["name"]
    res = runner.invoke(cli, ["show", str(out)])
    assert res.exit_code == 0, res.output
    for name in fisher.names:
        assert name in res.output
