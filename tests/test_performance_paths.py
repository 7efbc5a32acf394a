"""Fast paths give the step loop's results: event vs dense, auto, multi-step, torch.compile."""

import copy
import io
import warnings

import pytest
import torch

import pysnn
import pysnn.native
from pysnn.connection import Linear
from pysnn.multistep import run_feedforward
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron


def integer_linear(n_in, n_out, propagation, delay=0.0, seed=0, bias=False):
    """A Linear with small integer weights: every float sum is exact, whatever the order."""
    torch.manual_seed(seed)
    conn = Linear(n_in, n_out, delay=delay, propagation=propagation, bias=bias)
    with torch.no_grad():
        conn.weight.copy_(torch.randint(-8, 9, (n_out, n_in)).float())
        if bias:
            conn.bias.copy_(torch.randint(-8, 9, (n_out,)).float())
    return conn


def spike_train(steps, batch, n, p=0.1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, n, generator=g) < p).float()


def step_loop(conn, x):
    return torch.stack([conn(s) for s in x])


def copy_of(conn, propagation):
    other = copy.deepcopy(conn)
    other.propagation = propagation
    return other


@pytest.mark.parametrize("delay", [0.0, 2.0, "per-synapse"])
@pytest.mark.parametrize("batch", [1, 3])
def test_event_equals_dense_exactly(delay, batch):
    if delay == "per-synapse":
        delay = torch.randint(0, 4, (9, 40)).float()
    dense = integer_linear(40, 9, "dense", delay=delay, bias=True)
    event = copy_of(dense, "event")
    x = spike_train(25, batch, 40)
    x[3] = 0  # a step with no spike at all
    assert torch.equal(step_loop(event, x), step_loop(dense, x))


def test_event_equals_dense_random_weights_and_graded_input():
    torch.manual_seed(2)
    dense = Linear(300, 50, delay=1.0, propagation="dense").double()
    event = copy_of(dense, "event")
    x = torch.rand(10, 4, 300, dtype=torch.float64) * (torch.rand(10, 4, 300) < 0.2)
    torch.testing.assert_close(step_loop(event, x), step_loop(dense, x))


def test_event_gradients_equal_dense():
    torch.manual_seed(3)
    dense = Linear(30, 6, propagation="dense")
    event = copy_of(dense, "event")
    x = (torch.rand(2, 30) < 0.3).float()
    for conn in (dense, event):
        (conn(x) * torch.arange(6.0)).sum().backward()
    torch.testing.assert_close(event.weight.grad, dense.weight.grad)


@pytest.mark.parametrize("p,expected", [(0.02, "event"), (0.6, "dense")])
def test_auto_switches_by_activity_and_stays_exact(p, expected):
    conn = integer_linear(64, 16, "auto", delay=1.0)
    conn.AUTO_MIN_SYNAPSES = 0  # this small layer would otherwise always run dense
    conn.AUTO_INTERVAL = 8
    reference = copy_of(conn, "dense")
    x = spike_train(40, 2, 64, p=p)
    # the first interval runs event-driven where the fused kernel counts activity for free
    assert conn.active_propagation == ("event" if pysnn.native.available() else "dense")
    out = step_loop(conn, x)
    assert conn.active_propagation == expected
    assert torch.equal(out, step_loop(reference, x))


def test_auto_small_layer_never_counts_without_fused_kernels():
    with pysnn.native.enabled(False):
        conn = Linear(20, 10)  # default propagation="auto", far below AUTO_MIN_SYNAPSES
        step_loop(conn, spike_train(100, 1, 20, p=0.01))
        assert conn.active_propagation == "dense" and conn._activity.active is None


@pytest.mark.skipif(not pysnn.native.available(), reason=pysnn.native.status())
def test_auto_small_layer_goes_event_with_fused_kernels():
    conn = Linear(20, 10)
    step_loop(conn, spike_train(100, 1, 20, p=0.01))
    assert conn.active_propagation == "event"


