"""Tests for the ``mixture_cdf_coupling`` family."""

import functools
import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import mixture_cdf_coupling as coupling

import gaussplug
from gaussplug._mixture import fit_mixture, flatten_mixture_params, gaussianize

FAMILY = coupling.FAMILY
DIM, K, HIDDEN = 3, 3, (8,)
KEY = jax.random.PRNGKey(0)
LAST = "conditioner/~/linear_1"
DEFAULT = jax.dtypes.canonicalize_dtype(jnp.float64)  # params' dtype: float32 unless x64 is on


def _opts(**opts):
    """Hashable, fully resolved small options (odd dim, one hidden layer)."""
    opts = {**FAMILY.options, "hidden": HIDDEN, "components": K, **opts}
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in opts.items()))


@functools.cache
def _transformed(what, dim, opts):
    opts = dict(opts)
    if what == "init":
        return jax.jit(hk.transform(lambda: FAMILY.make_bijector(dim, **opts)).init)
    layer = hk.transform(lambda x: getattr(FAMILY.make_bijector(dim, **opts), what)(x))
    return jax.jit(hk.without_apply_rng(layer).apply)


def init(dim=DIM, **opts):
    return _transformed("init", dim, _opts(**opts))(KEY)


def forward(dim=DIM, **opts):
    return _transformed("forward_and_log_det", dim, _opts(**opts))


def inverse(dim=DIM, **opts):
    return _transformed("inverse_and_log_det", dim, _opts(**opts))


def perturbed(params, scale=0.1, seed=3):
    """Params with a small random final layer, so the conditioner really depends on x_cond."""
    rng = np.random.default_rng(seed)
    noisy = jax.tree.map(lambda a: a + jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), params[LAST])
    return {**params, LAST: noisy}


def data(n=400, seed=1, dim=DIM):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = np.where(rng.random(n) < 0.4, -2.0, 1.5) + 0.5 * rng.normal(size=n) + 0.3 * a
    c = rng.gamma(2.0, 1.0, n) - 2.0 + 0.2 * a * b
    return np.column_stack([a, b, c][:dim]).astype(np.float32)


def loglik(params, x, **opts):
    y, ld = forward(x.shape[-1], **opts)(params, x)
    return float(jnp.mean(-0.5 * jnp.sum(y**2 + jnp.log(2 * jnp.pi), axis=-1) + ld))


def test_split_dims():
    as_lists = lambda *a, **k: [s.tolist() for s in coupling.split_dims(*a, **k)]
    assert as_lists(3, "half") == [[0], [1, 2]]
    assert as_lists(4, "half") == [[0, 1], [2, 3]]
    assert as_lists(3, "half", flip=True) == [[1, 2], [0]]
    assert as_lists(5, "alternate") == [[0, 2, 4], [1, 3]]
    assert as_lists(5, [3, 1]) == [[1, 3], [0, 2, 4]]
    assert as_lists(2, "alternate", None) == as_lists(2, "alternate", False) == [[0], [1]]


def test_resolve_alternates_flip():
    flips = [FAMILY.resolve({**FAMILY.options}, i)["flip"] for i in range(4)]
    assert flips == [False, True, False, True]
    assert FAMILY.resolve({**FAMILY.options, "flip": True}, 0)["flip"] is True
    assert FAMILY.options["flip"] is None  # resolve does not mutate its input


def test_default_init_is_eager_and_near_identity():
    params = init()
    assert set(params) == {"conditioner/~/linear_0", LAST}
    assert params["conditioner/~/linear_0"]["w"].shape == (1, 8)
    assert params[LAST]["w"].shape == (8, 2 * 3 * K) and params[LAST]["b"].shape == (2 * 3 * K,)
    np.testing.assert_array_equal(params[LAST]["b"], 0.0)
    x = data(50)
    y, _ = forward()(params, x)
    np.testing.assert_array_equal(y[:, 0], x[:, 0])
    assert float(jnp.max(jnp.abs(y - x))) < 3.0  # near the identity, not far from it
    zero = {**params, LAST: jax.tree.map(jnp.zeros_like, params[LAST])}
    y0, ld0 = forward()(zero, x)
    np.testing.assert_allclose(y0, x, atol=1e-5)
    np.testing.assert_allclose(ld0, 0.0, atol=1e-5)


