"""The observed sky: its area and the units of surface densities, in one place.

Every probe that observes a patch of sky takes its size as ``f_sky`` (the observed fraction
of the sphere) or ``area_deg2`` (square degrees), exactly one of them, through
:class:`SkyAreaConfig`, and converts surface densities with the functions below.

Units: the full sphere is 4 pi sr = 4 pi (180/pi)^2 deg^2 = 41252.96 deg^2; one steradian is
(180/pi)^2 = 3282.806 deg^2 = (180*60/pi)^2 = 1.181810e7 arcmin^2, so a density of
1 arcmin^-2 is 1.181810e7 sr^-1 and 1 deg^-2 is 3282.806 sr^-1.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FULL_SKY_SR", "DEG2_PER_SR", "ARCMIN2_PER_SR", "FULL_SKY_DEG2",
    "SkyAreaConfig", "per_arcmin2_to_per_sr", "per_deg2_to_per_sr",
]

#: the full sphere [sr]
FULL_SKY_SR = 4.0 * math.pi
#: square degrees per steradian, (180/pi)^2 = 3282.806
DEG2_PER_SR = (180.0 / math.pi) ** 2
#: square arcminutes per steradian, (180 * 60 / pi)^2 = 1.181810e7: a density of 1 arcmin^-2
#: is 1.181810e7 sr^-1
ARCMIN2_PER_SR = (180.0 * 60.0 / math.pi) ** 2
#: the full sky in square degrees, 4 pi (180/pi)^2 = 41252.96
FULL_SKY_DEG2 = FULL_SKY_SR * DEG2_PER_SR


def per_arcmin2_to_per_sr(n):
    """A surface density [arcmin^-2] in sr^-1."""
    return np.asarray(n, dtype=float) * ARCMIN2_PER_SR


def per_deg2_to_per_sr(n):
    """A surface density [deg^-2] in sr^-1."""
    return np.asarray(n, dtype=float) * DEG2_PER_SR


class SkyAreaConfig(BaseModel):
    """The observed area of a probe section (the keys ``f_sky`` or ``area_deg2``, exactly one).

    A probe's configuration inherits it, so the keys sit directly in the probe's section.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    f_sky: float | None = Field(None, gt=0.0, le=1.0, description="observed sky fraction (give f_sky or area_deg2)")
    area_deg2: float | None = Field(
        None, gt=0.0, le=FULL_SKY_DEG2,
        description="observed area [deg^2] (give f_sky or area_deg2); f_sky = area / 41252.96",
    )

    @model_validator(mode="after")
    def _one_sky_area(self):
        if (self.f_sky is None) == (self.area_deg2 is None):
            raise ValueError("give exactly one of f_sky and area_deg2")
        return self

    @property
    def sky_fraction(self) -> float:
        """The observed fraction of the sphere (dimensionless)."""
        return float(self.f_sky) if self.f_sky is not None else float(self.area_deg2) / FULL_SKY_DEG2

    @property
    def sky_area_deg2(self) -> float:
        """The observed area [deg^2], f_sky 41252.96."""
        return self.sky_fraction * FULL_SKY_DEG2

    @property
    def solid_angle_sr(self) -> float:
        """The observed solid angle [sr], f_sky 4 pi."""
        return self.sky_fraction * FULL_SKY_SR
