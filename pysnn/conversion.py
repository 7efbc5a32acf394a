r"""ANN-to-SNN conversion: a trained ReLU network becomes a network of integrate-and-fire neurons.

:func:`ann_to_snn` takes a trained ``nn.Sequential`` of ``Linear``, ``Conv2d``, ``ReLU``,
``AvgPool2d`` (or ``AdaptiveAvgPool2d``), ``Flatten``, ``BatchNorm1d``/``BatchNorm2d`` (folded
into the preceding ``Linear``/``Conv2d``, see :func:`fold_batchnorm`), ``Dropout`` (dropped) and
``Identity``, and returns a :class:`ConvertedSNN`: every ``ReLU`` becomes a layer of
:class:`SoftResetIFNeuron` (integrate-and-fire, **reset by subtraction**), every
``Linear``/``Conv2d`` a :class:`pysnn.connection.Linear`/:class:`pysnn.connection.Conv2d` with
rescaled weights, pooling and flattening stay torch modules applied to the spikes. Any other layer
raises ``ValueError`` naming it.

**Why it works** (Cao et al. 2015; Diehl et al. 2015; Rueckauer et al. 2017). An IF neuron with
threshold :math:`\theta` that is reset by subtraction and driven by a constant input :math:`a`
per step fires :math:`N(T) = \lfloor (T a + v_0) / \theta \rfloor` spikes in :math:`T` steps
(for :math:`0 \le a \le \theta`, initial potential :math:`0 \le v_0 < \theta`; no spikes for
:math:`a \le 0` and one per step for :math:`a \ge \theta`), so its rate

.. math:: r = N(T) / T \xrightarrow{T \to \infty} \mathrm{clamp}(a / \theta, 0, 1)

is the ReLU of its input, clipped at 1 spike per step, with an error below :math:`1/T`. Reset to
zero instead would throw away the charge above threshold at each spike and underestimate the
rate. A layer :math:`l` of the ANN, :math:`a_l = \mathrm{ReLU}(W_l a_{l-1} + b_l)`, is therefore
simulated by IF neurons of threshold 1 (normalised units, see below) fed with

.. math:: W'_l = W_l \frac{\lambda_{l-1}}{\lambda_l}, \qquad b'_l = \frac{b_l}{\lambda_l},
    \qquad \lambda_0 = 1,

so that their rates approximate :math:`a_l / \lambda_l`. The scale :math:`\lambda_l` is chosen
from data (**threshold balancing**): the ``percentile``-th percentile (default 99.9) of the
positive activations of layer :math:`l` over ``calibration_data``. Using the maximum instead
(``percentile=100``) lets a few outliers set a low rate for everything else (slow, coarse
convergence); a robust percentile clips only those outliers at 1 spike per step (Rueckauer et
al. 2017, SpikingJelly's ``ann2snn`` ``robust`` mode).

**Units.** The conversion works in normalised units: the IF threshold is 1 mV, the membrane starts
at ``v_init`` (mV, 0.5 by default, see :func:`ann_to_snn`) and nothing leaks, so there is no ``v_rest``; the synaptic input
of a step (mV) is the rescaled pre-activation above. The input ``x`` of the ANN enters unchanged
as a constant current: the first layer receives :math:`W'_1 x + b'_1` (mV) at every step
("direct" or analog input encoding, no Poisson spikes). One step is ``dt`` ms (1 by default);
``dt`` only labels time, it does not enter the dynamics.

**Scores.** With ``readout="spikes"`` (default) the last ``Linear``/``Conv2d`` also feeds IF
neurons and the class scores are their spike counts summed over the steps (rates
:math:`\approx \mathrm{clamp}(z / \lambda_L, 0, 1)` for the ANN's outputs :math:`z`). With
``readout="potential"`` it feeds a non-leaky :class:`~pysnn.readout.LIReadout` with weights
:math:`W_L \lambda_{L-1}` and bias :math:`b_L`: its potential after :math:`T` steps divided by
:math:`T` approximates the ANN's outputs themselves (negative ones included, no clipping, no
ties between equal counts). Its error comes from the hidden layers alone, which dominate in
practice: on the MNIST example both readouts need about the same number of steps.
:meth:`ConvertedSNN.scores` runs the steps and returns either.

Example::

    snn = ann_to_snn(model, x_train[:1000])        # model: a trained nn.Sequential
    scores = snn.scores(x_test, steps=128)        # (B, classes) spike counts
    accuracy = (scores.argmax(1) == y_test).float().mean()
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from pysnn._checks import ParamLike, check_choice
from pysnn.connection import Conv2d, Linear
from pysnn.network import SNNNetwork
from pysnn.neuron import Neuron, ShapeLike
from pysnn.readout import LIReadout

__all__ = [
    "SoftResetIFNeuron",
    "ConvertedSNN",
    "ann_to_snn",
    "fold_batchnorm",
    "READOUTS",
]

#: What :func:`ann_to_snn` accepts as ``readout``.
READOUTS = ("spikes", "potential")

_WEIGHTED = (nn.Linear, nn.Conv2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_DROPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_LINEAR_OPS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)
_OTHER_ACTIVATIONS = (
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
)
_SUPPORTED = (
    "Linear, Conv2d, ReLU, AvgPool2d, AdaptiveAvgPool2d, Flatten, BatchNorm1d/BatchNorm2d "
    "(after a Linear/Conv2d), Dropout (dropped), Identity and nested nn.Sequential"
)


class SoftResetIFNeuron(Neuron):
    r"""Integrate-and-fire neuron with reset by subtraction ("soft reset"), no leak, no refractory
    period: the neuron of ANN-to-SNN conversion.

    Per step, with the input ``x`` an instantaneous voltage increment (mV):

    .. math::

        v &\leftarrow v + x \\
        s &= H(v - \theta) \\
        v &\leftarrow v - \theta\, s

    The charge above threshold is kept after a spike, so for a constant input :math:`a` the
    number of spikes in :math:`T` steps is :math:`\lfloor (T a + v_{init}) / \theta \rfloor`
    (:math:`0 \le a \le \theta`, :math:`0 \le v_{init} < \theta`): the rate is
    :math:`\mathrm{clamp}(a / \theta, 0, 1)` up to :math:`1/T`. An input above :math:`\theta`
    fires every step and the excess accumulates in ``v``.

    Args:
        shape: neuron shape without batch.
        dt: time step (ms); it does not enter the dynamics.
        thresh: threshold :math:`\theta` (mV), > 0; 1 in the normalised units of
            :func:`ann_to_snn`.
        v_init: initial potential (mV), restored by ``reset_state()`` (a spike subtracts
            ``thresh`` and keeps the rest); e.g. ``0.5 * thresh`` to round the spike count
            instead of truncating it.
        tau_trace, trace_scale, trace_mode, surrogate: see :class:`~pysnn.neuron.Neuron`.

    State: ``v`` (mV), ``spikes``, ``trace``, each ``(B, *shape)``.
    """

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        thresh: ParamLike = 1.0,
        v_init: ParamLike = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(shape, dt, **kwargs)
        self.register_constant("thresh", thresh, positive=True)
        self.register_constant("v_init", v_init)
        self.register_state("v", "v_init")

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input ``x`` ``(B, *shape)`` (mV increment) → spikes ``(B, *shape)`` (0/1)."""
        v = self.v + x
        thresh = self.thresh
        if torch.is_grad_enabled() and (v.requires_grad or thresh.requires_grad):
            s = self.fire(v - thresh)  # surrogate gradient
            self.v = v - s * thresh
        else:  # the same values in two fewer passes over the state
            s = torch.ge(v, thresh).to(v.dtype)
            self.v = v.addcmul_(s, thresh, value=-1.0)
        return s


