r"""Integrate-and-fire dynamics: LIF, IF and LIF with adaptive threshold.

One step of ``dt`` ms, in this order (``v`` in mV):

1. leak toward rest with the exact solution of :math:`\tau_v \dot v = -(v - v_{rest})`:
   :math:`v \leftarrow v_{rest} + (v - v_{rest}) e^{-dt/\tau_v}` (IF: no leak, factor 1);
2. input as an instantaneous increment, ignored while refractory:
   :math:`v \leftarrow v + x \cdot [r = 0]` (``x`` in mV);
3. spike: :math:`s = H(v - v_{th})`; with adaptation :math:`v_{th} = v_{th,0} + \theta`;
4. reset and refractoriness: where :math:`s = 1`, :math:`v \leftarrow v_{reset}` and the
   refractory counter :math:`r \leftarrow n_{ref} = \mathrm{round}(t_{ref} / dt)` steps;
   elsewhere :math:`r \leftarrow \max(r - 1, 0)`.

So a neuron driven hard with ``dt = 1`` ms and ``t_ref = 5`` ms spikes at steps 0, 6, 12, ...

:func:`lif_step` is the plain torch step (differentiable with a surrogate).
:func:`lif_trace_step` adds the spike trace and is what the modules call: on the CPU without
autograd it runs one fused C loop (:mod:`pysnn.native`), bit-identical to the torch operations,
which writes the new state into new tensors (the state passed in is never modified, on any path).
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch.autograd.function import once_differentiable

from pysnn import backends, native
from pysnn._sharing import unshared
from pysnn.functional.decay import exp_decay
from pysnn.functional.spike import SurrogateFn, reset_membrane, spike
from pysnn.functional.trace import TraceParameters, trace_step

__all__ = [
    "LIFParameters",
    "lif_parameters",
    "lif_step",
    "fused_lif_trace_step",
    "lif_trace_step",
    "lif_trace_steps",
    "lif_trace_kernel",
    "adaptive_lif_trace_kernel",
    "adaptive_theta_step",
]


class LIFParameters(NamedTuple):
    """Discretised parameters of :func:`lif_step`; tensors broadcastable to the neuron shape.

    Build them from the time constants with :func:`lif_parameters`.

    Attributes:
        decay: leak factor ``d = exp(-dt / tau_v)`` (1 for IF), dimensionless.
        leak: ``v_rest * (1 - d)`` (mV), so the leak is one fused ``v * d + leak``.
        v_rest: resting potential (mV).
        v_reset: reset potential after a spike (mV).
        thresh: firing threshold (mV).
        refrac_steps: refractory period in steps, integer tensor.
    """

    decay: torch.Tensor
    leak: torch.Tensor
    v_rest: torch.Tensor
    v_reset: torch.Tensor
    thresh: torch.Tensor
    refrac_steps: torch.Tensor


def lif_parameters(
    tau_v: torch.Tensor,
    v_rest: torch.Tensor,
    v_reset: torch.Tensor,
    thresh: torch.Tensor,
    refrac: torch.Tensor,
    dt: Union[float, torch.Tensor],
) -> LIFParameters:
    """Discretise LIF constants for a step of ``dt`` ms.

    ``tau_v`` (ms, ``inf`` for no leak), ``v_rest``, ``v_reset``, ``thresh`` (mV), ``refrac``
    (ms, rounded to whole steps). Differentiable in ``tau_v``, ``v_rest``, ``v_reset`` and
    ``thresh`` (so a learned time constant or threshold gets its gradient).
    """
    decay = exp_decay(tau_v, dt)
    leak = v_rest * (1 - decay)
    refrac_steps = torch.round(refrac.detach() / dt).to(torch.int64)
    return LIFParameters(decay, leak, v_rest, v_reset, thresh, refrac_steps)


def lif_step(
    v: torch.Tensor,
    x: torch.Tensor,
    refrac: torch.Tensor,
    p: LIFParameters,
    theta: Optional[torch.Tensor] = None,
    surrogate: Optional[SurrogateFn] = None,
    detach_reset: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LIF step with torch operations; returns ``(spikes, v, refrac)``, each ``(B, *shape)``.

    Args:
        v: membrane potential ``(B, *shape)`` in mV.
        x: input increment ``(B, *shape)`` in mV.
        refrac: remaining refractory steps ``(B, *shape)``, integer.
        p: :class:`LIFParameters`.
        theta: optional threshold offset (mV) added to ``p.thresh``.
        surrogate: optional surrogate for the spike function (see
            :func:`~pysnn.functional.spike.spike`).
        detach_reset: cut the gradient through the spike into the reset (see
            :func:`~pysnn.functional.spike.reset_membrane`).
    """
    v = torch.addcmul(p.leak, v, p.decay)  # v_rest + (v - v_rest) * d
    v = v + x.masked_fill(refrac > 0, 0.0)
    thresh = p.thresh if theta is None else p.thresh + theta
    s = spike(v, thresh, surrogate)
    fired = s > 0
    v = reset_membrane(v, s, p.v_reset, detach_reset, fired)
    refrac = torch.where(fired, p.refrac_steps, (refrac - 1).clamp_min(0))
    return s, v, refrac


