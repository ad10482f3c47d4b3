"""The one atomic writer (fishcast/io/atomic.py) and the HDF5 conventions of fishcast/io.

* Every file fishcast writes goes through the writer: the source of fishcast/ and cli/ is
  scanned with ``ast`` for any other way of opening a file for writing (the scanner itself
  is tested on snippets that must and must not be found).
* Issue 14, class 4 (writing): an output never replaces a special file (FIFO, device,
  folder, socket, or a symbolic link to one), never an input of the same command (same path,
  another spelling, a symbolic or a hard link), and a failed write -- one file or several --
  leaves nothing of the new files and the old ones untouched.
* One units convention, old files read as before.
"""

from __future__ import annotations

import ast
import errno
import os
import pathlib
import socket
import stat

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import fishcast
from fishcast.errors import InputError
from fishcast.fisher import FisherMatrix
from fishcast.io import atomic
from fishcast.io.atomic import AtomicFiles, WriteError, atomic_open, check_output_path, write_bytes, write_text

ROOT = pathlib.Path(fishcast.__file__).resolve().parent
PACKAGES = [ROOT, ROOT.parent / "cli"]
WRITER = ROOT / "io" / "atomic.py"

#: writes outside the writer that are known and owned by another part of the house: none
#: (the step and convergence figures of cli/stability.py and cli/simfisher.py are drawn and
#: written by fishcast.plotting.step_plot / convergence_plot through the writer)
PENDING: set[tuple[str, str]] = set()

_WRITE_MODES = set("wax+")
_OS_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}
_NP_WRITERS = {"save", "savez", "savez_compressed", "savetxt"}
_MOVERS = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "copy"), ("shutil", "copy2"),
           ("shutil", "copyfile"), ("shutil", "move"), ("tempfile", "mkstemp"),
           ("tempfile", "NamedTemporaryFile"), ("tempfile", "TemporaryFile")}


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _mode_of(call: ast.Call, position: int) -> str | None:
    for kw in call.keywords:
        if kw.arg == "mode":
            return _const_str(kw.value) if _const_str(kw.value) is not None else "?"
    if len(call.args) > position:
        s = _const_str(call.args[position])
        return s if s is not None else "?"  # a mode computed at run time: assume the worst
    return None


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _names(node) -> set[str]:
    return {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))}


def find_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) of every place in ``source`` that opens or creates a file for writing
    (or moves one into place) without the writer."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = _dotted(func)
        last = name.rsplit(".", 1)[-1]
        what = None
        if name in ("open", "io.open", "builtins.open", "codecs.open"):
            mode = _mode_of(node, 1)
            if mode is not None and (mode == "?" or set(mode) & _WRITE_MODES):
                what = "open"
        elif name == "os.fdopen":
            what = "fdopen"
        elif isinstance(func, ast.Attribute) and last == "open" and name not in ("os.open",):
            mode = _mode_of(node, 0)  # Path.open(mode), zipfile/tarfile.open(..., mode) are caught below
            if mode is not None and (mode == "?" or set(mode) & _WRITE_MODES):
                what = "open"
            elif name.endswith(("zipfile.ZipFile", "tarfile.open")):
                what = "archive"
        if name == "os.open":
            flags = _names(node.args[1]) if len(node.args) > 1 else set()
            unknown = {n for n in flags if n != "os" and not n.startswith("O_")}  # flags computed elsewhere
            if flags & _OS_WRITE_FLAGS or unknown:
                what = "os.open"
        if last in ("write_text", "write_bytes") and isinstance(func, ast.Attribute):
            what = last
        if last == "savefig":
            what = "savefig"
        if last in _NP_WRITERS and name.split(".")[0] in ("np", "numpy"):
            what = f"np.{last}"
        if last == "tofile":
            what = "tofile"
        if name.endswith("File") and name.split(".")[0] == "h5py":
            mode = _mode_of(node, 1)
            if mode is not None and mode != "r":
                what = "h5py.File"
        if tuple(name.split(".")[-2:]) in _MOVERS:
            what = name
        if last in ("ZipFile",) and _mode_of(node, 1) not in (None, "r"):
            what = "zipfile"
        if what:
            found.append((node.lineno, what))
    return found


