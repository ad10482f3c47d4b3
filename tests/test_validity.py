"""The Gaussian-validity check (issue 16; issue 15 item 3): points outside the model's domain
are not sent to CAMB, a failure at a validity point degrades the check and never the
forecast, re-used evaluations cost no CAMB call, and each flagged direction says how much it
moves the marginalized errors (a WARN only when a cosmological error moves beyond tolerance).

The first part uses toy models with known answers and a recording evaluator (no CAMB run);
the second runs the real pipeline (CAMB, CLI, batch) on a small weak-lensing survey.
"""

from __future__ import annotations

import math
import textwrap
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fishcast import cosmology as _cosmo
from fishcast.cosmology import CosmologySettings, describe_point, full_params, point_key, transfer_key
from fishcast.diagnostics import DiagnosticsConfig, GaussianValidity, delta_chi2, principal_points, sigma_changes
from fishcast.errors import ComputationError
from fishcast.fisher import FisherMatrix
from fishcast.pipeline.plan import cosmo_part
from fishcast.pipeline.validity import evaluate_tolerant, gaussian_validity

SETTINGS = CosmologySettings(nonlinear_model="none", z_max=1.0, n_z=5, k_max=1.0, n_k=10)
FID = {"Omega_m": 0.32, "Omega_b": 0.05, "h": 0.67, "n_s": 0.96, "sigma8": 0.8, "w0": -1.0, "wa": 0.0,
       "m_nu": 0.06, "Omega_k": 0.0, "A_IA": 1.72, "eta_IA": -0.41}


# ------------------------------------------------------------------------------ toy pipeline
class ToyCosmo:
    """Stands in for a CosmologyResult: carries the cosmological parameters it was made at."""

    def __init__(self, params):
        self.params = dict(params)


class ToyData:
    """A data vector ``model(theta)`` read from the cosmology (cosmological parameters) and the
    parameters (nuisances), with the identity as Fisher metric."""

    def __init__(self, names, model):
        self.names, self.model = list(names), model

    def theta(self, cosmo, params):
        return np.array([cosmo.params[n] if n in cosmo.params else params[n] for n in self.names])

    def signal(self, cosmo, params):
        return np.asarray(self.model(self.theta(cosmo, params)), dtype=float)

    def gram(self, fid, d):
        d = np.atleast_2d(d)
        return d @ d.T


class Recorder:
    """An evaluator that records every cosmological point it is asked for, and fails (like
    CAMB, quoting the point) where ``fail(point)`` says so."""

    def __init__(self, fail=lambda p: None):
        self.points: list[dict] = []
        self.fail = fail
        self.factories = 0
        self.batches: list[list[dict]] = []

    @property
    def boltzmann_runs(self) -> int:
        """Boltzmann runs the real backend would make for these batches: one per distinct set
        of transfer functions in a batch (fishcast.cosmology groups a batch by transfer_key)."""
        return sum(len({transfer_key(full_params(p)) for p in b}) for b in self.batches)

    def __call__(self, n):
        self.factories += 1

        def evaluate(points, settings):
            self.batches.append([dict(p) for p in points])
            out = []
            for p in points:
                why = self.fail(p)
                if why:
                    raise ComputationError(f"CAMB failed at the point {describe_point(full_params(p))}: {why}")
                self.points.append(dict(p))
                out.append(ToyCosmo(p))
            return out

        return evaluate


def toy_check(names, cov, model, evaluator, priors=None, thresholds=None, sides="both", jacobian=None,
              directions="cosmological", data=ToyData):
    """Run :func:`gaussian_validity` on a toy forecast: covariance ``cov`` of ``names`` around
    FID, data ``model(theta)``; the fiducial cosmology is 'already evaluated'. ``jacobian``
    (n_data, n_par): the forecast's derivatives (needed by ``sides="adaptive"``)."""
    fid = np.array([FID[n] for n in names])
    cfg = thresholds or DiagnosticsConfig()
    survey = SimpleNamespace(settings=SETTINGS, fiducial=dict(FID), priors=priors or {},
                             config=SimpleNamespace(diagnostics=SimpleNamespace(thresholds=lambda: cfg,
                                                                                gaussian_sides=sides,
                                                                                gaussian_directions=directions)))
    derivs = {n: np.asarray(jacobian)[:, j] for j, n in enumerate(names)} if jacobian is not None else {}
    fc = SimpleNamespace(survey=survey, fisher=FisherMatrix(np.linalg.inv(cov), names, fid), derivatives=derivs)
    dv = data(names, model)
    fid_cosmo = cosmo_part(FID)
    sig = SimpleNamespace(fiducial=dv.signal(ToyCosmo(fid_cosmo), FID))
    cosmos = {point_key(fid_cosmo, SETTINGS): ToyCosmo(fid_cosmo)}
    return gaussian_validity(fc, dv, sig, evaluator, cosmos)


def linear(fid, sig, scale=None):
    """Whitened linear model: Delta chi^2 = 1 at every 1-sigma point of a diagonal covariance
    (``scale`` stretches components)."""
    scale = np.ones(len(fid)) if scale is None else np.asarray(scale, dtype=float)
    return lambda th: scale * (np.asarray(th) - fid) / sig


