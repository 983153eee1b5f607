import warnings

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import DataError, Family, FitError, hookimpl, specs


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.stack(
        [
            rng.gamma(2.0, 1.0, 800),
            np.where(rng.random(800) < 0.4, -2.0, 1.5) + 0.4 * rng.standard_normal(800),
            rng.standard_t(4, 800),
        ],
        1,
    )
    return (x @ np.linalg.qr(rng.standard_normal((3, 3)))[0]).astype(np.float32)


def _assert_monotone(flow, strict_families=("mixture_cdf", "mixture_cdf_coupling", "standardize")):
    h = flow.metadata["warm_start"]
    lls = [h["initial_log_likelihood"], *h["log_likelihood"]]
    for i, fam in enumerate(h["family"]):
        before, after = lls[i], lls[i + 1]
        assert after >= before - 1e-4 * (1 + abs(before)), (h["layer"][i], before, after)
        if fam in strict_families and h["fitted"][i]:
            assert after > before, (h["layer"][i], before, after)


@pytest.mark.parametrize(
    "layers",
    [
        [{"family": "standardize"}],
        [{"family": "householder"}, {"family": "mixture_cdf", "components": 4}],
        [
            {"family": "rotation", "method": "pca"},
            {"family": "mixture_cdf", "components": 4},
            {"family": "rotation", "method": "ica"},
            {"family": "mixture_cdf", "components": 4},
        ],
        [
            {"family": "rotation", "method": "random"},
            {"family": "mixture_cdf_coupling", "components": 4, "hidden": [8]},
            {"family": "mixture_cdf_coupling", "components": 4, "hidden": [8]},
        ],
    ],
    ids=["standardize", "householder+mixture", "rotations+mixture", "coupling"],
)
def test_warm_start_raises_likelihood_for_every_builtin(data, layers):
    flow = gaussplug.build_flow({"dim": 3, "layers": layers})
    warm = gaussplug.warm_start(flow, data, progress=False)
    _assert_monotone(warm)
    h = gaussplug.warm_start_history(warm)
    assert h["layer"] == list(flow.layer_names)
    assert np.isclose(h["log_likelihood"][-1], float(jnp.mean(warm.log_prob(data))), atol=1e-3)
    assert float(jnp.mean(warm.log_prob(data))) > float(jnp.mean(flow.log_prob(data)))


def test_third_party_family(fresh_registry, data):
    calls = []

    def make(dim):
        b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
        s = hk.get_parameter("log_scale", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(shift=-b * jnp.exp(-s), log_scale=-s), 1)

    def fit(x, params, *, key):
        calls.append(x.shape)
        dtype = params["~"]["shift"].dtype  # the fit contract: the params' dtypes, whatever the data's
        return {"~": {"shift": jnp.asarray(x.mean(0), dtype), "log_scale": jnp.log(jnp.asarray(x.std(0), dtype))}}

    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("affine_diag", make, fit=fit))

    gaussplug.register(Plugin(), name="affine-plugin")
    flow = gaussplug.build_flow(
        {
            "dim": 3,
            "layers": [
                {"family": "affine_diag"},
                {"family": "householder"},
                {"family": "mixture_cdf", "components": 3},
            ],
        }
    )
    warm = gaussplug.warm_start(flow, data * 5 + 3, progress=False, max_fit_samples=300)
    assert calls == [(300, 3)]
    _assert_monotone(warm, strict_families=("affine_diag", "mixture_cdf"))
    assert warm.metadata["warm_start"]["n_fit_rows"] == 300 and warm.metadata["warm_start"]["n_rows"] == 800


def _shift_maker(init):
    """A ``make_bijector`` for a trainable shift ``y = x - b``, ``b`` initialised by ``init``."""

    def make(dim):
        b = hk.get_parameter("shift", (dim,), init=init)
        return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

    return make


def _register(name, *families):
    """Registers a run-time plugin ``name`` providing ``families``."""

    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            for family in families:
                register(family)

    gaussplug.register(Plugin(), name=name)


def test_family_without_fit_keeps_params(fresh_registry, data):
    _register("nofit", Family("nofit", _shift_maker(jnp.ones)))
    flow = gaussplug.build_flow({"dim": 3, "layers": [{"family": "nofit"}]})
    warm = gaussplug.warm_start(flow, data, progress=False)
    np.testing.assert_array_equal(warm.params["0_nofit"]["~"]["shift"], flow.params["0_nofit"]["~"]["shift"])
    assert warm.metadata["warm_start"]["fitted"] == [False]


