"""Neuron models: response of LIF, IF, adaptive LIF and Izhikevich neurons to a constant input.

Each model gets a constant input for 100 ms; a Monitor records ``v`` and the spikes. The first
LIF spike is checked against the closed form, and the membrane traces are drawn into
``neuron_models.png`` in the output folder (first argument, else ``$PYSNN_DOCS_OUT``, else a new
temporary folder).

    python docs/tutorials/03_neuron_models.py [OUT_DIR]
"""

import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from pysnn.monitor import Monitor
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, IzhikevichNeuron, LIFNeuron
from pysnn.plotting import plot_voltages

OUT = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYSNN_DOCS_OUT") or tempfile.mkdtemp()
)
OUT.mkdir(parents=True, exist_ok=True)
STEPS, DT = 100, 1.0

models = {
    # input x: a voltage increment (mV) per step for the integrate-and-fire family
    "LIF (tau_v = 20 ms, x = 1 mV/step)": (LIFNeuron(1, tau_v=20.0, refrac=5.0), 1.0),
    "IF (x = 0.5 mV/step)": (IFNeuron(1, refrac=5.0), 0.5),
    "adaptive LIF (theta_plus = 3 mV, tau_theta = 50 ms)": (
        AdaptiveLIFNeuron(1, tau_v=20.0, refrac=5.0, theta_plus=3.0, tau_theta=50.0),
        1.0,
    ),
    # input I: a current in the model's units, held over the step
    "Izhikevich regular spiking (I = 10)": (
        IzhikevichNeuron(1, a=0.02, b=0.2, c=-65.0, d=8.0),
        10.0,
    ),
}

recordings = {}
for name, (neuron, x) in models.items():
    names = ("v", "spikes", "theta") if isinstance(neuron, AdaptiveLIFNeuron) else ("v", "spikes")
    monitor = Monitor(neuron, names)
    with torch.no_grad():
        for _ in range(STEPS):
            neuron(torch.full((1, 1), x))
    recordings[name] = (monitor, neuron)
    spike_times = (monitor.get("spikes")[:, 0, 0].nonzero().flatten() * DT).tolist()
    print(f"{name}: {len(spike_times)} spikes, first at {spike_times[:5]} ms")

# Closed form for the first LIF spike: from rest, after n steps (leak, then +x each step)
# v_n = v_rest + x (1 - d^n) / (1 - d) with d = exp(-dt / tau_v); spike at the first v_n >= thresh.
d, x, gap = math.exp(-DT / 20.0), 1.0, -52.0 - (-65.0)
n_first = math.ceil(math.log(1 - gap * (1 - d) / x) / math.log(d))
measured = int(
    recordings["LIF (tau_v = 20 ms, x = 1 mV/step)"][0].get("spikes").flatten().nonzero()[0]
)
print(f"LIF first spike: closed form at step {n_first - 1}, simulated at step {measured}")
assert measured == n_first - 1  # step indices start at 0

# The adaptive threshold spreads the spikes out: each spike raises theta by theta_plus.
adaptive = models["adaptive LIF (theta_plus = 3 mV, tau_theta = 50 ms)"][0]
print(f"adaptive LIF: threshold offset theta after {STEPS} ms = {float(adaptive.theta):.2f} mV")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

fig = Figure(figsize=(8.0, 9.0), layout="constrained")
FigureCanvasAgg(fig)
axes = fig.subplots(len(recordings), 1, sharex=True)
for ax, (name, (monitor, neuron)) in zip(axes, recordings.items()):
    thresh = float(neuron.v_peak) if isinstance(neuron, IzhikevichNeuron) else float(neuron.thresh)
    plot_voltages(monitor.get("v"), dt=DT, ax=ax, thresh=thresh, title=name)
    if "theta" in monitor.state_vars:  # the adaptive threshold thresh + theta, recorded per step
        theta = monitor.get("theta")[:, 0, 0]
        ax.plot(torch.arange(STEPS) * DT, thresh + theta, "r:", label="thresh + theta")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("")
ax.set_xlabel("time (ms)")
fig.savefig(OUT / "neuron_models.png", dpi=80)
print(f"saved {OUT / 'neuron_models.png'}")