# ------------------------------------------------------------------------------ the rules
def test_linear_model_passes_and_nuisance_direction_reuses_the_fiducial_cosmology():
    names, sig = ["w0", "A_IA"], np.array([0.1, 0.3])
    rec = Recorder()
    gv = toy_check(names, np.diag(sig**2), linear(np.array([-1.0, 1.72]), sig), rec)
    np.testing.assert_allclose(gv.delta_chi2, 1.0, rtol=1e-10)
    assert gv.verdict == "PASS" and not gv.reasons and not gv.notes
    # the A_IA direction changes no cosmological parameter: the fiducial cosmology, no CAMB call
    ia = [i for i in range(4) if "A_IA" in gv.dominant(i // 2)]
    assert [gv.status[i] for i in ia] == ["reused", "reused"]
    assert all(gv.point_notes[i] == "the fiducial cosmology" for i in ia)
    assert sorted(round(p["w0"], 12) for p in rec.points) == [-1.1, -0.9]  # only the w0 direction
    assert gv.count("evaluated") == 2 and gv.count("reused") == 2 and "2 re-used" in gv.cost_text()


def test_points_outside_the_domain_are_not_sent_to_camb():
    # w0 + wa > 0 at +1 sigma of wa (CAMB's PPF refuses it); m_nu < 0 at -1 sigma of m_nu
    names, sig = ["w0", "wa", "m_nu"], np.array([0.1, 2.0, 0.1])
    rec = Recorder()
    gv = toy_check(names, np.diag(sig**2), linear(np.array([-1.0, 0.0, 0.06]), sig), rec)
    for p in rec.points:
        assert p["w0"] + p["wa"] <= 0 and p["m_nu"] >= 0, p
    assert gv.count("outside") == 2 and len(rec.points) == 4
    notes = [n for n, s in zip(gv.point_notes, gv.status) if s == "outside"]
    assert any("w0 + wa = 1 > 0" in n and "PPF" in n for n in notes)
    assert any("m_nu = -0.04 outside its domain [0, inf)" in n for n in notes)
    assert all("not sent to CAMB" in n for n in notes)
    assert gv.verdict == "WARN"
    text = "; ".join(gv.reasons)
    assert "(wa" in text and "(m_nu" in text and text.count("outside the domain where the model runs") == 2
    # the other side of each direction is still evaluated and reported
    assert np.sum(np.isfinite(gv.delta_chi2)) == 4


def test_survey_domain_override_is_respected():
    """A narrower domain given in the survey (derivative specs) screens points too."""
    names, sig = ["w0", "A_IA"], np.array([0.1, 0.3])
    fid = np.array([-1.0, 1.72])
    cfg = DiagnosticsConfig()
    survey = SimpleNamespace(settings=SETTINGS, fiducial=dict(FID), priors={},
                             config=SimpleNamespace(diagnostics=SimpleNamespace(thresholds=lambda: cfg,
                                                                                gaussian_sides="both",
                                                                                gaussian_directions="cosmological")))
    fc = SimpleNamespace(survey=survey, fisher=FisherMatrix(np.diag(1 / sig**2), names, fid), derivatives={})
    dv = ToyData(names, linear(fid, sig))
    specs = {"w0": SimpleNamespace(contains=lambda v: v <= -0.95, domain_text=lambda: "(-inf, -0.95]"),
             "A_IA": SimpleNamespace(contains=lambda v: True, domain_text=lambda: "(-inf, inf)")}
    rec = Recorder()
    fid_cosmo = ToyCosmo(cosmo_part(FID))
    gv = gaussian_validity(fc, dv, SimpleNamespace(fiducial=dv.signal(fid_cosmo, FID)), rec,
                           {point_key(fid_cosmo.params, SETTINGS): fid_cosmo}, specs)
    assert [p["w0"] for p in rec.points] == [pytest.approx(-1.1)]
    assert any("w0 = -0.9 outside its domain (-inf, -0.95]" in n for n in gv.point_notes)


def test_a_camb_failure_inside_the_domain_degrades_the_check_only():
    names, sig = ["Omega_m", "w0"], np.array([0.01, 0.1])
    fid = np.array([0.32, -1.0])
    rec = Recorder(fail=lambda p: "injected failure" if p["w0"] < -1.05 else None)
    gv = toy_check(names, np.diag(sig**2), linear(fid, sig), rec)
    assert gv.count("failed") == 1 and gv.count("evaluated") == 3
    i = gv.status.index("failed")
    assert "CAMB failed at the point" in gv.point_notes[i] and "injected failure" in gv.point_notes[i]
    assert np.isnan(gv.delta_chi2[i]) and np.sum(np.isfinite(gv.delta_chi2)) == 3
    assert gv.verdict == "WARN"
    assert any("(w0" in r and "outside the domain where the model runs" in r and "injected" in r for r in gv.reasons)
    assert rec.factories == 1  # one evaluator for the check, retried without the failed point


def test_a_non_finite_data_vector_is_a_failure_of_that_point():
    names, sig = ["Omega_m", "w0"], np.array([0.01, 0.1])
    fid = np.array([0.32, -1.0])
    lin = linear(fid, sig)

    def model(th):
        out = lin(th)
        return out * np.nan if th[0] > 0.325 else out

    gv = toy_check(names, np.diag(sig**2), model, Recorder())
    assert gv.count("failed") == 1 and "not finite" in gv.point_notes[gv.status.index("failed")]
    assert gv.verdict == "WARN"


def test_an_interrupt_during_the_check_is_not_taken_for_a_camb_failure():
    def ev(points, settings):
        raise ComputationError(f"CAMB failed at the point {describe_point(full_params(points[0]))}: "
                               "argument 2: KeyboardInterrupt: ")

    with pytest.raises(ComputationError):
        evaluate_tolerant(ev, [cosmo_part(FID)], SETTINGS)


def test_a_failure_naming_no_point_is_tried_point_by_point():
    calls = []

    def ev(points, settings):
        calls.append(len(points))
        if len(points) > 1 or points[0]["w0"] > -1:
            raise ComputationError("the backend crashed")
        return [ToyCosmo(points[0])]

    pts = [dict(cosmo_part(FID), w0=-1.1), dict(cosmo_part(FID), w0=-0.9)]
    res, fails = evaluate_tolerant(ev, pts, SETTINGS)
    assert list(res) == [0] and list(fails) == [1] and calls == [2, 1, 1]


def _bent(fid, sig, a):
    """w0 quadratic along its axis: s_w0 = d (1 + a d) with d = (w0 - fid) / sigma, so that
    Delta chi^2 = (1 + a)^2 at +1 sigma and (1 - a)^2 at -1 sigma, exactly (analytic)."""
    def model(th):
        d = (np.asarray(th) - fid) / sig
        d[1] = d[1] * (1 + a * d[1])
        return d
    return model


def test_adaptive_sides_infer_the_minus_side_unless_the_verdict_depends_on_it():
    """adaptive sides: the -1 sigma side comes from the quadratic model through the fiducial,
    the derivatives and the +1 sigma side, and is evaluated only when the direction's verdict
    with it differs from the verdict of the +side alone."""
    names, sig = ["Omega_m", "w0"], np.array([0.01, 0.1])
    fid = np.array([0.32, -1.0])
    J = np.diag(1 / sig)
    rec = Recorder()
    gv = toy_check(names, np.diag(sig**2), linear(fid, sig), rec, sides="adaptive", jacobian=J)
    np.testing.assert_allclose(gv.delta_chi2, 1.0, rtol=1e-10)
    assert gv.status == ("evaluated", "inferred") * 2 and len(rec.points) == 2
    assert "no CAMB call" in gv.point_notes[1] and gv.cost_text().startswith("2 point(s) evaluated")

    def w0_pair(gv):
        j = [j for j in range(2) if gv.dominant(j) == ["w0"]][0]
        return j, gv.delta_chi2[2 * j:2 * j + 2]

    # strongly curved (a = 0.5): Delta chi^2 = 2.25 / 0.25. The +side alone moves sigma(w0) by
    # 1/1.5 - 1 = -33 %, the mean width with the inferred side by (1/1.5 + 1/0.5)/2 - 1 = +33 %:
    # WARN either way, so the -side is inferred -- exactly, the model being quadratic
    rec = Recorder()
    gv = toy_check(names, np.diag(sig**2), _bent(fid, sig, 0.5), rec, sides="adaptive", jacobian=J)
    j, pair = w0_pair(gv)
    assert gv.status[2 * j + 1] == "inferred" and len(rec.points) == 2
    np.testing.assert_allclose(pair, [2.25, 0.25], rtol=1e-10)
    assert gv.direction_verdicts[j] == "WARN"

    # a = 0.2: the +side alone (1.44, width 0.833) moves sigma(w0) by -17 % (WARN); with the
    # inferred side (0.64, width 1.25) the mean width is 1.042 (+4 %, a NOTE): the verdict
    # depends on the -side, which is evaluated
    rec = Recorder()
    gv = toy_check(names, np.diag(sig**2), _bent(fid, sig, 0.2), rec, sides="adaptive", jacobian=J)
    j, pair = w0_pair(gv)
    assert gv.status[2 * j + 1] == "evaluated" and len(rec.points) == 3
    np.testing.assert_allclose(pair, [1.44, 0.64], rtol=1e-10)
    assert gv.direction_verdicts[j] == "NOTE"

    # a = -0.13: the +side (0.7569) is within tolerance, the inferred -side (1.2769) is flagged:
    # PASS alone, NOTE with it -- evaluated
    rec = Recorder()
    gv = toy_check(names, np.diag(sig**2), _bent(fid, sig, -0.13), rec, sides="adaptive", jacobian=J)
    j, pair = w0_pair(gv)
    assert gv.status[2 * j + 1] == "evaluated" and len(rec.points) == 3
    np.testing.assert_allclose(pair, [0.87**2, 1.13**2], rtol=1e-10)

    # slightly curved (a = 0.04): PASS either way, the inferred side is the quadratic model's
    gv = toy_check(names, np.diag(sig**2), _bent(fid, sig, 0.04), Recorder(), sides="adaptive", jacobian=J)
    assert gv.count("inferred") == 2
    j, pair = w0_pair(gv)
    np.testing.assert_allclose(pair, [1.04**2, 0.96**2], rtol=1e-10)


class MeasuredData(ToyData):
    """ToyData recording every difference whose length the metric is asked for."""

    def __init__(self, names, model):
        super().__init__(names, model)
        self.measured: list[bytes] = []

    def gram(self, fid, d):
        self.measured.append(np.ascontiguousarray(d, dtype=float).tobytes())
        return super().gram(fid, d)


@pytest.mark.parametrize("a", [0.5, 0.2, -0.13, 0.04])
def test_each_point_is_measured_once(a):
    """The Delta chi^2 of each point (one Knox product) is measured once, when its data vector
    is known; the inference of the -sides judges the numbers (it judged every direction again
    for each side it tried, measuring every point each time: the Euclid WL check made 195 Knox
    products for its 20 points). Counted: one per point with a data vector (the Omega_m and
    w0 directions: the +side evaluated, the -side inferred or evaluated; the A_IA direction:
    both sides at the fiducial cosmology), plus one per inferred -side that was tried and
    then evaluated (the w0 direction at a = 0.2 and -0.13, as the test above finds), with the
    results of the test above."""
    names, sig = ["Omega_m", "w0", "A_IA"], np.array([0.01, 0.1, 0.3])
    fid = np.array([0.32, -1.0, 1.72])
    seen = []

    class Data(MeasuredData):
        def __init__(self, *args):
            super().__init__(*args)
            seen.append(self)

    gv = toy_check(names, np.diag(sig**2), _bent(fid, sig, a), Recorder(), sides="adaptive",
                   jacobian=np.diag(1 / sig), data=Data)
    measured = seen[0].measured
    assert len(measured) == len(set(measured))
    with_data = sum(1 for s in gv.status if s in ("evaluated", "inferred", "reused"))
    assert with_data == 6
    tried_then_evaluated = 1 if a in (0.2, -0.13) else 0
    assert len(measured) == with_data + tried_then_evaluated
    j = [j for j in range(3) if gv.dominant(j) == ["w0"]][0]
    assert gv.status[2 * j + 1] == ("evaluated" if tried_then_evaluated else "inferred")
    expect = {0.5: (2.25, 0.25), 0.2: (1.44, 0.64), -0.13: (0.87**2, 1.13**2), 0.04: (1.04**2, 0.96**2)}[a]
    np.testing.assert_allclose(gv.delta_chi2[2 * j:2 * j + 2], expect, rtol=1e-10)


def test_the_verdicts_of_measured_values_are_those_of_the_data_vectors():
    """gaussian_verdicts (the judgement of Delta chi^2 measured already) gives what
    delta_chi2 gives from the data vectors and a norm (Euclidean here: Delta chi^2 = |d|^2),
    a missing value being a point outside the domain."""
    from fishcast.diagnostics import gaussian_verdicts

    names, sig = ["w0", "A_IA"], np.array([0.1, 0.3])
    fid = np.array([-1.0, 1.72])
    pts = principal_points(np.diag(sig**2), dict(zip(names, fid)), names)
    model = _bent(np.array([-1.0, 1.72]), sig, 0.5)
    sigs = [model(p) for p in pts.points]
    sigs[3] = None
    by_vectors = delta_chi2(sigs, model(fid), lambda d: float(np.linalg.norm(d)), points=pts)
    values = [None if s is None else float(np.sum((s - model(fid)) ** 2)) for s in sigs]
    by_values = gaussian_verdicts(values, points=pts)
    np.testing.assert_allclose(by_values.delta_chi2, by_vectors.delta_chi2, rtol=1e-14)
    assert np.isnan(by_values.delta_chi2[3]) and by_values.status[3] == "outside"
    assert by_values.direction_verdicts == by_vectors.direction_verdicts
    assert by_values.reasons == by_vectors.reasons and "WARN" in by_values.direction_verdicts


@pytest.mark.parametrize("directions, d", [("cosmological_principal", 1), ("cosmological", 1), ("cosmological", 2)])
def test_corrected_errors_equal_the_exact_errors_of_the_true_likelihood(directions, d):
    """Reference: a linear model whose true Fisher matrix differs from the forecast's along one
    direction o of the check's basis (F_true = F + (k^2 - 1) F o o^T F). Its exact covariance
    is, by Sherman-Morrison, C + (1/k^2 - 1) o o^T; the check must measure Delta chi^2 = k^2
    along o, 1 along the others, and give exactly those errors. The calculation needs only an
    F-orthonormal basis: the principal directions (all parameters cosmological here:
    'cosmological_principal' is principal_points), or the split basis of 'cosmological'
    (Omega_m, w0 need a Boltzmann run: directions 0, 1; sigma8 does not: direction 2)."""
    from fishcast.diagnostics import cosmological_points

    names = ["Omega_m", "sigma8", "w0"]
    C = np.array([[0.02**2, -0.8 * 0.02 * 0.03, 0.3 * 0.02 * 0.2],
                  [-0.8 * 0.02 * 0.03, 0.03**2, 0.0],
                  [0.3 * 0.02 * 0.2, 0.0, 0.2**2]])
    F = np.linalg.inv(C)
    fid = np.array([FID[n] for n in names])
    if directions == "cosmological":
        pts = cosmological_points(C, fid, names, [True] * 3, transfer=[True, False, True])
        np.testing.assert_allclose(pts.offsets[2, [0, 2]], 0.0)  # the sigma8 direction: transfer at the fiducial
    else:
        pts = principal_points(C, fid, names)
    o = pts.offsets[d]
    k = 2.5
    F_true = F + (k**2 - 1) * np.outer(F @ o, F @ o)
    L = np.linalg.cholesky(F_true)
    gv = toy_check(names, C, lambda th: L.T @ (np.asarray(th) - fid), Recorder(), directions=directions)
    np.testing.assert_allclose(np.abs(gv.offsets @ F @ pts.offsets.T), np.eye(3), atol=1e-10)  # the same basis (signs apart)
    expect = np.ones(6)
    expect[2 * d:2 * d + 2] = k**2
    np.testing.assert_allclose(gv.delta_chi2, expect, rtol=1e-8)
    np.testing.assert_allclose(gv.width_ratio[2 * d], 1 / k, rtol=1e-8)
    C_true = C + (1 / k**2 - 1) * np.outer(o, o)
    exact = np.sqrt(np.diag(C_true)) / np.sqrt(np.diag(C)) - 1
    np.testing.assert_allclose(gv.sigma_change[d], exact, atol=1e-10)
    others = [i for i in range(3) if i != d]
    np.testing.assert_allclose(gv.sigma_change[others], 0.0, atol=1e-10)
    assert gv.direction_verdicts[d] == "WARN" and gv.verdict == "WARN"  # cosmology moves by > 10%
    assert "moves sigma(" in gv.reasons[0]


def test_diagonal_case_halves_the_error_along_a_twice_steeper_direction():
    """Analytic: with s = 2 y / sigma_y the true error of y is sigma_y / 2 (-50 %), x unchanged."""
    out = sigma_changes(np.diag([0.1, 0.3]), np.array([1.0, 1.0, 0.5, 0.5]))
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.0, -0.5]], atol=1e-12)
    one_side = sigma_changes(np.diag([0.1, 0.3]), np.array([1.0, 1.0, 0.5, np.nan]))
    np.testing.assert_allclose(one_side[1, 1], -0.5)
    none = sigma_changes(np.diag([0.1, 0.3]), np.array([1.0, 1.0, np.nan, np.nan]))
    assert np.all(np.isnan(none[1]))