def _state_fits(
    shape: torch.Size,
    state: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    theta: Optional[torch.Tensor] = None,
    out: Optional[Tuple[Optional[torch.Tensor], ...]] = None,
) -> bool:
    """Whether the state ``(v, refrac, trace)`` (and ``out``, written in its place) has the
    step's ``shape`` ``(B, *shape)``, contiguous, and ``theta`` that or ``shape[1:]``. The fused
    kernels address them by pointer; otherwise the torch operations run (their broadcasting,
    or their error)."""
    if any(t.shape != shape for t in state):
        return False
    if theta is not None and theta.shape != shape and theta.shape != shape[1:]:
        return False
    return out is None or all(
        o is None or (o.shape == shape and o.dtype is t.dtype and o.is_contiguous())
        for o, t in zip(out, state)
    )


def _fused_backend(
    x: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    p: LIFParameters,
    tp: TraceParameters,
    theta: Optional[torch.Tensor],
    out: Optional[Tuple[Optional[torch.Tensor], ...]] = None,
) -> Optional[Any]:
    """The backend whose ``lif_steps`` may run (:func:`pysnn.backends.select`), or ``None``: no
    backend accepts the tensors, a state does not have the step's shape (:func:`_state_fits`),
    or a constant needs a gradient the kernels do not compute."""
    shape = x.shape if x.dim() == v.dim() else x.shape[1:]
    if not _state_fits(shape, (v, refrac, trace), theta, out):
        return None
    backend = backends.select("lif_steps", x, v, trace, theta)
    if backend is None or (torch.is_grad_enabled() and _constants_need_grad(p, tp)):
        return None
    return backend


def _constants_need_grad(p: LIFParameters, tp: TraceParameters) -> bool:
    """Whether a discretised constant (a learned time constant, threshold, ...) needs a gradient,
    which the fused kernels do not compute."""
    return (
        p.decay.requires_grad
        or p.leak.requires_grad
        or p.v_reset.requires_grad
        or p.thresh.requires_grad
        or tp.decay.requires_grad
        or tp.scale.requires_grad
    )


