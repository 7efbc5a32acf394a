"""Whether a state tensor can be updated in place without anyone noticing (not public API).

pysnn's modules replace their state every step (a reference kept to ``neuron.v`` keeps that step's
value). Where nothing but the module can see the old tensor, writing the new values into it is
indistinguishable from replacing it and saves an allocation (or, for a delay ring buffer, a copy
of the whole buffer). "Nothing" means: no other Python reference, no view of it and no autograd
save (both hold its TensorImpl), and no other tensor on its memory (``detach()``, ``.data``,
NumPy arrays hold its storage).
"""

from __future__ import annotations

import sys
from typing import Dict, Optional, Tuple

import torch

_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _references(buffers: Dict[str, Optional[torch.Tensor]], name: str) -> Tuple[int, int, int]:
    """Python references, TensorImpl references and storage references of ``buffers[name]``."""
    tensor = buffers[name]
    return (
        sys.getrefcount(tensor),
        tensor._use_count(),
        _storage_use_count(tensor.untyped_storage()._cdata),
    )


try:  # the counts of a tensor held by a dict only, seen through _references itself
    _UNSHARED: Optional[Tuple[int, int, int]] = _references({"t": torch.zeros(1)}, "t")
except (AttributeError, TypeError):  # a torch without these counters: never in place
    _UNSHARED = None


def unshared(buffers: Dict[str, Optional[torch.Tensor]], name: str) -> bool:
    """Whether ``buffers[name]`` (a module's ``_buffers``) is a tensor nothing else can see.

    Call it before binding the tensor to a local name or passing it as an argument (each is a
    reference). Always ``False`` while ``torch.compile`` traces (dynamo cannot trace the
    reference counts) and on a torch without the counters.
    """
    if _UNSHARED is None or buffers.get(name) is None or torch.compiler.is_compiling():
        return False
    return _references(buffers, name) == _UNSHARED


def all_unshared(buffers: Dict[str, Optional[torch.Tensor]], names: Tuple[str, ...]) -> bool:
    """:func:`unshared` for each of ``names``; the caller has checked that nothing is being
    compiled."""
    if _UNSHARED is None:
        return False
    for name in names:
        if buffers.get(name) is None or _references(buffers, name) != _UNSHARED:
            return False
    return True
