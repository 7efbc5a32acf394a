"""Diehl & Cook with the authors' inhibition latency (issue 26): does it close the conductance gap?

In the authors' Brian code a spike raises its target's conductance *after* the step in which it
was emitted (Brian updates the state, then thresholds, then propagates), so the target's
membrane first feels it one step later. pysnn's :class:`~pysnn.synapse.ConductanceSynapse` lets
a conductance arriving in a step act within that step. For the input and for ``i2e`` that is a
uniform shift of the whole network's response, but it shortens the winner-take-all loop: an
excitatory spike at step ``n`` fires the inhibitory partner at step ``n + 1`` and inhibits the
others from step ``n + 2`` in the code, while pysnn's model fires the partner at step ``n`` and
inhibits from ``n + 1``. ``DiehlCook2015(inhibition_delay=dt)`` restores the code's loop: ``e2i``
gets a synaptic delay of one step, pushed through its delay ring inside the fused network loop.

This script runs ``examples/mnist_stdp.py`` with ``--inhibition-delay`` set to its ``--dt``. It is
the command of ``benchmarks/results/diehl_cook_latency*.json``, which an earlier version made by
replacing ``e2i`` with a delayed :class:`~pysnn.connection.Linear` (the same network and the same
numbers, bit for bit: checked on 300 digits).

Usage (the other arguments go to ``examples/mnist_stdp.py``)::

    python benchmarks/diehl_cook_latency.py -- --data-dir ../shared/data/mnist \\
        --n-train 10000 --n-assign 10000 --n-test 10000 --batch-size 1 --threads 1 \\
        --synapses conductance --seed 0 --quiet --results latency.json
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import mnist_stdp  # noqa: E402  (examples/ on the path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then examples/mnist_stdp.py's")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    dt = mnist_stdp.parse_args(rest).dt
    mnist_stdp.main(rest + ["--inhibition-delay", repr(dt)])


if __name__ == "__main__":
    main()