def _centring_in_place(x, params, *, key):
    """A fit that centres its data in place (the mistake); it would then return a zero shift."""
    del key
    x -= x.mean(0)
    return {"~": {"shift": jnp.zeros_like(params["~"]["shift"])}}


@pytest.mark.parametrize("position", [0, 1], ids=["first-layer", "later-layer"])
def test_fit_writing_into_its_data_fails_at_the_write_and_leaves_the_data_alone(fresh_registry, data, position):
    # The first layer's fit gets the caller's own array (float32, no copy is made), a later one the warm
    # start's buffer: a fit writing into either would change the user's data or every layer after it.
    _register("writer", Family("writer", _shift_maker(jnp.zeros), fit=_centring_in_place))
    layers = [{"family": "nofit_shift"}] * position + [{"family": "writer"}]
    _register("nofit", Family("nofit_shift", _shift_maker(jnp.zeros)))
    x = np.asarray(data, np.float32)
    before = x.copy()
    flow = gaussplug.build_flow({"dim": 3, "layers": layers})
    with pytest.raises(FitError, match=rf"Layer '{position}_writer' \(family 'writer', plugin 'writer'\): fit raised "
                       r"ValueError: .*read-only.* \(fit must not modify the data x it is given .*x = np.array\(x\)\)"):
        gaussplug.warm_start(flow, x, progress=False)
    np.testing.assert_array_equal(x, before)
    assert x.flags.writeable  # the caller's array itself is not made read-only


def test_broken_fit_is_named(fresh_registry, data):
    make = _shift_maker(jnp.zeros)
    _register(
        "broken-fits",
        Family("badshape", make, fit=lambda x, p, *, key: {"~": {"shift": jnp.zeros(7)}}),
        Family("nanfit", make, fit=lambda x, p, *, key: {"~": {"shift": jnp.full(3, jnp.nan)}}),
        Family("strfit", make, fit=lambda x, p, *, key: {"~": {"shift": "abc"}}),
        Family("flatfit", make, fit=lambda x, p, *, key: dict(p["~"])),
    )

    def warm(family):
        flow = gaussplug.build_flow({"dim": 3, "layers": [{"family": family}]})
        gaussplug.warm_start(flow, data, progress=False)

    label = r"Layer '0_{0}' \(family '{0}', plugin 'broken-fits'\)"
    with pytest.raises(FitError, match=label.format("badshape") + ": fit returned params of another structure"):
        warm("badshape")
    with pytest.raises(FitError, match=label.format("nanfit") + r": fit returned NaN or inf params \(~/shift\)"):
        warm("nanfit")
    # A leaf that is not a number: named in the structure message, not a TypeError from inside JAX.
    with pytest.raises(FitError, match=label.format("strfit") + r": .*Expected \{'~': \{'shift': \(\(3,\), "
                       r"'float(32|64)'\)\}\}; got \{'~': \{'shift': \"<not an array: str 'abc'>"):  # fmt: skip
        warm("strfit")
    # A flat dict (the module level left out): the message shows the structure expected.
    with pytest.raises(FitError, match=label.format("flatfit") + r": fit returned dict .*expected a Haiku params "
                       r"mapping \{module: \{param: array\}\} of the structure it was given: \{'~'"):  # fmt: skip
        warm("flatfit")


def test_bad_data(data):
    flow = gaussplug.build_flow({"dim": 3, "layers": [{"family": "standardize"}]})
    with pytest.raises(DataError, match=r"expected shape \(n, 3\) for this 3-D flow; got shape \(800, 2\)"):
        gaussplug.warm_start(flow, data[:, :2], progress=False)
    with pytest.raises(DataError, match=r"expected shape \(n, 3\) for this 3-D flow; got shape \(2, 400, 3\)"):
        gaussplug.warm_start(flow, data.reshape(2, 400, 3), progress=False)
    with pytest.raises(DataError, match=r"got dtype <U8 \(a file path\? load the data first"):
        gaussplug.warm_start(flow, "data.csv", progress=False)
    bad = data.copy()
    bad[5, 0] = np.nan
    with pytest.raises(DataError, match=r"1 of 800 rows contain NaN or inf \(first: row index 5\)"):
        gaussplug.warm_start(flow, bad, progress=False)
    with pytest.raises(ValueError, match="max_fit_samples: expected an integer >= 2"):
        gaussplug.warm_start(flow, data, max_fit_samples=0, progress=False)


