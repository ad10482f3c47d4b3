"""Reading input files without trusting them: the one place every reader goes through.

Survey and grid YAML, tables (n(z), <L>/L*, densities), text Fisher matrices, HDF5 files
and cache entries are all read here first:

* only a regular file is opened: a FIFO, a device (``/dev/zero``), a socket or a folder is
  refused from ``stat`` before it is opened, and opened with ``O_NONBLOCK`` so that a file
  swapped for a FIFO in between cannot block (the opened descriptor is checked again);
* the size is capped: a file larger than the cap of its kind is refused from its size
  before a byte is read, and never more than the cap is read;
* text must be UTF-8 without control characters (NUL, ESC, ...; tab, newline and carriage
  return are text): a problem is a message naming the file, the line and the column;
* an HDF5 file is walked before anything is read from it: soft links (a loop of them),
  external links (to another file, or to a FIFO) and virtual datasets are refused (a
  fishcast file holds none), each dataset's declared size (shape x item size, what it
  would take in memory once decompressed) and each attribute's size are checked against
  caps, and a JSON text attribute may not nest deeper than :data:`MAX_JSON_DEPTH`.

Every refusal is a :class:`~fishcast.errors.FileFormatError` (exit 2).
"""

from __future__ import annotations

import errno
import os
import pathlib
import stat
import unicodedata

from ..errors import FileFormatError

#: caps by kind of file [bytes]; a recipe is ~3 kB, a table or a text matrix well below 1 MB
MAX_YAML_BYTES = 4 * 1024**2
MAX_TABLE_BYTES = 64 * 1024**2
MAX_MATRIX_BYTES = 256 * 1024**2
#: one HDF5 dataset, as declared (decompressed) [bytes]; one attribute [bytes]
MAX_DATASET_BYTES = 1024**3
MAX_ATTRIBUTE_BYTES = 64 * 1024**2
#: objects (groups, datasets, links) an HDF5 file may hold
MAX_HDF5_OBJECTS = 100_000
#: nesting of a JSON text attribute ([ and { levels)
MAX_JSON_DEPTH = 64

