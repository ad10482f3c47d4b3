"""Multi-tracer Fourier-space Fisher (fishcast/probes/counts_in_cells.py).

References (none of them computed by the code under test):
* Feldman, Kaiser & Peacock 1994 (ApJ 426, 23): sigma(P)/P = sqrt(2/N_k) (1 + 1/(nP)).
* Abramo 2012 (MNRAS 420, 2042), Abramo & Leonard 2013: closed forms of the multi-tracer
  Fisher per unit phase-space volume (physics.md section 2), written out again below.
* McDonald & Seljak 2009 (JCAP 10, 007), Seljak 2009 (PRL 102, 021302): bias ratios and f
  measured without cosmic variance.
* The chain rule: a Fisher matrix of parameters p projects onto theta as J^T F J.
"""

from __future__ import annotations

import numpy as np
import pytest

from fishcast.probes import multitracer_clustering as mt


def _grid(n_k=6, n_mu=16, k_min=0.01, k_max=0.2):
    edges, k, k2dk = mt.k_bands(k_min, k_max, n_k)
    mu, w = mt.mu_quadrature(n_mu)
    return k, k2dk, mu, w


def _toy_pk(k, A=2.0e4, ns=0.96, kc=0.15, k0=0.05):
    """An analytic P(k) [(Mpc/h)^3] at k [h/Mpc]: A (k/k0)^ns exp(-(k/kc)^2)/(1+(k/k0)^2)."""
    return A * (k / k0) ** ns * np.exp(-((k / kc) ** 2)) / (1.0 + (k / k0) ** 2)


# --------------------------------------------------------------------------------------------
# quadrature
# --------------------------------------------------------------------------------------------


def test_mu_quadrature_integrates_even_polynomials():
    mu, w = mt.mu_quadrature(5)
    assert np.all((mu > 0) & (mu < 1))
    for p in (0, 2, 4, 8, 16, 18):  # Int_{-1}^{1} mu^p dmu = 2/(p+1)
        assert np.isclose(np.sum(w * mu**p), 2.0 / (p + 1), rtol=1e-13)


def test_k_bands_weights_are_exact_integrals():
    edges, k, k2dk = mt.k_bands(0.02, 0.3, 7, spacing="log")
    assert np.allclose(edges[[0, -1]], [0.02, 0.3])
    assert np.isclose(k2dk.sum(), (0.3**3 - 0.02**3) / 3.0, rtol=1e-14)
    assert np.all((k > edges[:-1]) & (k < edges[1:]))


# --------------------------------------------------------------------------------------------
# FKP limit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,b", [(3.0e-4, 1.0), (1.0e-3, 1.7), (5.0e-5, 2.3)])
def test_one_tracer_reduces_to_fkp(n, b):
    """One tracer, real space, bias known: sigma(P_i)/P_i = sqrt(2/N_k)(1 + 1/(n b^2 P))
    in every band (FKP 1994), to 1e-6 relative."""
    k, k2dk, mu, w = _grid(n_k=9, n_mu=4)
    V = 2.5e9  # (Mpc/h)^3
    pk = _toy_pk(k)
    F = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, [b], 0.0, [n], V, rsd=False))
    Fpp = F[: k.size, : k.size]
    assert np.allclose(Fpp, np.diag(np.diag(Fpp)))  # bands independent
    sigma = 1.0 / np.sqrt(np.diag(Fpp))  # biases known: conditional errors
    n_modes = V * 4.0 * np.pi * k2dk / (2.0 * np.pi) ** 3  # modes in each band
    fkp = np.sqrt(2.0 / n_modes) * (1.0 + 1.0 / (n * b**2 * pk))
    np.testing.assert_allclose(sigma, fkp, rtol=1e-6)
    np.testing.assert_allclose(mt.fkp_sigma_lnP(n_modes, n * b**2 * pk), fkp, rtol=1e-12)


