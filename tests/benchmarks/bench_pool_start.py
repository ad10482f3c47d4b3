"""Benchmark (issue 15, the process pool): what starting a 2-worker pool costs, ``forkserver``
(the default on Linux: one server process imports the worker modules once, each worker is a
fork of it) against ``spawn`` (each worker a fresh interpreter that imports numpy, scipy,
camb and fishcast itself). Ratios from one run.

Each measurement is a fresh child process (the forkserver is one per process), interleaved,
``--rounds`` times: it makes a ``ProcessExecutor(2, threads=1)`` and runs two tasks that
import what a cosmology task imports. Printed: the CPU seconds of the workers and of the
server (user + system: ``getrusage`` in each worker, ``/proc/<pid>/stat`` of the server),
and the wall time to both results, as medians and as ratios forkserver / spawn.

Run:  python tests/benchmarks/bench_pool_start.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _task(_):
    import camb  # noqa: F401 -- what a cosmology task imports
    import fishcast.cosmology  # noqa: F401
    import fishcast.pipeline.cache  # noqa: F401

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return os.getpid(), ru.ru_utime + ru.ru_stime


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(method: str) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fishcast.pipeline.execute import ProcessExecutor, Task

    t0 = time.perf_counter()
    ex = ProcessExecutor(2, threads=1, start_method=method)
    out = ex.run([Task(f"t{i}", _task, (i,)) for i in range(2)])
    wall = time.perf_counter() - t0
    server = 0.0
    if method == "forkserver":
        from multiprocessing import forkserver

        server = _proc_cpu(forkserver._forkserver._forkserver_pid)
    ex.close()
    return {"wall": wall, "cpu": sum(o.value[1] for o in out) + server}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    runs: dict[str, list[dict]] = {"spawn": [], "forkserver": []}
    for r in range(args.rounds):
        for method in runs:
            res = subprocess.run([sys.executable, __file__, "--one", method], capture_output=True, text=True,
                                 cwd=os.path.dirname(os.path.abspath(__file__)))
            if res.returncode:
                raise SystemExit(res.stderr)
            runs[method].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {method:10s} wall {runs[method][-1]['wall']:.2f} s  CPU {runs[method][-1]['cpu']:.2f} s",
                  flush=True)

    def med(m: str, k: str) -> float:
        v = sorted(x[k] for x in runs[m])
        return v[len(v) // 2]

    print(f"\ncores usable: {len(os.sched_getaffinity(0))}; rounds: {args.rounds}")
    print(f"pool start-up CPU  forkserver / spawn = {med('forkserver', 'cpu') / med('spawn', 'cpu'):.3f}   "
          f"({med('forkserver', 'cpu'):.2f} s / {med('spawn', 'cpu'):.2f} s of workers and server)")
    print(f"pool start-up wall forkserver / spawn = {med('forkserver', 'wall') / med('spawn', 'wall'):.3f}   "
          f"({med('forkserver', 'wall'):.2f} s / {med('spawn', 'wall'):.2f} s to both first results)")


if __name__ == "__main__":
    main()
