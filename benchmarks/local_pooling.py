"""Local connectivity and spike pooling: pysnn against BindsNET on the same spikes, same run.

- ``LocalConnection2d`` against BindsNET's ``LocalConnection`` (a dense ``(in, out)`` matrix and
  a mask of the same size) and against pysnn's dense ``Linear`` holding the same block-masked
  weight: time per step of the forward pass (``--steps`` steps of Poisson-like input, batch 1
  as BindsNET), bytes of weight state (pysnn: the weights and the receptive-field index), and whether the outputs are identical (the same weights,
  multiples of 1/64, so that every sum is exact in any order).
- ``TraceMaxPool2d`` against BindsNET's ``MaxPool2dConnection``: time per step and identical
  outputs.

Prints seconds per step and ratios (peer / pysnn: > 1 means pysnn is faster). Nothing is asserted.

    python benchmarks/local_pooling.py [--size 28] [--kernel 12] [--stride 4] [--filters 25]
        [--steps 500] [--rate 0.05] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import torch

import pysnn
from bindsnet_paper import _import_bindsnet
from pysnn.connection import Linear
from pysnn.local import LocalConnection2d
from pysnn.pooling import TraceMaxPool2d


def per_step(step: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple:
    """(seconds per step, outputs (T, ...)): best of 3 passes over the ``T`` steps of ``x``."""
    best, outputs = math.inf, None
    for _ in range(3):
        start = time.perf_counter()
        outputs = [step(s) for s in x]
        best = min(best, time.perf_counter() - start)
    return best / x.shape[0], torch.stack(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--kernel", type=int, default=12)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--filters", type=int, default=25)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0.05, help="spike probability per step")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pysnn.set_checks(False)  # as the other benchmarks: no input validation per step
    _import_bindsnet()
    from bindsnet.network.nodes import Input as BInput
    from bindsnet.network.topology import LocalConnection, MaxPool2dConnection

    size, k = args.size, args.kernel
    local = LocalConnection2d(1, args.filters, size, k, args.stride)
    n_in, n_out = size * size, local.weight.shape[0]
    source = BInput(n=n_in, shape=(1, size, size))
    target = BInput(n=n_out, shape=(args.filters, *local.output_size))
    peer = LocalConnection(source, target, k, args.stride, args.filters)
    dense = Linear(n_in, n_out, propagation="dense")
    with torch.no_grad():  # dyadic weights: every sum is exact, so outputs must be identical
        local.weight.copy_(torch.randint(0, 64, local.weight.shape) / 64.0)
        peer.w.copy_(local.to_dense().t())
        dense.weight.copy_(local.to_dense())
    x = (torch.rand(args.steps, 1, 1, size, size) < args.rate).float()
    with torch.no_grad():
        t_local, out_local = per_step(local, x)
        t_peer, out_peer = per_step(lambda s: peer.compute(s.view(1, -1)), x)
        t_dense, out_dense = per_step(lambda s: dense(s.view(1, -1)), x)
    print(
        f"LocalConnection2d: 1x{size}x{size} -> {args.filters}x{local.output_size[0]}x"
        f"{local.output_size[1]}, kernel {k}, stride {args.stride}, {local.n_synapses} synapses, "
        f"{args.steps} steps, spike probability {args.rate}, {args.threads} thread(s)"
    )
    weight_bytes = sum(t.numel() * t.element_size() for t in (local.weight, local.field))
    peer_bytes = (
        peer.w.numel() * peer.w.element_size() + peer.mask.numel() * peer.mask.element_size()
    )
    dense_bytes = dense.weight.numel() * dense.weight.element_size()
    rows = [
        ("pysnn LocalConnection2d", t_local, weight_bytes, True),
        (
            "bindsnet LocalConnection",
            t_peer,
            peer_bytes,
            torch.equal(out_peer.flatten(1), out_local.flatten(1)),
        ),
        (
            "pysnn Linear (masked weight)",
            t_dense,
            dense_bytes,
            torch.equal(out_dense.flatten(1), out_local.flatten(1)),
        ),
    ]
    print(f"{'':30s} {'us/step':>10s} {'ratio':>7s} {'weight bytes':>13s} {'ratio':>7s}  identical")
    for name, seconds, nbytes, same in rows:
        print(
            f"{name:30s} {seconds * 1e6:10.1f} {seconds / t_local:7.2f} {nbytes:13d} "
            f"{nbytes / weight_bytes:7.2f}  {same}"
        )

    channels, pool_size = args.filters, 24
    pool = TraceMaxPool2d(2, stride=2, tau_trace=-1.0 / math.log(0.9))
    src = BInput(shape=(1, channels, pool_size, pool_size))
    tgt = BInput(shape=(1, channels, pool_size // 2, pool_size // 2))
    peer_pool = MaxPool2dConnection(src, tgt, kernel_size=2, stride=2, decay=0.1)
    y = (torch.rand(args.steps, 1, channels, pool_size, pool_size) < args.rate).float()
    with torch.no_grad():
        t_pool, out_pool = per_step(pool, y)
        pool.reset_state()
        out_pool = torch.stack([pool(s) for s in y])

        def peer_step(s: torch.Tensor) -> torch.Tensor:
            return peer_pool.compute(s)

        peer_pool.firing_rates = torch.zeros(1, channels, pool_size, pool_size)
        t_peer_pool, _ = per_step(peer_step, y)
        peer_pool.firing_rates = torch.zeros(1, channels, pool_size, pool_size)
        out_peer_pool = torch.stack([peer_step(s) for s in y])
    print(
        f"\nTraceMaxPool2d: {channels}x{pool_size}x{pool_size}, kernel 2, stride 2, decay 0.1 "
        f"per step, {args.steps} steps"
    )
    print(f"{'':30s} {'us/step':>10s} {'ratio':>7s}  identical")
    print(f"{'pysnn TraceMaxPool2d':30s} {t_pool * 1e6:10.1f} {1.0:7.2f}  True")
    same = torch.equal(out_pool, out_peer_pool.view_as(out_pool))
    print(
        f"{'bindsnet MaxPool2dConnection':30s} {t_peer_pool * 1e6:10.1f} "
        f"{t_peer_pool / t_pool:7.2f}  {same}"
    )


if __name__ == "__main__":
    main()
