"""The engine: a user's step network captured, planned layer-wise over T steps where values only
flow forward, step-wise otherwise; results, state and gradients those of the step loop."""

import pytest
import torch
from torch import nn

from pysnn import native
from pysnn.connection import Connection, Linear
from pysnn.engine import capture, explain, run_sequence
from pysnn.learning import STDP
from pysnn.multistep import Unroll
from pysnn.network import SNNNetwork
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron, Neuron
from pysnn.synapse import ConductanceSynapse


class FeedForward(SNNNetwork):
    """A user's network: one step in forward, a torch module and an elementwise op mixed in."""

    def __init__(self, n_in=30, n=20):
        super().__init__()
        self.inp = Input(n_in)
        self.fc = Linear(n_in, n)
        self.lif = LIFNeuron(n, thresh=1.0, v_rest=0.0, v_reset=0.0, tau_v=10.0, refrac=2.0)
        self.fc2 = nn.Linear(n, 5)
        self.out = LIFNeuron(5, thresh=0.5, v_rest=0.0, v_reset=0.0, tau_v=10.0)

    def forward(self, x):
        h = self.lif(self.fc(self.inp(x)) * 4.0)
        return self.out(torch.relu(self.fc2(h)))


class Recurrent(FeedForward):
    def __init__(self):
        super().__init__()
        self.rec = Linear(20, 20)

    def forward(self, x):  # reads the previous step's spikes: feedback
        current = self.fc(self.inp(x)) * 4.0
        if self.lif.spikes is not None:
            current = current + self.rec(self.lif.spikes)
        return self.lif(current)


class Counting(FeedForward):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


def _spikes(t=25, b=4, n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(t, b, n, generator=g) < 0.3).float()


def _loop(net, x):
    net.reset_state()
    return torch.stack([net(x[t]) for t in range(x.shape[0])])


def _state(net):
    return {k: v.clone() for k, v in net.named_buffers(remove_duplicate=False) if v is not None}


@pytest.mark.parametrize("grad", [False, True])
def test_layerwise_equals_step_loop_with_state(grad):
    torch.manual_seed(0)
    net, x = FeedForward(), _spikes()
    assert explain(net, x).plan == "layer-wise"
    with torch.set_grad_enabled(grad):
        expected = _loop(net, x)
        state = _state(net)
        got = Unroll(net)(x)
    assert expected.sum() > 0
    assert torch.allclose(got, expected) and torch.equal(got, expected)
    for name, value in _state(net).items():
        assert torch.equal(value, state[name]), name


def test_layerwise_gradients_equal_step_loop():
    torch.manual_seed(0)
    net, x = FeedForward(), _spikes()
    _loop(net, x).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    Unroll(net)(x).sum().backward()
    for p, e in zip(net.parameters(), expected):
        assert e.abs().sum() > 0
        assert torch.allclose(p.grad, e, rtol=1e-5, atol=1e-6)


def test_explain_fused_network_and_backends():
    e = explain(FeedForward(), _spikes())
    assert e.fused and e.fallbacks == []
    how = {p.name: p.how for p in e.parts}
    assert how == {"inp": "block", "fc": "fused", "lif": "fused", "fc2": "block", "out": "fused"}
    assert e.backends["fc2"] == "torch"
    assert "inp" in str(e)


def test_explain_hook_falls_back_and_names_it():
    net, x = FeedForward(), _spikes()
    seen = []
    net.lif.register_forward_hook(lambda m, i, o: seen.append(o))
    e = explain(net, x)
    assert not e.fused
    assert ("lif", "a forward hook must see every step") in e.fallbacks
    out = Unroll(net)(x)
    assert len(seen) == x.shape[0]  # the hook saw every step
    assert torch.equal(out, _loop(net, x))


def test_a_hook_on_the_network_itself_sees_every_step():
    """A forward (pre-)hook of the network is called once per step by Unroll, as by the loop
    (the fused plans never call the network's forward: they must not be used)."""
    for register in ("register_forward_hook", "register_forward_pre_hook"):
        net, x = FeedForward(), _spikes()
        assert explain(net, x).fused  # without the hook: one fused plan
        seen = []
        getattr(net, register)(lambda m, *args: seen.append(1))
        e = explain(net, x)
        assert not e.fused and e.plan == "step-wise"
        assert ("FeedForward", "a forward hook of the network must see every step") in e.fallbacks
        seen.clear()
        out = Unroll(net)(x)
        assert len(seen) == x.shape[0]
        assert torch.equal(out, _loop(net, x))


def test_feedback_is_stepped_as_written():
    torch.manual_seed(1)
    net, x = Recurrent(), _spikes()
    e = explain(net, x)
    assert e.plan == "step-wise"
    assert any(where == "lif.spikes" for where, _ in e.fallbacks)
    assert torch.equal(Unroll(net)(x), _loop(net, x))


def test_attribute_changed_by_the_step_is_refused_and_counted():
    net, x = Counting(), _spikes(t=7)
    e = explain(net, x)
    assert e.plan == "step-wise" and "calls" in e.fallbacks[0][1]
    Unroll(net)(x)
    assert net.calls == 7


def test_learning_rule_in_training_is_stepped():
    class Plastic(FeedForward):
        def __init__(self):
            super().__init__()
            self.stdp = STDP(self.fc, self.inp, self.lif, nu=(1e-3, 1e-3))

        def forward(self, x):
            s = super().forward(x)
            self.stdp.step()
            return s

    net = Plastic()
    e = explain(net, _spikes())
    assert e.plan == "step-wise" and not e.fused


