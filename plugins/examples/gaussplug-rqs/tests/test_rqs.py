"""Tests for the ``rqs_spline`` example plugin.

Run from the plugin's folder: ``PYTHONPATH=. python -m pytest tests -q``.
"""

import warnings

import distrax
import gaussplug
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug_rqs
from gaussplug_rqs import FAMILY, RQSplineBijector, fit_rqs_spline, raw_spline_params, validate

BOUND = 5.0


def init(dim, key=0, **opts):
    return hk.transform(lambda: FAMILY.make_bijector(dim, **opts)).init(jax.random.PRNGKey(key))


def forward(dim, **opts):
    return hk.without_apply_rng(
        hk.transform(lambda x: FAMILY.make_bijector(dim, **opts).forward_and_log_det(x))
    ).apply


def inverse(dim, **opts):
    return hk.without_apply_rng(
        hk.transform(lambda y: FAMILY.make_bijector(dim, **opts).inverse_and_log_det(y))
    ).apply


def random_params(dim, bins=8, seed=0, scale=1.0, dtype=None):
    """A clearly non-identity spline: raw params drawn from N(0, scale^2)."""
    params = init(dim, bins=bins)
    leaf = params["~"]["spline_params"]
    noise = jax.random.normal(jax.random.PRNGKey(seed), leaf.shape, dtype or leaf.dtype)
    return {"~": {"spline_params": scale * noise}}


def points(shape, seed=1, dtype=np.float32):
    """Points inside and outside [-BOUND, BOUND]."""
    return (np.random.default_rng(seed).normal(size=shape) * 3.0).astype(dtype)


def mean_loglik(params, x, **opts):
    """Mean standard-normal log-likelihood of ``x`` after the layer (log-det included)."""
    y, log_det = forward(x.shape[-1], **opts)(params, x)
    return float(jnp.mean(-0.5 * jnp.sum(y**2, -1) + log_det))


def per_dim_loglik(params, x, **opts):
    """Per-dimension version of :func:`mean_loglik`, via the elementwise spline."""
    dim = x.shape[-1]
    spline = RQSplineBijector(dim, params["~"]["spline_params"], opts.get("bound", BOUND)).spline
    y, log_det = spline.forward_and_log_det(jnp.asarray(x))
    return np.asarray(jnp.mean(-0.5 * y**2 + log_det, axis=0))


def skewed_bimodal(n, seed=0, dtype=np.float32):
    """Column 0: standardized log-normal; column 1: two well-separated modes."""
    rng = np.random.default_rng(seed)
    skew = (rng.lognormal(size=n) - np.exp(0.5)) / np.sqrt((np.e - 1) * np.e)
    modes = np.where(rng.random(n) < 0.5, -1.0, 1.0) + 0.3 * rng.normal(size=n)
    return np.stack([skew, modes], axis=1).astype(dtype)


# -- the family record and its plugin hook ------------------------------------------


def test_family_record():
    assert FAMILY.name == "rqs_spline"
    assert FAMILY.options == {"bins": 8, "bound": 5.0}
    assert FAMILY.fit is fit_rqs_spline
    assert FAMILY.validate is validate
    assert "spline" in FAMILY.doc
    assert gaussplug_rqs.__version__ == "0.1.0"


def test_hookimpl_registers_family():
    got = []
    gaussplug_rqs.gaussplug_register_families(register=got.append)
    assert got == [FAMILY]


@pytest.mark.parametrize(("bins", "dim"), [(8, 3), (2, 1), (5, 4)])
def test_param_shapes_and_dtype(bins, dim):
    params = init(dim, bins=bins)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == {
        "~": {"spline_params": ((dim, 3 * bins + 1), jnp.float32)}
    }
    assert not np.any(params["~"]["spline_params"])


def test_default_init_is_identity():
    x = points((50, 3))
    y, log_det = forward(3)(init(3), x)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


