"""Silently wrong results made loud (issue 13), neurons, connections and rules: each case checks the new error/warning and the
value that an independent computation gives."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pysnn.connection import Linear
from pysnn.learning import STDP
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, LIFNeuron


# ---------------------------------------------------------------- time steps of learning rules
@pytest.mark.parametrize("where", ["pre", "post", "connection"])
def test_rule_refuses_different_time_steps(where):
    dts = {"pre": 1.0, "post": 1.0, "connection": 1.0}
    dts[where] = 0.5
    pre, post = Input(3, dt=dts["pre"]), LIFNeuron(2, dt=dts["post"])
    conn = Linear(3, 2, dt=dts["connection"])
    with pytest.raises(ValueError, match=rf"{where}\.dt = 0.5 ms") as info:
        STDP(connection=conn, pre=pre, post=post)
    assert "dt = 1 ms" in str(info.value)


def test_rule_accepts_equal_time_steps():
    rule = STDP(connection=Linear(3, 2, dt=0.5), pre=Input(3, dt=0.5), post=LIFNeuron(2, dt=0.5))
    assert rule.groups[0].dt == 0.5


# ---------------------------------------------------------------- threshold at or below reset
def fire_count(neuron: LIFNeuron, steps: int) -> int:
    with torch.no_grad():
        return int(sum(neuron(torch.zeros(1, 1)).sum() for _ in range(steps)))


@pytest.mark.parametrize("cls", [LIFNeuron, IFNeuron, AdaptiveLIFNeuron])
def test_threshold_below_reset_warns_at_construction(cls):
    with pytest.warns(UserWarning, match=r"thresh <= v_reset .*thresh -70 mV, v_reset -65 mV"):
        neuron = cls(1, thresh=-70.0, v_rest=-75.0, v_reset=-65.0, refrac=5.0)
    # what the warning says: from the first spike on, one spike per step, refrac ignored
    neuron.v_rest = -60.0  # start above threshold: the first spike is at step 0
    assert fire_count(neuron, 20) == 20


def test_threshold_above_reset_does_not_warn_and_respects_refrac():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neuron = LIFNeuron(1, thresh=-70.0, v_rest=-60.0, v_reset=-80.0, tau_v=1e9, refrac=5.0)
    # at rest above threshold: a spike, 5 refractory steps (input ignored, no leak to speak of
    # with tau_v = 1e9 ms), ... : v stays at -80 after the reset, so exactly one spike
    assert fire_count(neuron, 20) == 1


def test_assignment_that_creates_threshold_below_reset_warns_once():
    neuron = LIFNeuron(4)
    with pytest.warns(UserWarning, match=r"for 1 neuron\(s\)"):
        neuron.thresh = torch.tensor([-52.0, -52.0, -70.0, -52.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neuron.v_reset = -66.0  # still below for that neuron: no second warning
        neuron.thresh = -52.0  # fixed
    with pytest.warns(UserWarning, match="thresh <= v_reset"):
        neuron.v_reset = -40.0


# ---------------------------------------------------------------- bounds at initialisation
def test_default_init_with_wmin_zero_draws_within_bounds_without_zeros():
    torch.manual_seed(0)
    n_in = 100
    weight = Linear(n_in, 400, wmin=0.0, wmax=1.0).weight.detach()
    bound = 1 / math.sqrt(n_in)  # kaiming-uniform (a = sqrt 5): U(-1/sqrt(in), 1/sqrt(in))
    assert int((weight == 0).sum()) == 0  # was ~50 % exactly 0 (clamped)
    assert 0 <= weight.min() and weight.max() <= bound
    # uniform on [0, bound]: mean bound / 2, std bound / sqrt(12); 40 000 samples
    assert float(weight.mean()) == pytest.approx(bound / 2, rel=0.02)
    assert float(weight.std()) == pytest.approx(bound / math.sqrt(12), rel=0.02)


def test_normal_init_is_truncated_to_the_bounds():
    torch.manual_seed(0)
    weight = Linear(100, 400, wmin=0.0, init="normal", init_kwargs={"std": 0.5}).weight.detach()
    assert int((weight == 0).sum()) == 0 and weight.min() > 0
    # half-normal of sigma 0.5: mean sigma sqrt(2 / pi)
    assert float(weight.mean()) == pytest.approx(0.5 * math.sqrt(2 / math.pi), rel=0.02)


def test_init_within_bounds_is_unchanged():
    torch.manual_seed(3)
    bounded = Linear(20, 8, wmin=-1.0, wmax=1.0).weight.detach()
    torch.manual_seed(3)
    free = Linear(20, 8).weight.detach()
    torch.testing.assert_close(bounded, free, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"wmin": 2.0}, r"draws from \[-0.316228, 0.316228\].*\[2.0, inf\]"),
        ({"wmax": 1.0, "init": "constant", "init_kwargs": {"val": 3.0}}, r"val=3.0 is outside"),
    ],
)
def test_init_that_cannot_meet_the_bounds_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Linear(10, 5, **kwargs)


def test_loading_an_out_of_bounds_weight_warns():
    conn = Linear(4, 3, wmin=0.0, wmax=1.0)
    state = {"weight": torch.full((3, 4), 5.0), "delay_steps": conn.delay_steps}
    with pytest.warns(UserWarning, match=r"12 of 12 values outside \[wmin, wmax\] = \[0.0, 1.0\]"):
        conn.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conn.load_state_dict({"weight": torch.full((3, 4), 0.5), "delay_steps": conn.delay_steps})


# ---------------------------------------------------------------- batch change, spikes in flight
def test_batch_change_with_spikes_in_flight_warns():
    conn = Linear(3, 2, delay=3.0, init="constant", init_kwargs={"val": 1.0})
    with torch.no_grad():
        conn(torch.ones(4, 3))  # arrives 3 steps later: in flight
        with pytest.warns(UserWarning, match=r"from 4 to 2 .*reset_state\(\)"):
            out = conn(torch.zeros(2, 3))
    assert torch.equal(out, torch.zeros(2, 2))  # what was in flight is gone


@pytest.mark.parametrize("delay", [3.0, torch.full((2, 3), 2.0)])
def test_batch_change_after_reset_or_without_spikes_is_silent(delay):
    conn = Linear(3, 2, delay=delay)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            conn(torch.zeros(4, 3))  # nothing in flight
            conn(torch.zeros(2, 3))
            conn(torch.ones(2, 3))
            conn.reset_state()
            conn(torch.ones(5, 3))


def test_batch_change_drops_per_synapse_queue_with_a_warning():
    conn = Linear(3, 2, delay=torch.full((2, 3), 2.0))
    with torch.no_grad():
        conn(torch.ones(4, 3))
        with pytest.warns(UserWarning, match="from 4 to 2"):
            conn(torch.zeros(2, 3))


def test_batch_change_drops_rule_history_with_a_warning():
    pre, post, conn = Input(3), LIFNeuron(2), Linear(3, 2, delay=2.0)
    rule = STDP(connection=conn, pre=pre, post=post)

    def step(x):
        post(conn(pre(x)))
        rule.step()

    with torch.no_grad():
        step(torch.ones(4, 3))
        with pytest.warns(UserWarning) as record:
            step(torch.zeros(2, 3))
    messages = [str(w.message) for w in record]
    assert any("STDP (rule state 'pre_history')" in m for m in messages)
    assert any("Linear (delay history)" in m for m in messages)


# ---------------------------------------------------------------- unreasonable delays
def test_delay_overflowing_int64_is_refused():
    with pytest.raises(ValueError, match=r"1e\+19 ms .*int64"):
        Linear(4, 2, delay=1e19)


def test_delay_over_the_memory_limit_is_refused_with_the_figure():
    # (1e6 + 1) steps x 784 inputs x 4 bytes = 3.136 GB per sample > 1 GiB
    with pytest.raises(ValueError, match=r"3.14 GB per batch sample .*MAX_DELAY_BYTES_PER_SAMPLE"):
        Linear(784, 10, delay=1e6)
    # per-synapse delays count the queue too: (2 ** 20) x (100 + 200) x 4 bytes = 1.26 GB
    delay = torch.zeros(200, 100)
    delay[0, 0] = 2.0**20 - 1
    with pytest.raises(ValueError, match=r"1.26 GB"):
        Linear(100, 200, delay=delay)


def test_delay_memory_limit_is_a_class_attribute(monkeypatch):
    monkeypatch.setattr(Linear, "MAX_DELAY_BYTES_PER_SAMPLE", 4 * 11 * 10)
    Linear(10, 3, delay=10.0)  # 11 steps x 10 inputs x 4 bytes: at the limit
    with pytest.raises(ValueError, match="over the limit"):
        Linear(10, 3, delay=11.0)


def test_failed_history_allocation_names_the_delay(monkeypatch):
    conn = Linear(10, 3, delay=5.0)

    def fail(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(torch.Tensor, "new_zeros", fail)
    with pytest.raises(RuntimeError, match=r"delay of 5 steps .*shape \(7, 6, 10\)"):
        conn(torch.zeros(7, 10))


# ---------------------------------------------------------------- autograd graph growth
def test_default_graph_warning_threshold():
    assert LIFNeuron.GRAPH_WARN_STEPS == 10_000


def run_steps(neuron, x, steps):
    for _ in range(steps):
        neuron(x)


def test_long_run_with_a_graph_warns_once():
    neuron = LIFNeuron(3)
    neuron.GRAPH_WARN_STEPS = 30
    x = torch.full((2, 3), 1.0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_steps(neuron, x, 29)
    assert neuron.v.grad_fn is not None  # the graph the warning is about is there
    with pytest.warns(UserWarning, match=r"30 steps.*torch.no_grad\(\).*detach_state\(\)"):
        neuron(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_steps(neuron, x, 40)  # once


def test_detach_reset_and_no_grad_keep_it_silent():
    neuron = LIFNeuron(3, surrogate=None)  # the state carries the graph, the spikes do not
    neuron.GRAPH_WARN_STEPS = 30
    x = torch.full((2, 3), 1.0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            run_steps(neuron, x, 20)
            neuron.detach_state()
        run_steps(neuron, x, 20)
        neuron.reset_state()
        run_steps(neuron, x, 20)
        with torch.no_grad():
            run_steps(neuron, x, 100)
    with pytest.warns(UserWarning, match="autograd graph"):
        run_steps(neuron, x, 10)  # 20 + 10 steps with a graph since the reset


# ---------------------------------------------------------------- precision policy
def drive(neuron, dtype, steps=200):
    with torch.no_grad():
        for _ in range(steps):
            neuron(torch.full((1, 1), 0.1, dtype=dtype))
    return float(neuron.v)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", [LIFNeuron, IFNeuron, AdaptiveLIFNeuron, Input])
def test_neurons_refuse_low_precision(cls, dtype):
    neuron = cls(1)
    with pytest.raises(TypeError, match=rf"cannot run in {dtype}.*float\(\)"):
        neuron.to(dtype)
    assert neuron._reference().dtype == torch.float32  # nothing converted


def test_float32_lif_reaches_the_closed_form_that_bfloat16_missed():
    # v(n) = -65 + 0.1 * sum_{k<n} d^k with d = exp(-1/100): 200 steps -> -56.31 mV
    d = math.exp(-1 / 100)
    expected = -65 + 0.1 * (1 - d**200) / (1 - d)
    assert drive(LIFNeuron(1, thresh=0.0), torch.float32) == pytest.approx(expected, abs=1e-3)
    assert expected == pytest.approx(-56.31, abs=0.01)


def test_low_precision_connection_feeds_a_float32_neuron():
    fc = Linear(1, 1, init="constant", init_kwargs={"val": 0.1}).to(torch.bfloat16)
    lif = LIFNeuron(1, thresh=0.0)
    with torch.no_grad():
        for _ in range(200):
            lif(fc(torch.ones(1, 1, dtype=torch.bfloat16)).float())
    # bfloat16(0.1) = 0.10009765625 mV per step, integrated in float32
    d = math.exp(-1 / 100)
    expected = -65 + 0.10009765625 * (1 - d**200) / (1 - d)
    assert float(lif.v) == pytest.approx(expected, abs=1e-3)


def test_refused_low_precision_leaves_a_network_unconverted():
    from pysnn.network import SNNNetwork
    from pysnn.neuron import Input

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.inp, self.fc, self.lif = Input(3), Linear(3, 2), LIFNeuron(2)

    net = Net()
    with pytest.raises(TypeError, match="cannot run in torch.bfloat16"):
        net.to(torch.bfloat16)
    assert net.fc.weight.dtype == torch.float32 and net.inp.tau_trace.dtype == torch.float32


def test_own_out_of_bound_write_warns_once_at_the_next_forward():
    conn = Linear(3, 2, wmin=0.0, wmax=1.0)
    x = torch.ones(1, 3)
    with torch.no_grad():
        conn.weight.copy_(torch.full((2, 3), 5.0))  # a write of the user's own
        with pytest.warns(UserWarning, match=r"outside \[wmin, wmax\] = \[0.0, 1.0\].*clamp_"):
            out = conn(x)
        assert torch.equal(out, torch.full((1, 2), 15.0))  # used as written, as the warning says
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            conn(x)  # no new write: no new check, no warning
            conn.clamp_()
            assert torch.equal(conn(x), torch.full((1, 2), 3.0))
            conn.normalize(10.0)  # pysnn's own edits (normalize may leave the bounds, on purpose)
            conn(x)
            conn.weight.fill_(0.5)  # within the bounds: checked, silent
            conn(x)
