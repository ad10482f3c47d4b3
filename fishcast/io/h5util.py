"""The small conventions every HDF5 group of fishcast shares: strings and units.

Strings
    Written as variable-length UTF-8 (:func:`strings`, :func:`dataset`); read back as
    ``str`` whatever the writer used (UTF-8, fixed-length bytes, numpy unicode) with
    :func:`text` (one value) and :func:`read_strings` (a 1-d dataset).

Units (schema 1.1)
    Every ``units`` attribute is one plain unit string: ``""`` for a dimensionless quantity,
    otherwise a unit such as ``"eV"``, ``"km/s/Mpc"``, ``"1/Mpc"``, ``"sr^-1"``
    (:func:`units_attr`). A dataset whose entries have different units (one per parameter:
    errors, a covariance, a Fisher matrix) has no ``units`` attribute; it has
    ``units_from`` (the path of the dataset listing one unit per parameter, e.g.
    ``/parameters/units``) and ``units_rule`` (how an entry's unit follows from that list:
    ``unit_i`` -- the unit of the parameter along the last axis --, ``unit_i*unit_j`` (a
    covariance), ``1/(unit_i*unit_j)`` (a Fisher matrix) or ``1/(unit_i*unit_j)^2`` (the
    variance of a Fisher matrix element); a matrix rule applies to the last two axes).
    Files of schema 1.0 wrote ``"1"`` or no attribute for dimensionless quantities, JSON
    lists of units and prose; :func:`read_units` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import FileFormatError

#: the ``units_rule`` values (see the module docstring); ``unit_i`` is the unit of the
#: parameter along the dataset's last axis
UNITS_RULES = ("unit_i", "unit_i*unit_j", "1/(unit_i*unit_j)", "1/(unit_i*unit_j)^2")


def _string_dtype():
    import h5py

    return h5py.string_dtype("utf-8")


def strings(values: Iterable) -> np.ndarray:
    """``values`` as a 1-d array of variable-length UTF-8 strings (for a dataset or attribute)."""
    return np.array([str(v) for v in values], dtype=_string_dtype())


def text(value) -> str:
    """One string attribute or element as ``str`` (bytes are decoded as UTF-8)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def read_strings(ds) -> list[str]:
    """A 1-d dataset of strings (UTF-8 or bytes) as a list of str; anything else is a
    FileFormatError naming the file and the dataset."""
    values = ds[()]
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.kind not in "SUO":
        raise FileFormatError(f"{ds.file.filename}: {ds.name}: expected a list of strings, found "
                              f"{getattr(values, 'dtype', type(values))} of shape {getattr(values, 'shape', ())}")
    return [text(s) for s in values]


def dataset(group, name: str, data, units: str | None = None, **attrs):
    """Create dataset ``name`` in ``group`` (strings as UTF-8), with a ``units`` attribute
    when ``units`` is given (``""``: dimensionless) and the other ``attrs``."""
    arr = np.asarray(data)
    if arr.dtype.kind == "S":
        arr = strings(text(x) for x in arr.ravel()).reshape(arr.shape)
    elif arr.dtype.kind in "UO":
        arr = strings(arr.ravel()).reshape(arr.shape)
    ds = group.create_dataset(name, data=arr)
    if units is not None:
        units_attr(ds, units)
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def string_dataset(group, name: str, values: Iterable, **attrs):
    """A 1-d dataset of UTF-8 strings (also when ``values`` is empty)."""
    ds = group.create_dataset(name, data=strings(values))
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def normalize_unit(unit: str | None) -> str:
    """A unit string in the convention: ``None``, ``"1"`` and ``"(1)"`` are dimensionless ``""``."""
    u = "" if unit is None else str(unit).strip()
    return "" if u in ("1", "(1)", "dimensionless", "none") else u


def units_attr(obj, unit: str | None) -> None:
    """Set the ``units`` attribute of a dataset or group to one plain unit string."""
    obj.attrs["units"] = normalize_unit(unit)


def per_parameter_units(obj, rule: str, source: str = "/parameters/units") -> None:
    """Mark a dataset whose entries have one unit per parameter (see the module docstring)."""
    if rule not in UNITS_RULES:
        raise ValueError(f"unknown units rule {rule!r}; one of {UNITS_RULES}")
    obj.attrs["units_from"] = source
    obj.attrs["units_rule"] = rule


def quotient(numerator: str | None, denominator: str | None) -> str:
    """The unit of numerator/denominator in the convention: ``quotient("", "eV") == "1/eV"``,
    ``quotient("sr", "") == "sr"``, compound units in parentheses."""
    n, d = normalize_unit(numerator), normalize_unit(denominator)
    if not d:
        return n

    def wrap(u):
        return f"({u})" if any(c in u for c in "/* ") else u

    return f"{wrap(n) if n else '1'}/{wrap(d)}"


def read_units(obj) -> str | list[str] | None:
    """The units of a dataset, from a file of any schema version: one unit string (``""``
    dimensionless), a list of units (one per entry: an old JSON list, or the list named by
    ``units_from``), or ``None`` when the file says nothing."""
    attrs = obj.attrs
    if "units_from" in attrs:
        src = text(attrs["units_from"])
        f = obj.file
        if src in f:
            return [normalize_unit(u) for u in read_strings(f[src])]
        return None
    if "units" not in attrs:
        return None
    u = attrs["units"]
    if isinstance(u, np.ndarray) and u.ndim == 1:
        return [normalize_unit(text(x)) for x in u]
    u = text(u)
    if u.startswith("["):
        try:
            items = json.loads(u)
        except ValueError:
            items = None
        if isinstance(items, list):
            return [normalize_unit(str(x)) for x in items]
    return normalize_unit(u)


def units_list(units: Sequence[str] | None) -> list[str] | None:
    """Parameter units in the convention (``None`` stays ``None``)."""
    return None if units is None else [normalize_unit(u) for u in units]
