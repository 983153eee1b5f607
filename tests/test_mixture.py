"""Numerics of gaussplug._mixture: tails, quantiles, inverse, gradients and the EM fit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sc
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture

from gaussplug import _mixture as mx
from gaussplug import _mixture_inverse as mxi

# A 4-component mixture with separated modes and unequal scales; the widest component has scale 2.
LOGITS = np.array([0.3, -0.5, 0.0, -1.0])
LOC = np.array([-3.0, 0.0, 2.5, 6.0])
LOG_SCALE = np.log([0.5, 2.0, 0.3, 1.0])
WIDE = 1  # index of the widest component


def params(dtype):
    return tuple(jnp.asarray(a, dtype) for a in (LOGITS, LOC, LOG_SCALE))


def reference_forward(x):
    """float64 SciPy reference for y = Phi^-1(F(x)) and log f(x) - log phi(y) (moderate x only)."""
    z = (np.asarray(x, np.float64)[:, None] - LOC) / np.exp(LOG_SCALE)
    log_w = LOGITS - sc.logsumexp(LOGITS)
    log_lo = sc.logsumexp(log_w + sc.log_ndtr(z), axis=1)
    log_hi = sc.logsumexp(log_w + sc.log_ndtr(-z), axis=1)
    y = np.where(log_lo < log_hi, sc.ndtri(np.exp(log_lo)), -sc.ndtri(np.exp(log_hi)))
    log_f = sc.logsumexp(log_w - 0.5 * z**2 - 0.5 * np.log(2 * np.pi) - LOG_SCALE, axis=1)
    return y, log_f + 0.5 * y**2 + 0.5 * np.log(2 * np.pi)


# ---------------------------------------------------------------- ndtri_log


def test_ndtri_log_matches_scipy_float64():
    p = np.concatenate([np.logspace(-300, -1, 300), np.linspace(0.05, 0.95, 91), 1 - np.logspace(-15, -1, 50)])
    logp = np.log(p)
    ref = np.where(p < 0.5, sc.ndtri(p), -sc.ndtri(-np.expm1(logp)))
    with jax.enable_x64(True):
        got = np.asarray(mx.ndtri_log(jnp.asarray(logp)))
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)


def test_ndtri_log_far_tail_float32_is_finite_and_accurate():
    logp = np.array([-50.0, -1e2, -1e3, -1e4, -1e6, -1e10, -1e20], np.float32)
    y = np.asarray(mx.ndtri_log(jnp.asarray(logp)))
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    # log Phi(y), evaluated in float64, reproduces logp to float32 precision.
    np.testing.assert_allclose(sc.log_ndtr(y.astype(np.float64)), logp, rtol=1e-6)
    with jax.enable_x64(True):
        y64 = np.asarray(mx.ndtri_log(jnp.asarray(logp, jnp.float64)))
    np.testing.assert_allclose(y, y64, rtol=1e-6)
    # The upper half mirrors the lower half.
    mirrored = np.asarray(mx.ndtri_log(jnp.log1p(-jnp.exp(jnp.asarray([-30.0, -5.0, -1.0])))))
    np.testing.assert_allclose(mirrored, -np.asarray(mx.ndtri_log(jnp.asarray([-30.0, -5.0, -1.0]))), rtol=1e-5)


def test_ndtri_log_edges_and_gradients():
    y = np.asarray(mx.ndtri_log(jnp.asarray([-np.inf, 0.0, np.log(0.5)], jnp.float32)))
    assert y[0] == -np.inf and y[1] == np.inf and abs(y[2]) < 1e-6
    # dy/dlogp = Phi(y)/phi(y) ~ 1/|y| far out, finite (no cancellation, no NaN from unused branches).
    logp = jnp.asarray([-1e6, -1e4, -3.0, -0.1, -1e-6], jnp.float32)
    g = np.asarray(jax.vmap(jax.grad(mx.ndtri_log))(logp))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[:2], [7.0710e-4, 7.0728e-3], rtol=1e-4)
    with jax.enable_x64(True):
        lp = jnp.asarray([-1e4, -30.0, -3.0, -0.7, -0.6, -1e-3])
        g64 = jax.vmap(jax.grad(mx.ndtri_log))(lp)
        fd = (mx.ndtri_log(lp * (1 + 1e-7)) - mx.ndtri_log(lp * (1 - 1e-7))) / (2e-7 * lp)
        np.testing.assert_allclose(np.asarray(g64), np.asarray(fd), rtol=1e-6)


# ---------------------------------------------------------------- forward and inverse
# All forward/inverse calls use length-64 inputs so the jitted functions compile once per dtype.

S_WIDE = float(np.exp(LOG_SCALE[WIDE]))
N_MID = 56
FAR_K = np.array([-50.0, 50.0, -100.0, 100.0, -1e3, 1e3, -2e3, 2e3])
X_GRID = np.concatenate([np.linspace(-12.0, 14.0, N_MID), LOC[WIDE] + S_WIDE * FAR_K])
Y_GRID = np.concatenate([np.linspace(-8.0, 8.0, N_MID), [-20.0, 20.0, -50.0, 50.0, -100.0, 100.0, -1e3, 1e3]])


def forward(x, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        y, ld = mx.gaussianize(jnp.asarray(x, dtype), *params(dtype))
        assert y.dtype == ld.dtype == dtype
        return np.asarray(y), np.asarray(ld)


def test_gaussianize_matches_reference_in_both_dtypes():
    y_ref, ld_ref = reference_forward(X_GRID[:N_MID])
    y, ld = forward(X_GRID, jnp.float32)
    np.testing.assert_allclose(y[:N_MID], y_ref, atol=2e-6 * np.abs(y_ref).max())
    np.testing.assert_allclose(ld[:N_MID], ld_ref, atol=2e-5)
    y64, ld64 = forward(X_GRID, jnp.float64)
    np.testing.assert_allclose(y64[:N_MID], y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ld64[:N_MID], ld_ref, atol=1e-10)


@pytest.mark.parametrize(
    ("x_shape", "param_batch"),
    [((300, 2), (2,)), ((300, 1), (300, 1)), ((3, 40, 5), (5,)), ((40, 3), (40, 3)), ((2,), (5, 2))],
)
def test_gaussianize_on_a_short_minor_axis_equals_it_point_by_point(x_shape, param_batch):
    """Batches whose last axis is short run with their last two axes swapped (XLA-CPU vectorises the minor axis):
    the values and gradients are those of the same points evaluated one by one, on every broadcast pattern."""
    from gaussplug import _mixture_reduce as mxr

    seen = []
    mxr._long_minor_axis(lambda x, *p: seen.append(x.shape) or (x,), jnp.zeros((300, 2)), jnp.zeros((2, 4)))
    assert seen == [(2, 300)]  # a 2-D flow's minibatch is evaluated as two long rows
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(0, 3, x_shape), jnp.float32)
    shape = np.broadcast_shapes(x_shape, param_batch)
    logits, loc, log_scale = (jnp.asarray(np.broadcast_to(a, (*param_batch, 4)) + rng.normal(0, 0.1, (*param_batch, 4)),
                                          jnp.float32) for a in (LOGITS, LOC, LOG_SCALE))  # fmt: skip

    def total(x, *p):
        y, ld = mx.gaussianize(x, *p)
        return jnp.sum(y * y) + jnp.sum(ld), (y, ld)

    (_, (y, ld)), grads = jax.value_and_grad(total, argnums=(0, 1, 2, 3), has_aux=True)(x, logits, loc, log_scale)
    flat = [jnp.broadcast_to(a, shape).reshape(-1) for a in (x,)] + [
        jnp.broadcast_to(a, (*shape, 4)).reshape(-1, 4) for a in (logits, loc, log_scale)]  # fmt: skip
    (_, (y1, ld1)), grads1 = jax.value_and_grad(total, argnums=(0, 1, 2, 3), has_aux=True)(*flat)
    np.testing.assert_allclose(np.ravel(y), y1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.ravel(ld), ld1, rtol=1e-6, atol=1e-6)
    for g, g1, a in zip(grads, grads1, (x, logits, loc, log_scale), strict=True):
        # A broadcast operand's gradient is the sum over the points it was broadcast to.
        k = () if a is x else (4,)  # the params' trailing K axis
        summed = np.asarray(g1).reshape(*shape, *k)
        while summed.ndim > g.ndim:
            summed = summed.sum(0)
        summed = summed.sum(axis=tuple(i for i, n in enumerate(g.shape) if n == 1 and summed.shape[i] != 1),
                            keepdims=True)  # fmt: skip
        np.testing.assert_allclose(g, summed, rtol=2e-5, atol=2e-5)


def test_far_tails_are_finite_affine_and_accurate_in_float32():
    # x = loc + k * scale of the widest component, k = +-50 ... +-2000.
    y, ld = (a[N_MID:] for a in forward(X_GRID, jnp.float32))
    y64, ld64 = (a[N_MID:] for a in forward(X_GRID, jnp.float64))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(ld))
    np.testing.assert_allclose(y, y64, rtol=2e-6)
    np.testing.assert_allclose(ld, ld64, atol=1e-5)  # the log-det is not a difference of huge numbers
    # Asymptotically affine with the widest component's scale: y ~ k + O(log k / k), dy/dx -> 1/scale.
    assert np.all(np.abs(y - FAR_K) < 3.0 / np.abs(FAR_K)), y - FAR_K
    assert np.all(np.abs(ld + LOG_SCALE[WIDE]) < 3.0 / np.abs(FAR_K)), ld + LOG_SCALE[WIDE]
    np.testing.assert_allclose(np.diff(y64[4:])[1::2] / np.diff(X_GRID[N_MID + 4 :])[1::2], 1 / S_WIDE, rtol=1e-3)


def test_beyond_the_far_bounds_the_map_is_extended_linearly_never_nan():
    # |z| up to 1e28 scales: z**2 would overflow float32 (it used to give y = inf and a NaN log-det).
    p = params(jnp.float32)
    k = np.array([-1e28, -1e20, -3e7, -1.5e6, 1.5e6, 3e7, 1e19, 1e28])
    x = jnp.asarray(LOC[WIDE] + k * S_WIDE, jnp.float32)
    y, ld = (np.asarray(a, np.float64) for a in mx.gaussianize(x, *p))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(ld))
    np.testing.assert_allclose(y, k, rtol=1e-6)  # y ~ (x - loc) / scale of the widest component
    np.testing.assert_allclose(ld, -LOG_SCALE[WIDE], atol=1e-6)
    x_back, ild = mx.gaussianize_inverse(jnp.asarray(y, jnp.float32), *p)
    np.testing.assert_allclose(x_back, x, rtol=1e-6)
    np.testing.assert_allclose(ild, -ld, atol=1e-6)
    # Outputs are clipped at finfo.max ** 0.75 (7.9e28), so inputs beyond it, infinite ones included,
    # give finite outputs of the same sign (never inf, which a following rotation would turn into
    # inf - inf = NaN) with a finite log-det; NaN stays NaN.
    big = float(np.finfo(np.float32).max) ** 0.75
    edge = jnp.array([-3e38, -jnp.inf, 3e38, jnp.inf, jnp.nan], jnp.float32)
    y_inf, ld_inf = mx.gaussianize(edge, *p)
    np.testing.assert_allclose(np.asarray(y_inf)[:4], [-big, -big, big, big], rtol=1e-6)
    assert np.isnan(y_inf[4]) and np.all(np.isfinite(ld_inf[:4]))
    # The gradient w.r.t. x is the asymptotic slope; w.r.t. the params it is finite.
    dydx = jax.vmap(jax.grad(lambda v: mx.gaussianize(v, *p)[0]))(x)
    np.testing.assert_allclose(dydx, 1 / S_WIDE, rtol=1e-5)
    grads = jax.grad(lambda q: jnp.sum(mx.gaussianize(x[2:6], *q)[0]))(p)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


@pytest.mark.parametrize("rows", [1, 5000])  # the general solver, and the table path sampling takes
def test_inverse_beyond_the_far_bounds_is_the_forward_extension_inverted(rows):
    # Two components of different widths: the solver's log-tail target overflowed float32 at |y| > 1.8e19,
    # so inverse(1e24) was 1.77e24 where forward(2e24) = 1e24.
    p = (jnp.zeros(2), jnp.array([-1.0, 1.0]), jnp.log(jnp.array([0.5, 2.0])))
    ys = np.array([-1e28, -1e24, -3e19, -1e10, 1e10, 3e19, 1e24, 1e28], np.float32)  # forward clips at 7.9e28
    y = jnp.asarray(np.resize(ys, max(rows, ys.size)), jnp.float32)
    x, ild = mx.gaussianize_inverse(y, *p)
    np.testing.assert_allclose(np.asarray(x[: ys.size]), 1 + 2 * ys.astype(np.float64), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(mx.gaussianize(x, *p)[0]), np.asarray(y), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(ild), np.log(2.0), atol=1e-6)
    back, _ = mx.gaussianize_inverse(jnp.array([jnp.inf, -jnp.inf, jnp.nan]), *p)
    assert back[0] == jnp.inf and back[1] == -jnp.inf and jnp.isnan(back[2])


def test_inverse_gradients_stay_finite_when_a_far_bound_is_infinite():
    # A scale of e^80 puts the far bounds at +-inf in float32; the unused linear branch must not leak NaN.
    lg, loc, ls = jnp.zeros(2), jnp.array([-1.0, 1.0]), jnp.array([0.0, 80.0])
    y = jnp.array([0.5, -3.0])

    def total(y, ls):
        return jnp.sum(mx.gaussianize_inverse(y, lg, loc, ls)[0])

    for g in (jax.grad(total)(y, ls), jax.grad(total, argnums=1)(y, ls)):
        assert np.all(np.isfinite(np.asarray(g))), g


def test_a_fitted_flow_round_trips_far_outside_the_data():
    import gaussplug

    rng = np.random.default_rng(0)
    heavy = (rng.normal(size=(300, 1)) ** 3).astype(np.float32)  # components of very different widths
    spec = {"dim": 1, "layers": [{"family": "mixture_cdf", "components": 4}]}
    flow = gaussplug.warm_start(gaussplug.build_flow(spec), heavy, progress=False)
    x, _ = make_moons(400, noise=0.05, random_state=0)
    flow2 = gaussplug.fit_rbig(((x - x.mean(0)) / x.std(0)).astype(np.float32), n_layers=2, n_components=4)
    far = np.array([1e3, 1e10, 1e20, 1e25, -1e20, -1e25], np.float32)
    for f, pts in ((flow, far[:, None]), (flow2, np.stack([far, np.resize([0.5, -1.0], far.size)], 1))):
        z = np.asarray(f.forward(pts))
        assert np.all(np.isfinite(z))
        back = np.asarray(f.inverse(z), np.float64)
        # Relative to the point's norm: a rotation mixes 0.5 into 1e20, so float32 keeps only the large part.
        err = np.linalg.norm(back - pts, axis=1) / np.linalg.norm(pts.astype(np.float64), axis=1)
        assert np.all(err < 1e-5), err


def test_a_flow_gives_minus_inf_not_nan_for_inputs_whose_density_underflows():
    import gaussplug

    flow = gaussplug.build_flow({"dim": 1, "layers": [{"family": "mixture_cdf"}]}, dtype=jnp.float32)
    lp = np.asarray(flow.log_prob(np.array([[1e17], [1e19], [1e20], [-3e38]], np.float32)))
    assert np.isfinite(lp[0]) and lp[0] < -1e33
    np.testing.assert_array_equal(lp[1:], -np.inf)


def test_cast_fitted_mixture_falls_back_to_identity_only_where_narrowing_hurts():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        # Column 0: an ordinary bimodal column; column 1: nearly constant at 0.43 (spread 1e-10; float32 steps 3e-8).
        x = np.stack([np.concatenate([rng.normal(-2, 0.5, 100), rng.normal(2, 0.5, 100)]),
                      0.43 + 1e-10 * rng.normal(size=200)], 1)  # fmt: skip
        fitted = mx.fit_mixture(x, 4)
        same = mx.cast_fitted_mixture(x, fitted, jnp.float64)  # no narrowing: a plain cast, nothing evaluated
        for a, b in zip(same, fitted, strict=True):
            np.testing.assert_array_equal(a, b)
        narrow = mx.cast_fitted_mixture(x, fitted, jnp.float32)
        assert all(a.dtype == jnp.float32 for a in narrow)
        for a, b in zip(narrow, fitted, strict=True):  # column 0 survives the rounding
            np.testing.assert_array_equal(a[0], np.asarray(b[0], np.float32))
        # Column 1's rounded mixture scores far below N(0, 1) (plain rounding: the identity is the fallback).
        plain = [np.asarray(b, np.float32).astype(np.float64) for b in fitted]
        assert np.mean(mx.mixture_log_pdf(x[:, 1:], *(a[1:] for a in plain))) < -100
        for a in narrow:
            np.testing.assert_array_equal(a[1], 0.0)


def test_a_fitted_flow_gives_no_nan_up_to_the_float32_limit():
    # A mixture layer's output overflowing to inf made the next Householder layer compute inf - inf.
    from sklearn.datasets import make_moons

    import gaussplug

    x, _ = make_moons(500, noise=0.05, random_state=0)  # narrow components: slopes above 1 far out
    flow = gaussplug.fit_rbig(((x - x.mean(0)) / x.std(0)).astype(np.float32), n_layers=2, n_components=4)
    a = np.array([1e10, 1e20, 1e30, 1e37, 1e38, 3e38, 3.4e38], np.float32)[:, None]
    signs = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, -1]], np.float32)
    pts = (a[:, None, :] * signs[None]).reshape(-1, 2)
    pts = np.where(pts == 0, 1.0, pts).astype(np.float32)
    lp = np.asarray(flow.log_prob(pts))
    assert not np.any(np.isnan(lp)) and not np.any(np.isposinf(lp))
    assert np.all(lp[np.abs(pts).max(1) >= 1e20] < -1e30)  # -inf in float32; huge and finite in float64


def test_log_det_matches_autodiff_derivative_in_float32():
    # (In float64 the log-det matches the independent SciPy reference above to 1e-10.)
    p = params(jnp.float32)
    dydx = jax.vmap(jax.grad(lambda v: mx.gaussianize(v, *p)[0]))(jnp.asarray(X_GRID, jnp.float32))
    _, ld = forward(X_GRID, jnp.float32)
    np.testing.assert_allclose(np.log(np.asarray(dydx)), ld, atol=2e-5)


def test_forward_gradients_match_finite_differences_float64():
    with jax.enable_x64(True):
        args = (jnp.asarray(X_GRID), *params(jnp.float64))
        weights = jnp.linspace(0.5, 1.5, X_GRID.size)

        @jax.jit
        def objective(x, logits, loc, log_scale):
            y, ld = mx.gaussianize(x, logits, loc, log_scale)
            return jnp.sum(weights * (jnp.tanh(y) + ld))

        grads = jax.jit(jax.grad(objective, argnums=(0, 1, 2, 3)))(*args)
        rng = np.random.default_rng(1)
        for i, (arg, g) in enumerate(zip(args, grads, strict=True)):
            d = jnp.asarray(rng.standard_normal(arg.shape)) * (1e-6 * (1 + jnp.abs(arg)) if i == 0 else 1e-6)
            shifted = [objective(*(a + e * d if j == i else a for j, a in enumerate(args))) for e in (1.0, -1.0)]
            np.testing.assert_allclose(float(jnp.vdot(g, d)), float(shifted[0] - shifted[1]) / 2, rtol=1e-6)


@pytest.mark.parametrize("how", ["jacfwd(grad)", "jacfwd(jacfwd)", "grad(grad)"])
@pytest.mark.parametrize("stacked", [False, True], ids=["loop", "scan"])
def test_second_derivatives_are_finite_and_match_finite_differences(how, stacked):
    # Identity-fallback params (every component N(0, 1)) leave one tail sum exactly 0: its log's derivative was
    # 0 / 0, so jax.hessian of a fitted flow's log_prob was NaN on most rows (first order was fine).
    k = 4
    fitted = tuple(jnp.asarray(a) for a in ([0.3, -0.2, 0.0, 0.1], [-1.0, 0.0, 0.5, 2.0], [0.2, -0.5, 0.0, 0.3]))
    identity = (jnp.zeros(k), jnp.zeros(k), jnp.zeros(k))
    with jax.enable_x64(True):
        stack = jax.tree.map(lambda a, b: jnp.stack([a, b]).astype(jnp.float64), fitted, identity)

        def f(v):
            if stacked:  # as a flow applies repeated blocks: a lax.scan over stacked params
                def body(c, p):
                    y, ld = mx.gaussianize(c[0], *p)
                    return (y, c[1] + ld), None

                return jax.lax.scan(body, (v, jnp.zeros((), v.dtype)), stack)[0][1]
            total = 0.0
            for i in range(2):
                v, ld = mx.gaussianize(v, *jax.tree.map(lambda a, i=i: a[i], stack))
                total = total + ld
            return total

        second = {"jacfwd(grad)": jax.jacfwd(jax.grad(f)), "jacfwd(jacfwd)": jax.jacfwd(jax.jacfwd(f)),
                  "grad(grad)": jax.grad(jax.grad(f))}[how]  # fmt: skip
        xs = jnp.linspace(-4.0, 4.0, 17)
        got = np.asarray(jax.jit(jax.vmap(second))(xs))
        first = jax.vmap(jax.grad(f))
        fd = (np.asarray(first(xs + 1e-5)) - np.asarray(first(xs - 1e-5))) / 2e-5
    assert np.isfinite(got).all(), got
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-6)


def test_mixture_log_cdf_and_pdf():
    x = jnp.asarray(X_GRID, jnp.float32)
    log_f, log_s = (np.asarray(a) for a in mx.mixture_log_cdf(x, *params(jnp.float32)))
    np.testing.assert_allclose(np.exp(log_f) + np.exp(log_s), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(log_f)) and np.all(np.isfinite(log_s)) and log_f.min() < -1e5 and log_s.min() < -1e5
    z = (X_GRID[:N_MID, None] - LOC) / np.exp(LOG_SCALE)
    ref = sc.logsumexp(LOGITS - sc.logsumexp(LOGITS) - 0.5 * z**2 - 0.5 * np.log(2 * np.pi) - LOG_SCALE, axis=1)
    np.testing.assert_allclose(mx.mixture_log_pdf(x, *params(jnp.float32))[:N_MID], ref, rtol=1e-6)


def test_inverse_round_trips_in_latent_and_data_space():
    p = params(jnp.float32)
    x, ild = mx.gaussianize_inverse(jnp.asarray(Y_GRID, jnp.float32), *p)
    y_back, ld = mx.gaussianize(x, *p)
    assert np.max(np.abs(y_back - Y_GRID) / np.maximum(1.0, np.abs(Y_GRID))) < 1e-5
    np.testing.assert_allclose(ild, -ld, atol=1e-6)
    y_far, _ = forward(X_GRID, jnp.float32)
    x_back, _ = mx.gaussianize_inverse(jnp.asarray(y_far), *p)
    np.testing.assert_allclose(x_back, X_GRID, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_inverse_table_path_for_many_points_matches_the_general_solver(dtype):
    """Sampling-sized batches (rows >> table nodes) take the Hermite-table path; it must round-trip as well.

    Two dimensions with their own mixtures (one bimodal with a wide gap between its modes, where ``x(y)`` is
    steep and a coarse table start is poor), and latents beyond the table's [-8, 8] range and non-finite.
    """
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        pytest.skip("float64 needs jax_enable_x64")
    bimodal = (np.array([0.0, 0.0]), np.array([-4.0, 4.0]), np.log([0.3, 0.3]))
    other = (LOGITS[:2], LOC[:2], LOG_SCALE[:2])
    p = tuple(jnp.asarray(np.stack([a, b]), dtype) for a, b in zip(bimodal, other, strict=True))
    rows = 4 * mxi._TABLE_NODES
    y = np.random.default_rng(0).normal(size=(rows, 2))
    y[:4, 0] = [0.0, 9.5, -12.0, 40.0]  # the gap's centre, and beyond the table
    y[4, 1] = np.inf
    y = jnp.asarray(y, dtype)
    assert mxi._table_layout(y, *p) is not None  # the table path is the one under test
    x, ild = mx.gaussianize_inverse(y, *p)
    x_general, _ = mx.gaussianize_inverse(y, *p, num_iter=60)
    assert x[4, 1] == np.inf and np.all(np.isfinite(np.delete(np.asarray(x).ravel(), 9)))
    finite = np.isfinite(np.asarray(y))
    y_back, ld = mx.gaussianize(x, *p)
    y_ok, back_ok = np.asarray(y)[finite], np.asarray(y_back)[finite]
    err = np.abs(back_ok - y_ok) / np.maximum(1.0, np.abs(y_ok))
    assert err.max() < (2e-5 if dtype == jnp.float32 else 1e-10)
    np.testing.assert_allclose(np.asarray(x)[finite], np.asarray(x_general)[finite], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ild)[finite], -np.asarray(ld)[finite], atol=1e-4)


def test_inverse_broadcasts_and_works_under_jit_and_vmap():
    stacked = tuple(jnp.stack([a, a + 0.1]) for a in params(jnp.float32))  # (2, K)
    y = jnp.asarray(Y_GRID, jnp.float32)
    xv, ildv = jax.jit(jax.vmap(mx.gaussianize_inverse, in_axes=(None, 0, 0, 0)))(y, *stacked)
    assert xv.shape == ildv.shape == (2, Y_GRID.size)
    np.testing.assert_allclose(xv[0], mx.gaussianize_inverse(y, *params(jnp.float32))[0], rtol=1e-6, atol=1e-6)
    y_back, _ = mx.gaussianize(xv[1], *(a[1] for a in stacked))
    assert np.max(np.abs(y_back - Y_GRID) / np.maximum(1.0, np.abs(Y_GRID))) < 1e-5


def test_inverse_gradients_match_finite_differences_float64():
    with jax.enable_x64(True):
        args = (jnp.asarray(Y_GRID[::8]), *params(jnp.float64))

        @jax.jit
        def objective(y, logits, loc, log_scale):
            x, ld = mx.gaussianize_inverse(y, logits, loc, log_scale)
            return jnp.sum(jnp.sin(x)) + jnp.sum(ld)

        grads = jax.jit(jax.grad(objective, argnums=(0, 1, 2, 3)))(*args)
        rng = np.random.default_rng(0)
        for i, (arg, g) in enumerate(zip(args, grads, strict=True)):
            d = jnp.asarray(rng.standard_normal(arg.shape))
            shifted = [objective(*(a + e * d if j == i else a for j, a in enumerate(args))) for e in (1e-6, -1e-6)]
            fd = (shifted[0] - shifted[1]) / 2e-6
            np.testing.assert_allclose(float(jnp.vdot(g, d)), float(fd), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- fit


def _gmm_ll(x, n_components):
    return np.array([GaussianMixture(n_components, random_state=0).fit(c[:, None]).score(c[:, None]) for c in x.T])


def _datasets(n, rng):
    bimodal = np.where(rng.random(n) < 0.5, rng.normal(-2.0, 0.5, n), rng.normal(1.5, 1.0, n))
    moons = make_moons(n, noise=0.05, random_state=0)[0]
    return np.column_stack([bimodal, rng.lognormal(0.0, 1.0, n), rng.standard_t(3, n), moons])


def test_fit_mixture_is_at_least_as_good_as_sklearn():
    x = _datasets(2000, np.random.default_rng(0))
    logits, loc, log_scale = mx.fit_mixture(x, 6)
    assert logits.shape == loc.shape == log_scale.shape == (5, 6)
    ours = np.asarray(jnp.mean(mx.mixture_log_pdf(jnp.asarray(x, jnp.float32), logits, loc, log_scale), axis=0))
    assert np.all(ours >= _gmm_ll(x, 6) - 1e-3), (ours, _gmm_ll(x, 6))


def test_fit_mixture_generalises_on_heavy_tails():
    rng = np.random.default_rng(1)
    train, test = rng.standard_cauchy((500, 2)), rng.standard_cauchy((20000, 2))
    fitted = mx.fit_mixture(train, 6)
    ours = np.asarray(jnp.mean(mx.mixture_log_pdf(jnp.asarray(test, jnp.float32), *fitted), axis=0))
    gmm = [GaussianMixture(6, random_state=0).fit(train[:, [d]]).score(test[:, [d]]) for d in range(2)]
    assert np.all(np.isfinite(ours)) and np.all(ours > gmm), (ours, gmm)


@pytest.mark.parametrize("big", [1e7, 1e9])
def test_fit_mixture_bins_in_trimmed_units_when_a_far_outlier_inflates_the_std(big):
    """One row 1e7 to 1e9 sds out put the whole bulk of 3000 rows into one bin: components thousands of bulk sds
    wide. The binned fit now measures such columns in the trimmed moments (and the rows' rounding level in the bulk's
    norm); the other column is fitted as if alone."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3000, 2)).astype(np.float32)
    x[0, 0] = big
    fitted = mx.fit_mixture(x, 8)
    clean = jnp.asarray(rng.standard_normal((5000, 2)), jnp.float32)
    nll = -np.asarray(jnp.mean(mx.mixture_log_pdf(clean, *fitted), axis=0))
    assert np.all(nll < 1.42 + 0.06), nll  # N(0, 1): 1.419 nats
    alone = -float(jnp.mean(mx.mixture_log_pdf(clean[:, 1:], *mx.fit_mixture(x[:, 1:], 8))))
    np.testing.assert_allclose(nll[1], alone, atol=0.01)  # EM stops on all columns at once: iterations differ


