"""Plan: how ``T`` steps of a captured step program run, and running them.

A step program (:mod:`pysnn.engine.capture`) whose values flow only forward within a step (no
module reads another's state, no stateful module is called twice per step, every torch
operation acts on each sample alone) runs **layer-wise**: node by node over all ``T`` steps at
once. A torch module or function sees the ``T * B`` samples of all steps as one batch (one matrix
product per connection), and each pysnn module runs its own block form,
``forward_multistep`` on ``(T, B, ...)``: one fused kernel call for the built-in LIF neurons
(forward and BPTT backward), one product for a :class:`~pysnn.connection.Linear`, and the step
loop of the module alone where its class says the block form does not apply
(:func:`pysnn.stepping.block_form_reason`). The results and the state left in every module are
those of the step loop ``for t in range(T): out[t] = net(x[t])``, bit for bit where the products
are event-driven (0/1 spikes) or elementwise; a dense product of ``T * B`` rows may round its sums
in another order than ``T`` products of ``B`` rows (the last bit of an input current, as in
:meth:`pysnn.connection.Linear.forward_multistep`).

A step with feedback through state runs as one of two fused loops where it is exactly that
loop's step: a network of layers with lateral and recurrent connections and learning rules
(``"layers"``, :func:`pysnn.engine.layers.run_layers`, see :func:`layers_spec`), or a recurrent
population whose connection reads its own spikes of the step before (``"recurrent"``,
:func:`pysnn.engine.recurrent.run_recurrent`, see :func:`recurrent_spec`).

Anything else (other feedback through state, a learning rule in training mode, per-batch
statistics such as ``BatchNorm`` in training, random draws, operations that mix samples) runs
**step-wise**: the network's own ``forward``, once per step, exactly as written. :func:`plan`
says which, and why.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

from pysnn import backends
from pysnn._checks import check_same_dt
from pysnn.connection import Connection, Linear
from pysnn.engine.layers import run_layers
from pysnn.engine.recurrent import fused_reason, run_recurrent
from pysnn.engine.capture import (
    StepProgram,
    is_pysnn_module,
    output_nodes,
    state_read,
    tensor_attribute,
)
from pysnn.learning import LearningRule, fused_update_reason
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron, Neuron
from pysnn.stepping import block_form_reason, has_forward_hooks
from pysnn.synapse import ConductanceSynapse, Synapse

__all__ = [
    "Part",
    "LayersSpec",
    "RecurrentSpec",
    "SequencePlan",
    "plan",
    "layers_spec",
    "recurrent_spec",
    "block_reason",
]

#: torch modules that act on each sample alone (in any mode), so that ``T * B`` samples of all
#: steps may pass through them as one batch.
PER_SAMPLE_MODULES = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Identity,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
    nn.Hardtanh,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.LayerNorm,
    nn.GroupNorm,
)
#: torch modules that act on each sample alone only in eval mode (batch statistics, random
#: masks in training).
EVAL_PER_SAMPLE_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)
#: functions and tensor methods that act elementwise (or on each sample alone).
ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    operator.pos,
    operator.abs,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.neg,
    torch.abs,
    torch.exp,
    torch.sigmoid,
    torch.tanh,
    torch.relu,
    torch.clamp,
    torch.maximum,
    torch.minimum,
    torch.where,
    F.relu,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.softplus,
    F.hardtanh,
    F.linear,
}
ELEMENTWISE_METHODS = {
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "abs",
    "exp",
    "sigmoid",
    "tanh",
    "relu",
    "clamp",
    "float",
    "double",
    "detach",
    "contiguous",
}


@dataclass
class Part:
    """One module call of a plan.

    Attributes:
        name: the module's qualified name in the network.
        kind: its class name.
        how: ``"fused"`` (a fused kernel over all ``T`` steps), ``"block"`` (torch over all
            ``T * B`` samples at once) or ``"stepped"`` (once per step).
        backend: what runs it: a registered backend's name (:mod:`pysnn.backends`: ``"c"``,
            ``"triton"``), ``"c-generated"`` or ``"triton-generated"`` (a kernel generated from
            the module's step as C or Triton, :mod:`pysnn.codegen`) or ``"torch"``.
        reason: why it is stepped (``None`` otherwise).
    """

    name: str
    kind: str
    how: str
    backend: str
    reason: Optional[str] = None


@dataclass
class LayersSpec:
    """A step program that is a network of layers (:func:`pysnn.engine.layers.run_layers`), by
    module names: the input group, each layer's neuron with its incoming ``(connection, pre)``
    pairs or ``(connection, pre, synapse)`` triples, the learning rules stepped after the layers,
    and the layer whose spikes the step returns."""

    input: str
    layers: List[Tuple[str, List[Tuple[str, ...]]]]
    rules: List[str]
    output: str


@dataclass
class RecurrentSpec:
    """A step program that is one step of a recurrent population
    (:func:`pysnn.engine.recurrent.run_recurrent`), by module names: the connection that reads
    the neuron's spikes of the step before, the synapse of each of its ``G`` receptor groups (in
    group order) and the neuron, whose spikes the step returns; and where the step's input
    ``x`` ``(B, N)`` is added to the synapses' outputs (the neuron's input current), where in the
    sum and how scaled.

    Attributes:
        external: ``None`` (the step does not use its input), ``"first"``
            (``x + syn_0(...) + ...``) or ``"last"`` (``syn_0(...) + ... + x``).
        scale: the Python number ``x`` is multiplied by before the sum (``3.0 * x``), or
            ``None`` (``x`` itself).
    """

    connection: str
    synapses: List[str]
    neuron: str
    external: Optional[str] = None
    scale: Optional[Union[int, float]] = None

    def external_input(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The term the step adds to its synapses' outputs, for the inputs ``x`` of one or more
        steps (``(B, N)`` or ``(T, B, N)``): ``x``, ``x * scale``, or ``None`` if the step does
        not use its input. Elementwise, so bit for bit the step's own term at each step."""
        if self.external is None:
            return None
        return x if self.scale is None else torch.mul(x, self.scale)


