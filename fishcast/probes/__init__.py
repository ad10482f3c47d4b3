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
The config model and the build function may also be named as ``"module:attribute"``
strings, imported on first use: the built-in probes are registered so, and a survey imports
the modules of the probes it uses only (:func:`fishcast.survey.config_models`; the
multi-tracer and photometric modules cost ~45 ms of a weak-lensing run's start-up).
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from .base import Probe

__all__ = ["ProbeEntry", "register_probe", "unregister_probe", "registered_probes", "registry_version"]


def _resolve(ref: Any) -> Any:
    """A ``"module:attribute"`` string imported, anything else as it is."""
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)
    return ref


class ProbeEntry:
    """One registered probe: its YAML section, config model, build function and the
    description shown in the survey schema. The config model and the build function given
    as ``"module:attribute"`` strings are imported on first use (:attr:`loaded` until then
    False)."""

    __slots__ = ("section", "description", "_config", "_build")

    def __init__(self, section: str, config: type[BaseModel] | str,
                 build: Callable[[BaseModel, pathlib.Path], Probe] | str, description: str = ""):
        self.section = section
        self.description = description
        self._config = config
        self._build = build

    @property
    def config(self) -> type[BaseModel]:
        if isinstance(self._config, str):
            self._config = _resolve(self._config)
        return self._config

    @property
    def build(self) -> Callable[[BaseModel, pathlib.Path], Probe]:
        if isinstance(self._build, str):
            self._build = _resolve(self._build)
        return self._build

    @property
    def loaded(self) -> bool:
        """Whether the config model is imported (a survey without this section does not)."""
        return not isinstance(self._config, str)

    def __repr__(self) -> str:
        return f"ProbeEntry({self.section!r}, {self._config!r}, {self._build!r}, {self.description!r})"


_PROBES: dict[str, ProbeEntry] = {}
_VERSION = [0]


def register_probe(section: str, config: type[BaseModel] | str,
                   build: Callable[[BaseModel, pathlib.Path], Probe] | str,
                   description: str = "", *, replace: bool = False) -> ProbeEntry:
    """Register the probe of YAML section ``probes.<section>`` (``description``: shown on the
    section in the schema; the config model's own docstring is shown anyway). ``config`` and
    ``build`` may be ``"module:attribute"`` strings, imported when a survey uses the section
    (or the schema is made). Registering a section again is an error unless ``replace``; the
    section order is the registration order."""
    if not section.isidentifier():
        raise ValueError(f"probe section {section!r} must be a Python identifier (it is a YAML key)")
    if section in _PROBES and not replace:
        raise ValueError(f"probe section {section!r} is already registered")
    for ref in (config, build):
        if isinstance(ref, str) and (ref.count(":") != 1 or not all(ref.partition(":")[::2])):
            raise ValueError(f"{ref!r}: a lazily imported object is named 'module:attribute'")
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
# imported when a survey uses them (or the schema is made)
register_probe("weak_lensing", f"{__name__}.weak_lensing:WeakLensingConfig", f"{__name__}.weak_lensing:build")
register_probe("counts_in_cells", f"{__name__}.multitracer_clustering:CountsInCellsConfig",
               f"{__name__}.multitracer_clustering:build")
register_probe("photometric", f"{__name__}.photometric:PhotometricConfig", f"{__name__}.photometric:build")
