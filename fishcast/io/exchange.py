"""Fisher matrices in other codes' text formats: import and export.

Import (IST:F, CosmicFish)
    A whitespace-separated square matrix (``#`` comments allowed), as the Euclid IST:F public
    Fisher matrices and CosmicFish write them, plus a ``.paramnames`` file with one parameter
    per line: ``name [latex ...] [fiducial]`` (CosmicFish writes ``name    latex    fiducial``;
    getdist writes ``name latex`` and marks derived parameters with a trailing ``*``).
    Names used by those codes for fishcast's canonical parameters (``Omegam``, ``ns``,
    ``aIA``, ...) are renamed to the canonical ones (the registry's aliases,
    :func:`fishcast.parameters.aliases`) unless asked not to, so
    that an imported matrix combines with fishcast's own by name.

Export
    ``getdist``: ``BASE.paramnames`` (``name  latex``), ``BASE.covmat`` (first line
    ``# name1 name2 ...``, then the covariance rows, the layout getdist's ``CovMat`` reads),
    and ``BASE.fisher`` (the Fisher matrix in the same layout).
    ``cosmosis``: ``BASE.txt`` as CosmoSIS's Fisher sampler writes it: a first line ``#`` plus
    the tab-separated ``section--name`` of each parameter (from the parameter registry), ``#key=value``
    metadata lines, the fiducials as a commented values-ini block, then the matrix rows.
    ``text``: ``BASE.txt`` (``# names`` header line and the matrix) and ``BASE.paramnames``
    (``name    latex    fiducial``, CosmicFish style): :func:`read_text_fisher` reads it back.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fishcast import parameters as _params
from fishcast.errors import FileFormatError, InputError
from fishcast.fisher import FisherMatrix

__all__ = [
    "ALIASES", "LATEX", "COSMOSIS_NAMES", "EXPORT_FORMATS",
    "latex_name", "sha256_file", "read_paramnames", "read_text_fisher", "export",
]

EXPORT_FORMATS = ("getdist", "cosmosis", "text")


def __getattr__(name: str):
    """``ALIASES``, ``LATEX`` and ``COSMOSIS_NAMES``: views of the parameter registry
    (:mod:`fishcast.parameters`), which is the only table of names, labels and units."""
    if name == "ALIASES":
        return _params.aliases()
    if name == "LATEX":
        return {n: p.latex for n, p in _params.registered().items()}
    if name == "COSMOSIS_NAMES":
        return {n: p.cosmosis for n, p in _params.registered().items() if p.cosmosis}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def latex_name(name: str) -> str:
    """LaTeX label of a parameter (no dollars), from the parameter registry."""
    return _params.latex_of(name)


def _cosmosis_name(name: str) -> str:
    return _params.cosmosis_name_of(name)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_text(path: Path, what: str) -> str:
    from . import reading

    return reading.read_text(path, what, reading.MAX_MATRIX_BYTES)  # regular, capped, UTF-8, no control characters


def read_paramnames(path: str | os.PathLike) -> list[tuple[str, str, float]]:
    """Parse a ``.paramnames`` file into ``[(name, latex, fiducial)]`` (fiducial ``NaN`` when
    absent). Lines starting with ``#`` and blank lines are skipped."""
    path = Path(path)
    text = _read_text(path, "parameter-names file")
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tokens = s.split()
        name = tokens[0].rstrip("*")
        if not name:
            raise FileFormatError(f"{path}:{lineno}: empty parameter name")
        fid = math.nan
        rest = tokens[1:]
        if rest:
            try:
                fid = float(rest[-1])
                rest = rest[:-1]
            except ValueError:
                pass
        latex = " ".join(rest) if rest else name
        out.append((name, latex, fid))
    if not out:
        raise FileFormatError(f"{path}: no parameter names found")
    return out


