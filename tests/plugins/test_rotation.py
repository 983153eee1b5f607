"""Tests for the ``rotation`` family."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import rotation

import gaussplug
from gaussplug.testing import IsolatedLayer

FAMILY = rotation.FAMILY
DIM = 3
KEY = jax.random.PRNGKey(0)
DEFAULT = jax.dtypes.canonicalize_dtype(jnp.float64)  # params' dtype: float32 unless x64 is on


LAYER = IsolatedLayer(FAMILY, DIM, KEY)
init, init_shapes, forward, inverse = LAYER.init, LAYER.init_shapes, LAYER.forward, LAYER.inverse


def fit(x, method="pca", key=KEY, params=None):
    params = {"~": {"matrix": jnp.eye(DIM)}} if params is None else params
    return FAMILY.fit(x, params, key=key, method=method, trainable=False)


def matrix_params(m):
    return {"~": {"matrix": jnp.asarray(m, jnp.float32)}}


def haar(seed=0):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(DIM, DIM)))[0]


def correlated(n, seed=0):
    """Gaussian data with distinct principal variances, a random orientation and an offset."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, DIM)) * np.linspace(3.0, 0.5, DIM)) @ haar(seed + 1).T + 1.0


def pca_axes(x):
    """Eigenvalues (descending) and eigenvectors of the (biased) covariance."""
    w, v = np.linalg.eigh(np.cov(np.asarray(x, np.float64).T, bias=True))
    return w[::-1], v[:, ::-1]


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
    assert FAMILY.fit is rotation.fit_rotation
    assert FAMILY.is_frozen({"method": "pca", "trainable": False}, "~", "matrix")
    assert not FAMILY.is_frozen({"method": "ica", "trainable": True}, "~", "matrix")


def test_init_is_random_orthogonal():
    params = init()
    assert set(params) == {"~"} and set(params["~"]) == {"matrix"}
    w = params["~"]["matrix"]
    assert w.shape == (DIM, DIM) and w.dtype == DEFAULT
    assert_orthogonal(w)
    assert not np.allclose(np.abs(w), np.eye(DIM))


@pytest.mark.parametrize(("batch", "trainable"), [((), False), ((2, 3), False), ((2, 3), True)])
def test_round_trip_and_shapes(batch, trainable):
    params = matrix_params(haar())
    x = np.random.default_rng(1).normal(size=(*batch, DIM)).astype(np.float32)
    y, ld = forward(trainable=trainable)(params, x)
    x2, ild = inverse(trainable=trainable)(params, y)
    assert y.shape == x.shape and ld.shape == batch and ild.shape == batch
    np.testing.assert_allclose(y, x @ haar(), atol=1e-5)
    np.testing.assert_allclose(x2, x, atol=1e-5)
    np.testing.assert_allclose(ld, 0.0, atol=1e-5)
    np.testing.assert_allclose(ild, 0.0, atol=1e-5)


@pytest.mark.parametrize("trainable", [False, True])
def test_log_det_matches_jacobian(trainable):
    # A trainable matrix may drift off the orthogonal group during fine-tuning.
    m = haar() if not trainable else [[2.0, 0.3, 0.0], [0.1, 1.0, 0.2], [0.0, -0.4, 0.5]]
    params = matrix_params(m)
    fwd, inv = forward(trainable=trainable), inverse(trainable=trainable)
    x = jnp.array([0.3, -1.2, 0.7])
    y, ld = fwd(params, x)
    x2, ild = inv(params, y)
    np.testing.assert_allclose(x2, x, atol=1e-5)
    jac = jax.jacobian(lambda x: fwd(params, x)[0])(x)
    np.testing.assert_allclose(ld, jnp.linalg.slogdet(jac)[1], atol=1e-5)
    inv_jac = jax.jacobian(lambda y: inv(params, y)[0])(y)
    np.testing.assert_allclose(ild, jnp.linalg.slogdet(inv_jac)[1], atol=1e-5)


def test_vmap_and_grad_under_jit():
    params = matrix_params(haar())
    fwd = forward(trainable=True)  # already jitted
    x = np.random.default_rng(1).normal(size=(2, 3, DIM)).astype(np.float32)
    yv, ldv = jax.vmap(fwd, in_axes=(None, 0))(params, x)
    y, ld = fwd(params, x)
    np.testing.assert_allclose(yv, y, atol=1e-6)
    np.testing.assert_allclose(ldv, ld, atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(fwd(p, x)[0] ** 2) - jnp.sum(fwd(p, x)[1])))(params)
    assert jnp.all(jnp.isfinite(grads["~"]["matrix"]))


