r"""Interoperability with NIR, the Neuromorphic Intermediate Representation.

`NIR <https://neuroir.org>`_ (``pip install nir``, or the extra ``pip install ".[nir]"`` in
a pysnn checkout) is the exchange format that snnTorch,
Norse, SpikingJelly, Sinabs, Rockpool, Lava and several neuromorphic chips read and write. A NIR
graph holds nodes (continuous-time neuron models, linear maps) and edges; what arrives at a node
through several edges is summed.

- :func:`to_nir` writes a pysnn module as a ``nir.NIRGraph``;
- :func:`from_nir` builds a :class:`NIRNetwork` (an :class:`~pysnn.network.SNNNetwork`, one
  step per ``forward`` call) from a graph, with pysnn's modules.

Save and load graphs with ``nir.write(path, graph)`` and ``nir.read(path)``.

**What is exported.** An ``nn.Sequential`` is a chain ``input -> module 0 -> module 1 -> ... ->
output`` (nested ``Sequential``\ s are flattened). Any other module (an
:class:`~pysnn.network.SNNNetwork`) needs its wiring as ``edges``: pairs ``(source, target)`` of
names from ``module.named_modules()`` (``"fc"``, ``"block.0"``) and the graph's ends ``"input"``
and ``"output"``; ``edges="layers"`` chains the layers registered with
:meth:`~pysnn.network.SNNNetwork.add_layer`, in registration order. Inputs of a node coming from
several edges are summed, so a recurrent layer ``lif(fc(x) + rec(lif.spikes))`` is::

    to_nir(net, edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"),
                       ("lif", "output")])

**Time steps and cycles.** :class:`NIRNetwork` evaluates the nodes in an order found by a
depth-first search from the inputs (following the edges in their order); an edge that closes a
cycle (``rec -> lif`` above) delivers its source's output of the *previous* step, as pysnn
networks and snnTorch's ``RLeaky`` do (in the first step: the bias of a connection, nothing from
any other node). Every other edge delivers in the same step.

**Units.** pysnn's times are in ms, NIR's conventionally in seconds (Norse writes ``dt=1e-3``,
snnTorch ``dt=1e-4``): ``time_unit="s"`` (default) writes and reads NIR times in seconds,
``"ms"`` in ms. Voltages are written as they are (mV). :math:`\Delta t` below is the step in
NIR's time unit.

**Equations.** NIR's models are continuous (:math:`I` is what arrives at the node):

.. math::

    \text{LIF:}\quad \tau \dot v = (v_{leak} - v) + r I,\qquad
    z = H(v - v_{th}),\ \ v \leftarrow v_{reset} \text{ where } z = 1

LI is LIF without threshold; IF is :math:`\dot v = r I` (I without threshold); CubaLIF adds a
synaptic current :math:`\tau_{syn} \dot I_{syn} = -I_{syn} + w_{in} I` driving the membrane
(:math:`r I_{syn}` in place of :math:`r I`), CubaLI the same without threshold.

The value :math:`x_k` that arrives at a node in step :math:`k` is read as a current pulse of area
:math:`x_k \Delta t` at the start of the step (the convention of snnTorch's and Norse's exporters:
snnTorch writes :math:`r = \tau/\Delta t` so that :math:`r \Delta t / \tau = 1`); the state is
then advanced to the end of the step, where the threshold is checked once. With
:math:`b = e^{-\Delta t/\tau}` (``method="exact"``, the exact solution of the equations above)
or :math:`b = 1 - \Delta t/\tau` (``method="euler"``, forward Euler: what snnTorch's ``Leaky``
and ``Synaptic`` and Norse's ``LIFBoxCell`` compute), one step is, in pysnn's modules:

.. list-table::
   :header-rows: 1

   * - NIR node
     - pysnn (one step)
     - input scale :math:`c` (``exact``)
     - :math:`c` (``euler``)
   * - ``LIF``
     - :class:`Scale` (:math:`c`) then :class:`~pysnn.neuron.LIFNeuron`
       (:math:`\tau_v = \tau`, :math:`v_{rest} = v_{leak}`, ``refrac=0``):
       :math:`v \leftarrow v_{leak} + (v - v_{leak}) b + c\,x`
     - :math:`r b \Delta t / \tau`
     - :math:`r \Delta t / \tau`
   * - ``LI``
     - :class:`Scale` then :class:`~pysnn.readout.LIReadout`, same equation without threshold
     - :math:`r b \Delta t / \tau`
     - :math:`r \Delta t / \tau`
   * - ``IF``
     - :class:`Scale` then :class:`~pysnn.neuron.IFNeuron` (``v_rest=0``, ``refrac=0``):
       :math:`v \leftarrow v + c\,x`
     - :math:`r`
     - :math:`r`
   * - ``I``
     - :class:`Scale` then :class:`~pysnn.readout.LIReadout` (``tau_v=inf``)
     - :math:`r`
     - :math:`r`
   * - ``CubaLIF`` / ``CubaLI``
     - :class:`Scale` (:math:`w_{in} \Delta t / \tau_{syn}`) then :class:`CubaLIF`:
       :math:`i \leftarrow a\, i + x`,
       :math:`v \leftarrow v_{leak} + (v - v_{leak}) b + g\, i`
       (:math:`a`: :math:`b` of :math:`\tau_{syn}`)
     - :math:`g = r \tau_{syn} (a - b) / (\tau_{syn} - \tau)`
       (:math:`r b \Delta t/\tau` if equal)
     - :math:`g = r \Delta t / \tau`
   * - ``Affine`` / ``Linear``
     - :class:`~pysnn.connection.Linear` (bias for ``Affine``)
     -
     -
   * - ``Conv2d``
     - :class:`~pysnn.connection.Conv2d`
     -
     -
   * - ``Flatten``
     - ``nn.Flatten`` (NIR's dims exclude the batch: ``start_dim + 1``)
     -
     -
   * - ``AvgPool2d`` / ``SumPool2d``
     - ``nn.AvgPool2d`` (``divisor_override=1`` for the sum)
     -
     -
   * - ``Scale``
     - :class:`Scale`
     -
     -
   * - ``Delay``
     - folded into the delay of the :class:`~pysnn.connection.Linear` or
       :class:`~pysnn.connection.Conv2d` it feeds (whole steps of ``dt``)
     -
     -

The IF and I rows follow the peers rather than :math:`\dot v = r I` literally: Norse's
``IAFCell`` adds the input as it is and its exporter writes ``r = 1``, Sinabs reads an ``IF`` node
into its ``IAFSqueeze``, which adds the input as it is (a pulse of area :math:`x_k`, not
:math:`x_k \Delta t`); pysnn reads and writes IF and I the same way.

:func:`to_nir` writes the inverse: for a :class:`~pysnn.neuron.LIFNeuron` with ``method="exact"``
:math:`\tau = \tau_v`, :math:`r = \tau / (b \Delta t)` (so that :math:`c = 1`); with
``method="euler"`` :math:`\tau = \Delta t / (1 - b)` and :math:`r = \tau / \Delta t`, where
:math:`b = e^{-dt/\tau_v}` is pysnn's own decay (exactly snnTorch's export of a ``Leaky`` with
``beta = b``). Either way ``from_nir(to_nir(m))`` with the same ``method`` and ``dt`` gives the
same spikes as ``m``.

**Thresholds.** pysnn fires at :math:`v \ge v_{th}`, NIR at :math:`v > v_{th}`. In floating
point :math:`v \ge t \iff v > t^-`, with :math:`t^-` the next float below :math:`t` (in the
threshold's dtype), so :func:`to_nir` writes :math:`t^-` and :func:`from_nir` reads
:math:`t^+`: the spikes agree exactly, at the threshold too.

**Initial state.** NIR has none: readers start LIF, LI and CubaLIF at :math:`v_{leak}` (pysnn:
at ``v_rest``), IF and I at 0, synaptic currents at 0. A pysnn IF neuron whose ``v_rest`` is not
0 is written shifted (:math:`v_{th} - v_{rest}`, :math:`v_{reset} - v_{rest}`, the same spikes)
with ``v_rest`` in the node's ``metadata`` (``"pysnn_v_rest"``), from which :func:`from_nir`
restores it.

**What NIR cannot express** (``unsupported="error"`` raises a ``ValueError`` naming the module and
the option; ``"warn"`` drops the option with a ``UserWarning`` and exports the rest):

- refractory periods ``refrac > 0`` (NIR's neurons have none); dropped with ``"warn"``;
- per-synapse delays (NIR's ``Delay`` delays a signal, not a synapse); dropped with ``"warn"``.
  A delay shared by all synapses of a connection is written exactly, as a ``Delay`` node;
- :class:`~pysnn.neuron.AdaptiveLIFNeuron` (threshold adaptation), ``IzhikevichNeuron`` and any
  module not listed above: always a ``TypeError``;
- an :class:`~pysnn.readout.LIReadout` with ``tau_v=inf`` and ``v_rest`` not 0 (NIR's integrator
  starts at 0 and its output is :math:`v`): ``ValueError``.

Spike **traces** (``tau_trace``, ``trace_scale``, ``trace_mode``) and learning rules are not part
of the dynamics (the spikes do not depend on them) and are not exported; imported neurons have
pysnn's default traces. Surrogate gradients are not exported either (NIR has none for neurons);
imported neurons use pysnn's default surrogate. :class:`~pysnn.neuron.Input` and ``nn.Identity``
are identities and are left out of the graph.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from pysnn.connection import Conv2d, Linear
from pysnn.engine.capture import capture, is_pysnn_module
from pysnn.network import SNNNetwork
from pysnn.neuron import IFNeuron, Input, LIFNeuron, Neuron, ShapeLike
from pysnn.readout import LIReadout

__all__ = ["to_nir", "from_nir", "NIRNetwork", "CubaLIF", "Scale", "METHODS", "TIME_UNITS"]

#: Discretisations of NIR's equations (see the module docstring).
METHODS = ("exact", "euler")
#: NIR time units: NIR time per ms.
TIME_UNITS = {"s": 1e-3, "ms": 1.0}
UNSUPPORTED = ("error", "warn")
EdgeList = Sequence[Tuple[str, str]]


def _nir() -> Any:
    """The ``nir`` package, or an ``ImportError`` saying how to install it."""
    try:
        import nir
    except ImportError as err:  # pragma: no cover - nir is a test dependency
        raise ImportError(
            "pysnn.nir needs the 'nir' package: pip install nir "
            "(or the extra: pip install '.[nir]' in a pysnn checkout)"
        ) from err
    return nir


def _check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _check_dt(dt: Any) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt < math.inf:
        raise ValueError(f"dt must be a positive finite number of ms, got {dt!r}")
    return float(dt)


class Scale(nn.Module):
    r"""Elementwise scaling, NIR's ``Scale`` node: :math:`y = x \odot s`.

    Args:
        scale: factors, a tensor broadcastable to the input ``(B, *shape)`` without the batch
            dimension (kept as a buffer, saved in ``state_dict``).
    """

    def __init__(self, scale: Union[float, torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.get_default_dtype()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, *shape)`` → ``x * scale``."""
        return x * self.scale

    def extra_repr(self) -> str:
        return f"shape={tuple(self.scale.shape)}"


