"""Boolean toy problems (XOR, AND, OR) with Poisson spike-train inputs, after PySNN.

Each data set has the 4 input patterns ``(0, 0), (0, 1), (1, 0), (1, 1)`` (in this order) and the
label ``f(a, b)``. An item is ``(spikes, label)``: ``spikes`` is a float32 tensor of shape
``(T, 2 * repeats)`` with ``T = round(duration / dt)``, in which every input neuron fires a
Poisson train (see :class:`pysnn.encoding.PoissonEncoder`, at most one spike per step) at
``rate_on`` Hz for a 1 bit and ``rate_off`` Hz for a 0 bit; ``label`` is an ``int``.

As in PySNN, ``repeats`` is the number of input neurons per bit (columns
``[a] * repeats + [b] * repeats``), each with its own independent train; the data set always
has 4 items. Spike trains are drawn anew at every access (fresh noise each epoch), from
``generator`` when given, so a sequence of accesses is reproducible with a seeded generator.
"""

from __future__ import annotations

import numbers
import operator
from typing import Optional, Tuple

import torch
from torch.utils.data import Dataset

from pysnn.encoding import PoissonEncoder

__all__ = ["XOR", "AND", "OR"]

_PATTERNS = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.int64)


def _rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (Hz), got {value!r}")
    v = float(value)
    if not (v >= 0.0 and v != float("inf")):
        raise ValueError(f"{name} must be a finite rate >= 0 Hz, got {value!r}")
    return v


class _Boolean(Dataset):
    """Base class; subclasses define :meth:`function` on int64 tensors of bits."""

    def __init__(
        self,
        duration: float = 100.0,
        dt: float = 1.0,
        rate_on: float = 100.0,
        rate_off: float = 0.0,
        repeats: int = 1,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        # PoissonEncoder validates duration, dt and generator.
        self.encoder = PoissonEncoder(duration, dt, generator=generator, shape=())
        self.rate_on = _rate("rate_on", rate_on)
        self.rate_off = _rate("rate_off", rate_off)
        if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral):
            raise TypeError(f"repeats must be an int (neurons per bit), got {repeats!r}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1 (neurons per bit), got {repeats!r}")
        self.repeats = int(repeats)
        self.inputs: torch.Tensor = _PATTERNS.clone()  # (4, 2) bits
        self.labels: torch.Tensor = self.function(_PATTERNS[:, 0], _PATTERNS[:, 1])  # (4,)

    @staticmethod
    def function(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def duration(self) -> float:
        """Train length in ms."""
        return self.encoder.duration

    @property
    def dt(self) -> float:
        """Time step in ms."""
        return self.encoder.dt

    @property
    def num_steps(self) -> int:
        """Number of time steps ``T``."""
        return self.encoder.num_steps

    def rates(self, index: int) -> torch.Tensor:
        """Firing rates in Hz of the ``2 * repeats`` input neurons for item ``index``."""
        bits = self.inputs[index].repeat_interleave(self.repeats)
        return torch.where(bits.bool(), self.rate_on, self.rate_off).to(torch.float32)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        try:
            i = operator.index(index)
        except TypeError as err:
            raise TypeError(f"index must be an integer, got {type(index).__name__}") from err
        if isinstance(index, bool) or not -4 <= i < 4:
            raise IndexError(f"index must be an int in [-4, 4), got {index!r}")
        # Each neuron is one "batch" entry of the encoder: (2r,) -> (T, 2r).
        return self.encoder(self.rates(i)), int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(duration={self.duration}, dt={self.dt}, "
            f"rate_on={self.rate_on}, rate_off={self.rate_off}, repeats={self.repeats})"
        )


class XOR(_Boolean):
    """Exclusive or: labels 0, 1, 1, 0 for inputs (0,0), (0,1), (1,0), (1,1)."""

    @staticmethod
    def function(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a ^ b


class AND(_Boolean):
    """Logical and: labels 0, 0, 0, 1 for inputs (0,0), (0,1), (1,0), (1,1)."""

    @staticmethod
    def function(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a & b


class OR(_Boolean):
    """Logical or: labels 0, 1, 1, 1 for inputs (0,0), (0,1), (1,0), (1,1)."""

    @staticmethod
    def function(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a | b


# Constructor documentation shared by the three data sets.
_ARGS_DOC = """

    Args:
        duration: train length in ms.
        dt: time step in ms; ``T = round(duration / dt)``.
        rate_on: firing rate in Hz of a neuron coding a 1 bit.
        rate_off: firing rate in Hz of a neuron coding a 0 bit.
        repeats: input neurons per bit; items have shape ``(T, 2 * repeats)``.
        generator: optional :class:`torch.Generator` for the spike trains.
    """
for _cls in (XOR, AND, OR):
    _cls.__doc__ = (_cls.__doc__ or "") + _ARGS_DOC
