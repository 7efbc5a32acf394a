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

A weight is too large to compare at every step (a 784 x 400 ``memcmp`` costs more than an
event-driven step). What is derived from one (the presynaptic-major copy of
:class:`~pysnn.connection.Linear`, the "bounds checked" mark of a connection) holds a
:class:`Stamp` instead: the object, its storage, its autograd version and its writes through
``.data``, which a :class:`TrackedParameter` counts (a write through ``.data`` moves no version).
These two classes are the whole validity mechanism of the modules: every cache of a module
holds a ``Guard`` or a ``Stamp`` and is used only while it holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import weakref
from operator import attrgetter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["Guard", "Stamp", "TrackedParameter", "version", "fingerprint", "edits"]

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


class _DataAccess:
    """Writes to a parameter that bypass autograd's version counter, as seen through ``.data``."""

    __slots__ = ("epoch", "aliases")

    def __init__(self) -> None:
        self.epoch = 0  # bumped on every ``.data`` get or set, and when an alias dies
        self.aliases: List[weakref.ref] = []  # live tensors returned by ``.data``

    def _forget(self, ref: weakref.ref) -> None:
        self.epoch += 1
        self.aliases = [a for a in self.aliases if a is not ref]

    def state(self) -> object:
        """Changes whenever the parameter may have been written through ``.data``: the epoch,
        with the versions of the live aliases when there are any."""
        if not self.aliases:
            return self.epoch
        return (self.epoch, tuple(_alias_state(alias()) for alias in self.aliases))


def _alias_state(alias: Optional[torch.Tensor]) -> object:
    """The version of a live ``.data`` alias, -1 for a dead one; a new object (equal to no
    earlier state) for an alias without a version counter (an inference tensor), whose writes
    cannot be seen."""
    if alias is None:
        return -1
    seen = version(alias)
    return object() if seen is None else seen


_PARAMETER_NEW = nn.Parameter.__new__.__code__


class TrackedParameter(nn.Parameter):
    """An ``nn.Parameter`` whose writes through ``.data`` are visible to pysnn.

    ``param.data`` has a version counter of its own, so ``param.data.fill_(0)`` leaves
    ``param._version`` unchanged. This class counts every ``.data`` access and keeps each tensor it
    returned (weakly), so that a :class:`Stamp` of it no longer holds after such a write. pysnn
    gives the plain ``weight`` of a connection this class (the same object: optimisers keep
    working). It behaves as an ``nn.Parameter`` otherwise (``isinstance``, optimisers,
    ``state_dict``, pruning and parametrisations); pickling gives a plain ``nn.Parameter``.
    """

    def _access(self) -> _DataAccess:
        access = self.__dict__.get("_pysnn_access")
        if access is None:
            access = self.__dict__["_pysnn_access"] = _DataAccess()
        return access

    @property
    def data(self) -> torch.Tensor:  # type: ignore[override]
        access = self._access()
        alias = nn.Parameter.data.__get__(self)
        access.epoch += 1
        access.aliases.append(weakref.ref(alias, access._forget))
        return alias

    @data.setter
    def data(self, value: torch.Tensor) -> None:
        self._access().epoch += 1
        nn.Parameter.data.__set__(self, value)

    def detach(self) -> torch.Tensor:
        detached = super().detach()
        if sys._getframe(1).f_code is _PARAMETER_NEW:
            # ``nn.Parameter(this)`` (e.g. in parametrize's weight_norm) wants detach() to keep
            # the type of a Parameter subclass; everywhere else detach() gives a plain tensor.
            detached.__class__ = TrackedParameter
        return detached

    def edits(self) -> object:
        """A value that changes whenever ``.data`` may have been written."""
        return self._access().state()

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_pysnn_access"}

    def __repr__(self) -> str:
        return repr(nn.Parameter(nn.Parameter.data.__get__(self), self.requires_grad))


_NO_EDITS = -1  # (the edits of any other tensor: no epoch of a TrackedParameter)


def edits(tensor: torch.Tensor) -> object:
    """A value that changes whenever ``.data`` of ``tensor`` may have been written: seen only for
    a :class:`TrackedParameter` (a constant for any other tensor)."""
    return tensor.edits() if tensor.__class__ is TrackedParameter else _NO_EDITS


