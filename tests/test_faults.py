"""Faults mid-run, untrusted files, interruptions (issue 7, parts 2-8): nothing lost,
nothing silent.

* CAMB failing at a point (an exception, NaN or inf in what it returns; simulated by
  monkeypatching the ``camb`` module, the boundary fishcast calls): exit 4 naming the
  parameter, rung and step; every evaluation finished before the failure stays in the cache.
* Output path faults: a folder that does not exist; a read-only folder; a disk that fills
  during the write. The tests run as root, for whom chmod does not make a folder read-only,
  so "read-only" is simulated at the system-call boundary (``os.access``, and the file
  creation and the final rename raising EROFS / EACCES as a read-only mount does), and a
  full disk (a) by a file object that takes N bytes and then raises ENOSPC, returned by
  ``open`` in fishcast.io, and (b) for real, in a subprocess, by RLIMIT_FSIZE (the kernel
  fails the write with EFBIG). In every case: exit 2, a clear message, no temporary file, and a file already
  at the path left byte for byte as it was.
* Reading: show, compare, plot (and stability, export, combine) on truncated files, files
  written by another tool, files with a newer schema_version, damaged datasets: exit 2
  naming the file, never a traceback. Nothing from a file is executed or unpickled.
* YAML: object tags refused, an alias bomb refused in milliseconds with bounded memory.
* Numerical faults in a Fisher matrix: NaN, a non-positive diagonal, a singular block:
  named, not inverted.
* Two processes sharing a cache: whole entries, identical results.
* SIGINT during run and batch: exit 130 promptly, one line saying what was kept, no output
  (SIGTERM, as a batch scheduler sends it: the same, exit 143).
"""

from __future__ import annotations

import errno
import io as _stdio
import os
import pathlib
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fishcast.pipeline.cache import Cache, CacheWarning
from fishcast.cli.main import cli
from fishcast.errors import SurveyError
from fishcast.io import read_fisher

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXE = pathlib.Path(sys.executable).with_name("fishcast")

#: the two-tracer toy with a cosmological parameter free (3 Boltzmann runs: the fiducial and
#: Omega_m +- h; sigma8's points share the fiducial's transfer functions), small CAMB grids
TOY = textwrap.dedent("""\
    name: toy-faults
    cosmology:
      nonlinear_model: none
      accuracy: {n_z: 20, n_k: 100, k_max: 2.0, z_max: 1.5}
    parameters:
      fiducial: {Omega_m: 0.3153, Omega_b: 0.0493, h: 0.6736, n_s: 0.9649, sigma8: 0.8111,
                 b_A_1: 1.0, b_B_1: 2.0}
      free: [Omega_m, sigma8, b_B_1]
    derivatives: {mode: fixed, stencil: 3-point}
    diagnostics: {gaussian_check: false}
    probes:
      counts_in_cells:
        f_sky: 0.1
        z_edges: [0.9, 1.1]
        tracers:
          - {name: A, density: {unit: (h/Mpc)^3, values: [1.0e-3]}, bias: {form: per_shell, values: [1.0]}}
          - {name: B, density: {unit: (h/Mpc)^3, values: [2.0e-4]}, bias: {form: per_shell, values: [2.0]}}
        k_min: 0.02
        k_max: 0.10
        n_k: 3
        n_mu: 4
    """)

#: a slower variant for interruptions: the default step sweep (8 rungs) of three
#: cosmological parameters, ~50 Boltzmann runs
SLOW = TOY.replace("free: [Omega_m, sigma8, b_B_1]", "free: [Omega_m, Omega_b, h, sigma8, b_B_1]") \
          .replace("derivatives: {mode: fixed, stencil: 3-point}", "derivatives: {mode: sweep}")


def invoke(*args, **kw):
    res = CliRunner().invoke(cli, [str(a) for a in args], **kw)
    assert res.exception is None or isinstance(res.exception, SystemExit), \
        f"uncaught {type(res.exception).__name__}: {res.exception}\n{res.output}"
    assert "Traceback" not in res.output
    return res


