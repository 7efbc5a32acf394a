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

import itertools
import math

import torch
from torch import nn

from pysnn.connection import Connection, Linear
from pysnn.functional.decay import exp_decay
from pysnn.learning import STDP, LearningRule
from pysnn.neuron import Input, LIFNeuron, Neuron
from pysnn.surrogate import FastSigmoid

torch.manual_seed(0)


# %%
# 1. A McCulloch-Pitts neuron: spikes when its input reaches the threshold; no memory.
class McCullochPitts(Neuron):
    def __init__(self, shape, dt=1.0, *, thresh=0.0, **kwargs):
        super().__init__(shape, dt, **kwargs)
        self.register_constant("thresh", thresh)  # live: edits take effect at the next step

    def step(self, x):
        return self.fire(x - self.thresh)  # exact Heaviside forward, surrogate gradient backward


# %%
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


# %%
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


# %%
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

# %%
# Next to the built-in LIFNeuron (instantaneous synapse) on the same spike train: the synaptic
# current spreads each input over ~tau_syn, so the same weight drives more spikes.
spikes_in = (torch.rand(200, 4, 10) < 0.1).float()
fc = Linear(10, 3, init="uniform", init_kwargs={"a": 0.0, "b": 0.4})
builtin = LIFNeuron(3, thresh=1.0, v_rest=0.0, v_reset=0.0, tau_v=20.0, refrac=0.0)
custom = CurrentLIF(3, tau_syn=5.0, tau_v=20.0, thresh=1.0)
with torch.no_grad():
    currents = fc.forward_multistep(spikes_in)
    n_builtin = builtin.forward_multistep(currents).sum()
    n_custom = custom.forward_multistep(currents).sum()  # a kernel generated from its step
print(f"spikes from the same input: LIFNeuron {int(n_builtin)}, CurrentLIF {int(n_custom)}")
assert n_custom > n_builtin > 0


# %%
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


# %%
# Rheobase: the drive at which the stable rest disappears, delta_t + v_t - v_rest - delta_t *
# ln(1) ... for these parameters x_rh = v_t - v_rest - delta_t = 13 mV.
for drive in (12.5, 14.0, 20.0):
    rate, reference = eif_rate(drive)
    print(f"EIF with a constant {drive} mV drive: {rate:.0f} Hz")
    assert abs(rate - reference) <= 2.0  # same spikes up to float32 rounding near threshold
assert eif_rate(12.5)[0] == 0 and eif_rate(14.0)[0] > 0
assert eif_rate(20.0)[0] > eif_rate(14.0)[0]

# %%
# It sits in any network next to the built-ins, batched and with spike traces for learning.
inp, eif = Input(10, dt=0.1), EIF(3)
drive_in = Linear(10, 3, dt=0.1, init="constant", init_kwargs={"val": 30.0})
with torch.no_grad():
    for t in range(500):
        eif(drive_in(inp((torch.rand(2, 10) < 0.05).float())))
print("EIF trace (kept by the base class for learning rules):", eif.trace[0].tolist())
assert eif.trace.shape == (2, 3)


# %%
# 4. A one-to-one connection: presynaptic neuron j drives postsynaptic neuron j only,
#    I_j(t) = gain_j s_j(t - d_j), with a learnable gain and a shared or per-neuron delay d_j.
class OneToOne(Connection):
    """One-to-one connection with a learnable per-neuron gain.

    Args:
        n: number of neurons on each side; ``forward`` maps spikes ``(B, n)`` to input ``(B, n)``.
        dt: time step (ms).
        delay: delay (ms), >= 0: a number shared by all synapses or an ``(n,)`` tensor, one per
            neuron; rounded to whole steps by the base class.
        gain: initial gain (mV per spike): a number or an ``(n,)`` tensor (an ``nn.Parameter``).
    """

    def __init__(self, n, dt=1.0, delay=0.0, *, gain=1.0):
        super().__init__(n, n, dt, delay, delay_shape=(n,))
        gain = torch.as_tensor(gain, dtype=torch.get_default_dtype())
        if gain.dim() > 1 or gain.numel() not in (1, n):
            raise ValueError(
                f"gain must be a number or an ({n},) tensor (mV per spike), "
                f"got shape {tuple(gain.shape)}"
            )
        self.gain = nn.Parameter(gain.expand(n).clone())

    def propagate(self, arriving):  # (N, n) spikes arriving now, either delay kind -> (N, n) mV
        return arriving * self.gain


