"""The warm start's data and how it is pushed forward through each fitted layer.

:class:`_OneDevice` keeps the rows as a host array and maps them in row chunks
through the default device; :class:`_OnMesh` keeps them split by rows over a
device mesh and maps each device's rows there. Both give
:func:`gaussplug.warm_start` the rows a fit sees, the initial log-likelihood,
and after each layer the mean log-likelihood and log-det (or the rows that map
to NaN/inf).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gaussplug import _sharding as shd
from gaussplug._buckets import bucket
from gaussplug._runtime import standard_normal_log_prob


def _base_log_prob(z) -> np.ndarray:
    """Per row, ``log N(z; 0, I)`` as the flow computes it in ``z``'s dtype, but summed on the host in float64.

    A row whose value is beyond the dtype's range is ``-inf``, as in ``flow.log_prob`` (the warm start stops on
    a layer that sends rows there); the float64 sums keep finite values finite, without overflow warnings.
    """
    dtype = np.dtype(z.dtype)
    row = -0.5 * np.sum(np.square(np.asarray(z, np.float64)), axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
    return np.where(row < -float(np.finfo(dtype).max), -np.inf, row)


class _OneDevice:
    """The warm start's data as a host array, pushed forward in row chunks through the default device.

    The first layer writes into a new host buffer (the caller's array is never written); later layers
    overwrite that buffer chunk by chunk, so the data costs two host copies whatever the depth.
    """

    def __init__(self, x):
        self.x = self._input = x
        self.n = x.shape[0]
        self.cum_log_det = np.zeros(self.n, np.float64)  # summed in float64 whatever the data's dtype

    def _rows(self) -> int:
        """Rows per pushed chunk: all of them up to ~4M values, as a row bucket (another n seldom compiles anew)."""
        return bucket(min(self.n, max(1, (1 << 22) // self.x.shape[1])))

    def initial_log_likelihood(self) -> float:
        rows = self._rows()
        total = sum(float(np.sum(_base_log_prob(self.x[i : i + rows]))) for i in range(0, self.n, rows))
        return total / self.n

    def fit_rows(self, fit_idx):
        """The rows a fit sees (a host array)."""
        return self.x if fit_idx is None else self.x[fit_idx]

    def push(self, runtime, lr, layer_params):
        """Maps the data through one fitted layer: ``(bad rows, mean log-likelihood, mean log-det)``.

        Equal row chunks (one compilation; bounded intermediates for large n), the last one padded with
        copies of its first row. Each chunk's result is written over the rows it was read from, once it
        has been computed (in place after the first layer). On NaN/inf the warm start stops with an error,
        so a half-written buffer is never used: ``bad rows`` is then a phrase counting the rows that map
        to NaN/inf (the rest are mapped to count them, unwritten), else None.
        """
        n, dim = self.x.shape
        rows = self._rows()
        src = self.x
        dst = None if src is self._input else src
        log_det, base = np.empty(n, np.float64), np.empty(n, np.float64)  # float64, as in initial_log_likelihood
        for start in range(0, n, rows):
            valid = min(rows, n - start)
            y_c, log_det_c = runtime.layer_forward(lr.name, layer_params, src[start : start + valid], rows=rows)
            y_c, log_det_c = np.asarray(y_c), np.asarray(log_det_c)  # checked on the host: no compilation per n
            if not (np.isfinite(y_c).all() and np.isfinite(log_det_c).all()):
                return self._count_bad(runtime, lr, layer_params, start, rows), None, None
            if dst is None:
                dst = np.empty((n, dim), y_c.dtype)
            dst[start : start + valid] = y_c
            log_det[start : start + valid] = log_det_c
            base[start : start + valid] = _base_log_prob(y_c)
        self.x = dst
        self.cum_log_det = self.cum_log_det + log_det
        return None, float(np.mean(base + self.cum_log_det)), float(np.mean(log_det, dtype=np.float64))

    def _count_bad(self, runtime, lr, layer_params, first_chunk: int, rows: int) -> str:
        """`` (N of M rows, first: row index i)``: the rows from ``first_chunk`` on that the layer maps to NaN/inf."""
        bad = []
        for start in range(first_chunk, self.x.shape[0], rows):
            chunk = self.x[start : start + rows]
            y_c, log_det_c = (np.asarray(a) for a in runtime.layer_forward(lr.name, layer_params, chunk, rows=rows))
            bad.append(start + np.flatnonzero(~(np.isfinite(y_c).all(axis=-1) & np.isfinite(log_det_c))))
        bad = np.concatenate(bad)
        return f" ({bad.size} of {self.x.shape[0]} rows, first: row index {int(bad[0])})"


class _OnMesh:
    """The warm start's data split by rows over a mesh (:func:`shard_rows`), pushed forward there."""

    def __init__(self, x: np.ndarray, mesh):
        self.mesh = mesh
        self.host = x  # this process's rows on the host, until the first push
        self.n_local = x.shape[0]
        self.rows = shd.shard_rows(x, mesh)
        self.n = self.rows.n
        self.cum_log_det = None

    def initial_log_likelihood(self) -> float:
        return float(_masked_sum(standard_normal_log_prob(self.rows.x), self.rows.mask)) / self.n

    def fit_rows(self, fit_idx):
        """This process's rows (a host array), as a fit sees them."""
        if self.host is None:
            self.host = shd.local_rows(self.rows.x, self.n_local)
        return self.host if fit_idx is None else self.host[fit_idx]

    def push(self, runtime, lr, layer_params):
        """Maps the sharded rows through one fitted layer: ``(bad rows, mean log-likelihood, mean log-det)``."""
        forward = _sharded_forward(lr.apply, self.mesh, max(1, (1 << 22) // self.rows.x.shape[1]))
        y, log_det, base = forward(shd.replicate(layer_params, self.mesh), self.rows.x)
        cum = log_det if self.cum_log_det is None else self.cum_log_det + log_det
        finite, ll, ld = _push_totals(y, log_det, base, cum, self.rows.mask)
        if not bool(finite):
            return " (on some rows)", None, None
        self.rows, self.cum_log_det, self.host = self.rows._replace(x=y), cum, None
        return None, float(ll) / self.n, float(ld) / self.n


@jax.jit
def _masked_sum(values, mask):
    return jnp.sum(jnp.where(mask, values, 0))


@jax.jit
def _push_totals(y, log_det, base, cum_log_det, mask):
    """Whether the real rows are finite, and the sums over them of the log-likelihood and the log-det."""
    finite = jnp.all(jnp.isfinite(y) | ~mask[:, None]) & jnp.all(jnp.isfinite(log_det) | ~mask)
    return finite, _masked_sum(base + cum_log_det, mask), _masked_sum(log_det, mask)


@functools.lru_cache(maxsize=32)
def _sharded_forward(transformed, mesh, rows: int):
    """One layer's forward map on row-sharded data, each device mapping its rows in chunks of ``rows``.

    Returns a jitted ``(params, x) -> (y, log_det, log N(y; 0, I))``, all sharded like ``x``.
    """
    axis = shd.data_axis(mesh)

    def local(layer_params, x):
        def one(xc):
            y, log_det = transformed.apply(layer_params, xc)
            return y, log_det, standard_normal_log_prob(y)

        m = x.shape[0]
        if m <= rows:
            return one(x)
        out = jax.tree.map(lambda s: jnp.zeros((m, *s.shape[1:]), s.dtype), jax.eval_shape(one, x[:rows]))

        def body(i, acc):  # the last chunk is shifted back to end at row m
            start = jnp.minimum(i * rows, m - rows)
            new = one(jax.lax.dynamic_slice_in_dim(x, start, rows))
            return jax.tree.map(lambda a, b: jax.lax.dynamic_update_slice_in_dim(a, b, start, 0), acc, new)

        return jax.lax.fori_loop(0, -(-m // rows), body, out)

    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis)), out_specs=P(axis), check_vma=False)
    return jax.jit(mapped)
