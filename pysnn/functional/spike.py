"""The single spike-generation function every neuron model goes through.

``spike(v, v_th) = H(v - v_th)`` with the Heaviside step ``H(x) = 1 if x >= 0 else 0``, ``v`` and
``v_th`` in mV. The forward value is always this exact step; a surrogate
(see :mod:`pysnn.surrogate`) only changes the gradient used by backpropagation.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

SurrogateFn = Callable[[torch.Tensor], torch.Tensor]


def spike(
    v: torch.Tensor, thresh: torch.Tensor, surrogate: Optional[SurrogateFn] = None
) -> torch.Tensor:
    """Return ``H(v - thresh)`` as 0/1 values in ``v``'s dtype, shape of ``v``.

    Args:
        v: membrane potential (mV), any shape.
        thresh: threshold (mV), broadcastable to ``v``.
        surrogate: ``None`` for a plain step with no gradient, or a callable applied to
            ``v - thresh`` whose forward is the same step and whose backward is a surrogate
            derivative (called only when autograd records a gradient through ``v`` or
            ``thresh``; otherwise the plain step gives the same values).
    """
    if surrogate is None or not (
        torch.is_grad_enabled()
        and (v.requires_grad or (isinstance(thresh, torch.Tensor) and thresh.requires_grad))
    ):
        # the surrogate's forward is this same step: skip its autograd Function when no
        # gradient is recorded
        return (v >= thresh).to(v.dtype)  # same as v - thresh >= 0 for finite floats
    return surrogate(v - thresh)


def reset_membrane(
    v: torch.Tensor,
    spikes: torch.Tensor,
    v_reset: torch.Tensor,
    detach: bool = False,
    fired: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Reset to ``v_reset`` where ``spikes`` is 1, with an exact forward value.

    Forward: ``torch.where(spikes > 0, v_reset, v)``, bit-exact. Backward: the gradient of

    .. math:: v' = (1 - s)\, v + s\, v_{reset}

    i.e. :math:`\partial v'/\partial v = 1 - s` and :math:`\partial v'/\partial s = v_{reset} - v`,
    so the surrogate gradient of the spike flows into the reset. It adds
    ``(s - s.detach()) * (v_reset - v).detach()``, whose value is exactly 0 and whose gradient
    w.r.t. ``s`` is ``v_reset - v``. With ``detach=True`` (or when ``spikes`` needs no gradient)
    only the ``where`` remains: no gradient through the spike into the reset.

    Args:
        v: membrane potential before the reset (mV), ``(B, *shape)``.
        spikes: 0/1 spikes ``(B, *shape)`` (from a surrogate spike function for a gradient).
        v_reset: reset potential (mV), broadcastable to ``v``.
        detach: detach the reset from the graph.
        fired: ``spikes > 0`` if the caller has it already (saves one operation).
    """
    out = torch.where(spikes > 0 if fired is None else fired, v_reset, v)
    if detach or not spikes.requires_grad:
        return out
    return out + (spikes - spikes.detach()) * (v_reset - v).detach()
