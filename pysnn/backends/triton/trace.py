"""One spike-trace update (:func:`pysnn.native.trace_step`'s contract) as a Triton kernel.

``trace <- additive ? trace * decay + scale * x : (x > 0 ? scale : trace * decay)``, the
operations of :func:`pysnn.functional.trace.trace_step` in its order (the sum a fused
multiply-add where torch's ``addcmul`` is one on the device, see
:func:`~pysnn.backends.triton.common.fuses_multiply_add`): equal to it bit for bit under
Triton's interpreter, and expected to be on a GPU (products, sums, comparisons only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import triton
import triton.language as tl

from pysnn.backends.triton.common import BLOCK, LAUNCH, fuses_multiply_add, per_neuron

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from pysnn.functional.trace import TraceParameters

__all__ = ["trace_step"]


@triton.jit
def multiply_add(a, b, c, FMA: tl.constexpr):
    """``a * b + c`` as torch's ``addcmul(c, a, b)`` rounds it: once (``tl.fma``) where it is a
    fused multiply-add on the device (``FMA``, see
    :func:`~pysnn.backends.triton.common.fuses_multiply_add`), else after the product too."""
    if FMA:
        value = tl.fma(a, b, c)
    else:
        value = a * b + c
    return value


@triton.jit
def trace_next(d, scale, x, ADDITIVE: tl.constexpr, FMA: tl.constexpr):
    """The trace after a step from its decayed value ``d`` and the step's spikes ``x``:
    ``addcmul(d, scale, x)`` (rounded once where torch's ``addcmul`` fuses, ``FMA``) in additive
    mode, else ``scale`` where ``x > 0`` and ``d`` elsewhere (:func:`pysnn.functional.trace`)."""
    if ADDITIVE:
        new = multiply_add(scale, x, d, FMA)
    else:
        new = tl.where(x > 0, scale, d)
    return new


@triton.jit
def _trace(
    x_ptr,
    t_ptr,
    out_ptr,
    p_ptr,
    bn,
    n,
    ADDITIVE: tl.constexpr,
    FMA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One trace update of the ``bn = B * n`` elements of one block."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < bn
    i = offs % n
    x = tl.load(x_ptr + offs, mask=mask)
    d = tl.load(t_ptr + offs, mask=mask) * tl.load(p_ptr + i, mask=mask)
    scale = tl.load(p_ptr + n + i, mask=mask)
    new = trace_next(d, scale, x, ADDITIVE, FMA)
    tl.store(out_ptr + offs, new, mask=mask)


def trace_step(
    x: torch.Tensor,
    trace: torch.Tensor,
    trace_params: "TraceParameters",
    out: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """One trace update from the spikes ``x`` ``(B, *shape)`` (0/1, or graded when additive):
    returns the new trace ``(B, *shape)``, in ``out`` (which may be ``trace``) or a new tensor;
    ``trace`` is read. ``None`` (nothing done) where a parameter is not of the trace's dtype and
    device. Check :func:`pysnn.backends.triton.usable` first.
    """
    table = per_neuron(
        (trace_params.decay, trace_params.scale), trace.dtype, trace.shape[1:], trace.device
    )
    if table is None:
        return None
    new = torch.empty_like(trace) if out is None else out
    bn = trace.numel()
    _trace[(triton.cdiv(bn, BLOCK),)](
        x,
        trace,
        new,
        table,
        bn,
        bn // trace.shape[0],
        ADDITIVE=bool(trace_params.additive),
        FMA=fuses_multiply_add(trace.device),
        BLOCK=BLOCK,
        **LAUNCH,
    )
    return new
