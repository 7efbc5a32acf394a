r"""Train a spiking MLP on MNIST with surrogate gradients and backpropagation through time.

Network (``--hidden 512,256`` by default), normalised units (rest = reset = 0, threshold 1)::

    pixels / 255 (constant input current, "direct encoding")
      -> Linear(784, 512) -> LIFNeuron(512, surrogate=FastSigmoid)
      -> Linear(512, 256) -> LIFNeuron(256, surrogate=FastSigmoid)
      -> Linear(256, 10)  -> LIReadout(10)       (leaky integrator, no spikes)

run for ``--steps`` time steps of 1 ms; the loss is the cross-entropy of the readout membrane
averaged over time (:func:`pysnn.readout.membrane_loss`, ``--readout mean``). The image is the
same at every step, so the first layer's product is computed once per batch and fed as a
constant current: the result is identical to calling ``fc1`` every step, only cheaper.

Data: the full MNIST from ``--data-dir`` (default ``../shared/data/mnist``, looked up relative to
the working directory and to the repository) via :mod:`pysnn.datasets`; if that folder does not
exist, the small MNIST sample bundled with pysnn (3000 train / 1000 test digits).

Example::

    python examples/mnist_surrogate.py --epochs 8 --steps 8

Data parallel with DistributedDataParallel (each process takes its shard of every batch of
--batch-size images; DDP averages the gradients, so with --batch-size divisible by the number of
processes the update is that of one process with the whole batch)::

    torchrun --nproc_per_node 2 examples/mnist_surrogate.py --epochs 8 --steps 8

The network is handed to DDP as one sequence module, :class:`pysnn.multistep.Unroll` (reset,
first layer once, ``--steps`` steps, readout membrane ``(T, B, 10)``). It runs the network layer
by layer over all steps (:meth:`SpikingMLP.forward_multistep`: one product per layer, one fused
LIF forward/backward over the ``T`` steps); ``--step-loop`` runs it one step at a time instead
(same values and gradients, slower).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import pysnn  # noqa: E402
from pysnn import distributed  # noqa: E402
from pysnn.multistep import Unroll  # noqa: E402
from pysnn.connection import Linear  # noqa: E402
from pysnn.network import SNNNetwork  # noqa: E402
from pysnn.neuron import LIFNeuron  # noqa: E402
from pysnn.readout import LIReadout, membrane_loss, membrane_reduce  # noqa: E402
from pysnn.surrogate import FastSigmoid  # noqa: E402

from pysnn.datasets import MNIST, MNISTSample  # noqa: E402
from pysnn.progress import progress  # noqa: E402

DEFAULT_DATA_DIR = "../shared/data/mnist"


# ------------------------------------------------------------------------------------- data
def _find_data_dir(data_dir: str) -> Optional[Path]:
    path = Path(data_dir).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def load_data(
    args: argparse.Namespace,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Flattened images in [0, 1] ``(N, 784)`` and labels, train and test, plus a description."""
    data_dir = _find_data_dir(args.data_dir)
    if data_dir is None:
        train, test = MNISTSample(train=True), MNISTSample(train=False)
        source = (
            f"bundled MNIST sample (no folder {args.data_dir!r} relative to {Path.cwd()} or {REPO})"
        )
    else:
        train, test = MNIST(data_dir, train=True), MNIST(data_dir, train=False)
        source = f"MNIST from {data_dir}"
    x_train, y_train, x_test, y_test = train.data, train.targets, test.data, test.targets
    if args.n_train:
        x_train, y_train = x_train[: args.n_train], y_train[: args.n_train]
    if args.n_test:
        x_test, y_test = x_test[: args.n_test], y_test[: args.n_test]

    def prep(x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1).to(torch.float32) / 255.0).to(args.device)

    return prep(x_train), y_train.to(args.device), prep(x_test), y_test.to(args.device), source


