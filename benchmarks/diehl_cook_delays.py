"""Diehl & Cook with the authors' input delays (issue 26): do they matter for learning?

The authors' Brian code delays each input -> excitatory synapse by its own delay drawn
uniformly in [0, 10] ms (``delay['ee_input'] = (0 ms, 10 ms)``); pysnn's model has none. This
script gives the input connection ``fc`` such delays as a user would, with public names only
(:class:`~pysnn.connection.Linear` with a ``delay`` tensor of one value per synapse, rounded to
whole steps of ``dt``), and runs ``examples/mnist_stdp.py`` with it. The learning rule then
sees each spike when it arrives at its synapse (:class:`~pysnn.learning.STDP` and
:class:`~pysnn.learning.TripletSTDP` read the arrivals and presynaptic traces through the
delays).

Per-synapse delays are not fused (the network loop steps module by module; about 0.33 s per
350-step digit at 100 neurons instead of about 0.02 s): a measurement, not a mode of the model.

Usage (the other arguments go to ``examples/mnist_stdp.py``)::

    python benchmarks/diehl_cook_delays.py --max-delay 10 -- --data-dir ../shared/data/mnist \\
        --n-train 5000 --n-assign 5000 --n-test 10000 --batch-size 1 --threads 1 \\
        --synapses conductance --seed 0 --quiet --results delays.json
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-delay", type=float, default=10.0, help="delays uniform in [0, this] ms")
    p.add_argument("--delay-seed", type=int, default=0, help="seed of the drawn delays")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then examples/mnist_stdp.py's")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    draw = torch.Generator().manual_seed(args.delay_seed)

    class DelayedInput(diehl_cook.DiehlCook2015):
        """The model, its input connection ``fc`` built with a delay per synapse."""

        def __init__(self, *a, **k):
            n_inputs = k.get("n_inputs", 784)
            diehl_cook.Linear = self._delayed(n_inputs)  # (the model's module-level name)
            try:
                super().__init__(*a, **k)
            finally:
                diehl_cook.Linear = Linear

        @staticmethod
        def _delayed(n_inputs: int):
            def build(n_in, n_out, *a, **k):
                if n_in == n_inputs and "delay" not in k:  # fc (e2i, i2e are n x n)
                    k["delay"] = torch.rand(n_out, n_in, generator=draw) * args.max_delay
                return Linear(n_in, n_out, *a, **k)

            return build

    mnist_stdp.DiehlCook2015 = DelayedInput
    mnist_stdp.main(rest)


if __name__ == "__main__":
    main()