def test_weight_is_row_major_through_conversions_and_loading():
    conn = Linear(7, 5, bias=True)
    assert conn.weight.shape == (5, 7) and conn.weight.is_contiguous()
    for moved in (conn.double(), conn.float(), copy.deepcopy(conn)):
        assert moved.weight.is_contiguous() and moved.weight.shape == (5, 7)
    # a checkpoint of the former column-major layout: (out, in) view of a contiguous (in, out)
    old = {k: v.clone() for k, v in conn.state_dict().items()}
    old["weight"] = old["weight"].t().contiguous().t()
    assert not old["weight"].is_contiguous()
    x = (torch.rand(3, 7) < 0.5).float()
    for assign in (False, True):
        fresh = Linear(7, 5, bias=True, propagation="event")
        fresh.load_state_dict(old, assign=assign)
        assert torch.equal(fresh.weight, conn.weight) and fresh.weight.is_contiguous()
        torch.testing.assert_close(fresh(x), x @ conn.weight.t() + conn.bias)
    buffer = io.BytesIO()
    torch.save(conn.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh.weight, conn.weight)


@pytest.mark.parametrize("propagation", ["dense", "event", "auto"])
@pytest.mark.parametrize("delay", [0.0, 3.0, "per-synapse"])
def test_multistep_equals_step_loop_with_carried_state(propagation, delay):
    if delay == "per-synapse":
        delay = torch.randint(0, 4, (12, 30)).float()
    conn = integer_linear(30, 12, propagation, delay=delay, bias=True)
    conn.AUTO_MIN_SYNAPSES = 0
    loop = copy.deepcopy(conn)
    x = spike_train(20, 2, 30, p=0.05)
    # single steps, a block, single steps again: the history is carried across.
    expected = step_loop(loop, x)
    got = torch.cat(
        [step_loop(conn, x[:4]), conn.forward_multistep(x[4:15]), step_loop(conn, x[15:])]
    )
    assert torch.equal(got, expected)
    if loop.history is not None:
        assert torch.equal(conn.history, loop.history)
    assert torch.equal(conn.arriving_spikes(), loop.arriving_spikes())


def test_multistep_block_shorter_than_delay():
    conn = integer_linear(5, 3, "dense", delay=6.0)
    loop = copy.deepcopy(conn)
    x = spike_train(9, 1, 5, p=0.5)
    got = torch.cat(
        [conn.forward_multistep(x[i : i + 2]) for i in range(0, 8, 2)] + [conn(x[8])[None]]
    )
    assert torch.equal(got, step_loop(loop, x))


def test_multistep_bad_input():
    with pytest.raises(ValueError, match=r"spikes must have shape \(T, B, 4\)"):
        Linear(4, 2).forward_multistep(torch.ones(2, 4))


@pytest.mark.parametrize("grad", [False, True])
def test_run_feedforward_equals_step_loop(grad):
    torch.manual_seed(4)
    conn = Linear(50, 20, delay=2.0, init="normal", init_kwargs={"mean": 2.0, "std": 4.0})
    lif = LIFNeuron(20, refrac=2.0)
    conn_loop, lif_loop = copy.deepcopy(conn), copy.deepcopy(lif)
    x = spike_train(60, 3, 50, p=0.2)
    with torch.set_grad_enabled(grad):
        expected = torch.stack([lif_loop(conn_loop(s)) for s in x])
        got = run_feedforward(conn, lif, x)
    assert expected.sum() > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for name in ("v", "trace", "refrac_count"):
        torch.testing.assert_close(getattr(lif, name), getattr(lif_loop, name))


class SmallNet(SNNNetwork):
    def __init__(self):
        super().__init__()
        self.inp = Input(30)
        self.fc = Linear(30, 10, delay=1.0, init="normal", init_kwargs={"mean": 3.0, "std": 3.0})
        self.lif = LIFNeuron(10, refrac=2.0)
        self.add_layer("fc", self.fc, self.lif)

    def forward(self, spikes):
        return self.lif(self.fc(self.inp(spikes)))


def test_compiled_step_equals_eager():
    torch.manual_seed(5)
    eager = SmallNet()
    compiled_net = copy.deepcopy(eager)
    step = torch.compile(compiled_net.forward, backend="inductor", dynamic=False)
    x = spike_train(6, 2, 30, p=0.3)
    with torch.no_grad(), pysnn.checks(False):
        expected = torch.stack([eager(s) for s in x])
        got = torch.stack([step(s) for s in x])
    assert expected.sum() > 0
    assert torch.equal(got, expected)
    torch.testing.assert_close(compiled_net.lif.v, eager.lif.v)
    torch.testing.assert_close(compiled_net.inp.trace, eager.inp.trace)


