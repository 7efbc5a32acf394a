"""LocalConnection2d against the dense Linear with the block mask of its receptive fields."""

import math

import pytest
import torch
from torch.nn.utils import prune

from pysnn.connection import Linear
from pysnn.learning import STDP, FedeSTDP, Hebbian, MSTDPET
from pysnn.local import LocalConnection2d
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron

F64 = torch.float64
TAU_HALF = 1.0 / math.log(2.0)  # trace decay exp(-dt / tau) = 0.5 exactly
# nearest-spike traces with that decay are powers of two: with dyadic rates every weight change
# is exact, so the local and the dense connection must agree bit for bit
TRACE = dict(tau_trace=TAU_HALF, trace_mode="reset")


def hand_mask(c_in, size, kernel, stride, c_out):
    """The block mask written from the definition, one synapse at a time."""
    (height, width), (k_h, k_w), (s_h, s_w) = size, kernel, stride
    out_h, out_w = (height - k_h) // s_h + 1, (width - k_w) // s_w + 1
    mask = torch.zeros(c_out * out_h * out_w, c_in * height * width, dtype=F64)
    for o in range(c_out):
        for h in range(out_h):
            for w in range(out_w):
                for c in range(c_in):
                    for i in range(k_h):
                        for j in range(k_w):
                            post = (o * out_h + h) * out_w + w
                            pre = (c * height + h * s_h + i) * width + w * s_w + j
                            mask[post, pre] = 1.0
    return mask


def dense_twin(local, delay=0.0):
    """The masked dense Linear with the local connection's weights."""
    n_out, n_in = local.weight.shape[0], math.prod(local.in_shape)
    dense = Linear(n_in, n_out, delay=delay, wmin=local.wmin, wmax=local.wmax, dtype=F64)
    with torch.no_grad():
        dense.weight.copy_(local.to_dense())
    prune.custom_from_mask(dense, "weight", local.mask())
    return dense


@pytest.mark.parametrize(
    "c_in, size, kernel, stride, c_out",
    [
        (1, (6, 6), (3, 3), (1, 1), 2),
        (2, (7, 5), (3, 2), (2, 3), 3),
        (1, (4, 4), (4, 4), (1, 1), 2),
    ],
)
def test_block_mask_and_output_equal_the_masked_dense_linear(c_in, size, kernel, stride, c_out):
    torch.manual_seed(0)
    local = LocalConnection2d(c_in, c_out, size, kernel, stride, delay=2.0, dtype=F64)
    mask = hand_mask(c_in, size, kernel, stride, c_out)
    assert torch.equal(local.mask(), mask)
    assert local.n_synapses == int(mask.sum())
    with torch.no_grad():  # dyadic weights: every sum is exact in any order
        local.weight.copy_(torch.randint(-16, 17, local.weight.shape).to(F64) / 8)
    dense = dense_twin(local, delay=2.0)
    assert torch.equal(dense.weight, local.to_dense())
    x = (torch.rand(12, 3, c_in, *size) < 0.3).to(F64)
    with torch.no_grad():
        out = torch.stack([local(s) for s in x])
        ref = torch.stack([dense(s.flatten(1)) for s in x])
    out_h, out_w = local.output_size
    assert out.shape == (12, 3, c_out, out_h, out_w)
    assert torch.equal(out.flatten(2), ref)
    assert out[2:].abs().sum() > 0 and torch.equal(out[:2], torch.zeros_like(out[:2]))  # delay
    local.reset_state()
    with torch.no_grad():
        assert torch.equal(local.forward_multistep(x), out)  # T steps in one call


def test_by_hand():
    # 1 channel 3x3 input, 2x2 kernel, stride 1: output (0, h, w) sums its own 4 weights
    local = LocalConnection2d(1, 1, 3, 2, dtype=F64)
    with torch.no_grad():
        local.weight.copy_(torch.arange(16, dtype=F64).view(4, 1, 2, 2))
    x = torch.zeros(1, 1, 3, 3, dtype=F64)
    x[0, 0, 1, 1] = 1.0  # the centre pixel is in every window, at a different kernel entry
    # window (h, w) sees pixel (1, 1) at kernel entry (1 - h, 1 - w): weight 4 * n + 2 * (1-h) + (1-w)
    expected = torch.tensor([[3.0, 6.0], [9.0, 12.0]], dtype=F64)
    assert torch.equal(local(x)[0, 0], expected)


def test_memory_is_proportional_to_local_synapses():
    local = LocalConnection2d(1, 25, 28, 12, stride=4)  # BindsNET's locally connected MNIST
    assert local.output_size == (5, 5)
    n_syn = 25 * 5 * 5 * 1 * 12 * 12
    assert local.n_synapses == n_syn == local.weight.numel()
    state = local.state_dict()
    assert sum(t.numel() for t in state.values()) == n_syn + 1  # weights, 0-d delay
    # plus the gather index of the receptive fields, one per kernel entry and position (not per
    # output channel), not saved
    assert local.field.shape == (5 * 5, 12 * 12) and "field" not in state
    memory = sum(
        t.numel() * t.element_size() for t in list(local.parameters()) + list(local.buffers())
    )
    assert memory == 4 * n_syn + 8 * 5 * 5 * 12 * 12 + 8
    assert n_syn < 0.2 * 625 * 784


class Pair(SNNNetwork):
    def __init__(self, conn, in_shape, out_shape):
        super().__init__()
        self.inp = Input(in_shape, **TRACE).double()
        self.conn = conn
        self.lif = LIFNeuron(out_shape, thresh=-62.0, tau_v=8.0, refrac=2.0, **TRACE).double()

    def forward(self, x):
        return self.lif(self.conn(self.inp(x)))