def test_fit_mixture_falls_back_to_identity_per_dimension():
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.standard_normal(500), rng.normal(5.0, 0.01, 500)])
    # A huge relative floor makes dim 0's mixture worse than N(0, 1); dim 1 still gains.
    logits, loc, log_scale = (np.asarray(a) for a in mx.fit_mixture(x, 6, scale_floor=50.0))
    assert np.all(logits[0] == 0) and np.all(loc[0] == 0) and np.all(log_scale[0] == 0)
    assert np.all(np.abs(loc[1] - 5.0) < 0.1)


def test_fit_mixture_gives_columns_without_spread_a_unit_scale_shift():
    # A column that a subsample sees constant (e.g. a sparse one), or constant up to its rounding (a direction that
    # n <= D rows do not span), used to get components of scale 1e-3 (constant) or 1e-3 times its rounding noise:
    # spikes that stretched every row the fit did not see by 1e3 to 1e10 per layer.
    rng = np.random.default_rng(7)
    x = np.column_stack(
        [rng.standard_normal(300), np.zeros(300), 0.43 + 1e-7 * rng.standard_normal(300)]
    ).astype(np.float32)  # fmt: skip
    logits, loc, log_scale = (np.asarray(a) for a in mx.fit_mixture(x, 4))
    np.testing.assert_array_equal(logits[1:], 0.0)
    np.testing.assert_array_equal(log_scale[1:], 0.0)
    np.testing.assert_allclose(loc[1:], np.broadcast_to(x[:, 1:].mean(0)[:, None], (2, 4)), atol=1e-6)
    assert np.ptp(loc[0]) > 1.0  # the ordinary column is fitted as before
    y, log_det = mx.gaussianize(jnp.asarray([1.0, 1.43], jnp.float32), logits[1:], loc[1:], log_scale[1:])
    np.testing.assert_allclose(y, [1.0, 1.0], atol=1e-5)  # y = x - mean: an unseen value keeps its distance
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_fit_mixture_on_few_rows_floors_scales_at_the_row_spacing():
    # K components on n rows used to collapse onto single rows at 1e-3 of the spread, so the fitted layer's slope
    # at its own rows (and its sensitivity to rounding) grew by up to 1e3 per layer.
    x = np.random.default_rng(8).standard_t(4, size=(6, 3))
    _, _, log_scale = mx.fit_mixture(x, 8)
    iqr = np.subtract(*np.quantile(x, [0.75, 0.25], axis=0, method="inverted_cdf"))
    spread = np.minimum(x.std(0), iqr / 1.349)
    assert np.all(np.exp(np.asarray(log_scale)).min(1) >= 0.999 * spread / 6), (np.exp(log_scale).min(1), spread)


