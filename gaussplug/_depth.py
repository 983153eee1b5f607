"""Depth selection for greedy RBIG: add (rotation, marginal) blocks until they stop helping.

Used by :func:`gaussplug.fit_rbig` with ``n_layers="auto"``. Each block is
fitted exactly as the fixed-depth warm start fits it (same data, same
per-layer keys ``fold_in(key, global_layer_index)``), so the auto-selected
flow equals ``fit_rbig(x, n_layers=chosen)`` on the same training rows.

Two stopping rules:

* ``"information_reduction"`` (no validation data; RBIG's rule, Laparra et
  al. 2011): block ``b``'s gain is its information reduction, the marginal
  non-Gaussianity its marginal layer removes after its rotation,
  ``dJ_b = Phi(rotated) - Phi(out)`` with ``Phi(z) = sum_d KL(z_d || N(0,1))``
  from m-spacing entropies. Rotations keep ``KL(p || N(0, I))``, so ``dJ_b``
  is the block's drop in total non-Gaussianity: the drop in total
  correlation across its rotation, ``dI_b = sum_d H(before_d) - sum_d
  H(rotated_d)``, plus whatever marginal non-Gaussianity the previous
  marginal layer left. Fitting stops after ``patience`` consecutive blocks
  with ``dJ_b < tol`` (default :func:`null_tol`); the chosen depth is the
  last block with ``dJ_b >= tol`` (at least 1). Both ``dJ`` and ``dI`` are
  recorded.
* ``"validation"``: block ``b``'s gain is the rise of the held-out mean
  log-likelihood over the best depth so far. Fitting stops after
  ``patience`` consecutive blocks that do not beat the best by more than
  ``tol``; the chosen depth is the best held-out depth (at least 1).
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np

from gaussplug import _interrupt as interrupt
from gaussplug._batching import holdout_rows, validation_rows
from gaussplug._data import as_data, constant_columns_message
from gaussplug._errors import DataError, FitError
from gaussplug._estimators import MIN_ROWS, marginal_entropy
from gaussplug._flow import Flow, build_flow
from gaussplug._keys import as_key
from gaussplug._progress import progress_bar
from gaussplug._scalars import as_scalar, int_at_least, is_number

__all__ = ["fit_rbig_auto", "null_tol"]


def _phi(z) -> float:
    """``sum_d [0.5 E z_d^2 - H(z_d)]``: the marginal KL to N(0, 1) summed over dims, minus a constant."""
    z = np.asarray(z, np.float64)
    return float(np.sum(0.5 * np.mean(z * z, axis=0) - marginal_entropy(z)))


def _fit_block(runtime, init, z, key, b):
    """Fit block ``b`` (global layers ``2b``, ``2b+1``) on ``z`` as the warm start would.

    Returns ``(params, stages)`` with one ``(z_out, log_det, seconds)`` per layer.
    """
    from gaussplug._warm import _call_fit, _checked_fit

    params, stages = {}, []
    for j, lr in enumerate(runtime.layers):
        t0 = time.perf_counter()
        new = _call_fit(lr, np.asarray(z), init[lr.name], jax.random.fold_in(key, 2 * b + j))
        params[lr.name] = _checked_fit(lr, init[lr.name], new)
        z, ld = runtime.layer_forward(lr.name, params[lr.name], z)
        if not (np.all(np.isfinite(np.asarray(z))) and np.all(np.isfinite(np.asarray(ld)))):
            raise FitError(f"Layer '{2 * b + j}_{lr.family.name}' maps the data to NaN/inf (depth selection).")
        stages.append((z, np.asarray(ld, np.float64), time.perf_counter() - t0))
    return params, stages


def _gains(z_in, stages) -> tuple[float, float]:
    """``(dI, dJ)`` of one block: TC removed by its rotation, non-Gaussianity removed by its marginal layer."""
    z_rot, z_out = np.asarray(stages[0][0], np.float64), np.asarray(stages[1][0], np.float64)
    d_tc = float(np.sum(marginal_entropy(z_in)) - np.sum(marginal_entropy(z_rot)))
    return d_tc, _phi(z_rot) - _phi(z_out)


def null_tol(runtime, init, n: int, dim: int, key, dtype, blocks: int = 4) -> float:
    """Default tolerance of the RBIG rule: what a block "gains" on data with nothing left to find.

    Two noise levels, the larger wins:

    * simulated (as RBIG does, Laparra et al.): ``1 + blocks`` blocks are fitted
      to an i.i.d. N(0, I) sample of ``n`` rows (the first absorbs the sample's
      own correlations); the mean plus three standard deviations of the later
      blocks' information reductions (standard deviation floored at
      ``0.1 sqrt(dim / n)``). It tracks the marginal family's small-sample
      optimism.
    * ``dim (dim - 1) / (2 n)``: twice the total correlation that ``n``
      independent rows show by chance. It dominates when ``n`` is small for
      ``dim`` (64-D digits, 1,437 rows), where real data lets the fits chase
      more noise than a Gaussian sample does.
    """
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, 0xFFFFFFFD)))
    z = as_data(np.random.default_rng(seed).standard_normal((n, dim)).astype(dtype), dim)
    gains = []
    for b in range(blocks + 1):
        _, stages = _fit_block(runtime, init, z, jax.random.fold_in(key, 0xFFFFFFFC), b)
        gains.append(_gains(np.asarray(z, np.float64), stages)[1])
        z = stages[1][0]
        interrupt.checkpoint()  # a noise block is fitted: a Ctrl-C in the command line stops here
    g = np.asarray(gains[1:])
    simulated = g.mean() + 3 * max(g.std(ddof=1), 0.1 * math.sqrt(dim / n))
    return float(max(simulated, dim * (dim - 1) / (2 * n)))


def _split(x, validation, key, dim):
    """``(x_fit, x_val)``; a fraction holds out the rows ``fine_tune`` would for the same ``key``."""
    if validation is None:
        return x, None
    n_val = validation_rows(validation, x.shape[0])
    if n_val is None:
        return x, as_data(validation, dim, what="validation", min_rows=1)
    train, val = holdout_rows(key, x.shape[0], n_val)
    return x[train], x[val]


def _mean_ll(z, cum_log_det) -> float:
    z = np.asarray(z, np.float64)
    log_n = -0.5 * np.sum(z * z, axis=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
    return float(np.mean(log_n + cum_log_det))


def fit_rbig_auto(
    x,
    *,
    n_components: int = 8,
    rotation: str = "pca",
    tail_weight: float = 0.0,
    key=0,
    tol: float | None = None,
    max_layers: int = 50,
    patience: int = 3,
    validation=None,
    progress: bool = False,
    return_data: bool = False,
):
    """Greedy RBIG with the number of blocks chosen by a stopping rule (see module docstring).

    Args:
      x: Data, shape ``(n, dim)``, already checked by the caller.
      n_components: Mixture components per dimension.
      rotation: ``"pca"``, ``"random"`` or ``"ica"``.
      tail_weight: The ``mixture_cdf`` layers' ``tail_weight`` option.
      key: Int seed or PRNG key.
      tol: Smallest gain per block that counts (nats). ``None``: :func:`null_tol`
        for the RBIG rule, ``1e-3`` for validation.
      max_layers: Most blocks to fit.
      patience: Consecutive non-improving blocks before stopping.
      validation: ``None`` (RBIG rule), a fraction of ``x`` to hold out, or a
        held-out array.
      progress: Show a progress bar (on a terminal or in a Jupyter notebook; cleared when done).
      return_data: Also return the fit data pushed through the chosen depth.

    Returns:
      A flow with the structure of ``gaussianization_flow(dim, n_layers=chosen)``
      and ``metadata["depth_selection"]`` recording the curves; with
      ``return_data``, the pair ``(flow, data)``.
    """
    from gaussplug.specs import gaussianization_flow

    max_layers, patience = int_at_least("max_layers", max_layers), int_at_least("patience", patience)
    tol, validation = as_scalar(tol), as_scalar(validation)
    if tol is not None and (not is_number(tol) or not math.isfinite(tol) or tol < 0):
        raise ValueError(f"tol: expected a finite number >= 0 (nats per block) or None; got {tol!r}.")
    if isinstance(validation, (bool, np.bool_)):
        raise ValueError(f"validation: expected a fraction in (0, 1), an array or None; got {validation!r}.")
    key = as_key(key)
    dim = x.shape[1]
    if x.shape[0] < MIN_ROWS:  # the entropy estimates' minimum
        raise DataError(f"x: n_layers='auto' needs at least {MIN_ROWS} rows (the entropy estimates); got {x.shape[0]}.")
    message = constant_columns_message(np.asarray(x), "x")
    if message:
        raise DataError(message)
    x_fit, x_val = _split(x, validation, key, dim)
    criterion = "information_reduction" if x_val is None else "validation"
    options = {"n_components": n_components, "rotation": rotation, "tail_weight": tail_weight}
    block = build_flow(gaussianization_flow(dim, n_layers=1, **options), key=key)
    runtime, init = block.runtime, block.params
    if tol is None:
        tol = null_tol(runtime, init, x_fit.shape[0], dim, key, x_fit.dtype) if x_val is None else 1e-3
    tol = float(tol)

    blocks, d_tc, d_ng, fit_ll, val_ll, hist = [], [], [], [], [], _history(x_fit)
    z, cum = x_fit, np.zeros(x_fit.shape[0])
    zv, cum_v = x_val, None if x_val is None else np.zeros(x_val.shape[0])
    fit_ll.append(_mean_ll(z, cum))
    if x_val is not None:
        val_ll.append(_mean_ll(zv, cum_v))
    best, chosen, stale, stopped = -math.inf, 1, 0, "max_layers"
    with progress_bar(max_layers, progress, desc="warm start", unit="block") as bar:
        for b in range(max_layers):
            params, stages = _fit_block(runtime, init, z, key, b)
            gain_tc, gain_ng = _gains(np.asarray(z, np.float64), stages)
            d_tc.append(gain_tc)
            d_ng.append(gain_ng)
            for j, (lr, (y, ld, seconds)) in enumerate(zip(runtime.layers, stages, strict=True)):
                cum = cum + ld
                _record(hist, f"{2 * b + j}_{lr.family.name}", lr.family.name, _mean_ll(y, cum), ld, seconds)
                if x_val is not None:
                    zv, ldv = runtime.layer_forward(lr.name, params[lr.name], zv)
                    cum_v = cum_v + np.asarray(ldv, np.float64)
            z = stages[-1][0]
            blocks.append(params)
            fit_ll.append(hist["log_likelihood"][-1])
            depth = b + 1
            if x_val is None:
                improved = gain_ng >= tol
            else:
                ll = _mean_ll(zv, cum_v)
                val_ll.append(ll if math.isfinite(ll) else -math.inf)
                improved = val_ll[-1] > best + tol
                best = max(best, val_ll[-1]) if improved else best
            if improved:
                chosen = depth
            stale = 0 if improved else stale + 1
            if improved or depth == 1:
                z_chosen = z
            bar.set_postfix(blocks=depth, loglik=f"{fit_ll[-1]:.3f}")
            bar.update(1)
            interrupt.checkpoint()  # the block is fitted and pushed: a Ctrl-C in the command line stops here
            if stale >= patience:
                stopped = "patience"
                break
    selection = {
        "criterion": criterion,
        "tol": tol,
        "patience": patience,
        "max_layers": max_layers,
        "chosen": chosen,
        "n_evaluated": len(blocks),
        "stopped": stopped,
        "tc_reduction": d_tc,
        "non_gaussianity_reduction": d_ng,
        "fit_log_likelihood": fit_ll,
        "validation_log_likelihood": val_ll if x_val is not None else None,
        "n_fit_rows": int(x_fit.shape[0]),
        "n_validation_rows": 0 if x_val is None else int(x_val.shape[0]),
    }
    if stopped == "max_layers":
        _warn_cap(max_layers, patience, chosen, d_ng if x_val is None else np.diff(val_ll).tolist(), x_val is None)
    flow = _assemble(blocks[:chosen], hist, key, dim, options, selection)
    return (flow, z_chosen) if return_data else flow


def _warn_cap(max_layers: int, patience: int, chosen: int, gains, rule: bool) -> None:
    """Warns (at the user's call) that the stopping rule never saw ``patience`` idle blocks within ``max_layers``."""
    from gaussplug._registry import _warn
    from gaussplug._warm import WarmStartWarning

    last = ", ".join(f"{g:.3g}" for g in gains[-3:])
    what = "non-Gaussianity reductions" if rule else "validation log-likelihood gains"
    advice = (
        "Deep greedy stacks fitted on their own training rows can score held-out rows far worse (each block "
        "stretches what the fit did not see): check the held-out likelihood, let held-out rows choose the depth "
        "(validation=0.2), or raise max_layers."
        if rule
        else "The held-out log-likelihood was still rising: raise max_layers."
    )
    _warn(
        f"n_layers='auto': the depth rule did not stop within max_layers={max_layers} blocks (it stops after "
        f"{patience} block{'s' if patience != 1 else ''} without gain; the last blocks' {what}: {last} nats), so "
        f"the depth {chosen} is a cap, not a choice. {advice}",
        WarmStartWarning,
    )


def _history(x):
    return {
        "layer": [], "family": [], "fitted": [], "log_likelihood": [], "log_det": [], "fit_seconds": [],
        "initial_log_likelihood": _mean_ll(x, np.zeros(x.shape[0])),
        "n_rows": int(x.shape[0]), "n_fit_rows": int(x.shape[0]),
    }  # fmt: skip


def _record(hist, name, family, ll, log_det, seconds):
    hist["layer"].append(name)
    hist["family"].append(family)
    hist["fitted"].append(True)
    hist["log_likelihood"].append(ll)
    hist["log_det"].append(float(np.mean(np.asarray(log_det, np.float64))))
    hist["fit_seconds"].append(seconds)


def _assemble(blocks, hist, key, dim, options, selection) -> Flow:
    from gaussplug.specs import gaussianization_flow

    chosen = len(blocks)
    spec = gaussianization_flow(dim, n_layers=chosen, **options)
    flow = build_flow(spec, key=key)
    params = flow.params
    for b, block in enumerate(blocks):
        for j, (name, p) in enumerate(block.items()):
            params[f"{2 * b + j}_{name.split('_', 1)[1]}"] = p
    n_keep = 2 * chosen
    warm = {k: (v[:n_keep] if isinstance(v, list) else v) for k, v in hist.items()}
    return flow.replace(params=params, metadata={"warm_start": warm, "depth_selection": selection})
