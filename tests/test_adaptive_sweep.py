"""Adaptive sweeps (issue 15, item 2) on functions with known derivatives.

The adaptive mode evaluates only the rungs it needs of the sweep's ladder: it must reach the
same verdict as the full sweep, with a derivative within the plateau tolerance of the full
sweep's, evaluating each value once and fewer of them. References are analytic: for
f(x) = A sin(w x + phi) the 3-point central stencil's error is h^2 f'''/6 = -(w h)^2 f'/6, so
the rung-to-rung change between steps h and h/2 is (3/4)(w h)^2/6 = (w h)^2/8 relative to
f' (Taylor expansion; Abramowitz & Stegun 25.3.4); noise of norm eps per evaluation gives a
3-point error of about eps / (sqrt(2) h |f'|).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fishcast.derivatives import (
    START_MARGIN,
    DerivativesConfig,
    analyse,
    extend_ladder,
    plan_ladder,
    plan_points,
    resolve_spec,
    run_sweep,
    shrink_to_complete_rungs,
)

N = 40
AMP = np.linspace(1.0, 2.0, N)
PHASE = np.linspace(0.0, 3.0, N)
X0 = 0.7


def sine(w):
    def f(x):
        return AMP * np.sin(w * x + PHASE)

    def df(x):
        return AMP * w * np.cos(w * x + PHASE)

    return f, df


def with_noise(f, eps, seed=0):
    """f plus noise of norm eps, a deterministic function of the point (like a Boltzmann
    code's)."""
    def g(x):
        rng = np.random.default_rng([seed, zlib.crc32(np.float64(x).tobytes())])
        n = rng.standard_normal(N)
        return f(x) + eps * n / np.linalg.norm(n)

    return g


def norm(d):
    return float(np.linalg.norm(d))


def rel(a, b):
    return norm(a - b) / norm(b)


class Counting:
    """A model that counts its evaluations and refuses to be asked twice for one value."""

    def __init__(self, f):
        self.f = f
        self.seen: list[float] = []

    def __call__(self, x):
        assert x not in self.seen, f"{x} evaluated twice"
        self.seen.append(x)
        return self.f(x)


def both(model, cfg_kw=None, x0=X0, name="p", **kw):
    """(adaptive sweep, its evaluations, full sweep, its evaluations) of ``model``."""
    cfg_kw = cfg_kw or {}
    out = []
    for mode in ("adaptive", "sweep"):
        cfg = DerivativesConfig(mode=mode, **cfg_kw)
        spec = resolve_spec(name, x0, cfg, **kw)
        m = Counting(model)
        sw = run_sweep(name, x0, spec, m, model(x0), norm, cfg)
        out += [sw, len(m.seen)]
    return tuple(out)


OLD = {"start_rungs": "window"}  # the earlier start: a whole window of 4 rungs


def test_default_mode_is_adaptive_and_starts_from_two_central_rungs_of_the_sweep_ladder():
    cfg = DerivativesConfig()
    assert cfg.mode == "adaptive" and cfg.start_rungs == 2 and cfg.n_start == 2
    spec = resolve_spec("p", X0, cfg)
    full = resolve_spec("p", X0, DerivativesConfig(mode="sweep"))
    assert spec.n_rungs == 2 and spec.at_start and spec.short_start
    # the central rungs 3, 4 (relative 0.00625, 0.0031) of the expected plateau, rungs 2..5 of the
    # default ladder (0.0125 .. 0.0016), bit-identical floats, so that a full sweep and an adaptive
    # one share every evaluation (and every cache entry)
    assert list(spec.steps) == list(full.steps[3:5])
    assert spec.steps[1] / X0 == pytest.approx(0.003125)
    assert set(plan_points("p", X0, spec)) <= set(plan_points("p", X0, full))
    assert spec.max_step == full.steps[0] and spec.min_step == full.steps[-1]
    # the earlier start, a whole window (start_rungs: window, or its size)
    for kw in (OLD, {"start_rungs": 4}):
        old = resolve_spec("p", X0, DerivativesConfig(**kw))
        assert list(old.steps) == list(full.steps[2:6]) and old.at_start and not old.short_start
    # three rungs: the central ones, the upper when the counts differ by an odd number
    assert list(resolve_spec("p", X0, DerivativesConfig(start_rungs=3)).steps) == list(full.steps[2:5])


def test_the_registry_start_hint_moves_only_the_adaptive_start():
    """h's registry hint (start_halvings = 1): its adaptive start is the rungs 4, 5 (relative
    0.0031, 0.0016) of the same ladder, one rung below the others'; the ladder (the range it
    may grow over), modes 'sweep', 'fixed', 'fast' and a known step do not move."""
    from fishcast.parameters import Parameter, lookup

    assert lookup("h").start_halvings == 1 and lookup("Omega_m").start_halvings == 0
    cfg = DerivativesConfig()
    full = resolve_spec("h", 0.67, DerivativesConfig(mode="sweep"))
    spec = resolve_spec("h", 0.67, cfg)
    assert list(spec.steps) == list(full.steps[4:6]) and spec.steps[1] / 0.67 == pytest.approx(0.0015625)
    assert spec.max_step == full.steps[0] and spec.min_step == full.steps[-1]
    # the same ladder as a parameter without the hint
    plain = resolve_spec("h", 0.67, cfg, parameter=Parameter("h", step_scale=1.0))
    assert list(plain.steps) == list(full.steps[3:5])
    assert plain.max_step == spec.max_step and plain.min_step == spec.min_step
    # the full sweep is the one of a parameter without the hint (the golden forecast's ladders)
    plain_full = resolve_spec("h", 0.67, DerivativesConfig(mode="sweep"), parameter=Parameter("h"))
    assert list(full.steps) == list(plain_full.steps)
    for mode in ("fixed", "fast"):
        a = resolve_spec("h", 0.67, DerivativesConfig(mode=mode), known_step=0.01)
        b = resolve_spec("h", 0.67, DerivativesConfig(mode=mode), known_step=0.01, parameter=Parameter("h"))
        assert list(a.steps) == list(b.steps)
    # a known step places the start around it, hint or not
    assert list(resolve_spec("h", 0.67, cfg, known_step=0.004).steps) == [0.008, 0.004]
    # the whole window: rungs 3..6, one rung below the default's 2..5
    assert list(resolve_spec("h", 0.67, DerivativesConfig(start_rungs="window")).steps) == list(full.steps[3:7])
    # never below the ladder: the expected plateau is clipped to its last window
    low = resolve_spec("h", 0.67, DerivativesConfig(start_step=0.001))
    assert low.steps[-1] >= full.steps[-1]
    with pytest.raises(ValueError, match="start_halvings"):
        Parameter("q", start_halvings=-1)


@pytest.mark.parametrize("bad", [1, 5, 0, "all"])
def test_start_rungs_must_be_between_two_and_the_window(bad):
    with pytest.raises(ValueError, match="start_rungs"):
        DerivativesConfig(start_rungs=bad)


def test_smooth_function_passes_at_the_two_rung_start():
    """w = 3 (truncation (w h)^2 / 2 = 4.4e-5 between the start rungs 2h, h = 0.0044, 0.0022,
    A&S 25.3.4), noise 1e-9: the start establishes the plateau from its four points; the
    reported derivative is the 5-point one at h (error (w h)^4 / 30 ~ 1e-9 relative)."""
    f, df = sine(3.0)
    ad, n_ad, full, n_full = both(with_noise(f, 1e-9))
    assert ad.verdict == full.verdict == "PASS"
    assert ad.mode == "adaptive" and ad.rungs_used == 2 and ad.search_rungs == 8
    assert ad.basis == "start" and ad.plateau_rungs == 2 and ad.claim == "2-rung start"
    assert full.basis == "window" and full.claim == "4-rung window"
    assert (ad.extended_up, ad.extended_down) == (0, 0)
    h = ad.step
    assert ad.deltas[0] == pytest.approx((3.0 * h) ** 2 / 2, rel=0.05)
    assert ad.evens[0] < ad.deltas[0] / 100  # a cubic has no fourth difference; (w h)^3-small here
    assert ad.stencil.startswith("5-point central") and ad.chosen == 1
    assert n_ad == 4 and n_full == 16  # two points per rung, each evaluated once
    assert rel(ad.derivative, full.derivative) <= full.tol_pass
    assert rel(ad.derivative, df(X0)) <= 1e-6
    # the earlier start: the whole window of 4 rungs
    ad, n_ad, full, n_full = both(with_noise(f, 1e-9), OLD)
    assert ad.verdict == "PASS" and ad.rungs_used == 4 and n_ad == 8 and ad.basis == "window"
    assert rel(ad.derivative, df(X0)) <= 1e-6


def test_truncation_limited_start_extends_down_to_the_plateau():
    """w = 40: the change between rungs 2h and h is (w h)^2 / 2 = 3.8e-3 at the start (h =
    0.003125 * 0.7) and falls by 4 per rung; the fourth difference is 2% of it (truncation, not
    noise), so the ladder grows down, and the first window within 2e-3 is rungs 4..7 of the
    ladder: three rungs below the start, the full sweep's window."""
    f, df = sine(40.0)
    ad, n_ad, full, n_full = both(f)
    h = 0.003125 * X0
    assert (40.0 * h) ** 2 / 2 == pytest.approx(3.8e-3, rel=0.03)
    assert ad.verdict == full.verdict == "PASS" and ad.basis == "window"
    assert (ad.extended_up, ad.extended_down) == (0, 3)
    assert ad.deltas[0] == pytest.approx((40.0 * h) ** 2 / 2, rel=0.02)
    assert ad.evens[0] < ad.deltas[0] / 2  # mostly truncation: down
    assert n_ad == 10 < n_full
    assert ad.step == full.step == X0 * 0.05 / 2 ** 5  # the same window: rungs 4..7
    np.testing.assert_allclose(ad.derivative, full.derivative, rtol=0, atol=1e-12 * norm(full.derivative))
    assert rel(ad.derivative, df(X0)) <= 1e-4
    # the earlier start (rungs 2..5): two rungs down
    ad, n_ad, full, n_full = both(f, OLD)
    assert (ad.extended_up, ad.extended_down) == (0, 2) and n_ad == 12
    assert ad.step == full.step


def test_noise_limited_start_extends_up_to_the_plateau():
    """Noise of norm 3e-5 per evaluation (w = 1: truncation negligible): the start's change is
    1.5e-3, above tol_pass / 2.15, and its fourth difference about as large (noise: the two
    have the same expected size), so the ladder grows up; two rungs up (0.025 .. 0.0031) the
    window passes, as the full sweep's does."""
    f, df = sine(1.0)
    ad, n_ad, full, n_full = both(with_noise(f, 3e-5, seed=3))
    assert ad.verdict == full.verdict == "PASS" and ad.basis == "window"
    assert ad.deltas[-1] > full.tol_pass / START_MARGIN  # the start alone did not pass ...
    assert 0.5 < ad.evens[-1] / ad.deltas[-1] < 2.0  # ... and looked like noise
    assert (ad.extended_up, ad.extended_down) == (2, 0)
    assert n_ad == 8 < n_full
    assert ad.steps[0] == full.steps[1]
    assert rel(ad.derivative, full.derivative) <= full.tol_pass
    assert rel(ad.derivative, df(X0)) <= full.tol_pass
    # the earlier start (rungs 2..5): one rung up
    ad, n_ad, full, n_full = both(with_noise(f, 3e-5, seed=3), OLD)
    assert ad.verdict == "PASS" and (ad.extended_up, ad.extended_down) == (1, 0) and n_ad == 10
    assert ad.deltas[-1] > full.tol_pass > ad.score  # the starting window alone did not pass


def test_plateau_far_from_the_registry_scale_needs_a_longer_ladder():
    """w = 400: truncation keeps every window of the default 8-rung ladder above 2e-3 (at its
    smallest rung, h = 2.7e-4, (w h)^2/8 = 1.5e-3, but the window's top change is 16 times
    that). Both modes then give the same non-PASS verdict from the same eight rungs; with a
    16-rung range the adaptive sweep walks down to the plateau and evaluates only what it
    needs."""
    f, df = sine(400.0)
    ad, n_ad, full, n_full = both(f)
    assert full.verdict != "PASS" and full.reason == "truncation-limited"
    assert (ad.verdict, ad.reason, ad.message) == (full.verdict, full.reason, full.message)
    assert ad.rungs_used == 8 and n_ad == n_full  # the whole ladder: the full sweep's analysis
    np.testing.assert_array_equal(ad.deltas, full.deltas)
    assert ad.chosen == full.chosen
    ad, n_ad, full, n_full = both(f, {"n_rungs": 16})
    assert ad.verdict == full.verdict == "PASS"
    assert ad.extended_down >= 4 and n_ad < n_full
    assert rel(ad.derivative, full.derivative) <= full.tol_pass
    assert rel(ad.derivative, df(X0)) <= 1e-4


def test_no_plateau_anywhere_evaluates_the_whole_ladder_and_equals_the_full_sweep():
    """A signal that is noise-dominated at every step (norm 0.3 against f' ~ 30) has no
    plateau: the adaptive sweep must not stop early, and ends with the full sweep's verdict."""
    f, _ = sine(1.0)
    ad, n_ad, full, n_full = both(with_noise(f, 3e-1, seed=5))
    assert full.verdict != "PASS"
    assert (ad.verdict, ad.reason) == (full.verdict, full.reason)
    assert n_ad == n_full == 16
    np.testing.assert_array_equal(ad.steps, full.steps)


def test_zero_derivative_fails_like_the_full_sweep():
    ad, _, full, _ = both(lambda x: np.ones(N))
    assert (ad.verdict, ad.reason) == (full.verdict, full.reason) == ("FAIL", "zero derivative")


@pytest.mark.parametrize("seed", range(40))
def test_verdicts_equal_the_full_sweep_on_random_noise_and_truncation(seed):
    """Random mixtures of a truncation error a (w h)^2 and a noise floor eps/h, from clean
    plateaus to none: the verdict is the full sweep's, and a passing derivative lies within the
    plateau tolerance of the full sweep's."""
    rng = np.random.default_rng(seed)
    w = 10 ** rng.uniform(0, 2.5)
    eps = 10 ** rng.uniform(-9, -3)
    f, _ = sine(w)
    ad, n_ad, full, n_full = both(with_noise(f, eps, seed=seed))
    assert ad.verdict == full.verdict, (w, eps, ad.deltas, full.deltas)
    assert n_ad <= n_full
    if full.verdict == "PASS":
        assert rel(ad.derivative, full.derivative) <= full.tol_pass, (w, eps)
    else:
        assert ad.reason == full.reason


def test_known_step_places_the_start_around_it():
    """With a step h from an earlier run (steps_from) or the YAML, the start is 2h, h and h is
    its chosen rung, as in the run that chose it (the same 5-point derivative from the same
    points); the earlier start is the window 2h, h, h/2, h/4."""
    f, _ = sine(3.0)
    h = 0.7 * 0.05 / 2 ** 3
    for kw, rungs in (({}, [2.0, 1.0]), (OLD, [2.0, 1.0, 0.5, 0.25])):
        cfg = DerivativesConfig(**kw)
        spec = resolve_spec("p", X0, cfg, known_step=h)
        np.testing.assert_array_equal(spec.steps, h * np.array(rungs))
        sw = run_sweep("p", X0, spec, f, f(X0), norm, cfg)
        assert sw.verdict == "PASS" and sw.step == h and sw.rungs_used == len(rungs)
        assert sw.search_steps == (0.7 * 0.05, 0.7 * 0.05 / 2 ** 7)


def test_ladder_never_leaves_the_domain_nor_the_range():
    """m_nu at 0.06 eV with a ladder whose top step would cross zero: the adaptive ladder
    grows up only through rungs that fit a stencil in [0, inf), never above h_max."""
    cfg = DerivativesConfig(parameters={"m_nu": {"scale": 0.1, "h_max": 1.0}}, n_rungs=8)
    spec = resolve_spec("m_nu", 0.06, cfg)
    f = lambda x: np.array([np.sqrt(x + 0.01), x ** 2])  # noqa: E731
    seen = []

    def model(x):
        seen.append(x)
        return f(x)

    sw = run_sweep("m_nu", 0.06, spec, model, f(0.06), norm, cfg)
    assert min(seen) >= 0.0 and sw.steps[0] <= 0.1 * 1.0
    full = resolve_spec("m_nu", 0.06, DerivativesConfig(mode="sweep", **cfg.model_dump(exclude={"mode"})))
    assert set(seen) <= set(plan_points("m_nu", 0.06, full))


def test_extension_skips_failed_points_and_short_runs_grow_back():
    """derivatives.on_camb_failure: degrade: a rung whose point failed is dropped, the run of
    complete rungs left may be shorter than the window in mode 'adaptive', and the ladder grows
    the other way (never through the failed point)."""
    cfg = DerivativesConfig(**OLD)
    spec = resolve_spec("p", X0, cfg)
    lad = plan_ladder("p", X0, spec)
    bad = lad.points[1][0]  # the second rung's lower point

    def available(v):
        return v != bad

    short = shrink_to_complete_rungs("p", X0, spec, available, cfg)
    assert short is not None and short.n_rungs == 2  # rungs 2..3 of the starting window left
    assert short.steps[0] == spec.steps[2]
    grown = extend_ladder("p", X0, short, None, available)
    assert grown.n_rungs == 3 and grown.top_step == short.top_step  # down: not back through the failure
    # up from a full window: the rung above would need `bad` again only if it were that rung
    f, _ = sine(400.0)
    sig = {v: f(v) for v in plan_points("p", X0, spec)}
    sw = analyse("p", X0, spec, sig, f(X0), norm, cfg)
    up_blocked = extend_ladder("p", X0, spec, sw, lambda v: v not in plan_ladder(
        "p", X0, resolve_spec("p", X0, DerivativesConfig(mode="sweep"))).points[1])
    assert up_blocked is not None and up_blocked.top_step == spec.top_step  # went down instead


def test_a_two_rung_start_cut_by_a_failed_point_grows_to_a_window():
    """The default 2-rung start loses its lower rung (h) to a failed point: one rung (2h) is
    left, which cannot be judged; the ladder grows up (down would need the failed point again),
    and the two rungs it then has are no start any more: they never pass on the start's
    criterion, the ladder grows on to a whole window (here rungs 1..4 of the default ladder,
    all but the failed one), which passes."""
    cfg = DerivativesConfig()
    spec = resolve_spec("p", X0, cfg)
    bad = plan_ladder("p", X0, spec).points[1][0]

    def available(v):
        return v != bad

    short = shrink_to_complete_rungs("p", X0, spec, available, cfg)
    assert short.n_rungs == 1 and short.steps[0] == spec.steps[0] and not short.at_start
    grown = extend_ladder("p", X0, short, None, available)
    assert grown.n_rungs == 2 and grown.extended_up == 1 and not grown.at_start
    f, _ = sine(3.0)
    sig = {v: f(v) for v in plan_points("p", X0, grown)}
    sw = analyse("p", X0, grown, sig, f(X0), norm, cfg)
    assert sw.basis == "short" and sw.verdict != "PASS" and sw.score <= cfg.tol_pass / START_MARGIN
    while True:
        nxt = extend_ladder("p", X0, grown, sw, available)
        if nxt is None:
            break
        grown = nxt
        sig.update({v: f(v) for v in plan_points("p", X0, grown) if v not in sig})
        sw = analyse("p", X0, grown, sig, f(X0), norm, cfg)
    assert sw.verdict == "PASS" and sw.basis == "window" and sw.rungs_used == 4 and bad not in sig


def test_a_near_tie_never_trades_a_passing_window_for_a_failing_one():
    """Prescribed rung derivatives D_k = v (1 + e_k): the top window's largest change is 2.5e-3
    (not passing), the next window's 1.8e-3 (passing); they are within the tie factor 1.5, and
    ties go to larger steps -- but not from a passing window to one that does not pass."""
    e = np.array([0.0, 2.5e-3, 4.3e-3, 6.1e-3, 7.1e-3, 0.1, 0.3, 0.6])
    v = AMP
    f0 = np.ones(N)
    cfg = DerivativesConfig(mode="sweep")
    spec = resolve_spec("p", X0, cfg)
    lad = plan_ladder("p", X0, spec)
    signals = {}
    for h, ek, (lo, hi) in zip(lad.steps, e, lad.points):
        signals[lo] = f0 - h * (1 + ek) * v
        signals[hi] = f0 + h * (1 + ek) * v
    sw = analyse("p", X0, spec, signals, f0, norm, cfg)
    assert sw.deltas[0] == pytest.approx(2.5e-3, rel=1e-2)
    assert sw.deltas[1] == pytest.approx(1.8e-3, rel=1e-2) and sw.deltas[0] <= 1.5 * sw.deltas[1]
    assert sw.window == (1, 5) and sw.verdict == "PASS" and sw.score <= cfg.tol_pass


def test_the_file_records_the_mode_the_rungs_used_and_what_the_plateau_rests_on(tmp_path):
    import h5py

    from fishcast.io.sweeps import read_sweeps, write_sweeps

    f, _ = sine(40.0)
    cfg = DerivativesConfig()
    sw = run_sweep("p", X0, resolve_spec("p", X0, cfg), f, f(X0), norm, cfg)
    g3, _ = sine(3.0)
    start = run_sweep("q", X0, resolve_spec("q", X0, cfg), g3, g3(X0), norm, cfg)
    assert start.basis == "start"
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as h:
        write_sweeps(h.create_group("derivatives"), [sw, start], cfg)
    with h5py.File(path, "r") as h:
        g = h["derivatives"]
        assert g.attrs["mode"] == "adaptive" and g.attrs["start_step"] == 0.0125
        assert g.attrs["start_rungs"] == 2 and g.attrs["window"] == 4
        a = g["p"].attrs
        assert a["mode"] == "adaptive"
        assert (a["rungs_used"], a["search_rungs"], a["extended_up"], a["extended_down"]) == (5, 8, 0, 3)
        assert a["search_max_step"] == 0.05 * X0 and a["search_min_step"] == 0.05 * X0 / 2 ** 7
        assert (a["basis"], a["plateau_rungs"], a["claim"]) == ("window", 4, "4-rung window")
        assert len(g["p/steps"]) == 5 and g["p/even_changes"].shape == (4,)
        b = g["q"].attrs
        assert (b["basis"], b["plateau_rungs"], b["rungs_used"], b["claim"]) == ("start", 2, 2, "2-rung start")
        back = read_sweeps(g)
    assert (back["p"].extended_up, back["p"].extended_down, back["p"].search_steps) == (0, 3, sw.search_steps)
    assert back["q"].basis == "start" and back["q"].plateau_rungs == 2
    np.testing.assert_array_equal(back["q"].evens, start.evens)
    full = run_sweep("p", X0, resolve_spec("p", X0, DerivativesConfig(mode="sweep")), f, f(X0), norm,
                     DerivativesConfig(mode="sweep"))
    with h5py.File(path, "w") as h:
        write_sweeps(h.create_group("derivatives"), [full], DerivativesConfig(mode="sweep"))
    with h5py.File(path, "r") as h:
        a = h["derivatives/p"].attrs
        assert (a["rungs_used"], a["search_rungs"]) == (8, 8) and np.isnan(a["search_max_step"])
        assert a["basis"] == "window"
        assert read_sweeps(h["derivatives"])["p"].search_steps is None


def test_a_file_without_the_basis_reads_as_a_window(tmp_path):
    """Files written before the 2-rung start have no ``basis``: their sweeps and adaptive
    sweeps were judged on windows (fixed and fast modes on their own rungs)."""
    import h5py

    from fishcast.io.sweeps import read_sweep, write_sweep

    f, _ = sine(3.0)
    for kw, expect in (({"mode": "sweep"}, "window"), ({"mode": "adaptive", **OLD}, "window"), ({"mode": "fixed"}, "fixed")):
        cfg = DerivativesConfig(**kw)
        sw = run_sweep("p", X0, resolve_spec("p", X0, cfg), f, f(X0), norm, cfg)
        with h5py.File(tmp_path / f"{kw['mode']}.h5", "w") as h:
            g = h.create_group("p")
            write_sweep(g, sw)
            for key in ("basis", "plateau_rungs", "claim"):
                del g.attrs[key]
            del g["even_changes"]
            back = read_sweep(g)
        assert back.basis == expect and back.evens.shape == (0,) and back.claim == sw.claim


# ------------------------------------------------------------------ a start that agrees by coincidence
def odd_rungs(e, v=AMP, f0=None, cfg=None):
    """Signals with prescribed rung derivatives ``D_k = v (1 + e_k)`` on the default ladder of
    ``p`` (``f(x -+ h_k) = f0 -+ h_k D_k``: purely odd, no fourth difference), as a model."""
    f0 = np.ones(N) if f0 is None else f0
    lad = plan_ladder("p", X0, resolve_spec("p", X0, DerivativesConfig(mode="sweep")))
    table = {X0: f0}
    for h, ek, (lo, hi) in zip(lad.steps, e, lad.points):
        table[lo] = f0 - h * (1 + ek) * v
        table[hi] = f0 + h * (1 + ek) * v
    return lambda x: table[x]


def test_a_start_agreeing_by_a_coincidence_of_noise_is_caught_by_the_fourth_difference():
    """Noise of norm 1e-2 at every evaluation (f' ~ 10: changes of ~0.1 .. 5 between rungs,
    no window passes anywhere, the full sweep FAILs), except that at the four points of the
    start (rungs 3, 4) it is even -- n(x+h) = n(x-h), n(x+2h) = n(x-2h) -- so that it
    cancels in both 3-point derivatives: the start's rung-to-rung change is that of the clean
    signal (~1e-5, far within the tolerance). The start rungs agree by coincidence; the noise
    is still there, in the fourth difference, which the start must also pass. It does not:
    the ladder grows, and the adaptive sweep ends where the full sweep does (FAIL, the same
    reason, all eight rungs)."""
    f, _ = sine(3.0)
    eps = 1e-2
    lad = plan_ladder("p", X0, resolve_spec("p", X0, DerivativesConfig(mode="sweep")))
    even = {}
    for k, tag in ((3, 7), (4, 8)):  # the start's rungs: the same noise on both sides
        n = with_noise(lambda x: np.zeros(N), eps, seed=tag)(0.0)
        even.update({lad.points[k][0]: n, lad.points[k][1]: n})
    noisy = with_noise(f, eps, seed=11)

    def model(x):
        return f(x) + even[x] if x in even else noisy(x)

    ad, n_ad, full, n_full = both(model)
    start = analyse("p", X0, resolve_spec("p", X0, DerivativesConfig()),
                    {v: model(v) for v in lad.points[3] + lad.points[4]}, model(X0), norm, DerivativesConfig())
    assert start.basis == "start" and start.deltas[0] <= 1e-4  # the coincidence: the start's change is tiny ...
    assert start.evens[0] > 10 * full.tol_pass  # ... its fourth difference is not
    assert start.verdict != "PASS"
    assert full.verdict == "FAIL"
    assert (ad.verdict, ad.reason, ad.message) == (full.verdict, full.reason, full.message)
    assert ad.rungs_used == 8 and n_ad == n_full
    np.testing.assert_array_equal(ad.deltas, full.deltas)


def test_start_rungs_that_disagree_never_pass_where_the_full_sweep_fails():
    """Prescribed rung derivatives that change by 3% .. 20% from rung to rung everywhere (the
    full sweep FAILs, no plateau): the start's rungs disagree, and the adaptive sweep evaluates
    the whole ladder and gives the full sweep's verdict, reason and derivative."""
    e = np.array([0.0, 0.2, 0.05, 0.25, 0.1, 0.3, 0.0, 0.2])
    ad, n_ad, full, n_full = both(odd_rungs(e))
    assert full.verdict == "FAIL"
    assert (ad.verdict, ad.reason) == (full.verdict, full.reason) and ad.rungs_used == 8
    np.testing.assert_array_equal(ad.derivative, full.derivative)


def test_a_plateau_narrower_than_a_window_passes_at_the_start_and_says_so():
    """What a 2-rung start cannot see. The rung derivatives are equal on the start's rungs 3
    and 4 (change 0, and no fourth difference: the start's five values lie exactly on a
    line), and differ by 5% .. 10% between every other pair of rungs: the full sweep finds no
    window and FAILs. The start passes: its claim rests on its two rungs, and the sweep says
    so (basis 'start', '2-rung start', the message); the derivative it reports is the one of
    the flat pair (exact here). ``start_rungs: window`` restores the window-based claim and the
    full sweep's verdict; the default start's margin is what keeps such a pair from passing
    when the changes around it follow the truncation and noise laws (next test)."""
    e = np.array([0.3, 0.2, 0.1, 0.0, 0.0, 0.05, 0.1, 0.2])
    model = odd_rungs(e)
    ad, n_ad, full, n_full = both(model)
    assert full.verdict == "FAIL"
    assert ad.verdict == "PASS" and ad.basis == "start" and ad.claim == "2-rung start" and n_ad == 4
    assert "2-rung start" in ad.message and "no 4-rung window" in ad.message
    assert ad.deltas[0] <= 1e-12 and ad.evens[0] <= 1e-12
    np.testing.assert_allclose(ad.derivative, AMP, rtol=1e-12)
    ad, n_ad, full, n_full = both(model, OLD)
    assert (ad.verdict, ad.reason) == (full.verdict, full.reason) == ("FAIL", full.reason)


@pytest.mark.parametrize("share", np.linspace(0.0, 1.0, 11))
def test_the_start_margin_implies_a_passing_window(share):
    """The margin's derivation (module docstring): rung-to-rung changes made of a truncation
    part growing 4x per rung up and a noise part growing 2x per rung down, ``share`` the
    truncation's part at the start pair (rungs 3, 4), scaled so that the start passes just
    (its change 0.999 tol_pass / START_MARGIN): whatever the share, the full sweep passes too
    -- the verdicts are equal -- and the adaptive derivative is within tol_pass of the full
    sweep's. The changes are made exact by prescribing the rung derivatives D_k = v (1 + e_k),
    with e_k - e_{k+1} = change_k (a change of e relative to 1 + e_{k+1} ~ 1)."""
    cfg = DerivativesConfig()
    c0 = 0.999 * cfg.tol_pass / START_MARGIN
    k = np.arange(7)
    change = c0 * (share * 4.0 ** (3 - k) + (1 - share) * 2.0 ** (k - 3))
    e = np.concatenate([np.cumsum(change[::-1])[::-1], [0.0]])
    ad, _, full, _ = both(odd_rungs(e))
    assert ad.basis == "start" and ad.verdict == "PASS"
    assert full.verdict == "PASS", full.deltas
    assert rel(ad.derivative, full.derivative) <= full.tol_pass
    # a little more and the start does not pass on its own: the ladder grows to a window
    ad, _, full, _ = both(odd_rungs(e * 1.2))
    assert ad.basis == "window" and ad.verdict == full.verdict


def test_fishcast_stability_says_what_each_verdict_rests_on(tmp_path):
    """The derivative table of ``fishcast stability`` names, per parameter, the rungs
    evaluated and what the verdict rests on: a 2-rung start (with a line saying what that
    means), or a 4-rung window."""
    import h5py
    from click.testing import CliRunner

    from fishcast.cli.main import cli
    from fishcast.io.sweeps import write_sweeps

    cfg = DerivativesConfig()
    f3, _ = sine(3.0)
    f40, _ = sine(40.0)
    sweeps = [run_sweep(n, X0, resolve_spec(n, X0, cfg), f, f(X0), norm, cfg) for n, f in (("p", f3), ("q", f40))]
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as h:
        write_sweeps(h.create_group("derivatives"), sweeps, cfg)
    out = CliRunner().invoke(cli, ["stability", str(path)])
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line for line in out.output.splitlines() if line.split()[:1] in (["p"], ["q"])}
    assert "2/8" in rows["p"] and "2-rung start" in rows["p"]
    assert "5/8" in rows["q"] and "4-rung window" in rows["q"]
    assert "verdict rests on" in out.output
    assert "no window of the full sweep was evaluated" in out.output


