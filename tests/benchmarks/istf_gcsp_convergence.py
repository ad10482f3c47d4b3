"""The numerical convergence of the Euclid IST:F GCsp comparison (tests/test_istf_gcsp.py).

Not a speed benchmark and not in the test run: it runs both recipes
(recipes/euclid-gcsp-pessimistic.yaml, -optimistic.yaml) with the given ``--set`` overrides
through the CLI and prints the ratios fishcast / IST:F of the seven marginalized 1-sigma errors
and of FoM(w0, wa), computed as the test does (``_ratios``). The Gaussian-validity check is
switched off: it evaluates the chi^2 after the Fisher matrix is made and does not change it.
Each result is appended to ``--table`` (JSON lines) so that a study can be resumed.

    python tests/benchmarks/istf_gcsp_convergence.py --label boost2 \\
        --set cosmology.accuracy.accuracy_boost=2 --set cosmology.accuracy.k_per_logint=30

Use one cache folder for a whole study (``--cache-dir``): the points of one CAMB setting are
shared by every derivative setting that needs them (a fixed step at a rung of the sweep's
ladder reuses the sweep's points). The table of the module docstring of
tests/test_istf_gcsp.py was measured with this script.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_istf_gcsp import COSMO, REF, _ratios  # noqa: E402  (the test's own ratios)

from fishcast.io import read_fisher  # noqa: E402
from fishcast.io.exchange import read_text_fisher  # noqa: E402


def run(setting: str, sets: list[str], cache_dir: str, out_dir: pathlib.Path) -> dict:
    out = out_dir / f"euclid-gcsp-{setting}.h5"
    cmd = [sys.executable, "-c", "from fishcast.cli.main import main; main()", "run", str(ROOT / "recipes" / f"euclid-gcsp-{setting}.yaml"),
           "-o", str(out), "--cache-dir", cache_dir, "-q", "--set", "diagnostics.gaussian_check=false"]
    for s in sets:
        cmd += ["--set", s]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{setting}: fishcast exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
    ours, _ = read_fisher(out)
    ref = read_text_fisher(REF / f"EuclidISTF_GCsp_w0wa_flat_{setting}.txt",
                           REF / f"EuclidISTF_GCsp_w0wa_flat_{setting}.paramnames")
    marg, _, fom = _ratios(ours, ref)
    return {"setting": setting, "sets": sets, "exit": proc.returncode, "seconds": round(seconds, 1),
            "marginalized": marg, "fom": fom}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache-dir", default=str(pathlib.Path(tempfile.gettempdir()) / "gcspconv_cache"))
    ap.add_argument("--table", default=None, help="JSON-lines file the rows are appended to")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for setting in ("pessimistic", "optimistic"):
            row = {"label": args.label, **run(setting, args.sets, args.cache_dir, pathlib.Path(tmp))}
            if args.table:
                with open(args.table, "a") as f:
                    f.write(json.dumps(row) + "\n")
            print(f"{args.label:24s} {setting:11s} " + " ".join(f"{n} {row['marginalized'][n]:.3f}" for n in COSMO)
                  + f"  FoM {row['fom']:.3f}  ({row['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
