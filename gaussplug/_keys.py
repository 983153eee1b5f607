"""Int seeds and JAX PRNG keys, accepted the same way by every public function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gaussplug._scalars import is_int

__all__ = ["SEED_LIMIT", "as_key", "as_seed", "check_seed"]


#: Int seeds are taken in ``[0, SEED_LIMIT)``: without x64 JAX keeps 32 bits of a seed, so a larger or
#: negative seed would silently repeat another one's stream; one range for both modes keeps a seed's
#: meaning the same in float32 and float64 runs.
SEED_LIMIT = 2**32


def check_seed(seed) -> int:
    """``seed`` as an int: TypeError unless an int (as :func:`as_key`), ValueError outside ``[0, SEED_LIMIT)``."""
    if not is_int(seed):
        raise TypeError(f"key: expected an int seed or a jax.random key; got {type(seed).__name__} {seed!r}.")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(
            f"key: expected an int seed in [0, 2**32); got {seed!r}. Without x64, JAX keeps 32 bits of a seed, "
            "so others would repeat a stream, and the range is the same with x64 so that a seed means the same "
            "in both; pass a jax.random.key for more streams."
        )
    return int(seed)


def as_key(key) -> jax.Array:
    """Accept an int seed in ``[0, 2**32)`` or a JAX PRNG key."""
    if is_int(key):
        return jax.random.PRNGKey(check_seed(key))
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"key: expected an int seed or a jax.random key; got {type(key).__name__} {key!r}.")
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if typed and key.shape == ():
        return key
    if not typed and key.shape == (2,) and key.dtype == jnp.uint32:
        return jnp.asarray(key)
    if not isinstance(key, jax.core.Tracer):  # (under jit only the structure can be checked)
        if typed:
            raise TypeError(f"key: expected one jax.random key; got an array of keys of shape {key.shape} "
                            "(index one, e.g. keys[0]).")
        if key.shape == () and jnp.issubdtype(key.dtype, jnp.integer):  # a 0-d integer array: a seed
            return jax.random.PRNGKey(check_seed(int(key)))
    raise TypeError(f"key: expected an int seed or a jax.random key (a typed key of shape (), or a raw uint32 key "
                    f"of shape (2,)); got {type(key).__name__} of shape {key.shape} and dtype {key.dtype}.")


def as_seed(key) -> int:
    """An int seed from an int seed in ``[0, 2**32)`` or a JAX PRNG key (for code seeded by ints, e.g. NumPy).

    A JAX key gives ``jax.random.bits(key)`` (32 bits), so equal keys give equal seeds.
    """
    if isinstance(key, (jax.Array, np.ndarray)):
        if key.shape == () and jnp.issubdtype(key.dtype, jnp.integer):  # a 0-d integer array: a seed
            return check_seed(int(key))
        return int(jax.random.bits(as_key(key), dtype=jnp.uint32))  # a key (as_key names anything else)
    return check_seed(key)
