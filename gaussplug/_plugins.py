"""The process-wide registry and its public helpers."""

from __future__ import annotations

from typing import Any

from gaussplug._registry import FamilyInfo, Registry

__all__ = ["families", "get_registry", "list_plugins", "register", "set_registry", "unregister"]

_REGISTRY = Registry()


def get_registry() -> Registry:
    """The registry that ``build_flow`` and friends use."""
    return _REGISTRY


def set_registry(registry: Registry) -> Registry:
    """Swap the process-wide registry (used by tests); returns the old one."""
    global _REGISTRY
    old, _REGISTRY = _REGISTRY, registry
    return old


def families() -> dict[str, FamilyInfo]:
    """Name -> family info (plugin, version, options with defaults, doc).

    Example:
      >>> import gaussplug
      >>> info = gaussplug.families()["mixture_cdf"]
      >>> info.options["components"]
      8
    """
    return get_registry().families()


def register(plugin: Any, name: str | None = None) -> str:
    """Register a plugin (module, class or instance with hookimpls) at run time.

    Args:
      plugin: An object whose ``gaussplug_register_families`` method or
        function is decorated with :data:`gaussplug.hookimpl`.
      name: Plugin name; defaults to the object's ``__name__``.

    Returns:
      The name under which the plugin was registered.

    Raises:
      PluginError: The plugin is unusable (no hook, a hook with the wrong
        signature or that raises, something other than a
        :class:`gaussplug.Family` registered, a family registered twice or
        already provided by another plugin); the message names the plugin and,
        where one is at fault, the family. Nothing is registered then.

    Example:
      >>> import distrax, gaussplug, haiku as hk, jax.numpy as jnp
      >>> def make_shift(dim):  # y = x - b, with a trainable b
      ...     b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
      ...     return distrax.Block(distrax.ScalarAffine(shift=-b), 1)
      >>> class ShiftPlugin:
      ...     @gaussplug.hookimpl
      ...     def gaussplug_register_families(self, register):
      ...         register(gaussplug.Family("doc_shift", make_shift))
      >>> gaussplug.register(ShiftPlugin())
      'ShiftPlugin'
      >>> gaussplug.build_flow({"dim": 2, "layers": [{"family": "doc_shift"}]}).layer_names
      ('0_doc_shift',)
      >>> gaussplug.unregister("ShiftPlugin")  # e.g. before re-running a notebook cell that registers it
    """
    return get_registry().register(plugin, name=name)


def unregister(plugin_or_name: Any) -> None:
    """Remove a registered plugin (given as the object or its name) for the rest of this process.

    Flows that exist keep the families they were built with; :func:`build_flow`
    and :func:`load` no longer find the plugin's families. A built-in can be
    unregistered too, to replace it with a family of the same name. See
    :func:`register` for an example.

    Raises:
      PluginError: No such plugin is registered (the message lists those that are).
    """
    get_registry().unregister(plugin_or_name)


def list_plugins() -> list[dict[str, Any]]:
    """Each loaded plugin's name, hooks, version and distribution (``None`` for a run-time plugin).

    Example:
      >>> import gaussplug
      >>> [p for p in gaussplug.list_plugins() if p["name"] == "householder"]  # doctest: +ELLIPSIS
      [{'name': 'householder', 'hooks': ['gaussplug_register_families'], 'version': '...', 'distribution': 'gaussplug'}]
    """
    return get_registry().list_plugins()