def test_training_batchnorm_is_stepped_eval_is_layerwise():
    class Norm(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc, self.bn, self.lif = nn.Linear(30, 8), nn.BatchNorm1d(8), LIFNeuron(8)

        def forward(self, x):
            return self.lif(self.bn(self.fc(x)) * 20.0)

    net, x = Norm(), _spikes()
    assert explain(net, x).plan == "step-wise"
    net.eval()
    assert explain(net, x).plan == "layer-wise"
    with torch.no_grad():
        assert torch.equal(Unroll(net)(x), _loop(net, x))


def test_user_neuron_is_stepped_inside_a_layerwise_plan():
    class MyLIF(Neuron):
        def __init__(self, shape, *, tau_v=10.0, thresh=1.0, **kwargs):
            super().__init__(shape, **kwargs)
            self.register_constant("tau_v", tau_v, positive=True)
            self.register_constant("thresh", thresh)
            self.register_state("v", 0.0)

        def step(self, x):
            self.v = self.v * torch.exp(-self.dt / self.tau_v) + x
            s = self.fire(self.v - self.thresh)
            self.v = self.v * (1 - s)
            return s

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = Linear(30, 10), MyLIF(10)

        def forward(self, x):
            return self.lif(self.fc(x) * 3.0)

    net, x = Net(), _spikes()
    e = explain(net, x)
    assert e.plan == "layer-wise"
    if native.available():  # a kernel generated from MyLIF.step runs all T steps
        assert e.fused and e.backends["lif"] == "c-generated"
    else:
        assert not e.fused and "MyLIF.step" in e.fallbacks[0][1]
    with torch.no_grad():
        assert torch.equal(Unroll(net)(x), _loop(net, x))


def test_lif_subclass_with_own_step_is_not_bypassed():
    class Noisy(LIFNeuron):
        def step(self, x):
            return super().step(x * 2.0)

    x = torch.full((30, 2, 4), 3.0)
    with torch.no_grad():
        a, b = Noisy(4), Noisy(4)
        loop = torch.stack([a(x[t]) for t in range(30)])
        assert torch.equal(b.forward_multistep(x), loop)


def test_capture_leaves_the_network_unchanged_and_replans_on_change():
    net, x = FeedForward(), _spikes()
    with torch.no_grad():
        net(x[0])
    before = _state(net)
    program = capture(net, x[0])
    assert program.captured
    assert set(program.modules) >= {"inp", "fc", "lif", "fc2", "out"}
    for name, value in _state(net).items():
        assert torch.equal(value, before[name])
    unroll = Unroll(net)
    with torch.no_grad():
        unroll(x)
        net.out = LIFNeuron(5, thresh=100.0)  # a new module: the plan is made again
        assert unroll(x).sum() == 0


def test_run_sequence_and_bad_input():
    net, x = FeedForward(), _spikes()
    with torch.no_grad():
        expected = _loop(net, x)
        net.reset_state()
        assert torch.equal(run_sequence(net, x), expected)
    with pytest.raises(ValueError, match="time-first"):
        run_sequence(net, x[0, 0])
    with pytest.raises(ValueError, match=r"\(T, B, \.\.\.\)"):
        explain(net, x[0, 0])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        explain(lambda x: x, x)


def test_to_nir_of_a_users_network_traces_its_edges():
    from pysnn.nir import from_nir, to_nir

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            one = {"init": "constant", "init_kwargs": {"val": 1.0}}
            self.fc1, self.lif1 = Linear(10, 8, **one), LIFNeuron(8, refrac=0.0, thresh=-63.0)
            self.fc2, self.lif2 = Linear(8, 4, **one), LIFNeuron(4, refrac=0.0, thresh=-64.0)
            self.rec = Linear(4, 4)

        def forward(self, x):
            c = self.fc2(self.lif1(self.fc1(x)))
            if self.lif2.spikes is not None:
                c = c + self.rec(self.lif2.spikes)
            return self.lif2(c)

    torch.manual_seed(0)
    net = Net()
    graph = to_nir(net, sample=torch.zeros(1, 10))
    assert set(graph.edges) == {
        ("input", "fc1"),
        ("fc1", "lif1"),
        ("lif1", "fc2"),
        ("fc2", "lif2"),
        ("lif2", "rec"),
        ("rec", "lif2"),
        ("lif2", "output"),
    }
    imported = from_nir(graph)
    x = (torch.rand(40, 2, 10, generator=torch.Generator().manual_seed(0)) < 0.5).float() * 4
    with torch.no_grad():
        expected = torch.stack([net(x[t]) for t in range(40)])
        got = torch.stack([imported(x[t]) for t in range(40)])
    assert expected.sum() > 0 and torch.equal(got, expected)

    class Scaled(Net):
        def forward(self, x):
            return self.lif1(self.fc1(x) * 2.0)

    with pytest.raises(ValueError, match="NIR cannot express"):
        to_nir(Scaled(), sample=torch.zeros(1, 10))
    with pytest.raises(ValueError, match="sample="):
        to_nir(Net())


class UserDiehlCook(SNNNetwork):
    """Diehl & Cook (2015) as a user writes it: lateral inhibition read from the step before,
    adaptive thresholds, STDP stepped in forward."""

    def __init__(self, n=12, n_in=40):
        super().__init__()
        self.inp = Input(n_in)
        self.fc = Linear(n_in, n, wmin=0.0, wmax=1.0, init="uniform", init_kwargs={"b": 0.3})
        self.exc = AdaptiveLIFNeuron(
            n, thresh=-52.0, v_rest=-65.0, v_reset=-65.0, tau_v=100.0, refrac=5.0,
            theta_plus=0.05, tau_theta=1e7, theta_shared=True,
        )  # fmt: skip
        self.inh = LIFNeuron(n, thresh=-40.0, v_rest=-60.0, v_reset=-45.0, tau_v=10.0, refrac=2.0)
        self.e2i, self.i2e = Linear(n, n), Linear(n, n)
        with torch.no_grad():
            self.e2i.weight.copy_(22.5 * torch.eye(n))
            self.i2e.weight.copy_(-120.0 * (1 - torch.eye(n)))
        self.stdp = STDP(connection=self.fc, pre=self.inp, post=self.exc, nu=(1e-4, 1e-2))

    def forward(self, x):
        x = self.inp(x)
        current = self.fc(x)
        if self.inh.spikes is not None and self.inh.spikes.shape[0] == x.shape[0]:
            current = current + self.i2e(self.inh.spikes)
        exc = self.exc(current)
        self.inh(self.e2i(exc))
        self.stdp.step()
        return exc


def _digits(n=4, t=120, n_in=40):
    g = torch.Generator().manual_seed(3)
    return (torch.rand(n, t, 1, n_in, generator=g) < 0.15).float()


def test_users_diehl_cook_runs_as_a_network_of_layers_with_the_loops_spikes():
    torch.manual_seed(0)
    a, b = UserDiehlCook(), UserDiehlCook()
    b.load_state_dict(a.state_dict())
    e = explain(a, _digits()[0])
    if native.available():  # one fused C loop
        assert e.plan == "layers" and e.fused and e.fallbacks == []
    else:  # PYSNN_NATIVE=0: run_layers runs its loop, and explain says so
        assert e.plan == "layers" and not e.fused and "no fused kernels" in e.fallbacks[0][1]
    assert {p.name for p in e.parts} >= {"inp", "fc", "i2e", "exc", "e2i", "inh", "stdp"}
    unroll = Unroll(a)
    total = 0
    with torch.no_grad():
        for digit in _digits():  # one digit at a time, state reset before each
            got = unroll(digit)
            b.reset_state()
            expected = torch.stack([b(digit[t]) for t in range(digit.shape[0])])
            assert torch.equal(got, expected)
            total += expected.sum()
    assert total > 0
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(
        a.fc.weight, UserDiehlCook().fc.weight
    )
    assert torch.equal(a.exc.theta, b.exc.theta)


class UserConductanceDiehlCook(UserDiehlCook):
    """The same network with the paper's conductance synapses between the connections and the
    neurons, as a user writes it."""

    def __init__(self, n=12, n_in=40):
        super().__init__(n, n_in)
        with torch.no_grad():
            self.e2i.weight.copy_(10.4 * torch.eye(n))
            self.i2e.weight.copy_(17.0 * (1 - torch.eye(n)))
        self.syn_in = ConductanceSynapse(self.exc, tau_syn=1.0, e_rev=0.0)
        self.syn_inh = ConductanceSynapse(self.exc, tau_syn=2.0, e_rev=-100.0)
        self.syn_e2i = ConductanceSynapse(self.inh, tau_syn=1.0, e_rev=0.0)

    def forward(self, x):
        x = self.inp(x)
        inh = self.inh.spikes
        if inh is not None and inh.shape[0] == x.shape[0]:
            g_inh = self.i2e(inh)
        else:
            g_inh = x.new_zeros(x.shape[0], self.exc.shape[0])
        exc = self.exc(self.syn_in(self.fc(x)) + self.syn_inh(g_inh))
        self.inh(self.syn_e2i(self.e2i(exc)))
        self.stdp.step()
        return exc


def test_users_conductance_diehl_cook_runs_as_a_network_of_layers_with_the_loops_spikes():
    """A user's network with conductance synapses is lowered to run_layers too (the synapses
    stepped inside the fused loop): the loop's spikes, conductances and weights, bit for bit."""
    torch.manual_seed(0)
    a, b = UserConductanceDiehlCook(), UserConductanceDiehlCook()
    b.load_state_dict(a.state_dict())
    e = explain(a, _digits()[0])
    if native.available():
        assert e.plan == "layers" and e.fused and e.fallbacks == [], e
    else:
        assert e.plan == "layers" and not e.fused
    assert {p.name for p in e.parts} >= {"syn_in", "syn_inh", "syn_e2i"}
    unroll = Unroll(a)
    total = 0
    with torch.no_grad():
        for digit in _digits():
            digit = digit * 3  # (more input: the conductance form needs it to fire)
            got = unroll(digit.clamp(max=1))
            b.reset_state()
            expected = torch.stack([b(x) for x in digit.clamp(max=1)])
            assert torch.equal(got, expected)
            total += expected.sum()
    assert total > 0
    assert torch.equal(a.fc.weight, b.fc.weight) and torch.equal(a.exc.theta, b.exc.theta)
    for name in ("syn_in", "syn_inh", "syn_e2i"):
        assert torch.equal(getattr(a, name).g, getattr(b, name).g), name


def test_users_diehl_cook_with_a_delayed_e2i_runs_fused_with_the_loops_spikes():
    """The authors' winner-take-all loop as a user writes it (``e2i`` delayed one step): lowered
    to run_layers and fused, the delay ring pushed inside the C loop; the loop's spikes, ring
    and weights bit for bit."""

    class Delayed(UserConductanceDiehlCook):
        def __init__(self):
            super().__init__()
            delayed = Linear(12, 12, delay=1.0)
            with torch.no_grad():
                delayed.weight.copy_(self.e2i.weight)
            self.e2i = delayed

    torch.manual_seed(0)
    a, b = Delayed(), Delayed()
    b.load_state_dict(a.state_dict())
    e = explain(a, _digits()[0])
    if native.available():
        assert e.plan == "layers" and e.fused and e.fallbacks == [], e
    unroll = Unroll(a)
    with torch.no_grad():
        for digit in _digits():
            digit = (digit * 3).clamp(max=1)
            got = unroll(digit)
            b.reset_state()
            expected = torch.stack([b(x) for x in digit])
            assert torch.equal(got, expected)
            assert torch.equal(a.e2i.history, b.e2i.history)
            assert torch.equal(a.e2i.arriving, b.e2i.arriving)
            assert int(a.e2i.history_pos) == int(b.e2i.history_pos)
    assert expected.sum() > 0 and torch.equal(a.fc.weight, b.fc.weight)


def test_a_synapse_of_another_neuron_is_not_lowered_to_layers():
    from pysnn.engine.plan import layers_spec

    class Crossed(UserConductanceDiehlCook):
        def forward(self, x):
            x = self.inp(x)
            inh = self.inh.spikes
            if inh is not None and inh.shape[0] == x.shape[0]:
                g_inh = self.i2e(inh)
            else:
                g_inh = x.new_zeros(x.shape[0], self.exc.shape[0])
            exc = self.exc(self.syn_in(self.fc(x)) + self.syn_e2i(g_inh))
            self.inh(self.syn_inh(self.e2i(exc)))
            self.stdp.step()
            return exc

    net = Crossed()
    program = capture(net, _digits()[0][0])
    spec, why = layers_spec(net, program.graph)
    assert spec is None and "syn_e2i is a synapse of another neuron than exc" in why


def test_network_of_layers_refuses_what_run_layers_would_run_differently():
    from pysnn.engine.plan import layers_spec

    class Reordered(UserDiehlCook):
        def forward(self, x):  # i2e read after inh stepped: this step's spikes, not a layer's
            x = self.inp(x)
            exc = self.exc(self.fc(x))
            inh = self.inh(self.e2i(exc))
            self.stdp.step()
            return exc + 0 * self.i2e(inh)

    net = Reordered()
    program = capture(net, _digits()[0][0])
    spec, why = layers_spec(net, program.graph)
    assert spec is None and why
    assert explain(net, _digits()[0]).plan == "step-wise"


def test_compiled_delayed_network_one_graph_no_break_20_steps():
    """torch.compile of a step with a delayed connection: no graph break (fullgraph), one graph
    for the steady state whatever the ring slot (no recompilation per step), eager's values."""
    import copy

    import torch._dynamo
    from torch._dynamo.utils import counters

    import pysnn

    class Delayed(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.inp = Input(30)
            self.fc = Linear(30, 10, delay=3.0, init="normal", init_kwargs={"mean": 3.0, "std": 3})
            self.lif = LIFNeuron(10, refrac=2.0)

        def forward(self, spikes):
            return self.lif(self.fc(self.inp(spikes)))

    torch.manual_seed(5)
    eager = Delayed()
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(compiled.forward, backend="inductor", fullgraph=True, dynamic=False)
    x = _spikes(t=20, b=2, n=30)
    with torch.no_grad(), pysnn.checks(False):
        expected = torch.stack([eager(s) for s in x])
        got = torch.stack([step(s) for s in x])
    assert expected.sum() > 0 and torch.equal(got, expected)
    assert counters["stats"]["unique_graphs"] <= 2  # the first step (state made), then one
    assert torch.equal(compiled.fc.history, eager.fc.history)
    assert int(compiled.fc.history_pos) == int(eager.fc.history_pos)
    with torch.no_grad():  # eager steps continue from the compiled ones
        assert torch.equal(compiled(x[0]), eager(x[0]))


def test_explain_a_single_module():
    x = _spikes(t=5, b=2, n=20) * 30.0
    e = explain(LIFNeuron(20), x)
    assert e.plan == "layer-wise" and e.fused and [p.kind for p in e.parts] == ["LIFNeuron"]
    e = explain(AdaptiveLIFNeuron(20), x)  # its own step: a kernel generated from it
    if native.available():
        assert e.fused and e.backends[""] == "c-generated", e
    else:
        assert not e.fused and "overrides LIFNeuron.step" in e.fallbacks[0][1]
    lif = LIFNeuron(20)
    with torch.no_grad():
        expected = torch.stack([lif(x[t]) for t in range(5)])
        lif.reset_state()
        assert torch.equal(run_sequence(lif, x), expected)


def test_plan_follows_a_switch_the_step_branches_on():
    class Switch(FeedForward):
        def __init__(self):
            super().__init__()
            self.double_input = False

        def forward(self, x):
            if self.double_input:
                x = x + x
            return super().forward(x)

    torch.manual_seed(2)
    net, x = Switch(), _spikes()
    unroll = Unroll(net)
    with torch.no_grad():
        unroll(x)
        net.double_input = True
        got = unroll(x)
        assert torch.equal(got, _loop(net, x))


class CurrentLIF(Neuron):
    """The custom-modules tutorial's current-based LIF (two states, where-reset, per-neuron
    constants through derived())."""

    def __init__(self, shape, dt=1.0, *, tau_syn=5.0, tau_v=20.0, v_rest=0.0, thresh=1.0, **kw):
        super().__init__(shape, dt, **kw)
        self.register_constant("tau_syn", tau_syn, positive=True)
        self.register_constant("tau_v", tau_v, positive=True)
        self.register_constant("v_rest", v_rest)
        self.register_constant("thresh", thresh)
        self.register_state("i_syn", 0.0)
        self.register_state("v", "v_rest")

    def step(self, x):
        from pysnn.functional.decay import exp_decay

        syn = self.derived("syn", exp_decay, self.tau_syn, self.dt)
        mem = self.derived("mem", exp_decay, self.tau_v, self.dt)
        self.i_syn = self.i_syn * syn + x
        self.v = self.v_rest + (self.v - self.v_rest) * mem + self.i_syn
        s = self.fire(self.v - self.thresh)
        self.v = torch.where(s > 0, self.v_rest, self.v)
        return s


class Clipped(Neuron):
    """Divisions, clamps, abs, a Python-number divisor, comparisons combined."""

    def __init__(self, shape, **kw):
        super().__init__(shape, **kw)
        self.register_constant("gain", torch.linspace(0.5, 1.5, shape))
        self.register_state("v", 0.1)

    def step(self, x):
        self.v = (self.v / 1.1 + x * self.gain / 3.0).clamp(min=-1.0, max=4.0)
        s = self.fire(self.v.abs() - 2.0)
        self.v = torch.where((s > 0) & (x >= 0), -self.v / 7.0, self.v)
        return s


def _whole_steps(period: torch.Tensor, dt: float) -> torch.Tensor:
    """A period (ms) in whole steps of ``dt``, ``int64``."""
    return torch.round(period / dt).to(torch.int64)


class RefractoryLIF(Neuron):
    """A LIF written with ``torch.addcmul`` (the leak, rounded as torch rounds it) and an
    ``int64`` refractory counter (integer arithmetic, a clamp, a select, a conversion to the
    dtype: the input is divided by one plus the remaining refractory steps)."""

    def __init__(self, shape, dt=1.0, *, tau_v=20.0, v_rest=0.0, thresh=1.0, refrac=2.0, **kw):
        super().__init__(shape, dt, **kw)
        self.register_constant("tau_v", tau_v, positive=True)
        self.register_constant("v_rest", v_rest)
        self.register_constant("thresh", thresh)
        self.register_constant("refrac", refrac, non_negative=True)
        self.register_state("v", "v_rest")
        self.register_state("count", 0, dtype=torch.int64)

    def step(self, x):
        from pysnn.functional.decay import exp_decay

        mem = self.derived("mem", exp_decay, self.tau_v, self.dt)
        refractory = self.derived("refractory", _whole_steps, self.refrac, self.dt)
        leak = self.v_rest * (1 - mem)
        self.v = torch.addcmul(leak, self.v, mem) + x / (1 + self.count.to(x.dtype))
        s = self.fire(self.v - self.thresh)
        fired = s > 0
        self.v = torch.where(fired, self.v_rest, self.v)
        self.count = torch.where(fired, refractory, (self.count - 1).clamp_min(0))
        return s


class Reciprocal(Neuron):
    """A number divided by the state: torch computes the state's reciprocal times the number
    (two roundings), and so must the generated kernel."""

    def __init__(self, shape, **kw):
        super().__init__(shape, **kw)
        self.register_state("v", 0.5)

    def step(self, x):
        self.v = 3.0 / (self.v.abs() + 1.7) + x
        s = self.fire(self.v - 2.0)
        self.v = torch.where(s > 0, self.v * 0.1, self.v)
        return s


class Graded(Neuron):
    """Returns a graded output (its potential above 0.5, scaled; 0 below): the additive trace
    adds ``trace_scale * output`` to the decayed trace, rounded once where torch's ``addcmul``
    is a fused multiply-add (0/1 spikes would add ``trace_scale`` exactly either way)."""

    def __init__(self, shape, **kw):
        super().__init__(shape, **kw)
        self.register_state("v", 0.0)

    def step(self, x):
        self.v = self.v * 0.9 + x
        s = self.fire(self.v - 1.0)
        out = (self.v - 0.5).clamp(min=0.0) * 0.37
        self.v = torch.where(s > 0, self.v * 0.1, self.v)
        return out


class Exponential(Neuron):
    def __init__(self, shape, **kw):
        super().__init__(shape, **kw)
        self.register_state("v", 0.0)

    def step(self, x):
        self.v = self.v + torch.exp(self.v * 0.1) * 0.01 + x
        s = self.fire(self.v - 1.0)
        self.v = self.v * (1 - s)
        return s


def _one_layer(neuron_factory, n=16, dtype=torch.float32):
    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc, self.neuron = Linear(30, n), neuron_factory(n)

        def forward(self, x):
            return self.neuron(self.fc(x) * 2.0)

    torch.manual_seed(4)
    return Net().to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "factory",
    [
        lambda n: CurrentLIF(n, tau_v=torch.linspace(10.0, 30.0, n), thresh=0.8),
        lambda n: Clipped(n),
        lambda n: Reciprocal(n),
        lambda n: RefractoryLIF(n, tau_v=torch.linspace(10.0, 30.0, n), v_rest=-0.25, thresh=0.8),
    ],
)
def test_generated_kernels_equal_their_step_loop_bit_for_bit(factory, dtype):
    if not native.available():
        pytest.skip("generated kernels need the C compiler (PYSNN_NATIVE=0 runs the torch step)")
    net, x = _one_layer(factory, dtype=dtype), _spikes(t=60).to(dtype)
    e = explain(net, x)
    assert e.fused and e.backends["neuron"] == "c-generated", e
    with torch.no_grad():
        expected = _loop(net, x)
        state = _state(net)
        got = Unroll(net)(x)
    assert expected.sum() > 0 and torch.equal(got, expected)
    for name, value in _state(net).items():
        assert torch.equal(value, state[name]), name


#: user neurons with a trace of non-default constants, by trace mode: per-neuron tau_trace, a
#: graded output (see Graded)
TRACED = [
    pytest.param(
        lambda n, mode: CurrentLIF(
            n,
            thresh=0.8,
            tau_trace=torch.linspace(3.0, 40.0, n),
            trace_scale=0.7,
            trace_mode=mode,
        ),
        id="CurrentLIF",
    ),
    pytest.param(
        lambda n, mode: Graded(n, tau_trace=7.0, trace_scale=1.3, trace_mode=mode), id="Graded"
    ),
]


@pytest.mark.parametrize("mode", ["additive", "reset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factory", TRACED)
def test_generated_kernels_update_the_trace_in_their_loop_bit_for_bit(
    factory, dtype, mode, monkeypatch
):
    """Without a gradient the generated kernel updates the spike trace in its loop (no
    trace_step after it): after each of two Unroll calls of the neuron on input currents (the
    second starting from a nonzero trace) the output, the trace and every state equal the
    neuron's torch step loop's bit for bit."""
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    import copy

    from pysnn import backends, codegen

    torch.manual_seed(4)
    neuron, g = factory(16, mode).to(dtype), torch.Generator().manual_seed(5)
    currents = torch.rand(2, 60, 4, 16, generator=g, dtype=torch.float64)
    currents = (currents * (torch.rand(currents.shape, generator=g) < 0.25)).to(dtype)
    assert explain(neuron, currents[0]).backends[""] == "c-generated"
    neuron.reset_state()  # (explain ran a step)
    reference = copy.deepcopy(neuron)

    def stale(*args):
        raise AssertionError("the trace was updated outside the generated kernel")

    unroll, traces = Unroll(neuron, reset=False), []  # the second call continues
    for x in currents:
        with torch.no_grad(), backends.prefer("torch"):
            expected = torch.stack([reference(x[t]) for t in range(x.shape[0])])
        with torch.no_grad(), monkeypatch.context() as patch:
            patch.setattr(codegen, "trace_step", stale)
            got = unroll(x)
        assert torch.equal(got, expected)
        state, want = _state(neuron), _state(reference)
        assert state.keys() == want.keys() and "trace" in state
        for name, value in state.items():
            assert torch.equal(value, want[name]), name
        traces.append(neuron.trace.clone())
    assert traces[0].abs().sum() > 0 and not torch.equal(traces[0], traces[1])


@pytest.mark.parametrize("learned", [None, "tau_v", "tau_trace"])
def test_the_trace_and_learned_constants_keep_the_gradients_of_the_step_loop(learned):
    """Under BPTT (the generated forward and backward kernels running) the trace is left to
    trace_step after them, as the step loop updates it: a loss on the trace gives the loop's
    input gradient through the spikes' surrogate. A learned constant (tau_v, tau_trace) that
    wants a gradient, the input wanting none: the kernels give way to the torch step (which
    alone gives the constant's gradient), and the constant gets the loop's gradient."""
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    import copy

    kw = {} if learned is None else {learned: nn.Parameter(torch.full((16,), 7.0))}
    neuron = CurrentLIF(16, thresh=0.3, **kw).double()
    reference = copy.deepcopy(neuron)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 4, 16, generator=g, dtype=torch.float64).requires_grad_(not learned)
    x_ref = x.detach().clone().requires_grad_(not learned)
    w = torch.rand(4, 16, generator=g, dtype=torch.float64)
    unroll, ran = Unroll(neuron), []
    with torch.no_grad():
        unroll(x)  # planned: the kernel generated
        kernel, why = neuron.generated_multistep(x, new=False)  # (the plan's)
    assert kernel is not None, why
    for name in ("function", "gradient"):
        wrapped = getattr(kernel, name)
        setattr(kernel, name, lambda *a, f=wrapped, name=name: ran.append(name) or f(*a))
    (unroll(x).sum() + (neuron.trace * w).sum()).backward()
    assert ran == ([] if learned else ["function", "gradient"])
    (_loop(reference, x_ref).sum() + (reference.trace * w).sum()).backward()
    if learned:
        got, want = getattr(neuron, learned).grad, getattr(reference, learned).grad
    else:
        got, want = x.grad, x_ref.grad
    assert want.abs().sum() > 0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_generated_kernel_follows_edited_constants_and_gradients():
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    net, x = _one_layer(lambda n: CurrentLIF(n, thresh=0.8)), _spikes(t=40)
    unroll = Unroll(net)
    with torch.no_grad():
        unroll(x)
        net.neuron.tau_v.data.fill_(3.0)  # seen by the kernel's guard
        assert torch.equal(unroll(x), _loop(net, x))
    out = unroll(x)  # under autograd: the torch step, gradients through the surrogate
    out.sum().backward()
    assert net.fc.weight.grad.abs().sum() > 0


def test_a_step_that_cannot_be_generated_says_why():
    net, x = _one_layer(Exponential), _spikes(t=20)
    e = explain(net, x)
    assert not e.fused
    if native.available():
        assert "exp cannot be generated" in e.fallbacks[0][1]
    with torch.no_grad():
        assert torch.equal(Unroll(net)(x), _loop(net, x))


@pytest.mark.parametrize(
    "factory",
    [
        lambda n: __import__("pysnn.neuron", fromlist=["IzhikevichNeuron"]).IzhikevichNeuron(n),
        lambda n: __import__("pysnn.readout", fromlist=["LIReadout"]).LIReadout(n),
        lambda n: __import__("pysnn.synapse", fromlist=["ExponentialSynapse"]).ExponentialSynapse(
            LIFNeuron(n)
        ),
        lambda n: AdaptiveLIFNeuron(n, thresh=-60.0),
    ],
)
def test_built_in_neurons_in_a_sequence_plan_equal_their_step_loop(factory):
    """Built-in models without a kernel of their own: generated or stepped, never different."""
    net, x = _one_layer(factory), _spikes(t=60)  # 0/1 spikes: exact event-driven products
    with torch.no_grad():
        expected = _loop(net, x)
        state = _state(net)
        got = Unroll(net)(x)
    assert torch.equal(got, expected)
    for name, value in _state(net).items():
        assert torch.equal(value, state[name]), name


def test_generated_kernel_is_built_into_the_private_verified_cache(tmp_path, monkeypatch):
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    import json
    import stat

    from pysnn.codegen import generate

    monkeypatch.setenv("PYSNN_CACHE_DIR", str(tmp_path / "cache"))
    kernel, why = generate(CurrentLIF(4), torch.zeros(2, 4))
    assert kernel is not None, why
    folder = tmp_path / "cache"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    libraries = list(folder.glob("generated-*.so"))
    assert len(libraries) == 1 and libraries[0].with_suffix(".c").read_text() == kernel.source
    record = json.loads(libraries[0].with_suffix(".json").read_text())
    assert record["size"] == libraries[0].stat().st_size


class McCullochPitts(Neuron):
    """The custom-modules tutorial's memoryless neuron."""

    def __init__(self, shape, dt=1.0, *, thresh=0.0, **kw):
        super().__init__(shape, dt, **kw)
        self.register_constant("thresh", thresh)

    def step(self, x):
        return self.fire(x - self.thresh)


class OneToOne(Connection):
    """The custom-modules tutorial's one-to-one connection with a learnable gain."""

    def __init__(self, n, dt=1.0, delay=0.0, *, gain=1.0):
        super().__init__(n, n, dt, delay, delay_shape=(n,))
        self.gain = nn.Parameter(torch.full((n,), float(gain)))

    def propagate(self, arriving):
        return arriving * self.gain


@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_tutorial_modules_fused_bit_identical_and_their_bptt_gradients(delay):
    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.conn = OneToOne(20, delay=delay, gain=1.3)
            self.mp = McCullochPitts(20, thresh=0.5)
            self.fc = Linear(20, 6)
            self.lif = CurrentLIF(6, thresh=0.3)

        def forward(self, x):
            return self.lif(self.fc(self.mp(self.conn(x))) * 2.0)

    torch.manual_seed(6)
    net, x = Net(), _spikes(t=40, n=20)
    e = explain(net, x)
    assert e.plan == "layer-wise"
    if native.available():
        assert e.fused and e.backends["mp"] == e.backends["lif"] == "c-generated"
    with torch.no_grad():
        expected = _loop(net, x)
        got = Unroll(net)(x)
    assert expected.sum() > 0 and torch.equal(got, expected)
    net.zero_grad()
    _loop(net, x).sum().backward()
    loop_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    Unroll(net)(x).sum().backward()
    for p, expected_grad in zip(net.parameters(), loop_grads):
        torch.testing.assert_close(p.grad, expected_grad)
    assert net.conn.gain.grad.abs().sum() > 0


def test_switching_train_and_eval_keeps_both_plans():
    net, x = FeedForward(), _spikes(t=5)
    unroll = Unroll(net)
    with torch.no_grad():
        unroll(x)
        net.eval()
        unroll(x)
        net.train()
        before = dict(unroll._runner.plans)
        unroll(x)
    assert len(unroll._runner.plans) == 2 and unroll._runner.plans == before


@pytest.mark.parametrize(
    "factory",
    [
        lambda n: CurrentLIF(n, thresh=0.3),
        lambda n: Clipped(n),
        lambda n: Reciprocal(n),
        lambda n: RefractoryLIF(n, v_rest=-0.25, thresh=0.3),
    ],
)
def test_generated_bptt_kernel_gives_the_loops_gradients(factory, monkeypatch):
    """Under autograd a generated neuron runs its generated forward and backward kernels (BPTT
    with its surrogate; an int64 refractory counter carries no gradient): weight and input
    gradients equal the step loop's (float64, to rounding)."""
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    from pysnn import codegen

    used = []
    apply = codegen._GeneratedSteps.apply
    monkeypatch.setattr(codegen._GeneratedSteps, "apply", lambda *a: used.append(1) or apply(*a))
    net = _one_layer(factory, dtype=torch.float64)
    x = _spikes(t=30).double().requires_grad_()
    _loop(net, x).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]
    net.zero_grad()
    x.grad = None
    out = Unroll(net)(x)
    out.sum().backward()
    assert used, "the generated BPTT kernel did not run"
    for got, want in zip([p.grad for p in net.parameters()] + [x.grad], expected):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "surrogate",
    ["FastSigmoid", "ArcTan", "Sigmoid", "Triangle", "StraightThrough"],
)
def test_generated_bptt_kernel_uses_each_built_in_surrogate(surrogate):
    """Each built-in surrogate's derivative, written in C, gives the loop's gradients."""
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    from pysnn import surrogate as surrogates

    net = _one_layer(
        lambda n: CurrentLIF(n, thresh=0.3, surrogate=getattr(surrogates, surrogate)()),
        dtype=torch.float64,
    )
    x = _spikes(t=30).double()
    assert explain(net, x).backends["neuron"] == "c-generated"
    _loop(net, x).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    Unroll(net)(x).sum().backward()
    for got, want in zip([p.grad for p in net.parameters()], expected):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_surrogate_of_ones_own_keeps_the_forward_kernel_and_the_torch_gradient():
    """A user's surrogate class (no C derivative written for it): the forward kernel is
    generated, and under autograd the torch step gives the loop's gradients."""
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    from pysnn.surrogate import FastSigmoid

    class Bump(FastSigmoid):
        pass

    net = _one_layer(lambda n: CurrentLIF(n, thresh=0.3, surrogate=Bump(1.0)), dtype=torch.float64)
    x = _spikes(t=30).double()
    with torch.no_grad():
        assert explain(net, x).backends["neuron"] == "c-generated"
    assert explain(net, x).backends["neuron"] == "torch"  # (training: its torch step)
    _loop(net, x).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    Unroll(net)(x).sum().backward()
    for got, want in zip([p.grad for p in net.parameters()], expected):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_heaviside_outside_fire_keeps_the_torch_gradient():
    """IzhikevichNeuron spikes through ``functional.spike`` (its surrogate applied only under
    autograd, unseen by the recorded step): the forward kernel is generated without a backward,
    and under autograd the torch step gives the loop's gradients (a generated backward would
    drop the surrogate's)."""
    if not native.available():
        pytest.skip("generated kernels need the C compiler")
    from pysnn import codegen
    from pysnn.neuron import IzhikevichNeuron

    kernel, why = codegen.generate(IzhikevichNeuron(16).double(), torch.zeros(2, 16).double())
    assert kernel is not None and kernel.gradient is None, why
    net = _one_layer(lambda n: IzhikevichNeuron(n), dtype=torch.float64)
    with torch.no_grad():
        net.fc.weight.mul_(32)
    x = _spikes(t=30).double()
    _loop(net, x).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    Unroll(net)(x).sum().backward()
    for got, want in zip([p.grad for p in net.parameters()], expected):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ---- random draws: the engine keeps the step loop's draws, seed for seed ----


