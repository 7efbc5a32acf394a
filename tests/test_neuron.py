"""Neuron dynamics against closed forms and hand-computed values."""

import math

import numpy as np
import pytest
import torch

from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, IzhikevichNeuron, LIFNeuron


def run(neuron, inputs):
    """Step ``neuron`` over ``inputs`` (T, B, *shape); return stacked (spikes, v)."""
    spikes, volts = [], []
    for x in inputs:
        spikes.append(neuron(x))
        volts.append(neuron.v.clone())
    return torch.stack(spikes), torch.stack(volts)


def test_lif_constant_input_matches_closed_form():
    # v_n = v_rest + x (1 - d^n) / (1 - d): leak first, then add x, so after n steps
    # v_n - v_rest = x (1 + d + ... + d^(n-1)).
    x, tau, v_rest = 0.3, 20.0, -65.0
    neuron = LIFNeuron(1, dt=1.0, tau_v=tau, v_rest=v_rest, thresh=100.0)
    neuron = neuron.double()
    _, v = run(neuron, torch.full((30, 1, 1), x, dtype=torch.float64))
    d = math.exp(-1.0 / tau)
    expected = [v_rest + x * (1 - d**n) / (1 - d) for n in range(1, 31)]
    np.testing.assert_allclose(v[:, 0, 0].numpy(), expected, rtol=0, atol=1e-12)


def test_lif_first_spike_step_matches_closed_form():
    # First n with v_rest + x (1-d^n)/(1-d) >= thresh, solved analytically.
    x, tau, v_rest, thresh = 1.0, 100.0, -65.0, -52.0
    d = math.exp(-1.0 / tau)
    n_first = math.ceil(math.log(1 - (thresh - v_rest) * (1 - d) / x) / math.log(d))
    neuron = LIFNeuron(1, tau_v=tau, v_rest=v_rest, thresh=thresh).double()
    spikes, _ = run(neuron, torch.full((40, 1, 1), x, dtype=torch.float64))
    first = int(torch.nonzero(spikes[:, 0, 0])[0])
    assert first == n_first - 1  # step index n-1 is the n-th step
    assert n_first == 14


def test_refractory_spacing_dt1_refrac5():
    neuron = LIFNeuron(2, refrac=5.0)
    spikes, v = run(neuron, torch.full((20, 1, 2), 100.0))
    assert torch.nonzero(spikes[:, 0, 0]).flatten().tolist() == [0, 6, 12, 18]
    # While refractory the input is ignored: v only relaxes from reset toward rest (both -65).
    assert torch.all(v[1:6, 0, 0] == -65.0)


def test_refractory_counts_in_steps_of_dt():
    neuron = LIFNeuron(1, dt=0.5, refrac=2.0)  # 4 steps
    spikes, _ = run(neuron, torch.full((12, 1, 1), 100.0))
    assert torch.nonzero(spikes[:, 0, 0]).flatten().tolist() == [0, 5, 10]


def test_reset_value_and_threshold_equality_spikes():
    neuron = LIFNeuron(1, thresh=-52.0, v_rest=-65.0, v_reset=-70.0, tau_v=math.inf, refrac=0)
    s = neuron(torch.tensor([[13.0]]))  # exactly at threshold: v >= thresh spikes
    assert s.item() == 1.0 and neuron.v.item() == -70.0


def test_if_has_no_leak():
    neuron = IFNeuron(1, thresh=0.0, v_rest=-10.0, refrac=0)
    _, v = run(neuron, torch.full((4, 1, 1), 1.0))
    assert v[:, 0, 0].tolist() == [-9.0, -8.0, -7.0, -6.0]
    assert "tau_v" not in neuron.state_dict()


def test_per_neuron_parameters():
    thresh = torch.tensor([-60.0, -50.0])
    neuron = LIFNeuron(2, thresh=thresh, tau_v=math.inf, refrac=0)
    spikes, _ = run(neuron, torch.full((15, 1, 2), 1.0))
    # Rest -65: neuron 0 needs 5 steps, neuron 1 needs 15.
    assert spikes[:, 0, 0].sum() == 3 and int(torch.nonzero(spikes[:, 0, 1])[0]) == 14


