"""Data for the command line: reading ``.npy`` / ``.npz`` / ``.csv`` files, built-in data, writing arrays.

Every problem is reported as a :class:`gaussplug.DataError` (or
``FileNotFoundError``) whose message names the file and, where it is about
one place in it, names the place as :class:`gaussplug._data.Locator` does: a
CSV file by file line (1-based, counting the header) and 1-based column with
its header name; an ``.npy`` / ``.npz`` array by 0-based ``row index`` and
``column index``. So the CLI can print it as one line.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import io
import math
import os
from typing import Any

import numpy as np

from gaussplug._data import Locator
from gaussplug._errors import DataError

__all__ = [
    "Dataset",
    "check_columns",
    "check_data",
    "check_fits_dtype",
    "check_no_constant_columns",
    "check_not_an_input",
    "check_output_dir",
    "check_output_path",
    "csv_header",
    "discrete_columns_message",
    "load_data",
    "split",
    "two_moons",
    "write_array",
]

#: Fewest rows ``gaussplug fit`` accepts.
MIN_ROWS = 10
DATA_FORMATS = (".npy", ".npz", ".csv")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A checked data matrix and a JSON-ready description of where it came from.

    Attributes:
      x: Finite float64 array of shape ``(n, dim)``.
      description: ``source``, ``format``, ``n_rows``, ``dim`` and, where they
        apply, ``key`` (``.npz``), ``columns`` (CSV header) and ``generator``.
      where: How messages name the rows and columns (file lines for CSV files).
    """

    x: np.ndarray
    description: dict[str, Any]
    where: Locator = Locator()

    @property
    def name(self) -> str:
        """A short human name: the file name, or the built-in data's name."""
        return self.description.get("name") or os.path.basename(self.description["source"])


def two_moons(n: int = 3000, *, noise: float = 0.08, seed: int = 0) -> Dataset:
    """The built-in data: ``sklearn.datasets.make_moons(n, noise=noise, random_state=seed)``.

    Returns:
      A :class:`Dataset` of shape ``(n, 2)``.
    """
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=noise, random_state=seed)
    desc = {
        "source": "builtin:two_moons",
        "name": "two moons (built-in)",
        "format": "builtin",
        "generator": f"sklearn.datasets.make_moons({n}, noise={noise}, random_state={seed})",
    }
    return _dataset(np.asarray(x, np.float64), desc, "two moons")


