"""The public Neuron extension API and the PyTorch contract of neurons (issue #12).

Live constants, nn.Parameter constants, default surrogate, one update semantics on every path,
and user-defined neurons written on the public API only.
"""

import copy
import math

import pytest
import torch
from torch import nn

import pysnn.native as native
from pysnn.neuron import IFNeuron, IzhikevichNeuron, LIFNeuron, Neuron
from pysnn.surrogate import DEFAULT, FastSigmoid


def run(neuron, x):
    """Spikes ``(T, B, ...)`` of the step loop over ``x``."""
    return torch.stack([neuron(step) for step in x])


def drive(steps=40, batch=2, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch, n, generator=g) * 6.0


# ------------------------------------------------------------------------ live constants
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    "name,value",
    [("thresh", -60.0), ("tau_v", 10.0), ("v_rest", -62.0), ("v_reset", -70.0), ("refrac", 1.0)],
)
def test_edited_constant_fires_like_a_fresh_neuron(fused, name, value):
    """An in-place edit and an assignment both behave exactly like a neuron built with the value."""
    x = drive()
    with native.enabled(fused), torch.no_grad():
        fresh = run(LIFNeuron(6, **{name: value}), x)
        edited, assigned = LIFNeuron(6), LIFNeuron(6)
        run(edited, x[:3])  # compute (and cache) the derived factors of the old value first
        run(assigned, x[:3])
        getattr(edited, name).fill_(value)
        setattr(assigned, name, value)
        edited.reset_state()  # the reset reads the live v_rest too
        assigned.reset_state()
        assert torch.equal(run(edited, x), fresh)
        assert torch.equal(run(assigned, x), fresh)
    assert fresh.sum() > 5


def test_constants_differ_in_effect():
    """The test above cannot pass by accident: each value changes the spike train."""
    x = drive()
    with torch.no_grad():
        base = run(LIFNeuron(6), x)
        for name, value in [("thresh", -60.0), ("tau_v", 10.0), ("refrac", 1.0)]:
            assert not torch.equal(run(LIFNeuron(6, **{name: value}), x), base), name


def test_assigned_tensor_is_validated_and_converted():
    lif = LIFNeuron(3).double()
    lif.thresh = torch.tensor([-60.0, -55.0, -50.0])  # float32 into a float64 neuron
    assert lif.thresh.dtype == torch.float64 and "thresh" in lif.state_dict()
    with pytest.raises(ValueError, match="tau_v must be > 0"):
        lif.tau_v = -1.0
    with pytest.raises(ValueError, match="thresh"):
        lif.thresh = torch.zeros(4)
    with pytest.raises(TypeError, match="thresh must be a number or a tensor"):
        lif.thresh = "high"


def test_dt_is_live_and_validated():
    lif = LIFNeuron(1, refrac=2.0, tau_v=10.0)
    lif(torch.zeros(1, 1))
    lif.dt = 0.5
    assert float(lif.params.decay) == pytest.approx(math.exp(-0.05))
    assert int(lif.params.refrac_steps) == 4
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        lif.dt = 0.0


def test_storage_swap_through_data_is_seen():
    """``.data = ...`` on a constant buffer moves its memory: derived values follow."""
    lif = LIFNeuron(2, tau_v=10.0)
    lif(torch.zeros(1, 2))
    lif.tau_v.data = torch.tensor(20.0)
    assert float(lif.params.decay) == pytest.approx(math.exp(-1 / 20))


def test_load_state_dict_updates_derived_factors():
    source, target = LIFNeuron(2, tau_v=7.0, refrac=3.0), LIFNeuron(2)
    target(torch.zeros(1, 2))
    target.load_state_dict(source.state_dict())
    assert float(target.params.decay) == pytest.approx(math.exp(-1 / 7))
    assert int(target.params.refrac_steps) == 3


