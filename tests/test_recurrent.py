"""``pysnn.multistep.run_recurrent``: a recurrent population in one fused call, bit for bit the
step loop (issue #17: the Vogels-Abbott networks)."""

import pytest
import torch

import pysnn.native as native
from pysnn.engine import explain
from pysnn.multistep import Unroll, run_recurrent
from pysnn.network import SNNNetwork
from pysnn.neuron import LIFNeuron
from pysnn.sparse import SparseLinear, fixed_probability
from pysnn.synapse import ConductanceSynapse, ExponentialSynapse


def population(model, n=120, dtype=torch.float32, seed=0, batch=2):
    """``n`` LIF neurons, random sparse recurrent synapses onto two receptor groups (excitatory
    onto columns ``0..n-1``, inhibitory onto ``n..2n-1``), random weights and initial ``v``."""
    g = torch.Generator().manual_seed(seed)
    cuba = model == "cuba"
    lif = LIFNeuron(
        n, 0.1, thresh=-50.0, v_rest=-45.0, v_reset=-60.0, tau_v=20.0,
        refrac=5.0, surrogate=None,
    ).to(dtype)  # fmt: skip
    pairs = torch.unique(torch.randint(0, 2 * n * n, (10 * n,), generator=g))
    post, pre = pairs // n, pairs % n
    m = pairs.numel()
    exc, inh = torch.rand(m, generator=g), torch.rand(m, generator=g)
    weight = torch.where(post < n, exc * (4.0 if cuba else 1.2), -inh * (9.0 if cuba else 6.7))
    if not cuba:
        weight = weight.abs()  # conductances; the reversal potential makes them inhibitory
    fc = SparseLinear(n, 2 * n, torch.stack((post, pre)), 0.1, weight=weight).to(dtype)
    if cuba:
        synapses = (ExponentialSynapse(lif, 5.0), ExponentialSynapse(lif, 10.0))
    else:
        synapses = (ConductanceSynapse(lif, 5.0, 0.0), ConductanceSynapse(lif, 10.0, -80.0))
    for syn in synapses:
        syn.to(dtype)
    with torch.no_grad():
        lif(torch.zeros(batch, n, dtype=dtype))
        lif.v = (torch.rand(batch, n, generator=g) * 10 - 60).to(dtype)
    spikes = (torch.rand(batch, n, generator=g) < 0.1).to(dtype)
    return fc, synapses, lif, spikes


def run_and_state(fused, model, dtype, steps=(150, 100)):
    fc, synapses, lif, spikes = population(model, dtype=dtype)
    with native.enabled(fused), torch.no_grad():
        out = [run_recurrent(fc, synapses, lif, steps[0], spikes)]
        out.append(run_recurrent(fc, synapses, lif, steps[1]))  # continues from lif.spikes
    state = (lif.v, lif.trace, lif.refrac_count, lif.spikes, fc.arriving)
    return torch.cat(out), [t.clone() for t in state] + [s.g.clone() for s in synapses]


