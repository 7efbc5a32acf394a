"""Spike traces and lossless synaptic delays.

1. A trace low-pass filters a spike train: ``"additive"`` (all-to-all) or ``"reset"`` (nearest).
2. A ``Linear`` with per-synapse delays delivers every spike at its own arrival step, even with
   several spikes in flight on one synapse.
3. Learning rules read what *arrives* at a synapse: ``arriving_spikes()`` and ``delayed(...)``.

Draws ``delays.png`` into the output folder (first argument, else ``$PYSNN_DOCS_OUT``, else a new
temporary folder).

    python docs/tutorials/04_traces_and_delays.py [OUT_DIR]
"""

import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from pysnn.connection import Linear
from pysnn.functional import push_history
from pysnn.neuron import Input

torch.set_grad_enabled(False)  # simulation only: no autograd graph through the weights

OUT = Path(
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYSNN_DOCS_OUT") or tempfile.mkdtemp()
)
OUT.mkdir(parents=True, exist_ok=True)
T = 30
train = torch.zeros(T)
train[[2, 4, 15]] = 1.0  # presynaptic spikes at 2, 4 and 15 ms

# ---------------------------------------------------------------- 1. traces
additive = Input(1, tau_trace=5.0, trace_mode="additive")
nearest = Input(1, tau_trace=5.0, trace_mode="reset")
traces = {"additive": [], "reset": []}
for t in range(T):
    s = train[t].view(1, 1)
    additive(s)
    nearest(s)
    traces["additive"].append(float(additive.trace))
    traces["reset"].append(float(nearest.trace))

# Closed form (additive): x(t) = sum over spikes t_k <= t of exp(-(t - t_k) / tau_trace).
expected = [sum(math.exp(-(t - k) / 5.0) for k in (2, 4, 15) if k <= t) for t in range(T)]
assert max(abs(a - b) for a, b in zip(traces["additive"], expected)) < 1e-5
print(f"trace at 4 ms: additive {traces['additive'][4]:.3f}, reset {traces['reset'][4]:.3f}")

# ---------------------------------------------------------------- 2. per-synapse delays
# One presynaptic neuron, four synapses with delays 0, 3, 6 and 12 ms, all weights 1: the output
# of the connection at step t is exactly the spikes arriving at each synapse in that step.
delays = torch.tensor([[0.0], [3.0], [6.0], [12.0]])  # (out, in), ms
conn = Linear(1, 4, delay=delays, init="constant", init_kwargs={"val": 1.0})
arrivals = torch.stack([conn(train[t].view(1, 1))[0] for t in range(T)])  # (T, 4)
for i, d in enumerate(delays[:, 0].tolist()):
    got = arrivals[:, i].nonzero().flatten().tolist()
    print(f"delay {d:4.1f} ms: spikes emitted at [2, 4, 15] arrive at {got}")
    assert got == [2 + int(d), 4 + int(d), 15 + int(d)]  # lossless: both spikes in flight arrive

# ---------------------------------------------------------------- 3. what a learning rule sees
# A shared delay: arriving_spikes() is (B, in); a per-synapse delay: (B, out, in). delayed()
# reads any presynaptic quantity (here the trace) through the same delays from a history whose
# index k holds the value of k steps ago.
pre = Input(1, tau_trace=5.0)
conn.reset_state()
history = torch.zeros(1, conn.max_delay + 1, 1)
for t in range(T):
    conn(pre(train[t].view(1, 1)))
    history = push_history(history, pre.trace)
    if t == 18:
        print("arriving at t = 18 ms (per synapse):", conn.arriving_spikes()[0, :, 0].tolist())
        print(
            "pre-trace seen at each synapse:",
            [round(v, 3) for v in conn.delayed(history)[0, :, 0].tolist()],
        )

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

fig = Figure(figsize=(8.0, 6.0), layout="constrained")
FigureCanvasAgg(fig)
ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True, height_ratios=(1, 2, 2))
steps = torch.arange(T)
ax1.vlines(steps[train > 0], 0, 1, color="k")
ax1.set_yticks([])
ax1.set_title("presynaptic spikes (emitted)")
for i, d in enumerate(delays[:, 0].tolist()):
    t_arr = steps[arrivals[:, i] > 0]
    ax2.scatter(t_arr, [i] * len(t_arr), marker="|", s=200, color=f"C{i}")
ax2.set_yticks(range(4), [f"delay {d:g} ms" for d in delays[:, 0].tolist()])
ax2.set_title("spikes delivered to each synapse")
ax3.plot(steps, traces["additive"], "o-", ms=3, label='trace_mode="additive"')
ax3.plot(steps, traces["reset"], "s--", ms=3, label='trace_mode="reset"')
ax3.set_ylabel("trace")
ax3.set_xlabel("time (ms)")
ax3.legend(fontsize="small")
fig.savefig(OUT / "delays.png", dpi=80)
print(f"saved {OUT / 'delays.png'}")
