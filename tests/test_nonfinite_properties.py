"""Property-based test (hypothesis, issue 25): random non-finite values (NaN, inf, -inf) fed
into the public entry points that take tensors or numbers, at a random place, on both the fused
and the torch path. Each call must either refuse them (``ValueError`` / ``TypeError``) or leave
every output and every floating-point state tensor finite: no silent propagation."""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pysnn import native
from pysnn.connection import Conv2d, Linear
from pysnn.conversion import SoftResetIFNeuron
from pysnn.encoding import (
    BernoulliEncoder,
    LatencyEncoder,
    PoissonEncoder,
    RankOrderEncoder,
    RepeatEncoder,
)
from pysnn.environment import GaussianPopulation
from pysnn.learning import MSTDP, MSTDPET, STDP
from pysnn.local import LocalConnection2d
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, IzhikevichNeuron, LIFNeuron
from pysnn.pooling import TraceMaxPool2d
from pysnn.readout import LIReadout
from pysnn.sparse import SparseLinear, fixed_probability
from pysnn.synapse import AlphaSynapse, ConductanceSynapse, ExponentialSynapse

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
BAD = st.sampled_from([math.nan, math.inf, -math.inf])


def poisoned(shape, bad: float, where: float, low: float = 0.0, high: float = 1.0):
    """A finite random tensor of ``shape`` with one entry (at fraction ``where``) set to ``bad``."""
    x = torch.empty(shape).uniform_(low, high)
    x.view(-1)[min(int(where * x.numel()), x.numel() - 1)] = bad
    return x


def tensors_of(*things) -> Iterable[torch.Tensor]:
    """Every floating-point tensor among ``things``: tensors, and the state (non-persistent
    buffers: v, traces, ...), parameters (weights) and learning-rule state of modules. Constants
    (persistent buffers) are left out: an infinite time constant is a valid one (no leak)."""
    for thing in things:
        if isinstance(thing, torch.Tensor):
            yield thing
        elif isinstance(thing, nn.Module):
            for module in thing.modules():
                state = module._non_persistent_buffers_set
                yield from (b for k, b in module._buffers.items() if b is not None and k in state)
                yield from (p for p in module._parameters.values() if p is not None)
                for g in getattr(module, "groups", ()):  # learning rules' state
                    yield from getattr(g, "state", {}).values()
        elif isinstance(thing, (list, tuple)):
            yield from tensors_of(*thing)


# ---------------------------------------------------------------------------- step inputs
def _neuron_step(cls, **kw) -> Callable:
    def run(bad, where):
        neuron = cls(4, **kw)
        with torch.no_grad():
            neuron(torch.zeros(2, 4))
            out = neuron(poisoned((2, 4), bad, where, 0.0, 20.0))
        return out, neuron

    return run


def _neuron_multistep(cls) -> Callable:
    def run(bad, where):
        neuron = cls(4)
        with torch.no_grad():
            out = neuron.forward_multistep(poisoned((5, 2, 4), bad, where, 0.0, 20.0))
        return out, neuron

    return run


def _inject(bad, where):
    neuron = LIFNeuron(4)
    with torch.no_grad():
        neuron(torch.zeros(2, 4))
        neuron.inject_v(poisoned((2, 4), bad, where))
        out = neuron(torch.zeros(2, 4))
    return out, neuron


def _synapse(cls) -> Callable:
    def run(bad, where):
        lif = LIFNeuron(4)
        syn = cls(lif)
        with torch.no_grad():
            out = lif(syn(poisoned((2, 4), bad, where)))
        return out, lif, syn

    return run


def _connection(build, shape) -> Callable:
    def run(bad, where):
        conn = build()
        with torch.no_grad():
            out = conn(poisoned(shape, bad, where))
        return out, conn

    return run


def _encoder(build, shape=(2, 6)) -> Callable:
    def run(bad, where):
        return (build()(poisoned(shape, bad, where)),)

    return run


