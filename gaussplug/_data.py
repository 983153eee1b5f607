"""Checking and converting user data once, at the API boundary."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gaussplug import _interrupt as interrupt
from gaussplug._buckets import pad_rows
from gaussplug._errors import DataError
from gaussplug._fork import check_not_forked

__all__ = ["Locator", "as_data", "as_float", "default_dtype", "input_dtype"]


@dataclasses.dataclass(frozen=True, eq=False)
class Locator:
    """Names a row or column of user data in messages, in the convention of where the data came from.

    A CSV file is named as a text editor shows it: file line numbers (1-based, counting the header
    and blank lines) and 1-based column numbers, with the header's name when there is one. Arrays
    (``.npy``, ``.npz``, in memory) are named by 0-based indices, labelled ``row index`` and
    ``column index`` so they cannot be taken for line numbers.

    Attributes:
      csv: Whether the data came from a CSV file.
      lines: For a CSV file, the file line of each data row (1-based); None if unknown.
      columns: The CSV header's names, or None.

    Example:
      >>> Locator().row(7), Locator().column(1)
      ('row index 7', 'column index 1')
      >>> where = Locator(csv=True, lines=np.array([2, 3, 5]), columns=("a", "b"))
      >>> where.row(2), where.column(1)
      ('line 5', "column 2 ('b')")
    """

    csv: bool = False
    lines: np.ndarray | None = None
    columns: tuple[str, ...] | None = None

    def row(self, index: int) -> str:
        """Data row ``index`` (0-based): ``"line 9"`` (CSV) or ``"row index 7"`` (arrays)."""
        if not self.csv:
            return f"row index {int(index)}"
        if self.lines is None:
            return f"data row {int(index) + 1}"
        return f"line {int(self.lines[index])}"

    def column(self, index: int) -> str:
        """Column ``index`` (0-based): ``"column 2 ('b')"`` or ``"column 2"`` (CSV), ``"column index 1"`` (arrays)."""
        if not self.csv:
            return f"column index {int(index)}"
        name = f" ({self.columns[index]!r})" if self.columns else ""
        return f"column {int(index) + 1}{name}"


def padded_batches(x: np.ndarray, batch: int):
    """Yields ``(start, m, block)``: the rows ``x[start : start + m]`` as a block of exactly ``batch`` rows.

    The last block is padded with copies of its first row (:func:`gaussplug._buckets.pad_rows`; finite, like the
    rest), so a jitted function applied to every block compiles once whatever ``len(x)``; keep the first ``m``
    rows of its result. Before every block but the first it is an interrupt checkpoint
    (:func:`gaussplug._interrupt.checkpoint`): the command line's Ctrl-C stops there, once the
    consumer has taken the previous block's result.
    """
    for start in range(0, x.shape[0], batch):
        if start:
            interrupt.checkpoint()
        block = x[start : start + batch]
        yield start, block.shape[0], pad_rows(block, batch)


def default_dtype():
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def input_dtype(dtype, params_dtype):
    """The dtype a flow with ``params_dtype`` computes data of ``dtype`` in.

    As :func:`as_data` then the flow's promotion: integer and boolean data
    become the default float dtype, float data keep theirs (canonicalised),
    and the result is promoted with the params' dtype, never narrowed.
    """
    dtype = np.dtype(dtype)
    base = jax.dtypes.canonicalize_dtype(dtype) if jnp.issubdtype(dtype, jnp.floating) else default_dtype()
    return jnp.dtype(jnp.promote_types(base, params_dtype))


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def as_data(x, dim: int, *, what: str = "x", min_rows: int = 0, numpy: bool = False):
    """Return ``x`` as a float array of shape ``(..., dim)``, or raise :class:`DataError`.

    Integer and boolean inputs become the default float dtype; float inputs keep
    their precision (float64 only under x64). Concrete (non-traced) inputs are
    checked for NaN/inf, naming how many rows are affected and the first one.

    Args:
      x: Array-like data.
      dim: Required size of the last axis.
      what: Name used in error messages.
      min_rows: Minimum number of rows for 2-D data (0 to skip).
      numpy: Return a NumPy array instead of a JAX array.
    """
    check_not_forked("gaussplug")
    if _is_concrete(x) and not isinstance(x, (np.ndarray, jax.Array)):
        try:
            x = np.asarray(x)
        except Exception as err:
            raise DataError(f"{what}: expected an array of shape (n, {dim}); could not convert: {err}") from err
    dtype = x.dtype
    numeric = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if not (numeric or jnp.issubdtype(dtype, jnp.bool_)):
        hint = (" (a file path? load the data first, e.g. np.load or np.loadtxt: this function takes arrays)"
                if x.ndim == 0 and dtype.kind in "US" else "")
        raise DataError(f"{what}: expected a numeric array; got dtype {dtype}{hint}.")
    if x.ndim < 1 or x.shape[-1] != dim or (min_rows and x.ndim != 2):
        want = f"(n, {dim})" if min_rows else f"(..., {dim})"
        raise DataError(f"{what}: expected shape {want} for this {dim}-D flow; got shape {tuple(x.shape)}.")
    if min_rows and x.shape[0] < min_rows:
        raise DataError(f"{what}: expected a 2-D array with at least {min_rows} rows; got shape {tuple(x.shape)}.")
    native = np.dtype(dtype).newbyteorder("=")  # big-endian data (FITS, another machine's .npy): JAX takes native
    target = default_dtype() if not jnp.issubdtype(dtype, jnp.floating) else jax.dtypes.canonicalize_dtype(native)
    if _is_concrete(x):
        if numpy or not isinstance(x, jax.Array):  # host data: cast and check on the host (no compilation)
            with np.errstate(over="ignore"):  # values beyond float32 are reported below, not warned about
                arr = np.asarray(x, dtype=target)
            if not np.isfinite(arr).all():
                _raise_non_finite(x, arr, dim, what)
            if min_rows:  # data to fit: a column too small to compute with would be fitted as a constant
                _check_underflow(x, arr, dim, what)
            return arr if numpy else jnp.asarray(arr)
        # A concrete JAX array, possibly captured inside a trace (jit, scan, eval_shape): checked eagerly.
        with jax.ensure_compile_time_eval():
            arr = jnp.asarray(x, dtype=target)
            if not bool(jnp.isfinite(arr).all()):
                _raise_non_finite(x, arr, dim, what)
        return arr
    return x.astype(target)


def _check_underflow(x, arr: np.ndarray, dim: int, what: str) -> None:
    """Raises :class:`DataError` for a column whose values are all smaller than ``arr``'s smallest normal number.

    XLA on CPU computes such (subnormal) values as 0, so the column would be fitted as a constant:
    ``1e-40`` data scored every row alike, as zeros would be. Checked on data to fit, not on points to
    score (there, flushing 1e-40 to 0 is rounding). Each column's max and min are read (no copy).
    """
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.floating):
        return
    rows = arr.reshape(-1, dim)
    peak = np.maximum(rows.max(axis=0), -rows.min(axis=0))
    tiny = float(np.finfo(arr.dtype).tiny)
    bad = np.flatnonzero((peak > 0) & (peak < tiny))
    if bad.size:
        c = int(bad[0])
        largest = float(np.max(np.abs(np.asarray(x).reshape(-1, dim)[:, c])))  # in the input's own precision
        raise DataError(
            f"{what}: {Locator().column(c)}{f' (and {bad.size - 1} more)' if bad.size > 1 else ''}: every value is "
            f"smaller than {arr.dtype}'s smallest normal number ({tiny:.3g}; largest |value| {largest:.3g}), and "
            f"JAX computes such values as 0, so the column would be modelled as a constant. Rescale the data "
            f"(multiply it by 1e{-math.floor(math.log10(largest)):d}, say)"
            + (", or enable float64 with JAX_ENABLE_X64=1." if arr.dtype == np.float32 else ".")
        )


def _raise_non_finite(x, arr, dim: int, what: str):
    """Raises the :class:`DataError` for non-finite ``arr`` (``x`` cast to its working dtype)."""
    bad_rows = ~np.isfinite(np.asarray(arr)).reshape(-1, dim).all(axis=1)
    first = int(np.argmax(bad_rows))
    src = np.asarray(x).reshape(-1, dim)
    if np.isfinite(src[bad_rows]).all():  # finite values that overflowed in the cast
        big = np.abs(src).max()
        limit = float(jnp.finfo(arr.dtype).max)
        raise DataError(
            f"{what}: {int(bad_rows.sum())} of {bad_rows.size} rows hold values beyond the {arr.dtype} range "
            f"(largest |value| {big:.3g} > {limit:.3g}; first: {Locator().row(first)}). Rescale the data, or enable "
            f"float64 with JAX_ENABLE_X64=1."
        )
    raise DataError(
        f"{what}: expected finite values; {int(bad_rows.sum())} of {bad_rows.size} rows contain "
        f"NaN or inf (first: {Locator().row(first)})."
    )


def constant_columns(x: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Indices of the columns of 2-D ``x`` whose values are all equal (none for 0 rows).

    Reads ``x`` (an array or a memory map) ``chunk`` rows at a time and stops as soon as no
    column is left that could be constant, which for ordinary data is after the first chunk.
    """
    if getattr(x, "ndim", np.ndim(x)) != 2 or len(x) == 0:
        return np.zeros(0, np.int64)
    first = np.asarray(x[:1])
    candidates = np.ones(first.shape[1], bool)
    for start in range(0, x.shape[0], chunk):
        candidates &= np.all(np.asarray(x[start : start + chunk]) == first, axis=0)
        if not candidates.any():
            break
    return np.flatnonzero(candidates)


