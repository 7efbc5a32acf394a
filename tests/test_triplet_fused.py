"""Triplet STDP (pysnn.learning.TripletSTDP) in the fused C loop of run_layers and as the rule's
one-sample step on the kernel (from its ``delta``): bit for bit the step loop whose rule runs its torch operations (weights
and their event copy, the rule's traces, neurons, synapses, spikes), in float32 and float64, for
both interactions and all four amplitudes; fallbacks where the fused kernel does not apply.

(The reference steps the modules with the C kernels on, as the other tests of the fused loop do,
and only the rule with them off: a connection's event-driven sum and torch's matrix product
round differently, so a loop with every kernel off is not bit for bit any fused path.)"""

import math

import pytest
import torch

import pysnn
from pysnn import native
from pysnn.connection import Linear
from pysnn.engine import explain
from pysnn.learning import STDP, TripletSTDP, fused_update_reason
from pysnn.models import DiehlCook2015
from pysnn.multistep import Unroll, run_layers
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron

FUSED = native.available()
TRACES = ("r1", "r2", "o1", "o2")
#: (of the small network's weights in mV: large enough to take some weights to the bounds)
AMPLITUDES = {"a2_plus": 0.4, "a3_plus": 0.6, "a2_minus": 0.3, "a3_minus": 0.2}
TAUS = {"tau_plus": 16.8, "tau_minus": 33.7, "tau_x": 101.0, "tau_y": 125.0}