class CubaLIF(nn.Module):
    r"""Current-based LIF neuron (NIR's ``CubaLIF``), composed of pysnn's own modules.

    pysnn has no built-in neuron with a synaptic current; this module chains an
    :class:`~pysnn.readout.LIReadout` (the current) and a :class:`~pysnn.neuron.LIFNeuron` (the
    membrane, ``refrac=0``) or, with ``spiking=False``, a second ``LIReadout`` (NIR's ``CubaLI``).
    Per step of ``dt`` ms, with ``x`` the input (mV, an increment of the current):

    .. math::

        i &\leftarrow i\, e^{-dt/\tau_{syn}} + x \\
        v &\leftarrow v_{rest} + (v - v_{rest})\, e^{-dt/\tau_v} + g\, i \\
        s &= H(v - v_{th}); \quad \text{where } s = 1:\ v \leftarrow v_{reset}

    the membrane seeing the current of this step (as snnTorch's ``Synaptic``).

    Args:
        shape: neuron shape without batch.
        dt: time step (ms).
        tau_syn: synaptic time constant (ms), > 0.
        tau_v: membrane time constant (ms), > 0.
        thresh, v_rest, v_reset: threshold, resting and reset potentials (mV).
        gain: factor from the current to the membrane increment, dimensionless.
        spiking: ``False`` for a leaky-integrator membrane without threshold (``CubaLI``); its
            output is then ``v`` (mV).

    Attributes:
        synapse: the :class:`~pysnn.readout.LIReadout` holding ``i`` (its ``v``, mV).
        neuron: the :class:`~pysnn.neuron.LIFNeuron` (or ``LIReadout``) holding ``v``.
    """

    def __init__(
        self,
        shape: ShapeLike,
        dt: float = 1.0,
        *,
        tau_syn: Union[float, torch.Tensor] = 5.0,
        tau_v: Union[float, torch.Tensor] = 20.0,
        thresh: Union[float, torch.Tensor] = 1.0,
        v_rest: Union[float, torch.Tensor] = 0.0,
        v_reset: Union[float, torch.Tensor] = 0.0,
        gain: Union[float, torch.Tensor] = 1.0,
        spiking: bool = True,
    ) -> None:
        super().__init__()
        self.synapse = LIReadout(shape, dt, tau_v=tau_syn, v_rest=0.0)
        if spiking:
            self.neuron: Neuron = LIFNeuron(
                shape, dt, tau_v=tau_v, thresh=thresh, v_rest=v_rest, v_reset=v_reset, refrac=0.0
            )
        else:
            self.neuron = LIReadout(shape, dt, tau_v=tau_v, v_rest=v_rest)
        self.register_buffer("gain", torch.as_tensor(gain, dtype=torch.get_default_dtype()))

    @property
    def dt(self) -> float:
        """The time step (ms)."""
        return self.neuron.dt

    @property
    def spiking(self) -> bool:
        """Whether the membrane has a threshold (``CubaLIF``) or not (``CubaLI``)."""
        return self.neuron.spiking

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: ``x`` ``(B, *shape)`` (mV) → spikes (or ``v`` when not spiking)."""
        return self.neuron(self.synapse(x) * self.gain)


# ---------------------------------------------------------------------------------- export


def _array(value: Union[torch.Tensor, float], shape: Tuple[int, ...]) -> np.ndarray:
    """A float64 array of ``shape`` from a tensor or number broadcastable to it."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()


def _below(thresh: torch.Tensor, shape: Tuple[int, ...]) -> np.ndarray:
    """The next float below ``thresh`` in its dtype, as float64 (see "Thresholds")."""
    t = thresh.detach().cpu()
    return _array(torch.nextafter(t, torch.full_like(t, -math.inf)), shape)


def _above(value: np.ndarray) -> torch.Tensor:
    """The next float above ``value`` in the default dtype (inverse of :func:`_below`)."""
    t = _tensor(value)
    return torch.nextafter(t, torch.full_like(t, math.inf))


