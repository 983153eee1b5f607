"""The generic warm-start engine: fit each layer greedily, push data forward.

How the data is held and pushed forward (on one device or a mesh) lives in :mod:`gaussplug._warm_data`.
"""

from __future__ import annotations

import contextvars
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from gaussplug import _interrupt as interrupt
from gaussplug import _sharding as shd
from gaussplug._context import set_within
from gaussplug._data import as_data, constant_columns, constant_listing
from gaussplug._errors import DataError, FitError, GaussplugError
from gaussplug._family import FIT_WROTE_INPUT, fit_input, fit_wrote_input
from gaussplug._flow import Flow, build_flow, require_flow
from gaussplug._keys import as_key
from gaussplug._progress import progress_bar
from gaussplug._registry import _warn
from gaussplug._scalars import as_flag, as_scalar, int_at_least, is_int
from gaussplug._warm_data import _OneDevice, _OnMesh

__all__ = ["WarmStartWarning", "fit_rbig", "warm_start"]


class WarmStartWarning(UserWarning):
    """The warm start did something it should not have needed to, or its data look wrong for it.

    A greedy step lowered the likelihood (a family's fit should not); or the data have columns of few
    distinct values, a point mass, constant columns the fit skipped, or no more rows than dimensions.
    The message names the layers or columns and what to do.
    """


def _struct(tree):
    return jax.tree.map(lambda a: (tuple(jnp.shape(a)), jnp.dtype(jnp.asarray(a).dtype).name), tree)


def _call_fit(lr, x, layer_params, key):
    """The layer family's ``fit`` on a read-only view of ``x`` (:func:`gaussplug._family.fit_input`).

    A plugin's own exception is re-raised as :class:`FitError` naming the layer.
    """
    try:
        return lr.family.fit(fit_input(x), layer_params, key=key, **lr.options)
    except GaussplugError:
        raise
    except Exception as err:
        hint = f" ({FIT_WROTE_INPUT})" if fit_wrote_input(err) else ""
        raise FitError(f"{lr.label}: fit raised {type(err).__name__}: {err}{hint}") from err


#: ``fit_rbig(n_layers="auto")`` defaults: most blocks fitted, and consecutive non-improving blocks before stopping.
AUTO_MAX_LAYERS = 50
AUTO_PATIENCE = 3

#: Rows of the data's head in which :func:`_warn_discrete_columns` counts each column's distinct values.
_DISCRETE_ROWS = 8192

#: While fit_rbig runs warm_start: the name and extra stack depth warm_start's discrete-column warning takes, so
#: that it names fit_rbig, at the caller's line.
_DISCRETE_CALLER = contextvars.ContextVar("gaussplug_discrete_caller", default=("warm_start", 0))


def discrete_warning_as(caller: str, depth: int = 0):
    """Within the block, ``warm_start``'s discrete-column warning names ``caller``, ``depth`` frames further out.

    ``caller=""``: no such warning (the caller checked the data itself).
    """
    return set_within(_DISCRETE_CALLER, (caller, depth))


#: The option that subsamples the fit rows, and what to do when layers fitted on a subsample lower the likelihood.
_FIT_ROWS_ADVICE = contextvars.ContextVar("gaussplug_fit_rows_advice", default=(
    "max_fit_samples", "Fit on more rows (a larger max_fit_samples, or None), or bound the mixture layers' tails "
    "with tail_weight > 0 (user guide, 'Tails')."))


def fit_rows_advice_as(option: str, advice: str):
    """Within the block, ``warm_start``'s warnings name ``option`` for ``max_fit_samples`` and end with ``advice``.

    ``gaussplug fit`` says ``--max-fit-samples`` and ``--tail-weight``, say.
    """
    return set_within(_FIT_ROWS_ADVICE, (option, advice))


def _warn_discrete_columns(x, caller: str, stacklevel: int) -> None:
    """Warns (:class:`WarmStartWarning`) of float columns of few distinct values, or with a point mass."""
    from gaussplug._data_checks import discrete_columns_message, point_mass_columns_message

    head = np.asarray(x[:_DISCRETE_ROWS])
    for check in (discrete_columns_message, point_mass_columns_message):
        message = check(head, f"{caller}: x")
        if message:
            warnings.warn(message, WarmStartWarning, stacklevel=stacklevel + 1)


