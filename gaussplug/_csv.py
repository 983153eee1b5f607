"""CSV data files: parsing them, reading their header, and checking a header against a model's column names.

Used by :func:`gaussplug._datasets.load_data` (which reads ``.csv`` files through :func:`_read_csv`), by
``gaussplug score`` and ``gaussplug inspect`` (:func:`csv_header`, :func:`check_columns`) and by
:func:`gaussplug._outputs.write_array` (a header row through :func:`_csv_line`). Every problem is a
:class:`gaussplug.DataError` naming the file and, where it is about one place in it, its file line (1-based,
counting the header) and 1-based column with its header name, as :class:`gaussplug._data.Locator` does.
"""

from __future__ import annotations

import array
import codecs
import collections
import csv
import io
import itertools
import math
import os
import re

import numpy as np

from gaussplug._data import Locator
from gaussplug._errors import DataError, DataWarning, shown
from gaussplug._registry import _warn

__all__ = ["check_columns", "csv_header"]


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _lines(text: str):
    """The lines of ``text`` with their endings, as ``io.StringIO(text, newline="")`` gives them, without copying.

    A line ends at LF, CR LF or a lone CR (an old Mac file), as the csv module expects.
    """
    for match in _LINE.finditer(text):
        if match.group():
            yield match.group()


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def _records(path: str, text: str):
    """``(line, cells)`` of every record with a non-empty cell, stripped, read one at a time.

    ``line`` is the file line where the record starts (a quoted cell may span lines).
    """
    reader = csv.reader(_lines(text))
    line = 1
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if any(cells):
                yield line, cells
            line = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({err}).") from err


def _read_csv(path: str) -> tuple[np.ndarray, Locator]:
    """Parses a comma-separated file; messages name file lines and 1-based columns (see :class:`Locator`).

    Each record is converted as it is read (the values in a float64 buffer, the line numbers in an int64
    one), so the memory needed is about the text's and the array's, not a Python string per cell.
    """
    text = _read_text(path)
    records = _records(path, text)
    first_line, first = next(records, (None, None))
    if first is None:
        raise DataError(f"{path}: the CSV file is empty.")
    if len(first) == 1 and any(s in first[0] for s in ";\t"):  # a wrong separator, perhaps: look at every row
        _check_separator(path, first_line, first, list(records))
    columns = None
    if _is_header(first):
        columns = tuple(first)
        if _is_index_header(first):
            _warn(
                f"{path}: line {first_line} reads {_csv_line(first[:3])}{',...' if len(first) > 3 else ''}, the "
                "header pandas writes for unnamed columns (DataFrame.to_csv), so it is read as a header, not as "
                "data. If it is data, save the array as .npy instead.",
                DataWarning,
            )
        _warn_duplicate_names(path, first_line, columns)
        rows = records
    else:
        rows = itertools.chain([(first_line, first)], records)
    width = len(first)
    values, lines = array.array("d"), array.array("q")
    first_bad, more = None, _BadCells()  # the first cell that is not a finite number, and a tally of the rest
    nan_row = [math.nan] * width
    for line, row in rows:
        if len(row) != width:
            raise DataError(
                f"{path}: line {line} has {len(row)} column{'s' if len(row) != 1 else ''}; expected {width} "
                f"(as on line {first_line})."
            )
        lines.append(line)
        try:
            parsed = [float(cell) for cell in row]
            if all(map(math.isfinite, parsed)):
                values.extend(parsed)
                continue
        except (ValueError, OverflowError):
            pass
        values.extend(nan_row)  # some cell is not a finite number: tally it (never read: an error follows)
        for c, cell in enumerate(row):
            value = _number(cell)
            if value is None or not math.isfinite(value):
                if first_bad is None:
                    first_bad = (line, c, cell)
                else:
                    more.add(line, c)
    n = len(lines)
    where = Locator(csv=True, lines=np.frombuffer(lines, np.int64).copy(), columns=columns)
    if first_bad is not None:
        line, c, cell = first_bad
        problem = "is empty" if not cell else f"holds {shown(cell)}, which is not a finite number"
        separated = any(s in cell for s in ";\t")  # another separator: the column advice below would mislead
        hint = ""
        if separated:
            hint = " The file must be comma-separated."
            if ";" in cell and c > 0:  # 0,5;1,25 split at its decimal commas
                hint = (" The file looks ';'-separated with decimal commas (as some locales write numbers), but "
                        "data files must be comma-separated with decimal points.")
        whole_column = more.in_column(c) + 1 == n and n > 1 and not separated
        if line == first_line and columns is None and not whole_column and not separated:
            hint += (f" If line {line} is a header, some of its names are numbers: a header is recognised when "
                     "none of its names is a number (or it reads 0,1,2,... as pandas writes); rename them.")
        if whole_column:
            hint += (f" {where.column(c).capitalize()} holds no number on any line"
                     + (" (a comma at the end of every line?)" if c == width - 1 and not cell else "")
                     + ": remove it.")
        raise DataError(f"{path}: line {line}, {where.column(c)} {problem}.{more.describe(where)}{hint}")
    return np.frombuffer(values, np.float64).reshape(n, width).copy(), where


