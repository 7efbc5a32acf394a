r"""Diehl & Cook (2015) accuracy and wall time: BindsNET's own model beside pysnn, same protocol.

Issue 26 asks for BindsNET's example next to pysnn's results "on the same protocol and a reduced
training set". Both run here in one process, one after the other, on the same digits:

- **pysnn**: :class:`pysnn.models.DiehlCook2015` (current-based synapses, BindsNET's form) through
  ``examples/mnist_stdp.py``'s trainer (imported, not copied);
- **BindsNET**: ``bindsnet.models.DiehlAndCook2015`` (its own network, STDP rule, weight
  normalisation and adaptive threshold), with BindsNET's ``assign_labels``, ``all_activity`` and
  ``proportion_weighting``.

The protocol is the example's for both (the paper's): Poisson input at pixel / 4 Hz (at most
63.75 Hz), 350 ms per digit, ``dt`` = 1 ms, the state reset between digits, a digit that drew
fewer than 5 excitatory spikes shown again at +32 Hz (up to 5 times); train one digit at a time
on the first ``--n-train`` training digits, then, with learning and thresholds frozen, assign
labels from the first ``--n-assign`` training digits and classify the first ``--n-test`` test
digits. The spike trains come from one seeded generator per library, drawn in the same order,
so both see the same Poisson trains as long as they re-present the same digits.

    python benchmarks/diehl_cook_bindsnet_accuracy.py --data-dir ../shared/data/mnist \
        --n-train 2000 --n-assign 1000 --n-test 1000 --threads 1

Needs BindsNET (``benchmarks/README.md``: peers in their own venv). Writes
``benchmarks/results/diehl_cook_bindsnet_accuracy.json`` and prints a table. Never asserts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from pysnn.datasets import MNIST  # noqa: E402
from pysnn.evaluation import all_activity, assign_labels, proportion_weighting  # noqa: E402

STEPS = 350  # ms per digit (dt = 1 ms)
MIN_SPIKES, BOOST, RETRIES = 5, 32.0, 5


def poisson(images: torch.Tensor, intensity: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``(T, B, 784)`` spikes: per-step probability ``1 - exp(-rate dt)`` (the example's)."""
    rates = images.reshape(images.shape[0], -1).float() / 255.0 * intensity[:, None]
    prob = -torch.expm1(-rates / 1000.0)
    return (torch.rand((STEPS, *prob.shape), generator=gen) < prob).float()


def present(run: Callable[[torch.Tensor], torch.Tensor], image, intensity, gen) -> torch.Tensor:
    """One digit ``(1, 28, 28)``, re-presented at +32 Hz while it drew < 5 spikes."""
    level = torch.full((1,), intensity)
    counts = run(poisson(image, level, gen))
    for _ in range(RETRIES):
        if counts.sum() >= MIN_SPIKES:
            break
        level += BOOST
        counts = run(poisson(image, level, gen))
    return counts


def protocol(name, run, train_mode, data, args) -> Dict[str, float]:
    """Train, assign, test with ``run(spikes (T, 1, 784)) -> counts (1, N)``."""
    (train_x, train_y), (test_x, test_y) = data
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    train_mode(True)
    for i in range(args.n_train):
        present(run, train_x[i : i + 1], args.intensity, gen)
        if (i + 1) % 500 == 0:
            print(f"  {name}: trained {i + 1} digits, {time.perf_counter() - start:.0f} s")
    train_seconds = time.perf_counter() - start
    train_mode(False)
    assign = [present(run, train_x[i : i + 1], args.intensity, gen) for i in range(args.n_assign)]
    test = [present(run, test_x[i : i + 1], args.intensity, gen) for i in range(args.n_test)]
    wall = time.perf_counter() - start
    assign_counts, test_counts = torch.cat(assign).float(), torch.cat(test).float()
    assignments, proportions, _ = assign_labels(assign_counts, train_y[: args.n_assign], 10)
    labels = test_y[: args.n_test]
    votes = all_activity(test_counts, assignments, 10)
    weighted = proportion_weighting(test_counts, assignments, proportions, 10)
    return {
        "accuracy_all_activity": float((votes == labels).float().mean()),
        "accuracy_proportion_weighting": float((weighted == labels).float().mean()),
        "train_seconds": train_seconds,
        "wall_seconds": wall,
    }


