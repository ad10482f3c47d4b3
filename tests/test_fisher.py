"""FisherMatrix and derived parameters against direct linear algebra and analytic results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fishcast.errors import DegenerateFisherError, InputError
from fishcast.fisher import FisherMatrix


def random_spd(n: int, seed: int, spread: float = 1.0) -> np.ndarray:
    """A random symmetric positive-definite matrix; ``spread`` rescales rows/columns by up to
    10**spread so that raw units differ wildly (the correlation form must not care)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    f = a @ a.T + 0.5 * np.eye(n)
    s = 10.0 ** rng.uniform(-spread, spread, n)
    return f * s[:, None] * s[None, :]


NAMES = ["Omega_m", "Omega_b", "h", "n_s", "sigma8", "w0", "wa"]
FID = [0.32, 0.05, 0.67, 0.96, 0.815583, -1.0, 0.0]


@pytest.fixture(params=[0, 1, 2])
def fm(request):
    return FisherMatrix(random_spd(len(NAMES), request.param, spread=3), NAMES, FID)


def test_covariance_and_sigmas_against_numpy(fm):
    cov = np.linalg.inv(fm.matrix)
    np.testing.assert_allclose(fm.covariance(), cov, rtol=1e-9, atol=0)
    np.testing.assert_allclose(fm.marginalized_sigma(), np.sqrt(np.diag(cov)), rtol=1e-10)
    np.testing.assert_allclose(fm.conditional_sigma(), 1 / np.sqrt(np.diag(fm.matrix)), rtol=1e-12)
    corr = fm.correlation()
    np.testing.assert_allclose(np.diag(corr), 1.0, rtol=1e-12)
    np.testing.assert_allclose(corr, cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))), rtol=1e-9, atol=1e-12)


def test_marginalize_is_invert_then_subblock(fm):
    keep = ["wa", "Omega_m", "sigma8"]
    idx = [NAMES.index(k) for k in keep]
    direct = np.linalg.inv(np.linalg.inv(fm.matrix)[np.ix_(idx, idx)])
    m = fm.marginalize(keep)
    assert m.names == tuple(keep)
    np.testing.assert_allclose(m.matrix, direct, rtol=1e-8)
    np.testing.assert_allclose(m.marginalized_sigma(), fm.marginalized_sigma()[idx], rtol=1e-10)
    np.testing.assert_array_equal(m.fiducial, np.array(FID)[idx])
    assert m.provenance[-1]["operation"] == "marginalize"
    assert set(m.provenance[-1]["over"]) == set(NAMES) - set(keep)


def test_fix_is_subblock_then_invert(fm):
    fixed = ["h", "n_s"]
    keep = [i for i, n in enumerate(NAMES) if n not in fixed]
    direct = np.linalg.inv(fm.matrix[np.ix_(keep, keep)])
    f = fm.fix(fixed)
    assert f.names == tuple(NAMES[i] for i in keep)
    np.testing.assert_allclose(f.covariance(), direct, rtol=1e-9)
    # Fixing can only shrink the marginalized errors.
    assert np.all(f.marginalized_sigma() <= fm.marginalized_sigma()[keep] * (1 + 1e-12))


def test_combine_with_itself_halves_covariance(fm):
    g = fm.combine(fm)
    np.testing.assert_allclose(g.covariance(), fm.covariance() / 2, rtol=1e-10)
    np.testing.assert_allclose((fm + fm).matrix, 2 * fm.matrix)
    step = g.provenance[-1]
    assert step["operation"] == "combine" and step["common"] == NAMES
    assert step["only_in_first"] == [] and step["only_in_second"] == []


