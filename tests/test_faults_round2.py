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
    ("Omega_m: 0.3153", "Omega_m: 0.3153, w0: -0.5, wa: 0.6", "parameters.fiducial.wa"),
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
    # a step lost in rounding (x + 1e-300 == x)
    ("derivatives: {mode: fixed, stencil: 3-point}",
     "derivatives: {mode: fixed, stencil: 3-point, parameters: {Omega_m: {step: 1.0e-300}}}", "lost in rounding"),
    ("derivatives: {mode: fixed, stencil: 3-point}",
     "derivatives: {mode: fixed, stencil: 3-point, parameters: {b_B_1: {step: 1.0e-20}}}", "lost in rounding"),
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
    assert re.search(r"s\.yaml:\d+: ", res.output), res.output  # located: file, line and key
    assert not (tmp_path / "o.h5").exists()
    assert no_camb == []


def test_grid_axis_values_outside_the_range_fail_their_design_alone(tmp_path, no_camb):
    from fishcast.pipeline.batch import load_grid, plan_batch

    _write(tmp_path, TOY, "toy.yaml")
    g = _write(tmp_path, textwrap.dedent("""\
        name: g
        survey: toy.yaml
        axes:
          parameters.fiducial.h: [0.6736, 90, 0.01, 1.0e308, -5.0]
        """), "grid.yaml")
    grid = load_grid(g)
    plan = plan_batch(grid)
    assert [d.design.name for d in plan.planned] == ["h=0.6736"]
    failed = {f.name: f for f in plan.failed}
    assert len(failed) == 4
    for f in failed.values():
        assert f.exit_code == 2 and "parameters.fiducial.h" in f.reason, f.reason
    assert no_camb == []
    # a value that is not a finite number is refused with the grid itself, located
    from fishcast.errors import SurveyError

    g.write_text(g.read_text().replace("-5.0", ".inf"))
    with pytest.raises(SurveyError, match=r"grid\.yaml:4: axes\.parameters\.fiducial\.h\[4\]: must be a finite number"):
        load_grid(g)


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
        assert point.get("w0", -1.0) + point.get("wa", 0.0) <= 0



# ======================================================================= 3. reading files
class Hang(BaseException):
    pass


@pytest.fixture
def no_hang():
    """A read that blocks (a FIFO with no writer) fails the test after 20 s instead of hanging."""
    import signal

    def on_alarm(signum, frame):
        raise Hang("blocked reading a special file")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 20.0)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _special(kind: str, tmp_path: pathlib.Path) -> pathlib.Path:
    import os

    if kind == "fifo":
        p = tmp_path / "special"
        os.mkfifo(p)
        return p
    if kind == "symlink to a fifo":
        f = tmp_path / "fifo"
        os.mkfifo(f)
        (tmp_path / "special").symlink_to(f)
        return tmp_path / "special"
    if kind == "folder":
        (tmp_path / "special").mkdir()
        return tmp_path / "special"
    return pathlib.Path({"/dev/zero": "/dev/zero", "/dev/null": "/dev/null", "/dev/urandom": "/dev/urandom"}[kind])


SPECIAL = ["fifo", "symlink to a fifo", "folder", "/dev/zero", "/dev/null", "/dev/urandom"]


