"""Backpropagation through time through pysnn's own modules (issue 7).

What gradcheck can and cannot check here: ``torch.autograd.gradcheck`` compares the analytic
gradient with finite differences of the *true* forward function. A spiking layer's output is
piecewise constant in its inputs (a step), so its true derivative is 0 almost everywhere and the
surrogate gradient deliberately differs from it: gradcheck through a spike is meaningless. We
therefore gradcheck (in float64, over several time steps) every part of the graph that *is*
smooth: traces, connections (shared and per-synapse delays, Conv2d), the leaky-integrator readout,
and a full Linear -> LIF -> Linear -> LIReadout network with respect to everything downstream of
the spikes. The surrogate part is checked against hand-derived BPTT values and, in
``test_surrogate.py``, against finite differences of each surrogate's smooth relaxation.
"""

from __future__ import annotations

import time
from typing import Tuple

import pytest
import torch
from torch.func import functional_call

import pysnn
import pysnn.neuron
from pysnn.connection import Conv2d, Linear
from pysnn.network import SNNNetwork, detach_state, reset_state
from pysnn.neuron import Input, LIFNeuron
from pysnn.readout import LIReadout, membrane_loss, membrane_reduce, spike_count_loss
from pysnn.surrogate import ArcTan, FastSigmoid

D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one thread avoids thread over-subscription on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_lif(monkeypatch, shape, detach_reset: bool, **kwargs) -> LIFNeuron:
    """A LIFNeuron with the given ``detach_reset``."""
    return LIFNeuron(shape, detach_reset=detach_reset, **kwargs)


def unit_lif(shape, surrogate=None, **kwargs) -> LIFNeuron:
    """LIF in normalised units: rest = reset = 0, threshold 1, no refractory period."""
    params = dict(thresh=1.0, v_rest=0.0, v_reset=0.0, tau_v=10.0, refrac=0.0)
    params.update(kwargs)
    return LIFNeuron(shape, surrogate=surrogate, **params)


