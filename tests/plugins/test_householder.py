"""Tests for the ``householder`` family."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import householder

import gaussplug

FAMILY = householder.FAMILY
DIM = 4


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


def correlated(n, dim=DIM, seed=0, dtype=np.float64):
    """Gaussian data with distinct principal variances and a random orientation."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    scales = np.linspace(3.0, 0.5, dim)
    return ((rng.normal(size=(n, dim)) * scales) @ basis.T + rng.normal(size=dim)).astype(dtype)


def pca_axes(x):
    x = np.asarray(x, np.float64)
    w, v = np.linalg.eigh(np.cov(x.T, bias=True))
    return v[:, ::-1]


def diag_gauss_loglik(z):
    """Mean log-likelihood under the best axis-aligned Gaussian."""
    z = np.asarray(z, np.float64)
    return float(-0.5 * np.sum(np.log(2 * np.pi * np.e * z.var(axis=0))))


def test_family_record():
    assert FAMILY.name == "householder"
    assert FAMILY.options == {"reflectors": None}
    assert FAMILY.frozen is None
    assert not FAMILY.is_frozen({"reflectors": None}, "~", "vectors")


@pytest.mark.parametrize(("reflectors", "count"), [(None, 4), (2, 2)])
def test_param_shapes(reflectors, count):
    params = init(reflectors=reflectors)
    assert set(params) == {"~"}
    assert params["~"]["vectors"].shape == (count, DIM)
    assert params["~"]["vectors"].dtype == jnp.float32


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_round_trip_orthogonal_and_zero_log_det(batch):
    params = init(reflectors=3)
    x = jax.random.normal(jax.random.PRNGKey(1), (*batch, DIM))
    y, ld = forward(reflectors=3)(params, x)
    x2, ild = inverse(reflectors=3)(params, y)
    assert y.shape == x.shape and ld.shape == batch and ild.shape == batch
    np.testing.assert_allclose(x2, x, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    assert np.all(ld == 0) and np.all(ild == 0)


def test_matrix_is_ordered_product_of_reflections():
    v = np.random.default_rng(2).normal(size=(3, DIM))
    h1, h2, h3 = (np.eye(DIM) - 2 * np.outer(r, r) / (r @ r) for r in v)
    q = householder.householder_product(jnp.asarray(v, jnp.float32))
    np.testing.assert_allclose(q, h1 @ h2 @ h3, atol=1e-5)


def test_log_det_matches_jacobian():
    params = init()
    fwd = forward()
    x = jnp.array([0.3, -1.2, 0.7, 0.1])
    jac = jax.jacobian(lambda x: fwd(params, x)[0])(x)
    np.testing.assert_allclose(jnp.linalg.slogdet(jac)[1], fwd(params, x)[1], atol=1e-5)


def test_vmap_and_grad_under_jit():
    params = init()
    fwd = forward()  # already jitted
    x = jax.random.normal(jax.random.PRNGKey(3), (5, DIM))
    yv, _ = jax.vmap(fwd, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(yv, fwd(params, x)[0], atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(fwd(p, x)[0] ** 3)))(params)
    assert jnp.all(jnp.isfinite(grads["~"]["vectors"]))
    assert jnp.any(grads["~"]["vectors"] != 0)


def test_zero_vector_is_identity_with_finite_grad():
    params = {"~": {"vectors": jnp.zeros((2, DIM))}}
    fwd = forward(reflectors=2)
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(fwd(params, x)[0], x)
    grads = jax.grad(lambda p: jnp.sum(fwd(p, x)[0] ** 2))(params)
    assert jnp.all(jnp.isfinite(grads["~"]["vectors"]))


@pytest.mark.parametrize("reflectors", [None, 2])
def test_fit_reproduces_pca_float32(reflectors):
    x = correlated(2000, dtype=np.float32)
    params = init(reflectors=reflectors)
    fitted = FAMILY.fit(x, params, key=jax.random.PRNGKey(0), reflectors=reflectors)
    count = reflectors or DIM
    assert fitted["~"]["vectors"].shape == params["~"]["vectors"].shape
    assert fitted["~"]["vectors"].dtype == jnp.float32
    q = np.asarray(householder.householder_product(fitted["~"]["vectors"]))
    v = pca_axes(x)
    signs = np.sign(np.sum(q[:, :count] * v[:, :count], axis=0))
    np.testing.assert_allclose(q[:, :count], v[:, :count] * signs, atol=1e-5)
    np.testing.assert_allclose(q.T @ q, np.eye(DIM), atol=1e-5)
    # The layer's outputs are the (uncentred) principal-component scores.
    y = forward(reflectors=reflectors)(fitted, x)[0]
    np.testing.assert_allclose(y[:, :count], x @ v[:, :count] * signs, atol=1e-4)


def test_fit_reproduces_pca_float64():
    with jax.enable_x64(True):
        x = correlated(500)
        params = init()
        assert params["~"]["vectors"].dtype == jnp.float64
        fitted = FAMILY.fit(x, params, key=jax.random.PRNGKey(0), reflectors=None)
        assert fitted["~"]["vectors"].dtype == jnp.float64
        q = np.asarray(householder.householder_product(fitted["~"]["vectors"]))
        v = pca_axes(x)
        np.testing.assert_allclose(q, v * np.sign(np.sum(q * v, axis=0)), atol=1e-12)
        y, ld = forward()(fitted, jnp.asarray(x))
        assert y.dtype == jnp.float64 and ld.dtype == jnp.float64


def test_fit_reflections_are_proper():
    vectors = householder.householder_vectors(pca_axes(correlated(300)))
    assert np.all(np.sum(vectors**2, axis=1) >= 2 - 1e-12)


def test_fit_is_pure_and_deterministic():
    x = correlated(300, dtype=np.float32)
    params = init()
    before = np.array(params["~"]["vectors"])
    a = FAMILY.fit(x, params, key=jax.random.PRNGKey(0))
    b = FAMILY.fit(x, params, key=jax.random.PRNGKey(9))
    np.testing.assert_array_equal(params["~"]["vectors"], before)
    np.testing.assert_array_equal(a["~"]["vectors"], b["~"]["vectors"])


def test_fit_decorrelates_and_keeps_standard_normal_likelihood():
    x = correlated(2000, dtype=np.float32)
    fitted = FAMILY.fit(x, init(), key=jax.random.PRNGKey(0))
    y = np.asarray(forward()(fitted, x)[0])
    assert diag_gauss_loglik(y) > diag_gauss_loglik(x) + 0.1
    np.testing.assert_allclose(np.sum(y**2, axis=1), np.sum(x**2, axis=1), rtol=1e-4)


@pytest.mark.parametrize(
    "x",
    [
        np.ones((50, DIM)),  # all columns constant
        np.c_[np.random.default_rng(0).normal(size=(50, 2)), np.full((50, 2), 3.0)],
        np.random.default_rng(1).normal(size=(2, DIM)),  # n < dim
        np.random.default_rng(2).normal(size=(1, DIM)),  # a single row
        np.repeat(np.random.default_rng(3).normal(size=(40, 1)), DIM, axis=1),  # duplicated columns
    ],
    ids=["constant", "some-constant", "n<dim", "one-row", "duplicated"],
)
def test_fit_degenerate_data_is_finite_and_orthogonal(x):
    fitted = FAMILY.fit(x, init(), key=jax.random.PRNGKey(0))
    q = householder.householder_product(fitted["~"]["vectors"])
    assert jnp.all(jnp.isfinite(fitted["~"]["vectors"]))
    np.testing.assert_allclose(q.T @ q, np.eye(DIM), atol=1e-5)


def test_fit_rejects_bad_data():
    with pytest.raises(gaussplug.DataError, match=r"shape \(n >= 1, 4\); got shape \(10, 2\)"):
        FAMILY.fit(np.zeros((10, 2)), init(), key=jax.random.PRNGKey(0))
    with pytest.raises(gaussplug.DataError, match="finite data; got 40 non-finite"):
        FAMILY.fit(np.full((10, DIM), np.nan), init(), key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("bad", [0, -1, 5, 2.0, True, "3"])
def test_validate_rejects_bad_reflectors(bad):
    with pytest.raises(ValueError, match=r"'reflectors' must be None or an int in \[1, dim=4\].*got"):
        FAMILY.validate(DIM, {"reflectors": bad})


@pytest.mark.parametrize("good", [None, 1, 4, np.int64(2)])
def test_validate_accepts_good_reflectors(good):
    FAMILY.validate(DIM, {"reflectors": good})


def test_wrong_event_size_is_a_data_error():
    with pytest.raises(gaussplug.DataError, match=r"expected input of shape \(\.\.\., 4\); got shape \(2, 5\)"):
        forward()(init(), jnp.zeros((2, 5)))


def test_hookimpl_registers_family():
    seen = []
    householder.gaussplug_register_families(seen.append)
    assert seen == [FAMILY]
