"""Fused CPU kernels (pysnn.native) give bit-identical results to the torch operations they replace."""

import copy
import math
import os

import pytest
import torch

import pysnn.native as native
from pysnn.connection import Linear
from pysnn.multistep import run_feedforward
from pysnn.neuron import AdaptiveLIFNeuron, IFNeuron, Input, LIFNeuron


def test_fused_kernels_build_here():
    """CI machines have a C compiler: the fast path must be the one under test there."""
    if os.environ.get("PYSNN_NATIVE", "1") == "0":
        assert not native.available() and "disabled" in native.status()
    else:
        assert native.available(), native.status()


needs_native = pytest.mark.skipif(not native.available(), reason=native.status())


@needs_native
def test_kernels_never_load_a_second_openmp_runtime():
    """Built with -fopenmp only against the libgomp torch already loaded: one runtime, one pool
    of threads (a second one would compete with torch's spinning workers for the cores)."""
    library = native._library()._name
    maps = "/proc/self/maps"
    loaded = open(maps).read().splitlines() if os.path.exists(maps) else []
    assert len({line.split()[-1] for line in loaded if "libgomp" in line}) <= 1
    if native._torch_uses_gnu_openmp():
        assert any(line.split()[-1] == library for line in loaded)  # this process's kernels


def drive(neuron, x):
    """Run the step loop over ``x`` (T, B, ...) and return spikes plus every state tensor."""
    spikes = torch.stack([neuron(x[t]) for t in range(x.shape[0])])
    state = {name: getattr(neuron, name).clone() for name in neuron.state_names}
    return spikes, state


def assert_same(a, b):
    spikes_a, state_a = a
    spikes_b, state_b = b
    assert torch.equal(spikes_a, spikes_b)
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def inputs(steps, batch, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(steps, batch, *shape, generator=g) * 6 + 2).to(dtype)


NEURONS = {
    "lif": lambda shape: LIFNeuron(shape, tau_v=20.0, refrac=3.0),
    "lif-no-refractory-period": lambda shape: LIFNeuron(shape, tau_v=20.0, refrac=0.0),
    "if": lambda shape: IFNeuron(shape, refrac=2.0, trace_mode="reset"),
    "lif-per-neuron": lambda shape: LIFNeuron(
        shape,
        thresh=-52.0 + torch.rand(shape),
        v_reset=-65.0 - torch.rand(shape),
        tau_v=10.0 + 90 * torch.rand(shape),
        refrac=torch.randint(0, 5, shape).float(),
        tau_trace=5.0 + torch.rand(shape),
        trace_scale=torch.rand(shape),
    ),
    "adaptive": lambda shape: AdaptiveLIFNeuron(shape, theta_plus=0.5, tau_theta=50.0),
    "adaptive-shared": lambda shape: AdaptiveLIFNeuron(
        shape, theta_plus=0.5, tau_theta=50.0, theta_shared=True
    ),
}


@needs_native
@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_step_equals_torch_ops(kind, dtype, batch):
    torch.manual_seed(1)
    shape = (37,)
    fused = NEURONS[kind](shape).to(dtype)
    reference = copy.deepcopy(fused)
    x = inputs(60, batch, shape, dtype)
    with torch.no_grad():
        got = drive(fused, x)
        with native.enabled(False):
            expected = drive(reference, x)
    assert got[0].sum() > 10  # the test drives real spiking, refractoriness and resets
    assert_same(got, expected)


@needs_native
def test_fused_step_with_channel_parameters_on_a_map():
    """(C, 1, 1) parameters of a (C, H, W) neuron map are expanded for the kernel."""
    torch.manual_seed(2)
    shape = (3, 4, 5)
    fused = LIFNeuron(shape, thresh=torch.tensor([-55.0, -52.0, -50.0]).view(3, 1, 1))
    reference = copy.deepcopy(fused)
    x = inputs(30, 2, shape, torch.float32)
    with native.enabled(False):
        expected = drive(reference, x)
    assert_same(drive(fused, x), expected)


@needs_native
def test_fused_step_sees_in_place_parameter_edits():
    lif = LIFNeuron(10, refrac=0.0)
    x = torch.full((1, 10), 5.0)
    assert lif(x).sum() == 0  # -65 + 5 < -52
    lif.thresh.fill_(-61.0)  # the kernel reads the live constant
    assert lif(x).sum() == 10
    lif.tau_v.fill_(1e9)  # a derived factor follows an in-place edit of its source
    assert torch.allclose(lif.params.decay, torch.ones(10))


