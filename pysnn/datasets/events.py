"""Address-event data: the N-MNIST binary format, binning events into spike tensors, and an
adapter for `tonic <https://tonic.readthedocs.io>`_ data sets.

Events are numpy structured arrays with the fields ``x`` (column), ``y`` (row), ``t``
(timestamp in **microseconds**) and ``p`` (polarity: 0 = OFF, 1 = ON), the convention of tonic.
Spike tensors are time first, ``(T, 2, H, W)``: channel 0 holds OFF events, channel 1 ON events.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "EVENT_DTYPE",
    "NMNIST_SENSOR_SHAPE",
    "read_nmnist_bin",
    "events_to_spike_tensor",
    "TonicAdapter",
]

#: dtype of the structured arrays returned by :func:`read_nmnist_bin`
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])

#: (height, width) of the N-MNIST sensor crop
NMNIST_SENSOR_SHAPE: Tuple[int, int] = (34, 34)

_OVERFLOW_Y = 240
_OVERFLOW_INCREMENT = 2**13  # microseconds, as in Orchard's reference reader and tonic


def read_nmnist_bin(path: Union[str, "os.PathLike[str]"]) -> np.ndarray:
    """Read an N-MNIST / N-Caltech101 ``.bin`` file (Orchard et al., 2015).

    Each event takes 40 bits (5 bytes, big-endian bit order):

    * byte 0: x address (8 bits), byte 1: y address (8 bits);
    * byte 2, bit 7: polarity (0 = OFF, 1 = ON);
    * byte 2 bits 6..0, byte 3, byte 4: 23-bit timestamp in microseconds.

    Events with ``y == 240`` are timestamp-overflow markers, as in the reference reader
    (``eventvision.py`` by G. Orchard, also used by tonic): they are removed and add 8192 us
    (2**13) to the timestamps of all following events. N-MNIST recordings (about 300 ms) contain
    none.

    Returns:
        Structured array of dtype :data:`EVENT_DTYPE` (fields ``x``, ``y``, ``t`` in us, ``p``),
        one entry per event, in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file size is not a multiple of 5 bytes.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5 != 0:
        raise ValueError(
            f"{path}: size {raw.size} bytes is not a multiple of 5 (40-bit N-MNIST events); "
            "truncated or not an N-MNIST .bin file"
        )
    ev = raw.reshape(-1, 5).astype(np.int64)
    x = ev[:, 0]
    y = ev[:, 1]
    p = ev[:, 2] >> 7
    t = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    overflow = y == _OVERFLOW_Y
    if overflow.any():
        t = t + _OVERFLOW_INCREMENT * np.cumsum(overflow)
    keep = ~overflow
    out = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    out["x"] = x[keep]
    out["y"] = y[keep]
    out["t"] = t[keep]
    out["p"] = p[keep]
    return out


def _field(events: Any, name: str) -> np.ndarray:
    try:
        values = events[name]
    except (KeyError, ValueError, IndexError, TypeError) as err:
        raise TypeError(
            "events must be a structured array or a mapping with fields 'x', 'y', 't' (us) and "
            f"'p'; field {name!r} is missing"
        ) from err
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"events[{name!r}] must be 1-D, got shape {values.shape}")
    return values