def entries_whole(cache_root) -> int:
    """Every cache entry loads (none torn), and nothing temporary is left; returns the count."""
    c = Cache(cache_root)
    files = c.entries()
    for p in files:
        assert c.get(p.stem) is not None, f"damaged cache entry {p}"
    assert c.stats.damaged == 0
    assert list(pathlib.Path(cache_root).glob("*/.*.tmp")) == []
    return len(files)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    (d / "toy.yaml").write_text(TOY)
    return d / "toy.yaml"


# ================================================================= 2. CAMB failing at a point
class _BadInterpolator:
    """Wraps CAMB's P(k) interpolator; returns NaN or inf (the fault) instead of P."""

    def __init__(self, inner, value):
        self.inner, self.value = inner, value

    def P(self, z, k, *a, **kw):
        out = np.array(self.inner.P(z, k, *a, **kw), dtype=float)
        out[..., out.shape[-1] // 2] = self.value
        return out


@pytest.mark.parametrize("fault", ["exception", "nan", "inf"])
def test_camb_failing_at_a_point_names_parameter_and_step_and_keeps_the_rest(fault, toy, tmp_path, monkeypatch):
    import camb
    from camb.results import CAMBdata

    from fishcast import cosmology

    spectra = {"n": 0}
    real_spectra = cosmology._spectra

    def counting_spectra(*a, **kw):  # every point finished (its result then goes to the cache)
        res = real_spectra(*a, **kw)
        spectra["n"] += 1
        return res

    monkeypatch.setattr(cosmology, "_spectra", counting_spectra)
    runs = {"n": 0}
    real_transfer = camb.get_transfer_functions
    real_interp = CAMBdata.get_matter_power_interpolator

    def transfer(pars, *a, **kw):  # the 2nd Boltzmann run is the first Omega_m step
        runs["n"] += 1
        if fault == "exception" and runs["n"] == 2:
            raise camb.CAMBError("simulated CAMB failure")
        return real_transfer(pars, *a, **kw)

    def interpolator(self, *a, **kw):
        inner = real_interp(self, *a, **kw)
        if fault != "exception" and runs["n"] == 2:
            return _BadInterpolator(inner, np.nan if fault == "nan" else np.inf)
        return inner

    monkeypatch.setattr(camb, "get_transfer_functions", transfer)
    monkeypatch.setattr(CAMBdata, "get_matter_power_interpolator", interpolator)

    cache_root = tmp_path / "cache"
    out = tmp_path / "out.h5"
    res = invoke("run", toy, "-o", out, "--cache-dir", cache_root, "-q")
    assert res.exit_code == 4, res.output
    msg = res.output
    assert msg.startswith("error: ")
    if fault == "exception":
        assert "CAMB failed at the point" in msg and "simulated CAMB failure" in msg
    else:
        assert f"CAMB returned non-finite pk_lin" in msg
    # the parameter, its value, the rung and the step of the failed point
    assert re.search(r"derivative step Omega_m = 0\.3\d+ \(rung 0, step 0\.00315\d*, central stencil", msg), msg
    assert "derivatives.parameters.Omega_m.h_max" in msg
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    # every point finished before the failure is in the cache, whole
    kept = entries_whole(cache_root)
    assert kept == spectra["n"] >= 3  # the fiducial and sigma8 +- h (one transfer run)
    assert f"kept: {kept} cosmology evaluations of this run kept in the cache at {cache_root}" in msg

    # the rerun (no fault) computes only what is missing
    monkeypatch.setattr(camb, "get_transfer_functions", real_transfer)
    monkeypatch.setattr(CAMBdata, "get_matter_power_interpolator", real_interp)
    spectra["n"] = 0
    res = invoke("run", toy, "-o", out, "--cache-dir", cache_root, "-q")
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        points = int(f.attrs["cosmology_points"])
    assert spectra["n"] == points - kept


def test_a_failure_at_the_fiducial_says_so(toy, tmp_path, monkeypatch):
    import camb

    def transfer(pars, *a, **kw):
        raise camb.CAMBError("simulated failure at the first point")

    monkeypatch.setattr(camb, "get_transfer_functions", transfer)
    res = invoke("run", toy, "-o", tmp_path / "o.h5", "--cache-dir", tmp_path / "c", "-q")
    assert res.exit_code == 4
    assert "the failed point is the fiducial cosmology" in res.output
    assert "kept: 0 cosmology evaluations" in res.output
    assert not (tmp_path / "o.h5").exists()


def test_where_failed_reads_a_worker_message(toy):
    """With --workers the failure comes back from a worker process as text; the parameter and
    step are found from the point it quotes."""
    from fishcast import derivatives as der
    from fishcast.cosmology import describe_point, full_params
    from fishcast.pipeline.plan import plan, point_for, cosmo_part, where_failed
    from fishcast.survey import load_survey

    s = load_survey(toy)
    specs = {n: der.resolve_spec(n, s.fiducial[n], s.config.derivatives) for n in s.free}
    p = plan(s, {n: der.plan_points(n, s.fiducial[n], specs[n]) for n in s.free})
    value = der.plan_points("Omega_m", s.fiducial["Omega_m"], specs["Omega_m"])[1]
    pt = cosmo_part(point_for(s, "Omega_m", value))
    msg = f"ComputationError: CAMB failed at the point {describe_point(full_params(pt))}: boom"
    where = where_failed(s, specs, p, msg)
    assert f"Omega_m = {value:.8g} (rung 0" in where
    assert "(the failed point is not one" in where_failed(s, specs, p, "unrelated message")


# ================================================================= 3. output path faults
def test_missing_output_folder_refused_before_any_computation(toy, tmp_path):
    from fishcast import cosmology

    before = cosmology.boltzmann_calls()
    res = invoke("run", toy, "-o", tmp_path / "nope" / "o.h5", "--no-cache", "-q")
    assert res.exit_code == 2
    assert "the folder" in res.output and "does not exist" in res.output
    assert cosmology.boltzmann_calls() == before
    res = invoke("prior", tmp_path / "x.h5", "--gaussian", "h=0.1", "-o", tmp_path / "nope" / "o.h5")
    assert res.exit_code == 2 and "does not exist" in res.output


def test_output_over_the_survey_file_refused(toy, tmp_path):
    survey = tmp_path / "s.yaml"
    survey.write_text(toy.read_text())
    res = invoke("run", survey, "-o", tmp_path / "." / "s.yaml", "--no-cache", "-q")
    assert res.exit_code == 2 and "is the survey file itself" in res.output
    assert survey.read_text() == toy.read_text()


def test_read_only_folder_refused_before_any_computation(toy, tmp_path, monkeypatch):
    """As root chmod 555 does not stop a write; a read-only folder is what os.access reports."""
    from fishcast import cosmology

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if pathlib.Path(p) == ro and mode & os.W_OK
                        else real_access(p, mode, **kw))
    before = cosmology.boltzmann_calls()
    res = invoke("run", toy, "-o", ro / "o.h5", "--no-cache", "-q")
    assert res.exit_code == 2
    assert f"cannot write {ro / 'o.h5'}: the folder {ro} is not writable" in res.output
    assert cosmology.boltzmann_calls() == before and list(ro.iterdir()) == []


