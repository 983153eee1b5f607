"""The ``mixture_cdf`` family: per-dimension Gaussian-mixture CDF followed by ``Phi^{-1}``."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import gaussplug
from gaussplug import hookimpl
from gaussplug._mixture import (
    MAX_COMPONENTS,
    cast_fitted_mixture,
    fit_mixture,
    gaussianize,
    gaussianize_inverse,
    with_tail_weight,
)

from .rotation import checked_fit_data

__all__ = ["FAMILY", "MixtureCDF", "check_tail_weight", "fit_mixture_cdf", "make_mixture_cdf", "validate"]


class MixtureCDF(gaussplug.VectorBijector):
    r"""Elementwise Gaussianization through a Gaussian-mixture CDF.

    Maths (per coordinate ``i``, with ``K`` components, weights
    ``w = softmax(logits_i)``, scales ``s = exp(log_scale_i)``)::

        F_i(x)   = sum_k w_k Phi((x - loc_ik) / s_k)
        f_i(x)   = sum_k w_k phi((x - loc_ik) / s_k) / s_k
        forward:  y_i = Phi^{-1}(F_i(x_i)),  log|det J| = sum_i log f_i(x_i) - log phi(y_i)
        inverse:  x_i = F_i^{-1}(Phi(y_i)),  log|det J| = -(forward log-det at x)

    ``y_i`` is computed in log space from the smaller tail of ``F_i`` and the
    log-det from hazard ratios, so both stay finite and accurate far outside
    the data, where ``y_i`` is affine in ``x_i`` with the widest component's
    scale. The inverse is a bracketed Newton solver with a fixed iteration
    count (jit/vmap-safe) and implicit-function gradients. With all
    ``loc = 0``, ``log_scale = 0`` the layer is the identity.

    With ``tail_weight = w > 0`` every ``F_i`` is ``(1 - w) F_i + w Phi``: a
    fixed ``N(0, 1)`` component (see
    :func:`gaussplug._mixture.with_tail_weight`), so far from the data the
    layer's slope is at most 1 rather than ``1 / s_max`` (``s_max`` the
    widest component's scale): outliers are not stretched layer after layer.

    Args:
      logits: ``(dim, K)`` unnormalised log-weights.
      loc: ``(dim, K)`` component means.
      log_scale: ``(dim, K)`` component log standard deviations.
      tail_weight: Weight of the fixed ``N(0, 1)`` component, in ``[0, 1)``.
    """

    def __init__(self, logits, loc, log_scale, tail_weight: float = 0.0):
        super().__init__(jnp.shape(logits)[-2])
        self.logits = logits
        self.loc = loc
        self.log_scale = log_scale
        self.tail_weight = float(tail_weight)

    def _mixture(self):
        return with_tail_weight(self.logits, self.loc, self.log_scale, self.tail_weight)

    def _forward_and_log_det(self, x):
        """``y = Phi^{-1}(F(x))`` per coordinate."""
        y, log_det = gaussianize(x, *self._mixture())
        return y, jnp.sum(log_det, axis=-1)

    def _inverse_and_log_det(self, y):
        """``x = F^{-1}(Phi(y))`` per coordinate."""
        x, log_det = gaussianize_inverse(y, *self._mixture())
        return x, jnp.sum(log_det, axis=-1)


#: A fresh layer's log-density may differ from ``log phi`` by at most this on ``|x| <= 3`` ...
_INIT_TOLERANCE = 0.1
#: ... with its components' spread ``s`` the largest multiple of 0.05 up to this that allows it.
_INIT_MAX_SPREAD = 0.9
#: ``N(0, 1)`` noise on a fresh layer's locations times this (breaks the symmetry between dims and layers).
_INIT_JITTER = 0.05




def _hermite_rule(k: int):
    """Probabilists' Gauss-Hermite nodes and normalised weights: ``N(0, 1) ~ sum_j w_j delta(x_j)``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(k)
    return nodes, weights / weights.sum()


@functools.cache
def _init_spread(k: int) -> float:
    """The spread ``s`` of a fresh ``k``-component layer (see :func:`make_mixture_cdf`)."""
    nodes, weights = _hermite_rule(k)
    x = np.linspace(-3.0, 3.0, 601)
    for s in np.arange(round(_INIT_MAX_SPREAD / 0.05), 0, -1) * 0.05:
        sigma = np.sqrt(1 - s * s)
        z = (x[None, :] - s * nodes[:, None]) / sigma
        log_f = np.log(np.sum(weights[:, None] * np.exp(-0.5 * z * z), axis=0) / sigma)
        if np.max(np.abs(log_f + 0.5 * x * x)) <= _INIT_TOLERANCE:
            return float(s)
    return 0.0