def test_fit_pca_gives_sorted_principal_axes():
    x = correlated(2000).astype(np.float32)
    fitted = fit(x, params=matrix_params(haar()))
    w = np.asarray(fitted["~"]["matrix"], np.float64)
    assert fitted["~"]["matrix"].dtype == jnp.float32
    assert_orthogonal(w)
    variances, axes = pca_axes(x)
    np.testing.assert_allclose(np.abs(np.sum(w * axes, axis=0)), 1.0, atol=1e-5)
    y = np.asarray(forward()(fitted, x)[0])
    np.testing.assert_allclose(y.var(axis=0), variances, rtol=1e-4)
    assert diag_gauss_loglik(y) > diag_gauss_loglik(x) + 0.1  # decorrelated
    # Orthogonal with log-det 0: the standard-normal likelihood is unchanged.
    np.testing.assert_allclose(np.sum(y**2, axis=1), np.sum(x**2, axis=1), rtol=1e-4)


def test_principal_axes_follow_the_bulk_when_far_outliers_dominate_the_covariance():
    """Three rows 1e8 to 3e10 out made the PCA axes point at them (a QA found a fit's bulk NLL 54 for about 3)."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3000, 3))
    x[:, 1] = 0.9 * x[:, 0] + 0.3 * x[:, 1]
    bulk_axes, _ = rotation.principal_axes(x)
    spoiled = x.copy()
    spoiled[:3] = [[1e8, 0, 0], [0, -1e9, 0], [0, 0, 3e10]]
    axes, variances = rotation.principal_axes(spoiled)
    np.testing.assert_allclose(np.abs(np.sum(axes * bulk_axes, axis=0)), 1.0, atol=0.02)
    assert variances[0] < 3.0  # the bulk's largest variance (about 1.8), not the outliers' (about 3e17)
    heavy = rng.standard_t(3, size=(3000, 3))  # heavy tails, no far outliers: the plain covariance
    cov = np.cov(heavy, rowvar=False, bias=True)
    np.testing.assert_allclose(rotation.principal_axes(heavy)[1], np.linalg.eigvalsh(cov)[::-1], rtol=1e-9)


def test_float64_init_fit_and_apply():
    with jax.enable_x64(True):
        x = correlated(500)
        params = init()
        assert params["~"]["matrix"].dtype == jnp.float64
        w = fit(x, params=params)["~"]["matrix"]
        assert w.dtype == jnp.float64
        assert_orthogonal(w, atol=1e-12)
        np.testing.assert_allclose(np.abs(np.sum(np.asarray(w) * pca_axes(x)[1], axis=0)), 1.0, atol=1e-12)
        y, ld = forward(trainable=True)({"~": {"matrix": w}}, x)
        assert y.dtype == jnp.float64 and ld.dtype == jnp.float64
        np.testing.assert_allclose(ld, 0.0, atol=1e-12)


def test_fit_random_is_orthogonal_and_keyed():
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
    mixing = haar(5)
    w = np.asarray(fit(sources @ mixing, method="ica")["~"]["matrix"], np.float64)
    assert_orthogonal(w)
    # x @ w = sources @ (mixing @ w) recovers the sources up to permutation and sign.
    cross = np.abs(mixing @ w)
    np.testing.assert_allclose(np.sort(cross.max(axis=0)), 1.0, atol=0.05)
    np.testing.assert_allclose(np.sort(cross.max(axis=1)), 1.0, atol=0.05)


def test_fit_ica_keeps_the_pca_axes_where_its_rotation_would_expose_less():
    # Sources of very different scales under a non-orthogonal mixing: FastICA's rotation, found on the
    # whitened data but applied to the unscaled PCA scores, mixes large and small components, raising the
    # marginals' entropy sum by about 1.9 nats; "ica" keeps the PCA axes there instead.
    from gaussplug._estimators import marginal_entropy

    rng = np.random.default_rng(0)
    s = np.stack([rng.laplace(size=3000) * 10, rng.uniform(-1, 1, 3000), rng.laplace(size=3000) * 0.1], 1)
    x = s @ np.array([[1.0, 0.8, 0.3], [0.2, 1.0, 0.9], [0.5, 0.1, 1.0]])
    layer = IsolatedLayer(FAMILY, 3)
    w = np.asarray(FAMILY.fit(x, layer.init(3), key=KEY, method="ica")["~"]["matrix"], np.float64)
    axes = rotation.principal_axes(x)[0]
    centred = x - x.mean(axis=0)
    assert_orthogonal(w)
    np.testing.assert_allclose(
        marginal_entropy(centred @ w).sum(), marginal_entropy(centred @ axes).sum(), rtol=1e-6
    )


def test_fit_ica_on_gaussian_data_is_quiet_and_orthogonal():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = fit(correlated(300), method="ica")["~"]["matrix"]
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
    params = matrix_params(haar())
    before = np.array(params["~"]["matrix"])
    fitted = fit(correlated(100), params=params)
    np.testing.assert_array_equal(params["~"]["matrix"], before)
    assert fitted["~"] is not params["~"]


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
