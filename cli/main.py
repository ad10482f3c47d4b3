"""``fishcast`` command-line entry point.

Commands live in sibling modules, each exporting ``COMMANDS`` (a list of click commands):
``run`` (run, validate, schema), ``ops`` (show, combine, prior, fix, marginalize, derive,
compare, plot, export, import), ``stability``, ``batch``, ``cache``. They import the library
inside the commands, so that start-up imports only click.

Start-up is interruptible: this module imports only the standard library; :func:`main` sets
up SIGTERM first, then imports click and the commands (the group ``cli`` is built on first
use, also by ``from fishcast.cli.main import cli``), and a Ctrl-C (or SIGTERM) meanwhile gives
the one-line interrupt message and exit 130 (143), never a traceback.
"""

from __future__ import annotations

import contextlib
import sys

_COMMAND_MODULES = ("run", "ops", "stability", "batch", "cache", "simfisher")

#: True in the ``fishcast`` process itself (:func:`main`), False in a program that calls the
#: commands (click's CliRunner in the tests): the garbage-collector settings below are the
#: command's, never imposed on a caller's process
_ENTRY_POINT = False


@contextlib.contextmanager
def library_imports():
    """Around a command's imports of the library (numpy, scipy, CAMB, h5py, pydantic and
    fishcast: ~10^5 objects, no garbage): the garbage collector is off meanwhile (its ~200
    collections cost ~70 ms of the start-up of ``fishcast run``), and what the imports made
    is frozen afterwards (:func:`fishcast.collector.freeze_existing`: later collections skip
    it). In the ``fishcast`` process only (:data:`_ENTRY_POINT`); elsewhere nothing changes."""
    if not _ENTRY_POINT:
        yield
        return
    import gc

    from fishcast.collector import freeze_existing

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        freeze_existing()
        if was:
            gc.enable()


def _build():
    import importlib

    import click

    from fishcast import __version__

    from .group import FishcastGroup

    @click.group(cls=FishcastGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="fishcast")
    def cli() -> None:
        """fishcast: cosmology Fisher forecasts with checked, stable derivatives."""

    for name in _COMMAND_MODULES:
        modname = f"fishcast.cli.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            raise
        for command in getattr(mod, "COMMANDS", []):
            cli.add_command(command)
    return cli


def __getattr__(name: str):
    if name == "cli":  # built on first use (PEP 562), then an ordinary module attribute
        group = _build()
        globals()["cli"] = group
        return group
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    from .errors import interrupt_message, terminate_as_interrupt

    global _ENTRY_POINT
    _ENTRY_POINT = True
    terminate_as_interrupt()  # SIGTERM (a scheduler's walltime) stops like Ctrl-C, exit 143
    try:
        group = __getattr__("cli") if "cli" not in globals() else globals()["cli"]
        group()
    except KeyboardInterrupt as exc:  # during start-up, before the group maps it
        message, code = interrupt_message(exc)
        sys.stderr.write(message + "\n")
        sys.exit(code)
    finally:
        _quick_exit()


def _quick_exit() -> None:
    """The command is over (its files written and closed, its output printed; what follows
    is the interpreter's exit): every object still alive is moved out of the garbage
    collector's reach (:func:`fishcast.collector.freeze_existing`), so that the exit does not
    walk the hundreds of thousands of objects numpy, scipy and CAMB leave behind. The exit
    itself is the usual one (atexit handlers, the pool's shutdown, flushing stdout and
    stderr); it took ~0.2 s of every run with scipy loaded, ~0.03 s so. Only the entry point
    does this: a program that calls the commands (click's CliRunner, the tests) keeps its own
    collector."""
    from fishcast.collector import freeze_existing

    freeze_existing()
