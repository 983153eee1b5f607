"""Host-side data preparation for fine-tuning: epoch-shuffled minibatch indices, validation blocks.

Shuffling happens on the host with NumPy: a permutation of a few thousand
rows costs microseconds there, while ``jax.random.permutation`` sorts, which
on XLA:CPU costs milliseconds per epoch (more than a small flow's step). Only
the ``(steps, batch)`` int32 indices of each chunk travel to the device; the
data itself is put there once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["EpochBatches", "validation_blocks"]


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


def validation_blocks(x_val: np.ndarray, block: int, dtype):
    """Pads ``x_val`` to ``(blocks, rows, dim)`` with per-row weights ``1/n`` (0 on padding).

    Args:
      x_val: ``(n, dim)`` validation rows.
      block: Most rows per block.
      dtype: Float dtype of the result.

    Returns:
      ``(xv, wv)`` device arrays of shapes ``(blocks, rows, dim)`` and ``(blocks, rows)``.
    """
    n, dim = x_val.shape
    rows = min(n, block)
    blocks = -(-n // rows)
    padded = np.zeros((blocks * rows, dim), dtype)
    padded[:n] = x_val
    weights = np.zeros(blocks * rows, dtype)
    weights[:n] = 1.0 / n
    return jnp.asarray(padded.reshape(blocks, rows, dim)), jnp.asarray(weights.reshape(blocks, rows))