def _warn_discrete(x, caller: str) -> bool:
    """Whether ``x`` has an integer or bool dtype; if so, a :class:`WarmStartWarning` at the public caller's line.

    Float columns that take a few distinct values are checked by :func:`_warn_discrete_columns` once ``x``
    is known to be finite data.
    """
    kind = getattr(getattr(x, "dtype", None), "kind", "f")
    discrete = kind in "biu"
    if discrete:
        warnings.warn(
            f"{caller}: x has {'a bool' if kind == 'b' else 'an integer'} dtype, but a flow is a continuous "
            "density: fitted to discrete values its density spikes at them and the training likelihood grows "
            "without bound. Add uniform dequantisation noise first (x + U[0, 1) for integers).",
            WarmStartWarning,
            stacklevel=3,
        )
    return discrete


#: A column narrower than this many float eps of the rows' RMS norm is lost in the rounding that rotations mix in.
_NARROW_EPS = 1000


def _warn_narrow_columns(x, dtype, rows: int = 1 << 16) -> None:
    """A :class:`WarmStartWarning` naming columns whose spread is near the rows' rounding level (on the first rows)."""
    head = np.asarray(x[:rows], np.float64)
    std = head.std(axis=0)
    rms = float(np.sqrt(np.sum(head.mean(axis=0) ** 2 + std**2)))
    narrow = np.flatnonzero((std > 0) & (std < _NARROW_EPS * np.finfo(dtype).eps * rms))
    if narrow.size:
        listed = ", ".join(f"{int(j)} (std {std[j]:.3g})" for j in narrow[:5]) + (" ..." if narrow.size > 5 else "")
        _warn(
            f"warm_start: x's column index {listed} {'has' if narrow.size == 1 else 'have'} a spread below "
            f"{_NARROW_EPS} {np.dtype(dtype).name} eps of the rows' RMS norm ({rms:.3g}). Rotations mix the "
            "rounding errors of the wide columns into the narrow ones, so their density is fitted poorly, and not "
            "at all below 64 eps (the mixture layers then leave them a unit-scale shift). Standardise the columns "
            "first, or put a standardize layer first in the spec.",
            WarmStartWarning,
        )


def _leaf_struct(a):
    """``(shape, dtype name)`` of one params leaf, or a description of a leaf that is not a numeric array."""
    try:
        arr = jnp.asarray(a)
    except Exception:
        return f"<not an array: {type(a).__name__} {a!r:.40}>"
    return tuple(arr.shape), arr.dtype.name


def _checked_fit(lr, current, fitted):
    """The fitted params, checked against the current ones and cast to their dtypes, or :class:`FitError`."""
    want = _struct(current)
    try:
        fitted = {m: dict(leaves) for m, leaves in dict(fitted).items()}
    except Exception as err:
        raise FitError(
            f"{lr.label}: fit returned {type(fitted).__name__} {fitted!r:.80}; expected a Haiku params mapping "
            f"{{module: {{param: array}}}} of the structure it was given: {want}."
        ) from err
    got = jax.tree.map(_leaf_struct, fitted)
    if want != got:
        raise FitError(f"{lr.label}: fit returned params of another structure. Expected {want}; got {got}.")
    fitted = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), fitted, current)
    bad = [f"{m}/{k}" for m, leaves in fitted.items() for k, a in leaves.items() if not bool(jnp.all(jnp.isfinite(a)))]
    if bad:
        raise FitError(f"{lr.label}: fit returned NaN or inf params ({', '.join(bad)}).")
    return fitted


