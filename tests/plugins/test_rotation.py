"""Tests for the ``rotation`` family."""

import functools
import warnings

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import rotation

import gaussplug

FAMILY = rotation.FAMILY
DIM = 3
KEY = jax.random.PRNGKey(0)


def _resolved(opts):
    """Hashable, fully resolved options, so equivalent calls share one compiled function."""
    return tuple(sorted({**FAMILY.options, **opts}.items()))


@functools.cache
def _compiled(what, dim, opts):
    opts = dict(opts)
    if what == "init":
        return jax.jit(hk.transform(lambda: FAMILY.make_bijector(dim, **opts)).init)
    layer = hk.transform(lambda x: getattr(FAMILY.make_bijector(dim, **opts), what)(x))
    return jax.jit(hk.without_apply_rng(layer).apply)


def init(dim=DIM, **opts):
    """Fresh params of one layer (``hk.transform(make_bijector).init``)."""
    return _compiled("init", dim, _resolved(opts))(jax.random.PRNGKey(0))


def forward(dim=DIM, **opts):
    """Jitted ``apply(params, x) -> (y, log_det)`` of ``forward_and_log_det``."""
    return _compiled("forward_and_log_det", dim, _resolved(opts))


def inverse(dim=DIM, **opts):
    """Jitted ``apply(params, y) -> (x, log_det)`` of ``inverse_and_log_det``."""
    return _compiled("inverse_and_log_det", dim, _resolved(opts))


def fit(x, params=None, method="pca", key=KEY):
    params = init(np.shape(x)[1]) if params is None else params
    return FAMILY.fit(x, params, key=key, method=method, trainable=False)


def correlated(n, dim=DIM, seed=0):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (rng.normal(size=(n, dim)) * np.linspace(3.0, 0.5, dim)) @ basis.T + 1.0


def diag_gauss_loglik(z):
    """Mean log-likelihood under the best axis-aligned Gaussian."""
    z = np.asarray(z, np.float64)
    return float(-0.5 * np.sum(np.log(2 * np.pi * np.e * z.var(axis=0))))


def assert_orthogonal(w, atol=1e-5):
    w = np.asarray(w, np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(w.shape[0]), atol=atol)


def test_family_record_and_frozen_marks():
    assert FAMILY.name == "rotation"
    assert FAMILY.options == {"method": "pca", "trainable": False}
    assert FAMILY.is_frozen({"method": "pca", "trainable": False}, "~", "matrix")
    assert not FAMILY.is_frozen({"method": "pca", "trainable": True}, "~", "matrix")


def test_init_is_random_orthogonal():
    params = init()
    assert set(params) == {"~"}
    w = params["~"]["matrix"]
    assert w.shape == (DIM, DIM) and w.dtype == jnp.float32
    assert_orthogonal(w)
    assert not np.allclose(w, np.eye(DIM))


@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_round_trip_and_shapes(batch, trainable):
    params = init()
    x = jax.random.normal(jax.random.PRNGKey(1), (*batch, DIM))
    y, ld = forward(trainable=trainable)(params, x)
    x2, ild = inverse(trainable=trainable)(params, y)
    assert y.shape == x.shape and ld.shape == batch and ild.shape == batch
    np.testing.assert_allclose(x2, x, atol=1e-5)
    np.testing.assert_allclose(ld, 0.0, atol=1e-5)
    np.testing.assert_allclose(ild, -ld, atol=1e-6)


def test_trainable_non_orthogonal_matrix_log_det_and_inverse():
    params = {"~": {"matrix": jnp.array([[2.0, 0.3, 0.0], [0.1, 1.0, 0.2], [0.0, -0.4, 0.5]])}}
    fwd, inv = forward(trainable=True), inverse(trainable=True)
    x = jnp.array([0.3, -1.2, 0.7])
    jac = jax.jacobian(lambda x: fwd(params, x)[0])(x)
    np.testing.assert_allclose(fwd(params, x)[1], jnp.linalg.slogdet(jac)[1], atol=1e-5)
    y, _ = fwd(params, x)
    x2, ild = inv(params, y)
    np.testing.assert_allclose(x2, x, atol=1e-5)
    ijac = jax.jacobian(lambda y: inv(params, y)[0])(y)
    np.testing.assert_allclose(ild, jnp.linalg.slogdet(ijac)[1], atol=1e-5)


def test_fixed_log_det_matches_jacobian():
    params = init()
    fwd = forward()
    x = jnp.array([0.3, -1.2, 0.7])
    jac = jax.jacobian(lambda x: fwd(params, x)[0])(x)
    np.testing.assert_allclose(fwd(params, x)[1], jnp.linalg.slogdet(jac)[1], atol=1e-5)


def test_vmap_and_grad_under_jit():
    params = init()
    fwd = forward(trainable=True)  # already jitted
    x = jax.random.normal(jax.random.PRNGKey(3), (4, DIM))
    yv, _ = jax.vmap(fwd, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(yv, fwd(params, x)[0], atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(fwd(p, x)[0] ** 2) - jnp.sum(fwd(p, x)[1])))(params)
    assert jnp.all(jnp.isfinite(grads["~"]["matrix"]))


