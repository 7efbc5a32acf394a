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
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from pysnn.functional.spike import SurrogateFn, reset_membrane, spike


class LIFParameters(NamedTuple):
    """Parameters of :func:`lif_step`; tensors broadcastable to the neuron shape.

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


def lif_step(
    v: torch.Tensor,
    x: torch.Tensor,
    refrac: torch.Tensor,
    p: LIFParameters,
    theta: Optional[torch.Tensor] = None,
    surrogate: Optional[SurrogateFn] = None,
    detach_reset: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LIF step; returns ``(spikes, v, refrac)``, each ``(B, *shape)``.

    Args:
        v: membrane potential ``(B, *shape)`` in mV.
        x: input increment ``(B, *shape)`` in mV.
        refrac: remaining refractory steps ``(B, *shape)``, integer.
        p: :class:`LIFParameters`.
        theta: optional threshold offset (mV) added to ``p.thresh``.
        surrogate: optional surrogate for the spike function.
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


def adaptive_theta_step(
    theta: torch.Tensor, spikes: torch.Tensor, decay: torch.Tensor, theta_plus: torch.Tensor
) -> torch.Tensor:
    r"""Threshold adaptation after a step: :math:`\theta \leftarrow \theta e^{-dt/\tau_\theta} + \theta_+ s`.

    ``theta`` (mV) is the offset above the base threshold, so it relaxes back to 0 and the threshold
    back to its base value. Shapes: ``theta`` and ``spikes`` broadcast together.
    """
    return theta * decay + theta_plus * spikes
