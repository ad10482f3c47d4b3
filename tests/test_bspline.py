"""The bicubic spline evaluation on shared rows (fishcast.bspline) and the P(k, z) of a
CosmologyResult that uses it (the Limber probes' shape: each z node with one k per ell).

References: analytic B-spline values and polynomial reproduction (a cubic interpolating
spline reproduces a cubic polynomial exactly), and scipy's RectBivariateSpline.ev (FITPACK's
bispeu, an independent implementation of the same spline)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.interpolate import RectBivariateSpline

from fishcast.bspline import bicubic_shared_rows, cubic_basis
from fishcast.cosmology import CosmologyResult


def test_uniform_cubic_basis_has_its_textbook_values():
    # uniform knots: at a knot the non-zero cubic B-splines are 1/6, 2/3, 1/6 (and 0); at a
    # mid-point 1/48, 23/48, 23/48, 1/48 (de Boor, ch. IX; any spline text)
    t = np.concatenate([[0.0] * 3, np.arange(0.0, 11.0), [10.0] * 3])
    vals, first = cubic_basis(t, np.array([4.0, 4.5]))
    assert vals[0] == pytest.approx([1 / 6, 2 / 3, 1 / 6, 0.0], abs=1e-15)
    assert vals[1] == pytest.approx([1 / 48, 23 / 48, 23 / 48, 1 / 48], abs=1e-15)
    assert list(first) == [4, 4]  # B_4..B_7 are the non-zero ones on [t[7], t[8]) = [4, 5)


def test_cubic_basis_is_a_partition_of_unity_up_to_both_ends():
    rng = np.random.default_rng(3)
    inner = np.sort(rng.uniform(0.0, 1.0, 17))
    t = np.concatenate([[0.0] * 4, inner, [1.0] * 4])
    x = np.concatenate([rng.uniform(0.0, 1.0, 500), [0.0, 1.0], inner])
    vals, first = cubic_basis(t, x)
    assert np.all(vals >= -1e-15)
    np.testing.assert_allclose(vals.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert first.min() >= 0 and first.max() + 3 <= t.size - 5


def _poly(x, y):
    """A cubic in x times a cubic in y plus lower terms: reproduced exactly by a bicubic
    interpolating spline."""
    return 0.3 - 1.2 * x + 0.7 * x**2 - 0.15 * x**3 + y * (0.5 + 0.2 * x - 0.05 * x**3) \
        - 0.4 * y**2 + 0.03 * y**3 * (1 + x**2)


def test_shared_rows_reproduce_a_bicubic_polynomial():
    xn = np.linspace(0.0, 3.0, 40) ** 1.5
    yn = np.linspace(-5.0, 2.0, 60)
    spl = RectBivariateSpline(xn, yn, _poly(xn[:, None], yn[None, :]), kx=3, ky=3)
    tx, ty = spl.get_knots()
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(xn[0], xn[-1], 30), [xn[0], xn[-1]]])
    rows = rng.integers(0, x.size, 4000)
    y = np.concatenate([rng.uniform(yn[0], yn[-1], 3998), [yn[0], yn[-1]]])
    got = bicubic_shared_rows(tx, ty, spl.get_coeffs(), x, y, rows)
    np.testing.assert_allclose(got, _poly(x[rows], y), rtol=0, atol=1e-12)


def test_shared_rows_equal_fitpack_pointwise_evaluation():
    # a rough surface (no polynomial): the same spline as FITPACK's bispeu, to rounding
    rng = np.random.default_rng(11)
    xn = np.sort(rng.uniform(0.0, 4.0, 50))
    yn = np.linspace(-9.0, 3.0, 275)
    spl = RectBivariateSpline(xn, yn, rng.normal(0.0, 5.0, (50, 275)), kx=3, ky=3)
    tx, ty = spl.get_knots()
    x = rng.uniform(xn[0], xn[-1], 200)
    rows = np.repeat(np.arange(200), 100)
    y = rng.uniform(yn[0], yn[-1], rows.size)
    got = bicubic_shared_rows(tx, ty, spl.get_coeffs(), x, y, rows)
    ref = spl.ev(x[rows], y)
    scale = np.abs(spl.get_coeffs()).max()
    assert np.abs(got - ref).max() <= 1e-13 * scale


def _result_of(lnp) -> CosmologyResult:
    """A CosmologyResult whose ln P(k, z) [Mpc^3] is lnp(z, ln k) on a CAMB-like table."""
    z = 3.0 * np.linspace(0.0, 1.0, 60) ** 1.5
    k = np.geomspace(1e-4, 10.0, 200)
    table = np.exp(lnp(z[:, None], np.log(k)[None, :]))
    ones = np.ones_like(z)
    return CosmologyResult(params={}, z=z, k=k, pk_lin=table, pk_nl=table, chi=3000.0 * z, hubble=70.0 * ones,
                           growth=ones, growth_rate=ones, sigma8_z=0.8 * ones,
                           derived={"h": 0.7, "H0": 70.0, "Omega_m": 0.3, "sigma8": 0.8})


def _lnp(z, lnk):
    # a bicubic polynomial in (z, ln k) with a P(k)-like size (ln P of a few)
    return 7.0 + 0.2 * lnk - 0.12 * lnk**2 - 0.004 * lnk**3 - 0.6 * z + 0.05 * z**2 * lnk + 0.01 * z**3


def _dlnp_dlnk(z, lnk):
    return 0.2 - 0.24 * lnk - 0.012 * lnk**2 + 0.05 * z**2


@pytest.mark.parametrize("limber_shape", [True, False], ids=["z-nodes-x-ells", "scattered"])
def test_pk_is_the_table_spline_inside_and_a_power_law_beyond(limber_shape):
    """Both evaluation paths of CosmologyResult.pk (shared z rows, the Limber probes' shape,
    and point by point) give the analytic ln P inside the table and, beyond k_max and below
    k_min, the power law with the edge's slope d ln P/d ln k."""
    cosmo = _result_of(_lnp)
    rng = np.random.default_rng(5)
    if limber_shape:  # z (1, n_z) against k (n_ell, n_z), as weak_lensing.signal asks
        zs = np.linspace(0.01, 2.9, 150)
        chi = 3000.0 * zs
        ell = np.geomspace(10.0, 5000.0, 80)
        z_arg, k = zs[None, :], (ell[:, None] + 0.5) / chi[None, :]
        z_full = np.broadcast_to(z_arg, k.shape)
    else:
        k = np.exp(rng.uniform(math.log(1e-5), math.log(40.0), 3000))
        z_arg = z_full = rng.uniform(0.0, 3.0, 3000)
    got = cosmo.pk(z_arg, k)
    lnk = np.log(k)
    lo, hi = math.log(1e-4), math.log(10.0)
    edge = np.clip(lnk, lo, hi)
    want = _lnp(z_full, edge) + _dlnp_dlnk(z_full, edge) * (lnk - edge)
    assert np.any(lnk > hi) and np.any(lnk < hi)
    np.testing.assert_allclose(np.log(got), want, rtol=0, atol=1e-10)


def test_pk_paths_agree_to_rounding_on_a_camb_like_table():
    """The shared-row path equals FITPACK's pointwise evaluation of the same spline within
    1e-12 relative in P (the bound issue 15 sets), on a table with BAO-like wiggles."""
    def lnp(z, lnk):
        k = np.exp(lnk)
        return 9.0 + lnk - 2.5 * np.log1p((k / 0.02) ** 1.4) + 0.05 * np.sin(k * 150.0) * np.exp(-k / 0.3) - 0.8 * z
    cosmo = _result_of(lnp)
    zs = np.linspace(0.0, 3.0, 301)[1:200]
    k = (np.geomspace(10.0, 1500.0, 100)[:, None] + 0.5) / (3000.0 * zs[None, :])
    fast = cosmo.pk(zs[None, :], k)
    slow = cosmo.pk(np.broadcast_to(zs[None, :], k.shape).copy(), k)  # as many z as points: pointwise
    assert np.abs(fast / slow - 1.0).max() < 1e-12