def _ia_nonlinear(fid, sig):
    def model(th):
        d = (np.asarray(th) - fid) / sig
        d[1] = d[1] * (1 + 0.5 * d[1])  # A_IA: Delta chi^2 = 2.25 at +1 sigma, 0.25 at -1 sigma
        return d
    return model


@pytest.mark.parametrize("directions", ["cosmological", "all"])
@pytest.mark.parametrize("rho, verdict", [(0.0, "PASS"), (0.2, "PASS"), (0.9, "WARN")])
def test_nuisance_non_gaussianity_is_a_note_unless_it_moves_cosmology(rho, verdict, directions):
    names, sig = ["w0", "A_IA"], np.array([0.1, 0.3])
    fid = np.array([-1.0, 1.72])
    cov = np.diag(sig) @ np.array([[1, rho], [rho, 1]]) @ np.diag(sig)
    # whitened in the forecast's own metric, then made nonlinear along A_IA's whitened axis
    L = np.linalg.cholesky(np.linalg.inv(cov))
    base = _ia_nonlinear(np.zeros(2), np.ones(2))
    gv = toy_check(names, cov, lambda th: base(L.T @ (np.asarray(th) - fid)), Recorder(), directions=directions)
    assert gv.flagged.any()
    assert gv.verdict == verdict
    if verdict == "PASS":
        assert gv.notes and not gv.reasons and "NOTE" in gv.direction_verdicts
        worst = np.nanmax(np.abs(gv.sigma_change[:, 0]))
        assert worst <= 0.1 and "within 10% for the cosmological parameters" in gv.notes[0]
    else:
        assert gv.reasons and "sigma(w0)" in gv.reasons[0]


