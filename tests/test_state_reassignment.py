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
