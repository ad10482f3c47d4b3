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
import errno
import io
import json
import os
import pathlib
import re
import stat
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import cosmology as _cosmo
from ..cosmology import CosmologyResult, CosmologySettings
from ..io.atomic import TEMP_SUFFIX
from ..io.reading import O_NOFOLLOW, O_NONBLOCK

#: an entry may not be larger (a legitimate one, n_k = 5000 and n_z = 250, is ~20 MB); each
#: member's declared (uncompressed) size is bounded by it too
MAX_ENTRY_BYTES = 64 * 1024**2
#: JSON members (parameters, derived values, settings) [bytes]
MAX_JSON_BYTES = 1024**2

_SHARD = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"[0-9a-f]{64}\.npz")
_OUTSIDE = "outside the cache"


class CacheWarning(UserWarning):
    """A cache entry was not used (it did not verify); it is computed again."""


class _Rejected(Exception):
    pass


def _member_header(zf: zipfile.ZipFile, name: str):
    """(shape, dtype, bytes) of a member: its declared size is checked first (it bounds what
    decompression may produce), then the .npy header is parsed; the array itself is made
    only after the caller has checked shape and dtype."""
    info = zf.getinfo(name)
    if info.file_size > MAX_ENTRY_BYTES:
        raise _Rejected(f"{name}: declared size {info.file_size} bytes")
    raw = zf.read(info)  # at most the declared size
    fh = io.BytesIO(raw)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise _Rejected(f"{name}: .npy format version {version}")
    return tuple(shape), np.dtype(dtype), raw