def _header_names(text: str, n: int) -> list[str] | None:
    """Names from a matrix file's comments: a ``# a b c`` line with ``n`` names, or
    CosmicFish's numbered block ``#    1    name``."""
    numbered: dict[int, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("#"):
            continue
        tokens = s.lstrip("#").split()
        if len(tokens) == 2 and tokens[0].isascii() and tokens[0].isdigit():
            numbered[int(tokens[0])] = tokens[1]
        elif len(tokens) == n and not any(_is_float(t) for t in tokens):
            return tokens
    if sorted(numbered) == list(range(1, n + 1)):
        return [numbered[i] for i in range(1, n + 1)]
    return None


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_text_fisher(
    matrix_path: str | os.PathLike,
    paramnames: str | os.PathLike | None = None,
    canonical: bool = True,
) -> FisherMatrix:
    """Read a text Fisher matrix (IST:F / CosmicFish layout) into a :class:`FisherMatrix`.

    Names come from ``paramnames`` (a ``.paramnames`` file; fiducials from its last column
    when numeric) or, when it is ``None``, from a ``# names`` header line or CosmicFish's
    numbered header in the matrix file. With ``canonical`` other codes' names are mapped to
    fishcast's (the parameter registry's aliases); the renames are recorded in the provenance with both
    files' SHA-256. Units are unknown (``""``).
    """
    matrix_path = Path(matrix_path)
    text = _read_text(matrix_path, "text Fisher matrix")
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        try:
            rows.append([float(t) for t in s.replace(",", " ").split()])
        except ValueError:
            raise FileFormatError(
                f"{matrix_path}:{lineno}: not a row of numbers: {line.strip()[:60]!r}"
            ) from None
    if not rows:
        raise FileFormatError(f"{matrix_path}: no matrix rows found")
    n = len(rows)
    bad = [i + 1 for i, r in enumerate(rows) if len(r) != n]
    if bad:
        raise FileFormatError(
            f"{matrix_path}: not a square matrix: {n} rows, but row(s) {bad[:5]} do not have {n} numbers"
        )
    step: dict = {"operation": "import", "file": str(matrix_path), "sha256": sha256_file(matrix_path)}
    if paramnames is not None:
        entries = read_paramnames(paramnames)
        step["paramnames"] = str(paramnames)
        step["paramnames_sha256"] = sha256_file(paramnames)
        if len(entries) != n:
            raise FileFormatError(
                f"{paramnames}: {len(entries)} parameter names for a {n}x{n} matrix in {matrix_path}"
            )
        names = [e[0] for e in entries]
        fid = [e[2] for e in entries]
    else:
        header = _header_names(text, n)
        if header is None:
            raise FileFormatError(
                f"{matrix_path}: no parameter names: give a .paramnames file "
                "(one name per line, in matrix order)"
            )
        names, fid = header, [math.nan] * n
    if canonical:
        aliases = _params.aliases()
        renamed = {nm: aliases[nm] for nm in names if nm in aliases}
        names = [aliases.get(nm, nm) for nm in names]
        if renamed:
            step["renamed"] = renamed
    return FisherMatrix(np.array(rows), names, fid, None, (step,))


def _fmt(x: float) -> str:
    return repr(float(x))  # shortest repr that round-trips exactly


def _matrix_lines(m: np.ndarray, sep: str = " ") -> list[str]:
    return [sep.join(f"{x:.17e}" for x in row) for row in m]


#: the files of each export format, as suffixes of the base name
EXPORT_SUFFIXES = {"getdist": (".paramnames", ".covmat", ".fisher"), "cosmosis": (".txt",),
                   "text": (".txt", ".paramnames")}


def export_paths(fmt: str, base: str | os.PathLike) -> list[Path]:
    """The files :func:`export` writes for ``fmt`` and ``base``."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    base = Path(base)
    return [base.with_name(base.name + suffix) for suffix in EXPORT_SUFFIXES[fmt]]


def export(fisher: FisherMatrix, fmt: str, base: str | os.PathLike,
           inputs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Write ``fisher`` for another code; returns the paths written (see the module docstring).

    ``base`` is the output path without extension. ``getdist`` needs the covariance, so a
    degenerate matrix raises :class:`~fishcast.errors.DegenerateFisherError` there. Every
    path is checked first (:func:`fishcast.io.atomic.check_output_path`: no special file, none
    of ``inputs``); the files are written all or none (:class:`fishcast.io.atomic.AtomicFiles`):
    a failure leaves none of them behind and the files that were there before untouched.
    """
    from .atomic import AtomicFiles, WriteError, check_output_path

    paths = export_paths(fmt, base)
    base = Path(base)
    if str(base.parent) and not base.parent.is_dir():
        raise WriteError(f"cannot write {base}: the folder {base.parent} does not exist")
    for p in paths:
        check_output_path(p, inputs)
    names = list(fisher.names)
    files = AtomicFiles()
    staged: dict[str, list[str]] = {}

    def out(suffix: str, lines: Sequence[str]) -> None:
        staged[suffix] = list(lines)

    if fmt == "getdist":
        cov = fisher.covariance()
        out(".paramnames", [f"{nm}\t{latex_name(nm)}" for nm in names])
        out(".covmat", ["# " + " ".join(names)] + _matrix_lines(cov))
        out(".fisher", ["# " + " ".join(names)] + _matrix_lines(fisher.matrix))
    elif fmt == "cosmosis":
        cnames = [_cosmosis_name(nm) for nm in names]
        if len(set(cnames)) != len(cnames):
            raise InputError(f"parameters map to the same CosmoSIS name: {cnames}")
        lines = ["#" + "\t".join(cnames), "#sampler=fisher", f"#n_varied={len(names)}",
                 "#fishcast_names=" + " ".join(names), "## START_OF_VALUES_INI"]
        section = None
        for nm, cn, fid in sorted(zip(names, cnames, fisher.fiducial), key=lambda t: t[1]):
            sec, key = cn.split("--", 1)
            if sec != section:
                lines.append(f"## [{sec}]")
                section = sec
            lines.append(f"## {key} = {_fmt(fid) if not math.isnan(fid) else 'unknown'}")
        lines.append("## END_OF_VALUES_INI")
        out(".txt", lines + _matrix_lines(fisher.matrix, sep="\t"))
    else:
        out(".txt", ["# " + " ".join(names)] + _matrix_lines(fisher.matrix))
        out(".paramnames", [
            f"{nm}    {latex_name(nm)}" + (f"    {_fmt(fid)}" if not math.isnan(fid) else "")
            for nm, fid in zip(names, fisher.fiducial)
        ])
    with files:
        for suffix, lines in staged.items():
            files.add_text(base.with_name(base.name + suffix), "\n".join(lines) + "\n")
    return files.paths


def rename(fisher: FisherMatrix, mapping: Mapping[str, str]) -> FisherMatrix:
    """A copy with parameters renamed (``{old: new}``); unknown old names are an error."""
    for old in mapping:
        fisher.index(old)
    names = [mapping.get(nm, nm) for nm in fisher.names]
    return FisherMatrix(fisher.matrix, names, fisher.fiducial, fisher.units,
                        fisher.provenance + ({"operation": "rename", "mapping": dict(mapping)},))
