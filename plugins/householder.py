"""The ``householder`` family: a trainable orthogonal map as a product of reflections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

import gaussplug
from gaussplug._host import single_threaded_blas

from .rotation import METHODS, rotation_matrix

__all__ = [
    "FAMILY",
    "HouseholderBijector",
    "fit_householder",
    "householder_product",
    "householder_vectors",
    "make_householder",
]

_HIGHEST = jax.lax.Precision.HIGHEST


#: Up to this many multiply-adds (``R * dim**2``) the reflections are applied one by one; beyond, the UT transform.
_SEQUENTIAL_UP_TO = 128**3


def _reflection_scale(v):
    """``2 / (v^T v)``, and 0 for a zero vector (the identity), with finite gradients."""
    vv = jnp.dot(v, v, precision=_HIGHEST)
    return jnp.where(vv > 0, 2 / jnp.where(vv > 0, vv, 1), 0)


def _product_sequential(vectors):
    """``Q = H_1 ... H_R`` as ``R`` rank-one updates ``Q <- Q - s (Q v) v^T`` in a ``lax.scan``."""

    def step(q, v):
        qv = jnp.matmul(q, v, precision=_HIGHEST)
        return q - _reflection_scale(v) * jnp.outer(qv, v), None

    eye = jnp.eye(vectors.shape[-1], dtype=vectors.dtype)
    return jax.lax.scan(step, eye, vectors)[0]


def _product_ut(vectors):
    """``Q = I - V T^{-1} V^T`` (UT transform) with ``T = striu(V^T V) + diag(v_r^T v_r / 2)``."""
    gram = jnp.matmul(vectors, vectors.T, precision=_HIGHEST)
    half_norms = jnp.diagonal(gram) / 2
    t = jnp.triu(gram, 1) + jnp.diag(jnp.where(half_norms > 0, half_norms, 1))
    eye = jnp.eye(vectors.shape[-1], dtype=vectors.dtype)
    return eye - jnp.matmul(vectors.T, solve_triangular(t, vectors, lower=False), precision=_HIGHEST)


@jax.jit
def householder_product(vectors):
    """``Q = H_1 H_2 ... H_R`` for the rows ``v_r`` of ``vectors`` (shape ``(R, dim)``).

    Two exact evaluations, chosen by size. Up to ``R dim^2 = 128^3``
    multiply-adds the reflections are applied one at a time in a
    ``lax.scan`` (``Q <- Q - 2 (Q v) v^T / v^T v``): tiny fused steps, which
    XLA-CPU runs in microseconds. Beyond that, the UT transform (Joffrain et
    al., 2006): with ``V = vectors^T``, ``Q = I - V T^{-1} V^T`` and ``T =
    striu(V^T V) + diag(v_r^T v_r / 2)`` upper triangular, whose triangular
    solve costs a roughly fixed 15-20 ms on XLA-CPU (50-80x the scan at
    ``R = dim = 32``) but scales better. A zero vector is treated as the
    identity, with finite gradients.

    Example:
      >>> import jax.numpy as jnp
      >>> q = householder_product(jnp.array([[1.0, 0.0], [1.0, 1.0]]))
      >>> [[round(float(a), 4) for a in row] for row in q]
      [[0.0, 1.0], [-1.0, 0.0]]
    """
    count, dim = vectors.shape
    if count * dim * dim <= _SEQUENTIAL_UP_TO:
        return _product_sequential(vectors)
    return _product_ut(vectors)


class HouseholderBijector(gaussplug.VectorBijector):
    r"""Orthogonal map ``Q = H_1 H_2 ... H_R`` built from Householder reflections.

    Maths (row vectors ``x`` of size ``dim``, reflection vectors ``v_r``)::

        H_r = I - 2 v_r v_r^T / (v_r^T v_r)       (symmetric, H_r^2 = I)
        forward:  y = x Q = x H_1 H_2 ... H_R,    log|det J| = 0
        inverse:  x = y Q^T = y H_R ... H_2 H_1,  log|det J| = 0

    ``Q`` stays orthogonal for any nonzero ``v_r``, so the layer is trainable
    without a log-determinant. A zero ``v_r`` acts as the identity.

    Args:
      dim: Event size.
      vectors: ``(R, dim)`` array of reflection vectors ``v_r``.
    """

    def __init__(self, dim: int, vectors):
        super().__init__(dim)
        self.vectors = vectors

    def matrix(self):
        """The ``(dim, dim)`` orthogonal matrix ``Q``."""
        return householder_product(self.vectors)

    def _forward_and_log_det(self, x):
        """``y = x Q``."""
        y = jnp.matmul(x, self.matrix(), precision=_HIGHEST)
        return y, jnp.zeros(x.shape[:-1], y.dtype)

    def _inverse_and_log_det(self, y):
        """``x = y Q^T`` (the reflections in reverse order)."""
        x = jnp.matmul(y, self.matrix().T, precision=_HIGHEST)
        return x, jnp.zeros(y.shape[:-1], x.dtype)


def make_householder(dim: int, reflectors: int | None = None, method: str = "pca") -> HouseholderBijector:
    """Creates ``"~"/"vectors"`` of shape ``(reflectors or dim, dim)`` and the bijector.

    Args:
      dim: Event size.
      reflectors: Number of reflections ``R``; ``None`` means ``dim``.
      method: How the greedy fit chooses the rotation (unused here).

    Returns:
      A :class:`HouseholderBijector` with standard-normal random vectors at init.
    """
    del method
    count = dim if reflectors is None else reflectors
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    vectors = hk.get_parameter("vectors", (count, dim), dtype, init=hk.initializers.RandomNormal())
    return HouseholderBijector(dim, vectors)


def householder_vectors(basis: np.ndarray) -> np.ndarray:
    """Householder QR of a matrix with orthonormal columns.

    Returns ``v_1..v_R`` such that ``Q = H_1 ... H_R`` has
    ``Q[:, :R] = basis * s`` for signs ``s_j = ±1``. Step ``j`` reflects the
    trailing part ``a`` of column ``j`` onto ``e_j`` with
    ``v = a - s ||a|| e_j`` and ``s = -sign(a_j)``, which avoids cancellation.
    Since the columns are orthonormal, ``||a|| = 1`` at every step, so every
    step is a proper reflection (``v^T v >= 2``; no identity steps).

    Args:
      basis: ``(dim, R)`` float64 array with orthonormal columns, ``R <= dim``.

    Returns:
      ``(R, dim)`` array of reflection vectors (``v_j`` is zero before entry ``j``).
    """
    a = np.array(basis, dtype=np.float64)
    dim, count = a.shape
    vectors = np.zeros((count, dim))
    for j in range(count):
        col = a[j:, j]
        v = col.copy()
        v[0] += np.copysign(np.linalg.norm(col), col[0])
        a[j:, j:] -= np.outer(v, (2 / (v @ v)) * (v @ a[j:, j:]))
        vectors[j, j:] = v
    return vectors


def fit_householder(x, params, *, key, reflectors: int | None = None, method: str = "pca"):
    """Greedy fit: reflections that reproduce the PCA rotation of ``x``.

    With ``method="random"`` or ``"ica"`` the target rotation is instead a
    Haar-random or FastICA rotation (as in the ``rotation`` family), converted
    to reflections the same way.

    With ``V`` the principal axes (descending variance) and ``R`` reflectors,
    the fitted ``Q`` satisfies ``Q[:, :R] = V[:, :R] diag(s)`` with signs
    ``s_j = ±1``: the first ``R`` outputs of ``x Q`` are exactly the top-``R``
    principal-component scores (up to sign) and the remaining outputs span
    their orthonormal complement. The layer does not shift, so the scores are
    *uncentred* (``x V``, not ``(x - mean) V``); a preceding ``standardize``
    layer centres them. Degenerate data (constant or duplicated columns,
    ``n < dim``) gives zero-variance axes but never NaN.

    An orthogonal map preserves the standard-normal log-likelihood, so this
    greedy step never lowers it. On several devices the covariance is still
    computed on the host, and summed across processes under ``jax.distributed``
    (see :func:`.rotation.principal_axes`).

    Args:
      x: Data of shape ``(n, dim)``.
      params: The layer's current params ``{"~": {"vectors": (R, dim)}}``.
      key: PRNG key (used by ``method="random"`` and ``"ica"``).
      reflectors: Unused; ``R`` is read from the params' shape.
      method: ``"pca"`` (default), ``"random"`` or ``"ica"``.

    Returns:
      New params with the same structure and dtype.

    Raises:
      DataError: If ``x`` is not finite data of shape ``(n >= 1, dim)``.
    """
    del reflectors
    old = params["~"]["vectors"]
    count, dim = old.shape
    axes = rotation_matrix(x, dim, key=key, method=method, mesh=gaussplug.fit_mesh())
    with single_threaded_blas():
        vectors = householder_vectors(axes[:, :count])
    return {"~": {"vectors": jnp.asarray(vectors, dtype=old.dtype)}}


def _validate(dim: int, options: Mapping[str, Any]) -> None:
    """Checks the option values of a householder layer."""
    if options["method"] not in METHODS:
        raise ValueError(f"householder option 'method' must be one of {METHODS}; got {options['method']!r}.")
    count = options["reflectors"]
    if count is None:
        return
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= dim:
        raise ValueError(
            f"householder option 'reflectors' must be None or an int in [1, dim={dim}] "
            f"(any orthogonal matrix is a product of at most dim reflections); got {count!r}."
        )


FAMILY = gaussplug.Family(
    name="householder",
    make_bijector=make_householder,
    fit=fit_householder,
    options={"reflectors": None, "method": "pca"},
    doc=(
        "Trainable orthogonal map y = x H_1...H_R from R Householder reflections (log-det 0); "
        "the greedy fit reproduces the PCA rotation of the arriving data up to signs."
    ),
    validate=_validate,
)


@gaussplug.hookimpl
def gaussplug_register_families(register):
    """Registers the ``householder`` family."""
    register(FAMILY)
