"""Migrating from snnTorch: the same two-layer network written in both libraries, side by side.

snnTorch's ``Leaky`` with ``reset_mechanism="zero", reset_delay=False`` is pysnn's ``LIFNeuron``
with ``v_rest = v_reset = 0``, ``refrac = 0`` and ``tau_v = -dt / ln(beta)``; snnTorch's
``surrogate.fast_sigmoid(slope=k)`` is pysnn's ``FastSigmoid(scale=k)``. Where snnTorch is
installed, this script runs both networks on the same input with the same weights and checks
that the spikes and the input gradients are the same; without it, the pysnn side runs alone.

    python docs/tutorials/15_from_snntorch.py
"""

# %%
import math

import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.neuron import LIFNeuron
from pysnn.surrogate import FastSigmoid

try:
    import snntorch as snn
    from snntorch import surrogate
except ImportError:  # the CI environment: pysnn only
    snn = None

torch.manual_seed(0)
BETA, STEPS, BATCH = 0.9, 25, 16


# %%
# snnTorch: the membrane is passed in and out of every call, the loop is yours.
if snn is not None:

    class SnnTorchNet(nn.Module):
        def __init__(self):
            super().__init__()
            grad = surrogate.fast_sigmoid(slope=25)
            self.fc1, self.fc2 = nn.Linear(784, 100), nn.Linear(100, 10)
            self.lif1 = snn.Leaky(BETA, spike_grad=grad, reset_mechanism="zero", reset_delay=False)
            self.lif2 = snn.Leaky(BETA, spike_grad=grad, reset_mechanism="zero", reset_delay=False)

        def forward(self, x):  # x: (T, B, 784)
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            out = []
            for step in x:
                spk1, mem1 = self.lif1(self.fc1(step), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                out.append(spk2)
            return torch.stack(out)


# %%
# pysnn: each neuron keeps its own membrane; forward is one step, reset_state() starts over.
def lif(n):
    return LIFNeuron(
        n,
        dt=1.0,
        tau_v=-1.0 / math.log(BETA),  # exp(-dt / tau_v) = beta
        v_rest=0.0,
        v_reset=0.0,
        thresh=1.0,
        refrac=0.0,
        surrogate=FastSigmoid(scale=25.0),
    )


class PysnnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = Linear(784, 100, init="uniform", init_kwargs={"a": -0.05, "b": 0.1})
        self.fc2 = Linear(100, 10, init="uniform", init_kwargs={"a": -0.1, "b": 0.1})
        self.lif1, self.lif2 = lif(100), lif(10)

    def forward(self, step):  # one step: (B, 784) -> (B, 10)
        return self.lif2(self.fc2(self.lif1(self.fc1(step))))


net = PysnnNet()
x = (torch.rand(STEPS, BATCH, 784) < 0.2).float().requires_grad_(True)
out = torch.stack([net(step) for step in x])  # (T, B, 10) spikes, graph through all steps
out.sum().backward()
print(f"pysnn: {int(out.sum())} output spikes over {STEPS} steps")

# %%
# The same weights in snnTorch's network (pysnn's Linear holds weight (out, in) and bias, like
# nn.Linear, but adds no bias by default): same spikes, same gradients.
if snn is not None:
    theirs = SnnTorchNet()
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            getattr(theirs, name).weight.copy_(getattr(net, name).weight)
            getattr(theirs, name).bias.zero_()
    x2 = x.detach().clone().requires_grad_(True)
    out2 = theirs(x2)
    out2.sum().backward()
    assert torch.equal(out, out2)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    print(f"snnTorch {snn.__version__}: the same {int(out2.sum())} spikes and input gradients")
else:
    print("snnTorch is not installed: the pysnn side ran alone")
