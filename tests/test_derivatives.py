"""Step-size sweeps on analytic functions with known derivatives (and injected noise).

Reference values are analytic: for f(x) = A sin(w x + phi) the 3-point central stencil has
the error h^2 f'''/6 = -(w h)^2 f'/6 and the 5-point (Richardson) stencil -h^4 f^(5)/30 =
-(w h)^4 f'/30 (Taylor expansion, e.g. Abramowitz & Stegun 25.3.6 / 25.3.4); with noise of
norm eps per evaluation the total error eps/(sqrt(2) h) + |f'''| h^2 / 6 is smallest at
h* = (3 eps / (sqrt(2) |f'''|))^(1/3).
"""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest
from pydantic import ValidationError

from fishcast.derivatives import (
    DerivativesConfig,
    ParameterSweep,
    analyse,
    fast_steps,
    plan_ladder,
    plan_points,
    resolve_spec,
    run_sweep,
)
from fishcast.errors import ComputationError, InputError
from fishcast.io.sweeps import known_steps_from_hdf5, read_sweeps, write_sweeps

N = 50
AMP = np.linspace(1.0, 2.0, N)
PHASE = np.linspace(0.0, 3.0, N)
W = 3.0
X0 = 0.7


def f(x):
    return AMP * np.sin(W * x + PHASE)


def df(x):
    return AMP * W * np.cos(W * x + PHASE)


def noise(x, eps, seed=0):
    """Noise of norm eps, a deterministic function of the point (like a Boltzmann code's)."""
    if eps == 0:
        return np.zeros(N)
    rng = np.random.default_rng([seed, zlib.crc32(np.float64(x).tobytes())])
    n = rng.standard_normal(N)
    return eps * n / np.linalg.norm(n)


def norm(d):
    return float(np.linalg.norm(d))


def sweep(name, x0, model, cfg, **kw):
    """The sweep of ``model`` in ``cfg``'s mode (adaptive ones in rounds) and the values it
    evaluated."""
    spec = resolve_spec(name, x0, cfg, **kw)
    values = []

    def counted(v):
        values.append(v)
        return model(v)

    return run_sweep(name, x0, spec, counted, model(x0), norm, cfg), sorted(values)


def rel(a, b):
    return norm(a - b) / norm(b)


@pytest.mark.parametrize("eps,seed", [(1e-6, 0), (1e-6, 1), (1e-8, 2)])
@pytest.mark.parametrize("stencil", ["3-point", "5-point"])
def test_noise_limited_regime_picks_the_optimal_step(eps, seed, stencil):
    cfg = DerivativesConfig(mode="sweep", h_max=0.5, n_rungs=14, stencil=stencil)
    sw, _ = sweep("p", X0, lambda x: f(x) + noise(x, eps, seed), cfg)
    f3 = norm(W**3 * AMP * np.cos(W * X0 + PHASE))
    h_star = (3 * eps / (np.sqrt(2) * f3)) ** (1 / 3)
    e_star = f3 * h_star**2 / 6 + eps / (np.sqrt(2) * h_star)
    # within one rung (a factor 2) of the theoretical optimum ...
    assert 0.5 <= sw.step / h_star <= 2.0
    # ... and the error no worse than the theoretical best 3-point error
    assert norm(sw.derivative - df(X0)) <= 1.5 * e_star
    assert sw.verdict == "PASS" and sw.reason == "ok"
    # noise side of the ladder: changes grow as the step shrinks (~1/h)
    assert sw.deltas[-1] > 4 * sw.deltas[sw.chosen]


def test_truncation_limited_regime_matches_taylor():
    cfg = DerivativesConfig(mode="sweep", h_max=0.5, n_rungs=8)
    sw, _ = sweep("p", X0, f, cfg)
    K = len(sw.steps)
    # noise-free: changes fall like h^2 all the way; plateau = the smallest-step window
    ratios = sw.deltas[:-1] / sw.deltas[1:]
    np.testing.assert_allclose(ratios[2:], 4.0, rtol=0.02)
    assert sw.window == (K - 4, K) and sw.chosen == K - 3
    h = sw.step
    np.testing.assert_allclose(rel(sw.derivatives_3pt[sw.chosen], df(X0)), (W * h) ** 2 / 6, rtol=0.01)
    np.testing.assert_allclose(rel(sw.derivative, df(X0)), (W * h) ** 4 / 30, rtol=0.02)
    assert sw.stencil.startswith("5-point central")
    assert sw.verdict == "PASS"