def _previous(path: pathlib.Path) -> bytes:
    data = b"a previous result that must survive\n" * 10
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("where", ["create", "rename"])
def test_read_only_at_write_time_leaves_the_old_file(where, toy, toy_h5, cache_dir, tmp_path, monkeypatch):
    """The folder turns read-only after the check (a remount, another user): creating the
    temporary file, or renaming it into place, fails with EROFS / EACCES."""
    from fishcast.io import atomic

    out = tmp_path / "o.h5"
    old = _previous(out)
    if where == "create":
        def refuse(target):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

        monkeypatch.setattr(atomic, "_create_temp", refuse)
    else:
        def replace(src, dst):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

        monkeypatch.setattr(os, "replace", replace)
    res = invoke("run", toy, "-o", out, "--cache-dir", cache_dir, "-q")
    assert res.exit_code == 2, res.output
    reason = os.strerror(errno.EROFS if where == "create" else errno.EACCES)
    assert f"cannot write {out}: {reason}" in res.output
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]  # no temporary file left


class FillingDisk(_stdio.RawIOBase):
    """A file that accepts ``capacity`` bytes, then fails every write with ENOSPC."""

    def __init__(self, path, capacity: int):
        self.fh = open(path, "w+b")
        self.capacity = capacity

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        return self.fh.seek(pos, whence)

    def tell(self):
        return self.fh.tell()

    def read(self, n=-1):
        return self.fh.read(n)

    def readinto(self, b):
        return self.fh.readinto(b)

    def write(self, b):
        room = self.capacity - self.fh.tell()
        if len(b) > room:
            self.fh.write(bytes(b)[:max(room, 0)])  # what fits reaches the disk, then it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fh.write(b)

    def fileno(self):
        return self.fh.fileno()

    def truncate(self, size=None):
        return self.fh.truncate(size)

    def flush(self):
        if not self.fh.closed:
            self.fh.flush()

    def close(self):
        super().close()
        if not self.fh.closed:
            self.fh.close()