@pytest.mark.parametrize("sizes", [(16, 16, 6), (6,)])
def test_conditioner_is_an_mlp_with_spread_first_layer_biases(sizes):
    net = hk.transform(lambda x: coupling.Conditioner(sizes, name="conditioner")(x))
    ref = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP(sizes, name="conditioner")(x)))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 2)), jnp.float32)
    params = net.init(KEY, x)
    assert sorted(params) == [f"conditioner/~/linear_{i}" for i in range(len(sizes))]  # hk.nets.MLP's names
    np.testing.assert_allclose(net.apply(params, None, x), ref.apply(params, x), rtol=1e-6, atol=1e-6)
    first = params["conditioner/~/linear_0"]["b"]
    rest = [params[f"conditioner/~/linear_{i}"]["b"] for i in range(1, len(sizes))]
    if len(sizes) > 1:
        assert 0.5 < float(jnp.std(first)) < 1.5  # N(0, 1): the first layer's kinks spread over the inputs
        for b in rest:
            np.testing.assert_array_equal(b, 0.0)
    else:
        np.testing.assert_array_equal(first, 0.0)  # a single layer is the output layer: zero bias


def test_conditioner_features_are_not_all_kinked_at_the_origin():
    # One conditioning coordinate: with zero biases every hidden unit would be a multiple of relu(x) or relu(-x).
    net = hk.transform(lambda x: coupling.Conditioner((32, 32, 4), name="conditioner")(x))
    x = jnp.linspace(-2, 2, 401)[:, None]
    params = net.init(KEY, x)
    hidden = jax.nn.relu(x @ params["conditioner/~/linear_0"]["w"] + params["conditioner/~/linear_0"]["b"])
    kinks = -params["conditioner/~/linear_0"]["b"] / params["conditioner/~/linear_0"]["w"][0]
    assert np.sum(np.abs(np.asarray(kinks)) < 2) >= 8 and np.linalg.matrix_rank(np.asarray(hidden), tol=1e-3) > 4


@pytest.mark.parametrize("batch", [(6,), (2, 3)])
def test_round_trip_shapes_and_conditioning_dims_pass_through(batch):
    params = perturbed(init())
    x = np.random.default_rng(2).normal(scale=2.0, size=(*batch, DIM)).astype(np.float32)
    y, ld = forward()(params, x)
    assert y.shape == x.shape and ld.shape == batch
    np.testing.assert_array_equal(y[..., 0], x[..., 0])
    x2, ild = inverse()(params, y)
    # x is only as well determined as dx/dy allows (float32 inputs, flat CDF stretches): compare loosely in x,
    # tightly in y.
    np.testing.assert_allclose(x2, x, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ild, -ld, rtol=1e-4, atol=1e-4)
    y2, _ = forward()(params, x2)
    np.testing.assert_allclose(y2, y, rtol=1e-5, atol=1e-5)


def test_log_det_matches_jacobian():
    params = perturbed(init())
    x = jnp.asarray(data(5))
    jac = jax.vmap(jax.jacobian(lambda v: forward()(params, v)[0]))(x)
    _, ld = forward()(params, x)
    np.testing.assert_allclose(jnp.linalg.slogdet(jac)[1], ld, atol=2e-4)
    np.testing.assert_array_equal(jac[:, 0, 1:], 0.0)  # triangular: y_cond does not depend on x_trans


def test_jit_vmap_and_grad():
    params, x = perturbed(init()), jnp.asarray(data(6))
    y, ld = forward()(params, x)
    yv, ldv = jax.vmap(forward(), in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(yv, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ldv, ld, rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda p: jnp.mean(ld_and_y(p, x)))(params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))
    assert float(jnp.max(jnp.abs(g["conditioner/~/linear_0"]["w"]))) > 0  # the conditioner is trained


def ld_and_y(params, x):
    y, ld = forward()(params, x)
    return ld - 0.5 * jnp.sum(y**2, axis=-1)


def test_float64():
    with jax.enable_x64(True):
        params = init()
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(params))
        params = perturbed(params)
        x = jnp.asarray(data(6), jnp.float64)
        y, ld = forward()(params, x)
        assert y.dtype == ld.dtype == jnp.float64
        x2, ild = inverse()(params, y)
        np.testing.assert_allclose(x2, x, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ild, -ld, atol=1e-10)


