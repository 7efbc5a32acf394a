"""``pysnn.engine.GraphedStep``: a network's step replayed as a CUDA graph.

Without a GPU the capture/replay bookkeeping is tested through :class:`ReplayDouble`, a stand-in
for ``torch.cuda.CUDAGraph`` behind the same protocol: it records the step function and, at
each replay, binds the tensors the recording read (as a CUDA graph reads the memory it
recorded, whatever the modules' dicts hold) and runs the step again. Every scenario is compared
bit for bit, outputs and the state left in every module, with the plain step loop of a copy of
the network. The tests marked ``cuda`` run the real graph with ``PYSNN_TEST_DEVICE=cuda``.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Any, Callable, List, Optional, Sequence

import pytest
import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.encoding import PoissonEncoder
from pysnn.engine import GraphedStep
from pysnn.engine.graph import Binding, cuda_step_graph
from pysnn.functional.decay import exp_decay
from pysnn.learning import LearningRule
from pysnn.models import DiehlCook2015
from pysnn.network import SNNNetwork
from pysnn.neuron import Input, LIFNeuron, Neuron
from pysnn.stepping import capturing_graph, graph_capture

CUDA = os.environ.get("PYSNN_TEST_DEVICE", "cpu").strip().startswith("cuda")
cuda_only = pytest.mark.skipif(not CUDA, reason="runs a CUDA graph: PYSNN_TEST_DEVICE=cuda")


class ReplayDouble:
    """A :class:`pysnn.engine.graph.StepGraph` for tests: ``capture`` runs the step once (its
    results stand), ``replay`` binds the recorded tensors and runs the step function again."""

    runs_at_capture = True

    def __init__(self) -> None:
        self.step: Optional[Callable[[], None]] = None
        self.warmed = 0

    def warm(self, step: Callable[[], Any]) -> Any:
        self.warmed += 1
        return step()

    def capture(self, step: Callable[[], None]) -> None:
        self.step = step
        step()

    def replay(self, bindings: Sequence[Binding]) -> None:
        for data, key, tensor in bindings:  # what a CUDA graph reads, whatever the dicts hold
            data[key] = tensor
        with graph_capture():
            self.step()


class DeferredDouble(ReplayDouble):
    """Like a CUDA graph, ``capture`` only records: the step first runs at the first replay."""

    runs_at_capture = False

    def capture(self, step: Callable[[], None]) -> None:
        self.step = step


class FailingDouble(DeferredDouble):
    """A capture that fails, as a CUDA capture fails on a host synchronisation."""

    def capture(self, step: Callable[[], None]) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")


def doubles(kind: type = ReplayDouble) -> Callable[[torch.device], Any]:
    return lambda device: kind()


# ---------------------------------------------------------------------------------- networks
class LinearLIF(SNNNetwork):
    """(a) Input -> Linear -> LIF, excitatory weights (mV) so that the neurons fire."""

    def __init__(self, n_in: int = 30, n_out: int = 12, delay: Any = 0.0, w: float = 3.0):
        super().__init__()
        self.inp = Input(n_in)
        self.fc = Linear(n_in, n_out, delay=delay)
        self.lif = LIFNeuron(n_out, thresh=-60.0, refrac=2.0)
        with torch.no_grad():
            self.fc.weight.uniform_(0.0, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.fc(self.inp(x)))


class Delayed(SNNNetwork):
    """(b) a shared delay of 3 ms and per-synapse delays of 0-3 ms onto one LIF layer."""

    def __init__(self, n_in: int = 30, n_out: int = 12) -> None:
        super().__init__()
        self.inp = Input(n_in)
        self.shared = Linear(n_in, n_out, delay=3.0)
        delays = torch.randint(0, 4, (n_out, n_in)).float()
        self.spread = Linear(n_in, n_out, delay=delays)
        self.lif = LIFNeuron(n_out, thresh=-60.0)
        with torch.no_grad():
            self.shared.weight.uniform_(0.0, 2.0)
            self.spread.weight.uniform_(0.0, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.inp(x)
        return self.lif(self.shared(s) + self.spread(s))


class Adapting(Neuron):
    """(d) a user's neuron: a leaky membrane (its decay from ``derived``) and an adaptation
    current, on ``register_constant``/``register_state`` and ``step``."""

    def __init__(self, shape: int, dt: float = 1.0, *, tau_v: float = 10.0, tau_a: float = 40.0):
        super().__init__(shape, dt)
        self.register_constant("tau_v", tau_v, positive=True)
        self.register_constant("tau_a", tau_a, positive=True)
        self.register_constant("thresh", 1.0)
        self.register_state("v", 0.0)
        self.register_state("a", 0.0)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        decay = self.derived("decay", exp_decay, self.tau_v, self.dt)
        self.v = self.v * decay + x
        s = self.fire(self.v - self.thresh - self.a)
        self.v = self.v * (1 - s)
        self.a = self.a * torch.exp(-self.dt / self.tau_a) + 0.3 * s
        return s


class UserNet(SNNNetwork):
    def __init__(self, n_in: int = 30, n_out: int = 12) -> None:
        super().__init__()
        self.fc = Linear(n_in, n_out)
        self.cell = Adapting(n_out)
        with torch.no_grad():
            self.fc.weight.uniform_(0.0, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell(self.fc(x))


def diehl_cook() -> DiehlCook2015:
    """(c) Diehl & Cook with STDP stepped in ``forward`` (training mode)."""
    return DiehlCook2015(n_inputs=40, n_neurons=10, inh_weight=60.0, norm=12.0)


def spikes(steps: int, batch: int, n: int, p: float = 0.3) -> torch.Tensor:
    return (torch.rand(steps, batch, n) < p).float()


# ---------------------------------------------------------------------------------- checks
def tensors_of(net: nn.Module) -> List[Any]:
    """Every buffer, parameter and learning rule state of ``net``, in a fixed order."""
    found: List[Any] = []
    for module in net.modules():
        found += [(k, v) for k, v in sorted(module._buffers.items())]
        found += [(k, v.detach()) for k, v in sorted(module._parameters.items())]
        if isinstance(module, LearningRule):
            for group in module.groups:
                found += sorted(group.state.items())
    return found


def assert_same(a: nn.Module, b: nn.Module) -> None:
    for (key, x), (key_b, y) in zip(tensors_of(a), tensors_of(b), strict=True):
        assert key == key_b
        if x is None or y is None:
            assert x is None and y is None, key
        else:
            assert x.dtype == y.dtype and torch.equal(x, y), key


def lockstep(step: Callable, ref: nn.Module, xs: torch.Tensor) -> torch.Tensor:
    """Run both over ``xs``; each step's outputs must be equal; the graphed outputs.

    Each step's input is a tensor of its own (a fresh allocation, as the graph's input tensor
    is): a dense product (BLAS) may round its sums differently for an input at another memory
    alignment, such as ``xs[t]`` inside ``xs``, which would differ in the last bit from the
    graph for a reason that is not the graph's.
    """
    outs = []
    for x in xs:
        x = x.clone()
        out, expected = step(x), ref(x)
        assert torch.equal(out, expected)
        outs.append(out)
    return torch.stack(outs)


# ---------------------------------------------------------------------------------- scenarios
SCENARIOS = {
    "linear-lif": (LinearLIF, 30, ("lif", "tau_v"), ("fc", "weight")),
    "delayed": (Delayed, 30, ("lif", "tau_v"), ("shared", "weight")),
    "diehl-cook": (diehl_cook, 40, ("exc", "tau_v"), ("fc", "weight")),
    "user-neuron": (UserNet, 30, ("cell", "tau_v"), ("fc", "weight")),
}


def edit_constant_and_weight(
    net: nn.Module, ref: nn.Module, neuron: str, constant: str, connection: str, weight: str
) -> None:
    """Write a time constant and a weight of ``net`` through ``.data`` (no version counter
    moves); give ``ref`` the same values as a freshly built module would have them: the
    constant assigned (a new tensor; on a GPU the eager step's cache of derived values does not
    see a ``.data`` write, see :class:`pysnn._guards.Guard`), the weight written alike (read
    from its memory by every path)."""
    tau = getattr(net, neuron)._buffers[constant]
    tau.data.mul_(0.5)
    setattr(getattr(ref, neuron), constant, tau.detach().clone())
    for module in (net, ref):
        getattr(module, connection)._parameters[weight].data.mul_(0.9)


@pytest.mark.filterwarnings("ignore:.*the batch size changed")  # (delays in flight dropped)
@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("kind", [ReplayDouble, DeferredDouble])
def test_replays_equal_the_step_loop(name: str, kind: type) -> None:
    """20 steps, reset_state(), 20 steps, another batch size, ``.data`` edits of a time constant
    and a weight mid-run: outputs and every module's state equal the step loop's bit for bit."""
    build, n_in, (neuron, constant), (connection, weight) = SCENARIOS[name]
    torch.manual_seed(0)
    net = build()
    ref = copy.deepcopy(net)
    step = GraphedStep(net, graphs=doubles(kind))
    batch = 1 if name == "diehl-cook" else 2  # (the fused one-sample STDP of the step loop)
    initial = getattr(net, connection).weight.detach().clone()
    with torch.no_grad():
        out = lockstep(step, ref, spikes(20, batch, n_in))
        assert out.sum() > 0  # the network fires
        assert step.captures == 1 and step.replays == 20 - 3 - (kind is ReplayDouble)
        assert_same(net, ref)

        net.reset_state()
        ref.reset_state()
        lockstep(step, ref, spikes(20, batch, n_in))
        assert step.captures == 1  # the reset state is copied into the graph's tensors
        assert_same(net, ref)

        lockstep(step, ref, spikes(20, batch + 1, n_in))  # a new batch size: captured anew
        assert step.captures == 2
        assert_same(net, ref)

        xs = spikes(20, batch + 1, n_in)
        lockstep(step, ref, xs[:10])
        edit_constant_and_weight(net, ref, neuron, constant, connection, weight)
        replays = step.replays
        lockstep(step, ref, xs[10:])
        assert step.captures == 2 and step.replays == replays + 10  # seen by the replays
        assert_same(net, ref)
    if name == "diehl-cook":  # STDP learned in the replayed steps
        assert not torch.equal(net.fc.weight.detach(), initial * 0.9)


def test_data_edit_matches_a_freshly_built_network() -> None:
    """After ``tau_v.data`` and ``weight.data`` edits, the replays step as a network built with
    the edited values (and the state at the edit) does: the edits are not kept stale by
    either."""
    torch.manual_seed(1)
    net = LinearLIF(w=0.8)
    step = GraphedStep(net, graphs=doubles())
    xs = [x.clone() for x in spikes(30, 2, 30)]  # (each of its own: see lockstep)
    with torch.no_grad():
        for x in xs[:15]:
            step(x)
        assert step.graphed
        net.lif.tau_v.data.fill_(4.0)
        net.fc.weight.data.mul_(1.2)
        fresh = LinearLIF(w=0.8)
        fresh.lif.tau_v = 4.0
        fresh.fc.weight.copy_(net.fc.weight)
        for name in fresh.lif.state_names:
            fresh.lif._buffers[name] = net.lif._buffers[name].clone()
        fresh.inp.trace = net.inp.trace.clone()
        stale = copy.deepcopy(fresh)
        stale.lif.tau_v = 100.0  # the value before the edit: must differ from the replays
        runs = {"graphed": step, "fresh": fresh, "stale": stale}
        spikes_of = {name: [] for name in runs}
        v_of = {name: [] for name in runs}
        for x in xs[15:]:
            for name, run in runs.items():
                spikes_of[name].append(run(x))
                lif = net.lif if name == "graphed" else run.lif
                v_of[name].append(lif.v.clone())
        assert step.replays == 15 - 4 + 15 and step.captures == 1
        assert torch.stack(spikes_of["graphed"]).sum() > 0
        for table in (spikes_of, v_of):
            assert torch.equal(torch.stack(table["graphed"]), torch.stack(table["fresh"]))
        assert not torch.equal(torch.stack(v_of["graphed"]), torch.stack(v_of["stale"]))


# ---------------------------------------------------------------------------------- guards
def graphed_pair(build: Callable[[], nn.Module] = LinearLIF, steps: int = 6, batch: int = 2):
    torch.manual_seed(2)
    net = build()
    ref = copy.deepcopy(net)
    step = GraphedStep(net, graphs=doubles())
    with torch.no_grad():
        lockstep(step, ref, spikes(steps, batch, 30))
    assert step.graphed
    return net, ref, step


def test_in_place_edit_of_a_constant_captures_anew() -> None:
    net, ref, step = graphed_pair()
    with torch.no_grad():
        for module in (net, ref):
            module.lif.tau_v.fill_(7.0)  # moves the version counter
        lockstep(step, ref, spikes(10, 2, 30))
    assert step.captures == 2
    assert_same(net, ref)


def test_in_place_weight_edits_between_calls_keep_the_graph() -> None:
    """An optimiser or a rule stepped outside the step edits a weight in place: read from its
    memory by the replay, no capture anew."""
    net, ref, step = graphed_pair()
    with torch.no_grad():
        for x in spikes(10, 2, 30):
            for module in (net, ref):
                module.fc.weight.mul_(1.01)
            assert torch.equal(step(x), ref(x))
    assert step.captures == 1 and step.reason is None
    assert_same(net, ref)


@pytest.mark.parametrize(
    "change",
    ["new parameter", "dt", "eval", "assigned constant"],
)
def test_replaced_objects_and_attributes_capture_anew(change: str) -> None:
    net, ref, step = graphed_pair()
    for module in (net, ref):
        if change == "new parameter":
            module.fc.weight = nn.Parameter(torch.full_like(module.fc.weight, 1.0))
        elif change == "dt":
            module.lif.dt = 0.5
        elif change == "eval":
            module.eval()
        else:
            module.lif.thresh = -58.0
    with torch.no_grad():
        lockstep(step, ref, spikes(3, 2, 30))
        assert "capturing anew" in step.reason
        lockstep(step, ref, spikes(5, 2, 30))
    assert step.captures == 2 and step.reason is None
    assert_same(net, ref)


def test_clamp_runs_eagerly_then_replays_again() -> None:
    net, ref, step = graphed_pair()
    mask = torch.zeros(12, dtype=torch.bool)
    mask[:4] = True
    with torch.no_grad():
        for module in (net, ref):
            module.lif.clamp(mask)
        x = spikes(1, 2, 30)[0]
        assert torch.equal(step(x), ref(x))
        assert "_override" in step.reason
        lockstep(step, ref, spikes(8, 2, 30))
    assert step.reason is None
    assert_same(net, ref)


def test_eager_steps_in_between_are_copied_in() -> None:
    """Calls of the network itself between replays: their state is copied into the graph's."""
    net, ref, step = graphed_pair(Delayed)
    with torch.no_grad():
        for i, x in enumerate(spikes(12, 2, 30)):
            out = net(x) if i % 3 == 1 else step(x)
            assert torch.equal(out, ref(x))
    assert step.captures == 1
    assert_same(net, ref)