@pytest.mark.parametrize("capacity", [0, 2048, 20_000])
def test_disk_filling_during_the_write(capacity, toy, toy_h5, cache_dir, tmp_path, monkeypatch):
    from fishcast.io import atomic

    opened = []

    def filling_open(tmp, fd, mode, **kw):  # the one writer's temporary file, on a disk that fills
        assert "w" in mode
        os.close(fd)
        opened.append(FillingDisk(tmp, capacity))
        return opened[-1]

    monkeypatch.setattr(atomic, "_open_temp", filling_open)
    out = tmp_path / "o.h5"
    old = _previous(out)
    res = invoke("run", toy, "-o", out, "--cache-dir", cache_dir, "-q")
    assert opened, "the write went through the simulated disk"
    assert res.exit_code == 2, res.output
    assert f"cannot write {out}: {os.strerror(errno.ENOSPC)}" in res.output
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]


def test_file_size_limit_in_a_real_process(toy_h5, tmp_path):
    """The kernel itself refuses the write (RLIMIT_FSIZE: EFBIG, SIGXFSZ ignored) in a
    `fishcast prior` process: exit 2, the old file intact, no temporary file."""
    out = tmp_path / "o.h5"
    old = _previous(out)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([str(EXE), "prior", str(toy_h5), "--gaussian", "sigma8=0.1", "-o", str(out)],
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: cannot write {out}: {os.strerror(errno.EFBIG)}\n"  # nothing else
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]


# ================================================================= 4. reading files
READERS = [
    ["show", "{f}"], ["show", "{f}", "--format", "json"], ["compare", "{f}", "{good}"],
    ["compare", "{good}", "{f}", "--on", "data"], ["plot", "{f}", "{good}", "-o", "{tmp}/p.png"],
    ["stability", "{f}"], ["export", "{f}", "--to", "text", "-o", "{tmp}/e"],
    ["combine", "{f}", "{good}", "-o", "{tmp}/c.h5"],
]


def _read_all(f, good, tmp, expect=(2,), readers=READERS):
    for cmd in readers:
        args = [a.format(f=f, good=good, tmp=tmp) for a in cmd]
        res = invoke(*args)
        assert res.exit_code in expect, (args, res.output)
        if res.exit_code == 2:
            assert res.output.startswith("error: ") and str(f) in res.output, (args, res.output)
    for made in ("p.png", "e.txt", "c.h5"):
        assert not (tmp / made).exists()


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.05, 0.3, 0.6, 0.95, 0.999])
def test_truncated_file(fraction, toy_h5, tmp_path):
    data = toy_h5.read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[:int(len(data) * fraction)])
    _read_all(bad, toy_h5, tmp_path)


