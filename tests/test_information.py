"""RBIG information measures against closed forms (tolerances stated per test)."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gaussplug
from gaussplug import DataError, DataWarning
from gaussplug import information as info


def _random_cov(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.3 * np.eye(d)


def _gaussian(d, n, seed):
    rng = np.random.default_rng(seed)
    c = _random_cov(d, rng)
    return rng.multivariate_normal(np.zeros(d), c, size=n), c


# Stated tolerances (nats): TC within 0.02 + 6 % of the truth, H within 0.02 per dimension.
def _tc_tol(truth):
    return 0.02 + 0.06 * truth


def test_closed_forms():
    cov = np.array([[2.0, 0.6], [0.6, 1.0]])
    assert info.gaussian_total_correlation(cov) == pytest.approx(-0.5 * math.log(1 - 0.18))
    assert info.gaussian_entropy(cov) == pytest.approx(0.5 * math.log((2 * math.pi * math.e) ** 2 * 1.64))


@pytest.mark.parametrize("d", [2, 5])
def test_gaussian_tc_and_entropy(d):
    x, c = _gaussian(d, 3000, seed=d)
    est = info.estimate(x)
    tc = info.gaussian_total_correlation(c)
    assert est.total_correlation == pytest.approx(tc, abs=_tc_tol(tc))
    assert est.entropy == pytest.approx(info.gaussian_entropy(c), abs=0.02 * d)
    assert est.total_correlation == pytest.approx(sum(est.reductions) + est.residual_tc)
    assert est.entropy == pytest.approx(sum(est.marginal_entropies) - est.total_correlation)
    assert info.total_correlation(x) == pytest.approx(est.total_correlation)
    assert info.entropy(x) == pytest.approx(est.entropy)


def test_independent_data_has_no_tc_and_entropy_of_a_box():
    u = np.random.default_rng(0).uniform(size=(3000, 3)) * [1.0, 2.0, 0.5]
    est = info.estimate(u)
    assert abs(est.total_correlation) < 0.03  # truth 0
    assert est.entropy == pytest.approx(math.log(1.0 * 2.0 * 0.5), abs=0.05)


def test_linear_mixture_entropy():
    """H(A s) = sum H(s_i) + log |det A| for i.i.d. logistic sources (H = 2 nats each); tolerance 0.1."""
    rng = np.random.default_rng(3)
    a = np.array([[1.0, 0.8], [-0.4, 1.5]])
    x = rng.logistic(size=(3000, 2)) @ a.T
    assert info.entropy(x) == pytest.approx(2 * 2.0 + math.log(abs(np.linalg.det(a))), abs=0.1)


def test_rotated_uniform_square():
    """Uniforms rotated by 45 degrees: triangular marginals, TC = 1 - log 2; tolerance 0.06."""
    c = math.sqrt(0.5)
    x = np.random.default_rng(4).uniform(-1, 1, (5000, 2)) @ np.array([[c, c], [-c, c]])
    est = info.estimate(x)
    assert est.total_correlation == pytest.approx(1 - math.log(2), abs=0.06)
    assert est.entropy == pytest.approx(2 * math.log(2), abs=0.06)


def test_mutual_information_gaussian_and_invariance():
    """MI of a Gaussian pair, unchanged by monotone maps of x and y; tolerance 0.03."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(3000)
    y = 0.6 * x + 0.8 * rng.standard_normal(3000)
    truth = -0.5 * math.log(1 - 0.36)
    assert info.mutual_information(x, y) == pytest.approx(truth, abs=0.03)
    assert info.mutual_information(np.exp(x), y**3) == pytest.approx(truth, abs=0.03)
    assert abs(info.mutual_information(x, rng.standard_normal(3000))) < 0.02


def test_one_dimension_and_errors():
    x = np.random.default_rng(6).exponential(size=2000)
    est = info.estimate(x)
    assert est.total_correlation == 0.0 and est.n_layers == 0
    assert est.entropy == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="rows"):
        rng = np.random.default_rng(0)
        info.mutual_information(rng.normal(size=(20, 1)), rng.normal(size=(30, 1)))
    with pytest.raises(ValueError, match="start"):
        info.estimate(np.zeros((20, 2)), start="nope")
    with pytest.raises(DataError, match=r"x: expected finite values; 20 of 20 rows contain NaN"):
        info.estimate(np.full((20, 2), np.nan))
    y = np.random.default_rng(1).normal(size=(30, 2))
    y[7, 1] = np.inf
    with pytest.raises(DataError, match=r"x: expected finite values; 1 of 30 rows .* \(first: row index 7\)"):
        info.entropy(y)
    with pytest.raises(DataError, match=r"x: expected data of shape \(n >= 10, dim >= 1\); got shape \(5, 2\)"):
        info.entropy(y[:5])
    with pytest.raises(DataError, match=r"got shape \(20, 0\)"):
        info.estimate(np.zeros((20, 0)))
    with pytest.raises(DataError, match="expected real data .* got complex values"):
        info.estimate(y + 1j)
    with pytest.raises(DataError, match="x has 20 rows but y has 30"):
        info.mutual_information(y[8:28], np.r_[y[8:], y[8:16]])
    with pytest.raises(TypeError, match=r"unexpected keyword\(s\) 'n_layer'; the RBIG fit accepts max_layers, "):
        info.estimate(y[8:], n_layer=3)
    with pytest.raises(TypeError, match="unexpected keyword 'checked'"):
        info.mutual_information(y[:, 0], y[:, 1], checked=False)