# ------------------------------------------------------------------------ nn.Parameter constants
def test_parameter_constant_stays_that_parameter_and_learns():
    tau = nn.Parameter(torch.full((4,), 20.0))
    thresh = nn.Parameter(torch.tensor(1.0))
    lif = LIFNeuron(4, tau_v=tau, thresh=thresh, v_rest=0.0, v_reset=0.0, refrac=0.0)
    assert lif.tau_v is tau and lif.thresh is thresh
    assert {id(p) for p in lif.parameters()} == {id(tau), id(thresh)}
    x = torch.full((8, 2, 4), 0.3)
    out = run(lif, x)
    loss = out.sum() + lif.v.sum()
    loss.backward()
    assert tau.grad is not None and torch.isfinite(tau.grad).all() and (tau.grad != 0).all()
    assert thresh.grad is not None and thresh.grad != 0
    # an optimiser step changes the decay at once (a Parameter is never cached)
    before = lif.params.decay.detach().clone()
    torch.optim.SGD([tau], lr=100.0).step()
    assert not torch.equal(lif.params.decay.detach(), before)
    torch.testing.assert_close(lif.params.decay.detach(), torch.exp(-1.0 / tau.detach()))


def test_learned_tau_gradient_matches_finite_differences():
    """d(v after 3 subthreshold steps)/d(tau_v), against a central difference in float64."""
    x = torch.tensor([[[1.0]], [[0.5]], [[0.25]]], dtype=torch.float64)

    def final_v(tau_value):
        tau = nn.Parameter(torch.tensor(tau_value, dtype=torch.float64))
        lif = LIFNeuron(  # detached reset: no surrogate term in dv/dtau
            1, tau_v=tau, thresh=100.0, v_rest=0.0, v_reset=0.0, detach_reset=True
        ).double()
        run(lif, x)
        return lif.v.sum(), tau

    v, tau = final_v(5.0)
    v.backward()
    eps = 1e-6
    numeric = (final_v(5.0 + eps)[0] - final_v(5.0 - eps)[0]).detach() / (2 * eps)
    assert float(tau.grad) == pytest.approx(float(numeric), rel=1e-6)
    assert float(tau.grad) > 0  # a longer time constant keeps more of the input


def test_parameter_assignment_is_kept_and_plain_values_rejected_for_parameters():
    lif = LIFNeuron(2)
    lif.tau_v = nn.Parameter(torch.tensor(30.0))
    assert isinstance(lif.tau_v, nn.Parameter) and "tau_v" in dict(lif.named_parameters())
    with pytest.raises(TypeError, match="tau_v is an nn.Parameter"):
        lif.tau_v = 10.0


# ------------------------------------------------------------------------ gradients by default
def test_default_neuron_passes_gradients():
    lif = LIFNeuron(3, thresh=1.0, v_rest=0.0, v_reset=0.0)
    assert lif.surrogate == DEFAULT
    x = torch.full((1, 3), 0.99, requires_grad=True)
    s = lif(x)
    assert s.sum() == 0  # exact Heaviside forward
    s.sum().backward()
    # fast sigmoid, k = 1/mV, at v - thresh = -0.01 mV
    expected = 1.0 / (1.0 * 0.01 + 1.0) ** 2
    torch.testing.assert_close(x.grad, torch.full((1, 3), expected))


def test_surrogate_none_gives_the_pure_step():
    lif = LIFNeuron(3, surrogate=None)
    x = torch.full((1, 3), 20.0, requires_grad=True)
    assert not lif(x).requires_grad


@pytest.mark.parametrize("make", [lambda: IFNeuron(2), lambda: IzhikevichNeuron(2)])
def test_every_spiking_neuron_defaults_to_the_surrogate(make):
    neuron = make()
    assert neuron.surrogate == DEFAULT
    x = torch.full((1, 2), 30.0, requires_grad=True)
    out = run(neuron, x.expand(3, 1, 2))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------ one update semantics
@pytest.mark.parametrize("grad", [False, True])
def test_same_code_same_result_on_fast_and_torch_paths(grad):
    x = drive(steps=50, batch=3)
    results = []
    for fused in (True, False):
        lif = LIFNeuron(6, tau_v=15.0, refrac=2.0)
        with native.enabled(fused), torch.set_grad_enabled(grad):
            lif(x[0])
            v0, trace0 = lif.v, lif.trace
            v0_value = v0.clone()
            spikes = run(lif, x[1:])
        assert torch.equal(v0, v0_value)  # the old state tensor was not modified
        results.append((spikes, lif.v, lif.trace, lif.refrac_count, trace0))
    for a, b in zip(*results):
        assert torch.equal(a.detach(), b.detach())