def test_gradient_wanted_runs_eagerly_and_says_so() -> None:
    net, ref, step = graphed_pair()
    x = spikes(1, 2, 30)[0]
    out = step(x)  # grad mode on, the weight requires grad
    assert out.requires_grad and torch.equal(out, ref(x))
    assert "torch.no_grad()" in step.reason and step.graphed
    with torch.no_grad():
        lockstep(step, ref, spikes(4, 2, 30))
    assert step.reason is None and step.captures == 1
    assert_same(net, ref)


def test_forward_hook_runs_eagerly_until_removed() -> None:
    net, ref, step = graphed_pair()
    seen = []
    handle = net.lif.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        lockstep(step, ref, spikes(3, 2, 30))
        assert len(seen) == 3 and "forward hook" in step.reason
        handle.remove()
        lockstep(step, ref, spikes(3, 2, 30))
    assert step.reason is None and step.captures == 1
    assert_same(net, ref)


class StateShift(Neuron):
    """A step whose new state is another state's old tensor (``b <- a <- x``): the write-back
    must read ``a``'s old values before writing them over."""

    spiking = False

    def __init__(self, shape: int) -> None:
        super().__init__(shape)
        self.register_state("a", 0.0)
        self.register_state("b", 0.0)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.b = self.a
        self.a = x * 1.0
        return self.a + 2 * self.b


