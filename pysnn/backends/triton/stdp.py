"""One sample's pair-STDP update of a weight matrix, in place, as a Triton kernel
(:func:`pysnn.native.stdp_rows_`'s contract).

For each postsynaptic row ``i`` that spiked or has a trace (``s_post[i] != 0 or x_post[i] !=
0``) and each column ``j``::

    w[i, j] = clamp(w[i, j] + fma(x_post[i] * dep, arriving[j], (s_post[i] * pot) * pre_trace[j]))

the operations of :func:`pysnn.functional.plasticity.stdp_rows_update` followed by the row
update (``outer``, then ``addcmul``, then the sum and the clamp), with the ``addcmul`` a fused
multiply-add where torch's is one on the device (see
:func:`~pysnn.backends.triton.common.fuses_multiply_add`); the other rows are not written. A
program updates a tile of :data:`ROWS` x :data:`COLS` weights (and the same values into the
transposed copy).

The number of rows changed is counted with torch before the launch: one host synchronisation
per call on a GPU (the torch path, whose ``nonzero`` selects the rows, synchronises too). A call
that changes no row launches nothing.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from pysnn.backends import stdp_rows_fit
from pysnn.backends.triton.common import LAUNCH, fuses_multiply_add

__all__ = ["ROWS", "COLS", "stdp_rows_"]

#: Rows and columns of the tile of weights one program updates.
ROWS, COLS = 16, 64


@triton.jit
def _stdp_rows(
    w_ptr,
    wt_ptr,
    s_ptr,
    xp_ptr,
    tr_ptr,
    a_ptr,
    c_ptr,
    n_out,
    n_in,
    HAS_COPY: tl.constexpr,
    BOUNDED: tl.constexpr,
    FMA: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    """The update of one tile of weights (rows of ``pid 0``, columns of ``pid 1``)."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1).to(tl.int64) * COLS + tl.arange(0, COLS)
    in_rows, in_cols = rows < n_out, cols < n_in
    s = tl.load(s_ptr + rows, mask=in_rows, other=0.0)
    xp = tl.load(xp_ptr + rows, mask=in_rows, other=0.0)
    pot_rate = tl.load(c_ptr)
    dep_rate = tl.load(c_ptr + 1)
    active = (s != 0) | (xp != 0)
    p = s * pot_rate
    q = xp * dep_rate
    tr = tl.load(tr_ptr + cols, mask=in_cols)
    a = tl.load(a_ptr + cols, mask=in_cols)
    pot = p[:, None] * tr[None, :]  # torch.outer(p, pre_trace)
    if FMA:
        dw = tl.fma(q[:, None], a[None, :], pot)  # torch.addcmul(pot, q, arriving)
    else:
        dw = q[:, None] * a[None, :] + pot
    mask = active[:, None] & in_cols[None, :]
    w_at = w_ptr + rows[:, None] * n_in + cols[None, :]
    w = tl.load(w_at, mask=mask) + dw
    if BOUNDED:
        lo = tl.load(c_ptr + 2)
        hi = tl.load(c_ptr + 3)
        w = tl.where(w < lo, lo, tl.where(w > hi, hi, w))
    tl.store(w_at, w, mask=mask)
    if HAS_COPY:
        tl.store(wt_ptr + cols[None, :] * n_out + rows[:, None], w, mask=mask)


def stdp_rows_(
    weight: torch.Tensor,
    copy: Optional[torch.Tensor],
    s_post: torch.Tensor,
    x_post: torch.Tensor,
    pre_trace: torch.Tensor,
    arriving: torch.Tensor,
    pot: float,
    dep: float,
    bounds: Optional[Tuple[float, float]],
) -> Optional[int]:
    """Pair-STDP of one sample applied to ``weight`` ``(out, in)`` in place, and to ``copy``
    (its contiguous transpose ``(in, out)``) when given; returns the number of rows changed, or
    ``None`` (nothing done) where the shapes do not fit.

    ``s_post``, ``x_post`` ``(out,)``: postsynaptic spikes and trace; ``pre_trace``,
    ``arriving`` ``(in,)``: presynaptic trace and arriving spikes; ``pot``, ``dep``: the rates
    (``dep`` negative for depression); ``bounds``: ``(lo, hi)`` to clamp to, or ``None``. All
    tensors contiguous, on one device, of one dtype (check :func:`pysnn.backends.triton.usable`
    first). The count synchronises with the device (see the module).
    """
    if not stdp_rows_fit(weight, copy, s_post, x_post, pre_trace, arriving):
        return None
    n_out, n_in = weight.shape
    changed = int(torch.count_nonzero((s_post != 0) | (x_post != 0)))
    if changed:
        lo, hi = bounds if bounds is not None else (0.0, 0.0)
        # the rates and bounds rounded to the dtype as the C kernels round them, (T)(double)
        constants = torch.tensor([pot, dep, lo, hi], dtype=weight.dtype, device=weight.device)
        grid = (triton.cdiv(n_out, ROWS), triton.cdiv(n_in, COLS))
        _stdp_rows[grid](
            weight,
            copy,
            s_post,
            x_post,
            pre_trace,
            arriving,
            constants,
            n_out,
            n_in,
            HAS_COPY=copy is not None,
            BOUNDED=bounds is not None,
            FMA=fuses_multiply_add(weight.device),
            ROWS=ROWS,
            COLS=COLS,
            **LAUNCH,
        )
        torch.autograd.graph.increment_version(weight)
    return changed
