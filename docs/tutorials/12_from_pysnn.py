"""PySNN's README network with its feedback connection, written with pysnn (corrected).

Input -> Linear -> LIF (hidden) -> Linear -> LIF (output), plus a feedback connection from the
output neurons back to the hidden neurons. The feedback carries the output spikes of the
*previous* step; here it gets a 1 ms delay, so the hidden layer sees them one step later, every
spike in flight kept. The network is then trained with ``FedeSTDP`` on its forward layers and
with ``MSTDPET`` on the output layer.

    python docs/tutorials/12_from_pysnn.py
"""

import torch

from pysnn.connection import Linear
from pysnn.learning import MSTDPET, FedeSTDP
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron

torch.manual_seed(0)
n_in, n_hidden, n_out, batch_size, dt = 5, 10, 2, 4, 1.0


class Network(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        # Input: no batch in the shape (PySNN's cells_shape was (batch, 1, n)).
        self.input = Input(n_in, dt=dt, tau_trace=5.0)

        # Layer 1
        self.mlp1_c = Linear(
            n_in, n_hidden, dt=dt, delay=1.0, init="uniform", init_kwargs={"a": 0.3, "b": 0.7}
        )
        self.neuron1 = LIFNeuron(
            n_hidden,
            dt=dt,
            thresh=0.8,
            v_rest=0.0,
            v_reset=0.0,
            tau_v=5.0,
            refrac=5.0,
            tau_trace=5.0,
        )
        self.add_layer("fc1", self.mlp1_c, self.neuron1)

        # Layer 2
        self.mlp2_c = Linear(
            n_hidden, n_out, dt=dt, delay=1.0, init="uniform", init_kwargs={"a": 0.3, "b": 0.7}
        )
        self.neuron2 = LIFNeuron(
            n_out, dt=dt, thresh=0.8, v_rest=0.0, v_reset=0.0, tau_v=5.0, refrac=5.0, tau_trace=5.0
        )
        self.add_layer("fc2", self.mlp2_c, self.neuron2)

        # Feedback connection from neuron2 (output) to neuron1 (hidden), 1 ms delay.
        self.mlp2_prev = Linear(
            n_out, n_hidden, dt=dt, delay=1.0, init="uniform", init_kwargs={"a": 0.0, "b": 0.2}
        )
        self.add_layer("fc2_back", self.mlp2_prev, self.neuron1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # one step: (B, n_in) -> (B, n_out)
        x = self.input(x)

        # Layer 1: feed-forward input plus the feedback of the output spikes of the last step.
        out_prev = self.neuron2.spikes
        if out_prev is None or out_prev.shape[0] != x.shape[0]:
            out_prev = x.new_zeros(x.shape[0], n_out)
        hidden = self.neuron1(self.mlp1_c(x) + self.mlp2_prev(out_prev))

        # Layer out
        return self.neuron2(self.mlp2_c(hidden))


net = Network()
print(net)

# Unsupervised FedeSTDP on both forward layers (layer names: connection and post neuron),
# with the presynaptic neurons given per layer.
# Held by the network, the rule is reset with it (and follows net.eval(), net.to(...)).
net.fede = FedeSTDP(
    connections=[("fc1", "input"), ("fc2", "fc1")], network=net, lr=1e-4, w_init=0.5, a=0.5
)
rates = torch.rand(batch_size, n_in) * 0.3  # spike probability per step of each input
counts = torch.zeros(batch_size, n_out)
with torch.no_grad():
    for t in range(100):
        x = (torch.rand(batch_size, n_in) < rates).float()
        counts += net(x)
        net.fede.step()
print(f"FedeSTDP: output spike counts {counts.int().tolist()}")
print(f"fc1 weights now in [{net.mlp1_c.weight.min():.3f}, {net.mlp1_c.weight.max():.3f}]")

# Reward-modulated learning of the output layer: reward +1 when output 0 out-fires output 1.
net.reset_state()  # neurons, connections and FedeSTDP's state
mstdpet = MSTDPET(network=net, connection="fc2", pre="fc1", gamma=0.01, tau_z=25.0)
with torch.no_grad():
    for t in range(100):
        x = (torch.rand(batch_size, n_in) < rates).float()
        out = net(x)
        reward = float(out[:, 0].sum() - out[:, 1].sum())  # scalar reward for the whole batch
        mstdpet.step(reward=reward)
print(f"MSTDPET: eligibility shape {tuple(mstdpet.eligibility.shape)}")
print({name: sorted(sd) for name, sd in net.layer_state_dict().items()})
