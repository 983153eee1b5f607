"""Plain JSON values: what spec options and family defaults must be made of."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["to_json"]

#: Most levels of nested lists and mappings (deeper values are refused, not a RecursionError).
MAX_NESTING = 256


def to_json(
    value: Any,
    where: str,
    error: type[Exception] = ValueError,
    *,
    arrays: bool = False,
    finite: bool = True,
    _depth: int = 0,
) -> Any:
    """Deep-copies ``value`` to plain JSON types (tuples become lists, NumPy scalars Python ones), or raises.

    Args:
      value: A number, string, bool, None, or a list/tuple/mapping of them.
      where: How messages name the value (e.g. ``"layers[0] (mixture_cdf).components"``).
      error: The exception type raised for a value that is not JSON-compatible.
      arrays: Also accept arrays (NumPy or JAX), as nested lists (``tolist``).
      finite: Refuse NaN and infinite numbers (``False``: keep them, as Python's ``json`` writes
        and reads them back; for metadata such as a training history, not for options).

    Returns:
      The same value as plain ``dict``/``list``/scalars.

    Raises:
      error: A mapping key that is not a string, a value of another type
        (an array unless ``arrays``, a set, an object), a NaN or infinite number if ``finite``
        (JSON has neither: a strict JSON writer or reader turns them into something else or
        refuses them), or lists and mappings nested more than ``MAX_NESTING`` levels deep,
        naming where it was found.

    Example:
      >>> import numpy as np
      >>> to_json({"hidden": (64, 64), "scale": np.float32(0.5)}, "options")
      {'hidden': [64, 64], 'scale': 0.5}
    """
    if _depth > MAX_NESTING and isinstance(value, (Mapping, list, tuple)):
        raise error(f"{where[:200]}...: lists and mappings nested more than {MAX_NESTING} levels deep; "
                    "expected a flatter value.")
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise error(f"{where}: keys must be strings; got {k!r}.")
            out[k] = to_json(v, f"{where}.{k}", error, arrays=arrays, finite=finite, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v, f"{where}[{i}]", error, arrays=arrays, finite=finite, _depth=_depth + 1)
                for i, v in enumerate(value)]
    if finite and isinstance(value, float) and not math.isfinite(value):
        raise error(f"{where}: expected a finite number (JSON has no NaN or Infinity); got {value!r}.")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        return to_json(value.item(), where, error, arrays=arrays, finite=finite, _depth=_depth)
    if arrays and hasattr(value, "tolist") and hasattr(value, "shape"):
        return to_json(value.tolist(), where, error, arrays=arrays, finite=finite, _depth=_depth)
    raise error(
        f"{where}: expected JSON-compatible values (numbers, strings, bools, None, and lists or string-keyed "
        f"mappings of them); got {type(value).__name__} {value!r:.80}."
    )