def constant_columns_message(x: np.ndarray, what: str) -> str | None:
    """A message naming the constant (zero-variance) columns of 2-D ``x``, or None.

    Differential entropies, total correlation and densities are undefined (or
    infinite) for such columns, so the estimators refuse them.
    """
    x = np.asarray(x)
    constant = constant_columns(x)
    if constant.size == 0:
        return None
    return (
        f"{what}: constant column(s) {constant_listing(x, constant)}; a zero-variance column has no differential "
        "entropy (it is -inf), so drop it."
    )


def constant_listing(x, constant: np.ndarray, shown: int = 5) -> str:
    """``"2 (= 4), 5 (= 0) and 3 more"``: the first ``shown`` of the ``constant`` columns of ``x`` with their value."""
    listed = ", ".join(f"{int(c)} (= {float(x[0, c]):.6g})" for c in constant[:shown])
    return listed + (f" and {constant.size - shown} more" if constant.size > shown else "")


def tied_columns_message(x: np.ndarray, what: str, share: float = 0.5) -> str | None:
    """A message naming columns where more than ``share`` of the values repeat (discrete data), or None."""
    x = np.asarray(x)
    distinct = [len(np.unique(x[:, c])) for c in range(x.shape[1])]
    tied = [(c, k) for c, k in enumerate(distinct) if k < (1 - share) * x.shape[0]]
    if not tied:
        return None
    listed = ", ".join(f"{c} ({k} distinct of {x.shape[0]})" for c, k in tied[:5])
    return (
        f"{what}: column(s) {listed} are mostly repeated values (discrete data); spacing-based entropy "
        "estimates are then badly biased. Add uniform dequantisation noise (x + U[0, 1) for integers)."
    )


def as_float(*arrays):
    """Converts arrays to their common floating dtype (never downcasting)."""
    arrays = [jnp.asarray(a) for a in arrays]
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(dtype, float)
    return tuple(a.astype(dtype) for a in arrays)