def _readers(special: pathlib.Path, tmp_path: pathlib.Path, good_h5: pathlib.Path) -> dict[str, list]:
    """Commands that read ``special`` as: a survey, a grid, an n(z) table, a density table,
    an <L>/L* table, a text matrix, a paramnames file, an HDF5 input, steps_from."""
    nz = TOY  # the toy has no table: WL surveys read n(z) and <L>/L*
    wl = textwrap.dedent(f"""\
        name: wl
        cosmology: {{nonlinear_model: none, accuracy: {{n_z: 20, n_k: 60, k_max: 2.0}}}}
        parameters:
          fiducial: {{Omega_m: 0.3, Omega_b: 0.05, h: 0.7, n_s: 0.96, sigma8: 0.8}}
          free: [Omega_m]
        probes:
          weak_lensing:
            f_sky: 0.1
            ell: {{min: 10, max: 100, n_bands: 3}}
            n_gal: 10
            shape_noise: {{sigma_e: 0.3, convention: multiplies_inverse_density}}
            nz: {{type: table, file: {special}}}
            bins: {{type: equipopulated, n_bins: 2, z_min: 0.1, z_max: 1.5}}
            photoz: {{sigma_b: 0.05}}
            intrinsic_alignment: {{model: none}}
        """)
    lum = wl.replace(f"nz: {{type: table, file: {special}}}", "nz: {type: smail, z0: 0.64, alpha: 2.0, beta: 1.5}") \
            .replace("intrinsic_alignment: {model: none}",
                     f"intrinsic_alignment: {{model: nla, C_IA: 0.0134, luminosity_ratio_file: {special}}}")
    dens = nz.replace("density: {unit: (h/Mpc)^3, values: [1.0e-3]}", f"density: {{unit: (h/Mpc)^3, file: {special}}}")
    steps = TOY.replace("derivatives: {mode: fixed, stencil: 3-point}", f"derivatives: {{mode: fast, steps_from: {special}}}")
    files = {"nz": wl, "lum": lum, "dens": dens, "steps": steps}
    for k, v in files.items():
        (tmp_path / f"{k}.yaml").write_text(v)
    pn = tmp_path / "m.paramnames"
    pn.write_text("a a\nb b\n")
    m = tmp_path / "m.txt"
    m.write_text("1 0\n0 1\n")
    return {
        "survey": ["validate", special],
        "grid": ["batch", special, "-o", tmp_path / "out"],
        "n(z) table": ["validate", tmp_path / "nz.yaml"],
        "<L>/L* table": ["validate", tmp_path / "lum.yaml"],
        "density table": ["validate", tmp_path / "dens.yaml"],
        "steps_from": ["run", tmp_path / "steps.yaml", "-o", tmp_path / "o.h5", "--no-cache"],
        "text matrix": ["import", special, "--paramnames", pn, "-o", tmp_path / "i.h5"],
        "paramnames": ["import", m, "--paramnames", special, "-o", tmp_path / "i.h5"],
        "show": ["show", special],
        "stability": ["stability", special],
        "compare": ["compare", good_h5, special],
        "combine": ["combine", good_h5, special, "-o", tmp_path / "c.h5"],
        "export": ["export", special, "--to", "text", "-o", tmp_path / "e"],
    }


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_files_are_refused_without_blocking(kind, tmp_path, toy_h5, no_hang, no_camb):
    special = _special(kind, tmp_path)
    for what, args in _readers(special, tmp_path, toy_h5).items():
        if kind == "folder" and what in ("survey", "grid"):
            continue  # click refuses a folder for these arguments itself (exit 2, tested elsewhere)
        res = invoke(*args)
        assert res.exit_code == 2, (what, res.output)
        out = res.output.lower()
        assert str(special).lower() in out or special.name.lower() in out, (what, res.output)
        assert any(w in out for w in ("fifo", "device", "folder", "directory", "not a regular")), (what, res.output)
    assert no_camb == []


def test_reading_helper_refuses_a_file_swapped_for_a_fifo_after_the_check(tmp_path, monkeypatch, no_hang):
    """The descriptor is opened non-blocking and checked again (a race between stat and open)."""
    import os

    from fishcast.errors import FileFormatError
    from fishcast.io import reading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    real = tmp_path / "real.yaml"
    real.write_text("a: 1\n")
    monkeypatch.setattr(reading, "check_regular", lambda *a, **k: os.stat(real))
    with pytest.raises(FileFormatError, match="FIFO"):
        reading.read_bytes(fifo, "survey file")


@pytest.mark.parametrize("what,cap", [("survey", "MAX_YAML_BYTES"), ("table", "MAX_TABLE_BYTES"),
                                      ("matrix", "MAX_MATRIX_BYTES")])
