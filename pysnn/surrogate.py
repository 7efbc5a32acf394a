r"""Spike functions with surrogate gradients, for training spiking networks with backpropagation.

Every neuron emits :math:`s = H(x)` with the Heaviside step :math:`H(x) = 1` if :math:`x \ge 0`
else 0, applied to the distance above threshold :math:`x = v - v_{th}` (mV). Its true derivative
is zero almost everywhere, so backpropagation through time replaces it by a *surrogate*
:math:`\partial s / \partial x := \sigma'(x)`, a bump centred on the threshold. The forward value
is **always the exact step**; only the backward pass changes.

Pass an instance to a neuron: ``LIFNeuron(100, surrogate=FastSigmoid(scale=5.0))``. Each object is
a callable ``surrogate(x) -> spikes`` (same shape and dtype as ``x``, values 0/1), implemented as a
:class:`torch.autograd.Function` with ``setup_context``, so it works in float32 and float64, under
``torch.compile`` and ``torch.func`` transforms.

============================  ===========================================================  ======
class                         surrogate derivative :math:`\sigma'(x)`                      peak
============================  ===========================================================  ======
:class:`FastSigmoid` (k)      :math:`1 / (k|x| + 1)^2` (SuperSpike, Zenke & Ganguli 2018)   1
:class:`ArcTan` (k)           :math:`\frac{k}{2} / (1 + (\frac{\pi}{2} k x)^2)`             k/2
:class:`Sigmoid` (k)          :math:`k\, \mathrm{sig}(kx) (1 - \mathrm{sig}(kx))`          k/4
:class:`Triangle` (w)         :math:`\max(0, 1 - |x| / w)` (Bellec et al. 2018)            1
:class:`StraightThrough` (w)  :math:`1` where :math:`|x| \le w`, else 0 (``w = inf``: 1)   1
============================  ===========================================================  ======

Units: ``x`` is in mV, so ``scale`` :math:`k` is in 1/mV and ``width`` :math:`w` in mV. The
defaults suit neurons whose threshold is about 1 mV above reset (normalised units, e.g.
``thresh=1, v_rest=0, v_reset=0``); for the biological defaults of :class:`~pysnn.neuron.LIFNeuron`
(13 mV between rest and threshold) use a ~10x smaller ``scale`` or a ~10x larger ``width``.

Each surrogate derivative is the exact derivative of a smooth sigmoid-like relaxation of the step
(listed in each class), which is what the tests check with finite differences.

Gradient through the reset (:func:`~pysnn.functional.spike.reset_membrane`, re-exported here):
``v <- v_reset`` where a neuron fired is written so the forward value is exact while the gradient
is that of
:math:`v \leftarrow (1 - s) v + s\, v_{reset}`, unless the reset is detached.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple, Type, Union

import torch

from pysnn.functional.spike import reset_membrane  # noqa: F401  (re-exported)

__all__ = [
    "Surrogate",
    "FastSigmoid",
    "SuperSpike",
    "ArcTan",
    "Sigmoid",
    "Triangle",
    "StraightThrough",
    "get",
    "reset_membrane",
    "DEFAULT",
]

Number = Union[int, float]


def _check_positive(name: str, value: Any, allow_inf: bool = False) -> float:
    """Return ``value`` as a float; ``TypeError`` unless a real number, ``ValueError`` unless > 0."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        allowed = "> 0 (inf allowed)" if allow_inf else "finite and > 0"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def _heaviside(x: torch.Tensor) -> torch.Tensor:
    return (x >= 0).to(x.dtype)


# ------------------------------------------------------------------------------------------------
# autograd Functions: forward = exact step, backward = closed-form surrogate derivative.
# Each takes the tensor and one Python float; ``setup_context`` keeps them compile-friendly.
# ------------------------------------------------------------------------------------------------
class _SpikeFunction(torch.autograd.Function):
    """Base: subclasses define the static ``derivative(x, param)``."""

    generate_vmap_rule = True

    @staticmethod
    def derivative(x: torch.Tensor, param: float) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def forward(x: torch.Tensor, param: float) -> torch.Tensor:
        return _heaviside(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[torch.Tensor, float], output: torch.Tensor) -> None:
        x, param = inputs
        ctx.save_for_backward(x)
        ctx.param = param


def _make_function(name: str, derivative: Callable[[torch.Tensor, float], torch.Tensor]) -> Type:
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_output * derivative(x, ctx.param), None

    return type(
        name,
        (_SpikeFunction,),
        {"derivative": staticmethod(derivative), "backward": staticmethod(backward)},
    )


