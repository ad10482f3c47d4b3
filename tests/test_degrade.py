"""CAMB failing at a stencil point with ``derivatives.on_camb_failure: degrade``: the rungs
that need the failed point are dropped, the rest of the ladder is analysed, and the verdict
says so (issue: hardening, item 2 "stops or degrades as configured")."""

from __future__ import annotations

import camb
import numpy as np
import pytest

from fishcast.errors import ComputationError
from fishcast.pipeline.forecast import run_forecast
from fishcast.survey import survey_from_text

from .test_cli_run import SMALL

BASE = (SMALL.replace('free: [Omega_m, sigma8, A_IA, "m_*"]', "free: [Omega_m, sigma8]")
        .replace('  priors: {"m_*": 0.01}\n', "")
        .replace("    shear_bias: true\n", ""))


@pytest.fixture
def camb_fails_above_omega_m_0335(monkeypatch):
    """CAMB raises for Omega_m > 0.335: only the top rung (relative step 0.05, Omega_m 0.336)."""
    real = camb.get_transfer_functions

    def fake(pars, *args, **kwargs):
        if pars.omegam > 0.335:
            raise camb.baseconfig.CAMBError("simulated failure")
        return real(pars, *args, **kwargs)

    monkeypatch.setattr(camb, "get_transfer_functions", fake)


def test_degrade_drops_the_rungs_that_need_the_failed_point(camb_fails_above_omega_m_0335, cache_dir):
    from fishcast.pipeline.cache import Cache

    text = BASE.replace("derivatives: {mode: fixed}", "derivatives: {mode: sweep, n_rungs: 5, on_camb_failure: degrade}")
    fc = run_forecast(survey_from_text(text, "degrade.yaml"), cache=Cache(cache_dir))
    sw = fc.sweeps["Omega_m"]
    assert len(sw.steps) == 4  # rung 0 (step 0.016) needed Omega_m = 0.336 and was dropped
    assert sw.steps[0] == pytest.approx(0.32 * 0.05 / 2)
    assert len(fc.sweeps["sigma8"].steps) == 5  # untouched
    assert fc.trust in ("warn", "fail")
    assert any("degrade" in r and "Omega_m = 0.336" in r for r in fc.trust_reasons)
    assert np.all(np.isfinite(fc.fisher.matrix))


def test_stop_is_the_default_and_names_the_step(camb_fails_above_omega_m_0335, cache_dir):
    from fishcast.pipeline.cache import Cache

    text = BASE.replace("derivatives: {mode: fixed}", "derivatives: {mode: sweep, n_rungs: 5}")
    with pytest.raises(ComputationError, match=r"Omega_m = 0.336 \(rung 0"):
        run_forecast(survey_from_text(text, "stop.yaml"), cache=Cache(cache_dir))


def test_degrade_refuses_when_too_few_rungs_are_left(camb_fails_above_omega_m_0335):
    # 4 rungs and a 4-rung window: losing one leaves too few
    text = BASE.replace("derivatives: {mode: fixed}", "derivatives: {mode: sweep, n_rungs: 4, on_camb_failure: degrade}")
    with pytest.raises(ComputationError, match="too few complete rungs"):
        run_forecast(survey_from_text(text, "few.yaml"))


def test_adaptive_degrade_grows_the_ladder_away_from_the_failed_point(camb_fails_above_omega_m_0335, cache_dir):
    """Mode 'adaptive' starting with a whole window at the top rung (start_step 0.05,
    start_rungs: window, the earlier start): the failed point takes rung 0, the three rungs
    left are fewer than the window, and the ladder grows down (never back through the failed
    point) to rungs 1..4 -- the points the full sweep of the test above evaluated (shared
    cache: no new CAMB run for them)."""
    from fishcast.pipeline.cache import Cache

    text = BASE.replace("derivatives: {mode: fixed}",
                        "derivatives: {mode: adaptive, n_rungs: 5, start_step: 0.05, start_rungs: window, "
                        "on_camb_failure: degrade}")
    fc = run_forecast(survey_from_text(text, "adaptive-degrade.yaml"), cache=Cache(cache_dir))
    sw = fc.sweeps["Omega_m"]
    assert sw.mode == "adaptive" and len(sw.steps) == 4
    assert sw.steps[0] == pytest.approx(0.32 * 0.05 / 2) and sw.extended_down == 1
    assert fc.rounds >= 2
    assert any("degrade" in r and "Omega_m = 0.336" in r for r in fc.trust_reasons)
    assert np.all(np.isfinite(fc.fisher.matrix))
    # four rungs in all: without rung 0 there are three, and none can be added
    few = text.replace("n_rungs: 5", "n_rungs: 4")
    with pytest.raises(ComputationError, match="too few complete rungs"):
        run_forecast(survey_from_text(few, "adaptive-few.yaml"), cache=Cache(cache_dir))
