"""The click group of fishcast: errors, SIGINT and SIGTERM mapped once, for every command.

:class:`FishcastGroup` maps what any command (or subcommand group) raises:

* :class:`fishcast.errors.FishcastError` -> ``error: message`` and its exit status;
* OSError (a file that cannot be read or written) -> ``error: FILE: reason``, exit 2;
* KeyboardInterrupt (Ctrl-C) -> one line of what was kept, exit 130; SIGTERM (a scheduler's
  walltime) -> the same, starting ``terminated (SIGTERM)``, exit 143 (SIGTERM is turned into
  an exception while the group runs, and the previous handler is put back afterwards).

A Ctrl-C while click parses the options gives the same line (not click's ``Aborted!``). Each
invocation carries a :class:`fishcast.cli.errors.Tracker` on its context (``ctx.meta``), which
``run`` and ``batch`` fill with :func:`track`.
"""

from __future__ import annotations

import click

from .errors import Tracker, error_message, interrupt_message, restore_terminate, terminate_as_interrupt

_TRACKER_KEY = "fishcast.tracker"


def tracker(ctx: click.Context | None = None) -> Tracker:
    """The tracker of the running invocation (a fresh one outside the group, e.g. when a
    command is invoked on its own)."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return Tracker()
    return ctx.meta.setdefault(_TRACKER_KEY, Tracker())


def track(cache=None, output: str | None = None, kind: str = "run") -> None:
    """Record where the running command computes into (see :meth:`Tracker.track`), so that an
    interruption or a failed computation can say what was kept."""
    tracker().track(cache, output, kind)


def _stop(exc: BaseException, ctx: click.Context | None):
    """Print the message of ``exc`` and leave with its exit status; re-raise what is not mapped,
    and a broken pipe (``fishcast show f.h5 | head``), which click ends quietly with exit 1."""
    if isinstance(exc, BrokenPipeError):
        raise exc
    mapped = error_message(exc, tracker(ctx) if ctx is not None else None)
    if mapped is None:
        raise exc
    message, code = mapped
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


class FishcastGroup(click.Group):
    """A click group that maps errors and signals of every command once (see the module)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except KeyboardInterrupt as exc:  # Ctrl-C while the options are parsed
            message, code = interrupt_message(exc)
            click.echo(message, err=True)
            raise click.exceptions.Exit(code) from None

    def invoke(self, ctx: click.Context):
        if ctx.parent is not None:  # a nested group (e.g. `cache`): the root maps
            return super().invoke(ctx)
        ctx.meta[_TRACKER_KEY] = Tracker()
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            _stop(exc, ctx)

    def main(self, *args, **kwargs):
        previous = terminate_as_interrupt()
        try:
            return super().main(*args, **kwargs)
        finally:
            restore_terminate(previous)