def _reward(cls) -> Callable:
    def run(bad, where):
        inp, post = Input(3), LIFNeuron(2, thresh=-64.0)
        fc = Linear(3, 2, init="constant", init_kwargs={"val": 1.0})
        rule = cls(connection=fc, pre=inp, post=post)
        with torch.no_grad():
            post(fc(inp(torch.ones(2, 3))))
            rule.step(reward=bad if where < 0.5 else torch.tensor([1.0, bad]))
        return fc, rule

    return run


def _gaussian(bad, where):
    pop = GaussianPopulation([0.0, -1.0], [1.0, 1.0], 5)
    return (pop(poisoned((1, 2), bad, where)),)


STEPS: Dict[str, Callable] = {
    "LIFNeuron": _neuron_step(LIFNeuron),
    "IFNeuron": _neuron_step(IFNeuron),
    "AdaptiveLIFNeuron": _neuron_step(AdaptiveLIFNeuron),
    "IzhikevichNeuron": _neuron_step(IzhikevichNeuron),
    "Input": _neuron_step(Input),
    "LIReadout": _neuron_step(LIReadout),
    "SoftResetIFNeuron": _neuron_step(SoftResetIFNeuron),
    "LIFNeuron.forward_multistep": _neuron_multistep(LIFNeuron),
    "AdaptiveLIFNeuron.forward_multistep": _neuron_multistep(AdaptiveLIFNeuron),
    "LIReadout.forward_multistep": _neuron_multistep(LIReadout),
    "inject_v": _inject,
    "ExponentialSynapse": _synapse(ExponentialSynapse),
    "AlphaSynapse": _synapse(AlphaSynapse),
    "ConductanceSynapse": _synapse(ConductanceSynapse),
    "Linear": _connection(lambda: Linear(6, 3), (2, 6)),
    "Linear(event)": _connection(lambda: Linear(6, 3, propagation="event"), (2, 6)),
    "Linear(delay)": _connection(lambda: Linear(6, 3, delay=2.0), (2, 6)),
    "Conv2d": _connection(lambda: Conv2d(1, 2, 3), (2, 1, 5, 5)),
    "SparseLinear": _connection(
        lambda: SparseLinear(6, 3, indices=fixed_probability(6, 3, 0.5)), (2, 6)
    ),
    "LocalConnection2d": _connection(lambda: LocalConnection2d(1, 2, 5, 3), (2, 1, 5, 5)),
    "TraceMaxPool2d": _connection(lambda: TraceMaxPool2d(2), (2, 1, 4, 4)),
    "PoissonEncoder": _encoder(lambda: PoissonEncoder(5.0)),
    "BernoulliEncoder": _encoder(lambda: BernoulliEncoder(5.0)),
    "LatencyEncoder": _encoder(lambda: LatencyEncoder(5.0)),
    "RankOrderEncoder": _encoder(lambda: RankOrderEncoder(5.0)),
    "RepeatEncoder": _encoder(lambda: RepeatEncoder(5.0)),
    "MSTDP reward": _reward(MSTDP),
    "MSTDPET reward": _reward(MSTDPET),
    "GaussianPopulation": _gaussian,
}


