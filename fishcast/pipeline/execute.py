"""Execution of independent tasks behind one interface: serial, a local process pool, or Dask.

fishcast has no scheduler of its own. An :class:`Executor` runs a list of :class:`Task`
(a picklable module-level function and its arguments) and returns one :class:`Outcome` per
task, in the order given, whatever the order of completion:

* :class:`SerialExecutor` -- in this process, one task after the other.
* :class:`ProcessExecutor` -- ``concurrent.futures.ProcessPoolExecutor`` (standard library,
  ``forkserver`` or ``spawn`` start method) with N worker processes: the default of ``fishcast batch``. Needs
  no Dask.
* :class:`DaskExecutor` -- ``dask.distributed``: an existing scheduler (``tcp://host:8786``),
  a ``LocalCluster`` of N worker processes, or a batch-system cluster started by
  ``dask-jobqueue`` (``SLURMCluster``, ``PBSCluster``; cores, memory, queue, ... come from the
  usual dask-jobqueue configuration or from ``cluster_options``).

Failures are reported per task (:attr:`Outcome.error`), never raised for the whole list, so
one bad task does not sink the others. A task that raises a :class:`~fishcast.errors.FishcastError`
(bad input, a CAMB failure at a point) fails at once: such errors are deterministic and a
retry would fail the same way. Any other exception -- including a worker process that died --
is retried up to ``retries`` times (Dask's own ``retries=`` for the Dask backend).

Threads: every worker process of a local pool runs CAMB and numpy with
``threads_per_worker(workers)`` threads (the usable cores divided among the workers, at least
one: :func:`usable_cores` counts the cores this process may run on, ``os.sched_getaffinity``,
so a Slurm or ``taskset`` allocation is respected), so that workers x threads = cores and
they do not oversubscribe them. Dask workers run one thread each. CAMB 2.0.5 results were
checked to be bitwise identical for 1, 2 and 3 OpenMP threads (background, P_lin and P_nl
with halofit and HMcode): the thread count affects speed, not the numbers.

Packing (:class:`ProcessExecutor`): the pool keeps a budget of workers x threads CAMB
threads and never runs more at once. The last tasks of a list, fewer than the workers
(21 Boltzmann runs on 2 workers: the 21st), would leave cores idle: each is given
budget // (tasks left) threads instead (``camb.config.ThreadNum`` per task), started when
that many are free -- when waiting for them is expected to finish it sooner than starting
it now with the usual threads (estimated from the tasks finished so far). Tasks the caller
marks ``local`` (the cosmologies whose CAMB transfer object this process holds or keeps:
:func:`fishcast.cosmology.transfer_store`) run in this process, in a thread, inside the
same budget: the fiducial of a forecast is computed here while the workers start, and the
Gaussian-validity check's n_s / sigma8 points re-use its transfer functions here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FishcastError, InputError

#: thread count of CAMB (OpenMP) and BLAS inside a worker process
WORKER_THREADS = 1
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

BACKENDS = ("serial", "process", "dask")
#: how a local pool starts its workers: ``spawn`` (a fresh interpreter each, which imports
#: numpy, scipy, camb and fishcast itself) or ``forkserver`` (forks of one server process
#: that imported :data:`WORKER_MODULES` once)
START_METHODS = ("spawn", "forkserver")


def default_start_method() -> str:
    """``forkserver`` where the platform has it (Linux, the BSDs; measured on 2 cores: a
    2-worker pool's start costs 0.6 s of CPU instead of 1.2 s, the workers' imports made once
    -- tests/benchmarks/bench_pool_start.py), else ``spawn`` (macOS and Windows: a forked
    child of a process that loaded system frameworks is not safe there)."""
    import multiprocessing as mp
    import sys

    if sys.platform.startswith("linux") and "forkserver" in mp.get_all_start_methods():
        return "forkserver"
    return "spawn"


def _preload_modules() -> tuple[str, ...]:
    """What the forkserver imports: :data:`WORKER_MODULES`; fishcast's own only where the
    server finds the modules where this process does (Python >= 3.11, see
    :func:`_server_path`), else the third-party ones (numpy, scipy, camb: most of the cost)."""
    import sys

    if sys.version_info >= (3, 11):
        return WORKER_MODULES
    return tuple(m for m in WORKER_MODULES if not m.startswith("fishcast"))


@contextlib.contextmanager
def _server_path() -> Iterator[None]:
    """While the forkserver starts: its module search path is this process's ``sys.path``
    (``PYTHONPATH``) without the current folder in front (``PYTHONSAFEPATH``, Python >= 3.11):
    multiprocessing (3.11) starts the server with ``python -c`` and does not give it this
    process's path, so a ``fishcast`` folder in the current directory would otherwise be
    preloaded instead of the one this process runs."""
    import sys

    path = os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)
    with _environ({"PYTHONPATH": path, "PYTHONSAFEPATH": "1"}):
        yield


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore this process's
    environment (variables that were unset are removed again)."""
    old = {k: os.environ.get(k) for k in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """While the forkserver starts, SIGINT is ignored (an ignored signal stays ignored across
    fork and exec): Ctrl-C reaches the whole process group, and the server would otherwise
    print a KeyboardInterrupt traceback of its own while it imports its modules (it ignores
    SIGINT itself only once they are imported). This process's handler is restored at once.
    Outside the main thread (where signals cannot be set) nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


#: what a worker imports to compute cosmologies; the forkserver imports them in this order,
#: between :mod:`fishcast.pipeline.server_start` (the garbage collector off during the
#: imports) and :mod:`fishcast.pipeline.server_ready` (what they made frozen, the collector
#: on again: the workers' collections and the server's exit skip it)
WORKER_MODULES = ("fishcast.pipeline.server_start", "numpy", "scipy.integrate", "scipy.interpolate", "camb",
                  "fishcast.cosmology", "fishcast.pipeline.cache", "fishcast.pipeline.execute",
                  "fishcast.pipeline.server_ready")
CLUSTERS = ("local", "slurm", "pbs")


@dataclass(frozen=True)
class Task:
    """One unit of work: ``func(*args)``. ``name`` is what failures are reported by."""

    name: str
    func: Callable[..., Any]
    args: tuple = ()


@dataclass(frozen=True)
class Outcome:
    """What became of one task. ``error`` is ``"ExceptionType: message"`` when not ``ok``;
    ``exit_code`` is the error's fishcast exit status (2 input, 4 computation, 1 other)."""

    name: str
    ok: bool
    value: Any = None
    error: str = ""
    attempts: int = 1
    exit_code: int = 0
    #: Boltzmann runs a failed cosmology task made before it failed, in its process (so
    #: that they are counted wherever it ran; 0 for other tasks)
    boltzmann_calls: int = 0
    #: CAMB (OpenMP) threads the task ran with (0: not set by the executor), whether it ran
    #: in this process (``here``: a ``local`` task of :meth:`ProcessExecutor.run`), and when
    #: it started and finished (``time.monotonic()`` of the process that ran it: one clock
    #: for every process of a machine) [s]
    threads: int = 0
    here: bool = False
    started: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True)