@pytest.mark.parametrize("mode", ["sweep", "adaptive"])
def test_truncation_limited_verdict_when_ladder_stops_too_early(mode):
    cfg = DerivativesConfig(mode=mode, h_max=2.0, n_rungs=8)
    sw, _ = sweep("p", X0, f, cfg)
    assert sw.verdict in ("WARN", "FAIL")
    assert sw.reason == "truncation-limited"
    assert "n_rungs" in sw.message


@pytest.mark.parametrize("mode", ["sweep", "adaptive"])
def test_noise_limited_verdict_names_camb_accuracy_settings(mode):
    # a cosmological parameter with noise too large for any step of the ladder
    x0 = 0.3
    cfg = DerivativesConfig(mode=mode)
    sw, _ = sweep("Omega_m", x0, lambda x: f(x) + noise(x, 1e-3), cfg)
    assert sw.verdict in ("WARN", "FAIL")
    assert sw.reason == "noise-limited"
    for setting in ("accuracy_boost", "l_accuracy_boost", "k_max"):
        assert setting in sw.message


@pytest.mark.parametrize("mode", ["sweep", "adaptive"])
def test_function_without_plateau_fails(mode):
    # a jump at the fiducial: the 3-point derivative doubles at every rung
    jump = np.linspace(0.5, 1.0, N)
    sw, _ = sweep("p", X0, lambda x: f(x) + jump * (x > X0), DerivativesConfig(mode=mode))
    assert len(sw.steps) == 8  # the adaptive sweep evaluated the whole ladder
    np.testing.assert_allclose(sw.deltas, 0.5, rtol=0.15)  # -> 1/2 as h -> 0
    assert sw.verdict == "FAIL"
    assert sw.reason == "no plateau"


@pytest.mark.parametrize("mode", ["sweep", "adaptive"])
def test_zero_derivative_fails(mode):
    sw, _ = sweep("p", X0, lambda x: AMP.copy(), DerivativesConfig(mode=mode))
    assert sw.verdict == "FAIL" and sw.reason == "zero derivative"


def test_m_nu_near_zero_uses_one_sided_stencil():
    b = np.linspace(-1.0, 2.0, N)

    def model(m):  # smooth in m_nu, with a little noise so that large steps win
        return 1.0 + b * m + 0.3 * b * m**2 + noise(m, 1e-9)

    cfg = DerivativesConfig(mode="sweep", parameters={"m_nu": {"scale": 0.1, "h_max": 2.0}})
    spec = resolve_spec("m_nu", 0.06, cfg)
    ladder = plan_ladder("m_nu", 0.06, spec)
    # a central ladder would cross zero at the two top rungs
    assert ladder.steps[0] > 0.06 and ladder.steps[1] > 0.06
    assert ladder.stencils[:2] == ("forward", "forward")
    assert set(ladder.stencils[2:]) == {"central"}
    values = plan_points("m_nu", 0.06, spec)
    assert min(values) >= 0.0
    sw, _ = sweep("m_nu", 0.06, model, cfg)
    assert sw.chosen == 1 and sw.one_sided
    # no Richardson across a change of stencil (their h^2 coefficients differ)
    assert np.all(np.isnan(sw.derivatives_5pt[2])) and np.all(np.isfinite(sw.derivatives_5pt[1]))
    assert "forward" in sw.stencil
    assert sw.verdict == "PASS" and sw.reason == "boundary"
    assert "one-sided" in sw.message and "m_nu" in sw.message
    np.testing.assert_allclose(sw.derivative, b * (1 + 0.6 * 0.06), rtol=1e-5, atol=1e-6)


def test_default_m_nu_ladder_stays_central_and_zero_fiducial_goes_forward():
    spec = resolve_spec("m_nu", 0.06, DerivativesConfig())
    assert set(plan_ladder("m_nu", 0.06, spec).stencils) == {"central"}
    spec0 = resolve_spec("m_nu", 0.0, DerivativesConfig())
    lad0 = plan_ladder("m_nu", 0.0, spec0)
    assert set(lad0.stencils) == {"forward"} and min(lad0.values()) > 0
    assert spec0.units == "eV"


