"""A recurrent population over ``T`` steps: :func:`run_recurrent`, and its fused C loop.

``run_recurrent(connection, synapses, neuron, steps)`` runs the step loop of a population whose
connection reads its own spikes of the step before (the Vogels-Abbott networks: one
:class:`~pysnn.sparse.SparseLinear` onto ``G`` receptor groups, one synapse per group, a
:class:`~pysnn.neuron.LIFNeuron`), optionally driven by an external input current added to the
synapses' summed input (Brunel-type networks), all steps in one fused call of
:mod:`pysnn.native` where the modules fit it. :func:`pysnn.multistep.run_recurrent` is the same
function. The engine's planner lowers a captured step program of that shape (a user's network
whose ``forward`` is one step of the population) to it (:mod:`pysnn.engine.plan`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pysnn import _checks, backends, native
from pysnn._checks import check_same_dt
from pysnn._sharing import unshared
from pysnn.neuron import LIFNeuron, Neuron
from pysnn.sparse import SparseLinear
from pysnn.stepping import block_form_reason
from pysnn.synapse import ConductanceSynapse, ExponentialSynapse

__all__ = ["run_recurrent", "fused_reason"]


def run_recurrent(
    connection: nn.Module,
    synapses: Sequence[nn.Module],
    neuron: nn.Module,
    steps: int,
    spikes: Optional[torch.Tensor] = None,
    record: str = "raster",
    external: Optional[torch.Tensor] = None,
    external_first: bool = False,
) -> torch.Tensor:
    """Run ``steps`` steps of a recurrent population: per step ``t``

    .. code-block:: python

        x = connection(s).view(B, len(synapses), N)      # the neurons' own spikes, delayed one step
        s = neuron(synapses[0](x[:, 0]) + synapses[1](x[:, 1]) + ...)               # no external
        s = neuron(synapses[0](x[:, 0]) + synapses[1](x[:, 1]) + ... + external[t])  # last
        s = neuron(external[t] + synapses[0](x[:, 0]) + synapses[1](x[:, 1]) + ...)  # first

    (the Vogels-Abbott networks: one sparse connection for both receptor types, an excitatory and
    an inhibitory synapse; with ``external``, an input current such as the Poisson drive of a
    Brunel network). With a :class:`~pysnn.sparse.SparseLinear` without delay,
    :class:`~pysnn.synapse.ExponentialSynapse` / :class:`~pysnn.synapse.ConductanceSynapse`
    synapses feeding a :class:`~pysnn.neuron.LIFNeuron`, float32/float64 on the CPU, no gradient
    and no forward hook, all steps run in **one** fused call of :mod:`pysnn.native` (the
    connection's scatter, the synapses and the neuron per step, in C); otherwise the step loop
    above runs. Either way the spikes, and the state left in every module, are those of the step
    loop, bit for bit (single-threaded summation order of the connection; the sum is taken left
    to right as written above, so ``external_first`` matters in the last bit).

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
        external: ``(steps, B, *neuron.shape)`` the input current added to the synapses' summed
            input at each step (in the neuron's input unit: a voltage increment in mV for a
            :class:`~pysnn.neuron.LIFNeuron`), or ``None`` (default: no external input). The
            fused call takes it in the neuron's dtype; another dtype runs the step loop, with
            torch's type promotion.
        external_first: add ``external[t]`` as the first term of the sum rather than the last
            (default ``False``: last).

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
    batch = spikes.shape[0]
    if external is not None and (
        not isinstance(external, torch.Tensor) or tuple(external.shape) != (steps, batch, *shape)
    ):
        got = tuple(external.shape) if isinstance(external, torch.Tensor) else type(external)
        raise ValueError(
            f"external must be a (steps, B, *neuron.shape) = {(steps, batch, *shape)} tensor of "
            f"the neurons' input per step, got {got}"
        )
    if not isinstance(external_first, bool):
        raise TypeError(f"external_first must be a bool, got {type(external_first).__name__}")
    events = record == "events"
    out = _recurrent_fused(
        connection, synapses, neuron, steps, spikes, events, external, external_first
    )
    if out is not None:
        return out if events else out.view(steps, batch, *shape)
    groups = len(synapses)
    results = []
    s = spikes
    for t in range(steps):
        x = connection(s).view(batch, groups, *shape)
        if external is not None and external_first:
            total = external[t] + synapses[0](x[:, 0])
        else:
            total = synapses[0](x[:, 0])
        for k in range(1, groups):
            total = total + synapses[k](x[:, k])
        if external is not None and not external_first:
            total = total + external[t]
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


def fused_reason(
    connection: nn.Module,
    synapses: Sequence[nn.Module],
    neuron: nn.Module,
    spikes: torch.Tensor,
    external: Optional[torch.Tensor] = None,
) -> str:
    """Why :func:`run_recurrent` runs its step loop for these modules rather than its fused call
    (``""``: the fused call applies to the modules; when it runs it still checks the state's
    devices and dtypes and the constants' shapes, and runs the loop where they do not fit).

    Args:
        connection, synapses, neuron: as for :func:`run_recurrent`.
        spikes: ``(B, N)`` the connection's input of the first step (its size and whether it
            needs a gradient).
        external: the external input, or ``None`` (whether it needs a gradient).
    """
    weight = connection._parameters.get("weight") if isinstance(connection, nn.Module) else None
    if type(connection) is not SparseLinear:
        return f"the connection is a {type(connection).__name__}, not a SparseLinear"
    if connection.per_synapse_delay or connection.max_delay != 0:
        return "the connection has a delay"
    if weight is None or connection.out_features != len(synapses) * spikes.shape[1]:
        return "the connection's weight or outputs do not fit the population"
    for syn in synapses:
        if type(syn) not in (ExponentialSynapse, ConductanceSynapse):
            return f"{type(syn).__name__} is not an ExponentialSynapse or ConductanceSynapse"
    if any(syn._tau_m() is None for syn in synapses):
        return 'a synapse with drive="current" has no fused step'
    if not isinstance(neuron, LIFNeuron):
        return f"the neuron is a {type(neuron).__name__}, not a LIFNeuron"
    why = block_form_reason(neuron, LIFNeuron, LIFNeuron.BLOCK_REPRODUCES)
    why = why or block_form_reason(connection, SparseLinear, ("forward", "propagate"))
    if why:
        return why
    if neuron._parameters or any(syn._parameters for syn in synapses):
        return "a constant of the neuron or a synapse is an nn.Parameter"
    if neuron.__dict__.get("_override") is not None:
        return "a clamp, unclamp or inject_v (pysnn.forcing) is pending"
    for syn in synapses:
        why = block_form_reason(syn, type(syn), ())
        if why:
            return why
    wanted = weight.requires_grad or spikes.requires_grad
    if torch.is_grad_enabled() and (wanted or (external is not None and external.requires_grad)):
        return "a gradient is wanted (the fused loop has no backward pass)"
    if torch.compiler.is_compiling():
        return "torch.compile traces the step loop"
    if not backends.enabled("c"):
        return "the C backend is off (PYSNN_NATIVE=0, PYSNN_BACKEND) or not built"
    return ""


def _recurrent_fused(
    connection: nn.Module,
    synapses: Sequence[nn.Module],
    neuron: nn.Module,
    steps: int,
    spikes: torch.Tensor,
    events: bool,
    external: Optional[torch.Tensor],
    external_first: bool,
) -> Optional[torch.Tensor]:
    """:func:`run_recurrent` in one fused call, or ``None`` where it does not apply (then
    nothing is changed). ``spikes`` ``(B, N)``; ``external`` ``(steps, B, *neuron.shape)`` or
    ``None``."""
    if fused_reason(connection, synapses, neuron, spikes, external):
        return None
    weight = connection._parameters["weight"]
    batch = spikes.shape[0]
    like = spikes.reshape(batch, *neuron.shape).to(neuron._reference().dtype)
    Neuron._prepare(neuron, like)
    for syn in synapses:
        syn._prepare(like)
    state = neuron._buffers
    dtype = state["v"].dtype
    states = [state["v"], state["trace"]] + [s._buffers["g"] for s in synapses]
    tensors = [weight, spikes] + states
    if external is not None:
        external = external.detach().reshape(steps, batch, -1).contiguous()
        tensors.append(external)
    if (
        not backends.accepts("c", *tensors)
        or weight.dtype != dtype
        or (external is not None and external.dtype != dtype)
        or state["refrac_count"].dtype != torch.int64
        or not state["refrac_count"].is_contiguous()
        or not _layout_fits(connection, neuron, states + [state["refrac_count"]], batch)
    ):
        return None
    if _checks._VALUE_CHECKS and _checks.nonfinite(spikes):
        raise ValueError(_checks.nonfinite_message("spikes", spikes, type(connection).__name__))
    if external is not None and _checks._VALUE_CHECKS and _checks.nonfinite(external):
        return None  # (the step loop refuses the neuron's input at the step that holds it)
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
        external=external,
        external_first=external_first,
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


def _layout_fits(
    connection: SparseLinear, neuron: nn.Module, states: Sequence[torch.Tensor], batch: int
) -> bool:
    """Whether the tensors the fused loop addresses by pointer have the sizes it reads and
    writes: the connection's weight ``(nnz,)`` and its CSR indices (int64, contiguous), and the
    ``states`` (the neuron's and the synapses') ``(batch, *neuron.shape)``. A tensor reassigned
    through ``.data`` (another size or layout) keeps the module's checks happy but not the
    kernel's loops: the step loop then runs (torch's broadcasting, or its error)."""
    shape = (batch, *neuron.shape)
    nnz = connection.nnz
    return (
        connection._parameters["weight"].shape == (nnz,)
        and all(s.shape == shape for s in states)
        and all(
            t.shape == (size,) and t.dtype is torch.int64 and t.is_contiguous()
            for t, size in (
                (connection.row_ptr, connection.in_features + 1),
                (connection.post_index, nnz),
            )
        )
    )
