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


def _pointer_types(step, dtype) -> Dict[str, str]:
    """The Triton pointer type of each pointer argument of ``step``'s generated kernels."""
    import torch

    real = {torch.float32: "*fp32", torch.float64: "*fp64"}[dtype]
    types = {name: real for name in ("x_ptr", "out_ptr", "tr_ptr", "tc_ptr", "gout_ptr", "gx_ptr")}
    for k in range(len(step.states)):
        held = "*i64" if ("state", k) in step.integer else real
        types.update({f"s{k}_ptr": held, f"h{k}_ptr": held, f"gs{k}_ptr": real})
    for k in range(len(step.shared)):
        types[f"p{k}_ptr"] = real
    for k in range(len(step.uniforms)):
        types[f"u{k}_ptr"] = "*i64" if ("uniform", k) in step.integer else real
    return types


def test_generated_kernels_compile_for_a_gpu(tmp_path, monkeypatch) -> None:
    """The generated Triton kernels of the built-in LIF, IF and AdaptiveLIF neurons (a theta
    per sample, and shared: the kernel of per-neuron state) and of a user neuron with an
    ``addcmul`` and an ``int64`` counter (its backward kernel too) compile for an sm_90 GPU,
    to a cubin, without a GPU (the interpreter, which runs them in the checks, does not type
    them as the compiler does: an ``int64`` value carried through the loop, the per-neuron
    tiles), both dtypes; their PTX holds a fused multiply-add exactly where ``FMA`` asks for
    one (``enable_fp_fusion=False``: no other product and sum fused)."""
    import torch
    from triton.backends import backends as compilers

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter is on in this process")
    if "nvidia" not in compilers:
        pytest.skip("Triton's NVIDIA compiler is not installed")
    import triton
    from test_engine import RefractoryLIF
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pysnn import codegen
    from pysnn.backends.triton.common import LAUNCH
    from pysnn.backends.triton.generated import _load, write_triton
    from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, LIFNeuron

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # (not the user's cache)
    target = GPUTarget("cuda", 90, 32)
    for dtype in (torch.float32, torch.float64):
        for neuron in (
            LIFNeuron(5),
            IFNeuron(5),
            AdaptiveLIFNeuron(5),
            AdaptiveLIFNeuron(5, theta_shared=True),
            RefractoryLIF(5),
        ):
            step = codegen._record(neuron.to(dtype), torch.zeros(3, 5, dtype=dtype))
            module = _load(write_triton(step, torch.device("cuda")))
            types = _pointer_types(step, dtype)
            kernels = [module.pysnn_generated]
            if step.differentiable():
                kernels.append(module.pysnn_generated_backward)
            assert (len(kernels) == 2) is isinstance(neuron, RefractoryLIF), type(neuron)
            for kernel in kernels:
                for fma in (False, True):
                    if kernel is not module.pysnn_generated:
                        constants = dict(FMA=fma, BLOCK=256)
                    elif step.shared:
                        constants = dict(TRACE=True, ADDITIVE=True, FMA=fma, ROWS=4, COLS=64)
                    else:
                        constants = dict(HISTORY=True, TRACE=True, ADDITIVE=True, FMA=fma)
                        constants["BLOCK"] = 256
                    signature = {
                        name: (
                            "constexpr"
                            if name in constants
                            else types[name] if name.endswith("_ptr") else "i64"
                        )
                        for name in kernel.arg_names
                    }
                    compiled = triton.compile(
                        ASTSource(kernel, signature, constants), target=target, options=LAUNCH
                    )
                    label = f"{type(neuron).__name__} {dtype} {kernel.__name__} FMA={fma}"
                    assert compiled.asm["cubin"], label
                    assert ("fma.rn" in compiled.asm["ptx"]) is fma, label
