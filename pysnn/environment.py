r"""Running a pysnn network against a reinforcement-learning environment (``gymnasium``).

:class:`EnvironmentLoop` drives any environment with the ``gymnasium.Env`` interface
(``reset(seed=...) -> (observation, info)``, ``step(action) -> (observation, reward,
terminated, truncated, info)``) with a network whose ``forward`` is one simulation step. Per
environment step:

1. **encode**: the observation becomes a float tensor ``(1, *obs_shape)`` (batch of one) and
   ``encode`` turns it into the network's input for ``T`` simulation steps, ``(T, 1, ...)``
   (any :mod:`pysnn.encoding` encoder, possibly after :class:`GaussianPopulation`);
2. **simulate**: ``net(x[t])`` for ``t = 0 .. T-1``; the outputs are stacked, ``(T, 1, ...)``;
3. **decode**: ``decode(outputs)`` returns the action (e.g. :func:`count_argmax`, or a policy that
   samples from a softmax and keeps its log-probability for a policy-gradient update);
4. **reward**: ``env.step(action)``; the reward ``r`` is passed to each learning rule as
   ``rule.step(reward=r)`` **at the last simulation step of this environment step** (the rules
   are stepped after every simulation step, with ``reward=None`` before the last one, so
   eligibility traces follow every spike and the reward meets the spikes that chose the action).

An episode starts with ``reset_state`` of the network and of the rules (eligibility traces
included), so episodes are independent apart from the learned weights. Requires the optional
extra ``rl`` (gymnasium: ``pip install gymnasium``, or ``pip install ".[rl]"`` in a checkout) only for gymnasium's own environments: this module
itself does not import gymnasium.

.. code-block:: python

    import gymnasium as gym
    from pysnn.encoding import RepeatEncoder
    from pysnn.environment import EnvironmentLoop, GaussianPopulation, count_argmax

    encode = torch.nn.Sequential(GaussianPopulation(low, high, 8), RepeatEncoder(10.0))
    loop = EnvironmentLoop(gym.make("CartPole-v1"), net, encode, count_argmax, rules=[rule])
    returns = loop.run(episodes=200, seed=0)   # also in loop.returns
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from pysnn.network import reset_state
from pysnn.progress import progress

__all__ = ["EnvironmentLoop", "Episode", "GaussianPopulation", "count_argmax"]


@dataclass
class Episode:
    """What happened in one episode.

    Attributes:
        rewards: reward of each environment step.
        actions: action of each environment step (as given to ``env.step``).
        terminated: the environment ended the episode (a terminal state).
        truncated: the episode was cut (the environment's time limit, or ``max_steps``).
    """

    rewards: List[float] = field(default_factory=list)
    actions: List[Any] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False

    @property
    def total_return(self) -> float:
        """Sum of the rewards (undiscounted return)."""
        return float(sum(self.rewards))

    @property
    def length(self) -> int:
        """Number of environment steps."""
        return len(self.rewards)


class EnvironmentLoop:
    """Run a spiking network as the agent of an environment (see the module docstring).

    Args:
        env: an environment with the ``gymnasium.Env`` interface.
        net: a module whose ``forward`` is one simulation step (input ``(1, ...)``).
        encode: ``(1, *obs_shape)`` float observation → network input ``(T, 1, ...)``, time first.
        decode: network outputs ``(T, 1, ...)`` → action (an int, a 0-d tensor, or whatever the
            environment takes).
        rules: learning rules stepped after every simulation step, reward on the last one (see
            the module docstring); leave out rules the network steps itself.
        grad: keep autograd on (for policy-gradient training through surrogate gradients);
            ``False`` (default) runs under ``torch.no_grad()``.
        max_steps: cut episodes after this many environment steps (``None``: the environment's
            own limit).
        dtype, device: of the observation tensor given to ``encode``.

    Attributes:
        returns: the return of every episode run so far (the log of :meth:`run`).
    """

    def __init__(
        self,
        env: Any,
        net: nn.Module,
        encode: Callable[[Tensor], Tensor],
        decode: Callable[[Tensor], Any],
        *,
        rules: Sequence[nn.Module] = (),
        grad: bool = False,
        max_steps: Optional[int] = None,
        dtype: torch.dtype = torch.float32,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        for name in ("reset", "step"):
            if not callable(getattr(env, name, None)):
                raise TypeError(f"env must have the gymnasium.Env interface (no {name}() method)")
        if not callable(net):
            raise TypeError(f"net must be a callable module, got {type(net).__name__}")
        for name, fn in (("encode", encode), ("decode", decode)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if isinstance(rules, nn.Module):
            rules = [rules]
        for rule in rules:
            if not callable(getattr(rule, "step", None)):
                raise TypeError(
                    f"rules must be learning rules with step(reward=...), got {type(rule).__name__}"
                )
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
        self.env, self.net, self.encode, self.decode = env, net, encode, decode
        self.rules = list(rules)
        self.grad, self.max_steps = bool(grad), max_steps
        self.dtype, self.device = dtype, torch.device(device)
        self.returns: List[float] = []

    def observation(self, obs: Any) -> Tensor:
        """The observation as a float tensor ``(1, *obs_shape)`` for ``encode``."""
        if isinstance(obs, dict):
            raise TypeError(
                f"the observation is a dict (keys {sorted(map(str, obs))}): EnvironmentLoop "
                "needs an array of numbers. Flatten it, e.g. "
                "gymnasium.wrappers.FlattenObservation(env), or wrap the environment so that "
                "it returns the entry to encode"
            )
        array = np.asarray(obs)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"the observation must be an array of numbers, got {type(obs).__name__} "
                f"(as an array: dtype {array.dtype}); flatten or convert it in a wrapper of the "
                "environment"
            )
        return torch.as_tensor(array, dtype=self.dtype, device=self.device).reshape(1, *array.shape)

    def episode(self, seed: Optional[int] = None, learn: bool = True) -> Episode:
        """Run one episode from ``env.reset(seed=seed)``; returns its :class:`Episode`.

        ``learn=False`` runs without stepping the rules (evaluation); the network's own
        ``train()``/``eval()`` mode is left to the caller.
        """
        with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
            return self._episode(seed, learn)

    def _episode(self, seed: Optional[int], learn: bool) -> Episode:
        reset_state(self.net)
        for rule in self.rules:
            reset_state(rule)
        obs, _ = self.env.reset(seed=seed)
        episode = Episode()
        rules = self.rules if learn else []
        while True:
            x = self.encode(self.observation(obs))
            if not isinstance(x, Tensor) or x.dim() < 2:
                raise ValueError(
                    "encode must return the network input (T, 1, ...), time first; got "
                    f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
                )
            steps = x.shape[0]
            if steps == 0:
                raise ValueError(
                    f"encode returned 0 time steps (shape {tuple(x.shape)}); it must return at "
                    "least one step, (T, 1, ...) with T >= 1"
                )
            outputs = []
            for t in range(steps):
                outputs.append(self.net(x[t]))
                if t < steps - 1:
                    for rule in rules:
                        rule.step()
            action = self.decode(torch.stack(outputs))
            if isinstance(action, Tensor) and action.dim() == 0:
                action = int(action) if not action.is_floating_point() else float(action)
            obs, reward, terminated, truncated, _ = self.env.step(action)
            reward = _reward(reward, episode.length)
            for rule in rules:
                rule.step(reward=reward)  # the last simulation step of this environment step
            episode.rewards.append(reward)
            episode.actions.append(action)
            if self.max_steps is not None and episode.length >= self.max_steps:
                truncated = True
            if terminated or truncated:
                episode.terminated, episode.truncated = bool(terminated), bool(truncated)
                return episode

    def run(
        self,
        episodes: int,
        *,
        seed: Optional[int] = None,
        learn: bool = True,
        callback: Optional[Callable[[Episode], None]] = None,
        quiet: bool = False,
        window: int = 100,
    ) -> List[float]:
        """Run ``episodes`` episodes; returns their returns (also appended to :attr:`returns`).

        Args:
            episodes: number of episodes.
            seed: seed of the first ``env.reset`` (the environment's generator then continues,
                as gymnasium recommends), ``None`` for none.
            learn: step the rules (see :meth:`episode`).
            callback: called with each finished :class:`Episode` (e.g. a policy-gradient
                update).
            quiet: no progress bar (:func:`pysnn.progress.progress`).
            window: episodes averaged for the running mean shown on the bar.
        """
        if not isinstance(episodes, int) or episodes < 1:
            raise ValueError(f"episodes must be a positive int, got {episodes!r}")
        done: List[float] = []
        bar = progress(total=episodes, desc="episodes", quiet=quiet)
        for i in range(episodes):
            episode = self.episode(seed=seed if i == 0 else None, learn=learn)
            if callback is not None:
                callback(episode)
            done.append(episode.total_return)
            self.returns.append(episode.total_return)
            recent = done[-window:]
            bar.update(1)
            bar.set_postfix(ret=f"{done[-1]:g}", mean=f"{sum(recent) / len(recent):.1f}")
        bar.close()
        return done


def _reward(reward: Any, step: int) -> float:
    """The reward of environment step ``step`` as a finite float; ``TypeError``/``ValueError``
    saying what ``env.step`` returned otherwise."""
    if isinstance(reward, Tensor):
        if reward.numel() != 1:
            raise ValueError(
                f"env.step returned a reward of shape {tuple(reward.shape)} at step {step}; it "
                "must be a single number"
            )
        reward = reward.item()
    if isinstance(reward, np.ndarray) and reward.size == 1:
        reward = reward.item()
    if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, (int, float, np.number)):
        raise TypeError(
            f"env.step returned the reward {reward!r} ({type(reward).__name__}) at step {step}; "
            "it must be a number (gymnasium: step(action) -> (observation, reward, terminated, "
            "truncated, info))"
        )
    value = float(reward)
    if not math.isfinite(value):
        raise ValueError(
            f"env.step returned the reward {value} at step {step}: a non-finite reward would "
            "make the learned weights and the episode's return NaN. Fix the reward function"
        )
    return value


class GaussianPopulation(nn.Module):
    r"""Population code of a continuous observation: ``n`` Gaussian tuning curves per dimension.

    For each observation dimension :math:`i` with range :math:`[l_i, h_i]` the centres are
    :math:`c_{ij} = l_i + j (h_i - l_i)/(n - 1)` and the response is
    :math:`\exp(-(x_i - c_{ij})^2 / (2 \sigma_i^2))` in :math:`(0, 1]`, with
    :math:`\sigma_i = \text{width} \cdot (h_i - l_i)/(n - 1)`. Values outside the range saturate
    the edge neurons (the input is clipped to the range first).

    Args:
        low, high: per-dimension ranges (sequences of length ``d``, ``low < high``).
        n: neurons per dimension, >= 2.
        width: tuning width in units of the spacing of the centres, > 0.

    Shapes: ``(B, d)`` → ``(B, d * n)`` (neurons of dimension 0 first), intensities for
    e.g. :class:`~pysnn.encoding.BernoulliEncoder` or a constant current.
    """

    def __init__(
        self, low: Sequence[float], high: Sequence[float], n: int, width: float = 1.0
    ) -> None:
        super().__init__()
        low_t = torch.as_tensor(low, dtype=torch.float64).reshape(-1)
        high_t = torch.as_tensor(high, dtype=torch.float64).reshape(-1)
        if low_t.shape != high_t.shape:
            raise ValueError(f"low and high must have the same length, got {low} and {high}")
        if not torch.isfinite(low_t).all() or not torch.isfinite(high_t).all():
            raise ValueError("low and high must be finite (choose a range for unbounded values)")
        if not bool((low_t < high_t).all()):
            raise ValueError(f"low must be below high in every dimension, got {low} and {high}")
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an int >= 2, got {n!r}")
        if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive number, got {width!r}")
        spacing = (high_t - low_t) / (n - 1)
        steps = torch.arange(n, dtype=torch.float64)
        self.register_buffer("low", low_t.float())
        self.register_buffer("high", high_t.float())
        self.register_buffer("centres", (low_t[:, None] + spacing[:, None] * steps).float())
        self.register_buffer("sigma", (width * spacing).float())
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        """``(B, d)`` observations → ``(B, d * n)`` responses in ``(0, 1]``."""
        if x.dim() != 2 or x.shape[1] != self.low.shape[0]:
            raise ValueError(
                f"x must have shape (B, {self.low.shape[0]}) for GaussianPopulation, "
                f"got {tuple(x.shape)}"
            )
        if torch.isnan(x).any():  # (inf saturates like any value outside the range)
            raise ValueError(
                f"x contains NaN (observation to GaussianPopulation, {int(torch.isnan(x).sum())} "
                "values): check the environment's observation"
            )
        x = torch.minimum(torch.maximum(x, self.low), self.high)
        z = (x[:, :, None] - self.centres) / self.sigma[:, None]
        return torch.exp(-0.5 * z * z).reshape(x.shape[0], -1)


def count_argmax(outputs: Tensor) -> int:
    """The action whose output neuron spiked most over the ``T`` steps, ``(T, 1, n_actions)``
    → ``int``; ties go to the lowest index (so a silent network picks action 0)."""
    if not isinstance(outputs, Tensor) or outputs.dim() != 3 or outputs.shape[1] != 1:
        raise ValueError(
            "outputs must have shape (T, 1, n_actions), got "
            f"{tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__}"
        )
    return int(outputs.sum(0)[0].argmax())