def test_state_that_takes_another_states_tensor() -> None:
    torch.manual_seed(3)
    net = StateShift(5)
    ref = copy.deepcopy(net)
    step = GraphedStep(net, graphs=doubles(DeferredDouble))
    with torch.no_grad():
        lockstep(step, ref, torch.randn(12, 2, 5))
    assert step.replays == 9
    assert_same(net, ref)


# ---------------------------------------------------------------------------------- refusals
class Counting(LinearLIF):
    """Keeps a Python step counter that changes what a step computes."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return self.lif(self.fc(self.inp(x)) * (1.0 if self.t % 2 else 0.5))


class Encoded(LinearLIF):
    """Draws its Poisson input inside the step."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = PoissonEncoder(1.0, dt=1.0, shape=30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.encoder(x * 200.0)[0])


@pytest.mark.parametrize(
    "build, says",
    [
        (Counting, "Counting.t from step to step"),
        (Encoded, "draws random numbers"),
        (lambda: nn.Sequential(nn.Linear(30, 4), nn.Softmax(1)), None),  # nothing to refuse
    ],
)
def test_steps_that_cannot_be_replayed_run_eagerly(build: Callable, says: Optional[str]) -> None:
    torch.manual_seed(4)
    net = build()
    ref = copy.deepcopy(net)
    step = GraphedStep(net, graphs=doubles())
    xs = torch.rand(8, 2, 30)
    with torch.no_grad():
        for x in xs:
            torch.manual_seed(5)  # (the same draws for both)
            out = step(x)
            torch.manual_seed(5)
            assert torch.equal(out, ref(x))
    if says is None:
        assert step.graphed and step.reason is None
    else:
        assert not step.graphed and says in step.reason and step.captures == 0


