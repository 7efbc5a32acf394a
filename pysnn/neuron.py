r"""Neuron modules: stateful ``nn.Module`` wrappers around the pure steps in :mod:`pysnn.functional`.

Every neuron takes one input per time step, ``forward(x)`` with ``x`` of shape ``(B, *shape)``, and
returns its spikes ``(B, *shape)`` as 0/1 values in ``x``'s dtype, so it can sit in an
``nn.Sequential`` next to any torch module. Times are in ms, voltages in mV.

State (``v``, ``spikes``, ``trace``, ``refrac_count``, ``theta``, ...) lives in non-persistent buffers:
created lazily for the first batch size seen, re-created when the batch size changes, moved by
``.to()``/``.double()``, restored by :meth:`Neuron.reset_state`, and **not** part of ``state_dict()``
(which holds the parameters only, so a ``state_dict`` always loads into a freshly built network).

Speed: on the CPU, when no gradient is needed, LIF and IF neurons (and every trace) run their step
as one fused C loop (:mod:`pysnn.native`) with results identical to the torch operations; the state
buffers ``v``, ``refrac_count`` and ``trace`` are then updated in place (``clone()`` one to keep
it), and the returned spikes are a new tensor every step. :meth:`Neuron.forward_multistep` runs
``T`` steps in one call.

Memory per neuron and batch sample: ``LIFNeuron``/``IFNeuron`` 20 bytes in float32 (``v``,
``spikes``, ``trace``: one float each; ``refrac_count``: int64), ``AdaptiveLIFNeuron`` 4 more for a
per-sample ``theta`` (a shared ``theta`` is 4 bytes per neuron), ``Input`` 8, ``IzhikevichNeuron``
16. Parameters add one value per neuron only where given per neuron.

Traces, per step after the spikes (see :mod:`pysnn.functional.trace`):
``trace <- trace * exp(-dt/tau_trace)``, then ``trace += trace_scale`` on a spike (``"additive"``)
or ``trace = trace_scale`` (``"reset"``).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from pysnn import native
from pysnn._checks import (
    ParamLike,
    as_param,
    check_choice,
    check_input,
    check_positive_scalar,
)
from pysnn.functional.izhikevich import IzhikevichParameters, izhikevich_step
from pysnn.functional.lif import LIFParameters, adaptive_theta_step, lif_step
from pysnn.functional.spike import SurrogateFn
from pysnn.functional.trace import TRACE_MODES, trace_step
from pysnn.multistep import has_forward_hooks, step_through

ShapeLike = Union[int, Sequence[int]]

__all__ = ["Neuron", "Input", "IFNeuron", "LIFNeuron", "AdaptiveLIFNeuron", "IzhikevichNeuron"]


def _as_shape(shape: ShapeLike) -> Tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise ValueError(f"shape must be non-empty with positive sizes, got {shape}")
    return shape


def _after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: refresh quantities derived from the loaded parameters."""
    module.update_derived()


