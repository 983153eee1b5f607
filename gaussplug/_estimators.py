"""Sample estimators of Gaussianity shared by inspection, depth selection and information measures.

All functions take NumPy-convertible data of shape ``(n, dim)`` (rows are
samples) and work in float64 NumPy; results are in nats.

* :func:`marginal_entropy` -- the m-spacing estimator of Vasicek (1976) with
  the boundary correction of Ebrahimi et al. (1994), ``m = round(sqrt(n)/2)``.
  On 2,000 samples its bias is below 0.015 nats for Gaussian, uniform,
  exponential, Student-t(4) and log-normal data (standard deviation about
  0.02); it is scale-equivariant (``H(a x) = H(x) + log|a|`` exactly), so its
  shape-dependent bias largely cancels in differences such as RBIG's
  information reduction.
* :func:`marginal_negentropy` -- ``J_d = 0.5 log(2 pi e var_d) - H(x_d)``.
* :func:`gaussian_copula_tc` -- ``-0.5 log det`` of the correlation matrix of
  the rank-Gaussianized data (normal scores): the total correlation of the
  Gaussian copula fitted to ``x``, a lower bound on the true total
  correlation that is exact for Gaussian copulas.
* :func:`ks_normal` -- Kolmogorov-Smirnov statistic of every marginal against N(0, 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "gaussian_copula_tc",
    "gaussian_kl",
    "information_reduction",
    "ks_normal",
    "marginal_entropy",
    "marginal_negentropy",
]

_LOG_2PI_E = math.log(2 * math.pi * math.e)
#: Fewest rows the estimators accept.
MIN_ROWS = 4
_MIN_SPACING = 1e-12  # spacings are floored at this fraction of the column's range (ties)


def _as_matrix(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < MIN_ROWS:
        raise ValueError(f"expected data of shape (n >= {MIN_ROWS}, dim); got shape {x.shape}.")
    return x


def marginal_entropy(x, *, m: int | None = None) -> np.ndarray:
    """Differential entropy (nats) of every column, by Vasicek-Ebrahimi m-spacings.

    ``H = mean_i log(n / (c_i m) * (x_(i+m) - x_(i-m)))`` over the order
    statistics, with indices clamped to ``[1, n]`` and ``c_i = 1 + (i-1)/m``
    within ``m`` of the ends, else 2. Tied values (zero spacings) are floored
    at ``1e-12`` of the column's range.

    Args:
      x: Data, shape ``(n, dim)`` or ``(n,)``.
      m: Spacing; default ``max(1, round(sqrt(n) / 2))``.

    Returns:
      Array of shape ``(dim,)``.

    Example:
      >>> import numpy as np
      >>> z = np.random.default_rng(0).standard_normal((4000, 1))
      >>> bool(abs(marginal_entropy(z)[0] - 0.5 * np.log(2 * np.pi * np.e)) < 0.02)
      True
    """
    x = np.sort(_as_matrix(x), axis=0)
    n = x.shape[0]
    m = max(1, int(round(math.sqrt(n) / 2))) if m is None else int(m)
    if not 1 <= m < n:
        raise ValueError(f"m: expected an integer in [1, n={n}); got {m}.")
    i = np.arange(n)
    spacing = x[np.minimum(i + m, n - 1)] - x[np.maximum(i - m, 0)]
    span = np.maximum(x[-1] - x[0], np.finfo(np.float64).tiny)
    spacing = np.maximum(spacing, _MIN_SPACING * span)
    c = np.where(i < m, 1 + i / m, np.where(i >= n - m, 1 + (n - 1 - i) / m, 2.0))
    return np.mean(np.log(spacing * (n / (c * m))[:, None]), axis=0)


def marginal_negentropy(x, *, entropy: np.ndarray | None = None) -> np.ndarray:
    """Negentropy of every column: ``0.5 log(2 pi e var_d) - H(x_d)`` (nats).

    Zero exactly for Gaussian marginals; the estimate scatters around zero by
    about ``0.5 / sqrt(n)`` there, so it can be slightly negative.

    Args:
      x: Data, shape ``(n, dim)``.
      entropy: Precomputed :func:`marginal_entropy` of ``x``.

    Returns:
      Array of shape ``(dim,)``.

    Example:
      >>> import numpy as np
      >>> u = np.random.default_rng(0).uniform(size=(4000, 1))
      >>> round(float(marginal_negentropy(u)[0]), 2)  # 0.5 log(2 pi e / 12) = 0.176
      0.18
    """
    x = _as_matrix(x)
    h = marginal_entropy(x) if entropy is None else np.asarray(entropy)
    var = np.maximum(x.var(axis=0), np.finfo(np.float64).tiny)
    return 0.5 * (_LOG_2PI_E + np.log(var)) - h


def gaussian_kl(x) -> np.ndarray:
    """``KL(N(mean_d, var_d) || N(0, 1))`` of every column: the second-order marginal mismatch.

    Together with the negentropy this is each marginal's KL divergence from
    N(0, 1): ``KL(p_d || N(0,1)) = J_d + 0.5 (mean_d^2 + var_d - 1 - log var_d)``.

    Example:
      >>> import numpy as np
      >>> float(gaussian_kl(np.array([[-1.0], [1.0], [-1.0], [1.0]]))[0])
      0.0
    """
    x = _as_matrix(x)
    mean, var = x.mean(axis=0), np.maximum(x.var(axis=0), np.finfo(np.float64).tiny)
    return 0.5 * (mean * mean + var - 1.0 - np.log(var))


def normal_scores(x, *, seed: int | None = None) -> np.ndarray:
    """Rank-Gaussianized columns (ties broken by order).

    Args:
      x: Data, shape ``(n, dim)``.
      seed: ``None`` for the van der Waerden scores ``Phi^{-1}(rank / (n + 1))``;
        an int for *random* normal scores: each column's ranks index the
        sorted values of its own i.i.d. N(0, 1) sample, so the result is a
        monotone map of every column onto an exact standard-normal sample
        (sample estimators then see the same noise as on Gaussian data).

    Returns:
      Array of shape ``(n, dim)``.
    """
    x = _as_matrix(x)
    n = x.shape[0]
    ranks = np.argsort(np.argsort(x, axis=0, kind="stable"), axis=0)
    if seed is None:
        return ndtri((ranks + 1) / (n + 1.0))
    g = np.sort(np.random.default_rng(seed).standard_normal(x.shape), axis=0)
    return np.take_along_axis(g, ranks, axis=0)


def gaussian_copula_tc(x) -> float:
    """Total correlation of the Gaussian copula of ``x``: ``-0.5 log det corr(normal scores)``.

    Invariant to monotone maps of each column; a lower bound on the true total
    correlation (equality for Gaussian copulas). For ``n`` independent samples
    the estimate is biased up by about ``dim (dim - 1) / (4 n)``.

    Example:
      >>> import numpy as np
      >>> z = np.random.default_rng(0).multivariate_normal([0, 0], [[1, .8], [.8, 1]], size=20000)
      >>> round(gaussian_copula_tc(np.exp(z)), 2)  # -0.5 log(1 - 0.8^2) = 0.511
      0.51
    """
    z = normal_scores(x)
    if z.shape[1] == 1:
        return 0.0
    corr = np.corrcoef(z, rowvar=False)
    sign, logdet = np.linalg.slogdet(corr)
    return float(-0.5 * logdet) if sign > 0 else math.inf


def ks_normal(x) -> np.ndarray:
    """Kolmogorov-Smirnov statistic ``sup |F_n - Phi|`` of every column against N(0, 1).

    Example:
      >>> import numpy as np
      >>> z = np.random.default_rng(0).standard_normal((5000, 2))
      >>> bool(ks_normal(z).max() < 0.03)
      True
    """
    x = np.sort(_as_matrix(x), axis=0)
    n = x.shape[0]
    cdf = ndtr(x)
    i = np.arange(1, n + 1)[:, None]
    return np.maximum(np.max(i / n - cdf, axis=0), np.max(cdf - (i - 1) / n, axis=0))


def information_reduction(before, after) -> float:
    """RBIG information reduction of an orthogonal rotation: ``sum_d H(before_d) - sum_d H(after_d)``.

    Since a rotation keeps the joint entropy, this is exactly the drop in total
    correlation ``TC(before) - TC(after)`` (Laparra et al., 2011), up to the
    error of the marginal entropy estimator.

    Args:
      before: Data entering a rotation, ``(n, dim)``.
      after: The same rows after the rotation.

    Returns:
      The reduction in nats (negative if the rotation added dependence).
    """
    return float(np.sum(marginal_entropy(before)) - np.sum(marginal_entropy(after)))
