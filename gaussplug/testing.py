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
log-likelihood over the family's default initialisation. Options reach the
family as they would in a flow built from a spec (JSON values), and an
exception raised by the family's code, like a wrong output shape, is reported
as a failed check rather than ending the run.
"""

from __future__ import annotations

import dataclasses
import json
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
from gaussplug._spec import Layer, _jsonable, unknown_option_message

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


def _as_built(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Options as :func:`gaussplug.build_flow` hands them to ``make_bijector`` and ``fit``.

    Spec options are JSON: the spec checker makes them plain JSON values (tuples
    become lists) and the plan keeps them as JSON text, which ``Layer.options``
    parses back. Both steps are reused here, so the kit sees what a flow sees.

    Args:
      options: Option name to value.
      where: How an error message names ``options``.

    Returns:
      A fresh dict of plain JSON values.

    Raises:
      ValueError: A value is not JSON-compatible (a :class:`gaussplug.SpecError`); the message names it.
    """
    plain = _jsonable(dict(options), where)
    return Layer(where, "", json.dumps(plain, sort_keys=True), where).options


def _check_dtypes(dtypes: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every dtype is ``"float32"`` or ``"float64"``."""
    for dtype in dtypes:
        if dtype not in _TOL:
            raise ValueError(f"dtypes: expected 'float32' or 'float64'; got {dtype!r}.")


def _given_options(family: Family, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's ``options`` as a spec would carry them, after checking their names.

    Raises:
      ValueError: ``options`` is not a mapping, names an option the family does not
        accept (the message lists those it does), or holds a value JSON cannot carry.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(
            f"check_family(options=...): expected a mapping of option name to value; got "
            f"{type(options).__name__} {options!r}."
        )
    for key in options:
        if key not in family.options:
            raise ValueError(f"check_family(options=...) ({family.name}): {unknown_option_message(key, family)}")
    try:
        return _as_built(options, "check_family(options=...)")
    except ValueError as err:
        raise ValueError(f"{err} Option values must be JSON-compatible, as in a spec.") from None


def _default_problems(family: Family) -> list[str]:
    """One message per default option value that a spec could not carry (not JSON-compatible)."""
    problems = []
    for key, value in family.options.items():
        try:
            _jsonable(value, f"option {key!r} default")
        except ValueError as err:
            problems.append(f"{err} Option values must be JSON-compatible: build_flow passes them through JSON specs.")
    return problems


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

    Options reach ``make_bijector``, ``fit`` and ``validate`` exactly as
    :func:`gaussplug.build_flow` passes them: as JSON values (a default of
    ``(4, 4)`` arrives as ``[4, 4]``), after ``resolve(options, 0)``. A default
    that JSON cannot carry is a failed check.

    When the family's code raises (``resolve``, ``validate``, ``make_bijector``,
    ``forward``, ``inverse``, ``fit`` ...), or the forward or inverse returns
    outputs of the wrong shape, that is a failed check too: the checks that
    depend on it are skipped for that dimension and dtype (listed as skipped,
    with the reason), and the suite goes on with the rest.

    Args:
      name_or_family: A registered family name or a :class:`gaussplug.Family`.
      dims: Data dimensions to try; those below the family's ``min_dim`` are skipped.
      dtypes: ``"float32"`` and/or ``"float64"`` (the latter runs under x64).
      options: Options overriding the family's defaults (JSON-compatible values).
      n: Rows of test data.
      seed: Seed for the data and keys.
      registry: Registry to look names up in (default: the process-wide one).

    Returns:
      A :class:`ConformanceReport` listing the checks that ran.

    Raises:
      AssertionError: At least one check failed; the message lists every failure
        with its dimension and dtype (and, for an exception, the stage that
        raised it, its type and message).
      ValueError: ``options`` names an option the family does not accept (the
        message lists those it does) or holds a value that is not
        JSON-compatible, or ``dtypes`` holds something other than ``"float32"``
        and ``"float64"``, or ``dims`` and ``dtypes`` leave nothing to check (no
        dim at least the family's ``min_dim``, or no dtype).

    Example:
      >>> from gaussplug.testing import check_family
      >>> report = check_family("standardize", dims=(2,), dtypes=("float32",))
      >>> report.failed
      []
    """
    family = _resolve_family(name_or_family, registry)
    _check_dtypes(dtypes)
    dims, dtypes = tuple(dims), tuple(dtypes)
    runnable = [d for d in dims if isinstance(d, int) and not isinstance(d, bool) and d >= family.min_dim]
    if not runnable or not dtypes:
        raise ValueError(
            f"check_family({family.name!r}): nothing to check with dims={dims} and dtypes={dtypes}: expected at "
            f"least one dtype and one dim >= {family.min_dim} (the family's min_dim); a report of 0 checks would "
            "pass without testing anything."
        )
    given = _given_options(family, options)
    report = ConformanceReport(family.name)
    report.failed += [f"options: {problem}" for problem in _default_problems(family)]
    if report.failed:
        report.skipped.append("every other check (skipped because build_flow could not pass the defaults on)")
        raise AssertionError(str(report))
    base = {**_as_built(family.options, f"family {family.name!r} defaults"), **given}
    for dim in dims:
        if dim < family.min_dim:
            report.skipped.append(f"dim={dim} (family needs dim >= {family.min_dim})")
            continue
        for dtype in dtypes:
            with jax.enable_x64(dtype == "float64"):
                _run_sections(_Case(family, dim, dtype, dict(base), n, seed, report))
    if report.failed:
        raise AssertionError(str(report))
    return report


class _Blocked(Exception):
    """Raised by a section after recording a failure that makes the sections needing it meaningless."""


@dataclasses.dataclass
class _Case:
    """One (family, dim, dtype) run of the suite: its inputs and what earlier sections computed."""

    family: Family
    dim: int
    dtype: str
    opts: dict[str, Any]
    n: int
    seed: int
    report: ConformanceReport
    fwd_t: Any = None  # Haiku transforms of forward_and_log_det / inverse_and_log_det
    inv_t: Any = None
    fwd: Any = None  # their jitted apply
    inv: Any = None
    default: Any = None  # default-initialised params, and the forward's outputs with them
    default_out: Any = None
    params: Any = None  # fitted params (the default ones without a fit), and the forward's outputs with them
    out: Any = None

    def __post_init__(self):
        self.tag = f"dim={self.dim} {self.dtype}"
        self.tol = _TOL[self.dtype]
        self.jdtype = jnp.dtype(self.dtype)
        self.key = jax.random.PRNGKey(self.seed)
        self.x_np = conformance_data(self.dim, self.n, self.seed)
        std = self.x_np.std(0) + 1e-3
        signs = np.sign(np.arange(self.dim) % 2 - 0.5)[None]
        far_np = np.concatenate([self.x_np.mean(0) + k * std * signs for k in (8, -8, 25, -25)])
        self.both = jnp.asarray(np.concatenate([self.x_np, far_np]), self.jdtype)  # data rows, then 4 far rows
        self.x = self.both[: self.n]
        self.scale = float(np.max(np.abs(self.x_np))) + 1.0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one check as passed or, with ``detail``, as failed."""
        (self.report.passed if ok else self.report.failed).append(f"{self.tag} {name}" + ("" if ok else f": {detail}"))

    def cast(self, params):
        """``params`` as a mutable dict of arrays in the case's dtype."""
        return jax.tree.map(lambda a: jnp.asarray(a, self.jdtype), hk.data_structures.to_mutable_dict(params))


def _run_sections(case: _Case) -> None:
    """Run every section of the suite on one case, skipping those whose prerequisites failed."""
    blocked: dict[str, str] = {}
    skipped: dict[str, list[str]] = {}
    for name, section, needs in _SECTIONS:
        reason = next((blocked[dep] for dep in needs if dep in blocked), None)
        if reason is None:
            reason = _run_section(case, name, section)
        else:
            skipped.setdefault(reason, []).append(name)
        if reason is not None:
            blocked[name] = reason
    for reason, names in skipped.items():
        case.report.skipped.append(f"{case.tag} {', '.join(names)} (skipped because {reason})")


def _run_section(case: _Case, name: str, section) -> str | None:
    """Run one section; if it fails, return why the sections needing it are skipped."""
    try:
        section(case)
    except _Blocked as err:
        return str(err)
    except Exception as err:  # the family's code raised: report it and go on with what does not need it
        case.check(name, False, f"raised {type(err).__name__}: {err}")
        return f"{name} raised {type(err).__name__}"
    return None


def _resolve_section(c: _Case) -> None:
    """Options after ``resolve(options, 0)``, as for a flow's first layer of the family."""
    if c.family.resolve is not None:
        c.opts = _as_built(c.family.resolve(dict(c.opts), 0), "resolve(options, 0)")


def _validate_section(c: _Case) -> None:
    """The family's ``validate`` accepts the options at this dimension."""
    if c.family.validate is not None:
        c.family.validate(c.dim, dict(c.opts))


def _make_bijector_section(c: _Case) -> None:
    """Transforms of the layer, and its default params."""
    family, dim, opts = c.family, c.dim, c.opts
    init = hk.transform(lambda: family.make_bijector(dim, **opts))
    c.fwd_t = hk.without_apply_rng(hk.transform(lambda x: family.make_bijector(dim, **opts).forward_and_log_det(x)))
    c.inv_t = hk.without_apply_rng(hk.transform(lambda z: family.make_bijector(dim, **opts).inverse_and_log_det(z)))
    # One jitted function per map, called on as few distinct shapes as possible:
    # compilation, not arithmetic, dominates this suite.
    c.fwd = jax.jit(c.fwd_t.apply)
    c.inv = jax.jit(c.inv_t.apply)
    c.default = c.cast(init.init(c.key))


def _check_shapes(c: _Case, what: str, out, in_shape: tuple[int, ...]) -> None:
    """``out`` is ``(y, log_det)`` with ``y`` shaped like the input and ``log_det`` summed over its last axis.

    Raises:
      _Blocked: After recording the failure, when a shape is wrong.
    """
    y, log_det = out
    want = in_shape[:-1]
    ok = jnp.shape(y) == in_shape and jnp.shape(log_det) == want
    detail = (
        f"for an input of shape {in_shape}, expected an output of shape {in_shape} and a log-det of shape {want} "
        f"(summed over the event axis); got {jnp.shape(y)} and {jnp.shape(log_det)}"
    )
    c.check(f"{what} shapes", ok, detail)
    if not ok:
        raise _Blocked(f"the {what} shapes are wrong")


def _forward_section(c: _Case) -> None:
    """Forward with the default params: output shapes and dtypes."""
    c.default_out = c.fwd(c.default, c.both)
    _check_shapes(c, "forward", c.default_out, c.both.shape)
    z, ld = c.default_out
    c.check("forward dtype", z.dtype == c.jdtype and ld.dtype == c.jdtype, f"got {z.dtype}, {ld.dtype}")


def _fit_section(c: _Case) -> None:
    """``fit`` returns finite params of the default params' structure."""
    c.params = c.default
    if c.family.fit is None:
        return
    fitted = c.family.fit(c.x_np.astype(c.dtype), c.default, key=jax.random.fold_in(c.key, 1), **c.opts)
    want = jax.tree.map(lambda a: (a.shape, jnp.dtype(a.dtype).name), c.default)
    try:
        got = jax.tree.map(lambda a: (jnp.shape(a), jnp.dtype(jnp.asarray(a).dtype).name), dict(fitted))
    except Exception as err:
        got = f"unreadable ({err})"
    c.check("fit returns params of the same structure", want == got, f"expected {want}; got {got}")
    if want != got:
        raise _Blocked("fit returned params of another structure")
    c.params = c.cast(fitted)
    finite = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(c.params))
    c.check("fit params finite", finite, "fit returned NaN/inf")