class Noisy(Neuron):
    """A user's neuron with noise drawn in its step."""

    def __init__(self, n):
        super().__init__(n)
        self.register_constant("thresh", 1.0)
        self.register_state("v", 0.0)

    def step(self, x):
        self.v = self.v * 0.9 + x + torch.randn(self.shape) * 0.5
        s = self.fire(self.v - self.thresh)
        self.v = self.v * (1 - s)
        return s


def _noisy_loop_and_unroll(net, x, seed=5):
    import copy

    other = copy.deepcopy(net)
    with torch.no_grad():
        torch.manual_seed(seed)
        got = Unroll(net)(x)
        torch.manual_seed(seed)
        expected = torch.stack([other(xt) for xt in x])
    return got, expected


def test_a_neuron_that_draws_noise_is_never_generated_with_frozen_noise():
    """The generated kernel would keep one draw for every step: refused, named by explain,
    and Unroll gives the loop's spikes for the same seed (capture and recording draw nothing
    from the user's stream)."""

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc, self.n = Linear(5, 8), Noisy(8)

        def forward(self, x):
            return self.n(self.fc(x))

    torch.manual_seed(0)
    net, x = Net(), torch.rand(30, 1, 5)
    e = explain(net, x)
    assert e.plan == "layer-wise" and e.backends["n"] == "torch"
    assert "step draws random numbers (randn)" in dict(e.fallbacks)["n"]
    got, expected = _noisy_loop_and_unroll(net, x)
    assert torch.equal(got, expected) and expected.sum() > 0