@pytest.mark.parametrize("model", ["cuba", "coba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_run_equals_the_step_loop_bit_for_bit(model, dtype):
    fused, fused_state = run_and_state(True, model, dtype)
    loop, loop_state = run_and_state(False, model, dtype)
    assert torch.equal(fused, loop)
    assert all(torch.equal(a, b) for a, b in zip(fused_state, loop_state))
    assert fused.sum() > 100  # the network is active, the comparison is not empty


def test_the_step_loop_is_what_the_docstring_says():
    """The fallback (and so the fused run) is ``s = lif(syn_e(x[:, 0]) + syn_i(x[:, 1]))`` with
    ``x = fc(s).view(B, 2, N)``, written out here by hand."""
    fc, synapses, lif, spikes = population("cuba", batch=1)
    fc2, synapses2, lif2, _ = population("cuba", batch=1)
    with torch.no_grad():
        got = run_recurrent(fc, synapses, lif, 40, spikes)
        s, expected = spikes, []
        for _ in range(40):
            x = fc2(s).view(1, 2, -1)
            s = lif2(synapses2[0](x[:, 0]) + synapses2[1](x[:, 1]))
            expected.append(s)
    assert torch.equal(got, torch.stack(expected))


def test_kept_references_keep_their_values_and_hooks_see_every_step():
    fc, synapses, lif, spikes = population("coba", batch=1)
    with torch.no_grad():
        spikes = run_recurrent(fc, synapses, lif, 1, spikes)[0]  # (creates the synapses' state)
        v0, g0 = lif.v, synapses[0].g
        v_before, g_before = v0.clone(), g0.clone()
        run_recurrent(fc, synapses, lif, 30, spikes)
        assert torch.equal(v0, v_before) and torch.equal(g0, g_before)
        assert not torch.equal(lif.v, v_before)
        calls = []
        handle = lif.register_forward_hook(lambda *a: calls.append(1))
        run_recurrent(fc, synapses, lif, 7)
        handle.remove()
    assert len(calls) == 7  # a hook must see each step: the step loop ran


def test_bad_arguments_are_refused_clearly():
    fc, synapses, lif, spikes = population("cuba", batch=1)
    other = LIFNeuron(120)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        run_recurrent(fc, synapses, lif, 0, spikes)
    with pytest.raises(ValueError, match="synapses must name at least one"):
        run_recurrent(fc, (), lif, 5, spikes)
    with pytest.raises(ValueError, match=r"synapses\[0\] does not feed neuron"):
        run_recurrent(fc, (ExponentialSynapse(other), synapses[1]), lif, 5, spikes)
    with pytest.raises(ValueError, match="spikes must be a"):
        run_recurrent(fc, synapses, lif, 5, torch.zeros(1, 7))
    with pytest.raises(ValueError, match="one group of 120 per synapse module"):
        run_recurrent(fc, synapses[:1], lif, 5, spikes)
    with pytest.raises(ValueError, match='record must be "raster" or "events"'):
        run_recurrent(fc, synapses, lif, 5, spikes, record="counts")


@pytest.mark.parametrize("fused", [True, False])
def test_event_recording_lists_the_raster_and_leaves_the_same_state(fused):
    """``record="events"`` gives the raster's spikes as ``(step, sample, neuron)`` rows, ordered
    by sample, step, neuron, and leaves every module as the raster run does."""
    outputs = []
    for record in ("raster", "events"):
        fc, synapses, lif, spikes = population("coba")
        with native.enabled(fused), torch.no_grad():
            out = run_recurrent(fc, synapses, lif, 120, spikes, record=record)
        state = [lif.v, lif.trace, lif.refrac_count, lif.spikes, fc.arriving, synapses[1].g]
        outputs.append((out, [t.clone() for t in state]))
    (raster, state_r), (events, state_e) = outputs
    step, sample, neuron = raster.nonzero().unbind(1)
    order = torch.argsort((sample * 120 + step) * raster.shape[2] + neuron)
    expected = torch.stack((step, sample, neuron), 1)[order]
    assert events.dtype == torch.int64 and torch.equal(events, expected)
    assert all(torch.equal(a, b) for a, b in zip(state_r, state_e))
    assert events.shape[0] > 50


class UserPopulation(SNNNetwork):
    """A Vogels-Abbott population as a user writes it, from public modules only: ``forward`` is
    one step, the connection reading the neurons' spikes of the step before."""

    def __init__(self, model="cuba", n=120, dtype=torch.float32, seed=0):
        super().__init__()
        self.n = n
        fc, synapses, lif, _ = population(model, n, dtype, seed, batch=1)
        lif.reset_state()
        self.lif, self.fc = lif, fc
        self.syn_e, self.syn_i = synapses

    def forward(self, x):
        s = self.lif.spikes
        if s is None:  # the first step after a reset: no spikes yet
            s = torch.zeros_like(x)
        c = self.fc(s).view(x.shape[0], 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]))


def _state(net):
    """Every module's state after a run (copies)."""
    lif = net.lif
    state = [lif.v, lif.trace, lif.refrac_count, lif.spikes, net.fc.arriving]
    return [t.clone() for t in state + [net.syn_e.g, net.syn_i.g]]