@dataclass
class SequencePlan:
    """How ``T`` steps of a network run.

    Attributes:
        kind: ``"layer-wise"`` (node by node over all steps), ``"layers"`` (a network of layers
            with feedback and learning, :func:`pysnn.engine.layers.run_layers`),
            ``"recurrent"`` (a recurrent population,
            :func:`pysnn.engine.recurrent.run_recurrent`) or ``"step-wise"`` (the network's
            ``forward`` once per step, as written).
        reasons: ``(where, why)`` for each thing that keeps the program from running
            layer-wise (and, for a step-wise plan of a neuron that reads its own state, why
            the step is not a recurrent population's).
        parts: the module calls of the program, with how each runs (empty when the step could
            not be captured).
        layers: the network of layers, for ``kind == "layers"``.
        recurrent: the recurrent population, for ``kind == "recurrent"``.
    """

    kind: str
    reasons: List[Tuple[str, str]] = field(default_factory=list)
    parts: List[Part] = field(default_factory=list)
    program: Optional[StepProgram] = None
    layers: Optional[LayersSpec] = None
    recurrent: Optional[RecurrentSpec] = None

    def run(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run the plan (not step-wise) on ``x`` ``(T, B, ...)`` → the network's outputs
        ``(T, B, ...)``; modules are looked up in ``network`` by name."""
        if self.kind == "layers":
            spec, get = self.layers, network.get_submodule
            layers = [(get(n), [tuple(map(get, e)) for e in inc]) for n, inc in spec.layers]
            rules = [get(name) for name in spec.rules]
            return run_layers(get(spec.input), layers, x, rules, record=[get(spec.output)])[0]
        if self.kind == "recurrent":
            return _run_population(network, self.recurrent, x)
        graph = self.program.graph
        steps = x.shape[0]
        env: Dict[fx.Node, Any] = {}

        def load(arg: Any) -> Any:
            return fx.node.map_arg(arg, env.__getitem__)

        for node in graph.nodes:
            if node.op == "placeholder":
                env[node] = x.flatten(0, 1)
            elif node.op == "get_attr":
                env[node] = tensor_attribute(network, node.target)
            elif node.op == "call_module":
                module = network.get_submodule(node.target)
                args, kwargs = load(node.args), load(node.kwargs)
                if is_pysnn_module(module):  # (a neuron: its kernel, generated or not)
                    env[node] = module.forward_multistep(args[0].unflatten(0, (steps, -1)))
                    env[node] = env[node].flatten(0, 1)
                else:
                    env[node] = module(*args, **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*load(node.args), **load(node.kwargs))
            elif node.op == "call_method":
                self_arg, *args = load(node.args)
                env[node] = getattr(self_arg, node.target)(*args, **load(node.kwargs))
            else:  # output
                return env[node.args[0]].unflatten(0, (steps, -1))
        raise RuntimeError("the step program has no output")  # pragma: no cover


def block_reason(module: nn.Module) -> Optional[str]:
    """Why the pysnn ``module`` runs its ``T`` steps once per step inside a layer-wise plan
    (``None``: it runs them as one block)."""
    if isinstance(module, LIFNeuron):
        return block_form_reason(module, LIFNeuron, LIFNeuron.BLOCK_REPRODUCES)
    if isinstance(module, Input):
        return block_form_reason(module, Input, ("forward", "step", "trace_parameters"))
    if isinstance(module, Connection) and module.per_synapse_delay:
        return "per-synapse delays run through the delay queue once per step"
    if isinstance(module, Linear):
        return block_form_reason(module, Linear, Linear.BLOCK_REPRODUCES)
    if isinstance(module, Connection):
        if type(module).forward_multistep is not Connection.forward_multistep:
            return f"{type(module).__name__}.forward_multistep decides (its own block form)"
        return block_form_reason(module, Connection)
    if isinstance(module, Neuron):
        if has_forward_hooks(module):
            return "a forward hook must see every step"
        if type(module).forward_multistep is Neuron.forward_multistep:
            return (
                f"{type(module).__name__}.step runs once per step as torch operations (no "
                "fused kernel for this neuron model yet)"
            )
        return f"{type(module).__name__}.forward_multistep decides (its own block form)"
    return None


def _lif_backward_reason(module: nn.Module) -> Optional[str]:
    """Why a built-in LIF neuron's hand-written multi-step kernel has no fused backward
    (:func:`~pysnn.functional.lif.lif_trace_steps`): its surrogate has no ``grad`` method, or a
    constant is learned; ``None`` where it has one (or ``module`` is no LIF neuron)."""
    if not isinstance(module, LIFNeuron) or module.surrogate is None:
        return None
    if not callable(getattr(module.surrogate, "grad", None)):
        return (
            "under autograd LIF's fused backward needs a surrogate with a grad(x) method (every "
            "pysnn.surrogate class has one)"
        )
    if any(p.requires_grad for p in module.parameters()):
        return "under autograd a learned constant takes the torch step (its gradient)"
    return None


def _generatable(module: nn.Module) -> bool:
    """A neuron whose ``forward_multistep`` runs a kernel generated from its ``step`` where
    its own block form does not apply (a user's model, a subclass's own step)."""
    return (
        isinstance(module, Neuron)
        and type(module).forward_multistep
        in (Neuron.forward_multistep, LIFNeuron.forward_multistep)
        and not has_forward_hooks(module)
    )


def _neuron_example(module: Neuron, example: torch.Tensor, graded: bool) -> torch.Tensor:
    """One step's input of ``module`` as a block of one step: ``(1, B, *shape)`` zeros in its
    constants' dtype and on their device, wanting a gradient where ``graded``."""
    reference = module._reference()
    return torch.zeros(
        1,
        example.shape[0],
        *module.shape,
        dtype=reference.dtype,
        device=reference.device,
        requires_grad=graded,
    )


def _backend(example: torch.Tensor, how: str) -> str:
    """The registered name of the backend whose kernels run a fused part on ``example``'s device
    and dtype (:func:`pysnn.backends.select`), or ``"torch"``."""
    if how != "fused":
        return "torch"
    return backends.name_of(backends.select("lif_steps", example.contiguous()))


def _node_reason(network: nn.Module, node: fx.Node, calls: Counter) -> Optional[Tuple[str, str]]:
    """``(where, why)`` when ``node`` keeps the program from running layer-wise."""
    if node.op == "placeholder":
        return None
    if node.op == "get_attr":
        if state_read(network, node.target):
            return (
                node.target,
                "the step reads state of the step before (feedback): stepped as written",
            )
        return None
    if node.op == "call_module":
        module = network.get_submodule(node.target)
        if is_pysnn_module(module):
            if calls[node.target] > 1:
                return (node.target, "a stateful module called more than once per step")
            if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
                return (node.target, "called with other than one tensor argument")
            return None
        if isinstance(module, PER_SAMPLE_MODULES):
            return None
        if isinstance(module, nn.Flatten):
            return None if module.start_dim >= 1 else (node.target, "flattens the batch")
        if isinstance(module, LearningRule):
            return (node.target, "a learning rule steps once per step")
        if isinstance(module, EVAL_PER_SAMPLE_MODULES):
            if module.training and not (
                isinstance(module, nn.modules.dropout._DropoutNd) and module.p == 0
            ):
                return (
                    node.target,
                    f"{type(module).__name__} in training mode draws per step or uses batch "
                    "statistics: stepped as written",
                )
            return None
        return (
            node.target,
            f"{type(module).__name__} is not known to act on each sample alone: stepped as "
            "written",
        )
    if node.op == "call_function":
        if node.target in ELEMENTWISE_FUNCTIONS:
            return None
        if node.target is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return None if isinstance(start, int) and start >= 1 else (str(node), "flattens B")
        name = getattr(node.target, "__name__", str(node.target))
        return (str(node.name), f"{name} is not known to act on each sample alone")
    if node.op == "call_method":
        if node.target in ELEMENTWISE_METHODS:
            return None
        if node.target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return None if isinstance(start, int) and start >= 1 else (str(node), "flattens B")
        return (str(node.name), f".{node.target}() is not known to act on each sample alone")
    return None


def layers_spec(network: nn.Module, graph: fx.Graph) -> Tuple[Optional[LayersSpec], str]:
    """The network of layers that the step program ``graph`` is, or ``(None, why not)``.

    It is one when the step is exactly :func:`pysnn.engine.layers.run_layers`' loop: an
    :class:`~pysnn.neuron.Input` called on the step's input first; each neuron called once, on
    one connection's output or a left-to-right sum of them, each optionally through a synapse of
    that neuron (:class:`~pysnn.synapse.Synapse`, called on one connection's output); each
    connection called on a neuron's spikes of this step (its output) or on ``neuron.spikes``
    read at a point where that neuron has stepped in this step exactly when it has before the
    layer it feeds; learning rules stepped (without reward) after the last neuron; a neuron's
    spikes returned.
    """
    value: Dict[fx.Node, Tuple] = {}
    stepped: List[str] = []
    layers: List[Tuple[str, List[Tuple[str, ...]]]] = []
    rules: List[str] = []
    source = None
    output = None
    for node in graph.nodes:
        if node.op == "placeholder":
            value[node] = ("x",)
        elif node.op == "get_attr":
            owner, _, attribute = node.target.rpartition(".")
            if attribute != "spikes" or not owner:
                return None, f"the step reads {node.target}"
            value[node] = ("spikes", owner)
        elif node.op == "call_module":
            module = network.get_submodule(node.target)
            if isinstance(module, LearningRule):
                if node.args or node.kwargs:
                    return None, f"{node.target} is given a reward"
                rules.append(node.target)
                continue
            if rules:
                return None, f"{node.target} is called after a learning rule stepped"
            if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
                return None, f"{node.target} is called with other than one tensor"
            arg = value.get(node.args[0])
            if isinstance(module, Input):
                if source is not None or arg != ("x",):
                    return None, f"{node.target} is not the one input group of the step"
                source = node.target
                stepped.append(source)
                value[node] = ("spikes", source)
            elif isinstance(module, Connection):
                if arg is None or arg[0] != "spikes":
                    return None, f"{node.target} is not called on a neuron group's spikes"
                pre = arg[1]
                value[node] = ("current", [(node.target, pre, pre in stepped, None)])
            elif isinstance(module, Synapse):
                if arg is None or arg[0] != "current" or len(arg[1]) != 1 or arg[1][0][3]:
                    return None, f"{node.target} is not called on one connection's output"
                connection, pre, read_after, _ = arg[1][0]
                value[node] = ("current", [(connection, pre, read_after, node.target)])
            elif isinstance(module, Neuron):
                if arg is None or arg[0] != "current" or node.target in stepped:
                    return None, f"{node.target} is not stepped once on connections' outputs"
                for connection, pre, read_after, synapse in arg[1]:
                    if read_after != (pre in stepped):
                        return None, (
                            f"{connection} reads {pre}'s spikes at another point of the step "
                            f"than the layer {node.target} would"
                        )
                    if synapse and network.get_submodule(synapse).neuron is not module:
                        return None, f"{synapse} is a synapse of another neuron than {node.target}"
                entries = [(c, p) if syn is None else (c, p, syn) for c, p, _, syn in arg[1]]
                layers.append((node.target, entries))
                stepped.append(node.target)
                value[node] = ("spikes", node.target)
            else:
                return None, f"{node.target} ({type(module).__name__}) is not a layer's module"
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            if len(node.args) != 2 or node.kwargs:
                return None, "a sum of other than two terms"
            left, right = (value.get(a) if isinstance(a, fx.Node) else None for a in node.args)
            if (
                left is None
                or right is None
                or left[0] != "current"
                or right[0] != "current"
                or len(right[1]) != 1
            ):
                return None, "a sum of other than connections' outputs, left to right"
            value[node] = ("current", left[1] + right[1])
        elif node.op == "output":
            arg = value.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
            if arg is None or arg[0] != "spikes" or arg[1] == source:
                return None, "the step returns other than a layer's spikes"
            output = arg[1]
        else:
            return None, f"{node.name} is not a module call or a sum of connections"
    if source is None or not layers or output is None:
        return None, "no input group, layer or returned spikes"
    known = set(stepped)
    for _, incoming in layers:
        for connection, pre, *_ in incoming:
            if pre not in known:
                return None, f"{connection} reads {pre}, which is not a group of the step"
    return LayersSpec(source, layers, rules, output), ""


_ADD = (operator.add, torch.add)
_MUL = (operator.mul, torch.mul)


def _external_term(node: fx.Node, x: fx.Node) -> Tuple[bool, Optional[Union[int, float]]]:
    """Whether ``node`` is the step's input ``x`` or ``x`` times a Python number, and that
    number (``None`` for ``x`` itself)."""
    if node is x:
        return True, None
    if node.op != "call_function" or node.target not in _MUL or node.kwargs:
        return False, None
    if len(node.args) != 2 or x not in node.args:
        return False, None
    other = node.args[1] if node.args[0] is x else node.args[0]
    if isinstance(other, (int, float)) and not isinstance(other, bool):
        return True, other
    return False, None


def recurrent_spec(
    network: nn.Module, program: StepProgram, example: torch.Tensor
) -> Tuple[Optional[RecurrentSpec], str]:
    """The recurrent population that the step ``program`` is one step of, or ``(None, why not)``.

    It is one when the step is exactly the loop of
    :func:`~pysnn.engine.recurrent.run_recurrent` (``N`` neurons, ``G`` receptor groups)::

        c = self.connection(self.neuron.spikes).view(B, G, N)   # or .reshape; B or -1
        return self.neuron(self.syn_0(c[:, 0]) + self.syn_1(c[:, 1]) + ...)

    and, for ``G == 1``, also ``self.neuron(self.syn_0(self.connection(self.neuron.spikes)))``;
    the neuron's input may also hold the step's input ``x`` ``(B, N)`` (an input current), as
    the first or the last term of the sum (``self.syn_0(c[:, 0]) + self.syn_1(c[:, 1]) + x`` or
    ``x + self.syn_0(c[:, 0]) + ...``), and ``x`` may be scaled by a Python number (``3.0 * x``,
    ``x * gain`` with ``gain`` a float attribute): run_recurrent's ``external`` input.
    Precisely: every node of the program is one of these; the connection
    (:class:`~pysnn.connection.Connection`, ``G * N`` outputs) is called once, on the neuron's
    ``spikes`` (the step before's); each group ``k`` is taken once, as ``c[:, k]``, by the
    synapse ``syn_k`` (a :class:`~pysnn.synapse.Synapse` of the neuron), the synapses called in
    group order and summed left to right in that order; the neuron (a one-dimensional
    :class:`~pysnn.neuron.Neuron` of ``N``, the same ``dt`` as the connection) is called once,
    on the sum, and its spikes are returned. The step's input is used at most once, as that
    term; the first step, which the plan runs as written, may also use it otherwise (e.g.
    ``torch.zeros_like(x)`` when a reset left no spikes). No module draws random numbers, and the
    network has no forward hook of its own. Anything else (the input between the synapses'
    outputs, used twice, scaled by a tensor, ...) is refused with the reason.
    """
    if program.random:
        return None, "the step draws random numbers"
    if has_forward_hooks(network):
        return None, "a forward hook of the network must see every step"
    graph = program.graph
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None, "forward takes other than one input"
    x_node = placeholders[0]
    out = next(n for n in graph.nodes if n.op == "output")
    once = (
        "the step uses its input other than once, as a term x or number * x of the neuron's "
        "input sum"
    )
    if len(x_node.users) > 1:
        return None, once

    def call(node: Any, kind: type) -> Optional[nn.Module]:
        """The module ``node`` calls on one value used only by it, if it is a ``kind``."""
        if not (isinstance(node, fx.Node) and node.op == "call_module"):
            return None
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return None
        module = network.get_submodule(node.target)
        if not isinstance(module, kind) or len(node.args[0].users) != 1:
            return None
        return module

    neuron_node = out.args[0]
    neuron = call(neuron_node, Neuron)
    if neuron is None or isinstance(neuron, Synapse) or len(neuron.shape) != 1:
        return None, "the step does not return a (one-dimensional) neuron's spikes"
    terms, sums, total = [], [], neuron_node.args[0]  # the sum, unfolded from the right
    while total.op == "call_function" and total.target in _ADD:
        if len(total.args) != 2 or total.kwargs:
            return None, "a sum of other than two values"
        if any(isinstance(arg, (int, float)) for arg in total.args):
            return None, "a number is added to the synapses' outputs (a constant bias current)"
        if not isinstance(total.args[1], fx.Node):
            return None, "a sum of other than two values"
        left, right = total.args
        if not isinstance(left, fx.Node) or len(left.users) != 1 or len(right.users) != 1:
            return None, "a sum of other than synapses' outputs"
        sums.append(total)
        terms.insert(0, right)
        total = left
    terms.insert(0, total)
    external, scale, used_x = None, None, []
    if x_node.users:
        found = [k for k, term in enumerate(terms) if _external_term(term, x_node)[0]]
        if len(found) != 1:  # (x, used once, is there only if the term uses it)
            return None, once
        where = found[0]
        if len(terms) == 1:
            return None, f"{neuron_node.target}'s input holds no synapse's output"
        if where not in (0, len(terms) - 1):
            return None, (
                "the step's input is added between the synapses' outputs (run_recurrent adds "
                "it first or last in the sum)"
            )
        if tuple(example.shape) != (example.shape[0], *neuron.shape):
            return None, (
                f"the step's input is {tuple(example.shape)}, not (B, {neuron.shape[0]}) like "
                f"{neuron_node.target}"
            )
        term = terms.pop(where)
        external, scale = ("first" if where == 0 else "last"), _external_term(term, x_node)[1]
        used_x = [] if term is x_node else [term]
    synapses = [call(term, Synapse) for term in terms]
    if any(syn is None or syn.neuron is not neuron for syn in synapses) or len(
        {id(syn) for syn in synapses}
    ) != len(synapses):
        return None, f"the input of {neuron_node.target} is not a sum of its synapses' outputs"
    groups = len(terms)
    pieces = [term.args[0] for term in terms]
    first = pieces[0]
    if groups == 1 and call(first, Connection) is not None:
        connection_node, used = first, []
    else:
        if not all(
            p.op == "call_function"
            and p.target is operator.getitem
            and p.args[1] == (slice(None), k)
            and p.args[0] is first.args[0]
            for k, p in enumerate(pieces)
        ):
            return None, "the synapses do not take the groups c[:, 0], c[:, 1], ... in order"
        view = first.args[0]
        shape = view.args[1:] if isinstance(view, fx.Node) else ()
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if (
            not shape
            or view.op != "call_method"
            or view.target not in ("view", "reshape")
            or view.kwargs
            or len(view.users) != groups
            or tuple(shape[1:]) != (groups, *neuron.shape)
            or shape[0] not in (-1, example.shape[0])
        ):
            return None, f"the connection's output is not viewed as (B, {groups}, N)"
        connection_node, used = view.args[0], [view, *pieces]
    connection = call(connection_node, Connection)
    read = connection_node.args[0] if connection is not None else None
    if (
        connection is None
        or read.op != "get_attr"
        or read.target != f"{neuron_node.target}.spikes"
        or getattr(connection, "out_features", None) != groups * neuron.shape[0]
    ):
        return None, f"no connection from {neuron_node.target}.spikes onto its {groups} groups"
    calls = [read, connection_node, *used, *terms, *sums, *used_x, neuron_node]
    if set(nodes) != set(calls) or len(calls) != len(set(calls)):
        return None, "the step does more than the recurrent population's step"
    if [n for n in nodes if n in terms] != terms:
        return None, "the synapses are not called in group order"
    try:
        check_same_dt(connection=connection, neuron=neuron)
    except ValueError as error:
        return None, str(error)
    names = [term.target for term in terms]
    spec = RecurrentSpec(connection_node.target, names, neuron_node.target, external, scale)
    return spec, ""


def _recurrent_loop_reason(network: nn.Module, spec: RecurrentSpec, example: torch.Tensor) -> str:
    """Why :func:`~pysnn.engine.recurrent.run_recurrent` runs its step loop for this population
    rather than its fused call ("" when the fused call applies)."""
    get = network.get_submodule
    connection, neuron = get(spec.connection), get(spec.neuron)
    synapses = [get(name) for name in spec.synapses]
    reference = neuron._reference()
    spikes = torch.zeros(
        example.shape[0], *neuron.shape, dtype=reference.dtype, device=reference.device
    )
    external = spec.external_input(example)
    why = fused_reason(connection, synapses, neuron, spikes, external)
    if not why and not (
        backends.accepts("c", spikes, connection.weight)
        and connection.weight.dtype == reference.dtype
    ):
        why = "the fused loop runs float32/float64 CPU tensors of one dtype only"
    if (
        not why
        and external is not None
        and not (backends.accepts("c", external) and external.dtype == reference.dtype)
    ):
        why = (
            f"the step's input term is {external.dtype} on {external.device}; the fused loop "
            f"adds it in the population's dtype ({reference.dtype}) on the CPU only"
        )
    return f"run_recurrent steps the population: {why}" if why else ""


def _run_population(network: nn.Module, spec: RecurrentSpec, x: torch.Tensor) -> torch.Tensor:
    """A ``"recurrent"`` plan on ``x`` ``(T, B, ...)``: the first step as written (it makes the
    state where a reset left none, from the input as the network does), the other ``T - 1`` by
    :func:`~pysnn.engine.recurrent.run_recurrent` from the neuron's spikes, with ``x[1:]`` (or
    its scaled copy) as the external input where the step adds its input; the outputs
    ``(T, B, N)``."""
    get = network.get_submodule
    neuron = get(spec.neuron)
    first = network(x[0])
    spikes = neuron._buffers.get("spikes")
    if x.shape[0] == 1 or spikes is None or spikes.shape != (x.shape[1], *neuron.shape):
        # (no spikes of this batch to continue from: the network's own steps, as written)
        return torch.stack([first] + [network(step) for step in x[1:]])
    synapses = [get(name) for name in spec.synapses]
    rest = run_recurrent(
        get(spec.connection),
        synapses,
        neuron,
        x.shape[0] - 1,
        spikes,
        external=spec.external_input(x[1:]),
        external_first=spec.external == "first",
    )
    return torch.cat((first.unsqueeze(0), rest))


def _layers_loop_reason(network: nn.Module, spec: LayersSpec, example: torch.Tensor) -> str:
    """Why :func:`~pysnn.engine.layers.run_layers` runs its step loop for this network rather
    than its fused call ("" when the fused call applies, from the steps after the first)."""
    if not (example.is_cpu and backends.enabled("c")):
        return "run_layers steps the layers: no fused kernels for this input or machine"
    if example.dtype not in (torch.float32, torch.float64) or example.dim() != 2:
        return "run_layers fuses (B, n) float32/float64 inputs only"
    get = network.get_submodule
    checks = [(get(spec.input), Input, ("forward", "step"))]
    for name, incoming in spec.layers:
        neuron = get(name)
        base = AdaptiveLIFNeuron if isinstance(neuron, AdaptiveLIFNeuron) else LIFNeuron
        checks.append((neuron, base, LIFNeuron.BLOCK_REPRODUCES))
        for connection, _, *synapse in incoming:
            checks.append((get(connection), Linear, Linear.BLOCK_REPRODUCES))
            if synapse:
                reproduces = ConductanceSynapse.BLOCK_REPRODUCES
                checks.append((get(synapse[0]), ConductanceSynapse, reproduces))
    for module, base, methods in checks:
        if not isinstance(module, base):
            return f"run_layers steps the layers: {type(module).__name__} has no fused step"
        why = block_form_reason(module, base, methods)
        if why:
            return f"run_layers steps the layers: {why}"
        if isinstance(module, Connection) and module.per_synapse_delay:
            return "run_layers steps the layers: per-synapse delays"
    for name in spec.rules:
        why = fused_update_reason(get(name))
        if why:
            return f"run_layers steps the layers: {why}"
        if example.shape[0] != 1:
            return "run_layers fuses learning rules for one sample at a time (batch 1) only"
    return ""


def plan(network: nn.Module, program: StepProgram, example: torch.Tensor) -> SequencePlan:
    """Plan ``T`` steps of ``network`` from its captured step ``program``; ``example`` is one
    step's input ``(B, ...)`` (for the backends)."""
    if not program.captured:
        return SequencePlan("step-wise", [(type(network).__name__, program.reason)], [], program)
    if has_forward_hooks(network):  # (the network's own hooks see each call of its forward)
        why = "a forward hook of the network must see every step"
        return SequencePlan("step-wise", [(type(network).__name__, why)], [], program)
    graph = program.graph
    reasons: List[Tuple[str, str]] = []
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        reasons.append((type(network).__name__, "forward takes other than one input"))
    outputs = output_nodes(graph)
    out = next(n for n in graph.nodes if n.op == "output")
    if len(outputs) != 1 or not isinstance(out.args[0], fx.Node):
        reasons.append((type(network).__name__, "the step returns other than one tensor"))
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    # (under autograd, as in training, a fused kernel runs only where it has a backward)
    graded = torch.is_grad_enabled() and (
        example.requires_grad or any(p.requires_grad for p in network.parameters())
    )
    parts: List[Part] = []
    for node in graph.nodes:
        found = _node_reason(network, node, calls)
        if found is not None:
            reasons.append(found)
        if node.op == "call_module":
            module = network.get_submodule(node.target)
            why, how = None, "block"
            if is_pysnn_module(module):
                why = block_reason(module) or (_lif_backward_reason(module) if graded else None)
                fused = why is None and isinstance(module, (LIFNeuron, Linear))
                how = "stepped" if why else ("fused" if fused else "block")
            parts.append(Part(node.target, type(module).__name__, how, _backend(example, how), why))
    reasons += _random_reasons(network, program, parts)
    for part in parts if not reasons else []:  # only a layer-wise plan runs generated kernels
        module = network.get_submodule(part.name)
        if part.reason and _generatable(module):
            block = _neuron_example(module, example, graded)
            kernel, refused = module.generated_multistep(block, new=True)
            if kernel is None:
                part.reason = f"{part.reason}; a generated kernel does not apply: {refused}"
            else:
                part.how, part.reason = "fused", None
                part.backend = f"{kernel.backend}-generated"
    if not reasons:
        return SequencePlan("layer-wise", reasons, parts, program)
    spec, _ = layers_spec(network, graph)
    if spec is not None:
        why = _layers_loop_reason(network, spec, example)
        for part in parts:
            part.how, part.reason = ("stepped", why) if why else ("fused", None)
            part.backend = "torch" if why else "c"
        return SequencePlan("layers", reasons, parts, program, spec)
    population, refused = recurrent_spec(network, program, example)
    if population is not None:
        why = _recurrent_loop_reason(network, population, example)
        for part in parts:
            part.how, part.reason = ("stepped", why) if why else ("fused", None)
            part.backend = "torch" if why else "c"
        return SequencePlan("recurrent", reasons, parts, program, recurrent=population)
    # a neuron whose state the step reads (feedback): why the step is not a recurrent plan
    read = {n.target.rpartition(".")[0] for n in graph.nodes if n.op == "get_attr"}
    for name in dict.fromkeys(n.target for n in graph.nodes if n.op == "call_module"):
        if name in read and isinstance(network.get_submodule(name), Neuron):
            reasons.append((name, f"not a recurrent population's step: {refused}"))
    for part in parts:  # a step-wise plan steps every module
        if part.how != "stepped":
            part.how, part.reason = "stepped", "the network is stepped as written"
    return SequencePlan("step-wise", reasons, parts, program)


def _random_reasons(
    network: nn.Module, program: StepProgram, parts: List[Part]
) -> List[Tuple[str, str]]:
    """What keeps a step that draws random numbers from running layer-wise: node by node keeps
    the step loop's order of draws (and so its results, seed for seed) only when one module
    draws, and that module is stepped once per step in order."""
    drawn = program.random
    if not drawn:
        return []
    where = ", ".join(name or type(network).__name__ for name in drawn)
    if len(drawn) > 1 or drawn[0] == "":
        why = "draws random numbers in more than one place; stepping keeps the loop's order"
        return [(where, why)]
    part = next((p for p in parts if p.name == drawn[0]), None)
    if part is None or part.how != "stepped":
        return [(where, "draws random numbers; over all T steps at once it would draw them "
                 "in another order than the step loop")]  # fmt: skip
    return []


_PLAIN = (bool, int, float, str, type(None))


def fingerprint(network: nn.Module) -> Tuple:
    """What a plan of ``network`` depends on besides the program: its modules (objects and
    classes), their training modes, whether they have forward hooks, and their plain public
    attributes (numbers, strings, flags such as ``dt`` or a ``use_recurrence`` switch that
    ``forward`` may branch on)."""
    return tuple(
        (
            name,
            id(m),
            type(m),
            m.training,
            has_forward_hooks(m),
            tuple(
                (k, v)
                for k, v in m.__dict__.items()
                if not k.startswith("_") and isinstance(v, _PLAIN)
            ),
        )
        for name, m in network.named_modules()
    )
