r"""Local learning rules: pair and triplet STDP, Hebbian, reward-modulated STDP, FedeSTDP.

.. code-block:: python

    from pysnn.learning import STDP

    class Net(SNNNetwork):
        def __init__(self):
            ...
            self.stdp = STDP(connection=self.fc1, pre=self.inp, post=self.lif1, nu=(1e-4, 1e-2))

    for t in range(T):
        net(x[t])          # pre neuron, connection, post neuron of step t
        net.stdp.step()    # then the rule, once per step (reward rules: step(reward=r))
    net.reset_state()      # next sample: neurons, connections *and* the rule's traces

**Rules are modules.** A rule is a :class:`torch.nn.Module`. Held by a network (an attribute,
or inside an ``nn.ModuleList``/``ModuleDict``/``Sequential``) it follows the network's
``.to(device)``/``.double()`` (its state tensors are converted), ``train()``/``eval()`` (a rule in
eval mode does not learn), ``reset_state()`` (its state is zeroed with the neurons'), ``repr`` and
``copy.deepcopy``. It has no parameters and no ``state_dict`` entries. ``rule(reward)`` and
``rule.step(reward)`` do the same; only the call form runs forward hooks (e.g. a
:class:`~pysnn.monitor.Monitor` of the rule).

**References, not submodules.** A rule keeps references to the modules it trains in plain tuples
(they are *not* its submodules, so a network's parameters and ``state_dict`` keys appear once) and
reads ``connection.weight``, ``pre.trace``, ``post.spikes``, ... at every step. It therefore keeps
working after ``.to(device)``, ``.double()`` or a batch-size change of those modules; its own state
(traces, delay histories, eligibility, kept per :class:`SynapseGroup`) is converted to the weight's
dtype/device when it is read and re-created as zeros, lazily, when the batch size changes. A rule
that is not held by the network must be reset with its own :meth:`LearningRule.reset_state`.

**Construction.** ``Rule(connection=c, pre=p, post=q, ...)`` trains one connection;
``Rule(connections=[(c1, p1, q1), (c2, p2, q2)], ...)`` trains several with the same
hyperparameters. With ``network=`` an :class:`~pysnn.network.SNNNetwork`, every module may be
given by name: a layer name registered with ``add_layer`` stands for that layer's connection
(``connection=``) or neuron (``pre=``/``post=``), and ``post`` defaults to the layer's neuron;
any other string is looked up with ``network.get_submodule``. E.g.
``STDP(network=net, connection="fc2", pre="fc1")`` trains layer ``fc2`` with layer ``fc1``'s
neurons as presynaptic side.

**Timing convention (all rules).** In step :math:`t` the user's loop runs the presynaptic neuron,
the connection, the postsynaptic neuron, then ``rule.step()``. The rule therefore sees every
spike and trace of step :math:`t` *already updated with that step's spikes* (BindsNET's
``PostPre`` convention): at a postsynaptic spike the presynaptic trace includes a presynaptic spike
arriving in the same step, and at a presynaptic arrival the postsynaptic trace includes a
postsynaptic spike of the same step. A pair in the same step thus gives *both* the potentiation and
the depression term. The presynaptic side is always what *arrives at the synapse*: the spikes of
``connection.arriving_spikes()`` and traces read through the connection's delays (a spike emitted
at :math:`t_0` through a delay of :math:`d` steps counts as a presynaptic event at
:math:`t_0 + d`). A pre-trace delayed by :math:`d` equals the trace of the arriving spikes, so
delayed synapses learn exactly from arrival times (lossless: every spike in flight counts).

**Batches.** Every update is computed per sample and reduced over the batch:
``reduction="mean"`` (default) averages the per-sample :math:`\Delta w` (the learning rate then
does not depend on the batch size), ``"sum"`` adds them (a batch of :math:`B` identical samples
learns :math:`B` times as fast, like :math:`B` sequential samples for small updates).

**Data parallel** (:mod:`pysnn.distributed`). With a ``process_group`` (set by
:func:`pysnn.distributed.data_parallel`) each process computes the *sum* of its shard's per-sample
updates, and :meth:`LearningRule.apply_update` sums them over the group (one ``all_reduce`` per
step and connection; for ``reduction="mean"`` divided by the global batch size), so ``N``
processes with batch ``b`` learn as one process with batch ``N b``. Batch-reduced rule state
(:class:`MSTDPET`'s ``eligibility`` without ``per_sample_reward``) then holds the process's sum.

**Applying the update** (:meth:`LearningRule.apply_update`). Under ``torch.no_grad()``, in place:
``weight += Δw``, then ``connection.clamp_()`` to ``[wmin, wmax]``, then
``connection.normalize(norm)`` if ``norm`` is set (incoming weights of each postsynaptic unit sum
to ``norm``; Diehl & Cook (2015) normalise once per sample instead: call
``connection.normalize(total)`` yourself). With ``grad=True`` the rule writes ``-Δw`` into
``weight.grad`` (accumulating) and changes no weight, so any ``torch.optim`` optimiser applies it
(``SGD(lr=1)`` reproduces the in-place update); clamp afterwards with ``connection.clamp_()``.

**Switching learning off.** ``rule.eval()`` (also through ``net.eval()`` for a rule held by the
network), ``rule.enabled = False`` or ``connection.eval()`` makes ``step()`` skip (nothing
computed, state frozen); ``enabled`` is the user's switch that ``net.train()`` does not touch.
After switching back on mid-sequence, call ``reset_state()``.

**Writing a rule.** Subclass :class:`LearningRule` and implement :meth:`LearningRule.delta`
``(group, reward) -> Δw or None``, reading the step's signals from the :class:`SynapseGroup`
(``post_spikes()``, ``post_trace()``, ``arriving_spikes()``, ``pre_trace()``, ``own_trace()``,
``correlate()``, ``validate_reward()``, ``state``) and reducing over the batch with
:meth:`LearningRule.batch_factor`; the pure maths belongs in :mod:`pysnn.functional.plasticity`.
Every built-in rule is written this way (``docs/tutorials/05_learning_rules.py`` writes Oja's
rule). List the per-group state in ``state_names`` to read it as ``rule.<name>`` (first group);
set ``takes_reward = True`` to accept ``step(reward=...)``.

**Cost.** No host synchronisation in ``step()`` on a GPU (no ``.item()``, no value-dependent
branching or shapes). For a ``Linear`` with a shared delay each correlation is one
``(out, B) @ (B, in)`` product, never a dense ``(B, out, in)`` tensor; :class:`STDP` without weight
dependence computes both terms in one ``(out, 2B) @ (2B, in)`` product and, on the CPU (where
reading a value back costs nothing), only for the rows of postsynaptic neurons that spike or have a
non-zero trace (event-driven). With per-synapse delays, :class:`STDP` and
:class:`Hebbian` correlate the postsynaptic term with the whole ``(B, max_delay + 1, in)``
history in one product and gather each synapse's delay from the ``(out, (max_delay + 1) * in)``
result (no ``(B, out, in)`` tensor while ``max_delay + 1 <= B``; else they read the
``(B, out, in)`` arrivals); the rules with their own presynaptic traces (:class:`TripletSTDP`,
:class:`MSTDP`, :class:`MSTDPET`) and :class:`FedeSTDP` keep ``(B, out, in)`` arrival traces
there. ``Conv2d`` updates are the convolution's weight gradient
(im2col), honouring ``stride``, ``padding`` (ints, ``"valid"``, ``"same"``), ``dilation`` and
``groups``. Updates are dense products rather than gathers of spiking indices: a gather would need
the number of spikes on the host (a sync on GPU); with sparse 0/1 spikes the products are cheap.
One-sample steps of :class:`STDP` and :class:`TripletSTDP` on the CPU run as one fused C call
each (inside :func:`pysnn.engine.layers.run_layers`'s loop, none from Python), bit for bit the
torch operations, where :func:`fused_update_reason` finds nothing against it.

Time constants are in ms, rates in 1/ms; :math:`dt` is the connection's ``dt``.
"""

from __future__ import annotations

import math
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    FrozenSet,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor, nn

from pysnn import _checks
from pysnn._checks import check_choice, check_positive_scalar, check_same_dt, warn_if_dropped
from pysnn.connection import Connection, Conv2d
from pysnn.collectives import all_reduce_update
from pysnn.functional.delay import push_history, synapse_index
from pysnn.functional.plasticity import (
    conv2d_correlation,
    conv2d_patches,
    linear_correlation,
    soft_bound_factors,
    stdp_rows_kernel,
    stdp_rows_update,
    trace_update,
    triplet_kernel,
)

__all__ = [
    "LearningRule",
    "SynapseGroup",
    "STDP",
    "TripletSTDP",
    "Hebbian",
    "MSTDP",
    "MSTDPET",
    "FedeSTDP",
    "fused_update_reason",
    "fused_one_sample",
    "OneSampleStep",
]

ModuleLike = Union[nn.Module, str, None]
_is_compiling = torch.compiler.is_compiling
Reward = Union[float, int, Tensor, None]
REDUCTIONS = ("mean", "sum")
WEIGHT_DEPENDENCES = (None, "soft", "multiplicative")
INTERACTIONS = ("all-to-all", "nearest")
TRACE_NORMALIZATIONS = ("max", "mean")


# ---------------------------------------------------------------------------- argument checks
def _number(name: str, value: Any) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _nu(value: Any) -> Tuple[float, float]:
    """``nu`` as ``(nu_pre, nu_post)``; a single number is used for both."""
    if isinstance(value, (int, float, Tensor)) and not isinstance(value, bool):
        v = _number("nu", value)
        return v, v
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return _number("nu[0] (nu_pre)", value[0]), _number("nu[1] (nu_post)", value[1])
    raise TypeError(f"nu must be a number or a pair (nu_pre, nu_post), got {value!r}")


