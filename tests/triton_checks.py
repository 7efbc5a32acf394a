"""Checks of the Triton backend (:mod:`pysnn.backends.triton`) under Triton's interpreter.

Run by ``tests/test_triton_backend.py`` in one subprocess with ``TRITON_INTERPRET=1`` (which
must be set before Triton is imported) and ``PYSNN_BACKEND=triton``:
``python tests/triton_checks.py [name ...]`` runs the checks named (default: all) and prints one
JSON line per check, ``{"check": name, "ok": bool, "error": traceback}``. The references are the
torch operations (``backends.prefer("torch")``) and torch autograd through the step loop; small
tensors with sizes that are not powers of two, so that the kernels' masks are exercised.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import traceback
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from pysnn import backends, native, surrogate
from pysnn.functional.lif import LIFParameters, lif_parameters, lif_step, lif_trace_step
from pysnn.functional.plasticity import stdp_rows_update
from pysnn.functional.trace import TraceParameters, trace_parameters, trace_step

CHECKS: Dict[str, Callable[[], None]] = {}

T, B, N = 20, 3, 37


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS[fn.__name__] = fn
    return fn


def _c_backend():
    assert native.available(), native.status()
    return native


def _triton():
    backend = backends.get("triton")
    assert backend is not None and backend.available(), "the Triton backend is not available"
    return backend


def _params(
    dtype: torch.dtype,
    shape: Tuple[int, ...] = (N,),
    tau_v: object = 20.0,
    refrac: object = 2.0,
    thresh: object = -52.0,
    additive: bool = True,
    tau_trace: object = 15.0,
) -> Tuple[LIFParameters, TraceParameters]:
    def t(value: object) -> torch.Tensor:
        return torch.as_tensor(value, dtype=dtype)

    p = lif_parameters(t(tau_v), t(-65.0), t(-70.0), t(thresh), t(refrac), 1.0)
    tp = trace_parameters(t(tau_trace), t(0.7), "additive" if additive else "reset", 1.0)
    return p, tp


def _state(dtype: torch.dtype, shape: Tuple[int, ...] = (N,), batch: int = B, refractory=True):
    g = torch.Generator().manual_seed(1)
    v = -65.0 + 10.0 * torch.rand(batch, *shape, generator=g, dtype=dtype)
    r = torch.randint(0, 3, (batch, *shape), generator=g) if refractory else None
    r = torch.zeros(batch, *shape, dtype=torch.int64) if r is None else r
    trace = torch.rand(batch, *shape, generator=g, dtype=dtype)
    return v, r, trace


def _input(dtype: torch.dtype, shape: Tuple[int, ...] = (N,), steps: int = T, batch: int = B):
    g = torch.Generator().manual_seed(2)
    return 6.0 * torch.rand(steps, batch, *shape, generator=g, dtype=dtype)


def _torch_steps(x, v, r, trace, p, tp, theta=None):
    """The reference: the torch step loop."""
    spikes = []
    with backends.prefer("torch"), torch.no_grad():
        for t in range(x.shape[0]):
            s, v, r, trace = lif_trace_step(x[t], v, r, trace, p, tp, theta)
            spikes.append(s)
    return torch.stack(spikes), v, r, trace


def _equal(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
    if not torch.equal(got, want):
        diff = (got.double() - want.double()).abs().max().item()
        raise AssertionError(f"{name}: not bit-identical (max difference {diff:.3g})")


def _compare_forward(x, v, r, trace, p, tp, theta=None, p_kernel=None) -> None:
    """``lif_steps`` of the Triton backend (with ``p_kernel``, else ``p``) against the torch
    loop with ``p``: spikes and state bit for bit, and the saved values against the C
    kernel's."""
    tri = _triton()
    assert tri.usable(x, v, trace, theta)
    got = tri.lif_steps(x, v, r, trace, p_kernel or p, tp, theta)
    assert got is not None
    want = _torch_steps(x, v, r, trace, p, tp, theta)
    for name, g, w in zip(("spikes", "v", "refrac", "trace"), got, want):
        _equal(name, g, w)
    assert got[0].sum() > 0 and got[0].sum() < got[0].numel(), "no spike or only spikes"


def _forward_cases(dtype: torch.dtype) -> None:
    x, (v, r, trace) = _input(dtype), _state(dtype)
    _compare_forward(x, v, r, trace, *_params(dtype))
    _compare_forward(x, v, r, trace, *_params(dtype, tau_v=math.inf))  # IF neurons
    _compare_forward(x, v, r, trace, *_params(dtype, refrac=0.0))
    _compare_forward(x, v, r, trace, *_params(dtype, additive=False))
    g = torch.Generator().manual_seed(3)
    per_neuron = _params(
        dtype,
        tau_v=5.0 + 30.0 * torch.rand(N, generator=g),
        refrac=torch.randint(0, 4, (N,), generator=g).double(),
        thresh=-55.0 + 6.0 * torch.rand(N, generator=g),
        tau_trace=3.0 + 20 * torch.rand(N, generator=g),
    )
    _compare_forward(x, v, r, trace, *per_neuron)
    _compare_forward(x, v, r, trace, *_params(dtype), theta=torch.rand(N, dtype=dtype))
    _compare_forward(x, v, r, trace, *_params(dtype), theta=torch.rand(B, N, dtype=dtype))


@check
def forward_float32() -> None:
    _forward_cases(torch.float32)


@check
def forward_float64() -> None:
    _forward_cases(torch.float64)


@check
def forward_two_blocks_and_broadcast_parameters() -> None:
    """273 elements (two programs of 256), parameters broadcast from ``(7, 1)``."""
    shape = (7, 13)
    for dtype in (torch.float32, torch.float64):
        x, (v, r, trace) = _input(dtype, shape, steps=9), _state(dtype, shape)
        g = torch.Generator().manual_seed(4)
        p, tp = _params(
            dtype,
            shape,
            tau_v=5.0 + 30.0 * torch.rand(7, 1, generator=g),
            thresh=-55.0 + 6.0 * torch.rand(1, 13, generator=g),
        )
        _compare_forward(x, v, r, trace, p, tp)


