"""fishcast: cosmology Fisher forecasts with checked, stable derivatives.

Data flow (see the README): survey YAML -> :mod:`fishcast.survey` -> cosmology evaluations
(:mod:`fishcast.cosmology`) -> probe data vectors (:mod:`fishcast.probes`) -> derivatives
(:mod:`fishcast.derivatives`) -> Fisher matrix (:mod:`fishcast.fisher`) -> HDF5
(:mod:`fishcast.io`).
"""

__version__ = "0.1.0"
