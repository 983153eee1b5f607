"""Host-side linear algebra that shares the CPU with XLA.

NumPy's BLAS (OpenBLAS here) starts one spinning thread per core for every
matrix product. Next to XLA's own threads, or any other busy process, those
threads wait on each other: a ``(10000, 32)`` covariance took 0.6 s instead of
0.4 ms on a loaded 2-core machine. The greedy fits' host-side products are
small, so they run single-threaded.
"""

from __future__ import annotations

import contextlib
import functools

__all__ = ["single_threaded_blas"]


@functools.cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas():
    """Limits NumPy/SciPy's BLAS to one thread inside the block (about 2 ms to enter).

    Example:
      >>> import numpy as np
      >>> with single_threaded_blas():
      ...     float(np.ones((3, 2)).T @ np.ones((3, 2)) @ np.ones(2) @ np.ones(2))
      12.0
    """
    with _controller().limit(limits=1, user_api="blas"):
        yield