@pytest.fixture
def triplet_steps(monkeypatch):
    """How many one-sample steps ran through the triplet kernel's Python entry (the rule's
    ``delta``; the fused network loop calls the C step directly)."""
    calls = []
    original = native.TripletKernel.__call__

    def counted(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(native.TripletKernel, "__call__", counted)
    return calls


def bits(t):
    """A floating-point tensor's bit patterns (tells -0 from +0); other tensors as they are."""
    if not t.is_floating_point():
        return t
    return t.detach().contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def assert_same(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert torch.equal(bits(a), bits(b)), what


def assert_same_rule(a, b):
    ga, gb = a.groups[0], b.groups[0]
    assert ga.state.keys() == gb.state.keys()
    for name in ga.state:
        assert_same(ga.state[name], gb.state[name], name)
    assert ga._step == gb._step


def assert_same_modules(a, b):
    """Every buffer and parameter of two module trees, bit for bit, and the event copies."""
    for (name, x), (_, y) in zip(a.named_modules(), b.named_modules()):
        for key, value in x._buffers.items():
            if value is not None:
                assert_same(value, y._buffers[key], f"{name}.{key}")
        for key, value in x._parameters.items():
            assert_same(value, y._parameters[key], f"{name}.{key}")
        copy_x, copy_y = getattr(x, "_copy", None), getattr(y, "_copy", None)
        if copy_x is not None and copy_y is not None:
            current_x, current_y = copy_x.current(x.weight), copy_y.current(y.weight)
            if current_x is not None and current_y is not None:
                assert_same(current_x, current_y, f"{name} event copy")
            if current_y is not None:
                assert_same(current_y, y.weight.t().contiguous(), f"{name} copy of the weight")


# ---------------------------------------------------------------- Diehl & Cook with the code's rule
def digits(n, steps=200, seed=0, rate=0.12):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 784, generator=gen) * rate
    return [(torch.rand(steps, 1, 784, generator=gen) < base[i]).float() for i in range(n)]


def torch_rule(step, rule):
    """``step`` (one step of the modules, then ``rule.step()``) with the rule's step on its
    torch operations: the reference the fused rule must match."""

    def stepped(x):
        enabled, rule.enabled = rule.enabled, False
        try:
            out = step(x)
        finally:
            rule.enabled = enabled
        with native.enabled(False):
            rule.step()
        return out

    return stepped


def loop_run(net, spikes, reference=False):
    """DiehlCook2015.run as T calls of forward (with ``reference``, its rule through torch)."""
    step = torch_rule(net, net.stdp) if reference else net
    with torch.no_grad():
        net.reset_state()
        counts = torch.zeros(spikes.shape[1], net.n_neurons, dtype=net.fc.weight.dtype)
        for x in spikes:
            counts += step(x)
        if net.training:
            net.relax_theta(spikes.shape[0] * net.dt)
            net.fc.normalize(net.norm)
    return counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_diehl_cook_triplet_run_is_the_step_loop_bit_for_bit(dtype, fused_calls, triplet_steps):
    """DiehlCook2015(synapses="conductance", rule="triplet").run: one fused call per run of
    steps, the rule inside it; everything as T calls of forward with the rule on its torch
    operations, and as T calls of forward with the rule on its kernel."""
    torch.manual_seed(3)
    nets = [
        DiehlCook2015(n_neurons=30, synapses="conductance", rule="triplet").to(dtype)
        for _ in range(3)
    ]
    reference, stepped, fused = nets
    for net in nets[1:]:
        net.load_state_dict(reference.state_dict())
    initial = reference.fc.weight.detach().clone()
    for spikes in digits(4, seed=4):
        spikes = spikes.to(dtype)
        expected = loop_run(reference, spikes, reference=True)
        assert torch.equal(loop_run(stepped, spikes), expected)
        before = len(fused_calls)
        assert torch.equal(fused.run(spikes), expected)
        for net in (stepped, fused):
            assert_same_modules(reference, net)
            assert_same_rule(reference.stdp, net.stdp)
        if FUSED:  # the digit ran in fused calls, the rule in them (not one step from Python)
            assert sum(done for done, _ in fused_calls[before:]) > 0.9 * spikes.shape[0]
    assert expected.sum() > 0 and reference.exc.theta.sum() != 0
    assert not torch.equal(reference.fc.weight, initial)
    assert all(reference.stdp.groups[0].state[name].abs().sum() > 0 for name in TRACES)
    if FUSED:  # the step loop with the kernels on ran the rule's steps on the kernel
        assert len(triplet_steps) > 0.9 * 4 * 200
    # eval mode: no learning, the rule's state frozen, on every path
    for net in nets:
        net.eval()
    spikes = digits(1, seed=5)[0].to(dtype)
    expected = loop_run(reference, spikes, reference=True)
    assert torch.equal(fused.run(spikes), expected)
    assert_same_modules(reference, fused)
    assert fused.stdp.r1 is None  # (reset before the digit, and no step since)


def test_diehl_cook_triplet_batch_of_two_learns_through_the_step_loop(fused_calls):
    """At batch 2 the rule is not fused (one sample at a time only): run_layers steps the
    modules, with the loop's values."""
    torch.manual_seed(6)
    a = DiehlCook2015(n_neurons=20, synapses="conductance", rule="triplet")
    b = DiehlCook2015(n_neurons=20, synapses="conductance", rule="triplet")
    b.load_state_dict(a.state_dict())
    spikes = torch.cat(digits(2, steps=60, seed=7), dim=1)
    expected = loop_run(a, spikes, reference=True)
    assert torch.equal(b.run(spikes), expected)
    assert_same_modules(a, b)
    assert_same_rule(a.stdp, b.stdp)
    assert fused_calls == []


# ---------------------------------------------------------------- a small network, every amplitude
def small_network(dtype, interaction, bounds=(0.0, 40.0), **kw):
    """Input -> Linear (mV) -> LIF with triplet STDP on the Linear."""
    torch.manual_seed(8)
    inp = Input(40)
    lif = LIFNeuron(12, thresh=-55.0, tau_v=20.0, refrac=2.0)
    fc = Linear(40, 12, wmin=bounds[0], wmax=bounds[1], init="uniform", init_kwargs={"b": 24.0})
    fc.propagation = "event"
    modules = torch.nn.ModuleList([inp, lif, fc]).to(dtype)
    modules.requires_grad_(False)
    kw = {**AMPLITUDES, **TAUS, **kw}
    return modules, TripletSTDP(connection=fc, pre=inp, post=lif, interaction=interaction, **kw)


def layers_of(modules):
    inp, lif, fc = modules
    return [(lif, [(fc, inp)])]


def run(modules, rule, spikes):
    """run_layers of the small network; the LIF's spikes."""
    with torch.no_grad():
        return run_layers(modules[0], layers_of(modules), spikes, [rule], record=[modules[1]])[0]


def loop(modules, rule, spikes, reference=True):
    """The step loop of the small network (with ``reference``, the rule through torch)."""
    inp, lif, fc = modules

    def step(x):
        out = lif(fc(inp(x)))
        rule.step()
        return out

    step = torch_rule(step, rule) if reference else step
    with torch.no_grad():
        return torch.stack([step(x) for x in spikes])


def small_spikes(steps, seed, rate=0.25):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, 1, 40, generator=gen) < rate).float()


