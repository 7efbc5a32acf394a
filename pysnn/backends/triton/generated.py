"""The Triton writer of generated kernels: a recorded :class:`~pysnn.codegen.Step` as one
Triton kernel over all ``T`` steps (see :mod:`pysnn.codegen`).

The kernel has the layout of the built-in Triton kernels (:mod:`pysnn.backends.triton.lif`): a
program owns :data:`~pysnn.backends.triton.common.BLOCK` elements of the flattened ``(B, n)``
state (64-bit offsets), loads the state and the uniforms once (a per-neuron uniform at
``offs % n``), keeps the state in registers through a loop over the steps, and stores it once.
Each :class:`~pysnn.codegen.Op` is one Triton expression in torch's order and dtype:

- a Python number is a constant of the kernel's dtype (``tl.full((), value, tl.float64)``),
  rounded once from the Python float as torch rounds it (a bare literal would be float32);
- division is correctly rounded: ``tl.div_rn`` in float32 (Triton's ``/`` on float32 is
  approximate on a GPU), ``/`` in float64 (already correctly rounded). On CUDA, torch divides by a Python number as a product with its reciprocal (computed
  in the dtype), and so does the kernel there;
- ``fire`` is ``(z >= 0).to(dtype)``, comparisons and logic give ``bool`` tensors, ``where``
  is ``tl.where``, ``clamp`` two ``tl.where`` as the C writer's;
- the kernel is launched with ``enable_fp_fusion=False``
  (:data:`~pysnn.backends.triton.common.LAUNCH`): no product and sum is fused.

Under Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) the tests find the results the
step loop's bit for bit; on a GPU, where no test here runs, the operations written (sums,
products, correctly rounded divisions, comparisons, selections) are the ones torch's CUDA
kernels do, so the same is expected.

The source is written to a ``.py`` file in a private directory (``tempfile.mkdtemp``, mode
0700) and imported, so that ``triton.jit`` can read it; kernels are kept in this process by
the SHA-256 of their source. No backward kernel is written: under autograd the neuron runs its
torch step.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import triton

from pysnn.backends.triton.common import BLOCK, LAUNCH

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from pysnn.codegen import Launch, Op, Ref, Step

__all__ = ["triton_kernel", "write_triton"]

_TL = {torch.float32: "tl.float32", torch.float64: "tl.float64"}
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
_kernels: Dict[str, Callable[..., None]] = {}


class _Writer:
    """Writes the expressions of one step: operands converted to what each operation reads,
    numbers as constants of the dtype declared once before the loop."""

    def __init__(self, step: "Step", cuda: bool) -> None:
        self.step = step
        self.cuda = cuda
        self.dtype = _TL[step.dtype]
        self.constants: Dict[Tuple[str, str], Tuple[str, str]] = {}  # key -> (name, literal)

    def constant(self, value: Union[bool, float], want: str) -> str:
        """The name of a constant ``value`` of the dtype (``want == "float"``) or ``bool``."""
        if want == "bool":
            key, literal = ("bool", repr(bool(value))), f"tl.full((), {bool(value)!r}, tl.int1)"
        else:
            key = ("float", repr(float(value)))
            literal = f"tl.full((), {float(value)!r}, {self.dtype})"
        if key not in self.constants:
            self.constants[key] = (f"c{len(self.constants)}", literal)
        return self.constants[key][0]

    def operand(self, ref: "Ref", want: str) -> str:
        """``ref`` as a Triton expression of ``want`` (``"float"``: the dtype, or ``"bool"``)."""
        if ref.kind == "number":
            return self.constant(ref.value, want)
        name = {"x": "in_x", "state": "s", "uniform": "u", "value": "e"}[ref.kind]
        name += "" if ref.kind == "x" else str(ref.index)
        held = self.step.result(ref)
        if held == want:
            return name
        return f"({name} != 0)" if want == "bool" else f"{name}.to({self.dtype})"

    def expression(self, op: "Op") -> str:
        """``op`` as a Triton expression of its result."""
        kind, args = op.kind, op.args
        want = "bool" if kind in ("and", "or") else "float"
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
        elif kind == "where":
            branches = [self.operand(ref, op.result) for ref in args[1:]]
            expression = f"tl.where({a}, {branches[0]}, {branches[1]})"
        elif kind == "clamp":  # as the C writer: below the lower bound, then above the upper
            expression = a
            lo, hi = (None if r is None else self.operand(r, "float") for r in args[1:])
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


def write_triton(step: "Step", device: torch.device) -> str:
    """The Triton source of ``step``'s forward kernel for ``device``: a module defining
    ``pysnn_generated(x, out, s0.., u0.., steps, size, n, BLOCK)``."""
    writer = _Writer(step, device.type == "cuda")
    states, uniforms = range(len(step.states)), range(len(step.uniforms))
    body = [f"e{k} = {writer.expression(op)}" for k, op in enumerate(step.ops)]
    spikes = writer.operand(step.spikes, "float")
    # the new states, assigned together (a state may take another's old value)
    news = [(k, writer.operand(ref, "float")) for k, ref in step.updated.items()]
    body.append(f"tl.store(out_ptr + o, {spikes}, mask=mask)")
    body += [f"n{k} = {value}" for k, value in news]
    body += [f"s{k} = n{k}" for k, _ in news]
    loads = [f"s{k} = tl.load(s{k}_ptr + offs, mask=mask)" for k in states]
    loads += [
        (
            f"u{k} = tl.load(u{k}_ptr + j, mask=mask)"
            if step.per_neuron[k]
            else f"u{k} = tl.load(u{k}_ptr)"
        )
        for k in uniforms
    ]
    stores = [f"tl.store(s{k}_ptr + offs, s{k}, mask=mask)" for k, _ in news]
    arguments = ", ".join(
        ["x_ptr", "out_ptr"] + [f"s{k}_ptr" for k in states] + [f"u{k}_ptr" for k in uniforms]
    )
    inner = "\n".join("        " + line for line in body)
    loads += [f"{name} = {literal}" for name, literal in writer.constants.values()]
    outer = "\n".join("    " + line for line in loads)
    final = "".join("\n    " + line for line in stores)
    return f'''"""generated by pysnn.backends.triton.generated for {step.neuron}.step"""
import triton
import triton.language as tl


@triton.jit
def pysnn_generated({arguments}, steps, size, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < size
    j = offs % n
{outer}
    o = offs
    for _ in range(steps):
        in_x = tl.load(x_ptr + o, mask=mask)
{inner}
        o += size{final}
'''


def triton_kernel(step: "Step", device: torch.device) -> Tuple[str, "Launch"]:
    """Write ``step`` as Triton for ``device`` and load it: its source and forward kernel (a
    :data:`~pysnn.codegen.Launch`).

    Raises:
        ValueError: the source could not be loaded as a Triton kernel (the message says why).
    """
    source = write_triton(step, device)
    kernel = _load(source)

    def launch(
        steps: int,
        size: int,
        n: int,
        x: torch.Tensor,
        out: torch.Tensor,
        states: Sequence[torch.Tensor],
        uniforms: Sequence[torch.Tensor],
        history: Sequence[Optional[torch.Tensor]],
    ) -> None:
        if any(h is not None for h in history):
            raise ValueError("a generated Triton kernel keeps no history (it has no backward)")
        if size:
            grid = (triton.cdiv(size, BLOCK),)
            kernel[grid](x, out, *states, *uniforms, steps, size, n, BLOCK=BLOCK, **LAUNCH)

    return source, launch


def _load(source: str) -> Callable[..., None]:
    """The ``pysnn_generated`` kernel of ``source``, written to the private directory and
    imported once per process."""
    global _folder
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    with _lock:
        kernel = _kernels.get(digest)
        if kernel is not None:
            return kernel
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
        kernel = _kernels[digest] = module.pysnn_generated
        return kernel
