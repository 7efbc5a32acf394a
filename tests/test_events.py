"""Tests of the N-MNIST reader, event binning and the tonic adapter (tonic is not needed)."""

import sys

import numpy as np
import pytest
import torch

from pysnn.datasets.events import TonicAdapter, events_to_spike_tensor, read_nmnist_bin

# Four events written by hand in the 40-bit N-MNIST format:
# byte 0 = x, byte 1 = y, byte 2 = polarity (bit 7) | timestamp bits 22..16, bytes 3-4 = ts 15..0
HAND_BYTES = bytes(
    [
        0x03, 0x05, 0x81, 0x11, 0x70,  # x=3,  y=5,  ON,  t=0x011170 = 70000 us
        0x21, 0x00, 0x00, 0x05, 0xDC,  # x=33, y=0,  OFF, t=0x0005DC = 1500 us
        0x00, 0x21, 0x80, 0x00, 0x00,  # x=0,  y=33, ON,  t=0
        0x0A, 0x0B, 0x7F, 0xFF, 0xFF,  # x=10, y=11, OFF, t=0x7FFFFF = 8388607 us (max)
    ]
)  # fmt: skip
HAND_EVENTS = [(3, 5, 70000, 1), (33, 0, 1500, 0), (0, 33, 0, 1), (10, 11, 8388607, 0)]


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _tonic_like(events):
    """Structured array like tonic's (fields x, y, t, p as int)."""
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    return np.array(events, dtype=dtype)


def test_read_hand_computed_bytes(tmp_path):
    ev = read_nmnist_bin(_write(tmp_path, "a.bin", HAND_BYTES))
    assert set(ev.dtype.names) == {"x", "y", "t", "p"}
    got = [(int(e["x"]), int(e["y"]), int(e["t"]), int(e["p"])) for e in ev]
    assert got == HAND_EVENTS


def test_read_overflow_events(tmp_path):
    data = bytes(
        [
            0x01, 0x02, 0x80, 0x00, 0x64,  # x=1, y=2, ON, t=100
            0x00, 0xF0, 0x00, 0x00, 0x00,  # y=240: timestamp overflow marker (+8192 us after)
            0x04, 0x05, 0x00, 0x00, 0x32,  # x=4, y=5, OFF, t=50 -> 50 + 8192
            0x00, 0xF0, 0x00, 0x00, 0x00,  # second marker
            0x06, 0x07, 0x80, 0x00, 0x01,  # t=1 -> 1 + 2 * 8192
        ]
    )  # fmt: skip
    ev = read_nmnist_bin(_write(tmp_path, "o.bin", data))
    assert ev["x"].tolist() == [1, 4, 6] and ev["y"].tolist() == [2, 5, 7]
    assert ev["t"].tolist() == [100, 8242, 16385] and ev["p"].tolist() == [1, 0, 1]


def test_read_roundtrip_random(tmp_path):
    rng = np.random.default_rng(0)
    n = 1000
    x, y = rng.integers(0, 34, n), rng.integers(0, 34, n)
    t, p = np.sort(rng.integers(0, 2**23, n)), rng.integers(0, 2, n)
    # pack with Python integer arithmetic, one event at a time (independent of the reader)
    data = b"".join(
        ((int(a) << 32) | (int(b) << 24) | (int(c) << 23) | int(d)).to_bytes(5, "big")
        for a, b, c, d in zip(x, y, p, t)
    )
    ev = read_nmnist_bin(_write(tmp_path, "r.bin", data))
    for name, ref in (("x", x), ("y", y), ("t", t), ("p", p)):
        assert np.array_equal(ev[name], ref), name


def test_read_errors(tmp_path):
    with pytest.raises(ValueError, match="multiple of 5"):
        read_nmnist_bin(_write(tmp_path, "bad.bin", HAND_BYTES[:-2]))
    with pytest.raises(FileNotFoundError):
        read_nmnist_bin(tmp_path / "missing.bin")
    assert len(read_nmnist_bin(_write(tmp_path, "empty.bin", b""))) == 0


