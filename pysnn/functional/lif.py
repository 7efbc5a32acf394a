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

from typing import NamedTuple, Optional, Tuple, Union

import torch

from pysnn import native
from pysnn.functional.decay import exp_decay
from pysnn.functional.spike import SurrogateFn, reset_membrane, spike
from pysnn.functional.trace import TraceParameters, trace_step

__all__ = [
    "LIFParameters",
    "lif_parameters",
    "lif_step",
    "lif_trace_step",
    "lif_trace_steps",
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


def _fusable(
    x: torch.Tensor,
    v: torch.Tensor,
    trace: torch.Tensor,
    p: LIFParameters,
    theta: Optional[torch.Tensor],
) -> bool:
    """Whether the fused kernel may run: no tensor involved needs a gradient (see
    :func:`pysnn.native.usable` for the other conditions)."""
    if not native.usable(x, v, trace, theta):
        return False
    return not torch.is_grad_enabled() or not (
        p.decay.requires_grad
        or p.leak.requires_grad
        or p.v_reset.requires_grad
        or p.thresh.requires_grad
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
    if _fusable(x, v, trace, p, theta):
        result = native.lif_steps(x, v, refrac, trace, p, tp, theta, out)
        if result is not None:
            return result
    s, v, refrac = lif_step(v, x, refrac, p, theta, surrogate, detach_reset)
    return s, v, refrac, trace_step(trace, s, tp)


def lif_trace_steps(
    x: torch.Tensor,
    v: torch.Tensor,
    refrac: torch.Tensor,
    trace: torch.Tensor,
    p: LIFParameters,
    tp: TraceParameters,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``T`` steps of :func:`lif_trace_step` in one fused call: ``x`` ``(T, B, *shape)``.

    Returns ``(spikes (T, B, *shape), v, refrac, trace)`` (the state after the last step), or
    ``None`` where the fused kernel does not apply (gradients, devices, dtypes): the caller then
    runs the steps one by one.
    """
    x = x.contiguous()
    if not _fusable(x, v, trace, p, None):
        return None
    return native.lif_steps(x, v, refrac, trace, p, tp)


def adaptive_theta_step(
    theta: torch.Tensor, spikes: torch.Tensor, decay: torch.Tensor, theta_plus: torch.Tensor
) -> torch.Tensor:
    r"""Threshold adaptation after a step: :math:`\theta \leftarrow \theta e^{-dt/\tau_\theta} + \theta_+ s`.

    ``theta`` (mV) is the offset above the base threshold, so it relaxes back to 0 and the threshold
    back to its base value. Shapes: ``theta`` and ``spikes`` broadcast together.
    """
    return theta * decay + theta_plus * spikes
