"""``SNNNetwork``: the base class users subclass to write the time step of their own network.

.. code-block:: python

    class Net(SNNNetwork):
        def __init__(self):
            super().__init__()
            self.inp = Input(100)
            self.fc = Linear(100, 10)
            self.lif = LIFNeuron(10)
            self.add_layer("fc", self.fc, self.lif)

        def forward(self, spikes):  # one step: (B, 100) -> (B, 10)
            return self.lif(self.fc(self.inp(spikes)))

Each call of ``forward`` is one time step; the modules keep their own state between calls.
``net.reset_state()`` resets all of it, including the learning rules and nested networks the
network holds.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Set, Tuple, Union

import torch
from torch import nn

from pysnn._checks import check_same_dt

__all__ = ["SNNNetwork", "reset_state", "detach_state", "run"]


def reset_state(module: nn.Module) -> None:
    """Reset the state of ``module`` and of everything stateful it holds.

    Stateful means defining ``reset_state()``: neurons, connections, learning rules (as
    attributes or inside ``nn.ModuleList``/``ModuleDict``/``Sequential``), ... Others
    (``nn.Sequential``, ``nn.ReLU``, ...) are skipped. A nested
    :class:`SNNNetwork` is reset by *its own* ``reset_state()`` (so an override runs), which
    handles its subtree. Each module is called once, however often it is registered. An
    :class:`SNNNetwork` given here is reset with its own ``reset_state()``.
    """
    if isinstance(module, SNNNetwork):
        module.reset_state()
    else:
        _call_on_stateful(module, "reset_state")


def detach_state(module: nn.Module) -> None:
    """Cut the autograd graph at the state of every stateful submodule (truncated BPTT).

    Traverses like :func:`reset_state`, calling ``detach_state()``.
    """
    if isinstance(module, SNNNetwork):
        module.detach_state()
    else:
        _call_on_stateful(module, "detach_state")


def _call_on_stateful(root: nn.Module, method: str) -> None:
    """Call ``method`` on ``root`` (unless it is an :class:`SNNNetwork`, whose own method is the
    caller) and on every module of its tree that defines it, once each, in pre-order; a nested
    :class:`SNNNetwork` gets its own method called and is not descended into."""
    if not isinstance(root, SNNNetwork):
        _call(root, method)
    _visit(root, method, {id(root)})


def _visit(module: nn.Module, method: str, done: Set[int]) -> None:
    for child in module.children():
        if id(child) in done:
            continue
        done.add(id(child))
        _call(child, method)
        if not isinstance(child, SNNNetwork):
            _visit(child, method, done)


def _call(module: nn.Module, method: str) -> None:
    fn = getattr(module, method, None)
    if callable(fn):
        fn()


class SNNNetwork(nn.Module):
    """Base class for spiking networks: an ``nn.Module`` whose ``forward`` is one time step.

    Adds named layers (:meth:`add_layer`), scoped state reset (:meth:`reset_state`), truncated
    BPTT (:meth:`detach_state`) and :meth:`layer_state_dict`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._layer_names: Dict[str, Tuple[str, str]] = {}

    def add_layer(self, name: str, connection: nn.Module, neuron: nn.Module) -> None:
        """Register ``connection`` feeding ``neuron`` as the layer ``name``.

        Both modules become submodules (if not already attributes) and can be looked up with
        :meth:`layer`; learning rules accept layer names.

        Raises:
            ValueError: ``name`` is not an identifier or is taken, or ``connection.dt`` and
                ``neuron.dt`` (ms) differ (modules without ``dt`` are not checked).
            TypeError: ``connection`` or ``neuron`` is not an ``nn.Module``.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name must be a valid identifier, got {name!r}")
        if name in self._layer_names:
            raise ValueError(f"a layer named {name!r} exists already")
        for arg, module in (("connection", connection), ("neuron", neuron)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{arg} must be an nn.Module, got {type(module).__name__}")
        check_same_dt(connection=connection, neuron=neuron)
        self._layer_names[name] = (
            self._attach(connection, name + "_connection"),
            self._attach(neuron, name + "_neuron"),
        )

    def _attach(self, module: nn.Module, default: str) -> str:
        for attr, child in self.named_children():
            if child is module:
                return attr
        self.add_module(default, module)
        return default

    def layer(self, name: str) -> Tuple[nn.Module, nn.Module]:
        """Return ``(connection, neuron)`` of the layer ``name``."""
        if name not in self._layer_names:
            raise KeyError(f"no layer named {name!r}; layers: {list(self._layer_names)}")
        conn, neuron = self._layer_names[name]
        return getattr(self, conn), getattr(self, neuron)

    @property
    def layers(self) -> Dict[str, Tuple[nn.Module, nn.Module]]:
        """All layers as ``{name: (connection, neuron)}`` in registration order."""
        return {name: self.layer(name) for name in self._layer_names}

    def named_layers(self) -> Iterator[Tuple[str, Tuple[nn.Module, nn.Module]]]:
        """Iterate over ``(name, (connection, neuron))``."""
        return iter(self.layers.items())

    def layer_state_dict(self) -> Dict[str, Dict]:
        """``{layer name: connection.state_dict()}``: the learned weights, by layer name."""
        return {name: conn.state_dict() for name, (conn, _) in self.layers.items()}

    def _apply(self, fn, recurse: bool = True):
        """``.to()``/``.half()``/...: every neuron is asked first whether it accepts the new
        dtype (:meth:`pysnn.neuron.Neuron.refuse_low_precision`), so that a refused conversion
        leaves the whole network unchanged rather than half converted."""
        if recurse:
            for module in self.modules():
                refuse = getattr(module, "refuse_low_precision", None)
                if callable(refuse):
                    refuse(fn)
        return super()._apply(fn, recurse)

    def reset_state(self) -> None:
        """Reset everything stateful the network holds: neurons, connections, learning rules,
        nested networks (through their own ``reset_state``); see :func:`reset_state`.

        Override it to reset more (e.g. a counter), calling ``super().reset_state()``; a network
        holding this one calls the override.
        """
        _call_on_stateful(self, "reset_state")

    def detach_state(self) -> None:
        """Detach the state of every stateful submodule from the autograd graph."""
        _call_on_stateful(self, "detach_state")


#: A run option's value: a whole-run tensor, a time-first tensor, or a function of the step.
OptionValue = Union[float, torch.Tensor, Callable[[int], Any]]


def run(
    net: nn.Module,
    inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
    *,
    clamp: Optional[Mapping[Union[str, nn.Module], OptionValue]] = None,
    unclamp: Optional[Mapping[Union[str, nn.Module], OptionValue]] = None,
    injects_v: Optional[Mapping[Union[str, nn.Module], OptionValue]] = None,
) -> Any:
    """Run ``net`` for ``T`` steps with BindsNET's run options; returns its outputs stacked.

    At each step ``t`` the options for that step are requested on their neurons
    (:meth:`~pysnn.neuron.Neuron.clamp`, :meth:`~pysnn.neuron.Neuron.unclamp`,
    :meth:`~pysnn.neuron.Neuron.inject_v`; semantics in :mod:`pysnn.forcing`), then
    ``net(inputs[t])`` is called. The state is not reset (call ``net.reset_state()`` first).

    Args:
        net: a module whose ``forward`` is one step (an :class:`SNNNetwork`, a neuron, ...).
        inputs: ``(T, B, ...)`` tensor, or a tuple of them (``net(*[x[t] for x in inputs])``).
        clamp, unclamp: ``{neuron: mask}``. A neuron is given as the module or as a name: a
            layer name of an :class:`SNNNetwork` (its neuron) or a submodule path
            (``"exc"``, ``"block.lif"``). A mask is a ``bool`` tensor: ``(*shape)`` or
            ``(B, *shape)`` for every step, ``(T, B, *shape)`` for one mask per step (BindsNET's
            ``[time, n]`` masks are ``mask[:, None]``), or a function ``t -> mask or None``.
        injects_v: ``{neuron: delta}`` (mV), the same forms (a number for every neuron and
            step). Added at the start of step ``t`` (BindsNET adds ``injects_v[t]`` at the same
            point: before the layer's step ``t``).

    Returns:
        ``torch.stack`` of the per-step outputs ``(T, ...)`` when ``net`` returns a tensor, a
        tuple of stacks when it returns a tuple of tensors, else the list of outputs.

    Raises:
        ValueError: ``inputs`` is not time first, a name is unknown, or a per-step tensor's
            first dimension is not ``T``.
        TypeError: an option is not a mapping, or names something that is not a neuron.
    """
    sequences = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    if not sequences or not all(isinstance(x, torch.Tensor) and x.dim() >= 2 for x in sequences):
        raise ValueError("inputs must be a (T, B, ...) tensor or a tuple of them")
    steps = sequences[0].shape[0]
    if any(x.shape[0] != steps for x in sequences):
        raise ValueError(
            f"all inputs must have the same number of steps T, got {[x.shape[0] for x in sequences]}"
        )
    plan = []
    for option, method in (("clamp", "clamp"), ("unclamp", "unclamp"), ("injects_v", "inject_v")):
        given = {"clamp": clamp, "unclamp": unclamp, "injects_v": injects_v}[option]
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise TypeError(f"{option} must be a dict {{neuron or name: value}}, got {given!r}")
        for key, value in given.items():
            neuron = _neuron_of(net, key, option)
            plan.append((getattr(neuron, method), _per_step(value, neuron, steps, option, key)))
    outputs = []
    for t in range(steps):
        for request, at in plan:
            value = at(t)
            if value is not None:
                request(value)
        outputs.append(net(*(x[t] for x in sequences)))
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(outputs)
    if isinstance(first, tuple) and all(isinstance(o, torch.Tensor) for o in first):
        return tuple(torch.stack(parts) for parts in zip(*outputs))
    return outputs


def _neuron_of(net: nn.Module, key: Union[str, nn.Module], option: str) -> nn.Module:
    if isinstance(key, str):
        if isinstance(net, SNNNetwork) and key in net._layer_names:
            module = net.layer(key)[1]
        else:
            try:
                module = net.get_submodule(key)
            except AttributeError:
                layers = list(net._layer_names) if isinstance(net, SNNNetwork) else []
                raise ValueError(
                    f"{option}: {key!r} is neither a layer ({layers}) nor a submodule of "
                    f"{type(net).__name__}"
                ) from None
    else:
        module = key
    if not callable(getattr(module, "clamp", None)) or not hasattr(module, "shape"):
        raise TypeError(f"{option}: {key!r} is not a pysnn neuron (got {type(module).__name__})")
    return module


def _per_step(
    value: OptionValue, neuron: nn.Module, steps: int, option: str, key: Any
) -> Callable[[int], Any]:
    if callable(value) and not isinstance(value, torch.Tensor):
        return value
    if isinstance(value, torch.Tensor) and value.dim() == len(neuron.shape) + 2:
        if value.shape[0] != steps:
            raise ValueError(
                f"{option}[{key!r}] has {value.shape[0]} steps (first dimension of a "
                f"(T, B, *shape) value) but the inputs have T = {steps}"
            )
        return value.__getitem__
    return lambda t: value