def _fitted_forward_section(c: _Case) -> None:
    """Forward with the fitted params: likelihood gain over the default init, finite outputs."""
    c.out = c.default_out if c.params is c.default else c.fwd(c.params, c.both)
    if c.family.fit is not None:
        _check_fit_gain(c)
    z_all, ld_all = c.out
    z, ld = z_all[: c.n], ld_all[: c.n]
    c.check("forward finite", bool(jnp.all(jnp.isfinite(z)) & jnp.all(jnp.isfinite(ld))), "NaN/inf on the data")
    zf, ldf = z_all[c.n :], ld_all[c.n :]
    far_ok = bool(jnp.all(jnp.isfinite(zf)) & jnp.all(jnp.isfinite(ldf)))
    c.check("forward finite far outside the data", far_ok, f"z={np.asarray(zf)}, log-det={np.asarray(ldf)}")


def _inverse_section(c: _Case) -> None:
    """Round trip on the data and far outside it; inverse log-det against the forward one."""
    n, tol = c.n, c.tol
    z_all, ld_all = c.out
    ld = ld_all[:n]
    inv_out = c.inv(c.params, jnp.where(jnp.isfinite(z_all), z_all, 0.0))
    _check_shapes(c, "inverse", inv_out, z_all.shape)
    back_all, ild_all = inv_out
    err = float(jnp.max(jnp.abs(back_all[:n] - c.x))) / c.scale
    c.check("round trip", err < tol["roundtrip"], f"max relative error {err:.2e}")
    err = float(jnp.max(jnp.abs(ild_all[:n] + ld)) / (1.0 + jnp.max(jnp.abs(ld))))
    c.check("inverse log-det = -forward log-det", err < tol["logdet"], f"max relative error {err:.2e}")
    if bool(jnp.all(jnp.isfinite(z_all[n:])) & jnp.all(jnp.isfinite(ld_all[n:]))):
        far = c.both[n:]
        err = float(jnp.max(jnp.abs(back_all[n:] - far) / (jnp.abs(far) + 1.0)))
        c.check("round trip far outside the data", err < 10 * tol["roundtrip"], f"max relative error {err:.2e}")


