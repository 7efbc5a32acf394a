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

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from pysnn import _checks, native
from pysnn._checks import check_same_dt
from pysnn._sharing import unshared
from pysnn.connection import Linear
from pysnn.engine.sequence import SequenceRunner
from pysnn.learning import STDP, LearningRule
from pysnn.network import reset_state
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron, Neuron
from pysnn.sparse import SparseLinear
from pysnn.stepping import block_form_reason, has_forward_hooks, step_through
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
        or not native.available()
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
        not native.usable(*tensors)
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


Layer = Tuple[nn.Module, Sequence[Tuple[nn.Module, nn.Module]]]


def _kind(fast: object) -> str:
    """Which fused kernel a module's remembered fast step runs (``""``: none)."""
    return getattr(fast, "KIND", "")


def run_layers(
    input: nn.Module,
    layers: Sequence[Layer],
    spikes: torch.Tensor,
    rules: Sequence[nn.Module] = (),
    record: Sequence[nn.Module] = (),
    counts: bool = False,
) -> List[torch.Tensor]:
    """Run ``T`` steps of a network of layers: per step

    .. code-block:: python

        input(spikes[t])
        for neuron, incoming in layers:                 # in order
            current = None
            for connection, pre in incoming:            # in order
                s = pre.spikes                          # this step's if pre stepped already,
                if s is not None and len(s) == B:       # else the step before's (if any, of
                    c = connection(s)                   # this batch size)
                    current = c if current is None else current + c
            neuron(current if current is not None else zeros)
        for rule in rules:
            rule.step()

    e.g. Diehl & Cook (2015) (:class:`~pysnn.models.DiehlCook2015` runs exactly this)::

        run_layers(inp, [(exc, [(fc, inp), (i2e, inh)]), (inh, [(e2i, exc)])], spikes,
                   rules=[stdp], record=[exc], counts=True)

    The loop above is what runs, and its results are what you get; but where every module is a
    built-in one on its fused single-step path (:class:`~pysnn.neuron.Input`;
    :class:`~pysnn.neuron.LIFNeuron`, :class:`~pysnn.neuron.IFNeuron` or
    :class:`~pysnn.neuron.AdaptiveLIFNeuron` layers of one dimension; event-driven
    :class:`~pysnn.connection.Linear` connections without delay; :class:`~pysnn.learning.STDP` at
    batch 1, or any rule that is switched off), float32/float64 on the CPU with no gradient
    wanted and no forward hook, runs of steps go to **one** call of :mod:`pysnn.native` instead
    of ``~10`` module calls per step. The spikes, and the state left in every module (voltages,
    refractory counters, traces, thresholds, spikes, arriving spikes, ``"auto"`` activity
    counts, weights and their event copies), are the loop's bit for bit. A step where anything
    does not fit (the first steps after a reset, which build the modules' fast paths, an
    ``"auto"`` re-count, a hook) runs the loop; with value checks on
    (:func:`pysnn.set_checks`), a NaN input raises the loop's ``ValueError``.

    Args:
        input: the input neuron group, called with ``spikes[t]`` each step.
        layers: ``(neuron, incoming)`` pairs in the order they step; ``incoming`` lists
            ``(connection, pre)`` pairs, ``pre`` being ``input`` or a neuron of ``layers``.
        spikes: ``(T, B, *input.shape)`` input spikes, ``T >= 1``.
        rules: learning rules stepped after the layers, in order.
        record: neurons of ``layers`` whose spikes to return.
        counts: return spike counts over the ``T`` steps ``(B, *shape)`` instead of the spikes
            ``(T, B, *shape)``.

    Returns:
        One tensor per neuron of ``record``, in the neurons' dtype.
    """
    layers = _check_layers(input, layers)
    rules, record = list(rules), list(record)
    neurons = [neuron for neuron, _ in layers]
    for k, rule in enumerate(rules):
        if not isinstance(rule, nn.Module) or not callable(getattr(rule, "step", None)):
            raise TypeError(
                f"rules[{k}] must be a learning rule (a module with step()), got {rule!r}"
            )
    for k, neuron in enumerate(record):
        if not any(neuron is other for other in neurons):
            raise ValueError(f"record[{k}] is not a neuron of layers")
    if not isinstance(spikes, torch.Tensor) or spikes.dim() < 2 or spikes.shape[0] < 1:
        got = tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes).__name__
        raise ValueError(f"spikes must be a (T, B, ...) tensor with T >= 1, got {got}")
    if not spikes.is_floating_point():  # as Input does per step
        reference = getattr(input, "_reference", None)
        spikes = spikes.to(reference().dtype if callable(reference) else torch.get_default_dtype())
    spikes = spikes.contiguous()  # (the fused call reads its memory)
    n_steps, batch = spikes.shape[0], spikes.shape[1]
    outputs: List[Optional[torch.Tensor]] = [None] * len(record)
    t = 0
    while t < n_steps:
        done = _layers_fused(input, layers, rules, record, counts, spikes, t, outputs)
        if done:
            t += done
            continue
        out = _layers_step(input, layers, rules, spikes[t])
        for k, neuron in enumerate(record):
            s = out[next(j for j, other in enumerate(neurons) if other is neuron)]
            if outputs[k] is None:
                outputs[k] = s.new_zeros(s.shape if counts else (n_steps, *s.shape))
            if counts:
                outputs[k] += s
            else:
                outputs[k][t] = s
        t += 1
    return outputs  # type: ignore[return-value]