class _Exporter:
    """Turns pysnn / torch modules into NIR nodes (see :func:`to_nir`)."""

    def __init__(self, dt: float, unit: float, method: str, unsupported: str) -> None:
        self.nir = _nir()
        self.dt, self.unit, self.method, self.unsupported = dt, unit, method, unsupported

    def refuse(self, name: str, module: nn.Module, option: str) -> None:
        """Raise (``"error"``) or warn (``"warn"``) that ``option`` of ``module`` is dropped."""
        message = f"module {name!r} ({type(module).__name__}): {option} cannot be written to NIR"
        if self.unsupported == "error":
            raise ValueError(message + "; pass unsupported='warn' to drop it with a warning")
        warnings.warn(message + "; dropped (unsupported='warn')", UserWarning, stacklevel=4)

    def decay(self, tau_v: torch.Tensor, shape: Tuple[int, ...]) -> np.ndarray:
        return np.exp(-self.dt / _array(tau_v, shape))

    def membrane(self, tau_v: torch.Tensor, shape: Tuple[int, ...]) -> Tuple[np.ndarray, ...]:
        """NIR ``(tau, r, b)`` for pysnn's decay ``b = exp(-dt/tau_v)``, input scale 1."""
        b = self.decay(tau_v, shape)
        step = self.dt * self.unit
        if self.method == "exact":
            tau = _array(tau_v, shape) * self.unit
            return tau, tau / (b * step), b
        tau = step / (1.0 - b)
        return tau, tau / step, b

    def nodes(self, name: str, module: nn.Module) -> List[Tuple[str, Any]]:
        """``[(suffix, nir node), ...]`` in chain order for one module ([] for an identity)."""
        nir = self.nir
        if isinstance(module, (Input, nn.Identity)):
            return []
        if type(module) is nn.Sequential:
            chain = []
            for key, child in module.named_children():
                for suffix, node in self.nodes(f"{name}.{key}", child):
                    chain.append((key + ("." + suffix if suffix else ""), node))
            return chain
        if isinstance(module, (Linear, Conv2d, nn.Linear, nn.Conv2d)):
            return self.connection(name, module)
        if isinstance(module, Scale):
            return [("", nir.Scale(scale=module.scale.detach().cpu().double().numpy()))]
        if isinstance(module, nn.Flatten):
            start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
            end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
            return [("", nir.Flatten(input_type=None, start_dim=start, end_dim=end))]
        if isinstance(module, nn.AvgPool2d):
            return [("", self.pool(name, module))]
        if isinstance(module, CubaLIF):
            return [("", self.cuba(name, module))]
        if type(module) in (LIFNeuron, IFNeuron):
            return [("", self.lif(name, module))]
        if type(module) is LIReadout:
            return [("", self.li(name, module))]
        raise TypeError(
            f"module {name!r} ({type(module).__name__}) cannot be written to NIR; supported: "
            "pysnn Linear, Conv2d, Input, LIFNeuron, IFNeuron, LIReadout, pysnn.nir.CubaLIF and "
            "Scale, torch nn.Linear, nn.Conv2d, nn.Flatten, nn.AvgPool2d, nn.Identity"
        )

    def connection(self, name: str, module: nn.Module) -> List[Tuple[str, Any]]:
        nir = self.nir
        weight = module.weight.detach().cpu().double().numpy()
        bias = None if module.bias is None else module.bias.detach().cpu().double().numpy()
        out: List[Tuple[str, Any]] = []
        steps = getattr(module, "delay_steps", None)
        if steps is not None and steps.dim() > 0:
            self.refuse(name, module, "a per-synapse delay")
        elif steps is not None and int(steps) > 0:
            if not isinstance(module, Linear):
                raise ValueError(
                    f"module {name!r} (Conv2d): a delay can be written to NIR for Linear only "
                    "(NIR's Delay node needs the input's shape); use delay=0"
                )
            delay = np.full(module.in_features, float(steps) * module.dt * self.unit)
            out.append(("delay", nir.Delay(delay=delay)))
        if isinstance(module, (Linear, nn.Linear)):
            node = nir.Linear(weight=weight) if bias is None else nir.Affine(weight, bias)
        else:
            node = nir.Conv2d(
                input_shape=None,
                weight=weight,
                stride=tuple(module.stride),
                padding=module.padding if isinstance(module.padding, str) else module.padding,
                dilation=tuple(module.dilation),
                groups=module.groups,
                bias=np.zeros(weight.shape[0]) if bias is None else bias,
            )
        out.append(("", node))
        return out

    def pool(self, name: str, module: nn.AvgPool2d) -> Any:
        pair = nn.modules.utils._pair
        kernel = np.array(pair(module.kernel_size))
        stride = np.array(pair(module.stride if module.stride is not None else kernel))
        padding = np.array(pair(module.padding))
        if module.ceil_mode:
            raise ValueError(
                f"module {name!r} (AvgPool2d): ceil_mode=True cannot be written to NIR"
            )
        if module.divisor_override == 1:
            return self.nir.SumPool2d(kernel_size=kernel, stride=stride, padding=padding)
        if module.divisor_override is not None:
            raise ValueError(
                f"module {name!r} (AvgPool2d): divisor_override={module.divisor_override} cannot "
                "be written to NIR (None: AvgPool2d, 1: SumPool2d)"
            )
        if padding.any() and not module.count_include_pad:
            raise ValueError(
                f"module {name!r} (AvgPool2d): padding with count_include_pad=False cannot be "
                "written to NIR"
            )
        return self.nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=padding)

    def check_dt(self, name: str, module: nn.Module) -> None:
        for child in _timed([(name, module)]):
            self._check_dt(name, child)

    def _check_dt(self, name: str, module: nn.Module) -> None:
        dt = getattr(module, "dt", None)
        if dt is not None and float(dt) != self.dt:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) has dt={dt} ms, the graph is written "
                f"with dt={self.dt} ms; all modules must share one dt"
            )

    def lif(self, name: str, module: LIFNeuron) -> Any:
        nir, shape = self.nir, tuple(module.shape)
        if bool((module.refrac > 0).any()):
            self.refuse(name, module, "a refractory period (refrac > 0 ms)")
        tau_v = _array(module.tau_v, shape)
        leaky = np.isfinite(tau_v)
        if leaky.any() and not leaky.all():
            raise ValueError(
                f"module {name!r} (LIFNeuron): tau_v is infinite for some neurons only; NIR's LIF "
                "and IF are separate nodes"
            )
        if leaky.all():
            tau, r, _ = self.membrane(module.tau_v, shape)
            return nir.LIF(
                tau=tau,
                r=r,
                v_leak=_array(module.v_rest, shape),
                v_threshold=_below(module.thresh, shape),
                v_reset=_array(module.v_reset, shape),
            )
        v_rest = _array(module.v_rest, shape)
        metadata = {}
        if v_rest.any():  # pysnn's own form, restored exactly by from_nir
            metadata = {
                "pysnn_v_rest": v_rest,
                "pysnn_thresh": _array(module.thresh, shape),
                "pysnn_v_reset": _array(module.v_reset, shape),
            }
        return nir.IF(
            r=np.ones(shape),
            v_threshold=_below(module.thresh - module.v_rest, shape),
            v_reset=_array(module.v_reset - module.v_rest, shape),
            metadata=metadata,
        )

    def li(self, name: str, module: LIReadout) -> Any:
        nir, shape = self.nir, tuple(module.shape)
        tau_v = _array(module.tau_v, shape)
        if np.isfinite(tau_v).all():
            tau, r, _ = self.membrane(module.tau_v, shape)
            return nir.LI(tau=tau, r=r, v_leak=_array(module.v_rest, shape))
        if np.isfinite(tau_v).any() or _array(module.v_rest, shape).any():
            raise ValueError(
                f"module {name!r} (LIReadout): with tau_v=inf (NIR's integrator I) v_rest must be "
                "0 and tau_v infinite for all neurons (I starts at 0 and outputs v)"
            )
        return nir.I(r=np.ones(shape))

    def cuba(self, name: str, module: CubaLIF) -> Any:
        nir, shape = self.nir, tuple(module.neuron.shape)
        syn, mem = module.synapse, module.neuron
        if module.spiking and bool((mem.refrac > 0).any()):
            self.refuse(name, module, "a refractory period (refrac > 0 ms)")
        if _array(syn.v_rest, shape).any():
            raise ValueError(f"module {name!r} (CubaLIF): synapse.v_rest must be 0")
        tau_syn, _, a = self.membrane(syn.tau_v, shape)
        tau, _, b = self.membrane(mem.tau_v, shape)
        step = self.dt * self.unit
        gain = _array(module.gain, shape)
        if self.method == "exact":
            same = np.isclose(tau_syn, tau, rtol=1e-9, atol=0.0)
            safe = np.where(same, 1.0, tau_syn - tau)
            ratio = np.where(same, b * step / tau, tau_syn * (a - b) / safe)
        else:
            ratio = step / tau
        params = {
            "tau_syn": tau_syn,
            "tau_mem": tau,
            "r": gain / ratio,
            "v_leak": _array(mem.v_rest, shape),
            "w_in": tau_syn / step,
        }
        if not module.spiking:
            return nir.CubaLI(**params)
        return nir.CubaLIF(
            v_threshold=_below(mem.thresh, shape), v_reset=_array(mem.v_reset, shape), **params
        )