def test_without_cosmological_parameters_every_parameter_counts():
    names = ["x", "y"]
    pts = principal_points(np.diag([1.0, 1.0]), np.zeros(2), names, domains={})
    sigs = [np.array([1.0, 0.0]), np.array([-1.0, 0.0]), np.array([0.0, 2.0]), np.array([0.0, -2.0])]
    gv = delta_chi2(sigs, np.zeros(2), lambda d: float(np.linalg.norm(d)), points=pts)
    assert gv.of_interest == (True, True) and gv.verdict == "WARN"


def test_the_report_and_the_file_carry_the_new_fields(tmp_path):
    from fishcast.diagnostics import format_report
    from fishcast.io.diagnostics import read_report, write_report

    names, sig = ["w0", "wa", "A_IA"], np.array([0.1, 2.0, 0.3])
    fid = np.array([-1.0, 0.0, 1.72])
    gv = toy_check(names, np.diag(sig**2), _ia3(fid, sig), Recorder())
    text = format_report(gaussian=gv)
    assert "cost: 3 point(s) evaluated" in text and "2 re-used" in text and "1 outside" in text
    assert "outside the domain where the model runs" in text and "note:" in text
    assert "width +" in text and "largest change of a sigma" in text
    with h5py.File(tmp_path / "g.h5", "w") as f:
        write_report(f.create_group("gaussian_validity"), gv)
    with h5py.File(tmp_path / "g.h5", "r") as f:
        back = read_report(f["gaussian_validity"])
        assert f["gaussian_validity"].attrs["n_outside"] == 1 and f["gaussian_validity"].attrs["n_reused"] == 2
    assert isinstance(back, GaussianValidity)
    assert back.status == gv.status and back.point_notes == gv.point_notes and back.notes == gv.notes
    assert back.direction_verdicts == gv.direction_verdicts and back.camb_runs == gv.camb_runs
    np.testing.assert_array_equal(back.sigma_change, gv.sigma_change)
    assert format_report(gaussian=back) == text


