"""Turn fishcast's exceptions into a message on stderr and an exit status (no traceback).

Exit statuses (see :mod:`fishcast.errors`): 2 bad input (also unreadable or unwritable files),
3 numerically untrustworthy, 4 a computation failed, 1 any other fishcast error, 130
interrupted (SIGINT / Ctrl-C), 143 terminated (SIGTERM, e.g. by a batch scheduler).

A command that computes (``run``, ``batch``) tells :func:`track` where its cache and its
output are; when it is interrupted, or a computation fails, the message ends with one line
saying what was kept (cosmology evaluations in the cache) and what was not written.
"""

from __future__ import annotations

import functools
import pathlib
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click

from fishcast.errors import FishcastError

F = TypeVar("F", bound=Callable)

#: exit status of an interrupted command (128 + SIGINT, the shell's convention)
EXIT_INTERRUPTED = 130

#: exit status of a command stopped by SIGTERM (128 + 15), e.g. a batch job at its walltime
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM (see :func:`terminate_as_interrupt`), so that a
    job killed by its scheduler cleans up and reports like Ctrl-C, with exit status 143."""

    exit_code = EXIT_TERMINATED


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise :class:`Terminated` in this (main) process."""
    import signal

    def on_term(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, on_term)


#: what the running command computes into (set by :func:`track`, reset per command)
_TRACK: dict = {}


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def track(cache=None, output: str | None = None, kind: str = "run") -> None:
    """Record the cache (a :class:`fishcast.pipeline.cache.Cache` or None) and the output of the
    running command, and how many evaluations the cache held before it started, so that an
    interruption or a failed computation can say what was kept."""
    _TRACK.clear()
    _TRACK.update(kind=kind, cache=cache, output=output,
                  before=len(cache.entries()) if cache is not None else 0,
                  output_existed=bool(output) and pathlib.Path(output).exists())
    if kind == "batch" and output:
        out = pathlib.Path(output)
        _TRACK["designs_before"] = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} if out.is_dir() else {}


def kept_summary() -> str:
    """One line: the cosmology evaluations kept in the cache, and the output written or not."""
    try:
        return _kept_summary()
    except OSError as exc:  # the cache or output folder went away meanwhile
        return f"no output written (cannot look at the cache: {exc.strerror or exc})"


def _kept_summary() -> str:
    if not _TRACK:
        return "no output written"
    cache = _TRACK.get("cache")
    parts = []
    if cache is None:
        parts.append("nothing kept (--no-cache)")
    else:
        now = len(cache.entries())
        new = max(now - _TRACK.get("before", 0), 0)
        parts.append(f"{new} cosmology evaluation{'s' if new != 1 else ''} of this run kept in the cache at "
                     f"{cache.root} ({now} in all; a rerun starts from them)")
    output = _TRACK.get("output")
    if _TRACK.get("kind") == "batch" and output:
        out = pathlib.Path(output)
        before = _TRACK.get("designs_before", {})
        written = [p for p in out.glob("*.h5") if p.name != "summary.h5"
                   and before.get(p.name) != p.stat().st_mtime_ns] if out.is_dir() else []
        parts.append(f"{len(written)} complete design file{'s' if len(written) != 1 else ''} written to {out}, "
                     "no summary written")
    elif output:
        parts.append(f"no output written ({output} left as it was)" if _TRACK.get("output_existed")
                     else "no output written")
    else:
        parts.append("no output written")
    return "; ".join(parts)


def handle_errors(func: F) -> F:
    """Decorator for click command callbacks: FishcastError -> its message and
    ``err.exit_code``; OSError (a file that cannot be read or written) -> exit 2;
    KeyboardInterrupt (Ctrl-C, SIGINT) -> one line of what was kept, exit 130.

    Put it directly above the function (below the click decorators)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        _TRACK.clear()
        try:
            return func(*args, **kwargs)
        except FishcastError as err:
            message = str(err)
            if err.exit_code == 4 and _TRACK:
                message += f"\nkept: {kept_summary()}"
            fail(message, err.exit_code)
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            fail(f"{where}{err.strerror or err}", 2)
        except KeyboardInterrupt as exc:
            word = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            click.echo(f"{word}: {kept_summary()}", err=True)
            sys.exit(getattr(exc, "exit_code", EXIT_INTERRUPTED))
        finally:
            _TRACK.clear()

    return wrapper  # type: ignore[return-value]
