"""Tests for pysnn.monitor with small stand-in modules (no dependency on pysnn neurons)."""

import pytest
import torch
from torch import nn

from pysnn.monitor import Monitor, NetworkMonitor, SpikeMonitor


class ToyNeuron(nn.Module):
    """Leaky integrate-and-fire stand-in that updates its state *in place*.

    v <- decay * v + x; spikes = v >= 1; v <- 0 where it spiked. State is (re)created lazily and
    re-created when the input shape changes, like the real neurons.
    """

    def __init__(self, decay: float = 0.5):
        super().__init__()
        self.decay = decay
        self.v = None
        self.spikes = None

    def forward(self, x):
        if self.v is None or self.v.shape != x.shape:
            self.v = torch.zeros_like(x)
        self.v.mul_(self.decay).add_(x)
        self.spikes = (self.v >= 1.0).float()
        self.v.masked_fill_(self.spikes.bool(), 0.0)
        return self.spikes


class Replay(nn.Module):
    """Sets ``spikes`` to the next slice of a preset (T, B, ...) tensor each forward."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern
        self.t = 0
        self.spikes = None

    def forward(self):
        self.spikes = self.pattern[self.t].clone()
        self.t += 1
        return self.spikes


class Rule:
    """Non-module object with a tensor attribute (like a learning rule)."""

    def __init__(self):
        self.trace = torch.zeros(2, 3)


def reference_lif(xs, decay=0.5):
    """Independent scalar re-implementation: lists of (v, s) per step for each element."""
    T = len(xs)
    flat = [x.reshape(-1).tolist() for x in xs]
    n = len(flat[0])
    vs, ss = [], []
    v = [0.0] * n
    for t in range(T):
        s = []
        for i in range(n):
            v[i] = decay * v[i] + flat[t][i]
            spike = 1.0 if v[i] >= 1.0 else 0.0
            if spike:
                v[i] = 0.0
            s.append(spike)
        vs.append(list(v))
        ss.append(s)
    shape = xs[0].shape
    return torch.tensor(vs).reshape(T, *shape), torch.tensor(ss).reshape(T, *shape)


def test_monitor_records_every_forward_time_first():
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(2, 3, generator=g) * 0.9 for _ in range(6)]
    neuron = ToyNeuron()
    mon = Monitor(neuron, ("spikes", "v"))
    for x in xs:
        neuron(x)
    v_ref, s_ref = reference_lif(xs)
    assert mon.get("v").shape == (6, 2, 3)
    assert mon.n_steps() == 6 and len(mon) == 6
    torch.testing.assert_close(mon.get("v"), v_ref)
    torch.testing.assert_close(mon.get("spikes"), s_ref)
    assert s_ref.sum() > 0  # the test input actually produces spikes and resets
    # in-place updates of the module must not alter what was recorded
    assert not torch.equal(mon.get("v")[0], neuron.v)


def test_get_is_repeatable_and_returns_copies():
    neuron = ToyNeuron()
    mon = Monitor(neuron, "v")
    neuron(torch.full((1, 2), 0.25))
    a = mon.get("v")
    a.fill_(123.0)
    b = mon["v"]
    torch.testing.assert_close(b, torch.full((1, 1, 2), 0.25))
    neuron(torch.full((1, 2), 0.25))
    torch.testing.assert_close(mon.get("v"), torch.tensor([[[0.25, 0.25]], [[0.375, 0.375]]]))
    assert set(mon.get_all()) == {"v"}


@pytest.mark.parametrize("steps", [2, 3, 5, 6, 7])
def test_ring_buffer_keeps_last_T_in_order(steps):
    rule = Rule()
    mon = Monitor(rule, "trace", time=3)
    for t in range(steps):
        rule.trace = torch.full((2, 3), float(t))
        mon.record()
    kept = list(range(max(0, steps - 3), steps))
    expected = torch.tensor(kept, dtype=torch.float32)[:, None, None].expand(len(kept), 2, 3)
    torch.testing.assert_close(mon.get("trace"), expected)
    torch.testing.assert_close(mon.get("trace"), expected)  # not consumed
    assert mon.n_steps("trace") == len(kept)
    assert mon.nbytes == 3 * 6 * 4  # T * numel * element size


def test_list_mode_memory_grows_per_step():
    rule = Rule()
    mon = Monitor(rule, "trace")
    for _ in range(5):
        mon.record()
    assert mon.nbytes == 5 * 6 * 4


def test_ring_buffer_matches_unbounded_tail():
    g = torch.Generator().manual_seed(1)
    xs = [torch.rand(3, 4, generator=g) for _ in range(11)]
    neuron = ToyNeuron()
    full = Monitor(neuron, ("spikes", "v"))
    ring = Monitor(neuron, ("spikes", "v"), time=4)
    for x in xs:
        neuron(x)
    v_ref, s_ref = reference_lif(xs)
    torch.testing.assert_close(ring.get("v"), v_ref[-4:])
    torch.testing.assert_close(ring.get("spikes"), s_ref[-4:])
    torch.testing.assert_close(full.get("v"), v_ref)


def test_batch_size_change_raises_unless_reset():
    for time in (None, 5):
        neuron = ToyNeuron()
        mon = Monitor(neuron, ("spikes", "v"), time=time)
        neuron(torch.zeros(4, 3))
        with pytest.raises(ValueError, match="'spikes'.*reset"):
            neuron(torch.zeros(8, 3))
        mon.reset()
        neuron(torch.ones(8, 3))
        assert mon.get("spikes").shape == (1, 8, 3)
        torch.testing.assert_close(mon.get("spikes"), torch.ones(1, 8, 3))


def test_enable_disable_remove_and_context_manager():
    neuron = ToyNeuron()
    mon = Monitor(neuron, "v")
    neuron(torch.zeros(1, 2))
    mon.disable()
    neuron(torch.zeros(1, 2))
    mon.record()  # manual record also paused
    assert mon.n_steps() == 1
    mon.enable()
    neuron(torch.zeros(1, 2))
    assert mon.n_steps() == 2
    mon.remove()
    assert not mon.hooked
    neuron(torch.zeros(1, 2))
    assert mon.n_steps() == 2
    mon.record()  # manual recording still possible
    assert mon.n_steps() == 3
    with Monitor(neuron, "v") as m2:
        neuron(torch.zeros(1, 2))
    neuron(torch.zeros(1, 2))
    assert m2.n_steps() == 1


def test_manual_recording_of_non_module():
    rule = Rule()
    mon = Monitor(rule, "trace")
    assert not mon.hooked
    rule.trace += 1.0  # in place
    mon.record()
    rule.trace += 1.0
    mon.record()
    torch.testing.assert_close(
        mon.get("trace"), torch.stack([torch.ones(2, 3), 2 * torch.ones(2, 3)])
    )


def test_none_state_is_skipped_and_errors_are_clear():
    neuron = ToyNeuron()
    mon = Monitor(neuron, ("spikes", "v"))
    mon.record()  # state not created yet -> nothing recorded
    assert mon.n_steps("v") == 0
    with pytest.raises(RuntimeError, match="nothing recorded for 'v'"):
        mon.get("v")
    with pytest.raises(ValueError, match="'w'"):
        mon.get("w")
    with pytest.raises(AttributeError, match="'trace'"):
        Monitor(neuron, "trace").record()
    neuron.v = 3.0
    with pytest.raises(TypeError, match="'v'.*Tensor"):
        mon.record()
    with pytest.raises(ValueError, match="time"):
        Monitor(neuron, "v", time=0)
    with pytest.raises(ValueError, match="state_vars"):
        Monitor(neuron, ())
    with pytest.raises(TypeError, match="state_vars"):
        Monitor(neuron, 5)


class DiffNeuron(nn.Module):
    """Differentiable (out-of-place) leaky integrator."""

    def __init__(self):
        super().__init__()
        self.v = None

    def forward(self, x):
        self.v = x if self.v is None else 0.5 * self.v + x
        return self.v


def test_recording_does_not_break_autograd():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    neuron = DiffNeuron()
    mon = Monitor(neuron, "v", time=2)
    for _ in range(3):
        out = neuron(w * 1.0)
    out.sum().backward()
    # v_3 = 0.25 w + 0.5 w + w = 1.75 w -> d sum / dw = 1.75
    torch.testing.assert_close(w.grad, torch.tensor([1.75, 1.75]))
    rec = mon.get("v")
    assert not rec.requires_grad
    torch.testing.assert_close(rec, torch.tensor([[1.5, 3.0], [1.75, 3.5]]))


def test_recording_across_inference_mode():
    neuron = ToyNeuron()
    mon = Monitor(neuron, "v", time=3)
    with torch.inference_mode():
        neuron(torch.full((1, 1), 0.5))
    neuron.v = neuron.v.clone()  # leave inference mode with a normal tensor
    neuron(torch.full((1, 1), 0.25))
    torch.testing.assert_close(mon.get("v"), torch.tensor([[[0.5]], [[0.5]]]))


def test_network_monitor_finds_submodules():
    net = nn.Sequential(ToyNeuron(), nn.Linear(3, 3), ToyNeuron())
    nm = NetworkMonitor(net, ("spikes", "v"))
    assert nm.names() == ["0", "2"]
    assert "1" not in nm and len(nm) == 2
    g = torch.Generator().manual_seed(2)
    xs = [torch.rand(2, 3, generator=g) * 1.5 for _ in range(4)]
    out2 = []
    for x in xs:
        out2.append(net(x))
    _, s0 = reference_lif(xs)
    torch.testing.assert_close(nm.get("0", "spikes"), s0)
    torch.testing.assert_close(nm.get("2", "spikes"), torch.stack(out2))
    assert set(nm.get_all()["2"]) == {"spikes", "v"}
    nm.disable()
    net(xs[0])
    nm.enable()
    assert nm["0"].n_steps() == 4
    nm.remove()
    net(xs[0])
    assert nm["0"].n_steps() == 4
    nm.reset()
    assert nm["2"].n_steps() == 0
    with pytest.raises(ValueError, match="state_vars"):
        NetworkMonitor(nn.Linear(2, 2), "spikes")
    with pytest.raises(TypeError, match="network"):
        NetworkMonitor(Rule(), "trace")


def _events_by_loops(pattern):
    """Independent event list (t, b, flat) from a dense (T, B, *shape) 0/1 tensor."""
    T, B = pattern.shape[:2]
    flat = pattern.reshape(T, B, -1).tolist()
    return [
        [t, b, i]
        for t in range(T)
        for b in range(B)
        for i, val in enumerate(flat[t][b])
        if val != 0
    ]


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_spike_monitor_events_and_dense(chunk):
    g = torch.Generator().manual_seed(3)
    pattern = (torch.rand(7, 2, 2, 3, generator=g) < 0.3).float()  # (T, B, 2, 3)
    src = Replay(pattern)
    mon = SpikeMonitor(src, "spikes", chunk=chunk)
    for _ in range(7):
        src()
    ev = mon.get()
    assert ev.dtype == torch.long and ev.shape[1] == 3
    assert ev.tolist() == _events_by_loops(pattern)
    assert mon.n_steps() == 7 and len(mon) == 7 and mon.shape == (2, 2, 3)
    torch.testing.assert_close(mon.to_dense(), pattern)
    assert mon.get().tolist() == ev.tolist()  # repeatable
    torch.testing.assert_close(mon.to_dense(T=4), pattern[:4])
    padded = mon.to_dense(T=9)
    torch.testing.assert_close(padded[:7], pattern)
    assert padded[7:].sum() == 0
    # multi-dim index recovery as documented
    rows, cols = torch.unravel_index(ev[:, 2], mon.shape[1:])
    assert bool((pattern[ev[:, 0], ev[:, 1], rows, cols] == 1).all())


def test_spike_monitor_buffers_chunks_before_nonzero():
    pattern = torch.zeros(5, 1, 4)
    pattern[1, 0, 2] = 1.0
    pattern[4, 0, 0] = 1.0
    src = Replay(pattern)
    mon = SpikeMonitor(src, chunk=3)
    src()
    src()
    assert len(mon._pending) == 2 and mon._events == []  # nothing converted yet
    src()
    assert mon._pending == [] and len(mon._events) == 1  # one nonzero for three steps
    src()
    src()
    assert mon.get().tolist() == [[1, 0, 2], [4, 0, 0]]


def test_spike_monitor_reset_disable_and_batch_change():
    pattern = torch.ones(4, 2, 1)
    src = Replay(pattern)
    mon = SpikeMonitor(src)
    src()
    mon.disable()
    src()
    mon.enable()
    src()
    assert mon.get().tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]
    src.spikes = torch.ones(3, 1)
    with pytest.raises(ValueError, match="'spikes'.*reset"):
        mon.record()
    mon.reset()
    mon.record()
    assert mon.get().tolist() == [[0, 0, 0], [0, 1, 0], [0, 2, 0]]
    mon.remove()
    empty = SpikeMonitor(Rule(), "trace")
    assert empty.get().shape == (0, 3)
    with pytest.raises(RuntimeError, match="nothing recorded"):
        empty.to_dense()
    with pytest.raises(ValueError, match="chunk"):
        SpikeMonitor(src, chunk=0)


# ---------------------------------------------------------------------------------------------
# dtype changes and torch.compile
# ---------------------------------------------------------------------------------------------
def test_dtype_change_is_named_not_blamed_on_the_batch_size():
    neuron = ToyNeuron()
    mon = Monitor(neuron, ("v", "spikes"))
    neuron(torch.full((2, 3), 0.6))
    neuron.v, neuron.spikes = neuron.v.double(), neuron.spikes.double()  # what .double() does
    with pytest.raises(ValueError) as info:
        mon.record()
    message = str(info.value)
    assert "dtype from torch.float32 to torch.float64" in message and ".double()" in message
    assert "batch size" not in message and "after 1 recorded steps" in message
    assert mon.get("v").dtype == torch.float32 and len(mon) == 1  # what was recorded is kept
    mon.reset()
    mon.record()
    assert mon.get("v").dtype == torch.float64
    with pytest.raises(ValueError, match=r"shape from \(2, 3\) to \(4, 3\) \(a new batch size\?\)"):
        neuron(torch.zeros(4, 3, dtype=torch.float64))  # recorded by the forward hook


class _BufferNeuron(nn.Module):
    """v <- 0.5 v + x, spike at v >= 1, reset to 0; state in buffers (as pysnn neurons)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("v", torch.zeros(2, 3), persistent=False)
        self.register_buffer("spikes", torch.zeros(2, 3), persistent=False)

    def forward(self, x):
        v = self.v * 0.5 + x
        s = (v >= 1.0).float()
        self.v, self.spikes = v * (1.0 - s), s
        return s


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.neuron = _BufferNeuron()

    def forward(self, x):
        return self.neuron(self.fc(x))


