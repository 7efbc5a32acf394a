"""The single spike-generation function every neuron model goes through.

``spike(x) = H(x)`` with the Heaviside step ``H(x) = 1 if x >= 0 else 0``, applied to the distance
above threshold ``x = v - v_th`` (mV). The forward value is always this exact step; a surrogate
(see :mod:`pysnn.surrogate`) only changes the gradient used by backpropagation.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

SurrogateFn = Callable[[torch.Tensor], torch.Tensor]


def spike(x: torch.Tensor, surrogate: Optional[SurrogateFn] = None) -> torch.Tensor:
    """Return ``H(x)`` as 0/1 values in ``x``'s dtype, shape unchanged.

    Args:
        x: distance above threshold ``v - v_th`` in mV, any shape.
        surrogate: ``None`` for a plain step with no gradient, or a callable whose forward is the
            same step and whose backward is a surrogate derivative.
    """
    if surrogate is None:
        return (x >= 0).to(x.dtype)
    return surrogate(x)
