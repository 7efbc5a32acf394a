r"""GPU benchmarks (issue 24): pysnn against its peers on one accelerator, in one process.

Four suites, each peer optional (recorded as "not installed" when it cannot be imported):

- **open-neuromorphic** (``on``): ``Linear(N, N)`` + LIF, batch ``--on-batch``, ``--on-steps``
  steps, forward + backward (BPTT, surrogate gradients), the configuration of the
  open-neuromorphic SNN library benchmark (see ``surrogate_lif.py``, whose builders are reused).
  pysnn: ``pysnn.multistep.Unroll`` over an ``SNNNetwork`` whose ``forward`` is one step
  (``pysnn-unroll``, the figure the ratios use) and ``forward_multistep`` called by hand
  (``pysnn-multi``); peers: plain torch, snnTorch, Norse, SpikingJelly's torch implementation and,
  on CUDA, each of its GPU implementations (SpikingJelly 2.0: ``cuda``, its compiled extension,
  and ``triton``, chosen through its LIF selection; older SpikingJelly: ``LIFNode(backend=...)``
  with ``cupy`` and ``triton``);
- **BindsNET-paper network** (``bindsnet``): ``n`` Poisson inputs → ``n`` LIF, all-to-all,
  ``--bn-steps`` steps (see ``bindsnet_paper.py``): pysnn's multi-step
  (``run_feedforward``) and step loop against plain torch step loops (dense product and
  row gather), no gradients;
- **Diehl & Cook training throughput** (``dc``): ``pysnn.models.DiehlCook2015.run`` with STDP on
  Poisson MNIST digits at each of ``--dc-batches``, samples/s; on a CUDA run also pysnn on the
  CPU at ``--dc-cpu-batch`` (the baseline of the issue's target);
- **BindsNET-paper-like step loop, eager vs graphed** (``graph``): the BindsNET-paper network
  (``Linear`` + ``LIFNeuron``, batch 1) at the small sizes ``--graph-sizes``, where launching
  kernels dominates, stepped ``--graph-steps`` times from Python: each step as written
  (``pysnn-eager``) and through ``pysnn.engine.GraphedStep`` (``pysnn-graphed``: a CUDA graph
  replay per step; on the CPU it runs eagerly and says why). The Poisson input is drawn once at
  build; each timed call resets the state and runs the loop. The spike counts and the sum of
  the final membrane potentials of the two must agree exactly (``same_as_eager``).

Timing: CUDA events around each call (plus ``torch.cuda.synchronize``) on CUDA, ``perf_counter``
on the CPU; ``--warmup`` untimed calls, then the median of ``--repeats`` (fewer when a call is so
slow that the repeats would overrun the budget). Peak memory: ``torch.cuda.max_memory_allocated``
reset before each case (build included); None on the CPU. A case that raises is recorded with its
error and the run goes on; cases are not started once ``--budget-s`` is spent (recorded as
skipped). ``gpu.json`` and ``gpu.md`` in ``--out`` are rewritten after every case, so a run that is
killed still leaves what it measured. Ratios (peer / pysnn time, > 1: pysnn faster) are computed
within the run.

Full run on a GPU (about 5 minutes on an H200 is the plan; never measured yet)::

    PYSNN_BACKEND=auto python benchmarks/gpu.py --out results_gpu --budget-s 300

Smoke run (tiny sizes, CPU, a few seconds; what ``tests/test_gpu_benchmark.py`` runs)::

    python benchmarks/gpu.py --smoke --device cpu --out /tmp/gpu_smoke
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import pysnn  # noqa: E402

import bindsnet_paper as bn  # noqa: E402
import diehl_cook_throughput as dcb  # noqa: E402
import surrogate_lif as sl  # noqa: E402

# A case's builder returns None (peer not installed) or a zero-argument callable, optionally with a
# dict of facts about it; the callable's return value (a number) may be recorded as "result".
Work = Callable[[], Any]
Built = Optional[Tuple[Work, Dict[str, Any]]]


class Unavailable(Exception):
    """A case that cannot run on this device or installation (recorded as "unavailable")."""


# ------------------------------------------------------------------------------------- context
class Bench:
    """Runs cases one by one on a device, within a time budget, and records every outcome."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.start = time.perf_counter()
        self.cases: List[Dict[str, Any]] = []
        self.meta = describe(args, self.device)

    # -- time
    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left in the budget."""
        return self.args.budget_s - self.elapsed()

    def sync(self) -> None:
        """Wait for the device's queued work."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time_call(self, work: Work, on_cpu: bool = False) -> Tuple[float, Any]:
        """Seconds one call of ``work`` takes (CUDA events on CUDA), and what it returned.

        ``on_cpu``: the work runs on the CPU even in a CUDA run: timed with ``perf_counter``.
        """
        if self.cuda and not on_cpu:
            self.sync()
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            value = work()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1000.0, value
        begin_s = time.perf_counter()
        value = work()
        return time.perf_counter() - begin_s, value

    # -- memory
    def reset_memory(self) -> None:
        """Free what earlier cases left and reset the peak counter."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> Optional[float]:
        """Peak allocated device memory since the last reset (MiB); None on the CPU."""
        if not self.cuda:
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    # -- cases
    def run_case(
        self,
        suite: str,
        name: str,
        params: Dict[str, Any],
        build: Callable[[], Built],
        items: Optional[int] = None,
        on_cpu: bool = False,
    ) -> Dict[str, Any]:
        """Build, warm up and time one case; record it (never raises).

        ``items``: samples processed per call, for a throughput (items / median seconds).
        ``on_cpu``: the case runs on the CPU in a CUDA run (perf_counter, no GPU memory).
        """
        case: Dict[str, Any] = {"suite": suite, "name": name, "params": dict(params)}
        case.update(status="ok", seconds=None, times=[], peak_mib=None, error=None)
        self.cases.append(case)
        if self.left() <= 0:
            case["status"] = "skipped"
            case["error"] = f"time budget of {self.args.budget_s:.0f} s spent"
            print(f"  {suite:9s} {name:22s} {_fmt_params(params):28s} skipped (budget)")
            self.write()
            return case
        work: Optional[Work] = None
        try:
            self.reset_memory()
            began = time.perf_counter()
            built = build()
            if built is None:
                case["status"] = "not installed"
            else:
                work, facts = built
                after = facts.pop("after", None)
                case.update(facts)
                warm_s = 0.0
                for _ in range(self.args.warmup):
                    warm_s, _value = self.time_call(work, on_cpu)
                case["build_s"] = time.perf_counter() - began
                repeats = self.args.repeats
                if warm_s * repeats > max(self.left(), 0.0) / 2:  # a slow case: time it once
                    repeats = 1
                for _ in range(repeats):
                    seconds, value = self.time_call(work, on_cpu)
                    case["times"].append(seconds)
                case["seconds"] = statistics.median(case["times"])
                if isinstance(value, (int, float)):
                    case["result"] = value
                if items:
                    case["items"] = items
                    case["per_s"] = items / case["seconds"]
                case["peak_mib"] = None if on_cpu else self.peak_mib()
                if after is not None:  # facts known only once it ran (e.g. the kernels chosen)
                    case.update(after())
        except Unavailable as err:
            case["status"] = "unavailable"
            case["error"] = str(err)
        except Exception as err:  # noqa: BLE001 - record and go on with the next case
            case["status"] = "error"
            case["error"] = f"{type(err).__name__}: {err}"[:2000]
            case["traceback"] = traceback.format_exc(limit=6)[-3000:]
        finally:
            del work
            try:
                self.reset_memory()
            except Exception:  # noqa: BLE001 - a broken device must not stop the report
                pass
        print(f"  {suite:9s} {name:22s} {_fmt_params(params):28s} {_fmt_case(case)}", flush=True)
        self.write()
        return case

    # -- output
    def write(self) -> None:
        """(Re)write gpu.json and gpu.md with everything recorded so far."""
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        self.meta["elapsed_s"] = round(self.elapsed(), 3)
        data = {
            "meta": self.meta,
            "cases": self.cases,
            "ratios": ratios(self.cases),
            "targets": targets(self.cases, self.args),
        }
        (out / "gpu.json").write_text(json.dumps(data, indent=1, default=str))
        (out / "gpu.md").write_text(markdown(data))


def _fmt_params(params: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _fmt_case(case: Dict[str, Any]) -> str:
    if case["status"] != "ok":
        return f"{case['status']}" + (f": {case['error']}" if case.get("error") else "")
    text = f"{case['seconds']:.4f} s"
    if case.get("per_s") is not None:
        text += f"  {case['per_s']:.1f} samples/s"
    if case.get("peak_mib") is not None:
        text += f"  peak {case['peak_mib']:.0f} MiB"
    if case.get("implementation"):
        text += f"  [{case['implementation']}]"
    return text


def _version(module: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed
        return None


def describe(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """The run's facts: machine, versions, device, options."""
    meta: Dict[str, Any] = {
        "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:]),
        "smoke": args.smoke,
        "budget_s": args.budget_s,
        "device": str(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "pysnn_backend_env": os.environ.get("PYSNN_BACKEND"),
        "versions": {
            name: _version(name)
            for name in ("snntorch", "norse", "spikingjelly", "triton", "cupy-cuda13x", "numpy")
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        from pysnn import backends

        meta["pysnn_backend_preference"] = list(backends.preference())
        meta["pysnn_backends_loaded"] = {
            name: backends.get(name) is not None for name in backends.registered()
        }
    except Exception as err:  # noqa: BLE001 - informational only
        meta["pysnn_backend_preference"] = f"unknown ({type(err).__name__}: {err})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
    return meta


# ---------------------------------------------------------------------------------- open-neuro
def spikingjelly_backends(cuda: bool) -> List[str]:
    """The SpikingJelly LIF implementations to time: "torch" and, on CUDA, its GPU ones."""
    try:
        from spikingjelly.activation_based import neuron
    except Exception:  # noqa: BLE001 - not installed: one "not installed" row
        return ["torch"]
    old_api = "backend" in inspect.signature(neuron.LIFNode.__init__).parameters
    gpu = ["cupy", "triton"] if old_api else ["cuda", "triton"]
    return ["torch"] + gpu  # on the CPU the GPU ones are recorded as unavailable


def _sj_selection() -> Optional[Any]:
    """SpikingJelly 2.0's LIF implementation selection object (private API), or None."""
    try:
        lif_ops = importlib.import_module("spikingjelly._ops.lif")
        return getattr(lif_ops, "_selection", None)
    except Exception:  # noqa: BLE001 - another SpikingJelly version
        return None


def build_spikingjelly(n: int, device: torch.device, backend: str) -> Built:
    """SpikingJelly's LIFNode, multi-step, forced to implementation ``backend``."""
    try:
        from spikingjelly.activation_based import neuron
    except ImportError:
        return None
    old_api = "backend" in inspect.signature(neuron.LIFNode.__init__).parameters
    facts: Dict[str, Any] = {"requested": backend}
    if old_api:  # SpikingJelly 0.0.0.0.x: LIFNode(backend=...), "cupy" needs CuPy and CUDA
        if backend != "torch" and device.type != "cuda":
            raise Unavailable(f"SpikingJelly backend {backend!r} runs on CUDA only")
        runner = sl.build_spikingjelly(n, device, backend=backend)
        facts["implementation"] = backend
    else:  # SpikingJelly 2.0: an implementation selection per CUDA device, from an env variable
        if device.type != "cuda":
            if backend != "torch":
                raise Unavailable(f"SpikingJelly implementation {backend!r} runs on CUDA only")
            runner = sl.build_spikingjelly(n, device)
            facts["implementation"] = "torch (cpu)"
        else:
            selection = _sj_selection()
            if selection is None:
                raise Unavailable("SpikingJelly's LIF implementation selection not found")
            selection._requested = backend  # what SJ_LIF_CUDA_IMPLEMENTATION would set
            selection._selections.clear()
            selection._compiled_selections.clear()
            runner = sl.build_spikingjelly(n, device)

            def after() -> Dict[str, Any]:
                index = device.index if device.index is not None else torch.cuda.current_device()
                chosen = selection._selections.get(index)
                if chosen is None:
                    return {}
                return {"implementation": chosen.name, "unavailable": dict(chosen.unavailable)}

            facts["after"] = after
    if runner is None:
        return None
    return runner, facts


def on_case_builders(
    n: int, device: torch.device, cuda: bool
) -> List[Tuple[str, Callable[[], Built]]]:
    """(name, builder) of every library at layer size ``n``; a runner takes the input ``x``."""
    plain = {
        "pysnn-unroll": sl.build_pysnn_unroll,
        "pysnn-multi": sl.build_pysnn_multi,
        "torch": sl.build_torch,
        "snntorch": sl.build_snntorch,
        "norse": sl.build_norse,
    }
    cases: List[Tuple[str, Callable[[], Built]]] = []
    for name, builder in plain.items():

        def build(builder: Callable[..., Any] = builder) -> Built:
            runner = builder(n, device)
            return None if runner is None else (runner, {})

        cases.append((name, build))
    for backend in spikingjelly_backends(cuda):
        cases.append(
            (f"spikingjelly-{backend}", lambda b=backend: build_spikingjelly(n, device, b))
        )
    return cases


def run_open_neuromorphic(bench: Bench, n: int) -> None:
    """The open-neuromorphic configuration at layer size ``n``, every library."""
    args, device = bench.args, bench.device
    params = {"N": n, "T": args.on_steps, "B": args.on_batch}
    gen = torch.Generator().manual_seed(args.seed)
    x_cpu = torch.rand(args.on_steps, args.on_batch, n, generator=gen) * 0.5
    x = x_cpu.to(device)
    del x_cpu
    for name, builder in on_case_builders(n, device, bench.cuda):

        def build(builder: Callable[[], Built] = builder) -> Built:
            torch.manual_seed(args.seed)
            built = builder()
            if built is None:
                return None
            runner, facts = built

            def work() -> None:
                runner(x)  # forward over all steps + backward; returns the weight gradient

            return work, facts

        case = bench.run_case("on", name, params, build)
        if case["status"] == "error" and "No available" in (case["error"] or ""):
            case["status"] = "unavailable"  # SpikingJelly: that implementation is not built here
    del x


# -------------------------------------------------------------------------------- BindsNET paper
def run_bindsnet(bench: Bench) -> None:
    """The BindsNET-paper network: pysnn multi-step and step loop against plain torch."""
    args, device = bench.args, bench.device
    n, steps = args.bn_n, args.bn_steps
    params = {"n": n, "steps": steps}
    builders: List[Tuple[str, Callable[[], Callable[[], int]]]] = [
        ("pysnn-multistep", lambda: bn.build_pysnn(n, steps, args.seed, "multistep", device)),
        ("pysnn-steploop", lambda: bn.build_pysnn(n, steps, args.seed, "loop", device)),
        ("torch-dense", lambda: bn.build_torch(n, steps, args.seed, False, device)),
        ("torch-event", lambda: bn.build_torch(n, steps, args.seed, True, device)),
    ]
    for name, builder in builders:

        def build(builder: Callable[[], Callable[[], int]] = builder) -> Built:
            return builder(), {}

        bench.run_case("bindsnet", name, params, build)


# ------------------------------------------------------------------------------- Diehl & Cook
def run_diehl_cook(bench: Bench) -> None:
    """Diehl & Cook training throughput at each batch size (and pysnn on the CPU on CUDA runs)."""
    args = bench.args
    batches = list(args.dc_batches)
    largest = max(batches + [args.dc_cpu_batch])
    digits = dcb.poisson_digits(largest, args.dc_time, 63.75, args.seed)  # (n, T, 784)
    plan: List[Tuple[str, torch.device, int]] = [
        (f"pysnn {bench.device.type} batch {b}", bench.device, b) for b in batches
    ]
    if bench.cuda or args.smoke:
        plan.append(
            (f"pysnn cpu batch {args.dc_cpu_batch}", torch.device("cpu"), args.dc_cpu_batch)
        )
    for name, device, batch in plan:
        params = {"neurons": args.dc_neurons, "time": args.dc_time, "batch": batch}
        calls = max(1, args.dc_samples // batch)  # batch 1: several digits per timed call

        def build(device: torch.device = device, batch: int = batch, calls: int = calls) -> Built:
            train = dcb.build_pysnn(args.dc_neurons, "run", device)
            starts = [(i * batch) % (largest - batch + 1) for i in range(calls)]
            inputs = [  # (T, batch, 784) each
                digits[s : s + batch].transpose(0, 1).contiguous().to(device) for s in starts
            ]

            @torch.no_grad()
            def work() -> None:
                for spikes in inputs:
                    train(spikes)

            return work, {"calls": calls, "train_device": str(device)}

        bench.run_case("dc", name, params, build, items=calls * batch, on_cpu=device.type == "cpu")


# ------------------------------------------------------------------------------ graphed step loop
def build_step_loop(n: int, steps: int, seed: int, device: torch.device, graphed: bool) -> Built:
    """The BindsNET-paper network (``n`` Poisson inputs -> ``n`` LIF, batch 1) as a Python loop
    of ``steps`` single steps, each through ``GraphedStep`` (``graphed``) or as written."""
    from torch import nn

    from pysnn.connection import Linear
    from pysnn.encoding import PoissonEncoder
    from pysnn.engine import GraphedStep
    from pysnn.neuron import LIFNeuron

    torch.manual_seed(seed)
    rates = (torch.rand(1, n) * bn.MAX_RATE).to(device)
    spikes = PoissonEncoder(steps * bn.DT, dt=bn.DT, shape=n).to(device)(rates)  # (T, 1, n)
    fc = Linear(n, n, dt=bn.DT).to(device)
    with torch.no_grad():
        fc.weight.normal_(0.0, 1.0)  # mV, as the BindsNET-paper network's N(0, 1)
    lif = LIFNeuron(
        n, dt=bn.DT, thresh=bn.V_TH, v_rest=bn.V_REST, v_reset=bn.V_RESET, tau_v=bn.TAU_V
    ).to(device)
    lif.refrac.fill_(bn.REFRAC * bn.DT)
    network = nn.Sequential(fc, lif)
    step = GraphedStep(network) if graphed else network

    @torch.no_grad()
    def work() -> int:
        fc.reset_state()
        lif.reset_state()
        count = torch.zeros(1, n, device=device)
        for t in range(steps):
            count += step(spikes[t])
        return int(count.sum())

    def after() -> Dict[str, Any]:
        found: Dict[str, Any] = {"v_sum": float(lif.v.double().sum())}  # after the last call
        if graphed:
            found.update(
                graphed=step.graphed,
                captures=step.captures,
                replays=step.replays,
                reason=step.reason,
            )
        return found

    return work, {"batch": 1, "after": after}


def run_graph_loop(bench: Bench) -> None:
    """The BindsNET-paper-like step loop of small layers, eager against graphed, each size."""
    args = bench.args
    for n in args.graph_sizes:
        params = {"n": n, "steps": args.graph_steps}
        for name, graphed in (("pysnn-eager", False), ("pysnn-graphed", True)):

            def build(graphed: bool = graphed) -> Built:
                return build_step_loop(n, args.graph_steps, args.seed, bench.device, graphed)

            bench.run_case("graph", name, params, build)
        eager = _find(bench.cases, "graph", "pysnn-eager", **params)
        graphed_case = _find(bench.cases, "graph", "pysnn-graphed", **params)
        if eager and graphed_case:  # the same spikes and membrane potentials, bit for bit
            graphed_case["same_as_eager"] = all(
                eager.get(k) == graphed_case.get(k) for k in ("result", "v_sum")
            )
            bench.write()


# ------------------------------------------------------------------------------- ratios, targets
PYSNN_BASE = {"on": ["pysnn-unroll"], "bindsnet": ["pysnn-multistep", "pysnn-steploop"]}
#: pysnn against pysnn within a suite: (suite, the faster form, the one it is measured against)
PYSNN_PAIRS = [("graph", "pysnn-graphed", "pysnn-eager")]


def ratios(cases: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Peer seconds / pysnn seconds for cases measured with the same parameters in this run."""
    out: List[Dict[str, Any]] = []
    ok = [c for c in cases if c["status"] == "ok"]
    for suite, bases in PYSNN_BASE.items():
        for base_name in bases:
            for base in (c for c in ok if c["suite"] == suite and c["name"] == base_name):
                for peer in ok:
                    if peer["suite"] != suite or peer["params"] != base["params"]:
                        continue
                    if peer["name"].startswith("pysnn"):
                        continue
                    out.append(
                        {
                            "suite": suite,
                            "params": base["params"],
                            "pysnn": base_name,
                            "peer": peer["name"],
                            "ratio": peer["seconds"] / base["seconds"],
                        }
                    )
    for suite, fast, slow in PYSNN_PAIRS:
        for base in (c for c in ok if c["suite"] == suite and c["name"] == fast):
            for peer in ok:
                if peer["suite"] == suite and peer["name"] == slow:
                    if peer["params"] == base["params"]:
                        out.append(
                            {
                                "suite": suite,
                                "params": base["params"],
                                "pysnn": fast,
                                "peer": slow,
                                "ratio": peer["seconds"] / base["seconds"],
                            }
                        )
    dc = [c for c in ok if c["suite"] == "dc" and c.get("per_s")]
    for gpu in (c for c in dc if c.get("train_device", "cpu") != "cpu"):
        for other in dc:
            if other is not gpu:
                out.append(
                    {
                        "suite": "dc",
                        "params": gpu["params"],
                        "pysnn": gpu["name"],
                        "peer": other["name"],
                        "ratio": gpu["per_s"] / other["per_s"],
                    }
                )
    return out


def _find(cases: List[Dict[str, Any]], suite: str, name: str, **params: Any) -> Optional[Dict]:
    for case in cases:
        if case["suite"] == suite and case["name"] == name and case["status"] == "ok":
            if all(case["params"].get(k) == v for k, v in params.items()):
                return case
    return None


def targets(cases: List[Dict[str, Any]], args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Issue 24's speed targets, as far as this run measured them."""
    rows: List[Dict[str, Any]] = []

    def row(what: str, goal: float, value: Optional[float], note: str = "") -> None:
        rows.append(
            {
                "target": what,
                "goal": goal,
                "measured": value,
                "met": None if value is None else bool(value >= goal),
                "note": note,
            }
        )

    n_on = 4096 if 4096 in args.on_sizes else args.on_sizes[0]
    note = "" if n_on == 4096 and args.on_steps == 500 else f"at N={n_on}, T={args.on_steps}"
    ours = _find(cases, "on", "pysnn-unroll", N=n_on)
    sj = [
        c
        for c in cases
        if c["suite"] == "on"
        and c["name"].startswith("spikingjelly-")
        and c["name"] != "spikingjelly-torch"
        and c["status"] == "ok"
        and c["params"].get("N") == n_on
    ]
    fastest_sj = min(sj, key=lambda c: c["seconds"]) if sj else None
    row(
        "open-neuromorphic fwd+bwd: pysnn / SpikingJelly's fastest GPU backend",
        1.2,
        fastest_sj["seconds"] / ours["seconds"] if ours and fastest_sj else None,
        note + (f" (vs {fastest_sj['name']})" if fastest_sj else ""),
    )
    snn = _find(cases, "on", "snntorch", N=n_on)
    row(
        "open-neuromorphic fwd+bwd: pysnn / snnTorch",
        5.0,
        snn["seconds"] / ours["seconds"] if ours and snn else None,
        note,
    )
    multi = _find(cases, "bindsnet", "pysnn-multistep")
    plain = [c for c in (_find(cases, "bindsnet", k) for k in ("torch-dense", "torch-event")) if c]
    best = min(plain, key=lambda c: c["seconds"]) if plain else None
    bn_note = "" if (args.bn_n, args.bn_steps) == (10000, 1000) else f"at n={args.bn_n}"
    row(
        "BindsNET-paper: pysnn multi-step / plain torch (faster of dense, event)",
        3.0,
        best["seconds"] / multi["seconds"] if multi and best else None,
        bn_note + (f" (vs {best['name']})" if best else ""),
    )
    big = max(args.dc_batches)
    gpu = _find(cases, "dc", f"pysnn cuda batch {big}")
    cpu = _find(cases, "dc", f"pysnn cpu batch {args.dc_cpu_batch}")
    row(
        f"Diehl & Cook: GPU batch {big} / CPU batch {args.dc_cpu_batch} samples/s",
        3.0,
        gpu["per_s"] / cpu["per_s"] if gpu and cpu else None,
        "CPU measured on the same machine in the same run",
    )
    return rows


# -------------------------------------------------------------------------------------- report
def _cell(case: Optional[Dict[str, Any]], throughput: bool = False) -> str:
    if case is None:
        return "-"
    if case["status"] != "ok":
        return case["status"]
    text = f"{case['per_s']:.1f}/s" if throughput else f"{case['seconds']:.4g} s"
    if case.get("peak_mib") is not None:
        text += f" ({case['peak_mib']:.0f} MiB)"
    return text


def markdown(data: Dict[str, Any]) -> str:
    """The report: one table per suite, the ratios, the targets, what did not run."""
    meta, cases = data["meta"], data["cases"]
    gpu = meta.get("gpu", {})
    lines = [
        "# GPU benchmarks (issue 24)",
        "",
        f"Device {meta['device']}" + (f" ({gpu.get('name')})" if gpu else "") + f"; torch "
        f"{meta['torch']} (CUDA {meta['torch_cuda']}); {meta['machine']}; "
        f"pysnn backends {meta.get('pysnn_backend_preference')}; peers "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
        + f". {'SMOKE run (tiny sizes). ' if meta['smoke'] else ''}"
        f"Elapsed {meta.get('elapsed_s', 0):.0f} s of a {meta['budget_s']:.0f} s budget. "
        "Median seconds per call (peak GPU memory).",
        "",
    ]
    on = [c for c in cases if c["suite"] == "on"]
    if on:
        sizes = sorted({c["params"]["N"] for c in on})
        p0 = on[0]["params"]
        lines += [
            f"## Open-neuromorphic: Linear + LIF, forward + backward (batch {p0['B']}, "
            f"T = {p0['T']})",
            "",
            "| library | " + " | ".join(f"N = {n}" for n in sizes) + " |",
            "|---|" + "---:|" * len(sizes),
        ]
        for name in dict.fromkeys(c["name"] for c in on):
            cells = [
                _cell(next((c for c in on if c["name"] == name and c["params"]["N"] == n), None))
                for n in sizes
            ]
            impl = next((c.get("implementation") for c in on if c["name"] == name), None)
            label = name + (f" [{impl}]" if impl and name.startswith("spikingjelly") else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    bnc = [c for c in cases if c["suite"] == "bindsnet"]
    if bnc:
        p0 = bnc[0]["params"]
        lines += [
            f"## BindsNET-paper network (n = {p0['n']}, {p0['steps']} steps, no gradients)",
            "",
            "| runner | time | spikes |",
            "|---|---:|---:|",
        ]
        for c in bnc:
            lines.append(f"| {c['name']} | {_cell(c)} | {c.get('result', '-')} |")
        lines.append("")
    loops = [c for c in cases if c["suite"] == "graph"]
    if loops:
        lines += [
            "## BindsNET-paper-like step loop, eager vs graphed (batch 1, "
            f"{loops[0]['params']['steps']} steps of a Python loop)",
            "",
            "| n | runner | time | spikes | graphed | why not graphed |",
            "|---:|---|---:|---:|---|---|",
        ]
        for c in loops:
            graphed = c.get("graphed")
            if graphed is not None:
                graphed = f"{graphed} ({c.get('replays')} replays)"
                if c.get("same_as_eager") is not None:
                    graphed += ", as eager" if c["same_as_eager"] else ", DIFFERS FROM EAGER"
            lines.append(
                f"| {c['params']['n']} | {c['name']} | {_cell(c)} | {c.get('result', '-')} | "
                f"{graphed if graphed is not None else '-'} | {c.get('reason') or '-'} |"
            )
        lines.append("")
    dcc = [c for c in cases if c["suite"] == "dc"]
    if dcc:
        p0 = dcc[0]["params"]
        lines += [
            f"## Diehl & Cook (2015) training throughput ({p0['neurons']} neurons, "
            f"{p0['time']} steps per sample, STDP)",
            "",
            "| case | samples/s | s per call (samples per call) |",
            "|---|---:|---:|",
        ]
        for c in dcc:
            per_call = "-" if c["status"] != "ok" else f"{c['seconds']:.4g} ({c.get('items')})"
            lines.append(f"| {c['name']} | {_cell(c, throughput=True)} | {per_call} |")
        lines.append("")
    if data["ratios"]:
        lines += [
            "## Ratios within this run (peer time / pysnn time; for Diehl & Cook, pysnn's "
            "samples/s / the other's; > 1: pysnn faster)",
            "",
            "| suite | size | pysnn | peer | ratio |",
            "|---|---|---|---|---:|",
        ]
        for r in data["ratios"]:
            lines.append(
                f"| {r['suite']} | {_fmt_params(r['params'])} | {r['pysnn']} | {r['peer']} | "
                f"{r['ratio']:.2f}x |"
            )
        lines.append("")
    lines += [
        "## Targets (issue 24)",
        "",
        "| target | goal | measured | met |",
        "|---|---:|---:|---|",
    ]
    for t in data["targets"]:
        value = "-" if t["measured"] is None else f"{t['measured']:.2f}x"
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "no")
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']}{note} | ≥ {t['goal']}x | {value} | {met} |")
    lines.append("")
    other = [c for c in cases if c["status"] != "ok"]
    if other:
        lines += ["## Not measured", ""]
        for c in other:
            why = f": {c['error']}" if c.get("error") else ""
            lines.append(
                f"- {c['suite']} {c['name']} {_fmt_params(c['params'])}: {c['status']}"
                f"{why.splitlines()[0] if why else ''}"
            )
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Options; ``--smoke`` replaces every size with a tiny one."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    p.add_argument("--device", default=default_device, help="cuda, cuda:1 or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: seconds on a CPU")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    p.add_argument("--budget-s", type=float, default=420.0, help="no new case after this")
    p.add_argument("--suites", nargs="+", default=["on", "bindsnet", "graph", "dc"])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case")
    p.add_argument("--on-sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--on-steps", type=int, default=500)
    p.add_argument("--on-batch", type=int, default=16)
    p.add_argument("--bn-n", type=int, default=10000)
    p.add_argument("--bn-steps", type=int, default=1000)
    p.add_argument("--dc-neurons", type=int, default=100)
    p.add_argument("--dc-time", type=int, default=350, help="steps of 1 ms per sample")
    p.add_argument("--dc-batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--dc-cpu-batch", type=int, default=16, help="CPU baseline batch (CUDA runs)")
    p.add_argument("--dc-samples", type=int, default=8, help="samples per timed call at batch 1")
    p.add_argument("--graph-sizes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--graph-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.smoke:
        args.on_sizes, args.on_steps, args.on_batch = [32, 64], 10, 2
        args.bn_n, args.bn_steps = 100, 50
        args.dc_neurons, args.dc_time, args.dc_batches = 10, 20, [1, 4]
        args.dc_cpu_batch, args.dc_samples = 2, 2
        args.graph_sizes, args.graph_steps = [20], 20
        args.repeats, args.warmup = min(args.repeats, 2), 1
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    unknown = set(args.suites) - {"on", "bindsnet", "graph", "dc"}
    if unknown:
        p.error(f"unknown suites {sorted(unknown)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the suites in priority order (targets first), write and print the report."""
    args = parse_args(argv)
    pysnn.set_checks(False)  # no per-step host reads of values
    bench = Bench(args)
    print(
        f"gpu.py: device {bench.device} ({bench.meta.get('gpu', {}).get('name', platform.machine())})"
        f", torch {torch.__version__}, budget {args.budget_s:.0f} s, out {args.out}",
        flush=True,
    )
    target_n = 4096 if 4096 in args.on_sizes else args.on_sizes[0]
    plan: List[Tuple[str, Callable[[], None]]] = []
    if "on" in args.suites:
        plan.append((f"on N={target_n}", lambda: run_open_neuromorphic(bench, target_n)))
    if "bindsnet" in args.suites:
        plan.append(("bindsnet", lambda: run_bindsnet(bench)))
    if "graph" in args.suites:
        plan.append(("graph", lambda: run_graph_loop(bench)))
    if "dc" in args.suites:
        plan.append(("dc", lambda: run_diehl_cook(bench)))
    if "on" in args.suites:
        for n in args.on_sizes:
            if n != target_n:
                plan.append((f"on N={n}", lambda n=n: run_open_neuromorphic(bench, n)))
    for label, step in plan:
        try:
            step()
        except Exception as err:  # noqa: BLE001 - a suite's setup failed: note it, go on
            bench.cases.append(
                {
                    "suite": "setup",
                    "name": label,
                    "params": {},
                    "status": "error",
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(limit=6),
                }
            )
            print(f"  suite setup failed: {type(err).__name__}: {err}", flush=True)
    bench.write()
    print()
    print((Path(args.out) / "gpu.md").read_text())
    print(f"wrote {args.out}/gpu.json and gpu.md in {bench.elapsed():.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
