"""Synapse models against closed forms and independent numerical solutions of their ODEs."""

import math

import pytest
import torch

from pysnn.connection import Linear
from pysnn.network import SNNNetwork
from pysnn.neuron import IFNeuron, Input, IzhikevichNeuron, LIFNeuron
from pysnn.synapse import AlphaSynapse, ConductanceSynapse, ExponentialSynapse

DT, TAU_M = 0.1, 20.0


def quiet_lif(n=1, tau_v=TAU_M, dt=DT):
    """A LIF at 0 mV that never fires (for PSPs), float64."""
    return LIFNeuron(n, dt, thresh=1e9, v_rest=0.0, v_reset=0.0, tau_v=tau_v, refrac=0.0).double()


def run(syn, neuron, inputs, clamp=None):
    """Step ``neuron(syn(x))``; return the synapse outputs and the neuron's v after each step."""
    outs, vs = [], []
    with torch.no_grad():
        for x in inputs:
            if clamp is not None and neuron.v is not None:
                neuron.v = torch.full_like(neuron.v, clamp)
            out = syn(x)
            neuron(out)
            outs.append(out.clone())
            vs.append(neuron.v.clone())
    return torch.stack(outs), torch.stack(vs)


def kick(steps, weight, n=1):
    x = torch.zeros(steps, 1, n, dtype=torch.float64)
    x[0] = weight
    return x


def rk4(f, y0, t_end, h=1e-3):
    """Classical RK4 for y' = f(t, y) (Python floats), values at multiples of DT."""
    y, t, out, per = list(y0), 0.0, [], round(DT / h)
    for k in range(round(t_end / h)):
        k1 = f(t, y)
        k2 = f(t + h / 2, [a + h / 2 * b for a, b in zip(y, k1)])
        k3 = f(t + h / 2, [a + h / 2 * b for a, b in zip(y, k2)])
        k4 = f(t + h, [a + h * b for a, b in zip(y, k3)])
        y = [a + h / 6 * (p + 2 * q + 2 * r + s) for a, p, q, r, s in zip(y, k1, k2, k3, k4)]
        t += h
        if (k + 1) % per == 0:
            out.append(list(y))
    return out


def quad(f, a, b, n=2000):
    """Simpson's rule (Python floats)."""
    h = (b - a) / n
    s = f(a) + f(b) + sum((4 if k % 2 else 2) * f(a + k * h) for k in range(1, n))
    return s * h / 3


# ------------------------------------------------------------------------------- CUBA
@pytest.mark.parametrize("tau_s", [5.0, 20.0])  # 20: the limit tau_s = tau_m
def test_exponential_psp_is_the_difference_of_exponentials(tau_s):
    lif = quiet_lif()
    syn = ExponentialSynapse(lif, tau_s)
    _, v = run(syn, lif, kick(400, 2.0))
    t = torch.arange(1, 401, dtype=torch.float64) * DT
    if tau_s == TAU_M:
        closed = 2.0 * t / TAU_M * torch.exp(-t / TAU_M)
    else:
        closed = 2.0 * tau_s / (tau_s - TAU_M) * (torch.exp(-t / tau_s) - torch.exp(-t / TAU_M))
    torch.testing.assert_close(v.flatten(), closed, rtol=1e-12, atol=1e-13)
    assert float(v.max()) > 0.2  # a visible PSP (peak 0.31 mV for tau_s = 5 ms)


def test_exponential_current_decays_exactly_and_delivers_the_exact_charge():
    lif = IzhikevichNeuron(1, DT).double()  # holds its input over the step: drive="current"
    syn = ExponentialSynapse(lif, 5.0)
    assert syn.drive == "current"
    out, _ = run(syn, lif, kick(50, 3.0))
    for n in (0, 1, 17, 49):
        start = n * DT
        charge = quad(lambda t: 3.0 * math.exp(-t / 5.0), start, start + DT)
        assert float(out[n]) * DT == pytest.approx(charge, rel=1e-12)
    assert float(syn.g) == pytest.approx(3.0 * math.exp(-49 * DT / 5.0), rel=1e-12)


def test_exponential_synapses_sum_linearly_and_per_neuron_time_constants():
    lif = quiet_lif(3)
    syn = ExponentialSynapse(lif, torch.tensor([2.0, 5.0, 10.0], dtype=torch.float64))
    x = torch.zeros(100, 1, 3, dtype=torch.float64)
    x[0], x[30] = 1.0, 0.5
    _, v = run(syn, lif, x)
    t = torch.arange(1, 101, dtype=torch.float64) * DT
    for i, tau_s in enumerate((2.0, 5.0, 10.0)):

        def psp(t):
            return tau_s / (tau_s - TAU_M) * (torch.exp(-t / tau_s) - torch.exp(-t / TAU_M))

        later = (t - 30 * DT).clamp_min(0.0)
        expected = psp(t) + 0.5 * psp(later) * (t > 30 * DT)
        torch.testing.assert_close(v[:, 0, i], expected, rtol=1e-11, atol=1e-13)


