"""benchmarks/known_densities.py: the exact log-densities are right and normalised, and match the samplers."""

import math

import numpy as np
import pytest
from scipy import stats


@pytest.fixture(scope="module")
def kd(load_benchmark):
    return load_benchmark("known_densities")


def _rotation(kd, name, dim, seed=0):
    """The rotation the generator drew (the first draw of its stream)."""
    return kd.haar_rotation(np.random.default_rng([seed, dim, kd.FAMILIES.index(name)]), dim)


@pytest.mark.parametrize("dim", [2, 5])
def test_gaussian_matches_scipy(kd, dim):
    d = kd.make("gaussian", dim)
    q, s = _rotation(kd, "gaussian", dim), np.geomspace(0.1, 3.0, dim)
    x = d.sample(500, seed=1)
    ref = stats.multivariate_normal(np.zeros(dim), q @ np.diag(s**2) @ q.T).logpdf(x)
    np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dim", [2, 6])
def test_student_matches_scipy(kd, dim):
    d = kd.make("student", dim)
    q, s = _rotation(kd, "student", dim), np.geomspace(0.3, 2.0, dim)
    x = d.sample(500, seed=1)
    ref = stats.multivariate_t(np.zeros(dim), q @ np.diag(s**2) @ q.T, df=kd.NU_MVT).logpdf(x)
    np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-9, atol=1e-9)


def test_sources_match_scipy_marginals(kd):
    dim = 7  # every source, two of them twice
    d = kd.make("sources", dim)
    q = _rotation(kd, "sources", dim)
    x = d.sample(400, seed=2)
    s = x @ q
    marg = [
        stats.laplace.logpdf,
        stats.logistic.logpdf,
        lambda z: stats.t.logpdf(z, kd.NU_SOURCE),
        stats.gumbel_r.logpdf,
        lambda z: np.log(0.5 * stats.norm.pdf(z, -1.5, 0.5) + 0.5 * stats.norm.pdf(z, 1.5, 0.5)),
    ]
    ref = sum(marg[i % 5](s[:, i]) for i in range(dim))
    np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-9, atol=1e-9)


def test_gmm8_matches_scipy(kd):
    d = kd.make("gmm8", 3)
    x = d.sample(300, seed=3)
    # Recover the means from the generator's stream (the first draw after the family index).
    u = np.random.default_rng([0, 3, kd.FAMILIES.index("gmm8")]).standard_normal((8, 3))
    mu = kd.GMM_RADIUS * u / np.linalg.norm(u, axis=1, keepdims=True)
    ref = np.log(np.mean([stats.multivariate_normal(m, np.eye(3)).pdf(x) for m in mu], axis=0))
    np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-9, atol=1e-9)


def test_banana_matches_change_of_variables(kd):
    d = kd.make("banana", 4)
    q = _rotation(kd, "banana", 4)
    x = d.sample(300, seed=4)
    u = x @ q
    ref = sum(
        stats.norm.logpdf(u[:, 2 * i]) + stats.norm.logpdf(u[:, 2 * i + 1], u[:, 2 * i] ** 2 - 1, kd.BANANA_SD)
        for i in range(2)
    )
    np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["gaussian", "sources", "banana", "gmm8", "student"])
def test_normalised_and_consistent_with_sampler(kd, name):
    """Importance checks in 2-D: the density integrates to 1, and its samples agree with it.

    (1) ``E_q[p/q] = 1`` with ``q`` a broad Student-t (heavier-tailed than every p here): p
    integrates to one; (2) ``E_p[g/p] = 1`` with ``g`` a normalised Gaussian narrower than p,
    centred on a mode, and the expectation over the *sampler*'s draws: fails if the sampler and
    ``log_prob`` disagree.
    """
    d = kd.make(name, 2)
    rng = np.random.default_rng(5)
    n = 400_000
    q = stats.multivariate_t(np.zeros(2), 16.0 * np.eye(2), df=2)
    z = q.rvs(n, random_state=rng)
    w = np.exp(d.log_prob(z) - q.logpdf(z))
    se = w.std() / math.sqrt(n)
    assert abs(w.mean() - 1) < max(5 * se, 0.01), (w.mean(), se)

    x = d.sample(n, seed=6)
    centre = x[np.argmax(d.log_prob(x[:2000]))]  # g sits where p has mass and is narrower than p
    g = stats.multivariate_normal(centre, 0.05 * np.cov(x.T))
    r = np.exp(g.logpdf(x) - d.log_prob(x))
    se = r.std() / math.sqrt(n)
    assert abs(r.mean() - 1) < max(5 * se, 0.02), (r.mean(), se)


@pytest.mark.parametrize("name", ["gaussian", "sources", "banana", "gmm8", "student"])
def test_reproducible_and_checked(kd, name):
    a, b = kd.make(name, 4), kd.make(name, 4)
    np.testing.assert_array_equal(a.sample(10, seed=1), b.sample(10, seed=1))
    assert not np.allclose(a.sample(10, seed=1), a.sample(10, seed=2))
    assert np.isfinite(a.log_prob(a.sample(1000, seed=3))).all()
    with pytest.raises(ValueError, match=r"expected shape \(n, 4\)"):
        a.log_prob(np.zeros((3, 5)))


def test_bad_arguments(kd):
    with pytest.raises(ValueError, match="unknown density 'nope'"):
        kd.make("nope", 2)
    with pytest.raises(ValueError, match="even dimension"):
        kd.make("banana", 3)
