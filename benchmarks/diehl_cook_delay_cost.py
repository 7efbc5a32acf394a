"""Time per digit of DiehlCook2015 with the authors' inhibition latency (issue 26).

``inhibition_delay=dt`` delays ``e2i`` by one step. :meth:`DiehlCook2015.run` runs it in the
fused network loop (:func:`pysnn.engine.layers.run_layers` pushes the delay ring in place);
before, a delayed connection sent every step to the loop of module calls. This times one
digit three ways in the same run: without the delay (fused), with it (fused), and with it
through the loop of module calls (a no-op forward hook on ``e2i``, which makes ``run_layers``
step the modules, as it did for every delayed connection before), and checks that the two
delayed runs give the same spike counts.

Usage: python benchmarks/diehl_cook_delay_cost.py OUT.json
"""

import json
import sys
import time

import torch

import pysnn
from pysnn.models import DiehlCook2015

DT, STEPS, REPEATS, ROUNDS = 0.5, 700, 5, 5


def network(delay: float) -> DiehlCook2015:
    torch.manual_seed(0)
    return DiehlCook2015(
        n_neurons=100, dt=DT, synapses="conductance", rule="triplet", inhibition_delay=delay
    )


def seconds_per_digit(net: DiehlCook2015, x: torch.Tensor) -> tuple:
    """Mean seconds per digit over REPEATS digits, and the last digit's counts."""
    with pysnn.checks(False):
        start = time.perf_counter()
        for _ in range(REPEATS):
            counts = net.run(x)
    return (time.perf_counter() - start) / REPEATS, counts


def main() -> None:
    torch.set_num_threads(1)
    x = (torch.rand(STEPS, 1, 784, generator=torch.Generator().manual_seed(1)) < 0.01).float()
    stepped = network(DT)
    stepped.e2i.register_forward_hook(lambda module, args, out: None)
    nets = {
        "no delay, fused": network(0.0),
        "inhibition_delay=dt, fused": network(DT),
        "inhibition_delay=dt, module loop": stepped,
    }
    for net in nets.values():  # (warm-up: the neurons' generated steps)
        with pysnn.checks(False):
            net.run(x)
    times = {name: [] for name in nets}
    counts = {}
    for _ in range(ROUNDS):  # interleaved, best round of each
        for name, net in nets.items():
            seconds, counts[name] = seconds_per_digit(net, x)
            times[name].append(seconds)
    rows = {name: min(values) for name, values in times.items()}
    if not torch.equal(
        counts["inhibition_delay=dt, fused"], counts["inhibition_delay=dt, module loop"]
    ):
        raise SystemExit("the fused and the stepped delayed runs differ")
    base = rows["inhibition_delay=dt, fused"]
    out = {
        "description": (
            f"Seconds per {STEPS}-step digit at dt {DT} ms (conductance synapses, the authors' "
            f"rule, training mode, 100 neurons, random input spikes at p=0.01 per step, 1 "
            f"thread, mean of {REPEATS} digits, best of {ROUNDS} interleaved rounds after one "
            "warm-up; shared 2-core machine, so only the ratios are meaningful). Issue 26."
        ),
        "seconds_per_digit": rows,
        "ratio_to_fused_delay": {name: value / base for name, value in rows.items()},
    }
    print(json.dumps(out, indent=2))
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
