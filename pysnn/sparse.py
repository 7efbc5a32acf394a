r"""Sparse connectivity: a connection that stores only the synapses that exist.

:class:`SparseLinear` is :class:`~pysnn.connection.Linear`'s sparse counterpart: the same
:math:`I_i(t) = \sum_j w_{ij}\, s_j(t - d_{ij})`, but over a list of synapses :math:`(i, j)`
instead of the full ``(out, in)`` matrix, so that memory is proportional to the number of synapses
(a network of 400 000 neurons with 80 synapses each holds 32 million synapses, not
:math:`1.6 \cdot 10^{11}` matrix entries). The synapses are built from

- a fixed connection probability (:func:`fixed_probability`, each pair independently with
  probability ``p``, as Brian2's ``connect(p=...)``),
- a fixed in-degree (:func:`fixed_indegree`, ``k`` distinct presynaptic partners per neuron, as
  NEST's ``fixed_indegree``),
- or an index list of your own (``(2, nnz)``: postsynaptic, presynaptic index of each synapse),

drawn with an optional ``torch.Generator`` (the same seed gives the same network), in rounds of
vectorised draws (no Python loop over synapses, no dense intermediate).

**Propagation is event-driven**: the synapses are kept sorted by presynaptic neuron (compressed
sparse rows, CSR), and a step touches only the synapses of the presynaptic neurons that spiked
(a gather of their rows and one ``scatter_add``). Delays are shared or per synapse; with per-synapse
delays each spike is scattered at emission into a ring queue of future input (cost per step
proportional to the synapses of the neurons that spiked, whatever the delay).

**Learning**: every rule of :mod:`pysnn.learning` trains a ``SparseLinear`` as it would the dense
``Linear`` with the corresponding zero mask; the rules' correlations are evaluated on the existing
synapses only (:meth:`SparseLinear.correlate`), bounds, :meth:`~SparseLinear.normalize` and
``grad=True`` work as for ``Linear``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from pysnn._checks import check_choice, warn_if_dropped
from pysnn._guards import Stamp
from pysnn.connection import Connection, DelayLike

__all__ = ["SparseLinear", "fixed_probability", "fixed_indegree", "SPARSE_INITS"]

#: Weight initialisations of :class:`SparseLinear` (``torch.nn.init`` functions that need no fan).
SPARSE_INITS = ("uniform", "normal", "constant")


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_generator(generator: Optional[torch.Generator]) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator)}")


def fixed_probability(
    n_pre: int,
    n_post: int,
    p: float,
    *,
    autapses: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Synapses between each pre/post pair independently with probability ``p``.

    The number of synapses is drawn from :math:`\\mathrm{Binomial}(n_{pre} n_{post}, p)`, then
    that many distinct pairs uniformly (random draws, duplicates removed and drawn again, in a few
    vectorised rounds): the same distribution as one Bernoulli draw per pair, with memory
    proportional to the synapses.

    Args:
        n_pre, n_post: population sizes.
        p: connection probability, in ``[0, 1]``.
        autapses: allow synapses from a neuron onto itself (needs ``n_pre == n_post`` when
            ``False``; the pairs ``i == j`` are then never connected).
        generator: random generator (``None``: torch's global one).

    Returns:
        ``(2, nnz)`` int64 indices, row 0 postsynaptic, row 1 presynaptic, sorted by presynaptic
        then postsynaptic index.
    """
    n_pre, n_post = _check_size("n_pre", n_pre), _check_size("n_post", n_post)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    _check_generator(generator)
    if not autapses and n_pre != n_post:
        raise ValueError(f"autapses=False needs n_pre == n_post, got {n_pre} and {n_post}")
    pairs = n_pre * n_post
    count = torch.binomial(
        torch.tensor([float(pairs)], dtype=torch.float64),
        torch.tensor([float(p)], dtype=torch.float64),
        generator=generator,
    )
    target = int(count)
    if pairs >= 2**62:  # pre * n_post + post would overflow int64: draw the pairs as columns
        drawn = torch.empty(2, 0, dtype=torch.int64)
        while drawn.shape[1] < target:
            need = target - drawn.shape[1]
            pre = torch.randint(0, n_pre, (need,), generator=generator)
            post = torch.randint(0, n_post, (need,), generator=generator)
            drawn = torch.unique(torch.cat((drawn, torch.stack((pre, post))), 1), dim=1)
        pre, post = drawn[0], drawn[1]  # sorted by (pre, post)
    else:
        keys = torch.empty(0, dtype=torch.int64)
        while keys.numel() < target:
            draw = torch.randint(0, pairs, (target - keys.numel(),), generator=generator)
            keys = torch.unique(torch.cat((keys, draw)))
        pre, post = keys // n_post, keys % n_post
    if not autapses:
        keep = pre != post
        pre, post = pre[keep], post[keep]
    return torch.stack((post, pre))


