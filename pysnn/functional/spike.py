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
            derivative.
    """
    if surrogate is None:
        return (v >= thresh).to(v.dtype)  # same as v - thresh >= 0 for finite floats
    return surrogate(v - thresh)