def _sources():
    for pkg in PACKAGES:
        for path in sorted(pkg.rglob("*.py")):
            if path.resolve() != WRITER:
                yield path, path.relative_to(ROOT.parent).as_posix()


SHOULD_FIND = [
    'open(p, "w")', 'open(p, "wb")', 'open(p, mode="a")', 'open(p, "x")', 'open(p, "r+")', "open(p, m)",
    'io.open(p, "w", encoding="utf-8")', 'pathlib.Path(p).open("w")', 'p.open(mode="wb")', "p.write_text(s)",
    "p.write_bytes(b)", 'h5py.File(p, "w")', 'h5py.File(p, mode="a")', 'h5py.File(p, "r+")', "fig.savefig(p)",
    'plt.savefig("x.png")', "np.save(p, a)", "np.savez(p, a=a)", "numpy.savetxt(p, a)", "a.tofile(p)",
    "os.open(p, os.O_WRONLY | os.O_CREAT)", "os.open(p, O_RDWR)", "os.open(p, flags, 0o666)", "os.replace(a, b)", "os.rename(a, b)",
    "shutil.copyfile(a, b)", "tempfile.mkstemp()", "os.fdopen(fd, 'w')", 'zipfile.ZipFile(p, "w")',
]
SHOULD_NOT_FIND = [
    "open(p)", 'open(p, "rb")', 'open(p, mode="r", encoding="utf-8")', 'h5py.File(p, "r")', "h5py.File(p)",
    "p.read_text()", "np.load(p)", 'os.open(p, os.O_RDONLY)', "os.open(p, os.O_RDONLY | os.O_NONBLOCK)", "s.replace('a', 'b')", "p.exists()",
    "zipfile.ZipFile(p)", "json.dumps(x)",
]


@pytest.mark.parametrize("snippet", SHOULD_FIND)
def test_the_scanner_finds_each_way_of_writing(snippet):
    assert find_writes(snippet), snippet


@pytest.mark.parametrize("snippet", SHOULD_NOT_FIND)
def test_the_scanner_leaves_reading_alone(snippet):
    assert find_writes(snippet) == [], snippet


def test_no_module_outside_the_writer_opens_a_file_for_writing():
    offences = []
    scanned = 0
    for path, rel in _sources():
        scanned += 1
        for line, what in find_writes(path.read_text(encoding="utf-8")):
            if (rel, what) not in PENDING:
                offences.append(f"{rel}:{line}: {what}")
    assert scanned > 30  # fishcast/ and cli/ were read
    assert offences == [], "write through fishcast.io.atomic instead:\n" + "\n".join(offences)


def test_the_writer_itself_is_found_by_the_scanner():
    """The scan would see the writer's own os.open/os.replace: the exemption is needed, and so
    the scan is not blind."""
    whats = {w for _, w in find_writes(WRITER.read_text(encoding="utf-8"))}
    assert {"os.open", "os.replace"} <= whats


# ------------------------------------------------------------------------------ special files
@pytest.fixture
def specials(tmp_path):
    """Special files a careless -o may name, each with the word the refusal must contain."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    to_fifo = tmp_path / "link-to-pipe"
    to_fifo.symlink_to(fifo)
    to_folder = tmp_path / "link-to-folder"
    to_folder.symlink_to(folder)
    to_null = tmp_path / "link-to-null"
    to_null.symlink_to("/dev/null")
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    yield {fifo: "FIFO", folder: "folder", to_fifo: "FIFO", to_folder: "folder", to_null: "character device",
           pathlib.Path("/dev/null"): "character device", sock_path: "socket"}
    sock.close()


def test_check_output_path_refuses_special_files(specials):
    for path, kind in specials.items():
        with pytest.raises(WriteError) as info:
            check_output_path(path)
        msg = str(info.value)
        assert msg.startswith(f"cannot write {path}: it is ") and kind in msg, msg
        assert isinstance(info.value, InputError)  # exit status 2
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("writer", ["open", "bytes", "text", "npz", "h5"])
def test_writers_refuse_a_fifo_without_blocking_and_leave_it(writer, tmp_path):
    """Writing to a FIFO would block until a reader comes (or replace it): refused at once."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for target in (fifo, link):
        with pytest.raises(WriteError, match="FIFO"):
            if writer == "open":
                with atomic_open(target, "wb") as fh:
                    fh.write(b"x")
            elif writer == "bytes":
                write_bytes(target, b"x")
            elif writer == "text":
                write_text(target, "x")
            elif writer == "npz":
                atomic.write_npz(target, {"a": np.arange(3)})
            else:
                with atomic.atomic_h5(target) as f:
                    f["a"] = 1
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "pipe"]


