"""The engine: capture a network's step, plan a sequence of steps, run it, explain it.

- :mod:`pysnn.engine.capture`: one step of a network as a program of module calls
  (``torch.fx``), on a copy, refusing what it cannot see;
- :mod:`pysnn.engine.plan`: layer-wise over all ``T`` steps where values only flow forward within
  a step, a fused loop for a network of layers (:mod:`pysnn.engine.layers`) or a recurrent
  population (:mod:`pysnn.engine.recurrent`), step-wise (as written) otherwise, and the runner
  of a plan;
- :func:`explain`: what runs fused, on which backend, and why anything falls back;
- :func:`run_sequence`: ``T`` steps of a step network in one call (what
  :class:`pysnn.multistep.Unroll` uses);
- :class:`GraphedStep` (:mod:`pysnn.engine.graph`): a Python step loop's steps replayed as a
  CUDA graph where the step is static, one launch per step.

See the architecture page of the documentation for where the engine sits.
"""

from pysnn.engine.capture import StepProgram, capture
from pysnn.engine.explain import Explanation, explain
from pysnn.engine.graph import GraphedStep, StepGraph
from pysnn.engine.plan import Part, SequencePlan, plan
from pysnn.engine.sequence import SequenceRunner, run_sequence

__all__ = [
    "capture",
    "StepProgram",
    "plan",
    "SequencePlan",
    "Part",
    "explain",
    "Explanation",
    "run_sequence",
    "SequenceRunner",
    "GraphedStep",
    "StepGraph",
]
