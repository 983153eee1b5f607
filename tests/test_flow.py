import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import DataError, FitError

SPEC = {"dim": 3, "layers": [{"repeat": 2, "layers": [{"family": "standardize"}, {"family": "householder"}]}]}


@pytest.fixture(scope="module")
def flow():
    x = np.random.default_rng(0).gamma(2.0, size=(300, 3))
    return gaussplug.warm_start(gaussplug.build_flow(SPEC), x, progress=False)


def test_layer_params_match_isolated_haiku_init():
    flow = gaussplug.build_flow(SPEC, key=3)
    fam = gaussplug.families()["householder"].family
    iso = hk.transform(lambda: fam.make_bijector(3, reflectors=None)).init(jax.random.PRNGKey(0))
    assert jax.tree.map(jnp.shape, flow.params["1_householder"]) == jax.tree.map(
        jnp.shape, hk.data_structures.to_mutable_dict(iso)
    )


def test_maps_agree(flow):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(7, 3)), jnp.float32)
    z, ld = flow.forward_and_log_det(x)
    assert z.shape == (7, 3) and ld.shape == (7,)
    np.testing.assert_allclose(flow.inverse(z), x, atol=1e-4)
    _, ild = flow.inverse_and_log_det(z)
    np.testing.assert_allclose(ild, -ld, atol=1e-4)
    lp = flow.log_prob(x)
    np.testing.assert_allclose(lp, flow.distribution().log_prob(x), rtol=1e-5, atol=1e-5)
    zb, ldb = flow.bijector().forward_and_log_det(x)
    np.testing.assert_allclose(zb, z, atol=1e-6)
    np.testing.assert_allclose(ldb, ld, atol=1e-5)


def test_batches_of_any_shape(flow):
    x = jnp.ones((2, 4, 3))
    assert flow.log_prob(x).shape == (2, 4)
    assert flow.log_prob(jnp.ones(3)).shape == ()
    assert flow.log_prob(jnp.ones((0, 3))).shape == (0,)


def test_sample(flow):
    s = flow.sample(0, 500)
    assert s.shape == (500, 3) and s.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(s)))
    np.testing.assert_array_equal(flow.sample(jax.random.PRNGKey(0), 500), s)
    d = flow.distribution().sample(seed=jax.random.PRNGKey(1), sample_shape=(4,))
    assert d.shape == (4, 3)


def test_jit_and_grad(flow):
    x = jnp.ones((5, 3))
    f = jax.jit(lambda fl, v: fl.log_prob(v))
    np.testing.assert_allclose(f(flow, x), flow.log_prob(x), rtol=1e-5)
    g = jax.grad(lambda p: jnp.sum(flow.replace(params=p).runtime._log_prob(p, x)))(flow.params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))


def test_immutable(flow):
    p = flow.params
    p["0_standardize"]["~"]["shift"] = jnp.full(3, 100.0)
    assert not np.allclose(flow.params["0_standardize"]["~"]["shift"], 100.0)
    new = flow.with_layer_params("0_standardize", p["0_standardize"])
    assert new is not flow
    assert np.allclose(new.params["0_standardize"]["~"]["shift"], 100.0)
    assert not np.allclose(flow.params["0_standardize"]["~"]["shift"], 100.0)


def test_replace_checks_structure(flow):
    p = flow.params
    p["1_householder"]["~"]["vectors"] = jnp.zeros((2, 2))
    with pytest.raises(FitError, match=r"Layer '1_householder': params do not match"):
        flow.replace(params=p)


def test_bad_input_errors(flow):
    with pytest.raises(DataError, match=r"expected shape \(\.\.\., 3\) for this 3-D flow; got shape \(4, 2\)"):
        flow.log_prob(jnp.ones((4, 2)))
    bad = np.ones((5, 3))
    bad[3, 1] = np.nan
    bad[4, 0] = np.inf
    with pytest.raises(DataError, match=r"2 of 5 rows contain NaN or inf \(first: row 3\)"):
        flow.log_prob(bad)
    with pytest.raises(DataError, match="numeric array"):
        flow.log_prob(np.array([["a", "b", "c"]]))
    with pytest.raises(DataError, match="non-negative integer n"):
        flow.sample(0, -1)
    with pytest.raises(TypeError, match="key: expected an int seed"):
        flow.sample("seed", 3)


def test_integer_input_promoted(flow):
    assert flow.log_prob(np.ones((2, 3), dtype=np.int64)).dtype == jnp.float32


def test_float64():
    with jax.enable_x64(True):
        flow = gaussplug.build_flow(SPEC)
        assert flow.dtype == jnp.float64
        x = np.random.default_rng(0).normal(size=(10, 3))
        assert flow.log_prob(x).dtype == jnp.float64
        assert flow.sample(0, 4).dtype == jnp.float64


def test_trainable_mask():
    flow = gaussplug.build_flow(
        {"dim": 2, "layers": [{"family": "rotation"}, {"family": "rotation", "trainable": True}]}
    )
    mask = flow.trainable_mask()
    assert mask == {"0_rotation": {"~": {"matrix": False}}, "1_rotation": {"~": {"matrix": True}}}


def test_repr(flow):
    assert "Flow(dim=3, n_layers=4" in repr(flow)