def _user_pair(model, dtype, batch=3, seed=0):
    """Two equal user populations, their state already set (a random v)."""
    a = UserPopulation(model, dtype=dtype, seed=seed)
    b = UserPopulation(model, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    v = (torch.rand(batch, a.n, generator=g) * 10 - 60).to(dtype)
    for net in (a, b):
        with torch.no_grad():
            net.lif(torch.zeros(batch, net.n, dtype=dtype))
            net.lif.v = v.clone()
    return a, b


@pytest.mark.parametrize("model", ["cuba", "coba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_users_population_through_unroll_is_its_step_loop_bit_for_bit(model, dtype):
    """The planner lowers a user's recurrent population to run_recurrent (explain: plan
    "recurrent", fused, on C): the step loop's spikes and every module's state, bit for bit,
    from a reset state (Unroll's default) and continuing from a set one."""
    a, b = _user_pair(model, dtype)
    x = torch.zeros(150, 3, a.n, dtype=dtype)
    with torch.no_grad():
        e = explain(a, x)
        assert e.plan == "recurrent", e
        if native.available():
            assert e.fused and e.fallbacks == [], e
            assert e.backends == {"fc": "c", "syn_e": "c", "syn_i": "c", "lif": "c"}
        else:  # PYSNN_NATIVE=0: run_recurrent runs its step loop, and explain says so
            assert not e.fused and "C backend is off" in e.fallbacks[0][1]
        for reset in (False, True):  # from the set state, then after a reset
            got = Unroll(a, reset=reset)(x)
            if reset:
                b.reset_state()
            expected = torch.stack([b(step) for step in x])
            assert torch.equal(got, expected)
            assert all(torch.equal(p, q) for p, q in zip(_state(a), _state(b)))
            assert expected.sum() > 50  # active: the comparison is not empty


def test_users_population_with_a_hook_or_a_gradient_runs_the_loop_and_explain_says_why():
    """A forward hook on the neuron must see every step, and a gradient needs autograd: the
    population is stepped (run_recurrent's loop), with the step loop's results, and explain
    names the reason."""
    a, b = _user_pair("coba", torch.float32, batch=2)
    x = torch.zeros(60, 2, a.n)
    calls = []
    a.lif.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        e = explain(a, x)
        got = Unroll(a, reset=False)(x)
        expected = torch.stack([b(step) for step in x])
    assert e.plan == "recurrent" and not e.fused
    assert ("lif", "run_recurrent steps the population: a forward hook must see every step") in (
        e.fallbacks
    )
    assert len(calls) == 60 and torch.equal(got, expected)
    assert all(torch.equal(p, q) for p, q in zip(_state(a), _state(b)))

    a, b = _user_pair("cuba", torch.float64, batch=2)
    x = torch.zeros(40, 2, a.n, dtype=torch.float64)
    e = explain(a, x)  # (grad mode on: the weights are parameters)
    assert e.plan == "recurrent" and not e.fused and "a gradient is wanted" in e.fallbacks[0][1]
    got = Unroll(a, reset=False)(x)
    expected = torch.stack([b(step) for step in x])
    assert torch.equal(got, expected)
    assert all(torch.equal(p, q) for p, q in zip(_state(a), _state(b)))


class ExternalBetween(UserPopulation):
    def forward(self, x):  # the input between the synapses' outputs: not run_recurrent's sum
        s = self.lif.spikes
        c = self.fc(s if s is not None else torch.zeros_like(x)).view(-1, 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + x + self.syn_i(c[:, 1]))


class Swapped(UserPopulation):
    def forward(self, x):  # the groups summed in another order than run_recurrent sums them
        s = self.lif.spikes
        c = self.fc(s if s is not None else torch.zeros_like(x)).view(-1, 2, self.n)
        return self.lif(self.syn_i(c[:, 1]) + self.syn_e(c[:, 0]))


class FromTrace(UserPopulation):
    def forward(self, x):  # the connection reads the neurons' trace, not their spikes
        s = self.lif.trace
        c = self.fc(s if s is not None else torch.zeros_like(x)).view(-1, 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]))


@pytest.mark.parametrize(
    "cls, why",
    [
        (ExternalBetween, "the step's input is added between the synapses' outputs"),
        (Swapped, "do not take the groups c[:, 0], c[:, 1], ... in order"),
        (FromTrace, "no connection from lif.spikes"),
    ],
)
def test_other_recurrent_steps_keep_the_step_loop(cls, why):
    """What is not exactly run_recurrent's step is not lowered to it: stepped as written."""
    from pysnn.engine import capture
    from pysnn.engine.plan import recurrent_spec

    torch.manual_seed(0)
    a, b = cls(), cls()
    b.load_state_dict(a.state_dict())
    x = (torch.rand(50, 2, a.n) < 0.05).float() * 3.0
    spec, reason = recurrent_spec(a, capture(a, x[0]), x[0])
    assert spec is None and why in reason
    assert explain(a, x).plan == "step-wise"
    with torch.no_grad():
        got = Unroll(a)(x)
        b.reset_state()
        expected = torch.stack([b(step) for step in x])
    assert torch.equal(got, expected) and expected.sum() > 0


@pytest.mark.parametrize("sparse", [True, False])
def test_one_receptor_group_without_a_view(sparse):
    """``G == 1``: ``lif(syn(fc(lif.spikes)))``. A SparseLinear runs fused; a dense Linear runs
    run_recurrent's loop, and explain names the connection. The loop's results either way."""
    from pysnn.connection import Linear

    class One(SNNNetwork):
        def __init__(self):
            super().__init__()
            _, _, lif, _ = population("cuba", n=80, batch=1)
            lif.reset_state()
            self.lif, self.syn = lif, ExponentialSynapse(lif, 5.0)
            if sparse:
                g = torch.Generator().manual_seed(2)
                self.fc = SparseLinear(80, 80, fixed_probability(80, 80, 0.1, generator=g), 0.1)
            else:
                self.fc = Linear(80, 80, 0.1)
            with torch.no_grad():
                self.fc.weight.uniform_(-2.0, 6.0, generator=torch.Generator().manual_seed(1))

        def forward(self, x):
            s = self.lif.spikes
            return self.lif(self.syn(self.fc(s if s is not None else torch.zeros_like(x))))

    torch.manual_seed(0)
    a, b = One(), One()
    b.load_state_dict(a.state_dict())
    x = torch.zeros(300, 2, 80)  # (all fire at the first step, then again from ~220 on)
    with torch.no_grad():
        e = explain(a, x)
        got = Unroll(a)(x)
        b.reset_state()
        expected = torch.stack([b(step) for step in x])
    assert e.plan == "recurrent"
    if sparse and native.available():
        assert e.fused, e
    elif not sparse:
        assert not e.fused and "the connection is a Linear" in e.fallbacks[0][1]
    assert torch.equal(got, expected) and expected[1:].sum() > 0
    assert torch.equal(a.lif.v, b.lif.v) and torch.equal(a.syn.g, b.syn.g)


# --- an external input current (Brunel-type networks): run_recurrent(external=...) ---------


class InputFirst(UserPopulation):
    def forward(self, x):
        c = self.fc(self.lif.spikes).view(-1, 2, self.n)
        return self.lif(x + self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]))


