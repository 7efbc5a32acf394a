r"""Spike pooling: max-pooling of spikes by trace (BindsNET's ``MaxPool2dConnection``).

Max-pooling 0/1 spikes directly passes a spike whenever any input of the window spikes. BindsNET
pools by activity instead: each input keeps a trace of its spikes, and each pooled position
passes on the spike (0 or 1) of the input with the **largest trace** in its window, so the
output follows the most active input of the window:

.. math::

    r_{c,y,x}(t) &= r_{c,y,x}(t - 1)\, e^{-dt/\tau} + s_{c,y,x}(t) \\
    o_{c,h,w}(t) &= s_{c,\, y^*, x^*}(t), \quad (y^*, x^*) = \operatorname{argmax}_{(y, x) \in
        \mathrm{window}(h, w)} r_{c,y,x}(t)

with :math:`s` the spikes arriving this step (after the delay). Ties go to the first input of the
window in row-major order (that of ``torch.nn.functional.max_pool2d``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from pysnn._checks import check_positive_scalar, warn_if_dropped
from pysnn.connection import Connection, DelayLike
from pysnn.stepping import step_through

__all__ = ["TraceMaxPool2d"]

IntPair = Union[int, Tuple[int, int]]


def _pair(name: str, value: IntPair, minimum: int) -> Tuple[int, int]:
    """``value`` (an int or a pair of ints, each >= ``minimum``) as a pair; ``ValueError``
    naming ``name`` otherwise."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair)
    ):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


class TraceMaxPool2d(Connection):
    r"""Max-pooling of spikes by trace (BindsNET's ``MaxPool2dConnection``), no weights.

    ``forward(spikes)``: ``(B, C, H, W)`` → ``(B, C, H_out, W_out)``: at each pooled position
    the spike arriving this step at the input of the window with the largest trace (equations in
    :mod:`pysnn.pooling`). ``H_out``, ``W_out`` as for ``torch.nn.MaxPool2d``. The connection
    keeps the trace of the arriving spikes itself (state ``trace``, like a neuron's state).

    Args:
        kernel_size, stride, padding, dilation: the windows, as ``torch.nn.MaxPool2d``
            (``stride`` defaults to ``kernel_size``; padded positions never win).
        tau_trace: time constant of the activity trace (ms), > 0. BindsNET's ``decay``
            :math:`\delta` (a fraction per step) is :math:`\tau = -dt / \ln(1 - \delta)`.
        dt: time step (ms).
        delay: one delay for all inputs (ms), >= 0.

    Attributes:
        trace: ``(B, C, H, W)`` trace :math:`r` of the arriving spikes after this step, or
            ``None`` before the first step and after :meth:`reset_state`.
        decay: :math:`e^{-dt/\tau}` per step.
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: Optional[IntPair] = None,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        tau_trace: float = 20.0,
        dt: float = 1.0,
        delay: DelayLike = 0.0,
        device: Optional[torch.device] = None,
    ) -> None:
        kernel = _pair("kernel_size", kernel_size, 1)
        _pair("stride", kernel_size if stride is None else stride, 1)
        pad = _pair("padding", padding, 0)
        dil = _pair("dilation", dilation, 1)
        for p, k, d in zip(pad, kernel, dil):
            if 2 * p > d * (k - 1) + 1:
                raise ValueError(
                    f"padding must be at most half the effective kernel size (dilation * "
                    f"(kernel_size - 1) + 1), got padding={padding!r} with kernel_size="
                    f"{kernel_size!r}, dilation={dilation!r}"
                )
        super().__init__(("C", "H", "W"), ("C", "H_out", "W_out"), dt, delay, device=device)
        pool = nn.MaxPool2d(kernel_size, stride, padding, dilation)
        self.kernel_size, self.stride = pool.kernel_size, pool.stride
        self.padding, self.dilation = pool.padding, pool.dilation
        self.tau_trace = check_positive_scalar("tau_trace", tau_trace)
        self.decay = math.exp(-self.dt / self.tau_trace)
        self.register_buffer("trace", None, persistent=False)

    def pool(self, spikes: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
        """The spikes ``(N, C, H, W)`` of the inputs with the largest ``trace`` (same shape) in
        each window: ``(N, C, H_out, W_out)``."""
        _, index = F.max_pool2d(
            trace,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            return_indices=True,
        )
        return spikes.flatten(2).gather(2, index.flatten(2)).view_as(index)

    def propagate(self, arriving: torch.Tensor) -> torch.Tensor:
        """Advance :attr:`trace` with the spikes ``arriving`` ``(B, C, H, W)`` and pool them
        (:meth:`pool`). Stateful, unlike other connections' ``propagate``: called once per step
        by :meth:`forward` (and :meth:`forward_multistep` steps through)."""
        trace = self.trace
        if trace is None or trace.shape != arriving.shape:
            warn_if_dropped("TraceMaxPool2d (trace)", trace, arriving.shape[0])
            trace = torch.zeros_like(arriving)
        elif trace.dtype != arriving.dtype:
            trace = trace.to(arriving.dtype)
        trace = torch.add(arriving, trace, alpha=self.decay)  # r e^{-dt/tau} + s, one pass
        self._buffers["trace"] = trace
        return self.pool(arriving, trace)

    def forward_multistep(self, spikes: torch.Tensor) -> torch.Tensor:
        """``T`` steps ``(T, B, C, H, W)`` → ``(T, B, C, H_out, W_out)``, one :meth:`forward` per
        step (the trace is sequential)."""
        self._check_block(spikes)
        return step_through(self, spikes)

    def reset_state(self) -> None:
        super().reset_state()
        self.trace = None

    def detach_state(self) -> None:
        super().detach_state()
        if self.trace is not None:
            self.trace = self.trace.detach()

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, tau_trace={self.tau_trace}, dt={self.dt}, "
            f"delay={self._shared_delay * self.dt} ms"
        )
