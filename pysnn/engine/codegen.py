"""Generated kernels for user-written neurons: a neuron's ``step``, recorded once, as C code.

A neuron written on the public API (:meth:`~pysnn.neuron.Neuron.register_constant`,
:meth:`~pysnn.neuron.Neuron.register_state`, ``step``) runs its ``step`` as torch operations, a
few small kernels per step. Inside a layer-wise plan (:mod:`pysnn.engine.plan`) the engine
instead **generates** one C loop for all ``T`` steps of it, as Brian2 generates code from a
model's equations:

1. **Record.** ``step`` runs once on a copy of the neuron under a
   :class:`~torch.overrides.TorchFunctionMode` that notes every torch operation, the way a JAX
   trace runs a function on concrete values.
2. **Split.** Operations on constants only (``torch.exp(-dt / tau_v)``) are *uniform*: their
   values, computed by torch, are taken as they are and reused while a
   :class:`~pysnn._guards.Guard` says the constants (and ``dt``) are unchanged. Operations on
   the input or the state are *per element* and become C expressions.
3. **Generate** a loop over steps and elements with one C expression per operation, in
   torch's order and dtype. It is compiled with ``-ffp-contract=off`` by
   :func:`pysnn.native.compile_generated`, so each operation rounds as torch's does, and the
   results are the step loop's bit for bit (the tests compare them).

Per-element operations that can be generated: ``+ - * /`` (tensor or Python number operands,
the number rounded to the tensor's dtype as torch does), negation, ``abs``, comparisons,
``where``, ``clamp``, conversions between the floating-point dtype and ``bool`` (``fire``'s
Heaviside step). Anything else (a transcendental function of the state such as ``torch.exp(v)``,
whose vectorised torch result can differ from C's in the last bit; an in-place operation; a
read of a value back to Python; an integer state; a random draw, which the step loop makes
anew at every step) keeps the neuron on its torch step, and
:func:`pysnn.engine.explain` says which operation.

**Gradients.** ``fire`` is recorded as one operation with the neuron's surrogate (a built-in
:mod:`pysnn.surrogate` class, or none). Under autograd the forward kernel keeps each step's
state, and a generated backward kernel recomputes each step from it and applies each
operation's adjoint in reverse: backpropagation through time. The gradients equal the step
loop's up to rounding (the tests compare them in float64). A neuron with an ``nn.Parameter``
constant, or another surrogate, runs its torch step under autograd.
"""

from __future__ import annotations

import copy
import ctypes
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.overrides import TorchFunctionMode

from pysnn import backends, native
from pysnn._checks import check_input
from pysnn._guards import Guard
from pysnn.functional.trace import trace_step
from pysnn.neuron import Neuron

__all__ = ["NeuronKernel", "generate"]

#: per-element operations, by the name of the torch function or tensor method the recorder sees:
#: C templates over the operands ``a`` and ``b``
_BINARY: Dict[str, str] = {
    "add": "({a} + {b})",
    "__radd__": "({b} + {a})",
    "sub": "({a} - {b})",
    "__rsub__": "({b} - {a})",
    "mul": "({a} * {b})",
    "__rmul__": "({b} * {a})",
    "div": "({a} / {b})",
    "true_divide": "({a} / {b})",
    "__rdiv__": "({b} / {a})",
    "__rtruediv__": "({b} / {a})",
    "ge": "({a} >= {b})",
    "gt": "({a} > {b})",
    "le": "({a} <= {b})",
    "lt": "({a} < {b})",
    "eq": "({a} == {b})",
    "ne": "({a} != {b})",
    "logical_and": "({a} && {b})",
    "logical_or": "({a} || {b})",
    "__and__": "({a} && {b})",
    "__or__": "({a} || {b})",
}
_UNARY: Dict[str, str] = {
    "neg": "(-{a})",
    "negative": "(-{a})",
    "logical_not": "(!{a})",
    "__invert__": "(!{a})",
}
_CTYPES = {torch.float32: "float", torch.float64: "double"}
_IGNORED = (type(None), bool, int, float, str, torch.dtype, torch.device, torch.Size, tuple)


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