class InputLast(UserPopulation):
    def forward(self, x):
        c = self.fc(self.lif.spikes).view(-1, 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]) + x)


class ScaledFirst(UserPopulation):
    def forward(self, x):
        c = self.fc(self.lif.spikes).view(-1, 2, self.n)
        return self.lif(3.0 * x + self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]))


class ScaledLast(UserPopulation):
    gain = 0.7  # (a plain attribute: the plan depends on it, see pysnn.engine.plan.fingerprint)

    def forward(self, x):
        c = self.fc(self.lif.spikes).view(-1, 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]) + x * self.gain)


def _driven_pair(cls, model, dtype, batch):
    """Two equal user populations of ``cls``, their state set (batch ``batch``, a random v)."""
    a, b = cls(model, dtype=dtype), cls(model, dtype=dtype)
    v = (torch.rand(batch, a.n, generator=torch.Generator().manual_seed(5)) * 10 - 60).to(dtype)
    for net in (a, b):
        with torch.no_grad():
            net.lif(torch.zeros(batch, net.n, dtype=dtype))
            net.lif.v = v.clone()
    return a, b


def _drive(steps, batch, n, dtype, seed=1):
    """A random input current (mV per step), strong enough to make the neurons fire."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, n, generator=g) * 1.7).to(dtype)


@pytest.mark.parametrize("cls", [InputFirst, InputLast, ScaledFirst, ScaledLast])
@pytest.mark.parametrize("model", ["cuba", "coba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_users_population_with_an_input_current_is_fused_and_its_step_loop_bit_for_bit(
    cls, model, dtype, batch
):
    """A population driven by the step's input (first or last in the neuron's input sum,
    optionally times a number) is lowered to run_recurrent(external=...): explain says fused,
    and the spikes and every module's state are the user's step loop's, bit for bit."""
    a, b = _driven_pair(cls, model, dtype, batch)
    x = _drive(200, batch, a.n, dtype)
    with torch.no_grad():
        e = explain(a, x)
        assert e.plan == "recurrent", e
        if native.available():
            assert e.fused and e.fallbacks == [], e
        got = Unroll(a, reset=False)(x)
        expected = torch.stack([b(step) for step in x])
    assert torch.equal(got, expected)
    assert all(torch.equal(p, q) for p, q in zip(_state(a), _state(b)))
    assert expected[1:].sum() > 50  # active: the comparison is not empty


