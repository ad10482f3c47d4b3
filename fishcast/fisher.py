"""The Fisher matrix of a forecast, and everything one does with it by parameter name.

A :class:`FisherMatrix` carries the matrix, the parameter names (its row order), the fiducial
value and the units of every parameter, and a provenance chain (the operations that made it,
and the files they came from). It is immutable: every operation returns a new matrix whose
provenance records the operation and its inputs.

Conventions
-----------
* ``F_ij = <d^2 (-ln L) / d theta_i d theta_j>``; units of ``F_ij`` are
  ``1 / (unit_i unit_j)``.
* Marginalized 1-sigma of ``theta_i``: ``sqrt((F^-1)_ii)``; conditional (every other parameter
  fixed at its fiducial): ``1 / sqrt(F_ii)``.
* Inversion goes through the correlation form ``R = D^-1/2 F D^-1/2`` (``D = diag F``) and its
  Cholesky factor, so that the units of the parameters (``A_s`` versus ``1e9 A_s``) do not
  decide whether the inversion works. A matrix that is not positive definite, or whose
  correlation form has condition number above :data:`COND_LIMIT`, raises
  :class:`~fishcast.errors.DegenerateFisherError` naming the parameters that dominate each weak
  direction. There is no pseudo-inverse and no eigenvalue clamp anywhere in this module.
* Marginalizing over a parameter = dropping it from the covariance; fixing a parameter =
  dropping it from the Fisher matrix.
* DETF figure of merit of a pair ``(a, b)``: ``1 / sqrt(det Cov[(a, b), (a, b)])`` (Albrecht et
  al. 2006, DETF report, for ``(w0, wa)``).
* Reparametrization (Coe 2009, arXiv:0906.4123): with new parameters ``p`` and
  ``J_ia = d theta_i / d p_a`` (old per new), ``F' = J^T F J``.

Provenance is a tuple of steps, oldest first; each step is a JSON-serializable dict with at
least ``"operation"``. An operation with several inputs (``combine``) starts a new chain whose
single step holds each input's chain under ``"inputs"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.linalg

from fishcast.errors import DegenerateFisherError, InputError

__all__ = ["FisherMatrix", "COND_LIMIT", "ASYMMETRY_LIMIT", "FIDUCIAL_RTOL", "compare", "within_tolerance"]

#: Largest accepted condition number of the correlation form R. Above it the inverse has
#: no significant digits left in double precision (gwbench refuses above the same value).
COND_LIMIT = 1e15

#: Largest accepted relative asymmetry max|F - F^T| / max|F|; below it F is symmetrized.
ASYMMETRY_LIMIT = 1e-6
#: Largest accepted |F_ij|: the product of two entries (the correlation form D^-1/2 F D^-1/2,
#: F + F^T, determinants) must stay inside double precision (1.8e308).
MAX_ABS_ENTRY = 1e150

#: Relative tolerance under which two fiducial values of one parameter are the same
#: (absolute tolerance FIDUCIAL_ATOL for fiducials at zero, e.g. wa).
FIDUCIAL_RTOL = 1e-6
FIDUCIAL_ATOL = 1e-12

#: An eigenvector component counts as "dominant" in error messages when its squared weight
#: is at least this fraction of the largest one.
_DOMINANT_FRACTION = 0.1


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.setflags(write=False)
    return a


def format_direction(eigenvalue: float, weights: Mapping[str, float]) -> str:
    """One weak direction of the correlation form, for messages."""
    parts = ", ".join(f"{name} ({w:+.2f})" for name, w in weights.items())
    return f"eigenvalue {eigenvalue:.3g} of the correlation form, dominated by {parts}"


def eigen_directions(names: Sequence[str], evals: np.ndarray, evecs: np.ndarray, idx,
                     dominant_fraction: float = _DOMINANT_FRACTION) -> list[tuple[float, dict[str, float]]]:
    """``(eigenvalue, {name: component})`` for the eigenvectors ``idx``, naming the components
    whose squared weight is at least ``dominant_fraction`` of the largest (largest first)."""
    out = []
    for k in idx:
        v = evecs[:, k]
        w2 = v**2
        order = np.argsort(-w2)
        out.append((float(evals[k]), {names[i]: float(v[i]) for i in order if w2[i] >= dominant_fraction * w2[order[0]]}))
    return out


def invert_correlation_form(F: np.ndarray, names: Sequence[str], cond_refuse: float | None = None,
                            dominant_fraction: float = _DOMINANT_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(covariance, R^-1, R)`` of a Fisher matrix through its correlation form.

    R = D^-1/2 F D^-1/2 with D = diag(F) is factorized by Cholesky and inverted; the
    covariance is D^-1/2 R^-1 D^-1/2 [unit_i unit_j]. Never a pseudo-inverse, never an
    eigenvalue clamp: a non-positive diagonal, a failed Cholesky or cond(R) above
    ``cond_refuse`` (default :data:`COND_LIMIT`) raises :class:`DegenerateFisherError` naming
    the parameters that dominate every bad direction (eigenvalue <= lambda_max / cond_refuse).
    """
    cond_refuse = COND_LIMIT if cond_refuse is None else cond_refuse
    names = [str(n) for n in names]
    F = np.asarray(F, dtype=float)
    d = np.diag(F)
    bad = [names[i] for i in range(len(names)) if not d[i] > 0]
    if bad:
        raise DegenerateFisherError(
            "the Fisher matrix cannot be inverted: it has no information on " + ", ".join(bad)
            + " (F_ii <= 0); fix these parameters or add priors on them",
            [(0.0, {n: 1.0}) for n in bad],
        )
    s = 1.0 / np.sqrt(d)
    R = F * s[:, None] * s[None, :]
    R = 0.5 * (R + R.T)
    evals, evecs = np.linalg.eigh(R)
    try:
        chol = scipy.linalg.cho_factor(R, lower=True, check_finite=False)
        ok = True
    except np.linalg.LinAlgError:
        ok = False
    if ok and evals[0] > evals[-1] / cond_refuse:
        Rinv = scipy.linalg.cho_solve(chol, np.eye(len(d)), check_finite=False)
        Rinv = 0.5 * (Rinv + Rinv.T)
        return Rinv * s[:, None] * s[None, :], Rinv, R
    idx = np.nonzero(evals <= evals[-1] / cond_refuse)[0]
    if len(idx) == 0:
        idx = [0]
    dirs = eigen_directions(names, evals, evecs, idx, dominant_fraction)
    what = "not positive definite" if (not ok or evals[0] <= 0) else (
        f"condition number of the correlation form {evals[-1] / evals[0]:.3g} > {cond_refuse:.3g}")
    lines = [f"the Fisher matrix cannot be inverted ({what}); weak directions:"]
    lines += ["  " + format_direction(lam, w) for lam, w in dirs]
    lines.append("  Each is a parameter combination the data do not constrain: fix or marginalize one of "
                 "the named parameters, add a prior on it (fishcast fix / fishcast prior), or run with "
                 "--allow-degenerate to project it out.")
    raise DegenerateFisherError("\n".join(lines), dirs)


