"""Known-density benchmark data: samplers whose log-density is exact.

Every generator is built from a name, a dimension and a seed and returns a
:class:`KnownDensity` with ``sample(n, seed)`` and ``log_prob(x)`` (nats, float64,
exact up to floating point). The rotation / parameters depend only on
``(name, dim, seed)``; ``sample``'s own seed only changes the draws, so train,
validation and test sets from one density share the same law.

Families (``FAMILIES``):

- ``gaussian``: rotated anisotropic Gaussian, ``x = Q diag(s) z`` with scales
  ``s`` log-spaced over [0.1, 3] (condition number 900 in variance).
- ``sources``: independent non-Gaussian sources ``x = Q s``, ``s_i`` cycling through
  unit-scale Laplace, logistic, Student-t (nu=3), Gumbel and a bimodal
  Gaussian mixture ``0.5 N(-1.5, 0.5^2) + 0.5 N(1.5, 0.5^2)``.
- ``banana``: pairs ``(a, b)`` with ``a ~ N(0, 1)``, ``b = a^2 - 1 + 0.5 e`` (``e ~ N(0, 1)``),
  then a random rotation ``Q`` of the whole vector (``dim`` even).
- ``gmm8``: equal-weight mixture of 8 isotropic Gaussians ``N(mu_k, I)``,
  ``|mu_k| = 5`` (on a circle for ``dim == 2``, random directions otherwise).
- ``student``: multivariate Student-t, nu = 5, scale matrix ``Q diag(s^2) Q^T``
  with ``s`` log-spaced over [0.3, 2].

``Q`` is Haar-random orthogonal (so the Jacobian of the rotation is 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from scipy.special import gammaln, logsumexp

FAMILIES = ("gaussian", "sources", "banana", "gmm8", "student")
LOG_2PI = math.log(2 * math.pi)
#: Degrees of freedom of the Student-t source and of the multivariate Student-t.
NU_SOURCE, NU_MVT = 3.0, 5.0
BIMODAL_MU, BIMODAL_SD = 1.5, 0.5
BANANA_SD = 0.5
GMM_RADIUS, GMM_K = 5.0, 8


@dataclasses.dataclass(frozen=True)
class KnownDensity:
    """A sampler with its exact log-density.

    Attributes:
      name: Family name (one of ``FAMILIES``).
      dim: Dimension.
      description: One line saying what it is.
      draw: ``draw(rng, n) -> (n, dim)`` samples.
      logpdf: ``logpdf(x) -> (n,)`` exact log-density in nats.
    """

    name: str
    dim: int
    description: str
    draw: Callable[[np.random.Generator, int], np.ndarray]
    logpdf: Callable[[np.ndarray], np.ndarray]

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` float64 draws, reproducible from ``seed``."""
        return np.asarray(self.draw(np.random.default_rng(seed), n), np.float64)

    def log_prob(self, x) -> np.ndarray:
        """Exact log-density (nats) of each row of ``x``."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.name}: expected shape (n, {self.dim}); got {x.shape}.")
        return self.logpdf(x)


def haar_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _normal_logpdf(z, mu=0.0, sd=1.0):
    return -0.5 * ((z - mu) / sd) ** 2 - np.log(sd) - 0.5 * LOG_2PI


def _student_logpdf(z, nu):
    return gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * math.pi) - (nu + 1) / 2 * np.log1p(z**2 / nu)


def _bimodal_logpdf(z):
    parts = np.stack([_normal_logpdf(z, -BIMODAL_MU, BIMODAL_SD), _normal_logpdf(z, BIMODAL_MU, BIMODAL_SD)])
    return logsumexp(parts, axis=0) + math.log(0.5)


def _bimodal_draw(rng, n):
    return rng.choice([-BIMODAL_MU, BIMODAL_MU], n) + BIMODAL_SD * rng.standard_normal(n)


#: Source name -> (draw(rng, n), logpdf(z)), all with unit scale parameter.
SOURCES = {
    "laplace": (lambda rng, n: rng.laplace(size=n), lambda z: -np.abs(z) - math.log(2.0)),
    "logistic": (lambda rng, n: rng.logistic(size=n), lambda z: -np.abs(z) - 2 * np.log1p(np.exp(-np.abs(z)))),
    "student_t3": (lambda rng, n: rng.standard_t(NU_SOURCE, n), lambda z: _student_logpdf(z, NU_SOURCE)),
    "gumbel": (lambda rng, n: rng.gumbel(size=n), lambda z: -z - np.exp(-z)),
    "bimodal": (_bimodal_draw, _bimodal_logpdf),
}


def _gaussian(dim, rng):
    q, s = haar_rotation(rng, dim), np.geomspace(0.1, 3.0, dim) if dim > 1 else np.ones(1)
    draw = lambda r, n: (r.standard_normal((n, dim)) * s) @ q.T
    logpdf = lambda x: np.sum(_normal_logpdf((x @ q) / s) - np.log(s), axis=1)
    return "rotated anisotropic Gaussian, scales log-spaced 0.1..3", draw, logpdf


def _sources(dim, rng):
    q, names = haar_rotation(rng, dim), [list(SOURCES)[i % len(SOURCES)] for i in range(dim)]
    draw = lambda r, n: np.stack([SOURCES[k][0](r, n) for k in names], axis=1) @ q.T

    def logpdf(x):
        s = x @ q
        return sum(SOURCES[k][1](s[:, i]) for i, k in enumerate(names))

    return "independent Laplace/logistic/t3/Gumbel/bimodal sources, rotated", draw, logpdf


def _banana(dim, rng):
    if dim % 2:
        raise ValueError(f"banana: expected an even dimension; got {dim}.")
    q = haar_rotation(rng, dim)

    def draw(r, n):
        a = r.standard_normal((n, dim // 2))
        b = a**2 - 1 + BANANA_SD * r.standard_normal((n, dim // 2))
        return np.stack([a, b], axis=2).reshape(n, dim) @ q.T

    def logpdf(x):
        u = (x @ q).reshape(len(x), dim // 2, 2)
        a, b = u[..., 0], u[..., 1]
        return np.sum(_normal_logpdf(a) + _normal_logpdf(b, a**2 - 1, BANANA_SD), axis=1)

    return f"{dim // 2} banana pair(s) b = a^2 - 1 + {BANANA_SD} e, rotated", draw, logpdf


def _gmm8(dim, rng):
    if dim == 2:
        angle = 2 * math.pi * np.arange(GMM_K) / GMM_K
        mu = GMM_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    else:
        u = rng.standard_normal((GMM_K, dim))
        mu = GMM_RADIUS * u / np.linalg.norm(u, axis=1, keepdims=True)
    draw = lambda r, n: mu[r.integers(GMM_K, size=n)] + r.standard_normal((n, dim))

    def logpdf(x):
        sq = np.sum(x**2, 1)[:, None] - 2 * x @ mu.T + np.sum(mu**2, 1)[None]
        return logsumexp(-0.5 * sq, axis=1) - math.log(GMM_K) - 0.5 * dim * LOG_2PI

    return f"8 isotropic unit Gaussians, means at radius {GMM_RADIUS:g}", draw, logpdf


def _student(dim, rng):
    q, s, nu = haar_rotation(rng, dim), np.geomspace(0.3, 2.0, dim) if dim > 1 else np.ones(1), NU_MVT
    const = gammaln((nu + dim) / 2) - gammaln(nu / 2) - 0.5 * dim * math.log(nu * math.pi) - np.sum(np.log(s))

    def draw(r, n):
        z = r.standard_normal((n, dim)) * s
        return (z @ q.T) / np.sqrt(r.chisquare(nu, n) / nu)[:, None]

    def logpdf(x):
        maha = np.sum(((x @ q) / s) ** 2, axis=1)
        return const - (nu + dim) / 2 * np.log1p(maha / nu)

    return f"multivariate Student-t, nu = {nu:g}, scales log-spaced 0.3..2, rotated", draw, logpdf


_BUILDERS = {"gaussian": _gaussian, "sources": _sources, "banana": _banana, "gmm8": _gmm8, "student": _student}


def make(name: str, dim: int, seed: int = 0) -> KnownDensity:
    """The known density ``name`` in ``dim`` dimensions; its parameters are fixed by ``seed``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown density {name!r}; expected one of {', '.join(FAMILIES)}.")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive integer; got {dim!r}.")
    # One stream per (family, dim, seed) so parameters do not depend on which others were built.
    rng = np.random.default_rng([seed, dim, FAMILIES.index(name)])
    description, draw, logpdf = _BUILDERS[name](dim, rng)
    return KnownDensity(name, dim, description, draw, logpdf)
