"""Capture: one time step of a network as a program of module calls.

:func:`capture` traces a network's ``forward`` (one step, ``(B, ...) -> (B, ...)``) with
``torch.fx`` into a :class:`StepProgram`: a graph whose nodes call the network's modules (pysnn
neurons and connections and standard torch modules, never traced into), torch functions on their
results, and reads of module tensors. The planner (:mod:`pysnn.engine.plan`) decides from it how
``T`` steps run; :func:`pysnn.engine.explain` reports it.

Tracing runs the network's Python code once with symbolic values, on a **copy** of the network
that has taken one real step (so its state exists, and nothing the trace does can touch the
network itself). The input has the example's concrete shape (a step may compare shapes; another
shape is planned anew). A learning rule's ``step()`` (or call) in ``forward`` is a node of the
program. What the program cannot see is refused, never ignored: Python control flow on tensor
values, attributes the step assigns (``self.count += 1``), containers it appends to, or any other
change of the copy's tensors during the trace. The network then runs step by step, exactly as
written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from torch.overrides import TorchFunctionMode

import torch
from torch import fx, nn

from pysnn._guards import fingerprint
from pysnn.connection import Connection
from pysnn.learning import LearningRule
from pysnn.neuron import Neuron

__all__ = ["StepProgram", "capture", "is_pysnn_module"]


def is_pysnn_module(module: nn.Module) -> bool:
    """Whether ``module`` is a stateful pysnn module (a neuron, synapse or connection, built in or
    user-written) or any module with a ``forward_multistep``: a leaf of the program."""
    return isinstance(module, (Neuron, Connection)) or callable(
        getattr(module, "forward_multistep", None)
    )


class _ShapedProxy(fx.Proxy):
    """A value during tracing with a concrete shape: the step's input (the example's shape) and
    what a neuron (the same shape) or a connection (``(B, *out_shape)``) returns for it. A step
    may compare shapes (``spikes.shape[0] == x.shape[0]``); another input shape is planned anew."""

    def __init__(self, node: fx.Node, tracer: fx.Tracer, shape: torch.Size) -> None:
        super().__init__(node, tracer)
        self.concrete_shape = shape

    @property
    def shape(self) -> torch.Size:  # type: ignore[override]
        return self.concrete_shape

    def size(self, dim: Optional[int] = None) -> Any:
        return self.concrete_shape if dim is None else self.concrete_shape[dim]

    def dim(self) -> int:
        return len(self.concrete_shape)


class _Tracer(fx.Tracer):
    """Keeps pysnn modules, learning rules and torch's own modules as calls (leaves); traces
    into the rest. ``rule.step()`` (a method, not a module call) is recorded as a call of the
    rule too."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.input_shape = shape

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            is_pysnn_module(m)
            or isinstance(m, LearningRule)
            or super().is_leaf_module(m, module_qualified_name)
        )

    def _shape_of(self, kind: str, target: Any, args: Tuple) -> Optional[torch.Size]:
        if kind == "placeholder":
            return self.input_shape
        if kind != "call_module" or len(args) != 1 or not isinstance(args[0], _ShapedProxy):
            return None
        module, shape = self.root.get_submodule(target), args[0].concrete_shape
        if isinstance(module, Neuron):
            return shape
        if isinstance(module, Connection) and all(isinstance(s, int) for s in module.out_shape):
            return torch.Size((shape[0], *module.out_shape))
        return None

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *more):
        shape = self._shape_of(kind, target, args)
        if shape is not None:
            return super().create_proxy(
                kind, target, args, kwargs, name, type_expr, lambda n: _ShapedProxy(n, self, shape)
            )
        return super().create_proxy(kind, target, args, kwargs, name, type_expr, *more)

    def record_rule_steps(self, root: nn.Module) -> None:
        """Make ``rule.step()`` of every learning rule in ``root`` (a copy) add a node."""
        for name, module in root.named_modules():
            if isinstance(module, LearningRule):

                def step(reward: Any = None, _name: str = name) -> None:
                    args = () if reward is None else (reward,)
                    self.create_proxy("call_module", _name, args, {})

                module.step = step


@dataclass
class StepProgram:
    """One captured step of a network.

    Attributes:
        graph: the ``torch.fx`` graph of one step (``None`` when capture failed).
        modules: qualified name -> module of the **original** network, for every module the
            graph calls or reads.
        reason: why the step could not be captured (``None`` when it was).
        random: qualified names of the modules whose step draws random numbers, ``""`` for the
            network's own ``forward`` (a plan must keep the loop's order of draws).
    """

    graph: Optional[fx.Graph]
    modules: Dict[str, nn.Module] = field(default_factory=dict)
    reason: Optional[str] = None
    random: List[str] = field(default_factory=list)

    @property
    def captured(self) -> bool:
        """Whether the step was captured."""
        return self.graph is not None


def _attributes(root: nn.Module) -> Dict[Tuple[str, str], Tuple[int, object]]:
    """Each module attribute (plain attributes, tensors, containers' lengths) of ``root``'s
    modules, to see what a traced step changed."""
    seen: Dict[Tuple[str, str], Tuple[int, object]] = {}
    for name, module in root.named_modules():
        items = list(module.__dict__.items())
        items += [("buffer " + k, v) for k, v in module._buffers.items()]
        items += [("parameter " + k, v) for k, v in module._parameters.items()]
        for key, value in items:
            if isinstance(value, torch.Tensor):
                seen[(name, key)] = (id(value), fingerprint(value))
            elif isinstance(value, (list, dict, set)):
                seen[(name, key)] = (id(value), len(value))
            else:
                seen[(name, key)] = (id(value), None)
    return seen


