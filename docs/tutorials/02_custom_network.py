"""Writing your own SNNNetwork: convolution, pooling, a recurrent delayed connection, state.

A small convolutional network on 8x8 inputs mixes pysnn modules with plain torch modules
(``nn.MaxPool2d``, ``nn.Flatten``), adds a recurrent inhibitory connection with a 1 ms delay, and
shows what lives where: parameters in ``state_dict()``, simulation state in non-persistent buffers.
Then a connection of your own (one-to-one, per-neuron delays) and masked connectivity by pruning.

    python docs/tutorials/02_custom_network.py
"""

import io

import torch
from torch import nn
from torch.nn.utils import prune

from pysnn.connection import Connection, Conv2d, Linear
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron

torch.manual_seed(0)


class ConvNet(SNNNetwork):
    """Input (1, 8, 8) -> Conv2d 3x3 -> LIF (4, 8, 8) -> max-pool -> Linear -> LIF (10)."""

    def __init__(self, dt: float = 1.0) -> None:
        super().__init__()
        self.inp = Input((1, 8, 8), dt=dt)
        self.conv = Conv2d(1, 4, 3, padding=1, dt=dt, init="uniform", init_kwargs={"a": 0, "b": 4})
        self.lif1 = LIFNeuron((4, 8, 8), dt=dt)
        self.pool = nn.Sequential(nn.MaxPool2d(2), nn.Flatten())  # any torch module: spikes in/out
        self.fc = Linear(64, 10, dt=dt, init="uniform", init_kwargs={"a": 0.0, "b": 1.0})
        self.lif2 = LIFNeuron(10, dt=dt)
        # Recurrent inhibition among the output neurons, delivered one step (1 ms) later.
        self.rec = Linear(10, 10, dt=dt, delay=dt, init="constant", init_kwargs={"val": -2.0})
        self.add_layer("conv", self.conv, self.lif1)
        self.add_layer("fc", self.fc, self.lif2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8) -> (B, 10)
        s1 = self.lif1(self.conv(self.inp(x)))
        previous = self.lif2.spikes  # last step's output; None before the first step
        if previous is None or previous.shape[0] != x.shape[0]:  # first step or new batch size
            previous = x.new_zeros(x.shape[0], 10)
        return self.lif2(self.fc(self.pool(s1)) + self.rec(previous))


net = ConvNet()
print(net)

# Layers registered with add_layer are looked up by name (learning rules accept these names).
for name, (connection, neuron) in net.named_layers():
    print(f"layer {name!r}: {type(connection).__name__} -> {type(neuron).__name__}{neuron.shape}")

# Simulate 50 steps of a batch of 3 random images (Bernoulli spikes with p = 0.3).
images = (torch.rand(50, 3, 1, 8, 8) < 0.3).float()
with torch.no_grad():
    counts = sum(net(x) for x in images)
print("output spike counts per sample:", counts.sum(1).int().tolist())

# State: non-persistent buffers created for the batch size seen, not saved in state_dict().
print("batch size of the state:", net.lif2.batch_size)
print("state_dict keys:", list(net.state_dict()))
assert "lif2.v" not in net.state_dict() and "fc.weight" in net.state_dict()

# A state_dict loads into a freshly built network: same parameters, same response.
buffer = io.BytesIO()
torch.save(net.state_dict(), buffer)
buffer.seek(0)
clone = ConvNet()
clone.load_state_dict(torch.load(buffer))
net.reset_state()
with torch.no_grad():
    a = torch.stack([net(x) for x in images])
    b = torch.stack([clone(x) for x in images])
assert torch.equal(a, b)
print("reloaded network reproduces the spikes:", torch.equal(a, b))

# A new batch size re-creates the state (here a single sample). Reset first: spikes still in
# flight on the delayed connection would otherwise be dropped, with a warning saying so.
net.reset_state()
with torch.no_grad():
    net(images[0, :1])
print("batch size after a 1-sample step:", net.lif2.batch_size)

# layer_state_dict(): the learned weights by layer name.
print({name: sorted(sd) for name, sd in net.layer_state_dict().items()})


# Your own connection: subclass Connection and implement propagate(arriving). The base class
# checks the input, keeps the spike history and applies the delays (here one per neuron).
class OneToOne(Connection):
    """Neuron j drives neuron j with a learnable gain (mV per spike)."""

    def __init__(self, n: int, dt: float = 1.0, delay=0.0) -> None:
        super().__init__(n, n, dt, delay, delay_shape=(n,))
        self.gain = nn.Parameter(torch.full((n,), 2.0))

    def propagate(self, arriving: torch.Tensor) -> torch.Tensor:  # (B, n) -> (B, n)
        return arriving * self.gain


one = OneToOne(3, delay=torch.tensor([0.0, 1.0, 2.0]))  # ms, per neuron
steps = [one(torch.ones(1, 3) if t == 0 else torch.zeros(1, 3)) for t in range(3)]
print("one-to-one, delays 0/1/2 ms:", [s[0].tolist() for s in steps])
assert [s[0].tolist() for s in steps] == [[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]]

# Masked connectivity (BindsNET's masks): prune the weight with a 0/1 mask. Every propagation
# path and every learning rule uses the effective weight, weight_orig * weight_mask.
masked = Linear(4, 2, init="constant", init_kwargs={"val": 1.0})
prune.custom_from_mask(masked, "weight", torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]))
current = masked(torch.tensor([[1.0, 0.0, 1.0, 1.0]]))
print("masked Linear:", current.tolist())
assert current.tolist() == [[1.0, 2.0]]