def _jacobian_section(c: _Case) -> None:
    """Log-det against ``jax.jacobian`` of the forward."""
    ld = c.out[1]
    jac = jax.jit(jax.vmap(jax.jacobian(lambda v: c.fwd_t.apply(c.params, v)[0])))(c.x[:6])
    ref = jnp.linalg.slogdet(jac)[1]
    err = float(jnp.max(jnp.abs(ref - ld[:6])) / (1.0 + jnp.max(jnp.abs(ref))))
    c.check("log-det matches jax.jacobian", err < c.tol["logdet"], f"max relative error {err:.2e}")


def _batching_section(c: _Case) -> None:
    """Extra batch axes, eager vs jit, and vmap."""
    z, ld = c.out
    dim, scale, x = c.dim, c.scale, c.x
    zb, ldb = c.fwd(c.params, x[:6].reshape(2, 3, dim))
    ok = zb.shape == (2, 3, dim) and ldb.shape == (2, 3) and bool(jnp.allclose(zb.reshape(6, dim), z[:6], atol=1e-5))
    c.check("extra batch axes", ok, f"got shapes {zb.shape}, {ldb.shape}")
    ze, lde = c.fwd_t.apply(c.params, x[:3])  # eager, on a few rows
    ok = bool(jnp.allclose(ze, z[:3], atol=1e-4 * scale) & jnp.allclose(lde, ld[:3], atol=1e-3 * (1 + jnp.abs(ld[:3]))))
    c.check("jit matches eager", ok, "jitted forward differs from the eager one")
    zv, ldv = jax.jit(jax.vmap(c.fwd_t.apply, in_axes=(None, 0)))(c.params, x[:8])
    ok = bool(jnp.allclose(zv, z[:8], atol=1e-4 * scale) & jnp.allclose(ldv, ld[:8], atol=1e-3 * (1 + jnp.abs(ld[:8]))))
    c.check("vmap matches batch", ok, "vmapped forward differs")


