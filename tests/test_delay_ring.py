"""The shared-delay history is a ring buffer: one slot per step, results of a shifted input."""

from __future__ import annotations

import copy

import pytest
import torch

from pysnn.checkpoint import load_checkpoint, save_checkpoint
from pysnn.connection import Linear

CHUNKS = [1, 1, 3, 7, 1, 60, 2, 25]  # 100 steps: single steps and blocks, some longer than 50


def integer_linear(delay: float, n_in: int = 6, n_out: int = 4) -> Linear:
    """A ``Linear`` with small integer weights (exact float sums) and ``delay`` steps (dt=1)."""
    torch.manual_seed(0)
    conn = Linear(n_in, n_out, delay=delay, propagation="dense")
    with torch.no_grad():
        conn.weight.copy_(torch.randint(-3, 4, conn.weight.shape).float())
    return conn


def shifted(x: torch.Tensor, d: int) -> torch.Tensor:
    """Independent reference: ``x`` ``(T, B, in)`` delayed by ``d`` steps, zeros before."""
    out = torch.zeros_like(x)
    if d < x.shape[0]:
        out[d:] = x[: x.shape[0] - d]
    return out


def run_mixed(conn: Linear, x: torch.Tensor) -> tuple:
    """Run ``x`` through ``conn`` in :data:`CHUNKS` (a chunk of 1: ``forward``, else
    ``forward_multistep``); return the outputs and the arriving spikes after each chunk."""
    outs, arrivals, t = [], [], 0
    for n in CHUNKS:
        block = x[t : t + n]
        outs.append(conn(block[0]).unsqueeze(0) if n == 1 else conn.forward_multistep(block))
        arrivals.append(conn.arriving_spikes())
        t += n
    return torch.cat(outs), arrivals


@pytest.mark.parametrize("d", [0, 1, 5, 50])
@pytest.mark.parametrize("grad", [False, True])
def test_mixed_steps_equal_the_shifted_input(d, grad):
    conn = integer_linear(float(d))
    torch.manual_seed(d)
    x = (torch.rand(sum(CHUNKS), 3, 6) < 0.3).float().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        out, arrivals = run_mixed(conn, x)
    reference = shifted(x.detach(), d)
    assert torch.equal(out.detach(), reference @ conn.weight.detach().t())
    ends = torch.tensor(CHUNKS).cumsum(0) - 1
    for end, arriving in zip(ends.tolist(), arrivals):
        assert torch.equal(arriving.detach(), reference[end])
    if grad:  # d out[t] / d x[t - d] = W: the gradient reaches the input d steps earlier
        out.sum().backward()
        expected = torch.zeros_like(x)
        expected[: x.shape[0] - d] = conn.weight.detach().sum(0)
        assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("d", [1, 5, 50])
def test_mixed_steps_leave_the_state_of_single_steps(d):
    conn = integer_linear(float(d))
    loop = copy.deepcopy(conn)
    x = (torch.rand(sum(CHUNKS), 3, 6) < 0.3).float()
    run_mixed(conn, x)
    for s in x:
        loop(s)
    assert torch.equal(conn.history, loop.history)
    assert int(conn.history_pos) == int(loop.history_pos) == sum(CHUNKS) % (d + 1)


def test_long_delay_step_writes_the_ring_in_place(monkeypatch):
    conn = integer_linear(200.0)
    x = (torch.rand(30, 3, 6) < 0.3).float()
    with torch.no_grad():
        conn(x[0])
        assert conn.history.shape == (3, 201, 6)
        # ids and addresses only: a reference to the ring would make the next step copy it
        ring_id, storage = id(conn.history), conn.history.untyped_storage().data_ptr()

        def no_cat(*args, **kwargs):
            raise AssertionError("a step must not copy the history")

        monkeypatch.setattr(torch, "cat", no_cat)
        for s in x[1:]:
            arriving = conn.arriving_spikes()
            conn(s)
            assert id(conn.history) == ring_id
            assert conn.history.untyped_storage().data_ptr() == storage
            # the previous step's arriving spikes are a tensor of their own: not overwritten
            assert torch.equal(arriving, torch.zeros(3, 6))
    assert torch.equal(conn.history[:, :30], x.transpose(0, 1))