def test_a_too_large_file_is_refused_from_its_size(what, cap, tmp_path, monkeypatch):
    from fishcast.io import reading

    monkeypatch.setattr(reading, cap, 10_000)
    big = tmp_path / "big.txt"
    big.write_text("0.1 0.2\n" * 5000)  # 40 kB
    opened = []
    real_open = reading.os.open
    monkeypatch.setattr(reading.os, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    if what == "survey":
        res = invoke("validate", big)
    elif what == "table":
        (tmp_path / "s.yaml").write_text(TOY.replace("density: {unit: (h/Mpc)^3, values: [1.0e-3]}",
                                                     f"density: {{unit: (h/Mpc)^3, file: {big}}}"))
        res = invoke("validate", tmp_path / "s.yaml")
    else:
        (tmp_path / "p.paramnames").write_text("a\nb\n")
        res = invoke("import", big, "--paramnames", tmp_path / "p.paramnames", "-o", tmp_path / "o.h5")
    assert res.exit_code == 2, res.output
    assert "big.txt" in res.output and "MiB" in res.output and "refused" in res.output, res.output
    assert not any("big.txt" in str(a[0]) for a in opened)  # refused from stat, never opened


def test_a_large_yaml_is_refused_before_composing_it(tmp_path):
    """A 5 MB survey is refused from its size; a flat list of 100,000 nodes is refused
    while composing, in bounded memory (PyYAML's nodes take ~1 kB each)."""
    import tracemalloc

    big = tmp_path / "big.yaml"
    big.write_text("name: x\nlist: [" + "1," * 2_500_000 + "1]\n")
    res = invoke("validate", big)
    assert res.exit_code == 2 and "more than a survey file may be" in res.output, res.output
    flat = tmp_path / "flat.yaml"
    flat.write_text("name: x\nlist: [" + "1," * 100_000 + "1]\n")
    tracemalloc.start()
    try:
        res = invoke("validate", flat)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.exit_code == 2 and "50000 nodes" in res.output, res.output
    assert peak < 600 * 1024**2


#: bytes that are not UTF-8, control characters, and where they go: a survey, a grid, a table
BAD_TEXT = [
    (b"\xff", "byte 0xff"), (b"\xc3\x28", "byte 0xc3"), (b"\xed\xa0\x80", "byte 0xed"),  # invalid, surrogate
    ("\x00".encode(), "U+0000 (NUL)"), ("\x1b".encode(), "U+001B (ESC)"), ("\x07".encode(), "U+0007 (BEL)"),
    ("\x7f".encode(), "U+007F (DEL)"), ("\x85".encode(), "U+0085"), ("\x9b".encode(), "U+009B"),
]


@pytest.mark.parametrize("bad,expect", BAD_TEXT)
@pytest.mark.parametrize("where", ["survey", "grid", "table", "matrix"])
def test_decode_errors_and_control_characters_are_located(bad, expect, where, tmp_path):
    if where == "survey":
        raw = TOY.encode().replace(b"f_sky: 0.1", b"f_sky: 0.1" + bad)
        target = _write(tmp_path, "").with_name("bad.yaml")
        target.write_bytes(raw)
        args, line = ["validate", target], 13
    elif where == "grid":
        _write(tmp_path, TOY, "toy.yaml")
        target = tmp_path / "bad.yaml"
        target.write_bytes(b"name: g\nsurvey: toy.yaml\naxes:\n  probes.counts_in_cells.f_sky: [0.1, 0.2" + bad + b"]\n")
        args, line = ["batch", target, "-o", tmp_path / "out"], 4
    elif where == "table":
        target = tmp_path / "bad.txt"
        target.write_bytes(b"# z n\n0.5 1e-3\n1.0 1e-3" + bad + b"\n1.5 1e-3\n")
        (tmp_path / "s.yaml").write_text(TOY.replace("density: {unit: (h/Mpc)^3, values: [1.0e-3]}",
                                                     f"density: {{unit: (h/Mpc)^3, file: {target}}}"))
        args, line = ["validate", tmp_path / "s.yaml"], 3
    else:
        target = tmp_path / "bad.txt"
        target.write_bytes(b"# a b\n1 0\n0 1" + bad + b"\n")
        (tmp_path / "p.paramnames").write_text("a\nb\n")
        args, line = ["import", target, "--paramnames", tmp_path / "p.paramnames", "-o", tmp_path / "o.h5"], 3
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert f"{target}:{line}:" in res.output and expect in res.output, res.output


@pytest.mark.parametrize("key", ["probes.counts_in_cells.tracers.².name", "probes.counts_in_cells.tracers.١.name",
                                 "probes.counts_in_cells.tracers.𝟙.name", "parameters.fiducial.m_١",
                                 "probes.counts_in_cells.z_edges.³"])
def test_unicode_digits_in_keys_are_messages(key, tmp_path):
    s = _write(tmp_path, TOY)
    res = invoke("validate", s, "--set", f"{key}=1")
    assert res.exit_code == 2, res.output
    assert key.split(".")[-2] in res.output or key.split(".")[-1] in res.output, res.output
    s2 = _write(tmp_path, TOY.replace("b_A_1: 1.0", "b_A_١: 1.0"), "s2.yaml")
    res = invoke("validate", s2)
    assert res.exit_code == 2 and "b_A_١" in res.output, res.output


def _damaged(good: pathlib.Path, tmp_path: pathlib.Path, name: str, fn) -> pathlib.Path:
    import shutil

    p = tmp_path / f"{name}.h5"
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        fn(f, tmp_path)
    return p


def _loop(f, d):
    del f["constraints"]
    f["constraints"] = h5py.SoftLink("/constraints")


def _loop2(f, d):
    f["fisher/a"] = h5py.SoftLink("/fisher/b")
    f["fisher/b"] = h5py.SoftLink("/fisher/a")


def _external(f, d):
    import os

    os.mkfifo(d / "fifo")
    del f["fisher/matrix"]
    f["fisher/matrix"] = h5py.ExternalLink(str(d / "fifo"), "/m")


def _external_dev(f, d):
    del f["parameters/names"]
    f["parameters/names"] = h5py.ExternalLink("/dev/zero", "/names")


def _virtual(f, d):
    m = f["fisher/matrix"][()]
    del f["fisher/matrix"]
    layout = h5py.VirtualLayout(shape=m.shape, dtype=float)
    layout[:] = h5py.VirtualSource(str(d / "other.h5"), "m", shape=m.shape)
    f.create_virtual_dataset("fisher/matrix", layout, fillvalue=0.0)


def _bomb(f, d):  # 128 GiB declared, a few kB on disk
    del f["constraints/covariance"]
    f.create_dataset("constraints/covariance", shape=(2**17, 2**17), dtype=float, chunks=(1024, 1024),
                     compression="gzip", fillvalue=1.0)


def _bomb_attr_json(f, d):
    f.attrs["provenance"] = "[" * 100_000 + "]" * 100_000


def _bomb_attr_json_dict(f, d):
    f.attrs["trust_reasons"] = '{"a": ' * 5000 + "1" + "}" * 5000


def _bomb_group_json(f, d):
    f["diagnostics"].attrs["anything"] = "[" * 500 + "]" * 500


HDF5_FAULTS = {"soft-link loop": (_loop, "soft link"), "soft-link cycle": (_loop2, "soft link"),
               "external link to a FIFO": (_external, "external link"),
               "external link to a device": (_external_dev, "external link"),
               "virtual dataset": (_virtual, "virtual dataset"), "compression bomb": (_bomb, "declared size"),
               "deep JSON attribute": (_bomb_attr_json, "JSON nested deeper"),
               "deep JSON object": (_bomb_attr_json_dict, "JSON nested deeper"),
               "deep JSON on a group": (_bomb_group_json, "JSON nested deeper")}


@pytest.mark.parametrize("fault", sorted(HDF5_FAULTS))
def test_hostile_hdf5_structures_are_refused(fault, toy_h5, tmp_path, no_hang):
    fn, expect = HDF5_FAULTS[fault]
    bad = _damaged(toy_h5, tmp_path, "bad", fn)
    for args in (["show", bad], ["compare", toy_h5, bad], ["stability", bad], ["combine", toy_h5, bad, "-o", tmp_path / "c.h5"],
                 ["derive", bad, "--to", "S8", "-o", tmp_path / "d.h5"], ["export", bad, "--to", "text", "-o", tmp_path / "e"]):
        res = invoke(*args)
        assert res.exit_code == 2, (args[0], res.output)
        assert "bad.h5" in res.output and expect in res.output, (args[0], res.output)
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "d.h5").exists()