def test_several_tracers_with_known_biases_replace_nP_by_Ptot():
    k, k2dk, mu, w = _grid(n_k=5, n_mu=3)
    V = 1.0e9
    pk = _toy_pk(k)
    b = np.array([0.9, 1.6, 2.4])
    n = np.array([4e-4, 1e-4, 2e-5])
    F = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b, 0.0, n, V, rsd=False))
    sigma = 1.0 / np.sqrt(np.diag(F)[: k.size])
    Ptot = (n * b**2)[None, :].sum(axis=1) * pk
    n_modes = V * k2dk / (2.0 * np.pi**2)
    np.testing.assert_allclose(sigma, np.sqrt(2.0 / n_modes) * (1.0 + 1.0 / Ptot), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# closed forms vs the general trace formula
# --------------------------------------------------------------------------------------------


def _reference_closed_forms(Pa):
    """physics.md section 2 (Abramo 2012), written independently of the module."""
    Pt = Pa.sum()
    N = Pa.size
    f_PP = 0.5 * (Pt / (1 + Pt)) ** 2
    f_Pb = Pa * Pt / (1 + Pt) ** 2
    f_bb = np.empty((N, N))
    for g in range(N):
        for d in range(N):
            f_bb[g, d] = ((g == d) * Pa[g] * Pt * (1 + Pt) + Pa[g] * Pa[d] * (1 - Pt)) / (1 + Pt) ** 2
    return f_PP, f_Pb, f_bb


@pytest.mark.parametrize("seed", range(6))
def test_closed_forms_match_general_trace_formula(seed):
    rng = np.random.default_rng(seed)
    N = int(rng.integers(1, 6))
    b = rng.uniform(0.5, 3.0, N)
    n = 10 ** rng.uniform(-5, -2, N)
    P = 10 ** rng.uniform(2.5, 4.5)
    k = np.array([0.1])
    mu = np.array([0.3])
    C = mt.tracer_covariance(k, mu, [P], b, 0.0, n)
    dlnP, dlnb, _ = mt.covariance_derivatives(k, mu, [P], b, 0.0)
    dC = np.concatenate([dlnP[None], dlnb], axis=0)
    # per mode, f_ij = (1/2) Tr[C^-1 C_,i C^-1 C_,j]; general formula with explicit inverses
    Ci = np.linalg.inv(C[0, 0])
    general = np.array([[0.5 * np.trace(Ci @ a[0, 0] @ Ci @ c[0, 0]) for c in dC] for a in dC])
    trace = 0.5 * mt.fisher_trace(C, dC, np.ones((1, 1)))
    Pa = n * b**2 * P
    f_PP, f_Pb, f_bb = _reference_closed_forms(Pa)
    scale = np.abs(general).max()
    np.testing.assert_allclose(trace, general, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(general[0, 0], f_PP, rtol=1e-10)
    np.testing.assert_allclose(general[0, 1:], f_Pb, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(general[1:, 1:], f_bb, rtol=1e-10, atol=1e-10 * scale)
    # the module's closed-form functions (vectorized) give the same numbers
    np.testing.assert_allclose(mt.closed_form_lnP_lnP(Pa), f_PP, rtol=1e-12)
    np.testing.assert_allclose(mt.closed_form_lnP_lnb(Pa), f_Pb, rtol=1e-12)
    np.testing.assert_allclose(mt.closed_form_lnb_lnb(Pa), f_bb, rtol=1e-12, atol=1e-15)


def test_band_fisher_equals_general_trace_with_finite_difference_derivatives():
    """band_fisher (analytic derivatives, band-diagonal assembly) against fisher_trace with
    derivatives of tracer_covariance by 4th-order central differences, RSD and damping on."""
    k, k2dk, mu, w = _grid(n_k=4, n_mu=10)
    pk = _toy_pk(k)
    b = np.array([1.1, 2.0, 0.8])
    n = np.array([3e-4, 1e-4, 1e-3])
    f = 0.7
    sigma = np.array([3.0, 5.0, 4.0])
    V = 3e9
    F = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b, f, n, V, sigma=sigma, rsd=True))

    def cov(lnP, lnb, ff):
        return mt.tracer_covariance(k, mu, np.exp(lnP), np.exp(lnb), ff, n, sigma)

    p0 = [np.log(pk), np.log(b), f]
    derivs = []
    h = 1e-3
    for which in range(3):
        size = [k.size, b.size, 1][which]
        for i in range(size):
            def at(step):
                p = [np.array(x, dtype=float, copy=True) for x in p0]
                if which == 2:
                    p[2] = f + step
                else:
                    p[which][i] += step
                return cov(p[0], p[1], float(p[2]))
            d = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
            derivs.append(d)
    C = mt.tracer_covariance(k, mu, pk, b, f, n, sigma)
    G = mt.fisher_trace(C, np.array(derivs), mt.mode_weights(V, k2dk, w))
    np.testing.assert_allclose(F, G, rtol=1e-7, atol=1e-7 * np.abs(G).max())


def test_effective_volume_is_the_lnP_information():
    k, k2dk, mu, w = _grid(n_k=5, n_mu=12)
    pk = _toy_pk(k)
    b, n, V = np.array([1.0, 2.0]), np.array([5e-4, 1e-4]), 1e9
    F = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b, 0.6, n, V, sigma=4.0, rsd=True))
    per, comb = mt.effective_volumes(mt.Shell(k, k2dk, mu, w, pk, b, 0.6, n, V, sigma=4.0, rsd=True))
    np.testing.assert_allclose(np.diag(F)[: k.size], k2dk * comb / (4 * np.pi**2), rtol=1e-12)
    assert np.all(comb <= V) and np.all(per.max(axis=1) <= comb)
    Fs = mt.single_tracer_band_fishers(mt.Shell(k, k2dk, mu, w, pk, b, 0.6, n, V, sigma=4.0, rsd=True))
    for a in range(2):
        np.testing.assert_allclose(np.diag(Fs[a])[: k.size], k2dk * per[:, a] / (4 * np.pi**2),
                                   rtol=1e-12)


