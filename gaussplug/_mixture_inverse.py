"""Inverse of the mixture CDF Gaussianization: :func:`gaussianize_inverse` and its root finders.

A cubic Hermite table of exact roots gives points that share their params a bracketed start, polished
by Newton; every other point runs safeguarded Newton (bisection fallback) on the log-tail residual.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from gaussplug._data import as_float as _as_float
from gaussplug._mixture_forward import _batch_shape, _comp_params, _far_bounds, _gaussianize, _log_joint
from gaussplug._mixture_reduce import _by_rows, _reduce_components, _use_scan
from gaussplug._normal import _INV_SQRT_2PI, _LOG_2PI, _is_64, _log_ndtr_neg_abs, _mills

__all__ = ["gaussianize_inverse"]

# Inverse: a cubic Hermite table of x(y) on |y| <= _TABLE_Y with _TABLE_NODES nodes gives the start.
_TABLE_Y = 8.0
_TABLE_NODES = 2049
# A table point whose last Newton step moved it by more than this (relative) is solved again, generally;
# the general solver gathers such points while they are at most 1 / _REDO_SHARE of a chunk.
_REDO_STEP32, _REDO_STEP64, _REDO_SHARE = 1e-4, 1e-8, 256


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
