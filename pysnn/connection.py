r"""Connection modules: weights, bounds and lossless synaptic delays.

A connection maps presynaptic spikes of one step to the synaptic input arriving at the
postsynaptic neurons in that step. With a delay of :math:`d_{ij}` steps
(``round(delay / dt)``, ``delay`` in ms):

.. math:: I_i(t) = \sum_j w_{ij}\, s_j(t - d_{ij}) \; (+\, b_i)

Every spike in flight is delivered at its own arrival step (see :mod:`pysnn.functional.delay`).
``delay=0`` delivers in the same step.

What a learning rule reads after ``forward`` (see :meth:`Connection.arriving_spikes`): the
presynaptic spikes *arriving at each synapse* this step, and, through :meth:`Connection.delayed`,
any presynaptic quantity (a trace) delayed the same way.

State (spike history, spikes in flight) lives in non-persistent buffers created for the first batch
seen; :meth:`Connection.reset_state` clears spikes in flight. ``state_dict()`` holds ``weight``,
``bias`` and ``delay_steps``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from pysnn import native
from pysnn._checks import check_choice, check_input, check_positive_scalar
from pysnn.functional.delay import delayed, push_history, synapse_index
from pysnn.multistep import has_forward_hooks, step_through

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
DelayLike = Union[int, float, torch.Tensor]


def _after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the loaded delays may change the history length."""
    module._delays_changed()
    module._fix_layout()


class _Activity:
    """Input activity counted by ``propagation="auto"`` (a plain object: cheap to update)."""

    __slots__ = ("steps", "events", "active", "event")

    def __init__(self) -> None:
        self.steps = 0  # steps counted in this interval
        self.events = 0  # active inputs of event steps (host-known: no read-back)
        self.active: Optional[torch.Tensor] = None  # active inputs of dense steps, on the device
        self.event = False  # current choice


