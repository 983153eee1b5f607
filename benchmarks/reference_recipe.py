"""The reference's recipes (gauss_keras, PEERS.md), rerun on gaussplug's layers.

Experiment 2's held-out reference (1.192, worst point ~21) comes from gauss_keras's diagonal
flow, experiment 3's (1.227) from its coupling flow. This module reruns those recipes as
gauss_keras's code has them, on the same data and budgets, so their figures can be set beside
ours from one machine and one run:

* greedy init: per block, a PCA Householder rotation, then per transformed dimension a
  scikit-learn ``GaussianMixture`` (diagonal, k-means start, ``reg_covar=1e-6``, seed
  ``block * 1000 + dim``) written straight into the layer's (logits, loc, log-scale), or for
  a coupling layer into its conditioner's final bias, with the final kernel zero;
* every mixture CDF clipped to ``[1e-6, 1 - 1e-6]`` before the normal quantile, with the
  log-det ``log f(x) - log phi(z_clipped)`` (not a bijection past the clip: far points are
  scored by the first layer's mixture tail, which is what bounds the worst point);
* the coupling flow (:func:`coupling_spec`): blocks of a trainable Householder rotation and two
  couplings, one per half (gauss_keras's ``make_coupling_flow``), whose conditioners are Keras
  ``Dense`` stacks (glorot-uniform kernels, zero biases, ReLU, the last layer all zeros) and
  whose log-scales are ``3 * tanh(raw)`` (its default ``tanh_log_scale_clamp``): the family
  ``reference_coupling``, registered at run time as a plugin;
* Keras-style training: each epoch a fresh permutation in batches of 512 with a last, partial
  batch; Adam with Keras's ``epsilon=1e-7``; the epoch loss is the row-weighted mean.

Only the benchmark uses this; the library's layers are bijections and never clip.
"""

from __future__ import annotations

import math

import gaussplug_plugins.mixture_cdf_coupling as coupling_plugin
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from sklearn.mixture import GaussianMixture

import gaussplug
from gaussplug._mixture import flatten_mixture_params, unflatten_mixture_params

CLIP = 1e-6
BOUND = float(scipy.stats.norm.isf(CLIP))  # the normal quantile of 1 - CLIP, 4.753
#: gauss_keras's coupling log-scales: ``LOG_SCALE_BOUND * tanh(raw)``, so scales lie in [e^-3, e^3].
LOG_SCALE_BOUND = 3.0
#: The family name of gauss_keras's coupling layer here.
COUPLING = "reference_coupling"


class KerasMLP(hk.Module):
    """A Keras ``Dense`` stack as gauss_keras builds its conditioners: ReLU between layers.

    Hidden kernels glorot-uniform (Keras's default), every bias zero, the last layer's kernel zero
    too, so a fresh coupling is the identity. Params ``linear_0`` ... as in the built-in family.
    """

    def __init__(self, output_sizes, name=None):
        super().__init__(name=name)
        glorot = hk.initializers.VarianceScaling(1.0, "fan_avg", "uniform")
        last = len(output_sizes) - 1
        self.layers = [hk.Linear(size, w_init=jnp.zeros if i == last else glorot, name=f"linear_{i}")
                       for i, size in enumerate(output_sizes)]  # fmt: skip

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else jax.nn.relu(layer(x))
        return x


class ClampedCoupling(coupling_plugin.MixtureCDFCoupling):
    """The built-in coupling layer with gauss_keras's log-scales: ``3 * tanh(raw)``, no other clip."""

    def _params(self, x):
        raw = self.conditioner(x[..., self.cond])
        logits, loc, raw_scale = unflatten_mixture_params(raw, self.trans.size, self.components)
        return logits, loc, LOG_SCALE_BOUND * jnp.tanh(raw_scale)


def _make_coupling(dim, mask="half", flip=None, hidden=(64, 64), components=8):
    cond, trans = coupling_plugin.split_dims(dim, mask, flip)
    conditioner = KerasMLP([*map(int, hidden), trans.size * 3 * int(components)], name="conditioner")
    conditioner(jnp.zeros((cond.size,), jax.dtypes.canonicalize_dtype(jnp.float64)))  # params made eagerly
    return ClampedCoupling(dim, cond, trans, conditioner, int(components))


