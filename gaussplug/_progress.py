"""Progress bars (tqdm) for the warm start, depth selection and fine-tuning.

A bar is drawn where a person watches: a terminal, or a Jupyter kernel (its output stream is not a
TTY, but the notebook redraws tqdm's line in place). Logs and pipes get no carriage-return lines.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar"]


def _watched(stream) -> bool:
    """Whether ``stream`` is a terminal or a Jupyter kernel's output stream."""
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total: int, progress: bool, *, desc: str, unit: str) -> tqdm:
    """A bar of ``total`` steps, cleared when closed; a disabled (no-op) bar without ``progress`` or a watcher.

    Use it as a context manager, so that an exception (a ``KeyboardInterrupt`` too) closes it.

    Example:
      >>> with progress_bar(3, False, desc="demo", unit="step") as bar:
      ...     print(bar.disable)
      ...     _ = bar.update(3)
      True
    """
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not (progress and _watched(sys.stderr)))