class Connection(nn.Module):
    """Base class: weight bounds and initialisation, delays, state, normalisation.

    Subclasses create ``weight`` (and ``bias``) then call :meth:`_setup`, and implement
    ``_propagate(arriving)`` plus ``_post_dims`` (weight dims summed over per postsynaptic unit).
    """

    _post_dims: Tuple[int, ...] = (1,)

    def _fix_layout(self) -> None:
        """Restore the preferred memory layout of ``weight`` (no-op here; see :class:`Linear`)."""

    def _setup(
        self,
        dt: float,
        delay: DelayLike,
        wmin: float,
        wmax: float,
        init: str,
        init_kwargs: Optional[Dict[str, Any]],
        per_synapse_shape: Optional[Tuple[int, ...]],
    ) -> None:
        self.dt = check_positive_scalar("dt", dt)
        self.wmin, self.wmax = float(wmin), float(wmax)
        if math.isnan(self.wmin) or math.isnan(self.wmax) or self.wmin > self.wmax:
            raise ValueError(f"need wmin <= wmax, got wmin={wmin}, wmax={wmax}")
        self.init = check_choice("init", init, INITS)
        self.init_kwargs = dict(init_kwargs or {})
        self.register_buffer("delay_steps", self._delay_steps(delay, per_synapse_shape))
        self.register_buffer("history", None, persistent=False)
        self.register_buffer("arriving", None, persistent=False)
        self._delays_changed()
        self.register_load_state_dict_post_hook(_after_load)
        self.reset_parameters()

    # ------------------------------------------------------------------ delays
    def _delay_steps(
        self, delay: DelayLike, per_synapse_shape: Optional[Tuple[int, ...]]
    ) -> torch.Tensor:
        if isinstance(delay, bool) or not isinstance(delay, (int, float, torch.Tensor)):
            raise TypeError(f"delay must be a number or a tensor (ms), got {type(delay).__name__}")
        d = torch.as_tensor(delay, dtype=torch.float64).detach().cpu()
        if d.dim() != 0 and (per_synapse_shape is None or tuple(d.shape) != per_synapse_shape):
            allowed = (
                "a scalar" if per_synapse_shape is None else f"a scalar or {per_synapse_shape}"
            )
            raise ValueError(f"delay must be {allowed} (ms), got shape {tuple(d.shape)}")
        if torch.isnan(d).any() or torch.isinf(d).any():
            raise ValueError("delay must be finite (ms), got NaN or inf")
        if (d < 0).any():
            raise ValueError(f"delay must be >= 0 ms, got a minimum of {d.min().item()}")
        return torch.round(d / self.dt).to(torch.int64).to(self.weight.device)

    def _delays_changed(self) -> None:
        steps = self.delay_steps
        self.per_synapse_delay = steps.dim() > 0
        self.max_delay = int(steps.max()) if steps.numel() else 0
        self._shared_delay = None if self.per_synapse_delay else int(steps)
        if self.per_synapse_delay:
            self.register_buffer("_index", synapse_index(steps), persistent=False)
        self.history = None
        self.arriving = None

    @property
    def delay(self) -> torch.Tensor:
        """Delays in ms (rounded to steps): a 0-d or ``(out, in)`` float tensor."""
        return self.delay_steps.to(self.weight.dtype) * self.dt

    # ------------------------------------------------------------------ weights
    def reset_parameters(self) -> None:
        """(Re-)initialise ``weight`` (and ``bias``) with ``init``/``init_kwargs``, then clamp.

        ``"kaiming_uniform"`` (default) matches ``torch.nn.Linear``/``Conv2d``. ``"uniform"``,
        ``"normal"``, ``"constant"`` and the xavier/kaiming variants call the ``torch.nn.init``
        function of that name with ``init_kwargs`` (e.g. ``{"a": 0.0, "b": 0.3}`` for uniform,
        ``{"val": 0.5}`` for constant).
        """
        kwargs = dict(self.init_kwargs)
        if self.init == "kaiming_uniform":
            kwargs.setdefault("a", math.sqrt(5))
        if self.init == "constant" and "val" not in kwargs:
            raise ValueError("init='constant' needs init_kwargs={'val': value}")
        try:
            getattr(nn.init, self.init + "_")(self.weight, **kwargs)
        except TypeError as err:
            raise ValueError(f"init_kwargs {kwargs} do not fit init={self.init!r}: {err}") from None
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.clamp_()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp ``weight`` in place to ``[wmin, wmax]``."""
        if math.isfinite(self.wmin) or math.isfinite(self.wmax):
            self.weight.clamp_(self.wmin, self.wmax)

    @torch.no_grad()
    def normalize(self, total: float) -> None:
        """Scale weights in place so the incoming weights of each postsynaptic unit sum to ``total``.

        For ``Linear`` that is each row of ``weight`` ``(out, in)``; for ``Conv2d`` each output
        channel's kernel. Units whose weights sum to 0 are left unchanged (no division by zero).
        As in Diehl & Cook (2015), no clamping follows.
        """
        sums = self.weight.sum(dim=self._post_dims, keepdim=True)
        self.weight.mul_(torch.where(sums != 0, total / sums, torch.ones_like(sums)))

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        """Clear the spike history and every spike in flight."""
        self.history = None
        self.arriving = None

    def detach_state(self) -> None:
        """Cut the autograd graph at the current state (truncated BPTT)."""
        for name in ("history", "arriving"):
            if self._buffers.get(name) is not None:
                self._buffers[name] = self._buffers[name].detach()

    def _arrive(self, x: torch.Tensor) -> torch.Tensor:
        """Push ``x`` into the history and return what arrives with the shared delay."""
        if self.max_delay == 0:
            return x
        if (
            self.history is None
            or self.history.shape[0] != x.shape[0]
            or (self.history.shape[2:] != x.shape[1:])
        ):
            self._buffers["history"] = x.new_zeros((x.shape[0], self.max_delay + 1, *x.shape[1:]))
        self._buffers["history"] = push_history(self.history, x)
        return delayed(self.history, self._shared_delay)

    def arriving_spikes(self) -> torch.Tensor:
        """Presynaptic spikes arriving at the synapses in the current step.

        Returns ``(B, *in_shape)`` when all synapses share one delay (identical for every
        postsynaptic unit), or ``(B, out, in)`` for per-synapse delays. Valid after ``forward``.
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
              (cost ~ ``active * out``). Not for an input that requires a gradient (e.g. spikes
              from a surrogate spike function): its gradient is needed at the zero entries too,
              so such a step runs ``"dense"`` whatever the setting. On the CPU without autograd
              this is one fused loop of :mod:`pysnn.native`, otherwise ``F.embedding_bag`` over
              the presynaptic rows, whose data-dependent ``torch.nonzero`` is a host sync on GPU
              (opt-in there).
            - ``"auto"`` (default): ``"event"`` when it pays off, else ``"dense"``. It is
              ``"dense"`` on non-CPU devices (no host sync ever), under ``torch.compile``, and,
              when the fused kernels are unavailable, for connections with fewer than
              :attr:`AUTO_MIN_SYNAPSES` synapses (a small matrix product is then cheaper than the
              extra ops of ``embedding_bag``). Otherwise the number of active inputs is
              counted every step (on the device, no sync, or for free by the fused event
              kernel) and read back every :attr:`AUTO_INTERVAL` steps; the next interval runs
              ``"event"`` while the mean number of active inputs per step (summed over the
              batch) is at most :attr:`AUTO_EVENT_FRACTION` ``* in_features``. The first interval
              runs ``"event"`` where the fused kernel is available, else ``"dense"``. The
              current choice is :attr:`active_propagation`.

    With per-synapse delays each presynaptic spike is scattered, at emission, into a queue of
    future input (cost per step proportional to the spikes emitted times ``out_features``); the
    weight applied is the one at emission. With a shared delay the weight at arrival is applied.

    Memory layout: ``weight`` has the shape of ``torch.nn.Linear``'s, ``(out, in)``, but is stored
    *column-major* (it is the transpose of a contiguous ``(in, out)`` tensor), so the weights of one
    presynaptic neuron, ``weight[:, j]``, are contiguous: the event path reads whole rows of
    ``weight.t()``. ``.to()``, ``.double()``, ``state_dict``/``load_state_dict`` keep (or restore)
    that layout; a dense matrix product is as fast either way.

    Memory per synapse: one weight (4 bytes in float32), plus one int64 delay (8 bytes) and one
    int64 gather index (8 bytes) with per-synapse delays. State per batch sample:
    ``(max_delay + 1) * in`` history values (shared or per-synapse delays) and
    ``(max_delay + 1) * out`` queued inputs (per-synapse delays), nothing with ``delay=0``.

    Multi-step: :meth:`forward_multistep` runs ``T`` steps in one call (one matrix product).

    Attributes:
        weight: ``(out_features, in_features)``, column-major (see above).
        bias: ``(out_features,)`` or ``None``.
        delay_steps: int64, 0-d or ``(out, in)``.
        history: ``(B, max_delay + 1, in)`` presynaptic spikes of the last steps (index 0: now).
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
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        self.propagation = check_choice("propagation", propagation, PROPAGATIONS)
        factory = {"device": device, "dtype": dtype}
        # (out, in) view of a contiguous (in, out) tensor: presynaptic rows are contiguous.
        self.weight = nn.Parameter(torch.empty(in_features, out_features, **factory).t())
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_buffer("queue", None, persistent=False)
        self._reset_activity()
        self._setup(dt, delay, wmin, wmax, init, init_kwargs, (out_features, in_features))

    #: ``"auto"``: connections with fewer synapses always run dense.
    AUTO_MIN_SYNAPSES: int = 1 << 18
    #: ``"auto"``: steps between two read-backs of the activity count.
    AUTO_INTERVAL: int = 64
    #: ``"auto"``: run event-driven while active inputs per step <= this fraction of ``in``.
    AUTO_EVENT_FRACTION: float = 0.25
    #: multi-step ``"auto"``: event-driven while active inputs <= this fraction of ``T * B * in``
    #: (a large matrix product runs near peak FLOP/s, a gather at memory bandwidth).
    AUTO_MULTISTEP_EVENT_FRACTION: float = 0.08

    # ------------------------------------------------------------------ layout and mode
    def _fix_layout(self) -> None:
        """Make ``weight.t()`` contiguous again (after ``load_state_dict(assign=True)`` etc.)."""
        weight = self._parameters.get("weight")
        if weight is not None and weight.dim() == 2 and not weight.t().is_contiguous():
            with torch.no_grad():
                weight.data = weight.data.t().contiguous().t()

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self._fix_layout()
        self._reset_activity()
        return module

    def _reset_activity(self) -> None:
        weight = self._parameters.get("weight")
        self._activity = _Activity()
        # With the fused kernel an event step costs about a dense one even at full activity, and
        # it counts the active inputs for free: start event-driven, correct after one interval.
        self._activity.event = weight is not None and weight.is_cpu and native.available()

    @property
    def active_propagation(self) -> str:
        """``"dense"`` or ``"event"``: what the next single step will run."""
        if self.propagation != "auto":
            return self.propagation
        return "event" if self._activity.event else "dense"

    def _auto_allowed(self) -> bool:
        """``"auto"`` may go event-driven: on the CPU, not compiling, and either with the fused
        kernel of :mod:`pysnn.native` (cheap at any size) or for a matrix of at least
        :attr:`AUTO_MIN_SYNAPSES` synapses."""
        return (
            self._parameters["weight"].is_cpu
            and not torch.compiler.is_compiling()
            and (
                native.available() or self.in_features * self.out_features >= self.AUTO_MIN_SYNAPSES
            )
        )

    def _use_event(self, x: torch.Tensor) -> bool:
        """Pick the path for this step; in ``"auto"`` mode also count the active inputs."""
        if self.propagation != "auto":
            return self.propagation == "event"
        if not self._auto_allowed():
            return False
        activity = self._activity
        activity.steps += 1
        if not activity.event:
            with torch.no_grad():
                count = torch.count_nonzero(x.detach())
                if activity.active is None:
                    activity.active = count
                else:
                    activity.active += count
        if activity.steps >= self.AUTO_INTERVAL:
            total = activity.events
            if activity.active is not None:
                total += int(activity.active)  # one read-back per AUTO_INTERVAL steps
            activity.event = total <= self.AUTO_EVENT_FRACTION * self.in_features * activity.steps
            activity.active, activity.events, activity.steps = None, 0, 0
        return activity.event

    def _rows(self) -> torch.Tensor:
        """``weight.t()``, the ``(in, out)`` presynaptic rows, as a view kept between steps (for
        the fused kernel only: the view carries no autograd history)."""
        weight = self._parameters["weight"]
        cached = self.__dict__.get("_rows_cache")
        if cached is None or cached[0] is not weight or cached[1] != weight.data_ptr():
            cached = (weight, weight.data_ptr(), weight.detach().t())
            self.__dict__["_rows_cache"] = cached
        return cached[2]

    def _event_linear(self, x: torch.Tensor, count: bool = True) -> torch.Tensor:
        """``x @ weight.t()`` from the non-zero entries of ``x`` ``(N, in)`` only → ``(N, out)``.

        On the CPU without autograd, one fused loop (:func:`pysnn.native.linear_event`) adds the
        contiguous presynaptic rows of ``weight.t()`` of the non-zero inputs. Otherwise one
        ``F.embedding_bag`` (mode ``"sum"``, the inputs' values as per-sample weights) over those
        rows, differentiable in both arguments.
        """
        x_c, rows = x.contiguous(), self._rows()
        weight = self._parameters["weight"]
        if native.usable(x_c, rows) and not (weight.requires_grad and torch.is_grad_enabled()):
            out, active = native._linear_event(x_c, rows)
            if count:
                self._activity.events += active
            return out
        rows = self.weight.t()
        n_rows = x.shape[0]
        flat = x.reshape(-1).nonzero().view(-1)  # sorted: row-major (sample, pre)
        if count:
            self._activity.events += flat.shape[0]  # host-known size: no extra read-back
        if n_rows == 1:
            pre, offsets = flat, flat.new_zeros(1)
        else:
            pre = flat.remainder(self.in_features)
            starts = torch.arange(n_rows, device=x.device) * self.in_features
            offsets = torch.searchsorted(flat, starts)
        values = x.reshape(-1).index_select(0, flat)
        return F.embedding_bag(pre, rows, offsets, mode="sum", per_sample_weights=values)

    def reset_state(self) -> None:
        super().reset_state()
        self.queue = None

    def detach_state(self) -> None:
        super().detach_state()
        if self.queue is not None:
            self.queue = self.queue.detach()

    def _delays_changed(self) -> None:
        super()._delays_changed()
        self.queue = None

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """One step: presynaptic spikes ``(B, in)`` → synaptic input arriving now ``(B, out)`` (mV)."""
        weight, bias = self._parameters["weight"], self._parameters.get("bias")
        check_input("spikes", spikes, (self.in_features,), weight, "Linear")
        if self.per_synapse_delay:
            return self._forward_per_synapse(spikes)
        self._buffers["arriving"] = arriving = self._arrive(spikes)
        if (
            self.propagation != "dense"
            and not (arriving.requires_grad and torch.is_grad_enabled())
            and self._use_event(arriving)
        ):
            out = self._event_linear(arriving)
            return out if bias is None else out + bias
        return F.linear(arriving, weight, bias)

    def forward_multistep(self, spikes: torch.Tensor) -> torch.Tensor:
        r"""Run ``T`` steps at once: ``spikes`` ``(T, B, in)`` → synaptic input ``(T, B, out)``.

        Identical to calling :meth:`forward` on ``spikes[0], ..., spikes[T-1]`` in turn (up to
        float summation order): with a shared delay of :math:`d` steps the arriving input is the
        spike sequence shifted by :math:`d` in time (the first :math:`d` steps come from the
        history), then **one** matrix product ``(T * B, in) @ weight.t()`` (or, when
        ``propagation`` is ``"event"``, or ``"auto"`` on CPU with at most
        :attr:`AUTO_MULTISTEP_EVENT_FRACTION` of the inputs active, one gather over the active
        inputs). The history and :attr:`arriving` are left as after the last step, so single
        steps and blocks can be mixed. ``"auto"`` counts the active inputs once per call (one
        read-back per block, not per step).

        With per-synapse delays, or when forward hooks are registered (e.g. a
        :class:`~pysnn.monitor.Monitor`, which must see every step), this falls back to calling
        the module once per step (same results, no speed-up).
        """
        if not isinstance(spikes, torch.Tensor) or spikes.dim() != 3:
            raise ValueError(
                f"spikes must have shape (T, B, {self.in_features}) for Linear.forward_multistep, "
                f"got {tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes)}"
            )
        n_steps, n_batch = spikes.shape[0], spikes.shape[1]
        check_input(
            "spikes",
            spikes.reshape(n_steps * n_batch, -1),
            (self.in_features,),
            self.weight,
            "Linear",
        )
        if self.per_synapse_delay or has_forward_hooks(self):  # hooks must see every step
            return step_through(self, spikes)
        arriving = self._arrive_block(spikes)
        flat = arriving.reshape(n_steps * n_batch, self.in_features)
        if flat.requires_grad and torch.is_grad_enabled():
            event = False  # the input's gradient is needed at zero inputs too
        elif self.propagation == "event":
            event = True
        elif self.propagation == "auto" and self._auto_allowed():
            active = int(torch.count_nonzero(flat.detach()))  # one read-back per block
            event = active <= self.AUTO_MULTISTEP_EVENT_FRACTION * flat.numel()
        else:
            event = False
        if event:
            out = self._event_linear(flat, count=False)
            out = out if self.bias is None else out + self.bias
        else:
            out = F.linear(flat, self.weight, self.bias)
        return out.view(n_steps, n_batch, self.out_features)

    def _arrive_block(self, spikes: torch.Tensor) -> torch.Tensor:
        """What arrives in each of ``T`` steps, ``(T, B, in)``; updates ``history``/``arriving``."""
        if self.max_delay == 0:
            self._buffers["arriving"] = spikes[-1]
            return spikes
        n_steps, n_batch = spikes.shape[0], spikes.shape[1]
        length, delay = self.max_delay + 1, self._shared_delay
        history = self.history
        if history is None or history.shape[0] != n_batch or history.shape[2:] != spikes.shape[2:]:
            history = spikes.new_zeros((n_batch, length, *spikes.shape[2:]))
        # Time-major sequence: the L - 1 steps before the block (oldest first), then the block.
        past = history[:, : length - 1].flip(1).transpose(0, 1)  # (L - 1, B, in)
        sequence = torch.cat((past, spikes), dim=0)  # index k: step k - (L - 1)
        start = length - 1 - delay
        arriving = sequence[start : start + n_steps]
        self._buffers["history"] = (
            sequence[-length:].flip(0).transpose(0, 1).contiguous()
        )  # index 0 = now
        self._buffers["arriving"] = arriving[-1]
        return arriving

    def _forward_per_synapse(self, spikes: torch.Tensor) -> torch.Tensor:
        n_batch, length, n_out = spikes.shape[0], self.max_delay + 1, self.out_features
        if self.queue is None or self.queue.shape[0] != n_batch:
            self._buffers["queue"] = spikes.new_zeros(n_batch, length, n_out)
            self._buffers["history"] = spikes.new_zeros(n_batch, length, self.in_features)
        self._buffers["history"] = push_history(self.history, spikes)
        if self.propagation == "event" or (self.propagation == "auto" and self._auto_allowed()):
            # Scattering only the emitted spikes is never more work than scattering all inputs.
            batch, pre = spikes.nonzero(as_tuple=True)
        else:
            grid = torch.arange(n_batch * self.in_features, device=spikes.device)
            batch, pre = grid // self.in_features, grid % self.in_features
        values = self.weight.t()[pre] * spikes[batch, pre].unsqueeze(1)  # (events, out)
        slots = self.delay_steps.t()[pre]  # (events, out)
        post = torch.arange(n_out, device=spikes.device)
        flat = (batch.unsqueeze(1) * length + slots) * n_out + post
        queue = self.queue.reshape(-1).index_add(0, flat.reshape(-1), values.reshape(-1))
        queue = queue.view(n_batch, length, n_out)
        out = queue[:, 0]
        self._buffers["queue"] = torch.cat((queue[:, 1:], torch.zeros_like(queue[:, :1])), dim=1)
        return out if self.bias is None else out + self.bias

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
    this step, ``F.conv2d`` of the spikes emitted ``delay`` ms ago.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``torch.nn.Conv2d`` (``padding_mode`` zeros).
        dt: time step (ms).
        delay: one delay for all synapses (ms), >= 0.
        wmin, wmax, init, init_kwargs: as :class:`Linear`.

    Attributes:
        weight: ``(C_out, C_in / groups, kH, kW)``; ``bias``: ``(C_out,)`` or ``None``.
    """

    _post_dims = (1, 2, 3)

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
        super().__init__()
        # Borrow torch's own argument handling so shapes and errors match nn.Conv2d exactly.
        reference = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = reference.kernel_size, reference.stride
        self.padding, self.dilation, self.groups = reference.padding, reference.dilation, groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(reference.weight.shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._setup(dt, delay, wmin, wmax, init, init_kwargs, None)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """One step: spikes ``(B, C_in, H, W)`` → synaptic input ``(B, C_out, H_out, W_out)`` (mV)."""
        if not isinstance(spikes, torch.Tensor) or spikes.dim() != 4:
            raise ValueError(
                f"spikes must have shape (B, {self.in_channels}, H, W) for Conv2d, got "
                f"{tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes)}"
            )
        check_input("spikes", spikes, (self.in_channels, *spikes.shape[2:]), self.weight, "Conv2d")
        self._buffers["arriving"] = arriving = self._arrive(spikes)
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