def _ia3(fid, sig):
    def model(th):
        d = (np.asarray(th) - fid) / sig
        d[2] = d[2] * (1 + 0.5 * d[2])
        return d
    return model


# ------------------------------------------------------------------------------ the cosmological directions
def _correlated(names, seed=3):
    """A correlated covariance of ``names`` (its correlation matrix from a random Gram matrix)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(len(names), len(names) + 2))
    G = A @ A.T
    d = np.sqrt(np.diag(G))
    sig = np.array([0.02, 0.3, 0.05, 0.4, 0.6][:len(names)])
    return G / np.outer(d, d) * np.outer(sig, sig)


MIXED = ["Omega_m", "w0", "sigma8", "A_IA", "eta_IA"]  # 3 cosmological, 2 nuisances


def test_cosmological_points_lie_on_the_marginalized_contour_at_the_conditional_best_fit():
    """Reference: the block formulas written out from F directly (not from C): each
    cosmological offset delta_c is a principal axis of the marginalized covariance C_cc with
    delta_c^T C_cc^-1 delta_c = 1 and nuisances delta_n = -F_nn^-1 F_nc delta_c; each nuisance
    offset has delta_c = 0 and is a principal axis of F_nn^-1; together an F-orthonormal basis
    (sum of outer products = C)."""
    from fishcast.diagnostics import cosmological_points

    C = _correlated(MIXED)
    F = np.linalg.inv(C)
    c, n = [0, 1, 2], [3, 4]
    fid = np.array([FID[k] for k in MIXED])
    pts = cosmological_points(C, fid, MIXED, [True, True, True, False, False])
    O = pts.offsets
    assert pts.kinds == ("cosmological",) * 3 + ("nuisance",) * 2
    np.testing.assert_allclose(O @ F @ O.T, np.eye(5), atol=1e-9)  # on the ellipsoid, F-orthogonal
    np.testing.assert_allclose(O.T @ O, C, rtol=1e-9, atol=1e-14)
    Ccc = C[np.ix_(c, c)]
    for i in range(3):
        dc, dn = O[i, c], O[i, n]
        assert dc @ np.linalg.solve(Ccc, dc) == pytest.approx(1.0, rel=1e-10)
        np.testing.assert_allclose(dn, -np.linalg.solve(F[np.ix_(n, n)], F[np.ix_(n, c)] @ dc), rtol=1e-9, atol=1e-14)
    # the cosmological parts are the principal axes of C_cc's correlation form
    s = np.sqrt(np.diag(Ccc))
    mu, U = np.linalg.eigh(Ccc / np.outer(s, s))
    np.testing.assert_allclose(np.abs((O[:3, c] / s) @ U), np.diag(np.sqrt(mu)), atol=1e-10)
    np.testing.assert_allclose(O[3:, c], 0.0)
    Fnn_inv = np.linalg.inv(F[np.ix_(n, n)])
    np.testing.assert_allclose(O[3:, n].T @ O[3:, n], Fnn_inv, rtol=1e-9)
    # no nuisance (or no cosmological) parameter: the principal directions of the whole covariance
    for flags in ([True] * 5, [False] * 5):
        a = cosmological_points(C, fid, MIXED, flags)
        np.testing.assert_allclose(a.offsets, principal_points(C, fid, MIXED).offsets, atol=1e-12)


SPLIT = ["Omega_m", "Omega_b", "w0", "n_s", "sigma8", "A_IA", "eta_IA"]  # 3 transfer, 2 primordial, 2 nuisances


def _random_fisher(seed=20261127):
    """A random SPD Fisher matrix of SPLIT, correlated, in the parameters' own units."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(7, 7))
    s = np.array([0.02, 0.003, 0.1, 0.01, 0.02, 0.3, 0.5])
    return (A @ A.T + 0.5 * np.eye(7)) / np.outer(s, s)