def test_single_tracer_fishers_equal_joint_fisher_of_each_tracer_alone():
    k, k2dk, mu, w = _grid(n_k=3, n_mu=8)
    pk = _toy_pk(k)
    b, n = np.array([1.3, 0.9, 2.2]), np.array([2e-4, 1e-3, 4e-5])
    sig = np.array([2.0, 6.0, 1.0])
    Fs = mt.single_tracer_band_fishers(mt.Shell(k, k2dk, mu, w, pk, b, 0.55, n, 2e9, sigma=sig, rsd=True))
    nk = k.size
    for a in range(3):
        Fa = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b[a:a + 1], 0.55, n[a:a + 1], 2e9,
                            sigma=sig[a:a + 1], rsd=True))
        idx = list(range(nk)) + [nk + a, nk + 3]
        np.testing.assert_allclose(Fs[a][np.ix_(idx, idx)], Fa, rtol=1e-12, atol=1e-9)
        rest = np.setdiff1d(np.arange(nk + 4), idx)
        assert np.all(Fs[a][rest] == 0) and np.all(Fs[a][:, rest] == 0)


# --------------------------------------------------------------------------------------------
# the amplitude-bias degeneracy
# --------------------------------------------------------------------------------------------


def _amplitude_bias_fisher(N=3):
    k, k2dk, mu, w = _grid(n_k=8, n_mu=4)
    pk = _toy_pk(k)
    b = np.linspace(0.8, 2.5, N)
    n = np.geomspace(1e-4, 1e-3, N)
    Fb = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b, 0.0, n, 1e9, rsd=False))
    # one global amplitude: ln P_i = ln A for every band
    J = np.zeros((k.size + N, 1 + N))
    J[: k.size, 0] = 1.0
    J[k.size:, 1:] = np.eye(N)
    return mt.project(Fb, J)


@pytest.mark.parametrize("N", [1, 2, 4])
def test_amplitude_and_all_biases_have_rank_N(N):
    F = _amplitude_bias_fisher(N)
    assert F.shape == (N + 1, N + 1)
    assert np.linalg.matrix_rank(F, tol=1e-10 * np.abs(F).max()) == N
    # the null direction: ln A + 2 ln b_a unchanged, i.e. (1, -1/2, ..., -1/2)
    v = np.concatenate([[1.0], -0.5 * np.ones(N)])
    assert np.abs(F @ v).max() < 1e-10 * np.abs(F).max()
    # fixing one amplitude (here ln b_1) makes it well posed
    assert np.linalg.matrix_rank(np.delete(np.delete(F, 1, 0), 1, 1)) == N


def test_degenerate_amplitude_bias_matrix_is_refused_by_name():
    fisher = pytest.importorskip("fishcast.fisher")
    from fishcast.errors import DegenerateFisherError

    F = _amplitude_bias_fisher(2)
    names = ["lnA", "lnb_g", "lnb_d"]
    fm = fisher.FisherMatrix(F, names)
    with pytest.raises(DegenerateFisherError) as err:
        fm.covariance()
    msg = str(err.value)
    # it names the amplitude and at least one bias, and gives the null direction
    assert "lnA" in msg and any(name in msg for name in names[1:])
    assert len(err.value.directions) >= 1
    eigenvalue, weights = err.value.directions[0]
    assert abs(eigenvalue) < 1e-8
    assert "lnA" in weights and set(weights) <= set(names)
    # in the correlation form the null vector (1, -1/2, -1/2) reads sqrt(F_ii) v_i (normalized)
    v = np.array([1.0, -0.5, -0.5]) * np.sqrt(np.diag(F))
    v /= np.linalg.norm(v)
    sign = np.sign(weights["lnA"] / v[0])
    for name, wgt in weights.items():
        assert wgt == pytest.approx(sign * v[names.index(name)], abs=1e-6)


# --------------------------------------------------------------------------------------------
# the multi-tracer gain
# --------------------------------------------------------------------------------------------


def test_bias_ratio_error_keeps_falling_while_single_bias_saturates():
    """Real space, two tracers.  sigma(ln b_2/b_1) with every band power free (ln b_1
    fixed: the band powers absorb it) against sigma(ln b_1) of tracer 1 alone with P
    known, as the densities grow (McDonald & Seljak 2009; Seljak 2009)."""
    k, k2dk, mu, w = _grid(n_k=6, n_mu=2)
    pk = _toy_pk(k)
    b = np.array([1.0, 2.0])
    V = 1e9
    n_modes = V * k2dk.sum() / (2 * np.pi**2)
    floor = 1.0 / np.sqrt(2.0 * n_modes)  # cosmic variance: F = 4 * N_k/2 per ln b
    ratio, single = [], []
    for scale in [1e-3, 1e-2, 1e-1, 1.0, 10.0]:
        n = scale * np.array([1.0, 1.0])
        F = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b, 0.0, n, V, rsd=False))
        nk = k.size
        keep = list(range(nk)) + [nk + 1]  # drop ln b_1 (fixed)
        cov = np.linalg.inv(F[np.ix_(keep, keep)])
        ratio.append(np.sqrt(cov[-1, -1]))
        Fs = mt.single_tracer_band_fishers(mt.Shell(k, k2dk, mu, w, pk, b, 0.0, n, V, rsd=False))
        single.append(1.0 / np.sqrt(Fs[0, nk, nk]))  # P known, one bias
    ratio, single = np.array(ratio), np.array(single)
    assert np.all(np.diff(ratio) < 0)
    # ratio error falls ~ n^-1/2 at high density: at least a factor 3 per decade
    assert np.all(ratio[2:-1] / ratio[3:] > 3.0)
    # the single bias approaches the floor from above and stops improving
    assert np.all(single >= floor * (1 - 1e-12))
    assert single[-1] / floor < 1.001 and single[-2] / single[-1] < 1.01
    assert ratio[-1] < 0.01 * floor