def test_combine_disjoint_is_block_diagonal():
    a = FisherMatrix(random_spd(3, 5), ["Omega_m", "sigma8", "h"], [0.3, 0.8, 0.7])
    b = FisherMatrix(random_spd(2, 6), ["A_IA", "eta_IA"], [1.72, -0.41])
    c = a.combine(b)
    assert c.names == ("Omega_m", "sigma8", "h", "A_IA", "eta_IA")
    expected = np.zeros((5, 5))
    expected[:3, :3] = a.matrix
    expected[3:, 3:] = b.matrix
    np.testing.assert_array_equal(c.matrix, expected)
    np.testing.assert_allclose(c.marginalized_sigma()[:3], a.marginalized_sigma(), rtol=1e-12)
    np.testing.assert_array_equal(c.fiducial, [0.3, 0.8, 0.7, 1.72, -0.41])
    assert c.provenance[-1]["only_in_second"] == ["A_IA", "eta_IA"]


def test_combine_partial_overlap_aligns_by_name():
    a = FisherMatrix([[4.0, 1.0], [1.0, 3.0]], ["x", "y"], [1.0, 2.0])
    b = FisherMatrix([[5.0, 2.0], [2.0, 7.0]], ["z", "x"], [3.0, 1.0])
    c = a + b
    assert c.names == ("x", "y", "z")
    np.testing.assert_array_equal(c.matrix, [[11.0, 1.0, 2.0], [1.0, 3.0, 0.0], [2.0, 0.0, 5.0]])


def test_combine_rejects_different_fiducials_unless_forced():
    a = FisherMatrix(np.eye(2), ["Omega_m", "h"], [0.32, 0.67])
    b = FisherMatrix(np.eye(2), ["Omega_m", "h"], [0.31, 0.67])
    with pytest.raises(InputError) as err:
        a.combine(b)
    msg = str(err.value)
    assert "Omega_m" in msg and "0.32" in msg and "0.31" in msg and "h:" not in msg
    c = a.combine(b, force=True)
    assert c.fiducial_of("Omega_m") == 0.32
    assert c.provenance[-1]["forced"][0]["param"] == "Omega_m"


def test_figure_of_merit_known_covariance():
    # Build F from a chosen covariance; FoM = 1/sqrt(det Cov_w0wa) by definition (DETF).
    cov = np.array([[0.04, 0.0, 0.001], [0.0, 0.09, -0.2], [0.001, -0.2, 0.64]])
    f = FisherMatrix(np.linalg.inv(cov), ["Omega_m", "w0", "wa"], [0.3, -1.0, 0.0])
    det = 0.09 * 0.64 - 0.2**2
    assert f.figure_of_merit() == pytest.approx(1 / math.sqrt(det), rel=1e-10)
    assert f.figure_of_merit("Omega_m", "wa") == pytest.approx(1 / math.sqrt(0.04 * 0.64 - 1e-6), rel=1e-10)
    with pytest.raises(InputError, match="unknown parameter 'S8'"):
        f.figure_of_merit("S8", "w0")


def test_add_prior():
    f = FisherMatrix(np.diag([4.0, 9.0]), ["h", "n_s"], [0.67, 0.96])
    p = f.add_prior({"h": 0.1})
    np.testing.assert_allclose(p.matrix, np.diag([104.0, 9.0]))
    assert p.provenance[-1] == {"operation": "add_prior", "gaussian_sigma": {"h": 0.1}}
    assert f.matrix[0, 0] == 4.0  # immutable
    for bad in (0.0, -1.0, float("inf"), "x"):
        with pytest.raises(InputError):
            f.add_prior({"h": bad})
    with pytest.raises(InputError, match="unknown parameter"):
        f.add_prior({"Omega_k": 0.1})


def test_immutable():
    f = FisherMatrix(np.eye(2), ["a", "b"])
    with pytest.raises(ValueError):
        f.matrix[0, 0] = 5.0
    with pytest.raises(ValueError):
        f.covariance()[0, 0] = 5.0


