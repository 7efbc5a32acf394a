"""Building a large connection and filling its weight in place: pysnn.Linear vs torch.nn.Linear.

Issue #13 asks that building ``Linear(10000, 10000)`` and filling its weight in place (``normal_``,
``torch.nn.init.*``, ``copy_``) cost no more than 1.5x the same on ``torch.nn.Linear`` in the same
run. Each operation is timed on both classes alternately (best of ``--repeats``); the script
prints seconds and the ratio pysnn / torch. Nothing is asserted.

    python benchmarks/construction.py [--n 10000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Dict

import torch
from torch import nn

from pysnn.connection import Linear


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.n
    source = torch.randn(n, n)
    layers: Dict[str, nn.Module] = {
        "torch.nn.Linear": nn.Linear(n, n, bias=False),
        "pysnn Linear": Linear(n, n),
    }
    ops: Dict[str, Callable[[nn.Module], object]] = {
        "weight.normal_()": lambda m: m.weight.normal_(),
        "nn.init.kaiming_uniform_": lambda m: nn.init.kaiming_uniform_(m.weight),
        "weight.copy_(tensor)": lambda m: m.weight.copy_(source),
    }
    print(f"n = {n}, {args.threads} thread(s), best of {args.repeats}; seconds, pysnn / torch")
    results = {}
    for cls_name, build in (
        ("torch.nn.Linear", lambda: nn.Linear(n, n, bias=False)),
        ("pysnn Linear", lambda: Linear(n, n)),
    ):
        results[("build", cls_name)] = best(build, args.repeats)
    with torch.no_grad():
        for op_name, op in ops.items():
            for cls_name, layer in layers.items():
                results[(op_name, cls_name)] = best(lambda: op(layer), args.repeats)
    for op_name in ["build", *ops]:
        t_torch = results[(op_name, "torch.nn.Linear")]
        t_pysnn = results[(op_name, "pysnn Linear")]
        print(
            f"{op_name:28s} torch {t_torch:7.3f}  pysnn {t_pysnn:7.3f}  ratio {t_pysnn / t_torch:5.2f}"
        )


if __name__ == "__main__":
    main()
