"""Property-based tests (hypothesis): random shapes, batch sizes, per-neuron constants, dtypes
and delays. Each property compares two independent ways of computing the same thing: the fused
CPU kernels against the torch operations, a step loop against ``forward_multistep``, a batch
against its samples one by one, a module against one loaded from its ``state_dict``, and a
delayed connection against the shifted matrix product."""

from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pysnn import native
from pysnn.connection import Linear
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, LIFNeuron

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
DTYPES = st.sampled_from([torch.float32, torch.float64])
MODELS = st.sampled_from([LIFNeuron, IFNeuron, AdaptiveLIFNeuron])


@st.composite
def neurons(draw):
    """A neuron with random (scalar or per-neuron) constants, its dtype, and an input
    ``(T, B, n)`` in mV that makes it fire now and then."""
    cls, dtype = draw(MODELS), draw(DTYPES)
    n, batch, steps = draw(st.integers(1, 9)), draw(st.integers(1, 4)), draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)

    def constant(low, high):
        if draw(st.booleans()):
            return float(torch.empty(()).uniform_(low, high, generator=gen))
        return torch.empty(n).uniform_(low, high, generator=gen)

    kwargs = {
        "thresh": constant(-56.0, -48.0),
        "v_rest": constant(-70.0, -60.0),
        "v_reset": constant(-75.0, -62.0),  # below every threshold
        "refrac": constant(0.0, 4.0),
        "tau_trace": constant(2.0, 40.0),
        "trace_mode": draw(st.sampled_from(["additive", "reset"])),
        "dt": draw(st.sampled_from([0.5, 1.0])),
    }
    if cls is not IFNeuron:
        kwargs["tau_v"] = constant(5.0, 200.0)
    neuron = cls(n, **kwargs).to(dtype)
    x = (torch.rand(steps, batch, n, generator=gen) * 12.0).to(dtype)
    return neuron, x


def run(neuron, x):
    with torch.no_grad():
        return torch.stack([neuron(x[t]) for t in range(x.shape[0])])


def state(neuron):
    return {name: getattr(neuron, name).clone() for name in neuron.state_names}


def assert_same_state(a, b):
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


@SETTINGS
@given(neurons())
def test_fused_kernels_equal_torch_operations(case):
    neuron, x = case
    reference = copy.deepcopy(neuron)
    with native.enabled(False):
        expected = run(reference, x)
    spikes = run(neuron, x)
    assert torch.equal(spikes, expected)
    assert_same_state(state(neuron), state(reference))


@SETTINGS
@given(neurons())
def test_step_loop_equals_multistep(case):
    neuron, x = case
    looped = copy.deepcopy(neuron)
    expected = run(looped, x)
    with torch.no_grad():
        spikes = neuron.forward_multistep(x)
    assert torch.equal(spikes, expected)
    assert_same_state(state(neuron), state(looped))


def fresh_copy(neuron):
    """The same neuron (constants included) without state: the next step creates it."""
    fresh = copy.deepcopy(neuron)
    for name in fresh.state_names:
        fresh._buffers[name] = None
    return fresh


@SETTINGS
@given(neurons())
def test_batch_equals_samples_one_by_one(case):
    neuron, x = case
    expected = run(fresh_copy(neuron), x)
    for b in range(x.shape[1]):
        assert torch.equal(run(fresh_copy(neuron), x[:, b : b + 1])[:, 0], expected[:, b])


@SETTINGS
@given(neurons())
def test_state_dict_round_trip(case):
    neuron, x = case
    # same constant shapes (a per-neuron constant loads into a per-neuron one), other values
    kwargs = {name: getattr(neuron, name) + 0.25 for name in neuron.constant_names}
    loaded = type(neuron)(neuron.shape, dt=neuron.dt, trace_mode=neuron.trace_mode, **kwargs)
    loaded = loaded.to(x.dtype)
    loaded.load_state_dict(neuron.state_dict())
    assert torch.equal(run(loaded, x), run(neuron, x))


@st.composite
def connections(draw):
    """A Linear with a shared delay (ms), its dtype, and spikes ``(T, B, in)``."""
    dtype, dt = draw(DTYPES), draw(st.sampled_from([0.5, 1.0]))
    n_in, n_out = draw(st.integers(1, 12)), draw(st.integers(1, 8))
    batch, steps = draw(st.integers(1, 4)), draw(st.integers(1, 20))
    delay_steps = draw(st.integers(0, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    conn = Linear(n_in, n_out, dt=dt, delay=delay_steps * dt, dtype=dtype)
    with torch.no_grad():
        conn.weight.copy_(torch.randn(n_out, n_in, generator=gen))
    spikes = (torch.rand(steps, batch, n_in, generator=gen) < 0.3).to(dtype)
    return conn, spikes, delay_steps


def run_conn(conn, spikes):
    with torch.no_grad():
        return torch.stack([conn(spikes[t]) for t in range(spikes.shape[0])])


@SETTINGS
@given(connections())
def test_delayed_linear_is_the_shifted_product(case):
    conn, spikes, d = case
    shifted = torch.cat((torch.zeros_like(spikes[:d]), spikes[: spikes.shape[0] - d]))[
        : spikes.shape[0]
    ]
    expected = shifted @ conn.weight.detach().t()  # I(t) = W s(t - d)
    torch.testing.assert_close(run_conn(conn, spikes), expected)


@SETTINGS
@given(connections())
def test_linear_step_loop_equals_multistep_and_batch_equals_samples(case):
    conn, spikes, _ = case
    looped = copy.deepcopy(conn)
    expected = run_conn(looped, spikes)
    with torch.no_grad():
        torch.testing.assert_close(conn.forward_multistep(spikes), expected)
    torch.testing.assert_close(conn.history, looped.history)
    for b in range(spikes.shape[1]):
        single = copy.deepcopy(conn)
        single.reset_state()
        torch.testing.assert_close(run_conn(single, spikes[:, b : b + 1])[:, 0], expected[:, b])


@SETTINGS
@given(connections())
def test_linear_state_dict_round_trip(case):
    conn, spikes, _ = case
    loaded = Linear(conn.in_features, conn.out_features, dt=conn.dt, dtype=spikes.dtype)
    loaded.load_state_dict(conn.state_dict())
    assert loaded.max_delay == conn.max_delay
    torch.testing.assert_close(run_conn(loaded, spikes), run_conn(conn, spikes), rtol=0, atol=0)
