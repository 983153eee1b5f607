"""The ``standardize`` family: elementwise shift and log-scale."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import gaussplug

from .rotation import as_fit_data

__all__ = ["FAMILY", "StandardizeBijector", "fit_standardize", "make_standardize"]

# A constant column's fitted scale: this fraction of max(1, |mean|).
_SCALE_FLOOR = 1e-6
# A column is constant when its standard deviation is at most this many units in the last place of |mean|
# (in the params' dtype), or at most this many times that dtype's smallest normal number.
_CONSTANT_ULPS = 16


class StandardizeBijector(gaussplug.VectorBijector):
    r"""Elementwise affine map to zero mean and unit scale.

    Maths (per coordinate ``i``)::

        forward:  y_i = (x_i - shift_i) exp(-log_scale_i),  log|det J| = -sum_i log_scale_i
        inverse:  x_i = y_i exp(log_scale_i) + shift_i,     log|det J| = +sum_i log_scale_i

    Args:
      dim: Event size.
      shift: ``(dim,)`` array.
      log_scale: ``(dim,)`` array.
    """

    def __init__(self, dim: int, shift, log_scale):
        super().__init__(dim)
        self.shift = shift
        self.log_scale = log_scale

    def _forward_and_log_det(self, x):
        """``y = (x - shift) exp(-log_scale)``, clipped to ``+-7.9e28`` (float32; see ``clip_overflow``)."""
        y = gaussplug.clip_overflow((x - self.shift) * jnp.exp(-self.log_scale))
        return y, jnp.broadcast_to(-jnp.sum(self.log_scale).astype(y.dtype), x.shape[:-1])

    def _inverse_and_log_det(self, y):
        """``x = y exp(log_scale) + shift``."""
        x = y * jnp.exp(self.log_scale) + self.shift
        return x, jnp.broadcast_to(jnp.sum(self.log_scale).astype(x.dtype), y.shape[:-1])


def make_standardize(dim: int, trainable: bool = True) -> StandardizeBijector:
    """Creates ``"~"/"shift"`` and ``"~"/"log_scale"`` (zeros: the identity) and the bijector.

    Args:
      dim: Event size.
      trainable: Whether fine-tuning may change the params (unused here).

    Returns:
      A :class:`StandardizeBijector`.
    """
    del trainable
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    shift = hk.get_parameter("shift", (dim,), dtype, init=jnp.zeros)
    log_scale = hk.get_parameter("log_scale", (dim,), dtype, init=jnp.zeros)
    return StandardizeBijector(dim, shift, log_scale)


def fit_standardize(x, params, *, key, trainable: bool = True):
    """Greedy fit: per-column mean and (maximum-likelihood) standard deviation.

    A column whose standard deviation the params' dtype resolves (more than
    16 units in the last place of ``|mean|``, and more than 16 times the
    smallest normal number) gets that standard deviation however small it is:
    data in SI units (``1e-12`` farad) are modelled at their own scale. A
    constant column (constant up to rounding) gets ``1e-6 * max(1, |mean|)``
    instead, so that its log-scale is finite and rows off the constant are not
    sent to the edge of the float range. The fit maximises the Gaussian
    log-likelihood over all shifts and scales, so it never does worse than the
    identity (shift 0, scale 1); with the floor this still holds, because the
    per-column log-likelihood decreases in the scale above the MLE and the
    floor only exceeds 1 when ``|mean| > 1e6``, where the identity is far worse.

    Args:
      x: Data of shape ``(n, dim)``.
      params: The layer's current params
        ``{"~": {"shift": (dim,), "log_scale": (dim,)}}``.
      key: PRNG key; unused (the fit is deterministic).
      trainable: Unused by the fit.

    Returns:
      New params with the same structure and dtypes.

    Raises:
      DataError: If ``x`` is not finite data of shape ``(n >= 1, dim)``.
    """
    del key, trainable
    old = params["~"]
    dim = old["shift"].shape[0]
    x = as_fit_data(x, dim)
    mean, std = x.mean(axis=0), x.std(axis=0)
    info = np.finfo(old["log_scale"].dtype)
    constant = std <= _CONSTANT_ULPS * np.maximum(info.eps * np.abs(mean), info.tiny)
    std = np.where(constant, np.maximum(std, _SCALE_FLOOR * np.maximum(1.0, np.abs(mean))), std)
    return {
        "~": {
            "shift": jnp.asarray(mean, dtype=old["shift"].dtype),
            "log_scale": jnp.asarray(np.log(std), dtype=old["log_scale"].dtype),
        }
    }


def _validate(dim, options) -> None:
    """Checks the option values of a standardize layer."""
    del dim
    if not isinstance(options["trainable"], bool):
        raise ValueError(f"standardize option 'trainable' must be a bool; got {options['trainable']!r}.")


FAMILY = gaussplug.Family(
    name="standardize",
    make_bijector=make_standardize,
    fit=fit_standardize,
    options={"trainable": True},
    doc=(
        "Elementwise y = (x - shift) exp(-log_scale); the greedy fit sets each column's mean "
        "and standard deviation (a floor for constant columns). trainable=False keeps it fixed "
        "during fine-tuning (a preprocessing step stored in the model)."
    ),
    frozen=lambda options, module, name: not options["trainable"],
    validate=_validate,
)


@gaussplug.hookimpl
def gaussplug_register_families(register):
    """Registers the ``standardize`` family."""
    register(FAMILY)