def _grad_section(c: _Case) -> None:
    """Gradients of the log-likelihood with respect to the params and the data are finite."""
    fwd_t = c.fwd_t

    def loglik(p, data):
        zz, lld = fwd_t.apply(p, data)
        return jnp.mean(standard_normal_log_prob(zz) + lld)

    gp, gx = jax.jit(jax.grad(loglik, argnums=(0, 1)))(c.params, c.x)
    ok = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves((gp, gx)))
    c.check("grad of log-likelihood finite", ok, "NaN/inf gradient")


def _inverse_grad_section(c: _Case) -> None:
    """Gradients through the inverse are finite and (in float64) match finite differences."""
    inv_t = c.inv_t
    zs = c.out[0][:16]

    def inv_sum(p, zz):
        xx, ild_ = inv_t.apply(p, zz)
        return jnp.sum(jnp.sin(xx)) + jnp.sum(ild_)

    gip, giz = jax.jit(jax.grad(inv_sum, argnums=(0, 1)))(c.params, zs)
    ok = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves((gip, giz)))
    c.check("grad of inverse finite", ok, "NaN/inf gradient through the inverse")
    if c.tol["fd"] is not None and ok:
        _fd_check(jax.jit(inv_sum), c.params, zs, gip, giz, c.seed, c.tol["fd"], c.check)


