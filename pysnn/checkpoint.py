"""Checkpoints of a whole simulation that load without running code, written atomically.

A checkpoint holds everything needed to continue a run exactly where it stopped:

* the network's ``state_dict()`` (weights, constants, persistent buffers such as adaptive
  thresholds);
* the *state* of every module: its non-persistent buffers (membrane potential ``v`` (mV),
  ``spikes``, ``trace``, refractory counters, spike histories and spikes in flight on delayed
  connections, ...), including the ones that are ``None`` (not created yet);
* the state of the learning rules (``rule.groups[k].state``: traces, delay histories,
  eligibility), for the rules the network holds as submodules and those passed as ``rules``;
* the CPU random number generator (``torch.get_rng_state()``), and that of every CUDA device when
  CUDA is initialised;
* ``extra``: plain data of your own (position in the data, epoch, a ``torch.Generator``'s
  ``get_state()``, accuracy history, ...).

.. code-block:: python

    from pysnn.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint("run.pt", network=net, extra={"epoch": epoch, "position": i})
    ...
    net = Net()                                    # built as the saved one
    extra = load_checkpoint("run.pt", network=net)
    epoch, i = extra["epoch"], extra["position"]

**Safe to load.** :func:`load_checkpoint` reads with ``torch.load(..., weights_only=True)``: a file
holding any other pickled object (one that could run code when unpickled) is refused with a
``ValueError``. :func:`save_checkpoint` therefore accepts in ``extra`` only what such a load can
read back (``None``, bools, numbers, strings, tensors, and lists, tuples and dicts of them) and
raises ``TypeError`` naming the offending entry otherwise, so that a checkpoint that could not be
loaded is never written.

**Verified.** The checkpoint stores the SHA-256 of its contents (every tensor's bytes, the keys
and values); :func:`load_checkpoint` recomputes it and refuses a file whose contents changed (a
flipped bit on disk) with a ``ValueError`` naming the path, as it does for every truncated,
damaged or foreign file. A checkpoint saved before the checksum existed loads with a warning.

**Same batch size.** The restored state (``v``, spikes, traces, spikes in flight) is for the batch
size of the saved run: a first step with another batch size replaces it by the initial state,
with a ``UserWarning`` saying so (call ``reset_state()`` first to start afresh on purpose).

**Atomic.** The file is written to a temporary file in the same directory, flushed and
``fsync``-ed, then renamed over ``path`` (``os.replace``), and the directory is ``fsync``-ed: at
every moment ``path`` holds either the previous checkpoint or the new one, complete, even if the
process is killed or the machine loses power while saving. The file is created with permissions
``0600`` (readable by its owner only).

**Exact continuation.** Loading into a network built like the saved one (same modules, dtype and
device, or ``map_location``) and continuing gives the results of the uninterrupted run, spike for
spike. One exception: a :class:`~pysnn.connection.Linear` with ``propagation="auto"`` restarts its
count of input activity, so it may choose the other propagation path for a while, whose results
agree up to float summation order; use ``"dense"`` or ``"event"`` where bit-exact continuation
matters.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from pysnn._files import write_atomic
from pysnn.learning import LearningRule

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT"]

#: identifies a pysnn checkpoint file (and its layout version)
FORMAT = "pysnn.checkpoint/1"

PathLike = Union[str, os.PathLike]


def save_checkpoint(
    path: PathLike,
    *,
    network: nn.Module,
    rules: Iterable[nn.Module] = (),
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    """Write a checkpoint of ``network`` (and ``rules``) to ``path``, atomically.

    Args:
        path: the checkpoint file; its directory must exist. An existing file is replaced only
            once the new one is completely on disk.
        network: the network (any ``nn.Module``): parameters, persistent and state buffers of all
            its submodules, and the state of the learning rules it holds.
        rules: learning rules that are not submodules of ``network`` (in a fixed order: they are
            matched by position at load).
        extra: a dict of plain data (see the module docstring), returned by
            :func:`load_checkpoint`.

    Raises:
        TypeError: ``network`` is not an ``nn.Module``, a rule is not a learning rule, or
            ``extra`` holds something ``weights_only=True`` cannot load (the message names it).
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be an nn.Module, got {type(network).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict of plain data or None, got {type(extra).__name__}")
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "parameters": network.state_dict(),
        "state": _module_state(network),
        "rules": {key: _rule_state(rule) for key, rule in _rules(network, rules)},
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "extra": extra,
    }
    payload["sha256"] = _digest(payload)
    _atomic_save(payload, os.fspath(path))