# ------------------------------------------------------------------------ API errors
def test_register_state_and_constant_errors():
    neuron = Neuron(3)
    with pytest.raises(ValueError, match="already has an attribute 'trace'"):
        neuron.register_state("trace")
    with pytest.raises(TypeError, match="initial of state 'w'"):
        neuron.register_state("w", initial=[1, 2, 3])
    with pytest.raises(ValueError, match="names 'v_rest', which is not an attribute"):
        neuron.register_state("v", "v_rest")
    with pytest.raises(ValueError, match="name must be a valid identifier"):
        neuron.register_constant("2x", 1.0)
    with pytest.raises(NotImplementedError, match="must implement step"):
        neuron(torch.zeros(1, 3))
    with pytest.raises(TypeError, match="surrogate must be a callable"):
        Neuron(3, surrogate=5)


# ------------------------------------------------------------------------ user-defined neurons
class McCullochPitts(Neuron):
    """Fires when the weighted input reaches ``thresh``; no memory."""

    def __init__(self, shape, dt=1.0, *, thresh=1.0, **kwargs):
        super().__init__(shape, dt, **kwargs)
        self.register_constant("thresh", thresh)

    def step(self, x):
        return self.fire(x - self.thresh)


def _tau_decay(tau, dt):
    return torch.exp(-dt / tau)


class CurrentLIF(Neuron):
    """LIF with an exponential synaptic current: ``tau_syn dI/dt = -I``, ``I += x`` per step."""

    def __init__(self, shape, dt=1.0, *, tau_syn=5.0, tau_v=10.0, thresh=1.0, **kwargs):
        super().__init__(shape, dt, **kwargs)
        self.register_constant("tau_syn", tau_syn, positive=True)
        self.register_constant("tau_v", tau_v, positive=True)
        self.register_constant("thresh", thresh)
        self.register_state("i_syn", 0.0)
        self.register_state("v", 0.0)

    def step(self, x):
        self.i_syn = self.i_syn * self.derived("syn", _tau_decay, self.tau_syn, self.dt) + x
        self.v = self.v * self.derived("mem", _tau_decay, self.tau_v, self.dt) + self.i_syn
        s = self.fire(self.v - self.thresh)
        self.v = self.v * (1 - s)
        return s


def test_user_neuron_single_multistep_batched_and_with_trace():
    neuron = CurrentLIF(2, tau_syn=5.0, tau_v=10.0, thresh=1.0, tau_trace=4.0)
    x = torch.zeros(6, 3, 2)
    x[0] = 0.5  # one input at step 0, then only the synaptic current
    out = neuron.forward_multistep(x)
    a, b = math.exp(-1 / 5), math.exp(-1 / 10)
    i_syn, v, expected = 0.0, 0.0, []
    for t in range(6):
        i_syn = i_syn * a + float(x[t, 0, 0])
        v = v * b + i_syn
        expected.append(float(v >= 1.0))
        v = 0.0 if v >= 1.0 else v
    assert out[:, 0, 0].tolist() == expected and sum(expected) == 1  # spikes once, at step 2
    assert out.shape == (6, 3, 2) and torch.equal(out[:, 0], out[:, 2])
    # the base class kept the trace from the returned spikes: one spike at step 2, tau 4 ms
    torch.testing.assert_close(neuron.trace[0, 0], torch.tensor(math.exp(-3 / 4)))
    neuron.reset_state()
    assert neuron.v.abs().sum() == 0 and neuron.batch_size == 3


def test_user_neuron_trains_with_bptt_and_deepcopies():
    torch.manual_seed(0)
    fc = nn.Linear(4, 3)
    neuron = McCullochPitts(3, thresh=0.0, surrogate=FastSigmoid(5.0))
    x = torch.randn(5, 4)
    loss = neuron(fc(x)).sum()
    loss.backward()
    assert fc.weight.grad is not None and fc.weight.grad.abs().sum() > 0
    neuron.detach_state()  # (torch deep-copies only graph leaves)
    clone = copy.deepcopy(neuron)
    assert torch.equal(clone(fc(x)), neuron(fc(x)))


KEEPERS = {
    "reference": lambda t: t,
    "view": lambda t: t[0],
    "detach": lambda t: t.detach(),  # another tensor on the same memory
    "numpy": lambda t: t.numpy(),  # a NumPy array on the same memory
    "autograd": lambda t: (t * torch.ones_like(t, requires_grad=True)).sum(),  # saved for backward
}


