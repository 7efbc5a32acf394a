"""Kernel backends behind one registry.

A **backend** runs some of the functional layer's operations as fused kernels. It is an object
(a module will do) with a ``name``, a ``usable(*tensors, differentiable=False) -> bool`` that says
whether its kernels may run on these tensors (device, dtype, layout, gradients), and a function
for each operation it provides, under the operation's name. An operation a backend does not
provide is simply absent. Every operation has the signature and the results of
:mod:`pysnn.native`'s function of the same name, which documents it:

==================  ===========================================================================
operation           what it computes
==================  ===========================================================================
``lif_steps``       ``T`` LIF steps with their trace (:func:`pysnn.native.lif_steps`)
``lif_backward``    their BPTT backward pass (:func:`pysnn.native.lif_backward`)
``trace_step``      one spike-trace update (:func:`pysnn.native.trace_step`)
``stdp_rows_``      one sample's pair-STDP update of a weight matrix, in place
                    (:func:`pysnn.native.stdp_rows_`)
==================  ===========================================================================

The functional layer asks :func:`select` for the backend of each call, with the tensors the
call reads. Where none applies the functional layer runs its torch operations, which are the
reference semantics every backend reproduces (bit for bit on the CPU; the tolerances of a GPU
backend are documented with it).

Two backends are built in:

- ``"c"``: :mod:`pysnn.native`, C kernels compiled on first use, for CPU tensors
  (``PYSNN_NATIVE=0`` switches it off);
- ``"triton"``: :mod:`pysnn.backends.triton`, Triton kernels for CUDA tensors. Under
  ``TRITON_INTERPRET=1`` Triton's interpreter runs them on CPU tensors, which is how the tests
  check them on a machine without a GPU; they are then chosen for CPU tensors only when the
  ``triton`` backend is asked for by name.

Which backends are tried, in order, is the **preference**: by default ``("c", "triton")`` (each
one accepts only its own devices, so this means "C on the CPU, Triton on CUDA"). The environment
variable ``PYSNN_BACKEND`` (read at import) or :func:`set_preference` / :func:`prefer` change
it: ``"torch"`` (no backend: the reference torch operations everywhere), ``"c"``, ``"triton"``,
or a comma-separated list. :func:`register` adds a backend of one's own.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "OPERATIONS",
    "register",
    "registered",
    "get",
    "select",
    "accepts",
    "enabled",
    "name_of",
    "stdp_rows_fit",
    "preference",
    "set_preference",
    "prefer",
]

#: The operations a backend may provide (see the table above).
OPERATIONS = ("lif_steps", "lif_backward", "trace_step", "stdp_rows_")

#: built-in backends, imported on first use (importing Triton costs a second and ~70 MB)
_BUILTIN = {"c": "pysnn.native", "triton": "pysnn.backends.triton"}
#: the device types whose tensors a built-in backend may accept: it is not even imported for
#: others (Triton runs CPU tensors only under its interpreter, ``TRITON_INTERPRET=1``)
_BUILTIN_DEVICES = {
    "c": lambda device_type: device_type == "cpu",
    "triton": lambda device_type: device_type != "cpu" or os.environ.get("TRITON_INTERPRET") == "1",
}
_DEFAULT_PREFERENCE = ("c", "triton")

_backends: Dict[str, Any] = {}
_preference: Tuple[str, ...] = _DEFAULT_PREFERENCE
#: this thread's preference inside :func:`prefer` (``override``; absent outside)
_local = threading.local()
#: for each (operation, device type, preference), the backends of the preference that provide
#: the operation (cleared when a backend is registered)
_providers: Dict[Tuple[str, str, Tuple[str, ...]], Tuple[Any, ...]] = {}


def register(name: str, backend: Any) -> None:
    """Register ``backend`` under ``name`` (replacing one of that name).

    ``backend`` needs ``usable(*tensors, differentiable=False) -> bool`` and, for each operation
    of :data:`OPERATIONS` it provides, a function of that name with :mod:`pysnn.native`'s
    signature. It is tried only where the preference names it (:func:`set_preference`).
    """
    if not isinstance(name, str) or not name or name == "torch" or "," in name:
        raise ValueError(
            f"name must be a non-empty string other than 'torch' and without ',', got {name!r}"
        )
    if not callable(getattr(backend, "usable", None)):
        raise TypeError(
            f"backend {name!r} must have a usable(*tensors, differentiable=False) method"
        )
    if not any(callable(getattr(backend, op, None)) for op in OPERATIONS):
        raise TypeError(f"backend {name!r} provides none of the operations {OPERATIONS}")
    _backends[name] = backend
    _providers.clear()


def registered() -> Tuple[str, ...]:
    """The names of the backends that can be selected (the built-in ones and those registered)."""
    return tuple(dict.fromkeys((*_BUILTIN, *_backends)))


def get(name: str) -> Optional[Any]:
    """The backend called ``name``, or ``None`` where it cannot be loaded here (for example
    ``"triton"`` without the ``triton`` package). Raises ``ValueError`` for an unknown name."""
    if name in _backends:
        return _backends[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown backend {name!r}; registered: {', '.join(registered())}")
    try:
        backend = importlib.import_module(_BUILTIN[name])
    except ImportError:
        backend = None
    if backend is not None and not getattr(backend, "loadable", lambda: True)():
        backend = None
    _backends[name] = backend
    return backend


def _parse(value: Union[str, Sequence[str]], argument: str) -> Tuple[str, ...]:
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    if names in (["auto"], ["default"]):
        return _DEFAULT_PREFERENCE
    if names == ["torch"]:
        return ()
    for n in names:
        if n not in registered():
            raise ValueError(
                f"{argument} names an unknown backend {n!r}; expected 'torch', 'auto' or "
                f"names from {', '.join(registered())}"
            )
    return tuple(names)


def preference() -> Tuple[str, ...]:
    """The backends tried, in order (empty: the torch operations everywhere): this thread's
    :func:`prefer` block's, else the one :func:`set_preference` set."""
    override = getattr(_local, "override", None)
    return _preference if override is None else override


