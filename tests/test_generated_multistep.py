"""``Neuron.forward_multistep`` through the kernel generated from the neuron's ``step``.

A user's neuron (and a built-in one with its own step, :class:`AdaptiveLIFNeuron`) runs its
``T`` steps in one call of the generated kernel: spikes, state and, under BPTT, gradients are
those of its own step loop. The reference is the same module stepped with generation off
(``GENERATE_AFTER = None``), so the expected values come from the torch operations of ``step``.
"""

import copy

import pytest
import torch

from pysnn import native
from pysnn.neuron import AdaptiveLIFNeuron, LIFNeuron
from tests.test_engine import CurrentLIF

needs_compiler = pytest.mark.skipif(
    not native.available(), reason="generated kernels need the C compiler (PYSNN_NATIVE=0)"
)


def _pair(factory, dtype=torch.float32):
    torch.manual_seed(0)
    a = factory().to(dtype)
    b = copy.deepcopy(a)
    b.GENERATE_AFTER = None  # the reference: its step's torch operations, step by step
    return a, b


def _inputs(steps, batch, n, scale, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch, n, generator=g, dtype=dtype) * scale


def _states(neuron):
    return {k: v.clone() for k, v in neuron._buffers.items() if v is not None}


def _assert_same_state(a, b):
    sa, sb = _states(a), _states(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _loop(neuron, x):
    return torch.stack([neuron(x[t]) for t in range(x.shape[0])])


FACTORIES = {
    "user CurrentLIF": lambda: CurrentLIF(24, tau_syn=4.0, thresh=0.7),
    "AdaptiveLIFNeuron": lambda: AdaptiveLIFNeuron(
        24, tau_v=10.0, thresh=-55.0, v_rest=-65.0, v_reset=-65.0, theta_plus=2.0
    ),
}
SCALES = {"user CurrentLIF": 0.4, "AdaptiveLIFNeuron": 9.0}


@needs_compiler
@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_multistep_runs_the_generated_kernel_bit_for_bit(name, dtype):
    a, b = _pair(FACTORIES[name], dtype)
    x = _inputs(120, 3, 24, SCALES[name], dtype)
    calls = []
    with torch.no_grad():
        got = a.forward_multistep(x[:100])  # >= GENERATE_AFTER steps: generated at once
        kernel, why = a.generated_multistep(x[:1])
        assert kernel is not None, why
        wrapped = kernel.function
        kernel.function = lambda *args: calls.append(args[0]) or wrapped(*args)
        got = torch.cat([got, a.forward_multistep(x[100:])])
        want = _loop(b, x)
    assert want.sum() > 0 and calls == [20]  # (the second call ran in the kernel)
    assert torch.equal(got, want)
    _assert_same_state(a, b)
    if name == "AdaptiveLIFNeuron":
        assert a.theta.max() > 0  # the per-neuron threshold moved, as in the loop


@needs_compiler
def test_a_short_call_steps_through_until_generate_after_steps_came():
    a, b = _pair(FACTORIES["user CurrentLIF"])
    x = _inputs(80, 2, 24, 0.4)
    with torch.no_grad():
        first = a.forward_multistep(x[:40])  # 40 < GENERATE_AFTER = 64: its step loop
        assert a.generated_multistep(x[:1])[0] is None
        second = a.forward_multistep(x[40:])  # 80 steps counted: generated
        assert a.generated_multistep(x[:1])[0] is not None
        want = _loop(b, x)
    assert torch.equal(torch.cat([first, second]), want)
    _assert_same_state(a, b)


@needs_compiler
@pytest.mark.parametrize("name", list(FACTORIES))
def test_bptt_through_the_generated_kernel_gives_the_loops_gradients(name):
    a, b = _pair(FACTORIES[name], torch.float64)
    x = _inputs(70, 2, 24, SCALES[name], torch.float64, seed=1)
    with torch.no_grad():
        a.forward_multistep(x)  # generated
        b.forward_multistep(x)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    w = torch.rand(70, 2, 24, dtype=torch.float64)
    ran = []
    kernel = a.generated_multistep(xa.detach())[0]
    wrapped = kernel.gradient
    if wrapped is not None:
        kernel.gradient = lambda *args: ran.append(1) or wrapped(*args)
    (a.forward_multistep(xa) * w).sum().backward()
    (_loop(b, xb) * w).sum().backward()
    # the generated backward ran; a per-neuron state (AdaptiveLIF's theta) has none yet: the
    # steps then run as written under autograd
    assert ran == ([] if name == "AdaptiveLIFNeuron" else [1])
    assert xb.grad.abs().sum() > 0
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)


