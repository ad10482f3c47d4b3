"""``fishcast`` command-line entry point.

Commands live in sibling modules, each exporting ``COMMANDS`` (a list of click commands):
``run`` (run, validate, schema), ``ops`` (show, combine, prior, fix, marginalize, derive,
compare, plot, export, import), ``stability``, ``batch``, ``cache``.
"""

from __future__ import annotations

import importlib

import click

from fishcast import __version__

_COMMAND_MODULES = ("run", "ops", "stability", "batch", "cache", "simfisher")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fishcast")
def cli() -> None:
    """fishcast: cosmology Fisher forecasts with checked, stable derivatives."""


def _register() -> None:
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


_register()


def main() -> None:
    from .errors import terminate_as_interrupt

    terminate_as_interrupt()  # SIGTERM (a scheduler's walltime) cleans up like Ctrl-C; exit 143
    cli()
