"""A network of layers over ``T`` steps: :func:`run_layers`, and its fused C loop.

``run_layers(input, layers, spikes, rules, record)`` takes a network as data (each layer a
neuron group with its incoming ``(connection, pre)`` pairs) and runs its documented step loop,
in one fused call of :mod:`pysnn.native` for runs of steps where every module is on its fused
single-step path. The engine's planner lowers a captured step program of that shape (the
Diehl & Cook network written by a user, with lateral inhibition and STDP stepped in ``forward``)
to it (:mod:`pysnn.engine.plan`).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from pysnn import _checks, backends, native
from pysnn.connection import Linear
from pysnn.functional.lif import adaptive_lif_trace_kernel, lif_trace_kernel
from pysnn.functional.trace import trace_kernel
from pysnn.learning import LearningRule, OneSampleStep, fused_one_sample
from pysnn._sharing import all_unshared
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron
from pysnn.stepping import block_form_reason
from pysnn.synapse import ConductanceSynapse

__all__ = ["Layer", "run_layers"]


#: ``(neuron, incoming)``: ``incoming`` lists ``(connection, pre)`` or
#: ``(connection, pre, synapse)`` entries (see :func:`run_layers`).
Layer = Tuple[nn.Module, Sequence[Tuple[nn.Module, ...]]]


def _kind(fast: object) -> str:
    """Which kernel a neuron's kept single step runs (``"generated"``; ``""``: none)."""
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
            for connection, pre[, synapse] in incoming: # in order
                s = pre.spikes                          # this step's if pre stepped already,
                if s is not None and len(s) == B:       # else the step before's (if any, of
                    c = connection(s)                   # this batch size)
                elif synapse given:
                    c = zeros                           # (its conductance still decays)
                else:
                    continue
                if synapse given:
                    c = synapse(c)
                current = c if current is None else current + c
            neuron(current if current is not None else zeros)
        for rule in rules:
            rule.step()

    e.g. Diehl & Cook (2015) (:class:`~pysnn.models.DiehlCook2015` runs exactly this)::

        run_layers(inp, [(exc, [(fc, inp), (i2e, inh)]), (inh, [(e2i, exc)])], spikes,
                   rules=[stdp], record=[exc], counts=True)

    and with the paper's conductance synapses (:class:`~pysnn.synapse.ConductanceSynapse`
    modules between the connections and the neurons)::

        run_layers(inp, [(exc, [(fc, inp, syn_input), (i2e, inh, syn_inh)]),
                         (inh, [(e2i, exc, syn_e2i)])], spikes, ...)

    The loop above is what runs, and its results are what you get; but where every module is a
    built-in one on its fused single-step path (:class:`~pysnn.neuron.Input`;
    :class:`~pysnn.neuron.LIFNeuron`, :class:`~pysnn.neuron.IFNeuron` or
    :class:`~pysnn.neuron.AdaptiveLIFNeuron` layers of one dimension; event-driven
    :class:`~pysnn.connection.Linear` connections without per-synapse delays (a shared delay
    runs through the connection's ring in place, as its step does), each optionally through a
    :class:`~pysnn.synapse.ConductanceSynapse` of the layer's neuron (with value checks on, only
    where the arriving conductance cannot be negative: non-negative input, weights, biases and
    learning-rule bounds); :class:`~pysnn.learning.STDP` or :class:`~pysnn.learning.TripletSTDP`
    at batch 1 where :func:`~pysnn.learning.fused_update_reason` finds nothing against it (no
    weight dependence, ``grad``, ``norm``, process group or delay), or any rule that is switched
    off), float32/float64 on the CPU with no gradient wanted and no forward hook, runs of steps
    go to **one** call of :mod:`pysnn.native` instead of ``~10`` module calls per step. The
    spikes, and the state left in every module (voltages, refractory counters, traces,
    thresholds, spikes, arriving spikes, ``"auto"`` activity counts, weights and their event
    copies, the rules' own traces), are the loop's bit for bit. A step where anything
    does not fit (the first steps after a reset, which make the neurons' generated steps, an
    ``"auto"`` re-count, a hook) runs the loop; with value checks on
    (:func:`pysnn.set_checks`), a NaN input raises the loop's ``ValueError``.

    Args:
        input: the input neuron group, called with ``spikes[t]`` each step.
        layers: ``(neuron, incoming)`` pairs in the order they step; ``incoming`` lists
            ``(connection, pre)`` pairs, ``pre`` being ``input`` or a neuron of ``layers``, or
            ``(connection, pre, synapse)`` triples, ``synapse`` a module (such as a
            :class:`~pysnn.synapse.Synapse` of ``neuron``) that turns the connection's output
            into the neuron's input.
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
    n_steps = spikes.shape[0]
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
        checked.append((neuron, [tuple(pair) for pair in incoming]))
    if not checked:
        raise ValueError("layers must list at least one (neuron, incoming) pair")
    groups = [input] + [neuron for neuron, _ in checked]
    for k, (_, incoming) in enumerate(checked):
        for j, pair in enumerate(incoming):
            if not (isinstance(pair, (tuple, list)) and len(pair) in (2, 3)):
                raise ValueError(
                    f"layers[{k}][1][{j}] must be a (connection, pre) pair or a (connection, pre, "
                    f"synapse) triple, got {pair!r}"
                )
            connection, pre = pair[0], pair[1]
            if len(pair) == 3 and not isinstance(pair[2], nn.Module):
                raise TypeError(
                    f"layers[{k}][1][{j}]: the synapse must be a module, "
                    f"got {type(pair[2]).__name__}"
                )
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
        for connection, pre, *synapse in incoming:
            s = pre.spikes
            if s is not None and s.shape[0] == x.shape[0]:
                c = connection(s)
            elif synapse:  # no spikes arrive: the synapse still steps (its state decays)
                c = x.new_zeros((x.shape[0], *neuron.shape))
            else:
                continue
            if synapse:
                c = synapse[0](c)
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
        not backends.enabled("c")
        or not x.is_cpu
        or dtype not in (torch.float32, torch.float64)
        or x.dim() != 3
        or torch.compiler.is_compiling()
    ):
        return 0
    groups = [input] + [neuron for neuron, _ in layers]
    # Each group's single steps run the kernel generated from its step (the built-in Input,
    # LIF, IF and AdaptiveLIF steps); the network kernel runs the built-in fused steps of the
    # same discretised constants instead, the same values bit for bit, each kept beside the
    # generated step as its companion (rebuilt with it when a constant changes).
    fast = input.__dict__.get("_fast")
    if (
        _kind(fast) != "generated"
        or block_form_reason(input, Input, ("forward", "step"))
        or not fast.ready(input, x.shape[1:], dtype)
        or input._parameters
    ):
        return 0
    if torch.is_grad_enabled() and x.requires_grad:
        return 0
    input_kernel = fast.companion(lambda: trace_kernel(input.trace_parameters(), x[0]))
    if input_kernel is None:
        return 0
    limit = x.shape[0]
    sizes = [x.shape[2]]
    kernels = []  # each neuron group's fused single-step kernel (its table and trace mode)
    for neuron in groups[1:]:
        fast = neuron.__dict__.get("_fast")
        s = neuron._buffers.get("spikes")
        model = type(neuron).step
        cls = AdaptiveLIFNeuron if model is AdaptiveLIFNeuron.step else LIFNeuron
        if (
            _kind(fast) != "generated"
            or model not in (LIFNeuron.step, AdaptiveLIFNeuron.step)
            or block_form_reason(neuron, cls, LIFNeuron.BLOCK_REPRODUCES)
            or len(fast.shape) != 2
            or fast.shape[0] != batch
            or not fast.ready(neuron, fast.shape, dtype)
            or s is None
            or s.shape != fast.shape
            or s.dtype is not dtype
            or neuron._parameters
            or neuron._buffers["refrac_count"].dtype is not torch.int64
        ):
            return 0
        if cls is AdaptiveLIFNeuron:
            shared = neuron.theta_shared
            kernel = fast.companion(
                lambda: adaptive_lif_trace_kernel(
                    *neuron.step_parameters(),
                    neuron.theta_decay(),
                    neuron._buffers["theta_plus"],
                    s,
                    shared,
                    update=neuron.training or not shared,
                )
            )
        else:
            kernel = fast.companion(lambda: lif_trace_kernel(*neuron.step_parameters(), s))
        if kernel is None:
            return 0
        kernels.append(kernel)
        sizes.append(fast.shape[1])
    n_conns = sum(len(incoming) for _, incoming in layers)
    if n_conns > native.LAYER_MAX_CONNECTIONS:
        return 0
    fed = []  # connections whose output passes through a synapse
    for k, (neuron, incoming) in enumerate(layers, 1):
        for connection, pre, *synapse in incoming:
            if synapse:
                if not _synapse_ready(synapse[0], neuron, (batch, sizes[k]), dtype):
                    return 0
                fed.append(connection)
            p = next(j for j, group in enumerate(groups) if group is pre)
            if not isinstance(connection, Linear) or block_form_reason(
                connection, Linear, Linear.BLOCK_REPRODUCES
            ):
                return 0
            steps = connection.event_steps()  # (0 unless its event copy is up to date)
            bias = connection._parameters.get("bias")
            copy = connection._copy.copy
            if (
                not steps
                or ("bias" not in connection._parameters and connection.bias is not None)
                or copy.dtype is not dtype
                or copy.shape != (sizes[p], sizes[k])
                or (
                    bias is not None
                    and (
                        bias.shape != (sizes[k],)
                        or bias.dtype is not dtype
                        or not bias.is_cpu
                        or not bias.is_contiguous()
                    )
                )
            ):
                return 0
            if connection.max_delay and not _ring_ready(connection, (batch, sizes[p]), dtype):
                return 0
            limit = min(limit, steps)
    if limit == 0:
        return 0
    connections = [entry[0] for _, incoming in layers for entry in incoming]
    for connection in connections:  # (a ring pushed twice a step: the loop's order of pushes)
        if connection.max_delay and sum(c is connection for c in connections) > 1:
            return 0
    applied = []  # (rule, its fused step, the traces it advances (triplet STDP) or None)
    for rule in rules:
        if type(rule).forward is not LearningRule.forward:
            return 0
        if not (getattr(rule, "enabled", False) and rule.training):
            continue  # (no learning: as the rule's step)
        step = fused_one_sample(rule)
        if step is None or step.kind not in native.LAYER_RULE_KINDS or batch != 1:
            return 0
        g = step.group
        if not g.connection.training:
            continue  # (the rule's step skips a connection in eval())
        if (
            step.dtype is not dtype
            or not any(g.connection is c for c in connections)
            or not any(g.post is group for group in groups[1:])
            or (step.kind == "stdp" and not any(g.pre is group for group in groups))
        ):
            return 0
        traces = step.traces() if step.kind == "triplet" else None
        if step.kind == "triplet" and traces is None:
            return 0
        applied.append((rule, step, traces))
    if fed and _checks._VALUE_CHECKS and not _conductance_non_negative(fed, applied, x):
        return 0  # (the synapses' check of a negative conductance must see every step)
    return _layers_call(
        input,
        layers,
        groups,
        [input_kernel] + kernels,
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


def _synapse_ready(synapse: nn.Module, neuron: nn.Module, shape: tuple, dtype: torch.dtype) -> bool:
    """Whether the fused loop may step ``synapse`` in place: a
    :class:`~pysnn.synapse.ConductanceSynapse` of ``neuron`` (whose ``v`` it reads) with no
    subclass step, hook, learned constant or pending override, and state ``g`` of ``shape`` and
    ``dtype`` that nothing else sees and that needs no gradient."""
    if not isinstance(synapse, ConductanceSynapse) or block_form_reason(
        synapse, ConductanceSynapse, ConductanceSynapse.BLOCK_REPRODUCES
    ):
        return False
    if synapse.neuron is not neuron or synapse._parameters or synapse.__dict__.get("_override"):
        return False
    if not all_unshared(synapse._buffers, ("g",)):  # (before a local name refers to it)
        return False
    g = synapse._buffers["g"]
    return g.shape == shape and g.dtype is dtype and g.is_contiguous() and not g.requires_grad


def _ring_ready(connection: Linear, shape: tuple, dtype: torch.dtype) -> bool:
    """Whether the fused loop may push into the shared-delay ring of ``connection`` in place, as
    :meth:`~pysnn.connection.Connection._push` would: a contiguous ``history`` for inputs of
    ``shape`` ``(B, n_in)`` and ``dtype`` that nothing else sees and that needs no gradient
    (made by the general step: after a reset or a change of batch the loop's first step makes
    it)."""
    if not all_unshared(connection._buffers, ("history",)):
        return False
    ring = connection._buffers.get("history")
    return (
        ring is not None
        and ring.shape == (shape[0], connection.max_delay + 1, shape[1])
        and ring.dtype is dtype
        and ring.is_contiguous()
        and not ring.requires_grad
        and not (ring.is_inference() and not torch.is_inference_mode_enabled())
    )


def _conductance_non_negative(fed: list, applied: list, x: torch.Tensor) -> bool:
    """Whether no conductance arriving at a synapse can be negative in the fused run: the input
    spikes, the weights and biases of the connections that feed synapses are >= 0, and every
    rule that changes such weights keeps them >= 0 (a lower bound >= 0)."""
    if bool((x < 0).any()):
        return False
    for connection in fed:
        bias = connection._parameters.get("bias")
        if bool((connection.weight < 0).any()) or (bias is not None and bool((bias < 0).any())):
            return False
    for _, step, _ in applied:
        conn = step.group.connection
        if any(conn is c for c in fed) and not (conn.wmin >= 0 and math.isfinite(conn.wmin)):
            return False
    return True


def _layers_call(
    input,
    layers,
    groups,
    kernels,
    sizes,
    connections,
    applied,
    record,
    counts,
    spikes,
    t0,
    limit,
    outputs,
) -> int:
    """The fused call of :func:`_layers_fused`, everything checked: steps ``t0 .. t0 + limit - 1``
    of ``spikes`` (fewer if a NaN stops them: then raises); returns the steps run. ``kernels``:
    each group's fused single-step kernel, the input's first."""
    x = spikes[t0 : t0 + limit]
    batch = x.shape[1]
    index = {id(group): j for j, group in enumerate(groups)}
    buffers, rows = [], []
    state = input._buffers
    kernel = kernels[0]
    rows.append([0, sizes[0], 0, 0, state["trace"].data_ptr(), 0, kernel._table, 0])
    rows[-1] += [kernel._additive, 0, 0, 0, 0, 0]
    for k, neuron in enumerate(groups[1:], 1):
        state = neuron._buffers
        kernel = kernels[k]
        adaptive = isinstance(kernel, native.AdaptiveLIFStepKernel)
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
    conn_rows, conn_lo, keep = [], [0], []
    rings = {}  # connection index -> (ring slot its first step writes, arriving spikes)
    for k, (_, incoming) in enumerate(layers, 1):
        for connection, pre, *synapse in incoming:
            bias = connection._parameters.get("bias")
            p = index[id(pre)]
            conn_rows.append([p, k, connection._copy.copy.data_ptr()])
            conn_rows[-1] += [0 if bias is None else bias.data_ptr(), sizes[p], sizes[k]]
            if synapse:
                g = synapse[0]._buffers["g"]
                tables = _synapse_tables(synapse[0], sizes[k], x.dtype)
                keep.append(tables)  # (alive until the call returns)
                conn_rows[-1] += [g.data_ptr(), *(t.data_ptr() for t in tables)]
            else:
                conn_rows[-1] += [0, 0, 0, 0]
            if connection.max_delay:
                ring = connection._buffers["history"]
                pos, arrive = connection._ring_pos(), x.new_empty(batch, sizes[p])
                rings[len(conn_rows) - 1] = (pos, arrive)
                conn_rows[-1] += [ring.data_ptr(), ring.shape[1], pos, arrive.data_ptr()]
            else:
                conn_rows[-1] += [0, 0, 0, 0]
        conn_lo.append(len(conn_rows))
    conn_desc = torch.tensor(conn_rows, dtype=torch.int64).view(-1, len(native.LAYER_CONN_FIELDS))
    rule_rows, rates = [], []
    for rule, step, traces in applied:
        g = step.group
        conn = g.connection
        c = next(j for j, other in enumerate(connections) if other is conn)
        pre = index.get(id(g.pre), 0)  # (read by the pair rule only, checked to be a group)
        bounded = math.isfinite(conn.wmin) or math.isfinite(conn.wmax)
        rule_rows.append([c, pre, index[id(g.post)], step.weight.data_ptr()])
        rule_rows[-1] += [conn._copy.copy.data_ptr(), int(bounded)]
        rates.append([conn.wmin if bounded else 0.0, conn.wmax if bounded else 0.0])
        if traces is None:  # pair STDP
            rule_rows[-1] += [0, 0, 0, 0, 0, 0, 0]
            rates[-1] += [step.pot, step.dep] + [0.0] * 6
        else:
            kernel = step.kernel
            rule_rows[-1] += [1, int(kernel.nearest), *(t.data_ptr() for t in traces)]
            rule_rows[-1] += [kernel.work.data_ptr()]
            rates[-1] += kernel.constants
    rule_desc = torch.tensor(rule_rows, dtype=torch.int64).view(-1, len(native.LAYER_RULE_FIELDS))
    rate_desc = torch.tensor(rates, dtype=torch.float64).view(-1, len(native.LAYER_RATE_FIELDS))
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
        for connection, pre, *_ in incoming:
            c += 1
            if not steps:
                continue
            p = index[id(pre)]
            if c in rings:  # a shared delay: the ring advanced in place
                pos, arriving = rings[c]
                torch.autograd.graph.increment_version(connection._buffers["history"])
                connection._set_ring_pos((pos + steps) % (connection.max_delay + 1))
            elif p == 0:
                arriving = spikes[t0 + steps - 1]
            elif p < k:  # read this step's spikes of pre (committed above)
                arriving = pre._buffers["spikes"]
            else:  # the step before's
                arriving = buffers[p - 1][steps % 2].clone()
            connection._buffers["arriving"] = arriving
            if connection.propagation == "auto":
                activity = connection._activity
                activity.steps += steps
                activity.events += int(active[c])
    for q, (rule, step, traces) in enumerate(applied):
        g = step.group
        g._step += done
        if traces is not None and done:  # (advanced in place: new tensors, as each step makes)
            g.state.update(zip(OneSampleStep.TRACES, traces))
        if changed[q]:
            conn, weight = g.connection, step.weight
            torch.autograd.graph.increment_version(weight)
            conn._edited(copy_in_sync=True)
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


def _synapse_tables(
    synapse: ConductanceSynapse, n: int, dtype: torch.dtype
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A conductance synapse's decay factor, output factor and reversal potential (mV), each
    expanded to ``(n,)`` contiguous in ``dtype``: the values its step broadcasts."""
    a, k = synapse.kernels()
    e_rev = synapse._constant("e_rev")
    return tuple(t.detach().to(dtype).expand(n).contiguous() for t in (a, k, e_rev))