def pysnn_runner(n_neurons: int, seed: int):
    from pysnn.models import DiehlCook2015

    torch.manual_seed(seed)
    net = DiehlCook2015(n_inputs=784, n_neurons=n_neurons)

    def run(spikes: torch.Tensor) -> torch.Tensor:
        return net.run(spikes)

    return run, net.train


def bindsnet_runner(n_neurons: int, seed: int):
    from bindsnet_paper import _import_bindsnet

    _import_bindsnet()
    from bindsnet.models import DiehlAndCook2015

    torch.manual_seed(seed)
    net = DiehlAndCook2015(
        n_inpt=784, n_neurons=n_neurons, exc=22.5, inh=120.0, dt=1.0, norm=78.4,
        nu=(1e-4, 1e-2), theta_plus=0.05, inpt_shape=(1, 28, 28),
    )  # fmt: skip

    from bindsnet.network.monitors import Monitor

    monitor = Monitor(net.layers["Ae"], state_vars=["s"], time=STEPS)
    net.add_monitor(monitor, name="Ae_spikes")

    def run(spikes: torch.Tensor) -> torch.Tensor:
        net.run(inputs={"X": spikes.view(STEPS, 1, 1, 28, 28)}, time=STEPS)
        counts = monitor.get("s").sum(0).float().view(1, -1)
        net.reset_state_variables()  # (the monitor's record too)
        return counts

    return run, lambda mode: net.train(mode)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX files")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-assign", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-neurons", type=int, default=100)
    p.add_argument("--intensity", type=float, default=63.75, help="max input rate (Hz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=("pysnn", "bindsnet"), default=None)
    p.add_argument(
        "--out", default=str(REPO / "benchmarks/results/diehl_cook_bindsnet_accuracy.json")
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, test = MNIST(args.data_dir, train=True), MNIST(args.data_dir, train=False)
    data = ((train.data, train.targets), (test.data, test.targets))
    results = {}
    runners = {"pysnn": pysnn_runner, "bindsnet": bindsnet_runner}
    for name, build in runners.items():
        if args.only and name != args.only:
            continue
        if name == "bindsnet" and importlib.util.find_spec("bindsnet") is None:
            results[name] = {"error": "bindsnet not installed"}
            continue
        run, mode = build(args.n_neurons, args.seed)
        print(f"{name}: {args.n_train} train, {args.n_assign} assign, {args.n_test} test digits")
        results[name] = protocol(name, run, mode, data, args)
        print(f"  {name}: {results[name]}")
    report = {
        "protocol": "350 ms Poisson (pixel/4 Hz), reset between digits, +32 Hz retries, batch 1",
        "n_neurons": args.n_neurons, "n_train": args.n_train, "n_assign": args.n_assign,
        "n_test": args.n_test, "seed": args.seed, "threads": args.threads,
        "machine": platform.processor() or platform.machine(), "command": " ".join(sys.argv),
        "results": results,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| library | proportion weighting | all activity | training time | wall time |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | {r['error']} | | | |")
            continue
        accuracy = f"{r['accuracy_proportion_weighting']:.1%} | {r['accuracy_all_activity']:.1%}"
        print(f"| {name} | {accuracy} | {r['train_seconds']:.0f} s | {r['wall_seconds']:.0f} s |")
    if "pysnn" in results and "error" not in results.get("bindsnet", {"error": 1}):
        ratio = results["bindsnet"]["wall_seconds"] / results["pysnn"]["wall_seconds"]
        print(f"pysnn is {ratio:.1f}x faster (wall time, same digits and protocol)")


if __name__ == "__main__":
    main()
