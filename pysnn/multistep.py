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
with lateral and recurrent connections and one-sample STDP (the Diehl & Cook network, built from
the public modules by anyone) in one fused call, with the step loop's results bit for bit. Other
networks, and other learning rules, still run the step loop.

:class:`Unroll` turns a step network into a sequence module, ``(T, B, ...) -> (T, B, ...)`` with
the state reset at the start of every sequence: the unit to hand to
:class:`~torch.nn.parallel.DistributedDataParallel`, ``torch.compile`` or ``torch.export``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pysnn import _checks, backends, native
from pysnn._checks import check_same_dt
from pysnn._sharing import unshared
from pysnn.engine.layers import Layer, run_layers  # noqa: F401  (part of this module's API)
from pysnn.engine.sequence import SequenceRunner
from pysnn.network import reset_state
from pysnn.neuron import LIFNeuron, Neuron
from pysnn.sparse import SparseLinear
from pysnn.stepping import block_form_reason, step_through
from pysnn.synapse import ConductanceSynapse, ExponentialSynapse

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


def run_recurrent(
    connection: nn.Module,
    synapses: Sequence[nn.Module],
    neuron: nn.Module,
    steps: int,
    spikes: Optional[torch.Tensor] = None,
    record: str = "raster",
) -> torch.Tensor:
    """Run ``steps`` steps of a recurrent population: per step

    .. code-block:: python

        x = connection(s).view(B, len(synapses), N)      # the neurons' own spikes, delayed one step
        s = neuron(synapses[0](x[:, 0]) + synapses[1](x[:, 1]) + ...)

    (the Vogels-Abbott networks: one sparse connection for both receptor types, an excitatory and
    an inhibitory synapse). With a :class:`~pysnn.sparse.SparseLinear` without delay,
    :class:`~pysnn.synapse.ExponentialSynapse` / :class:`~pysnn.synapse.ConductanceSynapse`
    synapses feeding a :class:`~pysnn.neuron.LIFNeuron`, float32/float64 on the CPU, no gradient
    and no forward hook, all steps run in **one** fused call of :mod:`pysnn.native` (the
    connection's scatter, the synapses and the neuron per step, in C); otherwise the step loop
    above runs. Either way the spikes, and the state left in every module, are those of the step
    loop, bit for bit (single-threaded summation order of the connection).

    Args:
        connection: ``(B, N) -> (B, G * N)``, from the neurons to ``G`` receptor groups.
        synapses: ``G`` synapse modules of ``neuron`` (their outputs are summed in this order).
        neuron: the population, ``N`` neurons (any shape; flattened for the connection).
        steps: number of steps, >= 1.
        spikes: ``(B, N)`` the connection's input of the first step (spikes of the step
            before); default the neuron's ``spikes`` state, or zeros for one sample.
        record: ``"raster"`` (default): return every spike value; ``"events"``: return only the
            spikes' indices (no ``steps x B x N`` tensor: for long runs of large, sparsely
            active networks, as a spike monitor records them).

    Returns:
        ``"raster"``: the spikes ``(steps, B, *neuron.shape)``, in the neuron's dtype.
        ``"events"``: ``(E, 3)`` int64 rows ``(step, sample, neuron)`` (``neuron`` the flat index
        into ``neuron.shape``), ordered by sample, then step, then neuron.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if record not in ("raster", "events"):
        raise ValueError(f'record must be "raster" or "events", got {record!r}')
    synapses = list(synapses)
    if not synapses:
        raise ValueError("synapses must name at least one synapse module")
    for k, syn in enumerate(synapses):
        if getattr(syn, "neuron", None) is not neuron:
            raise ValueError(f"synapses[{k}] does not feed neuron (its .neuron is another module)")
    check_same_dt(connection=connection, neuron=neuron)
    shape = tuple(neuron.shape)
    n = 1
    for size in shape:
        n *= size
    if spikes is None:
        spikes = neuron._buffers.get("spikes")
        if spikes is None:
            spikes = torch.zeros(1, *shape, dtype=neuron._reference().dtype)
    if not isinstance(spikes, torch.Tensor) or spikes.numel() == 0 or spikes[0].numel() != n:
        raise ValueError(f"spikes must be a (B, {n}) tensor of the neurons' spikes")
    spikes = spikes.reshape(spikes.shape[0], n)
    out_features = getattr(connection, "out_features", None)
    if isinstance(out_features, int) and out_features != len(synapses) * n:
        raise ValueError(
            f"connection has {out_features} outputs; run_recurrent needs one group of {n} per "
            f"synapse module ({len(synapses)} x {n} = {len(synapses) * n})"
        )
    events = record == "events"
    out = _recurrent_fused(connection, synapses, neuron, steps, spikes, events)
    if out is not None:
        return out if events else out.view(steps, spikes.shape[0], *shape)
    batch, groups = spikes.shape[0], len(synapses)
    results = []
    s = spikes
    for _ in range(steps):
        x = connection(s).view(batch, groups, *shape)
        total = synapses[0](x[:, 0])
        for k in range(1, groups):
            total = total + synapses[k](x[:, k])
        s = neuron(total)
        results.append(s.reshape(batch, n).nonzero() if events else s)
        s = s.reshape(batch, n)
    if not events:
        return torch.stack(results)
    found = torch.cat(
        [torch.cat((torch.full_like(f[:, :1], t), f), 1) for t, f in enumerate(results)]
    )
    order = (found[:, 1] * steps + found[:, 0]) * n + found[:, 2]  # sample, step, neuron
    return found[torch.argsort(order)]


def _recurrent_fused(connection, synapses, neuron, steps, spikes, events) -> Optional[torch.Tensor]:
    """:func:`run_recurrent` in one fused call, or ``None`` where it does not apply."""
    weight = connection._parameters.get("weight") if isinstance(connection, nn.Module) else None
    if (
        type(connection) is not SparseLinear
        or connection.per_synapse_delay
        or connection.max_delay != 0
        or weight is None
        or connection.out_features != len(synapses) * spikes.shape[1]
        or any(type(syn) not in (ExponentialSynapse, ConductanceSynapse) for syn in synapses)
        or any(syn._tau_m() is None for syn in synapses)  # drive="current"
        or not isinstance(neuron, LIFNeuron)
        or block_form_reason(neuron, LIFNeuron, LIFNeuron.BLOCK_REPRODUCES)
        or block_form_reason(connection, SparseLinear, ("forward", "propagate"))
        or neuron._parameters
        or any(syn._parameters for syn in synapses)
        or neuron.__dict__.get("_override") is not None
        or any(block_form_reason(syn, type(syn), ()) for syn in synapses)
        or (torch.is_grad_enabled() and (weight.requires_grad or spikes.requires_grad))
        or torch.compiler.is_compiling()
        or not backends.enabled("c")
    ):
        return None
    batch = spikes.shape[0]
    like = spikes.reshape(batch, *neuron.shape).to(neuron._reference().dtype)
    Neuron._prepare(neuron, like)
    for syn in synapses:
        syn._prepare(like)
    state = neuron._buffers
    dtype = state["v"].dtype
    tensors = [weight, spikes, state["v"], state["trace"]] + [s._buffers["g"] for s in synapses]
    if (
        not backends.accepts("c", *tensors)
        or weight.dtype != dtype
        or state["refrac_count"].dtype != torch.int64
        or not state["refrac_count"].is_contiguous()
    ):
        return None
    if _checks._VALUE_CHECKS and _checks.nonfinite(spikes):
        raise ValueError(_checks.nonfinite_message("spikes", spikes, type(connection).__name__))
    connection._check_bounds()
    # the kernel updates the state in place: where anyone else can see it, on a copy instead
    # (state is replaced, never changed under a reference someone keeps)
    for module, names in [(neuron, ("v", "refrac_count", "trace"))] + [
        (syn, ("g",)) for syn in synapses
    ]:
        for name in names:
            if not unshared(module._buffers, name):
                module._buffers[name] = module._buffers[name].clone()
    params = []
    for syn in synapses:
        a, k = syn.kernels()
        e_rev = syn._constant("e_rev") if isinstance(syn, ConductanceSynapse) else None
        params.append((syn._buffers["g"], a, k, e_rev))
    out = native.recurrent_steps(
        steps,
        connection.row_ptr,
        connection.post_index,
        weight.detach(),
        spikes,
        state["v"],
        state["refrac_count"],
        state["trace"],
        params,
        *neuron.step_parameters(),
        events=events,
    )
    if out is None:
        return None
    # the state the step loop leaves: the connection's last input, the neuron's last spikes
    if events:
        last = [spikes.new_zeros(batch, spikes.shape[1]) for _ in range(2)]
        for k, step in enumerate((steps - 1, steps - 2)):
            hit = out[out[:, 0] == step]
            last[k][hit[:, 1], hit[:, 2]] = 1
        final, before = last
    else:
        final, before = out[-1], out[-2] if steps > 1 else None
    connection._buffers["arriving"] = spikes if steps == 1 else before
    state["spikes"] = final.view(batch, *neuron.shape)
    return out


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
            layer, under autograd too; else the step loop; :func:`pysnn.engine.explain` says
            which and why). The results and state are the step loop's either way (up to the
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