FAMILY = gaussplug.Family(
    name=COUPLING,
    make_bijector=_make_coupling,
    options={"mask": "half", "flip": None, "hidden": [64, 64], "components": 8},
    doc="gauss_keras's coupling layer (benchmarks only): Keras-initialised conditioner, log-scales 3 tanh(raw).",
    min_dim=2,
    validate=coupling_plugin.validate,
    resolve=coupling_plugin.resolve,
)


class _Plugin:
    @gaussplug.hookimpl
    def gaussplug_register_families(self, register):
        register(FAMILY)


def coupling_spec(blocks: int = 4, components: int = 8, hidden=(64, 64)) -> dict:
    """gauss_keras's ``make_coupling_flow(2, blocks)``: per block a Householder rotation and two couplings.

    Registers the ``reference_coupling`` family on first use.
    """
    if COUPLING not in gaussplug.families():
        gaussplug.register(_Plugin(), name="reference_recipe")
    layer = {"family": COUPLING, "components": components, "hidden": list(hidden)}
    rotation = {"family": "householder", "reflectors": 2, "method": "pca"}
    return {"dim": 2, "layers": [{"repeat": blocks, "layers": [rotation, layer, dict(layer)]}]}


def _gmm_params(col: np.ndarray, components: int, seed: int) -> tuple[np.ndarray, ...]:
    gmm = GaussianMixture(components, covariance_type="diag", random_state=seed, reg_covar=1e-6)
    gmm.fit(np.asarray(col, np.float64)[:, None])
    return np.log(np.maximum(gmm.weights_, 1e-20)), gmm.means_.ravel(), 0.5 * np.log(gmm.covariances_.ravel())


def _transformed(flow, layer) -> np.ndarray:
    """The columns a mixture layer Gaussianizes: all of them, or a coupling's transformed set."""
    if layer.family == COUPLING:
        options = layer.options
        return coupling_plugin.split_dims(flow.dim, options["mask"], options["flip"])[1]
    return np.arange(flow.dim)


def _coupling_params(params, hidden, logits, loc, log_scale, dtype):
    """A coupling's params with the fitted mixture as its final bias (log-scales through the inverse clamp)."""
    raw_scale = np.arctanh(np.clip(log_scale / LOG_SCALE_BOUND, -0.9999, 0.9999))
    last = f"conditioner/~/linear_{len(hidden)}"
    bias = jnp.asarray(flatten_mixture_params(logits, loc, raw_scale), dtype)
    return {**params, last: {"w": jnp.zeros_like(params[last]["w"]), "b": bias}}


def reference_init(spec: dict, x: np.ndarray) -> gaussplug.Flow:
    """The reference's greedy init of a stack of householder, mixture_cdf and reference_coupling layers.

    See the module docstring; a coupling's dimensions are fitted with the seeds of their coordinates.
    """
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
        elif family in ("mixture_cdf", COUPLING):
            k = layer.options["components"]
            fits = [_gmm_params(np.asarray(y[:, d]), k, max(block, 0) * 1000 + d) for d in _transformed(flow, layer)]
            logits, loc, log_scale = (np.stack(p) for p in zip(*fits, strict=True))
            if family == COUPLING:
                new = _coupling_params(flow.params[name], layer.options["hidden"], logits, loc, log_scale, flow.dtype)
            else:
                new = {"~": {key: jnp.asarray(v, flow.dtype) for key, v in
                             (("logits", logits), ("loc", loc), ("log_scale", log_scale))}}  # fmt: skip
            flow = flow.with_layer_params(name, new)
        else:
            raise ValueError(f"reference_init: layer {name!r} is a {family!r}; the recipe has householder, "
                             f"mixture_cdf and {COUPLING} layers only")  # fmt: skip
        y = _layer(flow, layer, flow.params[name], y, clip=True)[0]
    return flow


def _layer(flow, layer, params, x, clip: bool):
    y, log_det = flow.runtime.layer_forward(layer.name, params, x)
    if clip and layer.family in ("mixture_cdf", COUPLING):
        cols = np.zeros(flow.dim, bool)
        cols[_transformed(flow, layer)] = True
        yc = jnp.where(cols, jnp.clip(y, -BOUND, BOUND), y)
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