@pytest.mark.parametrize("bounds", [(0.0, 40.0), (-math.inf, math.inf)])
@pytest.mark.parametrize("interaction", ["all-to-all", "nearest"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triplet_small_network_bit_for_bit(dtype, interaction, bounds, fused_calls):
    """All four amplitudes non-zero, both interactions, bounded and unbounded weights, several
    samples with a reset between them: run_layers (fused) and the step loop with the rule on
    its kernel leave what the step loop with the rule on its torch operations leaves."""
    nets = [small_network(dtype, interaction, bounds) for _ in range(3)]
    (ref, ref_rule), (step, step_rule), (fused, fused_rule) = nets
    for sample in range(3):
        spikes = small_spikes(150, seed=10 + sample).to(dtype)
        for modules, rule in nets:
            for module in modules:
                module.reset_state()
            rule.reset_state()
        expected = loop(ref, ref_rule, spikes)
        got_step = loop(step, step_rule, spikes, reference=False)
        before = len(fused_calls)
        got = run(fused, fused_rule, spikes)
        assert torch.equal(got_step, expected) and torch.equal(got, expected)
        for modules, rule in nets[1:]:
            assert_same_modules(ref, modules)
            assert_same_rule(ref_rule, rule)
        if FUSED:
            assert sum(done for done, _ in fused_calls[before:]) > 0.9 * spikes.shape[0]
    assert expected.sum() > 5
    weight = ref[2].weight
    if math.isfinite(bounds[0]):  # the clamp acted
        assert bool(((weight == 0) | (weight == 40)).any())
    else:  # (where it would have)
        assert bool(((weight < 0) | (weight > 40)).any())


@pytest.mark.filterwarnings("ignore:Linear. weight values outside")
def test_triplet_out_of_bounds_and_negative_zero_weights(fused_calls):
    """A weight row with a -0 or a value outside [wmin, wmax] (written by the user) changes
    under the dense update even where the rule's change is 0 (clamp, -0 + 0 = +0): the fused
    step updates such rows as torch does."""
    nets = [small_network(torch.float32, "nearest") for _ in range(2)]
    for modules, _ in nets:
        with torch.no_grad():
            modules[2].weight[3, 5] = -0.0
            modules[2].weight[7, :] = 45.0  # above wmax: clamped by the first update
            modules[2].weight[9, 0] = -1.0  # below wmin
    (ref, ref_rule), (fused, fused_rule) = nets
    spikes = small_spikes(120, seed=20, rate=0.1)
    loop(ref, ref_rule, spikes)
    run(fused, fused_rule, spikes)
    assert_same_modules(ref, fused)
    assert_same_rule(ref_rule, fused_rule)
    weight = ref[2].weight
    assert float(weight[7].max()) <= 40.0 and float(weight[9, 0]) >= 0.0
    assert not torch.signbit(weight[3, 5])
    if FUSED:
        assert sum(done for done, _ in fused_calls) > 100


def test_triplet_disabled_rule_is_fused_and_frozen(fused_calls):
    """A rule switched off (enabled=False) does nothing in the fused loop, as in the loop."""
    nets = [small_network(torch.float64, "all-to-all") for _ in range(2)]
    spikes = small_spikes(100, seed=21).double()
    for modules, rule in nets:
        run(modules, rule, spikes[:10])
        rule.enabled = False
    (ref, ref_rule), (fused, fused_rule) = nets
    frozen = dict(ref_rule.groups[0].state)
    weight = ref[2].weight.detach().clone()
    before = len(fused_calls)
    loop(ref, ref_rule, spikes[10:])
    run(fused, fused_rule, spikes[10:])
    assert_same_modules(ref, fused)
    assert_same_rule(ref_rule, fused_rule)
    assert torch.equal(ref[2].weight, weight)
    assert all(ref_rule.groups[0].state[n] is frozen[n] for n in TRACES)
    if FUSED:
        assert sum(done for done, _ in fused_calls[before:]) > 80


def test_triplet_nan_input_stops_with_the_loops_state(fused_calls):
    """With value checks on, a NaN input raises the loop's error after the same steps; the
    rule's traces, the weights and the neurons are those of the steps before."""
    nets = [small_network(torch.float32, "nearest") for _ in range(2)]
    spikes = small_spikes(120, seed=22)
    spikes[70, 0, 5] = float("nan")
    (ref, ref_rule), (fused, fused_rule) = nets
    with pysnn.checks(True):
        with pytest.raises(ValueError, match=r"x contains NaN \(input to Input"):
            loop(ref, ref_rule, spikes)
        with pytest.raises(ValueError, match=r"x contains NaN \(input to Input"):
            run(fused, fused_rule, spikes)
    assert_same_modules(ref, fused)
    assert_same_rule(ref_rule, fused_rule)
    assert ref_rule.groups[0]._step == 70
    if FUSED:  # the kernel found it, before the input's step
        assert fused_calls[-1][1] == 0


def test_triplet_kernel_steps_with_norm_and_two_connections(triplet_steps):
    """A rule with ``norm`` and two trained connections (which the fused loop does not take):
    each single step of each connection runs the kernel from the rule's ``delta``, and weights,
    event copies and traces are the torch operations' bit for bit."""

    def build():
        torch.manual_seed(12)
        inp = Input(40)
        lifs = [LIFNeuron(12, thresh=-55.0, tau_v=20.0, refrac=2.0) for _ in range(2)]
        fcs = [Linear(40, 12, wmin=0.0, wmax=40.0, init="uniform", init_kwargs={"b": 24.0})]
        fcs.append(Linear(40, 12, wmin=0.0, wmax=40.0, init="uniform", init_kwargs={"b": 24.0}))
        for fc in fcs:
            fc.propagation = "event"
        modules = torch.nn.ModuleList([inp, *lifs, *fcs])
        modules.requires_grad_(False)
        pairs = [(fc, inp, lif) for fc, lif in zip(fcs, lifs)]
        rule = TripletSTDP(connections=pairs, norm=150.0, **AMPLITUDES, **TAUS)
        return modules, rule

    def step_of(modules, rule):
        inp, lif_a, lif_b, fc_a, fc_b = modules

        def step(x):
            s = inp(x)
            out = lif_a(fc_a(s)), lif_b(fc_b(s))
            rule.step()
            return torch.cat(out, 1)

        return step

    (ref, ref_rule), (got, got_rule) = build(), build()
    assert "more than one connection" in fused_update_reason(got_rule)
    reference, stepped = torch_rule(step_of(ref, ref_rule), ref_rule), step_of(got, got_rule)
    spikes = small_spikes(60, seed=13)
    with torch.no_grad():
        got_spikes = torch.stack([stepped(x) for x in spikes])
        kernel_steps = len(triplet_steps)
        assert_same(got_spikes, torch.stack([reference(x) for x in spikes]), "spikes")
    assert got_spikes.sum() > 0
    assert_same_modules(ref, got)
    for a, b in zip(ref_rule.groups, got_rule.groups):
        assert a.state.keys() == b.state.keys() and len(a.state) == 4
        for name in a.state:
            assert_same(a.state[name], b.state[name], name)
    for fc in got[3:]:
        torch.testing.assert_close(fc.weight.sum(1), torch.full((12,), 150.0))
    if FUSED:
        assert kernel_steps == 2 * 60


def test_triplet_with_weight_dependence_falls_back_to_the_loop(fused_calls, triplet_steps):
    """Soft bounds are not fused: run_layers and the rule step through torch, with the loop's
    values, and fused_update_reason says why."""
    nets = [small_network(torch.float32, "all-to-all", weight_dependence="soft") for _ in range(2)]
    (ref, ref_rule), (fused, fused_rule) = nets
    assert "weight_dependence='soft'" in fused_update_reason(fused_rule)
    assert fused_update_reason(small_network(torch.float32, "nearest")[1]) == ""
    spikes = small_spikes(80, seed=23)
    expected = loop(ref, ref_rule, spikes)
    assert torch.equal(run(fused, fused_rule, spikes), expected) and expected.sum() > 0
    assert_same_modules(ref, fused)
    assert_same_rule(ref_rule, fused_rule)
    assert fused_calls == [] and triplet_steps == []


# ---------------------------------------------------------------- a user's network, explained
class UserTriplet(SNNNetwork):
    """Input -> Linear -> LIF with triplet STDP stepped in forward, as a user writes it."""

    def __init__(self, **kw):
        super().__init__()
        self.inp = Input(40)
        self.fc = Linear(40, 12, wmin=0.0, wmax=40.0, init="uniform", init_kwargs={"b": 24.0})
        self.fc.propagation = "event"
        self.exc = LIFNeuron(12, thresh=-55.0, tau_v=20.0, refrac=2.0)
        self.stdp = TripletSTDP(
            connection=self.fc, pre=self.inp, post=self.exc, **{**AMPLITUDES, **TAUS, **kw}
        )

    def forward(self, x):
        exc = self.exc(self.fc(self.inp(x)))
        self.stdp.step()
        return exc


def test_explain_and_unroll_of_a_users_triplet_network(fused_calls):
    torch.manual_seed(24)
    a, b = UserTriplet(), UserTriplet()
    b.load_state_dict(a.state_dict())
    x = small_spikes(100, seed=25)
    e = explain(a, x)
    if FUSED:
        assert e.plan == "layers" and e.fused and e.fallbacks == [], e
    else:
        assert e.plan == "layers" and not e.fused
    with torch.no_grad():
        got = Unroll(a)(x)
        expected = torch.stack([torch_rule(b, b.stdp)(step) for step in x])
    assert torch.equal(got, expected) and expected.sum() > 0
    assert_same_modules(b, a)
    assert_same_rule(b.stdp, a.stdp)
    if FUSED:
        assert sum(done for done, _ in fused_calls) > 90
    soft = UserTriplet(weight_dependence="soft")
    e = explain(soft, x)
    assert e.plan == "layers" and not e.fused
    if FUSED:  # (else: no fused kernels at all)
        assert any("weight_dependence='soft'" in why for _, why in e.fallbacks), e


def test_triplet_non_finite_arrival_without_checks(fused_calls):
    """With value checks off a NaN input arrives at the rule: its traces turn NaN, and every
    weight of that input column with them (0 * NaN), on the fused path as in torch."""
    nets = [small_network(torch.float32, "all-to-all") for _ in range(2)]
    spikes = small_spikes(60, seed=26)
    spikes[40, 0, 7] = float("nan")
    (ref, ref_rule), (fused, fused_rule) = nets
    with pysnn.checks(False):
        loop(ref, ref_rule, spikes)
        run(fused, fused_rule, spikes)
    same = dict(rtol=0, atol=0, equal_nan=True)
    for name in TRACES:
        torch.testing.assert_close(
            ref_rule.groups[0].state[name], fused_rule.groups[0].state[name], **same
        )
    weight = ref[2].weight
    torch.testing.assert_close(weight, fused[2].weight, **same)
    assert bool(weight[:, 7].isnan().all()) and not bool(weight[:, :7].isnan().any())
    if FUSED:
        assert sum(done for done, _ in fused_calls) > 50


@pytest.mark.parametrize("kind", ["pair", "triplet"])
def test_one_sample_steps_through_a_shared_delay_on_the_kernel_bit_for_bit(kind, monkeypatch):
    """A connection with a shared delay: each single step of the rule runs the kernel from its
    ``delta`` (the arrivals, and pair STDP's presynaptic trace, read through the delay), bit for
    bit the rule's torch operations. (Pair STDP took such steps through a second, backend-
    selected route to the same kernel; there is one route now.)"""
    kernel_steps = []
    cls = STDP if kind == "pair" else TripletSTDP
    original = cls._fused_step

    def counted(self, g):
        done = original(self, g)
        kernel_steps.append(done)
        return done

    monkeypatch.setattr(cls, "_fused_step", counted)

    def build():
        torch.manual_seed(21)
        inp, lif = Input(40), LIFNeuron(12, thresh=-55.0, tau_v=20.0, refrac=2.0)
        fc = Linear(40, 12, delay=3.0, wmin=0.0, wmax=40.0, init="uniform")
        with torch.no_grad():
            fc.weight.mul_(24.0)
        fc.propagation = "event"
        modules = torch.nn.ModuleList([inp, lif, fc])
        modules.requires_grad_(False)
        if kind == "pair":
            rule = STDP(connection=fc, pre=inp, post=lif, nu=(0.3, 0.5))
        else:
            rule = TripletSTDP(connection=fc, pre=inp, post=lif, **AMPLITUDES, **TAUS)
        return modules, rule

    def step_of(modules, rule):
        inp, lif, fc = modules

        def step(x):
            out = lif(fc(inp(x)))
            rule.step()
            return out

        return step

    (ref, ref_rule), (got, got_rule) = build(), build()
    reference, stepped = torch_rule(step_of(ref, ref_rule), ref_rule), step_of(got, got_rule)
    spikes = small_spikes(60, seed=22)
    with torch.no_grad():
        got_spikes = torch.stack([stepped(x) for x in spikes])
        taken = sum(kernel_steps)
        assert_same(got_spikes, torch.stack([reference(x) for x in spikes]), "spikes")
    assert got_spikes.sum() > 0
    assert not torch.equal(got[2].weight, build()[0][2].weight)  # it learned
    assert_same_modules(ref, got)
    assert_same_rule(ref_rule, got_rule)
    if FUSED:
        assert taken == 60
