"""The generic warm-start engine: fit each layer greedily, push data forward."""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from gaussplug._data import as_data
from gaussplug._errors import DataError, FitError
from gaussplug._flow import Flow, as_key, build_flow
from gaussplug._runtime import standard_normal_log_prob

__all__ = ["WarmStartWarning", "fit_rbig", "warm_start"]


class WarmStartWarning(UserWarning):
    """A greedy step lowered the likelihood (the family's fit should not)."""


def _struct(tree):
    return jax.tree.map(lambda a: (tuple(jnp.shape(a)), jnp.dtype(jnp.asarray(a).dtype).name), tree)


def _checked_fit(lr, current, fitted):
    try:
        fitted = {m: dict(leaves) for m, leaves in dict(fitted).items()}
    except Exception as err:
        raise FitError(
            f"Layer {lr.name!r} (family {lr.family.name!r}): fit returned {type(fitted).__name__}; "
            "expected a Haiku params mapping."
        ) from err
    want, got = _struct(current), _struct(jax.tree.map(jnp.asarray, fitted))
    if want != got:
        raise FitError(
            f"Layer {lr.name!r} (family {lr.family.name!r}): fit returned params of another structure. "
            f"Expected {want}; got {got}."
        )
    fitted = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), fitted, current)
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(fitted)):
        raise FitError(f"Layer {lr.name!r} (family {lr.family.name!r}): fit returned NaN or inf params.")
    return fitted


