"""Tests for the ``standardize`` family."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import standardize

import gaussplug
from gaussplug.testing import IsolatedLayer

FAMILY = standardize.FAMILY
DIM = 3
KEY = jax.random.PRNGKey(0)
DEFAULT = jax.dtypes.canonicalize_dtype(jnp.float64)  # params' dtype: float32 unless x64 is on


LAYER = IsolatedLayer(FAMILY, DIM, KEY)
init, init_shapes, forward, inverse = LAYER.init, LAYER.init_shapes, LAYER.forward, LAYER.inverse


def some_params():
    return {"~": {"shift": jnp.array([0.5, -1.0, 2.0]), "log_scale": jnp.array([0.3, -0.7, 1.1])}}


def std_normal_loglik(params, x):
    """Mean log-likelihood of ``x`` under the layer followed by N(0, I)."""
    y, ld = forward(x.shape[-1])(params, x)
    y = np.asarray(y, np.float64)
    return float(np.mean(-0.5 * np.sum(y**2 + np.log(2 * np.pi), axis=-1) + np.asarray(ld, np.float64)))


def test_family_record_and_identity_init():
    assert FAMILY.name == "standardize"
    assert FAMILY.options == {"trainable": True}
    assert not FAMILY.is_frozen({"trainable": True}, "~", "shift")
    assert FAMILY.is_frozen({"trainable": False}, "~", "shift")
    with pytest.raises(ValueError, match="'trainable' must be a bool"):
        FAMILY.validate(DIM, {"trainable": "no"})
    params = init()
    assert set(params) == {"~"} and set(params["~"]) == {"shift", "log_scale"}
    for leaf in params["~"].values():
        assert leaf.shape == (DIM,) and leaf.dtype == DEFAULT  # float32 unless x64 is on
        np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_round_trip_and_shapes(batch):
    params = some_params()
    x = np.random.default_rng(1).normal(size=(*batch, DIM)).astype(np.float32)
    y, ld = forward()(params, x)
    x2, ild = inverse()(params, y)
    assert y.shape == x.shape and ld.shape == batch and ild.shape == batch
    np.testing.assert_allclose(x2, x, atol=1e-5)
    np.testing.assert_allclose(ld, -0.7, atol=1e-6)
    np.testing.assert_allclose(ild, 0.7, atol=1e-6)


def test_log_det_matches_jacobian():
    params = some_params()
    fwd, inv = forward(), inverse()
    x = jnp.array([0.3, -1.2, 0.7])
    jac = jax.jacobian(lambda x: fwd(params, x)[0])(x)
    np.testing.assert_allclose(fwd(params, x)[1], jnp.linalg.slogdet(jac)[1], atol=1e-5)
    ijac = jax.jacobian(lambda y: inv(params, y)[0])(x)
    np.testing.assert_allclose(inv(params, x)[1], jnp.linalg.slogdet(ijac)[1], atol=1e-5)


def test_vmap_and_grad_under_jit():
    params = some_params()
    fwd = forward()  # already jitted
    x = np.random.default_rng(1).normal(size=(2, 3, DIM)).astype(np.float32)
    y, ld = fwd(params, x)
    yv, ldv = jax.vmap(fwd, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(yv, y, atol=1e-6)
    np.testing.assert_allclose(ldv, ld, atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(fwd(p, x)[0] ** 2) - jnp.sum(fwd(p, x)[1])))(params)
    assert all(jnp.all(jnp.isfinite(g)) for g in grads["~"].values())


def test_fit_sets_mean_and_std_and_standardizes():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1000, DIM)) * [0.1, 2.0, 30.0] + [5.0, -3.0, 100.0]).astype(np.float32)
    params = init()
    fitted = FAMILY.fit(x, params, key=KEY)
    np.testing.assert_allclose(fitted["~"]["shift"], x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(fitted["~"]["log_scale"]), x.std(axis=0), rtol=1e-5)
    assert all(fitted["~"][k].dtype == DEFAULT for k in ("shift", "log_scale"))  # the params' dtype
    y = np.asarray(forward()(fitted, x)[0])
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=1e-4)
    assert std_normal_loglik(fitted, x) > std_normal_loglik(params, x)
    np.testing.assert_array_equal(params["~"]["shift"], 0.0)  # input untouched


def test_huge_inputs_never_make_a_following_rotation_nan():
    # A scale below 1 used to overflow values near the float limit to inf, and the next Householder
    # layer computed inf - inf = NaN.
    x = np.random.default_rng(0).normal(size=(300, 2)) * 1e-3
    block = gaussplug.specs.gaussianization_flow(2, n_layers=1)["layers"]
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}, *block]}, key=0)
    flow = gaussplug.warm_start(flow, x, progress=False)
    dtype = flow.params["0_standardize"]["~"]["shift"].dtype  # float32, or float64 under x64
    top = 0.9 * float(np.finfo(dtype).max)
    y, _ = forward(2)(flow.params["0_standardize"], jnp.array([[-top, top], [1.0, 2.0]], dtype))
    big = float(np.finfo(dtype).max) ** 0.75
    np.testing.assert_allclose(np.asarray(y)[0], [-big, big], rtol=1e-6)  # clipped, never inf
    lp = np.asarray(flow.log_prob(np.array([[-top, -top], [top, 1e-3], [1e-3, 1e-3]], dtype)))
    np.testing.assert_array_equal(lp[:2], -np.inf)
    assert np.isfinite(lp[2])


def test_fit_float64():
    with jax.enable_x64(True):
        x = np.random.default_rng(0).normal(size=(200, DIM)) * 1e-3 + 7.0
        params = init()
        assert params["~"]["shift"].dtype == jnp.float64
        fitted = FAMILY.fit(x, params, key=KEY)
        assert fitted["~"]["shift"].dtype == jnp.float64
        np.testing.assert_allclose(fitted["~"]["shift"], x.mean(axis=0), rtol=1e-14)
        np.testing.assert_allclose(jnp.exp(fitted["~"]["log_scale"]), x.std(axis=0), rtol=1e-12)
        y, ld = forward()(fitted, jnp.asarray(x))
        assert y.dtype == jnp.float64 and ld.dtype == jnp.float64


@pytest.mark.parametrize(
    "x",
    [
        np.ones((50, DIM)),
        np.c_[np.random.default_rng(0).normal(size=(50, 2)), np.full((50, 1), -4e7)],
        np.zeros((1, DIM)),
        np.random.default_rng(1).normal(size=(2, DIM)) * 1e3,
    ],
    ids=["constant", "huge-constant-column", "one-row", "n<dim"],
)
def test_fit_degenerate_data_is_finite_and_never_worse_than_identity(x):
    with jax.enable_x64(True):
        params = init()
        fitted = FAMILY.fit(x, params, key=KEY)
        assert all(jnp.all(jnp.isfinite(v)) for v in fitted["~"].values())
        assert std_normal_loglik(fitted, x) >= std_normal_loglik(params, x)
        y = forward()(fitted, x)[0]
        assert jnp.all(jnp.isfinite(y))


@pytest.mark.parametrize("scale", [1e-12, 1e-30])
def test_fit_keeps_tiny_scales_the_dtype_resolves(scale):
    # SI units (1e-12 farad): the column is modelled at its own scale, not at a floor of 1e-6.
    x = np.random.default_rng(0).normal(size=(500, DIM)) * np.array([1.0, scale, scale])
    x[:, 2] += 3 * scale  # a mean of its own size
    fitted = FAMILY.fit(x.astype(np.float32), init(), key=KEY)
    np.testing.assert_allclose(np.exp(np.asarray(fitted["~"]["log_scale"], np.float64)), x.std(0), rtol=1e-4)
    y = np.asarray(forward()(fitted, jnp.asarray(x, jnp.float32))[0])
    np.testing.assert_allclose(y.std(0), 1.0, rtol=1e-3)


def test_fit_floors_columns_constant_up_to_rounding():
    # 1e4 + 1e-10 noise: float64 sees a spread, float32 params cannot resolve one (an ulp of 1e4 is 1e-3).
    x = np.c_[np.random.default_rng(0).normal(size=(100, 2)), 1e4 + 1e-10 * np.arange(100)]
    fitted = FAMILY.fit(x, init(), key=KEY)
    if DEFAULT == jnp.float32:
        np.testing.assert_allclose(np.exp(float(fitted["~"]["log_scale"][2])), 1e-2, rtol=1e-5)
    else:  # float64 params resolve 1e-10 at 1e4 (an ulp there is 2e-12)
        np.testing.assert_allclose(np.exp(float(fitted["~"]["log_scale"][2])), x[:, 2].std(), rtol=1e-6)


def test_warm_start_models_a_tiny_scale_column():
    # A correlated Gaussian whose third column has scale 1e-12: the held-out log-likelihood is near the truth's
    # (it was 13 nats short, silently, with a floor of 1e-6 on the standardised scale).
    from scipy.stats import multivariate_normal

    corr = np.array([[1, 0.8, 0.5], [0.8, 1, 0.3], [0.5, 0.3, 1]])
    sc = np.array([1.0, 1.0, 1e-12])
    x = np.random.default_rng(0).multivariate_normal(np.zeros(3), corr, 3000) * sc
    spec = {"dim": 3, "layers": [{"family": "standardize", "trainable": False},
                                 *gaussplug.specs.gaussianization_flow(3, n_layers=2)["layers"]]}  # fmt: skip
    flow = gaussplug.warm_start(gaussplug.build_flow(spec, key=0), x[:2000].astype(np.float32), progress=False)
    ll = float(np.mean(flow.log_prob(x[2000:].astype(np.float32))))
    truth = float(np.mean(multivariate_normal(np.zeros(3), corr).logpdf(x[2000:] / sc)) - np.log(sc).sum())
    assert abs(ll - truth) < 0.2, (ll, truth)


def test_fit_rejects_bad_data():
    with pytest.raises(gaussplug.DataError, match=r"shape \(n >= 1, 3\); got shape \(4,\)"):
        FAMILY.fit(np.zeros(4), init(), key=KEY)
    with pytest.raises(gaussplug.DataError, match="finite data; got 1 non-finite"):
        FAMILY.fit(np.array([[0.0, 1.0, np.inf]]), init(), key=KEY)


def test_hookimpl_registers_family():
    seen = []
    standardize.gaussplug_register_families(seen.append)
    assert seen == [FAMILY]
