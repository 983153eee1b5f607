import warnings

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import DataError

DEFAULT = jax.dtypes.canonicalize_dtype(jnp.float64)  # flows' dtype: float32 unless x64 is on
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
    xi, ild = flow.inverse_and_log_det(z)
    np.testing.assert_allclose(ild, -ld, atol=1e-4)
    # forward / inverse alone (compiled without the log-det work) give the maps' values
    np.testing.assert_allclose(flow.forward(x), z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flow.inverse(z), xi, rtol=1e-6, atol=1e-6)
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
    assert s.shape == (500, 3) and s.dtype == flow.dtype == DEFAULT
    assert bool(jnp.all(jnp.isfinite(s)))
    np.testing.assert_array_equal(flow.sample(jax.random.PRNGKey(0), 500), s)
    d = flow.distribution().sample(seed=jax.random.PRNGKey(1), sample_shape=(4,))
    assert d.shape == (4, 3)


def test_log_prob_in_batches_matches_one_dispatch_and_compiles_once(flow):
    x = np.asarray(flow.sample(3, 1000))
    whole = np.asarray(flow.log_prob(x))
    batched = flow.log_prob(x, batch_size=300)  # 3 full batches and a padded one
    assert batched.shape == (1000,) and batched.dtype == whole.dtype
    np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-5)
    log_prob = flow.runtime.log_prob
    before = log_prob._cache_size()
    for n in (1, 301, 777, 999):  # new row counts, one batch shape: no new compilation
        np.testing.assert_allclose(flow.log_prob(x[:n], batch_size=300), whole[:n], rtol=1e-5, atol=1e-5)
    assert log_prob._cache_size() - before <= 1
    assert flow.log_prob(x[:12].reshape(3, 4, 3), batch_size=5).shape == (3, 4)  # leading axes kept
    for bad in (0, 2.5, True, "8"):  # an argument error, not a data one
        with pytest.raises(ValueError, match="log_prob: batch_size: expected a positive integer or None") as raised:
            flow.log_prob(x, batch_size=bad)
        assert not isinstance(raised.value, gaussplug.DataError)
    with pytest.raises(ValueError, match="outside jax.jit"):
        jax.jit(lambda v: flow.log_prob(v, batch_size=4))(x[:8])
    with pytest.raises(gaussplug.DataError, match="NaN"):  # the data are still checked
        flow.log_prob(np.full((2, 3), np.nan), batch_size=4)


def test_sample_sizes_no_array_can_hold_are_refused_before_xla_aborts(flow, monkeypatch):
    # 1e9+ samples used to abort the interpreter inside XLA (SIGABRT) or blame the mixture layer (int32 overflow).
    for n in (10**12, 2**31 // 3 + 1):
        with pytest.raises(ValueError, match=r"sample: n \* dim = .* values, more than one array holds "
                                             r"\(2,147,483,647\); draw them in several calls"):
            flow.sample(0, n, batch_size=1000)
    import gaussplug._memory as memory

    monkeypatch.setattr(memory, "physical_memory", lambda: 2**20)  # a 1 MiB machine
    with pytest.raises(ValueError, match=r"sample: n = 100,000 samples of dim 3 need at least 2.3 MiB .* more than "
                                         r"this machine's 1.0 MiB of memory"):
        flow.sample(0, 100_000)
    assert flow.sample(0, 1000).shape == (1000, 3)  # 24 KB: fine


def test_sample_in_batches_matches_one_dispatch_and_compiles_once(flow):
    whole = np.asarray(flow.sample(7, 1000))
    batched = flow.sample(7, 1000, batch_size=300)  # 3 full batches and a padded one
    assert batched.shape == (1000, 3) and batched.dtype == flow.dtype
    np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-6)
    inverse = flow.runtime.inverse  # sampling compiles the inverse map without its log-det
    before = inverse._cache_size()
    for n in (301, 777, 1234, 250, 17):  # new n, same batch shape (n <= batch_size too): no new compilation
        assert flow.sample(1, n, batch_size=300).shape == (n, 3)
    assert inverse._cache_size() - before <= 1
    np.testing.assert_allclose(flow.sample(7, 250, batch_size=300), flow.sample(7, 250), rtol=1e-5, atol=1e-6)
    small = jax.jit(lambda k: flow.sample(k, 10, batch_size=16))(jax.random.PRNGKey(0))  # under jit: one dispatch
    np.testing.assert_allclose(small, flow.sample(jax.random.PRNGKey(0), 10), rtol=1e-5, atol=1e-6)
    for bad in (0, -1, 2.5, True, "8"):  # an argument error (ValueError), not a data one
        with pytest.raises(ValueError, match="sample: batch_size: expected a positive integer or None") as raised:
            flow.sample(0, 10, batch_size=bad)
        assert not isinstance(raised.value, gaussplug.DataError)
    with pytest.raises(ValueError, match="outside jax.jit"):
        jax.jit(lambda k: flow.sample(k, 10, batch_size=4))(jax.random.PRNGKey(0))


