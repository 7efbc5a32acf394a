"""torch utilities on Linear and Conv2d: flat views, LBFGS, pruning, parametrisations, weight
norm, and the event-driven copy of the weight never going stale."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, parametrize, prune, vector_to_parameters

import pysnn
from pysnn.connection import Conv2d, Linear
from pysnn.learning import STDP
from pysnn.neuron import Input, LIFNeuron

PROPAGATIONS = ["dense", "event"]


def spikes(*shape, p=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).float()


def delayed_reference(x, weight, delay_steps):
    """Independent reference I_i(t) = sum_j w_ij x_j(t - d_ij) for x (T, B, in)."""
    steps, batch, n_in = x.shape
    d = delay_steps.expand(weight.shape) if delay_steps.dim() == 0 else delay_steps
    out = torch.zeros(steps, batch, weight.shape[0], dtype=x.dtype)
    for t in range(steps):
        for i in range(weight.shape[0]):
            for j in range(n_in):
                if t - d[i, j] >= 0:
                    out[t, :, i] += weight[i, j] * x[t - d[i, j], :, j]
    return out


# ---------------------------------------------------------------- layout and flat views
def test_weight_is_contiguous_and_normal_works():
    conn = Linear(30, 20, propagation="event")
    assert conn.weight.is_contiguous() and conn.weight.stride() == (30, 1)
    x = spikes(4, 30)
    conn(x)  # builds the event copy
    with torch.no_grad():
        conn.weight.normal_(mean=1.0, std=0.1)
    assert abs(conn.weight.mean().item() - 1.0) < 0.05
    torch.testing.assert_close(conn(x), F.linear(x, conn.weight))


@pytest.mark.parametrize("make", [lambda: Linear(6, 4, bias=True), lambda: Conv2d(2, 3, 3)])
def test_parameters_to_vector_round_trip_and_view(make):
    conn = make()
    params = list(conn.parameters())
    vec = parameters_to_vector(params)
    assert vec.numel() == sum(p.numel() for p in params)
    assert torch.equal(vec[: conn.weight.numel()], conn.weight.view(-1))
    vector_to_parameters(torch.arange(float(vec.numel())), params)
    assert torch.equal(conn.weight.reshape(-1), torch.arange(float(conn.weight.numel())))
    if isinstance(conn, Linear):  # the event path sees the new values
        conn.propagation = "event"
        x = spikes(3, 6)
        torch.testing.assert_close(conn(x), F.linear(x, conn.weight, conn.bias))


@pytest.mark.parametrize("propagation", PROPAGATIONS)
def test_lbfgs_fits_a_target_through_linear(propagation):
    torch.manual_seed(0)
    target = torch.randn(3, 8)
    x = torch.rand(16, 8) * (torch.rand(16, 8) < 0.5)
    y = x @ target.t()
    conn = Linear(8, 3, propagation=propagation)
    opt = torch.optim.LBFGS(conn.parameters(), lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.mse_loss(conn(x), y)
        loss.backward()
        return loss

    first = closure().item()
    opt.step(closure)
    assert first > 1e-2 and F.mse_loss(conn(x), y).item() < 1e-8


# ---------------------------------------------------------------- pruning (masks)
@pytest.mark.parametrize("propagation", PROPAGATIONS)
@pytest.mark.parametrize("delay", [0.0, 2.0, "per-synapse"])
def test_custom_mask_forward_uses_masked_weight(propagation, delay):
    torch.manual_seed(1)
    if delay == "per-synapse":
        delay = torch.randint(0, 3, (5, 9)).float()
    conn = Linear(9, 5, delay=delay, propagation=propagation)
    mask = (torch.rand(5, 9) < 0.5).float()
    prune.custom_from_mask(conn, "weight", mask)
    x = spikes(8, 2, 9)
    expected = delayed_reference(x, conn.weight_orig.detach() * mask, conn.delay_steps)
    out = torch.stack([conn(s) for s in x])
    torch.testing.assert_close(out, expected)
    assert not torch.equal(out, delayed_reference(x, conn.weight_orig.detach(), conn.delay_steps))


@pytest.mark.parametrize("propagation", PROPAGATIONS)
def test_l1_unstructured_forward_and_multistep(propagation):
    torch.manual_seed(2)
    conn = Linear(12, 4, delay=1.0, propagation=propagation)
    prune.l1_unstructured(conn, "weight", amount=0.5)
    assert int((conn.weight == 0).sum()) == 24
    x = spikes(6, 3, 12)
    expected = delayed_reference(x, conn.weight_orig.detach() * conn.weight_mask, torch.tensor(1))
    torch.testing.assert_close(conn.forward_multistep(x), expected)


def test_random_unstructured_and_conv2d_mask():
    torch.manual_seed(3)
    conn = Linear(10, 6, propagation="event")
    prune.random_unstructured(conn, "weight", amount=0.3)
    x = spikes(2, 10)
    torch.testing.assert_close(conn(x), x @ (conn.weight_orig * conn.weight_mask).detach().t())
    conv = Conv2d(2, 3, 3, delay=1.0)
    mask = (torch.rand(conv.weight.shape) < 0.5).float()
    prune.custom_from_mask(conv, "weight", mask)
    img = spikes(2, 2, 6, 6)
    conv(img)
    expected = F.conv2d(img, conv.weight_orig.detach() * mask)
    torch.testing.assert_close(conv(torch.zeros_like(img)), expected)


def test_stdp_on_pruned_linear_keeps_masked_synapses_at_zero():
    torch.manual_seed(4)
    inp, lif = Input(20), LIFNeuron(8, thresh=-64.0, refrac=1.0)
    fc = Linear(20, 8, wmin=0.0, wmax=1.0, init="uniform", init_kwargs={"a": 0.2, "b": 1.0})
    mask = (torch.rand(8, 20) < 0.5).float()
    prune.custom_from_mask(fc, "weight", mask)
    before = fc.weight_orig.detach().clone()
    rule = STDP(connection=fc, pre=inp, post=lif, nu=(0.05, 0.05))
    with torch.no_grad():
        for t in range(30):
            lif(fc(inp(spikes(2, 20, seed=t))))
            rule.step()
    assert lif.spikes is not None
    assert torch.all(fc.weight[mask == 0] == 0)  # effective weight, refreshed after the update
    changed = (fc.weight_orig.detach() != before) & (mask == 1)
    assert changed.any()
    x = spikes(2, 20, seed=99)
    torch.testing.assert_close(fc(x), x @ (fc.weight_orig * mask).detach().t())


def test_prune_remove_restores_the_plain_fast_path():
    torch.manual_seed(5)
    conn = Linear(16, 6, propagation="auto")
    prune.l1_unstructured(conn, "weight", amount=0.25)
    assert conn.active_propagation == "dense"
    masked = (conn.weight_orig * conn.weight_mask).detach().clone()
    prune.remove(conn, "weight")
    assert isinstance(conn._parameters["weight"], nn.Parameter)
    assert conn.weight.is_contiguous() and torch.equal(conn.weight, masked)
    expected_mode = "event" if pysnn.native.available() else "dense"
    assert conn.active_propagation == expected_mode
    x = spikes(3, 16)
    torch.testing.assert_close(conn(x), x @ masked.t())
    conn.propagation = "event"
    with torch.no_grad():
        torch.testing.assert_close(conn(x), x @ masked.t())
    assert conn._copy.copy is not None and torch.equal(conn._copy.copy, masked.t())


# ---------------------------------------------------------------- parametrisations
class Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask

    def right_inverse(self, w):
        return w


class Positive(nn.Module):
    def forward(self, w):
        return w.abs()


@pytest.mark.parametrize("propagation", PROPAGATIONS)
def test_parametrization_used_by_forward(propagation):
    torch.manual_seed(6)
    conn = Linear(10, 4, delay=1.0, propagation=propagation)
    raw = conn.weight.detach().clone()
    parametrize.register_parametrization(conn, "weight", Positive())
    x = spikes(2, 10)
    conn(x)
    torch.testing.assert_close(conn(torch.zeros_like(x)), x @ raw.abs().t())
    assert conn.active_propagation == ("dense" if propagation == "dense" else "event")


def test_mask_parametrization_learns_through_right_inverse():
    torch.manual_seed(7)
    conn = Linear(6, 3, wmax=0.5, propagation="event")
    mask = (torch.rand(3, 6) < 0.5).float()
    parametrize.register_parametrization(conn, "weight", Mask(mask))
    before = conn.weight.detach().clone()
    dw = torch.full((3, 6), 0.25)
    conn.apply_update_(dw)
    expected = ((before + dw).clamp(max=0.5)) * mask
    torch.testing.assert_close(conn.weight.detach(), expected)
    x = spikes(2, 6)
    torch.testing.assert_close(conn(x), x @ expected.t())


def test_parametrization_without_right_inverse_gives_a_clear_error_unless_grad():
    conn = Linear(5, 2)
    parametrize.register_parametrization(conn, "weight", Positive())
    with pytest.raises(TypeError, match="Positive of 'weight' has no right_inverse"):
        conn.apply_update_(torch.ones(2, 5))
    original = conn.parametrizations.weight.original
    dw = torch.randn(2, 5)
    conn.apply_update_(dw, grad=True)  # chain rule through abs: -dw * sign(original)
    torch.testing.assert_close(original.grad, -dw * original.detach().sign())


@pytest.mark.parametrize(
    "make", [lambda: Linear(7, 4, propagation="event"), lambda: Conv2d(2, 3, 3)]
)
def test_weight_norm_parametrization(make):
    torch.manual_seed(8)
    conn = make()
    x = spikes(2, 7) if isinstance(conn, Linear) else spikes(2, 2, 5, 5)
    with torch.no_grad():
        conn(x)  # event-driven steps before registering (Linear: the weight is tracked)
    assert torch.equal(nn.Parameter(conn.weight), conn.weight)
    conn = torch.nn.utils.parametrizations.weight_norm(conn, "weight")
    g = conn.parametrizations.weight.original0
    v = conn.parametrizations.weight.original1
    dims = tuple(range(1, v.dim()))
    with torch.no_grad():
        g.mul_(2.0)
    weight = (g * v / torch.linalg.vector_norm(v, dim=dims, keepdim=True)).detach()
    if isinstance(conn, Linear):
        torch.testing.assert_close(conn(x), x @ weight.t())
    else:
        torch.testing.assert_close(conn(x), F.conv2d(x, weight))
    dw = 0.01 * torch.randn(weight.shape)
    conn.apply_update_(dw)  # written back through weight_norm's right_inverse
    torch.testing.assert_close(conn.weight.detach(), weight + dw)
    conn.apply_update_(dw, grad=True)
    assert g.grad is not None and v.grad is not None


def test_legacy_weight_norm_forward_and_clear_error_on_update():
    if not hasattr(torch.nn.utils, "weight_norm"):
        pytest.skip("torch.nn.utils.weight_norm was removed from this torch version")
    torch.manual_seed(9)
    conn = Linear(6, 3, propagation="event")
    with pytest.warns(FutureWarning):
        torch.nn.utils.weight_norm(conn, "weight")
    with torch.no_grad():
        conn.weight_g.mul_(3.0)
    weight = (conn.weight_g * conn.weight_v / conn.weight_v.norm(dim=1, keepdim=True)).detach()
    x = spikes(2, 6)
    torch.testing.assert_close(conn(x), x @ weight.t())
    torch.testing.assert_close(conn.forward_multistep(x[None]), (x @ weight.t())[None])
    with pytest.raises(TypeError, match="parametrizations.weight_norm"):
        conn.apply_update_(torch.zeros(3, 6))


# ---------------------------------------------------------------- the event copy is never stale
def _edits():
    def normal(c):
        with torch.no_grad():
            c.weight.normal_()

    def copy_(c):
        with torch.no_grad():
            c.weight.copy_(torch.randn(c.weight.shape))

    def data_fill(c):
        c.weight.data.fill_(0.5)

    def data_assign(c):
        c.weight.data = torch.randn(c.weight.shape)

    def load(c):
        c.load_state_dict({"weight": torch.randn(c.weight.shape)}, strict=False)

    def sgd(c):
        opt = torch.optim.SGD(c.parameters(), lr=0.5)
        c.weight.grad = torch.randn(c.weight.shape)
        opt.step()

    def adam(c):
        opt = torch.optim.Adam(c.parameters(), lr=0.5)
        c.weight.grad = torch.randn(c.weight.shape)
        opt.step()

    def new_parameter(c):
        c.weight = nn.Parameter(torch.randn(c.weight.shape))

    return [normal, copy_, data_fill, data_assign, load, sgd, adam, new_parameter]


@pytest.mark.parametrize("delay", ["shared", "per-synapse"])
@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_event_copy_follows_every_in_place_edit(edit, delay):
    torch.manual_seed(10)
    # per-synapse delays run the queue, which also reads the event copy
    conn = Linear(
        12, 5, delay=0.0 if delay == "shared" else torch.zeros(5, 12), propagation="event"
    )
    x = spikes(2, 12)
    with torch.no_grad():
        before = conn(x)  # the copy is built for the current weight
        edit(conn)
        got = conn(x)
    torch.testing.assert_close(got, F.linear(x, conn.weight.detach()))
    assert not torch.allclose(got, before)


def test_event_copy_follows_a_kept_data_alias_and_vector_to_parameters():
    conn = Linear(12, 5, propagation="event")
    x = spikes(2, 12)
    alias = conn.weight.data
    with torch.no_grad():
        conn(x)
        alias[0].mul_(-3.0)  # a write through an alias taken before the step
        torch.testing.assert_close(conn(x), F.linear(x, conn.weight.detach()))
        vector_to_parameters(torch.randn(conn.weight.numel()), [conn.weight])
        torch.testing.assert_close(conn(x), F.linear(x, conn.weight.detach()))


def test_learning_updates_keep_the_copy_in_sync_without_rebuilding():
    torch.manual_seed(11)
    conn = Linear(10, 6, wmin=-0.2, wmax=0.3, propagation="event")
    x = spikes(2, 10)
    with torch.no_grad():
        conn(x)
    copy_tensor = conn._copy.copy
    dw = 0.2 * torch.randn(6, 10)
    expected = (conn.weight.detach() + dw).clamp(-0.2, 0.3)
    conn.apply_update_(dw)
    rows = torch.tensor([1, 4])
    expected[rows] = (expected[rows] + dw[rows]).clamp(-0.2, 0.3)
    conn.apply_update_(dw[rows], rows)
    torch.testing.assert_close(conn.weight.detach(), expected, rtol=0, atol=0)
    conn.normalize(0.5)
    conn.clamp_()
    with torch.no_grad():
        out = conn(x)
    assert conn._copy.copy is copy_tensor  # edited in place, never rebuilt
    assert torch.equal(conn._copy.copy, conn.weight.detach().t())
    torch.testing.assert_close(out, F.linear(x, conn.weight.detach()))


def test_deepcopy_and_pickle_drop_the_copy():
    conn = Linear(8, 3, propagation="event")
    x = spikes(2, 8)
    with torch.no_grad():
        conn(x)
        other = copy.deepcopy(conn)
        assert other._copy.copy is None
        other.weight.data.mul_(2.0)
        torch.testing.assert_close(other(x), F.linear(x, other.weight.detach()))
        torch.testing.assert_close(conn(x), F.linear(x, conn.weight.detach()))


# ---------------------------------------------------------------- apply_update_
def test_apply_update_grad_mode_for_plain_and_pruned_weights():
    conn = Linear(4, 3)
    dw = torch.arange(12.0).view(3, 4)
    conn.apply_update_(dw, grad=True)
    assert torch.equal(conn.weight.grad, -dw)
    conn.apply_update_(dw[:1], torch.tensor([2]), grad=True)
    expected = -dw.clone()
    expected[2] -= dw[0]
    assert torch.equal(conn.weight.grad, expected)
    pruned = Linear(4, 3)
    mask = torch.tensor([[1.0, 0, 1, 0]]).expand(3, 4)
    prune.custom_from_mask(pruned, "weight", mask)
    pruned.apply_update_(dw, grad=True)
    assert torch.equal(pruned.weight_orig.grad, -dw * mask)


def test_apply_update_bad_arguments():
    conn = Linear(4, 3)
    with pytest.raises(ValueError, match=r"dw must have shape \(3, 4\)"):
        conn.apply_update_(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"dw must have shape \(2, 4\) \(the weight rows\)"):
        conn.apply_update_(torch.zeros(1, 4), torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="rows must be a 1-D integer tensor"):
        conn.apply_update_(torch.zeros(1, 4), torch.tensor([0.0]))
    with pytest.raises(TypeError, match="dw must be a torch.Tensor"):
        conn.apply_update_([[0.0] * 4] * 3)


def test_neuron_steps_under_inference_mode_equal_no_grad():
    """Steps under ``torch.inference_mode`` (modules built outside it), then outside it: the
    same spikes and state as under ``torch.no_grad`` (a generated single step needs version
    counters, which inference tensors lack, so none is generated from them)."""
    from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron

    torch.manual_seed(0)
    xs = [(torch.rand(3, 20) * 40.0) for _ in range(12)]
    for cls in (LIFNeuron, AdaptiveLIFNeuron, Input):
        a, b = cls(20), cls(20)
        with torch.inference_mode():
            out_a = [a(x) for x in xs[:8]]
        with torch.no_grad():
            out_b = [b(x) for x in xs[:8]]
        out_a += [a(x.clone()) for x in xs[8:]]  # outside: its state still inference tensors
        with torch.no_grad():
            out_b += [b(x) for x in xs[8:]]
        for sa, sb in zip(out_a, out_b):
            assert torch.equal(sa, sb), cls.__name__
        for name in a.state_names:
            assert torch.equal(getattr(a, name), getattr(b, name)), (cls.__name__, name)
        assert sum(float(s.sum()) for s in out_b) > 0  # something happened
