"""Fisher matrices from simulations (issue 13): the estimators against a linear Gaussian model
whose Fisher matrix is known analytically (F = D^T C^-1 D, Tegmark, Taylor & Heavens 1997),
the Soen & Sun (2021) closed-form variances against repeated draws, the Hartlap factor and
the reshuffling against direct computation, the Sellentin-Heavens factor against the Fisher
information of scipy's multivariate t (Monte Carlo), the SIMS file and its errors, the
output on the file contract, and `fishcast mock` + `simfisher` converging to the analytic
Fisher of the two-tracer toy recipe and of a small weak-lensing forecast."""

from __future__ import annotations

import pathlib
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from fishcast.cli.main import cli
from fishcast.errors import InputError
from fishcast.probes.base import CosmologyRequirements, Probe
from fishcast.simfisher import (
    SimFisherConfig,
    Simulations,
    estimate,
    geometric_mean,
    marginalized_sigma,
    precision_factor,
)

ROOT = pathlib.Path(__file__).parent.parent
TOY = ROOT / "recipes" / "two-tracer-toy.yaml"


# ---------------------------------------------------------------------------------------
# a linear Gaussian model with a known Fisher matrix
# ---------------------------------------------------------------------------------------


class Linear:
    """x ~ N(theta D, C): d-long data, p parameters; F = D C^-1 D^T exactly."""

    def __init__(self, d=50, p=3, scale=2.0, step=0.1, seed=12345):
        rng = np.random.default_rng(seed)
        A = rng.standard_normal((d, d)) / np.sqrt(d)
        self.C = A @ A.T + 0.5 * np.eye(d)
        self.L = np.linalg.cholesky(self.C)
        self.D = scale * rng.standard_normal((p, d))
        self.steps = np.full(p, step)
        self.F = self.D @ np.linalg.solve(self.C, self.D.T)
        self.names = tuple(f"t{i}" for i in range(p))
        self.d, self.p = d, p

    def fiducial(self, rng, n):
        return rng.standard_normal((n, self.d)) @ self.L.T

    def derivative_sims(self, rng, n):
        shift = self.steps[:, None, None] * self.D[:, None, :]
        minus = -shift + rng.standard_normal((self.p, n, self.d)) @ self.L.T
        plus = shift + rng.standard_normal((self.p, n, self.d)) @ self.L.T
        return minus, plus

    def sims(self, seed, n_s, n_d):
        rng = np.random.default_rng(seed)
        fid = self.fiducial(rng, n_s)
        minus, plus = self.derivative_sims(rng, n_d)
        return Simulations(self.names, np.zeros(self.p), self.steps, fid, minus, plus)


@pytest.fixture(scope="module")
def linear():
    return Linear()


@pytest.fixture(scope="module")
def many_seeds(linear):
    """d = 50, p = 3, N_d = 100 derivative simulations per side, N_s = 1000: 24 seeds."""
    truth = marginalized_sigma(linear.F)
    out = []
    for seed in range(24):
        r = estimate(linear.sims(seed, 1000, 100), SimFisherConfig(reshuffles=10, n_subsets=3))
        out.append([r.sigma(k) / truth for k in ("standard", "compressed", "combined")])
    return np.array(out)  # (seeds, estimator, p)


def test_standard_errors_too_small_compressed_too_large_on_average(many_seeds):
    mean = many_seeds.mean(axis=0)
    assert np.all(mean[0] < 1.0), mean[0]  # standard: biased high in information
    assert np.all(mean[1] > 1.0), mean[1]  # compressed: biased low
    assert np.all(mean[1] > mean[0])


def test_combined_errors_within_5_percent_of_the_truth(many_seeds):
    mean = many_seeds.mean(axis=0)
    assert np.all(np.abs(mean[2] - 1.0) < 0.05), mean[2]
    # and closer than either of the two it combines
    assert np.all(np.abs(mean[2] - 1) < np.abs(mean[0] - 1)) or np.all(np.abs(mean[2] - 1) < np.abs(mean[1] - 1))


def test_estimators_converge_to_the_truth_with_many_simulations(linear):
    r = estimate(linear.sims(7, 6000, 6000), SimFisherConfig(reshuffles=4))
    truth = marginalized_sigma(linear.F)
    for k in ("standard", "compressed", "combined", "derivative_form", "score_form"):
        assert np.allclose(r.sigma(k), truth, rtol=0.03), k
    assert r.verdict == "PASS"


