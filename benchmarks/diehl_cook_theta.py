"""Diehl & Cook: the authors' threshold convention and rest period (issue 26).

The authors' Brian code writes the excitatory threshold as ``v_thresh_e - offset + theta`` with
``offset = 20 mV`` and ``theta`` starting at 20 mV, and lets ``theta`` relax towards **0**
(``dtheta/dt = -theta / tc_theta``), i.e. towards a threshold 20 mV *below* -52 mV. pysnn's model
starts ``theta`` at 0 under a -52 mV base and relaxes it towards 0: the same threshold at the start,
but a weaker pull back (by ``theta / (theta + 20 mV)``). The code also simulates 150 ms without
input after every presentation, during which ``theta`` keeps relaxing; pysnn resets the state
instead and so leaves ``theta`` as it is.

``--theta-offset 20`` puts the excitatory base threshold at ``exc_thresh - 20`` mV with ``theta``
starting at 20 mV (the code's convention); ``--rest 150`` relaxes ``theta`` for 150 ms after every
training presentation (``theta *= exp(-150 / tau_theta)``). Both are written with public names
only.

Usage (the other arguments go to ``examples/mnist_stdp.py``)::

    python benchmarks/diehl_cook_theta.py --theta-offset 20 --rest 150 -- \\
        --data-dir ../shared/data/mnist --n-train 10000 --n-assign 10000 --n-test 10000 \\
        --batch-size 1 --threads 1 --synapses conductance --seed 0 --quiet --results out.json
"""

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import mnist_stdp  # noqa: E402  (examples/ on the path)

import pysnn.models.diehl_cook as diehl_cook  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--theta-offset", type=float, default=0.0, help="code's offset (mV)")
    p.add_argument("--rest", type=float, default=0.0, help="theta relaxation after a digit (ms)")
    p.add_argument("--nu-post", type=float, default=None, help="potentiation rate (default 1e-2)")
    p.add_argument("rest_args", nargs=argparse.REMAINDER, help="-- then examples/mnist_stdp.py's")
    args = p.parse_args(argv)
    rest_args = args.rest_args[1:] if args.rest_args[:1] == ["--"] else args.rest_args
    offset, rest = args.theta_offset, args.rest

    class Model(diehl_cook.DiehlCook2015):
        def __init__(self, *a, **k):
            k["exc_thresh"] = k.get("exc_thresh", -52.0) - offset
            if args.nu_post is not None:
                k["nu"] = (1e-4, args.nu_post)
            super().__init__(*a, **k)
            with torch.no_grad():
                self.exc.theta.fill_(offset)
            self.rest_decay = math.exp(-rest / float(self.exc.tau_theta))

        def run(self, spikes, normalize=True):
            counts = super().run(spikes, normalize)
            if self.training and rest > 0:
                with torch.no_grad():
                    self.exc.theta.mul_(self.rest_decay)
            return counts

    mnist_stdp.DiehlCook2015 = Model
    mnist_stdp.main(rest_args)


if __name__ == "__main__":
    main()
