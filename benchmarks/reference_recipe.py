"""The reference's diagonal-flow recipe (gauss_keras, PEERS.md), rerun on gaussplug's layers.

Experiment 2's held-out reference (1.192, worst point ~21) comes from gauss_keras's diagonal
flow. This module reruns that recipe as its documentation describes it, on the same data and
budget, so its figures can be set beside ours from one machine and one run:

* greedy init: per block, a PCA Householder rotation, then per dimension a scikit-learn
  ``GaussianMixture`` (diagonal, k-means start, ``reg_covar=1e-6``, seed
  ``block * 1000 + dim``) written straight into the layer's (logits, loc, log-scale);
* every mixture CDF clipped to ``[1e-6, 1 - 1e-6]`` before the normal quantile, with the
  log-det ``log f(x) - log phi(z_clipped)`` (not a bijection past the clip: far points are
  scored by the first layer's mixture tail, which is what bounds the worst point);
* Keras-style training: each epoch a fresh permutation in batches of 512 with a last, partial
  batch; Adam 5e-3 with Keras's ``epsilon=1e-7``; the epoch loss is the row-weighted mean.

Only the benchmark uses this; the library's layers are bijections and never clip.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from sklearn.mixture import GaussianMixture

import gaussplug

CLIP = 1e-6
BOUND = float(scipy.stats.norm.isf(CLIP))  # the normal quantile of 1 - CLIP, 4.753


def _gmm_params(col: np.ndarray, components: int, seed: int) -> tuple[np.ndarray, ...]:
    gmm = GaussianMixture(components, covariance_type="diag", random_state=seed, reg_covar=1e-6)
    gmm.fit(np.asarray(col, np.float64)[:, None])
    return np.log(np.maximum(gmm.weights_, 1e-20)), gmm.means_.ravel(), 0.5 * np.log(gmm.covariances_.ravel())


def reference_init(spec: dict, x: np.ndarray) -> gaussplug.Flow:
    """The reference's greedy init of a householder + mixture_cdf stack (see the module docstring)."""
    flow = gaussplug.build_flow(spec)
    y, block = jnp.asarray(x), -1
    for layer in flow.plan.layers:
        name, family = layer.name, layer.family
        if family == "householder":
            block += 1
            one = gaussplug.build_flow({"dim": flow.dim, "layers": [{"family": "householder",
                                                                     "reflectors": flow.dim, "method": "pca"}]})
            one = gaussplug.warm_start(one, np.asarray(y), progress=False)
            flow = flow.with_layer_params(name, one.params[one.layer_names[0]])
        elif family == "mixture_cdf":
            k = flow.params[name]["~"]["loc"].shape[-1]
            fits = [_gmm_params(np.asarray(y[:, d]), k, block * 1000 + d) for d in range(flow.dim)]
            logits, loc, log_scale = (jnp.asarray(np.stack(p), flow.dtype) for p in zip(*fits, strict=True))
            flow = flow.with_layer_params(name, {"~": {"logits": logits, "loc": loc, "log_scale": log_scale}})
        else:
            raise ValueError(f"reference_init: layer {name!r} is a {family!r}; the recipe has householder and "
                             "mixture_cdf layers only")  # fmt: skip
        y = _layer(flow, layer, flow.params[name], y, clip=True)[0]
    return flow


def _layer(flow, layer, params, x, clip: bool):
    y, log_det = flow.runtime.layer_forward(layer.name, params, x)
    if clip and layer.family == "mixture_cdf":
        yc = jnp.clip(y, -BOUND, BOUND)
        log_det = log_det + 0.5 * jnp.sum(yc * yc - y * y, axis=-1)  # log f(x) - log phi(yc)
        y = yc
    return y, log_det


def log_prob(flow, params, x, clip: bool = True):
    """Log-density of the recipe's clipped model (what the reference reports), or of the exact one."""
    total = jnp.zeros(x.shape[0], x.dtype)
    for layer in flow.plan.layers:
        x, log_det = _layer(flow, layer, params[layer.name], x, clip)
        total = total + log_det
    return total + jnp.sum(jax.scipy.stats.norm.logpdf(x), axis=-1)


def keras_train(flow, x, *, lr: float, epochs: int, batch: int = 512, key: int = 0, clip: bool = True):
    """Adam (Keras's epsilon) over per-epoch permutations with a last partial batch.

    Returns ``(flow, epoch_losses)``; with ``clip=False`` the exact bijective model is trained.
    """
    opt = optax.adam(lr, eps=1e-7)
    mask = flow.trainable_mask()

    @jax.jit
    def step(params, state, xb):
        loss, grads = jax.value_and_grad(lambda p: -jnp.mean(log_prob(flow, p, xb, clip)))(params)
        grads = jax.tree.map(lambda g, m: g * m, grads, mask)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    params, rng, n = flow.params, np.random.default_rng(key), len(x)
    state, losses = opt.init(params), []
    for _ in range(epochs):
        perm, total = rng.permutation(n), 0.0
        for b in range(math.ceil(n / batch)):
            rows = perm[b * batch : (b + 1) * batch]
            params, state, loss = step(params, state, jnp.asarray(x[rows]))
            total += float(loss) * len(rows)
        losses.append(total / n)
    return flow.replace(params=params), np.asarray(losses)


def score(flow, x, clip: bool = True) -> np.ndarray:
    """Per-row NLL of the clipped model (``clip=False``: of the exact one)."""
    return -np.asarray(jax.jit(lambda p, v: log_prob(flow, p, v, clip))(flow.params, jnp.asarray(x)))
