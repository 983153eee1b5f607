"""Information-theoretic measures estimated through an RBIG fit (Laparra et al., 2011, 2020).

RBIG alternates orthogonal rotations with marginal Gaussianizations. A
marginal (per-dimension, invertible) map never changes the total correlation
``TC(x) = sum_d H(x_d) - H(x)``; a rotation keeps the joint entropy, so it
changes TC by its *information reduction* ``dI = sum_d H(before_d) - sum_d
H(after_d)``. Summing these reductions over a flow that ends in independent
marginals gives

* ``TC(x) = sum_b dI_b`` (+ the residual TC of the output, estimated by its
  Gaussian-copula TC, ``-0.5 log det corr`` of its normal scores),
* ``H(x) = sum_d H(x_d) - TC(x)`` (differential entropy, nats),
* ``MI(x, y) = TC([x, y]) - TC(x) - TC(y)``.

Marginal entropies come from the Vasicek-Ebrahimi m-spacing estimator (see
``gaussplug._estimators``), which is scale-equivariant, so its bias largely
cancels inside every ``dI``. The RBIG fits are :func:`gaussplug.fit_rbig`
with ``n_layers="auto"`` (blocks are added until ``patience`` consecutive ones
reduce non-Gaussianity by less than the noise level): PCA blocks, then random-rotation
blocks, from standardised columns and from rank-Gaussianized columns, keeping
the larger TC (see :func:`estimate`). Keywords of ``fit_rbig`` pass through.
Accuracy against closed forms is tabulated in ``docs/information.md``.

Example:
  >>> import numpy as np
  >>> from gaussplug import information
  >>> cov = np.array([[1.0, 0.8], [0.8, 1.0]])
  >>> x = np.random.default_rng(0).multivariate_normal([0, 0], cov, size=3000)
  >>> round(information.total_correlation(x), 1)   # -0.5 log(1 - 0.64) = 0.51
  0.5
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from gaussplug._errors import DataError, DataWarning
from gaussplug._estimators import gaussian_copula_tc, marginal_entropy, normal_scores
from gaussplug._keys import SEED_LIMIT, as_seed
from gaussplug._registry import _warn

if TYPE_CHECKING:
    import jax

__all__ = [
    "InformationEstimate",
    "entropy",
    "estimate",
    "gaussian_entropy",
    "gaussian_total_correlation",
    "mutual_information",
    "total_correlation",
]

_DEFAULTS: dict[str, Any] = {"n_layers": "auto", "patience": 3, "max_layers": 30}
#: Keywords passed through to the RBIG fit (``fit_rbig`` / its automatic depth).
_RBIG_KEYWORDS = frozenset({"n_layers", "patience", "max_layers", "n_components", "tail_weight", "tol", "validation"})


@dataclasses.dataclass(frozen=True)
class InformationEstimate:
    """An RBIG estimate of the information content of a data set (all in nats).

    Attributes:
      total_correlation: ``sum(reductions) + residual_tc``.
      entropy: Differential entropy ``sum(marginal_entropies) - total_correlation``.
      marginal_entropies: ``H(x_d)`` per dimension, in the data's units.
      reductions: Information reduction of every rotation of the fitted flow.
      residual_tc: Gaussian-copula TC of the flow's output (what the fit left).
      n_layers: Number of RBIG blocks whose reductions were summed.
      start: How the columns were prepared (``"affine"`` or ``"ranks"``; ``"none"`` for one column,
        where there is nothing to rotate).
    """

    total_correlation: float
    entropy: float
    marginal_entropies: tuple[float, ...]
    reductions: tuple[float, ...]
    residual_tc: float
    n_layers: int
    start: str


def _as_2d(x, what: str) -> np.ndarray:
    """``x`` as finite float64 ``(n >= 10, dim >= 1)``; raises for constant columns, warns for tied ones."""
    from gaussplug._data import constant_columns_message, tied_columns_message

    if np.iscomplexobj(x):
        raise DataError(f"{what}: expected real data of shape (n >= 10, dim); got complex values.")
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what}: expected numeric data of shape (n >= 10, dim); could not convert: {err}") from err
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 10 or x.shape[1] < 1:
        raise DataError(f"{what}: expected data of shape (n >= 10, dim >= 1); got shape {x.shape}.")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(
            f"{what}: expected finite values; {int(bad.sum())} of {len(x)} rows contain NaN or inf "
            f"(first: row index {int(np.argmax(bad))})."
        )
    message = constant_columns_message(x, what)
    if message:
        raise DataError(message)
    message = tied_columns_message(x, what)
    if message:
        _warn(message, DataWarning)
    return x


#: Smallest eigenvalue of a correlation matrix taken as exactly singular (a correlation of 0.99999
#: has 1e-5; exact linear or monotone dependence in float64 gives about 1e-16).
_SINGULAR = 1e-12
#: Below this many rows per column the estimates carry a large upward bias (see docs/information.md).
_ROWS_PER_DIM = 100


def _check_not_degenerate(x: np.ndarray, what: str) -> None:
    """Raises :class:`DataError` where TC is infinite (H is -inf); warns where rows are few for the columns.

    Columns that are exactly linearly dependent (a duplicate, a sum of others) or monotone maps of one
    another (``x`` and ``exp(x)``) have no joint density: TC and MI are +inf, H is -inf, and RBIG would
    return a finite number that only grows with ``n``. So would ``n <= dim`` rows, which always lie on
    a hyperplane.
    """
    n, dim = x.shape
    if dim == 1:
        return
    if n <= dim:
        raise DataError(
            f"{what}: {n} rows for {dim} columns; the rows lie on a hyperplane, so there is no density to "
            f"estimate. Expected many more rows than columns (at least {_ROWS_PER_DIM} per column for an "
            "unbiased estimate)."
        )
    for kind, z in (("values", x / np.abs(x).max(axis=0)), ("ranks", normal_scores(x))):  # scaled: no overflow
        eigval, eigvec = np.linalg.eigh(np.corrcoef(z, rowvar=False))
        if eigval[0] <= _SINGULAR:
            v = np.abs(eigvec[:, 0])
            cols = ", ".join(str(int(i)) for i in np.flatnonzero(v > 1e-6 * v.max()))
            how = "linearly dependent" if kind == "values" else "monotone functions of one another"
            raise DataError(
                f"{what}: columns {cols} are exactly {how} (the correlation matrix of their {kind} is singular, "
                f"smallest eigenvalue {eigval[0]:.1e}), so the data have no joint density: TC and MI are +inf and H is "
                "-inf. Drop the redundant column(s)."
            )
    if n < _ROWS_PER_DIM * dim:
        _warn(
            f"{what}: {n} rows for {dim} columns (fewer than {_ROWS_PER_DIM} per column): RBIG's TC and MI are "
            "biased upward, and H downward, by sampling noise at this size (on independent data TC comes out "
            "well above 0); see docs/information.md, 'Sample size'.",
            DataWarning,
        )


def _prepare(x, how: str, key: int) -> np.ndarray:
    if how == "ranks":
        return normal_scores(x, seed=key)
    x = x / np.abs(x).max(axis=0)  # first, so the variance cannot overflow (no column is constant)
    return (x - x.mean(axis=0)) / x.std(axis=0)


def _phase(z, rotation, key, rbig_kwargs):
    """One RBIG fit on ``z``: its information reductions, the data it leaves, and whether it hit its cap.

    A phase whose blocks all gain less than the stopping rule's noise level adds nothing: its
    reductions are noise, and summing even one of them biases TC upward (``fit_rbig``'s depth rule
    keeps at least one block; an estimate need not).
    """
    from gaussplug._data import as_data
    from gaussplug._depth import fit_rbig_auto
    from gaussplug._inspect import pushforward
    from gaussplug._warm import WarmStartWarning, fit_rbig

    kwargs = {**_DEFAULTS, **rbig_kwargs, "rotation": rotation, "key": key}
    z = as_data(z, z.shape[1], min_rows=2)
    if kwargs.pop("n_layers") == "auto":
        with warnings.catch_warnings():  # a phase at its cap hands on to the next phase; the last one is reported
            warnings.filterwarnings("ignore", "n_layers='auto': the depth rule did not stop", WarmStartWarning)
            flow, out = fit_rbig_auto(z, **kwargs, return_data=True)
        sel = flow.metadata["depth_selection"]
        gains = sel["non_gaussianity_reduction"] if sel["criterion"] == "information_reduction" else None
        if gains is not None and max(gains) < sel["tol"]:
            return [], np.asarray(z, np.float64), False
        return list(sel["tc_reduction"][: sel["chosen"]]), np.asarray(out, np.float64), sel["stopped"] == "max_layers"
    kwargs.pop("patience"), kwargs.pop("max_layers")
    flow = fit_rbig(z, n_layers=rbig_kwargs["n_layers"], **kwargs)
    stages = np.asarray(pushforward(flow, z).data, np.float64)
    h = [float(np.sum(marginal_entropy(s))) for s in stages]
    rotations = [i for i, lr in enumerate(flow.runtime.layers) if lr.family.name in ("householder", "rotation")]
    return [h[i] - h[i + 1] for i in rotations], stages[-1], False


def estimate(
    x,
    *,
    rotation: str | tuple[str, ...] = ("pca", "random"),
    start: str = "both",
    key: int | jax.Array = 0,
    **rbig_kwargs,
) -> InformationEstimate:
    """Fit RBIG to ``x`` and return its TC, entropy and the per-layer information reductions.

    TC is invariant to invertible maps of single columns, so RBIG may start
    from any marginally transformed copy of ``x``:

    * ``start="affine"``: standardised columns. Rotations then act on the
      data's own linear structure (PCA finds near-degenerate directions at
      once), but very heavy tails (e.g. log-normal marginals) derail the
      estimate.
    * ``start="ranks"``: random normal scores (RBIG's first marginal
      Gaussianization done by ranks). Immune to heavy tails, but it bends
      linear structure, which RBIG then needs many blocks to undo.
    * ``start="both"`` (default): run both and keep the larger TC. An RBIG
      run that has not found some dependence reports too little TC (the
      reductions it missed), so the larger value is the better one.

    From each start, one RBIG fit runs per entry of ``rotation``, each
    continuing from the data the previous one left: by default PCA blocks
    until they stall (they remove linear dependence at once, then find
    nothing new), then random-rotation blocks, which keep finding the
    dependence PCA cannot see. Each fit stops by RBIG's rule (``patience``
    blocks whose reduction is below the noise level).

    Args:
      x: Data, shape ``(n, dim)`` (or ``(n,)`` for one dimension).
      rotation: A rotation method of :func:`gaussplug.fit_rbig` or a sequence
        of them (one fit each).
      start: ``"both"``, ``"affine"`` or ``"ranks"``.
      key: Int seed in ``[0, 2**32)`` or a ``jax.random`` key (turned into an
        int seed with ``jax.random.bits``).
      **rbig_kwargs: Passed to :func:`gaussplug.fit_rbig` (defaults:
        ``n_layers="auto"``, ``patience=3``, ``max_layers=30``).

    Returns:
      An :class:`InformationEstimate`.

    Raises:
      DataError: ``x`` is not finite real ``(n >= 10, dim)`` data, or has a
        constant column, exactly (linearly or monotonically) dependent columns,
        or no more rows than columns: TC is then infinite. Fewer than 100 rows
        per column warn (:class:`gaussplug.DataWarning`): the estimate is biased.
      TypeError: A keyword that the RBIG fit does not take, or a ``key`` that is
        neither an int seed nor a ``jax.random`` key.
      ValueError: A bad ``rotation`` or ``start``, an int seed outside
        ``[0, 2**32)``, or ``tol``,
        ``validation``, ``max_layers`` or ``patience`` with an integer
        ``n_layers`` (they choose the depth of each fit).

    Example:
      >>> import numpy as np
      >>> from gaussplug import information
      >>> s = np.random.default_rng(0).uniform(size=(3000, 2))
      >>> est = information.estimate(s * [1.0, 2.0])   # H = log(1 * 2) = 0.693
      >>> round(est.entropy, 1), bool(abs(est.total_correlation) < 0.05)   # independent columns: TC = 0
      (0.7, True)
    """
    return _estimate(x, rotation=rotation, start=start, key=key, checked=False, **rbig_kwargs)


def _estimate(x, *, rotation, start, key, checked: bool, **rbig_kwargs) -> InformationEstimate:
    if start not in ("both", "affine", "ranks"):
        raise ValueError(f"start: expected 'both', 'affine' or 'ranks'; got {start!r}.")
    unknown = sorted(set(rbig_kwargs) - _RBIG_KEYWORDS)
    if unknown:
        raise TypeError(f"unexpected keyword(s) {', '.join(map(repr, unknown))}; the RBIG fit accepts "
                        f"{', '.join(sorted(_RBIG_KEYWORDS))}.")  # fmt: skip
    methods = _rotations(rotation)
    fixed = rbig_kwargs.get("n_layers", "auto") != "auto"
    depth_only = [k for k in ("tol", "validation", "max_layers", "patience") if fixed and k in rbig_kwargs]
    if depth_only:
        verb = "applies" if len(depth_only) == 1 else "apply"
        raise ValueError(f"information: {', '.join(depth_only)} {verb} only with n_layers='auto' (they choose each "
                         f"RBIG fit's depth); got n_layers={rbig_kwargs['n_layers']!r}.")
    key = as_seed(key)
    if not checked:
        x = _as_2d(x, "x")
        _check_not_degenerate(x, "x")
    h_marg = marginal_entropy(x)
    h_total = float(np.sum(h_marg))
    if x.shape[1] == 1:
        return InformationEstimate(0.0, h_total, (h_total,), (), 0.0, 0, "none")
    best, capped = None, False
    for how in ("affine", "ranks") if start == "both" else (start,):
        z = _prepare(x, how, key)
        reductions: list[float] = []
        for i, method in enumerate(methods):
            found, z, at_cap = _phase(z, method, (key + i) % SEED_LIMIT, rbig_kwargs)  # seeds stay in range
            reductions += found
        residual = gaussian_copula_tc(z)
        tc = float(sum(reductions) + residual)
        if best is None or tc > best.total_correlation:
            best = InformationEstimate(
                tc, h_total - tc, tuple(map(float, h_marg)), tuple(reductions), residual, len(reductions), how
            )
            capped = at_cap
    if capped:
        from gaussplug._warm import WarmStartWarning

        cap = rbig_kwargs.get("max_layers", _DEFAULTS["max_layers"])
        _warn(
            f"information: the last RBIG phase ({methods[-1]!r} rotations, from the {best.start!r} start) stopped at "
            f"max_layers={cap} while its blocks still gained more than the noise level, so TC may be "
            "under-estimated (H over-estimated) by what it did not reach; pass a larger max_layers.",
            WarmStartWarning,
        )
    return best


def _rotations(rotation) -> tuple[str, ...]:
    """``rotation`` as a non-empty tuple of rotation methods, or a ValueError naming what was given."""
    from gaussplug.specs import ROTATIONS

    methods = (rotation,) if isinstance(rotation, str) else rotation
    try:
        methods = tuple(methods)
    except TypeError:
        methods = ()
    if not methods or not all(isinstance(m, str) and m in ROTATIONS for m in methods):
        raise ValueError(f"rotation: expected one of {ROTATIONS} or a non-empty sequence of them (one RBIG fit each); "
                         f"got {rotation!r}.")
    return methods


def _covariance(cov) -> np.ndarray:
    """``cov`` as a float64 covariance matrix: square, symmetric and positive definite, else a ValueError."""
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov: expected a square (d, d) covariance matrix; got shape {cov.shape}.")
    if not np.all(np.isfinite(cov)):
        raise ValueError("cov: expected finite values; got NaN or inf.")
    if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * np.abs(cov).max(initial=0.0)):
        raise ValueError("cov: expected a symmetric matrix; got one with cov[i, j] != cov[j, i].")
    smallest = float(np.linalg.eigvalsh(cov).min())
    if smallest <= 0:
        raise ValueError(f"cov: expected a positive definite matrix; its smallest eigenvalue is {smallest:.4g}, so "
                         "it is not the covariance of a (non-degenerate) Gaussian.")
    return cov


def total_correlation(x, **rbig_kwargs) -> float:
    """Total correlation ``sum_d H(x_d) - H(x)`` (nats) by RBIG information reduction.

    Args:
      x: Data, shape ``(n, dim)``.
      **rbig_kwargs: :func:`estimate`'s options: ``rotation``, ``start``,
        ``key``, and those of the RBIG fits (``n_layers``, ``n_components``, ...).

    Returns:
      The estimate (``0.0`` for one dimension).

    Example:
      >>> import numpy as np
      >>> from gaussplug import information
      >>> x = np.random.default_rng(1).standard_normal((2000, 3))
      >>> abs(information.total_correlation(x)) < 0.05
      True
    """
    return estimate(x, **rbig_kwargs).total_correlation


def entropy(x, **rbig_kwargs) -> float:
    """Differential entropy ``H(x)`` (nats): marginal entropies minus the RBIG total correlation.

    Args:
      x: Data, shape ``(n, dim)`` or ``(n,)``.
      **rbig_kwargs: :func:`estimate`'s options: ``rotation``, ``start``,
        ``key``, and those of the RBIG fits (``n_layers``, ``n_components``, ...).

    Returns:
      The estimate.

    Example:
      >>> import numpy as np
      >>> from gaussplug import information
      >>> x = np.random.default_rng(2).standard_normal((4000, 2)) @ np.array([[2.0, 0.0], [1.0, 1.0]])
      >>> truth = np.log(2 * np.pi * np.e) + np.log(2.0)   # H(N(0, I)) + log|det A|
      >>> bool(abs(information.entropy(x) - truth) < 0.05)
      True
    """
    return estimate(x, **rbig_kwargs).entropy


def mutual_information(x, y, **rbig_kwargs) -> float:
    """Mutual information ``I(x; y) = TC([x, y]) - TC(x) - TC(y)`` (nats).

    Args:
      x: Data, shape ``(n, dx)`` or ``(n,)``.
      y: Data, shape ``(n, dy)`` or ``(n,)``, rows paired with ``x``.
      **rbig_kwargs: :func:`estimate`'s options: ``rotation``, ``start``,
        ``key``, and those of the RBIG fits (``n_layers``, ``n_components``, ...).

    Returns:
      The estimate.

    Sampling noise can make the estimate slightly negative when ``x`` and ``y``
    are (nearly) independent; it is not clamped at 0, which would bias averages
    of estimates upward.

    Raises:
      DataError: ``x`` and ``y`` have different numbers of rows, or columns of
        ``[x, y]`` are exactly dependent (MI is infinite).

    Example:
      >>> import numpy as np
      >>> from gaussplug import information
      >>> rng = np.random.default_rng(3)
      >>> x = rng.standard_normal(4000)
      >>> y = 0.6 * x + 0.8 * rng.standard_normal(4000)    # MI = -0.5 log(1 - 0.36) = 0.223
      >>> round(information.mutual_information(x, y), 1)
      0.2
    """
    if "checked" in rbig_kwargs:
        raise TypeError("mutual_information: unexpected keyword 'checked' (the data are always checked).")
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"mutual_information: x has {x.shape[0]} rows but y has {y.shape[0]}; pair them row by row.")
    xy = np.concatenate([x, y], axis=1)
    _check_not_degenerate(xy, f"[x, y] (x's {x.shape[1]} column(s) first)")
    options = {"rotation": ("pca", "random"), "start": "both", "key": 0, **rbig_kwargs, "checked": True}
    tc_xy = _estimate(xy, **options).total_correlation
    tc_x = _estimate(x, **options).total_correlation if x.shape[1] > 1 else 0.0
    tc_y = _estimate(y, **options).total_correlation if y.shape[1] > 1 else 0.0
    return float(tc_xy - tc_x - tc_y)


def gaussian_total_correlation(cov) -> float:
    """Closed form for a Gaussian: ``-0.5 log det corr(cov)`` (for checks and benchmarks).

    Raises:
      ValueError: ``cov`` is not a finite, square, symmetric, positive definite matrix.

    Example:
      >>> round(gaussian_total_correlation([[1.0, 0.8], [0.8, 1.0]]), 4)
      0.5108
    """
    cov = _covariance(cov)
    sd = np.sqrt(np.diag(cov))
    return float(-0.5 * np.linalg.slogdet(cov / np.outer(sd, sd))[1])


def gaussian_entropy(cov) -> float:
    """Closed form for a Gaussian: ``0.5 log det(2 pi e cov)``.

    Raises:
      ValueError: ``cov`` is not a finite, square, symmetric, positive definite matrix.

    Example:
      >>> round(gaussian_entropy([[1.0]]), 4)
      1.4189
    """
    cov = _covariance(cov)
    return float(0.5 * (cov.shape[0] * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1]))