class _Failed:
    """A deterministic failure returned (not raised) by a worker, so that it is not retried."""

    error: str
    exit_code: int
    boltzmann_calls: int = 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FishcastError):
        return f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def usable_cores() -> int:
    """Number of cores this process may run on (``os.sched_getaffinity``: a Slurm, cgroup or
    ``taskset`` allocation, not the whole machine); ``os.cpu_count()`` where the platform has
    no affinity call."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """CAMB (OpenMP) and BLAS threads of each of ``workers`` processes sharing ``cores``
    (default :func:`usable_cores`): cores // workers, at least 1."""
    cores = usable_cores() if cores is None else int(cores)
    return max(1, cores // max(1, int(workers)))


def configure_worker(threads: int = WORKER_THREADS, ignore_sigint: bool = False) -> None:
    """Fix the thread count of CAMB in this process (called once in every worker).

    ``ignore_sigint``: the worker ignores SIGINT (set for the process pool's workers). Ctrl-C
    reaches the whole process group; the main process alone handles it (it keeps what is in
    the cache, says so in one line and shuts the pool down after the task a worker is
    running), so that no worker prints a KeyboardInterrupt traceback of its own. Such a
    worker also ends when the main process is gone (:func:`_end_with_parent`). SIGTERM keeps
    its default action in a worker (it ends at once, even inside CAMB), except while it
    writes a cache entry: the entry is finished first (:func:`fishcast.io.atomic.atomic_open`).
    """
    global _CONFIGURED
    _CONFIGURED = True
    if ignore_sigint:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (the forkserver ignores it; see server_start)
        _end_with_parent()
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    try:
        import camb
    except ImportError:  # pragma: no cover - camb is a dependency
        return
    camb.config.ThreadNum = int(threads)


_CONFIGURED = False


def _end_with_parent() -> None:
    """In a pool worker: a daemon thread waits for the process that started the pool (its
    sentinel, ``multiprocessing.parent_process()``, reaches end-of-file when that process is
    gone) and then sends this worker SIGTERM. A worker otherwise waits for its next task for
    ever once the main process is gone without shutting the pool down (killed by SIGKILL or
    the out-of-memory killer, or a worker the pool never filed): it would keep the
    forkserver and the resource tracker alive and hold the run's stdout and stderr, so that
    a caller reading them through a pipe never saw their end. SIGTERM ends the worker at
    once, or, while it writes a cache entry, right after the entry is renamed into place
    (:func:`fishcast.io.atomic.atomic_open`): nothing is left half-written."""
    import multiprocessing
    import signal

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        from multiprocessing.connection import wait

        with contextlib.suppress(OSError, ValueError):
            wait([sentinel])
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="fishcast-end-with-parent", daemon=True).start()


