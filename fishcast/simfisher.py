"""Fisher matrices estimated from simulations, with their biases bracketed and a verdict.

Where the model stops (non-Gaussian summaries, covariances measured from mocks), the Fisher
matrix of a summary ``x`` (length ``d``) is estimated from simulations:

* ``N_s`` realizations at the fiducial point (the covariance ``C`` and the scores), and
* ``N_d`` realizations at ``theta_a +- delta_a`` for each of the ``p`` parameters (the
  derivatives of the mean, per simulation ``(x+_k - x-_k) / (2 delta_a)``).

With a parameter-independent covariance the Fisher matrix is ``F = mu_,a^T C^-1 mu_,b``
(Tegmark, Taylor & Heavens 1997), in units of ``1/(unit_a unit_b)``. The estimators here:

standard
    ``F_std = mu_hat_,a^T Psi mu_hat_,b`` with the mean-difference derivatives of all
    derivative simulations and the precision ``Psi = h C_hat^-1``. ``h`` is the Hartlap et al.
    (2007) factor ``(N_s - d - 2)/(N_s - 1)``, which makes ``Psi`` an unbiased estimate of
    ``C^-1``, or -- option ``likelihood='sellentin-heavens'`` -- the Fisher information of the
    Sellentin & Heavens (2016) likelihood, the multivariate t-distribution
    ``[1 + chi^2/(N_s - 1)]^(-N_s/2)`` that marginalizes over the unknown covariance: a
    multivariate t with ``nu = N_s - d`` degrees of freedom and scale
    ``Sigma = C_hat (N_s - 1)/(N_s - d)``, whose location Fisher matrix is
    ``(nu + d)/(nu + d + 2) Sigma^-1`` (Lange, Little & Taylor 1989), i.e.
    ``h_SH = N_s (N_s - d) / ((N_s + 2)(N_s - 1))``. Noise in the simulated derivatives adds
    ``Tr[C^-1 Cov(mu_hat_,a, mu_hat_,b)]`` on average: the standard estimator is biased *high*
    (errors too small), by ``~ d / N_d`` (Coulton & Wandelt 2023, eq. 6).
compressed
    Coulton & Wandelt (2023, arXiv:2305.08994, eq. 10): split the derivative simulations; a
    fraction ``f`` (``split_fraction``) compresses the data to ``p`` numbers
    ``t = mu_c,a^T Psi x``, the rest estimates the Fisher matrix of ``t``:
    ``F_comp = M Sigma_t^-1 M^T`` with ``M_ab = mu_f,a^T Psi mu_c,b`` and
    ``Sigma_t = mu_c^T Psi mu_c``. A compression built from noisy derivatives loses
    information: biased *low* (errors too large). ``reshuffles`` random splits are averaged.
combined
    Coulton & Wandelt (2023, eq. 18): the matrix geometric mean
    ``F_std # F_comp = A^1/2 (A^-1/2 B A^-1/2)^1/2 A^1/2`` of the two, whose opposite
    biases nearly cancel. This is the primary Fisher matrix of ``fishcast simfisher``.
Soen & Sun (2021) pair
    The two classical representations of the Fisher information, each with its variance in
    closed form (Soen & Sun 2021, "On the variance of the Fisher information for deep
    learning", NeurIPS): the *score form* ``I_1 = <s s^T>`` and the *Hessian form*
    ``I_2 = <-d^2 ln L>``, which for a Gaussian summary with a parameter-independent
    covariance is the *derivative form* ``mu_,a^T C^-1 mu_,b``.

    * score form: the outer product of the scores ``s_i = mu_hat^T Psi (x_i - x_bar)`` of the
      ``N_s`` fiducial simulations, ``I_1 = sum_i s_i s_i^T / ((N_s - 1) h)``. With the
      precision measured on the same simulations its value is the standard estimator's; what
      it adds is its variance, the part of the uncertainty of ``F`` due to the finite number of
      *fiducial* simulations: ``Var[I_1,ab] = (E[s_a^2 s_b^2] - I_ab^2)/N_s`` (Soen & Sun),
      ``(I_aa I_bb + I_ab^2)/N_s`` for Gaussian scores. Both are written; their ratio away from
      1 says the summary's scores have non-Gaussian tails. Like Soen & Sun's, these take the
      likelihood (here the covariance) as known: when ``d / N_s`` is not small, the noise of
      the covariance estimate adds to them (about a factor ``N_s / (N_s - d)``).
    * derivative form: ``I_2 = F_std - B_hat`` with the derivative-noise bias
      ``B_hat_ab = Tr[Psi Cov_hat(mu_hat_,a, mu_hat_,b)]`` measured from the scatter of the
      per-simulation derivatives (Coulton & Wandelt eq. 6), unbiased to first order; its
      variance in closed form (Isserlis' theorem for Gaussian derivative noise, in whitened
      coordinates ``a = L^-1 mu_,a``, ``Sigma_ab = Cov(L^-1 e_a, L^-1 e_b)``)::

          Var[I_2,ab] / h^2 = Q + T,   Q = a^T S_bb a + b^T S_aa b + 2 b^T S_ab a,
                                       T = Tr(S_aa S_bb) + Tr(S_ab S_ab),

      is the part of the uncertainty due to the finite number of *derivative* simulations.
      ``S`` is measured from the per-simulation scatter (``S_ab = U_a^T U_b / (N_d (N_d - 1))``
      with ``U`` the whitened deviations) and ``a, b`` are the noisy mean derivatives, with
      which ``Q`` comes out high by ``2 T`` on average: ``Q - 2 T`` (floored at 0) is used.

Convergence and verdict
    Every estimator is recomputed on nested subsets of the derivative simulations (the score
    form on subsets of the fiducial simulations); the marginalized errors ``sqrt(F^-1)_aa`` at
    each size are kept. The standard and compressed errors bracket the truth; the verdict
    compares their relative spread ``|sigma_comp - sigma_std| / sigma_comb`` (worst parameter)
    with ``tolerance`` (default 10%): PASS below half of it, WARN up to it, FAIL above. The
    spread falls as ``N_d^-alpha`` (``alpha = 1`` in theory, measured from the subsets); the
    number of derivative simulations that brings it to the tolerance is
    ``N_d (spread / tolerance)^(1/alpha)``.

Everything is vectorized: the cost is one covariance (a matrix product), one Cholesky factor,
one whitening of the per-simulation derivatives and small ``p x p`` algebra per reshuffle; no
Python loop runs over simulations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from .errors import InputError

__all__ = [
    "Simulations", "SimFisherConfig", "SimFisherResult", "Convergence",
    "precision_factor", "geometric_mean", "marginalized_sigma", "estimate", "LIKELIHOODS",
]

#: the likelihoods whose Fisher information the standard estimator can use
LIKELIHOODS = ("hartlap", "sellentin-heavens")


# =======================================================================================
# Inputs
# =======================================================================================


@dataclass(frozen=True)
class Simulations:
    """Simulated realizations of a summary (data vector) of length ``d``.

    fiducial: (N_s, d) at the fiducial point. minus / plus: (p, N_d, d) at
    ``theta_a - step_a`` / ``theta_a + step_a`` (every other parameter at its fiducial).
    names, values, steps, units: the p parameters, their fiducial values, the absolute
    half-steps ``delta_a`` (units of the parameter) and their units. seed_matched: whether
    derivative simulation k of every parameter used the random seed of fiducial simulation k.
    reference: an optional (p, p) Fisher matrix the simulations should reproduce (``fishcast
    mock`` writes the forecast's own); source: where they came from (for messages).
    """

    names: tuple[str, ...]
    values: np.ndarray
    steps: np.ndarray
    fiducial: np.ndarray
    minus: np.ndarray
    plus: np.ndarray
    units: tuple[str, ...] = ()
    seed_matched: bool = False
    reference: np.ndarray | None = None
    source: str = "<simulations>"
    attrs: dict = field(default_factory=dict)

    @property
    def n_fiducial(self) -> int:
        return int(self.fiducial.shape[0])

    @property
    def n_derivative(self) -> int:
        return int(self.plus.shape[1])

    @property
    def data_length(self) -> int:
        return int(self.fiducial.shape[1])

    @property
    def n_params(self) -> int:
        return len(self.names)

    def check(self) -> None:
        """Shapes, finiteness and counts; raises :class:`InputError` naming ``source``."""
        src = self.source
        p = len(self.names)
        if p == 0:
            raise InputError(f"{src}: no parameters")
        if self.fiducial.ndim != 2:
            raise InputError(f"{src}: fiducial simulations must be a (N_s, d) array, found shape {self.fiducial.shape}")
        n_s, d = self.fiducial.shape
        for label, arr in (("minus", self.minus), ("plus", self.plus)):
            if arr.ndim != 3 or arr.shape[0] != p or arr.shape[2] != d:
                raise InputError(f"{src}: derivative simulations ({label}) must have shape (p={p}, N_d, d={d}), "
                                 f"found {arr.shape}")
        if self.minus.shape != self.plus.shape:
            raise InputError(f"{src}: {self.minus.shape[1]} simulations at theta - step but {self.plus.shape[1]} at "
                             "theta + step: every parameter needs the same number on both sides")
        for label, arr in (("values", self.values), ("steps", self.steps)):
            if np.shape(arr) != (p,):
                raise InputError(f"{src}: parameter {label} must have {p} entries, found shape {np.shape(arr)}")
        bad = [n for n, s in zip(self.names, self.steps) if not (np.isfinite(s) and s > 0)]
        if bad:
            raise InputError(f"{src}: the derivative step must be positive and finite for: {', '.join(bad)}")
        if n_s <= d + 2:
            raise InputError(
                f"{src}: too few fiducial simulations for the data length: N_s = {n_s} with d = {d} data points; "
                f"the inverse covariance needs N_s > d + 2 = {d + 2} (Hartlap et al. 2007), and reliable errors "
                f"many more (or compress/shorten the data vector)")
        if d < p:
            raise InputError(f"{src}: the data vector ({d} elements) is shorter than the number of parameters "
                             f"({p}): its Fisher matrix is singular")
        if self.n_derivative < 4:
            raise InputError(f"{src}: {self.n_derivative} derivative simulations per parameter and side; the "
                             "compressed estimator splits them in two, which needs at least 4")
        for label, arr in (("fiducial", self.fiducial), ("minus", self.minus), ("plus", self.plus)):
            finite = np.isfinite(arr)
            if not finite.all():
                idx = np.argwhere(~finite)[0]
                where = f"simulation {idx[0]}, element {idx[1]}" if arr.ndim == 2 else \
                    f"parameter {self.names[idx[0]]}, simulation {idx[1]}, element {idx[2]}"
                raise InputError(f"{src}: {label} simulations contain NaN or inf ({int((~finite).sum())} values; "
                                 f"first at {where})")


@dataclass(frozen=True)
class SimFisherConfig:
    """Options of :func:`estimate`.

    likelihood: 'hartlap' or 'sellentin-heavens' (the standard estimator's precision factor).
    split_fraction: fraction of the derivative simulations used to compress (0 < f < 1).
    reshuffles: random splits averaged in the compressed estimator (>= 1).
    tolerance: verdict FAIL when the standard/compressed bracket is wider than this.
    seed: of the reshuffling (the result is reproducible).
    n_subsets: sizes in the convergence series (nested subsets of the derivative simulations).
    """

    likelihood: str = "hartlap"
    split_fraction: float = 0.5
    reshuffles: int = 20
    tolerance: float = 0.10
    seed: int = 0
    n_subsets: int = 6

    def check(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise InputError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}")
        if not (0.0 < self.split_fraction < 1.0):
            raise InputError(f"the split fraction must lie strictly between 0 and 1, got {self.split_fraction}")
        if int(self.reshuffles) < 1:
            raise InputError(f"reshuffles must be at least 1, got {self.reshuffles}")
        if not (0.0 < self.tolerance < 1.0):
            raise InputError(f"the tolerance must lie strictly between 0 and 1, got {self.tolerance}")
        if int(self.n_subsets) < 2:
            raise InputError(f"the convergence series needs at least 2 subset sizes, got {self.n_subsets}")


# =======================================================================================
# Small pieces (public: the tests check them against direct computation)
# =======================================================================================


def precision_factor(n_sims: int, d: int, likelihood: str = "hartlap") -> float:
    """Factor ``h`` of ``Psi = h C_hat^-1`` for ``n_sims`` simulations of a length-``d`` vector.

    'hartlap': ``(N - d - 2)/(N - 1)`` (Hartlap, Simon & Schneider 2007, eq. 17) -- unbiased
    precision; 'sellentin-heavens': ``N (N - d)/((N + 2)(N - 1))``, the Fisher information of
    the Sellentin & Heavens (2016) t-likelihood about its location (see the module docstring).
    """
    n, d = float(n_sims), float(d)
    if likelihood == "hartlap":
        return (n - d - 2.0) / (n - 1.0)
    if likelihood == "sellentin-heavens":
        return n * (n - d) / ((n + 2.0) * (n - 1.0))
    raise InputError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")


def _sym_sqrt(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A^1/2`` and ``A^-1/2`` of a symmetric positive definite matrix (eigen-decomposition)."""
    w, V = np.linalg.eigh(0.5 * (A + A.T))
    if not w[0] > 0:
        raise np.linalg.LinAlgError("not positive definite")
    s = np.sqrt(w)
    return (V * s) @ V.T, (V / s) @ V.T


def geometric_mean(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Matrix geometric mean ``A # B = A^1/2 (A^-1/2 B A^-1/2)^1/2 A^1/2`` of two symmetric
    positive definite matrices (symmetric in A and B; ``(A # B)^-1 = A^-1 # B^-1``; for
    commuting matrices ``(A B)^1/2``)."""
    Ah, Aih = _sym_sqrt(A)
    Mh, _ = _sym_sqrt(Aih @ B @ Aih)
    G = Ah @ Mh @ Ah
    return 0.5 * (G + G.T)


def marginalized_sigma(F: np.ndarray) -> np.ndarray:
    """``sqrt((F^-1)_aa)`` for a (..., p, p) stack; NaN where F is not positive definite."""
    F = np.asarray(F, dtype=float)
    flat = F.reshape(-1, F.shape[-1], F.shape[-1])
    out = np.full(flat.shape[:2], np.nan)
    for i, m in enumerate(flat):  # a loop over a handful of p x p matrices, not simulations
        d = np.diag(m)
        if not np.all(d > 0) or not np.all(np.isfinite(m)):
            continue
        s = 1.0 / np.sqrt(d)
        R = m * s[:, None] * s[None, :]
        try:
            c = scipy.linalg.cho_factor(0.5 * (R + R.T), lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            continue
        Rinv = scipy.linalg.cho_solve(c, np.eye(len(d)), check_finite=False)
        out[i] = np.sqrt(np.diag(Rinv)) * s
    return out.reshape(F.shape[:-1])


def _compressed(Wc: np.ndarray, Wf: np.ndarray, factor: float) -> np.ndarray:
    """Compressed Fisher matrices from whitened compression / estimation derivatives
    ``Wc, Wf`` of shape (..., p, d): ``M Sigma_t^-1 M^T`` with ``M = h Wf Wc^T`` and
    ``Sigma_t = h Wc Wc^T`` (a stack)."""
    S = factor * np.einsum("...ad,...bd->...ab", Wc, Wc)
    M = factor * np.einsum("...ad,...bd->...ab", Wf, Wc)
    try:
        X = np.linalg.solve(S, np.swapaxes(M, -1, -2))  # Sigma_t^-1 M^T
    except np.linalg.LinAlgError:  # a singular compression somewhere in the stack: NaN there
        flatS, flatM = S.reshape((-1,) + S.shape[-2:]), M.reshape((-1,) + M.shape[-2:])
        X = np.full(flatS.shape, np.nan)
        for i, (s_, m_) in enumerate(zip(flatS, flatM)):  # only on this rare path
            try:
                X[i] = np.linalg.solve(s_, m_.T)
            except np.linalg.LinAlgError:
                pass
        X = X.reshape(S.shape)
    F = M @ X
    return 0.5 * (F + np.swapaxes(F, -1, -2))


# =======================================================================================
# Result
# =======================================================================================


@dataclass
class Convergence:
    """Marginalized errors on nested subsets.

    n_derivative (K,): derivative simulations per parameter and side in each subset;
    sigma[estimator] (K, p) for 'standard', 'compressed', 'combined', 'derivative_form';
    n_fiducial (K2,) and score_sigma (K2, p): the score form on subsets of the fiducial
    simulations; spread (K,): worst relative standard/compressed bracket; alpha: its measured
    power law ``spread ~ N_d^-alpha``.
    """

    n_derivative: np.ndarray
    sigma: dict[str, np.ndarray]
    n_fiducial: np.ndarray
    score_sigma: np.ndarray
    spread: np.ndarray
    alpha: float


@dataclass
class SimFisherResult:
    """Every estimator's Fisher matrix, their variances, the convergence and the verdict."""

    names: tuple[str, ...]
    units: tuple[str, ...]
    values: np.ndarray
    config: SimFisherConfig
    precision_factor: float
    n_fiducial: int
    n_derivative: int
    data_length: int
    seed_matched: bool
    standard: np.ndarray
    compressed: np.ndarray
    compressed_reshuffles: np.ndarray  # (R, p, p)
    split_indices: np.ndarray  # (R, n_c): the compression simulations of each reshuffle
    combined: np.ndarray
    score_form: np.ndarray
    score_variance_gaussian: np.ndarray
    score_variance_empirical: np.ndarray
    derivative_form: np.ndarray
    derivative_bias: np.ndarray
    derivative_variance: np.ndarray
    convergence: Convergence
    spread: np.ndarray  # (p,) |sigma_comp - sigma_std| / sigma_comb at the full set
    verdict: str
    reason: str
    message: str
    needed_derivative: int | None
    reference: np.ndarray | None = None

    @property
    def estimators(self) -> dict[str, np.ndarray]:
        return {"standard": self.standard, "compressed": self.compressed, "combined": self.combined,
                "score_form": self.score_form, "derivative_form": self.derivative_form}

    def sigma(self, estimator: str) -> np.ndarray:
        return marginalized_sigma(self.estimators[estimator])


# =======================================================================================
# The estimation
# =======================================================================================


def _subset_sizes(n_d: int, k: int, minimum: int = 4) -> np.ndarray:
    """``k`` nested subset sizes from about ``n_d/8`` to ``n_d`` (geometric), at least ``minimum``."""
    lo = max(minimum, n_d // 8)
    sizes = np.unique(np.round(np.geomspace(lo, n_d, k)).astype(int))
    sizes = sizes[(sizes >= minimum) & (sizes <= n_d)]
    if sizes.size == 0 or sizes[-1] != n_d:
        sizes = np.append(sizes, n_d)
    return sizes


def _whitener(fiducial: np.ndarray, source: str):
    """Sample mean, lower Cholesky factor of the sample covariance (``1/(N-1)``) and the
    centred simulations. InputError when the covariance is not positive definite."""
    n = fiducial.shape[0]
    mean = fiducial.mean(axis=0)
    Xc = fiducial - mean
    C = (Xc.T @ Xc) / (n - 1)
    var = np.diag(C)
    flat = np.nonzero(~(var > 0))[0]
    if flat.size:
        raise InputError(f"{source}: data element(s) {flat[:10].tolist()} have zero variance over the fiducial "
                         "simulations: the covariance is singular (remove constant elements)")
    try:
        L = scipy.linalg.cholesky(C, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise InputError(f"{source}: the sample covariance of the fiducial simulations is not positive definite "
                         "(duplicated simulations, or data elements that are exact combinations of others)") from None
    return mean, L, Xc


def _solve_lower(L: np.ndarray, B: np.ndarray, trans: bool = False) -> np.ndarray:
    """``L^-1 B`` (``L^-T B`` with ``trans``) by BLAS triangular solve (dtrsm): for small
    matrices scipy's ``solve_triangular`` (LAPACK) costs milliseconds of overhead per call."""
    return scipy.linalg.blas.dtrsm(1.0, L, np.asarray(B, dtype=float), lower=1, trans_a=int(trans))


def _trace_terms(dev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|U_a U_b^T|_F^2`` and ``Tr(U_a^T U_b U_a^T U_b)`` for every parameter pair, from the
    whitened per-simulation deviations ``dev`` (p, N_d, d), in the smaller of the two spaces
    (N_d x N_d or d x d); a loop over parameter pairs, each one matrix product."""
    p, n_d, d = dev.shape
    t1, t2 = np.zeros((p, p)), np.zeros((p, p))
    small_n = n_d <= d
    grams = [None] * p
    if not small_n:
        grams = [dev[a].T @ dev[a] for a in range(p)]  # U_a^T U_a (d, d)
    for a in range(p):
        for b in range(a + 1):
            if small_n:
                Gab = dev[a] @ dev[b].T  # (N_d, N_d)
                t1[a, b] = np.sum(Gab * Gab)
                t2[a, b] = np.sum(Gab * Gab.T)
            else:
                Mab = dev[a].T @ dev[b]  # (d, d)
                t1[a, b] = np.sum(grams[a] * grams[b])
                t2[a, b] = np.sum(Mab * Mab.T)
            t1[b, a], t2[b, a] = t1[a, b], t2[a, b]
    return t1, t2


def _fit_alpha(n: np.ndarray, spread: np.ndarray) -> float:
    """Power-law slope of ``spread ~ n^-alpha`` over the subsets (1, the theory, when it
    cannot be measured), kept within [0.5, 2]."""
    ok = np.isfinite(spread) & (spread > 0)
    if ok.sum() < 2:
        return 1.0
    slope = np.polyfit(np.log(n[ok]), np.log(spread[ok]), 1)[0]
    if not np.isfinite(slope):
        return 1.0
    return float(np.clip(-slope, 0.5, 2.0))


def estimate(sims: Simulations, config: SimFisherConfig | None = None) -> SimFisherResult:
    """Every estimator, their variances, the convergence series and the verdict."""
    config = config or SimFisherConfig()
    config.check()
    sims.check()
    src = sims.source
    names = tuple(sims.names)
    p, n_s, n_d, d = sims.n_params, sims.n_fiducial, sims.n_derivative, sims.data_length
    h = precision_factor(n_s, d, config.likelihood)

    # --- covariance: one product, one Cholesky ------------------------------------------
    _, L, Xc = _whitener(np.asarray(sims.fiducial, dtype=float), src)

    # --- per-simulation derivatives, whitened once: (p, N_d, d) ---------------------------
    steps = np.asarray(sims.steps, dtype=float)
    per_sim = (np.asarray(sims.plus, dtype=float) - np.asarray(sims.minus, dtype=float)) / (2.0 * steps[:, None, None])
    U = _solve_lower(L, per_sim.reshape(p * n_d, d).T).T.reshape(p, n_d, d)  # L^-1 derivative
    W = U.mean(axis=1)  # whitened mean derivatives (p, d)

    # --- standard ---------------------------------------------------------------------------
    F_std = h * (W @ W.T)

    # --- derivative noise: bias and Isserlis variance of the derivative form --------------
    dev = U - W[:, None, :]  # (p, N_d, d)
    c = n_d * (n_d - 1.0)
    bias = h * np.einsum("and,bnd->ab", dev, dev) / c  # h Tr[C^-1 Cov(mean derivs)]
    F_der = F_std - bias
    proj = np.einsum("and,bd->abn", dev, W)  # proj[a, b, k] = dev_ak . w_b
    quad_bb_a = np.einsum("ban,ban->ab", proj, proj)  # |U_b a|^2 = c a^T S_bb a
    cross = np.einsum("abn,ban->ab", proj, proj)  # (U_a b).(U_b a) = c b^T S_ab a
    tr_aabb, tr_abab = _trace_terms(dev)  # c^2 Tr(S_aa S_bb), c^2 Tr(S_ab S_ab)
    # Q = a^T S_bb a + b^T S_aa b + 2 b^T S_ab a is the variance of the linear term; with the
    # noisy a, b plugged in it is high by 2 T on average (T = the trace terms): subtract it
    T = (tr_aabb + tr_abab) / c**2
    Q = np.maximum((quad_bb_a + quad_bb_a.T + 2.0 * cross) / c - 2.0 * T, 0.0)
    var_der = h**2 * (Q + T)

    # --- score form (Soen & Sun I_1) ------------------------------------------------------
    Gs = _solve_lower(L, W.T, trans=True)  # C^-1 mu_,a (d, p)
    scores = h * (Xc @ Gs)  # (N_s, p): s_i = mu^T Psi (x_i - x_bar)
    I1 = (scores.T @ scores) / ((n_s - 1.0) * h)
    s_norm = scores / math.sqrt(h)
    m4 = np.einsum("ia,ib->ab", s_norm**2, s_norm**2) / n_s
    var_score_emp = (m4 - I1**2) / n_s
    var_score_gauss = (np.outer(np.diag(I1), np.diag(I1)) + I1**2) / n_s

    # --- compressed with reshuffles, at every subset size (one batched computation) -------
    rng = np.random.default_rng(config.seed)
    sizes = _subset_sizes(n_d, int(config.n_subsets))
    R = int(config.reshuffles)
    cum = np.concatenate([np.zeros((p, 1, d)), np.cumsum(U, axis=1)], axis=1)  # prefix sums
    W_sub = cum[:, sizes, :] / sizes[None, :, None]  # (p, K, d): standard on each prefix
    sel_rows, split_full = [], None
    for n in sizes:  # a loop over the K subset sizes (a handful)
        n_c = min(max(int(round(config.split_fraction * n)), 2), n - 2)
        perms = np.argsort(rng.random((R, n)), axis=1)[:, :n_c]
        rows = np.zeros((R, n_d))
        np.put_along_axis(rows, perms, 1.0 / n_c, axis=1)
        sel_rows.append((rows, n_c))
        if n == n_d:
            split_full = np.sort(perms, axis=1)
    Ksz = len(sizes)
    Wsel = np.concatenate([r for r, _ in sel_rows], axis=0)  # (K*R, N_d)
    Wc = Wsel @ U.transpose(1, 0, 2).reshape(n_d, p * d)  # compression means: one GEMM
    Wc = Wc.reshape(Ksz, R, p, d)
    n_cs = np.array([nc for _, nc in sel_rows], dtype=float)
    tot = (W_sub * sizes[None, :, None]).transpose(1, 0, 2)  # (K, p, d) prefix sums
    Wf = (tot[:, None] - n_cs[:, None, None, None] * Wc) / (sizes - n_cs)[:, None, None, None]
    F_comp_all = _compressed(Wc, Wf, h)  # (K, R, p, p)
    F_comp_sub = F_comp_all.mean(axis=1)
    F_comp = F_comp_sub[-1]
    F_std_sub = h * np.einsum("akd,bkd->kab", W_sub, W_sub)

    # --- derivative-form bias on each prefix (cumulative second moments) -----------------
    UU = np.einsum("and,bnd->nab", U, U)  # per-simulation whitened products (N_d, p, p)
    cumUU = np.cumsum(UU, axis=0)[sizes - 1]  # (K, p, p)
    nn = sizes.astype(float)[:, None, None]
    mm = np.einsum("akd,bkd->kab", W_sub, W_sub)
    bias_sub = h * (cumUU - nn * mm) / (nn * (nn - 1.0))  # h (sum u u^T - n m m^T) / (n (n - 1))
    F_der_sub = F_std_sub - bias_sub

    # --- combined ----------------------------------------------------------------------------
    def comb(A, B):
        try:
            return geometric_mean(A, B)
        except np.linalg.LinAlgError:
            return np.full_like(A, np.nan)

    F_comb_sub = np.stack([comb(a, b) for a, b in zip(F_std_sub, F_comp_sub)])
    F_comb = F_comb_sub[-1]
    if not np.all(np.isfinite(F_comb)):
        raise InputError(f"{src}: the standard or compressed Fisher matrix is not positive definite: the "
                         "simulations do not constrain every parameter (a derivative of zero, or too few "
                         "simulations)")

    # --- score form on prefixes of the fiducial simulations -------------------------------
    n_fid = _subset_sizes(n_s, int(config.n_subsets), minimum=min(n_s, max(p + 2, 8)))
    outer = np.einsum("ia,ib->iab", scores, scores)
    I1_sub = np.cumsum(outer, axis=0)[n_fid - 1] / ((n_fid[:, None, None] - 1.0) * h)
    score_sigma = marginalized_sigma(I1_sub)

    sig = {"standard": marginalized_sigma(F_std_sub), "compressed": marginalized_sigma(F_comp_sub),
           "combined": marginalized_sigma(F_comb_sub), "derivative_form": marginalized_sigma(F_der_sub)}
    spread_sub = np.abs(sig["compressed"] - sig["standard"]) / sig["combined"]
    worst_sub = spread_sub.max(axis=1)  # NaN where an estimator gives no error at that size
    alpha = _fit_alpha(sizes.astype(float), worst_sub)
    conv = Convergence(n_derivative=sizes, sigma=sig, n_fiducial=n_fid, score_sigma=score_sigma,
                       spread=worst_sub, alpha=alpha)

    spread = spread_sub[-1]
    verdict, reason, message, needed = _verdict(names, spread, n_d, alpha, config.tolerance)
    if not np.all(np.isfinite(sig["derivative_form"][-1])):
        weak = [n for n, f in zip(names, np.diag(F_der)) if not f > 0]
        what = ", ".join(weak) if weak else "a combination of the parameters"
        message += (f"; the derivative form (the standard estimator minus its derivative-noise bias) is not "
                    f"positive definite: the derivative noise is as large as the signal of {what}")
        if verdict == "PASS":
            verdict, reason = "WARN", "noisy derivatives"
    return SimFisherResult(
        names=names, units=tuple(sims.units) if sims.units else ("",) * p, values=np.asarray(sims.values, float),
        config=config, precision_factor=h, n_fiducial=n_s, n_derivative=n_d, data_length=d,
        seed_matched=bool(sims.seed_matched), standard=0.5 * (F_std + F_std.T), compressed=F_comp,
        compressed_reshuffles=F_comp_all[-1], split_indices=split_full, combined=F_comb,
        score_form=0.5 * (I1 + I1.T), score_variance_gaussian=var_score_gauss, score_variance_empirical=var_score_emp,
        derivative_form=0.5 * (F_der + F_der.T), derivative_bias=bias, derivative_variance=var_der,
        convergence=conv, spread=spread, verdict=verdict, reason=reason, message=message,
        needed_derivative=needed, reference=sims.reference,
    )


def _verdict(names: Sequence[str], spread: np.ndarray, n_d: int, alpha: float, tol: float):
    """PASS / WARN / FAIL from the relative standard/compressed bracket of each parameter."""
    if not np.all(np.isfinite(spread)):
        bad = [n for n, s in zip(names, spread) if not np.isfinite(s)]
        return ("FAIL", "not positive definite",
                f"the standard or compressed Fisher matrix gives no error on {', '.join(bad)}", None)
    i = int(np.argmax(spread))
    worst = float(spread[i])
    needed = int(math.ceil(n_d * (worst / tol) ** (1.0 / alpha))) if worst > 0 else n_d
    if worst <= 0.5 * tol:
        return ("PASS", "converged",
                f"standard and compressed errors agree within {100 * worst:.3g}% (worst: {names[i]}; "
                f"tolerance {100 * tol:.3g}%)", needed)
    if worst <= tol:
        return ("WARN", "nearly converged",
                f"standard and compressed errors differ by {100 * worst:.3g}% on {names[i]} (tolerance "
                f"{100 * tol:.3g}%); about {max(needed * 2 ** (1 / alpha), n_d):.0f} derivative simulations per "
                "parameter and side would bring it within half the tolerance", needed)
    return ("FAIL", "not converged",
            f"standard and compressed errors still differ by {100 * worst:.3g}% on {names[i]} (tolerance "
            f"{100 * tol:.3g}%): more simulations are needed -- roughly {needed} derivative simulations per "
            f"parameter and side (about {max(needed - n_d, 0)} more than the {n_d} used), from the measured "
            f"convergence (bracket ~ N^-{alpha:.2g})", needed)
