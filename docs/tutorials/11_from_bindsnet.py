"""BindsNET's user-guide network, written with pysnn.

100 input neurons with Bernoulli(0.1) spikes drive 1000 LIF neurons all-to-all (weights
``0.05 + 0.1 * N(0, 1)``); the LIF neurons inhibit each other with weight -0.025 (all-to-all, no
self-connection); 500 steps of 1 ms; monitors record the input spikes and the LIF spikes and
voltages.

BindsNET computes the input of every layer from the spikes of the *previous* step (a one-step
delay on every connection). pysnn delivers within the step unless a connection has a delay, so
both connections get ``delay=dt`` here to keep BindsNET's timing.

    python docs/tutorials/11_from_bindsnet.py
"""

import torch

from pysnn.connection import Linear
from pysnn.encoding import BernoulliEncoder
from pysnn.monitor import Monitor
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron

torch.manual_seed(0)
time, dt = 500, 1.0
n_in, n_out = 100, 1000


class UserGuideNetwork(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        # Layers: BindsNET's Input(n=100) and LIFNodes(n=1000); pysnn's LIF defaults are the
        # same constants (thresh -52 mV, rest and reset -65 mV, tau 100 ms, refractory 5 ms).
        self.A = Input(n_in, dt=dt)
        self.B = LIFNeuron(n_out, dt=dt)
        # Connections. BindsNET's w is (source.n, target.n); pysnn's weight is (out, in) like
        # torch.nn.Linear, hence the transpose.
        self.A_to_B = Linear(n_in, n_out, dt=dt, delay=dt)
        self.B_to_B = Linear(n_out, n_out, dt=dt, delay=dt)
        with torch.no_grad():
            self.A_to_B.weight.copy_((0.05 + 0.1 * torch.randn(n_in, n_out)).t())
            self.B_to_B.weight.copy_(0.025 * (torch.eye(n_out) - 1))
        self.add_layer("A_to_B", self.A_to_B, self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # one step, like one iteration of run()
        a = self.A(x)
        previous = self.B.spikes if self.B.spikes is not None else a.new_zeros(a.shape[0], n_out)
        return self.B(self.A_to_B(a) + self.B_to_B(previous))


network = UserGuideNetwork()
source_monitor = Monitor(network.A, "spikes", time=time)  # BindsNET's state var "s" = spikes
target_monitor = Monitor(network.B, ("spikes", "v"), time=time)

# torch.bernoulli(0.1 * torch.ones(time, 100)) with a batch dimension: (time, 1, 100).
input_data = BernoulliEncoder(duration=time * dt, dt=dt, max_prob=0.1, shape=n_in)(torch.ones(n_in))

with torch.no_grad():  # network.run(inputs={"A": input_data}, time=time)
    for x in input_data:
        network(x)

spikes = {"A": source_monitor.get("spikes"), "B": target_monitor.get("spikes")}  # (time, 1, n)
voltages = {"B": target_monitor.get("v")}
print({name: tuple(s.shape) for name, s in spikes.items()}, tuple(voltages["B"].shape))
print(
    f"input rate {spikes['A'].mean() * 1000 / dt:.1f} Hz, "
    f"LIF rate {spikes['B'].mean() * 1000 / dt:.1f} Hz, "
    f"LIF neurons that fired: {int((spikes['B'].sum(0) > 0).sum())} of {n_out}"
)

network.reset_state()  # BindsNET: network.reset_state_variables()
