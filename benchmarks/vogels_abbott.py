"""Vogels & Abbott (2005) networks, CUBA and COBA, in pysnn against Brian2 (runtime and C++).

The two benchmark networks of Brette et al. (2007), as in Brian2's examples (``examples/CUBA.py``
and the COBA of Stimberg et al. 2018, ``example_1_COBA.py``): ``N`` LIF neurons, 80 %
excitatory, random recurrent connections with probability ``p = 0.02 * 4000 / N`` (2 % at
N = 4000; 80 inputs per neuron on average at every N, so that the dynamics, and the work per
neuron, do not change with N), ``dt = 0.1`` ms, 1 s of biological time.

- CUBA: ``tau_m dv/dt = -(v - E_l) + g_e + g_i`` (mV), exponential currents with ``tau_e = 5``
  ms, ``tau_i = 10`` ms, jumps ``w_e = 1.62`` mV and ``w_i = -9`` mV; ``tau_m = 20`` ms,
  ``E_l = -49`` mV, ``V_t = -50`` mV, ``V_r = -60`` mV, refractory 5 ms; ``v`` starts uniform in
  ``[V_r, V_t]``.
- COBA: ``tau_m dv/dt = -(v - E_l) + I + g_e (E_e - v) + g_i (E_i - v)``, dimensionless
  exponential conductances (``tau_e = 5``, ``tau_i = 10`` ms), jumps 0.6 and 6.7, ``E_e = 0``,
  ``E_i = -80``, ``E_l = -60`` mV, ``I = 20`` mV, same threshold, reset and refractoriness;
  ``v`` starts from N(-55, 5) mV.

pysnn runs ``LIFNeuron`` + :mod:`pysnn.synapse` (``ExponentialSynapse`` / ``ConductanceSynapse``)
+ :class:`pysnn.sparse.SparseLinear` in a Python step loop under ``torch.no_grad()`` with
``pysnn.set_checks(False)`` (peer ``pysnn``), or the same modules through
:func:`pysnn.multistep.run_recurrent`, 1000 steps per call recording spike events, one fused C
loop (peer ``pysnn-fused``; the same spikes, bit for bit), or written as a user's
``SNNNetwork`` whose ``forward`` is one step, run through ``Unroll(net, steps=1000,
reset=False)`` (peer ``pysnn-unroll``: the engine lowers it to ``run_recurrent``, the first
step of each call as written; a ``(1000, 1, N)`` raster per call; the same spikes, bit for
bit). Brian2 gets **the same network**: the same synapses (pysnn's ``fixed_probability`` draw,
passed as index arrays) and the same initial potentials.

Model differences, and what is done about them: pysnn's LIF keeps leaking during the refractory
period and ignores its input; Brian2's examples clamp ``v`` (``unless refractory``). By default
Brian2 runs pysnn's semantics (``int(not_refractory)`` on the synaptic term, the leak always on),
so that both simulate one model; ``--brian2-semantics documented`` runs the examples' equations
as published. Brian2 integrates COBA with forward Euler (as its example); pysnn's conductances
decay exactly, the driving force held over a step. Spike times therefore diverge after a while
(the networks are chaotic), and agreement is statistical: population rate and mean ISI CV (over
neurons with at least 3 spikes), after a 100 ms transient. Tolerances: rate within
``--rate-tol`` (relative, default 15 %), CV within ``--cv-tol`` (absolute, default 0.1).

Timing: every peer runs in its own subprocess, repeats interleaved across peers (background load
hits all alike); the medians and the fastest runs are reported. ``build``: pysnn, connectivity
and modules; Brian2 runtime, objects, code generation and compilation (``run(0 ms)``); standalone,
code generation and C++ compilation. ``sim``: the 1 s run; for standalone the binary's own timing
of its run (``device._last_run_time``), ``wall`` adds process start and loading the synapses.
Brian2 standalone runs single threaded (``openmp_threads = 0``), as pysnn (one torch thread).
Memory: peak resident set of the worker (VmHWM) and that peak minus the resident set after the
imports ("network"); for standalone the binary's peak (``/usr/bin/time``). Times are never
asserted: the script prints ratios against pysnn measured in the same run and writes JSON,
markdown and raster plots (N <= 40 000) to ``--out``.

With ``--external first|last`` it times instead, in-process, the network driven by an external
input current as well (Poisson input, ``--external-rate`` Hz, ``--external-mv`` mV per spike),
written as a user's step network that adds its input first or last to the synapses' sum:
``Unroll`` (the engine lowers it to ``run_recurrent(..., external=...)``) against the user's
own step loop, printing the time ratio and whether the spikes and ``v`` are identical.

Example::

    python benchmarks/vogels_abbott.py --models cuba coba --sizes 4000 40000
    python benchmarks/vogels_abbott.py --external last --sizes 4000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DT = 0.1  # ms
TAU_M, TAU_E, TAU_I = 20.0, 5.0, 10.0  # ms
V_T, V_R, REFRAC = -50.0, -60.0, 5.0  # mV, mV, ms
MODELS = {
    # E_l (mV), drive I (mV), w_e, w_i (mV for CUBA, dimensionless for COBA), E_e, E_i (mV)
    "cuba": dict(e_l=-49.0, drive=0.0, w_e=60 * 0.27 / 10, w_i=-20 * 4.5 / 10),
    "coba": dict(e_l=-60.0, drive=20.0, w_e=0.6, w_i=6.7, e_e=0.0, e_i=-80.0),
}
PEERS = ("pysnn", "pysnn-fused", "pysnn-unroll", "brian2", "brian2-standalone", "nest")
TRANSIENT = 0.1  # s, left out of the statistics


# ------------------------------------------------------------------------------ the network
def network_data(model: str, n: int, seed: int, path: Path) -> None:
    """Draw the synapses (pysnn's fixed_probability) and the initial potentials; save to npz."""
    import torch

    from pysnn.sparse import fixed_probability

    g = torch.Generator().manual_seed(seed)
    n_exc = n * 4 // 5
    p = 0.02 * 4000 / n
    exc = fixed_probability(n_exc, n, p, generator=g)  # (post, pre)
    inh = fixed_probability(n - n_exc, n, p, generator=g)
    if model == "cuba":
        v0 = V_R + torch.rand(n, generator=g, dtype=torch.float64) * (V_T - V_R)
    else:
        v0 = torch.randn(n, generator=g, dtype=torch.float64) * 5.0 - 55.0
    np.savez(
        path,
        exc_post=exc[0].numpy(),
        exc_pre=exc[1].numpy(),
        inh_post=inh[0].numpy(),
        inh_pre=inh[1].numpy(),
        v0=v0.numpy(),
    )


def pysnn_modules(model: str, n: int, data: Path) -> tuple:
    """pysnn's modules of the network saved in ``data`` (:func:`network_data`), state set to
    ``v(0)``: ``(lif, fc, syn_e, syn_i)``, float32, batch 1."""
    import torch

    from pysnn.neuron import LIFNeuron
    from pysnn.sparse import SparseLinear
    from pysnn.synapse import ConductanceSynapse, ExponentialSynapse

    prm = MODELS[model]
    arrays = np.load(data)
    n_exc = n * 4 // 5
    lif = LIFNeuron(
        n,
        DT,
        thresh=V_T,
        v_rest=prm["e_l"] + prm["drive"],  # the constant drive I shifts the rest to E_l + I
        v_reset=V_R,
        tau_v=TAU_M,
        refrac=REFRAC,
        surrogate=None,
    )
    # One connection for both receptor types: output (B, 2 n), excitatory synapses onto
    # columns 0..n-1, inhibitory ones onto n..2n-1 (one event-driven gather per step). The index
    # list is filled array by array (each npz member is read once and dropped): no copies of
    # the whole list besides the one handed over.
    n_e, n_i = arrays["exc_pre"].shape[0], arrays["inh_pre"].shape[0]
    indices = torch.empty(2, n_e + n_i, dtype=torch.int64)
    for row, key, lo, hi, shift in (
        (0, "exc_post", 0, n_e, 0),
        (1, "exc_pre", 0, n_e, 0),
        (0, "inh_post", n_e, n_e + n_i, n),
        (1, "inh_pre", n_e, n_e + n_i, n_exc),
    ):
        indices[row, lo:hi] = torch.from_numpy(arrays[key])
        indices[row, lo:hi] += shift
    weight = torch.empty(n_e + n_i)
    weight[:n_e], weight[n_e:] = prm["w_e"], prm["w_i"]
    fc = SparseLinear(n, 2 * n, indices, DT, weight=weight)
    del indices, weight
    if model == "cuba":
        syn_e, syn_i = ExponentialSynapse(lif, TAU_E), ExponentialSynapse(lif, TAU_I)
    else:
        syn_e = ConductanceSynapse(lif, TAU_E, prm["e_e"])
        syn_i = ConductanceSynapse(lif, TAU_I, prm["e_i"])
    with torch.no_grad():
        # create the state (one step without input, with an unreachable threshold), then set v(0)
        thresh = lif.thresh.clone()
        lif.thresh = 1e9
        lif(torch.zeros(1, n))
        lif.thresh = thresh
        lif.v = torch.from_numpy(arrays["v0"]).float().unsqueeze(0)
    return lif, fc, syn_e, syn_i


def run_pysnn(model: str, n: int, duration: float, data: Path, how: str = "loop") -> Dict:
    """pysnn's run: ``how`` ``"loop"`` (a Python step loop), ``"fused"`` (``run_recurrent``) or
    ``"unroll"`` (a user's step network through ``Unroll``)."""
    import torch

    import pysnn
    from pysnn.multistep import Unroll, run_recurrent
    from pysnn.network import SNNNetwork

    torch.set_num_threads(1)
    pysnn.set_checks(False)
    start = time.perf_counter()
    lif, fc, syn_e, syn_i = pysnn_modules(model, n, data)

    class Population(SNNNetwork):
        """The network as a user writes it: ``forward`` is one step."""

        def __init__(self) -> None:
            super().__init__()
            self.fc, self.syn_e, self.syn_i, self.lif = fc, syn_e, syn_i, lif

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.lif.spikes
            c = self.fc(s if s is not None else torch.zeros_like(x)).view(-1, 2, n)
            return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]))

    run = Unroll(Population(), reset=False)  # (planned at its first call, in the timed run)
    s = torch.zeros(1, n)
    steps = round(duration / DT)
    build = time.perf_counter() - start
    chunk = 100  # spikes recorded into a (chunk, n) buffer, read out once per chunk
    buffer = torch.zeros(chunk, n, dtype=torch.bool)
    spikes: List = []
    start = time.perf_counter()

    fused, unroll = how == "fused", how == "unroll"
    with torch.no_grad():
        per_call = 1000  # run_recurrent, Unroll: this many steps per call
        for t in range(0, steps, per_call) if unroll else ():  # (step 0 reads lif.spikes: zeros)
            out = run(s.expand(min(per_call, steps - t), 1, n))  # (the input is not used)
            spikes.append(out[:, 0].nonzero() + torch.tensor([t, 0]))
        for t in range(0, steps, per_call) if fused else ():
            found = run_recurrent(
                fc, (syn_e, syn_i), lif, min(per_call, steps - t), s, record="events"
            )
            s = None  # (the next call continues from lif.spikes)
            spikes.append(torch.stack((found[:, 0] + t, found[:, 2]), 1))
        for t in range(steps) if how == "loop" else ():
            x = fc(s).view(1, 2, n)
            s = lif(syn_e(x[:, 0]) + syn_i(x[:, 1]))
            buffer[t % chunk] = s[0]
            if t % chunk == chunk - 1 or t == steps - 1:
                found = buffer[: t % chunk + 1].nonzero()
                found[:, 0] += t - t % chunk
                spikes.append(found)
                buffer.zero_()
    sim = time.perf_counter() - start
    found = torch.cat(spikes).numpy()
    times = (found[:, 0] + 1) * DT * 1e-3  # s, at the end of the step
    return {"build": build, "sim": sim, "i": found[:, 1], "t": times}