def test_jit_and_grad(flow):
    x = jnp.ones((5, 3))
    f = jax.jit(lambda fl, v: fl.log_prob(v))
    np.testing.assert_allclose(f(flow, x), flow.log_prob(x), rtol=1e-5)
    g = jax.grad(lambda p: jnp.sum(flow.replace(params=p).runtime._log_prob(p, x)))(flow.params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))


def test_hessian_of_a_fitted_flow_is_finite_and_exact():
    # jax.hessian (forward over reverse) through repeated blocks (a lax.scan) was NaN on most rows.
    x = np.random.default_rng(0).standard_t(5, size=(1000, 3))
    with jax.enable_x64(True):
        flow = gaussplug.fit_rbig(x, n_layers=3, key=0)
        rows = jnp.asarray(x[:20])
        hess = np.asarray(jax.vmap(jax.hessian(flow.log_prob))(rows))
        grad = jax.vmap(jax.grad(flow.log_prob))
        fd = np.stack([(grad(rows + 1e-6 * e) - grad(rows - 1e-6 * e)) / 2e-6 for e in np.eye(3)], axis=-1)
    assert np.isfinite(hess).all()
    np.testing.assert_allclose(hess, fd, rtol=1e-5, atol=1e-5)


def _shift_plugin(name, sign=1.0):
    def make(dim):
        b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(shift=sign * b), 1)

    class Plugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family(name, make))

    return Plugin()


def test_flows_of_one_plan_keep_one_pytree_structure_across_registrations(fresh_registry, monkeypatch):
    # The structure holds the runtime: flows built apart (after an unrelated plugin was registered, or after the
    # runtime left its cache) must still combine under jax.tree.map and share jit cache entries.
    from gaussplug import _runtime

    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    spec = {"dim": 2, "layers": [{"family": "householder"}, {"family": "mixture_cdf", "components": 2}]}
    first = gaussplug.build_flow(spec)
    gaussplug.register(_shift_plugin("shift_a"), name="plugin-a")
    second = gaussplug.build_flow(spec, key=1)
    assert second.runtime is first.runtime  # its families are unchanged: the compiled functions are kept
    monkeypatch.setattr(_runtime, "_CACHE", type(_runtime._CACHE)())  # as if evicted
    third = gaussplug.build_flow(spec, key=2)
    assert third.runtime is not first.runtime and third.runtime == first.runtime
    assert jax.tree.structure(third) == jax.tree.structure(first)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, first, third)
    assert isinstance(mean, gaussplug.Flow)
    f = jax.jit(lambda fl, v: fl.log_prob(v))
    for fl in (first, second, third):
        f(fl, x)
    assert f._cache_size() == 1


def test_a_flow_without_params_samples_in_its_dtype_under_x64(fresh_registry):
    class Plugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("plus_one", lambda dim: distrax.Block(distrax.ScalarAffine(shift=1.0), 1)))

    gaussplug.register(Plugin(), name="plus-one")
    with jax.enable_x64(True):
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "plus_one"}]})
        assert flow.dtype == jnp.float64
        assert flow.sample(0, 3).dtype == jnp.float64  # was float32: latents drawn in a fixed float32
    assert gaussplug.build_flow({"dim": 2, "layers": [{"family": "plus_one"}]}).sample(0, 3).dtype == jnp.float32


def test_a_family_registered_anew_gets_a_new_runtime(fresh_registry):
    x = np.full((1, 2), 0.5, np.float32)
    gaussplug.register(_shift_plugin("shift_b"), name="plugin-b")
    spec = {"dim": 2, "layers": [{"family": "shift_b"}]}
    old = gaussplug.build_flow(spec)
    old = old.replace(params={"0_shift_b": {"~": {"shift": jnp.ones(2)}}})
    gaussplug.unregister("plugin-b")
    gaussplug.register(_shift_plugin("shift_b", sign=-1.0), name="plugin-b")
    new = gaussplug.build_flow(spec).replace(params=old.params)
    assert new.runtime != old.runtime and jax.tree.structure(new) != jax.tree.structure(old)
    np.testing.assert_allclose(old.forward(x), x + 1)  # each flow keeps the family it was built with
    np.testing.assert_allclose(new.forward(x), x - 1)


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
    with pytest.raises(ValueError, match=r"Layer '1_householder': params do not match") as info:
        flow.replace(params=p)
    assert "Expected {'~': {'vectors': ((" in str(info.value) and "got {'~': {'vectors': ((2, 2)" in str(info.value)
    with pytest.raises(ValueError, match=r"Layer '1_householder': params do not match"):
        flow.with_layer_params("1_householder", p["1_householder"])
    with pytest.raises(ValueError, match=r"expected a mapping layer -> module -> name -> array, like flow.params "
                                         r"\(layers \['0_standardize', .*\]\); got list"):
        flow.replace(params=[1, 2])
    with pytest.raises(ValueError, match=r"; params\['a'\] is int, not a module -> name mapping"):
        flow.replace(params={"a": 1})
    with pytest.raises(ValueError, match=r"; params\['a'\]\['~'\] is int, not a name -> array mapping"):
        flow.replace(params={"a": {"~": 1}})