@pytest.mark.parametrize("rotation", [(), None, ("pca", "bogus"), "svd", 3])
def test_a_bad_rotation_is_named_before_any_fit(rotation):
    x = np.random.default_rng(0).normal(size=(200, 2))
    with pytest.raises(ValueError, match=r"rotation: expected one of \('pca', 'random', 'ica'\) or a non-empty "
                                         rf"sequence of them \(one RBIG fit each\); got {re.escape(repr(rotation))}\."):
        info.total_correlation(x, rotation=rotation)


def test_depth_options_with_a_fixed_depth_raise_like_fit_rbig():
    x = np.random.default_rng(0).normal(size=(200, 2))
    with pytest.raises(ValueError, match=r"information: max_layers applies only with n_layers='auto' .*n_layers=2"):
        info.total_correlation(x, n_layers=2, max_layers=3)
    with pytest.raises(ValueError, match=r"information: tol, patience apply only with n_layers='auto'"):
        info.entropy(x, n_layers=1, tol=0.1, patience=2)
    assert np.isfinite(info.total_correlation(x, n_layers=2))  # a fixed depth alone is fine


@pytest.mark.parametrize("cov, match", [
    ([[-1.0]], r"positive definite matrix; its smallest eigenvalue is -1"),
    ([[1.0, 2.0], [2.0, 1.0]], r"positive definite matrix; its smallest eigenvalue is -1"),
    ([[0.0, 0.0], [0.0, 1.0]], r"positive definite matrix; its smallest eigenvalue is 0"),
    ([[1.0, 0.9], [0.0, 1.0]], r"symmetric matrix"),
    ([[1.0, 2.0, 3.0]], r"square \(d, d\) covariance matrix; got shape \(1, 3\)"),
    ([[np.nan]], r"finite values"),
])
def test_closed_forms_refuse_what_is_not_a_covariance(cov, match):
    for closed_form in (info.gaussian_entropy, info.gaussian_total_correlation):
        with pytest.raises(ValueError, match=r"^cov: expected (a |an |)" + match):
            closed_form(cov)


def test_exactly_dependent_columns_are_refused_not_estimated():
    """Collinear, duplicated or monotonically tied columns have TC = MI = +inf: RBIG used to return 4 to 11 nats."""
    g = np.random.default_rng(0).standard_normal((500, 3))
    cases = {
        "columns 0, 1 are exactly linearly dependent": np.column_stack([g[:, 0], g[:, 0], g[:, 1]]),
        "columns 0, 1, 2 are exactly linearly dependent": np.column_stack([g[:, :2], g[:, 0] - 2 * g[:, 1]]),
        "columns 1, 2 are exactly monotone functions of one another": np.column_stack([g[:, :2], np.exp(-g[:, 1])]),
    }
    for needle, x in cases.items():
        with pytest.raises(DataError, match=rf"x: {needle} .* TC and MI are \+inf and H is -inf"):
            info.estimate(x)
    with pytest.raises(DataError, match=r"\[x, y\] \(x's 1 column\(s\) first\): columns 0, 1 are exactly monotone"):
        info.mutual_information(g[:, 0], np.exp(g[:, 0]))
    with pytest.raises(DataError, match="15 rows for 20 columns; the rows lie on a hyperplane"):
        info.estimate(np.random.default_rng(5).standard_normal((15, 20)))
    near = np.column_stack([g[:, 0], g[:, 0] + 1e-3 * g[:, 1]])  # correlation 0.9999995: finite, estimated
    assert info.total_correlation(near) == pytest.approx(-0.5 * np.log1p(-np.corrcoef(near.T)[0, 1] ** 2), abs=0.1)


def test_few_rows_per_column_warn():
    x = np.random.default_rng(1).standard_normal((200, 5))
    with pytest.warns(DataWarning, match=r"x: 200 rows for 5 columns \(fewer than 100 per column\)") as seen:
        info.total_correlation(x)
    assert seen[0].filename == __file__


def test_independent_columns_add_no_noise_blocks():
    """A phase whose blocks all gain less than the noise level adds nothing (it used to add one noise block).

    Independent 10-D Gaussian data, 2000 rows: TC was 0.061 +- 0.017 (4 seeds), 5x the copula's chance
    level dim^2 / (4 n) = 0.0125; now about that level.
    """
    tcs = [info.total_correlation(np.random.default_rng(s).standard_normal((2000, 10))) for s in range(2)]
    assert max(tcs) < 0.03, tcs


