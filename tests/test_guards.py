"""Guards: a constant edited in any way (in place, through ``.data``, by assignment) takes
effect at the next step on every path, compared with a neuron built with the new value."""

import pytest
import torch

from pysnn._guards import Guard
from pysnn.connection import Linear
from pysnn.multistep import run_layers
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron


def test_guard_sees_every_kind_of_write():
    small, large = torch.tensor(1.0), torch.rand(1000)
    base = torch.arange(10.0)
    strided = base[::2]
    guard = Guard([small, large, strided])
    assert guard.holds()
    for write in (
        lambda: small.data.fill_(3.0),
        lambda: large.data.__setitem__(999, -1.0),
        lambda: large.numpy().__setitem__(0, 7.0),
        lambda: small.fill_(5.0),
        lambda: setattr(large, "data", torch.rand(1000)),
        lambda: base.data.add_(1.0),
    ):
        guard = Guard([small, large, strided])
        write()
        assert not guard.holds()
    guard = Guard([small])
    small.data.fill_(small.item())  # the same bytes: the cached result stays valid
    assert guard.holds()


CONSTANTS = [("tau_v", 5.0), ("thresh", -60.0), ("v_rest", -55.0), ("refrac", 0.0)]


def _steps(neuron, x, n, multistep):
    with torch.no_grad():
        if multistep:
            return neuron.forward_multistep(x.expand(n, *x.shape).contiguous())
        return torch.stack([neuron(x) for _ in range(n)])


@pytest.mark.parametrize("cls", [LIFNeuron, AdaptiveLIFNeuron])
@pytest.mark.parametrize("name, value", CONSTANTS)
@pytest.mark.parametrize("multistep", [False, True])
@pytest.mark.parametrize("how", ["data", "numpy", "in_place", "assign"])
def test_edited_constant_equals_fresh_neuron(cls, name, value, multistep, how):
    x = torch.full((2, 10), 1.5)
    edited, fresh = cls(10), cls(10, **{name: value})
    with torch.no_grad():
        _steps(edited, x, 3, multistep)  # caches and fast steps built with the old value
        _steps(fresh, x, 3, multistep)
        if how == "data":
            getattr(edited, name).data.fill_(value)
        elif how == "numpy":
            getattr(edited, name).numpy().fill(value)
        elif how == "in_place":
            getattr(edited, name).fill_(value)
        else:
            setattr(edited, name, value)
        fresh.reset_state()
        edited.reset_state()
    expected = _steps(fresh, x, 40, multistep)
    got = _steps(edited, x, 40, multistep)
    assert torch.equal(got, expected)
    assert torch.equal(edited.v, fresh.v)


def test_data_edit_is_seen_by_run_layers():
    """The issue's case (after ``lif.tau_v.data.fill_(5.0)`` a neuron kept its old decay) through
    the fused network call: the same spikes as after an in-place edit."""

    def run(edit):
        inp, lif = Input(20), LIFNeuron(5, tau_v=100.0, thresh=-60.0)
        fc = Linear(20, 5, init="constant", init_kwargs={"val": 0.2}, propagation="event")
        g = torch.Generator().manual_seed(1)
        spikes = (torch.rand(200, 1, 20, generator=g) < 0.3).float()
        with torch.no_grad():
            run_layers(inp, [(lif, [(fc, inp)])], spikes[:50])
            edit(lif.tau_v)
            return run_layers(inp, [(lif, [(fc, inp)])], spikes[50:], record=[lif])[0]

    ref = run(lambda tau: tau.fill_(5.0))
    assert ref.sum() > 0 and not torch.equal(ref, run(lambda tau: None))
    assert torch.equal(run(lambda tau: tau.data.fill_(5.0)), ref)


def test_derived_values_of_other_devices_are_not_cached():
    """A .data write to a GPU constant moves neither its storage nor its version, and comparing
    its bytes would be a host sync: derived() recomputes values from non-CPU tensors at every
    call (a 'meta' tensor stands in for the device here; the .data-edit tests of this file run
    on the GPU with PYSNN_TEST_DEVICE=cuda)."""
    from pysnn.neuron import LIFNeuron

    neuron = LIFNeuron(3)
    calls = []

    def compute(t):
        calls.append(1)
        return t * 2

    cpu, meta = torch.ones(3), torch.ones(3, device="meta")
    neuron.derived("a", compute, cpu)
    neuron.derived("a", compute, cpu)
    assert len(calls) == 1  # cached
    neuron.derived("b", compute, meta)
    neuron.derived("b", compute, meta)
    assert len(calls) == 3  # computed at each call