def load_checkpoint(
    path: PathLike,
    *,
    network: nn.Module,
    rules: Iterable[nn.Module] = (),
    map_location: Any = None,
    restore_rng: bool = True,
) -> Optional[Dict[str, Any]]:
    """Restore ``network`` (and ``rules``) from the checkpoint at ``path``; return its ``extra``.

    Args:
        path: a file written by :func:`save_checkpoint`.
        network: a network built like the saved one (same submodule names and shapes).
        rules: the learning rules passed to :func:`save_checkpoint` as ``rules``, same order.
        map_location: as for ``torch.load`` (e.g. ``"cpu"`` for a checkpoint saved on a GPU).
        restore_rng: also restore the random number generators (CPU, and CUDA if saved and
            available).

    Returns:
        The ``extra`` dict given to :func:`save_checkpoint` (``None`` if none was given).

    Raises:
        ValueError: the file is not a complete pysnn checkpoint (truncated, corrupt: its
            checksum differs, another format; the message names ``path``), it
            holds objects that ``weights_only=True`` refuses to load (they could run code), or it
            was saved from a network with other modules, buffers or rules.
        RuntimeError: a parameter's shape differs (from ``load_state_dict``).
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be an nn.Module, got {type(network).__name__}")
    path = os.fspath(path)
    payload = _read(path, map_location)
    network.load_state_dict(payload["parameters"])
    _restore_module_state(network, payload["state"], path)
    _warn_on_other_batch_size(network, path)
    saved_rules, current = payload["rules"], dict(_rules(network, rules))
    if set(saved_rules) != set(current):
        raise ValueError(
            f"{path} holds the state of the learning rules {sorted(saved_rules)}, but the network "
            f"and rules given have {sorted(current)}"
        )
    for key, rule in current.items():
        _restore_rule_state(rule, saved_rules[key], key, path)
    if restore_rng:
        torch.set_rng_state(payload["rng"].cpu())
        if payload["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in payload["cuda_rng"]])
    return payload["extra"]


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _atomic_save(payload: Dict[str, Any], path: str) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, rename over ``path``."""
    write_atomic(path, lambda f: torch.save(payload, f))


def _digest(payload: Dict[str, Any]) -> str:
    """SHA-256 (hex) of everything in ``payload`` but its ``"sha256"`` entry: the structure,
    keys, scalars, and every tensor's dtype, shape and bytes (as loaded, on any device)."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, Tensor):
            t = value.detach()
            if t.layout != torch.strided:
                t = t.to_dense()
            h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
            if t.numel():
                h.update(t.cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
        elif isinstance(value, dict):
            items = [(k, v) for k, v in value.items() if k != "sha256" or value is not payload]
            h.update(f"D{len(items)};".encode())
            for key, item in items:
                h.update(f"K{type(key).__name__}:{key!r};".encode())
                feed(item)
        elif isinstance(value, (list, tuple)):
            h.update(f"{type(value).__name__}{len(value)};".encode())
            for item in value:
                feed(item)
        else:
            h.update(f"S{type(value).__name__}:{value!r};".encode())

    feed(payload)
    return h.hexdigest()


_SCALARS = (type(None), bool, int, float, str, torch.dtype, torch.device)


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``value`` is data ``torch.load(weights_only=True)`` reads."""
    if isinstance(value, Tensor):
        if type(value) not in (Tensor, nn.Parameter):
            raise TypeError(
                f"{where} is a {type(value).__name__} (a tensor subclass); store a plain tensor "
                f"(.detach() or torch.Tensor(x)) so that the checkpoint loads with weights_only=True"
            )
        return
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{where} has the key {key!r}: keys must be strings or ints")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, which "
        f"torch.load(weights_only=True) cannot load; store plain data (None, bool, int, float, "
        f"str, tensors, and lists, tuples and dicts of them), e.g. float(x) or torch.as_tensor(x)"
    )


def _module_state(network: nn.Module) -> Dict[str, Dict[str, Optional[Tensor]]]:
    """``{module name: {buffer name: tensor or None}}`` of the non-persistent buffers."""
    state = {}
    for name, module in network.named_modules():
        buffers = {
            key: None if value is None else value.detach()
            for key, value in module._buffers.items()
            if key in module._non_persistent_buffers_set
        }
        if buffers:
            state[name] = buffers
    return state


def _rules(network: nn.Module, rules: Iterable[nn.Module]) -> List[Tuple[str, nn.Module]]:
    """``(key, rule)``: the rules held by ``network`` (by module name), then ``rules`` by position
    (``"rules[i]"``), each once."""
    found = [(name, m) for name, m in network.named_modules() if isinstance(m, LearningRule)]
    seen = {id(m) for _, m in found}
    for i, rule in enumerate(rules):
        if not isinstance(rule, LearningRule):
            raise TypeError(
                f"rules[{i}] must be a pysnn.learning.LearningRule, got {type(rule).__name__}"
            )
        if id(rule) not in seen:
            seen.add(id(rule))
            found.append((f"rules[{i}]", rule))
    return found


