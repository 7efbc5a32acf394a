r"""Scale-out on :mod:`torch.distributed`: data-parallel local learning and sharding helpers.

pysnn runs on the distributed engine PyTorch users already have: processes started by
``torchrun`` (or ``torch.multiprocessing``), joined in a process group (``gloo`` on CPUs,
``nccl`` on GPUs). See the "Scaling out" page of the documentation for the commands and costs.

**Data-parallel local learning.** Every process holds a full copy of the network and simulates
its shard of each global batch. :func:`data_parallel` makes the learning of those copies that of
one process with the whole batch:

- every :class:`~pysnn.learning.LearningRule` in the module sums its weight change over the
  process group before applying it (one ``all_reduce`` of a weight-sized tensor per rule,
  connection and step): with ``reduction="sum"``
  :math:`\Delta w = \sum_r \Delta w_r`; with ``reduction="mean"`` each process computes its
  batch *sum* and the total is divided by the global batch size
  :math:`B = \sum_r B_r` (reduced in the same collective, so shards may differ in size):
  :math:`\Delta w = \frac{1}{B}\sum_r \sum_{b \in r} \Delta w_b`;
- every :class:`~pysnn.neuron.AdaptiveLIFNeuron` with ``theta_shared=True`` sums its per-step spike
  counts over the group before its threshold update (one ``all_reduce`` of ``shape`` per step);
- weight clamping and normalisation (:meth:`~pysnn.connection.Connection.normalize`) are
  functions of the weights alone, which stay identical on every process (an ``all_reduce``
  delivers the same sum to every rank), so they need no communication.

Hence ``N`` processes with batch ``b`` learn as one process with batch ``N * b``, up to the
order of the floating-point summation of the per-sample updates (relative differences of order
``1e-7`` per step in float32; spikes, counts and assignments are equal as long as no membrane
potential lies within that distance of its threshold).

Requirements: every process steps the same number of times with the same rules (each step of a
rule is a collective); a process with no sample of its own must still step (e.g. with a blank
input that produces no spikes); rules must return an update, or ``None``, on all processes alike.
:class:`~pysnn.learning.Hebbian` with ``decay > 0`` (a per-step, not per-sample, term) is refused.

.. code-block:: python

    import torch.distributed as dist
    from pysnn import distributed

    distributed.init_from_env()            # under torchrun: joins the group (gloo / nccl)
    net = DiehlCook2015()                  # same seed on every process: same initial weights
    distributed.data_parallel(net)         # rules and shared thresholds reduce over the group
    part = distributed.shard_range(len(batch))
    counts = net.run(spikes[:, part])      # this process's shard of the global batch
    counts = distributed.gather_shards(counts, len(batch))   # (B, n) on every process

**Partitioned simulation.** One population of ``n`` neurons too large for one process is split
into contiguous blocks (:class:`Partition`): each process simulates its block of neurons, holds
only the rows of the weights (and per-synapse delays) that feed them, their state and the
learning of those rows. A learning rule's update of row ``i`` depends only on postsynaptic
neuron ``i`` and the presynaptic signals, so it is computed locally, without communication (the
rule must *not* get a ``process_group``). The only exchange is of spikes: every step each process
contributes its block's spikes to one ``all_gather`` (:class:`SpikeExchange`, ``uint8``, dense) and
receives the whole population's, which it feeds to its rows like an
:class:`~pysnn.neuron.Input` (with the same trace, so the rules see the presynaptic side as in one
process):

.. code-block:: python

    part = distributed.Partition(n)                     # this process: neurons part.start..stop
    relay = distributed.SpikeExchange(part)             # (B, n_local) -> (B, n), with trace
    rec = Linear(n, part.size, delay=part.rows(delays)) # rows of the global (n, n) delays
    rec.weight.data.copy_(part.rows(weight))
    lif = LIFNeuron(part.size)
    stdp = STDP(connection=rec, pre=relay, post=lif)
    for t in range(T):
        s = lif(rec(relay(s_prev)) + drive[t][:, part.slice])
        stdp.step()
        s_prev = s

Communication volume per step (batch ``B``, ``N`` processes, ``k`` spikes in the step over the
whole population and batch): dense ``uint8`` spikes (``mode="dense"``): each process sends
``B n / N`` bytes and receives ``B n (N - 1) / N``, ``B n (N - 1)`` bytes in all, independent of
connectivity and activity, in one collective. Spike indices (``mode="indices"``): ``4 k (N - 1)``
bytes in all plus ``8 N (N - 1)`` for the counts, in two collectives; fewer bytes when
``k < B n / 4``. ``mode="auto"`` picks per step from the previous step's activity. With every
delay at least one step, ``SpikeExchange(..., lag=1)`` overlaps the (dense) exchange with the
step: it returns the previous step's spikes and the delays are shortened by one.
"""

