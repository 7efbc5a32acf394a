"""``explain``: what runs fused in a network's sequence, and why anything does not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
from torch import nn

from pysnn.engine.capture import capture
from pysnn.engine.plan import Part, plan

__all__ = ["Explanation", "explain"]


@dataclass
class Explanation:
    """How ``Unroll(module)`` runs a sequence (see :func:`explain`).

    Attributes:
        fused: whether the whole sequence runs without a module, or the network, stepped once
            per step from Python: layer by layer with every module in its block form, or as a
            network of layers or a recurrent population in one fused loop (a recurrent
            population's first step runs as written, the other ``T - 1`` in the loop).
        plan: ``"layer-wise"``, ``"layers"`` (a network of layers with feedback and learning:
            :func:`pysnn.engine.layers.run_layers`), ``"recurrent"`` (a recurrent population:
            :func:`pysnn.engine.recurrent.run_recurrent`) or ``"step-wise"``.
        parts: each module call, in program order (:class:`pysnn.engine.plan.Part`).
        fallbacks: ``(module or node name, reason)`` for everything that runs once per step.
        backends: part name -> the backend that runs it (``"c"``, ``"c-generated"``,
            ``"triton"``, ``"triton-generated"``, ``"torch"``; see
            :attr:`pysnn.engine.plan.Part.backend`).
    """

    fused: bool
    plan: str
    parts: List[Part] = field(default_factory=list)
    fallbacks: List[Tuple[str, str]] = field(default_factory=list)
    backends: Dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"plan: {self.plan}, fused: {self.fused}"]
        for part in self.parts:
            line = f"  {part.name} ({part.kind}): {part.how} on {part.backend}"
            lines.append(line + (f" -- {part.reason}" if part.reason else ""))
        lines += [f"  fallback {where}: {why}" for where, why in self.fallbacks]
        return "\n".join(lines)


def explain(module: nn.Module, x: torch.Tensor) -> Explanation:
    """Say how ``Unroll(module)(x)`` runs: which parts are fused, and why anything falls back.

    Args:
        module: a step network (an :class:`~pysnn.network.SNNNetwork`, a neuron, a connection,
            any module whose ``forward`` is one step).
        x: its input sequence ``(T, B, ...)`` (only the first step is used, on a copy of the
            network: ``module`` is not changed). Under autograd (grad mode on, ``x`` or a
            parameter of ``module`` wanting a gradient, as in training) the parts are
            reported as they run there: a neuron whose generated kernel has no backward is
            stepped; under ``torch.no_grad()`` as they run without a gradient.

    Returns:
        An :class:`Explanation`; ``print`` it for a table.

    Example::

        >>> e = explain(net, spikes)          # spikes (T, B, 784)
        >>> e.fused, e.fallbacks
        (False, [('lif', 'a forward hook must see every step')])
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(
            "x must be the input sequence (T, B, ...), got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    example = x[0]
    sequence = plan(module, capture(module, example), example)
    # a network of layers or a recurrent population runs its feedback (and learning) in a fused
    # loop: only parts that the loop steps are fallbacks there
    fallbacks = [] if sequence.kind in ("layers", "recurrent") else list(sequence.reasons)
    fallbacks += [(p.name, p.reason) for p in sequence.parts if p.how == "stepped" and p.reason]
    fallbacks = list(dict.fromkeys(fallbacks))  # each once, in order
    return Explanation(
        fused=sequence.kind != "step-wise" and not fallbacks,
        plan=sequence.kind,
        parts=sequence.parts,
        fallbacks=fallbacks,
        backends={p.name: p.backend for p in sequence.parts},
    )
