"""Connections: equality with torch functionals, lossless delays, bounds, init, errors."""

import copy
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F

from pysnn.connection import Connection, Conv2d, Linear


def step_all(conn, inputs):
    return torch.stack([conn(x) for x in inputs])


@pytest.mark.parametrize("propagation", ["dense", "event"])
def test_linear_equals_f_linear(propagation):
    torch.manual_seed(0)
    conn = Linear(20, 7, bias=True, propagation=propagation)
    x = (torch.rand(5, 20) < 0.3).float()
    torch.testing.assert_close(conn(x), F.linear(x, conn.weight, conn.bias))


def test_event_and_dense_agree_on_graded_input():
    torch.manual_seed(1)
    dense, event = Linear(30, 9), Linear(30, 9, propagation="event")
    event.load_state_dict(dense.state_dict())
    x = torch.rand(4, 30) * (torch.rand(4, 30) < 0.2)
    torch.testing.assert_close(event(x), dense(x))


@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 2)]
)
def test_conv2d_equals_f_conv2d(stride, padding, dilation, groups):
    torch.manual_seed(0)
    conv = Conv2d(
        4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=True
    )
    x = (torch.rand(3, 4, 11, 9) < 0.4).float()
    expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation, groups)
    assert torch.equal(conv(x), expected)
    assert conv.weight.shape == torch.nn.Conv2d(4, 6, 3, groups=groups).weight.shape


def test_shared_delay_two_steps():
    conn = Linear(1, 1, delay=2.0, init="constant", init_kwargs={"val": 1.0})
    x = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view(6, 1, 1)
    out = step_all(conn, x).flatten().tolist()
    assert out == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]  # spikes at t=0,1 arrive at t=2,3


def test_delay_zero_delivers_same_step():
    conn = Linear(2, 1, init="constant", init_kwargs={"val": 0.5})
    assert conn(torch.tensor([[1.0, 1.0]])).item() == 1.0
    assert conn.arriving_spikes().tolist() == [[1.0, 1.0]]


def test_delay_in_ms_rounds_to_steps():
    conn = Linear(1, 1, dt=0.5, delay=1.0, init="constant", init_kwargs={"val": 1.0})
    assert conn.delay_steps.item() == 2 and conn.delay.item() == 1.0
    out = step_all(conn, torch.tensor([1.0, 0, 0, 0]).view(4, 1, 1)).flatten().tolist()
    assert out == [0.0, 0.0, 1.0, 0.0]


def test_burst_longer_than_delay_is_lossless():
    # Every step for 7 steps over a delay of 3: all 7 spikes arrive, each at t + 3.
    conn = Linear(1, 1, delay=3.0, init="constant", init_kwargs={"val": 1.0})
    pattern = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    out = step_all(conn, torch.tensor(pattern, dtype=torch.float32).view(-1, 1, 1)).flatten()
    assert out.tolist() == [0, 0, 0] + pattern[:-3]
    assert out.sum() == 7


@pytest.mark.parametrize("propagation", ["dense", "event"])
def test_per_synapse_delays(propagation):
    # weight[i, j] = 10 * i + j + 1 identifies each synapse; delays 0..3 per synapse.
    weight = torch.tensor([[1.0, 2.0], [11.0, 12.0]])
    delays = torch.tensor([[0.0, 3.0], [2.0, 1.0]])
    conn = Linear(2, 2, delay=delays, propagation=propagation)
    with torch.no_grad():
        conn.weight.copy_(weight)
    x = torch.zeros(8, 1, 2)
    x[0, 0, 0] = 1  # pre 0 at t=0 -> post 0 at t=0 (w 1), post 1 at t=2 (w 11)
    x[1, 0, 1] = 1  # pre 1 at t=1 -> post 0 at t=4 (w 2), post 1 at t=2 (w 12)
    x[2, 0, 1] = 1  # pre 1 at t=2 -> post 0 at t=5 (w 2), post 1 at t=3 (w 12)
    out = step_all(conn, x)[:, 0]
    expected = torch.zeros(8, 2)
    expected[0, 0] = 1
    expected[2, 1] = 11 + 12
    expected[4, 0] = 2
    expected[5, 0] = 2
    expected[3, 1] = 12
    assert torch.equal(out, expected)