class FisherMatrix:
    """An immutable Fisher matrix with named parameters.

    Parameters
    ----------
    matrix : (n, n) array_like
        The Fisher matrix, rows in the order of ``names``. Finite, symmetric to
        :data:`ASYMMETRY_LIMIT` (then symmetrized), non-negative diagonal.
    names : sequence of str
        Unique, non-empty parameter names.
    fiducial : (n,) array_like, optional
        Fiducial value of each parameter, in its units. ``NaN`` where unknown (the default).
    units : sequence of str, optional
        Unit of each parameter (``""`` for dimensionless, the default).
    provenance : iterable of dict, optional
        The chain of operations that made this matrix (see the module docstring).
    """

    __slots__ = ("_matrix", "_names", "_fiducial", "_units", "_provenance", "_index", "_cov",
                 "_asymmetry")

    def __init__(
        self,
        matrix: Any,
        names: Sequence[str],
        fiducial: Any = None,
        units: Sequence[str] | None = None,
        provenance: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        names = tuple(str(n) for n in names)
        n = len(names)
        if n == 0:
            raise InputError("a Fisher matrix needs at least one parameter")
        if any(not nm or nm != nm.strip() or any(c.isspace() for c in nm) for nm in names):
            raise InputError(f"parameter names must be non-empty and contain no spaces: {list(names)}")
        if len(set(names)) != n:
            dups = sorted({nm for nm in names if names.count(nm) > 1})
            raise InputError(f"duplicate parameter names: {', '.join(dups)}")
        try:
            m = np.array(matrix, dtype=float)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Fisher matrix is not numeric: {exc}") from None
        if m.shape != (n, n):
            raise InputError(
                f"Fisher matrix has shape {m.shape}, expected ({n}, {n}) for {n} parameter names"
            )
        if not np.all(np.isfinite(m)):
            bad = sorted({names[i] for i, j in zip(*np.nonzero(~np.isfinite(m)))})
            raise InputError(f"Fisher matrix has non-finite entries in the rows of: {', '.join(bad)}")
        scale = float(np.max(np.abs(m))) if m.size else 0.0
        if scale > MAX_ABS_ENTRY:
            i, j = np.unravel_index(np.argmax(np.abs(m)), m.shape)
            raise InputError(
                f"Fisher matrix entry ({names[i]}, {names[j]}) = {m[i, j]:.3g} is beyond {MAX_ABS_ENTRY:g}: "
                "symmetrizing, scaling or inverting it would overflow double precision; "
                "express the parameter in other units (e.g. A_s_1e9 instead of A_s)"
            )
        asym = float(np.max(np.abs(m - m.T))) / scale if scale > 0 else 0.0
        if asym > ASYMMETRY_LIMIT:
            i, j = np.unravel_index(np.argmax(np.abs(m - m.T)), m.shape)
            raise InputError(
                f"Fisher matrix is not symmetric: relative asymmetry {asym:.3g} > {ASYMMETRY_LIMIT:g}, "
                f"largest between {names[i]} and {names[j]}"
            )
        m = 0.5 * (m + m.T)
        neg = [names[i] for i in range(n) if m[i, i] < 0]
        if neg:
            raise InputError(
                f"Fisher matrix has negative diagonal entries (negative information) for: {', '.join(neg)}"
            )

        if fiducial is None:
            fid = np.full(n, np.nan)
        else:
            try:
                fid = np.array(fiducial, dtype=float).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise InputError(f"fiducial values are not numeric: {exc}") from None
            if fid.shape != (n,):
                raise InputError(f"{fid.size} fiducial values for {n} parameters")
        if units is None:
            units_t = ("",) * n
        else:
            units_t = tuple("" if u is None else str(u) for u in units)
            if len(units_t) != n:
                raise InputError(f"{len(units_t)} units for {n} parameters")

        self._matrix = _frozen(m)
        self._names = names
        self._fiducial = _frozen(fid)
        self._units = units_t
        self._provenance = tuple(dict(step) for step in provenance)
        self._index = {nm: i for i, nm in enumerate(names)}
        self._cov: np.ndarray | None = None
        self._asymmetry = asym

    # ------------------------------------------------------------------ basic access
    @property
    def matrix(self) -> np.ndarray:
        """The Fisher matrix (read-only view), rows in the order of :attr:`names`."""
        return self._matrix

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def fiducial(self) -> np.ndarray:
        """Fiducial values (read-only), ``NaN`` where unknown."""
        return self._fiducial

    @property
    def units(self) -> tuple[str, ...]:
        return self._units

    @property
    def provenance(self) -> tuple[dict[str, Any], ...]:
        """Operations that made this matrix, oldest first (copies: editing them changes nothing)."""
        return tuple(dict(step) for step in self._provenance)

    @property
    def asymmetry(self) -> float:
        """Relative asymmetry max|F - F^T| / max|F| of the matrix as given (then symmetrized)."""
        return self._asymmetry

    @property
    def n(self) -> int:
        return len(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"FisherMatrix(names={list(self._names)})"

    def index(self, name: str) -> int:
        """Row of parameter ``name``; :class:`InputError` naming the known ones if unknown."""
        try:
            return self._index[name]
        except KeyError:
            raise InputError(
                f"unknown parameter {name!r}; this forecast has: {', '.join(self._names)}"
            ) from None

    def _indices(self, names: Iterable[str]) -> list[int]:
        names = list(names)
        idx = [self.index(nm) for nm in names]
        if len(set(idx)) != len(idx):
            dups = sorted({nm for nm in names if names.count(nm) > 1})
            raise InputError(f"parameter named more than once: {', '.join(dups)}")
        return idx

    def fiducial_of(self, name: str) -> float:
        return float(self._fiducial[self.index(name)])

    def with_provenance(self, step: Mapping[str, Any]) -> "FisherMatrix":
        """A copy with ``step`` appended to the provenance chain (e.g. a file read)."""
        if "operation" not in step:
            raise ValueError("a provenance step needs an 'operation' key")
        return self._derived(self._matrix, self._names, self._fiducial, self._units, dict(step))

    def _derived(self, matrix, names, fiducial, units, step: Mapping[str, Any]) -> "FisherMatrix":
        return FisherMatrix(matrix, names, fiducial, units, self._provenance + (dict(step),))

    # ------------------------------------------------------------------ inversion
    def _inverse(self) -> np.ndarray:
        cov, _, _ = invert_correlation_form(self._matrix, self._names)
        return 0.5 * (cov + cov.T)

    def covariance(self) -> np.ndarray:
        """Parameter covariance ``F^-1`` [unit_i unit_j] (read-only).

        Computed once through the correlation form and its Cholesky factor; raises
        :class:`DegenerateFisherError` naming the weak directions when ``F`` is singular,
        indefinite or conditioned worse than :data:`COND_LIMIT`.
        """
        if self._cov is None:
            self._cov = _frozen(self._inverse())
        return self._cov

    def condition_number(self) -> float:
        """Condition number of the correlation form ``R = D^-1/2 F D^-1/2`` (inf if singular)."""
        d = np.diag(self._matrix)
        if np.any(d <= 0):
            return math.inf
        s = 1.0 / np.sqrt(d)
        evals = np.linalg.eigvalsh(self._matrix * s[:, None] * s[None, :])
        return math.inf if evals[0] <= 0 else float(evals[-1] / evals[0])

    def marginalized_sigma(self) -> np.ndarray:
        """Marginalized 1-sigma errors ``sqrt((F^-1)_ii)`` [unit_i], in the order of :attr:`names`."""
        return np.sqrt(np.diag(self.covariance()))

    def conditional_sigma(self) -> np.ndarray:
        """Conditional 1-sigma errors ``1/sqrt(F_ii)`` [unit_i] (every other parameter fixed);
        ``inf`` for a parameter with no information."""
        d = np.diag(self._matrix)
        with np.errstate(divide="ignore"):
            return np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), np.inf)

    def correlation(self) -> np.ndarray:
        """Correlation coefficients of the parameters, ``C_ij / sqrt(C_ii C_jj)`` with ``C = F^-1``."""
        c = self.covariance()
        s = 1.0 / np.sqrt(np.diag(c))
        return c * s[:, None] * s[None, :]

    def sigma(self, name: str, marginalized: bool = True) -> float:
        """1-sigma error of one parameter, by name."""
        i = self.index(name)
        return float((self.marginalized_sigma() if marginalized else self.conditional_sigma())[i])

    def figure_of_merit(self, a: str = "w0", b: str = "wa") -> float:
        """DETF figure of merit of the pair ``(a, b)``: ``1 / sqrt(det Cov_ab)`` [1/(unit_a unit_b)],
        with ``Cov_ab`` the 2x2 block of the marginalized covariance."""
        if a == b:
            raise InputError(f"figure of merit needs two different parameters, got {a!r} twice")
        idx = self._indices([a, b])
        c = self.covariance()[np.ix_(idx, idx)]
        det = float(c[0, 0] * c[1, 1] - c[0, 1] * c[1, 0])
        if det <= 0:
            raise DegenerateFisherError(
                f"the marginalized covariance of ({a}, {b}) has determinant {det:.3g} <= 0",
                [(det, {a: 1.0, b: 1.0})],
            )
        return 1.0 / math.sqrt(det)

    # ------------------------------------------------------------------ operations
    def sub(self, names: Sequence[str]) -> "FisherMatrix":
        """Sub-block of ``F`` for ``names`` (in that order): every other parameter fixed."""
        names = list(names)
        if not names:
            raise InputError("no parameters selected")
        idx = self._indices(names)
        return self._derived(
            self._matrix[np.ix_(idx, idx)], names, self._fiducial[idx],
            [self._units[i] for i in idx], {"operation": "sub", "keep": names},
        )

    def fix(self, names: Iterable[str]) -> "FisherMatrix":
        """Fix ``names`` at their fiducials: drop their rows and columns from ``F``."""
        names = list(names)
        if not names:
            raise InputError("no parameters to fix")
        drop = set(self._indices(names))
        keep = [i for i in range(self.n) if i not in drop]
        if not keep:
            raise InputError("cannot fix every parameter of the forecast")
        return self._derived(
            self._matrix[np.ix_(keep, keep)], [self._names[i] for i in keep], self._fiducial[keep],
            [self._units[i] for i in keep], {"operation": "fix", "params": names},
        )

    def marginalize(self, keep: Sequence[str]) -> "FisherMatrix":
        """Marginalize over every parameter not in ``keep``: invert, take the ``keep`` block of
        the covariance, invert back. The result is in the order of ``keep``."""
        keep = list(keep)
        if not keep:
            raise InputError("marginalize needs at least one parameter to keep")
        idx = self._indices(keep)
        cov_sub = self.covariance()[np.ix_(idx, idx)]
        units = [self._units[i] for i in idx]
        # cov_sub is positive definite when the full covariance is; invert it the same way.
        inv = FisherMatrix(cov_sub, keep)._inverse()
        dropped = [nm for nm in self._names if nm not in set(keep)]
        return self._derived(inv, keep, self._fiducial[idx], units,
                             {"operation": "marginalize", "keep": keep, "over": dropped})

    def add_prior(self, sigmas: Mapping[str, float]) -> "FisherMatrix":
        """Add independent Gaussian priors: ``F_ii += 1 / sigma_i^2`` (sigma in the parameter's units)."""
        if not sigmas:
            raise InputError("no priors given")
        m = np.array(self._matrix)
        priors = {}
        for name, sigma in sigmas.items():
            i = self.index(name)
            try:
                s = float(sigma)
            except (TypeError, ValueError):
                raise InputError(f"prior on {name}: sigma {sigma!r} is not a number") from None
            if not (s > 0 and math.isfinite(s)):
                raise InputError(f"prior on {name}: sigma must be positive and finite, got {sigma!r}")
            m[i, i] += 1.0 / s**2
            priors[name] = s
        return self._derived(m, self._names, self._fiducial, self._units,
                             {"operation": "add_prior", "gaussian_sigma": priors})

    def combine(self, other: "FisherMatrix", force: bool = False) -> "FisherMatrix":
        """Sum of two independent Fisher matrices, aligned by parameter name.

        Parameters are ordered as in ``self``, then those only in ``other`` in its order; a
        parameter absent from one matrix has zero rows there (that probe does not constrain
        it). Shared parameters must have the same fiducial (to :data:`FIDUCIAL_RTOL`) and units,
        otherwise :class:`InputError` names the parameter and both values, unless ``force``
        (then ``self``'s value is kept and the disagreement is recorded in the provenance).
        """
        if not isinstance(other, FisherMatrix):
            raise TypeError(f"cannot combine a FisherMatrix with {type(other).__name__}")
        names = list(self._names) + [nm for nm in other._names if nm not in self._index]
        pos = {nm: i for i, nm in enumerate(names)}
        n = len(names)
        fid = np.full(n, np.nan)
        units = [""] * n
        for src in (other, self):  # self last: its values win
            for i, nm in enumerate(src._names):
                if not math.isnan(src._fiducial[i]):
                    fid[pos[nm]] = src._fiducial[i]
                if src._units[i]:
                    units[pos[nm]] = src._units[i]
        common = [nm for nm in self._names if nm in other._index]
        disagreements = []
        for nm in common:
            a, b = self._fiducial[self._index[nm]], other._fiducial[other._index[nm]]
            if not (math.isnan(a) or math.isnan(b)) and not math.isclose(
                a, b, rel_tol=FIDUCIAL_RTOL, abs_tol=FIDUCIAL_ATOL
            ):
                disagreements.append({"param": nm, "field": "fiducial", "values": [float(a), float(b)]})
            ua, ub = self._units[self._index[nm]], other._units[other._index[nm]]
            if ua and ub and ua != ub:
                disagreements.append({"param": nm, "field": "units", "values": [ua, ub]})
        if disagreements and not force:
            msgs = [f"{d['param']}: {d['field']} {d['values'][0]!r} in the first, {d['values'][1]!r} in the second"
                    for d in disagreements]
            raise InputError(
                "cannot combine forecasts made around different points:\n  " + "\n  ".join(msgs)
                + "\n  (use force to combine anyway; the first forecast's values are kept)"
            )
        m = np.zeros((n, n))
        for src in (self, other):
            idx = [pos[nm] for nm in src._names]
            m[np.ix_(idx, idx)] += src._matrix
        step = {
            "operation": "combine",
            "inputs": [list(self.provenance), list(other.provenance)],
            "common": common,
            "only_in_first": [nm for nm in self._names if nm not in other._index],
            "only_in_second": [nm for nm in other._names if nm not in self._index],
        }
        if disagreements:
            step["forced"] = disagreements
        return FisherMatrix(m, names, fid, units, (step,))

    def __add__(self, other: "FisherMatrix") -> "FisherMatrix":
        if not isinstance(other, FisherMatrix):
            return NotImplemented
        return self.combine(other)

    def reparametrize(
        self,
        jacobian: Any,
        names: Sequence[str],
        fiducial: Any = None,
        units: Sequence[str] | None = None,
        operation: Mapping[str, Any] | None = None,
    ) -> "FisherMatrix":
        """Fisher matrix of new parameters ``p``: ``F' = J^T F J``.

        ``jacobian[i, a] = d theta_i / d p_a`` (old parameter ``i`` = ``self.names[i]``, per
        new parameter ``a`` = ``names[a]``), shape ``(len(self), len(names))``, evaluated at the
        fiducial. ``operation`` is recorded in the provenance (default: the Jacobian itself).
        """
        names = list(names)
        try:
            j = np.array(jacobian, dtype=float)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Jacobian is not numeric: {exc}") from None
        if j.shape != (self.n, len(names)):
            raise InputError(f"Jacobian has shape {j.shape}, expected ({self.n}, {len(names)}): "
                             "rows = old parameters, columns = new")
        if not np.all(np.isfinite(j)):
            raise InputError("Jacobian has non-finite entries")
        new = j.T @ self._matrix @ j
        step = dict(operation) if operation else {"operation": "reparametrize", "names": names,
                                                  "jacobian": j.tolist()}
        return self._derived(new, names, fiducial, units, step)

    def derive(self, to: str | Sequence[str], fixed: Mapping[str, float] | None = None) -> "FisherMatrix":
        """Replace parameters by derived ones (``"S8"``, ``"omch2"``, ``"H0"``, ...), see
        :mod:`fishcast.reparam`. ``fixed`` gives fiducials of parameters that are not free but
        enter a derived parameter (e.g. ``m_nu`` for ``omch2``)."""
        from fishcast import reparam

        targets = [to] if isinstance(to, str) else list(to)
        jac, names, fid, units = reparam.jacobian(self._names, self._fiducial, targets, fixed=fixed,
                                                   units=self._units)
        step = {"operation": "derive", "to": targets,
                "replaced": [old for old in self._names if old not in names]}
        return self.reparametrize(jac, names, fid, units, operation=step)

    # ------------------------------------------------------------------ comparison helpers
    def aligned_to(self, names: Sequence[str]) -> "FisherMatrix":
        """The same matrix with rows reordered to ``names`` (a permutation of :attr:`names`)."""
        names = list(names)
        if sorted(names) != sorted(self._names):
            raise InputError(f"cannot reorder {list(self._names)} to {names}")
        return self.sub(names)