def test_split_basis_is_F_orthonormal_for_a_random_SPD_matrix():
    """The default basis (gaussian_directions: cosmological), checked algebraically on a random
    SPD Fisher matrix, every reference written out from F directly (not from the code's Schur
    recursion): (a) transfer directions: principal axes of the marginalized C_tt, every other
    parameter at its conditional best fit -F_rr^-1 F_rt delta_t; (b) n_s / sigma8 directions:
    delta_t = 0, principal axes of the p block of (F_{(pn)(pn)})^-1, nuisances at
    -F_nn^-1 F_np delta_p; (c) nuisances: delta_c = 0, axes of F_nn^-1. Between the groups
    u^T F w = 0; within a group too; every direction on the 1-sigma ellipsoid; so the outer
    products sum to C (what sigma_changes needs)."""
    from fishcast.diagnostics import cosmological_points

    F = _random_fisher()
    C = np.linalg.inv(F)
    fid = np.array([FID[k] for k in SPLIT])
    t, p, n = [0, 1, 2], [3, 4], [5, 6]
    pts = cosmological_points(C, fid, SPLIT, [True] * 5 + [False] * 2, transfer=[True] * 3 + [False] * 4)
    O = pts.offsets
    assert O.shape == (7, 7) and pts.kinds == ("cosmological",) * 5 + ("nuisance",) * 2
    groups = {"transfer": [0, 1, 2], "primordial": [3, 4], "nuisance": [5, 6]}
    G = O @ F @ O.T
    for a, ia in groups.items():
        for b, ib in groups.items():
            if a != b:  # conjugate between the groups
                np.testing.assert_allclose(G[np.ix_(ia, ib)], 0.0, atol=1e-9)
    np.testing.assert_allclose(G, np.eye(7), atol=1e-9)
    np.testing.assert_allclose(O.T @ O, C, rtol=1e-8, atol=1e-14 * np.abs(C).max())
    # (a)
    r = p + n
    Ctt = C[np.ix_(t, t)]
    st = np.sqrt(np.diag(Ctt))
    mu, U = np.linalg.eigh(Ctt / np.outer(st, st))
    np.testing.assert_allclose(np.abs((O[:3][:, t] / st) @ U), np.diag(np.sqrt(mu)), atol=1e-9)
    for i in range(3):
        dt = O[i, t]
        np.testing.assert_allclose(O[i, r], -np.linalg.solve(F[np.ix_(r, r)], F[np.ix_(r, t)] @ dt), rtol=1e-8,
                                   atol=1e-12 * np.abs(O[i]).max())
    # (b)
    np.testing.assert_allclose(O[3:5][:, t], 0.0, atol=0)
    Gpn = np.linalg.inv(F[np.ix_(r, r)])
    Gpp = Gpn[:2, :2]
    sp = np.sqrt(np.diag(Gpp))
    nu, V = np.linalg.eigh(Gpp / np.outer(sp, sp))
    np.testing.assert_allclose(np.abs((O[3:5][:, p] / sp) @ V), np.diag(np.sqrt(nu)), atol=1e-9)
    for i in (3, 4):
        np.testing.assert_allclose(O[i, n], -np.linalg.solve(F[np.ix_(n, n)], F[np.ix_(n, p)] @ O[i, p]), rtol=1e-8,
                                   atol=1e-12 * np.abs(O[i]).max())
    # (c)
    np.testing.assert_allclose(O[5:][:, t + p], 0.0, atol=0)
    np.testing.assert_allclose(O[5:][:, n].T @ O[5:][:, n], np.linalg.inv(F[np.ix_(n, n)]), rtol=1e-8)


def test_split_basis_costs_one_run_per_transfer_direction_and_one_for_n_s_and_sigma8():
    """The default check on a linear toy (Delta chi^2 = 1 everywhere): the 3 transfer
    directions cost a Boltzmann run each (+side; -side inferred), the n_s / sigma8 directions
    share the fiducial's transfer functions and are evaluated in one batch (both sides: one
    run), the nuisances re-use the fiducial: 4 runs, against 5 for the previous basis (every
    cosmological direction moves the transfer parameters)."""
    F = _random_fisher()
    C = np.linalg.inv(F)
    L = np.linalg.cholesky(F)
    fid = np.array([FID[k] for k in SPLIT])
    model = lambda th: L.T @ (np.asarray(th) - fid)  # noqa: E731
    rec = Recorder()
    gv = toy_check(SPLIT, C, model, rec, sides="adaptive", jacobian=L.T)
    np.testing.assert_allclose(gv.delta_chi2, 1.0, rtol=1e-9)
    assert gv.verdict == "PASS"
    assert gv.status == ("evaluated", "inferred") * 3 + ("evaluated", "evaluated") * 2 + ("reused",) * 4
    assert rec.boltzmann_runs == 4 and len(rec.batches) == 1
    old = Recorder()
    gv_old = toy_check(SPLIT, C, model, old, sides="adaptive", jacobian=L.T, directions="cosmological_principal")
    assert gv_old.verdict == "PASS" and old.boltzmann_runs == 5


def _quadratic_in_w0(C, q=0.35):
    """A data vector whitened in the forecast's own metric, plus a term quadratic in w0 alone:
    s(theta) = L^T delta + q (delta_w0 / sigma_w0)^2 e_0 with F = L L^T. Its derivatives at the
    fiducial are exactly L^T (the quadratic term has zero slope there)."""
    F = np.linalg.inv(C)
    L = np.linalg.cholesky(F)
    fid = np.array([FID[k] for k in MIXED])
    sw = math.sqrt(C[1, 1])

    def model(th):
        d = np.asarray(th) - fid
        out = L.T @ d
        out[0] += q * (d[1] / sw) ** 2
        return out

    return model, L.T, fid


