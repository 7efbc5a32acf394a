"""BindsNET-paper benchmark: n Poisson inputs -> n LIF neurons, all-to-all, 1000 steps of 1 ms.

The network of Hazan et al. (2018), Fig. 5: ``n`` Poisson inputs with rates drawn from U(0, 100)
Hz, connected all-to-all to ``n`` LIF neurons with weights from N(0, 1) (mV), simulated for
``--steps`` steps of dt = 1 ms, no learning, only spike counts recorded. Every simulator runs the
same network in the same process (Brian2 C++ standalone in a subprocess), interleaved repeat by
repeat so background load hits all of them alike:

- ``pysnn``: ``Linear`` (``propagation="auto"``) + ``LIFNeuron``, a Python step loop under
  ``torch.no_grad()`` and ``pysnn.set_checks(False)``; the fused CPU kernels of
  :mod:`pysnn.native` run the neuron step and the event-driven product where available. No
  ``Input`` layer: its trace would go unused (BindsNET's ``Input`` keeps none by default);
- ``pysnn-multistep``: :func:`pysnn.multistep.run_feedforward` (one event-driven product for all
  steps, then the LIF recurrence of all steps in one fused call; no ``Input`` layer, whose trace
  nobody reads here);
- ``pysnn-compile``: the same ``Linear``/``LIFNeuron`` step under ``torch.compile``
  (compilation counted in the build time; compiled code runs torch operations, not the fused
  kernels);
- ``torch-dense`` / ``torch-event``: plain torch, the LIF update written inline, a dense
  matrix-vector product per step or a gather of the weight rows of the inputs that spiked;
- ``bindsnet``, ``brian2`` (Cython runtime), ``brian2-standalone`` (C++), ``norse``
  (``LIFBoxCell`` step loop), ``snntorch`` (``Leaky`` step loop), where importable.

Build time (network construction incl. weights, compilation) and simulation time (Poisson input
generation + the simulation) are reported separately, medians over ``--repeats``. Times are never
asserted: the script prints a table and the ratios of every peer to ``pysnn`` measured in this run,
and writes JSON, markdown and a log-log PNG to ``--out``. Memory: the process's peak resident set
(VmHWM, reset before each run), and that peak minus the resident set before the build; memory freed
by an earlier run may be reused, so the second figure can undercount (``memory.py`` measures pysnn
in fresh processes).

Example::

    python benchmarks/bindsnet_paper.py --sizes 250 1000 2500 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# LIF parameters shared by every simulator (BindsNET's LIFNodes defaults).
V_REST, V_RESET, V_TH, TAU_V, REFRAC = -65.0, -65.0, -52.0, 100.0, 5  # mV, mV, mV, ms, steps
MAX_RATE = 100.0  # Hz
DT = 1.0  # ms

ALL_PEERS = (
    "pysnn",
    "pysnn-multistep",
    "pysnn-compile",
    "torch-dense",
    "torch-event",
    "bindsnet",
    "brian2",
    "brian2-standalone",
    "norse",
    "snntorch",
)

Runner = Callable[[], int]


# ---------------------------------------------------------------------------------------- peers
def _rates(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) * MAX_RATE


def _weights(n: int, seed: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The (out, in) weights in mV, N(0, 1): ``torch.randn(n, n)`` from the seed.

    Written into ``out`` (any layout, e.g. a view of a module's weight) 64 rows at a time, so no
    full-size temporary exists: at n = 10000 the weights alone are 0.4 GB. (The values equal one
    ``randn(n, n)`` call: torch draws normals in blocks of 16, and 64 rows keep every block whole.)
    """
    g = torch.Generator().manual_seed(seed + 1)
    if out is None:
        out = torch.empty(n, n)
    for row in range(0, n, 64):
        out[row : row + 64] = torch.randn(min(64, n - row), n, generator=g)
    return out