_FITTED = "forward with the fitted params"
#: (stage name, section, stages it needs), in running order. A stage that raises is reported
#: under its name; the stages needing it are then skipped.
_SECTIONS = (
    ("resolve", _resolve_section, ()),
    ("validate", _validate_section, ("resolve",)),
    ("make_bijector", _make_bijector_section, ("validate",)),
    ("forward", _forward_section, ("make_bijector",)),
    ("fit", _fit_section, ("forward",)),
    (_FITTED, _fitted_forward_section, ("fit",)),
    ("inverse", _inverse_section, (_FITTED,)),
    ("forward under jax.jacobian", _jacobian_section, (_FITTED,)),
    ("forward with batch axes, eagerly and under vmap", _batching_section, (_FITTED,)),
    ("grad of the log-likelihood", _grad_section, (_FITTED,)),
    ("grad of the inverse", _inverse_grad_section, ("inverse",)),
)


def _likelihoods(out, n):
    """Mean log-likelihood with a N(0, I) base, and with the best diagonal Gaussian base."""
    z, ld = out
    z, ld = z[:n], ld[:n]
    std_ll = float(jnp.mean(standard_normal_log_prob(z) + ld))
    var = jnp.var(z, axis=0) + 1e-12
    diag_ll = float(jnp.mean(ld) - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * var) + 1.0))
    return std_ll, diag_ll


def _check_fit_gain(c: _Case) -> None:
    """The fitted layer must beat the default init.

    Under a N(0, I) base, rotations are likelihood-neutral, so a layer passes
    when it does not lower that likelihood and raises either it or the
    likelihood of the best diagonal Gaussian fitted after the layer (which is
    what decorrelating rotations improve).
    """
    s0, d0 = _likelihoods(c.default_out, c.n)
    s1, d1 = _likelihoods(c.out, c.n)
    tol = 1e-4 * (1.0 + abs(s0))
    if c.dim == 1 and abs(s1 - s0) <= tol and abs(d1 - d0) <= tol:
        c.report.skipped.append(f"{c.tag} fit gain (the fitted layer is likelihood-neutral in 1-D)")
        return
    ok = s1 >= s0 - tol and (s1 > s0 + tol or d1 > d0 + tol)
    c.check(
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

    For testing a family without building a flow. Options reach
    ``make_bijector`` as :func:`gaussplug.build_flow` passes them: the family's
    defaults overridden by the given ones, as plain JSON values (a tuple
    arrives as a list); an option the family does not declare is a
    ``ValueError``. Compiled functions are cached per (dim, options), so
    equivalent calls share one compilation.

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
        for key in opts:
            if key not in self.family.options:
                raise ValueError(f"IsolatedLayer ({self.family.name}): {unknown_option_message(key, self.family)}")
        # As build_flow hands them to make_bijector: plain JSON values (a tuple arrives as a list).
        resolved = _as_built({**self.family.options, **opts}, f"IsolatedLayer ({self.family.name}) options")
        cache_key = (what, dim, json.dumps(resolved, sort_keys=True))
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
