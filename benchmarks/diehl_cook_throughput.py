"""Diehl & Cook (2015) training throughput: pysnn against BindsNET's ``DiehlAndCook2015``.

Both simulators train the same network (784 inputs, ``--n-neurons`` excitatory + inhibitory LIF
neurons, current-based synapses, STDP on the input weights with nu = (1e-4, 1e-2), weight
normalisation to 78.4) on the **same** Poisson spike trains of real MNIST digits (``--time`` steps
of 1 ms each), one digit at a time, interleaved digit by digit so background load hits both alike.
Timed: the simulation with learning of each digit plus the state reset (no data loading, no
intensity-raising repeats, identical work for both).

pysnn variants, each training its own copy of the network (same initial weights):

- ``pysnn``: ``DiehlCook2015.run``, which runs the steps through ``pysnn.multistep.run_layers``
  (one fused call for runs of steps);
- ``pysnn user net``: the same network written here from the public modules, as a user would,
  whose ``run`` calls ``run_layers`` (the speed is not reserved for ``pysnn.models``);
- ``pysnn user Unroll``: the same user-written network trained through the documented sequence
  call, ``Unroll(net)(spikes)``: the engine captures its ``forward`` (lateral inhibition read
  from the step before, STDP stepped in ``forward``) and plans it as a network of layers;
- ``pysnn step loop``: ``forward`` called once per step from Python (each module on its fused
  single-step path);
- ``--batch-size`` digits at once (BindsNET's ``DiehlAndCook2015`` model is trained one digit at
  a time in its MNIST example).

Prints digits/s of each and the ratio pysnn / BindsNET; never asserts times.

    python benchmarks/diehl_cook_throughput.py --n-neurons 100 --digits 30 --time 350
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional, Union

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pysnn  # noqa: E402
from pysnn.connection import Linear  # noqa: E402
from pysnn.datasets import MNISTSample  # noqa: E402
from pysnn.learning import STDP  # noqa: E402
from pysnn.models import DiehlCook2015  # noqa: E402
from pysnn.multistep import Unroll, run_layers  # noqa: E402
from pysnn.network import SNNNetwork  # noqa: E402
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron  # noqa: E402


def poisson_digits(n: int, steps: int, intensity: float, seed: int) -> torch.Tensor:
    """Spike trains ``(n, T, 784)`` of the first ``n`` bundled training digits."""
    images = MNISTSample(train=True).data[:n].reshape(n, -1).float()
    rates = images / 255.0 * intensity
    prob = -torch.expm1(-rates / 1000.0)
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((n, steps, 784), generator=gen) < prob[:, None]).float()


def build_bindsnet(n_neurons: int):
    from bindsnet_paper import _import_bindsnet

    _import_bindsnet()
    from bindsnet.models import DiehlAndCook2015

    net = DiehlAndCook2015(
        n_inpt=784,
        n_neurons=n_neurons,
        exc=22.5,
        inh=120.0,
        dt=1.0,
        norm=78.4,
        nu=(1e-4, 1e-2),
        theta_plus=0.05,
        inpt_shape=(1, 28, 28),
    )

    def train(spikes: torch.Tensor) -> None:  # spikes (T, 784)
        net.run(inputs={"X": spikes.view(spikes.shape[0], 1, 1, 28, 28)}, time=spikes.shape[0])
        net.reset_state_variables()

    return train


class UserDiehlCook(SNNNetwork):
    """Diehl & Cook's network as a user writes it from pysnn's public modules."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.inp = Input(784, tau_trace=20.0)
        self.fc = Linear(784, n, wmin=0.0, wmax=1.0, init="uniform", init_kwargs={"b": 0.3})
        self.exc = AdaptiveLIFNeuron(
            n, thresh=-52.0, v_rest=-65.0, v_reset=-65.0, tau_v=100.0, refrac=5.0,
            tau_trace=20.0, theta_plus=0.05, tau_theta=1e7, theta_shared=True,
        )  # fmt: skip
        self.inh = LIFNeuron(n, thresh=-40.0, v_rest=-60.0, v_reset=-45.0, tau_v=10.0, refrac=2.0)
        self.e2i, self.i2e = Linear(n, n), Linear(n, n)
        with torch.no_grad():
            self.e2i.weight.copy_(22.5 * torch.eye(n))
            self.i2e.weight.copy_(-120.0 * (1 - torch.eye(n)))
        self.stdp = STDP(connection=self.fc, pre=self.inp, post=self.exc, nu=(1e-4, 1e-2))
        self.fc.normalize(78.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        current = self.fc(x)
        if self.inh.spikes is not None and self.inh.spikes.shape[0] == x.shape[0]:
            current = current + self.i2e(self.inh.spikes)
        exc = self.exc(current)
        self.inh(self.e2i(exc))
        self.stdp.step()
        return exc

    @torch.no_grad()
    def run(self, spikes: torch.Tensor) -> torch.Tensor:
        self.reset_state()
        layers = [
            (self.exc, [(self.fc, self.inp), (self.i2e, self.inh)]),
            (self.inh, [(self.e2i, self.exc)]),
        ]
        counts = run_layers(self.inp, layers, spikes, [self.stdp], record=[self.exc], counts=True)
        self.fc.normalize(78.4)
        return counts[0]


def build_pysnn(n_neurons: int, variant: str = "run", device: Union[str, torch.device] = "cpu"):
    """A pysnn runner; every variant starts from the same weights, so all give the same spikes.

    The network is moved to ``device``; the runner expects spikes ``(T, B, 784)`` there.
    """
    torch.manual_seed(0)
    net = DiehlCook2015(n_neurons=n_neurons)
    if variant in ("user", "unroll"):
        weight = net.fc.weight.detach()
        net = UserDiehlCook(n_neurons)
        with torch.no_grad():
            net.fc.weight.copy_(weight)
    net = net.to(device)

    if variant == "unroll":
        unroll = Unroll(net)  # resets the state at the start of every call

        def train_unroll(spikes: torch.Tensor) -> torch.Tensor:
            counts = unroll(spikes).sum(0)
            net.fc.normalize(78.4)
            return counts

        return train_unroll

    def train(spikes: torch.Tensor) -> torch.Tensor:  # spikes (T, B, 784) -> counts (B, N)
        if variant != "loop":
            return net.run(spikes)
        net.reset_state()
        counts = sum(net(x) for x in spikes)
        net.fc.normalize(78.4)
        return counts

    return train


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n-neurons", type=int, nargs="+", default=[100])
    parser.add_argument("--digits", type=int, default=20, help="digits timed per simulator")
    parser.add_argument("--time", type=int, default=350, help="steps of 1 ms per digit")
    parser.add_argument("--batch-size", type=int, default=16, help="pysnn batched variant")
    parser.add_argument("--intensity", type=float, default=63.75)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pysnn.set_checks(False)
    digits = poisson_digits(max(args.digits, args.batch_size), args.time, args.intensity, args.seed)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.time} steps/digit")
    for n in args.n_neurons:
        runners = {
            "pysnn": build_pysnn(n),
            "pysnn user net": build_pysnn(n, "user"),
            "pysnn user Unroll": build_pysnn(n, "unroll"),
            "pysnn step loop": build_pysnn(n, "loop"),
        }
        try:
            runners["bindsnet"] = build_bindsnet(n)
        except ImportError as err:
            print(f"bindsnet not installed ({err}); timing pysnn only")
        times = {name: [] for name in runners}
        same = True  # the pysnn variants' spike counts, digit by digit
        with torch.no_grad():
            for name, runner in runners.items():  # warm-up
                runner(digits[0] if name == "bindsnet" else digits[0][:, None])
            for i in range(args.digits):
                counts = []
                for name, runner in runners.items():
                    x = digits[i] if name == "bindsnet" else digits[i][:, None]
                    start = time.perf_counter()
                    out = runner(x)
                    times[name].append(time.perf_counter() - start)
                    if name != "bindsnet":
                        counts.append(out)
                same = same and all(torch.equal(counts[0], c) for c in counts[1:])
            batched = build_pysnn(n)
            batch = digits[: args.batch_size].transpose(0, 1)
            batched(batch)
            start = time.perf_counter()
            batched(batch)
            batch_rate = args.batch_size / (time.perf_counter() - start)
        rates = {name: 1.0 / statistics.median(t) for name, t in times.items()}
        for name, rate in rates.items():
            step = 1e6 / (rate * args.time)
            print(f"n={n}: {name:16s} {rate:8.1f} digits/s ({step:6.1f} us/step, batch 1)")
        print(f"n={n}: pysnn batch {args.batch_size:<5d} {batch_rate:8.1f} digits/s")
        print(f"n={n}: the pysnn variants gave the same spikes on every digit: {same}")
        if "bindsnet" in rates:
            theirs = rates["bindsnet"]
            ratios = ", ".join(
                f"{name} {rate / theirs:.2f}x" for name, rate in rates.items() if name != "bindsnet"
            )
            print(
                f"n={n}: ratio to bindsnet (batch 1): {ratios}; pysnn batch "
                f"{args.batch_size} {batch_rate / theirs:.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
