"""The ``rotation`` family: a fixed orthogonal matrix fitted by PCA, ICA or at random.

Also home of the small NumPy helpers the linear families share
(:func:`as_fit_data`, :func:`principal_axes`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import gaussplug
from gaussplug import DataError
from gaussplug import _sharding as shd
from gaussplug._host import single_threaded_blas
from gaussplug.specs import ROTATIONS

__all__ = [
    "FAMILY",
    "METHODS",
    "RotationBijector",
    "as_fit_data",
    "checked_fit_data",
    "fit_rotation",
    "make_rotation",
    "principal_axes",
]

METHODS = ROTATIONS  # one list for the specs and both rotation families
_HIGHEST = jax.lax.Precision.HIGHEST
# Principal variances below this fraction of the largest are treated as zero
# (directions with no spread) when whitening for ICA.
_RANK_RTOL = 1e-10
_ICA_MAX_ITER = 1000


def as_fit_data(x, dim: int) -> np.ndarray:
    """Converts the data arriving at a layer to a checked float64 NumPy array.

    Args:
      x: NumPy or JAX array of shape ``(n, dim)``.
      dim: The layer's event size.

    Returns:
      ``x`` as a float64 array of shape ``(n, dim)``.

    Raises:
      DataError: If ``x`` has the wrong shape, no rows or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
        raise DataError(f"fit expected data of shape (n >= 1, {dim}); got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise DataError(f"fit expected finite data; got {int(np.sum(~np.isfinite(x)))} non-finite values.")
    return x


def checked_fit_data(x, dim: int):
    """Checks the data arriving at a layer like :func:`as_fit_data`, without a float64 copy.

    Floating arrays (NumPy or JAX) are passed through as they are, so a large
    warm start does not hold a float64 copy of its data; anything else goes
    through ``as_fit_data``.

    Raises:
      DataError: If ``x`` is not finite data of shape ``(n >= 1, dim)``.
    """
    if not (isinstance(x, (np.ndarray, jax.Array)) and jnp.issubdtype(x.dtype, jnp.floating)):
        return as_fit_data(x, dim)
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
        raise DataError(f"fit expected data of shape (n >= 1, {dim}); got shape {tuple(x.shape)}.")
    finite = np.isfinite(x) if isinstance(x, np.ndarray) else jnp.isfinite(x)
    if not bool(finite.all()):
        raise DataError(f"fit expected finite data; got {int((~finite).sum())} non-finite values.")
    return x


def _covariance(x, rows: int = 1 << 16) -> np.ndarray:
    """Float64 covariance of ``x`` (any float dtype) over row chunks: no full-size float64 or centred copy.

    Sums are taken about the first chunk's mean, so they do not cancel when the mean is large.
    """
    shift = np.asarray(x[:rows], np.float64).mean(axis=0)
    total, scatter = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, x.shape[0], rows):
        chunk = np.asarray(x[start : start + rows], np.float64) - shift
        total += chunk.sum(axis=0)
        scatter += chunk.T @ chunk
    mean = total / x.shape[0]
    return scatter / x.shape[0] - np.outer(mean, mean)


#: Outlier gate of :func:`principal_axes`: tail share trimmed per side, and the trimmed-to-full std ratio below
#: which a column counts as outlier-dominated. Up to ``_TRIM_SAMPLE`` evenly spaced rows estimate the bulk.
_TRIM, _OUTLIER_STD_RATIO, _TRIM_SAMPLE = 0.01, 0.1, 2048


