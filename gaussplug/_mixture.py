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

Everything rests on one special function, the Mills ratio ``R(u) =
Phi(-u) / phi(u)`` for ``u >= 0`` (so ``Phi(-u) = phi(u) R(u)`` and the
hazard is ``1 / R``), evaluated with relative accuracy for every ``u``: in
float32 by one rational formula ``R = t Q(t)``, ``t = 1 / (1 + 0.35 u)``
(``Q`` a degree-10 polynomial fitted to a relative error of 1.5e-8, so about
5 ulp after rounding; no branches, no ``erf``); in float64 by ``erfc`` up to
``u = 5`` and Laplace's continued fraction beyond. Each component costs one
``R`` and two ``exp`` per point, for one tail of the mixture only:

* ``w_k Phi(-u_k) = exp(log w_k - u_k^2 / 2) R(u_k) / sqrt(2 pi)`` when the
  tail needed is the component's small one, ``w_k (1 - Phi(-u_k))``
  otherwise, summed relative to their largest log-term (no underflow);
* the log-det ``log f - log phi(y) = log(f / T) + log(Phi(y_T) / phi(y_T))``
  (``T`` the smaller tail, ``y_T = Phi^{-1}(T)``) is assembled from the tail
  hazard and the Mills ratio at ``y_T``, never as a difference of two huge
  log-densities.

Derivatives are analytic (``jax.custom_jvp``): with ``rho_k`` the density
posterior of component ``k`` at ``x`` and ``P_k`` its posterior given the
tail, ``dy = exp(log_det) (dx - sum_k rho_k (dloc_k + s_k z_k dlog_s_k)) +-
Phi(y_T)/phi(y_T) sum_k (P_k - w_k) dlogit_k`` and ``d log_det = d log f + y
dy``, so the backward pass never differentiates through the special functions
or the quantile's iterations.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from gaussplug._bijector import clip_overflow
from gaussplug._mixture_em import _as_float, fit_mixture

__all__ = [
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

_LOG_HALF = math.log(0.5)
_LOG_2PI = math.log(2.0 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_CF_SWITCH = 5.0  # float64: above u = 5 the Mills ratio uses Laplace's continued fraction
# float32 Mills ratio R(u) = t Q(t), t = 1 / (1 + _R32_P u); Q in increasing powers of t (relative error
# 1.5e-8 over u in [0, inf), a weighted least-squares Chebyshev fit converted to powers of t).
_R32_P = 0.35
_R32_Q = (
    0.3500000052, 0.34999851326, 0.30719712786, 0.22001460237, 0.12155858431, -0.07209204959,
    0.17660071999, -0.56961427256, 0.59427379932, -0.27335081099, 0.048727905114,
)  # fmt: skip
# Abramowitz & Stegun 26.2.23: |error| < 4.5e-4 for every p in (0, 1/2].
_AS_NUM = (2.515517, 0.802853, 0.010328)
_AS_DEN = (1.432788, 0.189269, 0.001308)
# Inverse: a cubic Hermite table of x(y) on |y| <= _TABLE_Y with _TABLE_NODES nodes gives the start.
_TABLE_Y = 8.0
_TABLE_NODES = 2049
# A table point whose last Newton step moved it by more than this (relative) is solved again, generally;
# the general solver gathers such points while they are at most 1 / _REDO_SHARE of a chunk.
_REDO_STEP32, _REDO_STEP64, _REDO_SHARE = 1e-4, 1e-8, 256


def _is_64(x) -> bool:
    return jnp.finfo(x.dtype).bits > 32


def _log_phi(z):
    return -0.5 * z * z - 0.5 * _LOG_2PI


def _mills(u):
    """Mills ratio ``R(u) = Phi(-u) / phi(u)`` for ``u >= 0`` (also fine for tiny negative ``u``).

    Relative accuracy everywhere, ``R(inf) = 0``; see the module docstring.
    """
    if not _is_64(u):
        t = 1 / (1 + _R32_P * u)
        q = _R32_Q
        # Estrin's scheme: a shorter dependency chain than Horner's, which XLA-CPU vectorises better.
        t2 = t * t
        t4 = t2 * t2
        low = (q[0] + q[1] * t + (q[2] + q[3] * t) * t2) + (q[4] + q[5] * t + (q[6] + q[7] * t) * t2) * t4
        return t * (low + (q[8] + q[9] * t + q[10] * t2) * (t4 * t4))
    tail = u > _CF_SWITCH
    uc = jnp.where(tail, _CF_SWITCH, u)
    mid = 0.5 * jax.lax.erfc(uc * _SQRT_HALF) * jnp.exp(0.5 * uc * uc) * math.sqrt(2 * math.pi)
    ut = jnp.where(tail, u, _CF_SWITCH)
    t1 = ut
    for k in range(24, 1, -1):
        t1 = ut + k / t1
    return jnp.where(tail, 1 / (ut + 1 / t1), mid)


def _cdf_ratio(y):
    """``Phi(y) / phi(y)``, accurate for ``y <= 0`` (where it is ``R(-y)``) and finite-ish above."""
    u = jnp.abs(y)
    r = _mills(u)
    above = (1 - r * jnp.exp(_log_phi(u))) * jnp.exp(-_log_phi(jnp.where(y > 0, u, 0.0)))
    return jnp.where(y > 0, above, r)


def _ndtri_log_lower(lq):
    """``Phi^{-1}(exp(lq))`` for ``lq <= log(1/2)`` (so the result is <= 0).

    Starts from Abramowitz & Stegun 26.2.23 written in ``t = sqrt(-2 lq)``
    (no ``exp``, so no underflow) and polishes with Halley steps on ``log
    Phi(y) = lq`` (one in float32, two in float64: cubic convergence from an
    error below 4.5e-4), with ``log Phi(y) = log R(-y) + log phi(y)``.
    """
    neg_inf = lq == -jnp.inf
    lq = jnp.where(neg_inf, -1.0, lq)
    t = jnp.sqrt(-2.0 * lq)
    r = 1 / t  # the rational part, divided through by t^2 so that it cannot overflow
    num = (_AS_NUM[0] * r + _AS_NUM[1]) * r + _AS_NUM[2]
    den = (r + _AS_DEN[0]) * r + _AS_DEN[1] + _AS_DEN[2] * t
    y = num / den - t
    for _ in range(2 if _is_64(lq) else 1):
        mills = _mills(-y)
        newton = (jnp.log(mills) + _log_phi(y) - lq) * mills  # f / f' with f = log Phi(y) - lq, f' = 1 / R
        slope = -y - 1 / mills  # f'' / f'
        y = y - newton / (1 - 0.5 * newton * slope)
    return jnp.where(neg_inf, -jnp.inf, y)


def _ndtri_log_any(logp):
    upper = logp > _LOG_HALF
    log_q = jnp.where(upper, jnp.log(-jnp.expm1(jnp.where(upper, logp, _LOG_HALF))), logp)
    y = _ndtri_log_lower(log_q)
    return jnp.where(upper, -y, y)


@jax.custom_jvp
def _ndtri_log(logp):
    return _ndtri_log_any(logp)


@_ndtri_log.defjvp
def _ndtri_log_jvp(primals, tangents):
    (logp,), (dlogp,) = primals, tangents
    y = _ndtri_log(logp)
    return y, _cdf_ratio(y) * dlogp


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


# ---------------------------------------------------------------- one tail of the mixture
#
# Every per-point quantity is a sum or max over components of an elementwise expression. Two ways to
# evaluate one (same results up to rounding): with a trailing ``K`` axis (few ops; best for small
# batches such as training minibatches) or by ``lax.scan`` over the components with one clean
# elementwise loop per component (large batches: XLA-CPU emits slow scalar code for reductions over a
# short trailing axis, and fuses poorly when all ``K`` components feed several consumers).

#: Batch elements times components from which components are scanned instead of vectorised.
_SCAN_FROM = 1 << 16


def _use_scan(shape, k: int) -> bool:
    return math.prod(shape) * k >= _SCAN_FROM


def _k_major(c, ndim):
    """``(..., K)`` params as ``(K, 1, ..., 1, ...)``, broadcasting against ``(K, *batch)`` with ``ndim`` batch axes."""
    return jnp.moveaxis(c, -1, 0).reshape((c.shape[-1],) + (1,) * (ndim - c.ndim + 1) + c.shape[:-1])


def _reduce_components(fn, ops, points, comps, shape, scan):
    """``op_j`` over ``k`` of ``fn(*points, *comps_k)[j]`` for each output ``j``.

    ``points`` are arrays of the batch shape, ``comps`` arrays ``(..., K)``
    broadcasting against it, ``ops`` a tuple of ``"add"``, ``"max"`` or ``"min"``.
    """
    dtype = comps[0].dtype
    combine = {"add": jnp.add, "max": jnp.maximum, "min": jnp.minimum}
    if not scan:
        # Components on a leading axis, reduced by unrolled elementwise ops over its slices (XLA-CPU
        # emits fast vector loops for these, unlike for reductions over a short axis).
        outs = fn(*points, *(_k_major(c, len(shape)) for c in comps))
        return tuple(
            jnp.broadcast_to(functools.reduce(combine[op], [o[k] for k in range(o.shape[0])]), shape)
            for o, op in zip(outs, ops, strict=True)
        )

    def body(carry, comp):
        outs = fn(*points, *comp)
        return tuple(combine[op](c, o) for c, o, op in zip(carry, outs, ops, strict=True)), None

    init = tuple(jnp.full(shape, {"add": 0.0, "max": -jnp.inf, "min": jnp.inf}[op], dtype) for op in ops)
    xs = tuple(jnp.moveaxis(c, -1, 0) for c in comps)
    return jax.lax.scan(body, init, xs)[0]


#: Points times components per row chunk of a large batch (keeps a chunk's working set in cache).
_CHUNK = 1 << 21


def _by_rows(fn, points, comps, shape):
    """``fn(*points, *comps)`` over chunks of the leading batch axis (for large batches).

    ``points`` broadcast to the batch ``shape`` and ``comps`` (trailing ``K``
    axis) to ``(*shape, K)``; an operand that spans the leading axis is cut
    into chunks, one that broadcasts along it is shared. ``fn`` returns a
    tuple of arrays of its chunk's batch shape. A chunk's rows hold about
    ``_CHUNK / K`` points, so its intermediates stay in cache; the last chunk
    is shifted back to end at the last row (its overlap is recomputed).
    """
    k = comps[0].shape[-1]
    rows = shape[0] if shape else 1
    size = max(1, math.prod(shape[1:]) * k)
    step = max(1, _CHUNK // size)
    if not shape or rows < 2 * step:
        return fn(*points, *comps)
    nd = len(shape)

    def spans(a, batch_ndim):
        return batch_ndim == nd and a.shape[0] == rows

    cut_p = [spans(a, a.ndim) for a in points]
    cut_c = [spans(a, a.ndim - 1) for a in comps]

    def chunk(start):
        ps = [jax.lax.dynamic_slice_in_dim(a, start, step) if c else a for a, c in zip(points, cut_p, strict=True)]
        cs = [jax.lax.dynamic_slice_in_dim(a, start, step) if c else a for a, c in zip(comps, cut_c, strict=True)]
        return tuple(jnp.broadcast_to(o, (step, *shape[1:])) for o in fn(*ps, *cs))

    outs = jax.eval_shape(chunk, 0)

    def body(i, acc):
        start = jnp.minimum(i * step, rows - step)
        return tuple(
            jax.lax.dynamic_update_slice_in_dim(a, o, start, 0) for a, o in zip(acc, chunk(start), strict=True)
        )

    init = tuple(jnp.zeros((rows, *shape[1:]), o.dtype) for o in outs)
    return jax.lax.fori_loop(0, -(-rows // step), body, init)


def _comp_params(logits, loc, log_scale):
    """Per-component arrays ``(log(w / s), loc, 1 / s, s / sqrt(2 pi), w)``, each ``(..., K)``."""
    log_w = jax.nn.log_softmax(logits, axis=-1)
    return log_w - log_scale, loc, jnp.exp(-log_scale), _INV_SQRT_2PI * jnp.exp(log_scale), jnp.exp(log_w)


def _log_joint(x, lwd, lc, iv):
    """``log(w_k phi(z_k) / s_k) + log sqrt(2 pi)``."""
    z = (x - lc) * iv
    return (lwd - 0.5 * z * z,)


def _component_terms(x, peak, lwd, lc, iv, cs, w):
    """Per component: ``(z, density term, small-tail term, big-tail term)``.

    The density term ``exp(log(w phi(z) / s) - peak) sqrt(2 pi)`` and the
    small-tail term ``w Phi(-|z|) exp(-peak) = density s R(|z|) / sqrt(2 pi)``
    are relative to ``exp(peak)``; the big-tail term ``w (1 - Phi(-|z|))`` is at
    least ``w / 2`` and kept absolute, so none of them under- or overflows.
    """
    z = (x - lc) * iv
    u = jnp.abs(z)
    half_u2 = 0.5 * u * u
    mills = _mills(u)
    dens = jnp.exp(lwd - half_u2 - peak)
    small = dens * cs * mills
    big = w * (1 - _INV_SQRT_2PI * jnp.exp(-half_u2) * mills)
    return z, dens, small, big


def _tail_terms(x, peak, *comps):
    """The five summands of :func:`_mixture_sums` for one component (or a leading ``K`` axis)."""
    z, dens, small, big = _component_terms(x, peak, *comps)
    neg = z < 0
    zero = jnp.zeros_like(small)
    return (
        jnp.where(neg, small, zero),
        jnp.where(neg, zero, big),
        jnp.where(neg, zero, small),
        jnp.where(neg, big, zero),
        dens,
    )


def _finish_sums(peak, sums):
    """``(peak, rel_lower, rel_upper, log_dens_sum, log_F, log_1mF)`` from the five sums (see :func:`_mixture_sums`).

    The absolute tails are summed as ``logaddexp(peak + small, big)`` rather than as ``peak + rel``: when
    the big terms dominate and ``peak`` is far below them (``x`` between components many scales narrow),
    ``peak + (big - peak)`` cancels catastrophically, where ``logaddexp`` keeps ``big``'s precision.
    """
    lo_small, lo_big, hi_small, hi_big, dens = (jnp.log(s) for s in sums)
    rel_lo, rel_hi = jnp.logaddexp(lo_small, lo_big - peak), jnp.logaddexp(hi_small, hi_big - peak)
    log_lo, log_hi = jnp.logaddexp(peak + lo_small, lo_big), jnp.logaddexp(peak + hi_small, hi_big)
    return peak, rel_lo, rel_hi, dens, log_lo, log_hi


def _guard(peak):
    return jnp.where(peak > -jnp.inf, peak, 0.0)


def _mixture_sums(x, lwd, lc, iv, cs, w):
    """Both tails and the density of the mixture at ``x``, in log space.

    Returns ``(peak, rel_lower, rel_upper, log_dens_sum, log_F, log_1mF)``:
    ``log F = peak + rel_lower``, ``log(1 - F) = peak + rel_upper`` (both also
    given directly, summed without cancellation) and ``log f = peak +
    log_dens_sum - log sqrt(2 pi)``, where ``peak`` is the largest per-component
    log joint density, so that ``log(f / T) = log_dens_sum - rel_T - log sqrt(2 pi)``
    involves no difference of huge numbers.
    """
    shape = jnp.broadcast_shapes(x.shape, lwd.shape[:-1])
    scan = _use_scan(shape, lwd.shape[-1])
    (peak,) = _reduce_components(_log_joint, ("max",), (x,), (lwd, lc, iv), shape, scan)
    peak = _guard(peak)
    return _finish_sums(
        peak, _reduce_components(_tail_terms, ("add",) * 5, (x, peak), (lwd, lc, iv, cs, w), shape, scan)
    )


def _finish_forward(peak, rel_lo, rel_hi, log_dens, log_lo, log_hi):
    lower = rel_lo <= rel_hi
    rel = jnp.where(lower, rel_lo, rel_hi)
    log_t = jnp.where(lower, log_lo, log_hi)
    y_t = _ndtri_log_any(log_t)  # the smaller tail T = Phi(y_t)
    ratio = _cdf_ratio(y_t)  # Phi(y_t) / phi(y_t)
    log_det = log_dens - rel - 0.5 * _LOG_2PI + jnp.log(ratio)  # log(f / T) + log(Phi(y_t) / phi(y_t))
    return jnp.where(lower, y_t, -y_t), log_det, rel, lower, ratio, log_t


def _forward_core(x, *comps):
    return _finish_forward(*_mixture_sums(x, *comps))[:2]


def _batch_shape(x, *params):
    return jnp.broadcast_shapes(x.shape, *(p.shape[:-1] for p in params))


def _slices_sum(a):
    return functools.reduce(jnp.add, [a[k] for k in range(a.shape[0])])


@jax.custom_jvp
def _gaussianize(x, logits, loc, log_scale):
    comps = _comp_params(logits, loc, log_scale)
    return _by_rows(_forward_core, (x,), comps, _batch_shape(x, logits, loc, log_scale))


@_gaussianize.defjvp
def _gaussianize_jvp(primals, tangents):
    """Analytic JVP (see the module docstring); components on a leading axis, as in the vectorised path."""
    x, logits, loc, log_scale = primals
    dx, dlogits, dloc, dlog_scale = _as_float(*tangents)
    shape = _batch_shape(x, logits, loc, log_scale)
    comps = _comp_params(logits, loc, log_scale)
    comps_k = tuple(_k_major(c, len(shape)) for c in comps)
    if _use_scan(shape, logits.shape[-1]):  # a large batch: the peak by chunks
        peak_fn = lambda *a: _reduce_components(_log_joint, ("max",), a[:1], a[1:], a[0].shape, True)  # noqa: E731
        (peak,) = _by_rows(peak_fn, (x,), comps[:3], shape)
    else:
        peak = functools.reduce(jnp.maximum, list(_log_joint(x, *comps_k[:3])[0]))
    peak = _guard(peak)
    z, dens, small, big = _component_terms(x, peak, *comps_k)
    neg = z < 0
    zero = jnp.zeros_like(small)
    parts = (
        jnp.where(neg, small, zero),
        jnp.where(neg, zero, big),
        jnp.where(neg, zero, small),
        jnp.where(neg, big, zero),
    )
    sums = (*(_slices_sum(t) for t in parts), _slices_sum(dens))
    y, log_det, rel, lower, ratio, log_t = _finish_forward(*_finish_sums(peak, sums))
    _, lc, iv, _, w = comps_k
    dlogits, dloc, dlog_scale = (_k_major(t, len(shape)) for t in (dlogits, dloc, dlog_scale))
    rho = dens / sums[4]  # P(k | x)
    post = jnp.where(neg == lower, small * jnp.exp(-rel), big * jnp.exp(-log_t))  # P(k | tail)
    jac = jnp.exp(log_det)
    dy = jac * (dx - _slices_sum(rho * (dloc + (x - lc) * dlog_scale)))
    dy = dy + jnp.where(lower, ratio, -ratio) * _slices_sum((post - w) * dlogits)
    d_log_f = _slices_sum(rho * (z * iv * (dloc - dx) + (z * z - 1) * dlog_scale) + (rho - w) * dlogits)
    d_log_det = d_log_f + y * dy
    return (y, log_det), tuple(jnp.broadcast_to(t, shape).astype(y.dtype) for t in (dy, d_log_det))


def _log_cdf_pdf_core(x, *comps):
    peak, _, _, log_dens, log_lo, log_hi = _mixture_sums(x, *comps)
    return log_lo, log_hi, peak + log_dens - 0.5 * _LOG_2PI


def _log_cdf_pdf(x, logits, loc, log_scale):
    x, logits, loc, log_scale = _as_float(x, logits, loc, log_scale)
    comps = _comp_params(logits, loc, log_scale)
    return _by_rows(_log_cdf_pdf_core, (x,), comps, _batch_shape(x, logits, loc, log_scale))


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
    return _log_cdf_pdf(x, logits, loc, log_scale)[:2]


@jax.jit
def mixture_log_pdf(x, logits, loc, log_scale):
    """Log-density of a scalar Gaussian mixture (arguments as in :func:`mixture_log_cdf`).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(mixture_log_pdf(0.0, jnp.zeros(1), jnp.zeros(1), jnp.zeros(1))), 4)
      -0.9189
    """
    return _log_cdf_pdf(x, logits, loc, log_scale)[2]


@jax.jit
def gaussianize(x, logits, loc, log_scale):
    """Elementwise ``y = Phi^{-1}(F(x))`` and ``log |dy/dx|``.

    ``y`` is taken from the smaller tail: ``ndtri_log(log F)`` in the lower
    half and ``-ndtri_log(log(1 - F))`` in the upper half. The log-det
    ``log f(x) - log phi(y)`` is assembled from hazards (``log(f/F) -
    log(phi(y)/Phi(y))`` in the lower half, mirrored above), which keeps it
    accurate where ``log f`` and ``log phi(y)`` are both huge. Far out, ``y ~
    (x - loc_k)/scale_k`` for the widest component ``k``. Derivatives (w.r.t.
    ``x`` and the params) are analytic; see the module docstring.

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
    x, logits, loc, log_scale = _as_float(x, logits, loc, log_scale)
    # No gradient through the bounds: moving a bound moves y(xc) and the linear part by the same
    # amount (the slope at xc is dy/dxc), so the derivative has no term from it.
    lo, hi = jax.lax.stop_gradient(_far_bounds(logits, loc, log_scale))
    xc = jnp.clip(x, lo, hi)
    y, log_det = _gaussianize(xc, logits, loc, log_scale)
    return _extend(x, xc, y, log_det), log_det


#: Beyond this many widest-component scales outside every component's mean the map is affine to
#: working precision; :func:`gaussianize` evaluates it there and extends it linearly further out.
_FAR = 1e6


def _far_bounds(logits, loc, log_scale):
    """``(lo, hi)``: the points ``_FAR`` widest scales below the lowest and above the highest mean.

    Beyond them every component's ``z`` exceeds ``_FAR``, so ``y = Phi^{-1}(F(x))``
    is ``(x - loc_k) / scale_k`` of the widest component plus ``O(1 / _FAR)``:
    affine, with the slope ``exp(log_det)`` at the bound. Evaluating there keeps
    ``z**2`` far from overflow, which at ``|z| > 1.8e19`` (float32) turned ``y``
    and the log-det into inf and NaN.
    """
    del logits
    reach = _FAR * jnp.exp(jnp.max(log_scale, axis=-1))
    return jnp.min(loc, axis=-1) - reach, jnp.max(loc, axis=-1) + reach


def _extend(x, xc, y, log_det):
    """``y`` (computed at ``xc``) continued linearly to ``x`` where ``x`` was clipped to ``xc``.

    Elsewhere ``x - xc`` is exactly 0, so ``y`` is returned bit for bit (the
    slope ``exp(log_det)`` is finite for any scale above float32's smallest).
    The slope is held constant for differentiation: ``dy/dx`` beyond the bound
    is exact, while the derivative w.r.t. the params is the one at the bound
    (it leaves out ``(x - xc) dslope``). That spares fine-tuning the slope's
    cotangent at every point (about 5% of a 2-D step) for points that data
    never reach.

    The result goes through :func:`gaussplug.clip_overflow`
    (``+-7.9e28`` in float32), so it is never inf: the next layer's sums stay
    finite and a flow's ``log_prob`` is ``-inf`` there instead of NaN.
    """
    return clip_overflow(y + (x - xc) * jax.lax.stop_gradient(jnp.exp(log_det)))


# ---------------------------------------------------------------- inverse


def _default_iters(x) -> int:
    return 40 if _is_64(x) else 30


def _one_tail_terms(x, lower, peak, lwd, lc, iv, cs, w):
    """:func:`_tail_terms` for one tail only (``F`` where ``lower``, else ``1 - F``)."""
    z = (x - lc) * iv
    u = jnp.abs(z)
    half_u2 = 0.5 * u * u
    mills = _mills(u)
    dens = jnp.exp(lwd - half_u2 - peak)
    own = (z < 0) == lower  # the tail is this component's small one
    zero = jnp.zeros_like(dens)
    big = w * (1 - _INV_SQRT_2PI * jnp.exp(-half_u2) * mills)
    return jnp.where(own, dens * cs * mills, zero), jnp.where(own, zero, big), dens


def _tail_residual(x, lower, target, comps):
    """``g(x)`` (increasing in ``x``, zero at the root) and the Newton step ``g / g'``.

    ``g = log F(x) - log Phi(y)`` where ``lower``, else ``log Phi(-y) - log(1 - F(x))``;
    ``g'`` is the hazard ``f / T`` of that tail.
    """
    lwd = comps[0]
    shape = jnp.broadcast_shapes(x.shape, lwd.shape[:-1])
    scan = _use_scan(shape, lwd.shape[-1])
    (peak,) = _reduce_components(_log_joint, ("max",), (x,), comps[:3], shape, scan)
    peak = jnp.where(peak > -jnp.inf, peak, 0.0)
    small, big, dens = (
        jnp.log(s) for s in _reduce_components(_one_tail_terms, ("add",) * 3, (x, lower, peak), comps, shape, scan)
    )
    rel = jnp.logaddexp(small, big - peak)
    log_t = jnp.logaddexp(peak + small, big)  # not peak + rel, which cancels when big dominates (_finish_sums)
    g = jnp.where(lower, log_t - target, target - log_t)
    return g, g * jnp.exp(rel + 0.5 * _LOG_2PI - dens)


def _log_ndtr_neg_abs(y):
    """``log Phi(-|y|)``."""
    u = jnp.abs(y)
    return jnp.log(_mills(u)) + _log_phi(u)


def _bracket(y, lc, iv):
    """Per component ``loc + s y``: ``F <= Phi(y)`` at their min and ``>= Phi(y)`` at their max."""
    end = lc + y / iv
    return end, end


def _solve_pointwise_core(y, *comps, num_iter):
    shape = jnp.broadcast_shapes(y.shape, comps[0].shape[:-1])
    y = jnp.broadcast_to(y, shape)
    lower = y < 0
    target = _log_ndtr_neg_abs(y)
    _, lc, iv, _, w = comps
    lo, hi = _reduce_components(_bracket, ("min", "max"), (y,), (lc, iv), shape, _use_scan(shape, lc.shape[-1]))
    mean = jnp.sum(w * lc, axis=-1)
    std = jnp.sqrt(jnp.sum(w * (1 / (iv * iv) + (lc - mean[..., None]) ** 2), axis=-1))
    x0 = jnp.clip(mean + std * y, lo, hi)

    def step(_, carry):
        x, lo, hi, dx, dx_old, best_x, best_g = carry
        g, newton_dx = _tail_residual(x, lower, target, comps)
        better = jnp.abs(g) < best_g  # False for NaN residuals.
        best_x, best_g = jnp.where(better, x, best_x), jnp.where(better, jnp.abs(g), best_g)
        lo, hi = jnp.where(g < 0, x, lo), jnp.where(g > 0, x, hi)
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
    return (jnp.where(jnp.isinf(y), y, x),)


def _solve_pointwise(y, logits, loc, log_scale, num_iter):
    """Root of ``F(x) = Phi(y)``: safeguarded Newton with a fixed iteration count.

    Works on the tail that ``y`` lies in: ``g(x) = log F(x) - log Phi(y)``
    for ``y < 0`` and ``g(x) = log Phi(-y) - log(1 - F(x))`` otherwise, both
    increasing with ``g'`` the mixture's hazard, so no quantile is evaluated
    inside the loop. Every point may have its own params.
    """
    core = functools.partial(_solve_pointwise_core, num_iter=num_iter)
    comps = _comp_params(logits, loc, log_scale)
    return _by_rows(core, (y,), comps, _batch_shape(y, logits, loc, log_scale))[0]


def _table_layout(y, logits, loc, log_scale):
    """``(rows, params_shape)`` when one param set serves many points of ``y``, else None.

    The table path needs ``y`` of shape ``(rows, *params_shape)`` (after
    broadcasting) with many more rows than the table has nodes.
    """
    pshape = jnp.broadcast_shapes(logits.shape[:-1], loc.shape[:-1], log_scale.shape[:-1])
    nd = len(pshape)
    if y.ndim <= nd or jnp.broadcast_shapes(y.shape[y.ndim - nd :], pshape) != pshape:
        return None
    rows = math.prod(y.shape[: y.ndim - nd])
    return (rows, pshape) if rows >= 2 * _TABLE_NODES else None


def _table_core(y, coef, *comps):
    """Hermite start from the table (``coef``: ``(G - 1, p, 5)``), then clipped Newton; ``y``: ``(rows, p)``."""
    p = y.shape[-1]
    inside = jnp.abs(y) <= _TABLE_Y  # False for NaN
    pos = (jnp.where(inside, y, 0.0) + _TABLE_Y) * ((_TABLE_NODES - 1) / (2 * _TABLE_Y))
    cell = jnp.clip(jnp.floor(pos), 0, _TABLE_NODES - 2).astype(jnp.int32)
    s = pos - cell
    c = coef.reshape(-1, 5)[cell * p + jnp.arange(p, dtype=jnp.int32)]  # (rows, p, 5)
    x = c[..., 0] + s * (c[..., 1] + s * (c[..., 2] + s * c[..., 3]))
    lo, hi = c[..., 0], c[..., 4]
    lower = y < 0
    target = _log_ndtr_neg_abs(y)
    for _ in range(3 if _is_64(y) else 1):
        _, newton_dx = _tail_residual(x, lower, target, comps)
        x_new = jnp.clip(x - newton_dx, lo, hi)
        moved, x = jnp.abs(x_new - x), x_new
    # A last step that still moved x noticeably means a poor start (where x(y) is nearly a jump, e.g. in
    # the gap between two far modes): such points, and those outside the table, get the general solver.
    tol = _REDO_STEP64 if _is_64(y) else _REDO_STEP32
    redo = ~(inside & (moved <= tol * (1 + jnp.abs(x))))
    return (_redo_points(x, y, redo, comps),)


def _redo_points(x, y, redo, comps):
    """``x`` with the points flagged in ``redo`` (``(rows, p)``) solved by :func:`_solve_pointwise_core`.

    Up to ``1 / _REDO_SHARE`` of the points, only the flagged ones are gathered and solved (each with its
    column's params); beyond that every point of the chunk is (slow, but still right).
    """
    p = y.shape[-1]
    flat, flags = x.reshape(-1), redo.reshape(-1)
    room = max(1, flat.size // _REDO_SHARE)
    idx = jnp.nonzero(flags, size=room, fill_value=0)[0]
    iters = _default_iters(y)

    def few():
        cols = idx % p
        fixed = _solve_pointwise_core(y.reshape(-1)[idx], *(c[cols] for c in comps), num_iter=iters)[0]
        return flat.at[idx].set(jnp.where(flags[idx], fixed, flat[idx])).reshape(x.shape)

    def many():
        return jnp.where(redo, _solve_pointwise_core(y, *comps, num_iter=iters)[0], x)

    count = jnp.sum(flags)
    return jax.lax.cond(count == 0, lambda: x, lambda: jax.lax.cond(count <= room, few, many))
    return (x,)


def _solve_table(y, logits, loc, log_scale, layout):
    """Inverse for many points sharing each param set: a cubic Hermite table, then Newton.

    The table holds the exact roots ``x_j`` at ``_TABLE_NODES`` equispaced
    ``y_j`` in ``[-8, 8]`` and the slopes ``dx/dy = exp(-log_det(x_j))``
    (found by :func:`_solve_pointwise`, once per param set). A point starts
    from the Hermite interpolant of its interval, which the exact nodes
    bracket, and takes one Newton step on the log-tail residual (three in
    float64), clipped to that bracket. Points outside ``[-8, 8]`` (or not
    finite) and points whose last step moved them noticeably are solved again
    by the general solver (see :func:`_redo_points`).
    """
    rows, pshape = layout
    p = math.prod(pshape)
    logits, loc, log_scale = (
        jnp.broadcast_to(a, (*pshape, a.shape[-1])).reshape(p, -1) for a in (logits, loc, log_scale)
    )
    out_shape = (*y.shape[: y.ndim - len(pshape)], *pshape)
    y = jnp.broadcast_to(y, out_shape).reshape(rows, p)
    nodes = jnp.linspace(-_TABLE_Y, _TABLE_Y, _TABLE_NODES, dtype=y.dtype)
    x_nodes = _solve_pointwise(nodes[:, None], logits, loc, log_scale, _default_iters(y))  # (G, p)
    slopes = jnp.exp(-_gaussianize(x_nodes, logits, loc, log_scale)[1]) * (nodes[1] - nodes[0])
    # Hermite coefficients per interval in s in [0, 1]: x = c0 + s (c1 + s (c2 + s c3)); c4 = right node.
    x0, x1, d0, d1 = x_nodes[:-1], x_nodes[1:], slopes[:-1], slopes[1:]
    coef = jnp.stack([x0, d0, 3 * (x1 - x0) - 2 * d0 - d1, 2 * (x0 - x1) + d0 + d1, x1], axis=-1)  # (G-1, p, 5)
    comps = _comp_params(logits, loc, log_scale)
    (x,) = _by_rows(lambda yy, *c: _table_core(yy, coef, *c), (y,), comps, (rows, p))
    return x.reshape(out_shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _solve(y, logits, loc, log_scale, num_iter):
    if num_iter is None:
        layout = _table_layout(y, logits, loc, log_scale)
        if layout is not None:
            return _solve_table(y, logits, loc, log_scale, layout)
        num_iter = _default_iters(y)
    return _solve_pointwise(y, logits, loc, log_scale, num_iter)


@_solve.defjvp
def _solve_jvp(num_iter, primals, tangents):
    y, logits, loc, log_scale = primals
    dy, dlogits, dloc, dlog_scale = tangents
    x = _solve(y, logits, loc, log_scale, num_iter)

    def forward(lg, lc, ls):
        return _gaussianize(x, lg, lc, ls)

    (_, log_det), (dy_params, _) = jax.jvp(forward, (logits, loc, log_scale), (dlogits, dloc, dlog_scale))
    # Implicit function theorem on T(x, params) = y: dx = (dy - dT/dparams) / T'(x).
    return x, (dy - dy_params) * jnp.exp(-log_det)


@functools.partial(jax.jit, static_argnames=("num_iter",))
def gaussianize_inverse(y, logits, loc, log_scale, *, num_iter=None):
    """Inverse of :func:`gaussianize`: solves ``Phi^{-1}(F(x)) = y`` for ``x``.

    Vectorised with a fixed amount of work per point, so it works under
    ``jit`` and ``vmap``. When the params are shared by many points (``y`` of
    shape ``(rows, *params_batch)`` with ``rows >= 4098``, as when sampling a
    flow), a cubic Hermite table of exact roots at 2049 nodes in ``y in [-8,
    8]`` gives each point a start bracketed by two exact roots, polished by
    one Newton step on the log-tail residual (three in float64); points
    outside ``[-8, 8]``, and points whose last step still moved them by more
    than ``1e-4`` relative (``1e-8`` in float64: a poor start, where ``x(y)``
    is nearly a jump, as between two far-apart modes), are solved again by the
    general solver. Otherwise (or with an
    explicit ``num_iter``) every point runs the general solver: safeguarded
    Newton in the exact bracket ``[min_k(loc_k + scale_k y), max_k(loc_k +
    scale_k y)]`` (``F <= Phi(y)`` below it, ``>= Phi(y)`` above) on the sign
    of the residual ``log F(x) - log Phi(y)`` (its upper-tail mirror for ``y
    >= 0``), with the mixture's hazard as slope and bisection when a step
    leaves the bracket or stalls (as in Numerical Recipes' ``rtsafe``); the
    best iterate is returned. Derivatives (w.r.t. ``y`` and the params,
    forward and reverse mode) come from the implicit-function rule ``dx = (dy
    - dT/dparams . dparams) / T'(x)``, with ``T`` the forward map and ``T'(x)
    = exp(log_det)``. Beyond the images of :func:`gaussianize`'s far bounds
    (``|y|`` of about ``1e6`` and more) the forward map is affine, and so is
    its inverse: such ``y`` are mapped back along that line, exactly, for any
    finite ``y``.

    Args:
      y: Latent values, shape ``(...)``.
      logits: Unnormalised log-weights, shape ``(..., K)``.
      loc: Component means, shape ``(..., K)``.
      log_scale: Log standard deviations, shape ``(..., K)``.
      num_iter: Iterations of the general solver for every point (no table);
        default: the table where it applies, else 30 (float32) or 40 (float64).

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
    # Beyond the far bounds the forward map is affine (see gaussianize), so its inverse is too: the
    # solver sees y clipped to the bounds' images (its log-tail target would overflow at |y| > 1.8e19
    # in float32) and y beyond them is mapped back along the same line, exactly inverting _extend.
    lo, hi = jax.lax.stop_gradient(_far_bounds(logits, loc, log_scale))
    # A bound is +-inf when a scale exceeds e^74 (float32): then nothing lies beyond it. The images and
    # slopes are evaluated at a finite stand-in there, so no branch computes inf - inf, whose NaN would
    # reach the gradients through jnp.where even where that branch is not taken.
    fin_lo, fin_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo, hi = jnp.where(fin_lo, lo, 0.0), jnp.where(fin_hi, hi, 0.0)
    y_lo, ld_lo = _gaussianize(lo, logits, loc, log_scale)
    y_hi, ld_hi = _gaussianize(hi, logits, loc, log_scale)
    below = fin_lo & (y < y_lo)
    above = fin_hi & (y > y_hi)
    inner = jnp.clip(y, jnp.where(fin_lo, y_lo, -jnp.inf), jnp.where(fin_hi, y_hi, jnp.inf))
    x = _solve(inner, logits, loc, log_scale, None if num_iter is None else int(num_iter))
    slope_lo, slope_hi = (jax.lax.stop_gradient(jnp.exp(-ld)) for ld in (ld_lo, ld_hi))
    x = jnp.where(below, lo + (y - y_lo) * slope_lo, jnp.where(above, hi + (y - y_hi) * slope_hi, x))
    lo, hi = jnp.where(fin_lo, lo, -jnp.inf), jnp.where(fin_hi, hi, jnp.inf)
    _, log_det = _gaussianize(jnp.clip(x, lo, hi), logits, loc, log_scale)
    return x, -log_det


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