def test_bad_input_errors(flow):
    with pytest.raises(DataError, match=r"expected shape \(\.\.\., 3\) for this 3-D flow; got shape \(4, 2\)"):
        flow.log_prob(jnp.ones((4, 2)))
    bad = np.ones((5, 3))
    bad[3, 1] = np.nan
    bad[4, 0] = np.inf
    with pytest.raises(DataError, match=r"2 of 5 rows contain NaN or inf \(first: row index 3\)"):
        flow.log_prob(bad)
    with pytest.raises(DataError, match="numeric array"):
        flow.log_prob(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="sample: n: expected a non-negative integer") as raised:  # an argument
        flow.sample(0, -1)
    assert not isinstance(raised.value, DataError)
    with pytest.raises(TypeError, match="key: expected an int seed"):
        flow.sample("seed", 3)
    for seed in (-1, 2**32, 2**64):  # JAX keeps 32 bits: these would repeat another seed's stream, or overflow
        with pytest.raises(ValueError, match=rf"key: expected an int seed in \[0, 2\*\*32\); got {seed}\. Without "
                           r"x64, .* and the range is the same with x64 so that a seed means the same in both"):
            flow.sample(seed, 3)
    assert flow.sample(2**32 - 1, 2).shape == (2, 3)


def test_keys_are_checked_and_0d_integer_arrays_are_seeds(flow):
    np.testing.assert_array_equal(flow.sample(jnp.array(5), 3), flow.sample(5, 3))
    np.testing.assert_array_equal(flow.sample(np.array(5, np.int64), 3), flow.sample(5, 3))
    np.testing.assert_array_equal(flow.sample(jax.random.key(1), 3), flow.sample(jax.random.PRNGKey(1), 3))
    with pytest.raises(TypeError, match=r"expected one jax.random key; got an array of keys of shape \(3,\)"):
        flow.sample(jax.random.split(jax.random.key(0), 3), 5)
    with pytest.raises(TypeError, match=r"a raw uint32 key of shape \(2,\)\); got ArrayImpl of shape \(3, 2\)"):
        flow.sample(jax.random.split(jax.random.PRNGKey(0), 3), 5)
    with pytest.raises(TypeError, match=r"got ArrayImpl of shape \(\) and dtype float32"):
        flow.sample(jnp.array(2.0), 5)
    with pytest.raises(ValueError, match=r"int seed in \[0, 2\*\*32\); got -1"):
        flow.sample(jnp.array(-1), 5)


def test_metadata_keys_must_be_strings(flow):
    for bad, where in [({1: "a", "b": 2}, "metadata"), ({"a": {"x": {3: 1}}}, r"metadata\.a\.x"),
                       ({"a": [{"k": 1}, {2: 0}]}, r"metadata\.a\[1\]")]:
        with pytest.raises(TypeError, match=rf"{where}: keys must be strings; got"):
            flow.replace(metadata=bad)
    with pytest.raises(TypeError, match=r"metadata\.s: expected JSON-compatible values .*got set \{1, 2\}"):
        flow.replace(metadata={"s": {1, 2}})
    with pytest.raises(TypeError, match="metadata: expected a mapping with string keys; got str"):
        flow.replace(metadata="note")
    assert flow.replace(metadata={"a": np.arange(2), "b": {"c": [1]}}).metadata == {"a": [0, 1], "b": {"c": [1]}}


def test_integer_input_promoted(flow):
    assert flow.log_prob(np.ones((2, 3), dtype=np.int64)).dtype == flow.dtype == DEFAULT


