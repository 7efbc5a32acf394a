"""Plots for spiking networks: spike rasters, voltages, receptive fields, assignments, accuracy
curves and STDP windows.

matplotlib is an optional dependency (``pip install matplotlib``, or the extra
``pip install ".[plot]"`` in a pysnn checkout) and is imported lazily inside
each function. Figures are created with :class:`matplotlib.figure.Figure` and an Agg canvas, not
``pyplot``: nothing is shown, no GUI backend is needed and nothing blocks, so everything works
headless. Every function returns the :class:`~matplotlib.figure.Figure` (``ax.figure`` when an
``ax`` is passed), accepts tensors on any device (copied to the CPU inside) as well as NumPy
arrays, and saves a PNG when ``path`` is given.

Time axes are in ms (``t * dt``); tensors are time-first, as recorded by
:class:`pysnn.monitor.Monitor`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "plot_spikes",
    "plot_voltages",
    "plot_weights",
    "plot_assignments",
    "plot_accuracy",
    "plot_stdp_window",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence[float]]
PathLike = Union[str, os.PathLike]


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "pysnn.plotting requires matplotlib; install it with `pip install matplotlib` "
            '(or the extra: `pip install ".[plot]"` in a pysnn checkout)'
        ) from exc
    return Figure, FigureCanvasAgg


def _figure(ax: Any, figsize: Tuple[float, float]) -> Tuple[Any, Any]:
    """Return ``(fig, ax)``: ``ax``'s figure, or a new Agg-backed figure with one axes."""
    Figure, FigureCanvasAgg = _require_matplotlib()
    if ax is not None:
        if not hasattr(ax, "figure") or not hasattr(ax, "plot"):
            raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _panels(
    ax: Any, names: Sequence[str], figsize: Optional[Tuple[float, float]]
) -> Tuple[Any, list]:
    """``(fig, axes)`` with one axes per name: the given sequence of Axes (one per name, all in
    one figure), or a new figure with the panels stacked vertically, sharing the time axis."""
    n = len(names)
    if ax is not None:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != n:
            raise ValueError(
                f"ax must be a sequence of {n} Axes for the {n} entries {list(names)} (one panel "
                f"each), or None, got {len(axes)}"
            )
        figures = [_figure(a, (0.0, 0.0))[0] for a in axes]
        return figures[0], axes
    Figure, FigureCanvasAgg = _require_matplotlib()
    fig = Figure(figsize=figsize or (8.0, 1.0 + 2.5 * n), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(n, 1, 1)]
    axes += [fig.add_subplot(n, 1, k + 1, sharex=axes[0]) for k in range(1, n)]
    return fig, axes


def _entries(data: Mapping[Any, Any], name: str) -> list:
    """The ``(key, value)`` pairs of a non-empty mapping, keys as strings (panel titles)."""
    if len(data) == 0:
        raise ValueError(f"{name} must not be an empty mapping (one panel per entry)")
    return [(str(key), value) for key, value in data.items()]