# %%
# Simulated in front of every neuron above and the built-in LIFNeuron, batched, step by step and
# in blocks (forward_multistep). By hand: neuron j receives gain_j * s_j(t - d_j).
T, B = 30, 4
spikes_in = (torch.rand(T, B, 3) < 0.2).float()
chains = [  # (postsynaptic neuron, dt in ms, gains in mV per spike)
    (lambda dt: McCullochPitts(3, dt, thresh=0.5), 1.0, [1.0, 1.0, 1.0]),
    (lambda dt: CurrentLIF(3, dt, thresh=1.0), 1.0, [0.6, 0.8, 1.2]),
    (lambda dt: EIF(3, dt), 0.1, [1500.0, 2000.0, 3000.0]),
    (lambda dt: LIFNeuron(3, dt, thresh=1.0, v_rest=0.0, v_reset=0.0, refrac=0.0), 1.0, [0.7] * 3),
]
for steps in ([2, 2, 2], [0, 3, 7]):  # a shared delay, then one per neuron
    by_hand = torch.zeros(T, B, 3)
    for j, d in enumerate(steps):
        by_hand[d:, :, j] = spikes_in[: T - d, :, j]
    for make_neuron, dt, gain in chains:
        delay = steps[0] * dt if len(set(steps)) == 1 else torch.tensor(steps) * dt  # ms
        conn, post = OneToOne(3, dt, delay, gain=torch.tensor(gain)), make_neuron(dt)
        with torch.no_grad():
            stepped = torch.stack([post(conn(x)) for x in spikes_in])
            conn.reset_state()
            post.reset_state()
            block = post.forward_multistep(conn.forward_multistep(spikes_in))
            post.reset_state()
            reference = post.forward_multistep(by_hand * torch.tensor(gain))
        assert torch.equal(block, stepped) and torch.equal(stepped, reference)
        assert stepped.sum() > 0
        if isinstance(post, McCullochPitts):  # fires exactly when a spike arrives
            assert torch.equal(stepped, by_hand)
    print(f"OneToOne, delays {steps} steps: every neuron's spikes match the hand-shifted input")

# %%
# Trained by backpropagation through time: the gains are learned so that neuron i, driven by
# 15 regular input spikes arriving after its own delay, fires exactly target_i spikes.
drive = torch.zeros(60, 1, 4)
drive[::4] = 1.0
target = torch.tensor([1.0, 3.0, 6.0, 9.0])
relay = OneToOne(4, delay=torch.tensor([0.0, 2.0, 4.0, 6.0]), gain=0.3)
cuba = CurrentLIF(4, tau_syn=5.0, tau_v=20.0, thresh=1.0)
optimizer = torch.optim.Adam(relay.parameters(), lr=0.02)
for epoch in range(300):
    relay.reset_state()
    cuba.reset_state()
    counts = cuba.forward_multistep(relay.forward_multistep(drive)).sum((0, 1))
    if torch.equal(counts, target):
        break
    optimizer.zero_grad()
    ((counts - target) ** 2).sum().backward()
    optimizer.step()
print(f"BPTT through OneToOne + CurrentLIF: {counts.tolist()} spikes after {epoch} epochs")
assert torch.equal(counts, target)


# %%
# 5. Learning rules and the user modules.
#
# (a) The built-in STDP trains a Linear into each user neuron, through a delay of 3 steps: it reads
#     the spikes and the trace the Neuron base class keeps. Checked against the pair sum of the
#     STDP window, over the recorded spike times (arrival = emission + delay):
#     dw_ij = mean_b [nu_post sum_{a <= p} e^{-(p - a) dt / tau_pre}
#                     - nu_pre sum_{p <= a} e^{-(a - p) dt / tau_post}].
def stdp_by_hand(pre, post, delay_steps, dt, nu_pre, nu_post, tau_pre=20.0, tau_post=20.0):
    """Pair-sum STDP (Python floats) from spike trains pre (T, B, n_in), post (T, B, n_out)."""
    n_steps, batch, n_in = pre.shape
    dw = torch.zeros(post.shape[2], n_in, dtype=torch.float64)
    for b, i, j in itertools.product(range(batch), range(post.shape[2]), range(n_in)):
        posts = post[:, b, i].nonzero().flatten().tolist()
        arrivals = [t + delay_steps for t in pre[:, b, j].nonzero().flatten().tolist()]
        for a, p in itertools.product([a for a in arrivals if a < n_steps], posts):
            if a <= p:
                dw[i, j] += nu_post * math.exp(-(p - a) * dt / tau_pre) / batch
            if p <= a:
                dw[i, j] -= nu_pre * math.exp(-(a - p) * dt / tau_post) / batch
    return dw


