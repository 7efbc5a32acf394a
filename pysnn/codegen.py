"""Generated kernels for user-written neurons: a neuron's ``step``, recorded once, as C or Triton.

A neuron written on the public API (:meth:`~pysnn.neuron.Neuron.register_constant`,
:meth:`~pysnn.neuron.Neuron.register_state`, ``step``) runs its ``step`` as torch operations, a
few small kernels per step. Instead a kernel is **generated** from it, as Brian2 generates code
from a model's equations: inside a layer-wise plan (:mod:`pysnn.engine.plan`) one loop for all
``T`` steps, and in a Python step loop (:meth:`pysnn.neuron.Neuron.forward`, after
:attr:`~pysnn.neuron.Neuron.GENERATE_AFTER` steps) the same kernel for one step at a time, the
state updated in place. This module sits beside the functional layer: the modules and the
engine use it, and it imports neither.

1. **Record.** ``step`` runs once on a copy of the neuron under a
   :class:`~torch.overrides.TorchFunctionMode` that notes every torch operation, the way a JAX
   trace runs a function on concrete values.
2. **Split.** Operations on constants only (``torch.exp(-dt / tau_v)``) are *uniform*: their
   values, computed by torch, are taken as they are and reused while a
   :class:`~pysnn._guards.Guard` says the constants (and ``dt``) are unchanged. Operations on
   the input or the state are *per element*; they become a :class:`Step`, a short list of
   :class:`Op` (operation kind, operands as :class:`Ref`, result ``float`` or ``bool``).
3. **Write** the step's operations, in torch's order and dtype, with a writer for the backend
   that the registry (:mod:`pysnn.backends`) prefers for the input's device:

   - **C** for CPU tensors (the ``"c"`` backend enabled): a loop over steps and elements with
     one C expression per operation, compiled with ``-ffp-contract=off`` by
     :func:`pysnn.native.compile_generated`, so each operation rounds as torch's does;
   - **Triton** (:mod:`pysnn.backends.triton.generated`) for CUDA tensors, and for CPU tensors
     under Triton's interpreter when the preference is exactly ``"triton"`` (as
     :func:`pysnn.backends.triton.usable` accepts them): one program per block of elements
     keeps its state in registers through a loop over the steps.

   The results are the step loop's bit for bit (the tests compare them, the Triton kernels
   under Triton's interpreter).

**The spike trace.** The step loop updates a spiking neuron's trace after each step from its
spikes (:func:`pysnn.functional.trace.trace_step`); without autograd the forward kernel does
it in its loop (:class:`TraceUpdate`) with the built-in trace kernels' operations in their
order: ``trace * decay``, then ``+ trace_scale * spikes`` rounded once where torch's
``addcmul`` is a fused multiply-add (``"additive"``), or ``trace_scale`` where the spikes are
positive (``"reset"``), so bit for bit too. Where the trace needs an autograd graph (under
BPTT, or a trace constant that wants a gradient, see :func:`trace_constants`) it is left to
``trace_step`` after the kernel, as the step loop builds that graph.

Per-element operations that can be generated: ``+ - * /`` (tensor or Python number operands,
the number rounded to the tensor's dtype as torch does; a number divided by a tensor as torch
computes it, the tensor's reciprocal times the number), ``addcmul`` (rounded once where torch
fuses it, as the trace update), negation, ``abs``, comparisons, ``where`` and ``masked_fill``,
``clamp``, conversions between the floating-point dtype and ``bool`` (``fire``'s Heaviside
step), ``detach`` (the same values: the recording runs without gradients). An ``int64``
state (a refractory counter, as :class:`~pysnn.neuron.LIFNeuron`'s) and
``int64`` constants computed from the constants (its reset value) take part in integer
arithmetic, comparisons, ``where`` and ``clamp`` with whole numbers; the C writer then runs a
step in passes over a block of elements, one element type each (see :func:`_c_passes`), and the
Triton writer refuses it. So the built-in LIF and IF neurons' steps are recorded like a
user's, from their torch operations (the recording runs under the registry's ``"torch"``
preference). Anything else (a transcendental function of the state such as
``torch.exp(v)``, whose vectorised torch result can differ from C's in the last bit; an
in-place operation; a read of a value back to Python; another integer operation; a random
draw, which the step loop makes anew at every step; a call of a function the neuron holds,
such as a collective over processes) keeps the neuron on its torch step, and
:func:`pysnn.engine.explain` says which operation.

**Per-neuron state.** A buffer that is not declared state but that the step assigns, one value
per neuron shared by the batch (:class:`~pysnn.neuron.AdaptiveLIFNeuron`'s shared ``theta``),
is state of the kernel (:attr:`Step.shared`), not a constant: its old values are read per
element, and its new values are computed once per neuron after every element of the step (the
neuron pass), from per-neuron values and ``spikes.sum(0)``, the sum over the batch of the
step's 0/1 spikes, exact in any order as torch's is. The kernel's guard leaves it out; a
buffer the step only reads (a shared ``theta`` in ``eval()`` mode) is a constant, guarded.
Such a kernel runs the steps one after the other, each over all elements and then its
neurons; the Triton writer refuses it, and it has no backward kernel (the buffer is learned
from the spikes, not by gradient).

A step that returns its input itself (:class:`~pysnn.neuron.Input`) stores no spikes in a
single step: the caller returns the input, as the torch step does.

**Gradients.** ``fire`` is recorded as one operation with the neuron's surrogate (a built-in
:mod:`pysnn.surrogate` class, or none). Under autograd the forward kernel keeps each step's
state, and a generated backward kernel, C or Triton, recomputes each step from it and applies
each operation's adjoint (:meth:`Op.adjoints`, shared by both writers) in reverse:
backpropagation through time. Both kernels have one calling convention (:data:`Launch`,
:data:`Gradient`). The gradients equal the step loop's up to rounding (the tests compare them
to 1e-12 in float64, the Triton kernels under Triton's interpreter, and to 1e-5 in float32). A
neuron with an ``nn.Parameter`` constant, another surrogate, or a Heaviside step written
outside ``fire`` (a ``bool`` converted to the dtype, as :func:`pysnn.functional.spike.spike`
writes it: its surrogate is applied only under autograd, unseen by the recording) runs its
torch step under autograd (:meth:`Step.differentiable`).
"""

from __future__ import annotations

import copy
import ctypes
import math
import types
from dataclasses import dataclass, field
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch.overrides import TorchFunctionMode

from pysnn import backends, native
from pysnn._checks import check_input, nonfinite
from pysnn._guards import Guard, fingerprint
from pysnn.functional.trace import trace_step

if TYPE_CHECKING:  # pragma: no cover - annotations only (the neuron module imports this one)
    from pysnn.neuron import Neuron

__all__ = [
    "NeuronKernel",
    "Op",
    "Ref",
    "Step",
    "TraceConstants",
    "TraceUpdate",
    "generate",
    "trace_constants",
]

#: binary per-element operations, by the name of the torch function or tensor method the
#: recorder sees: the :class:`Op` kind, and whether its operands are the call's swapped
#: (``2.0 - v`` is recorded as ``__rsub__(v, 2.0)``)
_BINARY: Dict[str, Tuple[str, bool]] = {
    "add": ("add", False),
    "__radd__": ("add", True),
    "sub": ("sub", False),
    "__rsub__": ("sub", True),
    "mul": ("mul", False),
    "__rmul__": ("mul", True),
    "div": ("div", False),
    "true_divide": ("div", False),
    "ge": ("ge", False),
    "gt": ("gt", False),
    "le": ("le", False),
    "lt": ("lt", False),
    "eq": ("eq", False),
    "ne": ("ne", False),
    "logical_and": ("and", False),
    "logical_or": ("or", False),
    "__and__": ("and", False),
    "__or__": ("or", False),
}
_UNARY: Dict[str, str] = {
    "neg": "neg",
    "negative": "neg",
    "logical_not": "not",
    "__invert__": "not",
}
#: C templates of the binary and unary kinds over the operands ``a`` and ``b``
_C_TEMPLATES: Dict[str, str] = {
    "add": "({a} + {b})",
    "sub": "({a} - {b})",
    "mul": "({a} * {b})",
    "div": "({a} / {b})",
    "ge": "({a} >= {b})",
    "gt": "({a} > {b})",
    "le": "({a} <= {b})",
    "lt": "({a} < {b})",
    "eq": "({a} == {b})",
    "ne": "({a} != {b})",
    "and": "({a} && {b})",
    "or": "({a} || {b})",
    "neg": "(-{a})",
    "not": "(!{a})",
}
_CTYPES = {torch.float32: "float", torch.float64: "double"}
_IGNORED = (type(None), bool, int, float, str, torch.dtype, torch.device, torch.Size, tuple)


@dataclass(frozen=True)
class Ref:
    """An operand of a recorded operation.

    Attributes:
        kind: ``"x"`` (the step's input), ``"state"`` (state ``index``), ``"shared"``
            (per-neuron state ``index``, see :attr:`Step.shared`), ``"uniform"`` (uniform
            ``index``), ``"value"`` (the result of operation ``index``), ``"batch"`` (the
            result of the neuron pass's operation ``index``, see :attr:`Step.batch_ops`) or
            ``"number"`` (the finite Python number or ``bool`` ``value``).
    """

    kind: str
    index: int = 0
    value: Union[bool, float] = 0.0