def test_file_written_by_another_tool(toy_h5, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:  # an HDF5 file that is not a fishcast file
        f["temperature"] = np.arange(10.0)
        f.attrs["creator"] = "some other code"
    _read_all(other, toy_h5, tmp_path)
    res = invoke("show", other)
    assert "not a fishcast file (no schema_version attribute)" in res.output

    lookalike = tmp_path / "lookalike.h5"  # fishcast's paths, someone else's content
    with h5py.File(lookalike, "w") as f:
        f.attrs["schema_version"] = "1.0"
        f["fisher/matrix"] = np.array([["a", "b"], ["c", "d"]], dtype="S")
        f["parameters/names"] = np.array([1, 2])
        f["derivatives/x"] = np.zeros((2, 2, 2))
        f["diagnostics/conditioning"] = 3
        f.attrs["trust"] = np.arange(3)
    _read_all(lookalike, toy_h5, tmp_path)

    for name in ("pickle.h5", "text.h5", "empty.h5"):  # not HDF5 at all
        p = tmp_path / name
        p.write_bytes({"pickle.h5": pickle.dumps({"a": 1}), "text.h5": b"hello\n", "empty.h5": b""}[name])
        _read_all(p, toy_h5, tmp_path)
        assert "not an HDF5 file" in invoke("show", p).output


def test_newer_schema_version(toy_h5, tmp_path):
    newer = tmp_path / "newer.h5"
    shutil.copy(toy_h5, newer)
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = "2.0"
    _read_all(newer, toy_h5, tmp_path)
    res = invoke("show", newer)
    assert "schema_version 2.0 is newer than this fishcast reads (1.1); upgrade fishcast" in res.output


def test_every_group_and_dataset_damaged_in_turn(toy_h5, tmp_path):
    """Each object of a real file deleted, or replaced by a value of another kind: the readers
    finish normally (0, compare 1, degenerate 3) or refuse the file (2) -- never crash."""
    names = []
    with h5py.File(toy_h5, "r") as f:
        f.visit(names.append)
        datasets = [n for n in names if isinstance(f[n], h5py.Dataset)]
    bad = tmp_path / "bad.h5"
    readers = [READERS[0], READERS[2], READERS[5]]  # show, compare, stability
    cases = [(n, None) for n in names] + [(n, v) for n in datasets for v in ("text", np.zeros((2, 2, 2)))]
    for name, value in cases:
        shutil.copy(toy_h5, bad)
        with h5py.File(bad, "a") as f:
            if name not in f:
                continue
            del f[name]
            if value is not None:
                f[name] = value
        _read_all(bad, toy_h5, tmp_path, expect=(0, 1, 2, 3), readers=readers)
    assert len(cases) > 100


class _Trap:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    marker = None

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_nothing_from_a_file_is_unpickled_or_executed(toy_h5, tmp_path):
    marker = tmp_path / "EXECUTED"
    trap = _Trap()
    trap.marker = str(marker)
    payload = pickle.dumps(trap)

    # a forecast file carrying pickles where fishcast reads text and matrices
    f2 = tmp_path / "pickled.h5"
    shutil.copy(toy_h5, f2)
    with h5py.File(f2, "a") as f:
        f.attrs["provenance"] = np.void(payload)
        f.attrs["trust_reasons"] = np.void(payload)
        del f["constraints/covariance"]
        f["constraints/covariance"] = np.frombuffer(payload, dtype=np.uint8)
    for cmd in (["show", f2], ["stability", f2], ["compare", f2, toy_h5], ["fix", f2, "--params", "b_B_1", "-o", tmp_path / "x.h5"]):
        invoke(*cmd)
    # a pickle disguised as a forecast file
    p = tmp_path / "trap.h5"
    p.write_bytes(payload)
    assert invoke("show", p).exit_code == 2
    # a pickle in the cache (an object array in a .npz): a damaged entry, never loaded
    cache = Cache(tmp_path / "cache")
    key = "ab" + "0" * 62
    cache.path(key).parent.mkdir(parents=True)
    np.savez(cache.path(key), pk_lin=np.array([trap], dtype=object))
    with pytest.warns(CacheWarning, match="not used"):  # said, not silent
        assert cache.get(key) is None and cache.stats.damaged == 1
    # a survey with an object-constructing tag
    survey = tmp_path / "s.yaml"
    survey.write_text(f"name: !!python/object/apply:pathlib.Path.touch [{str(marker)!r}]\n")
    res = invoke("validate", survey)
    assert res.exit_code == 2 and "not allowed" in res.output
    assert not marker.exists()


def test_no_unpickling_or_eval_in_the_sources():
    """The code never unpickles, evals or execs (checked on the sources, so that a later
    change that does is caught here)."""
    pattern = re.compile(r"pickle\.loads?\(|allow_pickle\s*=\s*True|\beval\(|\bexec\(|yaml\.load\(|"
                         r"yaml\.unsafe_load|yaml\.full_load|Loader=yaml\.(Unsafe|Full)?Loader\b|marshal\.loads?\(")
    offenders = []
    for folder in ("fishcast", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []


# ================================================================= 5. YAML safety
@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['echo hacked']", "!!python/name:os.system",
                                 "!!python/object:builtins.dict {}", "!!binary aGVsbG8=", "!custom 1",
                                 "!!set {a, b}", "!!timestamp 2001-12-14"])
