"""How a fishcast command ends when it does not succeed: the message and the exit status.

Exit statuses (see :mod:`fishcast.errors`): 2 bad input (also unreadable or unwritable files),
3 numerically untrustworthy, 4 a computation failed, 1 any other fishcast error, 130
interrupted (SIGINT / Ctrl-C), 143 terminated (SIGTERM, e.g. by a batch scheduler).

The mapping is applied once, by the click group (:mod:`fishcast.cli.group`), to every
command, and by the entry point (:func:`fishcast.cli.main.main`) to start-up. A command that
computes (``run``, ``batch``) tells its :class:`Tracker` (carried on the click context; see
:func:`fishcast.cli.group.track`) where its cache and its output are; when it is
interrupted, or a computation fails, the message ends with one line saying what was kept
(cosmology evaluations in the cache) and what was not written.

Only the standard library is imported here, so that the entry point can set up the signal
handling before anything slow (click, numpy) is imported.
"""

from __future__ import annotations

import pathlib
import signal

#: exit status of bad input (an OSError on a file given by the user, a bad option)
EXIT_BAD_INPUT = 2

#: exit status of an interrupted command (128 + SIGINT, the shell's convention)
EXIT_INTERRUPTED = 130

#: exit status of a command stopped by SIGTERM (128 + 15), e.g. a batch job at its walltime
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM (see :func:`terminate_as_interrupt`), so that a
    job killed by its scheduler cleans up and reports like Ctrl-C, with exit status 143."""

    exit_code = EXIT_TERMINATED


def _on_term(signum, frame):
    raise Terminated()


def terminate_as_interrupt():
    """Make SIGTERM raise :class:`Terminated` in this process; returns the previous handler
    (for :func:`restore_terminate`), or None when not in the main thread (where Python lets
    no handler be set)."""
    try:
        return signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread (e.g. a test runner's worker thread)
        return None


def restore_terminate(previous) -> None:
    """Put back the SIGTERM handler that :func:`terminate_as_interrupt` replaced."""
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except ValueError:
            pass


class Tracker:
    """What the running command computes into: its cache, its output, and how many
    evaluations the cache held before it started (replaces a module-global; one per
    invocation, carried on the click context)."""

    def __init__(self) -> None:
        self.state: dict = {}

    def track(self, cache=None, output: str | None = None, kind: str = "run") -> None:
        """Record the cache (a :class:`fishcast.pipeline.cache.Cache` or None) and the output."""
        s = self.state
        s.clear()
        s.update(kind=kind, cache=cache, output=output,
                 before=len(cache.entries()) if cache is not None else 0,
                 output_existed=bool(output) and pathlib.Path(output).exists())
        if kind == "batch" and output:
            out = pathlib.Path(output)
            s["designs_before"] = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} if out.is_dir() else {}

    def __bool__(self) -> bool:
        return bool(self.state)

    def kept_summary(self) -> str:
        """One line: the cosmology evaluations kept in the cache, and the output written or not."""
        try:
            return self._kept_summary()
        except OSError as exc:  # the cache or output folder went away meanwhile
            return f"no output written (cannot look at the cache: {exc.strerror or exc})"

    def _kept_summary(self) -> str:
        s = self.state
        if not s:
            return "no output written"
        cache = s.get("cache")
        parts = []
        if cache is None:
            parts.append("nothing kept (--no-cache)")
        else:
            now = len(cache.entries())
            new = max(now - s.get("before", 0), 0)
            parts.append(f"{new} cosmology evaluation{'s' if new != 1 else ''} of this run kept in the cache at "
                         f"{cache.root} ({now} in all; a rerun starts from them)")
        output = s.get("output")
        if s.get("kind") == "batch" and output:
            out = pathlib.Path(output)
            before = s.get("designs_before", {})
            written = [p for p in out.glob("*.h5") if p.name != "summary.h5"
                       and before.get(p.name) != p.stat().st_mtime_ns] if out.is_dir() else []
            parts.append(f"{len(written)} complete design file{'s' if len(written) != 1 else ''} written to {out}, "
                         "no summary written")
        elif output:
            parts.append(f"no output written ({output} left as it was)" if s.get("output_existed")
                         else "no output written")
        else:
            parts.append("no output written")
        return "; ".join(parts)


def interrupt_message(exc: BaseException, tracker: Tracker | None = None) -> tuple[str, int]:
    """The one line and the exit status of a KeyboardInterrupt (SIGINT) or :class:`Terminated`."""
    word = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    summary = tracker.kept_summary() if tracker is not None else "no output written"
    return f"{word}: {summary}", getattr(exc, "exit_code", EXIT_INTERRUPTED)


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM) that caused ``exc``, if any.

    A signal that arrives while ctypes converts the arguments of a native call (CAMB's
    Fortran library) is turned by ctypes into ``ArgumentError("argument 2: KeyboardInterrupt:
    ")``, with no exception chained; the library then reports it as a failed computation.
    Such an error is an interruption, not a CAMB failure."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return e
        if type(e).__name__ == "ArgumentError" and type(e).__module__ == "ctypes":
            text = str(e)
            if f": {Terminated.__name__}:" in text:
                return Terminated()
            if ": KeyboardInterrupt:" in text:
                return KeyboardInterrupt()
        e = e.__cause__ or e.__context__
    return None


def error_message(exc: BaseException, tracker: Tracker | None = None) -> tuple[str, int] | None:
    """``(message, exit status)`` of an exception a command may raise, None for one that is
    not mapped (a bug: let it show its traceback).

    FishcastError -> ``error: its message`` and its ``exit_code`` (a failed computation adds
    what was kept); OSError (a file that cannot be read or written) -> ``error: FILE: reason``,
    exit 2; KeyboardInterrupt -> one line of what was kept, exit 130 (143 for SIGTERM)."""
    from fishcast.errors import FishcastError

    interrupt = interrupt_behind(exc)
    if interrupt is not None:
        return interrupt_message(interrupt, tracker)
    if isinstance(exc, FishcastError):
        message = str(exc)
        if exc.exit_code == 4 and tracker:
            message += f"\nkept: {tracker.kept_summary()}"
        return f"error: {message}", exc.exit_code
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return f"error: {where}{exc.strerror or exc}", EXIT_BAD_INPUT
    return None
