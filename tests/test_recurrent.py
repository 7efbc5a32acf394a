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


class ExternalInput(UserPopulation):
    def forward(self, x):  # an external input: not run_recurrent's step
        s = self.lif.spikes
        c = self.fc(s if s is not None else torch.zeros_like(x)).view(-1, 2, self.n)
        return self.lif(self.syn_e(c[:, 0]) + self.syn_i(c[:, 1]) + x)


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
        (ExternalInput, "the step uses its input"),
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
