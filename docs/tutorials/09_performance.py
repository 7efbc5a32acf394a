"""Performance knobs: fused kernels, event-driven propagation, batching, multi-step blocks, checks,
compile, GPU.

Every variant below is first checked to give the same result as the plain step loop, then timed
once on this machine (the numbers printed are only what this run measured; they vary with the
machine, its load, the sizes and the activity).

    python docs/tutorials/09_performance.py             # a few seconds
    python docs/tutorials/09_performance.py --compile   # also torch.compile (slow first call)
"""

import sys
import time

import torch

import pysnn
import pysnn.native
from pysnn.connection import Linear
from pysnn.multistep import run_feedforward
from pysnn.neuron import LIFNeuron

torch.manual_seed(0)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
N_IN, N_OUT, T, B = 1000, 1000, 100, 4
spikes = (torch.rand(T, B, N_IN, device=device) < 0.02).float()  # sparse: 2 % active per step


def timed(label, fn):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"  {label:<44s} {1000 * (time.perf_counter() - start):8.1f} ms")
    return out


def step_loop(fc, lif, x):
    with torch.no_grad():
        return torch.stack([lif(fc(s)) for s in x])


def build(propagation):
    torch.manual_seed(1)  # identical weights for every variant
    fc = Linear(N_IN, N_OUT, propagation=propagation, init="uniform", init_kwargs={"a": 0, "b": 4})
    return fc.to(device), LIFNeuron(N_OUT).to(device)


print(f"device: {device}; {N_IN} -> {N_OUT} neurons, {T} steps, batch {B}")

print(pysnn.native.status())  # fused CPU kernels (pysnn.native): in use, or why not

# 1. Propagation: "dense" (matrix product), "event" (sum the weight rows of active inputs only),
#    "auto" (default: event on CPU while the input is sparse; dense on GPU and under compile).
results = {}
for mode in ("dense", "event", "auto"):
    fc, lif = build(mode)
    results[mode] = timed(f'step loop, propagation="{mode}"', lambda: step_loop(fc, lif, spikes))
    if mode == "auto":
        print(f"    auto chose: {fc.active_propagation}")
# Same result up to float summation order (identical spikes here).
assert torch.equal(results["dense"], results["event"])
assert torch.equal(results["dense"], results["auto"])
print("  same spikes for all three modes")

# 2. Per-step NaN checks read a flag back from the device each step (a host sync on GPU).
fc, lif = build("auto")
with pysnn.checks(False):  # or pysnn.set_checks(False) for the whole process
    unchecked = timed("step loop, checks off", lambda: step_loop(fc, lif, spikes))
assert torch.equal(unchecked, results["dense"])

# 3. Batching: one call simulates B independent samples; here B = 4 vs 4 runs of B = 1.
fc, lif = build("auto")
singles = []


def one_by_one():
    for b in range(B):
        fc.reset_state()
        lif.reset_state()
        singles.append(step_loop(fc, lif, spikes[:, b : b + 1]))


timed(f"{B} separate runs of batch 1", one_by_one)
assert torch.equal(torch.cat(singles, dim=1), results["dense"])

# 4. Multi-step: a feed-forward pair computes the input of all T steps in one product; only the
#    neuron recurrence runs step by step. Same spikes, same final state.
fc, lif = build("auto")
with torch.no_grad():
    block = timed(
        "run_feedforward (one block of T steps)", lambda: run_feedforward(fc, lif, spikes)
    )
assert torch.equal(block, results["dense"])
print("  batched, per-sample and multi-step runs agree")

# 5. The fused CPU kernels do exactly the torch operations: switching them off changes nothing
#    but the time.
fc, lif = build("auto")
with pysnn.native.enabled(False):
    plain = timed("step loop, fused kernels off", lambda: step_loop(fc, lif, spikes))
assert torch.equal(plain, results["dense"])

# 6. torch.compile of one step (opt-in: compilation takes long on the first call).
if "--compile" in sys.argv:
    fc, lif = build("auto")
    step = torch.compile(lambda x: lif(fc(x)))
    with torch.no_grad():
        timed("compile + first step", lambda: step(spikes[0]))
        compiled = timed("compiled step loop", lambda: torch.stack([step(s) for s in spikes[1:]]))
    print("  compiled run matches:", torch.equal(compiled, results["dense"][1:]))
