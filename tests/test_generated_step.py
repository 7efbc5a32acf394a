"""A neuron without a fused step of its own (a user's) stepped in a Python loop: after
``GENERATE_AFTER`` steps its single steps run a kernel generated from its ``step``
(pysnn.codegen), in place, with the values of its torch step bit for bit, and everything that
can change a step (constants edited through .data, attributes, states, batch size, gradients,
hooks, references kept to the state) seen at the next step."""

import copy

import pytest
import torch

import pysnn.neuron as neuron_module
from pysnn import backends, codegen, native
from pysnn.neuron import IFNeuron, IzhikevichNeuron, LIFNeuron, Neuron
from pysnn.readout import LIReadout
from tests.test_engine import TRACED, Clipped, CurrentLIF, Exponential, Reciprocal

pytestmark = pytest.mark.skipif(not native.available(), reason="needs the C kernels")


def _pair(factory, dtype=torch.float32):
    """A neuron and its reference twin, which never generates (its steps run as torch ops)."""
    torch.manual_seed(0)
    a = factory().to(dtype)
    b = copy.deepcopy(a)
    b.GENERATE_AFTER = None
    return a, b


def _state(neuron):
    return {k: v for k, v in neuron._buffers.items() if v is not None}


def _assert_same(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _inputs(steps=150, batch=3, n=13, dtype=torch.float32, scale=1.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, n, generator=g) * scale).to(dtype)


