r"""Synapse models: exponential and alpha current synapses, conductance synapses.

A synapse module sits between a connection and the neuron it feeds, ``lif(syn(fc(x)))``: the
connection delivers the weights of the spikes arriving this step, the synapse turns them into a
synaptic current with its own time course, and returns what the neuron adds in this step.
Synapses are linear in their input, so all synapses of one kind onto a neuron share one state
variable per postsynaptic neuron (the sum of their currents): state ``(B, *shape)`` with the
neuron's ``shape``, however many synapses there are.

**Membrane equation.** For a neuron with a leaky membrane (:class:`~pysnn.neuron.LIFNeuron`,
:class:`~pysnn.neuron.AdaptiveLIFNeuron`, :class:`~pysnn.readout.LIReadout`) the synaptic current
enters as in Brian2's Vogels-Abbott examples, in units of voltage (current times membrane
resistance, mV):

.. math:: \tau_m \frac{dv}{dt} = -(v - v_{rest}) + I_{syn}(t)

and the synapse returns the **exact** increment of ``v`` that :math:`I_{syn}` causes over the
step, which the neuron adds after its own (exact) leak:

.. math::

    x_n = \int_{t_n}^{t_n + dt} e^{-(t_n + dt - s)/\tau_m}\, \frac{I_{syn}(s)}{\tau_m}\, ds

With a current synapse this makes ``LIFNeuron`` + synapse the exact solution of the linear ODE
at every step (until a threshold crossing, which is detected at the end of a step). For any other
neuron (one that holds its input over the step, such as
:class:`~pysnn.neuron.IzhikevichNeuron`), ``drive="current"``: the synapse returns the mean
current over the step, :math:`\frac{1}{dt}\int_{t_n}^{t_n+dt} I_{syn}(s)\, ds` (mV), which
delivers the exact charge. ``drive="auto"`` (default) picks ``"increment"`` for the leaky
membranes above and ``"current"`` for others.

**Order within a step.** Spikes arriving in step :math:`n` (the connection's output) act at the
start of the step, :math:`t_n`: the synapse first adds them to its state, then returns the input
for :math:`[t_n, t_n + dt]`, then the neuron steps. A spike arriving in step 0 thus shows in
``lif.v`` after step :math:`k` as the PSP at :math:`t = (k + 1)\, dt`. A conductance synapse reads
the neuron's membrane potential ``v`` at :math:`t_n`, i.e. *before* the neuron's step: call the
synapse before the neuron in a step (``lif(syn_e(fc_e(s)) + syn_i(fc_i(s)))`` does).

**State** (``g``, ``h``) is handled exactly like neuron state (synapses are built on the
:class:`~pysnn.neuron.Neuron` state API as non-spiking units): created lazily for the first batch,
re-created when the batch size changes, moved by ``.to()``/``.double()``, restored by
:meth:`reset_state` (which :meth:`pysnn.network.SNNNetwork.reset_state` reaches), cut by
:meth:`detach_state`, not part of ``state_dict`` (the time constants and reversal potentials
are). The neuron is *referenced*, not registered as a submodule: its parameters appear once, where
the network registers it. ``dt`` is the neuron's ``dt``, read live.

Units: time constants in ms, potentials in mV; a current synapse's state and the weights feeding
it in mV (the jump of :math:`I_{syn}` per spike), a conductance synapse's state and weights
dimensionless (in units of the leak conductance, as Brian2's COBA example).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from pysnn._checks import ParamLike, check_choice, check_input
from pysnn.functional.decay import exp_decay
from pysnn.neuron import LIFNeuron, Neuron
from pysnn.readout import LIReadout

__all__ = [
    "Synapse",
    "ExponentialSynapse",
    "AlphaSynapse",
    "ConductanceSynapse",
    "exponential_kernels",
    "alpha_kernels",
    "DRIVES",
]

#: How a synapse's current reaches its neuron (see the module docstring).
DRIVES = ("auto", "increment", "current")
_LEAKY = (LIFNeuron, LIReadout)


def _ratio(rate: torch.Tensor, dt: float) -> torch.Tensor:
    r""":math:`(1 - e^{-r\, dt}) / r` for a rate :math:`r` (1/ms) of any sign; ``dt`` at ``r = 0``."""
    x = rate * dt
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(rate), rate)
    series = dt * (1 - x / 2 + x * x / 6)
    return torch.where(small, series, -torch.expm1(-x) / safe)


def _ratio2(rate: torch.Tensor, dt: float) -> torch.Tensor:
    r""":math:`\int_0^{dt} u\, e^{-r u}\, du = (1 - e^{-r\,dt}(1 + r\,dt)) / r^2`; ``dt^2/2`` at 0."""
    x = rate * dt
    small = x.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(rate), rate)
    series = dt * dt * (0.5 - x / 3 + x * x / 8)
    exact = (-torch.expm1(-x) - x * torch.exp(-x)) / (safe * safe)
    return torch.where(small, series, exact)


def _check_membrane(tau_m: torch.Tensor) -> None:
    """``ValueError`` for an infinite membrane time constant (one host read: run when the
    constant changed, or at every step for a learned ``nn.Parameter``, whose check is skipped)."""
    if tau_m.requires_grad:
        return
    if not bool(torch.isfinite(tau_m).all()):
        raise ValueError(
            "the neuron has no leak (tau_v = inf, e.g. IFNeuron): a synaptic current "
            "(tau_m dv/dt = -(v - v_rest) + I) needs a finite membrane time constant; use a "
            "LIFNeuron, or drive='current' to add the mean current (mV) per step"
        )


def exponential_kernels(
    tau_syn: torch.Tensor, tau_m: Optional[torch.Tensor], dt: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Decay factor and output factor of an exponential synapse over a step of ``dt`` ms.

    Returns ``(a, k)``: :math:`a = e^{-dt/\tau_s}` and, with :math:`g` the state at the start of
    the step,

    - ``tau_m`` given (ms): the membrane increment per unit of :math:`g`,
      :math:`k = \frac{1}{\tau_m}\int_0^{dt} e^{-(dt-u)/\tau_m} e^{-u/\tau_s} du
      = \frac{\tau_s}{\tau_s - \tau_m}\left(e^{-dt/\tau_s} - e^{-dt/\tau_m}\right)`
      (:math:`\frac{dt}{\tau_m} e^{-dt/\tau_m}` when :math:`\tau_s = \tau_m`);
    - ``tau_m=None``: the mean over the step, :math:`k = \frac{\tau_s}{dt}(1 - e^{-dt/\tau_s})`.
    """
    a = exp_decay(tau_syn, dt)
    if tau_m is None:
        return a, _ratio(1 / tau_syn, dt) / dt
    _check_membrane(tau_m)
    b = exp_decay(tau_m, dt)
    return a, b * _ratio(1 / tau_syn - 1 / tau_m, dt) / tau_m


