"""Writing your own modules: three neurons, a connection and a learning rule, as user code.

Everything below uses pysnn's public extension API only, the same one the built-in modules are
written on:

- a neuron subclasses ``Neuron``, declares ``register_constant`` / ``register_state`` in
  ``__init__`` and implements ``step(self, x) -> spikes``;
- a connection subclasses ``Connection`` and implements ``propagate(self, spikes) -> current``;
- a learning rule subclasses ``LearningRule`` and implements ``delta(self, group, reward)``.

Each module is simulated or trained next to the built-ins, and checked against a hand calculation.

    python docs/tutorials/13_custom_modules.py
"""

import math

import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.functional.decay import exp_decay
from pysnn.neuron import Input, LIFNeuron, Neuron
from pysnn.surrogate import FastSigmoid

torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# 1. A McCulloch-Pitts neuron: spikes when its input reaches the threshold; no memory.
class McCullochPitts(Neuron):
    def __init__(self, shape, dt=1.0, *, thresh=0.0, **kwargs):
        super().__init__(shape, dt, **kwargs)
        self.register_constant("thresh", thresh)  # live: edits take effect at the next step

    def step(self, x):
        return self.fire(x - self.thresh)  # exact Heaviside forward, surrogate gradient backward


# Trained by backpropagation (surrogate gradient) to compute the AND of two inputs.
inputs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
target = torch.tensor([[0.0], [0.0], [0.0], [1.0]])
gate = nn.Sequential(nn.Linear(2, 1), McCullochPitts(1, surrogate=FastSigmoid(scale=2.0)))
optimizer = torch.optim.Adam(gate.parameters(), lr=0.1)
for epoch in range(200):
    optimizer.zero_grad()
    loss = ((gate(inputs) - target) ** 2).sum()
    loss.backward()
    optimizer.step()
print("McCulloch-Pitts AND gate:", gate(inputs).flatten().tolist())
assert torch.equal(gate(inputs), target)


# ---------------------------------------------------------------------------------------------
# 2. A current-based LIF: each input spike opens an exponentially decaying synaptic current,
#    tau_syn dI/dt = -I (I jumps by the input), which charges the membrane:
#    v <- v_rest + (v - v_rest) exp(-dt/tau_v) + I dt / tau_v * R  (here R = tau_v / dt: v += I).
class CurrentLIF(Neuron):
    def __init__(self, shape, dt=1.0, *, tau_syn=5.0, tau_v=20.0, v_rest=0.0, thresh=1.0, **kwargs):
        super().__init__(shape, dt, **kwargs)
        self.register_constant("tau_syn", tau_syn, positive=True)
        self.register_constant("tau_v", tau_v, positive=True)
        self.register_constant("v_rest", v_rest)
        self.register_constant("thresh", thresh)
        self.register_state("i_syn", 0.0)  # synaptic current
        self.register_state("v", "v_rest")  # starts (and resets) at the live v_rest

    def step(self, x):
        # derived(): exp(-dt/tau) cached until tau_syn / tau_v / dt change (in place or assigned)
        syn = self.derived("syn", exp_decay, self.tau_syn, self.dt)
        mem = self.derived("mem", exp_decay, self.tau_v, self.dt)
        self.i_syn = self.i_syn * syn + x
        self.v = self.v_rest + (self.v - self.v_rest) * mem + self.i_syn
        s = self.fire(self.v - self.thresh)
        self.v = torch.where(s > 0, self.v_rest, self.v)  # reset to rest
        return s


# One input spike at t = 0 into a neuron that cannot fire: the membrane follows the closed form
# v(t) = sum_{k<=t} a^k b^(t-k) = (a^(t+1) - b^(t+1)) / (a - b), a = exp(-1/tau_syn), b = exp(-1/tau_v).
cuba = CurrentLIF(1, tau_syn=5.0, tau_v=20.0, thresh=100.0)
kick = torch.zeros(30, 1, 1)
kick[0] = 1.0
v = torch.stack([(cuba(x), cuba.v.clone())[1] for x in kick]).flatten()
a, b = math.exp(-1 / 5), math.exp(-1 / 20)
closed = torch.tensor([(a ** (t + 1) - b ** (t + 1)) / (a - b) for t in range(30)])
torch.testing.assert_close(v, closed)
print(f"current-based LIF: PSP peak {float(v.max()):.3f} at step {int(v.argmax())} (closed form)")

