"""RBIG information estimates vs closed forms: prints the markdown table in docs/information.md.

    python benchmarks/information.py                 # the accuracy table
    python benchmarks/information.py --sample-size   # bias on independent data against n and dim

Cases (nats; every data set is one seeded draw):

* Gaussians with a random covariance ``C`` (dim 2 to 50): ``TC = -0.5 log det corr(C)``,
  ``H = 0.5 log det(2 pi e C)``.
* A Gaussian copula with log-normal / cubed log-normal marginals: TC as for the Gaussian
  (TC is invariant to monotone maps of single columns).
* Linear mixtures ``x = A s`` of i.i.d. non-Gaussian sources: ``H(x) = sum_i H(s_i) + log|det A|``.
* Independent uniforms rotated by 45 degrees: ``TC = 1 - log 2``.
* Mutual information of Gaussian blocks, raw and with exp / cube marginals:
  ``I = H(C_xx) + H(C_yy) - H(C)``.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import stats

from gaussplug import information as info


def random_cov(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.3 * np.eye(d)


def cases():
    rng = np.random.default_rng(0)
    for d, n in [(2, 3000), (5, 3000), (10, 5000), (20, 5000), (50, 10000)]:
        c = random_cov(d, rng)
        x = rng.multivariate_normal(np.zeros(d), c, size=n)
        yield f"Gaussian, dim {d}", n, "TC", lambda x=x: info.estimate(x), info.gaussian_total_correlation(c), x
        yield f"Gaussian, dim {d}", n, "H", None, info.gaussian_entropy(c), x
    for d, n in [(3, 3000), (10, 5000)]:
        c = random_cov(d, rng)
        x = np.exp(rng.multivariate_normal(np.zeros(d), c, size=n))
        x[:, ::2] **= 3
        truth = info.gaussian_total_correlation(c)
        yield f"log-normal copula, dim {d}", n, "TC", lambda x=x: info.estimate(x), truth, x
    sources = {
        "logistic": (lambda size: rng.logistic(size=size), 2.0),
        "Student-t(5)": (lambda size: rng.standard_t(5, size), stats.t(5).entropy()),
        "Gumbel": (lambda size: rng.gumbel(size=size), np.euler_gamma + 1),
        "exponential": (lambda size: rng.exponential(size=size), 1.0),
    }
    for name, (draw, h) in sources.items():
        for d, n in [(2, 3000), (5, 5000)]:
            a = rng.standard_normal((d, d)) + np.eye(d)
            x = draw((n, d)) @ a.T
            truth = d * h + np.linalg.slogdet(a)[1]
            yield f"A s, {name} sources, dim {d}", n, "H", lambda x=x: info.estimate(x), truth, x
    c45 = np.sqrt(0.5)
    x = rng.uniform(-1, 1, (5000, 2)) @ np.array([[c45, c45], [-c45, c45]])
    yield "uniform square rotated 45 deg", 5000, "TC", lambda x=x: info.estimate(x), 1 - np.log(2), x
    yield "uniform square rotated 45 deg", 5000, "H", None, 2 * np.log(2), x
    q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    x = rng.uniform(-1, 1, (5000, 5)) @ q
    yield "uniform cube rotated, dim 5", 5000, "H", lambda x=x: info.estimate(x), 5 * np.log(2), x
    for dx, dy, n in [(1, 1, 3000), (2, 3, 5000), (5, 5, 5000)]:
        c = random_cov(dx + dy, rng)
        xy = rng.multivariate_normal(np.zeros(dx + dy), c, size=n)
        truth = info.gaussian_entropy(c[:dx, :dx]) + info.gaussian_entropy(c[dx:, dx:]) - info.gaussian_entropy(c)
        x, y = xy[:, :dx], xy[:, dx:]
        yield f"MI, Gaussian {dx} + {dy}", n, "MI", lambda x=x, y=y: info.mutual_information(x, y), truth, None
        yield f"MI, Gaussian {dx} + {dy}, exp / cube marginals", n, "MI", (
            lambda x=x, y=y: info.mutual_information(np.exp(x), y**3)
        ), truth, None


def sample_size(seeds: int = 4):
    """TC and H of independent N(0, I) data (TC = 0, H = dim * 1.4189) against rows and columns."""
    import warnings

    print("| dim | n | rows per column | TC (truth 0), mean +- sd | H error, mean +- sd | chance dim^2 / (4 n) |")
    print("|---|---|---|---|---|---|")
    for d, n in [(2, 200), (5, 200), (10, 200), (10, 500), (10, 1000), (10, 2000), (10, 10000)]:
        tc, herr = [], []
        for seed in range(seeds):
            x = np.random.default_rng(100 + seed).standard_normal((n, d))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the few-rows warning is what this table documents
                est = info.estimate(x)
            tc.append(est.total_correlation)
            herr.append(est.entropy - d * 0.5 * np.log(2 * np.pi * np.e))
        print(f"| {d} | {n} | {n // d} | {np.mean(tc):.3f} +- {np.std(tc):.3f} | {np.mean(herr):+.3f} +- "
              f"{np.std(herr):.3f} | {d * d / (4 * n):.3f} |", flush=True)


def main():
    import sys

    if "--sample-size" in sys.argv[1:]:
        return sample_size()
    print("| data | n | measure | estimate | true | error | RBIG blocks (start) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    last = None
    for name, n, measure, run, truth, _ in cases():
        if run is not None:
            t0 = time.perf_counter()
            last = run()
            seconds = time.perf_counter() - t0
        if isinstance(last, info.InformationEstimate):
            value = {"TC": last.total_correlation, "H": last.entropy}[measure]
            blocks = f"{last.n_layers} ({last.start})"
        else:
            value, blocks = last, "-"
        print(
            f"| {name} | {n} | {measure} | {value:.3f} | {truth:.3f} | {value - truth:+.3f} | {blocks} "
            f"| {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