def test_a_fifo_made_while_computing_is_not_replaced(tmp_path):
    """The target is checked again just before the rename."""
    out = tmp_path / "o.txt"
    with pytest.raises(WriteError, match="FIFO"):
        with atomic_open(out, "w") as fh:
            fh.write("result")
            os.mkfifo(out)
    assert stat.S_ISFIFO(os.stat(out).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["o.txt"]


# ------------------------------------------------------------------------------ inputs
def test_check_output_path_refuses_every_spelling_of_an_input(tmp_path):
    src = tmp_path / "in" / "survey.yaml"
    src.parent.mkdir()
    src.write_text("name: x\n")
    (tmp_path / "other").mkdir()
    hard = tmp_path / "hard.yaml"
    os.link(src, hard)
    soft = tmp_path / "soft.yaml"
    soft.symlink_to(src)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        spellings = [src, tmp_path / "other" / ".." / "in" / "survey.yaml", pathlib.Path("in/survey.yaml"),
                     pathlib.Path("./in//survey.yaml"), hard, soft]
        for out in spellings:
            with pytest.raises(WriteError, match="it is an input of this command"):
                check_output_path(out, inputs=[src])
            with pytest.raises(WriteError, match="input"):
                check_output_path(src, inputs=[out])  # and the other way round
        # several inputs: the second one is matched
        with pytest.raises(WriteError, match=r"the same file as .*survey\.yaml"):
            check_output_path(hard, inputs=[tmp_path / "nothing.h5", src])
    finally:
        os.chdir(cwd)
    assert src.read_text() == "name: x\n"
    # not an input: accepted (a new file, an existing one, a link to a regular file)
    elsewhere = tmp_path / "elsewhere.h5"
    assert check_output_path(elsewhere, inputs=[src]) == elsewhere
    elsewhere.write_text("old")
    assert check_output_path(elsewhere, inputs=[src, None]) == elsewhere


def test_library_writers_refuse_their_inputs(tmp_path):
    from fishcast.io import read_fisher, write_fisher_file
    from fishcast.io.exchange import export

    fisher = FisherMatrix(np.diag([4.0, 9.0]), ["a", "b"], [0.3, 0.7])
    first = tmp_path / "first.h5"
    write_fisher_file(first, fisher)
    before = first.read_bytes()
    alias = tmp_path / "alias.h5"
    os.link(first, alias)
    with pytest.raises(WriteError, match="input"):
        write_fisher_file(alias, fisher, inputs=[first])
    (tmp_path / "first.txt").symlink_to(first)  # the export's first.txt would be the input
    with pytest.raises(WriteError, match="input"):
        export(fisher, "text", tmp_path / "first", inputs=[first])
    assert first.read_bytes() == before
    assert not (tmp_path / "first.paramnames").exists()
    read_fisher(first)


# ------------------------------------------------------------------------------ failures
def _old(path: pathlib.Path, text: str = "the previous result\n") -> str:
    path.write_text(text)
    return text


def test_a_failure_inside_the_block_leaves_the_old_file(tmp_path):
    out = tmp_path / "o.csv"
    old = _old(out)
    with pytest.raises(RuntimeError):
        with atomic_open(out, "w") as fh:
            fh.write("half a result")
            raise RuntimeError("the computation broke")
    assert out.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["o.csv"]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO])
def test_a_failing_rename_is_a_clear_error_and_leaves_the_old_file(err, tmp_path, monkeypatch):
    out = tmp_path / "o.bin"
    old = _old(out)

    def replace(src, dst):
        raise OSError(err, os.strerror(err), str(dst))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError) as info:
        write_bytes(out, b"new")
    assert str(info.value) == f"cannot write {out}: {os.strerror(err)}"
    monkeypatch.undo()
    assert out.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["o.bin"]


