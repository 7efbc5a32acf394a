r"""Spike traces.

A trace low-pass filters a spike train :math:`s_t \in \{0, 1\}`. Per step of ``dt`` ms:

.. math::

    x_{t} = x_{t-1} e^{-dt/\tau_{trace}} \qquad \text{(decay)}

then, where :math:`s_t = 1`:

- ``"additive"``: :math:`x_t \leftarrow x_t + a` (all-to-all spike interaction),
- ``"reset"``: :math:`x_t \leftarrow a` (nearest-spike interaction),

with :math:`a` = ``trace_scale``. Graded (non-binary) inputs are added as ``a * s_t`` in additive
mode.
"""

from __future__ import annotations

import torch

TRACE_MODES = ("additive", "reset")


def trace_step(
    trace: torch.Tensor,
    spikes: torch.Tensor,
    decay: torch.Tensor,
    scale: torch.Tensor,
    additive: bool,
) -> torch.Tensor:
    """One trace update; returns the new trace, shape of ``trace``.

    Args:
        trace: previous trace ``(B, *shape)``.
        spikes: spikes of this step ``(B, *shape)``, 0/1.
        decay: ``exp(-dt / tau_trace)``, broadcastable to ``shape``.
        scale: ``trace_scale`` ``a``, broadcastable to ``shape``.
        additive: ``True`` for ``"additive"``, ``False`` for ``"reset"``.
    """
    decayed = trace * decay
    if additive:
        return torch.addcmul(decayed, scale, spikes)
    return torch.where(spikes > 0, scale, decayed)