def test_fixed_depth_single_rotation():
    x, c = _gaussian(3, 3000, seed=7)
    est = info.estimate(x, rotation="pca", n_layers=2, start="affine")
    assert est.n_layers == 2 and est.start == "affine"
    assert est.total_correlation == pytest.approx(info.gaussian_total_correlation(c), abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("d, n", [(2, 3000), (5, 3000), (10, 5000), (20, 5000), (50, 10000)])
def test_gaussian_dims_2_to_50(d, n):
    x, c = _gaussian(d, n, seed=100 + d)
    est = info.estimate(x)
    tc = info.gaussian_total_correlation(c)
    assert est.total_correlation == pytest.approx(tc, abs=_tc_tol(tc))
    assert est.entropy == pytest.approx(info.gaussian_entropy(c), abs=0.02 * d)


@pytest.mark.slow
@pytest.mark.parametrize("d, n", [(3, 3000), (10, 5000)])
def test_gaussian_copula_with_heavy_tailed_marginals(d, n):
    x, c = _gaussian(d, n, seed=200 + d)
    x = np.exp(x)
    x[:, ::2] **= 3
    tc = info.gaussian_total_correlation(c)
    assert info.total_correlation(x) == pytest.approx(tc, abs=_tc_tol(tc))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["logistic", "t5", "gumbel"])
@pytest.mark.parametrize("d", [2, 5])
def test_linear_mixtures_of_smooth_sources(source, d):
    """H(A s) = d H(s) + log|det A|; tolerance 0.15 nats."""
    rng = np.random.default_rng(300 + d)
    draw, h = {
        "logistic": (lambda size: rng.logistic(size=size), 2.0),
        "t5": (lambda size: rng.standard_t(5, size), stats.t(5).entropy()),
        "gumbel": (lambda size: rng.gumbel(size=size), np.euler_gamma + 1),
    }[source]
    a = rng.standard_normal((d, d)) + np.eye(d)
    x = draw((5000, d)) @ a.T
    assert info.entropy(x) == pytest.approx(d * h + np.linalg.slogdet(a)[1], abs=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("dx, dy", [(2, 3), (5, 5)])
def test_mutual_information_gaussian_blocks(dx, dy):
    x, c = _gaussian(dx + dy, 5000, seed=400 + dx)
    truth = info.gaussian_entropy(c[:dx, :dx]) + info.gaussian_entropy(c[dx:, dx:]) - info.gaussian_entropy(c)
    assert info.mutual_information(x[:, :dx], x[:, dx:]) == pytest.approx(truth, abs=0.05)
    assert info.mutual_information(np.exp(x[:, :dx]), x[:, dx:] ** 3) == pytest.approx(truth, abs=0.05)


def test_constant_columns_are_refused_and_tied_ones_warned_about():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    c = x.copy()
    c[:, 1] = 5.0
    with pytest.raises(DataError, match=r"x: constant column\(s\) 1 \(= 5\)"):
        info.entropy(c)
    with pytest.warns(DataWarning, match=r"column\(s\) 0 \(\d+ distinct of 200\).*dequantisation"):
        info.entropy(np.round(x * 3))
    with pytest.raises(ValueError, match=r"x: expected numeric data .* could not convert"):
        info.total_correlation("abc")


def test_affine_start_cannot_overflow_on_huge_scales():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    x[:, 1] += x[:, 0]
    tc = info.total_correlation(x)
    assert math.isfinite(tc)
    np.testing.assert_allclose(info.total_correlation(x * 1e155), tc, rtol=1e-6)


def test_the_largest_seed_is_accepted():
    # One seed per rotation phase: key + i wraps within [0, 2**32) instead of being refused.
    x, _ = _gaussian(3, 500, seed=1)
    assert np.isfinite(info.estimate(x, rotation=("pca", "random"), n_layers=1, key=2**32 - 1).total_correlation)
    for bad in (-1, 2**32):
        with pytest.raises(ValueError, match=r"key: expected an int seed in \[0, 2\*\*32\)"):
            info.estimate(x, key=bad)
    for bad in (1.5, "0", True):  # a TypeError, as build_flow's and fit_rbig's key gives
        with pytest.raises(TypeError, match=r"key: expected an int seed or a jax.random key; got"):
            info.estimate(x, key=bad)
        with pytest.raises(TypeError, match=r"key: expected an int seed or a jax.random key; got"):
            gaussplug.build_flow(gaussplug.specs.gaussianization_flow(3, n_layers=1), key=bad)


def test_a_jax_key_is_taken_as_a_seed():
    # The guide: every key argument takes an int seed or a jax.random key (a key's 32 random bits seed the estimate).
    x, _ = _gaussian(3, 500, seed=1)
    typed, raw = jax.random.key(7), jax.random.PRNGKey(7)
    a, b = info.estimate(x, n_layers=1, key=typed), info.estimate(x, n_layers=1, key=raw)
    seed = int(jax.random.bits(typed, dtype=jnp.uint32))
    assert a == b == info.estimate(x, n_layers=1, key=seed)
    assert info.estimate(x, n_layers=1, key=jax.random.key(8)) != a
    assert info.estimate(x, n_layers=1, key=np.int64(3)) == info.estimate(x, n_layers=1, key=3)
    with pytest.raises(TypeError, match="expected one jax.random key"):
        info.estimate(x, key=jax.random.split(typed, 2))