def test_big_endian_input_is_read_as_native():
    # Big-endian arrays (FITS tables, .npy files from another machine) used to fail inside JAX with a TypeError.
    x = np.random.default_rng(0).normal(size=(200, 3))
    flow = gaussplug.fit_rbig(x.astype(">f8"), n_layers=1, n_components=2)
    native = gaussplug.fit_rbig(x, n_layers=1, n_components=2)
    for dt in (">f4", ">f8"):
        want = native.log_prob(x.astype(dt.replace(">", "<")))
        np.testing.assert_array_equal(flow.log_prob(x.astype(dt)), want)
    tuned, _ = gaussplug.fine_tune(flow, x.astype(">f4"), steps=2, batch_size=50, progress=False)
    assert np.isfinite(tuned.log_prob(x.astype(">f4"))).all()


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
    assert repr(flow).startswith("Flow(dim=3, 4 layers: [")
    # layers, not fit_rbig's blocks (each block is a rotation and a marginal layer): no "n_layers" to confuse
    rbig = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=4, n_components=2))
    assert repr(rbig) == ("Flow(dim=2, 8 layers: [0_householder, 1_mixture_cdf, 2_householder, 3_mixture_cdf, ..., "
                          f"7_mixture_cdf], dtype={rbig.dtype})")
    # and whether its params were fitted
    x = np.random.default_rng(0).normal(size=(200, 2))
    warm = gaussplug.warm_start(rbig, x, progress=False)
    assert repr(warm).endswith(f"dtype={rbig.dtype}, warm-started)")
    tuned, _ = gaussplug.fine_tune(warm, x, steps=2, batch_size=64, progress=False)
    assert repr(tuned).endswith(", warm-started, fine-tuned)")


# -- plugin bijectors that break the shape contract or fail to build ------------------------------------------


def _shape_plugin(fwd, inv=None):
    """A registered family 'odd' (plugin 'odd-plugin') whose bijector maps with ``fwd`` / ``inv``."""

    class Odd(gaussplug.VectorBijector):
        def _forward_and_log_det(self, x):
            return fwd(x)

        def _inverse_and_log_det(self, y):
            return (inv or fwd)(y)

    def make(dim):
        hk.get_parameter("b", (dim,), init=jnp.zeros)
        return Odd(dim)

    class Plugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("odd", make))

    gaussplug.register(Plugin(), name="odd-plugin")
    return gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}, {"family": "odd"}]})


_OK = lambda x: (x, jnp.zeros(x.shape[:-1], x.dtype))  # noqa: E731


@pytest.mark.parametrize(
    "fwd, inv, method, pattern",
    [
        (
            lambda x: (x[..., :1], jnp.zeros(x.shape[:-1])),
            None,
            "forward",
            r"Layer '1_odd' \(family 'odd', plugin 'odd-plugin'\): forward_and_log_det returned an output of shape "
            r"\(5, 1\); expected the input's shape \(5, 2\)\.",
        ),
        (
            lambda x: (x, jnp.zeros(x.shape)),
            None,
            "forward",
            r"Layer '1_odd' .*: forward_and_log_det returned a log-det of shape \(5, 2\); expected the batch shape "
            r"\(5,\)",
        ),
        (
            lambda x: (x, jnp.zeros(())),
            None,
            "forward",
            r"Layer '1_odd' .*: forward_and_log_det returned a log-det of shape \(\); expected the batch shape \(5,\)",
        ),
        (
            _OK,
            lambda y: (jnp.concatenate([y, y], -1), jnp.zeros(y.shape[:-1])),
            "inverse",
            r"Layer '1_odd' .*: inverse_and_log_det returned an output of shape \(5, 4\); expected the input's shape "
            r"\(5, 2\)",
        ),
        (
            lambda x: (x.astype(jnp.float16), jnp.zeros(x.shape[:-1], x.dtype)),
            None,
            "forward",
            r"Layer '1_odd' .*: forward_and_log_det returned an output of dtype float16; expected the input's dtype "
            r"float(32|64) \(or a wider float\): a narrower one drops the precision the flow computes in\.",
        ),
        (
            lambda x: (x, jnp.zeros(x.shape[:-1], jnp.int32)),
            None,
            "forward",
            r"Layer '1_odd' .*: forward_and_log_det returned a log-det of dtype int32; expected the input's dtype",
        ),
    ],
    ids=["drops-dim", "log-det-per-dim", "log-det-scalar", "inverse-doubles-dim", "float16-output", "int-log-det"],
)
def test_layer_output_shapes_are_checked(fresh_registry, fwd, inv, method, pattern):
    flow = _shape_plugin(fwd, inv)
    x = np.random.default_rng(0).normal(size=(5, 2))
    call = flow.log_prob if method == "forward" else flow.inverse
    with pytest.raises(gaussplug.PluginError, match=pattern):
        call(x)
    with pytest.raises(gaussplug.PluginError, match=r"Layer '1_odd'"):
        (flow.layer_forward if method == "forward" else flow.layer_inverse)("1_odd", x)


@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_a_bijector_raising_is_named(fresh_registry, method):
    def boom(x):
        raise ValueError("bijector boom")

    flow = _shape_plugin(boom if method == "forward" else _OK, boom if method == "inverse" else None)
    x = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(
        gaussplug.PluginError,
        match=rf"Layer '1_odd' \(family 'odd', plugin 'odd-plugin'\): {method}_and_log_det raised ValueError: "
        r"bijector boom",
    ) as e:
        flow.log_prob(x) if method == "forward" else flow.inverse(x)
    assert isinstance(e.value.__cause__, ValueError)


