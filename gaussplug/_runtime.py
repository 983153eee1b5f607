"""Compiled per-plan machinery: Haiku transforms per layer and jitted flow maps.

A :class:`Runtime` is built once per (plan, registry state) and cached, so
flows that share a plan share compiled functions and never recompile. It holds
the :class:`gaussplug.Family` objects it was built with, and a flow keeps its
runtime: registering or unregistering plugins later never changes (or
recompiles) a flow that exists.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections import OrderedDict
from typing import Any

import distrax
import haiku as hk
import jax
import jax.numpy as jnp

from gaussplug import _memory
from gaussplug._buckets import on_bucket
from gaussplug._data import default_dtype
from gaussplug._errors import GaussplugError, PluginError, SpecError
from gaussplug._family import Family
from gaussplug._fork import check_not_forked
from gaussplug._registry import Registry
from gaussplug._spec import Layer, Plan

__all__ = ["LayerRuntime", "Runtime", "get_runtime", "layer_label", "standard_normal_log_prob"]

_CACHE: OrderedDict[tuple, Runtime] = OrderedDict()
_CACHE_SIZE = 64
#: Set GAUSSPLUG_SCAN_BLOCKS=0 to apply repeated blocks layer by layer (debugging).
_SCAN_BLOCKS = os.environ.get("GAUSSPLUG_SCAN_BLOCKS", "1") != "0"


def standard_normal_log_prob(z):
    """Log N(z; 0, I) summed over the last axis (of a JAX or a NumPy array, computed as the same kind)."""
    d = z.shape[-1]
    return -0.5 * (z * z).sum(axis=-1) - 0.5 * d * math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class LayerRuntime:
    """One layer's family, options and Haiku transforms."""

    layer: Layer
    family: Family
    options: dict[str, Any]
    init: hk.Transformed
    apply: hk.Transformed
    plugin: str = "unknown"

    @property
    def name(self) -> str:
        """The layer's name, e.g. ``'3_mixture_cdf'``."""
        return self.layer.name

    @property
    def label(self) -> str:
        """``"Layer '3_mixture_cdf' (family 'mixture_cdf', plugin 'mixture_cdf')"``, for error messages."""
        return layer_label(self.layer.name, self.family.name, self.plugin)

    def __hash__(self):  # options dict is not hashable; the layer is unique
        return hash(self.layer)


def layer_label(name: str, family: str, plugin: str) -> str:
    """How error messages name a layer: its name, family and plugin."""
    return f"Layer {name!r} (family {family!r}, plugin {plugin!r})"


def _make_checked(family: Family, dim: int, options: dict[str, Any], label: str):
    """``family.make_bijector(dim, **options)``, with plugin failures re-raised as :class:`PluginError`."""
    try:
        bijector = family.make_bijector(dim, **options)
    except GaussplugError:
        raise
    except Exception as err:
        raise PluginError(f"{label}: make_bijector raised {type(err).__name__}: {err}") from err
    if not isinstance(bijector, distrax.Bijector):
        raise PluginError(
            f"{label}: make_bijector returned {type(bijector).__name__}; expected a distrax.Bijector "
            "(e.g. a gaussplug.VectorBijector subclass)."
        )
    return bijector


def _check_shapes(x, y, log_det, label: str, method: str):
    """Trace-time check: ``y`` has ``x``'s shape and ``log_det`` its batch shape, neither in a narrower dtype."""
    x_shape, y_shape, ld_shape = tuple(jnp.shape(x)), tuple(jnp.shape(y)), tuple(jnp.shape(log_det))
    if y_shape != x_shape:
        raise PluginError(
            f"{label}: {method} returned an output of shape {y_shape}; expected the input's shape {x_shape}."
        )
    if ld_shape != x_shape[:-1]:
        raise PluginError(
            f"{label}: {method} returned a log-det of shape {ld_shape}; expected the batch shape {x_shape[:-1]} "
            "(one value per row)."
        )
    x_dtype = jnp.result_type(x)
    for what, value in (("an output", y), ("a log-det", log_det)):
        dtype = jnp.result_type(value)
        if jnp.promote_types(x_dtype, dtype) != dtype:
            raise PluginError(
                f"{label}: {method} returned {what} of dtype {jnp.dtype(dtype).name}; expected the input's dtype "
                f"{jnp.dtype(x_dtype).name} (or a wider float): a narrower one drops the precision the flow "
                "computes in."
            )


