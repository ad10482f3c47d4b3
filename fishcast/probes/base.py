"""The narrow interface every probe offers.

A probe turns a cosmology (a :class:`~fishcast.cosmology.CosmologyResult`) and a mapping of
parameter values into a *signal*: a numpy array of the probe's own shape (for cosmic shear
C_ell of shape (n_ell, n_bin, n_bin); for multi-tracer clustering the tracer covariance per
(k, mu) mode). Its Fisher metric turns derivatives of that signal into a Fisher matrix:

    F_ab = gram(d_a, d_b)

which is also the norm the derivative engine uses to compare derivatives "in the data's own
metric" (``|d|^2 = gram(d, d)``). Probes never call CAMB and never touch disk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..parameters import NuisanceParameters


@dataclass(frozen=True)
class CosmologyRequirements:
    """What a probe needs from the cosmology backend.

    z_max: largest redshift needed.
    k_max: largest wavenumber needed [1/Mpc].
    nonlinear: whether the nonlinear matter power spectrum is needed.
    """

    z_max: float
    k_max: float
    nonlinear: bool


class Probe(ABC):
    """A probe: its parameters, its signal and its Fisher metric."""

    #: short name used in the HDF5 file (``/fisher/probes/<name>``) and in messages
    name: str = "probe"

    @abstractmethod
    def nuisance_parameters(self) -> NuisanceParameters:
        """The nuisance parameters this probe owns, in the parameter registry's terms: a
        mapping name -> default fiducial that carries each one's
        :class:`~fishcast.parameters.NuisanceParameter` (unit, LaTeX label, step scale,
        domain), e.g. ``NuisanceParameters([NuisanceParameter("A", 1.0, "eV", "A")])`` or
        members of a :class:`~fishcast.parameters.ParameterFamily`. A survey declares them to
        the registry, so their units and labels reach the output file."""

    @abstractmethod
    def requirements(self) -> CosmologyRequirements:
        """What the probe needs computed by the cosmology backend."""

    @abstractmethod
    def signal(self, cosmo, params: Mapping[str, float]) -> np.ndarray:
        """The probe's data (mean observable or field covariance) at one parameter point."""

    @abstractmethod
    def gram(self, fiducial_signal: np.ndarray, derivs: np.ndarray) -> np.ndarray:
        """Fisher matrix F_ab from derivatives ``derivs`` of shape (n_par, *signal.shape)."""

    def products(self, cosmo, params: Mapping[str, float]) -> dict[str, tuple[np.ndarray, str]]:
        """Arrays written to ``/data/<probe name>/`` of the HDF5 file: name -> (array, units)."""
        return {}

    def norm(self, fiducial_signal: np.ndarray, d: np.ndarray) -> float:
        """Length of one derivative (or difference of derivatives) in the Fisher metric."""
        g = self.gram(fiducial_signal, d[None, ...])[0, 0]
        return float(np.sqrt(max(g, 0.0)))
