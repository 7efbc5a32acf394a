r"""User-written modules through the engine: a user's LIF neuron against the built-in one.

The network of the engine issue: an :class:`~pysnn.network.SNNNetwork` whose ``forward`` is one
step, ``Linear(n, n)`` → LIF, ``n`` = 2048, ``T`` = 100, batch 16, 10 % input spikes, run by
``Unroll(net)`` (the engine plans it layer-wise). Cases, timed interleaved in one run:

- ``builtin``: :class:`~pysnn.neuron.LIFNeuron` (fused multi-step kernel);
- ``user``: a current-based LIF written by a user in 15 lines (``register_constant``,
  ``register_state``, ``step``), stepped by the engine once per step as torch operations;
- ``torch``: plain torch autograd written step by step (``nn.Linear`` + the same LIF equations),
  under BPTT only.

Without gradient it prints ``user / builtin``, for the network, the neurons alone and the
neurons stepped in a Python loop (the user's neuron through its generated single step after
``GENERATE_AFTER`` steps, and with its torch step); with ``--grad`` (forward + backward of the sum of
spikes) also ``torch / user`` and ``torch / builtin``. Writes
``benchmarks/results/engine_user_modules[_grad].json``.

    python benchmarks/engine_user_modules.py --threads 2 [--grad]
"""

from __future__ import annotations

import argparse
import json
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
from pysnn.engine import explain  # noqa: E402
from pysnn.multistep import Unroll  # noqa: E402
from pysnn.network import SNNNetwork  # noqa: E402
from pysnn.neuron import LIFNeuron, Neuron  # noqa: E402
from pysnn.surrogate import FastSigmoid  # noqa: E402

TAU_V = 10.0  # ms


class UserLIF(Neuron):
    """A user's current-based LIF: v <- v e^{-dt/tau_v} + x; spike at thresh; reset to 0."""

    def __init__(self, shape, dt=1.0, *, tau_v=TAU_V, thresh=1.0, **kwargs):
        super().__init__(shape, dt, **kwargs)
        self.register_constant("tau_v", tau_v, positive=True)
        self.register_constant("thresh", thresh)
        self.register_state("v", 0.0)

    def step(self, x):
        self.v = self.v * torch.exp(-self.dt / self.tau_v) + x
        s = self.fire(self.v - self.thresh)
        self.v = self.v * (1 - s)
        return s


class Net(SNNNetwork):
    def __init__(self, n: int, neuron: Neuron) -> None:
        super().__init__()
        self.fc, self.lif = Linear(n, n, bias=False), neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.fc(x))


def builtin(n: int) -> Net:
    return Net(
        n,
        LIFNeuron(
            n,
            thresh=1.0,
            v_rest=0.0,
            v_reset=0.0,
            tau_v=TAU_V,
            refrac=0.0,
            surrogate=FastSigmoid(10.0),
        ),
    )


def user(n: int) -> Net:
    return Net(n, UserLIF(n, surrogate=FastSigmoid(10.0)))


def torch_runner(n: int) -> Callable[[torch.Tensor], None]:
    fc = torch.nn.Linear(n, n, bias=False)
    beta = math.exp(-1.0 / TAU_V)

    def run(x: torch.Tensor) -> None:
        fc.zero_grad(set_to_none=True)
        v = torch.zeros(x.shape[1], n)
        total = 0.0
        for t in range(x.shape[0]):
            v = beta * v + fc(x[t])
            h = v - 1.0
            soft = h / (1.0 + 10.0 * h.abs())
            s = (h >= 0).to(h.dtype) + soft - soft.detach()
            v = (1.0 - s) * v
            total = total + s.sum()
        total.backward()

    return run


def unroll_runner(net: Net, grad: bool) -> Callable[[torch.Tensor], None]:
    unroll = Unroll(net)

    def run(x: torch.Tensor) -> None:
        if grad:
            net.zero_grad(set_to_none=True)
            unroll(x).sum().backward()
        else:
            with torch.no_grad():
                unroll(x)

    return run


