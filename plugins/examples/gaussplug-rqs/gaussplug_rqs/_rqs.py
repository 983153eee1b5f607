"""The ``rqs_spline`` family: per-dimension monotone rational-quadratic splines."""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping
from typing import Any

import distrax
import gaussplug
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FAMILY",
    "MIN_BIN_SIZE",
    "MIN_KNOT_SLOPE",
    "RQSplineBijector",
    "fit_rqs_spline",
    "make_rqs_spline",
    "raw_spline_params",
    "validate",
]

#: Smallest bin width/height, passed to ``distrax.RationalQuadraticSpline``.
MIN_BIN_SIZE = 1e-4
#: Smallest knot slope, passed to ``distrax.RationalQuadraticSpline``.
MIN_KNOT_SLOPE = 1e-4
# Fitted knot slopes are clipped to this range (keeps the map well conditioned).
_FIT_SLOPE_RANGE = (1e-3, 1e3)
# Fitted bins are at least MIN_BIN_SIZE plus this fraction of an even share of the spare room.
_FIT_GAP_FRACTION = 1e-3
_STD_NORMAL = statistics.NormalDist()
_norm_cdf = np.vectorize(_STD_NORMAL.cdf, otypes=[np.float64])
_norm_ppf = np.vectorize(_STD_NORMAL.inv_cdf, otypes=[np.float64])


class RQSplineBijector(gaussplug.VectorBijector):
    r"""Independent monotone rational-quadratic splines, one per dimension.

    Each coordinate ``x_j`` goes through its own spline ``f_j`` (Durkan et al.,
    *Neural Spline Flows*, 2019) on ``[-B, B]`` with ``K`` bins, knots
    ``(x_k, y_k)`` (``x_0 = y_0 = -B``, ``x_K = y_K = B``) and knot slopes
    ``d_k > 0``. The identity is used outside ``[-B, B]``. With bin width
    ``w_k = x_{k+1} - x_k``, height ``h_k = y_{k+1} - y_k``, secant
    ``s_k = h_k / w_k`` and ``t = (x - x_k) / w_k`` for ``x`` in bin ``k``::

        forward:  y = y_k + h_k [s_k t^2 + d_k t(1-t)] / [s_k + (d_{k+1} + d_k - 2 s_k) t(1-t)]
                  f'(x) = s_k^2 [d_{k+1} t^2 + 2 s_k t(1-t) + d_k (1-t)^2]
                          / [s_k + (d_{k+1} + d_k - 2 s_k) t(1-t)]^2
                  y = x and f'(x) = 1 outside [-B, B]
                  log|det J| = sum_j log f_j'(x_j)
        inverse:  x = f^{-1}(y), the root in [0, 1] of the quadratic in t above;
                  log|det J^{-1}| = -sum_j log f_j'(x_j)

    Each row of ``params`` (``3K + 1`` unconstrained numbers ``a, b, c``) is
    mapped as in ``distrax.RationalQuadraticSpline``, with ``m`` =
    :data:`MIN_BIN_SIZE` and ``m_d`` = :data:`MIN_KNOT_SLOPE`::

        w = (2B - K m) softmax(a) + m,    h = (2B - K m) softmax(b) + m
        d_k = softplus(c_k + log(e^{1 - m_d} - 1)) + m_d,    d_0 = d_K = 1

    so all-zero params give the identity map. The map is data-to-latent.

    Args:
      dim: Event size.
      params: ``(dim, 3K + 1)`` unconstrained spline parameters, ``K >= 1``.
      bound: Half-width ``B > 0`` of the interval the splines act on.

    Raises:
      ValueError: If ``params`` does not have shape ``(dim, 3K + 1)``.
    """

    def __init__(self, dim: int, params, bound: float):
        super().__init__(dim)
        shape = tuple(params.shape)
        if len(shape) != 2 or shape[0] != self.dim or shape[1] < 4 or shape[1] % 3 != 1:
            raise ValueError(
                f"RQSplineBijector: expected params of shape ({self.dim}, 3 * bins + 1) with bins >= 1; "
                f"got shape {shape}."
            )
        self.params = params
        self.bound = float(bound)
        self.bins = (shape[1] - 1) // 3

    @property
    def spline(self) -> distrax.RationalQuadraticSpline:
        """The elementwise distrax spline (event_ndims_in=0), params ``(dim, 3K + 1)``."""
        return _spline(self.params, self.bound)

    def _forward_and_log_det(self, x):
        """``y_j = f_j(x_j)``; log-det summed over the last axis."""
        return _apply_splines(self.params, x, bound=self.bound, inverse=False)

    def _inverse_and_log_det(self, y):
        """``x_j = f_j^{-1}(y_j)``; log-det summed over the last axis."""
        return _apply_splines(self.params, y, bound=self.bound, inverse=True)


