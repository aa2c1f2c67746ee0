"""The README's sweep script, run as a user would run it."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import needs_daemon

pytestmark = needs_daemon

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "examples" / "sweep.py"


def test_the_sweep_script_submits_five_configs_and_prints_the_best(dataset):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(r"best: job #(\d+) \(completed\) lr=([0-9.]+) mAP50=([0-9.]+)\n", out.stdout)
    assert m, out.stdout
    assert float(m.group(2)) in (0.1, 0.03, 0.01, 0.003, 0.001)


def test_the_readmes_show_the_script_that_is_tested():
    script = SCRIPT.read_text().strip()
    for readme in (HERE.parent / "README.md", HERE.parents[2] / "README.md"):
        assert script in readme.read_text(), f"{readme} does not show examples/sweep.py"
