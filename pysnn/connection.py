r"""Connection modules: weights, bounds and lossless synaptic delays, on one public base class.

A connection maps presynaptic spikes of one step to the synaptic input arriving at the
postsynaptic neurons in that step. With a delay of :math:`d_{ij}` steps
(``round(delay / dt)``, ``delay`` in ms):

.. math:: I_i(t) = \sum_j w_{ij}\, s_j(t - d_{ij}) \; (+\, b_i)

Every spike in flight is delivered at its own arrival step (see :mod:`pysnn.functional.delay`).
``delay=0`` delivers in the same step.

**Writing a connection.** Subclass :class:`Connection`, call ``super().__init__(in_features,
out_features, dt, delay, ...)``, create your parameters, and implement
``propagate(arriving) -> current``. The base class's ``forward`` checks the input, keeps the spike
history, applies the delays and calls ``propagate`` with what arrives this step: ``(B,
*in_shape)`` with a shared delay, ``(B, *delay_shape)`` with a delay per synapse. It also gives
``reset_state``, ``detach_state``, :meth:`~Connection.arriving_spikes` and
:meth:`~Connection.delayed` (what learning rules read), ``forward_multistep``, and, for a connection
with a ``weight``, initialisation, bounds, :meth:`~Connection.normalize` and
:meth:`~Connection.apply_update_`. :class:`Linear` and :class:`Conv2d` are written the same way.
A one-to-one connection with a per-neuron gain::

    class OneToOne(Connection):
        def __init__(self, n, dt=1.0, delay=0.0):
            super().__init__(n, n, dt, delay, delay_shape=(n,))
            self.gain = nn.Parameter(torch.ones(n))

        def propagate(self, arriving):  # (B, n), shared or per-synapse delay alike
            return arriving * self.gain

What a learning rule reads after ``forward`` (see :meth:`Connection.arriving_spikes`): the
presynaptic spikes *arriving at each synapse* this step, and, through :meth:`Connection.delayed`,
any presynaptic quantity (a trace) delayed the same way.

State (spike history, spikes in flight) lives in non-persistent buffers created for the first batch
seen; :meth:`Connection.reset_state` clears spikes in flight. ``state_dict()`` holds the
parameters (``weight``, ``bias``, ...) and ``delay_steps``.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Callable, Dict, FrozenSet, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize, prune

from pysnn import _checks
from pysnn._guards import Stamp, TrackedParameter
from pysnn._sharing import unshared
from pysnn._checks import check_choice, check_input, check_positive_scalar, warn_if_dropped
from pysnn.functional.delay import delayed, push_history, synapse_index
from pysnn.functional.linear import (
    kernels_available,
    row_update_,
    transposed,
    delay_queue_step,
    linear_dense,
    linear_event,
    linear_event_block,
    linear_event_step,
)
from pysnn.stepping import block_form_reason, capturing_graph, step_through

__all__ = ["Connection", "Linear", "Conv2d"]

INITS = (
    "kaiming_uniform",
    "kaiming_normal",
    "xavier_uniform",
    "xavier_normal",
    "uniform",
    "normal",
    "constant",
)
PROPAGATIONS = ("auto", "dense", "event")
#: What :meth:`Connection.register_state` accepts as the initial value of a state.
StateInitial = Union[int, float, torch.Tensor, str, Callable[[nn.Module], torch.Tensor]]
DelayLike = Union[int, float, torch.Tensor]
#: A per-sample shape: sizes, or names for sizes set by the input (e.g. ``(C, "H", "W")``).
ShapeLike = Union[int, Sequence[Union[int, str]]]


def _track(weight: torch.Tensor) -> bool:
    """Give a plain ``nn.Parameter`` :class:`~pysnn._guards.TrackedParameter` (the same object:
    optimisers keep working) so that its ``.data`` writes are seen; whether ``weight`` is one now
    (a user's own ``nn.Parameter`` subclass or a plain tensor is left as it is)."""
    if weight.__class__ is nn.Parameter:
        weight.__class__ = TrackedParameter
    return weight.__class__ is TrackedParameter


class _PresynapticCopy:
    """``weight.t().contiguous()`` ``(in, out)`` of a plain 2-D weight parameter, for the event path.

    The copy is valid for the state of the weight it was made from, a
    :class:`~pysnn._guards.Stamp` (the parameter object, its storage, its autograd version and its
    ``.data`` writes, :class:`~pysnn._guards.TrackedParameter`; for a weight without a version
    counter, made under ``torch.inference_mode``, its bytes, which on another device than the CPU
    never hold: the copy is then rebuilt at each use). :meth:`rows` rebuilds it when the stamp no
    longer holds; :meth:`mirror` applies an elementwise edit to both so no rebuild is needed. The
    copy itself is never an inference tensor (it is edited in place inside and outside inference
    mode).
    """

    __slots__ = ("stamp", "copy", "tensors")

    def __init__(self) -> None:
        self.stamp: Optional[Stamp] = None
        self.copy: Optional[torch.Tensor] = None
        # how many copies were made: another tensor (perhaps of another shape, from a weight
        # reassigned through ``.data``) has another count; memory reused keeps its shape
        self.tensors = 0

    def clear(self) -> None:
        """Drop the copy (memory freed; rebuilt on the next event-driven step)."""
        self.stamp = self.copy = None

    def _in_sync(self, weight: torch.Tensor) -> bool:
        stamp = self.stamp
        return stamp is not None and stamp.holds(weight)

    def current(self, weight: torch.Tensor) -> Optional[torch.Tensor]:
        """The copy if it is up to date for ``weight``, else ``None`` (never builds one)."""
        return self.copy if self.copy is not None and self._in_sync(weight) else None

    def rows(self, weight: nn.Parameter) -> Optional[torch.Tensor]:
        """The up-to-date ``(in, out)`` copy of ``weight``, or ``None`` for a parameter whose
        ``.data`` writes cannot be tracked (a user's own ``nn.Parameter`` subclass)."""
        if self._in_sync(weight):
            return self.copy
        if not _track(weight):
            return None
        # never the weight's own memory (with one row or column t() is contiguous already, and a
        # copy aliasing the weight would get every mirrored edit twice); the old copy's memory is
        # reused when nothing else holds it (no page faults for a fresh allocation)
        reusable = self.copy is not None and sys.getrefcount(self.copy) == 2
        with torch.inference_mode(False):  # (a normal tensor, editable in and out of the mode)
            copy = transposed(weight, self.copy if reusable else None)
        if copy is not self.copy:
            self.copy = copy
            self.tensors += 1
        self.stamp = Stamp(weight)
        return self.copy

    def mirror(
        self,
        weight: torch.Tensor,
        edit: Callable[[torch.Tensor], None],
        rows: Optional[torch.Tensor] = None,
    ) -> bool:
        """Apply the in-place ``edit`` (``(out, in)`` layout) to ``weight``, then bring the copy,
        if it was in sync, up to date by copying the edited values (exact): the rows ``rows``
        only, when given and fewer than half of them, else all of it (one transposing copy is
        cheaper than a strided edit). Whether it was (the caller then re-stamps it,
        :meth:`Connection._edited`)."""
        in_sync = self.copy is not None and self._in_sync(weight)
        edit(weight)
        if in_sync:
            if rows is not None and 2 * rows.shape[0] < weight.shape[0]:
                self.copy.index_copy_(1, rows, weight.index_select(0, rows).t())
            else:
                self.copy.copy_(weight.t())
        return in_sync


def _shape(name: str, value: ShapeLike) -> Tuple[Union[int, str], ...]:
    """A per-sample shape from an int or a sequence of positive ints and names."""
    shape = (value,) if isinstance(value, int) else value
    if not isinstance(shape, (tuple, list)) or not all(
        (isinstance(s, int) and not isinstance(s, bool) and s > 0) or isinstance(s, str)
        for s in shape
    ):
        raise ValueError(
            f"{name} must be a positive int or a tuple of positive ints and names (sizes set by "
            f"the input, e.g. (2, 'H', 'W')), got {value!r}"
        )
    return tuple(shape)


def _after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the loaded delays may change the history length, and an
    ``assign=True`` load may bring a non-contiguous (e.g. old column-major) weight."""
    module._delays_changed()
    module.reset_state()
    weight = module._parameters.get("weight")
    if weight is not None and not weight.is_contiguous():
        with torch.no_grad():
            weight.data = weight.data.contiguous()
    module._warn_out_of_bounds("the loaded weight")


class Connection(nn.Module):
    r"""Base class of connections: delays, spike history, input checks, weight handling.

    A subclass calls ``super().__init__(...)``, creates its parameters (optionally a ``weight``
    whose dim 0 indexes the postsynaptic unit, as in ``torch.nn.Linear``/``Conv2d``), calls
    :meth:`reset_parameters` if it has a ``weight``, and implements :meth:`propagate`.

    Timing: :meth:`propagate` sees the spikes *arriving* this step, so a weight (or gain) is
    applied at arrival. :class:`Linear` with per-synapse delays schedules each spike's input at
    emission instead (its event queue), i.e. with the weight of the emission step; the two agree
    whenever the weight does not change while spikes are in flight. Learning rules read the
    arriving spikes and traces in both cases.

    Args:
        in_features: per-sample shape of the presynaptic input: an int, or a tuple of ints and
            names of sizes the input sets (``(C, "H", "W")`` for images of any size).
        out_features: per-sample shape of the output, the same way (for documentation and
            ``repr``; the output's shape is what :meth:`propagate` returns).
        dt: time step (ms).
        delay: synaptic delay (ms), >= 0, rounded to whole steps of ``dt``: a scalar shared by
            all synapses, or (when the subclass declares ``delay_shape``) a tensor of shape
            ``delay_shape``, one delay per synapse. A delay whose state per batch sample
            (:meth:`delay_state_values`, 4 bytes each) would exceed
            :attr:`MAX_DELAY_BYTES_PER_SAMPLE` (1 GiB), or whose step count overflows int64, is
            refused with ``ValueError``. A shared delay keeps its history in a ring buffer: a
            step writes and reads one slot, ``O(in)`` per sample whatever the delay (in place
            unless the input or the history needs gradients).
        delay_shape: shape of a per-synapse delay tensor, last dim indexing the presynaptic unit
            (``(out, in)`` for :class:`Linear`, ``(n,)`` for a one-to-one connection); needs a
            1-D ``in_features``. ``None``: only a shared delay is allowed.
        wmin, wmax: bounds of ``weight`` (mV per unit of input), kept by everything pysnn does
            to the weight: :meth:`reset_parameters` draws within them, :meth:`apply_update_`
            (learning rules) and :meth:`clamp_` clamp to them. Writes of your own (``copy_``,
            ``normal_``, an optimiser step) are used as written, as in ``torch.nn``: the next
            forward pass after such a write checks the weight once (one pass and, on a GPU, one
            host read per write, never per step) and warns if it is outside the bounds, saying
            to call :meth:`clamp_`; ``load_state_dict`` warns likewise.
        init, init_kwargs: weight initialisation (see :meth:`reset_parameters`).
        device: where ``delay_steps`` lives (that of the parameters).

    Attributes:
        in_shape, out_shape: the per-sample shapes above, as tuples.
        delay_steps: int64 delays in steps, 0-d or ``delay_shape``.
        per_synapse_delay: whether ``delay_steps`` holds one delay per synapse.
        max_delay: the longest delay (steps).
        history: ``(B, max_delay + 1, *in_shape)`` presynaptic spikes of the last
            ``max_delay + 1`` steps; ``None`` with a shared delay of 0. With a shared delay a
            ring buffer: slot ``(history_pos - 1 - k) % (max_delay + 1)`` holds the input of
            ``k`` steps ago. With per-synapse delays index ``k`` holds it (index 0: now).
        history_pos: int64 0-d tensor, the ring slot the next step writes (shared delay);
            ``None`` otherwise. Kept as a buffer so that checkpoints carry it.
        arriving: ``(B, *in_shape)`` spikes arriving this step (shared delay only), a tensor of
            its own (later steps do not change it).
    """

    #: Attributes that a step changes without changing what a later step computes: caches of
    #: the ring position (``history_pos`` holds it), of the last bounds check and of the
    #: ``"auto"`` activity count. :class:`pysnn.engine.GraphedStep`, which replays a recorded step without running
    #: Python, ignores them when it checks that a step keeps no Python state of its own (a
    #: subclass that keeps a cache adds its names).
    STEP_CACHES: FrozenSet[str] = frozenset({"_pos", "_pos_seen", "_bounds_seen", "_activity"})

    def __init__(
        self,
        in_features: ShapeLike,
        out_features: ShapeLike,
        dt: float = 1.0,
        delay: DelayLike = 0.0,
        *,
        delay_shape: Optional[Tuple[int, ...]] = None,
        wmin: float = -math.inf,
        wmax: float = math.inf,
        init: str = "kaiming_uniform",
        init_kwargs: Optional[Dict[str, Any]] = None,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        self.in_shape = _shape("in_features", in_features)
        self.out_shape = _shape("out_features", out_features)
        self._named_dims = any(isinstance(s, str) for s in self.in_shape)
        if delay_shape is not None and (
            len(self.in_shape) != 1 or tuple(delay_shape)[-1:] != self.in_shape
        ):
            raise ValueError(
                f"delay_shape must end with the presynaptic size of a 1-D in_features, got "
                f"delay_shape={delay_shape} for in_features={in_features!r}"
            )
        self.delay_shape = None if delay_shape is None else tuple(delay_shape)
        self.dt = check_positive_scalar("dt", dt)
        self.wmin, self.wmax = float(wmin), float(wmax)
        if math.isnan(self.wmin) or math.isnan(self.wmax) or self.wmin > self.wmax:
            raise ValueError(f"need wmin <= wmax, got wmin={wmin}, wmax={wmax}")
        self.init = check_choice("init", init, INITS)
        self.init_kwargs = dict(init_kwargs or {})
        self.register_buffer("delay_steps", self._delay_steps(delay, device))
        self.register_buffer("history", None, persistent=False)
        self.register_buffer("history_pos", None, persistent=False)
        self.register_buffer("arriving", None, persistent=False)
        #: ``int(history_pos)`` and the tensor it was read from (no read-back per step)
        self._pos, self._pos_seen = 0, None
        #: name -> (initial, per-sample shape, dtype) of states declared by register_state
        self.__dict__["_state_specs"] = {}
        self._delays_changed()
        self.register_load_state_dict_post_hook(_after_load)

    # ------------------------------------------------------------------ to implement
    def propagate(self, arriving: torch.Tensor) -> torch.Tensor:
        """Synaptic input (mV) caused by the spikes arriving this step.

        Args:
            arriving: ``(N, *in_shape)`` with a shared delay, ``(N, *delay_shape)`` with a delay
                per synapse (``arriving[..., j]`` is what reaches the synapses of presynaptic
                unit ``j``). ``N`` is the batch, or ``T * B`` in :meth:`forward_multistep`.

        Returns:
            ``(N, *out_shape)`` synaptic input (mV).

        Must not keep state between calls (the base class holds all of it), so that
        :meth:`forward_multistep` may call it once for many steps.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement propagate(arriving)")

    # ------------------------------------------------------------------ state of a subclass
    def register_state(
        self,
        name: str,
        initial: StateInitial = 0.0,
        *,
        shape: Optional[ShapeLike] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        """Declare a state variable ``self.<name>`` ``(B, *shape)`` of the connection (e.g. the
        resources of short-term plasticity), like :meth:`pysnn.neuron.Neuron.register_state`.

        The state is created for the batch of the first step (before :meth:`propagate` is
        called, so ``propagate`` reads and assigns ``self.<name>``), re-created when the batch
        size changes, set back to ``initial`` by :meth:`reset_state`, cut from the autograd
        graph by :meth:`detach_state` and moved by ``.to()``. It is a non-persistent buffer,
        ``None`` before the first step. A connection with registered state is sequential: its
        multi-step forms (:meth:`forward_multistep`, :func:`pysnn.multistep.run_feedforward`,
        :class:`pysnn.multistep.Unroll`) call it once per step.

        Args:
            name: attribute name.
            initial: value at reset: a number, a tensor broadcastable to ``shape``, the name of
                an attribute, or a function ``initial(connection) -> tensor``.
            shape: per-sample shape; default ``in_shape`` (one value per presynaptic unit).
            dtype: ``None`` for the input's floating-point dtype, or a fixed dtype.
        """
        _checks.check_state_declaration(self, name, initial, self._state_specs, "attribute")
        if shape is None and self._named_dims:
            raise ValueError(
                f"state {name!r}: give shape=..., in_features {self.in_shape} has named sizes"
            )
        shape = self.in_shape if shape is None else _shape("shape", shape)
        if any(isinstance(size, str) for size in shape):
            raise ValueError(f"shape of state {name!r} must be ints, got {shape}")
        if isinstance(initial, torch.Tensor):
            try:
                torch.broadcast_shapes(initial.shape, shape)
            except RuntimeError:
                raise ValueError(
                    f"initial of state {name!r} has shape {tuple(initial.shape)}, not "
                    f"broadcastable to {shape}"
                ) from None
            self.register_buffer(f"{name}_initial", initial.detach().clone(), persistent=False)
            initial = f"{name}_initial"
        self._state_specs[name] = (initial, shape, dtype)
        self.register_buffer(name, None, persistent=False)

    @property
    def state_names(self) -> Tuple[str, ...]:
        """Names of the states declared with :meth:`register_state`, in registration order."""
        return tuple(self._state_specs)

    @property
    def stateful_connection(self) -> bool:
        """Whether the connection declared state of its own (it is then stepped per step)."""
        return bool(self._state_specs)

    def _make_state(self, batch: int, like: torch.Tensor) -> None:
        for name, (initial, shape, dtype) in self._state_specs.items():
            if isinstance(initial, str):
                initial = getattr(self, initial)
            elif callable(initial):
                initial = initial(self)
            full = (batch, *shape)
            dtype = dtype or (like.dtype if like.is_floating_point() else torch.get_default_dtype())
            if isinstance(initial, torch.Tensor):
                value = initial.detach().to(like.device, dtype).expand(full).clone()
            else:
                value = torch.full(full, initial, dtype=dtype, device=like.device)
            self._buffers[name] = value

    def _prepare_state(self, spikes: torch.Tensor) -> None:
        """Create the registered state for the batch of ``spikes`` where it is missing."""
        specs = self._state_specs
        if specs:
            first = self._buffers[next(iter(specs))]
            if first is None or first.shape[0] != spikes.shape[0]:
                self._make_state(spikes.shape[0], spikes)

    # ------------------------------------------------------------------ delays
    def _delay_steps(self, delay: DelayLike, device: Optional[torch.device]) -> torch.Tensor:
        if isinstance(delay, bool) or not isinstance(delay, (int, float, torch.Tensor)):
            raise TypeError(f"delay must be a number or a tensor (ms), got {type(delay).__name__}")
        d = torch.as_tensor(delay, dtype=torch.float64).detach().cpu()
        allowed = self.delay_shape
        if d.dim() != 0 and (allowed is None or tuple(d.shape) != allowed):
            allowed = "a scalar" if allowed is None else f"a scalar or {allowed}"
            raise ValueError(f"delay must be {allowed} (ms), got shape {tuple(d.shape)}")
        if torch.isnan(d).any() or torch.isinf(d).any():
            raise ValueError("delay must be finite (ms), got NaN or inf")
        if (d < 0).any():
            raise ValueError(f"delay must be >= 0 ms, got a minimum of {d.min().item()}")
        steps = torch.round(d / self.dt)
        if steps.numel() and steps.max() >= 2.0**62:
            raise ValueError(
                f"delay of up to {d.max().item():g} ms is {steps.max().item():g} steps of "
                f"dt={self.dt} ms, beyond what a step count (int64) holds; give the delay in ms"
            )
        return steps.to(torch.int64).to(device)

    #: Largest delay state (history and queue) per batch sample, in bytes at 4 bytes per value
    #: (float32), that a delay may need: a longer delay is refused at construction.
    MAX_DELAY_BYTES_PER_SAMPLE: int = 1 << 30

    def delay_state_values(self) -> int:
        """Values of delay state per batch sample: ``(max_delay + 1) * in`` history values (0
        with a shared delay of 0). Sizes named by the input (``Conv2d``'s ``H``, ``W``) count
        as 1 here, so for those this is per pixel."""
        if self.max_delay == 0 and not self.per_synapse_delay:
            return 0
        return (self.max_delay + 1) * math.prod(s for s in self.in_shape if isinstance(s, int))

    def _check_delay_memory(self) -> None:
        needed = 4 * self.delay_state_values()
        if needed > self.MAX_DELAY_BYTES_PER_SAMPLE:
            raise ValueError(
                f"{type(self).__name__}: a delay of {self.max_delay} steps (dt={self.dt} ms) keeps "
                f"{self.max_delay + 1} steps of input in flight, {needed / 1e9:.3g} GB per batch "
                f"sample in float32, over the limit of "
                f"{self.MAX_DELAY_BYTES_PER_SAMPLE / 1e9:.3g} GB "
                f"({type(self).__name__}.MAX_DELAY_BYTES_PER_SAMPLE); use a shorter delay or "
                "raise that class attribute"
            )

    def _zeros(self, what: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """``like.new_zeros(shape)`` for delay state, with an error naming the delay and the
        memory it needs when the allocation fails."""
        try:
            return like.new_zeros(shape)
        except RuntimeError as err:  # torch.OutOfMemoryError included
            size = math.prod(shape) * like.element_size()
            raise RuntimeError(
                f"{type(self).__name__}: the {what} for a delay of {self.max_delay} steps "
                f"(dt={self.dt} ms), shape {tuple(shape)}, needs {size / 1e9:.3g} GB and could "
                f"not be allocated ({err}); use a shorter delay or a smaller batch"
            ) from None

    def _delays_changed(self) -> None:
        steps = self.delay_steps
        self.per_synapse_delay = steps.dim() > 0
        self.max_delay = int(steps.max()) if steps.numel() else 0
        self._shared_delay = None if self.per_synapse_delay else int(steps)
        self._check_delay_memory()
        if self.per_synapse_delay:
            self.register_buffer("_index", synapse_index(steps), persistent=False)
        self.history = self.history_pos = self.arriving = None

    @property
    def delay(self) -> torch.Tensor:
        """Delays in ms (rounded to steps): a 0-d or ``delay_shape`` float tensor."""
        reference = self._reference()
        dtype = torch.get_default_dtype() if reference is None else reference.dtype
        return self.delay_steps.to(dtype) * self.dt

    # ------------------------------------------------------------------ one step
    def _reference(self) -> Optional[torch.Tensor]:
        """The first floating-point parameter: inputs must match its dtype and device."""
        weight = self._parameters.get("weight")
        if weight is not None:
            return weight
        for tensor in self._parameters.values():
            if tensor is not None and tensor.is_floating_point():
                return tensor
        return next((p for p in self.parameters() if p.is_floating_point()), None)

    def _check_spikes(self, spikes: torch.Tensor) -> None:
        """Shape ``(B, *in_shape)``, dtype and device of the module, no NaN."""
        name = type(self).__name__
        if not isinstance(spikes, torch.Tensor):
            raise TypeError(f"spikes must be a torch.Tensor, got {type(spikes).__name__}")
        shape = self.in_shape
        if self._named_dims:
            if spikes.dim() != len(shape) + 1 or any(
                isinstance(s, int) and s != n for s, n in zip(shape, spikes.shape[1:])
            ):
                raise ValueError(
                    f"spikes must have shape (B, {', '.join(str(s) for s in shape)}) for {name}, "
                    f"got {tuple(spikes.shape)}"
                )
            shape = tuple(spikes.shape[1:])
        reference = self._reference()
        check_input("spikes", spikes, shape, spikes if reference is None else reference, name)

    def _push(self, spikes: torch.Tensor) -> None:
        """Push ``spikes`` ``(B, *in_shape)`` into the history; set :attr:`arriving` (shared delay)."""
        if self.max_delay == 0 and not self.per_synapse_delay:
            self._buffers["arriving"] = spikes
            return
        if self.per_synapse_delay:
            self._buffers["history"] = push_history(self._history_for(spikes), spikes)
            return
        if not spikes.is_cpu or capturing_graph() or torch.compiler.is_compiling():
            self._push_on_device(spikes)
            return
        # In place only where nobody else can see the ring (asked before it is bound to a local
        # name, itself a reference): state is replaced every step, as for neurons, and a user's
        # reference to ``history`` keeps its step's value.
        nobody_else = unshared(self._buffers, "history")
        before = id(self._buffers.get("history"))
        ring, pos = self._history_for(spikes), self._ring_pos()
        fresh = id(ring) != before  # just made for a new batch size: nobody has seen it
        length = ring.shape[1]
        # The slot read holds the input of max_delay = length - 1 steps ago; the slot written
        # held that of length steps ago, which no synapse needs any more.
        self._buffers["arriving"] = ring[:, (pos + 1) % length].clone()
        if (nobody_else or fresh) and self._ring_in_place(spikes, ring):
            ring[:, pos] = spikes
        else:  # a new ring, so that autograd sees every step's state
            ring = ring.clone()
            ring[:, pos] = spikes
            self._buffers["history"] = ring
        self._set_ring_pos((pos + 1) % length)

    def _push_on_device(self, spikes: torch.Tensor) -> None:
        """:meth:`_push` with a shared delay, the ring position kept as a tensor
        (``history_pos``) that tensor operations read and advance: no Python number changes
        from step to step and nothing is read back to the host. Taken on a GPU (a read-back
        would wait for the device), while ``torch.compile`` traces (one graph serves every
        step, no recompilation per ring slot) and while a step is recorded for a replay
        (:func:`pysnn.stepping.graph_capture`). In place where nothing else can see the ring
        and the position, as :meth:`_push` (never while compiling); the same values."""
        if not torch.compiler.is_compiling():  # (the host copy of the position is not kept
            self.__dict__["_pos_seen"] = None  # up to date here: read back when next needed)
        nobody_else = unshared(self._buffers, "history") and unshared(self._buffers, "history_pos")
        ring = self._history_for(spikes)
        pos = self._buffers["history_pos"]
        length = ring.shape[1]
        following = torch.remainder(pos + 1, length)
        self._buffers["arriving"] = ring.index_select(1, following.view(1))[:, 0]
        if (
            nobody_else
            and self._ring_in_place(spikes, ring)
            and not (pos.is_inference() and not torch.is_inference_mode_enabled())
        ):
            ring.index_copy_(1, pos.view(1), spikes.unsqueeze(1))
            pos.copy_(following)
            return
        self._buffers["history"] = ring.index_copy(1, pos.view(1), spikes.unsqueeze(1))
        self._buffers["history_pos"] = following

    def _history_for(self, spikes: torch.Tensor) -> torch.Tensor:
        """The history for a step or block of batch ``B`` and per-sample shape ``in_shape`` of
        ``spikes`` ``(B, *in_shape)``: the current one, or zeros (warning when that drops spikes
        in flight, see :func:`pysnn._checks.warn_if_dropped`) after a change of batch or shape."""
        history = self.history
        if (
            history is None
            or history.shape[0] != spikes.shape[0]
            or history.shape[2:] != (spikes.shape[1:])
        ):
            warn_if_dropped(f"{type(self).__name__} (delay history)", history, spikes.shape[0])
            history = self._zeros(
                "delay history", (spikes.shape[0], self.max_delay + 1, *spikes.shape[1:]), spikes
            )
            self._buffers["history"] = history
            if not self.per_synapse_delay:
                self._set_ring_pos(0, spikes.device)
        return history

    def _ring_pos(self) -> int:
        """``int(history_pos)``, read back only when the buffer changed since pysnn last set or
        read it (its :class:`~pysnn._guards.Stamp`: replaced by ``.to()`` or a checkpoint, or
        edited in place), not per step."""
        source = self._buffers["history_pos"]
        seen = self._pos_seen
        if seen is None or not seen.holds(source):
            self.__dict__.update(_pos=int(source), _pos_seen=Stamp(source))
        return self._pos

    def _set_ring_pos(self, pos: int, device: Optional[torch.device] = None) -> None:
        """Set ``history_pos`` to ``pos``: in place, or a new tensor on ``device`` if given (or
        when torch forbids writing an inference-mode tensor)."""
        source = self._buffers["history_pos"]
        if device is not None or (source.is_inference() and not torch.is_inference_mode_enabled()):
            source = torch.full((), pos, dtype=torch.int64, device=device or source.device)
            self._buffers["history_pos"] = source
        else:
            source.fill_(pos)
        # (while compiling, nothing reads the host copy: _push_on_device reads the tensor)
        seen = self._pos_seen
        if torch.compiler.is_compiling():
            seen = None
        elif seen is not None and seen.source is source:
            seen.renew()  # (pysnn's own write of the same buffer)
        else:
            seen = Stamp(source)
        self.__dict__.update(_pos=pos, _pos_seen=seen)

    @staticmethod
    def _ring_in_place(spikes: torch.Tensor, ring: torch.Tensor) -> bool:
        """Whether the ring may be written in place: not when autograd records the input, nor a
        ring that is part of a graph (it must keep each step's state), nor an inference-mode
        ring outside inference mode (torch forbids it)."""
        if ring.requires_grad or (torch.is_grad_enabled() and spikes.requires_grad):
            return False
        return not ring.is_inference() or torch.is_inference_mode_enabled()

    def _check_bounds(self) -> None:
        """Warn once per write of the user's own (see ``wmin, wmax`` in the class docstring) if
        the plain ``weight`` left ``[wmin, wmax]``: checked only when the weight's
        :class:`~pysnn._guards.Stamp` from pysnn's last edit or check no longer holds (another
        object or storage, an in-place edit, a write through ``.data``; for a weight without a
        version counter, made under ``torch.inference_mode``, other bytes, at every step on
        another device than the CPU)."""
        weight = self._parameters.get("weight")
        if weight is None or torch.compiler.is_compiling():
            return
        seen = self.__dict__.get("_bounds_seen")
        if seen is not None and seen.holds(weight) and (seen.sees_values or not self._bounded()):
            return
        _track(weight)
        self.__dict__["_bounds_seen"] = Stamp(weight, values=self._bounded())
        if not self._bounded():
            return
        with torch.no_grad():
            outside = bool(((weight < self.wmin) | (weight > self.wmax)).any())
        if outside:
            warnings.warn(
                f"{type(self).__name__}: weight values outside [wmin, wmax] = [{self.wmin}, "
                f"{self.wmax}] (written outside pysnn, e.g. copy_, an optimiser step or .data) "
                "are used as they are; call clamp_() to apply the bounds",
                UserWarning,
                stacklevel=4,
            )

    def _edited(self, copy_in_sync: bool = False) -> None:
        """Record that pysnn itself just edited the plain weight (within its bounds): one new
        :class:`~pysnn._guards.Stamp` of it for the bounds check and, when ``copy_in_sync``
        (the edit reached the presynaptic-major copy too), for that copy."""
        weight = self._parameters.get("weight")
        if weight is None:
            return
        _track(weight)
        stamp = Stamp(weight, values=copy_in_sync or self._bounded())
        self.__dict__["_bounds_seen"] = stamp
        if copy_in_sync:
            self._copy.stamp = stamp

    def _bounded(self) -> bool:
        """Whether ``wmin`` or ``wmax`` is finite."""
        return math.isfinite(self.wmin) or math.isfinite(self.wmax)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """One step: presynaptic spikes ``(B, *in_shape)`` → synaptic input arriving now (mV).

        Checks the input, pushes it into the history and returns :meth:`propagate` of
        :meth:`arriving_spikes`.
        """
        self._check_bounds()
        self._check_spikes(spikes)
        self._prepare_state(spikes)
        self._push(spikes)
        return self.propagate(self.arriving_spikes())

    def forward_multistep(self, spikes: torch.Tensor) -> torch.Tensor:
        r"""Run ``T`` steps at once: ``spikes`` ``(T, B, *in_shape)`` → ``(T, B, *out_shape)``.

        Identical to calling :meth:`forward` on ``spikes[0], ..., spikes[T-1]`` in turn (up to
        float summation order): with a shared delay of :math:`d` steps the arriving input is the
        spike sequence shifted by :math:`d` in time (the first :math:`d` steps come from the
        history), then **one** call of :meth:`propagate` on all ``T * B`` samples. The history
        and :attr:`arriving` are left as after the last step, so single steps and blocks can be
        mixed. With per-synapse delays, or when forward hooks are registered (e.g. a
        :class:`~pysnn.monitor.Monitor`, which must see every step, or a pruning hook), the
        module is called once per step instead (same results, no speed-up).
        """
        self._check_bounds()
        self._check_block(spikes)
        if self.per_synapse_delay or block_form_reason(self, Connection):
            return step_through(self, spikes)
        arriving = self._arrive_block(spikes)
        out = self.propagate(arriving.flatten(0, 1))
        return out.view(spikes.shape[0], spikes.shape[1], *out.shape[1:])

    def _check_block(self, spikes: torch.Tensor) -> None:
        if (
            not isinstance(spikes, torch.Tensor)
            or spikes.dim() != len(self.in_shape) + 2
            or spikes.shape[0] == 0
        ):
            raise ValueError(
                f"spikes must have shape (T, B, {', '.join(str(s) for s in self.in_shape)}) with "
                f"T >= 1 for "
                f"{type(self).__name__}.forward_multistep, got "
                f"{tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes)}"
            )
        self._check_spikes(spikes.flatten(0, 1))

    def _arrive_block(self, spikes: torch.Tensor) -> torch.Tensor:
        """What arrives in each of ``T`` steps, ``(T, B, *in_shape)`` (shared delay); updates
        ``history``, ``history_pos`` and ``arriving`` exactly as ``T`` single steps would.

        Reads the ``min(T, max_delay)`` arrivals that precede the block from the ring and writes
        the last ``min(T, max_delay + 1)`` inputs into their slots: ``O(T * in)`` per sample.
        """
        if self.max_delay == 0:
            self._buffers["arriving"] = spikes[-1]
            return spikes
        n_steps, delay = spikes.shape[0], self.max_delay
        ring = self._history_for(spikes[0])
        pos, length = self._ring_pos(), delay + 1
        steps = torch.arange(min(n_steps, length), device=ring.device)
        # Block step t < delay receives the input of delay - t steps before the block.
        n_past = min(n_steps, delay)
        past = ring.index_select(1, (steps[:n_past] + pos + 1) % length).transpose(0, 1)
        arriving = torch.cat((past, spikes[: n_steps - n_past]))
        # Step t writes slot (pos + t) % length; only the last `length` writes survive.
        written = steps + (pos + n_steps - steps.numel())
        last = spikes[n_steps - steps.numel() :].transpose(0, 1)
        if self._ring_in_place(spikes, ring):
            ring.index_copy_(1, written % length, last)
        else:
            self._buffers["history"] = ring.index_copy(1, written % length, last)
        self._set_ring_pos((pos + n_steps) % length)
        self._buffers["arriving"] = arriving[-1]
        return arriving

    def extra_repr(self) -> str:
        def size(shape: Tuple[Union[int, str], ...]) -> str:
            return str(shape[0]) if len(shape) == 1 else str(shape)

        delay = "per-synapse" if self.per_synapse_delay else f"{self._shared_delay * self.dt} ms"
        text = (
            f"in_features={size(self.in_shape)}, out_features={size(self.out_shape)}, "
            f"dt={self.dt}, delay={delay}"
        )
        if self._state_specs:
            text += f", state={self.state_names}"
        return text

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        """Clear the spike history, every spike in flight and the registered state (back to
        its initial value)."""
        self.history = None
        self.history_pos = None
        self.arriving = None
        for name in self._state_specs:
            state = self._buffers[name]
            if state is not None:
                self._make_state(state.shape[0], state)
                return

    def detach_state(self) -> None:
        """Cut the autograd graph at the current state (truncated BPTT)."""
        for name in ("history", "arriving", *self._state_specs):
            if self._buffers.get(name) is not None:
                self._buffers[name] = self._buffers[name].detach()

    def arriving_spikes(self) -> torch.Tensor:
        """Presynaptic spikes arriving at the synapses in the current step.

        Returns ``(B, *in_shape)`` when all synapses share one delay (identical for every
        postsynaptic unit), or ``(B, *delay_shape)`` per synapse (``(B, out, in)`` for
        :class:`Linear`). Valid after ``forward``.
        """
        if self.per_synapse_delay:
            return delayed(self.history, self._index)
        return self.arriving

    def delayed(self, history: torch.Tensor) -> torch.Tensor:
        """Read a presynaptic quantity through this connection's delays.

        Args:
            history: ``(B, L, *in_shape)`` with ``L >= max_delay + 1``, index ``k`` holding the
                value from ``k`` steps ago (see :func:`pysnn.functional.push_history`).

        Returns:
            Same layout as :meth:`arriving_spikes`.
        """
        if self.per_synapse_delay:
            return delayed(history, self._index)
        return delayed(history, self._shared_delay)

    # ------------------------------------------------------------------ weights
    #: presynaptic-major copy of ``weight`` kept in sync by the edits below (:class:`Linear`)
    _copy: Optional[_PresynapticCopy] = None

    def _kind(self, name: str = "weight") -> str:
        """How the tensor ``name`` is stored: ``"parameter"`` (a plain parameter), ``"pruned"``
        (``torch.nn.utils.prune``: ``name_orig * name_mask``), ``"parametrized"``
        (``torch.nn.utils.parametrize``), ``"absent"``, or ``"other"`` (e.g. computed by the
        legacy ``torch.nn.utils.weight_norm`` hook)."""
        if self._parameters.get(name) is not None:
            return "parameter"
        if name + "_orig" in self._parameters and name + "_mask" in self._buffers:
            return "pruned"
        if parametrize.is_parametrized(self, name):
            return "parametrized"
        return "other" if isinstance(getattr(self, name, None), torch.Tensor) else "absent"

    def _writable(self, name: str = "weight") -> str:
        """:meth:`_kind`, raising ``TypeError`` when the tensor cannot be written."""
        kind = self._kind(name)
        if kind in ("absent", "other"):
            what = "has no" if kind == "absent" else "has a computed (not learnable in place)"
            raise TypeError(
                f"{type(self).__name__} {what} {name!r}: weight updates, bounds and "
                "normalisation need it as an nn.Parameter, pruned (torch.nn.utils.prune) or "
                "parametrized (torch.nn.utils.parametrize, e.g. "
                "torch.nn.utils.parametrizations.weight_norm instead of the legacy "
                "torch.nn.utils.weight_norm)"
            )
        if kind == "parametrized":
            for module in getattr(self.parametrizations, name):
                if not hasattr(module, "right_inverse"):
                    raise TypeError(
                        f"the parametrization {type(module).__name__} of {name!r} has no "
                        "right_inverse, so the weight cannot be written in place; define "
                        "right_inverse(value) -> original (the identity for a mask), or use "
                        "grad=True and a torch optimiser"
                    )
        return kind

    def _edit(
        self,
        edit: Callable[[torch.Tensor], None],
        name: str = "weight",
        rows: Optional[torch.Tensor] = None,
    ) -> None:
        """Apply the in-place elementwise ``edit`` to the tensor ``name`` (under ``no_grad``).

        A plain parameter is edited itself (and the presynaptic-major copy with it; ``rows``, if
        given, are the only rows along dim 0 the edit changes); a pruned one through
        ``name_orig`` (the masked entries stay 0 in the effective tensor); a parametrized one by
        editing its current value and writing it back with ``right_inverse``. A tensor made under
        ``torch.inference_mode`` (the module was built there) is edited inside the mode, the one
        place torch edits it in place (the fused kernels write it anywhere).
        """
        kind = self._writable(name)
        if not torch.is_inference_mode_enabled() and self._inference_leaf(name, kind):
            with torch.inference_mode():
                self._edit(edit, name, rows)
            return
        if kind == "parameter":
            leaf = self._parameters[name]
            in_sync = False
            if self._copy is not None and name == "weight":
                in_sync = self._copy.mirror(leaf, edit, rows)
            else:
                edit(leaf)
            if name == "weight":
                self._edited(in_sync)
        elif kind == "pruned":
            edit(self._parameters[name + "_orig"])
            self._refresh_pruned(name)
        else:
            value = getattr(self, name).clone()
            edit(value)
            setattr(self, name, value)  # right_inverse of every parametrization

    def _inference_leaf(self, name: str, kind: str) -> bool:
        """Whether the learnable tensor behind ``name`` (of :meth:`_writable`'s ``kind``) is an
        inference tensor, which torch edits in place only under ``torch.inference_mode``."""
        if kind == "parameter":
            return self._parameters[name].is_inference()
        if kind == "pruned":
            return self._parameters[name + "_orig"].is_inference()
        return any(t.is_inference() for t in getattr(self.parametrizations, name).parameters())

    def _refresh_pruned(self, name: str) -> None:
        """Recompute a pruned ``name`` = ``name_orig * name_mask`` now (else at the next call)."""
        for hook in self._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name:
                setattr(self, name, hook.apply_mask(self))

    def reset_parameters(self) -> None:
        """(Re-)initialise ``weight`` (and ``bias``) with ``init``/``init_kwargs``, within the bounds.

        ``"kaiming_uniform"`` (default) matches ``torch.nn.Linear``/``Conv2d``. ``"uniform"``,
        ``"normal"``, ``"constant"`` and the xavier/kaiming variants call the ``torch.nn.init``
        function of that name with ``init_kwargs`` (e.g. ``{"a": 0.0, "b": 0.3}`` for uniform,
        ``{"val": 0.5}`` for constant). The weight is drawn in its own ``(out, in)`` order, as
        ``torch.nn.Linear``'s is (pysnn 0.1 drew a 2-D weight in presynaptic-major order: the same
        seed now gives other weights). A connection without ``weight`` has nothing to do here (it
        initialises its own parameters).

        **Bounds.** When the draw has values outside ``[wmin, wmax]``, the weight is drawn again
        from the init's distribution *restricted to* the bounds, never clamped onto them: a
        uniform init becomes uniform on the overlap of its interval with ``[wmin, wmax]`` (the
        default kaiming-uniform init with ``wmin=0`` draws from ``[0, 1/sqrt(fan_in)]`` instead of
        setting half of the weights to exactly 0), a normal init the normal truncated to the
        bounds (``torch.nn.init.trunc_normal_``). ``ValueError`` when the init's interval does not
        meet the bounds, or ``init="constant"`` has its value outside them. A draw within the
        bounds is kept as it is (same values for a given seed as without bounds).
        """
        if self._kind("weight") == "absent":
            return
        kwargs = dict(self.init_kwargs)
        if self.init == "kaiming_uniform":
            kwargs.setdefault("a", math.sqrt(5))
        if self.init == "constant" and "val" not in kwargs:
            raise ValueError("init='constant' needs init_kwargs={'val': value}")
        for key, value in kwargs.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(
                    f"init_kwargs[{key!r}] must be finite, got {value}: the weights would be "
                    "NaN or infinite"
                )

        def draw(value: torch.Tensor) -> None:
            try:
                getattr(nn.init, self.init + "_")(value, **kwargs)
            except TypeError as err:
                raise ValueError(
                    f"init_kwargs {kwargs} do not fit init={self.init!r}: {err}"
                ) from None
            if math.isfinite(self.wmin) or math.isfinite(self.wmax):
                self._redraw_within_bounds(value, kwargs)

        with torch.no_grad():
            if self._kind("weight") == "parameter":
                self._edit(draw)  # drawn in place: no weight-sized temporary
            else:  # pruned or parametrized: drawn, then written through the mask/right_inverse
                value = torch.empty_like(self.weight)
                draw(value)
                self._edit(lambda w: w.copy_(value))
            if self._kind("bias") != "absent":
                fan_in = self.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                bias = torch.empty_like(self.bias).uniform_(-bound, bound)
                self._edit(lambda b: b.copy_(bias), "bias")
        self.clamp_()

    def _redraw_within_bounds(self, value: torch.Tensor, kwargs: Dict[str, Any]) -> None:
        """Redraw ``value`` (drawn by ``init``) from ``init``'s distribution restricted to
        ``[wmin, wmax]`` if any value is outside (see :meth:`reset_parameters`)."""
        wmin, wmax = self.wmin, self.wmax
        if value.numel() == 0 or (value.min() >= wmin and value.max() <= wmax):
            return
        init = self.init
        if init == "constant":
            raise ValueError(
                f"init='constant' with val={kwargs['val']} is outside the weight bounds "
                f"[wmin, wmax] = [{wmin}, {wmax}]; give a value within them"
            )
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(value)
        if init.startswith("kaiming"):
            fan = fan_in if kwargs.get("mode", "fan_in") == "fan_in" else fan_out
            gain = nn.init.calculate_gain(
                kwargs.get("nonlinearity", "leaky_relu"), kwargs.get("a", 0)
            )
            mean, std = 0.0, gain / math.sqrt(fan)
        elif init.startswith("xavier"):
            mean, std = 0.0, kwargs.get("gain", 1.0) * math.sqrt(2.0 / (fan_in + fan_out))
        elif init == "normal":
            mean, std = kwargs.get("mean", 0.0), kwargs.get("std", 1.0)
        if init.endswith("normal"):
            nn.init.trunc_normal_(value, mean, std, wmin, wmax)
            return
        if init == "uniform":
            low, high = kwargs.get("a", 0.0), kwargs.get("b", 1.0)
        else:  # kaiming_uniform, xavier_uniform: U(-sqrt(3) std, sqrt(3) std)
            low, high = -math.sqrt(3.0) * std, math.sqrt(3.0) * std
        if max(low, wmin) > min(high, wmax):
            raise ValueError(
                f"init={init!r} draws from [{low:g}, {high:g}], which does not meet the weight "
                f"bounds [wmin, wmax] = [{wmin}, {wmax}]; choose init='uniform' with "
                "init_kwargs={'a': ..., 'b': ...} within the bounds"
            )
        value.uniform_(max(low, wmin), min(high, wmax))

    @torch.no_grad()
    def _warn_out_of_bounds(self, what: str) -> None:
        """``UserWarning`` if ``weight`` has values outside finite ``[wmin, wmax]`` (one host read:
        for loads and other rare events, never per step)."""
        weight = self._parameters.get("weight")
        if weight is None or not (math.isfinite(self.wmin) or math.isfinite(self.wmax)):
            return
        outside = int(torch.count_nonzero((weight < self.wmin) | (weight > self.wmax)))
        if outside:
            warnings.warn(
                f"{what} of {type(self).__name__} has {outside} of {weight.numel()} values outside "
                f"[wmin, wmax] = [{self.wmin}, {self.wmax}]; they are used as they are until "
                "a learning rule or clamp_() clamps them: call clamp_() to apply the bounds now",
                UserWarning,
                stacklevel=4,
            )

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp ``weight`` in place to ``[wmin, wmax]`` (mV per unit of input).

        A pruned weight is clamped before its mask: masked synapses stay at 0 even when 0 is
        outside the bounds. Nothing to do without finite bounds.
        """
        if math.isfinite(self.wmin) or math.isfinite(self.wmax):
            self._edit(lambda w: w.clamp_(self.wmin, self.wmax))

    @torch.no_grad()
    def normalize(self, total: float) -> None:
        """Scale weights in place so the incoming weights of each postsynaptic unit sum to ``total``.

        The postsynaptic unit is dim 0 of ``weight``: each row of a :class:`Linear` ``(out,
        in)`` weight, each output channel's kernel of a :class:`Conv2d`. The sums are of the
        effective weight (after a pruning mask or a parametrisation). Units whose weights sum to 0
        are left unchanged (no division by zero). As in Diehl & Cook (2015), no clamping follows.
        """
        self._writable()
        weight = self.weight
        sums = weight.sum(dim=tuple(range(1, weight.dim())), keepdim=True)
        factor = torch.where(sums != 0, total / sums, torch.ones_like(sums))
        self._edit(lambda w: w.mul_(factor))

    def apply_update_(
        self,
        dw: torch.Tensor,
        rows: Optional[torch.Tensor] = None,
        *,
        grad: bool = False,
        norm: Optional[float] = None,
    ) -> None:
        """Apply a weight change ``dw`` (mV per unit of input) computed by a learning rule.

        ``weight += dw``, clamped to ``[wmin, wmax]``, then :meth:`normalize` ``(norm)`` if
        ``norm`` is given. The change goes to the learnable tensor behind ``weight``: the
        parameter itself, ``weight_orig`` of a pruned weight (masked synapses keep an
        effective weight of 0), or the ``original`` tensors of a parametrized one (through
        ``right_inverse``, which each parametrisation must define). The event-driven copy of a
        :class:`Linear` is updated alongside (no re-transpose).

        Args:
            dw: weight-shaped change, or ``(len(rows), *weight.shape[1:])`` with ``rows``.
            rows: int64 indices along dim 0 (postsynaptic units) that ``dw`` covers; the other
                rows are unchanged. ``None``: ``dw`` covers the whole weight.
            grad: instead of changing the weight, accumulate ``-dw`` into the ``.grad`` of the
                learnable tensor(s) (chained through a mask or parametrisation) for a torch
                optimiser (``SGD(lr=1)`` then applies ``+dw``); no clamp, no normalisation.
            norm: if given, :meth:`normalize` ``(norm)`` after the update (ignored with
                ``grad=True``).
        """
        if torch.is_grad_enabled():  # (a context only where needed: it costs microseconds)
            with torch.no_grad():
                return self.apply_update_(dw, rows, grad=grad, norm=norm)
        kind = self._kind("weight")
        if kind in ("absent", "other") or (not grad and kind == "parametrized"):
            kind = self._writable()
        leaf = self._parameters.get("weight")
        shape = tuple((self.weight if leaf is None else leaf).shape)
        if not isinstance(dw, torch.Tensor):
            raise TypeError(f"dw must be a torch.Tensor, got {type(dw).__name__}")
        if rows is not None:
            if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.is_floating_point():
                raise TypeError("rows must be a 1-D integer tensor of indices along dim 0")
            expected = (rows.shape[0], *shape[1:])
        else:
            expected = shape
        if tuple(dw.shape) != expected:
            raise ValueError(
                f"dw must have shape {expected} (the weight{' rows' if rows is not None else ''})"
                f", got {tuple(dw.shape)}"
            )
        if rows is not None and kind != "parameter":  # masks and parametrisations: whole weight
            dw, rows = (
                torch.zeros(shape, dtype=dw.dtype, device=dw.device).index_add_(0, rows, dw),
                None,
            )
        if grad:
            self._accumulate_grad(kind, dw, rows)
            return
        bounded = math.isfinite(self.wmin) or math.isfinite(self.wmax)
        if rows is not None and kind == "parameter" and self._fused_row_update(leaf, rows, dw):
            if norm is not None:
                self.normalize(norm)
            return
        if rows is None:

            def edit(w: torch.Tensor) -> None:
                w.add_(dw)
                if bounded:
                    w.clamp_(self.wmin, self.wmax)

        else:

            def edit(w: torch.Tensor) -> None:
                updated = w.index_select(0, rows).add_(dw)
                if bounded:
                    updated.clamp_(self.wmin, self.wmax)
                w.index_copy_(0, rows, updated)

        self._edit(edit, rows=rows)
        if norm is not None:
            self.normalize(norm)

    def _fused_weight_edit(
        self,
        leaf: torch.Tensor,
        kernel: Callable[[Optional[torch.Tensor], Optional[Tuple[float, float]]], Any],
    ) -> bool:
        """Run ``kernel(copy, bounds)``, a fused in-place edit of the plain weight ``leaf`` that
        clamps to ``bounds`` (``(wmin, wmax)``, ``None`` when unbounded) and writes the same
        values into ``copy`` (the presynaptic-major event copy when it is in step, else
        ``None``), and keep the bookkeeping of a pysnn edit. ``False`` when ``kernel`` returned
        ``None`` or ``False`` (it did nothing: the caller takes the torch path)."""
        copy = self._copy
        in_sync = copy is not None and copy.copy is not None and copy._in_sync(leaf)
        bounds = (self.wmin, self.wmax)
        if not (math.isfinite(self.wmin) or math.isfinite(self.wmax)):
            bounds = None
        done = kernel(copy.copy if in_sync else None, bounds)
        if done is None or done is False:
            return False
        self._edited(in_sync)
        return True

    def _fused_row_update(self, leaf: torch.Tensor, rows: torch.Tensor, dw: torch.Tensor) -> bool:
        """The row update of :meth:`apply_update_` as one fused CPU pass that also keeps the
        event copy in step (:func:`pysnn.native.row_update_`); ``False`` where it does not apply."""
        dw = dw.contiguous()
        return self._fused_weight_edit(
            leaf, lambda copy, bounds: row_update_(leaf, rows, dw, copy, bounds)
        )

    def _accumulate_grad(self, kind: str, dw: torch.Tensor, rows: Optional[torch.Tensor]) -> None:
        """``.grad -= dw`` on the learnable tensor(s) behind ``weight``."""
        if kind == "parameter":
            leaf = self._parameters["weight"]
            if rows is None:
                leaf.grad = -dw if leaf.grad is None else leaf.grad.sub_(dw)
            else:
                if leaf.grad is None:
                    leaf.grad = torch.zeros_like(leaf)
                leaf.grad.index_add_(0, rows, dw, alpha=-1)
        elif kind == "pruned":
            leaf = self._parameters["weight_orig"]
            masked = -dw * self._buffers["weight_mask"]
            if leaf.grad is None:
                leaf.grad = masked
            else:
                leaf.grad.add_(masked)
        else:  # parametrized: chain rule through the parametrisation
            with torch.enable_grad():
                torch.autograd.backward(self.weight, grad_tensors=-dw)


class _Activity:
    """Input activity counted by ``propagation="auto"`` (a plain object: cheap to update)."""

    __slots__ = ("steps", "events", "active", "event")

    def __init__(self) -> None:
        self.steps = 0  # steps counted in this interval
        self.events = 0  # active inputs of event steps (host-known: no read-back)
        self.active: Optional[torch.Tensor] = None  # active inputs of dense steps, on the device
        self.event = False  # current choice


_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


class Linear(Connection):
    r"""All-to-all connection, like ``torch.nn.Linear``, with optional synaptic delays.

    ``forward(spikes)``: ``spikes`` ``(B, in_features)`` → synaptic input arriving this step
    ``(B, out_features)``, :math:`I_i(t) = \sum_j w_{ij} s_j(t - d_{ij}) + b_i`.

    Args:
        in_features: presynaptic size.
        out_features: postsynaptic size.
        dt: time step (ms).
        delay: synaptic delay (ms), >= 0: a scalar or an ``(out, in)`` tensor per synapse; rounded
            to whole steps of ``dt``.
        wmin, wmax: weight bounds used by :meth:`clamp_`, initialisation and learning rules.
        bias: add a learnable bias ``(out,)``.
        init, init_kwargs: weight initialisation (see :meth:`Connection.reset_parameters`).
        propagation: how spikes reach the postsynaptic side; all three give the same result
            (up to float summation order):

            - ``"dense"``: a matrix product every step (cost ~ ``in * out``, independent of
              activity; no host sync; what ``torch.compile`` sees).
            - ``"event"``: gather and sum only the weight rows of inputs that are non-zero
              (cost ~ ``active * out``; :func:`pysnn.functional.linear.linear_event`). Not for an
              input that requires a gradient (e.g. spikes from a surrogate spike function): its
              gradient is needed at the zero entries too, so such a step runs ``"dense"``
              whatever the setting. On the CPU without autograd this is one fused loop of
              :mod:`pysnn.native`, otherwise ``F.embedding_bag`` over the presynaptic rows,
              whose data-dependent ``torch.nonzero`` is a host sync on GPU (opt-in there).
            - ``"auto"`` (default): ``"event"`` when it pays off, else ``"dense"``. It is
              ``"dense"`` on non-CPU devices (no host sync ever), under ``torch.compile``, for
              a pruned or parametrized weight (recomputed every step anyway), and, when the
              fused kernels are unavailable, for connections with fewer than
              :attr:`AUTO_MIN_SYNAPSES` synapses (a small matrix product is then cheaper than the
              extra ops of ``embedding_bag``). Otherwise the number of active inputs is
              counted every step (on the device, no sync, or for free by the fused event
              kernel) and read back every :attr:`AUTO_INTERVAL` steps; the next interval runs
              ``"event"`` while the mean number of active inputs per step (summed over the
              batch) is at most :attr:`AUTO_EVENT_FRACTION` ``* in_features``. The first interval
              runs ``"event"`` where the fused kernel is available, else ``"dense"``. The
              current choice is :attr:`active_propagation`. A single step whose weight is
              trained (needs a gradient) runs ``"dense"``: one step's rows are too few to repay
              the event-driven weight gradient, which :meth:`forward_multistep` uses for sparse
              blocks.

    With per-synapse delays each presynaptic spike is scattered, at emission, into a queue of
    future input (cost per step proportional to the spikes emitted times ``out_features``;
    :func:`pysnn.functional.linear.delay_queue_step`); the weight applied is the one at
    emission. With a shared delay the weight at arrival is applied.

    **Memory layout.** ``weight`` is a contiguous ``(out, in)`` tensor, exactly as in
    ``torch.nn.Linear`` (``weight.view(-1)``, ``parameters_to_vector``, LBFGS, pruning and
    parametrisations work as there). The event-driven path reads the weights of one presynaptic
    neuron as one contiguous row, so it keeps a private presynaptic-major copy
    ``weight.t().contiguous()`` ``(in, out)``, built on the first event-driven step: **twice the
    weight memory** while event-driven steps run (``propagation="dense"`` never builds it;
    ``.to()`` drops it). The copy is rebuilt whenever the weight changed: replaced, moved, edited
    in place (autograd's version counter: ``weight.normal_()`` under ``no_grad``, ``copy_``,
    ``load_state_dict``, optimiser steps) or written through ``weight.data`` (counted by
    the weight's class, an ``nn.Parameter`` subclass that counts them and keeps the tensors
    ``.data`` returned; a plain ``nn.Parameter`` later assigned to ``weight`` is switched to it,
    in place, at the next event-driven step, so a ``.data`` alias of it taken *before* that step
    is the one write path not seen). Learning rules (:meth:`Connection.apply_update_`),
    :meth:`clamp_` and :meth:`normalize` edit both copies, so learning needs no rebuild. Writes
    that bypass torch entirely (through a NumPy view of the weight) are not seen: after one,
    assign ``fc.weight.data = fc.weight.data`` (counted as a write) or use ``"dense"``.

    **Masked connectivity** (BindsNET's connection masks): prune the weight with
    ``torch.nn.utils.prune`` (e.g. ``prune.custom_from_mask(fc, "weight", mask)``, mask ``(out,
    in)`` of 0/1) or register a parametrisation (``torch.nn.utils.parametrize``); every path
    uses the effective weight (``fc.weight``), and learning rules update ``weight_orig`` so masked
    synapses stay at 0. Such a weight is recomputed by torch on every call, so ``"auto"`` runs
    dense (and ``"event"`` gathers from ``fc.weight`` without the fused kernel);
    ``prune.remove`` restores the plain parameter and the fast path.

    Memory per synapse: one weight (4 bytes in float32; 8 with the event-path copy), plus one
    int64 delay (8 bytes) and one int64 gather index (8 bytes) with per-synapse delays. State per
    batch sample: ``(max_delay + 1) * in`` history values (shared or per-synapse delays) and
    ``(max_delay + 1) * out`` queued inputs (per-synapse delays), nothing with ``delay=0``.

    Multi-step: :meth:`forward_multistep` runs ``T`` steps in one call (one matrix product).

    Attributes:
        weight: ``(out_features, in_features)``, contiguous.
        bias: ``(out_features,)`` or ``None``.
        delay_steps: int64, 0-d or ``(out, in)``.
        history: ``(B, max_delay + 1, in)`` presynaptic spikes of the last steps: a ring buffer
            with a shared delay (see :class:`Connection`), index 0 = now per synapse.
        queue: ``(B, max_delay + 1, out)`` synaptic input in flight (per-synapse delays only).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        dt: float = 1.0,
        delay: DelayLike = 0.0,
        wmin: float = -math.inf,
        wmax: float = math.inf,
        bias: bool = False,
        init: str = "kaiming_uniform",
        init_kwargs: Optional[Dict[str, Any]] = None,
        propagation: str = "auto",
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__init__(
            in_features,
            out_features,
            dt,
            delay,
            delay_shape=(out_features, in_features),
            wmin=wmin,
            wmax=wmax,
            init=init,
            init_kwargs=init_kwargs,
            device=device,
        )
        self.in_features, self.out_features = in_features, out_features
        self.propagation = check_choice("propagation", propagation, PROPAGATIONS)
        factory = {"device": device, "dtype": dtype}
        self.weight = TrackedParameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_buffer("queue", None, persistent=False)
        self._copy = _PresynapticCopy()
        self._reset_activity()
        self.reset_parameters()

    #: ``"auto"``: connections with fewer synapses always run dense.
    AUTO_MIN_SYNAPSES: int = 1 << 18
    #: ``"auto"``: steps between two read-backs of the activity count.
    AUTO_INTERVAL: int = 64
    #: ``"auto"``: run event-driven while active inputs per step <= this fraction of ``in``.
    AUTO_EVENT_FRACTION: float = 0.25
    #: multi-step ``"auto"``: event-driven while active inputs <= this fraction of ``T * B * in``
    #: (a large matrix product runs near peak FLOP/s, a gather at memory bandwidth).
    AUTO_MULTISTEP_EVENT_FRACTION: float = 0.08
    #: the same when the weight needs a gradient (training): the event-driven forward and weight
    #: gradient (:func:`pysnn.functional.linear.linear_event`) replace two matrix products.
    AUTO_MULTISTEP_EVENT_FRACTION_GRAD: float = 0.2

    # ------------------------------------------------------------------ copies and mode
    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self._copy.clear()
        self._reset_activity()
        return module

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_copy"] = _PresynapticCopy()  # never carried over: rebuilt from the weight
        return state

    def _reset_activity(self) -> None:
        weight = self._parameters.get("weight")
        self._activity = _Activity()
        # With the fused kernel an event step costs about a dense one even at full activity, and
        # it counts the active inputs for free: start event-driven, correct after one interval.
        self._activity.event = weight is not None and weight.is_cpu and kernels_available()

    @property
    def active_propagation(self) -> str:
        """``"dense"`` or ``"event"``: what the next single step will run without autograd (a
        step whose weight needs a gradient runs ``"dense"`` under ``"auto"``)."""
        if self.propagation != "auto":
            return self.propagation
        return "event" if self._activity.event and self._auto_allowed() else "dense"

    def _auto_allowed(self) -> bool:
        """``"auto"`` may go event-driven: a plain weight on the CPU, not compiling, and either
        with the fused kernel of :mod:`pysnn.native` (cheap at any size) or for a matrix of at
        least :attr:`AUTO_MIN_SYNAPSES` synapses."""
        weight = self._parameters.get("weight")
        return (
            weight is not None
            and weight.is_cpu
            and not torch.compiler.is_compiling()
            and (
                kernels_available()
                or self.in_features * self.out_features >= self.AUTO_MIN_SYNAPSES
            )
        )

    def _use_event(self, x: torch.Tensor, kernel_counts: bool = True) -> bool:
        """Pick the path for this step; in ``"auto"`` mode also count the active inputs (here,
        unless the event kernel of an event step counts them: ``kernel_counts``)."""
        if self.propagation != "auto":
            return self.propagation == "event"
        if not self._auto_allowed():
            return False
        activity = self._activity
        activity.steps += 1
        if not activity.event or not kernel_counts:
            with torch.no_grad():
                count = torch.count_nonzero(x.detach())
                active = activity.active
                if active is None or (
                    active.is_inference() and not torch.is_inference_mode_enabled()
                ):  # (torch forbids adding in place to an inference tensor outside the mode)
                    activity.active = count if active is None else active + count
                else:
                    active += count
        if activity.steps >= self.AUTO_INTERVAL:
            total = activity.events
            if activity.active is not None:
                total += int(activity.active)  # one read-back per AUTO_INTERVAL steps
            activity.event = total <= self.AUTO_EVENT_FRACTION * self.in_features * activity.steps
            activity.active, activity.events, activity.steps = None, 0, 0
        return activity.event

    def _bias_in_force(self, params: Dict[str, Any]) -> Optional[torch.Tensor]:
        """The bias a step adds: the plain parameter of ``params`` (``self._parameters``), or
        the computed ``self.bias`` of a pruned or parametrized one (``None``: no bias)."""
        return params.get("bias") if "bias" in params else self.bias

    def _weight_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The presynaptic-major weight ``(in, out)`` for the event paths: the contiguous copy
        of a plain weight when no gradient is needed, else the differentiable ``weight.t()``."""
        plain = self._parameters.get("weight")
        if plain is weight and not (weight.requires_grad and torch.is_grad_enabled()):
            rows = self._copy.rows(weight)
            if rows is not None:
                return rows
        return weight.t()

    def delay_state_values(self) -> int:
        """As :meth:`Connection.delay_state_values`, plus the ``(max_delay + 1) * out`` queued
        inputs of per-synapse delays."""
        values = super().delay_state_values()
        if self.per_synapse_delay:
            values += (self.max_delay + 1) * self.out_shape[0]
        return values

    # ------------------------------------------------------------------ propagation
    def propagate(self, arriving: torch.Tensor) -> torch.Tensor:
        """Synaptic input ``(N, out)`` (mV) of the spikes ``arriving`` ``(N, in)`` (shared delay).

        Dense or event-driven as ``propagation`` decides (see the class docstring), always with
        the effective weight ``self.weight`` (after any pruning mask or parametrisation).
        Per-synapse delays run through the queue in :meth:`forward` instead.
        """
        params = self._parameters
        weight = params.get("weight")
        if weight is None:  # pruned or parametrised: the computed weight
            weight = self.weight
        bias = self._bias_in_force(params)
        grad = torch.is_grad_enabled()
        # "auto" keeps counting but runs dense while the weight is trained: one step's rows are
        # too few for the event-driven weight gradient (forward_multistep's blocks are not)
        trained = grad and weight.requires_grad and self.propagation == "auto"
        if (
            self.propagation != "dense"
            and not (arriving.requires_grad and grad)
            and self._use_event(arriving, kernel_counts=not trained)
            and not trained
        ):
            out, active = linear_event(arriving, self._weight_rows(weight), bias)
            self._activity.events += active
            return out
        return linear_dense(arriving, weight, bias)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """One step: presynaptic spikes ``(B, in)`` → synaptic input arriving now ``(B, out)`` (mV).

        A step that :meth:`event_steps` allows, of a contiguous 2-D CPU input of the weight's
        dtype that needs no gradient, is one call of the event-driven kernel, with nothing else
        checked: the values of the general step bit for bit.
        """
        out = self._event_step(spikes)
        return self._forward(spikes) if out is None else out

    def event_steps(self) -> int:
        """How many of the next single steps may run as one call of the event-driven kernel
        each, with nothing checked but their input (:meth:`forward`; the engine's fused network
        loop, :func:`pysnn.engine.layers.run_layers`, runs that many in one call): ``0`` where
        the general step must run next, else the steps left before an ``"auto"`` re-count
        (``sys.maxsize`` with ``propagation="event"``).

        Non-zero only for a :class:`Linear` whose ``propagate`` and per-step methods are this
        class's, without per-synapse delays (a shared delay runs through its ring as in the
        general step) or registered state, with a plain weight parameter that needs no
        gradient, whose bounds were checked and whose presynaptic-major copy was made at its
        current state (one :class:`~pysnn._guards.Stamp`: object, storage, version and ``.data``
        writes), up to date (a general step made it: every edit, through ``.data`` too, sends the next step
        back to the general one, which re-checks and re-copies), running event-driven, and
        nothing being compiled or recorded for a graph replay. Checked at every call: nothing
        is kept.
        """
        cls = type(self)
        if (
            cls.propagate is not Linear.propagate
            or cls._forward is not Linear._forward
            or cls._push is not Connection._push
            or cls._check_spikes is not Connection._check_spikes
            or self.per_synapse_delay
            or self._state_specs
            or _is_compiling()
            or capturing_graph()
        ):
            return 0
        params = self._parameters
        weight = params.get("weight")
        if not isinstance(weight, TrackedParameter):
            return 0
        bias = self._bias_in_force(params)
        if _grad_enabled() and (weight.requires_grad or (bias is not None and bias.requires_grad)):
            return 0
        copy = self._copy
        stamp = copy.stamp
        # the copy stamped with the weight as it is now (with a version counter), and the bounds
        # checked at that state: the same stamp (pysnn's own edits) or an equal one
        seen = self.__dict__.get("_bounds_seen")
        if (
            copy.copy is None
            or stamp is None
            or stamp.version is None
            or not stamp.holds(weight)
            or (seen is not stamp and (seen is None or not seen.same_state(stamp)))
            or not copy.copy.is_cpu
        ):
            return 0
        propagation = self.propagation
        if propagation == "event":
            return sys.maxsize
        activity = self._activity
        if propagation != "auto" or not activity.event:
            return 0
        return max(self.AUTO_INTERVAL - 1 - activity.steps, 0)

    def _event_step(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The step of :meth:`forward` as one call of the event-driven kernel, or ``None``
        where it does not apply (:meth:`event_steps`; the input a contiguous ``(B, in)`` CPU
        tensor of the weight's dtype, float32 or float64, needing no gradient)."""
        if (
            type(x) is not torch.Tensor
            or x.dim() != 2
            or not x.is_cpu
            or not x.is_contiguous()
            or (x.requires_grad and _grad_enabled())
            or (x.dtype is not torch.float32 and x.dtype is not torch.float64)
            or not x.numel()
            or not self.event_steps()
        ):
            return None
        copy = self._copy.copy
        if x.dtype is not copy.dtype or copy.shape[0] != x.shape[1]:
            return None
        if _checks._VALUE_CHECKS and _checks.nonfinite(x):
            raise ValueError(_checks.nonfinite_message("spikes", x, type(self).__name__))
        if self.max_delay:  # (a shared delay: the general step's push, then its propagate)
            self._push(x)
            arriving = self._buffers["arriving"]
            result = linear_event_step(arriving, copy) if arriving.is_contiguous() else None
            if result is None:
                return self.propagate(arriving)
        else:
            result = linear_event_step(x, copy)
            if result is None:
                return None
            self._buffers["arriving"] = x
        out, active = result
        if self.propagation == "auto":
            activity = self._activity
            activity.steps += 1
            activity.events += active
        params = self._parameters
        bias = self._bias_in_force(params)
        return out if bias is None else out + bias

    def _forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """The general step (see :meth:`forward`)."""
        self._check_bounds()
        self._check_spikes(spikes)
        self._prepare_state(spikes)
        self._push(spikes)
        if not self.per_synapse_delay:
            return self.propagate(self._buffers["arriving"])
        queue = self.queue
        if queue is None or queue.shape[0] != spikes.shape[0]:
            warn_if_dropped("Linear (per-synapse delay queue)", queue, spikes.shape[0])
            queue = self._zeros(
                "delay queue", (spikes.shape[0], self.max_delay + 1, self.out_features), spikes
            )
        weight = self.weight
        # Scattering only the emitted spikes is never more work than scattering all inputs, but
        # an input that needs a gradient needs it at its zero entries too: scatter them all.
        event = (
            self.propagation == "event" or (self.propagation == "auto" and self._auto_allowed())
        ) and not (spikes.requires_grad and torch.is_grad_enabled())
        out, self._buffers["queue"] = delay_queue_step(
            queue,
            spikes,
            self._weight_rows(weight),
            self.delay_steps.t(),
            event_driven=event,
        )
        return out if self.bias is None else out + self.bias

    #: The per-step methods :meth:`forward_multistep` and the fused paths reproduce: a subclass
    #: overriding one of them is stepped through (see :func:`pysnn.stepping.block_form_reason`).
    BLOCK_REPRODUCES = ("forward", "_forward", "propagate")

    def forward_multistep(self, spikes: torch.Tensor) -> torch.Tensor:
        r"""Run ``T`` steps at once: ``spikes`` ``(T, B, in)`` → synaptic input ``(T, B, out)``.

        As :meth:`Connection.forward_multistep`: **one** matrix product ``(T * B, in) @
        weight.t()`` for all steps (or, when ``propagation`` is ``"event"``, or ``"auto"`` on
        CPU with at most :attr:`AUTO_MULTISTEP_EVENT_FRACTION` of the inputs active, or
        :attr:`AUTO_MULTISTEP_EVENT_FRACTION_GRAD` when the weight is trained, one gather over
        the active inputs, whose weight gradient is event-driven too). ``"auto"`` counts the active inputs once per call (one
        read-back per block, not per step). Per-synapse delays and forward hooks (a
        :class:`~pysnn.monitor.Monitor`, a pruning mask, the legacy weight norm) step through.
        """
        self._check_bounds()
        self._check_block(spikes)
        if self.per_synapse_delay or block_form_reason(self, Linear, self.BLOCK_REPRODUCES):
            return step_through(self, spikes)  # hooks and overridden steps see every step
        n_steps, n_batch = spikes.shape[0], spikes.shape[1]
        flat = self._arrive_block(spikes).reshape(n_steps * n_batch, self.in_features)
        weight = self.weight
        if flat.requires_grad and torch.is_grad_enabled():
            event = False  # the input's gradient is needed at zero inputs too
        elif self.propagation == "event":
            event = True
        elif self.propagation == "auto" and self._auto_allowed():
            active = int(torch.count_nonzero(flat.detach()))  # one read-back per block
            training = weight.requires_grad and torch.is_grad_enabled()
            fraction = (
                self.AUTO_MULTISTEP_EVENT_FRACTION_GRAD
                if training
                else self.AUTO_MULTISTEP_EVENT_FRACTION
            )
            event = active <= fraction * flat.numel()
        else:
            event = False
        if event:
            # an up-to-date presynaptic-major copy is read fastest; without one, the block
            # kernel reads the weight itself rather than building the copy (one read of the
            # weight instead of a read, a write and its memory)
            blocked = None
            if self._copy.current(weight) is None:
                blocked = linear_event_block(flat, weight, self.bias)
            if blocked is None:
                blocked = linear_event(flat, self._weight_rows(weight), self.bias)
            out = blocked[0]
        else:
            out = linear_dense(flat, weight, self.bias)
        return out.view(n_steps, n_batch, self.out_features)

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        super().reset_state()
        self.queue = None

    def detach_state(self) -> None:
        super().detach_state()
        if self.queue is not None:
            self.queue = self.queue.detach()

    def extra_repr(self) -> str:
        delay = "per-synapse" if self.per_synapse_delay else f"{self._shared_delay * self.dt} ms"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, dt={self.dt}, delay={delay}, "
            f"wmin={self.wmin}, wmax={self.wmax}, propagation={self.propagation!r}"
        )


class Conv2d(Connection):
    """2-D convolution of spikes, exactly ``torch.nn.functional.conv2d``, with a shared delay.

    ``forward(spikes)``: ``(B, C_in, H, W)`` → ``(B, C_out, H_out, W_out)`` synaptic input arriving
    this step, ``F.conv2d`` of the spikes emitted ``delay`` ms ago. :meth:`forward_multistep`
    convolves all ``T`` steps in one call.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``torch.nn.Conv2d`` (``padding_mode`` zeros).
        dt: time step (ms).
        delay: one delay for all synapses (ms), >= 0.
        wmin, wmax, init, init_kwargs: as :class:`Linear`.

    ``weight`` is a plain contiguous parameter as in ``torch.nn.Conv2d``: pruning and
    parametrisations work the same way as for :class:`Linear`.

    Attributes:
        weight: ``(C_out, C_in / groups, kH, kW)``; ``bias``: ``(C_out,)`` or ``None``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Tuple[int, int]],
        stride: Union[int, Tuple[int, int]] = 1,
        padding: Union[int, Tuple[int, int], str] = 0,
        dilation: Union[int, Tuple[int, int]] = 1,
        groups: int = 1,
        bias: bool = False,
        dt: float = 1.0,
        delay: DelayLike = 0.0,
        wmin: float = -math.inf,
        wmax: float = math.inf,
        init: str = "kaiming_uniform",
        init_kwargs: Optional[Dict[str, Any]] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        # Borrow torch's own argument handling so shapes and errors match nn.Conv2d exactly.
        reference = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False
        )
        super().__init__(
            (in_channels, "H", "W"),
            (out_channels, "H_out", "W_out"),
            dt,
            delay,
            wmin=wmin,
            wmax=wmax,
            init=init,
            init_kwargs=init_kwargs,
            device=device,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = reference.kernel_size, reference.stride
        self.padding, self.dilation, self.groups = reference.padding, reference.dilation, groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(reference.weight.shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def propagate(self, arriving: torch.Tensor) -> torch.Tensor:
        """``F.conv2d`` of the spikes ``arriving`` ``(N, C_in, H, W)`` → ``(N, C_out, H_out,
        W_out)`` synaptic input (mV), with the effective ``weight``."""
        return F.conv2d(
            arriving, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}, dt={self.dt}, "
            f"delay={self._shared_delay * self.dt} ms, wmin={self.wmin}, wmax={self.wmax}"
        )
