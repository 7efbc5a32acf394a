"""The Triton writer of generated kernels: a recorded :class:`~pysnn.codegen.Step` as one
Triton kernel over all ``T`` steps (see :mod:`pysnn.codegen`).

The kernel has the layout of the built-in Triton kernels (:mod:`pysnn.backends.triton.lif`): a
program owns :data:`~pysnn.backends.triton.common.BLOCK` elements of the flattened ``(B, n)``
state (64-bit offsets), loads the state and the uniforms once (a per-neuron uniform at
``offs % n``), keeps the state in registers through a loop over the steps, and stores it once.
Each :class:`~pysnn.codegen.Op` is one Triton expression in torch's order and dtype:

- a Python number is a constant of the kernel's dtype (``tl.full((), value, tl.float64)``),
  rounded once from the Python float as torch rounds it (a bare literal would be float32), or
  of ``tl.int64`` where it meets ``int64`` values;
- division is correctly rounded: ``tl.div_rn`` in float32 (Triton's ``/`` on float32 is
  approximate on a GPU), ``/`` in float64 (already correctly rounded). On CUDA, torch divides
  by a Python number as a product with its reciprocal (computed in the dtype), and so does the
  kernel there;
- ``fire`` is ``(z >= 0).to(dtype)``, comparisons and logic give ``bool`` tensors, ``where``
  is ``tl.where``, ``clamp`` two ``tl.where`` as the C writer's;
- ``int64`` values (a refractory counter such as :class:`~pysnn.neuron.LIFNeuron`'s
  ``refrac_count``, its reset value computed from the constants) are ``tl.int64`` tensors, in
  the state's registers like the rest: the recorder lets them take part only in integer sums,
  differences, products, negation, ``abs``, comparisons, ``where`` and ``clamp`` with other
  ``int64`` values and whole numbers (:func:`pysnn.codegen._check_types`), which wrap around
  in two's complement on the GPU, in NumPy and in torch alike, and in conversions to the dtype
  (``.to(dtype)``, rounded to nearest by ``.to(tl.float32)`` as by torch);
- ``addcmul`` (``madd``, ``a * b + c``) is
  :func:`~pysnn.backends.triton.trace.multiply_add`: one ``tl.fma`` exactly where torch's
  ``addcmul`` is a fused multiply-add on the device (``FMA``, measured by
  :func:`~pysnn.backends.triton.common.fuses_multiply_add`: on this CPU, under the
  interpreter, as torch's CPU kernels round it), else a product and a sum rounded each;
- the kernel is launched with ``enable_fp_fusion=False``
  (:data:`~pysnn.backends.triton.common.LAUNCH`): no other product and sum is fused;
- the spike trace (``TRACE``, without autograd: :class:`~pysnn.codegen.TraceUpdate`) is kept in
  registers too and updated after each step by the Triton trace kernel's
  :func:`~pysnn.backends.triton.trace.trace_next` (its sum a ``tl.fma`` exactly where torch's
  ``addcmul`` fuses on the device).

**Per-neuron state** (:attr:`~pysnn.codegen.Step.shared`, such as
:class:`~pysnn.neuron.AdaptiveLIFNeuron`'s shared ``theta``, updated after each step from the
sum over the batch of the step's spikes) needs every sample of a neuron before the next step.
Such a step gets another layout, with no cross-program reduction: a program owns ``COLS``
neurons and all ``B`` samples of them, ``ROWS`` samples (up to 8) at a time in a ``(ROWS,
COLS)`` tile. At each step it computes the per-neuron values the elements read, runs its
samples' elements (the per-element state and trace loaded and stored at each step, each by
the program that owns it), sums each neuron's 0/1 spikes (``tl.sum`` of the tiles: whole
numbers, exact in any order while the batch fits
:attr:`~pysnn.codegen.NeuronKernel.max_batch`, as torch's ``spikes.sum(0)``), then computes
the neuron pass and keeps the new per-neuron state in registers, stored once at the end. No
atomics, no order that depends on scheduling: the same results at every launch, in one launch
for all ``T`` steps. It keeps no history (a step with per-neuron state has no backward).

Under Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) the tests find the results the
step loop's bit for bit (the built-in LIF, IF and AdaptiveLIF neurons included, in float32 and
float64); on a GPU, where no test here runs, the operations written (sums, products, fused
multiply-adds where torch's ``addcmul`` fuses, correctly rounded divisions, comparisons,
selections, integer arithmetic) are the ones torch's CUDA kernels do, so the same is expected.

The source is written to a ``.py`` file in a private directory (``tempfile.mkdtemp``, mode
0700) and imported, so that ``triton.jit`` can read it; kernels are kept in this process by
the SHA-256 of their source.

Where :meth:`~pysnn.codegen.Step.differentiable`, the module also defines a backward kernel
(BPTT), as the C writer's: the forward stores each step's state before the step (``HISTORY``),
and ``pysnn_generated_backward`` loops over the steps in reverse, recomputes step ``t``'s values
from that state (an ``int64`` state's too: it has no gradient of its own), applies each
operation's adjoint (:meth:`~pysnn.codegen.Op.adjoints`, this writer's statements; the
surrogate derivatives in the C writer's forms and order; ``madd``'s adjoints ``g * b`` and
``g * a``) in reverse, stores the input's gradient, and carries the floating-point states'
gradients in registers. Under the interpreter the tests find the gradients torch autograd's
through the step loop to 1e-12 in float64 and 1e-5 in float32 (sums in another order,
``1 / (a * a)`` for ``pow(-2)``); on a GPU ``tl.exp`` (the sigmoid surrogate) is not torch's
``exp``, so to rounding only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import triton

from pysnn.backends.triton.common import BLOCK, LAUNCH, fuses_multiply_add

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from pysnn.codegen import Gradient, Launch, Op, Ref, Step, TraceUpdate

__all__ = ["triton_kernel", "write_triton"]

_TL = {torch.float32: "tl.float32", torch.float64: "tl.float64"}
#: the variable names of the operand kinds (:class:`~pysnn.codegen.Ref`), its index appended
_NAMES = {"x": "in_x", "state": "s", "shared": "p", "uniform": "u", "value": "e", "batch": "b"}
#: Python operators of the arithmetic, comparison and logical kinds (division: ``tl.div_rn``)
_OPERATORS = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "ge": ">=",
    "gt": ">",
    "le": "<=",
    "lt": "<",
    "eq": "==",
    "ne": "!=",
    "and": "&",
    "or": "|",
}
#: the kinds whose expression is naturally ``bool``
_BOOLEAN = {"ge", "gt", "le", "lt", "eq", "ne", "and", "or", "not", "bool"}

_lock = threading.Lock()
_folder: Optional[str] = None
_modules: Dict[str, Any] = {}


class _Writer:
    """Writes the expressions of one step: operands converted to what each operation reads,
    numbers as constants of the dtype declared once before the loop."""

    def __init__(self, step: "Step", cuda: bool) -> None:
        self.step = step
        self.cuda = cuda
        self.dtype = _TL[step.dtype]
        self.constants: Dict[Tuple[str, str], Tuple[str, str]] = {}  # key -> (name, literal)

    def type_of(self, want: str) -> str:
        """The Triton type of ``want``: ``"float"`` (the dtype), ``"bool"`` or ``"int"``."""
        return {"float": self.dtype, "bool": "tl.int1", "int": "tl.int64"}[want]

    def constant(self, value: Union[bool, float], want: str) -> str:
        """The name of a constant ``value`` of the dtype (``want == "float"``), ``bool`` or
        ``int64`` (``"int"``: a whole number, see :func:`pysnn.codegen._check_types`)."""
        if want == "bool":
            key, literal = ("bool", repr(bool(value))), f"tl.full((), {bool(value)!r}, tl.int1)"
        elif want == "int":
            key, literal = ("int", repr(int(value))), f"tl.full((), {int(value)}, tl.int64)"
        else:
            key = ("float", repr(float(value)))
            number = repr(float(value)) if math.isfinite(value) else f"float({str(float(value))!r})"
            literal = f"tl.full((), {number}, {self.dtype})"
        if key not in self.constants:
            self.constants[key] = (f"c{len(self.constants)}", literal)
        return self.constants[key][0]

    def operand(self, ref: "Ref", want: str) -> str:
        """``ref`` as a Triton expression of ``want`` (``"float"``: the dtype, ``"bool"`` or
        ``"int"``: ``int64``); an ``int64`` or ``bool`` value converted to the dtype as torch's
        ``.to(dtype)`` converts it (rounded to nearest)."""
        if ref.kind == "number":
            return self.constant(ref.value, want)
        name = _NAMES[ref.kind] + ("" if ref.kind == "x" else str(ref.index))
        held = self.step.result(ref)
        if held == want:
            return name
        return f"({name} != 0)" if want == "bool" else f"{name}.to({self.type_of(want)})"

    def domain(self, op: "Op") -> str:
        """What the operands of an arithmetic, comparison or ``clamp`` operation (its numbers
        included) are written in: ``"int"`` where one is ``int64`` (torch computes on ``int64``
        values in ``int64``; :func:`pysnn.codegen._check_types` lets them meet only ``int64``
        values and whole numbers), else ``"float"``, as the C writer's
        :func:`pysnn.codegen._number_type`."""
        args = op.args[1:] if op.kind == "where" else op.args
        held = [self.step.result(ref) for ref in args if ref is not None]
        return "int" if "int" in held else "float"

    def operands(self, op: "Op") -> List[Optional[str]]:
        """The operands of ``op`` as its backward statements read them: ``where``'s condition
        as ``bool``, every other operand (of an operation with a floating-point result) in the
        dtype, a clamp bound not given as ``None``."""
        return [
            (
                None
                if ref is None
                else self.operand(ref, "bool" if (op.kind, i) == ("where", 0) else "float")
            )
            for i, ref in enumerate(op.args)
        ]

    def expression(self, op: "Op") -> str:
        """``op`` as a Triton expression of its result."""
        kind, args = op.kind, op.args
        if kind in ("and", "or"):
            want = "bool"
        elif kind in ("float", "fire", "madd"):
            want = "float"
        else:
            want = self.domain(op)
        a = self.operand(args[0], "bool" if kind in ("where", "bool") else want)
        if kind in _OPERATORS:
            expression = f"({a} {_OPERATORS[kind]} {self.operand(args[1], want)})"
        elif kind == "div":
            expression = self.division(a, args[1])
        elif kind == "neg":
            expression = f"(-{a})"
        elif kind == "not":
            expression = f"({a} == 0)"
        elif kind == "abs":
            expression = f"tl.abs({a})"
        elif kind == "fire":
            expression = f"({a} >= 0).to({self.dtype})"
        elif kind == "madd":  # a * b + c, rounded as torch's addcmul on the device
            b, c = (self.operand(ref, "float") for ref in args[1:])
            expression = f"multiply_add({a}, {b}, {c}, FMA)"
        elif kind == "where":
            branches = [self.operand(ref, op.result) for ref in args[1:]]
            expression = f"tl.where({a}, {branches[0]}, {branches[1]})"
        elif kind == "clamp":  # as the C writer: below the lower bound, then above the upper
            expression = a
            lo, hi = (None if r is None else self.operand(r, want) for r in args[1:])
            if lo is not None:
                expression = f"tl.where({expression} < {lo}, {lo}, {expression})"
            if hi is not None:
                expression = f"tl.where({expression} > {hi}, {hi}, {expression})"
        else:  # float, bool: the conversion is the operand's
            expression = a
        if op.result == "bool" and kind not in _BOOLEAN and kind != "where":
            expression = f"({expression} != 0)"  # torch's bool arithmetic (True + True)
        return expression

    def division(self, a: str, divisor: "Ref") -> str:
        """``a / divisor`` as torch divides on the device: on CUDA a Python number divides as
        a product with its reciprocal, computed in the dtype; otherwise correctly rounded."""
        if self.cuda and divisor.kind == "number" and not isinstance(divisor.value, bool):
            one = torch.ones((), dtype=self.step.dtype)
            reciprocal = (one / torch.tensor(divisor.value, dtype=self.step.dtype)).item()
            return f"({a} * {self.constant(reciprocal, 'float')})"
        b = self.operand(divisor, "float")
        return f"tl.div_rn({a}, {b})" if self.step.dtype is torch.float32 else f"({a} / {b})"

    # the backward statements (the dialect of :meth:`pysnn.codegen.Op.adjoints`)

    @staticmethod
    def add(target: str, term: str, condition: Optional[str] = None) -> str:
        """``target += term`` (where ``condition`` holds)."""
        if condition is None:
            return f"{target} = {target} + {term}"
        return f"{target} = tl.where({condition}, {target} + {term}, {target})"

    @staticmethod
    def sub(target: str, term: str) -> str:
        return f"{target} = {target} - {term}"

    @staticmethod
    def mul(a: str, b: str) -> str:
        return f"{a} * {b}"

    def div(self, a: str, b: str) -> str:
        """``a / b`` correctly rounded (as :meth:`division`, for expressions)."""
        return f"tl.div_rn({a}, {b})" if self.step.dtype is torch.float32 else f"{a} / {b}"

    @staticmethod
    def negate(a: str) -> str:
        return f"({a} == 0)"

    @staticmethod
    def all(conditions: List[str]) -> Optional[str]:
        return " & ".join(f"({c})" for c in conditions) or None

    def sign(self, a: str, g: str) -> str:
        """``g`` times the sign of ``a`` (0 at 0): the adjoint of ``abs``."""
        zero = self.constant(0.0, "float")
        return f"tl.where({a} > 0, {g}, tl.where({a} < 0, -{g}, {zero}))"

    def surrogate(self) -> Callable[[str], str]:
        """The surrogate derivative (at an expression) that the C writer writes (same forms,
        same order of operations; :meth:`pysnn.codegen.Step.surrogate_form`), in Triton."""
        form = self.step.surrogate_form()
        assert form is not None, "no backward is written for this surrogate"
        code, param = form
        c = self.constant
        one, zero = c(1.0, "float"), c(0.0, "float")
        if code == 0 or (code == 5 and math.isinf(param)):
            value = zero if code == 0 else one
            return lambda a: value
        k, div = c(param, "float"), self.div

        def derivative(a: str) -> str:  # parenthesised, as the C writer's forms
            if code == 1:  # fast sigmoid: 1 / ((k|a| + 1)(k|a| + 1))
                term = f"(({k} * tl.abs({a})) + {one})"
                return f"({div(one, f'({term} * {term})')})"
            if code == 2:  # arctan: (k / 2) / (1 + (pi / 2 k a)^2)
                half, pi = c(0.5, "float"), c(math.pi, "float")
                term = f"({pi} * {half} * {k} * {a})"
                return f"({div(f'({half} * {k})', f'({one} + {term} * {term})')})"
            if code == 3:  # sigmoid: k / (1 + e^-ka) * (1 - 1 / (1 + e^-ka))
                term = f"({one} + tl.exp(-{k} * {a}))"
                return f"({div(k, term)} * ({one} - {div(one, term)}))"
            if code == 4:  # triangle: max(1 - |a| / k, 0)
                term = f"{one} - {div(f'tl.abs({a})', k)}"
                return f"tl.where({term} > 0, {term}, {zero})"
            return f"tl.where(tl.abs({a}) <= {k}, {one}, {zero})"  # straight-through

        return derivative


def write_triton(step: "Step", device: torch.device) -> str:
    """The Triton source of ``step``'s kernels for ``device``: a module defining the forward
    kernel ``pysnn_generated`` and, where :meth:`~pysnn.codegen.Step.differentiable`, the
    backward kernel ``pysnn_generated_backward(x, gout, gx, gs0.., u0.., h0.., steps, last,
    size, n, FMA, BLOCK)``. The forward kernel is ``pysnn_generated(x, out, s0.., u0.., h0..,
    tr, tc, steps, size, n, HISTORY, TRACE, ADDITIVE, FMA, BLOCK)`` (``HISTORY``: each step's
    state before the step is stored to ``h{k}``; ``TRACE``: the spike trace ``tr`` updated
    after each step, see :class:`~pysnn.codegen.TraceUpdate`; ``FMA``: torch's ``addcmul``
    rounds once on the device), or where the step has per-neuron state
    (:attr:`~pysnn.codegen.Step.shared`) ``pysnn_generated(x, out, s0.., p0.., u0.., tr, tc,
    steps, size, n, TRACE, ADDITIVE, FMA, ROWS, COLS)``: a program per ``COLS`` neurons and
    all their samples, ``ROWS`` at a time (see the module).
    """
    forward = _shared_forward(step, device) if step.shared else _forward(step, device)
    source = f'''"""generated by pysnn.backends.triton.generated for {step.neuron}.step"""
import triton
import triton.language as tl

from pysnn.backends.triton.trace import multiply_add, trace_next


{forward}'''
    if step.differentiable():  # (never with per-neuron state: learned from the spikes)
        source += "\n\n" + _backward(step, device)
    return source


def _state_type(step: "Step", k: int) -> str:
    """What state ``k`` holds: ``"int"`` (``int64``) or ``"float"`` (the dtype)."""
    return "int" if ("state", k) in step.integer else "float"


def _prologue(writer: _Writer, first: List[str], mask: str, extra: List[str]) -> str:
    """The kernel's lines before the loop: ``first`` (the offsets; ``j``, the neuron of each
    element or column, valid where ``mask`` holds), the uniforms, ``extra``, then the constants
    the writer declared (call it once every expression is written)."""
    step = writer.step
    lines = list(first)
    lines += [
        (
            f"u{k} = tl.load(u{k}_ptr + j, mask={mask})"
            if step.per_neuron[k]
            else f"u{k} = tl.load(u{k}_ptr)"
        )
        for k in range(len(step.uniforms))
    ]
    lines += extra
    lines += [f"{name} = {literal}" for name, literal in writer.constants.values()]
    return "\n".join("    " + line for line in lines)


#: the lines that give a program of the element-wise kernels its elements
_ELEMENTS = [
    "offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)",
    "mask = offs < size",
    "j = offs % n",
]


def _forward(step: "Step", device: torch.device) -> str:
    """The forward kernel: the state in registers through the steps, the spikes stored at
    each step (and the state before it, under ``HISTORY``), the state stored once at the end;
    under ``TRACE`` the spike trace too, updated after each step from the spikes by
    :func:`~pysnn.backends.triton.trace.trace_next` (the trace kernel's update: ``ADDITIVE``,
    and ``FMA`` where torch's ``addcmul`` fuses) from the decay and scale rows of ``tc``."""
    writer = _Writer(step, device.type == "cuda")
    states, uniforms = range(len(step.states)), range(len(step.uniforms))
    body = ["in_x = tl.load(x_ptr + o, mask=mask)"]
    if step.states:
        body.append("if HISTORY:")
        body += [f"    tl.store(h{k}_ptr + o, s{k}, mask=mask)" for k in states]
    body += [f"e{k} = {writer.expression(op)}" for k, op in enumerate(step.ops)]
    spikes = writer.operand(step.spikes, "float")
    # the new states, assigned together (a state may take another's old value)
    news = [(k, writer.operand(ref, _state_type(step, k))) for k, ref in step.updated.items()]
    body.append(f"spikes = {spikes}")
    body.append("tl.store(out_ptr + o, spikes, mask=mask)")
    body.append("if TRACE:")
    body.append("    tr = trace_next(tr * t_decay, t_scale, spikes, ADDITIVE, FMA)")
    body += [f"n{k} = {value}" for k, value in news]
    body += [f"s{k} = n{k}" for k, _ in news]
    body.append("o += size")
    loads = [f"s{k} = tl.load(s{k}_ptr + offs, mask=mask)" for k in states]
    loads += [
        "if TRACE:",
        "    tr = tl.load(tr_ptr + offs, mask=mask)",
        "    t_decay = tl.load(tc_ptr + j, mask=mask)",
        "    t_scale = tl.load(tc_ptr + n + j, mask=mask)",
    ]
    stores = [f"tl.store(s{k}_ptr + offs, s{k}, mask=mask)" for k, _ in news]
    stores += ["if TRACE:", "    tl.store(tr_ptr + offs, tr, mask=mask)"]
    arguments = ", ".join(
        ["x_ptr", "out_ptr"]
        + [f"s{k}_ptr" for k in states]
        + [f"u{k}_ptr" for k in uniforms]
        + [f"h{k}_ptr" for k in states]
        + ["tr_ptr", "tc_ptr"]
    )
    inner = "\n".join("        " + line for line in body)
    final = "".join("\n    " + line for line in stores)
    return f"""@triton.jit
def pysnn_generated(
    {arguments},
    steps,
    size,
    n,
    HISTORY: tl.constexpr,
    TRACE: tl.constexpr,
    ADDITIVE: tl.constexpr,
    FMA: tl.constexpr,
    BLOCK: tl.constexpr,
):
{_prologue(writer, _ELEMENTS, "mask", loads)}
    o = offs
    for _ in range(steps):
{inner}{final}
"""


def _shared_forward(step: "Step", device: torch.device) -> str:
    """The forward kernel of a step with per-neuron state (:attr:`~pysnn.codegen.Step.shared`):
    a program owns ``COLS`` neurons and every sample of them, and keeps their per-neuron state
    in registers through the steps. At each step it computes the per-neuron values the
    elements read (:attr:`~pysnn.codegen.Step.per_neuron_values`), runs the step's elements
    ``ROWS`` samples at a time (the per-element state and trace loaded and stored at each
    step), adding up each neuron's 0/1 spikes (the sums over the batch: whole numbers, exact in
    any order while the batch fits :attr:`~pysnn.codegen.NeuronKernel.max_batch`), then
    computes the neuron pass (:attr:`~pysnn.codegen.Step.batch_ops`) and the new per-neuron
    state, as the C writer's :func:`~pysnn.codegen._c_neuron_pass`. No program reads another's
    values: no atomics, the same results at every launch."""
    writer = _Writer(step, device.type == "cuda")
    states, shared = range(len(step.states)), range(len(step.shared))
    uniforms = range(len(step.uniforms))
    zero = writer.constant(0.0, "float")
    sums = [k for k, op in enumerate(step.batch_ops) if op.kind == "batch_sum"]
    # per step: the per-neuron values (they read the per-neuron state, uniforms and numbers
    # only, unchanged until the neuron pass), the sums started
    body = [f"e{k} = {writer.expression(step.ops[k])}" for k in sorted(step.per_neuron_values)]
    body += [f"count{k} = tl.zeros((1, COLS), {writer.dtype})" for k in sums]
    # the elements, ROWS samples of the program's neurons at a time
    rows = [
        "offs = (first + samples).to(tl.int64) * n + j",
        "mask = (first + samples < batch) & jmask",
        "in_x = tl.load(x_ptr + o + offs, mask=mask)",
    ]
    rows += [f"s{k} = tl.load(s{k}_ptr + offs, mask=mask)" for k in states]
    rows += [
        f"e{k} = {writer.expression(op)}"
        for k, op in enumerate(step.ops)
        if k not in step.per_neuron_values
    ]
    rows.append(f"spikes = {writer.operand(step.spikes, 'float')}")
    rows.append("tl.store(out_ptr + o + offs, spikes, mask=mask)")
    rows += [
        "if TRACE:",
        "    tr = tl.load(tr_ptr + offs, mask=mask)",
        "    tr = trace_next(tr * t_decay, t_scale, spikes, ADDITIVE, FMA)",
        "    tl.store(tr_ptr + offs, tr, mask=mask)",
    ]
    # (every new value computed before the stores: a state may take another's old value)
    news = [(k, writer.operand(ref, _state_type(step, k))) for k, ref in step.updated.items()]
    rows += [f"n{k} = {value}" for k, value in news]
    rows += [f"tl.store(s{k}_ptr + offs, n{k}, mask=mask)" for k, _ in news]
    rows += [
        f"count{k} += tl.sum(tl.where(mask, {writer.operand(step.batch_ops[k].args[0], 'float')}, "
        f"{zero}), axis=0, keep_dims=True)"
        for k in sums
    ]
    body.append("for first in range(0, batch, ROWS):")
    body += ["    " + line for line in rows]
    # the neuron pass: the operations on the sums, then the new per-neuron state
    body += [
        f"b{k} = count{k}" if op.kind == "batch_sum" else f"b{k} = {writer.expression(op)}"
        for k, op in enumerate(step.batch_ops)
    ]
    shared_news = [(k, writer.operand(ref, "float")) for k, ref in step.shared_updated.items()]
    body += [f"q{k} = {value}" for k, value in shared_news]
    body += [f"p{k} = q{k}" for k, _ in shared_news]
    body.append("o += size")
    first = [
        "j = tl.program_id(0).to(tl.int64) * COLS + tl.arange(0, COLS)[None, :]",
        "jmask = j < n",
        "samples = tl.arange(0, ROWS)[:, None]",
        "batch = size // n",
    ]
    loads = [f"p{k} = tl.load(p{k}_ptr + j, mask=jmask)" for k in shared]
    loads += [
        "if TRACE:",
        "    t_decay = tl.load(tc_ptr + j, mask=jmask)",
        "    t_scale = tl.load(tc_ptr + n + j, mask=jmask)",
    ]
    stores = "".join(f"\n    tl.store(p{k}_ptr + j, p{k}, mask=jmask)" for k, _ in shared_news)
    arguments = ", ".join(
        ["x_ptr", "out_ptr"]
        + [f"s{k}_ptr" for k in states]
        + [f"p{k}_ptr" for k in shared]
        + [f"u{k}_ptr" for k in uniforms]
        + ["tr_ptr", "tc_ptr"]
    )
    inner = "\n".join("        " + line for line in body)
    return f"""@triton.jit
def pysnn_generated(
    {arguments},
    steps,
    size,
    n,
    TRACE: tl.constexpr,
    ADDITIVE: tl.constexpr,
    FMA: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
{_prologue(writer, first, "jmask", loads)}
    o = tl.full((), 0, tl.int64)
    for _ in range(steps):
{inner}{stores}
"""


def _backward(step: "Step", device: torch.device) -> str:
    """The backward kernel (BPTT), as the C writer's: for ``t`` from the last step down, step
    ``t``'s values recomputed from the saved state, the adjoints zeroed, the spikes' and the
    new states' gradients added where they enter (:meth:`~pysnn.codegen.Step.seeds`), each
    operation's adjoints (:meth:`~pysnn.codegen.Op.adjoints`) applied in reverse order, the
    input's gradient stored; the floating-point states' gradients carried in registers to the
    step before (an ``int64`` state, a refractory counter, has none: its ``gs{k}`` is neither
    read nor written)."""
    writer = _Writer(step, device.type == "cuda")
    states, uniforms = range(len(step.states)), range(len(step.uniforms))
    floating = [k for k in states if _state_type(step, k) == "float"]
    body = ["in_x = tl.load(x_ptr + o, mask=mask)"]
    body += [f"s{k} = tl.load(h{k}_ptr + o, mask=mask)" for k in states]
    body += [f"e{k} = {writer.expression(op)}" for k, op in enumerate(step.ops)]
    surrogate = writer.surrogate()
    adjoints: List[List[str]] = []  # in forward order, applied reversed
    for k, op in enumerate(step.ops):
        if op.result == "float":
            grads = [step.gradient(ref) for ref in op.args]
            adjoints.append(op.adjoints(writer.operands(op), grads, f"g_e{k}", surrogate, writer))
    zeros = ["g_in_x"] + [f"g_s{k}" for k in floating]
    zeros += [f"g_e{k}" for k, op in enumerate(step.ops) if op.result == "float"]
    body += [f"{v} = zero" for v in zeros]
    spikes, targets = step.seeds()
    body.append(f"{spikes} = {spikes} + tl.load(gout_ptr + o, mask=mask)")
    body += [f"{target} = {target} + gn{k}" for target, k in targets]
    body += [line for block in reversed(adjoints) for line in block]
    body.append("tl.store(gx_ptr + o, g_in_x, mask=mask)")
    body += [f"gn{k} = g_s{k}" for k in floating]
    body.append("o -= size")
    loads = [f"gn{k} = tl.load(gs{k}_ptr + offs, mask=mask)" for k in floating]
    loads.append(f"zero = tl.zeros([BLOCK], {writer.dtype})")
    stores = "".join(f"\n    tl.store(gs{k}_ptr + offs, gn{k}, mask=mask)" for k in floating)
    arguments = ", ".join(
        ["x_ptr", "gout_ptr", "gx_ptr"]
        + [f"gs{k}_ptr" for k in states]
        + [f"u{k}_ptr" for k in uniforms]
        + [f"h{k}_ptr" for k in states]
    )
    inner = "\n".join("        " + line for line in body)
    return f"""@triton.jit
def pysnn_generated_backward(
    {arguments}, steps, last, size, n, FMA: tl.constexpr, BLOCK: tl.constexpr
):
{_prologue(writer, _ELEMENTS, "mask", loads)}
    o = offs + last
    for _ in range(steps):
{inner}{stores}
"""


#: the most samples a program of a kernel with per-neuron state runs at a time (fewer where
#: the batch is smaller: its other lanes are neurons)
_ROWS = 8


def triton_kernel(step: "Step", device: torch.device) -> Tuple[str, "Launch", Optional["Gradient"]]:
    """Write ``step`` as Triton for ``device`` and load it: its source, forward kernel (a
    :data:`~pysnn.codegen.Launch`) and backward kernel (a :data:`~pysnn.codegen.Gradient`;
    ``None`` where the step has none).

    Raises:
        ValueError: the source could not be loaded as a Triton kernel (the message says why).
    """
    source = write_triton(step, device)
    module = _load(source)
    kernel = module.pysnn_generated
    shared = bool(step.shared)

    def launch(
        steps: int,
        size: int,
        n: int,
        x: torch.Tensor,
        out: torch.Tensor,
        states: Sequence[torch.Tensor],
        uniforms: Sequence[torch.Tensor],
        history: Sequence[Optional[torch.Tensor]],
        trace: Optional["TraceUpdate"],
    ) -> None:
        keep = any(h is not None for h in history)
        if keep and not all(h is not None for h in history):
            raise ValueError("a generated Triton kernel keeps the history of every state or none")
        if keep and shared:
            raise ValueError(
                "a generated Triton kernel with per-neuron state keeps no history (it has no "
                "backward kernel)"
            )
        if not size:
            return
        # (x for the trace's pointers without TRACE: neither read nor written)
        tr, table = (x, x) if trace is None else (trace.trace, trace.constants.table)
        options = dict(
            TRACE=trace is not None,
            ADDITIVE=trace is not None and trace.constants.additive,
            FMA=fuses_multiply_add(x.device),
            **LAUNCH,
        )
        if shared:
            rows = min(triton.next_power_of_2(size // n), _ROWS)
            grid = (triton.cdiv(n, BLOCK // rows),)
            kernel[grid](
                x,
                out,
                *states,
                *uniforms,
                tr,
                table,
                steps,
                size,
                n,
                ROWS=rows,
                COLS=BLOCK // rows,
                **options,
            )
            return
        saved = history if keep else [x] * len(history)  # (not written without HISTORY)
        grid = (triton.cdiv(size, BLOCK),)
        kernel[grid](
            x,
            out,
            *states,
            *uniforms,
            *saved,
            tr,
            table,
            steps,
            size,
            n,
            HISTORY=keep,
            BLOCK=BLOCK,
            **options,
        )

    if not step.differentiable():
        return source, launch, None
    backward = module.pysnn_generated_backward

    def gradient(
        steps: int,
        size: int,
        n: int,
        x: torch.Tensor,
        g_out: torch.Tensor,
        g_x: torch.Tensor,
        g_states: Sequence[torch.Tensor],
        uniforms: Sequence[torch.Tensor],
        history: Sequence[torch.Tensor],
    ) -> None:
        if size and steps:
            grid = (triton.cdiv(size, BLOCK),)
            last = (steps - 1) * size  # the offset of the last step
            backward[grid](
                x,
                g_out,
                g_x,
                *g_states,
                *uniforms,
                *history,
                steps,
                last,
                size,
                n,
                FMA=fuses_multiply_add(x.device),
                BLOCK=BLOCK,
                **LAUNCH,
            )

    return source, launch, gradient


def _load(source: str) -> Any:
    """The module of ``source`` (its kernels), written to the private directory and imported
    once per process."""
    global _folder
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    with _lock:
        module = _modules.get(digest)
        if module is not None:
            return module
        if _folder is None:
            _folder = tempfile.mkdtemp(prefix="pysnn-triton-")  # mode 0700
        path = os.path.join(_folder, f"generated_{digest}.py")
        with open(path, "w") as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location(f"pysnn_generated_{digest}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # a writer's defect: the neuron keeps its torch step
            raise ValueError(f"the generated Triton kernel did not load: {err}") from None
        _modules[digest] = module
        return module