def _rule_state(rule: nn.Module) -> List[Dict[str, Tensor]]:
    return [{key: value.detach() for key, value in g.state.items()} for g in rule.groups]


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
_KEYS = ("format", "parameters", "state", "rules", "rng", "cuda_rng", "extra")


def _read(path: str, map_location: Any) -> Dict[str, Any]:
    """The payload of the checkpoint at ``path``, its checksum verified; ``ValueError`` naming
    ``path`` for any file that is not a complete, intact pysnn checkpoint."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        raise ValueError(
            f"{path} holds objects that torch.load(weights_only=True) refuses to load (they could "
            f"run code when unpickled), so it was not written by save_checkpoint: {reason}"
        ) from exc
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # any other failure of the reader is a damaged or foreign file
        raise ValueError(
            f"{path} is not a complete checkpoint (truncated, corrupt, or not a checkpoint): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a pysnn checkpoint ({FORMAT}), found {found!r}")
    missing = [key for key in _KEYS if key not in payload]
    if missing:
        raise ValueError(f"{path} is not a complete pysnn checkpoint: it lacks {missing}")
    if "sha256" not in payload:
        warnings.warn(
            f"{path} was saved by an older pysnn, without a checksum: its integrity cannot be "
            "checked. Save it again with save_checkpoint",
            UserWarning,
            stacklevel=3,
        )
    elif _digest(payload) != payload["sha256"]:
        raise ValueError(
            f"{path} is corrupt: the SHA-256 of its contents differs from the one saved with it "
            "(a damaged disk or copy); use another checkpoint"
        )
    return payload


def _warn_on_other_batch_size(network: nn.Module, path: str) -> None:
    """Make the neurons whose state was restored warn (once per load) if their first step runs
    another batch size: that step replaces the restored state by the initial one."""
    from pysnn.neuron import Neuron

    warned: List[bool] = []
    for name, module in network.named_modules():
        saved = module.batch_size if isinstance(module, Neuron) else None
        old = module.__dict__.pop("_checkpoint_hook", None)
        if old is not None:
            old.remove()
        if saved is None:
            continue
        first = next(key for key in module._state_specs if module._buffers.get(key) is not None)

        def check(
            mod: nn.Module,
            args: tuple,
            name: str = name,
            saved: int = saved,
            restored: Tensor = module._buffers[first],
            first: str = first,
        ) -> None:
            mod.__dict__.pop("_checkpoint_hook").remove()
            x = args[0] if args else None
            if (
                not warned
                and mod._buffers.get(first) is restored
                and isinstance(x, Tensor)
                and x.dim() == len(mod.shape) + 1
                and x.shape[0] != saved
            ):
                warned.append(True)
                warnings.warn(
                    f"{path} restored the state of {name or 'the network'!r} "
                    f"({type(mod).__name__}) for a batch of {saved}, but it now runs a batch of "
                    f"{x.shape[0]}: the restored state (v, spikes, traces) is discarded and the "
                    f"run restarts from the initial state. Resume with batch size {saved}, or "
                    "call reset_state() first to start afresh on purpose",
                    UserWarning,
                    stacklevel=3,
                )

        module.__dict__["_checkpoint_hook"] = module.register_forward_pre_hook(check)


def _restore_module_state(
    network: nn.Module, saved: Dict[str, Dict[str, Optional[Tensor]]], path: str
) -> None:
    current = _module_state(network)
    if set(saved) != set(current):
        missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
        raise ValueError(
            f"{path} was saved from a network with other stateful modules: missing "
            f"{missing}, unexpected {unexpected}"
        )
    modules = dict(network.named_modules())
    for name, buffers in saved.items():
        if set(buffers) != set(current[name]):
            raise ValueError(
                f"{path}: module {name!r} has the state buffers {sorted(current[name])}, the "
                f"checkpoint {sorted(buffers)}"
            )
        modules[name]._buffers.update(buffers)


def _restore_rule_state(
    rule: nn.Module, saved: List[Dict[str, Tensor]], key: str, path: str
) -> None:
    if len(saved) != len(rule.groups):
        raise ValueError(
            f"{path}: the learning rule {key!r} trains {len(rule.groups)} connection(s), the "
            f"checkpoint has the state of {len(saved)}"
        )
    for group, state in zip(rule.groups, saved):
        group.state.clear()
        group.state.update(state)