# -- the bijector ----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [(), (7,), (3, 4)])
def test_round_trip(batch):
    dim = 3
    params = random_params(dim)
    x = points(batch + (dim,))
    y, fwd_log_det = forward(dim)(params, x)
    x_back, inv_log_det = inverse(dim)(params, y)
    assert y.shape == x.shape and fwd_log_det.shape == batch
    assert not np.allclose(y, x, atol=1e-2)
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    np.testing.assert_allclose(inv_log_det, -fwd_log_det, atol=1e-4)


def test_log_det_matches_jacobian():
    dim = 4
    params = random_params(dim, scale=0.7)
    apply = forward(dim)
    for x in points((5, dim), seed=3):
        jac = jax.jacobian(lambda v: apply(params, v)[0])(jnp.asarray(x))
        np.testing.assert_allclose(jac, np.diag(np.diag(jac)), atol=1e-6)
        sign, logabsdet = np.linalg.slogdet(np.asarray(jac, np.float64))
        assert sign > 0  # monotone increasing in every coordinate
        np.testing.assert_allclose(apply(params, x)[1], logabsdet, rtol=1e-4, atol=1e-4)


def test_batch_axes_match_flattened_rows():
    dim = 2
    params = random_params(dim)
    x = points((2, 3, 5, dim))
    y, log_det = forward(dim)(params, x)
    y_flat, log_det_flat = forward(dim)(params, x.reshape(-1, dim))
    np.testing.assert_allclose(y.reshape(-1, dim), y_flat, atol=1e-6)
    np.testing.assert_allclose(log_det.reshape(-1), log_det_flat, atol=1e-6)


def test_identity_outside_the_box():
    dim = 2
    params = random_params(dim, scale=2.0)
    x = np.array([[-7.0, 6.0], [5.5, -100.0]], np.float32)
    y, log_det = forward(dim)(params, x)
    np.testing.assert_allclose(y, x, rtol=1e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)


def test_dimensions_are_independent():
    params = random_params(3)
    x = points((4, 3))
    x2 = x.copy()
    x2[:, 1] += 0.5
    y, y2 = forward(3)(params, x)[0], forward(3)(params, x2)[0]
    np.testing.assert_allclose(np.delete(y, 1, axis=1), np.delete(y2, 1, axis=1))


def test_jit_and_grad_are_finite():
    dim = 3
    params = random_params(dim)
    x = points((16, dim))
    apply = jax.jit(forward(dim))
    y, _ = apply(params, x)
    np.testing.assert_allclose(y, forward(dim)(params, x)[0], rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: -jnp.mean(apply(p, x)[1] - 0.5 * jnp.sum(apply(p, x)[0] ** 2, -1)))(params)
    assert np.all(np.isfinite(grads["~"]["spline_params"]))


def test_float64():
    with jax.enable_x64(True):
        dim = 3
        params = random_params(dim)
        assert params["~"]["spline_params"].dtype == jnp.float64
        x = points((20, dim), dtype=np.float64)
        y, log_det = forward(dim)(params, x)
        assert y.dtype == jnp.float64 and log_det.dtype == jnp.float64
        x_back, inv_log_det = inverse(dim)(params, y)
        np.testing.assert_allclose(x_back, x, atol=1e-10)
        np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-10)
        fitted = fit_rqs_spline(skewed_bimodal(300, dtype=np.float64), init(2), key=0)
        assert fitted["~"]["spline_params"].dtype == jnp.float64


def test_wrong_event_size_is_a_data_error():
    with pytest.raises(
        gaussplug.DataError, match=r"expected input of shape \(\.\.\., 3\); got shape \(4, 2\)"
    ):
        forward(3)(init(3), np.zeros((4, 2), np.float32))


def test_bijector_rejects_bad_params_shape():
    with pytest.raises(
        ValueError, match=r"expected params of shape \(3, 3 \* bins \+ 1\).*got shape \(3, 24\)"
    ):
        RQSplineBijector(3, jnp.zeros((3, 24)), BOUND)