class Stamp:
    """The state of one tensor (a weight, a ring position, a sparse connection's indices) as
    pysnn sees it without reading its values, for :meth:`holds` to tell whether it may have been
    written since.

    It is the tensor object, its storage (data pointer: ``.to()``, ``.data = ...``), its autograd
    version (every in-place op: ``copy_``, optimiser steps, ``load_state_dict``) and its writes
    through ``.data`` (:class:`TrackedParameter`; for another tensor they go unseen). A tensor
    without a version counter (made under ``torch.inference_mode``) is compared by its bytes
    instead, a :class:`Guard` (which on another device than the CPU never holds), when
    ``values=True``; with ``values=False`` its in-place edits go unseen (:attr:`sees_values` is
    then false). pysnn keeps one for the presynaptic-major copy of a weight, one for the bounds
    check of each connection (an edit pysnn makes itself gives both the same new stamp), one for
    the host copy of a ring position and one per index buffer of a sparse connection's padded
    rows. A copied stamp (pickle, deepcopy) stamps no tensor and never holds.
    """

    __slots__ = ("source", "version", "pointer", "edits", "guard", "access", "sees_values")

    def __init__(self, tensor: torch.Tensor, values: bool = True) -> None:
        self.source = tensor
        #: autograd's version counter, ``None`` for a tensor without one
        self.version: Optional[int] = version(tensor)
        # the ``.data`` writes of a TrackedParameter, counted by an object it keeps for good
        self.access = tensor._access() if tensor.__class__ is TrackedParameter else None
        self.pointer: int = tensor.data_ptr()
        self.edits: object = _NO_EDITS if self.access is None else self.access.state()
        unversioned = self.version is None
        self.guard: Optional[Guard] = Guard([tensor]) if unversioned and values else None
        #: whether an in-place edit of the tensor's values breaks :meth:`holds`
        self.sees_values: bool = not unversioned or values

    def __reduce__(self) -> Tuple[Callable[[], "Stamp"], Tuple[()]]:
        # a copy (pickle, deepcopy, torch.save) stamps no tensor: it never holds, so what it
        # kept valid is recomputed for the copied tensors
        return (_expired, ())

    def renew(self) -> None:
        """Stamp the same tensor again as it is now, after pysnn's own edit of it (cheaper
        than a new stamp)."""
        tensor = self.source
        current = version(tensor)
        if current is None or self.version is None:
            self.__init__(tensor, self.sees_values)  # (the bytes, once more)
            return
        self.version, self.pointer = current, tensor.data_ptr()
        self.edits = _NO_EDITS if self.access is None else self.access.state()

    def same_state(self, other: "Stamp") -> bool:
        """Whether ``other`` stamped the same tensor in the same state (with a version)."""
        return (
            self.source is other.source
            and self.version == other.version
            and self.pointer == other.pointer
            and self.edits == other.edits
        )

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is the stamped object in the stamped state."""
        if self.source is not tensor:
            return False
        seen = self.version
        if seen is None:  # (no version counter then, so none now: the same object)
            return (
                self.pointer == tensor.data_ptr()
                and self.edits == edits(tensor)
                and (self.guard is None or self.guard.holds())
            )
        try:
            if tensor._version != seen:
                return False
        except RuntimeError:  # given inference data through .data since (or a deep copy made
            return False  # under inference mode, which copied this stamp with it)
        if tensor.data_ptr() != self.pointer:
            return False
        access = self.access
        if access is None:  # (a TrackedParameter since, perhaps: then written through .data)
            return tensor.__class__ is not TrackedParameter or tensor.edits() == self.edits
        return access.state() == self.edits


def _expired() -> Stamp:
    """A stamp of no tensor (what a copied stamp becomes): :meth:`Stamp.holds` is false."""
    stamp = Stamp.__new__(Stamp)
    stamp.source = stamp.guard = stamp.access = stamp.version = None
    stamp.pointer, stamp.edits, stamp.sees_values = -1, _NO_EDITS, False
    return stamp