def test_upper_bound_gives_backward_stencil_and_no_value_leaves_domain():
    cfg = DerivativesConfig(mode="sweep", parameters={"q": {"upper": 1.0, "h_max": 0.5}})
    spec = resolve_spec("q", 0.9, cfg)
    lad = plan_ladder("q", 0.9, spec)
    assert "backward" in lad.stencils
    assert max(lad.values()) <= 1.0
    with pytest.raises(InputError):
        resolve_spec("q", 1.5, cfg)  # fiducial outside the domain
    tight = DerivativesConfig(mode="sweep", parameters={"q": {"lower": 0.0, "upper": 1.0, "h_max": 2.0}})
    with pytest.raises(InputError, match="q"):
        plan_ladder("q", 0.5, resolve_spec("q", 0.5, tight))


def test_default_scales():
    cfg = DerivativesConfig()
    assert resolve_spec("wa", 0.0, cfg).scale == 1.0
    assert resolve_spec("wa", 0.3, cfg).scale == 1.0  # offset: declared scale always
    assert resolve_spec("dz_3", 0.02, cfg).scale == 0.01
    assert resolve_spec("m_2", 0.0, cfg).scale == 0.01
    assert resolve_spec("h", 0.67, cfg).scale == 0.67
    assert resolve_spec("Omega_k", 0.0, cfg).scale == 0.1
    with pytest.raises(InputError):
        resolve_spec("Omega_b", 0.0, cfg)  # Omega_b > 0 strictly
    glob = DerivativesConfig(parameters={"dz_*": {"scale": 0.05}, "dz_1": {"scale": 0.02}})
    assert resolve_spec("dz_2", 0.0, glob).scale == 0.05
    assert resolve_spec("dz_1", 0.0, glob).scale == 0.02


def test_config_validation():
    with pytest.raises(ValidationError):
        DerivativesConfig(mode="smart")
    with pytest.raises(ValidationError):
        DerivativesConfig(unknown=1)
    with pytest.raises(ValidationError):
        DerivativesConfig(tol_pass=1e-2, tol_warn=1e-3)
    with pytest.raises(ValidationError):
        DerivativesConfig(n_rungs=3)  # fewer than the 4-rung window (mode adaptive, the default)
    with pytest.raises(ValidationError):
        DerivativesConfig(mode="sweep", n_rungs=3)
    with pytest.raises(ValidationError):
        DerivativesConfig(parameters={"h": {"h_mx": 0.1}})


def test_fixed_mode():
    cfg3 = DerivativesConfig(mode="fixed", stencil="3-point")
    sw, values = sweep("p", X0, f, cfg3)
    assert len(values) == 2 and len(sw.steps) == 1
    np.testing.assert_allclose(sw.step, 0.01 * X0)
    assert sw.verdict == "WARN" and sw.reason == "unchecked"
    np.testing.assert_allclose(rel(sw.derivative, df(X0)), (W * sw.step) ** 2 / 6, rtol=0.01)
    cfg5 = DerivativesConfig(mode="fixed", parameters={"p": {"step": 0.01}})
    sw5, values5 = sweep("p", X0, f, cfg5)
    assert len(values5) == 4 and sw5.step == 0.01
    assert sw5.verdict == "PASS" and sw5.stencil.startswith("5-point")
    np.testing.assert_allclose(rel(sw5.derivative, df(X0)), (W * 0.01) ** 4 / 30, rtol=0.02)


def test_fast_mode_reuses_a_known_step_and_checks_neighbours(tmp_path):
    model = lambda x: f(x) + noise(x, 1e-7)  # noqa: E731
    full, full_values = sweep("p", X0, model, DerivativesConfig(mode="sweep"))
    path = tmp_path / "sweeps.h5"
    with h5py.File(path, "w") as h:
        write_sweeps(h.create_group("derivatives"), [full], DerivativesConfig(mode="sweep"))
    with h5py.File(path, "r") as h:
        known = known_steps_from_hdf5(h["derivatives"])
    assert known == {"p": full.step}
    fast_cfg = DerivativesConfig(mode="fast")
    fast, fast_values = sweep("p", X0, model, fast_cfg, known_step=known["p"])
    np.testing.assert_array_equal(fast.steps, fast_steps(full.step))
    assert len(fast_values) == 6 < len(full_values)
    assert fast.step == full.step
    np.testing.assert_array_equal(fast.derivative, full.derivative)  # same points, same stencil
    assert fast.verdict == "PASS"
    # a parameter without a known step is swept in full
    assert resolve_spec("other", 1.0, fast_cfg).mode == "sweep"


