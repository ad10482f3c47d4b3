"""Multi-tracer galaxy clustering in redshift shells (Abramo 2012), Fourier-space Fisher.

Physics (see ``../shared/notes/physics.md`` sections 1-2).  Tracers ``a = 1..N`` share one
volume-limited redshift shell of comoving volume ``V`` [(Mpc/h)^3] with constant number
densities ``n_a`` [(h/Mpc)^3], linear biases ``b_a`` and growth rate ``f``.  The matter power
spectrum ``P(k)`` [(Mpc/h)^3] is the *linear* one at the shell's central redshift, ``k`` is in
[h/Mpc] and ``mu`` is the cosine of the angle between the wave vector and the line of sight.

Covariance of the tracer overdensities per Fourier mode (Kaiser RSD, Poisson shot noise,
optional Gaussian damping of each tracer's amplitude)::

    A_a(k, mu)   = (b_a + f mu^2) D_a(k, mu)
    D_a(k, mu)   = exp(-k^2 mu^2 sigma_a^2 / 2),  sigma_a^2 = sigma_FoG^2 + sigma_chi,a^2
    C_ab(k, mu)  = A_a A_b P(k) + delta_ab / n_a

``sigma_FoG`` [Mpc/h] is the line-of-sight displacement of a galaxy by its peculiar velocity
(Gaussian Fingers of God, common to all tracers; the auto power of tracer a is damped by
``exp(-k^2 mu^2 sigma_FoG^2)``), ``sigma_chi,a`` [Mpc/h] the line-of-sight displacement from
the redshift error of tracer a.  With RSD off, ``f = 0`` and the damping is off as well.

Fisher matrix of the shell (Gaussian field, trace term only, the 1/2 of the trace formula
and the half of k-space folded together)::

    F_ij = V/(8 pi^2) Int_{-1}^{1} dmu Int k^2 dk  Tr[C^-1 C_,i C^-1 C_,j]

Quadrature (fixed nodes, the same at every cosmology):

* k: ``n_k`` bands between ``k_min`` and ``k_max`` [h/Mpc]; each band is evaluated at its
  midpoint with the exact weight ``Int_band k^2 dk = (k_hi^3 - k_lo^3)/3``.  A band power
  ``P_i`` is the amplitude of P in band i (one node per band).
* mu: the integrand is even in mu; ``Int_{-1}^{1} dmu`` uses the ``n_mu`` positive nodes of
  the ``2 n_mu``-point Gauss-Legendre rule on [-1, 1] with doubled weights (they sum to 2;
  exact for even polynomials in mu of degree <= 4 n_mu - 2).

Alcock-Paczynski distortions are *not* modelled: the k and mu of a mode are those of the
fiducial cosmology at every parameter point.

Everything here is a pure, vectorized numpy function of arrays (no loop over modes or tracer
pairs); the probe object at the end of the module wraps them for the pipeline.
"""

from __future__ import annotations

import numpy as np

from fishcast.errors import InputError

# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------