def _spline(params, bound: float) -> distrax.RationalQuadraticSpline:
    """The distrax spline on ``[-bound, bound]`` with identity tails."""
    return distrax.RationalQuadraticSpline(
        params,
        range_min=-bound,
        range_max=bound,
        boundary_slopes="identity",
        min_bin_size=MIN_BIN_SIZE,
        min_knot_slope=MIN_KNOT_SLOPE,
    )


# Jitted so that eager calls compile one XLA computation per input shape instead of
# dispatching distrax's many small ops one by one; under an outer jit it is inlined.
@functools.partial(jax.jit, static_argnames=("bound", "inverse"))
def _apply_splines(params, x, *, bound: float, inverse: bool):
    """The splines of :class:`RQSplineBijector` on ``(..., dim)``, log-det summed over ``dim``."""
    block = distrax.Block(_spline(params, bound), 1)
    return block.inverse_and_log_det(x) if inverse else block.forward_and_log_det(x)


def make_rqs_spline(dim: int, bins: int = 8, bound: float = 5.0) -> RQSplineBijector:
    """Creates ``"~"/"spline_params"`` of shape ``(dim, 3 * bins + 1)`` and the bijector.

    Args:
      dim: Event size.
      bins: Number of spline bins ``K`` per dimension.
      bound: The splines act on ``[-bound, bound]``; identity outside.

    Returns:
      An :class:`RQSplineBijector`, the identity map at init (zero params).
    """
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    params = hk.get_parameter("spline_params", (dim, 3 * bins + 1), dtype, init=jnp.zeros)
    return RQSplineBijector(dim, params, bound)


def _inverse_softplus(t: np.ndarray) -> np.ndarray:
    """``log(exp(t) - 1)`` for ``t > 0``, without overflow."""
    return t + np.log(-np.expm1(-t))


def raw_spline_params(x_knots, y_knots, slopes, *, bound: float) -> np.ndarray:
    """Inverts distrax's parameterisation: knots and slopes to raw spline params.

    Args:
      x_knots: ``(K + 1,)`` increasing knots from ``-bound`` to ``bound``,
        every gap larger than :data:`MIN_BIN_SIZE`.
      y_knots: ``(K + 1,)`` increasing knots, same conditions.
      slopes: ``(K + 1,)`` knot slopes larger than :data:`MIN_KNOT_SLOPE`;
        the two boundary slopes are ignored (the tails are the identity).
      bound: Half-width of the spline interval.

    Returns:
      ``(3K + 1,)`` float64 raw params: zero-mean log-weights for the bin
      widths and heights (softmax is shift invariant), then the slopes'
      inverse softplus; the boundary entries are 0.

    Example:
      >>> import numpy as np
      >>> knots = np.linspace(-5.0, 5.0, 5)
      >>> raw_spline_params(knots, knots, np.ones(5), bound=5.0).tolist() == [0.0] * 13
      True
    """
    del bound  # implied by the knots; kept for a self-describing call
    widths, heights = np.diff(np.asarray(x_knots, np.float64)), np.diff(np.asarray(y_knots, np.float64))
    log_w, log_h = np.log(widths - MIN_BIN_SIZE), np.log(heights - MIN_BIN_SIZE)
    offset = _inverse_softplus(np.float64(1.0 - MIN_KNOT_SLOPE))
    raw_slopes = _inverse_softplus(np.asarray(slopes, np.float64) - MIN_KNOT_SLOPE) - offset
    raw_slopes[0] = raw_slopes[-1] = 0.0
    return np.concatenate([log_w - log_w.mean(), log_h - log_h.mean(), raw_slopes])


def _fit_gap(bins: int, bound: float) -> float:
    """Smallest bin width/height the fit produces."""
    return MIN_BIN_SIZE + _FIT_GAP_FRACTION * (2 * bound - bins * MIN_BIN_SIZE) / bins


def _fit_levels(bins: int) -> np.ndarray:
    """Quantile levels of the ``K - 1`` interior knots: evenly spaced in z-space.

    ``z_k`` runs evenly over ``[-z_max, z_max]`` with ``z_max = Phi^{-1}(1 - 1/(2K))``,
    which puts more knots in the tails than evenly spaced levels ``k / K``.
    """
    if bins == 2:
        return np.array([0.5])
    z_max = _STD_NORMAL.inv_cdf(1 - 1 / (2 * bins))
    return _norm_cdf(np.linspace(-z_max, z_max, bins - 1))


