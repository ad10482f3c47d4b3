"""The observed (fiducial) frame of the multi-tracer clustering probe and the
Alcock-Paczynski mapping (fishcast/probes/rsd_model.py, probes/multitracer_clustering.py).

References (none computed by the code under test):
* Alcock & Paczynski 1979; Ballinger, Peacock & Heavens 1996 (MNRAS 282, 877): a mode observed
  at (k, mu) in the fiducial coordinates has k_perp / q_perp, k_par / q_par in the true ones
  and the power carries 1/(q_perp^2 q_par).  For a power law P = A k^n the logarithmic
  derivatives are written out below by hand.
* physics.md section 2: shot noise, mode count and volume live in the fiducial frame.
* The chain rule: the band-power route J^T F_band J equals the direct Fisher (Seo &
  Eisenstein 2003 parametrize the geometry by ln q_perp, ln q_par the same way).
"""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fishcast.probes import multitracer_clustering as mt
from fishcast.probes import rsd_model

ROOT = pathlib.Path(__file__).parent.parent
FAST = ["--set", "derivatives.mode=fixed", "--set", "derivatives.stencil=3-point",
        "--set", "diagnostics.gaussian_check=false"]


def _toy_pk(k, A=2.0e4, ns=0.96, kc=0.15, k0=0.05):
    """An analytic P(k) [(Mpc/h)^3] at k [h/Mpc]."""
    return A * (k / k0) ** ns * np.exp(-((k / kc) ** 2)) / (1.0 + (k / k0) ** 2)


class FakeCosmo:
    """Flat LCDM background (Omega_m = om, H0 = 100 h) with an analytic P(k) in h-units: no
    CAMB.  ``stretch`` multiplies every distance and divides H (q_perp = q_par = stretch
    against stretch = 1); ``wiggle`` (a, r) multiplies P by 1 + a sin(k r) (k in h/Mpc)."""

    z_max = 10.0
    sigma8 = 0.8  # not used by the probe
    has_nonlinear = False

    def __init__(self, h=0.7, om=0.3, amp=1.0, stretch=1.0, wiggle=None, smooth=_toy_pk, mpc_shape=False):
        self.h, self.om, self.amp, self.stretch, self.wiggle, self.smooth = h, om, amp, stretch, wiggle, smooth
        self.mpc_shape = mpc_shape  # True: P fixed in Mpc units (h then moves P in h-units)
        self.H0 = 100.0 * h
        self.Omega_m = om

    def pk(self, z, k, nonlinear=False):
        """P [Mpc^3] at k [1/Mpc]."""
        return self.pk_h(z, np.asarray(k) / self.h) / self.h**3

    def _E(self, z):
        return np.sqrt(self.om * (1 + np.asarray(z)) ** 3 + 1 - self.om)

    def chi_of(self, z):  # Mpc
        z = np.asarray(z, dtype=float)
        x, w = np.polynomial.legendre.leggauss(48)
        zz = 0.5 * z[..., None] * (x + 1.0)
        return self.stretch * 299792.458 / (100 * self.h) * 0.5 * z * np.sum(w / self._E(zz), axis=-1)

    def hubble_of(self, z):
        return 100 * self.h * self._E(z) / self.stretch

    def growth_of(self, z):
        return 1.0 / (1.0 + 0.5 * np.asarray(z))

    def growth_rate_of(self, z):
        z = np.asarray(z)
        return (self.om * (1 + z) ** 3 / self._E(z) ** 2) ** 0.55

    def pk_h(self, z, k_h, nonlinear=False):
        k_h = np.asarray(k_h, dtype=float)
        if self.mpc_shape:
            x = self.h / 0.7
            p = self.amp * self.smooth(k_h * x) * x**3 * self.growth_of(z) ** 2
        else:
            p = self.amp * self.smooth(k_h) * self.growth_of(z) ** 2
        if self.wiggle is not None:
            a, r = self.wiggle
            p = p * (1.0 + a * np.sin(k_h * r))
        return p


