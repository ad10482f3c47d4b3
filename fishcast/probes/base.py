"""The contract between a probe and the rest of fishcast.

A probe turns a cosmology (anything that satisfies the :class:`Cosmology` protocol: the CAMB
:class:`~fishcast.cosmology.CosmologyResult`, or a stand-in in the tests) and a mapping of
parameter values into a *signal*: a numpy array of the probe's own shape (for cosmic shear
C_ell of shape (n_ell, n_bin, n_bin); for multi-tracer clustering the tracer covariance per
(k, mu) mode). Its Fisher metric turns derivatives of that signal into a Fisher matrix:

    F_ab = gram(d_a, d_b)

which is also the norm the derivative engine uses to compare derivatives "in the data's own
metric" (``|d|^2 = gram(d, d)``). Probes never call CAMB and never touch disk.

Every hook a pipeline may call is declared on :class:`Probe`, with a default where a probe
may have nothing to say, so the pipeline never asks ``hasattr``. A probe is immutable once
built: what its Fisher metric needs from the fiducial cosmology (e.g. the shell volumes of
multi-tracer clustering, or the observed frame its signal is modelled in) is *returned* by
:meth:`Probe.fiducial_context` and handed back to :meth:`Probe.gram` and, for a probe whose
signal depends on it, to :meth:`Probe.signal` -- never stored on the probe.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..parameters import NuisanceParameters

__all__ = ["Cosmology", "CosmologyRequirements", "Probe", "combined_requirements"]


@runtime_checkable
class Cosmology(Protocol):
    """What a probe may use of one evaluated cosmology (units in each docstring).

    Distances and wavenumbers without an ``_h`` suffix are in Mpc and 1/Mpc; the ``_h``
    variants are in Mpc/h and h/Mpc (the units of clustering probes).
    """

    @property
    def z_max(self) -> float:
        """Largest redshift at which the cosmology is tabulated (dimensionless)."""

    @property
    def h(self) -> float:
        """H0 / (100 km/s/Mpc) (dimensionless)."""

    @property
    def H0(self) -> float:
        """Hubble constant [km/s/Mpc]."""

    @property
    def Omega_m(self) -> float:
        """Total matter density today (baryons + CDM + massive neutrinos), dimensionless."""

    @property
    def sigma8(self) -> float:
        """rms linear matter fluctuation in spheres of 8 Mpc/h at z = 0 (dimensionless)."""

    @property
    def has_nonlinear(self) -> bool:
        """Whether the nonlinear P(k, z) was computed (else ``pk(nonlinear=True)`` fails)."""

    def chi_of(self, z) -> np.ndarray:
        """Comoving radial distance chi(z) [Mpc]."""

    def hubble_of(self, z) -> np.ndarray:
        """Hubble rate H(z) [km/s/Mpc]."""

    def growth_of(self, z) -> np.ndarray:
        """Linear growth factor of total matter D(z) / D(0) (dimensionless), the amplitude of
        ``pk``."""

    def growth_rate_of(self, z) -> np.ndarray:
        """Linear growth rate of baryons + CDM f(z) = d ln D_cb / d ln a (dimensionless), the f
        of the velocities of galaxies (Kaiser RSD); with massive neutrinos not exactly
        d ln D / d ln a of ``growth_of`` (total matter)."""

    def pk(self, z, k, nonlinear: bool = True) -> np.ndarray:
        """Matter power spectrum P(k, z) [Mpc^3] at k [1/Mpc]; z and k broadcast."""

    def pk_h(self, z, k_h, nonlinear: bool = False) -> np.ndarray:
        """Matter power spectrum P(k, z) [(Mpc/h)^3] at k_h [h/Mpc]; z and k_h broadcast."""


@dataclass(frozen=True)
class CosmologyRequirements:
    """What a probe needs from the cosmology backend (read by
    :func:`fishcast.cosmology.settings_for` when it sets CAMB up).

    z_max: largest redshift needed.
    k_max: largest wavenumber at which the probe evaluates P(k) [1/Mpc].
    nonlinear: whether the probe uses the nonlinear matter power spectrum (when the survey's
        ``nonlinear_model`` is not ``none``); a survey none of whose probes does is computed
        linear only.
    transfer_high_precision: whether the probe needs CAMB's dense k sampling of the transfer
        functions (``Transfer.high_precision``): a probe that resolves the BAO wiggles in k
        (3D clustering) does; one that sees P(k) only through broad integrals (Limber) may
        not, when measured so. Default True (a probe that does not say keeps it).
    """

    z_max: float
    k_max: float
    nonlinear: bool
    transfer_high_precision: bool = True


def combined_requirements(reqs: Iterable[CosmologyRequirements]) -> CosmologyRequirements:
    """What a set of probes needs together: the largest z and k, nonlinear if any is, the
    dense transfer sampling if any needs it."""
    reqs = list(reqs)
    if not reqs:
        raise ValueError("no requirements to combine")
    return CosmologyRequirements(
        z_max=max(r.z_max for r in reqs), k_max=max(r.k_max for r in reqs), nonlinear=any(r.nonlinear for r in reqs),
        transfer_high_precision=any(r.transfer_high_precision for r in reqs),
    )


def _freeze(value: Any) -> None:
    if isinstance(value, np.ndarray):
        value.flags.writeable = False


def _check_hook_signatures(cls) -> None:
    """A probe's Fisher metric hooks take the fiducial context (``gram(fiducial_signal,
    derivs, context=None)``): refuse, when the class is defined, an override that does not,
    instead of a TypeError in the middle of a run."""
    import inspect

    for hook in ("gram", "norm", "gram_by_tracer"):
        fn = cls.__dict__.get(hook)
        if fn is None or not callable(fn):
            continue
        params = inspect.signature(fn).parameters
        ok = "context" in params or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values())
        if not ok:
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}.{hook} must accept the fiducial context: "
                            f"def {hook}(self, fiducial_signal, derivs, context=None) "
                            "(see fishcast.probes.base.Probe)")


class Probe(ABC):
    """A probe: its parameters, its signal and its Fisher metric.

    Immutable after construction: assigning an attribute of a built probe raises
    AttributeError, and the numpy arrays it holds are read-only (``__init__`` of a subclass
    is wrapped so that the object is sealed when the outermost ``__init__`` returns).
    """

    #: short name used in the HDF5 file (``/fisher/probes/<name>``) and in messages
    name: str = "probe"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _check_hook_signatures(cls)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def sealing_init(self, *args, **kw):
            init(self, *args, **kw)
            if type(self).__init__ is sealing_init:  # the outermost __init__ has finished
                for value in vars(self).values():
                    _freeze(value)
                object.__setattr__(self, "_sealed", True)

        cls.__init__ = sealing_init

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            raise AttributeError(
                f"{type(self).__name__} is immutable after construction (tried to set {name!r}); "
                "fiducial-dependent state goes through fiducial_context()")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if getattr(self, "_sealed", False):
            raise AttributeError(f"{type(self).__name__} is immutable after construction (tried to delete {name!r})")
        object.__delattr__(self, name)

    # --- what the probe is --------------------------------------------------------------
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

    # --- the data and its metric ----------------------------------------------------------
    @abstractmethod
    def signal(self, cosmo: Cosmology, params: Mapping[str, float]) -> np.ndarray:
        """The probe's data (mean observable or field covariance) at one parameter point.

        A probe whose data are measured in a frame fixed by the fiducial cosmology (the
        multi-tracer probe's observed frame) takes a third argument named ``context``: what
        :meth:`fiducial_context` returned; the pipeline passes it to a signal that has that
        argument, whenever it is not None (at the fiducial itself the signal is computed
        before, without it)."""

    def fiducial_context(self, cosmo: Cosmology, params: Mapping[str, float]) -> Any:
        """What the Fisher metric (and, for some probes, the signal) needs from the fiducial
        cosmology besides the fiducial signal (an immutable object, passed back as
        ``context`` to :meth:`gram`, :meth:`norm`, :meth:`reports` and, when not None, to
        :meth:`signal`); None (the default) when it needs nothing."""
        return None

    @abstractmethod
    def gram(self, fiducial_signal: np.ndarray, derivs: np.ndarray, context: Any = None) -> np.ndarray:
        """Fisher matrix F_ab from derivatives ``derivs`` of shape (n_par, *signal.shape);
        ``context``: what :meth:`fiducial_context` returned at the fiducial."""

    def norm(self, fiducial_signal: np.ndarray, d: np.ndarray, context: Any = None) -> float:
        """Length of one derivative (or difference of derivatives) in the Fisher metric."""
        g = self.gram(fiducial_signal, d[None, ...], context)[0, 0]
        return float(np.sqrt(max(g, 0.0)))

    def trace_form(self, signal: np.ndarray, cosmo: Cosmology) -> tuple[np.ndarray, np.ndarray] | None:
        """The probe's Fisher metric in trace form, when it has one: ``(Cb, w)`` with Cb (M, n,
        n) the covariance of each of M independent Gaussian blocks (a band's spectra, a
        cell's tracers) at the fiducial ``signal`` and w (M,) their weights, so that

            F_ab = sum_m w_m / 2 Tr[Cb_m^-1 dC_m/da Cb_m^-1 dC_m/db]

        (the form :mod:`fishcast.mock` draws Wishart realizations from). Default None: no
        trace form known (the mocks then use the metric's eigen-decomposition)."""
        return None

    # --- outputs ----------------------------------------------------------------------------
    def products(self, cosmo: Cosmology, params: Mapping[str, float]) -> dict[str, tuple[np.ndarray, str]]:
        """Arrays written to ``/data/<probe name>/`` of the HDF5 file: name -> (array, units)."""
        return {}

    def reports(self, cosmo: Cosmology, params: Mapping[str, float], fiducial_signal: np.ndarray,
                derivs: np.ndarray, parameter_names: Sequence[str],
                context: Any = None) -> dict[str, tuple[np.ndarray, str]]:
        """Extra Fisher products written under ``/fisher/probes/<probe name>/``:
        ``{dataset path: (array, units)}``. ``derivs`` (n_par, *signal.shape) are the chosen
        derivatives with respect to ``parameter_names``, at the fiducial ``cosmo``/``params``.
        Default: none."""
        return {}

    @property
    def covariance_note(self) -> str | None:
        """What the probe's own covariance includes beyond one independent block (e.g. the
        joint covariance of several spectra), appended to the output file's
        ``cross_probe_covariance`` statement. Default: None (nothing to add)."""
        return None
