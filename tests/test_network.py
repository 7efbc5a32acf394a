"""SNNNetwork: composition with torch modules, layers, reset, state_dict, dtype and batch changes."""

import warnings

import pytest
import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.network import SNNNetwork
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron


class MixedNet(SNNNetwork):
    """Input -> nn.Sequential(Linear, LIF) -> delayed Linear -> adaptive LIF, with a feedback path."""

    def __init__(self):
        super().__init__()
        self.inp = Input(8)
        self.hidden = nn.Sequential(
            Linear(8, 6, init="uniform", init_kwargs={"a": 0, "b": 8}), LIFNeuron(6, refrac=1.0)
        )
        self.fc2 = Linear(6, 4, delay=2.0, init="uniform", init_kwargs={"a": 0, "b": 10})
        self.out = AdaptiveLIFNeuron(4, theta_plus=1.0)
        self.scale = nn.Identity()
        self.add_layer("fc2", self.fc2, self.out)

    def forward(self, x):
        return self.out(self.scale(self.fc2(self.hidden(self.inp(x)))))


def run(net, inputs):
    return torch.stack([net(x) for x in inputs])


def make_inputs(steps=25, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, 8, generator=g) < 0.5).float()


def test_network_runs_and_reset_reproduces():
    torch.manual_seed(0)
    net = MixedNet()
    x = make_inputs()
    first = run(net, x)
    assert first.sum() > 0
    net.reset_state()
    assert torch.equal(run(net, x), first)


def test_layers_and_layer_state_dict():
    net = MixedNet()
    conn, neuron = net.layer("fc2")
    assert conn is net.fc2 and neuron is net.out
    assert list(net.layers) == ["fc2"]
    assert torch.equal(net.layer_state_dict()["fc2"]["weight"], net.fc2.weight)
    with pytest.raises(ValueError, match="exists already"):
        net.add_layer("fc2", net.fc2, net.out)
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        net.layer("nope")
    with pytest.raises(TypeError, match="neuron must be an nn.Module"):
        net.add_layer("bad", net.fc2, "lif")


def test_add_layer_registers_new_modules():
    net = SNNNetwork()
    net.add_layer("fc", Linear(2, 3), LIFNeuron(3))
    assert {"fc_connection", "fc_neuron"} <= set(dict(net.named_children()))
    assert "fc_connection.weight" in net.state_dict()


def test_state_dict_round_trip_into_fresh_network():
    torch.manual_seed(0)
    net = MixedNet()
    x = make_inputs()
    run(net, x)
    torch.manual_seed(1)
    fresh = MixedNet()
    fresh.load_state_dict(net.state_dict())
    net.reset_state()
    assert torch.equal(run(fresh, x), run(net, x))


def test_double_moves_parameters_and_state():
    torch.manual_seed(0)
    net = MixedNet()
    x = make_inputs()
    ref = run(net, x)
    net.reset_state()
    net = net.double()
    out = run(net, x.double())
    assert out.dtype == torch.float64 and net.out.v.dtype == torch.float64
    assert torch.equal(out.float(), ref)


def test_batch_size_change_between_runs():
    net = MixedNet()
    run(net, make_inputs(batch=3))
    with pytest.warns(UserWarning, match="spikes or traces still in flight"):
        out = run(net, make_inputs(batch=5))  # without a reset: the delayed spikes are dropped
    assert out.shape == (25, 5, 4) and net.out.v.shape == (5, 4)
    net.reset_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # after a reset nothing is in flight: no warning
        run(net, make_inputs(batch=2))


def test_batch_items_are_independent():
    torch.manual_seed(0)
    net = MixedNet()
    x = make_inputs(batch=4)
    together = run(net, x)
    for b in range(4):
        net.reset_state()
        assert torch.equal(run(net, x[:, b : b + 1]), together[:, b : b + 1])


def test_no_grad_leaves_no_graph():
    net = MixedNet()
    with torch.no_grad():
        out = run(net, make_inputs())
    assert not out.requires_grad and not net.fc2.history.requires_grad


def test_reset_skips_stateless_modules_and_works_on_plain_sequential():
    from pysnn.network import reset_state

    seq = nn.Sequential(Linear(3, 2), LIFNeuron(2), nn.ReLU())
    seq(torch.ones(1, 3) * 100)
    reset_state(seq)
    assert seq[1].v.tolist() == [[-65.0, -65.0]]


def test_detach_state_cuts_graph():
    net = MixedNet()
    run(net, make_inputs(steps=3))
    assert net.hidden[1].v.requires_grad
    net.detach_state()
    assert not net.hidden[1].v.requires_grad


def test_forward_hooks_see_each_step():
    net = MixedNet()
    seen = []
    net.out.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    run(net, make_inputs(steps=4))
    assert seen == [(3, 4)] * 4


class Counter(nn.Module):
    """A stateful module counting its reset_state/detach_state calls."""

    def __init__(self):
        super().__init__()
        self.resets = 0
        self.detaches = 0

    def reset_state(self):
        self.resets += 1

    def detach_state(self):
        self.detaches += 1


class CountingNet(SNNNetwork):
    """A network whose reset_state/detach_state overrides count their calls."""

    def __init__(self):
        super().__init__()
        self.lif = LIFNeuron(2)
        self.resets = 0
        self.detaches = 0

    def forward(self, x):
        return self.lif(x)

    def reset_state(self):
        super().reset_state()
        self.resets += 1

    def detach_state(self):
        super().detach_state()
        self.detaches += 1


class Outer(SNNNetwork):
    """Holds a nested network and a stateful module, each registered twice."""

    def __init__(self):
        super().__init__()
        self.inner = CountingNet()
        self.counter = Counter()
        self.again = nn.ModuleList([self.inner, nn.Sequential(self.counter)])
        self.lif = LIFNeuron(2)

    def forward(self, x):
        return self.lif(self.inner(x) * 30.0)


def test_reset_calls_nested_network_override_once():
    net = Outer()
    net(torch.full((1, 2), 5.0))  # below threshold: v moves away from rest
    assert net.inner.lif.v.ne(-65.0).any()
    net.reset_state()
    assert (net.inner.resets, net.counter.resets) == (1, 1)
    assert net.inner.lif.v.tolist() == [[-65.0, -65.0]]  # the override reset its subtree
    assert net.lif.v.tolist() == [[-65.0, -65.0]]
    net.detach_state()
    assert (net.inner.detaches, net.counter.detaches) == (1, 1)


def test_module_level_reset_calls_the_network_override():
    from pysnn.network import detach_state, reset_state

    inner = CountingNet()
    reset_state(inner)
    detach_state(inner)
    assert (inner.resets, inner.detaches) == (1, 1)
    reset_state(nn.ModuleList([inner, nn.Sequential(inner)]))
    assert inner.resets == 2