def load_data(path: str | os.PathLike, *, key: str | None = None, min_rows: int = MIN_ROWS) -> Dataset:
    """Reads and checks a data matrix from a ``.npy``, ``.npz`` or ``.csv`` file.

    Args:
      path: The file. ``.npz`` files must hold one array unless ``key`` picks
        one; CSV files are comma-separated numbers with an optional header row
        (a first row none of whose cells is a number).
      key: Array name inside an ``.npz`` file.
      min_rows: Fewest rows accepted.

    Returns:
      A :class:`Dataset`.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      DataError: Unsupported extension, unreadable file, non-numeric cells,
        wrong shape, NaN/inf, or too few rows.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in DATA_FORMATS:
        raise DataError(
            f"{path}: unsupported data file extension {ext!r}; expected one of {', '.join(DATA_FORMATS)}."
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path!r} does not exist.")
    if os.path.isdir(path):
        raise DataError(f"{path}: expected a data file; got a directory.")
    if key is not None and ext != ".npz":
        raise DataError(f"{path}: --key picks an array inside an .npz file; this is a {ext} file.")
    desc: dict[str, Any] = {"source": os.path.abspath(path), "name": os.path.basename(path)}
    desc["format"] = ext[1:]
    where = Locator()
    if ext == ".csv":
        x, where = _read_csv(path)
        if where.columns is not None:
            desc["columns"] = list(where.columns)
    else:
        x, used_key = _read_numpy(path, ext, key)
        if used_key is not None:
            desc["key"] = used_key
    return _dataset(x, desc, path, min_rows=min_rows, where=where)


def _dataset(x: np.ndarray, desc: dict[str, Any], what: str, *, min_rows: int = MIN_ROWS,
             where: Locator | None = None) -> Dataset:
    where = where or Locator()
    x = check_data(x, what, min_rows=min_rows, where=where)
    return Dataset(x, {**desc, "n_rows": int(x.shape[0]), "dim": int(x.shape[1])}, where)


def check_data(x, what: str, *, min_rows: int = MIN_ROWS, dim: int | None = None,
               where: Locator | None = None) -> np.ndarray:
    """Returns ``x`` as a finite float64 ``(n, dim)`` array, or raises :class:`DataError`.

    Args:
      x: Array-like data.
      what: Name used in messages (usually the file).
      min_rows: Fewest rows accepted.
      dim: Required number of columns (e.g. a model's dimension), or None.
      where: How to name a row and column (``Dataset.where``); default: as array indices.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected numeric data; got an array of dtype {x.dtype}.")
    if x.ndim != 2:
        hint = " (save 1-D data as a column of shape (n, 1))" if x.ndim == 1 else ""
        raise DataError(f"{what}: expected a 2-D array of shape (n, dim); got shape {x.shape}{hint}.")
    if x.shape[1] < 1:
        raise DataError(f"{what}: expected at least one column; got shape {x.shape}.")
    if dim is not None and x.shape[1] != dim:
        raise DataError(
            f"{what}: the data has {x.shape[1]} column{'s' if x.shape[1] != 1 else ''} but the model is "
            f"{dim}-dimensional."
        )
    if x.shape[0] < min_rows:
        raise DataError(f"{what}: expected at least {min_rows} row{'s' if min_rows != 1 else ''}; got {x.shape[0]}.")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = bad.any(axis=1)
        row = int(np.argmax(rows))
        col = int(np.argmax(bad[row]))
        where = where or Locator()
        raise DataError(
            f"{what}: expected finite values; {int(rows.sum())} of {x.shape[0]} rows contain NaN or inf "
            f"(first: {where.row(row)}, {where.column(col)}, value {x[row, col]})."
        )
    return x


def _read_numpy(path: str, ext: str, key: str | None) -> tuple[np.ndarray, str | None]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:  # object arrays need pickle
        raise DataError(f"{path}: cannot be read without pickle ({err}); save a numeric array.") from err
    except Exception as err:
        raise DataError(f"{path}: not a readable {ext} file ({type(err).__name__}: {err}).") from err
    if ext == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise DataError(f"{path}: expected a .npy array file.")
        return loaded, None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an .npz archive; got a single array (rename it to .npy).")
    with loaded as archive:
        keys = list(archive.files)
        if "__gaussplug__" in keys:
            raise DataError(f"{path}: this is a gaussplug model file, not data.")
        if key is None:
            if len(keys) != 1:
                listed = ", ".join(keys) or "none"
                raise DataError(
                    f"{path}: the archive holds {len(keys)} arrays ({listed}); pick one with --key."
                )
            key = keys[0]
        elif key not in keys:
            raise DataError(f"{path}: no array named {key!r}; the archive holds {', '.join(keys)}.")
        try:
            return archive[key], key
        except ValueError as err:
            raise DataError(f"{path}: array {key!r} cannot be read without pickle; save numbers.") from err


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: str) -> tuple[np.ndarray, Locator]:
    """Parses a comma-separated file; messages name file lines and 1-based columns (see :class:`Locator`)."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, line = [], 1  # line: where the next record starts (a quoted cell may span lines)
    try:
        for row in reader:
            rows.append((line, [c.strip() for c in row]))
            line = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({err}).") from err
    rows = [(i, row) for i, row in rows if any(row)]
    if not rows:
        raise DataError(f"{path}: the CSV file is empty.")
    columns = None
    first_line, first = rows[0]
    _check_separator(path, first_line, first, rows)
    if _is_header(first):
        columns, rows = tuple(first), rows[1:]
    where = Locator(csv=True, lines=np.array([i for i, _ in rows], np.int64), columns=columns)
    width = len(first)
    values = np.empty((len(rows), width), np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{path}: line {line} has {len(row)} column{'s' if len(row) != 1 else ''}; expected {width} "
                f"(as on line {first_line})."
            )
        for c, cell in enumerate(row):
            value = _number(cell)
            if value is None or not math.isfinite(value):
                problem = "is empty" if not cell else f"holds {cell!r}, which is not a finite number"
                hint = " The file must be comma-separated." if any(s in cell for s in ";\t") else ""
                raise DataError(f"{path}: line {line}, {where.column(c)} {problem}.{hint}")
            values[r, c] = value
    return values, where


def _is_header(cells: list[str]) -> bool:
    """Whether a CSV file's first non-empty row is a header: none of its cells is a number."""
    return all(_number(c) is None for c in cells)