def _fit_knots(col: np.ndarray, bins: int, bound: float):
    """Knots ``(x_k, y_k)`` and slopes of a monotone map from ``col`` towards N(0, 1).

    Interior knots pair the data's quantiles ``Q(p_k)`` with the
    standard-normal quantiles ``Phi^{-1}(p_k)`` (levels from :func:`_fit_levels`).
    Each knot's slope is a local finite difference of the target map
    ``Phi^{-1}(F(x))``::

        d_k = [Phi^{-1}(p_k + e) - Phi^{-1}(p_k - e)] / [Q(p_k + e) - Q(p_k - e)]

    with a window ``e`` that covers about 25 points (within ``[1/(8K), 1/(2K)]``).
    Tied x-knots (point masses) are merged to the mean of their targets, and
    knots outside the box or closer than :func:`_fit_gap` to a neighbour are
    dropped. Missing knots are refilled on the chord of the bin with the
    largest ``min(width, height)``, so the map stays linear where the data
    carries no information. Where the local difference is undefined (a
    point mass, a refilled knot) the slope is the central difference of the
    neighbouring knots. Slopes are clipped to a well-conditioned range.

    Returns:
      ``(x_knots, y_knots, slopes)``, each of shape ``(K + 1,)``, or ``None``
      when no valid knots exist (the caller keeps the identity).
    """
    gap = _fit_gap(bins, bound)
    levels = _fit_levels(bins)
    window = np.minimum(
        np.clip(25 / col.size, 1 / (8 * bins), 1 / (2 * bins)), np.minimum(levels, 1 - levels) / 2
    )
    xq = np.quantile(col, levels)
    dx = np.quantile(col, levels + window) - np.quantile(col, levels - window)
    dy = _norm_ppf(levels + window) - _norm_ppf(levels - window)
    local = np.where(dx >= gap, dy / np.maximum(dx, gap), np.nan)
    ux, first, group, counts = np.unique(xq, return_index=True, return_inverse=True, return_counts=True)
    uy = np.bincount(group, weights=_norm_ppf(levels)) / counts
    ud = np.where(counts == 1, local[first], np.nan)
    xs, ys, ds = [-bound], [-bound], [1.0]
    for xk, yk, dk in zip(ux, uy, ud, strict=True):
        if min(xk - xs[-1], yk - ys[-1], bound - xk, bound - yk) >= gap:
            xs.append(float(xk))
            ys.append(float(yk))
            ds.append(float(dk))
    xs.append(bound)
    ys.append(bound)
    ds.append(1.0)
    while len(xs) < bins + 1:
        room = np.minimum(np.diff(xs), np.diff(ys))
        i = int(np.argmax(room))
        xs.insert(i + 1, 0.5 * (xs[i] + xs[i + 1]))
        ys.insert(i + 1, 0.5 * (ys[i] + ys[i + 1]))
        ds.insert(i + 1, np.nan)
    xs, ys, slopes = np.asarray(xs), np.asarray(ys), np.asarray(ds)
    if min(np.diff(xs).min(), np.diff(ys).min()) <= MIN_BIN_SIZE * (1 + 1e-6):
        return None
    central = (ys[2:] - ys[:-2]) / (xs[2:] - xs[:-2])
    slopes[1:-1] = np.where(np.isnan(slopes[1:-1]), central, slopes[1:-1])
    return xs, ys, np.clip(slopes, *_FIT_SLOPE_RANGE)


@functools.partial(jax.jit, static_argnames=("bound",))
def _per_dim_loglik(params, x, bound: float):
    """Mean standard-normal log-likelihood (up to a constant) per dimension after the splines."""
    y, log_det = _spline(params, bound).forward_and_log_det(x)
    return jnp.mean(-0.5 * jnp.square(y) + log_det, axis=0)