@check
def forward_one_step_and_out_aliasing_the_state() -> None:
    tri = _triton()
    for dtype in (torch.float32, torch.float64):
        x, (v, r, trace) = _input(dtype, steps=1)[0], _state(dtype)
        p, tp = _params(dtype)
        want = _torch_steps(x[None], v, r, trace, p, tp)
        got = tri.lif_steps(x, v.clone(), r.clone(), trace.clone(), p, tp)
        _equal("one-step spikes", got[0], want[0][0])
        for name, g, w in zip(("v", "refrac", "trace"), got[1:], want[1:]):
            _equal(name, g, w)
        state = (v.clone(), r.clone(), trace.clone())
        xs = _input(dtype, steps=5)
        want = _torch_steps(xs, *state, p, tp)
        got = tri.lif_steps(xs, *state, p, tp, out=state)
        assert all(g is s for g, s in zip(got[1:], state)), "out not used"
        for name, g, w in zip(("spikes", "v", "refrac", "trace"), got, want):
            _equal(name + " (out aliasing the state)", g, w)


@check
def forward_saves_what_the_c_kernel_saves() -> None:
    tri = _triton()
    for dtype in (torch.float32, torch.float64):
        x, (v, r, trace) = _input(dtype), _state(dtype)
        p, tp = _params(dtype)
        saves = [(torch.empty_like(x), torch.empty(x.shape, dtype=torch.uint8)) for _ in "ab"]
        got = tri.lif_steps(x, v, r, trace, p, tp, save=saves[0])
        want = _c_backend().lif_steps(x, v, r, trace, p, tp, save=saves[1])
        for name, g, w in zip(("spikes", "v", "refrac", "trace"), got, want):
            _equal(name, g, w)
        _equal("v_save", *[s[0] for s in saves])
        _equal("r_save", *[s[1] for s in saves])
        assert saves[0][1].any(), "never refractory"


class _Custom(surrogate.FastSigmoid):
    """A surrogate without a kernel code: its ``grad`` tensor goes to the kernel."""

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-x * x / 8.0)


def _autograd_reference(x, v, r, trace, p, tp, surr, detach, g_s, g_v, g_t):
    """Gradients of ``sum(g_s * spikes) + sum(g_v * v_T) + sum(g_t * trace_T)`` with respect
    to ``x``, ``v`` and ``trace`` through the torch step loop."""
    x, v0, t0 = (t.clone().requires_grad_(True) for t in (x, v, trace))
    with backends.prefer("torch"), torch.enable_grad():
        v, tr, spikes = v0, t0, []
        fn = surr if type(surr) is not _Custom else _CustomFn.apply
        for t in range(x.shape[0]):
            s, v, r = lif_step(v, x[t], r, p, surrogate=fn, detach_reset=detach)
            tr = trace_step(tr, s, tp)
            spikes.append(s)
        loss = (g_s * torch.stack(spikes)).sum() + (g_v * v).sum() + (g_t * tr).sum()
        return torch.autograd.grad(loss, (x, v0, t0))