@needs_compiler
def test_edited_constant_through_data_is_seen_by_the_next_call():
    a = CurrentLIF(24, thresh=0.7)
    x = _inputs(100, 2, 24, 0.4)
    with torch.no_grad():
        a.forward_multistep(x)
        a.reset_state()
        a.thresh.data.fill_(0.2)  # seen by the kernel's guard: generated again
        got = a.forward_multistep(x)
        fresh = CurrentLIF(24, thresh=0.2)
        fresh.GENERATE_AFTER = None
        want = _loop(fresh, x)
    assert torch.equal(got, want)


def test_no_generation_when_generate_after_is_none_or_a_hook_is_registered():
    a = CurrentLIF(24)
    a.GENERATE_AFTER = None
    x = _inputs(100, 2, 24, 0.4)
    with torch.no_grad():
        a.forward_multistep(x)
    kernel, why = a.generated_multistep(x)
    assert kernel is None and "GENERATE_AFTER is None" in why
    b, seen = CurrentLIF(24), []
    b.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        b.forward_multistep(x)
    assert len(seen) == 100  # the hook saw every step
    assert b.generated_multistep(x) == (None, "a forward hook must see every step")


def test_an_overridden_forward_runs_as_written():
    class Doubled(CurrentLIF):
        def forward(self, x):
            return super().forward(2 * x)

    a, x = Doubled(24), _inputs(100, 2, 24, 0.2)
    reference = CurrentLIF(24)
    with torch.no_grad():
        got = a.forward_multistep(x)
        want = _loop(reference, 2 * x)
    assert torch.equal(got, want) and want.sum() > 0
    kernel, why = a.generated_multistep(x)
    assert kernel is None and "Doubled.forward overrides Neuron.forward" in why


@needs_compiler
def test_the_built_in_lif_keeps_its_own_kernel_and_a_subclass_step_is_generated():
    class Leaky(LIFNeuron):  # its own step: not LIF's fused kernel, the one generated from it
        def step(self, x):
            return super().step(0.5 * x)

    a, b = _pair(lambda: Leaky(24, thresh=-60.0))
    x = _inputs(100, 2, 24, 12.0)
    with torch.no_grad():
        got = a.forward_multistep(x)
        want = _loop(b, x)
        assert a.generated_multistep(x)[0] is not None
    assert torch.equal(got, want) and want.sum() > 0
    _assert_same_state(a, b)


@needs_compiler
def test_lif_multistep_runs_a_kernel_its_single_steps_made_else_its_own():
    """Without a gradient ``LIFNeuron.forward_multistep`` runs the kernel generated from its
    step once its single steps made one (generating costs more than a short run gains), else
    its hand-written kernel; the values are the step loop's either way."""
    a, b = _pair(lambda: LIFNeuron(24, thresh=-60.0, refrac=2.0))
    x = _inputs(60, 2, 24, 12.0)
    calls = []
    with torch.no_grad():
        first = a.forward_multistep(x[:20])
        assert a.generated_multistep(x[:1], new=False) == (None, "no kernel generated yet")
        middle = torch.stack([a(x[t]) for t in range(20, 30)])  # (GENERATE_AFTER = 1)
        kernel, why = a.generated_multistep(x[:1], new=False)
        assert kernel is not None, why
        wrapped = kernel.function
        kernel.function = lambda *args: calls.append(args[0]) or wrapped(*args)
        last = a.forward_multistep(x[30:])
        want = _loop(b, x)
    assert calls == [30] and want.sum() > 0
    assert torch.equal(torch.cat([first, middle, last]), want)
    _assert_same_state(a, b)


class ResetLIF(CurrentLIF):
    """A user's neuron that resets through :func:`pysnn.functional.spike.reset_membrane`,
    whose gradient term through the spike (``(s - s.detach()) * (v_reset - v).detach()``) is
    computed only under autograd: a recording without a gradient does not show it."""

    def step(self, x):
        from pysnn.functional.decay import exp_decay
        from pysnn.functional.spike import reset_membrane

        mem = self.derived("mem", exp_decay, self.tau_v, self.dt)
        self.v = self.v * mem + x
        s = self.fire(self.v - self.thresh)
        self.v = reset_membrane(self.v, s, self.v_rest)
        return s


@needs_compiler
def test_a_step_that_computes_otherwise_under_autograd_gets_no_generated_backward():
    """Its forward kernel is generated (the values of its step without a gradient); under
    BPTT its steps run as written, so the gradient keeps the reset's term (a backward written
    from the recording would drop it: 1.25 off in 1.7 before this was checked)."""
    a, b = _pair(lambda: ResetLIF(16, thresh=0.5), torch.float64)
    x = _inputs(40, 3, 16, 0.4, torch.float64, seed=2)
    with torch.no_grad():
        assert torch.equal(a.forward_multistep(x), b.forward_multistep(x))
        kernel, why = a.generated_multistep(x)
    assert kernel is not None and kernel.gradient is None, why
    assert "calls other torch functions under autograd" in kernel.no_backward
    assert "detach" in kernel.no_backward
    a.reset_state(), b.reset_state()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    assert "has no backward" in a.generated_multistep(xa)[1]
    w = torch.rand(40, 3, 16, dtype=torch.float64)
    (a.forward_multistep(xa) * w).sum().backward()
    (_loop(b, xb) * w).sum().backward()
    assert xb.grad.abs().sum() > 0
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)


