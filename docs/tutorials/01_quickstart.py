"""Quickstart: a two-layer spiking network, Poisson input, a monitor and spike counts.

Run it from the repository root (a few seconds on a CPU)::

    python docs/tutorials/01_quickstart.py
"""

import torch

from pysnn.connection import Linear
from pysnn.encoding import PoissonEncoder
from pysnn.monitor import Monitor
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron

torch.manual_seed(0)


# 1. A network is an nn.Module whose forward() is ONE time step.
class Net(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.inp = Input(100)  # passes spikes through and keeps their trace
        self.fc = Linear(
            100, 10, delay=2.0, init="uniform", init_kwargs={"a": 0.0, "b": 1.0}
        )  # weights in mV, every spike arrives 2 ms after it was emitted
        self.lif = LIFNeuron(10, thresh=-52.0, v_rest=-65.0, tau_v=100.0, refrac=5.0)
        self.add_layer("fc", self.fc, self.lif)  # optional: names the layer for learning rules

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:  # (B, 100) -> (B, 10)
        return self.lif(self.fc(self.inp(spikes)))


net = Net()

# 2. Encode a static input as spike trains: 4 samples, 100 inputs firing at 20 Hz for 200 ms.
encoder = PoissonEncoder(duration=200.0, dt=1.0, shape=100)  # shape: one sample
rates = torch.full((4, 100), 20.0)  # Hz, batch first: (B, 100)
spikes = encoder(rates)  # time first: (T, B, 100) = (200, 4, 100)

# 3. Record the LIF layer (a forward hook stores a copy after every step).
monitor = Monitor(net.lif, ("spikes", "v"))

# 4. Simulate: one call per step; the modules keep their own state between calls.
with torch.no_grad():
    for x in spikes:
        net(x)

out = monitor.get("spikes")  # (T, B, 10)
v = monitor.get("v")  # (T, B, 10), mV
seconds = encoder.T * encoder.dt / 1000.0
print(f"input: {spikes.shape}, mean rate {spikes.mean() / (encoder.dt / 1000.0):.1f} Hz")
print(f"output spikes: {out.shape}, per sample: {out.sum((0, 2)).int().tolist()}")
print(f"mean output rate: {out.mean() * 1000.0 / encoder.dt:.1f} Hz over {seconds:.1f} s")
print(f"membrane potential range: {v.min():.1f} .. {v.max():.1f} mV")

# 5. Start the next sample from rest: state goes, parameters (weights) stay.
net.reset_state()
monitor.reset()
assert net.lif.v is not None and torch.all(net.lif.v == -65.0)
print("state_dict keys:", sorted(net.state_dict())[:4], "...")
