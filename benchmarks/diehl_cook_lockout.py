"""Diehl & Cook with the Brian 2 ports' spike lockout (issue 26): does it close the gap?

The authors' Brian code lets an excitatory neuron fire only when ``timer > refrac_e`` (5 ms),
with ``dtimer/dt = 100.0`` reset to 0 at each spike. The Brian 2 ports of that code (Brian2's
``examples/frompapers/Diehl_Cook_2015.py`` among them) write ``dtimer/dt = 0.1``: a timer at a
tenth of real time, so a neuron cannot fire again for **50 ms** after a spike, while its
membrane is held at reset only for the 5 ms refractory period and then integrates again. Brian 1
itself keeps values in SI units (the script imports ``brian_no_units``), so there the timer runs
at 100 times real time and locks nothing out beyond the refractory period: this script measures
the ports' reading, not the authors' code. pysnn's model has the 5 ms refractory period alone. This script adds the
lockout to the excitatory neurons as a user would, with public names only (a subclass of
:class:`~pysnn.neuron.AdaptiveLIFNeuron` with one more state and a threshold offset), and runs
``examples/mnist_stdp.py`` with it. ``--refrac`` instead lengthens the refractory period
(input ignored and the membrane held for the whole period).

The subclass runs its own ``step``, so the network loop is stepped module by module (about
10 digits/s in training instead of about 90 fused): a measurement, not a mode of the model.

Usage (the other arguments go to ``examples/mnist_stdp.py``)::

    python benchmarks/diehl_cook_lockout.py --lockout 50 -- --data-dir ../shared/data/mnist \\
        --n-train 10000 --n-assign 10000 --n-test 10000 --batch-size 1 --threads 1 \\
        --synapses conductance --seed 0 --quiet --results lockout50.json
"""

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import mnist_stdp  # noqa: E402  (examples/ on the path)

import pysnn.models.diehl_cook as diehl_cook  # noqa: E402
from pysnn.neuron import AdaptiveLIFNeuron  # noqa: E402


class LockoutAdaptiveLIF(AdaptiveLIFNeuron):
    """:class:`AdaptiveLIFNeuron` that cannot fire for ``lockout`` ms after a spike (its
    membrane integrates after the refractory period, as in the Brian 2 ports).

    State ``since`` (int64, ``(B, *shape)``): steps since the last spike. The threshold offset is
    ``theta``, plus infinity while ``since < lockout / dt``: with ``dt = 1`` ms a neuron that
    fired at step ``t`` may fire again at step ``t + 51`` (timer 5.1 ms > 5 ms), not before.
    """

    LOCKOUT_MS = 50.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lockout_steps = int(round(self.LOCKOUT_MS / self.dt))
        self.register_state("since", 2**40, dtype=torch.int64)

    def threshold_offset(self) -> Optional[torch.Tensor]:
        theta = super().threshold_offset()
        locked = self.since < self.lockout_steps
        return theta + torch.where(locked, float("inf"), 0.0).to(theta.dtype)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        s = super().step(x)
        self.since = torch.where(s > 0, torch.zeros_like(self.since), self.since + 1)
        return s


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lockout", type=float, default=50.0, help="lockout after a spike (ms)")
    p.add_argument("--refrac", type=float, default=None, help="instead: refractory period (ms)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then examples/mnist_stdp.py's")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if args.refrac is not None:
        refrac = args.refrac

        class Model(diehl_cook.DiehlCook2015):
            def __init__(self, *a, **k):
                k.setdefault("exc_refrac", refrac)
                super().__init__(*a, **k)

        mnist_stdp.DiehlCook2015 = Model
    elif args.lockout > 0:
        LockoutAdaptiveLIF.LOCKOUT_MS = args.lockout
        diehl_cook.AdaptiveLIFNeuron = LockoutAdaptiveLIF  # the excitatory layer's class
    mnist_stdp.main(rest)


if __name__ == "__main__":
    main()
