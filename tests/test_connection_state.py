"""State declared by a connection (register_state) and multi-step forms that never bypass a
user's own per-step code (issue: a stateful user connection gave silently wrong multi-step
results)."""

import pytest
import torch

from pysnn.connection import Connection, Linear
from pysnn.multistep import Unroll, run_feedforward
from pysnn.neuron import LIFNeuron

# Tsodyks-Markram depression by hand: r <- r + (1 - r) dt / tau_rec; eff = U r s; r <- r - eff.
# U = 0.5, tau_rec = 100 ms, dt = 1 ms, a spike every step, weight 10 mV:
# r = 1 -> eff 0.5; r = 0.5 + 0.5 * 0.01 = 0.505 -> eff 0.2525; r = 0.2525 + 0.7475 * 0.01 =
# 0.259975 -> eff 0.1299875; r = 0.1299875 + 0.8700125 * 0.01 = 0.1386876 -> eff 0.0693438.
HAND = [5.0, 2.525, 1.299875, 0.693438]


class STP(Connection):
    """User-written: one weight per presynaptic unit, depressing resources as registered state."""

    def __init__(self, n, *, U=0.5, tau_rec=100.0, w=10.0, **kwargs):
        super().__init__(n, n, **kwargs)
        self.U, self.tau_rec = U, tau_rec
        self.weight = torch.nn.Parameter(torch.full((n,), w))
        self.register_state("r", 1.0)

    def propagate(self, arriving):
        self.r = self.r + (1 - self.r) * (self.dt / self.tau_rec)
        eff = self.U * self.r * arriving
        self.r = self.r - eff
        return eff * self.weight


class STPLinear(Linear):
    """User-written the other way: a subclass of Linear overriding forward, state by hand."""

    def __init__(self, n_in, n_out, *, U=0.5, tau_rec=100.0, **kwargs):
        super().__init__(n_in, n_out, init="constant", init_kwargs={"val": 10.0}, **kwargs)
        self.U, self.tau_rec, self.res = U, tau_rec, None

    def forward(self, spikes):
        if self.res is None or self.res.shape != spikes.shape:
            self.res = torch.ones_like(spikes)
        self.res = self.res + (1 - self.res) * (self.dt / self.tau_rec)
        eff = spikes * self.U * self.res
        self.res = self.res - eff
        return super().forward(eff)


def _loop(module, x):
    return torch.stack([module(x[t]) for t in range(x.shape[0])])


@pytest.mark.parametrize("grad", [False, True])
def test_registered_state_matches_hand_values_on_every_path(grad):
    x = torch.ones(4, 2, 3)
    with torch.set_grad_enabled(grad):
        for run in (
            _loop,
            lambda m, x: m.forward_multistep(x),
            lambda m, x: Unroll(m)(x),
        ):
            conn = STP(3)
            out = run(conn, x)
            assert torch.allclose(out[:, 0, 0], torch.tensor(HAND), atol=1e-5)
            assert torch.allclose(out, out[:, :1, :1].expand_as(out))


def test_subclass_overriding_forward_is_not_bypassed():
    x = torch.ones(4, 1, 1)
    with torch.no_grad():
        loop = _loop(STPLinear(1, 1), x)
        block = STPLinear(1, 1).forward_multistep(x)
        unrolled = Unroll(STPLinear(1, 1))(x)
    assert torch.allclose(loop.flatten(), torch.tensor(HAND), atol=1e-5)
    assert torch.equal(block, loop) and torch.equal(unrolled, loop)


def test_run_feedforward_steps_a_stateful_connection():
    x = (torch.rand(30, 2, 3, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    with torch.no_grad():
        conn, lif = STP(3, w=20.0), LIFNeuron(3, thresh=-60.0)
        loop = torch.stack([lif(conn(x[t])) for t in range(30)])
        conn2, lif2 = STP(3, w=20.0), LIFNeuron(3, thresh=-60.0)
        fused = run_feedforward(conn2, lif2, x)
    assert loop.sum() > 0
    assert torch.equal(fused, loop)
    assert torch.equal(conn2.r, conn.r) and torch.equal(lif2.v, lif.v)


def test_state_lifecycle_reset_detach_batch_dtype():
    conn = STP(3)
    assert conn.r is None and conn.state_names == ("r",) and conn.stateful_connection
    conn(torch.ones(2, 3))
    assert conn.r.shape == (2, 3) and torch.allclose(conn.r, torch.full((2, 3), 0.5))
    conn.reset_state()
    assert torch.equal(conn.r, torch.ones(2, 3))
    conn(torch.ones(5, 3))  # batch change: re-created
    assert conn.r.shape == (5, 3)
    conn.double()
    assert conn.r.dtype == torch.float64
    conn(torch.ones(5, 3, dtype=torch.float64))
    x = torch.ones(5, 3, dtype=torch.float64, requires_grad=True)
    conn(x)
    assert conn.r.requires_grad
    conn.detach_state()
    assert not conn.r.requires_grad
    assert "r" not in conn.state_dict()


def test_register_state_bad_input():
    conn = STP(3)
    with pytest.raises(ValueError, match="already has"):
        conn.register_state("r")
    with pytest.raises(TypeError, match="initial of state 'q'"):
        conn.register_state("q", [1, 2])
    with pytest.raises(ValueError, match="not broadcastable"):
        conn.register_state("q", torch.zeros(4))
    with pytest.raises(ValueError, match="names 'nope'"):
        conn.register_state("q", "nope")
    conn.register_state("u", torch.tensor([0.1, 0.2, 0.3]), shape=3)
    conn(torch.ones(2, 3))
    assert torch.equal(conn.u, torch.tensor([[0.1, 0.2, 0.3]] * 2))


def test_custom_connection_repr():
    text = repr(STP(3, delay=2.0))
    assert text == "STP(in_features=3, out_features=3, dt=1.0, delay=2.0 ms, state=('r',))"
