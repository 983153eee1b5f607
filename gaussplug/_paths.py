"""What kind of file a path names: readers that must seek (``.npy``, ``.npz``) refuse all but regular files.

``numpy.load`` on a named pipe waits for a writer and then fails (it seeks); on a device it may
read forever. Refusing such a path up front turns a hang into a clear error.
"""

from __future__ import annotations

import os
import stat

__all__ = ["special_file_kind"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file_kind(path: str | os.PathLike) -> str | None:
    """None for a regular file (or a path that cannot be stat'ed: the reader reports that); else what it is.

    Example:
      >>> special_file_kind(os.devnull)
      'a character device'
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None)
