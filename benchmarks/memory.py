"""Memory of the BindsNET-paper network in pysnn, each mode in a fresh process.

Builds the network of ``bindsnet_paper.py`` (n Poisson inputs → n LIF neurons, all-to-all float32
weights, 1000 steps of 1 ms) in a new Python process per mode and reports, from
``/proc/self/status``:

- ``baseline``: resident set after ``import torch, pysnn`` (the interpreter and libraries);
- ``peak``: peak resident set (VmHWM) over build + simulation;
- ``added``: peak - baseline, the memory the simulation itself needs;
- ``weights``: ``n * n * 4`` bytes, the floor for any simulator storing the weights.

Modes: ``loop`` (``Input`` + ``Linear`` + ``LIFNeuron`` step loop, the Poisson input generated step
by step) and ``multistep`` (:func:`pysnn.multistep.run_feedforward` on the (T, 1, n) spike train
generated at once, as in ``bindsnet_paper.py``). Never asserts; prints a markdown table.

    python benchmarks/memory.py --sizes 10000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(n: int, mode: str, steps: int) -> None:
    """Run one mode in this (fresh) process and print a JSON line."""
    sys.path.insert(0, str(ROOT))
    import torch

    import pysnn
    from pysnn.connection import Linear
    from pysnn.encoding import PoissonEncoder
    from pysnn.multistep import run_feedforward
    from pysnn.neuron import Input, LIFNeuron

    pysnn.native.available()  # load the kernels before the baseline
    baseline = _status_mb("VmRSS")
    pysnn.set_checks(False)
    g = torch.Generator().manual_seed(0)
    rates = torch.rand(1, n, generator=g) * 100.0  # Hz
    with torch.no_grad():
        inp, fc = Input(n), Linear(n, n)
        fc.weight.normal_(generator=g)  # in place: no second copy of the weights
        lif = LIFNeuron(n, thresh=-52.0, v_rest=-65.0, v_reset=-65.0, tau_v=100.0, refrac=5.0)
        if mode == "loop":
            p = -torch.expm1(-rates * 1e-3)  # spike probability per 1 ms step
            count = torch.zeros(1, n)
            for _ in range(steps):
                count += lif(fc(inp((torch.rand(1, n, generator=g) < p).float())))
        else:
            spikes = PoissonEncoder(steps * 1.0, dt=1.0, shape=n)(rates)  # (T, 1, n)
            count = run_feedforward(fc, lif, spikes).sum(0)
    peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {
                "baseline": baseline,
                "peak": peak,
                "added": peak - baseline,
                "weights": n * n * 4 / 2**20,
                "spikes": int(count.sum()),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--modes", nargs="+", default=["loop", "multistep"])
    parser.add_argument("--_worker", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        worker(int(args._worker[0]), args._worker[1], args.steps)
        return
    lines = [
        "| n | mode | weights (MB) | baseline (MB) | peak (MB) | added (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--steps", str(args.steps), "--_worker", str(n), mode]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            lines.append(
                f"| {n} | {mode} | {r['weights']:.0f} | {r['baseline']:.0f} | {r['peak']:.0f} | "
                f"{r['added']:.0f} |"
            )
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