@dataclass
class NeuronKernel:
    """A generated ``T``-step kernel of one neuron class and configuration.

    Attributes:
        source: the C source.
        states: the state variables the step updates, in the kernel's argument order.
        uniforms: the uniform values (tensors computed by torch from the constants).
    """

    source: str
    states: List[str]
    uniforms: List[torch.Tensor]
    guard: Guard
    dt: float
    dtype: torch.dtype
    function: Callable[..., None]
    gradient: Optional[Callable[..., None]] = None

    def applies(self, neuron: Neuron, x: torch.Tensor) -> bool:
        """Whether this kernel may run ``neuron`` on ``x`` ``(T, B, *shape)`` now: the same
        constants (bytes) and ``dt`` as when generated, the kernel's dtype, a CPU input that
        needs no gradient, no clamp pending."""
        graph = torch.is_grad_enabled() and (
            x.requires_grad
            or any(
                neuron._buffers[s].requires_grad
                for s in self.states
                if neuron._buffers.get(s) is not None
            )
        )
        return (
            x.dtype is self.dtype
            and x.is_cpu
            and not (graph and (self.gradient is None or neuron._parameters))
            and neuron.dt == self.dt
            and neuron.__dict__.get("_override") is None
            and not torch.compiler.is_compiling()
            and self.guard.holds()
        )

    def run(self, neuron: Neuron, x: torch.Tensor) -> torch.Tensor:
        """``T`` steps of ``neuron`` on ``x`` ``(T, B, *shape)``: its spikes ``(T, B, *shape)``,
        its state left as after ``T`` calls (the trace updated step by step as
        :meth:`~pysnn.neuron.Neuron.forward` does)."""
        steps, batch = x.shape[0], x.shape[1]
        flat = x.reshape(steps * batch, *x.shape[2:])
        check_input("x", flat, neuron.shape, neuron._reference(), type(neuron).__name__)
        neuron._prepare(x[0])
        x = x.contiguous()
        buffers = neuron._buffers
        n = math.prod(neuron.shape)
        inputs = [buffers[name] for name in self.states]
        if torch.is_grad_enabled() and (x.requires_grad or any(s.requires_grad for s in inputs)):
            out, *states = _GeneratedSteps.apply(self, n, x, *inputs)
            neuron._count_graph_step(steps)
        else:
            states = [s.clone() for s in inputs]  # replaced, never edited
            out = torch.empty_like(x)
            self.function(
                steps,
                batch * n,
                n,
                x.data_ptr(),
                out.data_ptr(),
                *(s.data_ptr() for s in states),
                *(u.data_ptr() for u in self.uniforms),
                *([None] * len(states)),
            )
        for name, value in zip(self.states, states):
            buffers[name] = value
        if neuron.spiking:
            params = neuron.trace_parameters()
            trace = trace_step(buffers["trace"], out[0], params, neuron._spare("trace"))
            for t in range(1, steps):
                trace = trace_step(trace, out[t], params, trace)
            buffers["trace"] = trace
            buffers["spikes"] = out[-1]
        return out


