"""What the Triton kernels share: the block size, the parameter layout, the multiply-add rule.

Parameters arrive as the functional layer's tensors, broadcastable to the neuron shape; the
kernels read them as per-neuron rows of one contiguous ``(k, n)`` tensor (:func:`per_neuron`).
A product followed by a sum is written as one fused multiply-add exactly where torch's own
operation (``torch.addcmul``) rounds once on that device (:func:`fuses_multiply_add`), and the
kernels are compiled with ``enable_fp_fusion=False`` so that no other product and sum is fused:
each operation is rounded where torch rounds it.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

__all__ = ["BLOCK", "LAUNCH", "fuses_multiply_add", "per_neuron"]

#: Elements (sample x neuron) per program of the element-wise kernels.
BLOCK = 256

#: Launch options of every kernel (ignored by Triton's interpreter): no floating-point
#: contraction beyond the explicit ``tl.fma`` calls.
LAUNCH = {"num_warps": 4, "enable_fp_fusion": False}

_FUSES: Dict[torch.device, bool] = {}


def fuses_multiply_add(device: torch.device) -> bool:
    """Whether ``torch.addcmul`` rounds ``c + a * b`` once (a fused multiply-add) on ``device``,
    measured once per device on 256 random float32 values (as :mod:`pysnn.native` measures it
    for its own build): its vectorised CPU kernels fuse on AVX2/AVX-512 and ARM, its CUDA kernel
    where ``nvcc`` contracts ``a + b * c`` (the default)."""
    fused = _FUSES.get(device)
    if fused is None:
        g = torch.Generator().manual_seed(0)
        a, b, c = (torch.randn(256, generator=g).to(device) for _ in range(3))
        once = (a.double() * b.double() + c.double()).float()  # the exact product, one rounding
        result = torch.addcmul(c, a, b)
        fused = int((result == once).sum()) > int((result == a * b + c).sum())
        _FUSES[device] = fused
    return fused


def per_neuron(
    values: Sequence[torch.Tensor], dtype: torch.dtype, shape: torch.Size, device: torch.device
) -> Optional[torch.Tensor]:
    """The parameters ``values`` as the rows of one contiguous ``(len(values), n)`` tensor
    (``n`` neurons of ``shape``, in the order of the state's memory), or ``None`` if one is not
    of ``dtype`` on ``device``.

    A parameter of ``n`` values is read in its own order (as :mod:`pysnn.native` reads it);
    any other is broadcast to ``shape``. A copy made now: in-place edits of the parameters
    after the call are not seen by this copy (each kernel call makes its own).
    """
    rows = []
    for t in values:
        if t.dtype != dtype or t.device != device:
            return None
        t = t.detach()
        rows.append(t.reshape(shape) if t.numel() == shape.numel() else t.broadcast_to(shape))
    return torch.stack(rows).reshape(len(rows), shape.numel())
