"""Diehl & Cook with the authors' inhibition latency (issue 26): does it close the conductance gap?

In the authors' Brian code a spike raises its target's conductance *after* the step in which it
was emitted (Brian updates the state, then thresholds, then propagates), so the target's
membrane first feels it one step later. pysnn's :class:`~pysnn.synapse.ConductanceSynapse` lets
a conductance arriving in a step act within that step. For the input and for ``i2e`` that is a
uniform shift of the whole network's response, but it shortens the winner-take-all loop: an
excitatory spike at step ``n`` fires the inhibitory partner at step ``n + 1`` and inhibits the
others from step ``n + 2`` in the code, while pysnn's model fires the partner at step ``n`` and
inhibits from ``n + 1``. This script restores the code's loop, as a user would with public
names only: ``e2i`` gets a synaptic delay of one step (``Linear(..., delay=dt)``), and runs
``examples/mnist_stdp.py`` with it.

Usage (the other arguments go to ``examples/mnist_stdp.py``)::

    python benchmarks/diehl_cook_latency.py -- --data-dir ../shared/data/mnist \\
        --n-train 10000 --n-assign 10000 --n-test 10000 --batch-size 1 --threads 1 \\
        --synapses conductance --seed 0 --quiet --results latency.json
"""

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import mnist_stdp  # noqa: E402  (examples/ on the path)

import pysnn.models.diehl_cook as diehl_cook  # noqa: E402
from pysnn.connection import Linear  # noqa: E402


class DelayedInhibition(diehl_cook.DiehlCook2015):
    """The model, its excitatory -> inhibitory connection ``e2i`` delayed by one step."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        weight = self.e2i.weight
        delayed = Linear(self.n_neurons, self.n_neurons, dt=self.dt, delay=self.dt)
        delayed.to(weight.dtype).weight.requires_grad_(False)
        with torch.no_grad():
            delayed.weight.copy_(weight)
        self.e2i = delayed  # (forward and step_program read the attribute)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then examples/mnist_stdp.py's")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    mnist_stdp.DiehlCook2015 = DelayedInhibition
    mnist_stdp.main(rest)


if __name__ == "__main__":
    main()