def test_fit_mixture_is_deterministic_and_keeps_float64():
    x = _datasets(500, np.random.default_rng(3))[:, :2]
    a, b = mx.fit_mixture(x, 6, key=jax.random.PRNGKey(0)), mx.fit_mixture(x, 6, key=jax.random.PRNGKey(1))
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    with jax.enable_x64(True):
        assert all(p.dtype == jnp.float64 for p in mx.fit_mixture(x, 6))


def test_flatten_layout_and_round_trip():
    logits, loc, log_scale = (jnp.asarray(np.random.default_rng(4).normal(size=(3, 2, 5))) for _ in range(3))
    vec = mx.flatten_mixture_params(logits, loc, log_scale)
    assert vec.shape == (3, 30)
    np.testing.assert_array_equal(vec.reshape(3, 2, 3, 5)[:, :, 1], loc)
    for a, b in zip(mx.unflatten_mixture_params(vec, 2, 5), (logits, loc, log_scale), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"n_components must be a positive int; got 0"):
        mx.fit_mixture(np.zeros((10, 2)), 0)
    with pytest.raises(ValueError, match=r"Expected data of shape \(n, D\).*got shape \(10,\)"):
        mx.fit_mixture(np.zeros(10), 2)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 24\).*got shape \(23,\)"):
        mx.unflatten_mixture_params(jnp.zeros(23), 2, 4)


