r"""Pure tensor functions behind :mod:`pysnn.learning`: correlations, traces, weight dependence.

Every synaptic update of the trace-based rules is a sum over the batch (and, for convolutions, over
output positions) of an outer product of a *postsynaptic* term and a *presynaptic* term:

.. math:: C_{ij} = \sum_b u_{b,i}\, v_{b,j} \qquad \text{(Linear)}

e.g. ``u`` = postsynaptic spikes and ``v`` = presynaptic trace for potentiation. For a
``Linear`` with one shared delay that is one ``(out, B) @ (B, in)`` matrix product, never a dense
``(B, out, in)`` tensor; with per-synapse delays the presynaptic term is ``(B, out, in)`` (what
arrives at each synapse). For a ``Conv2d`` it is exactly the weight gradient of the convolution
(:func:`torch.nn.grad.conv2d_weight`, i.e. im2col of the presynaptic term against the postsynaptic
term).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from pysnn import backends, native

__all__ = [
    "linear_correlation",
    "conv2d_correlation",
    "conv2d_patches",
    "explicit_padding",
    "trace_update",
    "soft_bound_factors",
    "pair_stdp_window",
    "stdp_rows_update",
    "stdp_rows_kernel",
    "triplet_kernel",
]

IntPair = Union[int, Tuple[int, int]]


def _pair(value: IntPair) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def linear_correlation(
    post: torch.Tensor, pre: torch.Tensor, per_sample: bool = False
) -> torch.Tensor:
    r"""Batch-summed outer product of a postsynaptic and a presynaptic term.

    Args:
        post: ``(B, out)``.
        pre: ``(B, in)`` (shared delay) or ``(B, out, in)`` (per-synapse delays).
        per_sample: keep the batch dimension instead of summing over it.

    Returns:
        ``(out, in)`` with :math:`C_{ij} = \sum_b post_{bi}\, pre_{b(i)j}`, or ``(B, out, in)``
        without the sum when ``per_sample``.
    """
    if pre.dim() == 2:
        if per_sample:
            return post.unsqueeze(2) * pre.unsqueeze(1)
        return post.t() @ pre
    if per_sample:
        return post.unsqueeze(2) * pre
    return torch.einsum("bo,boi->oi", post, pre)


def explicit_padding(
    padding: Union[str, IntPair],
    kernel_size: IntPair,
    dilation: IntPair,
) -> Tuple[int, int, int, int]:
    """Padding of a convolution as ``(left, right, top, bottom)`` ints (``F.pad`` order).

    ``padding`` may be ints or ``torch``'s strings ``"valid"``/``"same"``; ``"same"`` puts the odd
    extra row/column on the right/bottom, as ``torch.nn.functional.conv2d`` does.
    """
    kh, kw = _pair(kernel_size)
    dh, dw = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        raise ValueError(f"padding must be an int pair, 'valid' or 'same', got {padding!r}")
    ph, pw = _pair(padding)
    return (pw, pw, ph, ph)


def _padded(
    x: torch.Tensor, pad: Tuple[int, int, int, int]
) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad ``x`` explicitly when the padding is asymmetric; else return the symmetric padding."""
    left, right, top, bottom = pad
    if left == right and top == bottom:
        return x, (top, left)
    return F.pad(x, pad), (0, 0)


def conv2d_correlation(
    post: torch.Tensor,
    pre: torch.Tensor,
    weight_shape: Sequence[int],
    stride: IntPair = 1,
    padding: Union[str, IntPair] = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    per_sample: bool = False,
) -> torch.Tensor:
    r"""Batch- and position-summed correlation of a convolution's post- and presynaptic terms.

    .. math:: C_{o,c,k_h,k_w} = \sum_{b,y,x} post_{b,o,y,x}\;
              pre_{b,\,g(o) C_g + c,\; y s_h + k_h d_h - p_h,\; x s_w + k_w d_w - p_w}

    (zero outside the input), i.e. the weight gradient of ``F.conv2d(pre, w, ...)`` for the output
    gradient ``post``.

    Args:
        post: ``(B, C_out, H_out, W_out)``.
        pre: ``(B, C_in, H, W)``.
        weight_shape: ``(C_out, C_in / groups, kH, kW)``.
        stride, padding, dilation, groups: as ``torch.nn.Conv2d`` (``padding`` may be a string).
        per_sample: keep the batch dimension: returns ``(B, *weight_shape)``.

    Returns:
        ``weight_shape`` (or ``(B, *weight_shape)``).
    """
    weight_shape = tuple(int(s) for s in weight_shape)
    pad = explicit_padding(padding, weight_shape[2:], dilation)
    pre, sym = _padded(pre, pad)
    if not per_sample:
        return torch.nn.grad.conv2d_weight(
            pre, weight_shape, post, _pair(stride), sym, _pair(dilation), groups
        )
    # One group per sample: the batch becomes channel groups of a single "sample".
    batch = pre.shape[0]
    big = torch.nn.grad.conv2d_weight(
        pre.reshape(1, -1, *pre.shape[2:]),
        (batch * weight_shape[0], *weight_shape[1:]),
        post.reshape(1, -1, *post.shape[2:]),
        _pair(stride),
        sym,
        _pair(dilation),
        groups * batch,
    )
    return big.view(batch, *weight_shape)


