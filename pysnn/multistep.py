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
single steps can be mixed. A network with recurrent connections, or a learning rule that must see
every step, still needs the step loop.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["run_feedforward"]


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
        Postsynaptic spikes ``(T, B, out)``. Under ``torch.no_grad`` (or with no parameter
        requiring a gradient) they are written into one preallocated tensor; otherwise stacked so
        that gradients flow through every step.
    """
    if not isinstance(spikes, torch.Tensor) or spikes.dim() < 2:
        raise ValueError(
            "spikes must be a (T, B, ...) tensor, got "
            f"{tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes).__name__}"
        )
    multistep = getattr(connection, "forward_multistep", None)
    if callable(multistep):
        currents = multistep(spikes)
    else:
        currents = torch.stack([connection(s) for s in spikes])
    forward_multistep = getattr(neuron, "forward_multistep", None)
    if callable(forward_multistep):
        return forward_multistep(currents)
    if torch.is_grad_enabled() and currents.requires_grad:
        return torch.stack([neuron(c) for c in currents])
    first = neuron(currents[0])
    out = first.new_empty((currents.shape[0], *first.shape))
    out[0] = first
    for t in range(1, currents.shape[0]):
        out[t] = neuron(currents[t])
    return out