def test_fit_rbig_matches_spec_structure(data):
    flow = gaussplug.fit_rbig(data, n_layers=3, n_components=4)
    ref = gaussplug.build_flow(specs.gaussianization_flow(3, n_layers=3, n_components=4))
    assert flow.layer_names == ref.layer_names
    assert flow.trainable_mask() == ref.trainable_mask()
    _assert_monotone(flow)
    with pytest.raises(DataError, match=r"expected data of shape \(n, dim\)"):
        gaussplug.fit_rbig(data[0])


def test_specs_validate_arguments():
    assert specs.coupling_flow(3)["layers"][0]["repeat"] == 4
    with pytest.raises(ValueError, match="n_layers: expected a positive integer; got 0"):
        specs.gaussianization_flow(2, n_layers=0)
    with pytest.raises(ValueError, match="a coupling flow needs at least 2 dimensions"):
        specs.coupling_flow(1)


def test_specs_tail_weight_reaches_every_mixture_layer_and_is_validated_early():
    assert "tail_weight" not in str(specs.gaussianization_flow(2)) + str(specs.coupling_flow(2))
    for spec, family in ((specs.gaussianization_flow(2, n_layers=2, tail_weight=0.01), "mixture_cdf"),
                         (specs.coupling_flow(2, n_layers=2, hidden=(4,), tail_weight=0.01), "mixture_cdf_coupling")):
        flow = gaussplug.build_flow(spec)
        opts = [lr.options for lr in flow.layers if lr.family == family]
        assert len(opts) == 2 and all(o["tail_weight"] == 0.01 for o in opts)
    with pytest.raises(ValueError, match=r"^tail_weight: expected a number in \[0, 1\) .*got 1\.5"):
        specs.gaussianization_flow(2, n_layers=1, tail_weight=1.5)  # named when the spec is made
    spec = specs.gaussianization_flow(2, n_layers=1)
    spec["layers"][0]["layers"][1]["tail_weight"] = 1.5  # a hand-edited spec: the family's check, at its path
    with pytest.raises(ValueError, match=r"layers\[0\]\.layers\[1\] \(mixture_cdf\): .*'tail_weight' .*got 1\.5"):
        gaussplug.build_flow(spec)


def _fit_plugin(fit):
    _register("fitter-plugin", Family("fitter", _shift_maker(jnp.zeros), fit=fit))
    return gaussplug.build_flow({"dim": 3, "layers": [{"family": "standardize"}, {"family": "fitter"}]})


def test_fit_raising_is_named_with_cause(fresh_registry, data):
    def fit(x, params, *, key):
        raise ValueError("fit exploded")

    flow = _fit_plugin(fit)
    with pytest.raises(
        FitError,
        match=r"Layer '1_fitter' \(family 'fitter', plugin 'fitter-plugin'\): fit raised ValueError: fit exploded",
    ) as e:
        gaussplug.warm_start(flow, data, progress=False)
    assert isinstance(e.value.__cause__, ValueError)


def test_gaussplug_errors_from_fit_pass_through(fresh_registry, data):
    def fit(x, params, *, key):
        raise DataError("my own data message")

    with pytest.raises(DataError, match=r"^my own data message$"):
        gaussplug.warm_start(_fit_plugin(fit), data, progress=False)


def test_warm_start_needs_a_flow(data):
    with pytest.raises(TypeError, match=r"warm_start: expected a gaussplug.Flow as flow; got str\."):
        gaussplug.warm_start("flow", data)