def test_degenerate_names_the_direction():
    # Omega_m and sigma8 perfectly degenerate; h well measured.
    v = np.array([1.0, -2.0, 0.0])
    f = FisherMatrix(np.outer(v, v) + np.diag([0, 0, 3.0]), ["Omega_m", "sigma8", "h"])
    with pytest.raises(DegenerateFisherError) as err:
        f.covariance()
    assert "Omega_m" in str(err.value) and "sigma8" in str(err.value)
    (lam, weights), = err.value.directions
    assert set(weights) == {"Omega_m", "sigma8"} and abs(lam) < 1e-12
    # A parameter with no information at all is named too.
    g = FisherMatrix(np.diag([1.0, 0.0]), ["n_s", "wa"])
    with pytest.raises(DegenerateFisherError, match="wa"):
        g.marginalized_sigma()
    assert g.conditional_sigma()[1] == math.inf
    # Indefinite.
    with pytest.raises(DegenerateFisherError, match="not positive definite"):
        FisherMatrix([[1.0, 2.0], [2.0, 1.0]], ["a", "b"]).covariance()


def test_units_do_not_decide_invertibility():
    # A_s in raw units: cond(F) ~ 1e19, beyond COND_LIMIT, but the correlation form is benign.
    f = random_spd(3, 11)
    s = np.array([1e-9, 1.0, 1.0])
    raw = FisherMatrix(f / np.outer(s, s), ["A_s", "n_s", "h"])
    assert np.linalg.cond(raw.matrix) > 1e16
    np.testing.assert_allclose(raw.marginalized_sigma() / s, np.sqrt(np.diag(np.linalg.inv(f))), rtol=1e-9)


def test_bad_construction():
    with pytest.raises(InputError, match="shape"):
        FisherMatrix(np.eye(3), ["a", "b"])
    with pytest.raises(InputError, match="duplicate"):
        FisherMatrix(np.eye(2), ["a", "a"])
    with pytest.raises(InputError, match="not symmetric"):
        FisherMatrix([[1.0, 0.5], [0.0, 1.0]], ["a", "b"])
    with pytest.raises(InputError, match="non-finite"):
        FisherMatrix([[1.0, np.nan], [np.nan, 1.0]], ["a", "b"])


def test_derive_S8_matches_hand_built_jacobian():
    names = ["Omega_m", "sigma8", "h"]
    fid = [0.32, 0.815583, 0.67]
    f = FisherMatrix(random_spd(3, 3), names, fid)
    om, s8 = fid[0], fid[1]
    # New parameters (Omega_m, S8, h); old in terms of new: sigma8 = S8 (0.3/Omega_m)^(1/2).
    S8 = s8 * math.sqrt(om / 0.3)
    J = np.eye(3)  # J[i, a] = d old_i / d new_a
    J[1, 1] = math.sqrt(0.3 / om)
    J[1, 0] = -0.5 * S8 * math.sqrt(0.3) * om**-1.5
    d = f.derive("S8")
    assert d.names == ("Omega_m", "S8", "h")
    assert d.fiducial_of("S8") == pytest.approx(S8, rel=1e-14)
    np.testing.assert_allclose(d.matrix, J.T @ f.matrix @ J, rtol=1e-10)
    # Linear error propagation from the covariance gives the same sigma(S8).
    grad = np.array([0.5 * s8 / math.sqrt(0.3 * om), math.sqrt(om / 0.3), 0.0])
    assert d.sigma("S8") == pytest.approx(math.sqrt(grad @ f.covariance() @ grad), rel=1e-9)
    assert d.provenance[-1] == {"operation": "derive", "to": ["S8"], "replaced": ["sigma8"]}