def test_per_synapse_delay_matches_reference_random():
    torch.manual_seed(3)
    n_in, n_out, steps, batch = 6, 5, 30, 3
    delays = torch.randint(0, 5, (n_out, n_in)).float()
    conn = Linear(n_in, n_out, delay=delays, propagation="event").double()
    x = (torch.rand(steps, batch, n_in) < 0.3).double()
    out = step_all(conn, x)
    # Independent reference: I_i(t) = sum_j w_ij s_j(t - d_ij).
    w, d = conn.weight.detach(), delays.long()
    ref = torch.zeros(steps, batch, n_out, dtype=torch.float64)
    for t in range(steps):
        for i in range(n_out):
            for j in range(n_in):
                if t - d[i, j] >= 0:
                    ref[t, :, i] += w[i, j] * x[t - d[i, j], :, j]
    torch.testing.assert_close(out, ref)


def test_arriving_spikes_per_synapse():
    delays = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    conn = Linear(2, 2, delay=delays)
    conn(torch.tensor([[1.0, 1.0]]))
    assert conn.arriving_spikes()[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    conn(torch.tensor([[0.0, 0.0]]))
    assert conn.arriving_spikes()[0].tolist() == [[0.0, 0.0], [1.0, 0.0]]
    conn(torch.tensor([[0.0, 0.0]]))
    assert conn.arriving_spikes()[0].tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_delayed_reads_any_history():
    conn = Linear(3, 2, delay=2.0)
    history = torch.arange(9.0).view(1, 3, 3)  # (B, L, in)
    assert conn.delayed(history).tolist() == [[6.0, 7.0, 8.0]]


def test_reset_state_clears_spikes_in_flight():
    for delay in (2.0, torch.tensor([[2.0]])):
        conn = Linear(1, 1, delay=delay, init="constant", init_kwargs={"val": 1.0})
        conn(torch.ones(1, 1))
        conn.reset_state()
        assert conn(torch.zeros(1, 1)).item() == 0 and conn(torch.zeros(1, 1)).item() == 0


def test_conv2d_delay():
    conv = Conv2d(1, 1, 1, delay=1.0, init="constant", init_kwargs={"val": 2.0})
    x = torch.ones(2, 1, 3, 3)
    assert conv(x).sum() == 0
    assert torch.equal(conv(torch.zeros_like(x)), 2 * x)


def test_batch_size_change_and_double():
    conn = Linear(3, 2, delay=1.0)
    conn(torch.ones(4, 3))
    with pytest.warns(UserWarning, match="from 4 to 2"):  # the spikes in flight are dropped
        assert conn(torch.ones(2, 3)).shape == (2, 2)  # history re-created, nothing carried over
    conn = conn.double()
    assert conn(torch.ones(2, 3, dtype=torch.float64)).dtype == torch.float64


def test_state_dict_round_trip_into_fresh_module():
    delays = torch.randint(0, 4, (3, 4)).float()
    conn = Linear(4, 3, delay=delays, bias=True)
    conn(torch.ones(2, 4))
    fresh = Linear(4, 3, delay=torch.zeros(3, 4), bias=True)
    fresh.load_state_dict(conn.state_dict())
    assert torch.equal(fresh.weight, conn.weight) and torch.equal(
        fresh.delay_steps, conn.delay_steps
    )
    assert fresh.max_delay == int(delays.max())
    x = (torch.rand(6, 2, 4) < 0.5).float()
    conn.reset_state()
    torch.testing.assert_close(step_all(fresh, x), step_all(conn, x))


def test_bounds_and_clamp():
    conn = Linear(50, 40, wmin=0.0, wmax=0.2, init="normal", init_kwargs={"mean": 0.1, "std": 1.0})
    assert conn.weight.min() >= 0.0 and conn.weight.max() <= 0.2
    with torch.no_grad():
        conn.weight.fill_(5.0)
    conn.clamp_()
    assert torch.all(conn.weight == 0.2)


def _write_two(conn, how):
    """The user's own write of 2.0 into every weight, by ``how``."""
    with torch.no_grad():
        if how == "in place":
            conn.weight.fill_(2.0)
        elif how == ".data in place":
            conn.weight.data.fill_(2.0)
        elif how == ".data assigned":
            conn.weight.data = torch.full_like(conn.weight, 2.0)
        else:  # a tensor on the same memory (shares the version counter)
            conn.weight.detach().fill_(2.0)


@pytest.mark.parametrize("how", ["in place", ".data in place", ".data assigned", "detach"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_a_write_out_of_the_bounds_warns_once_whatever_its_path(how, kind):
    """One validity mechanism (a Stamp of the weight) for the copy and the bounds check: a write
    through ``.data`` is seen as an in-place one is (it used to warn for neither ``.data`` path);
    pysnn's own edits (clamp_) never warn. The values are used as they are."""
    if kind == "linear":
        conn, x = Linear(4, 3, wmin=0.0, wmax=1.0), torch.ones(1, 4)
        expected = torch.full((1, 3), 8.0)
    else:
        conn, x = Conv2d(1, 2, 3, wmin=0.0, wmax=1.0), torch.ones(1, 1, 3, 3)
        expected = torch.full((1, 2, 1, 1), 18.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            conn(x)
            conn(x)
            assert not caught
            _write_two(conn, how)
            assert torch.equal(conn(x), expected)
            conn(x)
        assert len(caught) == 1 and "outside [wmin, wmax]" in str(caught[0].message)
        conn.clamp_()
        with torch.no_grad():
            conn(x)
            _write_two(conn, how)
            conn(x)
        assert len(caught) == 2


def test_a_stepped_linear_with_a_data_alias_pickles_and_copies():
    """The stamps a connection keeps (bounds check, event copy) hold a weight's live ``.data``
    aliases weakly: a copy gets a stamp of nothing, which never holds (pickling used to fail
    once an alias was alive). The copy checks its own weight's writes again."""
    lin = Linear(4, 3, wmin=0.0, wmax=1.0, delay=1.0, propagation="event")
    x = torch.ones(1, 4)
    with torch.no_grad():
        lin(x)
        alias = lin.weight.data  # noqa: F841 (alive through the copies)
        expected = lin(x)
    for twin in (pickle.loads(pickle.dumps(lin)), copy.deepcopy(lin)):
        with torch.no_grad():
            assert torch.equal(twin(x), expected)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                twin.weight.data.fill_(3.0)
                assert torch.equal(twin(x), torch.full((1, 3), 12.0))
            assert len(caught) == 1 and "outside [wmin, wmax]" in str(caught[0].message)


@pytest.mark.parametrize(
    "init,kwargs,check",
    [
        ("uniform", {"a": 0.2, "b": 0.3}, lambda w: 0.2 <= w.min() and w.max() <= 0.3),
        ("constant", {"val": 0.7}, lambda w: torch.all(w == 0.7)),
        ("normal", {"mean": 3.0, "std": 0.1}, lambda w: abs(w.mean() - 3.0) < 0.05),
        ("xavier_uniform", {}, lambda w: w.abs().max() <= math.sqrt(6 / (100 + 80))),
        ("kaiming_uniform", {}, lambda w: w.abs().max() <= 1 / math.sqrt(100)),
    ],
)
def test_init_options(init, kwargs, check):
    torch.manual_seed(0)
    assert check(Linear(100, 80, init=init, init_kwargs=kwargs).weight.detach())


def test_normalize_sums_per_postsynaptic_neuron():
    conn = Linear(10, 4, init="uniform", init_kwargs={"a": 0.0, "b": 1.0})
    with torch.no_grad():
        conn.weight[2].zero_()
    conn.normalize(78.0)
    sums = conn.weight.sum(1)
    torch.testing.assert_close(sums[[0, 1, 3]], torch.full((3,), 78.0))
    assert sums[2] == 0
    conv = Conv2d(2, 3, 3, init="uniform")
    conv.normalize(5.0)
    torch.testing.assert_close(conv.weight.sum((1, 2, 3)), torch.full((3,), 5.0))


def test_gradients_reach_weights():
    conn = Linear(3, 2, delay=torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0]]))
    total = sum(conn(torch.ones(1, 3)).sum() for _ in range(3))
    total.backward()
    assert torch.equal(conn.weight.grad, torch.tensor([[3.0, 2.0, 1.0], [2.0, 2.0, 3.0]]))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"delay": -1.0}, ValueError, "delay must be >= 0"),
        ({"delay": float("nan")}, ValueError, "delay must be finite"),
        ({"delay": torch.zeros(3, 3)}, ValueError, r"delay must be a scalar or \(2, 3\)"),
        ({"dt": 0.0}, ValueError, "dt must be a finite number > 0"),
        ({"wmin": 1.0, "wmax": 0.0}, ValueError, "need wmin <= wmax"),
        ({"init": "orthogonal"}, ValueError, "init must be one of"),
        ({"init": "constant"}, ValueError, "init='constant' needs"),
        ({"propagation": "sparse"}, ValueError, "propagation must be one of"),
        ({"delay": "1"}, TypeError, "delay must be a number or a tensor"),
    ],
)
def test_bad_linear_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Linear(3, 2, **kwargs)