def test_numpy_integers_accepted(data):
    flow = gaussplug.build_flow({"dim": 3, "layers": [{"family": "standardize"}]})
    warm = gaussplug.warm_start(flow, data, max_fit_samples=np.int64(50), progress=False)
    assert warm.metadata["warm_start"]["n_fit_rows"] == 50
    with pytest.raises(ValueError, match="max_fit_samples: expected an integer >= 2"):
        gaussplug.warm_start(flow, data, max_fit_samples=True, progress=False)
    rbig = gaussplug.fit_rbig(data[:200], n_layers=np.int64(1), n_components=2)
    assert rbig.layer_names == ("0_householder", "1_mixture_cdf")
    assert specs.gaussianization_flow(np.int64(3), n_layers=np.int64(2)) == specs.gaussianization_flow(3, n_layers=2)
    assert specs.coupling_flow(3, n_layers=np.int32(2), hidden=(np.int64(8),)) == specs.coupling_flow(
        3, n_layers=2, hidden=(8,)
    )
    with pytest.raises(ValueError, match="n_layers: expected a positive integer; got True"):
        specs.gaussianization_flow(3, n_layers=True)


def test_numpy_integers_accepted_by_auto_depth(data):
    from gaussplug._depth import fit_rbig_auto

    with warnings.catch_warnings():  # max_layers=1 is a cap by construction; the cap warning is tested elsewhere
        warnings.simplefilter("ignore", gaussplug.WarmStartWarning)
        flow = fit_rbig_auto(data[:200], n_components=2, max_layers=np.int64(1), patience=np.int64(1))
    assert flow.metadata["depth_selection"]["chosen"] == 1
    with pytest.raises(ValueError, match="patience: expected a positive integer; got True"):
        fit_rbig_auto(data[:200], patience=True)


@pytest.mark.parametrize("make", [specs.gaussianization_flow, specs.coupling_flow])
def test_float32_flow_fitted_on_float64_data_under_x64_never_lowers_the_likelihood(make):
    # The mixture fits run in float64 under x64; rounding a near-constant column's 6e-11-wide components to
    # float32 moved them by hundreds of scales (mean log-likelihood -3.4 -> -15407, with a "lowered" warning).
    x = np.random.default_rng(0).normal(size=(400, 3))[:3]  # 3 rows in 3-D: a degenerate, near-constant column
    with jax.enable_x64(True):
        flow = gaussplug.build_flow(make(3, n_layers=2, n_components=4), dtype=jnp.float32)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=gaussplug.WarmStartWarning)  # e.g. "lowered the likelihood"
            warnings.filterwarnings("ignore", message=".*rows of 3-D data", category=gaussplug.WarmStartWarning)
            fitted = gaussplug.warm_start(flow, x, progress=False)
    h = gaussplug.warm_start_history(fitted)
    ll = [h["initial_log_likelihood"], *h["log_likelihood"]]
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(ll, ll[1:], strict=False)), ll
    assert jax.tree.leaves(fitted.params)[0].dtype == jnp.float32


def test_too_few_rows_warn_and_the_flow_stays_finite_off_the_data():
    rng = np.random.default_rng(0)
    # float32 flow and data explicitly (as without x64). The direction that 3 rows in 3-D do not span used to get
    # mixture components as narrow as its rounding noise (6e-11), which overflowed float32 to -inf off the data.
    x = rng.normal(size=(400, 3)).astype(np.float32)
    flow = gaussplug.build_flow(specs.gaussianization_flow(3, n_layers=2, n_components=4), dtype=jnp.float32)
    with pytest.warns(gaussplug.WarmStartWarning, match=r"fitting on 3 rows of 3-D data; they span at most 2"):
        fitted = gaussplug.warm_start(flow, x[:3], progress=False)
    lp = np.asarray(fitted.log_prob(x))
    assert lp.dtype == np.float32 and np.isfinite(lp).all()
    assert np.median(lp[3:]) < np.min(lp[:3])  # still a poor model off its 3 rows


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-12)], ids=["float32", "float64"])
def test_log_prob_of_a_row_does_not_depend_on_its_batch_after_a_fit_on_fewer_rows_than_dims(dtype, rtol):
    # Fitted on 8 rows of 12-D data, float32 log_prob(x[:1]) was -inf where log_prob(x)[0] was +398: components
    # as narrow as rounding noise turned the 1-ulp difference between matmul kernels for 1 and 700 rows into
    # thousands of scales. Measured now: up to 9e-6 (float32) and 1.2e-15 (float64) relative.
    rng = np.random.default_rng(0)
    with jax.enable_x64(dtype == np.float64):
        x = rng.standard_t(4, size=(700, 12)).astype(dtype)  # 700 rows: the mixture layers' large-batch path
        flow = gaussplug.build_flow(specs.gaussianization_flow(12, n_layers=3), dtype=dtype)
        with pytest.warns(gaussplug.WarmStartWarning, match="fitting on 8 rows of 12-D data"):
            flow = gaussplug.warm_start(flow, x[:8], progress=False)
        batch = np.asarray(flow.log_prob(x))
        one_by_one = np.array([np.asarray(flow.log_prob(x[i : i + 1]))[0] for i in range(10)])
        three = np.asarray(flow.log_prob(x[:3]))
    assert np.isfinite(batch).all()
    np.testing.assert_allclose(one_by_one, batch[:10], rtol=rtol)
    np.testing.assert_allclose(three, batch[:3], rtol=rtol)


