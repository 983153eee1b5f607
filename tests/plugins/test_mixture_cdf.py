"""Tests for the ``mixture_cdf`` family."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussplug_plugins import mixture_cdf
from scipy import stats

import gaussplug
from gaussplug._mixture import fit_mixture

FAMILY = mixture_cdf.FAMILY
DIM, K = 3, 4
OPTS = {"components": K}
KEY = jax.random.PRNGKey(0)
DEFAULT = jax.dtypes.canonicalize_dtype(jnp.float64)  # params' dtype: float32 unless x64 is on


@functools.cache
def _transformed(what, dim, components):
    if what == "init":
        return jax.jit(hk.transform(lambda: FAMILY.make_bijector(dim, components=components)).init)
    layer = hk.transform(lambda x: getattr(FAMILY.make_bijector(dim, components=components), what)(x))
    return jax.jit(hk.without_apply_rng(layer).apply)


def init(dim=DIM, components=K):
    return _transformed("init", dim, components)(KEY)


def forward(dim=DIM, components=K):
    return _transformed("forward_and_log_det", dim, components)


def inverse(dim=DIM, components=K):
    return _transformed("inverse_and_log_det", dim, components)


def some_params(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    raw = {
        "logits": rng.normal(size=(DIM, K)),
        "loc": 2 * rng.normal(size=(DIM, K)),
        "log_scale": rng.normal(size=(DIM, K)) / 2,
    }
    return {"~": {k: jnp.asarray(v, dtype) for k, v in raw.items()}}


def data(n=400, seed=1):
    rng = np.random.default_rng(seed)
    bimodal = np.where(rng.random(n) < 0.4, rng.normal(-2.0, 0.5, n), rng.normal(1.5, 0.8, n))
    return np.column_stack([bimodal, rng.gamma(2.0, 1.0, n) - 2.0, rng.standard_t(4, n)]).astype(np.float32)


def std_normal_loglik(params, x):
    y, ld = forward()(params, x)
    return float(jnp.mean(-0.5 * jnp.sum(y**2 + jnp.log(2 * jnp.pi), axis=-1) + ld))


def test_family_record_and_default_init():
    assert FAMILY.name == "mixture_cdf" and FAMILY.fit is not None
    assert FAMILY.options == {"components": 8, "tail_weight": 0.0}
    params = init()
    assert set(params) == {"~"} and set(params["~"]) == {"logits", "loc", "log_scale"}
    for leaf in params["~"].values():
        assert leaf.shape == (DIM, K) and leaf.dtype == DEFAULT
    # The K-point Gauss-Hermite rule for N(0, 1), shrunk by s and smoothed by N(0, 1 - s^2), locations jittered.
    nodes, weights = np.polynomial.hermite_e.hermegauss(K)
    spread = mixture_cdf._init_spread(K)
    log_w = np.broadcast_to(np.log(weights / weights.sum()), (DIM, K))
    np.testing.assert_allclose(params["~"]["logits"], log_w, rtol=1e-5)
    np.testing.assert_allclose(params["~"]["log_scale"], 0.5 * np.log(1 - spread**2), rtol=1e-6)
    jitter = np.asarray(params["~"]["loc"]) - spread * nodes
    assert 0 < np.abs(jitter).max() < 0.3 and not np.allclose(jitter[0], jitter[1])  # differs between dims
    np.testing.assert_allclose(jitter @ (weights / weights.sum()), 0.0, atol=1e-6)  # centred: the mean stays 0


@pytest.mark.parametrize(("k", "spread"), [(2, 0.4), (3, 0.7), (8, 0.85), (16, 0.9)])
def test_init_spread_is_the_largest_within_tolerance(k, spread):
    assert mixture_cdf._init_spread(k) == pytest.approx(spread)
    nodes, weights = np.polynomial.hermite_e.hermegauss(k)
    x = np.linspace(-3, 3, 601)

    def max_log_ratio(s):
        dens = np.sum(weights[:, None] / weights.sum() * stats.norm.pdf(x, s * nodes[:, None], np.sqrt(1 - s * s)), 0)
        return np.max(np.abs(np.log(dens) - stats.norm.logpdf(x)))

    assert max_log_ratio(spread) <= 0.1 < max_log_ratio(spread + 0.05)
    # Without jitter the fresh mixture has N(0, 1)'s moments up to order 2K - 1 (here: mean 0, variance 1).
    mean = np.sum(weights * spread * nodes) / weights.sum()
    var = np.sum(weights * (spread * nodes) ** 2) / weights.sum() + 1 - spread**2
    assert mean == pytest.approx(0, abs=1e-12) and var == pytest.approx(1)


@pytest.mark.parametrize("components", [1, 2, 4, 8, 16])
def test_fresh_layers_are_near_identity_and_keep_unit_variance(components):
    # Any one fresh layer maps N(0, 1) data close to N(0, 1), so a stack of them neither squeezes nor spreads it.
    x = np.random.default_rng(3).normal(size=(20000, DIM)).astype(np.float32)
    y, ld = x, np.zeros(len(x))
    for seed in range(8):
        # The same eight fresh layers in both settings: from one key, jax.random.normal draws other numbers in
        # float64, so under x64 the jitter (a different sample of the same law) is drawn in float32 and cast up.
        with jax.enable_x64(False):
            params = _transformed("init", DIM, components)(jax.random.PRNGKey(seed))
        params = jax.tree.map(lambda a: jnp.asarray(a, DEFAULT), params)
        y, step_ld = forward(DIM, components)(params, y)
        ld = ld + np.asarray(step_ld)
    y = np.asarray(y)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(y.var(0), 1.0, atol=0.2)  # (loc ~ N(0, 1), unit scales: 0.002-0.008)
    assert np.quantile(np.abs(y), 0.999) < 1.2 * np.quantile(np.abs(x), 0.999)  # nor are the tails stretched
    loglik = np.mean(-0.5 * np.sum(y**2 + np.log(2 * np.pi), axis=-1) + ld)
    normal = np.mean(-0.5 * np.sum(x**2 + np.log(2 * np.pi), axis=-1))
    assert abs(loglik - normal) < 0.05 * DIM, (loglik, normal)  # (loc ~ N(0, 1), unit scales: 2.4 * DIM)


def test_zero_locs_are_the_identity():
    params = jax.tree.map(jnp.zeros_like, init())
    x = data(8)
    y, ld = forward()(params, x)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(ld, 0.0, atol=1e-5)


@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_round_trip_and_shapes(batch):
    params = some_params()
    x = np.random.default_rng(2).normal(scale=3.0, size=(*batch, DIM)).astype(np.float32)
    y, ld = forward()(params, x)
    x2, ild = inverse()(params, y)
    assert y.shape == x.shape and ld.shape == batch and ild.shape == batch
    np.testing.assert_allclose(x2, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ild, -ld, rtol=1e-5, atol=1e-5)


def test_log_det_matches_jacobian_and_far_points_are_finite():
    params = some_params()
    x = np.array(
        [[0.3, -1.0, 2.0], [-40.0, 55.0, 1e3], [1e3, -1e3, -60.0], [-5.0, 5.0, 0.0], [0.0, 0.0, 0.0]], np.float32
    )
    y, ld = forward()(params, x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(ld))
    jac = jax.vmap(jax.jacobian(lambda v: forward()(params, v)[0]))(x)
    np.testing.assert_allclose(jnp.linalg.slogdet(jac)[1], ld, atol=2e-4)
    x2, _ = inverse()(params, y)
    np.testing.assert_allclose(x2, x, rtol=1e-5, atol=1e-5)


def test_jit_vmap_and_grad():
    params, x = some_params(), data(5)
    y, ld = forward()(params, x)
    yv, ldv = jax.vmap(forward(), in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(yv, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ldv, ld, rtol=1e-6, atol=1e-6)
    gp, gx = jax.grad(lambda p, v: jnp.sum(forward()(p, v)[1]) + jnp.sum(forward()(p, v)[0] ** 2), argnums=(0, 1))(
        params, x
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves((gp, gx)))


def test_float64():
    with jax.enable_x64(True):
        params = init()
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(params))
        params = some_params(jnp.float64)
        x = jnp.asarray(data(6), jnp.float64)
        y, ld = forward()(params, x)
        assert y.dtype == ld.dtype == jnp.float64
        x2, ild = inverse()(params, y)
        np.testing.assert_allclose(x2, x, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ild, -ld, atol=1e-10)


def test_fit_raises_likelihood_and_keeps_structure():
    x = data()
    default = init()
    before = jax.tree.map(np.array, default)
    fitted = FAMILY.fit(x, default, key=KEY, **OPTS)
    assert jax.tree.structure(fitted) == jax.tree.structure(default)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), fitted) == jax.tree.map(lambda a: (a.shape, a.dtype), default)
    jax.tree.map(np.testing.assert_array_equal, default, before)  # the input is not mutated
    identity = jax.tree.map(jnp.zeros_like, default)
    gain = std_normal_loglik(fitted, x) - std_normal_loglik(identity, x)
    assert gain > 0.3 and std_normal_loglik(fitted, x) > std_normal_loglik(default, x)
    reference = fit_mixture(x.astype(DEFAULT), K)  # the fit runs in the params' dtype
    for got, want in zip((fitted["~"][k] for k in ("logits", "loc", "log_scale")), reference, strict=True):
        assert got.dtype == want.dtype == DEFAULT
        np.testing.assert_array_equal(got, want)


def test_fit_in_float64_returns_float64():
    with jax.enable_x64(True):
        fitted = FAMILY.fit(data(200).astype(np.float64), init(), key=KEY, **OPTS)
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(fitted))


def tail_forward(weight, dim=DIM, components=K):
    layer = hk.transform(lambda x: FAMILY.make_bijector(dim, components=components, tail_weight=weight)
                         .forward_and_log_det(x))  # fmt: skip
    return jax.jit(hk.without_apply_rng(layer).apply)


def test_tail_weight_mixes_in_a_fixed_standard_normal():
    params, x = some_params(), data(50)
    y0, ld0 = forward()(params, x)
    y, ld = tail_forward(0.0)(params, x)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(ld, ld0)
    w = 0.05
    y, ld = tail_forward(w)(params, x)
    p = {k: np.asarray(v, np.float64) for k, v in params["~"].items()}
    weights = np.exp(p["logits"]) / np.exp(p["logits"]).sum(-1, keepdims=True)
    pdf = lambda xs, fn: (weights * fn(xs[..., None], p["loc"], np.exp(p["log_scale"]))).sum(-1)
    xs = np.asarray(x, np.float64)
    cdf = (1 - w) * pdf(xs, stats.norm.cdf) + w * stats.norm.cdf(xs)
    np.testing.assert_allclose(y, stats.norm.ppf(cdf), rtol=2e-4, atol=2e-4)
    # log det = sum_i log f_i(x_i) - log phi(y_i), f_i = (1 - w) mixture pdf + w phi.
    dens = (1 - w) * pdf(xs, stats.norm.pdf) + w * stats.norm.pdf(xs)
    want = (np.log(dens) - stats.norm.logpdf(stats.norm.ppf(cdf))).sum(-1)
    np.testing.assert_allclose(ld, want, rtol=1e-4, atol=1e-4)


def test_tail_weight_makes_far_tails_slope_one():
    # Narrow components (scale 0.1) only: without the N(0, 1) part the far tail is y ~ x / 0.1.
    params = {"~": {"logits": jnp.zeros((1, 3)), "loc": jnp.array([[-1.0, 0.0, 1.0]]),
                    "log_scale": jnp.full((1, 3), np.log(0.1))}}  # fmt: skip
    x = jnp.array([[-30.0], [-29.0], [29.0], [30.0]])
    for weight, slope in ((0.0, 10.0), (0.01, 1.0)):
        y, ld = tail_forward(weight, dim=1, components=3)(params, x)
        y = np.asarray(y)[:, 0]
        assert (y[1] - y[0]) == pytest.approx(slope, rel=0.05) and (y[3] - y[2]) == pytest.approx(slope, rel=0.05)
        assert np.all(np.isfinite(ld)) and np.allclose(ld, np.log(slope), atol=0.1)
    # With the tail weight, far out the upper tail is w * Phi(-x): y solves Phi(-y) = w Phi(-x), close to x (not 10 x).
    assert float(y[3]) == pytest.approx(stats.norm.isf(0.01 * stats.norm.sf(30.0)), rel=1e-4)
    assert 30 < float(y[3]) < 30.2


def test_tail_weight_conforms():
    from gaussplug.testing import check_family

    report = check_family(FAMILY, dims=(2,), options={"components": 3, "tail_weight": 0.02})
    assert report.passed and not report.failed


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, float("nan"), "0.1", True, None])
def test_validate_rejects_bad_tail_weight(bad):
    with pytest.raises(ValueError, match=r"'tail_weight' must be a number in \[0, 1\) .*; got"):
        FAMILY.validate(DIM, {"components": K, "tail_weight": bad})


@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True, None])
def test_validate_rejects_bad_components(bad):
    with pytest.raises(ValueError, match=r"'components' must be a positive int; got"):
        FAMILY.validate(DIM, {"components": bad})


def test_components_are_capped_and_wide_fresh_layers_are_finite():
    # From K = 52 the smallest Gauss-Hermite weights are below float32's range: their logs were -inf (NaN log_prob
    # for K >= ~500). The logs are now taken in float64; beyond MAX_COMPONENTS the option is refused.
    from gaussplug_plugins.mixture_cdf import MAX_COMPONENTS

    FAMILY.validate(DIM, {"components": MAX_COMPONENTS})
    with pytest.raises(ValueError, match=rf"'components' must be at most {MAX_COMPONENTS} per dimension .*got 257"):
        FAMILY.validate(DIM, {"components": MAX_COMPONENTS + 1})
    for k in (52, 64, MAX_COMPONENTS):
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "mixture_cdf", "components": k}]})
        assert all(np.isfinite(np.asarray(v)).all() for v in flow.params["0_mixture_cdf"]["~"].values()), k
        lp = np.asarray(flow.log_prob(np.random.default_rng(0).normal(size=(50, 2))))
        assert np.isfinite(lp).all(), k


def test_fit_rejects_mismatched_components_and_bad_data():
    with pytest.raises(ValueError, match=r"params have 4 components but option 'components' is 5"):
        FAMILY.fit(data(), init(), key=KEY, components=5)
    with pytest.raises(ValueError, match=r"shape \(n >= 1, 3\)"):
        FAMILY.fit(data()[:, :2], init(), key=KEY, **OPTS)


def test_hookimpl_registers_the_family():
    seen = []
    mixture_cdf.gaussplug_register_families(seen.append)
    assert seen == [FAMILY]