class _CustomFn(torch.autograd.Function):
    """The step function with :class:`_Custom`'s derivative (for the autograd reference)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * _Custom(1.0).grad(x)


def _close(label: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """``got`` within ``tol`` times the largest magnitude of ``want`` (BPTT gradients grow over
    the steps: an error relative to each element would measure cancellation, not the kernel)."""
    scale = want.abs().max().item()
    error = (got - want).abs().max().item()
    assert error <= tol * scale, f"{label}: error {error:.3g} of {scale:.3g}"


def _backward_cases(dtype: torch.dtype, tol_c: float, tol_autograd: float) -> None:
    """Every surrogate code and a tensor surrogate, with and without detach_reset, additive or
    not, with and without refractoriness, a gradient per spike and one expanded value: the
    Triton backward pass against the C backend's (bit for bit, except the sigmoid's ``exp``:
    within ``tol_c``) and against torch autograd through the step loop (``tol_autograd``)."""
    tri = _triton()
    x, (v, r, trace) = _input(dtype), _state(dtype)
    g = torch.Generator().manual_seed(5)
    g_s = torch.randn(*x.shape, generator=g, dtype=dtype)
    g_v, g_t = (torch.randn(*v.shape, generator=g, dtype=dtype) for _ in "vt")
    surrogates = [
        surrogate.FastSigmoid(2.0),
        surrogate.ArcTan(1.7),
        surrogate.Sigmoid(0.9),
        surrogate.Triangle(1.3),
        surrogate.StraightThrough(0.6),
        _Custom(1.0),
    ]
    for surr in surrogates:
        for detach in (False, True):
            for additive, refrac in ((True, 2.0), (False, 0.0)):
                p, tp = _params(dtype, refrac=refrac, additive=additive)
                rr = r if refrac else torch.zeros_like(r)
                r_save = torch.empty(x.shape, dtype=torch.uint8) if refrac else None
                save = (torch.empty_like(x), r_save)
                tri.lif_steps(x, v, rr, trace, p, tp, save=save)
                code = type(surr).__dict__.get("native_code")
                sg = surr.grad(save[0] - p.thresh) if code is None else (code, surr.param)
                for scalar in (False, True):
                    gs = torch.full((), 0.3, dtype=dtype).expand(x.shape) if scalar else g_s
                    got = tri.lif_backward(gs, sg, *save, g_v, g_t, p, tp, detach)
                    c = _c_backend().lif_backward(gs, sg, *save, g_v, g_t, p, tp, detach)
                    want = _autograd_reference(x, v, rr, trace, p, tp, surr, detach, gs, g_v, g_t)
                    label = (
                        f"{type(surr).__name__} detach={detach} additive={additive} "
                        f"refrac={refrac} scalar={scalar}"
                    )
                    names = ("grad_x", "grad_v0", "grad_trace0")
                    for name, a, b, w in zip(names, got, c, want):
                        if code == 3:
                            _close(f"{label} {name} (C)", a, b, tol_c)
                        else:
                            _equal(f"{label} {name} (C)", a, b)
                        _close(f"{label} {name} (autograd)", a, w, tol_autograd)
                    assert want[0].abs().max() > 0, f"{label}: no gradient"
                    if refrac:
                        assert (got[0][save[1].bool()] == 0).all() and save[1].any()


@check
def backward_float32() -> None:
    _backward_cases(torch.float32, tol_c=1e-6, tol_autograd=2e-5)


@check
def backward_float64() -> None:
    _backward_cases(torch.float64, tol_c=1e-14, tol_autograd=1e-14)


@check
def trace_step_bit_identical() -> None:
    tri = _triton()
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(6)
        trace = torch.rand(B, N, generator=g, dtype=dtype)
        spikes = (torch.rand(B, N, generator=g) < 0.4).to(dtype)
        graded = torch.rand(B, N, generator=g, dtype=dtype)
        for additive in (True, False):
            for x in (spikes, graded) if additive else (spikes,):
                tau = 2.0 + 20.0 * torch.rand(N, generator=g)
                _, tp = _params(dtype, additive=additive, tau_trace=tau)
                with backends.prefer("torch"):
                    want = trace_step(trace, x, tp)
                _equal("trace", tri.trace_step(x, trace, tp), want)
                out = trace.clone()
                assert tri.trace_step(x, out, tp, out=out) is out
                _equal("trace (in place)", out, want)


def _stdp_reference(weight, copy, s, xp, tr, a, pot, dep, bounds):
    rows, dw = stdp_rows_update(s, xp, tr, a, pot, dep)
    w = weight.index_select(0, rows).add_(dw)
    if bounds is not None:
        w.clamp_(*bounds)
    weight.index_copy_(0, rows, w)
    if copy is not None:
        copy.copy_(weight.t())
    return rows.numel()


@check
def stdp_rows_bit_identical() -> None:
    tri = _triton()
    n_out, n_in = 37, 70  # two tiles of columns, three of rows
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(7)
        s = (torch.rand(n_out, generator=g) < 0.3).to(dtype)
        xp = torch.rand(n_out, generator=g, dtype=dtype) * (torch.rand(n_out, generator=g) < 0.5)
        tr = torch.rand(n_in, generator=g, dtype=dtype)
        a = torch.rand(n_in, generator=g, dtype=dtype) * (
            torch.rand(n_in, generator=g) < 0.6
        )  # graded: the fma matters
        w0 = torch.rand(n_out, n_in, generator=g, dtype=dtype) - 0.2
        w0[0, 0] = -0.0  # an untouched row keeps its -0.0
        s[0] = xp[0] = 0.0
        for bounds in (None, (0.0, 0.9)):
            for with_copy in (False, True):
                w_t, w_r = w0.clone(), w0.clone()
                c_t = w0.t().contiguous() if with_copy else None
                c_r = w0.t().contiguous() if with_copy else None
                changed = tri.stdp_rows_(w_t, c_t, s, xp, tr, a, 0.011, -0.0123, bounds)
                expected = _stdp_reference(w_r, c_r, s, xp, tr, a, 0.011, -0.0123, bounds)
                assert changed == expected and 0 < changed < n_out, (changed, expected)
                _equal("weight", w_t, w_r)
                assert math.copysign(1.0, w_t[0, 0].item()) < 0, "an inactive row was written"
                if with_copy:
                    _equal("copy", c_t, c_r)
                w_c = w0.clone()
                _c_backend().stdp_rows_(w_c, None, s, xp, tr, a, 0.011, -0.0123, bounds)
                _equal("weight (C backend)", w_t, w_c)
        assert tri.stdp_rows_(w0.clone(), None, s * 0, xp * 0, tr, a, 0.1, 0.1, None) == 0
        assert tri.stdp_rows_(w0.clone(), None, s[:-1], xp, tr, a, 0.1, 0.1, None) is None


@check
def perturbed_parameters_are_detected() -> None:
    """The comparisons can fail: a threshold one ulp off flips no spike here, but a decay one
    ulp off changes the voltages, and the comparison sees it; a wrong detach_reset changes the
    gradients."""
    dtype = torch.float32
    x, (v, r, trace) = _input(dtype), _state(dtype)
    p, tp = _params(dtype)
    nudged = p._replace(decay=torch.nextafter(p.decay, torch.tensor(2.0, dtype=dtype)))
    try:
        _compare_forward(x, v, r, trace, p, tp, p_kernel=nudged)
    except AssertionError as err:
        assert "not bit-identical" in str(err), err
    else:
        raise AssertionError("a decay one ulp off went unnoticed")
    tri = _triton()
    save = (torch.empty_like(x), torch.empty(x.shape, dtype=torch.uint8))
    tri.lif_steps(x, v, r, trace, p, tp, save=save)
    ones = torch.ones_like(v)
    got = tri.lif_backward(
        ones.expand(x.shape).contiguous(), (1, 2.0), *save, ones, ones, p, tp, True
    )
    want = _autograd_reference(
        x, v, r, trace, p, tp, surrogate.FastSigmoid(2.0), False, 1.0, ones, ones
    )
    assert not torch.allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


def _counting(op: str) -> List[int]:
    """Count the calls of the Triton backend's ``op`` (the functional layer looks it up at each
    call): proves the end-to-end checks ran the kernels, not the torch fall-back."""
    tri, calls = _triton(), []
    original = getattr(tri, op)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    setattr(tri, op, counted)
    return calls


def _neuron_run(multistep: bool, **kwargs) -> Tuple[Tuple[torch.Tensor, ...], nn.Module]:
    from pysnn.neuron import LIFNeuron

    torch.manual_seed(0)
    neuron = LIFNeuron((N,), thresh=-60.0, refrac=2.0, **kwargs)
    x = _input(torch.float32)
    with torch.no_grad():
        if multistep:
            s = neuron.forward_multistep(x)
        else:
            s = torch.stack([neuron(x[t]) for t in range(T)])
    return (s, neuron.v, neuron.refrac_count, neuron.trace), neuron


@check
def end_to_end_lif_neuron() -> None:
    """LIFNeuron on the Triton backend, the torch steps' values bit for bit: its multi-step
    call runs the hand-written ``lif_steps`` kernel, and so does its first single step; the
    later ones run its generated Triton kernel (``GENERATE_AFTER = 1``)."""
    assert backends.preference() == ("triton",), backends.preference()
    calls = _counting("lif_steps")
    for multistep in (False, True):
        for kwargs in ({}, {"trace_mode": "reset", "tau_v": math.inf}):
            got, neuron = _neuron_run(multistep, **kwargs)
            if not multistep:
                fast = neuron.__dict__["_fast"]
                assert fast is not None and fast.kernel.backend == "triton", neuron.generated_step
            with backends.prefer("torch"):
                want, _ = _neuron_run(multistep, **kwargs)
            for name, g, w in zip(("spikes", "v", "refrac", "trace"), got, want):
                _equal(f"LIFNeuron {name} multistep={multistep} {kwargs}", g, w)
    assert len(calls) == 2 * 2, len(calls)


def _unroll_run() -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from pysnn.multistep import Unroll
    from pysnn.neuron import LIFNeuron

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(11, N), LIFNeuron((N,), thresh=-64.0, refrac=1.0))
    with torch.no_grad():
        net[0].weight.mul_(8.0)
    model = Unroll(net)
    x = torch.rand(T, B, 11, generator=torch.Generator().manual_seed(8))
    out = model(x)
    loss = (out * torch.linspace(0.0, 1.0, N)).sum()
    loss.backward()
    return out.detach(), net[0].weight.grad, net[0].bias.grad


@check
def end_to_end_unroll_bptt() -> None:
    calls = _counting("lif_backward")
    got = _unroll_run()
    with backends.prefer("torch"):
        want = _unroll_run()
    _equal("Unroll spikes", got[0], want[0])
    assert 0 < got[0].sum() < got[0].numel()
    for name, g, w in zip(("weight grad", "bias grad"), got[1:], want[1:]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
    assert w.abs().sum() > 0
    assert calls, "the Triton backward kernel did not run"


# ---- generated kernels (pysnn.codegen) written as Triton ----


def _generated_cases() -> Dict[str, Tuple[Callable[[int], nn.Module], float]]:
    """The user-written and built-in neurons the C generator is tested with
    (``tests/test_engine.py``), each with the power-of-two gain of its input (``Reciprocal``:
    a number divided by the state, which torch computes as the reciprocal times the number)."""
    from test_engine import Clipped, CurrentLIF, Reciprocal, RefractoryLIF

    from pysnn.neuron import IzhikevichNeuron
    from pysnn.readout import LIReadout

    return {
        "CurrentLIF": (lambda n: CurrentLIF(n, tau_v=torch.linspace(10.0, 30.0, n), thresh=0.8), 2),
        "Clipped": (lambda n: Clipped(n), 8),
        "IzhikevichNeuron": (lambda n: IzhikevichNeuron(n), 64),
        "LIReadout": (lambda n: LIReadout(n), 1),
        "Reciprocal": (lambda n: Reciprocal(n), 2),
        "RefractoryLIF": (
            lambda n: RefractoryLIF(
                n, tau_v=torch.linspace(10.0, 30.0, n), v_rest=-0.25, thresh=0.8
            ),
            2,
        ),
    }


def _generated_net(factory: Callable[[int], nn.Module], gain: float, dtype: torch.dtype):
    """A Linear -> neuron network whose Linear is exact in any order of summation (weights in
    sixteenths times a power of two, 0/1 inputs), so that the neuron sees the same input in
    the block form as in the step loop, and the spikes ``(T, B, 11)`` it runs on."""
    from pysnn.connection import Linear

    torch.manual_seed(4)
    net = nn.Sequential(Linear(11, N), factory(N)).to(dtype)
    with torch.no_grad():
        net[0].weight.copy_((net[0].weight * 16).round() / 16 * gain)
    g = torch.Generator().manual_seed(9)
    return net, (torch.rand(T, B, 11, generator=g) < 0.3).to(dtype)


def _step_loop(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: the network's step loop with the torch operations."""
    with backends.prefer("torch"), torch.no_grad():
        net[1].reset_state()
        return torch.stack([net(x[t]) for t in range(x.shape[0])])