def _number(value: Any, ctype: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"(({ctype}){float(value)!r})"
    raise _Refused(f"the number {value!r} cannot be written as C")


def generate(neuron: Neuron, example: torch.Tensor) -> Tuple[Optional[NeuronKernel], str]:
    """Generate the ``T``-step kernel of ``neuron`` for step inputs like ``example``
    ``(B, *shape)``; ``(None, why not)`` where it cannot be generated."""
    try:
        return _generate(neuron, example), ""
    except _Refused as why:
        return None, str(why)


def _generate(neuron: Neuron, example: torch.Tensor) -> NeuronKernel:
    dtype = example.dtype
    ctype = _CTYPES.get(dtype)
    if ctype is None or not example.is_cpu:
        raise _Refused("generated kernels are for float32/float64 CPU tensors")
    if not backends.enabled("c"):
        raise _Refused("no C compiler or fused kernels off (PYSNN_NATIVE=0)")
    if any(True for _ in neuron.children()):
        raise _Refused(f"{type(neuron).__name__} holds other modules (their state is not its own)")
    twin = copy.deepcopy(neuron)
    twin.reset_state()
    twin._prepare(example)
    names = [n for n in twin._state_specs if n not in ("spikes", "trace")]
    before = {name: twin._buffers[name] for name in names}
    for name, value in before.items():
        if value.dtype is not dtype or not value.is_contiguous() or value.shape != example.shape:
            raise _Refused(
                f"state {name!r} is not a contiguous {dtype} tensor of the input's shape"
            )
    kept = {name: twin._buffers[name] for name in ("spikes", "trace") if name in twin._buffers}
    x = example.detach().clone()
    record = _Record()

    def fire(z: torch.Tensor) -> torch.Tensor:  # the spike, recorded as one operation
        with torch._C.DisableTorchFunction():
            spike = (z >= 0).to(z.dtype)
        record.ops.append(("fire", (z,), {}, spike))
        return spike

    twin.fire = fire
    with torch.no_grad(), torch.random.fork_rng(devices=[]), record:  # (draws nothing for real)
        spikes = twin.step(x)
    if record.random is not None:
        raise _Refused(
            f"step draws random numbers ({record.random}); the step loop draws anew every step"
        )
    for name, value in kept.items():
        if twin._buffers[name] is not value:
            raise _Refused(f"step assigns {name!r} itself")
    constants = [
        t for k, t in twin._buffers.items() if k not in twin._state_specs and t is not None
    ]
    constants += [t for t in twin._parameters.values() if t is not None]
    # what a per-element operation may read as uniform: the constants, and what torch computed
    # from them (and from numbers) alone during the step
    allowed = {id(t) for t in constants}
    element: Dict[int, str] = {id(x): "in_x"}  # tensor id -> C expression (a local variable)
    for k, name in enumerate(names):
        element[id(before[name])] = f"s{k}"
    uniforms: List[torch.Tensor] = []
    uniform_index: Dict[int, str] = {}
    lines: List[str] = []
    adjoints: List[str] = []  # the backward statements, in forward order (emitted reversed)
    grad_of: Dict[int, str] = {id(x): "g_in_x"}  # tensor id -> its adjoint variable
    for k, name in enumerate(names):
        grad_of[id(before[name])] = f"g_s{k}"
    surrogate = _surrogate_derivative(neuron.surrogate, ctype)
    n = math.prod(neuron.shape)
    keep: List[Any] = []  # the recorded tensors stay alive: their ids stay unique

    def operand(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            if id(value) in element:
                return element[id(value)]
            if value.dtype not in (dtype, torch.bool):
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
                flat = flat.to(dtype).contiguous()
                uniform_index[id(value)] = f"u{len(uniforms)}[{'j' if by_neuron else '0'}]"
                uniforms.append(flat)
                keep.append(value)
            return uniform_index[id(value)]
        return _number(value, ctype)

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
            raise _Refused(f"step reads a per-element value back to Python ({name})")
        if out.shape != example.shape:
            raise _Refused(f"{name} gives shape {tuple(out.shape)}, not the input's")
        if name.endswith("_") and not name.startswith("__"):
            raise _Refused(f"step changes a tensor in place ({name})")
        if out.dtype not in (dtype, torch.bool):
            raise _Refused(f"{name} gives {out.dtype}")
        variable = f"e{len(lines)}"
        g = f"g_{variable}"
        grads = [grad_of.get(id(v)) if isinstance(v, torch.Tensor) else None for v in args]
        backward: List[str] = []  # what this operation adds to its operands' adjoints
        if name == "fire" and len(args) == 1:
            a = operand(args[0])
            expression = f"(({ctype})({a} >= ({ctype})0))"
            if grads[0]:
                backward.append(f"{grads[0]} += {g} * {surrogate.format(a=a)};")
        elif name in _BINARY and len(args) == 2 and not kwargs:
            a, b = operand(args[0]), operand(args[1])
            expression = _BINARY[name].format(a=a, b=b)
            backward += _binary_adjoints(name, a, b, g, grads[0], grads[1])
        elif name in _UNARY and len(args) == 1 and not kwargs:
            expression = _UNARY[name].format(a=operand(args[0]))
            if grads[0] and name in ("neg", "negative"):
                backward.append(f"{grads[0]} -= {g};")
        elif name == "where" and len(args) == 3 and not kwargs:
            c, a, b = (operand(v) for v in args)
            expression = f"({c} ? {a} : {b})"
            if grads[1]:
                backward.append(f"if ({c}) {grads[1]} += {g};")
            if grads[2]:
                backward.append(f"if (!{c}) {grads[2]} += {g};")
        elif name in ("abs", "__abs__") and len(args) == 1 and not kwargs:
            a = operand(args[0])
            expression = f"({a} < 0 ? -{a} : ({a} == 0 ? ({ctype})0 : {a}))"
            if grads[0]:
                backward.append(f"{grads[0]} += ({a} > 0 ? {g} : ({a} < 0 ? -{g} : 0));")
        elif name in ("clamp", "clip", "clamp_min", "clamp_max"):
            a = operand(args[0])
            lo = kwargs.get("min", args[1] if len(args) > 1 and name != "clamp_max" else None)
            hi = kwargs.get("max", args[2] if len(args) > 2 else None)
            if name == "clamp_max":
                lo, hi = None, args[1]
            expression, inside = a, []
            if lo is not None:
                expression = f"({expression} < {operand(lo)} ? {operand(lo)} : {expression})"
                inside.append(f"{a} >= {operand(lo)}")
            if hi is not None:
                expression = f"({expression} > {operand(hi)} ? {operand(hi)} : {expression})"
                inside.append(f"{a} <= {operand(hi)}")
            if grads[0]:
                backward.append(f"if ({' && '.join(inside) or '1'}) {grads[0]} += {g};")
        elif name in ("to", "float", "double", "type_as") and out.dtype is dtype:
            expression = f"(({ctype}){operand(args[0])})"
            if grads[0] and isinstance(args[0], torch.Tensor) and args[0].dtype is dtype:
                backward.append(f"{grads[0]} += {g};")
        elif name == "to" and out.dtype is torch.bool:
            expression = f"({operand(args[0])} != 0)"
        else:
            raise _Refused(
                f"{name} cannot be generated (not an elementwise operation pysnn writes)"
            )
        kind = "bool" if out.dtype is torch.bool else "float"
        lines.append(f"{'int' if kind == 'bool' else ctype} {variable} = {expression};")
        element[id(out)] = variable
        if kind == "float":
            grad_of[id(out)] = g
            adjoints.append("\n".join(backward))
    if not isinstance(spikes, torch.Tensor) or id(spikes) not in element:
        raise _Refused("step returns a value that does not depend on its input or state")
    updated = [k for k, name in enumerate(names) if twin._buffers[name] is not before[name]]
    for k in updated:
        if id(twin._buffers[names[k]]) not in element:
            raise _Refused(f"state {names[k]!r} is set to a value computed outside the step")
    body = "\n".join("            " + line for line in lines)
    final = {k: twin._buffers[names[k]] for k in range(len(names))}
    stores = "".join(f"\n            s{k}_[i] = {element[id(final[k])]};" for k in updated)
    loads = "".join(f"\n            {ctype} s{k} = s{k}_[i];" for k in range(len(names)))
    history = "".join(
        f"\n            if (h{k}) h{k}[t * size + i] = s{k};" for k in range(len(names))
    )
    arguments = "".join(
        [f", {ctype} *restrict s{k}_" for k in range(len(names))]
        + [f", const {ctype} *restrict u{k}" for k in range(len(uniforms))]
        + [f", {ctype} *restrict h{k}" for k in range(len(names))]
    )
    source = f"""/* generated by pysnn.engine.codegen for {type(neuron).__name__}.step */
#include <math.h>
#include <stdint.h>

void pysnn_generated(int64_t steps, int64_t size, int64_t n, const {ctype} *restrict x,
                     {ctype} *restrict out{arguments})
{{
    for (int64_t t = 0; t < steps; t++) {{
        const {ctype} *xt = x + t * size;
        {ctype} *ot = out + t * size;
        for (int64_t i = 0; i < size; i++) {{
            int64_t j = i % n;
            (void)j;
            {ctype} in_x = xt[i];{loads}{history}
{body}
            ot[i] = {element[id(spikes)]};{stores}
        }}
    }}
}}
"""
    backward = id(spikes) in grad_of and surrogate is not None
    if backward:  # BPTT: step t's values recomputed from the saved state, adjoints reversed
        zeros = "".join(f"\n            {ctype} {v} = 0;" for v in dict.fromkeys(grad_of.values()))
        seeds = f"\n            {grad_of[id(spikes)]} += got[i];"
        for k in range(len(names)):
            target = grad_of.get(id(final[k]), f"g_s{k}") if k in updated else f"g_s{k}"
            seeds += f"\n            {target} += gs{k}_[i];"
        reverse = "\n".join(
            "            " + line for block in reversed(adjoints) for line in block.splitlines()
        )
        outputs = "".join(f"\n            gs{k}_[i] = g_s{k};" for k in range(len(names)))
        saved = "".join(
            f"\n            {ctype} s{k} = h{k}[t * size + i];" for k in range(len(names))
        )
        gradients = "".join(
            [f", {ctype} *restrict gs{k}_" for k in range(len(names))]
            + [f", const {ctype} *restrict u{k}" for k in range(len(uniforms))]
            + [f", const {ctype} *restrict h{k}" for k in range(len(names))]
        )
        source += f"""
void pysnn_generated_backward(int64_t steps, int64_t size, int64_t n, const {ctype} *restrict x,
                              const {ctype} *restrict gout, {ctype} *restrict gx{gradients})
{{
    for (int64_t t = steps - 1; t >= 0; t--) {{
        const {ctype} *xt = x + t * size;
        const {ctype} *got = gout + t * size;
        {ctype} *gxt = gx + t * size;
        for (int64_t i = 0; i < size; i++) {{
            int64_t j = i % n;
            (void)j;
            {ctype} in_x = xt[i];{saved}
{body}{zeros}{seeds}
{reverse}
            gxt[i] = g_in_x;{outputs}
        }}
    }}
}}
"""
    try:
        library = native.compile_generated(source)
    except (RuntimeError, OSError) as err:
        raise _Refused(f"the generated kernel did not compile: {err}") from None
    pointers = [ctypes.c_void_p] * (2 + 2 * len(names) + len(uniforms))
    function = library.pysnn_generated
    function.argtypes = [ctypes.c_int64] * 3 + pointers
    function.restype = None
    gradient = None
    if backward:
        gradient = library.pysnn_generated_backward
        gradient.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] + pointers
        gradient.restype = None
    guard = Guard([neuron._constant(name) for name in neuron.constant_names])
    return NeuronKernel(
        source=source,
        states=[names[k] for k in range(len(names))],
        uniforms=uniforms,
        guard=guard,
        dt=neuron.dt,
        dtype=dtype,
        function=function,
        gradient=gradient,
    )


def _surrogate_derivative(surrogate: Any, ctype: str) -> Optional[str]:
    """C template (over ``{a}``, the distance above threshold) of the derivative that
    :meth:`~pysnn.neuron.Neuron.fire` uses, or ``None`` where it cannot be written: a built-in
    :mod:`pysnn.surrogate` class (its own exact class), or no surrogate (no gradient)."""
    if surrogate is None:
        return "0"
    code = type(surrogate).__dict__.get("native_code")
    k = f"(({ctype}){float(surrogate.param)!r})" if code else None
    exp = "exp" if ctype == "double" else "expf"
    forms = {
        1: f"(({ctype})1 / (({k} * fabs({{a}}) + 1) * ({k} * fabs({{a}}) + 1)))",
        2: f"((({ctype})0.5 * {k}) / (1 + (({ctype})3.14159265358979323846 * ({ctype})0.5 * {k} * {{a}}) * "
        f"(({ctype})3.14159265358979323846 * ({ctype})0.5 * {k} * {{a}})))",
        3: f"({k} / (1 + {exp}(-{k} * {{a}})) * (1 - 1 / (1 + {exp}(-{k} * {{a}}))))",
        4: f"(1 - fabs({{a}}) / {k} > 0 ? 1 - fabs({{a}}) / {k} : 0)",
        5: f"(fabs({{a}}) <= {k} ? ({ctype})1 : ({ctype})0)",
    }
    if code == 5 and math.isinf(surrogate.param):
        return f"(({ctype})1)"
    return forms.get(code)


def _binary_adjoints(name: str, a: str, b: str, g: str, ga: Optional[str], gb: Optional[str]):
    """Backward statements of the binary operation ``name`` on operands ``a``, ``b`` (C
    expressions), upstream adjoint ``g``, operand adjoints ``ga``, ``gb`` (``None``: no
    gradient wanted, a constant or a number)."""
    if name in ("__rsub__", "__rdiv__", "__rtruediv__"):  # out = b op a
        name, a, b, ga, gb = name.replace("__r", "__").replace("__", ""), b, a, gb, ga
        name = {"sub": "sub", "div": "div", "truediv": "div"}[name]
    lines = []
    if name in ("add", "__radd__"):
        lines += [f"{ga} += {g};"] if ga else []
        lines += [f"{gb} += {g};"] if gb else []
    elif name == "sub":
        lines += [f"{ga} += {g};"] if ga else []
        lines += [f"{gb} -= {g};"] if gb else []
    elif name in ("mul", "__rmul__"):
        lines += [f"{ga} += {g} * {b};"] if ga else []
        lines += [f"{gb} += {g} * {a};"] if gb else []
    elif name in ("div", "true_divide"):
        lines += [f"{ga} += {g} / {b};"] if ga else []
        lines += [f"{gb} -= {g} * {a} / ({b} * {b});"] if gb else []
    return lines  # comparisons and logical operations: no gradient


class _GeneratedSteps(torch.autograd.Function):
    """``T`` steps of a generated kernel under autograd: the forward kernel keeps each step's
    state, the backward kernel recomputes each step from it and runs its adjoints in reverse
    (backpropagation through time with the neuron's surrogate gradient)."""

    @staticmethod
    def forward(ctx, kernel: "NeuronKernel", n: int, x: torch.Tensor, *states: torch.Tensor):
        steps, size = x.shape[0], x[0].numel()
        new = [s.detach().clone() for s in states]
        history = [x.new_empty((steps, *s.shape)) for s in states]
        out = torch.empty_like(x)
        kernel.function(
            steps,
            size,
            n,
            x.data_ptr(),
            out.data_ptr(),
            *(s.data_ptr() for s in new),
            *(u.data_ptr() for u in kernel.uniforms),
            *(h.data_ptr() for h in history),
        )
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
        kernel.gradient(
            steps,
            size,
            ctx.n,
            x.data_ptr(),
            g_out.data_ptr(),
            g_x.data_ptr(),
            *(g.data_ptr() for g in g_states),
            *(u.data_ptr() for u in kernel.uniforms),
            *(h.data_ptr() for h in history),
        )
        return (None, None, g_x, *g_states)
