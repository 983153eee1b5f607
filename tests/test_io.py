import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import Family, PluginError, hookimpl


def test_round_trip_exact(tmp_path):
    x = np.random.default_rng(0).gamma(2.0, size=(200, 3))
    flow = gaussplug.warm_start(
        gaussplug.build_flow(
            {"dim": 3, "layers": [{"family": "standardize"}, {"family": "householder"}, {"family": "rotation"}]}
        ),
        x,
        progress=False,
    )
    path = gaussplug.save(flow, tmp_path / "m.npz")
    back = gaussplug.load(path)
    assert back.spec == flow.spec and back.layer_names == flow.layer_names
    for a, b in zip(jax.tree.leaves(flow.params), jax.tree.leaves(back.params), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert back.metadata == flow.metadata
    np.testing.assert_array_equal(back.log_prob(x), flow.log_prob(x))


def test_round_trip_float64(tmp_path):
    with jax.enable_x64(True):
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}]}, key=5)
        back = gaussplug.load(gaussplug.save(flow, tmp_path / "m.npz"))
        assert back.dtype == jnp.float64
        np.testing.assert_array_equal(
            back.params["0_householder"]["~"]["vectors"], flow.params["0_householder"]["~"]["vectors"]
        )


def test_no_pickle(tmp_path):
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    path = gaussplug.save(flow, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_missing_family_names_family_and_plugin(tmp_path, fresh_registry):
    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            def make(dim):
                b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
                return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

            register(Family("tmp_shift", make))

    gaussplug.register(Plugin(), name="tmp-shift-plugin")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "tmp_shift"}]})
    path = gaussplug.save(flow, tmp_path / "m.npz")
    gaussplug.unregister("tmp-shift-plugin")
    with pytest.raises(
        PluginError,
        match=r"needs layer family 'tmp_shift', provided by plugin 'tmp-shift-plugin' "
        r"\(version unknown\), which is not installed",
    ):
        gaussplug.load(path)


def test_not_a_model(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(3))
    with pytest.raises(gaussplug.GaussplugError, match="not a gaussplug model"):
        gaussplug.load(tmp_path / "x.npz")
    (tmp_path / "y.npz").write_text("garbage")
    with pytest.raises(gaussplug.GaussplugError, match="is not a gaussplug model file"):
        gaussplug.load(tmp_path / "y.npz")
