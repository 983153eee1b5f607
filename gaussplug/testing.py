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

This module holds the public API and the case each check runs on; the checks
themselves are the sections in :mod:`gaussplug._conformance_checks`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from gaussplug._conformance_checks import _as_built, _run_sections
from gaussplug._family import Family
from gaussplug._keys import as_key, as_seed
from gaussplug._plugins import get_registry
from gaussplug._scalars import is_int
from gaussplug._spec import _jsonable, unknown_option_message

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


def conformance_data(dim: int, n: int = 256, key=0, *, seed=None) -> np.ndarray:
    """Correlated, skewed, bimodal test data of shape ``(n, dim)`` (float64).

    Args:
      dim: Columns.
      n: Rows.
      key: An int seed in ``[0, 2**32)`` or a JAX PRNG key, as everywhere in gaussplug.
      seed: Deprecated name of ``key``.

    Returns:
      The data, float64.

    Example:
      >>> conformance_data(3, 10, key=1).shape
      (10, 3)
    """
    seed = as_seed(_renamed_seed("conformance_data", key, seed))
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


def _renamed_seed(where: str, key, seed):
    """``key``, or the deprecated ``seed`` given in its place (with a ``DeprecationWarning``)."""
    if seed is None:
        return key
    if not (is_int(key) and int(key) == 0):
        raise TypeError(f"{where}: got both key={key!r} and seed={seed!r}; pass key only (seed is its old name).")
    warnings.warn(f"{where}(seed=...) is deprecated; pass key=... (an int seed or a JAX PRNG key), as everywhere "
                  "in gaussplug.", DeprecationWarning, stacklevel=3)
    return seed


def _resolve_family(name_or_family, registry) -> Family:
    if isinstance(name_or_family, Family):
        return name_or_family
    return (registry or get_registry()).get(name_or_family)


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
    key=0,
    registry=None,
    seed=None,
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
      key: An int seed in ``[0, 2**32)`` or a JAX PRNG key: the test data
        (:func:`conformance_data`), the keys ``init`` and ``fit`` get, and the
        finite-difference directions derive from it.
      registry: Registry to look names up in (default: the process-wide one).
      seed: Deprecated name of ``key`` (an int); warns.

    Returns:
      A :class:`ConformanceReport` listing the checks that ran.

    Raises:
      AssertionError: At least one check failed; the message lists every failure
        with its dimension and dtype (and, for an exception, the stage that
        raised it, its type and message).
      TypeError: ``key`` is neither an int seed nor a JAX PRNG key, or both
        ``key`` and the deprecated ``seed`` are given.
      ValueError: ``options`` names an option the family does not accept (the
        message lists those it does) or holds a value that is not
        JSON-compatible, or ``dtypes`` holds something other than ``"float32"``
        and ``"float64"``, or ``dims`` holds something other than ints, or
        ``dims`` and ``dtypes`` leave nothing to check (no dim at least the
        family's ``min_dim``, or no dtype).

    Example:
      >>> from gaussplug.testing import check_family
      >>> report = check_family("standardize", dims=(2,), dtypes=("float32",))
      >>> report.failed
      []
    """
    family = _resolve_family(name_or_family, registry)
    key = _renamed_seed("check_family", key, seed)
    prng, seed = as_key(key), as_seed(key)
    _check_dtypes(dtypes)
    dims, dtypes = tuple(dims), tuple(dtypes)
    for d in dims:
        if not is_int(d):
            raise ValueError(f"check_family: dims: expected ints; got {d!r} ({type(d).__name__}) in dims={dims!r}.")
    dims = tuple(int(d) for d in dims)
    runnable = [d for d in dims if d >= family.min_dim]
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
                _run_sections(_Case(family, dim, dtype, dict(base), n, seed, report, prng))
    if report.failed:
        raise AssertionError(str(report))
    return report


@dataclasses.dataclass
class _Case:
    """One (family, dim, dtype) run of the suite: its inputs and what earlier sections computed."""

    family: Family
    dim: int
    dtype: str
    opts: dict[str, Any]
    n: int
    seed: int  # the int seed of the NumPy draws (data, finite-difference directions)
    report: ConformanceReport
    key: Any  # the JAX PRNG key (init, fit)
    fwd_t: Any = None  # Haiku transforms of forward_and_log_det / inverse_and_log_det
    inv_t: Any = None
    fwd: Any = None  # their jitted apply
    inv: Any = None
    default: Any = None  # default-initialised params, and the forward's outputs with them
    default_out: Any = None
    params: Any = None  # fitted params (the default ones without a fit), and the forward's outputs with them
    out: Any = None
    inv_input: Any = None  # the inverse section's input (NumPy): the fitted forward's outputs, non-finite ones zeroed

    def __post_init__(self):
        self.tag = f"dim={self.dim} {self.dtype}"
        self.tol = _TOL[self.dtype]
        self.jdtype = jnp.dtype(self.dtype)
        self.x_np = conformance_data(self.dim, self.n, self.seed)
        std = self.x_np.std(0) + 1e-3
        signs = np.sign(np.arange(self.dim) % 2 - 0.5)[None]
        far_np = np.concatenate([self.x_np.mean(0) + k * std * signs for k in (8, -8, 25, -25)])
        both = np.concatenate([self.x_np, far_np]).astype(self.dtype)
        self.both = jnp.asarray(both)  # data rows, then 4 far rows
        self.x = jnp.asarray(both[: self.n])
        self.scale = float(np.max(np.abs(self.x_np))) + 1.0

    def rows(self, k: int):
        """The first ``k`` data rows as a JAX array (sliced on the host: no eager op to compile)."""
        return jnp.asarray(np.asarray(self.both)[:k])

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one check as passed or, with ``detail``, as failed."""
        (self.report.passed if ok else self.report.failed).append(f"{self.tag} {name}" + ("" if ok else f": {detail}"))

    def cast(self, params):
        """``params`` as a mutable dict of arrays in the case's dtype."""
        return jax.tree.map(lambda a: jnp.asarray(a, self.jdtype), hk.data_structures.to_mutable_dict(params))


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