def test_the_inferred_side_is_exact_for_a_data_vector_quadratic_in_one_parameter():
    """Reference: Delta chi^2 at fid - delta computed here from the model itself, |s(fid -
    delta) - s(fid)|^2 (the Fisher metric is the identity): the adaptive check's inferred side
    must equal it to 1e-10; so must the check that evaluates both sides."""
    C = _correlated(MIXED)
    model, J, fid = _quadratic_in_w0(C)
    cosmo = [True, True, True, False, False]
    from fishcast.diagnostics import cosmological_points

    O = cosmological_points(C, fid, MIXED, cosmo).offsets
    exact = np.ravel([[np.sum((model(fid + o) - model(fid)) ** 2), np.sum((model(fid - o) - model(fid)) ** 2)]
                      for o in O])
    assert np.any(np.abs(exact - 1) > 0.05)  # the quadratic term shows
    rec = Recorder()
    # the previous basis (every cosmological direction at once), whose points are O above
    ad = toy_check(MIXED, C, model, rec, sides="adaptive", jacobian=J, directions="cosmological_principal")
    # no verdict depends on a -side here: each is inferred
    assert ad.status == ("evaluated", "inferred") * 3 + ("reused",) * 4
    np.testing.assert_allclose(ad.delta_chi2, exact, rtol=1e-10, atol=1e-12)
    both = toy_check(MIXED, C, model, Recorder(), sides="both", directions="cosmological_principal")
    np.testing.assert_allclose(both.delta_chi2, exact, rtol=1e-10, atol=1e-12)
    assert both.direction_verdicts == ad.direction_verdicts
    # the cost: one point per cosmological direction (its +side); the nuisance directions
    # re-use the fiducial cosmology
    assert len(rec.points) == 3

    # a stronger bend: the -side of one direction is flagged while its +side is not, so that
    # direction's verdict depends on it and it is evaluated (still exact)
    model, J, fid = _quadratic_in_w0(C, q=0.6)
    exact = np.ravel([[np.sum((model(fid + o) - model(fid)) ** 2), np.sum((model(fid - o) - model(fid)) ** 2)]
                      for o in O])
    rec = Recorder()
    ad = toy_check(MIXED, C, model, rec, sides="adaptive", jacobian=J, directions="cosmological_principal")
    assert ad.count("evaluated") == 4 and len(rec.points) == 4 and ad.count("inferred") == 2
    np.testing.assert_allclose(ad.delta_chi2, exact, rtol=1e-10, atol=1e-12)


def test_a_nuisance_only_non_gaussianity_is_a_note_along_the_cosmological_directions():
    """A data vector non-Gaussian in A_IA only, independent of cosmology (F block-diagonal):
    the cosmological directions pass (their nuisances stay at the fiducial), the A_IA
    direction is flagged, moves no cosmological error -> a NOTE, verdict PASS."""
    names, sig = ["w0", "A_IA"], np.array([0.1, 0.3])
    gv = toy_check(names, np.diag(sig**2), _ia_nonlinear(np.array([-1.0, 1.72]), sig), Recorder())
    assert gv.kinds == ("cosmological", "nuisance")
    assert gv.direction_verdicts == ("PASS", "NOTE") and gv.verdict == "PASS" and gv.notes


def test_all_directions_remain_available_and_check_every_side():
    """gaussian_directions: all, gaussian_sides: both (the full check): 2N points along the
    principal directions of the whole covariance, every side evaluated."""
    C = _correlated(MIXED)
    model, J, fid = _quadratic_in_w0(C)
    rec = Recorder()
    gv = toy_check(MIXED, C, model, rec, sides="both", directions="all")
    assert gv.kinds == ("principal",) * 5 and gv.count("inferred") == 0
    np.testing.assert_allclose(gv.offsets, principal_points(C, fid, MIXED).offsets)
    assert len(rec.points) == 10  # every direction moves cosmology: each side is a point
    o = gv.offsets
    exact = np.ravel([[np.sum((model(fid + x) - model(fid)) ** 2), np.sum((model(fid - x) - model(fid)) ** 2)]
                      for x in o])
    np.testing.assert_allclose(gv.delta_chi2, exact, rtol=1e-10)


# ------------------------------------------------------------------------------ real pipeline
W0WA = textwrap.dedent("""\
    name: loose-w0wa
    cosmology:
      nonlinear_model: none
      accuracy: {k_max: 5, n_k: 100, n_z: 30}
    parameters:
      fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.815583, w0: -0.9, wa: 0.0}
      free: [w0, wa]
    derivatives: {mode: fixed, stencil: 3-point}
    probes:
      weak_lensing:
        f_sky: 0.002
        ell: {min: 20, max: 300, n_bands: 5}
        n_gal: 5
        shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
        nz: {type: smail, z0: 0.6363961031, alpha: 2.0, beta: 1.5}
        bins: {type: equipopulated, n_bins: 2, z_min: 0.001, z_max: 2.5}
        photoz: {c_b: 1.0, z_b: 0.0, sigma_b: 0.05, c_o: 1.0, z_o: 0.1, sigma_o: 0.05, f_out: 0.1}
        intrinsic_alignment: {model: none}
        integration: {z_max: 3.0, n_z: 81}
    """)

TIGHT = W0WA.replace("name: loose-w0wa", "name: tight").replace(
    "free: [w0, wa]", "free: [Omega_m, sigma8]").replace("f_sky: 0.002", "f_sky: 0.3").replace("n_gal: 5", "n_gal: 30")


@pytest.fixture
def spy_camb(monkeypatch):
    """Every point CAMB is asked to run (the backend's parameter builder), and an optional
    failure injected there."""
    seen: list[dict] = []
    fail = {"when": None}
    real = _cosmo._camb_params

    def spy(p, settings, As):
        seen.append(dict(p))
        if fail["when"] is not None and fail["when"](p):
            raise RuntimeError("injected CAMB failure")
        return real(p, settings, As)

    monkeypatch.setattr(_cosmo, "_camb_params", spy)
    return seen, fail


def _run(tmp_path, text, *extra):
    from fishcast.cli.main import cli

    (tmp_path / "s.yaml").write_text(text)
    out = tmp_path / "s.h5"
    res = CliRunner().invoke(cli, ["run", str(tmp_path / "s.yaml"), "-o", str(out), *extra])
    return res, out


def _stored_check(out):
    from fishcast.io import open_forecast
    from fishcast.io.diagnostics import read_diagnostics

    with open_forecast(out) as f:
        return read_diagnostics(f["diagnostics"])["gaussian_validity"], f.attrs["trust"]


def test_run_with_a_validity_point_outside_the_domain(tmp_path, spy_camb, cache_dir):
    """Issue 16, must show 1: exit 0 or 3, the file written, the report names the direction
    and the reason, and no CAMB call for a point known to be outside."""
    seen, _ = spy_camb
    res, out = _run(tmp_path, W0WA, "--cache-dir", str(cache_dir))
    assert res.exit_code in (0, 3), res.output
    assert out.is_file()
    gv, trust = _stored_check(out)
    assert gv.count("outside") >= 1
    assert "outside the domain where the model runs" in res.output and "w0 + wa" in res.output
    assert "(w" in res.output  # the direction named by its dominant parameters (w0, wa)
    assert all(p["w0"] + p["wa"] <= 0 for p in seen), [p for p in seen if p["w0"] + p["wa"] > 0]
    assert str(trust) in ("warn", "fail") and gv.verdict == "WARN"
    assert "cost:" in res.output