def _verified_entry(zf: zipfile.ZipFile, key: str) -> CosmologyResult:
    """The CosmologyResult of an entry whose every member was checked (see Cache.get)."""
    names = set(zf.namelist())
    jsons = {"params_json", "derived_json", "settings_json"}
    allowed = {f"{n}.npy" for n in (*CosmologyResult.ARRAYS, *jsons)}
    if not names <= allowed:
        raise _Rejected(f"unexpected members {sorted(names - allowed)[:3]}")
    meta = {}
    for n in jsons:
        if f"{n}.npy" not in names:
            raise _Rejected(f"no {n} (written by an older fishcast?)")
        shape, dtype, member = _member_header(zf, f"{n}.npy")
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_JSON_BYTES:
            raise _Rejected(f"{n}: {dtype} of shape {shape}")
        raw = np.lib.format.read_array(io.BytesIO(member), allow_pickle=False)
        from ..io.reading import load_json

        meta[n] = load_json(bytes(raw), n, max_depth=4)
    params, settings_d = meta["params_json"], meta["settings_json"]
    if not (isinstance(params, dict) and isinstance(settings_d, dict) and isinstance(meta["derived_json"], dict)):
        raise _Rejected("parameters or settings are not mappings")
    try:
        settings = CosmologySettings(**settings_d)
        stored_key = _cosmo.point_key(params, settings)
    except Exception as exc:  # noqa: BLE001 -- whatever the content, it is a miss
        raise _Rejected(f"stored parameters/settings unreadable ({type(exc).__name__})") from None
    if stored_key != key:
        raise _Rejected("its stored parameters and settings are not those of its name "
                        f"(they hash to {stored_key[:12]}...)")
    n_z, n_k = settings.n_z, settings.n_k
    expect = {"z": (n_z,), "k": (n_k,), "pk_lin": (n_z, n_k), "chi": (n_z,), "hubble": (n_z,),
              "growth": (n_z,), "growth_rate": (n_z,), "sigma8_z": (n_z,)}
    if settings.nonlinear:
        expect["pk_nl"] = (n_z, n_k)
    if {f"{n}.npy" for n in expect} | {f"{n}.npy" for n in jsons} != names:
        raise _Rejected("its arrays are not those of its settings (pk_nl present or missing?)")
    arrays = {}
    for n, shape in expect.items():
        got_shape, dtype, member = _member_header(zf, f"{n}.npy")
        if dtype != np.dtype(np.float64) or got_shape != shape:
            raise _Rejected(f"{n}: {dtype} of shape {got_shape}, expected float64 of shape {shape}")
        arrays[n] = np.lib.format.read_array(io.BytesIO(member), allow_pickle=False)
        if not np.all(np.isfinite(arrays[n])):
            raise _Rejected(f"{n}: non-finite values")
    if not (np.array_equal(arrays["z"], settings.z_grid()) and np.array_equal(arrays["k"], settings.k_grid())):
        raise _Rejected("its z or k grid is not the grid of its settings")
    if np.any(arrays["pk_lin"] <= 0) or ("pk_nl" in arrays and np.any(arrays["pk_nl"] <= 0)):
        raise _Rejected("a non-positive power spectrum")
    arrays["params_json"] = np.frombuffer(json.dumps(params).encode(), dtype=np.uint8)
    arrays["derived_json"] = np.frombuffer(json.dumps(meta["derived_json"]).encode(), dtype=np.uint8)
    return CosmologyResult.from_arrays(arrays)


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
    #: entries not used (why, per entry): a mismatch, a symlink, a special file, a damage
    rejected: list = field(default_factory=list)


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
        """The entry named ``key``, verified, or None (a miss).

        The name is not trusted: the entry must be a regular file (not a symlink, FIFO or
        device; opened without following links and without blocking) of at most
        :data:`MAX_ENTRY_BYTES`, in a shard folder that is a real folder of the cache; its
        stored parameters and settings must hash to ``key`` (so they are the ones asked
        for, with this CAMB version); every array must be float64 with the shape the stored
        settings give, declared in its header before it is read (a member's declared size
        bounds its decompression), with the fixed z and k grids and a finite, positive
        power spectrum. Anything else is a miss with a :class:`CacheWarning`, and the entry
        is removed (the link itself, never what it points to)."""
        p = self.path(key)
        try:
            problem = self._check_place(p)
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        if problem is None:
            try:
                res = self._read_verified(p, key)
            except FileNotFoundError:
                self.stats.misses += 1
                return None
            except _Rejected as exc:
                problem = str(exc)
            except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
                problem = f"damaged ({type(exc).__name__}: {exc})"
            else:
                self.stats.hits += 1
                return res
        self.stats.damaged += 1
        self.stats.misses += 1
        self.stats.rejected.append(f"{p}: {problem}")
        warnings.warn(f"cache entry {p} not used: {problem}; it is computed again", CacheWarning, stacklevel=2)
        if not problem.startswith(_OUTSIDE):
            with contextlib.suppress(OSError):
                p.unlink()  # the entry (or the link) itself, inside a real shard folder
        return None

    def _check_place(self, p: pathlib.Path) -> str | None:
        """Why the path of an entry may not be read (None: it may); FileNotFoundError when
        there is no entry. Nothing is opened."""
        shard = p.parent
        st_shard = os.lstat(shard)
        if not stat.S_ISDIR(st_shard.st_mode):
            return f"{_OUTSIDE}: the shard {shard.name} is {'a symlink' if stat.S_ISLNK(st_shard.st_mode) else 'not a folder'}"
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return "a symlink (the cache never follows links)"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file (FIFO, device, socket or folder)"
        if st.st_size > MAX_ENTRY_BYTES:
            return f"{st.st_size} bytes, more than an entry may be ({MAX_ENTRY_BYTES // 1024**2} MiB)"
        return None

    def _read_verified(self, p: pathlib.Path, key: str) -> CosmologyResult:
        fd = os.open(p, os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK)  # never a link, never blocks
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
                raise _Rejected("not a regular file of a plausible size")
            chunks, total = [], 0
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_ENTRY_BYTES:
                    raise _Rejected(f"more than {MAX_ENTRY_BYTES // 1024**2} MiB")
                chunks.append(chunk)
        finally:
            os.close(fd)
        with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
            return _verified_entry(zf, key)

    def put(self, key: str, result: CosmologyResult, settings: CosmologySettings) -> None:
        """Store ``result`` (atomically), with the ``settings`` it was computed with (a
        reader checks that they and the parameters hash to ``key``). A cache that cannot be
        written (a full disk, a read-only folder) does not stop the computation: the failure
        is counted in ``stats.write_failed`` / ``stats.write_error`` for the caller to report."""
        from ..io.atomic import WriteError, write_npz

        p = self.path(key)
        if _cosmo.point_key(result.params, settings) != key:
            raise ValueError(f"cache.put: the result's parameters and settings do not hash to {key}")
        arrays = result.to_arrays()
        arrays["settings_json"] = np.frombuffer(json.dumps(asdict(settings), sort_keys=True).encode(), dtype=np.uint8)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if os.path.islink(p.parent):
                raise OSError(errno.ELOOP, f"the shard folder {p.parent} is a symlink; not written through")
            write_npz(p, arrays)
        except OSError as exc:
            self.stats.write_failed += 1
            self.stats.write_error = exc.strerror or str(exc)
            return
        except WriteError as exc:
            self.stats.write_failed += 1
            self.stats.write_error = getattr(exc.__cause__, "strerror", None) or str(exc)
            return
        self.stats.stored += 1

    def _scan(self) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
        """(entries, temporary files) of the cache, found without following any symlink: a
        shard that is a symlink is not entered; an entry that is a symlink is listed (as a
        link: removing it removes the link, never its target)."""
        entries: list[pathlib.Path] = []
        temps: list[pathlib.Path] = []
        try:
            shards = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        for shard in shards:
            if not shard.is_dir(follow_symlinks=False) or not _SHARD.fullmatch(shard.name):
                continue
            with contextlib.suppress(OSError):
                for e in os.scandir(shard.path):
                    if _ENTRY.fullmatch(e.name):
                        entries.append(pathlib.Path(e.path))
                    elif e.name.startswith(".") and e.name.endswith(TEMP_SUFFIX):
                        temps.append(pathlib.Path(e.path))
        return sorted(entries), sorted(temps)

    def entries(self) -> list[pathlib.Path]:
        return self._scan()[0]

    def info(self) -> dict[str, object]:
        files = self.entries()
        size = 0
        for f in files:
            with contextlib.suppress(OSError):
                size += os.lstat(f).st_size
        return {"path": str(self.root), "entries": len(files), "bytes": size}

    def clear(self) -> int:
        entries, temps = self._scan()
        n = 0
        for f in entries:
            with contextlib.suppress(OSError):
                f.unlink()  # a symlink entry: the link goes, its target stays
                n += 1
        for f in temps:
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

    def put(self, key: str, result: CosmologyResult, settings: CosmologySettings | None = None) -> None:
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
                    cache.put(keys[i], res, settings)
                if on_point:
                    on_point()

            compute([points[i] for i in todo], settings, on_done=done)
        return out  # type: ignore[return-value]

    return evaluate