# ------------------------------------------------------------------------------- the ANN side
def _own_forward(layer: nn.Module) -> Optional[type]:
    """The class of ``layer`` that replaces the ``forward`` of the torch layer it derives from
    (``None`` if it keeps that ``forward``): e.g. a residual ``nn.Sequential`` subclass, or a
    ``ReLU`` subclass computing something else, which cannot be converted as the torch layer."""
    for base in type(layer).__mro__:
        if base.__module__.startswith("torch.nn.") and "forward" in vars(base):
            return None if type(layer).forward is base.forward else type(layer)
    return None


def _flatten(module: nn.Module, prefix: str) -> List[Tuple[str, nn.Module]]:
    """The leaf layers of nested ``nn.Sequential``\\ s in order, with their qualified names."""
    layers = []
    for name, child in module.named_children():
        qualified = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential) and _own_forward(child) is None:
            layers.extend(_flatten(child, qualified))
        else:
            layers.append((qualified, child))
    return layers


def _describe(name: str, layer: nn.Module) -> str:
    return f"model.{name} ({layer})"


def _check_model(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            "model must be an nn.Sequential (nested nn.Sequentials allowed) of "
            f"{_SUPPORTED}; got {type(model).__name__}, whose forward cannot be read as a "
            "sequence of layers"
        )
    if _own_forward(model) is not None:
        raise ValueError(
            f"model is a {type(model).__name__}, an nn.Sequential subclass with its own forward "
            "(a residual or skip connection?): ann_to_snn reads a model as the plain chain of "
            "its layers and would convert another function. Convert a plain nn.Sequential"
        )
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"model.{name} contains NaN or infinite values ({int((~torch.isfinite(tensor)).sum())}"
                f" of {tensor.numel()}): the trained model is broken, fix or retrain it"
            )
    layers = _flatten(model, "")
    for name, layer in layers:
        own = _own_forward(layer)
        if own is not None:
            raise ValueError(
                f"unsupported layer {_describe(name, layer)}: {own.__name__} subclasses a torch "
                "layer but replaces its forward, so it cannot be converted as that layer; use "
                "the torch layer itself"
            )
        if isinstance(layer, (*_WEIGHTED, *_BATCHNORM, *_DROPPED, *_LINEAR_OPS, nn.ReLU)):
            if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
                raise ValueError(
                    f"unsupported layer {_describe(name, layer)}: only padding_mode='zeros' "
                    "can be converted"
                )
            continue
        hint = ""
        if isinstance(layer, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            hint = "; max pooling has no rate equivalent: use AvgPool2d and retrain"
        elif isinstance(layer, _OTHER_ACTIVATIONS):
            hint = "; only ReLU maps onto firing rates (retrain with ReLU)"
        raise ValueError(
            f"unsupported layer {_describe(name, layer)}: ann_to_snn converts {_SUPPORTED}" + hint
        )
    if not any(isinstance(layer, _WEIGHTED) for _, layer in layers):
        raise ValueError("model has no Linear or Conv2d layer: nothing to convert")
    return layers


def _fold(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``layer`` (Linear/Conv2d) with the eval-mode batch norm ``bn`` folded in:
    :math:`W' = W \\gamma / \\sigma`, :math:`b' = (b - \\mu) \\gamma / \\sigma + \\beta`,
    :math:`\\sigma = \\sqrt{\\mathrm{var} + \\epsilon}`."""
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != channels:
        raise ValueError(
            f"{bn} follows a layer with {channels} output channels, not {bn.num_features}"
        )
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        mean, var = bn.running_mean, bn.running_var
        gain = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            gain = gain * bn.weight
        shift = bn.bias if bn.bias is not None else torch.zeros_like(mean)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(mean)
        weight = layer.weight * gain.view(-1, *([1] * (layer.weight.dim() - 1)))
        folded.weight = nn.Parameter(weight.to(layer.weight.dtype))
        folded.bias = nn.Parameter(((bias - mean) * gain + shift).to(layer.weight.dtype))
    return folded


def _fold_layers(layers: List[Tuple[str, nn.Module]]) -> List[Tuple[str, nn.Module]]:
    """Drop dropout/identity layers and fold every batch norm into the layer before it."""
    out: List[Tuple[str, nn.Module]] = []
    for name, layer in layers:
        if isinstance(layer, _DROPPED):
            continue
        if isinstance(layer, _BATCHNORM):
            if not out or not isinstance(out[-1][1], _WEIGHTED):
                after = f"after {_describe(*out[-1])}" if out else "at the start of the model"
                raise ValueError(
                    f"unsupported layer {_describe(name, layer)} {after}: a batch norm can only "
                    "be folded into a Linear or Conv2d directly before it"
                )
            if not layer.track_running_stats or layer.running_mean is None:
                raise ValueError(
                    f"unsupported layer {_describe(name, layer)}: it has no running statistics "
                    "(track_running_stats=False), so its eval-mode output is undefined"
                )
            out[-1] = (out[-1][0], _fold(out[-1][1], layer))
            continue
        out.append((name, layer))
    return out


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """The eval-mode equivalent of ``model`` without batch norms and dropout.

    Each ``BatchNorm1d``/``BatchNorm2d`` is folded into the ``Linear``/``Conv2d`` directly before
    it (with its running statistics, as in ``eval()``); ``Dropout`` and ``Identity`` layers are
    removed; nested ``nn.Sequential``\\ s are flattened. ``model`` is not modified. The result
    computes ``model.eval()(x)`` up to float rounding.

    Raises:
        TypeError: ``model`` is not an ``nn.Sequential``.
        ValueError: a layer is not supported by :func:`ann_to_snn` (named in the message), or a
            batch norm does not directly follow a ``Linear``/``Conv2d``.
    """
    folded = nn.Sequential(*(copy.deepcopy(m) for _, m in _fold_layers(_check_model(model))))
    return folded.eval()


class _Stage:
    """One layer of the conversion: linear ops, one weighted layer, linear ops, then a ReLU (or
    the output of the model)."""

    def __init__(self) -> None:
        self.pre: List[nn.Module] = []
        self.weighted: Optional[Tuple[str, nn.Module]] = None
        self.post: List[nn.Module] = []
        self.relu = False

    def ops(self) -> List[nn.Module]:
        return [*self.pre, self.weighted[1], *self.post]


def _stages(layers: List[Tuple[str, nn.Module]]) -> List[_Stage]:
    stages, stage = [], _Stage()
    for name, layer in layers:
        if isinstance(layer, nn.ReLU):
            if stage.weighted is None:
                raise ValueError(
                    f"unsupported layer {_describe(name, layer)}: a ReLU must follow a Linear or "
                    "Conv2d (with at most pooling/flattening between), since its threshold is "
                    "set through that layer's weights"
                )
            stage.relu = True
            stages.append(stage)
            stage = _Stage()
        elif isinstance(layer, _WEIGHTED):
            if stage.weighted is not None:
                raise ValueError(
                    f"unsupported layer {_describe(name, layer)}: it follows "
                    f"model.{stage.weighted[0]} without a ReLU between; merge the two affine "
                    "layers into one or put a ReLU between them"
                )
            stage.weighted = (name, layer)
        elif stage.weighted is None:
            stage.pre.append(layer)
        else:
            stage.post.append(layer)
    if stage.weighted is not None:
        stages.append(stage)
    elif stage.pre:
        raise ValueError(
            f"the model ends with {stage.pre} after its last ReLU: the spikes of a converted "
            "network can only be read at a Linear/Conv2d output; remove those layers"
        )
    return stages


# ------------------------------------------------------------------------------- calibration
def _batches(data, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        if data.dim() < 2 or data.shape[0] == 0:
            raise ValueError(
                "calibration_data must be a non-empty batch (N, *input_shape), got shape "
                f"{tuple(data.shape)}"
            )
        yield from data.split(batch_size)
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            "calibration_data must be a tensor (N, *input_shape) or an iterable of batches "
            f"(tensors, or tuples whose first item is the input, e.g. a DataLoader), got "
            f"{type(data).__name__}"
        ) from None
    for item in iterator:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                "calibration_data must yield tensors or (input, ...) tuples, got an item of type "
                f"{type(x).__name__}"
            )
        yield x


def _percentile(values: List[torch.Tensor], percentile: float) -> Optional[float]:
    """Nearest-rank percentile of the concatenated ``values``; ``None`` if there are none."""
    flat = torch.cat([v.reshape(-1) for v in values]) if values else torch.empty(0)
    if flat.numel() == 0:
        return None
    # rounded first, so that e.g. 99.9 % of 1000 values is rank 999, not 1000 (99.9 / 100 * 1000
    # is 999.0000000000001 in floating point)
    rank = max(1, math.ceil(round(percentile / 100.0 * flat.numel(), 6)))
    return float(torch.kthvalue(flat.double().cpu(), rank).values)


def _calibrate(
    stages: List[_Stage], data, batch_size: int, percentile: float, reference: torch.Tensor
) -> Tuple[List[float], List[Tuple[int, ...]], Tuple[int, ...]]:
    """Scale :math:`\\lambda_l` of every stage and the per-sample shape of its output."""
    positives: List[List[torch.Tensor]] = [[] for _ in stages]
    shapes: List[Tuple[int, ...]] = []
    input_shape: Optional[Tuple[int, ...]] = None
    with torch.no_grad():
        for batch, x in enumerate(_batches(data, batch_size)):
            if not x.is_floating_point():
                raise TypeError(
                    f"calibration_data must be floating point (the ANN's input), got {x.dtype}"
                )
            x = x.to(device=reference.device, dtype=reference.dtype)
            bad = ~torch.isfinite(x).reshape(x.shape[0], -1).all(1) if x.dim() else None
            if bad is not None and bool(bad.any()):
                kinds = " and ".join(
                    k
                    for k, m in (("NaN", x.isnan()), ("inf", x.isposinf()), ("-inf", x.isneginf()))
                    if bool(m.any())
                )
                raise ValueError(
                    f"calibration_data contains {kinds} in {int(bad.sum())} of the {x.shape[0]} "
                    f"rows of batch {batch}: a NaN row would be skipped and an infinite value "
                    "would set a layer's scale to inf (a silent layer). Remove or fix those rows"
                )
            if input_shape is None:
                input_shape = tuple(x.shape[1:])
            h = x
            for i, stage in enumerate(stages):
                for op in stage.ops():
                    h = op(h)
                if stage.relu:
                    h = torch.relu(h)
                if len(shapes) == i:
                    shapes.append(tuple(h.shape[1:]))
                positives[i].append(h[h > 0].cpu())
    if input_shape is None:
        raise ValueError("calibration_data is empty: it must hold at least one input")
    scales = []
    for i, values in enumerate(positives):
        scale = _percentile(values, percentile)
        if scale is None:
            raise ValueError(
                f"layer {i + 1} (model.{stages[i].weighted[0]}) has no positive activation on "
                "calibration_data, so its scale cannot be set: the converted network would "
                "never spike there. Calibrate on more (or more typical) inputs"
            )
        scales.append(scale)
    return scales, shapes, input_shape


# ------------------------------------------------------------------------------- the SNN side
def _connection(layer: nn.Module, scale_in: float, scale_out: float, dt: float) -> nn.Module:
    """A pysnn connection with the weights of ``layer`` times ``scale_in / scale_out`` and its
    bias divided by ``scale_out``."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        conn = Linear(layer.in_features, layer.out_features, dt, bias=bias, **factory)
    else:
        conn = Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            bias=bias,
            dt=dt,
            **factory,
        )
    with torch.no_grad():
        conn.weight.copy_(layer.weight * (scale_in / scale_out))
        if bias:
            conn.bias.copy_(layer.bias / scale_out)
    return conn


class ConvertedSNN(SNNNetwork):
    r"""The spiking network built by :func:`ann_to_snn`; ``forward(x)`` is one time step.

    Layer ``l`` (``layer1``, ``layer2``, ... in :attr:`layers`; the last is ``output``) holds the
    torch modules applied to the previous layer's spikes before and after its connection
    (pooling, flattening), a :class:`pysnn.connection.Linear` or
    :class:`pysnn.connection.Conv2d`, and its neurons: :class:`SoftResetIFNeuron` of threshold
    1 mV, or for the output a non-leaky :class:`~pysnn.readout.LIReadout` when
    ``readout="potential"``.

    ``forward(x)``: the analog input ``x`` ``(B, *input_shape)`` (the ANN's input) enters the
    first connection as is, every step; returns the output layer's spikes ``(B, *out_shape)``
    (``readout="spikes"``) or its membrane potential (mV, ``readout="potential"``). Reset the
    state (``reset_state()``) before a new input.

    Attributes:
        readout: ``"spikes"`` or ``"potential"``.
        scales: the per-layer scales :math:`\lambda_l` (activation units of the ANN), ``(L,)``
            float64 buffer, saved in ``state_dict``; for ``readout="potential"`` the last entry is
            1 (the output is not rescaled).
        input_shape: per-sample shape of ``x``.
    """

    def __init__(
        self,
        stages: Sequence[Tuple[Sequence[nn.Module], nn.Module, Sequence[nn.Module], nn.Module]],
        scales: Sequence[float],
        readout: str,
        input_shape: Tuple[int, ...],
    ) -> None:
        super().__init__()
        self.readout = check_choice("readout", readout, READOUTS)
        self.input_shape = tuple(input_shape)
        self.register_buffer("scales", torch.tensor(list(scales), dtype=torch.float64))
        self._stages: List[Tuple[Tuple[str, ...], str, Tuple[str, ...], str]] = []
        for i, (pre, conn, post, neuron) in enumerate(stages):
            name = "output" if i == len(stages) - 1 else f"layer{i + 1}"
            pre_names = tuple(self._child(f"{name}_pre{j}", m) for j, m in enumerate(pre))
            conn_name = self._child(f"{name}_connection", conn)
            post_names = tuple(self._child(f"{name}_post{j}", m) for j, m in enumerate(post))
            neuron_name = self._child(f"{name}_neuron", neuron)
            self.add_layer(name, conn, neuron)
            self._stages.append((pre_names, conn_name, post_names, neuron_name))

    def _child(self, name: str, module: nn.Module) -> str:
        self.add_module(name, module)
        return name

    def _synapses(self, i: int, h: torch.Tensor) -> torch.Tensor:
        pre, conn, post, _ = self._stages[i]
        for name in pre:
            h = getattr(self, name)(h)
        h = getattr(self, conn)(h)
        for name in post:
            h = getattr(self, name)(h)
        return h

    def _from_first_current(self, current: torch.Tensor) -> torch.Tensor:
        """One step given the synaptic input of the first layer (mV)."""
        h = getattr(self, self._stages[0][3])(current)
        for i in range(1, len(self._stages)):
            h = getattr(self, self._stages[i][3])(self._synapses(i, h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step driven by the analog input ``x`` ``(B, *input_shape)``: output spikes (0/1)
        or readout potential (mV), ``(B, *out_shape)``."""
        return self._from_first_current(self._synapses(0, x))

    def scores(self, x: torch.Tensor, steps: Union[int, Sequence[int]]) -> torch.Tensor:
        r"""Reset the state, run ``steps`` steps on the constant input ``x`` and return the scores.

        Args:
            x: ``(B, *input_shape)`` analog input (the ANN's input).
            steps: number of steps :math:`T` (int >= 1), or an increasing sequence of them to read
                the scores at several :math:`T` in one run (the run lasts ``max(steps)``).

        Returns:
            ``(B, *out_shape)`` for an int, ``(len(steps), B, *out_shape)`` for a sequence: the
            output spike counts summed over the first :math:`T` steps (``readout="spikes"``;
            divide by :math:`T` for rates :math:`\approx \mathrm{clamp}(z/\lambda_L, 0, 1)`), or
            the readout potential after :math:`T` steps (mV, ``readout="potential"``; divide by
            :math:`T` for :math:`\approx z`, the ANN's output).

        Runs under ``torch.no_grad()``. The first connection's input is computed once (``x`` is
        constant), which gives the same result as calling ``forward(x)`` every step.
        """
        single = isinstance(steps, int) and not isinstance(steps, bool)
        if not single and not isinstance(steps, (list, tuple, range)):
            raise TypeError(
                f"steps must be an int or a list/tuple/range of ints, got {type(steps).__name__}"
            )
        marks = [steps] if single else list(steps)
        if not marks or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in marks):
            raise ValueError(f"steps must be an int >= 1 or a sequence of them, got {steps!r}")
        if any(b <= a for a, b in zip(marks, marks[1:])):
            raise ValueError(f"steps must be strictly increasing, got {steps!r}")
        self.reset_state()
        recorded = []
        with torch.no_grad():
            current = self._synapses(0, x)
            total = None
            for t in range(1, marks[-1] + 1):
                out = self._from_first_current(current)
                if self.readout == "spikes":
                    total = out.clone() if total is None else total.add_(out)
                else:
                    total = out
                if t in marks:
                    recorded.append(total.clone())
        self.reset_state()
        return recorded[0] if single else torch.stack(recorded)


def ann_to_snn(
    model: nn.Sequential,
    calibration_data: Union[torch.Tensor, Iterable],
    *,
    percentile: float = 99.9,
    readout: str = "spikes",
    v_init: float = 0.5,
    dt: float = 1.0,
    batch_size: int = 256,
) -> ConvertedSNN:
    r"""Convert a trained ReLU network into a :class:`ConvertedSNN` of IF neurons.

    Args:
        model: trained ``nn.Sequential`` (nested ones allowed) of ``Linear``, ``Conv2d``,
            ``ReLU``, ``AvgPool2d``/``AdaptiveAvgPool2d``, ``Flatten``, ``BatchNorm1d``/
            ``BatchNorm2d`` directly after a ``Linear``/``Conv2d`` (folded into it, running
            statistics as in ``eval()``), ``Dropout`` and ``Identity`` (dropped). Each ``ReLU``
            must follow a ``Linear``/``Conv2d``, with only pooling/flattening between. The
            model ends with a ``Linear``/``Conv2d`` (the class scores), optionally followed by a
            ``ReLU``, which only ``readout="spikes"`` represents (the potential readout
            integrates the input of that ReLU). Not modified.
        calibration_data: inputs for threshold balancing: a tensor ``(N, *input_shape)``
            (split into batches of ``batch_size``) or an iterable of batches (tensors, or tuples
            whose first item is the input, e.g. a ``DataLoader``), typically a few hundred to a
            few thousand training samples. Moved to the model's device and dtype. All positive
            activations of each layer are kept in memory to take the percentile.
        percentile: the scale :math:`\lambda_l` of layer :math:`l` is this percentile (in
            (0, 100], nearest rank) of its positive activations over ``calibration_data``; 100 is
            max-normalisation.
        readout: ``"spikes"`` (output IF neurons, scores = spike counts) or ``"potential"``
            (non-leaky integrator, scores = its potential); see the module docstring.
        v_init: initial membrane potential of the IF neurons (mV, the threshold is 1 mV), in
            [0, 1). The default 0.5 (half the threshold) rounds the spike count of a constant
            input, :math:`\lfloor T a + 0.5 \rfloor`, instead of truncating it (0): the error
            of a rate is at most :math:`1/(2T)` instead of :math:`1/T`, and the first spikes
            come earlier (Bu et al. 2022). On the MNIST example it cuts the steps needed to
            come within 0.5 points of the ANN from 32 to 16.
        dt: time step (ms) of the modules; it does not change the dynamics.
        batch_size: batch size for a tensor ``calibration_data``.

    Returns:
        A :class:`ConvertedSNN` on the model's device and dtype, with the IF neurons' surrogate
        gradient switched off (``surrogate=None``).

    Raises:
        TypeError: ``model`` is not an ``nn.Sequential`` or ``calibration_data`` is not a tensor
            or an iterable of tensors.
        ValueError: an unsupported layer (named as ``model.<index>``), a batch norm not directly
            after a ``Linear``/``Conv2d``, a ReLU not after one, a layer that never activates on
            ``calibration_data``, or a bad argument.
    """
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
        raise TypeError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    check_choice("readout", readout, READOUTS)
    if isinstance(v_init, bool) or not isinstance(v_init, (int, float)):
        raise TypeError(f"v_init must be a number in [0, 1) (mV), got {v_init!r}")
    if not 0.0 <= v_init < 1.0:
        raise ValueError(f"v_init must be in [0, 1) mV (the threshold is 1 mV), got {v_init}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    stages = _stages(_fold_layers(_check_model(model)))
    reference = stages[0].weighted[1].weight
    scales, shapes, input_shape = _calibrate(
        stages, calibration_data, batch_size, percentile, reference
    )
    if readout == "potential":
        scales[-1] = 1.0
    built = []
    for i, stage in enumerate(stages):
        scale_in = 1.0 if i == 0 else scales[i - 1]
        conn = _connection(stage.weighted[1], scale_in, scales[i], dt)
        if i == len(stages) - 1 and readout == "potential":
            neuron = LIReadout(shapes[i], dt, tau_v=math.inf, v_rest=0.0)
        else:
            neuron = SoftResetIFNeuron(shapes[i], dt, thresh=1.0, v_init=v_init, surrogate=None)
        neuron.to(device=reference.device, dtype=reference.dtype)
        pre = [copy.deepcopy(m) for m in stage.pre]
        post = [copy.deepcopy(m) for m in stage.post]
        built.append((pre, conn, post, neuron))
    return ConvertedSNN(built, scales, readout, input_shape)
