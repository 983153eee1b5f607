"""Ctrl-C in the command line: honoured where it is safe, and never lost.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread happens to be. In
``gaussplug fit`` that went wrong in two ways. Raised inside a garbage-collection callback (JAX registers one),
the exception is printed as "Exception ignored" and dropped, so the fit ran on to the end and exited 0. Raised
while a training chunk was still running on XLA's threads, unwinding the loop's frames crashed the process with a
segmentation fault (seen once in CI, under load).

:func:`sigint_handled` (the command line wraps each command in it) installs a handler that records the signal.
Outside a :func:`deferred` block it also raises at once, as the default handler does. Inside one (the
fine-tuning and warm-start loops) the first Ctrl-C is only recorded, and the loop raises it at its next
:func:`checkpoint`, a point where nothing is running on the device: after a chunk's results have come back, after
a layer's fit. A second Ctrl-C raises at once. An interrupt that was recorded but lost where it was raised is raised
again by the next checkpoint; the command line calls one when its command returns.

Without the handler (library use) nothing changes: ``deferred`` blocks do nothing and checkpoints never raise.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["checkpoint", "deferred", "sigint_handled"]

_state = {"installed": False, "pending": False, "deferring": 0}


def _on_sigint(signum, frame) -> None:
    again = _state["pending"]
    _state["pending"] = True
    if again or not _state["deferring"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigint_handled():
    """Within the block, SIGINT is recorded and raised as described in the module docstring.

    Only the main thread can set a signal handler; from another thread the block changes nothing.
    """
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _state.update(installed=True, pending=False)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state.update(installed=False, pending=False)


@contextlib.contextmanager
def deferred():
    """Within the block, a first Ctrl-C waits for :func:`checkpoint` instead of raising where it lands."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


def checkpoint() -> None:
    """Raises ``KeyboardInterrupt`` if a Ctrl-C was recorded and not yet raised here; else does nothing."""
    if _state["pending"]:
        _state["pending"] = False
        raise KeyboardInterrupt