@pytest.mark.parametrize("fused", [True, False])
def test_an_input_current_needing_a_gradient_runs_the_loop(fused):
    """Under autograd the fused loop (no backward pass) does not run: explain says why, and
    the step loop's results come back (with or without the C kernels)."""
    a, b = _driven_pair(InputLast, "cuba", torch.float64, 2)
    for net in (a, b):
        net.fc.weight.requires_grad_(False)
    x = _drive(40, 2, a.n, torch.float64).requires_grad_()
    with native.enabled(fused):
        e = explain(a, x)
        got = Unroll(a, reset=False)(x)
        expected = torch.stack([b(step) for step in x])
    assert not e.fused and any("a gradient is wanted" in why for _, why in e.fallbacks), e
    assert torch.equal(got, expected) and got.requires_grad == expected.requires_grad
    assert all(torch.equal(p, q) for p, q in zip(_state(a), _state(b)))


class ExternalTwice(UserPopulation):
    def forward(self, x):
        c = self.fc(self.lif.spikes).view(-1, 2, self.n)
        return self.lif(x + self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]) + x)


class ExternalTimesTensor(UserPopulation):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("gain", torch.linspace(0.5, 1.5, self.n))

    def forward(self, x):
        c = self.fc(self.lif.spikes).view(-1, 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]) + self.gain * x)


class ConstantBias(UserPopulation):
    def forward(self, x):
        c = self.fc(self.lif.spikes).view(-1, 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]) + 0.3)


@pytest.mark.parametrize(
    "cls, why",
    [
        (ConstantBias, "a number is added to the synapses' outputs"),
        (ExternalBetween, "the step's input is added between the synapses' outputs"),
        (ExternalTwice, "the step uses its input other than once"),
        (ExternalTimesTensor, "the step uses its input other than once"),
    ],
)
def test_other_uses_of_the_input_are_stepped_and_explain_names_why(cls, why):
    """An input used otherwise than once, first or last, as ``x`` or ``number * x``, or a
    constant added, is not lowered: explain's fallbacks name the reason, and the step loop's
    results come back."""
    a, b = _driven_pair(cls, "cuba", torch.float32, 2)
    x = _drive(60, 2, a.n, torch.float32)
    with torch.no_grad():
        e = explain(a, x)
        got = Unroll(a, reset=False)(x)
        expected = torch.stack([b(step) for step in x])
    assert e.plan == "step-wise" and not e.fused
    assert ("lif", f"not a recurrent population's step: {why}") in [
        (where, reason[: len("not a recurrent population's step: ") + len(why)])
        for where, reason in e.fallbacks
    ], e
    assert torch.equal(got, expected) and expected.sum() > 0


