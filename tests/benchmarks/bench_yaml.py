"""The YAML reader of `fishcast validate` (not in the test run): PyYAML's composer with libyaml
(yaml.CSafeLoader, fishcast's default when PyYAML has it) against its pure-Python one (the
fallback), on the shipped recipes, in one run.

Prints, per recipe, the best of ``--rounds`` timings of fishcast.yamlio.load_yaml and of the
whole `fishcast validate` command in this process (imports done: what a validate costs after
its start-up; a grid validates every design, whose base survey is read and parsed once), and
the ratio libyaml / pure-Python. Rounds alternate the two readers, so that a load on the
machine touches both alike.

    python tests/benchmarks/bench_yaml.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import time

import yaml
from _common import ROOT
from click.testing import CliRunner

from fishcast.cli.main import cli
from fishcast.yamlio import load_yaml

RECIPES = ("euclid-wl-pessimistic.yaml", "euclid-3x2pt-optimistic.yaml", "desi-multitracer.yaml",
           "grid-wl-example.yaml")


def best(fn, rounds: int, with_libyaml: bool) -> float:
    was = yaml.__with_libyaml__
    yaml.__with_libyaml__ = with_libyaml
    try:
        ts = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)
    finally:
        yaml.__with_libyaml__ = was


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if not getattr(yaml, "__with_libyaml__", False):
        raise SystemExit("PyYAML has no libyaml here: nothing to compare")
    runner = CliRunner()
    print(f"{'recipe':30s} {'load_yaml C / py (ms)':>24s} {'ratio':>6s}   {'validate C / py (ms)':>24s} {'ratio':>6s}")
    for name in RECIPES:
        path = ROOT / "recipes" / name
        text = path.read_text()

        def load():
            load_yaml(text, str(path))

        def validate():
            res = runner.invoke(cli, ["validate", str(path)])
            assert res.exit_code == 0, res.output

        validate()  # imports of the probes the recipe uses
        lc = lp = vc = vp = float("inf")
        for _ in range(max(1, args.rounds // 5)):  # alternate the readers in blocks of 5
            lc = min(lc, best(load, 5, True))
            lp = min(lp, best(load, 5, False))
            vc = min(vc, best(validate, 5, True))
            vp = min(vp, best(validate, 5, False))
        print(f"{name:30s} {lc * 1e3:10.2f} / {lp * 1e3:10.2f} {lc / lp:6.2f}   "
              f"{vc * 1e3:10.1f} / {vp * 1e3:10.1f} {vc / vp:6.2f}")


if __name__ == "__main__":
    main()
