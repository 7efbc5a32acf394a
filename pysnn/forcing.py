r"""Forcing, forbidding and injecting: BindsNET's ``clamp``, ``unclamp`` and ``injects_v``.

Three per-step interventions on any :class:`~pysnn.neuron.Neuron`, requested before a step and
applied to that step only (then forgotten):

- :meth:`Neuron.clamp(mask) <pysnn.neuron.Neuron.clamp>`: the neurons where ``mask`` is ``True``
  **spike** at the next step, whatever their potential, **even while refractory**. A forced
  spike is a real spike: the neuron is reset and made refractory exactly as if it had crossed
  its threshold, the spike enters the output, ``spikes``, the spike trace (so learning rules see
  it) and threshold adaptation.
- :meth:`Neuron.unclamp(mask) <pysnn.neuron.Neuron.unclamp>`: the neurons where ``mask`` is
  ``True`` do **not** spike at the next step. Nothing of a spike happens: no reset, no
  refractory period, no trace increment; the potential keeps the value it integrated to (it may
  stay above threshold, and then the neuron fires at its next step that is not unclamped).
  Where a neuron is both clamped and unclamped, ``unclamp`` wins (as in BindsNET, which applies
  it last).
- :meth:`Neuron.inject_v(delta) <pysnn.neuron.Neuron.inject_v>`: ``v <- v + delta`` (mV) at the
  start of the next step, before that step's update, so the step's leak, input, threshold test
  and reset all act on the new value. For :class:`~pysnn.neuron.LIFNeuron`:

  .. math::

      v_t = v_{rest} + (v_{t-1} + \Delta - v_{rest})\, e^{-dt/\tau_v} + x_t [r = 0],
      \qquad s_t = H(v_t - v_{th})

  (the injection is applied even while refractory, unlike the input ``x``). This is where
  BindsNET's ``Network.run`` adds ``injects_v`` (before the layer's step) and where Brian2's
  ``network_operation`` and NEST's ``SetStatus`` between steps write.

Masks are ``bool`` tensors of shape ``(B, *shape)`` (one per sample) or ``(*shape)`` (the same
for every sample); ``delta`` is a number or a tensor of either shape. Several calls before one
step combine (masks are OR-ed, injections added). :func:`pysnn.network.run` maps BindsNET's
dict-of-layer arguments (whole-run or per-step masks) onto these methods.

**How it reaches the dynamics** (what a neuron author needs to know). During an overridden step
the neuron's :meth:`~pysnn.neuron.Neuron.fire` returns ``1`` where clamped and ``0`` where
unclamped, so a subclass whose :meth:`~pysnn.neuron.Neuron.step` computes its spikes with
``self.fire(v - thresh)`` and resets with them gets the semantics above with no extra code.
Built-in neurons whose fused kernels take a threshold offset (LIF, IF, adaptive LIF, Izhikevich)
read ``self.threshold_offset()``, which during an overridden step adds :math:`-\infty` (mV) where
clamped and :math:`+\infty` where unclamped: the kernel's own threshold test then forces the spike
and its reset, on the fused CPU path as on the torch path. A forced or forbidden spike carries no
surrogate gradient. A ``step`` that uses neither hook cannot honour a clamp: that step raises
``RuntimeError`` instead of silently ignoring it.

Cost: nothing when unused (``forward`` tests one attribute); an overridden step builds one
``(B, *shape)`` offset tensor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Union

import torch

from pysnn import _checks

if TYPE_CHECKING:  # pragma: no cover
    from pysnn.neuron import Neuron

__all__ = ["Override", "check_mask", "check_delta"]

DeltaLike = Union[int, float, torch.Tensor]


def _check_trailing(name: str, value: torch.Tensor, shape: tuple, what: str) -> None:
    n = len(shape)
    if value.dim() not in (n, n + 1) or tuple(value.shape[value.dim() - n :]) != shape:
        dims = ", ".join(map(str, shape))
        raise ValueError(
            f"{name} must have shape (B, {dims}) or ({dims}{',' if n == 1 else ''}) for {what}, "
            f"got {tuple(value.shape)}"
        )


def check_mask(name: str, mask: torch.Tensor, shape: tuple, what: str) -> torch.Tensor:
    """Validate a spike mask: a ``bool`` tensor ``(B, *shape)`` or ``(*shape)``."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor (True where the neuron is affected), got {mask.dtype}; "
            "convert with mask.bool(), or build one from indices: "
            "mask = torch.zeros(n, dtype=torch.bool); mask[indices] = True"
        )
    _check_trailing(name, mask, shape, what)
    return mask


