"""Tests for the ``householder`` family."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import householder

import gaussplug
from gaussplug.testing import IsolatedLayer

FAMILY = householder.FAMILY
DIM = 4
KEY = jax.random.PRNGKey(0)
DEFAULT = jax.dtypes.canonicalize_dtype(jnp.float64)  # params' dtype: float32 unless x64 is on


LAYER = IsolatedLayer(FAMILY, DIM, KEY)
init, init_shapes, forward, inverse = LAYER.init, LAYER.init_shapes, LAYER.forward, LAYER.inverse


def random_vectors(count, seed=0):
    return {"~": {"vectors": jnp.asarray(np.random.default_rng(seed).normal(size=(count, DIM)), jnp.float32)}}


def correlated(n, seed=0, dtype=np.float64):
    """Gaussian data with distinct principal variances, a random orientation and an offset."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0]
    scales = np.linspace(3.0, 0.5, DIM)
    return ((rng.normal(size=(n, DIM)) * scales) @ basis.T + rng.normal(size=DIM)).astype(dtype)


def pca_axes(x):
    """Eigenvectors of the (biased) covariance, by descending eigenvalue."""
    x = np.asarray(x, np.float64)
    return np.linalg.eigh(np.cov(x.T, bias=True))[1][:, ::-1]


def diag_gauss_loglik(z):
    """Mean log-likelihood under the best axis-aligned Gaussian."""
    z = np.asarray(z, np.float64)
    return float(-0.5 * np.sum(np.log(2 * np.pi * np.e * z.var(axis=0))))


def test_family_record():
    assert FAMILY.name == "householder"
    assert FAMILY.options == {"reflectors": None, "method": "pca"}
    assert FAMILY.fit is householder.fit_householder
    assert not FAMILY.is_frozen({"reflectors": None}, "~", "vectors")


def test_init_is_random_normal():
    params = init()
    assert set(params) == {"~"} and set(params["~"]) == {"vectors"}
    vectors = params["~"]["vectors"]
    assert vectors.shape == (DIM, DIM) and vectors.dtype == DEFAULT
    assert jnp.all(jnp.isfinite(vectors)) and jnp.std(vectors) > 0.3