#: open flags that POSIX has and other systems may not (0 there)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
O_NOCTTY = getattr(os, "O_NOCTTY", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def _kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS.items():
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> os.stat_result:
    """Refuse (FileFormatError) a path that does not exist, is not a regular file (after
    following symlinks), or is larger than ``max_bytes``; nothing is opened."""
    p = pathlib.Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileFormatError(f"{p}: no such file ({what})") from None
    except OSError as exc:
        raise FileFormatError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise FileFormatError(f"{p}: is {kind}, not a {what}; refused")
    if max_bytes is not None and st.st_size > max_bytes:
        raise FileFormatError(f"{p}: {st.st_size} bytes is more than a {what} may be "
                              f"({max_bytes // 1024**2} MiB); refused")
    return st


def read_bytes(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (default :data:`MAX_TABLE_BYTES`)."""
    max_bytes = MAX_TABLE_BYTES if max_bytes is None else max_bytes
    p = pathlib.Path(path)
    check_regular(p, what, max_bytes)
    try:
        fd = os.open(p, os.O_RDONLY | O_NONBLOCK | O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileFormatError(f"{p}: no such file ({what})") from None
        raise FileFormatError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        kind = _kind(os.fstat(fd).st_mode)  # swapped for a FIFO after the stat above?
        if kind is not None:
            raise FileFormatError(f"{p}: is {kind}, not a {what}; refused")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FileFormatError(f"{p}: more than {max_bytes // 1024**2} MiB; a {what} may not be "
                                      "that large; refused")
        return b"".join(chunks)
    except OSError as exc:
        raise FileFormatError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _line_col(data, index: int, newline) -> tuple[int, int]:
    line = data.count(newline, 0, index) + 1
    start = data.rfind(newline, 0, index) + 1
    return line, index - start + 1


def decode_text(raw: bytes, name: str, what: str = "file") -> str:
    """``raw`` as UTF-8 text (a BOM is dropped); FileFormatError naming the line and column
    of the first byte that is not UTF-8, or of the first control character."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start, b"\n")
        raise TextError(name, line, f"not a text file (a {what} is UTF-8 text): byte 0x{raw[exc.start]:02x} "
                                    f"at column {col}") from None
    bad = first_control(text)
    if bad is not None:
        line, col = _line_col(text, bad, "\n")
        raise TextError(name, line, f"the {what} holds the control character {describe_char(text[bad])} "
                                    f"at column {col}; refused")
    return text


class TextError(FileFormatError):
    """A text file that is not UTF-8 or holds a control character: ``line`` (1-based) and
    ``detail`` for readers that report problems their own way (a survey's SurveyError)."""

    def __init__(self, name: str, line: int, detail: str):
        self.line, self.detail = line, detail
        super().__init__(f"{name}:{line}: {detail}")


def first_control(text: str) -> int | None:
    """Index of the first control character (Unicode category Cc other than tab, newline,
    carriage return; also the surrogates and noncharacters a text never holds), or None."""
    for i, ch in enumerate(text):
        if ch in "\t\n\r":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs") or (cat == "Cn" and (0xFDD0 <= ord(ch) <= 0xFDEF or (ord(ch) & 0xFFFE) == 0xFFFE)):
            return i
    return None


def describe_char(ch: str) -> str:
    """``U+0000 (NUL)``-style description of a character."""
    names = {0: "NUL", 7: "BEL", 8: "BS", 0x1B: "ESC", 0x7F: "DEL"}
    name = names.get(ord(ch)) or unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def read_text(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> str:
    """A regular, capped, UTF-8 text file without control characters (see the module)."""
    return decode_text(read_bytes(path, what, max_bytes), str(path), what)


# ------------------------------------------------------------------------------- JSON
def json_depth(text: str) -> int:
    """Largest nesting of [ and { in a JSON text (strings skipped), in one linear pass."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def load_json(text, name: str, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` of a text from a file, refusing nesting deeper than ``max_depth`` (a
    deep one would exhaust Python's recursion) with a FileFormatError naming ``name``."""
    import json

    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if json_depth(text) > max_depth:
        raise FileFormatError(f"{name}: JSON nested deeper than {max_depth} levels; refused")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FileFormatError(f"{name}: not valid JSON: {exc}") from None


# ------------------------------------------------------------------------------- HDF5
def check_hdf5_tree(f, name: str) -> None:
    """Walk an open h5py File (links, not objects) and refuse what fishcast never writes and
    what could hang, exhaust memory or reach outside the file (see the module docstring)."""
    import h5py

    count = 0
    seen: set = set()

    def attrs_ok(obj, where: str) -> None:
        for key in obj.attrs:
            aid = obj.attrs.get_id(key)
            size = aid.get_storage_size()
            if size > MAX_ATTRIBUTE_BYTES:
                raise FileFormatError(f"{name}: {where} attribute {key!r}: {size} bytes; more than "
                                      f"{MAX_ATTRIBUTE_BYTES // 1024**2} MiB; refused")
            if aid.dtype.kind in "SUO" and aid.shape == ():
                value = obj.attrs[key]
                text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
                if isinstance(text, str) and text[:1] in "[{" and json_depth(text) > MAX_JSON_DEPTH:
                    raise FileFormatError(f"{name}: {where} attribute {key!r}: JSON nested deeper than "
                                          f"{MAX_JSON_DEPTH} levels; refused")

    def walk(group, prefix: str) -> None:
        nonlocal count
        for key in group:
            count += 1
            if count > MAX_HDF5_OBJECTS:
                raise FileFormatError(f"{name}: more than {MAX_HDF5_OBJECTS} objects; refused")
            where = f"{prefix}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise FileFormatError(f"{name}: {where} is an external link (to {link.filename}); "
                                      "a fishcast file holds none; refused")
            if isinstance(link, h5py.SoftLink):
                raise FileFormatError(f"{name}: {where} is a soft link (to {link.path}); "
                                      "a fishcast file holds none; refused")
            obj = group[key]
            token = getattr(h5py.h5o.get_info(obj.id), "token", None)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise FileFormatError(f"{name}: {where} is a virtual dataset (it maps other files); refused")
                if obj.external:
                    raise FileFormatError(f"{name}: {where} stores its data in external files; refused")
                declared = int(obj.size or 0) * int(obj.dtype.itemsize)
                if declared > MAX_DATASET_BYTES:
                    raise FileFormatError(f"{name}: {where}: declared size {declared} bytes (shape {obj.shape}) is "
                                          f"more than {MAX_DATASET_BYTES // 1024**2} MiB; refused before reading")
                attrs_ok(obj, where)
            elif isinstance(obj, h5py.Group):
                if token is not None and token in seen:  # a hard-link cycle
                    continue
                if token is not None:
                    seen.add(token)
                attrs_ok(obj, where)
                walk(obj, where)

    try:
        attrs_ok(f, "/")
        walk(f, "")
    except FileFormatError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise FileFormatError(f"{name}: cannot read its structure (damaged?): {exc}") from None
