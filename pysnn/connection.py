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

from pysnn._checks import check_choice, check_input, check_positive_scalar
from pysnn.functional.delay import delayed, push_history, synapse_index

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
PROPAGATIONS = ("dense", "event")
DelayLike = Union[int, float, torch.Tensor]


def _after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the loaded delays may change the history length."""
    module._delays_changed()


class Connection(nn.Module):
    """Base class: weight bounds and initialisation, delays, state, normalisation.

    Subclasses create ``weight`` (and ``bias``) then call :meth:`_setup`, and implement
    ``_propagate(arriving)`` plus ``_post_dims`` (weight dims summed over per postsynaptic unit).
    """

    _post_dims: Tuple[int, ...] = (1,)

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
            self.history = x.new_zeros((x.shape[0], self.max_delay + 1, *x.shape[1:]))
        self.history = push_history(self.history, x)
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
        propagation: ``"dense"`` (a matrix product every step) or ``"event"`` (gather only the
            weights of inputs that spiked: cheaper when activity is sparse; needs a data-dependent
            ``nonzero``, a host sync on GPU). Both give the same result.

    With per-synapse delays each presynaptic spike is scattered, at emission, into a queue of
    future input (cost per step proportional to the spikes emitted times ``out_features``); the
    weight applied is the one at emission. With a shared delay the weight at arrival is applied.

    Attributes:
        weight: ``(out_features, in_features)``.
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
        propagation: str = "dense",
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
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_buffer("queue", None, persistent=False)
        self._setup(dt, delay, wmin, wmax, init, init_kwargs, (out_features, in_features))

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
        check_input("spikes", spikes, (self.in_features,), self.weight, "Linear")
        if self.per_synapse_delay:
            return self._forward_per_synapse(spikes)
        self.arriving = arriving = self._arrive(spikes)
        if self.propagation == "event":
            batch, pre = arriving.nonzero(as_tuple=True)
            rows = self.weight.t()[pre] * arriving[batch, pre].unsqueeze(1)
            out = arriving.new_zeros(arriving.shape[0], self.out_features).index_add(0, batch, rows)
            return out if self.bias is None else out + self.bias
        return F.linear(arriving, self.weight, self.bias)

    def _forward_per_synapse(self, spikes: torch.Tensor) -> torch.Tensor:
        n_batch, length, n_out = spikes.shape[0], self.max_delay + 1, self.out_features
        if self.queue is None or self.queue.shape[0] != n_batch:
            self.queue = spikes.new_zeros(n_batch, length, n_out)
            self.history = spikes.new_zeros(n_batch, length, self.in_features)
        self.history = push_history(self.history, spikes)
        if self.propagation == "event":
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
        self.queue = torch.cat((queue[:, 1:], torch.zeros_like(queue[:, :1])), dim=1)
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
        if not isinstance(spikes, torch.Tensor) or spikes.dim() != 4:
            raise ValueError(
                f"spikes must have shape (B, {self.in_channels}, H, W) for Conv2d, got "
                f"{tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes)}"
            )
        check_input("spikes", spikes, (self.in_channels, *spikes.shape[2:]), self.weight, "Conv2d")
        self.arriving = arriving = self._arrive(spikes)
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
