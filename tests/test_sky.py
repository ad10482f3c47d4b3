"""The shared sky area and surface-density units (fishcast.probes.sky), used by every probe
that observes a patch of sky. Reference values: the sphere is 4 pi sr and
4 pi (180/pi)^2 = 41252.96 deg^2; 1 sr = (180*60/pi)^2 arcmin^2 = 1.181810e7 arcmin^2."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from fishcast.probes import multitracer_clustering as mt
from fishcast.probes import sky
from fishcast.probes import weak_lensing as wl


def test_unit_conversions():
    assert sky.FULL_SKY_DEG2 == pytest.approx(41252.96, abs=0.01)
    assert sky.FULL_SKY_SR == pytest.approx(4 * math.pi, rel=1e-15)
    assert sky.per_arcmin2_to_per_sr(1.0) == pytest.approx((180 * 60 / math.pi) ** 2, rel=1e-15) == pytest.approx(1.181810e7, rel=1e-6)
    assert sky.per_deg2_to_per_sr(1.0) == pytest.approx(3282.806, rel=1e-6)
    # 30 galaxies per arcmin^2 = 30 * 3600 per deg^2: the same density in sr^-1
    assert sky.per_arcmin2_to_per_sr(30.0) == pytest.approx(sky.per_deg2_to_per_sr(30.0 * 3600.0), rel=1e-12)


def test_sky_area():
    a = sky.SkyAreaConfig(area_deg2=15000.0)
    assert a.sky_fraction == pytest.approx(15000.0 / 41252.96, rel=1e-6)
    assert a.sky_area_deg2 == pytest.approx(15000.0, rel=1e-12)
    assert a.solid_angle_sr == pytest.approx(15000.0 / 3282.806, rel=1e-6)
    b = sky.SkyAreaConfig(f_sky=0.5)
    assert b.sky_area_deg2 == pytest.approx(0.5 * 41252.96, rel=1e-6)
    for bad in ({}, {"f_sky": 0.1, "area_deg2": 100.0}):
        with pytest.raises(ValidationError, match="exactly one of f_sky and area_deg2"):
            sky.SkyAreaConfig(**bad)
    with pytest.raises(ValidationError):
        sky.SkyAreaConfig(f_sky=1.5)
    with pytest.raises(ValidationError):
        sky.SkyAreaConfig(area_deg2=50000.0)  # more than the sphere


def test_both_probes_share_it():
    for cfg in (wl.WeakLensingConfig, mt.CountsInCellsConfig):
        assert issubclass(cfg, sky.SkyAreaConfig)
        assert {"f_sky", "area_deg2"} <= set(cfg.model_fields)
    # the public constants of the probes are the shared ones
    assert wl.ARCMIN2_PER_SR is sky.ARCMIN2_PER_SR and wl.FULL_SKY_DEG2 is sky.FULL_SKY_DEG2
    assert mt.FULL_SKY_DEG2 is sky.FULL_SKY_DEG2
