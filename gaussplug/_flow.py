"""The immutable :class:`Flow` and :func:`build_flow`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from gaussplug import _memory
from gaussplug._buckets import bucket, on_bucket, traced
from gaussplug._data import as_data, default_dtype, padded_batches
from gaussplug._diagnose import warn_inf_samples, warn_nan_rows
from gaussplug._errors import PluginError
from gaussplug._fork import check_not_forked
from gaussplug._json import to_json
from gaussplug._keys import as_key
from gaussplug._plugins import get_registry
from gaussplug._registry import Registry
from gaussplug._runtime import Runtime, get_runtime
from gaussplug._scalars import int_at_least
from gaussplug._spec import Plan, make_plan

__all__ = ["Flow", "build_flow"]


class _Meta:
    """Hashable JSON metadata carried by a flow (e.g. warm-start history)."""

    __slots__ = ("text",)

    def __init__(self, data: Mapping[str, Any] | None):
        if data is not None and not isinstance(data, Mapping):
            raise TypeError(f"metadata: expected a mapping with string keys; got {type(data).__name__}.")
        plain = to_json(dict(data or {}), "metadata", TypeError, arrays=True, finite=False)
        self.text = json.dumps(plain, sort_keys=True)

    def __eq__(self, other):
        return isinstance(other, _Meta) and other.text == self.text

    def __hash__(self):
        return hash(self.text)


def _copy_params(params) -> dict[str, dict[str, dict[str, Any]]]:
    return {layer: {module: dict(leaves) for module, leaves in modules.items()} for layer, modules in params.items()}


def _misshapen(params) -> str:
    """Where ``params`` stops being a layer -> module -> name mapping, for a message."""
    if not hasattr(params, "items"):
        return f"got {type(params).__name__}"
    for layer, modules in params.items():
        if not hasattr(modules, "items"):
            return f"params[{layer!r}] is {type(modules).__name__}, not a module -> name mapping"
        for module, leaves in modules.items():
            if not hasattr(leaves, "items"):
                return f"params[{layer!r}][{module!r}] is {type(leaves).__name__}, not a name -> array mapping"
    return "got a mapping of another shape"


def _struct(params):
    return jax.tree.map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype).name), params)


@jax.tree_util.register_pytree_node_class
class Flow:
    """A Gaussianization flow: registered layers plus their Haiku params.

    Flows are immutable: methods that change parameters return new flows.
    Layers act in data-to-latent order; the base distribution is a standard
    normal. A flow is a JAX pytree (its params are the leaves), so it can be
    passed through ``jax.jit`` and ``jax.grad``.

    Example:
      >>> import gaussplug, jax.numpy as jnp
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [
      ...     {"family": "householder"}, {"family": "mixture_cdf", "components": 4}]})
      >>> flow.layer_names
      ('0_householder', '1_mixture_cdf')
      >>> flow.log_prob(jnp.zeros((5, 2))).shape
      (5,)
    """

    def __init__(self, plan: Plan, params, *, registry: Registry | None = None, metadata=None, runtime=None):
        self._plan = plan
        self._registry = registry if registry is not None else get_registry()
        # The families are looked up now and kept: a flow never switches to a family registered later.
        self._runtime = runtime if runtime is not None else get_runtime(plan, self._registry)
        self._params = _copy_params(params)
        self._meta = metadata if isinstance(metadata, _Meta) else _Meta(metadata)

    # -- pytree -------------------------------------------------------------
    def tree_flatten(self):
        """Params are the children; plan, registry, runtime and metadata are static."""
        return (self._params,), (self._plan, self._registry, self._runtime, self._meta)

    # -- copying and pickling --------------------------------------------------------
    def __copy__(self) -> Flow:
        return self  # immutable: a copy would be indistinguishable

    def __deepcopy__(self, memo) -> Flow:
        return self

    def __reduce__(self):
        """Pickles as (spec, params on the host, metadata); unpickling rebuilds with the families registered then.

        The registry and compiled functions stay behind (they hold modules), as with :func:`gaussplug.save`:
        the process that unpickles needs the plugins the flow uses, and float64 params need x64 there too.
        """
        families = {name: info.provenance() for name, info in self._runtime.families.items()}  # as save records
        return _unpickle_flow, (self.spec, jax.tree.map(np.asarray, self._params), self.metadata, families)

    @classmethod
    def tree_unflatten(cls, aux, children):
        """Rebuild without copying (leaves may be tracers)."""
        flow = object.__new__(cls)
        flow._plan, flow._registry, flow._runtime, flow._meta = aux
        flow._params = children[0]
        return flow

    # -- description ---------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        """The spec the flow was built from (a fresh dict)."""
        return self._plan.spec

    @property
    def plan(self) -> Plan:
        """The checked, flattened layer plan."""
        return self._plan

    @property
    def dim(self) -> int:
        """Data dimension."""
        return self._plan.dim

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Layer names in data-to-latent order."""
        return tuple(layer.name for layer in self._plan.layers)

    @property
    def layers(self):
        """The resolved layers (name, family, options, spec path)."""
        return self._plan.layers

    @property
    def params(self) -> dict[str, Any]:
        """Haiku params keyed by layer name (a fresh mapping; arrays shared)."""
        return _copy_params(self._params)

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON metadata attached by the engines (e.g. ``warm_start`` history)."""
        return json.loads(self._meta.text)

    @property
    def dtype(self):
        """The dtype of the flow's parameters."""
        leaves = jax.tree.leaves(self._params)
        return leaves[0].dtype if leaves else default_dtype()

    @property
    def registry(self) -> Registry:
        """The registry this flow's families were looked up in (when it was built or loaded)."""
        return self._registry

    def __repr__(self):
        names = self.layer_names if len(self.layer_names) <= 6 else (*self.layer_names[:4], "...", self.layer_names[-1])
        stages = "".join(f", {word}" for key, word in (("warm_start", "warm-started"), ("fine_tune", "fine-tuned"))
                         if key in self.metadata)
        return f"Flow(dim={self.dim}, {len(self.layer_names)} layers: [{', '.join(names)}], dtype={self.dtype}{stages})"

    @property
    def runtime(self) -> Runtime:
        """Compiled machinery shared by the flows with this plan, holding the families the flow was built with.

        Registering or unregistering plugins afterwards does not change it: a flow keeps computing with the
        families it was built (or loaded) with, and a new flow (``build_flow``, ``load``) sees the change.
        """
        return self._runtime

    # -- new flows -------------------------------------------------------------
    def replace(self, *, params=None, metadata=None) -> Flow:
        """A new flow with other params (same structure) and/or metadata.

        Raises:
          ValueError: ``params`` is not a layer -> module -> name mapping with the
            flow's layers, modules, names, shapes and dtypes (the message names the
            first layer that differs, with what it expected and what it got).
        """
        new_params = self._params if params is None else self._checked(params)
        new_meta = self._meta if metadata is None else _Meta(metadata)
        return Flow(self._plan, new_params, registry=self._registry, metadata=new_meta, runtime=self._runtime)

    def with_layer_params(self, name: str, layer_params) -> Flow:
        """A new flow with one layer's params replaced.

        Args:
          name: A name from :attr:`layer_names`.
          layer_params: The layer's new params, module -> name -> array, with the
            structure of ``flow.params[name]``.

        Raises:
          KeyError: No layer is called ``name``.
          ValueError: ``layer_params`` do not match the layer's structure.
        """
        self._layer_params(name)
        params = _copy_params(self._params)
        params[name] = layer_params
        return self.replace(params=params)

    def _checked(self, params):
        try:
            params = _copy_params(params)
        except (AttributeError, TypeError, ValueError) as err:
            raise ValueError(f"params: expected a mapping layer -> module -> name -> array, like flow.params (layers "
                             f"{list(self.layer_names)}); {_misshapen(params)}.") from err
        want, got = _struct(self._params), _struct(params)
        if want != got:
            for name in self.layer_names:
                if want.get(name) != got.get(name):
                    raise ValueError(
                        f"Layer {name!r}: params do not match the layer's structure. "
                        f"Expected {want.get(name)}; got {got.get(name)}."
                    )
            raise ValueError(f"params: expected layers {sorted(want)}; got {sorted(got)}.")
        return params

    def trainable_mask(self) -> dict[str, Any]:
        """Pytree of bools shaped like ``params``: False where a family froze a parameter."""
        mask = {}
        for lr in self.runtime.layers:
            try:
                mask[lr.name] = {
                    module: {name: not lr.family.is_frozen(lr.options, module, name) for name in leaves}
                    for module, leaves in self._params[lr.name].items()
                }
            except Exception as err:
                raise PluginError(f"{lr.label}: the family's frozen() raised {type(err).__name__}: {err}") from err
        return mask

    # -- maps -------------------------------------------------------------------
    def _input(self, x, what: str = "x"):
        """Checked data, promoted to at least the flow's dtype (float32 data meets float64 params)."""
        x = as_data(x, self.dim, what=what)
        dtype = jnp.promote_types(x.dtype, self.dtype)
        return x if x.dtype == dtype else x.astype(dtype)

    def _layer_params(self, name: str, given=None):
        """The flow's params of layer ``name``, or ``given`` once checked against their structure."""
        if name not in self._params:
            raise KeyError(f"No layer named {name!r}; layers are {list(self.layer_names)}.")
        if given is None:
            return self._params[name]
        want = _struct(self._params[name])
        try:
            got = _struct({m: dict(leaves) for m, leaves in given.items()})
        except (AttributeError, TypeError, ValueError):
            got = f"a value of type {type(given).__name__} that is not a module -> name -> array mapping"
        if got != want:
            raise ValueError(f"Layer {name!r}: layer_params do not match the layer's structure (module -> name -> "
                             f"(shape, dtype)). Expected {want}; got {got}.")
        return given

    def forward_and_log_det(self, x):
        """Data to latent, with log |det J| per row (warns, naming the layer, if finite rows come out NaN).

        Args:
          x: Data, shape ``(..., dim)`` (finite; cast to at least the flow's dtype).

        Returns:
          ``(z, log_det)``: the latent, shape ``x.shape``, and the map's log |det J|,
          shape ``x.shape[:-1]``; ``log_prob(x) = log N(z; 0, I) + log_det``.

        Raises:
          DataError: ``x`` is not finite real data with ``dim`` columns.
        """
        return self._map(x, "forward_and_log_det", with_log_det=True)

    def forward(self, x):
        """Data to latent (warns, naming the layer, if finite rows come out NaN).

        Compiled without the log-det (see :meth:`inverse`).

        Args:
          x: Data, shape ``(..., dim)``.

        Returns:
          The latent ``z``, shape ``x.shape``: the Gaussianized data.

        Raises:
          DataError: ``x`` is not finite real data with ``dim`` columns.
        """
        return self._map(x, "forward", with_log_det=False)

    def inverse_and_log_det(self, z):
        """Latent to data, with the inverse map's log |det J| per row (warns if finite rows come out NaN).

        Args:
          z: Latent points, shape ``(..., dim)``.

        Returns:
          ``(x, log_det)``: data, shape ``z.shape``, and the inverse map's
          log |det J| (minus the forward map's at ``x``), shape ``z.shape[:-1]``.

        Raises:
          DataError: ``z`` is not finite real data with ``dim`` columns.
        """
        return self._map(z, "inverse_and_log_det", with_log_det=True)

    def inverse(self, z):
        """Latent to data (warns if finite rows come out NaN).

        Compiled without the log-det, so XLA skips that work: through mixture-CDF
        layers, about half the time of :meth:`inverse_and_log_det` on large batches.

        Args:
          z: Latent points, shape ``(..., dim)``.

        Returns:
          Data, shape ``z.shape``.

        Raises:
          DataError: ``z`` is not finite real data with ``dim`` columns.
        """
        return self._map(z, "inverse", with_log_det=False)

    def _map(self, v, what: str, *, with_log_det: bool):
        """One direction of the map, NaN-checked on what it returns (``forward`` / ``inverse`` drop the log-det)."""
        inverse = what.startswith("inverse")
        v = self._input(v, "z" if inverse else "x")
        rt = self.runtime
        if with_log_det:
            out, log_det = on_bucket(rt.inverse_and_log_det if inverse else rt.forward_and_log_det, (self._params,), v)
            warn_nan_rows(self, (out, log_det), v, what, inverse=inverse)
            return out, log_det
        out = on_bucket(rt.inverse if inverse else rt.forward, (self._params,), v)  # no log-det work
        warn_nan_rows(self, (out,), v, what, inverse=inverse)
        return out

    def log_prob(self, x, *, batch_size: int | None = None):
        """Log-density of ``x`` (shape ``(..., dim)``) under the flow.

        Finite ``x`` gives finite values or ``-inf`` (far outside the data). If rows come
        out NaN instead (a plugin's bijector, or NaN params) a
        :class:`gaussplug.GaussplugPluginWarning` names the first layer that produced
        them (checked outside ``jax.jit`` only).

        Args:
          x: Data, shape ``(..., dim)``.
          batch_size: Evaluate the rows in batches of this many (the last one
            padded), so that any number of rows uses one compiled shape and
            memory stays bounded by the batch. Without it, outside ``jax.jit``,
            the rows of a 2-D ``x`` are padded up to their row bucket (at most
            12.5 % more rows; 1000 and 1020 rows share 1024), so a new row
            count compiles the flow anew (about a second for a small flow on a
            CPU) only when it falls in a new bucket. The values are those of
            ``batch_size=None`` to rounding. Not under ``jax.jit``.

        Returns:
          Log-densities, shape ``x.shape[:-1]``.

        Raises:
          DataError: ``x`` is not finite real data with ``dim`` columns.
          ValueError: ``batch_size`` is not ``None`` or a positive integer, or is
            given under ``jax.jit``.

        Example:
          >>> import gaussplug, numpy as np
          >>> x = np.random.default_rng(0).normal(size=(500, 2))
          >>> flow = gaussplug.fit_rbig(x, n_layers=1, n_components=2)
          >>> a, b = flow.log_prob(x), flow.log_prob(x, batch_size=128)  # b: one shape for any row count
          >>> bool(np.allclose(a, b, atol=1e-5))
          True
        """
        batch_size = int_at_least("log_prob: batch_size", batch_size, none_ok=True)
        x = self._input(x)
        if batch_size is None:
            lp = on_bucket(self.runtime.log_prob, (self._params,), x)
        else:
            lp = self._log_prob_in_batches(x, batch_size)
        warn_nan_rows(self, (lp,), x, "log_prob")
        return lp

    def _traced(self, arg) -> bool:
        """Whether ``arg`` or the params are being traced (under ``jax.jit``): the batched paths loop in Python."""
        return traced(arg, self._params)

    def _log_prob_in_batches(self, x, batch: int):
        if self._traced(x):
            raise ValueError("log_prob: batch_size works outside jax.jit only (it loops over batches in Python); "
                             "under jit, call log_prob(x) without it.")
        rows = np.asarray(x).reshape(-1, self.dim)
        out = np.empty(rows.shape[0], rows.dtype)
        for start, m, block in padded_batches(rows, batch):  # one shape, one compilation
            out[start : start + m] = np.asarray(self.runtime.log_prob(self._params, block))[:m]
        return jnp.asarray(out.reshape(x.shape[:-1]))

    def sample(self, key, n: int, *, batch_size: int | None = None):
        """``n`` samples, shape ``(n, dim)``, drawn through the inverse map.

        Args:
          key: A PRNG key or an integer seed.
          n: The number of samples.
          batch_size: Push the latent draws through the inverse map in batches of
            this many rows (the last one padded), so that any ``n`` compiles
            once per batch size and the inverse map's intermediates stay
            bounded. The ``(n, dim)`` latent draws are made in one go, so the
            samples are those of ``batch_size=None`` to rounding. Without it,
            outside ``jax.jit`` the draws are padded up to their row bucket, as
            in :meth:`log_prob` (a new ``n`` compiles the inverse map anew only
            in a new bucket); under ``jax.jit`` sampling is one dispatch, and
            ``batch_size`` is accepted there only with ``n <= batch_size``.

        Outside ``jax.jit``, samples that come out NaN raise a
        :class:`gaussplug.GaussplugPluginWarning` naming the first layer at fault,
        and samples that come out +-inf (a flow whose inverse overflows for part of
        the latent, typical of an untrained one) a :class:`gaussplug.NonFiniteWarning` naming the
        first layer whose output is infinite.

        Raises:
          ValueError: ``n`` is not a non-negative integer, ``batch_size`` not
            ``None`` or a positive integer (or given under ``jax.jit`` with
            ``n > batch_size``), or an integer seed outside ``[0, 2**32)``.
          TypeError: ``key`` is neither a PRNG key nor an integer seed.

        Example:
          >>> import gaussplug, numpy as np
          >>> flow = gaussplug.fit_rbig(np.random.default_rng(0).normal(size=(500, 2)), n_layers=1)
          >>> a, b = flow.sample(0, 1000), flow.sample(0, 1000, batch_size=256)
          >>> bool(np.allclose(a, b, atol=1e-5))
          True
        """
        check_not_forked("sample")
        n = int_at_least("sample: n", n, 0)
        batch_size = int_at_least("sample: batch_size", batch_size, none_ok=True)
        _check_sample_size(n, self.dim, self.dtype)
        key = as_key(key)
        if self._traced(key) and (batch_size is None or n <= batch_size):
            samples = self.runtime.sample(self._params, key, n)
        elif batch_size is None:  # the latent rows padded to their bucket: a new n seldom compiles anew
            samples = on_bucket(self.runtime.inverse, (self._params,), self._latents(key, n))
        else:  # padded batches of one shape, also for n <= batch_size: one compilation for any n
            samples = self._sample_in_batches(key, n, batch_size)
        if not isinstance(samples, jax.core.Tracer) and np.isnan(np.asarray(samples)).any():
            z = self.runtime.draw_latent(self._params, key, n)
            warn_nan_rows(self, (samples,), np.asarray(z), "sample", inverse=True, source="their latent draws")
        if not isinstance(samples, jax.core.Tracer) and np.isinf(np.asarray(samples)).any():
            warn_inf_samples(self, samples, self.runtime.draw_latent(self._params, key, n))
        return samples

    def _sample_in_batches(self, key, n: int, batch: int):
        if self._traced(key):
            raise ValueError("sample: batch_size works outside jax.jit only (it loops over batches in Python); "
                             "under jit, call sample(key, n) without it.")
        z = self._latents(key, n)
        out = np.empty_like(z)
        for start, m, block in padded_batches(z, batch):  # one shape, one compilation
            out[start : start + m] = np.asarray(self.runtime.inverse(self._params, block))[:m]
        return jnp.asarray(out)

    def _latents(self, key, n: int) -> np.ndarray:
        """The ``(n, dim)`` latent draws of ``sample(key, n)``, on the host (outside ``jax.jit``).

        With JAX's default (partitionable) threefry the first ``n`` rows of a
        larger draw are the draw of ``n`` rows, so a row bucket's draw is cut
        down: a new ``n`` seldom compiles the draw anew.
        """
        m = bucket(n) if jax.config.jax_threefry_partitionable else n
        return np.asarray(self.runtime.draw_latent(self._params, key, m))[:n]

    def layer_forward(self, name: str, x, layer_params=None):
        """Push ``x`` through one layer (data-to-latent direction); returns ``(y, log_det)``.

        Args:
          name: A name from :attr:`layer_names`.
          x: Rows arriving at that layer, shape ``(n, dim)``.
          layer_params: That layer's params (module -> name -> array, like
            ``flow.params[name]``) to use instead of the flow's, e.g. inside a
            loss differentiated with respect to them.

        Returns:
          ``(y, log_det)``: shapes ``(n, dim)`` and ``(n,)``.

        Raises:
          KeyError: No layer is called ``name``.
          ValueError: ``layer_params`` do not have the layer's modules, names,
            shapes and dtypes (the message gives both structures).
          DataError: ``x`` is not a finite ``(n, dim)`` array.
        """
        return self.runtime.layer_forward(name, self._layer_params(name, layer_params), self._input(x))

    def layer_inverse(self, name: str, z, layer_params=None):
        """Pull ``z`` back through one layer (latent-to-data direction); returns ``(x, log_det)``.

        Args:
          name: A name from :attr:`layer_names`.
          z: Rows leaving that layer, shape ``(n, dim)``.
          layer_params: That layer's params to use instead of the flow's (as in
            :meth:`layer_forward`).

        Returns:
          ``(x, log_det)``, where ``log_det`` is the inverse map's log |det J|.

        Raises:
          KeyError: No layer is called ``name``.
          ValueError: ``layer_params`` do not match the layer's structure.
          DataError: ``z`` is not a finite ``(n, dim)`` array.
        """
        return self.runtime.layer_inverse(name, self._layer_params(name, layer_params), self._input(z, "z"))

    # -- distrax views ------------------------------------------------------------
    def layer_bijector(self, name: str) -> distrax.Bijector:
        """One layer as a standalone data-to-latent ``distrax.Bijector``, closed over its params.

        Args:
          name: A name from :attr:`layer_names`.

        Raises:
          KeyError: No layer is called ``name``.
        """
        params = self._layer_params(name)
        return _LayerBijector(self.runtime.by_name[name].apply, params)

    def bijector(self) -> distrax.Bijector:
        """The whole data-to-latent map as a ``distrax.Bijector`` (a Chain)."""
        # distrax.Chain applies its last element first.
        return distrax.Chain([self.layer_bijector(n) for n in reversed(self.layer_names)])

    def base_distribution(self) -> distrax.Distribution:
        """The standard-normal base distribution, in the flow's dtype."""
        return distrax.MultivariateNormalDiag(jnp.zeros(self.dim, self.dtype), jnp.ones(self.dim, self.dtype))

    def distribution(self) -> distrax.Transformed:
        """The flow as a ``distrax.Transformed`` (base pushed through the inverse)."""
        return distrax.Transformed(self.base_distribution(), distrax.Inverse(self.bijector()))


