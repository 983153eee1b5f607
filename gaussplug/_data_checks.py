"""Checks that well-formed data suits a fit: values within JAX's float range, no constant or discrete columns.

Each takes a finite float64 ``(n, dim)`` array (as :func:`gaussplug._datasets.check_data` returns it) and
names rows and columns through a :class:`gaussplug._data.Locator` (file lines and header names for CSV
files, array indices otherwise). The first two raise :class:`gaussplug.DataError`; the discrete-column
check returns a warning for the caller to print.
"""

from __future__ import annotations

import numpy as np

from gaussplug._data import Locator
from gaussplug._errors import DataError

__all__ = ["check_fits_dtype", "check_no_constant_columns", "discrete_columns_message", "point_mass_columns_message"]


def check_fits_dtype(x: np.ndarray, what: str, dtype, *, where: Locator | None = None,
                     columns: list[str] | None = None) -> None:
    """Raises :class:`DataError` if a value of ``x`` overflows the float dtype JAX computes in.

    Args:
      x: Finite float64 data ``(n, dim)``.
      what: Name used in messages (usually the file).
      dtype: The float dtype the flow will use (``_data.default_dtype()``).
      where: How to name the row and column (``Dataset.where``).
      columns: Without ``where``: CSV header names, to name the column (else as array indices).
    """
    if x.size == 0 or np.dtype(dtype) == np.float64:
        return
    limit = float(np.finfo(dtype).max)
    row, col = np.unravel_index(int(np.argmax(np.abs(x))), x.shape)
    value = x[row, col]
    if abs(value) >= limit:
        where = _locator(where, columns)
        raise DataError(
            f"{what}: the value largest in magnitude, {value:.6g} ({where.row(row)}, {where.column(col)}), "
            f"is beyond the {np.dtype(dtype).name} range (max {limit:.6g}) that JAX computes in. Rescale the "
            "data, or enable float64 with JAX_ENABLE_X64=1."
        )


def check_no_constant_columns(x: np.ndarray, what: str, dtype, *, where: Locator | None = None,
                              columns: list[str] | None = None) -> None:
    """Raises :class:`DataError` if a column of ``x`` is constant (also after rounding to ``dtype``).

    A density over a constant column is degenerate (infinite), so such columns
    must be dropped before fitting.

    Args:
      x: Finite float64 data ``(n, dim)`` with at least one row.
      what: Name used in messages (usually the file).
      dtype: The float dtype the flow will use; a column can become constant
        when rounded to it (large offsets in float32).
      where: How to name the columns (``Dataset.where``).
      columns: Without ``where``: CSV header names, to name the columns (else as array indices).
    """
    from gaussplug._data import constant_columns

    constant = constant_columns(x.astype(dtype))
    if constant.size == 0:
        return
    where = _locator(where, columns)
    listed = ", ".join(f"{where.column(c)} = {x[0, c]:.6g}" for c in constant[:5])
    more = f" and {constant.size - 5} more" if constant.size > 5 else ""
    exact = all(np.all(x[:, c] == x[0, c]) for c in constant)
    why = "" if exact else f" once rounded to {np.dtype(dtype).name}, which JAX computes in"
    noun = "column" if constant.size == 1 else "columns"
    fix = f"drop the {noun}" if exact else (
        f"centre and rescale the data, enable float64 with JAX_ENABLE_X64=1, or drop the {noun}")
    raise DataError(
        f"{what}: constant {noun}{why}: {listed}{more}. A density over a constant column is degenerate; {fix}."
    )


#: A column with at most this many distinct values, each seen :data:`DISCRETE_REPEATS` times on average, is
#: reported as discrete by :func:`discrete_columns_message`.
DISCRETE_MAX_VALUES = 20
DISCRETE_REPEATS = 5


def discrete_columns_message(x: np.ndarray, what: str, *, where: Locator | None = None,
                             columns: list[str] | None = None, dtype=None) -> str | None:
    """A warning for columns that take only a few distinct values (e.g. booleans), or None.

    A continuous density over a handful of values is unbounded: mixture
    components can collapse onto the values, so NLLs run to large negative
    numbers that mean nothing. Adding uniform noise of one quantisation step
    (dequantisation) is the usual remedy.

    Args:
      x: Finite data ``(n, dim)``.
      what: Name used in the message (usually the file).
      where: How to name the columns (``Dataset.where``).
      columns: Without ``where``: CSV header names, to name the columns (else as array indices).
      dtype: The float dtype the flow computes in: columns are checked as rounded to it (a
        continuous column at a large offset, 1e6 + N(0, 0.01), takes a few float32 values).
    """
    n = x.shape[0]
    found, rounded = [], []
    for c in range(x.shape[1]):
        values = np.unique(x[:, c] if dtype is None else x[:, c].astype(dtype))
        if 2 <= len(values) <= DISCRETE_MAX_VALUES and n >= DISCRETE_REPEATS * len(values):  # (constant: elsewhere)
            found.append((c, values))
            if dtype is not None and np.unique(x[:, c]).size > len(values):
                rounded.append(c)
    if not found:
        return None
    where = _locator(where, columns)

    def named(c, v):
        once = f" once rounded to {np.dtype(dtype).name}" if c in rounded else ""
        shown = ", ".join(f"{a:.8g}" for a in v[:4]) + (", ..." if len(v) > 4 else "")
        return f"{where.column(c)}: {len(v)} values{once} ({shown})"

    listed = "; ".join(named(c, v) for c, v in found[:5])
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    fix = (" Columns that take few values only once rounded are spread finer than that dtype resolves at their "
           "offset: centre and rescale them, or enable float64 with JAX_ENABLE_X64=1.") if rounded else ""
    return (
        f"{what}: {len(found)} of {x.shape[1]} columns take only a few distinct values ({listed}{more}). A "
        "continuous density over discrete values is unbounded, so its NLL is not meaningful; add uniform "
        f"dequantisation noise (e.g. x + U[0, 1) for integers) or drop those columns.{fix}"
    )


