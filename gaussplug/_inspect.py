"""Layer-wise inspection of a flow: the data after every layer and how Gaussian it is.

:func:`pushforward` runs the data through the flow once and keeps every
intermediate; :func:`inspect` turns that into an :class:`InspectionReport`
with one row per layer (``input`` first).

What the report estimates (all in nats, means over the rows of ``x``):

* ``log_det``: the layer's mean log |det J|.
* ``log_likelihood``: ``mean(log N(x_k; 0, I) + sum_{j<=k} log_det_j)``, the
  mean log-likelihood of ``x`` if the flow stopped after layer ``k``.
* ``negentropy``: ``sum_d [0.5 log(2 pi e var_d) - H(x_k,d)]``, the marginal
  non-Gaussianity of shape, with ``H`` the Vasicek-Ebrahimi m-spacing
  estimate (see ``gaussplug._estimators``).
* ``moment_kl``: ``sum_d KL(N(mean_d, var_d) || N(0, 1))``, the marginal
  mismatch in mean and variance.
* ``total_correlation``: ``TC(x_k) = sum_d H(x_k,d) - H(x_k)``. The joint
  entropies follow the change of variables, ``H(x_k) = H(x) + sum_{j<=k}
  mean(log_det_j)``, so only ``H(x)`` is unknown. It is set to the largest
  value for which every stage satisfies ``TC(x_k) >= TC_G(x_k)``, the
  Gaussian-copula total correlation (a lower bound on TC, exact for Gaussian
  copulas): the column is therefore a lower bound on the true TC, tight
  where some stage (usually the output of a well-fitted flow) has a Gaussian
  copula. A rotation changes the column by exactly the RBIG information
  reduction ``sum_d H(before_d) - sum_d H(after_d)``; a marginal layer leaves
  the true TC unchanged, so a change there is estimation error (the
  marginal entropy estimator vs. the layer's training log-det). For
  one-dimensional data it is 0 at every stage, by definition.
* ``non_gaussianity``: ``negentropy + moment_kl + total_correlation``, i.e.
  ``KL(p_k || N(0, I))``. It equals ``-log_likelihood`` plus a constant, so
  it is exactly flat across rotations while they trade marginal
  non-Gaussianity for total correlation; marginal layers lower it. (For
  one-dimensional data, where TC is 0, it is ``negentropy + moment_kl``,
  which follows ``-log_likelihood`` up to the entropy estimator's error.)
* ``tc_gaussian``: ``TC_G(x_k)``, the model-free Gaussian-copula lower bound,
  for comparison.
* ``ks_max``: the largest Kolmogorov-Smirnov statistic of a marginal vs N(0, 1).
* ``mean_norm`` and ``cov_dist``: ``||mean||`` and ``||cov - I||_F``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gaussplug import _estimators as est
from gaussplug._data import as_data
from gaussplug._flow import Flow, require_flow
from gaussplug._runtime import Runtime

__all__ = ["InspectionReport", "Pushforward", "inspect", "pushforward", "run_inspect"]

_PUSH_CACHE: weakref.WeakKeyDictionary[Runtime, Any] = weakref.WeakKeyDictionary()
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class Pushforward:
    """The data after every layer of a flow.

    Attributes:
      names: ``("input", *flow.layer_names)``.
      data: Array ``(n_layers + 1, n, dim)``; ``data[0]`` is the input.
      log_dets: Array ``(n_layers, n)``; row ``i`` is layer ``i``'s log |det J|.
    """

    names: tuple[str, ...]
    data: jax.Array
    log_dets: jax.Array

    def __getitem__(self, name: str) -> jax.Array:
        """The data leaving the layer called ``name`` (``"input"`` for the input)."""
        try:
            return self.data[self.names.index(name)]
        except ValueError:
            raise KeyError(f"No layer named {name!r}; names are {list(self.names)}.") from None

    def __len__(self) -> int:
        return len(self.names)

    def as_list(self) -> list[jax.Array]:
        """The stages as a list, input first."""
        return [self.data[i] for i in range(len(self.names))]

    def __repr__(self) -> str:  # names and shapes, not the arrays (a notebook cell shows this)
        names = ", ".join(self.names[:4]) + (f", ... {self.names[-1]}" if len(self.names) > 4 else "")
        return (f"Pushforward({len(self.names)} stages: [{names}], data {tuple(self.data.shape)} "
                f"{self.data.dtype}, log_dets {tuple(self.log_dets.shape)})")


def _push_fn(runtime: Runtime):
    """One jitted function ``(params, x) -> (stages, log_dets)`` per runtime.

    Runs of a repeated block (``runtime.segments``, as the runtime's own
    forward map uses) go through one ``jax.lax.scan`` that also emits every
    intermediate, so compile time does not grow with depth.
    """
    fn = _PUSH_CACHE.get(runtime)
    if fn is not None:
        return fn
    layers = runtime.layers
    segments = getattr(runtime, "segments", None) or tuple((i, 1, 1) for i in range(len(layers)))

    def push(params, x):
        stages, log_dets = [x[None]], []
        for start, period, count in segments:
            block = layers[start : start + period]
            if count == 1:
                for lr in block:
                    x, ld = lr.apply.apply(params[lr.name], x)
                    stages.append(x[None])
                    log_dets.append(jnp.broadcast_to(ld, x.shape[:-1])[None])
                continue
            names = [[layers[start + k * period + j].name for k in range(count)] for j in range(period)]
            stacked = [jax.tree.map(lambda *a: jnp.stack(a), *[params[n] for n in col]) for col in names]

            def body(y, block_params, block=block):
                outs, lds = [], []
                for lr, p in zip(block, block_params, strict=True):
                    y, ld = lr.apply.apply(p, y)
                    outs.append(y)
                    lds.append(jnp.broadcast_to(ld, y.shape[:-1]))
                return y, (jnp.stack(outs), jnp.stack(lds))

            x, (outs, lds) = jax.lax.scan(body, x, stacked)
            stages.append(outs.reshape(count * period, *x.shape))
            log_dets.append(lds.reshape(count * period, *x.shape[:-1]))
        if not log_dets:
            log_dets = [jnp.zeros((0, *x.shape[:-1]), x.dtype)]
        return jnp.concatenate(stages), jnp.concatenate(log_dets)

    fn = _PUSH_CACHE[runtime] = jax.jit(push)
    return fn


def pushforward(flow: Flow, x) -> Pushforward:
    """Push ``x`` through ``flow`` once (one jitted pass), keeping every intermediate.

    Args:
      flow: A :class:`gaussplug.Flow`.
      x: Data, shape ``(n, dim)``.

    Returns:
      A :class:`Pushforward`.

    Example:
      >>> import gaussplug, numpy as np
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"},
      ...                                                   {"family": "householder"}]})
      >>> push = gaussplug.pushforward(flow, np.ones((5, 2)))
      >>> push.names, push.data.shape, push.log_dets.shape
      (('input', '0_standardize', '1_householder'), (3, 5, 2), (2, 5))
      >>> bool(np.allclose(push["1_householder"], flow.forward(np.ones((5, 2)))))
      True
    """
    x = as_data(x, require_flow(flow, "pushforward").dim)
    x = x.astype(jnp.promote_types(x.dtype, flow.dtype))  # layers output the promoted dtype
    data, log_dets = _push_fn(flow.runtime)(flow.params, x)
    return Pushforward(("input", *flow.layer_names), data, log_dets)


_COLUMNS = (
    # key, header, format
    ("layer", "layer", "s"),
    ("family", "family", "s"),
    ("log_det", "log_det", ".3f"),
    ("log_likelihood", "loglik", ".3f"),
    ("negentropy", "negentropy", ".3f"),
    ("moment_kl", "moment_kl", ".3f"),
    ("total_correlation", "TC", ".3f"),
    ("non_gaussianity", "neg+mom+TC", ".3f"),
    ("tc_gaussian", "TC_gauss", ".3f"),
    ("ks_max", "KS_max", ".3f"),
    ("mean_norm", "|mean|", ".3f"),
    ("cov_dist", "|cov-I|_F", ".3f"),
)


@dataclasses.dataclass(frozen=True)
class InspectionReport:
    """Per-layer diagnostics of a flow on some data (row 0 is the input).

    Attributes:
      columns: Column name -> list with one value per row (see the module
        docstring for what each estimates).
      n_rows: Number of samples inspected.
      dim: Data dimension.
    """

    columns: dict[str, list]
    n_rows: int
    dim: int

    def __len__(self) -> int:
        return len(self.columns["layer"])

    def to_dict(self) -> dict[str, list]:
        """A plain dict of lists (a fresh copy), one entry per column."""
        return {k: list(v) for k, v in self.columns.items()}

    def to_json(self, indent: int | None = 2) -> str:
        """The columns plus ``n_rows`` and ``dim`` as a JSON string (non-finite numbers as ``null``: strict JSON)."""
        layers = {k: [_json_number(v) for v in col] for k, col in self.to_dict().items()}
        return json.dumps({"n_rows": self.n_rows, "dim": self.dim, "layers": layers}, indent=indent, allow_nan=False)

    def __str__(self) -> str:
        cells = [[head for _, head, _ in _COLUMNS]]
        for i in range(len(self)):
            row = []
            for key, _, fmt in _COLUMNS:
                value = self.columns[key][i]
                row.append("-" if value is None else format(value, fmt))
            cells.append(row)
        widths = [max(len(r[j]) for r in cells) for j in range(len(_COLUMNS))]
        lines = []
        for r, row in enumerate(cells):
            parts = [
                c.ljust(w) if _COLUMNS[j][2] == "s" else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(parts).rstrip())
            if r == 0:
                lines.append("  ".join("-" * w for w in widths))
        title = f"Flow inspection: {self.n_rows} rows, dim {self.dim} (nats; neg+mom+TC = KL(p || N(0, I)))"
        return "\n".join([title, *lines])

    def __repr__(self) -> str:
        return (f"InspectionReport({len(self)} rows: input and {len(self) - 1} layers; {self.n_rows} samples, "
                f"dim {self.dim}; print() it for the table)")

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """IPython and Jupyter show the table (``str``) for a bare ``report`` cell."""
        printer.text(repr(self) if cycle else str(self))


def _stage_stats(z: np.ndarray) -> dict[str, Any]:
    h = est.marginal_entropy(z)
    mean = z.mean(axis=0)
    cov = np.atleast_2d(np.cov(z, rowvar=False, bias=True))
    return {
        "marginal_entropy": float(np.sum(h)),
        "negentropy": float(np.sum(est.marginal_negentropy(z, entropy=h))),
        "moment_kl": float(np.sum(est.gaussian_kl(z))),
        "tc_gaussian": est.gaussian_copula_tc(z),
        "ks_max": float(np.max(est.ks_normal(z))),
        "mean_norm": float(np.linalg.norm(mean)),
        "cov_dist": float(np.linalg.norm(cov - np.eye(z.shape[1]))),
        "half_sq": float(0.5 * np.mean(np.sum(z * z, axis=1))),
    }


def inspect(flow: Flow, x) -> InspectionReport:
    """Gaussianity diagnostics of the data entering and leaving every layer of ``flow``.

    Args:
      flow: A :class:`gaussplug.Flow`.
      x: Data, shape ``(n, dim)`` with ``n >= 4``.

    Returns:
      An :class:`InspectionReport` with rows ``input, layer 0, layer 1, ...``.

    Example:
      >>> import gaussplug, numpy as np
      >>> x = np.random.default_rng(0).multivariate_normal([0, 0], [[1, .9], [.9, 1]], size=3000)
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}]})
      >>> flow = gaussplug.warm_start(flow, x, progress=False)
      >>> report = gaussplug.inspect(flow, x)
      >>> tc = report.to_dict()["total_correlation"]   # -0.5 log(1 - 0.81) = 0.830 -> 0 by PCA
      >>> round(tc[0], 1), round(tc[1], 1)
      (0.8, 0.0)
      >>> print(str(report).splitlines()[1].split()[:4])
      ['layer', 'family', 'log_det', 'loglik']
    """
    return _inspect(require_flow(flow, "inspect"), x)[0]


def _inspect(flow: Flow, x) -> tuple[InspectionReport, Pushforward]:
    x = as_data(x, flow.dim, min_rows=est.MIN_ROWS)
    push = pushforward(flow, x)
    data = np.asarray(push.data, np.float64)
    mean_ld = np.asarray(push.log_dets, np.float64).mean(axis=1)
    stats = [_stage_stats(z) for z in data]
    d = flow.dim
    cum = np.concatenate([[0.0], np.cumsum(mean_ld)])
    # H(x_k) = H(x) + cum_k; H(x) is the largest value with TC(x_k) >= TC_G(x_k) at every stage
    # (stages with a singular correlation matrix, TC_G = inf, give no usable bound).
    bounds = [s["marginal_entropy"] - s["tc_gaussian"] - c for s, c in zip(stats, cum, strict=True)]
    finite = [b for b in bounds if math.isfinite(b)]
    h_joint = (min(finite) if finite else math.nan) + cum
    families = ["-"] + [lr.family.name for lr in flow.runtime.layers]
    cols: dict[str, list] = {key: [] for key, _, _ in _COLUMNS}
    for k, s in enumerate(stats):
        tc = s["marginal_entropy"] - h_joint[k] if d > 1 else 0.0  # one variable has no dependence to measure
        cols["layer"].append(push.names[k])
        cols["family"].append(families[k])
        cols["log_det"].append(None if k == 0 else float(mean_ld[k - 1]))
        cols["log_likelihood"].append(float(-s["half_sq"] - d * _HALF_LOG_2PI + cum[k]))
        cols["negentropy"].append(s["negentropy"])
        cols["moment_kl"].append(s["moment_kl"])
        cols["total_correlation"].append(float(tc))
        cols["non_gaussianity"].append(float(s["negentropy"] + s["moment_kl"] + tc))
        for key in ("tc_gaussian", "ks_max", "mean_norm", "cov_dist"):
            cols[key].append(s[key])
    return InspectionReport(cols, int(x.shape[0]), d), push


def _json_number(value):
    """``value``, or None for a non-finite float (JSON has no inf or NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _load_data(data_path, dim: int, key: str | None) -> np.ndarray:
    from gaussplug._data_checks import check_no_constant_columns
    from gaussplug._datasets import check_data, load_data

    dataset = load_data(data_path, key=key, min_rows=est.MIN_ROWS)
    x = check_data(dataset.x, os.fspath(data_path), min_rows=est.MIN_ROWS, dim=dim, where=dataset.where)
    check_no_constant_columns(x, os.fspath(data_path), np.float64, where=dataset.where)
    return x


def run_inspect(model_path, data_path, out_dir="gaussplug-inspect", *, key: str | None = None) -> dict[str, Any]:
    """Inspect a saved model on a data file; write ``inspect.txt``, ``inspect.json`` and PNGs.

    Args:
      model_path: A model saved with :func:`gaussplug.save`.
      data_path: A ``.npy`` / ``.npz`` / ``.csv`` data file with the model's dimension.
      out_dir: Output folder (created if missing).
      key: Array name inside an ``.npz`` data file holding several arrays.

    Returns:
      ``{"report": report.to_dict(), "files": [paths written], "n_rows": n, "dim": d}``.
    """
    from gaussplug._inspect_plots import write_plots
    from gaussplug._io import load
    from gaussplug._outputs import check_output_dir

    check_output_dir(out_dir)  # before any work
    flow = load(model_path)
    x = _load_data(data_path, flow.dim, key)
    report, push = _inspect(flow, x)
    os.makedirs(out_dir, exist_ok=True)
    txt, js = os.path.join(out_dir, "inspect.txt"), os.path.join(out_dir, "inspect.json")
    with open(txt, "w", encoding="utf-8") as fh:
        fh.write(str(report) + "\n")
    with open(js, "w", encoding="utf-8") as fh:
        fh.write(report.to_json() + "\n")
    pngs = write_plots(report, out_dir, push=push if flow.dim == 2 else None)
    return {"report": report.to_dict(), "files": [txt, js, *pngs], "n_rows": report.n_rows, "dim": report.dim}
