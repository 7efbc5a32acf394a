"""Silently wrong results made loud (issue 13): each case checks the new error/warning and the
value that an independent computation gives."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pysnn.connection import Linear
from pysnn.learning import STDP
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, LIFNeuron


# ---------------------------------------------------------------- time steps of learning rules
@pytest.mark.parametrize("where", ["pre", "post", "connection"])
def test_rule_refuses_different_time_steps(where):
    dts = {"pre": 1.0, "post": 1.0, "connection": 1.0}
    dts[where] = 0.5
    pre, post = Input(3, dt=dts["pre"]), LIFNeuron(2, dt=dts["post"])
    conn = Linear(3, 2, dt=dts["connection"])
    with pytest.raises(ValueError, match=rf"{where} dt=0.5 ms") as info:
        STDP(connection=conn, pre=pre, post=post)
    assert "dt=1.0 ms" in str(info.value)


def test_rule_accepts_equal_time_steps():
    rule = STDP(connection=Linear(3, 2, dt=0.5), pre=Input(3, dt=0.5), post=LIFNeuron(2, dt=0.5))
    assert rule.groups[0].dt == 0.5


# ---------------------------------------------------------------- threshold at or below reset
def fire_count(neuron: LIFNeuron, steps: int) -> int:
    with torch.no_grad():
        return int(sum(neuron(torch.zeros(1, 1)).sum() for _ in range(steps)))


@pytest.mark.parametrize("cls", [LIFNeuron, IFNeuron, AdaptiveLIFNeuron])
def test_threshold_below_reset_warns_at_construction(cls):
    with pytest.warns(UserWarning, match=r"thresh <= v_reset .*thresh -70 mV, v_reset -65 mV"):
        neuron = cls(1, thresh=-70.0, v_rest=-75.0, v_reset=-65.0, refrac=5.0)
    # what the warning says: from the first spike on, one spike per step, refrac ignored
    neuron.v_rest = -60.0  # start above threshold: the first spike is at step 0
    assert fire_count(neuron, 20) == 20


def test_threshold_above_reset_does_not_warn_and_respects_refrac():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neuron = LIFNeuron(1, thresh=-70.0, v_rest=-60.0, v_reset=-80.0, tau_v=1e9, refrac=5.0)
    # at rest above threshold: a spike, 5 refractory steps (input ignored, no leak to speak of
    # with tau_v = 1e9 ms), ... : v stays at -80 after the reset, so exactly one spike
    assert fire_count(neuron, 20) == 1


def test_assignment_that_creates_threshold_below_reset_warns_once():
    neuron = LIFNeuron(4)
    with pytest.warns(UserWarning, match=r"for 1 neuron\(s\)"):
        neuron.thresh = torch.tensor([-52.0, -52.0, -70.0, -52.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neuron.v_reset = -66.0  # still below for that neuron: no second warning
        neuron.thresh = -52.0  # fixed
    with pytest.warns(UserWarning, match="thresh <= v_reset"):
        neuron.v_reset = -40.0