class _LayerBijector(distrax.Bijector):
    """A Haiku-transformed layer closed over its params."""

    def __init__(self, transformed, params):
        super().__init__(event_ndims_in=1, event_ndims_out=1)
        self._transformed = transformed
        self._params = params

    def forward_and_log_det(self, x):
        """Data to latent."""
        return self._transformed.apply(self._params, x)

    def inverse_and_log_det(self, y):
        """Latent to data."""
        return self._transformed.apply(self._params, y, True)


#: Most values one array of samples may hold (XLA indexes buffers with int32 on the CPU).
MAX_SAMPLE_VALUES = 2**31 - 1


def _check_sample_size(n: int, dim: int, dtype, *, what: str = "sample", seeds: str = "keys") -> None:
    """A ValueError for ``n`` samples that cannot be one array here, before XLA aborts the process trying.

    ``what`` starts the message and ``seeds`` names what to vary between calls, in the caller's terms
    (the command line's ``-n`` and ``--seed`` values).
    """
    values = n * dim
    if values > MAX_SAMPLE_VALUES:
        raise ValueError(f"{what}: n * dim = {n:,} * {dim} = {values:,} values, more than one array holds "
                         f"({MAX_SAMPLE_VALUES:,}); draw them in several calls with different {seeds}.")
    # the latent draws and the samples
    needed, memory = 2 * values * jnp.dtype(dtype).itemsize, _memory.physical_memory()
    if memory is not None and needed > memory:
        raise ValueError(f"{what}: n = {n:,} samples of dim {dim} need at least {_memory.size_text(needed)} (latent "
                         f"draws and samples), more than this machine's {_memory.size_text(memory)} of memory; draw "
                         f"them in several calls with different {seeds}.")


