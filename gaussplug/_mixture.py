"""Per-dimension Gaussian-mixture CDF Gaussianization: the public numerics, and helpers for their params.

The forward map and its numerics live in :mod:`gaussplug._mixture_forward` (its docstring explains
them), the inverse in :mod:`gaussplug._mixture_inverse`, the standard-normal special functions in
:mod:`gaussplug._normal` and the EM fit in :mod:`gaussplug._mixture_em`; all are exported here. The
helpers below cast, extend and (un)flatten the ``(logits, loc, log_scale)`` params.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gaussplug._data import as_float as _as_float
from gaussplug._mixture_em import fit_mixture
from gaussplug._mixture_forward import gaussianize, mixture_log_cdf, mixture_log_pdf
from gaussplug._mixture_inverse import gaussianize_inverse
from gaussplug._normal import _LOG_2PI, ndtri_log

__all__ = [
    "MAX_COMPONENTS",
    "cast_fitted_mixture",
    "fit_mixture",
    "flatten_mixture_params",
    "gaussianize",
    "gaussianize_inverse",
    "mixture_log_cdf",
    "mixture_log_pdf",
    "ndtri_log",
    "unflatten_mixture_params",
    "with_tail_weight",
]

#: Most components per dimension: NumPy's Gauss-Hermite rule (a fresh mixture layer's weights) loses accuracy
#: beyond a few hundred nodes and turns NaN near 500, and the EM's cost grows with K while one dimension's density
#: gains nothing from hundreds of components. The mixture families and :mod:`gaussplug.specs` check against it.
MAX_COMPONENTS = 256


def cast_fitted_mixture(x, params, dtype):
    """Fitted mixture params cast to a layer's ``dtype``, never scoring below ``N(0, 1)`` after the cast.

    The greedy fits run in the params' dtype promoted with the default float
    (float64 under x64), and :func:`fit_mixture` falls back to the identity
    on any dimension where the mixture scores below ``N(0, 1)``. Casting the
    result to a narrower dtype (a float32 flow under x64) can undo that: on a
    near-constant column (fewer rows than dimensions) a component of scale
    6e-11 at 0.43 moves by hundreds of its scales when its loc is rounded to
    float32. Where the params are narrowed, a dimension whose rounded mixture
    scores below ``N(0, 1)`` on ``x`` (or not finitely) therefore gets the
    identity mixture too. Otherwise the params are only cast, bit for bit,
    and nothing is evaluated.

    Args:
      x: The data the mixture was fitted to, shape ``(n, D)``, in the fit's dtype.
      params: ``(logits, loc, log_scale)``, each ``(D, K)``, from :func:`fit_mixture`.
      dtype: The layer's params dtype.

    Returns:
      ``(logits, loc, log_scale)`` in ``dtype``.

    Example:
      >>> import jax, numpy as np
      >>> x = np.random.default_rng(0).normal(size=(200, 2))
      >>> [p.dtype.name for p in cast_fitted_mixture(x, fit_mixture(x, 2), np.float32)]
      ['float32', 'float32', 'float32']
    """
    cast = tuple(jnp.asarray(a, dtype) for a in params)
    fit_dtype = jnp.result_type(*params)
    if jnp.finfo(dtype).bits >= jnp.finfo(fit_dtype).bits:
        return cast
    x = jnp.asarray(x, fit_dtype)
    mixture = jnp.mean(mixture_log_pdf(x, *(a.astype(fit_dtype) for a in cast)), axis=0)
    gauss = jnp.mean(-0.5 * x * x, axis=0) - 0.5 * _LOG_2PI
    worse = ~(mixture >= gauss)  # NaN counts as worse
    return tuple(jnp.where(worse[:, None], jnp.zeros((), dtype), a) for a in cast)


def with_tail_weight(logits, loc, log_scale, weight: float):
    """Mixes a fixed ``N(0, 1)`` component of weight ``weight`` into each mixture: ``(1 - w) F + w Phi``.

    Returns raw params with ``K + 1`` components: the given ones with weights
    scaled by ``1 - weight`` and one more at ``loc = 0``, ``log_scale = 0``.
    Far outside the data the mixture's tail is then at least ``w Phi(-|x|)``,
    so ``y = Phi^{-1}(F(x))`` grows with slope ``1 / max(1, s_max)`` (``s_max``
    the widest fitted scale) instead of ``1 / s_max``: where the N(0, 1) tail
    dominates, ``Phi(-|y|) = w Phi(-|x|)``, i.e. ``|y| ~ sqrt(x^2 + 2 log(1 /
    w))``. A stack of such layers cannot multiply an outlier's distance by
    ``prod 1 / s_max``. At any point the density is multiplied by ``(1 - w) +
    w phi / f``, at least ``1 - w``. ``weight = 0`` returns the params
    unchanged (``K`` components).

    Args:
      logits: ``(..., K)`` raw log-weights.
      loc: ``(..., K)`` means.
      log_scale: ``(..., K)`` log standard deviations.
      weight: The ``N(0, 1)`` component's weight, in ``[0, 1)``.

    Returns:
      ``(logits, loc, log_scale)``, each ``(..., K + 1)`` (or the inputs if ``weight == 0``).

    Example:
      >>> import jax.numpy as jnp
      >>> logits, loc, log_scale = with_tail_weight(jnp.zeros(2), jnp.array([-1.0, 1.0]), jnp.zeros(2), 0.01)
      >>> [round(float(v), 3) for v in jnp.exp(logits)], loc.tolist()
      ([0.495, 0.495, 0.01], [-1.0, 1.0, 0.0])
    """
    if weight == 0:
        return logits, loc, log_scale
    logits, loc, log_scale = jnp.broadcast_arrays(*_as_float(logits, loc, log_scale))
    extra = jnp.zeros(logits.shape[:-1] + (1,), logits.dtype)
    return (
        jnp.concatenate([jax.nn.log_softmax(logits, axis=-1) + math.log1p(-weight), extra + math.log(weight)], -1),
        jnp.concatenate([loc, extra], -1),
        jnp.concatenate([log_scale, extra], -1),
    )


def flatten_mixture_params(logits, loc, log_scale):
    """Packs ``(..., D, K)`` params into one vector laid out as ``(..., D, 3, K)``.

    This is the layout of the coupling conditioner's output (and of the bias
    that its greedy fit writes).

    Example:
      >>> import jax.numpy as jnp
      >>> flatten_mixture_params(jnp.zeros((2, 4)), jnp.ones((2, 4)), jnp.zeros((2, 4))).shape
      (24,)
    """
    stacked = jnp.stack(jnp.broadcast_arrays(logits, loc, log_scale), axis=-2)
    return stacked.reshape(*stacked.shape[:-3], -1)


def unflatten_mixture_params(vec, n_dims: int, n_components: int):
    """Inverse of :func:`flatten_mixture_params`: ``(..., D*3*K)`` to three ``(..., D, K)``.

    Raises:
      ValueError: If the last axis of ``vec`` is not ``n_dims * 3 * n_components``.

    Example:
      >>> import jax.numpy as jnp
      >>> logits, loc, log_scale = unflatten_mixture_params(jnp.arange(24.0), 2, 4)
      >>> loc[1].tolist()
      [16.0, 17.0, 18.0, 19.0]
    """
    vec = jnp.asarray(vec)
    size = n_dims * 3 * n_components
    if vec.ndim < 1 or vec.shape[-1] != size:
        raise ValueError(
            f"Expected a params vector of shape (..., {size}) = (..., {n_dims} dims * 3 * {n_components} "
            f"components); got shape {tuple(vec.shape)}."
        )
    p = vec.reshape(*vec.shape[:-1], n_dims, 3, n_components)
    return p[..., 0, :], p[..., 1, :], p[..., 2, :]