FACTORIES = [
    pytest.param(lambda: CurrentLIF(13, tau_v=torch.linspace(5.0, 30.0, 13)), id="CurrentLIF"),
    pytest.param(lambda: Clipped(13), id="Clipped"),
    pytest.param(lambda: Reciprocal(13), id="Reciprocal"),
    pytest.param(lambda: IzhikevichNeuron(13), id="Izhikevich"),
    pytest.param(lambda: LIReadout(13), id="LIReadout"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factory", FACTORIES)
def test_generated_single_steps_are_the_torch_steps_bit_for_bit(factory, dtype):
    a, b = _pair(factory, dtype)
    x = _inputs(dtype=dtype, scale=20.0 if isinstance(a, IzhikevichNeuron) else 1.5)
    with torch.no_grad():
        for t in range(x.shape[0]):
            assert torch.equal(a(x[t]), b(x[t])), t
    assert a.generated_step == "generated" and b.generated_step is None
    _assert_same(a, b)
    if a.spiking:
        assert a.trace.abs().sum() > 0


@pytest.mark.parametrize("mode", ["additive", "reset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factory", TRACED)
def test_generated_single_steps_update_the_trace_bit_for_bit(factory, dtype, mode, monkeypatch):
    """The generated single step updates the trace in its kernel (no trace_step after it):
    after each step the output, the trace and every state equal the torch step loop's (the
    torch operations, also for the trace) bit for bit, while the trace keeps changing."""
    import pysnn.neuron as neuron_module

    a, b = _pair(lambda: factory(13, mode), dtype)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(150, 3, 13, generator=g, dtype=torch.float64)
    x = (x * (torch.rand(x.shape, generator=g) < 0.25)).to(dtype)  # sparse currents
    traces = []

    def stale(*args):
        raise AssertionError("the trace was updated outside the generated kernel")

    with torch.no_grad():
        for t in range(x.shape[0]):
            with backends.prefer("torch"):
                want = b(x[t])
            generated = t >= Neuron.GENERATE_AFTER  # the generated step from here on
            assert (a.generated_step == "generated") is generated, t
            with monkeypatch.context() as patch:
                if generated:
                    patch.setattr(neuron_module, "trace_step", stale)
                assert torch.equal(a(x[t]), want), t
            _assert_same(a, b)
            traces.append(a.trace.clone())
    assert a.generated_step == "generated"
    changed = [not torch.equal(u, v) for u, v in zip(traces[64:], traces[65:])]
    assert traces[-1].abs().sum() > 0 and sum(changed) > len(changed) // 2


def test_edits_of_the_trace_constants_and_mode_take_effect_at_the_next_step():
    """tau_trace edited in place, trace_scale through .data, trace_mode assigned, each while
    the generated step (with the trace in its kernel) runs: the trace is the torch step's."""
    a, b = _pair(lambda: CurrentLIF(13, tau_trace=torch.linspace(3.0, 40.0, 13), trace_scale=0.7))
    x = _inputs(steps=400, scale=0.4)
    edits = {
        100: lambda n: n.tau_trace.mul_(2.0),
        170: lambda n: n.trace_scale.data.fill_(0.3),
        240: lambda n: setattr(n, "trace_mode", "reset"),
    }
    with torch.no_grad():
        for t in range(x.shape[0]):
            if t in edits:
                assert a.generated_step == "generated", t
                edits[t](a), edits[t](b)
            with backends.prefer("torch"):
                want = b(x[t])
            assert torch.equal(a(x[t]), want), t
            assert torch.equal(a.trace, b.trace), t
    assert a.generated_step == "generated" and a.trace_mode == "reset"
    _assert_same(a, b)


@pytest.mark.parametrize("learned", ["tau_v", "tau_trace"])
def test_a_learned_constant_gets_its_gradient_after_generation(learned):
    """A constant that is an nn.Parameter: once gradients are on (the input wanting none) the
    generated single step gives way to the torch step, whose graph reaches the constant (the
    kernel, generated without a gradient, would silently drop it): the state's and the
    constant's gradients are the torch step loop's."""
    a, b = _pair(lambda: CurrentLIF(13, **{learned: torch.nn.Parameter(torch.full((13,), 9.0))}))
    x = _inputs(steps=100, scale=0.4)
    for t in range(x.shape[0]):
        with torch.set_grad_enabled(t >= 80):  # generated at step 64 without a gradient
            assert (a.generated_step == "generated") is (64 <= t <= 80), t
            assert torch.equal(a(x[t]), b(x[t])), t
    assert a.v.requires_grad is (learned == "tau_v") and a.trace.requires_grad
    (a.v.sum() + a.trace.sum()).backward(), (b.v.sum() + b.trace.sum()).backward()
    got, want = getattr(a, learned).grad, getattr(b, learned).grad
    assert want.abs().sum() > 0 and torch.equal(got, want)
    _assert_same(a, b)


def test_the_generated_kernel_runs_and_is_made_once(monkeypatch):
    made = []
    generate = codegen.generate

    def counted(neuron, example):
        made.append(type(neuron).__name__)
        return generate(neuron, example)

    import pysnn.neuron as neuron_module

    monkeypatch.setattr(neuron_module, "generate", counted)
    a = CurrentLIF(13)
    x = _inputs(steps=200)
    with torch.no_grad():
        for t in range(Neuron.GENERATE_AFTER - 1):
            a(x[t])
        assert made == [] and a.generated_step is None
        a(x[Neuron.GENERATE_AFTER - 1])
        assert made == ["CurrentLIF"] and a.generated_step == "generated"
        fast = a.__dict__["_fast"]  # (its one-step call of the kernel)
        calls = []
        function = fast.call
        fast.call = lambda *args: calls.append(1) or function(*args)
        for t in range(Neuron.GENERATE_AFTER, 200):
            a(x[t])
    assert made == ["CurrentLIF"] and len(calls) == 200 - Neuron.GENERATE_AFTER


def test_a_step_that_cannot_be_generated_is_noted_once(monkeypatch):
    made = []
    generate = codegen.generate
    import pysnn.neuron as neuron_module

    monkeypatch.setattr(neuron_module, "generate", lambda n, e: made.append(1) or generate(n, e))
    a, b = _pair(lambda: Exponential(13))
    x = _inputs(steps=300, scale=0.5)
    with torch.no_grad():
        for t in range(x.shape[0]):
            assert torch.equal(a(x[t]), b(x[t]))
    assert made == [1] and "exp cannot be generated" in a.generated_step


def test_edits_between_steps_take_effect_at_the_next_step():
    """A constant edited through .data, in place or by assignment; a state assigned or edited in
    place; an attribute the step does not read: each is the torch step's result after it."""
    a, b = _pair(lambda: CurrentLIF(13))
    x = _inputs(steps=560)
    edits = {  # (70 steps apart: each is made while the generated kernel runs)
        70: lambda n: n.thresh.data.fill_(0.6),
        140: lambda n: n.tau_v.mul_(2.0),
        210: lambda n: setattr(n, "v_rest", 0.2),
        280: lambda n: n.v.__setitem__((0, 3), 5.0),
        350: lambda n: setattr(n, "v", torch.zeros_like(n.v)),
        420: lambda n: n.tau_syn.data.copy_(torch.tensor(2.0)),
    }
    with torch.no_grad():
        for t in range(x.shape[0]):
            if t in edits:
                assert a.generated_step == "generated", t
                edits[t](a), edits[t](b)
            assert torch.equal(a(x[t]), b(x[t])), t
    _assert_same(a, b)


def test_a_flag_the_step_reads_is_seen():
    class Gated(Neuron):
        def __init__(self, n):
            super().__init__(n)
            self.register_state("v", 0.0)
            self.leaky = True

        def step(self, x):
            self.v = (self.v * 0.8 if self.leaky else self.v) + x
            s = self.fire(self.v - 1.0)
            self.v = self.v * (1 - s)
            return s

    a, b = _pair(lambda: Gated(13))
    x = _inputs(steps=300, scale=0.4)
    with torch.no_grad():
        for t in range(x.shape[0]):
            if t == 150:
                a.leaky = b.leaky = False
            assert torch.equal(a(x[t]), b(x[t])), t
    _assert_same(a, b)


def test_batch_size_gradients_hooks_and_kept_references():
    a, b = _pair(lambda: CurrentLIF(13))
    x = _inputs(steps=150)
    seen = []
    a.register_forward_hook(lambda m, i, o: seen.append(1))
    with torch.no_grad():
        for t in range(100):
            assert torch.equal(a(x[t]), b(x[t]))
        assert a.generated_step == "generated" and len(seen) == 100
        kept = a.v  # a reference kept: the next step must not write into it
        before = kept.clone()
        assert torch.equal(a(x[100]), b(x[100]))
        assert torch.equal(kept, before)
        del kept
        a.reset_state(), b.reset_state()
        y = _inputs(steps=20, batch=5)
        for t in range(20):  # another batch size
            assert torch.equal(a(y[t]), b(y[t]))
    # under autograd the torch step runs, and gradients flow
    a.reset_state(), b.reset_state()
    xa = x[:30].clone().requires_grad_(True)
    xb = x[:30].clone().requires_grad_(True)
    sa = torch.stack([a(xa[t]) for t in range(30)])
    sb = torch.stack([b(xb[t]) for t in range(30)])
    assert torch.equal(sa, sb)
    (sa.sum() + a.v.sum()).backward()
    (sb.sum() + b.v.sum()).backward()
    assert torch.equal(xa.grad, xb.grad) and xa.grad.abs().sum() > 0


class Doubler(Neuron):
    """A step that assigns no state (the trace is updated after it): a batch-size change does
    not drop a generated step through an assignment."""

    def step(self, x):
        return x * 2.0


@pytest.mark.parametrize("factory", [lambda: CurrentLIF(13), lambda: Doubler(13)])
@pytest.mark.parametrize("batches", [(5, 3), (3, 5)])
def test_a_batch_size_coming_back_after_a_reset_is_stepped_on_the_state_it_has(batches, factory):
    """Generated at batch ``m``; steps at batch ``k`` make the state ``k`` rows; a reset keeps
    them; steps at batch ``m`` again must not run the kernel on the ``k``-row state (it wrote
    ``m`` rows into it: past its end when ``k < m``, a heap overflow that crashed a long
    evaluation of Diehl & Cook with re-presented digits)."""
    m, k = batches
    a, b = _pair(factory)
    x, y = _inputs(steps=100, batch=m), _inputs(steps=5, batch=k, seed=2)
    with torch.no_grad():
        for t in range(100):
            assert torch.equal(a(x[t]), b(x[t]))
        assert a.generated_step == "generated"
        for t in range(5):
            assert torch.equal(a(y[t]), b(y[t]))
        a.reset_state(), b.reset_state()
        assert a.trace.shape[0] == k
        for t in range(100):
            assert torch.equal(a(x[t]), b(x[t]))
            _assert_same(a, b)
        assert a.generated_step == "generated"


def _trace_reference(trace, s, tau, scale, mode, dt=1.0):
    """The spike trace after spikes ``s``, written out with torch operations: the decay
    ``exp(-dt / tau)`` in the trace's dtype, then ``+ scale * s`` (torch's ``addcmul``, one
    rounding where it fuses) or ``scale`` where ``s > 0``."""
    decayed = trace * torch.exp(-dt / tau)
    if mode == "additive":
        return torch.addcmul(decayed, scale, s)
    return torch.where(s > 0, scale, decayed)


@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per-neuron"])
@pytest.mark.parametrize("mode", ["additive", "reset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_single_steps_are_generated_and_return_their_input(dtype, mode, per_neuron):
    """Input is an ordinary user of the generated step: from its second step on its single
    steps run the kernel generated from its step (the trace updated in its loop), returning the
    input itself as the torch step does, with the trace of the torch operations bit for bit
    (batch sizes changing, resets, bool inputs, the trace constants edited through .data)."""
    from pysnn.neuron import Input

    g = torch.Generator().manual_seed(3)
    tau = 5.0 + 30.0 * torch.rand(13, generator=g) if per_neuron else torch.tensor(20.0)
    scale = 0.5 + torch.rand(13, generator=g) if per_neuron else torch.tensor(1.0)
    a = Input(13, tau_trace=tau, trace_scale=scale, trace_mode=mode).to(dtype)
    trace = None
    edits = {60: lambda n: n.tau_trace.data.mul_(0.5), 90: lambda n: n.trace_scale.data.add_(1)}
    with torch.no_grad():
        for t in range(150):
            batch = 3 if t < 40 or t >= 70 else 5
            if t in (40, 70):
                trace = None  # (a new batch size: the state starts again)
            if t == 110:
                a.reset_state()
                trace = None
            if t in edits:
                edits[t](a)
            x = torch.rand(batch, 13, generator=g) < 0.3
            x = x if t % 2 else x.to(dtype)  # (a bool input is converted)
            s = a(x)
            xf = x.to(dtype)
            assert torch.equal(s, xf) and s.dtype is dtype
            if t % 2 == 0 and t > 0 and t not in (40, 70, 110):
                assert s is x and a.spikes is x  # the input itself, on the generated step
            previous = torch.zeros(batch, 13, dtype=dtype) if trace is None else trace
            trace = _trace_reference(
                previous, xf, a.tau_trace.to(dtype), a.trace_scale.to(dtype), mode
            )
            assert torch.equal(a.trace, trace), t
    assert a.generated_step == "generated" and a.trace.abs().sum() > 0


def _adaptive(shared, per_neuron, mode="additive", n=13):
    from pysnn.neuron import AdaptiveLIFNeuron

    kwargs = _lif_kwargs(LIFNeuron, per_neuron, n)
    if per_neuron:
        g = torch.Generator().manual_seed(9)
        kwargs["theta_plus"] = 0.2 + torch.rand(n, generator=g)
        kwargs["tau_theta"] = 20.0 + 50.0 * torch.rand(n, generator=g)
    else:
        kwargs.update(theta_plus=0.6, tau_theta=30.0, refrac=1.0)
    return AdaptiveLIFNeuron(n, trace_mode=mode, theta_shared=shared, **kwargs)


@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per-neuron"])
@pytest.mark.parametrize("mode", ["additive", "reset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_adaptive_lif_single_steps_are_generated_bit_for_bit(shared, dtype, mode, per_neuron):
    """AdaptiveLIFNeuron is an ordinary user of the generated step, its theta per sample
    (state) or shared (a per-neuron buffer the step assigns: read per element, updated after
    every element from the spikes summed over the batch): spikes, v, refractory counter, trace
    and theta equal the torch step's (the registry's ``"torch"`` preference) bit for bit, and
    theta equals its update written out (theta * exp(-dt / tau_theta) + theta_plus * spikes,
    summed over the batch where shared)."""
    a = _adaptive(shared, per_neuron, mode).to(dtype)
    b = copy.deepcopy(a)
    x = _inputs(steps=120, dtype=dtype, scale=9.0)
    with torch.no_grad():
        for t in range(x.shape[0]):
            theta = torch.zeros_like(x[t]) if a.theta is None else a.theta.clone()
            sa = a(x[t])
            with backends.prefer("torch"):
                sb = b(x[t])
            assert torch.equal(sa, sb), t
            _assert_same(a, b)
            decay = torch.exp(-1.0 / a.tau_theta)
            counts = sa.sum(0) if shared else sa
            assert torch.equal(a.theta, theta * decay + a.theta_plus * counts), t
    assert a.generated_step == "generated" and b.generated_step != "generated"
    assert a.theta.shape == ((13,) if shared else (3, 13)) and a.theta.min() > 0
    assert int(a.refrac_count.max()) > 0 and a.trace.abs().sum() > 0


def test_the_torch_preference_and_generate_after_none_keep_the_torch_step():
    a = CurrentLIF(13)
    x = _inputs(steps=100)
    with torch.no_grad(), backends.prefer("torch"):
        for t in range(100):
            a(x[t])
    assert a.generated_step is not None and a.generated_step != "generated"
    b = CurrentLIF(13)
    b.GENERATE_AFTER = None
    with torch.no_grad():
        for t in range(100):
            b(x[t])
    assert b.generated_step is None


def test_a_step_that_changes_an_attribute_is_not_generated():
    """A counter kept in a plain attribute: a kernel would keep the value it was recorded with
    (silently wrong after step 100 here), so the step runs as written, in a loop and in Unroll."""
    from pysnn.connection import Linear
    from pysnn.engine import explain
    from pysnn.multistep import Unroll
    from pysnn.network import SNNNetwork

    class Counting(Neuron):
        def __init__(self, n):
            super().__init__(n)
            self.register_state("v", 0.0)
            self.t = 0

        def step(self, x):
            self.t += 1
            self.v = self.v * 0.9 + x * float(self.t < 100)
            s = self.fire(self.v - 1.0)
            self.v = self.v * (1 - s)
            return s

    a, b = _pair(lambda: Counting(13))
    x = _inputs(steps=200, scale=0.5)
    with torch.no_grad():
        sa = torch.stack([a(x_t) for x_t in x])
        sb = torch.stack([b(x_t) for x_t in x])
    assert torch.equal(sa, sb) and sa[:100].sum() > 0 and sa[110:].sum() == 0
    assert a.t == 200 and "step changes t, which is not registered state" in a.generated_step

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.fc, self.neuron = Linear(13, 13), Counting(13)

        def forward(self, x):
            return self.neuron(self.fc(x))

    net = Net()
    assert "step changes t" in dict(explain(net, x).fallbacks)["neuron"]


GAIN = 1.0


class _Global(Neuron):
    def __init__(self, n):
        super().__init__(n)
        self.register_state("v", 0.0)

    def step(self, x):
        self.v = self.v * 0.9 + x * GAIN
        s = self.fire(self.v - 1.0)
        self.v = self.v * (1 - s)
        return s


class _ClassAttribute(_Global):
    SCALE = 1.0

    def step(self, x):
        self.v = self.v * 0.9 + x * self.SCALE
        s = self.fire(self.v - 1.0)
        self.v = self.v * (1 - s)
        return s


@pytest.mark.parametrize(
    "factory, source",
    [(_Global, "the global 'GAIN'"), (_ClassAttribute, "the class attribute 'SCALE'")],
)
def test_a_step_reading_data_outside_the_neuron_is_not_generated(factory, source):
    """A kernel would keep GAIN / SCALE as recorded while the loop re-reads them: the step runs
    as written, and a change of the value at step 100 is seen (torch step loop's spikes)."""
    global GAIN
    a, b = _pair(lambda: factory(13))
    x = _inputs(steps=200, scale=0.5)
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                if t == 100:
                    GAIN = 0.0
                    _ClassAttribute.SCALE = 0.0
                assert torch.equal(a(x[t]), b(x[t])), t
    finally:
        GAIN, _ClassAttribute.SCALE = 1.0, 1.0
    assert source in a.generated_step


def test_a_neuron_holding_a_mutable_object_is_not_generated():
    import types

    class Configured(Neuron):
        def __init__(self, n):
            super().__init__(n)
            self.register_state("v", 0.0)
            self.config = types.SimpleNamespace(gain=1.0)

        def step(self, x):
            self.v = self.v * 0.9 + x * self.config.gain
            s = self.fire(self.v - 1.0)
            self.v = self.v * (1 - s)
            return s

    a, b = _pair(lambda: Configured(13))
    x = _inputs(steps=200, scale=0.5)
    with torch.no_grad():
        for t in range(x.shape[0]):
            if t == 100:
                a.config.gain = b.config.gain = 0.0
            assert torch.equal(a(x[t]), b(x[t])), t
    assert "holds 'config' (SimpleNamespace)" in a.generated_step


def _lif_kwargs(cls, per_neuron, n=13):
    if not per_neuron:
        return {}
    g = torch.Generator().manual_seed(5)
    kwargs = dict(
        thresh=-52.0 + 3 * torch.rand(n, generator=g),
        v_reset=-65.0 + torch.rand(n, generator=g),
        refrac=torch.randint(0, 4, (n,), generator=g).double(),
        tau_trace=10.0 + 10 * torch.rand(n, generator=g),
        trace_scale=0.5 + torch.rand(n, generator=g),
    )
    if cls is LIFNeuron:
        kwargs["tau_v"] = 20.0 + 100 * torch.rand(n, generator=g)
    return kwargs


@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per-neuron"])
@pytest.mark.parametrize("mode", ["additive", "reset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", [LIFNeuron, IFNeuron])
def test_builtin_lif_single_steps_are_generated_and_the_torch_steps_bit_for_bit(
    cls, dtype, mode, per_neuron
):
    """The built-in LIF and IF neurons are ordinary users of the mechanism: from their second
    step on, their single steps run the kernel generated from their step (int64 refractory
    counter included), with the values of the torch step (the registry's ``"torch"``
    preference) bit for bit: spikes, v, refractory counter, trace."""
    a = cls(13, trace_mode=mode, **_lif_kwargs(cls, per_neuron)).to(dtype)
    b = copy.deepcopy(a)
    x = _inputs(steps=120, dtype=dtype, scale=9.0)
    with torch.no_grad():
        for t in range(x.shape[0]):
            sa = a(x[t])
            with backends.prefer("torch"):
                sb = b(x[t])
            assert torch.equal(sa, sb), t
            _assert_same(a, b)
    assert a.generated_step == "generated"
    assert b.generated_step != "generated"
    assert a.refrac_count.dtype is torch.int64 and int(a.refrac_count.max()) > 0


def test_builtin_lif_constant_edits_are_seen_at_the_next_step():
    """Constants of a built-in LIF neuron edited in place or through ``.data`` between
    generated steps take effect at the next step (the kernel is generated again)."""
    a = LIFNeuron(13, refrac=torch.full((13,), 2.0))
    b = copy.deepcopy(a)
    x = _inputs(steps=90, scale=9.0)
    edits = {
        20: lambda n: n.thresh.data.fill_(-55.0),
        40: lambda n: n.refrac.mul_(2.0),
        60: lambda n: setattr(n.v_reset, "data", torch.full((), -60.0)),
    }
    with torch.no_grad():
        for t in range(x.shape[0]):
            if t in edits:
                edits[t](a), edits[t](b)
            sa = a(x[t])
            with backends.prefer("torch"):
                sb = b(x[t])
            assert torch.equal(sa, sb), t
            _assert_same(a, b)
    assert a.generated_step == "generated"


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda: CurrentLIF(13), id="CurrentLIF"),
        pytest.param(lambda: LIFNeuron(13), id="LIF"),
    ],
)
def test_batch_sizes_back_and_forth(factory, monkeypatch):
    """An input of another batch size leaves the generated step (the state is made for the
    new batch size) and keeps its kernel: the steps of each batch size are the torch steps,
    the state never read or written at the wrong size, and the kernel generated once."""
    made = []
    original = neuron_module.generate
    monkeypatch.setattr(neuron_module, "generate", lambda *args: made.append(1) or original(*args))
    a = factory()
    a.GENERATE_AFTER = 2
    b = copy.deepcopy(a)
    b.GENERATE_AFTER = None
    with torch.no_grad():
        for batch in (3, 5, 3, 1, 3):
            y = _inputs(steps=12, batch=batch, scale=9.0, seed=batch)
            for t in range(y.shape[0]):
                sa = a(y[t])
                with backends.prefer("torch"):
                    sb = b(y[t])
                assert torch.equal(sa, sb), (batch, t)
                _assert_same(a, b)
            assert a.generated_step == "generated"
    assert len(made) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_adaptive_lif_edits_modes_batches_and_resets_follow_the_torch_step(shared, dtype):
    """Between generated steps of an AdaptiveLIFNeuron: tau_theta, theta_plus and thresh
    edited through .data or in place, eval() and train() (a shared theta frozen, then learned
    again), reset_state, reset_theta, batch sizes changing: every step equals the torch
    step's, state and theta included, bit for bit."""
    a = _adaptive(shared, per_neuron=True).to(dtype)
    b = copy.deepcopy(a)
    edits = {
        15: lambda n: n.tau_theta.data.mul_(0.5),
        25: lambda n: n.theta_plus.mul_(2.0),
        35: lambda n: n.thresh.data.add_(1.0),
        45: lambda n: n.eval(),
        60: lambda n: n.train(),
        70: lambda n: n.reset_state(),
        80: lambda n: n.reset_theta(),
    }
    generated = []
    with torch.no_grad():
        for t in range(110):
            if t in edits:
                edits[t](a), edits[t](b)
            batch = 5 if 50 <= t < 90 else 3
            x = _inputs(steps=1, batch=batch, dtype=dtype, scale=9.0, seed=t)[0]
            sa = a(x)
            generated.append(a.generated_step == "generated")
            with backends.prefer("torch"):
                sb = b(x)
            assert torch.equal(sa, sb), t
            _assert_same(a, b)
    assert sum(generated) > 90 and a.theta.abs().sum() > 0


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda: neuron_module.Input(13), id="Input"),
        pytest.param(lambda: _adaptive(False, False), id="AdaptiveLIF"),
        pytest.param(lambda: _adaptive(True, False), id="AdaptiveLIF-shared"),
    ],
)
def test_a_non_finite_input_to_the_generated_step_raises_with_the_state_untouched(factory):
    """With value checks on, a NaN or an infinity in the input of a generated step raises the
    general step's ValueError before anything is updated (theta included); with checks off
    it runs."""
    from pysnn import set_checks

    a = factory()
    with torch.no_grad():
        for t in range(5):
            a(_inputs(steps=1, scale=9.0, seed=t)[0])
        assert a.generated_step == "generated"
        before = {k: v.clone() for k, v in _state(a).items()}
        x = _inputs(steps=1, scale=9.0, seed=9)[0]
        x[1, 4] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            a(x)
        for key, value in _state(a).items():
            assert torch.equal(value, before[key]), key
        x[1, 4] = float("inf")
        with pytest.raises(ValueError, match="inf"):
            a(x)
        assert a.generated_step == "generated"
        set_checks(False)
        try:
            a(x)
        finally:
            set_checks(True)


def test_a_spike_count_reduce_is_called_at_every_step():
    """A shared theta's spike_count_reduce (a collective over processes, set by
    pysnn.distributed.data_parallel) is a function the neuron holds: a kernel would not call
    it, so the step runs as written and calls it at every step (and the recording, which
    notes the call, never calls it)."""
    calls = []

    def doubled(counts):
        calls.append(1)
        return counts * 2.0

    a = _adaptive(True, False)
    b = copy.deepcopy(a)
    a.spike_count_reduce = b.spike_count_reduce = doubled
    x = _inputs(steps=40, scale=9.0)
    with torch.no_grad():
        for t in range(x.shape[0]):
            sa = a(x[t])
            with backends.prefer("torch"):
                sb = b(x[t])
            assert torch.equal(sa, sb) and torch.equal(a.theta, b.theta), t
    assert len(calls) == 80 and a.theta.abs().sum() > 0
    assert "step calls 'spike_count_reduce'" in a.generated_step


class Homeostatic(Neuron):
    """A user's neuron with a per-neuron threshold offset (a buffer, shared by the batch)
    that rises with the spikes summed over the batch and relaxes back."""

    def __init__(self, n):
        super().__init__(n)
        self.register_constant("decay", 0.95)
        self.register_state("v", 0.0)
        self.register_buffer("offset", torch.zeros(n))

    def step(self, x):
        self.v = self.v * 0.9 + x
        s = self.fire(self.v - (1.0 + self.offset))
        self.v = self.v * (1 - s)
        self.offset = self.offset * self.decay + 0.1 * s.sum(0)
        return s


def test_a_users_per_neuron_state_in_the_loop_and_under_unroll():
    """A per-neuron buffer the step assigns is per-neuron state: the generated single step
    and the generated T-step kernel under Unroll (the steps run one after the other, each
    updating it after all its elements) give the torch step loop's spikes, state and offset
    bit for bit; the offset is not guarded as a constant (the kernel is generated once)."""
    from pysnn.engine import explain
    from pysnn.multistep import Unroll

    a, b = _pair(lambda: Homeostatic(13))
    x = _inputs(steps=200, scale=0.6)
    with torch.no_grad():
        for t in range(x.shape[0]):
            assert torch.equal(a(x[t]), b(x[t])), t
            _assert_same(a, b)
    assert a.generated_step == "generated" and a.offset.min() > 0
    unrolled = copy.deepcopy(b)
    unrolled.GENERATE_AFTER = Homeostatic.GENERATE_AFTER  # (b, the reference, never generates)
    assert explain(unrolled, x[:1]).backends[""] == "c-generated"
    y = _inputs(steps=80, scale=0.6, seed=4)
    for batch in (3, 1):
        with torch.no_grad():
            got = Unroll(unrolled, reset=False)(y[:, :batch].contiguous())
            want = torch.stack([b(y[t, :batch]) for t in range(y.shape[0])])
        assert torch.equal(got, want)
        _assert_same(unrolled, b)
    # under autograd the step runs as written (the offset is learned from the spikes)
    z = y[:20].clone().requires_grad_(True)
    assert Unroll(unrolled, reset=False)(z).requires_grad


class _GradedSum(Homeostatic):
    def step(self, x):
        self.v = self.v * 0.9 + x
        s = self.fire(self.v - 1.0)
        self.offset = self.offset + self.v.sum(0)
        self.v = self.v * (1 - s)
        return s


class _EarlyUse(Homeostatic):
    def step(self, x):
        s = self.fire(self.v * 0.9 + x - 1.0)
        self.v = self.v * 0.9 + x - s * s.sum(0)
        self.offset = self.offset + s.sum(0)
        return s


@pytest.mark.parametrize(
    "factory, why",
    [
        (_GradedSum, "of the step's spikes only"),
        (_EarlyUse, "computes a per-element value from a sum over the batch"),
    ],
)
def test_batch_sums_that_a_kernel_would_not_reproduce_are_refused(factory, why):
    """A sum over the batch of graded values (its rounding depends on torch's order of
    summation) or read per element in the same step: the step runs as written."""
    a, b = _pair(lambda: factory(13))
    x = _inputs(steps=80, scale=0.6)
    with torch.no_grad():
        for t in range(x.shape[0]):
            assert torch.equal(a(x[t]), b(x[t])), t
            _assert_same(a, b)
    assert why in a.generated_step


def test_a_kernel_kept_for_another_batch_size_is_not_used_after_an_assignment():
    """A step generated at one batch size leaves its kernel for another (drop); an attribute
    the step reads assigned before the next step at that size must not run the kernel
    recorded with the old value (it did: a flag flipped after a batch-size change was
    ignored)."""

    class Gated(Neuron):
        def __init__(self, n):
            super().__init__(n)
            self.register_state("v", 0.0)
            self.leaky = True

        def step(self, x):
            self.v = (self.v * 0.8 if self.leaky else self.v) + x
            s = self.fire(self.v - 1.0)
            self.v = self.v * (1 - s)
            return s

    a, b = _pair(lambda: Gated(13))
    a.GENERATE_AFTER = 2
    with torch.no_grad():
        for t, batch in enumerate([3] * 10 + [5] * 30):
            if t == 11:
                a.leaky = b.leaky = False
            x = _inputs(steps=1, batch=batch, scale=0.4, seed=t)[0]
            assert torch.equal(a(x), b(x)), t
            _assert_same(a, b)
    assert a.generated_step == "generated"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernels_check_of_non_finite_inputs_is_exact(dtype):
    """The generated single step checks its input in the kernel, before writing anything: a
    NaN, inf or -inf anywhere (first, a middle block, last element; 2 x 5000 elements, two
    blocks) raises the general step's ValueError with the state untouched; the largest
    finite values, the smallest subnormal and -0.0 pass and give the torch step's values."""
    from pysnn.neuron import Input

    info = torch.finfo(dtype)
    finite = [info.max, -info.max, info.tiny, info.smallest_normal / 4, -0.0]
    a = Input(5000, trace_scale=1e-3).to(dtype)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for t in range(3):
            x = _inputs(steps=1, batch=2, n=5000, dtype=dtype, seed=t)[0]
            assert torch.equal(a(x), b(x))
        assert a.generated_step == "generated"
        for value in (float("nan"), float("inf"), float("-inf")):
            for index in (0, 4999, 5003, 9999):
                x = _inputs(steps=1, batch=2, n=5000, dtype=dtype, seed=index)[0]
                x.view(-1)[index] = value
                before = a.trace.clone()
                with pytest.raises(ValueError, match="NaN|inf"):
                    a(x)
                assert torch.equal(a.trace, before) and a.generated_step == "generated"
        x = _inputs(steps=1, batch=2, n=5000, dtype=dtype, seed=7)[0]
        x.view(-1)[: len(finite)] = torch.tensor(finite, dtype=dtype)
        x.view(-1)[-len(finite) :] = torch.tensor(finite, dtype=dtype)
        with backends.prefer("torch"):
            want = b(x)
        assert a(x) is x and torch.equal(x, want) and torch.equal(a.trace, b.trace)