def _unpickle_flow(spec, params, metadata, families=None) -> Flow:
    """The flow :meth:`Flow.__reduce__` describes, built with the process-wide registry.

    As :func:`gaussplug.load`: a family that is not installed is a :class:`PluginError` naming its plugin, a
    changed plugin or version warns, and float64 params in a float32 process are rounded with a warning.
    """
    from gaussplug._io_checks import _check_families, _warn_changed, refuse_beyond_float32, warn_float64_rounded

    what = _Unquoted("a pickled flow")  # stands where load's messages show a path
    if families:
        _warn_changed(what, _check_families(what, families, get_registry()))
    if default_dtype() != np.float64 and any(np.dtype(a.dtype) == np.float64 for a in jax.tree.leaves(params)):
        refuse_beyond_float32(what, ((f"layer {layer!r}, param {module}/{name}", np.asarray(value))
                                     for layer, modules in params.items() for module, leaves in modules.items()
                                     for name, value in leaves.items()))
        warn_float64_rounded(what, "pickled flow")
        params = jax.tree.map(lambda a: np.asarray(a, np.float32) if a.dtype == np.float64 else a, params)
    dtypes = {np.dtype(a.dtype) for a in jax.tree.leaves(params)}
    flow = build_flow(spec, dtype=dtypes.pop() if len(dtypes) == 1 else None)
    return flow.replace(params=jax.tree.map(jnp.asarray, params), metadata=metadata)


