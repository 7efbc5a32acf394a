r"""``T`` LIF steps with their spike trace, and their BPTT backward pass, as Triton kernels.

The contracts are :func:`pysnn.native.lif_steps` and :func:`pysnn.native.lif_backward`. Each
kernel is one launch over all ``T`` steps: a program owns :data:`~.common.BLOCK` elements of the
flattened ``(B, n)`` state, keeps them in registers and loops over the steps (forward) or over
the steps in reverse (backward), so the state is read and written once per call and the input,
spikes and saved values once per step.

The floating-point operations are those of the C kernels (``pysnn/csrc/kernels.c``), in the same
order, and so those of the torch steps (:func:`pysnn.functional.lif.lif_step` followed by
:func:`pysnn.functional.trace.trace_step`): under Triton's interpreter the forward results equal
the torch steps' bit for bit. On a GPU the forward uses only additions, products, one fused
multiply-add where torch's ``addcmul`` fuses (see :func:`~.common.fuses_multiply_add`) and
comparisons, with no other contraction, so it is expected to equal torch's CUDA operations bit
for bit too; the backward pass's surrogate derivatives use Triton's ``exp`` and division, which
on a GPU may differ from torch's by a few units in the last place (gradients within ~1e-6
relative in float32).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple, Union

import torch
import triton
import triton.language as tl

from pysnn.backends.triton.common import BLOCK, LAUNCH, fuses_multiply_add, per_neuron
from pysnn.backends.triton.trace import trace_next

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from pysnn.functional.lif import LIFParameters
    from pysnn.functional.trace import TraceParameters

__all__ = ["lif_steps", "lif_backward"]


@triton.jit
def _lif_forward(
    x_ptr,
    v_ptr,
    r_ptr,
    t_ptr,
    v_out,
    r_out,
    t_out,
    s_ptr,
    vs_ptr,
    rs_ptr,
    theta_ptr,
    p_ptr,
    nref_ptr,
    n_steps,
    bn,
    n,
    theta_bstride,
    HAS_THETA: tl.constexpr,
    SAVE: tl.constexpr,
    SAVE_R: tl.constexpr,
    ADDITIVE: tl.constexpr,
    FMA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``n_steps`` LIF steps of the ``bn = B * n`` elements of one block (see the module)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < bn
    i = offs % n
    v = tl.load(v_ptr + offs, mask=mask)
    r = tl.load(r_ptr + offs, mask=mask)
    tr = tl.load(t_ptr + offs, mask=mask)
    decay = tl.load(p_ptr + i, mask=mask)
    leak = tl.load(p_ptr + n + i, mask=mask)
    v_reset = tl.load(p_ptr + 2 * n + i, mask=mask)
    th = tl.load(p_ptr + 3 * n + i, mask=mask)
    tdecay = tl.load(p_ptr + 4 * n + i, mask=mask)
    tscale = tl.load(p_ptr + 5 * n + i, mask=mask)
    n_ref = tl.load(nref_ptr + i, mask=mask)
    if HAS_THETA:  # th = thresh + theta, per sample (bstride n) or shared (bstride 0)
        th = th + tl.load(theta_ptr + (offs // n) * theta_bstride + i, mask=mask)
    zero = tl.zeros_like(v)
    o = offs  # int64 offsets of step t (no overflow in t * bn)
    for _ in range(n_steps):
        x = tl.load(x_ptr + o, mask=mask)
        if FMA:
            v = tl.fma(v, decay, leak)  # torch.addcmul(leak, v, decay)
        else:
            v = v * decay + leak
        v = v + tl.where(r > 0, zero, x)  # no input while refractory
        fired = v >= th
        s = fired.to(v.dtype)
        if SAVE:
            tl.store(vs_ptr + o, v, mask=mask)
            if SAVE_R:
                tl.store(rs_ptr + o, (r > 0).to(tl.uint8), mask=mask)
        tl.store(s_ptr + o, s, mask=mask)
        v = tl.where(fired, v_reset, v)
        tr = trace_next(tr * tdecay, tscale, s, ADDITIVE, FMA)
        r = tl.where(fired, n_ref, tl.where(r > 1, r - 1, 0))
        o += bn
    tl.store(v_out + offs, v, mask=mask)
    tl.store(r_out + offs, r, mask=mask)
    tl.store(t_out + offs, tr, mask=mask)


@triton.jit
def _surrogate(x, p, half_pi, CODE: tl.constexpr):
    """The surrogate derivative at ``x = v - thresh`` (mV) of ``pysnn.surrogate``'s built-in
    surrogate ``CODE`` with parameter ``p`` (the C kernels' ``surrogate_grad``, same order)."""
    if CODE == 1:  # fast sigmoid, k
        a = p * tl.abs(x) + 1.0
        g = 1.0 / (a * a)
    elif CODE == 2:  # arctan, k
        a = half_pi * p * x
        g = 0.5 * p / (1.0 + a * a)
    elif CODE == 3:  # sigmoid, k
        sig = 1.0 / (1.0 + tl.exp(-p * x))
        g = p * sig * (1.0 - sig)
    elif CODE == 4:  # triangle, w
        a = 1.0 - tl.abs(x) / p
        g = tl.where(a > 0.0, a, 0.0)
    else:  # straight-through, w
        g = tl.where(tl.abs(x) <= p, 1.0, 0.0)
    return g.to(x.dtype)


@triton.jit
def _lif_backward(
    gs_ptr,
    sg_ptr,
    u_ptr,
    rs_ptr,
    gv_ptr,
    gt_ptr,
    gx_ptr,
    gv0_ptr,
    gt0_ptr,
    p_ptr,
    c_ptr,
    n_steps,
    last,
    bn,
    n,
    G_SCALAR: tl.constexpr,
    HAS_SG: tl.constexpr,
    HAS_R: tl.constexpr,
    ADDITIVE: tl.constexpr,
    DETACH: tl.constexpr,
    CODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The backward pass of ``n_steps`` steps for one block, steps in reverse (see the C
    kernel's ``pysnn_lif_backward`` for the recursion)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < bn
    i = offs % n
    gv = tl.load(gv_ptr + offs, mask=mask)
    gt = tl.load(gt_ptr + offs, mask=mask)
    decay = tl.load(p_ptr + i, mask=mask)
    v_reset = tl.load(p_ptr + 2 * n + i, mask=mask)
    th = tl.load(p_ptr + 3 * n + i, mask=mask)
    tdecay = tl.load(p_ptr + 4 * n + i, mask=mask)
    tscale = tl.load(p_ptr + 5 * n + i, mask=mask)
    param = tl.load(c_ptr)  # the surrogate's parameter, in the tensors' dtype
    half_pi = tl.load(c_ptr + 1)
    zero = tl.zeros_like(gv)
    if G_SCALAR:  # one gradient for every spike (e.g. a sum loss)
        g_one = tl.load(gs_ptr)
    o = offs + last  # int64 offsets of the last step, then of each step before it
    for _ in range(n_steps):
        u = tl.load(u_ptr + o, mask=mask)  # the voltage before the reset
        fired = u >= th
        if G_SCALAR:
            gs = g_one + zero
        else:
            gs = tl.load(gs_ptr + o, mask=mask)
        if ADDITIVE:  # the spike enters the trace: trace' = tscale * s + trace * tdecay
            gs = gs + tscale * gt
        if not DETACH:  # the reset as (1 - s) v + s v_reset
            gs = gs + gv * (v_reset - u)
        if HAS_SG:
            sg = tl.load(sg_ptr + o, mask=mask)
        else:
            sg = _surrogate(u - th, param, half_pi, CODE)
        gu = tl.where(fired, zero, gv) + gs * sg
        if HAS_R:  # no input while refractory: no gradient into it
            tl.store(gx_ptr + o, tl.where(tl.load(rs_ptr + o, mask=mask) != 0, zero, gu), mask=mask)
        else:
            tl.store(gx_ptr + o, gu, mask=mask)
        gv = gu * decay
        if ADDITIVE:
            gt = gt * tdecay
        else:  # trace' = s ? tscale : trace * tdecay
            gt = tl.where(fired, zero, gt * tdecay)
        o -= bn
    tl.store(gv0_ptr + offs, gv, mask=mask)
    tl.store(gt0_ptr + offs, gt, mask=mask)


def _parameters(
    params: "LIFParameters", trace_params: "TraceParameters", v: torch.Tensor
) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The float parameters as ``(6, n)`` rows (decay, leak, v_reset, thresh, trace decay,
    trace scale) and the refractory steps ``(n,)`` int64, or ``None`` if one does not fit."""
    shape = v.shape[1:]
    table = per_neuron(
        (
            params.decay,
            params.leak,
            params.v_reset,
            params.thresh,
            trace_params.decay,
            trace_params.scale,
        ),
        v.dtype,
        shape,
        v.device,
    )
    n_ref = per_neuron((params.refrac_steps,), torch.int64, shape, v.device)
    if table is None or n_ref is None:
        return None
    return table, n_ref


def lif_steps(
    x: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    params: "LIFParameters",
    trace_params: "TraceParameters",
    theta: Optional[torch.Tensor] = None,
    out: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
    save: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``T`` fused LIF steps with their trace update; returns new ``(spikes, v, refrac, trace)``.

    The contract of :func:`pysnn.native.lif_steps`: ``x`` ``(T, B, *shape)`` or one step
    ``(B, *shape)`` (mV); the state ``v`` (mV), ``refrac`` (int64, steps), ``trace``
    ``(B, *shape)`` read only, the new state in new tensors or in ``out`` (which may alias the
    state); ``theta`` ``None``, shared ``shape`` or per sample ``(B, *shape)`` (mV); ``save``
    ``(v_save, r_save)`` shaped like ``x`` (``x``'s dtype and ``torch.uint8``; ``r_save`` may be
    ``None``) receives the voltage before each reset and the refractory mask for
    :func:`lif_backward`. Check :func:`pysnn.backends.triton.usable` first. Returns ``None``
    (nothing done) where a parameter is not of the state's dtype and device or ``refrac`` is not
    a contiguous int64 tensor there.
    """
    if refrac.dtype != torch.int64 or not refrac.is_contiguous() or refrac.device != v.device:
        return None
    found = _parameters(params, trace_params, v)
    if found is None:
        return None
    table, n_ref = found
    spikes = torch.empty_like(x)
    v_new, r_new, t_new = (None, None, None) if out is None else out
    v_new = torch.empty_like(v) if v_new is None else v_new
    r_new = torch.empty_like(refrac) if r_new is None else r_new
    t_new = torch.empty_like(trace) if t_new is None else t_new
    bn = v.numel()
    n = bn // v.shape[0]
    v_save, r_save = (None, None) if save is None else save
    _lif_forward[(triton.cdiv(bn, BLOCK),)](
        x,
        v,
        refrac,
        trace,
        v_new,
        r_new,
        t_new,
        spikes,
        v_save,
        r_save,
        theta,
        table,
        n_ref,
        x.numel() // bn,
        bn,
        n,
        0 if theta is None or theta.dim() != v.dim() else n,  # shared theta: stride 0
        HAS_THETA=theta is not None,
        SAVE=v_save is not None,
        SAVE_R=r_save is not None,
        ADDITIVE=bool(trace_params.additive),
        FMA=fuses_multiply_add(v.device),
        BLOCK=BLOCK,
        **LAUNCH,
    )
    return spikes, v_new, r_new, t_new


def lif_backward(
    grad_spikes: torch.Tensor,
    surrogate_grad: Union[torch.Tensor, Tuple[int, float]],
    v_save: torch.Tensor,
    r_save: Optional[torch.Tensor],
    grad_v: torch.Tensor,
    grad_trace: torch.Tensor,
    params: "LIFParameters",
    trace_params: "TraceParameters",
    detach_reset: bool,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Backward pass of :func:`lif_steps` (called with ``save``): ``(grad_x, grad_v0,
    grad_trace0)``, the gradients with respect to the input ``(T, B, *shape)`` and to ``v`` and
    ``trace`` before the first step ``(B, *shape)``, or ``None`` where a parameter does not fit.

    The contract of :func:`pysnn.native.lif_backward`: ``grad_spikes`` ``(T, B, *shape)``
    contiguous or one value expanded (all strides 0); ``surrogate_grad`` the surrogate
    derivative at ``v_save - thresh`` ``(T, B, *shape)`` or ``(code, parameter)`` of a built-in
    surrogate (1 fast sigmoid, 2 arctan, 3 sigmoid: ``k`` in 1/mV; 4 triangle, 5
    straight-through: ``w`` in mV), computed inside the kernel; ``v_save`` (mV), ``r_save``
    (uint8 or ``None``) from :func:`lif_steps`; ``grad_v``, ``grad_trace`` ``(B, *shape)`` the
    gradients after the last step; ``detach_reset``: no gradient through the spike into the
    reset. All contiguous, on one device, of one dtype.
    """
    found = _parameters(params, trace_params, grad_v)
    if found is None:
        return None
    table = found[0]
    f = v_save.dtype
    grad_x = torch.empty_like(v_save)
    grad_v0, grad_trace0 = torch.empty_like(grad_v), torch.empty_like(grad_trace)
    bn = grad_v.numel()
    scalar = grad_spikes.numel() > 0 and not any(grad_spikes.stride())
    tensor_grad = isinstance(surrogate_grad, torch.Tensor)
    code, param = (0, 0.0) if tensor_grad else surrogate_grad
    # the parameter and pi / 2 rounded to the dtype as the C kernels round them, (T)(double)
    constants = torch.tensor([param, 0.5 * 3.14159265358979323846], dtype=f, device=v_save.device)
    _lif_backward[(triton.cdiv(bn, BLOCK),)](
        grad_spikes,
        surrogate_grad if tensor_grad else None,
        v_save,
        r_save,
        grad_v,
        grad_trace,
        grad_x,
        grad_v0,
        grad_trace0,
        table,
        constants,
        v_save.numel() // bn,
        v_save.numel() - bn,  # the offset of the last step
        bn,
        bn // grad_v.shape[0],
        G_SCALAR=scalar,
        HAS_SG=tensor_grad,
        HAS_R=r_save is not None,
        ADDITIVE=bool(trace_params.additive),
        DETACH=bool(detach_reset),
        CODE=int(code),
        BLOCK=BLOCK,
        **LAUNCH,
    )
    return grad_x, grad_v0, grad_trace0