def csv_header(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The header names of a CSV file, as :func:`load_data` finds them, reading only up to the header.

    A quick look before the file is loaded (``gaussplug inspect`` checks the names against the model's
    first). It never raises: a file that cannot be read, or is not UTF-8 CSV up to its first row, gives
    None, and :func:`load_data` then reports the problem.

    Returns:
      The first non-empty row's cells (stripped) if none of them is a number; else None.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # utf-8-sig drops a byte-order mark
            for row in csv.reader(fh):
                cells = [c.strip() for c in row]
                if any(cells):
                    return tuple(cells) if _is_header(cells) else None
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return None


#: Most names (or misplaced columns) :func:`check_columns` lists in a message.
LIST_LIMIT = 20


def _listed(items: list[str], limit: int = LIST_LIMIT) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_columns(columns, expected, what: str) -> None:
    """Raises :class:`DataError` unless a CSV header's names are the model's column names, in the same order.

    Columns are matched to the model by position, so a file whose header names the model's columns in
    another order, or other columns, would be scored silently wrong. Nothing is checked when either list
    is None: a CSV file without a header, an array file, or a model fit on data without one.

    Args:
      columns: The data's header names (``Dataset.description.get("columns")``), or None.
      expected: The model's column names (``flow.metadata.get("columns")``), or None.
      what: Name used in messages (usually the file).

    Example:
      >>> check_columns(["lat", "lon"], ["lon", "lat"], "d.csv")
      Traceback (most recent call last):
      ...
      gaussplug._errors.DataError: d.csv: the header names the model's columns in another order, ... reads: lon,lat
    """
    if columns is None or expected is None:
        return
    columns, expected = [str(c) for c in columns], [str(c) for c in expected]
    if columns == expected:
        return
    if collections.Counter(columns) == collections.Counter(expected):
        moved = [i for i, (got, want) in enumerate(zip(columns, expected, strict=True)) if got != want]
        listed = _listed([f"column {i + 1} is {columns[i]!r} where the model has {expected[i]!r}" for i in moved], 5)
        raise DataError(
            f"{what}: the header names the model's columns in another order, but columns are matched by position, "
            f"not by name: {listed}. Reorder the file's columns so that its header reads: {_csv_line(expected)}"
        )
    missing = list((collections.Counter(expected) - collections.Counter(columns)).elements())
    extra = list((collections.Counter(columns) - collections.Counter(expected)).elements())
    diff = "; ".join(part for part in (
        f"not in the file: {_listed([repr(c) for c in missing])}" if missing else "",
        f"not in the model: {_listed([repr(c) for c in extra])}" if extra else "",
    ) if part)
    raise DataError(
        f"{what}: the header's column names are not those the model was fit on: expected {len(expected)} "
        f"({_listed([repr(c) for c in expected])}), got {len(columns)} ({_listed([repr(c) for c in columns])}); "
        f"{diff}. Use data with the model's columns, in its order; if only the names changed, rename the header "
        "to match."
    )


def _csv_line(cells) -> str:
    """One CSV row, quoted where a cell needs it (a comma, a quote or a line break)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


def _read_text(path: str) -> str:
    """The file as UTF-8 text (a leading byte-order mark dropped), or a :class:`DataError` naming the line."""
    with open(path, "rb") as fh:
        raw = fh.read()
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, bom + err.start) + 1
        raise DataError(
            f"{path}: line {line} is not UTF-8 text ({err.reason} at byte {bom + err.start}); expected a "
            "comma-separated text file."
        ) from err


def _check_separator(path: str, line: int, first: list[str], rows: list[tuple[int, list[str]]]) -> None:
    """Raises :class:`DataError` for a one-column file whose first row holds ';' or tabs (a wrong separator)."""
    if len(first) != 1 or any(len(row) != 1 for _, row in rows):
        return
    sep = next((s for s in (";", "\t") if s in first[0]), None)
    if sep is not None:
        kind = "';'-separated" if sep == ";" else "tab-separated"
        raise DataError(
            f"{path}: line {line} is one cell, {first[0]!r}; the file looks {kind}, "
            "but data files must be comma-separated."
        )


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
                             columns: list[str] | None = None) -> str | None:
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
    """
    n = x.shape[0]
    found = []
    for c in range(x.shape[1]):
        values = np.unique(x[:, c])
        if len(values) <= DISCRETE_MAX_VALUES and n >= DISCRETE_REPEATS * len(values):
            found.append((c, values))
    if not found:
        return None
    where = _locator(where, columns)
    listed = "; ".join(
        f"{where.column(c)}: {len(v)} values ({', '.join(f'{a:g}' for a in v[:4])}{', ...' if len(v) > 4 else ''})"
        for c, v in found[:5]
    )
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    return (
        f"{what}: {len(found)} of {x.shape[1]} columns take only a few distinct values ({listed}{more}). A "
        "continuous density over discrete values is unbounded, so its NLL is not meaningful; add uniform "
        "dequantisation noise (e.g. x + U[0, 1) for integers) or drop those columns."
    )


def _locator(where: Locator | None, columns: list[str] | None) -> Locator:
    """``where``, or for callers that pass only a CSV header, a :class:`Locator` built from it."""
    if where is not None:
        return where
    return Locator(csv=True, columns=tuple(columns)) if columns else Locator()


def split(x: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Splits rows at random (seeded) into ``(train, validation)``; row order is kept.

    Args:
      x: Data ``(n, dim)``.
      fraction: Share of rows held out, in ``[0, 1)``; 0 gives no validation set.
      seed: Seed of the permutation.

    Raises:
      DataError: ``fraction`` is outside ``[0, 1)`` or leaves fewer than
        :data:`MIN_ROWS` training rows (a ``ValueError``, as before).
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"--validation: expected a fraction in [0, 1); got {fraction}.")
    if fraction == 0.0:
        return x, None
    n = x.shape[0]
    n_val = max(1, round(fraction * n))
    if n - n_val < MIN_ROWS:
        raise DataError(
            f"--validation {fraction} holds out {n_val} of {n} rows, leaving {n - n_val} to train on; "
            f"expected at least {MIN_ROWS} training rows. Use a smaller --validation (or 0)."
        )
    perm = np.random.default_rng(seed).permutation(n)
    return x[np.sort(perm[n_val:])], x[np.sort(perm[:n_val])]


def write_array(path: str | os.PathLike, x, *, column: str = "x", columns=None) -> str:
    """Writes a 1-D or 2-D array as ``.npy`` or ``.csv`` (chosen by extension).

    CSV files get a header row: ``columns`` (one name per column of a 2-D array) when given, else
    ``x0,x1,...`` (``column`` followed by the index) for 2-D arrays and ``column`` for 1-D ones.

    Returns:
      The path written.

    Raises:
      DataError: The extension is neither ``.npy`` nor ``.csv``.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    check_output_path(path)
    x = np.asarray(x)
    if ext == ".npy":
        with open(path, "wb") as fh:  # np.save(path) would append ".npy" to e.g. "s.NPY"
            np.save(fh, x)
    else:
        if columns is not None and (x.ndim != 2 or len(columns) != x.shape[1]):
            raise ValueError(f"columns: expected {x.shape[-1]} names for an array of shape {x.shape}; got {columns!r}")
        if columns is not None:
            header = _csv_line(columns)
        else:
            header = column if x.ndim == 1 else ",".join(f"{column}{j}" for j in range(x.shape[1]))
        np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.9g")
    return path


def check_not_an_input(path, inputs: dict[str, str]) -> None:
    """Raises :class:`DataError` if the output ``path`` is one of ``inputs`` (``{"DATA": path, ...}``).

    So ``-o`` can never overwrite the file being read (the same path, or a link to it).
    """
    path = os.fspath(path)
    for what, other in inputs.items():
        other = os.fspath(other)
        same = os.path.abspath(path) == os.path.abspath(other) or (
            os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other)
        )
        if same:
            raise DataError(f"{path}: this is the {what} file being read; write the output to another path.")


def check_output_path(path: str) -> None:
    """Raises :class:`DataError` unless ``path`` ends in ``.npy`` or ``.csv`` and can be written.

    Called before any work, so a bad ``-o`` fails at once: the extension, the
    parent directory (must exist and be writable) and ``path`` itself (must
    not be a directory) are checked.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".csv"):
        raise DataError(f"{path}: unsupported output extension {ext!r}; expected .npy or .csv.")
    parent = os.path.dirname(path) or "."
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise DataError(f"{path}: {parent!r} is a file, not a directory.")
    if not os.path.isdir(parent):
        raise DataError(f"{path}: the output directory {parent!r} does not exist; create it first.")
    if os.path.isdir(path):
        raise DataError(f"{path}: expected an output file; got an existing directory.")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{path}: the output directory {parent!r} is not writable.")


def check_output_dir(out_dir) -> None:
    """Raises :class:`DataError` unless ``out_dir`` is a directory that exists or can be created.

    Called by ``gaussplug fit`` and ``gaussplug inspect`` before any work, so a
    bad ``--out`` fails at once: it must be a non-empty path that is not an
    existing file, and its nearest existing ancestor must be a writable
    directory.

    Example:
      >>> check_output_dir("")
      Traceback (most recent call last):
      ...
      gaussplug._errors.DataError: --out: expected a directory path; got ''.
    """
    out_dir = os.fspath(out_dir)
    if not out_dir:
        raise DataError("--out: expected a directory path; got ''.")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"--out: expected a directory; {out_dir!r} is an existing file.")
    parent = os.path.abspath(out_dir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise DataError(f"--out: cannot create {out_dir!r}: {parent!r} is a file, not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"--out: {out_dir!r} is not writable: the directory {parent!r} is not writable.")
