"""The Triton backend (:mod:`pysnn.backends.triton`) against the torch reference, without a GPU.

Triton's interpreter (``TRITON_INTERPRET=1``, read when Triton is imported) runs the kernels on
CPU tensors, so the checks run in one subprocess (``tests/triton_checks.py``) started with
``TRITON_INTERPRET=1 PYSNN_BACKEND=triton``; each check is reported by its own test here.
Skipped only where the ``triton`` package is not installed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

pytest.importorskip("triton")

from triton_checks import CHECKS  # noqa: E402  (after the skip: the checks' names)

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def results() -> Dict[str, dict]:
    env = dict(os.environ, TRITON_INTERPRET="1", PYSNN_BACKEND="triton")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [sys.executable, str(HERE / "triton_checks.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            found[entry["check"]] = entry
    assert run.returncode == 0 and found, f"the checks did not run:\n{run.stdout}\n{run.stderr}"
    return found


@pytest.mark.parametrize("name", list(CHECKS))
def test_triton_kernels(results: Dict[str, dict], name: str) -> None:
    entry = results.get(name)
    assert entry is not None, f"{name} did not report"
    assert entry["ok"], entry.get("error")


def test_usable_refuses_cpu_tensors_without_the_interpreter() -> None:
    """In this process (no interpreter) CPU tensors are not the backend's."""
    import torch

    from pysnn import backends

    backend = backends.get("triton")
    assert backend is not None and backend.loadable()
    if os.environ.get("TRITON_INTERPRET") != "1":
        assert not backend.usable(torch.zeros(3))
        assert backend.available() == torch.cuda.is_available()


def test_generated_kernels_are_not_triton_on_cpu_without_the_interpreter() -> None:
    """In this process (no interpreter) a CPU neuron's kernel is never written as Triton: C
    where the C backend is preferred, refused with its reason where only Triton is."""
    import torch

    from pysnn import backends
    from pysnn.codegen import generate
    from pysnn.neuron import IzhikevichNeuron

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter is on in this process")
    with backends.prefer("triton"):
        kernel, why = generate(IzhikevichNeuron(5), torch.zeros(2, 5))
    assert kernel is None and "Triton backend does not run CPU tensors" in why