@pytest.mark.parametrize("log_scale", [-12.0, -20.0, -30.0, -40.0])
def test_narrow_components_give_the_plateau_between_them_not_nan(log_scale):
    # Between components many scales narrow, F is the weight of those to the left (exactly, in
    # float32): the tail sum used to be formed as peak + (big - peak) with peak ~ -1e11, which
    # cancelled to garbage and gave y = NaN, log-det = +inf inside the data's range.
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=8), jnp.float32)
    loc = jnp.asarray(np.sort(rng.normal(size=8)), jnp.float32)
    ls = jnp.asarray(log_scale + 0.5 * rng.normal(size=8), jnp.float32)
    mids = (np.asarray(loc)[1:] + np.asarray(loc)[:-1]) / 2
    x = jnp.asarray(np.concatenate([mids, [-5.0, 5.0, -2.3, 2.3]]), jnp.float32)
    keep = np.min(np.abs(np.asarray(x)[:, None] - np.asarray(loc)[None]), axis=1) > 1e-3  # off every component
    y, log_det = mx.gaussianize(x, logits, loc, ls)
    assert np.isfinite(np.asarray(y)).all() and not np.isnan(np.asarray(log_det)).any()
    w = np.exp(np.asarray(logits, np.float64) - sc.logsumexp(np.asarray(logits, np.float64)))
    cdf = (w[None] * (np.asarray(loc)[None] < np.asarray(x)[:, None])).sum(1)
    inside = keep & (np.asarray(x) > float(loc.min())) & (np.asarray(x) < float(loc.max()))  # between components
    np.testing.assert_allclose(np.asarray(y)[inside], sc.ndtri(cdf[inside]), rtol=1e-4, atol=1e-4)
    assert (np.asarray(log_det)[inside] < -1e4).all()  # the density there is vanishingly small
    lf, l1mf = mx.mixture_log_cdf(x, logits, loc, ls)
    np.testing.assert_allclose(np.exp(np.asarray(lf))[inside], cdf[inside], rtol=1e-4)
    np.testing.assert_allclose(np.exp(np.asarray(l1mf))[inside], 1 - cdf[inside], rtol=1e-4)
    grads = jax.grad(lambda a, b, c: mx.gaussianize(x[inside], a, b, c)[0].sum(), argnums=(0, 1, 2))(logits, loc, ls)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