@pytest.mark.parametrize(("reflectors", "count"), [(None, DIM), (1, 1), (2, 2)])
def test_param_shapes(reflectors, count):
    shapes = init_shapes(reflectors=reflectors)
    assert shapes["~"]["vectors"].shape == (count, DIM)
    assert shapes["~"]["vectors"].dtype == DEFAULT


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_round_trip_orthogonal_and_zero_log_det(batch):
    params = random_vectors(3)
    x = np.random.default_rng(1).normal(size=(*batch, DIM)).astype(np.float32)
    y, ld = forward(reflectors=3)(params, x)
    x2, ild = inverse(reflectors=3)(params, y)
    assert y.shape == x.shape and ld.shape == batch and ild.shape == batch
    np.testing.assert_allclose(x2, x, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    assert np.all(ld == 0) and np.all(ild == 0)


def test_matrix_is_ordered_product_of_reflections():
    v = np.random.default_rng(2).normal(size=(3, DIM))
    h1, h2, h3 = (np.eye(DIM) - 2 * np.outer(r, r) / (r @ r) for r in v)
    q = householder.householder_product(jnp.asarray(v, jnp.float32))
    np.testing.assert_allclose(q, h1 @ h2 @ h3, atol=1e-5)


def test_log_det_matches_jacobian():
    params = random_vectors(3)
    fwd = forward(reflectors=3)
    x = jnp.array([0.3, -1.2, 0.7, 0.1])
    jac = jax.jacobian(lambda x: fwd(params, x)[0])(x)
    np.testing.assert_allclose(jnp.linalg.slogdet(jac)[1], fwd(params, x)[1], atol=1e-5)


def test_vmap_and_grad_under_jit():
    # Row 1 is a zero vector: the identity, whose gradient must stay finite.
    params = {"~": {"vectors": random_vectors(3)["~"]["vectors"].at[1].set(0.0)}}
    fwd = forward(reflectors=3)  # already jitted
    x = np.random.default_rng(1).normal(size=(2, 3, DIM)).astype(np.float32)
    yv, _ = jax.vmap(fwd, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(yv, fwd(params, x)[0], atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(fwd(p, x)[0] ** 3)))(params)["~"]["vectors"]
    assert jnp.all(jnp.isfinite(grads)) and jnp.any(grads != 0)


def test_zero_vector_is_identity():
    v = jnp.array([1.0, -2.0, 0.5, 1.0])
    params = {"~": {"vectors": jnp.zeros((3, DIM)).at[1].set(v)}}
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    expected = x - 2 * (x @ v) * v / (v @ v)
    np.testing.assert_allclose(forward(reflectors=3)(params, x)[0], expected, atol=1e-6)


@pytest.mark.parametrize("reflectors", [None, 2])
def test_fit_reproduces_pca_float32(reflectors):
    x = correlated(2000, dtype=np.float32)
    count = reflectors or DIM
    params = random_vectors(count)
    fitted = FAMILY.fit(x, params, key=KEY, reflectors=reflectors)
    assert fitted["~"]["vectors"].shape == params["~"]["vectors"].shape
    assert fitted["~"]["vectors"].dtype == jnp.float32
    q = np.asarray(householder.householder_product(fitted["~"]["vectors"]))
    v = pca_axes(x)[:, :count]
    signs = np.sign(np.sum(q[:, :count] * v, axis=0))
    np.testing.assert_allclose(q[:, :count], v * signs, atol=1e-5)
    np.testing.assert_allclose(q.T @ q, np.eye(DIM), atol=1e-5)
    # The first outputs are the (uncentred) principal-component scores.
    y = forward(reflectors=reflectors)(fitted, x)[0]
    np.testing.assert_allclose(y[:, :count], x @ v * signs, atol=1e-4)


def test_float64_init_fit_and_apply():
    with jax.enable_x64(True):
        x = correlated(500)
        params = init()
        assert params["~"]["vectors"].dtype == jnp.float64
        fitted = FAMILY.fit(x, params, key=KEY, reflectors=None)
        assert fitted["~"]["vectors"].dtype == jnp.float64
        q = np.asarray(householder.householder_product(fitted["~"]["vectors"]))
        v = pca_axes(x)
        np.testing.assert_allclose(q, v * np.sign(np.sum(q * v, axis=0)), atol=1e-12)
        y, ld = forward()(fitted, x)
        assert y.dtype == jnp.float64 and ld.dtype == jnp.float64
        np.testing.assert_allclose(inverse()(fitted, y)[0], x, atol=1e-12)


def test_fit_reflections_are_proper():
    vectors = householder.householder_vectors(pca_axes(correlated(300)))
    assert np.all(np.sum(vectors**2, axis=1) >= 2 - 1e-12)


def test_fit_is_pure_and_deterministic():
    x = correlated(300, dtype=np.float32)
    params = random_vectors(DIM)
    before = np.array(params["~"]["vectors"])
    a = FAMILY.fit(x, params, key=KEY)
    b = FAMILY.fit(x, params, key=jax.random.PRNGKey(9))
    np.testing.assert_array_equal(params["~"]["vectors"], before)
    np.testing.assert_array_equal(a["~"]["vectors"], b["~"]["vectors"])


def test_fit_decorrelates_and_keeps_standard_normal_likelihood():
    x = correlated(2000, dtype=np.float32)
    y = np.asarray(forward()(FAMILY.fit(x, random_vectors(DIM), key=KEY), x)[0])
    assert diag_gauss_loglik(y) > diag_gauss_loglik(x) + 0.1
    # Orthogonal with log-det 0: the standard-normal likelihood is unchanged.
    np.testing.assert_allclose(np.sum(y**2, axis=1), np.sum(x**2, axis=1), rtol=1e-4)


@pytest.mark.parametrize(
    "x",
    [
        np.ones((50, DIM)),
        np.c_[np.random.default_rng(0).normal(size=(50, 2)), np.full((50, 2), 3.0)],
        np.random.default_rng(1).normal(size=(2, DIM)),
        np.random.default_rng(2).normal(size=(1, DIM)),
        np.repeat(np.random.default_rng(3).normal(size=(40, 1)), DIM, axis=1),
    ],
    ids=["constant", "some-constant", "n<dim", "one-row", "duplicated"],
)
def test_fit_degenerate_data_is_finite_and_orthogonal(x):
    fitted = FAMILY.fit(x, random_vectors(DIM), key=KEY)
    q = householder.householder_product(fitted["~"]["vectors"])
    assert jnp.all(jnp.isfinite(fitted["~"]["vectors"]))
    np.testing.assert_allclose(q.T @ q, np.eye(DIM), atol=1e-5)


def test_fit_rejects_bad_data():
    with pytest.raises(gaussplug.DataError, match=r"shape \(n >= 1, 4\); got shape \(10, 2\)"):
        FAMILY.fit(np.zeros((10, 2)), random_vectors(DIM), key=KEY)
    with pytest.raises(gaussplug.DataError, match="finite data; got 40 non-finite"):
        FAMILY.fit(np.full((10, DIM), np.nan), random_vectors(DIM), key=KEY)


@pytest.mark.parametrize("bad", [0, -1, 5, 2.0, True, "3"])
def test_validate_rejects_bad_reflectors(bad):
    with pytest.raises(ValueError, match=r"'reflectors' must be None or an int in \[1, dim=4\].*; got"):
        FAMILY.validate(DIM, {"reflectors": bad, "method": "pca"})


@pytest.mark.parametrize("good", [None, 1, DIM, np.int64(2)])
def test_validate_accepts_good_reflectors(good):
    FAMILY.validate(DIM, {"reflectors": good, "method": "pca"})


def test_wrong_event_size_is_a_data_error():
    with pytest.raises(gaussplug.DataError, match=r"shape \(\.\.\., 4\); got shape \(2, 5\)"):
        forward()(random_vectors(DIM), jnp.zeros((2, 5)))


def test_hookimpl_registers_family():
    seen = []
    householder.gaussplug_register_families(seen.append)
    assert seen == [FAMILY]


def test_method_option_fits_other_rotations():
    x = np.random.default_rng(3).standard_t(3, size=(400, DIM)) @ np.random.default_rng(4).normal(size=(DIM, DIM))
    with pytest.raises(ValueError, match=r"householder option 'method' must be one of"):
        FAMILY.validate(DIM, {"reflectors": None, "method": "pcaa"})
    from gaussplug_plugins.rotation import rotation_matrix

    for method in ("random", "ica"):
        params = FAMILY.fit(x, init(), key=jax.random.PRNGKey(1), reflectors=None, method=method)
        q = np.asarray(householder.householder_product(params["~"]["vectors"]), np.float64)
        target = rotation_matrix(x, DIM, key=jax.random.PRNGKey(1), method=method)
        np.testing.assert_allclose(np.abs(q), np.abs(target), atol=2e-5)