def build_pysnn(
    n: int, steps: int, seed: int, mode: str = "loop", device: Union[str, torch.device] = "cpu"
) -> Runner:
    """pysnn's runner: ``mode`` "loop" (step loop), "multistep" or "compile"; on ``device``."""
    import pysnn
    from pysnn.connection import Linear
    from pysnn.encoding import PoissonEncoder
    from pysnn.multistep import run_feedforward
    from pysnn.neuron import LIFNeuron

    pysnn.set_checks(False)
    rates = _rates(n, seed).unsqueeze(0).to(device)
    encoder = PoissonEncoder(steps * DT, dt=DT, shape=n)
    fc = Linear(n, n, dt=DT).to(device)
    with torch.no_grad():
        _weights(n, seed, out=fc.weight)  # N(0, 1) mV, the same weights as the torch peers
    lif = LIFNeuron(n, dt=DT, thresh=V_TH, v_rest=V_REST, v_reset=V_RESET, tau_v=TAU_V).to(device)
    lif.refrac.fill_(REFRAC * DT)

    def step(x: torch.Tensor) -> torch.Tensor:
        return lif(fc(x))  # no Input layer: its trace would go unused (BindsNET's keeps none)

    if mode == "compile":
        torch._dynamo.reset()
        step = torch.compile(step, dynamic=False)
        with torch.no_grad():  # compile both graphs (state created / state present)
            warm = encoder(rates)
            for t in range(3):
                step(warm[t])
        for module in (fc, lif):
            module.reset_state()

    @torch.no_grad()
    def run() -> int:
        spikes = encoder(rates)  # (T, 1, n)
        if mode == "multistep":
            return int(run_feedforward(fc, lif, spikes).sum())
        count = torch.zeros(1, n, device=spikes.device)
        for t in range(steps):
            count += step(spikes[t])
        return int(count.sum())

    return run


def build_torch(
    n: int, steps: int, seed: int, event: bool, device: Union[str, torch.device] = "cpu"
) -> Runner:
    """Plain torch, LIF inline: a dense product (``event=False``) or a gather of spiking rows."""
    import torch.nn.functional as F

    rates = _rates(n, seed).to(device)
    w_rows = torch.empty(n, n, device=device)  # (in, out): one row per presynaptic neuron
    _weights(n, seed, out=w_rows.t())
    decay = math.exp(-DT / TAU_V)
    leak = V_REST * (1 - decay)
    offsets = torch.zeros(1, dtype=torch.long, device=device)

    @torch.no_grad()
    def run() -> int:
        p = -torch.expm1(-rates * DT / 1000.0)
        spikes = torch.rand(steps, n, device=p.device) < p  # (T, n) bool
        spikes_f = spikes.float()
        v = torch.full((n,), V_REST, device=p.device)
        refrac = torch.zeros(n, dtype=torch.int32, device=p.device)
        count = torch.zeros(n, device=p.device)
        for t in range(steps):
            if event:
                idx = spikes[t].nonzero().view(-1)
                current = F.embedding_bag(idx, w_rows, offsets, mode="sum")[0]
            else:
                current = torch.mv(w_rows.t(), spikes_f[t])
            v.mul_(decay).add_(leak)
            v.add_(current.masked_fill_(refrac > 0, 0.0))
            fired = v >= V_TH
            v.masked_fill_(fired, V_RESET)
            refrac.sub_(1).clamp_(min=0).masked_fill_(fired, REFRAC)
            count += fired
        return int(count.sum())

    return run


def _stub_missing(modules: List[str]) -> None:
    """Stand-ins for optional modules BindsNET imports at import time but this benchmark never
    uses (dataset loaders, gym, plotting): ``torchvision`` only ships CUDA wheels on PyPI."""

    class Stub(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {}) if name[:1].isupper() else Stub(f"{self.__name__}.{name}")

    for name in modules:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), Stub(".".join(parts[:i])))


