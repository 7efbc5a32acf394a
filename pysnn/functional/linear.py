r"""Propagation maths of an all-to-all connection: dense, event-driven, per-synapse delay queue.

All three compute the synaptic input :math:`I_i = \sum_j w_{ij} x_j (+ b_i)` (mV, with the weights
in mV per unit of input) of a batch of presynaptic inputs ``x`` ``(N, in)`` through a weight
``(out, in)`` (the layout of ``torch.nn.Linear``); they differ in cost:

- :func:`linear_dense`: one matrix product, cost ~ ``N * in * out`` whatever the activity.
- :func:`linear_event`: adds only the presynaptic rows of the non-zero inputs, cost ~
  ``active * out``. It reads a *presynaptic-major* weight ``weight_rows`` ``(in, out)``
  (``weight.t()``); the fused CPU kernel of :mod:`pysnn.native` needs it contiguous.
- :func:`delay_queue_step`: per-synapse delays; scatters each emitted spike, at emission, into a
  queue of future input.

These functions hold no state; :class:`pysnn.connection.Linear` picks one per step and owns the
presynaptic-major copy of its weight.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from pysnn import backends, native

__all__ = [
    "delay_queue_step",
    "linear_dense",
    "linear_event",
    "linear_event_block",
    "linear_event_step",
]


def kernels_available() -> bool:
    """Whether the fused CPU kernels are preferred (:func:`pysnn.backends.preference`), enabled
    and loaded (:func:`pysnn.native.available`)."""
    return backends.enabled("c")


def kernels_usable(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a fused CPU kernel may run on these tensors (:func:`pysnn.backends.accepts`
    with ``"c"``: :func:`pysnn.native.usable`)."""
    return backends.accepts("c", *tensors)