def _eager_v(net, x):
    """Reference: the membrane potentials of an uncompiled copy, step by step."""
    import copy

    ref = copy.deepcopy(net)
    out = []
    for step in x:
        ref(step)
        out.append(ref.neuron.v.clone())
    return torch.stack(out)


def _counting_backend(graphs):
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return backend


@pytest.fixture
def fresh_dynamo():
    """No compiled code from other tests before or after (each test compiles from scratch)."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


@pytest.mark.parametrize("attach", ["before", "after"])
def test_monitor_and_torch_compile(attach, fresh_dynamo):
    torch.manual_seed(0)
    net, x = _Net(), torch.rand(9, 2, 4) * 3
    expected = _eager_v(net, x)
    assert expected.abs().sum() > 0
    graphs = []
    with torch.no_grad():
        mon = Monitor(net.neuron, "v") if attach == "before" else None
        step = torch.compile(net, backend=_counting_backend(graphs))
        step(x[0])
        if attach == "after":  # compiled code without the hook exists: it must not be reused
            mon = Monitor(net.neuron, "v")
        step(x[1])
        compiled = len(graphs)
        for t in range(2, 9):
            step(x[t])
    assert len(graphs) == compiled  # no recompilation per step
    first = 0 if attach == "before" else 1
    assert len(mon) == 9 - first
    torch.testing.assert_close(mon.get("v"), expected[first:])
    mon.remove()  # compiled code that calls the removed hook is dropped too
    with torch.no_grad():
        step(x[0])
    assert len(mon) == 9 - first
