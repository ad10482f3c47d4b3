"""Exact multi-tracer counts-in-cells Fisher for a volume-limited cubic box (position space).

A cubic box of side ``L = m * side`` [Mpc/h] with constant densities ``n_a`` [(h/Mpc)^3] is
split into ``M = m^3`` cubic cells of side ``side`` [Mpc/h] and volume ``V_c = side^3``.  The
count of tracer a in cell i is Gaussian with mean ``n_a V_c`` and covariance

    Cov[N_ai, N_bj] = n_a n_b V_c^2 b_a b_b xi_cells(i, j) + delta_ab delta_ij n_a V_c

(real space: no RSD here).  ``xi_cells(i, j)`` is the cell-averaged correlation of the
matter field,

    xi_cells(i, j) = Int d^3k/(2 pi)^3 P(k) W^2(k) exp(i k.(x_i - x_j)),
    W^2(k) = prod_{axis} sinc^2(k_axis side / 2),   sinc(x) = sin(x)/x,

and the Fisher matrix of the parameters ``(ln A, ln b_1, ..., ln b_N)`` (A the amplitude of
P) is the trace formula over all cells and tracers (the mean does not depend on them):

    F_ij = 1/2 Tr[Cov^-1 Cov_,i Cov^-1 Cov_,j].

Evaluation.  With ``u_a = n_a V_c b_a`` and ``D = diag(n_a V_c)``, ``Cov = u u^T (x) Xi +
D (x) 1``.  Whitening with ``D^-1/2`` and diagonalizing the M x M cell correlation matrix
``Xi = Q diag(lambda) Q^T`` splits the trace into M independent N x N blocks, congruent to the
Fourier-space tracer covariance ``b_a b_b p_j + delta_ab / n_a`` with ``p_j = lambda_j V_c``
[(Mpc/h)^3].  So the exact box Fisher is ``sum_j f(p_j)`` with ``f`` the per-mode Fisher of
physics.md section 2 (closed forms, checked against the general trace formula in the tests)
-- only the eigenvalues of Xi are needed.  :func:`box_fisher_dense` does the trace over the
full (N M) x (N M) matrices directly, for checking that reduction on small boxes.

The Fourier counterpart (:func:`fourier_fisher`) is the same per-mode Fisher integrated over
the cell lattice's Brillouin zone, ``V Int_BZ d^3k/(2 pi)^3 f(P_c(k))``, with the aliased cell
power ``P_c(k) = sum_n P(|k + 2 pi n/side|) W^2(k + 2 pi n/side)``: the counts sample the
cell-averaged field on a lattice, so its modes live in the Brillouin zone.  The exact box
approaches it as the box grows (edge effects of a non-periodic box fall like 1/m).

xi_cells for a general P(k) (:func:`cell_correlation`): on a grid of k spacing
``2 pi / (oversample L)`` in the Brillouin zone, the aliased power summed over
``(2 n_images + 1)^3`` images, then one inverse FFT.  This equals the exact integral up to the
truncated image sum and periodic copies of xi at distance ``oversample * L``: choose
``oversample`` so that xi is negligible there.  For a Gaussian ``P(k) = A exp(-k^2 R^2)`` the
integrand factorizes per axis and :func:`gaussian_cell_correlation_1d` gives the exact cell
average in closed form (erfc), which makes large boxes cheap (:func:`box_fisher_gaussian`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import erfc

from fishcast.errors import InputError
from fishcast.probes.multitracer_clustering import (
    closed_form_lnb_lnb,
    closed_form_lnP_lnb,
    closed_form_lnP_lnP,
)

PowerSpectrum = Callable[[np.ndarray], np.ndarray]  # k [h/Mpc] -> P [(Mpc/h)^3]


def cell_window_sq(kx, ky, kz, side: float) -> np.ndarray:
    """``W^2 = prod sinc^2(k_i side/2)`` of a cubic cell of side [Mpc/h]; k in [h/Mpc]."""
    s = 0.5 * side / np.pi  # np.sinc(x) = sin(pi x)/(pi x)
    return (np.sinc(kx * s) * np.sinc(ky * s) * np.sinc(kz * s)) ** 2


def _bz_axis(n_grid: int, side: float) -> np.ndarray:
    """FFT-ordered wavenumbers [h/Mpc] of a periodic lattice of n_grid cells of side."""
    return 2.0 * np.pi * np.fft.fftfreq(n_grid, d=side)


def aliased_cell_power(pk: PowerSpectrum, side: float, n_grid: int, n_images: int = 2,
                       anisotropic: bool = False):
    """Aliased cell power ``P_c(k)`` [(Mpc/h)^3] on the FFT grid of ``n_grid`` points per axis
    of the Brillouin zone (k = 2 pi j / (n_grid side)), summed over (2 n_images+1)^3 images.
    ``anisotropic``: pk is called as ``pk(k, mu)`` with the line of sight along the third
    axis (mu = k_z / k), e.g. an observed power with the Alcock-Paczynski distortion."""
    k1 = _bz_axis(n_grid, side)
    shifts = 2.0 * np.pi / side * np.arange(-n_images, n_images + 1)
    out = np.zeros((n_grid,) * 3)
    for sx in shifts:  # loop over images (few), vectorized over the grid
        kx = (k1 + sx)[:, None, None]
        for sy in shifts:
            ky = (k1 + sy)[None, :, None]
            for sz in shifts:
                kz = (k1 + sz)[None, None, :]
                kk = np.sqrt(kx**2 + ky**2 + kz**2)
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    if anisotropic:
                        mu = np.where(kk > 0, kz / np.where(kk > 0, kk, 1.0), 0.0)
                        p = np.asarray(pk(kk, mu), dtype=float)
                    else:
                        p = np.asarray(pk(kk), dtype=float)
                p = np.where(np.isfinite(p), p, 0.0)  # a divergent P(0) counts as 0
                out += p * cell_window_sq(kx, ky, kz, side)
    return out


def cell_correlation(pk: PowerSpectrum, side: float, n_side: int, oversample: int = 4,
                     n_images: int = 2, anisotropic: bool = False) -> np.ndarray:
    """Cell-averaged correlation xi_cells(Delta) (dimensionless) for lattice separations
    Delta, an array (n_grid,)*3 in FFT order (negative separations wrap), n_grid =
    oversample * n_side (oversample >= 2).  ``anisotropic``: see :func:`aliased_cell_power`."""
    if oversample < 2:
        raise InputError("oversample must be >= 2 so that separations do not wrap")
    n_grid = int(oversample) * int(n_side)
    pc = aliased_cell_power(pk, side, n_grid, n_images, anisotropic)
    return np.fft.ifftn(pc).real / side**3


def cell_correlation_matrix(xi_lattice: np.ndarray, n_side: int) -> np.ndarray:
    """The M x M matrix Xi_ij = xi_cells(x_i - x_j) of the m^3 cells (C order of (ix, iy, iz))
    from a lattice correlation of :func:`cell_correlation`."""
    n_grid = xi_lattice.shape[0]
    idx = np.indices((n_side,) * 3).reshape(3, -1)
    d = (idx[:, :, None] - idx[:, None, :]) % n_grid
    return xi_lattice[d[0], d[1], d[2]]


def gaussian_cell_correlation_1d(R: float, side: float, n_side: int) -> np.ndarray:
    """Exact 1-D factor g(Delta) [h/Mpc] of the cell-averaged correlation for
    ``P(k) = A exp(-k^2 R^2)``: xi_cells(Delta) = A g(Dx) g(Dy) g(Dz), Delta = 0..n_side-1.

    ``g(Delta) = Int dk/(2 pi) exp(-k^2 R^2) sinc^2(k side/2) cos(k Delta side)`` is the average
    over two cells of the 1-D Gaussian correlation c(x) = exp(-x^2/4R^2)/(2 R sqrt(pi)):
    ``g = [G2(x+l) - 2 G2(x) + G2(x-l)]/l^2`` with ``G2'' = c``; written with
    ``H(x) = s^2 c(x) - |x| Q(|x|/s)`` (s = sqrt(2) R, Q the normal upper tail) so that nothing
    cancels at large separation: G2(x) = H(x) + max(x, 0).
    """
    s2 = 2.0 * R**2

    def H(x):
        ax = np.abs(x)
        c = np.exp(-(x**2) / (4.0 * R**2)) / (2.0 * R * np.sqrt(np.pi))
        return s2 * c - ax * 0.5 * erfc(ax / (2.0 * R))

    x = np.arange(n_side) * side
    g = (H(x + side) - 2.0 * H(x) + H(x - side)) / side**2
    g[0] += 1.0 / side
    return g


def _toeplitz(g: np.ndarray) -> np.ndarray:
    i = np.arange(g.size)
    return g[np.abs(i[:, None] - i[None, :])]


def fisher_from_mode_powers(p: np.ndarray, b, n, weights=None) -> np.ndarray:
    """Sum over independent modes of the real-space per-mode Fisher of ``(ln A, ln b_a)``.

    p [(Mpc/h)^3] (n_modes,): the matter power of each mode (``lambda_j V_c`` of the box,
    or P_c(k) of a Fourier mode); b (N,), n [(h/Mpc)^3] (N,); weights (n_modes,), default 1.
    Per mode ``f_ij = 1/2 Tr[C^-1 C_,i C^-1 C_,j]`` with ``C = b b^T p + diag(1/n)`` (closed
    forms, physics.md section 2).  Returns (1 + N, 1 + N).
    """
    b = np.atleast_1d(np.asarray(b, dtype=float))
    n = np.atleast_1d(np.asarray(n, dtype=float))
    p = np.ravel(np.asarray(p, dtype=float))
    w = np.ones_like(p) if weights is None else np.ravel(np.broadcast_to(weights, p.shape))
    N = b.size
    F = np.zeros((1 + N, 1 + N))
    chunk = max(1, 2_000_000 // max(N * N, 1))
    for start in range(0, p.size, chunk):  # chunks bound the memory; vectorized inside
        pc, wc = p[start:start + chunk], w[start:start + chunk]
        Pa = pc[:, None] * (n * b**2)[None, :]
        F[0, 0] += wc @ closed_form_lnP_lnP(Pa)
        F[0, 1:] += wc @ closed_form_lnP_lnb(Pa)
        F[1:, 1:] += np.einsum("m,mab->ab", wc, closed_form_lnb_lnb(Pa))
    F[1:, 0] = F[0, 1:]
    return F


def box_fisher(pk: PowerSpectrum, side: float, n_side: int, b, n, oversample: int = 4,
               n_images: int = 2) -> np.ndarray:
    """Exact counts-in-cells Fisher of (ln A, ln b_1..ln b_N) for a box of n_side^3 cells of
    side [Mpc/h] (eigenvalues of the cell correlation matrix; see the module docstring)."""
    xi = cell_correlation(pk, side, n_side, oversample, n_images)
    lam = np.linalg.eigvalsh(cell_correlation_matrix(xi, n_side))
    return fisher_from_mode_powers(lam * side**3, b, n)


def box_fisher_dense(Xi: np.ndarray, side: float, b, n) -> np.ndarray:
    """The trace formula over all cells and tracers with explicit (N M) x (N M) matrices:
    ``F_ij = 1/2 Tr[Cov^-1 Cov_,i Cov^-1 Cov_,j]``, Cov as in the module docstring (tracer-
    major order).  O((N M)^3): for small boxes and for checking :func:`box_fisher`."""
    b = np.atleast_1d(np.asarray(b, dtype=float))
    n = np.atleast_1d(np.asarray(n, dtype=float))
    N, Vc = b.size, side**3
    u = n * Vc * b
    S = np.kron(np.outer(u, u), Xi)
    Cov = S + np.kron(np.diag(n * Vc), np.eye(Xi.shape[0]))
    derivs = [S]
    for c in range(N):
        e = np.zeros(N)
        e[c] = u[c]
        derivs.append(np.kron(np.outer(e, u) + np.outer(u, e), Xi))
    Ci = np.linalg.inv(Cov)
    X = [Ci @ d for d in derivs]
    F = np.array([[0.5 * np.sum(x * y.T) for y in X] for x in X])
    return 0.5 * (F + F.T)


def box_fisher_gaussian(A: float, R: float, side: float, n_side: int, b, n) -> np.ndarray:
    """Exact box Fisher for ``P(k) = A exp(-k^2 R^2)`` [(Mpc/h)^3], R [Mpc/h]: Xi = A G(x)G(x)G
    with G the Toeplitz matrix of :func:`gaussian_cell_correlation_1d`, so its eigenvalues are
    products of those of G (cheap for large boxes)."""
    lam1 = np.linalg.eigvalsh(_toeplitz(gaussian_cell_correlation_1d(R, side, n_side)))
    lam = A * np.einsum("i,j,k->ijk", lam1, lam1, lam1)
    return fisher_from_mode_powers(lam * side**3, b, n)


def fourier_fisher(pk: PowerSpectrum, side: float, volume: float, b, n, n_grid: int = 48,
                   n_images: int = 2) -> np.ndarray:
    """Fourier-space Fisher of (ln A, ln b_a) of the cell counts of a volume [(Mpc/h)^3]:
    ``V Int_BZ d^3k/(2 pi)^3 f(P_c(k))`` on an n_grid^3 grid of the Brillouin zone (the
    integrand is periodic and smooth, so the equal-weight rule converges fast)."""
    pc = aliased_cell_power(pk, side, n_grid, n_images)
    w = volume / (n_grid * side) ** 3  # V d^3k/(2 pi)^3 per grid point
    return fisher_from_mode_powers(pc, b, n, weights=w)


def gaussian_aliased_power_1d(R: float, side: float, n_grid: int, n_images: int = 3):
    """1-D factor h(k) of the aliased cell power of ``P = A exp(-k^2 R^2)``:
    P_c = A h(kx) h(ky) h(kz), h(k) = sum_n exp(-(k+2 pi n/side)^2 R^2) sinc^2(...)."""
    k = _bz_axis(n_grid, side)[:, None] + 2.0 * np.pi / side * np.arange(-n_images, n_images + 1)
    return np.sum(np.exp(-(k**2) * R**2) * np.sinc(0.5 * side * k / np.pi) ** 2, axis=1)


def fourier_fisher_gaussian(A: float, R: float, side: float, volume: float, b, n,
                            n_grid: int = 64, n_images: int = 3) -> np.ndarray:
    """:func:`fourier_fisher` for ``P(k) = A exp(-k^2 R^2)`` with the separable aliased power."""
    h = gaussian_aliased_power_1d(R, side, n_grid, n_images)
    pc = A * np.einsum("i,j,k->ijk", h, h, h)
    return fisher_from_mode_powers(pc, b, n, weights=volume / (n_grid * side) ** 3)