def _near_identity_logits(shape, dtype):
    """Haiku initialiser: the Gauss-Hermite weights' logarithms."""
    # The log is taken in float64 on the host: from K = 52 on the smallest weights are below float32's range.
    return jnp.broadcast_to(np.log(_hermite_rule(shape[-1])[1]).astype(dtype), shape)


def _near_identity_loc(shape, dtype):
    """Haiku initialiser: ``s`` times the Gauss-Hermite nodes plus centred ``0.05 N(0, 1)`` jitter (0 if ``K = 1``)."""
    k = shape[-1]
    if k == 1:
        return jnp.zeros(shape, dtype)
    nodes, weights = _hermite_rule(k)
    eps = jax.random.normal(hk.next_rng_key(), shape)
    eps = eps - jnp.sum(weights * eps, axis=-1, keepdims=True)  # the mixture's mean stays 0
    return (_init_spread(k) * nodes + _INIT_JITTER * eps).astype(dtype)


def _near_identity_log_scale(shape, dtype):
    """Haiku initialiser: the common scale ``sqrt(1 - s^2)`` (0 for ``K = 1``)."""
    k = shape[-1]
    return jnp.full(shape, 0.5 * math.log1p(-(_init_spread(k) ** 2)) if k > 1 else 0.0, dtype)


def make_mixture_cdf(dim: int, components: int = 8, tail_weight: float = 0.0) -> MixtureCDF:
    """Creates ``"~"/{"logits", "loc", "log_scale"}``, each ``(dim, components)``, and the bijector.

    A fresh layer is close to the identity on standardised data, so a stack
    of fresh layers neither squeezes nor spreads it. Each coordinate's
    mixture is the ``K``-point Gauss-Hermite rule for ``N(0, 1)`` (nodes
    ``x_j``, weights ``w_j``), shrunk by a spread ``s`` and smoothed by
    ``N(0, 1 - s^2)``: ``logits = log w``, ``loc = s x + 0.05 (eps - sum_j
    w_j eps_j)`` with ``eps ~ N(0, 1)`` (Haiku's RNG; the jitter is centred
    so the mixture's mean stays 0) and ``log_scale = log(1 - s^2) / 2``.
    Without the jitter this mixture has exactly the moments of ``N(0, 1)``
    up to order ``2K - 1``. ``s`` is the largest multiple of 0.05, at most
    0.9, for which its log-density stays within 0.1 of ``log phi`` on ``|x|
    <= 3`` (0.85 for ``K = 8``, 0.7 for ``K = 3``): narrow components that
    training can pull apart, in a layer that starts near the identity.
    ``K = 1`` starts as exactly the identity. (``loc ~ N(0, 1)`` with unit
    scales, say, doubles the variance at every layer: eight such layers
    squeeze standardised two-moons data to about 7.6 nats at the start,
    against 2.8 for ``N(0, I)``.)

    Args:
      dim: Event size.
      components: Number of mixture components ``K`` per dimension.
      tail_weight: Weight of a fixed ``N(0, 1)`` component mixed into every
        ``F`` (``0``: none), in ``[0, 1)``; see :class:`MixtureCDF`.

    Returns:
      A :class:`MixtureCDF`.
    """
    validate(dim, {"components": components, "tail_weight": tail_weight})
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    shape = (dim, int(components))
    logits = hk.get_parameter("logits", shape, dtype, init=_near_identity_logits)
    loc = hk.get_parameter("loc", shape, dtype, init=_near_identity_loc)
    log_scale = hk.get_parameter("log_scale", shape, dtype, init=_near_identity_log_scale)
    return MixtureCDF(logits, loc, log_scale, tail_weight)


