"""Diehl & Cook (2015) model: structure, short learning run, checkpoint/resume."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from pysnn.models import DiehlCook2015

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_stdp.py"


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_stdp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_structure_and_normalisation():
    net = DiehlCook2015(n_neurons=20)
    torch.testing.assert_close(net.fc.weight.sum(1), torch.full((20,), 78.4))
    assert torch.equal(net.e2i.weight, 22.5 * torch.eye(20))
    assert torch.equal(net.i2e.weight, -120.0 * (1 - torch.eye(20)))
    assert net.fc.wmin == 0.0 and net.fc.wmax == 1.0


def test_inhibitory_neurons_mirror_excitatory_spikes():
    # With +22.5 mV one-to-one, an inhibitory neuron (rest -60, threshold -40) fires in the same
    # step as its excitatory partner: its refractory period (2 ms) ends before the partner's (5 ms).
    torch.manual_seed(0)
    net = DiehlCook2015(n_neurons=30).eval()
    x = (torch.rand(200, 2, 784) < 0.1).float()
    with torch.no_grad():
        for xt in x:
            exc = net(xt)
            assert torch.equal(net.inh.spikes, exc)


def test_lateral_inhibition_is_one_step_later():
    net = DiehlCook2015(n_neurons=3, inh_weight=10.0).eval()
    with torch.no_grad():
        net.fc.weight.zero_()
        net(torch.zeros(1, 784))
        net.exc.v.fill_(-65.0)
        net.exc.v[0, 0] = -51.0  # neuron 0 fires on the next step
        exc = net(torch.zeros(1, 784))
        assert exc.tolist() == [[1.0, 0.0, 0.0]]
        v_before = net.exc.v.clone()
        net(torch.zeros(1, 784))
        # Neurons 1, 2 got -10 mV one step later; neuron 0 (its own partner excluded) did not.
        decay = torch.exp(torch.tensor(-1.0 / 100.0))
        expected = -65.0 + (v_before + 65.0) * decay
        expected[0, 1:] -= 10.0
        torch.testing.assert_close(net.exc.v[:, 1:], expected[:, 1:])


def kernel(tau_s, tau_m, dt=1.0):
    """Closed form: the increment of v over one step per unit of g(E - v) held over the step,
    (1 / tau_m) * int_0^dt exp(-(dt - s) / tau_m) exp(-s / tau_s) ds."""
    return (math.exp(-dt / tau_s) - math.exp(-dt / tau_m)) * tau_s / (tau_s - tau_m)


def test_conductance_synapses_as_in_the_paper():
    net = DiehlCook2015(n_neurons=3, synapses="conductance", wmax=200.0, norm=None).eval()
    assert torch.equal(net.e2i.weight, 10.4 * torch.eye(3))
    assert torch.equal(net.i2e.weight, 17.0 * (1 - torch.eye(3)))  # a positive conductance
    assert float(net.syn_inh.e_rev) == -100.0 and float(net.syn_input.e_rev) == 0.0
    assert float(net.syn_input.tau_syn) == 1.0 and float(net.syn_inh.tau_syn) == 2.0
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.weight[0, 0] = 100.0  # input 0 -> excitatory neuron 0 only
        x = torch.zeros(1, 784)
        x[0, 0] = 1.0
        exc = net(x)
        # g_e = 100 from rest: v = -65 + k(1, 100) * 100 * (0 - (-65)) = -24.2 > -52: a spike,
        # and the partner: -60 + k(1, 10) * 10.4 * 60 = -22.8 > -40: a spike in the same step
        assert -65.0 + kernel(1.0, 100.0) * 100.0 * 65.0 > -52.0
        assert -60.0 + kernel(1.0, 10.0) * 10.4 * 60.0 > -40.0
        assert exc.tolist() == [[1.0, 0.0, 0.0]] and net.inh.spikes.tolist() == [[1.0, 0.0, 0.0]]
        net(torch.zeros(1, 784))
    # one step later neurons 1 and 2 (at rest, -65 mV) get g_i = 17 towards -100 mV
    expected = -65.0 + kernel(2.0, 100.0) * 17.0 * (-100.0 + 65.0)
    torch.testing.assert_close(net.exc.v[0, 1:], torch.full((2,), expected), rtol=0, atol=1e-4)
    assert abs(expected + 65.0) > 4.0  # 4.66 mV of inhibition
    assert bool((net.syn_inh.g[0, 1:] > 0).all())
    net.reset_state()  # reaches the synapses
    assert net.syn_inh.g is None or not bool(net.syn_inh.g.any())
    with pytest.raises(ValueError, match="synapses"):
        DiehlCook2015(n_neurons=3, synapses="cuba")


@pytest.mark.parametrize("delay_steps", [0, 1])
def test_inhibition_delay_gives_the_codes_loop(delay_steps):
    """Hand timing of the winner-take-all loop: neuron 0 fires at step n; its inhibitory partner
    fires at n + delay (the conductance 10.4 lifts it from -60 mV past -40 mV in one step, see
    above), and neurons 1 and 2 first feel g_i one step after that. ``inhibition_delay = dt``:
    the authors' code (Brian's schedule), partner at n + 1, the others inhibited from n + 2."""
    dt = 0.5
    net = DiehlCook2015(
        n_neurons=3,
        dt=dt,
        synapses="conductance",
        wmax=200.0,
        norm=None,
        inhibition_delay=delay_steps * dt,
    ).eval()
    assert float(net.e2i.delay) == delay_steps * dt
    exc_at, inh_at, g_at = [], [], []
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.weight[0, 0] = 100.0
        x = torch.zeros(6, 1, 784)
        x[1, 0, 0] = 1.0  # input 0 -> excitatory neuron 0 at step 1 only
        for t, xt in enumerate(x):
            exc = net(xt)
            if exc[0, 0]:
                exc_at.append(t)
            if net.inh.spikes[0, 0]:
                inh_at.append(t)
            if net.syn_inh.g[0, 1:].gt(0).all():
                g_at.append(t)
    assert exc_at == [1]
    assert inh_at == [1 + delay_steps]
    assert g_at[0] == 2 + delay_steps
    with pytest.raises(ValueError, match="inhibition_delay must be a finite number >= 0"):
        DiehlCook2015(n_neurons=3, inhibition_delay=-0.5)


# Short runs on the bundled sample (40 neurons, 300 training digits of 100 ms, one at a time),
# accuracy on 200 test digits (chance 0.1 +- 0.02), measured with seeds 1-3:
#   current:     all-activity 0.26 / 0.39 / 0.26, proportion weighting 0.32 / 0.395 / 0.275
#   conductance: all-activity 0.25 / 0.365 / 0.325, proportion weighting 0.29 / 0.425 / 0.30
# (the conductance runs take ~10x longer: weaker input, more digits shown again).
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("synapses", ["current", "conductance"])
def test_short_training_run_learns(synapses, seed):
    example = load_example()
    args = [
        "--n-neurons",
        "40",
        "--n-train",
        "300",
        "--n-assign",
        "300",
        "--n-test",
        "200",
        "--time",
        "100",
        "--batch-size",
        "1",
        "--quiet",
        "--seed",
        str(seed),
        "--update-interval",
        "100",
        "--synapses",
        synapses,
    ]
    torch.manual_seed(seed)
    initial = DiehlCook2015(n_neurons=40, synapses=synapses).fc.weight.detach().clone()
    trainer_holder = {}
    original = example.Trainer

    class Spy(original):
        def __init__(self, a):
            super().__init__(a)
            trainer_holder["t"] = self

    example.Trainer = Spy
    results = example.main(args)
    net = trainer_holder["t"].net
    assert results["accuracy_all_activity"] > 0.2
    assert results["accuracy_proportion_weighting"] > 0.2
    assert results["seed"] == seed and results["synapses"] == synapses
    assert not torch.allclose(net.fc.weight.detach(), initial)
    norm = 78.4 if synapses == "current" else 78.0  # BindsNET's, the authors' code's
    torch.testing.assert_close(net.fc.weight.sum(1), torch.full((40,), norm))
    # several neurons fired and raised their thresholds (not a single winner)
    assert (net.exc.theta > 0).sum() >= 5


def test_checkpoint_resume_is_identical(tmp_path):
    example = load_example()
    common = [
        "--n-neurons",
        "10",
        "--n-test",
        "20",
        "--n-assign",
        "20",
        "--time",
        "30",
        "--batch-size",
        "4",
        "--quiet",
        "--seed",
        "3",
        "--checkpoint-every",
        "5",
        "--update-interval",
        "10",
    ]
    full = example.main(common + ["--n-train", "20", "--checkpoint", str(tmp_path / "a.pt")])
    # Interrupted run: 10 digits, then resume to 20 from the checkpoint.
    example.main(
        common + ["--n-train", "20", "--checkpoint", str(tmp_path / "b.pt"), "--stop-after", "10"]
    )
    resumed = example.main(
        common + ["--n-train", "20", "--checkpoint", str(tmp_path / "b.pt"), "--resume"]
    )
    # pysnn.checkpoint files: they load without running code (weights_only=True)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["extra"]["position"] == b["extra"]["position"] == 20
    for key in a["parameters"]:
        assert torch.equal(a["parameters"][key], b["parameters"][key]), key
    assert full["accuracy_all_activity"] == resumed["accuracy_all_activity"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="norm must be a positive number"):
        DiehlCook2015(norm=-1.0)


def test_learning_defaults_and_the_authors_rule():
    from pysnn.learning import STDP, TripletSTDP

    current, conductance = DiehlCook2015(n_neurons=4), DiehlCook2015(
        n_neurons=4, synapses="conductance"
    )
    assert (current.rule, current.norm, type(current.stdp)) == ("pair", 78.4, STDP)
    assert (conductance.rule, conductance.norm, type(conductance.stdp)) == ("pair", 78.0, STDP)
    assert DiehlCook2015(n_neurons=4, norm=None).norm is None
    net = DiehlCook2015(n_neurons=2, synapses="conductance", rule="triplet", norm=None)
    rule = net.stdp
    assert isinstance(rule, TripletSTDP) and rule.interaction == "nearest"
    assert (rule.a2_plus, rule.a3_plus, rule.a2_minus, rule.a3_minus) == (0.0, 1e-2, 1e-4, 0.0)
    assert (rule.tau_plus, rule.tau_minus, rule.tau_y) == (20.0, 20.0, 40.0)
    # the authors' code: potentiation = nu_post * pre * post2 (the slow post trace before the
    # spike), so the first postsynaptic spike of a digit potentiates nothing; the second does
    with torch.no_grad():
        net.fc.weight.fill_(0.5)
        x = torch.zeros(1, 784)
        x[0, 0] = 1.0
        net(torch.zeros(1, 784))
        net.exc.v.fill_(-40.0)  # both fire now
        net(x)
        assert net.exc.spikes.sum() == 2
        # depression only (nu_pre * post1, post1 reset to 1 by this step's spike): 0.5 - 1e-4
        torch.testing.assert_close(net.fc.weight[:, 0], torch.full((2,), 0.5 - 1e-4))
        for _ in range(6):  # past the 5 ms refractory period
            net(torch.zeros(1, 784))
        net.exc.v.fill_(-40.0)
        net(x)  # the second spike: potentiation nu_post * 1 * exp(-7 ms / 40 ms)
        assert net.exc.spikes.sum() == 2
        expected = 0.5 - 2e-4 + 1e-2 * math.exp(-7.0 / 40.0)
        torch.testing.assert_close(net.fc.weight[:, 0], torch.full((2,), expected))
    with pytest.raises(ValueError, match="rule"):
        DiehlCook2015(n_neurons=2, rule="bcm")


def test_theta_relaxes_as_in_the_authors_code():
    """The code's threshold offset theta_c = theta + 20 mV relaxes towards 0 during the 350 ms
    presentation and the 150 ms rest after it: closed form, with and without a spike."""
    tau = 1000.0  # short enough for the relaxation to show in float32
    net = DiehlCook2015(n_neurons=3, synapses="conductance", tau_theta=tau, norm=None, wmax=200.0)
    assert (net.theta_offset, net.rest) == (20.0, 150.0)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.exc.theta.copy_(torch.tensor([0.0, 5.0, -3.0]))
    net.run(torch.zeros(350, 1, 784))  # no input, no spike
    expected = [(t + 20.0) * math.exp(-500.0 / tau) - 20.0 for t in (0.0, 5.0, -3.0)]
    torch.testing.assert_close(net.exc.theta, torch.tensor(expected), rtol=0, atol=1e-4)

    # one spike of neuron 0 in the first step: theta_plus = 0.05 mV added after that step's
    # relaxation, then relaxed over the other 349 ms and the rest
    with torch.no_grad():
        net.exc.theta.zero_()
        net.fc.weight[0, 0] = 100.0
    x = torch.zeros(350, 1, 784)
    x[0, 0, 0] = 1.0
    counts = net.run(x)
    assert counts.tolist() == [[1.0, 0.0, 0.0]]
    code = [20.0 * math.exp(-500.0 / tau) - 20.0] * 3
    code[0] += 0.05 * math.exp(-499.0 / tau)
    torch.testing.assert_close(net.exc.theta, torch.tensor(code), rtol=0, atol=1e-4)
    assert abs(code[0] - code[1]) > 0.01  # the spike shows

    net.eval()  # frozen for assignment and test
    before = net.exc.theta.clone()
    net.run(x)
    assert torch.equal(net.exc.theta, before)


def test_current_form_keeps_bindsnets_threshold():
    net = DiehlCook2015(n_neurons=3, tau_theta=1000.0, norm=None)
    assert (net.theta_offset, net.rest) == (0.0, 0.0)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.exc.theta.fill_(4.0)
    net.run(torch.zeros(350, 1, 784))
    # the neuron's own relaxation towards 0 over 350 steps, nothing more
    decay = torch.tensor(math.exp(-1.0 / 1000.0))
    expected = torch.tensor([4.0] * 3)
    for _ in range(350):
        expected = expected * decay
    torch.testing.assert_close(net.exc.theta, expected, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="theta_offset"):
        DiehlCook2015(n_neurons=3, theta_offset=-1.0)
    with pytest.raises(TypeError, match="rest"):
        DiehlCook2015(n_neurons=3, rest="150")
    with pytest.raises(ValueError, match="presented"):
        net.relax_theta(-350.0)