@pytest.mark.parametrize("fused", [True, False])
def test_state_is_replaced_every_step_on_every_path(fused):
    """One update semantics: a reference to a state tensor keeps that step's value."""
    lif = LIFNeuron(8, refrac=0.0, thresh=-60.0)
    x = torch.full((2, 8), 3.0)
    with native.enabled(fused):
        lif(x)
        v, trace = lif.v, lif.trace
        v_value = v.clone()
        outputs = [lif(x) for _ in range(4)]
    assert lif.v is not v and torch.equal(v, v_value) and lif.trace is not trace
    # the spikes of each step are a tensor of their own: keeping them in a list is safe
    assert [int(o.sum()) for o in outputs] == [16, 0, 16, 0]


def test_gradient_steps_use_torch_ops_and_keep_the_graph():
    lif = LIFNeuron(5, surrogate=pysnn_surrogate())
    x = torch.full((1, 5), 20.0, requires_grad=True)
    s = lif(x)
    assert s.requires_grad and lif.v.requires_grad
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    v = lif.v
    with torch.no_grad():
        lif(torch.zeros(1, 5))  # the old state belongs to a graph: it is replaced, not mutated
    assert lif.v is not v


def pysnn_surrogate():
    from pysnn.surrogate import FastSigmoid

    return FastSigmoid()


@pytest.mark.parametrize("kind", ["lif", "if", "adaptive"])
def test_forward_multistep_equals_step_loop(kind):
    torch.manual_seed(3)
    shape = (21,)
    block = NEURONS[kind](shape)
    loop = copy.deepcopy(block)
    x = inputs(40, 2, shape, torch.float32, seed=4)
    expected = drive(loop, x)
    with torch.no_grad():
        # single steps, a block, single steps: state is carried across
        got = torch.cat([drive(block, x[:5])[0], block.forward_multistep(x[5:30])])
        got = torch.cat([got, drive(block, x[30:])[0]])
    assert torch.equal(got, expected[0])
    for name, value in expected[1].items():
        assert torch.equal(getattr(block, name), value), name


@needs_native
@pytest.mark.parametrize("multistep", [False, True])
def test_refractory_period_set_to_zero_while_neurons_are_refractory(multistep):
    """Without a refractory period the kernel leaves the counters alone only when none is
    running: set to 0 while some neurons still count down, the counters run out as in torch."""
    torch.manual_seed(6)
    fused = LIFNeuron((30,), tau_v=20.0, refrac=4.0)
    reference = copy.deepcopy(fused)
    x = inputs(40, 2, (30,), torch.float32, seed=7)
    with torch.no_grad():
        drive(fused, x[:12])
        with native.enabled(False):
            drive(reference, x[:12])
        assert (fused.refrac_count > 0).any()  # the case under test
        fused.refrac.fill_(0.0), reference.refrac.fill_(0.0)
        run = (
            (lambda n, xs: n.forward_multistep(xs))
            if multistep
            else (lambda n, xs: drive(n, xs)[0])
        )
        got = run(fused, x[12:])
        with native.enabled(False):
            expected = run(reference, x[12:])
    assert got.sum() > 10 and torch.equal(got, expected)
    for name in fused.state_names:
        assert torch.equal(getattr(fused, name), getattr(reference, name)), name
    assert not fused.refrac_count.any()


def test_forward_multistep_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 4\)"):
        LIFNeuron(4).forward_multistep(torch.zeros(3, 4))


@needs_native
@pytest.mark.parametrize("mode", ["additive", "reset"])
def test_fused_input_trace_equals_torch_ops(mode):
    torch.manual_seed(5)
    fused = Input(50, tau_trace=7.0, trace_scale=0.5, trace_mode=mode)
    reference = copy.deepcopy(fused)
    x = (torch.rand(30, 4, 50) < 0.2).float()
    with native.enabled(False):
        expected = drive(reference, x)
    assert_same(drive(fused, x), expected)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_event_linear_equals_dense(dtype):
    torch.manual_seed(6)
    dense = Linear(120, 30, propagation="dense", bias=True).to(dtype)
    event = copy.deepcopy(dense)
    event.propagation = "event"
    x = ((torch.rand(25, 3, 120) < 0.1) * torch.rand(25, 3, 120)).to(dtype)  # graded, sparse
    x[4] = 0
    with torch.no_grad():
        got = torch.stack([event(s) for s in x])
        expected = torch.stack([dense(s) for s in x])
        with native.enabled(False):
            bag = copy.deepcopy(event)
            via_bag = torch.stack([bag(s) for s in x])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, via_bag)


