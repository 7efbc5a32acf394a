"""Figures of Diehl & Cook training runs (issue 26), from ``examples/mnist_stdp.py`` checkpoints.

- ``--fields LABEL=CHECKPOINT``: the learned receptive fields (the input weights of every
  excitatory neuron as a 28 x 28 image) of each checkpoint, one PNG each;
- ``--curves LABEL=CHECKPOINT ...``: the running training accuracy against the number of
  training digits seen (each point: the all-activity vote on a window of 250 training digits with
  the assignments of the window before; the example's ``history``), all runs in one PNG.

The checkpoints are read as saved (``torch.load`` of pysnn's checkpoint format): the input
weights are ``parameters["fc.weight"]``, the history ``extra["history"]``.

    python benchmarks/diehl_cook_figures.py --out docs/_static \\
        --fields 400=run400.pt --curves "100 conductance"=c100.pt "400 current"=run400.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pysnn.plotting import plot_weights  # noqa: E402


def _pair(text: str) -> Tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=CHECKPOINT, got {text!r}")
    return label, Path(path)


def _load(path: Path) -> Dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "parameters" not in state:
        raise ValueError(f"{path} is not a pysnn checkpoint of examples/mnist_stdp.py")
    return state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--fields", type=_pair, nargs="*", default=[], metavar="LABEL=CHECKPOINT")
    p.add_argument("--curves", type=_pair, nargs="*", default=[], metavar="LABEL=CHECKPOINT")
    p.add_argument("--prefix", default="diehl_cook", help="file name prefix")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label, path in args.fields:
        weight = _load(path)["parameters"]["fc.weight"].float()
        name = out / f"{args.prefix}_{label.replace(' ', '_')}_weights.png"
        title = f"{label}: input weights of {weight.shape[0]} excitatory neurons"
        size = max(6.0, weight.shape[0] ** 0.5 * 0.3)
        plot_weights(weight, shape=(28, 28), title=title, path=name, figsize=(size, size))
        print(f"wrote {name}")
    if args.curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.0, 4.0))
        for label, path in args.curves:
            h = _load(path)["extra"]["history"]
            ax.plot([s + 1 for s in h["samples"]], [100.0 * a for a in h["train_accuracy"]],
                    label=label, linewidth=1.0)  # fmt: skip
        ax.set_xlabel("training digits seen")
        ax.set_ylabel("running training accuracy (%)")
        ax.set_title("Diehl & Cook: accuracy against training digits (windows of 250)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
        name = out / f"{args.prefix}_accuracy_vs_digits.png"
        fig.tight_layout()
        fig.savefig(name, dpi=100)
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