def test_wrong_output_shape_stops_warm_start(fresh_registry):
    flow = _shape_plugin(lambda x: (x[..., :1], jnp.zeros(x.shape[:-1])))
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(gaussplug.PluginError, match=r"Layer '1_odd' .* shape \(50, 1\); expected .* \(50, 2\)"):
        gaussplug.warm_start(flow, x, progress=False)


def _make_plugin(make):
    class Plugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("maker", make))

    gaussplug.register(Plugin(), name="maker-plugin")
    return {"dim": 2, "layers": [{"family": "standardize"}, {"family": "maker"}]}


def test_make_bijector_raising_is_named(fresh_registry):
    def make(dim):
        raise RuntimeError("make exploded")

    with pytest.raises(
        gaussplug.PluginError,
        match=r"Layer '1_maker' \(family 'maker', plugin 'maker-plugin'\): make_bijector raised RuntimeError: "
        r"make exploded",
    ) as e:
        gaussplug.build_flow(_make_plugin(make))
    assert isinstance(e.value.__cause__, RuntimeError)


def test_make_bijector_returning_a_non_bijector_is_named(fresh_registry):
    def make(dim):
        return hk.get_parameter("b", (dim,), init=jnp.zeros)

    with pytest.raises(
        gaussplug.PluginError,
        match=r"Layer '1_maker' \(family 'maker', plugin 'maker-plugin'\): make_bijector returned \w+; "
        r"expected a distrax.Bijector",
    ):
        gaussplug.build_flow(_make_plugin(make))


def test_gaussplug_errors_from_make_bijector_pass_through(fresh_registry):
    def make(dim):
        raise gaussplug.SpecError("my own spec message")

    with pytest.raises(gaussplug.SpecError, match=r"^my own spec message$"):
        gaussplug.build_flow(_make_plugin(make))


# -- inputs and dtypes ----------------------------------------------------------------
def test_float32_input_to_a_float64_flow_is_promoted():
    with jax.enable_x64(True):
        x = np.random.default_rng(0).normal(size=(200, 2))
        flow = gaussplug.fit_rbig(x, n_layers=2, n_components=2)  # a repeat group: the layers are scanned
        assert flow.dtype == jnp.float64
        lp32, lp64 = flow.log_prob(x.astype(np.float32)), flow.log_prob(x)
        assert lp32.dtype == jnp.float64
        np.testing.assert_allclose(lp32, lp64, atol=1e-4)
        assert flow.inverse(x.astype(np.float32)).dtype == jnp.float64


@pytest.mark.parametrize("dtype", ["int32", "float16", "bfloat16", "not-a-dtype"])
def test_build_flow_rejects_non_float32_64_dtypes(dtype):
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64; got '?" + dtype):
        gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]}, dtype=dtype)


def test_unknown_layer_name_lists_the_layers():
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    for call in (flow.layer_forward, flow.layer_inverse):
        with pytest.raises(KeyError, match=r"No layer named 'nope'; layers are \['0_standardize'\]"):
            call("nope", np.zeros((1, 2)))
    with pytest.raises(KeyError, match="No layer named 'nope'"):
        flow.layer_bijector("nope")


def test_layer_params_given_to_one_layer_are_checked():
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1, n_components=2))
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    own = flow.params["1_mixture_cdf"]
    for call in (flow.layer_forward, flow.layer_inverse):
        np.testing.assert_array_equal(call("1_mixture_cdf", x, own)[0], call("1_mixture_cdf", x)[0])
        for bad, got in [(flow.params["0_householder"], r"got \{'~': \{'vectors'"), ({}, r"got \{\}"),
                         (3, "got a value of type int"), ({"~": {"loc": 1.0}}, "got a value of type dict"),
                         ({"~": {**own["~"], "loc": own["~"]["loc"][:1]}}, r"'loc': \(\(1, 2\), 'float32'\)")]:
            with pytest.raises(ValueError, match=r"Layer '1_mixture_cdf': layer_params do not match.*" + got):
                call("1_mixture_cdf", x, bad)  # not a PluginError blaming the family
    # differentiable and jit-able in the given params
    grad = jax.grad(lambda q: flow.layer_forward("1_mixture_cdf", x, q)[1].sum())(own)
    assert grad["~"]["loc"].shape == own["~"]["loc"].shape
    assert jax.jit(lambda q: flow.layer_inverse("1_mixture_cdf", x, q)[0])(own).shape == (4, 2)