# ---------------------------------------------------------------------------------------------
# gradcheck of the smooth parts, float64, several steps
# ---------------------------------------------------------------------------------------------
def test_gradcheck_trace_and_per_synapse_delays_into_readout():
    """Input trace -> Linear with per-synapse delays (index_add path) -> LIReadout, 6 steps."""
    torch.manual_seed(0)
    steps, batch = 6, 2
    inp = Input(4, tau_trace=5.0).to(D)
    delays = torch.tensor([[0.0, 1.0, 2.0, 3.0], [2.0, 0.0, 1.0, 0.0], [3.0, 3.0, 0.0, 1.0]])
    fc = Linear(4, 3, delay=delays, bias=True).to(D)
    out = LIReadout(3, tau_v=8.0, v_rest=0.5).to(D)
    x = torch.rand(steps, batch, 4, dtype=D, requires_grad=True)
    w = fc.weight.detach().clone().requires_grad_(True)
    b = fc.bias.detach().clone().requires_grad_(True)

    def f(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        for module in (inp, fc, out):
            module.reset_state()
        vs = []
        for t in range(steps):
            inp(x[t])
            vs.append(out(functional_call(fc, {"weight": w, "bias": b}, (inp.trace,))))
        return torch.stack(vs)

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_gradcheck_conv2d_shared_delay_into_readout():
    torch.manual_seed(1)
    steps = 4
    conv = Conv2d(1, 2, 3, delay=1.0, bias=True).to(D)
    out = LIReadout((2, 3, 3), tau_v=5.0).to(D)
    x = torch.rand(steps, 2, 1, 5, 5, dtype=D, requires_grad=True)
    w = conv.weight.detach().clone().requires_grad_(True)

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        conv.reset_state()
        out.reset_state()
        return torch.stack(
            [out(functional_call(conv, {"weight": w}, (x[t],))) for t in range(steps)]
        )

    assert torch.autograd.gradcheck(f, (x, w))


def test_gradcheck_spiking_network_downstream_of_spikes():
    """Linear -> LIF (surrogate) -> Linear (shared delay) -> LIReadout over 8 steps.

    The hidden spike train is fixed by the input and first-layer weights, so the output is smooth
    in the second layer's weights and bias and in the readout's initial state: gradcheck those.
    The first layer's gradient exists only through the surrogate (checked not to vanish).
    """
    torch.manual_seed(2)
    steps, batch = 8, 3
    fc1 = Linear(5, 6).to(D)
    lif = unit_lif(6, FastSigmoid(2.0), tau_v=5.0).to(D)
    fc2 = Linear(6, 2, delay=1.0, bias=True).to(D)
    out = LIReadout(2, tau_v=10.0).to(D)
    with torch.no_grad():
        fc1.weight.mul_(4.0)
    x = torch.rand(steps, batch, 5, dtype=D)

    def run(w2: torch.Tensor, b2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        reset_state(torch.nn.ModuleList([fc1, lif, fc2, out]))
        spikes, vs = [], []
        for t in range(steps):
            s = lif(fc1(x[t]))
            spikes.append(s)
            vs.append(out(functional_call(fc2, {"weight": w2, "bias": b2}, (s,))))
        return torch.stack(spikes), torch.stack(vs)

    w2 = fc2.weight.detach().clone().requires_grad_(True)
    b2 = fc2.bias.detach().clone().requires_grad_(True)
    spikes, v = run(w2, b2)
    assert 0 < spikes.sum() < spikes.numel()  # a non-trivial spike train
    assert torch.autograd.gradcheck(lambda w, b: run(w, b)[1], (w2, b2))
    # the surrogate carries a non-zero gradient to the first layer's weights
    v.square().sum().backward()
    assert fc1.weight.grad is not None and fc1.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# surrogate BPTT against hand-derived values; reset gradient on / detached
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("detach_reset", [False, True])
def test_bptt_through_reset_hand_values(monkeypatch, detach_reset):
    r"""Two steps of a LIF (rest = reset = 0, threshold 1, decay d), input x1 then x2.

    v1 = x1 fires (s1 = 1), v1' = reset(v1); v2 = d v1' + x2; s2 = H(v2 - 1). Then

    ds2/dx1 = sigma'(v2 - 1) * d * dv1'/dx1, with dv1'/dx1 = (1 - s1) + (0 - v1) sigma'(v1 - 1)
    when the reset carries gradient, and (1 - s1) = 0 when it is detached.
    """
    sur = ArcTan(2.0)
    lif = make_lif(
        monkeypatch,
        1,
        detach_reset,
        thresh=1.0,
        v_rest=0.0,
        v_reset=0.0,
        tau_v=10.0,
        refrac=0.0,
        surrogate=sur,
    ).to(D)
    d = float(lif.params.decay)
    x1 = torch.tensor([[1.2]], dtype=D, requires_grad=True)
    x2 = torch.tensor([[0.7]], dtype=D, requires_grad=True)
    s1 = lif(x1)
    assert s1.item() == 1.0 and lif.v.item() == 0.0  # exact reset value
    s2 = lif(x2)
    assert s2.item() == 0.0
    g1, g2 = torch.autograd.grad(s2.sum(), (x1, x2))
    v2 = torch.tensor(0.7, dtype=D)
    expected_g2 = sur.grad(v2 - 1.0)
    reset_term = 0.0 if detach_reset else (0.0 - 1.2) * sur.grad(torch.tensor(0.2, dtype=D))
    torch.testing.assert_close(g2.squeeze(), expected_g2)
    torch.testing.assert_close(g1.squeeze(), expected_g2 * d * reset_term, rtol=1e-12, atol=0.0)
    if detach_reset:
        assert g1.item() == 0.0  # the reset cuts the path from x1 through the spike


def test_bptt_subthreshold_hand_values():
    """Without spikes and with a detached reset, ds3/dx1 = sigma'(v3 - th) * decay^2 (leak only)."""
    sur = FastSigmoid(3.0)
    lif = unit_lif(2, sur, tau_v=4.0, detach_reset=True).to(D)
    xs = torch.tensor([[[0.2, 0.5]], [[0.1, 0.0]], [[0.3, 0.2]]], dtype=D, requires_grad=True)
    outs = [lif(xs[t]) for t in range(3)]
    (g,) = torch.autograd.grad(outs[-1].sum(), xs)
    d = float(lif.params.decay)
    v3 = xs[0, 0].detach() * d * d + xs[1, 0].detach() * d + xs[2, 0].detach()
    torch.testing.assert_close(g[0, 0], sur.grad(v3 - 1.0) * d * d)
    torch.testing.assert_close(g[2, 0], sur.grad(v3 - 1.0))


def test_default_reset_gradient_matches_product_form(monkeypatch):
    """The documented default: gradient of v' = (1 - s) v + s v_reset, with exact forward."""
    torch.manual_seed(3)
    sur = FastSigmoid(1.0)
    lif = make_lif(
        monkeypatch,
        20,
        False,
        thresh=1.0,
        v_rest=0.0,
        v_reset=-0.3,
        tau_v=7.0,
        refrac=0.0,
        surrogate=sur,
    ).to(D)
    x = (torch.rand(6, 4, 20, dtype=D) * 0.8).requires_grad_(True)
    loss_mod = sum(lif(x[t]).sum() * (t + 1) + lif.v.sum() for t in range(6))
    (g_mod,) = torch.autograd.grad(loss_mod, x)

    # the same dynamics written with the product-form reset
    p = lif.params
    v = torch.zeros(4, 20, dtype=D)
    loss_ref = 0.0
    for t in range(6):
        v = v * p.decay + x[t]
        s = sur(v - p.thresh)
        v = (1 - s) * v + s * p.v_reset
        loss_ref = loss_ref + s.sum() * (t + 1) + v.sum()
    (g_ref,) = torch.autograd.grad(loss_ref, x)
    torch.testing.assert_close(g_mod, g_ref)


# ---------------------------------------------------------------------------------------------
# truncated BPTT: detach_state cuts the graph
# ---------------------------------------------------------------------------------------------
class _DelayNet(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        delays = torch.randint(0, 4, (6, 3)).to(torch.float64)
        self.fc1 = Linear(3, 6, delay=delays)
        self.lif = unit_lif(6, FastSigmoid(1.0), tau_v=20.0, thresh=0.5)
        self.fc2 = Linear(6, 2, delay=2.0)
        self.out = LIReadout(2, tau_v=20.0)
        self.add_layer("hidden", self.fc1, self.lif)
        self.add_layer("readout", self.fc2, self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc2(self.lif(self.fc1(x))))


@pytest.mark.parametrize("cut", [False, True])
def test_detach_state_cuts_graph(cut):
    torch.manual_seed(4)
    net = _DelayNet().to(D)
    x1 = (torch.rand(5, 2, 3, dtype=D) + 0.5).requires_grad_(True)
    x2 = (torch.rand(5, 2, 3, dtype=D) + 0.5).requires_grad_(True)
    for t in range(5):
        net(x1[t])
    if cut:
        net.detach_state()
    v = torch.stack([net(x2[t]) for t in range(5)])
    g1, g2 = torch.autograd.grad(v.square().sum(), (x1, x2), allow_unused=True)
    assert g2 is not None and g2.abs().sum() > 0
    if cut:
        assert g1 is None  # nothing in the later loss depends on x1 through the graph
    else:
        assert g1 is not None and g1.abs().sum() > 0
    # truncated BPTT: the next chunk continues from the detached state; weights get gradients
    net.detach_state()
    v = torch.stack([net(x2[t]) for t in range(5)])
    v.sum().backward()
    assert net.fc1.weight.grad is not None and net.fc1.weight.grad.abs().sum() > 0


def test_detach_state_function_on_plain_modules():
    torch.manual_seed(5)
    seq = torch.nn.Sequential(Linear(3, 4, delay=1.0), unit_lif(4, ArcTan()), Linear(4, 2))
    readout = LIReadout(2)
    x = torch.rand(3, 1, 3, requires_grad=True) * 3
    for t in range(3):
        readout(seq(x[t]))
    detach_state(torch.nn.ModuleList([seq, readout]))
    for name in ("v", "spikes", "trace"):
        assert not getattr(seq[1], name).requires_grad
    assert not readout.v.requires_grad and not seq[0].history.requires_grad


# ---------------------------------------------------------------------------------------------
# torch.compile agrees with eager (forward and gradients)
# ---------------------------------------------------------------------------------------------
def test_compiled_matches_eager():
    torch.manual_seed(6)

    class Net(SNNNetwork):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = Linear(3, 5, bias=True)
            self.lif = unit_lif(5, ArcTan(2.0), thresh=0.3)
            self.fc2 = Linear(5, 2)
            self.out = LIReadout(2, tau_v=5.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.fc2(self.lif(self.fc1(x))))

    net = Net()
    x = torch.rand(4, 2, 3) * 2

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        net.reset_state()
        v = torch.stack([net(x[t]) for t in range(x.shape[0])])
        return v.square().sum() + net.lif.trace.sum()

    def loss_and_grads(fn) -> Tuple[torch.Tensor, list]:
        net.zero_grad()
        loss = fn(x)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters()]

    loss_e, grads_e = loss_and_grads(loss_fn)
    loss_c, grads_c = loss_and_grads(torch.compile(loss_fn))
    assert net.lif.trace.sum() > 0  # the hidden layer spiked
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    for gc, ge in zip(grads_c, grads_e):
        assert ge.abs().sum() > 0
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# a tiny network learns a task that needs time
# ---------------------------------------------------------------------------------------------
STEPS = 20


def _temporal_xor(n: int, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two input neurons each spike once, early (steps 0-2) or late (steps 8-10).

    Class = XOR(first is early, second is early). Every input has exactly one spike per channel,
    so only the spike *times* carry the class. Returns spikes ``(T, n, 2)`` and labels ``(n,)``.
    """
    early = torch.randint(0, 2, (n, 2), generator=g)
    t_early = torch.randint(0, 3, (n, 2), generator=g)
    t_late = torch.randint(8, 11, (n, 2), generator=g)
    times = torch.where(early == 1, t_early, t_late)
    x = torch.zeros(STEPS, n, 2)
    rows = torch.arange(n)
    x[times[:, 0], rows, 0] = 1.0
    x[times[:, 1], rows, 1] = 1.0
    return x, early[:, 0] ^ early[:, 1]


def test_learns_temporal_xor():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    class Net(SNNNetwork):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = Linear(2, 32, bias=True, init="uniform", init_kwargs={"a": -2.0, "b": 2.0})
            self.lif = unit_lif(
                32, FastSigmoid(5.0), tau_v=20.0, detach_reset=True
            )  # trains faster
            self.fc2 = Linear(32, 2)
            self.out = LIReadout(2, tau_v=10.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.fc2(self.lif(self.fc1(x))))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    start = time.perf_counter()
    with pysnn.checks(False):
        for _ in range(80):
            x, y = _temporal_xor(64, g)
            net.reset_state()
            loss = membrane_loss(torch.stack([net(x[t]) for t in range(STEPS)]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        x, y = _temporal_xor(1000, g)
        with torch.no_grad():
            net.reset_state()
            v = torch.stack([net(x[t]) for t in range(STEPS)])
    accuracy = (membrane_reduce(v).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9, f"accuracy {accuracy:.3f} after {time.perf_counter() - start:.1f} s"


# ---------------------------------------------------------------------------------------------
# LIReadout and the loss helpers
# ---------------------------------------------------------------------------------------------
def test_readout_dynamics_and_state_conventions():
    out = LIReadout(3, dt=1.0, tau_v=10.0, v_rest=-1.0).to(D)
    assert out.batch_size is None and out.v is None and out.spikes is None
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=D)
    v1 = out(x)
    torch.testing.assert_close(v1, -1.0 + x)
    d = torch.exp(torch.tensor(-0.1, dtype=D))
    v2 = out(x)
    torch.testing.assert_close(v2, -1.0 + x * d + x)
    assert out.batch_size == 2
    out.reset_state()
    torch.testing.assert_close(out.v, torch.full((2, 3), -1.0, dtype=D))
    out(torch.zeros(5, 3, dtype=D))  # batch change re-creates the state
    assert out.batch_size == 5
    assert set(out.state_dict()) == {"tau_v", "v_rest"}
    integ = LIReadout(2, tau_v=float("inf"))
    for _ in range(3):
        v = integ(torch.ones(1, 2))
    torch.testing.assert_close(v, torch.full((1, 2), 3.0))
    with pytest.raises(ValueError, match="tau_v"):
        LIReadout(2, tau_v=0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        integ(torch.ones(1, 3))
    assert "shape=(3,)" in repr(out)


def test_spike_count_loss():
    spikes = torch.zeros(4, 2, 3)
    spikes[:, 0, 1] = 1.0  # sample 0: class 1 fires 4 times
    spikes[:2, 1, 2] = 1.0  # sample 1: class 2 fires twice
    labels = torch.tensor([1, 0])
    counts = spikes.sum(0)
    torch.testing.assert_close(
        spike_count_loss(spikes, labels), torch.nn.functional.cross_entropy(counts, labels)
    )
    # mse: correct class 0.75 * 4 = 3, others 0.25 * 4 = 1
    wanted = torch.tensor([[1.0, 3.0, 1.0], [3.0, 1.0, 1.0]])
    got = spike_count_loss(spikes, labels, "mse", correct_rate=0.75, incorrect_rate=0.25)
    torch.testing.assert_close(got, ((counts - wanted) ** 2).mean())
    torch.testing.assert_close(spike_count_loss(spikes, wanted, "mse"), got)
    with pytest.raises(ValueError, match="loss"):
        spike_count_loss(spikes, labels, "hinge")
    with pytest.raises(ValueError, match=r"\(T, B, C\)"):
        spike_count_loss(spikes[0], labels)
    with pytest.raises(ValueError, match="labels"):
        spike_count_loss(spikes, torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="mse"):
        spike_count_loss(spikes, wanted)
    with pytest.raises(ValueError, match="correct_rate"):
        spike_count_loss(spikes, labels, "mse", correct_rate=2.0)


def test_membrane_loss():
    torch.manual_seed(7)
    v = torch.randn(5, 3, 4, requires_grad=True)
    y = torch.tensor([0, 3, 2])
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(membrane_loss(v, y), ce(v.amax(0), y))
    torch.testing.assert_close(membrane_loss(v, y, "mean"), ce(v.mean(0), y))
    torch.testing.assert_close(membrane_loss(v, y, "last"), ce(v[-1], y))
    membrane_loss(v, y).backward()
    assert v.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reduce"):
        membrane_loss(v, y, "min")
    with pytest.raises(TypeError, match="labels"):
        membrane_loss(v, y.float())


# ---------------------------------------------------------------------------------------------
# multi-step BPTT: the fused forward/backward kernels against an independent reference loop
# ---------------------------------------------------------------------------------------------
class _GradOfSquare:
    """A user surrogate with a ``grad`` method the kernels do not know (``grad`` runs in torch)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return FastSigmoid(0.7)(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return FastSigmoid(0.7).grad(x)


def _reference_lif_loop(x, v, trace, lif, surrogate, detach_reset):
    """The LIF dynamics of the docs written out with torch operations and the product-form reset
    ``(1 - s) v + s v_reset`` (exact forward value), independent of pysnn's step code."""
    decay = torch.exp(-lif.dt / lif.tau_v)
    tdecay = torch.exp(-lif.dt / lif.tau_trace)
    n_ref = torch.round(lif.refrac / lif.dt)
    r = torch.zeros_like(v)
    spikes = []
    for t in range(x.shape[0]):
        v = lif.v_rest + (v - lif.v_rest) * decay
        v = v + torch.where(r > 0, torch.zeros_like(v), x[t])
        s = surrogate(v - lif.thresh)
        if detach_reset:
            v = torch.where(s > 0, lif.v_reset.expand_as(v), v)
        else:
            v = (1 - s) * v + s * lif.v_reset
        r = torch.where(s > 0, n_ref.expand_as(r), (r - 1).clamp_min(0))
        if lif.trace_mode == "additive":
            trace = trace * tdecay + lif.trace_scale * s
        else:
            trace = torch.where(s > 0, lif.trace_scale.expand_as(trace), trace * tdecay)
        spikes.append(s)
    return torch.stack(spikes), v, trace


@pytest.mark.parametrize(
    "surrogate",
    [FastSigmoid(2.0), ArcTan(1.5), pysnn.surrogate.Sigmoid(4.0), pysnn.surrogate.Triangle(0.8)]
    + [pysnn.surrogate.StraightThrough(0.5), _GradOfSquare()],
    ids=["fast_sigmoid", "arctan", "sigmoid", "triangle", "straight_through", "user"],
)
@pytest.mark.parametrize(
    "refrac, trace_mode, detach_reset",
    [(0.0, "additive", False), (3.0, "reset", False), (2.0, "additive", True)],
)
def test_multistep_bptt_matches_reference(surrogate, refrac, trace_mode, detach_reset):
    """``forward_multistep`` under autograd (one fused Function over T steps on the CPU kernels)
    gives the spikes, state and gradients (input, initial v, initial trace) of the reference
    loop, with per-neuron constants, refractoriness, both trace modes and both reset modes."""
    torch.manual_seed(11)
    n_steps, batch, n = 25, 3, 6
    lif = LIFNeuron(
        n,
        thresh=torch.linspace(0.8, 1.2, n),
        v_rest=0.1,
        v_reset=-0.2,
        tau_v=torch.linspace(5.0, 15.0, n),
        refrac=refrac,
        tau_trace=7.0,
        trace_scale=0.5,
        trace_mode=trace_mode,
        surrogate=surrogate,
        detach_reset=detach_reset,
    ).to(D)
    x = (torch.randn(n_steps, batch, n, dtype=D) * 0.5 + 0.35).requires_grad_()
    v0 = torch.rand(batch, n, dtype=D, requires_grad=True)
    t0 = torch.rand(batch, n, dtype=D, requires_grad=True)
    weights = torch.randn(n_steps, batch, n, dtype=D)

    lif(torch.zeros(batch, n, dtype=D))  # create the state, then start from (v0, t0)
    lif.v, lif.trace = v0 * 1.0, t0 * 1.0
    s = lif.forward_multistep(x)
    if pysnn.native.available():
        assert type(s.grad_fn).__name__ == "_LIFStepsBackward"  # the fused path ran
    loss = (s * weights).sum() + lif.v.square().sum() + (lif.trace * 0.3).sum()
    grads = torch.autograd.grad(loss, (x, v0, t0))

    s_ref, v_ref, t_ref = _reference_lif_loop(x, v0, t0, lif, surrogate, detach_reset)
    loss_ref = (s_ref * weights).sum() + v_ref.square().sum() + (t_ref * 0.3).sum()
    grads_ref = torch.autograd.grad(loss_ref, (x, v0, t0))

    assert s.sum() > 10 and (s == s_ref).all()
    torch.testing.assert_close(lif.v, v_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lif.trace, t_ref, rtol=1e-12, atol=1e-12)
    assert grads_ref[0].abs().sum() > 0 and grads_ref[1].abs().sum() > 0
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_multistep_bptt_expanded_spike_gradient(reduce):
    """A loss that sums or averages the spikes hands the backward pass one value expanded to
    ``(T, B, n)`` (all strides 0), which the fused kernel reads as one value: the gradients are
    the reference loop's, and those of the same gradient passed as a full tensor."""
    torch.manual_seed(12)
    lif = unit_lif(7, FastSigmoid(3.0), refrac=2.0).to(D)
    x = (torch.randn(15, 2, 7, dtype=D) * 0.5 + 0.4).requires_grad_()

    def loss_of(s):
        return 0.7 * (s.sum() if reduce == "sum" else s.mean())

    s = lif.forward_multistep(x)
    (g,) = torch.autograd.grad(loss_of(s), x)
    lif.reset_state()
    s = lif.forward_multistep(x)
    full = torch.full_like(s, 0.7 if reduce == "sum" else 0.7 / s.numel())
    (g_full,) = torch.autograd.grad(s, x, full)
    s_ref, _, _ = _reference_lif_loop(
        x, torch.zeros(2, 7, dtype=D), torch.zeros(2, 7, dtype=D), lif, lif.surrogate, False
    )
    (g_ref,) = torch.autograd.grad(loss_of(s_ref), x)
    assert s.sum() > 5 and g_ref.abs().sum() > 0
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(g, g_full)


def test_multistep_bptt_float32_and_weight_gradient():
    """Linear + LIF over T steps in float32, multi-step mode (one product, fused LIF): the weight
    gradient equals that of the step-by-step loop up to float32 summation order."""
    torch.manual_seed(5)
    fc = Linear(40, 30)
    lif = unit_lif(30, FastSigmoid(5.0), refrac=1.0)
    x = (torch.rand(20, 4, 40) < 0.4).float() * 2.0

    out = lif.forward_multistep(fc.forward_multistep(x))
    (g_multi,) = torch.autograd.grad(out.sum() + lif.v.sum(), fc.weight)
    lif.reset_state(), fc.reset_state()
    out_step = torch.stack([lif(fc(x[t])) for t in range(20)])
    (g_step,) = torch.autograd.grad(out_step.sum() + lif.v.sum(), fc.weight)
    assert (out == out_step).all() and out.sum() > 20
    torch.testing.assert_close(g_multi, g_step, rtol=1e-4, atol=1e-5)


def test_multistep_bptt_learned_constant_steps_through():
    """A learned constant (``nn.Parameter``) needs gradients the fused kernels do not compute: the
    steps run one by one, and ``tau_v`` gets its gradient."""
    lif = unit_lif(5, FastSigmoid(1.0), tau_v=torch.nn.Parameter(torch.full((5,), 8.0)))
    x = torch.rand(6, 2, 5, requires_grad=True)
    s = lif.forward_multistep(x)
    assert type(s.grad_fn).__name__ == "StackBackward0"
    (s.sum() + lif.v.sum()).backward()
    assert lif.tau_v.grad is not None and lif.tau_v.grad.abs().sum() > 0


@pytest.mark.parametrize("propagation", ["event", "auto"])
def test_event_driven_weight_gradient_matches_dense(propagation):
    """Sparse input spikes under autograd: the event-driven product and its event-driven weight
    gradient (fused kernels) equal the dense product's, single- and multi-step, in double."""
    torch.manual_seed(9)
    x = (torch.rand(30, 3, 50, dtype=D) < 0.05).to(D)
    results = []
    for mode in (propagation, "dense"):
        torch.manual_seed(1)
        fc = Linear(50, 20, propagation=mode).to(D)
        lif = unit_lif(20, FastSigmoid(2.0), tau_v=5.0).to(D)
        with torch.no_grad():
            fc.weight.mul_(4.0)
        out = lif.forward_multistep(fc.forward_multistep(x))
        (g_multi,) = torch.autograd.grad(out.sum() + lif.v.sum(), fc.weight)
        lif.reset_state(), fc.reset_state()
        out_step = torch.stack([lif(fc(x[t])) for t in range(30)])
        (g_step,) = torch.autograd.grad(out_step.sum() + lif.v.sum(), fc.weight)
        results.append((out, g_multi, out_step, g_step))
    (out_e, g_e, step_e, gs_e), (out_d, g_d, step_d, gs_d) = results
    assert out_d.sum() > 5 and (out_e == out_d).all() and (step_e == step_d).all()
    assert g_d.abs().sum() > 0
    for g in (g_e, gs_e, gs_d):
        torch.testing.assert_close(g, g_d, rtol=1e-10, atol=1e-12)


def test_linear_event_gradient_against_matmul():
    """``linear_event`` with a weight that needs a gradient: value and weight gradient equal those
    of ``x @ weight.t()`` (graded, sparse input), and the gradient keeps the weight's layout."""
    from pysnn.functional.linear import linear_event

    torch.manual_seed(2)
    weight = torch.randn(7, 13, dtype=D, requires_grad=True)
    x = (torch.rand(300, 13, dtype=D) < 0.2) * torch.rand(300, 13, dtype=D)
    out, active = linear_event(x, weight.t())
    assert active == int((x != 0).sum())
    grad_out = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * grad_out).sum(), weight)
    reference = weight.detach().clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(((x @ reference.t()) * grad_out).sum(), reference)
    torch.testing.assert_close(out, x @ weight.detach().t(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


def test_surrogate_mnist_example_modes_agree():
    """``examples/mnist_surrogate.py``: its layer-by-layer run (multi-step, fused BPTT) and its
    step loop give the same readout and the same gradients, and a short training run learns."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "mnist_surrogate.py"
    spec = importlib.util.spec_from_file_location("mnist_surrogate_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    torch.manual_seed(0)
    net = example.SpikingMLP([64, 32])
    images, labels = torch.rand(16, 784), torch.randint(0, 10, (16,))
    grads = []
    for step_loop in (False, True):
        v, rate = net.run(images, 6, step_loop)
        loss = membrane_loss(v, labels, "mean")
        grads.append((v.detach(), rate, torch.autograd.grad(loss, list(net.parameters()))))
    (v_a, rate_a, g_a), (v_b, rate_b, g_b) = grads
    assert 0 < float(rate_a) < 1
    torch.testing.assert_close(v_a, v_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rate_a, rate_b)
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    accuracy = example.main(
        ["--epochs", "1", "--n-train", "600", "--n-test", "300", "--steps", "4", "--quiet"]
        + ["--hidden", "128", "--data-dir", "/nonexistent-use-the-bundled-sample"]
    )
    assert accuracy > 0.5  # ten classes: chance is 0.1


@pytest.mark.parametrize("propagation", ["auto", "event"])
def test_per_synapse_delay_input_gradient_at_zero_inputs(propagation):
    """With per-synapse delays the input's gradient is needed at its zero entries too: every
    propagation mode gives the dense mode's gradient (found by the sparse-connectivity work)."""
    torch.manual_seed(4)
    x = ((torch.rand(8, 2, 6, dtype=D) < 0.3).to(D)).requires_grad_()
    grads = []
    for mode in (propagation, "dense"):
        torch.manual_seed(0)
        fc = Linear(6, 3, delay=torch.randint(0, 3, (3, 6)).to(D), propagation=mode).to(D)
        out = torch.stack([fc(x[t]) for t in range(8)])
        (g,) = torch.autograd.grad((out * torch.arange(3, dtype=D)).sum(), x)
        grads.append(g)
    assert (grads[1][x.detach() == 0] != 0).any()
    torch.testing.assert_close(grads[0], grads[1])


def test_multistep_bptt_retain_graph_and_reused_buffers():
    """The buffers saved for a backward pass are reused by later forwards only once the graph
    has let them go: a graph kept with ``retain_graph`` gives the same gradient again after other
    sequences ran forward and backward in between."""
    torch.manual_seed(6)
    lif = unit_lif(8, FastSigmoid(2.0), refrac=2.0)
    x = (torch.rand(12, 3, 8) * 1.5).requires_grad_()
    lif.reset_state()
    kept = lif.forward_multistep(x).sum()
    (g1,) = torch.autograd.grad(kept, x, retain_graph=True)
    for _ in range(3):  # other sequences of the same shape, forward and backward
        lif.reset_state()
        other = (torch.rand(12, 3, 8) * 1.5).requires_grad_()
        lif.forward_multistep(other).sum().backward()
    (g2,) = torch.autograd.grad(kept, x)
    assert g1.abs().sum() > 0
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


@pytest.mark.parametrize("multistep", [False, True])
def test_learned_trace_constant_gets_its_gradient(multistep):
    """A learned trace constant (``tau_trace`` as ``nn.Parameter``) needs a gradient the fused
    kernels do not compute: the torch path runs and the gradient matches finite differences."""
    x = torch.tensor([[[1.5, 0.2]], [[0.0, 1.4]], [[1.2, 0.0]]], dtype=D)

    def final_trace(tau: torch.Tensor) -> torch.Tensor:
        lif = unit_lif(2, FastSigmoid(1.0), tau_trace=tau).to(D)
        if multistep:
            lif.forward_multistep(x)
        else:
            for t in range(3):
                lif(x[t])
        return lif.trace.sum()

    tau = torch.nn.Parameter(torch.tensor(4.0, dtype=D))
    (grad,) = torch.autograd.grad(final_trace(tau), tau)
    eps = 1e-6
    with torch.no_grad():
        numeric = (final_trace(tau + eps) - final_trace(tau - eps)) / (2 * eps)
    assert grad != 0
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-9)


def test_unroll_uses_forward_multistep_with_the_same_values():
    """``Unroll`` calls a network's ``forward_multistep`` (layer by layer) when it has one, with
    the values and gradients of its step loop (``multistep=False``)."""
    from pysnn.multistep import Unroll

    class Layered(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc = Linear(6, 5)
            self.lif = unit_lif(5, FastSigmoid(2.0), refrac=1.0)
            self.out = LIReadout(5)
            self.add_layer("hidden", self.fc, self.lif)

        def forward(self, x):
            return self.out(self.lif(self.fc(x)))

        def forward_multistep(self, x):
            return self.out.forward_multistep(
                self.lif.forward_multistep(self.fc.forward_multistep(x))
            )

    torch.manual_seed(8)
    net = Layered().to(D)
    x = (torch.rand(9, 2, 6, dtype=D) < 0.5).to(D) * 2.0
    results = []
    for multistep in (True, False):
        out = Unroll(net, multistep=multistep)(x)
        results.append((out, torch.autograd.grad(out.square().sum(), net.fc.weight)[0]))
    (out_a, g_a), (out_b, g_b) = results
    assert out_a.shape == (9, 2, 5) and g_a.abs().sum() > 0
    torch.testing.assert_close(out_a, out_b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_a, g_b, rtol=1e-10, atol=1e-12)