def test_adaptive_threshold_rises_and_returns_to_base():
    tau_theta, plus = 50.0, 2.0
    neuron = AdaptiveLIFNeuron(1, theta_plus=plus, tau_theta=tau_theta, refrac=0).double()
    x = torch.zeros(60, 1, 1, dtype=torch.float64)
    x[0] = 100.0
    run(neuron, x[:1])
    assert neuron.theta.item() == pytest.approx(plus)
    run(neuron, x[1:])
    # 59 more steps of pure decay: theta = plus * exp(-59/tau) -> threshold back toward -52.
    assert neuron.theta.item() == pytest.approx(plus * math.exp(-59 / tau_theta), rel=1e-12)
    neuron.reset_state()
    assert neuron.theta.item() == 0.0


def test_adaptive_threshold_blocks_spike():
    neuron = AdaptiveLIFNeuron(1, theta_plus=5.0, tau_theta=1e9, refrac=0, tau_v=math.inf)
    neuron(torch.tensor([[13.0]]))  # spike, theta=5, v reset to -65
    assert neuron(torch.tensor([[13.0]])).item() == 0.0  # -52 < -47
    assert neuron(torch.tensor([[5.0]])).item() == 1.0  # -47 reached


def test_shared_theta_persists_and_freezes_in_eval():
    neuron = AdaptiveLIFNeuron(3, theta_plus=0.5, tau_theta=math.inf, theta_shared=True)
    neuron(torch.tensor([[100.0, 0, 0], [100.0, 100.0, 0]]))
    assert neuron.theta.tolist() == [1.0, 0.5, 0.0]  # summed over the batch
    neuron.reset_state()
    assert neuron.theta.tolist() == [1.0, 0.5, 0.0]
    assert "theta" in neuron.state_dict()
    neuron.eval()
    neuron.reset_state()
    neuron(torch.full((1, 3), 100.0))
    assert neuron.theta.tolist() == [1.0, 0.5, 0.0]


def _izhikevich_reference(a, b, c, d, current, steps, h=0.01):
    """Independent fine-step Euler integration (h=0.01 ms) in numpy; returns spike count."""
    v, u, count = -65.0, b * -65.0, 0
    for _ in range(int(steps / h)):
        v += h * (0.04 * v * v + 5 * v + 140 - u + current)
        u += h * a * (b * v - u)
        if v >= 30.0:
            v, u, count = c, u + d, count + 1
    return count


@pytest.mark.parametrize(
    "name,abcd,rate_window",
    [
        ("regular spiking", (0.02, 0.2, -65.0, 8.0), (20, 26)),
        ("fast spiking", (0.1, 0.2, -65.0, 2.0), (120, 145)),
    ],
)
def test_izhikevich_firing(name, abcd, rate_window):
    # Izhikevich (2003) published parameters, I = 10 for 1 s at dt = 0.1 ms. The independent
    # fine-step (0.01 ms) integration fires 23 (RS) and 136 (FS) spikes; the half-step Euler scheme
    # converges to it as dt shrinks.
    dt, current = 0.1, 10.0
    a, b, c, d = abcd
    neuron = IzhikevichNeuron(1, dt, a=a, b=b, c=c, d=d).double()
    spikes, _ = run(neuron, torch.full((int(1000 / dt), 1, 1), current, dtype=torch.float64))
    count = int(spikes.sum())
    reference = _izhikevich_reference(*abcd, current, 1000)
    assert rate_window[0] <= count <= rate_window[1], (name, count)
    assert abs(count - reference) <= 0.1 * reference, (count, reference)


def test_fast_spiking_fires_faster_than_regular():
    rs, fs = IzhikevichNeuron(1), IzhikevichNeuron(1, a=0.1, d=2.0)
    x = torch.full((500, 1, 1), 10.0)
    assert run(fs, x)[0].sum() > 2 * run(rs, x)[0].sum()


def test_trace_additive_and_reset_modes():
    train = [1, 0, 1, 1, 0, 0]
    tau, scale = 10.0, 0.5
    d = math.exp(-1 / tau)
    add = Input(1, tau_trace=tau, trace_scale=scale).double()
    rst = Input(1, tau_trace=tau, trace_scale=scale, trace_mode="reset").double()
    x_add = x_rst = 0.0
    for s in train:
        x_add = x_add * d + scale * s
        x_rst = scale if s else x_rst * d
        spike = torch.tensor([[float(s)]], dtype=torch.float64)
        add(spike)
        rst(spike)
        assert add.trace.item() == pytest.approx(x_add, rel=1e-12)
        assert rst.trace.item() == pytest.approx(x_rst, rel=1e-12)