def test_failed_capture_restores_the_state_and_runs_eagerly() -> None:
    torch.manual_seed(6)
    net = LinearLIF()
    ref = copy.deepcopy(net)
    step = GraphedStep(net, graphs=doubles(FailingDouble))
    with torch.no_grad():
        lockstep(step, ref, spikes(10, 2, 30))
    assert step.captures == 0 and not step.graphed
    assert "capture failed" in step.reason and "stream is capturing" in step.reason
    assert_same(net, ref)


@pytest.mark.cpu_only
def test_on_the_cpu_it_is_the_eager_step_and_says_why() -> None:
    torch.manual_seed(7)
    net = LinearLIF()
    ref = copy.deepcopy(net)
    step = GraphedStep(net)
    assert cuda_step_graph(torch.device("cpu")) is None
    with torch.no_grad():
        lockstep(step, ref, spikes(10, 2, 30))
    assert not step.graphed and step.captures == 0 and step.replays == 0
    assert "cpu tensors" in step.reason and "eagerly" in step.reason
    assert "reason=" in repr(step)
    assert_same(net, ref)


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="network"):
        GraphedStep(lambda x: x)
    with pytest.raises(ValueError, match="warmup"):
        GraphedStep(LinearLIF(), warmup=1)
    with pytest.raises(TypeError, match="copy_output"):
        GraphedStep(LinearLIF(), copy_output=1)
    with pytest.raises(TypeError, match="graphs"):
        GraphedStep(LinearLIF(), graphs="cuda")
    with pytest.raises(TypeError, match="x must be a tensor"):
        GraphedStep(LinearLIF())([0.0] * 30)