# -- float32 far from components many of their scales narrow (a fine-tuned coupling flow's conditioner
# extrapolating to log-scales at the -40 clip): finite values or -inf, never NaN; finite gradients


def _f32(*values):
    return [jnp.asarray(v, jnp.float32) for v in values]


def test_tail_is_chosen_by_absolute_log_tails_when_the_peak_is_far_below():
    # log f ~ -1.5e16: relative to it, log F = 0 and log(1 - F) = -80 round to the same float32, and the
    # larger tail was taken (y = nan, log-det = inf).
    y, log_det = mx.gaussianize(*_f32(-65.0, [0.0, -80.0], [-94.2, -45.8], [-40.0, -16.0]))
    assert float(y) == pytest.approx(-float(mx.ndtri_log(jnp.float32(-80.0))), rel=1e-6)
    assert np.isfinite(float(log_det)) and float(log_det) < -1e16


def test_a_tail_whose_log_overflows_float32_gives_the_affine_asymptote():
    # Component 1 (weight 1, scale e^-40) is 2.4e19 of its scales away: log F = -2.8e38, and -2 log F overflows.
    y, log_det = mx.gaussianize(*_f32(-100.0, [0.0, -128.0], [0.0, -200.0], [-40.0, -40.0]))
    assert float(y) == pytest.approx(-100.0 * math.exp(40.0), rel=1e-6)
    assert np.isfinite(float(log_det))
    assert float(mx.ndtri_log(jnp.float32(-3e38))) == pytest.approx(-math.sqrt(6e38), rel=1e-6)


