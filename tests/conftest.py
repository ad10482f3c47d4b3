"""Shared fixtures. CAMB calls cost ~0.5 s: the fiducial cosmology is computed once per
session on a small grid and shared by every test that needs real CAMB output."""

from __future__ import annotations

import os

import pytest

# `fishcast run` uses one worker process per usable core by default. The suite runs its
# forecasts in this process (tests patch CAMB and count its calls here, and the cores are
# shared): --workers / $FISHCAST_WORKERS. The default itself is tested in test_batch.py
# (test_run_with_workers_equals_the_batch_design), with the variable removed.
os.environ.setdefault("FISHCAST_WORKERS", "1")

#: Euclid IST:F fiducial (Euclid Collaboration: Blanchard et al. 2020, Table 1)
ISTF_FIDUCIAL = {
    "Omega_m": 0.32, "Omega_b": 0.05, "h": 0.67, "n_s": 0.96, "sigma8": 0.815583,
    "w0": -1.0, "wa": 0.0, "m_nu": 0.06, "Omega_k": 0.0,
}


@pytest.fixture(scope="session")
def fast_settings():
    from fishcast.cosmology import CosmologySettings

    return CosmologySettings(nonlinear_model="takahashi", z_max=3.0, n_z=60, k_max=10.0, n_k=200)


@pytest.fixture(scope="session")
def fiducial_cosmo(fast_settings):
    from fishcast.cosmology import compute

    return compute(ISTF_FIDUCIAL, fast_settings)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One CAMB result cache for the whole run: identical points are computed once.

    Under pytest-xdist (the default run: ``-n`` in setup.cfg) every worker has a base
    folder of its own (``pytest-N/popen-gwK``); the cache is the folder ``cache`` in their
    common parent ``pytest-N``, which belongs to this run alone, so the workers share it.
    Several workers may write the same entry at once: the cache's writes are atomic
    (tests/test_cache.py::test_concurrent_writers_leave_whole_entries)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "cache"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def lumratio(tmp_path_factory):
    """A small <L>/L* table made here (the IST:F table is input data, not part of the project)."""
    import numpy as np

    path = tmp_path_factory.mktemp("tables") / "lumratio.dat"
    z = np.linspace(0.0, 4.5, 46)
    np.savetxt(path, np.column_stack([z, 0.05 + 0.6 * z / (1 + z)]))
    return path
