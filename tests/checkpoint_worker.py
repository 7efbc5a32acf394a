"""A small STDP training run that checkpoints after every sample (run by test_reliability.py).

``python checkpoint_worker.py CHECKPOINT RESULT``: resumes from CHECKPOINT if it exists, trains the
remaining samples (saving after each), then writes the final weight to RESULT. Prints ``ready``
once torch is imported, so that the test kills it while it trains.
"""

from __future__ import annotations

import os
import sys

import torch

import pysnn
from pysnn.checkpoint import load_checkpoint, save_checkpoint
from pysnn.connection import Linear
from pysnn.learning import TripletSTDP
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron

SAMPLES, STEPS = 40, 15


class Net(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.inp = Input(12)
        self.fc = Linear(12, 5, delay=2.0, propagation="dense", wmin=0.0, wmax=1.0)
        self.lif = LIFNeuron(5, refrac=2.0, thresh=-60.0)
        self.add_layer("fc", self.fc, self.lif)
        self.rule = TripletSTDP("fc", pre=self.inp, network=self, a2_plus=0.01, a2_minus=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(self.fc(self.inp(x)))
        self.rule.step()
        return s


def main(checkpoint: str, result: str) -> None:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.fc.weight.uniform_(0.0, 1.0)
    position = 0
    if os.path.exists(checkpoint):
        position = load_checkpoint(checkpoint, network=net)["position"]
    print("ready", flush=True)
    with torch.no_grad(), pysnn.checks(False):
        while position < SAMPLES:
            for _ in range(STEPS):  # the state carries over between samples
                net((torch.rand(2, 12) < 0.3).float())
            position += 1
            save_checkpoint(checkpoint, network=net, extra={"position": position})
    torch.save(net.fc.weight.detach().clone(), result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
