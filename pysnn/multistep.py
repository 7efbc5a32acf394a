r"""Multi-step mode: run ``T`` steps of a feed-forward connection + neuron pair in one call.

In a feed-forward pair the synaptic input of every step depends only on the presynaptic spikes,
never on the postsynaptic state, so the input currents of all ``T`` steps are computed at once,
one ``(T * B, in) @ W^T`` matrix product (:meth:`pysnn.connection.Linear.forward_multistep`), and
only the neuron's recurrence (leak, threshold, reset, refractoriness) runs step by step, for LIF
and IF neurons inside one fused call (:mod:`pysnn.native`):

.. code-block:: python

    spikes = encoder(rates)                     # (T, B, in)
    out = run_feedforward(fc, lif, spikes)      # (T, B, out), as T calls of lif(fc(spikes[t]))

The results, and the state left in both modules (spike history, membrane potential, traces), are
those of the step loop ``for t in range(T): out[t] = neuron(connection(spikes[t]))``, so blocks and
single steps can be mixed.

:func:`run_recurrent` does the same for a recurrent population (a sparse connection from the
neurons onto their own synapses, the Vogels-Abbott networks): all ``T`` steps in one fused loop,
the step loop's spikes bit for bit. :func:`run_layers` runs ``T`` steps of a network of layers
with lateral and recurrent connections and one-sample pair or triplet STDP (the Diehl & Cook
network, built from the public modules by anyone) in one fused call, with the step loop's
results bit for bit. Both live in the engine (:mod:`pysnn.engine.recurrent`,
:mod:`pysnn.engine.layers`), whose planner lowers a user's step network of either shape to them
under :class:`Unroll`. Other networks, and other learning rules, still run the step loop.

:class:`Unroll` turns a step network into a sequence module, ``(T, B, ...) -> (T, B, ...)`` with
the state reset at the start of every sequence: the unit to hand to
:class:`~torch.nn.parallel.DistributedDataParallel`, ``torch.compile`` or ``torch.export``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pysnn._checks import check_same_dt
from pysnn.engine.layers import Layer, run_layers  # noqa: F401  (part of this module's API)
from pysnn.engine.recurrent import run_recurrent  # noqa: F401  (part of this module's API)
from pysnn.engine.sequence import SequenceRunner
from pysnn.network import reset_state
from pysnn.stepping import step_through

__all__ = [
    "run_feedforward",
    "run_recurrent",
    "run_layers",
    "Unroll",
]


def run_feedforward(connection: nn.Module, neuron: nn.Module, spikes: torch.Tensor) -> torch.Tensor:
    """Run ``T`` steps of ``neuron(connection(x))`` with one matrix product for all steps.

    Args:
        connection: a connection with ``forward_multistep`` (:class:`pysnn.connection.Linear`);
            other modules are called once per step.
        neuron: a neuron module, ``(B, out) -> (B, out)`` spikes; its ``forward_multistep``
            runs all steps (one fused call for LIF/IF neurons, see
            :meth:`pysnn.neuron.Neuron.forward_multistep`), other modules are called per step.
        spikes: presynaptic spikes ``(T, B, in)``, time first.

    Returns:
        Postsynaptic spikes ``(T, B, out)`` (see :func:`pysnn.stepping.step_through` for modules without
        ``forward_multistep``).

    Raises:
        ValueError: ``spikes`` is not ``(T, B, ...)``, or ``connection.dt`` and ``neuron.dt``
            (ms) differ.
    """
    check_same_dt(connection=connection, neuron=neuron)
    if not isinstance(spikes, torch.Tensor) or spikes.dim() < 2:
        raise ValueError(
            "spikes must be a (T, B, ...) tensor, got "
            f"{tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes).__name__}"
        )
    multistep = getattr(connection, "forward_multistep", None)
    currents = multistep(spikes) if callable(multistep) else step_through(connection, spikes)
    multistep = getattr(neuron, "forward_multistep", None)
    return multistep(currents) if callable(multistep) else step_through(neuron, currents)


class Unroll(nn.Module):
    r"""Run a step network over a whole sequence in one call, resetting its state first.

    ``Unroll(net)(x)`` with ``x`` ``(T, B, ...)`` returns ``torch.stack([net(x[t]) for t in
    range(T)])`` ``(T, B, ...)``, after ``reset_state`` of every stateful module in ``net``: each
    call is one independent sequence. With ``steps=T`` the input ``x`` ``(B, ...)`` is instead
    fed at every one of ``T`` steps (a constant input, e.g. "direct encoding" of an image), and
    with ``encoder`` it is first mapped once per sequence (``encoder(x)``, e.g. the first layer's
    product of a constant image, computed once instead of ``T`` times).

    Because one ``forward`` is one whole sequence, the module is what
    :class:`~torch.nn.parallel.DistributedDataParallel` expects (one forward, one backward per
    iteration; the gradients of every step are summed before DDP's all-reduce), and what
    ``torch.compile`` and ``torch.export`` trace (the time loop is unrolled ``T`` times). Its
    parameters are those of ``network`` (and of ``encoder``, usually a submodule of it).

    Args:
        network: the step network, ``(B, ...) -> (B, ...)`` per call (an
            :class:`~pysnn.network.SNNNetwork` or any module).
        steps: number of steps ``T`` for a constant input; ``None`` (default): ``x`` is
            time first ``(T, B, ...)``.
        encoder: optional module applied once to ``x`` before the steps.
        reset: reset the state at the start of every call (default ``True``); ``False`` continues
            from the current state (e.g. truncated BPTT with ``detach_state`` between chunks).
        multistep: when ``network`` has a ``forward_multistep`` method (``(T, B, ...) -> (T, B,
            ...)``, the same as ``T`` calls), call it once; otherwise let the engine plan the
            sequence (:mod:`pysnn.engine`: layer by layer over all ``T`` steps where values only
            flow forward within a step, one product per connection and one fused call per LIF
            layer, under autograd too; a network of layers or a recurrent population in one
            fused loop; else the step loop; :func:`pysnn.engine.explain` says which and why). The results and state are the step loop's either way (up to the
            summation order of dense products of ``T * B`` rows). ``False``:
            always the step loop (default ``True``).
    """

    def __init__(
        self,
        network: nn.Module,
        steps: Optional[int] = None,
        encoder: Optional[nn.Module] = None,
        reset: bool = True,
        multistep: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if encoder is not None and not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module or None, got {encoder!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise TypeError(f"steps must be an int or None, got {steps!r}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.network = network
        self.encoder = encoder
        self.steps = steps
        self.reset = bool(reset)
        self.multistep = bool(multistep)
        self._runner = SequenceRunner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(T, B, ...)`` (or ``(B, ...)`` with ``steps``) → outputs ``(T, B, ...)``."""
        if self.reset:
            reset_state(self)
        if self.encoder is not None:
            x = self.encoder(x)
        if self.steps is None:
            if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"x must be time first (T, B, ...) with T >= 1 steps, got {got}"
                    + (" (from the encoder)" if self.encoder is not None else "")
                )
        if self.multistep:  # the engine plans the sequence (a module's own block form included)
            return self._runner(
                self.network, x if self.steps is None else x.expand(self.steps, *x.shape)
            )
        if self.steps is None:
            return torch.stack([self.network(step) for step in x])
        return torch.stack([self.network(x) for _ in range(self.steps)])

    def extra_repr(self) -> str:
        return f"steps={self.steps}, reset={self.reset}, multistep={self.multistep}"