def _import_bindsnet():
    stubbed: List[str] = []
    for _ in range(30):
        try:
            import bindsnet  # noqa: F401

            # Take the stand-ins out again so that other peers (Brian2) see the real world.
            for key in [k for k, v in sys.modules.items() if type(v).__name__ == "Stub"]:
                del sys.modules[key]
            return stubbed
        except ModuleNotFoundError as err:
            if err.name is None or err.name.split(".")[0] in ("bindsnet", "torch", "numpy"):
                raise
            stubbed.append(err.name)
            _stub_missing([err.name])
            for key in [k for k in sys.modules if k.startswith("bindsnet")]:
                del sys.modules[key]
    raise ImportError("bindsnet: too many missing modules")


def build_bindsnet(n: int, steps: int, seed: int) -> Runner:
    _import_bindsnet()
    from bindsnet.encoding import poisson
    from bindsnet.network import Network
    from bindsnet.network.monitors import Monitor
    from bindsnet.network.nodes import Input, LIFNodes
    from bindsnet.network.topology import Connection

    rates = _rates(n, seed)
    net = Network(dt=DT)
    inp = Input(n=n)
    lif = LIFNodes(n=n, thresh=V_TH, rest=V_REST, reset=V_RESET, tc_decay=TAU_V, refrac=REFRAC * DT)
    net.add_layer(inp, name="X")
    net.add_layer(lif, name="Y")
    w = torch.empty(n, n)  # BindsNET's (in, out) layout
    _weights(n, seed, out=w.t())
    net.add_connection(Connection(inp, lif, w=w), "X", "Y")
    monitor = Monitor(lif, state_vars=("s",), time=steps)
    net.add_monitor(monitor, name="Y")

    @torch.no_grad()
    def run() -> int:
        net.reset_state_variables()
        spikes = poisson(datum=rates, time=steps, dt=DT)  # (T, n)
        net.run(inputs={"X": spikes.unsqueeze(1)}, time=steps)
        return int(monitor.get("s").sum())

    return run


def build_norse(n: int, steps: int, seed: int) -> Runner:
    import norse.torch as norse

    rates = _rates(n, seed)
    fc = torch.nn.Linear(n, n, bias=False)
    with torch.no_grad():
        _weights(n, seed, out=fc.weight)
    # Norse integrates dv = dt * tau_mem_inv * (v_leak - v + i): an input i of (1 - d) ... is a
    # current, so scale the weights so a spike still adds w mV; dynamics otherwise equivalent.
    p = norse.LIFBoxParameters(
        tau_mem_inv=torch.tensor(1000.0 / TAU_V),
        v_leak=torch.tensor(V_REST),
        v_th=torch.tensor(V_TH),
        v_reset=torch.tensor(V_RESET),
    )
    cell = norse.LIFBoxCell(p, dt=DT / 1000.0)
    scale = 1.0 / (DT / TAU_V)

    @torch.no_grad()
    def run() -> int:
        prob = -torch.expm1(-rates * DT / 1000.0)
        spikes = (torch.rand(steps, 1, n) < prob).float()
        state, count = None, torch.zeros(1, n)
        for t in range(steps):
            z, state = cell(fc(spikes[t]) * scale, state)
            count += z
        return int(count.sum())

    return run


def build_snntorch(n: int, steps: int, seed: int) -> Runner:
    import snntorch as snn

    rates = _rates(n, seed)
    fc = torch.nn.Linear(n, n, bias=False)
    with torch.no_grad():
        _weights(n, seed, out=fc.weight)
    # v measured from rest: threshold 13 mV above rest, reset to rest; no refractory period.
    lif = snn.Leaky(beta=math.exp(-DT / TAU_V), threshold=V_TH - V_REST, reset_mechanism="zero")

    @torch.no_grad()
    def run() -> int:
        prob = -torch.expm1(-rates * DT / 1000.0)
        spikes = (torch.rand(steps, 1, n) < prob).float()
        mem, count = lif.init_leaky(), torch.zeros(1, n)
        for t in range(steps):
            spk, mem = lif(fc(spikes[t]), mem)
            count += spk
        return int(count.sum())

    return run