def _check_layers(input: nn.Module, layers: Sequence[Layer]) -> List[Tuple[nn.Module, list]]:
    """``layers`` as lists, checked (see :func:`run_layers`)."""
    if not isinstance(input, nn.Module):
        raise TypeError(f"input must be a neuron module, got {type(input).__name__}")
    checked = []
    for k, layer in enumerate(layers):
        if not (isinstance(layer, (tuple, list)) and len(layer) == 2):
            raise ValueError(f"layers[{k}] must be a (neuron, incoming) pair, got {layer!r}")
        neuron, incoming = layer
        if not isinstance(neuron, nn.Module):
            raise TypeError(f"layers[{k}][0] must be a neuron module, got {type(neuron).__name__}")
        if neuron is input or any(neuron is other for other, _ in checked):
            raise ValueError(f"layers[{k}]: each neuron group may appear once (and not as input)")
        checked.append((neuron, list(incoming)))
    if not checked:
        raise ValueError("layers must list at least one (neuron, incoming) pair")
    groups = [input] + [neuron for neuron, _ in checked]
    for k, (_, incoming) in enumerate(checked):
        for j, pair in enumerate(incoming):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(
                    f"layers[{k}][1][{j}] must be a (connection, pre) pair, got {pair!r}"
                )
            connection, pre = pair
            if not isinstance(connection, nn.Module):
                raise TypeError(
                    f"layers[{k}][1][{j}]: the connection must be a module, "
                    f"got {type(connection).__name__}"
                )
            if not any(pre is group for group in groups):
                raise ValueError(f"layers[{k}][1][{j}]: pre must be input or a neuron of layers")
    return checked


def _layers_step(input: nn.Module, layers: list, rules: list, x: torch.Tensor) -> list:
    """One step of :func:`run_layers` through the modules; the spikes of each layer."""
    input(x)
    out = []
    for neuron, incoming in layers:
        current = None
        for connection, pre in incoming:
            s = pre.spikes
            if s is not None and s.shape[0] == x.shape[0]:
                c = connection(s)
                current = c if current is None else current + c
        if current is None:
            current = x.new_zeros((x.shape[0], *neuron.shape))
        out.append(neuron(current))
    for rule in rules:
        rule.step()
    return out


