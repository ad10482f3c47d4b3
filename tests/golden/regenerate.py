"""Regenerate the golden forecast tests/golden/small-wl.h5 from tests/golden/small-wl.yaml.

Run only on purpose (a physics or numerics change that is meant to move the numbers), and
say why in the commit message. `tests/test_golden.py` compares every test run against it.
"""

import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).parent
exe = pathlib.Path(sys.executable).with_name("fishcast")
subprocess.run([str(exe), "run", str(here / "small-wl.yaml"), "-o", str(here / "small-wl.h5"), "--no-cache", "-q"],
               check=True)
print(f"wrote {here / 'small-wl.h5'}")
