"""The Triton backend: the functional layer's fused operations as Triton kernels, for CUDA
tensors (see :mod:`pysnn.backends`).

=====================  ========================================================================
operation              kernel
=====================  ========================================================================
``lif_steps``          :func:`~pysnn.backends.triton.lif.lif_steps`: ``T`` LIF steps and their
                       trace, one launch; a program keeps a block of neurons in registers
                       through all steps
``lif_backward``       :func:`~pysnn.backends.triton.lif.lif_backward`: their BPTT backward
                       pass, one launch over the steps in reverse, the built-in surrogates'
                       derivatives computed in the kernel
``trace_step``         :func:`~pysnn.backends.triton.trace.trace_step`
``stdp_rows_``         :func:`~pysnn.backends.triton.stdp.stdp_rows_`: one sample's pair-STDP
                       weight update in place, by tiles of weights
=====================  ========================================================================

Each has the signature and results of :mod:`pysnn.native`'s function of the same name and does
the C kernels' floating-point operations in their order. Kernels run with
``enable_fp_fusion=False``, and a product and a sum are fused exactly where torch's ``addcmul``
fuses them on the device, so results follow torch's rounding: under Triton's interpreter the
forward results (spikes, state, traces, weights) equal the torch operations' bit for bit and
the gradients equal torch autograd's through the step loop to rounding (1e-6 relative in
float32, 1e-12 in float64; the sums of the chain rule run in another order). On a GPU, where no
test here runs, the same is expected for the forward operations (sums, products, comparisons
and ``fma``, all correctly rounded), while the backward pass's surrogate derivatives use
Triton's ``exp`` and division, which may differ from torch's CUDA ones by a few units in the
last place.

With ``TRITON_INTERPRET=1`` in the environment before Triton is imported, Triton's interpreter
runs the kernels on CPU tensors (slowly, with numpy): this is how the tests check them without a
GPU. CPU tensors are accepted only then, and the default preference still picks the C backend
first for them (``PYSNN_BACKEND=triton`` selects this one).

Without the ``triton`` package this module imports, :func:`loadable` is ``False`` and the
registry treats the backend as absent.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

try:
    import triton  # noqa: F401  (the kernels' compiler; absent: the backend is absent)
    from triton import knobs as _knobs
except ImportError as _err:  # pragma: no cover - CI installs triton
    _reason: Optional[str] = f"triton cannot be imported: {_err}"
else:
    _reason = None
    from pysnn.backends.triton.generated import triton_kernel
    from pysnn.backends.triton.lif import lif_backward, lif_steps
    from pysnn.backends.triton.stdp import stdp_rows_
    from pysnn.backends.triton.trace import trace_step

    #: whether the kernels were defined under the interpreter (decided when they are decorated)
    _interpreted = bool(_knobs.runtime.interpret)

__all__ = [
    "loadable",
    "available",
    "usable",
    "lif_steps",
    "lif_backward",
    "trace_step",
    "stdp_rows_",
    "triton_kernel",
]

_FLOAT32, _FLOAT64 = torch.float32, torch.float64
_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


def loadable() -> bool:
    """Whether the ``triton`` package imports (else the registry treats the backend as absent)."""
    return _reason is None


def _interpreting() -> bool:
    """Whether CPU tensors may run: ``TRITON_INTERPRET=1`` now, and the kernels were defined
    under the interpreter (Triton reads the variable when it decorates them, at import)."""
    return _reason is None and _interpreted and os.environ.get("TRITON_INTERPRET") == "1"


def available() -> bool:
    """Whether the kernels can run here: Triton imports and a CUDA device is present, or
    Triton's interpreter is on."""
    return loadable() and (_interpreting() or torch.cuda.is_available())


def usable(*tensors: Optional[torch.Tensor], differentiable: bool = False) -> bool:
    """Whether the kernels may run on these floating-point tensors (``None`` entries skipped).

    As :func:`pysnn.native.usable`, on CUDA instead of the CPU: Triton imports, nothing is being
    compiled by ``torch.compile``, the first tensor is not empty, and every tensor is on a CUDA
    device (or the CPU under the interpreter, see :func:`available`), contiguous, of the first
    one's dtype (float32 or float64), and not in need of a gradient (``requires_grad`` with
    grad mode on) unless ``differentiable`` (the caller wraps the kernels in an autograd
    Function with their backward kernel).
    """
    if _reason is not None or _is_compiling():
        return False
    first = tensors[0]
    dtype = first.dtype
    if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or not first.numel():
        return False
    cpu = _interpreting()
    grad = not differentiable and _grad_enabled()
    for t in tensors:
        if t is not None and (
            t.dtype is not dtype
            or not (t.is_cuda or (cpu and t.is_cpu))
            or not t.is_contiguous()
            or (grad and t.requires_grad)
        ):
            return False
    return True
