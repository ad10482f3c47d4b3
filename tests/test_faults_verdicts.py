"""Issue 14, class 6 (first bullet) and class 7 (first bullet): numbers that passed silently
and messages that pointed the wrong way.

* ``compare`` treats inf and NaN against a finite value (and inf against -inf, NaN against
  inf) as a difference, whatever the tolerance; NaN against NaN and inf against inf of the
  same sign agree.
* A degenerate Fisher matrix from ``run`` suggests ``--allow-degenerate`` (and fixing or a
  prior on the named parameters), not ``--allow-unstable``; ``--allow-unstable`` does not
  turn it into exit 0.
"""

from __future__ import annotations

import math
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fishcast import io as fio
from fishcast.cli.main import cli
from fishcast.fisher import FisherMatrix, compare, within_tolerance
from fishcast.report import compare_arrays, run_verdict

inf, nan = math.inf, math.nan


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    return res


# ====================================================================== class 6: compare
@pytest.mark.parametrize("a,b", [(inf, 1.0), (1.0, inf), (-inf, 1.0), (nan, 1.0), (1.0, nan), (inf, -inf),
                                 (nan, inf), (-inf, nan), (inf, 1e308), (0.0, nan)])
@pytest.mark.parametrize("rtol,atol", [(1e-3, 0.0), (1.0, 0.0), (10.0, 1e300)])
def test_non_finite_against_another_value_differs(a, b, rtol, atol):
    """Whatever the tolerance: |inf - 1| <= rtol * max(|inf|, |1|) is inf <= inf, which must
    not count as agreement."""
    assert not within_tolerance(a, b, rtol, atol)
    assert not within_tolerance([1.0, a], [1.0, b], rtol, atol)[1]


@pytest.mark.parametrize("a,b", [(nan, nan), (inf, inf), (-inf, -inf), (1.0, 1.0 + 1e-4)])
def test_same_non_finite_values_agree(a, b):
    assert within_tolerance(a, b, 1e-3, 0.0)


def test_an_infinite_scale_does_not_hide_a_difference():
    """compare --on fisher judges F_ij against sqrt(F_ii F_jj); an infinite diagonal must not
    make every element of its row agree."""
    assert not within_tolerance(1.0, 2.0, 1e-3, 0.0, scale=inf)
    assert not within_tolerance(1.0, 2.0, 1e-3, 0.0, scale=nan)
    assert within_tolerance(1.0, 1.0, 1e-3, 0.0, scale=inf)


def _data_file(path, **arrays):
    names = ["Omega_m", "sigma8"]
    fio.write_fisher_file(path, FisherMatrix(np.diag([4.0, 9.0]), names, [0.3, 0.8]))
    with h5py.File(path, "a") as f:
        for k, v in arrays.items():
            f[f"data/{k}"] = np.asarray(v, dtype=float)
    return path


@pytest.mark.parametrize("x,y,where,a_text,b_text", [
    ([1.0, 2.0, 3.0], [1.0, inf, 3.0], "x[1]", "2", "inf"),
    ([inf, 1.0], [1.0, 1.0], "x[0]", "inf", "1"),
    ([nan, 1.0], [1.0, 1.0], "x[0]", "-", "1"),             # NaN is shown as '-'
    ([1.0, 1.0], [1.0, nan], "x[1]", "1", "-"),
    ([nan, 2.0], [nan, -inf], "x[1]", "2", "-inf"),          # NaN against NaN agrees; the finite one does not
    ([[1.0, 2.0], [3.0, inf]], [[1.0, 2.0], [3.0, -inf]], "x[1,1]", "inf", "-inf"),
    ([1e308, 5.0], [1e308, inf], "x[1]", "5", "inf"),       # the worst is the non-finite one
])
def test_compare_on_data_reports_non_finite_differences(x, y, where, a_text, b_text, tmp_path):
    a = _data_file(tmp_path / "a.h5", x=x)
    b = _data_file(tmp_path / "b.h5", x=y)
    for rtol in ("1e-3", "1"):
        res = invoke("compare", a, b, "--on", "data", "--rtol", rtol)
        assert res.exit_code == 1, res.output
        row = next(ln.split() for ln in res.output.splitlines() if ln.startswith("data ("))
        assert row[-5:-2] == [where, a_text, b_text], res.output


def test_compare_on_data_agrees_on_the_same_non_finite_values(tmp_path):
    v = [nan, inf, -inf, 1.0]
    a = _data_file(tmp_path / "a.h5", x=v, y=[[nan, 2.0]])
    b = _data_file(tmp_path / "b.h5", x=v, y=[[nan, 2.0 * (1 + 1e-6)]])
    res = invoke("compare", a, b, "--on", "data")
    assert res.exit_code == 0 and "agree on data" in res.output, res.output


def test_compare_arrays_counts_every_non_finite_difference():
    row = compare_arrays("x", [inf, nan, 1.0, 2.0, -inf], [1.0, 1.0, inf, 2.0, inf], 1.0, 0.0)
    assert row["quantity"] == "data (4 of 5 differ; worst)"
    assert math.isinf(row["rel_diff"])
    assert compare_arrays("x", [nan, inf], [nan, inf], 0.0, 0.0) is None
    assert compare_arrays("s", inf, 1.0, 1.0, 0.0)["param"] == "s"  # a scalar dataset