def test_a_subsample_spanning_too_few_dimensions_keeps_every_row_finite():
    # 4 rows of 4-D data leave one direction without spread. Its components used to be as narrow as the rounding
    # noise, stretching every row outside the subsample by ~1e10 per layer: -inf after two blocks, with only warnings.
    x = np.random.default_rng(1).standard_t(4, size=(400, 4)).astype(np.float32)
    flow = gaussplug.build_flow(specs.gaussianization_flow(4, n_layers=2, n_components=4), dtype=jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gaussplug.WarmStartWarning)  # too few rows; lowered likelihoods
        warm = gaussplug.warm_start(flow, x, max_fit_samples=4, progress=False)
    h = gaussplug.warm_start_history(warm)
    assert h["n_fit_rows"] == 4 and np.isfinite(h["log_likelihood"]).all()
    assert np.isfinite(np.asarray(warm.log_prob(x))).all()


def test_a_layer_that_sends_rows_to_minus_inf_stops_the_warm_start(fresh_registry):
    # A family whose fit stretches by e^50 (as a standardiser would, fitted on a subsample in which a column is
    # constant): finite outputs whose squares overflow float32, so some rows' log-likelihood is -inf. The engine
    # used to warn that the layer lowered the likelihood to -inf and return the flow.
    def make(dim):
        s = hk.get_parameter("log_scale", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(shift=jnp.zeros(dim), log_scale=-s), 1)

    def fit(x, params, *, key):
        return {"~": {"log_scale": jnp.full_like(params["~"]["log_scale"], -50.0)}}

    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("stretch", make, fit=fit))

    gaussplug.register(Plugin(), name="stretch-plugin")
    x = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    spec = {"dim": 2, "layers": [{"family": "householder"}, {"family": "stretch"}]}
    flow = gaussplug.build_flow(spec, dtype=jnp.float32)  # float32 as without x64: 5e21 squared overflows
    pattern = r"Layer '1_stretch'.*expected a finite log-likelihood for every warm-start row.*subsample of 50 of"
    with pytest.raises(FitError, match=pattern):
        gaussplug.warm_start(flow, x, max_fit_samples=50, progress=False)
    with pytest.raises(FitError, match=r"went from -?\d.* to -inf: the layer maps some rows so far out"):
        gaussplug.warm_start(flow, x, progress=False)


def test_layers_that_lower_the_likelihood_warn_once_with_the_reason(fresh_registry):
    # Heavy tails fitted on a subsample: several layers lower the mean over all rows; one warning names them
    # all and says why (the subsample) and what to do, rather than one warning per layer.
    x = np.random.default_rng(0).standard_t(2, size=(5000, 3))
    flow = gaussplug.build_flow(specs.gaussianization_flow(3, n_layers=6))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warm = gaussplug.warm_start(flow, x, max_fit_samples=200, progress=False)
    lowered = [w for w in seen if "lowered the mean log-likelihood" in str(w.message)]
    assert len(lowered) == 1 and lowered[0].category is gaussplug.WarmStartWarning
    assert lowered[0].filename == __file__
    text = str(lowered[0].message)
    ll = warm.metadata["warm_start"]["log_likelihood"]
    assert sum(b < a - 1e-4 * (1 + abs(a)) for a, b in zip([np.nan, *ll], ll, strict=False)) >= 2  # several layers
    assert text.startswith("warm_start: ") and "fitted layers lowered" in text
    assert "subsample of 200 of the 5000 rows (max_fit_samples)" in text and "tail_weight" in text
    # All rows fitted: then the family's fit is at fault, and the message says so.
    _register("worse", Family("worse", _shift_maker(jnp.zeros),
                              fit=lambda x, p, *, key: {"~": {"shift": jnp.full(3, 5.0, p["~"]["shift"].dtype)}}))
    with pytest.warns(gaussplug.WarmStartWarning, match=r"a fitted layer lowered the mean log-likelihood of the "
                      r"rows \(per row, nats\): '0_worse' \(worse\) -\d+\.\d+ -> -\d+\.\d+\. Each fit saw all the "
                      r"rows, so the family's fit did worse"):  # fmt: skip
        gaussplug.warm_start(gaussplug.build_flow({"dim": 3, "layers": [{"family": "worse"}]}), x[:500],
                             progress=False)


