"""Benchmark (issue 13: Fisher matrices from simulations), ratios from one run.

simfisher (every estimator, the convergence series and the verdict; :func:`fishcast.simfisher.estimate`)
on 10,000 simulations of a 1,000-long data vector with 10 parameters and 20 reshuffles:
4,000 fiducial realizations and 300 per parameter and side at theta +- step
(4,000 + 10 x 2 x 300 = 10,000). Prints

    total time / (reshuffles x time of one Cholesky factorization of the 1000 x 1000 covariance)

(target <= 5: the cost is linear algebra, not Python loops), the time of reading the SIMS
file, and a breakdown of the library time.

Run:  python tests/benchmarks/bench_simfisher.py [--n-fid 4000] [--n-deriv 300] [--d 1000] [--p 10]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import pathlib

import numpy as np


def make(n_fid: int, n_deriv: int, d: int, p: int, seed: int = 0):
    from fishcast.simfisher import Simulations

    rng = np.random.default_rng(seed)
    # a correlated covariance: AR(1)-like correlation times a varying amplitude
    amp = 1.0 + rng.random(d)
    Lc = np.linalg.cholesky(0.5 ** np.abs(np.subtract.outer(np.arange(d), np.arange(d))) * np.outer(amp, amp))
    D = 5.0 * rng.standard_normal((p, d))
    steps = np.full(p, 0.1)
    fid = rng.standard_normal((n_fid, d)) @ Lc.T
    minus = -steps[:, None, None] * D[:, None, :] + rng.standard_normal((p, n_deriv, d)) @ Lc.T
    plus = steps[:, None, None] * D[:, None, :] + rng.standard_normal((p, n_deriv, d)) @ Lc.T
    names = tuple(f"theta_{i}" for i in range(p))
    return Simulations(names, np.zeros(p), steps, fid, minus, plus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-fid", type=int, default=4000)
    ap.add_argument("--n-deriv", type=int, default=300)
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--p", type=int, default=10)
    ap.add_argument("--reshuffles", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="print the 12 most expensive calls")
    args = ap.parse_args()

    import scipy.linalg

    from fishcast.io.simulations import read_simulations, write_simulations
    from fishcast.simfisher import SimFisherConfig, estimate

    sims = make(args.n_fid, args.n_deriv, args.d, args.p)
    total_sims = args.n_fid + 2 * args.p * args.n_deriv
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "sims.h5"
        write_simulations(path, sims)
        t0 = time.perf_counter()
        sims = read_simulations(path)
        t_read = time.perf_counter() - t0

    C = np.cov(sims.fiducial.T)
    chol = []
    for _ in range(5):
        t0 = time.perf_counter()
        scipy.linalg.cholesky(C, lower=True, check_finite=False)
        chol.append(time.perf_counter() - t0)
    t_chol = float(np.median(chol))

    config = SimFisherConfig(reshuffles=args.reshuffles)
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    result = estimate(sims, config)
    if prof:
        prof.disable()
    total = time.perf_counter() - t0

    ratio = total / (args.reshuffles * t_chol)
    print(f"simulations: {total_sims} ({args.n_fid} fiducial + {args.p} x 2 x {args.n_deriv} derivative), "
          f"data length {args.d}, {args.p} parameters, {args.reshuffles} reshuffles, "
          f"{len(result.convergence.n_derivative)} convergence subsets")
    print(f"one Cholesky factorization ({args.d} x {args.d}): {t_chol * 1e3:.1f} ms (median of 5)")
    print(f"simfisher total: {total:.3f} s;  reading the SIMS file: {t_read:.3f} s")
    print(f"total / (reshuffles x one Cholesky) = {ratio:.2f}   (target <= 5)   [{'OK' if ratio <= 5 else 'OVER'}]")
    print(f"verdict: {result.verdict} ({result.reason})")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