def test_gradients_stay_finite_where_a_component_overflows_or_a_tail_underflows():
    def grads(which, *args):
        return jax.grad(lambda *a: mx.gaussianize(*a)[which], argnums=(0, 1, 2, 3))(*_f32(*args))

    # z * z of the e^-40-wide component overflows where its share is 0 (0 * inf was NaN for d/dlog_scale).
    for g in grads(1, 1.0, [0.0, 0.0], [0.0, -200.0], [0.0, -40.0]):
        assert np.all(np.isfinite(np.asarray(g)))
    # The upper tail is e^-200 (1 / T overflows float32) and component 2's weight underflows to 0.
    g = grads(0, 20.0, [0.0, -128.0], [0.0, 300.0], [0.0, 0.0])
    assert all(np.all(np.isfinite(np.asarray(a))) for a in g)
    assert float(g[0]) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("n", [300, 3000])  # exact EM on the rows, and binned EM
@pytest.mark.parametrize("exponent", [70, -100])  # 1.2e21 and 7.9e-31: squares overflow / underflow float32
def test_fit_mixture_is_equivariant_at_scales_whose_squares_leave_float32(n, exponent):
    # Power-of-two scales are exact in floating point, so the fit must scale with the data: loc by s, log_scale by
    # log s, weights unchanged. Before, 1e20 gave NaN params and 1e-30 a 'constant' column (unit-scale shift).
    x = np.random.default_rng(0).gamma(2.0, size=(n, 2)).astype(np.float32)
    s = np.float32(2.0**exponent)
    logits, loc, log_scale = (np.asarray(a) for a in mx.fit_mixture(x, 3))
    logits_s, loc_s, log_scale_s = (np.asarray(a) for a in mx.fit_mixture(x * s, 3))
    assert np.all(np.isfinite(loc_s)) and np.all(np.isfinite(log_scale_s))
    np.testing.assert_allclose(logits_s, logits, atol=1e-4)
    np.testing.assert_allclose(loc_s / s, loc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_scale_s - exponent * np.log(2.0), log_scale, atol=1e-4)


