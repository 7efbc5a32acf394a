"""Recording and plotting: Monitor, SpikeMonitor, NetworkMonitor and pysnn.plotting.

A two-layer network runs for 100 ms; three recorders watch it, and every plotting function writes
a PNG into the output folder (first argument, else ``$PYSNN_DOCS_OUT``, else a new temporary
folder). The plots use matplotlib's Agg canvas: nothing opens a window.

    python docs/tutorials/10_recording_and_plotting.py [OUT_DIR]
"""

import os
import sys
import tempfile
from pathlib import Path

import torch

from pysnn.connection import Linear
from pysnn.encoding import PoissonEncoder
from pysnn.monitor import Monitor, NetworkMonitor, SpikeMonitor
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron
from pysnn.plotting import (
    plot_accuracy,
    plot_assignments,
    plot_spikes,
    plot_voltages,
    plot_weights,
)

OUT = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYSNN_DOCS_OUT") or tempfile.mkdtemp()
)
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)


class Net(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.inp = Input(64)
        self.fc = Linear(64, 16, init="uniform", init_kwargs={"a": 0.0, "b": 1.5})
        self.lif = LIFNeuron(16, tau_v=20.0)
        self.add_layer("fc", self.fc, self.lif)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.fc(self.inp(x)))


net = Net()
dense = Monitor(net.lif, ("spikes", "v"))  # dense copies every step: (T, B, 16) each
events = SpikeMonitor(net.lif, chunk=50)  # only spike events (t, b, i): small for sparse activity
everything = NetworkMonitor(net, ("spikes", "trace"))  # one Monitor per submodule having them
weights = Monitor(net.fc, "weight", time=10)  # ring buffer: only the last 10 steps are kept

spikes = PoissonEncoder(duration=100.0, shape=64)(torch.full((2, 64), 40.0))  # (100, 2, 64), 40 Hz
with torch.no_grad():
    for x in spikes:
        net(x)

print("dense spikes:", tuple(dense.get("spikes").shape), "v:", tuple(dense["v"].shape))
ev = events.get()
print(f"events: {tuple(ev.shape)} rows of (t, b, i); first rows {ev[:3].tolist()}")
assert torch.equal(events.to_dense(), dense.get("spikes"))  # same information, sparse form
print("network monitor covers:", everything.names())
print("input trace:", tuple(everything.get("inp", "trace").shape))
print("weight ring buffer:", tuple(weights.get("weight").shape), "steps kept:", len(weights))
print(f"bytes held: dense {dense.nbytes}, network {everything.nbytes}")

# Plots: tensors are time first, as recorded; batch sample 0 is drawn unless batch= is given.
plot_spikes(events, title="output spikes (SpikeMonitor)", path=OUT / "raster.png", dpi=80)
plot_voltages(
    dense.get("v"),
    neurons=[0, 1, 2],
    thresh=-52.0,
    title="membrane potential",
    path=OUT / "voltages.png",
    dpi=80,
)
plot_spikes(
    everything.get("inp", "spikes"), batch=1, title="input, sample 1", path=OUT / "input.png"
)
plot_weights(net.fc.weight.detach(), shape=(8, 8), path=OUT / "weights.png")  # one tile per neuron
plot_assignments(torch.tensor([0, 1, 2, -1] * 4), n_labels=3, path=OUT / "assignments.png")
plot_accuracy({"example curve": [10.0, 40.0, 60.0]}, x=[0, 100, 200], path=OUT / "accuracy.png")
names = ("raster", "voltages", "input", "weights", "assignments", "accuracy")
print(f"saved into {OUT}:", [f"{name}.png" for name in names])

# Recording can be paused, and hooks removed (data is kept).
dense.disable()
with torch.no_grad():
    net(spikes[0])
assert dense.n_steps() == 100
for recorder in (dense, events, everything, weights):
    recorder.remove()