# ---------------------------------------------------------------------- comparison
def within_tolerance(a: Any, b: Any, rtol: float, atol: float, scale: Any = None) -> np.ndarray:
    """Element-wise ``|a - b| <= atol + rtol * scale`` with ``scale = max(|a|, |b|)`` by
    default (symmetric in ``a`` and ``b``).

    Only two finite numbers are judged by the tolerance: a non-finite value against a finite
    one (inf against 1.0, NaN against 1.0), inf against -inf and NaN against inf are
    differences, whatever the tolerance (an infinite ``max(|a|, |b|)`` would otherwise let
    ``inf <= inf`` pass). Two NaNs agree, and so do two infinities of the same sign. A
    non-finite entry of an explicit ``scale`` (e.g. ``sqrt(F_ii F_jj)`` of a row with an
    infinite diagonal) falls back to ``max(|a|, |b|)`` of that element."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    own = np.maximum(np.abs(a), np.abs(b))
    if scale is None:
        scale = own
    else:
        scale = np.asarray(scale, dtype=float)
        scale = np.where(np.isfinite(scale), scale, own)
    finite = np.isfinite(a) & np.isfinite(b)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = finite & (np.abs(a - b) <= atol + rtol * scale)
    both_nan = np.isnan(a) & np.isnan(b)
    both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    return ok | both_nan | both_inf


def _rows(quantity: str, labels: Sequence[str], a, b, rtol: float, atol: float, scale=None) -> list[dict]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = within_tolerance(a, b, rtol, atol, scale)
    own = np.maximum(np.abs(a), np.abs(b))
    sc = own if scale is None else np.where(np.isfinite(np.asarray(scale, dtype=float)), scale, own)
    out = []
    for k in np.nonzero(~ok)[0]:
        with np.errstate(invalid="ignore", over="ignore"):
            diff = float(abs(a[k] - b[k]))
        finite = math.isfinite(a[k]) and math.isfinite(b[k]) and math.isfinite(sc[k])
        rel = (diff / float(sc[k]) if sc[k] > 0 else math.inf) if finite else (math.nan if math.isnan(diff) else math.inf)
        out.append({"quantity": quantity, "param": labels[k], "a": float(a[k]), "b": float(b[k]),
                    "abs_diff": diff, "rel_diff": rel})
    return out


def compare(a: FisherMatrix, b: FisherMatrix, on: str = "sigma", rtol: float = 1e-3,
            atol: float = 0.0) -> tuple[list[dict[str, Any]], int]:
    """Differences between two forecasts beyond ``|x_a - x_b| <= atol + rtol * scale``.

    ``on="sigma"``: fiducials, marginalized and conditional 1-sigma of every parameter and the
    (w0, wa) figure of merit (scale: the larger of the two values). ``on="fisher"``: every
    element ``F_ij`` (i <= j) with scale ``sqrt(F_ii F_jj)`` (the larger of the two files'),
    i.e. the difference measured in the correlation form, so that near-zero off-diagonal
    elements are not judged relative to themselves. Parameters present in only one forecast
    are differences. Returns ``(rows, n_compared)``; each row has ``quantity``, ``param``,
    ``a``, ``b``, ``abs_diff``, ``rel_diff``. Raises :class:`DegenerateFisherError` if a
    matrix cannot be inverted for ``sigma``.
    """
    if on not in ("sigma", "fisher"):
        raise InputError(f"compare on {on!r}: choose sigma or fisher (data is compared by the file layer)")
    if rtol < 0 or atol < 0:
        raise InputError("tolerances must be non-negative")
    rows: list[dict[str, Any]] = []
    for nm in a.names:
        if nm not in b:
            rows.append({"quantity": "parameter", "param": nm, "a": "free", "b": "absent",
                         "abs_diff": math.nan, "rel_diff": math.nan})
    for nm in b.names:
        if nm not in a:
            rows.append({"quantity": "parameter", "param": nm, "a": "absent", "b": "free",
                         "abs_diff": math.nan, "rel_diff": math.nan})
    common = [nm for nm in a.names if nm in b]
    n_compared = len(set(a.names) | set(b.names))  # parameter presence
    if not common:
        return rows, n_compared
    ia, ib = a._indices(common), b._indices(common)
    rows += _rows("fiducial", common, a.fiducial[ia], b.fiducial[ib], rtol, atol)
    n_compared += len(common)
    if on == "sigma":
        rows += _rows("marginalized_sigma", common, a.marginalized_sigma()[ia], b.marginalized_sigma()[ib], rtol, atol)
        rows += _rows("conditional_sigma", common, a.conditional_sigma()[ia], b.conditional_sigma()[ib], rtol, atol)
        n_compared += 2 * len(common)
        if "w0" in common and "wa" in common:
            rows += _rows("fom", ["w0-wa"], [a.figure_of_merit()], [b.figure_of_merit()], rtol, atol)
            n_compared += 1
    else:
        fa = a.matrix[np.ix_(ia, ia)]
        fb = b.matrix[np.ix_(ib, ib)]
        da, db = np.diag(fa), np.diag(fb)
        scale = np.sqrt(np.maximum(np.outer(da, da), np.outer(db, db)))
        iu = np.triu_indices(len(common))
        labels = [f"F[{common[i]},{common[j]}]" for i, j in zip(*iu)]
        rows += _rows("fisher", labels, fa[iu], fb[iu], rtol, atol, scale[iu])
        n_compared += len(labels)
    return rows, n_compared
