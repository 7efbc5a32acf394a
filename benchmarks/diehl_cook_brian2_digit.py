"""One Diehl & Cook digit, spike for spike: Brian2 with the authors' inhibition latency, Brian2
with pysnn's, and pysnn's ``DiehlCook2015`` (issue 26).

Each of ``--digits`` training digits is shown for 350 ms (dt 0.5 ms) to three networks with the
same 100 excitatory neurons, the same input weights (``(U(0, 1) + 0.01) * 0.3``, each neuron's
normalised to sum to 78), thresholds at -52 mV, membranes at rest and the **same input spike
trains** (Poisson, pixel / 4 Hz), learning with the authors' STDP rule (``rule="triplet"``), no
input delays:

- ``brian2 (code's latency)``: the authors' network in Brian2 (runtime, as
  ``benchmarks/diehl_cook_brian2.py``): an excitatory spike at step ``n`` raises its inhibitory
  partner's conductance, which fires it at step ``n + 1``, which inhibits the other excitatory
  neurons from step ``n + 2``;
- ``brian2 (one-step latency)``: the same, with the inhibitory neurons stepped right after the
  excitatory spikes of the same step, so inhibition reaches the others from step ``n + 1``;
- ``pysnn``: ``DiehlCook2015(synapses="conductance", rule="triplet", dt=0.5)``, whose loop has
  the one-step latency.

Per digit it reports the excitatory spikes, the spikes of the most active neuron and the net
weight change (the code's rule potentiates only on a neuron's second and later spikes of a
digit, so it grows with the winner's spike count). Needs Brian2 (``.venv-bench``)::

    python benchmarks/diehl_cook_brian2_digit.py --data-dir ../shared/data/mnist --digits 30 \\
        --results benchmarks/results/diehl_cook_brian2_digit.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import brian2 as b2
import numpy as np
import torch
from brian2 import ms, mV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pysnn  # noqa: E402
from diehl_cook_brian2 import (  # noqa: E402
    STDP_TRACES,
    find,
    inhibition,
    load_idx,
    save_results,
)
from pysnn.models import DiehlCook2015  # noqa: E402

N, N_IN, STEPS, DT_MS = 100, 784, 700, 0.5


def brian2_digit(spikes: np.ndarray, weights: np.ndarray, one_step: bool):
    """Excitatory spike counts ``(N,)`` and the weight change ``(N_IN, N)`` in Brian2."""
    b2.start_scope()
    b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = DT_MS * ms
    steps, idx = np.nonzero(spikes)
    inp = b2.SpikeGeneratorGroup(N_IN, idx, steps * DT_MS * ms)
    exc = b2.NeuronGroup(
        N,
        """dv/dt = ((-65*mV - v) + ge * (0*mV - v) + gi * (-100*mV - v)) / (100*ms)
            : volt (unless refractory)
        dge/dt = -ge / (1*ms) : 1
        dgi/dt = -gi / (2*ms) : 1
        theta : volt""",
        threshold="v > theta - 72*mV",
        reset="v = -65*mV; theta += 0.05*mV",
        refractory=5 * ms,
        method="euler",
    )
    exc.v, exc.theta = -65 * mV, 20 * mV
    inh, e2i, i2e = inhibition(exc, -60.0, one_step)
    syn = b2.Synapses(
        inp,
        exc,
        STDP_TRACES,
        on_pre="ge_post += w; pre = 1.0; w = clip(w - 0.0001 * post1, 0, 1)",
        on_post="w = clip(w + 0.01 * pre * post2, 0, 1); post1 = 1.0; post2 = 1.0",
    )
    syn.connect(i=np.repeat(np.arange(N_IN), N), j=np.tile(np.arange(N), N_IN))
    syn.w = weights.ravel()
    mon = b2.SpikeMonitor(exc)
    net = b2.Network(inp, exc, inh, syn, e2i, i2e, mon)
    net.run(STEPS * DT_MS * ms)
    counts = np.bincount(np.asarray(mon.i), minlength=N)
    return counts, np.asarray(syn.w[:]).reshape(N_IN, N) - weights


def pysnn_digit(spikes: np.ndarray, w: np.ndarray):
    """The same in pysnn's ``DiehlCook2015`` (float64)."""
    net = DiehlCook2015(
        n_neurons=N, dt=DT_MS, synapses="conductance", rule="triplet", norm=None
    ).double()
    with torch.no_grad():
        net.fc.weight.copy_(torch.as_tensor(w.T))
    net.train()
    with pysnn.checks(False):
        counts = net.run(torch.as_tensor(spikes, dtype=torch.float64)[:, None, :], False)
    return counts[0].numpy(), net.fc.weight.detach().numpy().T - w


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="folder of the MNIST IDX files")
    p.add_argument("--digits", type=int, default=30, help="first N training digits")
    p.add_argument("--results", type=Path, default=None, help="JSON file to write")
    args = p.parse_args(argv)
    if args.digits < 1:
        p.error(f"--digits must be >= 1, got {args.digits}")
    images = load_idx(find(args.data_dir, "train-images-idx3-ubyte"))
    names = ("brian2 (code's latency)", "brian2 (one-step latency)", "pysnn")
    rows = {name: [] for name in names}
    for digit in range(args.digits):
        rng = np.random.default_rng(digit)
        w = (rng.random((N_IN, N)) + 0.01) * 0.3
        w *= 78.0 / w.sum(0)
        prob = images[digit].astype(float) / 4.0 * DT_MS * 1e-3  # pixel / 4 Hz
        spikes = rng.random((STEPS, N_IN)) < prob
        runs = (
            brian2_digit(spikes, w, False),
            brian2_digit(spikes, w, True),
            pysnn_digit(spikes, w),
        )
        for name, (counts, dw) in zip(names, runs):
            rows[name].append([counts.sum(), counts.max(), dw.sum()])
    result = {"digits": args.digits, "dt_ms": DT_MS, "runs": {}}
    for name in names:
        r = np.asarray(rows[name], dtype=float)
        result["runs"][name] = {
            "spikes_per_digit": float(r[:, 0].mean()),
            "top_neuron_spikes_per_digit": float(r[:, 1].mean()),
            "net_weight_change_per_digit": float(r[:, 2].mean()),
        }
        print(f"{name:28s}", result["runs"][name])
    save_results(args.results, result)
    return result


if __name__ == "__main__":
    main()