@needs_compiler
def test_explain_reports_the_step_without_backward_as_stepped_under_autograd():
    from pysnn.engine import explain

    neuron, x = ResetLIF(16, thresh=0.5), _inputs(10, 2, 16, 0.4)
    with torch.no_grad():
        quiet = explain(neuron, x)
    assert quiet.fused and quiet.backends[""] == "c-generated", quiet
    training = explain(neuron, x.clone().requires_grad_(True))
    assert not training.fused and "has no backward" in training.fallbacks[0][1], training


@needs_compiler
def test_an_input_of_another_dtype_raises_and_leaves_generation_possible():
    a = CurrentLIF(16)
    x = _inputs(100, 2, 16, 0.4)
    with torch.no_grad():
        with pytest.raises(TypeError, match="dtype"):
            a.forward_multistep(x.double())
        assert a.generated_step is None  # (not noted as a step that cannot be generated)
        a.forward_multistep(x)
        assert a.generated_multistep(x[:1], new=False)[0] is not None


def test_explain_under_autograd_reports_a_lif_without_fused_backward_as_stepped():
    """A surrogate written as a plain function (no ``grad`` method): the hand-written LIF
    kernel has no backward for it, so under autograd the steps run as torch operations, and
    explain says so (it said "fused" before); without a gradient the kernel runs."""
    from torch import nn

    from pysnn.connection import Linear
    from pysnn.engine import explain
    from pysnn.multistep import Unroll
    from pysnn.surrogate import FastSigmoid

    fast_sigmoid = FastSigmoid(10.0)

    def surrogate(z):
        return fast_sigmoid(z)

    torch.manual_seed(0)
    net = nn.Sequential(Linear(10, 20, init="uniform", init_kwargs={"a": 0.0, "b": 9.0}))
    net.append(LIFNeuron(20, thresh=-60.0, surrogate=surrogate)).double()
    reference = copy.deepcopy(net)
    x = torch.rand(30, 2, 10, dtype=torch.float64)
    training = explain(net, x)
    assert not training.fused and "grad(x) method" in training.fallbacks[0][1], training
    with torch.no_grad():
        assert explain(net, x).fused
    Unroll(net)(x).sum().backward()
    reference[1].reset_state()
    torch.stack([reference(x[t]) for t in range(30)]).sum().backward()
    assert reference[0].weight.grad.abs().sum() > 0
    torch.testing.assert_close(net[0].weight.grad, reference[0].weight.grad, rtol=1e-12, atol=0)


@needs_compiler
def test_an_edited_constant_generates_once_for_later_calls(monkeypatch):
    """After single steps made a kernel, an edited constant makes the next multi-step call
    generate a new one, once: later calls use it."""
    from pysnn import neuron as neuron_module

    a, b = _pair(lambda: CurrentLIF(16, thresh=0.7))
    x = _inputs(200, 2, 16, 0.4)
    made = []
    generate = neuron_module.generate
    monkeypatch.setattr(neuron_module, "generate", lambda *args: made.append(1) or generate(*args))
    with torch.no_grad():
        got = [a(x[t]) for t in range(70)]  # single steps: a kernel made (GENERATE_AFTER)
        want = [b(x[t]) for t in range(70)]
        for neuron in (a, b):
            neuron.thresh.data.fill_(0.5)
        # (calls of at least GENERATE_AFTER steps: the first generates, the second reuses)
        got += list(a.forward_multistep(x[70:140]))
        kernel, why = a.generated_multistep(x[:1], new=False)
        assert kernel is not None, why
        wrapped, runs = kernel.function, []
        kernel.function = lambda *args: runs.append(args[0]) or wrapped(*args)
        got += list(a.forward_multistep(x[140:]))
        assert runs == [60]  # (it had stepped through the stale single-step kernel's loop)
        got += [a(x[t]) for t in range(130, 140)]  # (single steps: generating nothing new)
        want += [b(x[t]) for t in range(70, 200)] + [b(x[t]) for t in range(130, 140)]
    assert len(made) == 2  # (the single steps' kernel, then one for the edited constant)
    assert torch.equal(torch.stack(got), torch.stack(want))
    _assert_same_state(a, b)
