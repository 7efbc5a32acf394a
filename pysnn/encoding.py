"""Encoders that turn static inputs (intensities or firing rates) into spike trains.

Every encoder is an :class:`torch.nn.Module` built as ``Encoder(duration, dt=1.0, ...)`` where
``duration`` and ``dt`` are in **ms**. The number of time steps is ``T = round(duration / dt)``.

``encoder(x)`` takes ``x`` of shape ``(B, *shape)`` (batch first) and returns a tensor of shape
``(T, B, *shape)`` (time first), on ``x``'s device. The output dtype is ``x``'s dtype when ``x`` is
a floating point tensor, otherwise :func:`torch.get_default_dtype` (so a ``uint8`` image batch can
be fed directly). The caller's tensor is never modified.

**Declare the sample shape.** An encoder cannot tell one unbatched sample from a batch: a
``(28, 28)`` image is also a batch of 28 samples of 28 inputs. Build encoders with ``shape=``,
the shape of one sample (e.g. ``PoissonEncoder(100.0, shape=(28, 28))`` or ``shape=784``):
``x`` must then be ``(B, *shape)``, or one sample of exactly ``shape``, which is encoded as a
batch of one, ``(T, 1, *shape)``; any other shape raises ``ValueError``. Without ``shape``, ``x``
is read as ``(B, *shape)``; when that reading is ambiguous in the usual way (the batch size equals
the next dimension, as for one unbatched square image such as ``(28, 28)``) the first such call
warns (``UserWarning``, once per encoder), saying how it was read and to add the batch dimension
(``x.unsqueeze(0)``) or pass ``shape=``.
``shape=()`` declares a batch of scalars, ``(B,)``.

``encoder.stream(x)`` returns a generator that yields one ``(B, *shape)`` tensor per time step, so
long simulations never hold the whole ``T x B x N`` spike tensor in memory.

Inputs are validated: negative values (except for :class:`RepeatEncoder`), NaN and infinity raise
``ValueError``. That check reads a value back from the device, so it follows
:func:`pysnn.set_checks` (on by default) and is skipped under ``torch.compile``.

Reproducibility: the stochastic encoders (:class:`PoissonEncoder`, :class:`BernoulliEncoder`) take
an optional ``generator`` (:class:`torch.Generator`) in their constructor; all random numbers are
drawn from it. When the generator lives on a different device than ``x`` the random numbers are
drawn on the generator's device and copied to ``x``'s device, so a CPU-seeded generator gives the
same spikes for CPU and GPU inputs. The deterministic encoders (:class:`LatencyEncoder`,
:class:`RankOrderEncoder`, :class:`RepeatEncoder`) take no generator.

Summary
-------
==================== ====================== =================================================
encoder              input ``x``            spikes
==================== ====================== =================================================
PoissonEncoder       rates in Hz (>= 0)     Poisson process, at most one spike per bin
BernoulliEncoder     intensities in [0, 1]  Bernoulli(``x * max_prob``) per step
LatencyEncoder       intensities >= 0       one spike; time linear or logarithmic in intensity
RankOrderEncoder     intensities >= 0       one spike; time given by the rank within a sample
RepeatEncoder        any finite values      ``x`` repeated at every step (not binary)
==================== ====================== =================================================
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from pysnn._checks import checks_enabled

ShapeLike = Union[int, Sequence[int]]

__all__ = [
    "Encoder",
    "PoissonEncoder",
    "BernoulliEncoder",
    "LatencyEncoder",
    "RankOrderEncoder",
    "RepeatEncoder",
]


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------
def _as_real(name: str, value) -> float:
    """Return ``value`` as a Python float, raising TypeError when it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Tensor)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(f"{name} must be a real scalar, got a tensor of shape {value.shape}")
        value = value.item()
    return float(value)


def _positive(name: str, value, unit: str = "") -> float:
    """Check that ``value`` is a finite, strictly positive real number."""
    v = _as_real(name, value)
    if not math.isfinite(v) or v <= 0.0:
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"{name} must be a positive finite number{suffix}, got {value!r}")
    return v