def _call(func: Callable[..., Any], args: tuple) -> Any:
    """Run one task in a worker: FishcastError comes back as a value (no retry)."""
    global _CONFIGURED
    if not _CONFIGURED:
        configure_worker()
        _CONFIGURED = True
    try:
        return func(*args)
    except FishcastError as exc:
        return _Failed(_describe(exc), exc.exit_code, int(getattr(exc, "boltzmann_calls", 0)))


@dataclass(frozen=True)
class _Ran:
    """What a task of the pool returns: its value, the threads it ran with and when."""

    value: Any
    threads: int
    started: float
    finished: float
    here: bool = False


def set_camb_threads(threads: int) -> None:
    """CAMB's OpenMP thread count in this process (``camb.config.ThreadNum``: CAMB sets it
    before each parallel part of a run)."""
    import camb

    camb.config.ThreadNum = int(threads)


def camb_threads() -> int:
    """CAMB's thread setting in this process (0: OpenMP's default)."""
    import camb

    return int(camb.config.ThreadNum)


def _call_with_threads(func: Callable[..., Any], args: tuple, threads: int) -> _Ran:
    """The pool's worker entry point: :func:`_call` with ``threads`` CAMB threads, timed."""
    if not _CONFIGURED:
        configure_worker(threads)
    set_camb_threads(threads)
    t0 = time.monotonic()
    value = _call(func, args)
    return _Ran(value, threads, t0, time.monotonic())


def _run_here(func: Callable[..., Any], args: tuple, threads: int) -> _Ran:
    """A ``local`` task in this process with ``threads`` CAMB threads (this process's setting
    is restored afterwards). A FishcastError comes back as a value, as from a worker."""
    old = camb_threads()
    set_camb_threads(threads)
    t0 = time.monotonic()
    try:
        value = func(*args)
    except FishcastError as exc:
        value = _Failed(_describe(exc), exc.exit_code, int(getattr(exc, "boltzmann_calls", 0)))
    finally:
        set_camb_threads(old)
    return _Ran(value, threads, t0, time.monotonic(), here=True)


def _start_here(func: Callable[..., Any], *args: Any):
    """``func(*args)`` in a daemon thread of this process, as a ``concurrent.futures.Future``
    (waited for with the pool's). A daemon: an interrupted run does not wait for it (its
    results are only kept by the caller, in this thread, once it finished)."""
    import concurrent.futures as cf

    fut: cf.Future = cf.Future()

    def body() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(func(*args))
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting thread
            fut.set_exception(exc)

    threading.Thread(target=body, name="fishcast-local-task", daemon=True).start()
    return fut


def _outcome(task: Task, value: Any, attempts: int) -> Outcome:
    extra = {}
    if isinstance(value, _Ran):
        extra = dict(threads=value.threads, here=value.here, started=value.started, finished=value.finished)
        value = value.value
    if isinstance(value, _Failed):
        return Outcome(task.name, False, None, value.error, attempts, value.exit_code, value.boltzmann_calls, **extra)
    return Outcome(task.name, True, value, "", attempts, 0, **extra)


OnDone = Callable[[Outcome], None]