def transposed(matrix: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A contiguous copy of ``matrix.t()`` (written into ``out`` when it fits), exact, never
    aliasing ``matrix`` (:func:`pysnn.native.transposed`: a tiled kernel, or torch's copy)."""
    return native.transposed(matrix, out)


def row_update_(
    weight: torch.Tensor,
    rows: torch.Tensor,
    dw: torch.Tensor,
    copy: Optional[torch.Tensor],
    bounds: Optional[Tuple[float, float]],
) -> bool:
    """``weight[rows] = clamp(weight[rows] + dw, *bounds)`` in place (and the same values into
    ``copy``, the contiguous ``weight.t()``) in one fused pass; ``False`` (nothing done) where
    the kernel does not apply: the caller then runs the torch operations, with the same values
    (:func:`pysnn.native.row_update_`)."""
    if not backends.accepts("c", weight):
        return False
    return native.row_update_(weight, rows, dw, copy, bounds)


def linear_dense(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Dense synaptic input ``x @ weight.t() (+ bias)``.

    Args:
        x: presynaptic input ``(N, in)`` (spikes or any graded value).
        weight: ``(out, in)`` (mV per unit of input).
        bias: ``(out,)`` (mV) or ``None``.

    Returns:
        ``(N, out)`` synaptic input (mV). Differentiable in every argument.
    """
    return F.linear(x, weight, bias)


def linear_event(
    x: torch.Tensor,
    weight_rows: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, int]:
    """Event-driven synaptic input: sum the presynaptic rows of the non-zero inputs only.

    Equal to ``x @ weight_rows (+ bias)`` up to float summation order. On the CPU, when
    :func:`pysnn.native.usable` accepts ``x`` and ``weight_rows`` (contiguous, float32/float64, no
    gradient needed), one fused loop of :mod:`pysnn.native`; otherwise one ``F.embedding_bag``
    (mode ``"sum"``, the input values as per-sample weights) over the rows of the non-zero
    inputs, differentiable in ``weight_rows`` (not in ``x``: the gradient of ``x`` at its zero
    entries is not computed, so an ``x`` that needs a gradient should use :func:`linear_dense`).
    When ``weight_rows`` needs a gradient, the kernels apply and ``x`` has many rows (at least
    :data:`pysnn.native.BLOCK_ROWS`, e.g. a multi-step block), forward and backward (the weight
    gradient ``x^T @ grad``, also over the non-zero inputs only) run on the fused kernels, the
    forward reading the row-major weight itself (no copy of it).
    The ``embedding_bag`` path finds the non-zero inputs with ``torch.nonzero``: a host sync on GPU.

    Args:
        x: presynaptic input ``(N, in)``.
        weight_rows: presynaptic-major weight ``(in, out)`` (mV per unit of input), i.e.
            ``weight.t()``; contiguous for the fused kernel.
        bias: ``(out,)`` (mV) or ``None``.

    Returns:
        ``(N, out)`` synaptic input (mV), and the number of non-zero entries of ``x`` (a host
        ``int``, known without an extra read-back).
    """
    x_c = x.contiguous()
    # (the kernels address the tensors by pointer: other shapes take torch's operations, which
    # broadcast or fail; e.g. a weight reassigned through ``.data``)
    fits = x.dim() == 2 and weight_rows.dim() == 2 and weight_rows.shape[0] == x.shape[1]
    if fits and backends.accepts("c", x_c, weight_rows):
        out, active = native._linear_event(x_c, weight_rows)
    elif (
        fits
        and x_c.shape[0] >= native.BLOCK_ROWS  # a block of rows (the blocked kernel)
        and weight_rows.shape[0] < 2**31
        and weight_rows.requires_grad
        and not x_c.requires_grad
        and torch.is_grad_enabled()
        and backends.accepts("c", x_c, weight_rows.t(), differentiable=True)
    ):
        counted = [0]
        out = _EventProduct.apply(x_c, weight_rows, counted)
        active = counted[0]
    else:
        n_rows, n_in = x.shape[0], x.shape[1]
        flat = x_c.view(-1).nonzero().view(-1)  # sorted: row-major (sample, pre)
        active = flat.shape[0]
        if n_rows == 1:
            pre, offsets = flat, flat.new_zeros(1)
        else:
            pre = flat.remainder(n_in)
            starts = torch.arange(n_rows, device=x.device) * n_in
            offsets = torch.searchsorted(flat, starts)
        values = x_c.view(-1).index_select(0, flat)
        out = F.embedding_bag(pre, weight_rows, offsets, mode="sum", per_sample_weights=values)
    return (out if bias is None else out + bias), active


def linear_event_block(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> Optional[Tuple[torch.Tensor, int]]:
    """:func:`linear_event` for a block of rows (e.g. all ``T * B`` rows of a multi-step call),
    reading the row-major ``weight`` ``(out, in)`` itself instead of a presynaptic-major copy.

    Returns ``(x @ weight.t() (+ bias), active)``, bit for bit as :func:`linear_event` with
    ``weight.t()``, from the fused cache-blocked kernel (:func:`pysnn.native.linear_event_rows`),
    or ``None`` where that does not apply: fewer than :data:`pysnn.native.BLOCK_ROWS` rows, a
    tensor that needs a gradient, or tensors the kernels cannot take. For a caller without an
    up-to-date copy: building one reads and writes the whole weight, this reads it once.
    """
    if (
        x.dim() != 2
        or weight.dim() != 2
        or weight.shape[1] != x.shape[1]  # (a pointer's memory of another shape: torch's error)
        or x.shape[0] < native.BLOCK_ROWS
    ) or (
        torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    ):
        return None
    x_c = x.contiguous()
    if not backends.accepts("c", x_c, weight) or x.shape[1] >= 2**31:
        return None
    out, active = native.linear_event_rows(x_c, weight)
    return (out if bias is None else out + bias), active


def linear_event_step(
    x: torch.Tensor, weight_rows: torch.Tensor
) -> Optional[Tuple[torch.Tensor, int]]:
    """:func:`linear_event` without bias, autograd or checks, for a caller that has checked once
    that the fused kernel applies (contiguous CPU ``x`` ``(N, in)`` and ``weight_rows``
    ``(in, out)`` of one dtype, float32 or float64, nothing needing a gradient) and keeps them
    so: ``(out, active)``, or ``None`` while the fused kernels are disabled
    (:func:`pysnn.native.set_enabled`)."""
    if not kernels_available():
        return None
    return native._linear_event(x, weight_rows)


class _EventProduct(torch.autograd.Function):
    """``x @ weight_rows`` through the fused event-driven kernels, forward and backward,
    differentiable in ``weight_rows`` (a transposed view of a row-major weight), not in ``x``.

    Forward: the product over the non-zero inputs of ``x``, reading the row-major weight itself
    (each block transposed in cache: no copy of the weight, see
    :func:`pysnn.native.linear_event_rows`). Backward: the weight gradient ``x^T @ grad`` is the same event-driven
    product with ``x^T`` as input (only the non-zero inputs add their rows of ``grad``), cost
    ``~ active * out`` instead of ``N * in * out``.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight_rows: torch.Tensor, counted: list
    ) -> torch.Tensor:
        out, counted[0] = native.linear_event_rows(x, weight_rows.t())
        ctx.save_for_backward(x)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        grad_rows, _ = native._linear_event(native.transposed(x), grad.contiguous())
        return None, grad_rows, None


def delay_queue_step(
    queue: torch.Tensor,
    spikes: torch.Tensor,
    weight_rows: torch.Tensor,
    delay_rows: torch.Tensor,
    *,
    event_driven: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""One step of propagation with a delay per synapse, through a queue of future input.

    Each presynaptic input emitted now, :math:`x_j`, adds :math:`w_{ij} x_j` to the input that
    arrives at postsynaptic unit :math:`i` in :math:`d_{ij}` steps (the weight at emission is
    applied). Then the input arriving now is taken out and the queue advances by one step.

    Args:
        queue: ``(B, L, out)`` synaptic input in flight (mV); ``queue[:, k]`` arrives ``k`` steps
            from now. ``L`` must exceed every delay.
        spikes: presynaptic input emitted now ``(B, in)``.
        weight_rows: presynaptic-major weight ``(in, out)`` (``weight.t()``, mV per unit of
            input; contiguous is fastest).
        delay_rows: ``(in, out)`` int64 delays in steps, ``delay_rows[j, i] = d_ij``, ``< L``.
        event_driven: scatter only the non-zero inputs (``torch.nonzero``: a host sync on GPU);
            else scatter every input (no sync, cost ~ ``B * in * out``).

    Returns:
        ``(arriving, queue)``: the input arriving now ``(B, out)`` (mV), and the advanced queue
        ``(B, L, out)`` (a new tensor; differentiable in ``spikes`` and ``weight_rows``).
    """
    n_batch, length, n_out = queue.shape
    n_in = spikes.shape[1]
    if event_driven:
        batch, pre = spikes.nonzero(as_tuple=True)
    else:
        grid = torch.arange(n_batch * n_in, device=spikes.device)
        batch, pre = grid // n_in, grid % n_in
    values = weight_rows[pre] * spikes[batch, pre].unsqueeze(1)  # (events, out)
    slots = delay_rows[pre]  # (events, out)
    post = torch.arange(n_out, device=spikes.device)
    flat = (batch.unsqueeze(1) * length + slots) * n_out + post
    queue = queue.reshape(-1).index_add(0, flat.reshape(-1), values.reshape(-1))
    queue = queue.view(n_batch, length, n_out)
    arriving = queue[:, 0]
    return arriving, torch.cat((queue[:, 1:], torch.zeros_like(queue[:, :1])), dim=1)