def test_missing_or_nonfinite_signal_names_the_point():
    cfg = DerivativesConfig()
    spec = resolve_spec("h", 0.67, cfg)
    values = plan_points("h", 0.67, spec)
    signals = {v: f(v) for v in values[1:]}
    with pytest.raises(ComputationError, match=r"h = .*rung"):
        analyse("h", 0.67, spec, signals, f(0.67), norm, cfg)
    signals = {v: f(v) for v in values}
    signals[values[3]] = signals[values[3]] * np.nan
    with pytest.raises(ComputationError, match="not finite"):
        analyse("h", 0.67, spec, signals, f(0.67), norm, cfg)


def test_stem_cross_check_agrees_on_a_smooth_function():
    cfg = DerivativesConfig(stem_check=True)
    sw, _ = sweep("p", X0, lambda x: f(x) + noise(x, 1e-8), cfg)
    # a straight-line fit through symmetric points is biased only by f''' (like 3-point)
    assert sw.stem_difference is not None and sw.stem_difference < 1e-2


def test_hdf5_round_trip(tmp_path):
    cfg = DerivativesConfig(stem_check=True)
    sw, _ = sweep("m_nu", 0.06, lambda m: np.outer(1 + m, AMP[:4]), cfg)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as h:
        write_sweeps(h.create_group("derivatives"), {"m_nu": sw}, cfg)
    with h5py.File(path, "r") as h:
        g = h["derivatives"]
        assert g.attrs["tol_pass"] == cfg.tol_pass and g.attrs["window"] == 4
        assert g["m_nu/steps"].attrs["units"] == "eV"
        assert g["m_nu/derivative"].attrs["units"] == "1/eV"  # schema 1.1: "" is dimensionless
        back = read_sweeps(g)["m_nu"]
    assert isinstance(back, ParameterSweep)
    for key in ("steps", "deltas", "derivatives_3pt", "derivative", "stem_derivative"):
        np.testing.assert_array_equal(getattr(back, key), getattr(sw, key))
    np.testing.assert_array_equal(back.derivatives_5pt, sw.derivatives_5pt)
    for key in ("name", "stencil", "verdict", "reason", "message", "chosen", "window", "stencils", "spread"):
        assert getattr(back, key) == getattr(sw, key)
    assert back.derivative.shape == (len(np.atleast_1d(1 + 0.06)), 4)


def test_four_rung_window_rejects_a_false_plateau_at_tiny_steps():
    """Prescribed rung derivatives D_k = f'(1 + e_k): true truncation e_k = 1e-2 / 4^k on the
    top five rungs, then noise that by chance repeats itself on the three smallest rungs."""
    e = np.array([1e-2, 2.5e-3, 6.25e-4, 1.5625e-4, 3.90625e-5, 4e-3, 4e-3 + 1e-7, 4e-3 - 1e-7])
    v = AMP
    f0 = np.ones(N)

    def run(window):
        cfg = DerivativesConfig(mode="sweep", window=window)
        spec = resolve_spec("p", X0, cfg)
        lad = plan_ladder("p", X0, spec)
        assert set(lad.stencils) == {"central"}
        signals = {}
        for h, ek, (lo, hi) in zip(lad.steps, e, lad.points):
            signals[lo] = f0 - h * (1 + ek) * v
            signals[hi] = f0 + h * (1 + ek) * v
        return analyse("p", X0, spec, signals, f0, norm, cfg)

    three = run(3)
    assert three.chosen == 6  # fooled: the derivative is 0.4% off
    assert rel(three.derivative_3pt, v) > 3e-3
    four = run(4)
    assert four.window == (1, 5) and four.chosen == 2
    # Richardson removes the h^2 truncation exactly: (4 e_2 - e_1) / 3 = 0
    np.testing.assert_allclose(four.derivative, v, rtol=1e-9)