@pytest.mark.parametrize("rule", ["stdp", "stdp-soft-norm", "hebbian", "mstdpet"])
def test_spikes_and_weight_changes_equal_the_masked_dense_linear(rule):
    torch.manual_seed(1)
    bounds = dict(wmin=0.0, wmax=2.0)
    local = LocalConnection2d(2, 3, (6, 5), (3, 2), (1, 1), delay=1.0, dtype=F64, **bounds)
    with torch.no_grad():
        local.weight.copy_(torch.randint(1, 12, local.weight.shape).to(F64) / 8)
    before = local.to_dense()
    dense = dense_twin(local, delay=1.0)
    n_in, n_out = math.prod(local.in_shape), local.weight.shape[0]
    nets = [Pair(local, local.in_shape, local.out_shape), Pair(dense, n_in, n_out)]
    rules = []
    for net in nets:
        args = (net.conn, net.inp, net.lif)
        if rule == "stdp":
            rules.append(STDP(*args, nu=(2.0**-7, 2.0**-6)))
        elif rule == "stdp-soft-norm":
            rules.append(STDP(*args, nu=(2.0**-7, 2.0**-6), weight_dependence="soft", norm=3.0))
        elif rule == "hebbian":
            rules.append(Hebbian(*args, nu=(2.0**-8, 2.0**-7)))
        else:
            rules.append(MSTDPET(*args))
    x = (torch.rand(50, 2, 2, 6, 5) < 0.3).to(F64)
    spikes = [[], []]
    with torch.no_grad():
        for t, s in enumerate(x):
            for k, (net, learn) in enumerate(zip(nets, rules)):
                spikes[k].append(net(s if k == 0 else s.flatten(1)).flatten(1))
                learn.step(1.0 if t % 7 == 0 else None) if rule == "mstdpet" else learn.step()
    s_local, s_dense = torch.stack(spikes[0]), torch.stack(spikes[1])
    assert torch.equal(s_local, s_dense)
    assert 0 < s_local.sum() < s_local.numel() / 2
    assert (local.to_dense() - before).abs().sum() > 1e-3  # it learned
    if rule in ("stdp", "hebbian"):  # power-of-two traces, dyadic rates: exact
        assert torch.equal(local.to_dense(), dense.weight)
    else:  # soft bounds, normalisation, eligibility with exp(-dt / tau_z): rounding only
        torch.testing.assert_close(local.to_dense(), dense.weight, rtol=0, atol=1e-12)
    assert torch.equal(dense.weight * (1 - local.mask()), torch.zeros_like(dense.weight))


def test_module_behaviour_and_gradient():
    local = LocalConnection2d(1, 2, 5, 3, wmin=0.0, wmax=1.0, init="uniform")
    w = local.weight.detach()
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    twin = LocalConnection2d(1, 2, 5, 3)
    twin.load_state_dict(local.state_dict())
    assert torch.equal(twin.weight, local.weight)
    local.double()
    x = (torch.rand(2, 1, 5, 5) < 0.5).to(F64).requires_grad_()
    out = local(x)
    out.sum().backward()
    # d(sum of outputs)/dw: the input patch; d/dx: the sum of the weights that read the pixel
    patch_sum = local.patches(x.detach()).sum(0)  # (positions, kernel entries)
    assert torch.equal(local.weight.grad.view(2, 9, 9), patch_sum.expand(2, 9, 9))
    assert torch.allclose(x.grad.flatten(1)[0], local.to_dense().detach().sum(0))
    with torch.no_grad():
        local.normalize(2.0)
    torch.testing.assert_close(local.weight.sum((1, 2, 3)), torch.full((18,), 2.0, dtype=F64))


def test_errors():
    with pytest.raises(ValueError, match="kernel_size"):
        LocalConnection2d(1, 2, 4, 5)
    with pytest.raises(ValueError, match="stride"):
        LocalConnection2d(1, 2, 4, 2, stride=0)
    with pytest.raises(ValueError, match="out_channels"):
        LocalConnection2d(1, 0, 4, 2)
    with pytest.raises(ValueError, match="input_size"):
        LocalConnection2d(1, 2, (4, -1), 2)
    local = LocalConnection2d(1, 2, 4, 2)
    with pytest.raises(ValueError, match="shape"):
        local(torch.ones(1, 1, 5, 4))
    with pytest.raises(ValueError, match="correlate needs"):
        local.correlate(torch.ones(1, 2, 3, 3), torch.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="delay"):
        LocalConnection2d(1, 2, 4, 2, delay=torch.ones(3))
    inp, lif = Input((1, 4, 4)), LIFNeuron((2, 3, 3))
    with pytest.raises(ValueError, match="receptive field"):
        FedeSTDP(local, inp, lif)
    with pytest.raises(ValueError, match="post has shape"):
        STDP(local, inp, LIFNeuron((2, 2, 3)))


def test_correlate_is_the_dense_outer_product_at_the_synapses():
    local = LocalConnection2d(2, 3, (5, 6), (2, 3), (3, 1), dtype=F64)
    post = torch.rand(4, *local.out_shape, dtype=F64)
    pre = torch.rand(4, *local.in_shape, dtype=F64)
    outer = post.flatten(1).unsqueeze(2) * pre.flatten(1).unsqueeze(1)  # (B, out, in), dense
    i, j = local.synapse_indices()
    per_sample = local.correlate(post, pre, per_sample=True)
    assert per_sample.shape == (4, *local.weight.shape)
    assert torch.equal(per_sample.flatten(1), outer[:, i, j])  # one product each: exact
    torch.testing.assert_close(local.correlate(post, pre).flatten(), outer.sum(0)[i, j])
