"""Exact counts-in-cells Fisher of a volume-limited box (fishcast/probes/cells.py).

References: numerical quadrature (scipy.integrate.quad) of the cell-averaged correlation;
the trace formula Tr[Cov^-1 Cov_,i Cov^-1 Cov_,j]/2 with explicit matrices (Tegmark, Taylor
& Heavens 1997 eq. 15); the Fourier-space Fisher of the same cell-averaged field on the cell
lattice, which the box must approach as it grows (physics.md section 2).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from fishcast import exact_cells as cells

SIDE = 1.0  # cell side [Mpc/h]
B = np.array([1.0, 2.0])
N = np.array([0.05, 0.02])  # (h/Mpc)^3: 0.05 and 0.02 objects per cell


def _gauss(A=50.0, R=0.5):
    return lambda k: A * np.exp(-(k**2) * R**2)


def _lorentz(k):
    """P(k) = 30 (Mpc/h)^3 / (1 + (0.8 k)^2)^2: xi(r) falls like exp(-r / 0.8 Mpc/h)."""
    return 30.0 / (1.0 + (0.8 * k) ** 2) ** 2


def _mismatch(F_box, F_fourier):
    """max_ij |F_box - F_fourier|_ij / sqrt(F_ii F_jj) (Fourier diagonal)."""
    d = np.sqrt(np.diag(F_fourier))
    return np.abs((F_box - F_fourier) / np.outer(d, d)).max()


def test_cell_window_is_sinc_squared():
    k = np.array([0.0, 1.0, 2 * np.pi])
    w = cells.cell_window_sq(k, 0 * k, 0 * k, 1.0)
    np.testing.assert_allclose(w, [1.0, (np.sin(0.5) / 0.5) ** 2, 0.0], atol=1e-15)


@pytest.mark.parametrize("R,side", [(1.0, 1.0), (0.5, 2.0), (3.0, 1.0)])
def test_gaussian_cell_correlation_matches_quadrature(R, side):
    g = cells.gaussian_cell_correlation_1d(R, side, 8)
    ref = [quad(lambda k: np.exp(-k * k * R * R) * np.sinc(k * side / (2 * np.pi)) ** 2
                * np.cos(k * d * side) / np.pi, 0, 40.0 / R, limit=500)[0] for d in range(8)]
    np.testing.assert_allclose(g, ref, rtol=1e-8, atol=1e-14)


def test_fft_cell_correlation_matches_closed_form():
    m, A, R = 6, 50.0, 0.5
    xi = cells.cell_correlation(_gauss(A, R), SIDE, m, oversample=4, n_images=3)
    g = cells.gaussian_cell_correlation_1d(R, SIDE, m)
    ref = A * np.einsum("i,j,k->ijk", g, g, g)
    np.testing.assert_allclose(xi[:m, :m, :m], ref, rtol=0, atol=1e-12 * ref.max())
    # separations in the other direction are the same (wrapped FFT order)
    np.testing.assert_allclose(xi[-1, 0, 0], xi[1, 0, 0], rtol=1e-12)


def test_eigen_reduction_equals_dense_trace_over_cells_and_tracers():
    m = 4
    for pk in (_gauss(), _lorentz):
        xi = cells.cell_correlation(pk, SIDE, m, oversample=4, n_images=2)
        Xi = cells.cell_correlation_matrix(xi, m)
        F_dense = cells.box_fisher_dense(Xi, SIDE, B, N)
        F_eig = cells.box_fisher(pk, SIDE, m, B, N, oversample=4, n_images=2)
        np.testing.assert_allclose(F_eig, F_dense, rtol=0, atol=1e-10 * np.abs(F_dense).max())
    # the Gaussian separable path equals the general path
    F_sep = cells.box_fisher_gaussian(50.0, 0.5, SIDE, 6, B, N)
    F_gen = cells.box_fisher(_gauss(), SIDE, 6, B, N, oversample=4, n_images=3)
    np.testing.assert_allclose(F_gen, F_sep, rtol=0, atol=1e-10 * np.abs(F_sep).max())


def test_amplitude_and_biases_degenerate_in_the_box_too():
    F = cells.box_fisher_gaussian(50.0, 0.5, SIDE, 8, B, N)
    assert np.linalg.matrix_rank(F, tol=1e-10 * np.abs(F).max()) == 2
    assert np.abs(F @ np.array([1.0, -0.5, -0.5])).max() < 1e-10 * np.abs(F).max()


def test_box_approaches_fourier_within_one_percent():
    """Gaussian P(k): exact boxes of m^3 cells, m up to 64, against the lattice Fourier
    Fisher of the same volume: the mismatch shrinks as the box grows and is < 1% at m = 64."""
    A, R = 50.0, 0.5
    mism = []
    for m in (8, 16, 32, 64):
        F_box = cells.box_fisher_gaussian(A, R, SIDE, m, B, N)
        F_four = cells.fourier_fisher_gaussian(A, R, SIDE, (m * SIDE) ** 3, B, N, n_grid=64)
        mism.append(_mismatch(F_box, F_four))
    mism = np.array(mism)
    assert np.all(np.diff(mism) < 0)
    assert mism[-1] < 0.01
    assert mism[0] > 0.01  # the small box does differ: the test can fail


def test_box_approaches_fourier_general_power_spectrum():
    """A non-separable P(k) through the FFT cell correlation and the dense eigenproblem:
    the mismatch shrinks monotonically with the box (edge effects ~ 1/m)."""
    mism = []
    for m in (4, 6, 8, 10):
        F_box = cells.box_fisher(_lorentz, SIDE, m, B, N, oversample=4, n_images=2)
        F_four = cells.fourier_fisher(_lorentz, SIDE, (m * SIDE) ** 3, B, N, n_grid=40)
        mism.append(_mismatch(F_box, F_four))
    mism = np.array(mism)
    assert np.all(np.diff(mism) < 0)
    # consistent with 1/m edge effects: m * mismatch roughly constant
    assert np.ptp(mism * np.array([4, 6, 8, 10])) < 0.3 * np.mean(mism * np.array([4, 6, 8, 10]))