def _external_run(fused, model, dtype, first, record="raster", batch=2, steps=150):
    fc, synapses, lif, spikes = population(model, dtype=dtype, batch=batch)
    external = _drive(steps, batch, 120, dtype, seed=7)
    with native.enabled(fused), torch.no_grad():
        out = run_recurrent(
            fc, synapses, lif, steps, spikes, record, external=external, external_first=first
        )
    state = [lif.v, lif.trace, lif.refrac_count, lif.spikes, fc.arriving]
    return out, [t.clone() for t in state] + [s.g.clone() for s in synapses]


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("model", ["cuba", "coba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_run_recurrent_with_an_external_input_fused_equals_its_loop(
    first, model, dtype, monkeypatch
):
    """run_recurrent(external=...) in the fused C loop and in its step loop
    (native.enabled(False)): the same spikes and state, bit for bit; raster and events."""
    calls = []
    kernel = native.recurrent_steps

    def counted(*args, **kwargs):
        calls.append(kwargs.get("external") is not None)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(native, "recurrent_steps", counted)
    for record in ("raster", "events"):
        fused, fused_state = _external_run(True, model, dtype, first, record)
        loop, loop_state = _external_run(False, model, dtype, first, record)
        assert torch.equal(fused, loop)
        assert all(torch.equal(p, q) for p, q in zip(fused_state, loop_state))
    assert loop.shape[0] > 100  # active: the comparison is not empty
    if native.available():
        assert calls == [True, True]  # the fused runs ran the C loop, with the input


def test_the_external_input_is_summed_where_external_first_says():
    """``external_first`` changes the sum's order, so the state differs in the last bits: the
    comparisons above would see a kernel that added the input elsewhere. The loop is the
    docstring's, written out by hand."""
    fc, synapses, lif, spikes = population("coba", batch=1)
    fc2, synapses2, lif2, _ = population("coba", batch=1)
    external = _drive(60, 1, 120, torch.float32, seed=3)
    with torch.no_grad():
        got = run_recurrent(fc, synapses, lif, 60, spikes, external=external, external_first=True)
        s, expected = spikes, []
        for t in range(60):
            x = fc2(s).view(1, 2, -1)
            s = lif2(external[t] + synapses2[0](x[:, 0]) + synapses2[1](x[:, 1]))
            expected.append(s)
    assert torch.equal(got, torch.stack(expected)) and torch.equal(lif.v, lif2.v)
    _, first_state = _external_run(True, "coba", torch.float32, True)
    _, last_state = _external_run(True, "coba", torch.float32, False)
    assert not torch.equal(first_state[0], last_state[0])  # v: the order shows in the last bit


def test_a_non_finite_external_input_is_refused_at_its_step_as_by_the_loop():
    """A NaN in the input: the neuron refuses it at that step, as in the step loop, after the
    same earlier steps (the fused call leaves it to the loop)."""
    states = []
    for fused in (True, False):
        fc, synapses, lif, spikes = population("cuba", batch=2)
        external = _drive(30, 2, 120, torch.float32)
        external[20, 1, 5] = float("nan")
        with native.enabled(fused), torch.no_grad():
            with pytest.raises(ValueError, match="NaN"):
                run_recurrent(fc, synapses, lif, 30, spikes, external=external)
        states.append([lif.v.clone(), synapses[0].g.clone()])
    assert all(torch.equal(p, q) for p, q in zip(*states))


def test_bad_external_inputs_are_refused_clearly():
    fc, synapses, lif, spikes = population("cuba", batch=2)
    with pytest.raises(ValueError, match=r"external must be a \(steps, B, \*neuron.shape\)"):
        run_recurrent(fc, synapses, lif, 5, spikes, external=torch.zeros(5, 1, 120))
    with pytest.raises(ValueError, match="external must be a"):
        run_recurrent(fc, synapses, lif, 5, spikes, external=[0.0] * 5)
    with pytest.raises(TypeError, match="external_first must be a bool"):
        run_recurrent(
            fc, synapses, lif, 5, spikes, external=torch.zeros(5, 2, 120), external_first=1
        )