def test_bad_inputs():
    conn = Linear(3, 2)
    with pytest.raises(ValueError, match=r"spikes must have shape \(B, 3\)"):
        conn(torch.ones(2, 4))
    with pytest.raises(TypeError, match="spikes has dtype torch.float64"):
        conn(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="spikes contains NaN"):
        conn(torch.full((1, 3), float("nan")))
    conv = Conv2d(2, 1, 3, delay=torch.ones(()))
    with pytest.raises(ValueError, match=r"spikes must have shape \(B, 2, H, W\)"):
        conv(torch.ones(1, 2, 5))
    with pytest.raises(
        ValueError, match=r"spikes must have shape \(B, 2, H, W\) for Conv2d, got \(1, 3, 5, 5\)"
    ):
        conv(torch.ones(1, 3, 5, 5))
    with pytest.raises(ValueError, match="delay must be a scalar"):
        Conv2d(1, 1, 3, delay=torch.ones(1, 1))
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        Linear(0, 2)


class OneToOne(Connection):
    """A user-defined connection: neuron j drives neuron j with a learnable gain (no weight)."""

    def __init__(self, n, dt=1.0, delay=0.0):
        super().__init__(n, n, dt, delay, delay_shape=(n,))
        self.gain = torch.nn.Parameter(torch.tensor([1.0, 2.0, -3.0]))

    def propagate(self, arriving):
        return arriving * self.gain