def _brian2_network(n: int, steps: int, seed: int):
    import brian2 as b2
    import numpy as np

    b2.seed(seed)
    rng = np.random.default_rng(seed)
    b2.defaultclock.dt = DT * b2.ms
    poisson_group = b2.PoissonGroup(n, rates=rng.uniform(0, MAX_RATE, n) * b2.Hz)
    lif = b2.NeuronGroup(
        n,
        "dv/dt = (v_rest - v) / tau : volt (unless refractory)",
        threshold="v >= v_th",
        reset="v = v_reset",
        refractory=REFRAC * DT * b2.ms,
        method="exact",
        namespace={
            "v_rest": V_REST * b2.mV,
            "v_reset": V_RESET * b2.mV,
            "v_th": V_TH * b2.mV,
            "tau": TAU_V * b2.ms,
        },
    )
    lif.v = V_REST * b2.mV
    syn = b2.Synapses(poisson_group, lif, "w : volt", on_pre="v += w")
    syn.connect(True)
    syn.w = rng.standard_normal(n * n) * b2.mV
    counter = b2.SpikeMonitor(lif, record=False)
    return b2, b2.Network(poisson_group, lif, syn, counter), counter


def build_brian2(n: int, steps: int, seed: int) -> Runner:
    import brian2 as b2

    b2.prefs.codegen.target = "cython"
    b2_, net, counter = _brian2_network(n, steps, seed)
    net.run(0 * b2.ms)  # code generation and compilation: part of the build

    def run() -> int:
        net.run(steps * DT * b2.ms)
        return int(counter.num_spikes)

    return run


def brian2_standalone_worker(n: int, steps: int, seed: int, directory: str) -> None:
    """Run in a subprocess (Brian2's standalone device is process-global); print JSON."""
    import brian2 as b2

    start = time.perf_counter()
    b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
    b2.prefs.devices.cpp_standalone.openmp_threads = 0  # single-threaded, as the runtime
    _, net, counter = _brian2_network(n, steps, seed)
    net.run(steps * DT * b2.ms)
    b2.device.build(directory=directory, compile=True, run=False)
    build = time.perf_counter() - start
    start = time.perf_counter()
    b2.device.run(directory=directory)
    sim = time.perf_counter() - start
    print(json.dumps({"build": build, "sim": sim, "spikes": int(counter.num_spikes)}))


