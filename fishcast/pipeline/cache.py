"""A content-addressed on-disk cache of cosmology evaluations.

Each :class:`~fishcast.cosmology.CosmologyResult` is stored as one ``.npz`` file named by
:func:`fishcast.cosmology.point_key` (a SHA-256 of the exact CAMB inputs, the accuracy and
grid settings and the CAMB version). Entries are written by the one atomic writer
(:func:`fishcast.io.atomic.write_npz`: a temporary name, fsync, rename), so several
processes may write the same entry at once: every reader sees a whole entry or
none. A damaged entry is treated as missing and recomputed. A run that dies keeps every
evaluation it finished.

Location: ``--cache-dir`` option, else the ``FISHCAST_CACHE_DIR`` environment variable,
else the platform's cache folder (``$XDG_CACHE_HOME/fishcast`` or ``~/.cache/fishcast`` on
Linux, ``~/Library/Caches/fishcast`` on macOS, ``%LOCALAPPDATA%/fishcast/Cache`` on
Windows).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import cosmology as _cosmo
from ..cosmology import CosmologyResult, CosmologySettings
from ..io.atomic import TEMP_SUFFIX


def default_cache_dir() -> pathlib.Path:
    env = os.environ.get("FISHCAST_CACHE_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    home = pathlib.Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "fishcast"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return pathlib.Path(base) / "fishcast" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (pathlib.Path(xdg) if xdg else home / ".cache") / "fishcast"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    damaged: int = 0
    #: entries that could not be written (full disk, read-only folder): the result was
    #: still returned, only not kept; ``write_error`` is the last reason
    write_failed: int = 0
    write_error: str = ""


@dataclass
class Cache:
    """The cache folder; ``stats`` counts what this object did."""

    root: pathlib.Path
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self):
        self.root = pathlib.Path(self.root)

    def path(self, key: str) -> pathlib.Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> CosmologyResult | None:
        p = self.path(key)
        try:
            with np.load(p, allow_pickle=False) as z:
                res = CosmologyResult.from_arrays({k: z[k] for k in z.files})
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            self.stats.damaged += 1
            self.stats.misses += 1
            with contextlib.suppress(OSError):
                p.unlink()
            return None
        self.stats.hits += 1
        return res

    def put(self, key: str, result: CosmologyResult) -> None:
        """Store ``result`` (atomically). A cache that cannot be written (a full disk, a
        read-only folder) does not stop the computation: the failure is counted in
        ``stats.write_failed`` / ``stats.write_error`` for the caller to report."""
        from ..io.atomic import WriteError, write_npz

        p = self.path(key)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            write_npz(p, result.to_arrays())
        except OSError as exc:
            self.stats.write_failed += 1
            self.stats.write_error = exc.strerror or str(exc)
            return
        except WriteError as exc:
            self.stats.write_failed += 1
            self.stats.write_error = getattr(exc.__cause__, "strerror", None) or str(exc)
            return
        self.stats.stored += 1

    def entries(self) -> list[pathlib.Path]:
        if not self.root.exists():
            return []
        return sorted(self.root.glob("*/*.npz"))

    def info(self) -> dict[str, object]:
        files = self.entries()
        return {"path": str(self.root), "entries": len(files), "bytes": sum(f.stat().st_size for f in files)}

    def clear(self) -> int:
        n = 0
        for f in self.entries():
            with contextlib.suppress(OSError):
                f.unlink()
                n += 1
        for f in self.root.glob(f"*/.*{TEMP_SUFFIX}") if self.root.exists() else []:
            with contextlib.suppress(OSError):
                f.unlink()
        return n


class MemoryCache:
    """An in-memory stand-in for :class:`Cache` (``get``/``put`` only): lets a run that
    retries after a CAMB failure (``derivatives.on_camb_failure: degrade``) keep what it
    computed when no disk cache is used."""

    def __init__(self):
        self._store: dict[str, CosmologyResult] = {}
        self.stats = CacheStats()

    def get(self, key: str) -> CosmologyResult | None:
        hit = self._store.get(key)
        if hit is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return hit

    def put(self, key: str, result: CosmologyResult) -> None:
        self._store[key] = result
        self.stats.stored += 1


def cached_evaluator(cache: Cache | None, compute: Callable = _cosmo.compute_many,
                     on_point: Callable[[], None] | None = None):
    """An evaluator (points, settings) -> results that reads and fills ``cache``.

    Misses are computed together by ``compute`` (which shares transfer runs) and stored as
    each finishes. ``on_point`` is called once per point (hit or computed): progress bars.
    """

    def evaluate(points: Sequence[Mapping[str, float]], settings: CosmologySettings) -> list[CosmologyResult]:
        keys = [_cosmo.point_key(p, settings) for p in points]
        out: list[CosmologyResult | None] = [None] * len(points)
        todo: list[int] = []
        for i, k in enumerate(keys):
            hit = cache.get(k) if cache is not None else None
            if hit is None:
                todo.append(i)
            else:
                out[i] = hit
                if on_point:
                    on_point()
        if todo:
            def done(j: int, res: CosmologyResult) -> None:
                i = todo[j]
                out[i] = res
                if cache is not None:
                    cache.put(keys[i], res)
                if on_point:
                    on_point()

            compute([points[i] for i in todo], settings, on_done=done)
        return out  # type: ignore[return-value]

    return evaluate