def test_fit_mixture_at_ordinary_scales_is_not_rescaled():
    from gaussplug._mixture_em import _overflow_unit

    def passes_over(x):
        return lambda fn, init, combine=jnp.add: jax.tree.map(combine, init, fn(x, jnp.ones(len(x), x.dtype)))

    for big, unit in [(1e6, 1.0), (1e-6, 1.0), (0.0, 1.0), (3e12, 2.0**42), (1e-13, 2.0**-43)]:
        x = jnp.asarray([[big, -big / 2]], jnp.float32)
        assert float(_overflow_unit(passes_over(x), jnp.float32)) == unit, big


def test_fit_mixture_on_row_counts_in_one_bucket_compiles_once_and_fits_as_unpadded():
    from gaussplug import _mixture_em

    x = _datasets(3070, np.random.default_rng(2))
    before = _mixture_em._fit_em_bucket._cache_size()
    for n in (2900, 3000, 3070):  # more rows than bins: the binned fit, one bucket (3072 rows)
        params = mx.fit_mixture(x[:n], 6)
        exact, _ = _mixture_em._fit_em(jnp.asarray(x[:n]), 3e-5, 1e-3, n_components=6, max_iter=300, n_bins=512)
        rows = jnp.asarray(x[:n], jnp.float32)
        ll, ll_exact = (np.asarray(jnp.mean(mx.mixture_log_pdf(rows, *p), axis=0)) for p in (params, exact))
        assert np.all(ll >= ll_exact - 1e-3), (n, ll, ll_exact)  # as good, to the EM's stopping tolerance
    assert _mixture_em._fit_em_bucket._cache_size() - before <= 1
