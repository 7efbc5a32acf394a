"""A state or constant reassigned through ``.data`` never reaches a fused kernel in a layout it
does not write.

The fused kernels address tensors by pointer. ``neuron.v.data = torch.zeros(2)`` keeps the
tensor object (and its reference counts) but gives it other memory: a kernel that still wrote
``B * n`` elements there would write past its end (a crash or a corrupted heap), and one that
wrote another dtype or layout would give wrong values silently. Each case here runs twice, with
the fused kernels on and off (``pysnn.native.enabled(False)``: the torch operations only), and
must give the same outcome: the same values bit for bit, or an error from both.
"""

from __future__ import annotations

from typing import Callable, List, Tuple

import pytest
import torch

from pysnn import native
from pysnn.connection import Linear
from pysnn.functional.lif import lif_trace_step
from pysnn.functional.trace import TraceParameters, trace_step
from pysnn.multistep import Unroll
from pysnn.network import SNNNetwork
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, LIFNeuron

pytestmark = [
    pytest.mark.cpu_only,
    pytest.mark.skipif(not native.available(), reason="the C kernels are not built here"),
]

B, N = 4, 40


def _reassign(tensor: torch.Tensor, how: str) -> None:
    if how == "smaller":
        tensor.data = torch.zeros(2, dtype=tensor.dtype)
    elif how == "larger":
        tensor.data = torch.zeros(*(2 * s for s in tensor.shape), dtype=tensor.dtype)
    elif how == "dtype":
        other = torch.float64 if tensor.dtype is not torch.float64 else torch.float32
        tensor.data = tensor.data.to(other)
    else:  # a non-contiguous tensor of the same shape and values
        wide = torch.stack([tensor.data, tensor.data], dim=-1)
        tensor.data = wide[..., 0]
        assert not tensor.is_contiguous()


