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

A tensor made under ``torch.inference_mode`` keeps no version counter (reading ``_version``
raises): :func:`version` gives ``None`` for it, and a :class:`Guard` checks such a tensor's
shape, strides and dtype besides its storage and bytes (what the version would have seen).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from operator import attrgetter
from typing import Callable, List, Optional, Sequence, Tuple

import torch

__all__ = ["Guard", "version", "fingerprint"]

#: Tensors up to this many bytes are compared as Python bytes; larger ones with ``memcmp``.
SMALL_BYTES = 256

_RAW = attrgetter("raw")
# (C-level callables: a map over them runs no Python frame per tensor)
_DATA_PTR = torch.Tensor.data_ptr
_VERSION = attrgetter("_version")


def version(tensor: torch.Tensor) -> Optional[int]:
    """Autograd's version counter of ``tensor``, or ``None`` for an inference tensor (made under
    ``torch.inference_mode``: it keeps none, or, given such data through ``.data``, one that
    torch's in-place operations outside the mode never move). Reading ``_version`` raises only
    for a tensor object made under inference mode, whatever data it is given later: a cache
    keyed to the object that got an ``int`` here may read ``_version`` again unguarded."""
    if tensor.is_inference():
        return None
    try:
        return tensor._version
    except RuntimeError:  # made under inference mode, then given normal data through .data
        return None


def _layout(tensor: torch.Tensor) -> Tuple[torch.Size, Tuple[int, ...], torch.dtype]:
    return tensor.shape, tensor.stride(), tensor.dtype


def fingerprint(tensor: torch.Tensor) -> object:
    """A value that an in-place edit of ``tensor`` changes, for a before/after comparison that
    runs once (not per step): its autograd version; without one (an inference tensor) its
    layout and a host copy of its bytes (a device sync on another device than the CPU)."""
    current = version(tensor)
    if current is not None:
        return current
    flat = tensor.detach().reshape(-1).cpu()
    return (*_layout(tensor), bytes(flat.view(torch.uint8).numpy()))


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
    :meth:`pysnn.neuron.Neuron.derived` caches nothing computed from such a tensor. A tensor
    without a version counter (:func:`version`) is guarded by its storage, layout and bytes on
    the CPU; on another device nothing would see its in-place edits, so the guard never holds.
    """

    __slots__ = (
        "tensors",
        "pointers",
        "versioned",
        "versions",
        "unversioned",
        "layouts",
        "small_views",
        "small",
        "large",
    )

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors: Tuple[torch.Tensor, ...] = tuple(tensors)
        # storage and autograd version: a swapped storage is never read, and an in-place
        # resize or re-stride (which moves the version) invalidates; without a version the
        # layout is compared instead
        self.pointers = list(map(_DATA_PTR, self.tensors))
        versioned: List[torch.Tensor] = []
        versions: List[int] = []
        unversioned: List[torch.Tensor] = []
        for t in self.tensors:
            v = version(t)
            if v is None:
                unversioned.append(t)
            else:
                versioned.append(t)
                versions.append(v)
        self.versioned: Tuple[torch.Tensor, ...] = tuple(versioned)
        self.versions = versions
        self.unversioned: Tuple[torch.Tensor, ...] = tuple(unversioned)
        self.layouts = list(map(_layout, unversioned))
        if not all(t.is_cpu for t in unversioned):
            # neither the version nor the bytes of such a tensor are seen: one pointer more
            # than there are tensors, so that the storage check below never passes
            self.pointers.append(-1)
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
        """Whether every guarded tensor has the storage, version (or, without one, layout) and
        bytes it had at construction (the storage is checked first: a swapped one is never
        read)."""
        if (
            list(map(_DATA_PTR, self.tensors)) != self.pointers
            or list(map(_VERSION, self.versioned)) != self.versions
            or (self.unversioned and list(map(_layout, self.unversioned)) != self.layouts)
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
