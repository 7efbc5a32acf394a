r"""The hand-written fused paths that remain (issue 23), each against the general path it skips.

Issue 23 asks that what stays hand-written justify itself in the benchmarks. Each case times,
interleaved in one run and on the same inputs, a module's hand-written fast path against the
general path that the same module takes without it (the same values, bit for bit, tested in
``tests/``):

- ``linear_event``: :class:`~pysnn.connection.Linear`'s event-driven single step where
  :meth:`~pysnn.connection.Linear.event_steps` allows it (straight to the fused row-gather
  kernel, only the input checked) against its general step (``Linear._forward``: bounds, spike
  and activity checks, the same kernel);
- ``stdp_step``: :class:`~pysnn.learning.STDP`'s one-sample step, which its ``delta`` runs as
  one call of the C kernel, against the same step as torch operations (the kernels switched off:
  ``delta``'s outer product, then the clamped row update and its presynaptic-major copy);
- ``triplet_step``: the same for :class:`~pysnn.learning.TripletSTDP`, set as the Diehl & Cook
  code's rule (nearest-spike traces);
- ``lif_multistep``: :meth:`LIFNeuron.forward_multistep` (the hand-written multi-step LIF
  kernel of :mod:`pysnn.native`) against the kernel generated from ``LIFNeuron.step`` running
  the same ``T`` steps (:meth:`pysnn.codegen.NeuronKernel.run`), without gradient;
- ``lif_bptt``: the same under autograd, forward and backward (``.sum().backward()``) through
  ``T`` steps: the hand-written kernel's fused backward against what ``LIFNeuron`` would take
  without it (:meth:`Neuron.forward_multistep`: the generated kernel where it has a backward,
  else the step loop).

Times are the CPU time of the stepping thread (best of ``--repeats``), so that other jobs on the
machine weigh less. Prints ``general / hand-written`` per case and writes
``benchmarks/results/hand_written_paths.json``.

    python benchmarks/hand_written_paths.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pysnn.codegen import generate  # noqa: E402
from pysnn.connection import Linear  # noqa: E402
from pysnn import native  # noqa: E402
from pysnn.learning import STDP, LearningRule, TripletSTDP, fused_update_reason  # noqa: E402
from pysnn.neuron import Input, LIFNeuron, Neuron  # noqa: E402


def _best(run: Callable[[], None], calls: int, repeats: int) -> float:
    """Best CPU time per call (µs) over ``repeats`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(calls):
            run()
        best = min(best, (time.thread_time() - start) / calls * 1e6)
    return best


def linear_event(n_in: int, n_out: int, batch: int, calls: int, repeats: int) -> Dict[str, float]:
    torch.manual_seed(0)
    conn = Linear(n_in, n_out, propagation="event")
    x = (torch.rand(batch, n_in) < 0.05).float()
    with torch.no_grad():
        for _ in range(10):
            conn(x)
        if not conn.event_steps():
            raise RuntimeError("Linear's steps do not go straight to the event-driven kernel")
        return {
            "hand-written": _best(lambda: conn.forward(x), calls, repeats),
            "general": _best(lambda: conn._forward(x), calls, repeats),
        }


def rule_step(
    make: Callable[[Input, Linear, LIFNeuron], LearningRule], n_in: int, n_out: int, calls: int,
    repeats: int,
) -> Dict[str, float]:  # fmt: skip
    """A rule's one-sample step on its C kernel against the same step as torch operations,
    ``make(pre, conn, post)`` the rule on an ``n_in -> n_out`` layer driven to fire."""
    torch.manual_seed(0)
    inp, conn, out = Input(n_in), Linear(n_in, n_out, wmin=0.0, wmax=1.0), LIFNeuron(n_out)
    rule = make(inp, conn, out)
    x = (torch.rand(1, n_in) < 0.05).float()
    with torch.no_grad():
        for _ in range(10):
            out(conn(inp(x)) * 20)
            rule.step()
        if fused_update_reason(rule):
            raise RuntimeError(fused_update_reason(rule))
        fused = _best(rule.forward, calls, repeats)
        with native.enabled(False):
            general = _best(rule.forward, calls, repeats)
        return {"hand-written": fused, "general": general}


def stdp(inp: Input, conn: Linear, out: LIFNeuron) -> STDP:
    return STDP(conn, inp, out, nu=(1e-4, 1e-2))


def code_triplet(inp: Input, conn: Linear, out: LIFNeuron) -> TripletSTDP:
    """The Diehl & Cook code's rule, as ``DiehlCook2015(rule="triplet")`` sets it."""
    return TripletSTDP(
        conn, inp, out, a2_plus=0.0, a3_plus=1e-2, a2_minus=1e-4, a3_minus=0.0,
        tau_plus=20.0, tau_minus=20.0, tau_x=20.0, tau_y=40.0, interaction="nearest",
    )  # fmt: skip


def lif_multistep(n: int, batch: int, steps: int, calls: int, repeats: int) -> Dict[str, float]:
    torch.manual_seed(0)
    neuron = LIFNeuron(n)
    x = torch.rand(steps, batch, n) * 3
    with torch.no_grad():
        neuron.forward_multistep(x)
        kernel, why = generate(neuron, x[0])
        if kernel is None:
            raise RuntimeError(f"no kernel generated from LIFNeuron.step: {why}")
        if not kernel.applies(neuron, x):
            raise RuntimeError("the generated kernel does not apply")
        a, b = LIFNeuron(n), LIFNeuron(n)
        same = torch.equal(a.forward_multistep(x), kernel.run(b, x))
        return {
            "hand-written": _best(lambda: neuron.forward_multistep(x), calls, repeats),
            "general": _best(lambda: kernel.run(neuron, x), calls, repeats),
            "same_spikes": same,
        }


def lif_bptt(n: int, batch: int, steps: int, calls: int, repeats: int) -> Dict[str, float]:
    torch.manual_seed(0)
    neuron = LIFNeuron(n)
    x = (torch.rand(steps, batch, n) * 3).requires_grad_(True)

    def run(multistep: Callable[[Neuron, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        neuron.reset_state()
        x.grad = None
        multistep(neuron, x).sum().backward()
        return x.grad

    with torch.no_grad():
        Neuron.forward_multistep(neuron, x.detach())  # (a kernel generated from its step)
    kernel, _ = neuron.generated_multistep(x)
    same = torch.equal(run(LIFNeuron.forward_multistep), run(Neuron.forward_multistep))
    return {
        "hand-written": _best(lambda: run(LIFNeuron.forward_multistep), calls, repeats),
        "general": _best(lambda: run(Neuron.forward_multistep), calls, repeats),
        "same_gradients": same,
        "general_path": "generated kernel" if kernel is not None else "step loop",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/hand_written_paths.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = {
        "linear_event 784x100, batch 1": lambda: linear_event(784, 100, 1, 2000, args.repeats),
        "linear_event 784x400, batch 1": lambda: linear_event(784, 400, 1, 2000, args.repeats),
        "linear_event 1000x1000, batch 16": lambda: linear_event(1000, 1000, 16, 300, args.repeats),
        "stdp_step 784x100": lambda: rule_step(stdp, 784, 100, 2000, args.repeats),
        "stdp_step 784x400": lambda: rule_step(stdp, 784, 400, 1000, args.repeats),
        "triplet_step 784x100": lambda: rule_step(code_triplet, 784, 100, 2000, args.repeats),
        "triplet_step 784x400": lambda: rule_step(code_triplet, 784, 400, 1000, args.repeats),
        "lif_multistep 100 x 1, T 350": lambda: lif_multistep(100, 1, 350, 200, args.repeats),
        "lif_multistep 2048 x 16, T 100": lambda: lif_multistep(2048, 16, 100, 10, args.repeats),
        "lif_bptt 100 x 1, T 350": lambda: lif_bptt(100, 1, 350, 5, args.repeats),
        "lif_bptt 2048 x 16, T 100": lambda: lif_bptt(2048, 16, 100, 3, args.repeats),
    }
    results = {}
    print(f"{'case':34s} {'hand-written':>14s} {'general':>12s} {'general / hand-written':>24s}")
    for name, case in cases.items():
        r = case()
        r["ratio"] = r["general"] / r["hand-written"]
        results[name] = r
        print(f"{name:34s} {r['hand-written']:11.1f} µs {r['general']:9.1f} µs {r['ratio']:23.2f}x")
    Path(args.out).write_text(
        json.dumps(
            {"threads": args.threads, "unit": "µs CPU time per call", "cases": results}, indent=1
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