def test_run_with_an_injected_camb_failure_at_a_validity_point(tmp_path, spy_camb):
    """Issue 16, must show 2: CAMB fails at a validity point inside the domain."""
    seen, fail = spy_camb
    # derivative stencil points move one parameter from the fiducial; validity points move both
    fail["when"] = lambda p: abs(p["Omega_m"] - 0.32) > 1e-12 and abs(p["sigma8"] - 0.815583) > 1e-12
    res, out = _run(tmp_path, TIGHT, "--no-cache")
    assert res.exit_code in (0, 3), res.output
    assert out.is_file()
    gv, trust = _stored_check(out)
    # the Omega_m direction (sigma8 at its conditional best fit) moves both: its two sides fail;
    # the sigma8 direction keeps Omega_m at the fiducial (the default basis) and runs
    assert gv.count("failed") == 2 and gv.count("outside") == 0
    assert [gv.status[i] for i in range(4)] == ["failed", "failed", "evaluated", "evaluated"]
    assert "outside the domain where the model runs" in res.output and "injected CAMB failure" in res.output
    assert gv.verdict == "WARN" and str(trust) in ("warn", "fail")
    # the Fisher results are written as usual
    from fishcast.io import read_fisher

    fisher, _ = read_fisher(out)
    assert np.all(np.isfinite(fisher.matrix)) and fisher.matrix[0, 0] > 0


def test_batch_designs_keep_their_forecast_when_a_validity_point_is_outside(tmp_path, spy_camb, cache_dir):
    """The same per design in a batch run."""
    from fishcast.pipeline.batch import load_grid, run_batch
    from fishcast.pipeline.cache import Cache

    seen, _ = spy_camb
    (tmp_path / "s.yaml").write_text(W0WA)
    (tmp_path / "grid.yaml").write_text(textwrap.dedent("""\
        name: g
        survey: s.yaml
        axes:
          probes.weak_lensing.n_gal: [5, 6]
        """))
    res = run_batch(load_grid(tmp_path / "grid.yaml"), tmp_path / "out", cache=Cache(cache_dir), plot=False)
    assert not res.failed and len(res.designs) == 2
    for d in res.designs:
        assert d.path.is_file() and d.trust in ("warn", "fail")
        assert any("outside the domain where the model runs" in r for r in d.trust_reasons)
    assert all(p["w0"] + p["wa"] <= 0 for p in seen)


def test_domain_violation_matches_what_camb_refuses(fast_settings):
    """The backend's joint limits (cosmology.domain_violation) against CAMB itself: a point
    just inside runs, one just outside is refused by CAMB too."""
    import camb

    assert _cosmo.domain_violation(dict(FID)) is None
    assert "w0 + wa" in _cosmo.domain_violation(dict(FID, w0=-0.5, wa=0.6))
    assert "Omega_m must exceed" in _cosmo.domain_violation(dict(FID, Omega_m=0.05))
    assert "m_nu" in _cosmo.domain_violation(dict(FID, m_nu=-0.01))
    pars = camb.CAMBparams()
    with pytest.raises(Exception, match="w \\+ wa > 0"):
        pars.set_dark_energy(w=-0.5, wa=0.6, dark_energy_model="ppf")
    pars.set_dark_energy(w=-0.5, wa=0.5, dark_energy_model="ppf")  # w0 + wa = 0: CAMB runs it
    assert _cosmo.domain_violation(dict(FID, w0=-0.5, wa=0.5)) is None
    assert math.isfinite(pars.DarkEnergy.wa)


def test_a_note_does_not_enter_the_forecast_verdict(monkeypatch, cache_dir, tmp_path):
    """A flagged direction that leaves cosmology within tolerance (a NOTE, verdict PASS) is
    kept with the check but is not a reason of the forecast's trust verdict."""
    from fishcast.pipeline import validity
    from fishcast.pipeline.cache import Cache
    from fishcast.pipeline.forecast import run_forecast
    from fishcast.survey import load_survey

    names, sig = ["w0", "A_IA"], np.array([0.1, 0.3])
    note = toy_check(names, np.diag(sig**2), _ia_nonlinear(np.array([-1.0, 1.72]), sig), Recorder())
    assert note.verdict == "PASS" and note.notes
    monkeypatch.setattr(validity, "gaussian_validity", lambda *a, **k: note)
    (tmp_path / "s.yaml").write_text(W0WA)
    fc = run_forecast(load_survey(tmp_path / "s.yaml"), cache=Cache(cache_dir))
    assert fc.extra["gaussian_validity"] is note
    assert not any("principal direction" in r for r in fc.trust_reasons)


def test_a_minus_side_sharing_the_plus_sides_transfer_functions_is_evaluated_with_it():
    """Points that differ only in sigma8 (and nuisances) share one Boltzmann run: the
    adaptive check evaluates such a -side together with its +side instead of inferring it
    (one CAMB batch, no extra transfer run); the other -sides are inferred."""
    names, sig = ["Omega_m", "sigma8", "A_IA"], np.array([0.01, 0.02, 0.3])
    fid = np.array([FID[n] for n in names])
    rec = Recorder()
    gv = toy_check(names, np.diag(sig**2), linear(fid, sig), rec, sides="adaptive", jacobian=np.diag(1 / sig))
    s8 = [j for j in range(3) if gv.dominant(j) == ["sigma8"]][0]
    om = [j for j in range(3) if gv.dominant(j) == ["Omega_m"]][0]
    assert gv.status[2 * s8:2 * s8 + 2] == ("evaluated", "evaluated")
    assert gv.status[2 * om:2 * om + 2] == ("evaluated", "inferred")
    assert rec.factories == 1 and len(rec.points) == 3
    runs = {_cosmo.transfer_key(_cosmo.full_params(p)) for p in rec.points}
    assert len(runs) == 2  # the two sigma8 points share the fiducial's transfer functions
    np.testing.assert_allclose(gv.delta_chi2, 1.0, rtol=1e-10)
