"""The one atomic writer: every file fishcast writes goes through this module.

A file is written to a temporary name in the target's folder
(``.<name>.<pid>.<random>.tmp``, the one temporary-name style of fishcast), flushed and
fsynced, renamed over the target in one step, and the folder is fsynced so that the rename
itself survives a crash. On any failure the temporary file is removed, a file already at the
target is untouched, and the error is :class:`WriteError`: ``cannot write PATH: reason``.
A signal that would end the process without any cleanup (SIGTERM in a pool worker, where it
keeps its default action; SIGHUP) waits while a temporary file exists: the file is renamed
into place (or removed), then the signal takes effect, so that a worker killed by a batch
scheduler's SIGTERM never leaves a temporary file in the cache.

What is never replaced (checked before anything is computed by :func:`check_output_path`,
and again just before the rename):

* a special file -- a FIFO, a character or block device (``/dev/null``), a socket, a
  folder -- or a symbolic link to one. A symbolic link to a regular file (or to a name not
  yet created) is written through: the file it names is replaced, the link is kept;
* an input of the same command (compared by real path and by device and inode, so a second
  path, a ``..`` detour, a symbolic or a hard link to the input are all recognized).

Several files that belong together (an export's ``.paramnames``, ``.covmat`` and
``.fisher``) are written by :class:`AtomicFiles`: all or none. If any of them fails, none of
the new files is left behind and the files that were at those names before are restored.
"""

from __future__ import annotations

import contextlib
import io as _bytes_io
import os
import pathlib
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from ..errors import InputError
from ..signals import held

__all__ = [
    "WriteError",
    "TEMP_SUFFIX",
    "temp_path",
    "is_temp_name",
    "check_output_path",
    "atomic_open",
    "write_bytes",
    "write_text",
    "write_npz",
    "save_figure",
    "atomic_h5",
    "AtomicFiles",
]

#: every temporary file fishcast writes ends with this suffix and starts with a dot
TEMP_SUFFIX = ".tmp"
_NAME_MAX = 255


class WriteError(InputError):
    """A file cannot be written where the user asked (exit status 2, like all bad input):
    the folder is missing or read-only, the disk is full, the target is a special file or an
    input of the same command. The message starts ``cannot write PATH:``."""


