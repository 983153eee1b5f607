"""Dropping compiled code: gaussplug's caches of compiled functions, and JAX's."""

from __future__ import annotations

import jax

__all__ = ["clear_caches"]


def clear_caches() -> None:
    """Drops every compiled function that gaussplug and JAX keep, so that their memory can be returned.

    gaussplug keeps the compiled training chunks of the last 8 ``fine_tune``
    set-ups, the machinery of the last 64 flow plans and the warm start's
    sharded pushes; JAX keeps every function it compiled. A process that
    compiles many distinct flows (a long hyper-parameter search) accumulates
    XLA executables, each holding memory mappings of its own, and on Linux can
    reach the kernel's ``vm.max_map_count``, where XLA's compiler crashes. Call
    this between trials. Flows stay usable; their next call compiles again.
    (``jax.clear_caches()`` alone leaves gaussplug's training chunks alive.)

    Example:
      >>> import gaussplug, numpy as np
      >>> flow = gaussplug.fit_rbig(np.random.default_rng(0).normal(size=(200, 2)), n_layers=1, n_components=2)
      >>> gaussplug.clear_caches()
      >>> flow.log_prob(np.zeros((1, 2))).shape  # compiles again
      (1,)
    """
    from gaussplug import _runtime, _train, _warm_data

    _train._COMPILED.clear()
    _runtime._CACHE.clear()
    _warm_data._sharded_forward.cache_clear()
    jax.clear_caches()
