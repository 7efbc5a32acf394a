"""Tests of pysnn.encoding against hand-computed and analytically expected values."""

import math
import types

import numpy as np
import pytest
import torch

from pysnn.encoding import (
    BernoulliEncoder,
    LatencyEncoder,
    PoissonEncoder,
    RankOrderEncoder,
    RepeatEncoder,
)

# The tests below read x as a batch without declaring shape=; the warning that gives is tested
# on its own (test_undeclared_shape_warns_once_with_the_fix).
pytestmark = pytest.mark.filterwarnings("ignore:.*was built without shape=:UserWarning")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


ALL = [
    lambda d, dt: PoissonEncoder(d, dt, generator=_gen()),
    lambda d, dt: BernoulliEncoder(d, dt, generator=_gen()),
    lambda d, dt: LatencyEncoder(d, dt),
    lambda d, dt: RankOrderEncoder(d, dt),
    lambda d, dt: RepeatEncoder(d, dt),
]
IDS = ["poisson", "bernoulli", "latency", "rankorder", "repeat"]


# ---------------------------------------------------------------------------------------------
# Common behaviour
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_shape_dtype_device_and_steps(make):
    enc = make(10.0, 0.3)  # 33.33 steps -> round -> 33
    assert enc.num_steps == 33 == enc.T
    x = torch.rand(4, 2, 3, dtype=torch.float64) * 0.9
    out = enc(x)
    assert out.shape == (33, 4, 2, 3)
    assert out.dtype == torch.float64 and out.device == x.device
    # integer input (e.g. uint8 pixels) -> default float dtype
    out = make(5.0, 1.0)(torch.randint(0, 3, (2, 5), dtype=torch.uint8))
    assert out.shape == (5, 2, 5) and out.dtype == torch.get_default_dtype()


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_input_not_modified(make):
    x = torch.tensor([[0.0, 0.3, 1.0, 2.5], [4.0, 0.0, 0.5, 0.7]])
    before = x.clone()
    enc = make(20.0, 1.0)
    enc(x)
    list(enc.stream(x))
    assert torch.equal(x, before)
    b = BernoulliEncoder(20.0, normalize=True)
    b(x)
    list(b.stream(x))
    assert torch.equal(x, before)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_stream_yields_steps_and_validates_eagerly(make):
    enc = make(7.0, 1.0)
    x = torch.rand(3, 4)
    gen = enc.stream(x)
    assert isinstance(gen, types.GeneratorType)
    steps = list(gen)
    assert len(steps) == 7 and all(s.shape == (3, 4) for s in steps)
    with pytest.raises(ValueError, match="x"):
        enc.stream(torch.tensor([[float("nan"), 1.0]]))  # raised before the first next()