def set_preference(value: Union[str, Sequence[str]]) -> None:
    """Set which backends are tried, in order: ``"auto"`` (the default, ``("c", "triton")``),
    ``"torch"`` (none), a name, a comma-separated string or a sequence of names. Inside a
    :func:`prefer` block that block's preference applies to its thread until the block ends."""
    global _preference
    _preference = _parse(value, "value")


@contextlib.contextmanager
def prefer(value: Union[str, Sequence[str]]) -> Iterator[None]:
    """:func:`set_preference` inside a ``with`` block only, and for this thread only (as
    ``torch.no_grad``): other threads keep theirs."""
    chosen = _parse(value, "value")
    previous = getattr(_local, "override", None)
    _local.override = chosen
    try:
        yield
    finally:
        _local.override = previous


def _providers_of(op: str, device_type: str) -> Tuple[Any, ...]:
    """The backends of the preference that provide ``op`` and may accept tensors on
    ``device_type`` (a built-in one is imported only for its devices)."""
    names = preference()
    key = (op, device_type, names)
    found = _providers.get(key)
    if found is None:
        names = [name for name in names if _may_accept(name, device_type)]
        found = tuple(
            b for b in map(get, names) if b is not None and callable(getattr(b, op, None))
        )
        _providers[key] = found
    return found


def _may_accept(name: str, device_type: str) -> bool:
    return name in _backends or name not in _BUILTIN or _BUILTIN_DEVICES[name](device_type)


def select(
    op: str, *tensors: Optional[torch.Tensor], differentiable: bool = False
) -> Optional[Any]:
    """The first backend of the preference that provides ``op`` and accepts ``tensors`` (its
    ``usable``), or ``None``: then the caller runs the torch operations.

    ``differentiable``: the caller wraps the kernel in an autograd Function with the backend's
    backward kernel, so tensors that need a gradient are accepted.
    """
    first = next((t for t in tensors if t is not None), None)
    if first is None:
        return None
    for backend in _providers_of(op, first.device.type):
        if backend.usable(*tensors, differentiable=differentiable):
            return backend
    return None


def enabled(name: str) -> bool:
    """Whether the backend ``name`` is preferred and can run here (for the C backend: compiled
    and not switched off with ``PYSNN_NATIVE=0``)."""
    if name not in preference():
        return False
    backend = get(name)
    return backend is not None and getattr(backend, "available", lambda: True)()


def accepts(name: str, *tensors: Optional[torch.Tensor], differentiable: bool = False) -> bool:
    """Whether the backend ``name`` is preferred and accepts ``tensors``: for the functional
    layer's calls of operations only that backend has (the C backend's single-step and network
    kernels), which must follow the preference too."""
    first = next((t for t in tensors if t is not None), None)
    if name not in preference() or first is None or not _may_accept(name, first.device.type):
        return False  # (a built-in backend is not imported for tensors it cannot take)
    backend = get(name)
    return backend is not None and backend.usable(*tensors, differentiable=differentiable)


def stdp_rows_fit(
    weight: torch.Tensor,
    copy: Optional[torch.Tensor],
    s_post: torch.Tensor,
    x_post: torch.Tensor,
    pre_trace: torch.Tensor,
    arriving: torch.Tensor,
) -> bool:
    """Whether the shapes fit ``stdp_rows_``: ``weight`` ``(out, in)``, ``s_post`` and
    ``x_post`` of ``out`` elements, ``pre_trace`` and ``arriving`` of ``in``, ``copy`` ``None``
    or ``(in, out)``. Every backend's ``stdp_rows_`` does nothing (returns ``None``) otherwise."""
    if weight.dim() != 2:
        return False
    n_out, n_in = weight.shape
    return (
        s_post.numel() == n_out
        and x_post.numel() == n_out
        and pre_trace.numel() == n_in
        and arriving.numel() == n_in
        and (copy is None or tuple(copy.shape) == (n_in, n_out))
    )


def name_of(backend: Any) -> str:
    """The name a backend was registered or built in under (``"torch"`` for ``None``)."""
    if backend is None:
        return "torch"
    for name, b in _backends.items():
        if b is backend:
            return name
    return getattr(backend, "__name__", type(backend).__name__)


_env = os.environ.get("PYSNN_BACKEND")
if _env:
    _preference = _parse(_env, "PYSNN_BACKEND")
del _env