# ---------------------------------------------------------------------------- synapse groups
class SynapseGroup:
    """One ``(connection, pre, post)`` triple trained by a rule: what the rule reads, and its state.

    :meth:`LearningRule.delta` receives one group per trained connection. Its methods return the
    signals of the current step (after the modules of the step ran), validated (a clear
    ``RuntimeError`` before the modules ran, ``ValueError`` on mismatched batch sizes); each may be
    called any number of times within one :meth:`LearningRule.step`:

    - :meth:`post_spikes`, :meth:`post_trace`: ``(B, *out_shape)``;
    - :meth:`arriving_spikes`, :meth:`pre_trace`: the presynaptic side *at the synapse*, through
      the connection's delays: ``(B, *in_shape)`` for a shared delay, ``(B, out, in)`` for
      per-synapse delays;
    - :meth:`own_trace`: a trace kept by the rule (e.g. of the arrivals, with its own time
      constant);
    - :meth:`correlate`, :meth:`pair_correlations`: batch-summed outer products in the weight's
      layout (``Linear`` ``(out, in)``, ``Conv2d`` ``(C_out, C_in / groups, kH, kW)``);
    - :meth:`validate_reward`: a reward checked against the batch.

    The rule's own tensors for this group live in :attr:`state` (``{name: tensor}``, readable as
    ``group.<name>``); :meth:`zeros_or` reads one, re-made as zeros when the batch size changed.
    They are converted by the rule's ``.to()``/``.double()`` and cleared by its ``reset_state()``.
    The modules are held in a plain tuple (never registered as submodules).

    Args:
        connection: the trained connection: a :class:`~pysnn.connection.Linear`, a ``Conv2d``,
            or any :class:`~pysnn.connection.Connection` with 1-D in/out features and an
            ``(out, in)`` ``weight``, or one with a weight layout of its own that defines
            ``correlate(post, pre, per_sample=False) -> Δw-shaped tensor``, with in/out shapes
            of any rank (e.g. :class:`~pysnn.sparse.SparseLinear`, one value per existing
            synapse; :class:`~pysnn.local.LocalConnection2d`, ``(B, C, H, W)`` in and out).
        pre: presynaptic neuron module (``spikes``, ``trace``).
        post: postsynaptic neuron module (``spikes``, ``trace``).
        owner: name used in error messages (the rule's class name).
    """

    def __init__(
        self, connection: Connection, pre: nn.Module, post: nn.Module, owner: str = "LearningRule"
    ) -> None:
        self._modules_ref: Tuple[Connection, nn.Module, nn.Module] = (connection, pre, post)
        self.owner = owner
        #: ``True`` for a ``Conv2d`` connection (weight layout ``(C_out, C_in / groups, kH, kW)``).
        self.is_conv = isinstance(connection, Conv2d)
        #: ``True`` for a connection with a weight layout of its own (e.g. one value per existing
        #: synapse), which then defines ``correlate(post, pre, per_sample)`` (see :meth:`correlate`).
        self.own_layout = callable(getattr(connection, "correlate", None))
        #: the rule's state tensors for this group, by name.
        self.state: Dict[str, Tensor] = {}
        self._step = 0  # steps begun by the rule (LearningRule.step), see _pre_trace_history
        self._pushed_at = -1

    @property
    def connection(self) -> Connection:
        """The trained connection."""
        return self._modules_ref[0]

    @property
    def pre(self) -> nn.Module:
        """The presynaptic neuron module."""
        return self._modules_ref[1]

    @property
    def post(self) -> nn.Module:
        """The postsynaptic neuron module."""
        return self._modules_ref[2]

    @property
    def dt(self) -> float:
        """Time step of the connection (ms)."""
        return self.connection.dt

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state")
        if state is not None and name in state:
            return state[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or state {name!r}")

    # ------------------------------------------------------------------ state
    def zeros_or(self, name: str, shape: Sequence[int], like: Tensor) -> Tensor:
        """The state ``name``, or zeros of ``shape`` like ``like`` if it is missing or its shape
        changed (new batch size); converted when only ``like``'s dtype/device differs (so a
        ``.double()`` or ``.to(device)`` in the middle of a sequence loses nothing). The caller
        stores the new value in :attr:`state`."""
        current = self.state.get(name)
        if current is None or tuple(current.shape) != tuple(shape):
            if current is not None and len(shape):
                warn_if_dropped(f"{self.owner} (rule state {name!r})", current, shape[0])
            return like.new_zeros(tuple(shape))
        if current.dtype != like.dtype or current.device != like.device:
            current = current.to(dtype=like.dtype, device=like.device)
        return current

    def state_or(self, name: str, initial: Tensor) -> Tensor:
        """The state ``name``, or ``initial`` if it is missing or its shape differs from
        ``initial``'s (new batch size, after a reset); converted to ``initial``'s dtype/device.

        For a rule state that does not start at zero, e.g. a low-pass of the membrane potential
        starting at the current ``v``: ``group.state_or("u", group.post_state("v"))``.
        """
        current = self.state.get(name)
        if current is None or current.shape != initial.shape:
            return initial
        if current.dtype != initial.dtype or current.device != initial.device:
            current = current.to(dtype=initial.dtype, device=initial.device)
        return current

    def own_trace(
        self,
        name: str,
        spikes: Tensor,
        tau: float,
        scale: float = 1.0,
        nearest: bool = False,
        increment: bool = True,
    ) -> Tensor:
        r"""Advance the rule's own trace ``name`` by one step and return it (stored in ``state``).

        :math:`x \leftarrow x\, e^{-dt/\tau}`, then :math:`x \leftarrow x + a\, s` (or
        :math:`x \leftarrow a` where :math:`s = 1` with ``nearest=True``); see
        :func:`pysnn.functional.plasticity.trace_update`. Zeros before the first step.

        Args:
            name: state name.
            spikes: this step's spikes, any shape (the trace has the same shape), e.g.
                :meth:`arriving_spikes` ``(B, *in_shape)`` or :meth:`post_spikes`.
            tau: time constant (ms).
            scale: jump :math:`a` at a spike.
            nearest: reset to ``scale`` at a spike instead of adding.
            increment: ``False`` applies only the decay (the caller adds the spikes later, e.g.
                with ``trace_update(value, spikes, 1.0, scale, nearest)``, and stores the result).
        """
        previous = self.zeros_or(name, spikes.shape, spikes)
        decay = math.exp(-self.dt / tau)
        if increment:
            value = trace_update(previous, spikes, decay, scale, nearest)
        else:
            value = previous * decay
        self.state[name] = value
        return value

    # ------------------------------------------------------------------ signals of the step
    def _not_run(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"{self.owner}.step(): {what}; call rule.step() after the neurons and connections of "
            "the step have run"
        )

    def post_spikes(self) -> Tensor:
        """Postsynaptic spikes of this step, ``(B, *out_shape)`` (0/1)."""
        spikes = self.post.spikes
        if spikes is None:
            raise self._not_run(f"the postsynaptic {type(self.post).__name__} has no spikes yet")
        return spikes

    def post_trace(self) -> Tensor:
        """The postsynaptic neuron's ``trace`` of this step (including its spikes),
        ``(B, *out_shape)``."""
        trace = self.post.trace
        if trace is None:
            raise self._not_run(f"the postsynaptic {type(self.post).__name__} has no trace yet")
        return trace

    def post_state(self, name: str) -> Tensor:
        """A state variable of the postsynaptic neuron this step, e.g. ``"v"`` (mV),
        ``(B, *out_shape)``; a clear error if the neuron has no such state or has not run."""
        return self._neuron_state(self.post, "postsynaptic", name)

    def pre_state(self, name: str) -> Tensor:
        """A state variable of the presynaptic neuron this step, ``(B, *in_shape)``, at the
        neuron (not delayed; read it through :meth:`pysnn.connection.Connection.delayed` of a
        history you keep to see it at the synapse)."""
        return self._neuron_state(self.pre, "presynaptic", name)

    def _neuron_state(self, neuron: nn.Module, side: str, name: str) -> Tensor:
        names = getattr(neuron, "state_names", None)
        if names is not None and name not in names:
            raise AttributeError(
                f"the {side} {type(neuron).__name__} has no state {name!r}; it has {list(names)}"
            )
        value = getattr(neuron, name, None)
        if value is None:
            raise self._not_run(f"the {side} {type(neuron).__name__} has no {name} yet")
        return self._check_batch(f"the {side} {type(neuron).__name__}'s {name}", value)

    def _check_batch(self, what: str, value: Tensor) -> Tensor:
        batch = self.post_spikes().shape[0]
        if value.shape[0] != batch:
            raise ValueError(
                f"batch sizes differ: {what} has {value.shape[0]} samples, the postsynaptic "
                f"{type(self.post).__name__} {batch}"
            )
        return value

    def arriving_spikes(self) -> Tensor:
        """Presynaptic spikes arriving at the synapses this step (after the delays).

        Returns ``(B, *in_shape)`` for a shared delay, ``(B, out, in)`` for per-synapse delays
        (see :meth:`pysnn.connection.Connection.arriving_spikes`).
        """
        conn = self.connection
        if (conn.history if conn.per_synapse_delay else conn.arriving) is None:
            raise self._not_run(f"the {type(conn).__name__} has not run yet")
        return self._check_batch(type(conn).__name__, conn.arriving_spikes())

    def current_pre_trace(self) -> Tensor:
        """The presynaptic neuron's ``trace`` of this step *at the neuron* (no delay),
        ``(B, *in_shape)``."""
        trace = self.pre.trace
        if trace is None:
            raise self._not_run(f"the presynaptic {type(self.pre).__name__} has no trace yet")
        return self._check_batch(f"the presynaptic {type(self.pre).__name__}", trace)

    def pre_trace(self) -> Tensor:
        """The presynaptic neuron's ``trace`` as seen at the synapses (through the delays).

        Same layout as :meth:`arriving_spikes`. A shared delay of 0 reads ``pre.trace``
        directly; otherwise the group keeps the state ``pre_history``
        ``(B, max_delay + 1, *in_shape)`` of the traces, pushed once per :meth:`LearningRule.step`
        (further calls in the same step read the same history).
        """
        conn, trace = self.connection, self.current_pre_trace()
        if not conn.per_synapse_delay and conn.max_delay == 0:
            return trace
        return conn.delayed(self._pre_trace_history(trace))

    def _pre_trace_history(self, trace: Tensor) -> Tensor:
        """Push ``trace`` into ``pre_history`` ``(B, max_delay + 1, *in_shape)`` and return it
        (once per step: later calls in the same step return the pushed history)."""
        shape = (trace.shape[0], self.connection.max_delay + 1, *trace.shape[1:])
        history = self.state.get("pre_history")
        if self._pushed_at == self._step and history is not None and history.shape == shape:
            return history
        history = push_history(self.zeros_or("pre_history", shape, trace), trace)
        self.state["pre_history"] = history
        self._pushed_at = self._step
        return history

    def validate_reward(self, reward: Reward) -> Union[float, Tensor]:
        """A reward checked against this step's batch: a number (returned as ``float``) or a
        tensor that is 0-d, ``(1,)`` or per sample ``(B,)`` (converted to the weight's
        dtype/device). ``TypeError``/``ValueError`` otherwise."""
        if isinstance(reward, bool) or not isinstance(reward, (int, float, Tensor)):
            raise TypeError(
                f"reward must be a number or a tensor (scalar or per-sample (B,)), got "
                f"{type(reward).__name__}"
            )
        if not isinstance(reward, Tensor):
            if not math.isfinite(reward):
                raise ValueError(
                    f"reward must be finite, got {reward}: it would make every weight the rule "
                    "changes NaN or infinite. Check the reward function (a division by zero?)"
                )
            return float(reward)
        if _checks._VALUE_CHECKS and _checks.nonfinite(reward):
            raise ValueError(
                _checks.nonfinite_message(
                    "reward", reward, "a learning rule", "would make every weight it changes NaN"
                )
            )
        batch = self.post_spikes().shape[0]
        if reward.dim() > 1 or (reward.dim() == 1 and reward.shape[0] not in (1, batch)):
            raise ValueError(
                f"reward must be a scalar or a per-sample tensor of shape ({batch},), got shape "
                f"{tuple(reward.shape)}"
            )
        weight = self.connection.weight
        if reward.dtype != weight.dtype or reward.device != weight.device:
            reward = reward.to(dtype=weight.dtype, device=weight.device)
        return reward

    # ------------------------------------------------------------------ correlations
    def correlate(self, post: Tensor, pre: Tensor, per_sample: bool = False) -> Tensor:
        r"""Batch-summed :math:`\sum_b post_b \otimes pre_b` in the weight's layout.

        Args:
            post: a postsynaptic term ``(B, *out_shape)``.
            pre: a presynaptic term in the layout of :meth:`arriving_spikes`.
            per_sample: keep the batch dimension: ``(B, *weight.shape)``.

        Returns:
            ``weight.shape`` (``Linear`` and other ``(out, in)`` weights:
            :func:`~pysnn.functional.plasticity.linear_correlation`;
            ``Conv2d``: the convolution's weight gradient,
            :func:`~pysnn.functional.plasticity.conv2d_correlation`; a connection with a layout
            of its own, :attr:`own_layout`: its ``correlate(post, pre, per_sample)``, e.g.
            :meth:`pysnn.sparse.SparseLinear.correlate`).
        """
        conn = self.connection
        if self.own_layout:
            return conn.correlate(post, pre, per_sample)
        if self.is_conv:
            return conv2d_correlation(
                post,
                pre,
                conn.weight.shape,
                conn.stride,
                conn.padding,
                conn.dilation,
                conn.groups,
                per_sample,
            )
        return linear_correlation(post, pre, per_sample)

    def pair_correlations(self, at_post: Tensor, at_pre: Tensor) -> Tuple[Tensor, Tensor]:
        r"""The two pair-STDP correlations :math:`\sum_b at\_post_b \otimes x^{pre}_b` and
        :math:`\sum_b at\_pre_b \otimes a_b` (weight shape), with :math:`x^{pre}` =
        :meth:`pre_trace` and :math:`a` = :meth:`arriving_spikes`.

        ``at_post``/``at_pre`` are postsynaptic terms ``(B, *out_shape)`` (e.g. the post spikes
        and the post trace). Calls :meth:`pre_trace` (once per step). With per-synapse delays and a
        history no longer than the batch (``max_delay + 1 <= B``) each is computed without any
        ``(B, out, in)`` tensor: one ``(out, B) @ (B, L * in)`` product against the whole
        history, then a gather of entry ``(d_ij, j)`` for each synapse.
        """
        conn = self.connection
        if not conn.per_synapse_delay or self.own_layout:
            a_pre, x_pre = self.arriving_spikes(), self.pre_trace()
            return self.correlate(at_post, x_pre), self.correlate(at_pre, a_pre)
        self.arriving_spikes()  # validates that the connection ran with this batch
        trace_history = self._pre_trace_history(self.current_pre_trace())
        return (
            self._delayed_correlation(at_post, trace_history),
            self._delayed_correlation(at_pre, conn.history),
        )

    def _delayed_correlation(self, post: Tensor, history: Tensor) -> Tensor:
        r""":math:`C_{ij} = \sum_b post_{bi}\, history_{b, d_{ij}, j}` for per-synapse delays."""
        conn = self.connection
        batch, length = history.shape[:2]
        if length > batch:
            return linear_correlation(post, conn.delayed(history))
        index = synapse_index(conn.delay_steps)
        return (post.t() @ history.reshape(batch, -1)).gather(1, index)

    def __repr__(self) -> str:
        names = [type(m).__name__ for m in self._modules_ref]
        return f"SynapseGroup(connection={names[0]}, pre={names[1]}, post={names[2]})"


# ---------------------------------------------------------------------------- base class
class LearningRule(nn.Module):
    """Base class of the learning rules (see the module docstring for the shared conventions).

    A subclass implements :meth:`delta`. The rule is an ``nn.Module`` without parameters or
    ``state_dict`` entries; the modules it trains are referenced, not registered.

    Args:
        connection: the connection to train (or a layer/submodule name with ``network``): a
            :class:`~pysnn.connection.Linear`, a :class:`~pysnn.connection.Conv2d`, or any
            :class:`~pysnn.connection.Connection` with 1-D in/out features and a ``weight`` of
            shape ``(out, in)`` (its per-synapse delays, if any, of that shape too), which the
            rules train as a ``Linear``; or a connection with a weight layout of its own (its
            per-synapse delays of the weight's shape) that defines ``correlate`` (see
            :meth:`SynapseGroup.correlate`), e.g. :class:`~pysnn.sparse.SparseLinear` or
            :class:`~pysnn.local.LocalConnection2d`.
        pre: presynaptic neuron module (any module with ``spikes`` and ``trace`` of shape
            ``(B, *in_shape)``, e.g. :class:`~pysnn.neuron.Input`), or a name.
        post: postsynaptic neuron module (``spikes``, ``trace`` of shape ``(B, *out_shape)``), or a
            name; defaults to the layer's neuron when ``connection`` is a layer name.
        connections: instead of the three above, a sequence of ``(connection, pre, post)`` triples
            (``post`` may be ``None`` or left out for layer names) trained with the same settings.
        network: an :class:`~pysnn.network.SNNNetwork` in which names are looked up (only used
            here; assign the rule as an attribute of the network to have it follow the network).
        reduction: ``"mean"`` (default) or ``"sum"`` of the per-sample updates over the batch.
        grad: write ``-Δw`` into ``weight.grad`` instead of updating the weight (default ``False``).
        norm: if a number, ``connection.normalize(norm)`` after every update (default ``None``).
        enabled: learning on (default ``True``); toggle with the ``enabled`` attribute.
        process_group: a :mod:`torch.distributed` process group (``dist.group.WORLD`` for the
            default one) over which every update is summed before it is applied, for
            data-parallel learning (see :mod:`pysnn.distributed`; usually set by
            :func:`pysnn.distributed.data_parallel`). ``None`` (default): this process only.
    """

    #: names of the per-group state tensors, readable as ``rule.<name>`` (first group; ``None``
    #: before the first step)
    state_names: ClassVar[Tuple[str, ...]] = ()
    #: whether ``step`` takes a reward
    takes_reward: ClassVar[bool] = False
    #: Attributes that a step changes without changing what a later step computes (the built-in
    #: rules keep none): :class:`pysnn.engine.GraphedStep`, which replays a recorded step without
    #: running Python, ignores them when it checks that a step keeps no Python state of its own
    #: (a subclass that keeps a cache adds its names).
    STEP_CACHES: ClassVar[FrozenSet[str]] = frozenset()

    def __init__(
        self,
        connection: ModuleLike = None,
        pre: ModuleLike = None,
        post: ModuleLike = None,
        *,
        connections: Optional[Sequence[Sequence[ModuleLike]]] = None,
        network: Optional[nn.Module] = None,
        reduction: str = "mean",
        grad: bool = False,
        norm: Optional[float] = None,
        enabled: bool = True,
        process_group: Optional[Any] = None,
    ) -> None:
        super().__init__()
        #: process group the updates are summed over (data-parallel learning), or ``None``
        self.process_group = process_group
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        if not isinstance(grad, bool):
            raise TypeError(f"grad must be a bool, got {grad!r}")
        self.grad = grad
        self.norm = None if norm is None else _number("norm", norm)
        if self.norm is not None and grad:
            raise ValueError(
                "norm cannot be combined with grad=True (no weight is changed by the rule); call "
                "connection.normalize(total) after optimizer.step()"
            )
        self.enabled = bool(enabled)
        self.groups: List[SynapseGroup] = [
            SynapseGroup(*triple, owner=type(self).__name__)
            for triple in _resolve_triples(connection, pre, post, connections, network)
        ]

    # ------------------------------------------------------------------ public API
    @property
    def connections(self) -> List[Connection]:
        """The trained connections, in order."""
        return [g.connection for g in self.groups]

    def reset_state(self) -> None:
        """Forget the rule's own state (traces, delay histories, eligibility): zeros again.

        Called by the network's ``reset_state()`` when the network holds the rule. The weights
        are not touched.
        """
        for g in self.groups:
            g.state.clear()

    def forward(self, reward: Reward = None) -> None:
        """Apply one step of learning to every trained connection (same as :meth:`step`)."""
        if not (self.enabled and self.training):
            return
        if reward is not None and not self.takes_reward:
            raise TypeError(f"{type(self).__name__} takes no reward; got reward={reward!r}")
        if torch.is_grad_enabled():  # (a context only where needed: it costs a microsecond)
            with torch.no_grad():
                return LearningRule.forward(self, reward)
        for g in self.groups:
            if not g.connection.training:
                continue
            g._step += 1
            dw = self.delta(g, reward)
            if dw is not None:
                self.apply_update(g, dw)

    def step(self, reward: Reward = None) -> None:
        """Apply one step of learning to every trained connection.

        Call once per simulation step, after the neurons of that step have updated. Skipped
        entirely in ``eval()`` mode or while ``enabled`` is false; a connection in ``eval()`` mode
        is skipped. ``rule(reward)`` does the same and also runs the module's forward hooks.

        Args:
            reward: reward-modulated rules only: a number, a 0-d tensor or a per-sample ``(B,)``
                tensor (``None``: no reward this step, i.e. 0).
        """
        self.forward(reward)

    # ------------------------------------------------------------------ to implement
    def delta(self, group: SynapseGroup, reward: Reward) -> Optional[Tensor]:
        """Advance the rule's state for ``group`` by one step and return its ``Δw``.

        Called by :meth:`step` under ``torch.no_grad()`` for each group whose connection is in
        training mode, after the modules of the step ran.

        Args:
            group: the connection, its neurons and the rule's state for them
                (:class:`SynapseGroup`).
            reward: as given to :meth:`step` (``None`` if none); validate it with
                :meth:`SynapseGroup.validate_reward`.

        Returns:
            ``Δw`` with the shape of ``group.connection.weight``, already reduced over the batch
            (see :meth:`batch_factor`), which :meth:`step` passes to :meth:`apply_update`; or
            ``None`` for no change (or when the rule applied the update itself with
            :meth:`apply_update`, e.g. for a subset of rows).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement delta(group, reward) -> Optional[Tensor]"
        )

    # ------------------------------------------------------------------ helpers for rules
    def batch_factor(self, batch: int) -> float:
        """Batch reduction factor: ``1 / batch`` for ``reduction="mean"``, 1 for ``"sum"``.

        With a ``process_group`` it is 1: the rule sums over its shard and
        :meth:`apply_update` divides the sum over all processes by the global batch size.
        """
        if self.reduction == "sum" or self.process_group is not None:
            return 1.0
        return 1.0 / batch

    @torch.no_grad()
    def apply_update(self, group: SynapseGroup, dw: Tensor, rows: Optional[Tensor] = None) -> None:
        """Apply ``Δw`` to the group's connection: :meth:`pysnn.connection.Connection.apply_update_`
        with this rule's ``grad`` and ``norm`` (bounds, pruning masks and parametrisations, the
        event-path copy of the weight: all handled there).

        Args:
            group: the group whose connection is updated.
            dw: ``weight.shape``, or ``(len(rows), *weight.shape[1:])`` with ``rows``.
            rows: optional ``(R,)`` int64 indices of the weight rows ``dw`` is given for (the
                others are unchanged).

        With a ``process_group`` the update is first summed over the group
        (:func:`pysnn.collectives.all_reduce_update`, divided by the global batch size for
        ``reduction="mean"``); ``rows`` are then expanded to the whole weight, since other
        processes may change other rows. Every process must call it in the same steps.
        """
        conn = group.connection
        if self.process_group is not None:
            if rows is not None:
                dense = torch.zeros_like(conn.weight, dtype=dw.dtype)
                dw, rows = dense.index_add_(0, rows, dw), None
            batch = group.post_spikes().shape[0]
            dw = all_reduce_update(dw, batch, self.reduction == "mean", self.process_group)
        conn.apply_update_(dw, rows, grad=self.grad, norm=self.norm)

    # ------------------------------------------------------------------ nn.Module plumbing
    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "LearningRule":
        """``.to()``/``.double()``/...: also convert the state tensors of every group."""
        super()._apply(fn, recurse)
        for g in self.groups:
            for name, value in g.state.items():
                g.state[name] = fn(value)
        return self

    def __getattr__(self, name: str) -> Any:
        # State of the first group by name (e.g. rule.eligibility), None before the first step.
        if name in type(self).state_names:
            groups = self.__dict__.get("groups")
            if groups:
                return groups[0].state.get(name)
        return super().__getattr__(name)

    def extra_repr(self) -> str:
        return (
            f"reduction={self.reduction!r}, grad={self.grad}, norm={self.norm}, "
            f"enabled={self.enabled}, connections={len(self.groups)}"
            + ("" if self.process_group is None else ", data_parallel=True")
        )


class _WeightDependent(LearningRule):
    """Rules whose update splits into potentiation and depression (weight dependence applies)."""

    def _set_weight_dependence(self, weight_dependence: Optional[str], mu: float) -> None:
        self.weight_dependence = check_choice(
            "weight_dependence", weight_dependence, WEIGHT_DEPENDENCES
        )
        self.mu = _number("mu", mu)
        if self.mu <= 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        for g in self.groups:
            conn = g.connection
            if weight_dependence == "soft" and not (
                math.isfinite(conn.wmin) and math.isfinite(conn.wmax)
            ):
                raise ValueError(
                    "weight_dependence='soft' needs finite weight bounds, got "
                    f"wmin={conn.wmin}, wmax={conn.wmax} on {type(conn).__name__}"
                )
            if weight_dependence == "multiplicative" and not math.isfinite(conn.wmin):
                raise ValueError(
                    "weight_dependence='multiplicative' needs a finite wmin, got "
                    f"wmin={conn.wmin} on {type(conn).__name__}"
                )

    def _combine(self, g: SynapseGroup, pot: Tensor, dep: Optional[Tensor], batch: int) -> Tensor:
        """``Δw = (f₊(w) · pot − f₋(w) · dep) · reduction``."""
        if self.weight_dependence is None:
            dw = pot if dep is None else pot - dep
        else:
            conn = g.connection
            f_plus, f_minus = soft_bound_factors(
                conn.weight, conn.wmin, conn.wmax, self.weight_dependence, self.mu
            )
            dw = f_plus * pot if dep is None else f_plus * pot - f_minus * dep
        return dw * self.batch_factor(batch)

    def _one_sample(self, g: SynapseGroup) -> Optional[Tuple[Connection, Tensor, Tensor, Tensor]]:
        """``(connection, weight, post spikes, arriving spikes)`` of a step of ``g`` that a
        fused kernel can take: one sample of CPU tensors that fit it (``(1, out)``,
        ``(1, in)``, the weight's dtype, contiguous), a plain 2-D weight parameter, no delay per
        synapse (a shared one is read through the connection's arrivals), no weight dependence,
        ``grad`` or process group, nothing compiling; else ``None`` (the rule's torch operations
        run, and give its errors). The tensors are read as the modules hold them (a module
        without them as buffers takes the torch operations)."""
        if _group_reason(self, g, shared_delay=True) or torch.is_grad_enabled() or _is_compiling():
            return None
        conn = g.connection
        weight = conn._parameters["weight"]
        s_post = getattr(g.post, "_buffers", {}).get("spikes")
        arriving = conn._buffers.get("arriving")
        dtype = weight.dtype
        if not (
            _fits(s_post, (1, weight.shape[0]), dtype)
            and _fits(arriving, (1, weight.shape[1]), dtype)
        ):
            return None
        return conn, weight, s_post, arriving


# -------------------------------------------------------------------------- fused one-sample steps
def _group_reason(rule: "_WeightDependent", g: SynapseGroup, shared_delay: bool = False) -> str:
    """Why the settings of ``rule`` keep its steps of group ``g`` off the one-sample kernel,
    "" when they do not (the tensors of a step are checked at the step,
    :meth:`_WeightDependent._one_sample`). A shared delay keeps them off unless
    ``shared_delay`` (a single step reads the delayed arrivals and traces; the fused network
    loop does not)."""
    if rule.weight_dependence is not None:
        return f"weight_dependence={rule.weight_dependence!r}"
    if rule.process_group is not None:
        return "it learns data-parallel (process_group)"
    if rule.grad:
        return "grad=True"
    conn = g.connection
    name = type(conn).__name__
    if g.is_conv or g.own_layout:
        return f"{name} has no (out, in) weight"
    if conn.per_synapse_delay or (conn.max_delay != 0 and not shared_delay):
        return f"{name} has a delay"
    weight = conn._parameters.get("weight")
    if weight is None or weight.dim() != 2:
        return f"the weight of {name} is not a plain 2-D parameter (pruned or parametrized)"
    return ""


def _one_sample_reason(rule: "_WeightDependent") -> str:
    """Why the settings of ``rule`` (an :class:`STDP` or :class:`TripletSTDP`) keep its
    one-sample steps out of the fused network loop, "" when they do not: those of
    :func:`_group_reason`, and one trained connection without ``norm``."""
    if len(rule.groups) != 1:
        return "it trains more than one connection"
    why = _group_reason(rule, rule.groups[0])
    if why or rule.norm is None:
        return why
    return "norm is set (a normalisation after every step)"


class OneSampleStep:
    """One step of a built-in rule on one sample as one fused kernel call, as
    :func:`fused_one_sample` describes it to the engine's fused network loop
    (:func:`pysnn.engine.layers.run_layers`), which runs it beside the layers: bit for bit the
    rule's own step. Made for each call from the rule as it is then (nothing is kept between
    calls, so nothing can go stale).

    Attributes:
        kind: ``"stdp"`` (:class:`STDP`) or ``"triplet"`` (:class:`TripletSTDP`).
        group: the rule's one :class:`SynapseGroup`.
        weight: the connection's plain 2-D ``(out, in)`` weight parameter.
        dtype: the weight's dtype.
        kernel: the fused kernel: :func:`~pysnn.functional.plasticity.stdp_rows_kernel`'s or
            :func:`~pysnn.functional.plasticity.triplet_kernel`'s.
        pot, dep: pair STDP's factors of its potentiation and depression terms (``nu_post``,
            ``-nu_pre``; the same at batch 1 with either reduction), 0 for triplet STDP.
    """

    __slots__ = ("kind", "group", "weight", "dtype", "kernel", "pot", "dep")
    #: triplet STDP's traces, in the kernel's order
    TRACES = ("r1", "r2", "o1", "o2")

    def __init__(
        self,
        kind: str,
        group: SynapseGroup,
        weight: Tensor,
        kernel: Any,
        pot: float = 0.0,
        dep: float = 0.0,
    ) -> None:
        self.kind, self.group, self.weight, self.dtype = kind, group, weight, weight.dtype
        self.kernel, self.pot, self.dep = kernel, pot, dep

    def traces(self) -> Optional[List[Tensor]]:
        """Triplet STDP: new copies of the rule's traces ``(r1, r2, o1, o2)``, ``(1, in)`` and
        ``(1, out)``, to advance in place (zeros where one is absent), or ``None`` where one does
        not fit the kernel (the rule's general step re-makes it)."""
        return _triplet_traces(self.group, self.weight)


def _fits(t: Optional[Tensor], shape: Tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether ``t`` is a contiguous CPU tensor of ``shape`` and ``dtype`` (a fused kernel
    reads it by pointer)."""
    return (
        t is not None and t.shape == shape and t.dtype is dtype and t.is_cpu and t.is_contiguous()
    )


def _triplet_traces(g: SynapseGroup, weight: Tensor) -> Optional[List[Tensor]]:
    """See :meth:`OneSampleStep.traces`."""
    n_out, n_in = weight.shape
    shapes = ((1, n_in), (1, n_in), (1, n_out), (1, n_out))
    found = [g.state.get(name) for name in OneSampleStep.TRACES]
    dtype = weight.dtype
    if not all(t is None or _fits(t, shape, dtype) for t, shape in zip(found, shapes)):
        return None
    return [
        torch.zeros(shape, dtype=dtype) if t is None else t.clone()
        for t, shape in zip(found, shapes)
    ]


def _triplet_kernel(rule: "TripletSTDP", weight: Tensor, dt: float) -> Any:
    """The fused one-sample step of ``rule`` for ``weight`` at ``dt`` ms, or ``None``."""
    taus = (rule.tau_plus, rule.tau_minus, rule.tau_x, rule.tau_y)
    return triplet_kernel(
        weight,
        (rule.a2_plus, rule.a3_plus, rule.a2_minus, rule.a3_minus),
        tuple(math.exp(-dt / tau) for tau in taus),  # (as SynapseGroup.own_trace)
        rule.interaction == "nearest",
    )


def fused_one_sample(rule: nn.Module) -> Optional[OneSampleStep]:
    """The fused form of ``rule``'s one-sample steps (:class:`OneSampleStep`), or ``None`` where
    there is none (:func:`fused_update_reason` says why). Built anew at each call."""
    cls = type(rule)
    if (
        cls.forward is not LearningRule.forward
        or (cls.delta is not STDP.delta and cls.delta is not TripletSTDP.delta)
        or _one_sample_reason(rule)
    ):  # (the built-in steps first: any other rule, a user's own included, has no kernel)
        return None
    g = rule.groups[0]
    weight = g.connection._parameters["weight"]
    if cls.delta is STDP.delta:
        kernel = stdp_rows_kernel(weight)
        pot, dep = rule.nu_post, -rule.nu_pre  # batch 1: "mean" and "sum" alike
        return None if kernel is None else OneSampleStep("stdp", g, weight, kernel, pot, dep)
    if cls.delta is TripletSTDP.delta:
        kernel = _triplet_kernel(rule, weight, g.connection.dt)
        return None if kernel is None else OneSampleStep("triplet", g, weight, kernel)
    return None


# ---------------------------------------------------------------------------- STDP
class STDP(_WeightDependent):
    r"""Pair-based STDP with the neurons' traces (BindsNET's ``PostPre``).

    Per step, for postsynaptic unit :math:`i` and presynaptic unit :math:`j` (per sample, then
    reduced over the batch):

    .. math::

        \Delta w_{ij} = \nu_{post}\, f_+(w_{ij})\, s^{post}_i(t)\, x^{pre}_{ij}(t)
                      - \nu_{pre}\, f_-(w_{ij})\, a_{ij}(t)\, x^{post}_i(t)

    - :math:`s^{post}` = ``post.spikes``, :math:`x^{post}` = ``post.trace`` (already including
      this step's spike),
    - :math:`a_{ij}` = presynaptic spike *arriving* at the synapse this step
      (``connection.arriving_spikes()``), :math:`x^{pre}_{ij}` = ``pre.trace`` read through the
      synapse's delay (so it includes the arriving spike),
    - :math:`f_\pm` from ``weight_dependence``: ``None`` (additive, :math:`f_\pm = 1`; hard
      bounds by clamping), ``"soft"`` (:math:`f_+ = (w_{max}-w)^\mu`, :math:`f_- = (w-w_{min})^\mu`,
      needs finite bounds; :math:`\mu = 1` is the multiplicative soft-bound rule) or
      ``"multiplicative"`` (van Rossum et al. 2000: :math:`f_+ = 1`, :math:`f_- = w - w_{min}`,
      needs a finite ``wmin``).

    For one pair with :math:`\Delta t = t_{post} - t_{pre}` (pre time = arrival), additive
    traces of scale :math:`a` and time constants :math:`\tau_{pre}, \tau_{post}` of the
    neurons (``tau_trace``):
    :math:`\Delta w = \nu_{post} a_{pre} e^{-\Delta t/\tau_{pre}}` for :math:`\Delta t > 0`,
    :math:`-\nu_{pre} a_{post} e^{\Delta t/\tau_{post}}` for :math:`\Delta t < 0`, and
    :math:`\nu_{post} a_{pre} - \nu_{pre} a_{post}` for :math:`\Delta t = 0` (both terms; see
    :func:`pysnn.functional.plasticity.pair_stdp_window`). Neurons with ``trace_mode="reset"``
    give nearest-spike STDP.

    Args:
        connection, pre, post: see :class:`LearningRule`.
        nu: ``(nu_pre, nu_post)``: depression rate at a presynaptic arrival, potentiation rate at
            a postsynaptic spike (default ``(1e-4, 1e-2)``, Diehl & Cook 2015). A single number
            is used for both; negative values invert a term.
        weight_dependence: ``None`` (default), ``"soft"`` or ``"multiplicative"``.
        mu: exponent of the ``"soft"`` bounds (default 1).
        connections, network, reduction, grad, norm, enabled: see :class:`LearningRule`.

    State: ``pre_history`` ``(B, max_delay + 1, *in_shape)`` (only with delays).
    """

    state_names = ("pre_history",)

    def __init__(
        self,
        connection: ModuleLike = None,
        pre: ModuleLike = None,
        post: ModuleLike = None,
        *,
        nu: Union[float, Tuple[float, float]] = (1e-4, 1e-2),
        weight_dependence: Optional[str] = None,
        mu: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(connection, pre, post, **kwargs)
        self.nu_pre, self.nu_post = _nu(nu)
        self._set_weight_dependence(weight_dependence, mu)

    @property
    def nu(self) -> Tuple[float, float]:
        """``(nu_pre, nu_post)``."""
        return (self.nu_pre, self.nu_post)

    def delta(self, g: SynapseGroup, reward: Reward) -> Optional[Tensor]:
        if self._fused_step(g):
            return None
        s_post, x_post = g.post_spikes(), g.post_trace()
        batch = s_post.shape[0]
        conn = g.connection
        if (
            self.weight_dependence is None
            and not g.is_conv
            and not g.own_layout
            and not conn.per_synapse_delay
        ):
            scale = self.batch_factor(batch)
            if batch == 1 and not s_post.is_cuda and self.process_group is None:
                # one sample (Diehl & Cook's protocol): only the rows of postsynaptic neurons
                # that spike or fired recently change (the same values as the kernel of
                # _fused_step, which takes such steps where it applies)
                pot, dep = self.nu_post * scale, -self.nu_pre * scale
                pre_trace, arriving = g.pre_trace()[0], g.arriving_spikes()[0]
                rows, dw = stdp_rows_update(s_post[0], x_post[0], pre_trace, arriving, pot, dep)
                if rows.shape[0] > 0 or self.norm is not None:
                    self.apply_update(g, dw, rows)
                return None
            # Both terms in one (out, 2B) @ (2B, in) product: no weight-sized temporaries.
            post = torch.cat((s_post * (self.nu_post * scale), x_post * (-self.nu_pre * scale)))
            pre = torch.cat((g.pre_trace(), g.arriving_spikes()))
            if post.is_cuda or self.process_group is not None:
                return post.t() @ pre
            # Event-driven on the CPU: only rows of postsynaptic neurons that spike or have a
            # non-zero trace (fired recently) can change.
            rows = (x_post.ne(0) | s_post.ne(0)).any(0).nonzero().squeeze(1)
            if rows.shape[0] == post.shape[1]:  # every row: the plain product
                self.apply_update(g, post.t() @ pre)
            elif rows.shape[0] > 0 or self.norm is not None:
                self.apply_update(g, post.index_select(1, rows).t() @ pre, rows)
            return None
        pot, dep = g.pair_correlations(s_post, x_post)
        return self._combine(g, pot * self.nu_post, dep * self.nu_pre, batch)

    def _fused_step(self, g: SynapseGroup) -> bool:
        """The step of one sample as one call of the C kernel (the rows of the weight and of
        its event copy updated and clamped), bit for bit the torch operations of :meth:`delta`
        (:func:`~pysnn.functional.plasticity.stdp_rows_update` and the row update); ``False``
        (nothing done) where it does not apply (see :meth:`_WeightDependent._one_sample`)."""
        found = self._one_sample(g)
        if found is None:
            return False
        conn, weight, s_post, arriving = found
        dtype = weight.dtype
        x_post = g.post._buffers.get("trace")
        # the presynaptic trace at the synapses: through the shared delay where there is one
        pre_trace = g.pre._buffers.get("trace") if conn.max_delay == 0 else g.pre_trace()
        if not (_fits(x_post, s_post.shape, dtype) and _fits(pre_trace, arriving.shape, dtype)):
            return False
        kernel = stdp_rows_kernel(weight)
        pot, dep = self.nu_post, -self.nu_pre  # (batch 1: "mean" and "sum" alike)
        if kernel is None or not conn._fused_weight_edit(
            weight,
            lambda copy, bounds: kernel(
                weight, copy, s_post, x_post, pre_trace, arriving, pot, dep, bounds
            ),
        ):
            return False
        if self.norm is not None:
            conn.normalize(self.norm)
        return True

    def extra_repr(self) -> str:
        return (
            f"nu={self.nu}, weight_dependence={self.weight_dependence!r}, " + super().extra_repr()
        )


# ---------------------------------------------------------------------------- Hebbian
class Hebbian(_WeightDependent):
    r"""Spike-triggered Hebbian rule: correlated pre and post activity potentiates, in both orders.

    Per step (per sample, then reduced over the batch), with the same signals as :class:`STDP`:

    .. math::

        \Delta w_{ij} = f_+(w_{ij}) \left[\nu_{post}\, s^{post}_i\, x^{pre}_{ij}
                      + \nu_{pre}\, a_{ij}\, x^{post}_i\right]
                      - \left(1 - e^{-\lambda\, dt}\right) w_{ij}

    i.e. the symmetric window :math:`\nu_{post} e^{-\Delta t/\tau_{pre}}` (:math:`\Delta t > 0`),
    :math:`\nu_{pre} e^{\Delta t/\tau_{post}}` (:math:`\Delta t < 0`) for a pair (BindsNET's
    ``Hebbian``), with an optional exact exponential weight decay toward 0 at rate
    :math:`\lambda` = ``decay`` (1/ms), applied once per step (not per sample).

    Args:
        nu: ``(nu_pre, nu_post)`` (default ``(1e-4, 1e-4)``).
        decay: weight decay rate :math:`\lambda` (1/ms), >= 0 (default 0: none).
        weight_dependence, mu: as :class:`STDP` (only :math:`f_+` is used).
        other arguments: see :class:`LearningRule`.

    State: ``pre_history`` (only with delays).
    """

    state_names = ("pre_history",)

    def __init__(
        self,
        connection: ModuleLike = None,
        pre: ModuleLike = None,
        post: ModuleLike = None,
        *,
        nu: Union[float, Tuple[float, float]] = (1e-4, 1e-4),
        decay: float = 0.0,
        weight_dependence: Optional[str] = None,
        mu: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(connection, pre, post, **kwargs)
        self.nu_pre, self.nu_post = _nu(nu)
        self.decay = _number("decay", decay)
        if self.decay < 0:
            raise ValueError(f"decay must be a rate >= 0 (1/ms), got {decay}")
        self._set_weight_dependence(weight_dependence, mu)

    @property
    def nu(self) -> Tuple[float, float]:
        """``(nu_pre, nu_post)``."""
        return (self.nu_pre, self.nu_post)

    def delta(self, g: SynapseGroup, reward: Reward) -> Optional[Tensor]:
        if self.decay > 0 and self.process_group is not None:
            raise ValueError(
                "Hebbian(decay > 0) cannot learn data-parallel (process_group set): the decay is a "
                "per-step term that the sum over processes would count once per process; use "
                "decay=0 and shrink the weights yourself once per step"
            )
        s_post, x_post = g.post_spikes(), g.post_trace()
        at_post, at_pre = g.pair_correlations(s_post, x_post)
        dw = self._combine(g, at_post * self.nu_post + at_pre * self.nu_pre, None, s_post.shape[0])
        if self.decay > 0:
            dw = dw - (1.0 - math.exp(-self.decay * g.connection.dt)) * g.connection.weight
        return dw

    def extra_repr(self) -> str:
        return (
            f"nu={self.nu}, decay={self.decay}, weight_dependence={self.weight_dependence!r}, "
            + super().extra_repr()
        )


# ---------------------------------------------------------------------------- triplet STDP
class TripletSTDP(_WeightDependent):
    r"""Triplet STDP (Pfister & Gerstner 2006), all-to-all or nearest-spike interactions.

    The rule keeps its own traces of the spikes *arriving at the synapses*: fast :math:`r_1`
    (:math:`\tau_+`) and slow :math:`r_2` (:math:`\tau_x`) presynaptic, fast :math:`o_1`
    (:math:`\tau_-`) and slow :math:`o_2` (:math:`\tau_y`) postsynaptic. Each decays as
    :math:`\dot r = -r/\tau` (exactly, factor :math:`e^{-dt/\tau}` per step) and jumps at a spike by
    +1 (``"all-to-all"``) or to 1 (``"nearest"``). The weight changes at a presynaptic arrival and
    at a postsynaptic spike:

    .. math::

        t = t^{pre}:\; w \leftarrow w - o_1(t)\,[A_2^- + A_3^-\, r_2(t - \epsilon)] \qquad
        t = t^{post}:\; w \leftarrow w + r_1(t)\,[A_2^+ + A_3^+\, o_2(t - \epsilon)]

    Order within a step (per sample, then reduced over the batch):

    1. decay all four traces;
    2. :math:`r_1 \mathrel{+}= a` (arrivals), :math:`o_1 \mathrel{+}= s` (post spikes) (or reset to
       1) -- the pair terms see a pre and post spike of the same step, as in :class:`STDP`;
    3. :math:`\Delta w = f_+ \sum s_i r_{1,j} (A_2^+ + A_3^+ o_{2,i})
       - f_- \sum o_{1,i} a_j (A_2^- + A_3^- r_{2,j})` with :math:`o_2, r_2` *before* this step's
       increment (the paper's :math:`t - \epsilon`);
    4. :math:`r_2 \mathrel{+}= a`, :math:`o_2 \mathrel{+}= s` (or reset to 1).

    Defaults: Pfister & Gerstner (2006), Table 4, visual cortex data (Sjöström et al. 2001),
    all-to-all, full model: :math:`\tau_+ = 16.8`, :math:`\tau_- = 33.7`, :math:`\tau_x = 101`,
    :math:`\tau_y = 125` ms, :math:`A_2^+ = 5\times10^{-10}`, :math:`A_3^+ = 6.2\times10^{-3}`,
    :math:`A_2^- = 7\times10^{-3}`, :math:`A_3^- = 2.3\times10^{-4}`.

    Args:
        a2_plus, a3_plus, a2_minus, a3_minus: amplitudes (>= 0 normally; any finite value).
        tau_plus, tau_minus, tau_x, tau_y: time constants (ms), > 0.
        interaction: ``"all-to-all"`` (default) or ``"nearest"``.
        weight_dependence, mu: as :class:`STDP`.
        other arguments: see :class:`LearningRule`.

    State: ``r1``, ``r2`` (shape of the arrivals: ``(B, *in_shape)`` or ``(B, out, in)``),
    ``o1``, ``o2`` ``(B, *out_shape)``.
    """

    state_names = ("r1", "r2", "o1", "o2")

    def __init__(
        self,
        connection: ModuleLike = None,
        pre: ModuleLike = None,
        post: ModuleLike = None,
        *,
        a2_plus: float = 5e-10,
        a3_plus: float = 6.2e-3,
        a2_minus: float = 7e-3,
        a3_minus: float = 2.3e-4,
        tau_plus: float = 16.8,
        tau_minus: float = 33.7,
        tau_x: float = 101.0,
        tau_y: float = 125.0,
        interaction: str = "all-to-all",
        weight_dependence: Optional[str] = None,
        mu: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(connection, pre, post, **kwargs)
        self.a2_plus = _number("a2_plus", a2_plus)
        self.a3_plus = _number("a3_plus", a3_plus)
        self.a2_minus = _number("a2_minus", a2_minus)
        self.a3_minus = _number("a3_minus", a3_minus)
        self.tau_plus = check_positive_scalar("tau_plus", tau_plus)
        self.tau_minus = check_positive_scalar("tau_minus", tau_minus)
        self.tau_x = check_positive_scalar("tau_x", tau_x)
        self.tau_y = check_positive_scalar("tau_y", tau_y)
        self.interaction = check_choice("interaction", interaction, INTERACTIONS)
        self._set_weight_dependence(weight_dependence, mu)

    def delta(self, g: SynapseGroup, reward: Reward) -> Optional[Tensor]:
        if self._fused_step(g):
            return None
        s_post, a_pre = g.post_spikes(), g.arriving_spikes()
        nearest = self.interaction == "nearest"
        r1 = g.own_trace("r1", a_pre, self.tau_plus, 1.0, nearest)
        o1 = g.own_trace("o1", s_post, self.tau_minus, 1.0, nearest)
        r2 = g.own_trace("r2", a_pre, self.tau_x, increment=False)
        o2 = g.own_trace("o2", s_post, self.tau_y, increment=False)
        pot = g.correlate(s_post * (self.a2_plus + self.a3_plus * o2), r1)
        dep = g.correlate(o1, a_pre * (self.a2_minus + self.a3_minus * r2))
        g.state["r2"] = trace_update(r2, a_pre, 1.0, 1.0, nearest)
        g.state["o2"] = trace_update(o2, s_post, 1.0, 1.0, nearest)
        return self._combine(g, pot, dep, s_post.shape[0])

    def _fused_step(self, g: SynapseGroup) -> bool:
        """The step of one sample as one call of the C kernel (the four traces advanced, the
        weight and its event copy updated and clamped), bit for bit the torch operations of
        :meth:`delta`; ``False`` (nothing done) where it does not apply (see
        :meth:`_WeightDependent._one_sample`)."""
        found = self._one_sample(g)
        if found is None:
            return False
        conn, weight, s_post, arriving = found
        traces = _triplet_traces(g, weight)
        kernel = None if traces is None else _triplet_kernel(self, weight, conn.dt)
        if kernel is None or not conn._fused_weight_edit(
            weight, lambda copy, bounds: kernel(weight, copy, s_post, arriving, traces, bounds)
        ):
            return False
        g.state.update(zip(OneSampleStep.TRACES, traces))
        if self.norm is not None:
            conn.normalize(self.norm)
        return True

    def extra_repr(self) -> str:
        return (
            f"a2_plus={self.a2_plus}, a3_plus={self.a3_plus}, a2_minus={self.a2_minus}, "
            f"a3_minus={self.a3_minus}, tau_plus={self.tau_plus}, tau_minus={self.tau_minus}, "
            f"tau_x={self.tau_x}, tau_y={self.tau_y}, interaction={self.interaction!r}, "
            + super().extra_repr()
        )


# ---------------------------------------------------------------------------- reward-modulated
class MSTDP(LearningRule):
    r"""Reward-modulated STDP (Florian 2007, "MSTDP").

    The rule keeps Florian's traces of the spikes at the synapse (arrivals) and of the post spikes:

    .. math::

        P^+_{ij}(t) = P^+_{ij}(t - dt)\, e^{-dt/\tau_+} + A_+\, a_{ij}(t), \qquad
        P^-_i(t) = P^-_i(t - dt)\, e^{-dt/\tau_-} + A_-\, s_i(t)

    the STDP term :math:`\zeta_{ij}(t) = P^+_{ij}(t)\, s_i(t) + P^-_i(t)\, a_{ij}(t)` (traces
    already including this step's spikes, as in :class:`STDP`; :math:`A_- < 0` makes the
    post-before-pre term depressing), and the update

    .. math:: \Delta w_{ij}(t) = \gamma\, \operatorname{reduce}_b\, r_b(t)\, \zeta_{b,ij}(t)

    where :math:`r(t)` is the reward given to ``step(reward=...)`` in the same step (Florian's
    :math:`r(t + \delta t)`: the reward that follows the activity of step :math:`t`). A scalar
    reward multiplies the batch-reduced :math:`\zeta`; a per-sample ``(B,)`` reward weights each
    sample's :math:`\zeta_b` (computed as ``(r_b s_b) ⊗ P+`` products, no ``(B, out, in)``
    tensor). ``reward=None`` means 0: the traces evolve, no weight changes. A negative reward
    flips the sign of the update.

    For one pair with :math:`\Delta t = t_{post} - t_{pre} > 0` and reward :math:`r` at the post
    step: :math:`\Delta w = \gamma r A_+ e^{-\Delta t/\tau_+}`; for :math:`\Delta t < 0` and reward
    at the pre-arrival step: :math:`\gamma r A_- e^{\Delta t/\tau_-}`.

    Args:
        gamma: learning rate :math:`\gamma` (default 0.01; in weight units per unit reward).
        a_plus: :math:`A_+` (default 1.0).
        a_minus: :math:`A_-` (default -1.0).
        tau_plus, tau_minus: trace time constants (ms), default 20 ms each (Florian 2007).
        other arguments: see :class:`LearningRule`.

    State: ``p_plus`` (shape of the arrivals), ``p_minus`` ``(B, *out_shape)``.
    """

    state_names = ("p_plus", "p_minus")
    takes_reward = True

    def __init__(
        self,
        connection: ModuleLike = None,
        pre: ModuleLike = None,
        post: ModuleLike = None,
        *,
        gamma: float = 0.01,
        a_plus: float = 1.0,
        a_minus: float = -1.0,
        tau_plus: float = 20.0,
        tau_minus: float = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(connection, pre, post, **kwargs)
        self.gamma = _number("gamma", gamma)
        self.a_plus = _number("a_plus", a_plus)
        self.a_minus = _number("a_minus", a_minus)
        self.tau_plus = check_positive_scalar("tau_plus", tau_plus)
        self.tau_minus = check_positive_scalar("tau_minus", tau_minus)

    def _zeta(
        self,
        g: SynapseGroup,
        s_post: Tensor,
        reward: Union[float, Tensor, None],
        per_sample: bool = False,
    ) -> Tensor:
        """Update ``p_plus``/``p_minus`` and return the (reward-weighted) ``ζ`` summed over the batch
        (or per sample). A ``(B,)`` ``reward`` weights the samples."""
        a_pre = g.arriving_spikes()
        p_plus = g.own_trace("p_plus", a_pre, self.tau_plus, self.a_plus)
        p_minus = g.own_trace("p_minus", s_post, self.tau_minus, self.a_minus)
        if isinstance(reward, Tensor) and reward.dim() == 1:
            r = reward.view(-1, *([1] * (s_post.dim() - 1)))
            s_post, p_minus = s_post * r, p_minus * r
        return g.correlate(s_post, p_plus, per_sample) + g.correlate(p_minus, a_pre, per_sample)

    def delta(self, g: SynapseGroup, reward: Reward) -> Optional[Tensor]:
        s_post = g.post_spikes()
        if reward is None:
            # Keep the traces going; no weight change without reward.
            g.own_trace("p_plus", g.arriving_spikes(), self.tau_plus, self.a_plus)
            g.own_trace("p_minus", s_post, self.tau_minus, self.a_minus)
            return None
        r = g.validate_reward(reward)
        zeta = self._zeta(g, s_post, r)
        scale = self.gamma * self.batch_factor(s_post.shape[0])
        if not isinstance(r, Tensor) or r.dim() == 0:
            scale = r * scale
        return zeta * scale

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, a_plus={self.a_plus}, a_minus={self.a_minus}, "
            f"tau_plus={self.tau_plus}, tau_minus={self.tau_minus}, " + super().extra_repr()
        )


class MSTDPET(MSTDP):
    r"""Reward-modulated STDP with an eligibility trace (Florian 2007, "MSTDPET").

    :math:`P^\pm` and :math:`\zeta` as in :class:`MSTDP`; the STDP term feeds a low-pass filtered
    eligibility trace :math:`z` (:math:`\tau_z \dot z = -z + \zeta`) that the reward reads:

    .. math::

        z_{ij}(t) = z_{ij}(t - dt)\, e^{-dt/\tau_z} + \frac{\zeta_{ij}(t)}{\tau_z}, \qquad
        \Delta w_{ij}(t) = \gamma\, dt\, r(t)\, z_{ij}(t)

    (Florian's :math:`z(t+\delta t)` and :math:`r(t+\delta t)` are this step's :math:`z` and the
    reward given to this ``step``). So a pair at :math:`\Delta t = t_{post} - t_{pre} > 0`
    followed by a single reward :math:`r` at step :math:`t_r \ge t_{post}` gives
    :math:`\Delta w = \gamma\, dt\, r\, A_+ e^{-\Delta t/\tau_+} e^{-(t_r - t_{post})/\tau_z} / \tau_z`.
    ``reward=None`` (no reward this step) lets :math:`z` evolve without changing weights.

    Batches: with ``per_sample_reward=False`` (default) the eligibility is kept reduced over the
    batch, ``(out, in)`` (weight shape): :math:`z \leftarrow z e^{-dt/\tau_z} + \operatorname{reduce}_b
    \zeta_b / \tau_z` and the reward must be a scalar (the same for every sample), which is exact
    because :math:`z` is linear in :math:`\zeta`. A per-sample reward :math:`r_b` needs one
    eligibility per sample: ``per_sample_reward=True`` keeps ``(B, *weight.shape)`` and applies
    :math:`\Delta w = \gamma\, dt \operatorname{reduce}_b r_b z_b`.

    Args:
        tau_z: eligibility time constant (ms), default 25 ms (Florian 2007).
        per_sample_reward: keep per-sample eligibility to accept ``(B,)`` rewards (default False).
        gamma, a_plus, a_minus, tau_plus, tau_minus: as :class:`MSTDP`.
        other arguments: see :class:`LearningRule`.

    State: ``p_plus``, ``p_minus``, ``eligibility`` (weight shape, or ``(B, *weight_shape)``).
    """

    state_names = ("p_plus", "p_minus", "eligibility")

    def __init__(
        self,
        connection: ModuleLike = None,
        pre: ModuleLike = None,
        post: ModuleLike = None,
        *,
        tau_z: float = 25.0,
        per_sample_reward: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(connection, pre, post, **kwargs)
        self.tau_z = check_positive_scalar("tau_z", tau_z)
        if not isinstance(per_sample_reward, bool):
            raise TypeError(f"per_sample_reward must be a bool, got {per_sample_reward!r}")
        self.per_sample_reward = per_sample_reward

    def delta(self, g: SynapseGroup, reward: Reward) -> Optional[Tensor]:
        s_post = g.post_spikes()
        batch, weight = s_post.shape[0], g.connection.weight
        r = None if reward is None else g.validate_reward(reward)
        if isinstance(r, Tensor) and r.dim() == 1 and r.shape[0] > 1 and not self.per_sample_reward:
            raise ValueError(
                f"a per-sample reward of shape {tuple(r.shape)} needs MSTDPET(..., "
                "per_sample_reward=True) (the eligibility is kept reduced over the batch otherwise)"
            )
        dt = g.connection.dt
        zeta = self._zeta(g, s_post, None, self.per_sample_reward)
        shape = ((batch,) if self.per_sample_reward else ()) + tuple(weight.shape)
        z = g.zeros_or("eligibility", shape, zeta)
        if self.per_sample_reward:
            z = z * math.exp(-dt / self.tau_z) + zeta / self.tau_z
        else:
            z = z * math.exp(-dt / self.tau_z) + zeta * (self.batch_factor(batch) / self.tau_z)
        g.state["eligibility"] = z
        if r is None:
            return None
        scale = self.gamma * dt
        if not self.per_sample_reward:
            return z * (r.reshape(()) if isinstance(r, Tensor) else r) * scale
        scale = scale * self.batch_factor(batch)
        if isinstance(r, Tensor) and r.dim() == 1:
            return torch.tensordot(r.expand(batch), z, dims=1) * scale
        return z.sum(0) * (r * scale)

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, a_plus={self.a_plus}, a_minus={self.a_minus}, "
            f"tau_plus={self.tau_plus}, tau_minus={self.tau_minus}, tau_z={self.tau_z}, "
            f"per_sample_reward={self.per_sample_reward}, " + LearningRule.extra_repr(self)
        )


# ---------------------------------------------------------------------------- FedeSTDP
class FedeSTDP(LearningRule):
    r"""Paredes-Vallés et al. (2019) stable STDP, PySNN's ``FedeSTDP``, without its NaN.

    At a postsynaptic spike the weights of that unit move toward a value set by the normalised
    presynaptic trace (weights stay bounded without clamping):

    .. math::

        \hat x_{ij} &= x^{pre}_{ij} / \max_{k \in RF(i)} x^{pre}_{ik}
            \quad (\text{or the mean with } \texttt{trace\_normalization="mean"}) \\
        \Delta w_{ij} &= \eta\, \operatorname{reduce}_b \sum_{\text{positions}} s^{post}_i \Big[
            e^{-(w_{ij} - w_{init})} \big(e^{\hat x_{ij}} - a\big)
            - e^{\,w_{ij} - w_{init}} \big(e^{1 - \hat x_{ij}} - a\big) \Big]

    :math:`x^{pre}` is the presynaptic neuron's trace at the synapse (through the delays);
    :math:`RF(i)` is the receptive field of the postsynaptic unit: all inputs of a ``Linear``
    (per sample), the ``(C_in / groups, kH, kW)`` patch at each output position of a ``Conv2d``.
    The first term is LTP, the second LTD; for :math:`w = w_{init}` they balance at
    :math:`\hat x = 1/2`. **Zero guard:** where the receptive field's traces are all 0 (max or
    mean 0, which gives 0/0 = NaN in PySNN), :math:`\hat x = 0` (the limit of a silent input), so
    the update is the finite pure-depression value.

    Args:
        lr: learning rate :math:`\eta` (default 1e-4).
        w_init: reference weight :math:`w_{init}` (default 0.5).
        a: stability parameter :math:`a` (default 0.0; the paper uses values below 1).
        trace_normalization: ``"max"`` (default, the paper's [0, 1] normalisation) or ``"mean"``.
        other arguments: see :class:`LearningRule`.

    State: ``pre_history`` (only with delays).
    """

    state_names = ("pre_history",)

    def __init__(
        self,
        connection: ModuleLike = None,
        pre: ModuleLike = None,
        post: ModuleLike = None,
        *,
        lr: float = 1e-4,
        w_init: float = 0.5,
        a: float = 0.0,
        trace_normalization: str = "max",
        **kwargs: Any,
    ) -> None:
        super().__init__(connection, pre, post, **kwargs)
        self.lr = _number("lr", lr)
        self.w_init = _number("w_init", w_init)
        self.a = _number("a", a)
        self.trace_normalization = check_choice(
            "trace_normalization", trace_normalization, TRACE_NORMALIZATIONS
        )
        for g in self.groups:
            conn = g.connection
            if not g.is_conv and len(conn.in_shape) != 1:
                raise ValueError(
                    f"FedeSTDP normalises the presynaptic trace over each receptive field, "
                    f"which it knows for a Linear, a Conv2d or a connection with 1-D "
                    f"in_features, not for {type(conn).__name__} with in_features "
                    f"{conn.in_shape}; use STDP, Hebbian or the other rules there"
                )

    def _normalize(self, x: Tensor, dim: int) -> Tensor:
        if self.trace_normalization == "max":
            ref = x.amax(dim=dim, keepdim=True)
        else:
            ref = x.mean(dim=dim, keepdim=True)
        safe = torch.where(ref > 0, ref, torch.ones_like(ref))
        return torch.where(ref > 0, x / safe, torch.zeros_like(x))

    def delta(self, g: SynapseGroup, reward: Reward) -> Optional[Tensor]:
        s_post = g.post_spikes()
        batch = s_post.shape[0]
        g.arriving_spikes()  # validates that the connection ran
        x_pre = g.pre_trace()
        conn = g.connection
        if g.is_conv:
            groups = conn.groups
            patches = conv2d_patches(
                x_pre, conn.kernel_size, conn.stride, conn.padding, conn.dilation, groups
            )
            patches = self._normalize(patches, dim=2)
            post = s_post.reshape(batch, groups, -1, patches.shape[-1])

            def corr(values: Tensor) -> Tensor:
                out = torch.einsum("bgol,bgkl->gok", post, values)
                return out.reshape(conn.weight.shape)

        else:
            patches = self._normalize(x_pre, dim=-1)

            def corr(values: Tensor) -> Tensor:
                return g.correlate(s_post, values)

        ltp = corr(torch.exp(patches) - self.a)
        ltd = corr(torch.exp(1.0 - patches) - self.a)
        offset = conn.weight - self.w_init
        dw = torch.exp(-offset) * ltp - torch.exp(offset) * ltd
        return dw * (self.lr * self.batch_factor(batch))

    def extra_repr(self) -> str:
        return (
            f"lr={self.lr}, w_init={self.w_init}, a={self.a}, "
            f"trace_normalization={self.trace_normalization!r}, " + super().extra_repr()
        )


# ---------------------------------------------------------------------------- fused rules
def fused_update_reason(rule: nn.Module) -> str:
    """Why the one-sample steps of ``rule`` do not run as one fused kernel call each, "" when
    they do.

    Fused: :class:`STDP` and :class:`TripletSTDP` (with their own ``delta`` and
    :class:`LearningRule`'s ``forward``) training one connection with a plain 2-D ``(out, in)``
    weight and no delay, without weight dependence, ``grad``, ``norm`` or process group. Each of
    their steps with one sample of CPU float32/float64 tensors is then one kernel call inside
    the rule's ``delta``, bit for bit its torch operations; inside
    :func:`pysnn.engine.layers.run_layers`'s fused loop they run with the layers, without any
    call from Python (:func:`fused_one_sample`; :func:`pysnn.engine.explain` reports this reason
    otherwise). The single steps of a rule with ``norm``, more than one connection or a shared
    delay also call the kernel from ``delta``; only the fused loop needs all of the above.
    """
    for cls in (STDP, TripletSTDP):
        if type(rule).delta is cls.delta and type(rule).forward is LearningRule.forward:
            why = _one_sample_reason(rule)
            return f"{type(rule).__name__} has no fused update: {why}" if why else ""
    return f"{type(rule).__name__} has no fused update"


# ---------------------------------------------------------------------------- resolution
def _lookup(network: Optional[nn.Module], value: ModuleLike, arg: str, role: str) -> Any:
    """Resolve a module given by name in ``network`` (layer name or submodule path)."""
    if not isinstance(value, str):
        return value
    if network is None:
        raise TypeError(f"{arg}={value!r} is a name; pass network= to look it up")
    layer = getattr(network, "layer", None)
    if callable(layer):
        try:
            conn, neuron = layer(value)
            return conn if role == "connection" else neuron
        except KeyError:
            pass
    try:
        return network.get_submodule(value)
    except AttributeError:
        layers = list(getattr(network, "_layer_names", {}))
        raise ValueError(
            f"{arg}={value!r} is neither a layer (layers: {layers}) nor a submodule of "
            f"{type(network).__name__}"
        ) from None


def _check_triple(conn: Any, pre: Any, post: Any, where: str) -> None:
    if not isinstance(conn, Connection):
        raise TypeError(
            f"{where}connection must be a pysnn.connection.Connection (Linear, Conv2d or a "
            f"subclass of your own), got {type(conn).__name__}"
        )
    weight = getattr(conn, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"{where}connection {type(conn).__name__} has no weight tensor to train; a learning "
            "rule needs a connection with a 'weight' parameter"
        )
    for arg, module in (("pre", pre), ("post", post)):
        if module is None:
            raise ValueError(f"{where}{arg} is required (a neuron module or a name with network=)")
        if not isinstance(module, nn.Module) or not (
            hasattr(module, "spikes") and hasattr(module, "trace")
        ):
            raise TypeError(
                f"{where}{arg} must be a neuron module with 'spikes' and 'trace' (e.g. "
                f"pysnn.neuron.Input), got {type(module).__name__}"
            )
    check_same_dt(where, connection=conn, pre=pre, post=post)
    pre_shape, post_shape = getattr(pre, "shape", None), getattr(post, "shape", None)
    if isinstance(conn, Conv2d):
        for arg, shape, want in (
            ("pre", pre_shape, conn.in_channels),
            ("post", post_shape, conn.out_channels),
        ):
            if shape is not None and (len(shape) != 3 or shape[0] != want):
                raise ValueError(
                    f"{where}{arg} has shape {tuple(shape)} but the Conv2d expects "
                    f"({want}, H, W)"
                )
        return
    # Any other connection: the correlations are those of a Linear, so the weight must be
    # (out, in) over 1-D in/out shapes, and per-synapse delays one per weight entry; unless the
    # connection correlates in its own layout (e.g. LocalConnection2d over (C, H, W) shapes).
    name, in_shape, out_shape = type(conn).__name__, conn.in_shape, conn.out_shape
    own_layout = callable(getattr(conn, "correlate", None))
    if not own_layout and (
        len(in_shape) != 1 or len(out_shape) != 1 or tuple(weight.shape) != out_shape + in_shape
    ):
        raise ValueError(
            f"{where}connection {name} has in_features={in_shape}, out_features={out_shape} and "
            f"a weight of shape {tuple(weight.shape)}: learning rules support a Conv2d, a "
            "connection with 1-D in/out features and a weight of shape (out_features, "
            "in_features), as in Linear, or one that defines correlate(post, pre, per_sample)"
        )
    if conn.per_synapse_delay and tuple(conn.delay_steps.shape) != tuple(weight.shape):
        raise ValueError(
            f"{where}connection {name} has per-synapse delays of shape "
            f"{tuple(conn.delay_steps.shape)}: learning rules need a shared delay or one delay "
            f"per weight entry, delay_shape={tuple(weight.shape)}"
        )
    for arg, shape, want in (("pre", pre_shape, in_shape), ("post", post_shape, out_shape)):
        if shape is not None and tuple(shape) != want:
            raise ValueError(f"{where}{arg} has shape {tuple(shape)} but the {name} expects {want}")


def _resolve_triples(
    connection: ModuleLike,
    pre: ModuleLike,
    post: ModuleLike,
    connections: Optional[Sequence[Sequence[ModuleLike]]],
    network: Optional[nn.Module],
) -> List[Tuple[Connection, nn.Module, nn.Module]]:
    if network is not None and not isinstance(network, nn.Module):
        raise TypeError(f"network must be an SNNNetwork, got {type(network).__name__}")
    if connections is None:
        if connection is None:
            raise ValueError("give connection= (with pre= and post=) or connections=[...]")
        entries: List[Sequence[ModuleLike]] = [(connection, pre, post)]
        prefix = ["" for _ in entries]
    else:
        if connection is not None or pre is not None or post is not None:
            raise ValueError("give either connection/pre/post or connections=, not both")
        if isinstance(connections, (str, nn.Module)) or not isinstance(connections, (list, tuple)):
            raise TypeError(
                "connections must be a list of (connection, pre, post) triples, got "
                f"{type(connections).__name__}"
            )
        if len(connections) == 0:
            raise ValueError("connections must not be empty")
        entries = list(connections)
        prefix = [f"connections[{k}]: " for k in range(len(entries))]
    triples = []
    for where, entry in zip(prefix, entries):
        if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
            raise TypeError(f"{where}expected a (connection, pre, post) triple, got {entry!r}")
        c, p, q = (tuple(entry) + (None,))[:3]
        c_mod = _lookup(network, c, where + "connection", "connection")
        if q is None and isinstance(c, str) and c in getattr(network, "_layer_names", {}):
            q = network.layer(c)[1]
        p_mod = _lookup(network, p, where + "pre", "neuron")
        q_mod = _lookup(network, q, where + "post", "neuron")
        _check_triple(c_mod, p_mod, q_mod, where)
        triples.append((c_mod, p_mod, q_mod))
    return triples
