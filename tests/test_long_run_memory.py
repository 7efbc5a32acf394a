"""A long simulation holds flat memory (delayed connection, STDP, ring-buffer monitors).

Runs ``benchmarks/long_run_memory.py`` in fresh processes (RSS is then this simulation's alone),
scaled down to seconds; the documented long run (10^6 steps) is in docs/reliability.rst. The
control with autograd on shows that the measurement sees a per-step leak.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "long_run_memory.py"


def growth_mb(*args: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, check=True
    ).stdout
    return float(re.search(r"largest growth over the warm-up: ([-\d.]+) MB", out).group(1))


def test_twenty_thousand_steps_hold_flat_memory():
    assert growth_mb("--steps", "20000") < 4.0


def test_the_measurement_sees_a_growing_autograd_graph():
    assert growth_mb("--steps", "3000", "--grad") > 20.0
