r"""Neuron modules: the :class:`Neuron` base class (the extension API) and the built-in models.

Every neuron takes one input per time step, ``forward(x)`` with ``x`` of shape ``(B, *shape)``, and
returns its spikes ``(B, *shape)`` as 0/1 values in ``x``'s dtype, so it can sit in an
``nn.Sequential`` next to any torch module. Times are in ms, voltages in mV.

**Writing a neuron.** Subclass :class:`Neuron`, declare constants with
:meth:`Neuron.register_constant` and state with :meth:`Neuron.register_state` in ``__init__``, and
implement :meth:`Neuron.step`, reading and assigning ``self.<state>``::

    class MyLIF(Neuron):
        def __init__(self, shape, dt=1.0, *, tau_v=20.0, thresh=1.0, **kwargs):
            super().__init__(shape, dt, **kwargs)
            self.register_constant("tau_v", tau_v, positive=True)
            self.register_constant("thresh", thresh)
            self.register_state("v", 0.0)

        def step(self, x):
            self.v = self.v * torch.exp(-self.dt / self.tau_v) + x
            s = self.fire(self.v - self.thresh)       # Heaviside, surrogate gradient
            self.v = self.v * (1 - s)
            return s

The base class's ``forward`` does the rest: input checks, state created lazily for the batch
(re-created when the batch size changes), :meth:`~Neuron.reset_state`,
:meth:`~Neuron.detach_state`, dtype/device moves, the spike trace (updated from the returned
spikes, so learning rules see it), and :meth:`~Neuron.forward_multistep` for ``(T, B, *shape)``
inputs. The built-in neurons below are written on this same API; their fast CPU kernels sit behind
the functional layer (:mod:`pysnn.functional`).

**Constants are live.** Every constant (threshold, time constants, ...) is read at each step:
in-place edits (``lif.thresh.fill_(-60.)``) and assignment (``lif.thresh = -60.`` or a tensor)
take effect at the next step on every path. Quantities derived from them (decay factors,
refractory steps) are recomputed whenever a source changes (:meth:`Neuron.derived`, guarded by
value: in-place edits, edits through ``.data`` such as ``lif.tau_v.data.fill_(10.)`` and swapped
storages are all seen at the next step, on every path). A constant
given as an ``nn.Parameter`` stays that Parameter: it appears in ``parameters()``, optimisers
learn it, and gradients flow into it through the surrogate.

**State** (``v``, ``spikes``, ``trace``, ``refrac_count``, ``theta``, ...) lives in non-persistent
buffers: created lazily for the first batch size seen, re-created when the batch size changes,
moved by ``.to()``/``.double()``, restored by :meth:`Neuron.reset_state`, and **not** part of
``state_dict()`` (which holds the constants, so a ``state_dict`` always loads into a freshly built
network). State tensors are **replaced** every step on every path (CPU kernels, torch operations,
autograd, GPU): ``v0 = lif.v; lif(x)`` leaves ``v0`` at its old value everywhere.

**Gradients by default.** Spiking neurons use :data:`pysnn.surrogate.DEFAULT` (a fast-sigmoid
surrogate, 1/mV) for the gradient of their spike function; the forward value is always the exact
Heaviside step. ``surrogate=None`` gives the pure step (no gradient through spikes).

Memory per neuron and batch sample: ``LIFNeuron``/``IFNeuron`` 20 bytes in float32 (``v``,
``spikes``, ``trace``: one float each; ``refrac_count``: int64), ``AdaptiveLIFNeuron`` 4 more for a
per-sample ``theta`` (a shared ``theta`` is 4 bytes per neuron), ``Input`` 8, ``IzhikevichNeuron``
16. Constants add one value per neuron only where given per neuron.

Traces, per step after the spikes (see :mod:`pysnn.functional.trace`):
``trace <- trace * exp(-dt/tau_trace)``, then ``trace += trace_scale`` on a spike (``"additive"``)
or ``trace = trace_scale`` (``"reset"``).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from itertools import chain
from operator import is_, itemgetter
from typing import Any, Callable, FrozenSet, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from pysnn import _checks
from pysnn._guards import Guard
from pysnn._sharing import all_unshared, unshared
from pysnn._checks import ParamLike, as_param, check_choice, check_input, check_positive_scalar
from pysnn.codegen import NeuronKernel, generate, trace_constants
from pysnn.forcing import Override, check_delta, check_mask
from pysnn.functional.decay import exp_decay
from pysnn.functional.izhikevich import IzhikevichParameters, izhikevich_step
from pysnn.functional.lif import (
    LIFParameters,
    adaptive_theta_step,
    fused_lif_trace_step,
    lif_parameters,
    lif_step,
    lif_trace_steps,
)
from pysnn.functional.spike import SurrogateFn
from pysnn.functional.trace import TRACE_MODES, TraceParameters, trace_parameters, trace_step
from pysnn.stepping import block_form_reason, capturing_graph, has_forward_hooks, step_through
from pysnn.surrogate import DEFAULT as DEFAULT_SURROGATE

ShapeLike = Union[int, Sequence[int]]
#: What :meth:`Neuron.register_state` accepts as the initial value of a state.
InitialLike = Union[int, float, torch.Tensor, str, Callable[["Neuron"], torch.Tensor]]

__all__ = [
    "Neuron",
    "Input",
    "IFNeuron",
    "LIFNeuron",
    "AdaptiveLIFNeuron",
    "IzhikevichNeuron",
    "DEFAULT_SURROGATE",
]


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


def _check_surrogate(surrogate: Optional[SurrogateFn]) -> Optional[SurrogateFn]:
    if surrogate is not None and not callable(surrogate):
        raise TypeError(
            "surrogate must be a callable such as pysnn.surrogate.FastSigmoid() or None, got "
            f"{type(surrogate).__name__}"
        )
    return surrogate


def _describe(value: torch.Tensor) -> str:
    """A constant for a message: its value, or its range when per neuron."""
    value = value.detach()
    if value.numel() == 1:
        return f"{float(value):g}"
    return f"from {float(value.min()):g} to {float(value.max()):g}"


class Neuron(nn.Module):
    """Base class of all neurons: the public extension API.

    A subclass declares its constants (:meth:`register_constant`) and state
    (:meth:`register_state`) in ``__init__`` and implements :meth:`step`. ``forward`` then supplies
    input checks, lazy per-batch state, the spike trace, reset, detach, dtype/device moves and
    multi-step runs.

    Args:
        shape: neuron shape without the batch dimension, e.g. ``100`` or ``(1, 28, 28)``.
        dt: simulation time step (ms), > 0.
        tau_trace: trace time constant (ms), > 0, scalar or per-neuron tensor.
        trace_scale: trace increment (``"additive"``) or reset value (``"reset"``).
        trace_mode: ``"additive"`` or ``"reset"``.
        surrogate: surrogate gradient of the spike function used by :meth:`fire` (default
            :data:`pysnn.surrogate.DEFAULT`); ``None`` for the pure step without gradient.

    Class attribute ``spiking`` (default ``True``): a non-spiking unit (a readout) sets it to
    ``False``; it then has no ``spikes``/``trace`` state and ``forward`` returns what ``step``
    returns.
    """

    spiking: bool = True

    #: Attributes that a step changes without changing what a later step computes: caches of
    #: fused paths and counts toward building them. :class:`pysnn.engine.GraphedStep`, which
    #: replays a recorded step without running Python, ignores them when it checks that a step
    #: keeps no Python state of its own (a subclass that keeps a cache adds its names).
    STEP_CACHES: FrozenSet[str] = frozenset(
        {
            "_fast",
            "_general_steps",
            "_generation_refused",
            "_kept_kernel",
            "_graph_steps",
            "_trace_assigned",
            "_derived_cache",
        }
    )

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        surrogate: Optional[SurrogateFn] = DEFAULT_SURROGATE,
    ) -> None:
        super().__init__()
        self.__dict__["_constant_specs"] = {}  # name -> constraints of as_param
        self.__dict__["_state_specs"] = {}  # name -> (initial, dtype)
        # key -> (inputs, a Guard of their tensors, value): see derived()
        self.__dict__["_derived_cache"] = {}
        self.__dict__["_graph_steps"] = 0  # steps with an autograd graph on the state
        self.__dict__["_override"] = None  # pending clamp/unclamp/inject_v (pysnn.forcing)
        self.__dict__["_fast"] = None  # see _GeneratedStep: dropped by any change of the module
        self.shape = _as_shape(shape)
        self.dt = dt
        self.surrogate = _check_surrogate(surrogate)
        if self.spiking:
            self.trace_mode = check_choice("trace_mode", trace_mode, TRACE_MODES)
            self.register_constant("tau_trace", tau_trace, positive=True)
            self.register_constant("trace_scale", trace_scale)
            self.register_state("spikes", 0.0)
            self.register_state("trace", 0.0)

    def _forget_fast_steps(self) -> None:
        """Drop the fast step and what was learned about generating one (the module's
        constants, states or dtype changed)."""
        self.__dict__["_fast"] = None
        self.__dict__["_general_steps"] = 0
        self.__dict__["_generation_refused"] = None
        self.__dict__["_kept_kernel"] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fast"] = None  # holds kernel handles: rebuilt by the next step
        state["_kept_kernel"] = None
        state["_derived_cache"] = {}  # guards read memory by address: recomputed by a copy
        return state

    #: Floating-point dtypes a neuron refuses to be moved to (see :meth:`_apply`).
    LOW_PRECISION: Tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "Neuron":
        """``.to()``/``.half()``/...: refuse float16 and bfloat16 before converting anything.

        In those dtypes the dynamics are silently wrong: ``exp(-1/100)`` = 0.99005 rounds to
        0.98828 in bfloat16, and a 0.1 mV input vanishes against -65 mV (an LIF driven at
        0.1 mV/step stays at -65.0 mV instead of reaching -56.3 mV). Keep neurons in float32 or
        float64 and cast their input (``lif(fc(x).float())``); connections may be low precision.
        """
        self.refuse_low_precision(fn)
        self._forget_fast_steps()
        return super()._apply(fn, recurse)

    def refuse_low_precision(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Raise ``TypeError`` if the conversion ``fn`` (as given to ``nn.Module._apply``) would
        turn this neuron into float16/bfloat16; :class:`~pysnn.network.SNNNetwork` calls it for
        every neuron before converting anything, so a refused ``.to()`` leaves a network as it
        was."""
        reference = self._reference()
        probe = fn(torch.empty(0, dtype=reference.dtype, device=reference.device))
        if probe.dtype in self.LOW_PRECISION:
            raise TypeError(
                f"{type(self).__name__} cannot run in {probe.dtype}: its decay factors and "
                "membrane potentials round so coarsely that the dynamics are wrong (bfloat16: "
                "exp(-1/100) = 0.99005 becomes 0.98828; a 0.1 mV input is lost against -65 mV). "
                "Keep neurons in float32/float64 (convert only the connections, e.g. "
                "net.fc.to(torch.bfloat16)) and cast their input: lif(fc(x).float())"
            )

    # ----------------------------------------------------------------- declarations
    @property
    def dt(self) -> float:
        """Simulation time step (ms), > 0. Assignable; derived quantities follow."""
        return self.__dict__["_dt"]

    @dt.setter
    def dt(self, value: float) -> None:
        self.__dict__["_dt"] = check_positive_scalar("dt", value)

    def register_constant(
        self,
        name: str,
        value: ParamLike,
        *,
        positive: bool = False,
        non_negative: bool = False,
        allow_inf: bool = False,
    ) -> None:
        """Declare a neuron constant (a threshold, a time constant, ...) read live at every step.

        Args:
            name: attribute name.
            value: a number, a tensor broadcastable to ``shape`` (per-neuron values), or an
                ``nn.Parameter`` (kept as that Parameter: learned by optimisers).
            positive, non_negative, allow_inf: constraints checked now and on every assignment.

        A number or tensor is stored as a buffer (saved in ``state_dict``). Assigning
        ``self.<name> = value`` later validates and converts ``value`` to the buffer's dtype and
        device; in-place edits are seen at the next step.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name must be a valid identifier, got {name!r}")
        constraints = {"positive": positive, "non_negative": non_negative, "allow_inf": allow_inf}
        tensor = as_param(name, value, self.shape, **constraints)
        self._forget_fast_steps()
        self._constant_specs[name] = constraints
        self.__dict__.setdefault("_reference_name", name)
        if isinstance(tensor, nn.Parameter):
            self.register_parameter(name, tensor)
        else:
            self.register_buffer(name, tensor)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args, **kwargs):
        # A constant saved per neuron (e.g. learned thresholds) loads into a neuron built with a
        # scalar, and the other way round: the buffer takes the saved shape first (validated as
        # on assignment), so that state_dict always loads into a freshly built neuron.
        self._forget_fast_steps()
        for name, constraints in self._constant_specs.items():
            key = prefix + name
            current = self._buffers.get(name)
            saved = state_dict.get(key)
            if current is None or not isinstance(saved, torch.Tensor):
                continue
            if saved.shape != current.shape:
                checked = as_param(key, saved, self.shape, **constraints)
                self._buffers[name] = torch.empty(
                    checked.shape, dtype=current.dtype, device=current.device
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args, **kwargs)

    def register_state(
        self, name: str, initial: InitialLike = 0.0, *, dtype: Optional[torch.dtype] = None
    ) -> None:
        """Declare a state variable ``self.<name>``, ``(B, *shape)``, reset to ``initial``.

        Args:
            name: attribute name.
            initial: the value at reset: a number, a per-neuron tensor broadcastable to
                ``shape``, the name of a constant (e.g. ``"v_rest"``, read live at each reset), or
                a function ``initial(neuron) -> tensor`` broadcastable to ``shape`` (use a
                module-level function, so that the neuron can be pickled).
            dtype: ``None`` for the input's floating-point dtype (follows ``.double()`` etc.), or
                a fixed dtype such as ``torch.int64`` for a counter.

        The state is a non-persistent buffer, ``None`` before the first step.
        """
        _checks.check_state_declaration(self, name, initial, self._state_specs, "constant")
        if isinstance(initial, torch.Tensor):
            tensor = as_param(f"initial value of {name!r}", initial, self.shape, allow_inf=True)
            self.register_buffer(f"{name}_initial", tensor.detach(), persistent=False)
            initial = f"{name}_initial"
        self._state_specs[name] = (initial, dtype)
        self._forget_fast_steps()
        self.__dict__.setdefault("_first_state", name)
        self.register_buffer(name, None, persistent=False)

    @property
    def state_names(self) -> Tuple[str, ...]:
        """Names of the state variables, in registration order."""
        return tuple(self._state_specs)

    @property
    def constant_names(self) -> Tuple[str, ...]:
        """Names of the constants declared with :meth:`register_constant`."""
        return tuple(self._constant_specs)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__["_fast"] = None  # any assignment may change what a step does
        if name not in self.__dict__.get("_state_specs", ()):
            # (nor may a kernel kept for another batch size be used again: see drop)
            self.__dict__["_kept_kernel"] = None
        if name == "trace":
            self.__dict__["_trace_assigned"] = True  # see forward
        specs = self.__dict__.get("_constant_specs")
        if specs is not None and name in specs and value is not None:
            value = as_param(name, value, self.shape, **specs[name])
            current = self._parameters.get(name)
            if current is not None and not isinstance(value, nn.Parameter):
                raise TypeError(
                    f"{name} is an nn.Parameter of {type(self).__name__}: assign an nn.Parameter, "
                    "or edit it in place under torch.no_grad()"
                )
            if isinstance(value, nn.Parameter):
                super().__setattr__(name, value)
            else:
                reference = self._buffers[name]
                self._buffers[name] = value.to(reference.device, reference.dtype)
            self.check_constants(name)
            return
        super().__setattr__(name, value)

    def check_constants(self, changed: Optional[str] = None) -> None:
        """Warn about constants that are valid one by one but make no sense together.

        Called by a subclass at the end of its ``__init__`` (``changed=None``) and after each
        assignment of a constant (``changed`` its name); in-place edits are not seen. The
        base class checks nothing; :class:`LIFNeuron` warns when ``thresh <= v_reset``.
        """

    # ----------------------------------------------------------------- derived quantities
    def derived(self, key: str, compute: Callable[..., Any], *inputs: Any) -> Any:
        r"""``compute(*inputs)``, cached until one of ``inputs`` changes.

        A tensor input counts as changed when it is another tensor object or when its values
        may differ (:class:`pysnn._guards.Guard`: another storage, an in-place edit, or other
        bytes, so writes through ``.data`` are seen too, on inference tensors as well); other
        inputs (e.g. ``dt``) when they are other objects. Nothing computed from an
        ``nn.Parameter`` is cached (its value can change through ``.data`` without a trace, and
        its gradient must reach it), nor from a tensor on another device than the CPU (its bytes
        cannot be compared without a host sync): ``compute`` then runs at every call. A value
        cached under ``torch.inference_mode`` is computed outside it (a normal tensor, which a
        later step outside inference mode may use with autograd).

        Under ``torch.compile`` ``compute`` is traced into the graph (no cache, no graph break),
        and so it is while a step is recorded for a replay (:func:`pysnn.stepping.graph_capture`):
        the replay then computes the value from the inputs' memory at every step, so that edits
        of a constant, through ``.data`` included, are seen by the replay too.

        Example: ``decay = self.derived("decay", exp_decay, self.tau_v, self.dt)``.
        """
        if torch.compiler.is_compiling() or capturing_graph():
            return compute(*inputs)  # traced into the graph: nothing to cache
        entry = self._derived_cache.get(key)
        if entry is not None and all(map(is_, inputs, entry[0])) and entry[1].holds():
            return entry[2]
        if any(
            isinstance(t, nn.Parameter) or (isinstance(t, torch.Tensor) and not t.is_cpu)
            for t in inputs
        ):  # (the guard cannot compare the bytes of another device's tensor without a host
            # sync: a .data edit there would go unseen, so the value is computed at each call)
            return compute(*inputs)
        if torch.is_inference_mode_enabled():
            # (an inference tensor could not be saved for backward by a later step outside)
            with torch.inference_mode(False), torch.no_grad():
                value = compute(*inputs)
        else:
            value = compute(*inputs)
        # the entry holds the inputs, so their ids cannot be reused while it exists
        guard = Guard([t for t in inputs if isinstance(t, torch.Tensor)])
        self._derived_cache[key] = (inputs, guard, value)
        return value

    def trace_parameters(self) -> TraceParameters:
        """The discretised :class:`~pysnn.functional.trace.TraceParameters` of this step."""
        tau, scale = self._constant("tau_trace"), self._constant("trace_scale")
        return self.derived("trace", trace_parameters, tau, scale, self.trace_mode, self.dt)

    # ----------------------------------------------------------------- state
    @property
    def batch_size(self) -> Optional[int]:
        """Batch size of the current state, or ``None`` before the first step."""
        for name in self._state_specs:
            state = self._buffers.get(name)
            if state is not None:
                return state.shape[0]
        return None

    def _initial_value(self, initial: InitialLike) -> Union[float, torch.Tensor]:
        if isinstance(initial, str):
            return getattr(self, initial).detach()
        if callable(initial):
            return initial(self).detach()
        return initial

    def _make_state(self, batch: int, like: torch.Tensor) -> None:
        self.__dict__["_graph_steps"] = 0
        shape = (batch, *self.shape)
        for name, (initial, dtype) in self._state_specs.items():
            dtype = like.dtype if dtype is None else dtype
            value = self._initial_value(initial)
            if isinstance(value, torch.Tensor):
                value = value.to(device=like.device, dtype=dtype).expand(shape).clone()
            else:
                value = torch.full(shape, value, dtype=dtype, device=like.device)
            self._buffers[name] = value

    def reset_state(self) -> None:
        """Restore the initial state (keeping the current batch size); no-op before the first step."""
        self.__dict__["_graph_steps"] = 0
        for name in self._state_specs:
            state = self._buffers.get(name)
            if state is not None and state.is_floating_point():
                self._make_state(state.shape[0], state)
                return

    def detach_state(self) -> None:
        """Cut the autograd graph at the current state (truncated backpropagation through time)."""
        self.__dict__["_graph_steps"] = 0
        for name in self._state_specs:
            value = self._buffers.get(name)
            if value is not None:
                self._buffers[name] = value.detach()

    def _spare(self, name: str) -> Optional[torch.Tensor]:
        """The state tensor ``name`` if nothing but this module can see it, else ``None``.

        "Nothing" means no other Python reference, no view or autograd save of it, and no other
        tensor on its memory (``detach()``, ``.data``, NumPy). The fused kernels may then write
        the next step's state into it: indistinguishable from a new tensor, one allocation
        cheaper. Any reference a user keeps (``v0 = neuron.v``) makes the next step allocate.
        """
        return self._buffers[name] if unshared(self._buffers, name) else None

    def _constant(self, name: str) -> torch.Tensor:
        """The constant ``name``: a buffer, or an ``nn.Parameter`` (fast, without ``__getattr__``)."""
        value = self._buffers.get(name)
        return self._parameters[name] if value is None else value

    def _reference(self) -> torch.Tensor:
        """A constant whose dtype and device inputs must match (the first one declared)."""
        name = self.__dict__.get("_reference_name")
        return torch.empty(0) if name is None else self._constant(name)

    def _prepare(self, x: torch.Tensor) -> None:
        """Check the input of one step and create the state for its batch size if needed.

        (The state follows the module through ``.to()``, and ``x`` must be on the module's
        device, so only the batch size can differ.)
        """
        check_input("x", x, self.shape, self._reference(), type(self).__name__)
        first = self.__dict__.get("_first_state")
        if first is not None:
            state = self._buffers[first]
            if state is None or state.shape[0] != x.shape[0]:
                self._make_state(x.shape[0], x)
                fast = self.__dict__["_fast"]
                if fast is not None:  # (it runs on the state of its batch size)
                    fast.drop(self)

    # ----------------------------------------------------------------- stepping
    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step: input ``x`` ``(B, *shape)`` → spikes ``(B, *shape)``. To implement.

        Read and assign the state as attributes (``self.v = ...``); use :meth:`fire` for the
        spike function. The state exists when this is called. The trace is updated afterwards
        from the returned spikes, unless ``step`` assigned ``self.trace`` itself.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement step(self, x)")

    def fire(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes ``H(x)`` (1 where ``x >= 0``) in ``x``'s dtype, with this neuron's surrogate
        gradient; ``x`` is the distance above threshold (mV), e.g. ``v - thresh``."""
        surrogate = self.surrogate
        if surrogate is None or not (torch.is_grad_enabled() and x.requires_grad):
            return (x >= 0).to(x.dtype)
        return surrogate(x)

    # ----------------------------------------------------------------- run options
    def clamp(self, mask: torch.Tensor) -> None:
        """Force spikes at the next step where ``mask`` is ``True``, even while refractory.

        A forced spike is a real spike: reset, refractory period, trace, threshold adaptation
        and learning rules all follow it (see :mod:`pysnn.forcing`). Applies to the next step
        only; calls before one step combine.

        Args:
            mask: ``bool`` tensor ``(B, *shape)`` or ``(*shape)`` (the same for every sample).
        """
        if not self.spiking:
            raise TypeError(f"{type(self).__name__} does not spike: it cannot be clamped")
        self._pending().add("force", check_mask("mask", mask, self.shape, type(self).__name__))

    def unclamp(self, mask: torch.Tensor) -> None:
        """Forbid spikes at the next step where ``mask`` is ``True`` (no spike, no reset, no
        refractory period; ``v`` keeps its integrated value). Wins over :meth:`clamp`. Applies to
        the next step only (see :mod:`pysnn.forcing`).

        Args:
            mask: ``bool`` tensor ``(B, *shape)`` or ``(*shape)``.
        """
        if not self.spiking:
            raise TypeError(f"{type(self).__name__} does not spike: it cannot be unclamped")
        self._pending().add("forbid", check_mask("mask", mask, self.shape, type(self).__name__))

    def inject_v(self, delta: Union[float, torch.Tensor]) -> None:
        """Add ``delta`` (mV) to the membrane potential ``v`` at the start of the next step,
        before its leak, input, threshold and reset (see :mod:`pysnn.forcing`). Calls before one
        step add up.

        Args:
            delta: a number or a tensor ``(B, *shape)`` or ``(*shape)``, in mV.
        """
        if "v" not in self._state_specs:
            raise TypeError(
                f"{type(self).__name__} has no membrane potential state 'v' to inject into"
            )
        self._pending().add("inject", check_delta(delta, self.shape, type(self).__name__))

    def _pending(self) -> Override:
        override = self.__dict__.get("_override")
        if override is None:
            override = self.__dict__["_override"] = Override()
        return override

    #: Steps a state may carry an autograd graph (without :meth:`detach_state` or
    #: :meth:`reset_state`) before the neuron warns, once, that the graph keeps growing.
    GRAPH_WARN_STEPS: int = 10_000

    #: After this many steps of the same input shape without a gradient, a neuron (a user's;
    #: ``Input`` and the LIF neurons set 1) has a kernel generated from its ``step``
    #: (:mod:`pysnn.codegen`) and takes its next single steps through it, the state updated in
    #: place: the same values, bit for bit, in one call instead of a few small kernels per
    #: operation. ``None``: never. A step that cannot be generated (``torch.exp`` of the state,
    #: a random draw, an attribute it changes, a global, closure or class variable holding
    #: data, whose later changes the kernel would not see...) is noted once and runs as written.
    #: As in any traced program, a number the step reads through another object
    #: (``self.config.gain``) is kept as recorded: make it a constant (:meth:`register_constant`)
    #: or an attribute of the neuron, whose changes are seen.
    GENERATE_AFTER: Optional[int] = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input ``x`` ``(B, *shape)`` → spikes ``(B, *shape)`` (0/1, ``x``'s dtype).

        Runs :meth:`step` (and the trace update); after :attr:`GENERATE_AFTER` such steps a
        kernel generated from ``step`` takes the next ones where it applies (the same values).
        """
        fast = self.__dict__["_fast"]
        if fast is not None:
            s = fast(self, x)
            if s is not None:
                return s
        s = self._forward_general(x)
        if self.__dict__["_fast"] is None and self.GENERATE_AFTER is not None:
            self._consider_generating(x)
        return s

    def _consider_generating(self, x: torch.Tensor) -> None:
        """Count a general step; at :attr:`GENERATE_AFTER` of them in a row that could use a
        generated kernel, generate one (or note once why not)."""
        state = self.__dict__
        if (
            type(x) is not torch.Tensor
            or not x.is_contiguous()
            or x.numel() == 0
            or (
                torch.is_grad_enabled()
                and (
                    x.requires_grad
                    or any(p.requires_grad for p in self._parameters.values())
                    or any(b is not None and b.requires_grad for b in self._buffers.values())
                )
            )
            or torch.compiler.is_compiling()
            or torch._C._len_torch_function_stack() > 0  # (a mode sees each operation: the
            # engine capturing a step, a recording; generating would show it the recording's)
            or state.get("_generation_refused") is not None
            or capturing_graph()  # (no kernel compiled while a replayed step is recorded)
            or _inference(x, chain(self._buffers.values(), self._parameters.values()))
        ):
            return
        count = state["_general_steps"] = state.get("_general_steps", 0) + 1
        if count < self.GENERATE_AFTER:
            return
        state["_general_steps"] = 0
        kept = state.get("_kept_kernel")
        if (
            kept is not None  # (generated for another batch size: the same kernel)
            and kept.dtype is x.dtype
            and kept.device == x.device
            and kept.dt == self.dt
            and kept.fits(x.shape[0])
            and kept.guard.holds()
        ):
            state["_fast"] = _GeneratedStep(self, kept, x)
            return
        state["_kept_kernel"] = None
        kernel, why = generate(self, x.detach())
        if kernel is None:
            state["_generation_refused"] = why
        else:
            state["_fast"] = _GeneratedStep(self, kernel, x)

    @property
    def generated_step(self) -> Optional[str]:
        """How the next single step runs: ``"generated"`` (a kernel generated from
        :meth:`step`, see :attr:`GENERATE_AFTER`), the reason a kernel could not be generated,
        or ``None`` (no kernel considered yet)."""
        if self.__dict__["_fast"] is not None:
            return "generated"
        return self.__dict__.get("_generation_refused")

    def _forward_general(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` through :meth:`step`."""
        self._prepare(x)
        if self.__dict__.get("_override") is not None:  # clamp/unclamp/inject_v for this step
            override, self.__dict__["_override"] = self.__dict__["_override"], None
            return override.run(self, x, partial(Neuron._forward_general, self))
        if not self.spiking:
            s = self.step(x)
        else:
            buffers, flags = self._buffers, self.__dict__
            flags["_trace_assigned"] = False
            s = self.step(x)
            buffers["spikes"] = s
            if not flags["_trace_assigned"]:  # step did not update the trace itself
                spare = self._spare("trace")
                buffers["trace"] = trace_step(buffers["trace"], s, self.trace_parameters(), spare)
        if s.requires_grad or (x.requires_grad and torch.is_grad_enabled()):
            self._count_graph_step()
        return s

    def _count_graph_step(self, n_steps: int = 1) -> None:
        """Count ``n_steps`` steps whose state carries an autograd graph; warn once on reaching
        :attr:`GRAPH_WARN_STEPS` (the graph, and its memory, grow with every step)."""
        before = self.__dict__["_graph_steps"]
        steps = self.__dict__["_graph_steps"] = before + n_steps
        if before < self.GRAPH_WARN_STEPS <= steps:
            warnings.warn(
                f"{type(self).__name__}: its state has carried an autograd graph for {steps} "
                "steps; the graph and its memory grow with every step (and the fused CPU "
                "kernels are skipped). Run simulations that need no gradient under "
                "torch.no_grad() or torch.inference_mode(); for training, call detach_state() "
                "every k steps (truncated BPTT) or reset_state() between sequences",
                UserWarning,
                stacklevel=3,
            )

    def forward_multistep(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``T`` steps: ``x`` ``(T, B, *shape)`` → spikes ``(T, B, *shape)``.

        The same as ``torch.stack([self(x[t]) for t in range(T)])``, state included, bit for
        bit. All ``T`` steps run in one call of the kernel generated from :meth:`step`
        (forward, and under autograd its backward) where one applies
        (:meth:`generated_multistep` says why not); otherwise the module is called once per
        step (as it is with a forward hook, such as a :class:`~pysnn.monitor.Monitor`'s, which
        must see every step).
        """
        self._check_multistep(x)
        kernel, _ = self.generated_multistep(x)
        if kernel is not None:
            out = kernel.run(self, x)
            if out is not None:
                return out
        return step_through(self, x)

    def generated_multistep(
        self, x: torch.Tensor, new: Optional[bool] = None
    ) -> Tuple[Optional[NeuronKernel], str]:
        """The kernel generated from :meth:`step` (:mod:`pysnn.codegen`) with which
        :meth:`forward_multistep` runs ``x`` ``(T, B, *shape)`` in one call, or ``(None, why
        not)``.

        A kernel is generated (about 3 ms on the CPU: the step recorded, the source written,
        the compiled library loaded from the cache) for a call that brings the steps counted
        so far (single steps without a gradient) to :attr:`GENERATE_AFTER`; ``new=True``: at
        once (as :func:`pysnn.engine.explain` and the engine's plans do), ``False``: never,
        only a kernel made before is used; ``GENERATE_AFTER = None``: never. It is kept while
        the constants (bytes), ``dt``, dtype and device hold; the single steps use the same
        kernel. Not while a forward hook is registered or :meth:`forward` is overridden (each
        step must run as written), under ``torch.compile`` or a recording, for inference
        tensors (a kernel generated before runs them), or where the step cannot be generated
        (:attr:`generated_step` says why). An input of another shape, dtype or device than
        the neuron's raises the step's error.
        """
        self._check_multistep(x)
        if has_forward_hooks(self):
            return None, "a forward hook must see every step"
        cls = type(self)
        if cls.forward is not Neuron.forward:
            owner = next(c for c in cls.__mro__ if "forward" in c.__dict__)
            return None, f"{owner.__name__}.forward overrides Neuron.forward: stepped as written"
        state = self.__dict__
        refused = state.get("_generation_refused")
        if refused is not None:
            return None, refused
        if (
            type(x) is not torch.Tensor
            or torch.compiler.is_compiling()
            or torch._C._len_torch_function_stack() > 0
            or capturing_graph()
        ):
            return None, "stepped as written (torch.compile, a recording or a tensor subclass)"
        fast = state["_fast"]
        kernel = fast.kernel if isinstance(fast, _GeneratedStep) else state.get("_kept_kernel")
        if kernel is not None and kernel.applies(self, x):
            return kernel, ""
        if kernel is None or not kernel.made_for(self, x):
            if self.GENERATE_AFTER is None:
                return None, f"{cls.__name__}.GENERATE_AFTER is None: no kernel generated"
            if _inference(x, chain(self._buffers.values(), self._parameters.values())):
                return None, "no kernel is generated for inference tensors: stepped as written"
            if new is False:
                return None, "no kernel generated yet"
            # (the single steps of a shorter call count themselves, see _consider_generating)
            if new is None and (state.get("_general_steps", 0) + x.shape[0] < self.GENERATE_AFTER):
                return None, f"fewer than GENERATE_AFTER={self.GENERATE_AFTER} steps so far"
            # (an input the step refuses raises here, not noted as a step that cannot be made)
            check_input("x", x[0], self.shape, self._reference(), cls.__name__)
            kernel, why = generate(self, x[0].detach())
            if kernel is None:
                state["_generation_refused"] = why
                return None, why
            state["_kept_kernel"] = kernel
            if isinstance(fast, _GeneratedStep):  # (its kernel is stale: the single steps
                state["_fast"] = None  # take the new one from _kept_kernel)
            if kernel.applies(self, x):
                return kernel, ""
        if kernel.no_backward is not None and _wants_graph(self, x):
            return None, f"the generated kernel has no backward: {kernel.no_backward}"
        return None, (
            "the generated kernel does not apply to this input (its batch size, a gradient it "
            "has no backward for, or a pending clamp)"
        )

    def _check_multistep(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != len(self.shape) + 2 or x.shape[0] == 0:
            raise ValueError(
                f"x must have shape (T, B, {', '.join(map(str, self.shape))}) with T >= 1 for "
                f"{type(self).__name__}.forward_multistep, got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )

    def extra_repr(self) -> str:
        text = f"shape={self.shape}, dt={self.dt}"
        if self.spiking:
            text += f", trace_mode={self.trace_mode!r}"
            if self.surrogate is not None:
                text += f", surrogate={self.surrogate!r}"
        return text


_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled
_DATA_PTR = torch.Tensor.data_ptr


def _wants_graph(neuron: Neuron, x: torch.Tensor) -> bool:
    """Whether steps of ``neuron`` on ``x`` build an autograd graph now (the input, a state or
    a learned constant wants a gradient, gradients on)."""
    return torch.is_grad_enabled() and (
        x.requires_grad
        or any(b is not None and b.requires_grad for b in neuron._buffers.values())
        or any(p.requires_grad for p in neuron._parameters.values())
    )


def _inference(x: torch.Tensor, tensors: Iterable[Optional[torch.Tensor]]) -> bool:
    """Whether inference mode is on or ``x`` or one of ``tensors`` (a neuron's buffers and
    parameters) is an inference tensor: such tensors keep no version counter (a generated
    step's guard could compare only their bytes, and only on the CPU), so no step is generated
    from them: their steps run as written."""
    return (
        torch.is_inference_mode_enabled()
        or x.is_inference()
        or any(t is not None and t.is_inference() for t in tensors)
    )


class _GeneratedStep:
    """A neuron's single step through a kernel generated from its ``step``
    (:class:`pysnn.codegen.NeuronKernel`, one step of it), the state updated in place, the
    spike trace in the same call where :func:`pysnn.codegen.trace_constants` allows it. Every
    neuron takes its repeated single steps so, the built-in ones included (see
    :attr:`Neuron.GENERATE_AFTER`).

    Kept in the neuron's fast-step slot, so any assignment to the neuron, ``.to()``, a new
    constant or state drops it. Each call checks what the kernel relied on: the input's shape,
    dtype, device and layout; no gradient wanted (by the input, the state or a learned
    constant); no clamp pending; ``dt`` and the constants
    (a :class:`~pysnn._guards.Guard`: in-place and ``.data`` edits included); the state, a
    per-neuron state (a shared ``theta``) included, seen by nothing else (else the general
    step runs, which never edits the state in place). With value checks on
    (:func:`pysnn.set_checks`) an input holding a NaN or an infinity raises the general step's
    ``ValueError``, nothing updated: the kernel checks it before it writes.
    """

    __slots__ = (
        "kernel",
        "shape",
        "names",
        "size",
        "n",
        "trace",
        "call",
        "cpu",
        "kept",
        "states",
        "returns_input",
        "pointers",
    )
    #: which kernel the step runs (the fused network loop,
    #: :func:`pysnn.engine.layers.run_layers`, reads the ``KIND`` of each module's fast step)
    KIND = "generated"

    def __init__(self, neuron: Neuron, kernel: NeuronKernel, x: torch.Tensor) -> None:
        self.kernel, self.shape = kernel, x.shape
        self.size, self.n = x.numel(), math.prod(x.shape[1:])
        self.names = tuple(kernel.states)
        # the constants of the trace update the kernel makes in its loop (those the guard
        # checks; an assignment of trace_mode drops this object); None: trace_step after it
        self.trace = trace_constants(neuron, x)
        if self.trace is not None:
            self.names += ("trace",)
        self.call = kernel.single_step(self.size, self.n, self.trace)
        # the tensors the kernel updates, from the buffers, in its order: the states, then the
        # trace where the kernel updates it
        names = self.names
        get = itemgetter(*names) if names else None
        self.states: Callable[[dict], Sequence[torch.Tensor]] = (
            get if len(names) > 1 else (lambda b: (get(b),)) if names else (lambda b: ())
        )
        self.cpu = kernel.device.type == "cpu"
        self.kept: Any = self
        self.returns_input = kernel.returns_input
        # their data pointers when last seen laid out as the kernel writes them (the state is
        # updated in place, so they stay; another pointer is checked again, see fits)
        self.pointers: Optional[list] = None

    def fits(self, neuron: Neuron, tensors: Sequence[torch.Tensor], pointers: list) -> bool:
        """Whether the kernel may write ``tensors`` (at ``pointers``): where the pointers are
        those last checked, they are the same tensors, updated in place (a storage swapped in
        through ``.data`` is a new allocation, made while the old one was alive, so it has
        another pointer); else their layout is checked (:meth:`NeuronKernel.states_fit`): a
        state of another size, dtype or layout never reaches the kernel. (A view of the same
        storage at the same address assigned through ``.data``, ``v.data = v.data[:2]``, is
        not seen: the kernel then writes within that storage.)"""
        if pointers == self.pointers:
            return True
        if not self.kernel.states_fit(tensors, self.shape[0], neuron.shape):
            return False
        self.pointers = pointers
        return True

    def companion(self, build: Callable[[], Any]) -> Any:
        """``build()``, called once while this step is kept (the constants, ``dt``, the trace
        mode and the input shape unchanged): for a caller that runs the same neuron through
        another kernel made from the same constants (the fused network loop of
        :func:`pysnn.engine.layers.run_layers`)."""
        if self.kept is self:
            self.kept = build()
        return self.kept

    def drop(self, neuron: Neuron) -> None:
        """Leave the neuron's fast-step slot (the state is being made for another batch size,
        or an input of another shape came), keeping the kernel to be used again: the next
        general step builds a step of the new shape from it (if the constants still hold)."""
        neuron.__dict__["_fast"] = None
        neuron.__dict__["_kept_kernel"] = self.kernel

    def __call__(self, neuron: Neuron, x: torch.Tensor) -> Optional[torch.Tensor]:
        kernel = self.kernel
        if type(x) is torch.Tensor and x.shape != self.shape:
            # the kernel writes x.numel() elements of each state: the general step makes the
            # state of x's batch size, so a kept step always has the state's shape
            self.drop(neuron)
            return None
        if (
            type(x) is not torch.Tensor
            or x.dtype is not kernel.dtype
            or (not x.is_cpu if self.cpu else x.device != kernel.device)
            or not x.is_contiguous()
            or _is_compiling()
            or neuron.__dict__.get("_override") is not None
        ):
            return None
        if neuron.dt != kernel.dt or not kernel.guard.holds():
            neuron.__dict__["_fast"] = None  # a constant changed: generated again later
            return None
        buffers = neuron._buffers
        if _grad_enabled() and (
            x.requires_grad
            or any(buffers[name].requires_grad for name in self.names)
            or any(p.requires_grad for p in neuron._parameters.values())  # (a learned constant)
        ):
            return None
        if not all_unshared(buffers, self.names):
            return None
        tensors = self.states(buffers)
        pointers = list(map(_DATA_PTR, tensors))
        if pointers != self.pointers and not self.fits(neuron, tensors, pointers):
            return None  # (the general step, which makes the state anew or refuses it)
        if self.returns_input:  # (the spikes are x itself, as the torch step returns them)
            out, stored = x, None
        else:
            out = stored = torch.empty_like(x)
        # (a spiking neuron's trace updated by the kernel, or by trace_step after it)
        if self.call(x, stored, tensors, pointers, _checks._VALUE_CHECKS):
            # (the kernel refused the non-finite input before writing anything)
            raise ValueError(_checks.nonfinite_message("x", x, type(neuron).__name__))
        if neuron.spiking:
            if self.trace is None:
                buffers["trace"] = trace_step(
                    buffers["trace"], out, neuron.trace_parameters(), neuron._spare("trace")
                )
            buffers["spikes"] = out
        return out

    def ready(self, neuron: Neuron, shape: torch.Size, dtype: torch.dtype) -> bool:
        """Whether a step with a contiguous input of ``shape`` and ``dtype`` on the kernel's
        device that needs no gradient would take this step with the trace in the kernel: its
        checks that do not read the input, for a caller that runs many such steps in one call
        (:func:`pysnn.engine.layers.run_layers`)."""
        kernel = self.kernel
        buffers = neuron._buffers
        return (
            not _is_compiling()
            and neuron.__dict__.get("_override") is None
            and shape == self.shape
            and dtype is kernel.dtype
            and self.trace is not None
            and neuron.dt == kernel.dt
            and kernel.guard.holds()
            and not (
                _grad_enabled()
                and (
                    any(buffers[name].requires_grad for name in self.names)
                    or any(p.requires_grad for p in neuron._parameters.values())
                )
            )
            and all_unshared(buffers, self.names)
            and self.kernel.states_fit(self.states(buffers), shape[0], neuron.shape)
        )


class Input(Neuron):
    """Input layer: passes the given spikes through and keeps their trace.

    ``forward(x)``: ``x`` of shape ``(B, *shape)``, 0/1 spikes as a float tensor (the module's
    dtype) or a bool/integer tensor (converted). Returns the spikes as floats ``(B, *shape)``.

    Args:
        shape, dt, tau_trace, trace_scale, trace_mode: see :class:`Neuron`.
    """

    #: Its single steps run the kernel generated from :meth:`step` (the trace update in its
    #: loop, the spikes the input itself) from its second step on, as a built-in LIF's do.
    GENERATE_AFTER: Optional[int] = 1

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
    ) -> None:
        super().__init__(
            shape,
            dt,
            tau_trace=tau_trace,
            trace_scale=trace_scale,
            trace_mode=trace_mode,
            surrogate=None,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: spikes ``x`` ``(B, *shape)`` in, the same spikes (float) out; updates
        ``trace`` (:meth:`Neuron.forward`, a bool or integer ``x`` converted first)."""
        if isinstance(x, torch.Tensor) and not x.is_floating_point():
            x = x.to(self._buffers["tau_trace"].dtype)
        return super().forward(x)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """The input spikes themselves."""
        return x

    def forward_multistep(self, x: torch.Tensor) -> torch.Tensor:
        """``T`` steps at once: spikes ``x`` ``(T, B, *shape)`` in, the same spikes (float) out;
        the trace takes its ``T`` updates in one loop without the per-step module overhead (the
        values and state of ``T`` calls, bit for bit)."""
        self._check_multistep(x)
        if not x.is_floating_point():
            x = x.to(self._buffers["tau_trace"].dtype)
        if (
            block_form_reason(self, Input, ("forward", "step", "trace_parameters", "_prepare"))
            or self.__dict__.get("_override") is not None
        ):
            return step_through(self, x)
        check_input("x", x.flatten(0, 1), self.shape, self._reference(), type(self).__name__)
        self._prepare(x[0])
        params = self.trace_parameters()
        trace = trace_step(self._buffers["trace"], x[0], params, self._spare("trace"))
        for t in range(1, x.shape[0]):
            trace = trace_step(trace, x[t], params, trace)
        self._buffers["trace"] = trace
        self._buffers["spikes"] = x[-1]
        if x.requires_grad and torch.is_grad_enabled():
            self._count_graph_step(x.shape[0])
        return x


def _lif_and_trace_parameters(
    tau_v: torch.Tensor,
    v_rest: torch.Tensor,
    v_reset: torch.Tensor,
    thresh: torch.Tensor,
    refrac: torch.Tensor,
    tau_trace: torch.Tensor,
    trace_scale: torch.Tensor,
    trace_mode: str,
    dt: float,
) -> Tuple[LIFParameters, TraceParameters]:
    return (
        lif_parameters(tau_v, v_rest, v_reset, thresh, refrac, dt),
        trace_parameters(tau_trace, trace_scale, trace_mode, dt),
    )


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
        surrogate: surrogate gradient of the spike function (default
            :data:`pysnn.surrogate.DEFAULT`; ``None``: no gradient through spikes).
        detach_reset: if ``True`` no gradient flows from the spike into the reset; by default it
            does (the reset is differentiated as ``(1 - s) v + s v_reset``).

    Every constant may be a number, a tensor broadcastable to ``shape`` (per-neuron values) or an
    ``nn.Parameter`` (learned; e.g. ``tau_v=nn.Parameter(torch.full((n,), 20.0))``). Constants are
    read live (see the module docstring).

    State: ``v`` (mV), ``spikes``, ``trace``, ``refrac_count`` (remaining refractory steps, int64), each
    ``(B, *shape)``. The input ``x`` is an instantaneous voltage increment (mV).
    """

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        thresh: ParamLike = -52.0,
        v_rest: ParamLike = -65.0,
        v_reset: ParamLike = -65.0,
        tau_v: ParamLike = 100.0,
        refrac: ParamLike = 5.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        surrogate: Optional[SurrogateFn] = DEFAULT_SURROGATE,
        detach_reset: bool = False,
    ) -> None:
        super().__init__(
            shape,
            dt,
            tau_trace=tau_trace,
            trace_scale=trace_scale,
            trace_mode=trace_mode,
            surrogate=surrogate,
        )
        if not isinstance(detach_reset, bool):
            raise TypeError(f"detach_reset must be a bool, got {detach_reset!r}")
        self.detach_reset = detach_reset
        self.register_constant("thresh", thresh)
        self.register_constant("v_rest", v_rest)
        self.register_constant("v_reset", v_reset)
        self.register_constant("tau_v", tau_v, positive=True, allow_inf=True)
        self.register_constant("refrac", refrac, non_negative=True)
        self.register_state("v", "v_rest")
        self.register_state("refrac_count", 0, dtype=torch.int64)
        self.check_constants()

    def check_constants(self, changed: Optional[str] = None) -> None:
        """Warn (``UserWarning``) when ``thresh <= v_reset`` for some neuron (mV): after its first
        spike such a neuron is reset at or above its threshold and fires in every step, the
        refractory period included. Checked at construction, then on assignment of ``thresh`` or
        ``v_reset`` when the assignment creates the problem."""
        if changed not in (None, "thresh", "v_reset") or "v_reset" not in self._constant_specs:
            return
        with torch.no_grad():
            bad = torch.le(self.thresh, self.v_reset)
            count = int(bad.sum())
        was_bad = self.__dict__.get("_fires_always", False)
        self.__dict__["_fires_always"] = count > 0
        if count and not was_bad:
            where = "all neurons" if bad.dim() == 0 else f"{count} neuron(s)"
            warnings.warn(
                f"{type(self).__name__}: thresh <= v_reset for {where} (thresh "
                f"{_describe(self.thresh)} mV, v_reset {_describe(self.v_reset)} mV): after a "
                "spike such a neuron is reset at or above its threshold and fires in every step, "
                "whatever refrac is; set thresh above v_reset",
                UserWarning,
                stacklevel=3,
            )

    _STEP_CONSTANTS = ("tau_v", "v_rest", "v_reset", "thresh", "refrac", "tau_trace", "trace_scale")

    #: A built-in LIF (or IF) neuron takes its single steps through the kernel generated from
    #: its :meth:`step` (as a user's neuron does, see :attr:`Neuron.GENERATE_AFTER`) from its
    #: second step on: its step is known to be generated, bit for bit.
    GENERATE_AFTER: Optional[int] = 1

    def step_parameters(self) -> Tuple[LIFParameters, TraceParameters]:
        """The discretised LIF and trace parameters of the next step (see
        :func:`~pysnn.functional.lif.lif_parameters`), recomputed when a constant changes."""
        if self._parameters:  # some constants may be nn.Parameters
            constants = tuple(map(self._constant, self._STEP_CONSTANTS))
        else:
            constants = tuple(map(self._buffers.__getitem__, self._STEP_CONSTANTS))
        return self.derived("lif", _lif_and_trace_parameters, *constants, self.trace_mode, self.dt)

    @property
    def params(self) -> LIFParameters:
        """The discretised :class:`~pysnn.functional.lif.LIFParameters` of the next step."""
        return self.step_parameters()[0]

    def threshold_offset(self) -> Optional[torch.Tensor]:
        """Offset (mV) added to ``thresh`` in this step; ``None`` here (see
        :class:`AdaptiveLIFNeuron`)."""
        return None

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input ``x`` ``(B, *shape)`` (mV increment) → spikes ``(B, *shape)`` (0/1).

        :func:`~pysnn.functional.lif.lif_step` (the trace updated after it by
        :meth:`Neuron.forward`), or where a backend's fused kernel applies, that kernel for
        the step and its trace (:func:`~pysnn.functional.lif.fused_lif_trace_step`, the same
        values). Repeated single steps go through the kernel generated from this step (see
        :attr:`GENERATE_AFTER`)."""
        state = self._buffers
        params, trace_params = self.step_parameters()
        theta = self.threshold_offset()
        # (before the state is on the call stack: a pending argument is a reference too)
        spare = (self._spare("v"), self._spare("refrac_count"), self._spare("trace"))
        fused = fused_lif_trace_step(
            x,
            state["v"],
            state["refrac_count"],
            state["trace"],
            params,
            trace_params,
            theta,
            spare,
        )
        if fused is not None:
            s, state["v"], state["refrac_count"], state["trace"] = fused
            self.__dict__["_trace_assigned"] = True  # the fused step updated it
            return s
        s, state["v"], state["refrac_count"] = lif_step(
            state["v"],
            x,
            state["refrac_count"],
            params,
            theta,
            self.surrogate,
            self.detach_reset,
        )
        return s

    #: The per-step methods the fused multi-step call reproduces: a subclass overriding one of
    #: them is stepped through (see :func:`pysnn.stepping.block_form_reason`; ``step`` first, the
    #: reason given for :class:`AdaptiveLIFNeuron`, which overrides ``forward`` too).
    BLOCK_REPRODUCES = ("step", "forward", "threshold_offset", "step_parameters", "_prepare")

    def forward_multistep(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``T`` steps, ``(T, B, *shape)`` → ``(T, B, *shape)``, in one fused call where it
        applies (see :meth:`Neuron.forward_multistep`): without a gradient the kernel generated
        from :meth:`step` where its single steps made one (as for any neuron), else the
        hand-written kernel :func:`~pysnn.functional.lif.lif_trace_steps`, which needs no
        generation and under autograd has the fused backward that the generated kernel lacks
        (``benchmarks/hand_written_paths.py``)."""
        self._check_multistep(x)
        if (
            block_form_reason(self, LIFNeuron, LIFNeuron.BLOCK_REPRODUCES) is None
            and self.__dict__.get("_override") is None  # a clamp for the first step only
        ):
            if not _wants_graph(self, x):  # (a kernel its single steps made: generating one
                # costs about 3 ms, which the kernel below saves only over long runs)
                kernel, _ = self.generated_multistep(x, new=False)
                out = None if kernel is None else kernel.run(self, x)
                if out is not None:
                    return out
            n_steps = x.shape[0]
            flat = x.reshape(n_steps * x.shape[1], *x.shape[2:])
            check_input("x", flat, self.shape, self._reference(), type(self).__name__)
            self._prepare(x[0])
            state = self._buffers
            result = lif_trace_steps(
                x,
                state["v"],
                state["refrac_count"],
                state["trace"],
                *self.step_parameters(),
                self.surrogate,
                self.detach_reset,
            )
            if result is not None:
                s, state["v"], state["refrac_count"], state["trace"] = result
                state["spikes"] = s[-1]
                if s.requires_grad:
                    self._count_graph_step(n_steps)
                return s
        return super().forward_multistep(x)  # (a kernel generated from the step, or its loop)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", detach_reset=True" if self.detach_reset else "")


class IFNeuron(LIFNeuron):
    """Integrate-and-fire neuron: :class:`LIFNeuron` without leak (decay factor exactly 1).

    Same arguments as :class:`LIFNeuron` except ``tau_v``: the membrane time constant is fixed to
    infinity (``tau_v`` is a non-persistent buffer, not part of ``state_dict``).
    """

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        thresh: ParamLike = -52.0,
        v_rest: ParamLike = -65.0,
        v_reset: ParamLike = -65.0,
        refrac: ParamLike = 5.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        surrogate: Optional[SurrogateFn] = DEFAULT_SURROGATE,
        detach_reset: bool = False,
    ) -> None:
        super().__init__(
            shape,
            dt,
            thresh=thresh,
            v_rest=v_rest,
            v_reset=v_reset,
            tau_v=math.inf,
            refrac=refrac,
            tau_trace=tau_trace,
            trace_scale=trace_scale,
            trace_mode=trace_mode,
            surrogate=surrogate,
            detach_reset=detach_reset,
        )
        del self._constant_specs["tau_v"]  # fixed: not a constant of the model
        self._non_persistent_buffers_set.add("tau_v")


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

    Attribute ``spike_count_reduce`` (default ``None``): a function applied to the batch-summed
    spike counts ``shape`` before the shared ``theta`` update, e.g. a sum over the processes of
    a data-parallel run (set by :func:`pysnn.distributed.data_parallel`).
    """

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
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
        surrogate: Optional[SurrogateFn] = DEFAULT_SURROGATE,
        detach_reset: bool = False,
    ) -> None:
        super().__init__(
            shape,
            dt,
            thresh=thresh,
            v_rest=v_rest,
            v_reset=v_reset,
            tau_v=tau_v,
            refrac=refrac,
            tau_trace=tau_trace,
            trace_scale=trace_scale,
            trace_mode=trace_mode,
            surrogate=surrogate,
            detach_reset=detach_reset,
        )
        self.theta_shared = bool(theta_shared)
        self.register_constant("theta_plus", theta_plus, non_negative=True)
        self.register_constant("tau_theta", tau_theta, positive=True, allow_inf=True)
        self.spike_count_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
        if self.theta_shared:
            self.register_buffer("theta", self.thresh.new_zeros(self.shape))
        else:
            self.register_state("theta", 0.0)

    def reset_theta(self) -> None:
        """Set the threshold offset ``theta`` back to 0 (its resting value)."""
        if self.theta is not None:
            self.theta = torch.zeros_like(self.theta)

    def threshold_offset(self) -> Optional[torch.Tensor]:
        """The adaptive offset ``theta`` (mV)."""
        return self._buffers["theta"]

    def theta_decay(self) -> torch.Tensor:
        """The relaxation factor of ``theta`` per step, ``exp(-dt / tau_theta)``."""
        return self.derived("theta_decay", exp_decay, self._constant("tau_theta"), self.dt)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One LIF step with threshold ``thresh + theta``, then the update of ``theta``."""
        s = super().step(x)
        state = self._buffers
        theta_decay = self.theta_decay()
        theta_plus = self._constant("theta_plus")
        if not self.theta_shared:
            state["theta"] = adaptive_theta_step(state["theta"], s, theta_decay, theta_plus)
        elif self.training:  # learned from the spikes, not by gradient: no graph kept
            counts = s.sum(0)
            if self.spike_count_reduce is not None:
                counts = self.spike_count_reduce(counts)
            state["theta"] = adaptive_theta_step(
                state["theta"], counts, theta_decay, theta_plus
            ).detach()
        return s

    def extra_repr(self) -> str:
        return super().extra_repr() + f", theta_shared={self.theta_shared}"


def _izhikevich_u0(neuron: "IzhikevichNeuron") -> torch.Tensor:
    """Initial recovery variable ``u = b * v_init``."""
    return neuron.b * neuron.v_init


class IzhikevichNeuron(Neuron):
    r"""Izhikevich (2003) neuron (see :mod:`pysnn.functional.izhikevich`).

    .. math::

        \dot v = 0.04 v^2 + 5 v + 140 - u + I, \quad \dot u = a (b v - u);\quad
        v \ge v_{peak} \Rightarrow v \leftarrow c,\ u \leftarrow u + d

    Args:
        shape: neuron shape without batch.
        dt: time step (ms).
        a, b, c, d: model parameters (defaults: regular spiking 0.02, 0.2, -65 mV, 8; fast
            spiking is 0.1, 0.2, -65, 2). Scalars or per-neuron tensors.
        v_peak: spike cutoff (mV).
        v_init: initial membrane potential (mV); ``u`` starts at ``b * v_init``.
        tau_trace, trace_scale, trace_mode, surrogate: see :class:`Neuron`.

    ``forward(x)``: ``x`` is the input current ``I`` (model units, held over the step) of shape
    ``(B, *shape)``. State: ``v`` (mV), ``u``, ``spikes``, ``trace``.
    """

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        a: ParamLike = 0.02,
        b: ParamLike = 0.2,
        c: ParamLike = -65.0,
        d: ParamLike = 8.0,
        v_peak: ParamLike = 30.0,
        v_init: ParamLike = -65.0,
        tau_trace: ParamLike = 20.0,
        trace_scale: ParamLike = 1.0,
        trace_mode: str = "additive",
        surrogate: Optional[SurrogateFn] = DEFAULT_SURROGATE,
    ) -> None:
        super().__init__(
            shape,
            dt,
            tau_trace=tau_trace,
            trace_scale=trace_scale,
            trace_mode=trace_mode,
            surrogate=surrogate,
        )
        for name, value in (("a", a), ("b", b), ("c", c), ("d", d)):
            self.register_constant(name, value)
        self.register_constant("v_peak", v_peak)
        self.register_constant("v_init", v_init)
        self.register_state("v", "v_init")
        self.register_state("u", _izhikevich_u0)

    @property
    def params(self) -> IzhikevichParameters:
        """The :class:`~pysnn.functional.izhikevich.IzhikevichParameters` of the next step."""
        return IzhikevichParameters(self.a, self.b, self.c, self.d, self.v_peak, self.dt)

    def threshold_offset(self) -> Optional[torch.Tensor]:
        """Offset (mV) added to ``v_peak`` in this step; ``None`` here (a clamp sets it, see
        :mod:`pysnn.forcing`)."""
        return None

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input current ``x`` ``(B, *shape)`` → spikes ``(B, *shape)`` (0/1)."""
        params, offset = self.params, self.threshold_offset()
        if offset is not None:
            params = params._replace(v_peak=params.v_peak + offset)
        s, self.v, self.u = izhikevich_step(self.v, self.u, x, params, self.surrogate)
        return s