def test_several_modules_that_draw_are_stepped_in_the_loops_order():
    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc, self.n, self.fc2, self.n2 = Linear(5, 8), Noisy(8), Linear(8, 8), Noisy(8)

        def forward(self, x):
            return self.n2(self.fc2(self.n(self.fc(x))))

    torch.manual_seed(0)
    net, x = Net(), torch.rand(30, 1, 5) * 2
    e = explain(net, x)
    assert e.plan == "step-wise" and any("n, n2" == w for w, _ in e.fallbacks), e
    got, expected = _noisy_loop_and_unroll(net, x)
    assert torch.equal(got, expected) and expected.sum() > 0


def test_dropout_in_a_layer_wise_step_is_stepped():
    """torch's Dropout over all T * B samples at once would draw in another order than T calls:
    the network is stepped, and the results are the loop's for the same seed."""

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc, self.drop, self.lif = Linear(5, 8), nn.Dropout(0.3), LIFNeuron(8)

        def forward(self, x):
            return self.lif(self.drop(self.fc(x)) * 30)

    torch.manual_seed(0)
    net, x = Net(), torch.rand(25, 2, 5)
    e = explain(net, x)
    assert e.plan != "layer-wise" and "drop" in dict(e.fallbacks), e
    got, expected = _noisy_loop_and_unroll(net, x)
    assert torch.equal(got, expected) and expected.sum() > 0
    net.eval()  # no draws in eval mode: layer-wise again
    assert explain(net, x).plan == "layer-wise"


def test_capture_leaves_the_random_stream_as_it_was():
    net = nn.Sequential(Linear(5, 8), Noisy(8))
    torch.manual_seed(3)
    capture(net, torch.rand(2, 5))
    after = torch.rand(4)
    torch.manual_seed(3)
    torch.rand(2, 5)
    assert torch.equal(torch.rand(4), after)