def external_input(args: argparse.Namespace) -> List[Dict]:
    """``--external first|last``: the network driven by an external input current as well (a
    Brunel-type network: a Poisson input of ``--external-rate`` Hz per neuron, jumps of
    ``--external-mv`` mV), written as a user's step network,
    ``lif(syn_e(c[:, 0]) + syn_i(c[:, 1]) + x)`` (or ``x + ...``), ``x`` the step's input. Timed
    in this process (one torch thread, checks off), repeats interleaved, from the same state:
    ``Unroll(net, reset=False)`` (lowered to ``run_recurrent(external=...)``, one fused C loop)
    against the user's step loop ``torch.stack([net(x[t]) for t in range(T)])``, both 1000 steps
    per call; prints the loop / Unroll time ratio and whether spikes and ``v`` are identical."""
    import torch

    import pysnn
    from pysnn.engine import explain
    from pysnn.multistep import Unroll
    from pysnn.network import SNNNetwork

    torch.set_num_threads(1)
    pysnn.set_checks(False)
    first = args.external == "first"

    class Driven(SNNNetwork):
        """The population with an input current, as a user writes it: one step."""

        def __init__(self, modules: tuple) -> None:
            super().__init__()
            self.lif, self.fc, self.syn_e, self.syn_i = modules

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = self.fc(self.lif.spikes).view(-1, 2, self.lif.shape[0])
            if first:
                return self.lif(x + self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]))
            return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]) + x)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        for n in args.sizes:
            data = work / f"{model}_{n}.npz"
            network_data(model, n, args.seed, data)
            steps, per_call = round(args.duration / DT), 1000
            g = torch.Generator().manual_seed(args.seed + 1)
            p = args.external_rate * DT * 1e-3
            x = (torch.rand(steps, 1, n, generator=g) < p).float() * args.external_mv
            times: Dict[str, List[float]] = {"unroll": [], "loop": []}
            outputs: Dict[str, tuple] = {}
            with torch.no_grad():
                for _ in range(args.repeats):
                    for how in times:
                        net = Driven(pysnn_modules(model, n, data))
                        run = Unroll(net, reset=False)
                        start = time.perf_counter()
                        chunks = []
                        for t in range(0, steps, per_call):
                            block = x[t : t + per_call]
                            if how == "unroll":
                                chunks.append(run(block))
                            else:
                                chunks.append(torch.stack([net(step) for step in block]))
                        times[how].append(time.perf_counter() - start)
                        outputs[how] = (torch.cat(chunks), net.lif.v.clone())
                e = explain(Driven(pysnn_modules(model, n, data)), x[:2])
            same = all(torch.equal(a, b) for a, b in zip(outputs["unroll"], outputs["loop"]))
            fused, loop = statistics.median(times["unroll"]), statistics.median(times["loop"])
            rate = float(outputs["loop"][0].sum()) / n / (args.duration * 1e-3)
            print(
                f"{model} N={n:>6} external input {args.external}: Unroll {fused:6.2f} s "
                f"(plan {e.plan}, fused {e.fused}), user's step loop {loop:6.2f} s: "
                f"{loop / fused:.2f}x; identical spikes and v: {same}; rate {rate:.1f} Hz",
                flush=True,
            )
            rows.append(
                {"model": model, "n": n, "external": args.external, "unroll": times["unroll"],
                 "loop": times["loop"], "ratio": loop / fused, "identical": same,
                 "fused": e.fused, "rate_hz": rate}
            )  # fmt: skip
    return rows


