r"""Forward + backward time of one Linear + LIF layer trained with surrogate gradients.

The open-neuromorphic SNN library benchmark configuration: batch 16, 500 time steps, a dense
``Linear(N, N)`` followed by ``N`` LIF neurons, ``N`` = 4096 and 16384; input ``(T, B, N)`` random
currents; loss = sum of all output spikes; time = one forward pass over all steps plus
``loss.backward()``. Every library runs the same loop, one step at a time::

    for t in range(T):  s_t = LIF(Linear(x_t))

- **pysnn**: ``pysnn.connection.Linear`` + ``pysnn.neuron.LIFNeuron`` (thresh 1, rest/reset 0,
  tau_v 10 ms, no refractory period, ``FastSigmoid`` surrogate), value checks off;
- **snnTorch** (if installed): ``nn.Linear`` + ``snntorch.Leaky(beta=exp(-1/10), threshold=1,
  reset_mechanism="zero", spike_grad=fast_sigmoid)``;
- **Norse** (if installed): ``nn.Linear`` + ``norse.torch.LIFBoxCell`` (leaky integrator without
  synaptic current, reset to 0, SuperSpike surrogate).

Prints the median over ``--repeats`` timed runs (after one warm-up run) and the ratio
pysnn / peer (< 1: pysnn is faster). The full configuration takes minutes per library on a
laptop CPU; shrink it with ``--neurons``, ``--steps``, ``--batch``, ``--repeats``::

    python benchmarks/surrogate_lif.py --neurons 1024 4096 --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pysnn  # noqa: E402
from pysnn.connection import Linear  # noqa: E402
from pysnn.neuron import LIFNeuron  # noqa: E402
from pysnn.surrogate import FastSigmoid  # noqa: E402

TAU_V = 10.0  # ms, dt = 1 ms
SCALE = 10.0  # surrogate steepness (1 / threshold units)

# A benchmark case builds a closure that runs forward + backward once on the given input.
Runner = Callable[[torch.Tensor], None]


def build_pysnn(n: int) -> Runner:
    fc = Linear(n, n)
    lif = LIFNeuron(
        n,
        thresh=1.0,
        v_rest=0.0,
        v_reset=0.0,
        tau_v=TAU_V,
        refrac=0.0,
        surrogate=FastSigmoid(SCALE),
    )

    def run(x: torch.Tensor) -> None:
        fc.zero_grad(set_to_none=True)
        lif.reset_state()
        total = 0.0
        for t in range(x.shape[0]):
            total = total + lif(fc(x[t])).sum()
        total.backward()

    return run


def build_snntorch(n: int) -> Optional[Runner]:
    try:
        import snntorch
        from snntorch import surrogate
    except ImportError:
        return None
    fc = torch.nn.Linear(n, n, bias=False)
    lif = snntorch.Leaky(
        beta=math.exp(-1.0 / TAU_V),
        threshold=1.0,
        reset_mechanism="zero",
        spike_grad=surrogate.fast_sigmoid(slope=SCALE),
    )

    def run(x: torch.Tensor) -> None:
        fc.zero_grad(set_to_none=True)
        mem = lif.init_leaky()
        total = 0.0
        for t in range(x.shape[0]):
            spk, mem = lif(fc(x[t]), mem)
            total = total + spk.sum()
        total.backward()

    return run


def build_norse(n: int) -> Optional[Runner]:
    try:
        from norse.torch import LIFBoxCell, LIFBoxParameters
    except ImportError:
        return None
    fc = torch.nn.Linear(n, n, bias=False)
    params = LIFBoxParameters(
        tau_mem_inv=torch.tensor(1000.0 / TAU_V),  # 1/s; norse's dt is 1 ms = 1e-3 s
        v_leak=torch.tensor(0.0),
        v_th=torch.tensor(1.0),
        v_reset=torch.tensor(0.0),
        method="super",
        alpha=torch.tensor(SCALE),
    )
    lif = LIFBoxCell(params)

    def run(x: torch.Tensor) -> None:
        fc.zero_grad(set_to_none=True)
        state = None
        total = 0.0
        for t in range(x.shape[0]):
            spk, state = lif(fc(x[t]), state)
            total = total + spk.sum()
        total.backward()

    return run


BUILDERS: Dict[str, Callable[[int], Optional[Runner]]] = {
    "pysnn": build_pysnn,
    "snntorch": build_snntorch,
    "norse": build_norse,
}


def time_runner(run: Runner, x: torch.Tensor, repeats: int) -> List[float]:
    run(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return times


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Forward+backward time of Linear + LIF (surrogate gradients): pysnn vs "
        "snnTorch and Norse (open-neuromorphic benchmark configuration).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--neurons", type=int, nargs="+", default=[4096, 16384], help="layer sizes")
    p.add_argument("--steps", type=int, default=500, help="time steps")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (median shown)")
    p.add_argument(
        "--libraries",
        nargs="+",
        default=list(BUILDERS),
        choices=list(BUILDERS),
        help="libraries to time",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("steps", "batch", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be > 0")
    if min(args.neurons) <= 0:
        p.error("--neurons must be > 0")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[int, Dict[str, float]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pysnn.set_checks(False)  # no per-step NaN host reads
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
        f"{args.steps} steps, median of {args.repeats} (forward + backward, seconds)"
    )
    results: Dict[int, Dict[str, float]] = {}
    for n in args.neurons:
        torch.manual_seed(args.seed)
        x = torch.rand(args.steps, args.batch, n) * 0.5
        results[n] = {}
        for name in args.libraries:
            run = BUILDERS[name](n)
            if run is None:
                print(f"  N={n:6d}  {name:9s} not installed")
                continue
            median = statistics.median(time_runner(run, x, args.repeats))
            results[n][name] = median
            print(f"  N={n:6d}  {name:9s} {median:9.3f} s", flush=True)
            del run
        if "pysnn" in results[n]:
            for peer in ("snntorch", "norse"):
                if peer in results[n]:
                    ratio = results[n]["pysnn"] / results[n][peer]
                    print(f"  N={n:6d}  pysnn / {peer}: {ratio:.2f}")
    return results


if __name__ == "__main__":
    main()