def test_progress_bar_is_not_written_to_a_pipe(capsys, moons):
    # Like fine_tune's: on a terminal only, so logs and redirected stderr get no carriage-return lines.
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1))
    gaussplug.warm_start(flow, moons, progress=True)
    assert "warm start" not in capsys.readouterr().err


def test_a_constant_column_warns_and_ordinary_data_does_not():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=(300, 2)), np.full(300, 4.0)].astype(np.float32)
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(3, n_layers=1, n_components=2))
    with pytest.warns(gaussplug.WarmStartWarning, match=r"constant column\(s\) at column index 2 \(= 4\)") as seen:
        gaussplug.warm_start(flow, x, progress=False)
    assert seen[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", gaussplug.WarmStartWarning)
        gaussplug.warm_start(flow, x[:, [0, 1, 0]] + [0.0, 0.0, 1e-3] * rng.normal(size=(300, 3)), progress=False)


def test_a_column_near_the_rows_rounding_level_warns_unless_a_standardize_layer_comes_first():
    """A column of std 1e-6 beside one of std 1 was silently modelled as unit-width in float32 (the rotations mix
    in the wide column's rounding errors). The warning names the column; a standardize layer first removes it."""
    rng = np.random.default_rng(0)
    x = np.c_[1e-6 * rng.normal(size=500), rng.normal(size=500)]
    spec = gaussplug.specs.gaussianization_flow(2, n_layers=1, n_components=2)
    eps = np.finfo(np.dtype(gaussplug.build_flow(spec).dtype)).eps
    x[:, 0] *= eps / 1.19e-7  # the same ratio to eps in float32 and float64
    with pytest.warns(gaussplug.WarmStartWarning, match=r"warm_start: x's column index 0 \(std .*\) has a spread "
                      r"below 1000 float(32|64) eps of the rows' RMS norm \(\d\.\d+\)\. Rotations mix") as seen:
        gaussplug.fit_rbig(x, n_layers=1, n_components=2)
    assert seen[0].filename == __file__
    standardized = {"dim": 2, "layers": [{"family": "standardize"}, *spec["layers"]]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", gaussplug.WarmStartWarning)
        gaussplug.warm_start(gaussplug.build_flow(standardized), x, progress=False)
        gaussplug.warm_start(gaussplug.build_flow(spec), x * [1e3, 1.0], progress=False)  # 1e4 eps: wide enough


def test_constant_columns_reads_in_chunks_and_stops_early():
    from gaussplug._data import constant_columns

    x = np.ones((1000, 3))
    x[999, 0] = 2.0  # column 0 varies only in the last chunk
    np.testing.assert_array_equal(constant_columns(x, chunk=100), [1, 2])
    np.testing.assert_array_equal(constant_columns(x[:0]), np.zeros(0, np.int64))


def test_integer_data_warns_to_dequantise():
    x = np.random.default_rng(0).integers(0, 5, size=(200, 2))
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1, n_components=2))
    with pytest.warns(gaussplug.WarmStartWarning, match=r"x has an integer dtype, but a flow is a continuous density"):
        gaussplug.warm_start(flow, x, progress=False)
    for depth in ({"n_layers": 1}, {"n_layers": "auto", "max_layers": 2}):  # one warning, naming fit_rbig, here
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gaussplug.fit_rbig(x, n_components=2, **depth)
        discrete = [w for w in caught if "dequantisation noise" in str(w.message)]
        assert len(discrete) == 1 and str(discrete[0].message).startswith("fit_rbig: x has an integer dtype")
        assert discrete[0].filename == __file__