@pytest.mark.parametrize(
    "keep,name",
    [
        (KEEPERS[k], name)
        for k in KEEPERS
        for name in ("v", "trace", "refrac_count")
        if not (k == "autograd" and name == "refrac_count")  # integers take no gradient
    ],
)
def test_state_kept_in_any_form_keeps_its_value(keep, name):
    """The fused path writes into the old state tensors only when nothing else can see them."""
    lif = LIFNeuron(5, refrac=3.0, thresh=-60.0, v_rest=-70.0, v_reset=-65.0)
    x = torch.full((2, 5), 10.0)  # fires at once, then refractory while v leaks toward -70 mV
    with torch.no_grad():
        lif(x)
    old = getattr(lif, name)
    value = old.clone()
    kept = keep(old)
    del old
    with torch.no_grad():
        for _ in range(2):
            lif(x)
    assert not torch.equal(getattr(lif, name), value)  # the state did move on
    if isinstance(kept, torch.Tensor) and kept.dim() == 0:  # the autograd case: a loss
        return
    expected = value[0] if kept.shape != value.shape else value
    assert torch.equal(torch.as_tensor(kept), expected)


def test_unshared_state_is_reused_in_place():
    """Nothing keeps the old state: the kernel writes the new one into it (no allocation)."""
    lif = LIFNeuron(5)
    x = torch.full((1, 5), 3.0)
    with torch.no_grad():
        lif(x)
        ids = (id(lif.v), id(lif.trace), id(lif.refrac_count))
        lif(x)
    if native.available():
        assert ids == (id(lif.v), id(lif.trace), id(lif.refrac_count))


def test_register_state_with_a_per_neuron_initial_tensor():
    class Counter(Neuron):
        def __init__(self):
            super().__init__(3)
            self.register_state("count", torch.tensor([1.0, 2.0, 3.0]))

        def step(self, x):
            self.count = self.count + x
            return self.fire(self.count - 10.0)

    neuron = Counter().double()
    out = neuron(torch.full((2, 3), 8.0, dtype=torch.float64))
    assert neuron.count.dtype == torch.float64
    torch.testing.assert_close(
        neuron.count[1], torch.tensor([9.0, 10.0, 11.0], dtype=torch.float64)
    )
    assert out[0].tolist() == [0.0, 1.0, 1.0]
    neuron.reset_state()
    assert neuron.count.tolist() == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    assert "count_initial" not in neuron.state_dict()  # state, not a parameter


def test_per_neuron_constants_load_into_a_scalar_neuron_and_back():
    trained = LIFNeuron(3, thresh=torch.tensor([-60.0, -55.0, -50.0]), tau_v=15.0)
    fresh = LIFNeuron(3)  # scalar constants
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.thresh, trained.thresh) and float(fresh.tau_v) == 15.0
    x = drive(steps=30, batch=2, n=3)
    with torch.no_grad():
        assert torch.equal(run(fresh, x), run(trained, x))
    back = LIFNeuron(3, thresh=torch.zeros(3))
    back.load_state_dict(LIFNeuron(3, thresh=-58.0).state_dict())  # per-neuron <- scalar
    assert back.thresh.shape == () and float(back.thresh) == -58.0
    with pytest.raises(ValueError, match="thresh"):
        LIFNeuron(3).load_state_dict({**LIFNeuron(3).state_dict(), "thresh": torch.zeros(4)})


# ------------------------------------------------------------------------ the fast single step
def _events():
    """(step, what happens before it) pairs that change what a LIF step must do."""

    def edit_thresh(lif):
        lif.thresh.add_(-4.0)  # in place: version counter

    def edit_tau(lif):
        lif.tau_v.mul_(0.5)  # in place, on a constant the decay factor is derived from

    def swap_v_reset(lif):
        lif.v_reset.data = torch.full_like(lif.v_reset, -58.0)  # new memory, same version

    def swap_tau(lif):
        lif.tau_v.data = torch.full_like(lif.tau_v, 15.0)

    def assign_refrac(lif):
        lif.refrac = 1.0

    def set_dt(lif):
        lif.dt = 0.5

    def load(lif):
        lif.load_state_dict(LIFNeuron(6, thresh=-55.0, tau_v=30.0).double().state_dict())

    def reset(lif):
        lif.reset_state()

    def clamp(lif):
        lif.clamp(torch.tensor([True, False, False, False, False, True]))

    def inject(lif):
        lif.inject_v(3.0)

    def edit_state(lif):
        lif.v.add_(2.0)  # in place on the state: the next step starts from it

    return [
        (5, edit_thresh),
        (7, edit_tau),
        (9, swap_v_reset),
        (12, swap_tau),
        (15, clamp),
        (18, assign_refrac),
        (21, inject),
        (24, set_dt),
        (27, edit_state),
        (30, load),
        (34, reset),
    ]


