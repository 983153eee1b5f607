"""Ctrl-C in the command line: honoured where it is safe, and never lost.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread happens to be. In
``gaussplug fit`` that went wrong in two ways. Raised inside a garbage-collection callback (JAX registers one),
the exception is printed as "Exception ignored" and dropped, so the fit ran on to the end and exited 0. Raised
while a training chunk was still running on XLA's threads, or while JAX was lowering and compiling one (building
MLIR objects that the unwinding then frees half-made), it crashed the process with a segmentation fault (seen
twice in CI, under load: once in a training chunk, once 2 s into fine-tuning, probably during its compile).

:func:`sigint_handled` installs a handler that records the signal. Outside a :func:`deferred` block it also
raises at once, as the default handler does. Inside one the first Ctrl-C is only recorded (and a line on stderr
says so), and it is raised at the next :func:`checkpoint`, a point where nothing is running on the device and
nothing is half-built: after a fine-tuning chunk's results have come back and after its compile, after a
warm-start layer's fit or a depth-selection block (also those fitted to noise for its tolerance), between the
batches of ``log_prob``/``sample`` with ``batch_size``. A second Ctrl-C raises at once. An interrupt that was
recorded but lost where it was raised is raised again by the next checkpoint. The command line runs every command
inside both blocks and calls a checkpoint when the command returns; the library only marks its checkpoints (the
one deferred block is the command line's, so no loop needs its own).

Without the handler (library use) nothing changes: ``deferred`` blocks do nothing and checkpoints never raise.

Not covered: a Ctrl-C in the first second or so of ``gaussplug``, while Python imports the package and JAX (the
handler can only be installed once ``gaussplug.cli`` is imported). There Python's default handler applies: a
traceback and exit status -2, or, rarely, the interrupt lands in JAX's garbage-collection callback and is lost,
and the command runs on until a second Ctrl-C (seen 1 in 12 when interrupting 0.3-2.5 s after start).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

__all__ = ["checkpoint", "deferred", "sigint_handled"]

_state = {"installed": False, "pending": False, "deferring": 0}


#: Written to stderr when a first Ctrl-C is deferred (so that it does not look ignored).
NOTICE = "gaussplug: Ctrl-C: stopping at the next safe point (press Ctrl-C again to stop at once)"


def _on_sigint(signum, frame) -> None:
    again = _state["pending"]
    _state["pending"] = True
    if again or not _state["deferring"]:
        raise KeyboardInterrupt
    try:  # os.write, not print: the signal may have landed inside a write to sys.stderr (not reentrant)
        os.write(2, f"\n{NOTICE}\n".encode())
    except OSError:  # no usable stderr: the interrupt is still recorded
        pass


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