def check_delta(delta: DeltaLike, shape: tuple, what: str) -> Union[float, torch.Tensor]:
    """Validate a voltage injection (mV): a number or a tensor ``(B, *shape)`` / ``(*shape)``."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float, torch.Tensor)):
        raise TypeError(f"delta must be a number or a tensor (mV), got {type(delta).__name__}")
    if not isinstance(delta, torch.Tensor):
        if not math.isfinite(delta):
            raise ValueError(f"delta must be finite (mV), got {delta}")
        return float(delta)
    if not delta.is_floating_point():
        raise TypeError(f"delta must be a floating-point tensor (mV), got {delta.dtype}")
    if delta.dim() > 0:
        _check_trailing("delta", delta, shape, what)
    if _checks._VALUE_CHECKS and _checks.nonfinite(delta):
        raise ValueError(_checks.nonfinite_message("delta", delta, f"{what}.inject_v, in mV"))
    return delta


def _check_batch(name: str, value: torch.Tensor, batch: int, shape: tuple, what: str) -> None:
    if value.dim() == len(shape) + 1 and value.shape[0] not in (1, batch):
        raise ValueError(
            f"{name} given to {what} has batch size {value.shape[0]} but the step's input has "
            f"{batch}"
        )


class Override:
    """The interventions pending for a neuron's next step (built by ``clamp``/``unclamp``/
    ``inject_v``; consumed by the step)."""

    __slots__ = ("force", "forbid", "inject", "used")

    def __init__(self) -> None:
        self.force: Optional[torch.Tensor] = None
        self.forbid: Optional[torch.Tensor] = None
        self.inject: Union[None, float, torch.Tensor] = None
        self.used = False

    def add(self, kind: str, value: Union[float, torch.Tensor]) -> None:
        old = getattr(self, kind)
        if old is None:
            setattr(self, kind, value)
        elif kind == "inject":
            self.inject = old + value
        else:
            setattr(self, kind, torch.logical_or(old, value))

    # ------------------------------------------------------------------ the step
    def run(self, neuron: "Neuron", x: torch.Tensor, step_fn) -> torch.Tensor:
        """Run ``step_fn(x)`` (the neuron's plain forward) with these interventions."""
        what = type(neuron).__name__
        state = neuron._buffers
        reference = state[neuron.__dict__["_first_state"]]
        batch = reference.shape[0]
        for name in ("force", "forbid", "inject"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                label = {"force": "clamp", "forbid": "unclamp", "inject": "inject_v"}[name]
                _check_batch(label, value, batch, neuron.shape, what)
        if self.inject is not None:
            v = state["v"]
            inject = self.inject
            if isinstance(inject, torch.Tensor):
                inject = inject.to(device=v.device, dtype=v.dtype)
            state["v"] = v + inject
        if self.force is None and self.forbid is None:
            return step_fn(x)
        own = neuron.__dict__
        class_offset = getattr(type(neuron), "threshold_offset", None)
        # Shadow the two spike hooks for this step only (instance attributes win over methods).
        own["fire"] = lambda d: self.fire(neuron, d)
        own["threshold_offset"] = lambda: self.offset(neuron, class_offset, state["v"])
        try:
            s = step_fn(x)
        finally:
            del own["fire"], own["threshold_offset"]
        if not self.used:
            raise RuntimeError(
                f"{what}.clamp()/unclamp(): {what}.step computed its spikes without "
                "self.fire(...) or self.threshold_offset(), so the forced or forbidden spikes "
                "cannot be applied (and its reset would not follow them); compute the spikes "
                "with s = self.fire(v - thresh) in step (an Input passes its given spikes "
                "through: put forced spikes into its input instead)"
            )
        return s

    def fire(self, neuron: "Neuron", distance: torch.Tensor) -> torch.Tensor:
        """``Neuron.fire`` with the spikes forced (1) where clamped, forbidden (0) where
        unclamped; no gradient flows through a forced value."""
        self.used = True
        s = type(neuron).fire(neuron, distance)
        if self.force is not None:
            s = torch.where(self.force.to(s.device), torch.ones_like(s), s)
        if self.forbid is not None:
            s = torch.where(self.forbid.to(s.device), torch.zeros_like(s), s)
        return s

    def offset(self, neuron: "Neuron", class_offset, like: torch.Tensor) -> torch.Tensor:
        """The threshold offset (mV) of this step: the neuron's own (if any) plus ``-inf``
        where clamped and ``+inf`` where unclamped, ``(B, *shape)``, contiguous."""
        self.used = True
        offset = torch.zeros_like(like, memory_format=torch.contiguous_format)
        if self.force is not None:
            offset.masked_fill_(self.force.to(offset.device), -math.inf)
        if self.forbid is not None:
            offset.masked_fill_(self.forbid.to(offset.device), math.inf)
        base = None if class_offset is None else class_offset(neuron)
        if base is not None:
            offset = offset + base
        return offset
