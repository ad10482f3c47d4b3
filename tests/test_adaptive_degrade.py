"""The 2-rung adaptive start through the forecast pipeline when CAMB fails at one of its
points (``derivatives.on_camb_failure: degrade``): the rung that needs the failed point is
dropped, the single rung left is not judged, and the ladder grows (never through the failed
point) to a whole window -- a ladder that lost part of its start never passes on the start's
criterion. The earlier start (a whole window) is tested in tests/test_degrade.py."""

from __future__ import annotations

import numpy as np
import pytest

from fishcast.pipeline.forecast import run_forecast
from fishcast.survey import survey_from_text

from .test_degrade import BASE, camb_fails_above_omega_m_0335  # noqa: F401  (the fixture)


def test_a_start_that_loses_a_rung_grows_to_a_window(camb_fails_above_omega_m_0335, cache_dir):  # noqa: F811
    """Ladder 0.1 .. 0.0031 (6 rungs, h_max 0.1), expected plateau rungs 0..3, start = its
    central rungs 1, 2 (relative 0.05, 0.025): Omega_m = 0.32 x 1.05 = 0.336 fails (the
    fixture), rung 1 is dropped, rung 2 is left alone; down first (up would need the failed
    point), then down to the window of rungs 2..5."""
    from fishcast.pipeline.cache import Cache

    text = BASE.replace("derivatives: {mode: fixed}",
                        "derivatives: {mode: adaptive, h_max: 0.1, n_rungs: 6, start_step: 0.1, "
                        "on_camb_failure: degrade}")
    fc = run_forecast(survey_from_text(text, "adaptive-start-degrade.yaml"), cache=Cache(cache_dir))
    sw = fc.sweeps["Omega_m"]
    assert sw.mode == "adaptive" and sw.basis == "window" and sw.plateau_rungs == 4
    np.testing.assert_allclose(sw.relative_steps, 0.1 / 2.0 ** np.arange(2, 6), rtol=1e-12)
    assert sw.extended_up == 0 and sw.extended_down == 3
    assert sw.verdict == "PASS"
    assert any("degrade" in r and "Omega_m = 0.336" in r for r in fc.trust_reasons)
    assert fc.sweeps["sigma8"].basis == "start"  # untouched: its start passed
    assert np.all(np.isfinite(fc.fisher.matrix))
