"""The sections of the conformance suite that :func:`gaussplug.testing.check_family` runs on each case.

A case is one (family, dim, dtype) run (``gaussplug.testing._Case``). Each
section checks one stage of the family's layer on it (``resolve``,
``validate``, ``make_bijector``, the forward and ``fit``, the inverse, the
log-det against ``jax.jacobian``, batching, gradients) and records what passed
or failed; :func:`_run_sections` runs them in order and skips those whose
prerequisites failed. :func:`_as_built` gives options as a flow built from a
spec would see them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from gaussplug._family import FIT_WROTE_INPUT, fit_input, fit_wrote_input
from gaussplug._param_checks import non_finite_count
from gaussplug._runtime import standard_normal_log_prob
from gaussplug._spec import Layer, _jsonable

if TYPE_CHECKING:
    from gaussplug.testing import _Case


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


class _Blocked(Exception):
    """Raised by a section after recording a failure that makes the sections needing it meaningless."""


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


def _same_as_section(c: _Case) -> None:
    """``same_as`` is True for the bijector itself and False for a bijector of another type (distrax's contract)."""
    family, dim, opts = c.family, c.dim, c.opts
    other = distrax.Block(distrax.ScalarAffine(shift=0.0), 1)

    def answers():
        bijector = family.make_bijector(dim, **opts)
        return bool(bijector.same_as(bijector)), bool(bijector.same_as(other))

    itself, to_other = hk.without_apply_rng(hk.transform(answers)).apply(c.default)
    c.check("same_as itself", itself, "bijector.same_as(bijector) returned False; expected True")
    c.check("same_as another type", not to_other, "same_as(a distrax Block of ScalarAffine) returned True")


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


def _leaves_by_path(tree) -> dict[str, Any]:
    """Each leaf by its path (the leaf itself, held, so that identities compare safely)."""
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _written_paths(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The paths whose leaf was replaced, added or removed: where a params mapping was written into."""
    return sorted(k for k in before.keys() | after.keys() if k not in before or k not in after
                  or before[k] is not after[k])  # fmt: skip


def _fit_section(c: _Case) -> None:
    """``fit`` leaves its inputs as they were and returns finite params of the default params' structure.

    ``x`` is given read-only, as the warm start gives it (:func:`gaussplug._family.fit_input`).
    """
    c.params = c.default
    if c.family.fit is None:
        return
    before = _leaves_by_path(c.default)
    try:
        fitted = c.family.fit(fit_input(c.x_np.astype(c.dtype)), c.default, key=jax.random.fold_in(c.key, 1),
                              **c.opts)  # fmt: skip
    except ValueError as err:
        if not fit_wrote_input(err):
            raise
        c.check("fit leaves its data x unchanged", False, f"raised ValueError: {err} ({FIT_WROTE_INPUT})")
        raise _Blocked("fit wrote into its data x") from None
    changed = _written_paths(before, _leaves_by_path(c.default))
    c.check("fit leaves its params argument unchanged", not changed,
            f"the params passed to fit changed at {', '.join(changed[:3])}: fit must return new params "
            "(e.g. {**params, ...}), not write into the ones it is given")  # fmt: skip
    if changed:
        raise _Blocked("fit wrote into its params argument")
    want = jax.tree.map(lambda a: (a.shape, jnp.dtype(a.dtype).name), c.default)
    try:
        got = jax.tree.map(lambda a: (jnp.shape(a), jnp.dtype(jnp.asarray(a).dtype).name), dict(fitted))
    except Exception as err:
        got = f"unreadable ({err})"
    c.check("fit returns params of the same structure", want == got, f"expected {want}; got {got}")
    if want != got:
        raise _Blocked("fit returned params of another structure")
    c.params = c.cast(fitted)
    finite = _all_finite(c.params)
    c.check("fit params finite", finite, "fit returned NaN/inf")


def _fitted_forward_section(c: _Case) -> None:
    """Forward with the fitted params: likelihood gain over the default init, finite outputs."""
    c.out = c.default_out if c.params is c.default else c.fwd(c.params, c.both)
    if c.family.fit is not None:
        _check_fit_gain(c)
    z_all, ld_all = _host(c.out)
    z, ld = z_all[: c.n], ld_all[: c.n]
    c.check("forward finite", _all_finite((z, ld)), "NaN/inf on the data")
    zf, ldf = z_all[c.n :], ld_all[c.n :]
    c.check("forward finite far outside the data", _all_finite((zf, ldf)), f"z={zf}, log-det={ldf}")


def _inverse_section(c: _Case) -> None:
    """Round trip on the data and far outside it; inverse log-det against the forward one."""
    n, tol = c.n, c.tol
    z_all, ld_all = _host(c.out)
    ld = ld_all[:n]
    c.inv_input = np.where(np.isfinite(z_all), z_all, 0).astype(z_all.dtype)
    inv_out = c.inv(c.params, jnp.asarray(c.inv_input))
    _check_shapes(c, "inverse", inv_out, z_all.shape)
    back_all, ild_all = _host(inv_out)
    both = np.asarray(c.both)
    err = float(np.max(np.abs(back_all[:n] - both[:n]))) / c.scale
    c.check("round trip", err < tol["roundtrip"], f"max relative error {err:.2e}")
    err = float(np.max(np.abs(ild_all[:n] + ld)) / (1.0 + np.max(np.abs(ld))))
    c.check("inverse log-det = -forward log-det", err < tol["logdet"], f"max relative error {err:.2e}")
    if _all_finite((z_all[n:], ld_all[n:])):
        far = both[n:]
        err = float(np.max(np.abs(back_all[n:] - far) / (np.abs(far) + 1.0)))
        c.check("round trip far outside the data", err < 10 * tol["roundtrip"], f"max relative error {err:.2e}")


def _jacobian_section(c: _Case) -> None:
    """Log-det against ``jax.jacobian`` of the forward."""
    ld = np.asarray(c.out[1])
    jac = jax.jit(jax.vmap(jax.jacobian(lambda v: c.fwd_t.apply(c.params, v)[0])))(c.rows(6))
    ref = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
    err = float(np.max(np.abs(ref - ld[:6])) / (1.0 + np.max(np.abs(ref))))
    c.check("log-det matches jax.jacobian", err < c.tol["logdet"], f"max relative error {err:.2e}")


def _batching_section(c: _Case) -> None:
    """Extra batch axes, eager vs jit, and vmap."""
    z, ld = _host(c.out)
    dim, scale = c.dim, c.scale
    zb, ldb = _host(c.fwd(c.params, c.rows(6).reshape(2, 3, dim)))
    ok = zb.shape == (2, 3, dim) and ldb.shape == (2, 3) and np.allclose(zb.reshape(6, dim), z[:6], atol=1e-5)
    c.check("extra batch axes", ok, f"got shapes {zb.shape}, {ldb.shape}")
    ze, lde = _host(c.fwd_t.apply(c.params, c.rows(3)))  # eager, on a few rows
    ok = np.allclose(ze, z[:3], atol=1e-4 * scale) and np.allclose(lde, ld[:3], atol=1e-3 * (1 + np.abs(ld[:3])))
    c.check("jit matches eager", ok, "jitted forward differs from the eager one")
    zv, ldv = _host(jax.jit(jax.vmap(c.fwd_t.apply, in_axes=(None, 0)))(c.params, c.rows(8)))
    ok = np.allclose(zv, z[:8], atol=1e-4 * scale) and np.allclose(ldv, ld[:8], atol=1e-3 * (1 + np.abs(ld[:8])))
    c.check("vmap matches batch", ok, "vmapped forward differs")


def _grad_section(c: _Case) -> None:
    """Gradients of the log-likelihood with respect to the params and the data are finite."""
    fwd_t = c.fwd_t

    def loglik(p, data):
        zz, lld = fwd_t.apply(p, data)
        return jnp.mean(standard_normal_log_prob(zz) + lld)

    gp, gx = jax.jit(jax.grad(loglik, argnums=(0, 1)))(c.params, c.x)
    ok = _all_finite((gp, gx))
    c.check("grad of log-likelihood finite", ok, "NaN/inf gradient")


def _inverse_grad_section(c: _Case) -> None:
    """Gradients through the inverse are finite and (in float64) match finite differences."""
    inv_t = c.inv_t
    zs = jnp.asarray(c.inv_input[:16])

    def inv_sum(p, zz):
        xx, ild_ = inv_t.apply(p, zz)
        return jnp.sum(jnp.sin(xx)) + jnp.sum(ild_)

    gip, giz = jax.jit(jax.grad(inv_sum, argnums=(0, 1)))(c.params, zs)
    ok = _all_finite((gip, giz))
    c.check("grad of inverse finite", ok, "NaN/inf gradient through the inverse")
    if c.tol["fd"] is not None and ok:
        _fd_check(_inv_sum_compiled(c, zs), c.params, zs, gip, giz, c.seed, c.tol["fd"], c.check)


def _inv_sum_compiled(c: _Case, zs):
    """``inv_sum`` of :func:`_inverse_grad_section` through ``c.inv``, which is already compiled.

    ``c.inv`` was compiled for the inverse section's input (``c.inv_input``);
    ``zs`` is written over its first rows and the rest of the result ignored, so
    the finite differences cost no new compilation (the inverse is per row).
    """
    rows = zs.shape[0]

    def inv_sum(p, zz):
        full = c.inv_input.copy()
        full[:rows] = zz
        xx, ild_ = _host(c.inv(p, jnp.asarray(full)))
        return float(np.sum(np.sin(xx[:rows])) + np.sum(ild_[:rows]))

    return inv_sum


def _host(tree):
    """``tree`` with every array as a NumPy array (checks on host arrays compile nothing)."""
    return jax.tree.map(np.asarray, tree)


def _all_finite(tree) -> bool:
    """Whether every leaf of ``tree`` is free of NaN and inf."""
    return not any(non_finite_count(np.asarray(a)) for a in jax.tree.leaves(tree))


_FITTED = "forward with the fitted params"
#: (stage name, section, stages it needs), in running order. A stage that raises is reported
#: under its name; the stages needing it are then skipped.
_SECTIONS = (
    ("resolve", _resolve_section, ()),
    ("validate", _validate_section, ("resolve",)),
    ("make_bijector", _make_bijector_section, ("validate",)),
    ("same_as", _same_as_section, ("make_bijector",)),
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
    z, ld = (np.asarray(a, np.float64)[:n] for a in out)
    std_ll = float(np.mean(standard_normal_log_prob(z) + ld))  # on the host: NumPy in, NumPy out
    var = np.var(z, axis=0) + 1e-12
    diag_ll = float(np.mean(ld) - 0.5 * np.sum(np.log(2 * np.pi * var) + 1.0))
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
    params, zs, gp, gz = _host((params, zs, gp, gz))
    dp = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), params)
    dz = rng.standard_normal(zs.shape).astype(zs.dtype)
    eps = 1e-5

    def shifted(sign):
        moved = jax.tree.map(lambda a, d: jnp.asarray(a + sign * eps * d), params, dp)
        return fn(moved, zs + sign * eps * dz)

    fd = float((shifted(1) - shifted(-1)) / (2 * eps))
    ad = float(sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(gp), jax.tree.leaves(dp), strict=True)))
    ad += float(np.vdot(gz, dz))
    err = abs(fd - ad) / (1.0 + abs(fd))
    ok = math.isfinite(err) and err < tol
    check("grad of inverse matches finite differences", ok, f"autodiff {ad:.6g} vs finite differences {fd:.6g}")