@pytest.mark.parametrize("make", ALL, ids=IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_rejects_nan_inf(make, bad):
    with pytest.raises(ValueError, match="x must contain finite"):
        make(5.0, 1.0)(torch.tensor([[1.0, bad]]))


@pytest.mark.parametrize("make", ALL[:4], ids=IDS[:4])
def test_rejects_negative(make):
    with pytest.raises(ValueError, match="non-negative"):
        make(5.0, 1.0)(torch.tensor([[1.0, -0.5]]))


@pytest.mark.parametrize("cls", [PoissonEncoder, BernoulliEncoder, LatencyEncoder, RepeatEncoder])
def test_constructor_validation(cls):
    for dt in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dt"):
            cls(10.0, dt)
    for duration in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="duration"):
            cls(duration, 1.0)
    with pytest.raises(ValueError, match="at least one time step"):
        cls(0.4, 1.0)
    with pytest.raises(TypeError, match="dt"):
        cls(10.0, "1")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        cls(10.0)([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least 1 dimension"):
        cls(10.0)(torch.tensor(1.0))


def test_generator_validation():
    with pytest.raises(TypeError, match="generator"):
        PoissonEncoder(10.0, generator=42)
    with pytest.raises(ValueError, match="max_prob"):
        BernoulliEncoder(10.0, max_prob=1.5)
    with pytest.raises(ValueError, match="mode"):
        LatencyEncoder(10.0, mode="exp")
    with pytest.raises(ValueError, match="threshold"):
        LatencyEncoder(10.0, mode="log", threshold=0.0)
    with pytest.raises(ValueError, match="x_max"):
        LatencyEncoder(10.0, x_max=0.0)


# ---------------------------------------------------------------------------------------------
# Poisson
# ---------------------------------------------------------------------------------------------
def _isis(spikes):
    """Inter-spike intervals (in steps) of a (T, N) 0/1 array, pooled over neurons."""
    s = spikes.numpy()
    out = []
    for n in range(s.shape[1]):  # test-side reference computation
        out.append(np.diff(np.flatnonzero(s[:, n])))
    return np.concatenate(out)


def test_poisson_mean_rate_matches_theory():
    rates = torch.tensor([5.0, 20.0, 80.0, 0.0]).repeat(200)  # (800,) = 800 "batch" items
    dt = 1.0
    spikes = PoissonEncoder(2000.0, dt, generator=_gen(1))(rates)  # (2000, 800)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    per_bin = spikes.view(2000, 200, 4).mean(dim=(0, 1)).double()
    for k, r in enumerate([5.0, 20.0, 80.0, 0.0]):
        p = 1.0 - math.exp(-r * dt / 1000.0)  # P(at least one Poisson event in a bin)
        n = 2000 * 200
        se = math.sqrt(max(p * (1 - p), 1e-12) / n)
        assert abs(per_bin[k].item() - p) < 5 * se + 1e-12, (r, per_bin[k].item(), p)
    assert per_bin[3] == 0  # zero rate never spikes


def test_poisson_isi_cv_close_to_one():
    rate, dt = 20.0, 1.0
    spikes = PoissonEncoder(10000.0, dt, generator=_gen(2))(torch.full((100,), rate))
    isi = _isis(spikes)
    assert isi.size > 15000
    cv = isi.std() / isi.mean()
    p = 1.0 - math.exp(-rate * dt / 1000.0)
    assert 0.9 <= cv <= 1.1
    assert abs(cv - math.sqrt(1 - p)) < 0.03  # geometric ISIs: CV = sqrt(1 - p) = 0.990
    assert abs(isi.mean() - 1 / p) < 0.03 * (1 / p)


def test_poisson_counts_mode_exact_rate():
    rate, dt = 400.0, 1.0  # r*dt = 0.4: binary mode would saturate, counts mode must not
    out = PoissonEncoder(1000.0, dt, binary=False, generator=_gen(3))(torch.full((400,), rate))
    lam = rate * dt / 1000.0
    n = out.numel()
    assert abs(out.mean().item() - lam) < 5 * math.sqrt(lam / n)
    assert abs(out.var().item() - lam) < 0.02  # Poisson: variance = mean
    assert out.max() > 1


def test_poisson_seeding_reproducible():
    x = torch.full((3, 50), 30.0)
    a = PoissonEncoder(100.0, generator=_gen(7))(x)
    b = PoissonEncoder(100.0, generator=_gen(7))(x)
    c = PoissonEncoder(100.0, generator=_gen(8))(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    s1 = torch.stack(list(PoissonEncoder(100.0, generator=_gen(7)).stream(x)))
    s2 = torch.stack(list(PoissonEncoder(100.0, generator=_gen(7)).stream(x)))
    assert torch.equal(s1, s2) and s1.shape == a.shape


def test_poisson_stream_statistics():
    x = torch.full((1, 500), 50.0)
    steps = torch.stack(list(PoissonEncoder(500.0, generator=_gen(4)).stream(x)))
    p = 1 - math.exp(-0.05)
    assert abs(steps.mean().item() - p) < 5 * math.sqrt(p * (1 - p) / steps.numel())


# ---------------------------------------------------------------------------------------------
# Bernoulli
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "normalize, expected",
    [
        (False, [0.0, 0.125, 0.25, 0.5, 1.0]),  # clamp(x * 0.5, 0, 1)
        (True, [0.0, 0.0625, 0.125, 0.25, 0.5]),  # x / max(x) = x / 2 first
    ],
)
def test_bernoulli_probabilities(normalize, expected):
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0, 2.0]]).repeat(100, 1)
    out = BernoulliEncoder(2000.0, max_prob=0.5, normalize=normalize, generator=_gen(5))(x)
    freq = out.mean(dim=(0, 1))
    n = 2000 * 100
    for f, p in zip(freq.tolist(), expected):
        assert abs(f - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


# ---------------------------------------------------------------------------------------------
# Single-spike encoders
# ---------------------------------------------------------------------------------------------
def test_latency_linear_hand_computed():
    enc = LatencyEncoder(11.0, 1.0)  # T = 11: k = floor((1 - u) * 10 + 0.5)
    x = torch.tensor([[1.0, 0.5, 0.25, 0.0, 3.0]])
    assert enc.spike_steps(x).tolist() == [[0, 5, 8, -1, 0]]
    out = enc(x)
    assert out.sum(0).tolist() == [[1.0, 1.0, 1.0, 0.0, 1.0]]
    assert out[0, 0, 0] == 1 and out[5, 0, 1] == 1 and out[8, 0, 2] == 1
    # x_max rescales: 255 -> step 0, 127.5 -> step 5; dt = 0.5 ms gives T = 11 for 5.5 ms
    enc = LatencyEncoder(5.5, 0.5, x_max=255.0)
    assert enc.spike_steps(torch.tensor([[255.0, 127.5, 0.0]])).tolist() == [[0, 5, -1]]


def test_latency_log_hand_computed():
    enc = LatencyEncoder(11.0, 1.0, mode="log")  # threshold 0.01: k = round(ln u / ln 0.01 * 10)
    x = torch.tensor([[1.0, 0.1, 10**-0.2, 0.01, 0.005, 0.0]])
    # ln(0.1)/ln(0.01) = 0.5 -> 5; ln(10^-0.2)/ln(0.01) = 0.1 -> 1; u <= threshold -> none
    assert enc.spike_steps(x).tolist() == [[0, 5, 1, -1, -1, -1]]
    out = enc(x)
    assert out.sum().item() == 3


def test_rank_order_hand_computed():
    enc = RankOrderEncoder(8.0, 1.0)  # k = floor(rank * T / n_positive)
    x = torch.tensor([[0.9, 0.5, 0.5, 0.1, 0.0], [0.0, 0.0, 3.0, 1.0, 2.0]])
    # row 0: ranks 0, 1, 1, 3 with n = 4 -> 0, 2, 2, 6 ; row 1: ranks -, -, 0, 2, 1 with n = 3
    assert enc.spike_steps(x).tolist() == [[0, 2, 2, 6, -1], [-1, -1, 0, 5, 2]]
    out = enc(x)
    assert out.shape == (8, 2, 5)
    assert out.sum(0).tolist() == [[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    # more positive inputs (10) than steps (4): ranks share steps, floor(r * 4 / 10)
    x = torch.arange(10, 0, -1, dtype=torch.float32).view(1, 2, 5)
    assert RankOrderEncoder(4.0).spike_steps(x).flatten().tolist() == [
        0, 0, 0, 1, 1, 2, 2, 2, 3, 3
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least 2 dimension"):
        enc(torch.tensor([1.0, 2.0]))


def test_single_spike_stream_equals_forward():
    x = torch.rand(3, 2, 4)
    x[0, 0, 0] = 0.0
    for enc in (LatencyEncoder(9.0), LatencyEncoder(9.0, mode="log"), RankOrderEncoder(9.0)):
        assert torch.equal(torch.stack(list(enc.stream(x))), enc(x))
        assert enc(x).sum(0).max() <= 1


# ---------------------------------------------------------------------------------------------
# Repeat
# ---------------------------------------------------------------------------------------------
def test_repeat_encoder():
    x = torch.tensor([[1.5, -2.0], [0.0, 3.0]])
    enc = RepeatEncoder(4.0)
    out = enc(x)
    assert out.shape == (4, 2, 2)
    for t in range(4):
        assert torch.equal(out[t], x)
    out[0, 0, 0] = 100.0  # a copy, not a view of x
    assert x[0, 0] == 1.5
    steps = list(enc.stream(x))
    steps[0][0, 0] = 100.0
    assert torch.equal(steps[1], x) and x[0, 0] == 1.5


def test_value_checks_follow_global_switch():
    import pysnn

    x = torch.tensor([[-1.0, 5.0]])
    with pysnn.checks(False):  # no host read: bad values pass through unchecked
        PoissonEncoder(5.0)(x)
    with pytest.raises(ValueError, match="non-negative"):
        PoissonEncoder(5.0)(x)


# ---------------------------------------------------------------------------------------------
# Unbatched input: the sample shape
# ---------------------------------------------------------------------------------------------
SHAPED = [
    lambda shape: PoissonEncoder(6.0, generator=_gen(), shape=shape),
    lambda shape: BernoulliEncoder(6.0, generator=_gen(), shape=shape),
    lambda shape: LatencyEncoder(6.0, shape=shape),
    lambda shape: RankOrderEncoder(6.0, shape=shape),
    lambda shape: RepeatEncoder(6.0, shape=shape),
]


@pytest.mark.parametrize("make", SHAPED, ids=IDS)
def test_declared_shape_encodes_one_unbatched_sample_as_a_batch_of_one(make):
    image = torch.rand(28, 28, generator=_gen(3)) * 0.9 + 0.05
    single = make((28, 28))(image)
    assert single.shape == (6, 1, 28, 28)
    # the same draws as the explicitly batched sample (same seed): one sample, not 28
    assert torch.equal(single, make((28, 28))(image.unsqueeze(0)))
    steps = list(make((28, 28)).stream(image))
    assert len(steps) == 6 and steps[0].shape == (1, 28, 28)
    assert torch.equal(torch.stack(steps), single)
    batch = make(784)(image.reshape(2, 392).repeat(1, 2))  # (2, 784): a batch, as declared
    assert batch.shape == (6, 2, 784)


@pytest.mark.parametrize("make", SHAPED, ids=IDS)
def test_declared_shape_refuses_other_shapes(make):
    enc = make((28, 28))
    with pytest.raises(ValueError, match=r"shape \(B, 28, 28\) or, for one sample, \(28, 28\)"):
        enc(torch.rand(784))
    with pytest.raises(ValueError, match=r"got \(28, 27\)"):
        enc(torch.rand(28, 27))


def test_shape_argument_validation():
    with pytest.raises(ValueError, match="positive sizes"):
        PoissonEncoder(5.0, shape=(28, 0))
    with pytest.raises(TypeError, match="shape must contain ints"):
        PoissonEncoder(5.0, shape=(28.0, 28))
    with pytest.raises(TypeError, match="shape must be None, an int"):
        PoissonEncoder(5.0, shape=True)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        RankOrderEncoder(5.0, shape=())  # ranks are taken within a sample
    scalars = PoissonEncoder(5.0, shape=(), generator=_gen())  # a batch of scalars
    assert scalars(torch.full((7,), 10.0)).shape == (5, 7)
    assert scalars(torch.tensor(10.0)).shape == (5, 1)
    assert "shape=(28, 28)" in repr(PoissonEncoder(5.0, shape=[28, 28]))


@pytest.mark.filterwarnings("default")
def test_undeclared_shape_warns_once_with_the_fix():
    enc = PoissonEncoder(5.0, generator=_gen())
    with pytest.warns(UserWarning) as record:
        out = enc(torch.rand(28, 28))
    assert out.shape == (5, 28, 28)  # read as 28 samples of 28 inputs, as the warning says
    (message,) = [str(w.message) for w in record]
    assert "reads x of shape (28, 28) as a batch of 28 sample(s) of shape (28,)" in message
    assert "x.unsqueeze(0)" in message and "shape=(28,)" in message
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call does not warn again
        enc(torch.rand(28, 28))
        PoissonEncoder(5.0, shape=(28, 28))(torch.rand(28, 28))  # declared: never warns


def test_unambiguous_batch_without_shape_does_not_warn():
    """(16, 784): a batch of 16 flattened images cannot be one square sample: no warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = PoissonEncoder(5.0, generator=_gen())(torch.rand(16, 784))
    assert out.shape == (5, 16, 784)
