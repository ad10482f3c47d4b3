"""Hardening, round two (issue 14): classes of faults, several instances each.

1. Numbers that must never reach CAMB: every number that becomes a CAMB input or a step is
   finite and inside a physical or configured range before planning; every planned point
   is checked before CAMB is called. CAMB 2.0.5 ends the whole process from its Fortran
   (``thermo out of bounds`` / ``ERROR STOP``, exit 1, no Python exception) at h = 90 and
   h = 100 (measured here): such input must never get that far.
2. The cache is trusted by name only (tests further down).
3. Reading files (tests further down).
6. Numerics that pass silently; 7. batch messages; 8. a fresh clone (further down).
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fishcast import camb_ranges
from tests.test_faults import TOY, invoke

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXE = pathlib.Path(sys.executable).with_name("fishcast")


@pytest.fixture
def no_camb(monkeypatch):
    """CAMB may not be called: its transfer-function entry point raises (a call is a failure
    of the test, reported as an AssertionError, not a fishcast error)."""
    import camb

    calls = []

    def refuse(*a, **kw):
        calls.append(a)
        raise AssertionError("CAMB was called")

    monkeypatch.setattr(camb, "get_transfer_functions", refuse)
    return calls


def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ======================================================= 1. numbers that must never reach CAMB
#: fiducial values that are schema-valid numbers but outside what CAMB may be given; several
#: of them (h = 90) end the process inside CAMB's Fortran when they get through
BAD_FIDUCIALS = [
    ("h: 0.6736", "h: 90", "parameters.fiducial.h"),
    ("h: 0.6736", "h: 100.0", "parameters.fiducial.h"),
    ("h: 0.6736", "h: 0.05", "parameters.fiducial.h"),
    ("Omega_b: 0.0493", "Omega_b: 1.0e-6", "parameters.fiducial.Omega_b"),
    ("Omega_m: 0.3153", "Omega_m: 0.05", "parameters.fiducial.Omega_m"),     # no room for CDM
    ("Omega_m: 0.3153", "Omega_m: 0.3153, Omega_k: -0.9", "parameters.fiducial.Omega_k"),
    ("Omega_m: 0.3153", "Omega_m: 0.3153, w0: -0.5, wa: 0.5", "parameters.fiducial.wa"),
    ("Omega_m: 0.3153", "Omega_m: 0.3153, m_nu: 20", "parameters.fiducial.m_nu"),
    ("sigma8: 0.8111", "sigma8: 1.0e5", "parameters.fiducial.sigma8"),
    ("sigma8: 0.8111", "A_s: 1.0", "parameters.fiducial.A_s"),
    ("h: 0.6736", "h: 1.0e308", "parameters.fiducial.h"),
    ("h: 0.6736", "h: .inf", "parameters.fiducial.h"),
    ("h: 0.6736", "h: -.inf", "parameters.fiducial.h"),
    ("n_s: 0.9649", "n_s: .nan", "parameters.fiducial.n_s"),
]


@pytest.mark.parametrize("old,new,key", BAD_FIDUCIALS)
def test_fiducial_outside_what_camb_may_be_given_is_bad_input(old, new, key, tmp_path, no_camb):
    text = TOY.replace(old, new).replace("free: [Omega_m, sigma8, b_B_1]", "free: [Omega_m, b_B_1]")
    assert text != TOY
    s = _write(tmp_path, text)
    for args in (("validate", s), ("run", s, "-o", tmp_path / "o.h5", "--no-cache", "-q")):
        res = invoke(*args)
        assert res.exit_code == 2, res.output
        assert re.search(rf"s\.yaml:\d+: {re.escape(key)}: ", res.output), res.output
    assert not (tmp_path / "o.h5").exists()
    assert no_camb == []


@pytest.mark.parametrize("value", ["90", "0.05", ".inf", "1e400", "true"])
def test_set_values_are_checked_like_the_file(value, tmp_path, no_camb):
    s = _write(tmp_path, TOY)
    res = invoke("run", s, "-o", tmp_path / "o.h5", "--no-cache", "-q", "--set", f"parameters.fiducial.h={value}")
    assert res.exit_code == 2, res.output
    assert "parameters.fiducial.h" in res.output
    assert no_camb == []


#: derivative settings whose stencil points leave what CAMB may be given (or are not finite)
BAD_STEPS = [
    # a ladder whose top step takes h to 0.67 * (1 +- 1e300)
    ("derivatives: {mode: fixed, stencil: 3-point}",
     "derivatives: {mode: fixed, stencil: 3-point, parameters: {Omega_m: {step: 1.0e300}}}", "Omega_m"),
    ("derivatives: {mode: fixed, stencil: 3-point}",
     "derivatives: {mode: sweep, h_max: 1.0e300, n_rungs: 4}", "Omega_m"),
    # a fixed step of 0.3 in Omega_m: Omega_m - h = 0.015 leaves no cold dark matter
    ("derivatives: {mode: fixed, stencil: 3-point}",
     "derivatives: {mode: fixed, stencil: 3-point, parameters: {Omega_m: {step: 0.3}}}", "Omega_m"),
    # w0 + wa >= 0 reached by the stencil (w0 = -0.9 +- 0.95)
    ("free: [Omega_m, sigma8, b_B_1]", "free: [w0, b_B_1]\n  derivatives_dummy: 0", "w0"),
    # an infinite h_max, or a boolean one
    ("derivatives: {mode: fixed, stencil: 3-point}", "derivatives: {mode: sweep, h_max: .inf}", "derivatives.h_max"),
    ("derivatives: {mode: fixed, stencil: 3-point}", "derivatives: {mode: sweep, h_max: true}", "derivatives.h_max"),
    ("derivatives: {mode: fixed, stencil: 3-point}",
     "derivatives: {mode: fixed, parameters: {sigma8: {scale: .inf}}}", "sigma8.scale"),
    # a nuisance step that is not finite
    ("derivatives: {mode: fixed, stencil: 3-point}",
     "derivatives: {mode: fixed, stencil: 3-point, parameters: {b_B_1: {step: 1.0e308}, Omega_m: {step: 0.001}}}",
     "b_B_1"),
]


@pytest.mark.parametrize("old,new,what", BAD_STEPS)
def test_stencil_points_outside_what_camb_may_be_given_are_refused_before_camb(old, new, what, tmp_path, no_camb):
    if what == "w0":
        text = TOY.replace("sigma8: 0.8111,", "sigma8: 0.8111, w0: -0.9, wa: 0.0,").replace(
            "free: [Omega_m, sigma8, b_B_1]", "free: [w0, b_B_1]").replace(
            "derivatives: {mode: fixed, stencil: 3-point}",
            "derivatives: {mode: fixed, stencil: 3-point, parameters: {w0: {step: 0.95}}}")
    else:
        text = TOY.replace(old, new)
    assert text != TOY
    s = _write(tmp_path, text)
    res = invoke("run", s, "-o", tmp_path / "o.h5", "--no-cache", "-q")
    assert res.exit_code == 2, res.output
    assert what in res.output, res.output
    assert not (tmp_path / "o.h5").exists()
    assert no_camb == []


def test_grid_axis_values_outside_the_range_fail_their_design_alone(tmp_path, no_camb):
    from fishcast.pipeline.batch import load_grid, plan_batch

    _write(tmp_path, TOY, "toy.yaml")
    g = _write(tmp_path, textwrap.dedent("""\
        name: g
        survey: toy.yaml
        axes:
          parameters.fiducial.h: [0.6736, 90, 0.01, 1.0e308, .inf]
        """), "grid.yaml")
    grid = load_grid(g)
    plan = plan_batch(grid)
    assert [d.design.name for d in plan.planned] == ["h=0.6736"]
    failed = {f.name: f for f in plan.failed}
    assert len(failed) == 4
    for f in failed.values():
        assert f.exit_code == 2 and "parameters.fiducial.h" in f.reason, f.reason
    assert no_camb == []


@pytest.mark.parametrize("step", [float("inf"), float("nan"), -0.01, 0.0])
def test_steps_from_a_file_with_a_bad_step(step, tmp_path, toy_h5, no_camb):
    bad = tmp_path / "steps.h5"
    bad.write_bytes(toy_h5.read_bytes())
    with h5py.File(bad, "r+") as f:
        f["derivatives/Omega_m"].attrs["chosen_step"] = step
    text = TOY.replace("derivatives: {mode: fixed, stencil: 3-point}",
                       f"derivatives: {{mode: fast, steps_from: {bad}}}")
    s = _write(tmp_path, text)
    res = invoke("run", s, "-o", tmp_path / "o.h5", "--no-cache", "-q")
    assert res.exit_code == 2, res.output
    assert "steps.h5" in res.output and "Omega_m" in res.output, res.output
    assert no_camb == []


@pytest.fixture(scope="module")
def toy_h5(tmp_path_factory, cache_dir):
    d = tmp_path_factory.mktemp("r2toy")
    (d / "toy.yaml").write_text(TOY)
    out = d / "toy.h5"
    res = invoke("run", d / "toy.yaml", "-o", out, "--cache-dir", cache_dir, "-q")
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("point", [
    {"h": 90.0},                      # CAMB 2.0.5: 'thermo out of bounds', ERROR STOP: the process dies
    {"h": 100.0},
    {"Omega_b": 1e-6},
    {"w0": -0.5, "wa": 0.6},
    {"h": float("nan")},
])
def test_the_last_guard_before_camb_in_a_real_process(point, tmp_path):
    """The cosmology backend itself refuses a point outside the safe ranges (a planning bug
    can never become a native abort). Run in a subprocess: a CAMB abort would kill pytest."""
    p = {"Omega_m": 0.3, "Omega_b": 0.05, "h": 0.7, "n_s": 0.96, "sigma8": 0.8, **point}
    code = textwrap.dedent("""
        import json, sys
        from fishcast.cosmology import compute, CosmologySettings
        from fishcast.errors import ComputationError
        try:
            compute(json.loads(sys.argv[1]), CosmologySettings(nonlinear_model="none", z_max=1.0, n_z=10, k_max=1.0, n_k=50))
        except ComputationError as exc:
            print("REFUSED", exc)
        """)
    r = subprocess.run([sys.executable, "-c", code, json.dumps(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("REFUSED refusing to call CAMB"), r.stdout + r.stderr[-500:]


def test_a_run_in_a_real_process_never_reaches_camb_with_h_90(tmp_path):
    """What the issue saw: the process died in CAMB with no message. Now: exit 2, a line."""
    s = _write(tmp_path, TOY)
    r = subprocess.run([str(EXE), "run", str(s), "-o", str(tmp_path / "o.h5"), "--no-cache",
                        "--set", "parameters.fiducial.h=90"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "parameters.fiducial.h" in r.stderr and "Traceback" not in r.stderr
    assert "ERROR STOP" not in r.stdout + r.stderr


#: hypothesis: floats of every kind, including the extremes
EXTREME_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                     -1.7976931348623157e308, 1e-300, 1e300]),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(camb_ranges.SAFE_RANGES)), EXTREME_FLOATS, min_size=1))
def test_every_float_is_judged_and_only_safe_points_pass(values):
    point = {"Omega_m": 0.3, "Omega_b": 0.05, "h": 0.7, "n_s": 0.96, "sigma8": 0.8, **values}
    found = camb_ranges.problems(point)
    safe = all(camb_ranges.SAFE_RANGES[n].contains(v) for n, v in point.items())
    if not safe:
        assert found
    if not found:
        assert all(math.isfinite(v) for v in point.values())
        assert point["Omega_m"] > point["Omega_b"]
        assert point.get("w0", -1.0) + point.get("wa", 0.0) < 0