def test_missing_or_read_only_folder(tmp_path, monkeypatch):
    with pytest.raises(WriteError, match=r"the folder .*nowhere does not exist"):
        write_text(tmp_path / "nowhere" / "o.txt", "x")
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if pathlib.Path(p) == ro and mode & os.W_OK
                        else real_access(p, mode, **kw))
    with pytest.raises(WriteError, match="is not writable"):
        check_output_path(ro / "o.h5")


def test_a_symlink_to_a_regular_file_is_written_through(tmp_path):
    real = tmp_path / "store" / "result.txt"
    real.parent.mkdir()
    _old(real)
    link = tmp_path / "result.txt"
    link.symlink_to(real)
    write_text(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["result.txt"]


def test_temporary_names_are_one_style_and_fit(tmp_path):
    for name in ("o.h5", "x" * 250 + ".h5", "ünïcode.txt"):
        tmp = atomic.temp_path(tmp_path / name)
        assert tmp.parent == tmp_path and atomic.is_temp_name(tmp.name)
        assert tmp.name.startswith(".") and tmp.name.endswith(".tmp") and len(tmp.name.encode()) <= 255
    assert atomic.temp_path(tmp_path / "o.h5") != atomic.temp_path(tmp_path / "o.h5")


def test_file_permissions_follow_the_umask(tmp_path):
    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "o.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "o.txt").st_mode) == 0o644


# ------------------------------------------------------------------------------ several files
def test_several_files_all_or_none_on_success(tmp_path):
    _old(tmp_path / "a.txt")
    with AtomicFiles() as files:
        files.add_text(tmp_path / "a.txt", "A")
        files.add_text(tmp_path / "b.txt", "B")
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "A" and (tmp_path / "b.txt").read_text() == "B"
    assert files.paths == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no backup, no temporary


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_several_files_a_failing_rename_restores_every_old_file(fail_at, tmp_path, monkeypatch):
    names = ["x.paramnames", "x.covmat", "x.fisher"]
    old = {"x.paramnames": _old(tmp_path / "x.paramnames", "old names\n"),
           "x.fisher": _old(tmp_path / "x.fisher", "old fisher\n")}  # no x.covmat before
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        if pathlib.Path(dst).name in names:
            calls.append(dst)
            if len(calls) == fail_at + 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError, match=rf"cannot write .*{names[fail_at]}: .*none of .* was written"):
        with AtomicFiles() as files:
            for n in names:
                files.add_text(tmp_path / n, f"new {n}\n")
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old


def test_several_files_a_failure_in_the_block_writes_none(tmp_path):
    with pytest.raises(ValueError):
        with AtomicFiles() as files:
            files.add_text(tmp_path / "a.txt", "A")
            raise ValueError("no covariance")
    assert list(tmp_path.iterdir()) == []


def test_several_files_one_special_target_writes_none(tmp_path):
    os.mkfifo(tmp_path / "x.covmat")
    with pytest.raises(WriteError, match="FIFO"):
        with AtomicFiles() as files:
            files.add_text(tmp_path / "x.paramnames", "a")
            files.add_text(tmp_path / "x.covmat", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["x.covmat"]


@pytest.mark.parametrize("fmt", ["getdist", "text"])
def test_a_failed_multi_file_export_leaves_none_of_its_files(fmt, tmp_path, monkeypatch):
    from fishcast.io.exchange import export, export_paths

    fisher = FisherMatrix(np.diag([4.0, 9.0]), ["Omega_m", "h"], [0.3, 0.7])
    base = tmp_path / "m"
    paths = export_paths(fmt, base)
    assert len(paths) > 1
    real_replace = os.replace

    def replace(src, dst):
        if pathlib.Path(dst) == paths[-1]:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError, match="none of"):
        export(fisher, fmt, base)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    # a FIFO at one of the names: refused before anything is written
    os.mkfifo(paths[-1])
    with pytest.raises(WriteError, match="FIFO"):
        export(fisher, fmt, base)
    assert [p.name for p in tmp_path.iterdir()] == [paths[-1].name]
    os.unlink(paths[-1])
    assert export(fisher, fmt, base) == paths and all(p.is_file() for p in paths)


