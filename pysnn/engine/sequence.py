"""``T`` steps of a step network in one call: capture once, guard, replay the plan."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from pysnn.engine.capture import capture
from pysnn.engine.plan import SequencePlan, fingerprint, plan

__all__ = ["SequenceRunner", "run_sequence"]


def _step_loop(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([network(step) for step in x])


class SequenceRunner:
    """Runs ``T`` steps of a step network, planning once and re-planning only when what the
    plan depends on changed (the network's modules, their classes, training modes, hooks and
    plain public attributes, see :func:`pysnn.engine.plan.fingerprint`; the input's per-step
    shape, batch included, dtype and device). Checked at every call: a few µs per module.
    Values of constants are guarded where they are used (:class:`pysnn._guards.Guard`).

    Under ``torch.compile`` tracing it runs the step loop (what ``torch.compile`` unrolls).
    """

    #: plans kept per runner (a network alternating ``train()``/``eval()`` has two)
    MAX_PLANS = 8

    def __init__(self) -> None:
        self.plans: Dict[Tuple[Any, ...], SequencePlan] = {}

    def plan_for(self, network: nn.Module, x: torch.Tensor) -> SequencePlan:
        """The plan for ``network`` and inputs like ``x`` ``(T, B, ...)`` (made if needed)."""
        key = (fingerprint(network), tuple(x.shape[1:]), x.dtype, x.device)
        found = self.plans.get(key)
        if found is None:
            example = x[0]
            found = plan(network, capture(network, example), example)
            if len(self.plans) >= self.MAX_PLANS:
                self.plans.pop(next(iter(self.plans)))  # the oldest
            self.plans[key] = found
        return found

    def __call__(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``network``'s outputs for the sequence ``x`` ``(T, B, ...)``, ``(T, B, ...)``: the same
        as ``torch.stack([network(x[t]) for t in range(T)])``, state included."""
        if torch.compiler.is_compiling():
            return _step_loop(network, x)
        sequence = self.plan_for(network, x)
        if sequence.kind != "step-wise":
            return sequence.run(network, x)
        return _step_loop(network, x)

    def __getstate__(self) -> dict:
        return {"plans": {}}  # re-planned after a copy


def run_sequence(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``T`` steps of the step network ``network`` on ``x`` ``(T, B, ...)`` in one call.

    Layer by layer over all steps where the plan allows (see :mod:`pysnn.engine.plan`), else the
    step loop; the results and the state left in every module are the step loop's (up to the
    summation order of dense products over ``T * B`` rows, see :mod:`pysnn.engine.plan`). Plans
    anew
    at every call: keep a :class:`SequenceRunner` (as :class:`pysnn.multistep.Unroll` does) to
    plan once.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(
            "x must be a time-first sequence (T, B, ...) with T >= 1, got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    return SequenceRunner()(network, x)
