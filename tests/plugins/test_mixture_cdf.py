"""Tests for the ``mixture_cdf`` family."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import mixture_cdf

from gaussplug._mixture import fit_mixture

FAMILY = mixture_cdf.FAMILY
DIM, K = 3, 4
OPTS = {"components": K}
KEY = jax.random.PRNGKey(0)


@functools.cache
def _transformed(what, dim, components):
    if what == "init":
        return jax.jit(hk.transform(lambda: FAMILY.make_bijector(dim, components=components)).init)
    layer = hk.transform(lambda x: getattr(FAMILY.make_bijector(dim, components=components), what)(x))
    return jax.jit(hk.without_apply_rng(layer).apply)


def init(dim=DIM, components=K):
    return _transformed("init", dim, components)(KEY)


def forward(dim=DIM, components=K):
    return _transformed("forward_and_log_det", dim, components)


def inverse(dim=DIM, components=K):
    return _transformed("inverse_and_log_det", dim, components)


def some_params(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    raw = {
        "logits": rng.normal(size=(DIM, K)),
        "loc": 2 * rng.normal(size=(DIM, K)),
        "log_scale": rng.normal(size=(DIM, K)) / 2,
    }
    return {"~": {k: jnp.asarray(v, dtype) for k, v in raw.items()}}


def data(n=400, seed=1):
    rng = np.random.default_rng(seed)
    bimodal = np.where(rng.random(n) < 0.4, rng.normal(-2.0, 0.5, n), rng.normal(1.5, 0.8, n))
    return np.column_stack([bimodal, rng.gamma(2.0, 1.0, n) - 2.0, rng.standard_t(4, n)]).astype(np.float32)


def std_normal_loglik(params, x):
    y, ld = forward()(params, x)
    return float(jnp.mean(-0.5 * jnp.sum(y**2 + jnp.log(2 * jnp.pi), axis=-1) + ld))


def test_family_record_and_default_init():
    assert FAMILY.name == "mixture_cdf" and FAMILY.options == {"components": 8} and FAMILY.fit is not None
    params = init()
    assert set(params) == {"~"} and set(params["~"]) == {"logits", "loc", "log_scale"}
    for leaf in params["~"].values():
        assert leaf.shape == (DIM, K) and leaf.dtype == jnp.float32
    np.testing.assert_array_equal(params["~"]["logits"], 0.0)
    np.testing.assert_array_equal(params["~"]["log_scale"], 0.0)
    assert float(jnp.std(params["~"]["loc"])) > 0.3  # RandomNormal(1.0)


def test_zero_locs_are_the_identity():
    params = jax.tree.map(jnp.zeros_like, init())
    x = data(8)
    y, ld = forward()(params, x)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(ld, 0.0, atol=1e-5)


@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_round_trip_and_shapes(batch):
    params = some_params()
    x = np.random.default_rng(2).normal(scale=3.0, size=(*batch, DIM)).astype(np.float32)
    y, ld = forward()(params, x)
    x2, ild = inverse()(params, y)
    assert y.shape == x.shape and ld.shape == batch and ild.shape == batch
    np.testing.assert_allclose(x2, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ild, -ld, rtol=1e-5, atol=1e-5)


def test_log_det_matches_jacobian_and_far_points_are_finite():
    params = some_params()
    x = np.array(
        [[0.3, -1.0, 2.0], [-40.0, 55.0, 1e3], [1e3, -1e3, -60.0], [-5.0, 5.0, 0.0], [0.0, 0.0, 0.0]], np.float32
    )
    y, ld = forward()(params, x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(ld))
    jac = jax.vmap(jax.jacobian(lambda v: forward()(params, v)[0]))(x)
    np.testing.assert_allclose(jnp.linalg.slogdet(jac)[1], ld, atol=2e-4)
    x2, _ = inverse()(params, y)
    np.testing.assert_allclose(x2, x, rtol=1e-5, atol=1e-5)


def test_jit_vmap_and_grad():
    params, x = some_params(), data(5)
    y, ld = forward()(params, x)
    yv, ldv = jax.vmap(forward(), in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(yv, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ldv, ld, rtol=1e-6, atol=1e-6)
    gp, gx = jax.grad(lambda p, v: jnp.sum(forward()(p, v)[1]) + jnp.sum(forward()(p, v)[0] ** 2), argnums=(0, 1))(
        params, x
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves((gp, gx)))


def test_float64():
    with jax.enable_x64(True):
        params = init()
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(params))
        params = some_params(jnp.float64)
        x = jnp.asarray(data(6), jnp.float64)
        y, ld = forward()(params, x)
        assert y.dtype == ld.dtype == jnp.float64
        x2, ild = inverse()(params, y)
        np.testing.assert_allclose(x2, x, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ild, -ld, atol=1e-10)


def test_fit_raises_likelihood_and_keeps_structure():
    x = data()
    default = init()
    before = jax.tree.map(np.array, default)
    fitted = FAMILY.fit(x, default, key=KEY, **OPTS)
    assert jax.tree.structure(fitted) == jax.tree.structure(default)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), fitted) == jax.tree.map(lambda a: (a.shape, a.dtype), default)
    jax.tree.map(np.testing.assert_array_equal, default, before)  # the input is not mutated
    identity = jax.tree.map(jnp.zeros_like, default)
    gain = std_normal_loglik(fitted, x) - std_normal_loglik(identity, x)
    assert gain > 0.3 and std_normal_loglik(fitted, x) > std_normal_loglik(default, x)
    for got, want in zip((fitted["~"][k] for k in ("logits", "loc", "log_scale")), fit_mixture(x, K), strict=True):
        np.testing.assert_array_equal(got, want)


def test_fit_in_float64_returns_float64():
    with jax.enable_x64(True):
        fitted = FAMILY.fit(data(200).astype(np.float64), init(), key=KEY, **OPTS)
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(fitted))


@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True, None])
def test_validate_rejects_bad_components(bad):
    with pytest.raises(ValueError, match=r"'components' must be a positive int; got"):
        FAMILY.validate(DIM, {"components": bad})


def test_fit_rejects_mismatched_components_and_bad_data():
    with pytest.raises(ValueError, match=r"params have 4 components but option 'components' is 5"):
        FAMILY.fit(data(), init(), key=KEY, components=5)
    with pytest.raises(ValueError, match=r"shape \(n >= 1, 3\)"):
        FAMILY.fit(data()[:, :2], init(), key=KEY, **OPTS)


def test_hookimpl_registers_the_family():
    seen = []
    mixture_cdf.gaussplug_register_families(seen.append)
    assert seen == [FAMILY]