#: A column taking many values whose most frequent one holds at least this fraction of the rows (and at least
#: :data:`POINT_MASS_MIN_ROWS` rows), and :data:`POINT_MASS_RATIO` times as many as the next most frequent value,
#: has a point mass, reported by :func:`point_mass_columns_message`. (Rounded measurements repeat many values
#: alike; a point mass stands out.)
POINT_MASS_FRACTION = 0.05
POINT_MASS_MIN_ROWS = 10
POINT_MASS_RATIO = 3


def point_mass_columns_message(x: np.ndarray, what: str, *, where: Locator | None = None,
                               columns: list[str] | None = None) -> str | None:
    """A warning for otherwise continuous columns where one value repeats in many rows (say 40 % zeros), or None.

    A continuous density has no point masses: fitted to one, its mixture puts a narrow spike there, the rows at
    the value get huge log-likelihoods and the mean NLL says more about the spike's width than about the data.
    Columns with few distinct values are :func:`discrete_columns_message`'s; values are compared as given (a
    column that repeats values only once rounded to float32 is that check's concern too).

    Args:
      x: Finite data ``(n, dim)``.
      what: Name used in the message (usually the file).
      where: How to name the columns (``Dataset.where``).
      columns: Without ``where``: CSV header names, to name the columns (else as array indices).
    """
    n = x.shape[0]
    found = []
    for c in range(x.shape[1]):
        values, counts = np.unique(x[:, c], return_counts=True)
        if len(values) <= DISCRETE_MAX_VALUES:  # discrete or constant: the other checks
            continue
        top2 = np.sort(counts)[-2:]  # the second most frequent, then the most
        if top2[1] >= max(POINT_MASS_MIN_ROWS, POINT_MASS_FRACTION * n) and top2[1] >= POINT_MASS_RATIO * top2[0]:
            top = int(np.argmax(counts))
            found.append((c, values[top], int(counts[top])))
    if not found:
        return None
    where = _locator(where, columns)
    listed = "; ".join(f"{where.column(c)}: {v:.10g} in {k} of {n} rows ({100 * k / n:.0f} %)" for c, v, k in found[:5])
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    return (
        f"{what}: {len(found)} of {x.shape[1]} columns put many rows on a single value ({listed}{more}). A continuous "
        "density has no point masses: the fit puts a narrow spike there, so those rows' log-likelihoods (and the "
        "mean NLL) measure the spike, not the data. Model the value apart (fit the other rows, and give the value "
        "its own probability) or, if it stands for a missing or censored measurement, treat it as such."
    )


def row_counter_columns_message(x: np.ndarray, what: str, *, where: Locator | None = None) -> str | None:
    """A warning for columns that hold the row numbers ``0, 1, ..., n-1`` (or from 1), or None.

    Such a column is almost always an index that ``DataFrame.to_csv()`` wrote (its header cell empty), not data:
    modelled as a variable it adds a uniform dimension that says nothing about the rest.
    """
    n = x.shape[0]
    if n < 3:
        return None
    counters = [(c, s) for c in range(x.shape[1]) for s in (0, 1) if np.array_equal(x[:, c], np.arange(s, n + s))]
    if not counters:
        return None
    where = _locator(where, None)
    listed = ", ".join(f"{where.column(c)} ({s} to {n - 1 + s})" for c, s in counters[:5])
    listed += " ..." if len(counters) > 5 else ""
    return (
        f"{what}: {listed} {'holds' if len(counters) == 1 else 'hold'} the row numbers in order: it looks "
        "like an index, such as the one pandas' DataFrame.to_csv() writes under an empty header cell, not data, "
        "but it is modelled as a variable. Drop it (to_csv(index=False)) and fit again."
    )


def _locator(where: Locator | None, columns: list[str] | None) -> Locator:
    """``where``, or for callers that pass only a CSV header, a :class:`Locator` built from it."""
    if where is not None:
        return where
    return Locator(csv=True, columns=tuple(columns)) if columns else Locator()