def test_rsd_two_tracers_measure_f_far_better_than_either():
    """Redshift space, P(k) known (band powers fixed), biases marginalized: sigma(f) from
    two tracers of different bias is well below that of either alone (McDonald & Seljak
    2009: the ratio (b_1 + f mu^2)/(b_2 + f mu^2) has no cosmic variance)."""
    k, k2dk, mu, w = _grid(n_k=10, n_mu=16)
    pk = _toy_pk(k)
    b = np.array([1.0, 2.5])
    V, f = 1e9, 0.75
    nk = k.size

    def sigma_f(M, idx):
        cov = np.linalg.inv(M[np.ix_(idx, idx)])
        return np.sqrt(cov[-1, -1])

    joint, alone, naive = [], [], []
    for nbar in [1e-3, 1e-2, 3e-2, 1e-1]:
        n = np.array([nbar, nbar])
        F = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, b, f, n, V, rsd=True))
        Fs = mt.single_tracer_band_fishers(mt.Shell(k, k2dk, mu, w, pk, b, f, n, V, rsd=True))
        joint.append(sigma_f(F, [nk, nk + 1, nk + 2]))
        alone.append([sigma_f(Fs[a], [nk + a, nk + 2]) for a in range(2)])
        naive.append(sigma_f(Fs.sum(axis=0), [nk, nk + 1, nk + 2]))
    joint, alone, naive = np.array(joint), np.array(alone), np.array(naive)
    assert np.all(joint <= alone.min(axis=1))
    # at high density: well below either alone and the naive sum
    assert joint[-1] < 0.25 * alone[-1].min()
    assert joint[-1] < 0.25 * naive[-1]
    # single tracers saturate (cosmic variance) while the joint error keeps falling
    assert np.all(alone[-2] / alone[-1] < 1.02)
    assert joint[-2] / joint[-1] > 1.3


# --------------------------------------------------------------------------------------------
# projection onto "cosmological" parameters
# --------------------------------------------------------------------------------------------


