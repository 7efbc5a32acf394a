r"""Readouts for gradient training: a leaky-integrator (non-spiking) neuron and loss helpers.

:class:`LIReadout` integrates its input like a LIF neuron but never spikes or resets; its membrane
potential is the network's output (e.g. class scores). The loss helpers take whole recordings
stacked over time, shape ``(T, B, C)`` (time steps, batch, classes):

- :func:`spike_count_loss`: cross-entropy on spike counts, or MSE to target counts;
- :func:`membrane_loss`: cross-entropy on the max-over-time, mean or last membrane potential.

Example (BPTT over ``T`` steps)::

    net.reset_state()
    v = torch.stack([net(x[t]) for t in range(T)])   # (T, B, C) readout membrane
    loss = membrane_loss(v, labels, reduce="max")
    loss.backward()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pysnn._checks import ParamLike, check_choice
from pysnn.functional.decay import exp_decay
from pysnn.neuron import Neuron, ShapeLike

__all__ = [
    "LIReadout",
    "spike_count_loss",
    "membrane_loss",
    "membrane_reduce",
    "MEMBRANE_REDUCTIONS",
]

MEMBRANE_REDUCTIONS = ("max", "mean", "last")
COUNT_LOSSES = ("cross_entropy", "mse")


class LIReadout(Neuron):
    r"""Leaky-integrator readout: a LIF membrane without threshold, spikes or reset.

    Per step of ``dt`` ms, with the input ``x`` an instantaneous increment (mV), as in
    :class:`~pysnn.neuron.LIFNeuron`:

    .. math:: v \leftarrow v_{rest} + (v - v_{rest})\, e^{-dt/\tau_v} + x

    ``forward(x)``: ``x`` ``(B, *shape)`` → the new ``v`` ``(B, *shape)`` (mV). Differentiable in
    ``x`` and in the initial ``v``; use ``tau_v=math.inf`` for a perfect integrator (sum of
    inputs).

    Args:
        shape: neuron shape without batch, e.g. ``10`` classes.
        dt: time step (ms), > 0.
        tau_v: membrane time constant (ms), > 0 (``math.inf``: no leak). Scalar or per-neuron.
        v_rest: resting (and initial) potential (mV). Scalar or per-neuron.

    State: ``v`` ``(B, *shape)`` in a non-persistent buffer, created lazily for the first batch,
    restored to ``v_rest`` by :meth:`reset_state`, cut from the graph by :meth:`detach_state`
    (same conventions as :class:`~pysnn.neuron.Neuron`). There is no spike or trace state;
    ``spikes`` is always ``None``.
    """

    spiking = False

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        tau_v: ParamLike = 20.0,
        v_rest: ParamLike = 0.0,
    ) -> None:
        super().__init__(shape, dt, surrogate=None)
        self.register_constant("tau_v", tau_v, positive=True, allow_inf=True)
        self.register_constant("v_rest", v_rest)
        self.register_state("v", "v_rest")

    @property
    def spikes(self) -> None:
        """A readout never spikes."""
        return None

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input ``x`` ``(B, *shape)`` (mV increment) → the new ``v`` ``(B, *shape)``."""
        decay = self.derived("decay", exp_decay, self.tau_v, self.dt)
        self.v = self.v_rest + (self.v - self.v_rest) * decay + x
        return self.v


def _check_recording(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (T, B, C), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (T, B, C), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_labels(target: torch.Tensor, batch: int, classes: int) -> None:
    if target.shape != (batch,):
        raise ValueError(f"target labels must have shape ({batch},), got {tuple(target.shape)}")
    if target.numel() and (target.min() < 0 or target.max() >= classes):
        raise ValueError(f"target labels must be in 0..{classes - 1}")


def spike_count_loss(
    spikes: torch.Tensor,
    target: torch.Tensor,
    loss: str = "cross_entropy",
    correct_rate: float = 0.8,
    incorrect_rate: float = 0.2,
) -> torch.Tensor:
    r"""Loss on the spike counts :math:`n_{bc} = \sum_t s_{tbc}` of an output layer.

    - ``"cross_entropy"``: ``F.cross_entropy(n, target)``, the counts used as logits;
      ``target`` are class labels ``(B,)``.
    - ``"mse"``: mean squared error between ``n`` and target counts: for labels ``(B,)`` the
      correct class should fire ``correct_rate * T`` spikes and the others ``incorrect_rate * T``
      (rates in spikes per step); a float ``target`` ``(B, C)`` gives the counts directly.

    Args:
        spikes: ``(T, B, C)`` output spikes (0/1, with surrogate gradients).
        target: ``(B,)`` int64 labels, or ``(B, C)`` float target counts (``"mse"`` only).
        loss: ``"cross_entropy"`` or ``"mse"``.
        correct_rate, incorrect_rate: target firing probability per step (``"mse"`` with labels).

    Returns:
        Scalar loss, averaged over the batch (and classes for ``"mse"``).
    """
    _check_recording("spikes", spikes)
    check_choice("loss", loss, COUNT_LOSSES)
    steps, batch, classes = spikes.shape
    counts = spikes.sum(0)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point():
        if loss != "mse":
            raise ValueError("float target counts need loss='mse'; cross-entropy takes labels")
        if target.shape != counts.shape:
            raise ValueError(
                f"target counts must have shape {tuple(counts.shape)}, got {tuple(target.shape)}"
            )
        return F.mse_loss(counts, target)
    _check_labels(target, batch, classes)
    if loss == "cross_entropy":
        return F.cross_entropy(counts, target)
    for name, rate in (("correct_rate", correct_rate), ("incorrect_rate", incorrect_rate)):
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1] (spikes per step), got {rate}")
    wanted = torch.full_like(counts, incorrect_rate * steps)
    wanted.scatter_(1, target.unsqueeze(1), correct_rate * steps)
    return F.mse_loss(counts, wanted)


def membrane_reduce(v: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Reduce a membrane recording ``(T, B, C)`` over time to logits ``(B, C)``.

    ``"max"``: maximum over time; ``"mean"``: average; ``"last"``: the final step.
    """
    _check_recording("v", v)
    check_choice("reduce", reduce, MEMBRANE_REDUCTIONS)
    if reduce == "max":
        return v.amax(0)
    if reduce == "mean":
        return v.mean(0)
    return v[-1]


def membrane_loss(v: torch.Tensor, target: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    r"""Cross-entropy on the readout membrane potential reduced over time.

    .. math:: L = \mathrm{CE}(\mathrm{reduce}_t\, v_{tbc},\ y_b)

    Args:
        v: ``(T, B, C)`` membrane potentials (mV) of a :class:`LIReadout`, used as logits.
        target: ``(B,)`` int64 class labels.
        reduce: ``"max"`` (max over time, Cramer et al. 2020), ``"mean"`` or ``"last"``.

    Returns:
        Scalar loss, averaged over the batch. For predictions use
        ``membrane_reduce(v, reduce).argmax(1)``.
    """
    logits = membrane_reduce(v, reduce)
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        raise TypeError("target must be an integer tensor of class labels (B,)")
    _check_labels(target, v.shape[1], v.shape[2])
    return F.cross_entropy(logits, target)
