"""Everything fishcast reads and writes: the HDF5 file contract (:mod:`fishcast.io.hdf5`,
with ``/derivatives`` in :mod:`fishcast.io.sweeps`, ``/diagnostics`` in
:mod:`fishcast.io.diagnostics`, batch summaries in :mod:`fishcast.io.batch_summary`, and the
string and units conventions in :mod:`fishcast.io.h5util`), the exchange formats of other
codes (:mod:`fishcast.io.exchange`) and the one atomic writer every file goes through
(:mod:`fishcast.io.atomic`).

The names below are imported from their modules on first use (PEP 562), so that a module
that needs only the atomic writer or the safe readers (the cosmology cache, in every worker
process) does not load h5py, the Fisher algebra and scipy.linalg with this package."""

from __future__ import annotations

import importlib

#: name -> the submodule that defines it
_EXPORTS = {
    "AtomicFiles": "atomic", "WriteError": "atomic", "atomic_h5": "atomic", "atomic_open": "atomic",
    "check_output_path": "atomic",
    "dataset": "h5util",
    "SCHEMA_VERSION": "hdf5", "file_sha256": "hdf5", "open_forecast": "hdf5", "read_fisher": "hdf5",
    "read_spectra_comparison": "hdf5", "read_tracer_comparison": "hdf5", "write_fisher_file": "hdf5",
    "write_forecast": "hdf5",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # an ordinary attribute from now on
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
