"""Benchmark tasks: train / validation / test splits in a model space, and how to report NLL.

Every model sees the same :class:`Task`: float32 ``train`` / ``val`` / ``test`` arrays in
the *model space* (standardised with the training mean and std, after any fixed
pre-transform). A model returns per-point NLLs there; :meth:`Task.report` turns their
mean into the reported unit, adding the exact log-Jacobian of the pre-transform
(standardisation, logit, dequantisation scale) so that every model is scored on the
same density.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.suite_data
    import known_densities as kd
except ImportError:  # pragma: no cover
    from benchmarks import known_densities as kd

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = (
    ROOT.parent / "shared" / "data" / "galaxy_100k_7d.npy",
    ROOT.parent / "shared" / "data" / "mnist_5k_uint8.npy",
)
#: The logit transform's boundary shrink for image data: y = logit(ALPHA + (1 - 2 ALPHA) x).
ALPHA = 1e-6


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark data set, split and transformed.

    Attributes:
      name: Short name (``sources-8``, ``galaxy_100k_7d``, ...).
      kind: ``"known"`` (exact oracle) or ``"real"``.
      train, val, test: float32 arrays ``(n, dim)`` in the model space.
      offset: Added to a mean model-space NLL per sample (nats) to get the NLL per
        sample in the reported space (the mean over the test points of minus the
        log-Jacobian from the reported space to the model space).
      unit: ``"nats/dim"`` or ``"bits/dim"``.
      oracle_nll: Exact mean test NLL in the reported unit (known densities), else None.
      description: What the data is and how it was transformed.
    """

    name: str
    kind: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    offset: float
    unit: str
    oracle_nll: float | None
    description: str

    @property
    def dim(self) -> int:
        """Data dimension."""
        return int(self.train.shape[1])

    def report(self, mean_nll: float) -> float:
        """Mean model-space NLL per sample (nats) -> the reported unit (per dimension)."""
        per_sample = mean_nll + self.offset
        return per_sample / (self.dim * (math.log(2) if self.unit == "bits/dim" else 1.0))


def _standardise(train, *others):
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    out = [((a - mu) / sd).astype(np.float32) for a in (train, *others)]
    return out, float(np.sum(np.log(sd)))


def known_task(name: str, dim: int, *, n_train: int, n_val: int, n_test: int, seed: int = 0) -> Task:
    """A known density: draws of independent seeds, standardised; oracle = exact test NLL."""
    dens = kd.make(name, dim, seed=seed)
    tr, va, te = (dens.sample(n, seed=1000 * seed + k) for k, n in enumerate((n_train, n_val, n_test), 1))
    (tr_s, va_s, te_s), log_sd = _standardise(tr, va, te)
    oracle = -float(np.mean(dens.log_prob(te))) / dim
    desc = f"{dens.description}; n = {n_train} / {n_val} / {n_test}"
    return Task(f"{name}-{dim}", "known", tr_s, va_s, te_s, log_sd, "nats/dim", oracle, desc)


def _split(n: int, n_val: int, n_test: int, seed: int):
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


def tabular_task(path: pathlib.Path, *, seed: int = 0, max_rows: int | None = None) -> Task:
    """Real-valued data (``.npy``): 80 / 10 / 10 split, standardised; NLL in the standardised space."""
    x = np.asarray(np.load(path), np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise SystemExit(f"{path}: expected a finite 2-D array; got shape {x.shape}.")
    if max_rows is not None and len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    n = len(x)
    itr, iva, ite = _split(n, n // 10, n // 10, seed)
    (tr, va, te), _ = _standardise(x[itr], x[iva], x[ite])
    desc = f"{path.name}: {n} x {x.shape[1]}, 80/10/10 split, standardised with the training mean/std"
    return Task(path.stem, "real", tr, va, te, 0.0, "nats/dim", None, desc)


def image_task(path: pathlib.Path, *, seed: int = 0, max_rows: int | None = None) -> Task:
    """uint8 images: dequantise, logit, standardise; bits/dim in [0, 256)^D pixel space.

    ``x = (v + u) / 256`` with ``u ~ U[0, 1)``, ``y = logit(a + (1 - 2a) x)`` with ``a = ALPHA``,
    ``z = (y - m) / s``. The reported NLL of the dequantised pixels ``v + u`` is
    ``-log p_z(z) + sum log s - sum log dy/dx + D log 256`` with
    ``dy/dx = (1 - 2a) / (p (1 - p))``, ``p = a + (1 - 2a) x``.
    """
    v = np.load(path)
    if v.ndim == 3:
        v = v.reshape(len(v), -1)
    if v.ndim != 2 or v.dtype != np.uint8:
        raise SystemExit(f"{path}: expected uint8 images (n, D) or (n, H, W); got {v.dtype} {v.shape}.")
    if max_rows is not None and len(v) > max_rows:
        v = v[np.random.default_rng(seed).choice(len(v), max_rows, replace=False)]
    n, dim = v.shape
    x = (v + np.random.default_rng(seed + 1).uniform(size=v.shape)) / 256.0
    p = ALPHA + (1 - 2 * ALPHA) * x
    y = np.log(p) - np.log1p(-p)
    itr, iva, ite = _split(n, n // 10, n // 5, seed)
    (tr, va, te), log_s = _standardise(y[itr], y[iva], y[ite])
    log_dydx = np.log(1 - 2 * ALPHA) - np.log(p[ite]) - np.log1p(-p[ite])
    offset = log_s - float(np.mean(np.sum(log_dydx, axis=1))) + dim * math.log(256)
    desc = (
        f"{path.name}: {n} x {dim} uint8, U[0,1) dequantised, logit (alpha = {ALPHA:g}), standardised; "
        "70/10/20 split; bits/dim of the dequantised pixels in [0, 256), Jacobians included"
    )
    return Task(path.stem, "real", tr, va, te, offset, "bits/dim", None, desc)


def digits_task(*, seed: int = 0) -> Task:
    """scikit-learn digits (1797 x 64): integer pixels + U[0,1), PEERS.md W3's 80/20 split.

    The test set is PEERS.md's (permutation seed 1, last 360 rows); 15 % of the training
    rows are held out for validation. NLL in the standardised space (x 64 for nats/sample).
    """
    from sklearn.datasets import load_digits

    x = load_digits().data + np.random.default_rng(0).uniform(size=(1797, 64))
    perm = np.random.default_rng(1).permutation(len(x))
    fit, te = perm[:1437], perm[1437:]
    cut = np.random.default_rng(seed).permutation(len(fit))
    va, tr = fit[cut[:216]], fit[cut[216:]]
    (tr_, va_, te_), _ = _standardise(x[tr], x[va], x[te])
    desc = "sklearn digits 1797 x 64, U[0,1) dequantised, 1221 / 216 / 360 (test = PEERS.md W3's), standardised"
    return Task("digits", "real", tr_, va_, te_, 0.0, "nats/dim", None, desc)


def load_real(path: pathlib.Path, *, max_rows: int | None = None) -> Task:
    """A user data file: uint8 arrays are images (bits/dim), anything else tabular (nats/dim)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    kind = np.load(path, mmap_mode="r").dtype
    return image_task(path, max_rows=max_rows) if kind == np.uint8 else tabular_task(path, max_rows=max_rows)