def run_brian2(model: str, n: int, duration: float, data: Path, standalone: bool, sem: str, d):
    import brian2 as b2

    start = time.perf_counter()
    if standalone:
        b2.set_device("cpp_standalone", directory=d, build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = 0
        peak_file = str(Path(d).resolve() / "peak_kb.txt")
        b2.prefs.devices.cpp_standalone.run_cmd_unix = [
            "/usr/bin/time",
            "-f",
            "%M",
            "-o",
            peak_file,
            "./main",
        ]
    else:
        b2.prefs.codegen.target = "cython"
    b2.defaultclock.dt = DT * b2.ms
    prm = MODELS[model]
    arrays = np.load(data)
    n_exc = n * 4 // 5
    gate = "(unless refractory)" if sem == "documented" else ""
    on = "" if sem == "documented" else "int(not_refractory)*"
    if model == "cuba":
        eqs = f"""
        dv/dt = ({on}(ge+gi) - (v-El))/taum : volt {gate}
        dge/dt = -ge/taue : volt
        dgi/dt = -gi/taui : volt
        """
        unit, method = b2.mV, "exact"
    else:
        eqs = f"""
        dv/dt = ({on}(ge*(Ee-v)+gi*(Ei-v)) - (v-El) + I)/taum : volt {gate}
        dge/dt = -ge/taue : 1
        dgi/dt = -gi/taui : 1
        """
        unit, method = 1, "euler"
    namespace = {
        "taum": TAU_M * b2.ms,
        "taue": TAU_E * b2.ms,
        "taui": TAU_I * b2.ms,
        "El": prm["e_l"] * b2.mV,
        "I": prm["drive"] * b2.mV,
        "Ee": prm.get("e_e", 0.0) * b2.mV,
        "Ei": prm.get("e_i", 0.0) * b2.mV,
        "Vt": V_T * b2.mV,
        "Vr": V_R * b2.mV,
        "we": prm["w_e"] * unit,
        "wi": prm["w_i"] * unit,
    }
    group = b2.NeuronGroup(
        n,
        eqs,
        threshold="v>Vt",
        reset="v = Vr",
        refractory=REFRAC * b2.ms,
        method=method,
        namespace=namespace,
    )
    group.v = arrays["v0"] * b2.mV
    ce = b2.Synapses(group[:n_exc], group, on_pre="ge += we", namespace=namespace)
    ci = b2.Synapses(group[n_exc:], group, on_pre="gi += wi", namespace=namespace)
    ce.connect(i=arrays["exc_pre"], j=arrays["exc_post"])
    ci.connect(i=arrays["inh_pre"], j=arrays["inh_post"])
    monitor = b2.SpikeMonitor(group)
    net = b2.Network(group, ce, ci, monitor)
    if standalone:
        net.run(duration * b2.ms)
        b2.device.build(directory=d, compile=True, run=False)
        build = time.perf_counter() - start
        start = time.perf_counter()
        b2.device.run(directory=d)
        wall = time.perf_counter() - start
        sim = b2.device._last_run_time  # the binary's own timing of the run (no loading)
        binary_peak = int(Path(peak_file).read_text().split()[-1]) / 1024.0
    else:
        net.run(0 * b2.ms)
        build = time.perf_counter() - start
        start = time.perf_counter()
        net.run(duration * b2.ms)
        sim = time.perf_counter() - start
    extra = {"wall": wall, "binary_peak_mb": binary_peak} if standalone else {}
    return {
        **extra,
        "build": build,
        "sim": sim,
        "i": np.asarray(monitor.i[:]),
        "t": np.asarray(monitor.t[:] / b2.second),
    }


def run_nest(model: str, n: int, duration: float, data: Path) -> Dict:
    """The same network in NEST (``iaf_psc_exp`` / ``iaf_cond_exp``, one thread), in NEST's
    units: currents and conductances scaled by the membrane capacitance (any ``C_m`` gives the
    same dynamics), synaptic delay one step (pysnn's spikes act in the next step too).
    NEST's neurons hold ``V_m`` at ``V_reset`` while refractory (the examples' semantics, as
    ``--brian2-semantics documented``), and integrate COBA with an adaptive ODE solver."""
    import nest

    nest.set_verbosity("M_ERROR")
    nest.ResetKernel()
    nest.SetKernelStatus({"resolution": DT, "local_num_threads": 1, "print_time": False})
    start = time.perf_counter()
    prm = MODELS[model]
    arrays = np.load(data)
    n_exc = n * 4 // 5
    c_m = 250.0  # pF
    g_l = c_m / TAU_M  # nS
    common = dict(C_m=c_m, V_th=V_T, V_reset=V_R, t_ref=REFRAC, tau_syn_ex=TAU_E, tau_syn_in=TAU_I)
    if model == "cuba":  # ge, gi in mV: a current of g * C_m / tau_m pA
        pop = nest.Create("iaf_psc_exp", n, params=dict(common, E_L=prm["e_l"], tau_m=TAU_M))
        w_e, w_i = prm["w_e"] * g_l, prm["w_i"] * g_l
    else:  # ge, gi in units of the leak conductance; the drive I (mV) as a current
        pop = nest.Create(
            "iaf_cond_exp",
            n,
            params=dict(
                common,
                E_L=prm["e_l"],
                g_L=g_l,
                E_ex=prm["e_e"],
                E_in=prm["e_i"],
                I_e=prm["drive"] * g_l,
            ),
        )
        w_e, w_i = prm["w_e"] * g_l, -prm["w_i"] * g_l  # (NEST: negative = inhibitory)
    pop.V_m = arrays["v0"]
    ids = np.asarray(pop.tolist())
    for pre, post, w in (
        (arrays["exc_pre"], arrays["exc_post"], w_e),
        (arrays["inh_pre"] + n_exc, arrays["inh_post"], w_i),
    ):
        nest.Connect(  # (array connect: weights and delays per synapse)
            ids[pre],
            ids[post],
            "one_to_one",
            {
                "synapse_model": "static_synapse",
                "weight": np.full(len(pre), w),
                "delay": np.full(len(pre), DT),
            },
        )
    recorder = nest.Create("spike_recorder")
    nest.Connect(pop, recorder)
    nest.Prepare()
    build = time.perf_counter() - start
    start = time.perf_counter()
    nest.Run(duration)
    sim = time.perf_counter() - start
    nest.Cleanup()
    events = recorder.get("events")
    return {
        "build": build,
        "sim": sim,
        "i": np.asarray(events["senders"]) - ids[0],
        "t": np.asarray(events["times"]) * 1e-3,
    }


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def worker(peer: str, model: str, n: int, duration: float, data: str, out: str, sem: str) -> None:
    """One peer in this process; spikes to ``out`` (npz), timings and memory printed as JSON.

    Memory: the peak resident set of this process (VmHWM, fresh after ``exec``, unlike
    ``ru_maxrss``, which keeps the parent's at ``fork``) and that peak minus the resident set
    after the imports (``net_mb``: the network and its run); for Brian2 standalone the binary's
    own peak (``/usr/bin/time``), all of it the network's."""
    if peer.startswith("pysnn"):  # imports, torch's first-use set-up: not the network's memory
        import torch

        from pysnn.neuron import LIFNeuron
        from pysnn.sparse import SparseLinear
        from pysnn.synapse import ExponentialSynapse

        lif = LIFNeuron(2, DT)
        conn = SparseLinear(2, 2, torch.tensor([[0], [1]]), DT)
        with torch.no_grad():
            lif(ExponentialSynapse(lif)(conn(torch.ones(1, 2))))
    elif peer == "nest":
        import nest  # noqa: F401
    else:
        import brian2  # noqa: F401
    base = _status_mb("VmRSS")
    if peer.startswith("pysnn"):
        how = {"pysnn": "loop", "pysnn-fused": "fused", "pysnn-unroll": "unroll"}[peer]
        result = run_pysnn(model, n, duration, Path(data), how)
    elif peer == "nest":
        result = run_nest(model, n, duration, Path(data))
    else:
        directory = str(Path(out).with_suffix("")) + "_standalone"
        result = run_brian2(
            model, n, duration, Path(data), peer == "brian2-standalone", sem, directory
        )
    np.savez(out, i=result["i"], t=result["t"])
    peak = _status_mb("VmHWM")
    net = peak - base
    if peer == "brian2-standalone":  # the simulation ran in the binary, a child process
        peak = net = result["binary_peak_mb"]
    print(
        json.dumps(
            {
                "build": result["build"],
                "sim": result["sim"],
                "wall": result.get("wall", result["sim"]),
                "peak_mb": peak,
                "net_mb": net,
            }
        )
    )


# ------------------------------------------------------------------------------ statistics
def statistics_of(i: np.ndarray, t: np.ndarray, n: int, duration: float) -> Dict[str, float]:
    """Population rate (Hz) and mean ISI CV after the transient."""
    keep = t >= TRANSIENT
    i, t = i[keep], t[keep]
    rate = len(i) / (n * (duration * 1e-3 - TRANSIENT))
    order = np.lexsort((t, i))
    i, t = i[order], t[order]
    isi = np.diff(t)
    same = i[1:] == i[:-1]
    isi, owner = isi[same], i[1:][same]
    cvs = []
    if len(isi):
        counts = np.bincount(owner, minlength=n)
        sums = np.bincount(owner, weights=isi, minlength=n)
        squares = np.bincount(owner, weights=isi * isi, minlength=n)
        ok = counts >= 2  # at least 3 spikes
        mean = sums[ok] / counts[ok]
        var = np.maximum(squares[ok] / counts[ok] - mean * mean, 0.0)
        cvs = np.sqrt(var) / mean
    return {"rate": rate, "cv": float(np.mean(cvs)) if len(cvs) else float("nan")}


def identical_until(
    a: Dict[str, np.ndarray], b: Dict[str, np.ndarray], shift_a: int = 0, shift_b: int = 1
) -> float:
    """The time (ms) up to which two runs have exactly the same spikes (neuron and step).

    pysnn records a spike at the end of its step, Brian2 at the start of the step in which ``v``
    crossed the threshold (at its end): Brian2's times are shifted by one step (``shift_a``,
    ``shift_b``: 1 for a Brian2 run, 0 for a pysnn run). ``inf``: identical throughout."""
    steps_a = np.round(a["t"] * 1e3 / DT).astype(np.int64) + shift_a
    steps_b = np.round(b["t"] * 1e3 / DT).astype(np.int64) + shift_b
    keys_a = np.sort(steps_a * 10_000_000 + a["i"])
    keys_b = np.sort(steps_b * 10_000_000 + b["i"])
    common = min(len(keys_a), len(keys_b))
    differ = np.nonzero(keys_a[:common] != keys_b[:common])[0]
    if len(differ) == 0:
        first = common
        if len(keys_a) == len(keys_b):
            return float("inf")
    else:
        first = differ[0]
    step = min(
        keys_a[first] // 10_000_000 if first < len(keys_a) else np.inf,
        keys_b[first] // 10_000_000 if first < len(keys_b) else np.inf,
    )
    return float(step - 1) * DT  # the last step that still agreed


def raster(results: Dict, model: str, n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [
        p
        for p in ("pysnn", "pysnn-fused", "pysnn-unroll", "brian2-standalone", "brian2", "nest")
        if p in results
    ]
    fig, axes = plt.subplots(len(peers), 1, figsize=(8, 2.6 * len(peers)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, peer in zip(axes, peers):
        spikes = np.load(results[peer]["spikes"])
        shown = spikes["i"] < 4000
        ax.plot(spikes["t"][shown] * 1e3, spikes["i"][shown], ",k")
        stats = results[peer]["stats"]
        ax.set_title(
            f"{model.upper()} N={n}, {peer}: {stats['rate']:.1f} Hz, ISI CV {stats['cv']:.2f}",
            fontsize=9,
        )
        ax.set_ylabel("neuron")
    axes[-1].set_xlabel("time (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["cuba", "coba"], choices=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[4000, 40000])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    parser.add_argument(
        "--base", default="pysnn", choices=PEERS, help="the peer ratios are computed against"
    )
    parser.add_argument("--duration", type=float, default=1000.0, help="biological time (ms)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per peer (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--brian2-max-n", type=int, default=40000)
    parser.add_argument("--brian2-semantics", default="pysnn", choices=["pysnn", "documented"])
    parser.add_argument("--rate-tol", type=float, default=0.15)
    parser.add_argument("--cv-tol", type=float, default=0.1)
    parser.add_argument("--python", default=sys.executable, help="interpreter of the workers")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default="vogels_abbott")
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "pysnn_vogels_abbott"),
        help="scratch folder (network data, spikes, Brian2's standalone builds)",
    )
    parser.add_argument(
        "--external",
        choices=["first", "last"],
        help="instead of the peers: the network with an external input current added first or "
        "last to the synapses' sum, Unroll (fused) against the user's step loop, in-process",
    )
    parser.add_argument("--external-rate", type=float, default=100.0, help="Hz per neuron")
    parser.add_argument("--external-mv", type=float, default=1.0, help="mV per input spike")
    parser.add_argument("--_worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        peer, model, n, duration, data, out, sem = args._worker
        worker(peer, model, int(n), float(duration), data, out, sem)
        return
    if args.external:
        rows = external_input(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.name}_external_{args.external}.json").write_text(json.dumps(rows, indent=1))
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)")
    print(f"# dt {DT} ms, {args.duration} ms, Brian2 semantics: {args.brian2_semantics}")
    rows = []
    for model in args.models:
        for n in args.sizes:
            data = work / f"{model}_{n}.npz"
            network_data(model, n, args.seed, data)
            results: Dict = {}
            peers = [
                p for p in args.peers if not (p.startswith("brian2") and n > args.brian2_max_n)
            ]
            runs: Dict[str, List] = {peer: [] for peer in peers}
            for repeat in range(args.repeats):  # interleaved: background load hits all alike
                for peer in peers:
                    if len(runs[peer]) < repeat:
                        continue  # failed before
                    spikes = work / f"{model}_{n}_{peer}.npz"
                    cmd = [args.python, __file__, "--_worker", peer, model, str(n)]
                    cmd += [str(args.duration), str(data), str(spikes), args.brian2_semantics]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        print(f"{peer} N={n} failed: {proc.stderr.strip()[-2000:]}")
                        continue
                    runs[peer].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            for peer in peers:
                if not runs[peer]:
                    continue
                done = runs[peer]
                spikes = work / f"{model}_{n}_{peer}.npz"
                spikes_file = np.load(spikes)
                stats = statistics_of(spikes_file["i"], spikes_file["t"], n, args.duration)
                results[peer] = {
                    "build": statistics.median(r["build"] for r in done),
                    "sim": statistics.median(r["sim"] for r in done),
                    "sim_min": min(r["sim"] for r in done),
                    "sims": [r["sim"] for r in done],
                    "wall": statistics.median(r["wall"] for r in done),
                    "peak_mb": max(r["peak_mb"] for r in done),
                    "net_mb": max(r["net_mb"] for r in done),
                    "stats": stats,
                    "spikes": str(spikes),
                }
                r = results[peer]
                print(
                    f"{model} N={n:>6} {peer:>17}: build {r['build']:7.2f} s, sim {r['sim']:7.2f} s"
                    f" (runs {', '.join(f'{x:.2f}' for x in r['sims'])}; wall {r['wall']:.2f} s),"
                    f" peak {r['peak_mb']:6.0f} MB (network {r['net_mb']:6.0f} MB), rate "
                    f"{stats['rate']:6.2f} Hz, ISI CV {stats['cv']:.3f}",
                    flush=True,
                )
            base = results.get(args.base)
            for peer, r in results.items():
                row = {"model": model, "n": n, "peer": peer, **r}
                if base is not None:
                    row["sim_ratio"] = r["sim"] / base["sim"]  # > 1: pysnn faster
                    row["sim_min_ratio"] = r["sim_min"] / base["sim_min"]
                    row["mem_ratio"] = base["net_mb"] / r["net_mb"]  # > 1: pysnn more memory
                    rate_diff = abs(base["stats"]["rate"] / r["stats"]["rate"] - 1)
                    cv_diff = abs(base["stats"]["cv"] - r["stats"]["cv"])
                    row["rate_rel_diff"], row["cv_abs_diff"] = rate_diff, cv_diff
                    row["agrees"] = bool(rate_diff <= args.rate_tol and cv_diff <= args.cv_tol)
                    row["identical_until_ms"] = identical_until(
                        np.load(base["spikes"]),
                        np.load(r["spikes"]),
                        int(args.base.startswith("brian2")),
                        int(peer.startswith("brian2")),
                    )
                rows.append(row)
                if peer != args.base and base is not None:
                    print(
                        f"    {peer}/{args.base} sim time {row['sim_ratio']:.2f}x (fastest runs "
                        f"{row['sim_min_ratio']:.2f}x), {args.base}/{peer} network memory "
                        f"{row['mem_ratio']:.2f}x; rate differs {rate_diff:.1%} (tol "
                        f"{args.rate_tol:.0%}), CV {cv_diff:.3f} (tol {args.cv_tol}): "
                        f"{'agree' if row['agrees'] else 'DISAGREE'}; identical spikes for the "
                        f"first {row['identical_until_ms']:.1f} ms"
                    )
            if n <= 40000 and results:
                raster(results, model, n, out / f"{args.name}_{model}_{n}_raster.png")
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=1, default=str))
    lines = [
        f"| model | N | peer | build (s) | sim (s), median | fastest | peer/{args.base} time (median, "
        "fastest) | peak MB | network MB | rate (Hz) | ISI CV | agrees |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row.get("sim_ratio")
        ratios = "" if ratio is None else f"{ratio:.2f}, {row['sim_min_ratio']:.2f}"
        lines.append(
            f"| {row['model']} | {row['n']} | {row['peer']} | {row['build']:.2f} | "
            f"{row['sim']:.2f} | {row['sim_min']:.2f} | {ratios} | "
            f"{row['peak_mb']:.0f} | {row['net_mb']:.0f} | {row['stats']['rate']:.2f} | "
            f"{row['stats']['cv']:.3f} | "
            f"{'' if row['peer'] == args.base else row.get('agrees', '')} |"
        )
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
