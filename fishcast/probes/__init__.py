"""Probes: pure functions from a cosmology (the :class:`~fishcast.probes.base.Cosmology`
protocol, which :class:`~fishcast.cosmology.CosmologyResult` implements) and nuisance
parameters to a data vector (the mean of the observable, or the covariance of a zero-mean
field) and the Fisher metric that goes with it. :mod:`~fishcast.probes.base` is the contract
every probe implements; :mod:`~fishcast.probes.sky` the shared sky area and surface-density
units.

The probe registry: a survey YAML section ``probes.<section>`` is validated by the section's
pydantic config model and turned into a :class:`~fishcast.probes.base.Probe` by its build
function. :mod:`fishcast.survey` builds its schema (``fishcast schema``) and its validation
from this registry, so adding a probe touches only this folder (its module and one
:func:`register_probe` line below) and nothing else::

    register_probe("my_probe", MyProbeConfig, build_my_probe)

where ``build_my_probe(config, survey_dir) -> Probe`` may raise
:class:`~fishcast.errors.FishcastError` for bad input (reported at ``probes.my_probe``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

from .base import Probe

__all__ = ["ProbeEntry", "register_probe", "unregister_probe", "registered_probes", "registry_version"]


@dataclass(frozen=True)
class ProbeEntry:
    """One registered probe: its YAML section, config model, build function and the
    description shown in the survey schema."""

    section: str
    config: type[BaseModel]
    build: Callable[[BaseModel, pathlib.Path], Probe]
    description: str = ""


_PROBES: dict[str, ProbeEntry] = {}
_VERSION = [0]


def register_probe(section: str, config: type[BaseModel], build: Callable[[BaseModel, pathlib.Path], Probe],
                   description: str = "", *, replace: bool = False) -> ProbeEntry:
    """Register the probe of YAML section ``probes.<section>`` (``description``: shown on the
    section in the schema; the config model's own docstring is shown anyway). Registering a
    section again is an error unless ``replace``; the section order is the registration order."""
    if not section.isidentifier():
        raise ValueError(f"probe section {section!r} must be a Python identifier (it is a YAML key)")
    if section in _PROBES and not replace:
        raise ValueError(f"probe section {section!r} is already registered")
    entry = ProbeEntry(section, config, build, description)
    _PROBES[section] = entry
    _VERSION[0] += 1
    return entry


def unregister_probe(section: str) -> None:
    """Remove a registered probe (unknown sections are ignored)."""
    if _PROBES.pop(section, None) is not None:
        _VERSION[0] += 1


def registered_probes() -> Mapping[str, ProbeEntry]:
    """Section name -> :class:`ProbeEntry`, in registration order."""
    return dict(_PROBES)


def registry_version() -> int:
    """Changes whenever the registry does (models built from it are cached by it)."""
    return _VERSION[0]


# ----------------------------------------------------------------------------- built-ins
from . import multitracer_clustering as _cic  # noqa: E402
from . import photometric as _photo  # noqa: E402
from . import weak_lensing as _wl  # noqa: E402

register_probe("weak_lensing", _wl.WeakLensingConfig, _wl.build)
register_probe("counts_in_cells", _cic.CountsInCellsConfig, _cic.build)
register_probe("photometric", _photo.PhotometricConfig, _photo.build)