def test_object_tags_are_refused(tag, tmp_path):
    survey = tmp_path / "s.yaml"
    survey.write_text(f"name: x\ndescription: {tag}\n")
    res = invoke("validate", survey)
    assert res.exit_code == 2
    assert f"{survey}:2: description: the tag" in res.output and "is not allowed" in res.output


def billion_laughs(levels: int = 10) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines + [f"name: *l{levels - 1}"]) + "\n"


@pytest.mark.alone
def test_alias_bomb_refused_fast_in_bounded_memory(tmp_path):
    """9^10 = 3.5e9 strings if expanded: refused within a second, with < 20 MB allocated."""
    from fishcast.survey import survey_from_text

    text = billion_laughs()
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(SurveyError, match="alias bomb"):
        survey_from_text(text, "bomb.yaml")
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20e6, (elapsed, peak)
    survey = tmp_path / "bomb.yaml"
    survey.write_text(text)
    res = invoke("validate", survey)
    assert res.exit_code == 2 and "alias bomb" in res.output
    res = invoke("validate", ROOT / "recipes" / "two-tracer-toy.yaml", "--set", "description=" + billion_laughs(8).replace("\n", " ").replace("l0: ", "{l0: ").replace("name: *l7", "name: *l7}").replace(" l", ", l"))
    assert res.exit_code == 2 and ("alias bomb" in res.output or "Invalid value for --set" in res.output), res.output


def test_recursive_alias_and_deep_nesting_refused():
    from fishcast.survey import survey_from_text

    for text in ("a: &a [*a]\n", "a: " + "[" * 5000 + "]" * 5000 + "\n", "a: " + "{b: " * 100 + "1" + "}" * 100 + "\n"):
        with pytest.raises(SurveyError, match="nesting deeper than 64"):
            survey_from_text(text, "deep.yaml")


# ================================================================= 6. numerical faults
def _raw_fisher_file(path, matrix, names):
    with h5py.File(path, "w") as f:  # written by hand: fishcast itself refuses to write these
        f.attrs["schema_version"] = "1.0"
        f["fisher/matrix"] = np.asarray(matrix, dtype=float)
        f["parameters/names"] = np.array(names, dtype="S")


@pytest.mark.parametrize("case,matrix,code,expect", [
    ("nan", [[1.0, np.nan, 0], [np.nan, 1, 0], [0, 0, 1]], 2, r"non-finite entries in the rows of: a, b"),
    ("negative diagonal", [[1.0, 0, 0], [0, -2, 0], [0, 0, 1]], 2,
     r"negative diagonal entries \(negative information\) for: b"),
    ("zero diagonal", [[1.0, 0, 0], [0, 0, 0], [0, 0, 1]], 3, r"no information on b"),
    ("singular block", [[1.0, 2, 0], [2, 4, 0], [0, 0, 1]], 3,
     r"eigenvalue 0 of the correlation form, dominated by (a \([+-]0\.71\), b|b \([+-]0\.71\), a) \([+-]0\.71\)"),
])
def test_numerical_faults_are_named_not_inverted(case, matrix, code, expect, tmp_path):
    from fishcast.errors import DegenerateFisherError, InputError
    from fishcast.fisher import FisherMatrix

    path = tmp_path / "m.h5"
    _raw_fisher_file(path, matrix, ["a", "b", "c"])
    for cmd in (["show", path], ["marginalize", path, "--keep", "a", "-o", tmp_path / "o.h5"],
                ["plot", path, "-o", tmp_path / "p.png"]):
        res = invoke(*cmd)
        assert res.exit_code == code, (cmd, res.output)
        assert re.search(expect, res.output), res.output
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "p.png").exists()
    if code == 2:
        with pytest.raises(InputError):
            FisherMatrix(np.array(matrix), ["a", "b", "c"])
    else:  # never a pseudo-inverse: the inversion refuses and names the parameters
        with pytest.raises(DegenerateFisherError) as info:
            FisherMatrix(np.array(matrix), ["a", "b", "c"]).covariance()
        assert "b" in str(info.value)


