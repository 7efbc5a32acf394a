"""Tests for pysnn.plotting: every plot renders headless to a non-blank PNG."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from pysnn import plotting  # noqa: E402
from pysnn.monitor import SpikeMonitor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _check_png(path):
    assert path.exists() and path.stat().st_size > 0
    img = imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10
    assert float(img[..., :3].var()) > 0.0  # not a blank canvas


def test_plot_spikes_dense_positions(tmp_path):
    spikes = torch.zeros(10, 4)
    spikes[2, 1] = 1
    spikes[5, 3] = 1
    spikes[7, 0] = 1
    fig = plotting.plot_spikes(spikes, dt=0.5, path=tmp_path / "raster.png")
    assert isinstance(fig, Figure)
    _check_png(tmp_path / "raster.png")
    offsets = np.asarray(fig.axes[0].collections[0].get_offsets())
    # (t * dt, neuron) for the three spikes, in time order
    np.testing.assert_allclose(offsets, [[1.0, 1.0], [2.5, 3.0], [3.5, 0.0]])
    assert fig.axes[0].get_xlim() == (0.0, 5.0)


def test_plot_spikes_batched_and_events_agree(tmp_path):
    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(20, 3, 2, 5, generator=g) < 0.2).float()  # (T, B, 2, 5)
    expected = [
        [t, i] for t in range(20) for i, s in enumerate(dense[t, 1].reshape(-1).tolist()) if s
    ]
    fig_dense = plotting.plot_spikes(dense, batch=1, path=tmp_path / "dense.png")
    _check_png(tmp_path / "dense.png")
    np.testing.assert_allclose(fig_dense.axes[0].collections[0].get_offsets(), expected)

    class Src:
        spikes = None

    src = Src()
    mon = SpikeMonitor(src, chunk=6)
    for t in range(20):
        src.spikes = dense[t]
        mon.record()
    fig_mon = plotting.plot_spikes(mon, batch=1, path=tmp_path / "mon.png")
    _check_png(tmp_path / "mon.png")
    np.testing.assert_allclose(fig_mon.axes[0].collections[0].get_offsets(), expected)
    fig_ev = plotting.plot_spikes(mon.get(), batch=1)
    np.testing.assert_allclose(fig_ev.axes[0].collections[0].get_offsets(), expected)
    assert fig_mon.axes[0].get_ylim() == (-0.5, 9.5)


def test_plot_spikes_into_existing_axes():
    fig = Figure()
    ax = fig.add_subplot(2, 1, 1)
    out = plotting.plot_spikes(torch.ones(3, 2), ax=ax, title="x")
    assert out is fig and ax.get_title() == "x"


def test_plot_voltages(tmp_path):
    t = torch.arange(50, dtype=torch.float32)
    v = torch.stack([-65 + 10 * torch.sin(t / 5), -70 + 0.2 * t], dim=1)  # (T, 2) mV
    fig = plotting.plot_voltages(v, dt=0.1, thresh=-52.0, path=tmp_path / "v.png")
    _check_png(tmp_path / "v.png")
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_xdata(), np.arange(50) * 0.1, rtol=1e-6)
    np.testing.assert_allclose(lines[1].get_ydata(), v[:, 1].numpy(), rtol=1e-6)
    # batched input with neuron selection
    fig = plotting.plot_voltages(v[:, None, :].repeat(1, 3, 1), neurons=[1])
    assert len(fig.axes[0].get_lines()) == 1
    with pytest.raises(ValueError, match="neurons"):
        plotting.plot_voltages(v, neurons=[5])


def test_plot_weights_tiles(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.rand(5, 12, generator=g)  # 5 neurons, 3x4 receptive fields
    fig = plotting.plot_weights(w, shape=(3, 4), n_cols=3, path=tmp_path / "w.png")
    _check_png(tmp_path / "w.png")
    img = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    # 2 rows x 3 cols of 3x4 tiles with 1-pixel gaps
    assert img.shape == (2 * 3 + 1, 3 * 4 + 2)
    np.testing.assert_allclose(img[0:3, 0:4], w[0].reshape(3, 4).numpy(), rtol=1e-6)
    np.testing.assert_allclose(img[0:3, 10:14], w[2].reshape(3, 4).numpy(), rtol=1e-6)
    np.testing.assert_allclose(img[4:7, 5:9], w[4].reshape(3, 4).numpy(), rtol=1e-6)
    assert np.isnan(img[4:7, 10:14]).all()  # empty 6th tile
    assert np.isnan(img[3, :]).all()  # separator
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_weights(w, shape=(28, 28))


def test_plot_assignments(tmp_path):
    assignments = torch.tensor([0, 1, 2, -1, 9, 3, 3])
    fig = plotting.plot_assignments(assignments, n_labels=10, path=tmp_path / "a.png")
    _check_png(tmp_path / "a.png")
    img = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    assert img.shape == (3, 3)  # ceil(sqrt(7)) = 3 columns
    np.testing.assert_allclose(img.reshape(-1)[:7], [1, 2, 3, 0, 10, 4, 4])
    fig = plotting.plot_assignments(assignments, grid_shape=(1, 7))
    assert fig.axes[0].images[0].get_array().shape == (1, 7)
    with pytest.raises(ValueError, match="grid_shape"):
        plotting.plot_assignments(assignments, grid_shape=(2, 3))
    with pytest.raises(ValueError, match="n_labels"):
        plotting.plot_assignments(assignments, n_labels=5)


def test_plot_accuracy(tmp_path):
    history = {"all activity": [10.0, 50.0, 80.0], "proportion": torch.tensor([12.0, 55.0, 82.0])}
    fig = plotting.plot_accuracy(history, x=[100, 200, 300], path=tmp_path / "acc.png")
    _check_png(tmp_path / "acc.png")
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["all activity", "proportion"]
    np.testing.assert_allclose(lines[1].get_ydata(), [12.0, 55.0, 82.0])
    with pytest.raises(TypeError, match="history"):
        plotting.plot_accuracy([1, 2, 3])
    with pytest.raises(ValueError, match="x has 2"):
        plotting.plot_accuracy(history, x=[1, 2])


def test_plot_stdp_window(tmp_path):
    dt = torch.linspace(-40, 40, 17)
    dw = torch.where(dt > 0, 0.01 * torch.exp(-dt / 20), -0.012 * torch.exp(dt / 20))
    fig = plotting.plot_stdp_window(dt, dw, expected=dw, path=tmp_path / "stdp.png")
    _check_png(tmp_path / "stdp.png")

    def theory(d):
        return torch.where(d > 0, 0.01 * torch.exp(-d / 20), -0.012 * torch.exp(d / 20))

    fig = plotting.plot_stdp_window(dt, dw, expected=theory, path=tmp_path / "stdp2.png")
    _check_png(tmp_path / "stdp2.png")
    curve = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "expected"][0]
    x = np.asarray(curve.get_xdata())
    assert x[0] == -40.0 and x[-1] == 40.0
    np.testing.assert_allclose(
        curve.get_ydata(), np.where(x > 0, 0.01 * np.exp(-x / 20), -0.012 * np.exp(x / 20))
    )
    with pytest.raises(ValueError, match="same length"):
        plotting.plot_stdp_window(dt, dw[:3])


def test_headless_without_pyplot_and_missing_matplotlib_message(tmp_path):
    code = (
        "import sys, torch\n"
        "from pysnn import plotting\n"
        f"plotting.plot_spikes(torch.eye(4), path={str(tmp_path / 'h.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "sys.modules['matplotlib'] = None\n"
        "sys.modules['matplotlib.figure'] = None\n"
        "try:\n"
        "    plotting.plot_voltages(torch.zeros(3, 1))\n"
        "except ImportError as e:\n"
        "    assert 'pip install matplotlib' in str(e), str(e)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    _check_png(tmp_path / "h.png")


def test_plot_spikes_dict_one_panel_per_entry(tmp_path):
    """BindsNET style: {name: (T, n) or (T, B, n)} draws one titled panel per layer."""
    exc = torch.zeros(6, 4)
    exc[1, 2] = exc[4, 0] = 1
    inh = torch.zeros(6, 2, 3)  # (T, B, n): sample `batch` is drawn
    inh[3, 1, 2] = inh[5, 0, 1] = 1
    fig = plotting.plot_spikes({"exc": exc, "inh": inh}, dt=2.0, batch=1, path=tmp_path / "d.png")
    _check_png(tmp_path / "d.png")
    assert [ax.get_title() for ax in fig.axes] == ["exc", "inh"]
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), [[2.0, 2.0], [8.0, 0.0]])
    np.testing.assert_allclose(fig.axes[1].collections[0].get_offsets(), [[6.0, 2.0]])
    assert fig.axes[1].get_ylim() == (-0.5, 2.5) and fig.axes[0].get_xlim() == (0.0, 12.0)
    with pytest.raises(ValueError, match="empty mapping"):
        plotting.plot_spikes({})
    with pytest.raises(ValueError, match="sequence of 2 Axes"):
        plotting.plot_spikes({"exc": exc, "inh": inh}, ax=Figure().add_subplot(1, 1, 1))
    with pytest.raises(TypeError, match=r"spikes\['bad'\] must be a tensor"):
        plotting.plot_spikes({"bad": object()})


def test_plot_spikes_dict_into_given_axes():
    fig = Figure()
    axes = [fig.add_subplot(1, 2, k) for k in (1, 2)]
    out = plotting.plot_spikes({"a": torch.ones(3, 2), "b": torch.eye(3)}, ax=axes, title="net")
    assert out is fig and [ax.get_title() for ax in axes] == ["a", "b"]
    np.testing.assert_allclose(axes[1].collections[0].get_offsets(), [[0, 0], [1, 1], [2, 2]])


def test_plot_voltages_dict_one_panel_per_entry():
    t = torch.arange(20, dtype=torch.float32)
    v_exc = torch.stack([-65 + t, -60 - t], dim=1)  # (T, 2) mV
    v_inh = (-50 - t)[:, None, None].repeat(1, 2, 1)  # (T, B=2, 1) mV
    fig = plotting.plot_voltages({"exc": v_exc, "inh": v_inh}, dt=0.5, thresh=-52.0)
    assert [ax.get_title() for ax in fig.axes] == ["exc", "inh"]
    exc_lines, inh_lines = fig.axes[0].get_lines(), fig.axes[1].get_lines()
    assert len(exc_lines) == 3 and len(inh_lines) == 2  # traces + threshold line
    np.testing.assert_allclose(exc_lines[1].get_ydata(), (-60 - t).numpy())
    np.testing.assert_allclose(inh_lines[0].get_xdata(), (t * 0.5).numpy())
    np.testing.assert_allclose(inh_lines[0].get_ydata(), (-50 - t).numpy())
    with pytest.raises(ValueError, match=r"traces of v\['exc'\]"):
        plotting.plot_voltages({"exc": v_exc}, neurons=[3])
