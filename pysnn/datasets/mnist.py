"""MNIST from the original IDX files, and a small MNIST sample bundled with the package.

Images are returned as ``float32`` tensors of shape ``(28, 28)`` holding the **raw pixel values
0..255** (not normalised): the encoders of :mod:`pysnn.encoding` take intensities or rates, and
e.g. the Diehl & Cook (2015) model feeds Poisson rates ``pixel / 255 * intensity`` Hz. Labels are
Python ``int`` in 0..9. For vectorised use every dataset also exposes ``.data`` (``(N, 28, 28)``
``uint8`` tensor) and ``.targets`` (``(N,)`` ``int64`` tensor).

File layout: ``MNIST(root)`` looks for the four standard files, gzipped or not (detected from the
content, not the name)::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

either directly in ``root`` or in ``root/MNIST/raw`` (torchvision's layout).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import urllib.error
import urllib.request
import zlib
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from pysnn._files import write_atomic

__all__ = [
    "MNIST",
    "MNISTSample",
    "load_mnist",
    "read_idx",
    "download_mnist",
    "MIRRORS",
    "RESOURCES",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Mirrors tried in order by :func:`download_mnist` (the original yann.lecun.com site is
#: unreliable). Each holds the canonical ``.gz`` files.
MIRRORS: List[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

#: Per file: (MD5 of the canonical published ``.gz``, MD5 of the decompressed IDX content).
#: Downloads are checked against the first; ``verify=True`` checks local files against the
#: second, which does not depend on how the file was (re)compressed.
RESOURCES: Dict[str, Tuple[str, str]] = {
    "train-images-idx3-ubyte": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    "train-labels-idx1-ubyte": (
        "d53e105ee54ea40749a09fcbcd1e9432",
        "a25bea736e30d166cdddb491f175f624",
    ),
    "t10k-images-idx3-ubyte": (
        "9fb629c4189551a2d022fa330f9573f3",
        "2646ac647ad5339dbf082846283269ea",
    ),
    "t10k-labels-idx1-ubyte": (
        "ec29112dd5afa0611ce80d1b7f02629c",
        "27ae3e4e09519cfbb04c329615203637",
    ),
}

_SPLIT_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

CLASSES = [str(i) for i in range(10)]


# ----------------------------------------------------------------------------------------------
# IDX parsing
# ----------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    """Content of ``path``, gunzipped when it starts with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path} is not a valid gzip file (corrupt or truncated): {err}"
            ) from err
    return raw