def _layers_fused(
    input: nn.Module,
    layers: list,
    rules: list,
    record: list,
    counts: bool,
    spikes: torch.Tensor,
    t0: int,
    outputs: list,
) -> int:
    """Steps ``t0, t0 + 1, ...`` of :func:`run_layers` in one fused call: how many it ran (0:
    the next step does not fit; run it through the modules)."""
    x = spikes[t0:]
    dtype, batch = x.dtype, x.shape[1]
    if (
        not native.available()
        or not x.is_cpu
        or dtype not in (torch.float32, torch.float64)
        or x.dim() != 3
        or torch.compiler.is_compiling()
    ):
        return 0
    groups = [input] + [neuron for neuron, _ in layers]
    fast = input.__dict__.get("_fast")
    if (
        _kind(fast) != "trace"
        or block_form_reason(input, Input, ("forward", "step"))
        or not fast.ready(input, x.shape[1:], dtype)
    ):
        return 0
    if torch.is_grad_enabled() and x.requires_grad:
        return 0
    limit = x.shape[0]
    sizes = [x.shape[2]]
    for neuron in groups[1:]:
        fast = neuron.__dict__.get("_fast")
        s = neuron._buffers.get("spikes")
        if (
            _kind(fast) not in ("lif", "adaptive")
            or block_form_reason(
                neuron,
                LIFNeuron if _kind(fast) == "lif" else AdaptiveLIFNeuron,
                LIFNeuron.BLOCK_REPRODUCES,
            )
            or len(fast.shape) != 2
            or fast.shape[0] != batch
            or not fast.ready(neuron, fast.shape, dtype)
            or s is None
            or s.shape != fast.shape
            or s.dtype is not dtype
        ):
            return 0
        sizes.append(fast.shape[1])
    n_conns = sum(len(incoming) for _, incoming in layers)
    if n_conns > native.LAYER_MAX_CONNECTIONS:
        return 0
    for k, (neuron, incoming) in enumerate(layers, 1):
        for connection, pre in incoming:
            fast = connection.__dict__.get("_fast")
            p = next(j for j, group in enumerate(groups) if group is pre)
            if _kind(fast) != "linear" or block_form_reason(
                connection, Linear, Linear.BLOCK_REPRODUCES
            ):
                return 0
            bias = fast.bias
            copy = connection._copy.copy
            if (
                fast.shape != (batch, sizes[p])
                or fast.dtype is not dtype
                or copy is None
                or copy.shape != (sizes[p], sizes[k])
                or (bias is not None and (bias.dtype is not dtype or not bias.is_contiguous()))
            ):
                return 0
            limit = min(limit, fast.remaining(connection))
    if limit == 0:
        return 0
    connections = [c for _, incoming in layers for c, _ in incoming]
    applied = []  # (rule, fast STDP)
    for rule in rules:
        active = getattr(rule, "enabled", False) and rule.training
        fast = rule.__dict__.get("_fast")
        if type(rule).forward not in (LearningRule.forward, STDP.forward):
            return 0
        if not active:
            continue
        if _kind(fast) != "stdp" or batch != 1:
            return 0
        ready = fast.ready(rule)
        if ready is None:
            return 0
        if ready:
            g = fast.group
            if (
                fast.dtype is not dtype
                or not any(g.connection is c for c in connections)
                or not any(g.pre is group for group in groups)
                or not any(g.post is group for group in groups[1:])
            ):
                return 0
            applied.append((rule, fast))
    return _layers_call(
        input,
        layers,
        groups,
        sizes,
        connections,
        applied,
        record,
        counts,
        spikes,
        t0,
        limit,
        outputs,
    )