# ------------------------------------------------------------------------------- alpha
def test_alpha_current_is_the_alpha_kernel():
    lif = IzhikevichNeuron(1, DT).double()
    syn = AlphaSynapse(lif, 2.0)
    g, out = [], []
    with torch.no_grad():
        for x in kick(80, 1.5):
            out.append(float(syn(x)))
            g.append(float(syn.g))

    def kernel(t):
        return 1.5 * t / 2.0 * math.exp(1 - t / 2.0)

    for n in (0, 5, 20, 79):
        assert g[n] == pytest.approx(kernel(n * DT), rel=1e-12, abs=1e-15)
        assert out[n] * DT == pytest.approx(quad(kernel, n * DT, (n + 1) * DT), rel=1e-10)
    assert max(g) == pytest.approx(1.5, rel=1e-3)  # peak w at t = tau


def test_alpha_psp_matches_an_rk4_solution():
    lif = quiet_lif()
    syn = AlphaSynapse(lif, 3.0)
    _, v = run(syn, lif, kick(300, 1.0))

    def f(t, y):
        return [(-y[0] + t / 3.0 * math.exp(1 - t / 3.0)) / TAU_M]

    reference = torch.tensor(rk4(f, [0.0], 300 * DT), dtype=torch.float64).flatten()
    torch.testing.assert_close(v.flatten(), reference, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------- COBA
def test_conductance_under_voltage_clamp():
    """With v held at -65 mV (its rest) the current is g (E - v) with g decaying exactly."""
    clamp, e_rev, tau_s, w = -65.0, 0.0, 5.0, 0.3
    lif = LIFNeuron(1, DT, thresh=1e9, v_rest=clamp, v_reset=clamp, tau_v=TAU_M).double()
    syn = ConductanceSynapse(lif, tau_s, e_rev)
    with torch.no_grad():
        for n, x in enumerate(kick(60, w)):
            if lif.v is not None:
                lif.v = torch.full_like(lif.v, clamp)  # the clamp
            out = syn(x)

            def current(u):
                return w * math.exp(-(n * DT + u) / tau_s) * (e_rev - clamp)

            assert float(syn.current()) == pytest.approx(current(0.0), rel=1e-12)
            assert float(syn.g) == pytest.approx(w * math.exp(-n * DT / tau_s), rel=1e-12)
            lif(out)
            # the membrane increment over the step: (1/tau_m) int e^{-(dt-u)/tau_m} I(u) du
            expected = quad(lambda u: math.exp(-(DT - u) / TAU_M) * current(u) / TAU_M, 0, DT)
            assert float(lif.v) - clamp == pytest.approx(expected, rel=1e-9)


def test_conductance_clamp_current_mode_delivers_the_exact_charge():
    izh = IzhikevichNeuron(1, DT, v_init=-70.0).double()
    syn = ConductanceSynapse(izh, 10.0, -80.0)
    outs = []
    with torch.no_grad():
        for x in kick(30, 0.5):
            outs.append(float(syn(x)))
            izh.v = torch.full((1, 1), -70.0, dtype=torch.float64)  # clamp (before its step)
    for n in (0, 12, 29):
        charge = quad(lambda t: 0.5 * math.exp(-t / 10.0) * (-80.0 + 70.0), n * DT, (n + 1) * DT)
        assert outs[n] * DT == pytest.approx(charge, rel=1e-12)


def test_conductance_lif_converges_to_the_ode_solution():
    """Excitatory and inhibitory conductances into a LIF (Brian2's COBA membrane) against RK4:
    first order in dt (the driving force is held over a step)."""
    v_rest, e_e, e_i, tau_e, tau_i = -60.0, 0.0, -80.0, 5.0, 10.0
    w_e, w_i, t_i = 0.4, 0.6, 2.0  # inhibitory spike at 2 ms

    def f(t, y):
        g_e = w_e * math.exp(-t / tau_e)
        g_i = w_i * math.exp(-(t - t_i) / tau_i) if t >= t_i else 0.0
        return [(-(y[0] - v_rest) + g_e * (e_e - y[0]) + g_i * (e_i - y[0])) / TAU_M]

    reference = torch.tensor(rk4(f, [v_rest], 20.0), dtype=torch.float64).flatten()
    errors = []
    for dt in (0.1, 0.05):
        lif = LIFNeuron(1, dt, thresh=1e9, v_rest=v_rest, v_reset=v_rest, tau_v=TAU_M)
        lif = lif.double()
        syn_e, syn_i = ConductanceSynapse(lif, tau_e, e_e), ConductanceSynapse(lif, tau_i, e_i)
        steps = round(20.0 / dt)
        x_e, x_i = kick(steps, w_e), torch.zeros(steps, 1, 1, dtype=torch.float64)
        x_i[round(t_i / dt)] = w_i
        v = []
        with torch.no_grad():
            for a, b in zip(x_e, x_i):
                lif(syn_e(a) + syn_i(b))
                v.append(float(lif.v))
        sampled = torch.tensor(v[round(DT / dt) - 1 :: round(DT / dt)], dtype=torch.float64)
        errors.append(float((sampled - reference).abs().max()))
    assert float(reference.max()) - v_rest > 1.0  # a real PSP
    assert errors[0] < 5e-3
    assert errors[1] == pytest.approx(errors[0] / 2, rel=0.1)  # first order


# ------------------------------------------------------------------------------- state
class Net(SNNNetwork):
    def __init__(self):
        super().__init__()
        self.inp = Input(4)
        self.fc = Linear(4, 3, init="uniform", init_kwargs={"a": 0.0, "b": 2.0})
        self.lif = LIFNeuron(3, thresh=-60.0)
        self.syn = AlphaSynapse(self.lif, 2.0)
        self.cond = ConductanceSynapse(self.lif, 5.0, 0.0)

    def forward(self, x):
        current = self.fc(self.inp(x))
        return self.lif(self.syn(current) + self.cond(current * 0.1))


def test_state_like_neuron_state():
    torch.manual_seed(0)
    net = Net()
    x = (torch.rand(20, 2, 4) < 0.5).float()
    with torch.no_grad():
        first = torch.stack([net(s) for s in x])
        assert first.sum() > 0 and net.syn.g.shape == (2, 3)
        net.reset_state()  # reaches the synapses
        assert torch.equal(net.syn.g, torch.zeros(2, 3)) and torch.equal(net.cond.g, net.syn.h)
        again = torch.stack([net(s) for s in x])
        assert torch.equal(first, again)
        net(x[0, :1])  # a new batch size: fresh state
        assert net.syn.g.shape == (1, 3)
    keys = set(net.state_dict())
    assert {"syn.tau_syn", "cond.tau_syn", "cond.e_rev"} <= keys
    assert not any(k.startswith(("syn.lif", "cond.lif")) or k.endswith(".g") for k in keys)
    assert len(list(net.parameters())) == 1  # the weight, once
    net.double()
    assert net.syn.tau_syn.dtype == torch.float64
    net.reset_state()
    with torch.no_grad():
        out = torch.stack([net(s.double()) for s in x])
    assert out.dtype == torch.float64 and torch.equal(out, first.double())


def test_multistep_and_gradients():
    torch.manual_seed(1)
    lif = LIFNeuron(3, thresh=-64.0)
    syn = ExponentialSynapse(lif, 4.0)
    x = torch.rand(15, 2, 3)
    with torch.no_grad():
        stepped = torch.stack([syn(s) for s in x])
        syn.reset_state()
        block = syn.forward_multistep(x)
    torch.testing.assert_close(block, stepped)
    syn.reset_state()
    lif.reset_state()
    w = torch.ones(3, requires_grad=True)
    spikes = torch.stack([lif(syn(s * w)) for s in x])
    spikes.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_constants_and_dt_are_live():
    lif = quiet_lif()
    syn = ExponentialSynapse(lif, 5.0)
    syn(torch.ones(1, 1, dtype=torch.float64))
    lif.tau_v = 10.0  # the synapse reads the neuron's tau_v live
    syn.tau_syn = 2.0
    syn.reset_state()
    out = float(syn(torch.ones(1, 1, dtype=torch.float64)))
    a, b = math.exp(-DT / 2.0), math.exp(-DT / 10.0)
    assert out == pytest.approx(2.0 / (2.0 - 10.0) * (a - b), rel=1e-12)
    lif.dt = 0.2
    assert syn.dt == 0.2
    with pytest.raises(ValueError, match="neuron's dt"):
        syn.dt = 0.5


def test_into_a_leaky_readout():
    """A non-spiking LIReadout has the LIF membrane: the PSP is the difference of exponentials."""
    from pysnn.readout import LIReadout

    readout = LIReadout(1, DT, tau_v=TAU_M).double()
    syn = ExponentialSynapse(readout, 5.0)
    with torch.no_grad():
        v = torch.stack([readout(syn(x)) for x in kick(50, 1.0)]).flatten()
    t = torch.arange(1, 51, dtype=torch.float64) * DT
    closed = 5.0 / (5.0 - TAU_M) * (torch.exp(-t / 5.0) - torch.exp(-t / TAU_M))
    torch.testing.assert_close(v, closed, rtol=1e-12, atol=1e-14)


def test_errors():
    with pytest.raises(TypeError, match="neuron must be"):
        ExponentialSynapse(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="drive"):
        ExponentialSynapse(LIFNeuron(2), drive="voltage")
    with pytest.raises(ValueError, match="no leak"):
        ExponentialSynapse(IFNeuron(2))
    with pytest.raises(ValueError, match="no membrane time constant tau_v|has none"):
        AlphaSynapse(IzhikevichNeuron(2), drive="increment")
    with pytest.raises(ValueError, match="membrane potential 'v'"):
        ConductanceSynapse(Input(2))
    with pytest.raises(ValueError, match="tau_syn"):
        ExponentialSynapse(LIFNeuron(2), tau_syn=0.0)
    lif = LIFNeuron(2)
    syn = ExponentialSynapse(lif)
    with pytest.raises(ValueError, match="shape"):
        syn(torch.ones(1, 3))
    lif.tau_v = math.inf
    with pytest.raises(ValueError, match="no leak"):
        syn(torch.ones(1, 2))