# ---------------------------------------------------------------------------------- stepping
def test_graph_capture_is_nested_and_per_thread() -> None:
    seen = []
    with graph_capture():
        with graph_capture():
            assert capturing_graph()
        assert capturing_graph()
        thread = threading.Thread(target=lambda: seen.append(capturing_graph()))
        thread.start()
        thread.join()
    assert not capturing_graph() and seen == [False]


def test_derived_values_are_computed_in_the_recorded_step() -> None:
    lif = LIFNeuron(3)
    with graph_capture():
        first = lif.step_parameters()
        assert lif.step_parameters()[0].decay is not first[0].decay  # not cached
    cached = lif.step_parameters()
    assert lif.step_parameters()[0].decay is cached[0].decay


@pytest.mark.parametrize("hold", [False, True])
def test_shared_delay_ring_on_the_device_path(hold: bool) -> None:
    """The ring position kept as a tensor (GPU, recording) gives the host ring's values, in
    place (nothing else sees the ring) or in a new ring (``hold``: something else holds the
    state, as a graph does); the host path takes over from it."""
    torch.manual_seed(8)
    conn = Linear(6, 4, delay=3.0)
    ref = copy.deepcopy(conn)
    xs = spikes(12, 2, 6, 0.5)
    kept: List[Any] = []
    pointers = []
    with torch.no_grad():
        for t, x in enumerate(xs):
            if t < 8:
                with graph_capture():
                    if hold:
                        kept.append(dict(conn._buffers))
                    out = conn(x)
                    kept.clear()
                pointers.append(conn.history.data_ptr())
            else:
                out = conn(x)  # the host ring again, from the tensor position
            assert torch.equal(out, ref(x))
            assert torch.equal(conn.history, ref.history)
            assert int(conn.history_pos) == int(ref.history_pos)
    in_place = [a == b for a, b in zip(pointers[1:], pointers[2:])]
    assert in_place == [not hold] * len(in_place)