def assert_refused_or_finite(run: Callable, *args) -> None:
    try:
        result = run(*args)
    except (ValueError, TypeError):
        return  # refused, with a message
    bad = [t for t in tensors_of(*result) if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"non-finite values propagated silently: {[tuple(t.shape) for t in bad]}"


@pytest.mark.parametrize("name", sorted(STEPS))
@SETTINGS
@given(bad=BAD, where=st.floats(0.0, 1.0), fused=st.booleans())
def test_non_finite_step_inputs_never_propagate_silently(name, bad, where, fused):
    torch.manual_seed(0)
    with native.enabled(fused):
        assert_refused_or_finite(STEPS[name], bad, where)


# ---------------------------------------------------------------------------- numeric arguments
def _lif_with(**kw) -> Callable:
    def run():
        neuron = LIFNeuron(3, **kw)
        with torch.no_grad():
            out = [neuron(torch.full((2, 3), 8.0)) for _ in range(4)]
        return out, neuron

    return run


def _linear_with(**kw) -> Callable:
    def run():
        fc = Linear(3, 2, **kw)
        with torch.no_grad():
            out = fc(torch.ones(2, 3))
        return out, fc

    return run


def _stdp_with(**kw) -> Callable:
    def run():
        inp, post = Input(3), LIFNeuron(2, thresh=-64.0)
        fc = Linear(3, 2, init="constant", init_kwargs={"val": 1.0})
        rule = STDP(connection=fc, pre=inp, post=post, **kw)
        with torch.no_grad():
            for _ in range(3):
                post(fc(inp(torch.ones(2, 3))))
                rule.step()
        return fc, rule

    return run


def _encoder_with(cls, **kw) -> Callable:
    return lambda: (cls(**kw)(torch.rand(2, 4)),)


NUMBERS: Dict[str, Callable[[float], Callable]] = {
    "LIFNeuron(tau_v)": lambda b: _lif_with(tau_v=b),
    "LIFNeuron(thresh)": lambda b: _lif_with(thresh=b),
    "LIFNeuron(v_rest)": lambda b: _lif_with(v_rest=b),
    "LIFNeuron(v_reset)": lambda b: _lif_with(v_reset=b),
    "LIFNeuron(refrac)": lambda b: _lif_with(refrac=b),
    "LIFNeuron(dt)": lambda b: _lif_with(dt=b),
    "LIFNeuron(tau_trace)": lambda b: _lif_with(tau_trace=b),
    "LIFNeuron(trace_scale)": lambda b: _lif_with(trace_scale=b),
    "LIFNeuron(per-neuron thresh)": lambda b: _lif_with(thresh=torch.tensor([-55.0, b, -50.0])),
    "Linear(delay)": lambda b: _linear_with(delay=b),
    "Linear(dt)": lambda b: _linear_with(dt=b),
    "Linear(init val)": lambda b: _linear_with(init="constant", init_kwargs={"val": b}),
    "STDP(nu)": lambda b: _stdp_with(nu=b),
    "STDP(tau_pre)": lambda b: _stdp_with(tau_pre=b),
    "PoissonEncoder(duration)": lambda b: _encoder_with(PoissonEncoder, duration=b),
    "PoissonEncoder(dt)": lambda b: _encoder_with(PoissonEncoder, duration=5.0, dt=b),
    "BernoulliEncoder(max_prob)": lambda b: _encoder_with(
        BernoulliEncoder, duration=5.0, max_prob=b
    ),
    "LatencyEncoder(x_max)": lambda b: _encoder_with(LatencyEncoder, duration=5.0, x_max=b),
    "ExponentialSynapse(tau_syn)": lambda b: _synapse_with(ExponentialSynapse, tau_syn=b),
    "ConductanceSynapse(e_rev)": lambda b: _synapse_with(ConductanceSynapse, e_rev=b),
    "TraceMaxPool2d(tau_trace)": lambda b: lambda: (
        TraceMaxPool2d(2, tau_trace=b)(torch.ones(1, 1, 2, 2)),
    ),
    "GaussianPopulation(width)": lambda b: lambda: (
        GaussianPopulation([0.0], [1.0], 4, width=b)(torch.rand(1, 1)),
    ),
}


def _synapse_with(cls, **kw) -> Callable:
    def run():
        lif = LIFNeuron(3)
        syn = cls(lif, **kw)
        with torch.no_grad():
            out = [lif(syn(torch.full((2, 3), 0.5))) for _ in range(3)]
        return out, lif, syn

    return run


@pytest.mark.parametrize("name", sorted(NUMBERS))
@SETTINGS
@given(bad=BAD, fused=st.booleans())
def test_non_finite_numeric_arguments_never_propagate_silently(name, bad, fused):
    torch.manual_seed(0)
    with native.enabled(fused):
        assert_refused_or_finite(lambda: NUMBERS[name](bad)())


def test_every_entry_point_is_exercised():
    """The property tests above draw from these tables: keep them non-trivial."""
    assert len(STEPS) >= 25 and len(NUMBERS) >= 20
