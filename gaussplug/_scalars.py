"""Scalar arguments given as 0-d arrays: ``jnp.float32(1e-3)``, ``np.array(5)``, a value taken from ``jnp.logspace``.

The argument checks accept Python and NumPy scalars; :func:`as_scalar` turns a 0-d NumPy or JAX array into the
NumPy scalar of its dtype first, so a sweep over a JAX array passes its values as it would pass floats. Traced
values (inside ``jax.jit``) are left alone: an argument that sets a size or a loop count cannot be traced.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["as_flag", "as_scalar"]


def as_scalar(value):
    """``value`` as a NumPy scalar if it is a concrete 0-d NumPy or JAX array; otherwise ``value`` unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> as_scalar(jnp.float32(0.5)), as_scalar(np.array(3)), as_scalar(7)
      (np.float32(0.5), np.int64(3), 7)
    """
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0 and not isinstance(value, jax.core.Tracer):
        return np.asarray(value)[()]
    return value


def as_flag(name: str, value) -> bool:
    """``value`` as a bool if it is one (Python, NumPy or a 0-d array); else a ``ValueError`` naming ``name``.

    A string such as ``"no"`` is truthy, so taking any value as a flag would turn it on.
    """
    value = as_scalar(value)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False; got {value!r}.")
    return bool(value)
