"""Regenerate the MNIST sample bundled with pysnn (``pysnn/datasets/data/mnist_sample.npz``).

Not run at import. Usage, from the repository root::

    python -m pysnn.datasets.make_sample --root ../shared/data/mnist

``--root`` is a folder with the four standard MNIST IDX files (plain or ``.gz``). The script
keeps the first ``--n-train`` (default 3000) training and first ``--n-test`` (default 1000) test
digits and writes them with :func:`numpy.savez_compressed` under the keys ``train_images``
(uint8, ``(n_train, 28, 28)``), ``train_labels`` (uint8, ``(n_train,)``), ``test_images`` and
``test_labels``. The attribution in ``data/MNIST_SAMPLE_LICENSE.txt`` (MNIST by Yann LeCun,
Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0) must ship with the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pysnn.datasets.mnist import MNIST

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "mnist_sample.npz"


def make_sample(
    root: Path,
    out: Path = DEFAULT_OUT,
    n_train: int = 3000,
    n_test: int = 1000,
    verify: bool = True,
) -> Path:
    """Write the first ``n_train`` training and ``n_test`` test digits of MNIST in ``root`` to
    ``out`` (compressed ``.npz``) and return ``out``.

    With ``verify=True`` the source files must match the published MNIST content (MD5 of the
    decompressed files), so the bundled sample is genuine MNIST."""
    arrays = {}
    for train, n, prefix in ((True, n_train, "train"), (False, n_test, "test")):
        ds = MNIST(root, train=train, verify=verify)
        if not 0 < n <= len(ds):
            raise ValueError(f"n_{prefix} must be in [1, {len(ds)}], got {n}")
        arrays[f"{prefix}_images"] = ds.data[:n].numpy().astype(np.uint8)
        arrays[f"{prefix}_labels"] = ds.targets[:n].numpy().astype(np.uint8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder with the MNIST files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    parser.add_argument("--n-train", type=int, default=3000, help="training digits to keep")
    parser.add_argument("--n-test", type=int, default=1000, help="test digits to keep")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the MD5 check of the source files"
    )
    args = parser.parse_args(argv)
    out = make_sample(args.root, args.out, args.n_train, args.n_test, verify=not args.no_verify)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