class _Net(SNNNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.inp = Input(N)
        self.fc = Linear(N, N)
        self.lif = LIFNeuron(N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.fc(self.inp(x)))


NEURONS: List[Tuple[str, Callable[[], torch.nn.Module], Tuple[str, ...]]] = [
    ("lif", lambda: LIFNeuron(N), ("v", "refrac_count", "trace")),
    ("if", lambda: IFNeuron(N), ("v", "trace")),
    ("adaptive", lambda: AdaptiveLIFNeuron(N), ("v", "theta", "trace")),
    ("adaptive_shared", lambda: AdaptiveLIFNeuron(N, theta_shared=True), ("v", "theta")),
    ("input", lambda: Input(N), ("trace",)),
]
CASES = [
    (kind, make, name, how)
    for kind, make, names in NEURONS
    for name in names
    for how in ("smaller", "larger", "dtype", "strided")
]


def _inputs(kind: str, steps: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "input":
        return (torch.rand(steps, B, N, generator=g) < 0.3).float()
    return torch.rand(steps, B, N, generator=g) * 4


def _outcome(run: Callable[[], List[torch.Tensor]]):
    """The values ``run`` gives, or the type of the error it raises."""
    try:
        return [t.detach().clone() for t in run()]
    except (RuntimeError, ValueError) as err:
        return type(err)


def _same(a, b) -> bool:
    if isinstance(a, type) or isinstance(b, type):
        return a is b
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("kind,make,name,how", CASES, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_single_steps_after_a_reassignment_match_the_torch_steps(kind, make, name, how) -> None:
    x = _inputs(kind, 80)

    def run() -> List[torch.Tensor]:
        torch.manual_seed(0)
        neuron = make()
        out = []
        with torch.no_grad():
            for t in range(70):  # past GENERATE_AFTER: the generated step runs
                out.append(neuron(x[t]))
            assert (neuron.generated_step == "generated") == native.available()
            _reassign(neuron._buffers[name], how)
            for t in range(70, 80):
                out.append(neuron(x[t]))
        return out + [b for b in neuron.buffers() if b is not None]

    fused = _outcome(run)
    with native.enabled(False):
        reference = _outcome(run)
    assert _same(fused, reference), (fused if isinstance(fused, type) else "values", reference)


@pytest.mark.parametrize("how", ["smaller", "larger", "dtype", "strided"])
@pytest.mark.parametrize("name", ["lif.v", "lif.refrac_count", "lif.trace", "inp.trace"])
def test_unrolled_network_after_a_reassignment_matches_the_torch_steps(name, how) -> None:
    x = (torch.rand(3, 5, B, N, generator=torch.Generator().manual_seed(2)) < 0.4).float() * 3

    def run() -> List[torch.Tensor]:
        torch.manual_seed(0)
        net = _Net()
        unroll = Unroll(net)
        with torch.no_grad():
            out = [unroll(x[0]), unroll(x[1])]
            module, buffer = name.split(".")
            _reassign(getattr(net, module)._buffers[buffer], how)
            out.append(unroll(x[2]))
        return out + [b for b in net.buffers() if b is not None]

    fused = _outcome(run)
    with native.enabled(False):
        reference = _outcome(run)
    assert _same(fused, reference)


@pytest.mark.parametrize("what", ["v", "refrac", "trace", "out"])
def test_lif_trace_step_with_state_of_another_shape_takes_the_torch_operations(what) -> None:
    """The functional layer checks shapes before it hands pointers to a kernel: a state of
    another shape broadcasts (or fails) as torch's operations do."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(B, N, generator=g) * 4
    v = torch.full((B, N), -60.0)
    refrac = torch.zeros(B, N, dtype=torch.int64)
    trace = torch.rand(B, N, generator=g)
    p, tp = LIFNeuron(N).step_parameters()
    small = {"v": v[:1].clone(), "refrac": refrac[:1].clone(), "trace": trace[:1].clone()}
    args = {"v": v, "refrac": refrac, "trace": trace}
    out = None
    if what == "out":
        out = (torch.empty(1, N), torch.empty(1, N, dtype=torch.int64), torch.empty(1, N))
    else:
        args[what] = small[what]

    def run() -> List[torch.Tensor]:
        return list(lif_trace_step(x, args["v"], args["refrac"], args["trace"], p, tp, out=out))

    fused = _outcome(run)
    with native.enabled(False):
        reference = _outcome(run)
    assert _same(fused, reference)


def test_trace_step_with_spikes_of_another_shape_takes_the_torch_operations() -> None:
    trace = torch.rand(1, N, generator=torch.Generator().manual_seed(4))
    spikes = (torch.rand(B, N, generator=torch.Generator().manual_seed(5)) < 0.5).float()
    tp = TraceParameters(torch.tensor(0.95), torch.tensor(1.0), True)
    fused = trace_step(trace, spikes, tp, out=trace.clone())
    with native.enabled(False):
        reference = trace_step(trace, spikes, tp)
    assert fused.shape == (B, N) and torch.equal(fused, reference)


# ------------------------------------------------------------------ connections and what they feed
IN, OUT = 24, 16


def _spikes(steps: int, batch: int = B, n: int = IN, seed: int = 6) -> torch.Tensor:
    return (
        torch.rand(steps, batch, n, generator=torch.Generator().manual_seed(seed)) < 0.2
    ).float()


def _smaller_matrix(tensor: torch.Tensor) -> None:
    """``tensor.data`` (2-D) swapped for a ``(1, 2)`` one: the bias of the connection then
    broadcasts the product's output in a kernel that read past the weight's end."""
    tensor.data = torch.zeros(1, 2, dtype=tensor.dtype)


def _compare(run: Callable[[], List[torch.Tensor]]) -> None:
    fused = _outcome(run)
    with native.enabled(False):
        reference = _outcome(run)
    assert _same(fused, reference), (fused if isinstance(fused, type) else "values", reference)


@pytest.mark.parametrize("mode", ["step", "multistep", "unroll"])
@pytest.mark.parametrize("delay", [0.0, 3.0])
def test_linear_with_bias_after_its_weight_shrank_matches_the_torch_steps(mode, delay) -> None:
    """The event-driven product checks the weight's shape before the kernel reads it (it read
    ``in * out`` values of a weight of two: with a bias the result broadcast to the right shape
    where torch's product fails)."""
    x = _spikes(40)

    class Net(SNNNetwork):
        def __init__(self) -> None:
            super().__init__()
            self.inp = Input(IN)
            self.fc = Linear(IN, OUT, delay=delay, bias=True, propagation="event")
            self.lif = LIFNeuron(OUT)

        def forward(self, s: torch.Tensor) -> torch.Tensor:
            return self.lif(self.fc(self.inp(s)))

    def run() -> List[torch.Tensor]:
        torch.manual_seed(0)
        net = Net()
        with torch.no_grad():
            out = [net(x[t]) for t in range(8)]
            _smaller_matrix(net.fc.weight)
            if mode == "step":
                out += [net(x[t]) for t in range(8, 12)]
            elif mode == "multistep":  # (T * B >= BLOCK_ROWS: the blocked kernel)
                out.append(net.fc.forward_multistep(x[8:16]))
            else:
                out.append(Unroll(net)(x[8:16]))
        return out

    _compare(run)


def _population(conductance: bool):
    from pysnn.sparse import SparseLinear, fixed_probability
    from pysnn.synapse import ConductanceSynapse, ExponentialSynapse

    n = 20
    torch.manual_seed(0)
    indices = fixed_probability(n, 2 * n, 0.2, generator=torch.Generator().manual_seed(0))
    conn = SparseLinear(n, 2 * n, indices, weight=0.5)
    lif = LIFNeuron(n, v_rest=-60.0, v_reset=-60.0, thresh=-50.0)
    if conductance:
        synapses = [ConductanceSynapse(lif, 5.0, 0.0), ConductanceSynapse(lif, 10.0, -80.0)]
    else:
        synapses = [ExponentialSynapse(lif, 5.0), ExponentialSynapse(lif, 10.0)]
    return conn, synapses, lif


RECURRENT = [
    (name, how, conductance)
    for name in ("v", "refrac_count", "trace")
    for how in ("smaller", "larger")
    for conductance in (False, True)
]


@pytest.mark.parametrize(
    "name,how,conductance",
    RECURRENT,
    ids=[f"{n}-{h}-{'coba' if c else 'cuba'}" for n, h, c in RECURRENT],
)
def test_recurrent_population_after_a_reassignment_matches_the_step_loop(
    name, how, conductance
) -> None:
    """The fused loop of run_recurrent checks the sizes of the state it writes (it wrote
    ``B * N`` values into a tensor of two: a crash or a corrupted heap)."""
    from pysnn.multistep import run_recurrent

    def run() -> List[torch.Tensor]:
        conn, synapses, lif = _population(conductance)
        start = _spikes(1, 2, 20, seed=7)[0]
        with torch.no_grad():
            out = [run_recurrent(conn, synapses, lif, 5, spikes=start)]
            _reassign(lif._buffers[name], how)
            out.append(run_recurrent(conn, synapses, lif, 5))
        return out + [lif.v, lif.trace] + [s.g for s in synapses]

    _compare(run)


@pytest.mark.parametrize("how", ["smaller", "larger"])
def test_run_layers_after_a_bias_reassignment_matches_the_step_loop(how) -> None:
    """The fused network loop checks the size of each connection's bias (it read ``out``
    values of a bias of another size)."""
    from pysnn.multistep import run_layers

    x = _spikes(16, 1)

    def run() -> List[torch.Tensor]:
        torch.manual_seed(0)
        inp, lif = Input(IN), LIFNeuron(OUT)
        fc = Linear(IN, OUT, bias=True, propagation="event")
        layers = [(lif, [(fc, inp)])]
        with torch.no_grad():
            out = run_layers(inp, layers, x[:8] * 4, record=[lif])
            _reassign(fc.bias, how)
            out += run_layers(inp, layers, x[8:] * 4, record=[lif])
        return out + [lif.v, lif.trace]

    _compare(run)


@pytest.mark.parametrize("synapses", ["current", "conductance"])
def test_diehl_cook_after_a_weight_reassignment_matches_the_step_loop(synapses) -> None:
    """A connection's weight swapped through ``.data`` between runs of DiehlCook2015: a new
    weight of the same shape is used from the next step on (as by the torch steps), one of
    another shape fails as torch's product does."""
    from pysnn.models import DiehlCook2015

    x = _spikes(12, 1, seed=8)

    for how in ("values", "smaller"):

        def run() -> List[torch.Tensor]:
            torch.manual_seed(0)
            model = DiehlCook2015(n_inputs=IN, n_neurons=10, synapses=synapses)
            for conn in (model.fc, model.i2e, model.e2i):
                conn.propagation = "event"  # (as the C kernels: "auto" runs dense without them)
            out = [model.run(x)]
            weight = model.i2e.weight
            if how == "values":
                weight.data = torch.rand(weight.shape, generator=torch.Generator().manual_seed(9))
            else:
                _smaller_matrix(weight)
            out.append(model.run(x))
            return out + [model.fc.weight, model.exc.theta]

        _compare(run)


def test_linear_fast_step_after_its_copy_was_rebuilt_elsewhere_matches_the_torch_steps() -> None:
    """A weight reassigned through ``.data``, whose presynaptic-major copy another path
    (``forward_multistep``) rebuilt before the next single step: the single step's fast path
    sees another copy and goes back to the general step (it read the ``(in, out)`` values it
    had checked from a copy of two)."""
    x = _spikes(40)

    def run() -> List[torch.Tensor]:
        torch.manual_seed(0)
        fc = Linear(IN, OUT, bias=True, propagation="event")
        with torch.no_grad():
            out = [fc(x[t]) for t in range(4)]
            _smaller_matrix(fc.weight)
            try:
                fc.forward_multistep(x[4:12])
            except (RuntimeError, ValueError):
                pass  # (as torch's product: the copy was remade from the new weight first)
            out += [fc(x[t]) for t in range(12, 16)]
        return out

    _compare(run)
