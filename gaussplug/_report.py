"""The PNG report written by ``gaussplug fit``: training curve, warm start, density and samples.

Matplotlib (Agg backend) is imported only when a report is drawn.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from gaussplug._keys import SEED_LIMIT

__all__ = ["log_prob_in_batches", "write_report"]

_BATCH = 4096
_MAX_POINTS = 2000  # points per scatter plot
_DATA_COLOR, _SAMPLE_COLOR = "0.35", "tab:orange"


def log_prob_in_batches(flow, x, batch: int = _BATCH) -> np.ndarray:
    """``flow.log_prob`` over the rows of ``x`` in fixed-size (padded) batches.

    Every call uses the same batch shape, so training, validation, grid and
    scoring evaluations share one compilation, and memory stays bounded.

    Returns:
      A float64 NumPy array of shape ``(n,)``.
    """
    x = np.asarray(x)
    if x.shape[0] == 0:
        return np.zeros(0)
    return np.asarray(flow.log_prob(x, batch_size=batch), np.float64)


def write_report(
    path: str | os.PathLike,
    *,
    flow,
    x_train: np.ndarray,
    history: dict[str, Any] | None,
    metrics: dict[str, Any],
    seed: int = 0,
) -> str:
    """Draws the fit report and saves it as a PNG.

    Args:
      path: Destination ``.png``.
      flow: The fitted flow (data units).
      x_train: Training data, for the sample comparison panels.
      history: ``fine_tune``'s history, or None if fine-tuning was skipped.
      metrics: The run's metrics (``dataset``, ``nll``) for titles and reference lines.
      seed: Seed for the samples drawn for the plots.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    before = set(plt.get_fignums())
    try:
        with warnings.catch_warnings():  # column names in a script the font lacks: boxes, not a warning per glyph
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
            _draw(plt, path, flow, x_train, history, metrics, seed)
    finally:  # also when drawing fails: no figure is left open
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
    return path


def _draw(plt, path: str, flow, x_train, history, metrics, seed: int) -> None:
    """Draws the report's panels for ``flow``'s dimension and saves the figure to ``path``."""
    dim = flow.dim
    k = min(dim, 4)
    rng = np.random.default_rng(seed)
    data = x_train[rng.permutation(x_train.shape[0])[:_MAX_POINTS]]
    n_samples = min(_MAX_POINTS, max(len(data), 500))
    samples = np.asarray(flow.sample((seed + 1) % SEED_LIMIT, n_samples), np.float64)
    samples = samples[np.isfinite(samples).all(axis=1)]
    lo, hi = _limits(data)
    names = _column_names(flow)
    if dim == 2:
        fig = plt.figure(figsize=(16, 10), layout="constrained")
        grid = fig.add_gridspec(2, 3)
        top = [fig.add_subplot(grid[0, :2]), fig.add_subplot(grid[0, 2])]
        _density_2d(fig, fig.add_subplot(grid[1, 0]), flow, data, lo, hi, names)
        ax_d, ax_s = fig.add_subplot(grid[1, 1]), fig.add_subplot(grid[1, 2])
        _scatter(ax_d, data, lo, hi, _DATA_COLOR, f"Training data ({len(data)} shown)", names)
        _scatter(ax_s, samples, lo, hi, _SAMPLE_COLOR, f"Samples from the model ({len(samples)})", names)
    else:
        fig = plt.figure(figsize=(16, 5 + 3.0 * k), layout="constrained")
        upper, lower = fig.subfigures(2, 1, height_ratios=[5, 3.0 * k])
        top = upper.subplots(1, 2, width_ratios=[2, 1])
        if dim == 1:
            _density_1d(lower.subplots(), flow, data, samples, lo, hi, names)
        else:
            _pairs(lower, data, samples, lo, hi, k, dim, names)
    _training_curve(top[0], history, metrics)
    _warm_start_panel(top[1], flow.metadata.get("warm_start"), metrics)
    fig.suptitle(_title(metrics), fontsize=14, fontweight="bold")
    fig.savefig(path, dpi=100)


def _column_names(flow) -> list[str]:
    """The data's column names stored by ``gaussplug fit`` (a CSV header), else ``x0, x1, ...``."""
    names = flow.metadata.get("columns")
    if isinstance(names, list) and len(names) == flow.dim and all(isinstance(n, str) for n in names):
        return names
    return [f"x{j}" for j in range(flow.dim)]


def _title(metrics) -> str:
    ds, nll = metrics["dataset"], metrics["nll"]
    final = nll["final"]["data"]
    val = final.get("val")
    score = f"validation NLL {val:.3f}" if val is not None else f"train NLL {final['train']:.3f}"
    return (
        f"gaussplug fit: {ds.get('name') or os.path.basename(ds['source'])} "
        f"({metrics['n_train']} train / {metrics['n_val']} val rows, dim {metrics['dim']}): {score} nats"
    )