def test_a_hard_link_cycle_does_not_hang_the_walk(toy_h5, tmp_path, no_hang):
    def cycle(f, d):
        f["fisher/up"] = f["fisher"]  # a hard link to its own parent

    bad = _damaged(toy_h5, tmp_path, "cycle", cycle)
    res = invoke("show", bad)
    assert res.exit_code in (0, 2), res.output


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp", "Nd", "No", "Mn", "Co", "So", "Lo")),
               min_size=1, max_size=20))
def test_reading_helper_on_any_unicode(text):
    """Every text is either accepted as it is, or refused with a line and a column."""
    from fishcast.errors import FileFormatError
    from fishcast.io.reading import decode_text, first_control

    raw = ("a: 1\n" + text).encode("utf-8")
    try:
        out = decode_text(raw, "f.yaml")
    except FileFormatError as exc:
        assert re.match(r"f\.yaml:\d+: ", str(exc)) and "column" in str(exc)
        assert first_control(text) is not None
    else:
        assert out == "a: 1\n" + text


# ============================================================= 2. the cache is trusted by name only
def _entry_members(path: pathlib.Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rewrite(path: pathlib.Path, members: dict[str, bytes], compress: bool = False) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for n, b in members.items():
            zf.writestr(n, b)


def _npy(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=True)
    return buf.getvalue()


def _tamper(kind: str, c, key: str, other_key: str, tmp_path: pathlib.Path):
    """Damage the entry ``key`` of cache ``c`` in one way; returns a file outside the cache
    that must survive untouched (or None)."""
    import os

    p = c.path(key)
    m = _entry_members(p)
    outside = tmp_path / "outside.npz"
    if kind == "another point's entry under this name":
        p.write_bytes(c.path(other_key).read_bytes())
    elif kind == "other settings":
        import json as _json

        s = _json.loads(bytes(np.lib.format.read_array(__import__("io").BytesIO(m["settings_json.npy"]))))
        s["accuracy_boost"] = 2.0
        m["settings_json.npy"] = _npy(np.frombuffer(_json.dumps(s, sort_keys=True).encode(), dtype=np.uint8))
        _rewrite(p, m)
    elif kind == "float32 arrays":
        arr = np.lib.format.read_array(__import__("io").BytesIO(m["pk_lin.npy"]))
        m["pk_lin.npy"] = _npy(arr.astype(np.float32))
        _rewrite(p, m)
    elif kind == "a transposed array":
        arr = np.lib.format.read_array(__import__("io").BytesIO(m["pk_lin.npy"]))
        m["pk_lin.npy"] = _npy(np.ascontiguousarray(arr.T))
        _rewrite(p, m)
    elif kind == "a missing array":
        del m["pk_nl.npy"]
        _rewrite(p, m)
    elif kind == "an extra member":
        m["evil.npy"] = _npy(np.zeros(3))
        _rewrite(p, m)
    elif kind == "a pickled object":
        m["chi.npy"] = _npy(np.array([{"a": 1}], dtype=object))
        _rewrite(p, m)
    elif kind == "NaN in the power spectrum":
        arr = np.lib.format.read_array(__import__("io").BytesIO(m["pk_lin.npy"]))
        arr[3, 3] = np.nan
        m["pk_lin.npy"] = _npy(arr)
        _rewrite(p, m)
    elif kind == "another z grid":
        arr = np.lib.format.read_array(__import__("io").BytesIO(m["z.npy"]))
        m["z.npy"] = _npy(arr * 1.01)
        _rewrite(p, m)
    elif kind == "a header declaring a huge array":
        hdr = np.lib.format.header_data_from_array_1_0(np.zeros(1))
        hdr["shape"] = (10**6, 10**6)
        import io

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, hdr)
        m["pk_lin.npy"] = buf.getvalue() + b"\0" * 64
        _rewrite(p, m)
    elif kind == "a compression bomb":
        m["pk_lin.npy"] = b"\0" * (80 * 1024**2)  # 80 MiB of zeros deflate to ~80 kB
        _rewrite(p, m, compress=True)
    elif kind == "an absurd size":
        with open(p, "r+b") as fh:
            fh.truncate(200 * 1024**2)  # sparse: no disk used
    elif kind == "a symlink out of the cache":
        outside.write_bytes(p.read_bytes())
        p.unlink()
        p.symlink_to(outside)
        return outside
    elif kind == "a symlink to /dev/zero":
        p.unlink()
        p.symlink_to("/dev/zero")
    elif kind == "a FIFO":
        p.unlink()
        os.mkfifo(p)
    elif kind == "a folder":
        p.unlink()
        p.mkdir()
    elif kind == "not a zip":
        p.write_bytes(b"\x93NUMPY" + b"x" * 100)
    else:
        raise AssertionError(kind)
    return None