def test_is_a_vector_bijector():
    bij = RQSplineBijector(2, jnp.zeros((2, 25)), BOUND)
    assert isinstance(bij, gaussplug.VectorBijector)
    assert bij.event_ndims_in == 1 and bij.bins == 8 and bij.bound == BOUND
    assert bij.same_as(bij) and not bij.same_as(RQSplineBijector(2, jnp.zeros((2, 25)), BOUND))


# -- the inverse parameterisation -------------------------------------------------------


def test_raw_spline_params_reproduce_knots_and_slopes():
    with jax.enable_x64(True):
        xs = np.array([-BOUND, -2.0, -0.5, 0.1, 1.7, BOUND])
        ys = np.array([-BOUND, -1.0, -0.9, 0.6, 3.0, BOUND])
        slopes = np.array([1.0, 0.4, 2.5, 1e-3, 7.0, 1.0])
        raw = raw_spline_params(xs, ys, slopes, bound=BOUND)
        spline = RQSplineBijector(1, jnp.asarray(raw[None]), BOUND).spline
        np.testing.assert_allclose(spline.x_pos[0], xs, atol=1e-12)
        np.testing.assert_allclose(spline.y_pos[0], ys, atol=1e-12)
        np.testing.assert_allclose(spline.knot_slopes[0], slopes, rtol=1e-10)
        assert isinstance(spline, distrax.RationalQuadraticSpline)


# -- the greedy fit ------------------------------------------------------------------------


def test_fit_improves_loglik_on_skewed_and_bimodal_data():
    train, test = skewed_bimodal(2000, seed=0), skewed_bimodal(2000, seed=1)
    params = init(2)
    fitted = fit_rqs_spline(train, params, key=jax.random.PRNGKey(0), bins=8, bound=BOUND)
    for data in (train, test):
        before, after = per_dim_loglik(params, data), per_dim_loglik(fitted, data)
        assert np.all(after > before + 0.2), (before, after)
        assert mean_loglik(fitted, data) > mean_loglik(params, data) + 0.5


@pytest.mark.parametrize("seed", range(3))
def test_fit_never_lowers_training_loglik_per_dimension(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 400))
    x = np.stack(
        [rng.normal(size=n), rng.standard_t(2, size=n), rng.integers(0, 3, n), rng.uniform(-6, 6, n)], axis=1
    ).astype(np.float32)
    params = init(4, bins=6)
    fitted = fit_rqs_spline(x, params, key=0, bins=6)
    gain = per_dim_loglik(fitted, x, bins=6) - per_dim_loglik(params, x, bins=6)
    assert np.all(gain >= -1e-6), gain


def test_fit_is_pure_and_deterministic():
    x = skewed_bimodal(500)
    x_copy = x.copy()
    params = random_params(2)
    leaf = np.array(params["~"]["spline_params"])
    a = fit_rqs_spline(x, params, key=jax.random.PRNGKey(0))
    b = fit_rqs_spline(jnp.asarray(x), params, key=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a["~"]["spline_params"], b["~"]["spline_params"])
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(params["~"]["spline_params"], leaf)
    assert a is not params and a["~"] is not params["~"]
    assert jax.tree.map(lambda v: (v.shape, v.dtype), a) == jax.tree.map(lambda v: (v.shape, v.dtype), params)


@pytest.mark.parametrize(
    "x",
    [
        np.full((100, 2), 1.5),  # constant columns
        np.zeros((100, 2)),  # constant at the centre
        np.array([[0.3, -2.0]]),  # a single row
        np.array([[0.3, -2.0], [0.3, 4.0]]),  # two rows, one column constant
        np.full((50, 2), 40.0) + np.arange(50)[:, None],  # all outside the box
        np.repeat([[-1.0, 0.0], [2.0, 1.0]], 30, axis=0),  # two point masses
        np.array([[1e-30, -1e30]] * 3 + [[0.0, 1e30]] * 3),  # extreme values
    ],
)
def test_fit_degenerate_data_is_finite_and_not_worse(x):
    params = init(2)
    fitted = fit_rqs_spline(x, params, key=0)
    leaf = fitted["~"]["spline_params"]
    assert leaf.shape == (2, 25) and leaf.dtype == jnp.float32
    assert np.all(np.isfinite(leaf))
    x32 = x.astype(np.float32)
    if np.all(np.abs(x32) < 1e6):
        assert np.all(per_dim_loglik(fitted, x32) >= per_dim_loglik(params, x32) - 1e-6)


