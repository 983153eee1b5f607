"""Finding NaN or inf in a flow's params (``save`` and ``fine_tune`` refuse them; warnings name them)."""

from __future__ import annotations

import numpy as np

__all__ = ["non_finite_count", "non_finite_param"]


def non_finite_count(a: np.ndarray) -> int:
    """How many values of a floating array are NaN or inf (0 for other dtypes)."""
    return int(a.size - np.count_nonzero(np.isfinite(a))) if a.dtype.kind == "f" else 0


def non_finite_param(params) -> tuple[str, str, str, int, int] | None:
    """``(layer, module, name, n_bad, size)`` of the first param holding NaN or inf (in ``params`` order), or None.

    Shared by :func:`gaussplug.save` (which refuses to write such params) and :func:`gaussplug.fine_tune`
    (which refuses to start from them).
    """
    for layer, modules in params.items():
        for module, leaves in modules.items():
            for name, value in leaves.items():
                a = np.asarray(value)
                bad = non_finite_count(a)
                if bad:
                    return layer, module, name, bad, int(a.size)
    return None