def _fast_sigmoid_grad(x: torch.Tensor, k: float) -> torch.Tensor:
    return (k * x.abs() + 1.0).pow(-2)


def _arctan_grad(x: torch.Tensor, k: float) -> torch.Tensor:
    return (0.5 * k) / (1.0 + (0.5 * math.pi * k * x).square())


def _sigmoid_grad(x: torch.Tensor, k: float) -> torch.Tensor:
    sig = torch.sigmoid(k * x)
    return k * sig * (1.0 - sig)


def _triangle_grad(x: torch.Tensor, w: float) -> torch.Tensor:
    return (1.0 - x.abs() / w).clamp_min(0.0)


def _straight_through_grad(x: torch.Tensor, w: float) -> torch.Tensor:
    if math.isinf(w):
        return torch.ones_like(x)
    return (x.abs() <= w).to(x.dtype)


_FastSigmoidFn = _make_function("_FastSigmoidFn", _fast_sigmoid_grad)
_ArcTanFn = _make_function("_ArcTanFn", _arctan_grad)
_SigmoidFn = _make_function("_SigmoidFn", _sigmoid_grad)
_TriangleFn = _make_function("_TriangleFn", _triangle_grad)
_StraightThroughFn = _make_function("_StraightThroughFn", _straight_through_grad)


