"""Data sets: MNIST (full IDX files or a bundled sample), N-MNIST style address events and
Boolean toy problems.

* :class:`MNIST`, :class:`MNISTSample`, :func:`load_mnist`: images as float32 ``(28, 28)``
  tensors of raw pixel values 0..255, labels as ``int``.
* :func:`read_nmnist_bin`, :func:`events_to_spike_tensor`, :class:`TonicAdapter`: events to
  ``(T, 2, H, W)`` spike tensors.
* :class:`XOR`, :class:`AND`, :class:`OR`: 4 patterns of 2 bits as ``(T, 2 * repeats)`` Poisson
  spike trains.
"""

from pysnn.datasets.boolean import AND, OR, XOR
from pysnn.datasets.events import (
    EVENT_DTYPE,
    NMNIST_SENSOR_SHAPE,
    TonicAdapter,
    events_to_spike_tensor,
    read_nmnist_bin,
)
from pysnn.datasets.mnist import MNIST, MNISTSample, download_mnist, load_mnist, read_idx

__all__ = [
    "MNIST",
    "MNISTSample",
    "load_mnist",
    "download_mnist",
    "read_idx",
    "read_nmnist_bin",
    "events_to_spike_tensor",
    "TonicAdapter",
    "EVENT_DTYPE",
    "NMNIST_SENSOR_SHAPE",
    "XOR",
    "AND",
    "OR",
]