class _Unquoted(str):
    """A description shown as is where a message formats a path with ``!r``."""

    def __repr__(self):
        return str(self)


def _param_dtype(dtype):
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype: expected float32 or float64; got {dtype!r}.") from err
    if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise TypeError(f"dtype: expected float32 or float64; got {dt.name}.")
    if dt == jnp.dtype(jnp.float64) and not jax.config.jax_enable_x64:
        raise TypeError(
            "dtype: float64 needs JAX's x64 mode, which is off (JAX would silently keep float32): set "
            'JAX_ENABLE_X64=1 or call jax.config.update("jax_enable_x64", True) before building the flow.'
        )
    return dt


def require_flow(value, caller: str) -> Flow:
    """``value`` if it is a :class:`Flow`; else a ``TypeError`` naming ``caller``'s ``flow`` argument."""
    if not isinstance(value, Flow):
        raise TypeError(f"{caller}: expected a gaussplug.Flow as flow; got {type(value).__name__}.")
    return value


def build_flow(spec, *, key=0, dtype=None, registry: Registry | None = None) -> Flow:
    """Build a flow from a spec dict or a ``.json`` / ``.yaml`` / ``.yml`` file.

    Args:
      spec: ``{"dim": D, "layers": [...]}``; layers in data-to-latent order,
        each ``{"family": name, **options}`` or a group
        ``{"repeat": n, "layers": [...]}`` (groups nest).
      key: Int seed or PRNG key for the default (untrained) initialisation.
      dtype: Parameter dtype; default float32, or float64 under x64.
      registry: Registry to resolve families in (default: the process-wide one).

    Returns:
      A :class:`Flow`.

    Raises:
      SpecError: The spec is malformed (the message names the layer path),
        or its params alone would not fit in this machine's memory.
      PluginError: A family's plugin is missing or fails to build its layer.
      TypeError: ``dtype`` is not float32 or float64, or float64 without
        JAX's x64 mode; or ``key`` is neither an int nor a ``jax.random`` key.
      ValueError: An int ``key`` outside ``[0, 2**32)``.

    Example:
      >>> import gaussplug
      >>> spec = {"dim": 2, "layers": [{"repeat": 2, "layers": [
      ...     {"family": "householder", "reflectors": 2},
      ...     {"family": "mixture_cdf", "components": 8}]}]}
      >>> gaussplug.build_flow(spec).layer_names
      ('0_householder', '1_mixture_cdf', '2_householder', '3_mixture_cdf')
    """
    registry = registry if registry is not None else get_registry()
    plan = make_plan(spec, registry)
    dtype = default_dtype() if dtype is None else _param_dtype(dtype)
    runtime = get_runtime(plan, registry)
    params = runtime.init_params(as_key(key), dtype)
    return Flow(plan, params, registry=registry, runtime=runtime)