def _as_fit_data(x, dim: int) -> np.ndarray:
    """``x`` as a finite float64 array of shape ``(n >= 1, dim)``, else DataError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
        raise gaussplug.DataError(
            f"rqs_spline fit: expected data of shape (n >= 1, {dim}); got shape {x.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise gaussplug.DataError(
            f"rqs_spline fit: expected finite data; got {int(np.sum(~np.isfinite(x)))} non-finite values."
        )
    return x


def fit_rqs_spline(x, params, *, key, bins: int = 8, bound: float = 5.0):
    """Greedy fit: per-dimension splines sending the data's marginals towards N(0, 1).

    For each dimension, the ``K - 1`` interior knots pair the data's
    quantiles ``Q(p_k)`` with ``Phi^{-1}(p_k)`` (levels evenly spaced in
    z-space), with knot slopes from local finite differences of the empirical
    quantile function, inside ``[-bound, bound]`` (see :class:`RQSplineBijector`
    for the spline). Ties, knots outside the box and knots too close together
    are handled without NaN (see ``_fit_knots``). Knots and slopes are
    converted to distrax's raw parameterisation with
    :func:`raw_spline_params`. A dimension keeps
    its fitted spline only if it strictly raises that dimension's mean
    standard-normal log-likelihood (log-det included), evaluated with the
    layer's own spline in the params' dtype; otherwise it stays at identity
    (zero params). Constant columns, single rows and data outside the box
    therefore give finite params, usually the identity.

    The spline only reshapes ``[-bound, bound]``, so the layer works best on
    standardized data (e.g. after a ``standardize`` layer).

    Args:
      x: Data of shape ``(n, dim)`` arriving at the layer.
      params: The layer's current params ``{"~": {"spline_params": (dim, 3K + 1)}}``.
      key: PRNG key; unused (the fit is deterministic).
      bins: Number of bins ``K``; must match the params' shape.
      bound: Half-width of the spline interval.

    Returns:
      New params with the same structure, shapes and dtypes.

    Raises:
      DataError: If ``x`` is not finite data of shape ``(n >= 1, dim)``.
      ValueError: If ``bins`` disagrees with the params' shape.
    """
    del key
    old = params["~"]["spline_params"]
    dim, width = old.shape
    if width != 3 * bins + 1:
        raise ValueError(
            f"rqs_spline fit: params 'spline_params' of shape {tuple(old.shape)} imply "
            f"bins={(width - 1) // 3}; got bins={bins!r}."
        )
    data = _as_fit_data(x, dim)
    bound = float(bound)
    fitted = np.zeros((dim, width))
    for j in range(dim):
        knots = _fit_knots(data[:, j], bins, bound)
        if knots is not None:
            fitted[j] = raw_spline_params(*knots, bound=bound)
    dtype = jnp.dtype(old.dtype)
    fitted = np.where(np.isfinite(fitted), fitted, 0.0).astype(dtype)
    xs = jnp.asarray(data, dtype)
    ll_fitted = np.asarray(_per_dim_loglik(jnp.asarray(fitted), xs, bound), np.float64)
    ll_identity = np.asarray(_per_dim_loglik(jnp.zeros(fitted.shape, dtype), xs, bound), np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf where float32 data overflows when squared
        keep = np.isfinite(ll_fitted) & (ll_fitted > ll_identity)
    fitted[~keep] = 0
    return {"~": {"spline_params": jnp.asarray(fitted, dtype)}}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def validate(dim: int, options: Mapping[str, Any]) -> None:
    """Checks the option values of an ``rqs_spline`` layer.

    Args:
      dim: The flow's data dimension (any ``dim >= 1`` is supported).
      options: The layer's resolved options ``bins`` and ``bound``.

    Raises:
      ValueError: If ``bins`` is not an int ``>= 2``, ``bound`` is not a finite
        number ``> 0``, or ``bins`` minimum-size bins do not fit in ``2 * bound``.
    """
    del dim
    bins, bound = options["bins"], options["bound"]
    if not _is_int(bins) or bins < 2:
        raise ValueError(f"rqs_spline option 'bins' must be an int >= 2; got {bins!r}.")
    if not (_is_real(bound) and math.isfinite(bound) and bound > 0):
        raise ValueError(f"rqs_spline option 'bound' must be a finite number > 0; got {bound!r}.")
    if bins * MIN_BIN_SIZE >= 2 * bound:
        raise ValueError(
            f"rqs_spline: {bins} bins of minimum size {MIN_BIN_SIZE} must fit in [-bound, bound]; "
            f"expected bound > {bins * MIN_BIN_SIZE / 2}, got bound={bound!r}."
        )


FAMILY = gaussplug.Family(
    name="rqs_spline",
    make_bijector=make_rqs_spline,
    fit=fit_rqs_spline,
    options={"bins": 8, "bound": 5.0},
    doc=(
        "Per-dimension monotone rational-quadratic splines (distrax) on [-bound, bound] with identity "
        "tails; the greedy fit maps each marginal's quantiles to standard-normal quantiles and keeps a "
        "dimension's spline only if it raises that dimension's Gaussian log-likelihood."
    ),
    validate=validate,
)


@gaussplug.hookimpl
def gaussplug_register_families(register):
    """Registers the ``rqs_spline`` family."""
    register(FAMILY)
