"""Conditioning, error stability, projection and Gaussian validity on matrices and models
with known answers.

References: the reparametrization law of Fisher matrices, F' = J^T F J, so sigma(c p) =
c sigma(p) and the DETF FoM of untouched parameters is unchanged (Coe 2009,
arXiv:0906.4123); inverses from numpy's LAPACK ``inv`` on a well-conditioned
parametrization; analytic Gram matrices of linear and product models.
"""

from __future__ import annotations


import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fishcast.derivatives import DerivativesConfig, analyse, plan_points, resolve_spec
from fishcast.diagnostics import (
    conditioning_report,
    delta_chi2,
    error_stability,
    format_report,
    principal_points,
    project_degenerate,
)
from fishcast.errors import DegenerateFisherError
from fishcast.io.diagnostics import read_diagnostics, write_diagnostics, write_report
from fishcast.io.sweeps import write_sweeps

NAMES = ["Omega_m", "Omega_b", "h", "n_s", "A_s", "w0", "wa"]
FID = np.array([0.32, 0.05, 0.67, 0.96, 2.1e-9, -1.0, 0.0])


def synthetic_gram(n_data=200, seed=1):
    """F = D C^-1 D^T for derivatives dS/dtheta = S * (correlated random response) / scale."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((len(NAMES), n_data))
    mix = np.eye(len(NAMES)) + 0.6 * rng.standard_normal((len(NAMES), len(NAMES)))
    resp = mix @ base
    scale = np.where(FID != 0, np.abs(FID), 1.0)
    D = resp / scale[:, None]
    return D @ D.T


def fom(cov, names):
    i, j = names.index("w0"), names.index("wa")
    c = cov[np.ix_([i, j], [i, j])]
    return 1.0 / np.sqrt(np.linalg.det(c))


def test_reparametrization_invariance():
    F = synthetic_gram()
    # p' = (..., 1e9 A_s, ...) and H0 = 100 h: J = d theta / d p' (old per new)
    jac = np.ones(len(NAMES))
    jac[NAMES.index("A_s")] = 1e-9
    jac[NAMES.index("h")] = 1e-2
    F2 = F * jac[:, None] * jac[None, :]
    names2 = list(NAMES)
    names2[NAMES.index("A_s")] = "A_s_1e9"
    names2[NAMES.index("h")] = "H0"
    r1 = conditioning_report(F, NAMES)
    r2 = conditioning_report(F2, names2)
    # reference: numpy's LAPACK inverse of the well-conditioned parametrization
    ref2 = np.linalg.inv(F2)
    ref1 = ref2 * jac[:, None] * jac[None, :]
    np.testing.assert_allclose(r2.marginalized_sigma, np.sqrt(np.diag(ref2)), rtol=1e-6)
    np.testing.assert_allclose(r1.marginalized_sigma, np.sqrt(np.diag(ref1)), rtol=1e-6)
    np.testing.assert_allclose(r2.marginalized_sigma * jac, r1.marginalized_sigma, rtol=1e-6)
    np.testing.assert_allclose(fom(r1.covariance, NAMES), fom(r2.covariance, names2), rtol=1e-6)
    assert r1.cond_F / r2.cond_F > 1e6  # the raw condition number only reflects the units
    np.testing.assert_allclose(r1.cond_R, r2.cond_R, rtol=1e-6)
    assert r1.cholesky_ok and r1.inversion_residual < 1e-14 * r1.cond_R
    assert r1.symmetry_error < 1e-15


def test_asymmetry_is_measured_and_symmetrized():
    F = synthetic_gram()
    jac = np.where(FID != 0, np.abs(FID), 1.0)  # relative parameters: a well-scaled F
    F = F * jac[:, None] * jac[None, :]
    E = np.zeros_like(F)
    E[0, 1] = 1e-7 * np.linalg.norm(F)
    r = conditioning_report(F + E, NAMES)
    # F - F^T holds +e and -e: Frobenius norm sqrt(2) e
    np.testing.assert_allclose(r.symmetry_error, np.sqrt(2) * 1e-7 * np.linalg.norm(F) / np.linalg.norm(F + E), rtol=1e-9)
    assert r.verdict in ("WARN", "FAIL") and "asymmetry" in r.reasons[0]


def product_model(x, which, vals):
    """s = [g(alpha * beta) on 30 elements, gamma * k on 30 others]."""
    a, b, c = (x if which == i else vals[i] for i in range(3))
    t = np.linspace(0.1, 2.0, 30)
    return np.concatenate([np.sin(a * b * t) + 2.0, c * np.cos(t)])


def product_fisher():
    vals = [0.8, 1.3, 0.5]
    names = ["alpha", "beta", "gamma"]
    cfg = DerivativesConfig()
    derivs, sweeps = [], []
    norm = lambda d: float(np.linalg.norm(d))  # noqa: E731
    for i, nm in enumerate(names):
        spec = resolve_spec(nm, vals[i], cfg)
        sig = {v: product_model(v, i, vals) for v in plan_points(nm, vals[i], spec)}
        sw = analyse(nm, vals[i], spec, sig, product_model(vals[i], i, vals), norm, cfg)
        sweeps.append(sw)
        derivs.append(sw.derivative)
    D = np.stack(derivs)
    return D @ D.T, names, sweeps


def test_degenerate_product_model_is_refused_naming_both():
    F, names, _ = product_fisher()
    with pytest.raises(DegenerateFisherError) as exc:
        conditioning_report(F, names)
    msg = str(exc.value)
    assert "alpha" in msg and "beta" in msg
    lam, weights = exc.value.directions[0]
    assert set(weights) == {"alpha", "beta"}
    np.testing.assert_allclose(abs(weights["alpha"]), np.sqrt(0.5), rtol=1e-3)
    report = conditioning_report(F, names, raise_on_degenerate=False)
    assert report.verdict == "FAIL" and report.covariance is None
    assert set(report.weak_directions[0][1]) == {"alpha", "beta"}


def test_project_degenerate_removes_and_records_the_direction():
    F, names, _ = product_fisher()
    proj = project_degenerate(F, names)
    assert len(proj.removed) == 1 and set(proj.removed[0]) == {"alpha", "beta"}
    # gamma's data are orthogonal to the others': its error is 1/sqrt(F_gg)
    np.testing.assert_allclose(proj.marginalized_sigma[2], 1 / np.sqrt(F[2, 2]), rtol=1e-8)
    # zero variance along the removed direction (in the correlation form)
    d = np.sqrt(np.diag(F))
    covR = proj.covariance * d[:, None] * d[None, :]
    v = np.array([proj.removed[0].get(n, 0.0) for n in names])
    assert np.linalg.norm(covR @ v) < 1e-8
    assert "conditional" in proj.note
    explicit = project_degenerate(F, names, [{"alpha": 1.0, "beta": -1.0}])
    np.testing.assert_allclose(explicit.marginalized_sigma, proj.marginalized_sigma, rtol=1e-5)


def cubic_sweep(stencil="3-point"):
    """f(x) = c x + q x^3 at x = 1: D3(h) = c + 3q + q h^2 exactly (f''' = 6q)."""
    t = np.linspace(0.0, 1.0, 20)
    c, q = 1.0 + t, 0.5 * np.cos(3 * t)
    model = lambda x: c * x + q * x**3  # noqa: E731
    # a 4-rung window (the adaptive mode's earlier start): neighbouring rungs on both sides
    cfg = DerivativesConfig(stencil=stencil, h_max=0.4, start_rungs="window")
    spec = resolve_spec("p", 1.0, cfg)
    sig = {v: model(v) for v in plan_points("p", 1.0, spec)}
    sw = analyse("p", 1.0, spec, sig, model(1.0), lambda d: float(np.linalg.norm(d)), cfg)
    return sw, c, q


def test_error_stability_rung_changes_match_analytic():
    sw, c, q = cubic_sweep()
    gram = lambda D: D.reshape(len(D), -1) @ D.reshape(len(D), -1).T  # noqa: E731
    res = error_stability([sw], gram, thresholds={"n_noise": 0})
    # one parameter, identity metric: sigma = 1/|D|
    def D(h):
        return c + 3 * q + q * h**2
    h = sw.steps
    k = sw.chosen
    sig0 = 1 / np.linalg.norm(D(h[k]))
    np.testing.assert_allclose(res.sigma[0], sig0, rtol=1e-9)
    expect = max(abs(np.linalg.norm(D(h[k])) / np.linalg.norm(D(h[j])) - 1) for j in (k - 1, k + 1))
    np.testing.assert_allclose(res.rung_change[0], expect, rtol=1e-6)
    assert res.cases == ("p up", "p down")


def test_error_stability_noise_is_bounded_by_spread_and_seeded():
    sw, c, q = cubic_sweep()
    gram = lambda D: D.reshape(len(D), -1) @ D.reshape(len(D), -1).T  # noqa: E731
    r1 = error_stability([sw], gram, thresholds={"n_noise": 6, "seed": 3})
    r2 = error_stability([sw], gram, thresholds={"n_noise": 6, "seed": 3})
    np.testing.assert_array_equal(r1.sigma_cases, r2.sigma_cases)
    s = sw.spread
    assert 0 < r1.noise_change[0] <= s / (1 - s) * (1 + 1e-9)  # |D|/|D+n| with |n| = s|D|


def test_error_stability_on_degenerate_free_multiparameter_linear_model():
    F, names, sweeps = product_fisher()
    gram = lambda D: D @ D.T  # noqa: E731
    # with a prior on alpha the product model is invertible; errors are stable
    prior = np.diag([1e4, 0.0, 0.0])
    res = error_stability(sweeps, gram, prior=prior)
    assert res.verdict == "PASS"
    assert np.all(res.max_change < 0.01)


def test_gaussian_validity_linear_model_gives_one():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((40, 3))
    names = ["x", "y", "z"]
    fid = np.array([0.3, -1.0, 2.0])
    cov = np.linalg.inv(A.T @ A)
    pts = principal_points(cov, fid, names)
    assert pts.points.shape == (6, 3) and np.all(pts.inside)
    norm = lambda d: float(np.linalg.norm(d))  # noqa: E731
    res = delta_chi2([A @ p for p in pts.points], A @ fid, norm, points=pts)
    np.testing.assert_allclose(res.delta_chi2, 1.0, rtol=1e-10)
    assert res.verdict == "PASS" and not res.flagged.any()
    res2 = delta_chi2([A @ (fid + 2 * (p - fid)) for p in pts.points], A @ fid, norm, n_sigma=2)
    np.testing.assert_allclose(res2.delta_chi2, 4.0, rtol=1e-10)


def test_gaussian_validity_flags_a_nonlinear_model():
    names = ["x", "y"]
    fid = np.array([0.1, 0.2])
    sigma_d = 0.01

    def s(p):  # cubic in the parameters: far from linear on the scale of the errors
        return np.array([p[0] ** 3, p[1] ** 3, p[0] * p[1] ** 2]) / sigma_d

    J = np.array([[3 * fid[0] ** 2, 0], [0, 3 * fid[1] ** 2], [fid[1] ** 2, 2 * fid[0] * fid[1]]]) / sigma_d
    cov = np.linalg.inv(J.T @ J)
    pts = principal_points(cov, dict(zip(names, fid)), names)
    res = delta_chi2([s(p) for p in pts.points], s(fid), lambda d: float(np.linalg.norm(d)), points=pts)
    assert res.flagged.any() and res.verdict == "WARN"
    assert "Delta chi^2" in res.reasons[0] and ("x" in res.reasons[0] or "y" in res.reasons[0])
    assert np.max(np.abs(res.delta_chi2 - 1)) > 1.0


def test_principal_points_respect_domains():
    cov = np.diag([0.1**2, 0.05**2])
    pts = principal_points(cov, {"m_nu": 0.06, "h": 0.67}, ["m_nu", "h"])
    # m_nu - 0.1 < 0 is outside m_nu >= 0
    below = pts.points[:, 0] < 0
    assert below.any()
    np.testing.assert_array_equal(pts.inside, ~below)


def test_hdf5_round_trip_report_and_cli(tmp_path):
    F = synthetic_gram()
    cond = conditioning_report(F, NAMES, units=[""] * 7)
    sw, _, _ = cubic_sweep("5-point")
    gram = lambda D: D.reshape(len(D), -1) @ D.reshape(len(D), -1).T  # noqa: E731
    stab = error_stability([sw], gram)
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as h:
        write_sweeps(h.create_group("derivatives"), [sw], DerivativesConfig())
        write_diagnostics(h.create_group("diagnostics"), conditioning=cond)
        write_report(h["diagnostics"].create_group("stability"), stab)  # any group name: found by type
    with h5py.File(path, "r") as h:
        back = read_diagnostics(h["diagnostics"])
        assert h["diagnostics/conditioning"].attrs["threshold_cond_warn"] == 1e10
    c2 = back["conditioning"]
    np.testing.assert_array_equal(c2.covariance, cond.covariance)
    assert c2.weak_directions == cond.weak_directions and c2.thresholds == cond.thresholds
    np.testing.assert_array_equal(back["error_stability"].sigma_cases, stab.sigma_cases)
    text = format_report([sw], c2, back["error_stability"])
    assert "cond(R)" in text and "unit-dependent" in text and "p " in text

    from fishcast.cli.main import cli

    out = CliRunner().invoke(cli, ["stability", str(path)])
    assert out.exit_code == 0, out.output
    assert "cond(R)" in out.output and "PASS" in out.output
    pytest.importorskip("matplotlib")
    pdf = tmp_path / "steps.pdf"
    out = CliRunner().invoke(cli, ["stability", str(path), "--plot", str(pdf)])
    assert out.exit_code == 0, out.output
    assert pdf.stat().st_size > 1000
    bad = CliRunner().invoke(cli, ["stability", str(tmp_path / "missing.h5")])
    assert bad.exit_code == 2


def rotated(evals, seed=5):
    """A correlation-like matrix with the given eigenvalues (random orthogonal rotation)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(evals), len(evals))))
    return q @ np.diag(evals) @ q.T


def test_condition_thresholds_warn_and_refuse():
    names = ["a", "b", "c"]
    r = conditioning_report(rotated([1.0, 1.0, 1e-11]), names)
    np.testing.assert_allclose(r.cond_R, 1e11, rtol=0.5)  # D-rescaling changes it mildly
    assert r.verdict == "WARN" and any("cond(R)" in x for x in r.reasons)
    assert r.thresholds.cond_warn == 1e10 and r.thresholds.cond_refuse == 1e15
    strict = conditioning_report(rotated([1.0, 1.0, 1e-11]), names, {"cond_warn": 1e12})
    assert not any("cond(R)" in x for x in strict.reasons)
    # the inversion residual is measured, ~cond(R) * 2.2e-16
    assert 1e-8 < strict.inversion_residual < 1e-2
    with pytest.raises(DegenerateFisherError, match="cond"):
        conditioning_report(rotated([1.0, 1.0, 1e-12]), names, {"cond_refuse": 1e11})