def _reference_tensor(events, shape, dt, num_steps, binary=True):
    """Expected (T, 2, H, W) tensor, built event by event."""
    out = np.zeros((num_steps, 2, *shape))
    for x, y, t, p in events:
        k = int(t // (1000 * dt))
        if k < num_steps:
            c = 1 if p > 0 else 0
            out[k, c, y, x] = 1 if binary else out[k, c, y, x] + 1
    return torch.from_numpy(out).float()


def test_events_to_spike_tensor_hand_computed(tmp_path):
    ev = read_nmnist_bin(_write(tmp_path, "a.bin", HAND_BYTES[:15]))  # first three events
    out = events_to_spike_tensor(ev, shape=(34, 34), dt=1.0)
    assert out.shape == (71, 2, 34, 34) and out.dtype == torch.float32  # last event at 70 ms
    assert out[70, 1, 5, 3] == 1 and out[1, 0, 0, 33] == 1 and out[0, 1, 33, 0] == 1
    assert out.sum() == 3
    assert torch.equal(out, _reference_tensor(HAND_EVENTS[:3], (34, 34), 1.0, 71))
    # fixed window: 50 ms, the 70 ms event falls outside
    out = events_to_spike_tensor(ev, dt=1.0, duration=50.0)
    assert out.shape == (50, 2, 34, 34) and out.sum() == 2
    # coarser bins: dt = 2.5 ms -> 1500 us in bin 0, 70000 us in bin 28
    out = events_to_spike_tensor(ev, dt=2.5)
    assert out.shape == (29, 2, 34, 34)
    assert out[28, 1, 5, 3] == 1 and out[0, 0, 0, 33] == 1 and out[0, 1, 33, 0] == 1


def test_events_binary_vs_counts_and_polarity_coding():
    events = {
        "x": torch.tensor([2, 2, 2, 1]),
        "y": torch.tensor([1, 1, 1, 0]),
        "t": torch.tensor([100, 900, 1100, 0]),
        "p": torch.tensor([1, 1, -1, -1]),  # -1/1 polarity coding: -1 -> OFF channel
    }
    ref = [(2, 1, 100, 1), (2, 1, 900, 1), (2, 1, 1100, -1), (1, 0, 0, -1)]
    binary = events_to_spike_tensor(events, shape=(3, 4), dt=1.0)
    counts = events_to_spike_tensor(events, shape=(3, 4), dt=1.0, binary=False)
    assert torch.equal(binary, _reference_tensor(ref, (3, 4), 1.0, 2))
    assert torch.equal(counts, _reference_tensor(ref, (3, 4), 1.0, 2, binary=False))
    assert counts[0, 1, 1, 2] == 2 and binary[0, 1, 1, 2] == 1


def test_events_random_against_reference():
    rng = np.random.default_rng(1)
    n = 500
    ev = _tonic_like(
        list(
            zip(
                rng.integers(0, 20, n),
                rng.integers(0, 10, n),
                rng.integers(0, 30000, n),
                rng.integers(0, 2, n),
            )
        )
    )
    ref_events = [(int(e["x"]), int(e["y"]), int(e["t"]), int(e["p"])) for e in ev]
    for binary in (True, False):
        out = events_to_spike_tensor(ev, shape=(10, 20), dt=0.5, duration=10.0, binary=binary)
        assert torch.equal(out, _reference_tensor(ref_events, (10, 20), 0.5, 20, binary))


def test_events_edge_cases_and_errors():
    empty = _tonic_like([])
    assert events_to_spike_tensor(empty).shape == (0, 2, 34, 34)
    assert events_to_spike_tensor(empty, duration=5.0).sum() == 0
    with pytest.raises(ValueError, match="x=34"):
        events_to_spike_tensor(_tonic_like([(34, 0, 0, 1)]))
    with pytest.raises(ValueError, match="y=-1"):
        events_to_spike_tensor(_tonic_like([(0, -1, 0, 1)]))
    with pytest.raises(ValueError, match="t must be"):
        events_to_spike_tensor(_tonic_like([(0, 0, -5, 1)]))
    with pytest.raises(ValueError, match="dt"):
        events_to_spike_tensor(_tonic_like([(0, 0, 5, 1)]), dt=0.0)
    with pytest.raises(TypeError, match="'p'"):
        events_to_spike_tensor({"x": [0], "y": [0], "t": [0]})


class FakeEventDataset:
    """Stands in for a tonic data set: items (events, target), sensor_size (W, H, P)."""

    sensor_size = (40, 30, 2)

    def __init__(self):
        self.items = [
            (_tonic_like([(39, 29, 2500, 1), (0, 0, 0, 0)]), 7),
            (_tonic_like([(5, 3, 999, 0)]), 2),
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_tonic_adapter_with_fake_dataset():
    ds = TonicAdapter(FakeEventDataset(), dt=1.0, duration=5.0)
    assert len(ds) == 2 and ds.shape == (30, 40)  # (height, width) from (W, H, P)
    spikes, target = ds[0]
    assert target == 7 and spikes.shape == (5, 2, 30, 40)
    assert spikes[2, 1, 29, 39] == 1 and spikes[0, 0, 0, 0] == 1 and spikes.sum() == 2
    spikes, target = ds[1]
    assert target == 2 and spikes[0, 0, 3, 5] == 1 and spikes.sum() == 1
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch[0].shape == (2, 5, 2, 30, 40)
    # without duration, T follows the last event
    assert TonicAdapter(FakeEventDataset())[0][0].shape == (3, 2, 30, 40)
    # explicit shape overrides sensor_size
    assert TonicAdapter(FakeEventDataset(), shape=(32, 48))[1][0].shape == (1, 2, 32, 48)


def test_tonic_adapter_errors(monkeypatch):
    with pytest.raises(ValueError, match="sensor_size"):
        TonicAdapter([(_tonic_like([]), 0)])
    with pytest.raises(TypeError, match="dataset"):
        TonicAdapter(42, shape=(34, 34))
    # tonic is imported lazily: a missing tonic only fails where it is needed
    monkeypatch.setitem(sys.modules, "tonic", None)  # makes `import tonic` raise ImportError
    with pytest.raises(ImportError, match="pip install tonic"):
        TonicAdapter.nmnist("somewhere")
