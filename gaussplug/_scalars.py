"""Checks of scalar arguments (counts, sizes, rates, flags), shared by the public functions.

The checks accept Python and NumPy scalars and 0-d arrays (``jnp.float32(1e-3)``, ``np.array(5)``, a value taken
from ``jnp.logspace``): :func:`as_scalar` turns a 0-d NumPy or JAX array into the NumPy scalar of its dtype first,
so a sweep over a JAX array passes its values as it would pass floats. Traced values (inside ``jax.jit``) are left
alone: an argument that sets a size or a loop count cannot be traced. A bool is never taken as a number.
"""

from __future__ import annotations

import math

import jax
import numpy as np

__all__ = ["as_flag", "as_scalar", "int_at_least", "is_int", "is_number", "positive_number"]


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


def is_int(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer or float (not a bool; NaN and inf are numbers here)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def int_at_least(name: str, value, minimum: int = 1, *, none_ok: bool = False) -> int | None:
    """``value`` as an ``int`` >= ``minimum`` (``None`` passes with ``none_ok``); else a ``ValueError`` naming ``name``.

    Example:
      >>> int_at_least("steps", np.array(200)), int_at_least("patience", None, none_ok=True)
      (200, None)
      >>> int_at_least("steps", 2.5)
      Traceback (most recent call last):
      ...
      ValueError: steps: expected a positive integer; got 2.5.
    """
    if value is None and none_ok:
        return None
    value = as_scalar(value)
    if not is_int(value) or value < minimum:
        expected = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name}: expected {expected}{' or None' if none_ok else ''}; got {value!r}.")
    return int(value)


def positive_number(name: str, value) -> float:
    """``value`` as a finite ``float`` > 0; else a ``ValueError`` naming ``name``.

    Example:
      >>> positive_number("peak_lr", np.float32(0.5))
      0.5
    """
    value = as_scalar(value)
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive finite number; got {value!r}.")
    return float(value)
