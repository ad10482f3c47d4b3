"""A thin CLI (issue 10 part 4; issue 14 class 5): cli/ holds no numerics, every command is
behind the one error handler of the click group, and a Ctrl-C (or SIGTERM) at start-up gives
the interrupt line and exit 130 (143), never a traceback nor click's "Aborted!"."""

from __future__ import annotations

import ast
import errno
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import click
import pytest
from click.testing import CliRunner

from fishcast.cli.errors import Terminated
from fishcast.cli.main import cli
from fishcast.errors import (ComputationError, DegenerateFisherError, FileFormatError, FishcastError, InputError,
                             SurveyError)

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI_DIR = ROOT / "cli"
EXE = pathlib.Path(sys.executable).with_name("fishcast")

#: what the click layer must not import: numerics live in the library
NUMERIC_MODULES = {"numpy", "scipy", "math", "cmath", "statistics"}
#: what start-up must not import (the library is imported inside the commands)
HEAVY_MODULES = {"numpy", "scipy", "h5py", "camb", "pydantic", "yaml", "matplotlib", "dask", "tqdm"}


# ====================================================================== no numerics in cli/
def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_cli_imports_no_numerics():
    files = sorted(CLI_DIR.glob("*.py"))
    assert len(files) >= 9  # main, group, errors, run, ops, stability, batch, cache, simfisher
    bad = [f"{f.name}:{line}: {mod}" for f in files for line, mod in _imports(f)
           if mod.split(".")[0] in NUMERIC_MODULES]
    assert bad == []


def test_the_scan_finds_a_numpy_import(tmp_path):
    """The scan above is not vacuous: it sees imports at any depth, under any alias."""
    p = tmp_path / "x.py"
    p.write_text("def f():\n    import numpy as xp\n    from scipy.linalg import eigh\n    return xp\n")
    assert [m for _, m in _imports(p)] == ["numpy", "scipy.linalg"]


def test_start_up_imports_only_click():
    """Building the group and every command imports none of the library's heavy modules
    (they are imported inside the commands, within the group's error handler)."""
    code = ("import sys; from fishcast.cli.main import cli; cli.list_commands(None); "
            "print(' '.join(sorted(m for m in sys.modules)))")
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "click" in mods and "fishcast.cli.ops" in mods
    assert {m.split(".")[0] for m in mods} & HEAVY_MODULES == set()


def test_one_table_formatter():
    """The CLI's tables are made by fishcast.report.format_table: no hand-made table (a
    rule of dashes, column widths, ljust/rjust) is left in cli/."""
    from fishcast.report import format_table

    for f in CLI_DIR.glob("*.py"):
        text = f.read_text()
        for marker in ('"-" *', "ljust(", "rjust(", "widths"):
            assert marker not in text, f"{f.name}: {marker}"
    t = format_table(["name", "value"], [["a", "1"], ["long name", "22"]])
    assert t.splitlines() == ["name       value", "---------  -----", "a              1", "long name     22"]
    t = format_table(["x", "y"], [["1", ""]], "<", indent="  ")
    assert t.splitlines() == ["  x  y", "  -  -", "  1"]
    with pytest.raises(ValueError):
        format_table(["a", "b"], [["only one"]])


