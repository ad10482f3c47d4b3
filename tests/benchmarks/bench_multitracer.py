"""Benchmark: multi-tracer Fisher assembly against one CAMB call (issue 3).

One shell, 4 tracers, 200 k bands, 50 mu points.  Measured in this one run:

* t_camb: one ``camb.get_results`` of a standard flat LCDM (Planck-like) with the linear
  matter power spectrum at 10 redshifts up to k = 10 1/Mpc (no nonlinear model), timed here;
* t_band: ``band_fisher`` (tracer covariance, analytic derivatives, the whole 205 x 205
  band-power / bias / f Fisher matrix) -- the "Fisher assembly";
* t_gram: the probe metric ``fisher_trace`` for 12 parameters from precomputed
  derivatives of the tracer covariance (what the pipeline calls per probe).

Prints the ratios t_band / t_camb (target < 0.05) and t_gram / t_camb.  Each fast step is
timed as the median of 7 repetitions after one warm-up; CAMB once after a warm-up call.
Run: ``python tests/benchmarks/bench_multitracer.py``.  Not collected by pytest.
"""

from __future__ import annotations

import statistics
import time

import camb
import numpy as np

from fishcast.probes import multitracer_clustering as mt


def camb_call() -> float:
    pars = camb.CAMBparams()
    pars.set_cosmology(H0=67.5, ombh2=0.022, omch2=0.122, mnu=0.06, omk=0.0, tau=0.06)
    pars.InitPower.set_params(As=2.1e-9, ns=0.965)
    pars.set_matter_power(redshifts=list(np.linspace(0.0, 2.0, 10)), kmax=10.0)
    pars.NonLinear = camb.model.NonLinear_none
    t0 = time.perf_counter()
    camb.get_results(pars)
    return time.perf_counter() - t0


def median_time(fn, repeat: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    n_tracer, n_k, n_mu = 4, 200, 50
    _, k, k2dk = mt.k_bands(0.005, 0.3, n_k)
    mu, w = mt.mu_quadrature(n_mu)
    pk = 2.0e4 * (k / 0.02) / (1.0 + (k / 0.02) ** 2.4)
    b = np.array([1.34, 2.0, 1.2, 2.4])
    n = np.array([5e-4, 3e-4, 6e-4, 2e-5])
    sigma = np.array([3.0, 3.0, 3.5, 6.0])
    V, f = 2.0e9, 0.8

    def band():
        return mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b, f, n, V, sigma=sigma, rsd=True))

    C = mt.tracer_covariance(k, mu, pk, b, f, n, sigma)
    dlnP, dlnb, df = mt.covariance_derivatives(k, mu, pk, b, f, sigma)
    rng = np.random.default_rng(0)
    derivs = np.concatenate([
        dlnP[None] * (1 + 0.1 * rng.standard_normal((7, n_k, 1, 1, 1))), dlnb, df[None]
    ])  # 12 parameters
    W = mt.mode_weights(V, k2dk, w)

    def gram():
        return mt.fisher_trace(C, derivs, W)

    camb_call()  # warm-up (imports, first-call overheads)
    t_camb = camb_call()
    t_band = median_time(band)
    t_gram = median_time(gram)
    F = band()
    print(f"one shell, {n_tracer} tracers, {n_k} k bands, {n_mu} mu points; Fisher {F.shape}")
    print(f"t_band / t_camb = {t_band / t_camb:.4f}   (target < 0.05)")
    print(f"t_gram / t_camb = {t_gram / t_camb:.4f}   (12 parameters)")


if __name__ == "__main__":
    main()