def fixed_indegree(
    n_pre: int,
    n_post: int,
    k: int,
    *,
    autapses: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``k`` distinct presynaptic partners per postsynaptic neuron, drawn uniformly.

    Random partners are drawn for every neuron at once; duplicates (and, with
    ``autapses=False``, self-connections) are dropped and drawn again in a few vectorised rounds.

    Args:
        n_pre, n_post: population sizes.
        k: in-degree, ``0 <= k <= n_pre`` (``n_pre - 1`` without autapses).
        autapses: allow synapses from a neuron onto itself (needs ``n_pre == n_post`` when
            ``False``).
        generator: random generator (``None``: torch's global one).

    Returns:
        ``(2, n_post * k)`` int64 indices (postsynaptic, presynaptic), sorted by presynaptic then
        postsynaptic index.
    """
    n_pre, n_post = _check_size("n_pre", n_pre), _check_size("n_post", n_post)
    _check_generator(generator)
    if not autapses and n_pre != n_post:
        raise ValueError(f"autapses=False needs n_pre == n_post, got {n_pre} and {n_post}")
    most = n_pre if autapses else n_pre - 1
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= most:
        raise ValueError(f"k must be an int in [0, {most}] (distinct partners), got {k!r}")
    if 2 * k > most:  # dense in-degree: draw the partners left out instead (fewer rounds)
        left_out = fixed_indegree(n_pre, n_post, most - k, autapses=autapses, generator=generator)
        mask = torch.ones(n_post, n_pre, dtype=torch.bool)
        mask[left_out[0], left_out[1]] = False
        if not autapses:
            mask.fill_diagonal_(False)
        post, pre = mask.t().nonzero(as_tuple=True)[::-1]  # sorted by pre, then post
        return torch.stack((post, pre))
    keys = torch.empty(0, dtype=torch.int64)  # post * n_pre + pre
    need = torch.full((n_post,), k, dtype=torch.int64)
    while int(need.sum()) > 0:
        rows = torch.repeat_interleave(torch.arange(n_post), need)
        pre = torch.randint(0, n_pre, (rows.numel(),), generator=generator)
        if not autapses:
            rows, pre = rows[pre != rows], pre[pre != rows]
        keys = torch.unique(torch.cat((keys, rows * n_pre + pre)))
        need = k - torch.bincount(keys // n_pre, minlength=n_post)
    post, pre = keys // n_pre, keys % n_pre
    order = torch.argsort(pre * n_post + post)
    return torch.stack((post[order], pre[order]))


class SparseLinear(Connection):
    r"""Sparse connection: only the existing synapses are stored (CSR by presynaptic neuron).

    ``forward(spikes)``: ``spikes`` ``(B, in_features)`` → synaptic input arriving this step
    ``(B, out_features)``, :math:`I_i(t) = \sum_{(i, j)} w_{ij}\, s_j(t - d_{ij})` over the
    synapses :math:`(i, j)` (mV per unit of input). The same as a dense
    :class:`~pysnn.connection.Linear` whose weight is zero wherever there is no synapse (tested),
    at a cost per step proportional to the synapses of the presynaptic neurons that spiked.

    Args:
        in_features: presynaptic size.
        out_features: postsynaptic size.
        indices: ``(2, nnz)`` integer tensor, row 0 the postsynaptic and row 1 the presynaptic
            index of each synapse (each pair at most once), e.g. from :func:`fixed_probability`
            or :func:`fixed_indegree`. Stored re-ordered by presynaptic index.
        dt: time step (ms).
        delay: synaptic delay (ms), >= 0: a number shared by all synapses, or a ``(nnz,)``
            tensor, one per synapse in the order of ``indices``; rounded to whole steps of ``dt``.
        weight: initial weights (mV per unit of input): a number for every synapse or a
            ``(nnz,)`` tensor in the order of ``indices``; ``None`` draws them with ``init``.
        wmin, wmax: weight bounds, as for :class:`~pysnn.connection.Linear`.
        init, init_kwargs: ``"uniform"`` (default, ``init_kwargs`` ``{"a": 0.0, "b": 1.0}``),
            ``"normal"`` or ``"constant"`` (``{"val": ...}``): the ``torch.nn.init`` function
            applied to the ``(nnz,)`` weight (fan-based inits need a dense matrix).
        device, dtype: of the weight and the index buffers.

    Attributes:
        weight: ``(nnz,)`` ``nn.Parameter``, synapse ``k`` from ``pre_index[k]`` to
            ``post_index[k]``.
        post_index, pre_index: ``(nnz,)`` int64, sorted by presynaptic index.
        row_ptr: ``(in_features + 1,)`` int64: the synapses of presynaptic neuron ``j`` are
            ``row_ptr[j]:row_ptr[j + 1]``.
        delay_steps: int64, 0-d (shared) or ``(nnz,)``.
        nnz: number of synapses.

    Memory per synapse: the weight (4 bytes in float32), two int64 indices (16 bytes), one int64
    delay (8) with per-synapse delays; plus ``8 * (in + 1)`` bytes of row pointers and, once an
    event-driven step ran with a shared delay, the padded rows of :meth:`padded_rows` (16 bytes
    per slot, each row padded to the longest: at most :attr:`MAX_PADDING` times 16 bytes per
    synapse). State per
    batch sample: with a delay, ``(max_delay + 1) * in`` spike history values (read by learning
    rules), and ``(max_delay + 1) * out`` queued inputs with per-synapse delays.

    On a GPU the event-driven gather reads the number of active synapses back to the host once
    per step (a sync), as :class:`~pysnn.connection.Linear`'s ``propagation="event"`` does. An
    input that requires a gradient (surrogate spikes) runs over all synapses instead (cost
    ``B * nnz``), so that its gradient is right at the zero entries too.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        indices: torch.Tensor,
        dt: float = 1.0,
        delay: DelayLike = 0.0,
        *,
        weight: Union[float, torch.Tensor, None] = None,
        wmin: float = -math.inf,
        wmax: float = math.inf,
        init: str = "uniform",
        init_kwargs: Optional[Dict[str, Any]] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        in_features = _check_size("in_features", in_features)
        out_features = _check_size("out_features", out_features)
        check_choice("init", init, SPARSE_INITS)
        post, pre, order = self._check_indices(indices, in_features, out_features)
        per_synapse = isinstance(delay, torch.Tensor) and delay.dim() > 0
        super().__init__(
            in_features,
            out_features,
            dt,
            0.0 if per_synapse else delay,
            wmin=wmin,
            wmax=wmax,
            init=init,
            init_kwargs=init_kwargs,
            device=device,
        )
        self.in_features, self.out_features = in_features, out_features
        self.nnz = int(post.numel())
        self.register_buffer("post_index", post.to(device))
        self.register_buffer("pre_index", pre.to(device))
        counts = torch.bincount(pre, minlength=in_features)
        self.register_buffer("row_ptr", F.pad(torch.cumsum(counts, 0), (1, 0)).to(device))
        self.register_buffer("queue", None, persistent=False)
        self._queue_pos = 0
        if per_synapse:
            self.delay_shape = (self.nnz,)
            self.delay_steps = self._delay_steps(delay, device)
            if order is not None:
                self.delay_steps = self.delay_steps[order.to(device)]
            self._delays_changed()
        self.weight = nn.Parameter(torch.empty(self.nnz, device=device, dtype=dtype))
        if weight is None:
            if init == "uniform":
                self.init_kwargs.setdefault("a", 0.0)
                self.init_kwargs.setdefault("b", 1.0)
            self.reset_parameters()
        else:
            self._set_weight(weight, order)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _check_indices(
        indices: torch.Tensor, n_in: int, n_out: int
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(post, pre, order)`` sorted by (pre, post), ``order`` mapping from the given order
        (``None``: the given order is that order already, as :func:`fixed_probability` and
        :func:`fixed_indegree` give it; then no sort and no reordered copies are made)."""
        if isinstance(indices, torch.Tensor) and indices.dtype == torch.bool:
            raise TypeError(
                "indices must be a (2, nnz) integer tensor of (postsynaptic, presynaptic) "
                "indices, got a bool tensor (its values would be read as indices 0 and 1); for a "
                "boolean (out, in) mask of the synapses use mask.nonzero().t()"
            )
        if not isinstance(indices, torch.Tensor) or indices.is_floating_point():
            raise TypeError(
                "indices must be a (2, nnz) integer tensor of (postsynaptic, presynaptic) "
                f"indices, got {type(indices).__name__}"
                + (f" of {indices.dtype}" if isinstance(indices, torch.Tensor) else "")
            )
        if indices.dim() != 2 or indices.shape[0] != 2:
            raise ValueError(
                f"indices must have shape (2, nnz) (postsynaptic, presynaptic), got "
                f"{tuple(indices.shape)}"
            )
        post, pre = indices.detach().to("cpu", torch.int64)
        for name, value, size in (("postsynaptic", post, n_out), ("presynaptic", pre, n_in)):
            if value.numel() and (int(value.min()) < 0 or int(value.max()) >= size):
                raise ValueError(
                    f"{name} indices must be in [0, {size}), got values from {int(value.min())} "
                    f"to {int(value.max())}"
                )
        keys = pre * n_out + post
        if keys.numel() < 2 or bool((keys[1:] > keys[:-1]).all()):  # sorted, each pair once
            # (copies: the connection must not change with the caller's tensor)
            return post.clone(), pre.clone(), None
        keys, order = torch.sort(keys)
        if bool((keys[1:] == keys[:-1]).any()):
            raise ValueError(
                "indices list a synapse (post, pre) more than once; give each pair once (sum "
                "the weights of multiple synapses between the same neurons)"
            )
        del keys
        return post[order], pre[order], order

    def _set_weight(
        self, weight: Union[float, torch.Tensor], order: Optional[torch.Tensor]
    ) -> None:
        value = torch.as_tensor(weight, dtype=self.weight.dtype).detach()
        if value.dim() == 0:
            value = value.expand(self.nnz)
        elif tuple(value.shape) != (self.nnz,):
            raise ValueError(
                f"weight must be a number or a ({self.nnz},) tensor, one per synapse in the order "
                f"of indices, got shape {tuple(value.shape)}"
            )
        elif order is not None:
            value = value[order.to(value.device)]
        if self.nnz and (float(value.min()) < self.wmin or float(value.max()) > self.wmax):
            raise ValueError(
                f"weight has values outside [wmin, wmax] = [{self.wmin}, {self.wmax}]; give "
                "weights within the bounds"
            )
        with torch.no_grad():
            self.weight.copy_(value)
        self._edited()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        """Check loaded indices (``post_index``, ``pre_index``, ``row_ptr``) before anything is
        loaded: in range, in the stored order with each pair once, consistent with each other
        (a bad index would fail, or silently read another neuron, only at the next forward)."""
        names = ("post_index", "pre_index", "row_ptr")
        given = {n: state_dict.get(prefix + n) for n in names}
        if any(v is not None for v in given.values()):
            post = given["post_index"] if given["post_index"] is not None else self.post_index
            pre = given["pre_index"] if given["pre_index"] is not None else self.pre_index
            where = f"SparseLinear state_dict ({prefix or 'top level'})"
            if not isinstance(post, torch.Tensor) or not isinstance(pre, torch.Tensor):
                raise TypeError(f"{where}: post_index and pre_index must be tensors")
            if post.shape != pre.shape or post.dim() != 1:
                raise ValueError(
                    f"{where}: post_index {tuple(post.shape)} and pre_index {tuple(pre.shape)} "
                    "must be 1-D of the same length (one entry per synapse)"
                )
            try:
                _, _, order = self._check_indices(
                    torch.stack((post, pre)), self.in_features, self.out_features
                )
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: {err}") from None
            if order is not None:
                raise ValueError(
                    f"{where}: the indices are not sorted by (presynaptic, postsynaptic) index, "
                    "the order SparseLinear stores them in; build the connection from them "
                    "instead (SparseLinear(..., indices=...))"
                )
            counts = torch.bincount(pre.detach().cpu().long(), minlength=self.in_features)
            row_ptr = F.pad(torch.cumsum(counts, 0), (1, 0))
            if given["row_ptr"] is not None and not torch.equal(
                given["row_ptr"].detach().cpu().long(), row_ptr
            ):
                raise ValueError(f"{where}: row_ptr does not match pre_index")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

    def _delays_changed(self) -> None:
        steps = self.delay_steps
        self.per_synapse_delay = steps.dim() > 0
        self.max_delay = int(steps.max()) if steps.numel() else 0
        self._shared_delay = None if self.per_synapse_delay else int(steps)
        self._check_delay_memory()
        self.history = self.history_pos = self.arriving = None
        if "queue" in self._buffers:  # (not yet during Connection.__init__)
            self.queue = None
        self._queue_pos = 0

    def delay_state_values(self) -> int:
        """As :meth:`Connection.delay_state_values`, plus the ``(max_delay + 1) * out`` queued
        inputs of per-synapse delays."""
        values = super().delay_state_values()
        if self.per_synapse_delay:
            values += (self.max_delay + 1) * self.out_features
        return values

    # ------------------------------------------------------------------ propagation
    def _events(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The synapses reached by the non-zero entries of ``x`` ``(N, in)``: ``(sample,
        synapse, input value)``, each ``(E,)`` for the ``E`` synapses of the active inputs."""
        sample, pre = x.nonzero(as_tuple=True)
        start = self.row_ptr[pre]
        count = self.row_ptr[pre + 1] - start
        event = torch.repeat_interleave(count)  # which active input each synapse belongs to
        first = torch.cumsum(count, 0) - count  # position of each active input's first synapse
        synapse = torch.arange(event.numel(), device=x.device) + (start - first)[event]
        return sample[event], synapse, x[sample, pre][event]

    #: Padded rows (:meth:`padded_rows`) are used while the longest row has at most this many
    #: times the mean number of synapses per presynaptic neuron (else the CSR gather runs).
    MAX_PADDING: float = 4.0

    def padded_rows(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The synapses as padded rows, ``(synapse, post)``, each ``(in, K)`` int64 with ``K`` the
        largest number of synapses of a presynaptic neuron: row ``j`` lists neuron ``j``'s
        synapses, padded with synapse 0 and the postsynaptic index ``out`` (a column that is
        dropped). Built on the first event-driven step (``16 * in * K`` bytes, not in
        ``state_dict``); ``None`` when the rows are too unequal (see :attr:`MAX_PADDING`). Kept
        while the :class:`~pysnn._guards.Stamp` of each index buffer holds (the same buffers, not
        edited in place: ``load_state_dict`` or a user's edit rebuilds them)."""
        sources = (self.post_index, self.pre_index, self.row_ptr)
        rows = self.__dict__.get("_padded")
        if rows is not None and all(map(Stamp.holds, rows[0], sources)):
            return rows[1]
        stamps = tuple(map(Stamp, sources))
        counts = self.row_ptr[1:] - self.row_ptr[:-1]
        longest = int(counts.max()) if counts.numel() else 0
        if longest == 0 or longest > self.MAX_PADDING * self.nnz / self.in_features:
            self.__dict__["_padded"] = (stamps, None)
            return None
        device = self.post_index.device
        slot = torch.arange(self.nnz, device=device) - torch.repeat_interleave(
            self.row_ptr[:-1], counts
        )
        synapse = torch.zeros(self.in_features, longest, dtype=torch.int64, device=device)
        synapse[self.pre_index, slot] = torch.arange(self.nnz, device=device)
        post = torch.full_like(synapse, self.out_features)
        post[self.pre_index, slot] = self.post_index
        self.__dict__["_padded"] = (stamps, (synapse, post))
        return synapse, post

    def propagate(self, arriving: torch.Tensor) -> torch.Tensor:
        """Synaptic input ``(N, out)`` (mV) of the spikes ``arriving`` ``(N, in)`` (shared delay):
        event-driven over the synapses of the active inputs (through :meth:`padded_rows`: one
        gather of their rows and one ``scatter_add``), or over all synapses when ``arriving``
        requires a gradient."""
        n, n_out = arriving.shape[0], self.out_features
        weight = self.weight
        if arriving.requires_grad and torch.is_grad_enabled():
            values = arriving[:, self.pre_index] * weight
            return arriving.new_zeros(n, n_out).index_add(1, self.post_index, values)
        rows = self.padded_rows()
        if rows is None:
            sample, synapse, value = self._events(arriving)
            flat = sample * n_out + self.post_index[synapse]
            out = arriving.new_zeros(n * n_out).scatter_add_(0, flat, weight[synapse] * value)
            return out.view(n, n_out)
        sample, pre = arriving.nonzero(as_tuple=True)
        synapse, post = rows[0][pre], rows[1][pre]  # (E, K)
        values = weight[synapse] * arriving[sample, pre].unsqueeze(1)
        flat = (sample * (n_out + 1)).unsqueeze(1) + post
        # (scatter_add_: one pass; a 1-D index_add_ on the CPU adds element by element)
        out = arriving.new_zeros(n * (n_out + 1)).scatter_add_(0, flat.view(-1), values.view(-1))
        return out.view(n, n_out + 1)[:, :n_out]

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """One step: presynaptic spikes ``(B, in)`` → synaptic input arriving now ``(B, out)``
        (mV). With per-synapse delays each spike is scattered at emission into the ring queue
        (with the weight of the emission step): the synapses of the active inputs, or of every
        input when ``spikes`` requires a gradient (so that it is right at the zero entries)."""
        if not self.per_synapse_delay:
            return super().forward(spikes)
        self._check_bounds()
        self._check_spikes(spikes)
        self._push(spikes)  # the history learning rules read
        n, n_out, length = spikes.shape[0], self.out_features, self.max_delay + 1
        queue = self.queue
        if queue is None or queue.shape[0] != n:
            warn_if_dropped("SparseLinear (per-synapse delay queue)", queue, n)
            queue = self._zeros("delay queue", (n, length, n_out), spikes)
            self._queue_pos = 0
        pos = self._queue_pos
        if spikes.requires_grad and torch.is_grad_enabled():
            synapse = torch.arange(self.nnz, device=spikes.device).repeat(n)
            sample = torch.arange(n, device=spikes.device).repeat_interleave(self.nnz)
            value = spikes[:, self.pre_index].reshape(-1)
        else:
            sample, synapse, value = self._events(spikes)
        slot = (self.delay_steps[synapse] + pos) % length
        flat = (sample * length + slot) * n_out + self.post_index[synapse]
        values = self.weight[synapse] * value
        queue = queue.view(-1).scatter_add(0, flat, values).view(queue.shape)
        out = queue[:, pos].clone()
        queue[:, pos] = 0.0
        self._buffers["queue"] = queue
        self._queue_pos = (pos + 1) % length
        return out

    # ------------------------------------------------------------------ what learning reads
    def arriving_spikes(self) -> torch.Tensor:
        """Presynaptic spikes arriving at the synapses this step: ``(B, in)`` with a shared delay,
        ``(B, nnz)`` (one per synapse) with per-synapse delays. Valid after ``forward``."""
        if self.per_synapse_delay:
            return self.delayed(self.history)
        return self.arriving

    def delayed(self, history: torch.Tensor) -> torch.Tensor:
        """A presynaptic quantity read through the delays: ``history`` ``(B, L, in)``, index
        ``k`` from ``k`` steps ago → ``(B, in)`` (shared delay) or ``(B, nnz)`` (per synapse)."""
        if self.per_synapse_delay:
            return history[:, self.delay_steps, self.pre_index]
        return history[:, self._shared_delay]

    def correlate(
        self, post: torch.Tensor, pre: torch.Tensor, per_sample: bool = False
    ) -> torch.Tensor:
        r"""The learning rules' correlation on the existing synapses:
        :math:`C_k = \sum_b post_{b, i_k}\, pre_{b, j_k}` for synapse :math:`k` from :math:`j_k`
        to :math:`i_k`, ``(nnz,)`` (``(B, nnz)`` with ``per_sample``).

        Args:
            post: ``(B, out)`` postsynaptic term.
            pre: presynaptic term in the layout of :meth:`arriving_spikes`: ``(B, in)``, or
                ``(B, nnz)`` with per-synapse delays.
        """
        expected = self.nnz if self.per_synapse_delay else self.in_features
        if pre.dim() != 2 or pre.shape[1] != expected or post.dim() != 2:
            raise ValueError(
                f"correlate needs post (B, {self.out_features}) and pre (B, {expected}), got "
                f"{tuple(post.shape)} and {tuple(pre.shape)}"
            )
        if not self.per_synapse_delay:
            pre = pre[:, self.pre_index]
        product = post[:, self.post_index] * pre
        return product if per_sample else product.sum(0)

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def normalize(self, total: float) -> None:
        """Scale the weights in place so that the incoming weights of each postsynaptic neuron
        sum to ``total``; neurons whose weights sum to 0 are left unchanged."""
        weight = self.weight
        sums = weight.new_zeros(self.out_features).index_add_(0, self.post_index, weight)
        factor = torch.where(sums != 0, total / sums, torch.ones_like(sums))
        self._edit(lambda w: w.mul_(factor[self.post_index]))

    def to_dense(self) -> torch.Tensor:
        """The ``(out, in)`` dense weight (zeros where there is no synapse)."""
        dense = self.weight.new_zeros(self.out_features, self.in_features)
        return dense.index_put((self.post_index, self.pre_index), self.weight)

    def mask(self) -> torch.Tensor:
        """``(out, in)`` 0/1 mask of the existing synapses, in the weight's dtype."""
        dense = self.weight.new_zeros(self.out_features, self.in_features)
        return dense.index_put_((self.post_index, self.pre_index), dense.new_ones(()))

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        super().reset_state()
        self.queue = None
        self._queue_pos = 0

    def detach_state(self) -> None:
        super().detach_state()
        if self.queue is not None:
            self.queue = self.queue.detach()

    def extra_repr(self) -> str:
        delay = "per-synapse" if self.per_synapse_delay else f"{self._shared_delay * self.dt} ms"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
            f"dt={self.dt}, delay={delay}, wmin={self.wmin}, wmax={self.wmax}"
        )