def _neuron():
    thresh = torch.linspace(-56.0, -50.0, 6)
    return LIFNeuron(6, thresh=thresh, v_rest=-60.0, refrac=2.0).double()


def _scenario(fused, x, keep_every=0):
    lif = _neuron()
    events = dict(_events())
    out, kept = [], []
    with native.enabled(fused), torch.no_grad():
        for t in range(x.shape[0]):
            if t in events:
                events[t](lif)
            if t == 38:  # a new batch size: new state
                x = x[:, :1]
            out.append(torch.cat([lif(x[t]), lif.v, lif.trace, lif.refrac_count.double()], 1))
            if keep_every and t % keep_every == 0:
                kept.append((lif.v, lif.v.clone()))  # a reference that must keep its value
    return torch.cat(out), kept


def test_fast_step_follows_every_change_exactly():
    """Single steps on the fast path (the generated step) equal the torch path bit for bit
    through in-place edits, ``.data`` swaps, assignments, ``dt``, ``load_state_dict``, reset,
    clamps, voltage injection, edits of the state and a change of batch size."""
    x = torch.rand(45, 2, 6, dtype=torch.float64) * 5.0
    fused, kept = _scenario(True, x, keep_every=10)
    reference, _ = _scenario(False, x)
    assert torch.equal(fused, reference)
    assert all(torch.equal(a, b) for a, b in kept)  # kept references kept their step's value
    # the scenario cannot pass by accident: the events change the spikes
    plain = _neuron()
    with torch.no_grad():
        unchanged = torch.cat([plain(x[t]) for t in range(38)])
    assert not torch.equal(unchanged, fused[: 38 * 2, :6])


def test_fast_step_is_taken_and_dropped():
    """After one general step the neuron keeps a fast step; assignment and ``.to()`` drop it,
    autograd and kept references bypass it."""
    lif = LIFNeuron(4)
    x = torch.full((2, 4), 3.0)
    with torch.no_grad():
        lif(x)
    if not native.available():
        assert lif._fast is None
        return
    assert lif._fast is not None
    lif.thresh = -60.0
    assert lif._fast is None
    with torch.no_grad():
        lif(x)
    assert lif._fast is not None
    lif.double()
    assert lif._fast is None
    # with autograd the general path runs (and the state carries the graph)
    lif = LIFNeuron(4)
    with torch.no_grad():
        lif(x)
    drive_ = x.clone().requires_grad_()
    s = lif(drive_)
    assert s.requires_grad and lif.v.requires_grad
    s2 = lif(x)  # the state needs a gradient: general path again
    assert s2.requires_grad


def test_fast_step_checks_nan_and_native_switch():
    lif = LIFNeuron(3)
    x = torch.zeros(1, 3)
    with torch.no_grad():
        lif(x)
        lif(x)
        with pytest.raises(ValueError, match="x contains NaN"):
            lif(torch.full((1, 3), float("nan")))
        with native.enabled(False):
            v0 = lif.v
            lif(torch.full((1, 3), 20.0))  # the torch path: a new state tensor
            assert lif.v is not v0 and lif.spikes.sum() == 3


def test_input_fast_step_follows_every_change_exactly():
    """``Input``'s fast trace step equals the torch path through in-place edits, ``.data`` swaps,
    assignments (``trace_mode``, ``dt``), bool input, kept references and a new batch size."""
    from pysnn.neuron import Input

    g = torch.Generator().manual_seed(5)
    x = torch.rand(40, 2, 6, generator=g) < 0.4

    def scenario(fused):
        inp = Input(6, tau_trace=torch.linspace(5.0, 30.0, 6)).double()
        out, kept = [], []
        with native.enabled(fused), torch.no_grad():
            for t in range(40):
                if t == 5:
                    inp.tau_trace.mul_(0.5)
                if t == 9:
                    inp.trace_scale.data = torch.full_like(inp.trace_scale, 0.5)
                if t == 13:
                    inp.trace_scale.add_(0.25)
                if t == 17:
                    inp.trace_mode = "reset"
                if t == 21:
                    inp.dt = 0.5
                if t == 25:
                    inp.trace.mul_(0.5)  # an edit of the state itself
                step = x[t, :1] if t >= 30 else x[t]
                s = inp(step.double() if t % 2 else step)
                out.append(torch.cat([s, inp.trace], 1))
                if fused and t % 10 == 0:
                    kept.append((inp.trace, inp.trace.clone()))
        return torch.cat(out), kept, inp

    fused, kept, inp = scenario(True)
    reference, _, _ = scenario(False)
    assert torch.equal(fused, reference)
    assert all(torch.equal(a, b) for a, b in kept)
    if native.available():
        assert inp._fast is not None
    plain = Input(6, tau_trace=torch.linspace(5.0, 30.0, 6)).double()
    with torch.no_grad():
        unchanged = torch.cat([plain(x[t].double()) * 0 + plain.trace for t in range(30)])
    assert not torch.equal(unchanged, fused[:60, 6:])  # the events did change the trace


