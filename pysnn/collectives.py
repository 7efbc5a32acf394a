"""Collectives that modules use (not the distributed set-up, see :mod:`pysnn.distributed`).

A learning rule with a ``process_group`` reduces its update over the ranks
(:func:`all_reduce_update`); an adaptive neuron with a shared threshold reduces its spike counts
(:func:`all_reduce_sum`). These sit at the bottom of the package, below the modules that call
them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_sum", "all_reduce_update"]

ProcessGroup = Any  # torch.distributed.ProcessGroup, or None for the default group


def all_reduce_sum(value: Tensor, group: ProcessGroup = None) -> Tensor:
    """The sum of ``value`` over the ranks of ``group`` (a new tensor; ``value`` is unchanged)."""
    total = value.clone()
    dist.all_reduce(total, group=group)
    return total


def all_reduce_update(dw: Tensor, batch: int, mean: bool, group: ProcessGroup = None) -> Tensor:
    r"""Sum a learning rule's batch-summed weight change over ``group``.

    Args:
        dw: this rank's update, summed (not averaged) over its ``batch`` samples.
        batch: this rank's batch size :math:`B_r`.
        mean: divide the total by the global batch size :math:`\sum_r B_r` (reduced in the same
            collective, so the ranks' batch sizes may differ).

    Returns:
        :math:`\sum_r \Delta w_r` (``mean=False``) or
        :math:`\sum_r \Delta w_r / \sum_r B_r`, the same tensor on every rank.
    """
    if not mean:
        return all_reduce_sum(dw, group)
    packed = torch.cat((dw.reshape(-1), dw.new_full((1,), float(batch))))
    dist.all_reduce(packed, group=group)
    return (packed[:-1] / packed[-1]).view(dw.shape)