def _positive_ms(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of ms, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number of ms, got {value!r}")
    return v


def _check_shape(shape) -> Tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise TypeError(f"shape must be a pair (height, width), got {shape!r}") from err
    if h < 1 or w < 1:
        raise ValueError(f"shape must hold positive sizes (height, width), got {shape!r}")
    return h, w


def events_to_spike_tensor(
    events: Union[np.ndarray, Mapping[str, Any]],
    shape: Sequence[int] = NMNIST_SENSOR_SHAPE,
    dt: float = 1.0,
    duration: Optional[float] = None,
    binary: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Bin address events into a spike tensor of shape ``(T, 2, H, W)``.

    Time bin ``k`` covers ``[k * dt, (k + 1) * dt)`` ms measured from ``t = 0`` (timestamps are
    absolute, not relative to the first event). Event ``(x, y, t, p)`` lands in
    ``out[k, c, y, x]`` with ``k = floor(t / (1000 * dt))`` and channel ``c = 1`` if ``p > 0``
    (ON) else ``0`` (OFF; polarities coded 0/1, -1/1 or bool all work).

    Args:
        events: structured array (or mapping of 1-D arrays/tensors) with fields ``x``, ``y``,
            ``t`` (microseconds, >= 0) and ``p``.
        shape: sensor ``(height, width)``; default (34, 34) for N-MNIST.
        dt: bin width in ms.
        duration: window length in ms; ``T = round(duration / dt)`` and later events are dropped.
            ``None``: just long enough for the last event, ``T = floor(t_max / (1000 dt)) + 1``
            (``T = 0`` without events), so ``T`` varies between samples.
        binary: if True (default) a bin holds 1 when at least one event fell in it (spikes); if
            False it holds the event count.
        dtype: floating dtype of the result.

    Returns:
        ``(T, 2, H, W)`` tensor of 0/1 (or counts) on the CPU.

    Raises:
        ValueError: negative timestamps, or addresses outside ``shape``.
        TypeError: ``events`` lacks one of the fields.
    """
    h, w = _check_shape(shape)
    dt = _positive_ms("dt", dt)
    x = _field(events, "x").astype(np.int64)
    y = _field(events, "y").astype(np.int64)
    t = _field(events, "t")
    p = _field(events, "p")
    if not (len(x) == len(y) == len(t) == len(p)):
        raise ValueError(
            f"event fields differ in length: x {len(x)}, y {len(y)}, t {len(t)}, p {len(p)}"
        )
    if len(t) and (not np.all(np.isfinite(t)) or t.min() < 0):
        raise ValueError(f"event timestamps t must be finite and >= 0 us, found {t.min()!r}")
    for name, v, size in (("x", x, w), ("y", y, h)):
        if len(v) and (v.min() < 0 or v.max() >= size):
            bad = v[(v < 0) | (v >= size)][0]
            raise ValueError(
                f"event address {name}={bad} outside the sensor shape {(h, w)} (height, width)"
            )
    step = np.floor(t.astype(np.float64) / (1000.0 * dt)).astype(np.int64)
    if duration is None:
        num_steps = int(step.max()) + 1 if len(step) else 0
    else:
        num_steps = int(round(_positive_ms("duration", duration) / dt))
        if num_steps < 1:
            raise ValueError(
                f"duration / dt must give at least one time step, got duration={duration!r} ms "
                f"and dt={dt!r} ms"
            )
    channel = (p.astype(np.float64) > 0).astype(np.int64)
    inside = step < num_steps
    flat = ((step * 2 + channel) * h + y) * w + x
    flat = torch.from_numpy(flat[inside])
    out = torch.zeros(num_steps * 2 * h * w, dtype=dtype)
    if binary:
        out[flat] = 1
    else:
        out.index_add_(0, flat, torch.ones(flat.numel(), dtype=dtype))
    return out.view(num_steps, 2, h, w)


def _import_tonic():
    try:
        import tonic  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "this feature needs the optional package 'tonic': install it with `pip install tonic` "
            '(or the extra: `pip install ".[events]"` in a pysnn checkout)'
        ) from err
    return tonic


class TonicAdapter(torch.utils.data.Dataset):
    """Wrap an event data set (e.g. a ``tonic`` one) so that items become spike tensors.

    The wrapped data set's items must be ``(events, target)`` with ``events`` a structured array
    with fields ``x``, ``y``, ``t`` (microseconds) and ``p``, which is what tonic data sets
    return without a ``transform``. Items of the adapter are ``(spikes, target)`` with
    ``spikes`` a ``(T, 2, H, W)`` tensor from :func:`events_to_spike_tensor`. Wrapping a given
    data set does not need tonic; only :meth:`nmnist` imports it (lazily).

    Args:
        dataset: the event data set (anything indexable with ``len``).
        dt: bin width in ms.
        duration: window length in ms. Give it when batching with a ``DataLoader``: with
            ``None`` the number of steps follows each sample's last event and varies.
        shape: sensor ``(height, width)``. ``None``: taken from ``dataset.sensor_size``, tonic's
            ``(width, height, polarities)``.
        binary: 0/1 spikes if True, event counts per bin if False.
    """

    def __init__(
        self,
        dataset: Any,
        dt: float = 1.0,
        duration: Optional[float] = None,
        shape: Optional[Sequence[int]] = None,
        binary: bool = True,
    ) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"dataset must support len() and indexing, got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.dt = _positive_ms("dt", dt)
        self.duration = None if duration is None else _positive_ms("duration", duration)
        if shape is None:
            sensor = getattr(dataset, "sensor_size", None)
            if sensor is None or len(sensor) < 2:
                raise ValueError(
                    "shape is None and the dataset has no sensor_size (width, height, "
                    "polarities); pass shape=(height, width)"
                )
            shape = (int(sensor[1]), int(sensor[0]))
        self.shape = _check_shape(shape)
        self.binary = bool(binary)

    @classmethod
    def nmnist(
        cls,
        save_to: Union[str, "os.PathLike[str]"],
        train: bool = True,
        dt: float = 1.0,
        duration: Optional[float] = None,
        **tonic_kwargs: Any,
    ) -> "TonicAdapter":
        """``tonic.datasets.NMNIST(save_to, train=train, **tonic_kwargs)`` wrapped in an adapter.

        Raises:
            ImportError: tonic is not installed (``pip install tonic``).
        """
        tonic = _import_tonic()
        dataset = tonic.datasets.NMNIST(save_to=str(save_to), train=train, **tonic_kwargs)
        return cls(dataset, dt=dt, duration=duration, shape=NMNIST_SENSOR_SHAPE)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Any]:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(
                f"items of the wrapped dataset must be (events, target) pairs, got "
                f"{type(item).__name__}"
            )
        events, target = item
        spikes = events_to_spike_tensor(
            events, shape=self.shape, dt=self.dt, duration=self.duration, binary=self.binary
        )
        return spikes, target

    def __repr__(self) -> str:
        return (
            f"TonicAdapter({type(self.dataset).__name__}, size={len(self)}, dt={self.dt}, "
            f"duration={self.duration}, shape={self.shape})"
        )