def test_event_driven_stdp_equals_dense_update():
    """STDP's CPU row-sparse update equals the dense (out, in) update computed from the traces."""
    from pysnn.learning import STDP
    from pysnn.neuron import Input, LIFNeuron

    torch.manual_seed(0)
    inp, post = Input(30).double(), LIFNeuron(12, refrac=2.0).double()
    fc = Linear(30, 12, wmin=-1.0, wmax=1.0, init="uniform", init_kwargs={"a": 0.0, "b": 4.0})
    fc = fc.double()
    rule = STDP(connection=fc, pre=inp, post=post, nu=(0.02, 0.05), reduction="sum")
    for _ in range(40):
        x = (torch.rand(3, 30) < 0.2).double()
        before = fc.weight.detach().clone()
        s_pre = inp(x)
        post(fc(s_pre))
        expected = (
            0.05 * post.spikes.t() @ inp.trace - 0.02 * post.trace.t() @ s_pre + before
        ).clamp(-1.0, 1.0)
        rule.step()
        torch.testing.assert_close(fc.weight.detach(), expected, rtol=0, atol=1e-12)


def test_event_setting_keeps_the_input_gradient_of_zero_inputs():
    """Spikes from a surrogate are 0 mostly, yet their gradient is W^T g everywhere."""
    torch.manual_seed(8)
    dense = Linear(30, 6, propagation="dense")
    event = copy_of(dense, "event")
    grads = []
    for conn in (dense, event):
        x = (torch.rand(2, 30) < 0.3).float().requires_grad_()
        (conn(x) * torch.arange(6.0)).sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[1], grads[0]) and (grads[0] != 0).all()


@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_paths_agree_under_stdp(delay):
    """One seed, one spike train, STDP on: fused event kernel, embedding_bag event path and the
    dense product give the same spikes; the learned weights agree to float rounding."""
    from pysnn.learning import STDP

    def run(propagation, fused):
        torch.manual_seed(11)
        inp = Input(60)
        fc = Linear(60, 12, delay=delay, propagation=propagation, wmin=0.0, wmax=1.0)
        fc.init, fc.init_kwargs = "uniform", {"a": 0.0, "b": 1.0}
        fc.reset_parameters()
        lif = LIFNeuron(12, thresh=-60.0, refrac=2.0)
        rule = STDP(connection=fc, pre=inp, post=lif, nu=(1e-2, 1e-2))
        x = spike_train(80, 3, 60, p=0.15, seed=12)
        out = []
        with torch.no_grad(), pysnn.native.enabled(fused):
            for s in x:
                out.append(lif(fc(inp(s))))
                rule.step()
        return torch.stack(out), fc.weight.detach().clone()

    spikes_fused, w_fused = run("event", True)
    spikes_bag, w_bag = run("event", False)
    spikes_dense, w_dense = run("dense", True)
    assert spikes_fused.sum() > 20
    assert torch.equal(spikes_fused, spikes_bag) and torch.equal(spikes_fused, spikes_dense)
    torch.testing.assert_close(w_fused, w_bag, rtol=0, atol=1e-6)
    torch.testing.assert_close(w_fused, w_dense, rtol=0, atol=1e-6)
    assert not torch.equal(w_fused, fc_initial_weights())


def fc_initial_weights():
    torch.manual_seed(11)
    Input(60)
    fc = Linear(60, 12, wmin=0.0, wmax=1.0)
    fc.init, fc.init_kwargs = "uniform", {"a": 0.0, "b": 1.0}
    fc.reset_parameters()
    return fc.weight.detach()


def test_linear_multistep_with_a_hook_runs_every_step():
    conn = integer_linear(20, 5, "auto", delay=1.0)
    calls = []
    conn.register_forward_hook(lambda module, args, out: calls.append(out.clone()))
    x = spike_train(7, 2, 20, p=0.3)
    reference = copy_of(conn, "dense")
    out = conn.forward_multistep(x)
    assert len(calls) == 7 and torch.equal(torch.stack(calls), out)
    assert torch.equal(out, step_loop(reference, x))


