"""The peers, each under the same wall-clock budget as gaussplug's models.

- full-covariance Gaussian (the floor);
- scikit-learn GaussianMixture, full covariance, K chosen on the validation set;
- the per-dimension scikit-learn RBIG recipe of PEERS.md (PCA rotation + per-dimension
  GaussianMixture(8) marginal Gaussianization, CDF clipped), depth chosen on validation:
  the speed reference;
- flowjax coupling-RQS and MAF-RQS through ``fit_to_data`` (its defaults: Adam 5e-4,
  batch 100, patience 5; RQS with 8 knots on [-4, 4]).

A peer whose package is missing is skipped with a note. A "budget" means: no new fit,
layer or round is started once the last one's duration says it would end past it.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
from scipy import special

try:
    from suite_ours import Fit
except ImportError:  # pragma: no cover
    from benchmarks.suite_ours import Fit

LOG_2PI = math.log(2 * math.pi)
GMM_KS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
RBIG_COMPONENTS, RBIG_MAX_LAYERS, RBIG_PATIENCE, CDF_CLIP = 8, 100, 3, 1e-7


def gaussian(task, budget: float) -> Fit:
    """Maximum-likelihood full-covariance Gaussian (ridge 1e-6 on the diagonal)."""
    del budget
    start = time.perf_counter()
    x = task.train.astype(np.float64)
    mu = x.mean(0)
    chol = np.linalg.cholesky(np.cov(x.T, bias=True).reshape(task.dim, task.dim) + 1e-6 * np.eye(task.dim))
    seconds = time.perf_counter() - start
    z = np.linalg.solve(chol, (task.test - mu).T).T
    nll = 0.5 * np.sum(z**2, 1) + np.sum(np.log(np.diag(chol))) + 0.5 * task.dim * LOG_2PI
    return Fit(nll, seconds, "closed form")


def gmm(task, budget: float) -> Fit:
    """GaussianMixture(K, full) for K on a grid; best validation score; stops after 2 worse K in a row."""
    from sklearn.mixture import GaussianMixture

    start = time.perf_counter()
    best, best_val, worse, last, why = None, -np.inf, 0, 0.0, ""
    for k in GMM_KS:
        elapsed = time.perf_counter() - start
        if k > len(task.train) // 10 or worse >= 2:
            break
        if best is not None and elapsed + last * 1.5 > budget:
            why = f" (budget: K = {k} not tried)"  # the validation score may still have been rising
            break
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GaussianMixture(k, covariance_type="full", random_state=0).fit(task.train)
        last = time.perf_counter() - t0
        val = model.score(task.val)
        if val > best_val:
            best, best_val, worse = model, val, 0
        else:
            worse += 1
    seconds = time.perf_counter() - start
    return Fit(-best.score_samples(task.test), seconds, f"K = {best.n_components}{why}")


# ---- the per-dimension scikit-learn RBIG recipe ------------------------------------------------


def _mixture_cdf_logpdf(x, w, mu, sd):
    """Per column: mixture CDF and log-density. ``x`` (n, d); ``w, mu, sd`` (d, K)."""
    z = (x[:, :, None] - mu) / sd
    cdf = np.sum(w * special.ndtr(z), axis=2)
    logpdf = special.logsumexp(-0.5 * z**2 - np.log(sd) - 0.5 * LOG_2PI, b=w, axis=2)
    return cdf, logpdf


def _rbig_layer(x, rot, w, mu, sd):
    """One layer forward: rotate, mixture CDF, clip, normal quantile; ``(y, log_det)``."""
    r = x @ rot
    cdf, logpdf = _mixture_cdf_logpdf(r, w, mu, sd)
    y = special.ndtri(np.clip(cdf, CDF_CLIP, 1 - CDF_CLIP))
    return y, np.sum(logpdf + 0.5 * y**2 + 0.5 * LOG_2PI, axis=1)


def _fit_marginals(r):
    from sklearn.mixture import GaussianMixture

    w, mu, sd = (np.empty((r.shape[1], RBIG_COMPONENTS)) for _ in range(3))
    for j in range(r.shape[1]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = GaussianMixture(RBIG_COMPONENTS, random_state=0).fit(r[:, j : j + 1])
        w[j], mu[j], sd[j] = g.weights_, g.means_[:, 0], np.sqrt(g.covariances_[:, 0, 0])
    return w, mu, sd


def _normal_nll(y, log_det):
    return 0.5 * np.sum(y**2, 1) + 0.5 * y.shape[1] * LOG_2PI - log_det


def sklearn_rbig(task, budget: float) -> Fit:
    """PCA + per-dimension GaussianMixture(8) layers, added until validation stops improving."""
    from sklearn.decomposition import PCA

    start = time.perf_counter()
    x, v, t = (a.astype(np.float64) for a in (task.train, task.val, task.test))
    ld_v, ld_t = np.zeros(len(v)), np.zeros(len(t))
    best_val, best_layers, layers, last = _normal_nll(v, ld_v).mean(), 0, [], 0.0
    while len(layers) < RBIG_MAX_LAYERS and len(layers) - best_layers < RBIG_PATIENCE:
        if layers and time.perf_counter() - start + last > budget:
            break
        t0 = time.perf_counter()
        rot = PCA().fit(x).components_.T
        params = _fit_marginals(x @ rot)
        x, _ = _rbig_layer(x, rot, *params)
        v, dv = _rbig_layer(v, rot, *params)
        ld_v = ld_v + dv
        layers.append((rot, params))
        val = _normal_nll(v, ld_v).mean()
        if np.isfinite(val) and val < best_val:
            best_val, best_layers = val, len(layers)
        last = time.perf_counter() - t0
    seconds = time.perf_counter() - start
    for rot, params in layers[:best_layers]:
        t, dt = _rbig_layer(t, rot, *params)
        ld_t = ld_t + dt
    return Fit(_normal_nll(t, ld_t), seconds, f"{best_layers} of {len(layers)} layers (validation)")


# ---- flowjax --------------------------------------------------------------------------------------


#: The optax optimiser and loss shared by every flowjax fit (a fresh loss object per fit_to_data
#: call would make it recompile its validation loss every call: about 20 s each on this machine).
_FLOWJAX: dict = {}


def _flowjax_fit(task, budget: float, make) -> Fit | str:
    try:
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import optax
        from flowjax.distributions import Normal
        from flowjax.train import fit_to_data
        from flowjax.train.losses import MaximumLikelihoodLoss
    except ImportError as err:
        return f"skipped: flowjax not installed ({err.name}); `pip install -e '.[bench]'`"
    start = time.perf_counter()
    data = np.concatenate([task.train, task.val])
    val_prop = len(task.val) / len(data)
    dist = make(jax.random.key(0), Normal(jnp.zeros(task.dim)))
    if not _FLOWJAX:  # one optimiser and one loss object for every call: fit_to_data's jitted
        _FLOWJAX.update(optimizer=optax.adam(5e-4), loss_fn=MaximumLikelihoodLoss())  # functions are reused
    key = jax.random.key(1)  # the same key in every call: the same train/validation split
    kw = dict(**_FLOWJAX, batch_size=100, val_prop=val_prop, show_progress=False)
    # Call 0 compiles and trains one epoch; call 1 times one epoch without compilation; call 2
    # fills the rest of the budget (fit_to_data's patience may end it sooner). Each call returns
    # its best-validated epoch; the best over the calls is kept (same split, same key).
    epochs, epoch_s, kept = 0, None, (np.inf, dist)
    for call in range(3):
        elapsed = time.perf_counter() - start
        n = 1 if call < 2 else int((budget - elapsed) / epoch_s)
        if (call == 1 and elapsed > 0.9 * budget) or (call == 2 and n < 1):
            break
        t0 = time.perf_counter()
        dist, losses = fit_to_data(key, kept[1], data, max_epochs=n, max_patience=5, **kw)
        epoch_s = (time.perf_counter() - t0) / len(losses["val"])
        epochs += len(losses["val"])
        if min(losses["val"]) < kept[0]:
            kept = (min(losses["val"]), dist)
    dist = kept[1]
    seconds = time.perf_counter() - start
    log_prob = eqx.filter_jit(lambda d, x: d.log_prob(x))
    nll = -np.concatenate([np.asarray(log_prob(dist, jnp.asarray(task.test[i : i + 2048])), np.float64)
                           for i in range(0, len(task.test), 2048)])  # fmt: skip
    return Fit(nll, seconds, f"{epochs} epochs of {len(data) - round(val_prop * len(data))} rows")


def flowjax_coupling(task, budget: float) -> Fit | str:
    """flowjax ``coupling_flow`` with an RQS transformer (8 knots, interval 4); 8 layers, width 50."""

    def make(key, base):
        from flowjax.bijections import RationalQuadraticSpline
        from flowjax.flows import coupling_flow

        return coupling_flow(key, base_dist=base, transformer=RationalQuadraticSpline(knots=8, interval=4))

    return _flowjax_fit(task, budget, make)


def flowjax_maf(task, budget: float) -> Fit | str:
    """flowjax ``masked_autoregressive_flow`` with an RQS transformer (8 knots, interval 4)."""

    def make(key, base):
        from flowjax.bijections import RationalQuadraticSpline
        from flowjax.flows import masked_autoregressive_flow

        return masked_autoregressive_flow(
            key, base_dist=base, transformer=RationalQuadraticSpline(knots=8, interval=4)
        )

    return _flowjax_fit(task, budget, make)


MODELS = {
    "Gaussian, full covariance (floor)": gaussian,
    "sklearn GMM, full, K by validation": gmm,
    "sklearn RBIG, per-dim GMM(8) (speed ref.)": sklearn_rbig,
    "flowjax coupling-RQS": flowjax_coupling,
    "flowjax MAF-RQS": flowjax_maf,
}
