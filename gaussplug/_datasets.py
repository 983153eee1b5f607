"""Data for the command line: reading ``.npy`` / ``.npz`` / ``.csv`` files, built-in data, the validation split.

Every problem is reported as a :class:`gaussplug.DataError` (or
``FileNotFoundError``) whose message names the file and, where it is about
one place in it, names the place as :class:`gaussplug._data.Locator` does: a
CSV file by file line (1-based, counting the header) and 1-based column with
its header name; an ``.npy`` / ``.npz`` array by 0-based ``row index`` and
``column index``. So the CLI can print it as one line. CSV parsing is in
:mod:`gaussplug._csv`, the checks that data suits a fit in
:mod:`gaussplug._data_checks`, and writing outputs in :mod:`gaussplug._outputs`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from gaussplug._csv import _listed, _read_csv
from gaussplug._data import Locator
from gaussplug._errors import DataError
from gaussplug._paths import special_file_kind

__all__ = ["Dataset", "check_data", "load_data", "split", "two_moons"]

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
    kind = special_file_kind(path)
    if kind == "a directory" or (kind is not None and ext != ".csv"):  # a CSV file is read as a stream
        raise DataError(f"{path}: expected a data file; got {kind}.")
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


#: How the files ``np.load`` reads begin: a ``.npy`` array, and a zip archive (``.npz``; empty, or not).
_NPY_MAGIC, _ZIP_MAGICS = b"\x93NUMPY", (b"PK\x03\x04", b"PK\x05\x06")


def _check_magic(path: str, ext: str) -> None:
    """Refuses a file that is neither a ``.npy`` array nor a zip archive before ``np.load`` reads it.

    ``np.load`` takes any other file for a pickle, so without this a text or damaged file would be
    reported as pickled data.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError:
        return  # np.load reports it
    if not head:
        raise DataError(f"{path}: the file is empty.")
    if not head.startswith(_NPY_MAGIC) and not head.startswith(_ZIP_MAGICS):
        kind = "a .npy array file" if ext == ".npy" else "an .npz archive"
        raise DataError(f"{path}: not {kind}: it does not begin as one (first bytes {head!r}); "
                        f"expected a file written by numpy.{'save' if ext == '.npy' else 'savez'}.")  # fmt: skip


def _read_numpy(path: str, ext: str, key: str | None) -> tuple[np.ndarray, str | None]:
    _check_magic(path, ext)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):  # an object array
            raise DataError(f"{path}: cannot be read without pickle ({err}); save a numeric array.") from err
        raise DataError(f"{path}: not a readable {ext} file, truncated or damaged ({err}).") from err
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
            if not keys:
                raise DataError(f"{path}: the archive holds no arrays; expected one array of data.")
            if len(keys) != 1:
                raise DataError(
                    f"{path}: the archive holds {len(keys)} arrays ({_listed(keys)}); pick one with --key."
                )
            key = keys[0]
        elif key not in keys:
            raise DataError(f"{path}: no array named {key!r}; the archive holds {_listed(keys)}.")
        try:
            return archive[key], key
        except ValueError as err:
            if "allow_pickle" in str(err):
                raise DataError(f"{path}: array {key!r} cannot be read without pickle; save numbers.") from err
            raise DataError(f"{path}: array {key!r} cannot be read, truncated or damaged ({err}).") from err
        except Exception as err:  # BadZipFile (bad CRC), zlib errors
            raise DataError(f"{path}: array {key!r} cannot be read ({type(err).__name__}: {err}).") from err


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