# ================================================================= 7. concurrency
def test_two_processes_sharing_a_cache(toy, tmp_path):
    cache_root = tmp_path / "shared-cache"
    outs = [tmp_path / "a.h5", tmp_path / "b.h5"]
    procs = [subprocess.Popen([str(EXE), "run", str(toy), "-o", str(o), "--cache-dir", str(cache_root), "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in outs]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    (fa, ma), (fb, mb) = read_fisher(outs[0]), read_fisher(outs[1])
    assert np.array_equal(fa.matrix, fb.matrix)  # bit for bit
    with h5py.File(outs[0], "r") as a, h5py.File(outs[1], "r") as b:
        assert np.array_equal(a["constraints/marginalized_sigma"][()], b["constraints/marginalized_sigma"][()])
        points = int(a.attrs["cosmology_points"])
    assert entries_whole(cache_root) == points  # one whole entry per point, whoever wrote it


# ================================================================= 8. SIGINT
def run_processes(pgid: int) -> list[str]:
    """The processes of the process group ``pgid`` still running (zombies, exited but not yet
    reaped by an init that does not reap, are not counted): ``pid state command``."""
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            left.append(f"{entry} {fields[0]} {cmd}")
    return left


def no_process_left(pgid: int, within: float = 2.0) -> list[str]:
    """:func:`run_processes` of ``pgid`` once it is empty, or after ``within`` seconds (a
    process that closed its pipes may still be on its way out)."""
    deadline = time.monotonic() + within
    while (left := run_processes(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_closed(proc: subprocess.Popen, timeout: float, after_exit: float = 5.0) -> tuple[str, float, float]:
    """Wait for ``proc`` to exit and for its stdout and stderr pipes to reach end-of-file,
    its stdin (a pipe) kept open meanwhile, as a user's ``cat x | fishcast run ...`` or a CI
    runner keeps it. Every process of the run that still holds one of them (a pool worker,
    the forkserver, the resource tracker) keeps the caller waiting: the pipes must close at
    most ``after_exit`` seconds after the exit. Returns (stderr, seconds to the exit, seconds
    from the exit to the end of the pipes); fails the test, killing the group, otherwise."""
    import select

    t0 = time.monotonic()
    err_fd = proc.stderr.fileno()
    open_fds = {proc.stdout.fileno(): b"", err_fd: b""}
    done: dict[int, bytes] = {}
    exited = None
    while open_fds:
        now = time.monotonic()
        if exited is None and proc.poll() is not None:
            exited = now
        limit = (exited + after_exit) if exited is not None else (t0 + timeout)
        if now > limit:
            left = run_processes(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            what = (f"exited {proc.returncode} but its output pipes stayed open > {after_exit} s; "
                    if exited is not None else f"not stopped within {timeout} s; ")
            pytest.fail(what + "processes of the run left: " + "; ".join(left))
        ready, _, _ = select.select(list(open_fds), [], [], 0.05)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                open_fds[fd] += chunk
            else:
                done[fd] = open_fds.pop(fd)
    proc.wait(timeout=max(0.1, timeout - (time.monotonic() - t0)))
    exited = exited if exited is not None else time.monotonic()
    eof = time.monotonic()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    return done[err_fd].decode(), exited - t0, max(0.0, eof - exited)


def _interrupt(args, cache_root, cwd, timeout=20.0, sig=signal.SIGINT):
    """Start fishcast, send ``sig`` to its process group (as Ctrl-C does, or a scheduler's
    SIGTERM) once the first evaluation is in the cache; return (exit status, stderr, seconds
    from the signal to the exit). Its stdin is a pipe kept open (``cat x | fishcast ...``,
    a CI runner, a batch scheduler; and a pytest-xdist worker's own stdin, execnet's
    channel), and its stdout and stderr must reach end-of-file within 5 s of its exit:
    no process of the run (pool worker, forkserver, resource tracker) outlives it; none is
    left in its process group."""
    proc = subprocess.Popen([str(EXE), *map(str, args)], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(pathlib.Path(cache_root).glob("*/*.npz")):
        if proc.poll() is not None:
            err, _, _ = wait_closed(proc, 10.0)
            pytest.fail(f"fishcast ended ({proc.returncode}) before caching anything: {err}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("no evaluation was cached within 2 minutes")
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    err, seconds, _ = wait_closed(proc, timeout)
    assert no_process_left(proc.pid) == []
    return proc.returncode, err, seconds


@pytest.mark.alone
@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_sigint_during_run(sig, code, word, tmp_path):
    """Ctrl-C; and SIGTERM (a batch scheduler at the walltime) is handled the same way."""
    (tmp_path / "slow.yaml").write_text(SLOW)
    cache_root = tmp_path / "cache"
    out = tmp_path / "out.h5"
    status, err, seconds = _interrupt(["run", "slow.yaml", "-o", out, "--cache-dir", cache_root, "-q"],
                                      cache_root, tmp_path, sig=sig)
    assert status == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    kept = entries_whole(cache_root)
    assert lines[0] == (f"{word}: {kept} cosmology evaluation{'s' if kept != 1 else ''} of this run kept in "
                        f"the cache at {cache_root} ({kept} in all; a rerun starts from them); no output written")
    assert kept >= 1 and seconds < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "slow.yaml"]  # no output, no temporary file


@pytest.mark.alone
def test_sigint_during_batch(tmp_path):
    (tmp_path / "slow.yaml").write_text(SLOW)
    (tmp_path / "grid.yaml").write_text("name: g\nsurvey: slow.yaml\naxes:\n  probes.counts_in_cells.f_sky: [0.1, 0.2]\n")
    cache_root = tmp_path / "cache"
    out = tmp_path / "res"
    code, err, seconds = _interrupt(["batch", "grid.yaml", "-o", out, "--cache-dir", cache_root, "-q",
                                     "--workers", "2", "--no-plot"], cache_root, tmp_path)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    kept = entries_whole(cache_root)
    designs = sorted(out.glob("*.h5")) if out.exists() else []
    for d in designs:  # a design file present is a whole one
        read_fisher(d)
    assert lines[0].startswith(f"interrupted: {kept} cosmology evaluation")
    assert f"kept in the cache at {cache_root}" in lines[0]
    assert f"{len(designs)} complete design file" in lines[0] and "no summary written" in lines[0]
    assert kept >= 1 and seconds < 20
    if out.exists():
        assert not (out / "summary.h5").exists() and not (out / "summary.csv").exists()
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file


def test_a_cache_that_cannot_be_written_does_not_stop_the_run(toy, tmp_path, monkeypatch):
    """A full disk under the cache: every evaluation is still used, the output is written,
    and the user is told that nothing was kept."""
    from fishcast.io import atomic

    real_open_temp = atomic._open_temp

    def full_open(tmp, fd, mode, **kw):  # the disk under the cache is full; the output's is not
        if tmp_path / "cache" in tmp.parents:
            os.close(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        return real_open_temp(tmp, fd, mode, **kw)

    monkeypatch.setattr(atomic, "_open_temp", full_open)
    out = tmp_path / "o.h5"
    res = invoke("run", toy, "-o", out, "--cache-dir", tmp_path / "cache", "-q")
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        points = int(f.attrs["cosmology_points"])
    assert (f"warning: {points} cosmology evaluations could not be kept in the cache at {tmp_path / 'cache'} "
            f"({os.strerror(errno.ENOSPC)})") in res.output
    assert Cache(tmp_path / "cache").entries() == [] and list((tmp_path / "cache").glob("*/.*.tmp")) == []
    read_fisher(out)


def test_a_long_list_of_bad_values_is_reported_in_bounded_form(tmp_path):
    """20,000 wrong items are one mistake: the first 50 problems, located, then a count."""
    survey = tmp_path / "s.yaml"
    text = (ROOT / "recipes" / "two-tracer-toy.yaml").read_text().replace(
        "free: [sigma8, b_B_1]", "free: [" + ", ".join(["sigma8"] * 20_000) + "]")
    survey.write_text(text)
    res = invoke("validate", survey)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 51
    assert all(re.match(re.escape(f"{survey}:") + r"\d+: parameters\.free\[\d+\]: sigma8 is listed twice", ln)
               for ln in [lines[0][len("error: "):]] + lines[1:50])
    assert lines[-1] == f"{survey}: ... and {19_999 - 50} more problems"