# ---------------------------------------------------------------------------------- CUDA
@cuda_only
@pytest.mark.parametrize("name", ["linear-lif", "delayed", "diehl-cook", "user-neuron"])
def test_cuda_graph_replays_without_host_sync_bit_identical(name: str) -> None:
    """The real graph: after the warm-up and the capture, 30 graphed steps under
    ``torch.cuda.set_sync_debug_mode("error")`` (a host synchronisation raises), spikes and
    state bit-identical to the eager step loop; then a reset and another batch size."""
    build, n_in = SCENARIOS[name][:2]
    torch.manual_seed(0)
    net = build().cuda()
    ref = copy.deepcopy(net)
    step = GraphedStep(net)
    batch = 1 if name == "diehl-cook" else 2
    xs = [x.clone() for x in spikes(40, batch, n_in).cuda()]  # (each of its own: see lockstep)
    with torch.no_grad():
        outs = [step(x) for x in xs[:10]]  # warm-up and capture
        assert step.graphed, step.reason
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            outs += [step(x) for x in xs[10:]]
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        expected = [ref(x) for x in xs]
        assert torch.equal(torch.stack(outs), torch.stack(expected))
        assert step.replays >= 36 and step.reason is None
        assert_same(net, ref)
        net.reset_state()
        ref.reset_state()
        lockstep(step, ref, spikes(10, batch, n_in).cuda())
        lockstep(step, ref, spikes(10, batch + 1, n_in).cuda())
        assert step.captures == 2
        assert_same(net, ref)


@cuda_only
def test_cuda_graph_sees_data_edits_and_refuses_gradients() -> None:
    torch.manual_seed(1)
    net = LinearLIF().cuda()
    ref = copy.deepcopy(net)
    step = GraphedStep(net)
    with torch.no_grad():
        lockstep(step, ref, spikes(8, 2, 30).cuda())
        edit_constant_and_weight(net, ref, "lif", "tau_v", "fc", "weight")
        lockstep(step, ref, spikes(8, 2, 30).cuda())
    assert step.captures == 1
    x = spikes(1, 2, 30).cuda()[0].clone()
    assert torch.equal(step(x), ref(x)) and "torch.no_grad()" in step.reason
    assert_same(net, ref)


def test_inference_mode_on_and_off() -> None:
    """Captured under ``torch.inference_mode`` (its tensors cannot be written outside it), then
    called without it: captured anew, the same values. (The reference loop runs under
    ``torch.no_grad``: the same values.)"""
    torch.manual_seed(9)
    net = LinearLIF()
    ref = copy.deepcopy(net)
    step = GraphedStep(net, graphs=doubles())
    for x in spikes(8, 2, 30):
        x = x.clone()
        with torch.inference_mode():
            out = step(x)
        with torch.no_grad():
            assert torch.equal(out, ref(x))
    assert step.graphed and step.captures == 1
    with torch.no_grad():
        lockstep(step, ref, spikes(8, 2, 30))
    assert step.captures == 2 and step.reason is None
    assert_same(net, ref)


def test_generated_single_steps_are_not_recorded(monkeypatch) -> None:
    """A neuron's generated single step checks its guards in Python, which a replay does not run
    again: after eager steps that built them, no generated step runs in a warm-up or recorded
    step, and the replays still equal the step loop."""
    import pysnn.neuron as neuron_module
    from pysnn import native

    if not native.available():
        pytest.skip("single steps are generated as C kernels, switched off here (PYSNN_NATIVE=0)")
    calls = []
    original = neuron_module._GeneratedStep.__call__

    def counting(self, neuron, x):
        if graph_capture_active():
            calls.append(type(neuron).__name__)
        return original(self, neuron, x)

    from pysnn.stepping import capturing_graph as graph_capture_active

    monkeypatch.setattr(neuron_module._GeneratedStep, "__call__", counting)
    torch.manual_seed(0)
    net, ref = LinearLIF(), LinearLIF()
    ref.load_state_dict(net.state_dict())
    xs = spikes(30, 2, 30)
    with torch.no_grad():
        for x in xs[:10]:  # eager: Input and LIF take generated steps from their second call
            net(x), ref(x)
        assert type(net.lif.__dict__["_fast"]) is neuron_module._GeneratedStep
        step = GraphedStep(net, graphs=doubles(DeferredDouble))
        for x in xs[10:]:
            assert torch.equal(step(x), ref(x))
    assert step.replays > 0 and calls == []
    assert_same(net, ref)
