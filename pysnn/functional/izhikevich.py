r"""Izhikevich (2003) neuron.

.. math::

    \dot v = 0.04 v^2 + 5 v + 140 - u + I, \qquad \dot u = a (b v - u)

with ``v`` in mV, time in ms; when :math:`v \ge v_{peak}` (30 mV): :math:`v \leftarrow c`,
:math:`u \leftarrow u + d`. Integrated with forward Euler, ``v`` in two half steps of ``dt/2`` as in
Izhikevich's published code, then ``u`` with the updated ``v``. ``I`` is held constant over the step.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from pysnn.functional.spike import SurrogateFn, reset_membrane, spike


class IzhikevichParameters(NamedTuple):
    """Parameters of :func:`izhikevich_step` (tensors broadcastable to the neuron shape).

    Attributes:
        a: recovery time scale (1/ms). b: sensitivity of ``u`` to ``v``. c: reset potential (mV).
        d: after-spike jump of ``u``. v_peak: spike cutoff (mV). dt: time step (ms).
    """

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor
    v_peak: torch.Tensor
    dt: float


def izhikevich_step(
    v: torch.Tensor,
    u: torch.Tensor,
    current: torch.Tensor,
    p: IzhikevichParameters,
    surrogate: Optional[SurrogateFn] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step; returns ``(spikes, v, u)``, each ``(B, *shape)``. ``current`` is ``I``."""
    half = 0.5 * p.dt
    for _ in range(2):
        v = v + half * (0.04 * v * v + 5.0 * v + 140.0 - u + current)
    u = u + p.dt * p.a * (p.b * v - u)
    s = spike(v, p.v_peak, surrogate)
    v = reset_membrane(v, s, p.c)
    u = u + p.d * s
    return s, v, u