@needs_native
def test_fused_event_linear_is_exact_with_integer_weights_and_counts_activity():
    conn = Linear(64, 16, propagation="event", delay=2.0)
    with torch.no_grad():
        conn.weight.copy_(torch.randint(-8, 9, (16, 64)).float())
        dense = copy.deepcopy(conn)
        dense.propagation = "dense"
        x = (torch.rand(20, 2, 64) < 0.1).float()
        got = torch.stack([conn(s) for s in x])
        assert torch.equal(got, torch.stack([dense(s) for s in x]))
    out, active = native.linear_event(x[0].contiguous(), dense.weight.t().contiguous())
    assert active == int(x[0].count_nonzero())
    assert torch.equal(out, x[0] @ dense.weight.t())


def test_run_feedforward_uses_neuron_multistep_and_matches_the_loop():
    torch.manual_seed(7)
    fc = Linear(40, 12, init="uniform", init_kwargs={"a": 0.0, "b": 8.0})
    lif = LIFNeuron(12)
    fc_loop, lif_loop = copy.deepcopy(fc), copy.deepcopy(lif)
    x = (torch.rand(50, 2, 40) < 0.1).float()
    with torch.no_grad():
        got = run_feedforward(fc, lif, x)
        expected = torch.stack([lif_loop(fc_loop(s)) for s in x])
    assert expected.sum() > 0
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(lif.v, lif_loop.v)


def test_status_explains_the_path():
    with native.enabled(False):
        assert not native.available()
        assert "disabled" in native.status()
    assert isinstance(native.status(), str)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cache_blocked_event_kernel_equals_rowwise_bit_for_bit(dtype, monkeypatch):
    """Several input blocks and output tiles (300 > 128 inputs, 1100 > 512 outputs), graded input,
    an all-zero row and a dense row: the blocked kernel adds the same terms in the same order."""
    torch.manual_seed(9)
    wt = torch.randn(300, 1100, dtype=dtype)
    x = (torch.rand(40, 300) < 0.1).to(dtype) * torch.rand(40, 300, dtype=dtype)
    x[5] = 0
    x[6] = torch.rand(300, dtype=dtype) + 0.1
    blocked, active = native.linear_event(x, wt)
    monkeypatch.setattr(native, "BLOCK_ROWS", 10**9)
    rowwise, active_rowwise = native.linear_event(x, wt)
    assert torch.equal(blocked, rowwise) and active == active_rowwise == int(x.count_nonzero())
    torch.testing.assert_close(blocked, x @ wt)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_in,n_out", [(300, 1100), (129, 7), (1000, 513)])
def test_event_kernel_on_the_row_major_weight_equals_the_copy_bit_for_bit(dtype, n_in, n_out):
    """``linear_event_rows`` transposes each weight block in cache: the same terms in the same
    order as the kernels on the presynaptic-major copy (blocked and row by row), with partial
    blocks and tiles, graded input, an all-zero row and a dense row."""
    torch.manual_seed(11)
    weight = torch.randn(n_out, n_in, dtype=dtype)
    x = (torch.rand(40, n_in) < 0.1).to(dtype) * torch.rand(40, n_in, dtype=dtype)
    x[5] = 0
    x[6] = torch.rand(n_in, dtype=dtype) + 0.1
    rows, active = native.linear_event_rows(x, weight)
    copy_blocked, active_copy = native.linear_event(x, native.transposed(weight))
    rowwise = torch.stack([native.linear_event(r[None], weight.t().contiguous())[0][0] for r in x])
    assert torch.equal(rows, copy_blocked) and torch.equal(rows, rowwise)
    assert active == active_copy == int(x.count_nonzero())
    exact = x.double() @ weight.double().t()  # (float32 sums of 1000 terms: rounding only)
    torch.testing.assert_close(rows.double(), exact, rtol=1e-4, atol=1e-4)


@needs_native
def test_multistep_without_a_copy_reads_the_weight_and_builds_none():
    """A multi-step block after a weight write reads the row-major weight itself (no
    presynaptic-major copy is built, no memory for it); the result equals the step loop."""
    torch.manual_seed(12)
    conn = Linear(200, 90, propagation="event")
    x = (torch.rand(30, 2, 200) < 0.1).float()
    with torch.no_grad():
        conn.weight.normal_()
        block = conn.forward_multistep(x)
        assert conn._copy.copy is None
        conn.reset_state()
        loop = torch.stack([conn(s) for s in x])  # single steps build the copy
        assert conn._copy.copy is not None
        conn.reset_state()
        again = conn.forward_multistep(x)  # now read from the up-to-date copy
    assert torch.equal(block, loop) and torch.equal(again, loop)


