"""Honest conditioning of a Fisher matrix, stability of its errors, and Gaussian validity.

In the order of ``notes/derivatives.md`` ("Conditioning, in order"):

1. Symmetry error ``|F - F^T|_F / |F|_F`` (Frobenius norms); ``F`` is then symmetrized.
2. Correlation form ``R = D^-1/2 F D^-1/2`` with ``D = diag F``. ``cond(F)`` is reported but
   only reflects the parameters' units (``A_s`` versus ``1e9 A_s`` changes it by 18 decades
   with identical errors); ``cond(R)`` is what the verdict uses.
3. Cholesky of ``R``. Failure (``F`` not positive definite), or ``cond(R)`` above
   :data:`fishcast.fisher.COND_LIMIT`, raises :class:`~fishcast.errors.DegenerateFisherError`
   naming the parameters that dominate each bad eigen-direction. Never a pseudo-inverse,
   never an eigenvalue clamp.
4. Eigen-decomposition of ``R``: the weakest directions, named by their dominant parameters.
5. Covariance from the Cholesky factor, ``C = D^-1/2 R^-1 D^-1/2``; residual
   ``max|R R^-1 - I|``.
6. Empirical stability (:func:`error_stability`): marginalized errors recomputed with each
   derivative taken one rung up and one rung down its ladder, and with derivative-level noise
   at the plateau spread measured by the sweep. No new model evaluations are needed.

Plus :func:`project_degenerate` (``--allow-degenerate``: projects out named directions and
records them) and the Gaussian-validity check (:func:`principal_points`,
:func:`delta_chi2`): the real ``Delta chi^2 = norm(s(theta) - s(theta_fid))^2`` at the fiducial
plus/minus ``n_sigma`` along each principal direction of the forecast covariance, against the
Fisher prediction ``n_sigma^2`` (:func:`gaussian_verdicts` judges Delta chi^2 measured already).

Thresholds (:class:`DiagnosticsConfig`, stored with every result). No published threshold on
``cond(R)`` is agreed: gwbench refuses above 1e15, derivkit warns above 1e12. fishcast refuses
at 1e15 (:data:`fishcast.fisher.COND_LIMIT`, one limit for the whole project: beyond it an
inverse keeps no significant digit in double precision, ``cond * eps > 0.1``) and warns above
1e10, earlier than derivkit, because the derivatives themselves carry relative errors of
1e-4..1e-3 (CAMB at default accuracy) that a weak direction amplifies; whether they matter is
then decided by the empirical stability check, which is the verdict that counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from pydantic import BaseModel, ConfigDict, Field

from .errors import DegenerateFisherError, InputError
from .fisher import COND_LIMIT, eigen_directions, invert_correlation_form

__all__ = [
    "DiagnosticsConfig",
    "ConditioningReport",
    "ErrorStability",
    "ProjectedFisher",
    "PrincipalPoints",
    "GaussianValidity",
    "conditioning_report",
    "correlation_covariance",
    "error_stability",
    "project_degenerate",
    "principal_points",
    "delta_chi2",
    "gaussian_verdicts",
    "format_report",
    "format_sweeps",
]

#: moved to :mod:`fishcast.io.diagnostics` (the HDF5 contract lives in fishcast.io); still
#: importable from here for old importers
_MOVED_TO_IO = ("write_diagnostics", "read_diagnostics")


def __getattr__(name: str):
    if name in _MOVED_TO_IO:
        from .io import diagnostics

        return getattr(diagnostics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_VERDICTS = ("PASS", "WARN", "FAIL")


def _worst(*verdicts: str) -> str:
    return max(verdicts, key=_VERDICTS.index) if verdicts else "PASS"


class DiagnosticsConfig(BaseModel):
    """Thresholds of the conditioning, stability and Gaussian-validity checks.

    symmetry_*: relative asymmetry |F - F^T|_F / |F|_F (a Gram matrix is symmetric to
        rounding, 1e-16; 1e-10 means an assembly problem, 1e-6 a bug).
    cond_warn / cond_refuse: condition number of the correlation form R (see module doc).
    residual_*: max|R R^-1 - I|; a backward-stable inverse leaves ~cond(R) * 2.2e-16.
    stability_*: largest relative change of a marginalized error when derivatives move to a
        neighbouring rung or get noise at the plateau spread (1%: below the per-cent accuracy
        forecasts are quoted at; 5%: the error bar's second digit is noise).
    n_noise / seed: noise realizations of the stability check and their seed.
    gaussian_tolerance: flag a principal direction when |Delta chi^2 / n_sigma^2 - 1| exceeds
        it (0.25: the 1-sigma contour along it is off by > ~12%, since sigma ~ 1/sqrt(Delta chi^2)).
    gaussian_sigma_tolerance: a flagged direction is a WARN when, given its true width, it
        moves the marginalized error of a parameter of interest (the cosmological ones) by
        more than this (0.1: about the ~12% of gaussian_tolerance); else it is a note.
    dominant_fraction: an eigenvector component is named when its squared weight is at least
        this fraction of the largest; n_weak: weakest directions reported.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    symmetry_warn: float = Field(1e-10, gt=0)
    symmetry_fail: float = Field(1e-6, gt=0)
    cond_warn: float = Field(1e10, gt=1)
    cond_refuse: float = Field(COND_LIMIT, gt=1)
    residual_warn: float = Field(1e-6, gt=0)
    residual_fail: float = Field(1e-3, gt=0)
    stability_warn: float = Field(0.01, gt=0)
    stability_fail: float = Field(0.05, gt=0)
    n_noise: int = Field(4, ge=0, le=100)
    seed: int = 12345
    gaussian_tolerance: float = Field(0.25, gt=0)
    gaussian_sigma_tolerance: float = Field(0.1, gt=0)
    dominant_fraction: float = Field(0.1, gt=0, le=1)
    n_weak: int = Field(3, ge=1)


def _cfg(thresholds) -> DiagnosticsConfig:
    if thresholds is None:
        return DiagnosticsConfig()
    if isinstance(thresholds, DiagnosticsConfig):
        return thresholds
    return DiagnosticsConfig(**dict(thresholds))


# ---------------------------------------------------------------------------- linear algebra
_directions = eigen_directions


def correlation_covariance(F: np.ndarray, names: Sequence[str], cond_refuse: float = COND_LIMIT,
                           dominant_fraction: float = 0.1) -> np.ndarray:
    """Covariance ``F^-1`` through the correlation form and its Cholesky factor.

    Same contract as :meth:`fishcast.fisher.FisherMatrix.covariance`: raises
    DegenerateFisherError naming the parameters of every direction with eigenvalue of ``R``
    at or below ``lambda_max / cond_refuse`` (or a non-positive diagonal).
    """
    cov, _, _ = _invert(np.asarray(F, dtype=float), list(names), cond_refuse, dominant_fraction)
    return cov


def _invert(F: np.ndarray, names: list[str], cond_refuse: float, frac: float):
    """(covariance, R^-1, R) or raise DegenerateFisherError (see fishcast.fisher)."""
    return invert_correlation_form(F, names, cond_refuse, frac)


# ---------------------------------------------------------------------------- conditioning
@dataclass(frozen=True)
class ConditioningReport:
    """Conditioning of a Fisher matrix (see the module docstring for each step).

    cond_F is unit-dependent (label it so); cond_R is not. eigenvalues/eigenvectors: of R,
    ascending (eigenvectors in columns). weak_directions: the ``n_weak`` smallest, each
    ``(eigenvalue, {name: component})`` with dominant parameters first. covariance in
    ``unit_i * unit_j`` (None when degenerate and not raised); sigmas in ``unit_i``.
    """

    names: tuple[str, ...]
    symmetry_error: float
    cond_F: float
    cond_R: float
    cholesky_ok: bool
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    weak_directions: tuple
    covariance: np.ndarray | None
    marginalized_sigma: np.ndarray | None
    conditional_sigma: np.ndarray
    inversion_residual: float
    verdict: str
    reasons: tuple[str, ...]
    thresholds: DiagnosticsConfig
    units: tuple[str, ...] | None = None


def conditioning_report(F: np.ndarray, names: Sequence[str], thresholds: DiagnosticsConfig | Mapping | None = None,
                        *, units: Sequence[str] | None = None, raise_on_degenerate: bool = True) -> ConditioningReport:
    """Conditioning report of the Fisher matrix ``F`` [1/(unit_i unit_j)] with parameter ``names``.

    Raises DegenerateFisherError (naming the parameters of each bad direction) when ``F`` is
    not positive definite or ``cond(R) > thresholds.cond_refuse``; with
    ``raise_on_degenerate=False`` returns a FAIL report without covariance instead, so the
    verdict can still be written to the output file.
    """
    cfg = _cfg(thresholds)
    names = [str(n) for n in names]
    F = np.asarray(F, dtype=float)
    n = len(names)
    if F.shape != (n, n):
        raise InputError(f"Fisher matrix of shape {F.shape} for {n} names")
    if not np.all(np.isfinite(F)):
        raise InputError("the Fisher matrix has non-finite entries")
    fnorm = np.linalg.norm(F)
    sym = float(np.linalg.norm(F - F.T) / fnorm) if fnorm > 0 else 0.0
    F = 0.5 * (F + F.T)
    reasons: list[str] = []
    verdicts: list[str] = []
    if sym > cfg.symmetry_fail:
        verdicts.append("FAIL")
        reasons.append(f"asymmetry {sym:.2g} > {cfg.symmetry_fail:g}")
    elif sym > cfg.symmetry_warn:
        verdicts.append("WARN")
        reasons.append(f"asymmetry {sym:.2g} > {cfg.symmetry_warn:g} (symmetrized)")
    sv = np.linalg.svd(F, compute_uv=False)
    cond_F = float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf
    d = np.diag(F)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond_sigma = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), np.inf)
    if np.all(d > 0):
        s = 1.0 / np.sqrt(d)
        R = F * s[:, None] * s[None, :]
        R = 0.5 * (R + R.T)
        evals, evecs = np.linalg.eigh(R)
    else:
        R = None
        evals, evecs = np.full(n, np.nan), np.full((n, n), np.nan)
    cond_R = float(evals[-1] / evals[0]) if (R is not None and evals[0] > 0) else math.inf
    weak = tuple(_directions(names, evals, evecs, range(min(cfg.n_weak, n)), cfg.dominant_fraction)) if R is not None else ()
    cov = sig = None
    residual = math.nan
    chol_ok = False
    try:
        cov, Rinv, R = _invert(F, names, cfg.cond_refuse, cfg.dominant_fraction)
        chol_ok = True
    except DegenerateFisherError as exc:
        if raise_on_degenerate:
            raise
        try:
            scipy.linalg.cho_factor(R, lower=True) if R is not None else None
            chol_ok = R is not None
        except np.linalg.LinAlgError:
            chol_ok = False
        verdicts.append("FAIL")
        reasons.append(" ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()))  # whole: it names the parameters
        weak = tuple(exc.directions) or weak
    if cov is not None:
        residual = float(np.max(np.abs(R @ Rinv - np.eye(n))))
        sig = np.sqrt(np.diag(cov))
        if cond_R > cfg.cond_warn:
            verdicts.append("WARN")
            reasons.append(f"cond(R) = {cond_R:.3g} > {cfg.cond_warn:g}")
        if residual > cfg.residual_fail:
            verdicts.append("FAIL")
            reasons.append(f"inversion residual {residual:.2g} > {cfg.residual_fail:g}")
        elif residual > cfg.residual_warn:
            verdicts.append("WARN")
            reasons.append(f"inversion residual {residual:.2g} > {cfg.residual_warn:g}")
    return ConditioningReport(
        names=tuple(names), symmetry_error=sym, cond_F=cond_F, cond_R=cond_R, cholesky_ok=chol_ok,
        eigenvalues=evals, eigenvectors=evecs, weak_directions=weak, covariance=cov,
        marginalized_sigma=sig, conditional_sigma=cond_sigma, inversion_residual=residual,
        verdict=_worst(*verdicts), reasons=tuple(reasons), thresholds=cfg,
        units=tuple(units) if units is not None else None,
    )


# ---------------------------------------------------------------------------- stability
@dataclass(frozen=True)
class ErrorStability:
    """How much each marginalized error moves when the derivatives move.

    cases: labels ("<name> up": that parameter's derivative from the rung above the chosen one
    (larger step), "<name> down": the rung below, with the reported stencil; suffix
    "(3-point)" where the 5-point estimate does not exist on that rung (the top rung, or a
    change of stencil at a domain boundary); "noise <r>": every derivative plus noise of
    norm ``spread * |D|`` in the data metric). sigma (n_par,) baseline [unit_i];
    sigma_cases (n_cases, n_par) (NaN where the perturbed matrix is degenerate);
    rung_change / noise_change / max_change (n_par,): max |sigma_case / sigma - 1| over the
    rung cases, the noise cases, all cases; worst_case: the case of max_change per parameter.
    """

    names: tuple[str, ...]
    sigma: np.ndarray
    cases: tuple[str, ...]
    sigma_cases: np.ndarray
    rung_change: np.ndarray
    noise_change: np.ndarray
    max_change: np.ndarray
    worst_case: tuple[str, ...]
    verdict: str
    reasons: tuple[str, ...]
    thresholds: DiagnosticsConfig


def _maybe_symmetric(g: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Symmetrize noise over the last two axes when the derivative is symmetric there
    (e.g. a tracer covariance or C_ell over bin pairs), so noise stays in the signal's space."""
    if like.ndim >= 2 and like.shape[-1] == like.shape[-2] and np.allclose(like, np.swapaxes(like, -1, -2)):
        return 0.5 * (g + np.swapaxes(g, -1, -2))
    return g


def error_stability(sweeps: Sequence | Mapping, gram: Callable[[np.ndarray], np.ndarray],
                    prior: np.ndarray | None = None, thresholds: DiagnosticsConfig | Mapping | None = None,
                    derivatives: Mapping[str, np.ndarray] | None = None) -> ErrorStability:
    """Stability of the marginalized errors under the derivative's own uncertainty.

    sweeps: the :class:`~fishcast.derivatives.ParameterSweep` of every parameter, in the
        Fisher matrix's order (a Mapping name -> sweep keeps its order).
    gram: ``gram(derivs) -> F`` for a stack ``(n_par, *signal.shape)`` (the probe's Fisher
        metric at the fiducial, e.g. ``functools.partial(probe.gram, fid_signal)``).
    prior: a Fisher matrix added to every recomputed one (Gaussian priors), or None.
    derivatives: optional baseline derivatives by name (default: each sweep's chosen one).
    """
    cfg = _cfg(thresholds)
    items = list(sweeps.values()) if isinstance(sweeps, Mapping) else list(sweeps)
    names = [sw.name for sw in items]
    n = len(names)
    base = np.stack([np.asarray(derivatives[sw.name]) if derivatives else np.asarray(sw.derivative) for sw in items])
    P = np.zeros((n, n)) if prior is None else np.asarray(prior, dtype=float)

    def sigmas(stack: np.ndarray) -> np.ndarray:
        F = np.asarray(gram(stack), dtype=float) + P
        try:
            cov = correlation_covariance(0.5 * (F + F.T), names, cfg.cond_refuse)
        except DegenerateFisherError:
            return np.full(n, np.nan)
        return np.sqrt(np.diag(cov))

    F0 = np.asarray(gram(base), dtype=float)
    sigma = np.sqrt(np.diag(correlation_covariance(0.5 * (F0 + F0.T) + P, names, cfg.cond_refuse)))
    cases: list[str] = []
    rows: list[np.ndarray] = []
    kinds: list[str] = []
    for i, sw in enumerate(items):
        for label, rung in (("up", sw.chosen - 1), ("down", sw.chosen + 1)):
            if 0 <= rung < len(sw.steps):
                stack = base.copy()
                stack[i] = sw.derivative_at(rung)
                fallback = "5-point" in sw.stencil and not sw.has_5pt(rung)
                cases.append(f"{sw.name} {label}" + (" (3-point)" if fallback else ""))
                rows.append(sigmas(stack))
                kinds.append("rung")
    rng = np.random.default_rng(cfg.seed)
    dnorm = np.sqrt(np.maximum(np.diag(F0), 0.0))
    spreads = np.array([sw.spread if np.isfinite(sw.spread) else 0.0 for sw in items])
    if np.any(spreads > 0):
        for r in range(cfg.n_noise):
            g = np.stack([_maybe_symmetric(rng.standard_normal(base.shape[1:]), base[i]) for i in range(n)])
            gn = np.sqrt(np.maximum(np.diag(np.asarray(gram(g), dtype=float)), 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(gn > 0, spreads * dnorm / gn, 0.0)
            cases.append(f"noise {r}")
            rows.append(sigmas(base + g * scale.reshape((n,) + (1,) * (base.ndim - 1))))
            kinds.append("noise")
    sc = np.array(rows) if rows else np.zeros((0, n))
    with np.errstate(invalid="ignore"):
        change = np.abs(sc / sigma[None, :] - 1.0)
    change = np.where(np.isnan(change), np.inf, change)
    kinds_a = np.array(kinds)

    def maxof(mask):
        return np.max(change[mask], axis=0) if np.any(mask) else np.zeros(n)

    rung_change = maxof(kinds_a == "rung") if len(kinds) else np.zeros(n)
    noise_change = maxof(kinds_a == "noise") if len(kinds) else np.zeros(n)
    max_change = np.maximum(rung_change, noise_change)
    worst = tuple(cases[int(np.argmax(change[:, j]))] if len(cases) else "" for j in range(n))
    reasons = []
    verdicts = []
    for j in range(n):
        if max_change[j] > cfg.stability_fail:
            verdicts.append("FAIL")
            reasons.append(f"sigma({names[j]}) moves by {max_change[j]:.2%} ({worst[j]}) > {cfg.stability_fail:.0%}")
        elif max_change[j] > cfg.stability_warn:
            verdicts.append("WARN")
            reasons.append(f"sigma({names[j]}) moves by {max_change[j]:.2%} ({worst[j]}) > {cfg.stability_warn:.0%}")
    return ErrorStability(
        names=tuple(names), sigma=sigma, cases=tuple(cases), sigma_cases=sc, rung_change=rung_change,
        noise_change=noise_change, max_change=max_change, worst_case=worst, verdict=_worst(*verdicts),
        reasons=tuple(reasons), thresholds=cfg,
    )


# ---------------------------------------------------------------------------- projection
@dataclass(frozen=True)
class ProjectedFisher:
    """A Fisher matrix with degenerate directions projected out (``--allow-degenerate``).

    removed: the directions removed, ``{name: component}`` in the correlation form (unit
    vectors of R-space). matrix: ``D^1/2 P R P D^1/2`` with ``P = I - V V^T`` (singular by
    construction, for the record). basis: orthonormal basis (n, n - k) of the kept subspace of
    R-space; reduced_matrix: ``basis^T R basis`` (invertible). covariance: ``D^-1/2 basis
    reduced^-1 basis^T D^-1/2`` [unit_i unit_j]: the errors *conditional on the removed
    combinations being known* (zero variance along them), which the output must say.
    """

    names: tuple[str, ...]
    removed: tuple[dict, ...]
    matrix: np.ndarray
    basis: np.ndarray
    reduced_matrix: np.ndarray
    covariance: np.ndarray
    marginalized_sigma: np.ndarray
    note: str


def project_degenerate(F: np.ndarray, names: Sequence[str], directions: Sequence[Mapping[str, float]] | None = None,
                       thresholds: DiagnosticsConfig | Mapping | None = None) -> ProjectedFisher:
    """Project the named directions out of ``F`` and invert on the rest.

    directions: ``{name: component}`` vectors in the correlation form (as in
    ``DegenerateFisherError.directions``; missing names are 0); None: every direction with
    eigenvalue of R at or below ``lambda_max / cond_refuse``. Raises DegenerateFisherError if
    the rest is still degenerate, InputError for unknown names.
    """
    cfg = _cfg(thresholds)
    names = [str(x) for x in names]
    F = np.asarray(F, dtype=float)
    F = 0.5 * (F + F.T)
    n = len(names)
    d = np.diag(F)
    if np.any(d <= 0):
        bad = [names[i] for i in range(n) if d[i] <= 0]
        raise DegenerateFisherError("no information on " + ", ".join(bad) + ": fix these parameters",
                                    [(0.0, {b: 1.0}) for b in bad])
    s = 1.0 / np.sqrt(d)
    R = F * s[:, None] * s[None, :]
    evals, evecs = np.linalg.eigh(R)
    if directions is None:
        idx = np.nonzero(evals <= evals[-1] / cfg.cond_refuse)[0]
        V = evecs[:, idx]
    else:
        cols = []
        for dvec in directions:
            unknown = set(dvec) - set(names)
            if unknown:
                raise InputError(f"unknown parameters in a direction to project out: {sorted(unknown)}")
            cols.append(np.array([float(dvec.get(nm, 0.0)) for nm in names]))
        V = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
        V, _ = np.linalg.qr(V)
    k = V.shape[1]
    P = np.eye(n) - V @ V.T
    # orthonormal complement: eigenvectors of P with eigenvalue 1
    pe, pv = np.linalg.eigh(P)
    basis = pv[:, pe > 0.5]
    red = basis.T @ R @ basis
    red = 0.5 * (red + red.T)
    red_names = [f"kept direction {i}" for i in range(n - k)]
    _, red_inv, _ = _invert_unit(red, red_names, cfg)
    covR = basis @ red_inv @ basis.T
    cov = covR * s[:, None] * s[None, :]
    removed = []
    for j in range(k):
        v = V[:, j] * (1 if V[np.argmax(np.abs(V[:, j])), j] > 0 else -1)
        order = np.argsort(-(v**2))
        removed.append({names[i]: float(v[i]) for i in order if v[i] ** 2 >= 1e-12})
    matrix = (P @ R @ P) / (s[:, None] * s[None, :])
    note = (f"{k} direction(s) projected out (--allow-degenerate); the errors are conditional on "
            "those parameter combinations being known (held at the fiducial)")
    return ProjectedFisher(names=tuple(names), removed=tuple(removed), matrix=matrix, basis=basis,
                           reduced_matrix=red, covariance=0.5 * (cov + cov.T),
                           marginalized_sigma=np.sqrt(np.maximum(np.diag(cov), 0.0)), note=note)


def _invert_unit(red: np.ndarray, names: list[str], cfg: DiagnosticsConfig):
    if red.shape[0] == 0:
        return np.zeros((0, 0)), np.zeros((0, 0)), red
    return _invert(red, names, cfg.cond_refuse, cfg.dominant_fraction)


# ---------------------------------------------------------------------------- Gaussian validity
@dataclass(frozen=True)
class PrincipalPoints:
    """Parameter points at the fiducial +- n_sigma along each principal direction.

    Principal directions are those of the correlation matrix of the covariance (so that the
    choice does not depend on the parameters' units); every point lies on the Fisher
    ``n_sigma`` ellipsoid ``delta^T F delta = n_sigma^2``, and the directions are
    F-orthogonal, so the outer products of the offsets sum to ``n_sigma^2 C``. offsets (N, n):
    the displacement of direction i [unit_j]; points (2N, n): rows fid + offsets[0], fid -
    offsets[0], fid + offsets[1], ...; labels like "+1"/"-1"; inside: whether each point is in
    the parameters' physical domain (points outside are not to be evaluated); kinds: what
    each direction is (see the field).
    """

    names: tuple[str, ...]
    fiducial: np.ndarray
    n_sigma: float
    offsets: np.ndarray
    points: np.ndarray
    labels: tuple[str, ...]
    inside: np.ndarray
    sigma: np.ndarray | None = None
    #: per direction: "principal" (of the whole covariance, :func:`principal_points`), or
    #: "cosmological" / "nuisance" (:func:`cosmological_points`: a cosmological direction of
    #: either level, transfer or primordial, is "cosmological")
    kinds: tuple[str, ...] = ()
    #: per parameter: cosmological (:func:`cosmological_points`; empty otherwise)
    cosmological: tuple[bool, ...] = ()

    def dominant(self, direction: int, n: int = 3) -> list[str]:
        """Parameters dominating a principal direction, measured in units of their own
        marginalized sigma (so the answer does not depend on the parameters' units); for a
        cosmological direction, the cosmological parameters that dominate it."""
        off = self.offsets[direction]
        w = off / np.where(self.sigma > 0, self.sigma, 1.0) if self.sigma is not None else off
        return _dominant(self.names, w, _only(self.kinds, direction, self.cosmological), n)

    def as_dicts(self) -> list[dict[str, float]]:
        return [dict(zip(self.names, map(float, p))) for p in self.points]


def _only(kinds: Sequence[str], direction: int, cosmological: Sequence[bool]) -> np.ndarray | None:
    if direction < len(kinds) and kinds[direction] == "cosmological" and any(cosmological):
        return np.asarray(cosmological, dtype=bool)
    return None


def _dominant(names: Sequence[str], w: np.ndarray, only: np.ndarray | None, n: int) -> list[str]:
    w = np.where(only, w, 0.0) if only is not None else np.asarray(w, dtype=float)
    order = np.argsort(-np.abs(w))
    return [names[j] for j in order[:n] if w[j] ** 2 >= 0.1 * w[order[0]] ** 2 and w[j] != 0]


def principal_points(cov: np.ndarray, fiducial: Mapping[str, float] | Sequence[float], names: Sequence[str],
                     n_sigma: float = 1.0, domains: Mapping[str, Callable[[float], bool]] | None = None) -> PrincipalPoints:
    """The 2N points fiducial +- n_sigma along the principal directions of ``cov``.

    domains: optional name -> ``contains(value)`` (e.g. ``ParameterSpec.contains``); when
    None the domains of the parameter registry (:func:`fishcast.parameters.lookup`) are used.
    """
    names = [str(x) for x in names]
    cov = np.asarray(cov, dtype=float)
    fid = np.array([fiducial[nm] for nm in names] if isinstance(fiducial, Mapping) else fiducial, dtype=float)
    sig = np.sqrt(np.maximum(np.diag(cov), 0.0))
    safe = np.where(sig > 0, sig, 1.0)
    corr = cov / np.outer(safe, safe)
    mu, U = np.linalg.eigh(0.5 * (corr + corr.T))
    offsets = (n_sigma * np.sqrt(np.maximum(mu, 0.0))[:, None] * U.T) * sig[None, :]
    pts, labels = [], []
    for i in range(len(names)):
        pts += [fid + offsets[i], fid - offsets[i]]
        labels += [f"+{i}", f"-{i}"]
    pts_a = np.array(pts)
    if domains is None:
        from .parameters import lookup

        domains = {nm: lookup(nm).domain.contains for nm in names}
    inside = np.array([all(domains[nm](float(p[j])) for j, nm in enumerate(names) if nm in domains) for p in pts_a])
    return PrincipalPoints(names=tuple(names), fiducial=fid, n_sigma=float(n_sigma), offsets=offsets,
                           points=pts_a, labels=tuple(labels), inside=inside, sigma=sig,
                           kinds=("principal",) * len(names))


def _points_from_offsets(offsets: np.ndarray, fid: np.ndarray, names: list[str], n_sigma: float, sig: np.ndarray,
                         kinds: Sequence[str], domains: Mapping[str, Callable[[float], bool]] | None) -> PrincipalPoints:
    pts, labels = [], []
    for i in range(offsets.shape[0]):
        pts += [fid + offsets[i], fid - offsets[i]]
        labels += [f"+{i}", f"-{i}"]
    pts_a = np.array(pts).reshape(-1, len(names))
    if domains is None:
        from .parameters import lookup

        domains = {nm: lookup(nm).domain.contains for nm in names}
    inside = np.array([all(domains[nm](float(p[j])) for j, nm in enumerate(names) if nm in domains) for p in pts_a],
                      dtype=bool)
    return PrincipalPoints(names=tuple(names), fiducial=fid, n_sigma=float(n_sigma), offsets=offsets, points=pts_a,
                           labels=tuple(labels), inside=inside, sigma=sig, kinds=tuple(kinds))


def cosmological_points(cov: np.ndarray, fiducial: Mapping[str, float] | Sequence[float], names: Sequence[str],
                        cosmological: Sequence[bool], n_sigma: float = 1.0,
                        domains: Mapping[str, Callable[[float], bool]] | None = None,
                        transfer: Sequence[bool] | None = None) -> PrincipalPoints:
    """The 2N points fiducial +- n_sigma along an F-orthonormal basis of directions that
    checks the marginalized errors of the cosmological parameters: the principal directions
    of their *marginalized* covariance, with every later parameter at its conditional best
    fit, then the nuisance directions with the cosmology held fixed.

    With c the cosmological parameters (``cosmological[j]`` true), n the nuisances, F the
    Fisher matrix and C = F^-1 (``cov``):

    1. cosmological directions: the principal directions of the correlation form of C_cc
       (the errors of the cosmological parameters, every nuisance marginalized),
       delta_c = n_sigma sqrt(mu_i) u_i sigma_c [unit_c]; the nuisances take their best fit
       given delta_c, delta_n = -F_nn^-1 F_nc delta_c = C_nc C_cc^-1 delta_c. Then
       delta^T F delta = delta_c^T C_cc^-1 delta_c = n_sigma^2: the point lies on the
       marginalized n_sigma contour of the cosmological parameters (where the reported
       marginalized errors are read), at the nuisance values that minimize the Fisher chi^2
       there.
    2. nuisance directions: the principal directions of the conditional covariance of the
       nuisances, F_nn^-1 = C_nn - C_nc C_cc^-1 C_cn, with delta_c = 0 (the fiducial
       cosmology: no CAMB run).

    transfer: per parameter, whether it needs a Boltzmann run of its own (it enters
    :func:`fishcast.cosmology.transfer_key`; n_s, sigma8 and A_s do not). When given, step 1
    is split in two (the cheaper basis of ``gaussian_directions: cosmological``), with t the
    transfer parameters and p the other cosmological ones:

    1a. the principal directions of the marginalized C_tt, every other parameter (p and the
        nuisances) at its conditional best fit given delta_t: one Boltzmann run each;
    1b. the principal directions of the p block of the conditional covariance with t fixed,
        G = (F_{(pn)(pn)})^-1 = C_{(pn)(pn)} - C_{(pn)t} C_tt^-1 C_{t(pn)}: of G_pp (the
        nuisances marginalized), delta_t = 0, nuisances at their conditional best fit
        delta_n = G_np G_pp^-1 delta_p. These points keep the fiducial's transfer functions:
        all of them share one Boltzmann run.

    Each level is the same step (:func:`_conjugate_offsets`): the principal directions of
    the level's block of the current conditional covariance, later levels at their
    conditional best fit, earlier levels fixed; the conditional covariance of the later
    levels is then the Schur complement. Every level's directions are F-orthogonal to every
    other level's (the block LDL^T factorization of F: u^T F w = 0 for u of an earlier level
    and w of a later one, shown in :func:`_conjugate_offsets`), and each has delta^T F delta = n_sigma^2, so the outer
    products of the offsets sum to n_sigma^2 C, as for :func:`principal_points`, and
    :func:`sigma_changes` (which needs only that) applies unchanged. A nuisance direction has
    no cosmological component: the width measured along it cannot move a cosmological
    error. With no nuisance (or no cosmological) parameter and no split, the directions are
    those of :func:`principal_points`. Rows of ``offsets``: level by level (transfer,
    other cosmological, nuisance); ``kinds`` says "cosmological" (levels 1, 1a, 1b) or
    "nuisance".
    """
    names = [str(x) for x in names]
    cov = np.asarray(cov, dtype=float)
    cov = 0.5 * (cov + cov.T)
    fid = np.array([fiducial[nm] for nm in names] if isinstance(fiducial, Mapping) else fiducial, dtype=float)
    is_c = np.asarray(cosmological, dtype=bool)
    if is_c.shape != (len(names),):
        raise InputError(f"cosmological: one flag per parameter ({len(names)}), got {is_c.shape}")
    if transfer is None:
        levels = np.where(is_c, 0, 1)
    else:
        is_t = np.asarray(transfer, dtype=bool)
        if is_t.shape != (len(names),):
            raise InputError(f"transfer: one flag per parameter ({len(names)}), got {is_t.shape}")
        levels = np.where(is_c & is_t, 0, np.where(is_c, 1, 2))
    n_levels = int(levels.max()) + 1 if levels.size else 0
    sig = np.sqrt(np.maximum(np.diag(cov), 0.0))
    safe = np.where(sig > 0, sig, 1.0)
    K = cov / np.outer(safe, safe)  # correlation form: the choice does not depend on units
    rows, lv = _conjugate_offsets(K, levels, n_sigma, strict=[lev < n_levels - 1 or bool(np.all(is_c))
                                                               for lev in range(n_levels)])
    kinds = ["nuisance" if not is_c[levels == lev].any() else "cosmological" for lev in lv]
    offsets = np.array(rows).reshape(-1, len(names)) * sig[None, :]
    pts = _points_from_offsets(offsets, fid, names, n_sigma, sig, kinds, domains)
    return dataclasses.replace(pts, cosmological=tuple(bool(x) for x in is_c))


def _conjugate_offsets(K: np.ndarray, levels: np.ndarray, n_sigma: float, strict: Sequence[bool]
                       ) -> tuple[list[np.ndarray], list[int]]:
    """F-orthonormal directions of the covariance ``K``, level by level (``levels[j]``: the
    level of parameter j, 0 first; empty levels are skipped).

    At level l with parameters g, later parameters r and S the covariance of (g, r) given the
    earlier levels fixed (S = K at level 0): the principal directions of the correlation form
    of S_gg, x_g = n_sigma sqrt(nu_i) t v_i (t = sqrt(diag S_gg)), with the later levels at
    their conditional best fit x_r = S_rg S_gg^-1 x_g and the earlier ones at zero; then
    S_rr <- S_rr - S_rg S_gg^-1 S_gr (the covariance of r given g fixed too).

    Conjugacy, with F = K^-1, E the earlier levels and x a direction of level l (x_E = 0):
    z = F x solves K z = x; z = (z_E, z_g, z_r) = (-K_EE^-1 K_Eg z_g, S_gg^-1 x_g, 0) does,
    since S (the Schur complement of K_EE) gives S_gg z_g = x_g on g and S_rg z_g = x_r on r.
    A direction w of a later level has w_E = w_g = 0, so x^T F w = z_r^T w_r = 0; within the
    level, x_i^T F x_j = x_gi^T S_gg^-1 x_gj = n_sigma^2 sqrt(nu_i nu_j) v_i^T M^-1 v_j
    = n_sigma^2 delta_ij (M = V diag(nu) V^T, the correlation form of S_gg). ``strict[l]``: a level
    whose block is not positive definite raises :class:`DegenerateFisherError` (else its
    null directions get zero length, as for the nuisances before). Returns the rows (in K's
    units) and the level of each."""
    n_par = K.shape[0]
    rows: list[np.ndarray] = []
    lv: list[int] = []
    rest = np.arange(n_par)
    S = K.copy()  # the covariance of the parameters ``rest`` given the earlier levels fixed
    for level in range(len(strict)):
        in_g = levels[rest] == level
        if not in_g.any():
            continue
        g, r = rest[in_g], rest[~in_g]
        Sgg, Srg, Srr = S[np.ix_(in_g, in_g)], S[np.ix_(~in_g, in_g)], S[np.ix_(~in_g, ~in_g)]
        t = np.sqrt(np.maximum(np.diag(Sgg), 0.0))
        ts = np.where(t > 0, t, 1.0)
        nu, V = np.linalg.eigh(0.5 * (Sgg + Sgg.T) / np.outer(ts, ts))
        if np.any(nu <= 0) and (strict[level] or r.size):
            raise DegenerateFisherError("the marginalized covariance of the cosmological parameters is not positive "
                                        "definite", [])
        for i in range(g.size):
            x = np.zeros(n_par)
            x[g] = n_sigma * np.sqrt(max(nu[i], 0.0)) * V[:, i] * t
            if r.size:
                x[r] = n_sigma * (Srg @ (V[:, i] / ts)) / np.sqrt(nu[i])  # S_rg S_gg^-1 x_g
            rows.append(x)
            lv.append(level)
        if r.size:
            W = (V / ts[:, None]) / np.sqrt(nu)[None, :]  # S_gg^-1 = W W^T
            SrgW = Srg @ W
            S = Srr - SrgW @ SrgW.T
            S = 0.5 * (S + S.T)
        rest = r
    return rows, lv


#: status of a Gaussian-validity point: evaluated (sent to the backend, or read from the cache), reused (a
#: cosmology this run had already evaluated: no CAMB call), inferred (the -n_sigma side from
#: the +n_sigma side by the quadratic model along the direction, where no verdict depends on
#: it: no CAMB call),
#: outside (certainly outside the domain where the model runs: not sent to CAMB), failed (the
#: model did not run there, or gave a non-finite data vector)
POINT_STATUSES = ("evaluated", "reused", "inferred", "outside", "failed")


@dataclass(frozen=True)
class GaussianValidity:
    """Real Delta chi^2 at the principal points against the Fisher prediction n_sigma^2, and
    what it means for the marginalized errors.

    Per point (2N, rows ``+0, -0, +1, ...`` as in :class:`PrincipalPoints`): delta_chi2 (NaN
    where the model was not evaluated), ratio = delta_chi2 / n_sigma^2, flagged when
    ``|ratio - 1| > tolerance``; status (:data:`POINT_STATUSES`) and point_notes (why a point
    was skipped or failed, or which evaluation it re-used); width_ratio = ``1/sqrt(ratio)``:
    where the true ``Delta chi^2 = n_sigma^2`` contour crosses that side of the direction,
    in units of the Fisher distance (exact when Delta chi^2 grows quadratically along the
    ray, as the Fisher approximation assumes with another curvature).

    Per direction i (N): direction_verdicts PASS, NOTE (non-Gaussian, but no marginalized
    error of a parameter of interest moves by more than ``sigma_tolerance``) or WARN
    (it does, or a point of the direction is outside the domain where the model runs);
    sigma_change (N, n_par): relative change of each marginalized error when the covariance
    takes the true width along direction i, ``C' = C + (w_i^2 - 1) o_i o_i^T`` with o_i the
    1-sigma offset and w_i the mean of the two sides' width ratios (one side when the other
    is missing; NaN when both are). ``of_interest`` (n_par): the parameters whose errors
    decide (the cosmological ones, or all when none is free).

    kinds (N): what each direction is: "principal" (a principal direction of the whole
    covariance, :func:`principal_points`), "cosmological" (of the marginalized cosmological
    errors, nuisances at their conditional best fit) or "nuisance" (of the nuisances, the
    cosmology fixed) (:func:`cosmological_points`); empty when not recorded.

    Cost: ``camb_runs`` Boltzmann runs made for the check, in this process or in worker
    processes (-1: not recorded); the counts of each status follow from ``status``.
    """

    labels: tuple[str, ...]
    n_sigma: float
    delta_chi2: np.ndarray
    ratio: np.ndarray
    flagged: np.ndarray
    tolerance: float
    verdict: str
    reasons: tuple[str, ...]
    offsets: np.ndarray | None = None
    names: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    point_notes: tuple[str, ...] = ()
    width_ratio: np.ndarray | None = None
    sigma_change: np.ndarray | None = None
    of_interest: tuple[bool, ...] = ()
    direction_verdicts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    sigma_tolerance: float = math.nan
    camb_runs: int = -1
    kinds: tuple[str, ...] = ()

    def count(self, status: str) -> int:
        """Number of points with this status."""
        return sum(1 for s in self.status if s == status)

    def dominant(self, direction: int, n: int = 3) -> list[str]:
        """Parameters dominating a principal direction, in units of their marginalized sigma
        (for a cosmological direction: the parameters of interest that dominate it)."""
        if self.offsets is None or not self.names:
            return []
        o = np.asarray(self.offsets, dtype=float)
        sig = np.sqrt(np.sum(o**2, axis=0))
        w = o[direction] / np.where(sig > 0, sig, 1.0)
        return _dominant(self.names, w, _only(self.kinds, direction, self.of_interest), n)

    def cost_text(self) -> str:
        """How many evaluations the check needed, and how many it avoided."""
        if not self.status:
            return ""
        runs = (f" ({self.camb_runs} Boltzmann run{'s' if self.camb_runs != 1 else ''}; cache hits "
                "cost none)") if self.camb_runs >= 0 else ""
        return (f"{self.count('evaluated')} point(s) evaluated{runs}; {self.count('reused')} re-used "
                f"this run's cosmologies and {self.count('inferred')} inferred from the other side (no CAMB call); "
                f"{self.count('outside')} outside the model's domain (not sent to CAMB); {self.count('failed')} failed")


def width_ratios(ratio: np.ndarray) -> np.ndarray:
    """``1/sqrt(ratio)`` per point: the distance to the true ``Delta chi^2 = n_sigma^2``
    contour against the Fisher one along that side (inf where ratio <= 0, NaN where unknown)."""
    r = np.asarray(ratio, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isnan(r), np.nan, np.where(r > 0, 1.0 / np.sqrt(np.where(r > 0, r, 1.0)), np.inf))


def sigma_changes(offsets: np.ndarray, widths: np.ndarray, n_sigma: float = 1.0) -> np.ndarray:
    """Relative change of each marginalized error when direction i takes its true width.

    offsets (N, n): the ``n_sigma`` offsets of the principal directions (their outer products
    sum to ``n_sigma^2 C``); widths (2N,): per side, see :func:`width_ratios`. Returns (N, n):
    ``sqrt(1 + (w_i^2 - 1) o_ij^2 / sigma_j^2) - 1`` with ``o = offsets / n_sigma`` and
    ``w_i`` the mean of the finite sides of direction i (NaN when none)."""
    o = np.asarray(offsets, dtype=float) / n_sigma
    w = np.asarray(widths, dtype=float).reshape(-1, 2)
    var = np.sum(o**2, axis=0)
    out = np.full(o.shape, np.nan)
    for i in range(o.shape[0]):
        sides = w[i][~np.isnan(w[i])]
        if sides.size == 0:
            continue
        wi = float(np.mean(sides))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            frac = np.where(var > 0, o[i] ** 2 / np.where(var > 0, var, 1.0), 0.0)
            out[i] = np.sqrt(np.maximum(1.0 + (wi**2 - 1.0) * frac, 0.0)) - 1.0 if math.isfinite(wi) else np.where(frac > 0, np.inf, 0.0)
    return out


def delta_chi2(signals_at_points: Sequence[np.ndarray | None], fid_signal: np.ndarray, norm: Callable[[np.ndarray], float],
               n_sigma: float = 1.0, thresholds: DiagnosticsConfig | Mapping | None = None,
               points: PrincipalPoints | None = None, status: Sequence[str] | None = None,
               point_notes: Sequence[str] | None = None, of_interest: Sequence[bool] | None = None,
               camb_runs: int = -1) -> GaussianValidity:
    """Delta chi^2 = norm(signal - fid)^2 at each principal point against the Fisher
    prediction ``n_sigma^2``, and the verdict of each direction (:func:`gaussian_verdicts`,
    which the arguments after ``norm`` are passed to).

    signals_at_points: the data vector at each point, None where the model was not evaluated
    (status ``outside`` there by default). One ``norm`` per point with a data vector."""
    sigs = list(signals_at_points)
    fid = np.asarray(fid_signal, dtype=float)
    vals = [None if s is None else float(norm(np.asarray(s, dtype=float) - fid)) ** 2 for s in sigs]
    status = tuple(status) if status is not None else tuple("outside" if s is None else "evaluated" for s in sigs)
    return gaussian_verdicts(vals, n_sigma, thresholds, points, status, point_notes, of_interest, camb_runs)


def gaussian_verdicts(delta_chi2_at_points: Sequence[float | None], n_sigma: float = 1.0,
                      thresholds: DiagnosticsConfig | Mapping | None = None, points: PrincipalPoints | None = None,
                      status: Sequence[str] | None = None, point_notes: Sequence[str] | None = None,
                      of_interest: Sequence[bool] | None = None, camb_runs: int = -1) -> GaussianValidity:
    """The verdicts of the Gaussian-validity check from the Delta chi^2 (dimensionless) at
    each principal point, measured already (None or NaN where the model was not evaluated):
    nothing here evaluates or measures a data vector.

    status / point_notes: per point (default: ``evaluated``, or ``outside`` where the value
    is missing); of_interest: per parameter of ``points`` (default: the cosmological ones of
    the registry, or all when none is). A point is flagged when ``|Delta chi^2 / n_sigma^2 - 1| >
    thresholds.gaussian_tolerance``. A direction with a point outside the domain where the
    model runs (status ``outside`` or ``failed``) is a WARN; a flagged one is a WARN when it
    moves a marginalized error of a parameter of interest by more than
    ``thresholds.gaussian_sigma_tolerance`` (:func:`sigma_changes`), else a NOTE.
    """
    cfg = _cfg(thresholds)
    if points is not None:
        n_sigma = points.n_sigma
    vals = np.array([np.nan if v is None else float(v) for v in delta_chi2_at_points], dtype=float)
    ratio = vals / n_sigma**2
    flagged = np.abs(ratio - 1.0) > cfg.gaussian_tolerance
    labels = points.labels if points is not None else tuple(f"{'+' if i % 2 == 0 else '-'}{i // 2}" for i in range(len(vals)))
    status = tuple(status) if status is not None else tuple("outside" if np.isnan(v) else "evaluated" for v in vals)
    point_notes = tuple(point_notes) if point_notes is not None else ("",) * len(vals)
    widths = width_ratios(ratio)
    names = () if points is None else tuple(points.names)
    if of_interest is None:
        from .parameters import is_cosmological

        cosmo = [is_cosmological(n) for n in names]
        of_interest = cosmo if any(cosmo) else [True] * len(names)
    of_interest = tuple(bool(x) for x in of_interest)
    changes = sigma_changes(points.offsets, widths, n_sigma) if points is not None else None
    reasons, notes, dverdicts = [], [], []
    for j in range((len(vals) + 1) // 2):
        idx = [i for i in (2 * j, 2 * j + 1) if i < len(vals)]
        what = f" ({', '.join(points.dominant(j))})" if points is not None else ""
        broken = [i for i in idx if status[i] in ("outside", "failed")]
        pair = ", ".join(f"{vals[i]:.3g} ({labels[i][0]}{n_sigma:g} sigma)" for i in idx if not np.isnan(vals[i]))
        moved = ""
        worst = 0.0
        if changes is not None:
            ch = np.where(np.array(of_interest), np.abs(changes[j]), 0.0)
            ch = np.where(np.isnan(ch), 0.0, ch)
            if ch.size and np.any(ch > 0):
                order = np.argsort(-ch)[:3]
                worst = float(ch[order[0]])
                moved = "; moves " + ", ".join(f"sigma({names[k]}) by {changes[j][k]:+.1%}" for k in order if ch[k] > 0)
        if broken:
            dverdicts.append("WARN")
            why = "; ".join(f"{labels[i][0]}{n_sigma:g} sigma: {point_notes[i] or status[i]}" for i in broken)
            reasons.append(f"principal direction {j}{what} reaches outside the domain where the model runs ({why})"
                           + (f"; Delta chi^2 = {pair}" if pair else "") + "; the Gaussian approximation cannot hold there")
        elif any(flagged[i] for i in idx):
            text = f"principal direction {j}{what}: Delta chi^2 = {pair}; Fisher predicts {n_sigma**2:.3g}{moved}"
            if worst > cfg.gaussian_sigma_tolerance:
                dverdicts.append("WARN")
                reasons.append(text)
            else:
                dverdicts.append("NOTE")
                notes.append(text + f" (within {cfg.gaussian_sigma_tolerance:.0%} for "
                             + ("the cosmological parameters" if not all(of_interest) else "every parameter") + ")")
        else:
            dverdicts.append("PASS")
    return GaussianValidity(labels=tuple(labels), n_sigma=float(n_sigma), delta_chi2=vals, ratio=ratio, flagged=flagged,
                            tolerance=cfg.gaussian_tolerance, verdict="WARN" if "WARN" in dverdicts else "PASS",
                            reasons=tuple(reasons), offsets=None if points is None else points.offsets,
                            names=names, status=status, point_notes=point_notes, width_ratio=widths,
                            sigma_change=changes, of_interest=of_interest, direction_verdicts=tuple(dverdicts),
                            notes=tuple(notes), sigma_tolerance=cfg.gaussian_sigma_tolerance, camb_runs=int(camb_runs),
                            kinds=tuple(points.kinds) if points is not None else ())


# ---------------------------------------------------------------------------- text
def format_sweeps(sweeps: Sequence | Mapping) -> str:
    """The stability table: one line per parameter (made by :func:`fishcast.report.sweeps_text`)."""
    from .report import sweeps_text

    return sweeps_text(sweeps)


def format_report(sweeps: Sequence | Mapping | None = None, conditioning: ConditioningReport | None = None,
                  stability: ErrorStability | None = None, gaussian: GaussianValidity | None = None,
                  projection: ProjectedFisher | None = None) -> str:
    """The full text report: stability table, then the matrix report (made by
    :func:`fishcast.report.diagnostics_text`, where every text the CLI prints is made)."""
    from .report import diagnostics_text

    return diagnostics_text(sweeps, conditioning, stability, gaussian, projection)