def test_fit_zero_kernel_contract_and_likelihood_gain():
    x = data()
    x_t = x[:, 1:].astype(DEFAULT)  # the reference runs in the params' dtype, as the fit and the layer do
    default = init()
    fitted = FAMILY.fit(x, default, key=KEY, **dict(_opts()))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), fitted) == jax.tree.map(lambda a: (a.shape, a.dtype), default)
    np.testing.assert_array_equal(fitted[LAST]["w"], 0.0)
    np.testing.assert_array_equal(fitted[LAST]["b"], flatten_mixture_params(*fit_mixture(x_t, K)))
    jax.tree.map(np.testing.assert_array_equal, fitted["conditioner/~/linear_0"], default["conditioner/~/linear_0"])
    # The fitted layer is exactly the diagonal mixture-CDF map of the transformed dims.
    y, ld = forward()(fitted, x)
    y_t, ld_t = gaussianize(x_t, *fit_mixture(x_t, K))
    assert y.dtype == y_t.dtype == DEFAULT
    np.testing.assert_array_equal(y[:, 1:], y_t)
    np.testing.assert_allclose(ld, jnp.sum(ld_t, axis=-1), rtol=1e-6, atol=1e-6)
    identity = {**default, LAST: jax.tree.map(jnp.zeros_like, default[LAST])}
    assert loglik(fitted, x) > loglik(identity, x) + 0.3 and loglik(fitted, x) > loglik(default, x)


def test_tail_weight_fitted_layer_is_the_diagonal_map_with_the_same_tail_weight():
    from gaussplug._mixture import with_tail_weight

    x, w = data(), 0.05
    x_t = x[:, 1:].astype(DEFAULT)  # the reference runs in the params' dtype, as the fit and the layer do
    fitted = FAMILY.fit(x, init(tail_weight=w), key=KEY, **dict(_opts(tail_weight=w)))
    np.testing.assert_array_equal(fitted[LAST]["w"], 0.0)
    y, ld = forward(tail_weight=w)(fitted, x)
    y_t, ld_t = gaussianize(x_t, *with_tail_weight(*fit_mixture(x_t, K), w))
    assert y.dtype == y_t.dtype == DEFAULT
    np.testing.assert_array_equal(y[:, 1:], y_t)
    np.testing.assert_allclose(ld, jnp.sum(ld_t, axis=-1), rtol=1e-6, atol=1e-6)
    y0, _ = forward()(fitted, x)  # the same params without the N(0, 1) component differ
    assert np.max(np.abs(np.asarray(y0) - np.asarray(y))) > 1e-3
    # Round trip with a conditioner that depends on x_cond.
    params = perturbed(fitted)
    y, _ = forward(tail_weight=w)(params, x)
    np.testing.assert_allclose(inverse(tail_weight=w)(params, y)[0], x, rtol=1e-4, atol=1e-4)


def test_tail_weight_conforms():
    from gaussplug.testing import check_family

    opts = {"hidden": (8,), "components": 3, "tail_weight": 0.02}
    report = check_family(FAMILY, dims=(3,), options=opts)
    assert report.passed and not report.failed


def test_flipped_layer_fits_the_other_dims():
    x = data()
    opts = dict(_opts(flip=True))
    fitted = FAMILY.fit(x, init(flip=True), key=KEY, **opts)
    reference = fit_mixture(x[:, :1].astype(DEFAULT), K)  # in the params' dtype, as the fit runs
    np.testing.assert_array_equal(fitted[LAST]["b"], flatten_mixture_params(*reference))
    y, _ = forward(flip=True)(fitted, x)
    np.testing.assert_array_equal(y[:, 1:], x[:, 1:])


def test_explicit_mask_and_even_dim():
    x = np.column_stack([data(), data(seed=5)[:, :1]])  # dim 4
    opts = {"mask": [1, 3]}
    params = perturbed(init(4, **opts))
    y, ld = forward(4, **opts)(params, x)
    np.testing.assert_array_equal(y[:, [1, 3]], x[:, [1, 3]])
    x2, _ = inverse(4, **opts)(params, y)
    np.testing.assert_allclose(x2, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dim, opts, match",
    [
        (3, {"mask": [0, 3]}, r"indices must lie in \[0, 3\); got \[3\]"),
        (3, {"mask": [0, 0]}, r"duplicate indices; got \[0, 0\]"),
        (3, {"mask": []}, r"at least one coordinate to condition on and one to transform"),
        (3, {"mask": [0, 1, 2]}, r"at least one coordinate to condition on and one to transform"),
        (3, {"mask": "random"}, r"'mask' must be one of \('half', 'alternate'\)"),
        (3, {"mask": [0.5]}, r"'mask' must be a list of ints"),
        (3, {"flip": "yes"}, r"'flip' must be None or a bool; got 'yes'"),
        (3, {"hidden": (0,)}, r"'hidden' must be a sequence of positive ints"),
        (3, {"hidden": "64"}, r"'hidden' must be a sequence of positive ints"),
        (3, {"components": 0}, r"'components' must be a positive int; got 0"),
        (3, {"components": 257}, r"'components' must be at most 256 per dimension .*; got 257"),
        (3, {"tail_weight": 1.0}, r"'tail_weight' must be a number in \[0, 1\) .*; got 1.0"),
        (3, {"tail_weight": float("nan")}, r"'tail_weight' must be a number in \[0, 1\) .*; got nan"),
        (1, {}, r"needs dim >= 2"),
    ],
)
def test_validate_rejects_bad_options(dim, opts, match):
    with pytest.raises(ValueError, match=match):
        FAMILY.validate(dim, {**FAMILY.options, **opts})


