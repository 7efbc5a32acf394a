"""Migrating from Brian2: the Vogels-Abbott CUBA network as Brian2 writes it, and its pysnn twin.

Brian2's ``examples/CUBA.py`` (Brette et al. 2007): 4000 LIF neurons, 80 % excitatory, random
connections with probability 2 %, exponential synaptic currents, dt = 0.1 ms, 1 s. The pysnn twin
uses the same synapses and initial potentials. The networks are chaotic, so spike times diverge
after a while; where Brian2 is installed this script checks the statistics (population rate
within 15 %, mean ISI CV within 0.1: the tolerances of ``benchmarks/vogels_abbott.py``).

    python docs/tutorials/16_from_brian2.py
"""

# %%
import torch

import pysnn
from pysnn.neuron import LIFNeuron
from pysnn.sparse import SparseLinear, fixed_probability
from pysnn.synapse import ExponentialSynapse

try:
    import brian2 as b2
except ImportError:  # the CI environment: pysnn only
    b2 = None

N, N_EXC, P, DT, STEPS = 4000, 3200, 0.02, 0.1, 10000  # dt in ms; 1 s
W_E, W_I = 60 * 0.27 / 10, -20 * 4.5 / 10  # mV: the jumps of Brian2's example
g = torch.Generator().manual_seed(0)
exc = fixed_probability(N_EXC, N, P, generator=g)  # (2, synapses): rows post, pre
inh = fixed_probability(N - N_EXC, N, P, generator=g)
v0 = -60.0 + torch.rand(N, generator=g) * 10.0  # uniform in [V_r, V_t]


def statistics(i, t):
    """Population rate (Hz) and mean ISI CV (neurons with >= 3 spikes) after 100 ms."""
    keep = t > 0.1
    i, t = i[keep], t[keep]
    rate = len(t) / N / 0.9
    cvs = []
    for neuron in torch.unique(i):
        isi = torch.diff(torch.sort(t[i == neuron]).values)
        if len(isi) >= 2:
            cvs.append(float(isi.std(correction=0) / isi.mean()))
    return rate, sum(cvs) / len(cvs)


# %%
# Brian2: one NeuronGroup with its equations, two Synapses, a SpikeMonitor, run().
if b2 is not None:
    b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = DT * b2.ms
    taum, taue, taui = 20 * b2.ms, 5 * b2.ms, 10 * b2.ms
    Vt, Vr, El = -50 * b2.mV, -60 * b2.mV, -49 * b2.mV
    eqs = """
    dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
    dge/dt = -ge/taue : volt
    dgi/dt = -gi/taui : volt
    """
    P_group = b2.NeuronGroup(
        N, eqs, threshold="v>Vt", reset="v = Vr", refractory=5 * b2.ms, method="exact"
    )
    P_group.v = v0.double().numpy() * b2.mV
    we, wi = W_E * b2.mV, W_I * b2.mV
    Ce = b2.Synapses(P_group[:N_EXC], P_group, on_pre="ge += we")
    Ci = b2.Synapses(P_group[N_EXC:], P_group, on_pre="gi += wi")
    Ce.connect(i=exc[1].numpy(), j=exc[0].numpy())  # the same synapses as pysnn's
    Ci.connect(i=inh[1].numpy(), j=inh[0].numpy())
    s_mon = b2.SpikeMonitor(P_group)
    b2.run(STEPS * DT * b2.ms)
    brian2_stats = statistics(
        torch.from_numpy(s_mon.i[:].astype("int64")), torch.from_numpy(s_mon.t[:] / b2.second)
    )
    print(f"Brian2 {b2.__version__}: {brian2_stats[0]:.2f} Hz, ISI CV {brian2_stats[1]:.3f}")


# %%
# pysnn: the neuron's equation is LIFNeuron's (exact leak toward v_rest; input ignored while
# refractory), each Synapses is a SparseLinear into an ExponentialSynapse, the loop is yours.
lif = LIFNeuron(N, DT, thresh=-50.0, v_rest=-49.0, v_reset=-60.0, tau_v=20.0, refrac=5.0)
fc_e = SparseLinear(N_EXC, N, exc, DT, weight=W_E)  # ge += we at each excitatory spike
fc_i = SparseLinear(N - N_EXC, N, inh, DT, weight=W_I)
syn_e, syn_i = ExponentialSynapse(lif, tau_syn=5.0), ExponentialSynapse(lif, tau_syn=10.0)

pysnn.set_checks(False)  # a long run: no per-step NaN check
spikes = []
with torch.no_grad():
    s = torch.zeros(1, N)
    lif.reset_state()
    lif.thresh = 1e9  # one step without input to create the state, then v(0)
    lif(torch.zeros(1, N))
    lif.thresh, lif.v = -50.0, v0.unsqueeze(0)
    for step in range(STEPS):
        s = lif(syn_e(fc_e(s[:, :N_EXC])) + syn_i(fc_i(s[:, N_EXC:])))
        spikes.append(s[0].nonzero()[:, 0])
pysnn.set_checks(True)
i = torch.cat(spikes)
t = torch.cat([torch.full((len(x),), (k + 1) * DT / 1000) for k, x in enumerate(spikes)])
pysnn_stats = statistics(i, t)
print(f"pysnn: {pysnn_stats[0]:.2f} Hz, ISI CV {pysnn_stats[1]:.3f}")
assert 2.0 < pysnn_stats[0] < 20.0  # asynchronous irregular activity, as in the benchmark
if b2 is not None:
    assert abs(pysnn_stats[0] - brian2_stats[0]) <= 0.15 * brian2_stats[0]
    assert abs(pysnn_stats[1] - brian2_stats[1]) <= 0.1
    print("the same statistics within the benchmark's tolerances")