def test_fit_keeps_identity_where_nothing_can_be_gained():
    x = np.stack([np.linspace(20, 30, 64), np.zeros(64)], axis=1)  # outside the box / at its centre
    fitted = fit_rqs_spline(x, init(2), key=0)
    np.testing.assert_array_equal(fitted["~"]["spline_params"], 0.0)


def test_fit_rejects_bad_data_and_mismatched_bins():
    params = init(2)
    with pytest.raises(
        gaussplug.DataError, match=r"expected data of shape \(n >= 1, 2\); got shape \(5, 3\)"
    ):
        fit_rqs_spline(np.zeros((5, 3)), params, key=0)
    with pytest.raises(gaussplug.DataError, match="expected finite data; got 1 non-finite"):
        fit_rqs_spline(np.array([[0.0, np.nan], [1.0, 2.0]]), params, key=0)
    with pytest.raises(ValueError, match="imply bins=8; got bins=4"):
        fit_rqs_spline(np.zeros((5, 2)), params, key=0, bins=4)


# -- option validation -----------------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 0, -3, 2.0, True, "8", None])
def test_validate_rejects_bad_bins(bins):
    with pytest.raises(ValueError, match=rf"'bins' must be an int >= 2; got {repr(bins)}"):
        validate(2, {"bins": bins, "bound": BOUND})


@pytest.mark.parametrize("bound", [0, -1.0, float("inf"), float("nan"), True, "5", None])
def test_validate_rejects_bad_bound(bound):
    with pytest.raises(ValueError, match="'bound' must be a finite number > 0"):
        validate(2, {"bins": 8, "bound": bound})


def test_validate_rejects_bins_that_do_not_fit():
    with pytest.raises(ValueError, match=r"expected bound > 0\.0005, got bound=0\.0001"):
        validate(1, {"bins": 10, "bound": 1e-4})


@pytest.mark.parametrize(
    "opts", [{"bins": 2, "bound": 0.5}, {"bins": np.int64(16), "bound": 3}, FAMILY.options]
)
def test_validate_accepts_good_options(opts):
    validate(3, opts)


# -- inside gaussplug ---------------------------------------------------------------------------


@pytest.fixture
def registry():
    reg = gaussplug.Registry(load_entry_points=False, default_plugins=())
    reg.register(gaussplug_rqs, name="rqs_spline")
    return reg


def test_registered_at_run_time_builds_and_warm_starts_a_flow(registry):
    info = registry.families()["rqs_spline"]
    assert info.version == "0.1.0" and info.options == {"bins": 8, "bound": 5.0}
    spec = {"dim": 2, "layers": [{"family": "rqs_spline", "bins": 6}, {"family": "rqs_spline", "bound": 4}]}
    flow = gaussplug.build_flow(spec, registry=registry)
    assert flow.layer_names == ("0_rqs_spline", "1_rqs_spline")
    x = skewed_bimodal(1000)
    fitted = gaussplug.warm_start(flow, x, progress=False)
    assert fitted.registry is registry
    assert float(jnp.mean(fitted.log_prob(x))) > float(jnp.mean(flow.log_prob(x))) + 0.5
    np.testing.assert_allclose(fitted.inverse(fitted.forward(x)), x, atol=1e-4)
    assert fitted.sample(0, 5).shape == (5, 2)


def test_bad_option_is_a_spec_error(registry):
    with pytest.raises(gaussplug.SpecError, match="'bins' must be an int >= 2; got 1"):
        gaussplug.build_flow({"dim": 2, "layers": [{"family": "rqs_spline", "bins": 1}]}, registry=registry)


def test_gaussplug_conformance_suite():
    from gaussplug.testing import check_family  # fails, never skips, where the kit is missing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gaussplug.GaussplugPluginWarning)
        check_family(FAMILY)