def _median_times(
    runners: Dict[str, Callable[[torch.Tensor], object]], x: torch.Tensor, repeats: int
) -> Dict[str, float]:
    """Median time (s) of each runner on ``x``, after one warm-up, repeats interleaved."""
    times: Dict[str, List[float]] = {name: [] for name in runners}
    for run in runners.values():
        run(x)
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def step_loop(args: argparse.Namespace, g: torch.Generator) -> Dict[str, Dict[str, float]]:
    """The neurons alone stepped in a Python loop (``for x_t in x: neuron(x_t)``), in µs per
    step: the built-in ``LIFNeuron`` (its fused step), the user's LIF after
    ``GENERATE_AFTER`` steps (its generated kernel), and the user's LIF with generation off
    (its torch step). Two sizes: 100 neurons at batch 1, ``--neurons`` at ``--batch``."""
    out: Dict[str, Dict[str, float]] = {}
    for n, batch in ((100, 1), (args.neurons, args.batch)):
        currents = torch.randn(300, batch, n, generator=g) * 0.5
        torch_step = UserLIF(n, surrogate=FastSigmoid(10.0))
        torch_step.GENERATE_AFTER = None
        neurons = {
            "builtin": builtin(n).lif,
            "user (generated)": UserLIF(n, surrogate=FastSigmoid(10.0)),
            "user (torch step)": torch_step,
        }

        def runner(neuron: Neuron) -> Callable[[torch.Tensor], None]:
            def run(x: torch.Tensor) -> None:
                for x_t in x:
                    neuron(x_t)

            return run

        with torch.no_grad():
            for neuron in neurons.values():  # past GENERATE_AFTER: the kernel exists
                runner(neuron)(currents[:100])
            spikes = {k: torch.stack([m(x_t) for x_t in currents]) for k, m in neurons.items()}
            same_spikes = all(torch.equal(spikes["builtin"], v) for v in spikes.values())
            seconds = _median_times({k: runner(m) for k, m in neurons.items()}, currents, 5)
        us = {k: v / currents.shape[0] * 1e6 for k, v in seconds.items()}
        key = f"{n} neurons, batch {batch}"
        out[key] = us
        how = neurons["user (generated)"].generated_step
        print(f"  Python step loop, {key} (same spikes: {same_spikes}; user's step: {how}):")
        for k, v in us.items():
            print(f"    {k:18s} {v:7.1f} us/step  ({v / us['builtin']:.2f}x builtin)")
    return out


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--neurons", type=int, default=2048)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--grad", action="store_true", help="forward + backward (BPTT)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pysnn.set_checks(False)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.steps, args.batch, args.neurons, generator=g) < args.density).float()
    torch.manual_seed(0)
    nets = {"builtin": builtin(args.neurons), "user": user(args.neurons)}
    nets["user"].fc.weight.data.copy_(nets["builtin"].fc.weight)
    runners = {name: unroll_runner(net, args.grad) for name, net in nets.items()}
    if args.grad:
        runners["torch"] = torch_runner(args.neurons)
    for name, net in nets.items():
        e = explain(net, x)
        print(f"{name}: plan {e.plan}, fused {e.fused}, fallbacks {e.fallbacks}")
    with torch.no_grad():  # the same spikes
        same = torch.equal(Unroll(nets["builtin"])(x), Unroll(nets["user"])(x))
    print(f"builtin and user networks give the same spikes: {same}")
    median = _median_times(runners, x, args.repeats)
    mode = "forward + backward" if args.grad else "forward, no gradient"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; n={args.neurons}, "
        f"T={args.steps}, B={args.batch}, {mode}; median of {args.repeats} (s)"
    )
    for name, seconds in median.items():
        print(f"  {name:8s} {seconds:8.3f} s")
    print(f"  user / builtin: {median['user'] / median['builtin']:.2f}x")
    if args.grad:
        print(f"  torch / user: {median['torch'] / median['user']:.2f}x")
        print(f"  torch / builtin: {median['torch'] / median['builtin']:.2f}x")
    neuron = {}
    if not args.grad:  # the neurons alone, T steps of input currents: where a kernel counts
        currents = torch.randn(args.steps, args.batch, args.neurons, generator=g) * 0.5
        alone = {name: Unroll(net.lif) for name, net in nets.items()}
        with torch.no_grad():
            same_alone = torch.equal(alone["builtin"](currents), alone["user"](currents))
            neuron = _median_times(alone, currents, args.repeats)
        print(f"  neurons alone (same spikes: {same_alone}):")
        for name, seconds in neuron.items():
            print(f"  {name:8s} {seconds:8.4f} s")
        print(f"  user / builtin, neurons alone: {neuron['user'] / neuron['builtin']:.2f}x")
    loop = {}
    if not args.grad:  # a Python step loop of the neurons: the generated single step
        loop = step_loop(args, g)
    name = f"engine_user_modules{'_grad' if args.grad else ''}.json"
    result = {"args": vars(args), "seconds": median, "same_spikes": same, "neurons_alone": neuron}
    result["step_loop_us"] = loop
    (REPO / "benchmarks" / "results" / name).write_text(json.dumps(result, indent=2))
    return median


if __name__ == "__main__":
    main()
