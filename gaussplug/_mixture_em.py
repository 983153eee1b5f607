"""Batched EM for per-dimension Gaussian mixtures (the greedy fit of the mixture-CDF families).

Every column of the data gets its own ``K``-component mixture; all columns are
fitted at once. The cost of the iterations does not depend on the number of
rows ``n``:

1. One pass over the data (in row chunks) standardises each column and bins
   it into ``n_bins`` bins that are equally wide in ``asinh(u / 0.05)`` (``u``
   the standardised value: fine near the centre, geometric in the tails, so
   heavy tails and outliers cost no resolution). Per bin it keeps the exact
   sufficient statistics: the count, the mean and the sum of squared
   deviations.
2. EM runs on these weighted bins, its E-step evaluating each bin at its mean
   and its M-step using the exact within-bin moments (so a component can still
   be narrower than a bin). Iterations are accelerated with SQUAREM
   (Varadhan & Roland 2008, scheme S3, with a monotonicity safeguard), which
   needs several times fewer EM steps on the flat likelihoods of overlapping
   components.
3. One exact EM step on all rows (accumulated over row chunks, never
   forming ``(n, D, K)`` arrays) polishes the fit; its E-step gives the exact
   mean log-likelihood (of the params before the step, so a lower bound for
   the result) used for the identity fallback. A column without spread (constant
   up to the rows' rounding) gets a unit-scale shift instead of a fit.

With at most ``n_bins`` rows the rows themselves are the bins (exact EM). All
array work is pure JAX, in the data's floating dtype, jitted once per shape: per
row count for the exact EM, per row bucket (:mod:`gaussplug._buckets`, the rows
padded and weighted 0) for the binned one.
This module prepares the data (passes over the rows, binning, the initial
params and scale floors) and finishes the fit; the E- and M-steps and SQUAREM
live in :mod:`gaussplug._mixture_em_steps`.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gaussplug import _sharding as shd
from gaussplug._buckets import pad_rows, padded_rows
from gaussplug._data import as_float as _as_float
from gaussplug._mixture_em_steps import _LOG_2PI, _e_step, _m_step, _squarem

__all__ = ["fit_mixture"]

#: Bins per column (the EM cost per iteration is ``D * n_bins * K``).
_N_BINS = 512
#: Width of the linear core of the binning transform ``asinh(u / _BIN_CORE)``, in standard deviations.
_BIN_CORE = 0.05
#: Tail share left out on each side by the trimmed moments that replace an outlier-inflated std as bin units.
_TRIM = 0.01
#: The bins switch to trimmed units where the trimmed std is below this fraction of the std.
_OUTLIER_STD_RATIO = 0.1
#: Exact EM steps on all rows after the binned fit.
_POLISH = 1
#: Rows times columns times components per chunk of a pass over the data.
_CHUNK = 1 << 20
#: The data's resolution: this many units in the last place (``eps``) of the rows' RMS norm. The data arriving at a
#: layer carry rounding errors of about one such unit (a rotation mixes every coordinate of a row), so no component
#: is narrower than this, and a column whose standard deviation is at most this has no spread to fit.
_RESOLUTION_ULPS = 64


def _row_chunks(fn, arrays, init, n: int, rows: int, combine=jnp.add):
    """``fn(*chunk, weight)`` combined (summed) over row chunks of ``arrays`` (each ``(n, ...)``).

    ``weight`` is ``(rows,)``: 1 for rows not yet counted, 0 for the overlap of
    the last chunk (which is shifted back to end at row ``n``).
    """
    if n <= rows:
        return jax.tree.map(combine, init, fn(*arrays, jnp.ones((n,), arrays[0].dtype)))

    def body(i, acc):
        start = jnp.minimum(i * rows, n - rows)
        chunk = [jax.lax.dynamic_slice_in_dim(a, start, rows) for a in arrays]
        weight = (start + jnp.arange(rows) >= i * rows).astype(arrays[0].dtype)
        return jax.tree.map(combine, acc, fn(*chunk, weight))

    return jax.lax.fori_loop(0, -(-n // rows), body, init)


def _weighted_row_chunks(fn, x, weight, init, rows: int, combine=jnp.add):
    """:func:`_row_chunks` of ``fn(x_chunk, w)`` with ``w`` the chunk's overlap weight times its rows' ``weight``."""
    return _row_chunks(lambda xc, wc, w: fn(xc, w * wc), (x, weight), init, x.shape[0], rows, combine)


def _bin(passes, d: int, dtype, mean, std, lo, width, n_bins: int):
    """Per-column bin counts, sums of deviations from the bin centre and their squares: three ``(n_bins, D)``.

    ``passes(fn, init)`` sums ``fn(x_chunk, weight)`` over the rows (see :func:`_fit_em`).
    """
    centre = _BIN_CORE * jnp.sinh(lo + width * (jnp.arange(n_bins, dtype=dtype)[:, None] + 0.5))  # (B, D)
    flat_centre = centre.reshape(-1)

    def chunk(xc, weight):
        u = (xc - mean) / std
        b = jnp.clip(jnp.floor((jnp.arcsinh(u / _BIN_CORE) - lo) / width), 0, n_bins - 1).astype(jnp.int32)
        idx = b * d + jnp.arange(d, dtype=jnp.int32)  # row-major (B, D)
        dev = u - flat_centre[idx]
        w = jnp.broadcast_to(weight[:, None], u.shape)
        data = jnp.stack([w, w * dev, w * dev * dev], axis=-1).reshape(-1, 3)
        return jax.ops.segment_sum(data, idx.reshape(-1), num_segments=n_bins * d)

    sums = passes(chunk, jnp.zeros((n_bins * d, 3), dtype))
    count, dev, dev2 = (sums[:, i].reshape(n_bins, d) for i in range(3))
    safe = jnp.maximum(count, 1.0)
    return count, jnp.where(count > 0, centre + dev / safe, centre), jnp.maximum(dev2 - dev * dev / safe, 0.0)


def _bin_range(lo, hi, mean, std, n_bins: int):
    """``(lo, width)`` of ``n_bins`` bins in ``asinh(u / _BIN_CORE)``, ``u = (x - mean) / std``, over ``[lo, hi]``."""
    lo = jnp.arcsinh((lo - mean) / std / _BIN_CORE)
    hi = jnp.arcsinh((hi - mean) / std / _BIN_CORE)
    width = jnp.maximum(hi - lo, 1e-6) / n_bins
    lo = lo - 1e-3 * width  # keep the extremes inside the first and last bins
    return lo, width * (1 + 2e-3 / n_bins)


def _trim_bins(count):
    """Per column, the bins that reach the ``_TRIM`` and ``1 - _TRIM`` quantiles of binned counts ``(B, D)``."""
    cum = jnp.cumsum(count, axis=0)
    first = jnp.sum(cum < _TRIM * cum[-1], axis=0)
    return first, jnp.minimum(jnp.sum(cum < (1 - _TRIM) * cum[-1], axis=0), count.shape[0] - 1)


def _binned_trimmed_std(count, values, m2):
    """The std (in the bins' units) of the rows in the bins from the 1 % to the 99 % quantile: a cheap estimate."""
    first, last = _trim_bins(count)
    idx = jnp.arange(count.shape[0])[:, None]
    inside = (idx >= first) & (idx <= last)
    c = jnp.where(inside, count, 0.0)
    n_in = jnp.maximum(jnp.sum(c, axis=0), 1.0)
    mu = jnp.sum(c * values, axis=0) / n_in
    var = jnp.sum(jnp.where(inside, m2, 0.0) + c * (values - mu) ** 2, axis=0) / n_in
    return jnp.sqrt(jnp.maximum(var, 0.0))


def _trimmed_moments(passes, d: int, dtype, count, mean, std, lo, width):
    """Mean and std of the rows inside the bins that hold the 1 % and 99 % quantiles (and those between)."""
    first, last = _trim_bins(count)
    edge_lo = mean + std * _BIN_CORE * jnp.sinh(lo + width * first)
    edge_hi = mean + std * _BIN_CORE * jnp.sinh(lo + width * (last + 1))

    def sums(centre):  # two passes (mean, then squares about it): the outliers may put ``mean`` far off the bulk
        def chunk(xc, w):
            inside = ((xc >= edge_lo) & (xc <= edge_hi)) * w[:, None]
            dev = jnp.where(inside > 0, xc - centre, 0.0)
            return jnp.sum(inside, axis=0), jnp.sum(inside * dev, axis=0), jnp.sum(inside * dev * dev, axis=0)

        n_in, s1, s2 = passes(chunk, (jnp.zeros(d, dtype),) * 3)
        return jnp.maximum(n_in, 1.0), s1, s2

    n_in, s1, _ = sums(0.5 * (edge_lo + edge_hi))
    centre = 0.5 * (edge_lo + edge_hi) + s1 / n_in
    n_in, s1, s2 = sums(centre)
    return centre + s1 / n_in, jnp.sqrt(jnp.maximum(s2 / n_in - (s1 / n_in) ** 2, 0.0))


def _quantiles(count, values, levels):
    """Quantiles of binned data (``count``, bin ``values``: ``(B, D)``) at ``levels``: ``(len(levels), D)``."""
    cum = jnp.cumsum(count, axis=0)
    below = cum[None] < levels[:, None, None] * cum[-1]  # (L, B, D)
    idx = jnp.minimum(jnp.sum(below, axis=1), count.shape[0] - 1)  # first bin reaching the level
    return jnp.take_along_axis(values, idx, axis=0)


@functools.partial(jax.jit, static_argnames=("n_components", "max_iter", "n_bins"))
def _fit_em(x, tol, scale_floor, *, n_components, max_iter, n_bins):
    """The fit on one device: each pass over the rows goes through :func:`_row_chunks`."""
    n, d = x.shape
    rows = max(1, _CHUNK // (d * n_components))

    def passes(fn, init, combine=jnp.add):
        return _row_chunks(fn, (x,), init, n, rows, combine)

    settings = {"n_components": n_components, "max_iter": max_iter, "n_bins": n_bins}
    return _em(x, x[0], passes, n, tol, scale_floor, exact=n <= n_bins, **settings)


@functools.partial(jax.jit, static_argnames=("n_components", "max_iter", "n_bins"))
def _fit_em_bucket(x, n, tol, scale_floor, *, n_components, max_iter, n_bins):
    """The binned fit (``n > n_bins``) on the first ``n`` rows of ``x``, the rest copies of row 0 weighted 0.

    ``x`` has a row bucket's rows (:mod:`gaussplug._buckets`) and ``n`` is traced, so fits on other row
    counts in the same bucket reuse this compilation. The ``max`` passes need no weights, as padding
    copies a real row.
    """
    m, d = x.shape
    rows = max(1, _CHUNK // (d * n_components))
    weight = (jnp.arange(m) < n).astype(x.dtype)

    def passes(fn, init, combine=jnp.add):
        return _weighted_row_chunks(fn, x, weight, init, rows, combine)

    settings = {"n_components": n_components, "max_iter": max_iter, "n_bins": n_bins}
    return _em(x, x[0], passes, n.astype(x.dtype), tol, scale_floor, exact=False, **settings)


#: The collective that finishes each ``combine`` of a row pass across devices.
_COLLECTIVES = {jnp.add: jax.lax.psum, jnp.maximum: jax.lax.pmax, jnp.minimum: jax.lax.pmin}


@functools.partial(jax.jit, static_argnames=("n", "mesh", "n_components", "max_iter", "n_bins"))
def _fit_em_sharded(x, mask, tol, scale_floor, *, n, mesh, n_components, max_iter, n_bins):
    """The fit on the rows of :func:`gaussplug._sharding.shard_rows` (``x``, ``mask``; ``n`` real rows in all).

    The fit runs under one ``jax.shard_map`` over the data axis. Each pass over
    the rows runs :func:`_row_chunks` on the device's slice (padding rows
    weighted 0 through ``weight``; the ``max`` pass needs no mask, as padding
    copies a real row) and combines the partial results with ``psum`` or
    ``pmax``, so every device holds the same totals. Everything between the
    passes (the EM iterations on the binned statistics) runs replicated, the
    same on every device.
    """
    d = x.shape[1]
    rows = max(1, _CHUNK // (d * n_components))
    axis = shd.data_axis(mesh)

    def body(xl, ml, tol, scale_floor):
        weight = ml.astype(xl.dtype)

        def passes(fn, init, combine=jnp.add):
            out = _weighted_row_chunks(fn, xl, weight, init, rows, combine)
            return jax.tree.map(lambda a: _COLLECTIVES[combine](a, axis), out)

        first = jax.lax.psum(jnp.where(jax.lax.axis_index(axis) == 0, xl[0], 0), axis)  # global row 0
        settings = {"n_components": n_components, "max_iter": max_iter, "n_bins": n_bins}
        return _em(xl, first, passes, n, tol, scale_floor, exact=n <= n_bins, **settings)

    # check_vma=False: after each collective the values are equal on every device, which the type system
    # cannot see through the row passes' loops; the outputs are therefore replicated.
    specs = (P(axis), P(axis), P(), P())
    return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=False)(x, mask, tol, scale_floor)


def _em(x, shift, passes, n, tol, scale_floor, *, n_components, max_iter, n_bins, exact: bool):
    """The EM fit of :func:`fit_mixture` on the ``n`` rows of ``x``.

    ``passes(fn, init, combine=jnp.add)`` combines ``fn(x_chunk, weight)`` over
    all rows; ``x`` itself is only sorted, for the ``exact`` fit (static: ``n <= n_bins``,
    where ``x`` holds just the ``n`` rows). ``n``: the number of rows, an int or
    (binned) a traced scalar. ``shift``: the first row (for accurate moments).
    """
    d = x.shape[1]
    k = n_components
    # Rows whose squares would overflow the dtype (|x| past ~1e12 in float32) are fitted in units of a power of two,
    # c, and the params scaled back (exactly); otherwise c = 1 and every step is the unscaled one, bit for bit.
    c = _overflow_unit(passes, x.dtype)
    row_passes = passes

    def passes(fn, init, combine=jnp.add):
        return row_passes(lambda xc, w: fn(xc / c, w), init, combine)

    shift = shift / c
    # Standardise per column (moments in one pass, shifted by the first row for accuracy).
    s1, s2 = passes(lambda xc, w: ((xc - shift).T @ w, ((xc - shift) ** 2).T @ w), (jnp.zeros(d, x.dtype),) * 2)
    mean = shift + s1 / n
    raw_std = jnp.sqrt(jnp.maximum(s2 / n - (s1 / n) ** 2, 0.0))
    resolution = _resolution(mean, raw_std)
    flat = raw_std <= resolution  # constant, or constant up to rounding: no spread to fit
    std = jnp.where(raw_std > 0, raw_std, 1.0)
    if exact:  # the rows are the bins (sorted per column for the quantiles): exact EM throughout
        values = jnp.sort((x / c - mean) / std, axis=0)
        count, m2 = jnp.ones((1, n), x.dtype), None
    else:
        neg_lo, hi = passes(
            lambda xc, w: (jnp.max(-xc, axis=0), jnp.max(xc, axis=0)),
            (jnp.full(d, -jnp.inf, x.dtype),) * 2, combine=jnp.maximum,
        )  # fmt: skip
        lo, width = _bin_range(-neg_lo, hi, mean, std, n_bins)
        count, values, m2 = _bin(passes, d, x.dtype, mean, std, lo, width, n_bins)
        # A few far outliers inflate the std so much that the bulk of a column falls into a handful of bins (the
        # whole bulk into one, for one row 1e7 sds out): there, the bins' units become the trimmed moments of the
        # rows between the 1 % and 99 % quantile bins. Elsewhere nothing changes (same units, same bins), and
        # unless the bins themselves suggest it, the extra passes over the rows are skipped.

        def robust_units(_):
            mean_t, std_t = _trimmed_moments(passes, d, x.dtype, count, mean, std, lo, width)
            robust = (std_t > 0) & (std_t < _OUTLIER_STD_RATIO * std) & ~flat
            mean2, std2 = jnp.where(robust, mean_t, mean), jnp.where(robust, std_t, std)
            # The rows' rounding, too, is that of the bulk's rows, not of an RMS norm the outliers set.
            res = jnp.where(robust.any(), _resolution(mean2, jnp.where(robust, std_t, raw_std)), resolution)
            lo2, width2 = _bin_range(-neg_lo, hi, mean2, std2, n_bins)
            lo2, width2 = jnp.where(robust, lo2, lo), jnp.where(robust, width2, width)
            rebinned = _bin(passes, d, x.dtype, mean2, std2, lo2, width2, n_bins)
            pairs = zip(rebinned, (count, values, m2), strict=True)
            return (mean2, std2, res, *(jnp.where(robust, new, old) for new, old in pairs))

        suspect = jnp.any((_binned_trimmed_std(count, values, m2) < 3 * _OUTLIER_STD_RATIO) & ~flat)
        same = (mean, std, resolution, count, values, m2)
        mean, std, resolution, count, values, m2 = jax.lax.cond(suspect, robust_units, lambda _: same, None)
    # Deterministic init: means at the quantile midpoints, a common scale; the scale floor is relative to a
    # robust spread, so heavy tails cannot inflate it.
    levels = jnp.concatenate([jnp.asarray([0.25, 0.75], x.dtype), (jnp.arange(k, dtype=x.dtype) + 0.5) / k])
    quantiles = _quantiles(jnp.broadcast_to(count.T if exact else count, values.shape), values, levels)
    values, count = values.T, count if exact else count.T  # (D, B): bins on the minor axis
    m2 = None if m2 is None else m2.T
    spread = jnp.minimum(1.0, (quantiles[1] - quantiles[0]) / 1.349)
    # Nor narrower than the data resolve: a fraction 1 / n of the spread (the gap between neighbouring rows is about
    # 2.5 spread / n, so a narrower component cannot be told from a point mass) or their rounding (_resolution).
    floor = jnp.maximum(jnp.maximum(scale_floor, 1.0 / n) * jnp.where(spread > 0, spread, 1.0), resolution / std)
    loc0 = quantiles[2:].T
    log_scale0 = jnp.broadcast_to(jnp.log(jnp.maximum(1.0 / k, floor))[:, None], loc0.shape)
    params = (jnp.full_like(loc0, -math.log(k)), loc0, log_scale0)

    def em(p):
        stats = _e_step(values, count, m2, *p)
        return _m_step(stats, p, floor, n), stats[0] / n

    params, log_lik, n_iter = _squarem(em, params, floor, tol, max_iter)
    if not exact:  # _POLISH exact EM steps on all rows (their E-steps give the exact log-likelihood)

        def row_stats(p):
            def chunk(xc, w):
                return _e_step(((xc - mean) / std).T, w[None], None, *p)

            zeros = (jnp.zeros(d, x.dtype), *(jnp.zeros((k, d), x.dtype),) * 3)
            return passes(chunk, zeros)

        def polish(_, carry):  # the log-likelihood of the params before the step: a lower bound after it
            p, _ = carry
            stats = row_stats(p)
            return _m_step(stats, p, floor, n), stats[0] / n

        params, log_lik = jax.lax.fori_loop(0, _POLISH, polish, (params, log_lik))
    log_lik = log_lik - jnp.log(std) - jnp.log(c)  # from here on, the data's own units
    logits, loc, log_scale = params
    # Never worse than the identity layer (F = Phi) on any dimension.
    gauss = passes(lambda xc, w: (-0.5 * (xc * xc).T @ w,), (jnp.zeros(d, x.dtype),))[0] * (c * c)
    worse = log_lik < gauss / n - 0.5 * _LOG_2PI
    # A column without spread gets the unit-scale shift F(x) = Phi(x - mean): at least as likely as the identity,
    # and, unlike a spike as narrow as the floor, it does not stretch the rows that a subsample did not see.
    keep = ~(worse | flat)[:, None]
    logits = jnp.where(keep, logits, 0.0)
    loc = jnp.where(keep, (mean[:, None] + std[:, None] * loc) * c, jnp.where(flat, mean * c, 0.0)[:, None])
    log_scale = jnp.where(keep, log_scale + jnp.log(std)[:, None] + jnp.log(c), 0.0)
    log_lik = jnp.where(flat, -0.5 * _LOG_2PI - 0.5 * (raw_std * c) ** 2, log_lik)
    return (logits, loc, log_scale), (log_lik, n_iter)


def _overflow_unit(passes, dtype):
    """1, or the power of two at the rows' largest magnitude when their squares could overflow or underflow ``dtype``.

    The moments sum squares over the rows: past ``sqrt(max) * 2**-24`` (about 1.1e12 in float32) that sum can
    overflow, and below ``sqrt(tiny) * 2**24`` (about 1.8e-12) the squares lose their digits (a column of 1e-30s
    would look constant). :func:`_em` then works in units of ``c`` (dividing by a power of two is exact).
    """
    big = passes(lambda xc, w: (jnp.max(jnp.abs(xc)),), (jnp.zeros((), dtype),), combine=jnp.maximum)[0]
    info = jnp.finfo(dtype)
    high, low = math.sqrt(float(info.max)) * 2.0**-24, math.sqrt(float(info.tiny)) * 2.0**24
    exponent = jnp.ceil(jnp.log2(jnp.where(big > 0, big, 1.0))).astype(jnp.int32)
    rescale = (big > high) | ((big < low) & (big > 0))
    return jnp.where(rescale, jnp.ldexp(jnp.ones((), dtype), exponent), jnp.ones((), dtype))


def _resolution(mean, std):
    """The smallest spread the data resolve: ``_RESOLUTION_ULPS`` units in the last place of the rows' RMS norm.

    ``mean`` and ``std`` are the columns' moments, so the rows' mean squared norm is ``sum(mean**2 + std**2)``.
    """
    rms = jnp.sqrt(jnp.sum(mean * mean + std * std))
    return _RESOLUTION_ULPS * jnp.finfo(mean.dtype).eps * rms


def fit_mixture(
    x,
    n_components: int,
    *,
    key=None,
    max_iter: int = 300,
    tol: float = 3e-5,
    scale_floor: float = 1e-3,
    n_bins: int = _N_BINS,
    mesh=None,
):
    """Fits a ``K``-component Gaussian mixture to every column of ``x`` by batched EM.

    All dimensions are fitted at once (compiled once per shape; beyond
    ``n_bins`` rows once per row bucket, so fits on 3000 and 3050 rows share one
    compilation, up to 64 MiB of rows), in standardised units, with EM on binned
    sufficient statistics (``n_bins`` bins per column, equally wide in
    ``asinh(u / 0.05)``, so the iterations cost the same for any number of
    rows), accelerated by SQUAREM, then one exact EM step on all rows; see the
    module docstring. Passes over the data go in row chunks, so memory stays
    ``O(n D)`` (never ``(n, D, K)``). Initialisation is deterministic: means at
    the ``K`` quantile midpoints ``(k + 1/2)/K`` and a common scale ``std / K``.
    Component scales are floored at ``max(scale_floor, 1 / n)`` times the
    dimension's spread (``min(std, IQR/1.349)``), so a narrow component cannot
    collapse onto a few points or dominate a tail: neighbouring rows are about
    ``2.5 spread / n`` apart, so a narrower component could not be told from a
    point mass. They are also floored at the data's resolution, 64 units in the
    last place (``eps`` of ``x``'s dtype) of the RMS norm of ``x``'s rows, about
    the rounding error that a rotation leaves in every coordinate: a component
    fitted to rounding noise would make the density depend on the last bits of
    its input. The binned EM stops when no dimension's mean log-likelihood
    changes by more than ``tol`` nats in an accelerated cycle.

    A dimension whose fitted mixture has a lower mean log-likelihood than the
    standard normal gets the identity mixture (``loc = 0``, ``log_scale = 0``,
    equal weights; then ``Phi^{-1}(F(x)) = x``), so a greedy step never lowers
    the likelihood. A dimension without spread (a standard deviation of at
    most the resolution: constant, or constant up to rounding, as in the
    directions that ``n <= D`` rows do not span, or a column that a
    subsample sees constant) has no width to fit: it gets the unit-scale
    shift (every ``loc`` at its mean, ``log_scale = 0``, equal weights; then
    ``Phi^{-1}(F(x)) = x - mean``), which scores at least ``N(0, 1)`` and
    keeps rows the fit did not see at their distance instead of stretching
    them by the inverse of a floor-wide spike.

    **Several devices.** With a ``mesh`` (e.g. ``gaussplug.fit_mesh()`` inside
    a warm start) whose data axis has more than one device, the rows are split
    across the devices (:func:`gaussplug._sharding.shard_rows`) and every pass
    over them (moments, range, binning, the exact polish step, the Gaussian
    baseline) computes per-device partial sums that are combined with
    ``psum``/``pmax``; the EM iterations on the binned statistics run
    replicated. The result equals the one-device fit up to float rounding.
    With at most ``n_bins`` rows in all, the rows are gathered and fitted on
    one device. Under ``jax.distributed`` each process passes its own rows
    (``n`` is then the count over all processes) and every process gets the
    same fit.

    Args:
      x: Data of shape ``(n, D)``; computed in its floating dtype. With a
        ``mesh`` under ``jax.distributed``: this process's rows.
      n_components: Number of components ``K`` (a positive int).
      key: Unused; accepted for signature uniformity (the fit is
        deterministic).
      max_iter: Maximum EM steps on the bins (three per accelerated cycle).
      tol: Convergence tolerance on the change of mean log-likelihood.
      scale_floor: Smallest component scale relative to the spread (raised
        to ``1 / n`` for fewer than ``1 / scale_floor`` rows).
      n_bins: Bins per column; with at most this many rows, exact EM on the rows.
      mesh: ``None`` (one device) or a :class:`jax.sharding.Mesh` whose
        ``"data"`` axis (or only axis) the row passes are split along.

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
    settings = {"n_components": int(n_components), "max_iter": int(max_iter), "n_bins": int(n_bins)}
    if mesh is not None and shd.n_shards(mesh) > 1:
        return _fit_on_mesh(x, tol, scale_floor, mesh, settings)
    (x,) = _as_float(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"Expected data of shape (n, D) with n >= 1; got shape {tuple(x.shape)}.")
    n = x.shape[0]
    m = padded_rows(n, x.shape[1] * x.dtype.itemsize)
    if n <= settings["n_bins"] or m == n:
        params, _ = _fit_em(x, tol, scale_floor, **settings)
    else:  # padded to its row bucket on the host: another n in the bucket reuses the compiled fit
        params, _ = _fit_em_bucket(pad_rows(np.asarray(x), m), np.int32(n), tol, scale_floor, **settings)
    return params


def _fit_on_mesh(x, tol, scale_floor, mesh, settings):
    """:func:`fit_mixture` with its row passes split over ``mesh`` (no copy of ``x`` on the default device)."""
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"Expected data of shape (n, D) with n >= 1; got shape {tuple(x.shape)}.")
    dtype = jnp.result_type(x.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(dtype, float)
    x = x.astype(dtype)
    if shd.agree(x.shape[0], "sum", mesh) <= settings["n_bins"]:  # few rows: exact EM on one device
        return fit_mixture(shd.gather_rows(x, mesh), key=None, tol=tol, scale_floor=scale_floor, **settings)
    rows = shd.shard_rows(x, mesh)
    params, _ = _fit_em_sharded(rows.x, rows.mask, tol, scale_floor, n=rows.n, mesh=mesh, **settings)
    return shd.to_local(params)