# ---------------------------------------------------------------------------------------
# direct computation: Hartlap, Sellentin-Heavens, reshuffling, geometric mean
# ---------------------------------------------------------------------------------------


def test_standard_estimator_is_the_hartlap_corrected_inverse_sample_covariance(linear):
    sims = linear.sims(3, 300, 40)
    r = estimate(sims, SimFisherConfig(reshuffles=3))
    n, d = 300, linear.d
    h = (n - d - 2) / (n - 1)  # Hartlap, Simon & Schneider 2007, eq. 17
    Dhat = ((sims.plus - sims.minus) / (2 * sims.steps[:, None, None])).mean(axis=1)
    direct = h * Dhat @ np.linalg.inv(np.cov(sims.fiducial.T)) @ Dhat.T
    assert np.allclose(r.standard, direct, rtol=1e-9)
    assert r.precision_factor == pytest.approx(h)
    r2 = estimate(sims, SimFisherConfig(reshuffles=3, likelihood="sellentin-heavens"))
    sh = n * (n - d) / ((n + 2) * (n - 1))
    assert np.allclose(r2.standard, direct * sh / h, rtol=1e-9)


def test_sellentin_heavens_factor_is_the_fisher_information_of_the_t_likelihood():
    """The SH likelihood [1 + chi^2/(N-1)]^(-N/2) with sample covariance S is scipy's
    multivariate t with df = N - d and shape S (N-1)/(N-d); its Fisher information about the
    location, E[score score^T] with the score from finite differences of scipy's logpdf
    (Monte Carlo), must equal precision_factor(N, d, 'sellentin-heavens') S^-1."""
    from scipy.stats import multivariate_t

    N, d = 12, 3
    S = np.array([[1.0, 0.3, 0.1], [0.3, 2.0, -0.2], [0.1, -0.2, 0.5]])
    dist = multivariate_t(loc=np.zeros(d), shape=S * (N - 1) / (N - d), df=N - d)
    x = dist.rvs(size=200_000, random_state=np.random.default_rng(5))
    eps = 1e-5
    score = np.empty_like(x)
    for a in range(d):
        e = np.zeros(d)
        e[a] = eps
        up = multivariate_t(loc=e, shape=dist.shape, df=N - d).logpdf(x)
        dn = multivariate_t(loc=-e, shape=dist.shape, df=N - d).logpdf(x)
        score[:, a] = (up - dn) / (2 * eps)
    info = score.T @ score / len(x)
    expected = precision_factor(N, d, "sellentin-heavens") * np.linalg.inv(S)
    assert np.allclose(info, expected, rtol=0.03, atol=0.02 * np.abs(expected).max())
    hartlap = precision_factor(N, d, "hartlap") * np.linalg.inv(S)
    assert not np.allclose(info, hartlap, rtol=0.03)  # the two factors differ by 10% here


def test_reshuffled_compressed_estimator_equals_direct_computation(linear):
    sims = linear.sims(4, 400, 30)
    cfg = SimFisherConfig(reshuffles=5, split_fraction=0.4, seed=11)
    r = estimate(sims, cfg)
    assert r.split_indices.shape == (5, 12)  # 40% of 30
    Psi = r.precision_factor * np.linalg.inv(np.cov(sims.fiducial.T))
    per_sim = (sims.plus - sims.minus) / (2 * sims.steps[:, None, None])
    mats = []
    for idx in r.split_indices:
        rest = np.setdiff1d(np.arange(30), idx)
        Dc, Df = per_sim[:, idx].mean(axis=1), per_sim[:, rest].mean(axis=1)
        M = Df @ Psi @ Dc.T  # derivatives of the compressed summaries t = Dc Psi x
        St = Dc @ Psi @ Dc.T  # their covariance
        mats.append(M @ np.linalg.inv(St) @ M.T)  # Coulton & Wandelt 2023, eq. 10
    assert np.allclose(r.compressed_reshuffles, mats, rtol=1e-8)
    assert np.allclose(r.compressed, np.mean(mats, axis=0), rtol=1e-8)
    # the splits differ between reshuffles, and the seed reproduces them
    assert len({tuple(i) for i in r.split_indices}) == 5
    assert np.array_equal(estimate(sims, cfg).split_indices, r.split_indices)