def _bulk_rows(x, std: np.ndarray) -> np.ndarray | None:
    """The rows inside every column's 1 %-99 % quantile range, if far outliers dominate some column's std; else None.

    ``std`` is the columns' std over all rows. A few rows 1e7 sds out set the covariance, so the principal axes
    point at them instead of the bulk's directions. Ordinary (even heavy-tailed) data never trips the gate, and
    its axes are unchanged; nor do ranges that leave under half the rows (many columns), or too few rows to
    span the dimensions. The bulk's ranges and spread are estimated on a subsample (cheap); the outliers'
    weight in ``std`` is not, so a rare outlier the subsample misses still trips the gate.
    """
    step = max(1, x.shape[0] // _TRIM_SAMPLE)
    sample = np.asarray(x[::step], np.float64)
    # Outside rows (about 2 %) carrying 99 % of a column's variance must reach 7 sds out: else nothing to trim.
    centre = sample.mean(axis=0)
    reach = np.maximum(np.asarray(np.max(x, axis=0), np.float64) - centre, centre - np.asarray(np.min(x, axis=0)))
    if not np.any(reach > 7.0 * std):
        return None
    lo, hi = np.quantile(sample, [_TRIM, 1 - _TRIM], axis=0)
    inside = np.all((sample >= lo) & (sample <= hi), axis=1)
    if inside.mean() < 0.5 or inside.sum() <= 2 * x.shape[1]:  # many columns: the ranges leave too few rows
        return None
    trimmed = sample[inside].std(axis=0)
    if not np.any((trimmed > 0) & (trimmed < _OUTLIER_STD_RATIO * std)):
        return None
    keep = np.ones(x.shape[0], bool)
    for start in range(0, x.shape[0], 1 << 16):
        chunk = np.asarray(x[start : start + (1 << 16)], np.float64)
        keep[start : start + len(chunk)] = np.all((chunk >= lo) & (chunk <= hi), axis=1)
    return np.asarray(x)[keep]


def principal_axes(x: np.ndarray, mesh=None) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``x`` by descending variance (centred covariance).

    Each axis is signed so that its largest-magnitude entry is positive, which
    makes the result deterministic. Degenerate data (constant columns, fewer
    rows than columns, duplicated columns) gives zero variances and an
    arbitrary but orthonormal basis of their null space; never NaN.

    The covariance is computed on the host in float64 (``O(n dim^2)``, cheap
    next to a mixture EM), also on a multi-device ``mesh`` within one process,
    where the host holds every row. When ``mesh`` spans several processes
    (``jax.distributed``), ``x`` holds this process's rows and the row count,
    column sums and scatter matrix are added across processes, so every
    process gets the same axes. In one process, when a few far outliers
    dominate a column's std (its std without the rows outside the 1 %-99 %
    quantile ranges is under a tenth of it), the covariance is that of the
    rows inside every column's range: the axes of the bulk, not of the outliers.

    Args:
      x: Float array of shape ``(n, dim)``, ``n >= 1`` (any float dtype; the
        covariance is accumulated in float64 over row chunks).
      mesh: ``None`` or the warm start's mesh (``gaussplug.fit_mesh()``).

    Returns:
      ``(axes, variances)``: ``axes`` is ``(dim, dim)`` orthogonal with the
      axes as columns, ``variances`` the ``(dim,)`` descending eigenvalues of
      the covariance (clipped at zero).
    """
    if shd.spans_processes(mesh):
        x = np.asarray(x, np.float64)
        n = shd.agree(x.shape[0], "sum", mesh)
        centred = x - shd.host_sum(x.sum(axis=0), mesh) / n
        cov = shd.host_sum(centred.T @ centred, mesh) / n
    else:
        cov = _covariance(x)
        bulk = _bulk_rows(x, np.sqrt(np.clip(np.diag(cov), 0.0, None))) if x.shape[0] >= 100 else None
        cov = cov if bulk is None else _covariance(bulk)
    variances, axes = np.linalg.eigh(cov)
    variances, axes = np.clip(variances[::-1], 0.0, None), axes[:, ::-1]
    peak = axes[np.argmax(np.abs(axes), axis=0), np.arange(axes.shape[1])]
    return axes * np.where(peak < 0, -1.0, 1.0), variances


def _numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded by the bits of a JAX PRNG key (deterministic, no device work)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def _haar_orthogonal(key, dim: int) -> np.ndarray:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian, signs fixed by diag(R)."""
    q, r = np.linalg.qr(_numpy_rng(key).standard_normal((dim, dim)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def _nearest_orthogonal(m: np.ndarray) -> np.ndarray:
    """Polar factor of ``m``: the orthogonal matrix closest to it in Frobenius norm."""
    u, _, vt = np.linalg.svd(m)
    return u @ vt


def _ica_matrix(x: np.ndarray, key) -> np.ndarray:
    """PCA axes followed by the FastICA rotation found in PCA-whitened coordinates, if that exposes more.

    Falls back to the PCA axes when fewer than two directions have spread,
    FastICA does not converge (typical for data with no non-Gaussian
    direction left to find), or the ICA rotation leaves a larger sum of
    marginal entropies than the PCA axes (:func:`_exposes_more`).
    """
    # Imported here: scikit-learn is slow to import and only this method needs it.
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    axes, variances = principal_axes(x)
    rank = int(np.sum(variances > _RANK_RTOL * variances[0])) if variances[0] > 0 else 0
    if rank < 2:
        return axes
    white = (x - x.mean(axis=0)) @ axes[:, :rank] / np.sqrt(variances[:rank])
    seed = int(_numpy_rng(key).integers(np.iinfo(np.int32).max))
    ica = FastICA(whiten=False, max_iter=_ICA_MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            ica.fit(white)
        except ConvergenceWarning:
            return axes
    inner = np.eye(x.shape[1])
    # Sources are white @ components_.T; components_ is orthogonal up to
    # rounding, so take its polar factor to keep the layer exactly orthogonal.
    inner[:rank, :rank] = _nearest_orthogonal(ica.components_).T
    rotated = axes @ inner
    return rotated if _exposes_more(x, rotated, axes) else axes


def _exposes_more(x: np.ndarray, candidate: np.ndarray, axes: np.ndarray) -> bool:
    """Whether ``x @ candidate`` has a sum of marginal entropies no larger than ``x @ axes`` (the PCA scores).

    A rotation keeps the joint entropy, so the lower sum is the rotation exposing more total correlation
    to the next (marginal) layer: RBIG's information reduction. FastICA's rotation is found on the
    whitened data, while the layer rotates the unscaled scores; on data far from white (correlated
    columns of very different variances) that can undo most of what the PCA axes expose.
    """
    from gaussplug._estimators import marginal_entropy  # noqa: PLC0415 (only this method needs it)

    centred = x - x.mean(axis=0)
    return float(np.sum(marginal_entropy(centred @ candidate))) <= float(np.sum(marginal_entropy(centred @ axes)))


class RotationBijector(gaussplug.VectorBijector):
    r"""Linear map by a square matrix ``W``, orthogonal unless trainable.

    Maths (row vectors ``x`` of size ``dim``)::

        forward:  y = x W,          log|det J| = log|det W|
        inverse:  x = y W^{-1},     log|det J| = -log|det W|

    When ``orthogonal`` is true (the fixed, frozen case) ``W^{-1} = W^T`` and
    ``log|det W| = 0`` exactly. Otherwise fine-tuning may move ``W`` off the
    orthogonal group, so the log-determinant comes from ``slogdet`` and the
    inverse from a linear solve.

    Args:
      dim: Event size.
      matrix: ``(dim, dim)`` array ``W``.
      orthogonal: Whether ``W`` is known to stay orthogonal.
    """

    def __init__(self, dim: int, matrix, orthogonal: bool):
        super().__init__(dim)
        self.matrix = matrix
        self.orthogonal = bool(orthogonal)

    def _log_abs_det(self, batch_shape, dtype):
        """``log|det W|`` broadcast to the batch shape."""
        if self.orthogonal:
            return jnp.zeros(batch_shape, dtype)
        return jnp.broadcast_to(jnp.linalg.slogdet(self.matrix)[1].astype(dtype), batch_shape)

    def _forward_and_log_det(self, x):
        """``y = x W``."""
        y = jnp.matmul(x, self.matrix, precision=_HIGHEST)
        return y, self._log_abs_det(x.shape[:-1], y.dtype)

    def _inverse_and_log_det(self, y):
        """``x = y W^{-1}`` (``y W^T`` when orthogonal)."""
        if self.orthogonal:
            x = jnp.matmul(y, self.matrix.T, precision=_HIGHEST)
        else:
            flat = y.reshape(-1, self.dim).T
            x = jnp.linalg.solve(self.matrix.T, flat).T.reshape(y.shape)
        return x, -self._log_abs_det(y.shape[:-1], x.dtype)


def make_rotation(dim: int, method: str = "pca", trainable: bool = False) -> RotationBijector:
    """Creates the ``"~"/"matrix"`` parameter and returns the rotation bijector.

    Args:
      dim: Event size.
      method: Greedy-fit method; unused here.
      trainable: Whether fine-tuning may change the matrix.

    Returns:
      A :class:`RotationBijector`; the matrix is Haar-random at init.
    """
    del method
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    matrix = hk.get_parameter("matrix", (dim, dim), dtype, init=hk.initializers.Orthogonal())
    return RotationBijector(dim, matrix, orthogonal=not trainable)


def fit_rotation(x, params, *, key, method: str = "pca", trainable: bool = False):
    """Greedy fit of the rotation matrix to the data arriving at the layer.

    Methods:
      * ``"pca"``: columns are the principal axes of ``x`` by descending
        variance, so ``x W`` gives the (uncentred) principal-component scores.
      * ``"random"``: a Haar-random orthogonal matrix drawn from ``key``.
      * ``"ica"``: ``W = V U`` with ``V`` the PCA axes and ``U`` the orthogonal
        FastICA unmixing (``whiten=False``) found on the PCA-whitened data.
        ``W`` is orthogonal, so the layer rotates the *unscaled* PCA scores by
        ``U``: when the arriving data is already white this yields the ICA
        sources exactly; otherwise it is the orthogonal map closest in spirit,
        and it is kept only if its marginals' entropies sum to no more than
        the PCA scores' (m-spacing estimates; the lower sum exposes more total
        correlation to the next marginal layer). Falls back to ``"pca"`` then,
        and when FastICA does not converge or fewer than two directions have
        spread.

    An orthogonal map preserves the standard-normal log-likelihood, so this
    greedy step never lowers it; it only reorients the data for the next
    (elementwise) layer.

    In a warm start on several devices the PCA covariance is still computed on
    the host (see :func:`principal_axes`); under ``jax.distributed`` it is
    summed across processes. ``"ica"`` then fits each process's own rows, so
    processes may disagree: use ``"pca"`` or ``"random"`` there.

    Args:
      x: Data of shape ``(n, dim)``.
      params: The layer's current params ``{"~": {"matrix": (dim, dim)}}``.
      key: PRNG key (used by ``"random"`` and ``"ica"``).
      method: One of :data:`METHODS`.
      trainable: Unused by the fit.

    Returns:
      New params with the same structure and dtype.

    Raises:
      DataError: If ``x`` is not finite data of shape ``(n >= 1, dim)``.
      ValueError: If ``method`` is unknown.
    """
    del trainable
    old = params["~"]["matrix"]
    matrix = rotation_matrix(x, old.shape[0], key=key, method=method, mesh=gaussplug.fit_mesh())
    return {"~": {"matrix": jnp.asarray(matrix, dtype=old.dtype)}}


def rotation_matrix(x, dim: int, *, key, method: str = "pca", mesh=None) -> np.ndarray:
    """The ``(dim, dim)`` float64 orthogonal matrix that ``method`` fits to ``x``.

    Shared by the ``rotation`` and ``householder`` fits (see :func:`fit_rotation`
    for the methods). ``mesh`` (``gaussplug.fit_mesh()``) matters for ``"pca"``
    across processes only (see :func:`principal_axes`); ``"ica"`` always fits
    this process's rows.
    """
    if method not in METHODS:
        raise ValueError(f"rotation method must be one of {METHODS}; got {method!r}.")
    with single_threaded_blas():  # small host products: BLAS threads only contend with XLA's
        if method == "pca":
            return principal_axes(checked_fit_data(x, dim), mesh)[0]
        if method == "random":
            return _haar_orthogonal(key, dim)
        return _ica_matrix(as_fit_data(x, dim), key)


def _validate(dim: int, options: Mapping[str, Any]) -> None:
    """Checks the option values of a rotation layer."""
    del dim
    if options["method"] not in METHODS:
        raise ValueError(f"rotation option 'method' must be one of {METHODS}; got {options['method']!r}.")
    if not isinstance(options["trainable"], bool):
        raise ValueError(f"rotation option 'trainable' must be a bool; got {options['trainable']!r}.")


FAMILY = gaussplug.Family(
    name="rotation",
    make_bijector=make_rotation,
    fit=fit_rotation,
    options={"method": "pca", "trainable": False},
    doc=(
        "Orthogonal linear map y = x W (log-det 0), fitted greedily by PCA, ICA (on PCA-whitened "
        "data, composed with the PCA axes) or drawn Haar-random; frozen unless trainable=True."
    ),
    frozen=lambda options, module, name: not options["trainable"],
    validate=_validate,
)


@gaussplug.hookimpl
def gaussplug_register_families(register):
    """Registers the ``rotation`` family."""
    register(FAMILY)