def lif_trace_step(
    x: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    p: LIFParameters,
    tp: TraceParameters,
    theta: Optional[torch.Tensor] = None,
    surrogate: Optional[SurrogateFn] = None,
    detach_reset: bool = False,
    out: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LIF step and its spike trace; returns ``(spikes, v, refrac, trace)`` after the step.

    The same as :func:`lif_step` followed by :func:`~pysnn.functional.trace.trace_step`, bit for
    bit. Where nothing needs a gradient and the tensors are contiguous float32/float64 CPU tensors,
    one fused loop of :mod:`pysnn.native` does both.

    Args:
        out: optional ``(v, refrac, trace)`` tensors the fused kernel may write the new state into
            (they may be the input state itself: a caller that knows nothing else can see the
            old state saves three allocations). Without ``out`` (and always on the torch path)
            the new state is in new tensors and the inputs are never modified.
    """
    result = fused_lif_trace_step(x, v, refrac, trace, p, tp, theta, out)
    if result is not None:
        return result
    s, v, refrac = lif_step(v, x, refrac, p, theta, surrogate, detach_reset)
    return s, v, refrac, trace_step(trace, s, tp)


def fused_lif_trace_step(
    x: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    p: LIFParameters,
    tp: TraceParameters,
    theta: Optional[torch.Tensor] = None,
    out: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`lif_trace_step` through a backend's fused kernel, or ``None`` where none applies
    (then the caller runs :func:`lif_step` and :func:`~pysnn.functional.trace.trace_step`,
    which give the same values, bit for bit)."""
    backend = _fused_backend(x, v, refrac, trace, p, tp, theta, out)
    if backend is None:
        return None
    return backend.lif_steps(x, v, refrac, trace, p, tp, theta, out)


def lif_trace_kernel(
    p: LIFParameters, tp: TraceParameters, x: torch.Tensor
) -> Optional["native.LIFStepKernel"]:
    """A fused :func:`lif_trace_step` that updates the state in place, for inputs like ``x``.

    Returns ``kernel(x, v, refrac, trace) -> spikes`` (see :class:`pysnn.native.LIFStepKernel`;
    no threshold offset, no gradient, the same values as :func:`lif_trace_step` bit for bit), or
    ``None`` where it does not apply (no fused kernels, a learned constant, another device or
    dtype). For a module that runs many single steps on state nothing else can see: the checks
    of :func:`lif_trace_step` are the caller's, once, instead of once per step.
    """
    if _constants_need_grad(p, tp) or not backends.accepts("c", x):
        return None
    return native.lif_step_kernel(p, tp, x)


def adaptive_lif_trace_kernel(
    p: LIFParameters,
    tp: TraceParameters,
    theta_decay: torch.Tensor,
    theta_plus: torch.Tensor,
    x: torch.Tensor,
    shared: bool,
    update: bool = True,
) -> Optional["native.AdaptiveLIFStepKernel"]:
    """:func:`lif_trace_kernel` with a threshold offset ``theta``, followed by
    :func:`adaptive_theta_step` (with the spikes summed over the batch for a ``shared`` theta of
    shape ``shape``; no update without ``update``), all in place:
    ``kernel(x, v, refrac, trace, theta) -> spikes``, or ``None`` where it does not apply."""
    if (
        _constants_need_grad(p, tp)
        or theta_decay.requires_grad
        or theta_plus.requires_grad
        or not backends.accepts("c", x)
    ):
        return None
    return native.adaptive_lif_step_kernel(p, tp, theta_decay, theta_plus, x, shared, update)


def lif_trace_steps(
    x: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    p: LIFParameters,
    tp: TraceParameters,
    surrogate: Optional[SurrogateFn] = None,
    detach_reset: bool = False,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``T`` steps of :func:`lif_trace_step` in one fused call: ``x`` ``(T, B, *shape)``.

    Returns ``(spikes (T, B, *shape), v, refrac, trace)`` (the state after the last step), or
    ``None`` where no fused kernel applies (devices, dtypes, learned constants): the caller then
    runs the steps one by one.

    Under autograd (``x``, ``v`` or ``trace`` requiring a gradient) with a surrogate that has a
    ``grad(x)`` method giving its derivative (every :class:`~pysnn.surrogate.Surrogate`) and constants that need no gradient, the ``T`` steps run
    as one autograd Function: the fused forward kernel, which also saves per neuron and step the
    voltage before the reset and whether the neuron was refractory (5 bytes in float32, 4 without
    refractoriness), and one fused backward kernel over the ``T`` steps in reverse. Its gradients
    are those of the torch steps (:func:`lif_step` and
    :func:`~pysnn.functional.trace.trace_step`) up to floating-point summation order: the
    surrogate derivative at ``v - thresh``, the reset differentiated as ``(1 - s) v + s v_reset``
    unless ``detach_reset``, no gradient into the input while refractory.
    """
    x = x.contiguous()
    backend = _fused_backend(x, v, refrac, trace, p, tp, None)
    if backend is not None:
        return backend.lif_steps(x, v, refrac, trace, p, tp)
    if (
        not callable(getattr(surrogate, "grad", None))
        or _constants_need_grad(p, tp)
        or not _state_fits(x.shape[1:], (v, refrac, trace))
    ):
        return None
    backend = backends.select("lif_backward", x, v, trace, differentiable=True)
    if backend is None or not callable(getattr(backend, "lif_steps", None)):
        return None
    return _LIFSteps.apply(x, v, trace, refrac, p, tp, surrogate, detach_reset, backend)


def _native_surrogate(surrogate: Any) -> Optional[Tuple[int, float]]:
    """``(code, parameter)`` of a built-in surrogate whose derivative the backward kernel computes
    itself (see :func:`pysnn.native.lif_backward`), or ``None`` (then ``surrogate.grad`` runs)."""
    # the exact class's own code: a subclass may have changed the derivative
    code = type(surrogate).__dict__.get("native_code")
    return None if code is None else (code, surrogate.param)


#: Buffers saved for a backward pass are kept for the next forward of the same shape and dtype
#: (a fresh buffer of many MB costs its page faults again at every call): up to this many
#: elements each, and only once nothing else (no graph kept with ``retain_graph``) holds them.
_POOL_MAX_NUMEL = 1 << 24
_pool: Dict[Tuple[Tuple[int, ...], torch.dtype, torch.device], torch.Tensor] = {}


def _saved_buffer(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (tuple(shape), dtype, device)
    if unshared(_pool, key):
        buffer = _pool.pop(key, None)  # (None if another thread took it meanwhile)
        if buffer is not None:
            return buffer
    return torch.empty(shape, dtype=dtype, device=device)


def _recycle(tensor: Optional[torch.Tensor]) -> None:
    if tensor is not None and tensor.numel() <= _POOL_MAX_NUMEL:
        _pool[(tuple(tensor.shape), tensor.dtype, tensor.device)] = tensor


class _LIFSteps(torch.autograd.Function):
    """``T`` LIF steps with their trace: fused forward and backward kernels (see
    :func:`lif_trace_steps`). Differentiable in ``x``, ``v`` and ``trace``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        v: torch.Tensor,
        trace: torch.Tensor,
        refrac: torch.Tensor,
        p: LIFParameters,
        tp: TraceParameters,
        surrogate: SurrogateFn,
        detach_reset: bool,
        backend: Any,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        v_save = _saved_buffer(x.shape, x.dtype, x.device)
        # never refractory: nothing to mask in the backward pass, nothing to save
        refractory = bool((p.refrac_steps > 0).any())
        r_save = _saved_buffer(x.shape, torch.uint8, x.device) if refractory else None
        result = backend.lif_steps(x, v, refrac, trace, p, tp, save=(v_save, r_save))
        if result is None:
            raise RuntimeError("pysnn: the fused LIF kernel refused parameters it accepted before")
        ctx.save_for_backward(v_save, r_save)
        ctx.constants = (p, tp, surrogate, detach_reset, backend)
        ctx.mark_non_differentiable(result[2])
        return result

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any,
        grad_spikes: torch.Tensor,
        grad_v: torch.Tensor,
        grad_refrac: Optional[torch.Tensor],
        grad_trace: torch.Tensor,
    ) -> Tuple[Optional[torch.Tensor], ...]:
        v_save, r_save = ctx.saved_tensors
        p, tp, surrogate, detach_reset, backend = ctx.constants
        code = _native_surrogate(surrogate)
        if any(grad_spikes.stride()) or grad_spikes.numel() == 0:  # (else one value: as is)
            grad_spikes = grad_spikes.contiguous()
        result = backend.lif_backward(
            grad_spikes,
            surrogate.grad(v_save - p.thresh).contiguous() if code is None else code,
            v_save,
            r_save,
            grad_v.contiguous(),
            grad_trace.contiguous(),
            p,
            tp,
            detach_reset,
        )
        if result is None:
            raise RuntimeError("pysnn: the fused LIF kernel refused parameters it accepted before")
        grad_x, grad_v0, grad_trace0 = result
        _recycle(v_save)  # reused by the next forward once the graph has let it go
        _recycle(r_save)
        return grad_x, grad_v0, grad_trace0, None, None, None, None, None, None


def adaptive_theta_step(
    theta: torch.Tensor, spikes: torch.Tensor, decay: torch.Tensor, theta_plus: torch.Tensor
) -> torch.Tensor:
    r"""Threshold adaptation after a step: :math:`\theta \leftarrow \theta e^{-dt/\tau_\theta} + \theta_+ s`.

    ``theta`` (mV) is the offset above the base threshold, so it relaxes back to 0 and the threshold
    back to its base value. Shapes: ``theta`` and ``spikes`` broadcast together.
    """
    return theta * decay + theta_plus * spikes