def _flatten_sequential(module: nn.Sequential, prefix: str) -> List[Tuple[str, nn.Module]]:
    out: List[Tuple[str, nn.Module]] = []
    for child_name, child in module.named_children():
        name = f"{prefix}{child_name}"
        if type(child) is nn.Sequential:
            out.extend(_flatten_sequential(child, name + "."))
        else:
            out.append((name, child))
    return out


def _layer_edges(module: SNNNetwork) -> List[Tuple[str, str]]:
    names = {id(m): n for n, m in module.named_modules()}
    chain = ["input"]
    for _, (connection, neuron) in module.named_layers():
        chain += [names[id(connection)], names[id(neuron)]]
    chain.append("output")
    return list(zip(chain[:-1], chain[1:]))


def _traced(module: nn.Module) -> bool:
    """Whether ``to_nir`` traces ``module``'s wiring: a user's network (an ``SNNNetwork``, or a
    container of modules from outside pysnn that is not an ``nn.Sequential``), rather than a
    module it writes as it is (a neuron, a connection, :class:`CubaLIF`, a chain)."""
    if isinstance(module, SNNNetwork):
        return True
    return (
        type(module) is not nn.Sequential
        and not is_pysnn_module(module)
        and not type(module).__module__.startswith("pysnn.")
        and any(True for _ in module.children())
    )


def _traced_edges(module: nn.Module, sample: torch.Tensor) -> List[Tuple[str, str]]:
    """The ``(source, target)`` edges of ``module``'s step, traced from one step's input
    ``sample`` by the engine's capture (module calls; inputs added together; a module reading a
    neuron's ``spikes`` of the step before is an edge from that neuron)."""
    program = capture(module, sample)
    if not program.captured:
        raise ValueError(
            f"to_nir could not trace {type(module).__name__}: {program.reason}; pass edges="
        )
    sources: Dict[Any, List[str]] = {}  # fx node -> the module outputs it sums
    edges: List[Tuple[str, str]] = []
    for node in program.graph.nodes:
        args = [a for a in node.all_input_nodes]
        if node.op == "placeholder":
            sources[node] = ["input"]
        elif node.op == "get_attr":
            owner, _, attribute = node.target.rpartition(".")
            if attribute != "spikes" or not owner:
                raise ValueError(
                    f"to_nir: the step of {type(module).__name__} reads {node.target}, which "
                    "NIR cannot express (only a neuron's spikes of the step before); pass edges="
                )
            sources[node] = [owner]
        elif node.op == "call_module":
            for arg in args:
                edges += [(source, node.target) for source in sources[arg]]
            sources[node] = [node.target]
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            sources[node] = [source for arg in args for source in sources[arg]]
        elif node.op == "output":
            for arg in args:
                edges += [(source, "output") for source in sources[arg]]
        else:
            what = getattr(node.target, "__name__", node.target)
            raise ValueError(
                f"to_nir: the step of {type(module).__name__} applies {what!s} between modules, "
                "which NIR cannot express (only module calls and sums of their outputs); make it "
                "a module, or pass edges="
            )
    return list(dict.fromkeys(edges))