CACHE_FAULTS = ["another point's entry under this name", "other settings", "float32 arrays", "a transposed array",
                "a missing array", "an extra member", "a pickled object", "NaN in the power spectrum",
                "another z grid", "a header declaring a huge array", "a compression bomb", "an absurd size",
                "a symlink out of the cache", "a symlink to /dev/zero", "a FIFO", "a folder", "not a zip"]


@pytest.mark.parametrize("kind", CACHE_FAULTS)
def test_a_cache_entry_that_does_not_verify_is_a_miss_with_a_warning(kind, tmp_path, no_hang):
    import tracemalloc

    from fishcast.pipeline.cache import Cache, CacheWarning, cached_evaluator
    from tests.test_cache import POINT, S, fake_result, key_of, same

    c = Cache(tmp_path / "cache")
    other = dict(POINT, n_s=0.97)
    c.put(key_of(), fake_result(1), S)
    c.put(key_of(other), fake_result(2, other), S)
    outside = _tamper(kind, c, key_of(), key_of(other), tmp_path)
    before = outside.read_bytes() if outside else None
    computed = []

    def compute(points, settings, on_done):
        computed.extend(points)
        for i, p in enumerate(points):
            on_done(i, fake_result(1, p))

    tracemalloc.start()
    try:
        with pytest.warns(CacheWarning, match="not used"):
            out = cached_evaluator(c, compute=compute)([POINT], S)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert computed == [POINT]  # a miss: computed again
    assert same(out[0], fake_result(1))
    assert peak < 200 * 1024**2
    assert c.stats.damaged == 1 and len(c.stats.rejected) == 1
    if kind != "a folder":
        assert same(c.get(key_of()), fake_result(1))  # the good entry replaced the bad one
    if outside is not None:
        assert outside.read_bytes() == before  # the target of a link is never touched


