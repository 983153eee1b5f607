"""fine_tune's default optimiser, with its settings as run-time numbers so that they do not recompile.

Gradient clipping by global norm, then Adam on optax's one-cycle cosine schedule
(:func:`optax.cosine_onecycle_schedule`). Built once with
:func:`optax.inject_hyperparams`: the peak learning rate, the step count and the clip norm
live in the optimiser state, and :func:`with_settings` writes a run's values there after
``init``. A learning-rate or step-count sweep therefore reuses one compiled training chunk
(with the settings baked in, each new value cost a compile of several seconds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["DEFAULT", "settings", "with_settings"]

#: :func:`optax.cosine_onecycle_schedule`'s defaults: warm-up fraction, initial and final divisors.
_PCT_START, _DIV, _FINAL_DIV = 0.3, 25.0, 1e4


def _schedule(count, init_lr, warmup_end, steps):
    """``optax.cosine_onecycle_schedule(steps, 25 * init_lr)(count)``, with array boundaries.

    The same operations as optax's ``piecewise_interpolate_schedule`` (cosine), whose
    boundaries must be Python ints; here they are arrays, so the same function serves
    every step count (a test checks the two agree exactly).
    """
    bounds = jnp.stack((jnp.zeros_like(steps), warmup_end, steps))
    values = jnp.cumprod(jnp.stack((init_lr, _DIV, 1.0 / (_DIV * _FINAL_DIV))))
    sizes = jnp.maximum(bounds[1:] - bounds[:-1], 1)
    inside = jnp.logical_and(bounds[:-1] <= count, count < bounds[1:])
    pct = (count - bounds[:-1]) / sizes
    start, end = values[:-1], values[1:]
    interpolated = end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)
    return inside.dot(interpolated) + (bounds[-1] <= count) * values[-1]


def _clipped_adam(init_lr, warmup_end, steps, clip_norm) -> optax.GradientTransformation:
    schedule = lambda count: _schedule(count, init_lr, warmup_end, steps)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(schedule))


#: The default optimiser (one object, so every run shares its compiled chunks); placeholder settings.
DEFAULT = optax.inject_hyperparams(_clipped_adam)(init_lr=1.0, warmup_end=0, steps=1, clip_norm=1.0)


def settings(steps: int, peak_lr: float, clip_norm: float) -> dict[str, jax.Array]:
    """One run's settings for :data:`DEFAULT`, as :func:`with_settings` takes them.

    The boundaries are computed as optax computes them (``int(0.3 * steps)``), in Python.
    """
    return {
        "init_lr": jnp.asarray(peak_lr / _DIV, jnp.result_type(float)),
        "warmup_end": jnp.asarray(int(_PCT_START * steps), jnp.int32),
        "steps": jnp.asarray(int(steps), jnp.int32),
        "clip_norm": jnp.asarray(clip_norm, jnp.result_type(float)),
    }


def with_settings(opt_state, values):
    """``opt_state`` of :data:`DEFAULT` with a run's settings (``values`` from :func:`settings`; traceable)."""
    old = opt_state.hyperparams
    return opt_state._replace(hyperparams={**old, **{k: jnp.asarray(v, old[k].dtype) for k, v in values.items()}})