def fit_mixture_cdf(x, params, *, key, components: int = 8, tail_weight: float = 0.0):
    """Greedy fit: a ``K``-component mixture per dimension by batched EM.

    Uses :func:`gaussplug._mixture.fit_mixture` (deterministic quantile
    initialisation, component scales floored relative to each dimension's
    spread, to ``1 / n`` of it for few rows, and to the rows' rounding
    level). A dimension where the mixture would score below ``N(0, 1)`` is
    set to the identity, so the step never lowers the training likelihood; a
    dimension without spread (constant up to rounding: one that ``n <= dim``
    rows do not span, or a column constant in a ``max_fit_samples``
    subsample) gets the unit-scale shift ``y = x - mean``, so rows the fit
    did not see are not stretched.
    With a ``tail_weight`` the EM fits the ``K`` components alone; the layer's
    ``(1 - w) f + w phi`` still scores at least ``N(0, 1)`` (by concavity of
    the log, its mean log-density is at least ``(1 - w)`` times the mixture's
    plus ``w`` times ``N(0, 1)``'s).
    Inside a warm start on several devices (``gaussplug.fit_mesh()``) the EM's
    passes over the rows are split across them.

    Args:
      x: Data of shape ``(n, dim)``.
      params: The layer's current params ``{"~": {"logits", "loc", "log_scale"}}``.
      key: PRNG key (passed on; the fit is deterministic).
      components: Number of components; must match the params' last axis.
      tail_weight: Accepted for signature uniformity (the fit does not depend on it).

    Returns:
      New params with the same structure, shapes and dtypes.

    Raises:
      DataError: If ``x`` is not finite data of shape ``(n >= 1, dim)``.
      ValueError: If ``components`` disagrees with the params.
    """
    del tail_weight  # the fit is the same (see above)
    old = params["~"]
    dim, k = old["logits"].shape
    if k != components:
        raise ValueError(f"mixture_cdf fit: params have {k} components but option 'components' is {components!r}.")
    data = checked_fit_data(x, dim)
    # The fit runs in the params' dtype promoted with the default float (float64 under x64), as it always has.
    dtype = jnp.promote_types(old["logits"].dtype, jax.dtypes.canonicalize_dtype(jnp.float64))
    mesh = gaussplug.fit_mesh()  # several devices during a warm start: the row passes are split over them
    fitted = fit_mixture(jnp.asarray(data, dtype) if mesh is None else data.astype(dtype), k, key=key, mesh=mesh)
    # Narrowed to the params' dtype (a float32 flow under x64), a dimension never scores below N(0, 1).
    fitted = cast_fitted_mixture(data, fitted, old["logits"].dtype)
    new = {name: dict(value) for name, value in params.items()}
    names = ("logits", "loc", "log_scale")
    new["~"] = {name: jnp.asarray(a, old[name].dtype) for name, a in zip(names, fitted, strict=True)}
    return new


def validate(dim: int, options: Mapping[str, Any]) -> None:
    """Checks the option values of a ``mixture_cdf`` layer.

    Raises:
      ValueError: If ``components`` is not an int in ``[1, MAX_COMPONENTS]``
        (256) or ``tail_weight`` not a number in ``[0, 1)``.
    """
    del dim
    check_components("mixture_cdf", options.get("components", 8))
    check_tail_weight("mixture_cdf", options.get("tail_weight", 0.0))


def check_components(family: str, k) -> None:
    """Raises ``ValueError`` unless ``k`` is an int in ``[1, MAX_COMPONENTS]`` (shared with the coupling family)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{family} option 'components' must be a positive int; got {k!r}.")
    if k > MAX_COMPONENTS:
        raise ValueError(f"{family} option 'components' must be at most {MAX_COMPONENTS} per dimension (wider "
                         "mixtures are ill-conditioned to initialise and slow to fit, and a one-dimensional density "
                         f"gains nothing from so many); got {k!r}.")


def check_tail_weight(family: str, weight) -> None:
    """Raises ``ValueError`` unless ``weight`` is a real number in ``[0, 1)`` (shared with the coupling family)."""
    ok = isinstance(weight, numbers.Real) and not isinstance(weight, bool) and 0 <= weight < 1
    if not ok:  # NaN fails 0 <= weight
        raise ValueError(
            f"{family} option 'tail_weight' must be a number in [0, 1) (the weight of the fixed N(0, 1) "
            f"component; 0 for none); got {weight!r}."
        )


FAMILY = gaussplug.Family(
    name="mixture_cdf",
    make_bijector=make_mixture_cdf,
    fit=fit_mixture_cdf,
    options={"components": 8, "tail_weight": 0.0},
    doc=(
        "Per-dimension y = Phi^{-1}(F(x)) with F a K-component Gaussian-mixture CDF (tails Gaussian "
        "with the widest component's scale, computed in log space; tail_weight w > 0 mixes in a fixed "
        "N(0, 1) component, so far tails grow with slope at most 1); the greedy fit runs batched EM and keeps "
        "the identity where a mixture would not beat N(0, 1) and a unit-scale shift on dimensions without spread."
    ),
    validate=validate,
)


@hookimpl
def gaussplug_register_families(register):
    """Registers the ``mixture_cdf`` family."""
    register(FAMILY)
