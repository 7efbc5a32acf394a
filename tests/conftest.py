"""Shared test fixtures, and the device the suite runs on.

``PYSNN_TEST_DEVICE`` (default ``cpu``) picks the device: with ``PYSNN_TEST_DEVICE=cuda`` the
session calls ``torch.set_default_device("cuda")``, so tensors and modules that tests build
without naming a device are created on the GPU (``PYSNN_TEST_DEVICE=cuda python -m pytest tests/``).
Limits of that switch: tests that name ``device="cpu"``, call ``.numpy()`` / ``.tolist()`` on
results, compare against CPU references or check CPU-only paths (the C backend, shared memory,
gloo processes) may fail or still run on the CPU; generators (``torch.Generator()``) stay on the
CPU. Mark such tests ``@pytest.mark.cpu_only`` and they are skipped on another device. With the
default ``cpu`` nothing changes.
"""

from __future__ import annotations

import os

import pytest
import torch

import pysnn
from pysnn import native

TEST_DEVICE = os.environ.get("PYSNN_TEST_DEVICE", "cpu").strip() or "cpu"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and move the session to ``PYSNN_TEST_DEVICE`` (if not the CPU)."""
    config.addinivalue_line(
        "markers",
        "cpu_only: the test checks CPU-only behaviour; skipped when PYSNN_TEST_DEVICE != cpu",
    )
    if TEST_DEVICE != "cpu":
        device = torch.device(TEST_DEVICE)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise pytest.UsageError(
                f"PYSNN_TEST_DEVICE={TEST_DEVICE} but torch sees no CUDA device"
            )
        torch.set_default_device(device)


def pytest_report_header(config: pytest.Config) -> str:
    """Say which device the tests run on."""
    return f"pysnn test device: {TEST_DEVICE} (PYSNN_TEST_DEVICE)"


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Skip ``cpu_only`` tests on another device."""
    if TEST_DEVICE == "cpu":
        return
    skip = pytest.mark.skip(reason=f"cpu_only test, PYSNN_TEST_DEVICE={TEST_DEVICE}")
    for item in items:
        if item.get_closest_marker("cpu_only"):
            item.add_marker(skip)


@pytest.fixture
def test_device() -> torch.device:
    """The device of this test session (``PYSNN_TEST_DEVICE``)."""
    return torch.device(TEST_DEVICE)


@pytest.fixture(autouse=True)
def _restore_value_checks():
    """Every test starts with pysnn's value checks on and cannot leak a change to the next."""
    pysnn.set_checks(True)
    yield
    pysnn.set_checks(True)


@pytest.fixture
def fused_calls(monkeypatch):
    """The calls of the fused network loop (``pysnn.native.layer_steps``) during a test:
    ``(steps run, group a NaN stopped before or -1)`` of each."""
    calls = []
    original = native.layer_steps

    def counted(x, *args):
        done = original(x, *args)
        calls.append(done)
        return done

    monkeypatch.setattr(native, "layer_steps", counted)
    return calls
