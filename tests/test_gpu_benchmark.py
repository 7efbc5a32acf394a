"""``benchmarks/gpu.py --smoke --device cpu``: runs in a subprocess and writes a well-formed report.

The peers (snnTorch, Norse, SpikingJelly) are optional: without them their cases are recorded as
"not installed" and the run still succeeds. Only the CPU smoke path runs here; the CUDA branches
(CUDA events, peak memory, SpikingJelly's GPU implementations) run on a GPU only.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATUSES = {"ok", "not installed", "unavailable", "skipped", "error"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The JSON report of one smoke run (and its markdown beside it)."""
    out = tmp_path_factory.mktemp("gpu_smoke")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYSNN_TEST_DEVICE="cpu")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--device", "cpu"]
        + ["--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads((out / "gpu.json").read_text())
    data["_md"] = (out / "gpu.md").read_text()
    return data


def test_structure(report: dict) -> None:
    assert set(report) >= {"meta", "cases", "ratios", "targets"}
    assert report["meta"]["smoke"] is True and report["meta"]["device"] == "cpu"
    for case in report["cases"]:
        assert {"suite", "name", "params", "status"} <= set(case)
        assert case["status"] in STATUSES, case
        assert case["status"] != "error", case.get("traceback") or case["error"]
        assert case["peak_mib"] is None  # no GPU memory on the CPU
    assert {c["suite"] for c in report["cases"]} == {"on", "bindsnet", "graph", "dc"}
    assert [t["target"] for t in report["targets"]] and all(
        {"goal", "measured", "met"} <= set(t) for t in report["targets"]
    )
    headings = (
        "Open-neuromorphic",
        "BindsNET-paper",
        "eager vs graphed",
        "Diehl & Cook",
        "Targets",
    )
    for heading in headings:
        assert heading in report["_md"]


def test_pysnn_results_are_positive(report: dict) -> None:
    names = {
        ("on", "pysnn-unroll"),
        ("on", "pysnn-multi"),
        ("bindsnet", "pysnn-multistep"),
        ("bindsnet", "pysnn-steploop"),
        ("graph", "pysnn-eager"),
        ("graph", "pysnn-graphed"),
    }
    pysnn_cases = [c for c in report["cases"] if c["name"].startswith("pysnn")]
    assert names <= {(c["suite"], c["name"]) for c in pysnn_cases}
    for case in pysnn_cases:
        assert case["status"] == "ok", case
        assert case["seconds"] > 0 and math.isfinite(case["seconds"])
        assert all(t > 0 for t in case["times"])
        if case["suite"] == "dc":
            assert case["per_s"] > 0
    # ratios are computed only between cases of the same run and parameters
    for ratio in report["ratios"]:
        assert ratio["ratio"] > 0 and ratio["pysnn"].startswith("pysnn")


def test_graphed_step_loop_runs_eagerly_on_the_cpu_with_the_same_results(report: dict) -> None:
    """On the CPU ``GraphedStep`` is the eager step: it says why and gives the eager results."""
    graphed = next(c for c in report["cases"] if c["name"] == "pysnn-graphed")
    assert graphed["graphed"] is False and graphed["replays"] == 0
    assert "cpu tensors" in graphed["reason"]
    assert graphed["same_as_eager"] is True
    assert any(r["suite"] == "graph" and r["peer"] == "pysnn-eager" for r in report["ratios"])
