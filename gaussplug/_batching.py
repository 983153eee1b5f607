"""Host-side data preparation for fine-tuning: validation splits and blocks, minibatch feeds.

Shuffling happens on the host with NumPy: a permutation of a few thousand
rows costs microseconds there, while ``jax.random.permutation`` sorts, which
on XLA:CPU costs milliseconds per epoch (more than a small flow's step).

A feed hands :func:`gaussplug._train.fine_tune` one chunk of minibatches at a
time, in the layouts of :class:`gaussplug._train_loop.Engine`:

* :class:`IndexFeed`: in-memory rows put on the device(s) once (replicated
  on a mesh); per chunk only the ``(steps, batch)`` int32 row indices travel.
* :class:`GatherFeed`: rows that stay on the host (a memory-mapped ``.npy``,
  or this process's rows under ``jax.distributed``); per chunk the indexed
  rows are gathered on the host and only they travel.
* :class:`IterFeed`: batches from an iterator or iterable, stacked per chunk.

On a mesh the batch axis is split over the data axis, padded (with copies of
a real row, weight 0) to a multiple of the number of devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gaussplug import _sharding as shd
from gaussplug._buckets import bucket, pad_rows, padded_rows
from gaussplug._data import as_data
from gaussplug._errors import DataError
from gaussplug._scalars import as_scalar, is_number

__all__ = [
    "EpochBatches",
    "GatherFeed",
    "IndexFeed",
    "IterFeed",
    "check_memmap",
    "open_source",
    "split_validation",
    "validation_blocks",
]


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _pad_axis1(a: np.ndarray, width: int) -> np.ndarray:
    """Pads axis 1 to ``width`` with copies of each row's first entry."""
    extra = width - a.shape[1]
    return a if extra == 0 else np.concatenate([a, np.repeat(a[:, :1], extra, axis=1)], axis=1)


def _put(a, mesh, dim: int):
    """A host array to the device, split along ``dim`` over the mesh's data axis if there is one."""
    return jnp.asarray(a) if mesh is None else shd.shard_local(a, mesh, dim)


class EpochBatches:
    """Minibatch row indices: each epoch visits the rows in a fresh random order.

    An epoch is ``n // batch_size`` batches; the ``n % batch_size`` rows left
    over differ from epoch to epoch. The sequence depends only on ``key``.

    Args:
      n: Number of training rows.
      batch_size: Rows per batch, ``1 <= batch_size <= n``.
      key: JAX PRNG key seeding the shuffles.
    """

    def __init__(self, n: int, batch_size: int, key):
        self.n, self.batch_size = int(n), int(batch_size)
        self.per_epoch = self.n // self.batch_size
        self._rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        self._perm = np.arange(self.n, dtype=np.int32)
        self._pos = self.per_epoch

    def take(self, steps: int) -> np.ndarray:
        """The next ``steps`` batches as an int32 array of shape ``(steps, batch_size)``."""
        out = np.empty((steps, self.batch_size), np.int32)
        for i in range(steps):
            if self._pos == self.per_epoch:
                self._perm = self._rng.permutation(self.n).astype(np.int32)
                self._pos = 0
            start = self._pos * self.batch_size
            out[i] = self._perm[start : start + self.batch_size]
            self._pos += 1
        return out


def validation_rows(validation, n: int) -> int | None:
    """Rows a validation fraction holds out of ``n`` (checked), ``None`` for anything else."""
    validation = as_scalar(validation)
    if isinstance(validation, (bool, np.bool_)):
        raise ValueError(f"validation: expected a fraction in (0, 1), an array or None; got the bool {validation!r}.")
    if not is_number(validation):
        return None
    frac = float(validation)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"validation: expected a fraction in (0, 1), an array or None; got {validation!r}.")
    n_val = max(1, round(frac * n))
    if n - n_val < 2:
        raise ValueError(
            f"validation: expected a fraction leaving at least 2 training rows (as x needs); got {validation!r}, "
            f"which takes {n_val} of the {n} rows."
        )
    return n_val


