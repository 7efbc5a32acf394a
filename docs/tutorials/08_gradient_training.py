"""Gradient training with surrogate spikes: a spiking network learns XOR by BPTT.

Inputs come from ``pysnn.datasets.XOR``: 4 patterns of 2 bits, each bit coded by 5 Poisson input
neurons firing at 200 Hz for a 1 and 0 Hz for a 0, over 20 ms (fresh noise at every access). The
hidden LIF layer emits exact 0/1 spikes but differentiates them with a fast-sigmoid surrogate; a
leaky-integrator readout (``LIReadout``) never spikes, and the loss is the cross-entropy of its
maximum membrane potential over time (``membrane_loss``). The loss and accuracy curves are drawn
into ``gradient_training.png`` in the output folder (first argument, else ``$PYSNN_DOCS_OUT``,
else a new temporary folder).

    python docs/tutorials/08_gradient_training.py [OUT_DIR]
"""

# %%
import os
import sys
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure

from pysnn.connection import Linear
from pysnn.datasets import XOR
from pysnn.network import SNNNetwork
from pysnn.neuron import LIFNeuron
from pysnn.readout import LIReadout, membrane_loss, membrane_reduce
from pysnn.surrogate import FastSigmoid

OUT = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYSNN_DOCS_OUT") or tempfile.mkdtemp()
)
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
data = XOR(
    duration=20.0,
    dt=1.0,
    rate_on=200.0,
    rate_off=0.0,
    repeats=5,
    generator=torch.Generator().manual_seed(0),
)


# %%
class SpikingMLP(SNNNetwork):
    """10 inputs -> 32 LIF (surrogate gradient) -> 2 leaky integrators (class scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = Linear(10, 32, bias=True)
        # Normalised units: rest = reset = 0, threshold 1; suits the surrogate's default scale.
        self.lif = LIFNeuron(
            32,
            thresh=1.0,
            v_rest=0.0,
            v_reset=0.0,
            tau_v=10.0,
            refrac=0.0,
            surrogate=FastSigmoid(scale=10.0),
        )
        self.fc2 = Linear(32, 2)
        self.readout = LIReadout(2, tau_v=10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 10) -> readout membrane (B, 2)
        return self.readout(self.fc2(self.lif(self.fc1(x))))


def batch():
    """All 4 patterns with fresh Poisson noise: spikes (T, 4, 10) and labels (4,)."""
    items = [data[i] for i in range(len(data))]
    spikes = torch.stack([s for s, _ in items], dim=1)
    return spikes, torch.tensor([label for _, label in items])


# %%
# Training: each iteration resets the state, runs 20 steps and backpropagates through all of them.
net = SpikingMLP()
optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
losses, accuracies = [], []
for iteration in range(120):
    spikes, labels = batch()
    net.reset_state()  # every sequence starts from rest
    v = torch.stack([net(x) for x in spikes])  # (T, B, 2): backprop through all 20 steps
    loss = membrane_loss(v, labels, reduce="max")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    accuracies.append(
        float((membrane_reduce(v.detach(), "max").argmax(1) == labels).float().mean())
    )
    if iteration % 20 == 0:
        print(f"iteration {iteration:3d}: loss {loss.item():.3f}")

# %%
# Evaluate on fresh noise, without gradients.
correct = 0
with torch.no_grad():
    for _ in range(10):
        spikes, labels = batch()
        net.reset_state()
        v = torch.stack([net(x) for x in spikes])
        correct += int((membrane_reduce(v, "max").argmax(1) == labels).sum())
first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
print(f"mean loss of the first 10 iterations {first:.3f}, of the last 10 {last:.3f}")
print(f"accuracy on 40 fresh noisy patterns: {correct / 40:.2f}")
assert last < first  # a seeded CPU run: the loss must go down


# %%
# The learning curves: loss and accuracy of each training batch, with a running mean of 10.
def running_mean(values, width=10):
    return [
        sum(values[max(0, i - width + 1) : i + 1]) / (i + 1 - max(0, i - width + 1))
        for i in range(len(values))
    ]


fig = Figure(figsize=(8, 3.2))
ax_loss, ax_acc = fig.subplots(1, 2)
for ax, values, name in ((ax_loss, losses, "loss"), (ax_acc, accuracies, "training accuracy")):
    ax.plot(values, color="0.75", label="per batch")
    ax.plot(running_mean(values), color="C0", label="running mean of 10")
    ax.set_xlabel("iteration")
    ax.set_ylabel(name)
ax_acc.axhline(0.5, color="k", ls="--", lw=1, label="chance")
ax_acc.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "gradient_training.png", dpi=80)
print(
    f"running means at the end: loss {running_mean(losses)[-1]:.3f}, accuracy {running_mean(accuracies)[-1]:.2f}"
)
