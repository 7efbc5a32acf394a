"""How a module is stepped over ``T`` steps: once per step, or through a block form.

The bottom of the stack (it imports only torch): modules use it to decide whether their own
multi-step forms may run (:func:`block_form_reason`), and the engine uses the same rule to plan a
sequence (:mod:`pysnn.engine`), so a module is never run through a form that skips code its
class, or a hook, wants to see every step. :func:`graph_capture` tells modules that their steps
are being recorded for a replay without Python (:class:`pysnn.engine.GraphedStep`).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Tuple

import torch
from torch import nn

__all__ = [
    "has_forward_hooks",
    "block_form_reason",
    "step_through",
    "graph_capture",
    "capturing_graph",
]

#: this thread's depth of :func:`graph_capture` blocks (``depth``; absent outside)
_capture = threading.local()
#: blocks open in all threads (a plain number: read first, so that the usual answer, none,
#: costs no thread-local lookup in a module's step)
_open = [0]
_open_lock = threading.Lock()


@contextlib.contextmanager
def graph_capture() -> Iterator[None]:
    """Mark the steps run inside as recorded for a replay that runs no Python code (a CUDA
    graph, see :class:`pysnn.engine.GraphedStep`), for this thread only.

    While it holds (:func:`capturing_graph`), modules take the paths such a replay reproduces:
    every value of a step is computed by tensor operations from tensors the replay reads again
    (no Python number that changes from step to step, such as a delay ring's position; no value
    derived from a constant and cached in Python, which a replay would keep after the constant
    changed; no kernel generated and compiled in the middle of a recording). The values are
    those of the ordinary paths, bit for bit.
    """
    _capture.depth = getattr(_capture, "depth", 0) + 1
    with _open_lock:
        _open[0] += 1
    try:
        yield
    finally:
        with _open_lock:
            _open[0] -= 1
        _capture.depth -= 1


def capturing_graph() -> bool:
    """Whether this thread is inside :func:`graph_capture`."""
    return _open[0] > 0 and getattr(_capture, "depth", 0) > 0


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward (pre-)hook, of ``module`` or global, must see each call of ``module``.

    Multi-step fast paths then call the module once per step instead (e.g. for a
    :class:`~pysnn.monitor.Monitor`, which records from a forward hook).
    """
    hooks = nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
    )


def block_form_reason(
    module: nn.Module, base: type, reproduces: Tuple[str, ...] = ("forward",)
) -> Optional[str]:
    """Why ``module`` must not run ``T`` steps through the block form of ``base``, or ``None``.

    A block form (``forward_multistep``, :func:`pysnn.multistep.run_feedforward`, :func:`pysnn.engine.layers.run_layers`, the fused
    kernels) computes ``T`` steps of ``base``'s own per-step methods ``reproduces`` at once. A
    subclass that overrides one of them (a user's stateful ``forward`` or ``propagate``, an own
    ``step``), a module with state registered on a connection (its step is sequential) or a
    forward hook (it must see every step) would be bypassed by it: such a module steps through
    instead. The reason is what :func:`pysnn.engine.explain` reports.
    """
    if has_forward_hooks(module):
        return "a forward hook must see every step"
    cls = type(module)
    for name in reproduces:
        if getattr(cls, name, None) is not getattr(base, name):
            owner = next(c for c in cls.__mro__ if name in c.__dict__)
            return (
                f"{owner.__name__}.{name} overrides {base.__name__}.{name}, which the block "
                "form reproduces: stepped once per step"
            )
    if getattr(module, "stateful_connection", False):
        return "a connection with registered state (register_state) is stepped once per step"
    return None


def step_through(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call ``module`` once per step: ``x`` ``(T, ...)`` → ``(T, *out_shape)``.

    With grad mode on the outputs are stacked (gradients flow through every step, to ``x`` and to
    the module's parameters); under ``torch.no_grad`` they are written into one preallocated tensor.
    """
    if torch.is_grad_enabled():
        return torch.stack([module(step) for step in x])
    first = module(x[0])
    out = first.new_empty((x.shape[0], *first.shape))
    out[0] = first
    for t in range(1, x.shape[0]):
        out[t] = module(x[t])
    return out