def test_user_one_to_one_connection_shared_delay():
    conn = OneToOne(3, dt=0.5, delay=1.0)  # 2 steps
    x = torch.zeros(5, 2, 3)
    x[0, 0] = torch.tensor([1.0, 0.0, 1.0])
    x[1, 1] = torch.tensor([0.0, 1.0, 1.0])
    out = torch.stack([conn(s) for s in x])
    expected = torch.zeros(5, 2, 3)
    expected[2, 0] = torch.tensor([1.0, 0.0, -3.0])
    expected[3, 1] = torch.tensor([0.0, 2.0, -3.0])
    assert torch.equal(out, expected)
    assert conn.arriving_spikes().shape == (2, 3)
    fresh = OneToOne(3, dt=0.5, delay=1.0)
    assert torch.equal(fresh.forward_multistep(x), expected)
    assert torch.equal(fresh.history, conn.history)


def test_user_one_to_one_connection_per_synapse_delay():
    conn = OneToOne(3, delay=torch.tensor([0.0, 1.0, 2.0]))
    assert conn.per_synapse_delay and conn.max_delay == 2
    x = torch.zeros(4, 2, 3)
    x[0] = 1.0  # every neuron of both samples at t=0
    x[1, 1, 0] = 1.0  # neuron 0 of sample 1 at t=1
    out = torch.stack([conn(s) for s in x])
    expected = torch.zeros(4, 2, 3)
    expected[0, :, 0] = 1.0  # delay 0, gain 1
    expected[1, :, 1] = 2.0  # delay 1, gain 2
    expected[2, :, 2] = -3.0  # delay 2, gain -3
    expected[1, 1, 0] = 1.0
    assert torch.equal(out, expected)
    assert conn.arriving_spikes().shape == (2, 3)
    conn.reset_state()
    assert torch.equal(conn(torch.zeros(2, 3)), torch.zeros(2, 3))
    (conn(torch.ones(2, 3)).sum()).backward()  # gradient reaches the gain
    assert torch.equal(conn.gain.grad, torch.tensor([2.0, 0.0, 0.0]))


def test_user_connection_checks_and_weight_free_errors():
    with pytest.raises(ValueError, match=r"delay must be a scalar or \(3,\)"):
        OneToOne(3, delay=torch.zeros(3, 3))
    conn = OneToOne(3)
    with pytest.raises(ValueError, match=r"spikes must have shape \(B, 3\) for OneToOne"):
        conn(torch.ones(2, 4))
    with pytest.raises(TypeError, match="spikes has dtype torch.float64"):
        conn(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="OneToOne has no 'weight'"):
        conn.apply_update_(torch.zeros(3))
    with pytest.raises(TypeError, match="OneToOne has no 'weight'"):
        conn.normalize(1.0)
    with pytest.raises(ValueError, match="delay_shape must end with the presynaptic size"):
        Connection(3, 3, delay_shape=(3, 4))
    with pytest.raises(NotImplementedError, match="Connection must implement propagate"):
        Connection(3, 3)(torch.ones(1, 3))


def test_conv2d_multistep_equals_step_loop():
    torch.manual_seed(0)
    conv = Conv2d(2, 3, 3, padding=1, delay=2.0, bias=True)
    loop = Conv2d(2, 3, 3, padding=1, delay=2.0, bias=True)
    loop.load_state_dict(conv.state_dict())
    x = (torch.rand(6, 2, 2, 5, 5) < 0.3).float()
    with torch.no_grad():
        expected = torch.stack([loop(s) for s in x])
        got = torch.cat([conv.forward_multistep(x[:4]), conv(x[4])[None], conv(x[5])[None]])
    torch.testing.assert_close(got, expected)
