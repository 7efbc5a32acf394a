"""``pysnn.multistep.run_recurrent``: a recurrent population in one fused call, bit for bit the
step loop (issue #17: the Vogels-Abbott networks)."""

import pytest
import torch

import pysnn.native as native
from pysnn.multistep import run_recurrent
from pysnn.neuron import LIFNeuron
from pysnn.sparse import SparseLinear
from pysnn.synapse import ConductanceSynapse, ExponentialSynapse


def population(model, n=120, dtype=torch.float32, seed=0, batch=2):
    """``n`` LIF neurons, random sparse recurrent synapses onto two receptor groups (excitatory
    onto columns ``0..n-1``, inhibitory onto ``n..2n-1``), random weights and initial ``v``."""
    g = torch.Generator().manual_seed(seed)
    cuba = model == "cuba"
    lif = LIFNeuron(
        n, 0.1, thresh=-50.0, v_rest=-45.0, v_reset=-60.0, tau_v=20.0,
        refrac=5.0, surrogate=None,
    ).to(dtype)  # fmt: skip
    pairs = torch.unique(torch.randint(0, 2 * n * n, (10 * n,), generator=g))
    post, pre = pairs // n, pairs % n
    m = pairs.numel()
    exc, inh = torch.rand(m, generator=g), torch.rand(m, generator=g)
    weight = torch.where(post < n, exc * (4.0 if cuba else 1.2), -inh * (9.0 if cuba else 6.7))
    if not cuba:
        weight = weight.abs()  # conductances; the reversal potential makes them inhibitory
    fc = SparseLinear(n, 2 * n, torch.stack((post, pre)), 0.1, weight=weight).to(dtype)
    if cuba:
        synapses = (ExponentialSynapse(lif, 5.0), ExponentialSynapse(lif, 10.0))
    else:
        synapses = (ConductanceSynapse(lif, 5.0, 0.0), ConductanceSynapse(lif, 10.0, -80.0))
    for syn in synapses:
        syn.to(dtype)
    with torch.no_grad():
        lif(torch.zeros(batch, n, dtype=dtype))
        lif.v = (torch.rand(batch, n, generator=g) * 10 - 60).to(dtype)
    spikes = (torch.rand(batch, n, generator=g) < 0.1).to(dtype)
    return fc, synapses, lif, spikes


def run_and_state(fused, model, dtype, steps=(150, 100)):
    fc, synapses, lif, spikes = population(model, dtype=dtype)
    with native.enabled(fused), torch.no_grad():
        out = [run_recurrent(fc, synapses, lif, steps[0], spikes)]
        out.append(run_recurrent(fc, synapses, lif, steps[1]))  # continues from lif.spikes
    state = (lif.v, lif.trace, lif.refrac_count, lif.spikes, fc.arriving)
    return torch.cat(out), [t.clone() for t in state] + [s.g.clone() for s in synapses]


@pytest.mark.parametrize("model", ["cuba", "coba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_run_equals_the_step_loop_bit_for_bit(model, dtype):
    fused, fused_state = run_and_state(True, model, dtype)
    loop, loop_state = run_and_state(False, model, dtype)
    assert torch.equal(fused, loop)
    assert all(torch.equal(a, b) for a, b in zip(fused_state, loop_state))
    assert fused.sum() > 100  # the network is active, the comparison is not empty


def test_the_step_loop_is_what_the_docstring_says():
    """The fallback (and so the fused run) is ``s = lif(syn_e(x[:, 0]) + syn_i(x[:, 1]))`` with
    ``x = fc(s).view(B, 2, N)``, written out here by hand."""
    fc, synapses, lif, spikes = population("cuba", batch=1)
    fc2, synapses2, lif2, _ = population("cuba", batch=1)
    with torch.no_grad():
        got = run_recurrent(fc, synapses, lif, 40, spikes)
        s, expected = spikes, []
        for _ in range(40):
            x = fc2(s).view(1, 2, -1)
            s = lif2(synapses2[0](x[:, 0]) + synapses2[1](x[:, 1]))
            expected.append(s)
    assert torch.equal(got, torch.stack(expected))


def test_kept_references_keep_their_values_and_hooks_see_every_step():
    fc, synapses, lif, spikes = population("coba", batch=1)
    with torch.no_grad():
        spikes = run_recurrent(fc, synapses, lif, 1, spikes)[0]  # (creates the synapses' state)
        v0, g0 = lif.v, synapses[0].g
        v_before, g_before = v0.clone(), g0.clone()
        run_recurrent(fc, synapses, lif, 30, spikes)
        assert torch.equal(v0, v_before) and torch.equal(g0, g_before)
        assert not torch.equal(lif.v, v_before)
        calls = []
        handle = lif.register_forward_hook(lambda *a: calls.append(1))
        run_recurrent(fc, synapses, lif, 7)
        handle.remove()
    assert len(calls) == 7  # a hook must see each step: the step loop ran


def test_bad_arguments_are_refused_clearly():
    fc, synapses, lif, spikes = population("cuba", batch=1)
    other = LIFNeuron(120)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        run_recurrent(fc, synapses, lif, 0, spikes)
    with pytest.raises(ValueError, match="synapses must name at least one"):
        run_recurrent(fc, (), lif, 5, spikes)
    with pytest.raises(ValueError, match=r"synapses\[0\] does not feed neuron"):
        run_recurrent(fc, (ExponentialSynapse(other), synapses[1]), lif, 5, spikes)
    with pytest.raises(ValueError, match="spikes must be a"):
        run_recurrent(fc, synapses, lif, 5, torch.zeros(1, 7))
    with pytest.raises(ValueError, match="one group of 120 per synapse module"):
        run_recurrent(fc, synapses[:1], lif, 5, spikes)
    with pytest.raises(ValueError, match='record must be "raster" or "events"'):
        run_recurrent(fc, synapses, lif, 5, spikes, record="counts")


@pytest.mark.parametrize("fused", [True, False])
def test_event_recording_lists_the_raster_and_leaves_the_same_state(fused):
    """``record="events"`` gives the raster's spikes as ``(step, sample, neuron)`` rows, ordered
    by sample, step, neuron, and leaves every module as the raster run does."""
    outputs = []
    for record in ("raster", "events"):
        fc, synapses, lif, spikes = population("coba")
        with native.enabled(fused), torch.no_grad():
            out = run_recurrent(fc, synapses, lif, 120, spikes, record=record)
        state = [lif.v, lif.trace, lif.refrac_count, lif.spikes, fc.arriving, synapses[1].g]
        outputs.append((out, [t.clone() for t in state]))
    (raster, state_r), (events, state_e) = outputs
    step, sample, neuron = raster.nonzero().unbind(1)
    order = torch.argsort((sample * 120 + step) * raster.shape[2] + neuron)
    expected = torch.stack((step, sample, neuron), 1)[order]
    assert events.dtype == torch.int64 and torch.equal(events, expected)
    assert all(torch.equal(a, b) for a, b in zip(state_r, state_e))
    assert events.shape[0] > 50