def test_finite_values_beyond_float32_say_so():
    if jax.config.jax_enable_x64:
        pytest.skip("float64 holds these values")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    x = np.ones((4, 2))
    x[2, 1] = 1e39
    with warnings.catch_warnings(), pytest.raises(  # the error says it all: no numpy overflow warning beside it
        gaussplug.DataError,
        match=r"x: 1 of 4 rows hold values beyond the float32 range \(largest \|value\| 1e\+39 > 3.4e\+38; "
        r"first: row index 2\)\. Rescale the data, or enable float64",
    ):
        warnings.simplefilter("error")
        flow.log_prob(x)
    x[2, 1] = np.inf
    with pytest.raises(gaussplug.DataError, match=r"1 of 4 rows contain NaN or inf \(first: row index 2\)"):
        flow.log_prob(x)


def test_a_column_too_small_for_float32_says_so_instead_of_scoring_as_a_constant():
    if jax.config.jax_enable_x64:
        pytest.skip("float64 holds these values")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    x = np.random.default_rng(0).normal(size=(50, 2))
    x[:, 1] *= 1e-40  # subnormal in float32: XLA computes them as 0, so every row scored alike
    with pytest.raises(gaussplug.DataError, match=r"x: column index 1: every value is smaller than float32's smallest "
                       r"normal number \(1\.18e-38; largest \|value\| \S+e-40\), and JAX computes such values as 0, "
                       r"so the column would be modelled as a constant\. Rescale the data \(multiply it by 1e40, "
                       r"say\), or enable float64"):  # fmt: skip
        gaussplug.warm_start(flow, x, progress=False)
    assert np.isfinite(np.asarray(flow.log_prob(x))).all()  # points to score: flushing 1e-40 to 0 is rounding
    x[0, 1] = 1e-30  # one normal value: the rest flush to 0, which is no worse than rounding
    gaussplug.warm_start(flow, x, progress=False)
    zeros = np.zeros((50, 2))
    zeros[:, 0] = x[:, 0]
    assert np.isfinite(np.asarray(flow.log_prob(zeros))).all()  # an all-zero column is not an underflow


# -- NaN outputs for finite input: a warning naming the layer (gaussplug._diagnose) ------------------------------


def _nan_above_one(x):
    """NaN in rows whose first coordinate exceeds 1, the identity elsewhere."""
    return jnp.where(x[..., :1] > 1.0, jnp.nan, x), jnp.zeros(x.shape[:-1], x.dtype)


@pytest.mark.parametrize("method", ["log_prob", "forward", "inverse", "sample"])
def test_nan_rows_warn_naming_the_layer(fresh_registry, method):
    flow = _shape_plugin(_nan_above_one)
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    with pytest.warns(gaussplug.GaussplugPluginWarning) as caught:
        out = flow.sample(0, 200) if method == "sample" else getattr(flow, method)(x)
    message = str(caught[0].message)
    direction = "inverse" if method in ("inverse", "sample") else "forward"
    nan_rows = int(np.isnan(np.asarray(out)).reshape(200, -1).any(-1).sum())
    assert nan_rows > 0 and message.startswith(
        f"{method}: {nan_rows} of 200 rows came out NaN for "
        f"{'their latent draws' if method == 'sample' else 'finite input'} (first: row index "
    )
    assert (
        f"Layer '1_odd' (family 'odd', plugin 'odd-plugin') is the first layer whose {direction} output is NaN on "
        "those rows: its params are finite, so the family's bijector is at fault (check the plugin)." in message
    )
    assert caught[0].filename == __file__


def _nan_log_det_above_one(x):
    """The identity, with a NaN log-det in rows whose first coordinate exceeds 1."""
    return x, jnp.where(x[..., 0] > 1.0, jnp.nan, 0.0).astype(x.dtype)


@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_a_nan_log_det_alone_warns_only_where_it_is_returned(fresh_registry, method):
    flow = _shape_plugin(_nan_log_det_above_one)
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # forward / inverse return no log-det: nothing NaN comes back
        out = getattr(flow, method)(x)
    assert np.isfinite(np.asarray(out)).all()
    with pytest.warns(gaussplug.GaussplugPluginWarning, match=rf"{method}_and_log_det: \d+ of 200 rows came out NaN"):
        getattr(flow, f"{method}_and_log_det")(x)


