"""Tests for pysnn.evaluation against hand-computed assignments and predictions."""

import pytest
import torch

from pysnn.evaluation import (
    LinearReadout,
    accuracy,
    all_activity,
    assign_labels,
    proportion_weighting,
)

# 6 samples x 4 neurons; labels 0,0,1,1,2,2. Neuron 3 never fires.
COUNTS = torch.tensor(
    [
        [4.0, 0.0, 1.0, 0.0],
        [2.0, 1.0, 1.0, 0.0],
        [0.0, 3.0, 1.0, 0.0],
        [1.0, 5.0, 1.0, 0.0],
        [0.0, 0.0, 2.0, 0.0],
        [2.0, 0.0, 4.0, 0.0],
    ]
)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
# by hand: mean count of each neuron (rows) over the two samples of each class (columns)
RATES = torch.tensor(
    [
        [3.0, 0.5, 1.0],
        [0.5, 4.0, 0.0],
        [1.0, 1.0, 3.0],
        [0.0, 0.0, 0.0],
    ]
)
PROPORTIONS = torch.tensor(
    [
        [3.0 / 4.5, 0.5 / 4.5, 1.0 / 4.5],
        [0.5 / 4.5, 4.0 / 4.5, 0.0],
        [0.2, 0.2, 0.6],
        [0.0, 0.0, 0.0],
    ]
)


def test_assign_labels_from_counts():
    assignments, proportions, rates = assign_labels(COUNTS, LABELS, 3)
    torch.testing.assert_close(rates, RATES)
    assert assignments.tolist() == [0, 1, 2, -1]  # silent neuron -> -1, not class 0
    assert assignments.dtype == torch.long
    torch.testing.assert_close(proportions, PROPORTIONS)
    assert not torch.isnan(proportions).any()


def test_assign_labels_accepts_time_resolved_spikes():
    # split each count into T=5 binary steps: the first `count` steps spike
    T = 5
    steps = (torch.arange(T)[None, :, None] < COUNTS[:, None, :]).to(torch.bool)  # (N, T, n)
    assert steps.shape == (6, 5, 4)
    assignments, proportions, rates = assign_labels(steps, LABELS, 3)
    torch.testing.assert_close(rates, RATES)
    assert assignments.tolist() == [0, 1, 2, -1]


