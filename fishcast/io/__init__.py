"""Everything fishcast reads and writes: the HDF5 file contract (:mod:`fishcast.io.hdf5`,
with ``/derivatives`` in :mod:`fishcast.io.sweeps`, ``/diagnostics`` in
:mod:`fishcast.io.diagnostics`, batch summaries in :mod:`fishcast.io.batch_summary`, and the
string and units conventions in :mod:`fishcast.io.h5util`), the exchange formats of other
codes (:mod:`fishcast.io.exchange`) and the one atomic writer every file goes through
(:mod:`fishcast.io.atomic`)."""

from .atomic import AtomicFiles, WriteError, atomic_h5, atomic_open, check_output_path  # noqa: F401
from .h5util import dataset  # noqa: F401
from .hdf5 import (  # noqa: F401
    SCHEMA_VERSION,
    file_sha256,
    open_forecast,
    read_fisher,
    read_spectra_comparison,
    read_tracer_comparison,
    write_fisher_file,
    write_forecast,
)
