r"""Forward + backward time of one Linear + LIF layer trained with surrogate gradients (BPTT).

The open-neuromorphic SNN library benchmark configuration: batch 16, ``T`` time steps, a dense
``Linear(N, N)`` followed by ``N`` LIF neurons; input ``(T, B, N)``: random currents
(``--input currents``, the benchmark's) or 0/1 spikes of a given density (``--input spikes``);
loss = sum of all output spikes; time = one forward pass over all steps plus ``loss.backward()``.

- **pysnn multi-step** (``pysnn-multi``): ``fc.forward_multistep`` (one ``(T*B, N) @ W^T`` product)
  and ``lif.forward_multistep`` (one autograd Function: fused forward and backward kernels over
  the ``T`` steps, see :func:`pysnn.functional.lif.lif_trace_steps`);
- **pysnn step loop** (``pysnn-step``): ``for t: s_t = lif(fc(x_t))``, as a user writes it;
- **pysnn Unroll** (``pysnn-unroll``): the same step written as an ``SNNNetwork`` whose
  ``forward`` is one step, run by ``Unroll(net)``: the engine captures the step and plans it
  layer-wise (the products and fused calls of ``pysnn-multi``, found by itself);
- **plain torch** (``torch``): ``nn.Linear`` + the LIF step written with torch operations
  (``v = beta v + W x_t``, fast-sigmoid surrogate, reset to zero), step by step;
- **snnTorch** 1.0 (if installed): ``nn.Linear`` + ``snntorch.Leaky`` (reset to zero), per step;
- **Norse** 1.1 (if installed): ``nn.Linear`` + ``norse.torch.LIFBoxCell``, per step;
- **SpikingJelly** 2.0 (if installed): ``nn.Linear`` on all steps at once + ``LIFNode`` in its
  multi-step mode (``step_mode="m"``, ``decay_input=False``, ``tau`` chosen so that its Euler
  decay ``1 - 1/tau`` equals ``exp(-dt/tau_v)``), ``SuperSpike`` surrogate.

All: threshold 1, reset to 0, ``tau_v`` = 10 ms (``beta = exp(-0.1)``), no refractory period,
fast-sigmoid (SuperSpike) surrogate of slope 10. Prints the median over ``--repeats`` timed runs
(after one warm-up run; the repeats are interleaved over the libraries) and each peer's time
divided by pysnn multi-step's ("x" = how many times faster pysnn is), and checks that pysnn's
two modes give the same weight gradient. With ``--memory`` each case also runs once in a fresh process and reports its peak resident memory.
The full configuration (T = 500, N = 4096 and 16384) takes minutes per library; shrink it::

    python benchmarks/surrogate_lif.py --neurons 1024 4096 --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pysnn  # noqa: E402
from pysnn.connection import Linear  # noqa: E402
from pysnn.multistep import Unroll  # noqa: E402
from pysnn.network import SNNNetwork  # noqa: E402
from pysnn.neuron import LIFNeuron  # noqa: E402
from pysnn.surrogate import FastSigmoid  # noqa: E402

TAU_V = 10.0  # ms, dt = 1 ms
SCALE = 10.0  # surrogate steepness (1 / threshold units)

# A benchmark case builds a closure that runs forward + backward once on the given input.
Runner = Callable[[torch.Tensor], torch.Tensor]  # returns the weight gradient
Device = Union[str, torch.device]


def _pysnn_layer(n: int, device: Device = "cpu") -> Tuple[Linear, LIFNeuron]:
    fc = Linear(n, n, bias=False)
    lif = LIFNeuron(
        n,
        thresh=1.0,
        v_rest=0.0,
        v_reset=0.0,
        tau_v=TAU_V,
        refrac=0.0,
        surrogate=FastSigmoid(SCALE),
    )
    return fc.to(device), lif.to(device)


def build_pysnn_multi(n: int, device: Device = "cpu") -> Optional[Runner]:
    fc, lif = _pysnn_layer(n, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        fc.zero_grad(set_to_none=True)
        fc.reset_state(), lif.reset_state()
        lif.forward_multistep(fc.forward_multistep(x)).sum().backward()
        return fc.weight.grad

    return run


def build_pysnn_step(n: int, device: Device = "cpu") -> Optional[Runner]:
    fc, lif = _pysnn_layer(n, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        fc.zero_grad(set_to_none=True)
        fc.reset_state(), lif.reset_state()
        total = 0.0
        for t in range(x.shape[0]):
            total = total + lif(fc(x[t])).sum()
        total.backward()
        return fc.weight.grad

    return run


class _StepNet(SNNNetwork):
    """What a user writes: one step in ``forward``, built-in modules."""

    def __init__(self, n: int, device: Device = "cpu") -> None:
        super().__init__()
        self.fc, self.lif = _pysnn_layer(n, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.fc(x))


def build_pysnn_unroll(n: int, device: Device = "cpu") -> Optional[Runner]:
    net = _StepNet(n, device)
    unroll = Unroll(net)  # the engine plans the sequence: layer-wise over all T steps

    def run(x: torch.Tensor) -> torch.Tensor:
        net.zero_grad(set_to_none=True)
        unroll(x).sum().backward()
        return net.fc.weight.grad

    return run


def build_torch(n: int, device: Device = "cpu") -> Optional[Runner]:
    fc = torch.nn.Linear(n, n, bias=False, device=device)
    beta = math.exp(-1.0 / TAU_V)

    def spike(h: torch.Tensor) -> torch.Tensor:  # exact step forward, fast-sigmoid backward
        soft = h / (1.0 + SCALE * h.abs())
        return (h >= 0).to(h.dtype) + soft - soft.detach()

    def run(x: torch.Tensor) -> torch.Tensor:
        fc.zero_grad(set_to_none=True)
        v = torch.zeros(x.shape[1], n, device=x.device)
        total = 0.0
        for t in range(x.shape[0]):
            v = beta * v + fc(x[t])
            s = spike(v - 1.0)
            v = (1.0 - s) * v  # reset to 0, gradient through the spike
            total = total + s.sum()
        total.backward()
        return fc.weight.grad

    return run


def build_snntorch(n: int, device: Device = "cpu") -> Optional[Runner]:
    try:
        import snntorch
        from snntorch import surrogate
    except ImportError:
        return None
    fc = torch.nn.Linear(n, n, bias=False, device=device)
    lif = snntorch.Leaky(
        beta=math.exp(-1.0 / TAU_V),
        threshold=1.0,
        reset_mechanism="zero",
        spike_grad=surrogate.fast_sigmoid(slope=SCALE),
    ).to(device)

    def run(x: torch.Tensor) -> torch.Tensor:
        fc.zero_grad(set_to_none=True)
        mem = lif.init_leaky()
        total = 0.0
        for t in range(x.shape[0]):
            spk, mem = lif(fc(x[t]), mem)
            total = total + spk.sum()
        total.backward()
        return fc.weight.grad

    return run


def build_norse(n: int, device: Device = "cpu") -> Optional[Runner]:
    try:
        from norse.torch import LIFBoxCell, LIFBoxParameters
    except ImportError:
        return None
    fc = torch.nn.Linear(n, n, bias=False, device=device)
    params = LIFBoxParameters(
        tau_mem_inv=torch.tensor(1000.0 / TAU_V, device=device),  # 1/s; norse's dt: 1 ms
        v_leak=torch.tensor(0.0, device=device),
        v_th=torch.tensor(1.0, device=device),
        v_reset=torch.tensor(0.0, device=device),
        method="super",
        alpha=torch.tensor(SCALE, device=device),
    )
    lif = LIFBoxCell(params).to(device)

    def run(x: torch.Tensor) -> torch.Tensor:
        fc.zero_grad(set_to_none=True)
        state = None
        total = 0.0
        for t in range(x.shape[0]):
            spk, state = lif(fc(x[t]), state)
            total = total + spk.sum()
        total.backward()
        return fc.weight.grad

    return run


def build_spikingjelly(
    n: int, device: Device = "cpu", backend: Optional[str] = None
) -> Optional[Runner]:
    """SpikingJelly's ``LIFNode`` in multi-step mode.

    ``backend``: passed as ``LIFNode(backend=...)`` for SpikingJelly versions whose ``LIFNode``
    takes one (0.0.0.0.x: ``"torch"``, ``"cupy"``); SpikingJelly 2.0 has no such argument and
    selects its kernels per device (see ``benchmarks/gpu.py``), so there it must be None.
    """
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError:
        return None
    extra = {} if backend is None else {"backend": backend}
    fc = torch.nn.Linear(n, n, bias=False, device=device)
    lif = neuron.LIFNode(
        tau=1.0 / (1.0 - math.exp(-1.0 / TAU_V)),
        decay_input=False,
        v_threshold=1.0,
        v_reset=0.0,
        surrogate_function=surrogate.SuperSpike(alpha=SCALE),
        step_mode="m",
        **extra,
    ).to(device)

    def run(x: torch.Tensor) -> torch.Tensor:
        fc.zero_grad(set_to_none=True)
        functional.reset_net(lif)
        current = fc(x.flatten(0, 1)).view(x.shape[0], x.shape[1], n)
        lif(current).sum().backward()
        return fc.weight.grad

    return run


BUILDERS: Dict[str, Callable[..., Optional[Runner]]] = {
    "pysnn-multi": build_pysnn_multi,
    "pysnn-step": build_pysnn_step,
    "pysnn-unroll": build_pysnn_unroll,
    "torch": build_torch,
    "snntorch": build_snntorch,
    "norse": build_norse,
    "spikingjelly": build_spikingjelly,
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Forward+backward time of Linear + LIF (surrogate gradients): pysnn vs "
        "plain torch, snnTorch, Norse and SpikingJelly (open-neuromorphic configuration).",
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
    p.add_argument("--input", choices=["currents", "spikes"], default="currents")
    p.add_argument("--density", type=float, default=0.1, help="spike density (--input spikes)")
    p.add_argument("--memory", action="store_true", help="peak memory per case (fresh process)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("steps", "batch", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be > 0")
    if min(args.neurons) <= 0:
        p.error("--neurons must be > 0")
    return args


def make_input(args: argparse.Namespace, n: int) -> torch.Tensor:
    torch.manual_seed(args.seed)
    if args.input == "currents":
        return torch.rand(args.steps, args.batch, n) * 0.5
    return (torch.rand(args.steps, args.batch, n) < args.density).float()


def peak_memory(args: argparse.Namespace, name: str, n: int) -> float:
    """Peak resident memory (GiB) of one run of case ``name`` in a fresh process."""
    code = (
        "import resource, sys; sys.argv = sys.argv[:1]; import surrogate_lif as b; "
        f"args = b.parse_args({['--steps', str(args.steps), '--batch', str(args.batch), '--input', args.input, '--density', str(args.density)]!r}); "
        f"import pysnn; pysnn.set_checks(False); b.BUILDERS[{name!r}]({n})(b.make_input(args, {n})); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1]) / 2**20  # ru_maxrss is in KiB on Linux


def main(argv: Optional[List[str]] = None) -> Dict[int, Dict[str, float]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pysnn.set_checks(False)  # no per-step NaN host reads
    what = "currents" if args.input == "currents" else f"spikes, density {args.density}"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
        f"{args.steps} steps, input {what}; median of {args.repeats} (forward + backward, s)"
    )
    results: Dict[int, Dict[str, float]] = {}
    for n in args.neurons:
        x = make_input(args, n)
        results[n] = {}
        grads = {}
        runners = {}
        for name in args.libraries:
            torch.manual_seed(args.seed)
            run = BUILDERS[name](n)
            if run is None:
                print(f"  N={n:6d}  {name:13s} not installed")
                continue
            grad = run(x)  # warm-up
            if name.startswith("pysnn"):
                grads[name] = grad
            runners[name] = run
        # repeats interleaved over the libraries, so that a change of machine load hits all alike
        times: Dict[str, List[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
        for name in runners:
            median = statistics.median(times[name])
            results[n][name] = median
            line = f"  N={n:6d}  {name:13s} {median:9.3f} s"
            if args.memory:
                line += f"   peak memory {peak_memory(args, name, n):6.2f} GiB"
            print(line, flush=True)
        del runners
        if "pysnn-step" in grads:
            b = grads["pysnn-step"]
            for name, a in grads.items():
                if name != "pysnn-step":
                    diff = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                    print(f"  N={n:6d}  {name} vs step loop: max weight-gradient diff {diff:.1e}")
        if "pysnn-multi" in results[n]:
            base = results[n]["pysnn-multi"]
            for peer, seconds in results[n].items():
                if peer != "pysnn-multi":
                    print(f"  N={n:6d}  {peer} / pysnn-multi: {seconds / base:.2f}x")
    return results


if __name__ == "__main__":
    main()