pre_spikes = torch.zeros(
    40, 2, 2, dtype=torch.float64
)  # input i drives neuron i strongly, the other one weakly
for t, b, j in [(5, 0, 0), (20, 0, 0), (8, 1, 0), (30, 1, 0), (2, 0, 1), (12, 0, 1), (24, 1, 1)]:
    pre_spikes[t, b, j] = 1.0
for make_neuron, dt, strong, weak in [
    (lambda dt: McCullochPitts(2, dt, thresh=0.5), 1.0, 1.0, 0.2),
    (lambda dt: CurrentLIF(2, dt, thresh=1.0), 1.0, 1.5, 0.2),
    (lambda dt: EIF(2, dt), 0.1, 8000.0, 100.0),
]:
    inp, post = Input(2, dt).double(), make_neuron(dt).double()  # float64 for the hand check
    fc = Linear(2, 2, dt, delay=3 * dt, dtype=torch.float64)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[strong, weak], [weak, strong]]))
    stdp = STDP(fc, inp, post, nu=(1e-3, 2e-3))
    w_start, post_spikes = fc.weight.detach().clone(), []
    with torch.no_grad():
        for x in pre_spikes:
            post_spikes.append(post(fc(inp(x))))
            stdp.step()
    post_spikes = torch.stack(post_spikes)
    dw = fc.weight.detach() - w_start
    for b, i in itertools.product(range(2), range(2)):  # first spike when the first input arrives
        first_input = pre_spikes[:, b, i].nonzero()
        assert int(post_spikes[:, b, i].nonzero()[0]) == int(first_input[0]) + 3
    by_hand = stdp_by_hand(pre_spikes, post_spikes, 3, dt, 1e-3, 2e-3)
    torch.testing.assert_close(dw, by_hand, rtol=0, atol=1e-10)
    assert dw.diagonal().gt(0).all()  # each input that makes a neuron fire is potentiated
    print(f"STDP into {type(post).__name__} through a 3-step delay: dw = {dw.tolist()}")


# %%
# (b) A voltage-based rule (a simplified Clopath et al. 2010), written on the public hooks only:
#     dw_ij = eta_plus x_ij [v_i - theta_plus]_+ - eta_minus a_ij [u_i - theta_minus]_+,
#     x the presynaptic trace and a the spikes arriving at the synapse (through the delays), v the
#     postsynaptic membrane potential (read from the neuron's state) and u a low-pass of v kept by
#     the rule: u <- u e^{-dt/tau_u} + (1 - e^{-dt/tau_u}) v, starting at the first v seen.
class VoltageSTDP(LearningRule):
    """Simplified Clopath rule: potentiation where a presynaptic trace meets a depolarised
    membrane, depression where a presynaptic spike arrives while the low-passed membrane is above
    theta_minus.

    Args:
        eta_plus, eta_minus: rates (1/mV) of potentiation and depression.
        theta_plus, theta_minus: voltage thresholds (mV) of potentiation and depression.
        tau_u: time constant (ms) of the low-pass u of the membrane potential.
        other arguments: see pysnn.learning.LearningRule; post must have a state ``v`` (mV).

    State: ``u`` (mV), ``(B, out)``.
    """

    state_names = ("u",)

    def __init__(
        self,
        connection=None,
        pre=None,
        post=None,
        *,
        eta_plus,
        eta_minus,
        theta_plus,
        theta_minus,
        tau_u=10.0,
        **kwargs,
    ):
        super().__init__(connection, pre, post, **kwargs)
        for group in self.groups:
            if "v" not in getattr(group.post, "state_names", ()):
                raise TypeError(
                    f"post must be a neuron with a membrane potential state 'v' (mV), got "
                    f"{type(group.post).__name__}"
                )
        if tau_u <= 0:
            raise ValueError(f"tau_u must be > 0 ms, got {tau_u}")
        self.eta_plus, self.eta_minus = eta_plus, eta_minus
        self.theta_plus, self.theta_minus, self.tau_u = theta_plus, theta_minus, tau_u

    def delta(self, group, reward):
        v = group.post_state("v")  # (B, out) mV after this step (a clear error before it ran)
        # the rule's own low-pass of v, starting at the first v (not at 0 mV)
        decay = math.exp(-group.dt / self.tau_u)
        u = group.state_or("u", v) * decay + (1.0 - decay) * v
        group.state["u"] = u
        potentiation = group.correlate((v - self.theta_plus).clamp_min(0.0), group.pre_trace())
        depression = group.correlate((u - self.theta_minus).clamp_min(0.0), group.arriving_spikes())
        return (self.eta_plus * potentiation - self.eta_minus * depression) * self.batch_factor(
            v.shape[0]
        )


