"""Figures for :func:`gaussplug.inspect`: per-layer scatter grids (2-D data) and per-layer curves.

Matplotlib is imported lazily and always with the Agg backend, so nothing
here needs a display.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["plot_curves", "plot_layers", "write_plots"]

_MAX_POINTS = 2000


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_layers(push, *, max_points: int = _MAX_POINTS, ncols: int | None = None, seed: int = 0):
    """A grid of scatter plots of 2-D data after every layer (input first), with a title and a colour bar.

    Points are coloured by their input's first coordinate, so they can be followed through the layers.

    Args:
      push: A :class:`gaussplug._inspect.Pushforward` of 2-D data.
      max_points: Points drawn per panel (a fixed random subset of rows).
      ncols: Panels per row; default about ``sqrt(n_panels)``.
      seed: Seed of the subset.

    Returns:
      A ``matplotlib.figure.Figure``.

    Raises:
      ValueError: The data is not 2-D.

    Example:
      >>> import gaussplug, numpy as np
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
      >>> fig = plot_layers(gaussplug.pushforward(flow, np.random.default_rng(0).normal(size=(50, 2))))
      >>> len(fig.axes)  # the input, the layer's output and the colour bar
      3
    """
    data = np.asarray(push.data)
    if data.shape[-1] != 2:
        raise ValueError(f"plot_layers draws 2-D data; got dim {data.shape[-1]}.")
    plt = _pyplot()
    n_panels, n = data.shape[0], data.shape[1]
    rows = np.random.default_rng(seed).permutation(n)[:max_points]
    ncols = ncols or math.ceil(math.sqrt(n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.6 * ncols + 1.2, 2.6 * nrows + 0.8), squeeze=False, layout="constrained"
    )
    colour = data[0, rows, 0]  # colour by the input's first coordinate to follow points through layers
    points, kept = None, []
    for k, ax in enumerate(axes.flat):
        if k >= n_panels:
            ax.remove()
            continue
        pts = data[k, rows]
        kept.append(ax)
        points = ax.scatter(pts[:, 0], pts[:, 1], s=2, c=colour, cmap="viridis", linewidths=0)
        ax.set_title(push.names[k], fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
        if k % ncols == 0:
            ax.set_ylabel("coordinate 1", fontsize=8)
        if k >= n_panels - ncols:
            ax.set_xlabel("coordinate 0", fontsize=8)
    fig.colorbar(points, ax=kept, shrink=0.6, label="the point's input coordinate 0")
    fig.suptitle(
        f"The data after each layer ({len(rows)} of {n} rows; panel 1 is the input)", fontsize=11, x=0.01, ha="left"
    )
    return fig


def plot_curves(report):
    """Per-layer curves: cumulative log-likelihood, and negentropy / TC / their sum.

    Args:
      report: A :class:`gaussplug._inspect.InspectionReport`.

    Returns:
      A ``matplotlib.figure.Figure`` with two panels.

    Example:
      >>> import gaussplug, numpy as np
      >>> flow = gaussplug.build_flow({"dim": 3, "layers": [{"family": "standardize"}]})
      >>> fig = plot_curves(gaussplug.inspect(flow, np.random.default_rng(0).normal(size=(50, 3))))
      >>> len(fig.axes)
      2
    """
    plt = _pyplot()
    cols = report.to_dict()
    k = np.arange(len(cols["layer"]))
    fig, (ax_ll, ax_info) = plt.subplots(1, 2, figsize=(max(8.0, 0.5 * len(k) + 5), 3.6))
    ax_ll.plot(k, cols["log_likelihood"], "o-", ms=3, color="k")
    ax_ll.set_ylabel("mean log-likelihood (nats)")
    ax_ll.set_title("cumulative log-likelihood")
    for key, label, style in (
        ("negentropy", "marginal negentropy", "o-"),
        ("total_correlation", "total correlation", "s-"),
        ("non_gaussianity", "negentropy + moments + TC", "k--"),
        ("tc_gaussian", "Gaussian-copula TC", ":"),
    ):
        ax_info.plot(k, cols[key], style, ms=3, label=label)
    ax_info.set_ylabel("nats")
    ax_info.set_title("non-Gaussianity of the data leaving each layer")
    ax_info.legend(fontsize=7)
    for ax in (ax_ll, ax_info):
        ax.set_xticks(k)
        ax.set_xticklabels(cols["layer"], rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_plots(report, out_dir, *, push=None) -> list[str]:
    """Write ``inspect_curves.png`` and, given a 2-D ``push``, ``inspect_layers.png``.

    Args:
      report: An :class:`~gaussplug._inspect.InspectionReport`.
      out_dir: Folder to write into (created if missing).
      push: Optional :class:`~gaussplug._inspect.Pushforward` of 2-D data.

    Returns:
      The paths written.
    """
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    figures = [("inspect_curves.png", plot_curves(report))]
    if push is not None and np.shape(push.data)[-1] == 2:
        figures.append(("inspect_layers.png", plot_layers(push)))
    for name, fig in figures:
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
