"""Reward-modulated learning with MSTDPET (Florian 2007): the reward's sign sets the direction.

One synapse sees the same causal pairing in every 50 ms trial: presynaptic spike at 10 ms,
postsynaptic spike at 15 ms. The pairing alone changes no weight; it leaves an eligibility trace.
A reward 5 ms after the postsynaptic spike turns the trace into a weight change: positive for the
first trials, negative afterwards. The measured change of each trial is compared with the closed
form of the MSTDPET docstring, and the weight is drawn into ``mstdpet_weight.png`` (output
folder: first argument, else ``$PYSNN_DOCS_OUT``, else a new temporary folder).

    python docs/tutorials/06_reward_learning.py [OUT_DIR]
"""

import math
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.learning import MSTDP, MSTDPET
from pysnn.network import reset_state
from pysnn.neuron import Input

torch.set_grad_enabled(False)  # simulation only: no autograd graph through the weights

OUT = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYSNN_DOCS_OUT") or tempfile.mkdtemp()
)
OUT.mkdir(parents=True, exist_ok=True)

GAMMA, TAU_PLUS, TAU_Z = 0.5, 20.0, 25.0
T_PRE, T_POST, T_REWARD, TRIAL_MS, TRIALS = 10, 15, 20, 50, 10

pre, post = Input(1), Input(1)
syn = Linear(1, 1, wmin=0.0, wmax=1.0, init="constant", init_kwargs={"val": 0.5})
rule = MSTDPET(connection=syn, pre=pre, post=post, gamma=GAMMA, tau_plus=TAU_PLUS, tau_z=TAU_Z)
trial_modules = nn.ModuleList([pre, syn, post, rule])  # the rule is a module too: one reset for all

weights = [float(syn.weight.detach())]
for trial in range(TRIALS):
    reward = 1.0 if trial < TRIALS // 2 else -1.0
    for t in range(TRIAL_MS):
        syn(pre(torch.full((1, 1), float(t == T_PRE))))
        post(torch.full((1, 1), float(t == T_POST)))
        rule.step(reward=reward if t == T_REWARD else None)  # None: no reward this step
    reset_state(
        trial_modules
    )  # trials are independent: reset state (eligibility too), keep weights
    weights.append(float(syn.weight.detach()))

# Closed form (MSTDPET docstring): one pair at dt = t_post - t_pre > 0 and one reward r at t_r:
# dw = gamma * dt_step * r * A+ * exp(-dt / tau+) * exp(-(t_r - t_post) / tau_z) / tau_z.
expected = (
    GAMMA * math.exp(-(T_POST - T_PRE) / TAU_PLUS) * math.exp(-(T_REWARD - T_POST) / TAU_Z) / TAU_Z
)
changes = [b - a for a, b in zip(weights, weights[1:])]
print(f"closed-form change per trial: +/-{expected:.6f}")
for trial, change in enumerate(changes):
    print(f"trial {trial}: reward {'+1' if trial < TRIALS // 2 else '-1'}, dw = {change:+.6f}")
    assert abs(abs(change) - expected) < 1e-6  # no clamping happens in this range

# MSTDP (no eligibility trace) only changes weights in the step the reward arrives, from the
# traces of that step; per-sample rewards weight each sample of a batch.
pre2, post2 = Input(1), Input(1)
syn2 = Linear(1, 1, init="constant", init_kwargs={"val": 0.5})
mstdp = MSTDP(connection=syn2, pre=pre2, post=post2, gamma=0.1)
for t in range(20):
    batch_pre = torch.tensor([[float(t == 5)], [float(t == 5)]])  # 2 samples, same pairing
    syn2(pre2(batch_pre))
    post2(torch.tensor([[float(t == 8)], [float(t == 8)]]))
    mstdp.step(reward=torch.tensor([1.0, -1.0]) if t == 8 else None)  # opposite rewards cancel
print(
    f"MSTDP with per-sample rewards +1 and -1: weight {float(syn2.weight.detach()):.6f} (unchanged)"
)

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

fig = Figure(figsize=(6.0, 3.5), layout="constrained")
FigureCanvasAgg(fig)
ax = fig.add_subplot()
ax.plot(range(TRIALS + 1), weights, "o-")
ax.axvspan(0, TRIALS // 2, color="C2", alpha=0.1, label="reward +1")
ax.axvspan(TRIALS // 2, TRIALS, color="C3", alpha=0.1, label="reward -1")
ax.set_xlabel("trial")
ax.set_ylabel("weight")
ax.set_title("MSTDPET: same pairing, the reward's sign sets the direction")
ax.legend(fontsize="small")
fig.savefig(OUT / "mstdpet_weight.png", dpi=80)
print(f"saved {OUT / 'mstdpet_weight.png'}")