def to_nir(
    module: nn.Module,
    *,
    edges: Union[None, str, EdgeList] = None,
    sample: Optional[torch.Tensor] = None,
    dt: Optional[float] = None,
    method: str = "exact",
    time_unit: str = "s",
    unsupported: str = "error",
    input_shape: Optional[Sequence[int]] = None,
) -> Any:
    """Write ``module`` as a ``nir.NIRGraph`` (see the module docstring for the equations).

    Args:
        module: an ``nn.Sequential`` of supported modules (a chain), a :class:`NIRNetwork`
            (its own graph), or any module with ``edges``; a single supported module is a chain
            of one.
        edges: the wiring of a module that is not a chain: ``(source, target)`` pairs of names
            from ``module.named_modules()`` and ``"input"`` / ``"output"``; ``"layers"`` for
            the :meth:`~pysnn.network.SNNNetwork.add_layer` layers chained in registration
            order. Inputs from several edges are summed. By default a user's network (an
            :class:`~pysnn.network.SNNNetwork` or any module that is not a chain) is traced
            from ``sample`` by :func:`pysnn.engine.capture`.
        sample: one step's input ``(B, *input_shape)`` to trace a network's wiring from
            (default: zeros of ``input_shape`` with ``B = 1``); the module is not changed.
        dt: the time step (ms); by default that of the modules (which must agree).
        method: ``"exact"`` (default) or ``"euler"``: how NIR's equations are discretised by
            the reader the graph is meant for (``"euler"`` for snnTorch and Norse, which then
            reproduce pysnn's spikes).
        time_unit: ``"s"`` (default, NIR's convention) or ``"ms"``: the unit of the times
            written (``tau``, ``Delay``).
        unsupported: ``"error"`` (default) raises for an option NIR cannot express
            (refractory period, per-synapse delay); ``"warn"`` drops it with a ``UserWarning``.
        input_shape: per-sample input shape (without batch), written to the ``Input`` node; by
            default that of the first ``Linear`` or neuron; required for a graph starting with a
            convolution, pooling or flatten.

    Returns:
        A ``nir.NIRGraph`` (``nir.write(path, graph)`` saves it).

    Raises:
        TypeError: an unsupported module.
        ValueError: bad arguments, an unknown name in ``edges``, modules with different ``dt``,
            or an option NIR cannot express (with ``unsupported="error"``).
    """
    nir = _nir()
    method = _check_choice("method", method, METHODS)
    _check_choice("time_unit", time_unit, TIME_UNITS)
    unsupported = _check_choice("unsupported", unsupported, UNSUPPORTED)
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    inputs, outputs = ["input"], ["output"]
    if isinstance(module, NIRNetwork) and edges is None:
        modules = [(n, module.nodes[k]) for n, k in module.node_keys.items()]
        edges = list(module.edges)
        inputs, outputs = module.input_names, module.output_names
    elif edges is None and not _traced(module):
        if type(module) is nn.Sequential:
            modules = _flatten_sequential(module, "")
        else:
            modules = [(type(module).__name__.lower(), module)]
        chain = ["input"] + [n for n, _ in modules] + ["output"]
        edges = list(zip(chain[:-1], chain[1:]))
    else:
        if edges is None:  # a user's network: its wiring traced from one step
            if sample is None:
                if input_shape is None:
                    raise ValueError(
                        f"to_nir({type(module).__name__}): give sample= (one step's input, "
                        "(B, ...)) or input_shape= to trace its wiring, or edges="
                    )
                sample = torch.zeros(1, *input_shape)
            if not isinstance(sample, torch.Tensor) or sample.dim() < 2:
                raise ValueError(
                    f"sample must be one step's input (B, ...), got "
                    f"{tuple(sample.shape) if isinstance(sample, torch.Tensor) else sample!r}"
                )
            edges = _traced_edges(module, sample)
            if input_shape is None:
                input_shape = tuple(sample.shape[1:])
        if isinstance(edges, str):
            if edges != "layers" or not isinstance(module, SNNNetwork):
                raise ValueError(
                    "edges must be a list of (source, target) names, or 'layers' for an "
                    f"SNNNetwork; got {edges!r}"
                )
            edges = _layer_edges(module)
        edges = _check_edges(edges)
        named = dict(module.named_modules())
        used = {n for edge in edges for n in edge if n not in ("input", "output")}
        missing = sorted(n for n in used if n not in named or n == "")
        if missing:
            raise ValueError(
                f"edges name modules that {type(module).__name__} does not have: {missing}; use "
                "names from module.named_modules() and 'input' / 'output'"
            )
        modules = [(n, named[n]) for n in named if n in used]
    dts = {float(m.dt) for m in _timed(modules)}
    if dt is None:
        if len(dts) > 1:
            raise ValueError(f"the modules have different dt {sorted(dts)} ms; pass dt=")
        if not dts:
            raise ValueError("no module has a dt: pass dt= (ms)")
        dt = dts.pop()
    exporter = _Exporter(_check_dt(dt), TIME_UNITS[time_unit], method, unsupported)
    nodes: Dict[str, Any] = {}
    entry: Dict[str, str] = {}
    exit_: Dict[str, str] = {}
    graph_edges: List[Tuple[str, str]] = []
    identities: Dict[str, None] = {}
    for name, child in modules:
        exporter.check_dt(name, child)
        chain = exporter.nodes(name, child)
        if not chain:
            identities[name] = None
            continue
        keys = [name + ("." + suffix if suffix else "") for suffix, _ in chain]
        for key, (_, node) in zip(keys, chain):
            nodes[key] = node
        graph_edges += list(zip(keys[:-1], keys[1:]))
        entry[name], exit_[name] = keys[0], keys[-1]
    edges = _bypass(edges, identities)
    for name in inputs:
        nodes[name] = nir.Input(input_type=_input_type(name, edges, nodes, entry, input_shape))
    for source, target in edges:
        graph_edges.append((exit_.get(source, source), entry.get(target, target)))
    for name in outputs:
        feeding = [nodes[s] for s, t in graph_edges if t == name]
        nodes[name] = nir.Output(output_type=_output_type(feeding))
    for key, node in nodes.items():
        _check_finite_node(key, node)
    graph = nir.NIRGraph(nodes=nodes, edges=graph_edges, type_check=False)
    try:  # fills in the shapes of Conv2d, Flatten, ... (needed by nir.write)
        graph.infer_types()
    except Exception as err:
        raise ValueError(f"NIR could not infer the graph's shapes: {err}") from err
    graph.metadata = {"source": "pysnn", "dt_ms": dt, "method": method, "time_unit": time_unit}
    return graph


def _timed(modules: List[Tuple[str, nn.Module]]) -> List[nn.Module]:
    """The modules whose ``dt`` matters: neurons and delayed connections (a connection without
    delay computes the same for any ``dt``)."""
    found = []
    for _, module in modules:
        for child in module.modules():
            if isinstance(child, (Neuron, CubaLIF)) or getattr(child, "max_delay", 0) > 0:
                found.append(child)
    return found


def _check_edges(edges: Any) -> List[Tuple[str, str]]:
    try:
        pairs = [tuple(edge) for edge in edges]
    except TypeError:
        raise ValueError(f"edges must be a list of (source, target) names, got {edges!r}") from None
    if not pairs or any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
        raise ValueError(f"edges must be a non-empty list of (source, target) names, got {edges!r}")
    if any(p[0] == "output" or p[1] == "input" for p in pairs):
        raise ValueError("'output' cannot be the source of an edge, nor 'input' a target")
    return pairs


def _bypass(edges: List[Tuple[str, str]], identities: Dict[str, None]) -> List[Tuple[str, str]]:
    """Remove identity modules, connecting each source of one to each of its targets."""
    for name in identities:
        sources = [s for s, t in edges if t == name]
        targets = [t for s, t in edges if s == name]
        edges = [e for e in edges if name not in e] + [(s, t) for s in sources for t in targets]
    return edges


def _input_type(
    end: str,
    edges: List[Tuple[str, str]],
    nodes: Dict[str, Any],
    entry: Dict[str, str],
    input_shape: Optional[Sequence[int]],
) -> np.ndarray:
    """The per-sample shape of the graph input ``end``: ``input_shape``, or the input shape of
    a node it feeds (a ``Linear``, a neuron)."""
    if input_shape is not None:
        shape = np.array([int(s) for s in input_shape])
        if shape.size == 0 or (shape <= 0).any():
            raise ValueError(f"input_shape must be positive sizes, got {input_shape!r}")
        return shape
    for source, target in edges:
        node = nodes.get(entry.get(target, ""))
        if source == end and node is not None:
            shape = node.input_type.get("input") if node.input_type else None
            if shape is not None and np.size(shape) > 0:
                return np.array(shape)
    raise ValueError(
        f"the shape of the graph input {end!r} cannot be found from the module it feeds (a "
        "convolution, pooling or flatten): pass input_shape=(C, H, W) without the batch"
    )


def _output_type(feeding: List[Any]) -> np.ndarray:
    for node in feeding:
        shape = node.output_type.get("output") if node.output_type else None
        if shape is not None and np.size(shape) > 0:
            return np.array(shape)
    return np.array([])


# ---------------------------------------------------------------------------------- import


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return torch.tensor(np.array(value, dtype=np.float64)).to(torch.get_default_dtype())


