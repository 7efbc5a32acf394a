"""TraceMaxPool2d: max-pooling of spikes by trace, against sequences worked out by hand."""

import math

import pytest
import torch

from pysnn.pooling import TraceMaxPool2d


def frames(*steps):
    """(T, 1, 1, 2, 4) spikes from lists of the (y, x) pixels that spike at each step."""
    x = torch.zeros(len(steps), 1, 1, 2, 4)
    for t, pixels in enumerate(steps):
        for y, xx in pixels:
            x[t, 0, 0, y, xx] = 1.0
    return x


# Left window (2x2 at x = 0..1): a = (0, 0), b = (0, 1), c = (1, 0); decay 0.9 per step.
# step: spikes        traces after the step (a, b, c)       winner  output
#  0    a             1, 0, 0                               a       1
#  1    a             1.9, 0, 0                             a       1
#  2    b             1.71, 1, 0                            a       0  (b spikes, a leads)
#  3    -             1.539, 0.9, 0                         a       0
#  4    b             1.385, 1.81, 0                        b       1
#  5    a             2.247, 1.629, 0                       a       1
#  6    c             2.022, 1.466, 1                       a       0
#  7    b, c          1.820, 2.319, 1.9                     b       1
# Right window (x = 2..3): (0, 2) and (0, 3) spike together at step 0 (a tie: the first in
# row-major order, (0, 2), wins), then (0, 3) alone at steps 1 and 2: its trace 1 + 0.9 = 1.9
# passes (0, 2)'s 0.9 at step 1, so its spikes pass from step 1 on; then (0, 2) alone at 3: 0.
STEPS = (
    [(0, 0), (0, 2), (0, 3)],
    [(0, 0), (0, 3)],
    [(0, 1), (0, 3)],
    [(0, 2)],
    [(0, 1)],
    [(0, 0)],
    [(1, 0)],
    [(0, 1), (1, 0)],
)
LEFT = [1, 1, 0, 0, 1, 1, 0, 1]
RIGHT = [1, 1, 1, 0, 0, 0, 0, 0]


def test_sequence_by_hand():
    pool = TraceMaxPool2d(2, tau_trace=-1.0 / math.log(0.9))
    assert pool.decay == pytest.approx(0.9, abs=1e-15)
    x = frames(*STEPS)
    out = torch.stack([pool(s) for s in x])
    assert out.shape == (8, 1, 1, 1, 2)
    assert out[:, 0, 0, 0, 0].tolist() == LEFT
    assert out[:, 0, 0, 0, 1].tolist() == RIGHT
    expected_trace = torch.tensor([[1.820, 2.319], [1.9, 0.0]])  # left window after step 7
    torch.testing.assert_close(pool.trace[0, 0, :, :2], expected_trace, atol=1e-3, rtol=0)
    pool.reset_state()
    assert pool.trace is None
    with torch.no_grad():  # the multi-step call steps through: the same outputs
        assert torch.equal(pool.forward_multistep(x), out)


def test_delay_batch_and_channels():
    pool = TraceMaxPool2d(2, tau_trace=-1.0 / math.log(0.9), delay=2.0)
    x = frames(*STEPS)
    # two samples, two channels: the hand sequence and its mirror image (left <-> right)
    batch = torch.cat((x, x.flip(-1)), dim=2).expand(8, 2, 2, 2, 4).clone()
    batch[:, 1] = batch[:, 1].flip(1)  # second sample: channels swapped
    out = torch.stack([pool(s) for s in torch.cat((batch, torch.zeros(2, 2, 2, 2, 4)))])
    assert torch.equal(out[:2], torch.zeros_like(out[:2]))  # nothing arrives for 2 steps
    out = out[2:]
    # the mirror image swaps the windows: its left window is the original right one mirrored
    # (the step-0 tie is between two inputs that both spike: 1 either way), and vice versa
    left, right = torch.tensor(LEFT, dtype=torch.float32), torch.tensor(RIGHT, dtype=torch.float32)
    for sample, channel in ((0, 0), (1, 1)):  # the original sequence
        assert torch.equal(out[:, sample, channel, 0, 0], left)
        assert torch.equal(out[:, sample, channel, 0, 1], right)
    for sample, channel in ((0, 1), (1, 0)):  # its mirror image
        assert torch.equal(out[:, sample, channel, 0, 0], right)
        assert torch.equal(out[:, sample, channel, 0, 1], left)


def test_padding_stride_and_errors():
    pool = TraceMaxPool2d(3, stride=2, padding=1)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 3, 3] = 1.0
    out = pool(x)
    assert out.shape == (1, 1, 2, 2)  # as torch.nn.MaxPool2d(3, 2, 1)
    assert out.flatten().tolist() == [0.0, 0.0, 0.0, 1.0]  # padded positions never win
    with pytest.raises(ValueError, match="tau_trace"):
        TraceMaxPool2d(2, tau_trace=0.0)
    with pytest.raises(ValueError, match="shape"):
        pool(torch.zeros(1, 4, 4))