def _limits(x: np.ndarray, pad: float = 0.12):
    """Plot limits: the 0.5 and 99.5 percentiles, padded, within half the largest value of ``x``'s dtype.

    (Data near the top of the float range would otherwise put grid points beyond it, which no flow
    can score.)
    """
    wide = np.asarray(x, np.float64)  # (the span of float32 data near its top overflows float32)
    lo, hi = np.percentile(wide, 0.5, axis=0), np.percentile(wide, 99.5, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    big = float(np.finfo(x.dtype).max) / 2 if np.issubdtype(x.dtype, np.floating) else np.inf
    return np.maximum(lo - pad * span, -big), np.minimum(hi + pad * span, big)


def _smooth(y: np.ndarray) -> np.ndarray:
    """Trailing moving average that skips NaN entries (skipped steps)."""
    window = max(1, len(y) // 40)
    ok = np.isfinite(y)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, len(y) + 1)
    start = np.maximum(idx - window, 0)
    count = ccount[idx] - ccount[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[idx] - csum[start]) / np.maximum(count, 1), np.nan)


def _training_curve(ax, history, metrics) -> None:
    initial = metrics["nll"]["initial"]
    init_label = "greedy warm start" if initial["stage"] == "warm_start" else "initial model"
    refs = [v for v in (initial["data"]["train"], initial["data"].get("val")) if v is not None]
    ax.axhline(initial["data"]["train"], color="tab:green", ls="--", lw=1.2, label=f"{init_label} (train)")
    if initial["data"].get("val") is not None:
        ax.axhline(initial["data"]["val"], color="tab:green", ls=":", lw=1.2,
                   label=f"{init_label} (validation)")
    ax.set_title("Fine-tuning: negative log-likelihood", loc="left")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("NLL (nats per row, data units)")
    ax.grid(alpha=0.3)
    if history is None or len(history["loss"]) == 0:
        ax.text(0.5, 0.5, "fine-tuning skipped (--steps 0)", transform=ax.transAxes, ha="center", color="0.4")
        _legend_below(ax)
        return
    loss = np.asarray(history["loss"], np.float64)
    steps = np.arange(1, len(loss) + 1)
    smooth = _smooth(loss)
    ax.plot(steps, loss, color="tab:blue", alpha=0.18, lw=0.6)
    ax.plot(steps, smooth, color="tab:blue", lw=1.8, label="train loss (minibatch, smoothed)")
    val, at = np.asarray(history.get("val_nll") or [], float), np.asarray(history.get("val_step") or [], int)
    if len(val):
        ax.plot(at, val, "o-", color="tab:red", ms=4, lw=1, label="validation NLL")
    best = history.get("best_step")
    if best is not None and history.get("best_val_nll") is not None:
        ax.plot([best], [history["best_val_nll"]], "*", color="gold", mec="k", ms=14, zorder=5,
                label=f"best validation (step {best}) - kept")
    # Show the settled part of the curve, every later validation point and the greedy references;
    # an untrained model's first values may be far off and are left above the frame.
    tail = smooth[len(smooth) // 20 :]
    tail = tail[np.isfinite(tail)]
    others = np.concatenate([val[1:], refs if initial["stage"] == "warm_start" else []])
    others = others[np.isfinite(others)]
    if len(tail) or len(others):
        low = min(np.min(tail, initial=np.inf), np.min(others, initial=np.inf))
        high = max(np.percentile(tail, 97) if len(tail) else -np.inf, np.max(others, initial=-np.inf))
        pad = 0.08 * max(high - low, 1e-3)
        ax.set_ylim(low - pad, high + 3 * pad)
    ax.set_xlim(0, len(loss) * 1.01)
    _legend_below(ax)


def _legend_below(ax) -> None:
    """The legend under the axes, clear of the curves and the reference lines."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3, fontsize=9, frameon=False)


def _warm_start_panel(ax, ws, metrics) -> None:
    ax.set_title("Warm start: NLL after each layer", loc="left")
    ax.set_ylabel("NLL (nats per row, train, data units)")
    ax.grid(alpha=0.3)
    if not ws or not ws.get("log_likelihood"):
        ax.text(0.5, 0.5, "no warm start (--no-warm-start)", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    nll, names, families = -np.asarray(ws["log_likelihood"], np.float64), ws["layer"], ws["family"]
    idx = np.arange(len(nll))
    ok = np.isfinite(nll)
    ax.plot(idx[ok], nll[ok], color="0.6", lw=1, zorder=1)
    for j, fam in enumerate(dict.fromkeys(families)):
        sel = [i for i, f in enumerate(families) if f == fam and ok[i]]
        ax.scatter(idx[sel], nll[sel], s=28, color=f"C{j}", label=fam, zorder=2)
    final = metrics["nll"]["final"]["data"]["train"]
    final = None if final is None or not np.isfinite(final) else float(final)
    if final is not None and metrics["nll"]["final"].get("stage") == "fine_tune":
        ax.axhline(final, color="tab:blue", ls="--", lw=1.2, label="after fine-tuning")
    step = max(1, len(names) // 16)
    ax.set_xticks(idx[::step], names[::step], rotation=60, ha="right", fontsize=8)
    finite = nll[ok]
    ref = finite if final is None else np.append(finite, final)
    if len(ref):
        high = np.percentile(finite, 95) if len(finite) > 4 else ref.max()
        low = ref.min()
        pad = 0.1 * (high - low + 1e-3)
        ax.set_ylim(low - pad, high + pad)
    if not ok.all():  # +inf / NaN: marked at the top edge instead of breaking the axis
        top = ax.get_ylim()[1]
        ax.scatter(idx[~ok], np.full((~ok).sum(), top), marker="^", s=40, color="tab:red", clip_on=False,
                   zorder=3, label="not finite (inf / NaN)")
    ax.legend(loc="upper right", fontsize=9)


def _grid(lo, hi, n: int = 200):
    gx, gy = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    xx, yy = np.meshgrid(gx, gy)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1)


def _density_2d(fig, ax, flow, data, lo, hi, names) -> None:
    xx, yy, pts = _grid(lo, hi)
    lp = log_prob_in_batches(flow, pts).reshape(xx.shape)
    finite = lp[np.isfinite(lp)]
    vmax = finite.max() if len(finite) else 0.0
    vmin = max(np.percentile(finite, 2), vmax - 12.0) if len(finite) else -1.0
    mesh = ax.pcolormesh(xx, yy, np.clip(lp, vmin, vmax), cmap="magma", shading="auto", vmin=vmin, vmax=vmax)
    fig.colorbar(mesh, ax=ax, label="log p(x)", shrink=0.9)
    ax.scatter(data[:800, 0], data[:800, 1], s=5, color="white", edgecolors="black", linewidths=0.3, alpha=0.8)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel=names[0], ylabel=names[1])
    ax.set_title("Learned log-density (white: training data)", loc="left")


def _scatter(ax, pts, lo, hi, color, title, names) -> None:
    ax.scatter(pts[:, 0], pts[:, 1], s=4, color=color, alpha=0.5, lw=0)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel=names[0], ylabel=names[1])
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.3)


def _density_1d(ax, flow, data, samples, lo, hi, names) -> None:
    grid = np.linspace(lo[0], hi[0], 400)[:, None]
    dens = np.exp(log_prob_in_batches(flow, grid))
    bins = np.linspace(lo[0], hi[0], 60)
    ax.hist(data[:, 0], bins=bins, density=True, color=_DATA_COLOR, alpha=0.45, label="training data")
    ax.hist(samples[:, 0], bins=bins, density=True, histtype="step", color=_SAMPLE_COLOR, lw=1.5,
            label="samples")
    ax.plot(grid[:, 0], dens, color="tab:blue", lw=2, label="model density")
    ax.set(xlabel=names[0], ylabel="density", xlim=(lo[0], hi[0]))
    ax.set_title("Learned density, data and samples", loc="left")
    ax.legend()


def _pairs(subfig, data, samples, lo, hi, k, dim, names) -> None:
    axes = subfig.subplots(k, k, squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if i == j:
                bins = np.linspace(lo[i], hi[i], 40)
                ax.hist(data[:, i], bins=bins, density=True, color=_DATA_COLOR, alpha=0.45, label="data")
                ax.hist(samples[:, i], bins=bins, density=True, histtype="step", color=_SAMPLE_COLOR,
                        lw=1.5, label="samples")
                ax.set_yticks([])
                ax.set_xlim(lo[i], hi[i])
            else:
                ax.scatter(data[:, j], data[:, i], s=2, color=_DATA_COLOR, alpha=0.35, lw=0, label="data")
                ax.scatter(samples[:, j], samples[:, i], s=2, color=_SAMPLE_COLOR, alpha=0.35, lw=0,
                           label="samples")
                ax.set(xlim=(lo[j], hi[j]), ylim=(lo[i], hi[i]))
            ax.tick_params(labelsize=7)
            if i == k - 1:
                ax.set_xlabel(names[j])
            if j == 0:
                ax.set_ylabel(names[i])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    subfig.legend(handles, labels, loc="outside upper right", ncols=2, fontsize=9, markerscale=4)
    shown = f"first {k} of {dim} dimensions" if dim > k else f"all {dim} dimensions"
    subfig.suptitle(f"Samples (orange) against training data (grey): {shown}", fontsize=11, x=0.01, ha="left")