def warm_start(
    flow: Flow, x, *, key=0, max_fit_samples: int | None = None, progress: bool = True, devices=None
) -> Flow:
    """Fit every layer greedily, in data-to-latent order (iterative Gaussianization).

    For each layer, the family's ``fit`` sees the data arriving at that layer
    and returns new params; the data is then pushed forward through the fitted
    layer. Families without ``fit`` keep their params. Works for any
    registered family, third-party ones included.

    **Devices.** With ``devices`` naming more than one device, the data is
    split by rows across a mesh with a ``"data"`` axis (padded rows masked
    out) and pushed forward through each fitted layer there, each device
    mapping its own rows. Each family's ``fit`` still receives the rows as a
    host array and can read the mesh from :func:`gaussplug.fit_mesh`: the
    mixture-CDF fits split their passes over the rows across the devices and
    add the per-device statistics with collectives (``psum``/``pmax``). The
    result equals the one-device warm start up to float rounding. Under
    ``jax.distributed`` (``devices="all"``) each process passes its own rows,
    the statistics are reduced over every process's rows and every process
    gets the same flow. See ``docs/scaling.md``.

    Args:
      flow: The flow to initialise.
      x: Training data, shape ``(n, dim)``: an array or a memory map (with
        ``devices``, read on the host and never copied whole to one device).
        Under ``jax.distributed``: this process's rows.
      key: Int seed or PRNG key passed (folded per layer) to each ``fit``.
      max_fit_samples: Fit on a random subsample of at most this many rows
        (the per-layer report still uses all rows, and a layer that gives
        any row a log-likelihood of ``-inf`` stops the warm start with
        :class:`FitError`). Under ``jax.distributed``: of each process's rows.
      progress: Show a progress bar (on a terminal or in a Jupyter notebook; cleared when done).
      devices: ``None`` (default) or ``1``: the default device (the plain
        path); ``"all"``: every device (of every process); an int ``k``: the
        first ``k`` local devices; a sequence of ``jax.Device``; or a
        ``jax.sharding.Mesh`` with a ``"data"`` axis (or a single axis), as
        for :func:`gaussplug.fine_tune`.

    Returns:
      A new flow whose ``metadata["warm_start"]`` (also returned by
      ``gaussplug.warm_start_history(flow)``) records, per layer, the mean
      log-likelihood of ``x`` under the flow so far and the layer's mean log-det.
      Other metadata is kept, except a ``"fine_tune"`` summary: it described
      params that the fits have now replaced.

    Raises:
      DataError: ``x`` has the wrong shape or non-finite values.
      FitError: A family's fit returned params of the wrong structure, or
        NaN/inf, or the fitted layer maps the data to NaN/inf, or it turns a
        finite log-likelihood of ``x`` into ``-inf`` (a row's density
        underflows, e.g. a row far outside a ``max_fit_samples`` subsample).
      TypeError: ``flow`` is not a Flow, or ``devices`` of none of the accepted types.
      ValueError: A bad ``max_fit_samples``, ``devices`` or ``progress`` (a bool).

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
    require_flow(flow, "warm_start")
    progress = as_flag("progress", progress)
    mesh = shd.warm_mesh(devices)
    integer = _warn_discrete(x, "warm_start")
    x = as_data(x, flow.dim, min_rows=2, numpy=True)  # a float32 array or memmap is not copied
    caller, depth = _DISCRETE_CALLER.get()
    if not integer and caller:
        _warn_discrete_columns(x, caller, stacklevel=2 + depth)
    key = as_key(key)
    runtime = flow.runtime
    params = flow.params
    n = x.shape[0]
    fit_idx = None
    max_fit_samples = int_at_least("max_fit_samples", max_fit_samples, 2, none_ok=True)
    if max_fit_samples is not None:
        if n > max_fit_samples:
            sub_key = jax.random.fold_in(key, 2**31 - 1)
            fit_idx = np.sort(np.asarray(jax.random.choice(sub_key, n, (max_fit_samples,), False)))
    n_fit = n if fit_idx is None else len(fit_idx)
    if n_fit <= flow.dim:
        warnings.warn(
            f"warm_start: fitting on {n_fit} rows of {flow.dim}-D data; they span at most {n_fit - 1} dimensions, "
            "so the fit cannot resolve the density (the mixture layers leave directions without spread at unit "
            "scale; expect very low log-likelihoods off the data). Use more rows.",
            WarmStartWarning,
            stacklevel=2,
        )
    if mesh is None and n > flow.dim:  # (on a mesh x may be one process's rows, constant only locally)
        constant = constant_columns(x)
        if constant.size:
            warnings.warn(
                f"warm_start: x has constant column(s) at column index {constant_listing(x, constant)}. A density "
                "over a constant column is degenerate (a point mass): the fit leaves it a unit-scale shift, so "
                "log-likelihoods are finite but say nothing about that column. Drop it (gaussplug fit refuses such "
                "data).",
                WarmStartWarning,
                stacklevel=2,
            )
    if runtime.layers and runtime.layers[0].family.name != "standardize":
        _warn_narrow_columns(x, flow.dtype)
    data = _OneDevice(x) if mesh is None else _OnMesh(x, mesh)
    start_ll = data.initial_log_likelihood()
    history = {
        "layer": [],
        "family": [],
        "fitted": [],
        "log_likelihood": [],
        "log_det": [],
        "fit_seconds": [],
        "initial_log_likelihood": start_ll,
        "n_rows": int(data.n),
        "n_fit_rows": int(n_fit if mesh is None else shd.agree(n_fit, "sum", mesh)),
    }
    previous = start_ll
    lowered: list[str] = []  # warned about once, after the bar is gone
    with progress_bar(len(runtime.layers), progress, desc="warm start", unit="layer") as bar:
        for i, lr in enumerate(runtime.layers):
            t0 = time.perf_counter()
            fitted = lr.family.fit is not None
            if fitted:
                with shd.fitting_on(mesh):
                    new = _call_fit(lr, data.fit_rows(fit_idx), params[lr.name], jax.random.fold_in(key, i))
                params[lr.name] = _checked_fit(lr, params[lr.name], new)
            bad_rows, ll, mean_log_det = data.push(runtime, lr, params[lr.name])
            if bad_rows is not None:
                raise FitError(
                    f"{lr.label} maps the warm-start data to NaN/inf{bad_rows}; its fit or its bijector is not "
                    "numerically safe on this data."
                )
            if not np.isfinite(ll) and np.isfinite(previous):
                raise FitError(_underflow_message(lr, previous, ll, n_fit, int(data.n)))
            if fitted and ll < previous - 1e-4 * (1 + abs(previous)):
                lowered.append(f"{lr.name!r} ({lr.family.name}) {previous:.4f} -> {ll:.4f}")
            previous = ll
            history["layer"].append(lr.name)
            history["family"].append(lr.family.name)
            history["fitted"].append(fitted)
            history["log_likelihood"].append(ll)
            history["log_det"].append(mean_log_det)
            history["fit_seconds"].append(time.perf_counter() - t0)
            bar.set_postfix(layer=lr.name, loglik=f"{ll:.3f}")
            bar.update(1)
            interrupt.checkpoint()  # the layer's fit and push are done: a Ctrl-C in the command line stops here
    if lowered:
        warnings.warn(_lowered_message(lowered, history["n_fit_rows"], history["n_rows"]), WarmStartWarning,
                      stacklevel=2)
    kept = {k: v for k, v in flow.metadata.items() if k != "fine_tune"}  # it described the replaced params
    metadata = {**kept, "warm_start": history}
    return flow.replace(params=params, metadata=metadata)


def _lowered_message(lowered: list[str], n_fit: int, n: int) -> str:
    """One warning for the fitted layers that lowered the mean log-likelihood of the warm-start rows."""
    shown = "; ".join(lowered[:5]) + (f"; and {len(lowered) - 5} more" if len(lowered) > 5 else "")
    layers = "a fitted layer" if len(lowered) == 1 else f"{len(lowered)} fitted layers"
    if n_fit < n:
        option, advice = _FIT_ROWS_ADVICE.get()
        why = (f" The fits saw a subsample of {n_fit} of the {n} rows ({option}): the other rows meet each "
               f"fit's extrapolation, which stretches rows beyond its range. {advice}")
    else:
        why = (" Each fit saw all the rows, so the family's fit did worse on them than the params it replaced; "
               "built-in fits never do (they keep the identity where a fit would lose), so check that family's fit.")
    return f"warm_start: {layers} lowered the mean log-likelihood of the rows (per row, nats): {shown}.{why}"


def _underflow_message(lr, previous: float, ll: float, n_fit: int, n: int) -> str:
    """Why a layer that turned a finite mean log-likelihood into ``ll`` (-inf or NaN) stops the warm start."""
    subsample = (
        f" The fits saw a subsample of {n_fit} of the {n} rows ({_FIT_ROWS_ADVICE.get()[0]}): rows outside its "
        "range are stretched by every layer fitted without them."
        if n_fit < n
        else ""
    )
    return (
        f"{lr.label}: expected a finite log-likelihood for every warm-start row; the mean went from {previous:.4g} "
        f"to {ll}: the layer maps some rows so far out that the standard-normal density underflows.{subsample} "
        "Fit on more rows, standardise the data, or bound the mixture layers' tails with tail_weight > 0 "
        "(user guide, 'Tails')."
    )


def warm_start_history(flow: Flow) -> dict | None:
    """The per-layer warm-start record of ``flow``, or None if it was not warm-started.

    The record is a dict of lists, one entry per layer (``layer``, ``family``,
    ``fitted``, ``log_likelihood``: the data's mean log-likelihood under the
    flow up to that layer, ``log_det``, ``fit_seconds``), plus
    ``initial_log_likelihood``, ``n_rows`` and ``n_fit_rows``. The per-layer
    lists make a table: ``pandas.DataFrame({k: v for k, v in h.items() if
    isinstance(v, list)})``.

    Example:
      >>> import gaussplug, numpy as np
      >>> flow = gaussplug.fit_rbig(np.random.default_rng(0).normal(size=(500, 2)), n_layers=1, n_components=2)
      >>> h = gaussplug.warm_start_history(flow)
      >>> h["layer"], h["n_rows"]
      (['0_householder', '1_mixture_cdf'], 500)
      >>> print(gaussplug.warm_start_history(gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2))))
      None
    """
    return require_flow(flow, "warm_start_history").metadata.get("warm_start")


def fit_rbig(
    x,
    *,
    n_layers: int | str = 8,
    n_components: int = 8,
    rotation: str = "pca",
    tail_weight: float = 0.0,
    key=0,
    progress: bool = False,
    tol: float | None = None,
    max_layers: int | None = None,
    patience: int | None = None,
    validation=None,
    devices=None,
) -> Flow:
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
      tail_weight: Weight of a fixed ``N(0, 1)`` component in every mixture CDF
        (the ``mixture_cdf`` option; ``0``: none). See the user guide, "Tails".
      key: Int seed or PRNG key.
      progress: Show a progress bar (on a terminal or in a Jupyter notebook; cleared when done).
      tol: ``"auto"`` only: smallest gain per block that counts, in nats.
        Default without validation: the gain a block shows on data with nothing
        left to find (simulated on a Gaussian sample of the same size, and at
        least ``dim (dim - 1) / (2 n)``, twice the total correlation of ``n``
        independent rows by chance); with validation, ``1e-3``.
      max_layers: ``"auto"`` only: most blocks to fit (default 50).
      patience: ``"auto"`` only: consecutive non-improving blocks before stopping
        (default 3).
      validation: ``"auto"`` only: ``None`` (RBIG rule), a fraction of ``x`` to
        hold out (seeded by ``key``; the flow is fitted on the rest, and
        ``fine_tune(flow, x, validation=fraction, key=key)`` holds out the same
        rows), or a held-out array.
      devices: As for :func:`warm_start` (``None``: one device). With
        ``"auto"`` the fits' row statistics use the devices but the data is
        pushed forward on one device, and a mesh spanning several processes
        is not supported.

    Returns:
      The fitted :class:`gaussplug.Flow`.

    Raises:
      DataError: ``x`` is not finite data of shape ``(n, dim)``.
      ValueError: Bad ``n_layers``, ``n_components``, ``rotation``,
        ``tail_weight``, ``progress`` or ``devices``; ``tol``, ``validation``,
        ``max_layers`` or ``patience`` with a fixed depth (they choose the
        depth); ``"auto"`` on devices of several processes; or an int
        ``key`` outside ``[0, 2**32)``.
      TypeError: A ``key`` that is neither an int nor a ``jax.random`` key.
      FitError: As for :func:`warm_start`.

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
    progress = as_flag("progress", progress)
    if _DISCRETE_CALLER.get()[0] == "":  # a caller that checked the data itself (gaussplug fit): no data warnings
        discrete = ("", 0)
    elif _warn_discrete(x, "fit_rbig"):  # converted here, so that warm_start does not warn again
        x = as_data(x, np.shape(x)[1], min_rows=2, numpy=True)
        discrete = ("", 0)  # (and not about its columns: one warning says to dequantise)
    else:
        discrete = ("fit_rbig", 1)
    n_layers = as_scalar(n_layers)
    n_layers = int(n_layers) if is_int(n_layers) else n_layers
    if n_layers == "auto":
        from gaussplug._depth import fit_rbig_auto

        mesh = shd.warm_mesh(devices)
        if shd.spans_processes(mesh):
            raise ValueError("fit_rbig: n_layers='auto' is not supported on devices of several processes.")
        x = as_data(x, np.shape(x)[1], min_rows=2)
        if discrete[0]:
            _warn_discrete_columns(x, "fit_rbig", stacklevel=2)
        with shd.fitting_on(mesh):
            return fit_rbig_auto(
                x, n_components=n_components, rotation=rotation, tail_weight=tail_weight, key=key, tol=tol,
                max_layers=AUTO_MAX_LAYERS if max_layers is None else max_layers,
                patience=AUTO_PATIENCE if patience is None else patience, validation=validation, progress=progress,
            )  # fmt: skip
    if isinstance(n_layers, str):
        raise ValueError(f"n_layers: expected a positive integer or 'auto'; got {n_layers!r}.")
    depth_options = {"tol": tol, "validation": validation, "max_layers": max_layers, "patience": patience}
    given = [name for name, value in depth_options.items() if value is not None]
    if given:
        raise ValueError(
            f"fit_rbig: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} only with n_layers='auto' "
            f"(they choose the depth); got n_layers={n_layers!r}. Drop {' and '.join(given)}, or pass "
            "n_layers='auto'."
        )
    spec = gaussianization_flow(
        np.shape(x)[1], n_layers=n_layers, n_components=n_components, rotation=rotation, tail_weight=tail_weight
    )
    flow = build_flow(spec, key=key)
    with discrete_warning_as(*discrete):
        return warm_start(flow, x, key=key, progress=progress, devices=devices)
