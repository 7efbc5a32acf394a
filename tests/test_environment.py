"""pysnn.environment: the environment loop on a tiny deterministic environment (no gymnasium
needed), with the actions, rewards, resets and rule calls worked out by hand."""

import math

import pytest
import torch
from torch import nn

from pysnn.connection import Linear
from pysnn.environment import EnvironmentLoop, Episode, GaussianPopulation, count_argmax
from pysnn.learning import MSTDP
from pysnn.neuron import Input, LIFNeuron


class Corridor:
    """Position 0, 1, 2, ... advancing by one each step; the episode ends at position 4.

    Reward +1 when the action equals ``position % 2``, else -1. Records its reset seeds.
    """

    def __init__(self):
        self.seeds = []

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.pos = 0
        return [float(self.pos)], {}

    def step(self, action):
        reward = 1.0 if action == self.pos % 2 else -1.0
        self.pos += 1
        return [float(self.pos)], reward, self.pos == 4, False, {}


def encode(obs):
    """Position p -> 3 steps of 2 input spikes: neuron 1 wins for p in (1, 2), neuron 0 else."""
    p = int(obs[0, 0])
    winner = 1 if p in (1, 2) else 0
    x = torch.zeros(3, 1, 2)
    x[:2, 0, winner] = 1.0
    x[2, 0, 1 - winner] = 1.0
    return x


class CountingInput(Input):
    resets = 0

    def reset_state(self):
        self.resets += 1
        super().reset_state()


class RecordingRule(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls, self.resets = [], 0

    def step(self, reward=None):
        self.calls.append(reward)

    def reset_state(self):
        self.resets += 1


def test_actions_rewards_and_rule_calls_by_hand():
    env, net, rule = Corridor(), CountingInput(2), RecordingRule()
    loop = EnvironmentLoop(env, net, encode, count_argmax, rules=[rule])
    episode = loop.episode(seed=7)
    # positions 0..3 -> actions 0, 1, 1, 0 -> rewards +1 (0 == 0), +1 (1 == 1), -1, -1
    assert episode.actions == [0, 1, 1, 0]
    assert episode.rewards == [1.0, 1.0, -1.0, -1.0]
    assert episode.total_return == 0.0 and episode.length == 4
    assert episode.terminated and not episode.truncated
    # the rule after each of the 3 simulation steps, the reward on the last one
    assert rule.calls == [None, None, 1.0, None, None, 1.0, None, None, -1.0, None, None, -1.0]
    assert env.seeds == [7] and net.resets == 1 and rule.resets == 1


def test_run_logs_returns_resets_and_seeds_once():
    env, net, rule = Corridor(), CountingInput(2), RecordingRule()
    loop = EnvironmentLoop(env, net, encode, count_argmax, rules=rule)
    seen = []
    returns = loop.run(3, seed=5, callback=seen.append, quiet=True)
    assert returns == [0.0, 0.0, 0.0] and loop.returns == returns
    assert env.seeds == [5, None, None]  # seeded once, then the environment's RNG continues
    assert net.resets == 3 and rule.resets == 3
    assert all(isinstance(e, Episode) for e in seen) and len(seen) == 3
    loop.run(1, learn=False, quiet=True)
    assert len(rule.calls) == 3 * 12 and loop.returns == [0.0] * 4  # no rule step without learn


def test_max_steps_truncates():
    loop = EnvironmentLoop(Corridor(), Input(2), encode, count_argmax, max_steps=2)
    episode = loop.episode()
    assert episode.length == 2 and episode.truncated and not episode.terminated


def test_reward_reaches_a_real_mstdp_rule_as_in_a_hand_written_loop():
    def build():
        torch.manual_seed(0)
        inp, out = Input(2), LIFNeuron(2, thresh=-64.5, refrac=0.0)
        fc = Linear(2, 2, init="constant", init_kwargs={"val": 1.0})
        rule = MSTDP(connection=fc, pre=inp, post=out, gamma=0.1)
        return nn.Sequential(inp, fc, out), fc, rule

    net, fc, rule = build()
    loop = EnvironmentLoop(Corridor(), net, encode, count_argmax, rules=[rule])
    loop.episode()
    by_loop = fc.weight.detach().clone()

    net, fc, rule = build()  # the same protocol written out
    env = Corridor()
    obs, _ = env.reset()
    done = False
    with torch.no_grad():
        while not done:
            x = encode(torch.tensor([obs]))
            outs = []
            for t in range(3):
                outs.append(net(x[t]))
                if t < 2:
                    rule.step()
            obs, reward, done, _, _ = env.step(int(torch.stack(outs).sum(0)[0].argmax()))
            rule.step(reward=reward)
    torch.testing.assert_close(by_loop, fc.weight.detach())
    assert not torch.equal(by_loop, torch.ones(2, 2))  # the rewards did change the weights


def test_gaussian_population_by_hand():
    pop = GaussianPopulation([0.0], [2.0], 3)  # centres 0, 1, 2; sigma 1
    got = pop(torch.tensor([[1.0], [5.0]]))
    e = math.exp
    torch.testing.assert_close(got, torch.tensor([[e(-0.5), 1.0, e(-0.5)], [e(-2), e(-0.5), 1.0]]))
    assert GaussianPopulation([0.0, -1.0], [1.0, 1.0], 4)(torch.zeros(5, 2)).shape == (5, 8)


def test_count_argmax_ties_to_lowest():
    assert count_argmax(torch.zeros(4, 1, 3)) == 0
    assert count_argmax(torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]])) == 1


def test_bad_arguments():
    with pytest.raises(TypeError, match="gymnasium.Env interface"):
        EnvironmentLoop(object(), Input(2), encode, count_argmax)
    with pytest.raises(TypeError, match="decode must be callable"):
        EnvironmentLoop(Corridor(), Input(2), encode, None)
    with pytest.raises(TypeError, match="rules must be learning rules"):
        EnvironmentLoop(Corridor(), Input(2), encode, count_argmax, rules=[nn.ReLU()])
    with pytest.raises(ValueError, match="max_steps must be a positive int"):
        EnvironmentLoop(Corridor(), Input(2), encode, count_argmax, max_steps=0)
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        EnvironmentLoop(Corridor(), Input(2), encode, count_argmax).run(0)
    loop = EnvironmentLoop(Corridor(), Input(2), lambda o: o[0], count_argmax)
    with pytest.raises(ValueError, match=r"encode must return the network input \(T, 1, ...\)"):
        loop.episode()
    with pytest.raises(ValueError, match="low must be below high"):
        GaussianPopulation([1.0], [0.0], 3)
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        GaussianPopulation([0.0], [1.0], 1)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1\)"):
        GaussianPopulation([0.0], [1.0], 3)(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"outputs must have shape \(T, 1, n_actions\)"):
        count_argmax(torch.zeros(3, 2))


def test_cartpole_example_runs_and_reports_against_random():
    pytest.importorskip("gymnasium")  # pinned in requirements-dev.txt (the extra "rl")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "cartpole.py"
    spec = importlib.util.spec_from_file_location("cartpole", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--episodes", "3", "--seeds", "0", "--quiet", "--steps", "2"])
    summary = results["0"]
    assert summary["snn_last100"] >= 8 and summary["random_last100"] >= 8  # CartPole's minimum
