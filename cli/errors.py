"""Turn fishcast's exceptions into a message on stderr and an exit status (no traceback).

Exit statuses (see :mod:`fishcast.errors`): 2 bad input (also unreadable or unwritable files),
3 numerically untrustworthy, 4 a computation failed, 1 any other fishcast error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import click

from fishcast.errors import FishcastError

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int) -> "NoReturn":  # noqa: F821
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Decorator for click command callbacks: FishcastError -> its message and
    ``err.exit_code``; OSError (a file that cannot be read or written) -> exit 2.

    Put it directly above the function (below the click decorators)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FishcastError as err:
            fail(str(err), err.exit_code)
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            fail(f"{where}{err.strerror or err}", 2)

    return wrapper  # type: ignore[return-value]