# ------------------------------------------------------------------------------------ measuring
def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_mb(field: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _peak_rss_mb() -> Optional[float]:
    return _status_mb("VmHWM")


def measure(peer: str, n: int, steps: int, seed: int, workdir: Path) -> Dict[str, float]:
    """Build and run ``peer`` once; return build and simulation seconds and the spike count."""
    if peer == "brian2-standalone":
        cmd = [sys.executable, __file__, "--_brian2-worker", str(n), str(steps), str(seed)]
        cmd += [str(workdir / f"brian2_standalone_{n}")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["wall"] = time.perf_counter() - start
        return result
    builders = {
        "pysnn": lambda: build_pysnn(n, steps, seed, "loop"),
        "pysnn-multistep": lambda: build_pysnn(n, steps, seed, "multistep"),
        "pysnn-compile": lambda: build_pysnn(n, steps, seed, "compile"),
        "torch-dense": lambda: build_torch(n, steps, seed, event=False),
        "torch-event": lambda: build_torch(n, steps, seed, event=True),
        "bindsnet": lambda: build_bindsnet(n, steps, seed),
        "brian2": lambda: build_brian2(n, steps, seed),
        "norse": lambda: build_norse(n, steps, seed),
        "snntorch": lambda: build_snntorch(n, steps, seed),
    }
    gc.collect()
    _reset_peak_rss()
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    run = builders[peer]()
    build = time.perf_counter() - start
    start = time.perf_counter()
    spikes = run()
    sim = time.perf_counter() - start
    del run
    peak = _peak_rss_mb()
    added = peak - before if peak is not None and before is not None else None
    return {"build": build, "sim": sim, "spikes": spikes, "peak_rss_mb": peak, "added_mb": added}


def available(peer: str) -> Tuple[bool, str]:
    """Whether ``peer`` can run here, and a version string or the reason it cannot."""
    try:
        if peer.startswith("pysnn"):
            import pysnn

            return True, pysnn.__version__
        if peer.startswith("torch"):
            return True, torch.__version__
        if peer == "bindsnet":
            stubbed = _import_bindsnet()
            from importlib.metadata import version

            note = f" (stubbed unused imports: {', '.join(stubbed)})" if stubbed else ""
            return True, version("bindsnet") + note
        if peer.startswith("brian2"):
            import brian2

            return True, brian2.__version__
        if peer == "norse":
            from importlib.metadata import version

            import norse  # noqa: F401

            return True, version("norse")
        if peer == "snntorch":
            import snntorch

            return True, snntorch.__version__
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return False, f"{type(err).__name__}: {err}"
    return False, "unknown peer"


# ------------------------------------------------------------------------------------ reporting
def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x >= 0.1 else f"{x:.4f}"


def report(results: Dict, out: Path, sizes: List[int], peers: List[str], meta: Dict) -> str:
    lines = [
        "| simulator | " + " | ".join(f"n={n} build / sim (s)" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for peer in peers:
        cells = []
        for n in sizes:
            r = results.get(peer, {}).get(str(n))
            if r is None:
                cells.append("-")
            elif "error" in r:
                cells.append("failed")
            else:
                cells.append(f"{_fmt(r['build'])} / **{_fmt(r['sim'])}**")
        lines.append(f"| {peer} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios: peer simulation time / pysnn simulation time (same run; > 1: pysnn faster)",
        "",
    ]
    base = [p for p in ("pysnn", "pysnn-multistep") if p in results]
    for ref in base:
        lines.append(f"| peer / {ref} | " + " | ".join(f"n={n}" for n in sizes) + " |")
        lines.append("|---|" + "---|" * len(sizes))
        for peer in peers:
            if peer == ref:
                continue
            cells = []
            for n in sizes:
                r, b = results.get(peer, {}).get(str(n)), results[ref].get(str(n))
                ok = r and b and "sim" in r and "sim" in b
                cells.append(f"{r['sim'] / b['sim']:.2f}" if ok else "-")
            lines.append(f"| {peer} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "Memory (MB): peak resident set of the process during build + run, and in brackets what "
        "the simulator added to the resident set it started from (Python, torch, imported "
        "peers); Brian2 standalone runs in a subprocess (not measured):"
    )
    lines.append("")
    lines.append("| simulator | " + " | ".join(f"n={n}" for n in sizes) + " |")
    lines.append("|---|" + "---|" * len(sizes))
    for peer in peers:
        cells = []
        for n in sizes:
            r = results.get(peer, {}).get(str(n)) or {}
            cell = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
            if r.get("added_mb") is not None:
                cell += f" (+{r['added_mb']:.0f})"
            cells.append(cell)
        lines.append(f"| {peer} | " + " | ".join(cells) + " |")
    header = [
        f"# BindsNET-paper benchmark ({meta['steps']} steps of {DT} ms, median of {meta['repeats']})",
        "",
        f"Machine: {meta['machine']}; torch threads: {meta['threads']}; "
        f"python {meta['python']}; torch {meta['torch']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        f"Command: `{meta['command']}`",
        "",
    ]
    if meta.get("unavailable"):
        header += [
            "Not run: " + "; ".join(f"{k} ({v})" for k, v in meta["unavailable"].items()),
            "",
        ]
    return "\n".join(header + lines) + "\n"


def plot(results: Dict, peers: List[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for peer in peers:
        points = sorted((int(n), r["sim"]) for n, r in results.get(peer, {}).items() if "sim" in r)
        if points:
            style = "-o" if peer.startswith("pysnn") else "--s"
            ax.plot(*zip(*points), style, label=peer)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (inputs = LIF neurons)")
    ax.set_ylabel("simulation time (s), 1000 steps")
    ax.set_title("BindsNET-paper network, CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Peers: " + ", ".join(ALL_PEERS),
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 2500, 5000])
    parser.add_argument("--steps", type=int, default=1000, help="time steps of 1 ms")
    parser.add_argument("--repeats", type=int, default=3, help="runs per peer and size (median)")
    parser.add_argument(
        "--peers", nargs="+", default=list(ALL_PEERS), help="simulators to run (default: all)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--brian2-max-n",
        type=int,
        default=5000,
        help="skip Brian2 above this n (n^2 synapse objects: slow to build, ~3 GB at n=10000)",
    )
    parser.add_argument(
        "--compile-max-n",
        type=int,
        default=1000,
        help="skip pysnn-compile above this n (the compiled step is dense: slow for large n)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="bindsnet_paper", help="output file stem")
    parser.add_argument("--_brian2-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._brian2_worker:
        n, steps, seed, directory = args._brian2_worker
        brian2_standalone_worker(int(n), int(steps), int(seed), directory)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [p for p in args.peers if p not in ALL_PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {list(ALL_PEERS)}")

    versions, unavailable, peers = {}, {}, []
    for peer in args.peers:
        ok, info = available(peer)
        if ok:
            peers.append(peer)
            versions[peer.split("-")[0]] = info
        else:
            unavailable[peer] = info
            print(f"skipping {peer}: {info}")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / "_work"
    results: Dict[str, Dict[str, Dict]] = {p: {} for p in peers}
    raw: Dict[Tuple[str, int], List[Dict]] = {}

    for n in args.sizes:
        for rep in range(args.repeats):
            for peer in peers:
                if peer.startswith("brian2") and n > args.brian2_max_n:
                    continue
                if peer == "pysnn-compile" and n > args.compile_max_n:
                    continue
                if "error" in results[peer].get(str(n), {}):
                    continue
                try:
                    r = measure(peer, n, args.steps, args.seed + rep, workdir)
                except Exception as err:  # noqa: BLE001 - report and go on with the others
                    results[peer][str(n)] = {"error": f"{type(err).__name__}: {err}"}
                    print(f"  n={n:>6} {peer:<18} FAILED: {type(err).__name__}: {err}")
                    continue
                raw.setdefault((peer, n), []).append(r)
                print(
                    f"  n={n:>6} rep {rep} {peer:<18} build {r['build']:8.3f} s  "
                    f"sim {r['sim']:8.3f} s  spikes {r['spikes']}",
                    flush=True,
                )
        for peer in peers:
            runs = raw.get((peer, n))
            if runs:
                rss = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")]
                added = [r["added_mb"] for r in runs if r.get("added_mb") is not None]
                results[peer][str(n)] = {
                    "build": statistics.median(r["build"] for r in runs),
                    "sim": statistics.median(r["sim"] for r in runs),
                    "sim_min": min(r["sim"] for r in runs),
                    "spikes": statistics.median(r["spikes"] for r in runs),
                    "peak_rss_mb": max(rss) if rss else None,
                    "added_mb": max(added) if added else None,
                    "runs": len(runs),
                }

    meta = {
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "versions": versions,
        "unavailable": unavailable,
        "command": "python benchmarks/bindsnet_paper.py " + " ".join(sys.argv[1:]),
    }
    text = report(results, args.out, args.sizes, peers, meta)
    print()
    print(text)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )
    plot(results, peers, args.out / f"{args.name}.png")
    print(f"wrote {args.out / args.name}.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
