"""ANN-to-SNN conversion (pysnn.conversion): IF neuron with reset by subtraction, BatchNorm
folding, threshold balancing, errors, and accuracy of a converted network."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pysnn.conversion import SoftResetIFNeuron, ann_to_snn, fold_batchnorm
from pysnn.monitor import Monitor
from pysnn.readout import LIReadout


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny: a second intra-op thread only adds synchronisation (several
    times slower on a busy machine). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count_closed_form(a: float, thresh: float, steps: int, v_init: float = 0.0) -> int:
    """Spikes of an IF neuron with reset by subtraction under a constant input ``a`` (mV per
    step), by hand: one spike per step while ``v >= thresh`` is possible, so the count is
    ``floor((T a + v_init) / thresh)`` capped at ``T`` (and 0 for ``a <= 0``)."""
    if a <= 0:
        return 0
    return min(steps, math.floor((steps * a + v_init) / thresh))


# ------------------------------------------------------------------------------ the neuron
@pytest.mark.parametrize("v_init", [0.0, 0.5])
def test_soft_reset_if_spike_count_matches_closed_form(v_init: float) -> None:
    # dyadic inputs: every partial sum is exact in float32, so the count is exact
    inputs = [0.0, -0.25, 0.125, 0.375, 0.5, 0.6875, 1.0, 1.5]
    for thresh in (1.0, 2.0):
        neuron = SoftResetIFNeuron(len(inputs), thresh=thresh, v_init=v_init * thresh)
        x = torch.tensor([inputs])
        counts = torch.zeros(1, len(inputs))
        for t in range(1, 101):
            counts += neuron(x)
            if t in (7, 64, 100):
                expected = [_count_closed_form(a, thresh, t, v_init * thresh) for a in inputs]
                assert counts[0].tolist() == expected, (thresh, t)
        # the charge above threshold is kept: v = v_init + T a - thresh N (no reset to zero)
        v_expected = [v_init * thresh + 100 * a - thresh * n for a, n in zip(inputs, expected)]
        torch.testing.assert_close(neuron.v[0], torch.tensor(v_expected))


def test_soft_reset_if_rate_approaches_relu() -> None:
    a = torch.tensor([[-0.3, 0.0, 0.1234, 0.5, 0.777, 0.999, 1.7]])
    neuron = SoftResetIFNeuron(a.shape[1])
    steps = 1000
    with torch.no_grad():
        rate = sum(neuron(a) for _ in range(steps)) / steps
    torch.testing.assert_close(rate, a.clamp(0, 1), atol=1.0 / steps, rtol=0)


def test_soft_reset_if_gradient_path_gives_the_same_spikes() -> None:
    x = torch.rand(4, 5) * 0.8
    plain, graded = SoftResetIFNeuron(5), SoftResetIFNeuron(5)
    xg = x.clone().requires_grad_(True)
    total = 0
    for _ in range(20):
        s_plain = plain(x)
        s_graded = graded(xg)
        assert torch.equal(s_plain, s_graded.detach())
        total = total + s_graded.sum()
    total.backward()  # the default surrogate gives a gradient
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_soft_reset_if_rejects_non_positive_threshold() -> None:
    with pytest.raises(ValueError, match="thresh"):
        SoftResetIFNeuron(3, thresh=0.0)


# ------------------------------------------------------------------------------ conversion
def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_nearest_rank_percentile_sets_the_scale() -> None:
    # identity layer: activations are the inputs 1..1000; the 99.9th percentile by nearest rank
    # is the 999th value, the maximum the 1000th
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    data = torch.arange(1.0, 1001.0).view(-1, 1)
    for percentile, scale in ((99.9, 999.0), (100.0, 1000.0), (50.0, 500.0)):
        snn = ann_to_snn(model, data, percentile=percentile)
        assert snn.scales.tolist() == [scale, scale]
        first, _ = snn.layer("layer1")
        torch.testing.assert_close(first.weight, torch.tensor([[1.0 / scale]]))
        output, _ = snn.layer("output")
        torch.testing.assert_close(output.weight, torch.tensor([[1.0]]))  # scale / scale


def test_rates_of_a_tiny_network_follow_the_relu_activations() -> None:
    model = _mlp()
    x = torch.rand(16, 6)
    # max-normalisation: no rate is clipped; v_init = 0: N = floor(T a)
    snn = ann_to_snn(model, x, percentile=100.0, v_init=0.0)
    lam1, lam2 = snn.scales.tolist()
    a1 = torch.relu(model[0](x)).detach()
    z = model(x).detach()
    _, hidden = snn.layer("layer1")
    out_conn, _ = snn.layer("output")
    steps = 400
    snn.reset_state()
    n1 = torch.zeros_like(a1)
    n2 = torch.zeros_like(z)
    with torch.no_grad():
        for _ in range(steps):
            n2 += snn(x)
            n1 += hidden.spikes
    # hidden layer: constant input a1 / lam1 per step, so N1 = floor(T a1 / lam1) (+- float
    # rounding of the input at the floor's edges)
    assert (n1 - torch.floor(steps * a1 / lam1)).abs().max() <= 1
    # output: its input lags the ideal T a1 / lam1 by less than one spike per hidden neuron, so
    # |N2 - T clamp(z / lam2, 0, 1)| <= 1 + sum_j |W'_ij|
    bound = 1 + out_conn.weight.abs().sum(1)
    ideal = steps * (z / lam2).clamp(0, 1)
    assert ((n2 - ideal).abs() <= bound).all()
    # and the rates approach the ReLU activations
    assert (n2 / steps - (z / lam2).clamp(0, 1)).abs().max() < 0.02


@pytest.mark.parametrize("v_init, lag", [(0.0, 1.0), (0.5, 0.5)])
def test_potential_readout_approaches_the_ann_output(v_init: float, lag: float) -> None:
    model = _mlp(1)
    x = torch.rand(32, 6)
    snn = ann_to_snn(model, x, percentile=100.0, readout="potential", v_init=v_init)
    assert isinstance(snn.layer("output")[1], LIReadout)
    lam1 = snn.scales[0].item()
    z = model(x).detach()
    for steps in (20, 200):
        v = snn.scores(x, steps)
        # v(T) = W lam1 N1(T) + b T with N1(T) = floor(T a1 / lam1 + v_init), which is within
        # `lag` spikes of T a1 / lam1 (1 for v_init = 0, 1/2 for v_init = 1/2)
        bound = lag * model[2].weight.abs().sum(1) * lam1 / steps
        assert ((v / steps - z).abs() <= bound + 1e-5).all(), steps
        if v_init == 0.0:  # the bound is not loose: the truncation error shows
            assert ((v / steps - z).abs() > bound / 4).any()


def test_batchnorm_folding_equals_the_eval_mode_ann() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 5, bias=False)),
        nn.BatchNorm1d(5, affine=False),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(5, 3),
    ).double()
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for bn in (model[1], model[5]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3)
        model[1].weight.uniform_(-2, 2)
        model[1].bias.uniform_(-1, 1)
    x = torch.randn(10, 2, 6, 6, dtype=torch.float64)
    folded = fold_batchnorm(model)
    assert model.training  # the model itself is untouched
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) for m in folded)
    expected = model.eval()(x)
    torch.testing.assert_close(folded(x), expected, rtol=1e-12, atol=1e-12)
    # by hand for the first channel of the first layer: (conv - mean) * gamma / sigma + beta
    bn = model[1]
    conv = nn.functional.conv2d(x, model[0].weight, model[0].bias, padding=1)[:, 0]
    by_hand = (conv - bn.running_mean[0]) * bn.weight[0] / torch.sqrt(
        bn.running_var[0] + bn.eps
    ) + bn.bias[0]
    torch.testing.assert_close(folded[0](x)[:, 0], by_hand, rtol=1e-12, atol=1e-12)


def test_dropout_is_removed_and_training_mode_does_not_matter() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)
    )
    x = torch.rand(64, 6)
    model.train()
    model(x)  # updates the running statistics
    snn_train = ann_to_snn(model, x, readout="potential")
    model.eval()
    snn_eval = ann_to_snn(model, x, readout="potential")
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in snn_train.modules())
    assert torch.equal(snn_train.scores(x, 30), snn_eval.scores(x, 30))


def test_conv_network_structure_and_forward_equals_scores() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 4),
        nn.ReLU(),
        nn.Linear(4, 2),
    )
    x = torch.rand(5, 1, 6, 6)
    snn = ann_to_snn(model, x)
    assert list(snn.layers) == ["layer1", "layer2", "output"]
    assert snn.layer("layer1")[1].shape == (3, 4, 4)
    assert snn.input_shape == (1, 6, 6)
    # scores precomputes the constant first current: same spikes as stepping forward(x)
    snn.reset_state()
    with torch.no_grad():
        counts = sum(snn(x) for _ in range(12))
    assert torch.equal(snn.scores(x, 12), counts)
    both = snn.scores(x, [5, 12])
    assert both.shape == (2, 5, 2)
    assert torch.equal(both[0], snn.scores(x, 5)) and torch.equal(both[1], counts)


def test_float64_model_gives_float64_snn() -> None:
    model = _mlp().double()
    x = torch.rand(8, 6, dtype=torch.float64)
    snn = ann_to_snn(model, x)
    assert snn.scores(x, 4).dtype == torch.float64


def test_state_dict_to_and_monitor() -> None:
    model = _mlp()
    x = torch.rand(8, 6)
    snn = ann_to_snn(model, x)
    expected = snn.scores(x, 20)
    # a network converted with other scales takes the saved weights and scales and then agrees
    other = ann_to_snn(model, x * 3)
    assert not torch.equal(other.scales, snn.scales)
    other.load_state_dict(snn.state_dict())
    assert torch.equal(other.scales, snn.scales)
    assert torch.equal(other.scores(x, 20), expected)
    # .double() moves weights, neuron constants and scales; the spikes are unchanged here
    snn.double()
    assert snn.layer("layer1")[0].weight.dtype == torch.float64
    torch.testing.assert_close(snn.scores(x.double(), 20), expected.double())
    # a Monitor records the hidden potential and spikes step by step
    _, hidden = snn.layer("layer1")
    monitor = Monitor(hidden, ("v", "spikes"))
    snn.scores(x.double(), 5)
    assert monitor.get("v").shape == (5, 8, 8) and monitor.get("spikes").shape == (5, 8, 8)
    recorded = monitor.get("spikes").sum(0)
    monitor.remove()
    snn.reset_state()
    with torch.no_grad():
        for _ in range(5):
            snn(x.double())
    assert torch.equal(hidden.spikes, monitor.get("spikes")[-1])
    assert recorded.sum() > 0


def test_calibration_from_a_dataloader_equals_a_tensor() -> None:
    model = _mlp()
    x = torch.rand(40, 6)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(40)), batch_size=7
    )
    assert torch.equal(ann_to_snn(model, loader).scales, ann_to_snn(model, x).scales)


@pytest.mark.parametrize(
    "layers, match",
    [
        (
            lambda: [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)],
            r"model\.2 \(MaxPool2d.*AvgPool2d",
        ),
        (lambda: [nn.Sequential(nn.Linear(4, 4), nn.Sigmoid())], r"model\.0\.1 \(Sigmoid.*ReLU"),
        (lambda: [nn.Linear(4, 4), nn.GELU()], r"model\.1 \(GELU"),
        (lambda: [nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4)], r"model\.2 \(BatchNorm1d"),
        (lambda: [nn.ReLU(), nn.Linear(4, 4)], r"model\.0 \(ReLU\(\)\).*must follow"),
        (lambda: [nn.Linear(4, 4), nn.Linear(4, 2)], r"model\.1 .*without a ReLU"),
        (lambda: [nn.Linear(4, 4), nn.ReLU(), nn.Flatten()], r"ends with"),
        (lambda: [nn.ReLU()], r"no Linear or Conv2d"),
        (lambda: [nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False)], "running"),
    ],
)
def test_unsupported_layers_are_named(layers, match) -> None:
    model = nn.Sequential(*layers())
    with pytest.raises(ValueError, match=match):
        ann_to_snn(
            model, torch.rand(4, 1, 6, 6) if isinstance(model[0], nn.Conv2d) else torch.rand(4, 4)
        )


def test_bad_arguments() -> None:
    model, x = _mlp(), torch.rand(8, 6)

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="nn.Sequential"):
        ann_to_snn(Custom(), x)
    with pytest.raises(ValueError, match="percentile"):
        ann_to_snn(model, x, percentile=0.0)
    with pytest.raises(ValueError, match="readout"):
        ann_to_snn(model, x, readout="rate")
    with pytest.raises(ValueError, match="v_init"):
        ann_to_snn(model, x, v_init=1.0)
    with pytest.raises(ValueError, match="calibration_data"):
        ann_to_snn(model, torch.empty(0, 6))
    with pytest.raises(ValueError, match="calibration_data is empty"):
        ann_to_snn(model, [])
    with pytest.raises(TypeError, match="floating point"):
        ann_to_snn(model, torch.ones(8, 6, dtype=torch.int64))
    with pytest.raises(TypeError, match="calibration_data"):
        ann_to_snn(model, 3)
    snn = ann_to_snn(model, x)
    for steps in (0, [4, 2], [], [2.5]):
        with pytest.raises(ValueError, match="steps"):
            snn.scores(x, steps)
    with pytest.raises(TypeError, match="steps"):
        snn.scores(x, 2.5)


def test_a_layer_that_never_activates_is_an_error() -> None:
    model = _mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    with pytest.raises(ValueError, match=r"layer 1 \(model\.0\) has no positive activation"):
        ann_to_snn(model, torch.rand(8, 6))


# ------------------------------------------------------------------------------ accuracy
def test_converted_network_matches_the_ann_on_a_synthetic_task() -> None:
    torch.manual_seed(0)
    centres = torch.randn(4, 10) * 1.5
    labels = torch.randint(0, 4, (1200,))
    data = centres[labels] + torch.randn(1200, 10)
    x_train, y_train, x_test, y_test = data[:800], labels[:800], data[800:], labels[800:]
    model = nn.Sequential(
        nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    with torch.no_grad():
        ann = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert ann > 0.85
    for readout, tolerance in (("spikes", 0.03), ("potential", 0.02)):
        snn = ann_to_snn(model, x_train, readout=readout)
        scores = snn.scores(x_test, [4, 100])
        accuracy = (scores.argmax(2) == y_test).float().mean(1)
        assert abs(accuracy[1].item() - ann) <= tolerance, (readout, accuracy, ann)
        assert accuracy[1] >= accuracy[0]  # more steps, finer rates


def test_example_runs_on_the_bundled_sample(tmp_path) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "mnist_conversion.py"
    spec = importlib.util.spec_from_file_location("mnist_conversion", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plot = tmp_path / "curve.png"
    results = example.main(
        ["--epochs", "1", "--n-test", "100", "--max-steps", "16", "--plot", str(plot)]
    )
    assert plot.is_file()
    assert results["ann"] > 80.0
    for readout in ("spikes", "potential"):
        assert set(results[readout]["accuracy"]) == {4, 8, 16}
    # the helper reads the first T from which the accuracy stays within the margin
    assert example.steps_within([8, 16, 32], [90.0, 96.0, 95.9], 95.5) == 16
    assert example.steps_within([8, 16, 32], [96.0, 95.0, 96.0], 95.5) == 32
    assert example.steps_within([8, 16], [90.0, 91.0], 95.5) is None
    # exactly 0.5 points below counts as within, whatever the float rounding of 99.22 - 0.5
    assert example.steps_within([8, 16], [98.72, 99.0], 99.22 - 0.5) == 8
