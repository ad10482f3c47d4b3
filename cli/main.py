"""``fishcast`` command-line entry point."""

from __future__ import annotations

import click

from fishcast import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fishcast")
def cli() -> None:
    """fishcast: cosmology Fisher forecasts with checked, stable derivatives."""


def main() -> None:
    cli()
