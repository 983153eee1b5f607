"""This machine's memory, for refusing work that cannot fit before XLA tries (and aborts the process)."""

from __future__ import annotations

import os

__all__ = ["physical_memory", "size_text"]


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say (not POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def size_text(n_bytes: float) -> str:
    """``n_bytes`` with one decimal in the largest binary unit it fills: ``"2.3 MiB"``, ``"3.6 TiB"``."""
    value, unit = float(n_bytes), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:,.0f} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