def test_modules_with_a_fast_step_copy_and_pickle():
    """The fast step holds kernel handles (not picklable): copies drop it and rebuild their own."""
    import pickle

    from pysnn.connection import Linear
    from pysnn.neuron import Input

    modules = [Input(5), LIFNeuron(5), Linear(5, 5, propagation="event")]
    x = torch.ones(1, 5)
    with torch.no_grad():
        for _ in range(3):
            for m in modules:
                m(x)
        for m in modules:
            for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
                assert clone.__dict__.get("_fast") is None  # (a Linear keeps none at all)
                for _ in range(2):
                    assert torch.equal(clone(x), copy.deepcopy(m)(x))


@pytest.mark.parametrize("shared", [True, False])
def test_adaptive_generated_step_follows_every_change_exactly(shared, monkeypatch):
    """``AdaptiveLIFNeuron``'s generated single step (the shared ``theta`` updated in its
    neuron pass) equals the torch path through edits of ``tau_theta``/``theta_plus``,
    ``eval()``/``train()``, ``reset_theta``, a kept reference to ``theta`` and a new batch
    size."""
    from pysnn.neuron import AdaptiveLIFNeuron

    g = torch.Generator().manual_seed(7)
    x = torch.rand(60, 3, 5, generator=g, dtype=torch.float64) * 6.0

    def scenario(fused):
        neuron = AdaptiveLIFNeuron(
            5, v_rest=-60.0, refrac=1.0, theta_plus=0.8, tau_theta=40.0, theta_shared=shared
        ).double()
        out, kept = [], []
        with native.enabled(fused), torch.no_grad():
            for t in range(60):
                if t == 8:
                    neuron.tau_theta.mul_(0.5)
                if t == 14:
                    neuron.theta_plus.data = torch.full_like(neuron.theta_plus, 1.5)
                if t == 20:
                    neuron.eval()
                if t == 26:
                    neuron.train()
                if t == 32:
                    neuron.reset_theta()
                if t == 38:
                    kept.append((neuron.theta, neuron.theta.clone()))
                step = x[t, :1] if t >= 45 else x[t]
                s = neuron(step)  # (no reference to the state kept past the step)
                batch = step.shape[0]
                out.append(torch.cat([s, neuron.v, neuron.trace, neuron.theta.expand(batch, 5)], 1))
        return torch.cat(out), kept, neuron

    from pysnn.neuron import _GeneratedStep

    fast_steps = []
    run_fast = _GeneratedStep.__call__

    def counted(step, neuron, x):
        s = run_fast(step, neuron, x)
        fast_steps.append(s is not None)
        return s

    monkeypatch.setattr(_GeneratedStep, "__call__", counted)
    fused, kept, neuron = scenario(True)
    reference, _, _ = scenario(False)
    assert torch.equal(fused, reference)
    assert all(torch.equal(a, b) for a, b in kept)
    if native.available():
        assert sum(fast_steps) > 30  # most steps took the generated step
    assert fused[:, 15:].max() > 1.0  # theta did adapt


def test_constant_shapes_broadcast_as_torch_does():
    """``as_param``'s own broadcast (it avoids ``torch.broadcast_shapes``, whose first call
    imports sympy: ~30 MB) agrees with torch's, refusals included."""
    from pysnn._checks import _broadcast

    shapes = [(), (1,), (5,), (3, 1), (1, 5), (2, 3, 1), (0,), (4, 0), (4, 1), (3, 5)]
    for a in shapes:
        for b in shapes:
            try:
                expected = tuple(torch.broadcast_shapes(a, b))
            except RuntimeError:
                expected = None
            assert _broadcast(a, b) == expected, (a, b)
