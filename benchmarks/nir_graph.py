r"""One NIR graph run by pysnn, snnTorch and Norse: inference time per step and spike agreement.

The graph is written by :func:`pysnn.nir.to_nir` (``method="euler"``, which snnTorch and Norse
simulate exactly) from ``Linear(N_in, N_h) -> CubaLIF -> Linear(N_h, 10) -> CubaLIF`` (a
current-based LIF, the one neuron node both peers import with the same equations), ``dt`` = 0.1 ms
(snnTorch's fixed 1e-4 s). Each library builds its modules from the same graph and runs ``T``
steps of a batch of Poisson spikes under ``torch.no_grad()``, one step at a time:

- **pysnn-graph**: :func:`pysnn.nir.from_nir` (a :class:`~pysnn.nir.NIRNetwork`);
- **pysnn**: the original ``nn.Sequential`` of pysnn modules (what the graph adds over it);
- **snnTorch** (if installed): ``snntorch.import_nir.import_from_nir``;
- **Norse** (if installed): ``norse.torch.utils.import_nir.from_nir`` (``dt=1e-4``).

Prints the median over ``--repeats`` runs (after one warm-up run), the ratio pysnn-graph / other
(< 1: pysnn-graph is faster) and whether each library's output spikes equal pysnn's::

    python benchmarks/nir_graph.py --inputs 784 --hidden 512 --steps 200 --batch 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pysnn  # noqa: E402
from pysnn.connection import Linear  # noqa: E402
from pysnn.network import reset_state  # noqa: E402
from pysnn.nir import CubaLIF, from_nir, to_nir  # noqa: E402

DT = 0.1  # ms: snnTorch's importer uses dt = 1e-4 s

# A case runs all steps of its network on the input and returns the output spikes (T, B, 10).
Runner = Callable[[torch.Tensor], torch.Tensor]


def build_network(n_in: int, n_hidden: int) -> nn.Sequential:
    torch.manual_seed(0)
    fc1, fc2 = Linear(n_in, n_hidden, DT), Linear(n_hidden, 10, DT)
    with torch.no_grad():
        fc1.weight.mul_(4.0)
        fc2.weight.mul_(4.0)
    return nn.Sequential(
        fc1,
        CubaLIF(n_hidden, DT, tau_syn=0.5, tau_v=1.0, thresh=0.3),
        fc2,
        CubaLIF(10, DT, tau_syn=0.5, tau_v=1.0, thresh=0.3),
    )


def pysnn_runner(module: nn.Module) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        reset_state(module)
        return torch.stack([module(step) for step in x])

    return run


def stateful_runner(module: nn.Module) -> Runner:
    """A nirtorch graph module, ``forward(x, state) -> (out, state)``."""

    def run(x: torch.Tensor) -> torch.Tensor:
        state, out = None, []
        for step in x:
            y, state = module(step, state)
            out.append(y)
        return torch.stack(out)

    return run


def snntorch_runner(graph) -> Optional[Runner]:
    try:
        from snntorch.import_nir import import_from_nir
    except ImportError:
        return None
    return stateful_runner(import_from_nir(graph))


def norse_runner(graph) -> Optional[Runner]:
    try:
        from norse.torch.utils.import_nir import from_nir as norse_from_nir
    except ImportError:
        return None
    return stateful_runner(norse_from_nir(graph, dt=DT * 1e-3))


def timed(run: Runner, x: torch.Tensor, repeats: int) -> Dict[str, object]:
    with torch.no_grad():
        out = run(x)  # warm-up, and the spikes compared
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "spikes": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--name", default="nir_graph", help="results file name (no suffix)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pysnn.set_checks(False)

    network = build_network(args.inputs, args.hidden)
    graph = to_nir(network, method="euler")
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand(args.steps, args.batch, args.inputs, generator=generator) < 0.05).float()
    cases = {
        "pysnn-graph": pysnn_runner(from_nir(graph, dt=DT, method="euler")),
        "pysnn": pysnn_runner(network),
        "snntorch": snntorch_runner(graph),
        "norse": norse_runner(graph),
    }
    results = {name: timed(run, x, args.repeats) for name, run in cases.items() if run}
    reference = results["pysnn-graph"]
    print(
        f"NIR graph Linear({args.inputs}, {args.hidden}) -> CubaLIF -> Linear({args.hidden}, 10) "
        f"-> CubaLIF, {args.steps} steps of {DT} ms, batch {args.batch}, "
        f"{args.threads} thread(s), torch {torch.__version__}"
    )
    print(f"{'library':<12} {'ms/step':>9} {'graph/this':>11} {'spikes':>7}  same spikes")
    rows = []
    for name, result in results.items():
        per_step = result["seconds"] / args.steps * 1e3
        ratio = reference["seconds"] / result["seconds"]
        same = torch.equal(result["spikes"], reference["spikes"])
        count = int(result["spikes"].sum())
        print(f"{name:<12} {per_step:>9.3f} {ratio:>11.2f} {count:>7}  {same}")
        rows.append(
            {"library": name, "ms_per_step": per_step, "ratio": ratio, "spikes": count}
            | {"same_spikes": same}
        )
    out = REPO / "benchmarks" / "results" / args.name
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    table = [
        f"NIR graph, {args.inputs}-{args.hidden}-10 CubaLIF, {args.steps} steps of {DT} ms, "
        f"batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}",
        "",
        "| library | ms/step | pysnn-graph / library | output spikes | same spikes as pysnn-graph |",
        "|---|---|---|---|---|",
    ]
    table += [
        f"| {r['library']} | {r['ms_per_step']:.3f} | {r['ratio']:.2f} | {r['spikes']} | "
        f"{r['same_spikes']} |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print(f"written {out.relative_to(REPO)}.json and .md")


if __name__ == "__main__":
    main()