class _RandomDraws(TorchFunctionMode):
    """Notes, during one step, which module was running when a torch operation drew random
    numbers (it changed the default generators' state, or was given a generator)."""

    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self.drawn: List[str] = []
        self._stack: List[str] = [""]
        self._handles = []
        for name, module in root.named_modules():
            if name:
                self._handles.append(module.register_forward_pre_hook(self._enter(name)))
                self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module: nn.Module, args: Any) -> None:
            self._stack.append(name)

        return hook

    def _leave(self, module: nn.Module, args: Any, out: Any) -> None:
        self._stack.pop()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    @staticmethod
    def _state() -> List[torch.Tensor]:
        states = [torch.random.get_rng_state()]
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states += torch.cuda.get_rng_state_all()
        return states

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        before = self._state()
        out = func(*args, **kwargs)
        after = self._state()
        if kwargs.get("generator") is not None or any(
            not torch.equal(a, b) for a, b in zip(before, after)
        ):
            name = self._stack[-1]
            if name not in self.drawn:
                self.drawn.append(name)
        return out


def capture(network: nn.Module, example: torch.Tensor) -> StepProgram:
    """Capture one step of ``network`` for a step input shaped like ``example`` ``(B, ...)``.

    The network is not changed: a copy takes one step of ``example`` (under ``torch.no_grad``)
    and is then traced.

    Returns:
        A :class:`StepProgram`; when its ``reason`` is set, the step runs as written.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example must be a tensor (one step's input), got {example!r}")
    if is_pysnn_module(network):  # one module: its own block form is the whole step
        graph = fx.Graph()
        graph.output(graph.call_module("", (graph.placeholder("x"),)))
        return StepProgram(graph, {"": network})
    hooks = nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return StepProgram(
            None, reason="global forward hooks must see every call: the network runs as written"
        )
    # state that carries an autograd graph (a step under grad mode) cannot be deep-copied:
    # the copy gets its values
    memo = {
        id(t): t.detach().clone()
        for module in network.modules()
        for t in list(module._buffers.values()) + list(module._parameters.values())
        if t is not None and t.grad_fn is not None
    }
    try:
        twin = copy.deepcopy(network, memo)
    except Exception as error:  # noqa: BLE001 - any failure: the network runs as written
        return StepProgram(None, reason=f"the network cannot be copied for capture ({error})")
    for module in twin.modules():  # the user's hooks see the network's calls, not the copy's
        for table in (module._forward_hooks, module._forward_pre_hooks):
            table.clear()
    draws = _RandomDraws(twin)
    devices = [example.device] if example.device.type == "cuda" else []
    try:  # the random streams are left as they were: the network draws as if never captured
        with torch.no_grad(), torch.random.fork_rng(devices=devices), draws:
            twin(example)  # the state exists, as in the network after its first step
    except Exception as error:  # noqa: BLE001
        return StepProgram(None, reason=f"one step of a copy of the network failed: {error}")
    finally:
        draws.remove()
    tracer = _Tracer(example.shape)
    tracer.record_rule_steps(twin)
    before = _attributes(twin)
    try:
        graph = tracer.trace(twin)
    except Exception as error:  # noqa: BLE001 - fx refuses data-dependent control flow etc.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return StepProgram(None, reason=f"the step cannot be traced: {first}")
    after = _attributes(twin)
    changed = sorted(
        f"{name or type(network).__name__}.{attribute.split(' ')[-1]}"
        for name, attribute in set(before) | set(after)
        if before.get((name, attribute)) != after.get((name, attribute))
    )
    if changed:
        return StepProgram(
            None,
            reason=(
                f"the step changes {', '.join(changed[:3])} outside module calls (an attribute "
                "assignment, a learning rule's step(), a list it appends to): run as written"
            ),
        )
    modules: Dict[str, nn.Module] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            modules[node.target] = network.get_submodule(node.target)
        elif node.op == "get_attr":
            owner = node.target.rpartition(".")[0]
            modules[owner] = network.get_submodule(owner) if owner else network
    return StepProgram(graph, modules, random=draws.drawn)


def tensor_attribute(network: nn.Module, target: str) -> Any:
    """The tensor (parameter or buffer) at the qualified name ``target`` of ``network``."""
    owner, _, name = target.rpartition(".")
    module = network.get_submodule(owner) if owner else network
    return getattr(module, name)


def state_read(network: nn.Module, target: str) -> bool:
    """Whether ``target`` names a non-persistent buffer: state that changes from step to step
    (a neuron's ``spikes``, ``v``, a connection's history), so reading it makes the step depend
    on the one before."""
    owner, _, name = target.rpartition(".")
    module = network.get_submodule(owner) if owner else network
    return name in module._buffers and name in module._non_persistent_buffers_set


def output_nodes(graph: fx.Graph) -> List[fx.Node]:
    """The nodes the step returns."""
    out = next(node for node in graph.nodes if node.op == "output")
    found: List[fx.Node] = []
    fx.node.map_arg(out.args[0], found.append)
    return found
