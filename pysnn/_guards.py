"""Guards: is a result computed from some tensors still valid for them? (not public API)

A cached result (the discretised constants of a neuron, a fused step that reuses them) is valid
while the tensors it was computed from hold the same values. :class:`Guard` checks exactly that,
once per replay: the same storage (data pointer), shape and dtype, and the same **bytes**. Every
write is seen, whatever path it took: an in-place op (which also moves autograd's version
counter), a write through ``.data`` or ``detach()`` (which does not), a NumPy view, a
``load_state_dict``. A write that leaves the bytes as they were leaves the result valid too.

The check reads the guarded memory: about 0.1 µs per small tensor (a 0-d constant), a
``memcmp`` for larger ones, so a per-neuron constant of ``n`` values costs one pass over
``4 n`` bytes per replay, far less than the step it guards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from operator import attrgetter
from typing import Callable, Optional, Sequence, Tuple

import torch

__all__ = ["Guard"]

#: Tensors up to this many bytes are compared as Python bytes; larger ones with ``memcmp``.
SMALL_BYTES = 256

_RAW = attrgetter("raw")
# (C-level callables: a map over them runs no Python frame per tensor)
_DATA_PTR = torch.Tensor.data_ptr
_VERSION = attrgetter("_version")


def _libc_memcmp() -> Optional[Callable[..., int]]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        memcmp = libc.memcmp
    except (OSError, AttributeError, TypeError):  # no C library to load: bytes comparisons
        return None
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    memcmp.restype = ctypes.c_int
    return memcmp


_memcmp = _libc_memcmp()


class Guard:
    """The values of ``tensors`` (CPU tensors: constants, parameters) at construction, for
    :meth:`holds` to tell whether any of them changed since.

    Tensors on other devices are guarded by storage and autograd version only (a device-side
    comparison would be a host sync per replay), which misses a write through ``.data``: so
    :meth:`pysnn.neuron.Neuron.derived` caches nothing computed from such a tensor.
    """

    __slots__ = ("tensors", "pointers", "versions", "small_views", "small", "large")

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors: Tuple[torch.Tensor, ...] = tuple(tensors)
        # storage and autograd version: a swapped storage is never read, and an in-place
        # resize or re-stride (which moves the version) invalidates
        self.pointers = list(map(_DATA_PTR, self.tensors))
        self.versions = list(map(_VERSION, self.tensors))
        small_views, small, large = [], [], []
        for t in self.tensors:
            nbytes = t.numel() * t.element_size()
            if not t.is_cpu:
                continue  # another device: storage and version only
            if not t.is_contiguous():
                # a strided view (e.g. an expanded constant): compare its values
                large.append((t, t.detach().clone(), None))
            elif nbytes <= SMALL_BYTES or _memcmp is None:
                view = (ctypes.c_char * nbytes).from_address(t.data_ptr())
                small_views.append(view)
                small.append(view.raw)
            else:
                snapshot = ctypes.create_string_buffer(nbytes)
                ctypes.memmove(snapshot, t.data_ptr(), nbytes)
                large.append((t, snapshot, nbytes))
        self.small_views, self.small, self.large = small_views, small, large

    def holds(self) -> bool:
        """Whether every guarded tensor has the storage, version and bytes it had at
        construction (the storage is checked first: a swapped one is never read)."""
        if (
            list(map(_DATA_PTR, self.tensors)) != self.pointers
            or list(map(_VERSION, self.tensors)) != self.versions
        ):
            return False
        if list(map(_RAW, self.small_views)) != self.small:
            return False
        for tensor, snapshot, nbytes in self.large:
            if nbytes is None:
                if not torch.equal(tensor, snapshot):
                    return False
            elif _memcmp(tensor.data_ptr(), snapshot, nbytes) != 0:
                return False
        return True
