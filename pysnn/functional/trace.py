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

from typing import NamedTuple, Optional, Union

import torch

from pysnn import backends, native
from pysnn.functional.decay import exp_decay

TRACE_MODES = ("additive", "reset")

__all__ = ["TRACE_MODES", "TraceParameters", "trace_kernel", "trace_parameters", "trace_step"]


class TraceParameters(NamedTuple):
    """Discretised parameters of :func:`trace_step`.

    Attributes:
        decay: ``exp(-dt / tau_trace)``, dimensionless, broadcastable to the neuron shape.
        scale: ``trace_scale`` :math:`a`, broadcastable to the neuron shape.
        additive: ``True`` for ``"additive"``, ``False`` for ``"reset"``.
    """

    decay: torch.Tensor
    scale: torch.Tensor
    additive: bool


def trace_parameters(
    tau_trace: torch.Tensor, trace_scale: torch.Tensor, mode: str, dt: Union[float, torch.Tensor]
) -> TraceParameters:
    """:class:`TraceParameters` for time constant ``tau_trace`` (ms) at time step ``dt`` (ms)."""
    return TraceParameters(exp_decay(tau_trace, dt), trace_scale, mode == "additive")


def trace_step(
    trace: torch.Tensor,
    spikes: torch.Tensor,
    p: TraceParameters,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One trace update; returns the new trace, shape of ``trace`` ``(B, *shape)``.

    Args:
        trace: previous trace ``(B, *shape)``.
        spikes: spikes of this step ``(B, *shape)``, 0/1 (or graded in additive mode).
        p: :class:`TraceParameters`.
        out: optional tensor the fused kernel may write the new trace into (may be ``trace``
            itself, see :func:`pysnn.functional.lif.lif_trace_step`); otherwise a new tensor.

    Without autograd this runs as one fused kernel where a backend accepts the tensors
    (:func:`pysnn.backends.select`; on the CPU :mod:`pysnn.native`, bit-identical).
    """
    # (the kernels address the tensors by pointer: other shapes take torch's broadcasting)
    fits = spikes.shape == trace.shape and (
        out is None or (out.shape == trace.shape and out.dtype is trace.dtype)
    )
    backend = backends.select("trace_step", spikes, trace) if fits else None
    if backend is not None and not (
        torch.is_grad_enabled() and (p.decay.requires_grad or p.scale.requires_grad)
    ):  # (a learned trace constant needs the torch path's gradient)
        new = backend.trace_step(spikes, trace, p, out)
        if new is not None:
            return new
    decayed = trace * p.decay
    if p.additive:
        return torch.addcmul(decayed, p.scale, spikes)
    return torch.where(spikes > 0, p.scale, decayed)


def trace_kernel(p: TraceParameters, x: torch.Tensor) -> Optional["native.TraceStepKernel"]:
    """A fused :func:`trace_step` that updates the trace in place, for spikes like ``x``.

    Returns ``kernel(x, trace) -> bool`` (see :class:`pysnn.native.TraceStepKernel`; the same
    values as :func:`trace_step` bit for bit), or ``None`` where it does not apply (no fused
    kernels, a learned constant, another device or dtype). For a module that runs many steps on
    a trace nothing else can see (see :func:`pysnn.functional.lif.lif_trace_kernel`).
    """
    if p.decay.requires_grad or p.scale.requires_grad or not backends.accepts("c", x):
        return None
    return native.trace_step_kernel(p, x)
