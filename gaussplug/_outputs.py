"""Command-line outputs: writing arrays as ``.npy`` / ``.csv`` and checking output paths before any work.

``gaussplug sample`` and ``gaussplug score -o`` write through :func:`write_array`; every command checks its
``-o`` file (:func:`check_output_path`, :func:`check_not_an_input`) or ``--out`` folder
(:func:`check_output_dir`) first, so a bad path fails at once as a one-line :class:`gaussplug.DataError`.
"""

from __future__ import annotations

import os

import numpy as np

from gaussplug._csv import _csv_line
from gaussplug._errors import DataError

__all__ = ["check_not_an_input", "check_output_dir", "check_output_path", "write_array"]


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