def _f64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _flatten_graph(graph: Any, prefix: str = "") -> Tuple[Dict[str, Any], List[Tuple[str, str]]]:
    """Nodes and edges with every nested ``NIRGraph`` node replaced by its contents."""
    nir = _nir()
    nodes: Dict[str, Any] = {}
    edges: List[Tuple[str, str]] = []
    inner: Dict[str, Tuple[List[str], List[str]]] = {}  # subgraph -> (entries, exits)
    for key, node in graph.nodes.items():
        name = prefix + key
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _flatten_graph(node, name + ".")
            ins = [name + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            outs = [name + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            entries = [t for s, t in sub_edges if s in ins]
            exits = [s for s, t in sub_edges if t in outs]
            for k in ins + outs:
                del sub_nodes[k]
            sub_edges = [(s, t) for s, t in sub_edges if s not in ins and t not in outs]
            nodes.update(sub_nodes)
            edges += sub_edges
            inner[name] = (entries, exits)
        else:
            nodes[name] = node
    for source, target in graph.edges:
        sources = inner.get(prefix + source, (None, [prefix + source]))[1]
        targets = inner.get(prefix + target, ([prefix + target], None))[0]
        edges += [(s, t) for s in sources for t in targets]
    return nodes, edges


class _Importer:
    """Turns NIR nodes into pysnn modules (see :func:`from_nir`)."""

    def __init__(self, dt: float, unit: float, method: str) -> None:
        self.nir = _nir()
        self.dt, self.unit, self.method = dt, unit, method
        self.step = dt * unit

    def decay(self, tau: np.ndarray) -> np.ndarray:
        if self.method == "exact":
            return np.exp(-self.step / tau)
        return 1.0 - self.step / tau

    def tau_ms(self, tau: np.ndarray, name: str) -> torch.Tensor:
        """pysnn's ``tau_v`` (ms) whose ``exp(-dt/tau_v)`` is this method's decay."""
        b = self.decay(tau)
        if not ((b > 0) & (b < 1)).all():
            raise ValueError(
                f"node {name!r}: tau = {tau.min():g}..{tau.max():g} (NIR time unit) gives a decay "
                f"factor outside (0, 1) at dt = {self.dt} ms with method={self.method!r}; use a "
                "smaller dt"
            )
        return _tensor(-self.dt / np.log(b))

    def scaled(self, scale: np.ndarray, module: nn.Module) -> nn.Module:
        """``module``, behind a :class:`Scale` unless every factor is 1 in the default dtype."""
        factor = _tensor(scale)
        if bool((factor == 1).all()):
            return module
        return nn.Sequential(Scale(factor), module)

    def shape_of(self, name: str, node: Any, shapes: Dict[str, Tuple[int, ...]]) -> Tuple[int, ...]:
        shape = shapes.get(name)
        if shape is None:
            raise ValueError(
                f"node {name!r} ({type(node).__name__}): its shape is unknown (no input_type and "
                "no Linear/Affine before it); give the graph's node input_type"
            )
        return shape

    def module(
        self,
        name: str,
        node: Any,
        shape: Optional[Tuple[int, ...]],
        delay: Optional[np.ndarray] = None,
    ) -> nn.Module:
        """The pysnn module of one node; ``delay`` (ms, per input) from a folded ``Delay``."""
        nir = self.nir
        if isinstance(node, (nir.Affine, nir.Linear)):
            weight = _f64(node.weight)
            bias = isinstance(node, nir.Affine) and node.bias is not None
            if delay is None or np.unique(delay).size == 1:
                delay = 0.0 if delay is None else float(delay.flat[0])
            else:  # one delay per input: per synapse (out, in)
                delay = _tensor(np.broadcast_to(delay.reshape(1, -1), weight.shape))
            fc = Linear(weight.shape[1], weight.shape[0], self.dt, delay, bias=bias)
            with torch.no_grad():
                fc.weight.copy_(_tensor(weight))
                if bias:
                    fc.bias.copy_(_tensor(node.bias))
            return fc
        if isinstance(node, nir.Conv2d):
            weight = _f64(node.weight)
            padding = node.padding
            padding = padding if isinstance(padding, str) else tuple(int(p) for p in padding)
            conv = Conv2d(
                weight.shape[1] * int(node.groups),
                weight.shape[0],
                tuple(weight.shape[2:]),
                stride=tuple(int(s) for s in np.broadcast_to(node.stride, 2)),
                padding=padding,
                dilation=tuple(int(d) for d in np.broadcast_to(node.dilation, 2)),
                groups=int(node.groups),
                bias=node.bias is not None and bool(_f64(node.bias).any()),
                dt=self.dt,
                delay=0.0 if delay is None else float(delay.flat[0]),
            )
            with torch.no_grad():
                conv.weight.copy_(_tensor(weight))
                if conv.bias is not None:
                    conv.bias.copy_(_tensor(node.bias))
            return conv
        if isinstance(node, nir.Flatten):
            start = node.start_dim + 1 if node.start_dim >= 0 else node.start_dim
            end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
            return nn.Flatten(start, end)
        if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            pair = lambda v: tuple(int(x) for x in np.broadcast_to(np.asarray(v), 2))  # noqa: E731
            return nn.AvgPool2d(
                pair(node.kernel_size),
                pair(node.stride),
                pair(node.padding),
                divisor_override=1 if isinstance(node, nir.SumPool2d) else None,
            )
        if isinstance(node, nir.Scale):
            return Scale(_tensor(node.scale))
        if isinstance(node, (nir.LIF, nir.LI, nir.IF, nir.I, nir.CubaLIF, nir.CubaLI)):
            return self.neuron(name, node, shape)
        raise TypeError(
            f"node {name!r}: NIR {type(node).__name__} is not supported by pysnn.nir.from_nir; "
            "supported: Affine, Linear, Conv2d, Flatten, AvgPool2d, SumPool2d, Scale, Delay "
            "(before Linear/Conv2d), LIF, LI, IF, I, CubaLIF, CubaLI"
        )

    def neuron(self, name: str, node: Any, shape: Tuple[int, ...]) -> nn.Module:
        nir, dt = self.nir, self.dt
        full = lambda v: np.broadcast_to(_f64(v), shape)  # noqa: E731
        if isinstance(node, (nir.IF, nir.I)):
            r = full(node.r)
            if isinstance(node, nir.I):
                return self.scaled(r, LIReadout(shape, dt, tau_v=math.inf, v_rest=0.0))
            thresh, v_rest, v_reset = _above(full(node.v_threshold)), 0.0, full(node.v_reset)
            own = _pysnn_if(node, full)
            if own is not None:
                thresh, v_rest, v_reset = own
            if_neuron = IFNeuron(
                shape, dt, thresh=thresh, v_rest=v_rest, v_reset=_tensor(v_reset), refrac=0.0
            )
            return self.scaled(r, if_neuron)
        if isinstance(node, (nir.LIF, nir.LI)):
            tau, r = full(node.tau), full(node.r)
            b = self.decay(tau)
            tau_v = self.tau_ms(tau, name)
            scale = r * self.step / tau * (b if self.method == "exact" else 1.0)
            v_leak = _tensor(full(node.v_leak))
            if isinstance(node, nir.LI):
                return self.scaled(scale, LIReadout(shape, dt, tau_v=tau_v, v_rest=v_leak))
            lif = LIFNeuron(
                shape,
                dt,
                tau_v=tau_v,
                v_rest=v_leak,
                thresh=_above(full(node.v_threshold)),
                v_reset=_tensor(full(node.v_reset)),
                refrac=0.0,
            )
            return self.scaled(scale, lif)
        tau_syn, tau = full(node.tau_syn), full(node.tau_mem)
        a, b = self.decay(tau_syn), self.decay(tau)
        if self.method == "exact":
            same = np.isclose(tau_syn, tau, rtol=1e-9, atol=0.0)
            safe = np.where(same, 1.0, tau_syn - tau)
            gain = full(node.r) * np.where(same, b * self.step / tau, tau_syn * (a - b) / safe)
        else:
            gain = full(node.r) * self.step / tau
        spiking = isinstance(node, nir.CubaLIF)
        cuba = CubaLIF(
            shape,
            dt,
            tau_syn=self.tau_ms(tau_syn, name),
            tau_v=self.tau_ms(tau, name),
            thresh=_above(full(node.v_threshold)) if spiking else 1.0,
            v_rest=_tensor(full(node.v_leak)),
            v_reset=_tensor(full(node.v_reset)) if spiking else 0.0,
            gain=_tensor(gain),
            spiking=spiking,
        )
        return self.scaled(full(node.w_in) * self.step / tau_syn, cuba)


def _pysnn_if(node: Any, full: Any) -> Optional[Tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """``(thresh, v_rest, v_reset)`` of a pysnn IF neuron written by :func:`to_nir` with
    ``v_rest`` not 0 (from the node's metadata), if the node still says the same."""
    meta = node.metadata or {}
    if not all(k in meta for k in ("pysnn_v_rest", "pysnn_thresh", "pysnn_v_reset")):
        return None
    v_rest, thresh = full(meta["pysnn_v_rest"]), full(meta["pysnn_thresh"])
    v_reset = full(meta["pysnn_v_reset"])
    same = np.allclose(full(node.v_threshold), thresh - v_rest, rtol=1e-6, atol=1e-6)
    if not same or not np.allclose(full(node.v_reset), v_reset - v_rest, rtol=1e-6, atol=1e-6):
        return None  # edited after export: the node's own values hold
    return _tensor(thresh), _tensor(v_rest), v_reset


_NEURONS = ("LIF", "LI", "IF", "I", "CubaLIF", "CubaLI")


def _shapes(nodes: Dict[str, Any], edges: List[Tuple[str, str]]) -> Dict[str, Tuple[int, ...]]:
    """Per-sample shapes of the neuron nodes: from their parameters, their input_type, or the
    Linear / Affine node feeding them."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name, node in nodes.items():
        if type(node).__name__ not in _NEURONS:
            continue
        fields = ("tau", "tau_mem", "r", "v_threshold")
        params = [_f64(getattr(node, f)) for f in fields if hasattr(node, f)]
        params = [p for p in params if p.ndim > 0 and p.size > 1]
        typed = (node.input_type or {}).get("input")
        if params:
            shapes[name] = tuple(params[0].shape)
        elif typed is not None and np.size(typed) > 0 and np.all(np.asarray(typed) > 0):
            shapes[name] = tuple(int(s) for s in np.asarray(typed).reshape(-1))
        else:
            for source, target in edges:
                weight = getattr(nodes.get(source), "weight", None)
                if target == name and type(nodes[source]).__name__ in ("Affine", "Linear"):
                    shapes[name] = (int(np.shape(weight)[0]),)
                    break
    return shapes


def _fold_delays(
    nodes: Dict[str, Any], edges: List[Tuple[str, str]], importer: _Importer
) -> Tuple[List[Tuple[str, str]], Dict[str, np.ndarray]]:
    """Remove each ``Delay`` node feeding exactly one Linear/Affine/Conv2d (and nothing else),
    returning the edges without it and the delay (ms) of that connection."""
    delays: Dict[str, np.ndarray] = {}
    for name in [n for n, node in nodes.items() if type(node).__name__ == "Delay"]:
        targets = [t for s, t in edges if s == name]
        target = targets[0] if len(targets) == 1 else None
        kind = type(nodes.get(target)).__name__
        if kind not in ("Linear", "Affine", "Conv2d") or [s for s, t in edges if t == target] != [
            name
        ]:
            raise ValueError(
                f"node {name!r} (Delay): pysnn reads a Delay only as the delay of the one Linear, "
                "Affine or Conv2d node it feeds (and nothing else feeds)"
            )
        ms = _f64(nodes[name].delay) / importer.unit
        steps = np.round(ms / importer.dt)
        if not np.allclose(steps * importer.dt, ms, rtol=1e-6, atol=1e-9):
            raise ValueError(
                f"node {name!r} (Delay): delays {ms.min():g}..{ms.max():g} ms are not whole steps "
                f"of dt = {importer.dt} ms"
            )
        if kind == "Conv2d" and np.unique(steps).size > 1:
            raise ValueError(f"node {name!r} (Delay): a Conv2d takes one delay for all inputs")
        delays[target] = steps * importer.dt
        sources = [s for s, t in edges if t == name]
        edges = [e for e in edges if name not in e] + [(s, target) for s in sources]
        del nodes[name]
    return edges, delays


class NIRNetwork(SNNNetwork):
    """A NIR graph run with pysnn modules: ``forward`` is one time step (see :func:`from_nir`).

    ``forward(x)``: with one graph input ``x`` ``(B, *input_shape)``; with several a dict
    ``{input name: tensor}``. Returns the tensor reaching the output node (spikes, or ``v`` of a
    readout), or a dict ``{output name: tensor}`` with several outputs. What several edges bring
    to a node is summed. Edges that close a cycle deliver the previous step's output (see the
    module docstring); :meth:`reset_state` clears them with the modules' state.

    Attributes:
        nodes: ``nn.ModuleDict`` of the modules (keys: NIR names with ``.`` replaced by ``_``).
        node_keys: ``{NIR name: key in nodes}``.
        edges: the graph's edges between NIR names (``Delay`` nodes folded into connections).
        order: evaluation order of the nodes.
        input_names, output_names: the graph's ``Input`` and ``Output`` nodes.
    """

    def __init__(
        self,
        modules: Dict[str, nn.Module],
        edges: List[Tuple[str, str]],
        input_names: List[str],
        output_names: List[str],
    ) -> None:
        super().__init__()
        self.node_keys = {name: name.replace(".", "_") for name in modules}
        if len(set(self.node_keys.values())) != len(self.node_keys):
            raise ValueError(f"node names collide once '.' is replaced by '_': {list(modules)}")
        self.nodes = nn.ModuleDict({self.node_keys[n]: m for n, m in modules.items()})
        self.edges = list(edges)
        self.input_names, self.output_names = list(input_names), list(output_names)
        known = set(modules) | set(input_names) | set(output_names)
        for source, target in self.edges:
            for name in (source, target):
                if name not in known:
                    raise ValueError(f"edge ({source!r}, {target!r}) names an unknown node")
        self.order, self.late = self._order()
        self._incoming: Dict[str, List[Tuple[str, bool]]] = {}  # target -> [(source, late)]
        for source, target in self.edges:
            self._incoming.setdefault(target, []).append((source, (source, target) in self.late))
        self._previous: Dict[str, torch.Tensor] = {}

    def _order(self) -> Tuple[List[str], set]:
        """Depth-first post-order from the inputs, reversed; edges into a node on the DFS stack
        (closing a cycle) are "late": they deliver the previous step's output."""
        targets: Dict[str, List[str]] = {}
        for source, target in self.edges:
            targets.setdefault(source, []).append(target)
        done, on_stack, post, late = set(), set(), [], set()

        def visit(root: str) -> None:
            # iterative (a recursive search overflowed Python's stack at ~1000 chained nodes)
            on_stack.add(root)
            stack = [(root, iter(targets.get(root, [])))]
            while stack:
                name, pending = stack[-1]
                for target in pending:
                    if target in on_stack:
                        late.add((name, target))
                    elif target not in done:
                        on_stack.add(target)
                        stack.append((target, iter(targets.get(target, []))))
                        break
                else:
                    stack.pop()
                    on_stack.discard(name)
                    done.add(name)
                    post.append(name)

        for name in self.input_names:
            if name not in done:
                visit(name)
        unreached = [n for n in self.node_keys if n not in done]
        if unreached:
            raise ValueError(f"nodes not reachable from the graph's inputs: {unreached}")
        order = [n for n in reversed(post) if n in self.node_keys]
        return order, late

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.double()``, ...: the outputs carried by cycle-closing edges follow."""
        module = super()._apply(fn, recurse)
        self._previous = {k: fn(v) for k, v in self._previous.items()}
        return module

    def reset_state(self) -> None:
        """Reset every module and forget the outputs carried by cycle-closing edges."""
        super().reset_state()
        self._previous = {}

    def detach_state(self) -> None:
        """Detach the modules' state and the outputs carried by cycle-closing edges."""
        super().detach_state()
        self._previous = {k: v.detach() for k, v in self._previous.items()}

    def forward(
        self, x: Union[torch.Tensor, Dict[str, torch.Tensor]]
    ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        """One step; see the class docstring for ``x`` and the result."""
        if isinstance(x, dict):
            missing = set(self.input_names) - set(x)
            if missing:
                raise ValueError(f"x lacks the graph inputs {sorted(missing)}")
            values = dict(x)
        elif len(self.input_names) == 1:
            values = {self.input_names[0]: x}
        else:
            raise TypeError(f"x must be a dict {{name: tensor}} for the inputs {self.input_names}")
        previous = self._previous
        for name in self.order:
            values[name] = self.nodes[self.node_keys[name]](self._gather(name, values, previous))
        self._previous = {s: values[s] for s, t in self.late}
        outputs = {name: self._gather(name, values, previous) for name in self.output_names}
        return outputs[self.output_names[0]] if len(outputs) == 1 else outputs

    def _bias(self, name: str) -> Optional[torch.Tensor]:
        """The output of node ``name`` for a zero input, as far as it is not zero: the bias of a
        connection (what the previous step's output of a recurrent connection is before the
        first step, as in snnTorch's ``RLeaky``); ``None`` for anything else."""
        module = self.nodes[self.node_keys[name]]
        bias = getattr(module, "bias", None)
        if not isinstance(module, (Linear, Conv2d)) or bias is None:
            return None
        return bias if isinstance(module, Linear) else bias[:, None, None]

    def _gather(self, name: str, values: Dict, previous: Dict) -> torch.Tensor:
        total = None
        for source, late in self._incoming.get(name, ()):
            if not late:
                value = values[source]
            elif source in previous:
                value = previous[source]
            else:  # first step: a connection's response to no input
                value = self._bias(source)
            if value is not None:
                total = value if total is None else total + value
        if total is None:
            raise RuntimeError(
                f"node {name!r} receives nothing in this step (all its inputs come through "
                "cycle-closing edges); add an input edge"
            )
        return total


def from_nir(
    graph: Any, dt: float = 1.0, *, method: str = "exact", time_unit: str = "s"
) -> NIRNetwork:
    """Build a :class:`NIRNetwork` running ``graph`` with pysnn modules, one step of ``dt`` ms
    per ``forward`` call (equations and the mapping in the module docstring).

    Args:
        graph: a ``nir.NIRGraph`` (e.g. ``nir.read(path)``); nested graphs (snnTorch's
            ``RLeaky``) are flattened.
        dt: the time step (ms), > 0.
        method: ``"exact"`` (default, the exact solution of NIR's equations over a step) or
            ``"euler"`` (forward Euler, as snnTorch and Norse simulate their exports).
        time_unit: ``"s"`` (default) or ``"ms"``: the unit of the graph's times.

    Raises:
        TypeError: ``graph`` is not a ``NIRGraph``, or holds a node pysnn cannot run.
        ValueError: bad ``dt`` / ``method`` / ``time_unit``, a time constant too short for
            ``dt``, a ``Delay`` that is not whole steps or not before a connection, a neuron
            whose shape cannot be found.
    """
    nir = _nir()
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph must be a nir.NIRGraph, got {type(graph).__name__}")
    dt = _check_dt(dt)
    method = _check_choice("method", method, METHODS)
    _check_choice("time_unit", time_unit, TIME_UNITS)
    importer = _Importer(dt, TIME_UNITS[time_unit], method)
    nodes, edges = _flatten_graph(graph)
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if not inputs or not outputs:
        raise ValueError("graph must have at least one Input and one Output node")
    for source, target in edges:
        if target in inputs or source in outputs:
            kind = "into the Input" if target in inputs else "out of the Output"
            raise ValueError(
                f"edge ({source!r}, {target!r}) goes {kind} node {target if target in inputs else source!r}: "
                "an Input node takes the data given to forward, nothing else, and an Output "
                "node feeds nothing. Route it to another node (a recurrent edge goes to the "
                "node after the Input)"
            )
    for name, node in nodes.items():
        _check_finite_node(name, node)
    for name in inputs + outputs:
        del nodes[name]
    edges, delays = _fold_delays(nodes, edges, importer)
    shapes = _shapes(nodes, edges)
    modules = {}
    for name, node in nodes.items():
        shape = importer.shape_of(name, node, shapes) if type(node).__name__ in _NEURONS else None
        modules[name] = importer.module(name, node, shape, delays.get(name))
    _check_sizes(modules, edges)
    return NIRNetwork(modules, edges, inputs, outputs)


#: NIR fields that must be finite (time constants and thresholds have their own checks, and an
#: infinite ``tau`` is a neuron without leak)
_FINITE_FIELDS = ("weight", "bias", "scale", "r", "w_in", "v_leak", "v_reset", "delay")


def _check_finite_node(name: str, node: Any) -> None:
    """Raise ``ValueError`` naming the node and the field if a value that must be finite is
    NaN or infinite (it would make every downstream value NaN or infinite)."""
    for field in _FINITE_FIELDS:
        value = getattr(node, field, None)
        if value is None or isinstance(value, str):
            continue
        try:
            array = _f64(value)
        except (TypeError, ValueError):
            continue
        if array.size and not np.isfinite(array).all():
            bad = array[~np.isfinite(array)]
            raise ValueError(
                f"node {name!r} ({type(node).__name__}): {field} holds {bad.size} non-finite "
                f"value(s) ({bad.flat[0]}); every value downstream would be NaN or infinite. "
                "Fix the graph (or the model it was exported from)"
            )
    for field in ("tau", "tau_mem", "tau_syn", "v_threshold"):
        value = getattr(node, field, None)
        if value is not None and np.isnan(_f64(value)).any():
            raise ValueError(f"node {name!r} ({type(node).__name__}): {field} holds NaN")


def _unscaled(module: nn.Module) -> nn.Module:
    """An imported module without the :class:`Scale` put in front of it."""
    if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], Scale):
        return module[1]
    return module


def _sizes(module: nn.Module) -> Tuple[Optional[int], Optional[int]]:
    """``(input size, output size)`` per sample of an imported module, where it is fixed."""
    module = _unscaled(module)
    if isinstance(module, Linear):
        return int(np.prod(module.in_features)), int(np.prod(module.out_features))
    if isinstance(module, CubaLIF):
        module = module.neuron
    if isinstance(module, Neuron):
        size = int(np.prod(module.shape))
        return size, size
    return None, None


def _check_sizes(modules: Dict[str, nn.Module], edges: List[Tuple[str, str]]) -> None:
    """Raise ``ValueError`` naming both nodes where a node's output size differs from the
    input size of the node it feeds (both fixed: Linear/Affine, neurons)."""
    for source, target in edges:
        if source not in modules or target not in modules:
            continue
        out, into = _sizes(modules[source])[1], _sizes(modules[target])[0]
        if out is not None and into is not None and out != into:
            raise ValueError(
                f"edge ({source!r}, {target!r}): node {source!r} "
                f"({type(_unscaled(modules[source])).__name__}) outputs {out} values per sample "
                f"but node {target!r} ({type(_unscaled(modules[target])).__name__}) takes "
                f"{into}; fix the weight "
                "shape or the neuron parameters in the graph"
            )
