"""Argument validation shared by pysnn modules.

Every check raises ``ValueError`` or ``TypeError`` naming the argument, the value it got and what is
allowed. Checks on tensor *values* (NaN) need a host read, so they run only while
:func:`pysnn.checks_enabled` is true (the default) and never under ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import torch

Number = Union[int, float]
ParamLike = Union[Number, torch.Tensor]

_VALUE_CHECKS = True


def checks_enabled() -> bool:
    """Whether per-step value checks (NaN in inputs) are on. On by default."""
    return _VALUE_CHECKS


def set_checks(enabled: bool) -> None:
    """Switch per-step value checks (NaN in inputs) on or off for the whole process.

    The NaN check reads one boolean back from the device each step; on a GPU that is a host sync.
    Switch it off for production runs once a model is known to be sound.
    """
    global _VALUE_CHECKS
    _VALUE_CHECKS = bool(enabled)


@contextlib.contextmanager
def checks(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_checks`."""
    previous = _VALUE_CHECKS
    set_checks(enabled)
    try:
        yield
    finally:
        set_checks(previous)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def check_positive_scalar(name: str, value: Number) -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it is a finite number > 0."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a single positive number, got a tensor of shape "
                f"{tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def _broadcast(a: Tuple[int, ...], b: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
    """The broadcast of shapes ``a`` and ``b``, or ``None`` if they do not broadcast (as
    ``torch.broadcast_shapes``, which imports sympy on its first call: ~30 MB and a few hundred
    ms for a program that never needs it)."""
    joint = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            return None
        joint.append(y if x == 1 else x)
    return tuple(reversed(joint))


def as_param(
    name: str,
    value: ParamLike,
    shape: Sequence[int],
    positive: bool = False,
    non_negative: bool = False,
    allow_inf: bool = False,
) -> torch.Tensor:
    """Turn a scalar or a per-neuron tensor into a float tensor broadcastable to ``shape``.

    Numbers and tensors are copied (a new tensor, detached); an ``nn.Parameter`` is validated and
    returned itself, so that it can be learned.

    Raises ``ValueError`` naming ``name`` when the shape does not broadcast, a value is NaN, or the
    sign constraint fails.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(value, (int, float)):
        tensor = torch.tensor(float(value), dtype=torch.get_default_dtype())
    elif isinstance(value, torch.Tensor):
        if isinstance(value, torch.nn.Parameter) and not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point nn.Parameter, got {value.dtype}")
        tensor = value.detach().clone()
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.get_default_dtype())
        joint = _broadcast(tuple(tensor.shape), tuple(shape))
        if joint is None:
            raise ValueError(
                f"{name} must be a scalar or a tensor broadcastable to the neuron shape "
                f"{tuple(shape)}, got shape {tuple(tensor.shape)}"
            )
        if joint != tuple(shape):
            raise ValueError(
                f"{name} of shape {tuple(tensor.shape)} would enlarge the neuron shape {tuple(shape)}"
            )
    else:
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN")
    if not allow_inf and torch.isinf(tensor).any():
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and (tensor <= 0).any():
        raise ValueError(f"{name} must be > 0 everywhere, got {value}")
    if non_negative and (tensor < 0).any():
        raise ValueError(f"{name} must be >= 0 everywhere, got {value}")
    if isinstance(value, torch.nn.Parameter):
        return value  # validated, and kept as that Parameter (it may be learned)
    return tensor


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_input(
    name: str,
    x: torch.Tensor,
    shape: Sequence[int],
    reference: torch.Tensor,
    what: str,
    non_negative: Optional[str] = None,
) -> None:
    """Validate a per-step input ``x`` of expected shape ``(B, *shape)``.

    With ``non_negative`` (the reason, said in the message), a negative value is refused too, in
    the same single read as the non-finite check.

    ``reference`` is a tensor of the module (a parameter or buffer) whose dtype and device ``x`` must
    match. Shape, dtype and device checks are free (metadata only); the NaN check reads a value back
    and is skipped when checks are disabled or while compiling.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape[1:] != shape or x.dim() != len(shape) + 1:
        raise ValueError(
            f"{name} must have shape (B, {', '.join(str(s) for s in shape)}) for {what}, "
            f"got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        holds = f" (dtype {reference.dtype})" if reference.is_floating_point() else ""
        raise TypeError(f"{name} must be a floating-point tensor for {what}{holds}, got {x.dtype}")
    if x.dtype != reference.dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but {what} holds {reference.dtype}; convert the input or "
            f"call .to({x.dtype}) on the module"
        )
    if x.is_cpu != reference.is_cpu or (not x.is_cpu and x.device != reference.device):
        raise ValueError(
            f"{name} is on {x.device} but {what} is on {reference.device}; move one of them"
        )
    if not _VALUE_CHECKS or _compiling():
        return
    if non_negative is not None:
        detached = x.detach()
        total, low = torch.stack((detached.sum(), detached.amin())).tolist()
        if not math.isfinite(total) and not bool(torch.isfinite(x).all()):
            raise ValueError(nonfinite_message(name, x, what))
        if low < 0:
            raise ValueError(
                f"{name} holds negative values ({int((x < 0).sum())} of {x.numel()}, down to "
                f"{low:g}) but must be >= 0 for {what}: {non_negative}"
            )
    elif nonfinite(x):
        raise ValueError(nonfinite_message(name, x, what))


