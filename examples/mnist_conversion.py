r"""Train a small CNN on MNIST, convert it to a spiking network, and measure accuracy against time.

The ANN (pixels / 255 in [0, 1])::

    Conv2d(1, 16, 5) -> BatchNorm2d -> AvgPool2d(2) -> ReLU       16 x 12 x 12
    Conv2d(16, 32, 5) -> BatchNorm2d -> AvgPool2d(2) -> ReLU      32 x 4 x 4
    Flatten -> Dropout(0.2) -> Linear(512, 128) -> ReLU -> Linear(128, 10)

is trained with Adam (cross-entropy, cosine learning-rate decay), then converted by
:func:`pysnn.conversion.ann_to_snn`: batch norms folded into the convolutions, dropout removed,
each ReLU replaced by integrate-and-fire neurons with reset by subtraction, the weights rescaled
by the 99.9th percentile of each layer's activations on ``--n-calibration`` training images
(threshold balancing). The image drives the first layer as a constant current every step. The
script reports the SNN's test accuracy after T = 8, 16, ..., ``--max-steps`` steps for both
readouts (``spikes``: output spike counts; ``potential``: a non-leaky integrator's potential),
the fewest steps within 0.5 points of the ANN, and saves the curve to ``--plot``.

Data: by default the small MNIST sample bundled with pysnn (3000 training / 1000 test digits),
on which the ANN reaches about 95.6 % (the 99 % target needs the full training set); with
``--data-dir DIR`` the full MNIST from the IDX files in ``DIR`` (e.g.
``--data-dir ../shared/data/mnist``).

Measured on the 2-core development CPU (torch 2.13.0, shared with other jobs), full MNIST::

    python examples/mnist_conversion.py --data-dir ../shared/data/mnist --epochs 3 --threads 1

    ANN test accuracy 99.22 % (training 3 epochs: 65-122 s depending on the load)
    T          4        8       16       32       64      128      256
    spikes   88.49    98.43    99.06    99.20    99.25    99.23    99.23   within 0.5 from T = 16
    potential 90.52   98.72    99.13    99.20    99.23    99.22    99.24   within 0.5 from T = 8

    with --v-init 0 (membrane starting at 0, the classic conversion):
    spikes      -     71.37    94.82    98.76    99.18    99.17    99.21   within 0.5 from T = 32
    potential   -     68.84    94.50    98.81    99.17    99.20    99.22   within 0.5 from T = 32

    with --percentile 100 (max-normalisation):
    spikes   64.48    94.14    98.68    99.09    99.21    99.23    99.23   within 0.5 from T = 32

Simulating the 10 000 test digits for 256 steps took 98-164 s per readout (one thread, 40-60 µs
per image and step); the conversion 0.1-0.5 s. The curve is in
``docs/_static/mnist_conversion.png``.

Examples::

    python examples/mnist_conversion.py                        # bundled sample, ~1 min
    python examples/mnist_conversion.py --data-dir ../shared/data/mnist --epochs 3
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import pysnn  # noqa: E402
from pysnn.conversion import ann_to_snn  # noqa: E402
from pysnn.datasets import MNIST, MNISTSample  # noqa: E402


def load_data(args: argparse.Namespace) -> Tuple[torch.Tensor, ...]:
    """Images ``(N, 1, 28, 28)`` in [0, 1] and labels, train then test."""
    if args.data_dir is None:
        train, test = MNISTSample(train=True), MNISTSample(train=False)
    else:
        train, test = MNIST(args.data_dir, train=True), MNIST(args.data_dir, train=False)
    x_train = train.data.unsqueeze(1).float() / 255.0
    x_test = test.data.unsqueeze(1).float() / 255.0
    n_test = args.n_test or len(x_test)
    return x_train, train.targets, x_test[:n_test], test.targets[:n_test]


def make_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, bias=False),
        nn.BatchNorm2d(16),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 5, bias=False),
        nn.BatchNorm2d(32),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(512, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, args) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = math.ceil(len(x) / args.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * batches)
    model.train()
    for epoch in range(1, args.epochs + 1):
        start, total, correct = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(x))
        for b in range(batches):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            out = model(x[idx])
            loss = nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
        print(
            f"epoch {epoch}: loss {total / len(x):.4f}, train acc {correct / len(x):.2%}, "
            f"{time.perf_counter() - start:.1f} s"
        )
    model.eval()


@torch.no_grad()
def snn_accuracy(
    snn, x: torch.Tensor, y: torch.Tensor, marks: List[int], batch: int
) -> List[float]:
    """Test accuracy (%) after each number of steps in ``marks``, in one run per batch."""
    correct = torch.zeros(len(marks), dtype=torch.int64)
    for start in range(0, len(x), batch):
        scores = snn.scores(x[start : start + batch], marks)  # (len(marks), B, 10)
        correct += (scores.argmax(2) == y[start : start + batch]).sum(1)
    return [100.0 * int(c) / len(x) for c in correct]


def steps_within(marks: List[int], accuracy: List[float], target: float) -> Optional[int]:
    """The first number of steps from which the accuracy stays at or above ``target`` (up to
    float rounding: exactly 0.5 points below the ANN counts as within 0.5 points)."""
    for i in range(len(marks)):
        if all(a >= target - 1e-9 for a in accuracy[i:]):
            return marks[i]
    return None


def plot(path: str, marks, curves: Dict[str, List[float]], ann: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, acc in curves.items():
        ax.plot(marks, acc, marker="o", label=f"SNN, readout={name}")
    ax.axhline(ann, color="k", linestyle="--", label=f"ANN {ann:.2f} %")
    ax.axhline(ann - 0.5, color="gray", linestyle=":", label="ANN - 0.5 points")
    ax.set_xscale("log", base=2)
    ax.set_xticks(marks, [str(t) for t in marks])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0.0, min(min(a) for a in curves.values()) - 2), 100)
    ax.legend(loc="lower right")
    ax.set_title("MNIST CNN converted to IF neurons (reset by subtraction)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files (full MNIST)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--n-calibration", type=int, default=1000, help="training images for scales")
    p.add_argument("--percentile", type=float, default=99.9)
    p.add_argument("--v-init", type=float, default=0.5, help="IF start potential (threshold 1)")
    p.add_argument("--save-model", default=None, help="save the trained ANN's state_dict here")
    p.add_argument("--load-model", default=None, help="load the ANN instead of training it")
    p.add_argument("--max-steps", type=int, default=256, help="longest simulation (steps)")
    p.add_argument("--readout", default="both", choices=["spikes", "potential", "both"])
    p.add_argument("--n-test", type=int, default=0, help="use the first N test images (0: all)")
    p.add_argument("--eval-batch", type=int, default=250)
    p.add_argument("--plot", default="mnist_conversion.png", help="where to save the curve")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default); one is fastest on a busy 2-core machine",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "n_calibration", "max_steps", "eval_batch"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    pysnn.set_checks(False)  # no per-step NaN read-backs
    x_train, y_train, x_test, y_test = load_data(args)
    source = "bundled MNIST sample" if args.data_dir is None else f"MNIST from {args.data_dir}"
    print(f"data: {source}; {len(x_train)} train / {len(x_test)} test images")

    model = make_cnn()
    start = time.perf_counter()
    if args.load_model:
        model.load_state_dict(torch.load(args.load_model))
        model.eval()
    else:
        train(model, x_train, y_train, args)
    train_time = time.perf_counter() - start
    if args.save_model:
        torch.save(model.state_dict(), args.save_model)
    with torch.no_grad():
        ann = 100.0 * int((model(x_test).argmax(1) == y_test).sum()) / len(y_test)
    how = f"loaded from {args.load_model}" if args.load_model else f"training {train_time:.0f} s"
    print(f"ANN test accuracy {ann:.2f} % ({how})")
    if args.data_dir is None:
        print("(the bundled sample has 3000 training digits: 99 % needs the full MNIST)")

    marks = [t for t in (2**k for k in range(2, 20)) if t <= args.max_steps]
    if not marks or marks[-1] != args.max_steps:
        marks.append(args.max_steps)
    readouts = ["spikes", "potential"] if args.readout == "both" else [args.readout]
    curves, results = {}, {"ann": ann, "train_s": train_time}
    for readout in readouts:
        start = time.perf_counter()
        snn = ann_to_snn(
            model,
            x_train[: args.n_calibration],
            percentile=args.percentile,
            readout=readout,
            v_init=args.v_init,
        )
        convert_time = time.perf_counter() - start
        acc = snn_accuracy(snn, x_test, y_test, marks, args.eval_batch)
        sim_time = time.perf_counter() - start - convert_time
        curves[readout] = acc
        within = steps_within(marks, acc, ann - 0.5)
        results[readout] = {"accuracy": dict(zip(marks, acc)), "within": within}
        print(
            f"\nreadout={readout}: conversion {convert_time:.1f} s, "
            f"simulation of {len(x_test)} images x {marks[-1]} steps {sim_time:.0f} s"
        )
        for t, a in zip(marks, acc):
            print(f"  T = {t:5d}: SNN {a:6.2f} %  ({a - ann:+.2f} points)")
        print(
            f"  within 0.5 points of the ANN from T = {within}"
            if within is not None
            else f"  not within 0.5 points of the ANN by T = {marks[-1]}"
        )
    plot(args.plot, marks, curves, ann)
    print(f"\nplot saved to {args.plot}")
    return results


if __name__ == "__main__":
    main()