def test_steps_from_an_earlier_file_start_with_as_many_rungs_as_its_verdicts_rested_on(tmp_path):
    """``steps_from``: a parameter whose earlier verdict rested on a 2-rung start starts from
    2h, h again; one whose verdict rested on a window starts from that window (2h .. h/4): in
    both cases the same derivative from the same points, no new evaluation."""
    import h5py

    from fishcast.io.sweeps import known_rungs_from_hdf5, known_steps_from_hdf5, write_sweeps

    cfg = DerivativesConfig()
    models = {"p": sine(3.0)[0], "q": sine(40.0)[0]}
    counted = {n: Counting(f) for n, f in models.items()}
    earlier = {n: run_sweep(n, X0, resolve_spec(n, X0, cfg), counted[n], f(X0), norm, cfg) for n, f in models.items()}
    assert (earlier["p"].basis, earlier["q"].basis) == ("start", "window")
    with h5py.File(tmp_path / "e.h5", "w") as h:
        write_sweeps(h.create_group("derivatives"), earlier, cfg)
    with h5py.File(tmp_path / "e.h5", "r") as h:
        steps, rungs = known_steps_from_hdf5(h["derivatives"]), known_rungs_from_hdf5(h["derivatives"])
    assert rungs == {"p": 2, "q": 4}
    for n, f in models.items():
        spec = resolve_spec(n, X0, cfg, known_step=steps[n], known_rungs=rungs[n])
        assert spec.n_rungs == rungs[n] and spec.steps[1] == earlier[n].step
        m = Counting(f)
        again = run_sweep(n, X0, spec, m, f(X0), norm, cfg)
        assert set(m.seen) <= set(counted[n].seen)  # nothing the earlier run did not evaluate
        assert again.verdict == "PASS" and again.step == earlier[n].step and again.basis == earlier[n].basis
        np.testing.assert_array_equal(again.derivative, earlier[n].derivative)
    # a YAML step is no earlier verdict: the start is the configured one
    cfg_step = DerivativesConfig(parameters={"q": {"step": steps["q"]}})
    assert resolve_spec("q", X0, cfg_step, known_step=steps["q"], known_rungs=4).n_rungs == 2

