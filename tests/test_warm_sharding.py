"""Warm start on several devices (``warm_start(..., devices=...)``) and ``gaussplug.fit_mesh``."""

import textwrap

import jax
import numpy as np
import pytest

import gaussplug
from gaussplug import _sharding, specs

# Measured max |param difference| between 1 and 4 devices, float64: about 4e-13 (float32: about 1e-3, the EM's
# flat likelihood amplifying the summation-order rounding).
TOL = 1e-8

FOUR_DEVICES = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import gaussplug
    from gaussplug import specs

    import distrax, haiku as hk, jax.numpy as jnp

    seen = []  # (rows, mesh size) per probe fit

    def make_probe(dim):
        hk.get_parameter("unused", (1,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(0.0), 1)

    def fit_probe(x, params, *, key):
        mesh = gaussplug.fit_mesh()
        seen.append([x.shape[0], None if mesh is None else int(mesh.devices.size)])
        return params

    class Probe:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("probe", make_probe, fit=fit_probe))

    gaussplug.register(Probe(), name="probe")
    rng = np.random.default_rng(0)
    # n = 1203: not divisible by 4 (one padding row), above the 512 bins (the binned EM path).
    x = rng.standard_t(4, (1203, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    np.save(PATH, x)
    mm = np.load(PATH, mmap_mode="r")

    def leaves(flow):
        return [np.asarray(a).tolist() for a in jax.tree.leaves(flow.params)]

    def run(spec, data, **kw):
        flow = gaussplug.warm_start(gaussplug.build_flow(spec, key=1), data, progress=False, **kw)
        return leaves(flow), flow.metadata["warm_start"]["log_likelihood"]

    out = {"devices": len(jax.devices())}
    gauss = specs.gaussianization_flow(3, n_layers=2)
    probe = {"dim": 3, "layers": [{"family": "probe"}, {"family": "householder"}, {"family": "probe"}]}
    out["gauss"] = [run(gauss, x), run(gauss, x, devices=4)]
    out["coupling"] = [run(specs.coupling_flow(3, n_layers=2), x),
                       run(specs.coupling_flow(3, n_layers=2), x, devices=jax.devices())]
    out["memmap"] = run(gauss, mm, devices="all")
    run(probe, x, devices=4)
    run(probe, x)
    out["seen"] = seen
    out["after"] = gaussplug.fit_mesh() is None
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory, run_on_four_devices):
    return run_on_four_devices(FOUR_DEVICES, tmp_path_factory.mktemp("warm4") / "x.npy")


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["gauss", "coupling"])
def test_four_devices_match_one(four_devices, name):
    assert four_devices["devices"] == 4
    (p1, ll1), (p4, ll4) = four_devices[name]
    assert max_diff(p1, p4) < TOL
    np.testing.assert_allclose(ll4, ll1, rtol=0, atol=1e-9)


def test_memmap_on_four_devices(four_devices):
    (p1, ll1), (pm, llm) = four_devices["gauss"][0], four_devices["memmap"]
    assert max_diff(p1, pm) < TOL
    np.testing.assert_allclose(llm, ll1, rtol=0, atol=1e-9)


def test_fit_sees_the_mesh_and_all_rows(four_devices):
    assert four_devices["seen"] == [[1203, 4], [1203, 4], [1203, None], [1203, None]]
    assert four_devices["after"]


def test_fit_mesh_is_none_outside_warm_start():
    assert gaussplug.fit_mesh() is None
    with _sharding.fitting_on("sentinel"):
        assert gaussplug.fit_mesh() == "sentinel"
    assert gaussplug.fit_mesh() is None


def test_one_device_means_the_plain_path():
    assert _sharding.warm_mesh(None) is None and _sharding.warm_mesh(1) is None
    x = np.random.default_rng(0).normal(size=(40, 2))
    flow = gaussplug.build_flow(specs.gaussianization_flow(2, n_layers=1), key=0)
    a = gaussplug.warm_start(flow, x, progress=False)
    b = gaussplug.warm_start(flow, x, progress=False, devices=1)
    assert all(np.array_equal(p, q) for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True))


@pytest.mark.parametrize("devices", ["some", 1.5, [1, 2]])
def test_bad_devices(devices):
    x = np.random.default_rng(0).normal(size=(40, 2))
    flow = gaussplug.build_flow(specs.gaussianization_flow(2, n_layers=1), key=0)
    with pytest.raises(TypeError, match="devices: expected None, an int, .* or 'all'; got"):
        gaussplug.warm_start(flow, x, progress=False, devices=devices)
