"""Conformance kit: the checks every registered family must pass.

Plugin authors call :func:`check_family` from their own test suite::

    def test_my_family_conforms():
        gaussplug.testing.check_family("my_family")

It checks, for several dimensions and in float32 and float64: the round trip
``inverse(forward(x)) == x`` (also for points far outside the fitted data),
the log-determinant against ``jax.jacobian``, that the inverse log-det is
minus the forward one, that jit, vmap and grad work and give finite values
(gradients of the inverse are compared with finite differences in float64),
and that ``fit`` returns params of the right structure that raise the data's
log-likelihood over the family's default initialisation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from gaussplug._family import Family
from gaussplug._plugins import get_registry
from gaussplug._runtime import standard_normal_log_prob

__all__ = ["ConformanceReport", "IsolatedLayer", "check_family", "conformance_data"]

_TOL = {
    # round-trip, log-det vs jacobian, inverse-vs-forward log-det (relative to scale)
    "float32": {"roundtrip": 2e-4, "logdet": 2e-3, "fd": None},
    "float64": {"roundtrip": 1e-8, "logdet": 1e-7, "fd": 1e-4},
}


@dataclasses.dataclass
class ConformanceReport:
    """What :func:`check_family` checked, and any failures."""

    family: str
    passed: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __str__(self):
        lines = [f"check_family({self.family!r}): {len(self.passed)} passed, {len(self.failed)} failed"]
        lines += [f"  FAIL {f}" for f in self.failed]
        lines += [f"  skip {s}" for s in self.skipped]
        return "\n".join(lines)


def conformance_data(dim: int, n: int = 256, seed: int = 0) -> np.ndarray:
    """Correlated, skewed, bimodal test data of shape ``(n, dim)`` (float64)."""
    rng = np.random.default_rng(seed)
    cols = []
    for j in range(dim):
        kind = j % 3
        if kind == 0:
            c = rng.gamma(2.0, 1.0, n) - 2.0
        elif kind == 1:
            c = np.where(rng.random(n) < 0.4, -2.0, 1.5) + 0.5 * rng.standard_normal(n)
        else:
            c = rng.standard_t(5, n)
        cols.append(c)
    x = np.stack(cols, axis=1)
    if dim > 1:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        x = x @ q
    return x


def _resolve_family(name_or_family, registry) -> Family:
    if isinstance(name_or_family, Family):
        return name_or_family
    return (registry or get_registry()).get(name_or_family)


def _options(family: Family, options: Mapping[str, Any] | None, dim: int) -> dict[str, Any]:
    opts = {**family.options, **dict(options or {})}
    if family.resolve is not None:
        opts = dict(family.resolve(opts, 0))
    if family.validate is not None:
        family.validate(dim, dict(opts))
    return opts


def check_family(
    name_or_family: str | Family,
    *,
    dims: Sequence[int] = (1, 2, 5),
    dtypes: Sequence[str] = ("float32", "float64"),
    options: Mapping[str, Any] | None = None,
    n: int = 256,
    seed: int = 0,
    registry=None,
) -> ConformanceReport:
    """Run the conformance suite on one family; raise ``AssertionError`` on failure.

    Args:
      name_or_family: A registered family name or a :class:`gaussplug.Family`.
      dims: Data dimensions to try; those below the family's ``min_dim`` are skipped.
      dtypes: ``"float32"`` and/or ``"float64"`` (the latter runs under x64).
      options: Options overriding the family's defaults.
      n: Rows of test data.
      seed: Seed for the data and keys.
      registry: Registry to look names up in (default: the process-wide one).

    Returns:
      A :class:`ConformanceReport` listing the checks that ran.

    Raises:
      AssertionError: At least one check failed; the message lists every failure
        with its dimension and dtype.

    Example:
      >>> from gaussplug.testing import check_family
      >>> report = check_family("standardize", dims=(2,), dtypes=("float32",))
      >>> report.failed
      []
    """
    family = _resolve_family(name_or_family, registry)
    report = ConformanceReport(family.name)
    for dim in dims:
        if dim < family.min_dim:
            report.skipped.append(f"dim={dim} (family needs dim >= {family.min_dim})")
            continue
        for dtype in dtypes:
            if dtype not in _TOL:
                raise ValueError(f"dtypes: expected 'float32' or 'float64'; got {dtype!r}.")
            with jax.enable_x64(dtype == "float64"):
                _check_one(family, dim, dtype, options, n, seed, report)
    if report.failed:
        raise AssertionError(str(report))
    return report


def _check_one(family, dim, dtype, options, n, seed, report):
    tag = f"dim={dim} {dtype}"
    tol = _TOL[dtype]
    opts = _options(family, options, dim)
    jdtype = jnp.dtype(dtype)
    key = jax.random.PRNGKey(seed)

    init = hk.transform(lambda: family.make_bijector(dim, **opts))
    fwd_t = hk.without_apply_rng(hk.transform(lambda x: family.make_bijector(dim, **opts).forward_and_log_det(x)))
    inv_t = hk.without_apply_rng(hk.transform(lambda z: family.make_bijector(dim, **opts).inverse_and_log_det(z)))
    cast = lambda p: jax.tree.map(lambda a: jnp.asarray(a, jdtype), hk.data_structures.to_mutable_dict(p))

    def check(name, ok, detail=""):
        (report.passed if ok else report.failed).append(f"{tag} {name}" + ("" if ok else f": {detail}"))

    # One jitted function per map, called on as few distinct shapes as possible:
    # compilation, not arithmetic, dominates this suite.
    fwd = jax.jit(fwd_t.apply)
    inv = jax.jit(inv_t.apply)
    x_np = conformance_data(dim, n, seed)
    std = x_np.std(0) + 1e-3
    signs = np.sign(np.arange(dim) % 2 - 0.5)[None]
    far_np = np.concatenate([x_np.mean(0) + k * std * signs for k in (8, -8, 25, -25)])
    both = jnp.asarray(np.concatenate([x_np, far_np]), jdtype)  # data rows, then 4 far rows
    x = both[:n]
    default = cast(init.init(key))

    params = default
    if family.fit is not None:
        try:
            fitted = family.fit(x_np.astype(dtype), default, key=jax.random.fold_in(key, 1), **opts)
        except Exception as err:  # report instead of crashing the whole suite
            check("fit runs", False, f"{type(err).__name__}: {err}")
            return
        want = jax.tree.map(lambda a: (a.shape, jnp.dtype(a.dtype).name), default)
        try:
            got = jax.tree.map(lambda a: (jnp.shape(a), jnp.dtype(jnp.asarray(a).dtype).name), dict(fitted))
        except Exception as err:
            got = f"unreadable ({err})"
        check("fit returns params of the same structure", want == got, f"expected {want}; got {got}")
        if want != got:
            return
        params = cast(fitted)
        finite = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(params))
        check("fit params finite", finite, "fit returned NaN/inf")
        _check_fit_gain(lambda p: fwd(p, both), default, params, n, dim, tag, check, report)

    # Round trip on the data and far outside it.
    z_all, ld_all = fwd(params, both)
    z, ld = z_all[:n], ld_all[:n]
    check("forward shapes", z_all.shape == both.shape and ld_all.shape == (n + 4,), f"got {z.shape}, {ld.shape}")
    check("forward dtype", z.dtype == jdtype and ld.dtype == jdtype, f"got {z.dtype}, {ld.dtype}")
    check("forward finite", bool(jnp.all(jnp.isfinite(z)) & jnp.all(jnp.isfinite(ld))), "NaN/inf on the data")
    zf, ldf = z_all[n:], ld_all[n:]
    far_ok = bool(jnp.all(jnp.isfinite(zf)) & jnp.all(jnp.isfinite(ldf)))
    check("forward finite far outside the data", far_ok, f"z={np.asarray(zf)}, log-det={np.asarray(ldf)}")
    back_all, ild_all = inv(params, jnp.where(jnp.isfinite(z_all), z_all, 0.0))
    scale = float(np.max(np.abs(x_np))) + 1.0
    err = float(jnp.max(jnp.abs(back_all[:n] - x))) / scale
    check("round trip", err < tol["roundtrip"], f"max relative error {err:.2e}")
    err = float(jnp.max(jnp.abs(ild_all[:n] + ld)) / (1.0 + jnp.max(jnp.abs(ld))))
    check("inverse log-det = -forward log-det", err < tol["logdet"], f"max relative error {err:.2e}")
    if far_ok:
        far = both[n:]
        err = float(jnp.max(jnp.abs(back_all[n:] - far) / (jnp.abs(far) + 1.0)))
        check("round trip far outside the data", err < 10 * tol["roundtrip"], f"max relative error {err:.2e}")

    # Log-det against the Jacobian.
    pts = x[:6]
    jac = jax.jit(jax.vmap(jax.jacobian(lambda v: fwd_t.apply(params, v)[0])))(pts)
    ref = jnp.linalg.slogdet(jac)[1]
    err = float(jnp.max(jnp.abs(ref - ld[:6])) / (1.0 + jnp.max(jnp.abs(ref))))
    check("log-det matches jax.jacobian", err < tol["logdet"], f"max relative error {err:.2e}")

    # Batch axes, eager vs jit, and vmap.
    zb, ldb = fwd(params, x[:6].reshape(2, 3, dim))
    ok = zb.shape == (2, 3, dim) and ldb.shape == (2, 3) and bool(jnp.allclose(zb.reshape(6, dim), z[:6], atol=1e-5))
    check("extra batch axes", ok, f"got shapes {zb.shape}, {ldb.shape}")
    ze, lde = fwd_t.apply(params, x[:3])  # eager, on a few rows
    ok = bool(jnp.allclose(ze, z[:3], atol=1e-4 * scale) & jnp.allclose(lde, ld[:3], atol=1e-3 * (1 + jnp.abs(ld[:3]))))
    check("jit matches eager", ok, "jitted forward differs from the eager one")
    zv, ldv = jax.jit(jax.vmap(fwd_t.apply, in_axes=(None, 0)))(params, x[:8])
    ok = bool(jnp.allclose(zv, z[:8], atol=1e-4 * scale) & jnp.allclose(ldv, ld[:8], atol=1e-3 * (1 + jnp.abs(ld[:8]))))
    check("vmap matches batch", ok, "vmapped forward differs")

    # Gradients: of the log-likelihood (params and data) and of the inverse.
    def loglik(p, data):
        zz, lld = fwd_t.apply(p, data)
        return jnp.mean(standard_normal_log_prob(zz) + lld)

    gp, gx = jax.jit(jax.grad(loglik, argnums=(0, 1)))(params, x)
    ok = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves((gp, gx)))
    check("grad of log-likelihood finite", ok, "NaN/inf gradient")
    zs = z[:16]

    def inv_sum(p, zz):
        xx, ild_ = inv_t.apply(p, zz)
        return jnp.sum(jnp.sin(xx)) + jnp.sum(ild_)

    gip, giz = jax.jit(jax.grad(inv_sum, argnums=(0, 1)))(params, zs)
    ok = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves((gip, giz)))
    check("grad of inverse finite", ok, "NaN/inf gradient through the inverse")
    if tol["fd"] is not None and ok:
        _fd_check(jax.jit(inv_sum), params, zs, gip, giz, seed, tol["fd"], check)


def _likelihoods(fwd, p, n):
    """Mean log-likelihood with a N(0, I) base, and with the best diagonal Gaussian base."""
    z, ld = fwd(p)
    z, ld = z[:n], ld[:n]
    std_ll = float(jnp.mean(standard_normal_log_prob(z) + ld))
    var = jnp.var(z, axis=0) + 1e-12
    diag_ll = float(jnp.mean(ld) - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * var) + 1.0))
    return std_ll, diag_ll


def _check_fit_gain(fwd, default, fitted, n, dim, tag, check, report):
    """The fitted layer must beat the default init.

    Under a N(0, I) base, rotations are likelihood-neutral, so a layer passes
    when it does not lower that likelihood and raises either it or the
    likelihood of the best diagonal Gaussian fitted after the layer (which is
    what decorrelating rotations improve).
    """
    s0, d0 = _likelihoods(fwd, default, n)
    s1, d1 = _likelihoods(fwd, fitted, n)
    tol = 1e-4 * (1.0 + abs(s0))
    if dim == 1 and abs(s1 - s0) <= tol and abs(d1 - d0) <= tol:
        report.skipped.append(f"{tag} fit gain (the fitted layer is likelihood-neutral in 1-D)")
        return
    ok = s1 >= s0 - tol and (s1 > s0 + tol or d1 > d0 + tol)
    check(
        "fit raises likelihood over default init",
        ok,
        f"N(0,I)-base log-lik {s0:.4f} -> {s1:.4f}; diagonal-Gaussian-base {d0:.4f} -> {d1:.4f}",
    )


def _fd_check(fn, params, zs, gp, gz, seed, tol, check):
    """Directional finite differences (float64) against reverse-mode grads."""
    rng = np.random.default_rng(seed + 7)
    dp = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
    dz = jnp.asarray(rng.standard_normal(zs.shape), zs.dtype)
    eps = 1e-5
    plus = fn(jax.tree.map(lambda a, d: a + eps * d, params, dp), zs + eps * dz)
    minus = fn(jax.tree.map(lambda a, d: a - eps * d, params, dp), zs - eps * dz)
    fd = float((plus - minus) / (2 * eps))
    ad = float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(gp), jax.tree.leaves(dp), strict=True)))
    ad += float(jnp.vdot(gz, dz))
    err = abs(fd - ad) / (1.0 + abs(fd))
    ok = math.isfinite(err) and err < tol
    check("grad of inverse matches finite differences", ok, f"autodiff {ad:.6g} vs finite differences {fd:.6g}")


class IsolatedLayer:
    """One family's layer on its own: jitted ``init``, ``forward`` and ``inverse``.

    For testing a family without building a flow. Compiled functions are
    cached per (dim, fully resolved options), so equivalent calls share one
    compilation.

    Args:
      family: The :class:`gaussplug.Family` to wrap.
      dim: Default data dimension.
      key: PRNG key used by :meth:`init`.

    Example:
      >>> import jax.numpy as jnp, gaussplug
      >>> layer = IsolatedLayer(gaussplug.families()["standardize"].family, dim=2)
      >>> y, log_det = layer.forward()(layer.init(), jnp.ones((3, 2)))
      >>> y.shape, log_det.shape
      ((3, 2), (3,))
    """

    def __init__(self, family: Family, dim: int, key=None):
        self.family = family
        self.dim = dim
        self.key = jax.random.PRNGKey(0) if key is None else key
        self._cache: dict[tuple, Any] = {}

    def _transformed(self, what: str, dim: int | None, opts: Mapping[str, Any]):
        dim = self.dim if dim is None else dim
        resolved = {**self.family.options, **opts}
        cache_key = (what, dim, tuple(sorted((k, repr(v)) for k, v in resolved.items())))
        if cache_key not in self._cache:
            if what == "init":
                fn = hk.transform(lambda: self.family.make_bijector(dim, **resolved)).init
            else:
                layer = hk.transform(lambda x: getattr(self.family.make_bijector(dim, **resolved), what)(x))
                fn = jax.jit(hk.without_apply_rng(layer).apply)
            self._cache[cache_key] = fn
        return self._cache[cache_key]

    def init(self, dim: int | None = None, **opts):
        """Fresh params of one layer: ``hk.transform(make_bijector).init(key)``."""
        return jax.jit(self._transformed("init", dim, opts))(self.key)

    def init_shapes(self, dim: int | None = None, **opts):
        """Shapes and dtypes of the params :meth:`init` would create (traced, not compiled)."""
        return jax.eval_shape(self._transformed("init", dim, opts), self.key)

    def forward(self, dim: int | None = None, **opts):
        """Jitted ``apply(params, x) -> (y, log_det)`` of ``forward_and_log_det``."""
        return self._transformed("forward_and_log_det", dim, opts)

    def inverse(self, dim: int | None = None, **opts):
        """Jitted ``apply(params, y) -> (x, log_det)`` of ``inverse_and_log_det``."""
        return self._transformed("inverse_and_log_det", dim, opts)