def holdout_rows(key, n: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)``: the sorted row numbers a validation fraction keeps out for ``key``.

    The one rule behind every ``validation=<fraction>`` of the API (``fine_tune``,
    ``fit_rbig(n_layers="auto")``), so that the same ``key`` holds out the same
    rows in each: a flow whose depth was chosen on held-out rows is fine-tuned
    without training on them.

    Args:
      key: The caller's JAX PRNG key (not a key split from it).
      n: Rows in all.
      n_val: Rows to hold out, ``1 <= n_val < n``.
    """
    # A uniform shuffle of the row bucket's numbers, those below n kept in order: a uniform shuffle of the n
    # rows, compiled once per bucket (a shuffle of n itself compiled anew for each n, about 0.5 s).
    perm = np.asarray(jax.random.permutation(jax.random.split(key)[0], bucket(n)))
    perm = perm[perm < n]
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_validation(x, validation, dim: int, key, dtype):
    """``(x_train, train_rows, x_val)`` from ``validation`` (None, a fraction or an array).

    A fraction holds out :func:`holdout_rows` for ``key`` (the caller's key).
    For an in-memory ``x`` the training rows are copied (``train_rows`` is
    None); for a memory map only the row numbers are kept (``x_train`` is
    ``x`` itself) and only the validation rows are read.
    """
    if validation is None:
        return x, None, None
    n = x.shape[0]
    n_val = validation_rows(validation, n)
    if n_val is None:
        return x, None, np.asarray(as_data(validation, dim, what="validation", min_rows=1), dtype)
    train, val = holdout_rows(key, n, n_val)
    if isinstance(x, np.memmap):
        return x, train, _gather(x, val, dtype, what="x")
    return x[train], None, x[val]


def open_source(x, dim: int, dtype, validation, key):
    """Classifies and checks ``x`` and splits off validation: ``(kind, x, train_rows, x_val)``.

    ``kind`` is ``"memmap"`` (``x`` is left on disk), ``"array"`` (``x``
    checked and converted to a NumPy ``dtype`` array: arrays, lists, tuples
    and anything with ``__array__``, e.g. a DataFrame) or ``"batches"`` (a
    list or tuple of 2-D batches, or any other iterator or iterable). See
    :func:`split_validation` for the rest.
    """
    if isinstance(x, np.memmap):
        check_memmap(x, dim)
        return ("memmap", *split_validation(x, validation, dim, key, dtype))
    batch_list = isinstance(x, (list, tuple)) and len(x) > 0 and all(np.ndim(b) == 2 for b in x)
    array_like = isinstance(x, (np.ndarray, jax.Array, list, tuple, str, bytes, Mapping)) or hasattr(x, "__array__")
    if (array_like and not batch_list) or not isinstance(x, Iterable):
        x = np.asarray(as_data(x, dim, min_rows=2), dtype)
        return ("array", *split_validation(x, validation, dim, key, dtype))
    if validation is not None and (np.ndim(validation) == 0 or isinstance(validation, (str, bytes))):
        raise ValueError(
            "validation: with x an iterator or iterable of batches, expected a held-out array or None; "
            f"got {validation!r}."
        )
    x_val = None if validation is None else as_data(validation, dim, what="validation", min_rows=1)
    return "batches", x, None, None if x_val is None else np.asarray(x_val, dtype)


def check_memmap(x, dim: int):
    """Checks a memory-mapped ``x`` without reading it: numeric, shape ``(n >= 2, dim)``."""
    if not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)):
        raise DataError(f"x: expected a numeric array; got dtype {x.dtype}.")
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 2:
        raise DataError(
            f"x: expected a memory-mapped array of shape (n >= 2, {dim}) for this {dim}-D flow; "
            f"got shape {tuple(x.shape)}."
        )


def _gather(x, rows: np.ndarray, dtype, *, what: str) -> np.ndarray:
    """``x[rows]`` as ``dtype``, read in increasing row order (kind to memory maps), checked finite."""
    flat = rows.ravel()
    order = np.argsort(flat, kind="stable")
    out = np.empty((flat.size, x.shape[1]), dtype)
    out[order] = x[flat[order]]
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: expected finite values; row index {int(flat[np.argmax(bad)])} contains NaN or inf.")
    return out.reshape(*rows.shape, x.shape[1])


def validation_blocks(x_val: np.ndarray, block: int, dtype, mesh=None):
    """Pads ``x_val`` to ``(blocks, rows, dim)`` with per-row weights ``1/n`` (0 on padding).

    Fewer than ``block`` rows are padded to their row bucket
    (:mod:`gaussplug._buckets`), so another validation size in the same bucket
    reuses the compiled training chunk.

    Args:
      x_val: ``(n, dim)`` validation rows (under ``jax.distributed``, this
        process's; ``n`` is then the total over processes).
      block: Most rows per block.
      dtype: Float dtype of the result.
      mesh: A device mesh: the rows of each block are split over its data axis.

    Returns:
      ``(xv, wv)`` device arrays of shapes ``(blocks, rows, dim)`` and ``(blocks, rows)``.
    """
    n, dim = x_val.shape
    if mesh is None:
        rows, total, most = min(bucket(n), block), n, n
    else:
        parts, total, most = len(shd.processes(mesh)), shd.agree(n, "sum", mesh), shd.agree(n, "max", mesh)
        rows = _round_up(min(bucket(most), max(1, block // parts)), shd.local_shards(mesh))
    blocks = -(-most // rows)
    padded = np.zeros((blocks * rows, dim), dtype)
    padded[:n] = x_val
    weights = np.zeros(blocks * rows, dtype)
    weights[:n] = 1.0 / total
    return _put(padded.reshape(blocks, rows, dim), mesh, 1), _put(weights.reshape(blocks, rows), mesh, 1)


class IndexFeed:
    """In-memory training rows on the device(s) once; per chunk, minibatch row indices.

    A batch as large as the data (``batch_size >= n``) uses all rows every
    step (layout ``"full"``). Otherwise (``"index"``) the rows are padded to
    their row bucket (:mod:`gaussplug._buckets`, up to 64 MiB; the indices
    never reach the padding), so training on another number of rows in the
    same bucket reuses the compiled chunk. On a mesh the rows are replicated (``"index"``)
    or split across devices (``"full"``), and the batch axis is split.

    Args:
      x: ``(n, dim)`` training rows (NumPy, the flow's dtype).
      batch_size: Rows per step, at most ``n`` (equal: full batch).
      key: PRNG key of the shuffles.
      mesh: A device mesh, or ``None`` for the default device.
    """

    def __init__(self, x: np.ndarray, batch_size: int, key, mesh=None):
        n = x.shape[0]
        self.mesh, self.batch_size, self.exhausted = mesh, batch_size, False
        self.layout = "full" if batch_size >= n else "index"
        self._batches = None if self.layout == "full" else EpochBatches(n, batch_size, key)
        if self.layout == "index":  # never-indexed padding up to the row bucket: another n seldom recompiles
            x = pad_rows(x, padded_rows(n, x.shape[1] * x.dtype.itemsize))
        if mesh is None:
            self.width, self.data = batch_size, (jnp.asarray(x), None)
        elif self.layout == "full":
            rows = shd.shard_rows(x, mesh)
            self.width = rows.x.shape[0]
            w = None if self.width == n else jnp.where(rows.mask, 1.0 / n, 0.0).astype(x.dtype)
            self.data = (rows.x, w)
        else:
            self.width = _round_up(batch_size, shd.n_shards(mesh))
            w = np.where(np.arange(self.width) < batch_size, 1.0 / batch_size, 0.0).astype(x.dtype)
            self.data = (shd.replicate(x, mesh), None if self.width == batch_size else shd.shard_local(w, mesh))

    def take(self, chunk: int):
        """``(batch, steps available)`` for the next chunk (``None`` in full-batch mode)."""
        if self._batches is None:
            return None, chunk
        return _put(_pad_axis1(self._batches.take(chunk), self.width), self.mesh, 1), chunk


class GatherFeed:
    """Rows that stay on the host; per chunk the minibatches are gathered by index and sent.

    Under ``jax.distributed`` (a mesh spanning processes) ``x`` is this
    process's rows: the global batch of ``batch_size`` rows is split between
    the processes, each drawing its share from its own rows with its own
    shuffle (the key folded with the process's position).

    Args:
      x: ``(n, dim)`` NumPy array or ``np.memmap`` (any numeric dtype).
      rows: Row numbers of ``x`` to train on, or ``None`` for all.
      batch_size: Rows per step (over all processes); capped at the rows.
      key: PRNG key of the shuffles.
      dtype: Float dtype the rows are cast to.
      mesh: A device mesh, or ``None`` for the default device.
    """

    layout = "rows"

    def __init__(self, x, rows, batch_size: int, key, dtype, mesh=None):
        self._x, self._rows, self._dtype, self.mesh, self.exhausted = x, rows, dtype, mesh, False
        n = x.shape[0] if rows is None else len(rows)
        parts, part = 1, 0
        if shd.spans_processes(mesh):
            parts, part = len(shd.processes(mesh)), shd.processes(mesh).index(jax.process_index())
            key = jax.random.fold_in(key, part)
        total = min(batch_size, shd.agree(n, "min", mesh) * parts)
        mine = total // parts + int(part < total % parts)
        self.batch_size = total
        self._width = _round_up(-(-total // parts), 1 if mesh is None else shd.local_shards(mesh))
        self.width = self._width * parts
        self._batches = EpochBatches(n, mine, key)
        self._weights, self._w = None, None
        if self.width != total:
            self._weights = np.where(np.arange(self._width) < mine, 1.0 / total, 0.0).astype(dtype)
        self.data = None

    def take(self, chunk: int):
        """``((rows, weights), steps available)`` for the next chunk."""
        idx = self._batches.take(chunk)
        xb = _gather(self._x, idx if self._rows is None else self._rows[idx], self._dtype, what="x")
        if self._weights is not None and (self._w is None or self._w.shape[0] != chunk):
            self._w = _put(np.broadcast_to(self._weights, (chunk, self._width)), self.mesh, 1)
        return (_put(_pad_axis1(xb, self._width), self.mesh, 1), self._w), chunk


class IterFeed:
    """Batches ``(b, dim)`` from an iterator (one pass) or an iterable (re-iterated when exhausted).

    The first batch's row count fixes the compiled batch width; later batches
    may be smaller (padded, weight 0) but not larger. Each batch's loss is
    its own mean, whatever its size.

    Args:
      batches: An iterator or iterable of array-likes ``(b, dim)``.
      dim: The flow's dimension.
      dtype: Float dtype the rows are cast to.

    Raises:
      DataError: The source yields nothing (checked here) or, later, a batch
        of the wrong shape, a non-numeric one or one with NaN/inf.
    """

    layout = "rows"
    data = None

    def __init__(self, batches, dim: int, dtype):
        self._source, self._dim, self._dtype = batches, dim, dtype
        self._again = not isinstance(batches, Iterator)
        self._it, self._count, self._rows, self._last = iter(batches), 0, None, None
        self.mesh, self.exhausted = None, False
        self._pending = self._next()
        if self._pending is None:
            raise DataError(f"x: expected batches of shape (b, {dim}); the {type(batches).__name__} yielded none.")
        self.batch_size = self._pending.shape[0]
        self.width = self.batch_size

    def place(self, mesh) -> None:
        """Puts later chunks on ``mesh`` (padding the batch width to a multiple of its devices)."""
        self.mesh = mesh
        self.width = self.batch_size if mesh is None else _round_up(self.batch_size, shd.n_shards(mesh))

    def _next(self):
        try:
            b = next(self._it)
        except StopIteration:
            if not self._again or self._count == 0:
                return None
            self._it, self._count = iter(self._source), 0
            try:
                b = next(self._it)
            except StopIteration:
                return None
        self._count += 1
        return self._check(b)

    def _check(self, b) -> np.ndarray:
        where = f"x: batch {self._count - 1} of the {'pass' if self._again else 'iterator'}"
        try:
            b = np.asarray(b)
        except Exception as err:
            raise DataError(f"{where}: could not convert to an array: {err}") from err
        if not (np.issubdtype(b.dtype, np.number) or np.issubdtype(b.dtype, np.bool_)):
            raise DataError(f"{where}: expected a numeric array; got dtype {b.dtype}.")
        ok = b.ndim == 2 and b.shape[1] == self._dim and b.shape[0] >= 1
        if not ok or (self._rows is not None and b.shape[0] > self._rows):
            rows = "b >= 1" if self._rows is None else f"1 <= b <= {self._rows} (the first batch's rows)"
            raise DataError(f"{where}: expected shape (b, {self._dim}) with {rows}; got shape {tuple(b.shape)}.")
        self._rows = self._rows or b.shape[0]
        b = b.astype(self._dtype)
        if not np.isfinite(b).all():
            bad = int(np.argmax(~np.isfinite(b).all(axis=1)))
            raise DataError(f"{where}: expected finite values; row index {bad} contains NaN or inf.")
        return b

    def take(self, chunk: int):
        """``((rows, weights), steps available)``: fewer than ``chunk`` steps once the source ran out."""
        got = []
        while len(got) < chunk and not self.exhausted:
            b = self._pending if self._pending is not None else self._next()
            self._pending = None
            if b is None:
                self.exhausted = True
            else:
                got.append(b)
        if not got:
            got = [self._last]
            avail = 0
        else:
            avail = len(got)
        self._last = got[-1]
        got += [got[-1]] * (chunk - len(got))
        xb = np.stack([_pad_axis1(b[None], self.width)[0] for b in got])
        w = np.stack([np.where(np.arange(self.width) < len(b), 1.0 / len(b), 0.0) for b in got]).astype(self._dtype)
        return (_put(xb, self.mesh, 1), _put(w, self.mesh, 1)), avail