class Executor:
    """Runs tasks; see the module docstring. Use as a context manager or call :meth:`close`."""

    #: backend name ("serial", "process", "dask") and nominal number of workers
    backend = "serial"
    workers = 1

    def __init__(self, retries: int = 1):
        if retries < 0:
            raise InputError(f"retries must be >= 0, got {retries}")
        self.retries = int(retries)

    def run(self, tasks: Sequence[Task], on_done: OnDone | None = None, local: Collection[int] = ()) -> list[Outcome]:
        """Run every task; ``on_done(outcome)`` as each finishes (for progress bars).
        Returns the outcomes in the order of ``tasks``. ``local``: indices of tasks to run in
        this process (a process pool runs them here, alongside its workers; the serial
        executor runs every task here; Dask runs them on its workers)."""
        raise NotImplementedError

    def share(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """Make large read-only values available to many tasks (Dask scatters them to the
        workers once); pass the returned mapping, or its items, as task arguments."""
        return values

    def describe(self) -> str:
        return f"{self.backend} ({self.workers} worker{'s' if self.workers != 1 else ''})"

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialExecutor(Executor):
    """In this process, in order. CAMB keeps its own thread setting here."""

    backend = "serial"

    def run(self, tasks: Sequence[Task], on_done: OnDone | None = None, local: Collection[int] = ()) -> list[Outcome]:
        out = []
        for task in tasks:
            attempts = 0
            while True:
                attempts += 1
                try:
                    value = task.func(*task.args)
                except FishcastError as exc:
                    value = _Failed(_describe(exc), exc.exit_code, int(getattr(exc, "boltzmann_calls", 0)))
                except Exception as exc:
                    if attempts <= self.retries:
                        continue
                    value = _Failed(_describe(exc), 1)
                break
            oc = _outcome(task, value, attempts)
            out.append(oc)
            if on_done:
                on_done(oc)
        return out


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """Set the thread variables while worker processes are spawned (they inherit them before
    numpy or CAMB are imported), then restore this process's environment."""
    with _environ({k: str(threads) for k in _THREAD_ENV}):
        yield


class ProcessExecutor(Executor):
    """A local pool of ``workers`` processes (``concurrent.futures``; started by
    ``start_method``, default :func:`default_start_method`: forks of a forkserver that
    imported the worker modules once, or spawned interpreters -- either way a script that
    uses it needs the usual ``if __name__ == "__main__":`` guard); default: one per usable
    core. Each runs CAMB with ``threads`` threads (default :func:`threads_per_worker`:
    workers x threads = usable cores; with a forkserver, BLAS keeps the server's one thread).

    At most workers x threads CAMB threads run at once (the budget), ``local`` tasks (run in
    this process) included. The tail of a list -- fewer tasks left than the budget holds at
    ``threads`` each -- gets budget // (tasks left) threads per task (see the module
    docstring); :attr:`Outcome.threads` says what each task ran with.

    A worker that dies (killed, out of memory, a crash in Fortran) breaks the pool: the pool
    is started again and the unfinished tasks run one at a time from then on, so that the
    task that kills its worker is known; it fails after ``retries`` retries, the others run.
    """

    backend = "process"
    #: completed tasks whose cost (thread-seconds) estimates the next ones'
    _COST_WINDOW = 8
    #: longest wait for a task [s]: an interrupt held meanwhile is raised after it
    _POLL = 0.2

    def __init__(self, workers: int | None = None, retries: int = 1, threads: int | None = None,
                 start_method: str | None = None):
        super().__init__(retries)
        start_method = start_method or default_start_method()
        if start_method not in START_METHODS:
            raise InputError(f"start_method must be one of {', '.join(START_METHODS)}, got {start_method!r}")
        self.start_method = start_method
        n = workers if workers is not None else usable_cores()
        if n < 1:
            raise InputError(f"the number of workers must be >= 1, got {n}")
        self.workers = int(n)
        self.threads = int(threads) if threads is not None else threads_per_worker(self.workers)
        if self.threads < 1:
            raise InputError(f"the number of threads per worker must be >= 1, got {threads}")
        #: CAMB threads that may run at once (workers x threads: the usable cores by default)
        self.budget = self.workers * self.threads
        self._pool = None
        self._retired: list = []  # manager threads of pools let go after a crash (joined by close)
        self._costs: list[float] = []  # thread-seconds of recent pool tasks

    def describe(self) -> str:
        return f"process ({self.workers} worker{'s' if self.workers != 1 else ''} x {self.threads} thread" \
               f"{'s' if self.threads != 1 else ''})"

    def prestart(self) -> None:
        """Start the forkserver now, without waiting for it: it imports the worker modules
        while this process goes on (imports, loading the survey, planning), so that the
        workers fork from a ready server when the first task comes. Nothing for ``spawn``
        (the pool starts with its first task). Idempotent; :meth:`close` is still needed."""
        if self.start_method == "forkserver":
            self._ensure_server()

    def _ensure_server(self):
        import multiprocessing as mp

        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            # one server process imports the worker modules once; each worker is a fork of
            # it. It never runs CAMB, and starts with one thread everywhere (no OpenBLAS
            # thread pool, OpenMP not initialised): nothing but a single thread is forked
            ctx.set_forkserver_preload(list(_preload_modules()))
            with _thread_env(1), _server_path(), _sigint_ignored():
                from multiprocessing import forkserver

                forkserver.ensure_running()
        return ctx

    def _start(self):
        import concurrent.futures as cf

        if self._pool is None:
            ctx = self._ensure_server()
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                                initializer=configure_worker, initargs=(self.threads, True))
        return self._pool

    def _submit(self, fn: Callable[..., Any], *args: Any):
        """``pool.submit(fn, *args)`` with SIGINT, SIGTERM and SIGHUP held back until it
        returns (:func:`fishcast.signals.held`): the pool may start a worker in it, and an
        interrupt between the forkserver's fork and the pool's record of the new worker
        (``concurrent.futures`` waits for the worker's pid, then files it and starts its
        manager thread) left a worker the pool did not know: no shutdown asked it to exit,
        and it waited for a task for ever, holding the forkserver, the resource tracker and
        the run's stdout and stderr (a caller reading them through a pipe hung). Held, the
        interrupt is raised here once the worker is filed, and :meth:`close` stops it."""
        from ..signals import held

        with held():
            return self._start().submit(fn, *args)

    def _restart(self) -> None:
        """Let a broken pool go (its manager thread ends and joins its workers meanwhile);
        the next task starts a new one. :meth:`close` still waits for it."""
        if self._pool is not None:
            # shutdown(wait=False) forgets the pool's manager thread (a later shutdown(wait=True)
            # would not wait): kept here, for close() to join
            manager = getattr(self._pool, "_executor_manager_thread", None)
            self._pool.shutdown(wait=False, cancel_futures=True)
            if manager is not None:
                self._retired.append(manager)
            self._pool = None

    # --- packing ---------------------------------------------------------------------
    def _cost(self) -> float | None:
        """Thread-seconds of one task (median of the recent pool tasks), or None."""
        if not self._costs:
            return None
        c = sorted(self._costs[-self._COST_WINDOW:])
        return c[len(c) // 2]

    def tail_threads(self, left: int) -> int:
        """Threads for each of the last ``left`` tasks: budget // left when fewer tasks are
        left than the budget holds at ``threads`` each, else ``threads``."""
        if left < 1 or left * self.threads >= self.budget:
            return self.threads
        return max(self.threads, self.budget // left)

    def _worth_waiting(self, want: int, free: int, running: Sequence[tuple[float, int]], now: float) -> bool:
        """Whether a task finishes sooner waiting until ``want`` threads are free than started
        now with ``threads``: ``running`` lists (start, threads) of the tasks in flight, whose
        ends are estimated from the cost of those finished so far (none yet: do not wait)."""
        cost = self._cost()
        if cost is None:
            return False
        wait = None
        for end, t in sorted((start + cost / t, t) for start, t in running):
            free += t
            if free >= want:
                wait = max(0.0, end - now)
                break
        if wait is None:
            return False
        return wait + cost / want < cost / self.threads

    def _next_threads(self, left: int, used: int, running: Sequence[tuple[float, int]]) -> int | None:
        """Threads to start the next task with, or None: wait for a task to finish."""
        free = self.budget - used
        want = self.tail_threads(left)
        if want <= free:
            return want
        if want > self.threads and self.threads <= free and not self._worth_waiting(want, free, running, time.monotonic()):
            return self.threads
        return None

    def run(self, tasks: Sequence[Task], on_done: OnDone | None = None, local: Collection[int] = ()) -> list[Outcome]:
        import concurrent.futures as cf
        from concurrent.futures.process import BrokenProcessPool

        from ..signals import held

        died = "a worker process died (killed, out of memory, or crashed)"
        local = {int(i) for i in local}
        results: list[Outcome | None] = [None] * len(tasks)
        attempts = [0] * len(tasks)
        pending: dict[cf.Future, tuple[int, int, float]] = {}  # future -> (task, threads, start)
        # tasks run here first: they start at once, while the workers start
        todo = sorted(range(len(tasks)), key=lambda i: i not in local)
        isolated = False  # after a crash: one task at a time, so that a crash has a culprit

        def finish(i: int, oc: Outcome) -> None:
            results[i] = oc
            if on_done:
                on_done(oc)

        def retry_or_fail(i: int, error: str) -> None:
            if attempts[i] <= self.retries:
                todo.append(i)
            else:
                finish(i, Outcome(tasks[i].name, False, None, error, attempts[i], 1))

        def submit(i: int, t: int) -> None:
            attempts[i] += 1
            if i in local:
                fut = _start_here(_run_here, tasks[i].func, tasks[i].args, t)
            else:
                # a worker started now inherits the usual setting; an interrupt (Ctrl-C,
                # SIGTERM) is held back while the pool starts one (see _submit)
                with _thread_env(self.threads):
                    fut = self._submit(_call_with_threads, tasks[i].func, tasks[i].args, t)
            pending[fut] = (i, t, time.monotonic())

        def startable(i: int) -> bool:
            """A worker process (or, for a local task, this process's one slot) is free."""
            here = [j for j, _, _ in pending.values() if j in local]
            if i in local:
                return not here
            return len(pending) - len(here) < self.workers

        def step() -> None:
            """Start what may start, wait (at most ``_POLL`` s) for a task to finish, take its result."""
            nonlocal isolated
            while todo and not (isolated and pending):
                if not startable(todo[0]):
                    # a local task waits for this process's slot, a pool task for a worker
                    nxt = next((k for k, i in enumerate(todo) if startable(i)), None)
                    if nxt is None:
                        break
                    todo.insert(0, todo.pop(nxt))
                t = self._next_threads(len(todo), sum(t for _, t, _ in pending.values()),
                                       [(st, t) for _, t, st in pending.values()])
                if t is None:
                    break
                submit(todo.pop(0), t)
            done, _ = cf.wait(list(pending), timeout=self._POLL, return_when=cf.FIRST_COMPLETED)
            broken = []
            for fut in done:
                i, t, _ = pending.pop(fut)
                try:
                    value = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
                except Exception as exc:  # raised in the worker, not a FishcastError
                    retry_or_fail(i, _describe(exc))
                else:
                    if isinstance(value, _Ran) and not value.here:
                        self._costs.append((value.finished - value.started) * value.threads)
                    finish(i, _outcome(tasks[i], value, attempts[i]))
            if broken:
                # every unfinished pool future of a broken pool fails with it: start a new pool
                broken.extend(pending.pop(f)[0] for f in [f for f, (j, _, _) in pending.items() if j not in local])
                self._restart()
                if isolated:
                    for i in broken:
                        retry_or_fail(i, died)
                else:
                    for i in broken:  # no culprit known: run them again one at a time
                        attempts[i] -= 1
                    todo[:0] = sorted(broken)
                    isolated = True

        # Ctrl-C and SIGTERM are held back during each step and raised between steps
        # (fishcast.signals.held): raised inside the pool's calls -- the start of a worker,
        # or concurrent.futures.wait, which holds the locks of the futures and of its waiter
        # while it sets up and takes down -- an interrupt left a worker the pool did not
        # know, or a lock held for ever that the pool's manager thread needs to fail the
        # futures of a broken pool (after SIGTERM killed the workers): the shutdown that
        # follows waited for that thread for ever. Between steps this thread holds none.
        while todo or pending:
            with held():
                step()
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Shut the pool down: every worker has ended when this returns, those of a pool let
        go after a crash (:meth:`_restart`) included -- one may still be finishing a cache
        entry it was writing when SIGTERM came, and what the cache holds is reported only
        after it."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        retired, self._retired = self._retired, []
        for manager in retired:  # it joins the workers of its pool, then ends
            manager.join()


class DaskExecutor(Executor):
    """``dask.distributed``: ``address`` of a running scheduler, else a cluster started here:
    ``cluster="local"`` (a ``LocalCluster`` of ``workers`` processes with one thread each),
    ``"slurm"`` or ``"pbs"`` (dask-jobqueue; ``jobs`` batch jobs, ``cluster_options`` passed to
    ``SLURMCluster``/``PBSCluster``, e.g. ``{"cores": 8, "memory": "16GB", "queue": "normal"}``).
    """

    backend = "dask"

    def __init__(self, address: str | None = None, *, cluster: str = "local", workers: int | None = None,
                 jobs: int | None = None, retries: int = 1, cluster_options: Mapping[str, Any] | None = None):
        super().__init__(retries)
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise InputError("the Dask backend needs dask.distributed: pip install 'fishcast[dask]'") from exc
        if cluster not in CLUSTERS:
            raise InputError(f"cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
        self._cluster = None
        opts = dict(cluster_options or {})
        if address:
            self.client = Client(address)
            self.where = address
        elif cluster == "local":
            from dask.distributed import LocalCluster

            n = workers if workers is not None else usable_cores()
            if n < 1:
                raise InputError(f"the number of workers must be >= 1, got {n}")
            opts.setdefault("dashboard_address", None)
            with _thread_env(WORKER_THREADS):
                self._cluster = LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, **opts)
            self.client = Client(self._cluster)
            self.where = "LocalCluster"
        else:
            self._cluster = jobqueue_cluster(cluster, opts)
            self._cluster.scale(jobs=int(jobs or 1))
            self.client = Client(self._cluster)
            self.where = f"{type(self._cluster).__name__} ({jobs or 1} jobs)"
        self.workers = workers or len(self.client.scheduler_info().get("workers", {})) or 1

    def describe(self) -> str:
        return f"dask ({self.where})"

    def share(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        keys = list(values)
        futures = self.client.scatter([values[k] for k in keys], hash=True)
        return dict(zip(keys, futures))

    def run(self, tasks: Sequence[Task], on_done: OnDone | None = None, local: Collection[int] = ()) -> list[Outcome]:
        from dask.distributed import as_completed

        index = {}
        futures = []
        for i, t in enumerate(tasks):
            fut = self.client.submit(_call, t.func, t.args, retries=self.retries, pure=False)
            index[fut.key] = i
            futures.append(fut)
        results: list[Outcome | None] = [None] * len(tasks)
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                value = fut.result()
                oc = _outcome(tasks[i], value, 1)
            except Exception as exc:  # after Dask's retries (or a worker killed too often)
                oc = Outcome(tasks[i].name, False, None, _describe(exc), self.retries + 1, 1)
            results[i] = oc
            fut.release()
            if on_done:
                on_done(oc)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def jobqueue_cluster(kind: str, options: Mapping[str, Any] | None = None):
    """A dask-jobqueue ``SLURMCluster`` (``kind="slurm"``) or ``PBSCluster`` (``"pbs"``), no
    job submitted yet. ``options`` (cores, memory, queue, account, walltime, ...) override the
    dask-jobqueue configuration (``~/.config/dask/jobqueue.yaml``). Each job runs one worker
    process per core with one thread (``processes = cores`` unless given), so that CAMB runs
    are spread over processes."""
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise InputError(f"--cluster {kind} needs dask-jobqueue: pip install 'fishcast[dask]'") from exc
    classes = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
    if kind not in classes:
        raise InputError(f"a batch-system cluster is one of {', '.join(classes)}, got {kind!r}")
    opts = dict(options or {})
    if "cores" in opts:
        opts.setdefault("processes", int(opts["cores"]))
    env = list(opts.pop("job_script_prologue", []))
    env += [f"export {k}={WORKER_THREADS}" for k in _THREAD_ENV]
    try:
        return classes[kind](job_script_prologue=env, **opts)
    except (ValueError, TypeError) as exc:  # cores/memory neither given nor configured, a bad key
        raise InputError(f"cannot start a {kind} cluster: {exc}") from exc


def make_executor(workers: int | None = None, *, backend: str | None = None, address: str | None = None,
                  cluster: str | None = None, jobs: int | None = None, retries: int = 1,
                  cluster_options: Mapping[str, Any] | None = None) -> Executor:
    """Pick the backend from the options a user gives on the command line.

    ``address`` -> a Dask client of that scheduler; ``cluster`` ("local", "slurm", "pbs") ->
    Dask on a cluster started here (``jobs`` batch jobs); otherwise ``backend`` ("serial",
    "process" (the default) or "dask" for a LocalCluster) with ``workers`` processes
    (default: one per usable core, :func:`usable_cores`).
    """
    if address:
        return DaskExecutor(address, retries=retries)
    if cluster:
        return DaskExecutor(cluster=cluster, workers=workers, jobs=jobs, retries=retries, cluster_options=cluster_options)
    backend = backend or "process"
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "serial":
        return SerialExecutor(retries=retries)
    if backend == "dask":
        return DaskExecutor(cluster="local", workers=workers, retries=retries, cluster_options=cluster_options)
    return ProcessExecutor(workers, retries=retries)


@dataclass
class EvaluationStats:
    """What the cosmology evaluations cost: points asked for, cache hits, points computed,
    and Boltzmann (CAMB transfer) runs made, summed over every worker process."""

    points: int = 0
    cache_hits: int = 0
    computed: int = 0
    boltzmann_calls: int = 0
    tasks: int = 0
    failures: list[str] = field(default_factory=list)
    #: of ``boltzmann_calls``, those made in this process (``local`` tasks: already counted
    #: by :func:`fishcast.cosmology.boltzmann_calls` here) and the tasks run here
    boltzmann_calls_here: int = 0
    tasks_here: int = 0


def evaluation_task(points: Sequence[Mapping[str, float]], settings, cache_root: str | None):
    """Compute ``points`` (one transfer-function group) in a worker; each result is stored in
    the cache at ``cache_root`` as soon as it is finished. Points already in the cache
    (filled meanwhile by another run) are read, not computed.

    Returns ``(results, computed, boltzmann_calls)``. A failure (a FishcastError) is raised
    with the Boltzmann runs made until then as its ``boltzmann_calls`` attribute (carried
    to :attr:`Outcome.boltzmann_calls`): a run that failed in CAMB was made all the same."""
    from .. import cosmology as _cosmo
    from .cache import cached_evaluator, Cache

    cache = Cache(cache_root) if cache_root else None
    before = _cosmo.boltzmann_calls()
    try:
        results = cached_evaluator(cache)(list(points), settings)
    except FishcastError as exc:
        exc.boltzmann_calls = _cosmo.boltzmann_calls() - before
        raise
    calls = _cosmo.boltzmann_calls() - before
    computed = len(points) - (cache.stats.hits if cache is not None else 0)
    return results, computed, calls


def evaluate_points(executor: Executor, points: Sequence[Mapping[str, float]], settings, cache=None,
                    on_point: Callable[[], None] | None = None,
                    stats: EvaluationStats | None = None) -> list:
    """Evaluate ``points`` (all with ``settings``) through ``cache`` (a
    :class:`fishcast.pipeline.cache.Cache` or None) and ``executor``; see :func:`_evaluate`."""
    return _evaluate(executor, [(p, settings) for p in points], cache, on_point, stats)


def _evaluate(executor: Executor, items: Sequence[tuple[Mapping[str, float], Any]], cache=None,
              on_point: Callable[[], None] | None = None, stats: EvaluationStats | None = None) -> list:
    """Evaluate ``(point, settings)`` items: cache hits are read here; misses are grouped by
    settings and transfer function (points that differ only in n_s, A_s, sigma8 share one
    Boltzmann run) and each group is one task, which stores its results in the cache as it
    finishes them (so a run that dies keeps them). With a process pool, a group whose
    transfer object the active :func:`fishcast.cosmology.transfer_store` holds or keeps is a
    ``local`` task (run in this process; its results are put in the cache here, as soon as
    it finishes).

    Returns, per item, a CosmologyResult or -- when its group failed -- the failed
    :class:`Outcome` (its ``error`` names the point). ``stats`` (if given) is updated;
    ``on_point()`` is called once per item finished.
    """
    from .. import cosmology as _cosmo

    stats = stats if stats is not None else EvaluationStats()
    out: list = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (p, settings) in enumerate(items):
        hit = cache.get(_cosmo.point_key(p, settings)) if cache is not None else None
        if hit is not None:
            out[i] = hit
            stats.cache_hits += 1
            if on_point:
                on_point()
        else:
            groups.setdefault((settings, _cosmo.transfer_key(_cosmo.full_params(p))), []).append(i)
    stats.points += len(items)
    from .cache import Cache

    on_disk = cache if isinstance(cache, Cache) else None  # (a MemoryCache has no folder to share)
    root = str(on_disk.root) if on_disk is not None else None
    members = list(groups.values())
    # groups whose CAMB transfer object this process holds, or keeps once computed (the
    # fiducial's, see fishcast.cosmology.transfer_store), are computed here by a pool
    store = _cosmo.active_store()
    here = ({j for j, idx in enumerate(members) if store.wants(_cosmo.store_key(*items[idx[0]]))}
            if store is not None and executor.backend == "process" else set())
    tasks = [Task(f"cosmology task {j + 1} at {_cosmo.describe_point(_cosmo.full_params(items[idx[0]][0]))}", evaluation_task,
                  ([items[i][0] for i in idx], items[idx[0]][1], None if j in here else root))
             for j, idx in enumerate(members)]
    stats.tasks += len(tasks)
    stats.tasks_here += len(here)
    which = {t.name: j for j, t in enumerate(tasks)}

    def keep(j: int, results: Sequence) -> None:
        """Keep a copy of a task's results in ``cache`` (a task run here, or workers on other
        machines that may not share this disk)."""
        if on_disk is None:
            return
        for i, r in zip(members[j], results):
            key = _cosmo.point_key(items[i][0], items[i][1])
            if not on_disk.path(key).exists():
                on_disk.put(key, r, items[i][1])

    def tick(oc: Outcome) -> None:
        j = which.get(oc.name)
        if j is None:
            return
        if oc.ok and j in here:
            keep(j, oc.value[0])  # at once: a run interrupted later keeps it
        if on_point:
            for _ in range(len(members[j])):
                on_point()

    outcomes = executor.run(tasks, on_done=tick, local=sorted(here))
    for j, (idx, oc) in enumerate(zip(members, outcomes)):
        if oc.ok:
            results, computed, calls = oc.value
            stats.computed += computed
            stats.boltzmann_calls += calls
            if j in here:
                stats.boltzmann_calls_here += calls
            for i, r in zip(idx, results):
                out[i] = r
            keep(j, results)
        else:
            stats.failures.append(oc.error)
            stats.boltzmann_calls += oc.boltzmann_calls
            if j in here:
                stats.boltzmann_calls_here += oc.boltzmann_calls
            for i in idx:
                out[i] = oc
    return out


def executor_evaluator_factory(executor: Executor, stats: EvaluationStats | None = None):
    """An ``evaluator_factory(cache, on_point)`` for :func:`fishcast.pipeline.forecast.run_forecast`
    that spreads the evaluations over ``executor`` (``fishcast run --workers N``).
    A failed point raises :class:`~fishcast.errors.ComputationError` naming it.

    With a process pool, the points whose CAMB transfer object the forecast's
    :func:`fishcast.cosmology.transfer_store` holds or keeps (the fiducial's) are computed in
    this process, alongside the workers (:func:`_evaluate`): the fiducial while the workers
    start, the validity check's n_s / sigma8 points on its held transfer functions. Their
    Boltzmann runs are counted here once (not again as the workers' runs)."""
    from ..errors import ComputationError

    from .. import cosmology as _cosmo

    def factory(cache, on_point):
        def evaluate(points, settings):
            st = EvaluationStats()
            res = evaluate_points(executor, points, settings, cache, on_point, st)
            if executor.backend != "serial":  # runs in other processes: count them here too
                _cosmo.count_worker_calls(st.boltzmann_calls - st.boltzmann_calls_here)
            if stats is not None:
                for name in ("points", "cache_hits", "computed", "boltzmann_calls", "tasks", "boltzmann_calls_here",
                             "tasks_here"):
                    setattr(stats, name, getattr(stats, name) + getattr(st, name))
                stats.failures.extend(st.failures)
            bad = [r for r in res if isinstance(r, Outcome)]
            if bad:
                raise ComputationError(bad[0].error)
            return res

        return evaluate

    return factory
