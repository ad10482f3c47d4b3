"""What a worker process of ``fishcast run`` imports (issue 15: the CPU outside CAMB).

A spawned worker unpickles CosmologySettings (fishcast.cosmology) and the evaluation task
(fishcast.pipeline.execute) and uses the cosmology cache (fishcast.pipeline.cache, which
needs fishcast.io's atomic writer and safe readers). None of that needs the probes, pydantic,
h5py or the Fisher algebra; each of them cost the workers CPU on every run (measured with
tests/benchmarks/bench_overhead.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return set(out)


def test_a_worker_imports_no_probe_pydantic_or_hdf5():
    mods = _modules_after("import fishcast.pipeline.execute, fishcast.cosmology, fishcast.pipeline.cache\n"
                          "from fishcast.cosmology import CosmologySettings, compute_many")
    assert "fishcast.cosmology" in mods and "fishcast.io.atomic" in mods  # the scan sees them
    heavy = {"pydantic", "h5py", "fishcast.probes", "fishcast.survey", "fishcast.fisher", "fishcast.io.hdf5",
             "scipy.ndimage", "yaml"}
    assert mods & heavy == set()


def test_fishcast_io_names_resolve_on_first_use():
    import fishcast.io as fio
    from fishcast.io import hdf5

    assert fio.write_forecast is hdf5.write_forecast
    assert fio.SCHEMA_VERSION == hdf5.SCHEMA_VERSION
    from fishcast.io import AtomicFiles, dataset, open_forecast  # noqa: F401  (from-imports too)

    assert {"write_forecast", "read_fisher", "check_output_path"} <= set(dir(fio))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        fio.nonexistent  # noqa: B018


def test_cosmology_still_reads_the_probes_requirements():
    # settings_for takes CosmologyRequirements without importing it at module level
    from fishcast.cosmology import settings_for
    from fishcast.probes.base import CosmologyRequirements

    st = settings_for(CosmologyRequirements(z_max=2.0, k_max=3.0, nonlinear=True))
    assert st.z_max == 2.0 and st.k_max >= 3.0 and st.nonlinear_model == "takahashi"