def test_compare_of_fishers_with_a_non_finite_value():
    """fishcast.fisher.compare row by row (the sigma and fisher modes share within_tolerance):
    a NaN figure of merit or an infinite error against a finite one is a difference."""
    from fishcast.fisher import _rows

    rows = _rows("marginalized_sigma", ["a", "b", "c"], [1.0, inf, nan], [1.0, 2.0, nan], 1.0, 0.0)
    assert [r["param"] for r in rows] == ["b"] and math.isinf(rows[0]["rel_diff"])
    F = FisherMatrix(np.diag([4.0, 9.0]), ["Omega_m", "sigma8"], [0.3, 0.8])
    assert compare(F, F, on="fisher", rtol=0.0)[0] == []


# ====================================================================== class 7: degenerate
class _Conditioning:
    def __init__(self, covariance, weak=()):
        self.covariance = covariance
        self.weak_directions = weak


@pytest.mark.parametrize("trust,allow_unstable", [("fail", False), ("fail", True), ("warn", True), ("ok", False)])
def test_run_verdict_of_a_degenerate_matrix(trust, allow_unstable):
    weak = [(1e-17, {"b_A_1": 0.6, "sigma8": -0.55}), (1e-16, {"b_B_1": 0.7, "b_A_1": 0.1})]
    message, code = run_verdict(trust, _Conditioning(None, weak), None, allow_unstable)
    assert code == 3
    assert "--allow-degenerate" in message and "b_A_1, sigma8, b_B_1" in message
    assert "Use --allow-unstable" not in message


@pytest.mark.parametrize("trust,allow_unstable,code", [("fail", False, 3), ("fail", True, 0), ("warn", False, 0),
                                                      ("ok", False, 0)])
def test_run_verdict_of_an_invertible_or_projected_matrix(trust, allow_unstable, code):
    for cond, projection in ((_Conditioning(np.eye(2)), None), (_Conditioning(None), object())):
        message, got = run_verdict(trust, cond, projection, allow_unstable)
        assert got == code
        if code:
            assert "--allow-unstable" in message and "--allow-degenerate" not in message


#: the two-tracer toy in real space with the amplitude and both biases free: only b^2 P is
#: measured, so d/d ln sigma8 = d/d ln b_A + d/d ln b_B and the Fisher matrix is singular
DEGENERATE = textwrap.dedent("""\
    name: toy-degenerate
    cosmology:
      nonlinear_model: none
      accuracy: {n_z: 20, n_k: 100, k_max: 2.0, z_max: 1.5}
    parameters:
      fiducial: {Omega_m: 0.3153, Omega_b: 0.0493, h: 0.6736, n_s: 0.9649, sigma8: 0.8111,
                 b_A_1: 1.0, b_B_1: 2.0}
      free: [sigma8, b_A_1, b_B_1]
    derivatives: {mode: fixed, stencil: 3-point}
    diagnostics: {gaussian_check: false}
    probes:
      counts_in_cells:
        f_sky: 0.1
        z_edges: [0.9, 1.1]
        rsd: false
        tracers:
          - {name: A, density: {unit: (h/Mpc)^3, values: [1.0e-3]}, bias: {form: per_shell, values: [1.0]}}
          - {name: B, density: {unit: (h/Mpc)^3, values: [2.0e-4]}, bias: {form: per_shell, values: [2.0]}}
        k_min: 0.05
        k_max: 0.10
        n_k: 1
        n_mu: 1
    """)


def test_a_degenerate_run_points_to_allow_degenerate(tmp_path, cache_dir):
    """Real CAMB, one Boltzmann run (sigma8 steps share the fiducial's transfer functions)."""
    survey = tmp_path / "deg.yaml"
    survey.write_text(DEGENERATE)
    for extra in ([], ["--allow-unstable"]):
        out = tmp_path / f"deg{len(extra)}.h5"
        res = invoke("run", survey, "-o", out, "--cache-dir", cache_dir, "-q", *extra)
        assert res.exit_code == 3, res.output
        last = res.output.strip().splitlines()[-1]
        assert "degenerate" in last and "--allow-degenerate" in last, res.output
        assert all(n in last for n in ("sigma8", "b_A_1", "b_B_1"))
        assert "Use --allow-unstable" not in res.output
        assert fio.read_fisher(out)[1]["trust"] == "fail"  # the file is written all the same
    out = tmp_path / "projected.h5"
    res = invoke("run", survey, "-o", out, "--cache-dir", cache_dir, "-q", "--allow-degenerate")
    assert res.exit_code == 0, res.output
    assert fio.read_fisher(out)[1]["trust"] == "warn"
    # show on the degenerate file: exit 3, and the advice is --allow-degenerate as well
    res = invoke("show", tmp_path / "deg0.h5")
    assert res.exit_code == 3 and "--allow-degenerate" in res.output and "--allow-unstable" not in res.output