def test_a_shard_folder_that_links_out_of_the_cache_is_never_entered(tmp_path, no_hang):
    """Neither get, put, info nor clear go through a symlinked shard folder."""
    import warnings as _w

    from fishcast.pipeline.cache import Cache, CacheWarning
    from tests.test_cache import S, fake_result, key_of

    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    victim = elsewhere / (key_of() + ".npz")
    good = Cache(tmp_path / "good")
    good.put(key_of(), fake_result(1), S)
    victim.write_bytes(good.path(key_of()).read_bytes())  # looks exactly like an entry
    (elsewhere / "notes.txt").write_text("keep me")
    c = Cache(tmp_path / "cache")
    c.root.mkdir()
    (c.root / key_of()[:2]).symlink_to(elsewhere, target_is_directory=True)
    with pytest.warns(CacheWarning, match="outside the cache"):
        assert c.get(key_of()) is None
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        c.put(key_of(), fake_result(2), S)
    assert c.stats.write_failed == 1
    assert c.info()["entries"] == 0 and c.entries() == []
    res = invoke("cache", "clear", "--cache-dir", c.root)
    assert res.exit_code == 0 and "removed 0 entries" in res.output
    assert victim.read_bytes() == good.path(key_of()).read_bytes()
    assert (elsewhere / "notes.txt").read_text() == "keep me"


def test_cache_clear_removes_a_symlink_entry_but_not_its_target(tmp_path):
    from fishcast.pipeline.cache import Cache
    from tests.test_cache import S, fake_result, key_of

    c = Cache(tmp_path / "cache")
    c.put(key_of(), fake_result(1), S)
    target = tmp_path / "target.npz"
    target.write_bytes(c.path(key_of()).read_bytes())
    c.path(key_of()).unlink()
    c.path(key_of()).symlink_to(target)
    res = invoke("cache", "clear", "--cache-dir", c.root)
    assert res.exit_code == 0 and "removed 1 entries" in res.output
    assert target.exists() and not c.path(key_of()).is_symlink()


def test_the_real_path_verifies_real_entries(toy, cache_dir):
    """Entries written by real runs (the session cache) verify: all hits, no warning."""
    import warnings as _w

    from fishcast.pipeline.cache import Cache

    c = Cache(cache_dir)
    keys = [p.stem for p in c.entries()]
    assert keys
    with _w.catch_warnings():
        _w.simplefilter("error")
        assert all(c.get(k) is not None for k in keys)
    assert c.stats.damaged == 0


@pytest.fixture(scope="module")
def toy(toy_h5):
    return toy_h5.with_name("toy.yaml")


# ========================================================== 6. numerics that pass silently
@pytest.mark.parametrize("matrix", [
    [[1.5e308, 1.0], [1.0, 1.0]],                 # F + F^T overflows to inf
    [[1.0, 1e300], [1e300, 1.0]],                 # off-diagonal: the correlation form overflows
    [[1e200, 0.0], [0.0, 1e200]],                 # F_ii F_jj overflows
    [[-1.7e308, 0.0], [0.0, 1.0]],
])
def test_a_matrix_that_overflows_when_symmetrized_is_refused(matrix, tmp_path):
    from fishcast.errors import InputError
    from fishcast.fisher import FisherMatrix

    with pytest.raises(InputError, match="overflow"):
        FisherMatrix(np.array(matrix), ["a", "b"], [0.0, 0.0])
    # and from a file: exit 2 naming it
    p = tmp_path / "m.txt"
    p.write_text("# a b\n" + "\n".join(" ".join(repr(x) for x in row) for row in matrix) + "\n")
    pn = tmp_path / "m.paramnames"
    pn.write_text("a\nb\n")
    res = invoke("import", p, "--paramnames", pn, "-o", tmp_path / "o.h5")
    assert res.exit_code == 2 and "overflow" in res.output, res.output
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("names,fiducial,target,need", [
    (["sigma8", "Omega_m"], [0.8, 0.0], "S8", "Omega_m > 0"),
    (["sigma8", "Omega_m"], [0.8, -0.1], "S8", "Omega_m > 0"),
    (["A_s"], [0.0], "logA", "A_s > 0"),
    (["A_s"], [-2e-9], "logA", "A_s > 0"),
    (["Omega_m", "Omega_b", "h", "m_nu"], [0.3, 0.05, 0.0, 0.06], "Omega_c", "h != 0"),
    (["sigma8", "Omega_m"], [0.8, float("inf")], "S8", "non-finite"),
    (["sigma8", "Omega_m"], [float("nan"), 0.3], "S8", "fiducial of sigma8"),
])
def test_a_reparametrization_at_a_singular_point_is_a_clear_error(names, fiducial, target, need, tmp_path):
    from fishcast.errors import InputError
    from fishcast.fisher import FisherMatrix
    from fishcast.io import write_fisher_file
    from fishcast.reparam import jacobian

    with pytest.raises(InputError, match=re.escape(need)):
        jacobian(names, fiducial, [target])
    p = tmp_path / "f.h5"
    write_fisher_file(p, FisherMatrix(np.eye(len(names)), names, fiducial))
    res = invoke("derive", p, "--to", target, "-o", tmp_path / "d.h5")
    assert res.exit_code == 2 and target in res.output, res.output
    assert not (tmp_path / "d.h5").exists()


