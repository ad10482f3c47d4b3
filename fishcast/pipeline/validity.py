"""The Gaussian-validity check of a forecast: the real Delta chi^2 at the fiducial +- n_sigma
along a set of F-orthogonal directions through the forecast's 1-sigma ellipsoid, against the
Fisher prediction n_sigma^2.

**Which directions** (``diagnostics.gaussian_directions``). The default, ``cosmological``,
checks what the forecast reports: the marginalized errors of the cosmological parameters.
Its directions (:func:`fishcast.diagnostics.cosmological_points` with ``transfer``) split the
cosmological parameters into those that need a Boltzmann run of their own (those in
:func:`fishcast.cosmology.transfer_key`: Omega_m, Omega_b, h, w0, wa, m_nu, ...) and those
that do not (n_s, sigma8 / A_s):

- the principal directions of the *marginalized* covariance of the transfer parameters
  C_tt, every other parameter (n_s, sigma8 and the nuisances) at its conditional best fit:
  each point lies on the marginalized 1-sigma contour of the transfer parameters, where
  their reported errors are read, at the values of the others that minimize the Fisher
  chi^2 there. There its Delta chi^2 bounds the true profile likelihood from above
  (minimizing over the others can only lower it): a Delta chi^2 below n_sigma^2 is a
  marginalized contour wider than Fisher's for certain; one above may be partly the others'
  own non-Gaussianity, which re-minimizing would absorb. One CAMB run per direction (the
  +side);
- the principal directions of the n_s / sigma8 block with the transfer parameters at the
  fiducial and the nuisances at their conditional best fit: these points keep the
  fiducial's transfer functions, so they are evaluated in one batch, both sides: at most one
  CAMB run for all of them (none while the fiducial's transfer functions are held);
- the principal directions of the nuisances with the cosmology at the fiducial (the
  conditional covariance F_nn^-1): the fiducial cosmology, no CAMB run. These carry no
  cosmological component, so a non-Gaussianity found only there cannot move a cosmological
  error: it is a note (as before), never a WARN.

The three sets together are an F-orthonormal basis (the block LDL^T factorization of F,
level by level: u^T F w = 0 between the sets, shown in
:func:`fishcast.diagnostics._conjugate_offsets` and tested on a random SPD matrix): the outer
products of the offsets sum to C, so the change of each marginalized error
(:func:`fishcast.diagnostics.sigma_changes`, which needs nothing else) keeps its meaning. On
the Euclid WL pessimistic recipe (5 transfer parameters, n_s, sigma8, 3 IA nuisances) the
check costs 5 CAMB runs (5 + 1 when the fiducial came from the cache). ``cosmological_principal`` (the default before) takes the
principal directions of the whole nuisance-marginalized cosmological covariance instead, the
nuisances at their conditional best fit, then the same nuisance directions: one CAMB run per
cosmological direction (7 on that recipe), since each moves the transfer parameters.
``all`` checks the principal directions of the whole covariance (every direction mixes
cosmology and nuisances: about one CAMB run per parameter and side).

**Which sides** (``diagnostics.gaussian_sides``). ``adaptive`` (the default) evaluates the
+n_sigma side of each direction and infers the -n_sigma side from the quadratic model along
the ray, s(t) = s0 + t J delta + t^2 w/2 with w from the +side and J the forecast's own
derivatives (:func:`infer_minus_side`: exact for a data vector quadratic along the ray). The
-n_sigma side is evaluated only when the direction's verdict depends on it: when the verdict
(PASS / NOTE / WARN) with the inferred side differs from the verdict of the +side alone
(e.g. the inferred side is flagged, or it changes whether a flagged direction moves a
cosmological error beyond tolerance), or when the +side could not be evaluated. ``both``
evaluates every point. The full check of earlier versions is ``gaussian_directions: all``
with ``gaussian_sides: both`` (2N points).

Its evaluations feed a diagnostic only, so (issue 16) they never stop the run:

1. **Planned like every other point, screened first.** Each point is checked against the
   domain of every free parameter (the derivative engine's :class:`ParameterSpec`, i.e. the
   registry's domain or the survey's ``derivatives.parameters.<name>.lower/upper``) and the
   joint limits of the backend (:func:`fishcast.cosmology.domain_violation`: Omega_m >
   Omega_b + Omega_nu, w0 + wa <= 0 for CAMB's PPF, ...). A point certainly outside is not
   sent to CAMB: it is recorded as ``outside``, with the reason.
2. **Re-use.** A point whose cosmological part is one the run has already evaluated (the
   fiducial, or a derivative-stencil point) re-uses it: no CAMB call. The nuisance
   directions are exactly such points: their cosmology is the fiducial's (cosmological
   offsets below 1e-9 of the parameter's sigma, round-off of the eigen-decomposition, are
   taken as zero). Points that differ only in primordial parameters (sigma8, n_s) share
   one Boltzmann run: a -side that shares the +side's is evaluated with it, not inferred, and
   the n_s / sigma8 directions of the default basis are evaluated together. Those cost no
   run when the forecast computed the fiducial itself: its CAMB transfer object is kept for
   the whole run (:func:`fishcast.cosmology.transfer_store`; with a process pool the
   fiducial is computed in the main process, and so are these points), one run when the
   fiducial was read from the cache.
3. **Failures degrade the check only.** A CAMB failure at a point, or a non-finite data
   vector there, marks that point ``failed`` with the reason; the other points are still
   evaluated (a failed batch is retried without the failed point; finished points are
   kept by the cache). The direction is then reported as outside the domain where the model
   runs (a WARN of the check), and the Fisher results are written as usual.

An interruption (Ctrl-C, SIGTERM) during the check is never taken for a CAMB failure.
The Delta chi^2 of each point (one Knox product) is measured once, when its data vector is
known (inferred -sides included); the numerics that judge them (widths, the change of each
marginalized error, the verdicts) are in :func:`fishcast.diagnostics.gaussian_verdicts`. The check states the Boltzmann runs it made
(``camb_runs``, wherever they ran); the forecast counts them with its own
(:class:`fishcast.pipeline.forecast.CambCost`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .. import cosmology as _cosmo
from ..errors import ComputationError, FishcastError

__all__ = ["SNAP", "screen", "evaluate_tolerant", "gaussian_validity", "infer_minus_side"]

#: cosmological offsets smaller than this fraction of the parameter's marginalized sigma are
#: round-off of the eigen-decomposition: the point keeps the fiducial value
SNAP = 1e-9


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is (or reports) a Ctrl-C / SIGTERM: ctypes turns a signal that arrives
    during a native CAMB call into ``ArgumentError(... KeyboardInterrupt: ...)``, which the
    backend then reports as a CAMB failure."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return True
        text = str(e)
        if ": KeyboardInterrupt:" in text or ": Terminated:" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def screen(point: Mapping[str, float], names: Sequence[str], contains: Mapping[str, Callable[[float], bool]],
           domain_text: Mapping[str, str] | None = None) -> str | None:
    """Why ``point`` (every parameter) is certainly outside the domain where the model runs,
    or None. ``contains[name](value)``: the domain of each free parameter."""
    from .plan import cosmo_part

    bad = [f"{n} = {point[n]:.4g} outside its domain {domain_text[n] if domain_text else ''}".rstrip()
           for n in names if n in contains and not contains[n](float(point[n]))]
    if bad:
        return "; ".join(bad)
    cosmo = cosmo_part(point)
    return _cosmo.domain_violation(cosmo) if cosmo else None


def _which(message: str, points: Sequence[Mapping[str, float]], todo: Sequence[int]) -> int | None:
    """The point among ``todo`` a CAMB failure message is about (it quotes the point's
    :func:`fishcast.cosmology.describe_point`)."""
    for i in todo:
        if _cosmo.describe_point(_cosmo.full_params(points[i])) in message:
            return i
    return None


def evaluate_tolerant(evaluator, points: Sequence[Mapping[str, float]], settings) -> tuple[dict[int, object], dict[int, str]]:
    """Evaluate cosmological ``points``; a point where the backend fails is reported, not
    raised. Returns ``(results by index, failure message by index)``.

    ``evaluator(points, settings)`` raises :class:`ComputationError` naming the failed point;
    the rest are evaluated again without it (a cache keeps what finished). A failure that
    names no point fails every point left, one by one, so that each gets its own verdict."""
    results: dict[int, object] = {}
    failures: dict[int, str] = {}
    todo = list(range(len(points)))

    def call(idx: list[int]) -> list:
        return evaluator([points[i] for i in idx], settings)

    while todo:
        try:
            results.update(zip(todo, call(todo)))
            return results, failures
        except ComputationError as exc:
            if _interrupted(exc):
                raise
            j = _which(str(exc), points, todo)
            if j is None:
                if len(todo) == 1:
                    failures[todo[0]] = str(exc).splitlines()[0]
                    return results, failures
                break
            failures[j] = str(exc).splitlines()[0]
            todo.remove(j)
    for i in todo:  # a failure that names no point: one point at a time
        try:
            results[i] = call([i])[0]
        except ComputationError as exc:
            if _interrupted(exc):
                raise
            failures[i] = str(exc).splitlines()[0]
    return results, failures


def gaussian_validity(fc, dv, sig, evaluator_for: Callable[[int], object], cosmos: Mapping[str, object] | None = None,
                      specs: Mapping[str, object] | None = None):
    """The Gaussian-validity check of the forecast ``fc`` (see the module docstring).

    dv, sig: the run's data vector and signals; ``evaluator_for(n)`` returns an evaluator
    for n points; cosmos: the run's evaluations by content address (re-used); specs: the
    derivative specs of the free parameters (their domains; default: the registry's).
    Returns a :class:`fishcast.diagnostics.GaussianValidity`."""
    from .. import diagnostics as _diag
    from ..parameters import PRIMORDIAL, is_cosmological, lookup
    from .plan import cosmo_part

    survey = fc.survey
    settings = survey.settings
    dconf = survey.config.diagnostics
    thresholds = dconf.thresholds()
    names = list(fc.fisher.names)
    cov = fc.fisher.covariance()
    if specs:
        contains = {n: specs[n].contains for n in names if n in specs}
        dtext = {n: specs[n].domain_text() for n in names if n in specs}
    else:
        contains = {n: lookup(n).domain.contains for n in names}
        dtext = {n: lookup(n).domain.text() for n in names}
    if dconf.gaussian_directions == "all":
        pts = _diag.principal_points(cov, survey.fiducial, names, domains=contains)
    else:
        # 'cosmological': the transfer parameters first, then n_s / sigma8 (their points share the
        # fiducial's transfer functions); 'cosmological_principal': all cosmological ones at once
        transfer = ([is_cosmological(n) and n not in PRIMORDIAL for n in names]
                    if dconf.gaussian_directions == "cosmological" else None)
        pts = _diag.cosmological_points(cov, survey.fiducial, names, [is_cosmological(n) for n in names],
                                        domains=contains, transfer=transfer)
    sigma = np.sqrt(np.maximum(np.diag(cov), 0.0))
    fid_theta = np.array([survey.fiducial[n] for n in names])
    n_pts = len(pts.points)

    full: list[dict[str, float]] = []
    for i in range(n_pts):
        p = dict(survey.fiducial)
        for j, n in enumerate(names):
            off = pts.points[i][j] - fid_theta[j]
            tiny = is_cosmological(n) and abs(off) <= SNAP * sigma[j]
            p[n] = float(fid_theta[j]) if tiny else float(pts.points[i][j])
        full.append(p)

    status = ["evaluated"] * n_pts
    notes = [""] * n_pts
    cosmo_at: dict[int, object] = {}
    fid_key = _cosmo.point_key(cosmo_part(survey.fiducial), settings)
    pending: list[int] = []
    for i, p in enumerate(full):
        why = screen(p, names, contains, dtext)
        if why is not None:
            status[i], notes[i] = "outside", f"{why}; not sent to CAMB"
            continue
        key = _cosmo.point_key(cosmo_part(p), settings)
        if cosmos is not None and key in cosmos:
            status[i] = "reused"
            notes[i] = "the fiducial cosmology" if key == fid_key else "a derivative-stencil cosmology"
            cosmo_at[i] = cosmos[key]
        else:
            pending.append(i)

    prior_w = np.array([1.0 / survey.priors[n] if n in survey.priors else 0.0 for n in names])
    fid_aug = np.concatenate([sig.fiducial, prior_w * fid_theta])
    n_sig = sig.fiducial.size
    signals_at: list[np.ndarray | None] = [None] * n_pts

    # the Delta chi^2 of each point (its Knox product with the fiducial's metric, priors
    # included) is measured once, when its data vector is known; the inference of the -sides
    # below and the final verdicts judge these numbers (gaussian_verdicts), nothing measures
    # a data vector twice
    dchi2: list[float | None] = [None] * n_pts

    def measure(s: np.ndarray) -> float:
        """Delta chi^2 (dimensionless) of the augmented data vector ``s``: |s - fid|^2 in the
        metric of the data (the probes' Knox product) plus the Gaussian priors."""
        d = np.asarray(s, dtype=float) - fid_aug
        g = dv.gram(sig.fiducial, d[None, :n_sig])[0, 0] + float(np.sum(d[n_sig:] ** 2))
        return float(np.sqrt(max(g, 0.0))) ** 2  # the square of the length: bit-identical to delta_chi2's

    def signals_for(idx) -> None:
        for i in idx:
            if i not in cosmo_at or signals_at[i] is not None:
                continue
            try:
                sv = np.asarray(dv.signal(cosmo_at[i], full[i]), dtype=float)
                if not np.all(np.isfinite(sv)):
                    raise ComputationError(f"the data vector is not finite ({int(np.sum(~np.isfinite(sv)))} entries)")
            except (FishcastError, ArithmeticError, ValueError) as exc:
                if _interrupted(exc):
                    raise
                status[i], notes[i] = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            theta = np.array([full[i][n] for n in names])
            signals_at[i] = np.concatenate([sv, prior_w * theta])
            dchi2[i] = measure(signals_at[i])

    calls0 = _cosmo.boltzmann_calls()

    def evaluate(idx: list[int]) -> None:
        """Evaluate the points ``idx`` (one batch: the evaluator's progress counts exactly them)."""
        groups: dict[str, list[int]] = {}
        for i in idx:
            groups.setdefault(_cosmo.point_key(cosmo_part(full[i]), settings), []).append(i)
        if not groups:
            return
        evaluator = evaluator_for(len(groups))
        firsts = [g[0] for g in groups.values()]
        results, failures = evaluate_tolerant(evaluator, [cosmo_part(full[i]) for i in firsts], settings)
        for k, g in enumerate(groups.values()):
            for i in g:
                if k in results:
                    cosmo_at[i] = results[k]
                else:
                    status[i], notes[i] = "failed", failures.get(k, "not evaluated")

    def judge(values: Sequence[float | None], camb_runs: int = -1):
        return _diag.gaussian_verdicts(values, thresholds=thresholds, points=pts, status=status, point_notes=notes,
                                       camb_runs=camb_runs)

    derivs = fc.derivatives
    if dconf.gaussian_sides == "adaptive" and derivs:
        # the +n_sigma side first; the -n_sigma side from the quadratic model through the
        # fiducial, the +side and the forecast's derivatives (infer_minus_side), evaluated
        # only where the direction's verdict depends on it
        first = [i for i in pending if i % 2 == 0]
        # a -side that shares the transfer functions of a +side (only sigma8, n_s move between
        # them) shares its Boltzmann run: evaluated with it, at no extra run
        runs = {_cosmo.transfer_key(_cosmo.full_params(cosmo_part(full[i]))) for i in first}
        first += [i for i in pending if i % 2 == 1
                  and _cosmo.transfer_key(_cosmo.full_params(cosmo_part(full[i]))) in runs]
        evaluate(sorted(first))
        signals_for(range(n_pts))
        D = np.stack([np.asarray(derivs[n], dtype=float) for n in names])
        later = []
        for i in [i for i in pending if i % 2 == 1 and i not in first]:
            plus = signals_at[i - 1]
            if plus is None:  # the +side is outside or failed: nothing to infer from
                later.append(i)
                continue
            delta = np.array([full[i - 1][n] for n in names]) - fid_theta
            a = np.concatenate([delta @ D, prior_w * delta])
            minus = infer_minus_side(plus, fid_aug, a)
            status[i] = "inferred"
            without = judge(dchi2).direction_verdicts[i // 2]  # this side unknown
            trial = list(dchi2)
            trial[i] = measure(minus)
            with_inferred = judge(trial).direction_verdicts[i // 2]
            if with_inferred != without:
                status[i] = "evaluated"
                later.append(i)
                continue
            signals_at[i], dchi2[i] = minus, trial[i]
            notes[i] = (f"from the +{pts.n_sigma:g} sigma side by the quadratic model along the direction (no "
                        f"verdict depends on it: {with_inferred} either way); no CAMB call")
        evaluate(later)
    else:
        evaluate(pending)
    signals_for(range(n_pts))
    camb_runs = _cosmo.boltzmann_calls() - calls0

    return judge(dchi2, camb_runs)


def infer_minus_side(plus: np.ndarray, fid: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The data vector at fiducial - delta from the one at fiducial + delta, by the
    quadratic model along the ray.

    Along the ray, s(t) = s0 + a t + (w/2) t^2 + O(t^3) with ``a = J delta`` (the forecast's
    derivatives). The +side gives ``r = w/2 = s(+1) - s0 - a`` (up to O(t^3)), so
    ``s(-1) = s0 - a + r``: exact for a data vector quadratic along the ray (up to the error
    of the derivatives ``a``), wrong by the odd terms O(t^3) otherwise. In the metric of the
    data, Delta chi^2(-) = |a|^2 + |r|^2 - 2 a.r and Delta chi^2(+) = |a|^2 + |r|^2 + 2 a.r."""
    plus = np.asarray(plus, dtype=float)
    fid = np.asarray(fid, dtype=float)
    a = np.asarray(a, dtype=float)
    return fid - a + (plus - fid - a)