def test_geometric_mean():
    rng = np.random.default_rng(0)
    A = np.diag([1.0, 4.0, 9.0])
    B = np.diag([4.0, 1.0, 16.0])
    assert np.allclose(geometric_mean(A, B), np.diag([2.0, 2.0, 12.0]))
    X, Y = rng.standard_normal((2, 4, 4))
    A, B = X @ X.T + np.eye(4), Y @ Y.T + np.eye(4)
    G = geometric_mean(A, B)
    assert np.allclose(G @ np.linalg.solve(A, G), B)  # the Riccati equation G A^-1 G = B
    assert np.allclose(G, geometric_mean(B, A))
    assert np.allclose(np.linalg.inv(G), geometric_mean(np.linalg.inv(A), np.linalg.inv(B)))


# ---------------------------------------------------------------------------------------
# Soen & Sun: closed-form variances against repeated draws
# ---------------------------------------------------------------------------------------


def test_soen_sun_closed_form_variances_match_repeated_draws():
    model = Linear(d=10, p=2, scale=1.0, step=0.2, seed=3)
    rng = np.random.default_rng(9)
    fixed_fid = model.fiducial(rng, 2000)
    fixed_minus, fixed_plus = model.derivative_sims(rng, 40)
    cfg = SimFisherConfig(reshuffles=1, n_subsets=2)
    # score form: the fiducial simulations redrawn, the derivative simulations kept
    score, score_var, score_var_emp = [], [], []
    for k in range(300):
        fid = model.fiducial(np.random.default_rng(1000 + k), 2000)
        r = estimate(Simulations(model.names, np.zeros(2), model.steps, fid, fixed_minus, fixed_plus), cfg)
        score.append(r.score_form)
        score_var.append(r.score_variance_gaussian)
        score_var_emp.append(r.score_variance_empirical)
    emp = np.var(score, axis=0, ddof=1)
    assert np.allclose(np.mean(score_var, axis=0), emp, rtol=0.2), (np.mean(score_var, axis=0), emp)
    assert np.allclose(np.mean(score_var_emp, axis=0), emp, rtol=0.2)
    # derivative form: the derivative simulations redrawn, the fiducial ones kept
    der, der_var = [], []
    for k in range(300):
        minus, plus = model.derivative_sims(np.random.default_rng(5000 + k), 40)
        r = estimate(Simulations(model.names, np.zeros(2), model.steps, fixed_fid, minus, plus), cfg)
        der.append(r.derivative_form)
        der_var.append(r.derivative_variance)
    emp = np.var(der, axis=0, ddof=1)
    assert np.allclose(np.mean(der_var, axis=0), emp, rtol=0.2), (np.mean(der_var, axis=0), emp)
    # the derivative form is unbiased for the (fixed-covariance) standard value: its mean
    # over the draws is within 3 standard errors of the noiseless D^T Psi D
    Psi = precision_factor(2000, 10) * np.linalg.inv(np.cov(fixed_fid.T))
    noiseless = model.D @ Psi @ model.D.T
    se = np.sqrt(emp / len(der))
    assert np.all(np.abs(np.mean(der, axis=0) - noiseless) < 3 * se + 1e-12)


# ---------------------------------------------------------------------------------------
# convergence and verdict
# ---------------------------------------------------------------------------------------


def test_verdict_fails_and_says_how_many_simulations_are_needed(linear):
    cfg = SimFisherConfig(reshuffles=10)
    r = estimate(linear.sims(1, 1000, 40), cfg)
    assert r.verdict == "FAIL"
    assert "more simulations are needed" in r.message and str(r.needed_derivative) in r.message
    assert r.needed_derivative > 40
    conv = r.convergence
    assert conv.n_derivative[-1] == 40 and conv.sigma["standard"].shape == (len(conv.n_derivative), 3)
    # with the number it asks for, the bracket is within (about) the tolerance
    r2 = estimate(linear.sims(2, 1000, r.needed_derivative), cfg)
    assert r2.verdict in ("PASS", "WARN"), (r2.verdict, r2.message)
    assert np.max(r2.spread) < 1.5 * cfg.tolerance


def test_bad_options_are_input_errors(linear):
    sims = linear.sims(0, 200, 10)
    for cfg in (SimFisherConfig(split_fraction=1.0), SimFisherConfig(reshuffles=0),
                SimFisherConfig(likelihood="gauss"), SimFisherConfig(tolerance=0)):
        with pytest.raises(InputError):
            estimate(sims, cfg)


