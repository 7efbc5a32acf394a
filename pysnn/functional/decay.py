r"""Exact decay factors of first-order linear dynamics.

A quantity with :math:`\tau \dot x = -x` decays over one step of ``dt`` ms by exactly

.. math:: x(t + dt) = x(t)\, e^{-dt/\tau}

(:math:`\tau = \infty`: factor 1, no decay). Every time constant of pysnn (membrane, traces,
adaptation) is discretised with this factor, not with an Euler step.
"""

from __future__ import annotations

from typing import Union

import torch

__all__ = ["exp_decay"]


def exp_decay(tau: torch.Tensor, dt: Union[float, torch.Tensor]) -> torch.Tensor:
    """``exp(-dt / tau)`` for a time constant ``tau`` (ms, > 0, may be ``inf``) and step ``dt`` (ms).

    Differentiable in ``tau`` (a learned time constant gets its gradient). Shape of ``tau``.
    """
    return torch.exp(-dt / tau)
