"""The step-size sweep on the real CAMB weak-lensing path (issue: derivatives that choose
their own step): every cosmological parameter passes, and the marginalized errors from the
3-point and 5-point derivatives agree within 0.5 %. One-sided stencils at m_nu = 0.06 eV."""

from __future__ import annotations

import numpy as np
import pytest

from fishcast.fisher import FisherMatrix
from fishcast.pipeline.forecast import DataVector, fisher_from_derivatives, run_forecast
from fishcast.survey import survey_from_text

from .test_cli_run import SMALL

SWEEP = (SMALL.replace("derivatives: {mode: fixed}", "derivatives: {mode: sweep, n_rungs: 5}")
         .replace('free: [Omega_m, sigma8, A_IA, "m_*"]', "free: [Omega_m, sigma8, w0, A_IA]")
         .replace('  priors: {"m_*": 0.01}\n', "")
         .replace("    shear_bias: true\n", ""))


@pytest.fixture(scope="module")
def sweep_forecast(tmp_path_factory):
    from fishcast.pipeline.cache import Cache

    survey = survey_from_text(SWEEP, "sweep.yaml")
    return run_forecast(survey, cache=Cache(tmp_path_factory.mktemp("sweep-cache")))


def test_every_cosmological_parameter_passes(sweep_forecast):
    fc = sweep_forecast
    for name in ("Omega_m", "sigma8", "w0"):
        sw = fc.sweeps[name]
        assert sw.verdict == "PASS", (name, sw.reason, sw.message)
        assert 1e-3 <= sw.relative_step <= 0.05
    assert fc.trust in ("ok", "warn")
    assert fc.conditioning.cholesky_ok


def test_three_and_five_point_errors_agree(sweep_forecast):
    fc = sweep_forecast
    survey = fc.survey
    fid_cosmo = fc.fiducial_cosmology
    dv, fid = DataVector.at_fiducial(survey.probes, fid_cosmo, survey.fiducial)
    d3 = {n: fc.sweeps[n].derivatives_3pt[fc.sweeps[n].chosen] for n in survey.free}
    d5 = {n: fc.sweeps[n].derivative for n in survey.free}
    assert all("5-point" in fc.sweeps[n].stencil for n in survey.free)
    s3 = fisher_from_derivatives(survey, dv, fid, d3)[2].marginalized_sigma()
    s5 = fisher_from_derivatives(survey, dv, fid, d5)[2].marginalized_sigma()
    assert np.allclose(s3, s5, rtol=5e-3), (s3, s5)


def test_camb_calls_equal_distinct_points(sweep_forecast):
    fc = sweep_forecast
    # Omega_m and w0 need new transfer functions at each of 2 x 5 rungs; sigma8 re-uses the
    # fiducial's; A_IA (nuisance) needs none; the Gaussian check adds 2 x 4 points.
    sweep_runs = 1 + 2 * 5 * 2
    assert fc.camb_calls <= sweep_runs + 2 * 4


def test_m_nu_ladder_that_would_cross_zero_is_one_sided():
    text = SMALL.replace('free: [Omega_m, sigma8, A_IA, "m_*"]', "free: [m_nu]") \
        .replace('  priors: {"m_*": 0.01}\n', "") \
        .replace("derivatives: {mode: fixed}",
                 "derivatives: {mode: sweep, n_rungs: 4, parameters: {m_nu: {scale: 0.1, h_max: 1.0}}}")
    survey = survey_from_text(text, "mnu.yaml")
    from fishcast import derivatives as der

    spec = der.resolve_spec("m_nu", 0.06, survey.config.derivatives)
    values = der.plan_points("m_nu", 0.06, spec)
    assert min(values) >= 0.0  # CAMB never receives a negative mass
    ladder = der.plan_ladder("m_nu", 0.06, spec)
    assert any("forward" in s for s in ladder.stencils)
