"""Partitioned simulation (pysnn.distributed.Partition): 1 vs N gloo processes on this machine.

Two networks, each with its ``n`` LIF neurons (and the weight rows feeding them) split over the
processes, simulated for ``--steps`` steps of 1 ms under ``torch.no_grad()``:

- ``bindsnet``: the BindsNET-paper network (Hazan et al. 2018, as ``bindsnet_paper.py``): ``n``
  Poisson inputs (rates U(0, 100) Hz) all-to-all onto ``n`` LIF neurons, weights N(0, 1) mV. The
  input is generated whole on every process (same seed), so a feed-forward partition exchanges no
  spikes during the run; the spike counts are gathered once at the end;
- ``recurrent``: ``n`` LIF neurons all-to-all among themselves (weights N(0, 1) mV / sqrt(n) * 8,
  a delay of 2 ms; per-synapse delays would double the memory, as a second ``(n, n)`` tensor) plus one Poisson input per neuron (20 Hz, 10 mV): the population's
  spikes are exchanged every step with :class:`pysnn.distributed.SpikeExchange` (one
  ``all_gather`` of ``n`` bytes per sample).

Weights are drawn in blocks of 64 rows from per-block seeds, so every process draws only its own
rows and the global matrix is the same for any number of processes (the spike totals printed for
1 and N processes must agree: the partition does not change the simulation).

Reported per run: simulation time (median over ``--repeats``; construction not included), peak
resident memory of each process (VmHWM) and the per-step communication volume of the model
``B n (N - 1)`` bytes (see docs/scaling.rst). Times are never asserted. The machine is shared with
other users: load from them slows both columns, and two processes on two cores compete with
each other and with the load for the cores, so the ratios here say little about a dedicated
machine or several nodes.

Example::

    python benchmarks/partitioned.py --sizes 20000 40000 --steps 200 --processes 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

V_REST, V_RESET, V_TH, TAU_V, REFRAC = -65.0, -65.0, -52.0, 100.0, 5  # mV, mV, mV, ms, steps


def _rows(out: torch.Tensor, n_rows: int, start: int, stop: int, seed: int, scale: float = 1.0):
    """Write rows ``start:stop`` of an ``(n_rows, n_cols)`` N(0, scale^2) matrix into ``out``,
    drawn in 64-row blocks from per-block seeds (the same global matrix for any split; no
    full-size temporary)."""
    n_cols = out.shape[1]
    for block in range(start // 64, (stop + 63) // 64):
        lo, hi = block * 64, min(block * 64 + 64, n_rows)
        values = torch.randn(hi - lo, n_cols, generator=torch.Generator().manual_seed(seed + block))
        a, b = max(lo, start), min(hi, stop)
        if a < b:
            out[a - start : b - start] = values[a - lo : b - lo] * scale


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _simulate(net: str, n: int, steps: int, repeats: int, seed: int) -> Dict[str, float]:
    import pysnn
    from pysnn import distributed
    from pysnn.connection import Linear
    from pysnn.neuron import LIFNeuron

    pysnn.set_checks(False)
    part = distributed.Partition(n)
    lif = LIFNeuron(part.size, thresh=V_TH, v_rest=V_REST, v_reset=V_RESET, tau_v=TAU_V)
    lif.refrac.fill_(float(REFRAC))
    gen = torch.Generator().manual_seed(seed)
    if net == "bindsnet":
        rates = torch.rand(1, n, generator=gen) * 100.0  # Hz
        fc = Linear(n, part.size)
        with torch.no_grad():
            _rows(fc.weight, n, part.start, part.stop, seed + 1)
    else:
        rates = torch.full((1, n), 20.0)
        relay = distributed.SpikeExchange(part)
        fc = Linear(n, part.size, delay=2.0)
        with torch.no_grad():
            _rows(fc.weight, n, part.start, part.stop, seed + 1, scale=8.0 / n**0.5)
    prob = -torch.expm1(-rates * 1e-3)  # per-step spike probability at dt = 1 ms
    times, total = [], 0
    for _ in range(repeats):
        for module in (fc, lif):
            module.reset_state()
        input_gen = torch.Generator().manual_seed(seed + 2)
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        with torch.no_grad():
            count = torch.zeros(1, part.size)
            s = torch.zeros(1, part.size)
            for _t in range(steps):
                x = (torch.rand(prob.shape, generator=input_gen) < prob).float()
                if net == "bindsnet":
                    s = lif(fc(x))
                else:
                    s = lif(fc(relay(s)) + 10.0 * x[:, part.slice])
                count += s
            counts = distributed.gather_shards(count.t(), n).sum()  # all ranks' spikes
        times.append(time.perf_counter() - start)
        total = int(counts)
    return {"seconds": statistics.median(times), "spikes": total, "peak_mb": _peak_rss_mb()}


def _worker(rank: int, world: int, init: str, out: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        result = _simulate(args.net, args.n, args.steps, args.repeats, args.seed)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(net: str, n: int, world: int, args: argparse.Namespace) -> List[Dict[str, float]]:
    """Fresh processes for one (network, n, world) point; each rank's result."""
    ns = argparse.Namespace(**{**vars(args), "net": net, "n": n})
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _worker,
            args=(world, os.path.join(tmp, "init"), tmp, ns),
            nprocs=world,
            start_method="spawn",
        )
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["bindsnet", "recurrent"])
    p.add_argument("--sizes", nargs="+", type=int, default=[20000, 40000])
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs (shared), load {os.getloadavg()[0]:.1f}"
    )
    print(f"{args.steps} steps of 1 ms, batch 1, {args.threads} thread(s) per process")
    rows = []
    for net in args.nets:
        for n in args.sizes:
            base = None
            for world in args.processes:
                ranks = run(net, n, world, args)
                seconds = max(r["seconds"] for r in ranks)
                base = seconds if base is None else base
                comm = 0 if net == "bindsnet" or world == 1 else n * (world - 1)
                row = {
                    "net": net,
                    "n": n,
                    "processes": world,
                    "seconds": seconds,
                    "ms_per_step": 1e3 * seconds / args.steps,
                    "speedup": base / seconds,
                    "peak_mb_per_process": [round(r["peak_mb"]) for r in ranks],
                    "spikes": ranks[0]["spikes"],
                    "exchange_bytes_per_step": comm,
                }
                rows.append(row)
                print(
                    f"{net:9s} n={n:6d} N={world}: {row['ms_per_step']:8.2f} ms/step, "
                    f"speed-up {row['speedup']:.2f}x, peak RSS/process "
                    f"{row['peak_mb_per_process']} MB, spikes {row['spikes']}, "
                    f"exchange {comm} B/step"
                )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
