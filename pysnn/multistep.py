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

from pysnn._checks import check_same_dt

__all__ = ["run_feedforward", "step_through", "has_forward_hooks"]


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward (pre-)hook, of ``module`` or global, must see each call of ``module``.

    Multi-step fast paths then call the module once per step instead (e.g. for a
    :class:`~pysnn.monitor.Monitor`, which records from a forward hook).
    """
    hooks = nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
    )


def step_through(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call ``module`` once per step: ``x`` ``(T, ...)`` → ``(T, *out_shape)``.

    With grad mode on the outputs are stacked (gradients flow through every step, to ``x`` and to
    the module's parameters); under ``torch.no_grad`` they are written into one preallocated tensor.
    """
    if torch.is_grad_enabled():
        return torch.stack([module(step) for step in x])
    first = module(x[0])
    out = first.new_empty((x.shape[0], *first.shape))
    out[0] = first
    for t in range(1, x.shape[0]):
        out[t] = module(x[t])
    return out


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
        Postsynaptic spikes ``(T, B, out)`` (see :func:`step_through` for modules without
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
