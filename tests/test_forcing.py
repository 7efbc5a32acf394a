"""Run options (pysnn.forcing): clamp, unclamp, inject_v, pysnn.network.run, masked connections.

Expected values are computed by hand from the LIF equations (dt = 1 ms, tau_v = 10 ms, so the
leak factor is exp(-0.1)); every LIF case runs on the fused CPU path and on the torch path
(inputs that require a gradient), and the CI runs this file again with PYSNN_NATIVE=0.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pysnn import native
from pysnn.connection import Linear
from pysnn.learning import STDP
from pysnn.network import SNNNetwork, run
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, IzhikevichNeuron, LIFNeuron, Neuron
from pysnn.readout import LIReadout

D = math.exp(-0.1)  # leak factor for tau_v = 10 ms, dt = 1 ms
TD = math.exp(-1 / 20)  # trace decay for tau_trace = 20 ms


def lif(n=3, **kw):
    options = dict(thresh=-60.0, v_rest=-65.0, v_reset=-70.0, tau_v=10.0, refrac=2.0)
    options.update(kw)
    return LIFNeuron(n, **options)


def step(neuron, x, path):
    """One step on the fused path (no grad) or on the torch path (input requiring a grad)."""
    if path == "fused":
        with torch.no_grad():
            return neuron(x)
    return neuron(x.clone().requires_grad_(True)).detach()


PATHS = ["fused", "torch"]
B = lambda *rows: torch.tensor(rows, dtype=torch.bool)  # noqa: E731


@pytest.mark.parametrize("path", PATHS)
def test_clamp_forces_a_real_spike_even_while_refractory(path):
    n = lif()
    zero = torch.zeros(2, 3)
    n.clamp(B([True, False, False], [False, True, False]))  # per sample (B, n)
    s = step(n, zero, path)
    assert s.tolist() == [[1, 0, 0], [0, 1, 0]]
    # reset and refractory as if fired; elsewhere the rest potential stays
    assert n.v.tolist() == [[-70, -65, -65], [-65, -70, -65]]
    assert n.refrac_count.tolist() == [[2, 0, 0], [0, 2, 0]]
    assert n.trace.tolist() == [[1, 0, 0], [0, 1, 0]]
    n.clamp(B(True, False, False))  # broadcast over the batch; neuron 0 of sample 0 refractory
    s = step(n, zero, path)
    assert s.tolist() == [[1, 0, 0], [1, 0, 0]]
    assert n.refrac_count.tolist() == [[2, 0, 0], [2, 1, 0]]
    torch.testing.assert_close(n.trace[0, 0], torch.tensor(1 + TD))
    torch.testing.assert_close(n.v[1, 1], torch.tensor(-65 - 5 * D))  # leaking back from reset
    s = step(n, zero, path)  # nothing pending: the clamp applied to one step only
    assert s.sum() == 0


@pytest.mark.parametrize("path", PATHS)
def test_unclamp_forbids_the_spike_without_reset(path):
    n = lif(2)
    drive = torch.tensor([[10.0, 10.0]])  # -65 + 10 = -55 mV >= -60: both would fire
    n.unclamp(B(True, False))
    s = step(n, drive, path)
    assert s.tolist() == [[0, 1]]
    assert n.v.tolist() == [[-55, -70]]  # no reset where forbidden
    assert n.refrac_count.tolist() == [[0, 2]]
    assert n.trace.tolist() == [[0, 1]]
    s = step(n, torch.zeros(1, 2), path)  # still above threshold after the leak: fires now
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.0]]))
    assert n.v[0, 0] == -70


@pytest.mark.parametrize("path", PATHS)
def test_unclamp_wins_over_clamp(path):
    n = lif(2)
    n.clamp(B(True, True))
    n.unclamp(B(True, False))
    s = step(n, torch.zeros(1, 2), path)
    assert s.tolist() == [[0, 1]]


@pytest.mark.parametrize("path", PATHS)
def test_inject_v_adds_before_the_step(path):
    n = lif(3)
    n.inject_v(torch.tensor([3.0, 6.0, 0.0]))
    n.inject_v(torch.tensor([[0.0, 0.0, 1.0]]))  # calls add up
    s = step(n, torch.zeros(1, 3), path)
    # v = -65 + delta * exp(-0.1); 6 mV reaches -59.57 >= -60
    assert s.tolist() == [[0, 1, 0]]
    expected = torch.tensor([[-65 + 3 * D, -70.0, -65 + 1 * D]])
    torch.testing.assert_close(n.v, expected)
    # while refractory the input is ignored but an injection is not: -65 + 15 e^-0.1 = -51.4
    n.inject_v(20.0)
    s = step(n, torch.full((1, 3), 100.0), path)
    assert s.tolist() == [[1, 1, 1]]  # neuron 1 refractory, fires from the injection alone


def test_fused_path_is_used_with_a_clamp(monkeypatch):
    if not native.available():
        pytest.skip("fused kernels not built here (the torch path is tested above)")
    calls = []
    original = native.lif_steps

    def spy(*args, **kwargs):
        calls.append(args[6])  # theta
        return original(*args, **kwargs)

    monkeypatch.setattr(native, "lif_steps", spy)
    n = lif(2)
    n.clamp(B(True, False))
    with torch.no_grad():
        n(torch.zeros(1, 2))
    assert calls and calls[0].tolist() == [[-math.inf, 0.0]]


def test_multistep_applies_a_pending_clamp_to_the_first_step_only():
    n = lif(2)
    n.clamp(B(False, True))
    with torch.no_grad():
        s = n.forward_multistep(torch.zeros(3, 1, 2))
    assert s[:, 0].tolist() == [[0, 1], [0, 0], [0, 0]]


def test_if_and_adaptive_threshold_follow_forced_spikes():
    n = IFNeuron(2, thresh=-60.0, v_reset=-70.0, refrac=0.0)
    n.clamp(B(True, False))
    with torch.no_grad():
        assert n(torch.zeros(1, 2)).tolist() == [[1, 0]]
    assert n.v.tolist() == [[-70, -65]]
    a = AdaptiveLIFNeuron(2, theta_plus=0.5, tau_theta=math.inf, theta_shared=True)
    a.clamp(B([True, False], [True, True]))
    with torch.no_grad():
        a(torch.zeros(2, 2))
    assert a.theta.tolist() == [1.0, 0.5]  # summed over the batch, as for natural spikes


def test_izhikevich_clamp_resets_and_jumps_u():
    n = IzhikevichNeuron(2)
    n.clamp(B(True, False))
    with torch.no_grad():
        s = n(torch.zeros(1, 2))
    assert s.tolist() == [[1, 0]]
    # from v = -65, u = -13, I = 0: two Euler half steps then u (Izhikevich's scheme)
    v, u = -65.0, -13.0
    for _ in range(2):
        v += 0.5 * (0.04 * v * v + 5 * v + 140 - u)
    u += 0.02 * (0.2 * v - u)
    torch.testing.assert_close(n.v, torch.tensor([[-65.0, v]]))
    torch.testing.assert_close(n.u, torch.tensor([[u + 8.0, u]]))


class HandLIF(Neuron):
    """A user-defined neuron written on the public API (spikes through self.fire)."""

    def __init__(self, shape):
        super().__init__(shape, surrogate=None)
        self.register_state("v", 0.0)

    def step(self, x):
        self.v = self.v * 0.5 + x
        s = self.fire(self.v - 1.0)
        self.v = self.v * (1 - s)
        return s


class NoFire(HandLIF):
    def step(self, x):
        self.v = self.v + x
        return (self.v >= 1.0).to(x.dtype)


def test_user_defined_neuron_gets_clamp_unclamp_and_inject():
    n = HandLIF(3)
    n.clamp(B(True, False, False))
    n.unclamp(B(False, True, False))
    n.inject_v(torch.tensor([0.0, 0.0, 0.75]))
    s = n(torch.tensor([[0.0, 2.0, 0.5]]))
    # v = (0 + inject) * 0.5 + x: [0, 2, 0.875]; neuron 0 forced, 1 forbidden, 2 below 1
    assert s.tolist() == [[1, 0, 0]]
    assert n.v.tolist() == [[0, 2, 0.875]]
    torch.testing.assert_close(n.trace, s)  # the trace follows the forced spikes


def test_a_step_without_the_hooks_raises_instead_of_ignoring_the_clamp():
    n = NoFire(2)
    n.clamp(B(True, False))
    with pytest.raises(RuntimeError, match=r"self.fire"):
        n(torch.zeros(1, 2))
    n.inject_v(1.0)  # an injection alone needs no hook
    assert n(torch.zeros(1, 2)).tolist() == [[1, 1]]
    inp = Input(2)
    inp.clamp(B(True, False))
    with pytest.raises(RuntimeError, match="Input.step .* put forced spikes into its input"):
        inp(torch.zeros(1, 2))


def test_bad_arguments():
    n = lif(3)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        n.clamp(torch.ones(3))
    with pytest.raises(TypeError, match="mask must be a bool torch.Tensor"):
        n.unclamp([True, False, True])
    with pytest.raises(ValueError, match=r"mask must have shape \(B, 3\) or \(3,\)"):
        n.clamp(torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="delta must be a number or a tensor"):
        n.inject_v("1")
    with pytest.raises(ValueError, match="delta must be finite"):
        n.inject_v(math.nan)
    with pytest.raises(ValueError, match=r"delta must have shape"):
        n.inject_v(torch.ones(2, 4))
    with pytest.raises(TypeError, match="does not spike"):
        LIReadout(3).clamp(torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="no membrane potential state 'v'"):
        Input(3).inject_v(1.0)
    n.clamp(torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="clamp given to LIFNeuron has batch size 4"):
        n(torch.zeros(2, 3))


def test_gradients_stay_finite_through_forced_spikes():
    n = lif(3)
    x = torch.full((2, 3), 3.0, requires_grad=True)
    n.clamp(B(True, False, False))
    n.unclamp(B(False, True, False))
    s = n(x)
    s2 = n(x * 2)
    (s.sum() + s2.sum() + n.v.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_stdp_sees_a_forced_spike_as_a_natural_one():
    """The learning caused by a clamped spike equals that of the same spike reached by input."""

    def trial(force):
        torch.manual_seed(0)
        inp, post = Input(4), lif(2)
        fc = Linear(4, 2, wmin=0.0, wmax=1.0, init="constant", init_kwargs={"val": 0.5})
        rule = STDP(connection=fc, pre=inp, post=post, nu=(0.01, 0.1))
        pre = torch.tensor([[[1.0, 0, 1, 0]], [[0.0, 1, 0, 0]], [[0.0, 0, 0, 0]]])
        drive = torch.zeros(3, 1, 2)
        with torch.no_grad():
            for t in range(3):
                if t == 1:
                    if force:
                        post.clamp(B(True, False))
                    else:
                        drive[1, 0, 0] = 20.0  # a natural spike of neuron 0 at the same step
                post(fc(inp(pre[t])) * 0 + drive[t])
                rule.step()
        return fc.weight.detach().clone(), post.trace.clone()

    forced_w, forced_trace = trial(True)
    natural_w, natural_trace = trial(False)
    torch.testing.assert_close(forced_w, natural_w)
    torch.testing.assert_close(forced_trace, natural_trace)
    # potentiation at the post spike (step 1): w += nu_post * pre trace
    assert forced_w[0, 0] > 0.5 and forced_w[1, 0] == 0.5


class TwoLayer(SNNNetwork):
    def __init__(self):
        super().__init__()
        self.inp = Input(4)
        self.fc = Linear(4, 2, init="constant", init_kwargs={"val": 0.0})
        self.exc = lif(2)
        self.add_layer("exc_layer", self.fc, self.exc)

    def forward(self, x):
        return self.exc(self.fc(self.inp(x)))


def test_run_maps_bindsnet_options():
    net = TwoLayer()
    inputs = torch.zeros(4, 2, 4)
    per_step = torch.zeros(4, 2, 2, dtype=torch.bool)
    per_step[2, 1, 1] = True
    with torch.no_grad():
        s = run(
            net,
            inputs,
            clamp={"exc_layer": B(True, False), net.exc: per_step},
            unclamp={"exc": lambda t: B(True, False) if t == 3 else None},
            injects_v={"exc": torch.tensor([[0.0, 0.0], [0.0, 6.0]])},
        )
    assert s.shape == (4, 2, 2)
    expected = torch.zeros(4, 2, 2)
    expected[0:3, :, 0] = 1  # clamped every step; unclamped at step 3
    expected[0, 1, 1] = 1  # 6 mV injected every step: -65 + 6 e^-0.1 >= -60 at step 0
    expected[2, 1, 1] = 1  # the per-step clamp at step 2 (refractory from step 0 is over)
    assert s.tolist() == expected.tolist()


def test_run_bad_arguments():
    net = TwoLayer()
    with pytest.raises(ValueError, match="neither a layer"):
        run(net, torch.zeros(2, 1, 4), clamp={"nope": B(True, True)})
    with pytest.raises(ValueError, match="has 3 steps"):
        run(net, torch.zeros(2, 1, 4), clamp={"exc": torch.zeros(3, 1, 2, dtype=torch.bool)})
    with pytest.raises(TypeError, match="is not a pysnn neuron"):
        run(net, torch.zeros(2, 1, 4), clamp={"fc": B(True, True)})
    with pytest.raises(TypeError, match="must be a dict"):
        run(net, torch.zeros(2, 1, 4), unclamp=[B(True, True)])
    with pytest.raises(ValueError, match=r"\(T, B, ...\)"):
        run(net, torch.zeros(4))


def test_masked_synapses_never_grow_under_stdp_with_clamped_targets():
    """BindsNET's connection masks: torch.nn.utils.prune; STDP driven by forced spikes."""
    torch.manual_seed(3)
    inp, post = Input(6), lif(3)
    fc = Linear(6, 3, wmin=0.0, wmax=1.0, init="constant", init_kwargs={"val": 0.2})
    mask = torch.ones(3, 6)
    mask[0, :3] = 0
    mask[2, 3:] = 0
    prune.custom_from_mask(fc, "weight", mask)
    rule = STDP(connection=fc, pre=inp, post=post, nu=(0.0, 0.05))
    with torch.no_grad():
        for t in range(20):
            post.clamp(torch.ones(3, dtype=torch.bool))  # every target fires every step
            post(fc(inp(torch.ones(2, 6))))
            rule.step()
    assert torch.all(fc.weight[mask == 0] == 0)
    assert torch.all(fc.weight[mask == 1] > 0.2)  # the others grew
    prune.remove(fc, "weight")
    assert torch.all(fc.weight[mask == 0] == 0)  # and stay at 0 once the mask is made permanent
    assert isinstance(fc.weight, nn.Parameter)


