"""Tests of pysnn.surrogate: exact Heaviside forward, closed-form surrogate derivatives."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch

from pysnn.functional.spike import spike
from pysnn.neuron import LIFNeuron
from pysnn.surrogate import (
    ArcTan,
    FastSigmoid,
    Sigmoid,
    StraightThrough,
    SuperSpike,
    Surrogate,
    Triangle,
    get,
    reset_membrane,
)

# Hand-written closed forms sigma'(x) and smooth relaxations sigma(x) with sigma' = d sigma / dx,
# written independently of the library code.
CASES = [
    (
        FastSigmoid(3.0),
        lambda x: 1.0 / (3.0 * x.abs() + 1.0) ** 2,
        lambda x: x / (1.0 + 3.0 * x.abs()),
    ),
    (
        ArcTan(2.5),
        lambda x: 1.25 / (1.0 + (math.pi * 2.5 * x / 2.0) ** 2),
        lambda x: torch.atan(math.pi * 2.5 * x / 2.0) / math.pi + 0.5,
    ),
    (
        Sigmoid(4.0),
        lambda x: 4.0 * torch.sigmoid(4.0 * x) * (1.0 - torch.sigmoid(4.0 * x)),
        lambda x: torch.sigmoid(4.0 * x),
    ),
    (
        Triangle(0.8),
        lambda x: (1.0 - x.abs() / 0.8).clamp_min(0.0),
        lambda x: torch.where(x.abs() < 0.8, x - x * x.abs() / 1.6, torch.sign(x) * 0.4),
    ),
    (StraightThrough(), lambda x: torch.ones_like(x), lambda x: x),
    (
        StraightThrough(0.5),
        lambda x: (x.abs() <= 0.5).to(x.dtype),
        lambda x: x.clamp(-0.5, 0.5),
    ),
]
IDS = [repr(case[0]) for case in CASES]

# points away from kinks (|x| = 0 for fast sigmoid/triangle, |x| = width) for finite differences
POINTS = [-2.3, -0.61, -0.27, -0.03, 0.04, 0.19, 0.55, 1.7]


def _autograd_grad(surrogate: Surrogate, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    surrogate(x).sum().backward()
    return x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_is_exact_heaviside(case, dtype):
    surrogate = case[0]
    x = torch.tensor([-1e-30, -1.0, 0.0, -0.0, 1e-30, 2.0, -math.inf, math.inf], dtype=dtype)
    out = surrogate(x.clone().requires_grad_(True))
    assert out.dtype == dtype
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    zero = torch.zeros((), dtype=dtype)
    assert torch.equal(spike(x, zero, surrogate), spike(x, zero))  # same as the plain step


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_equals_closed_form(case):
    surrogate, closed_form, _ = case
    x = torch.tensor(POINTS + [0.0, 0.5, -0.8], dtype=torch.float64)
    grad = _autograd_grad(surrogate, x)
    torch.testing.assert_close(grad, closed_form(x), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(surrogate.grad(x), closed_form(x), rtol=1e-12, atol=1e-15)


def test_hand_values():
    x = torch.tensor([0.0, 0.5, -1.0], dtype=torch.float64)
    # 1/(k|x|+1)^2 with k=2: 1, 1/4, 1/9
    torch.testing.assert_close(_autograd_grad(FastSigmoid(2.0), x), x.new_tensor([1, 1 / 4, 1 / 9]))
    # (k/2)/(1+(pi k x/2)^2) with k=2: 1, 1/(1+pi^2/4), 1/(1+pi^2)
    expected = x.new_tensor([1.0, 1 / (1 + math.pi**2 / 4), 1 / (1 + math.pi**2)])
    torch.testing.assert_close(_autograd_grad(ArcTan(2.0), x), expected)
    # k sig(kx)(1-sig(kx)) with k=4 at 0: 1
    assert _autograd_grad(Sigmoid(4.0), x)[0].item() == pytest.approx(1.0)
    # triangle w=1: 1, 0.5, 0
    torch.testing.assert_close(_autograd_grad(Triangle(1.0), x), x.new_tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(
        _autograd_grad(StraightThrough(0.6), x), x.new_tensor([1.0, 1.0, 0.0])
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_closed_form_is_derivative_of_relaxation(case):
    """Central finite differences of the documented smooth relaxation match the surrogate."""
    surrogate, _, relaxation = case
    x = torch.tensor(POINTS, dtype=torch.float64)
    h = 1e-6
    numeric = (relaxation(x + h) - relaxation(x - h)) / (2 * h)
    torch.testing.assert_close(_autograd_grad(surrogate, x), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_against_smooth_relaxation(case):
    """gradcheck (double precision) of the surrogate Function, made checkable.

    gradcheck compares the analytic backward with finite differences of the *forward*; the true
    forward is a step (derivative 0 almost everywhere), so gradcheck of ``surrogate(x)`` alone is
    bound to fail and says nothing. We instead check ``f(x) = relax(x).detach() + surrogate(x) -
    surrogate(x).detach()``: its value is the smooth relaxation, its backward is the surrogate's
    backward alone. gradcheck then verifies the backward (including ``grad_output`` scaling and
    broadcasting through a downstream op) against the numerical derivative of the relaxation.
    """
    surrogate, _, relaxation = case
    x = torch.tensor(POINTS, dtype=torch.float64).reshape(2, 4).requires_grad_(True)
    weights = torch.linspace(0.5, 2.0, 4, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        s = surrogate(x)
        return (relaxation(x).detach() + s - s.detach()) * weights

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repr_equality_pickle(case):
    surrogate = case[0]
    name = type(surrogate).__name__
    assert repr(surrogate).startswith(name + "(")
    assert (
        eval(repr(surrogate), {name: type(surrogate), "inf": math.inf}) == surrogate
    )  # noqa: S307
    assert pickle.loads(pickle.dumps(surrogate)) == surrogate
    assert copy.deepcopy(surrogate) == surrogate
    assert hash(copy.copy(surrogate)) == hash(surrogate)


def test_defaults_and_aliases():
    assert repr(FastSigmoid()) == "FastSigmoid(scale=10.0)"
    assert SuperSpike is FastSigmoid
    assert repr(ArcTan()) == "ArcTan(scale=2.0)"
    assert repr(Sigmoid()) == "Sigmoid(scale=4.0)"
    assert repr(Triangle()) == "Triangle(width=1.0)"
    assert repr(StraightThrough()) == "StraightThrough(width=inf)"
    assert FastSigmoid(3).scale == 3.0 and Triangle(2).width == 2.0
    assert get("arctan", scale=3.0) == ArcTan(3.0)
    assert get("SuperSpike") == FastSigmoid()
    assert FastSigmoid(1.0) != ArcTan(1.0)


@pytest.mark.parametrize("cls", [FastSigmoid, ArcTan, Sigmoid, Triangle])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_invalid_parameter_raises_value_error(cls, bad):
    name = "width" if cls is Triangle else "scale"
    with pytest.raises(ValueError, match=name):
        cls(bad)


def test_invalid_types():
    with pytest.raises(TypeError, match="scale"):
        FastSigmoid("10")
    with pytest.raises(TypeError, match="scale"):
        ArcTan(True)
    with pytest.raises(ValueError, match="width"):
        StraightThrough(0.0)
    with pytest.raises(TypeError, match="x must be"):
        FastSigmoid()([0.0, 1.0])
    with pytest.raises(TypeError, match="floating"):
        FastSigmoid()(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unknown surrogate"):
        get("relu")


def test_lif_neuron_uses_surrogate():
    """A LIF neuron with a surrogate: same spikes as without, gradient = sigma'(v - thresh)."""
    x = torch.tensor([[0.5, 1.0, 1.5]], dtype=torch.float64, requires_grad=True)
    plain = LIFNeuron(3, thresh=1.0, v_rest=0.0, v_reset=0.0, refrac=0.0).double()
    with_grad = LIFNeuron(
        3, thresh=1.0, v_rest=0.0, v_reset=0.0, refrac=0.0, surrogate=ArcTan(2.0)
    ).double()
    s = with_grad(x)
    assert torch.equal(s, plain(x.detach()))
    s.sum().backward()
    # v starts at rest (0): v = x, so ds/dx = sigma'(x - 1)
    torch.testing.assert_close(x.grad, ArcTan(2.0).grad(x.detach() - 1.0))
    assert "ArcTan(scale=2.0)" in repr(with_grad)