# %%
# One run of 8 steps, batch 2, through a delay of 1 step, against the same formulas in Python
# floats (given the recorded membrane potentials).
rates = dict(eta_plus=0.1, eta_minus=0.05, theta_plus=0.3, theta_minus=0.1, tau_u=4.0)
inp, cuba = Input(3).double(), CurrentLIF(2, thresh=1.0).double()
fc = Linear(3, 2, delay=1.0, init="uniform", init_kwargs={"a": 0.1, "b": 0.2}, dtype=torch.float64)
rule = VoltageSTDP(fc, inp, cuba, **rates)
spikes_in = (torch.rand(8, 2, 3) < 0.5).double()
w_start, v_seen = fc.weight.detach().clone(), []
with torch.no_grad():
    for x in spikes_in:
        cuba(fc(inp(x)))
        rule.step()
        v_seen.append(cuba.v.tolist())
trace, u = [[0.0] * 3, [0.0] * 3], None
by_hand, terms = [[0.0] * 3 for _ in range(2)], [0.0, 0.0]
for t in range(8):
    synapse_trace = [row[:] for row in trace]  # the trace one step late (the delay)
    trace = [
        [trace[b][j] * math.exp(-1 / 20) + float(spikes_in[t, b, j]) for j in range(3)]
        for b in range(2)
    ]
    arriving = spikes_in[t - 1].tolist() if t >= 1 else [[0.0] * 3] * 2
    v = v_seen[t]
    k = math.exp(-1 / 4.0)
    u = v if u is None else [[u[b][i] * k + (1 - k) * v[b][i] for i in range(2)] for b in range(2)]
    for b, i, j in itertools.product(range(2), range(2), range(3)):
        plus = 0.1 * synapse_trace[b][j] * max(v[b][i] - 0.3, 0.0) / 2
        minus = 0.05 * arriving[b][j] * max(u[b][i] - 0.1, 0.0) / 2
        by_hand[i][j] += plus - minus
        terms[0], terms[1] = terms[0] + plus, terms[1] + minus
assert terms[0] > 0 and terms[1] > 0  # both terms at work
torch.testing.assert_close(fc.weight.detach() - w_start, torch.tensor(by_hand, dtype=torch.float64))
print("VoltageSTDP: 8 steps match the hand computation")


# %%
# Trained next to the built-in STDP, on copies of the same network (10 inputs into 2 CurrentLIF
# neurons) and the same input: inputs 0-4 fire at 0.1 per step and drive the neurons, inputs 5-9
# fire at 0.02. Under both rules every driving input's weight grows, and more than any other's.
spikes_in = (torch.rand(500, 8, 10) < torch.tensor([0.1] * 5 + [0.02] * 5)).float()
for name in ("VoltageSTDP", "STDP"):
    inp, cuba = Input(10), CurrentLIF(2, tau_syn=5.0, tau_v=20.0, thresh=1.0)
    fc = Linear(10, 2, wmin=0.0, wmax=1.0, init="constant", init_kwargs={"val": 0.08})
    if name == "STDP":
        rule = STDP(fc, inp, cuba, nu=(2e-3, 2e-3))
    else:
        rule = VoltageSTDP(
            fc, inp, cuba, eta_plus=2e-3, eta_minus=8e-3, theta_plus=0.5, theta_minus=0.2
        )
    with torch.no_grad():
        for x in spikes_in:
            cuba(fc(inp(x)))
            rule.step()
    dw = fc.weight.detach() - 0.08
    print(
        f"{name}: mean dw, driving inputs {float(dw[:, :5].mean()):.3f}, "
        f"others {float(dw[:, 5:].mean()):.3f}"
    )
    assert (dw[:, :5] > 0).all() and dw[:, :5].min() > dw[:, 5:].max()