def _kernel(neuron: nn.Module):
    """The kernel generated from ``neuron``'s step with which its ``forward_multistep`` runs
    (the one an ``Unroll`` plan made), for a block of one step like the ones it ran."""
    state = neuron.v if hasattr(neuron, "v") else next(iter(neuron.buffers()))
    block = torch.zeros((1, 1, *neuron.shape), dtype=state.dtype, device=state.device)
    with torch.no_grad():
        kernel, why = neuron.generated_multistep(block, new=False)
    assert kernel is not None, why
    return kernel


def _compare_generated(name: str, factory, gain: float, dtype: torch.dtype) -> None:
    """``Unroll`` of the network (the neuron's generated Triton kernel) against its step loop:
    output and every state bit for bit; explain reports the kernel."""
    from pysnn.engine import explain
    from pysnn.multistep import Unroll

    net, x = _generated_net(factory, gain, dtype)
    reference = copy.deepcopy(net)
    with torch.no_grad():
        e = explain(net, x)
    assert e.fused and e.backends["1"] == "triton-generated", (name, e)
    model = Unroll(net)
    with torch.no_grad():
        got = model(x)
    assert _kernel(net[1]).backend == "triton", "the Triton kernel did not run"
    want = _step_loop(reference, x)
    _equal(f"{name} {dtype} output", got, want)
    if name != "LIReadout":  # (its output is its potential)
        assert 0 < want.sum() < want.numel(), f"{name}: no spike or only spikes"
    if name == "RefractoryLIF":  # (the int64 counter's arithmetic, clamp and select ran)
        assert int(reference[1].count.max()) == 2 and (reference[1].count == 1).any(), name
    for (key, value), (_, expected) in zip(net[1].named_buffers(), reference[1].named_buffers()):
        if value is not None:
            _equal(f"{name} {dtype} {key}", value, expected)


@check
def generated_forward_float32() -> None:
    for name, (factory, gain) in _generated_cases().items():
        _compare_generated(name, factory, gain, torch.float32)


