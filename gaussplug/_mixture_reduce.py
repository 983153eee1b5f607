"""Per-point sums and extrema over a mixture's components: vectorised, by ``lax.scan`` or by row chunks."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

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