def warm_start(flow: Flow, x, *, key=0, max_fit_samples: int | None = None, progress: bool = True) -> Flow:
    """Fit every layer greedily, in data-to-latent order (iterative Gaussianization).

    For each layer, the family's ``fit`` sees the data arriving at that layer
    and returns new params; the data is then pushed forward through the fitted
    layer. Families without ``fit`` keep their params. Works for any
    registered family, third-party ones included.

    Args:
      flow: The flow to initialise.
      x: Training data, shape ``(n, dim)``.
      key: Int seed or PRNG key passed (folded per layer) to each ``fit``.
      max_fit_samples: Fit on a random subsample of at most this many rows
        (the per-layer report still uses all rows).
      progress: Show a progress bar.

    Returns:
      A new flow whose ``metadata["warm_start"]`` (also ``flow.warm_start_history``
      via :func:`warm_start_history`) records, per layer, the mean
      log-likelihood of ``x`` under the flow so far and the layer's mean log-det.

    Raises:
      DataError: ``x`` has the wrong shape or non-finite values.
      FitError: A family's fit returned params of the wrong structure, or
        NaN/inf, or the fitted layer maps the data to NaN/inf.

    Example:
      >>> import gaussplug, numpy as np
      >>> from gaussplug import specs
      >>> x = np.random.default_rng(0).standard_t(4, size=(500, 2))
      >>> flow = gaussplug.warm_start(gaussplug.build_flow(specs.gaussianization_flow(2, n_layers=2)),
      ...                             x, progress=False)
      >>> ll = flow.metadata["warm_start"]["log_likelihood"]
      >>> bool(ll[-1] > ll[0])
      True
    """
    x = as_data(x, flow.dim, min_rows=2)
    key = as_key(key)
    runtime = flow.runtime
    params = flow.params
    n = x.shape[0]
    fit_idx = None
    if max_fit_samples is not None:
        if not isinstance(max_fit_samples, int) or isinstance(max_fit_samples, bool) or max_fit_samples < 2:
            raise ValueError(f"max_fit_samples: expected an integer >= 2 or None; got {max_fit_samples!r}.")
        if n > max_fit_samples:
            sub_key = jax.random.fold_in(key, 2**31 - 1)
            fit_idx = np.sort(np.asarray(jax.random.choice(sub_key, n, (max_fit_samples,), False)))
    cum_log_det = jnp.zeros(n, x.dtype)
    start_ll = float(jnp.mean(standard_normal_log_prob(x)))
    history = {
        "layer": [],
        "family": [],
        "fitted": [],
        "log_likelihood": [],
        "log_det": [],
        "fit_seconds": [],
        "initial_log_likelihood": start_ll,
        "n_rows": int(n),
        "n_fit_rows": int(n if fit_idx is None else len(fit_idx)),
    }
    previous = start_ll
    bar = _bar(len(runtime.layers), progress)
    for i, lr in enumerate(runtime.layers):
        t0 = time.perf_counter()
        fitted = lr.family.fit is not None
        if fitted:
            x_fit = np.asarray(x if fit_idx is None else x[fit_idx])
            new = lr.family.fit(x_fit, params[lr.name], key=jax.random.fold_in(key, i), **lr.options)
            params[lr.name] = _checked_fit(lr, params[lr.name], new)
        # Push the data forward in equal row chunks (one compilation; bounded intermediates for large n),
        # into host buffers; the last chunk is shifted back to end at row n.
        rows = min(n, max(1, (1 << 22) // flow.dim))
        y = log_det = None
        for start in [*range(0, n - rows, rows), n - rows]:
            y_c, log_det_c = runtime.layer_forward(lr.name, params[lr.name], x[start : start + rows])
            if y is None:
                y, log_det = np.empty((n, flow.dim), y_c.dtype), np.empty(n, log_det_c.dtype)
                base = np.empty(n, y_c.dtype)
            y[start : start + rows], log_det[start : start + rows] = y_c, log_det_c
            base[start : start + rows] = standard_normal_log_prob(y_c)
        if not (bool(np.isfinite(y).all()) and bool(np.isfinite(log_det).all())):
            raise FitError(
                f"Layer {lr.name!r} (family {lr.family.name!r}) maps the warm-start data to NaN/inf; "
                "its fit or its bijector is not numerically safe on this data."
            )
        x = y
        cum_log_det = cum_log_det + log_det
        ll = float(jnp.mean(base + cum_log_det))
        if fitted and ll < previous - 1e-4 * (1 + abs(previous)):
            warnings.warn(
                f"warm_start: layer {lr.name!r} ({lr.family.name}) lowered the mean log-likelihood "
                f"from {previous:.4f} to {ll:.4f}.",
                WarmStartWarning,
                stacklevel=2,
            )
        previous = ll
        history["layer"].append(lr.name)
        history["family"].append(lr.family.name)
        history["fitted"].append(fitted)
        history["log_likelihood"].append(ll)
        history["log_det"].append(float(jnp.mean(log_det)))
        history["fit_seconds"].append(time.perf_counter() - t0)
        if bar is not None:
            bar.set_postfix(layer=lr.name, loglik=f"{ll:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    metadata = {**flow.metadata, "warm_start": history}
    return flow.replace(params=params, metadata=metadata)


def warm_start_history(flow: Flow) -> dict | None:
    """The per-layer warm-start record of ``flow``, or None if it was not warm-started."""
    return flow.metadata.get("warm_start")


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="warm start", unit="layer", leave=False)


def fit_rbig(
    x,
    *,
    n_layers: int | str = 8,
    n_components: int = 8,
    rotation: str = "pca",
    key=0,
    progress: bool = False,
    tol: float | None = None,
    max_layers: int = 50,
    patience: int = 3,
    validation=None,
):
    """Greedy RBIG as a density model in one call, at a fixed or automatically chosen depth.

    Builds :func:`gaussplug.specs.gaussianization_flow` for the data's dimension
    and warm-starts it, so the result can be handed straight to ``fine_tune``.

    With ``n_layers="auto"`` blocks are added one at a time (fit the block,
    push the data forward) until ``patience`` consecutive blocks gain less
    than ``tol``: without ``validation`` the gain is the block's RBIG
    information reduction (the marginal non-Gaussianity its marginal layer
    removes after its rotation, i.e. its drop in ``KL(p || N(0, I))``,
    estimated from m-spacing entropies; Laparra et al. 2011); with
    ``validation`` it is the rise of the held-out mean log-likelihood over
    the best depth so far. The trailing
    non-improving blocks are dropped, so the flow has exactly the structure of
    ``gaussianization_flow(dim, n_layers=chosen)`` and equals
    ``fit_rbig(x_fit, n_layers=chosen)``; ``flow.metadata["depth_selection"]``
    records the curves (``non_gaussianity_reduction`` and ``tc_reduction``, the
    part removed across the rotation, per block; ``fit_log_likelihood`` and
    ``validation_log_likelihood`` per depth, starting at depth 0).

    Args:
      x: Data, shape ``(n, dim)``.
      n_layers: Number of (rotation, marginal) blocks, or ``"auto"``.
      n_components: Mixture components per dimension.
      rotation: ``"pca"`` (default), ``"random"`` or ``"ica"``.
      key: Int seed or PRNG key.
      progress: Show a progress bar.
      tol: ``"auto"`` only: smallest gain per block that counts, in nats.
        Default without validation: the gain a block shows on data with nothing
        left to find (simulated on a Gaussian sample of the same size, and at
        least ``dim (dim - 1) / (2 n)``, twice the total correlation of ``n``
        independent rows by chance); with validation, ``1e-3``.
      max_layers: ``"auto"`` only: most blocks to fit.
      patience: ``"auto"`` only: consecutive non-improving blocks before stopping.
      validation: ``"auto"`` only: ``None`` (RBIG rule), a fraction of ``x`` to
        hold out (seeded by ``key``; the flow is fitted on the rest), or a
        held-out array.

    Returns:
      The fitted :class:`gaussplug.Flow`.

    Raises:
      DataError: ``x`` is not finite data of shape ``(n, dim)``.
      ValueError: Bad ``n_layers``, or ``tol`` / ``validation`` with a fixed depth.

    Example:
      >>> import gaussplug, numpy as np
      >>> x = np.random.default_rng(0).gamma(2.0, size=(400, 3))
      >>> flow = gaussplug.fit_rbig(x, n_layers=2)
      >>> flow.layer_names[:2]
      ('0_householder', '1_mixture_cdf')
      >>> auto = gaussplug.fit_rbig(x, n_layers="auto", patience=2)
      >>> sel = auto.metadata["depth_selection"]
      >>> len(auto.layer_names) == 2 * sel["chosen"]
      True
    """
    from gaussplug.specs import gaussianization_flow

    if np.ndim(x) != 2:
        raise DataError(f"fit_rbig: expected data of shape (n, dim); got shape {np.shape(x)}.")
    x = as_data(x, np.shape(x)[1], min_rows=2)
    if n_layers == "auto":
        from gaussplug._depth import fit_rbig_auto

        return fit_rbig_auto(
            x, n_components=n_components, rotation=rotation, key=key, tol=tol, max_layers=max_layers,
            patience=patience, validation=validation, progress=progress,
        )  # fmt: skip
    if isinstance(n_layers, str):
        raise ValueError(f"n_layers: expected a positive integer or 'auto'; got {n_layers!r}.")
    if tol is not None or validation is not None:
        raise ValueError("fit_rbig: tol and validation apply only with n_layers='auto'.")
    spec = gaussianization_flow(x.shape[1], n_layers=n_layers, n_components=n_components, rotation=rotation)
    flow = build_flow(spec, key=key)
    return warm_start(flow, x, key=key, progress=progress)
