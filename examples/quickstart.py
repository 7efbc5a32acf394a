"""Quickstart: the classic two-layer network.

100 Bernoulli(p=0.1) input neurons drive 1000 LIF neurons all-to-all; the LIF neurons inhibit each
other weakly, all-to-all, through a recurrent connection with a 1 ms delay. 500 steps of 1 ms.
Prints spike counts and firing rates.

    python examples/quickstart.py [--steps 500] [--batch 1] [--seed 0] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from pysnn.connection import Linear
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron


class TwoLayer(SNNNetwork):
    """Input (n_in) -> LIF (n_out) with weak recurrent inhibition among the LIF neurons."""

    def __init__(self, n_in: int = 100, n_out: int = 1000, dt: float = 1.0) -> None:
        super().__init__()
        self.inp = Input(n_in, dt=dt)
        self.fc = Linear(n_in, n_out, dt=dt, init="uniform", init_kwargs={"a": 0.0, "b": 0.3})
        self.lif = LIFNeuron(n_out, dt=dt)
        self.inhib = Linear(
            n_out, n_out, dt=dt, delay=dt, init="constant", init_kwargs={"val": -0.05}
        )
        self.add_layer("fc", self.fc, self.lif)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """One step: input spikes ``(B, n_in)`` -> LIF spikes ``(B, n_out)``."""
        x = self.fc(self.inp(spikes))
        previous = self.lif.spikes if self.lif.spikes is not None else x.new_zeros(x.shape)
        return self.lif(x + self.inhib(previous))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=500, help="time steps of 1 ms")
    parser.add_argument("--batch", type=int, default=1, help="independent simulations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    net = TwoLayer().to(args.device)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    counts_in = torch.zeros(args.batch, 100, device=args.device)
    counts = torch.zeros(args.batch, 1000, device=args.device)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(args.steps):
            x = (torch.rand(args.batch, 100, generator=gen, device=args.device) < 0.1).float()
            counts_in += x
            counts += net(x)
    elapsed = time.perf_counter() - start
    seconds = args.steps * net.lif.dt / 1000.0
    print(f"simulated {args.steps} steps ({seconds:.3f} s) in {elapsed:.3f} s wall time")
    print(f"input spikes: {int(counts_in.sum())}, mean rate {counts_in.mean() / seconds:.1f} Hz")
    print(f"LIF spikes:   {int(counts.sum())}, mean rate {counts.mean() / seconds:.1f} Hz")
    print(f"LIF neurons that fired: {int((counts > 0).sum())} of {counts.numel()}")
    print(f"spike counts of the first 10 LIF neurons: {counts[0, :10].int().tolist()}")


if __name__ == "__main__":
    main()
