"""Run options: force spikes (clamp), forbid them (unclamp), inject voltage (inject_v).

One LIF neuron per column, dt = 1 ms, tau_v = 10 ms (leak factor exp(-0.1) per step), rest
-65 mV, threshold -60 mV, reset -70 mV, refractory 2 ms. Each request applies to the next step
only. Every printed value is checked against the hand calculation next to it.

    python docs/tutorials/14_run_options.py
"""

import math

import torch

from pysnn.network import run
from pysnn.neuron import LIFNeuron

torch.set_grad_enabled(False)
D = math.exp(-0.1)

lif = LIFNeuron(3, thresh=-60.0, v_rest=-65.0, v_reset=-70.0, tau_v=10.0, refrac=2.0)
quiet = torch.zeros(1, 3)

# 1. clamp: neuron 0 spikes although it sits at rest; it is reset and made refractory.
lif.clamp(torch.tensor([True, False, False]))  # (*shape): the same for every sample
s = lif(quiet)
print("clamp   spikes", s.tolist(), "v", lif.v.tolist(), "refractory", lif.refrac_count.tolist())
assert s.tolist() == [[1, 0, 0]] and lif.v[0, 0] == -70 and lif.refrac_count[0, 0] == 2

# ... and again at the next step, although it is refractory now:
lif.clamp(torch.tensor([True, False, False]))
assert lif(quiet).tolist() == [[1, 0, 0]]

# 2. unclamp: 10 mV would make neuron 1 fire (-65 + 10 = -55 >= -60); forbidden, it keeps -55 mV.
lif.unclamp(torch.tensor([False, True, False]))
s = lif(torch.tensor([[0.0, 10.0, 0.0]]))
print("unclamp spikes", s.tolist(), "v[1]", lif.v[0, 1].item())
assert s[0, 1] == 0 and lif.v[0, 1] == -55
assert lif(quiet)[0, 1] == 1  # still above threshold after the leak: it fires at the next step

# 3. inject_v: v <- v + delta before the step's leak, input and threshold.
lif.reset_state()
lif.inject_v(torch.tensor([3.0, 6.0, 0.0]))
s = lif(quiet)
print("inject  spikes", s.tolist(), "v", [round(v, 3) for v in lif.v[0].tolist()])
assert s.tolist() == [[0, 1, 0]]  # -65 + 6 e^-0.1 = -59.57 mV >= -60 mV
assert abs(lif.v[0, 0].item() - (-65 + 3 * D)) < 1e-5

# 4. BindsNET's network.run(clamp=..., unclamp=..., injects_v=...): dicts of layers, with one
#    mask for the whole run or one per step (T, B, *shape); here a batch of 2 for 4 steps.
lif.reset_state()
per_step = torch.zeros(4, 2, 3, dtype=torch.bool)
per_step[::2, :, 2] = True  # neuron 2 forced at steps 0 and 2
spikes = run(lif, torch.zeros(4, 2, 3), clamp={lif: per_step})
print("run     spikes of neuron 2 over time", spikes[:, 0, 2].tolist())
assert spikes[:, :, 2].tolist() == [[1, 1], [0, 0], [1, 1], [0, 0]]
