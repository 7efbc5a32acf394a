"""Migrating from SpikingJelly: the same two-layer network in both libraries, side by side.

SpikingJelly's ``neuron.LIFNode(tau, v_threshold=1.0, v_reset=0.0)`` charges
``v <- v + (x - (v - v_reset)) / tau`` (``decay_input=True``, the default), fires at
``v >= v_threshold`` and resets to ``v_reset``: pysnn's ``LIFNeuron`` with ``v_rest = v_reset =
0``, ``refrac = 0``, ``tau_v = -dt / ln(1 - 1/tau)`` and the input divided by ``tau``.
SpikingJelly's ``surrogate.Sigmoid(alpha)`` is pysnn's ``Sigmoid(scale=alpha)``. Where
SpikingJelly is installed, this script runs both networks on the same input with the same
weights and checks that spikes and input gradients agree; without it, the pysnn side runs alone.

    python docs/tutorials/17_from_spikingjelly.py
"""

# %%
import math

import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.neuron import LIFNeuron
from pysnn.surrogate import Sigmoid

try:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
except ImportError:  # the CI environment: pysnn only
    neuron = None

torch.manual_seed(0)
TAU, STEPS, BATCH = 2.0, 20, 16  # SpikingJelly's default tau

# %%
# SpikingJelly: stateful neurons too; multi-step mode takes the whole (T, B, ...) sequence.
if neuron is not None:

    def lif_node():
        return neuron.LIFNode(
            tau=TAU, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.Sigmoid(alpha=4.0)
        )

    theirs = nn.Sequential(layer.Linear(784, 100), lif_node(), layer.Linear(100, 10), lif_node())
    functional.set_step_mode(theirs, "m")


# %%
# pysnn: forward is one step; the input of each neuron is divided by tau (decay_input).
def lif(n):
    return LIFNeuron(
        n,
        dt=1.0,
        tau_v=-1.0 / math.log(1.0 - 1.0 / TAU),  # exp(-dt / tau_v) = 1 - 1/tau
        v_rest=0.0,
        v_reset=0.0,
        thresh=1.0,
        refrac=0.0,
        surrogate=Sigmoid(scale=4.0),
    )


class PysnnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.lif1 = Linear(784, 100, bias=True, init="uniform"), lif(100)
        self.fc2, self.lif2 = Linear(100, 10, bias=True, init="uniform"), lif(10)

    def forward(self, step):  # (B, 784) -> (B, 10)
        hidden = self.lif1(self.fc1(step) / TAU)
        return self.lif2(self.fc2(hidden) / TAU)


torch.manual_seed(1)  # the same weights and input with or without SpikingJelly's network
net = PysnnNet()
with torch.no_grad():
    for fc in (net.fc1, net.fc2):  # weights like nn.Linear's default initialisation
        bound = 1 / math.sqrt(fc.in_features)
        fc.weight.uniform_(-bound, bound).mul_(8.0)
        fc.bias.uniform_(-bound, bound)
x = (torch.rand(STEPS, BATCH, 784) < 0.2).float().requires_grad_(True)
out = torch.stack([net(step) for step in x])  # (T, B, 10)
out.sum().backward()
print(f"pysnn: {int(out.sum())} output spikes over {STEPS} steps")

# %%
# The same weights in SpikingJelly's network (functional.reset_net is net.reset_state here).
if neuron is not None:
    with torch.no_grad():
        for mine, other in ((net.fc1, theirs[0]), (net.fc2, theirs[2])):
            other.weight.copy_(mine.weight)
            other.bias.copy_(mine.bias)
    functional.reset_net(theirs)
    x2 = x.detach().clone().requires_grad_(True)
    out2 = theirs(x2)
    out2.sum().backward()
    assert torch.equal(out, out2)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-6)
    print(f"SpikingJelly: the same {int(out2.sum())} spikes and input gradients")
else:
    print("SpikingJelly is not installed: the pysnn side ran alone")
