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

from typing import Dict, Iterator, Set, Tuple

from torch import nn

from pysnn._checks import check_same_dt

__all__ = ["SNNNetwork", "reset_state", "detach_state"]


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