class _BadCells:
    """A tally of bad cells after the first, in bounded memory: their count, lines and columns (the first few)."""

    SHOWN = 5

    def __init__(self):
        self.count, self.n_lines, self.last_line, self.lines, self.columns = 0, 0, None, [], {}

    def add(self, line: int, column: int) -> None:
        self.count += 1
        if line != self.last_line:  # cells arrive in file order, so a new line is one not seen before
            self.n_lines, self.last_line = self.n_lines + 1, line
            if len(self.lines) < self.SHOWN:
                self.lines.append(line)
        self.columns[column] = self.columns.get(column, 0) + 1

    def in_column(self, column: int) -> int:
        """How many of the tallied cells are in ``column``."""
        return self.columns.get(column, 0)

    def describe(self, where: Locator) -> str:
        """How many more bad cells, on which lines and in which columns; empty if none."""
        if not self.count:
            return ""
        shown = ", ".join(map(str, self.lines)) + (f" and {self.n_lines - len(self.lines)} more"
                                                    if self.n_lines > len(self.lines) else "")
        cols = sorted(self.columns)
        in_cols = ", ".join(where.column(c).removeprefix("column ") for c in cols[:self.SHOWN])
        in_cols += f" and {len(cols) - self.SHOWN} more" if len(cols) > self.SHOWN else ""
        return (f" {self.count} more cell{'s are' if self.count != 1 else ' is'} empty or not a finite number: on "
                f"line{'s' if self.n_lines != 1 else ''} {shown}; in column{'s' if len(cols) != 1 else ''} "
                f"{in_cols}.")


def _warn_duplicate_names(path: str, line: int, columns: tuple[str, ...]) -> None:
    """A :class:`DataWarning` when header names repeat: the model keeps the names, and score checks data by them."""
    seen: dict[str, list[int]] = {}
    for c, name in enumerate(columns):
        seen.setdefault(name, []).append(c + 1)
    repeated = {name: cols for name, cols in seen.items() if len(cols) > 1 and name}
    if repeated:
        listed = "; ".join(f"{shown(name)} in columns {', '.join(map(str, cols))}" for name, cols in repeated.items())
        _warn(f"{path}: line {line}, the header repeats column names ({listed}). The model keeps the names, and "
              "score and inspect check a file's header against them in order; give each column its own name.",
              DataWarning)


def _is_header(cells: list[str]) -> bool:
    """Whether a CSV file's first non-empty row is a header: no cell is a number, or it is pandas' index header."""
    return all(_number(c) is None for c in cells) or _is_index_header(cells)


def _is_index_header(cells: list[str]) -> bool:
    """Whether the cells read ``0,1,...,d-1``: the column labels ``DataFrame.to_csv`` writes for unnamed columns.

    With the frame's index written too (``to_csv()``'s default), they follow the index's empty header
    cell: ``,0,1,...``.
    """
    labels = cells[1:] if cells[:1] == [""] else cells
    return bool(labels) and labels == [str(i) for i in range(len(labels))]


def csv_header(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The header names of a CSV file, as :func:`gaussplug._datasets.load_data` finds them, reading only that far.

    A quick look before the file is loaded (``gaussplug inspect`` checks the names against the model's
    first). It never raises: a file that cannot be read, or is not UTF-8 CSV up to its first row, gives
    None, and :func:`gaussplug._datasets.load_data` then reports the problem.

    Returns:
      The first non-empty row's cells (stripped) if none of them is a number or they read ``0,1,...``
      (pandas' labels for unnamed columns); else None.
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
        listed = _listed([f"column {i + 1} is {shown(columns[i])} where the model has {shown(expected[i])}"
                          for i in moved], 5)
        raise DataError(
            f"{what}: the header names the model's columns in another order, but columns are matched by position, "
            f"not by name: {listed}. Reorder the file's columns so that its header reads: {_csv_line(expected)}"
        )
    missing = list((collections.Counter(expected) - collections.Counter(columns)).elements())
    extra = list((collections.Counter(columns) - collections.Counter(expected)).elements())
    diff = "; ".join(part for part in (
        f"not in the file: {_listed([shown(c) for c in missing])}" if missing else "",
        f"not in the model: {_listed([shown(c) for c in extra])}" if extra else "",
    ) if part)
    raise DataError(
        f"{what}: the header's column names are not those the model was fit on: expected {len(expected)} "
        f"({_listed([shown(c) for c in expected])}), got {len(columns)} ({_listed([shown(c) for c in columns])}); "
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
    """Raises :class:`DataError` for a file whose first row is one cell holding ';' or tabs (a wrong separator).

    Either every row is one cell, or the other rows split at decimal commas (``0,5;1,25``, as some locales write).
    """
    sep = next((s for s in (";", "\t") if s in first[0]), None) if len(first) == 1 else None
    if sep is None:
        return
    kind = "';'-separated" if sep == ";" else "tab-separated"
    if all(len(row) == 1 for _, row in rows):
        raise DataError(f"{path}: line {line} is one cell, {shown(first[0])}; the file looks {kind}, "
                        "but data files must be comma-separated.")
    later = next((i, row) for i, row in rows if len(row) != 1)
    raise DataError(f"{path}: line {line} is one cell, {shown(first[0])}, but line {later[0]} splits into "
                    f"{len(later[1])} cells at its commas: the file looks {kind} with decimal commas (as some locales "
                    "write numbers), but data files must be comma-separated with decimal points.")