def _layer_transforms(family: Family, dim: int, options: dict[str, Any], label: str = ""):
    label = label or f"Layer of family {family.name!r}"

    def make():
        return _make_checked(family, dim, options, label)

    def apply(x, inverse: bool = False):
        bijector = _make_checked(family, dim, options, label)
        method = "inverse_and_log_det" if inverse else "forward_and_log_det"
        try:
            y, log_det = getattr(bijector, method)(x)
        except GaussplugError:
            raise
        except Exception as err:  # raised while tracing the plugin's code: name the layer, keep the cause
            raise PluginError(f"{label}: {method} raised {type(err).__name__}: {err}") from err
        _check_shapes(x, y, log_det, label, method)
        return y, log_det

    return hk.transform(make), hk.without_apply_rng(hk.transform(apply))


class Runtime:
    """Layer transforms and jitted whole-flow functions for one plan."""

    def __init__(self, plan: Plan, registry: Registry):
        self.plan = plan
        self.dim = plan.dim
        self.registry = registry
        #: The registry's generation this runtime was last checked against (see :func:`get_runtime`).
        self.generation = registry.generation
        layers = []
        infos = registry.families()
        for layer in plan.layers:
            try:
                family = registry.get(layer.family)
            except Exception as err:
                raise PluginError(f"Layer {layer.name!r}: family {layer.family!r} is not available: {err}") from err
            options = layer.options
            plugin = infos[layer.family].plugin if layer.family in infos else "unknown"
            label = layer_label(layer.name, layer.family, plugin)
            init, apply = _layer_transforms(family, plan.dim, options, label)
            layers.append(LayerRuntime(layer, family, options, init, apply, plugin))
        self.layers: tuple[LayerRuntime, ...] = tuple(layers)
        #: What the registry reported, when this runtime was built, for each family the plan uses.
        used = {lr.layer.family for lr in layers}
        self.families: dict[str, Any] = {name: info for name, info in infos.items() if name in used}
        self.by_name = {lr.name: lr for lr in self.layers}
        self.segments = find_segments(self.layers) if _SCAN_BLOCKS else tuple((i, 1, 1) for i in range(len(layers)))
        self.forward_and_log_det = jax.jit(self._forward_and_log_det)
        self.inverse_and_log_det = jax.jit(self._inverse_and_log_det)
        # The maps alone: XLA drops the log-det work (sampling through mixture-CDF layers: half the time).
        self.forward = jax.jit(self._forward)
        self.inverse = jax.jit(self._inverse)
        self.log_prob = jax.jit(self._log_prob)
        self.sample = jax.jit(self._sample, static_argnums=(2,))
        # Layers with the same family and options share one compiled function.
        self._layer_jits = {}
        for lr in self.layers:
            key = (lr.layer.family, lr.layer.options_json)
            if key not in self._layer_jits:
                self._layer_jits[key] = (
                    jax.jit(lambda p, x, _t=lr.apply: _t.apply(p, x)),
                    jax.jit(lambda p, z, _t=lr.apply: _t.apply(p, z, True)),
                )

    # -- identity ----------------------------------------------------------
    def __eq__(self, other):
        """Same plan, registry and families (as registered): the same functions of (params, data).

        A flow's pytree structure holds its runtime, so two flows built from one plan stay
        interchangeable for ``jax.tree.map`` and share ``jax.jit`` cache entries even when their
        runtimes were built apart (after an unrelated plugin was registered, or after this one
        left the cache).
        """
        if self is other:
            return True
        if not isinstance(other, Runtime):
            return NotImplemented
        return other.plan == self.plan and other.registry is self.registry and other.families == self.families

    def __hash__(self):
        return hash((self.plan, id(self.registry)))

    def uses_current_families(self) -> bool:
        """Whether the registry now gives this runtime's families, exactly as when it was built."""
        try:
            infos = self.registry.families()
        except Exception:  # a clash or broken plugin: let a fresh Runtime report it, naming the layer
            return False
        return all(name in infos and infos[name] == info for name, info in self.families.items())

    # -- pure functions of (params, data) ---------------------------------
    @functools.cached_property
    def param_counts(self) -> tuple[int, ...] | None:
        """How many param values each layer has, from traced shapes (nothing is allocated).

        None when a family's initialiser cannot be traced abstractly; its real initialisation then
        reports the problem.
        """
        try:
            shapes = [jax.eval_shape(lr.init.init, jax.random.PRNGKey(0)) for lr in self.layers]
        except Exception:
            return None
        return tuple(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(s)) for s in shapes)

    def check_param_memory(self, dtype) -> None:
        """Raises :class:`SpecError` when the params alone would not fit in this machine's memory.

        XLA would otherwise fail on first use (allocation is asynchronous) or abort the process.
        """
        counts, memory = self.param_counts, _memory.physical_memory()
        if counts is None or memory is None:
            return
        total = sum(counts)
        needed = total * jnp.dtype(dtype).itemsize
        if needed <= memory:
            return
        big = self.layers[max(range(len(counts)), key=counts.__getitem__)]
        raise SpecError(
            f"spec: the flow's params alone would take {_memory.size_text(needed)} ({total:,} "
            f"{jnp.dtype(dtype).name} values), more than this machine's {_memory.size_text(memory)} of memory; "
            f"the largest is layer {big.name!r} (family {big.layer.family!r}, options {big.layer.options_json}, "
            f"{counts[self.layers.index(big)]:,} values). Use smaller options or a smaller 'dim'."
        )

    def init_params(self, key, dtype) -> dict[str, Any]:
        """Fresh Haiku params for every layer, cast to ``dtype``; a :class:`SpecError` if they cannot fit."""
        self.check_param_memory(dtype)
        params = {}
        for i, lr in enumerate(self.layers):
            p = lr.init.init(jax.random.fold_in(key, i))
            params[lr.name] = jax.tree.map(lambda a: jnp.asarray(a, dtype), hk.data_structures.to_mutable_dict(p))
        return params

    def _stacked(self, params, start: int, period: int, count: int):
        """Params of a repeated block, each leaf stacked over the repetitions."""
        reps = range(count)
        return [
            jax.tree.map(lambda *a: jnp.stack(a), *[params[self.layers[start + k * period + j].name] for k in reps])
            for j in range(period)
        ]

    def _forward_and_log_det(self, params, x):
        log_det = jnp.zeros(x.shape[:-1], x.dtype)
        for start, period, count in self.segments:
            block = self.layers[start : start + period]
            if count == 1:
                for lr in block:
                    x, ld = lr.apply.apply(params[lr.name], x)
                    log_det = log_det + ld
                continue

            def body(carry, block_params, block=block):
                y, total = carry
                for lr, p in zip(block, block_params, strict=True):
                    y, ld = lr.apply.apply(p, y)
                    total = total + ld
                return (y, total), None

            (x, log_det), _ = jax.lax.scan(body, (x, log_det), self._stacked(params, start, period, count))
        return x, log_det

    def _inverse_and_log_det(self, params, z):
        log_det = jnp.zeros(z.shape[:-1], z.dtype)
        for start, period, count in reversed(self.segments):
            block = self.layers[start : start + period]
            if count == 1:
                for lr in reversed(block):
                    z, ld = lr.apply.apply(params[lr.name], z, True)
                    log_det = log_det + ld
                continue

            def body(carry, block_params, block=block):
                y, total = carry
                for lr, p in zip(reversed(block), reversed(block_params), strict=True):
                    y, ld = lr.apply.apply(p, y, True)
                    total = total + ld
                return (y, total), None

            stacked = self._stacked(params, start, period, count)
            (z, log_det), _ = jax.lax.scan(body, (z, log_det), stacked, reverse=True)
        return z, log_det

    def _forward(self, params, x):
        return self._forward_and_log_det(params, x)[0]

    def _inverse(self, params, z):
        return self._inverse_and_log_det(params, z)[0]

    def _log_prob(self, params, x):
        z, log_det = self._forward_and_log_det(params, x)
        return standard_normal_log_prob(z) + log_det

    def draw_latent(self, params, key, n: int):
        """The ``(n, dim)`` standard-normal draws :meth:`sample` pushes through the inverse map."""
        dtype = jax.tree.leaves(params)[0].dtype if jax.tree.leaves(params) else default_dtype()  # as Flow.dtype
        return jax.random.normal(key, (n, self.dim), dtype)

    def _sample(self, params, key, n: int):
        return self._inverse(params, self.draw_latent(params, key, n))

    def _layer_jit(self, name: str):
        layer = self.by_name[name].layer
        return self._layer_jits[(layer.family, layer.options_json)]

    def layer_forward(self, name: str, layer_params, x, *, rows: int | None = None):
        """One layer's jitted forward map ``(y, log_det)`` of ``(n, dim)`` rows.

        Outside jit the rows are padded to their row bucket, or to ``rows``
        (:func:`gaussplug._buckets.on_bucket`).
        """
        return on_bucket(self._layer_jit(name)[0], (layer_params,), x, rows=rows)

    def layer_inverse(self, name: str, layer_params, z, *, rows: int | None = None):
        """One layer's jitted inverse map ``(x, log_det)`` of ``(n, dim)`` rows (padded as in :meth:`layer_forward`)."""
        return on_bucket(self._layer_jit(name)[1], (layer_params,), z, rows=rows)