@dataclass(frozen=True)
class Op:
    """One per-element operation of a step.

    Attributes:
        kind: ``add sub mul div`` (arithmetic), ``ge gt le lt eq ne`` (comparisons),
            ``and or not`` (logic), ``neg``, ``abs``, ``where`` (condition, then, else),
            ``clamp`` (value, lower bound, upper bound; a bound not given is ``None``),
            ``fire`` (the Heaviside step ``z >= 0`` in the floating-point dtype), ``madd``
            (``a * b + c``, rounded as torch's ``addcmul``), ``float`` or ``bool`` (a
            conversion), ``batch_sum`` (in :attr:`Step.batch_ops` only: the sum over the batch
            of the step's 0/1 spikes, per neuron).
        args: the operands, in the order of the written expression.
        result: ``"float"`` (the step's dtype), ``"bool"`` or ``"int"`` (``int64``: an
            integer state such as a refractory counter, never differentiated).
    """

    kind: str
    args: Tuple[Optional[Ref], ...]
    result: str

    def adjoints(
        self,
        operands: List[Optional[str]],
        grads: List[Optional[str]],
        g: str,
        surrogate: Callable[[str], str],
        dialect: Any,
    ) -> List[str]:
        """The backward statements of this operation: what it adds to its operands' adjoints
        ``grads`` (``None``: no gradient wanted), given its own adjoint ``g``, its operands'
        expressions ``operands``; ``surrogate`` writes the surrogate derivative at an
        expression, ``dialect`` the statements and expressions of a backend (the C writer's
        :class:`_CDialect`, the Triton writer's own), so that both writers apply the same
        adjoints in the same order."""
        a, ga = operands[0], grads[0]
        if self.kind in ("add", "sub", "mul", "div"):
            return _binary_adjoints(self.kind, a, operands[1], g, ga, grads[1], dialect)
        lines = []
        if self.kind == "madd":  # a * b + c
            lines += [dialect.add(ga, dialect.mul(g, operands[1]))] if ga else []
            lines += [dialect.add(grads[1], dialect.mul(g, a))] if grads[1] else []
            lines += [dialect.add(grads[2], g)] if grads[2] else []
        elif self.kind == "fire" and ga:
            lines.append(dialect.add(ga, dialect.mul(g, surrogate(a))))
        elif self.kind == "neg" and ga:
            lines.append(dialect.sub(ga, g))
        elif self.kind == "where":
            if grads[1]:
                lines.append(dialect.add(grads[1], g, a))
            if grads[2]:
                lines.append(dialect.add(grads[2], g, dialect.negate(a)))
        elif self.kind == "abs" and ga:
            lines.append(dialect.add(ga, dialect.sign(a, g)))
        elif self.kind == "clamp" and ga:
            lo, hi = operands[1], operands[2]
            inside = ([f"{a} >= {lo}"] if lo is not None else []) + (
                [f"{a} <= {hi}"] if hi is not None else []
            )
            lines.append(dialect.add(ga, g, dialect.all(inside)))
        elif self.kind == "float" and ga:
            lines.append(dialect.add(ga, g))
        return lines  # comparisons and logical operations: no gradient


@dataclass
class Step:
    """A neuron's step, recorded: what the C and Triton writers read.

    Attributes:
        neuron: the neuron's class name.
        dtype: the floating-point dtype of the input and the state.
        states: the state variables (state ``k`` is ``states[k]``).
        ops: the per-element operations, in torch's order (``Ref("value", k)`` is ``ops[k]``).
        uniforms: the uniform values: flat, contiguous tensors of ``dtype`` on the input's
            device, of one value or one per neuron (``per_neuron``).
        per_neuron: for each uniform, whether it has one value per neuron.
        spikes: what ``step`` returns.
        updated: the new value of each state the step assigns, by state index.
        surrogate: the neuron's surrogate (``fire``'s gradient).
        integer: the states and uniforms (``("state", k)``, ``("uniform", k)``) that are
            ``int64`` (a refractory counter and its reset value), not ``dtype``.
        shared: the per-neuron states (shape ``shape``, no batch dimension, of ``dtype``):
            buffers other than the declared state that the step assigns, such as
            :class:`~pysnn.neuron.AdaptiveLIFNeuron`'s shared ``theta``. Their old values
            are read per element; their new values are computed after every element of the
            step, once per neuron (the neuron pass).
        per_neuron_values: the operations of :attr:`ops` whose values are per neuron (they
            read per-neuron states, uniforms and numbers only): the neuron pass may compute
            them again.
        batch_ops: the operations of the neuron pass (``Ref("batch", k)`` is
            ``batch_ops[k]``): a ``batch_sum`` of the spikes, and what is computed from it.
        shared_updated: the new value of each per-neuron state, by index.
    """

    neuron: str
    dtype: torch.dtype
    states: List[str]
    ops: List[Op]
    uniforms: List[torch.Tensor]
    per_neuron: List[bool]
    spikes: Ref
    updated: Dict[int, Ref]
    surrogate: Any
    integer: frozenset = frozenset()
    shared: List[str] = field(default_factory=list)
    per_neuron_values: frozenset = frozenset()
    batch_ops: List[Op] = field(default_factory=list)
    shared_updated: Dict[int, Ref] = field(default_factory=dict)

    @property
    def returns_input(self) -> bool:
        """Whether ``step`` returns its input itself (as :class:`~pysnn.neuron.Input` does):
        a single step then stores no spikes, the caller has them."""
        return self.spikes.kind == "x"

    def result(self, ref: Ref) -> str:
        """``"float"``, ``"bool"`` or ``"int"``: what ``ref`` holds (a uniform is read as
        ``dtype`` unless ``int64``; a number as ``float`` unless a ``bool``)."""
        if ref.kind == "value":
            return self.ops[ref.index].result
        if ref.kind == "batch":
            return self.batch_ops[ref.index].result
        if ref.kind == "number" and isinstance(ref.value, bool):
            return "bool"
        if (ref.kind, ref.index) in self.integer:
            return "int"
        return "float"

    def gradient(self, ref: Optional[Ref]) -> Optional[str]:
        """The adjoint variable of an operand in a backward kernel, C or Triton (``None``: no
        gradient, a uniform, a number or a ``bool`` value)."""
        if ref is None:
            return None
        if ref.kind == "x":
            return "g_in_x"
        if ref.kind == "state":
            return f"g_s{ref.index}"
        if ref.kind == "value" and self.ops[ref.index].result == "float":
            return f"g_e{ref.index}"
        return None

    def seeds(self) -> Tuple[Optional[str], List[Tuple[str, int]]]:
        """Where the upstream gradients enter a backward step: the adjoint of the spikes
        (``None``: the spikes have no gradient), and for each state ``k`` the adjoint that
        receives the gradient of its new value (its own ``g_s{k}`` where the step leaves it
        as it is), as ``(adjoint, k)``."""
        targets = [
            (self.gradient(self.updated.get(k)) or f"g_s{k}", k) for k in range(len(self.states))
        ]
        return self.gradient(self.spikes), targets

    def surrogate_form(self) -> Optional[Tuple[int, float]]:
        """The surrogate derivative that :meth:`~pysnn.neuron.Neuron.fire` uses, as the
        writers write it: ``(code, parameter)`` of a built-in :mod:`pysnn.surrogate` class (its
        ``native_code``, 1 to 5, on its own exact class), ``(0, 0.0)`` for no surrogate (no
        gradient), ``None`` where it cannot be written (another class: a user's, a subclass)."""
        if self.surrogate is None:
            return 0, 0.0
        code = type(self.surrogate).__dict__.get("native_code")
        if code not in (1, 2, 3, 4, 5):
            return None
        return code, float(self.surrogate.param)

    def differentiable(self) -> bool:
        """Whether a backward kernel is written (by either writer): the spikes' gradient is
        wanted (they are a floating-point value), the surrogate derivative can be written, and
        no ``bool`` value is converted to the dtype where the neuron has a surrogate: such a
        Heaviside step written outside ``fire`` (as :func:`pysnn.functional.spike.spike`,
        which applies the surrogate only under autograd, so the recorded step does not show
        it) may carry the surrogate's gradient in the torch step, and the kernel would drop it."""
        heaviside = self.surrogate is not None and any(
            op.kind == "float" and self.result(op.args[0]) == "bool" for op in self.ops
        )
        return (
            not self.integer  # (an integer state: no history of it is kept, see _GeneratedSteps)
            and not self.shared  # (learned from the spikes, not by gradient: no adjoint kept)
            and self.gradient(self.spikes) is not None
            and self.surrogate_form() is not None
            and not heaviside
        )