# ------------------------------------------------------------------------------------------------
# User-facing surrogate objects
# ------------------------------------------------------------------------------------------------
class Surrogate:
    """Base class: a callable spike function ``x -> H(x)`` with a surrogate backward.

    Subclasses set ``_function`` (an autograd Function) and ``_param_name``. Instances are
    immutable, compare equal when of the same class and parameter, and can be pickled.
    """

    _function: Type[_SpikeFunction]
    _param_name: str = "scale"
    _allow_inf: bool = False

    def __init__(self, param: Number) -> None:
        self._param = _check_positive(self._param_name, param, self._allow_inf)

    @property
    def param(self) -> float:
        """The shape parameter (``scale`` in 1/mV or ``width`` in mV)."""
        return self._param

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes ``H(x)``: 0/1 in ``x``'s dtype and shape; backward uses :meth:`grad`.

        Args:
            x: distance above threshold ``v - v_th`` (mV), floating point, any shape.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        return self._function.apply(x, self._param)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative :math:`\\sigma'(x)` itself (no autograd), same shape as ``x``."""
        return self._function.derivative(x, self._param)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._param_name}={self._param!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._param == self._param  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._param))


class FastSigmoid(Surrogate):
    r"""SuperSpike / fast-sigmoid surrogate (Zenke & Ganguli 2018).

    .. math:: \sigma'(x) = \frac{1}{(k |x| + 1)^2},
        \qquad \text{relaxation } \sigma(x) = \frac{x}{1 + k|x|}

    (the "fast sigmoid", range :math:`\pm 1/k`, so the area under :math:`\sigma'` is :math:`2/k`).
    Peak 1 at threshold, half-height at :math:`|x| = (\sqrt 2 - 1)/k`.

    Args:
        scale: steepness :math:`k` (1/mV), > 0. Larger means a narrower gradient. Default 10.
    """

    #: the fused BPTT kernel computes this class's derivative itself (see
    #: :func:`pysnn.native.lif_backward`); a subclass goes through its ``grad``
    native_code = 1

    _function = _FastSigmoidFn

    def __init__(self, scale: Number = 10.0) -> None:
        super().__init__(scale)

    @property
    def scale(self) -> float:
        """Steepness :math:`k` (1/mV)."""
        return self._param


#: Alias: SuperSpike is the fast-sigmoid surrogate.
SuperSpike = FastSigmoid


class ArcTan(Surrogate):
    r"""Arctangent surrogate (Fang et al. 2021, as in SpikingJelly and snnTorch).

    .. math:: \sigma'(x) = \frac{k/2}{1 + (\frac{\pi}{2} k x)^2},
        \qquad \sigma(x) = \frac{1}{\pi}\arctan\left(\frac{\pi}{2} k x\right) + \frac{1}{2}

    Peak :math:`k/2` at threshold (1 with the default), total area 1.

    Args:
        scale: :math:`k` (1/mV), > 0. Default 2.
    """

    #: the fused BPTT kernel computes this class's derivative itself (see
    #: :func:`pysnn.native.lif_backward`); a subclass goes through its ``grad``
    native_code = 2

    _function = _ArcTanFn

    def __init__(self, scale: Number = 2.0) -> None:
        super().__init__(scale)

    @property
    def scale(self) -> float:
        """:math:`k` (1/mV)."""
        return self._param


class Sigmoid(Surrogate):
    r"""Logistic-sigmoid surrogate.

    .. math:: \sigma'(x) = k\, \mathrm{sig}(kx)\,(1 - \mathrm{sig}(kx)),
        \qquad \sigma(x) = \mathrm{sig}(kx) = \frac{1}{1 + e^{-kx}}

    Peak :math:`k/4` at threshold (1 with the default), total area 1.

    Args:
        scale: :math:`k` (1/mV), > 0. Default 4.
    """

    #: the fused BPTT kernel computes this class's derivative itself (see
    #: :func:`pysnn.native.lif_backward`); a subclass goes through its ``grad``
    native_code = 3

    _function = _SigmoidFn

    def __init__(self, scale: Number = 4.0) -> None:
        super().__init__(scale)

    @property
    def scale(self) -> float:
        """:math:`k` (1/mV)."""
        return self._param


class Triangle(Surrogate):
    r"""Triangular (piecewise-linear) surrogate (Bellec et al. 2018, Esser et al. 2016).

    .. math:: \sigma'(x) = \max\left(0,\ 1 - \frac{|x|}{w}\right)

    Peak 1 at threshold, zero for :math:`|x| \ge w`, area :math:`w`. Relaxation: the piecewise
    quadratic :math:`\sigma(x) = x - x|x|/(2w)` clipped at :math:`\pm w/2`.

    Args:
        width: half-width :math:`w` of the support (mV), > 0. Default 1.
    """

    #: the fused BPTT kernel computes this class's derivative itself (see
    #: :func:`pysnn.native.lif_backward`); a subclass goes through its ``grad``
    native_code = 4

    _function = _TriangleFn
    _param_name = "width"

    def __init__(self, width: Number = 1.0) -> None:
        super().__init__(width)

    @property
    def width(self) -> float:
        """Half-width :math:`w` (mV)."""
        return self._param


class StraightThrough(Surrogate):
    r"""Straight-through estimator (Bengio et al. 2013): the step's gradient is taken as 1.

    .. math:: \sigma'(x) = 1 \text{ where } |x| \le w, \text{ else } 0

    With the default ``width=inf`` the gradient is 1 everywhere (the identity's gradient);
    a finite ``width`` limits it to a window of :math:`\pm w` mV around the threshold (the
    relaxation is :math:`\mathrm{clamp}(x, -w, w)`).

    Args:
        width: half-width :math:`w` of the window (mV), > 0, ``math.inf`` allowed (default).
    """

    #: the fused BPTT kernel computes this class's derivative itself (see
    #: :func:`pysnn.native.lif_backward`); a subclass goes through its ``grad``
    native_code = 5

    _function = _StraightThroughFn
    _param_name = "width"
    _allow_inf = True

    def __init__(self, width: Number = math.inf) -> None:
        super().__init__(width)

    @property
    def width(self) -> float:
        """Half-width :math:`w` of the window (mV); ``inf`` for none."""
        return self._param


_BY_NAME: Dict[str, Type[Surrogate]] = {
    "fast_sigmoid": FastSigmoid,
    "superspike": FastSigmoid,
    "arctan": ArcTan,
    "sigmoid": Sigmoid,
    "triangle": Triangle,
    "straight_through": StraightThrough,
}


#: The surrogate spiking neurons use unless given ``surrogate=``: a fast sigmoid with
#: :math:`k = 1` /mV, whose derivative falls to 1/4 at 1 mV from threshold and to 1/196 at 13 mV
#: (the gap between rest and threshold of :class:`~pysnn.neuron.LIFNeuron`'s biological defaults).
#: For neurons in normalised units (threshold 1 above reset) a narrower ``FastSigmoid(10.0)`` is
#: the usual choice. The forward value is always the exact step; ``surrogate=None`` gives a pure
#: step without gradient.
DEFAULT = FastSigmoid(scale=1.0)


def get(name: str, *args: Number, **kwargs: Number) -> Surrogate:
    """Build a surrogate by name: ``get("arctan", scale=2.0)``.

    Names: ``"fast_sigmoid"`` (alias ``"superspike"``), ``"arctan"``, ``"sigmoid"``,
    ``"triangle"``, ``"straight_through"``. Raises ``ValueError`` for an unknown name.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in _BY_NAME:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(_BY_NAME)}")
    return _BY_NAME[key](*args, **kwargs)
