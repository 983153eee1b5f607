"""A clear error, instead of a deadlock, in a child process forked after JAX started in its parent.

XLA runs threads; a child made by ``os.fork`` (multiprocessing's ``"fork"`` start method, the
default on Linux before Python 3.14) inherits their locks but not the threads, and its first
compilation waits forever. JAX only warns. gaussplug notes at fork time whether JAX's backends were
running, and its entry points (:func:`check_not_forked`) refuse to start work in such a child.
"""

from __future__ import annotations

import os

from gaussplug._errors import GaussplugError

__all__ = ["check_not_forked"]

_state = {"jax_started_at_fork": False, "forked_after_jax": False}


def _jax_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", None))  # read without JAX's lock: this runs at fork time
    except Exception:  # a JAX without this internal: no check, as before
        return False


def _before_fork() -> None:
    _state["jax_started_at_fork"] = _jax_started()


def _after_fork_in_child() -> None:
    if _state["jax_started_at_fork"]:
        _state["forked_after_jax"] = True


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def check_not_forked(what: str) -> None:
    """Raises :class:`GaussplugError` in a child forked after JAX started in its parent.

    Args:
      what: The call that was refused, for the message.
    """
    if _state["forked_after_jax"]:
        raise GaussplugError(
            f"{what}: this process was forked (os.fork, or multiprocessing's 'fork' start method) after JAX had "
            "started in its parent, and JAX cannot run in such a child: it would wait forever. Start workers with "
            "the 'spawn' or 'forkserver' method (multiprocessing.get_context('spawn'), or "
            "ProcessPoolExecutor(mp_context=...)), or use joblib's default backend (loky); a pickled flow "
            "travels to them."
        )