def find_segments(layers, max_period: int = 8) -> tuple[tuple[int, int, int], ...]:
    """Cover the layer list with runs of a repeated block: ``(start, period, count)``.

    Identical consecutive blocks (same families and options, hence the same
    param structure) are applied with one ``jax.lax.scan`` over their stacked
    params, so compile time does not grow with depth. Blocks that differ (e.g.
    coupling masks alternating) are found with a longer period.
    """
    sigs = [(lr.layer.family, lr.layer.options_json) for lr in layers]
    out, i, n = [], 0, len(sigs)
    while i < n:
        best = (1, 1)
        for period in range(1, min(max_period, (n - i) // 2) + 1):
            count = 1
            while sigs[i + count * period : i + (count + 1) * period] == sigs[i : i + period]:
                count += 1
            if count >= 2 and period * count > best[0] * best[1]:
                best = (period, count)
        out.append((i, *best))
        i += best[0] * best[1]
    return tuple(out)


def get_runtime(plan: Plan, registry: Registry) -> Runtime:
    """The cached :class:`Runtime` for ``plan`` under the registry's current state."""
    check_not_forked("building or loading a flow")
    # The registry itself (not its id, which a new registry may reuse once this one is freed).
    key = (plan, registry)
    rt = _CACHE.get(key)
    if rt is not None and rt.generation != registry.generation:
        # Plugins were registered or removed since: keep the runtime (and its compiled functions) if the
        # families this plan uses are still exactly the ones it was built with.
        if rt.uses_current_families():
            rt.generation = registry.generation
        else:
            rt = None
    if rt is None:
        rt = Runtime(plan, registry)
        _CACHE[key] = rt
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return rt