def test_nan_params_are_named_and_jit_is_not_checked():
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1, n_components=2))
    params = flow.params
    params["1_mixture_cdf"]["~"]["loc"] = params["1_mixture_cdf"]["~"]["loc"].at[0, 0].set(jnp.nan)
    bad = flow.replace(params=params)
    x = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.warns(gaussplug.GaussplugPluginWarning, match=r"10 of 10 rows came out NaN .* Layer '1_mixture_cdf' "
                      r"\(family 'mixture_cdf', plugin 'mixture_cdf'\) is the first layer whose forward output and "
                      r"log-det is NaN on those rows: its param ~/loc has 1 NaN/inf entry of 4\."):
        bad.log_prob(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(np.asarray(jax.jit(lambda f, x: f.log_prob(x))(bad, x))).all()  # traced: no check
        far = np.asarray(flow.log_prob(np.full((3, 2), 1e30, np.float32)))  # -inf in float32, -1e60 in float64
        assert np.all(far < -1e20)


def test_nan_from_opposite_infinite_log_dets(fresh_registry):
    class InfDet(gaussplug.VectorBijector):
        def __init__(self, dim, sign):
            super().__init__(dim)
            self.sign = sign

        def _forward_and_log_det(self, x):
            return x, jnp.full(x.shape[:-1], self.sign * jnp.inf, x.dtype)

        _inverse_and_log_det = _forward_and_log_det

    def make(dim, sign=1.0):
        return InfDet(dim, sign)

    class Plugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("inf_det", make, options={"sign": 1.0}))

    gaussplug.register(Plugin(), name="inf-plugin")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "inf_det"}, {"family": "inf_det", "sign": -1.0}]})
    with pytest.warns(gaussplug.GaussplugPluginWarning, match=r"No single layer's output is NaN: the layers' log-dets "
                      r"sum to NaN \(\+inf from one layer, -inf from another\)\."):
        flow.log_prob(np.zeros((4, 2)))


def test_sample_warns_about_infinite_samples_naming_the_layer():
    """A flow whose inverse overflows for part of the latent is not silent about the +-inf samples."""
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}, {"family": "standardize"}]})
    params = jax.tree.map(lambda a: a, flow.params)
    big = np.log(np.finfo(np.dtype(flow.dtype)).max) - 1.0  # x = z * e^big overflows where |z| > e
    params["0_standardize"]["~"]["log_scale"] = jnp.full((2,), big, flow.dtype)
    flow = flow.replace(params=params)
    with pytest.warns(gaussplug.NonFiniteWarning) as caught:
        s = np.asarray(flow.sample(0, 400))
    n_inf = int(np.isinf(s).any(axis=1).sum())
    assert 0 < n_inf < 400 and not np.isnan(s).any()
    (w,) = [w for w in caught if issubclass(w.category, gaussplug.NonFiniteWarning) and "sample:" in str(w.message)]
    assert w.filename == __file__
    message = str(w.message)
    assert f"sample: {n_inf} of 400 samples are +-inf (first: row index {int(np.flatnonzero(np.isinf(s).any(1))[0])})" \
        in message
    assert "first infinite at Layer '0_standardize' (family 'standardize'" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(np.asarray(gaussplug.build_flow(flow.spec).sample(0, 400))).all()  # finite: no warning


@pytest.mark.parametrize("answer", ["no", 1, None])
def test_frozen_must_answer_a_bool(fresh_registry, answer):
    def make(dim):
        hk.get_parameter("b", (dim,), init=jnp.zeros)
        return gaussplug.VectorBijector(dim)

    class Plugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("vague", make, frozen=lambda options, module, name: answer))

    gaussplug.register(Plugin(), name="vague-plugin")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "vague"}]})
    with pytest.raises(gaussplug.PluginError, match=rf"Layer '0_vague' \(family 'vague', plugin 'vague-plugin'\): the "
                       rf"family's frozen\(\) raised TypeError: frozen\('~', 'b'\) returned {type(answer).__name__} "
                       r".*; expected True \(keep the parameter fixed\) or False \(train it\)\."):
        flow.trainable_mask()


def test_data_captured_inside_a_trace_is_checked_eagerly(flow):
    # A NumPy or concrete JAX array closed over by jit / scan / eval_shape used to raise
    # TracerBoolConversionError from the finiteness check.
    x_np = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    x_j = jnp.asarray(x_np)
    want = np.asarray(flow.log_prob(x_np))
    np.testing.assert_allclose(np.asarray(jax.jit(lambda f: f.log_prob(x_np))(flow)), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda f: f.log_prob(x_j))(flow)), want, rtol=1e-6)
    _, stacked = jax.lax.scan(lambda c, _: (c, flow.log_prob(x_j)), 0, None, length=2)
    np.testing.assert_allclose(np.asarray(stacked[1]), want, rtol=1e-6)
    assert jax.eval_shape(lambda f: f.log_prob(x_np), flow).shape == (5,)
    bad = x_np.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match=r"1 of 5 rows contain NaN or inf \(first: row index 3\)"):
        jax.jit(lambda f: f.log_prob(bad))(flow)


def test_flows_copy_as_themselves_and_pickle_through_their_spec(flow):
    import copy
    import pickle

    assert copy.copy(flow) is flow and copy.deepcopy({"f": flow})["f"] is flow
    tagged = flow.replace(metadata={"note": "kept"})
    back = pickle.loads(pickle.dumps(tagged))
    assert back.spec == flow.spec and back.metadata == {"note": "kept"} and back.dtype == flow.dtype
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(back.log_prob(x)), np.asarray(flow.log_prob(x)))


