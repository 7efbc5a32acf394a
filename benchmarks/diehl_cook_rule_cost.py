"""Time per digit of DiehlCook2015 by synapse form and STDP rule (issue 26).

Usage: python benchmarks/diehl_cook_rule_cost.py OUT.json
"""

import json
import sys
import time

import torch

import pysnn
from pysnn.models import DiehlCook2015

torch.set_num_threads(1)

out = {
    "description": "Seconds per 350-step digit (one digit, training mode, 100 neurons, random input spikes at p=0.01 per step, 1 thread, mean of 5 after one warm-up; shared 2-core machine, so only the ratio is meaningful). Issue 26.",
    "pysnn": pysnn.__file__,
    "seconds_per_digit": {},
}
for syn, rule in (("current", "pair"), ("conductance", "pair"), ("conductance", "triplet")):
    torch.manual_seed(0)
    net = DiehlCook2015(n_neurons=100, synapses=syn, rule=rule)
    x = (torch.rand(350, 1, 784) < 0.01).float()
    with pysnn.checks(False):
        net.run(x)
        t = time.perf_counter()
        for _ in range(5):
            net.run(x)
        out["seconds_per_digit"][f"{syn}, {rule}"] = (time.perf_counter() - t) / 5
print(out)
json.dump(out, open(sys.argv[1], "w"), indent=2)
