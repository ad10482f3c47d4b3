"""Exceptions of fishcast.

The library raises these; the CLI turns them into a message and an exit status. No module of
the library prints or calls ``sys.exit``.

Exit statuses used by the CLI:

* 2 -- bad input (:class:`InputError` and subclasses): survey YAML, options, unreadable files.
* 3 -- the forecast is numerically untrustworthy (:class:`UnstableForecastError`,
  :class:`DegenerateFisherError`).
* 4 -- a computation failed (:class:`ComputationError`, e.g. CAMB failed at a point).
"""

from __future__ import annotations

import contextlib


class FishcastError(Exception):
    """Base class of every error fishcast raises on purpose."""

    exit_code = 1


class InputError(FishcastError):
    """Bad input from the user: a survey file, an option, a file to read.

    ``key``: the key path in the survey YAML the problem is about, relative to where the
    error is caught (e.g. ``("nz", "file")`` inside a probe's section), when the code that
    raised it knows it (see :func:`at_key`); the survey loader and the CLI turn it into
    ``file:line: key``. Empty when unknown.
    """

    exit_code = 2
    key: tuple = ()


@contextlib.contextmanager
def at_key(*prefix):
    """Inside this block, an :class:`InputError` is about the YAML key ``prefix`` (or a key
    below it): the prefix is put in front of the error's ``key`` and the error raised on. A
    probe's build function wraps the reading of a table its YAML names with the key that
    names it (``with at_key("nz", "file"): ...``); the loader adds the probe's section."""
    try:
        yield
    except InputError as exc:
        exc.key = tuple(prefix) + tuple(exc.key)
        raise


class SurveyError(InputError):
    """One or more problems in a survey YAML file.

    ``problems`` is a list of ``(line, key, message)``; ``line`` is 1-based or ``None``.
    """

    def __init__(self, path: str, problems: list[tuple[int | None, str, str]]):
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(self.format())

    #: at most this many problems are printed (a 100,000-item list of bad values is one mistake)
    MAX_SHOWN = 50

    def format(self) -> str:
        lines = []
        for line, key, msg in self.problems[:self.MAX_SHOWN]:
            where = f"{self.path}:{line}" if line is not None else self.path
            key = printable(key)  # a key with a newline or a control character stays on its line
            keypart = f" {key}:" if key else ""
            lines.append(f"{where}:{keypart} {msg}")
        if len(self.problems) > self.MAX_SHOWN:
            lines.append(f"{self.path}: ... and {len(self.problems) - self.MAX_SHOWN} more problems")
        return "\n".join(lines)


def printable(text: str) -> str:
    """``text`` with non-printable characters (newlines, controls) escaped as in Python."""
    text = str(text)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class FileFormatError(InputError):
    """A file given to fishcast (HDF5, text matrix, table) is not what it must be."""


def relocated(exc: InputError, message: str) -> InputError:
    """An error of the kind of ``exc`` (:class:`FileFormatError` or :class:`InputError`) with
    ``message`` (``exc``'s message with its location in front)."""
    return FileFormatError(message) if isinstance(exc, FileFormatError) else InputError(message)


class ComputationError(FishcastError):
    """A computation failed (e.g. CAMB raised, or returned NaN/inf)."""

    exit_code = 4


class NumericalError(FishcastError):
    """A numerical result cannot be trusted."""

    exit_code = 3


class DegenerateFisherError(NumericalError):
    """A Fisher matrix is not positive definite (singular or indefinite).

    ``directions`` lists the weak eigen-directions as ``(eigenvalue, {name: weight})``
    of the correlation-form matrix, dominant parameters first.
    """

    def __init__(self, message: str, directions: list[tuple[float, dict[str, float]]] | None = None):
        self.directions = directions or []
        super().__init__(message)


class UnstableForecastError(NumericalError):
    """The derivative sweep or the conditioning checks failed for some parameter."""