def nonfinite(x: torch.Tensor) -> bool:
    """Whether the floating-point tensor ``x`` holds a NaN, ``inf`` or ``-inf``.

    One sum and one host read: a finite sum proves every value finite (a NaN or an infinity makes
    the sum NaN or infinite); only a non-finite sum (a bad value, or finite values whose sum
    overflows) is checked value by value. Cheaper than ``torch.isnan(x).any()``.
    """
    if math.isfinite(float(x.detach().sum())):
        return False
    return not bool(torch.isfinite(x).all())


def nonfinite_message(
    name: str,
    x: torch.Tensor,
    what: str,
    consequence: str = "would make the state non-finite for good",
) -> str:
    """The error message for a step input ``x`` refused by :func:`nonfinite`: which values
    (NaN, inf, -inf) it holds, at how many places."""
    counts = [
        (kind, int(mask.sum()))
        for kind, mask in (
            ("NaN", torch.isnan(x)),
            ("inf", torch.isposinf(x)),
            ("-inf", torch.isneginf(x)),
        )
    ]
    kinds = " and ".join(kind for kind, count in counts if count)
    where = ", ".join(f"{count} {kind}" for kind, count in counts if count)
    return (
        f"{name} contains {kinds} (input to {what}; {where} of {x.numel()} values): a "
        f"non-finite value {consequence}. Find where it comes from (a weight, an encoder, a "
        "division), or replace it, e.g. torch.nan_to_num(x)"
    )


def check_same_dt(where: str = "", **modules: object) -> None:
    """Raise ``ValueError`` unless the modules given by keyword share one time step ``dt`` (ms).

    Modules without a ``dt`` attribute (``torch.nn.ReLU``, ...) or with ``dt=None`` are skipped.
    The message (prefixed by ``where``) names every module and its ``dt``, e.g.
    ``check_same_dt(connection=fc, neuron=lif)``. Two values agree when equal to a relative 1e-9
    (float rounding of ``dt``): delays, traces and decay factors are all computed per step.
    """
    found = [
        (name, float(dt))
        for name, module in modules.items()
        if isinstance(dt := getattr(module, "dt", None), (int, float)) and not isinstance(dt, bool)
    ]
    if any(not math.isclose(dt, found[0][1], rel_tol=1e-9) for _, dt in found[1:]):
        values = " and ".join(f"{name}.dt = {dt:g} ms" for name, dt in found)
        raise ValueError(
            f"{where}modules wired together must use the same time step, got {values}; build "
            "them with one dt"
        )


def warn_if_dropped(what: str, old: Optional[torch.Tensor], batch: int) -> None:
    """Warn (``UserWarning``) that ``old`` state ``(B_old, ...)``, about to be replaced by zeros
    for a new batch size ``batch``, held something non-zero (spikes in flight, a trace).

    Reads one value back, only when the batch size changes (never in a steady run).
    """
    if old is None or old.shape[0] == batch or not bool(old.detach().any()):
        return
    warnings.warn(
        f"{what}: the batch size changed from {old.shape[0]} to {batch} with spikes or traces "
        "still in flight; they are dropped. Call reset_state() (e.g. net.reset_state()) between "
        "sequences to start each one from a clean state",
        UserWarning,
        stacklevel=2,
    )


def check_state_declaration(module: Any, name: Any, initial: Any, specs: dict, what: str) -> None:
    """Check ``register_state(name, initial)`` of ``module`` (a neuron or a connection, whose
    declared states are ``specs``): a new identifier, and an initial value that is a number, a
    tensor, the name of an attribute of ``module`` or a function of it (``what``: "constant"
    or "attribute", for the message)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a valid identifier, got {name!r}")
    if name in specs or hasattr(module, name):
        raise ValueError(f"{type(module).__name__} already has an attribute {name!r}")
    if isinstance(initial, bool) or not (
        isinstance(initial, (int, float, torch.Tensor, str)) or callable(initial)
    ):
        raise TypeError(
            f"initial of state {name!r} must be a number, a tensor, the name of a {what} or a "
            f"function of the {type(module).__name__}, got {type(initial).__name__}"
        )
    if isinstance(initial, str) and not hasattr(module, initial):
        raise ValueError(
            f"initial of state {name!r} names {initial!r}, which is not an attribute of "
            f"{type(module).__name__} (register that {what} first)"
        )
