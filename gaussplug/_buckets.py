"""Row-count buckets: calls outside ``jax.jit`` pad their rows so that a new row count seldom compiles anew.

XLA compiles a jitted function once per input shape. On a CPU a flow's
log-density takes a second or more to compile and a training chunk several, so
scoring, fitting or training on data of many sizes (cross-validation folds,
bootstrap draws, a sweep over datasets) would spend most of its time compiling.
Instead, the row count ``n`` is rounded up to a *bucket*: ``n`` itself up to 16,
beyond that the next number with at most four significant bits (17 -> 18,
1000 -> 1024, 3000 -> 3072, 3100 -> 3328). That is eight buckets per doubling,
at most 12.5 % more rows, padded with copies of the first row (finite and in
the data's domain) whose results are dropped. Padding copies the rows, so data
whose padded copy would exceed :data:`MAX_PADDED_BYTES` (64 MiB, a million rows of
16 float32 columns) are not padded: there the work and the memory outweigh a
compilation. Set ``GAUSSPLUG_ROW_BUCKETS=0`` to
turn this off (every row count is then its own bucket: for debugging, and for
``benchmarks/recompile.py``'s comparison).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from gaussplug._errors import GaussplugError

__all__ = ["bucket", "on_bucket", "pad_rows", "padded_rows", "traced"]

#: Row counts up to this are their own bucket.
EXACT_BELOW = 16
#: Whether row counts are rounded up to buckets (``GAUSSPLUG_ROW_BUCKETS=0`` turns it off).
ENABLED = os.environ.get("GAUSSPLUG_ROW_BUCKETS", "1") != "0"
#: The largest padded copy (bytes) made to reuse a compilation; bigger data keep their row count.
MAX_PADDED_BYTES = 1 << 26


def bucket(n: int) -> int:
    """The bucket of ``n`` rows: ``n`` up to 16, else ``n`` rounded up to four significant bits (< 12.5 % more).

    Example:
      >>> [bucket(n) for n in (5, 16, 17, 1000, 1024, 1025, 3000)]
      [5, 16, 18, 1024, 1024, 1152, 3072]
    """
    n = int(n)
    if n <= EXACT_BELOW or not ENABLED:
        return n
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


def padded_rows(n: int, row_bytes: int) -> int:
    """Rows to pad ``n`` rows of ``row_bytes`` bytes to: their bucket, unless that copy passes :data:`MAX_PADDED_BYTES`.

    Example:
      >>> padded_rows(1000, 64), padded_rows(1_100_000, 64)
      (1024, 1100000)
    """
    m = bucket(n)
    return m if m * row_bytes <= MAX_PADDED_BYTES else int(n)


def pad_rows(x: np.ndarray, m: int) -> np.ndarray:
    """``x`` (``(n >= 1, ...)``, on the host) with ``m - n`` copies of its first row appended."""
    n = x.shape[0]
    if m == n:
        return x
    return np.concatenate([x, np.broadcast_to(x[:1], (m - n, *x.shape[1:]))])


def traced(*args) -> bool:
    """Whether any leaf of ``args`` is being traced (under ``jax.jit``, ``grad`` or ``vmap``)."""
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args))


def on_bucket(fn, lead, x, *, rows: int | None = None):
    """``fn(*lead, x)`` on ``x``'s rows padded to their bucket, every output cut back to ``x``'s rows.

    Under tracing, for ``x`` of other than two axes or spread over several
    devices, for a row count that is its own bucket (16 rows or fewer, 1024,
    ...) or for rows too large to copy (:func:`padded_rows`) this is
    ``fn(*lead, x)`` itself. Padding and cutting happen on the host, so no
    new shape reaches XLA. A :class:`gaussplug.GaussplugError` raised for the
    padded rows (a plugin's bijector checked while tracing) is raised again by
    a call on ``x`` itself, so that its message names the caller's shapes.

    Args:
      fn: A jitted function whose outputs all have the rows of ``x`` on their leading axis.
      lead: The arguments before ``x`` (a tuple).
      x: ``(n, dim)`` rows.
      rows: Pad to this many rows (at least ``n``) instead of ``n``'s bucket.

    Returns:
      ``fn``'s outputs for the ``n`` rows (JAX arrays).
    """
    if x.ndim != 2 or traced(lead, x) or (isinstance(x, jax.Array) and len(x.sharding.device_set) > 1):
        return fn(*lead, x)  # (rows sharded over devices stay so)
    n = x.shape[0]
    m = padded_rows(n, x.shape[1] * np.dtype(x.dtype).itemsize) if rows is None else rows
    if m == n:
        return fn(*lead, x)
    try:
        out = fn(*lead, pad_rows(np.asarray(x), m))
    except GaussplugError:
        return fn(*lead, x)
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[:n]), out)