class _Record(TorchFunctionMode):
    """Notes each torch operation: ``(function, args, kwargs, result)``, and the first one that
    draws random numbers (it changes the default generator's state, or is given a generator):
    a draw cannot be kept as a value, since the step loop draws anew at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: List[Tuple[Any, tuple, dict, Any]] = []
        self.random: Optional[str] = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        before = torch.random.get_rng_state() if self.random is None else None
        out = func(*args, **kwargs)
        if before is not None and (
            kwargs.get("generator") is not None
            or not torch.equal(before, torch.random.get_rng_state())
        ):
            self.random = getattr(func, "__name__", str(func))
        self.ops.append((func, args, kwargs, out))
        return out


class _Refused(Exception):
    """The step cannot be generated (the message says why)."""


class TraceConstants(NamedTuple):
    """The constants of a neuron's spike-trace update (:func:`pysnn.functional.trace.trace_step`)
    as a generated forward kernel reads them (see :func:`trace_constants`).

    Attributes:
        table: ``(2, n)`` contiguous, of the kernel's dtype and device: the decay
            ``exp(-dt / tau_trace)`` (row 0) and ``trace_scale`` (row 1) of each neuron.
        additive: ``True`` for ``"additive"``, ``False`` for ``"reset"``.
    """

    table: torch.Tensor
    additive: bool


class TraceUpdate(NamedTuple):
    """The spike trace a generated forward kernel updates after each step, in its loop, with
    the operations of :func:`pysnn.functional.trace.trace_step` in their order (the additive
    sum rounded once where torch's ``addcmul`` fuses it), from the step's spikes.

    Attributes:
        trace: ``(B, *shape)`` contiguous, of the kernel's dtype and device, updated in place.
        constants: the update's :class:`TraceConstants`.
    """

    trace: torch.Tensor
    constants: TraceConstants


#: a generated forward kernel: ``(steps, size, n, x, out, states, uniforms, history, trace)``,
#: with ``size = B * n`` elements per step; ``states`` updated in place, ``history`` (``None``
#: entries: not kept) receiving each step's state before the step, ``trace`` (``None``: no
#: trace update in the loop) the spike trace updated in place after each step
Launch = Callable[
    [
        int,
        int,
        int,
        torch.Tensor,
        torch.Tensor,
        Sequence[torch.Tensor],
        Sequence[torch.Tensor],
        Sequence[Optional[torch.Tensor]],
        Optional[TraceUpdate],
    ],
    None,
]
#: a generated backward kernel (BPTT): ``(steps, size, n, x, g_out, g_x, g_states, uniforms,
#: history)``: ``g_out`` the spikes' gradient, ``g_x`` receiving the input's, ``g_states`` the
#: gradients of the states after the last step, replaced in place by those of the states before
#: the first; ``history`` the forward's (each step's state before the step)
Gradient = Callable[
    [
        int,
        int,
        int,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        Sequence[torch.Tensor],
        Sequence[torch.Tensor],
        Sequence[torch.Tensor],
    ],
    None,
]


@dataclass
class NeuronKernel:
    """A generated ``T``-step kernel of one neuron class and configuration.

    Attributes:
        source: the C or Triton source.
        states: the state variables the step updates, in the kernel's argument order: those
            of the batch's shape, then the per-neuron ones (:attr:`Step.shared`).
        uniforms: the uniform values (tensors computed by torch from the constants).
        guard: watches what the recording read as constants (see :func:`generate`).
        dt: the neuron's ``dt`` when generated.
        dtype: the dtype of the input and the state.
        function: the forward kernel (see :data:`Launch`).
        gradient: the backward kernel (see :data:`Gradient`; ``None``: no gradient, the torch
            step runs under autograd).
        backend: the writer, ``"c"`` or ``"triton"``.
        device: the device it runs on.
        returns_input: the step returns its input itself (:attr:`Step.returns_input`).
        max_batch: the largest batch it runs (``None``: any), where the step sums its spikes
            over the batch: beyond it the sums would not be exact, as torch's are not.
    """

    source: str
    states: List[str]
    uniforms: List[torch.Tensor]
    guard: Guard
    dt: float
    dtype: torch.dtype
    function: Launch
    gradient: Optional[Gradient] = None
    backend: str = "c"
    device: torch.device = torch.device("cpu")
    returns_input: bool = False
    max_batch: Optional[int] = None

    def fits(self, batch: int) -> bool:
        """Whether it runs steps of ``batch`` samples."""
        return self.max_batch is None or batch <= self.max_batch

    def applies(self, neuron: Neuron, x: torch.Tensor) -> bool:
        """Whether this kernel may run ``neuron`` on ``x`` ``(T, B, *shape)`` now: the same
        constants (bytes) and ``dt`` as when generated, the kernel's dtype and device, no
        gradient needed unless it has a backward kernel (and no learned constant, whose
        gradient only the torch step gives, wants one, even with an input that wants none),
        no clamp pending, a batch it runs (:meth:`fits`)."""
        graph = torch.is_grad_enabled() and (
            x.requires_grad
            or any(p.requires_grad for p in neuron._parameters.values())
            or any(
                neuron._buffers[s].requires_grad
                for s in self.states
                if neuron._buffers.get(s) is not None
            )
        )
        return (
            x.dtype is self.dtype
            and x.device == self.device
            and not (graph and (self.gradient is None or neuron._parameters))
            and neuron.dt == self.dt
            and neuron.__dict__.get("_override") is None
            and not torch.compiler.is_compiling()
            and self.fits(x.shape[1])
            and self.guard.holds()
        )

    def single_step(self, size: int, n: int, trace: Optional[TraceConstants]) -> Callable[
        [
            torch.Tensor,
            Optional[torch.Tensor],
            Sequence[torch.Tensor],
            Optional[torch.Tensor],
            bool,
        ],
        bool,
    ]:
        """One step of this kernel as a function ``(x, out, states, tr, check) -> refused``
        for inputs of ``size`` elements, ``n`` per sample: the spikes stored to ``out``
        (``None`` where the step returns its input, :attr:`returns_input`: none stored), the
        states (in :attr:`states`' order) updated in place, no history, the spike trace ``tr``
        updated in place with the constants ``trace`` (``None``: no trace update; then ``tr``
        is ``None``). With ``check``, an input holding a NaN or an infinity is refused first:
        nothing is written, and the function returns ``True`` (the C kernel checks it in one
        vectorised pass, cheaper than torch's sum). For a caller that runs many single steps
        (:meth:`pysnn.neuron.Neuron.forward`): what does not change between them (the
        uniforms' and the trace constants' addresses) is bound once."""
        raw = getattr(self.function, "c_step", None)
        if raw is None:  # (Triton)
            function, uniforms, history = self.function, self.uniforms, [None] * len(self.states)

            def call(x, out, states, tr, check) -> bool:
                if check and nonfinite(x):
                    return True
                update = None if tr is None else TraceUpdate(tr, trace)  # type: ignore[arg-type]
                out = torch.empty_like(x) if out is None else out  # (stored, not read)
                function(1, size, n, x, out, states, uniforms, history, update)
                return False

            return call
        addresses = [u.data_ptr() for u in self.uniforms]
        addresses += [0, 0] if trace is None else [trace.table.data_ptr(), int(trace.additive)]
        fixed = torch.tensor(addresses, dtype=torch.int64)
        kept = (self.uniforms, trace, fixed)  # (alive while the function is)
        fixed_address = fixed.data_ptr()
        address = torch.Tensor.data_ptr

        def call(x, out, states, tr, check) -> bool:
            return raw(
                size,
                n,
                x.data_ptr(),
                None if out is None else out.data_ptr(),
                *map(address, states),
                None if tr is None else tr.data_ptr(),
                fixed_address,
                check,
                _threads(),
            )

        call.kept = kept  # type: ignore[attr-defined]
        return call

    def run(self, neuron: Neuron, x: torch.Tensor) -> torch.Tensor:
        """``T`` steps of ``neuron`` on ``x`` ``(T, B, *shape)``: its spikes ``(T, B, *shape)``,
        its state left as after ``T`` calls (the trace updated step by step as
        :meth:`~pysnn.neuron.Neuron.forward` does: in the kernel's loop without autograd where
        :func:`trace_constants` allows it, else by :func:`~pysnn.functional.trace.trace_step`
        after the kernel, which keeps the trace's gradient under autograd)."""
        steps, batch = x.shape[0], x.shape[1]
        flat = x.reshape(steps * batch, *x.shape[2:])
        check_input("x", flat, neuron.shape, neuron._reference(), type(neuron).__name__)
        neuron._prepare(x[0])
        x = x.contiguous()
        buffers = neuron._buffers
        n = math.prod(neuron.shape)
        inputs = [buffers[name] for name in self.states]
        update = None
        if torch.is_grad_enabled() and (x.requires_grad or any(s.requires_grad for s in inputs)):
            out, *states = _GeneratedSteps.apply(self, n, x, *inputs)
            neuron._count_graph_step(steps)
        else:
            states = [s.clone() for s in inputs]  # replaced, never edited
            out = torch.empty_like(x)
            constants = trace_constants(neuron, x[0])
            if constants is not None:  # the trace in the loop, into a tensor only it can see
                trace = neuron._spare("trace")
                trace = buffers["trace"].clone() if trace is None else trace
                update = TraceUpdate(trace, constants)
            history = [None] * len(states)
            self.function(steps, batch * n, n, x, out, states, self.uniforms, history, update)
        for name, value in zip(self.states, states):
            buffers[name] = value
        if neuron.spiking:
            if update is not None:
                buffers["trace"] = update.trace
            else:
                params = neuron.trace_parameters()
                trace = trace_step(buffers["trace"], out[0], params, neuron._spare("trace"))
                for t in range(1, steps):
                    trace = trace_step(trace, out[t], params, trace)
                buffers["trace"] = trace
            buffers["spikes"] = out[-1]
        return out


def trace_constants(neuron: Neuron, example: torch.Tensor) -> Optional[TraceConstants]:
    """The constants with which a generated forward kernel updates ``neuron``'s spike trace in
    its loop, for step inputs like ``example`` ``(B, *shape)`` (see :class:`TraceUpdate`), or
    ``None`` where the trace is left to :func:`~pysnn.functional.trace.trace_step` after each
    step, as the step loop updates it: a neuron without a trace; a trace that is not a
    contiguous tensor of ``example``'s shape, dtype and device, or that carries an autograd
    graph while gradients are on (the step loop extends it); a trace constant that wants a
    gradient (a learned ``tau_trace``), or not of ``example``'s dtype and device, or not
    broadcastable to the neuron shape.

    The values are :meth:`~pysnn.neuron.Neuron.trace_parameters`' now: a caller keeping them
    across calls must check that the constants and ``dt`` are unchanged (as a kernel's
    :class:`~pysnn._guards.Guard` does) and drop them when ``trace_mode`` is assigned.
    """
    if not neuron.spiking:
        return None
    trace = neuron._buffers.get("trace")
    if (
        trace is None
        or trace.dtype is not example.dtype
        or trace.device != example.device
        or trace.shape != example.shape
        or not trace.is_contiguous()
        or (torch.is_grad_enabled() and trace.requires_grad)
    ):
        return None
    params = neuron.trace_parameters()
    shape = torch.Size(neuron.shape)
    rows = []
    for value in (params.decay, params.scale):
        if (
            not isinstance(value, torch.Tensor)
            or value.requires_grad
            or value.dtype is not example.dtype
            or value.device != example.device
            or value.dim() > len(shape)
            or any(a not in (1, b) for a, b in zip(reversed(value.shape), reversed(shape)))
        ):
            return None
        rows.append(value.broadcast_to(shape).reshape(shape.numel()))
    return TraceConstants(torch.stack(rows), bool(params.additive))


def generate(neuron: Neuron, example: torch.Tensor) -> Tuple[Optional[NeuronKernel], str]:
    """Generate the ``T``-step kernel of ``neuron`` for step inputs like ``example``
    ``(B, *shape)``, as C or Triton (see the module); ``(None, why not)`` where it cannot be
    generated."""
    try:
        step = _record(neuron, example)  # (first: what the model itself rules out)
        backend = _writer(example)
        gradient = None
        if backend == "c":
            source, function, gradient = _c_kernel(step)
        else:
            try:  # (the registry's Triton backend: _writer saw it accept the example)
                writer = backends.get("triton").triton_kernel
                source, function, gradient = writer(step, example.device)
            except ValueError as err:
                raise _Refused(str(err)) from None
    except _Refused as why:
        return None, str(why)
    kernel = NeuronKernel(
        source=source,
        states=step.states + step.shared,
        uniforms=step.uniforms,
        guard=Guard(_read_as_constants(neuron, exclude=step.shared)),
        dt=neuron.dt,
        dtype=step.dtype,
        function=function,
        gradient=gradient,
        backend=backend,
        device=example.device,
        returns_input=step.returns_input,
        max_batch=_EXACT_COUNTS[step.dtype] if step.batch_ops else None,
    )
    return kernel, ""


def _read_as_constants(neuron: Neuron, exclude: Sequence[str] = ()) -> List[torch.Tensor]:
    """What the recording may read as constants (uniforms): the neuron's buffers other than
    its state and ``exclude`` (its per-neuron state, :attr:`Step.shared`): its constants, and
    any other buffer, such as a fixed ``tau_v`` or a shared ``theta`` that the step only reads
    (:class:`~pysnn.neuron.AdaptiveLIFNeuron` in ``eval()`` mode), and its parameters. A
    kernel's guard watches them all."""
    states = neuron._state_specs
    tensors = [
        t
        for k, t in neuron._buffers.items()
        if k not in states and k not in exclude and t is not None
    ]
    return tensors + [t for t in neuron._parameters.values() if t is not None]


def _writer(example: torch.Tensor) -> str:
    """The writer for step inputs like ``example``: ``"c"`` for CPU tensors where the C backend
    is enabled, ``"triton"`` where the Triton backend accepts them (CUDA tensors; CPU tensors
    under Triton's interpreter when the preference is exactly ``("triton",)``, so that the
    default preference keeps C on the CPU)."""
    if example.dtype not in _CTYPES:
        raise _Refused("generated kernels are for float32/float64 tensors")
    if example.is_cpu and backends.enabled("c"):
        return "c"
    triton_first = not example.is_cpu or backends.preference() == ("triton",)
    if triton_first and backends.accepts("triton", example.detach()):
        return "triton"
    if example.is_cpu:
        raise _Refused(
            "no C compiler or fused kernels off (PYSNN_NATIVE=0), and the Triton backend does "
            "not run CPU tensors here (it needs TRITON_INTERPRET=1 and PYSNN_BACKEND=triton)"
        )
    raise _Refused(f"no backend generates kernels for {example.device.type} tensors here")


#: what a neuron's step changes besides its state without changing what the step computes
_STEP_BOOKKEEPING = frozenset(
    (
        "_fast",
        "_trace_assigned",
        "_derived_cache",
        "_graph_steps",
        "_general_steps",
        "_kept_kernel",
    )
)
_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def _attributes(neuron: Neuron) -> Dict[str, Any]:
    """Each attribute of ``neuron`` other than its state, as something that changes when the
    attribute is assigned or (containers, tensors) edited: values of plain attributes, identity
    and length of containers, identity and version (:func:`pysnn._guards.fingerprint`) of
    tensors (its constants included)."""
    seen: Dict[str, Any] = {}
    for key, value in neuron.__dict__.items():
        if key in _STEP_BOOKKEEPING or key in ("_buffers", "_parameters", "_modules"):
            continue
        if isinstance(value, _PLAIN):
            seen[key] = (type(value), value)
        elif isinstance(value, torch.Tensor):
            seen[key] = (id(value), fingerprint(value))
        elif isinstance(value, (list, dict, set, tuple)):
            seen[key] = (id(value), len(value))
        else:
            seen[key] = (id(value),)
    states = neuron._state_specs
    for key, value in (*neuron._buffers.items(), *neuron._parameters.items()):
        if key not in states and value is not None:
            seen[key] = (id(value), fingerprint(value))
    return seen


#: values a step may read from outside its neuron without freezing anything: code, not data
_CODE_TYPES = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type, property)
_DATA_TYPES = (bool, int, float, complex, str, torch.Tensor, list, dict, set, bytearray)


def _outside_reads(neuron: Neuron) -> Optional[str]:
    """What the step code of ``neuron``'s own classes reads that a kernel would keep as
    recorded while the step loop re-reads it every step: a global or closure variable holding
    data (a number, a tensor, a container), or a data attribute of the class (``self.GAIN``
    declared on the class, which an assignment ``Cls.GAIN = ...`` changes without the neuron
    seeing it), or an attribute holding an object or container whose contents can change
    without an assignment to the neuron. ``None`` where there is none. The methods of the user's classes (not pysnn's,
    not torch's; not ``__init__`` and the other dunders) are read, nested functions and
    comprehensions included."""
    for key, value in neuron.__dict__.items():
        if key.startswith("_") or key == "surrogate" or value is None:
            continue  # (pysnn's bookkeeping; the surrogate is recorded with fire)
        if isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value):
            continue  # immutable: an assignment replaces it, and drops the kernel
        if isinstance(value, (*_PLAIN, torch.Tensor)) or callable(value):
            continue
        return (
            f"{type(neuron).__name__} holds {key!r} ({type(value).__name__}), whose contents "
            "can change unseen: a value the step reads through it"
        )
    cls = type(neuron)
    for owner in cls.__mro__:
        module = getattr(owner, "__module__", "") or ""
        if owner is object or module.split(".")[0] in ("pysnn", "torch"):
            continue
        for name, member in vars(owner).items():
            if name.startswith("__") or name in ("extra_repr", "reset_parameters"):
                continue  # (construction and printing: not the step)
            function = getattr(member, "__func__", member)
            code = getattr(function, "__code__", None)
            if code is not None:
                why = _code_reads(function, code, cls)
                if why:
                    return f"{owner.__name__}.{name} {why}"
    return None


def _code_reads(function: Any, code: types.CodeType, cls: type) -> Optional[str]:
    names = set(code.co_names)
    glob = getattr(function, "__globals__", {})
    for name in sorted(names):
        value = glob.get(name, None) if name in glob else None
        if name in glob and isinstance(value, _DATA_TYPES):
            return f"reads the global {name!r}"
        for base in cls.__mro__:
            if name in vars(base):
                attribute = vars(base)[name]
                if isinstance(attribute, _DATA_TYPES) and base is not object:
                    return f"reads the class attribute {name!r}"
                break
    for cell, name in zip(getattr(function, "__closure__", None) or (), code.co_freevars):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, _DATA_TYPES):
            return f"reads the closure variable {name!r}"
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            why = _code_reads(function, const, cls)
            if why:
                return why
    return None


def _record(neuron: Neuron, example: torch.Tensor) -> Step:
    """Run ``neuron``'s step once on a copy, on ``example``, and keep its per-element
    operations (see the module)."""
    dtype = example.dtype
    outside = _outside_reads(neuron)
    if outside:
        raise _Refused(f"{outside}; a generated kernel would keep its value as recorded")
    if any(True for _ in neuron.children()):
        raise _Refused(f"{type(neuron).__name__} holds other modules (their state is not its own)")
    held = _held_functions(neuron)
    try:  # (the functions the neuron holds are shared, not copied: see _held_functions)
        twin = copy.deepcopy(neuron, {id(function): function for function in held.values()})
    except RuntimeError as err:  # (a state that carries an autograd graph)
        raise _Refused(f"the neuron cannot be copied to record its step: {err}") from None
    twin.reset_state()
    twin._prepare(example)
    names = [n for n in twin._state_specs if n not in ("spikes", "trace")]
    before = {name: twin._buffers[name] for name in names}
    for name, value in before.items():
        if (
            value.dtype not in (dtype, torch.int64)
            or not value.is_contiguous()
            or value.shape != example.shape
        ):
            raise _Refused(
                f"state {name!r} is not a contiguous {dtype} (or int64) tensor of the input's "
                "shape"
            )
    # the other buffers: those the step assigns are its per-neuron state (Step.shared)
    others = {
        k: t for k, t in twin._buffers.items() if k not in twin._state_specs and t is not None
    }
    kept = {name: twin._buffers[name] for name in ("spikes", "trace") if name in twin._buffers}
    x = example.detach().clone()
    record = _Record()

    def fire(z: torch.Tensor) -> torch.Tensor:  # the spike, recorded as one operation
        with torch._C.DisableTorchFunction():
            spike = (z >= 0).to(z.dtype)
        record.ops.append(("fire", (z,), {}, spike))
        return spike

    twin.fire = fire
    for key in held:
        twin.__dict__[key] = partial(_refuse_call, key)
    attributes = _attributes(twin)
    # the torch step, the reference a kernel must reproduce (a built-in neuron's step calls the
    # functional layer, which would otherwise run its own fused kernels); draws nothing for real
    with torch.no_grad(), torch.random.fork_rng(devices=[]), backends.prefer("torch"), record:
        spikes = twin.step(x)
    if record.random is not None:
        raise _Refused(
            f"step draws random numbers ({record.random}); the step loop draws anew every step"
        )
    shape = torch.Size(neuron.shape)
    shared = [k for k, t in others.items() if twin._buffers.get(k) is not t]
    for name in shared:
        value = others[name]
        if value.dtype is not dtype or not value.is_contiguous() or value.shape != shape:
            raise _Refused(
                f"step assigns {name!r}, which is neither registered state nor a contiguous "
                f"{dtype} tensor of the neuron shape {tuple(shape)} (a per-neuron state)"
            )
    after = _attributes(twin)
    changed = sorted(
        k
        for k in set(attributes) | set(after)
        if attributes.get(k) != after.get(k) and k not in shared
    )
    if changed:  # a counter, a flag, a list: the kernel would keep the value it was recorded with
        raise _Refused(f"step changes {', '.join(changed)}, which is not registered state")
    for name, value in kept.items():
        if twin._buffers[name] is not value:
            raise _Refused(f"step assigns {name!r} itself")
    constants = _read_as_constants(twin, exclude=shared)
    # what a per-element operation may read as uniform: the constants, and what torch computed
    # from them (and from numbers) alone during the step
    allowed = {id(t) for t in constants}
    element: Dict[int, Ref] = {id(x): Ref("x")}  # tensor id -> the operand it is
    # where each operand is computed: "element" (per element), "neuron" (per neuron, from the
    # per-neuron state, uniforms and numbers) or "batch" (per neuron, from a batch sum)
    level: Dict[Ref, str] = {Ref("x"): "element"}
    integer = set()  # ("state", k) and ("uniform", k) of dtype int64
    for k, name in enumerate(names):
        element[id(before[name])] = Ref("state", k)
        level[Ref("state", k)] = "element"
        if before[name].dtype is torch.int64:
            integer.add(("state", k))
    for k, name in enumerate(shared):
        element[id(others[name])] = Ref("shared", k)
        level[Ref("shared", k)] = "neuron"
    uniforms: List[torch.Tensor] = []
    per_neuron: List[bool] = []
    uniform_index: Dict[int, Ref] = {}
    ops: List[Op] = []
    batch_ops: List[Op] = []
    per_neuron_values = set()  # the ops whose values are per neuron
    n = math.prod(neuron.shape)
    keep: List[Any] = []  # the recorded tensors stay alive: their ids stay unique

    def operand(value: Any) -> Ref:
        if isinstance(value, torch.Tensor):
            if id(value) in element:
                return element[id(value)]
            if value.dtype not in (dtype, torch.bool, torch.int64):
                raise _Refused(f"a {value.dtype} value meets the {dtype} state")
            if id(value) not in uniform_index:
                if id(value) not in allowed:
                    raise _Refused(
                        "step reads a tensor that is neither its input, its state nor computed "
                        "from its constants (another module's state, an attribute)"
                    )
                if value.numel() == 1:
                    flat, by_neuron = value.reshape(1), False
                elif value.numel() == n and value.shape[-len(neuron.shape) :] == neuron.shape:
                    flat, by_neuron = value.reshape(n), True
                else:
                    raise _Refused(f"a value of shape {tuple(value.shape)} is not per neuron")
                uniform_index[id(value)] = Ref("uniform", len(uniforms))
                if value.dtype is torch.int64:
                    integer.add(("uniform", len(uniforms)))
                kept_dtype = torch.int64 if value.dtype is torch.int64 else dtype
                uniforms.append(flat.to(device=example.device, dtype=kept_dtype).contiguous())
                per_neuron.append(by_neuron)
                keep.append(value)
            return uniform_index[id(value)]
        if isinstance(value, bool):
            return Ref("number", value=value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return Ref("number", value=float(value))
        raise _Refused(f"the number {value!r} cannot be written as C")

    def emit(kind: str, refs: Tuple[Optional[Ref], ...], result: str, name: str) -> Ref:
        """Append an operation where its operands are computed; its operand."""
        levels = {level.get(r) for r in refs if r is not None}
        if "batch" in levels and "element" in levels:
            raise _Refused(
                f"{name} computes a per-element value from a sum over the batch of the same "
                "step (the per-neuron values are computed after every element)"
            )
        where = "batch" if "batch" in levels else "element" if "element" in levels else "neuron"
        _check_types(kind, refs, result, ops, batch_ops, integer, name)
        target = batch_ops if where == "batch" else ops
        ref = Ref("batch" if where == "batch" else "value", len(target))
        if where == "neuron":
            per_neuron_values.add(len(ops))
        target.append(Op(kind, refs, result))
        level[ref] = where
        return ref

    for func, args, kwargs, out in record.ops:
        keep.append(out)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
        if not any(id(t) in element for t in tensors):
            # uniform: its value (out) is used where a per-element operation reads it
            if isinstance(out, torch.Tensor) and all(id(t) in allowed for t in tensors):
                allowed.add(id(out))
            continue
        name = func if isinstance(func, str) else getattr(func, "__name__", str(func))
        if not isinstance(out, torch.Tensor):
            if isinstance(out, _IGNORED) and name in ("__get__", "dim", "size", "numel"):
                continue  # shape, dtype, device: fixed for the kernel
            if name in ("untyped_storage", "_use_count"):
                continue  # who holds the tensor (pysnn's in-place checks), not its values
            raise _Refused(f"step reads a per-element value back to Python ({name})")
        if out.shape not in (example.shape, shape):
            raise _Refused(f"{name} gives shape {tuple(out.shape)}, not the input's")
        if name.endswith("_") and not name.startswith("__"):
            raise _Refused(f"step changes a tensor in place ({name})")
        if out.dtype not in (dtype, torch.bool, torch.int64):
            raise _Refused(f"{name} gives {out.dtype}")
        if name == "detach" and len(args) == 1 and not kwargs:
            element[id(out)] = operand(args[0])  # (recorded without gradients: the same values)
            continue
        if name == "sum" and _sums_over_the_batch(args, kwargs):
            summed = operand(args[0])
            if level.get(summed) != "element" or out.shape != shape:
                raise _Refused("sum over the batch of a value that is not per element")
            element[id(out)] = Ref("batch", len(batch_ops))
            level[element[id(out)]] = "batch"
            batch_ops.append(Op("batch_sum", (summed,), "float"))
            continue
        if name == "fire" and len(args) == 1:
            kind, refs = "fire", (operand(args[0]),)
        elif name == "addcmul" and len(args) == 3 and not kwargs:
            # input + tensor1 * tensor2, rounded as torch rounds it (see _C_MADD)
            kind = "madd"
            refs = (operand(args[1]), operand(args[2]), operand(args[0]))
        elif name == "masked_fill" and len(args) == 3 and not kwargs:
            kind, refs = "where", (operand(args[1]), operand(args[2]), operand(args[0]))
        elif name in _BINARY and len(args) == 2 and not kwargs:
            (kind, swapped), refs = _BINARY[name], (operand(args[0]), operand(args[1]))
            refs = refs[::-1] if swapped else refs
        elif name in ("__rdiv__", "__rtruediv__") and len(args) == 2 and not kwargs:
            # number / tensor: torch computes tensor.reciprocal() * number (two roundings)
            a, b = operand(args[0]), operand(args[1])
            kind, refs = "mul", (emit("div", (Ref("number", value=1.0), a), "float", name), b)
        elif name in _UNARY and len(args) == 1 and not kwargs:
            kind, refs = _UNARY[name], (operand(args[0]),)
        elif name == "where" and len(args) == 3 and not kwargs:
            kind, refs = "where", tuple(operand(v) for v in args)
        elif name in ("abs", "__abs__") and len(args) == 1 and not kwargs:
            kind, refs = "abs", (operand(args[0]),)
        elif name in ("clamp", "clip", "clamp_min", "clamp_max"):
            a = operand(args[0])
            lo = kwargs.get("min", args[1] if len(args) > 1 and name != "clamp_max" else None)
            hi = kwargs.get("max", args[2] if len(args) > 2 else None)
            if name == "clamp_max":
                lo, hi = None, args[1]
            lo_ref = None if lo is None else operand(lo)
            kind, refs = "clamp", (a, lo_ref, None if hi is None else operand(hi))
        elif name in ("to", "float", "double", "type_as") and out.dtype is dtype:
            kind, refs = "float", (operand(args[0]),)
        elif name == "to" and out.dtype is torch.bool:
            kind, refs = "bool", (operand(args[0]),)
        else:
            raise _Refused(
                f"{name} cannot be generated (not an elementwise operation pysnn writes)"
            )
        result = {torch.bool: "bool", torch.int64: "int"}.get(out.dtype, "float")
        ref = emit(kind, refs, result, name)
        if out.shape != (example.shape if level[ref] == "element" else shape):
            raise _Refused(f"{name} gives shape {tuple(out.shape)}, not the input's")
        element[id(out)] = ref
    if not isinstance(spikes, torch.Tensor) or id(spikes) not in element:
        raise _Refused("step returns a value that does not depend on its input or state")
    returned = element[id(spikes)]
    if level.get(returned) != "element":
        raise _Refused("step returns a value per neuron, not one per element of its input")
    for op in batch_ops:
        if op.kind == "batch_sum" and (op.args[0] != returned or not _zero_one(returned, ops)):
            raise _Refused(
                "a sum over the batch is generated of the step's spikes only, where they are "
                "0 or 1 (a fire or a bool converted): exact in any order, as torch's"
            )
    if batch_ops and example.shape[0] > _EXACT_COUNTS[dtype]:
        raise _Refused(f"a batch of more than {_EXACT_COUNTS[dtype]} counts inexactly in {dtype}")
    updated: Dict[int, Ref] = {}
    for k, name in enumerate(names):
        final = twin._buffers[name]
        if final is not before[name]:
            if id(final) not in element:
                raise _Refused(f"state {name!r} is set to a value computed outside the step")
            updated[k] = element[id(final)]
            if level.get(updated[k]) != "element":
                raise _Refused(f"state {name!r} is set to a value per neuron, not per element")
    shared_updated: Dict[int, Ref] = {}
    for k, name in enumerate(shared):
        final = twin._buffers[name]
        ref = element.get(id(final)) if isinstance(final, torch.Tensor) else None
        if ref is None or level.get(ref) == "element" or final.dtype is not dtype:
            raise _Refused(
                f"step assigns {name!r}, which is not registered state, a value other than a "
                f"{dtype} one per neuron computed in the step"
            )
        shared_updated[k] = ref
    return Step(
        neuron=type(neuron).__name__,
        dtype=dtype,
        states=names,
        ops=ops,
        uniforms=uniforms,
        per_neuron=per_neuron,
        spikes=returned,
        updated=updated,
        surrogate=neuron.surrogate,
        integer=frozenset(integer),
        shared=shared,
        per_neuron_values=frozenset(per_neuron_values),
        batch_ops=batch_ops,
        shared_updated=shared_updated,
    )


#: the largest batch whose sums of 0/1 spikes are exact in the dtype, in any order (every
#: partial sum a whole number the dtype holds)
_EXACT_COUNTS = {torch.float32: 1 << 24, torch.float64: 1 << 53}


def _sums_over_the_batch(args: tuple, kwargs: dict) -> bool:
    """Whether a recorded ``sum`` is ``value.sum(0)`` (``torch.sum(value, 0)``, ``dim=0``):
    over the batch dimension, without ``keepdim`` or ``dtype``."""
    if len(args) == 2 and not kwargs:
        dim = args[1]
    elif len(args) == 1 and set(kwargs) == {"dim"}:
        dim = kwargs["dim"]
    else:
        return False
    return type(dim) is int and dim == 0


def _zero_one(ref: Ref, ops: List[Op]) -> bool:
    """Whether the per-element value ``ref`` is 0 or 1: a ``fire``, or a ``bool`` converted
    to the dtype."""
    if ref.kind != "value":
        return False
    op = ops[ref.index]
    if op.kind == "fire":
        return True
    source = op.args[0] if op.kind == "float" else None
    if source is None or source.kind == "number":
        return False
    if source.kind == "value":
        return ops[source.index].result == "bool"
    return False  # (an input, state or uniform of the dtype: any value)


def _held_functions(neuron: Neuron) -> Dict[str, Callable[..., Any]]:
    """The functions ``neuron`` holds in its public attributes (its surrogate aside, which
    ``fire`` records): such as :class:`~pysnn.neuron.AdaptiveLIFNeuron`'s
    ``spike_count_reduce``, a collective over processes. A step that calls one is not
    generated (see :func:`_refuse_call`); the copy the recording runs on shares them (a
    process group cannot be copied)."""
    kinds = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, partial)
    return {
        key: value
        for key, value in neuron.__dict__.items()
        if not key.startswith("_") and key != "surrogate" and isinstance(value, kinds)
    }


def _refuse_call(name: str, *args: Any, **kwargs: Any) -> None:
    """Stand-in for the function ``name`` the neuron holds, in the copy the recording runs:
    a step that calls it is not generated (and the function not called for the recording)."""
    raise _Refused(
        f"step calls {name!r}, a function the neuron holds: a kernel would not repeat what it "
        "does besides torch operations (a collective over processes, a log)"
    )


#: the kinds an ``int64`` value may take part in, each operand and result exact in ``int64_t``
_INTEGER_KINDS = frozenset(
    ("add", "sub", "mul", "ge", "gt", "le", "lt", "eq", "ne", "neg", "abs", "where", "clamp")
)


def _check_types(
    kind: str,
    refs: Tuple[Optional[Ref], ...],
    result: str,
    ops: List[Op],
    batch_ops: List[Op],
    integer: set,
    name: str,
) -> None:
    """Refuse an operation on ``int64`` values that the writers would not compute as torch
    does: only integer arithmetic, comparisons, ``where`` and ``clamp`` among ``int64`` values
    and whole numbers (a ``where`` condition aside), and the conversion to the dtype."""

    def held(ref: Optional[Ref]) -> str:
        if ref is None:
            return "none"
        if ref.kind in ("value", "batch"):
            return (ops if ref.kind == "value" else batch_ops)[ref.index].result
        if ref.kind == "number":
            return "bool" if isinstance(ref.value, bool) else "number"
        return "int" if (ref.kind, ref.index) in integer else "float"

    kinds = [held(ref) for ref in (refs[1:] if kind == "where" else refs)]
    if "int" not in kinds and result != "int":
        return
    if kind == "float" and result == "float":
        return  # an int64 value converted to the dtype, rounded as torch rounds it
    whole = all(
        k in ("int", "none") or (k == "number" and float(r.value).is_integer())
        for k, r in zip(kinds, refs[1:] if kind == "where" else refs)
    )
    if kind not in _INTEGER_KINDS or not whole or result == "float":
        raise _Refused(f"{name} mixes int64 and floating-point values")


def _number(value: Union[bool, float], ctype: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if ctype == "int64_t":  # (a whole number, see _check_types)
        return f"((int64_t){int(value)})"
    return f"(({ctype}){value!r})"


def _c_type(step: Step, kind: str, index: int, ctype: str) -> str:
    """The C type of state or uniform ``index``: ``int64_t`` or the dtype's ``ctype``."""
    return "int64_t" if (kind, index) in step.integer else ctype


def _number_type(step: Step, op: Op, ctype: str) -> str:
    """The C type the numbers of ``op`` are written in: ``int64_t`` where it computes on
    ``int64`` values (as torch does, in ``int64``), else the dtype's."""
    args = op.args[1:] if op.kind == "where" else op.args
    if any(ref is not None and step.result(ref) == "int" for ref in args):
        return "int64_t"
    return ctype


def _c_operand(step: Step, ref: Optional[Ref], ctype: str) -> Optional[str]:
    """The C expression of an operand (``None`` for a missing clamp bound)."""
    if ref is None:
        return None
    if ref.kind == "x":
        return "in_x"
    if ref.kind == "state":
        return f"s{ref.index}"
    if ref.kind == "shared":
        return f"p{ref.index}"
    if ref.kind == "uniform":
        return f"u{ref.index}[{'j' if step.per_neuron[ref.index] else '0'}]"
    if ref.kind == "value":
        return f"e{ref.index}"
    if ref.kind == "batch":
        return f"b{ref.index}"
    return _number(ref.value, ctype)


def _c_expression(op: Op, operands: List[Optional[str]], ctype: str) -> str:
    """The C expression of ``op`` over its operands' expressions."""
    a = operands[0]
    if op.kind in _C_TEMPLATES:
        return _C_TEMPLATES[op.kind].format(a=a, b=operands[-1])
    if op.kind == "fire":
        return f"(({ctype})({a} >= ({ctype})0))"
    if op.kind == "madd":
        return f"PYSNN_MADD({a}, {operands[1]}, {operands[2]})"
    if op.kind == "where":
        return f"({a} ? {operands[1]} : {operands[2]})"
    if op.kind == "abs":
        return f"({a} < 0 ? -{a} : ({a} == 0 ? ({ctype})0 : {a}))"
    if op.kind == "clamp":
        expression, lo, hi = a, operands[1], operands[2]
        if lo is not None:
            expression = f"({expression} < {lo} ? {lo} : {expression})"
        if hi is not None:
            expression = f"({expression} > {hi} ? {hi} : {expression})"
        return expression
    if op.kind == "float":
        return f"(({ctype}){a})"
    return f"({a} != 0)"  # bool


class _CDialect:
    """How :meth:`Op.adjoints` writes backward statements and the expressions in them, in C."""

    @staticmethod
    def add(target: str, term: str, condition: Optional[str] = None) -> str:
        """``target += term`` (where ``condition`` holds)."""
        return (
            f"{target} += {term};" if condition is None else f"if ({condition}) {target} += {term};"
        )

    @staticmethod
    def sub(target: str, term: str) -> str:
        return f"{target} -= {term};"

    @staticmethod
    def mul(a: str, b: str) -> str:
        return f"{a} * {b}"

    @staticmethod
    def div(a: str, b: str) -> str:
        return f"{a} / {b}"

    @staticmethod
    def negate(a: str) -> str:
        """The logical negation of the condition ``a``."""
        return f"!{a}"

    @staticmethod
    def all(conditions: List[str]) -> Optional[str]:
        return " && ".join(conditions) or "1"

    @staticmethod
    def sign(a: str, g: str) -> str:
        """``g`` times the sign of ``a`` (0 at 0): the adjoint of ``abs``."""
        return f"({a} > 0 ? {g} : ({a} < 0 ? -{g} : 0))"


#: The generated C loops run blocks of elements, each through all steps (the elements of a
#: neuron's step are independent), on up to ``torch.get_num_threads()`` OpenMP threads where
#: the library is built with OpenMP (torch's own runtime, see :func:`pysnn.native.compile_generated`)
#: and the work is large enough; every element's operations are the same either way.
_C_BLOCKS = """
#define PYSNN_BLOCK 4096
#ifdef _OPENMP
#define PYSNN_PRAGMA(x) _Pragma(#x)
#define PYSNN_PARALLEL(threads, blocks, work)                                                  \\
    PYSNN_PRAGMA(omp parallel for num_threads((threads) < (blocks) ? (threads) : (blocks))     \\
                 schedule(static) if ((threads) > 1 && (blocks) > 1 && (work) >= (1 << 18)))
#else
#define PYSNN_PARALLEL(threads, blocks, work)
#endif
"""
#: The loop over the elements ``lo .. hi - 1`` of a block at one step, opened (its body and
#: ``}}`` follow): a sample's row at a time, so that the neuron of element ``i`` (``i % n``) is
#: ``j = i - row``, found without a division per element and affine in ``i``; ``ivdep``: each
#: element reads and writes its own index only (the arguments are ``restrict``, a promise the
#: OpenMP-outlined loop loses, and the runtime alias checks the compiler would add instead
#: exceed its limit once the trace's pointers join). Both let the compiler vectorise the loop,
#: each element's operations unchanged (``-ffp-contract=off``, no reassociation).
_C_ELEMENTS = """for (int64_t first = lo, stop; first < hi; first = stop) {
            const int64_t row = first - first % n;
            stop = row + n < hi ? row + n : hi;
            _Pragma("GCC ivdep") for (int64_t i = first; i < stop; i++) {
            const int64_t j = i - row;
            (void)j;"""
#: ``PYSNN_MADD(a, b, c) = a * b + c`` rounded as torch's ``addcmul(c, a, b)`` rounds it, as
#: the built-in kernels (``pysnn/csrc/kernels.c``) define it: once where ``PYSNN_FMA`` is
#: defined (:func:`pysnn.native.compile_generated` defines it exactly where torch's ``addcmul``
#: is a fused multiply-add), else after the product too
_C_MADD = """
#ifdef PYSNN_FMA
#define PYSNN_MADD(a, b, c) \\
    _Generic((a), float: __builtin_fmaf, default: __builtin_fma)((a), (b), (c))
#else
#define PYSNN_MADD(a, b, c) ((a) * (b) + (c))
#endif
"""
#: The spike trace after a step's spikes ``{spike}`` (``ot[i]``, or ``in_x`` where the step
#: returns its input; see :class:`TraceUpdate`): the built-in trace kernel's operations (both
#: modes' values computed, so that the loop vectorises)
_C_TRACE = """
            if (tr) {{
                const {ctype} decayed = tr[i] * tc[j];
                const {ctype} added = PYSNN_MADD(tc[n + j], {spike}, decayed);
                tr[i] = additive ? added : ({spike} > 0 ? tc[n + j] : decayed);
            }}"""
_threads = torch.get_num_threads


def _c_passes(step: Step, ctype: str, lines: List[str], stype: List[str]) -> str:
    """The loops of one step over a block of elements where the step has ``int64`` values (a
    refractory counter): its operations in passes over the block, each on one element type
    (``int64``, or the dtype), as the built-in LIF kernel splits its step, so that each pass
    vectorises (GCC vectorises no loop that mixes them); values that cross passes in arrays of
    the block. Each element's operations are the same, in the same order of dependencies, as in
    one pass. ``lines``: the C statement of each operation; ``stype``: each state's C type."""

    def domain(op: Op) -> str:
        refs = [r for r in op.args if r is not None]
        return "int" if op.result == "int" or any(step.result(r) == "int" for r in refs) else "f"

    def producers(refs: Sequence[Optional[Ref]]) -> List[int]:
        return [r.index for r in refs if r is not None and r.kind == "value"]

    def assign(first: str) -> List[int]:
        """Each operation's pass: the first pass of its element type after its operands'."""
        where: List[int] = []
        for op in step.ops:
            want = 0 if domain(op) == first else 1
            low = 0
            for k in producers(op.args):
                low = max(low, where[k] + (domain(step.ops[k]) != domain(op)))
            where.append(low + (low % 2 != want))
        return where

    tries = [assign("int"), assign("f")]
    where = min(tries, key=lambda w: max(w, default=0))
    first = "int" if where is tries[0] else "f"

    def kind_of(p: int) -> str:
        return first if p % 2 == 0 else ("f" if first == "int" else "int")

    # then each operation as late as its readers allow (fewer values kept across passes)
    last = max([*where, 0])
    readers_of: Dict[int, List[int]] = {}
    for k, op in enumerate(step.ops):
        for m in producers(op.args):
            readers_of.setdefault(m, []).append(k)
    kept = {ref.index for ref in (step.spikes, *step.updated.values()) if ref.kind == "value"}
    for k in reversed(range(len(step.ops))):
        if k in kept or k not in readers_of:
            continue  # (a value stored, or read by nobody: where it is)
        high = min(where[m] - (domain(step.ops[m]) != domain(step.ops[k])) for m in readers_of[k])
        high = min(high, last)
        if kind_of(high) != domain(step.ops[k]):
            high -= 1
        where[k] = max(where[k], high)

    # the stores (state k's new value, the spikes): in a pass of the target's type after the
    # value is computed and after every pass that reads the state's old value
    readers: Dict[int, int] = {}
    for op, p in zip(step.ops, where):
        for r in op.args:
            if r is not None and r.kind == "state":
                readers[r.index] = max(readers.get(r.index, 0), p)
    stores: List[Tuple[int, str, Ref, str]] = []  # (pass, target, value, its C type)
    targets = [("ot[i]", ctype, step.spikes, -1)]
    targets += [(f"s{k}_[i]", stype[k], ref, k) for k, ref in step.updated.items()]
    for target, typed, ref, k in targets:
        low = max(where[ref.index] if ref.kind == "value" else 0, readers.get(k, 0))
        p = low + (kind_of(low) != ("int" if typed == "int64_t" else "f"))
        stores.append((p, target, ref, typed))
    count = max([*where, *(p for p, _, _, _ in stores)]) + 1
    # the values read in another pass than their own: kept in arrays of the block (a bool in
    # the reading pass's type, 0/1)
    crossing: Dict[Tuple[int, str], str] = {}  # (value, reading type) -> array
    uses: List[Tuple[int, Optional[Ref]]] = [
        (p, r) for op, p in zip(step.ops, where) for r in op.args
    ] + [(p, ref) for p, _, ref, _ in stores]
    for p, r in uses:
        if r is not None and r.kind == "value" and where[r.index] != p:
            crossing.setdefault((r.index, kind_of(p)), f"c{r.index}{kind_of(p)}")

    def array_type(k: int, kind: str) -> str:
        # (a bool as 0/1 in the dtype: the passes of the dtype, the costly ones, then read no
        # int64 values; the int64 passes read the dtype, as the built-in kernel's do)
        return "int64_t" if step.ops[k].result == "int" else ctype

    arrays = "".join(
        f"\n            {array_type(k, kind)} {name}[PYSNN_BLOCK];"
        for (k, kind), name in crossing.items()
    )
    history = "".join(
        f"\n            if (h{k}) for (int64_t i = lo; i < hi; i++) h{k}[t * size + i] = s{k}_[i];"
        for k in range(len(step.states))
    )
    text = arrays + history
    for p in range(count):
        kind = kind_of(p)
        read = {
            (r.kind, r.index)
            for op, q in zip(step.ops, where)
            if q == p
            for r in op.args
            if r is not None
        } | {(ref.kind, ref.index) for q, _, ref, _ in stores if q == p}
        body = [f"{ctype} in_x = xt[i];"] if ("x", 0) in read else []
        body += [
            f"{stype[k]} s{k} = s{k}_[i];" for k in range(len(step.states)) if ("state", k) in read
        ]
        body += [
            f"const {ctype} p{k} = p{k}_[j];"
            for k in range(len(step.shared))
            if ("shared", k) in read
        ]
        for (k, reader), name in crossing.items():
            if reader == kind and where[k] < p:
                result = step.ops[k].result
                if result == "bool":  # (0/1 in the dtype)
                    body.append(f"int e{k} = ({name}[i - lo] != 0);")
                else:
                    body.append(f"{'int64_t' if result == 'int' else ctype} e{k} = {name}[i - lo];")
        # the uniforms read unconditionally first: one read in a branch of a select
        # (``where(fired, v_reset, v)``) would be a conditional load, which stops GCC
        # vectorising the loop
        computed = [line for line, q in zip(lines, where) if q == p]
        for q, target, ref, typed in stores:
            if q == p and not (target == "ot[i]" and step.returns_input):  # (copied per block)
                computed.append(f"{target} = {_c_operand(step, ref, typed)};")
        for k in range(len(step.uniforms)):
            if ("uniform", k) in read:
                index = f"u{k}[{'j' if step.per_neuron[k] else '0'}]"
                typed = "int64_t" if ("uniform", k) in step.integer else ctype
                body.append(f"const {typed} w{k} = {index};")
                computed = [line.replace(index, f"w{k}") for line in computed]
        body += computed
        for (k, reader), name in crossing.items():
            if where[k] == p:
                one = f"({array_type(k, reader)})1"
                value = f"(e{k} ? {one} : 0)" if step.ops[k].result == "bool" else f"e{k}"
                body.append(f"{name}[i - lo] = {value};")
        inner = "\n".join("            " + line for line in "\n".join(body).splitlines())
        if not any(q == p and target == "ot[i]" for q, target, _, _ in stores):
            text += f"""
            {_C_ELEMENTS}
{inner}
            }}}}"""
            continue
        # the pass of the spikes updates the trace too (pysnn_trace's operations), written
        # three times: with the additive trace, the reset trace, none (a branch on tr or
        # additive inside would stop GCC vectorising)
        spike = "in_x" if step.returns_input else "ot[i]"
        decayed = f"const {ctype} decayed = tr[i] * tc[j];"
        additive = f"tr[i] = PYSNN_MADD(tc[n + j], {spike}, decayed);"
        reset = f"tr[i] = {spike} > 0 ? tc[n + j] : decayed;"
        text += f"""
            if (tr && additive) {{
            {_C_ELEMENTS}
{inner}
            {decayed}
            {additive}
            }}}}
            }} else if (tr) {{
            {_C_ELEMENTS}
{inner}
            {decayed}
            {reset}
            }}}}
            }} else {{
            {_C_ELEMENTS}
{inner}
            }}}}
            }}"""
    return text


def _c_neuron_pass(step: Step, ctype: str) -> str:
    """The neuron pass of a step with per-neuron state (:attr:`Step.shared`), after every
    element of step ``t``: per block of neurons, the sums over the batch of the spikes
    (``ot``, 0/1: exact in any order), then per neuron the per-neuron values it reads
    (:attr:`Step.per_neuron_values`, as the element loop computes them), the operations of
    :attr:`Step.batch_ops` and the new per-neuron state."""

    def declared(op: Op) -> str:
        return {"bool": "int", "int": "int64_t"}.get(op.result, ctype)

    def expression(op: Op) -> str:
        numbers = _number_type(step, op, ctype)
        return _c_expression(op, [_c_operand(step, ref, numbers) for ref in op.args], numbers)

    sums = [k for k, op in enumerate(step.batch_ops) if op.kind == "batch_sum"]
    lines = [f"const {ctype} p{k} = p{k}_[j];" for k in range(len(step.shared))]
    for k in sorted(step.per_neuron_values):
        lines.append(f"{declared(step.ops[k])} e{k} = {expression(step.ops[k])};")
    for k, op in enumerate(step.batch_ops):
        value = f"r{k}[j - j0]" if op.kind == "batch_sum" else expression(op)
        lines.append(f"{declared(op)} b{k} = {value};")
    lines += [
        f"p{k}_[j] = {_c_operand(step, ref, ctype)};" for k, ref in step.shared_updated.items()
    ]
    counts = ""
    if sums:
        arrays = "".join(f" {ctype} r{k}[PYSNN_BLOCK];" for k in sums)
        zeros = "".join(f" r{k}[j - j0] = 0;" for k in sums)
        adds = "".join(f" r{k}[j - j0] += ot[row + j];" for k in sums)
        counts = f"""
           {arrays}
            for (int64_t j = j0; j < j1; j++) {{{zeros} }}
            for (int64_t row = 0; row < size; row += n)
                for (int64_t j = j0; j < j1; j++) {{{adds} }}"""
    inner = "\n".join("                " + line for line in lines)
    return f"""        for (int64_t j0 = 0; j0 < n; j0 += PYSNN_BLOCK) {{
            const int64_t j1 = n - j0 < PYSNN_BLOCK ? n : j0 + PYSNN_BLOCK;{counts}
            for (int64_t j = j0; j < j1; j++) {{
{inner}
            }}
        }}"""


def _c_kernel(step: Step) -> Tuple[str, Launch, Optional[Gradient]]:
    """Write ``step`` as C (a forward loop, and a BPTT backward loop where the surrogate can
    be written), compile it: its source, forward kernel and backward kernel."""
    if not backends.enabled("c"):
        raise _Refused("no C compiler or fused kernels off (PYSNN_NATIVE=0)")
    ctype = _CTYPES[step.dtype]
    surrogate = _surrogate_derivative(step, ctype)
    derivative = None if surrogate is None else (lambda a: surrogate.format(a=a))
    states = range(len(step.states))
    lines: List[str] = []
    adjoints: List[str] = []  # the backward statements, in forward order (emitted reversed)
    for k, op in enumerate(step.ops):
        numbers = _number_type(step, op, ctype)
        operands = [_c_operand(step, ref, numbers) for ref in op.args]
        expression = _c_expression(op, operands, numbers)
        declared = {"bool": "int", "int": "int64_t"}.get(op.result, ctype)
        lines.append(f"{declared} e{k} = {expression};")
        if op.result == "float" and surrogate is not None:
            grads = [step.gradient(ref) for ref in op.args]
            statements = op.adjoints(operands, grads, f"g_e{k}", derivative, _CDialect)
            adjoints.append("\n".join(statements))
    spikes = _c_operand(step, step.spikes, ctype)
    body = "\n".join("            " + line for line in lines)
    stores = "".join(
        f"\n            s{k}_[i] = {_c_operand(step, ref, ctype)};"
        for k, ref in step.updated.items()
    )
    shared = range(len(step.shared))
    stype = [_c_type(step, "state", k, ctype) for k in states]
    utype = [_c_type(step, "uniform", k, ctype) for k in range(len(step.uniforms))]
    loads = "".join(f"\n            {stype[k]} s{k} = s{k}_[i];" for k in states)
    # (the per-neuron state's old values, read as a per-neuron uniform is)
    loads += "".join(f"\n            const {ctype} p{k} = p{k}_[j];" for k in shared)
    history = "".join(f"\n            if (h{k}) h{k}[t * size + i] = s{k};" for k in states)
    arguments = "".join(
        [f", {stype[k]} *restrict s{k}_" for k in states]
        + [f", {ctype} *restrict p{k}_" for k in shared]
        + [f", const {utype[k]} *restrict u{k}" for k in range(len(step.uniforms))]
        + [f", {stype[k]} *restrict h{k}" for k in states]
        + [f", {ctype} *restrict hp{k}" for k in shared]  # (no history kept: never written)
    )
    # a step that returns its input: the spikes copied a block at a time (where they are
    # wanted: a single step stores none, out is NULL), the trace updated from the input
    spike = "in_x" if step.returns_input else "ot[i]"
    store = "" if step.returns_input else f"\n            ot[i] = {spikes};"
    copied = (
        "\n            if (ot) memcpy(ot + lo, xt + lo, (size_t)(hi - lo) * sizeof(*ot));"
        if step.returns_input
        else ""
    )
    if step.integer:
        elements = _c_passes(step, ctype, lines, stype)
    else:
        elements = f"""            {_C_ELEMENTS}
            {ctype} in_x = xt[i];{loads}{history}
{body}{store}{stores}{_C_TRACE.format(ctype=ctype, spike=spike)}
            }}}}"""
    first_output = "out ? out + t * size : 0" if step.returns_input else "out + t * size"
    outputs = f"{ctype} *ot = {first_output};"
    blocks = """for (int64_t b = 0; b < blocks; b++) {
        const int64_t lo = b * PYSNN_BLOCK, hi = size - lo < PYSNN_BLOCK ? size : lo + PYSNN_BLOCK;"""
    if step.shared:
        # the per-neuron state is updated after every element of a step, which reads its old
        # values: the steps run one after the other, each over all blocks, then the neurons
        loop = f"""{blocks}{copied}
{elements}
        }}"""
        function = f"""for (int64_t t = 0; t < steps; t++) {{
        const {ctype} *xt = x + t * size;
        {outputs}
        if (n_threads > 1 && blocks > 1 && size >= (1 << 18)) {{
        PYSNN_PARALLEL(n_threads, blocks, size)
        {loop}
        }} else {{  /* (without entering a parallel region, which costs a microsecond) */
        {loop}
        }}
{_c_neuron_pass(step, ctype)}
    }}"""
    else:
        loop = f"""{blocks}
        for (int64_t t = 0; t < steps; t++) {{
            const {ctype} *xt = x + t * size;
            {outputs}{copied}
{elements}
        }}
    }}"""
        function = f"""if (n_threads > 1 && blocks > 1 && steps * size >= (1 << 18)) {{
    PYSNN_PARALLEL(n_threads, blocks, steps * size)
    {loop}
    }} else {{  /* (without entering a parallel region, which costs a microsecond) */
    {loop}
    }}"""
    source = f"""/* generated by pysnn.codegen for {step.neuron}.step */
#include <math.h>
#include <stdint.h>
#include <string.h>
{_C_BLOCKS}{_C_MADD}
void pysnn_generated(int64_t steps, int64_t size, int64_t n, const {ctype} *restrict x,
                     {ctype} *restrict out{arguments}, {ctype} *restrict tr,
                     const {ctype} *restrict tc, int additive, int64_t n_threads)
{{
    const int64_t blocks = (size + PYSNN_BLOCK - 1) / PYSNN_BLOCK;
    {function}
}}
"""
    # one step, the arguments that do not change between steps (the uniforms, the trace's
    # constants) in one array: fewer arguments to convert per call (NeuronKernel.single_step)
    fixed = "".join(
        f", (const {utype[k]} *)(intptr_t)fixed[{k}]" for k in range(len(step.uniforms))
    )
    nulls = ", 0" * (len(step.states) + len(step.shared))
    u = len(step.uniforms)
    pointers = "".join(
        [f", {stype[k]} *restrict s{k}_" for k in states]
        + [f", {ctype} *restrict p{k}_" for k in shared]
    )
    passed = "".join([f", s{k}_" for k in states] + [f", p{k}_" for k in shared])
    # (a NaN or an infinity: its exponent bits all set, read as 32-bit words, a double's high
    # one, so that the check vectorises)
    words, high, exponent = (
        (1, "0", "0x7f800000u") if ctype == "float" else (2, "PYSNN_HIGH", "0x7ff00000u")
    )
    source += f"""
typedef uint32_t __attribute__((may_alias)) pysnn_word;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define PYSNN_HIGH 0
#else
#define PYSNN_HIGH 1
#endif

/* one step; with check, none where x holds a NaN or an infinity (1 returned, nothing written) */
int pysnn_generated_step(int64_t size, int64_t n, const {ctype} *restrict x,
                         {ctype} *restrict out{pointers},
                         {ctype} *restrict tr, const int64_t *restrict fixed, int check,
                         int64_t n_threads)
{{
    if (check) {{
        const pysnn_word *restrict w = (const pysnn_word *)x;
        int bad = 0;
        for (int64_t i = 0; i < size; i++)
            bad |= (w[{words} * i + {high}] & {exponent}) == {exponent};
        if (bad) return 1;
    }}
    pysnn_generated(1, size, n, x, out{passed}{fixed}{nulls}, tr,
                    (const {ctype} *)(intptr_t)fixed[{u}], (int)fixed[{u + 1}], n_threads);
    return 0;
}}
"""
    spikes_gradient, targets = step.seeds()
    backward = step.differentiable()  # (then the surrogate was written)
    if backward:  # BPTT: step t's values recomputed from the saved state, adjoints reversed
        grads = ["g_in_x"] + [f"g_s{k}" for k in states]
        grads += [f"g_e{k}" for k, op in enumerate(step.ops) if op.result == "float"]
        zeros = "".join(f"\n            {ctype} {v} = 0;" for v in grads)
        seeds = f"\n            {spikes_gradient} += got[i];"
        for target, k in targets:
            seeds += f"\n            {target} += gs{k}_[i];"
        reverse = "\n".join(
            "            " + line for block in reversed(adjoints) for line in block.splitlines()
        )
        outputs = "".join(f"\n            gs{k}_[i] = g_s{k};" for k in states)
        saved = "".join(f"\n            {ctype} s{k} = h{k}[t * size + i];" for k in states)
        gradients = "".join(
            [f", {ctype} *restrict gs{k}_" for k in states]
            + [f", const {ctype} *restrict u{k}" for k in range(len(step.uniforms))]
            + [f", const {ctype} *restrict h{k}" for k in states]
        )
        source += f"""
void pysnn_generated_backward(int64_t steps, int64_t size, int64_t n, const {ctype} *restrict x,
                              const {ctype} *restrict gout, {ctype} *restrict gx{gradients},
                              int64_t n_threads)
{{
    const int64_t blocks = (size + PYSNN_BLOCK - 1) / PYSNN_BLOCK;
    PYSNN_PARALLEL(n_threads, blocks, steps * size)
    for (int64_t b = 0; b < blocks; b++) {{
        const int64_t lo = b * PYSNN_BLOCK, hi = size - lo < PYSNN_BLOCK ? size : lo + PYSNN_BLOCK;
        for (int64_t t = steps - 1; t >= 0; t--) {{
            const {ctype} *xt = x + t * size;
            const {ctype} *got = gout + t * size;
            {ctype} *gxt = gx + t * size;
            {_C_ELEMENTS}
            {ctype} in_x = xt[i];{saved}
{body}{zeros}{seeds}
{reverse}
            gxt[i] = g_in_x;{outputs}
            }}}}
        }}
    }}
}}
"""
    try:
        library = native.compile_generated(source)
    except (RuntimeError, OSError) as err:
        raise _Refused(f"the generated kernel did not compile: {err}") from None
    count = len(step.states) + len(step.shared)
    pointers = [ctypes.c_void_p] * (2 + 2 * count + len(step.uniforms))
    function = library.pysnn_generated
    trace = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    function.argtypes = [ctypes.c_int64] * 3 + pointers + trace + [ctypes.c_int64]
    function.restype = None
    single = library.pysnn_generated_step
    single.argtypes = [ctypes.c_int64] * 2 + [ctypes.c_void_p] * (2 + count + 2)
    single.argtypes += [ctypes.c_int, ctypes.c_int64]
    single.restype = ctypes.c_int
    gradient = None
    if backward:
        gradient = library.pysnn_generated_backward
        gradient.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] + pointers + [ctypes.c_int64]
        gradient.restype = None
    launch = _c_launch(function)
    launch.c_step = single  # type: ignore[attr-defined]  (see NeuronKernel.single_step)
    return source, launch, None if gradient is None else _c_gradient_launch(gradient)


def _c_launch(function: Callable[..., None]) -> Launch:
    """The compiled C forward kernel as a :data:`Launch` (tensors passed by address)."""

    def launch(steps, size, n, x, out, states, uniforms, history, trace) -> None:
        function(
            steps,
            size,
            n,
            x.data_ptr(),
            out.data_ptr(),
            *(s.data_ptr() for s in states),
            *(u.data_ptr() for u in uniforms),
            *(None if h is None else h.data_ptr() for h in history),
            *(
                (None, None, 0)
                if trace is None
                else (
                    trace.trace.data_ptr(),
                    trace.constants.table.data_ptr(),
                    trace.constants.additive,
                )
            ),
            _threads(),
        )

    return launch


def _c_gradient_launch(function: Callable[..., None]) -> Gradient:
    """The compiled C backward kernel as a :data:`Gradient` (tensors passed by address)."""

    def gradient(steps, size, n, x, g_out, g_x, g_states, uniforms, history) -> None:
        function(
            steps,
            size,
            n,
            x.data_ptr(),
            g_out.data_ptr(),
            g_x.data_ptr(),
            *(g.data_ptr() for g in g_states),
            *(u.data_ptr() for u in uniforms),
            *(h.data_ptr() for h in history),
            _threads(),
        )

    return gradient


def _surrogate_derivative(step: Step, ctype: str) -> Optional[str]:
    """C template (over ``{a}``, the distance above threshold) of the derivative that
    :meth:`~pysnn.neuron.Neuron.fire` uses, or ``None`` where it cannot be written: a built-in
    :mod:`pysnn.surrogate` class (its own exact class), or no surrogate (no gradient)."""
    form = step.surrogate_form()
    if form is None:
        return None
    code, param = form
    if code == 0:
        return "0"
    k = f"(({ctype}){param!r})"
    exp = "exp" if ctype == "double" else "expf"
    forms = {
        1: f"(({ctype})1 / (({k} * fabs({{a}}) + 1) * ({k} * fabs({{a}}) + 1)))",
        2: f"((({ctype})0.5 * {k}) / (1 + (({ctype})3.14159265358979323846 * ({ctype})0.5 * {k} * {{a}}) * "
        f"(({ctype})3.14159265358979323846 * ({ctype})0.5 * {k} * {{a}})))",
        3: f"({k} / (1 + {exp}(-{k} * {{a}})) * (1 - 1 / (1 + {exp}(-{k} * {{a}}))))",
        4: f"(1 - fabs({{a}}) / {k} > 0 ? 1 - fabs({{a}}) / {k} : 0)",
        5: f"(fabs({{a}}) <= {k} ? ({ctype})1 : ({ctype})0)",
    }
    if code == 5 and math.isinf(param):
        return f"(({ctype})1)"
    return forms[code]


def _binary_adjoints(
    name: str,
    a: str,
    b: str,
    g: str,
    ga: Optional[str],
    gb: Optional[str],
    dialect: Any,
) -> List[str]:
    """Backward statements of the arithmetic operation ``name`` (``add sub mul div``) on
    operands ``a``, ``b`` (expressions), upstream adjoint ``g``, operand adjoints ``ga``,
    ``gb`` (``None``: no gradient wanted, a constant or a number)."""
    d, lines = dialect, []
    if name == "add":
        lines += [d.add(ga, g)] if ga else []
        lines += [d.add(gb, g)] if gb else []
    elif name == "sub":
        lines += [d.add(ga, g)] if ga else []
        lines += [d.sub(gb, g)] if gb else []
    elif name == "mul":
        lines += [d.add(ga, d.mul(g, b))] if ga else []
        lines += [d.add(gb, d.mul(g, a))] if gb else []
    else:  # div
        lines += [d.add(ga, d.div(g, b))] if ga else []
        lines += [d.sub(gb, d.div(d.mul(g, a), f"({b} * {b})"))] if gb else []
    return lines


class _GeneratedSteps(torch.autograd.Function):
    """``T`` steps of a generated kernel under autograd: the forward kernel keeps each step's
    state, the backward kernel recomputes each step from it and runs its adjoints in reverse
    (backpropagation through time with the neuron's surrogate gradient)."""

    @staticmethod
    def forward(ctx, kernel: "NeuronKernel", n: int, x: torch.Tensor, *states: torch.Tensor):
        steps, size = x.shape[0], x[0].numel()
        new = [s.detach().clone() for s in states]
        history = [s.new_empty((steps, *s.shape)) for s in states]
        out = torch.empty_like(x)
        kernel.function(steps, size, n, x, out, new, kernel.uniforms, history, None)
        ctx.save_for_backward(x, *history)
        ctx.kernel, ctx.n = kernel, n
        return (out, *new)

    @staticmethod
    def backward(ctx, grad_out: Optional[torch.Tensor], *grad_states: Optional[torch.Tensor]):
        x, *history = ctx.saved_tensors
        kernel = ctx.kernel
        steps, size = x.shape[0], x[0].numel()
        g_out = torch.zeros_like(x) if grad_out is None else grad_out.contiguous()
        g_states = [
            torch.zeros_like(h[0]) if g is None else g.contiguous().clone()
            for g, h in zip(grad_states, history)
        ]
        g_x = torch.empty_like(x)
        kernel.gradient(steps, size, ctx.n, x, g_out, g_x, g_states, kernel.uniforms, history)
        return (None, None, g_x, *g_states)