def test_derive_several_at_once_and_fixed_inputs():
    names = ["Omega_m", "Omega_b", "h"]
    fid = [0.32, 0.05, 0.67]
    f = FisherMatrix(random_spd(3, 4), names, fid)
    with pytest.raises(InputError, match="m_nu"):
        f.derive("omch2")
    d = f.derive(["omch2", "ombh2", "H0"], fixed={"m_nu": 0.06})
    h = 0.67
    assert d.names == ("omch2", "ombh2", "H0")
    assert d.units == ("", "", "km/s/Mpc")
    # Omega_nu h^2 for 0.06 eV from CAMB itself (the convention the forecast used).
    import camb

    pars = camb.CAMBparams()
    pars.set_cosmology(H0=67.0, ombh2=0.022, omch2=0.12, mnu=0.06, num_massive_neutrinos=1)
    np.testing.assert_allclose(d.fiducial, [0.27 * h**2 - pars.omnuh2, 0.05 * h**2, 67.0], rtol=1e-12)
    # Forward Jacobian M[a, i] = d new_a / d old_i, by hand; F' = M^-T F M^-1.
    M = np.array([[h**2, -(h**2), 2 * 0.27 * h], [0.0, h**2, 2 * 0.05 * h], [0.0, 0.0, 100.0]])
    Minv = np.linalg.inv(M)
    np.testing.assert_allclose(d.matrix, Minv.T @ f.matrix @ Minv, rtol=1e-9)
    with pytest.raises(InputError, match="not a free parameter"):
        f.derive("S8")
    with pytest.raises(InputError, match="unknown derived"):
        f.derive("Omega_x")


def test_reparametrize_validates_shape():
    f = FisherMatrix(np.eye(2), ["a", "b"])
    with pytest.raises(InputError, match="shape"):
        f.reparametrize(np.eye(3), ["x", "y"])
    g = f.reparametrize([[2.0], [1.0]], ["s"])
    np.testing.assert_allclose(g.matrix, [[5.0]])


def test_derive_S8_with_Omega_m_fixed():
    # Omega_m not free: S8 = sigma8 sqrt(Omega_m/0.3) is sigma8 times a constant.
    f = FisherMatrix(np.diag([400.0, 100.0]), ["sigma8", "h"], [0.8, 0.7])
    d = f.derive("S8", fixed={"Omega_m": 0.27})
    c = math.sqrt(0.27 / 0.3)
    assert d.fiducial_of("S8") == pytest.approx(0.8 * c, rel=1e-14)
    assert d.sigma("S8") == pytest.approx(c / 20.0, rel=1e-12)


def test_two_degenerate_directions_are_both_named():
    a = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    b = np.array([0.0, 0.0, 1.0, -3.0, 0.0])
    m = np.outer(a, a) + np.outer(b, b) + np.diag([0.0, 0.0, 0.0, 0.0, 2.0])
    f = FisherMatrix(m, ["Omega_m", "sigma8", "w0", "wa", "h"])
    with pytest.raises(DegenerateFisherError) as err:
        f.covariance()
    named = sorted(sorted(w) for _, w in err.value.directions)
    # The two null directions of R span {Omega_m, sigma8} and {w0, wa}; eigh may mix them
    # only within the null space, so every named parameter is one of the four.
    assert len(named) == 2
    assert set().union(*named) <= {"Omega_m", "sigma8", "w0", "wa"}
    assert all("h" not in w for _, w in err.value.directions)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**31), data=st.data())
def test_marginalize_and_fix_property(n, seed, data):
    names = [f"p{i}" for i in range(n)]
    F = random_spd(n, seed, spread=2)
    keep_idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    keep = [names[i] for i in keep_idx]
    f = FisherMatrix(F, names)
    cov = np.linalg.inv(F)
    np.testing.assert_allclose(f.marginalize(keep).covariance(), cov[np.ix_(keep_idx, keep_idx)], rtol=1e-7, atol=0)
    drop = [nm for nm in names if nm not in keep]
    if drop:
        rest = [i for i in range(n) if names[i] not in drop]
        np.testing.assert_allclose(f.fix(drop).covariance(), np.linalg.inv(F[np.ix_(rest, rest)]), rtol=1e-7)
