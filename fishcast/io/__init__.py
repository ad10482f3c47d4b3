"""Everything fishcast reads and writes: the HDF5 file contract (:mod:`fishcast.io.hdf5`)
and the exchange formats of other codes (:mod:`fishcast.io.exchange`)."""

from .hdf5 import (  # noqa: F401
    SCHEMA_VERSION,
    atomic_h5,
    check_output_path,
    dataset,
    file_sha256,
    open_forecast,
    read_fisher,
    read_tracer_comparison,
    write_fisher_file,
    write_forecast,
)