def test_float_columns_with_few_values_warn_once_at_the_callers_line():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=300), rng.integers(0, 2, 300).astype(float), rng.normal(size=300)])
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(3, n_layers=1, n_components=2))
    for call, name in [(lambda: gaussplug.warm_start(flow, x, progress=False), "warm_start"),
                       (lambda: gaussplug.fit_rbig(x, n_layers=1, n_components=2), "fit_rbig"),
                       (lambda: gaussplug.fit_rbig(x, n_layers="auto", n_components=2, max_layers=2), "fit_rbig")]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        found = [w for w in caught if "distinct values" in str(w.message)]
        assert len(found) == 1 and found[0].category is gaussplug.WarmStartWarning
        assert str(found[0].message).startswith(f"{name}: x: 1 of 3 columns take only a few distinct values "
                                                "(column index 1: 2 values (0, 1))")
        assert found[0].filename == __file__
    x[:, 1] += rng.uniform(size=300)  # dequantised
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gaussplug.fit_rbig(x, n_layers=1, n_components=2)
    assert not [w for w in caught if "distinct values" in str(w.message)]


def test_a_point_mass_warns_once_at_the_callers_line():
    from gaussplug._data_checks import point_mass_columns_message

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=400), np.where(rng.uniform(size=400) < 0.5, 0.0, rng.normal(size=400))])
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1, n_components=2))
    for call, name in [(lambda: gaussplug.warm_start(flow, x, progress=False), "warm_start"),
                       (lambda: gaussplug.fit_rbig(x, n_layers=1, n_components=2), "fit_rbig")]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        found = [w for w in caught if "single value" in str(w.message)]
        assert len(found) == 1 and found[0].category is gaussplug.WarmStartWarning and found[0].filename == __file__
        assert str(found[0].message).startswith(f"{name}: x: 1 of 2 columns put many rows on a single value "
                                                "(column index 1: 0 in ")
    # The thresholds: 5 % of the rows (and 10 rows) on one value; columns of few values are the discrete check's.
    y = rng.normal(size=(1000, 3))
    y[:49, 0] = 1.5  # 4.9 %: not flagged
    y[:50, 1] = -2.0  # 5 %: flagged
    y[:, 2] = rng.integers(0, 3, 1000)  # discrete: not this check's
    message = point_mass_columns_message(y, "y")
    assert message.startswith("y: 1 of 3 columns put many rows on a single value (column index 1: -2 in 50 of "
                              "1000 rows (5 %))")
    assert point_mass_columns_message(rng.normal(size=(150, 2)), "z") is None  # continuous: silent
    from sklearn.datasets import load_iris, load_wine

    for table in (load_iris().data, load_wine().data):  # rounded measurements repeat many values alike: silent
        assert point_mass_columns_message(table, "t") is None
    offset = 1e6 + 0.5 * rng.normal(size=(1000, 1))  # repeats only once rounded to float32: not a point mass
    assert point_mass_columns_message(offset, "o") is None
    pm = np.where(rng.uniform(size=(400, 1)) < 0.3, 1.2345, rng.normal(size=(400, 1)))
    assert "(column index 0: 1.2345 in " in point_mass_columns_message(pm, "p")  # the value as given
    small = rng.normal(size=(60, 1))
    small[:9, 0] = 0.0  # 15 % but 9 rows: under the 10-row floor
    assert point_mass_columns_message(small, "s") is None


def test_a_layer_mapping_rows_to_nan_is_named_with_the_rows(fresh_registry, monkeypatch):
    def make(dim):
        hk.get_parameter("b", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.Lambda(lambda x: jnp.where(x > 1.5, jnp.nan, x)), 1)

    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("nan_above", make, fit=lambda x, params, *, key: params))

    gaussplug.register(Plugin(), name="nan-plugin")
    x = np.random.default_rng(0).normal(size=(3000, 2)).astype(np.float32)
    bad = np.flatnonzero((x > 1.5).any(axis=1))
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "nan_above"}]})
    monkeypatch.setattr(gaussplug._warm_data._OneDevice, "_rows", lambda self: 1000)  # three chunks: count them all
    with pytest.raises(FitError, match=rf"Layer '0_nan_above' \(family 'nan_above', plugin 'nan-plugin'\) maps the "
                       rf"warm-start data to NaN/inf \({bad.size} of 3000 rows, first: row index {bad[0]}\); its fit"):
        gaussplug.warm_start(flow, x, progress=False)