def test_unpickling_a_flow_whose_plugin_is_gone_names_the_plugin(fresh_registry):
    import pickle

    gaussplug.register(_shift_plugin("shift_c"), name="plugin-c")
    blob = pickle.dumps(gaussplug.build_flow({"dim": 2, "layers": [{"family": "shift_c"}, {"family": "householder"}]}))
    gaussplug.unregister("plugin-c")
    with pytest.raises(gaussplug.PluginError, match=r"^a pickled flow needs layer family 'shift_c', provided by "
                       r"plugin 'plugin-c' \(version unknown\), which is not loaded\. Register it"):
        pickle.loads(blob)


def test_a_float64_flow_unpickled_without_x64_is_rounded_with_a_warning():
    import pickle

    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on")
    with jax.enable_x64(True):
        flow = gaussplug.fit_rbig(np.random.default_rng(0).normal(size=(300, 2)), n_layers=1)
        blob = pickle.dumps(flow)
        x = jnp.zeros((1, 2), jnp.float64)
        expected = float(flow.log_prob(x)[0])
    with pytest.warns(gaussplug.DataWarning, match=r"a pickled flow holds float64 params, but this process runs JAX in "
                      r"float32 .* so they are rounded to float32"):
        back = pickle.loads(blob)
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(float(back.log_prob(np.zeros((1, 2)))[0]), expected, rtol=1e-5)


def test_a_pickled_float64_flow_beyond_float32_range_is_refused_without_x64():
    # As gaussplug.load: rounding would turn such params into inf (one check serves both).
    from gaussplug._flow import _unpickle_flow

    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on")
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1))
    _, (spec, params, metadata, families) = flow.__reduce__()
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    params["0_householder"]["~"]["vectors"][0, 0] = 1e300
    with pytest.raises(gaussplug.GaussplugError, match=r"^a pickled flow: layer '0_householder', param ~/vectors holds "
                       r"float64 values beyond float32's range \(largest 1e\+300\)"):  # fmt: skip
        _unpickle_flow(spec, params, metadata, families)


def test_float64_without_x64_is_refused():
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on: float64 is available")
    with pytest.raises(TypeError, match=r"dtype: float64 needs JAX's x64 mode, which is off"):
        gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1), dtype="float64")


def test_functions_taking_a_flow_name_themselves_when_given_something_else():
    x = np.zeros((10, 2))
    for call, name in [(lambda: gaussplug.pushforward("f", x), "pushforward"),
                       (lambda: gaussplug.inspect(x, x), "inspect"),
                       (lambda: gaussplug.warm_start_history("x"), "warm_start_history"),
                       (lambda: gaussplug.fine_tune({}, x, steps=1), "fine_tune"),
                       (lambda: gaussplug.warm_start(None, x), "warm_start"),
                       (lambda: gaussplug.save([], "m.npz"), "save")]:
        with pytest.raises(TypeError, match=rf"^{name}: expected a gaussplug.Flow as flow; got \w+\.$"):
            call()


def test_new_row_counts_in_one_bucket_compile_once_and_give_the_unpadded_values(flow):
    x = np.asarray(flow.sample(5, 1020))
    rt = flow.runtime
    exact_lp = jax.jit(rt._log_prob)  # the unpadded values, each row count compiled on its own
    exact_fwd = jax.jit(rt._forward_and_log_det)
    fns = (rt.log_prob, rt.forward_and_log_det, rt.forward, rt.inverse)
    flow.log_prob(x[:1000]), flow.inverse(flow.forward(x[:1000])), flow.sample(1, 1000)  # a bucket of 1024 rows
    flow.forward_and_log_det(x[:1000])
    before = [f._cache_size() for f in fns]
    for n in (980, 999, 1017):  # the same bucket
        lp, (z, ld), s = flow.log_prob(x[:n]), flow.forward_and_log_det(x[:n]), flow.sample(1, n)
        assert lp.shape == (n,) and z.shape == (n, 3) and ld.shape == (n,) and s.shape == (n, 3)
        assert isinstance(lp, jax.Array) and lp.dtype == flow.dtype
        np.testing.assert_allclose(lp, exact_lp(flow.params, x[:n]), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(z, exact_fwd(flow.params, x[:n])[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(flow.inverse(z), x[:n], rtol=1e-5, atol=1e-5)
    assert [f._cache_size() for f in fns] == before
    key = jax.random.PRNGKey(1)  # the samples are those of one dispatch under jit (the same latent draws)
    np.testing.assert_allclose(flow.sample(key, 999), jax.jit(lambda k: flow.sample(k, 999))(key), rtol=1e-5, atol=1e-5)
