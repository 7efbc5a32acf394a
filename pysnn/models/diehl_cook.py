r"""Diehl & Cook (2015): unsupervised learning of digit recognition with STDP.

P. U. Diehl and M. Cook, "Unsupervised learning of digit recognition using spike-timing-dependent
plasticity", Front. Comput. Neurosci. 9:99 (2015).

Architecture, built only from public pysnn modules::

    Input (784 Poisson) --fc (STDP, w in [0, wmax])--> excitatory AdaptiveLIF (N)
    excitatory --e2i (one-to-one, +exc_weight mV)--> inhibitory LIF (N)
    inhibitory --i2e (all but the partner, -inh_weight mV, one step later)--> excitatory

Per step of ``dt`` ms (the user-visible order of :meth:`DiehlCook2015.forward`): input spikes,
excitatory input ``fc(x) + i2e(inhibitory spikes of the previous step)``, excitatory step,
inhibitory step driven by ``e2i``, then STDP on ``fc`` when training.

Deviations from the paper, on purpose and documented:

- Current-based synapses: a presynaptic spike adds its weight (mV) to the membrane potential at
  once, as in BindsNET's re-implementation, instead of conductance-based synapses with reversal
  potentials. The weights ``exc_weight``/``inh_weight`` (22.5 / 120 mV) are BindsNET's values for this
  current-based form.
- Between samples the state is reset exactly (:meth:`reset_state`) instead of 150 ms of rest, which
  is what the rest period approximates; ``theta`` is learned and kept across samples.
- STDP is the pair-based trace rule ``STDP`` (``nu = (nu_pre, nu_post)``): at a postsynaptic spike
  ``w += nu_post * x_pre``, at a presynaptic spike ``w -= nu_pre * x_post``, weights clamped to
  ``[0, wmax]``, then each neuron's incoming weights normalised to ``norm`` after every sample.
- ``dt = 1`` ms by default (the paper integrates at 0.5 ms).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from pysnn.connection import Linear
from pysnn.learning import STDP
from pysnn.network import SNNNetwork
from pysnn.neuron import AdaptiveLIFNeuron, Input, LIFNeuron

__all__ = ["DiehlCook2015"]


class DiehlCook2015(SNNNetwork):
    """The Diehl & Cook (2015) network; ``forward`` is one simulation step (and learning step).

    Args:
        n_inputs: input neurons (784 for MNIST).
        n_neurons: excitatory neurons ``N`` (and as many inhibitory ones).
        dt: time step (ms).
        exc_weight: excitatory->inhibitory weight (mV).
        inh_weight: magnitude of the inhibitory->excitatory weight (mV), applied as ``-inh_weight``.
        nu: STDP learning rates ``(nu_pre, nu_post)`` (depression at presynaptic spikes,
            potentiation at postsynaptic spikes).
        wmax: upper weight bound (lower bound 0), mV.
        norm: sum of each excitatory neuron's input weights after normalisation (mV); ``None``
            switches normalisation off.
        theta_plus: threshold increment per excitatory spike (mV).
        tau_theta: threshold decay time constant (ms).
        tau_trace: STDP trace time constant (ms) of inputs and excitatory neurons.
        exc_thresh, exc_rest, exc_reset, exc_refrac, exc_tau: excitatory LIF parameters (mV, ms).
        inh_thresh, inh_rest, inh_reset, inh_refrac, inh_tau: inhibitory LIF parameters (mV, ms).
        reduction: how STDP combines the updates of a batch (``"sum"`` or ``"mean"``).

    ``forward(x)``: input spikes ``(B, n_inputs)`` → excitatory spikes ``(B, n_neurons)``.
    """

    def __init__(
        self,
        n_inputs: int = 784,
        n_neurons: int = 100,
        dt: float = 1.0,
        exc_weight: float = 22.5,
        inh_weight: float = 120.0,
        nu: Tuple[float, float] = (1e-4, 1e-2),
        wmax: float = 1.0,
        norm: Optional[float] = 78.4,
        theta_plus: float = 0.05,
        tau_theta: float = 1e7,
        tau_trace: float = 20.0,
        exc_thresh: float = -52.0,
        exc_rest: float = -65.0,
        exc_reset: float = -65.0,
        exc_refrac: float = 5.0,
        exc_tau: float = 100.0,
        inh_thresh: float = -40.0,
        inh_rest: float = -60.0,
        inh_reset: float = -45.0,
        inh_refrac: float = 2.0,
        inh_tau: float = 10.0,
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        if norm is not None and not (math.isfinite(norm) and norm > 0):
            raise ValueError(f"norm must be a positive number or None, got {norm}")
        self.n_inputs, self.n_neurons, self.dt, self.norm = n_inputs, n_neurons, dt, norm
        self.inp = Input(n_inputs, dt=dt, tau_trace=tau_trace)
        self.fc = Linear(
            n_inputs,
            n_neurons,
            dt=dt,
            wmin=0.0,
            wmax=wmax,
            init="uniform",
            init_kwargs={"a": 0.0, "b": 0.3 * wmax},
        )
        self.exc = AdaptiveLIFNeuron(
            n_neurons,
            dt=dt,
            thresh=exc_thresh,
            v_rest=exc_rest,
            v_reset=exc_reset,
            tau_v=exc_tau,
            refrac=exc_refrac,
            tau_trace=tau_trace,
            theta_plus=theta_plus,
            tau_theta=tau_theta,
            theta_shared=True,
        )
        self.e2i = Linear(n_neurons, n_neurons, dt=dt, init="constant", init_kwargs={"val": 0.0})
        self.inh = LIFNeuron(
            n_neurons,
            dt=dt,
            thresh=inh_thresh,
            v_rest=inh_rest,
            v_reset=inh_reset,
            tau_v=inh_tau,
            refrac=inh_refrac,
        )
        self.i2e = Linear(n_neurons, n_neurons, dt=dt, init="constant", init_kwargs={"val": 0.0})
        with torch.no_grad():
            eye = torch.eye(n_neurons)
            self.e2i.weight.copy_(exc_weight * eye)
            self.i2e.weight.copy_(-inh_weight * (1 - eye))
        self.e2i.weight.requires_grad_(False)
        self.i2e.weight.requires_grad_(False)
        self.add_layer("fc", self.fc, self.exc)
        self.add_layer("e2i", self.e2i, self.inh)
        self.add_layer("i2e", self.i2e, self.exc)
        self.stdp = STDP(
            connection=self.fc, pre=self.inp, post=self.exc, nu=nu, reduction=reduction
        )
        if norm is not None:
            self.fc.normalize(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: input spikes ``(B, n_inputs)`` → excitatory spikes ``(B, n_neurons)``."""
        x = self.inp(x)
        inh = self.inh.spikes
        current = self.fc(x)
        if inh is not None and inh.shape[0] == x.shape[0]:
            current = current + self.i2e(inh)
        exc = self.exc(current)
        self.inh(self.e2i(exc))
        self.stdp.step()  # does nothing in eval() mode
        return exc

    @torch.no_grad()
    def run(
        self,
        spikes: torch.Tensor,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Present one input sequence and return the excitatory spike counts.

        Args:
            spikes: input spikes ``(T, B, n_inputs)``.
            normalize: normalise ``fc`` weights afterwards (only in training mode).

        Returns:
            Excitatory spike counts ``(B, n_neurons)``. The state is reset before the sample.
        """
        self.reset_state()
        counts = spikes.new_zeros(spikes.shape[1], self.n_neurons)
        for x in spikes:
            counts += self(x)
        if normalize and self.training and self.norm is not None:
            self.fc.normalize(self.norm)
        return counts
