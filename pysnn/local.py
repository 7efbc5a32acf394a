r"""Local connectivity: a locally connected 2-D layer with unshared weights.

:class:`LocalConnection2d` is BindsNET's ``LocalConnection``: like a convolution, each output
neuron sees one ``kH x kW`` window (all input channels) of the input image, but **every output
position of every output channel has a kernel of its own** (no weight sharing). With input
spikes :math:`s_{c, y, x}` of ``C_in`` channels on an ``H x W`` grid, kernel ``(kH, kW)`` and
stride ``(sH, sW)``, output neuron :math:`(o, h, w)` receives

.. math::

    I_{o, h, w}(t) = \sum_{c < C_{in}} \sum_{i < kH} \sum_{j < kW}
        w_{o, h, w, c, i, j}\; s_{c,\, h s_H + i,\, w s_W + j}(t - d)

with one shared delay :math:`d`, on an ``H_out x W_out`` grid, :math:`H_{out} = \lfloor (H - kH)
/ s_H \rfloor + 1` (likewise :math:`W_{out}`). This is a dense ``Linear`` from the ``C_in * H * W``
inputs to the ``C_out * H_out * W_out`` outputs whose weight is zero outside the receptive fields
(tested), but only the ``C_out * H_out * W_out * C_in * kH * kW`` local synapses are stored
(BindsNET stores the whole dense matrix and a mask).

**Learning**: the rules of :mod:`pysnn.learning` train it as they would the masked dense
``Linear``, on the local synapses only (:meth:`LocalConnection2d.correlate`, the hook
:class:`~pysnn.sparse.SparseLinear` uses too).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from pysnn.connection import Connection, DelayLike

__all__ = ["LocalConnection2d"]

IntPair = Union[int, Tuple[int, int]]


def _positive_pair(name: str, value: Any) -> Tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair


class LocalConnection2d(Connection):
    r"""Locally connected 2-D connection (unshared weights), BindsNET's ``LocalConnection``.

    ``forward(spikes)``: ``(B, C_in, H, W)`` → ``(B, C_out, H_out, W_out)`` synaptic input (mV)
    arriving this step (equation in :mod:`pysnn.local`): the input's ``kH x kW`` patches (one
    gather) times each output neuron's own kernel, one batched product per step (cost ``B``
    times the number of local synapses; differentiable).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out`` (BindsNET's ``n_filters``).
        input_size: ``(H, W)`` of the input (an int for a square); fixed, since every output
            position has its own weights.
        kernel_size: ``(kH, kW)`` (or an int), at most the input size.
        stride: ``(sH, sW)`` (or an int), default 1. No padding (as BindsNET).
        dt: time step (ms).
        delay: one synaptic delay for all synapses (ms), >= 0, rounded to steps of ``dt``.
        wmin, wmax: weight bounds (mV per unit of input), as for
            :class:`~pysnn.connection.Linear`.
        init, init_kwargs: weight initialisation, as for :class:`~pysnn.connection.Linear`;
            fans are those of one output neuron's kernel (fan-in ``C_in * kH * kW``). Default
            ``"uniform"`` on ``[0, 1)`` (BindsNET's ``rand``); with finite bounds a uniform draw
            is restricted to them.
        device, dtype: of the weight.

    Attributes:
        weight: ``(C_out * H_out * W_out, C_in, kH, kW)`` ``nn.Parameter``: row
            ``(o * H_out + h) * W_out + w`` is the kernel of output neuron ``(o, h, w)`` (the
            flattened output index), its entry ``(c, i, j)`` the synapse from input pixel
            ``(c, h * sH + i, w * sW + j)``. Dim 0 is the postsynaptic neuron, so
            :meth:`~pysnn.connection.Connection.normalize`, bounds, ``apply_update_`` (with
            rows), pruning and parametrisations work as for ``Linear``.
        output_size: ``(H_out, W_out)``.
        field: ``(H_out * W_out, C_in * kH * kW)`` int64, the flat input index (into ``C_in * H *
            W``) of each kernel entry at each output position (not in ``state_dict``).
        n_synapses: number of synapses (``weight.numel()``).

    Memory: one weight per local synapse (4 bytes in float32), plus the ``8 * H_out * W_out *
    C_in * kH * kW`` bytes of :attr:`field` (``8 / C_out`` bytes per synapse), nothing dense;
    state per batch sample ``(max_delay + 1) * C_in * H * W`` history values with a delay.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: IntPair,
        kernel_size: IntPair,
        stride: IntPair = 1,
        dt: float = 1.0,
        delay: DelayLike = 0.0,
        *,
        wmin: float = -math.inf,
        wmax: float = math.inf,
        init: str = "uniform",
        init_kwargs: Optional[Dict[str, Any]] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        height, width = _positive_pair("input_size", input_size)
        k_h, k_w = _positive_pair("kernel_size", kernel_size)
        s_h, s_w = _positive_pair("stride", stride)
        if k_h > height or k_w > width:
            raise ValueError(
                f"kernel_size {(k_h, k_w)} must fit in the input_size {(height, width)}"
            )
        out_h, out_w = (height - k_h) // s_h + 1, (width - k_w) // s_w + 1
        super().__init__(
            (in_channels, height, width),
            (out_channels, out_h, out_w),
            dt,
            delay,
            wmin=wmin,
            wmax=wmax,
            init=init,
            init_kwargs=init_kwargs,
            device=device,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size, self.output_size = (height, width), (out_h, out_w)
        self.kernel_size, self.stride = (k_h, k_w), (s_h, s_w)
        # the input pixel (flat index into C_in * H * W) of each kernel entry at each position
        pixels = torch.arange(in_channels * height * width, dtype=torch.float64)
        field = F.unfold(pixels.view(1, in_channels, height, width), (k_h, k_w), stride=(s_h, s_w))
        self.register_buffer(
            "field", field[0].t().round().to(torch.int64).contiguous().to(device), persistent=False
        )
        n_post = out_channels * out_h * out_w
        self.weight = nn.Parameter(
            torch.empty(n_post, in_channels, k_h, k_w, device=device, dtype=dtype)
        )
        self.n_synapses = self.weight.numel()
        if init == "uniform":
            self.init_kwargs.setdefault("a", 0.0)
            self.init_kwargs.setdefault("b", 1.0)
        self.reset_parameters()

    # ------------------------------------------------------------------ propagation
    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The receptive fields of ``x`` ``(N, C_in, H, W)``: ``(N, H_out * W_out, C_in * kH *
        kW)``, row ``h * W_out + w`` the patch of output position ``(h, w)`` in the weight's
        ``(c, i, j)`` order (one gather through :attr:`field`)."""
        return x.reshape(x.shape[0], -1)[:, self.field]

    def propagate(self, arriving: torch.Tensor) -> torch.Tensor:
        """Synaptic input ``(N, C_out, H_out, W_out)`` (mV) of the spikes ``arriving``
        ``(N, C_in, H, W)``, with the effective ``weight``: for each output position one
        ``(N, K) @ (K, C_out)`` product of its patch with its kernels (one batched product, the
        weight read in place)."""
        kernels = self.weight.reshape(self.out_channels, self.field.shape[0], -1)  # (O, L, K)
        out = torch.bmm(self.patches(arriving).transpose(0, 1), kernels.permute(1, 2, 0))
        return out.permute(1, 2, 0).reshape(arriving.shape[0], *self.out_shape)

    # ------------------------------------------------------------------ what learning reads
    def correlate(
        self, post: torch.Tensor, pre: torch.Tensor, per_sample: bool = False
    ) -> torch.Tensor:
        r"""The learning rules' correlation on the local synapses, in the weight's layout:
        :math:`C_{o h w, c i j} = \sum_b post_{b, o, h, w}\; pre_{b, c, h s_H + i, w s_W + j}`,
        ``weight.shape`` (``(B, *weight.shape)`` with ``per_sample``): the entries of the dense
        ``post ⊗ pre`` at the existing synapses.

        Args:
            post: ``(B, C_out, H_out, W_out)`` postsynaptic term.
            pre: ``(B, C_in, H, W)`` presynaptic term (as :meth:`arriving_spikes`).
        """
        out_shape, in_shape = tuple(self.out_shape), tuple(self.in_shape)
        if (
            post.dim() != 4
            or pre.dim() != 4
            or tuple(post.shape[1:]) != out_shape
            or tuple(pre.shape[1:]) != in_shape
            or post.shape[0] != pre.shape[0]
        ):
            raise ValueError(
                f"correlate needs post (B, {', '.join(map(str, out_shape))}) and pre "
                f"(B, {', '.join(map(str, in_shape))}), got {tuple(post.shape)} and "
                f"{tuple(pre.shape)}"
            )
        batch = post.shape[0]
        post = post.reshape(batch, self.out_channels, -1)  # (B, O, L)
        patches = self.patches(pre)  # (B, L, K)
        if per_sample:
            out = post.unsqueeze(-1) * patches.unsqueeze(1)
            return out.reshape(batch, *self.weight.shape)
        out = torch.bmm(post.permute(2, 1, 0), patches.transpose(0, 1))  # (L, O, K)
        return out.transpose(0, 1).reshape(self.weight.shape)

    # ------------------------------------------------------------------ dense view
    def synapse_indices(self) -> torch.Tensor:
        """``(2, n_synapses)`` int64 (postsynaptic, presynaptic) flat indices of every synapse,
        in the order of ``weight.view(-1)``: into ``C_out * H_out * W_out`` and ``C_in * H * W``."""
        n_post, field = self.weight.shape[0], self.field
        pre = field.reshape(-1).repeat(self.out_channels)
        post = torch.arange(n_post, device=field.device).repeat_interleave(field.shape[1])
        return torch.stack((post, pre))

    def to_dense(self) -> torch.Tensor:
        """The ``(C_out * H_out * W_out, C_in * H * W)`` dense weight of the equivalent
        :class:`~pysnn.connection.Linear` (zeros outside the receptive fields)."""
        post, pre = self.synapse_indices()
        dense = self.weight.new_zeros(self.weight.shape[0], math.prod(self.in_shape))
        return dense.index_put((post, pre), self.weight.reshape(-1))

    def mask(self) -> torch.Tensor:
        """``(C_out * H_out * W_out, C_in * H * W)`` 0/1 mask of the existing synapses, in the
        weight's dtype."""
        post, pre = self.synapse_indices()
        dense = self.weight.new_zeros(self.weight.shape[0], math.prod(self.in_shape))
        return dense.index_put_((post, pre), dense.new_ones(()))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, "
            f"output_size={self.output_size}, dt={self.dt}, "
            f"delay={self._shared_delay * self.dt} ms, wmin={self.wmin}, wmax={self.wmax}"
        )