@check
def generated_forward_float64() -> None:
    for name, (factory, gain) in _generated_cases().items():
        _compare_generated(name, factory, gain, torch.float64)


def _traced(name: str, mode: str) -> nn.Module:
    """A user neuron (``tests/test_engine.py``) with a trace of non-default constants:
    ``CurrentLIF`` with a per-neuron ``tau_trace``, ``Graded`` with a graded output (the
    additive trace's sum rounded once where torch's ``addcmul`` fuses)."""
    from test_engine import CurrentLIF, Graded

    if name == "CurrentLIF":
        tau = torch.linspace(3.0, 40.0, N)
        return CurrentLIF(N, thresh=0.8, tau_trace=tau, trace_scale=0.7, trace_mode=mode)
    return Graded(N, tau_trace=7.0, trace_scale=1.3, trace_mode=mode)


def _sparse_currents(steps: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(steps, B, N, generator=g, dtype=torch.float64)
    return (x * (torch.rand(x.shape, generator=g) < 0.25)).to(dtype)


def _stale(*args: object) -> None:
    raise AssertionError("the trace was updated outside the generated kernel")


@check
def generated_trace_bit_identical() -> None:
    """The generated Triton kernels update the spike trace in their loop (no ``trace_step``
    after them), both modes, both dtypes: ``Unroll`` of the neuron (two calls, the second from
    a nonzero trace) and its single steps after ``GENERATE_AFTER`` give the torch step loop's
    output, trace and state bit for bit, while the trace keeps changing."""
    import pysnn.neuron as neuron_module
    from pysnn import codegen
    from pysnn.multistep import Unroll

    steps = neuron_module.Neuron.GENERATE_AFTER + 16
    for dtype in (torch.float32, torch.float64):
        for mode in ("additive", "reset"):
            for name in ("CurrentLIF", "Graded"):
                label = f"{name} {mode} {dtype}"
                neuron = _traced(name, mode).to(dtype)
                reference = copy.deepcopy(neuron)
                model, traces = Unroll(neuron, reset=False), []
                for seed in (1, 2):
                    x = _sparse_currents(T, dtype, seed)
                    with backends.prefer("torch"), torch.no_grad():
                        want = torch.stack([reference(x[t]) for t in range(T)])
                    codegen.trace_step = _stale
                    try:
                        with torch.no_grad():
                            got = model(x)
                    finally:
                        codegen.trace_step = trace_step
                    assert _kernel(neuron).backend == "triton", label
                    _equal(f"{label} output", got, want)
                    for key, value in reference._buffers.items():
                        if value is not None:
                            _equal(f"{label} {key}", neuron._buffers[key], value)
                    traces.append(neuron.trace.clone())
                assert traces[0].abs().sum() > 0 and not torch.equal(*traces), label
                a = _traced(name, mode).to(dtype)
                b = copy.deepcopy(a)
                x, traces = _sparse_currents(steps, dtype, 3), []
                with torch.no_grad():
                    for t in range(steps):
                        with backends.prefer("torch"):
                            want = b(x[t])
                        generated = t >= neuron_module.Neuron.GENERATE_AFTER
                        assert (a.generated_step == "generated") is generated, (label, t)
                        neuron_module.trace_step = _stale if generated else trace_step
                        try:
                            _equal(f"{label} single step {t}", a(x[t]), want)
                        finally:
                            neuron_module.trace_step = trace_step
                        for key, value in b._buffers.items():
                            if value is not None:
                                _equal(f"{label} single step {t} {key}", a._buffers[key], value)
                        traces.append(a.trace.clone())
                assert a.__dict__["_fast"].kernel.backend == "triton", label
                late = traces[neuron_module.Neuron.GENERATE_AFTER :]
                changed = sum(not torch.equal(u, v) for u, v in zip(late, late[1:]))
                assert traces[-1].abs().sum() > 0 and changed > len(late) // 2, label


@check
def generated_refusals_keep_their_reasons() -> None:
    """A step with ``exp`` of the state, or a random draw, is not generated: explain says why,
    and the network runs its torch step (Unroll equals the loop)."""
    from test_engine import Exponential, Noisy

    from pysnn.engine import explain
    from pysnn.multistep import Unroll

    for factory, reason in (
        (Exponential, "exp cannot be generated"),
        (Noisy, "step draws random numbers (randn)"),
    ):
        net, x = _generated_net(factory, 1, torch.float32)
        e = explain(net, x)
        assert e.backends["1"] == "torch" and reason in dict(e.fallbacks)["1"], e
        if factory is Exponential:
            want = _step_loop(copy.deepcopy(net), x)
            with torch.no_grad():
                _equal("Exponential output", Unroll(net)(x), want)


def _generated_gradients(name: str, factory, gain: float, dtype: torch.dtype) -> None:
    """``Unroll`` of the network under autograd (the neuron's generated Triton forward and
    backward kernels) against torch autograd through its step loop, for a loss on the spikes
    (random weights) and on the neuron's final state: spikes bit for bit, input, weight and
    (where it has one) bias gradients to 1e-12 in float64, to 1e-5 (relative and absolute) in float32 (the
    Linear's weight gradient sums over ``T * B`` in another order, and the surrogate
    derivatives round differently: ``1 / (a * a)`` against torch's ``pow(-2)``)."""
    from pysnn.engine import explain
    from pysnn.multistep import Unroll

    net, x = _generated_net(factory, gain, dtype)
    reference = copy.deepcopy(net)
    x = x.requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    e = explain(net, x)
    assert e.fused and e.backends["1"] == "triton-generated", (name, e)
    model = Unroll(net)
    with torch.no_grad():
        model(x)  # planned: the kernel generated
    kernel = _kernel(net[1])
    assert kernel.backend == "triton" and kernel.gradient is not None, name
    calls: List[int] = []
    backward = kernel.gradient
    kernel.gradient = lambda *args: calls.append(1) or backward(*args)
    g = torch.Generator().manual_seed(11)
    w_out = torch.rand(T, B, N, generator=g).to(dtype)
    w_state = torch.rand(B, N, generator=g).to(dtype)
    state = [k for k in kernel.states if getattr(net[1], k).is_floating_point()][-1]
    got = model(x)
    (got * w_out).sum().backward(retain_graph=True)
    (getattr(net[1], state) * w_state).sum().backward()
    with backends.prefer("torch"):
        want = torch.stack([reference(x_ref[t]) for t in range(T)])
        ((want * w_out).sum() + (getattr(reference[1], state) * w_state).sum()).backward()
    assert calls, f"{name}: the generated Triton backward kernel did not run"
    _equal(f"{name} {dtype} spikes", got.detach(), want.detach())
    tol = 1e-12 if dtype is torch.float64 else 1e-5
    pairs = [
        ("input", x.grad, x_ref.grad),
        ("weight", net[0].weight.grad, reference[0].weight.grad),
    ]
    if net[0].bias is not None:
        pairs.append(("bias", net[0].bias.grad, reference[0].bias.grad))
    for label, g_got, g_want in pairs:
        assert g_want.abs().sum() > 0, f"{name}: no {label} gradient"
        torch.testing.assert_close(
            g_got, g_want, rtol=tol, atol=tol, msg=lambda m: f"{name} {dtype} {label}: {m}"
        )


#: the generated cases with a backward kernel (IzhikevichNeuron spikes through
#: ``functional.spike``, not ``fire``: no backward, see ``generated_without_backward_...``)
_DIFFERENTIABLE = ("CurrentLIF", "Clipped", "Reciprocal", "LIReadout", "RefractoryLIF")


@check
def generated_backward_float64() -> None:
    for name in _DIFFERENTIABLE:
        _generated_gradients(name, *_generated_cases()[name], torch.float64)


@check
def generated_backward_float32() -> None:
    for name in _DIFFERENTIABLE:
        _generated_gradients(name, *_generated_cases()[name], torch.float32)


@check
def generated_backward_uses_each_built_in_surrogate() -> None:
    """Each built-in surrogate's derivative, written in Triton, gives the loop's gradients
    (float64, to 1e-12)."""
    from test_engine import CurrentLIF

    for cls in (
        surrogate.FastSigmoid,
        surrogate.ArcTan,
        surrogate.Sigmoid,
        surrogate.Triangle,
        surrogate.StraightThrough,
    ):
        factory = lambda n: CurrentLIF(n, thresh=0.3, surrogate=cls())  # noqa: E731
        _generated_gradients(cls.__name__, factory, 1, torch.float64)


@check
def generated_perturbed_surrogate_is_detected() -> None:
    """The gradient comparison can fail: the backward kernel's surrogate parameter (a constant
    of the written derivative) off by one part in 2**20 changes the gradients, and the check
    sees it."""
    from pysnn import codegen

    form = codegen.Step.surrogate_form

    def perturbed(self):
        code, param = form(self)
        return code, param * (1 + 2.0**-20)

    factory, gain = _generated_cases()["CurrentLIF"]
    codegen.Step.surrogate_form = perturbed
    try:
        _generated_gradients("CurrentLIF", factory, gain, torch.float64)
    except AssertionError as err:
        assert "Tensor-likes are not close" in str(err) and "input" in str(err), err
    else:
        raise AssertionError("a surrogate derivative off by 2**-20 went unnoticed")
    finally:
        codegen.Step.surrogate_form = form


@check
def generated_without_backward_runs_the_torch_step_under_autograd() -> None:
    """A user's surrogate class (no derivative written for it), or a Heaviside step outside
    ``fire`` (IzhikevichNeuron's ``functional.spike``, whose surrogate the recorded step does
    not show): the Triton forward kernel is generated without a backward, and under autograd
    the kernel does not apply (the neuron runs its torch step): the gradients are the step
    loop's."""
    from test_engine import CurrentLIF

    from pysnn.multistep import Unroll

    class Bump(surrogate.FastSigmoid):
        pass

    cases = (
        (lambda n: CurrentLIF(n, thresh=0.3, surrogate=Bump(1.0)), 2),
        _generated_cases()["IzhikevichNeuron"],
    )
    for factory, gain in cases:
        net, x = _generated_net(factory, gain, torch.float64)
        reference = copy.deepcopy(net)
        model = Unroll(net)
        with torch.no_grad():
            model(x)  # planned: the kernel is generated
        kernel = _kernel(net[1])
        assert kernel.backend == "triton" and kernel.gradient is None
        assert "pysnn_generated_backward" not in kernel.source

        def refuse(*args: object) -> None:
            raise AssertionError("the Triton kernel ran under autograd")

        kernel.function = refuse
        model(x).sum().backward()
        with backends.prefer("torch"):
            torch.stack([reference(x[t]) for t in range(T)]).sum().backward()
        got, want = net[0].weight.grad, reference[0].weight.grad
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@check
def generated_perturbed_uniform_is_detected() -> None:
    """The comparison can fail: the kernel's per-neuron membrane decay one ulp off changes the
    state, and the bit-for-bit comparison sees it."""
    from pysnn.codegen import generate

    factory, gain = _generated_cases()["CurrentLIF"]
    net, x = _generated_net(factory, gain, torch.float32)
    neuron = net[1]
    with torch.no_grad():
        current = net[0](x.flatten(0, 1)).unflatten(0, (T, B))
    kernel, why = generate(neuron, current[0])
    assert kernel is not None and kernel.backend == "triton", why
    reference = copy.deepcopy(neuron)
    with backends.prefer("torch"), torch.no_grad():
        want = torch.stack([reference(current[t]) for t in range(T)])
    exact = copy.deepcopy(neuron)
    with torch.no_grad():
        _equal("spikes", kernel.run(exact, current), want)
    _equal("v", exact.v, reference.v)
    (per_neuron,) = [u for u in kernel.uniforms if u.numel() == N]  # exp(-dt / tau_v)
    per_neuron.copy_(torch.nextafter(per_neuron, torch.ones_like(per_neuron)))
    with torch.no_grad():
        kernel.run(neuron, current)
    try:
        _equal("v", neuron.v, reference.v)
    except AssertionError as err:
        assert "not bit-identical" in str(err), err
    else:
        raise AssertionError("a decay one ulp off went unnoticed")


@check
def generated_number_constants_round_as_torch() -> None:
    """Numbers are constants of the kernel's dtype (0.1 rounded once to float32, kept in
    float64), and on CUDA a division by a number is the product with its reciprocal in the
    dtype, as torch's CUDA division by a Python number."""
    from test_engine import Clipped

    from pysnn import codegen
    from pysnn.backends.triton.generated import write_triton

    for dtype, name in ((torch.float32, "tl.float32"), (torch.float64, "tl.float64")):
        kernel, why = codegen.generate(Clipped(5).to(dtype), torch.zeros(2, 5, dtype=dtype))
        assert kernel is not None, why
        assert f"tl.full((), 1.1, {name})" in kernel.source, kernel.source
        assert ("tl.div_rn(s0, c0)" if dtype is torch.float32 else "(s0 / c0)") in kernel.source
    step = codegen._record(Clipped(5), torch.zeros(2, 5))
    cuda = write_triton(step, torch.device("cuda"))
    reciprocal = (torch.ones(()) / torch.tensor(1.1)).item()
    forward = cuda.split("def pysnn_generated_backward")[0]  # (the backward: gradients)
    assert f"tl.full((), {reciprocal!r}, tl.float32)" in forward and "div_rn" not in forward, cuda


@check
def generated_input_single_steps() -> None:
    """Input's single steps run its generated Triton kernel (the trace in its loop, the input
    returned itself, no spikes kept), both modes and dtypes, bit for bit the torch step's
    trace."""
    from pysnn.neuron import Input

    for dtype in (torch.float32, torch.float64):
        for mode in ("additive", "reset"):
            label = f"Input {mode} {dtype}"
            a = Input(N, tau_trace=torch.linspace(3.0, 40.0, N), trace_mode=mode).to(dtype)
            b = copy.deepcopy(a)
            g = torch.Generator().manual_seed(5)
            with torch.no_grad():
                for t in range(12):
                    x = (torch.rand(B, N, generator=g) < 0.3).to(dtype)
                    with backends.prefer("torch"):
                        want = b(x)
                    got = a(x)
                    _equal(f"{label} step {t}", got, want)
                    _equal(f"{label} step {t} trace", a.trace, b.trace)
                    assert t == 0 or got is x, label
            assert a.__dict__["_fast"].kernel.backend == "triton", label


def _builtin(name: str, dtype: torch.dtype, **kwargs: object) -> nn.Module:
    """A built-in neuron whose step has an ``int64`` refractory counter and an ``addcmul`` (the
    leak; IF: a decay of exactly 1), AdaptiveLIF's also a ``theta`` per sample or, shared, per
    neuron (updated from the batch's spike counts), with per-neuron constants; the input scale
    (``_builtin_input``) makes them spike, stay refractory and adapt."""
    from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, LIFNeuron

    g = torch.Generator().manual_seed(12)
    common = dict(refrac=2.0, thresh=-58.0 + 4.0 * torch.rand(N, generator=g), **kwargs)
    if name == "LIF":
        neuron = LIFNeuron(N, tau_v=torch.linspace(10.0, 40.0, N), **common)
    elif name == "IF":
        neuron = IFNeuron(N, **common)
    else:
        neuron = AdaptiveLIFNeuron(
            N, theta_plus=0.7, tau_theta=50.0, theta_shared=name == "AdaptiveLIF-shared", **common
        )
    return neuron.to(dtype)


#: the built-in neurons whose generated Triton kernels are checked
_BUILTIN = ("LIF", "IF", "AdaptiveLIF", "AdaptiveLIF-shared")


def _builtin_input(steps: int, batch: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (5.0 * torch.rand(steps, batch, N, generator=g, dtype=torch.float64)).to(dtype)


def _builtin_reference(neuron: nn.Module) -> nn.Module:
    """The same neuron with its kernel generation off: its torch step at every step."""
    reference = copy.deepcopy(neuron)
    reference.GENERATE_AFTER = None
    return reference


def _exercised(label: str, spikes: torch.Tensor, neuron: nn.Module) -> None:
    """The run spiked (not everywhere), was refractory, and AdaptiveLIF's theta adapted."""
    assert 0 < spikes.sum() < spikes.numel(), f"{label}: no spike or only spikes"
    assert int(neuron.refrac_count.max()) > 0, f"{label}: never refractory"
    theta = neuron._buffers.get("theta")
    assert theta is None or theta.abs().sum() > 0, f"{label}: theta never moved"


@check
def generated_builtin_single_steps() -> None:
    """LIF, IF and AdaptiveLIF (theta per sample, and shared: per neuron, from the batch's spike
    counts) take their single steps through their generated Triton kernels from the step after
    ``GENERATE_AFTER`` (int64 refractory counter, ``addcmul`` leak, the trace in the loop),
    both dtypes, batches of 1, 3 and 11 (the shared kernel runs a program's samples 8 at a
    time: 11 takes two rounds): spikes and every buffer bit for bit those of the same neuron
    with generation off (its torch step); a shared theta in ``eval()`` mode (read only, a
    constant) too."""
    for dtype in (torch.float32, torch.float64):
        for name in _BUILTIN:
            for batch in (1, 3, 11):
                for training in (True, False) if name == "AdaptiveLIF-shared" else (True,):
                    label = f"{name} {dtype} batch={batch} training={training}"
                    a = _builtin(name, dtype).train(training)
                    if not training:  # (a theta learned before)
                        a.theta = torch.linspace(0.0, 3.0, N, dtype=dtype)
                    b = _builtin_reference(a)
                    x = _builtin_input(14, batch, dtype, 13)
                    spikes = []
                    with torch.no_grad():
                        for t in range(x.shape[0]):
                            with backends.prefer("torch"):
                                want = b(x[t])
                            _equal(f"{label} step {t}", a(x[t]), want)
                            for key, value in b._buffers.items():
                                if value is not None:
                                    _equal(f"{label} step {t} {key}", a._buffers[key], value)
                            if t >= a.GENERATE_AFTER:
                                assert a.generated_step == "generated", (label, a.generated_step)
                            spikes.append(want)
                    assert a.__dict__["_fast"].kernel.backend == "triton", label
                    assert b.generated_step is None, label
                    _exercised(label, torch.stack(spikes), b)


@check
def generated_builtin_multistep() -> None:
    """The generated Triton kernels of LIF, IF and AdaptiveLIF (per sample and shared theta)
    over ``T`` steps in one launch (:meth:`~pysnn.codegen.NeuronKernel.run`, as a layer-wise
    plan runs a generated kernel), both trace modes and dtypes, batches of 3 and 11, twice in a
    row (the second from the state the first left): spikes and every buffer bit for bit the
    step loop's with generation off. Under autograd none applies (the built-in step's
    Heaviside is written outside ``fire``, a shared theta is learned from the spikes): no
    backward kernel."""
    from pysnn.codegen import generate

    for dtype in (torch.float32, torch.float64):
        for name in _BUILTIN:
            for mode in ("additive", "reset"):
                for batch in (3, 11):
                    label = f"{name} {mode} {dtype} batch={batch}"
                    a = _builtin(name, dtype, trace_mode=mode)
                    b = _builtin_reference(a)
                    kernel, why = generate(a, torch.zeros(batch, N, dtype=dtype))
                    assert kernel is not None and kernel.backend == "triton", (label, why)
                    assert kernel.gradient is None, label
                    for seed in (14, 15):
                        x = _builtin_input(T, batch, dtype, seed)
                        with torch.no_grad():
                            got = kernel.run(a, x)
                            with backends.prefer("torch"):
                                want = torch.stack([b(x[t]) for t in range(T)])
                        _equal(f"{label} seed={seed} spikes", got, want)
                        for key, value in b._buffers.items():
                            if value is not None:
                                _equal(f"{label} seed={seed} {key}", a._buffers[key], value)
                        _exercised(label, want, b)


@check
def generated_shared_kernel_keeps_no_history() -> None:
    """A kernel with per-neuron state has no backward: asked for each step's state (as the
    autograd function asks a kernel with a backward), it refuses, writing nothing."""
    from pysnn.codegen import generate

    neuron = _builtin("AdaptiveLIF-shared", torch.float64)
    x = _builtin_input(2, B, torch.float64, 16)
    kernel, why = generate(neuron, x[0])
    assert kernel is not None and kernel.backend == "triton", why
    neuron._prepare(x[0])  # (the state made for the batch)
    states = [neuron._buffers[k].clone() for k in kernel.states]
    history = [s.new_empty((2, *s.shape)) for s in states]
    out = torch.zeros_like(x)
    try:
        kernel.function(2, x[0].numel(), N, x, out, states, kernel.uniforms, history, None)
    except ValueError as err:
        assert "keeps no history" in str(err), err
    else:
        raise AssertionError("a kernel with per-neuron state kept a history")
    assert not out.any(), "written before refusing"


def _lif_bptt(dtype: torch.dtype, tol: float) -> None:
    """A built-in LIF without a surrogate (its spikes carry no gradient, its Heaviside outside
    ``fire`` then drops none) has a generated Triton backward: ``T`` steps of its kernel under
    autograd (BPTT through the addcmul leak, the refractory mask of the input, the reset's
    select; the int64 counter carries no gradient) against torch autograd through its step
    loop, for a loss on the spikes and the final potential."""
    from pysnn.codegen import generate

    a = _builtin("LIF", dtype, surrogate=None)
    b = _builtin_reference(a)
    g = torch.Generator().manual_seed(17)
    x = _builtin_input(T, B, dtype, 18).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    w_out = torch.rand(T, B, N, generator=g).to(dtype)
    w_v = torch.rand(B, N, generator=g).to(dtype)
    kernel, why = generate(a, x[0].detach())
    assert kernel is not None and kernel.backend == "triton", why
    assert kernel.gradient is not None and "pysnn_generated_backward" in kernel.source
    calls: List[int] = []
    backward = kernel.gradient
    kernel.gradient = lambda *args: calls.append(1) or backward(*args)
    got = kernel.run(a, x)
    ((got * w_out).sum() + (a.v * w_v).sum()).backward()
    with backends.prefer("torch"):
        want = torch.stack([b(x_ref[t]) for t in range(T)])
        ((want * w_out).sum() + (b.v * w_v).sum()).backward()
    assert calls, "the generated Triton backward kernel did not run"
    _equal(f"LIF {dtype} spikes", got.detach(), want.detach())
    _equal(f"LIF {dtype} refrac_count", a.refrac_count, b.refrac_count)
    _exercised(f"LIF {dtype}", want, b)
    assert x_ref.grad.abs().sum() > 0 and (x_ref.grad == 0).any(), "no refractory mask seen"
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=tol, atol=tol)


@check
def generated_builtin_lif_backward() -> None:
    _lif_bptt(torch.float64, 1e-12)
    _lif_bptt(torch.float32, 1e-5)


@check
def generated_multiply_add_rounds_as_torch() -> None:
    """The comparison sees how ``addcmul`` is rounded: with the kernel's multiply-add rounded
    the other way (the device's rule, ``fuses_multiply_add``, inverted), RefractoryLIF's
    graded potential differs from the step loop's; with the rule, it is the same."""
    from pysnn.backends.triton import generated

    rule = generated.fuses_multiply_add
    factory, gain = _generated_cases()["RefractoryLIF"]
    _compare_generated("RefractoryLIF", factory, gain, torch.float32)
    generated.fuses_multiply_add = lambda device: not rule(device)
    try:
        _compare_generated("RefractoryLIF", factory, gain, torch.float32)
    except AssertionError as err:
        assert "not bit-identical" in str(err), err
    else:
        raise AssertionError("a multiply-add rounded the other way went unnoticed")
    finally:
        generated.fuses_multiply_add = rule


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 (set before Triton is imported)")
    for name in sys.argv[1:] or list(CHECKS):
        try:
            CHECKS[name]()
            print(json.dumps({"check": name, "ok": True}), flush=True)
        except Exception:  # each check reports its own failure
            print(
                json.dumps({"check": name, "ok": False, "error": traceback.format_exc()}),
                flush=True,
            )