def test_a_kept_reference_to_the_ring_keeps_its_value():
    """State is replaced every step, as for neurons: the ring is written in place only when
    nothing else can see it."""
    conn = integer_linear(5.0)
    x = (torch.rand(8, 2, 6) < 0.5).float()
    with torch.no_grad():
        conn(x[0])
        kept = conn.history
        value = kept.clone()
        for s in x[1:]:
            conn(s)
    assert torch.equal(kept, value) and not torch.equal(conn.history, value)


def test_grad_input_replaces_the_ring_and_detach_restores_in_place():
    conn = integer_linear(3.0)
    conn(torch.zeros(2, 6))
    ring = conn.history
    conn(torch.ones(2, 6, requires_grad=True))
    assert conn.history is not ring and conn.history.requires_grad
    del ring
    conn.detach_state()
    ring_id = id(conn.history)  # (no reference kept: that alone would make the step copy)
    conn(torch.zeros(2, 6))
    assert id(conn.history) == ring_id and not conn.history.requires_grad


def test_inference_mode_ring_is_replaced_outside_inference_mode():
    conn = integer_linear(3.0)
    x = (torch.rand(8, 2, 6) < 0.5).float()
    loop = copy.deepcopy(conn)
    with torch.inference_mode():
        for s in x[:4]:
            conn(s)
    for s in x[4:]:
        conn(s)
    for s in x:
        loop(s)
    assert torch.equal(conn.history, loop.history)
    assert torch.equal(conn.arriving_spikes(), loop.arriving_spikes())


def test_checkpoint_carries_the_ring_position(tmp_path):
    conn = integer_linear(5.0)
    x = (torch.rand(20, 2, 6) < 0.4).float()
    for s in x[:9]:  # the ring position is 9 % 6 = 3
        conn(s)
    save_checkpoint(tmp_path / "c.pt", network=conn)
    expected = torch.stack([conn(s) for s in x[9:]])
    fresh = integer_linear(5.0)
    load_checkpoint(tmp_path / "c.pt", network=fresh)
    assert torch.equal(torch.stack([fresh(s) for s in x[9:]]), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_per_synapse_delayed_read_is_a_gather_of_the_history(dtype):
    """``functional.delay.delayed`` with per-synapse delays returns, without autograd,
    ``result[b, i, j] = history[b, d[i, j], j]`` (checked element by element against an
    independent loop), the values of the indexed read; with a gradient wanted it takes the
    indexed read, whose backward sums each history entry over the synapses that read it."""
    from pysnn.functional.delay import delayed, synapse_index

    g = torch.Generator().manual_seed(5)
    history = (torch.rand(3, 6, 7, generator=g) * 4).to(dtype)
    d = torch.randint(0, 6, (5, 7), generator=g)
    got = delayed(history, synapse_index(d))
    expected = torch.empty(3, 5, 7, dtype=dtype)
    for b in range(3):
        for i in range(5):
            for j in range(7):
                expected[b, i, j] = history[b, d[i, j], j]
    assert got.dtype == dtype and torch.equal(got, expected)
    if dtype is torch.bool:
        return
    leaf = history.clone().requires_grad_(True)
    delayed(leaf, synapse_index(d)).sum().backward()
    counts = torch.zeros(6, 7, dtype=dtype)
    for i in range(5):
        for j in range(7):
            counts[d[i, j], j] += 1
    assert torch.equal(leaf.grad, counts.expand(3, 6, 7))


def test_an_in_place_edit_of_the_ring_position_is_seen():
    """The host copy of ``history_pos`` is kept under a Stamp of the buffer: rewinding it in
    place is seen at the next step (it used to be ignored: the copy was keyed to the object).
    Delay 2 steps, ring of 3 slots, weights 1: input 0 spikes at step 0, input 1 at step 1. At
    step 2 the position (2) is rewound to 0: that step delivers slot 1 (step 1's spike), the
    next ones slot 2 (never written) and slot 0 (step 2's empty input)."""
    conn = Linear(2, 1, delay=2.0, init="constant", init_kwargs={"val": 1.0})
    outs = []
    with torch.no_grad():
        for t in range(6):
            if t == 2:
                assert int(conn.history_pos) == 2
                conn.history_pos.fill_(0)
            outs.append(conn(torch.tensor([[float(t == 0), float(t == 1)]])).item())
    assert outs == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert conn._ring_pos() == int(conn.history_pos) == 1  # (0 at step 2, then 3 steps more)