# ------------------------------------------------------------------------------ names
def temp_path(target: str | os.PathLike) -> pathlib.Path:
    """A fresh temporary name next to ``target``: ``.<name>.<pid>.<8 hex>.tmp`` (the name
    part is shortened when the whole would exceed 255 bytes)."""
    target = pathlib.Path(target)
    tail = f".{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    name = target.name
    while len(("." + name + tail).encode("utf-8", "surrogateescape")) > _NAME_MAX:
        name = name[: max(1, len(name) // 2)]
    return target.with_name(f".{name}{tail}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :func:`temp_path`'s (left over by a killed process)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


# ------------------------------------------------------------------------------ checks
def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _resolve(path: pathlib.Path) -> pathlib.Path:
    """The file that writing ``path`` replaces: ``path`` itself, or what its symbolic links
    name (the links are kept)."""
    return pathlib.Path(os.path.realpath(path)) if path.is_symlink() else path


def _refuse_special(shown: pathlib.Path, target: pathlib.Path) -> None:
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WriteError(f"cannot write {shown}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        via = f" (through the symbolic link to {target})" if target != shown else ""
        raise WriteError(f"cannot write {shown}: it is {_kind(st.st_mode)}{via}; "
                         "fishcast replaces only regular files: give another output name")


def _check_folder(shown: pathlib.Path, target: pathlib.Path) -> None:
    parent = target.parent if str(target.parent) else pathlib.Path(".")
    if not parent.exists():
        raise WriteError(f"cannot write {shown}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise WriteError(f"cannot write {shown}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"cannot write {shown}: the folder {parent} is not writable")


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_output_path(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> pathlib.Path:
    """Check, before any computation, that ``path`` can be written and may be replaced.

    Refuses (:class:`WriteError`, exit 2) a missing or read-only folder, a special file at
    ``path`` (FIFO, device, socket, folder, or a symbolic link to one), and any of
    ``inputs`` (the files the same command reads): compared by real path and by device and
    inode, so another spelling of the path, a symbolic link or a hard link to an input is
    recognized. Returns ``path`` as a Path.
    """
    shown = pathlib.Path(path)
    if str(path) == "":
        raise WriteError("cannot write '': an empty output name")
    target = _resolve(shown)
    _check_folder(shown, target)
    _refuse_special(shown, target)
    for inp in inputs:
        if inp is None:
            continue
        if _same_file(shown, pathlib.Path(inp)):
            same = "" if os.fspath(inp) == os.fspath(path) else f" (the same file as {inp})"
            raise WriteError(f"cannot write {shown}: it is an input of this command{same}; "
                             "writing it would replace what is being read: give another output name")
    return shown


def _fsync_folder(folder: pathlib.Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)


def _create_temp(target: pathlib.Path) -> tuple[pathlib.Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(16):
        tmp = temp_path(target)
        try:
            return tmp, os.open(tmp, flags, 0o666)  # permissions: 0666 minus the umask, as open()
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")


def _open_temp(tmp: pathlib.Path, fd: int, mode: str, **kw) -> IO[Any]:
    """The file object of a temporary file just created (one place, so that tests can put
    a failing disk behind it)."""
    return os.fdopen(fd, mode, **kw)


# ------------------------------------------------------------------------------ one file
def _prepare(path: str | os.PathLike, mode: str, who: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The path as given and the file it names, after the checks every writer makes: a whole
    file ('w' or 'wb'), an existing writable folder, no special file at the target."""
    if mode not in ("w", "wb"):
        raise ValueError(f"{who} writes whole files: mode 'w' or 'wb', not {mode!r}")
    shown = pathlib.Path(path)
    target = _resolve(shown)
    _check_folder(shown, target)
    _refuse_special(shown, target)
    return shown, target


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str = "utf-8",
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Open ``path`` for writing (``mode`` ``"wb"`` or ``"w"``); what is written goes to a
    temporary file that replaces ``path`` when the block ends without an exception.

    An exception inside the block, or any failure to write, flush, fsync or rename, removes
    the temporary file and leaves a file already at ``path`` untouched; an OSError is raised
    again as :class:`WriteError` ("cannot write PATH: reason"). A signal whose default action
    would end the process takes effect only once the temporary file is renamed or removed
    (:func:`_temp_life`).
    """
    shown, target = _prepare(path, mode, "atomic_open")
    with _temp_life():
        with _atomic_open(shown, target, mode, encoding, newline) as fh:
            yield fh


@contextlib.contextmanager
def _temp_life() -> Iterator[None]:
    """While a temporary file exists: a signal whose default action would end the process
    without cleanup (SIGTERM in a pool worker, SIGHUP) is held back until the file is renamed
    into place or removed, then takes effect (:func:`fishcast.signals.held`). A signal with a
    Python handler (this process's Ctrl-C and SIGTERM in ``fishcast``) raises as before, and
    the temporary file is removed on the way out."""
    with held(only_default=True):
        yield


@contextlib.contextmanager
def _atomic_open(shown: pathlib.Path, target: pathlib.Path, mode: str, encoding: str,
                 newline: str | None) -> Iterator[IO[Any]]:
    # Ctrl-C and SIGTERM (this process's handlers raise) may interrupt the writing, and the
    # temporary file is then removed; they are held (fishcast.signals.held) only across the
    # steps after which the name must be known -- the file's creation, the rename, the
    # removal -- so that an exception never falls between a step and its record (a
    # temporary file made but not yet named here, hence not removed, was seen once in ~25
    # runs of the Ctrl-C tests).
    tmp = None
    try:
        kw = {"encoding": encoding, "newline": newline} if mode == "w" else {}
        with held():
            tmp, fd = _create_temp(target)
            fh = _open_temp(tmp, fd, mode, **kw)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _refuse_special(shown, target)  # a FIFO made while we computed is still not replaced
        with held():
            os.replace(tmp, target)
            tmp = None
        _fsync_folder(target.parent if str(target.parent) else pathlib.Path("."))
    except OSError as exc:
        raise WriteError(f"cannot write {shown}: {_reason(exc)}") from exc
    finally:
        if tmp is not None:
            with held(), contextlib.suppress(OSError):
                os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return pathlib.Path(path)


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_open(path, "w", newline="") as fh:
        fh.write(text)
    return pathlib.Path(path)


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> pathlib.Path:
    """Write plain arrays as an uncompressed ``.npz`` (no pickles) to ``path`` atomically."""
    import numpy as np

    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return pathlib.Path(path)


def save_figure(fig, path: str | os.PathLike, fmt: str | None = None, **savefig_kw) -> pathlib.Path:
    """Save a matplotlib figure to ``path`` atomically; the format is ``fmt`` or the
    extension (pdf, png, svg, ...)."""
    p = pathlib.Path(path)
    fmt = fmt or p.suffix[1:].lower() or None
    with atomic_open(p, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kw)
    return p


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike) -> Iterator[Any]:
    """Build an HDF5 file in memory (an ``h5py.File`` open for writing is yielded) and write
    it to ``path`` atomically when the block ends without an exception.

    HDF5 itself never writes to the disk: a full disk, a file-size limit or a folder that
    turned read-only shows as an OSError of one plain write, reported as
    :class:`WriteError`. (HDF5 writing to a failing disk raises from deep inside its caches
    and can leave its library in a state that crashes at exit.)
    """
    import h5py

    shown = pathlib.Path(path)
    target = _resolve(shown)
    _check_folder(shown, target)
    _refuse_special(shown, target)
    buffer = _bytes_io.BytesIO()
    f = h5py.File(buffer, "w")
    try:
        yield f
    except BaseException:
        with contextlib.suppress(Exception):
            f.close()
        raise
    f.close()
    write_bytes(shown, buffer.getbuffer())


# ------------------------------------------------------------------------------ several files
def _backup(target: pathlib.Path) -> pathlib.Path:
    """A second name for the file at ``target`` (a hard link; a copy where the filesystem
    has no hard links), so that it can be restored after ``target`` was replaced."""
    backup = temp_path(target)
    try:
        os.link(target, backup)
    except OSError:
        import shutil

        shutil.copy2(target, backup)
    return backup


class AtomicFiles:
    """Several files written all or none::

        with AtomicFiles() as files:
            with files.open("a.paramnames", "w") as fh: ...
            with files.open("a.covmat", "w") as fh: ...

    Each file goes to its own temporary name (flushed, fsynced). When the block ends without
    an exception, every target is checked again, then the temporaries are renamed into place
    one by one; the file previously at a target is kept under a hard-linked backup name
    until all renames succeeded. On any failure -- in the block, while writing, or at the
    k-th rename -- the temporaries are removed, the targets already renamed are restored to
    their previous content (or removed where there was none) and :class:`WriteError` is
    raised: none of the new files is left behind.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[pathlib.Path, pathlib.Path, pathlib.Path]] = []  # shown, target, tmp
        self.paths: list[pathlib.Path] = []

    def __enter__(self) -> "AtomicFiles":
        self._held = _temp_life()
        self._held.__enter__()  # until every temporary file is renamed or removed (__exit__)
        return self

    @contextlib.contextmanager
    def open(self, path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
        shown, target = _prepare(path, mode, "AtomicFiles")
        if any(_resolve(t) == target for _, t, _ in self._staged):
            raise WriteError(f"cannot write {shown}: named twice in one set of files")
        try:
            with held():  # created and recorded in one step (see _atomic_open)
                tmp, fd = _create_temp(target)
                self._staged.append((shown, target, tmp))
        except OSError as exc:
            raise WriteError(f"cannot write {shown}: {_reason(exc)}") from exc
        try:
            kw = {"encoding": encoding} if mode == "w" else {}
            with _open_temp(tmp, fd, mode, **kw) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise WriteError(f"cannot write {shown}: {_reason(exc)}") from exc

    def add_text(self, path: str | os.PathLike, text: str) -> None:
        """Write ``text`` (UTF-8) as one of the files."""
        with self.open(path, "w") as fh:
            fh.write(text)

    def _discard(self) -> None:
        for _, _, tmp in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged.clear()

    def __exit__(self, exc_type, exc, tb) -> bool:
        life, self._held = getattr(self, "_held", None), None
        try:
            with held():  # the renames (or removals) and their records in one step
                if exc_type is not None:
                    self._discard()
                    return False
                self._commit()
            return False
        finally:
            if life is not None:
                life.__exit__(None, None, None)

    def _commit(self) -> None:
        done: list[tuple[pathlib.Path, pathlib.Path | None]] = []  # target, backup of the old file
        current = None
        try:
            for shown, target, _ in self._staged:
                current = shown
                _refuse_special(shown, target)
            for shown, target, tmp in self._staged:
                current = shown
                backup = None
                if os.path.lexists(target):
                    backup = _backup(target)  # the old file stays at target until the rename
                done.append((target, backup))
                os.replace(tmp, target)
        except (OSError, WriteError) as exc:
            names = ", ".join(str(s) for s, _, _ in self._staged)
            for target, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, target)
                    else:
                        os.unlink(target)
                if backup is not None:  # a rename between two links of one file does nothing
                    with contextlib.suppress(OSError):
                        os.unlink(backup)
            self._discard()
            if isinstance(exc, WriteError):
                raise
            raise WriteError(f"cannot write {current}: {_reason(exc)}; none of {names} was written") from exc
        for target, backup in done:
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(backup)
        for folder in {t.parent if str(t.parent) else pathlib.Path(".") for _, t, _ in self._staged}:
            _fsync_folder(folder)
        self.paths = [s for s, _, _ in self._staged]
        self._staged.clear()