# ====================================================================== the one error handler
def _leaf_commands(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _leaf_commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def _minimal_args(cmd: click.Command) -> list[str]:
    """Arguments that pass click's parsing of ``cmd`` (the callback is replaced in the test)."""
    args: list[str] = []
    for p in cmd.params:
        if isinstance(p, click.Argument):
            args += ["a.h5", "b.h5"] if p.nargs == -1 or p.nargs > 1 else ["a.h5"]
        elif p.required:
            if isinstance(p.type, click.Choice):
                value = p.type.choices[0]
            elif isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                value = "1"
            else:
                value = "a=1"
            args += [p.opts[0], str(value)]
    return args


ALL = list(_leaf_commands(cli))

RAISED = [
    (lambda: InputError("a bad thing in FILE:3: key"), 2, "error: a bad thing in FILE:3: key"),
    (lambda: SurveyError("s.yaml", [(4, "probes.x", "unknown key")]), 2, "error: s.yaml:4: probes.x: unknown key"),
    (lambda: FileFormatError("f.h5: not an HDF5 file"), 2, "error: f.h5: not an HDF5 file"),
    (lambda: DegenerateFisherError("cannot be inverted: b"), 3, "error: cannot be inverted: b"),
    (lambda: ComputationError("CAMB failed at the point x"), 4, "error: CAMB failed at the point x"),
    (lambda: FishcastError("other"), 1, "error: other"),
    (lambda: OSError(errno.EACCES, os.strerror(errno.EACCES), "/some/file"), 2,
     f"error: /some/file: {os.strerror(errno.EACCES)}"),
    (lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 2, f"error: {os.strerror(errno.ENOSPC)}"),
    (lambda: KeyboardInterrupt(), 130, "interrupted: no output written"),
    (lambda: Terminated(), 143, "terminated (SIGTERM): no output written"),
]


def test_every_command_is_listed():
    names = {" ".join(p) for p, _ in ALL}
    assert {"run", "validate", "schema", "show", "stability", "combine", "prior", "fix", "marginalize", "derive",
            "compare", "plot", "export", "import", "batch", "cache info", "cache clear",
            "simfisher", "mock", "convergence"} <= names


@pytest.mark.parametrize("path,cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_maps_errors_and_interrupts(path, cmd, monkeypatch):
    """Whatever a command raises is mapped by the group: FishcastError -> its status and
    message, OSError -> 2 naming the file, Ctrl-C -> 130 and SIGTERM -> 143 with one line."""
    args = [*path, *_minimal_args(cmd)]
    for make, code, message in RAISED:
        def boom(*a, **kw):
            raise make()

        monkeypatch.setattr(cmd, "callback", boom)
        res = CliRunner().invoke(cli, args)
        assert isinstance(res.exception, SystemExit), (args, message, res.exception)
        assert res.exit_code == code, (args, message, res.output)
        assert res.output.strip() == message, (args, res.output)
        assert "Traceback" not in res.output and "Aborted" not in res.output


def test_a_bug_is_not_swallowed(monkeypatch):
    """An exception that is not a fishcast error, a file error or an interrupt is a bug:
    the handler lets it through (with its traceback) instead of hiding it."""
    _, cmd = next((p, c) for p, c in ALL if p == ("show",))

    def boom(*a, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cmd, "callback", boom)
    res = CliRunner().invoke(cli, ["show", "a.h5"])
    assert isinstance(res.exception, ZeroDivisionError)


def test_a_failed_computation_says_what_was_kept(tmp_path, monkeypatch):
    """The state of what was kept travels on the click context (no module global): a
    ComputationError after `track` ends with the `kept:` line of that invocation."""
    from fishcast.cli import group as group_mod
    from fishcast.pipeline.cache import Cache

    _, cmd = next((p, c) for p, c in ALL if p == ("run",))
    cache = Cache(tmp_path / "cache")

    def compute(*a, **kw):
        group_mod.track(cache, str(tmp_path / "o.h5"))
        raise ComputationError("CAMB failed")

    monkeypatch.setattr(cmd, "callback", compute)
    res = CliRunner().invoke(cli, ["run", "s.yaml", "-o", "o.h5"])
    assert res.exit_code == 4
    assert res.output.strip().splitlines() == [
        "error: CAMB failed",
        f"kept: 0 cosmology evaluations of this run kept in the cache at {cache.root} (0 in all; a rerun starts "
        "from them); no output written"]
    # the next invocation starts with a fresh tracker: nothing of the previous one leaks
    res = CliRunner().invoke(cli, ["run", "s.yaml", "-o", "o.h5"])
    assert "kept:" in res.output
    monkeypatch.setattr(cmd, "callback", lambda *a, **kw: (_ for _ in ()).throw(ComputationError("x")))
    res = CliRunner().invoke(cli, ["run", "s.yaml", "-o", "o.h5"])
    assert res.exit_code == 4 and res.output.strip() == "error: x"


@pytest.mark.parametrize("signal_exc,code,word", [(KeyboardInterrupt, 130, "interrupted"),
                                                   (Terminated, 143, "terminated (SIGTERM)")])
def test_an_interrupt_inside_a_native_call_is_an_interrupt(signal_exc, code, word, monkeypatch):
    """A Ctrl-C that lands while ctypes converts the arguments of a native call (CAMB) comes
    out of ctypes as ArgumentError, which the library reports as a failed computation: the
    group still sees the interrupt (exit 130/143), not a CAMB failure (exit 4)."""
    import ctypes

    class Arg:
        @classmethod
        def from_param(cls, value):
            raise signal_exc()

    native = ctypes.CDLL(None).abs
    native.argtypes = [Arg]
    _, cmd = next((p, c) for p, c in ALL if p == ("run",))

    def compute(*a, **kw):
        try:
            native(1)  # as CAMB's wrappers call Fortran
        except Exception as exc:  # as fishcast.cosmology wraps whatever CAMB raises
            assert type(exc) is ctypes.ArgumentError
            raise ComputationError(f"CAMB failed at the point x: {exc}") from exc

    monkeypatch.setattr(cmd, "callback", compute)
    res = CliRunner().invoke(cli, ["run", "s.yaml", "-o", "o.h5"])
    assert res.exit_code == code, res.output
    assert res.output.strip() == f"{word}: no output written"


def test_stability_is_behind_the_handler(tmp_path):
    """`stability` (outside the handler before) on a file that is not HDF5, on a folder, and
    with a --plot path in a missing folder: exit 2, one message, no traceback."""
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    for args in (["stability", str(bad)], ["stability", str(tmp_path)], ["stability", str(tmp_path / "missing.h5")],
                 ["stability", str(bad), "--plot", str(tmp_path / "no" / "such" / "p.pdf")]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.startswith("error: ") and "Traceback" not in res.output


def test_a_closed_pipe_ends_quietly():
    """`fishcast schema | head -1`: the reader went away; no traceback and no error message."""
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([str(EXE), "schema"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert res.returncode == 1 and res.stderr == "", res.stderr


def test_sigterm_handler_is_put_back():
    """The group turns SIGTERM into an exception only while it runs."""
    before = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0
    assert signal.getsignal(signal.SIGTERM) is before


# ====================================================================== Ctrl-C at start-up
#: installed through PYTHONPATH in the child: blocks the import of $SLOW_IMPORT (after
#: touching $SLOW_MARKER) so that the test can signal the process exactly there
SITECUSTOMIZE = textwrap.dedent("""\
    import os, sys, time

    class _Slow:
        def find_spec(self, name, path=None, target=None):
            if name == os.environ.get("SLOW_IMPORT"):
                sys.meta_path.remove(self)
                open(os.environ["SLOW_MARKER"], "w").close()
                time.sleep(60)
            return None

    if os.environ.get("SLOW_IMPORT"):
        sys.meta_path.insert(0, _Slow())
    """)


def _signal_during_import(module, args, tmp_path, sig=signal.SIGINT):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / f"importing-{module}"
    env = dict(os.environ, PYTHONPATH=str(site), SLOW_IMPORT=module, SLOW_MARKER=str(marker))
    proc = subprocess.Popen([str(EXE), *map(str, args)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"finished before importing {module}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{module} was not imported within a minute"
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("not stopped 30 s after the signal")
    return proc.returncode, out, err


@pytest.mark.parametrize("module,args", [
    ("click", ["show", "a.h5"]),                       # before the group exists
    ("fishcast.cli.ops", ["show", "a.h5"]),            # while the commands are registered
    ("numpy", ["show", "a.h5"]),                       # the library, inside a command
    ("fishcast.pipeline.forecast", ["run", "s.yaml", "-o", "o.h5"]),
])
def test_ctrl_c_at_start_up(module, args, tmp_path):
    (tmp_path / "a.h5").write_bytes(b"")
    (tmp_path / "s.yaml").write_text("name: x\n")
    code, out, err = _signal_during_import(module, args, tmp_path)
    assert code == 130, err
    assert err.strip() == "interrupted: no output written", err
    assert "Traceback" not in err and "Aborted" not in err
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("module", ["click", "numpy"])
def test_sigterm_at_start_up(module, tmp_path):
    code, out, err = _signal_during_import(module, ["show", "a.h5"], tmp_path, sig=signal.SIGTERM)
    assert code == 143, err
    assert err.strip() == "terminated (SIGTERM): no output written", err


# ====================================================================== outputs never replace inputs
def test_no_command_writes_over_what_it_reads(tmp_path):
    """The commands pass the files they read to the library's output check (issue 14 class
    4): an output that is one of them, by another spelling or a hard link, is refused with
    exit 2 and the input is left as it was."""
    import numpy as np

    from fishcast import io as fio
    from fishcast.fisher import FisherMatrix

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for p in (a, b):
        fio.write_fisher_file(p, FisherMatrix(np.diag([4.0, 9.0]), ["Omega_m", "sigma8"], [0.3, 0.8]))
    txt = tmp_path / "m.txt"
    txt.write_text("# Omega_m sigma8\n4 0\n0 9\n")
    survey = tmp_path / "s.yaml"
    survey.write_text("name: x\n")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "hard.h5"
    link.hardlink_to(a)
    other = f"{tmp_path}/sub/../a.h5"
    cases = [
        ["prior", a, "--gaussian", "sigma8=0.1", "-o", other],
        ["fix", a, "--params", "sigma8", "-o", link],
        ["marginalize", a, "--keep", "sigma8", "-o", other],
        ["derive", a, "--to", "S8", "-o", link],
        ["combine", a, b, "-o", tmp_path / "." / "b.h5"],
        ["import", txt, "-o", tmp_path / "sub" / ".." / "m.txt"],
        ["simfisher", a, "-o", link],
    ]
    before = {p: p.read_bytes() for p in (a, b, txt)}
    for args in cases:
        res = CliRunner().invoke(cli, [str(x) for x in args])
        assert res.exit_code == 2, (args, res.output)
        assert "input of this command" in res.output and "Traceback" not in res.output, res.output
    assert {p: p.read_bytes() for p in (a, b, txt)} == before
