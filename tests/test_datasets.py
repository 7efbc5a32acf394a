"""Tests of the MNIST readers, the bundled sample, downloading (network-free) and Boolean data.

The real MNIST files in ``../shared/data/mnist`` (relative to the repository root) are used when
present; otherwise small IDX files generated here go through the same code. Expected values are
computed independently of the reader (``struct`` + raw byte offsets).
"""

import gzip
import hashlib
import math
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import pysnn.datasets.mnist as mnist_mod
from pysnn.datasets import AND, MNIST, OR, XOR, MNISTSample, load_mnist, read_idx
from pysnn.datasets.make_sample import make_sample

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
HAVE_REAL = all(
    (SHARED / f"{n}.gz").is_file()
    for n in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
)
# First labels of the real MNIST splits (published, well known)
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---------------------------------------------------------------------------------------------
# Helpers: independent IDX writing / reading
# ---------------------------------------------------------------------------------------------
def idx_images(images: np.ndarray) -> bytes:
    n, r, c = images.shape
    return struct.pack(">IIII", 0x803, n, r, c) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train=40, n_test=15, gz_train=True, gz_test=False, seed=0):
    """Write a small random MNIST-like data set; returns {train: (images, labels)}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for train, n, gz in ((True, n_train, gz_train), (False, n_test, gz_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, payload in zip(FILES[train], (idx_images(images), idx_labels(labels))):
            if gz:
                (root / (name + ".gz")).write_bytes(gzip.compress(payload))
            else:
                (root / name).write_bytes(payload)
        out[train] = (images, labels)
    return out


def raw_content(root: Path, name: str) -> bytes:
    for p in (root / name, root / (name + ".gz")):
        if p.is_file():
            data = p.read_bytes()
            return gzip.decompress(data) if p.suffix == ".gz" else data
    raise FileNotFoundError(name)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """The real MNIST folder when available, else generated files (same code path)."""
    if HAVE_REAL:
        return SHARED
    root = tmp_path_factory.mktemp("mnist_generated")
    write_mnist(root)
    return root


@pytest.fixture(scope="module")
def loaded(mnist_root):
    return {train: MNIST(mnist_root, train=train) for train in (True, False)}


# ---------------------------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_mnist_matches_raw_bytes(mnist_root, loaded, train):
    ds = loaded[train]
    img_raw = raw_content(mnist_root, FILES[train][0])
    lbl_raw = raw_content(mnist_root, FILES[train][1])
    magic, n, rows, cols = struct.unpack(">IIII", img_raw[:16])
    assert (magic, rows, cols) == (0x803, 28, 28)
    assert struct.unpack(">II", lbl_raw[:8]) == (0x801, n)
    assert len(ds) == n and ds.data.shape == (n, 28, 28)
    assert ds.data.dtype == torch.uint8 and ds.targets.dtype == torch.int64
    assert ds.targets.tolist() == list(lbl_raw[8:])
    for i in (0, 1, n // 2, n - 1):
        image, label = ds[i]
        assert image.dtype == torch.float32 and image.shape == (28, 28)
        assert isinstance(label, int) and label == lbl_raw[8 + i]
        expected = list(img_raw[16 + 784 * i : 16 + 784 * (i + 1)])
        assert image.flatten().tolist() == [float(v) for v in expected]  # raw 0..255
    if HAVE_REAL:
        assert n == (60000 if train else 10000)
        first = FIRST_TRAIN_LABELS if train else FIRST_TEST_LABELS
        assert ds.targets[:10].tolist() == first
        assert ds.data.max() == 255 and ds.data.min() == 0


def test_mnist_transforms(mnist_root, loaded):
    ds = MNIST(mnist_root, train=False, transform=lambda x: x / 255.0, target_transform=str)
    image, label = ds[0]
    assert torch.allclose(image, loaded[False].data[0].float() / 255.0)
    assert label == str(int(loaded[False].targets[0]))
    with pytest.raises(TypeError, match="transform"):
        MNIST(mnist_root, transform=3)


def test_mnist_verify(mnist_root, tmp_path, monkeypatch):
    if mnist_root != SHARED:  # generated data: make the table describe the generated files
        for name in FILES[False]:
            md5 = hashlib.md5(raw_content(mnist_root, name)).hexdigest()
            monkeypatch.setitem(mnist_mod.RESOURCES, name, ("unused", md5))
    assert len(MNIST(mnist_root, train=False, verify=True)) > 0
    # random files never match the published checksums
    write_mnist(tmp_path / "fake")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="MD5"):
        MNIST(tmp_path / "fake", train=True, verify=True)


def test_mnist_generated_gzip_and_plain(tmp_path):
    ref = write_mnist(tmp_path, n_train=7, n_test=5, gz_train=True, gz_test=False)
    for train in (True, False):
        ds = MNIST(tmp_path, train=train)
        assert np.array_equal(ds.data.numpy(), ref[train][0])
        assert ds.targets.tolist() == ref[train][1].tolist()
    # torchvision layout root/MNIST/raw
    write_mnist(tmp_path / "tv" / "MNIST" / "raw", n_train=3, n_test=2, seed=1)
    assert len(MNIST(tmp_path / "tv", train=False)) == 2


def test_mnist_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        MNIST(tmp_path, train=True)
    msg = str(info.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in msg
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in msg
    assert "download=True" in msg


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda b: b"\x00\x00\x08\x01" + b[4:], "magic"),  # image file with label magic
        (lambda b: b[:-1], "size mismatch"),  # truncated
        (lambda b: b + b"\x00", "size mismatch"),  # trailing garbage
        (lambda b: b[:2], "magic"),  # too short
        (lambda b: gzip.compress(b)[:-20], "gzip"),  # truncated gzip stream
    ],
)
def test_mnist_corrupt_files(tmp_path, corrupt, match):
    write_mnist(tmp_path, gz_train=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=match):
        MNIST(tmp_path, train=True)


def test_mnist_inconsistent_files(tmp_path):
    write_mnist(tmp_path, gz_train=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_labels(np.zeros(3)))
    with pytest.raises(ValueError, match="40 images but 3 labels"):
        MNIST(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_labels(np.full(40, 12)))
    with pytest.raises(ValueError, match="0..9"):
        MNIST(tmp_path)


def test_read_idx_generic(tmp_path):
    values = [[1, -2, 300], [70000, 0, -1]]
    path = tmp_path / "m.idx"
    path.write_bytes(
        struct.pack(">BBBBII", 0, 0, 0x0C, 2, 2, 3) + struct.pack(">6i", 1, -2, 300, 70000, 0, -1)
    )
    arr = read_idx(path)
    assert arr.shape == (2, 3) and arr.tolist() == values
    path.write_bytes(struct.pack(">BBBBI", 1, 0, 0x08, 1, 1) + b"\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(path)


# ---------------------------------------------------------------------------------------------
# Download (network replaced by a fake fetch)
# ---------------------------------------------------------------------------------------------
def test_published_md5_table():
    assert {k: v[0] for k, v in mnist_mod.RESOURCES.items()} == {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert {k: v[1] for k, v in mnist_mod.RESOURCES.items()} == {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }


def _serve(tmp_path):
    """gzipped payloads of a generated data set, keyed by file name."""
    src = tmp_path / "src"
    ref = write_mnist(src, gz_train=True, gz_test=True)
    return {p.name: p.read_bytes() for p in src.iterdir()}, ref


def test_download_success_with_mirror_fallback(tmp_path, monkeypatch):
    served, ref = _serve(tmp_path)
    for name in mnist_mod.RESOURCES:  # our generated files are "canonical" for this test
        md5 = hashlib.md5(served[name + ".gz"]).hexdigest()
        monkeypatch.setitem(mnist_mod.RESOURCES, name, (md5, "unused"))
    calls = []

    def fake_fetch(url, timeout=60.0):
        calls.append(url)
        if url.startswith(mnist_mod.MIRRORS[0]):
            raise urllib.error.URLError("mirror down")
        return served[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(mnist_mod, "_fetch", fake_fetch)
    root = tmp_path / "dl"
    ds = MNIST(root, train=False, download=True)
    assert np.array_equal(ds.data.numpy(), ref[False][0])
    assert sorted(p.name for p in root.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]  # only the requested split, no leftover temporary files
    assert calls == [
        mnist_mod.MIRRORS[0] + "t10k-images-idx3-ubyte.gz",
        mnist_mod.MIRRORS[1] + "t10k-images-idx3-ubyte.gz",
        mnist_mod.MIRRORS[0] + "t10k-labels-idx1-ubyte.gz",
        mnist_mod.MIRRORS[1] + "t10k-labels-idx1-ubyte.gz",
    ]
    calls.clear()
    MNIST(root, train=False, download=True)  # present files are not fetched again
    assert calls == []


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    served, _ = _serve(tmp_path)  # not the canonical files: MD5 cannot match
    monkeypatch.setattr(mnist_mod, "_fetch", lambda url, timeout=60.0: served[url.split("/")[-1]])
    root = tmp_path / "dl"
    with pytest.raises(RuntimeError, match="MD5 mismatch") as info:
        MNIST(root, train=True, download=True)
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(info.value)
    assert list(root.iterdir()) == []  # nothing written, not even a partial file


# ---------------------------------------------------------------------------------------------
# Bundled sample
# ---------------------------------------------------------------------------------------------
def test_bundled_sample(loaded):
    train, test = MNISTSample(train=True), MNISTSample(train=False)
    assert len(train) == 3000 and len(test) == 1000
    assert train.data.dtype == torch.uint8 and train.targets.dtype == torch.int64
    assert train.targets[:10].tolist() == FIRST_TRAIN_LABELS
    assert test.targets[:10].tolist() == FIRST_TEST_LABELS
    image, label = train[0]
    assert image.dtype == torch.float32 and image.shape == (28, 28) and label == 5
    assert image.max() == 255.0
    # every class present, roughly balanced
    assert torch.bincount(train.targets, minlength=10).min() > 200
    if HAVE_REAL:
        assert torch.equal(train.data, loaded[True].data[:3000])
        assert torch.equal(test.data, loaded[False].data[:1000])
        assert torch.equal(test.targets, loaded[False].targets[:1000])
    lic = Path(mnist_mod.__file__).parent / "data" / "MNIST_SAMPLE_LICENSE.txt"
    text = lic.read_text()
    for needle in ("Yann LeCun", "Corinna Cortes", "Burges", "CC BY-SA 3.0", "subset"):
        assert needle in text
    size = (Path(mnist_mod.__file__).parent / "data" / "mnist_sample.npz").stat().st_size
    assert size < 4_000_000


def test_load_mnist(mnist_root):
    assert isinstance(load_mnist(), MNISTSample)
    assert isinstance(load_mnist(mnist_root, train=False), MNIST)
    with pytest.raises(ValueError, match="root"):
        load_mnist(download=True)


def test_make_sample(tmp_path):
    ref = write_mnist(tmp_path / "src", n_train=12, n_test=6)
    out = make_sample(tmp_path / "src", tmp_path / "s.npz", n_train=10, n_test=4, verify=False)
    with np.load(out) as z:
        assert np.array_equal(z["train_images"], ref[True][0][:10])
        assert np.array_equal(z["train_labels"], ref[True][1][:10])
        assert np.array_equal(z["test_images"], ref[False][0][:4])
        assert z["test_labels"].dtype == np.uint8
    with pytest.raises(ValueError, match="n_train"):
        make_sample(tmp_path / "src", tmp_path / "t.npz", n_train=13, verify=False)


# ---------------------------------------------------------------------------------------------
# Boolean data sets
# ---------------------------------------------------------------------------------------------
def test_boolean_labels():
    assert [XOR()[i][1] for i in range(4)] == [0, 1, 1, 0]
    assert [AND()[i][1] for i in range(4)] == [0, 0, 0, 1]
    assert [OR()[i][1] for i in range(4)] == [0, 1, 1, 1]
    assert XOR().inputs.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert len(XOR()) == 4


def test_boolean_spikes():
    r = 50
    ds = XOR(
        duration=1000.0,
        dt=1.0,
        rate_on=100.0,
        repeats=r,
        generator=torch.Generator().manual_seed(0),
    )
    spikes, label = ds[1]  # bits (0, 1)
    assert spikes.shape == (1000, 2 * r) and spikes.dtype == torch.float32 and label == 1
    assert spikes[:, :r].sum() == 0  # bit 0, rate_off = 0 Hz: silent
    p = 1 - math.exp(-100.0 * 1.0 / 1000.0)  # per-step spike probability at 100 Hz
    n = 1000 * r
    assert abs(spikes[:, r:].mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    # rate_off > 0, shape for the default repeats=1, dt = 0.5 ms
    ds = AND(duration=50.0, dt=0.5, rate_off=10.0)
    assert ds[0][0].shape == (100, 2) and ds.num_steps == 100
    assert torch.equal(ds.rates(2), torch.tensor([100.0, 10.0]))


def test_boolean_reproducible_and_validation():
    a = OR(generator=torch.Generator().manual_seed(3))
    b = OR(generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(4))
    with pytest.raises(ValueError, match="rate_on"):
        XOR(rate_on=-1.0)
    with pytest.raises(ValueError, match="repeats"):
        XOR(repeats=0)
    with pytest.raises(ValueError, match="dt"):
        XOR(dt=0.0)
    with pytest.raises(IndexError):
        XOR()[4]
