"""Diehl & Cook (2015) training throughput: pysnn against BindsNET's ``DiehlAndCook2015``.

Both simulators train the same network (784 inputs, ``--n-neurons`` excitatory + inhibitory LIF
neurons, current-based synapses, STDP on the input weights with nu = (1e-4, 1e-2), weight
normalisation to 78.4) on the **same** Poisson spike trains of real MNIST digits (``--time`` steps
of 1 ms each), one digit at a time, interleaved digit by digit so background load hits both alike.
Timed: the simulation with learning of each digit plus the state reset (no data loading, no
intensity-raising repeats, identical work for both).

Also reported: pysnn with ``--batch-size`` digits at once (BindsNET's ``DiehlAndCook2015`` model is
trained one digit at a time in its MNIST example).

Prints digits/s of each and the ratio pysnn / BindsNET; never asserts times.

    python benchmarks/diehl_cook_throughput.py --n-neurons 100 --digits 30 --time 350
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pysnn  # noqa: E402
from pysnn.datasets import MNISTSample  # noqa: E402
from pysnn.models import DiehlCook2015  # noqa: E402


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


def build_pysnn(n_neurons: int):
    net = DiehlCook2015(n_neurons=n_neurons)

    def train(spikes: torch.Tensor) -> None:  # spikes (T, B, 784)
        net.run(spikes)

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
        ours = build_pysnn(n)
        try:
            theirs = build_bindsnet(n)
        except ImportError as err:
            theirs = None
            print(f"bindsnet not installed ({err}); timing pysnn only")
        times = {"pysnn": [], "bindsnet": []}
        with torch.no_grad():
            ours(digits[0][:, None])  # warm-up
            if theirs:
                theirs(digits[0])
            for i in range(args.digits):
                start = time.perf_counter()
                ours(digits[i][:, None])
                times["pysnn"].append(time.perf_counter() - start)
                if theirs:
                    start = time.perf_counter()
                    theirs(digits[i])
                    times["bindsnet"].append(time.perf_counter() - start)
            batched = build_pysnn(n)
            batch = digits[: args.batch_size].transpose(0, 1)
            batched(batch)
            start = time.perf_counter()
            batched(batch)
            batch_rate = args.batch_size / (time.perf_counter() - start)
        rate = 1.0 / statistics.median(times["pysnn"])
        print(
            f"n={n}: pysnn {rate:.1f} digits/s (batch 1), {batch_rate:.1f} digits/s "
            f"(batch {args.batch_size})"
        )
        if theirs:
            theirs_rate = 1.0 / statistics.median(times["bindsnet"])
            print(
                f"n={n}: bindsnet {theirs_rate:.1f} digits/s; ratio pysnn/bindsnet: "
                f"{rate / theirs_rate:.2f}x (batch 1), {batch_rate / theirs_rate:.2f}x "
                f"(pysnn batch {args.batch_size})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
