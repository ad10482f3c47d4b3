"""``fishcast cache info`` and ``fishcast cache clear``: the on-disk cache of CAMB results."""

from __future__ import annotations

import click

_CACHE_DIR = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                          help="The cache folder [default: $FISHCAST_CACHE_DIR or the platform cache folder].")


def _cache(cache_dir):
    from fishcast.pipeline.cache import Cache, default_cache_dir

    return Cache(cache_dir or default_cache_dir())


@click.group()
def cache():
    """The cache of CAMB results (content-addressed; safe to clear at any time)."""


@cache.command()
@_CACHE_DIR
def info(cache_dir):
    """Where the cache is, how many evaluations it holds and their size."""
    i = _cache(cache_dir).info()
    click.echo(f"path:    {i['path']}")
    click.echo(f"entries: {i['entries']}")
    click.echo(f"size:    {i['bytes'] / 1e6:.1f} MB ({i['bytes']} bytes)")


@cache.command()
@_CACHE_DIR
def clear(cache_dir):
    """Remove every cached evaluation (and temporary files left by killed runs)."""
    c = _cache(cache_dir)
    n = c.clear()
    click.echo(f"removed {n} entries from {c.root}")


COMMANDS = [cache]