# ------------------------------------------------------------------------------------- model
class SpikingMLP(SNNNetwork):
    """``784 -> hidden... -> 10``: Linear + LIF layers, then a leaky-integrator readout.

    ``forward(current)`` is one time step: ``current`` ``(B, hidden[0])`` is the input to the first
    LIF layer (``fc0`` of the pixels, constant over time); returns the readout membrane
    ``(B, 10)``.
    """

    def __init__(
        self,
        hidden: Sequence[int],
        tau_v: float = 10.0,
        tau_out: float = 20.0,
        scale: float = 5.0,
        detach_reset: bool = True,
    ) -> None:
        super().__init__()
        sizes = [784, *hidden]
        surrogate = FastSigmoid(scale)
        lif_kwargs = dict(thresh=1.0, v_rest=0.0, v_reset=0.0, tau_v=tau_v, refrac=0.0)
        self.fcs = torch.nn.ModuleList(
            Linear(n_in, n_out, bias=True) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.lifs = torch.nn.ModuleList(
            LIFNeuron(n, surrogate=surrogate, detach_reset=detach_reset, **lif_kwargs)
            for n in hidden
        )
        self.fc_out = Linear(sizes[-1], 10, bias=True)
        self.out = LIReadout(10, tau_v=tau_out)
        for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
            self.add_layer(f"hidden{i}", fc, lif)
        self.add_layer("readout", self.fc_out, self.out)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        s = self.lifs[0](current)
        for fc, lif in zip(self.fcs[1:], self.lifs[1:]):
            s = lif(fc(s))
        return self.out(self.fc_out(s))

    def forward_multistep(self, current: torch.Tensor) -> torch.Tensor:
        """All ``T`` steps layer by layer: ``current`` ``(T, B, hidden[0])`` → readout membrane
        ``(T, B, 10)``; the same as ``T`` calls of :meth:`forward`, state included. Also sets
        :attr:`hidden_rate`, the mean hidden spikes per neuron and step."""
        s = self.lifs[0].forward_multistep(current)
        rate = s.detach().mean()
        for fc, lif in zip(self.fcs[1:], self.lifs[1:]):
            s = lif.forward_multistep(fc.forward_multistep(s))
            rate = rate + s.detach().mean()
        self.hidden_rate = rate / len(self.lifs)
        return self.out.forward_multistep(self.fc_out.forward_multistep(s))

    def run(
        self, images: torch.Tensor, steps: int, step_loop: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Simulate ``steps`` steps on ``images`` ``(B, 784)``, layer by layer
        (:meth:`forward_multistep`) or, with ``step_loop``, one step at a time.

        Returns the readout membrane ``(T, B, 10)`` and the mean hidden firing rate (spikes per
        neuron per step).
        """
        self.reset_state()
        current = self.fcs[0](images)  # constant input current: computed once
        if step_loop:
            v, spikes = [], 0.0
            for _ in range(steps):
                v.append(self(current))
                spikes = spikes + sum(lif.spikes.detach().mean() for lif in self.lifs)
            return torch.stack(v), spikes / (steps * len(self.lifs))
        v = self.forward_multistep(current.expand(steps, *current.shape))
        return v, self.hidden_rate


@torch.no_grad()
def evaluate(net: SpikingMLP, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> float:
    """Test accuracy: class of the largest reduced readout membrane, in batches (each process
    its shard of the test set, the correct counts summed over the processes)."""
    net.eval()
    total, part = len(x), distributed.shard_range(len(x))
    x, y = x[part], y[part]
    correct = torch.zeros((), device=x.device)
    for start in range(0, len(x), 1000):
        v, _ = net.run(x[start : start + 1000], args.steps, args.step_loop)
        correct += (membrane_reduce(v, args.readout).argmax(1) == y[start : start + 1000]).sum()
    if distributed.is_distributed():
        correct = distributed.all_reduce_sum(correct)
    net.train()
    return float(correct) / total


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="time steps (1 ms) per image")
    p.add_argument("--hidden", default="512,256", help="comma-separated hidden layer sizes")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--scale", type=float, default=5.0, help="FastSigmoid scale (1/mV)")
    p.add_argument("--tau-v", type=float, default=10.0, help="hidden membrane tau (ms)")
    p.add_argument("--readout", default="mean", choices=["max", "mean", "last"])
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument(
        "--n-train", type=int, default=0, help="use the first N training images (0: all)"
    )
    p.add_argument("--n-test", type=int, default=0, help="use the first N test images (0: all)")
    p.add_argument(
        "--step-loop",
        action="store_true",
        help="simulate one step at a time (same results, slower) instead of layer by layer",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "steps"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    try:
        args.hidden_sizes = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        p.error(f"--hidden must be comma-separated ints, got {args.hidden!r}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        p.error("--hidden sizes must be > 0")
    return args


def sequence_model(net: SpikingMLP, steps: int, step_loop: bool = False) -> torch.nn.Module:
    """The whole sequence as one module (``(B, 784)`` images → readout ``(T, B, 10)``), wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel` when a process group is initialised."""
    model = Unroll(net, steps=steps, encoder=net.fcs[0], multistep=not step_loop)
    if not distributed.is_distributed():
        return model
    device = next(net.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def main(argv: Optional[List[str]] = None) -> float:
    args = parse_args(argv)
    distributed.init_from_env()  # under torchrun: join the process group (gloo / nccl)
    rank, world = distributed.rank_and_world()
    if world > 1 and args.device == "cuda":
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    torch.manual_seed(args.seed)  # same seed everywhere: same weights, same batch order
    pysnn.set_checks(False)  # no per-step NaN host reads
    x_train, y_train, x_test, y_test, source = load_data(args)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"data: {source}; {len(x_train)} train / {len(x_test)} test images; {world} process(es)")
    net = SpikingMLP(args.hidden_sizes, args.tau_v, scale=args.scale).to(args.device)
    model = sequence_model(net, args.steps, args.step_loop)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    batches = math.ceil(len(x_train) / args.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * batches)
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(x_train), device=args.device)
        quiet = args.quiet or rank > 0
        bar = progress(range(batches), desc=f"epoch {epoch}/{args.epochs}", quiet=quiet)
        correct = seen = 0
        for b in bar:
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            idx = idx[distributed.shard_range(len(idx))]  # this process's shard
            v = model(x_train[idx])
            loss = membrane_loss(v, y_train[idx], args.readout)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += (membrane_reduce(v.detach(), args.readout).argmax(1) == y_train[idx]).sum()
            seen += len(idx)
            if b % 20 == 0:
                rate = sum(lif.spikes.detach().mean() for lif in net.lifs) / len(net.lifs)
                bar.set_postfix(
                    loss=f"{loss.item():.3f}",
                    acc=f"{int(correct) / seen:.3f}",
                    rate=f"{float(rate):.3f}",  # hidden spikes per neuron, last step
                )
        bar.close()
        train_time = time.perf_counter() - start
        if world > 1:  # training accuracy over all processes
            counts = torch.tensor([float(correct), float(seen)], device=args.device)
            correct, seen = distributed.all_reduce_sum(counts).tolist()
        acc = evaluate(net, x_test, y_test, args)
        log(
            f"epoch {epoch}: train acc {int(correct) / seen:.4f}, test acc {acc:.4f}, "
            f"train time {train_time:.1f} s ({train_time / len(x_train) * 1e3:.2f} ms/image), "
            f"eval {time.perf_counter() - start - train_time:.1f} s"
        )
    return acc


if __name__ == "__main__":
    main()
