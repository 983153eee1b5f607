"""Base class for the vector bijectors that layer families return."""

from __future__ import annotations

import distrax
import jax.numpy as jnp

from gaussplug._errors import DataError

__all__ = ["VectorBijector", "clip_overflow"]


def clip_overflow(y):
    """Clips ``y`` to ``+-finfo(y.dtype).max ** 0.75`` (7.9e28 in float32, 1.6e231 in float64).

    For layers that can amplify (a mixture CDF's linear far tail, a scale
    below 1): an output that overflowed to inf would turn a following
    rotation's sums into ``inf - inf = NaN``. Clipped, a rotation over up to
    ``finfo.max ** 0.25`` (4e9 in float32) dimensions stays finite, and the
    standard-normal density there has long underflowed (from ``|y| ~ 1.8e19``
    in float32), so a flow's ``log_prob`` is ``-inf`` or a huge negative number
    instead of NaN. Values inside the range are returned bit for bit.

    Example:
      >>> import jax.numpy as jnp
      >>> clip_overflow(jnp.array([1.0, 1e30, -jnp.inf], jnp.float32)).tolist()
      [1.0, 7.9228157791897855e+28, -7.9228157791897855e+28]
    """
    big = float(jnp.finfo(y.dtype).max) ** 0.75
    return jnp.clip(y, -big, big)


class VectorBijector(distrax.Bijector):
    """A data-to-latent bijector on vectors of a fixed size ``dim``.

    Subclasses implement ``_forward_and_log_det(x)`` and
    ``_inverse_and_log_det(y)`` for inputs of shape ``(..., dim)``, returning
    outputs of the same shape and log-determinants of shape ``(...)``. The base
    class checks the event size once, so subclasses never repeat it, and gives
    ``same_as`` distrax's semantics (exact type, params compared by identity).

    Example:
      >>> import jax.numpy as jnp
      >>> class Double(VectorBijector):
      ...     def _forward_and_log_det(self, x):
      ...         return 2 * x, jnp.full(x.shape[:-1], self.dim * jnp.log(2.0))
      ...     def _inverse_and_log_det(self, y):
      ...         return y / 2, jnp.full(y.shape[:-1], -self.dim * jnp.log(2.0))
      >>> Double(3).forward(jnp.ones(3)).tolist()
      [2.0, 2.0, 2.0]
    """

    def __init__(self, dim: int):
        super().__init__(event_ndims_in=1, event_ndims_out=1)
        self.dim = int(dim)

    def _check(self, x, what: str):
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise DataError(
                f"{type(self).__name__}: expected {what} of shape (..., {self.dim}); got shape {tuple(x.shape)}."
            )
        return x

    def forward_and_log_det(self, x):
        """Data-to-latent map and its log |det J|."""
        return self._forward_and_log_det(self._check(x, "input"))

    def inverse_and_log_det(self, y):
        """Latent-to-data map and its log |det J|."""
        return self._inverse_and_log_det(self._check(y, "input"))

    def _forward_and_log_det(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _inverse_and_log_det(self, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def same_as(self, other) -> bool:
        """Whether ``other`` is guaranteed to be this bijector, with distrax's semantics.

        True when ``other`` has exactly this type and was built from the same
        objects: every attribute is the same object (arrays, which may be
        tracers, are compared by identity, as distrax's own bijectors compare
        their params) or an equal Python scalar or string. False is always safe.
        """
        if type(other) is not type(self):
            return False
        mine, theirs = vars(self), vars(other)
        return mine.keys() == theirs.keys() and all(_same_attr(mine[k], theirs[k]) for k in mine)


def _same_attr(a, b) -> bool:
    return a is b or (isinstance(a, (bool, int, float, str)) and type(a) is type(b) and a == b)