def test_projection_equals_direct_fisher():
    """theta = (A, n_s, k_c, g) of the analytic toy P(k; theta), f = 0.5 g, b_a = beta_a / g
    (like b = b0/D).  J^T F_band J against the trace formula with derivatives of the tracer
    covariance C(theta) by 4th-order central differences, to 1e-6."""
    k, k2dk, mu, w = _grid(n_k=12, n_mu=12)
    beta = np.array([1.2, 1.9, 0.7])
    n = np.array([2e-4, 6e-4, 1.5e-3])
    sigma = np.array([2.0, 3.0, 4.0])
    V = 4e9
    theta0 = np.array([2.0e4, 0.96, 0.15, 1.4])

    def cov(th):
        A, ns, kc, g = th
        return mt.tracer_covariance(k, mu, _toy_pk(k, A, ns, kc), beta / g, 0.5 * g, n, sigma)

    A, ns, kc, g = theta0
    pk = _toy_pk(k, A, ns, kc)
    F_band = mt.band_fisher(mt.Shell(k, k2dk, mu, w, pk, beta / g, 0.5 * g, n, V, sigma=sigma))
    nk, N = k.size, beta.size
    J = np.zeros((nk + N + 1, 4))
    J[:nk, 0] = 1.0 / A
    J[:nk, 1] = np.log(k / 0.05)
    J[:nk, 2] = 2.0 * k**2 / kc**3
    J[nk:nk + N, 3] = -1.0 / g
    J[-1, 3] = 0.5
    F_proj = mt.project(F_band, J)

    derivs = []
    for i in range(4):
        h = 1e-3 * theta0[i]
        e = np.zeros(4)
        e[i] = h
        derivs.append((-cov(theta0 + 2 * e) + 8 * cov(theta0 + e) - 8 * cov(theta0 - e)
                       + cov(theta0 - 2 * e)) / (12 * h))
    F_direct = mt.fisher_trace(cov(theta0), np.array(derivs), mt.mode_weights(V, k2dk, w))
    # compare in the correlation form (parameters have very different units)
    d = np.sqrt(np.diag(F_direct))
    np.testing.assert_allclose(F_proj / np.outer(d, d), F_direct / np.outer(d, d), atol=1e-6)
    np.testing.assert_allclose(np.diag(F_proj), np.diag(F_direct), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# the probe: configuration, signal, Fisher metric, outputs
# --------------------------------------------------------------------------------------------

import pathlib  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from fishcast.errors import ComputationError  # noqa: E402


class _FakeCosmo:
    """Flat LCDM background (Omega_m = 0.3, h = 0.7) with the toy P(k): no CAMB. A
    fishcast.probes.base.Cosmology (checked in test_contract.py)."""

    z_max = 10.0
    sigma8 = 0.8  # not used by the probe: a number of the right kind
    has_nonlinear = False

    def __init__(self, h=0.7, om=0.3, amp=1.0):
        self.h, self.om, self.amp = h, om, amp
        self.H0 = 100.0 * h
        self.Omega_m = om

    def pk(self, z, k, nonlinear=False):
        """P [Mpc^3] at k [1/Mpc] (the toy spectrum in h units, converted)."""
        return self.pk_h(z, np.asarray(k) / self.h) / self.h**3

    def _E(self, z):
        return np.sqrt(self.om * (1 + np.asarray(z)) ** 3 + 1 - self.om)

    def chi_of(self, z):  # Mpc; 48-point Gauss-Legendre in z (exact to ~1e-14 here)
        z = np.asarray(z, dtype=float)
        x, w = np.polynomial.legendre.leggauss(48)
        zz = 0.5 * z[..., None] * (x + 1.0)
        return 299792.458 / (100 * self.h) * 0.5 * z * np.sum(w / self._E(zz), axis=-1)

    def hubble_of(self, z):
        return 100 * self.h * self._E(z)

    def growth_of(self, z):
        return 1.0 / (1.0 + 0.5 * np.asarray(z))

    def growth_rate_of(self, z):
        z = np.asarray(z)
        return (self.om * (1 + z) ** 3 / self._E(z) ** 2) ** 0.55

    def pk_h(self, z, k_h, nonlinear=False):
        return self.amp * _toy_pk(np.asarray(k_h)) * self.growth_of(z) ** 2


def _config(**over):
    base = dict(
        area_deg2=1000.0,
        z_edges=[0.5, 0.8, 1.1],
        tracers=[
            dict(name="LRG", density=dict(unit="(h/Mpc)^3", values=[4e-4, 2e-4]),
                 bias=dict(form="per_shell", values=[1.9, 2.2])),
            dict(name="ELG", density=dict(unit="deg^-2 per unit z", values=[800.0, 1200.0]),
                 bias=dict(form="inverse_growth", values=[0.84]), sigma_z0=0.001),
        ],
        k_max=0.2, n_k=6, n_mu=8, rsd=True, fog_sigma_v=300.0,
    )
    base.update(over)
    return mt.CountsInCellsConfig.model_validate(base)


def test_config_is_strict_and_names_its_nuisances():
    cfg = _config()
    probe = mt.build(cfg, pathlib.Path("."))
    assert probe.nuisance_parameters() == {"b_LRG_1": 1.9, "b_LRG_2": 2.2, "b_ELG_c0": 0.84}
    with pytest.raises(ValidationError):
        _config(kmax=0.3)  # unknown key
    with pytest.raises(ValidationError):
        _config(f_sky=0.1)  # both area and f_sky
    with pytest.raises(ValidationError):
        _config(k_max=[0.2])  # one per shell needed
    bad = _config().model_dump()
    bad["tracers"][0]["density"]["values"] = [1e-4]
    with pytest.raises(ValidationError):
        mt.CountsInCellsConfig.model_validate(bad)
    bad = _config().model_dump()
    bad["tracers"][1]["name"] = "ELG-1"
    with pytest.raises(ValidationError):
        mt.CountsInCellsConfig.model_validate(bad)
    with pytest.raises(Exception):
        cfg.n_k = 3  # frozen


def test_reference_distance_and_default_kmin():
    from scipy.integrate import quad

    ref = 2997.92458 * quad(lambda z: 1 / np.sqrt(0.3 * (1 + z) ** 3 + 0.7), 0, 1.1)[0]
    assert mt.reference_comoving_distance(1.1)[0] == pytest.approx(ref, rel=1e-10)
    probe = mt.build(_config(), pathlib.Path("."))
    chi = mt.reference_comoving_distance([0.5, 0.8, 1.1])
    V = 1000.0 / mt.FULL_SKY_DEG2 * 4 * np.pi / 3 * np.diff(chi**3)
    np.testing.assert_allclose(probe.k_edges[:, 0], 2 * np.pi / np.cbrt(V), rtol=1e-12)
    np.testing.assert_allclose(probe.k_edges[:, -1], 0.2)


def test_probe_signal_densities_and_biases():
    probe = mt.build(_config(), pathlib.Path("."))
    cosmo = _FakeCosmo()
    fid = probe.nuisance_parameters()
    C = probe.signal(cosmo, fid)
    assert C.shape == (2, 6, 8, 2, 2)
    h = 0.7
    # shell volumes and the dN/dz conversion, written out here
    chi = cosmo.chi_of(np.array([0.5, 0.8, 1.1])) * h
    V = 1000.0 / 41252.96125 * 4 * np.pi / 3 * np.diff(chi**3)
    np.testing.assert_allclose(probe.volumes(cosmo), V, rtol=1e-8)
    n = probe.densities(cosmo)
    np.testing.assert_allclose(n[:, 0], [4e-4, 2e-4])
    np.testing.assert_allclose(n[:, 1], 1000.0 * np.array([800.0, 1200.0]) * 0.3 / V, rtol=1e-8)
    b = probe.biases(cosmo, fid)
    np.testing.assert_allclose(b[:, 1], 0.84 * (1 + 0.5 * np.array([0.65, 0.95])))
    # the signal is the tracer covariance of these inputs
    z = np.array([0.65, 0.95])
    H = 100 * h * cosmo._E(z)
    sig = np.sqrt((300.0 * (1 + z) / H * h)[:, None] ** 2
                  + (299792.458 * np.array([0.0, 0.001])[None, :] * (1 + z)[:, None] / H[:, None] * h) ** 2)
    for s in range(2):
        ref = mt.tracer_covariance(probe.k[s], probe.mu, cosmo.pk_h(z[s], probe.k[s]), b[s],
                                   cosmo.growth_rate_of(z[s]), n[s], sig[s])
        np.testing.assert_allclose(C[s], ref, rtol=1e-12)


def test_probe_density_tables():
    over = _config().model_dump()
    over["tracers"][0]["density"] = dict(unit="(h/Mpc)^3", z=[0.0, 2.0], table=[3e-4, 3e-4])
    over["tracers"][1]["density"] = dict(unit="deg^-2 per unit z", z=[0.4, 1.2], table=[1000.0, 1000.0])
    probe = mt.build(mt.CountsInCellsConfig.model_validate(over), pathlib.Path("."))
    cosmo = _FakeCosmo()
    n = probe.densities(cosmo)
    np.testing.assert_allclose(n[:, 0], 3e-4, rtol=1e-6)  # constant n: volume mean is n
    V = probe.volumes(cosmo)
    np.testing.assert_allclose(n[:, 1], 1000.0 * 1000.0 * 0.3 / V, rtol=1e-10)


def test_probe_gram_equals_band_fisher_projected_onto_biases():
    """gram() on finite-difference derivatives of signal() w.r.t. the bias nuisances equals
    the per-shell band Fisher projected with d ln b / d theta (1/b for per-shell b, 1/c0
    for c0 / D), summed over shells."""
    probe = mt.build(_config(), pathlib.Path("."))
    cosmo = _FakeCosmo()
    fid = probe.nuisance_parameters()
    names = list(fid)
    C = probe.signal(cosmo, fid)
    derivs = []
    for name in names:
        hstep = 1e-4 * fid[name]
        up = dict(fid, **{name: fid[name] + hstep})
        dn = dict(fid, **{name: fid[name] - hstep})
        derivs.append((probe.signal(cosmo, up) - probe.signal(cosmo, dn)) / (2 * hstep))
    ctx = probe.fiducial_context(cosmo, fid)
    F = probe.gram(C, np.array(derivs), ctx)
    rep = probe.band_power_report(cosmo, fid)
    nk = probe.k.shape[1]
    expect = np.zeros((3, 3))
    b = probe.biases(cosmo, fid)
    for s in range(2):
        Fb = rep[f"shells/{s + 1}/fisher"][0]
        J = np.zeros((Fb.shape[0], 3))
        J[nk, s] = 1.0 / b[s, 0]  # ln b_LRG in shell s <- b_LRG_{s+1}
        J[nk + 1, 2] = 1.0 / 0.84  # ln b_ELG <- b_ELG_c0
        expect += mt.project(Fb, J)
    np.testing.assert_allclose(F, expect, rtol=1e-6)
    # each tracer alone through gram_by_tracer equals the single-tracer band Fishers
    Fa = probe.gram_by_tracer(C, np.array(derivs), ctx)
    for a, cols in enumerate([[0, 1], [2]]):
        exp = 0
        for s in range(2):
            Fs = rep[f"shells/{s + 1}/single_tracer"][0][a]
            J = np.zeros((Fs.shape[0], 3))
            J[nk, s] = 1.0 / b[s, 0]
            J[nk + 1, 2] = 1.0 / 0.84
            exp = exp + mt.project(Fs, J)
        np.testing.assert_allclose(Fa[a], exp, rtol=1e-6, atol=1e-9 * np.abs(exp).max())


def test_gram_needs_the_fiducial_volumes():
    """The shell volumes of the fiducial cosmology are the Fisher weights: gram() refuses to
    guess them, and with the fiducial context it uses exactly V_s/(8 pi^2) k^2dk w_mu."""
    probe = mt.build(_config(), pathlib.Path("."))
    cosmo = _FakeCosmo()
    fid = probe.nuisance_parameters()
    C = probe.signal(cosmo, fid)
    with pytest.raises(ComputationError):
        probe.gram(C, C[None])
    ctx = probe.fiducial_context(cosmo, fid)
    np.testing.assert_allclose(ctx.volumes, probe.volumes(cosmo), rtol=1e-15)
    W = probe.volumes(cosmo)[:, None, None] / (8 * np.pi**2) * probe.k2dk[:, :, None] * probe.w_mu[None, None, :]
    np.testing.assert_allclose(probe.gram(C, C[None], ctx), mt.fisher_trace(C, C[None], W), rtol=1e-14)
    # another cosmology's volumes give another metric: the context is what gram() uses
    other = probe.fiducial_context(_FakeCosmo(om=0.25), fid)
    assert not np.allclose(probe.gram(C, C[None], other), probe.gram(C, C[None], ctx))


def test_band_power_report_and_products():
    probe = mt.build(_config(), pathlib.Path("."))
    cosmo = _FakeCosmo()
    fid = probe.nuisance_parameters()
    rep = probe.band_power_report(cosmo, fid)
    names = [x.decode() for x in rep["shells/1/parameter_names"][0]]
    assert names == [f"lnP_{i}" for i in range(1, 7)] + ["lnb_LRG", "lnb_ELG", "f"]
    sf = rep["shells/2/sigma_f"][0]
    # (the naive sum double counts the shared cosmic variance: it is no bound on the joint)
    assert sf.shape == (4,) and sf[0] < min(sf[2:])
    sP = rep["shells/1/sigma_lnP"][0]
    assert sP.shape == (4, 6) and np.all(sP[0] <= sP[2:].min(axis=0))
    prods = probe.products(cosmo, fid)
    for key in ("k", "mu", "pk", "density", "bias", "z_edges", "effective_volume", "volume"):
        assert key in prods
    assert prods["pk"][0].shape == (2, 6) and prods["k"][1] == "h/Mpc"
    assert np.all(prods["effective_volume"][0] <= prods["volume"][0][:, None])


def test_probe_with_camb_cosmology(fiducial_cosmo):
    """The real CosmologyResult: finite signal; shell volumes against pyccl's comoving
    distance (an independent code)."""
    import pyccl as ccl

    probe = mt.build(_config(), pathlib.Path("."))
    C = probe.signal(fiducial_cosmo, probe.nuisance_parameters())
    assert np.all(np.isfinite(C))
    p = fiducial_cosmo.params
    h = fiducial_cosmo.derived["h"]
    cc = ccl.Cosmology(Omega_c=0.32 - 0.05 - fiducial_cosmo.derived["Omega_nu"], Omega_b=0.05,
                       h=0.67, n_s=0.96, sigma8=0.815583, m_nu=0.06)
    chi = ccl.comoving_radial_distance(cc, 1.0 / (1.0 + np.array([0.5, 0.8, 1.1]))) * h
    V = 1000.0 / 41252.96125 * 4 * np.pi / 3 * np.diff(chi**3)
    np.testing.assert_allclose(probe.volumes(fiducial_cosmo), V, rtol=2e-4)
    assert p["h"] == pytest.approx(0.67)


def test_absent_tracer_carries_no_information_and_has_no_bias():
    """LRG absent from shell 2 (density 0, bias null): no b_LRG_2; in shell 2 the probe's
    Fisher equals the ELG-only band Fisher; the report leaves LRG out of shell 2."""
    over = _config().model_dump()
    over["tracers"][0]["density"]["values"] = [4e-4, 0.0]
    over["tracers"][0]["bias"]["values"] = [1.9, None]
    probe = mt.build(mt.CountsInCellsConfig.model_validate(over), pathlib.Path("."))
    assert probe.nuisance_parameters() == {"b_LRG_1": 1.9, "b_ELG_c0": 0.84}
    cosmo = _FakeCosmo()
    fid = probe.nuisance_parameters()
    C = probe.signal(cosmo, fid)
    np.testing.assert_array_equal(C[1, ..., 0, :], np.broadcast_to([1.0, 0.0], C[1, ..., 0, :].shape))
    h = 1e-4 * 0.84
    d = (probe.signal(cosmo, dict(fid, b_ELG_c0=0.84 + h)) - probe.signal(cosmo, dict(fid, b_ELG_c0=0.84 - h))) / (2 * h)
    d[0] = 0.0  # keep shell 2 only
    F = probe.gram(C, d[None], probe.fiducial_context(cosmo, fid))[0, 0]
    rep = probe.band_power_report(cosmo, fid)
    assert [t.decode() for t in rep["shells/2/tracers"][0]] == ["ELG"]
    Fb = rep["shells/2/fisher"][0]
    nk = probe.k.shape[1]
    assert Fb.shape == (nk + 2, nk + 2)
    assert F == pytest.approx(Fb[nk, nk] / 0.84**2, rel=1e-6)
    # a per-shell bias missing where the tracer has objects is an input error
    over["tracers"][0]["density"]["values"] = [4e-4, 1e-4]
    from fishcast.errors import InputError

    with pytest.raises(InputError):
        mt.build(mt.CountsInCellsConfig.model_validate(over), pathlib.Path("."))


def test_probe_projection_of_band_powers_equals_direct_fisher():
    """Cosmology-like parameters (P amplitude, Omega_m of the fake cosmology: P(k), D(z),
    f(z) and distances move) and the biases: sum_shells J^T F_band J, J from differences of
    band_parameters(), equals gram() of differences of signal(), to 1e-6.  Densities in
    (h/Mpc)^3 and no damping, so that the band parameters carry every dependence."""
    over = _config().model_dump()
    over["tracers"][1]["density"] = dict(unit="(h/Mpc)^3", values=[6e-4, 3e-4])
    over["tracers"][1]["sigma_z0"] = 0.0
    over["fog_sigma_v"] = 0.0
    probe = mt.build(mt.CountsInCellsConfig.model_validate(over), pathlib.Path("."))
    fid = probe.nuisance_parameters()
    theta0 = {"amp": 1.0, "om": 0.3, **fid}
    names = list(theta0)

    def at(theta):
        cosmo = _FakeCosmo(om=theta["om"], amp=theta["amp"])
        return cosmo, {k: v for k, v in theta.items() if k in fid}

    def diff(fn):
        out = []
        for name in names:
            hstep = 1e-3 * theta0[name]
            vals = []
            for m in (2, 1, -1, -2):
                th = dict(theta0, **{name: theta0[name] + m * hstep})
                vals.append(fn(*at(th)))
            out.append((-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * hstep))
        return np.array(out)

    dS = diff(probe.signal)
    dB = diff(probe.band_parameters)  # (n_par, n_shell, n_band_par)
    cosmo0, p0 = at(theta0)
    C = probe.signal(cosmo0, p0)
    F_direct = probe.gram(C, dS, probe.fiducial_context(cosmo0, p0))
    rep = probe.band_power_report(cosmo0, p0)
    F_proj = sum(mt.project(rep[f"shells/{s + 1}/fisher"][0], dB[:, s, :].T) for s in range(2))
    d = np.sqrt(np.diag(F_direct))
    np.testing.assert_allclose(F_proj / np.outer(d, d), F_direct / np.outer(d, d), atol=1e-6)


def test_density_file_and_per_shell_kmax(tmp_path):
    (tmp_path / "nz.txt").write_text("# z dN/dz per deg^2\n0.4 500\n1.2 500\n")
    over = _config().model_dump()
    over["tracers"][1]["density"] = dict(unit="deg^-2 per unit z", file="nz.txt")
    over["k_max"] = [0.15, 0.25]
    over["k_min"] = 0.01
    probe = mt.build(mt.CountsInCellsConfig.model_validate(over), tmp_path)
    np.testing.assert_allclose(probe.k_edges[:, [0, -1]], [[0.01, 0.15], [0.01, 0.25]])
    cosmo = _FakeCosmo()
    V = probe.volumes(cosmo)
    np.testing.assert_allclose(probe.densities(cosmo)[:, 1], 1000.0 * 500.0 * 0.3 / V, rtol=1e-10)
    # k_max [1/Mpc]: the largest shell k (0.25 h/Mpc) x 1.25 (the AP margin: AP is on) x 2
    # (the largest h a point may have), as the requirements() docstring states
    req = probe.requirements()
    assert probe.config.alcock_paczynski and req.z_max == 1.1 and not req.nonlinear
    assert req.k_max == pytest.approx(0.25 * 1.25 * 2.0)
    from fishcast.errors import FileFormatError

    (tmp_path / "bad.txt").write_text("0.4 500 3\n1.2 500 3\n")
    over["tracers"][1]["density"] = dict(unit="deg^-2 per unit z", file="bad.txt")
    with pytest.raises(FileFormatError):
        mt.build(mt.CountsInCellsConfig.model_validate(over), tmp_path)


def test_shell_is_a_frozen_value_object():
    """The band Fisher functions take one Shell: without RSD its f and damping are dropped
    (they cannot leak into the real-space Fisher), and it cannot be changed."""
    import dataclasses

    k, k2dk, mu, w = _grid(n_k=3, n_mu=4)
    sh = mt.Shell(k, k2dk, mu, w, np.ones(3), [1.5, 2.0], 0.7, [1e-3, 2e-4], 1e9, sigma=5.0, rsd=False)
    assert sh.f == 0.0 and sh.sigma is None and sh.n_tracer == 2
    assert sh.b.dtype == float and sh.n.shape == (2,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sh.f = 0.5
    # the RSD-off shell is the real-space one whatever f and sigma were given
    ref = mt.Shell(k, k2dk, mu, w, np.ones(3), [1.5, 2.0], 0.0, [1e-3, 2e-4], 1e9, rsd=False)
    np.testing.assert_array_equal(mt.band_fisher(sh), mt.band_fisher(ref))
