"""Memory of a long simulation: a delayed connection, STDP and ring-buffer monitors.

Input(100) -> Linear(100, 50, delay=5 ms) -> LIFNeuron(50), with pair STDP on the connection and
``Monitor(..., time=100)`` ring buffers on the neuron's ``v`` and ``spikes``, run for ``--steps``
steps of 1 ms under ``torch.no_grad()`` (batch 4, Poisson-like input). Prints the process's
resident set (RSS, from ``/proc/self/statm``) after a warm-up and then every tenth of the run,
and the largest growth over the warm-up value. Memory must stay flat: nothing in a step keeps
what an earlier step made (state is replaced or reused, histories are ring buffers, monitors keep
the last 100 steps).

    python benchmarks/long_run_memory.py --steps 1000000      # the documented long run
"""

from __future__ import annotations

import argparse
import os
import resource

import torch

import pysnn
from pysnn.connection import Linear
from pysnn.learning import STDP
from pysnn.monitor import Monitor
from pysnn.neuron import Input, LIFNeuron


def rss_mb() -> float:
    """Resident set size of this process (MB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run(steps: int, warmup: int = 2000, batch: int = 4, seed: int = 0, grad: bool = False) -> float:
    """Run ``warmup + steps`` steps; print RSS samples; return the largest growth (MB).

    ``grad=True`` runs the loop with autograd on (the weights require a gradient): the control
    case, in which every step's graph is kept and memory grows.
    """
    torch.manual_seed(seed)
    pysnn.set_checks(False)
    inp, fc, lif = Input(100), Linear(100, 50, delay=5.0), LIFNeuron(50, thresh=-60.0)
    rule = STDP(fc, inp, lif, nu=(1e-4, 1e-3))
    monitors = [Monitor(lif, "v", time=100), Monitor(lif, "spikes", time=100)]
    rate = torch.full((batch, 100), 0.05)
    base, growth = None, 0.0
    with torch.set_grad_enabled(grad):
        for t in range(warmup + steps):
            lif(fc(inp(torch.bernoulli(rate))))
            rule.step()
            if t + 1 == warmup:
                base = rss_mb()
                print(f"after {warmup} warm-up steps: {base:.1f} MB")
            elif t >= warmup and (t + 1 - warmup) % max(1, steps // 10) == 0:
                now = rss_mb()
                growth = max(growth, now - base)
                print(f"step {t + 1 - warmup:>9}: {now:.1f} MB ({now - base:+.2f} MB)")
    assert all(m.get("v" if i == 0 else "spikes").shape[0] == 100 for i, m in enumerate(monitors))
    return growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grad", action="store_true", help="control: autograd on (memory grows)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    growth = run(args.steps, grad=args.grad)
    print(f"largest growth over the warm-up: {growth:.2f} MB (pid {os.getpid()})")


if __name__ == "__main__":
    main()