def test_assign_labels_ties_go_to_lowest_class():
    counts = torch.tensor([[2.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    assignments, _, rates = assign_labels(counts, labels, 3)
    # neuron 0: rates (2, 2, 0) -> class 0; neuron 1: (0, 1, 1) -> class 1
    assert assignments.tolist() == [0, 1]


def test_assign_labels_incremental_update():
    prev = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
    prev_copy = prev.clone()
    counts = torch.tensor([[3.0, 1.0], [1.0, 1.0]])  # both samples of class 0
    labels = torch.tensor([0, 0])
    assignments, proportions, rates = assign_labels(counts, labels, 2, rates=prev, alpha=0.5)
    # class 0: 0.5 * prev + mean([3, 1], [1, 1]) = (0.5 + 2, 2 + 1); class 1 absent: unchanged
    torch.testing.assert_close(rates, torch.tensor([[2.5, 2.0], [3.0, 0.0]]))
    torch.testing.assert_close(prev, prev_copy)  # not modified in place
    assert assignments.tolist() == [0, 0]
    torch.testing.assert_close(proportions, torch.tensor([[2.5 / 4.5, 2.0 / 4.5], [1.0, 0.0]]))


def test_assign_labels_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must lie in"):
        assign_labels(COUNTS, torch.tensor([0, 0, 1, 1, 2, 3]), 3)
    with pytest.raises(ValueError, match="labels must have shape"):
        assign_labels(COUNTS, LABELS[:5], 3)
    with pytest.raises(TypeError, match="labels must be an integer"):
        assign_labels(COUNTS, LABELS.float(), 3)
    with pytest.raises(ValueError, match="spikes must have shape"):
        assign_labels(COUNTS[0], LABELS, 3)
    with pytest.raises(ValueError, match="n_labels"):
        assign_labels(COUNTS, LABELS, 0)
    with pytest.raises(ValueError, match="rates must have shape"):
        assign_labels(COUNTS, LABELS, 3, rates=torch.zeros(4, 2))


def test_all_activity_by_hand():
    assignments = torch.tensor([0, 1, 2, -1, 0])
    counts = torch.tensor(
        [
            [1.0, 5.0, 0.0, 9.0, 3.0],  # c0=(1+3)/2=2, c1=5, c2=0 -> 1 (neuron 3 ignored)
            [4.0, 1.0, 2.0, 0.0, 4.0],  # c0=4, c1=1, c2=2 -> 0
            [0.0, 0.0, 3.0, 0.0, 0.0],  # c0=0, c1=0, c2=3 -> 2
            [1.0, 2.0, 2.0, 0.0, 3.0],  # c0=2, c1=2, c2=2 -> tie -> 0
            [0.0, 0.0, 0.0, 5.0, 0.0],  # only the unassigned neuron fires -> tie -> 0
        ]
    )
    pred = all_activity(counts, assignments, 3)
    assert pred.tolist() == [1, 0, 2, 0, 0]
    assert pred.dtype == torch.long
    # (N, T, n) input gives the same as its sum over T
    steps = torch.stack([counts / 2, counts / 2], dim=1)
    assert all_activity(steps, assignments, 3).tolist() == [1, 0, 2, 0, 0]


def test_all_activity_never_predicts_empty_class():
    assignments = torch.tensor([1, -1, -1])
    counts = torch.tensor([[0.0, 7.0, 7.0], [2.0, 0.0, 0.0]])
    # only class 1 has neurons: classes 0 and 2 score -inf even though class 1 scores 0
    assert all_activity(counts, assignments, 3).tolist() == [1, 1]
    # no neuron assigned at all: every class is -inf -> lowest class
    assert all_activity(counts, torch.tensor([-1, -1, -1]), 3).tolist() == [0, 0]


def test_proportion_weighting_by_hand():
    assignments = torch.tensor([0, 1, 2, -1])
    proportions = torch.tensor([[0.6, 0.4, 0.0], [0.1, 0.9, 0.0], [0.5, 0.0, 0.5], [0.3, 0.3, 0.4]])
    counts = torch.tensor(
        [
            [2.0, 1.0, 4.0, 10.0],  # c0=1.2, c1=0.9, c2=2.0 -> 2
            [3.0, 3.0, 2.0, 0.0],  # c0=1.8, c1=2.7, c2=1.0 -> 1
        ]
    )
    assert proportion_weighting(counts, assignments, proportions, 3).tolist() == [2, 1]
    # all_activity on the second sample ties c0 = c1 = 3 -> 0: the two readouts differ
    assert all_activity(counts, assignments, 3).tolist() == [2, 0]


def test_proportion_weighting_divides_by_neurons_per_class():
    assignments = torch.tensor([0, 0, 1])
    proportions = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    counts = torch.tensor([[2.0, 4.0, 3.0]])
    # c0 = (2*1 + 4*0.5) / 2 = 2.0 ; c1 = 3*0.8 / 1 = 2.4 -> 1
    assert proportion_weighting(counts, assignments, proportions, 2).tolist() == [1]
    with pytest.raises(ValueError, match="proportions must have shape"):
        proportion_weighting(counts, assignments, proportions[:2], 2)
    with pytest.raises(ValueError, match="assignments must have shape"):
        proportion_weighting(counts, assignments[:2], proportions, 2)


def test_end_to_end_assign_then_predict():
    assignments, proportions, _ = assign_labels(COUNTS, LABELS, 3)
    # each training sample: neuron 0 <-> class 0, 1 <-> 1, 2 <-> 2 (by hand from COUNTS)
    # s0: (4, 0, 1) -> 0; s1: (2, 1, 1) -> 0; s2: (0, 3, 1) -> 1; s3: (1, 5, 1) -> 1;
    # s4: (0, 0, 2) -> 2; s5: (2, 0, 4) -> 2
    assert all_activity(COUNTS, assignments, 3).tolist() == [0, 0, 1, 1, 2, 2]
    pw = proportion_weighting(COUNTS, assignments, proportions, 3)
    # s1 weighted: c0 = 2*3/4.5 = 1.33, c1 = 1*4/4.5 = 0.89, c2 = 1*0.6 = 0.6 -> 0
    assert pw.tolist() == [0, 0, 1, 1, 2, 2]
    assert accuracy(pw, LABELS) == 1.0
    assert accuracy(torch.tensor([0, 1]), torch.tensor([0, 0])) == 0.5


def _blobs(n_per_class, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    x = torch.cat([c + 0.5 * torch.randn(n_per_class, 3, generator=g) for c in centers])
    y = torch.arange(3).repeat_interleave(n_per_class)
    return x, y


@pytest.mark.parametrize("optimizer,lr,epochs", [("lbfgs", 1.0, 10), ("adam", 0.1, 200)])
def test_linear_readout_separable(optimizer, lr, epochs):
    x, y = _blobs(30, seed=0)
    model = LinearReadout(3, 3).fit(x, y, epochs=epochs, lr=lr, optimizer=optimizer)
    # clusters 5 apart with std 0.5 are linearly separable: perfect accuracy
    assert model.score(x, y) == 1.0
    x_test, y_test = _blobs(20, seed=1)
    pred = model.predict(x_test)
    assert pred.dtype == torch.long and pred.shape == (60,)
    assert accuracy(pred, y_test) == 1.0
    proba = model.predict_proba(x_test)
    torch.testing.assert_close(proba.sum(1), torch.ones(60))
    assert model.history[-1] < model.history[0]


def test_linear_readout_is_deterministic_and_accepts_time_axis():
    x, y = _blobs(10, seed=2)
    a = LinearReadout(3, 3).fit(x, y, epochs=3)
    b = LinearReadout(3, 3).fit(x, y, epochs=3)
    torch.testing.assert_close(a.linear.weight, b.linear.weight, rtol=0, atol=0)
    steps = torch.stack([x / 4] * 4, dim=1)  # (N, T=4, F) summing to x
    torch.testing.assert_close(a(steps), a(x))
    with pytest.raises(ValueError, match="features must have shape"):
        a.predict(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="optimizer"):
        LinearReadout(3, 3).fit(x, y, optimizer="sgd")
    with pytest.raises(ValueError, match="n_classes"):
        LinearReadout(3, 1)