# Next to the built-in LIFNeuron (instantaneous synapse) on the same spike train: the synaptic
# current spreads each input over ~tau_syn, so the same weight drives more spikes.
spikes_in = (torch.rand(200, 4, 10) < 0.1).float()
fc = Linear(10, 3, init="uniform", init_kwargs={"a": 0.0, "b": 0.4})
builtin = LIFNeuron(3, thresh=1.0, v_rest=0.0, v_reset=0.0, tau_v=20.0, refrac=0.0)
custom = CurrentLIF(3, tau_syn=5.0, tau_v=20.0, thresh=1.0)
with torch.no_grad():
    currents = fc.forward_multistep(spikes_in)
    n_builtin = builtin.forward_multistep(currents).sum()
    n_custom = custom.forward_multistep(currents).sum()  # the base class loops over the steps
print(f"spikes from the same input: LIFNeuron {int(n_builtin)}, CurrentLIF {int(n_custom)}")
assert n_custom > n_builtin > 0


# ---------------------------------------------------------------------------------------------
# 3. An exponential integrate-and-fire neuron (Fourcaud-Trocme et al. 2003), forward Euler:
#    tau_v dv/dt = -(v - v_rest) + delta_t exp((v - v_t) / delta_t) + x,
#    spike and reset to v_reset when v >= v_peak.
class EIF(Neuron):
    def __init__(
        self,
        shape,
        dt=0.1,
        *,
        tau_v=10.0,
        v_rest=-65.0,
        v_t=-50.0,
        delta_t=2.0,
        v_peak=0.0,
        v_reset=-60.0,
        **kwargs,
    ):
        super().__init__(shape, dt, **kwargs)
        for name, value in [("v_rest", v_rest), ("v_t", v_t), ("v_peak", v_peak)]:
            self.register_constant(name, value)
        self.register_constant("v_reset", v_reset)
        self.register_constant("tau_v", tau_v, positive=True)
        self.register_constant("delta_t", delta_t, positive=True)
        self.register_state("v", "v_rest")

    def step(self, x):  # x: input (mV), held over the step
        spike_current = self.delta_t * torch.exp((self.v - self.v_t) / self.delta_t)
        dv = (-(self.v - self.v_rest) + spike_current + x) * (self.dt / self.tau_v)
        self.v = (self.v + dv).clamp_max(self.v_peak)  # the exponential diverges: cut at v_peak
        s = self.fire(self.v - self.v_peak)
        self.v = torch.where(s > 0, self.v_reset, self.v)
        return s


def eif_rate(drive, steps=5000, dt=0.1):
    """Firing rate (Hz) of the EIF under a constant drive, and of a plain Euler loop."""
    eif = EIF(1, dt=dt)
    x = torch.full((1, 1), drive)
    with torch.no_grad():
        count = sum(float(eif(x)) for _ in range(steps))
    v, reference = -65.0, 0
    for _ in range(steps):  # the same equations, written out with Python floats
        v += (-(v + 65.0) + 2.0 * math.exp((v + 50.0) / 2.0) + drive) * dt / 10.0
        v = min(v, 0.0)
        if v >= 0.0:
            v, reference = -60.0, reference + 1
    return count / (steps * dt / 1000), reference / (steps * dt / 1000)


# Rheobase: the drive at which the stable rest disappears, delta_t + v_t - v_rest - delta_t *
# ln(1) ... for these parameters x_rh = v_t - v_rest - delta_t = 13 mV.
for drive in (12.5, 14.0, 20.0):
    rate, reference = eif_rate(drive)
    print(f"EIF with a constant {drive} mV drive: {rate:.0f} Hz")
    assert abs(rate - reference) <= 2.0  # same spikes up to float32 rounding near threshold
assert eif_rate(12.5)[0] == 0 and eif_rate(14.0)[0] > 0
assert eif_rate(20.0)[0] > eif_rate(14.0)[0]

# It sits in any network next to the built-ins, batched and with spike traces for learning.
inp, eif = Input(10, dt=0.1), EIF(3)
drive_in = Linear(10, 3, dt=0.1, init="constant", init_kwargs={"val": 30.0})
with torch.no_grad():
    for t in range(500):
        eif(drive_in(inp((torch.rand(2, 10) < 0.05).float())))
print("EIF trace (kept by the base class for learning rules):", eif.trace[0].tolist())
assert eif.trace.shape == (2, 3)