def test_family_record_and_hookimpl():
    assert FAMILY.name == "mixture_cdf_coupling" and FAMILY.min_dim == 2
    assert FAMILY.options == {"mask": "half", "flip": None, "hidden": [64, 64], "components": 8, "tail_weight": 0.0}
    seen = []
    coupling.gaussplug_register_families(seen.append)
    assert seen == [FAMILY]


def test_far_conditioning_values_give_finite_results_not_nan():
    # The ReLU conditioner extrapolates linearly: at |x_cond| ~ 1e3 a fresh layer's raw log-scales reach
    # hundreds, whose exponential overflows, and logits thousands apart, whose weights underflow to 0 (losing
    # their tails); log-scales are clipped to +-LOG_SCALE_BOUND and logits to LOGIT_SPREAD below the largest.
    layer = {"dim": 2, "layers": [{"family": "mixture_cdf_coupling"}]}
    flow = gaussplug.build_flow(layer, key=0)
    pts = np.array([[1e2, 0.0], [1e3, 0.0], [1e4, -3.0], [-1e3, 0.0], [0.0, 1e3], [-1e4, 2.0], [1e6, -3.0],
                    [-3e4, 2.0]], np.float32)  # fmt: skip
    raw = flow.runtime.layer_forward(flow.layer_names[0], flow.params[flow.layer_names[0]], jnp.asarray(pts))
    y, log_det = (np.asarray(a) for a in raw)
    assert np.isfinite(y).all() and np.isfinite(log_det).all()
    assert not np.isnan(np.asarray(flow.log_prob(pts))).any()
    back = np.asarray(flow.inverse(y))
    np.testing.assert_allclose(back[:, 0], pts[:, 0])
    assert np.isfinite(back).all()
    assert getattr(coupling, "LOG_SCALE_BOUND", None) == 40.0 and getattr(coupling, "LOGIT_SPREAD", None) == 80.0


def test_huge_finite_inputs_give_minus_inf_not_nan():
    # Near finfo.max the ReLU conditioner's hidden units overflowed to inf and its sums to NaN (even through a
    # zero final kernel: 0 * inf), and the passed-through coordinate reached the next rotation as +-2e38,
    # whose sums overflowed to inf - inf. Every other family gives -inf there; so must a coupling flow.
    big = float(jnp.finfo(DEFAULT).max)
    pts = np.array([[0.9 * big, 0.0], [0.0, 0.9 * big], [-0.9 * big, 1.0], [big**0.9, big**0.9], [1e20, 0.0]])
    pts = pts.astype(DEFAULT)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2)).astype(DEFAULT)
    spec = gaussplug.specs.coupling_flow(2, n_layers=2, hidden=(16,))
    fresh = gaussplug.build_flow(spec, key=0)
    warm = gaussplug.warm_start(fresh, x, progress=False)
    for flow in (fresh, warm):
        lp = np.asarray(flow.log_prob(pts))
        assert not np.isnan(lp).any(), lp
        assert (lp < -1e3).all(), lp
        name = flow.layer_names[1]
        y, log_det = flow.runtime.layer_forward(name, flow.params[name], jnp.asarray(pts))
        assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(log_det)).all()
    # Inside the bound the conditioner sees its input bit for bit.
    small = jnp.asarray([[-3.0, 1e9]], DEFAULT)
    np.testing.assert_array_equal(np.asarray(coupling._conditioner_input(small)), np.asarray(small))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 2)])
def test_fit_names_data_that_is_not_2d(shape):
    with pytest.raises(gaussplug.DataError, match=rf"expected data of shape \(n >= 1, dim\), a 2-D array; got shape "
                                                  rf"{re.escape(str(shape))}"):
        FAMILY.fit(np.zeros(shape, np.float32), init(), key=KEY, **dict(_opts()))