class ZeroPower:
    """A cosmology with the background of ``cosmo`` and no clustering at all (P = 0): the
    probe's covariance is then its noise alone."""

    def __init__(self, cosmo):
        self._c = cosmo

    def __getattr__(self, name):
        return getattr(self._c, name)

    def pk_h(self, z, k_h, nonlinear=False):
        return 0.0 * np.asarray(self._c.pk_h(z, k_h, nonlinear=nonlinear))


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


# --------------------------------------------------------------------------------------------
# the Alcock-Paczynski mapping
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qperp,qpar", [(1.0, 1.0), (1.03, 0.97), (0.9, 1.15)])
def test_ap_log_derivatives_on_a_power_law(qperp, qpar):
    """d ln P_obs / d ln q at fixed true P = A k^n, by 5-point differences of
    rsd_model.observed_power, against the analytic expressions (Ballinger et al. 1996):
    ln P_obs = ln A + n ln k - 2 ln q_perp - ln q_par with
    k^2 = k_obs^2 [(1-mu^2)/q_perp^2 + mu^2/q_par^2], so
    d/d ln q_perp = -2 - n (1-mu^2) q_perp^-2 / S,  d/d ln q_par = -1 - n mu^2 q_par^-2 / S."""
    n, A = -1.7, 3.0e4
    k = np.array([0.02, 0.1, 0.3])[:, None]
    mu = np.linspace(0.0, 1.0, 7)[None, :]
    power = lambda kk, mm: A * kk**n  # noqa: E731

    def lnp(lqperp, lqpar):
        return np.log(rsd_model.observed_power(power, k, mu, np.exp(lqperp), np.exp(lqpar)))

    e = 1e-3
    l0, l1 = np.log(qperp), np.log(qpar)
    d_perp = (-lnp(l0 + 2 * e, l1) + 8 * lnp(l0 + e, l1) - 8 * lnp(l0 - e, l1) + lnp(l0 - 2 * e, l1)) / (12 * e)
    d_par = (-lnp(l0, l1 + 2 * e) + 8 * lnp(l0, l1 + e) - 8 * lnp(l0, l1 - e) + lnp(l0, l1 - 2 * e)) / (12 * e)
    S = (1 - mu**2) / qperp**2 + mu**2 / qpar**2
    np.testing.assert_allclose(d_perp, -2.0 - n * (1 - mu**2) / qperp**2 / S + 0 * k, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d_par, -1.0 - n * mu**2 / qpar**2 / S + 0 * k, rtol=1e-6, atol=1e-9)
    if qperp == qpar == 1.0:  # the band-power route's derivatives at q = 1
        dk_perp, dk_par, dm_perp, dm_par = rsd_model.ap_log_derivatives(mu)
        np.testing.assert_allclose(d_perp, -2.0 + n * dk_perp + 0 * k, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(d_par, -1.0 + n * dk_par + 0 * k, rtol=1e-6, atol=1e-9)
        # mu_t^2 of slightly stretched frames, by differences
        m2 = lambda qp, qa: rsd_model.ap_true_wavevector(k, mu, qp, qa)[1] ** 2  # noqa: E731
        np.testing.assert_allclose((m2(np.exp(e), 1) - m2(np.exp(-e), 1)) / (2 * e), dm_perp + 0 * k, atol=1e-6)
        np.testing.assert_allclose((m2(1, np.exp(e)) - m2(1, np.exp(-e))) / (2 * e), dm_par + 0 * k, atol=1e-6)


def _fit_wiggle_scale(k, p, r_guess):
    """Least-squares fit of p(k) = c0 + c1 sin(k r) + c2 cos(k r) over r (golden-section
    refinement of a scan): the BAO scale r [Mpc/h] seen in the data."""
    def resid(r):
        X = np.column_stack([np.ones_like(k), np.sin(k * r), np.cos(k * r)])
        c, *_ = np.linalg.lstsq(X, p, rcond=None)
        return float(np.sum((X @ c - p) ** 2))

    rs = np.linspace(0.8 * r_guess, 1.25 * r_guess, 901)
    r0 = rs[int(np.argmin([resid(r) for r in rs]))]
    a, b = r0 - (rs[1] - rs[0]), r0 + (rs[1] - rs[0])
    g = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        c, d = b - g * (b - a), a + g * (b - a)
        if resid(c) < resid(d):
            b = d
        else:
            a = c
    return 0.5 * (a + b)


@pytest.mark.parametrize("which", ["isotropic", "anisotropic"])
def test_pure_bao_shift_is_recovered(which):
    """AP on, every other ingredient off (real space, no damping, one tracer, a flat P with a
    pure sinusoidal 'BAO' of scale r = 105 Mpc/h): the observed power of a cosmology whose
    distances are stretched shows the wiggle at r / alpha with alpha the stretch
    (isotropic: q_perp = q_par = 1.02 for every mu), or at r sqrt((1-mu^2)/q_perp^2 +
    mu^2/q_par^2)^-1 ... i.e. the fitted scale along each mu gives back q_perp and q_par."""
    r = 105.0
    flat = lambda k: 1.0e4 + 0.0 * k  # noqa: E731
    cfg = dict(area_deg2=5000.0, z_edges=[0.9, 1.1],
               tracers=[dict(name="G", density=dict(unit="(h/Mpc)^3", values=[1e-3]),
                             bias=dict(form="per_shell", values=[1.5]))],
               k_min=0.02, k_max=0.4, n_k=600, n_mu=6, rsd=False)
    probe = mt.build(mt.CountsInCellsConfig.model_validate(cfg), pathlib.Path("."))
    fid = FakeCosmo(smooth=flat, wiggle=(0.05, r))
    other = (FakeCosmo(smooth=flat, wiggle=(0.05, r), stretch=1.02) if which == "isotropic"
             else FakeCosmo(smooth=flat, wiggle=(0.05, r), om=0.26))
    frame = probe.observed_frame(fid)
    qperp, qpar = probe.ap_factors(other, frame)
    if which == "isotropic":
        np.testing.assert_allclose([qperp[0], qpar[0]], [1.02, 1.02], rtol=1e-12)
    else:
        assert abs(qperp[0] - qpar[0]) > 0.01
    C = probe.signal(other, probe.nuisance_parameters(), frame)
    P_obs = (C[0, :, :, 0, 0] - probe.shot_noise(frame)[0, 0]) / 1.5**2  # (n_k, n_mu)
    k = probe.k[0]
    r_fit = np.array([_fit_wiggle_scale(k, P_obs[:, j], r) for j in range(probe.mu.size)])
    mu = probe.mu
    expect = r * np.sqrt((1 - mu**2) / qperp[0] ** 2 + mu**2 / qpar[0] ** 2)
    np.testing.assert_allclose(r_fit, expect, rtol=1e-4)
    # q_perp and q_par back from two directions: (r/r_fit)^2 = (1-mu^2) q_perp^-2 + mu^2 q_par^-2
    M = np.column_stack([1 - mu**2, mu**2])
    inv_q2, *_ = np.linalg.lstsq(M, (r_fit / r) ** 2, rcond=None)
    np.testing.assert_allclose(1 / np.sqrt(inv_q2), [qperp[0], qpar[0]], rtol=2e-4)


# --------------------------------------------------------------------------------------------
# fiducial-frame invariance
# --------------------------------------------------------------------------------------------


def _other_cosmologies():
    return {"om": FakeCosmo(om=0.27), "h": FakeCosmo(h=0.74), "amp": FakeCosmo(amp=1.3),
            "stretch": FakeCosmo(stretch=1.05)}


def test_shot_noise_and_mode_count_do_not_move_with_the_cosmology():
    """AP on, densities of one tracer given per deg^2 per unit z, damping on: with the frame of
    the fiducial, the noise part of the covariance (the covariance of a cosmology with no
    clustering) and the mode weights are identical, bit for bit, at every other cosmology:
    their derivatives w.r.t. every cosmological parameter are exactly zero."""
    probe = mt.build(_config(), pathlib.Path("."))
    fid = FakeCosmo()
    p = probe.nuisance_parameters()
    frame = probe.fiducial_context(fid, p)
    N0 = probe.signal(ZeroPower(fid), p, frame)
    assert np.all(N0[..., 0, 1] == 0.0)  # no signal: the noise is diagonal
    np.testing.assert_array_equal(np.diagonal(N0, axis1=-2, axis2=-1)[:, 0, 0, :], probe.shot_noise(frame))
    C0 = probe.signal(fid, p, frame)
    np.testing.assert_array_equal(C0, probe.signal(fid, p))  # at the fiducial: its own frame
    W0 = probe.mode_weights(frame.volumes)
    d = np.ones_like(C0)[None]
    for name, other in _other_cosmologies().items():
        np.testing.assert_array_equal(probe.signal(ZeroPower(other), p, frame), N0, err_msg=name)
        if name == "h":
            # h alone, everything else fixed in h-units: nothing observable changes (the
            # survey measures distances in Mpc/h) -- a check of the unit bookkeeping
            np.testing.assert_allclose(probe.signal(other, p, frame), C0, rtol=1e-12)
        else:
            assert not np.allclose(probe.signal(other, p, frame), C0), name  # the signal does move
            # in its own frame the noise would move: the fiducial frame is what keeps it
            assert not np.array_equal(probe.signal(ZeroPower(other), p), N0) or name == "amp", name
        # gram weights: those of the fiducial frame, whatever signal it is handed
        C = probe.signal(other, p, frame)
        np.testing.assert_array_equal(probe.gram(C, d, frame), mt.fisher_trace(C, d, W0))


def test_noise_invariance_with_camb_cosmologies(fiducial_cosmo, fast_settings):
    """The same with two real CAMB cosmologies (the IST:F fiducial and a point 5-10 % away in
    Omega_m, h and w0)."""
    from fishcast.cosmology import compute
    from tests.conftest import ISTF_FIDUCIAL

    other = compute(dict(ISTF_FIDUCIAL, Omega_m=0.30, h=0.70, w0=-0.9), fast_settings)
    probe = mt.build(_config(), pathlib.Path("."))
    p = probe.nuisance_parameters()
    ctx = probe.fiducial_context(fiducial_cosmo, p)
    np.testing.assert_array_equal(probe.signal(ZeroPower(other), p, ctx), probe.signal(ZeroPower(fiducial_cosmo), p, ctx))
    a = probe.products(fiducial_cosmo, p)
    q_perp, q_par = probe.ap_factors(other, probe.observed_frame(fiducial_cosmo))
    assert np.all(np.abs(q_perp - 1) > 1e-3) and np.all(np.abs(q_par - 1) > 1e-3)
    # the densities written to the output are the fiducial-frame ones
    n_other_frame = probe.observed_frame(other).densities
    assert not np.allclose(a["density"][0][:, 1], n_other_frame[:, 1])
    np.testing.assert_array_equal(a["density"][0], probe.observed_frame(fiducial_cosmo).densities)


# --------------------------------------------------------------------------------------------
# band-power (Jacobian) route against the direct route, with Alcock-Paczynski
# --------------------------------------------------------------------------------------------


def test_band_route_with_geometry_equals_direct_fisher():
    """Parameters moving P, distances, H, f and h of the fake cosmology (amp, om, h; its P
    fixed in Mpc units, so that h is not a pure change of units) and the
    biases; densities per deg^2 per unit z and damping on (both fixed in the fiducial frame):
    sum_shells J^T F_geom J, J from 5-point differences of band_parameters(geometry=True),
    equals gram() of 5-point differences of signal(), to 1e-6 in the correlation form."""
    probe = mt.build(_config(), pathlib.Path("."))
    fid = probe.nuisance_parameters()
    theta0 = {"amp": 1.0, "om": 0.3, "h": 0.7, **fid}
    names = list(theta0)
    cosmo0 = FakeCosmo(mpc_shape=True)
    frame = probe.fiducial_context(cosmo0, fid)

    def at(theta):
        c = FakeCosmo(om=theta["om"], amp=theta["amp"], h=theta["h"], mpc_shape=True)
        return c, {k: v for k, v in theta.items() if k in fid}

    def diff(fn):
        out = []
        for name in names:
            hstep = 1e-3 * theta0[name]
            vals = [fn(*at(dict(theta0, **{name: theta0[name] + m * hstep}))) for m in (2, 1, -1, -2)]
            out.append((-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * hstep))
        return np.array(out)

    dS = diff(lambda c, p: probe.signal(c, p, frame))
    dB = diff(lambda c, p: probe.band_parameters(c, p, frame, geometry=True))
    C = probe.signal(cosmo0, fid)
    F_direct = probe.gram(C, dS, frame)
    rep = probe.band_power_report(cosmo0, fid, frame)
    names_g = [x.decode() for x in rep["shells/1/geometry_parameter_names"][0]]
    assert names_g[-2:] == ["lnq_perp", "lnq_par"]
    F_proj = sum(mt.project(rep[f"shells/{s + 1}/geometry_fisher"][0], dB[:, s, :].T) for s in range(2))
    d = np.sqrt(np.diag(F_direct))
    np.testing.assert_allclose(F_proj / np.outer(d, d), F_direct / np.outer(d, d), atol=1e-6)
    # the geometry matters: without the AP rows the projection misses information on om and h
    F_noap = sum(mt.project(rep[f"shells/{s + 1}/fisher"][0], dB[:, s, :-2].T) for s in range(2))
    assert abs(F_noap[1, 1] / F_direct[1, 1] - 1) > 0.05


# --------------------------------------------------------------------------------------------
# the DESI recipe: densities per deg^2 per unit z = the same densities in (h/Mpc)^3
# --------------------------------------------------------------------------------------------


def test_desi_forecast_same_with_equivalent_comoving_densities(tmp_path, cache_dir):
    """The DESI recipe as shipped (dN/dz per deg^2 per unit z) and the same recipe with each
    tracer's density replaced by the (h/Mpc)^3 values it converts to in the fiducial frame
    (read from the first output): the Fisher matrices agree to 1e-9."""
    from fishcast.cli.main import cli
    from fishcast.io import read_fisher

    recipe = ROOT / "recipes" / "desi-multitracer.yaml"
    # the CAMB table of tests/test_istf_gcsp.py (~300 k nodes resolve the BAO wiggles)
    fast = FAST + ["--set", "cosmology.accuracy.n_z=40", "--set", "cosmology.accuracy.n_k=300",
                   "--set", "cosmology.accuracy.k_max=10"]
    a = tmp_path / "a.h5"
    res = CliRunner().invoke(cli, ["run", str(recipe), "-o", str(a), "--cache-dir", str(cache_dir), "-q"] + fast)
    assert res.exit_code in (0, 3), res.output
    with h5py.File(a, "r") as f:
        n = f["data/counts_in_cells/density"][()]
        tracers = [t.decode() for t in f["data/counts_in_cells/tracers"][()]]
    assert tracers == ["BGS", "LRG", "ELG", "QSO"]
    sets = []
    for i in range(len(tracers)):
        vals = "[" + ", ".join(repr(float(v)) for v in n[:, i]) + "]"
        sets += ["--set", f"probes.counts_in_cells.tracers.{i}.density.unit=(h/Mpc)^3",
                 "--set", f"probes.counts_in_cells.tracers.{i}.density.values={vals}"]
    b = tmp_path / "b.h5"
    res = CliRunner().invoke(cli, ["run", str(recipe), "-o", str(b), "--cache-dir", str(cache_dir), "-q"] + fast + sets)
    assert res.exit_code in (0, 3), res.output
    Fa, _ = read_fisher(a)
    Fb, _ = read_fisher(b)
    assert Fa.names == Fb.names
    np.testing.assert_allclose(Fb.matrix, Fa.matrix, rtol=1e-9, atol=1e-9 * np.abs(Fa.matrix).max())
    # and the figure of merit is that of a forecast without invented geometry information
    # (2838 before the observed frame; 41.7 with the fiducial-frame noise and AP off)
    assert 100 < Fa.figure_of_merit("w0", "wa") < 400