def alpha_kernels(
    tau_syn: torch.Tensor, tau_m: Optional[torch.Tensor], dt: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Factors of an alpha synapse over a step of ``dt`` ms (see :class:`AlphaSynapse`).

    Returns ``(a, c, k_g, k_h)``: the exact update :math:`h \leftarrow a h`,
    :math:`g \leftarrow a g + c h` with :math:`a = e^{-dt/\tau}`, :math:`c = e\, \frac{dt}{\tau}
    e^{-dt/\tau}`, and the output :math:`x = k_g g + k_h h` (membrane increment with ``tau_m``,
    mean over the step without), from
    :math:`g(t_n + u) = e^{-u/\tau}\,(g + e\, h\, u / \tau)`.
    """
    a = exp_decay(tau_syn, dt)
    c = math.e * dt / tau_syn * a
    if tau_m is None:
        k_g = _ratio(1 / tau_syn, dt) / dt
        k_h = math.e / tau_syn * _ratio2(1 / tau_syn, dt) / dt
        return a, c, k_g, k_h
    _check_membrane(tau_m)
    b = exp_decay(tau_m, dt)
    rate = 1 / tau_syn - 1 / tau_m
    k_g = b * _ratio(rate, dt) / tau_m
    k_h = b * math.e / (tau_syn * tau_m) * _ratio2(rate, dt)
    return a, c, k_g, k_h


class Synapse(Neuron):
    """Base class of the synapse models: a non-spiking unit in front of a neuron.

    ``forward(x)``: ``x`` ``(B, *shape)``, the weights of the spikes arriving this step (the
    output of a connection), returns the input of the neuron for this step ``(B, *shape)`` (see
    the module docstring for its units). Subclasses declare constants and state as neurons do
    (:meth:`~pysnn.neuron.Neuron.register_constant`, :meth:`~pysnn.neuron.Neuron.register_state`)
    and implement :meth:`step`.

    Args:
        neuron: the postsynaptic neuron (a :class:`~pysnn.neuron.Neuron`); the synapse takes its
            ``shape`` and ``dt`` and, for ``drive="increment"``, its ``tau_v`` (read live).
        drive: ``"increment"``, ``"current"`` or ``"auto"`` (see the module docstring).
    """

    spiking = False

    def __init__(self, neuron: Neuron, *, drive: str = "auto") -> None:
        if not isinstance(neuron, Neuron) or isinstance(neuron, Synapse):
            raise TypeError(
                f"neuron must be the pysnn.neuron.Neuron the synapse feeds, got "
                f"{type(neuron).__name__}"
            )
        drive = check_choice("drive", drive, DRIVES)
        if drive == "auto":
            drive = "increment" if isinstance(neuron, _LEAKY) else "current"
        if drive == "increment":
            if "tau_v" not in neuron._buffers and "tau_v" not in neuron._parameters:
                raise ValueError(
                    f"drive='increment' needs a neuron with a membrane time constant tau_v (ms); "
                    f"{type(neuron).__name__} has none: use drive='current'"
                )
            _check_membrane(neuron._constant("tau_v").detach())
        self.__dict__["_neuron"] = (neuron,)  # a reference, not a submodule
        super().__init__(neuron.shape, neuron.dt, surrogate=None)
        self.drive = drive

    def register_constant(self, name: str, value: ParamLike, **constraints: bool) -> None:
        """As :meth:`pysnn.neuron.Neuron.register_constant`; a number or tensor is stored in
        the neuron's dtype and on its device (an ``nn.Parameter`` is kept as given)."""
        super().register_constant(name, value, **constraints)
        buffer = self._buffers.get(name)
        if buffer is not None:
            reference = self.neuron._reference()
            self._buffers[name] = buffer.to(reference.device, reference.dtype)

    @property
    def neuron(self) -> Neuron:
        """The postsynaptic neuron (referenced, not a submodule)."""
        return self.__dict__["_neuron"][0]

    @property
    def dt(self) -> float:
        """Time step (ms): the neuron's, read live."""
        return self.neuron.dt

    @dt.setter
    def dt(self, value: float) -> None:
        if float(value) != self.neuron.dt:
            raise ValueError(
                f"a synapse runs at its neuron's dt ({self.neuron.dt} ms); set the neuron's dt, "
                f"got {value}"
            )

    def _tau_m(self) -> Optional[torch.Tensor]:
        """The neuron's ``tau_v`` for ``drive="increment"``, ``None`` for ``"current"``."""
        return self.neuron._constant("tau_v") if self.drive == "increment" else None

    def extra_repr(self) -> str:
        return f"neuron={type(self.neuron).__name__}, shape={self.shape}, drive={self.drive!r}"


class ExponentialSynapse(Synapse):
    r"""Current-based synapse with an exponentially decaying current (CUBA).

    .. math::

        \tau_s \frac{dI}{dt} = -I, \qquad I \leftarrow I + w \text{ at each arriving spike}

    Per step of ``dt`` ms (exact): :math:`I \leftarrow I\, e^{-dt/\tau_s} + x` with ``x`` the
    connection's output (mV), then the output :math:`k\, I` (see
    :func:`exponential_kernels`). Into a :class:`~pysnn.neuron.LIFNeuron` starting at rest, one
    spike of weight :math:`w` at :math:`t = 0` gives the PSP

    .. math:: v(t) - v_{rest} = w\, \frac{\tau_s}{\tau_s - \tau_m}
              \left(e^{-t/\tau_s} - e^{-t/\tau_m}\right)

    exactly at every step end :math:`t = (k + 1)\, dt`.

    Args:
        neuron: the postsynaptic neuron.
        tau_syn: synaptic time constant :math:`\tau_s` (ms), > 0; scalar or per neuron.
        drive: see :class:`Synapse`.

    State: ``g`` = :math:`I` (mV) at the start of the current step (after its arrivals),
    ``(B, *shape)``.
    """

    def __init__(self, neuron: Neuron, tau_syn: ParamLike = 5.0, *, drive: str = "auto") -> None:
        super().__init__(neuron, drive=drive)
        self.register_constant("tau_syn", tau_syn, positive=True)
        self.register_state("g", 0.0)

    def kernels(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(a, k)`` of :func:`exponential_kernels`, recomputed when a constant changes."""
        return self.derived(
            "kernels", exponential_kernels, self._constant("tau_syn"), self._tau_m(), self.dt
        )

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Add the arriving weights ``x`` (mV) and return the neuron's input for this step."""
        a, k = self.kernels()
        g = torch.addcmul(x, self._buffers["g"], a)
        self._buffers["g"] = g
        return g * k


class AlphaSynapse(Synapse):
    r"""Current-based synapse with an alpha-function current.

    One spike of weight :math:`w` at :math:`t = 0` gives the current

    .. math:: I(t) = w\, \frac{t}{\tau}\, e^{1 - t/\tau}

    (peak :math:`w` at :math:`t = \tau`), the solution of

    .. math::

        \tau \frac{dh}{dt} = -h, \qquad \tau \frac{dI}{dt} = -I + e\, h, \qquad
        h \leftarrow h + w \text{ at each arriving spike}

    integrated exactly per step (see :func:`alpha_kernels`):
    :math:`I \leftarrow a I + c h`, :math:`h \leftarrow a h + x`, output :math:`k_g I + k_h h`.

    Args:
        neuron: the postsynaptic neuron.
        tau_syn: time to peak :math:`\tau` (ms), > 0; scalar or per neuron.
        drive: see :class:`Synapse`.

    State: ``g`` = :math:`I` (mV) and ``h`` (mV), ``(B, *shape)``, at the start of the current
    step (after its arrivals).
    """

    def __init__(self, neuron: Neuron, tau_syn: ParamLike = 5.0, *, drive: str = "auto") -> None:
        super().__init__(neuron, drive=drive)
        self.register_constant("tau_syn", tau_syn, positive=True)
        self.register_state("g", 0.0)
        self.register_state("h", 0.0)

    def kernels(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(a, c, k_g, k_h)`` of :func:`alpha_kernels`, recomputed when a constant changes."""
        return self.derived(
            "kernels", alpha_kernels, self._constant("tau_syn"), self._tau_m(), self.dt
        )

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Advance ``g`` and ``h`` to this step, add the arriving weights ``x`` (mV) to ``h`` and
        return the neuron's input for this step."""
        a, c, k_g, k_h = self.kernels()
        state = self._buffers
        g = state["g"] * a + state["h"] * c
        h = torch.addcmul(x, state["h"], a)
        state["g"], state["h"] = g, h
        return g * k_g + h * k_h


class ConductanceSynapse(Synapse):
    r"""Conductance-based synapse (COBA): an exponentially decaying conductance with a reversal
    potential.

    .. math::

        \tau_s \frac{dg}{dt} = -g, \qquad g \leftarrow g + w \text{ at each arriving spike},
        \qquad I = g\, (E_{rev} - v)

    :math:`g` is dimensionless, in units of the neuron's leak conductance (as in Brian2's COBA
    example: :math:`\tau_m \dot v = -(v - v_{rest}) + g_e (E_e - v) + g_i (E_i - v)`). Use one
    synapse per reversal potential (excitatory and inhibitory) and add their outputs:
    ``lif(syn_e(fc_e(s)) + syn_i(fc_i(s)))``.

    Per step: :math:`g \leftarrow g\, e^{-dt/\tau_s} + x` (exact), then the output
    :math:`k\, g\, (E_{rev} - v_n)` with :math:`k` of :func:`exponential_kernels` and
    :math:`v_n` the neuron's ``v`` at the start of the step (before the neuron steps). The
    conductance is exact; the membrane is exact for a clamped :math:`v` and otherwise first order
    in ``dt`` (the driving force is held over the step, as a forward Euler step would, while
    the conductance's decay within the step is integrated). Keep ``dt`` well below
    :math:`\tau_m / (1 + g)`. Where :math:`k\, g > 1` (a conductance so large that the
    first-order step would carry :math:`v` past :math:`E_{rev}`), the factor is clamped at 1:
    the synapse moves :math:`v` at most to :math:`E_{rev}`, never past it (the exact solution
    never crosses it either).

    The input (the conductance arriving this step) must be >= 0: a negative one would reverse
    the driving force, so it is refused with a ``ValueError`` (feed the synapse from a
    connection with ``wmin=0``; inhibition is a second synapse with a low ``e_rev``).

    Args:
        neuron: the postsynaptic neuron; it must have a state ``v`` (mV).
        tau_syn: conductance time constant :math:`\tau_s` (ms), > 0; scalar or per neuron.
        e_rev: reversal potential :math:`E_{rev}` (mV); scalar or per neuron.
        drive: see :class:`Synapse`.

    State: ``g`` (dimensionless) at the start of the current step, ``(B, *shape)``.
    """

    #: The methods whose calls the fused network loop reproduces
    #: (:func:`pysnn.engine.layers.run_layers`); a subclass that overrides one is stepped as
    #: written (see :func:`pysnn.stepping.block_form_reason`).
    BLOCK_REPRODUCES = ("forward", "step", "kernels", "_prepare", "membrane_potential", "_tau_m")

    def __init__(
        self,
        neuron: Neuron,
        tau_syn: ParamLike = 5.0,
        e_rev: ParamLike = 0.0,
        *,
        drive: str = "auto",
    ) -> None:
        if isinstance(neuron, Neuron) and "v" not in neuron.state_names:
            raise ValueError(
                f"a conductance synapse needs the membrane potential 'v' (mV) of its neuron; "
                f"{type(neuron).__name__} has the states {list(neuron.state_names)}"
            )
        super().__init__(neuron, drive=drive)
        self.register_constant("tau_syn", tau_syn, positive=True)
        self.register_constant("e_rev", e_rev)
        self.register_state("g", 0.0)

    def kernels(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(a, k)`` of :func:`exponential_kernels`, recomputed when a constant changes."""
        return self.derived(
            "kernels", exponential_kernels, self._constant("tau_syn"), self._tau_m(), self.dt
        )

    def _prepare(self, x: torch.Tensor) -> None:
        """As :meth:`Neuron._prepare`, and a negative conductance is refused: it would reverse
        the synapse's driving force (an excitatory synapse would inhibit)."""
        reason = (
            "x is the conductance arriving this step (dimensionless), and a negative one would "
            "reverse the driving force. Feed the synapse from a connection with wmin=0, and "
            "model inhibition with a second synapse with a low e_rev (e.g. -80 mV)"
        )
        check_input("x", x, self.shape, self._reference(), type(self).__name__, reason)
        state = self._buffers["g"]
        if state is None or state.shape[0] != x.shape[0]:
            self._make_state(x.shape[0], x)

    def membrane_potential(self, like: torch.Tensor) -> torch.Tensor:
        """The neuron's ``v`` (mV) at the start of this step, ``(B, *shape)``; the neuron's state
        is created for the batch of ``like`` first if it has none yet (it is about to step)."""
        neuron = self.neuron
        neuron._prepare(like)
        return neuron._buffers["v"]

    def current(self) -> Optional[torch.Tensor]:
        r"""The synaptic current :math:`g\,(E_{rev} - v)` (mV) now, ``(B, *shape)``: the state
        ``g`` and the neuron's present ``v``; ``None`` before the first step."""
        g, v = self._buffers["g"], self.neuron._buffers.get("v")
        if g is None or v is None:
            return None
        return g * (self._constant("e_rev") - v)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Add the arriving conductance ``x`` and return the neuron's input for this step."""
        a, k = self.kernels()
        v = self.membrane_potential(x)
        g = torch.addcmul(x, self._buffers["g"], a)
        self._buffers["g"] = g
        # k g > 1 (a step too long for this conductance): at most to E_rev, never past it
        return (g * k).clamp_(max=1.0) * (self._constant("e_rev") - v)
