"""Shared fixtures. CAMB calls cost ~0.5 s: the fiducial cosmology is computed once per
session on a small grid and shared by every test that needs real CAMB output."""

from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="module")
def toy_h5(tmp_path_factory, cache_dir):
    """A real forecast file of the toy survey (tests/test_faults.py's TOY, run by `fishcast
    run` through the session cache), with the survey beside it as toy.yaml: a file to damage
    (tests copy it first), a steps_from file, a reader's input. One per test module, as each
    of test_faults, test_faults_round2 and test_located_errors had its own copy of this."""
    from tests.test_faults import TOY, invoke

    d = tmp_path_factory.mktemp("toy_h5")
    (d / "toy.yaml").write_text(TOY)
    out = d / "toy.h5"
    res = invoke("run", d / "toy.yaml", "-o", out, "--cache-dir", cache_dir, "-q")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def lumratio(tmp_path_factory):
    """A small <L>/L* table made here (the IST:F table is input data, not part of the project)."""
    import numpy as np

    path = tmp_path_factory.mktemp("tables") / "lumratio.dat"
    z = np.linspace(0.0, 4.5, 46)
    np.savetxt(path, np.column_stack([z, 0.05 + 0.6 * z / (1 + z)]))
    return path


@pytest.fixture
def no_camb(monkeypatch):
    """CAMB may not be called: its transfer-function entry point raises (a call is a failure
    of the test, reported as an AssertionError, not a fishcast error); the list of the calls
    made, for the test to assert that it is empty."""
    import camb

    calls = []

    def refuse(*a, **kw):
        calls.append(a)
        raise AssertionError("CAMB was called")

    monkeypatch.setattr(camb, "get_transfer_functions", refuse)
    return calls


# --------------------------------------------------------------- tests that run alone
def _sigint_as_in_a_terminal() -> None:
    """The Ctrl-C tests send SIGINT to a ``fishcast`` they start and expect it to stop (exit
    130). A process started with SIGINT ignored passes that on to its children, and Python
    then installs no KeyboardInterrupt handler: a test run launched in the background by a
    non-interactive shell (``cmd &``: POSIX shells ignore SIGINT in background jobs) or by a
    CI runner that does so would see those tests fail for a reason outside fishcast. The run
    restores Python's default handler, as a terminal session has it, so that every test
    process -- the xdist workers included -- and every subprocess they start receive Ctrl-C
    as a user's shell delivers it."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config):
    _sigint_as_in_a_terminal()
    config.addinivalue_line(
        "markers", "alone: the test measures wall-clock time (a signal's effect within 20 s, a refusal "
        "within a second): under pytest-xdist no other worker runs a test meanwhile")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, a test marked ``alone`` holds an exclusive lock on a file of this
    run (in the run's common temporary folder, beside the shared cache) from its setup to its
    teardown, and every other test a shared one: a test marked alone waits for the test the
    other workers are running to finish, and they start no test until it has finished. Its
    wall-clock bounds then see the machine as a one-process run does (the workers would
    otherwise double the load: an interrupted pool finishing its CAMB run took > 20 s beside
    another worker's CAMB runs on 2 loaded cores). In one process: nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks here; nothing is locked
        fcntl = None
    if fcntl is None or not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    path = item.config._tmp_path_factory.getbasetemp().parent / "tests-alone.lock"
    mode = fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH
    with open(path, "a") as fh:
        fcntl.flock(fh, mode)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh, fcntl.LOCK_UN)