def test_without_a_compiler_everything_falls_back_to_torch(tmp_path):
    """No C compiler on the PATH: the status says why, and neurons still run (torch ops)."""
    import subprocess
    import sys

    code = (
        "import torch, pysnn.native as n\n"
        "from pysnn.neuron import LIFNeuron\n"
        "print(n.status())\n"
        "print(int(LIFNeuron(3, thresh=-60.0)(torch.full((1, 3), 9.0)).sum()))\n"
    )
    env = {"PATH": str(tmp_path), "PYSNN_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].startswith("fused CPU kernels unavailable") and "no C compiler" in out[0]
    assert out[1] == "3"


def test_forward_multistep_feeds_a_monitor_every_step():
    """A forward hook (here a Monitor's) must see each of the T steps: no fused block then."""
    from pysnn.monitor import Monitor

    torch.manual_seed(10)
    lif = LIFNeuron(6, tau_v=20.0, refrac=1.0)
    loop = copy.deepcopy(lif)
    monitor = Monitor(lif, state_vars=("v", "spikes"))
    x = inputs(12, 2, (6,), torch.float32, seed=11)
    with torch.no_grad():
        out = lif.forward_multistep(x)
        expected_v = torch.stack([(loop(x[t]), loop.v.clone())[1] for t in range(12)])
    assert torch.equal(monitor.get("spikes"), out)
    assert torch.equal(monitor.get("v"), expected_v)


@needs_native
def test_linear_event_rejects_bad_input_with_clear_errors():
    wt = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"x of shape \(N, in\).*x \(2, 5\)"):
        native.linear_event(torch.zeros(2, 5), wt)
    with pytest.raises(ValueError, match="float32 or float64"):
        native.linear_event(torch.zeros(2, 4, dtype=torch.float64), wt)
    with pytest.raises(ValueError, match="contiguous"):
        native.linear_event(torch.zeros(2, 4), torch.randn(3, 4).t())
    with native.enabled(False), pytest.raises(RuntimeError, match="disabled"):
        native.linear_event(torch.zeros(2, 4), wt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (65, 130), (1100, 1000)])
def test_transposed_is_an_exact_new_transpose(shape, dtype):
    matrix = torch.randn(*shape, dtype=dtype)
    out = native.transposed(matrix)
    assert out.is_contiguous() and out.data_ptr() != matrix.data_ptr()
    assert torch.equal(out, matrix.t())  # (1100, 1000): large enough for the threaded tiles


def test_transposed_into_a_given_tensor_and_fallback():
    matrix = torch.randn(5, 3)
    out = torch.empty(3, 5)
    assert native.transposed(matrix, out) is out and torch.equal(out, matrix.t())
    wrong = torch.empty(5, 3)  # wrong shape: a new tensor instead
    assert native.transposed(matrix, wrong) is not wrong
    half = torch.randn(4, 6).to(torch.bfloat16)  # not a kernel dtype: torch's copy
    assert torch.equal(native.transposed(half), half.t())


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bounds", [None, (0.0, 1.0), (-math.inf, 0.6)])
def test_fused_row_update_equals_torch_ops(dtype, bounds):
    g = torch.Generator().manual_seed(7)
    weight = torch.rand(37, 70, generator=g, dtype=dtype)
    rows = torch.tensor([0, 3, 4, 5, 11, 12, 13, 14, 15, 36])
    dw = torch.randn(10, 70, generator=g, dtype=dtype) * 0.3
    expected = weight.clone()
    updated = expected.index_select(0, rows).add_(dw)
    if bounds is not None:
        updated.clamp_(*bounds)
    expected.index_copy_(0, rows, updated)
    copy = weight.t().contiguous()
    version = weight._version
    assert native.row_update_(weight, rows, dw, copy, bounds)
    assert torch.equal(weight, expected) and torch.equal(copy, expected.t())
    assert weight._version > version  # seen by autograd and by the caches keyed on versions


@needs_native
def test_fused_row_update_refuses_out_of_range_rows():
    weight = torch.zeros(4, 3)
    assert not native.row_update_(weight, torch.tensor([1, 4]), torch.ones(2, 3), None, None)
    assert weight.abs().sum() == 0  # nothing written
    linear = Linear(3, 4)
    with pytest.raises(IndexError):
        linear.apply_update_(torch.ones(2, 3), torch.tensor([1, 4]))