class Neuron(nn.Module):
    """Base class: shape, time step, trace, and lazily created state buffers.

    Subclasses list their state in ``_state_names`` and define ``_initial_state`` and ``_step``.

    Args:
        shape: neuron shape without the batch dimension, e.g. ``100`` or ``(1, 28, 28)``.
        dt: simulation time step (ms), > 0.
        tau_trace: trace time constant (ms), > 0, scalar or per-neuron tensor.
        trace_scale: trace increment (``"additive"``) or reset value (``"reset"``).
        trace_mode: ``"additive"`` or ``"reset"``.
    """

    _state_names: Tuple[str, ...] = ("spikes", "trace")

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
    ) -> None:
        super().__init__()
        self.shape = _as_shape(shape)
        self.dt = check_positive_scalar("dt", dt)
        self.trace_mode = check_choice("trace_mode", trace_mode, TRACE_MODES)
        self._additive = trace_mode == "additive"
        self._param("tau_trace", tau_trace, positive=True)
        self._param("trace_scale", trace_scale)
        Neuron.update_derived(self)
        for name in self._state_names:
            self.register_buffer(name, None, persistent=False)
        self.register_load_state_dict_post_hook(_after_load)
        self._native_cache: Dict[str, tuple] = {}  # parameter tables of pysnn.native

    # ----------------------------------------------------------------- parameters
    def _param(self, name: str, value: ParamLike, **constraints: bool) -> None:
        self.register_buffer(name, as_param(name, value, self.shape, **constraints))

    def _derived(self, name: str, value: torch.Tensor) -> None:
        if name in self._buffers:
            self._buffers[name] = value
        else:
            self.register_buffer(name, value, persistent=False)

    def update_derived(self) -> None:
        """Recompute quantities derived from parameters (decay factors, refractory steps).

        Called at construction and after ``load_state_dict``; call it after changing a time
        constant buffer in place.
        """
        self._derived("trace_decay", torch.exp(-self.dt / self.tau_trace))

    def _apply(self, fn, recurse=True):
        # .to()/.double()/.cuda(): recompute derived factors in the new dtype (a float32 decay
        # converted to float64 would keep float32 precision).
        module = super()._apply(fn, recurse)
        self.update_derived()
        return module

    # ----------------------------------------------------------------- state
    @property
    def batch_size(self) -> Optional[int]:
        """Batch size of the current state, or ``None`` before the first step."""
        state = self._buffers.get(self._state_names[0])
        return None if state is None else state.shape[0]

    def _initial_state(self, batch: int, like: torch.Tensor) -> Dict[str, torch.Tensor]:
        zeros = like.new_zeros((batch, *self.shape))
        return {"spikes": zeros, "trace": zeros.clone()}

    def _make_state(self, x: torch.Tensor) -> None:
        for name, value in self._initial_state(x.shape[0], self.trace_decay).items():
            setattr(self, name, value)

    def reset_state(self) -> None:
        """Restore the initial state (keeping the current batch size); no-op before the first step."""
        state = self._buffers.get(self._state_names[0])
        if state is not None:
            self._make_state(state)

    def detach_state(self) -> None:
        """Cut the autograd graph at the current state (truncated backpropagation through time)."""
        for name in self._state_names:
            value = self._buffers.get(name)
            if value is not None:
                self._buffers[name] = value.detach()

    def _prepare(self, x: torch.Tensor) -> None:
        check_input("x", x, self.shape, self._buffers["trace_decay"], type(self).__name__)
        state = self._buffers[self._state_names[0]]
        if state is None or state.shape[0] != x.shape[0]:
            self._make_state(x)

    def forward_multistep(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``T`` steps: ``x`` ``(T, B, *shape)`` → spikes ``(T, B, *shape)``.

        The same as ``torch.stack([self(x[t]) for t in range(T)])``, state included. LIF and IF
        neurons run all ``T`` steps in one fused call where :mod:`pysnn.native` applies and no
        forward hook is registered; otherwise (and always when a hook, such as a
        :class:`~pysnn.monitor.Monitor`'s, must see every step) this calls the module once per
        step (:func:`pysnn.multistep.step_through`).
        """
        if not isinstance(x, torch.Tensor) or x.dim() != len(self.shape) + 2:
            raise ValueError(
                f"x must have shape (T, B, {', '.join(map(str, self.shape))}) for "
                f"{type(self).__name__}.forward_multistep, got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        if not has_forward_hooks(self):  # hooks (e.g. a Monitor) must see every step
            fused = self._forward_block(x)
            if fused is not None:
                return fused
        return step_through(self, x)

    def _forward_block(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """All ``T`` steps in one fused call, or ``None`` where that does not apply."""
        return None

    def _update_trace(self, spikes: torch.Tensor) -> None:
        state = self._buffers
        trace = state["trace"]
        if (
            not trace.requires_grad
            and native.usable(spikes, trace)
            and native._trace_step(
                spikes,
                trace,
                state["trace_decay"],
                state["trace_scale"],
                self._additive,
                self.shape,
                self._native_cache,
            )
        ):
            return
        state["trace"] = trace_step(
            state["trace"], spikes, state["trace_decay"], state["trace_scale"], self._additive
        )

    def extra_repr(self) -> str:
        return f"shape={self.shape}, dt={self.dt}, trace_mode={self.trace_mode!r}"


class Input(Neuron):
    """Input layer: passes the given spikes through and keeps their trace.

    ``forward(x)``: ``x`` of shape ``(B, *shape)``, 0/1 spikes as a float tensor (the module's
    dtype) or a bool/integer tensor (converted). Returns the spikes as floats ``(B, *shape)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: spikes ``x`` ``(B, *shape)`` in, the same spikes (float) out; updates ``trace``."""
        if isinstance(x, torch.Tensor) and not x.is_floating_point():
            x = x.to(self.trace_decay.dtype)
        self._prepare(x)
        self._buffers["spikes"] = x
        self._update_trace(x)
        return x


class LIFNeuron(Neuron):
    r"""Leaky integrate-and-fire neuron with refractoriness and a spike trace.

    Per step of ``dt`` ms (see :mod:`pysnn.functional.lif`):

    .. math::

        v &\leftarrow v_{rest} + (v - v_{rest})\, e^{-dt/\tau_v} \\
        v &\leftarrow v + x \quad \text{unless refractory} \\
        s &= H(v - v_{th}); \quad \text{where } s=1:\ v \leftarrow v_{reset},\
             r \leftarrow \mathrm{round}(t_{ref}/dt)

    Args:
        shape: neuron shape without batch.
        dt: time step (ms).
        thresh: threshold :math:`v_{th}` (mV).
        v_rest: resting potential (mV).
        v_reset: reset potential (mV).
        tau_v: membrane time constant (ms), > 0.
        refrac: refractory period (ms), >= 0, rounded to whole steps.
        tau_trace, trace_scale, trace_mode: see :class:`Neuron`.
        surrogate: optional surrogate gradient for the spike function (:mod:`pysnn.surrogate`).
        detach_reset: if ``True`` no gradient flows from the spike into the reset; by default it
            does (the reset is differentiated as ``(1 - s) v + s v_reset``).

    Every parameter may be a scalar or a tensor broadcastable to ``shape`` (per-neuron values).

    State: ``v`` (mV), ``spikes``, ``trace``, ``refrac_count`` (remaining refractory steps, int64), each
    ``(B, *shape)``. The input ``x`` is an instantaneous voltage increment (mV).
    """

    _state_names = ("v", "spikes", "trace", "refrac_count")
    _leaky = True

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        thresh: ParamLike = -52.0,
        v_rest: ParamLike = -65.0,
        v_reset: ParamLike = -65.0,
        tau_v: ParamLike = 100.0,
        refrac: ParamLike = 5.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        surrogate: Optional[SurrogateFn] = None,
        detach_reset: bool = False,
    ) -> None:
        super().__init__(shape, dt, tau_trace, trace_scale, trace_mode)
        if not isinstance(detach_reset, bool):
            raise TypeError(f"detach_reset must be a bool, got {detach_reset!r}")
        self.detach_reset = detach_reset
        self._param("thresh", thresh)
        self._param("v_rest", v_rest)
        self._param("v_reset", v_reset)
        if self._leaky:
            self._param("tau_v", tau_v, positive=True, allow_inf=True)
        self._param("refrac", refrac, non_negative=True)
        self.surrogate = surrogate
        self.update_derived()

    def update_derived(self) -> None:
        super().update_derived()
        decay = torch.exp(-self.dt / self.tau_v) if self._leaky else torch.ones_like(self.thresh)
        self._derived("decay", decay)
        self._derived("leak", self.v_rest * (1 - decay))
        self._derived("refrac_steps", torch.round(self.refrac / self.dt).to(torch.int64))
        self.params = LIFParameters(
            self.decay, self.leak, self.v_rest, self.v_reset, self.thresh, self.refrac_steps
        )
        """The :class:`~pysnn.functional.lif.LIFParameters` used by ``forward``."""

    def _initial_state(self, batch: int, like: torch.Tensor) -> Dict[str, torch.Tensor]:
        state = super()._initial_state(batch, like)
        state["v"] = self.v_rest.expand(batch, *self.shape).clone()
        state["refrac_count"] = torch.zeros(
            (batch, *self.shape), dtype=torch.int64, device=like.device
        )
        return state

    def _theta(self) -> Optional[torch.Tensor]:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input ``x`` ``(B, *shape)`` (mV increment) → spikes ``(B, *shape)`` (0/1)."""
        self._prepare(x)
        state = self._buffers
        s = self._fused(x)  # the fused kernel also updates the trace
        if s is None:
            s, state["v"], state["refrac_count"] = lif_step(
                state["v"],
                x,
                state["refrac_count"],
                self.params,
                self._theta(),
                self.surrogate,
                self.detach_reset,
            )
            self._update_trace(s)
        state["spikes"] = s
        self._after_spike(s)
        return s

    #: whether :meth:`forward_multistep` may run all steps in one fused call (not with adaptation,
    #: whose update must follow every step)
    _fused_block = True

    def _forward_block(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if not self._fused_block:
            return None
        n_steps = x.shape[0]
        check_input(
            "x",
            x.reshape(n_steps * x.shape[1], *x.shape[2:]),
            self.shape,
            self._buffers["trace_decay"],
            type(self).__name__,
        )
        self._prepare(x[0])
        s = self._fused(x)
        if s is not None:
            self._buffers["spikes"] = s[-1]
        return s

    def _fused(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Steps in one fused kernel (in-place state), or ``None`` where it does not apply."""
        state = self._buffers
        theta = self._theta()
        v, trace = state["v"], state["trace"]
        x = x.contiguous()
        if v.requires_grad or trace.requires_grad or not native.usable(x, v, trace, theta):
            return None
        out = torch.empty_like(x)
        p = self.params
        done = native._lif_steps(
            x,
            v,
            state["refrac_count"],
            trace,
            out,
            (
                p.decay,
                p.leak,
                p.v_reset,
                p.thresh,
                p.refrac_steps,
                state["trace_decay"],
                state["trace_scale"],
            ),
            theta,
            self._additive,
            self.shape,
            self._native_cache,
        )
        return out if done else None

    def _after_spike(self, spikes: torch.Tensor) -> None:
        """Hook for adaptation after the spikes of a step; none here."""

    def extra_repr(self) -> str:
        return super().extra_repr() + (
            ", surrogate=" + repr(self.surrogate) if self.surrogate else ""
        )


class IFNeuron(LIFNeuron):
    """Integrate-and-fire neuron: :class:`LIFNeuron` without leak (``tau_v`` is not used).

    Same arguments as :class:`LIFNeuron` except ``tau_v`` (there is no leak).
    """

    _leaky = False

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        thresh: ParamLike = -52.0,
        v_rest: ParamLike = -65.0,
        v_reset: ParamLike = -65.0,
        refrac: ParamLike = 5.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        surrogate: Optional[SurrogateFn] = None,
        detach_reset: bool = False,
    ) -> None:
        super().__init__(
            shape,
            dt,
            thresh,
            v_rest,
            v_reset,
            math.inf,
            refrac,
            tau_trace,
            trace_scale,
            trace_mode,
            surrogate,
            detach_reset,
        )


class AdaptiveLIFNeuron(LIFNeuron):
    r"""LIF neuron with an adaptive threshold :math:`v_{th} = v_{th,0} + \theta`.

    After each step :math:`\theta \leftarrow \theta e^{-dt/\tau_\theta} + \theta_+ s`: the
    threshold rises by ``theta_plus`` (mV) per spike and relaxes back to its base value ``thresh``
    (``theta`` is the offset, 0 at rest).

    Args:
        theta_plus: threshold increment per spike (mV), >= 0.
        tau_theta: relaxation time constant of ``theta`` (ms), > 0 (``math.inf`` for none).
        theta_shared: if ``False`` (default) ``theta`` is per-sample state ``(B, *shape)``, reset
            by :meth:`reset_state`. If ``True`` it is one learned value per neuron, ``shape``, as in
            Diehl & Cook (2015): a persistent buffer saved in ``state_dict``, kept by
            :meth:`reset_state` (use :meth:`reset_theta`), updated with the spikes summed over the
            batch, and frozen in ``eval()`` mode.
        other arguments: as :class:`LIFNeuron`.
    """

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        thresh: ParamLike = -52.0,
        v_rest: ParamLike = -65.0,
        v_reset: ParamLike = -65.0,
        tau_v: ParamLike = 100.0,
        refrac: ParamLike = 5.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        theta_plus: ParamLike = 0.05,
        tau_theta: ParamLike = 1e7,
        theta_shared: bool = False,
        surrogate: Optional[SurrogateFn] = None,
        detach_reset: bool = False,
    ) -> None:
        super().__init__(
            shape,
            dt,
            thresh,
            v_rest,
            v_reset,
            tau_v,
            refrac,
            tau_trace,
            trace_scale,
            trace_mode,
            surrogate,
            detach_reset,
        )
        self.theta_shared = bool(theta_shared)
        self._param("theta_plus", theta_plus, non_negative=True)
        self._param("tau_theta", tau_theta, positive=True, allow_inf=True)
        if self.theta_shared:
            self.register_buffer("theta", self.thresh.new_zeros(self.shape))
        else:
            self._state_names = self._state_names + ("theta",)
            self.register_buffer("theta", None, persistent=False)
        self.update_derived()

    def update_derived(self) -> None:
        super().update_derived()
        if "tau_theta" in self._buffers:
            self._derived("theta_decay", torch.exp(-self.dt / self.tau_theta))

    def _initial_state(self, batch: int, like: torch.Tensor) -> Dict[str, torch.Tensor]:
        state = super()._initial_state(batch, like)
        if not self.theta_shared:
            state["theta"] = like.new_zeros((batch, *self.shape))
        return state

    def reset_theta(self) -> None:
        """Set the threshold offset ``theta`` back to 0 (its resting value)."""
        if self.theta is not None:
            self.theta = torch.zeros_like(self.theta)

    _fused_block = False

    def _theta(self) -> Optional[torch.Tensor]:
        return self._buffers["theta"]

    def _after_spike(self, spikes: torch.Tensor) -> None:
        state = self._buffers
        if not self.theta_shared:
            state["theta"] = adaptive_theta_step(
                state["theta"], spikes, state["theta_decay"], state["theta_plus"]
            )
        elif self.training:
            with torch.no_grad():
                state["theta"] = adaptive_theta_step(
                    state["theta"], spikes.sum(0), state["theta_decay"], state["theta_plus"]
                )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", theta_shared={self.theta_shared}"


class IzhikevichNeuron(Neuron):
    r"""Izhikevich (2003) neuron (see :mod:`pysnn.functional.izhikevich`).

    .. math::

        \dot v = 0.04 v^2 + 5 v + 140 - u + I, \quad \dot u = a (b v - u);\quad
        v \ge v_{peak} \Rightarrow v \leftarrow c,\ u \leftarrow u + d

    Args:
        shape: neuron shape without batch.
        a, b, c, d: model parameters (defaults: regular spiking 0.02, 0.2, -65 mV, 8; fast
            spiking is 0.1, 0.2, -65, 2). Scalars or per-neuron tensors.
        dt: time step (ms).
        v_peak: spike cutoff (mV).
        v_init: initial membrane potential (mV); ``u`` starts at ``b * v_init``.
        tau_trace, trace_scale, trace_mode: see :class:`Neuron`.
        surrogate: optional surrogate gradient.

    ``forward(x)``: ``x`` is the input current ``I`` (model units, held over the step) of shape
    ``(B, *shape)``. State: ``v`` (mV), ``u``, ``spikes``, ``trace``.
    """

    _state_names = ("v", "u", "spikes", "trace")

    def __init__(
        self,
        shape: ShapeLike,
        a: ParamLike = 0.02,
        b: ParamLike = 0.2,
        c: ParamLike = -65.0,
        d: ParamLike = 8.0,
        dt: float = 1.0,
        v_peak: ParamLike = 30.0,
        v_init: ParamLike = -65.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        surrogate: Optional[SurrogateFn] = None,
    ) -> None:
        super().__init__(shape, dt, tau_trace, trace_scale, trace_mode)
        for name, value in (("a", a), ("b", b), ("c", c), ("d", d)):
            self._param(name, value)
        self._param("v_peak", v_peak)
        self._param("v_init", v_init)
        self.surrogate = surrogate
        self.update_derived()

    @property
    def params(self) -> IzhikevichParameters:
        """The :class:`~pysnn.functional.izhikevich.IzhikevichParameters` of this neuron."""
        return IzhikevichParameters(self.a, self.b, self.c, self.d, self.v_peak, self.dt)

    def _initial_state(self, batch: int, like: torch.Tensor) -> Dict[str, torch.Tensor]:
        state = super()._initial_state(batch, like)
        state["v"] = self.v_init.expand(batch, *self.shape).clone()
        state["u"] = (self.b * self.v_init).expand(batch, *self.shape).clone()
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input current ``x`` ``(B, *shape)`` → spikes ``(B, *shape)`` (0/1)."""
        self._prepare(x)
        s, self.v, self.u = izhikevich_step(self.v, self.u, x, self.params, self.surrogate)
        self.spikes = s
        self._update_trace(s)
        return s
