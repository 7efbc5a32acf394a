"""Modules under ``torch.inference_mode``: built and run there they give the values of modules
built and run under ``torch.no_grad`` (same seed), bit for bit; state made there is taken on
outside the mode (without autograd and with it); edits of tensors made there (which keep no
version counter for pysnn's caches to read) are seen."""

from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch
from torch import nn

from pysnn._guards import Guard, fingerprint, version
from pysnn.connection import Conv2d, Linear
from pysnn.learning import MSTDP, MSTDPET, STDP, FedeSTDP, Hebbian, LearningRule, TripletSTDP
from pysnn.models import DiehlCook2015
from pysnn.multistep import Unroll, run_feedforward, run_layers
from pysnn.network import SNNNetwork, reset_state
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, IzhikevichNeuron, LIFNeuron
from pysnn.sparse import SparseLinear, fixed_probability
from pysnn.synapse import AlphaSynapse, ConductanceSynapse, ExponentialSynapse

pytestmark = pytest.mark.cpu_only  # (the reference paths compared are the CPU ones)

Run = Callable[[nn.Module, torch.Generator], object]


def _spikes(g: torch.Generator, *shape: int, p: float = 0.3) -> torch.Tensor:
    return (torch.rand(*shape, generator=g) < p).float()


def _neuron_run(m: nn.Module, g: torch.Generator) -> object:
    # more single steps than GENERATE_AFTER (a kernel where one is generated), then a block
    steps = [m(torch.rand(3, 12, generator=g) * 40.0) for _ in range(70)]
    return steps + [m.forward_multistep(torch.rand(6, 3, 12, generator=g) * 40.0)]


def _input_run(m: nn.Module, g: torch.Generator) -> object:
    return [m(_spikes(g, 3, 12)) for _ in range(10)] + [m.forward_multistep(_spikes(g, 6, 3, 12))]


def _connection_run(m: nn.Module, g: torch.Generator) -> object:
    steps = [m(_spikes(g, 3, 12)) for _ in range(40)]  # "auto" re-counts after 32 steps
    return steps + [m.forward_multistep(_spikes(g, 20, 3, 12))]


