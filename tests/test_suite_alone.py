"""The suite's own machinery (tests/conftest.py): under pytest-xdist a test marked ``alone``
runs while no other worker runs a test. Shown on a throw-away suite of sleeping tests, run
with two workers in a subprocess with this conftest: the interval of the ``alone`` test
overlaps no other test's (without the lock, tests of the other file overlap it: checked when
this was written)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

_A = textwrap.dedent("""\
    import json, os, time
    import pytest

    def record(name, t0):
        with open(os.environ["ALONE_LOG"], "a") as fh:
            fh.write(json.dumps([name, t0, time.time()]) + "\\n")

    @pytest.mark.alone
    def test_alone():
        t0 = time.time(); time.sleep(1.0); record("alone", t0)

    @pytest.mark.parametrize("i", range(4))
    def test_a(i):
        t0 = time.time(); time.sleep(0.3); record(f"a{i}", t0)
    """)
_B = textwrap.dedent("""\
    import time
    import pytest
    from .test_a import record

    @pytest.mark.parametrize("i", range(8))
    def test_b(i):
        t0 = time.time(); time.sleep(0.3); record(f"b{i}", t0)
    """)


def test_a_test_marked_alone_overlaps_no_other_test(tmp_path):
    suite = tmp_path / "suite" / "tests"
    suite.mkdir(parents=True)
    shutil.copy(pathlib.Path(__file__).with_name("conftest.py"), suite / "conftest.py")
    (suite / "__init__.py").write_text("")
    (suite / "test_a.py").write_text(_A)
    (suite / "test_b.py").write_text(_B)
    log = tmp_path / "log.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "FISHCAST_"))}
    env["ALONE_LOG"] = str(log)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          "--dist", "loadfile", "--basetemp", str(tmp_path / "base"), "tests"],
                         cwd=suite.parent, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "13 passed" in res.stdout, res.stdout[-2000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 13
    (alone,) = [r for r in rows if r[0] == "alone"]
    overlapping = [r[0] for r in rows if r[0] != "alone" and r[1] < alone[2] and r[2] > alone[1]]
    assert overlapping == []
