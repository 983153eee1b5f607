"""The ``gaussplug plugins`` command: lists the registered layer families as a table or as JSON."""

from __future__ import annotations

import json
import shutil
import sys


def _plugins(args) -> int:
    """Prints the families; when two plugins provide the same family, it prints those that load, then raises.

    Raises:
      PluginError: Two plugins provide the same family (exit code 3); the message names both, after the
        table (or JSON) of the families that load.
    """
    from gaussplug._errors import PluginError
    from gaussplug._plugins import get_registry

    families, clashes = get_registry().families_despite_clashes()
    rows = [
        {"name": i.name, "plugin": i.plugin, "version": i.version, "distribution": i.distribution,
         "options": dict(i.options), "doc": i.doc}
        for i in sorted(families.values(), key=lambda i: i.name)
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_table(rows)
    if clashes:
        sys.stdout.flush()  # the table comes before the error line
        raise PluginError(" ".join(str(err) for err in clashes)) from clashes[0]
    return 0


def _print_table(rows) -> None:
    """Prints the families as a table, one row each; on a terminal, descriptions are cut to its width.

    DISTRIBUTION is the pip distribution that installed the plugin (``-`` for a run-time plugin).
    """
    table = [("FAMILY", "PLUGIN", "VERSION", "DISTRIBUTION", "OPTIONS (defaults)", "DESCRIPTION")]
    for r in rows:
        options = ", ".join(f"{k}={v!r}" for k, v in r["options"].items()) or "-"
        table.append((r["name"], r["plugin"], r["version"], r["distribution"] or "-", options,
                      _first_sentence(r["doc"])))  # fmt: skip
    widths = [max(len(row[c]) for row in table) for c in range(5)]
    # Cut descriptions to the terminal's width; piped output keeps them whole.
    room = max(shutil.get_terminal_size().columns - sum(widths) - 10, 30) if sys.stdout.isatty() else 10**6
    for row in table:
        doc = row[5] if len(row[5]) <= room else row[5][: room - 3] + "..."
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + doc)
    if not rows:
        print("(no layer families are registered)")


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]