def _load_example(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_supervised_example_teaches_the_clamped_neuron():
    example = _load_example("mnist_supervised_stdp")
    args = example.parse_args(["--n-neurons", "20", "--time", "20", "--teach-every", "5"])
    model = example.Supervised(args)
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, :14] = 255  # digit 0: top half; digit 1: bottom half
    images[1, 14:] = 255
    before = model.net.fc.weight.detach().clone()
    model.net.train()
    counts = model.present(images, torch.tensor([3, 7]))
    # 2 neurons per class: one of 6, 7 taught for sample 0, one of 14, 15 for sample 1; each
    # forced at steps 0, 5, 10, 15
    assert (counts[0, 6:8] >= 4).any() and (counts[1, 14:16] >= 4).any()
    grown = (model.net.fc.weight.detach() - before).abs().sum(1) > 0
    assert grown[6:8].any() and grown[14:16].any()
    top = model.net.fc.weight.detach().reshape(20, 28, 28)[:, :14].sum((1, 2))
    taught = 6 + int(counts[0, 7] > counts[0, 6])
    assert top[taught] > before.reshape(20, 28, 28)[taught, :14].sum()  # moved to the top half


def test_inject_v_into_a_readout():
    readout = LIReadout(2, tau_v=math.inf)  # perfect integrator: v = sum of inputs
    readout.inject_v(torch.tensor([1.0, -2.0]))
    v = readout(torch.full((1, 2), 0.5))
    assert v.tolist() == [[1.5, -1.5]]
    assert readout(torch.full((1, 2), 0.5)).tolist() == [[2.0, -1.0]]  # once only
