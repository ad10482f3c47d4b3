"""The execution of the Boltzmann runs (issue 15, the process pool): held transfer objects,
tasks run in this process, and the packing of a stage's tail into the idle cores.

* a point whose CAMB transfer object this process still holds costs no Boltzmann run and
  gives the same numbers, bit for bit, as a fresh run (and as a run with another CAMB
  thread count): real CAMB, the session's small settings;
* the pool never runs more CAMB threads at once than workers x threads, the tasks run here
  included; the last task of a list, alone, runs with every thread of the budget; each task
  runs with the thread count it is said to (read back inside the task). Checked on tasks
  that only sleep and report ``camb.config.ThreadNum``: the scheduling, not CAMB's speed.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from fishcast import cosmology as _cosmo
from fishcast.cosmology import CosmologyResult, TransferStore
from fishcast.pipeline.execute import ProcessExecutor, Task, camb_threads

from .conftest import ISTF_FIDUCIAL


def _same(a: CosmologyResult, b: CosmologyResult) -> bool:
    arrays = all(np.array_equal(getattr(a, n), getattr(b, n)) for n in CosmologyResult.ARRAYS
                 if getattr(a, n) is not None or getattr(b, n) is not None)
    return arrays and dict(a.derived) == dict(b.derived)


# ------------------------------------------------------------------------ held transfer objects
def test_a_held_transfer_object_costs_no_boltzmann_run_and_gives_the_same_numbers(fast_settings):
    import camb

    ns_point = dict(ISTF_FIDUCIAL, n_s=0.97, sigma8=0.80)
    fresh = _cosmo.compute_many([ns_point], fast_settings)[0]  # no store: a run of its own
    old = camb.config.ThreadNum
    try:
        with _cosmo.transfer_store(keep=[(ISTF_FIDUCIAL, fast_settings)]) as store:
            runs, reused = _cosmo.boltzmann_calls(), _cosmo.transfer_reuses()
            camb.config.ThreadNum = 2  # the fiducial's run with two CAMB threads ...
            fid, s8 = _cosmo.compute_many([ISTF_FIDUCIAL, dict(ISTF_FIDUCIAL, sigma8=0.83)], fast_settings)
            assert _cosmo.boltzmann_calls() - runs == 1 and _cosmo.transfer_reuses() == reused  # one group: shared
            assert store.holds(_cosmo.store_key(ISTF_FIDUCIAL, fast_settings))
            camb.config.ThreadNum = 1  # ... re-used later with one, after serving other primordial parameters
            again = _cosmo.compute_many([ns_point, ISTF_FIDUCIAL], fast_settings)
            assert _cosmo.boltzmann_calls() - runs == 1  # no further Boltzmann run
            assert _cosmo.transfer_reuses() - reused == 2  # two points re-used the held transfer object
        assert _cosmo.active_store() is None  # released with the block
        after = _cosmo.boltzmann_calls()
        _cosmo.compute_many([ns_point], fast_settings)
        assert _cosmo.boltzmann_calls() - after == 1  # outside a store nothing is held
    finally:
        camb.config.ThreadNum = old
    # the same numbers as the fresh runs, bit for bit
    assert _same(again[0], fresh) and _same(again[1], fid)
    assert not _same(again[0], fid)  # (the comparison can fail)


def test_the_store_keeps_the_kept_keys_and_a_few_recent_ones():
    st = TransferStore(capacity=2, keep=[("fid",)])
    st.put(("fid",), "F")
    for k in "abc":
        st.put((k,), k.upper())
    assert st.holds(("fid",)) and not st.holds(("a",)) and st.holds(("b",)) and st.holds(("c",)) and len(st) == 3
    assert st.get(("b",)) == "B"  # used: now the most recent
    st.put(("d",), "D")
    assert st.holds(("b",)) and not st.holds(("c",)) and st.holds(("fid",))
    assert st.wants(("fid",)) and not st.wants(("x",))
    assert TransferStore(capacity=0, keep=[("y",)]).wants(("y",))  # kept once computed, not yet held


def test_a_nested_store_is_the_outer_one(fast_settings):
    with _cosmo.transfer_store() as outer:
        with _cosmo.transfer_store(keep=[(ISTF_FIDUCIAL, fast_settings)]) as inner:
            assert inner is outer and outer.wants(_cosmo.store_key(ISTF_FIDUCIAL, fast_settings))
        assert _cosmo.active_store() is outer
    assert _cosmo.active_store() is None


# ------------------------------------------------------------------------ packing
def _sleep_and_report(seconds: float) -> tuple[int, int]:
    """Sleep; return (CAMB's thread setting here, this process's id)."""
    time.sleep(seconds)
    return camb_threads(), os.getpid()


def _frozen_objects() -> int:
    """Objects of this process the garbage collector leaves alone (gc.freeze)."""
    import gc

    return gc.get_freeze_count()


def _max_threads_at_once(outcomes) -> int:
    """The largest sum of threads of tasks running at the same moment (their own clocks:
    time.monotonic is one clock for every process of the machine)."""
    edges = sorted([(o.started, o.threads) for o in outcomes] + [(o.finished, -o.threads) for o in outcomes],
                   key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    now = peak = 0
    for _, d in edges:
        now += d
        peak = max(peak, now)
    return peak


def test_the_tail_runs_with_the_idle_threads_and_the_budget_is_never_exceeded():
    """Three equal tasks on 2 workers x 1 thread: the first two together, the third alone with
    both threads (waiting for the second is sooner than running it on one). Every task ran
    with the threads the pool says (CAMB's setting read inside it), and never more than 2
    threads at once."""
    tasks = [Task(f"t{i}", _sleep_and_report, (1.0,)) for i in range(3)]
    with ProcessExecutor(2, threads=1, retries=0) as ex:
        assert ex.budget == 2 and ex.tail_threads(1) == 2 and ex.tail_threads(2) == 1
        out = ex.run(tasks)
    assert all(o.ok for o in out), [o.error for o in out]
    assert [o.value[0] for o in out] == [o.threads for o in out]  # what CAMB was set to, inside the task
    assert [o.threads for o in out] == [1, 1, 2]
    assert _max_threads_at_once(out) <= 2
    assert not any(o.here for o in out) and all(o.value[1] != os.getpid() for o in out)


def test_local_tasks_run_here_inside_the_budget():
    """Tasks marked local run in this process (a thread), with the other tasks in the pool,
    and count against the same budget of CAMB threads; this process's CAMB setting is left
    as it was."""
    before = camb_threads()
    tasks = [Task(f"t{i}", _sleep_and_report, (0.6,)) for i in range(5)]
    with ProcessExecutor(2, threads=1, retries=0) as ex:
        out = ex.run(tasks, local=[3])
    assert all(o.ok for o in out), [o.error for o in out]
    assert out[3].here and out[3].value[1] == os.getpid()
    assert all(not o.here and o.value[1] != os.getpid() for i, o in enumerate(out) if i != 3)
    assert [o.value[0] for o in out] == [o.threads for o in out]
    assert _max_threads_at_once(out) <= 2
    assert camb_threads() == before


def test_a_single_task_gets_every_thread_and_many_tasks_one_each():
    with ProcessExecutor(2, threads=1, retries=0) as ex:
        one = ex.run([Task("only", _sleep_and_report, (0.1,))])
        many = ex.run([Task(f"m{i}", _sleep_and_report, (0.3,)) for i in range(4)])
    assert one[0].threads == 2 and one[0].value[0] == 2
    assert [o.threads for o in many][:2] == [1, 1] and _max_threads_at_once(many) <= 2


@pytest.mark.parametrize("cost, running, expect", [
    (None, [(0.0, 1)], False),  # nothing finished yet: no estimate, no waiting
    (1.0, [(0.0, 1)], True),    # the other task ends now: wait, then 2 threads (0.5 s < 1 s)
    (1.0, [(0.9, 1)], False),   # it just started: 0.9 s + 0.5 s > 1 s on one thread now
])
def test_waiting_for_threads_only_when_it_finishes_sooner(cost, running, expect):
    ex = ProcessExecutor(2, threads=1)
    if cost is not None:
        ex._costs.append(cost)
    assert ex._worth_waiting(2, 1, running, now=1.0) is expect


# ------------------------------------------------------------------------ worker start-up
def _threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("Threads:")).split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_the_forkserver_forks_a_single_thread_that_has_imported_the_worker_modules():
    """The default start method on Linux: the server process imported numpy, scipy, camb and
    fishcast once (preloaded) and runs one thread only (no BLAS thread pool, no OpenMP
    threads) when it forks a worker; the workers compute with the threads they are given."""
    from multiprocessing import forkserver

    from fishcast.pipeline.execute import WORKER_MODULES, default_start_method

    assert default_start_method() == "forkserver"
    with ProcessExecutor(2, threads=1, retries=0) as ex:
        assert ex.start_method == "forkserver"
        out = ex.run([Task(f"t{i}", _sleep_and_report, (0.2,)) for i in range(3)])
        server = forkserver._forkserver._forkserver_pid
        assert _threads_of(server) == 1
        with open(f"/proc/{server}/maps") as fh:
            assert "camblib.so" in fh.read()  # CAMB's library is loaded in the server, before any fork
    assert "camb" in WORKER_MODULES and "fishcast.cosmology" in WORKER_MODULES
    assert all(o.ok for o in out), [o.error for o in out]
    assert [o.value[0] for o in out] == [o.threads for o in out]


def test_the_forkserver_freezes_what_it_imported_before_forking(tmp_path):
    """The server imports its modules with the garbage collector off
    (fishcast.pipeline.server_start first) and fishcast.pipeline.server_ready last: what
    numpy, scipy, CAMB and fishcast made is frozen (gc.freeze) and the collector is on again
    before any worker is forked, so that the workers' collections skip it, and so does the
    server's exit, which a caller reading the run's output waited for (~0.2 s per run). The
    frozen objects are the imports' (tens of thousands), inherited by the worker; this
    process freezes nothing by using the pool."""
    import gc

    from fishcast.pipeline.execute import WORKER_MODULES

    assert WORKER_MODULES[0] == "fishcast.pipeline.server_start"
    assert WORKER_MODULES[-1] == "fishcast.pipeline.server_ready"
    before = gc.get_freeze_count()
    with ProcessExecutor(1, threads=1, retries=0) as ex:
        out = ex.run([Task("frozen", _frozen_objects, ()), Task("collecting", gc.isenabled, ())])
    assert out[0].ok, out[0].error
    assert out[0].value > 10_000
    assert out[1].ok and out[1].value is True
    assert gc.get_freeze_count() == before


def test_the_command_line_freezes_its_objects_before_the_exit():
    """`fishcast` (the entry point, not the group that tests call) freezes every live object
    when its command is over, so that the interpreter's exit does not walk them (~0.2 s of
    each run with scipy loaded)."""
    import subprocess
    import sys

    code = ("import gc, sys\nfrom fishcast.cli.main import main\nsys.argv = ['fishcast', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint(gc.get_freeze_count())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "fishcast" in res.stdout
    assert int(res.stdout.strip().splitlines()[-1]) > 1000


def test_the_command_line_imports_the_library_without_collections(monkeypatch):
    """`fishcast run` imports the library with the garbage collector off (its ~200
    collections during the imports cost ~0.1 s of CPU) and freezes what the imports made; a
    program calling the commands (the tests' CliRunner) keeps its collector as it is."""
    import gc

    from fishcast.cli import main as entry

    with entry.library_imports():
        assert gc.isenabled()
    monkeypatch.setattr(entry, "_ENTRY_POINT", True)
    before = gc.get_freeze_count()
    try:
        with entry.library_imports():
            assert not gc.isenabled()
            made = [[] for _ in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(made)
    finally:
        gc.unfreeze()


def test_one_helper_freezes_for_every_process():
    """The garbage-collector policy has one "freeze what exists now" helper
    (fishcast.collector.freeze_existing, its docstring the measured reasons): the entry point's
    imports and exit and the forkserver call it, no other code calls gc.freeze. It freezes
    what is alive, not what is made later, and leaves the collector on or off as it was."""
    import gc
    import pathlib
    import re

    from fishcast.collector import freeze_existing

    root = pathlib.Path(__file__).parents[1]
    callers = sorted(str(p.relative_to(root)) for d in ("fishcast", "cli") for p in (root / d).rglob("*.py")
                     if re.search(r"\bgc\.freeze\(", p.read_text()))
    assert callers == ["fishcast/collector.py"]
    users = sorted(str(p.relative_to(root)) for d in ("fishcast", "cli") for p in (root / d).rglob("*.py")
                   if "freeze_existing()" in p.read_text() and p.name != "collector.py")
    assert users == ["cli/main.py", "fishcast/pipeline/server_ready.py"]
    was = gc.isenabled()
    before = gc.get_freeze_count()
    made = [[] for _ in range(1000)]
    try:
        freeze_existing()
        frozen = gc.get_freeze_count()
        assert frozen >= before + len(made)
        later = [[] for _ in range(1000)]
        assert gc.get_freeze_count() == frozen and len(later) == 1000
        assert gc.isenabled() == was
    finally:
        gc.unfreeze()


def test_spawned_workers_work_too():
    with ProcessExecutor(1, threads=1, retries=0, start_method="spawn") as ex:
        out = ex.run([Task("t", _sleep_and_report, (0.0,))])
    assert out[0].ok and out[0].value[1] != os.getpid()
    with pytest.raises(Exception, match="start_method"):
        ProcessExecutor(1, start_method="fork")


# ------------------------------------------------------------------------ Ctrl-C with a pool
@pytest.mark.alone
@pytest.mark.parametrize("sig,code,word", [(__import__("signal").SIGINT, 130, "interrupted"),
                                           (__import__("signal").SIGTERM, 143, "terminated (SIGTERM)")])
def test_an_interrupt_with_workers_and_a_task_here_keeps_what_it_says(sig, code, word, tmp_path, monkeypatch):
    """`fishcast run --workers 2` (the fiducial computed in this process while the workers
    run the others) interrupted once the first evaluation is in the cache: exit 130 / 143, one
    line, the count of kept evaluations is what the cache holds after the exit (the task here
    writes nothing once interrupted), every entry whole, no output."""
    from .test_faults import SLOW, _interrupt, entries_whole

    monkeypatch.delenv("FISHCAST_WORKERS", raising=False)
    (tmp_path / "slow.yaml").write_text(SLOW)
    cache_root = tmp_path / "cache"
    out = tmp_path / "out.h5"
    status, err, seconds = _interrupt(["run", "slow.yaml", "-o", out, "--cache-dir", cache_root, "-q",
                                       "--workers", "2"], cache_root, tmp_path, sig=sig)
    assert status == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    kept = entries_whole(cache_root)
    assert lines[0] == (f"{word}: {kept} cosmology evaluation{'s' if kept != 1 else ''} of this run kept in "
                        f"the cache at {cache_root} ({kept} in all; a rerun starts from them); no output written")
    assert kept >= 1 and seconds < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "slow.yaml"]


def test_the_forkserver_imports_the_fishcast_this_process_runs(tmp_path):
    """A folder named fishcast in the current directory (a checkout, say) is not what the
    forkserver preloads: it searches this process's path, not the current folder first. Run
    in a fresh process (the forkserver is one per process), from a folder with such a decoy."""
    import subprocess
    import sys

    import fishcast

    (tmp_path / "fishcast").mkdir()
    (tmp_path / "fishcast" / "__init__.py").write_text("DECOY = True\n")
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "pool.py"
    script.write_text(
        "from fishcast.pipeline.execute import ProcessExecutor, Task\n"
        "def where():\n"
        "    import fishcast\n"
        "    return fishcast.__file__\n"
        "if __name__ == '__main__':\n"
        "    with ProcessExecutor(1, threads=1, retries=0, start_method='forkserver') as ex:\n"
        "        out = ex.run([Task('where', where)])\n"
        "    print(out[0].ok, out[0].value if out[0].ok else out[0].error)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    ok, where = res.stdout.split()
    assert ok == "True" and where == fishcast.__file__, res.stdout + res.stderr


_PRESTART_SCRIPT = r"""
import os, signal, sys, time
from multiprocessing import forkserver
from fishcast.pipeline.execute import ProcessExecutor, Task

def main():
    ex = ProcessExecutor(2, threads=1, retries=0)
    ex.prestart()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored here at once
    pid = forkserver._forkserver._forkserver_pid
    time.sleep(0.15)  # the server runs Python and imports numpy, scipy, CAMB (~0.5 s)
    os.kill(pid, signal.SIGINT)  # Ctrl-C reaches the whole group while the server imports
    time.sleep(1.5)
    with open(f"/proc/{pid}/status") as fh:
        state = next(line for line in fh if line.startswith("State:"))
    assert "Z" not in state.split()[1], state  # not dead (a zombie not yet reaped)
    out = ex.run([Task("t", os.getpid)])
    assert forkserver._forkserver._forkserver_pid == pid  # the same server, not a restarted one
    ex.close()
    print("ok", out[0].ok)

if __name__ == "__main__":
    main()
"""


def test_a_prestarted_forkserver_ignores_ctrl_c_while_it_imports(tmp_path):
    """``fishcast run`` starts the worker pool's server before it loads the survey, so that
    its imports overlap this process's. Ctrl-C goes to the whole process group: the server,
    still importing (it ignores SIGINT itself only afterwards), must neither die nor print a
    traceback; this process's own SIGINT handler is untouched."""
    import subprocess
    import sys

    script = tmp_path / "prestart.py"
    script.write_text(_PRESTART_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok True"
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr
