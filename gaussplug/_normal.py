"""Standard-normal special functions for the mixture numerics, accurate far into the tails.

The Mills ratio ``R(u) = Phi(-u) / phi(u)`` (see :mod:`gaussplug._mixture_forward` for how it is
evaluated), ``Phi(y) / phi(y)``, ``log Phi(-|y|)`` and the quantile of a log-probability,
:func:`ndtri_log`, with its analytic derivative.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gaussplug._data import as_float as _as_float

__all__ = ["ndtri_log"]

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
_NO_POLISH = 1e15  # t = sqrt(-2 log p) above which the A&S start is used unpolished (see _ndtri_log_lower)
_LOG_PHI_AT_ONE = math.log(0.15865525393145707)  # log Phi(-1): the stand-in's exact target


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
    # -2 lq overflows float32 below lq = -1.7e38 (a tail under a component e^-40 wide, 1e2 of its widths out).
    t = jnp.where(lq < -1e30, math.sqrt(2.0) * jnp.sqrt(-lq), jnp.sqrt(-2.0 * lq))
    r = 1 / t  # the rational part, divided through by t^2 so that it cannot overflow
    num = (_AS_NUM[0] * r + _AS_NUM[1]) * r + _AS_NUM[2]
    den = (r + _AS_DEN[0]) * r + _AS_DEN[1] + _AS_DEN[2] * t
    y0 = num / den - t
    # Beyond t = 1e15 the start is exact to working precision (its error falls like log(t) / t^2) and the
    # polish would square y past float32's range: it runs on a harmless stand-in there and is not used.
    far = t > _NO_POLISH
    y = jnp.where(far, -1.0, y0)
    lq_p = jnp.where(far, _LOG_PHI_AT_ONE, lq)
    for _ in range(2 if _is_64(lq) else 1):
        mills = _mills(-y)
        newton = (jnp.log(mills) + _log_phi(y) - lq_p) * mills  # f / f' with f = log Phi(y) - lq, f' = 1 / R
        slope = -y - 1 / mills  # f'' / f'
        y = y - newton / (1 - 0.5 * newton * slope)
    return jnp.where(neg_inf, -jnp.inf, jnp.where(far, y0, y))


def _log0(s):
    """``log(s)`` for sums ``s >= 0`` of masked terms, with every derivative 0 where ``s == 0``.

    A sum is exactly 0 where every term of it is masked out (a mixture tail with no
    component on that side): ``log`` is ``-inf`` there and stays out of the
    ``logaddexp`` it feeds, but its derivative ``ds / s`` would be ``0 / 0``, and
    second derivatives through the mixture's JVP (``jax.hessian``) NaN. The masked
    terms' tangents are 0, so 0 is the right value. Done with a ``where`` on both
    sides of the ``log`` rather than a custom JVP: reverse mode evaluates the
    known parts of a JVP rule with their plain derivatives, which a custom rule
    would not reach (forward-over-reverse inside ``lax.scan`` still gave NaN).
    """
    zero = s == 0  # (a NaN sum stays NaN)
    return jnp.where(zero, -jnp.inf, jnp.log(jnp.where(zero, 1, s)))


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


def _log_ndtr_neg_abs(y):
    """``log Phi(-|y|)``."""
    u = jnp.abs(y)
    return jnp.log(_mills(u)) + _log_phi(u)