def mu_quadrature(n_mu: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes mu in (0, 1) and weights for ``Int_{-1}^{1} dmu g(mu)`` of an even function g.

    The positive half of the ``2 n_mu``-point Gauss-Legendre rule on [-1, 1], weights
    doubled (they sum to 2): exact for even polynomials of degree <= 4 n_mu - 2.
    """
    if n_mu < 1:
        raise InputError(f"n_mu must be >= 1, got {n_mu}")
    x, w = np.polynomial.legendre.leggauss(2 * int(n_mu))
    pos = x > 0
    order = np.argsort(x[pos])
    return x[pos][order], 2.0 * w[pos][order]


def k_bands(k_min: float, k_max: float, n_k: int, spacing: str = "linear"):
    """Band edges, nodes and weights in k [h/Mpc].

    Returns ``(edges (n_k+1,), k (n_k,), k2dk (n_k,))`` where ``k`` is the midpoint of each
    band and ``k2dk = (k_hi^3 - k_lo^3)/3`` [(h/Mpc)^3] is the exact integral of k^2 over it.
    ``spacing`` is "linear" or "log" (edges equally spaced in k or in ln k).
    """
    if not (0.0 < k_min < k_max):
        raise InputError(f"need 0 < k_min < k_max, got k_min={k_min}, k_max={k_max} h/Mpc")
    if n_k < 1:
        raise InputError(f"n_k must be >= 1, got {n_k}")
    if spacing == "linear":
        edges = np.linspace(k_min, k_max, int(n_k) + 1)
    elif spacing == "log":
        edges = np.geomspace(k_min, k_max, int(n_k) + 1)
    else:
        raise InputError(f"k spacing must be 'linear' or 'log', got {spacing!r}")
    k = 0.5 * (edges[1:] + edges[:-1])
    k2dk = (edges[1:] ** 3 - edges[:-1] ** 3) / 3.0
    return edges, k, k2dk


def mode_weights(volume: float, k2dk: np.ndarray, w_mu: np.ndarray) -> np.ndarray:
    """Weights ``V/(8 pi^2) (Int_band k^2 dk) w_mu`` of the trace formula, shape (n_k, n_mu).

    volume [(Mpc/h)^3], k2dk [(h/Mpc)^3]: the weights are dimensionless (numbers of modes/4:
    their sum over mu is N_k/2 with N_k = V k^2 dk / (2 pi^2) the number of modes)."""
    return volume / (8.0 * np.pi**2) * np.asarray(k2dk)[:, None] * np.asarray(w_mu)[None, :]


# ---------------------------------------------------------------------------------------------
# the tracer covariance and its derivatives
# ---------------------------------------------------------------------------------------------


def damping(k: np.ndarray, mu: np.ndarray, sigma: np.ndarray | None, n_tracer: int) -> np.ndarray:
    """Amplitude damping ``D_a(k, mu) = exp(-k^2 mu^2 sigma_a^2 / 2)``, shape (n_k, n_mu, N).

    k [h/Mpc] (n_k,), mu (n_mu,), sigma [Mpc/h]: None (no damping), a scalar (all tracers)
    or (N,) per tracer, the total line-of-sight smearing sigma_a^2 = sigma_FoG^2 + sigma_chi,a^2.
    """
    k = np.asarray(k, dtype=float)
    mu = np.asarray(mu, dtype=float)
    if sigma is None:
        return np.ones((k.size, mu.size, n_tracer))
    s = np.broadcast_to(np.asarray(sigma, dtype=float), (n_tracer,))
    kmu2 = (k[:, None] * mu[None, :]) ** 2
    return np.exp(-0.5 * kmu2[..., None] * s[None, None, :] ** 2)


def tracer_amplitudes(k, mu, b, f: float, sigma=None) -> np.ndarray:
    """``A_a(k, mu) = (b_a + f mu^2) D_a(k, mu)``, shape (n_k, n_mu, N) (dimensionless)."""
    b = np.atleast_1d(np.asarray(b, dtype=float))
    mu = np.asarray(mu, dtype=float)
    D = damping(k, mu, sigma, b.size)
    return (b[None, None, :] + f * mu[None, :, None] ** 2) * D


def tracer_covariance(k, mu, pk, b, f: float, n, sigma=None) -> np.ndarray:
    """Tracer covariance ``C_ab(k, mu) = A_a A_b P(k) + delta_ab / n_a`` [(Mpc/h)^3].

    k [h/Mpc] (n_k,), mu (n_mu,), pk [(Mpc/h)^3] (n_k,), b (N,), f growth rate, n
    [(h/Mpc)^3] (N,), sigma [Mpc/h] damping length (see :func:`damping`).
    Returns shape (n_k, n_mu, N, N).
    """
    n = np.atleast_1d(np.asarray(n, dtype=float))
    A = tracer_amplitudes(k, mu, b, f, sigma)
    pk = np.asarray(pk, dtype=float)
    C = A[..., :, None] * A[..., None, :] * pk[:, None, None, None]
    return C + np.diag(1.0 / n)


def covariance_derivatives(k, mu, pk, b, f: float, sigma=None):
    """Analytic derivatives of :func:`tracer_covariance` (the noise does not depend on them).

    Returns ``(dC_dlnP, dC_dlnb, dC_df)``:

    * ``dC_dlnP`` (n_k, n_mu, N, N): ``A_a A_b P`` -- the derivative w.r.t. ln P at each k
      node, i.e. w.r.t. the ln band power of that node's band (it is zero at other nodes);
    * ``dC_dlnb`` (N, n_k, n_mu, N, N): w.r.t. ln b_c, ``P b_c D_c (e_c A^T + A e_c^T)``;
    * ``dC_df`` (n_k, n_mu, N, N): w.r.t. f (not ln f), ``P mu^2 (D A^T + A D^T)``.
    """
    b = np.atleast_1d(np.asarray(b, dtype=float))
    N = b.size
    mu = np.asarray(mu, dtype=float)
    pk = np.asarray(pk, dtype=float)[:, None, None]
    D = damping(k, mu, sigma, N)
    A = (b[None, None, :] + f * mu[None, :, None] ** 2) * D
    dlnP = A[..., :, None] * A[..., None, :] * pk[..., None]
    # dA_a/dln b_c = delta_ac b_c D_c  -> G[c, ..., a]
    G = np.einsum("ca,...a->c...a", np.diag(b), D)
    outer = G[..., :, None] * A[None, ..., None, :]
    dlnb = (outer + np.swapaxes(outer, -1, -2)) * pk[None, ..., None]
    dA_df = mu[None, :, None] ** 2 * D
    o = dA_df[..., :, None] * A[..., None, :]
    df = (o + np.swapaxes(o, -1, -2)) * pk[..., None]
    return dlnP, dlnb, df


# ---------------------------------------------------------------------------------------------
# Fisher matrices
# ---------------------------------------------------------------------------------------------


def _whitener(C: np.ndarray) -> np.ndarray:
    """``L^-1`` with ``C = L L^T`` (Cholesky), batched over leading axes."""
    try:
        L = np.linalg.cholesky(C)
    except np.linalg.LinAlgError as exc:  # pragma: no cover - C has positive noise
        from fishcast.errors import NumericalError

        raise NumericalError(f"tracer covariance is not positive definite: {exc}") from exc
    return np.linalg.inv(L)


def _whiten(Linv: np.ndarray, dC: np.ndarray) -> np.ndarray:
    """``L^-1 dC L^-T`` (symmetric when dC is); Tr[C^-1 X C^-1 Y] = sum(whiten(X) * whiten(Y))."""
    return Linv @ dC @ np.swapaxes(Linv, -1, -2)


def fisher_trace(C: np.ndarray, dC: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """General trace-formula Fisher ``F_pq = sum_modes w Tr[C^-1 dC_p C^-1 dC_q]``.

    C (*modes, N, N), dC (n_par, *modes, N, N), weights broadcastable to ``modes`` (for one
    shell: :func:`mode_weights`).  Symmetric positive semi-definite by construction
    (computed as X W X^T with X the whitened derivatives).  Returns (n_par, n_par).
    """
    Linv = _whitener(C)
    X = _whiten(Linv[None], dC)
    n_par = X.shape[0]
    w = np.broadcast_to(np.asarray(weights, dtype=float), C.shape[:-2])
    Xw = X * np.sqrt(w)[None, ..., None, None]
    Xf = Xw.reshape(n_par, -1)
    F = Xf @ Xf.T
    return 0.5 * (F + F.T)


def band_parameter_names(n_k: int, tracers, rsd: bool) -> list[str]:
    """Names of the band-power/bias/f parameters of one shell: ``lnP_<i>`` for band i
    (1-based), ``lnb_<tracer>``, and ``f`` when RSD is on."""
    return [f"lnP_{i + 1}" for i in range(n_k)] + [f"lnb_{t}" for t in tracers] + (
        ["f"] if rsd else []
    )


def band_fisher(k, k2dk, mu, w_mu, pk, b, f: float, n, volume: float, sigma=None,
                rsd: bool = True) -> np.ndarray:
    """Band-power / bias / f Fisher of one shell (Abramo 2012).

    Parameters, in this order: ``ln P_i`` for each k band (n_k), ``ln b_a`` for each tracer
    (N), and ``f`` if ``rsd`` (with rsd False, f is ignored and set to zero).  Units as in
    :func:`tracer_covariance`; volume [(Mpc/h)^3].  The band-band block is diagonal (each
    band power changes only its own band).  Cost O(n_k n_mu N^3), no loop over modes or
    tracer pairs.  Returns (n_k + N + rsd, n_k + N + rsd).
    """
    f = float(f) if rsd else 0.0
    if not rsd:
        sigma = None
    C = tracer_covariance(k, mu, pk, b, f, n, sigma)
    dlnP, dlnb, df = covariance_derivatives(k, mu, pk, b, f, sigma)
    W = mode_weights(volume, k2dk, w_mu)  # (n_k, n_mu)
    Linv = _whitener(C)
    xP = _whiten(Linv, dlnP)  # (n_k, n_mu, N, N)
    xs = [_whiten(Linv[None], dlnb)]
    if rsd:
        xs.append(_whiten(Linv, df)[None])
    xN = np.concatenate(xs, axis=0)  # (n_nuis, n_k, n_mu, N, N)
    n_k = xP.shape[0]
    n_nuis = xN.shape[0]
    F = np.zeros((n_k + n_nuis, n_k + n_nuis))
    idx = np.arange(n_k)
    F[idx, idx] = np.einsum("km,kmab,kmab->k", W, xP, xP)
    cross = np.einsum("km,kmab,pkmab->kp", W, xP, xN)
    F[:n_k, n_k:] = cross
    F[n_k:, :n_k] = cross.T
    F[n_k:, n_k:] = np.einsum("km,pkmab,qkmab->pq", W, xN, xN)
    return F


def single_tracer_band_fishers(k, k2dk, mu, w_mu, pk, b, f: float, n, volume: float,
                               sigma=None, rsd: bool = True) -> np.ndarray:
    """Each tracer alone (FKP): the band/bias/f Fisher of tracer a using only its auto
    covariance ``C_aa``, embedded in the joint parameter list of :func:`band_fisher` (zeros on
    the other tracers' biases).  Vectorized over tracers.  Returns (N, n_par, n_par); their
    sum over the first axis is the naive sum of single-tracer Fishers."""
    b = np.atleast_1d(np.asarray(b, dtype=float))
    n = np.atleast_1d(np.asarray(n, dtype=float))
    N = b.size
    f = float(f) if rsd else 0.0
    if not rsd:
        sigma = None
    mu = np.asarray(mu, dtype=float)
    D = damping(k, mu, sigma, N)  # (n_k, n_mu, N)
    A = (b[None, None, :] + f * mu[None, :, None] ** 2) * D
    pk3 = np.asarray(pk, dtype=float)[:, None, None]
    S = A**2 * pk3  # (n_k, n_mu, N) signal of each tracer
    Caa = S + 1.0 / n[None, None, :]
    W = mode_weights(volume, k2dk, w_mu)[..., None]  # (n_k, n_mu, 1)
    yP = S / Caa  # C^-1 dC/dlnP for each tracer
    yb = 2.0 * pk3 * b[None, None, :] * D * A / Caa
    yf = 2.0 * pk3 * mu[None, :, None] ** 2 * D * A / Caa
    n_k = S.shape[0]
    n_par = n_k + N + (1 if rsd else 0)
    F = np.zeros((N, n_par, n_par))
    ta = np.arange(N)
    ik = np.arange(n_k)
    F[:, ik, ik] = np.einsum("kma,kma->ak", W * yP, yP)
    F[ta, :n_k, n_k + ta] = np.einsum("kma,kma->ak", W * yP, yb)
    F[ta, n_k + ta, :n_k] = F[ta, :n_k, n_k + ta]
    F[ta, n_k + ta, n_k + ta] = np.einsum("kma,kma->a", W * yb, yb)
    if rsd:
        jf = n_k + N
        F[:, :n_k, jf] = np.einsum("kma,kma->ak", W * yP, yf)
        F[:, jf, :n_k] = F[:, :n_k, jf]
        F[ta, n_k + ta, jf] = np.einsum("kma,kma->a", W * yb, yf)
        F[ta, jf, n_k + ta] = F[ta, n_k + ta, jf]
        F[:, jf, jf] = np.einsum("kma,kma->a", W * yf, yf)
    return F


def effective_volumes(k, mu, w_mu, pk, b, f: float, n, volume: float, sigma=None,
                      rsd: bool = True):
    """Effective volumes [(Mpc/h)^3] per k node, per tracer and combined.

    ``V_eff,a(k) = V (1/2) Int_{-1}^{1} dmu [P_a/(1+P_a)]^2`` with ``P_a = n_a A_a^2 P`` and the
    combined ``V_eff(k) = V (1/2) Int dmu [P_tot/(1+P_tot)]^2``, ``P_tot = sum_a P_a`` (the
    information on ln P with the biases known is ``N_k/2 V_eff/V``).
    Returns ``(per_tracer (n_k, N), combined (n_k,))``.
    """
    b = np.atleast_1d(np.asarray(b, dtype=float))
    n = np.atleast_1d(np.asarray(n, dtype=float))
    f = float(f) if rsd else 0.0
    if not rsd:
        sigma = None
    A = tracer_amplitudes(k, mu, b, f, sigma)
    Pa = n[None, None, :] * A**2 * np.asarray(pk, dtype=float)[:, None, None]
    Pt = Pa.sum(axis=-1)
    wm = 0.5 * np.asarray(w_mu)
    per = volume * np.einsum("m,kma->ka", wm, (Pa / (1.0 + Pa)) ** 2)
    comb = volume * np.einsum("m,km->k", wm, (Pt / (1.0 + Pt)) ** 2)
    return per, comb


def fkp_sigma_lnP(n_modes, nP):
    """Feldman-Kaiser-Peacock (1994): ``sigma(P)/P = sqrt(2/N_k) (1 + 1/(nP))``; nP
    dimensionless (n [(h/Mpc)^3] times b^2 P [(Mpc/h)^3]), N_k the number of modes."""
    return np.sqrt(2.0 / np.asarray(n_modes)) * (1.0 + 1.0 / np.asarray(nP))


# ---------------------------------------------------------------------------------------------
# closed forms (real space, f = 0; physics.md section 2), per unit phase-space volume:
# F_ij = Int d^3x d^3k/(2 pi)^3 f_ij, so f_ij = (1/2) Tr[C^-1 C_,i C^-1 C_,j] per mode.
# ``Pa`` = n_a b_a^2 P (dimensionless effective clustering strengths), shape (..., N).
# ---------------------------------------------------------------------------------------------


def closed_form_lnP_lnP(Pa) -> np.ndarray:
    """``f[lnP, lnP] = 1/2 [P_tot/(1+P_tot)]^2``, shape (...)."""
    Pt = np.sum(Pa, axis=-1)
    return 0.5 * (Pt / (1.0 + Pt)) ** 2


def closed_form_lnP_lnb(Pa) -> np.ndarray:
    """``f[lnP, ln b_g] = P_g P_tot / (1+P_tot)^2``, shape (..., N)."""
    Pa = np.asarray(Pa, dtype=float)
    Pt = Pa.sum(axis=-1, keepdims=True)
    return Pa * Pt / (1.0 + Pt) ** 2


def closed_form_lnb_lnb(Pa) -> np.ndarray:
    """``f[ln b_g, ln b_d] = [delta_gd P_g P_tot (1+P_tot) + P_g P_d (1-P_tot)]/(1+P_tot)^2``,
    shape (..., N, N)."""
    Pa = np.asarray(Pa, dtype=float)
    Pt = Pa.sum(axis=-1)[..., None, None]
    N = Pa.shape[-1]
    diag = np.eye(N) * (Pa * Pa.sum(axis=-1, keepdims=True) * (1.0 + Pa.sum(axis=-1, keepdims=True)))[..., None, :]
    off = Pa[..., :, None] * Pa[..., None, :] * (1.0 - Pt)
    return (diag + off) / (1.0 + Pt) ** 2


# ---------------------------------------------------------------------------------------------
# projection
# ---------------------------------------------------------------------------------------------


def project(F_band: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    """``F_theta = J^T F_band J`` with ``J[i, alpha] = d p_i / d theta_alpha``, p the
    band-power/bias/f parameters (ln P_i, ln b_a, f) of :func:`band_fisher`."""
    J = np.asarray(jacobian, dtype=float)
    F = J.T @ np.asarray(F_band, dtype=float) @ J
    return 0.5 * (F + F.T)
