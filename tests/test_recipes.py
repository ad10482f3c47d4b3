"""Every recipe in recipes/ validates as shipped and runs end to end (on reduced grids to
keep CI fast), and its file opens with the reader and `fishcast show`."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import textwrap

import h5py
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


ROOT = pathlib.Path(__file__).resolve().parent.parent


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


#: run in a fresh process from the copy: records every file the run opens (an audit hook), then
#: runs `fishcast run` on each recipe (reduced grids) and `fishcast show` on its output
_FRESH = textwrap.dedent("""
    import json, os, sys
    opened = set()

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.add(os.path.realpath(os.fsdecode(args[0])))

    sys.addaudithook(hook)
    from click.testing import CliRunner
    from fishcast.cli.main import cli
    jobs = json.loads(sys.argv[1])
    codes = []
    for args in jobs:
        res = CliRunner().invoke(cli, args)
        codes.append([res.exit_code, res.output[-2000:]])
    print(json.dumps({"codes": codes, "opened": sorted(opened)}))
    """)


def test_a_fresh_clone_runs_every_recipe_with_no_file_outside_it(tmp_path, cache_dir):
    """Issue 14, class 8: the repository's tracked files copied elsewhere (a fresh clone); from
    there, `fishcast run` on every shipped recipe exactly as shipped (no table path replaced;
    grids reduced) and `fishcast show` on its file. Every file the process opens is inside the
    copy, the output or the cache folder, or is code/data of the installed packages; nothing in
    this working tree (its data/ or recipes/) or elsewhere is read. The WL files carry f_sky,
    n_gal and sigma_e as datasets."""
    import json

    clone = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, clone / rel)
    recipes = sorted(p for p in (clone / "recipes").glob("*.yaml") if not p.name.startswith("grid-"))
    assert len(recipes) == len(RECIPES)
    out = tmp_path / "out"
    out.mkdir()
    jobs = []
    for r in recipes:
        sets = [s for s in _reductions(yaml.safe_load(r.read_text()), pathlib.Path("unused")) if "luminosity" not in s]
        args = ["run", f"recipes/{r.name}", "-o", str(out / f"{r.stem}.h5"), "--cache-dir", str(cache_dir), "-q"]
        for s in sets:
            args += ["--set", s]
        jobs += [args, ["show", str(out / f"{r.stem}.h5")]]
    proc = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(jobs)], cwd=clone, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for args, (code, output) in zip(jobs, report["codes"]):
        assert code in ((0, 3) if args[0] == "run" else (0,)), (args[:2], output)
    allowed = [clone, out, pathlib.Path(cache_dir), pathlib.Path(sys.prefix), pathlib.Path(sys.base_prefix),
               ROOT / "fishcast", ROOT / "cli", pathlib.Path("/dev"), pathlib.Path("/proc"), pathlib.Path("/sys"),
               pathlib.Path("/etc"), pathlib.Path("/usr"), pathlib.Path("/tmp").resolve() / "matplotlib"]
    allowed = [pathlib.Path(str(a)).resolve() for a in allowed]
    outside = [p for p in report["opened"]
               if not any(pathlib.Path(p) == a or a in pathlib.Path(p).parents for a in allowed)
               and not p.endswith((".py", ".pyc", ".so", ".pth"))]
    assert outside == [], outside
    assert not any(str(ROOT / "data") in p or str(ROOT / "recipes") in p for p in report["opened"])
    assert any(p.endswith("clone/data/istf_lumratio.dat") for p in report["opened"])
    for r in recipes:
        with h5py.File(out / f"{r.stem}.h5") as f:
            if "data/weak_lensing" in f:
                wl = yaml.safe_load(r.read_text())["probes"]["weak_lensing"]
                g = f["data/weak_lensing"]
                if "f_sky" in wl:
                    assert float(g["f_sky"][()]) == wl["f_sky"]
                assert float(g["n_gal"][()]) == wl["n_gal"] and g["n_gal"].attrs["units"] == "arcmin^-2"
                assert float(g["sigma_e"][()]) == wl["shape_noise"]["sigma_e"]
                assert g["sigma_e_convention"][()].decode() == wl["shape_noise"]["convention"]
