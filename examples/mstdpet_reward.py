"""Reward-modulated STDP with an eligibility trace (MSTDPET): the reward's sign sets the direction.

A single synapse sees the same causal pairing in every 50-ms trial (presynaptic spike at 10 ms,
postsynaptic spike at 15 ms). The pairing alone changes nothing: it only leaves an eligibility
trace. A reward delivered 5 ms after the postsynaptic spike converts it into a weight change:
positive reward for the first trials potentiates the synapse, negative reward afterwards depresses
it. Prints the weight after every trial.

    python examples/mstdpet_reward.py --trials 20
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.learning import MSTDPET
from pysnn.network import reset_state
from pysnn.neuron import Input


@torch.no_grad()  # simulation only: no autograd graph
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials (half rewarded +, half -)")
    parser.add_argument("--trial-ms", type=int, default=50, help="trial length (ms, dt = 1 ms)")
    parser.add_argument("--gamma", type=float, default=0.5, help="MSTDPET learning rate")
    args = parser.parse_args()

    pre, post = Input(1), Input(1)
    syn = Linear(1, 1, wmin=0.0, wmax=1.0, init="constant", init_kwargs={"val": 0.5})
    rule = MSTDPET(connection=syn, pre=pre, post=post, gamma=args.gamma)
    trial_modules = nn.ModuleList([pre, syn, post, rule])  # one reset for all, rule included
    t_pre, t_post, t_reward = 10, 15, 20
    print("trial  reward  weight")
    print(f"{'start':>5}  {'':>6}  {syn.weight.item():.5f}")
    for trial in range(args.trials):
        sign = 1.0 if trial < args.trials // 2 else -1.0
        for t in range(args.trial_ms):
            syn(pre(torch.full((1, 1), float(t == t_pre))))
            post(torch.full((1, 1), float(t == t_post)))
            rule.step(reward=sign if t == t_reward else None)
        reset_state(trial_modules)
        print(f"{trial:5d}  {sign:+6.1f}  {syn.weight.item():.5f}")


if __name__ == "__main__":
    main()