def test_surrogate_vmap_and_batching():
    surrogate = FastSigmoid(2.0)
    x = torch.randn(3, 5, dtype=torch.float64)
    grads = torch.func.vmap(torch.func.grad(lambda v: surrogate(v).sum()))(x)
    torch.testing.assert_close(grads, surrogate.grad(x))


def test_reset_membrane_exact_forward_and_gradient():
    """where + straight-through: exact reset value, gradient of (1 - s) v + s v_reset."""
    torch.manual_seed(0)
    v = (torch.randn(200, dtype=torch.float64) * 30).requires_grad_(True)
    v_reset = torch.tensor(-65.123456789, dtype=torch.float64)
    s = FastSigmoid(0.5)(v - 0.1)
    out = reset_membrane(v, s, v_reset)
    # forward: bit-exact v_reset where fired, v elsewhere (the product form is not always exact)
    assert torch.equal(out, torch.where(s.detach() > 0, v_reset, v.detach()))
    (grad,) = torch.autograd.grad(out.sum(), v)
    sigma = FastSigmoid(0.5).grad(v.detach() - 0.1)
    expected = (1 - s.detach()) + (v_reset - v.detach()) * sigma
    torch.testing.assert_close(grad, expected)
    # the product form gives the same gradient
    v2 = v.detach().clone().requires_grad_(True)
    s2 = FastSigmoid(0.5)(v2 - 0.1)
    (grad2,) = torch.autograd.grad(((1 - s2) * v2 + s2 * v_reset).sum(), v2)
    torch.testing.assert_close(grad, grad2)
    # detached: only the where (no gradient into the spike)
    (grad3,) = torch.autograd.grad(reset_membrane(v, s, v_reset, detach=True).sum(), v)
    torch.testing.assert_close(grad3, 1 - s.detach())
