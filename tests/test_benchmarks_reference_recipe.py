"""benchmarks/reference_recipe.py: gauss_keras's coupling recipe on gaussplug's layers (seed comparison, part 4)."""

import jax.numpy as jnp
import numpy as np
import pytest

from gaussplug._mixture import gaussianize


@pytest.fixture(scope="module")
def recipe(load_benchmark):
    """The module; the plugin its ``coupling_spec`` registers is unregistered after these tests."""
    import gaussplug

    yield load_benchmark("reference_recipe")
    if "reference_recipe" in {p["name"] for p in gaussplug.list_plugins()}:
        gaussplug.unregister("reference_recipe")


@pytest.fixture(scope="module")
def moons():
    from sklearn.datasets import make_moons

    x = make_moons(600, noise=0.05, random_state=0)[0]
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


def test_coupling_flow_is_gauss_keras_block_structure_and_starts_as_the_identity(recipe, moons):
    import gaussplug

    flow = gaussplug.build_flow(recipe.coupling_spec(blocks=2, components=3, hidden=(8,)), key=1)
    assert [(layer.family, layer.options.get("flip")) for layer in flow.plan.layers] == [
        ("householder", None), (recipe.COUPLING, False), (recipe.COUPLING, True)] * 2  # fmt: skip
    last = flow.params["1_reference_coupling"]["conditioner/~/linear_1"]
    assert not np.any(last["w"]) and not np.any(last["b"])  # Keras zeros: the identity before any fit
    hidden = flow.params["1_reference_coupling"]["conditioner/~/linear_0"]
    assert np.any(hidden["w"]) and not np.any(hidden["b"])  # glorot kernels, zero biases
    y, log_det = flow.runtime.layer_forward("1_reference_coupling", flow.params["1_reference_coupling"], moons)
    np.testing.assert_allclose(y, moons, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_reference_init_writes_each_coordinates_gmm_fit_through_the_inverse_clamp(recipe, moons):
    flow = recipe.reference_init(recipe.coupling_spec(blocks=1, components=3, hidden=(8,)), moons)
    y = np.asarray(flow.runtime.layer_forward("0_householder", flow.params["0_householder"], moons)[0])
    name = "1_reference_coupling"  # transforms coordinate 1 given coordinate 0, block 0: seed 0 * 1000 + 1
    logits, loc, log_scale = recipe._gmm_params(y[:, 1], 3, 1)
    assert np.all(np.abs(log_scale) < recipe.LOG_SCALE_BOUND)  # inside the clamp, so it is inverted exactly
    out, log_det = flow.runtime.layer_forward(name, flow.params[name], jnp.asarray(y))
    want, want_log_det = gaussianize(jnp.asarray(y[:, 1:]), *(jnp.asarray(p[None], jnp.float32)
                                                             for p in (logits, loc, log_scale)))  # fmt: skip
    np.testing.assert_allclose(out[:, 1], want[:, 0], atol=2e-4)
    np.testing.assert_allclose(log_det, want_log_det[:, 0], atol=2e-4)
    np.testing.assert_array_equal(out[:, 0], y[:, 0])
    assert not np.any(flow.params[name]["conditioner/~/linear_1"]["w"])


def test_log_scales_are_bounded_by_the_tanh_clamp(recipe, moons):
    import gaussplug

    flow = gaussplug.build_flow(recipe.coupling_spec(blocks=1, components=1, hidden=(4,)))
    name = "1_reference_coupling"
    params = flow.params[name]
    huge = {**params, "conditioner/~/linear_1": {**params["conditioner/~/linear_1"],
                                                 "b": jnp.array([0.0, 0.0, 100.0])}}  # fmt: skip
    x = jnp.asarray(moons[:5])
    out, log_det = flow.runtime.layer_forward(name, huge, x)
    # One component N(0, e^3): y = x / e^3, log-det = -3.
    np.testing.assert_allclose(out[:, 1], x[:, 1] / np.exp(3.0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(log_det, -3.0, atol=1e-4)


def test_clip_applies_to_a_couplings_transformed_coordinates_only(recipe):
    import gaussplug

    flow = gaussplug.build_flow(recipe.coupling_spec(blocks=1, components=1, hidden=(4,)))
    layer = flow.plan.layers[1]
    x = jnp.array([[9.0, 9.0], [0.5, -0.5]])
    y, log_det = recipe._layer(flow, layer, flow.params[layer.name], x, clip=True)
    # The fresh coupling is the identity: the transformed coordinate 1 is clipped at BOUND, coordinate 0 passes.
    np.testing.assert_allclose(y, [[9.0, recipe.BOUND], [0.5, -0.5]], rtol=1e-6)
    np.testing.assert_allclose(log_det, [0.5 * (recipe.BOUND**2 - 81.0), 0.0], atol=1e-4)