def test_lif_trace_follows_its_spikes():
    neuron = LIFNeuron(1, refrac=0, tau_trace=5.0, trace_scale=2.0)
    x = torch.tensor([[[100.0]], [[0.0]], [[0.0]]])
    run(neuron, x)
    assert neuron.trace.item() == pytest.approx(2.0 * math.exp(-2 / 5.0), rel=1e-6)


def test_input_accepts_bool_and_returns_float():
    inp = Input((2, 2))
    out = inp(torch.tensor([[[True, False], [False, True]]]))
    assert out.dtype == torch.float32 and out.sum() == 2


def test_batch_size_change_recreates_state():
    neuron = LIFNeuron(4)
    neuron(torch.ones(3, 4))
    assert neuron.v.shape == (3, 4) and neuron.batch_size == 3
    out = neuron(torch.ones(5, 4))
    assert out.shape == (5, 4) and neuron.v.shape == (5, 4)


def test_batch_change_starts_from_rest():
    neuron = LIFNeuron(1, tau_v=math.inf)
    neuron(torch.ones(3, 1))
    neuron(torch.full((2, 1), 2.0))
    assert neuron.v.tolist() == [[-63.0], [-63.0]]


def test_reset_state_restores_initial_state():
    neuron = LIFNeuron(2)
    neuron(torch.full((1, 2), 100.0))
    neuron(torch.full((1, 2), 3.0))
    neuron.reset_state()
    assert neuron.v.tolist() == [[-65.0, -65.0]]
    assert neuron.trace.sum() == 0 and neuron.refrac_count.sum() == 0 and neuron.spikes.sum() == 0


def test_double_and_dtype_following():
    neuron = LIFNeuron(3).double()
    out = neuron(torch.ones(2, 3, dtype=torch.float64))
    assert out.dtype == torch.float64 and neuron.v.dtype == torch.float64
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        neuron(torch.ones(2, 3))


def test_state_dict_holds_parameters_not_state():
    neuron = LIFNeuron(3, thresh=torch.tensor([-50.0, -51.0, -52.0]))
    neuron(torch.ones(2, 3))
    keys = set(neuron.state_dict())
    assert {"thresh", "v_rest", "v_reset", "tau_v", "refrac", "tau_trace", "trace_scale"} == keys
    fresh = LIFNeuron(3, thresh=torch.zeros(3), tau_v=10.0)
    fresh.load_state_dict(neuron.state_dict())
    assert torch.equal(fresh.thresh, neuron.thresh)
    assert torch.equal(fresh.params.decay, neuron.params.decay)  # derived: follow the loaded tau_v


def test_no_grad_and_grad_modes():
    neuron = LIFNeuron(2)
    with torch.no_grad():
        out = neuron(torch.ones(1, 2, requires_grad=True))
    assert not out.requires_grad and not neuron.v.requires_grad


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dt": 0.0}, "dt must be a finite number > 0"),
        ({"dt": -1.0}, "dt must be a finite number > 0"),
        ({"tau_v": 0.0}, "tau_v must be > 0"),
        ({"tau_trace": -5.0}, "tau_trace must be > 0"),
        ({"refrac": -1.0}, "refrac must be >= 0"),
        ({"thresh": float("nan")}, "thresh contains NaN"),
        ({"trace_mode": "nearest"}, "trace_mode must be one of"),
        ({"thresh": torch.zeros(3)}, "thresh must be a scalar or a tensor broadcastable"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIFNeuron(2, **kwargs)


def test_bad_shapes_and_inputs_raise():
    with pytest.raises(ValueError, match="shape must be non-empty with positive sizes"):
        LIFNeuron(0)
    neuron = LIFNeuron(4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4\)"):
        neuron(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4\)"):
        neuron(torch.ones(4))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        neuron(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        neuron([[1.0] * 4])
    with pytest.raises(ValueError, match="x contains NaN"):
        neuron(torch.tensor([[1.0, float("nan"), 0.0, 0.0]]))


def test_nan_check_can_be_switched_off():
    import pysnn

    neuron = LIFNeuron(1)
    with pysnn.checks(False):
        neuron(torch.tensor([[float("nan")]]))
    assert pysnn.checks_enabled()