# ---------------------------------------------------------------------------------------
# the SIMS file, the CLI and the file contract
# ---------------------------------------------------------------------------------------


def write_sims(path, sims, **edit):
    """The few lines of numpy + h5py of the README."""
    with h5py.File(path, "w") as f:
        f["fiducial"] = edit.get("fiducial", sims.fiducial)
        f["derivatives"] = edit.get("derivatives", np.stack([sims.minus, sims.plus], axis=1))
        f["derivatives"].attrs["seed_matched"] = False
        f["parameters/names"] = np.array(edit.get("names", ["Omega_m", "sigma8", "w0"]), dtype="S")
        f["parameters/fiducial"] = edit.get("fiducial_values", [0.3, 0.8, -1.0])
        f["parameters/step"] = edit.get("step", sims.steps)


@pytest.fixture(scope="module")
def simfisher_out(tmp_path_factory, linear):
    d = tmp_path_factory.mktemp("simfisher")
    sims = linear.sims(21, 600, 400)
    write_sims(d / "sims.h5", sims)
    res = CliRunner().invoke(cli, ["simfisher", str(d / "sims.h5"), "-o", str(d / "out.h5"), "--reshuffles", "8",
                                   "--allow-unconverged"])
    assert res.exit_code == 0, res.output
    return d, res.output


def test_simfisher_output_follows_the_file_contract(simfisher_out):
    d, output = simfisher_out
    for word in ("standard", "compressed", "combined", "derivative_form", "simfisher"):
        assert word in output
    with h5py.File(d / "out.h5", "r") as f:
        assert "combined" in f.attrs["fisher_estimator"] and "combined" in f["fisher"].attrs["estimator"]
        assert np.array_equal(f["fisher/matrix"][()], f["simulations/combined/matrix"][()])
        assert [s.decode() for s in f["parameters/names"][()]] == ["Omega_m", "sigma8", "w0"]
        assert np.allclose(f["constraints/marginalized_sigma"][()],
                           marginalized_sigma(f["simulations/combined/matrix"][()]))
        for est in ("standard", "compressed", "combined", "score_form", "derivative_form"):
            assert f[f"simulations/{est}/matrix"].shape == (3, 3)
        for key in ("n_derivative", "standard_sigma", "compressed_sigma", "combined_sigma", "derivative_form_sigma",
                    "n_fiducial", "score_form_sigma", "spread"):
            assert key in f["simulations/convergence"], key
        s = f["simulations"].attrs
        assert s["verdict"] in ("PASS", "WARN", "FAIL") and s["n_fiducial"] == 600 and s["n_derivative"] == 400
        assert f.attrs["trust"] == {"PASS": "ok", "WARN": "warn", "FAIL": "fail"}[s["verdict"]]


def test_every_command_that_reads_a_forecast_reads_it(simfisher_out, tmp_path):
    d, _ = simfisher_out
    out = str(d / "out.h5")
    run = CliRunner().invoke
    res = run(cli, ["show", out])
    assert res.exit_code == 0 and "Omega_m" in res.output, res.output
    res = run(cli, ["compare", out, out])
    assert res.exit_code == 0, res.output
    res = run(cli, ["combine", out, out, "-o", str(tmp_path / "c.h5")])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "c.h5", "r") as f, h5py.File(out, "r") as g:
        assert np.allclose(f["fisher/matrix"][()], 2 * g["fisher/matrix"][()])
    res = run(cli, ["prior", out, "--gaussian", "w0=0.5", "-o", str(tmp_path / "p.h5")])
    assert res.exit_code == 0, res.output
    res = run(cli, ["plot", out, "-o", str(tmp_path / "tri.png")])
    assert res.exit_code == 0 and (tmp_path / "tri.png").stat().st_size > 0, res.output
    res = run(cli, ["export", out, "--to", "getdist", "-o", str(tmp_path / "gd")])
    assert res.exit_code == 0 and (tmp_path / "gd.covmat").exists(), res.output
    res = run(cli, ["convergence", out, "--plot", str(tmp_path / "conv.png")])
    assert res.exit_code == 0 and (tmp_path / "conv.png").stat().st_size > 0, res.output
    assert "N_d" in res.output and "simfisher" in res.output


def test_convergence_refuses_a_file_without_simulations(simfisher_out, tmp_path):
    d, _ = simfisher_out
    res = CliRunner().invoke(cli, ["combine", str(d / "out.h5"), str(d / "out.h5"), "-o", str(tmp_path / "c.h5")])
    assert res.exit_code == 0
    res = CliRunner().invoke(cli, ["convergence", str(tmp_path / "c.h5")])
    assert res.exit_code == 2 and "no /simulations group" in res.output, res.output


