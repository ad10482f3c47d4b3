"""Survey-level input rules around the clustering probe (issue 11): one source of truth for a
tracer bias, and non-flat cosmologies refused with a located message (exit 2)."""

from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner

from fishcast.cli.main import cli
from fishcast.errors import SurveyError
from fishcast.survey import survey_from_text

BASE = """\
name: t
cosmology: {{nonlinear_model: none}}
parameters:
  fiducial: {{Omega_m: 0.3, Omega_b: 0.05, h: 0.7, n_s: 0.96, sigma8: 0.8{extra}}}
  free: [{free}]
probes:
  counts_in_cells:
    f_sky: 0.1
    z_edges: [0.9, 1.1]
    tracers:
      - name: A
        density: {{unit: (h/Mpc)^3, values: [1.0e-3]}}
        bias: {{form: per_shell, values: [1.3]}}
    k_min: 0.05
    k_max: 0.10
"""


def _survey(extra="", free="sigma8"):
    return survey_from_text(BASE.format(extra=extra, free=free), "s.yaml")


def test_bias_given_twice_with_different_values_is_a_located_error():
    with pytest.raises(SurveyError) as err:
        _survey(extra=", b_A_1: 1.5")
    msg = str(err.value)
    assert "s.yaml:4" in msg and "parameters.fiducial.b_A_1" in msg
    assert "probes.counts_in_cells.tracers.0.bias.values" in msg and "1.3" in msg and "1.5" in msg


def test_bias_given_twice_with_the_same_value_is_accepted():
    s = _survey(extra=", b_A_1: 1.3")
    assert s.fiducial["b_A_1"] == 1.3
    assert _survey().fiducial["b_A_1"] == 1.3  # the tracer's value is the fiducial


@pytest.mark.parametrize("extra,free,where", [
    (", Omega_k: 0.05", "sigma8", "parameters.fiducial.Omega_k"),
    (", Omega_k: -0.05", "sigma8", "parameters.fiducial.Omega_k"),
    ("", "sigma8, Omega_k", "parameters.free[1]"),
])
def test_non_flat_is_refused(extra, free, where):
    with pytest.raises(SurveyError) as err:
        _survey(extra=extra, free=free)
    msg = str(err.value)
    assert where in msg and "non-flat" in msg and "f_K" in msg


def test_non_flat_refused_by_the_cli_with_exit_2(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(BASE.format(extra=", Omega_k: 0.05", free="sigma8"))
    res = CliRunner().invoke(cli, ["run", str(p), "-o", str(tmp_path / "o.h5"), "--no-cache"])
    assert res.exit_code == 2
    assert "Omega_k" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.h5").exists()
    # and every shipped recipe is flat
    root = pathlib.Path(__file__).parent.parent / "recipes"
    for recipe in root.glob("*.yaml"):
        assert "Omega_k" not in recipe.read_text() or "Omega_k: 0" in recipe.read_text(), recipe


def _polynomial(values: str, free: str = "sigma8, b_A_c0, b_A_c1"):
    text = BASE.format(extra="", free=free).replace("{form: per_shell, values: [1.3]}",
                                                   f"{{form: polynomial, values: [{values}]}}")
    assert "polynomial" in text
    return survey_from_text(text, "s.yaml")


def test_a_polynomial_bias_may_fall_with_redshift():
    """b(z) = c0 + c1 z with c1 < 0 (a bias falling with z) is a valid model: only c0 = b(0) and
    b itself in every shell must be positive. The domain the derivatives keep to follows."""
    from fishcast.derivatives import effective_domain

    s = _polynomial("2.5, -0.5")
    assert s.fiducial["b_A_c1"] == -0.5 and "b_A_c1" in s.free
    c1 = effective_domain("b_A_c1", s.config.derivatives, s.parameters["b_A_c1"])
    c0 = effective_domain("b_A_c0", s.config.derivatives, s.parameters["b_A_c0"])
    assert c1.contains(-1e6) and c1.contains(1e6)
    assert not c0.contains(0.0) and c0.contains(1e-9)


def test_a_free_fiducial_outside_its_domain_is_located_where_it_was_given():
    """A probe's nuisance fiducial (here c0 of the bias form, from the tracer's bias.values)
    outside its domain: a located error at the probe's section (line 7), naming the parameter
    and how to change it -- not an unlocated message from the derivative engine at run time."""
    with pytest.raises(SurveyError) as err:
        _polynomial("-0.2, 1.0")
    msg = str(err.value)
    assert "s.yaml:7: probes.counts_in_cells" in msg and "b_A_c0 = -0.2" in msg and "(0, inf)" in msg
    # a widened domain (the YAML override) accepts it
    text = BASE.format(extra="", free="sigma8, b_A_c0").replace(
        "{form: per_shell, values: [1.3]}", "{form: polynomial, values: [-0.2, 1.0]}")
    s = survey_from_text(text + "derivatives:\n  parameters:\n    b_A_c0: {lower: -1.0}\n", "s.yaml")
    assert s.fiducial["b_A_c0"] == -0.2