@pytest.mark.parametrize("overrides,limit_gb", [
    ({"probes.weak_lensing.ell.n_bands": 10000, "probes.weak_lensing.bins.n_bins": 100}, None),
    ({"probes.weak_lensing.ell.n_bands": 5000, "probes.weak_lensing.bins.n_bins": 60,
      "probes.weak_lensing.integration.n_z": 5001}, None),
    ({"probes.weak_lensing.ell.n_bands": 3000, "probes.weak_lensing.bins.n_bins": 30}, "0.5"),
    ({"probes.weak_lensing.ell.n_bands": 400}, "0.01"),
])
def test_a_huge_weak_lensing_data_vector_is_refused_before_allocation(overrides, limit_gb, tmp_path, monkeypatch):
    import tracemalloc

    if limit_gb:
        monkeypatch.setenv("FISHCAST_MEMORY_LIMIT_GB", limit_gb)
    args = ["validate", ROOT / "recipes" / "lsst-y10-wl.yaml"]
    for k, v in overrides.items():
        args += ["--set", f"{k}={v}"]
    tracemalloc.start()
    try:
        res = invoke(*args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.exit_code == 2, res.output
    assert re.search(r"lsst-y10-wl\.yaml:\d+: probes\.weak_lensing\.ell\.n_bands: .* GiB, more than the limit",
                     res.output), res.output
    assert peak < 100 * 1024**2


def test_the_memory_estimate_counts_the_arrays_a_run_holds():
    """The estimate against the arrays' sizes counted by hand (float64: 8 bytes)."""
    from fishcast.probes.weak_lensing import memory_estimate
    from fishcast.survey import load_survey

    s = load_survey(ROOT / "recipes" / "lsst-y10-wl.yaml")
    wl = s.config.probes.weak_lensing
    n_ell, n_b, n_z = wl.ell.n_bands, wl.n_bins, wl.integration.n_z
    assert memory_estimate(wl, 10) == 8 * (n_ell * n_b * n_z + 2 * n_ell * n_z + 10 * n_ell * n_b * n_b)
    assert memory_estimate(wl, 10) < 1024**3  # the shipped recipe is far below the limit


@pytest.mark.parametrize("where,value", [
    ("probes.counts_in_cells.f_sky", "true"), ("parameters.fiducial.sigma8", "false"),
    ("probes.counts_in_cells.n_k", "true"), ("parameters.priors.Omega_m", "true"),
    ("derivatives.h_max", "true"), ("diagnostics.cond_warn", "true"),
    ("probes.counts_in_cells.k_max", "[true]"),
])
def test_a_yaml_boolean_where_a_number_is_expected_is_an_error(where, value, tmp_path):
    s = _write(tmp_path, TOY)
    res = invoke("validate", s, "--set", f"{where}={value}")
    assert res.exit_code == 2, res.output
    assert where.split(".")[-1] in res.output and "not the boolean" in res.output, res.output


def test_a_yaml_boolean_in_a_grid_range_is_an_error(tmp_path):
    from fishcast.errors import SurveyError
    from fishcast.pipeline.batch import load_grid

    _write(tmp_path, TOY, "toy.yaml")
    for rng in ("{start: true, stop: 0.3, num: 3}", "{start: 0.1, stop: 0.3, num: true}",
                "{start: 0.1, stop: .inf, num: 3}"):
        g = _write(tmp_path, f"name: g\nsurvey: toy.yaml\naxes:\n  probes.counts_in_cells.f_sky: {rng}\n", "g.yaml")
        with pytest.raises(SurveyError, match=r"g\.yaml:4: axes\.probes\.counts_in_cells\.f_sky\.(start|num|stop)"):
            load_grid(g)


# ====================================================================== 7. batch messages
@pytest.mark.parametrize("label,why", [
    (".", "dots only"), ("..", "dots only"), ("...", "dots only"), ("status", "column"), ("design", "column"),
    ("file", "column"), ("trust", "column"), ("reason", "column"), ("fom", "column"), ("Status", "column"),
    ("sigma_Omega_m", "sigma_"), ("fom_w0_wa", "fom_"),
])
def test_batch_axis_labels_that_collide_are_refused(label, why, tmp_path):
    from fishcast.errors import SurveyError
    from fishcast.pipeline.batch import load_grid

    _write(tmp_path, TOY, "toy.yaml")
    g = _write(tmp_path, f"name: g\nsurvey: toy.yaml\naxes:\n  probes.counts_in_cells.f_sky: "
                         f"{{values: [0.1, 0.2], label: '{label}'}}\n", "g.yaml")
    with pytest.raises(SurveyError, match=rf"g\.yaml:4: axes\.probes\.counts_in_cells\.f_sky: the label .*{why}"):
        load_grid(g)
    res = invoke("batch", g, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "label" in res.output, res.output


GRID2 = """\
name: g2
survey: toy.yaml
axes:
  probes.counts_in_cells.f_sky: [0.1, 0.2]
"""


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, cache_dir):
    """A two-design grid of the toy, run once through the session cache."""
    from fishcast.pipeline.batch import load_grid, run_batch
    from fishcast.pipeline.cache import Cache

    d = tmp_path_factory.mktemp("r2batch")
    (d / "toy.yaml").write_text(TOY)
    (d / "g2.yaml").write_text(GRID2)
    res = run_batch(load_grid(d / "g2.yaml"), d / "out", cache=Cache(cache_dir), plot=False)
    assert not res.failed and res.resumed == []
    return d, res


def test_batch_design_files_record_the_camb_calls_they_depended_on(batch_run):
    """The toy needs 3 Boltzmann runs (the fiducial, Omega_m +- h; sigma8's points share the
    fiducial's transfer functions): each design file says so, whether this batch computed
    them or found them in the cache (the batch computes them once for both designs)."""
    d, res = batch_run
    for design in res.designs:
        with h5py.File(design.path) as f:
            assert int(f.attrs["camb_calls"]) == 3, design.name


def test_a_resumed_batch_skips_designs_whose_files_are_complete_and_current(batch_run, tmp_path, no_camb, cache_dir):
    import shutil

    from fishcast.pipeline.batch import load_grid, run_batch
    from fishcast.pipeline.cache import Cache

    d, first = batch_run
    work = tmp_path / "w"
    shutil.copytree(d, work)
    out = work / "out"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("f_sky=*.h5")}
    grid = load_grid(work / "g2.yaml")
    # 1. all current: nothing recomputed, nothing rewritten (CAMB may not be called; no cache)
    res = run_batch(grid, out, cache=None, plot=False)
    assert sorted(f"{n}.h5" for n in res.resumed) == sorted(before) == sorted(f"{x.name}.h5" for x in grid.designs)
    assert no_camb == [] and not res.failed
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("f_sky=*.h5")} == before
    assert [x.fom for x in res.designs] == pytest.approx([x.fom for x in first.designs], nan_ok=True)
    # 2. one file stale (another fishcast version), one damaged: both redone, from the cache
    stale, damaged = sorted(out.glob("f_sky=*.h5"))
    with h5py.File(stale, "r+") as f:
        f.attrs["fishcast_version"] = "0.0.1"
    damaged.write_bytes(damaged.read_bytes()[:2000])
    res = run_batch(grid, out, cache=Cache(cache_dir), plot=False)
    assert res.resumed == [] and not res.failed
    assert res.stats.computed == 0  # every point from the cache
    for p in (stale, damaged):
        with h5py.File(p) as f:
            assert f.attrs["fishcast_version"] != "0.0.1"
    # 3. the input changed (another base survey): not current, redone
    (work / "toy.yaml").write_text(TOY.replace("n_mu: 4", "n_mu: 5"))
    res = run_batch(load_grid(work / "g2.yaml"), out, cache=Cache(cache_dir), plot=False)
    assert res.resumed == [] and len(res.designs) == 2