def _parse_idx(content: bytes, source: str) -> np.ndarray:
    if len(content) < 4:
        raise ValueError(f"{source}: too short to be an IDX file ({len(content)} bytes)")
    zero, type_code, ndim = int.from_bytes(content[:2], "big"), content[2], content[3]
    magic = int.from_bytes(content[:4], "big")
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{source}: bad IDX magic number 0x{magic:08x} (expected 0x0000TTNN with a type code "
            f"TT in {{08, 09, 0b, 0c, 0d, 0e}} and NN >= 1 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(content) < header:
        raise ValueError(f"{source}: truncated IDX header ({len(content)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize  # exact (an int64 product could wrap to 0)
    if len(content) - header != expected:
        raise ValueError(
            f"{source}: IDX size mismatch: header declares shape {dims} ({expected} data bytes) "
            f"but the file holds {len(content) - header} data bytes"
        )
    arr = np.frombuffer(content, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array of its declared type and shape.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad magic number, truncated/oversized content or corrupt gzip stream.
    """
    path = Path(path)
    return _parse_idx(_read_bytes(path), str(path))


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Locating and downloading
# ----------------------------------------------------------------------------------------------
def _candidate_dirs(root: Path) -> List[Path]:
    return [root, root / "MNIST" / "raw"]


def _candidates(root: Path, name: str) -> List[Path]:
    return [d / f for d in _candidate_dirs(root) for f in (name, name + ".gz")]


def _find(root: Path, name: str) -> Optional[Path]:
    for p in _candidates(root, name):
        if p.is_file():
            return p
    return None


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    """Return the body of ``url`` (the single network access point; tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "pysnn"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https)
        return response.read()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    write_atomic(path, lambda f: f.write(data))


def download_mnist(
    root: PathLike,
    train: Optional[bool] = None,
    mirrors: Optional[Sequence[str]] = None,
    timeout: float = 60.0,
) -> List[Path]:
    """Download the MNIST ``.gz`` files into ``root`` (files already present are kept).

    Each file is fetched from the first mirror that serves it with the canonical MD5 (see
    :data:`RESOURCES`) and written atomically (temporary file + rename), so an interrupted or
    corrupt download never leaves a partial file under the final name.

    Args:
        root: destination folder (created if needed).
        train: ``True`` for the training files, ``False`` for the test files, ``None`` for both.
        mirrors: base URLs to try in order (default :data:`MIRRORS`).
        timeout: per-request timeout in seconds.

    Returns:
        The paths of the requested files (downloaded or already present).

    Raises:
        RuntimeError: no mirror delivered a file with the expected checksum.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = _SPLIT_FILES[True] + _SPLIT_FILES[False] if train is None else _SPLIT_FILES[train]
    mirrors = list(MIRRORS if mirrors is None else mirrors)
    if not mirrors:
        raise ValueError("mirrors must hold at least one base URL, got an empty sequence")
    paths = []
    for name in names:
        existing = _find(root, name)
        if existing is not None:
            paths.append(existing)
            continue
        expected_md5 = RESOURCES[name][0]
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name + ".gz"
            try:
                data = _fetch(url, timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError) as err:
                errors.append(f"{url}: {err}")
                continue
            got = _md5(data)
            if got != expected_md5:
                errors.append(f"{url}: MD5 mismatch (expected {expected_md5}, got {got})")
                continue
            target = root / (name + ".gz")
            _write_atomic(target, data)
            paths.append(target)
            break
        else:
            raise RuntimeError(
                f"could not download {name}.gz with the expected MD5 {expected_md5}:\n  "
                + "\n  ".join(errors)
            )
    return paths


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------
def _check_arrays(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{source}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{source}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{source}: {len(images)} images but {len(labels)} labels (files from different "
            "splits?)"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{source}: labels must be digits 0..9, found {int(labels.max())}")


def _check_common(train, transform, target_transform) -> None:
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {train!r}")
    for name, fn in (("transform", transform), ("target_transform", target_transform)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")


class _MNISTBase(Dataset):
    """Shared item access; subclasses set ``data`` (N, 28, 28) uint8 and ``targets`` (N,)."""

    data: torch.Tensor
    targets: torch.Tensor
    classes = CLASSES

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        train: bool,
        transform: Optional[Callable],
        target_transform: Optional[Callable],
    ) -> None:
        _check_common(train, transform, target_transform)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        self.data = torch.from_numpy(images)
        self.targets = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        """Return ``(image, label)``: float32 ``(28, 28)`` pixels 0..255 and an ``int`` label
        (each passed through ``transform`` / ``target_transform`` when given)."""
        image = self.data[index].to(torch.float32)
        label = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}(split={split!r}, size={len(self)})"


class MNIST(_MNISTBase):
    """The MNIST handwritten digits, read from the standard IDX files.

    Args:
        root: folder holding the IDX files (plain or ``.gz``; also searched in
            ``root/MNIST/raw``).
        train: training split (60000 images) if True, test split (10000) otherwise.
        download: fetch missing files of the split from :data:`MIRRORS` into ``root``, checking
            the canonical MD5 of each ``.gz``.
        transform: callable applied to the float32 ``(28, 28)`` image (pixel values 0..255).
        target_transform: callable applied to the ``int`` label.
        verify: also check the MD5 of the *decompressed* content against the published files
            (independent of how a local ``.gz`` was compressed); raises ValueError on mismatch.

    Attributes:
        data: ``(N, 28, 28)`` uint8 tensor. targets: ``(N,)`` int64 tensor.

    Raises:
        FileNotFoundError: a file is missing (the message lists every path looked at).
        ValueError: a file is corrupt (bad magic number, size, gzip stream or checksum).
        RuntimeError: ``download=True`` and no mirror delivered a file with the right MD5.
    """

    def __init__(
        self,
        root: PathLike,
        train: bool = True,
        download: bool = False,
        transform: Optional[Callable] = None,
        target_transform: Optional[Callable] = None,
        verify: bool = False,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike), got {type(root).__name__}")
        _check_common(train, transform, target_transform)
        self.root = Path(root).expanduser()
        if download:
            download_mnist(self.root, train=train)
        image_name, label_name = _SPLIT_FILES[train]
        paths = []
        for name in (image_name, label_name):
            path = _find(self.root, name)
            if path is None:
                looked = "\n  ".join(str(p) for p in _candidates(self.root, name))
                raise FileNotFoundError(
                    f"MNIST file {name} not found; looked at:\n  {looked}\n"
                    f"Pass download=True to fetch it, or copy the MNIST IDX files (optionally "
                    f"gzipped) into {self.root}."
                )
            paths.append(path)
        self.image_file, self.label_file = paths
        arrays = []
        for name, path, magic in (
            (image_name, paths[0], _IMAGE_MAGIC),
            (label_name, paths[1], _LABEL_MAGIC),
        ):
            content = _read_bytes(path)
            if verify and _md5(content) != RESOURCES[name][1]:
                raise ValueError(
                    f"{path}: MD5 of the decompressed content is {_md5(content)}, expected "
                    f"{RESOURCES[name][1]} (corrupt or not the original MNIST file)"
                )
            got = int.from_bytes(content[:4], "big") if len(content) >= 4 else None
            if got != magic:
                shown = "none (file too short)" if got is None else f"0x{got:08x}"
                raise ValueError(
                    f"{path}: bad magic number {shown}, expected 0x{magic:08x} for {name}"
                )
            arrays.append(_parse_idx(content, str(path)))
        _check_arrays(arrays[0], arrays[1], str(self.root))
        super().__init__(arrays[0], arrays[1], train, transform, target_transform)


@functools.lru_cache(maxsize=1)
def _load_sample_arrays() -> Dict[str, np.ndarray]:
    ref = resources.files(__package__).joinpath("data", "mnist_sample.npz")
    with ref.open("rb") as f, np.load(f) as npz:
        return {k: npz[k] for k in npz.files}


class MNISTSample(_MNISTBase):
    """A small MNIST subset bundled with pysnn (no download needed).

    Holds the first 3000 training digits and the first 1000 test digits of MNIST (Yann LeCun,
    Corinna Cortes and Christopher J.C. Burges; CC BY-SA 3.0, see
    ``pysnn/datasets/data/MNIST_SAMPLE_LICENSE.txt``).
    Same items and attributes as :class:`MNIST`: float32 ``(28, 28)`` images with pixel values
    0..255 and ``int`` labels; ``.data`` ``(N, 28, 28)`` uint8, ``.targets`` ``(N,)`` int64.
    Regenerate it with ``python -m pysnn.datasets.make_sample``.

    Args:
        train: the 3000 training digits if True, the 1000 test digits otherwise.
        transform: callable applied to the image.
        target_transform: callable applied to the label.
    """

    def __init__(
        self,
        train: bool = True,
        transform: Optional[Callable] = None,
        target_transform: Optional[Callable] = None,
    ) -> None:
        _check_common(train, transform, target_transform)
        arrays = _load_sample_arrays()
        prefix = "train" if train else "test"
        images = arrays[f"{prefix}_images"].copy()
        labels = arrays[f"{prefix}_labels"].copy()
        _check_arrays(images, labels, "bundled MNIST sample")
        super().__init__(images, labels, train, transform, target_transform)


def load_mnist(
    root: Optional[PathLike] = None,
    train: bool = True,
    download: bool = False,
    transform: Optional[Callable] = None,
    target_transform: Optional[Callable] = None,
) -> _MNISTBase:
    """Full :class:`MNIST` from ``root`` when given, else the bundled :class:`MNISTSample`.

    Convenient for examples: they run out of the box on the sample and on the full data set
    when a folder is passed. ``download=True`` requires ``root``.
    """
    if root is None:
        if download:
            raise ValueError("download=True needs a root folder to download MNIST into, got None")
        return MNISTSample(train=train, transform=transform, target_transform=target_transform)
    return MNIST(
        root,
        train=train,
        download=download,
        transform=transform,
        target_transform=target_transform,
    )