def _finish(fig: Any, path: Optional[PathLike], dpi: int) -> Any:
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Detached CPU float64 NumPy copy of a tensor / array / sequence."""
    if isinstance(x, Tensor):
        x = x.detach()
        if x.is_complex():
            raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")
        return x.to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a tensor, array or sequence of numbers, got {type(x).__name__}"
        ) from None


def _check_dt(dt: Any) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
        raise ValueError(f"dt must be a positive number (ms), got {dt!r}")
    return float(dt)


def _select_batch(x: np.ndarray, batch: int, name: str) -> np.ndarray:
    """``(T,)``/``(T, n)`` as is (``(T,)`` -> ``(T, 1)``); ``(T, B, ...)`` -> ``(T, n)``."""
    if x.ndim == 0:
        raise ValueError(f"{name} must have shape (T, n) or (T, B, ...), got a scalar")
    if x.ndim == 1:
        return x[:, None]
    if x.ndim == 2:
        return x
    B = x.shape[1]
    if not -B <= batch < B:
        raise ValueError(f"batch must index the batch axis of size {B} of {name}, got {batch!r}")
    return x[:, batch].reshape(x.shape[0], -1)


def plot_spikes(
    spikes: Any,
    dt: float = 1.0,
    ax: Any = None,
    *,
    batch: int = 0,
    events: Optional[bool] = None,
    n_neurons: Optional[int] = None,
    color: str = "k",
    markersize: float = 4.0,
    title: Optional[str] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
    figsize: Optional[Tuple[float, float]] = None,
) -> Any:
    """Spike raster: one mark per spike at ``(t * dt, neuron index)``.

    Args:
        spikes: one of

            * dense ``(T, n)`` or ``(T,)`` spikes (any nonzero value is a spike);
            * dense ``(T, B, *shape)``: sample ``batch`` is drawn, neurons flattened;
            * events ``(n_events, 3)`` long tensor of ``(t, b, flat_index)`` rows as returned by
              :meth:`pysnn.monitor.SpikeMonitor.get` (events of sample ``batch`` are drawn);
            * a :class:`pysnn.monitor.SpikeMonitor` (its events are used);
            * a mapping ``{name: any of the above}`` (BindsNET style, e.g.
              ``{"exc": monitor.get("spikes")}``): one panel per entry, titled with its name,
              stacked vertically on a shared time axis.
        dt: time step (ms).
        ax: draw into this matplotlib Axes instead of a new figure (for a mapping: a sequence
            of Axes, one per entry).
        batch: sample to draw for batched input.
        events: force interpreting ``spikes`` as events (``True``) or dense (``False``). Default:
            an integer (not bool) 2-D tensor with 3 columns is taken as events -- pass
            ``events=False`` for dense integer spikes of 3 neurons.
        n_neurons: y-axis extent for event input (default: largest index + 1).
        title: axes title (for a mapping: the figure's title above the panels).
        path: save a PNG here. dpi: its resolution.
        figsize: inches; default ``(8, 4)``, for a mapping ``(8, 1 + 2.5 * entries)``.

    Returns:
        The matplotlib Figure.
    """
    dt = _check_dt(dt)
    options = dict(batch=batch, events=events, n_neurons=n_neurons, color=color, ms=markersize)
    return _plot(_raster, spikes, "spikes", dt, options, ax, figsize, title, path, dpi)


def _plot(
    draw: Callable[..., None],
    data: Any,
    name: str,
    dt: float,
    options: Dict[str, Any],
    ax: Any,
    figsize: Optional[Tuple[float, float]],
    title: Optional[str],
    path: Optional[PathLike],
    dpi: int,
) -> Any:
    """One panel drawn by ``draw(axis, data, dt, name, **options)``, or, for a dict of name ->
    data (BindsNET style), one titled panel per entry on a shared time axis."""
    if isinstance(data, Mapping):
        entries = _entries(data, name)
        fig, axes = _panels(ax, [k for k, _ in entries], figsize)
        for axis, (key, value) in zip(axes, entries):
            draw(axis, value, dt, f"{name}[{key!r}]", **options)
            axis.set_title(key)
        if title is not None:
            fig.suptitle(title)
        return _finish(fig, path, dpi)
    fig, ax = _figure(ax, figsize or (8.0, 4.0))
    draw(ax, data, dt, name, **options)
    if title is not None:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def _raster(
    ax: Any,
    spikes: Any,
    dt: float,
    name: str,
    *,
    batch: int,
    events: Optional[bool],
    n_neurons: Optional[int],
    color: str,
    ms: float,
) -> None:
    """Draw one spike raster (see :func:`plot_spikes`) into ``ax``."""
    if hasattr(spikes, "to_dense") and hasattr(spikes, "get") and not isinstance(spikes, Tensor):
        if n_neurons is None and getattr(spikes, "shape", None) is not None:
            n_neurons = math.prod(spikes.shape[1:])
        spikes, events = spikes.get(), True
    if not isinstance(spikes, Tensor):
        try:
            spikes = torch.as_tensor(np.asarray(spikes))
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a tensor, an array, a SpikeMonitor or a mapping name -> one of "
                f"these, got {type(spikes).__name__}"
            ) from None
    if events is None:
        events = (
            spikes.dim() == 2
            and spikes.shape[1] == 3
            and not spikes.is_floating_point()
            and spikes.dtype != torch.bool
        )
    if events:
        ev = spikes.detach().to("cpu")
        if ev.dim() != 2 or ev.shape[1] != 3:
            raise ValueError(
                f"{name} as events must have shape (n_events, 3), got {tuple(ev.shape)}"
            )
        ev = ev[ev[:, 1] == batch].to(torch.float64).numpy()
        t, idx = ev[:, 0], ev[:, 2]
        T = int(t.max()) + 1 if t.size else 1
        n = n_neurons if n_neurons is not None else (int(idx.max()) + 1 if idx.size else 1)
    else:
        x = _select_batch(_to_numpy(spikes, name), batch, name)
        T, n = x.shape
        t, idx = np.nonzero(x)
    ax.scatter(t * dt, idx, marker="|", s=ms**2, c=color, linewidths=1.0)
    ax.set_xlim(0, max(T, 1) * dt)
    ax.set_ylim(-0.5, max(n, 1) - 0.5)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron index")


def plot_voltages(
    v: Union[ArrayLike, Mapping[str, ArrayLike]],
    dt: float = 1.0,
    ax: Any = None,
    *,
    neurons: Optional[Sequence[int]] = None,
    batch: int = 0,
    thresh: Optional[float] = None,
    ylabel: str = "membrane potential (mV)",
    title: Optional[str] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
    figsize: Optional[Tuple[float, float]] = None,
) -> Any:
    """Membrane potential traces over time.

    Args:
        v: ``(T,)``, ``(T, n)`` or ``(T, B, *shape)`` (sample ``batch``, neurons flattened), mV;
            or a mapping ``{name: such a tensor}`` (BindsNET style, e.g.
            ``{"exc": monitor.get("v")}``): one panel per entry, titled with its name, stacked
            vertically on a shared time axis.
        dt: time step (ms).
        ax: draw into this matplotlib Axes (for a mapping: a sequence of Axes, one per entry).
        neurons: indices (after flattening) of the neurons to draw; default all (for a mapping:
            the same indices in every panel).
        thresh: draw a dashed horizontal line at this threshold (mV).
        title: axes title (for a mapping: the figure's title above the panels).
        path: save a PNG here.
        figsize: inches; default ``(8, 4)``, for a mapping ``(8, 1 + 2.5 * entries)``.

    Returns:
        The matplotlib Figure. A legend is drawn for up to 10 traces.
    """
    dt = _check_dt(dt)
    options = dict(neurons=neurons, batch=batch, thresh=thresh, ylabel=ylabel)
    return _plot(_traces, v, "v", dt, options, ax, figsize, title, path, dpi)


def _traces(
    ax: Any,
    v: ArrayLike,
    dt: float,
    name: str,
    *,
    neurons: Optional[Sequence[int]],
    batch: int,
    thresh: Optional[float],
    ylabel: str,
) -> None:
    """Draw the voltage traces of one tensor (see :func:`plot_voltages`) into ``ax``."""
    x = _select_batch(_to_numpy(v, name), batch, name)
    T, n = x.shape
    if neurons is None:
        neurons = list(range(n))
    else:
        neurons = [int(i) for i in np.asarray(neurons).reshape(-1)]
        bad = [i for i in neurons if not -n <= i < n]
        if bad:
            raise ValueError(f"neurons must index the {n} traces of {name}, got out-of-range {bad}")
    t = np.arange(T) * dt
    for i in neurons:
        ax.plot(t, x[:, i], lw=1.0, label=f"neuron {i}")
    if thresh is not None:
        ax.axhline(float(thresh), color="r", ls="--", lw=1.0, label="threshold")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel(ylabel)
    if 0 < len(neurons) <= 10:
        ax.legend(loc="best", fontsize="small")


def _grid(n: int, n_cols: Optional[int], name: str = "n_cols") -> Tuple[int, int]:
    if n_cols is None:
        n_cols = max(1, math.ceil(math.sqrt(n)))
    elif isinstance(n_cols, bool) or not isinstance(n_cols, int) or n_cols < 1:
        raise ValueError(f"{name} must be None or a positive int, got {n_cols!r}")
    return max(1, math.ceil(n / n_cols)), n_cols


def plot_weights(
    weight: ArrayLike,
    shape: Tuple[int, int] = (28, 28),
    n_cols: Optional[int] = None,
    ax: Any = None,
    *,
    cmap: str = "hot_r",
    gap_color: str = "0.5",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    colorbar: bool = True,
    title: Optional[str] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
    figsize: Optional[Tuple[float, float]] = None,
) -> Any:
    """Grid of receptive fields: row ``j`` of ``weight`` reshaped to ``shape`` for every neuron.

    Args:
        weight: ``(out, in)`` connection weights (``in == shape[0] * shape[1]``).
        shape: ``(height, width)`` of one receptive field, e.g. ``(28, 28)`` for MNIST.
        n_cols: tiles per row (default ``ceil(sqrt(out))``).
        cmap, vmin, vmax: colour map and limits (default: weight min / max).
        gap_color: colour of the 1-pixel lines between tiles and of unused tiles.
        path: save a PNG here.

    All tiles are assembled into one image (separated by 1-pixel lines), so hundreds of
    neurons draw quickly.

    Returns:
        The matplotlib Figure.
    """
    w = _to_numpy(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"weight must have shape (out, in), got {w.shape}")
    try:
        h, wd = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if h < 1 or wd < 1 or h * wd != w.shape[1]:
        raise ValueError(
            f"shape must be (height, width) with height * width == in = {w.shape[1]} (weight "
            f"has shape {w.shape}), got {tuple(shape)!r}"
        )
    n = w.shape[0]
    n_rows, n_cols = _grid(n, n_cols)
    tiles = np.full((n_rows * n_cols, h, wd), np.nan)
    tiles[:n] = w.reshape(n, h, wd)
    padded = np.full((n_rows, n_cols, h + 1, wd + 1), np.nan)
    padded[:, :, :h, :wd] = tiles.reshape(n_rows, n_cols, h, wd)
    img = padded.transpose(0, 2, 1, 3).reshape(n_rows * (h + 1), n_cols * (wd + 1))[:-1, :-1]

    if figsize is None:
        aspect = img.shape[0] / img.shape[1]
        figsize = (7.0, min(max(7.0 * aspect, 2.0), 14.0))
    fig, ax = _figure(ax, figsize)
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(bad=gap_color)
    vmin = float(np.nanmin(w)) if vmin is None and w.size else vmin
    vmax = float(np.nanmax(w)) if vmax is None and w.size else vmax
    im = ax.imshow(img, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        fig.colorbar(im, ax=ax, label="weight")
    ax.set_title(title if title is not None else f"receptive fields ({n} neurons)")
    return _finish(fig, path, dpi)


def plot_assignments(
    assignments: ArrayLike,
    grid_shape: Optional[Tuple[int, int]] = None,
    n_labels: Optional[int] = None,
    ax: Any = None,
    *,
    cmap: str = "tab10",
    annotate: Optional[bool] = None,
    title: Optional[str] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
    figsize: Tuple[float, float] = (6.0, 5.0),
) -> Any:
    """Neuron class assignments (from :func:`pysnn.evaluation.assign_labels`) as a grid.

    Args:
        assignments: ``(n_neurons,)`` integer classes; -1 (never fired) is drawn light grey.
        grid_shape: ``(rows, cols)`` with ``rows * cols >= n_neurons`` (default near-square);
            neurons fill it row by row, left-over cells stay blank.
        n_labels: number of classes (default ``max(assignments) + 1``).
        cmap: qualitative colour map for the classes.
        annotate: write the class into each cell (default: when ``n_neurons <= 100``).
        path: save a PNG here.

    Returns:
        The matplotlib Figure.
    """
    a = _to_numpy(assignments, "assignments").reshape(-1)
    if a.size and not np.all(np.isfinite(a) & (a == np.round(a)) & (a >= -1)):
        raise ValueError("assignments must contain integers >= -1 (-1 = unassigned)")
    n = a.size
    if n_labels is None:
        n_labels = int(a.max()) + 1 if n else 1
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise ValueError(f"n_labels must be None or a positive int, got {n_labels!r}")
    if n and a.max() >= n_labels:
        raise ValueError(f"assignments contain class {int(a.max())} >= n_labels={n_labels}")
    if grid_shape is None:
        rows, cols = _grid(n, None)
    else:
        try:
            rows, cols = (int(s) for s in grid_shape)
        except (TypeError, ValueError):
            raise ValueError(f"grid_shape must be (rows, cols), got {grid_shape!r}") from None
        if rows < 1 or cols < 1 or rows * cols < n:
            raise ValueError(
                f"grid_shape must be (rows, cols) with rows * cols >= n_neurons = {n}, got "
                f"{tuple(grid_shape)!r}"
            )
    grid = np.full(rows * cols, np.nan)
    grid[:n] = a + 1  # -1 -> 0 (unassigned), class c -> c + 1
    grid = grid.reshape(rows, cols)

    import matplotlib
    from matplotlib.colors import ListedColormap

    base = matplotlib.colormaps[cmap]
    if isinstance(base, ListedColormap):
        colors = [base(i % base.N) for i in range(n_labels)]
    else:
        colors = [base(i / max(n_labels - 1, 1)) for i in range(n_labels)]
    cm = ListedColormap([(0.85, 0.85, 0.85, 1.0)] + colors).with_extremes(bad="white")

    fig, ax = _figure(ax, figsize)
    im = ax.imshow(grid, cmap=cm, vmin=-0.5, vmax=n_labels + 0.5, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, ticks=np.arange(n_labels + 1))
    cbar.ax.set_yticklabels(["none"] + [str(c) for c in range(n_labels)])
    cbar.set_label("assigned class")
    if annotate is None:
        annotate = n <= 100
    if annotate:
        for k in range(n):
            ax.text(k % cols, k // cols, str(int(a[k])), ha="center", va="center", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else "neuron assignments")
    return _finish(fig, path, dpi)


def plot_accuracy(
    history: Mapping[str, ArrayLike],
    ax: Any = None,
    *,
    x: Optional[ArrayLike] = None,
    xlabel: str = "evaluation",
    ylabel: str = "accuracy (%)",
    title: Optional[str] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
    figsize: Tuple[float, float] = (6.0, 4.0),
) -> Any:
    """Accuracy curves, one line per entry of ``history`` (e.g. ``{"all activity": [...]}``).

    Args:
        history: mapping name -> sequence of values (e.g. accuracy in %).
        x: shared x positions (e.g. number of training samples); default ``0, 1, 2, ...``.
        path: save a PNG here.

    Returns:
        The matplotlib Figure.
    """
    if not isinstance(history, Mapping) or len(history) == 0:
        raise TypeError(
            f"history must be a non-empty mapping name -> list of values, got {history!r}"
        )
    xs = None if x is None else _to_numpy(x, "x").reshape(-1)
    fig, ax = _figure(ax, figsize)
    for name, values in history.items():
        y = _to_numpy(values, f"history[{name!r}]").reshape(-1)
        if xs is not None and xs.size != y.size:
            raise ValueError(f"x has {xs.size} values but history[{name!r}] has {y.size}")
        xv = np.arange(y.size) if xs is None else xs
        ax.plot(xv, y, marker="o" if y.size <= 50 else None, label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    if title is not None:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def plot_stdp_window(
    dt_values: ArrayLike,
    dw_values: ArrayLike,
    expected: Union[None, ArrayLike, Callable[[Tensor], Any]] = None,
    ax: Any = None,
    *,
    title: Optional[str] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
    figsize: Tuple[float, float] = (6.0, 4.0),
) -> Any:
    """STDP learning window: weight change against spike-time difference.

    Args:
        dt_values: ``(K,)`` spike-time differences ``t_post - t_pre`` (ms).
        dw_values: ``(K,)`` measured weight changes.
        expected: optional theory curve: ``(K,)`` values at ``dt_values``, or a callable that
            receives a float64 tensor of Δt (ms) and returns Δw (evaluated on a fine grid).
        path: save a PNG here.

    Returns:
        The matplotlib Figure.
    """
    d = _to_numpy(dt_values, "dt_values").reshape(-1)
    w = _to_numpy(dw_values, "dw_values").reshape(-1)
    if d.size != w.size:
        raise ValueError(
            f"dt_values and dw_values must have the same length, got {d.size} and {w.size}"
        )
    fig, ax = _figure(ax, figsize)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.axvline(0.0, color="0.6", lw=0.8)
    if expected is not None:
        if callable(expected):
            lo, hi = (float(d.min()), float(d.max())) if d.size else (-1.0, 1.0)
            grid = torch.linspace(lo, hi, 501, dtype=torch.float64)
            ex = _to_numpy(expected(grid), "expected(dt)").reshape(-1)
            if ex.size != grid.numel():
                raise ValueError(
                    f"expected(dt) must return one value per Δt ({grid.numel()}), got {ex.size}"
                )
            ax.plot(grid.numpy(), ex, "r-", lw=1.5, label="expected")
        else:
            ex = _to_numpy(expected, "expected").reshape(-1)
            if ex.size != d.size:
                raise ValueError(
                    f"expected must have the same length as dt_values ({d.size}), got {ex.size}"
                )
            order = np.argsort(d, kind="stable")
            ax.plot(d[order], ex[order], "r-", lw=1.5, label="expected")
    ax.scatter(d, w, s=12, c="C0", zorder=3, label="measured")
    ax.set_xlabel("Δt = t_post − t_pre (ms)")
    ax.set_ylabel("Δw")
    ax.legend(loc="best")
    ax.set_title(title if title is not None else "STDP window")
    return _finish(fig, path, dpi)