def test_fit_pca_gives_sorted_principal_axes():
    x = correlated(2000)
    w = np.asarray(fit(x.astype(np.float32))["~"]["matrix"], np.float64)
    assert_orthogonal(w)
    evals, evecs = np.linalg.eigh(np.cov(x.T, bias=True))
    evecs = evecs[:, ::-1]
    np.testing.assert_allclose(np.abs(np.sum(w * evecs, axis=0)), 1.0, atol=1e-5)
    y = np.asarray(forward()(fit(x), x)[0])
    np.testing.assert_allclose(y.var(axis=0), evals[::-1], rtol=1e-4)


def test_fit_pca_float64():
    with jax.enable_x64(True):
        x = correlated(500)
        params = init()
        assert params["~"]["matrix"].dtype == jnp.float64
        w = fit(x, params)["~"]["matrix"]
        assert w.dtype == jnp.float64
        assert_orthogonal(w, atol=1e-12)
        evecs = np.linalg.eigh(np.cov(x.T, bias=True))[1][:, ::-1]
        np.testing.assert_allclose(np.abs(np.sum(np.asarray(w) * evecs, axis=0)), 1.0, atol=1e-12)
        y, ld = forward(trainable=True)(fit(x, params), jnp.asarray(x))
        assert y.dtype == jnp.float64 and ld.dtype == jnp.float64


def test_fit_pca_improves_diagonal_gaussian_and_keeps_standard_normal():
    x = correlated(2000).astype(np.float32)
    y = np.asarray(forward()(fit(x), x)[0])
    assert diag_gauss_loglik(y) > diag_gauss_loglik(x) + 0.1
    np.testing.assert_allclose(np.sum(y**2, axis=1), np.sum(x**2, axis=1), rtol=1e-4)


def test_fit_random_is_haar_like_and_keyed():
    x = np.zeros((5, DIM))
    a = fit(x, method="random", key=jax.random.PRNGKey(1))["~"]["matrix"]
    b = fit(x, method="random", key=jax.random.PRNGKey(1))["~"]["matrix"]
    c = fit(x, method="random", key=jax.random.PRNGKey(2))["~"]["matrix"]
    assert_orthogonal(a)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_ica_unmixes_independent_sources():
    rng = np.random.default_rng(0)
    sources = rng.uniform(-np.sqrt(3), np.sqrt(3), size=(3000, DIM))
    mixing = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0]
    x = sources @ mixing
    w = np.asarray(fit(x, method="ica")["~"]["matrix"], np.float64)
    assert_orthogonal(w)
    # x @ w recovers the sources up to permutation and sign.
    cross = np.abs(mixing @ w)
    np.testing.assert_allclose(np.sort(cross.max(axis=0)), 1.0, atol=0.05)
    np.testing.assert_allclose(np.sort(cross.max(axis=1)), 1.0, atol=0.05)


def test_fit_ica_on_gaussian_data_is_quiet_and_orthogonal():
    x = correlated(300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = fit(x, method="ica")["~"]["matrix"]
    assert_orthogonal(w)


@pytest.mark.parametrize("method", ["pca", "ica"])
@pytest.mark.parametrize(
    "x",
    [
        np.ones((50, DIM)),
        np.c_[np.random.default_rng(0).uniform(size=(50, 2)), np.full((50, 1), 3.0)],
        np.random.default_rng(1).uniform(size=(2, DIM)),
        np.random.default_rng(2).normal(size=(1, DIM)),
        np.repeat(np.random.default_rng(3).uniform(size=(40, 1)), DIM, axis=1),
    ],
    ids=["constant", "some-constant", "n<dim", "one-row", "duplicated"],
)
def test_fit_degenerate_data_is_finite_and_orthogonal(x, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = fit(x, method=method)["~"]["matrix"]
    assert jnp.all(jnp.isfinite(w))
    assert_orthogonal(w)


def test_fit_is_pure():
    params = init()
    before = np.array(params["~"]["matrix"])
    fitted = fit(correlated(100), params)
    np.testing.assert_array_equal(params["~"]["matrix"], before)
    assert fitted is not params and fitted["~"] is not params["~"]


def test_fit_rejects_unknown_method_and_bad_data():
    with pytest.raises(ValueError, match=r"one of \('pca', 'random', 'ica'\); got 'svd'"):
        fit(correlated(10), method="svd")
    with pytest.raises(gaussplug.DataError, match=r"shape \(n >= 1, 3\); got shape \(0, 3\)"):
        fit(np.zeros((0, DIM)))


def test_validate():
    FAMILY.validate(DIM, {"method": "ica", "trainable": True})
    with pytest.raises(ValueError, match=r"'method' must be one of \('pca', 'random', 'ica'\); got 'PCA'"):
        FAMILY.validate(DIM, {"method": "PCA", "trainable": False})
    with pytest.raises(ValueError, match=r"'trainable' must be a bool; got 1"):
        FAMILY.validate(DIM, {"method": "pca", "trainable": 1})


def test_hookimpl_registers_family():
    seen = []
    rotation.gaussplug_register_families(seen.append)
    assert seen == [FAMILY]