from __future__ import annotations

import datetime
import os
from functools import partial
from typing import Any, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pysnn.collectives import ProcessGroup, all_reduce_sum, all_reduce_update  # noqa: F401
from pysnn.learning import LearningRule
from pysnn.neuron import AdaptiveLIFNeuron, Input

__all__ = [
    "init_from_env",
    "is_distributed",
    "rank_and_world",
    "shard_sizes",
    "shard_range",
    "gather_shards",
    "data_parallel",
    "Partition",
    "SpikeExchange",
]

EXCHANGE_MODES = ("dense", "indices", "auto")


def is_distributed() -> bool:
    """Whether a default process group is initialised (more than one process may run)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world(group: ProcessGroup = None) -> Tuple[int, int]:
    """``(rank, world_size)`` in ``group``; ``(0, 1)`` without an initialised process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def init_from_env(backend: Optional[str] = None, timeout: float = 300.0) -> bool:
    """Join the default process group described by ``torchrun``'s environment variables.

    Does nothing (returns ``False``) when ``WORLD_SIZE`` is unset or 1, or when a group is
    already initialised (returns ``True``). Otherwise calls
    ``torch.distributed.init_process_group(backend, timeout=timeout)`` with ``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE`` from the environment, then checks that every
    process was started with the same ``WORLD_SIZE`` and ``MASTER_ADDR:MASTER_PORT``.

    Args:
        backend: ``"gloo"`` (CPU tensors), ``"nccl"`` (CUDA tensors) or ``None``: ``"nccl"`` if
            CUDA is available, else ``"gloo"``.
        timeout: seconds to wait for the other processes to join (and, afterwards, for any
            collective operation of the group), > 0.

    Returns:
        Whether a process group is initialised afterwards.

    Raises:
        ValueError: ``WORLD_SIZE`` or ``RANK`` is not an int, ``RANK`` is not in
            ``[0, WORLD_SIZE)``, a bad ``backend`` or ``timeout``, or the processes were started
            with different ``WORLD_SIZE`` (every process raises it).
        RuntimeError: the group did not form within ``timeout`` seconds (no partner started, a
            wrong address or port); the message says what to check.
    """
    if is_distributed():
        return True
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return False
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 1e7:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl", "mpi", "ucc", "xccl"):
        raise ValueError(f"backend must be 'gloo', 'nccl', 'mpi', 'ucc' or 'xccl', got {backend!r}")
    rank = _env_int("RANK")
    if rank is None or not 0 <= rank < world:
        raise ValueError(
            f"RANK must be an int in [0, WORLD_SIZE) = [0, {world}), got "
            f"{os.environ.get('RANK')!r}; start the processes with torchrun, or give each a "
            "distinct RANK"
        )
    where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
        seen = [None] * world
        dist.all_gather_object(seen, (world, where))
    except (RuntimeError, ValueError, OSError) as err:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise RuntimeError(
            f"pysnn.distributed.init_from_env: the process group of rank {rank} of "
            f"WORLD_SIZE={world} at MASTER_ADDR:MASTER_PORT={where} did not form within "
            f"{timeout:g} s: check that all {world} processes are started, with the same "
            "WORLD_SIZE, MASTER_ADDR and MASTER_PORT and distinct RANK values "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if any(s != seen[0] for s in seen):
        detail = ", ".join(f"rank {r}: WORLD_SIZE={w} at {a}" for r, (w, a) in enumerate(seen))
        dist.destroy_process_group()
        raise ValueError(f"the processes were started with different settings: {detail}")
    return True


def _env_int(name: str) -> Optional[int]:
    """The environment variable ``name`` as an int (``None`` if unset); ``ValueError`` naming
    it if it is set to something else."""
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None


def _agree(what: str, value: Any, group: ProcessGroup, fix: str) -> List[Any]:
    """Every rank's ``value`` (one ``all_gather_object``); the same ``ValueError`` on every rank
    if they differ, naming ``what`` and each rank's value. Call it on every rank, before the
    collective that needs the agreement (a mismatch there aborts or hangs the processes)."""
    _, world = rank_and_world(group)
    if world == 1:
        return [value]
    values: List[Any] = [None] * world
    dist.all_gather_object(values, value, group=group)
    if any(v != values[0] for v in values):
        detail = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise ValueError(f"{what} differs between the processes ({detail}); {fix}")
    return values


# ---------------------------------------------------------------------------- sharding
def shard_sizes(n: int, world: int) -> List[int]:
    """Sizes of ``world`` contiguous shards of ``n`` items (as ``torch.tensor_split``: the first
    ``n % world`` shards hold one item more)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an int >= 1, got {world!r}")
    base, extra = divmod(n, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def shard_range(n: int, group: ProcessGroup = None) -> slice:
    """This process's contiguous shard of ``n`` items (a ``slice``; all of them without a group).

    The shards of all ranks, in rank order, are ``0..n`` (see :func:`shard_sizes`).
    """
    rank, world = rank_and_world(group)
    sizes = shard_sizes(n, world)
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def gather_shards(local: Tensor, n: int, group: ProcessGroup = None) -> Tensor:
    """Concatenate every rank's shard (as :func:`shard_range` of ``n``) along dim 0, on every rank.

    Args:
        local: this rank's rows ``(n_r, ...)`` (``n_r`` = its :func:`shard_range` length).
        n: the total number of rows.

    Returns:
        ``(n, ...)``: rank 0's rows first. One ``all_gather`` of ``(max n_r, ...)`` tensors
        (shards are padded to the same size and trimmed afterwards), after one small
        ``all_gather_object`` that checks every rank's call.

    Raises:
        ValueError: on every rank alike, if the ranks pass different ``n``, row shapes or
            dtypes, or a rank's ``local`` is not its shard.
    """
    rank, world = rank_and_world(group)
    if world > 1:  # every rank checks every rank's call: all raise the same error
        calls = [None] * world
        dist.all_gather_object(
            calls, (n, local.shape[0], tuple(local.shape[1:]), str(local.dtype)), group=group
        )
        _agree_calls(calls, world)
    sizes = shard_sizes(n, world)
    if local.shape[0] != sizes[rank]:
        raise ValueError(
            f"local must hold this rank's shard of {n} rows ({sizes[rank]} on rank {rank}), got "
            f"{local.shape[0]} rows"
        )
    if world == 1:
        return local
    width = max(sizes)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _agree_calls(calls: List[Any], world: int) -> None:
    """The checks of :func:`gather_shards` over every rank's ``(n, rows, row shape, dtype)``."""
    if any(c[0] != calls[0][0] for c in calls):
        detail = ", ".join(f"rank {r}: n={c[0]}" for r, c in enumerate(calls))
        raise ValueError(
            f"gather_shards: n differs between the processes ({detail}); pass the same n"
        )
    sizes = shard_sizes(calls[0][0], world)
    wrong = [(r, c[1], sizes[r]) for r, c in enumerate(calls) if c[1] != sizes[r]]
    if wrong:
        detail = ", ".join(f"rank {r}: {got} rows, its shard {want}" for r, got, want in wrong)
        raise ValueError(
            f"gather_shards: local must hold each rank's shard of n={calls[0][0]} rows "
            f"(shard_range): {detail}"
        )
    if any(c[2:] != calls[0][2:] for c in calls):
        detail = ", ".join(f"rank {r}: rows {c[2]} {c[3]}" for r, c in enumerate(calls))
        raise ValueError(
            f"gather_shards: the shards' row shapes or dtypes differ ({detail}); give the same "
            "on every process"
        )


def data_parallel(module: nn.Module, group: ProcessGroup = None) -> nn.Module:
    """Make the local learning in ``module`` reduce over ``group`` (see the module docstring).

    Sets ``process_group`` on every :class:`~pysnn.learning.LearningRule` and
    ``spike_count_reduce`` on every :class:`~pysnn.neuron.AdaptiveLIFNeuron` with a shared
    ``theta`` found in ``module.modules()`` (``module`` itself included). Without an initialised
    process group this does nothing. Call it on every rank, after building identical copies of
    the network (same seed): it first checks, in one ``all_gather_object``, that every rank's
    ``module`` has the same tensors (names, shapes, dtypes) and submodules, and raises the same
    ``ValueError`` on every rank otherwise (a mismatch would abort the processes in the first
    collective).

    Returns:
        ``module`` (changed in place).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not is_distributed():
        return module
    layout = [(k, tuple(v.shape), str(v.dtype)) for k, v in module.state_dict().items()]
    layout += [(name, type(sub).__name__) for name, sub in module.named_modules()]
    _, world = rank_and_world(group)
    layouts: List[Any] = [None] * world
    dist.all_gather_object(layouts, layout, group=group)
    for r, other in enumerate(layouts):
        if other != layouts[0]:  # the same answer on every rank: all raise the same error
            first = next(
                (i for i, (a, b) in enumerate(zip(layouts[0], other)) if a != b),
                min(len(layouts[0]), len(other)),
            )
            show = lambda lay: lay[first] if first < len(lay) else "nothing"  # noqa: E731
            raise ValueError(
                f"data_parallel: the networks differ between the processes: rank 0 has "
                f"{show(layouts[0])}, rank {r} has {show(other)} (entry {first}: tensor name, "
                "shape and dtype, then the modules); build the same network (same code, sizes "
                "and dtype) on every process"
            )
    for sub in module.modules():
        if isinstance(sub, LearningRule):
            sub.process_group = group if group is not None else dist.group.WORLD
        elif isinstance(sub, AdaptiveLIFNeuron) and sub.theta_shared:
            sub.spike_count_reduce = partial(all_reduce_sum, group=group)
    return module


# ---------------------------------------------------------------------------- partitioned simulation
class Partition:
    """A contiguous block of a population of ``n`` neurons owned by this process.

    The blocks of ranks ``0, 1, ...`` are consecutive, of :func:`shard_sizes` ``(n, world)``.

    Args:
        n: number of neurons of the whole population; the same on every rank (checked with one
            ``all_gather_object``: every rank raises the same ``ValueError`` otherwise).
        group: process group (default: the default group; without one the block is everything).

    Attributes:
        n, rank, world, sizes, start, stop, size (``stop - start``), slice.
    """

    def __init__(self, n: int, group: ProcessGroup = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1 (the population size), got {n!r}")
        self.n, self.group = n, group
        self.rank, self.world = rank_and_world(group)
        _agree(
            "Partition(n)", n, group, "build the Partition of the same population on every process"
        )
        self.sizes = shard_sizes(n, self.world)
        if min(self.sizes) == 0:
            raise ValueError(f"n = {n} neurons cannot be split over {self.world} processes")
        self.start = sum(self.sizes[: self.rank])
        self.stop = self.start + self.sizes[self.rank]
        self.size = self.stop - self.start
        self.slice = slice(self.start, self.stop)

    def rows(self, tensor: Tensor) -> Tensor:
        """This block's rows (dim 0) of a global ``(n, ...)`` tensor, e.g. the weight ``(n, in)``
        feeding the population or its per-synapse delays (a contiguous copy)."""
        if not isinstance(tensor, Tensor) or tensor.dim() < 1 or tensor.shape[0] != self.n:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"tensor must have {self.n} rows (dim 0), got {shape}")
        return tensor[self.slice].clone()

    def __repr__(self) -> str:
        return (
            f"Partition(n={self.n}, rank={self.rank}, world={self.world}, {self.start}:{self.stop})"
        )


class SpikeExchange(nn.Module):
    """Gather a partitioned population's spikes: ``(B, n_local)`` in, ``(B, n)`` out, every step.

    The module then acts as an :class:`~pysnn.neuron.Input` of the whole population: ``spikes``
    and ``trace`` ``(B, n)`` (the trace with the given parameters, which should be those of the
    source neurons), so it is the ``pre`` of a learning rule on the rows fed by the population.

    Two ways to exchange, with the same result:

    - ``"dense"``: one ``all_gather`` of every block's spikes as ``uint8`` (padded to the largest
      block): ``B n_max`` bytes from each process, whatever the activity; no host read-back;
    - ``"indices"``: one ``all_gather`` of the spike counts, then one of the spiking entries'
      indices (``int32``, padded to the largest count): 4 bytes per spike plus 4 per process.
      Cheaper in volume below one spike in 4 entries, at the price of a second collective and of
      reading the count on the host (a synchronisation on a GPU);
    - ``"auto"`` (CPU): ``"indices"`` while the fraction of entries that spiked in the previous
      step's gathered spikes is below ``sparse_below``, else ``"dense"``. The fraction is
      measured on the gathered spikes, which are the same on every process, so all processes
      choose alike without communicating.

    Args:
        partition: the :class:`Partition` of the population.
        dt: time step (ms).
        tau_trace, trace_scale, trace_mode: trace of the gathered spikes, as
            :class:`~pysnn.neuron.Input` (defaults 20 ms, 1, ``"additive"``).
        mode: ``"dense"`` (default), ``"indices"`` or ``"auto"``.
        sparse_below: activity (spikes per entry and step) under which ``"auto"`` sends indices
            (default 1/16: a quarter of the break-even of 1/4, for the second collective).
        lag: 0 (default) or 1. With ``lag=1`` (``mode="dense"`` only) a call *starts* the
            exchange of its spikes (``all_gather(async_op=True)``) and returns those of the
            previous call (zeros at the first call after a reset), so the exchange overlaps with
            the rest of the step. The population's spikes then arrive one step later: give the
            connections they feed delays one step shorter (every delay must be >= 1 step; a
            delay of ``d`` steps becomes ``d - 1``), and the arrivals, traces and learning are
            those of ``lag=0``. Exact with shared delays; with *per-synapse* delays a
            :class:`~pysnn.connection.Linear` applies the weight of the step a spike enters its
            queue, which the lag moves one step later, so under plasticity those weights differ
            by one step of learning (static weights: exact).
    """

    def __init__(
        self,
        partition: Partition,
        dt: float = 1.0,
        *,
        tau_trace: float = 20.0,
        trace_scale: float = 1.0,
        trace_mode: str = "additive",
        mode: str = "dense",
        sparse_below: float = 1.0 / 16.0,
        lag: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(partition, Partition):
            raise TypeError(f"partition must be a Partition, got {type(partition).__name__}")
        if mode not in EXCHANGE_MODES:
            raise ValueError(f"mode must be one of {EXCHANGE_MODES}, got {mode!r}")
        if not (isinstance(sparse_below, (int, float)) and 0.0 <= sparse_below <= 1.0):
            raise ValueError(f"sparse_below must be a fraction in [0, 1], got {sparse_below!r}")
        if lag not in (0, 1) or isinstance(lag, bool):
            raise ValueError(f"lag must be 0 or 1 (steps), got {lag!r}")
        if lag and mode != "dense":
            raise ValueError(f"lag=1 overlaps the dense exchange only; got mode={mode!r}")
        self.partition = partition
        self.lag = lag
        self._pending: Optional[Tuple[Any, List[Tensor], Tensor, torch.dtype]] = None
        self.mode = mode
        self.sparse_below = float(sparse_below)
        #: fraction of spiking entries in the last gathered step (``"auto"``; 1 before the first)
        self.activity = 1.0
        #: how the last call exchanged: ``"dense"`` or ``"indices"`` (``None`` before)
        self.last_exchange: Optional[str] = None
        self.relay = Input(
            partition.n, dt, tau_trace=tau_trace, trace_scale=trace_scale, trace_mode=trace_mode
        )

    @property
    def dt(self) -> float:
        """Time step (ms)."""
        return self.relay.dt

    @property
    def shape(self) -> Tuple[int, ...]:
        """``(n,)``: the whole population."""
        return self.relay.shape

    @property
    def spikes(self) -> Optional[Tensor]:
        """The gathered spikes of the last call, ``(B, n)``."""
        return self.relay.spikes

    @property
    def trace(self) -> Optional[Tensor]:
        """Their trace, ``(B, n)``."""
        return self.relay.trace

    def reset_state(self) -> None:
        """Reset the trace (and spikes) of the gathered population (and the measured activity:
        ``"auto"`` starts dense)."""
        self.relay.reset_state()
        self.activity = 1.0
        if self._pending is not None:  # an exchange in flight: complete it, drop its spikes
            if self._pending[0] is not None:
                self._pending[0].wait()
            self._pending = None

    def gather(self, local: Tensor) -> Tensor:
        """The whole population's spikes ``(B, n)`` (``local``'s dtype) from every block's
        ``(B, n_local)``: one ``all_gather``; no trace update."""
        part = self.partition
        if local.dim() != 2 or local.shape[1] != part.size:
            raise ValueError(
                f"local spikes must be (B, {part.size}) (this block's neurons), got "
                f"{tuple(local.shape)}"
            )
        if self.lag:
            return self._gather_lagged(local)
        if part.world == 1:
            return local
        sparse = self.mode == "indices" or (
            self.mode == "auto" and self.activity < self.sparse_below
        )
        full = self._gather_indices(local) if sparse else self._gather_dense(local)
        self.last_exchange = "indices" if sparse else "dense"
        if self.mode == "auto":  # the same value on every process: the spikes are the same
            self.activity = float(full.count_nonzero()) / max(full.numel(), 1)
        return full

    def _start_dense(self, local: Tensor, async_op: bool = False):
        part = self.partition
        width = max(part.sizes)
        packed = torch.zeros((width, local.shape[0]), dtype=torch.uint8, device=local.device)
        packed[: part.size] = local.t().ne(0)
        if part.world == 1:
            return None, [packed], packed
        blocks = [torch.empty_like(packed) for _ in range(part.world)]
        work = dist.all_gather(blocks, packed, group=part.group, async_op=async_op)
        return work, blocks, packed

    def _finish_dense(self, blocks: List[Tensor], dtype: torch.dtype) -> Tensor:
        full = torch.cat([b[:size] for b, size in zip(blocks, self.partition.sizes)])
        return full.t().to(dtype).contiguous()

    def _gather_dense(self, local: Tensor) -> Tensor:
        _, blocks, _ = self._start_dense(local)
        return self._finish_dense(blocks, local.dtype)

    def _gather_lagged(self, local: Tensor) -> Tensor:
        """Start exchanging ``local``; return the previous call's gathered spikes."""
        previous = self._pending
        work, blocks, packed = self._start_dense(local, async_op=True)
        self._pending = (work, blocks, packed, local.dtype)
        self.last_exchange = "dense"
        if previous is None:
            return local.new_zeros((local.shape[0], self.partition.n))
        if previous[0] is not None:
            previous[0].wait()
        full = self._finish_dense(previous[1], previous[3])
        if full.shape[0] != local.shape[0]:
            raise ValueError(
                f"the batch size changed from {full.shape[0]} to {local.shape[0]} with lag=1; "
                "call reset_state() between sequences of different batch sizes"
            )
        return full

    def _gather_indices(self, local: Tensor) -> Tensor:
        part, batch = self.partition, local.shape[0]
        # Neuron-major flat index j * B + b: the blocks are then contiguous ranges of it.
        index_dtype = torch.int32 if part.n * batch < 2**31 else torch.int64
        mine = local.t().reshape(-1).nonzero().squeeze(1).to(index_dtype)
        count = torch.tensor([mine.shape[0]], dtype=torch.int64, device=local.device)
        counts = [torch.empty_like(count) for _ in range(part.world)]
        dist.all_gather(counts, count, group=part.group)
        counts_host = [int(c) for c in counts]  # the host needs the sizes (sync on a GPU)
        padded = torch.zeros(max(max(counts_host), 1), dtype=index_dtype, device=local.device)
        padded[: mine.shape[0]] = mine
        blocks = [torch.empty_like(padded) for _ in range(part.world)]
        dist.all_gather(blocks, padded, group=part.group)
        offsets = [start * batch for start in _starts(part.sizes)]
        flat = torch.cat([b[:c].long() + off for b, c, off in zip(blocks, counts_host, offsets)])
        full = local.new_zeros(part.n * batch)
        full[flat] = 1.0
        return full.view(part.n, batch).t().contiguous()

    def forward(self, local: Tensor) -> Tensor:
        """``local`` ``(B, n_local)`` 0/1 spikes of this block → ``(B, n)`` of the population."""
        return self.relay(self.gather(local))

    def extra_repr(self) -> str:
        return f"{self.partition!r}, mode={self.mode!r}, lag={self.lag}"


def _starts(sizes: List[int]) -> List[int]:
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += size
    return starts