class _Net(SNNNetwork):
    """Input -> Linear -> [synapse] -> LIF, with an optional learning rule."""

    def __init__(
        self,
        synapse: Optional[Callable[[LIFNeuron], nn.Module]] = None,
        rule: Optional[Callable[..., LearningRule]] = None,
        delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.inp = Input(12)
        self.fc = Linear(12, 8, delay=delay, wmin=0.0, wmax=1.0, init="uniform")
        self.lif = LIFNeuron(8)
        self.syn = None if synapse is None else synapse(self.lif)
        self.rule = None if rule is None else rule(connection=self.fc, pre=self.inp, post=self.lif)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.fc(self.inp(x))
        if self.syn is not None:
            current = self.syn(current)
        return self.lif(current * 10.0)


def _net_run(batch: int = 3, reward: bool = False) -> Run:
    def run(m: nn.Module, g: torch.Generator) -> object:
        out = []
        for _ in range(40):
            out.append(m(_spikes(g, batch, 12)))
            if m.rule is not None and reward:
                m.rule.step(reward=1.0)
            elif m.rule is not None:
                m.rule.step()
        return out

    return run


def _sparse() -> SparseLinear:
    idx = fixed_probability(12, 8, 0.4, generator=torch.Generator().manual_seed(3))
    return SparseLinear(12, 8, idx, wmin=0.0, wmax=1.0)


def _layers() -> nn.ModuleList:
    inp, fc, lif = Input(12), Linear(12, 8, wmin=0.0, wmax=1.0), LIFNeuron(8)
    return nn.ModuleList([inp, fc, lif, STDP(connection=fc, pre=inp, post=lif, nu=(0.01, 0.01))])


def _layers_run(m: nn.Module, g: torch.Generator) -> object:
    inp, fc, lif, rule = m
    return [
        run_layers(inp, [(lif, [(fc, inp)])], _spikes(g, 20, 1, 12), rules=[rule], record=[lif])[0]
        for _ in range(2)
    ]


def _diehl_cook(synapses: str, training: bool) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return DiehlCook2015(n_inputs=12, n_neurons=6, synapses=synapses).train(training)

    return build


def _rule(cls, **kwargs) -> Callable[[], nn.Module]:
    return lambda: _Net(rule=lambda **k: cls(**k, **kwargs))


CASES: Dict[str, Tuple[Callable[[], nn.Module], Run]] = {
    "LIFNeuron": (lambda: LIFNeuron(12), _neuron_run),
    "IFNeuron": (lambda: IFNeuron(12), _neuron_run),
    "AdaptiveLIFNeuron": (lambda: AdaptiveLIFNeuron(12), _neuron_run),
    "AdaptiveLIFNeuron-shared": (lambda: AdaptiveLIFNeuron(12, theta_shared=True), _neuron_run),
    "IzhikevichNeuron": (lambda: IzhikevichNeuron(12), _neuron_run),
    "Input": (lambda: Input(12), _input_run),
    "Linear-auto": (lambda: Linear(12, 8), _connection_run),
    "Linear-event-bounded": (
        lambda: Linear(12, 8, wmin=-0.2, wmax=0.2, propagation="event"),
        _connection_run,
    ),
    "Linear-dense": (lambda: Linear(12, 8, propagation="dense"), _connection_run),
    "Linear-delay": (lambda: Linear(12, 8, delay=3.0), _connection_run),
    "Linear-per-synapse-delay": (
        lambda: Linear(12, 8, delay=torch.arange(96.0).view(8, 12) % 4),
        _connection_run,
    ),
    "SparseLinear": (_sparse, lambda m, g: [m(_spikes(g, 3, 12)) for _ in range(20)]),
    "Conv2d": (
        lambda: Conv2d(2, 3, 3),
        lambda m, g: [m(_spikes(g, 2, 2, 6, 6)) for _ in range(20)],
    ),
    "ExponentialSynapse": (lambda: _Net(lambda lif: ExponentialSynapse(lif, 5.0)), _net_run()),
    "AlphaSynapse": (lambda: _Net(lambda lif: AlphaSynapse(lif, 2.0)), _net_run()),
    "ConductanceSynapse": (lambda: _Net(lambda lif: ConductanceSynapse(lif, 5.0, 0.0)), _net_run()),
    "STDP": (_rule(STDP, nu=(0.01, 0.01)), _net_run()),
    "STDP-one-sample": (_rule(STDP, nu=(0.01, 0.01)), _net_run(batch=1)),
    "STDP-delay": (
        lambda: _Net(rule=lambda **k: STDP(**k, nu=(0.01, 0.01)), delay=2.0),
        _net_run(),
    ),
    "TripletSTDP": (_rule(TripletSTDP), _net_run()),
    "TripletSTDP-one-sample": (_rule(TripletSTDP), _net_run(batch=1)),
    "Hebbian": (_rule(Hebbian), _net_run()),
    "MSTDP": (_rule(MSTDP), _net_run(reward=True)),
    "MSTDPET": (_rule(MSTDPET), _net_run(reward=True)),
    "FedeSTDP": (_rule(FedeSTDP), _net_run()),
    "run_layers": (_layers, _layers_run),
    "run_feedforward": (
        lambda: nn.ModuleList(
            [Linear(12, 8, init="uniform", init_kwargs={"a": 0.0, "b": 6.0}), LIFNeuron(8)]
        ),
        lambda m, g: [run_feedforward(m[0], m[1], _spikes(g, 20, 3, 12)) for _ in range(2)],
    ),
    "Unroll": (lambda: Unroll(_Net()), lambda m, g: [m(_spikes(g, 20, 3, 12)) for _ in range(2)]),
    "Unroll-synapse-delay": (
        lambda: Unroll(_Net(lambda lif: ExponentialSynapse(lif, 5.0), delay=2.0)),
        lambda m, g: [m(_spikes(g, 20, 3, 12)) for _ in range(2)],
    ),
}
for _synapses in ("current", "conductance"):
    for _training in (True, False):
        CASES[f"DiehlCook2015-{_synapses}-{'train' if _training else 'eval'}"] = (
            _diehl_cook(_synapses, _training),
            lambda m, g: [m.run(_spikes(g, 25, 1, 12, p=0.2)) for _ in range(3)],
        )


def _tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Every parameter, buffer (state included) and learning-rule state of ``module``."""
    found = {}
    for name, m in module.named_modules():
        for kind in ("_parameters", "_buffers"):
            for key, value in getattr(m, kind).items():
                if value is not None:
                    found[f"{name}.{key}"] = value.detach()
        if isinstance(m, LearningRule):
            for i, group in enumerate(m.groups):
                for key, value in group.state.items():
                    found[f"{name}.group{i}.{key}"] = value.detach()
    return found


def _flat(outputs: object) -> List[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs.detach()]
    return [t for item in outputs for t in _flat(item)]


def _assert_same(a: nn.Module, out_a: object, b: nn.Module, out_b: object) -> None:
    flat_a, flat_b = _flat(out_a), _flat(out_b)
    assert len(flat_a) == len(flat_b)
    for i, (x, y) in enumerate(zip(flat_a, flat_b)):
        assert x.dtype == y.dtype and torch.equal(x, y), f"output {i}"
    tensors_a, tensors_b = _tensors(a), _tensors(b)
    assert tensors_a.keys() == tensors_b.keys()
    for key, value in tensors_b.items():
        assert torch.equal(tensors_a[key], value), key


def _reference(
    build: Callable[[], nn.Module], runs: List[Tuple[Run, bool]]
) -> Tuple[nn.Module, List[object]]:
    """Built and run under ``no_grad`` (seed 0 for the build, 1 for the inputs)."""
    torch.manual_seed(0)
    with torch.no_grad():
        module = build()
    g = torch.Generator().manual_seed(1)
    outputs = []
    for run, reset in runs:
        with torch.no_grad():
            if reset:
                reset_state(module)
            outputs.append(run(module, g))
    return module, outputs


@pytest.mark.parametrize("case", sorted(CASES))
def test_built_and_run_in_inference_mode_equals_no_grad(case: str) -> None:
    """Built inside inference mode: all its tensors are inference tensors, which keep no
    version counter for pysnn's caches and guards to read (on main building a connection
    crashed reading its weight's), and its learning rules edit the weight inside the mode."""
    build, run = CASES[case]
    torch.manual_seed(0)
    with torch.inference_mode():
        module = build()
        assert all(t.is_inference() for t in module.parameters())
        g = torch.Generator().manual_seed(1)
        outputs = [run(module, g)]
    reference, expected = _reference(build, [(run, False)])
    _assert_same(module, outputs, reference, expected)
    assert sum(float(t.abs().sum()) for t in _flat(expected)) > 0  # something happened


@pytest.mark.parametrize("case", sorted(CASES))
def test_built_in_inference_mode_run_outside_equals_no_grad(case: str) -> None:
    """Built inside inference mode, run outside it: state made outside is normal, and a
    learning rule's in-place weight edits (which torch allows on an inference tensor inside the
    mode only) run inside it, as the fused kernels' writes do anywhere."""
    build, run = CASES[case]
    torch.manual_seed(0)
    with torch.inference_mode():
        module = build()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        outputs = [run(module, g)]
    reference, expected = _reference(build, [(run, False)])
    _assert_same(module, outputs, reference, expected)


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_run_in_then_outside_inference_mode_equals_no_grad(case: str, warm: bool) -> None:
    """Built normally; with ``warm`` first run outside (caches and fast steps made for normal
    tensors) and reset inside inference mode; run inside inference mode (state, counters and
    caches made there are inference tensors), then outside without a reset: no in-place update
    of an inference tensor outside the mode (main: the "auto" activity counter, the event
    copy), the same values."""
    build, run = CASES[case]
    torch.manual_seed(0)
    with torch.no_grad():
        module = build()
    g = torch.Generator().manual_seed(1)
    outputs = []
    if warm:
        with torch.no_grad():
            outputs.append(run(module, g))
    with torch.inference_mode():
        if warm:
            reset_state(module)
        outputs.append(run(module, g))
    with torch.no_grad():
        outputs.append(run(module, g))
    runs = [(run, False), (run, True), (run, False)] if warm else [(run, False), (run, False)]
    reference, expected = _reference(build, runs)
    _assert_same(module, outputs, reference, expected)


AUTOGRAD_CASES = [
    "LIFNeuron",
    "IFNeuron",
    "AdaptiveLIFNeuron",
    "AdaptiveLIFNeuron-shared",
    "IzhikevichNeuron",
    "Input",
    "ExponentialSynapse",
    "AlphaSynapse",
    "ConductanceSynapse",
    "STDP",
    "Unroll",
]


@pytest.mark.parametrize("case", AUTOGRAD_CASES)
def test_first_steps_in_inference_mode_then_training_with_autograd(case: str) -> None:
    """The first steps under inference mode, then steps with autograd (the input needs a
    gradient): a value cached during the first steps (a neuron's decay) must not be an
    inference tensor, which autograd cannot save (main: RuntimeError)."""
    build, run = CASES[case]
    torch.manual_seed(0)
    module = build()
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        run(module, g)
    reset_state(module)

    def with_grad(m: nn.Module) -> List[torch.Tensor]:
        g = torch.Generator().manual_seed(2)
        if isinstance(m, (Unroll, _Net)):
            x = _spikes(g, 4, 3, 12).requires_grad_()
            outputs = [m(x)] if isinstance(m, Unroll) else [m(s) for s in x]
        else:
            x = (torch.rand(4, 3, 12, generator=g) * 40.0).requires_grad_()
            outputs = [m(s) for s in x]
        sum(o.sum() for o in outputs).backward()
        return [x.grad] + [p.grad for p in m.parameters()]

    torch.manual_seed(0)
    reference = build()
    with torch.no_grad():
        run(reference, torch.Generator().manual_seed(1))
    reset_state(reference)
    got, expected = with_grad(module), with_grad(reference)
    assert expected[0].abs().sum() > 0  # the gradient reaches the input
    assert all(map(torch.equal, got, expected))


def _linear_steps(propagation: str, edit: Callable[[Linear], None], inference: bool) -> list:
    g = torch.Generator().manual_seed(1)
    xs = [_spikes(g, 2, 30, p=0.2) for _ in range(40)]
    torch.manual_seed(0)
    with torch.inference_mode() if inference else torch.no_grad():
        fc = Linear(30, 10, propagation=propagation)
        outputs = [fc(x) for x in xs[:20]]
        edit(fc)
        outputs += [fc(x) for x in xs[20:]]
    return outputs


@pytest.mark.parametrize("propagation", ["event", "auto"])
@pytest.mark.parametrize("how", ["in_place", "data", "rows"])
def test_edit_of_an_inference_weight_is_seen(propagation: str, how: str) -> None:
    """The event path's presynaptic-major copy of a weight made under inference mode is checked
    against the weight's bytes (no version counter to read): an edit inside the mode, in place
    or through ``.data``, takes effect at the next step as under ``no_grad``."""
    edits = {
        "in_place": lambda fc: fc.weight.mul_(-0.5),
        "data": lambda fc: fc.weight.data[3].fill_(2.0),
        "rows": lambda fc: fc.weight[:, 5].fill_(-1.0),
    }
    got = _linear_steps(propagation, edits[how], inference=True)
    expected = _linear_steps(propagation, edits[how], inference=False)
    unedited = _linear_steps(propagation, lambda fc: None, inference=False)
    assert not all(map(torch.equal, expected, unedited))  # the edit changes the output
    assert all(map(torch.equal, got, expected))


def test_edit_of_an_inference_neuron_constant_is_seen() -> None:
    """A neuron built under inference mode caches the values it derives from its constants
    (inference tensors, guarded by their bytes): an in-place edit inside the mode is seen."""

    def run(inference: bool) -> List[torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        with torch.inference_mode() if inference else torch.no_grad():
            neuron = LIFNeuron(10)
            outputs = [neuron(torch.rand(2, 10, generator=g) * 30.0) for _ in range(20)]
            neuron.tau_v.fill_(5.0)
            neuron.thresh.fill_(-60.0)
            outputs += [neuron(torch.rand(2, 10, generator=g) * 30.0) for _ in range(20)]
        return outputs

    assert all(map(torch.equal, run(True), run(False)))


def test_bounds_of_an_inference_weight_are_checked_once_per_write() -> None:
    """Without a version counter the bounds check compares the weight's bytes: one warning for
    a write of the user's own that leaves the bounds, none for pysnn's edits (clamp_)."""
    with torch.inference_mode():
        fc = Linear(20, 10, wmin=0.0, wmax=1.0)
        x = _spikes(torch.Generator().manual_seed(1), 2, 20)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fc(x)
            fc(x)
            assert not caught
            fc.weight.add_(5.0)
            fc(x)
            fc(x)
            assert len(caught) == 1 and "outside [wmin, wmax]" in str(caught[0].message)
            fc.clamp_()
            fc(x)
            fc.weight[0, 0] = -1.0
            fc(x)
            assert len(caught) == 2


def test_guard_of_inference_tensors() -> None:
    """A Guard of tensors without a version counter compares their storage, layout and bytes on
    the CPU; on another device (a 'meta' tensor stands in) it never holds."""
    with torch.inference_mode():
        small, large, base = torch.tensor(1.0), torch.rand(1000), torch.arange(10.0)
        strided = base[::2]
        meta = torch.ones(3, device="meta")
    assert version(small) is None and version(torch.ones(1)) == 0
    writes = [
        lambda: small.fill_(3.0),
        lambda: large.__setitem__(999, -1.0),
        lambda: large.numpy().__setitem__(0, 7.0),
        lambda: base.add_(1.0),
        lambda: large.resize_(10),  # the same storage, fewer elements
        lambda: small.as_strided_((1,), (1,)),
    ]
    for write in writes:
        guard = Guard([small, large, strided, torch.ones(2)])
        assert guard.holds()
        with torch.inference_mode():
            write()
        assert not guard.holds()
    assert not Guard([meta]).holds() and not Guard([torch.ones(2), meta]).holds()
    before = fingerprint(base)
    assert fingerprint(base) == before
    with torch.inference_mode():
        base[3] = 0.5
    assert fingerprint(base) != before
