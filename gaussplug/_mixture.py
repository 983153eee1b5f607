"""Numerics for per-dimension Gaussian-mixture CDF Gaussianization.

A scalar mixture ``f(x) = sum_k w_k N(x; mu_k, s_k^2)`` with CDF ``F`` is
mapped to a standard normal by ``y = Phi^{-1}(F(x))``. Everything here works in
log space from whichever tail of ``F`` is smaller, so ``y`` and the log-det stay
finite and accurate far outside the data: ``y`` is asymptotically affine in
``x`` with the widest component's scale, nothing is clipped.

Parameters are raw and broadcast against ``x`` of shape ``(...)``: ``logits``,
``loc`` and ``log_scale`` of shape ``(..., K)``, with weights
``softmax(logits)`` and scales ``exp(log_scale)``. All functions are pure JAX
and dtype-generic: they compute in the promoted dtype of their inputs (float32
by default, float64 under ``jax.enable_x64``) and never downcast.

Tail accuracy rests on the hazard ``h(z) = phi(z) / Phi(z)``: it is computed
without cancellation (Laplace's continued fraction below ``z = -5``), and the
log-det is assembled from hazards, ``log f - log phi(y) = log(f / F) -
log(phi(y) / Phi(y))``, rather than as a difference of two huge log-densities.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

__all__ = [
    "fit_mixture",
    "flatten_mixture_params",
    "gaussianize",
    "gaussianize_inverse",
    "mixture_log_cdf",
    "mixture_log_pdf",
    "ndtri_log",
    "unflatten_mixture_params",
]

_LOG_HALF = math.log(0.5)
_LOG_2PI = math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_CF_SWITCH = 5.0  # below z = -5 the hazard uses Laplace's continued fraction
# Abramowitz & Stegun 26.2.23: |error| < 4.5e-4 for every p in (0, 1/2].
_AS_NUM = (2.515517, 0.802853, 0.010328)
_AS_DEN = (1.432788, 0.189269, 0.001308)


def _as_float(*arrays):
    """Converts arrays to their common floating dtype (never downcasting)."""
    arrays = [jnp.asarray(a) for a in arrays]
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(dtype, float)
    return tuple(a.astype(dtype) for a in arrays)


def _is_64(x) -> bool:
    return jnp.finfo(x.dtype).bits > 32


def _log_phi(z):
    return -0.5 * z * z - 0.5 * _LOG_2PI


def _hazard_parts(z):
    """Returns ``(log Phi(z), log h(z), d log h / dz)`` with the hazard ``h = phi / Phi``.

    For ``z < -5`` Laplace's continued fraction ``Phi(-u)/phi(u) = 1/(u + 1/(u
    + 2/(u + ...)))`` gives ``h = u + 1/t1`` and the slope ``-z - h = -1/t1``
    with relative accuracy; for ``z >= -5`` one ``erfc`` gives ``Phi(-|z|)``
    and the direct formulas do not cancel.
    """
    tail = z < -_CF_SWITCH
    u = jnp.where(tail, -z, _CF_SWITCH)
    t1 = u
    for k in range(24 if _is_64(z) else 10, 1, -1):
        t1 = u + k / t1
    h_tail = u + 1 / t1
    zc = jnp.where(tail, 0.0, z)
    neg = zc < 0
    small = 0.5 * jax.lax.erfc(jnp.where(neg, -zc, zc) * _SQRT_HALF)  # Phi(-|zc|)
    log_cdf_mid = jnp.where(neg, jnp.log(small), jnp.log1p(-small))
    log_h_mid = _log_phi(zc) - log_cdf_mid
    log_cdf = jnp.where(tail, _log_phi(z) - jnp.log(h_tail), log_cdf_mid)
    log_h = jnp.where(tail, jnp.log(h_tail), log_h_mid)
    slope = jnp.where(tail, -1 / t1, -zc - jnp.exp(log_h_mid))
    return log_cdf, log_h, slope


@jax.custom_jvp
def _log_ndtr_hazard(z):
    """``(log Phi(z), log(phi(z)/Phi(z)))``, accurate for all ``z``, with stable JVPs."""
    log_cdf, log_h, _ = _hazard_parts(z)
    return log_cdf, log_h


@_log_ndtr_hazard.defjvp
def _log_ndtr_hazard_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    log_cdf, log_h, slope = _hazard_parts(z)
    return (log_cdf, log_h), (jnp.exp(log_h) * dz, slope * dz)


def _ndtri_log_lower(lq):
    """``Phi^{-1}(exp(lq))`` for ``lq <= log(1/2)`` (so the result is <= 0).

    Starts from Abramowitz & Stegun 26.2.23 written in ``t = sqrt(-2 lq)``
    (no ``exp``, so no underflow) and polishes with Halley steps on ``log
    Phi(y) = lq`` (one in float32, two in float64: cubic convergence from an
    error below 4.5e-4).
    """
    neg_inf = lq == -jnp.inf
    lq = jnp.where(neg_inf, -1.0, lq)
    t = jnp.sqrt(-2.0 * lq)
    r = 1 / t  # the rational part, divided through by t^2 so that it cannot overflow
    num = (_AS_NUM[0] * r + _AS_NUM[1]) * r + _AS_NUM[2]
    den = (r + _AS_DEN[0]) * r + _AS_DEN[1] + _AS_DEN[2] * t
    y = num / den - t
    for _ in range(2 if _is_64(lq) else 1):
        log_cdf, log_h, slope = _hazard_parts(y)
        newton = (log_cdf - lq) * jnp.exp(-log_h)  # f / f' with f = log Phi(y) - lq
        y = y - newton / (1 - 0.5 * newton * slope)  # Halley: f'' / f' = slope
    return jnp.where(neg_inf, -jnp.inf, y)


@jax.custom_jvp
def _ndtri_log(logp):
    upper = logp > _LOG_HALF
    log_q = jnp.where(upper, jnp.log(-jnp.expm1(jnp.where(upper, logp, _LOG_HALF))), logp)
    y = _ndtri_log_lower(log_q)
    return jnp.where(upper, -y, y)


@_ndtri_log.defjvp
def _ndtri_log_jvp(primals, tangents):
    (logp,), (dlogp,) = primals, tangents
    y = _ndtri_log(logp)
    return y, jnp.exp(-_log_ndtr_hazard(y)[1]) * dlogp


@jax.jit
def ndtri_log(logp):
    """Standard-normal quantile of ``exp(logp)``: ``Phi^{-1}(exp(logp))``.

    Accurate and finite far into the tails (``logp = -1e6`` gives ``y =
    -1414.2...`` in float32). For ``logp <= log(1/2)`` it starts from a
    rational approximation in ``sqrt(-2 logp)`` (Abramowitz & Stegun 26.2.23,
    error < 4.5e-4, never forming ``exp(logp)``, which would underflow) and
    polishes with Halley steps on ``log Phi(y) = logp``, with ``log Phi``
    accurate to relative precision in the tail. For ``logp > log(1/2)`` it
    returns ``-ndtri_log(log(-expm1(logp)))``. Its derivative ``dy/dlogp =
    Phi(y)/phi(y)`` is computed without cancellation (custom JVP).

    Args:
      logp: Log-probabilities ``<= 0``, any shape; ``-inf`` maps to ``-inf``
        and ``0`` to ``+inf``.

    Returns:
      ``y`` with the shape and (floating) dtype of ``logp``.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(v), 4) for v in ndtri_log(jnp.log(jnp.array([0.025, 0.975])))]
      [-1.96, 1.96]
      >>> round(float(ndtri_log(-1e4)), 2)
      -141.38
    """
    (logp,) = _as_float(logp)
    return _ndtri_log(logp)


def _standardize(x, logits, loc, log_scale):
    x, logits, loc, log_scale = _as_float(x, logits, loc, log_scale)
    z = (x[..., None] - loc) * jnp.exp(-log_scale)
    return z, jax.nn.log_softmax(logits, axis=-1), log_scale


def _tail_parts(x, logits, loc, log_scale):
    """Both tails of the mixture at ``x`` and their hazards, stacked on a leading axis.

    Returns ``log_tails = (log F, log(1 - F))`` and ``log_hazards = (log(f / F),
    log(f / (1 - F)))``. The lower tail is ``F = sum_k w_k Phi(z_k)`` and the
    upper ``1 - F = sum_k w_k Phi(-z_k)``; the hazards are the tail-posterior
    averages ``sum_k P(k | tail) h(+-z_k) / s_k``, so nothing cancels far out.
    """
    z, log_w, log_scale = _standardize(x, logits, loc, log_scale)
    log_cdf, log_h = _log_ndtr_hazard(jnp.stack([z, -z]))
    a = log_w + log_cdf
    log_hazards = logsumexp(jax.nn.log_softmax(a, axis=-1) + log_h - log_scale, axis=-1)
    return logsumexp(a, axis=-1), log_hazards


@jax.jit
def mixture_log_cdf(x, logits, loc, log_scale):
    """Log-CDF and log-survival function of a scalar Gaussian mixture.

    Args:
      x: Points, shape ``(...)``.
      logits: Unnormalised log-weights, shape ``(..., K)``.
      loc: Component means, shape ``(..., K)``.
      log_scale: Log standard deviations, shape ``(..., K)``.

    Returns:
      ``(log_F, log_1mF)``: ``log F(x)`` and ``log(1 - F(x))``, each computed
      as a log-sum-exp of log-weights and ``log Phi(+-z_k)`` so neither
      underflows in its tail.

    Example:
      >>> import jax.numpy as jnp
      >>> lf, ls = mixture_log_cdf(0.0, jnp.zeros(2), jnp.array([-1.0, 1.0]), jnp.zeros(2))
      >>> round(float(jnp.exp(lf)), 4), round(float(jnp.exp(ls)), 4)
      (0.5, 0.5)
    """
    log_tails, _ = _tail_parts(x, logits, loc, log_scale)
    return log_tails[0], log_tails[1]


@jax.jit
def mixture_log_pdf(x, logits, loc, log_scale):
    """Log-density of a scalar Gaussian mixture (arguments as in :func:`mixture_log_cdf`).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(mixture_log_pdf(0.0, jnp.zeros(1), jnp.zeros(1), jnp.zeros(1))), 4)
      -0.9189
    """
    z, log_w, log_scale = _standardize(x, logits, loc, log_scale)
    return logsumexp(log_w + _log_phi(z) - log_scale, axis=-1)


@jax.jit
def gaussianize(x, logits, loc, log_scale):
    """Elementwise ``y = Phi^{-1}(F(x))`` and ``log |dy/dx|``.

    ``y`` is taken from the smaller tail: ``ndtri_log(log F)`` in the lower
    half and ``-ndtri_log(log(1 - F))`` in the upper half. The log-det
    ``log f(x) - log phi(y)`` is assembled from hazards (``log(f/F) -
    log(phi(y)/Phi(y))`` in the lower half, mirrored above), which keeps it
    accurate where ``log f`` and ``log phi(y)`` are both huge. Far out, ``y ~
    (x - loc_k)/scale_k`` for the widest component ``k``.

    Args:
      x: Points, shape ``(...)``.
      logits: Unnormalised log-weights, shape ``(..., K)``.
      loc: Component means, shape ``(..., K)``.
      log_scale: Log standard deviations, shape ``(..., K)``.

    Returns:
      ``(y, log_det)``, both of the broadcast batch shape.

    Example:
      >>> import jax.numpy as jnp
      >>> y, ld = gaussianize(jnp.array([-1e3, 3.0]), jnp.zeros(1), jnp.zeros(1), jnp.log(jnp.full(1, 2.0)))
      >>> [round(float(v), 4) for v in y], [round(float(v), 4) for v in ld]
      ([-500.0, 1.5], [-0.6931, -0.6931])
    """
    log_tails, log_hazards = _tail_parts(x, logits, loc, log_scale)
    lower = log_tails[0] <= log_tails[1]
    y_tail = _ndtri_log(jnp.where(lower, log_tails[0], log_tails[1]))
    log_det = jnp.where(lower, log_hazards[0], log_hazards[1]) - _log_ndtr_hazard(y_tail)[1]
    return jnp.where(lower, y_tail, -y_tail), log_det


def _default_iters(x) -> int:
    return 40 if _is_64(x) else 30


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _solve(y, logits, loc, log_scale, num_iter):
    """Root of ``F(x) = Phi(y)``: safeguarded Newton with a fixed iteration count.

    Works on the tail that ``y`` lies in: ``g(x) = log F(x) - log Phi(y)``
    for ``y < 0`` and ``g(x) = log Phi(-y) - log(1 - F(x))`` otherwise, both
    increasing with ``g'`` the mixture's hazard, so no quantile is evaluated
    inside the loop.
    """
    shape = jnp.broadcast_shapes(y.shape, logits.shape[:-1], loc.shape[:-1], log_scale.shape[:-1])
    y = jnp.broadcast_to(y, shape)
    lower = y < 0
    target = _log_ndtr_hazard(-jnp.abs(y))[0]
    scale = jnp.exp(log_scale)
    ends = loc + scale * y[..., None]  # F <= Phi(y) at min(ends) and >= at max(ends).
    lo, hi = jnp.min(ends, axis=-1), jnp.max(ends, axis=-1)
    w = jax.nn.softmax(logits, axis=-1)
    mean = jnp.sum(w * loc, axis=-1)
    std = jnp.sqrt(jnp.sum(w * (scale * scale + (loc - mean[..., None]) ** 2), axis=-1))
    x0 = jnp.clip(mean + std * y, lo, hi)

    def step(_, carry):
        x, lo, hi, dx, dx_old, best_x, best_g = carry
        log_tails, log_hazards = _tail_parts(x, logits, loc, log_scale)
        g = jnp.where(lower, log_tails[0] - target, target - log_tails[1])
        better = jnp.abs(g) < best_g  # False for NaN residuals.
        best_x, best_g = jnp.where(better, x, best_x), jnp.where(better, jnp.abs(g), best_g)
        lo, hi = jnp.where(g < 0, x, lo), jnp.where(g > 0, x, hi)
        newton_dx = g * jnp.exp(-jnp.where(lower, log_hazards[0], log_hazards[1]))
        newton = x - newton_dx
        # Newton unless it leaves the bracket or does not halve the step before last
        # (Numerical Recipes' rtsafe); both tests are False for NaN/inf steps.
        use_newton = (newton >= lo) & (newton <= hi) & (2 * jnp.abs(newton_dx) <= jnp.abs(dx_old))
        mid = lo + 0.5 * (hi - lo)
        new_dx = jnp.where(use_newton, newton_dx, x - mid)
        return jnp.where(use_newton, newton, mid), lo, hi, new_dx, dx, best_x, best_g

    width = hi - lo
    init = (x0, lo, hi, width, width, x0, jnp.full_like(x0, jnp.inf))
    *_, x, _ = jax.lax.fori_loop(0, num_iter, step, init)
    return jnp.where(jnp.isinf(y), y, x)


@_solve.defjvp
def _solve_jvp(num_iter, primals, tangents):
    y, logits, loc, log_scale = primals
    dy, dlogits, dloc, dlog_scale = tangents
    x = _solve(y, logits, loc, log_scale, num_iter)

    def forward(lg, lc, ls):
        return gaussianize(x, lg, lc, ls)

    (_, log_det), (dy_params, _) = jax.jvp(forward, (logits, loc, log_scale), (dlogits, dloc, dlog_scale))
    # Implicit function theorem on T(x, params) = y: dx = (dy - dT/dparams) / T'(x).
    return x, (dy - dy_params) * jnp.exp(-log_det)


@functools.partial(jax.jit, static_argnames=("num_iter",))
def gaussianize_inverse(y, logits, loc, log_scale, *, num_iter=None):
    """Inverse of :func:`gaussianize`: solves ``Phi^{-1}(F(x)) = y`` for ``x``.

    A vectorised safeguarded Newton solver with a fixed iteration count, so it
    works under ``jit`` and ``vmap``. The root lies in the exact bracket
    ``[min_k(loc_k + scale_k y), max_k(loc_k + scale_k y)]`` (``F <= Phi(y)``
    below it, ``>= Phi(y)`` above). Each iteration shrinks the bracket with the
    sign of the residual ``log F(x) - log Phi(y)`` (its upper-tail mirror for
    ``y >= 0``) and takes a Newton step (slope: the mixture's hazard), falling
    back to bisection when the step leaves the bracket or stalls (as in
    Numerical Recipes' ``rtsafe``); the best iterate is returned. Derivatives
    (w.r.t. ``y`` and the params, forward and reverse mode) come from the
    implicit-function rule ``dx = (dy - dT/dparams . dparams) / T'(x)``, with
    ``T`` the forward map and ``T'(x) = exp(log_det)``.

    Args:
      y: Latent values, shape ``(...)``.
      logits: Unnormalised log-weights, shape ``(..., K)``.
      loc: Component means, shape ``(..., K)``.
      log_scale: Log standard deviations, shape ``(..., K)``.
      num_iter: Solver iterations; defaults to 30 (float32) or 40 (float64).

    Returns:
      ``(x, log_det)`` with ``log_det = log |dx/dy|``, i.e. minus the forward
      log-det at ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> x, ld = gaussianize_inverse(jnp.array([1.5]), jnp.zeros(1), jnp.zeros(1), jnp.log(jnp.full(1, 2.0)))
      >>> round(float(x[0]), 4), round(float(ld[0]), 4)
      (3.0, 0.6931)
    """
    y, logits, loc, log_scale = _as_float(y, logits, loc, log_scale)
    x = _solve(y, logits, loc, log_scale, _default_iters(y) if num_iter is None else int(num_iter))
    _, log_det = gaussianize(x, logits, loc, log_scale)
    return x, -log_det


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


def _em_step(u, params, floor):
    """One EM iteration on ``u`` of shape ``(n, D)``; params are ``(D, K)`` each.

    Returns the updated params and the mean log-likelihood of the old ones.
    The M-step works with ``z = (u - loc) / scale`` of the old components, so
    the variance update does not cancel in float32 for far-out narrow
    components.
    """
    logits, loc, log_scale = params
    inv_scale = jnp.exp(-log_scale)
    z = (u[..., None] - loc) * inv_scale
    log_joint = jax.nn.log_softmax(logits, axis=-1) - log_scale - 0.5 * z * z
    peak = jnp.max(log_joint, axis=-1, keepdims=True)
    e = jnp.exp(log_joint - peak)
    total = jnp.sum(e, axis=-1, keepdims=True)
    resp = e / total
    log_lik = jnp.mean(peak[..., 0] + jnp.log(total[..., 0]), axis=0) - 0.5 * _LOG_2PI
    counts = jnp.sum(resp, axis=0) + 10 * jnp.finfo(u.dtype).eps
    mean_z = jnp.sum(resp * z, axis=0) / counts
    var_z = jnp.maximum(jnp.sum(resp * z * z, axis=0) / counts - mean_z * mean_z, 0.0)
    scale = jnp.exp(log_scale)
    log_scale = 0.5 * jnp.log(jnp.maximum(var_z * scale * scale, floor[:, None] ** 2))
    return (jnp.log(counts / u.shape[0]), loc + scale * mean_z, log_scale), log_lik


def _mean_log_lik(u, logits, loc, log_scale):
    """Mean log-likelihood per column of ``u`` under per-column mixtures ``(D, K)``."""
    return jnp.mean(mixture_log_pdf(u, logits, loc, log_scale), axis=0)


@functools.partial(jax.jit, static_argnames=("n_components", "max_iter"))
def _fit_em(x, tol, scale_floor, *, n_components, max_iter):
    n, _ = x.shape
    mean, std = jnp.mean(x, axis=0), jnp.std(x, axis=0)
    std = jnp.where(std > 0, std, 1.0)
    u = (x - mean) / std
    # Floor relative to a robust spread, so heavy tails cannot inflate it.
    q25, q75 = jnp.quantile(u, jnp.asarray([0.25, 0.75], u.dtype), axis=0)
    spread = jnp.minimum(1.0, (q75 - q25) / 1.349)
    floor = scale_floor * jnp.where(spread > 0, spread, 1.0)
    # Deterministic init: means at the quantile midpoints, a common scale.
    levels = (jnp.arange(n_components, dtype=u.dtype) + 0.5) / n_components
    loc0 = jnp.quantile(u, levels, axis=0).T
    log_scale0 = jnp.broadcast_to(jnp.log(jnp.maximum(1.0 / n_components, floor))[:, None], loc0.shape)
    params0 = (jnp.zeros_like(loc0), loc0, log_scale0)

    def cond(state):
        it, _, _, change = state
        return (it < max_iter) & (change > tol)

    def body(state):
        it, params, prev, _ = state
        params, log_lik = _em_step(u, params, floor)
        return it + 1, params, log_lik, jnp.max(jnp.abs(log_lik - prev))

    init = (0, params0, jnp.full(mean.shape, -jnp.inf, u.dtype), jnp.asarray(jnp.inf, u.dtype))
    n_iter, (logits, loc, log_scale), _, _ = jax.lax.while_loop(cond, body, init)
    log_lik = _mean_log_lik(u, logits, loc, log_scale) - jnp.log(std)
    # Never worse than the identity layer (F = Phi) on any dimension.
    worse = log_lik < jnp.mean(_log_phi(x), axis=0)
    logits = jnp.where(worse[:, None], 0.0, logits)
    loc = jnp.where(worse[:, None], 0.0, mean[:, None] + std[:, None] * loc)
    log_scale = jnp.where(worse[:, None], 0.0, log_scale + jnp.log(std)[:, None])
    return (logits, loc, log_scale), n_iter


def fit_mixture(x, n_components: int, *, key=None, max_iter: int = 200, tol: float = 1e-5, scale_floor: float = 1e-3):
    """Fits a ``K``-component Gaussian mixture to every column of ``x`` by batched EM.

    All dimensions are fitted at once in one jitted ``while_loop`` (compiled
    once per shape), in standardised units. Initialisation is deterministic:
    means at the ``K`` quantile midpoints ``(k + 1/2)/K`` and a common scale
    ``std / K``. Component scales are floored at ``scale_floor`` times the
    dimension's spread (``min(std, IQR/1.349)``), so a narrow component cannot
    collapse onto a few points or dominate a tail. EM stops when no
    dimension's mean log-likelihood changes by more than ``tol`` nats.

    A dimension whose fitted mixture has a lower mean log-likelihood than the
    standard normal gets the identity mixture (``loc = 0``, ``log_scale = 0``,
    equal weights; then ``Phi^{-1}(F(x)) = x``), so a greedy step never lowers
    the likelihood.

    Args:
      x: Data of shape ``(n, D)``; computed in its floating dtype.
      n_components: Number of components ``K`` (a positive int).
      key: Unused; accepted for signature uniformity (the fit is
        deterministic).
      max_iter: Maximum EM iterations.
      tol: Convergence tolerance on the change of mean log-likelihood.
      scale_floor: Smallest component scale relative to the spread.

    Returns:
      ``(logits, loc, log_scale)``, each of shape ``(D, K)`` in ``x``'s dtype.

    Raises:
      ValueError: If ``x`` is not a non-empty 2-D array or ``n_components``
        is not a positive int.

    Example:
      >>> import numpy as np
      >>> x = np.concatenate([np.random.default_rng(0).normal(-3, 1, (500, 1)),
      ...                     np.random.default_rng(1).normal(3, 1, (500, 1))])
      >>> logits, loc, log_scale = fit_mixture(x, 2)
      >>> sorted(round(float(v)) for v in loc[0])
      [-3, 3]
    """
    del key
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral) or n_components < 1:
        raise ValueError(f"n_components must be a positive int; got {n_components!r}.")
    (x,) = _as_float(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"Expected data of shape (n, D) with n >= 1; got shape {tuple(x.shape)}.")
    params, _ = _fit_em(x, tol, scale_floor, n_components=int(n_components), max_iter=int(max_iter))
    return params