def test_figures_are_checked_and_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from fishcast.derivatives import DerivativesConfig, analyse, plan_points, resolve_spec
    from fishcast.plotting import step_plot, triangle_plot

    fisher = FisherMatrix(np.array([[4.0, 1.0], [1.0, 9.0]]), ["a", "b"], [0.3, 0.7])
    src = tmp_path / "in.h5"
    src.write_bytes(b"input")
    os.mkfifo(tmp_path / "pipe.png")
    os.link(src, tmp_path / "same.pdf")  # a hard link to the input, with a figure's extension
    for out, match in ((tmp_path / "pipe.png", "FIFO"), (tmp_path / "folder.pdf", "folder"),
                       (tmp_path / "same.pdf", "input")):
        if match == "folder":
            out.mkdir()
        with pytest.raises(WriteError, match=match):
            triangle_plot([fisher], ["x"], out, inputs=[src])
    # drawn and written through the writer
    seen = []
    real = atomic._open_temp
    monkeypatch.setattr(atomic, "_open_temp", lambda tmp, fd, mode, **kw: seen.append(tmp) or real(tmp, fd, mode, **kw))
    png = tmp_path / "t.png"
    triangle_plot([fisher], ["x"], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and seen and seen[-1].parent == tmp_path

    cfg = DerivativesConfig()
    spec = resolve_spec("p", 1.0, cfg)
    values = plan_points("p", 1.0, spec)
    signals = {v: np.array([np.sin(v), v**2]) for v in values}
    sw = analyse("p", 1.0, spec, signals, signals[1.0] if 1.0 in signals else np.array([np.sin(1.0), 1.0]),
                 lambda d: float(np.linalg.norm(d)), cfg)
    pdf = tmp_path / "steps.pdf"
    step_plot({"p": sw}, pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    with pytest.raises(WriteError, match="FIFO"):
        step_plot({"p": sw}, tmp_path / "pipe.png")


def test_a_fifo_in_the_cache_is_a_kept_failure_not_a_hang(tmp_path, fiducial_cosmo, fast_settings):
    from fishcast.pipeline.cache import Cache

    import dataclasses

    from fishcast.cosmology import point_key

    cache = Cache(tmp_path / "cache")
    key = point_key(fiducial_cosmo.params, fast_settings)  # entries are named by their content
    cache.path(key).parent.mkdir(parents=True)
    os.mkfifo(cache.path(key))
    cache.put(key, fiducial_cosmo, fast_settings)
    assert cache.stats.write_failed == 1 and "FIFO" in cache.stats.write_error
    assert stat.S_ISFIFO(os.stat(cache.path(key)).st_mode)
    other = dataclasses.replace(fiducial_cosmo, params={**fiducial_cosmo.params, "n_s": 0.97})
    key2 = point_key(other.params, fast_settings)
    cache.put(key2, other, fast_settings)
    assert cache.stats.stored == 1 and cache.get(key2) is not None
    assert list((tmp_path / "cache").glob("*/.*.tmp")) == []


# ------------------------------------------------------------------------------ units
def test_units_convention_helpers():
    from fishcast.io.h5util import normalize_unit, quotient

    assert [normalize_unit(u) for u in (None, "1", "(1)", "", "eV", " km/s/Mpc ")] == ["", "", "", "", "eV", "km/s/Mpc"]
    assert quotient("", "eV") == "1/eV" and quotient("1", "eV") == "1/eV"
    assert quotient("sr", "") == "sr" and quotient("", "") == ""
    assert quotient("Mpc/h", "km/s/Mpc") == "(Mpc/h)/(km/s/Mpc)"


def test_read_units_accepts_schema_1_0_and_1_1(tmp_path):
    from fishcast.io.h5util import per_parameter_units, read_units, string_dataset, units_attr

    with h5py.File(tmp_path / "u.h5", "w") as f:
        string_dataset(f, "parameters/units", ["", "eV", "km/s/Mpc"])
        old = {"one": "1", "json": '["1", "eV", "km/s/Mpc"]', "plain": "eV"}
        for name, value in old.items():
            f.create_dataset(f"old/{name}", data=[1.0]).attrs["units"] = value
        f.create_dataset("old/none", data=[1.0])
        units_attr(f.create_dataset("new/dimensionless", data=[1.0]), "")
        units_attr(f.create_dataset("new/ev", data=[1.0]), "eV")
        per_parameter_units(f.create_dataset("new/sigma", data=[1.0, 2.0, 3.0]), "unit_i")
    with h5py.File(tmp_path / "u.h5", "r") as f:
        assert read_units(f["old/one"]) == "" and read_units(f["old/plain"]) == "eV"
        assert read_units(f["old/json"]) == ["", "eV", "km/s/Mpc"] and read_units(f["old/none"]) is None
        assert read_units(f["new/dimensionless"]) == "" and read_units(f["new/ev"]) == "eV"
        assert read_units(f["new/sigma"]) == ["", "eV", "km/s/Mpc"]
        assert f["new/sigma"].attrs["units_rule"] == "unit_i"


@pytest.fixture(scope="module")
def small_forecast(tmp_path_factory, cache_dir):
    """Today's forecast of the golden survey (its CAMB points are shared with test_golden)."""
    from fishcast.cli.main import cli

    golden = pathlib.Path(__file__).parent / "golden"
    out = tmp_path_factory.mktemp("units") / "today.h5"
    res = CliRunner().invoke(cli, ["run", str(golden / "small-wl.yaml"), "-o", str(out), "--cache-dir", str(cache_dir), "-q"])
    assert res.exit_code == 0, res.output
    return out


def test_every_units_attribute_of_a_forecast_follows_the_convention(small_forecast):
    from fishcast.io import SCHEMA_VERSION
    from fishcast.io.h5util import UNITS_RULES, read_units

    seen = {"units": 0, "units_rule": 0}
    problems = []

    def visit(name, obj):
        a = obj.attrs
        if "units" in a:
            seen["units"] += 1
            u = a["units"]
            u = u.decode() if isinstance(u, bytes) else u
            if not isinstance(u, str) or u in ("1", "(1)") or u.startswith("[") or " " in u or "(1)" in u:
                problems.append(f"{name}: units={u!r}")
        if "units_rule" in a:
            seen["units_rule"] += 1
            if a["units_rule"] not in UNITS_RULES:
                problems.append(f"{name}: units_rule={a['units_rule']!r}")
            if read_units(obj) is None:
                problems.append(f"{name}: units_from={a['units_from']!r} does not exist")

    with h5py.File(small_forecast, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        f.visititems(visit)
        assert read_units(f["constraints/marginalized_sigma"]) == [u.decode() for u in f["parameters/units"][()]]
        assert read_units(f["derivatives/Omega_m/deltas"]) == ""
    assert problems == []
    assert seen["units"] > 20 and seen["units_rule"] >= 5


def test_the_golden_file_of_schema_1_0_still_reads(small_forecast):
    """The golden file was written with schema 1.0 ("1" for dimensionless, JSON lists)."""
    from fishcast.io import read_fisher
    from fishcast.io.diagnostics import read_diagnostics
    from fishcast.io.h5util import read_units
    from fishcast.io.sweeps import read_sweeps

    golden = pathlib.Path(__file__).parent / "golden" / "small-wl.h5"
    with h5py.File(golden, "r") as f:
        assert f.attrs["schema_version"] == "1.0"
        sweeps = read_sweeps(f["derivatives"])
        diags = read_diagnostics(f["diagnostics"])
        some = next(iter(sweeps))
        assert f[f"derivatives/{some}/deltas"].attrs["units"] == "1"
        assert read_units(f[f"derivatives/{some}/deltas"]) == ""
    assert "conditioning" in diags and diags["conditioning"].verdict in ("PASS", "WARN", "FAIL")
    fisher, _ = read_fisher(golden)
    today, _ = read_fisher(small_forecast)
    assert fisher.names == today.names and fisher.units == today.units
    assert set(sweeps) == set(fisher.names)


# ------------------------------------------------------------------------------ batch outputs
def test_batch_refuses_special_files_and_inputs_in_its_output_folder_before_computing(tmp_path):
    from fishcast.pipeline.batch import SUMMARY_FILES, load_grid, prepare_output

    recipes = pathlib.Path(__file__).resolve().parent.parent / "recipes"
    grid = load_grid(recipes / "grid-wl-example.yaml")
    first = f"{grid.designs[0].name}.h5"
    cases = {"summary.csv": lambda p: os.mkfifo(p), "fom.png": lambda p: p.mkdir(),
             "summary.h5": lambda p: p.symlink_to("/dev/null"),
             first: lambda p: p.symlink_to(grid.base)}  # a design file that is the base survey
    for name, make in cases.items():
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        make(out / name)
        with pytest.raises(WriteError, match=rf"cannot write {out / name}: it is"):
            prepare_output(grid, out)
    assert set(SUMMARY_FILES) <= set(cases)
    assert prepare_output(grid, tmp_path / "fresh") == tmp_path / "fresh"


def test_one_string_helper_and_no_hdf5_outside_io():
    """Strings are made and read in fishcast/io/h5util.py only (three copies before), and the
    numerics modules keep no HDF5 code (the contract lives in fishcast/io/)."""
    offences = []
    for path, rel in _sources():
        src = path.read_text(encoding="utf-8")
        if rel != "fishcast/io/h5util.py" and "string_dtype" in src:
            offences.append(f"{rel}: string_dtype")
        if not rel.startswith(("fishcast/io/", "cli/")):
            tree = ast.parse(src)
            for node in ast.walk(tree):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(m.split(".")[0] == "h5py" for m in mods):
                    offences.append(f"{rel}:{node.lineno}: imports h5py")
    assert offences == []


def test_batch_summaries_round_trip(tmp_path):
    """summary.h5 and summary.csv of a hand-made batch result (two designs done, one failed)
    read back to the values put in (strings, NaN for failures, grid order)."""
    import csv
    import math
    from types import SimpleNamespace as NS

    from fishcast.io.batch_summary import read_summary_h5, write_summary_csv, write_summary_h5

    designs = [NS(name=f"f_sky={f}", values={"f_sky": f}) for f in (0.1, 0.2, 0.3)]
    grid = NS(name="g", text="name: g\n", sha256="0" * 64, path="grid.yaml", base=pathlib.Path("base.yaml"),
              labels=("f_sky",), designs=designs, config=NS(figure_of_merit=("w0", "wa")))
    done = [NS(name="f_sky=0.1", values={"f_sky": 0.1}, path=tmp_path / "f_sky=0.1.h5", names=("w0", "wa"),
               sigma={"w0": 0.05, "wa": 0.2}, fom=100.0, trust="ok"),
            NS(name="f_sky=0.3", values={"f_sky": 0.3}, path=tmp_path / "f_sky=0.3.h5", names=("w0", "wa", "h"),
               sigma={"w0": 0.03, "wa": 0.1, "h": 0.01}, fom=330.0, trust="warn")]
    failed = [NS(name="f_sky=0.2", values={"f_sky": 0.2}, stage="forecast", reason="CAMB failed\nat a point")]
    res = NS(grid=grid, designs=done, failed=failed, executor="serial", timings={"total": 1.0},
             stats=NS(points=10, cache_hits=3, computed=7, boltzmann_calls=5))
    write_summary_h5(tmp_path / "summary.h5", res)
    write_summary_csv(tmp_path / "summary.csv", res)
    back = read_summary_h5(tmp_path / "summary.h5")
    assert back["designs"]["name"] == [d.name for d in designs]
    assert back["designs"]["status"] == ["ok", "failed", "ok"] and back["designs"]["trust"] == ["ok", "", "warn"]
    assert back["designs"]["reason"] == ["", "forecast: CAMB failed\nat a point", ""]
    assert back["values"]["f_sky"] == [0.1, 0.2, 0.3] and back["fom_parameters"] == ["w0", "wa"]
    assert back["sigma_names"] == ["w0", "wa", "h"]
    np.testing.assert_array_equal(back["sigma"][0, :2], [0.05, 0.2])
    assert math.isnan(back["sigma"][0, 2]) and np.all(np.isnan(back["sigma"][1]))
    assert back["attrs"]["boltzmann_calls"] == 5 and back["failed"]["stage"] == ["forecast"]
    rows = list(csv.reader((tmp_path / "summary.csv").open(encoding="utf-8")))
    assert rows[0] == ["design", "f_sky", "status", "file", "trust", "fom_w0_wa", "sigma_w0", "sigma_wa", "sigma_h", "reason"]
    assert rows[2][-1] == "forecast: CAMB failed | at a point" and rows[3][5] == "330.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.h5"]