def conv2d_patches(
    pre: torch.Tensor,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Union[str, IntPair] = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Receptive-field patches (im2col) of ``pre`` ``(B, C_in, H, W)``.

    Returns:
        ``(B, groups, C_in / groups * kH * kW, L)`` with ``L = H_out * W_out``; the middle dimension
        is ordered like a flattened ``(C_in / groups, kH, kW)`` kernel.
    """
    pad = explicit_padding(padding, kernel_size, dilation)
    pre = F.pad(pre, pad) if any(pad) else pre
    cols = F.unfold(pre, _pair(kernel_size), dilation=_pair(dilation), stride=_pair(stride))
    return cols.view(pre.shape[0], groups, -1, cols.shape[-1])


def trace_update(
    trace: torch.Tensor, spikes: torch.Tensor, decay: float, scale: float, nearest: bool = False
) -> torch.Tensor:
    r"""One step of a synaptic trace: decay, then add (all-to-all) or reset (nearest spike).

    :math:`x \leftarrow x\, e^{-dt/\tau}`, then :math:`x \leftarrow x + a\,s` (``nearest=False``)
    or :math:`x \leftarrow a` where :math:`s = 1` (``nearest=True``). ``decay`` is
    :math:`e^{-dt/\tau}`, ``scale`` is :math:`a`. Shapes: ``trace`` and ``spikes`` broadcast.
    """
    decayed = trace * decay
    if nearest:
        return torch.where(spikes > 0, torch.full_like(decayed, scale), decayed)
    return decayed + scale * spikes


def soft_bound_factors(
    weight: torch.Tensor, wmin: float, wmax: float, mode: str, mu: float = 1.0
) -> Tuple[Union[torch.Tensor, float], Union[torch.Tensor, float]]:
    r"""Weight-dependence factors ``(f_plus, f_minus)`` multiplying potentiation and depression.

    - ``"soft"`` (Gütig et al. 2003, :math:`\mu = 1`: Kistler & van Hemmen's multiplicative soft
      bounds): :math:`f_+ = (w_{max} - w)^\mu`, :math:`f_- = (w - w_{min})^\mu` (bases clipped at 0).
    - ``"multiplicative"`` (van Rossum et al. 2000): :math:`f_+ = 1`,
      :math:`f_- = w - w_{min}` (clipped at 0).
    - ``"none"``: both 1.
    """
    if mode == "soft":
        f_plus = (wmax - weight).clamp_min(0.0)
        f_minus = (weight - wmin).clamp_min(0.0)
        if mu != 1.0:
            f_plus, f_minus = f_plus.pow(mu), f_minus.pow(mu)
        return f_plus, f_minus
    if mode == "multiplicative":
        return 1.0, (weight - wmin).clamp_min(0.0)
    if mode == "none":
        return 1.0, 1.0
    raise ValueError(f"mode must be 'soft', 'multiplicative' or 'none', got {mode!r}")


def pair_stdp_window(
    delta_t: torch.Tensor,
    nu_pre: float,
    nu_post: float,
    tau_pre: float,
    tau_post: float,
    scale_pre: float = 1.0,
    scale_post: float = 1.0,
) -> torch.Tensor:
    r"""Closed-form window of :class:`pysnn.learning.STDP` for one pre/post spike pair.

    With :math:`\Delta t = t_{post} - t_{pre}` (ms, the presynaptic time being the *arrival* at the
    synapse):

    .. math::

        \Delta w = \begin{cases}
            \nu_{post}\, a_{pre}\, e^{-\Delta t/\tau_{pre}} & \Delta t > 0 \\
            -\nu_{pre}\, a_{post}\, e^{\Delta t/\tau_{post}} & \Delta t < 0 \\
            \nu_{post}\, a_{pre} - \nu_{pre}\, a_{post} & \Delta t = 0
        \end{cases}

    ``a`` are the neurons' ``trace_scale``. Returns a tensor shaped like ``delta_t``.
    """
    delta_t = torch.as_tensor(delta_t, dtype=torch.float64)
    pot = nu_post * scale_pre * torch.exp(-delta_t.clamp_min(0.0) / tau_pre)
    dep = nu_pre * scale_post * torch.exp(delta_t.clamp_max(0.0) / tau_post)
    zero = torch.zeros_like(delta_t)
    return torch.where(delta_t >= 0, pot, zero) - torch.where(delta_t <= 0, dep, zero)


def stdp_rows_update(
    s_post: torch.Tensor,
    x_post: torch.Tensor,
    pre_trace: torch.Tensor,
    arriving: torch.Tensor,
    pot: float,
    dep: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Pair-STDP change of one sample, for the rows that can change: ``(rows, dw)``.

    ``rows`` are the postsynaptic units that spiked or have a non-zero trace (the others get
    :math:`\Delta w = 0`), ``dw`` ``(len(rows), in)`` is
    :math:`\Delta w_{ij} = pot \cdot s_i \cdot x^{pre}_j + dep \cdot x^{post}_i \cdot a_j`, computed
    as ``addcmul(outer(s * pot, pre_trace), x_post * dep, arriving)`` (the operations
    :func:`pysnn.native.stdp_rows_` performs in one fused pass, with the same rounding).

    Args:
        s_post, x_post: postsynaptic spikes and trace ``(out,)``.
        pre_trace, arriving: presynaptic trace and arriving spikes ``(in,)``.
        pot, dep: the rates of the two terms (``dep`` negative for depression).
    """
    rows = (x_post.ne(0) | s_post.ne(0)).nonzero().squeeze(1)
    p = (s_post * pot).index_select(0, rows)
    q = (x_post * dep).index_select(0, rows)
    return rows, torch.addcmul(torch.outer(p, pre_trace), q.unsqueeze(1), arriving.unsqueeze(0))


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
    """One sample's pair-STDP update of :func:`stdp_rows_update` applied to ``weight`` in place
    (and to ``copy``, its contiguous transpose) in one fused pass: the number of rows changed,
    or ``None`` (nothing done) where no backend applies (:func:`pysnn.backends.select`;
    :func:`pysnn.native.stdp_rows_` on the CPU).
    """
    backend = backends.select("stdp_rows_", weight, copy, s_post, x_post, pre_trace, arriving)
    if backend is None:
        return None
    return backend.stdp_rows_(weight, copy, s_post, x_post, pre_trace, arriving, pot, dep, bounds)


#: this thread's one-sample rule kernels by (kind, shape, dtype, backend preference, constants)
_kernels = threading.local()
#: most kernels kept per thread (all are dropped when it is reached)
MAX_KERNELS = 64


def _kernel(key: tuple, make: Callable[[], Any]) -> Any:
    """The kernel ``make()`` gives for ``key``, made once per thread (a kernel holds scratch
    memory that one call uses at a time) and kept by its key: a kernel is a pure function of
    the weight's shape and dtype, its constants and the backend preference, all in ``key``, so
    nothing can make a kept one stale. ``None`` (nothing kept) where ``make`` gives none."""
    kept = getattr(_kernels, "table", None)
    if kept is None:
        kept = _kernels.table = {}
    kernel = kept.get(key)
    if kernel is None:
        kernel = make()
        if kernel is not None:
            if len(kept) >= MAX_KERNELS:
                kept.clear()
            kept[key] = kernel
    return kernel


def _weight_key(weight: torch.Tensor) -> Optional[tuple]:
    """``(shape, dtype, backend preference)`` of a contiguous 2-D CPU ``weight``, else ``None``."""
    if weight.dim() != 2 or not weight.is_cpu or not weight.is_contiguous():
        return None
    return (weight.shape, weight.dtype, backends.preference())


def stdp_rows_kernel(weight: torch.Tensor) -> Optional["native.STDPRowsKernel"]:
    """A fused in-place :func:`stdp_rows_update` plus row update for ``weight`` ``(out, in)``:
    ``kernel(weight, copy, s_post, x_post, pre_trace, arriving, pot, dep, bounds)`` (see
    :func:`pysnn.native.stdp_rows_`, whose checks the caller makes; it does nothing and
    returns ``None`` while the kernels are switched off), or ``None`` where the fused kernels
    do not apply. Kept per thread by shape, dtype and backend preference."""
    key = _weight_key(weight)
    if key is None:
        return None
    return _kernel(
        ("stdp", *key),
        lambda: native.stdp_rows_kernel(weight) if backends.accepts("c", weight) else None,
    )


def triplet_kernel(
    weight: torch.Tensor, amplitudes: Sequence[float], decays: Sequence[float], nearest: bool
) -> Optional["native.TripletKernel"]:
    """A fused in-place step of one-sample triplet STDP for ``weight`` ``(out, in)``:
    ``kernel(weight, copy, s_post, arriving, (r1, r2, o1, o2), bounds)`` advances the four
    traces in place and applies the clamped update of :class:`pysnn.learning.TripletSTDP`
    (without weight dependence) to the weight and its transposed ``copy``, bit for bit (see
    :class:`pysnn.native.TripletKernel`, whose checks the caller makes); ``None`` where the
    fused kernels do not apply. Kept per thread by shape, dtype, backend preference and
    constants.

    Args:
        weight: the ``(out, in)`` weight.
        amplitudes: ``(a2_plus, a3_plus, a2_minus, a3_minus)``.
        decays: decay factors per step of ``(r1, o1, r2, o2)``.
        nearest: nearest-spike traces instead of all-to-all.
    """
    key = _weight_key(weight)
    if key is None:
        return None
    return _kernel(
        ("triplet", *key, tuple(amplitudes), tuple(decays), bool(nearest)),
        lambda: (
            native.triplet_kernel(weight, amplitudes, decays, nearest)
            if backends.accepts("c", weight)
            else None
        ),
    )
