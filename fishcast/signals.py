"""Signals held back while a step that must not be cut in two runs.

Such steps in fishcast:

* the start of a worker process of the local pool (:mod:`fishcast.pipeline.execute`): once
  the forkserver has forked a worker, the pool must record it before an interrupt may stop
  this process, or the pool never asks that worker to exit and it waits for a task for ever
  (holding the run's stdout and stderr, the forkserver and the resource tracker);
* the main process's wait for the pool's tasks (``concurrent.futures.wait`` holds the locks
  of the futures and of its waiter, in blocks that an exception raised by a signal handler
  can leave with a lock held; the pool's manager thread then waits for it for ever);
* the life of a temporary file of the atomic writer (:mod:`fishcast.io.atomic`) in a process
  that a signal would kill outright (a pool worker on SIGTERM, any process on SIGHUP): the
  file is renamed into place, or removed, before the signal takes effect.

:func:`held` replaces the handlers of the given signals by one that only notes the signal,
and when the block ends puts the handlers back and delivers what was noted as it would have
been delivered: a Python handler is called (Ctrl-C raises KeyboardInterrupt there), a
default action is taken (``signal.raise_signal``: SIGTERM ends the process), an ignored
signal stays ignored. Handlers can only be set in the main thread: elsewhere, and on
platforms without a signal, nothing is held.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator

#: signals that end the process (a Python handler raises, or the default action kills)
INTERRUPTS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def held(signals: Iterable[int] = INTERRUPTS, only_default: bool = False) -> Iterator[None]:
    """Hold ``signals`` back during the block (see the module docstring).

    ``only_default``: hold only those whose disposition is the default action (which would
    end the process without running any cleanup); a signal with a Python handler (which
    raises an exception, so that ``finally`` blocks clean up) or ignored is left as it is.

    The signal arrives in the block: it is delivered when the block ends, after whatever the
    block does on its way out (an exception of the block is then the ``__context__`` of the
    handler's KeyboardInterrupt). Blocks nest: an inner block finds the outer one's note-taker
    and leaves it in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum, frame):  # noqa: ARG001 -- a signal handler's signature
        if signum not in noted:
            noted.append(signum)

    note.holds = True

    previous: dict[int, object] = {}
    try:
        for sig in signals:
            old = signal.getsignal(sig)
            if old is None or getattr(old, "holds", False):
                continue  # set outside Python, or an outer block already holds it
            if only_default and old is not signal.SIG_DFL:
                continue
            signal.signal(sig, note)
            previous[sig] = old
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        # a default action (the end of the process) first, then a Python handler (it raises)
        for sig in sorted(noted, key=lambda s: previous[s] is not signal.SIG_DFL):
            _deliver(sig, previous[sig])


def _deliver(sig: int, handler) -> None:
    """Deliver a held signal to the handler it would have reached."""
    if handler is signal.SIG_IGN:
        return
    if handler is signal.SIG_DFL:
        signal.raise_signal(sig)  # the default action: SIGTERM / SIGHUP end the process here
        return
    handler(sig, None)  # e.g. Python's SIGINT handler raises KeyboardInterrupt