def _in_range(name: str, value, low: float, high: float, low_open: bool, high_open: bool) -> float:
    v = _as_real(name, value)
    ok_low = v > low if low_open else v >= low
    ok_high = v < high if high_open else v <= high
    if not (math.isfinite(v) and ok_low and ok_high):
        interval = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def _sample_shape(shape: Optional[ShapeLike], min_dim: int) -> Optional[Tuple[int, ...]]:
    """``shape`` as a tuple of positive ints (``None`` stays ``None``), with at least
    ``min_dim - 1`` dimensions (the batch dimension is not part of it)."""
    if shape is None:
        return None
    if isinstance(shape, bool):
        raise TypeError(f"shape must be None, an int or a sequence of ints, got {shape!r}")
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(
            f"shape must be None, an int or a sequence of ints, got {shape!r}"
        ) from None
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in dims):
        raise TypeError(f"shape must contain ints, got {shape!r}")
    if any(d < 1 for d in dims):
        raise ValueError(f"shape must contain positive sizes, got {shape!r}")
    if len(dims) < min_dim - 1:
        raise ValueError(
            f"shape must have at least {min_dim - 1} dimension(s) for this encoder, got {shape!r}"
        )
    return tuple(int(d) for d in dims)


def _check_generator(generator) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _uniform(shape: Tuple[int, ...], like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform [0, 1) samples of ``shape`` with ``like``'s dtype and device.

    With a generator on another device type than ``like``, the samples are drawn on the
    generator's device and moved, which keeps results identical across devices for one seed.
    """
    if generator is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    if generator.device.type != like.device.type:
        u = torch.rand(shape, dtype=like.dtype, device=generator.device, generator=generator)
        return u.to(like.device)
    return torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)


def _round_half_up(v: Tensor) -> Tensor:
    """Round to the nearest integer, ties upwards (``floor(v + 0.5)``), as int64."""
    return torch.floor(v + 0.5).to(torch.int64)


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Base class of all encoders.

    Args:
        duration: length of the spike train in ms (> 0).
        dt: simulation time step in ms (> 0). The train has ``T = round(duration / dt)`` steps,
            which must be at least 1.
        shape: the shape of one sample (an int or a sequence of ints; ``()`` for scalars), or
            ``None``. Given, ``x`` must be ``(B, *shape)`` or one sample of exactly ``shape``
            (encoded as a batch of one); ``None``: ``x`` is read as ``(B, *shape)`` and the first
            call warns, since one unbatched sample looks like a batch (see the module docstring).

    Subclasses implement :meth:`_prepare` (per-input precomputation, shape ``(B, *shape)``),
    :meth:`_encode` (whole train, ``(T, B, *shape)``) and :meth:`_step` (one step).
    """

    #: whether negative inputs are rejected
    _nonnegative: bool = True
    #: smallest number of dimensions of ``x`` (1 = a batch of scalars)
    _min_dim: int = 1

    def __init__(
        self, duration: float, dt: float = 1.0, *, shape: Optional[ShapeLike] = None
    ) -> None:
        super().__init__()
        #: shape of one sample (without the batch dimension), or ``None`` if not declared
        self.shape: Optional[Tuple[int, ...]] = _sample_shape(shape, self._min_dim)
        self._warned = False
        self.duration: float = _positive("duration", duration, "ms")
        self.dt: float = _positive("dt", dt, "ms")
        steps = int(round(self.duration / self.dt))
        if steps < 1:
            raise ValueError(
                f"duration / dt must give at least one time step, got duration={duration!r} ms "
                f"and dt={dt!r} ms (round(duration / dt) = {steps})"
            )
        self.num_steps: int = steps

    # -- public API ----------------------------------------------------------------------------
    @property
    def T(self) -> int:  # noqa: N802 - conventional symbol for the number of steps
        """Number of time steps ``round(duration / dt)``."""
        return self.num_steps

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` of shape ``(B, *shape)`` into a train of shape ``(T, B, *shape)``.

        With a declared ``shape``, one sample of exactly ``shape`` gives ``(T, 1, *shape)``.
        """
        x = self._check_input(x)
        return self._encode(x, self._prepare(x))

    def stream(self, x: Tensor) -> Iterator[Tensor]:
        """Yield the train of ``x`` (shape ``(B, *shape)``) one ``(B, *shape)`` step at a time.

        ``x`` is validated immediately (not at the first ``next``), and the precomputed
        per-input quantities are copies, so changing ``x`` afterwards does not affect the stream.
        """
        x = self._check_input(x)
        state = self._prepare(x)
        return self._stream(x, state)

    def extra_repr(self) -> str:
        return f"duration={self.duration}, dt={self.dt}, T={self.num_steps}, shape={self.shape}"

    # -- to be implemented ---------------------------------------------------------------------
    def _prepare(self, x: Tensor):
        raise NotImplementedError

    def _encode(self, x: Tensor, state) -> Tensor:
        raise NotImplementedError

    def _step(self, x: Tensor, state, t: int) -> Tensor:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------
    def _stream(self, x: Tensor, state) -> Iterator[Tensor]:
        for t in range(self.num_steps):
            yield self._step(x, state, t)

    def _batched(self, x: Tensor) -> Tensor:
        """``x`` as ``(B, *shape)``: checked against the declared ``shape`` (one sample gets a
        batch dimension), or read as batch first with a warning at the first call."""
        if self.shape is not None:
            if tuple(x.shape) == self.shape:
                return x.unsqueeze(0)
            if tuple(x.shape[1:]) != self.shape:
                dims = ", ".join(str(d) for d in ("B", *self.shape))
                raise ValueError(
                    f"x must have shape ({dims}) or, for one sample, {self.shape} (the encoder's "
                    f"shape), got {tuple(x.shape)}"
                )
            return x
        if x.dim() < self._min_dim:
            raise ValueError(
                f"x must have at least {self._min_dim} dimension(s) (batch first: (B, *shape)), "
                f"got shape {tuple(x.shape)}"
            )
        if not self._warned and x.dim() >= 2 and x.shape[0] == x.shape[1]:
            # (28, 28): an unbatched square image, or 28 samples of 28 inputs? Ask once.
            self._warned = True
            warnings.warn(
                f"{type(self).__name__} was built without shape= and reads x of shape "
                f"{tuple(x.shape)} as a batch of {x.shape[0]} sample(s) of shape "
                f"{tuple(x.shape[1:])}. If x is one sample, add the batch dimension "
                f"(encoder(x.unsqueeze(0))). Pass shape={tuple(x.shape[1:])} to the constructor "
                f"to declare the sample shape (then one unbatched sample is accepted) and silence "
                f"this warning.",
                UserWarning,
                stacklevel=4,
            )
        return x

    def _check_input(self, x: Tensor) -> Tensor:
        """Validate ``x`` and return it as a floating point tensor (never modified in place)."""
        if not isinstance(x, Tensor):
            raise TypeError(
                f"x must be a torch.Tensor of shape (B, *shape), got {type(x).__name__}"
            )
        if x.is_complex():
            raise TypeError(f"x must be a real tensor, got dtype {x.dtype}")
        x = self._batched(x)
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        # Value checks read a boolean back from the device (a host sync on GPU): they follow
        # pysnn.set_checks / pysnn.checks and are skipped under torch.compile.
        if x.numel() > 0 and checks_enabled() and not torch.compiler.is_compiling():
            if self._nonnegative:
                # ~(x >= 0) is True for negative values and NaN; one reduction, one sync.
                bad = ~(x >= 0) | torch.isinf(x)
                if bool(bad.any()):
                    first = x[bad][0].item()
                    raise ValueError(
                        f"x must contain finite non-negative values (rates/intensities), "
                        f"found {first!r}"
                    )
            elif bool((~torch.isfinite(x)).any()):
                first = x[~torch.isfinite(x)][0].item()
                raise ValueError(f"x must contain finite values, found {first!r}")
        return x


# ----------------------------------------------------------------------------------------------
# Stochastic encoders
# ----------------------------------------------------------------------------------------------
class PoissonEncoder(Encoder):
    r"""Poisson spike trains from firing rates in Hz.

    ``x`` holds rates :math:`r \ge 0` in **Hz** (e.g. ``pixel / 255 * 63.75`` for the Diehl & Cook
    MNIST model). Each neuron follows a homogeneous Poisson process of rate :math:`r`, observed in
    bins of ``dt`` ms:

    * ``binary=True`` (default): a bin holds a spike iff the Poisson process has **at least one**
      event in it, i.e. independent Bernoulli draws with
      :math:`p = 1 - e^{-r\,dt/1000}` per step. Inter-spike intervals are geometric, the discrete
      counterpart of the exponential: the ISI coefficient of variation is :math:`\sqrt{1 - p}`
      (0.990 at 20 Hz, dt = 1 ms), not the ~0.2 of encoders that add a refractory step. The mean
      rate is :math:`p / dt`, slightly below :math:`r` when :math:`r\,dt` is not small (19.8 Hz for
      20 Hz at dt = 1 ms; 632 Hz for 1000 Hz): several events in one bin collapse into one spike,
      and the rate saturates at :math:`1/dt`. Use a smaller ``dt`` when :math:`r\,dt/1000` is not
      small.
    * ``binary=False``: the exact number of events per bin, Poisson distributed with mean
      :math:`r\,dt/1000` (values can exceed 1). The mean rate is exactly :math:`r`.

    Args:
        duration: train length in ms.
        dt: time step in ms.
        binary: spike indicator (0/1) per bin if True, event counts if False.
        generator: optional :class:`torch.Generator` used for every random draw.
        shape: the shape of one sample, or ``None`` (see :class:`Encoder`).

    Shapes:
        ``x``: ``(B, *shape)`` rates in Hz; output ``(T, B, *shape)``.
    """

    def __init__(
        self,
        duration: float,
        dt: float = 1.0,
        binary: bool = True,
        generator: Optional[torch.Generator] = None,
        *,
        shape: Optional[ShapeLike] = None,
    ) -> None:
        super().__init__(duration, dt, shape=shape)
        if not isinstance(binary, bool):
            raise TypeError(f"binary must be a bool, got {binary!r}")
        self.binary = binary
        self.generator = _check_generator(generator)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", binary={self.binary}"

    def _prepare(self, x: Tensor) -> Tensor:
        lam = x * (self.dt / 1000.0)  # expected events per bin
        if self.binary:
            return -torch.expm1(-lam)  # P(at least one event) = 1 - exp(-lam)
        return lam

    def _poisson(self, lam: Tensor) -> Tensor:
        g = self.generator
        if g is not None and g.device.type != lam.device.type:
            return torch.poisson(lam.to(g.device), generator=g).to(lam.device)
        return torch.poisson(lam, generator=g)

    def _encode(self, x: Tensor, state: Tensor) -> Tensor:
        shape = (self.num_steps,) + tuple(x.shape)
        if self.binary:
            return (_uniform(shape, x, self.generator) < state).to(x.dtype)
        return self._poisson(state.unsqueeze(0).expand(shape).contiguous())

    def _step(self, x: Tensor, state: Tensor, t: int) -> Tensor:
        if self.binary:
            return (_uniform(tuple(x.shape), x, self.generator) < state).to(x.dtype)
        return self._poisson(state)


class BernoulliEncoder(Encoder):
    r"""Independent Bernoulli spikes with probability proportional to intensity (as BindsNET).

    At every step, a neuron spikes with probability :math:`p = \min(1, x \cdot max\_prob)`;
    ``x`` holds intensities, nominally in [0, 1]. The probability is per **step**, so the
    resulting rate :math:`p / dt` depends on ``dt``.

    Args:
        duration: train length in ms.
        dt: time step in ms.
        max_prob: spike probability per step of an input equal to 1, in [0, 1].
        normalize: if True, each sample whose maximum exceeds 1 is divided by its maximum first
            (BindsNET's behaviour, done per sample and without modifying ``x``).
        generator: optional :class:`torch.Generator` used for every random draw.
        shape: the shape of one sample, or ``None`` (see :class:`Encoder`).

    Shapes:
        ``x``: ``(B, *shape)`` intensities >= 0; output ``(T, B, *shape)`` of 0/1.
    """

    def __init__(
        self,
        duration: float,
        dt: float = 1.0,
        max_prob: float = 1.0,
        normalize: bool = False,
        generator: Optional[torch.Generator] = None,
        *,
        shape: Optional[ShapeLike] = None,
    ) -> None:
        super().__init__(duration, dt, shape=shape)
        self.max_prob = _in_range("max_prob", max_prob, 0.0, 1.0, False, False)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        self.normalize = normalize
        self.generator = _check_generator(generator)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_prob={self.max_prob}, normalize={self.normalize}"

    def _prepare(self, x: Tensor) -> Tensor:
        if self.normalize and x.dim() > 1 and x.numel() > 0:
            peak = x.flatten(1).amax(dim=1).clamp(min=1.0)
            x = x / peak.view((-1,) + (1,) * (x.dim() - 1))
        elif self.normalize and x.numel() > 0:
            x = x / x.clamp(min=1.0)
        return (x * self.max_prob).clamp(0.0, 1.0)

    def _encode(self, x: Tensor, state: Tensor) -> Tensor:
        shape = (self.num_steps,) + tuple(x.shape)
        return (_uniform(shape, x, self.generator) < state).to(x.dtype)

    def _step(self, x: Tensor, state: Tensor, t: int) -> Tensor:
        return (_uniform(tuple(x.shape), x, self.generator) < state).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Single-spike (temporal) encoders
# ----------------------------------------------------------------------------------------------
class _SingleSpikeEncoder(Encoder):
    """Encoders in which each input spikes at most once, at a computed step index."""

    def _steps(self, x: Tensor) -> Tensor:
        """Step index in ``[0, T)`` of each input's spike, or -1 for no spike (int64)."""
        raise NotImplementedError

    def _prepare(self, x: Tensor) -> Tensor:
        return self._steps(x)

    def _encode(self, x: Tensor, state: Tensor) -> Tensor:
        t = torch.arange(self.num_steps, device=x.device).view((-1,) + (1,) * x.dim())
        return (t == state.unsqueeze(0)).to(x.dtype)

    def _step(self, x: Tensor, state: Tensor, t: int) -> Tensor:
        return (state == t).to(x.dtype)

    def spike_steps(self, x: Tensor) -> Tensor:
        """Step index of each input's single spike (``-1`` = never spikes).

        Shapes: ``x`` ``(B, *shape)``; returns an int64 tensor ``(B, *shape)``. The spike time in
        ms is ``index * dt``.
        """
        return self._steps(self._check_input(x))


class LatencyEncoder(_SingleSpikeEncoder):
    r"""Time-to-first-spike code: each input spikes once, stronger inputs earlier.

    Inputs are normalised as :math:`u = \min(x / x\_max, 1)`. With :math:`T` steps, the spike
    step index (time ``k * dt`` ms) is

    * ``mode="linear"``: :math:`k = \lfloor (1 - u)(T - 1) + 1/2 \rfloor`
      (u = 1 at step 0, u -> 0 at step T - 1);
    * ``mode="log"``: :math:`k = \lfloor \frac{\ln u}{\ln \theta}(T - 1) + 1/2 \rfloor`
      (u = 1 at step 0, u = threshold :math:`\theta` at step T - 1; equal intensity *ratios*
      give equal time differences).

    Inputs with :math:`u \le \theta` (``threshold``) never spike; in particular a zero input
    never spikes.

    Args:
        duration: train length in ms.
        dt: time step in ms.
        x_max: intensity that spikes at step 0 (> 0); larger inputs are clipped to it.
        mode: ``"linear"`` or ``"log"``.
        threshold: :math:`\theta`, normalised intensity at or below which no spike is emitted.
            Defaults to 0 for ``"linear"`` and 0.01 for ``"log"`` (where it must be in (0, 1)).
        shape: the shape of one sample, or ``None`` (see :class:`Encoder`).

    Shapes:
        ``x``: ``(B, *shape)`` intensities >= 0; output ``(T, B, *shape)`` with at most one 1
        per input.
    """

    def __init__(
        self,
        duration: float,
        dt: float = 1.0,
        x_max: float = 1.0,
        mode: str = "linear",
        threshold: Optional[float] = None,
        *,
        shape: Optional[ShapeLike] = None,
    ) -> None:
        super().__init__(duration, dt, shape=shape)
        self.x_max = _positive("x_max", x_max)
        if mode not in ("linear", "log"):
            raise ValueError(f"mode must be 'linear' or 'log', got {mode!r}")
        self.mode = mode
        if threshold is None:
            threshold = 0.0 if mode == "linear" else 0.01
        if mode == "linear":
            self.threshold = _in_range("threshold", threshold, 0.0, 1.0, False, True)
        else:
            self.threshold = _in_range("threshold", threshold, 0.0, 1.0, True, True)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", x_max={self.x_max}, mode={self.mode!r}, threshold={self.threshold}"
        )

    def _steps(self, x: Tensor) -> Tensor:
        u = (x / self.x_max).clamp(max=1.0)
        fires = u > self.threshold
        if self.mode == "linear":
            frac = 1.0 - u
        else:
            frac = torch.log(u.clamp(min=self.threshold)) / math.log(self.threshold)
        k = _round_half_up(frac * (self.num_steps - 1))
        return torch.where(fires, k, torch.full_like(k, -1))


class RankOrderEncoder(_SingleSpikeEncoder):
    r"""Rank-order code: within each sample, inputs spike once in order of decreasing intensity.

    Only the order carries information (Thorpe's rank-order coding), not the magnitude. For each
    sample, the positive inputs are ranked by decreasing intensity with competition ranking
    (:math:`r_i` = number of inputs of the same sample strictly greater than :math:`x_i`, so
    equal inputs share a rank and spike together). With :math:`n` positive inputs in the sample
    and :math:`T` steps, input :math:`i` spikes at step

    .. math:: k_i = \lfloor r_i \, T / n \rfloor,

    which spreads the ranks evenly over the window (the strongest input spikes at step 0). When
    :math:`n > T`, neighbouring ranks share a step. Zero inputs never spike.

    Args:
        duration: train length in ms.
        dt: time step in ms.
        shape: the shape of one sample, or ``None`` (see :class:`Encoder`).

    Shapes:
        ``x``: ``(B, *shape)`` with at least 2 dimensions (ranking is over all features of a
        sample); output ``(T, B, *shape)`` with at most one 1 per input.
    """

    _min_dim = 2

    def _steps(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)  # (B, N)
        n_feat = flat.shape[1]
        ascending, _ = torch.sort(flat, dim=1)
        # number of entries <= x_i, hence n_feat - that = number strictly greater than x_i
        rank = n_feat - torch.searchsorted(ascending, flat.contiguous(), right=True)
        positive = flat > 0
        n_pos = positive.sum(dim=1, keepdim=True).clamp(min=1)
        k = torch.div(rank * self.num_steps, n_pos, rounding_mode="floor")
        k = torch.where(positive, k, torch.full_like(k, -1))
        return k.view(x.shape)


# ----------------------------------------------------------------------------------------------
# Analog repetition
# ----------------------------------------------------------------------------------------------
class RepeatEncoder(Encoder):
    """Repeat the input unchanged at every time step (e.g. constant input current).

    The output is not binary: it is ``x`` itself at each step. The returned train is a fresh,
    materialised copy (``(T, B, *shape)``); :meth:`stream` yields a fresh copy of ``x`` per step.
    Negative values are allowed; NaN and infinity are rejected.

    Args:
        duration: train length in ms.
        dt: time step in ms.
        shape: the shape of one sample, or ``None`` (see :class:`Encoder`).

    Shapes:
        ``x``: ``(B, *shape)``; output ``(T, B, *shape)``.
    """

    _nonnegative = False

    def _prepare(self, x: Tensor) -> Tensor:
        return x.clone()

    def _encode(self, x: Tensor, state: Tensor) -> Tensor:
        return state.unsqueeze(0).repeat((self.num_steps,) + (1,) * x.dim())

    def _step(self, x: Tensor, state: Tensor, t: int) -> Tensor:
        return state.clone()