def test_warm_start_drops_a_stale_fine_tune_summary_and_keeps_other_metadata(data):
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(data.shape[1], n_layers=1, n_components=2))
    tagged = flow.replace(metadata={"fine_tune": {"steps_run": 50}, "note": "mine"})
    warm = gaussplug.warm_start(tagged, data, progress=False)
    assert "fine_tune" not in warm.metadata and warm.metadata["note"] == "mine" and "warm_start" in warm.metadata


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_fit_rbig_at_scales_whose_squares_leave_float32(scale):
    # Inside float32's range, but their squares are not: before, 1e20 gave a FitError blaming the mixture plugin
    # (NaN params) after numpy overflow warnings, and 1e-30 columns were fitted as constant.
    x = np.random.default_rng(0).normal(size=(1000, 2)).astype(np.float32)
    ref = gaussplug.fit_rbig(x, n_layers=2, n_components=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from overflowing squares, no WarmStartWarning
        scaled = gaussplug.fit_rbig(x * np.float32(scale), n_layers=2, n_components=3)
    shift = 2 * np.log(scale)  # log p_s(s x) = log p(x) - 2 log s
    np.testing.assert_allclose(np.asarray(scaled.log_prob(x * np.float32(scale))) + shift,
                               np.asarray(ref.log_prob(x)), atol=0.05)
    history = gaussplug.warm_start_history(scaled)
    # Before the first marginal layer, N(0, I) scores the rows as flow.log_prob does in float32: at 1e20, -0.5 |x|^2
    # is beyond float32's range, so -inf (no overflow warning); at 1e-30, finite.
    before = (history["initial_log_likelihood"], history["log_likelihood"][0])
    assert before == (-np.inf, -np.inf) if scale > 1 else np.all(np.isfinite(before))
    np.testing.assert_allclose(np.asarray(history["log_likelihood"][1:]) + shift,  # past the first marginal layer
                               gaussplug.warm_start_history(ref)["log_likelihood"][1:], atol=0.05)


def test_history_of_a_float64_flow_on_float32_data_sums_log_dets_in_float64():
    # Narrow float32 data, standardised by the first layer: the log-dets are large (about 14 nats per dim)
    # and must be summed in float64, or the record is off from log_prob by float32 rounding (1.8e-6 before).
    rng = np.random.default_rng(0)
    x = (rng.standard_t(4, size=(500, 3)) * 1e-6 + 3.0).astype(np.float32)
    spec = gaussplug.specs.gaussianization_flow(3, n_layers=2, n_components=3)
    spec["layers"].insert(0, {"family": "standardize"})
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", gaussplug.WarmStartWarning)
        flow = gaussplug.warm_start(gaussplug.build_flow(spec), x, progress=False)
        assert flow.dtype == np.float64
        recorded = gaussplug.warm_start_history(flow)["log_likelihood"][-1]
        assert abs(recorded - float(np.mean(flow.log_prob(x)))) < 1e-9


def test_warm_start_on_another_row_count_in_the_same_bucket_compiles_nothing_new(monkeypatch):
    from gaussplug import _buckets, _mixture_em

    rng = np.random.default_rng(3)
    x = np.stack([rng.gamma(2.0, 1.0, 3000), rng.standard_t(4, 3000), rng.normal(size=3000)], 1).astype(np.float32)
    flow = gaussplug.build_flow(specs.gaussianization_flow(3, n_layers=2, n_components=4))
    gaussplug.warm_start(flow, x[:3000], progress=False)  # 3000 rows: a bucket of 3072
    jits = [f for pair in flow.runtime._layer_jits.values() for f in pair] + [_mixture_em._fit_em_bucket]
    sizes = [f._cache_size() for f in jits]
    padded = gaussplug.warm_start(flow, x[:2900], progress=False)  # the same bucket
    assert [f._cache_size() for f in jits] == sizes
    monkeypatch.setattr(_buckets, "ENABLED", False)  # unpadded: the same fit up to the EM's tolerance
    exact = gaussplug.warm_start(flow, x[:2900], progress=False)
    hp, he = padded.metadata["warm_start"], exact.metadata["warm_start"]
    np.testing.assert_allclose(hp["log_likelihood"], he["log_likelihood"], atol=1e-4)
    np.testing.assert_allclose(padded.log_prob(x), exact.log_prob(x), atol=2e-3)
