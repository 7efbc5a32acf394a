"""Diehl & Cook (2015): unsupervised STDP learning of MNIST digits, then a label readout.

Pipeline (the paper's protocol):
  1. train: present each training digit for --time ms as Poisson spike trains (rate = pixel / 255 *
     intensity Hz); STDP learns the input weights, thresholds adapt; when the excitatory layer fires
     fewer than 5 spikes the digit is shown again with the intensity raised by 32 Hz;
  2. assign: freeze the network (no STDP, fixed thresholds) and give each neuron the label it responds
     to most over --n-assign TRAINING digits (never test digits);
  3. test: classify --n-test test digits by all-activity and proportion-weighting votes.

Data: without --data-dir the bundled MNIST sample inside pysnn is used (3000 training and 1000 test
digits, no download). With --data-dir DIR the four standard IDX files are read from DIR (gzip or
not); add --download to fetch them there first (checksums verified).

Quick run (the README's main example: all 3000 bundled training digits, about 70 % test accuracy
in under two minutes on 2 CPU cores):   python examples/mnist_stdp.py
Full run (the README's first rows used --batch-size 16, its paper-protocol rows --batch-size 1):
    python examples/mnist_stdp.py --data-dir ../shared/data/mnist --n-train 60000 \
        --n-assign 10000 --n-test 10000 --n-neurons 100 --batch-size 16

Batches: --batch-size B (default 16) presents B training digits at once against the same weights
and sums their STDP updates and threshold increments; weights are normalised after each batch.
It changes the algorithm (a digit no longer sees the learning caused by the previous digits of its
batch, so neurons specialise less cleanly) and on a CPU it is no longer faster: one digit at a time
runs its steps in one fused loop (292 against 231 digits/s for a batch of 16 with 100 neurons,
benchmarks/results/diehl_cook_throughput.txt). The paper's protocol is --batch-size 1. The
frozen assign/test passes are exact at any batch size (--eval-batch-size), since a frozen
network's digits do not interact.

Several processes (data parallel, pysnn.distributed):
    torchrun --nproc_per_node 2 examples/mnist_stdp.py --batch-size 16
Every process simulates its shard of each batch (and of the assign and test digits); STDP updates
and threshold increments are summed over the processes every step, spike counts are gathered, so
the result is that of one process (up to float summation order). Each process draws the Poisson
spikes of the whole batch and keeps its shard, so the digits see the same spikes as in one process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

import pysnn
from pysnn import distributed
from pysnn.checkpoint import load_checkpoint, save_checkpoint
from pysnn.datasets import MNIST, MNISTSample
from pysnn.evaluation import all_activity, assign_labels, proportion_weighting
from pysnn.models import DiehlCook2015
from pysnn.progress import progress


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n-neurons", type=int, default=100, help="excitatory neurons")
    p.add_argument("--n-train", type=int, default=3000, help="training digits per epoch")
    p.add_argument(
        "--n-assign",
        type=int,
        default=None,
        help="training digits for label " "assignment (default: min(n-train, 10000))",
    )
    p.add_argument("--n-test", type=int, default=1000, help="test digits")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--time", type=float, default=350.0, help="presentation time per digit (ms)")
    p.add_argument("--dt", type=float, default=1.0, help="time step (ms)")
    p.add_argument(
        "--synapses",
        choices=("current", "conductance"),
        default="current",
        help="current-based synapses (BindsNET's form, default) or the paper's "
        "conductance-based ones with reversal potentials",
    )
    p.add_argument(
        "--rule",
        choices=("pair", "triplet"),
        default=None,
        help="STDP form: BindsNET's pair rule (default with both synapse forms) or the "
        "authors' code's rule (nearest-spike, potentiation times a slow postsynaptic trace)",
    )
    p.add_argument(
        "--norm",
        type=float,
        default=None,
        help="sum of each neuron's input weights after normalisation (default: 78.4 "
        "current, 78 conductance); 0 switches normalisation off",
    )
    p.add_argument(
        "--theta-plus",
        type=float,
        default=0.05,
        help="adaptive threshold increment per spike (mV); 0 switches it off",
    )
    p.add_argument(
        "--theta-offset",
        type=float,
        default=None,
        help="the authors' threshold offset (mV) that theta relaxes towards below 0 (default: "
        "20 conductance, 0 current)",
    )
    p.add_argument(
        "--rest",
        type=float,
        default=None,
        help="ms without input after each training presentation, theta relaxing (default: "
        "150 conductance, 0 current)",
    )
    p.add_argument(
        "--inh-weight",
        type=float,
        default=None,
        help="inhibitory->excitatory weight (default: 120 mV current, 17 conductance)",
    )
    p.add_argument(
        "--inhibition-delay",
        type=float,
        default=0.0,
        help="delay (ms) of the excitatory->inhibitory connection; --dt gives the authors' "
        "code's winner-take-all loop (default 0: the partner fires in the same step)",
    )
    p.add_argument("--intensity", type=float, default=63.75, help="max input rate (Hz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="training digits presented at " "once (see the note on batches above)",
    )
    p.add_argument(
        "--eval-batch-size",
        type=int,
        default=250,
        help="digits at once in the "
        "frozen assign/test passes (exact: frozen digits do not interact)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--download", action="store_true", help="download MNIST into --data-dir")
    p.add_argument("--plot", default=None, metavar="DIR", help="save PNG plots into DIR")
    p.add_argument("--checkpoint", default=None, help="file to save training progress to")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="digits between saves")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop training after N digits in this run (save and exit, no test)",
    )
    p.add_argument("--results", default=None, help="write final metrics as JSON here")
    p.add_argument(
        "--update-interval",
        type=int,
        default=250,
        help="digits between running-accuracy updates during training",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.download and args.data_dir is None:
        p.error("--download needs --data-dir (where to put the files)")
    if args.resume and args.checkpoint is None:
        p.error("--resume needs --checkpoint")
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


def load_data(args: argparse.Namespace):
    if args.data_dir is None:
        train, test = MNISTSample(train=True), MNISTSample(train=False)
        source = "bundled MNIST sample (pysnn/datasets/data)"
    else:
        train = MNIST(args.data_dir, train=True, download=args.download)
        test = MNIST(args.data_dir, train=False, download=args.download)
        source = f"MNIST IDX files in {args.data_dir}"
    return train.data, train.targets, test.data, test.targets, source


class Trainer:
    """Training, assignment and test loops around a :class:`DiehlCook2015` network."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        torch.manual_seed(args.seed)
        norm = "auto" if args.norm is None else (args.norm or None)
        self.net = DiehlCook2015(
            n_neurons=args.n_neurons,
            dt=args.dt,
            synapses=args.synapses,
            rule=args.rule,
            norm=norm,
            theta_plus=args.theta_plus,
            theta_offset=args.theta_offset,
            rest=args.rest,
            inh_weight=args.inh_weight,
            inhibition_delay=args.inhibition_delay,
        ).to(self.device)
        distributed.data_parallel(self.net)  # no-op in a single process
        self.rank = distributed.rank_and_world()[0]
        self.steps = int(round(args.time / args.dt))
        self.gen = torch.Generator(device=self.device).manual_seed(args.seed)
        self.position = 0  # digits seen so far, over all epochs
        self.history: Dict[str, list] = {"samples": [], "train_accuracy": []}
        self.window_counts: List[torch.Tensor] = []
        self.window_labels: List[torch.Tensor] = []
        self.assignments: Optional[torch.Tensor] = None
        self.trained_now = 0  # digits trained in this run (not counting a resumed part)
        self.train_seconds_before = 0.0  # training time of the runs this one resumes
        self.train_seconds_now = 0.0

    # ------------------------------------------------------------------ encoding
    def spikes(self, images: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
        """Poisson spikes ``(T, B, 784)``: per-step probability 1 - exp(-rate dt)."""
        rates = images.reshape(images.shape[0], -1).float() / 255.0 * intensity[:, None]
        prob = -torch.expm1(-rates * (self.args.dt / 1000.0))
        noise = torch.rand((self.steps, *prob.shape), generator=self.gen, device=self.device)
        return (noise < prob).float()

    def present(self, images: torch.Tensor) -> torch.Tensor:
        """Present a batch; re-present digits with < 5 spikes at +32 Hz (up to 5 times)."""
        intensity = torch.full((images.shape[0],), self.args.intensity, device=self.device)
        counts = self.run_shard(self.spikes(images, intensity))
        for _ in range(5):
            low = counts.sum(1) < 5
            if not bool(low.any()):  # once per digit, outside the simulation step
                break
            intensity[low] += 32.0
            counts[low] = self.run_shard(self.spikes(images[low], intensity[low]))
        return counts

    def run_shard(self, spikes: torch.Tensor) -> torch.Tensor:
        """Run this process's shard of ``spikes`` ``(T, B, 784)``; counts of all ``B`` digits.

        A process without a digit of its own runs one blank digit (no input spikes: no spike
        anywhere, so nothing to learn) to take part in the per-step reductions.
        """
        n = spikes.shape[1]
        part = distributed.shard_range(n)
        if part.start == part.stop:
            return distributed.gather_shards(self.net.run(spikes[:, :1] * 0)[:0], n)
        return distributed.gather_shards(self.net.run(spikes[:, part]), n)

    # ------------------------------------------------------------------ phases
    def train(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        args, net = self.args, self.net
        net.train()
        total = args.epochs * args.n_train
        quiet = args.quiet or self.rank > 0
        bar = progress(total=total, initial=self.position, desc="train", quiet=quiet)
        start, done = time.perf_counter(), 0
        self.train_seconds_now = 0.0
        while self.position < total and (args.stop_after is None or done < args.stop_after):
            index = self.position % args.n_train
            stop = min(index + args.batch_size, args.n_train)
            batch = torch.arange(index, stop)
            counts = self.present(images[batch].to(self.device))
            self.track(counts, labels[batch])
            self.position += len(batch)
            done += len(batch)
            self.trained_now = done
            self.train_seconds_now = time.perf_counter() - start
            bar.update(len(batch))
            rate = done / (time.perf_counter() - start)
            acc = self.history["train_accuracy"][-1] if self.history["train_accuracy"] else None
            bar.set_postfix(samples_s=f"{rate:.1f}", acc="-" if acc is None else f"{acc:.3f}")
            if args.checkpoint and self.position % args.checkpoint_every < len(batch):
                self.save(args.checkpoint)
        bar.close()
        if args.checkpoint:
            self.save(args.checkpoint)

    def track(self, counts: torch.Tensor, labels: torch.Tensor) -> None:
        """Running training accuracy: votes of the last window with the previous assignments."""
        self.window_counts.append(counts.cpu())
        self.window_labels.append(labels.cpu())
        if sum(len(c) for c in self.window_counts) < self.args.update_interval:
            return
        counts, labels = torch.cat(self.window_counts), torch.cat(self.window_labels)
        self.window_counts, self.window_labels = [], []
        if self.assignments is not None:
            pred = all_activity(counts, self.assignments, 10)
            self.history["samples"].append(self.position)
            self.history["train_accuracy"].append((pred == labels).float().mean().item())
        self.assignments, _, _ = assign_labels(counts, labels, 10)

    @torch.no_grad()
    def record(self, images: torch.Tensor, desc: str) -> torch.Tensor:
        """Frozen network (eval): excitatory spike counts ``(N, n_neurons)`` for ``images``."""
        self.net.eval()
        out = []
        bar = progress(total=len(images), desc=desc, quiet=self.args.quiet or self.rank > 0)
        size = self.args.eval_batch_size
        for start in range(0, len(images), size):
            batch = images[start : start + size].to(self.device)
            out.append(self.present(batch).cpu())
            bar.update(len(batch))
        bar.close()
        return torch.cat(out)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str) -> None:
        """Checkpoint the network (weights, adaptive thresholds, state, STDP state), the RNGs and
        the position in the data, atomically (:func:`pysnn.checkpoint.save_checkpoint`).
        Only rank 0 writes (every process holds the same state)."""
        if self.rank > 0:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        extra = {
            "args": vars(self.args),
            "generator": self.gen.get_state(),
            "position": self.position,
            "history": self.history,
            "window_counts": self.window_counts,
            "window_labels": self.window_labels,
            "assignments": self.assignments,
            "train_seconds_before": self.train_seconds_before + self.train_seconds_now,
        }
        save_checkpoint(path, network=self.net, extra=extra)

    def load(self, path: str) -> None:
        """Resume from :meth:`save`'s file, loaded with ``weights_only=True`` (runs no code)."""
        extra = load_checkpoint(path, network=self.net, map_location=self.device)
        self.gen.set_state(extra["generator"].cpu())
        self.position = extra["position"]
        self.history = extra["history"]
        self.window_counts = extra["window_counts"]
        self.window_labels = extra["window_labels"]
        self.assignments = extra["assignments"]
        self.train_seconds_before = float(extra.get("train_seconds_before", 0.0))


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.command = "python examples/mnist_stdp.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    with pysnn.checks(False):  # inputs are generated here; skip the per-step NaN read-back
        return run(args)


def run(args: argparse.Namespace) -> Dict[str, float]:
    """Train, assign labels, test; returns the metrics."""
    wall_start = time.perf_counter()
    train_x, train_y, test_x, test_y, source = load_data(args)
    args.n_train = min(args.n_train, len(train_x))
    args.n_test = min(args.n_test, len(test_x))
    n_assign = min(args.n_assign or min(args.n_train, 10000), len(train_x))
    distributed.init_from_env()  # under torchrun: join the process group
    rank = distributed.rank_and_world()[0]
    log = (lambda *a: None) if args.quiet or rank > 0 else print
    log(f"data: {source}")
    log(
        f"model: {args.n_neurons} excitatory neurons ({args.synapses} synapses), {args.time:g} ms "
        f"per digit at dt={args.dt:g} "
        f"ms, train {args.n_train} x {args.epochs} epoch(s), assign {n_assign}, test {args.n_test}"
    )
    trainer = Trainer(args)
    if args.resume and Path(args.checkpoint).exists():
        trainer.load(args.checkpoint)
        log(f"resumed from {args.checkpoint} at digit {trainer.position}")

    start = time.perf_counter()
    trainer.train(train_x[: args.n_train], train_y[: args.n_train])
    train_time = time.perf_counter() - start
    if trainer.position < args.epochs * args.n_train:
        log(f"stopped after {trainer.position} digits; resume with --resume")
        return {}
    assign_counts = trainer.record(train_x[:n_assign], "assign")
    assignments, proportions, _ = assign_labels(assign_counts, train_y[:n_assign], 10)
    start = time.perf_counter()
    test_counts = trainer.record(test_x[: args.n_test], "test")
    test_time = time.perf_counter() - start
    labels = test_y[: args.n_test]
    acc_all = (all_activity(test_counts, assignments, 10) == labels).float().mean().item()
    acc_prop = (
        (proportion_weighting(test_counts, assignments, proportions, 10) == labels)
        .float()
        .mean()
        .item()
    )
    trained = trainer.trained_now
    results = {
        "n_neurons": args.n_neurons,
        "synapses": args.synapses,
        "rule": trainer.net.rule,
        "norm": trainer.net.norm,
        "theta_offset": trainer.net.theta_offset,
        "rest_ms": trainer.net.rest,
        "inhibition_delay_ms": trainer.net.inhibition_delay,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "time_ms": args.time,
        "dt_ms": args.dt,
        "n_train": args.n_train,
        "epochs": args.epochs,
        "n_assign": n_assign,
        "n_test": args.n_test,
        "accuracy_all_activity": acc_all,
        "accuracy_proportion_weighting": acc_prop,
        "train_seconds": train_time,
        "wall_seconds": time.perf_counter() - wall_start,
        "train_seconds_all_sessions": trainer.train_seconds_before + train_time,
        "threads": torch.get_num_threads(),
        "command": getattr(args, "command", None),
        "train_samples_per_second": trained / train_time if trained else float("nan"),
        "test_samples_per_second": args.n_test / test_time,
        "silent_neurons": int((assignments < 0).sum()),
        "processes": distributed.rank_and_world()[1],
        "assignments": assignments.tolist(),
    }
    if rank > 0:
        return results
    print(
        f"test accuracy: all-activity {100 * acc_all:.2f} %, proportion weighting "
        f"{100 * acc_prop:.2f} % ({args.n_test} test digits)"
    )
    print(
        f"training: {results['train_samples_per_second']:.1f} digits/s; "
        f"test: {results['test_samples_per_second']:.1f} digits/s"
    )
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(results, indent=2))
    if args.plot:
        save_plots(args.plot, trainer, assignments)
    return results


def save_plots(folder: str, trainer: Trainer, assignments: torch.Tensor) -> None:
    from pysnn.plotting import plot_accuracy, plot_assignments, plot_weights

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plot_weights(trainer.net.fc.weight.detach(), shape=(28, 28), path=out / "weights.png")
    plot_assignments(assignments, n_labels=10, path=out / "assignments.png")
    if trainer.history["train_accuracy"]:
        plot_accuracy(
            {"train (running)": trainer.history["train_accuracy"]},
            x=trainer.history["samples"],
            path=out / "accuracy.png",
        )
    print(f"plots saved in {out}/")


if __name__ == "__main__":
    main()