def _layers_call(
    input, layers, groups, sizes, connections, applied, record, counts, spikes, t0, limit, outputs
) -> int:
    """The fused call of :func:`_layers_fused`, everything checked: steps ``t0 .. t0 + limit - 1``
    of ``spikes`` (fewer if a NaN stops them: then raises); returns the steps run."""
    x = spikes[t0 : t0 + limit]
    n_steps, batch = x.shape[0], x.shape[1]
    index = {id(group): j for j, group in enumerate(groups)}
    buffers, rows = [], []
    state = input._buffers
    kernel = input.__dict__["_fast"].kernel
    rows.append([0, sizes[0], 0, 0, state["trace"].data_ptr(), 0, kernel._table, 0])
    rows[-1] += [kernel._additive, 0, 0, 0, 0, 0]
    for k, neuron in enumerate(groups[1:], 1):
        fast, state = neuron.__dict__["_fast"], neuron._buffers
        kernel = fast.kernel
        adaptive = _kind(fast) == "adaptive"
        buf = x.new_empty(2, batch, sizes[k])
        buf[1].copy_(state["spikes"])
        buffers.append(buf)
        row = [2 if adaptive else 1, sizes[k], state["v"].data_ptr()]
        row += [state["refrac_count"].data_ptr(), state["trace"].data_ptr()]
        row += [state["theta"].data_ptr() if adaptive else 0, kernel._table]
        row += [kernel._theta_table if adaptive else 0, kernel._additive]
        row += [int(kernel._shared), int(kernel._update)] if adaptive else [0, 0]
        mode, target = 0, 0
        for j, wanted in enumerate(record):
            if wanted is neuron:
                if outputs[j] is None:
                    shape = (batch, *neuron.shape)
                    outputs[j] = x.new_zeros(shape if counts else (spikes.shape[0], *shape))
                out = outputs[j]
                mode, target = (2, out.data_ptr()) if counts else (1, out[t0].data_ptr())
                break
        rows.append(row + [buf.data_ptr(), target, mode])
    group_desc = torch.tensor(rows, dtype=torch.int64)
    conn_rows, conn_lo = [], [0]
    for k, (_, incoming) in enumerate(layers, 1):
        for connection, pre in incoming:
            bias = connection.__dict__["_fast"].bias
            p = index[id(pre)]
            conn_rows.append([p, k, connection._copy.copy.data_ptr()])
            conn_rows[-1] += [0 if bias is None else bias.data_ptr(), sizes[p], sizes[k]]
        conn_lo.append(len(conn_rows))
    conn_desc = torch.tensor(conn_rows, dtype=torch.int64).view(-1, len(native.LAYER_CONN_FIELDS))
    rule_rows, rates = [], []
    for rule, fast in applied:
        g = fast.group
        conn = g.connection
        c = next(j for j, other in enumerate(connections) if other is conn)
        bounded = math.isfinite(conn.wmin) or math.isfinite(conn.wmax)
        rule_rows.append([c, index[id(g.pre)], index[id(g.post)], fast.weight.data_ptr()])
        rule_rows[-1] += [conn._copy.copy.data_ptr(), int(bounded)]
        rates.append(
            [fast.pot, fast.dep, conn.wmin if bounded else 0.0, conn.wmax if bounded else 0.0]
        )
    rule_desc = torch.tensor(rule_rows, dtype=torch.int64).view(-1, len(native.LAYER_RULE_FIELDS))
    rate_desc = torch.tensor(rates, dtype=torch.float64).view(-1, 4)
    active = torch.zeros(len(connections), dtype=torch.int64)
    changed = torch.zeros(len(applied), dtype=torch.int64)
    done, stop = native.layer_steps(
        x,
        group_desc,
        conn_desc,
        torch.tensor(conn_lo, dtype=torch.int64),
        rule_desc,
        rate_desc,
        active,
        changed,
        _checks._VALUE_CHECKS,
    )
    # The modules' state as the step loop leaves it. Steps run fully: done; a NaN (stop >= 0)
    # stopped step ``done`` before group ``stop``: the groups before it, and the connections
    # into it, had run that step too.
    ran = [done + (1 if 0 <= k < stop else 0) for k in range(len(groups))]
    if ran[0]:
        input._buffers["spikes"] = spikes[t0 + ran[0] - 1]
    for k, neuron in enumerate(groups[1:], 1):
        if ran[k]:
            neuron._buffers["spikes"] = buffers[k - 1][(ran[k] - 1) % 2].clone()
    c = -1
    for k, (_, incoming) in enumerate(layers, 1):
        steps = done + (1 if 1 <= k <= stop else 0)
        for connection, pre in incoming:
            c += 1
            if not steps:
                continue
            p = index[id(pre)]
            if p == 0:
                arriving = spikes[t0 + steps - 1]
            elif p < k:  # read this step's spikes of pre (committed above)
                arriving = pre._buffers["spikes"]
            else:  # the step before's
                arriving = buffers[p - 1][steps % 2].clone()
            connection._buffers["arriving"] = arriving
            fast = connection.__dict__["_fast"]
            if fast.counting:
                activity = connection._activity
                activity.steps += steps
                activity.events += int(active[c])
    for q, (rule, fast) in enumerate(applied):
        g = fast.group
        g._step += done
        if changed[q]:
            conn, weight = g.connection, fast.weight
            torch.autograd.graph.increment_version(weight)
            conn._copy._rekey(weight)
            conn._edited()
    if stop >= 0:
        module = groups[stop]
        if stop == 0:
            raise ValueError(_checks.nonfinite_message("x", x[done], type(module).__name__))
        raise ValueError(
            f"x contains NaN or an infinity (input to {type(module).__name__}, step {t0 + done}"
            "); a non-finite input would make the state non-finite for good. Find where it "
            "comes from (a weight, an encoder, a division)"
        )
    return done


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
            which and why). The results and state are the step loop's either way. ``False``:
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
        multistep = getattr(self.network, "forward_multistep", None) if self.multistep else None
        if multistep is not None:
            return multistep(x if self.steps is None else x.expand(self.steps, *x.shape))
        if self.multistep:  # the engine plans the sequence (layer-wise where it can)
            return self._runner(
                self.network, x if self.steps is None else x.expand(self.steps, *x.shape)
            )
        if self.steps is None:
            return torch.stack([self.network(step) for step in x])
        return torch.stack([self.network(x) for _ in range(self.steps)])

    def extra_repr(self) -> str:
        return f"steps={self.steps}, reset={self.reset}, multistep={self.multistep}"
