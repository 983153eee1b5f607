"""Setting a context variable for the length of a ``with`` block (the callers' terms in messages, say)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["set_within"]

T = TypeVar("T")


@contextlib.contextmanager
def set_within(var: contextvars.ContextVar[T], value: T) -> Iterator[None]:
    """Within the block, ``var`` holds ``value``; afterwards, whatever it held before (also on an exception).

    Example:
      >>> var = contextvars.ContextVar("var", default="outside")
      >>> with set_within(var, "inside"):
      ...     var.get()
      'inside'
      >>> var.get()
      'outside'
    """
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)
