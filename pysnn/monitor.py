"""Recording of state variables (spikes, membrane potentials, traces, weights) over time.

Three recorders are provided:

* :class:`Monitor` records dense copies of named tensor attributes of a module every step and
  returns them time-first, ``(T, *var.shape)``, e.g. ``(T, B, *shape)`` for a neuron variable of
  shape ``(B, *shape)``.
* :class:`SpikeMonitor` records only spike *events* ``(t, batch, flat_index)``; for long, sparse
  recordings it needs far less memory than a dense :class:`Monitor`.
* :class:`NetworkMonitor` creates one :class:`Monitor` per submodule of a network that has the
  requested attributes.

Recording is triggered by a forward hook (after the module's ``forward``) when the recorded
object is a :class:`torch.nn.Module`, and can always be triggered manually with ``record()``
(the only way for objects that are not modules, or for a learning rule advanced with
``rule.step()`` rather than ``rule()``).

Under ``torch.compile`` recording runs eagerly, outside the compiled graph, and attaching or
removing a hook resets the compiled code (see :class:`Monitor`).

Recording never breaks autograd (stored values are detached copies, so in-place updates of the
module's state do not change what was recorded) and never synchronises host and device: no
``.item()``, ``.cpu()`` or data-dependent shapes in ``record()``. The only synchronising calls are
:meth:`SpikeMonitor` flushes (one ``nonzero`` per ``chunk`` steps) and reading results back.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ["Monitor", "SpikeMonitor", "NetworkMonitor"]


def _as_var_names(
    state_vars: Union[str, Sequence[str]], arg: str = "state_vars"
) -> Tuple[str, ...]:
    if isinstance(state_vars, str):
        state_vars = (state_vars,)
    try:
        names = tuple(state_vars)
    except TypeError:
        raise TypeError(
            f"{arg} must be a string or a sequence of strings, got {state_vars!r}"
        ) from None
    if len(names) == 0:
        raise ValueError(f"{arg} must name at least one attribute, got {state_vars!r}")
    for n in names:
        if not isinstance(n, str) or not n:
            raise TypeError(f"{arg} must contain non-empty strings, got {n!r} in {state_vars!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{arg} contains duplicate names: {names!r}")
    return names


def _fetch(obj: Any, name: str, owner: str) -> Optional[Tensor]:
    """Return ``obj.name`` (a tensor or ``None``), raising clear errors otherwise."""
    if not hasattr(obj, name):
        raise AttributeError(
            f"{owner}: the recorded object of type {type(obj).__name__} has no attribute "
            f"{name!r}"
        )
    value = getattr(obj, name)
    if value is not None and not isinstance(value, Tensor):
        raise TypeError(
            f"{owner}: attribute {name!r} must be a torch.Tensor (or None before the first "
            f"step), got {type(value).__name__}"
        )
    return value


def _describe_change(
    old: Tuple[torch.Size, torch.dtype, torch.device],
    new: Tuple[torch.Size, torch.dtype, torch.device],
) -> str:
    """What changed between two ``(shape, dtype, device)``, with the likely cause of each."""
    changes = []
    if old[0] != new[0]:
        cause = " (a new batch size?)" if old[0][1:] == new[0][1:] else ""
        changes.append(f"shape from {tuple(old[0])} to {tuple(new[0])}{cause}")
    if old[1] != new[1]:
        changes.append(
            f"dtype from {old[1]} to {new[1]} (the module was converted, e.g. by .double() or "
            f".to(dtype))"
        )
    if old[2] != new[2]:
        changes.append(f"device from {old[2]} to {new[2]} (the module was moved by .to(device))")
    return "changed " + " and ".join(changes)


class _Recorder:
    """Shared hook / enable / disable / remove logic."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.recording = True
        self._handle = None
        if isinstance(module, nn.Module):
            self._handle = module.register_forward_hook(self._hook)
            # Code compiled before this hook existed calls the module without it (dynamo does not
            # guard on the hooks of submodules): drop it, so that the next call recompiles.
            torch.compiler.reset()

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.record()

    def record(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def hooked(self) -> bool:
        """``True`` while a forward hook on the module triggers recording."""
        return self._handle is not None

    def enable(self) -> None:
        """Resume recording (both hook-triggered and manual ``record()`` calls)."""
        self.recording = True

    def disable(self) -> None:
        """Pause recording: ``record()`` and the forward hook become no-ops; data is kept."""
        self.recording = False

    def remove(self) -> None:
        """Remove the forward hook (recorded data is kept; ``record()`` still works manually)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            torch.compiler.reset()  # compiled code may still call the removed hook

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class Monitor(_Recorder):
    """Record named tensor attributes of ``module`` at every step.

    Args:
        module: object whose attributes are recorded. If it is a :class:`torch.nn.Module`, a
            forward hook records after every ``forward`` call (one call = one time step). For any
            other object (e.g. a learning rule) recording is manual only: call :meth:`record`.
        state_vars: attribute name(s) to record, e.g. ``("spikes", "v")`` or ``"weight"``. Each
            attribute must be a tensor, or ``None`` (not yet created; that variable is then skipped
            for that step, so different variables can have different numbers of recorded steps).
        time: ``None`` to keep every recorded step, or ``T > 0`` to keep only the last ``T`` steps
            in a preallocated ring buffer.

    Memory (per variable of shape ``var.shape`` with ``numel`` elements of ``esize`` bytes, e.g.
    4 for float32, 1 for bool; on the variable's own device):

    * ``time=T``: exactly ``T * numel * esize`` bytes, allocated at the first ``record()``.
    * ``time=None``: ``n_steps * numel * esize`` bytes, growing by one copy per step (plus a
      transient second copy of the same size while :meth:`get` concatenates).

    E.g. ``v`` of shape ``(B=32, 400)`` float32 over 10 000 steps: 512 MB. For long recordings of
    sparse spikes prefer :class:`SpikeMonitor`.

    Changes between records: a variable whose shape (a new batch size), dtype (the module was
    converted by ``.double()``, ``.half()``, ``.to(dtype)``) or device changed raises
    ``ValueError`` naming the variable and what changed. Recordings of different shapes cannot be
    stacked into one tensor, and converting the recorded steps silently would lose precision or
    hide the change: read them with :meth:`get`, then call :meth:`reset`.

    ``torch.compile``: :meth:`record` always runs eagerly (``torch.compiler.disable``), so a
    compiled model calls it as a graph break, without recompiling for it, and the recorded values
    are those of the compiled step. Attaching or removing a monitor's hook calls
    ``torch.compiler.reset()``: dynamo does not guard on the hooks of submodules, so code compiled
    before would keep running without the new hook (recording nothing) or with the removed one.
    Every compiled model of the process therefore recompiles at its next call: attach monitors
    before compiling to avoid that cost.

    Example::

        mon = Monitor(layer, ("spikes", "v"))
        for t in range(T):
            layer(x[t])
        spikes = mon.get("spikes")  # (T, B, n)
    """

    def __init__(
        self,
        module: Any,
        state_vars: Union[str, Sequence[str]] = ("spikes", "v"),
        time: Optional[int] = None,
    ) -> None:
        self.state_vars = _as_var_names(state_vars)
        if time is not None:
            if isinstance(time, bool) or not isinstance(time, int) or time <= 0:
                raise ValueError(f"time must be None or a positive int (steps), got {time!r}")
        self.time = time
        self._data: Dict[str, Any] = {}
        self._count: Dict[str, int] = {}
        self._meta: Dict[str, Tuple[torch.Size, torch.dtype, torch.device]] = {}
        super().__init__(module)
        self.reset()

    # ------------------------------------------------------------------ recording
    def reset(self) -> None:
        """Discard everything recorded (a new batch size / dtype / device is accepted after)."""
        self._data = {name: None if self.time is not None else [] for name in self.state_vars}
        self._count = {name: 0 for name in self.state_vars}
        self._meta = {}

    def _check(self, name: str, x: Tensor) -> None:
        meta = (x.shape, x.dtype, x.device)
        old = self._meta.get(name)
        if old is None:
            self._meta[name] = meta
        elif old != meta:
            raise ValueError(
                f"Monitor: variable {name!r} {_describe_change(old, meta)} after "
                f"{self._count[name]} recorded steps; recordings cannot mix them. Read what was "
                f"recorded (monitor.get), then call monitor.reset() before recording again"
            )

    @torch.compiler.disable  # eager inside torch.compile (see the class docstring)
    def record(self) -> None:
        """Record one step of every variable (no-op while disabled).

        Stores detached copies; never synchronises with the device.
        """
        if not self.recording:
            return
        for name in self.state_vars:
            x = _fetch(self.module, name, "Monitor")
            if x is None:
                continue
            self._check(name, x)
            x = x.detach()
            if self.time is None:
                self._data[name].append(x.clone())
            else:
                buf = self._data[name]
                if buf is None:
                    # A normal (non-inference) tensor, so that it can be updated in place both
                    # inside and outside torch.inference_mode().
                    with torch.inference_mode(False):
                        buf = torch.empty((self.time, *x.shape), dtype=x.dtype, device=x.device)
                    self._data[name] = buf
                buf[self._count[name] % self.time].copy_(x)
            self._count[name] += 1

    # ------------------------------------------------------------------ reading
    def _check_name(self, name: str) -> None:
        if name not in self.state_vars:
            raise ValueError(
                f"name must be one of the recorded variables {self.state_vars!r}, got {name!r}"
            )

    def n_steps(self, name: Optional[str] = None) -> int:
        """Number of steps currently held for ``name`` (default: the first variable)."""
        name = self.state_vars[0] if name is None else name
        self._check_name(name)
        n = self._count[name]
        return n if self.time is None else min(n, self.time)

    def __len__(self) -> int:
        return self.n_steps()

    def get(self, name: str) -> Tensor:
        """Recorded values of ``name``, shape ``(T, *var.shape)`` (e.g. ``(T, B, *shape)``).

        Chronological order (oldest first); with ``time=T`` only the last ``T`` steps. Returns a
        new tensor every call (recording is not consumed and later records do not alter it).

        Raises:
            ValueError: ``name`` is not a recorded variable.
            RuntimeError: nothing has been recorded for ``name`` yet (its shape is unknown).
        """
        self._check_name(name)
        n = self._count[name]
        if n == 0:
            raise RuntimeError(
                f"Monitor: nothing recorded for {name!r} yet (run the module forward or call "
                f"record() first)"
            )
        if self.time is None:
            return torch.stack(self._data[name])
        buf = self._data[name]
        if n <= self.time:
            return buf[:n].clone()
        start = n % self.time
        return torch.cat((buf[start:], buf[:start]))

    def __getitem__(self, name: str) -> Tensor:
        return self.get(name)

    def get_all(self) -> Dict[str, Tensor]:
        """``{name: get(name)}`` for every variable recorded at least once."""
        return {name: self.get(name) for name in self.state_vars if self._count[name] > 0}

    @property
    def nbytes(self) -> int:
        """Bytes currently held by the recorded data (all variables)."""
        total = 0
        for name in self.state_vars:
            d = self._data[name]
            if d is None:
                continue
            if isinstance(d, list):
                total += sum(t.numel() * t.element_size() for t in d)
            else:
                total += d.numel() * d.element_size()
        return total

    def __repr__(self) -> str:
        return (
            f"Monitor({type(self.module).__name__}, state_vars={self.state_vars!r}, "
            f"time={self.time!r}, steps={self._count})"
        )


class SpikeMonitor(_Recorder):
    """Record spike events ``(t, batch, flat_index)`` of one variable (sparse form).

    Args:
        module: object with the spike attribute; forward-hooked if it is an ``nn.Module``,
            otherwise call :meth:`record` manually each step.
        var: name of the spike attribute, shape ``(B, *shape)``. Any nonzero element counts as
            one event (graded values are not kept; :meth:`to_dense` writes ones).
        chunk: number of steps buffered on the device before they are stacked and converted to
            events with a single ``nonzero`` (the only host-device synchronisation, once per
            ``chunk`` steps and in :meth:`get`).

    Events are rows ``(t, b, i)`` of a ``LongTensor``: ``t`` the step index since construction /
    :meth:`reset` (counting every recorded step, spiking or not), ``b`` the batch index and ``i``
    the *flat* (row-major) index into ``shape``; recover multi-dimensional indices with
    ``torch.unravel_index(events[:, 2], monitor.shape[1:])``. Rows are sorted by ``(t, b, i)``.

    Memory (on the spike variable's device): a pending buffer of ``chunk * B * numel`` bytes
    (bool), plus 24 bytes per event (3 int64). Dense recording would need
    ``T * B * numel * esize`` bytes, so this is smaller when the fraction of nonzero entries is
    below ``esize / 24`` (1/6 for float32) -- typical for spike trains.

    A change of shape (e.g. batch size), or device raises ``ValueError`` unless :meth:`reset`
    was called.
    """

    def __init__(self, module: Any, var: str = "spikes", chunk: int = 100) -> None:
        if not isinstance(var, str) or not var:
            raise TypeError(f"var must be a non-empty attribute name, got {var!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
            raise ValueError(f"chunk must be a positive int (steps), got {chunk!r}")
        self.var = var
        self.chunk = chunk
        self._pending: List[Tensor] = []
        self._events: List[Tensor] = []
        self._flushed_steps = 0
        self._steps = 0
        self._meta: Optional[Tuple[torch.Size, torch.device]] = None
        super().__init__(module)

    def reset(self) -> None:
        """Discard all events and pending steps; restart the step counter at 0."""
        self._pending = []
        self._events = []
        self._flushed_steps = 0
        self._steps = 0
        self._meta = None

    def n_steps(self) -> int:
        """Number of recorded steps (including steps without any spike)."""
        return self._steps

    def __len__(self) -> int:
        return self._steps

    @property
    def shape(self) -> Optional[torch.Size]:
        """Shape ``(B, *shape)`` of the recorded variable, ``None`` before the first record."""
        return None if self._meta is None else self._meta[0]

    @torch.compiler.disable  # eager inside torch.compile (see Monitor)
    def record(self) -> None:
        """Buffer one step (no-op while disabled); converts to events every ``chunk`` steps."""
        if not self.recording:
            return
        x = _fetch(self.module, self.var, "SpikeMonitor")
        if x is None:
            return
        if x.dim() == 0:
            raise ValueError(
                f"SpikeMonitor: variable {self.var!r} must have shape (B, *shape), got a 0-dim "
                f"tensor"
            )
        meta = (x.shape, x.device)
        if self._meta is None:
            self._meta = meta
        elif self._meta != meta:
            change = _describe_change(
                (self._meta[0], x.dtype, self._meta[1]), (x.shape, x.dtype, x.device)
            )
            raise ValueError(
                f"SpikeMonitor: variable {self.var!r} {change} after {self._steps} recorded "
                f"steps; read the events (monitor.get), then call monitor.reset() first"
            )
        self._pending.append(x.detach() != 0)  # new bool tensor: safe against in-place updates
        self._steps += 1
        if len(self._pending) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        stacked = torch.stack(self._pending)  # (c, B, *shape)
        ev = stacked.reshape(stacked.shape[0], stacked.shape[1], -1).nonzero()  # (n, 3) long
        if self._flushed_steps:
            ev[:, 0] += self._flushed_steps
        self._events.append(ev)
        self._flushed_steps += len(self._pending)
        self._pending = []

    def get(self) -> Tensor:
        """All events so far: ``LongTensor`` of shape ``(n_events, 3)``, columns ``(t, b, i)``.

        Sorted by time, then batch, then flat index; on the variable's device (CPU before the
        first record). Does not consume the recording.
        """
        self._flush()
        if not self._events:
            device = torch.device("cpu") if self._meta is None else self._meta[1]
            return torch.empty((0, 3), dtype=torch.long, device=device)
        if len(self._events) > 1:
            self._events = [torch.cat(self._events)]
        return self._events[0].clone()

    def to_dense(self, T: Optional[int] = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Dense spike tensor ``(T, B, *shape)`` with ones at events and zeros elsewhere.

        Args:
            T: number of steps; default :meth:`n_steps`. Events with ``t >= T`` are dropped
                (the first ``T`` steps are kept); ``T > n_steps`` pads with zeros.
            dtype: dtype of the result.
        """
        if self._meta is None:
            raise RuntimeError(
                f"SpikeMonitor: nothing recorded for {self.var!r} yet, the shape is unknown"
            )
        if T is None:
            T = self._steps
        if isinstance(T, bool) or not isinstance(T, int) or T < 0:
            raise ValueError(f"T must be None or a non-negative int (steps), got {T!r}")
        shape, device = self._meta
        B = shape[0]
        numel = 1
        for s in shape[1:]:
            numel *= s
        ev = self.get()
        ev = ev[ev[:, 0] < T]
        out = torch.zeros((T, B, numel), dtype=dtype, device=device)
        out[ev[:, 0], ev[:, 1], ev[:, 2]] = 1
        return out.reshape((T, *shape))

    def __repr__(self) -> str:
        return (
            f"SpikeMonitor({type(self.module).__name__}, var={self.var!r}, chunk={self.chunk}, "
            f"steps={self._steps})"
        )


class NetworkMonitor:
    """One :class:`Monitor` for every submodule of ``network`` that has the requested attributes.

    Args:
        network: the root module; ``network.named_modules()`` is searched (the root included,
            under the name ``""``).
        state_vars: attribute names; a submodule is monitored if it has at least one of them
            (only the ones it has are recorded for it).
        time: as for :class:`Monitor` (ring buffer of the last ``time`` steps per variable).

    Each submodule is recorded by its own forward hook, i.e. every time *that* submodule runs.
    Memory is the sum over the created monitors (see :class:`Monitor`).

    Example::

        mon = NetworkMonitor(net, ("spikes", "v"))
        ...
        exc_spikes = mon.get("exc", "spikes")  # (T, B, n_exc)
    """

    def __init__(
        self,
        network: nn.Module,
        state_vars: Union[str, Sequence[str]] = ("spikes", "v"),
        time: Optional[int] = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise TypeError(
                f"network must be a torch.nn.Module, got {type(network).__name__}; use Monitor "
                f"for other objects"
            )
        self.state_vars = _as_var_names(state_vars)
        self.monitors: Dict[str, Monitor] = {}
        for name, mod in network.named_modules():
            present = tuple(v for v in self.state_vars if hasattr(mod, v))
            if present:
                self.monitors[name] = Monitor(mod, present, time=time)
        if not self.monitors:
            raise ValueError(
                f"state_vars: no submodule of {type(network).__name__} has any of the attributes "
                f"{self.state_vars!r}"
            )

    def __getitem__(self, name: str) -> Monitor:
        if name not in self.monitors:
            raise KeyError(
                f"no monitored submodule named {name!r}; monitored: {list(self.monitors)!r}"
            )
        return self.monitors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.monitors

    def __iter__(self) -> Iterator[str]:
        return iter(self.monitors)

    def __len__(self) -> int:
        return len(self.monitors)

    def names(self) -> List[str]:
        """Names of the monitored submodules (as in ``network.named_modules()``)."""
        return list(self.monitors)

    def get(self, module: str, var: str) -> Tensor:
        """Recording of ``var`` of submodule ``module``: ``(T, *var.shape)``."""
        return self[module].get(var)

    def get_all(self) -> Dict[str, Dict[str, Tensor]]:
        """``{module_name: {var: tensor}}`` for everything recorded so far."""
        return {name: m.get_all() for name, m in self.monitors.items()}

    def record(self) -> None:
        """Manually record one step of every monitored submodule."""
        for m in self.monitors.values():
            m.record()

    def reset(self) -> None:
        for m in self.monitors.values():
            m.reset()

    def enable(self) -> None:
        for m in self.monitors.values():
            m.enable()

    def disable(self) -> None:
        for m in self.monitors.values():
            m.disable()

    def remove(self) -> None:
        """Remove all forward hooks (data is kept)."""
        for m in self.monitors.values():
            m.remove()

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.monitors.values())

    def __enter__(self) -> "NetworkMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