def test_seed_matching_is_recorded(tmp_path, linear):
    sims = linear.sims(5, 300, 20)
    write_sims(tmp_path / "s.h5", sims)
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f["derivatives"].attrs["seed_matched"] = True
    res = CliRunner().invoke(cli, ["simfisher", str(tmp_path / "s.h5"), "-o", str(tmp_path / "o.h5"),
                                   "--allow-unconverged"])
    assert res.exit_code == 0 and "seed-matched" in res.output, res.output
    with h5py.File(tmp_path / "o.h5", "r") as f:
        assert bool(f["simulations"].attrs["seed_matched"]) is True


def test_fail_verdict_exits_3_and_writes_the_file(tmp_path, linear):
    write_sims(tmp_path / "s.h5", linear.sims(0, 600, 12))
    res = CliRunner().invoke(cli, ["simfisher", str(tmp_path / "s.h5"), "-o", str(tmp_path / "o.h5")])
    assert res.exit_code == 3, res.output
    assert "more simulations are needed" in res.output and (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("edit, words", [
    ({"fiducial": np.zeros((5, 50))}, ["too few fiducial simulations", "N_s > d + 2"]),
    ({"derivatives": np.zeros((3, 2, 3, 50))}, ["at least 4"]),
    ({"derivatives": np.zeros((2, 2, 40, 50))}, ["/derivatives", "(p=3"]),
    ({"derivatives": np.zeros((3, 2, 40, 49))}, ["data length 49"]),
    ({"names": ["a", "a", "b"]}, ["duplicates"]),
    ({"step": [0.1, 0.0, 0.1]}, ["step", "sigma8"]),
    ({"fiducial_values": [0.3, 0.8]}, ["/parameters/fiducial"]),
    ({"fiducial": np.zeros((200, 2)), "derivatives": np.zeros((3, 2, 40, 2))}, ["shorter than the number of parameters"]),
    ({"fiducial": np.ones((200, 50))}, ["zero variance"]),
])
def test_bad_sims_files_exit_2_with_a_clear_message(tmp_path, linear, edit, words):
    sims = linear.sims(0, 200, 40)
    write_sims(tmp_path / "bad.h5", sims, **edit)
    res = CliRunner().invoke(cli, ["simfisher", str(tmp_path / "bad.h5"), "-o", str(tmp_path / "o.h5")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and str(tmp_path / "bad.h5") in res.output
    for w in words:
        assert w in res.output, (w, res.output)
    assert not (tmp_path / "o.h5").exists()


def test_nan_and_missing_datasets_and_non_hdf5(tmp_path, linear):
    sims = linear.sims(0, 200, 40)
    fid = sims.fiducial.copy()
    fid[17, 3] = np.nan
    write_sims(tmp_path / "nan.h5", sims, fiducial=fid)
    with h5py.File(tmp_path / "missing.h5", "w") as f:
        f["fiducial"] = sims.fiducial
    (tmp_path / "text.h5").write_text("not hdf5")
    for name, word in (("nan.h5", "NaN or inf"), ("missing.h5", "no /derivatives"), ("text.h5", "not an HDF5 file"),
                       ("absent.h5", "no such file")):
        res = CliRunner().invoke(cli, ["simfisher", str(tmp_path / name), "-o", str(tmp_path / "o.h5")])
        assert res.exit_code == 2 and word in res.output, (name, res.output)
    assert "simulation 17, element 3" in CliRunner().invoke(
        cli, ["simfisher", str(tmp_path / "nan.h5"), "-o", str(tmp_path / "o.h5")]).output


def test_an_existing_output_is_left_untouched_on_bad_input(tmp_path, linear):
    (tmp_path / "o.h5").write_bytes(b"keep me")
    write_sims(tmp_path / "bad.h5", linear.sims(0, 200, 40), fiducial=np.zeros((5, 50)))
    res = CliRunner().invoke(cli, ["simfisher", str(tmp_path / "bad.h5"), "-o", str(tmp_path / "o.h5")])
    assert res.exit_code == 2
    assert (tmp_path / "o.h5").read_bytes() == b"keep me"


# ---------------------------------------------------------------------------------------
# mock: the Gaussian data vector of a forecast
# ---------------------------------------------------------------------------------------


def test_wick_covariance_of_spectra_gives_the_trace_form():
    """Mean-term Fisher of the distinct entries of Cb_hat with the Wick covariance equals
    sum w/2 Tr[Cb^-1 dC_a Cb^-1 dC_b] (Carron 2013), evaluated here by its definition."""
    from fishcast.mock import spectra_covariance, vech_indices

    rng = np.random.default_rng(2)
    M, n, p = 4, 3, 2
    X = rng.standard_normal((M, n, n))
    Cb = X @ np.swapaxes(X, 1, 2) + np.eye(n)
    dC = rng.standard_normal((p, M, n, n))
    dC = dC + np.swapaxes(dC, -1, -2)
    w = rng.uniform(5, 50, M)
    i, j = vech_indices(n)
    cov = spectra_covariance(Cb, w)
    v = dC[:, :, i, j]
    F = np.einsum("amk,mkl,bml->ab", v, np.linalg.inv(cov), v)
    Ci = np.linalg.inv(Cb)
    trace = np.array([[sum(w[m] / 2 * np.trace(Ci[m] @ dC[a, m] @ Ci[m] @ dC[b, m]) for m in range(M))
                       for b in range(p)] for a in range(p)])
    assert np.allclose(F, trace, rtol=1e-10)


def _within(path_sf, rtol):
    with h5py.File(path_sf, "r") as f:
        comb = f["simulations/combined/marginalized_sigma"][()]
        ref = f["simulations/reference/marginalized_sigma"][()]
    assert np.allclose(comb, ref, rtol=rtol), (comb, ref)


@pytest.fixture(scope="module")
def toy_forecast(tmp_path_factory, cache_dir):
    d = tmp_path_factory.mktemp("toy")
    res = CliRunner().invoke(cli, ["run", str(TOY), "-o", str(d / "toy.h5"), "--cache-dir", str(cache_dir), "-q",
                                   "--set", "diagnostics.gaussian_check=false"])
    assert res.exit_code == 0, res.output
    return d


def test_mock_and_simfisher_converge_to_the_two_tracer_toy_forecast(toy_forecast, cache_dir):
    d = toy_forecast
    run = CliRunner().invoke
    res = run(cli, ["mock", str(d / "toy.h5"), "--n-sims", "20000", "--n-deriv", "4000", "--seed", "3",
                    "-o", str(d / "sims.h5"), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    with h5py.File(d / "sims.h5", "r") as f, h5py.File(d / "toy.h5", "r") as g:
        assert f["fiducial"].shape == (20000, 3)  # C_AA, C_AB, C_BB of one mode
        assert f["derivatives"].shape == (2, 2, 4000, 3)
        # the reference is the forecast's data Fisher (no priors in this recipe)
        assert np.allclose(f["reference/fisher"][()], g["fisher/probes/counts_in_cells/matrix"][()], rtol=1e-12)
    res = run(cli, ["simfisher", str(d / "sims.h5"), "-o", str(d / "sf.h5")])
    assert res.exit_code == 0, res.output
    _within(d / "sf.h5", 0.05)
    with h5py.File(d / "sf.h5", "r") as f, h5py.File(d / "toy.h5", "r") as g:
        # the hand calculation of the recipe (test_multitracer_run) -> the forecast -> the mocks
        assert np.allclose(f["constraints/marginalized_sigma"][()], g["constraints/marginalized_sigma"][()], rtol=0.05)


def test_mock_refuses_a_forecast_it_cannot_reproduce(toy_forecast, cache_dir, tmp_path):
    import shutil

    bad = tmp_path / "toy.h5"
    shutil.copy(toy_forecast / "toy.h5", bad)
    with h5py.File(bad, "a") as f:
        f["fisher/probes/counts_in_cells/matrix"][0, 0] *= 1.01
    res = CliRunner().invoke(cli, ["mock", str(bad), "--n-sims", "10", "-o", str(tmp_path / "s.h5"),
                                   "--cache-dir", str(cache_dir)])
    assert res.exit_code == 2 and "does not reproduce" in res.output, res.output
    assert not (tmp_path / "s.h5").exists()
    res = CliRunner().invoke(cli, ["mock", str(tmp_path / "nothere.h5"), "--n-sims", "10", "-o", str(tmp_path / "s.h5")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_seed_matched_mocks_have_noiseless_derivatives(toy_forecast, cache_dir):
    from fishcast.mock import draw, model_from_forecast
    from fishcast.pipeline.cache import Cache

    model = model_from_forecast(toy_forecast / "toy.h5", Cache(cache_dir))
    sims = draw(model, 50, seed=1, n_deriv=20, seed_matched=True)
    per_sim = (sims.plus - sims.minus) / (2 * sims.steps[:, None, None])
    assert np.allclose(per_sim, model.derivatives[:, None, :], rtol=1e-9, atol=1e-12 * np.abs(model.derivatives).max())
    assert np.array_equal(sims.plus[0] - model.steps[0] * model.derivatives[0], sims.fiducial[:20])
    with pytest.raises(InputError):
        draw(model, 10, seed=1, n_deriv=20, seed_matched=True)


WL = textwrap.dedent("""\
    name: tiny-wl
    cosmology:
      nonlinear_model: takahashi
      accuracy: {k_max: 10, n_k: 200, n_z: 60}
    parameters:
      fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.815583, A_IA: 1.72, eta_IA: -0.41}
      free: [Omega_m, sigma8, A_IA]
      fixed: [h]
    derivatives: {mode: fixed}
    diagnostics: {gaussian_check: false}
    probes:
      weak_lensing:
        f_sky: 0.3636
        ell: {min: 10, max: 1500, n_bands: 8}
        n_gal: 30
        shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
        nz: {type: smail, z0: 0.6363961031, alpha: 2.0, beta: 1.5}
        bins: {type: equipopulated, n_bins: 2, z_min: 0.001, z_max: 2.5}
        photoz: {c_b: 1.0, z_b: 0.0, sigma_b: 0.05, c_o: 1.0, z_o: 0.1, sigma_o: 0.05, f_out: 0.1}
        intrinsic_alignment: {model: nla}
        integration: {z_max: 3.0, n_z: 121}
    """)


def test_mock_and_simfisher_converge_to_a_small_weak_lensing_forecast(tmp_path, cache_dir):
    (tmp_path / "wl.yaml").write_text(WL)
    run = CliRunner().invoke
    # --set is recorded in the file and applied again when the mock rebuilds the survey
    res = run(cli, ["run", str(tmp_path / "wl.yaml"), "-o", str(tmp_path / "wl.h5"), "--cache-dir", str(cache_dir),
                    "-q", "--set", "probes.weak_lensing.n_gal=20"])
    assert res.exit_code == 0, res.output
    res = run(cli, ["mock", str(tmp_path / "wl.h5"), "--n-sims", "8000", "--n-deriv", "4000", "--seed", "4",
                    "-o", str(tmp_path / "sims.h5"), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "sims.h5", "r") as f:
        assert f["fiducial"].shape == (8000, 8 * 3)  # 8 bands x 3 distinct (i <= j) bin pairs
    res = run(cli, ["simfisher", str(tmp_path / "sims.h5"), "-o", str(tmp_path / "sf.h5")])
    assert res.exit_code == 0, res.output
    _within(tmp_path / "sf.h5", 0.05)


# ---------------------------------------------------------------------------------------
# a probe without a known trace form: the generic form of its Fisher metric
# ---------------------------------------------------------------------------------------


def test_trace_and_metric_forms_reproduce_the_probe_metric():
    """Both Gaussian forms of the weak-lensing probe (built from YAML, no CAMB) give exactly its
    Fisher matrix gram(d_a, d_b) for random derivatives around a random fiducial C_ell."""
    from fishcast.mock import metric_form, spectra_covariance, trace_form, vech_indices
    from fishcast.survey import survey_from_text

    probe = survey_from_text(WL, "wl.yaml", ROOT).probes[0]
    rng = np.random.default_rng(8)
    X = rng.standard_normal((8, 2, 2)) * 1e-5
    sig = X @ np.swapaxes(X, 1, 2)
    dC = rng.standard_normal((3, 8, 2, 2)) * 1e-6
    dC = dC + np.swapaxes(dC, -1, -2)
    expect = probe.gram(sig, dC)
    Cb, w = trace_form(probe, sig, None)
    i, j = vech_indices(2)
    v = dC[:, :, i, j]
    F_trace = np.einsum("amk,mkl,bml->ab", v, np.linalg.inv(spectra_covariance(Cb, w)), v)
    B, lam = metric_form(probe, sig)
    dv = dC.reshape(3, -1) @ B
    F_metric = (dv * lam) @ dv.T
    assert np.allclose(F_trace, expect, rtol=1e-8)
    assert np.allclose(F_metric, expect, rtol=1e-8)
    assert B.shape[1] == 8 * 3  # the antisymmetric parts of C_ij carry nothing: 24 of 32 kept


class _LogPkConfig(BaseModel):
    """ln P_lin(k_i, z=0) at n wavenumbers [1/Mpc] with a correlated Gaussian covariance."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = 6
    sigma: float = 0.05


class _LogPkProbe(Probe):
    """A mean-type probe defined here (no trace form): signal ln P(k_i); gram d^T C^-1 d."""

    name = "logpk"

    def __init__(self, config):
        self.k = np.geomspace(0.02, 0.5, config.n)
        idx = np.arange(config.n)
        self.C = config.sigma**2 * 0.4 ** np.abs(np.subtract.outer(idx, idx))

    def nuisance_parameters(self):
        from fishcast.parameters import NuisanceParameters

        return NuisanceParameters([])

    def requirements(self):
        return CosmologyRequirements(z_max=0.5, k_max=1.0, nonlinear=False)

    def signal(self, cosmo, params):
        return np.log(np.ravel(cosmo.pk(np.zeros(1)[:, None], self.k[None, :], nonlinear=False)))

    def gram(self, fiducial_signal, derivs, context=None):
        d = np.asarray(derivs).reshape(len(derivs), -1)
        return d @ np.linalg.solve(self.C, d.T)



@pytest.fixture
def logpk_registered():
    from fishcast.probes import register_probe, unregister_probe

    register_probe("logpk", _LogPkConfig, lambda config, survey_dir: _LogPkProbe(config))
    try:
        yield
    finally:
        unregister_probe("logpk")


def test_mock_of_a_registered_probe_uses_the_generic_form(logpk_registered, tmp_path, cache_dir):
    survey = textwrap.dedent("""\
        name: logpk
        cosmology:
          nonlinear_model: none
          accuracy: {k_max: 2, n_k: 60, n_z: 10}
        parameters:
          fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.8}
          free: [sigma8, n_s]
        derivatives: {mode: fixed}
        diagnostics: {gaussian_check: false}
        probes:
          logpk: {n: 6, sigma: 0.05}
        """)
    (tmp_path / "logpk.yaml").write_text(survey)
    run = CliRunner().invoke
    res = run(cli, ["run", str(tmp_path / "logpk.yaml"), "-o", str(tmp_path / "f.h5"), "--cache-dir", str(cache_dir),
                    "-q"])
    assert res.exit_code == 0, res.output
    res = run(cli, ["mock", str(tmp_path / "f.h5"), "--n-sims", "20000", "--n-deriv", "3000", "--seed", "6",
                    "-o", str(tmp_path / "s.h5"), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    res = run(cli, ["simfisher", str(tmp_path / "s.h5"), "-o", str(tmp_path / "sf.h5")])
    assert res.exit_code == 0, res.output
    _within(tmp_path / "sf.h5", 0.05)
    with h5py.File(tmp_path / "s.h5", "r") as f, h5py.File(tmp_path / "f.h5", "r") as g:
        # analytic: d ln P / d sigma8 = 2/sigma8 at every k (linear theory, P ~ sigma8^2)
        assert np.allclose(f["reference/fisher"][()], g["fisher/probes/logpk/matrix"][()], rtol=1e-12)
        F = g["fisher/probes/logpk/matrix"][()]
    one = np.ones(6)
    idx = np.arange(6)
    C = 0.05**2 * 0.4 ** np.abs(np.subtract.outer(idx, idx))
    assert F[0, 0] == pytest.approx((2 / 0.8) ** 2 * one @ np.linalg.solve(C, one), rel=1e-4)


def test_a_parameter_the_data_do_not_respond_to_is_called_out(linear):
    sims = linear.sims(3, 1000, 60)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((60, linear.d)) @ linear.L.T
    minus = sims.minus.copy()
    plus = sims.plus.copy()
    minus[2], plus[2] = noise, rng.standard_normal((60, linear.d)) @ linear.L.T  # t2: pure noise
    r = estimate(Simulations(sims.names, sims.values, sims.steps, sims.fiducial, minus, plus),
                 SimFisherConfig(reshuffles=5))
    assert r.verdict in ("WARN", "FAIL")
    assert "derivative noise is as large as the signal of t2" in r.message