# ------------------------------------------------------------------------ the fast single step
class _Double(torch.nn.Module):
    def forward(self, w):
        return 2.0 * w


@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_linear_fast_step_follows_every_change_exactly(monkeypatch, delay):
    """Event-driven steps that ``event_steps`` allows go straight to the kernel
    (``_event_step``); through in-place, ``.data`` and
    swapped weight writes, pruning, a parametrisation, an activity burst (``"auto"`` goes dense
    and back), a new batch size, a change of ``propagation``, autograd and the kernels switched
    off, each step equals ``x @ W.t() + b`` with the weight in force at that step (integer
    weights: exact in any summation order), ``x`` the input of ``delay`` steps before (zeros
    before the first step of a batch size)."""
    from torch.nn.utils import parametrize, prune

    taken = []
    event_step = Linear._event_step

    def counted(self, x):
        out = event_step(self, x)
        taken.extend([] if out is None else [1])
        return out

    monkeypatch.setattr(Linear, "_event_step", counted)
    conn = integer_linear(40, 7, "auto", bias=True, delay=delay)
    g = torch.Generator().manual_seed(3)
    inputs = []
    for t in range(200):
        p = 0.9 if 24 <= t < 60 else 0.1
        batch = 1 if t >= 110 else 2
        x = (torch.rand(batch, 40, generator=g) < p).float()
        inputs.append(x)
        d = int(delay)
        late = inputs[t - d] if t - d >= (110 if t >= 110 else 0) else torch.zeros_like(x)
        with torch.no_grad():
            if t == 3:
                conn.weight.mul_(2.0)
            if t == 6:
                conn.weight.data[0, :] = 5.0
            if t == 9:
                conn.weight.data = torch.randint(-8, 9, (7, 40)).float()
        if t == 15:
            prune.custom_from_mask(conn, "weight", torch.rand(7, 40, generator=g) < 0.5)
        if t == 20:
            prune.remove(conn, "weight")
        if t == 100 and pysnn.native.available():  # the burst was counted: "auto" went dense
            assert conn.active_propagation == "dense"
        if t == 135:
            if pysnn.native.available():  # event-driven again, straight to the kernel
                with torch.no_grad():
                    assert conn.active_propagation == "event" and conn.event_steps() > 0
            conn.propagation = "dense"
        if 135 <= t < 145:  # dense steps: none goes to the event kernel
            with torch.no_grad():
                assert conn.event_steps() == 0
        if t == 145:
            conn.propagation = "auto"
        if t == 175:
            parametrize.register_parametrization(conn, "weight", _Double())
        if t == 185:
            parametrize.remove_parametrizations(conn, "weight")
        grad = 150 <= t < 155
        with torch.set_grad_enabled(grad), pysnn.native.enabled(not 160 <= t < 165):
            with warnings.catch_warnings():  # (t = 110: the new batch size drops spikes in flight)
                warnings.simplefilter("ignore" if t == 110 else "error")
                out = conn(x)
        assert out.requires_grad == grad
        expected = late.double() @ conn.weight.detach().double().t() + conn.bias.detach().double()
        assert torch.equal(out.detach().double(), expected), t
        assert conn.arriving is x if not d else torch.equal(conn.arriving, late)
    if pysnn.native.available():
        assert len(taken) > 80  # most steps went straight to the kernel


def test_linear_subclass_steps_are_never_sent_to_the_event_kernel():
    """A ``Linear`` subclass that overrides ``propagate`` or ``_forward`` gets its own step at
    every call (``event_steps`` is 0): never the built-in event-driven kernel's values."""

    class Doubled(Linear):
        def propagate(self, arriving):
            return 2.0 * super().propagate(arriving)

    class Counted(Linear):
        calls = 0

        def _forward(self, spikes):
            Counted.calls += 1
            return super()._forward(spikes)

    x = (torch.rand(1, 30, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    for cls in (Doubled, Counted):
        torch.manual_seed(4)
        conn = cls(30, 5, propagation="event")
        with torch.no_grad():
            outs = [conn(x) for _ in range(5)]
            assert conn.event_steps() == 0
        scale = 2.0 if cls is Doubled else 1.0
        for out in outs:
            torch.testing.assert_close(out, scale * x @ conn.weight.detach().t())
    assert Counted.calls == 5
