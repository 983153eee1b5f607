"""The family registry: built-in plugins, entry points and run-time plugins.

Built-in families live in ``plugins/`` (import package ``gaussplug_plugins``)
and are advertised through the same entry-point group, ``gaussplug``, as
third-party plugins. The host owns the registry: plugins only call
``register(family)`` from their ``gaussplug_register_families`` hook. How a
plugin's hook is checked and called, and the messages naming a plugin, live in
:mod:`gaussplug._plugin_hooks`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import warnings
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import pluggy

from gaussplug import hookspecs
from gaussplug._errors import PluginError, SpecError
from gaussplug._family import Family
from gaussplug._plugin_hooks import (
    _HOOK_SIGNATURE,
    _call_hook,
    _check_hook_owner,
    _from,
    _gaussplug_version,
    _no_hook_message,
    _origin,
    _PluginMeta,
    _short_name,
    _signature_message,
    _strip_name,
    unknown_family_message,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "FamilyInfo",
    "GaussplugPluginWarning",
    "Registry",
]

ENTRY_POINT_GROUP = "gaussplug"
#: Environment variable: comma-separated entry-point names of third-party
#: plugins to load ("" loads none). Unset loads all. Built-ins always load.
ALLOW_ENV = "GAUSSPLUG_LOAD_PLUGINS"
DEFAULT_PLUGINS: tuple[str, ...] = (
    "gaussplug_plugins.householder",
    "gaussplug_plugins.rotation",
    "gaussplug_plugins.mixture_cdf",
    "gaussplug_plugins.mixture_cdf_coupling",
    "gaussplug_plugins.standardize",
)


class GaussplugPluginWarning(UserWarning):
    """A plugin could not be loaded (the others still are), or a saved model's family changed plugin or version."""


@dataclasses.dataclass(frozen=True)
class FamilyInfo:
    """What ``gaussplug.families()`` reports about one registered family."""

    name: str
    plugin: str
    version: str
    options: Mapping[str, Any]
    doc: str
    family: Family = dataclasses.field(repr=False)
    #: The pip distribution that installed the plugin (``"gaussplug"`` for built-ins), or None (run-time plugins).
    distribution: str | None = None

    def provenance(self) -> dict[str, str]:
        """What a saved model (or a pickled flow) records of it: plugin, version and, where known, distribution."""
        entry = {"plugin": self.plugin, "version": self.version}
        if self.distribution:
            entry["distribution"] = self.distribution
        return entry


class Registry:
    """A plugin manager plus the families its plugins register.

    Args:
      load_entry_points: Whether to load third-party plugins from the
        ``gaussplug`` entry-point group (subject to ``GAUSSPLUG_LOAD_PLUGINS``).
      default_plugins: Module names of the built-in plugins.
    """

    def __init__(self, *, load_entry_points: bool = True, default_plugins=DEFAULT_PLUGINS):
        self._load_entry_points = load_entry_points
        self._default_plugins = tuple(default_plugins)
        self._pm: pluggy.PluginManager | None = None
        self._meta: dict[str, _PluginMeta] = {}
        self._failed: set[str] = set()
        self._skipped: list[str] = []  # third-party entry points left out by GAUSSPLUG_LOAD_PLUGINS
        self._families: dict[str, FamilyInfo] | None = None
        #: Bumped whenever the set of families may have changed.
        self.generation = 0

    # -- plugin loading -------------------------------------------------
    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The underlying ``pluggy.PluginManager`` (loaded on first use)."""
        if self._pm is None:
            self._pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
            self._pm.add_hookspecs(hookspecs)
            for module_name in self._default_plugins:
                self._load_builtin(module_name)
            if self._load_entry_points:
                self._load_from_entry_points()
        return self._pm

    def _add(self, obj: Any, name: str, meta: _PluginMeta) -> bool:
        """Registers a built-in or entry-point plugin; an unusable one is skipped with a warning."""
        pm = self._pm
        try:
            self._check_registrable(obj, name)
            _check_hook_owner(obj, name)
            try:
                pm.register(obj, name=name)
            except pluggy.PluginValidationError as err:
                raise PluginError(_signature_message(name, err)) from err
        except Exception as err:
            _warn(f"gaussplug plugin {name!r}{_origin(meta)} was not loaded: {_strip_name(err, name)}")
            return False
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as err:
            pm.unregister(obj)
            _warn(
                f"gaussplug plugin {name!r}{_origin(meta)} was not loaded: it defines an unknown hook ({err}). "
                f"The only hook is {_HOOK_SIGNATURE}."
            )
            return False
        if not pm.get_hookcallers(obj):
            pm.unregister(obj)
            _warn(f"gaussplug plugin {name!r}{_origin(meta)} was not loaded: {_no_hook_message(obj)}")
            return False
        self._meta[name] = meta
        return True

    def _load_builtin(self, module_name: str) -> None:
        name = _short_name(module_name)
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            _warn(f"gaussplug built-in plugin {module_name!r} failed to import: {type(err).__name__}: {err}")
            self._failed.add(name)
            return
        self._add(module, name, _PluginMeta(name, _gaussplug_version(), "gaussplug"))

    def _load_from_entry_points(self) -> None:
        allow = os.environ.get(ALLOW_ENV)
        allowed = None if allow is None else {a.strip() for a in allow.split(",") if a.strip()}
        third_party = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            builtin = dist_name == "gaussplug" or ep.value.startswith("gaussplug_plugins.")
            if builtin and (self._pm.has_plugin(ep.name) or ep.name in self._failed):
                continue
            if not builtin:
                third_party.add(ep.name)
                if allowed is not None and ep.name not in allowed:
                    self._skipped.append(ep.name)
                    continue
            try:
                obj = ep.load()
            except Exception as err:
                _warn(
                    f"gaussplug plugin {ep.name!r} (entry point {ep.value!r}"
                    f"{', distribution ' + repr(dist_name) if dist_name else ''}) failed to import: "
                    f"{type(err).__name__}: {str(err).rstrip('.')}. The other plugins are still loaded."
                )
                continue
            if self._pm.is_registered(obj):
                continue
            version = dist.version if dist is not None else "unknown"
            meta = _PluginMeta(ep.name, version, dist_name, ep.value)
            if self._pm.has_plugin(ep.name):  # another distribution's entry point of the same name came first
                first = self._meta.get(ep.name, _PluginMeta(ep.name, "unknown", None)).distribution
                _warn(
                    f"gaussplug plugin {ep.name!r}{_origin(meta)} was not loaded: distributions {dist_name!r} and "
                    f"{first!r} both declare entry point {ep.name!r} in group {ENTRY_POINT_GROUP!r}, and plugin names "
                    f"must be unique; the one from {first!r} was loaded. Uninstall one of the two distributions."
                )
                continue
            self._add(obj, ep.name, meta)
        unmatched = sorted((allowed or set()) - third_party)
        if unmatched:
            _warn(
                f"{ALLOW_ENV}={allow!r} names {', '.join(map(repr, unmatched))}, which is not the entry-point name "
                f"of any installed third-party plugin (installed: {', '.join(sorted(third_party)) or 'none'}); "
                "the variable lists plugin (entry-point) names, not family names."
            )

    def skipped_plugins(self) -> tuple[str, ...]:
        """The installed third-party plugins (entry-point names) that ``GAUSSPLUG_LOAD_PLUGINS`` kept from loading."""
        self.plugin_manager  # noqa: B018 (loads the plugins, which fills the list)
        return tuple(sorted(self._skipped))

    def skipped_hint(self) -> str:
        """A sentence naming the installed plugins that ``GAUSSPLUG_LOAD_PLUGINS`` kept from loading, or ``""``."""
        skipped = self.skipped_plugins()
        if not skipped:
            return ""
        value = os.environ.get(ALLOW_ENV, "")
        return f" {ALLOW_ENV}={value!r} keeps these installed plugins from loading: {', '.join(skipped)}."

    def register(self, plugin: Any, name: str | None = None, version: str = "unknown") -> str:
        """Register a plugin object or module at run time; returns its name.

        The plugin's families are collected at once. If anything is wrong (a bad
        hook, a hook that raises, a non-:class:`Family` passed to ``register``,
        a family registered twice or already provided by another plugin), the
        plugin is unregistered again and nothing changes.

        Raises:
          PluginError: The plugin is unusable; the message names the plugin and,
            where one is at fault, the family.
        """
        pm = self.plugin_manager
        if name is not None and not (isinstance(name, str) and name.strip()):
            raise PluginError(f"name: expected a non-empty string or None; got {type(name).__name__} {name!r}.")
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._check_registrable(plugin, name)
        _check_hook_owner(plugin, name)
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as err:
            if pm.is_registered(plugin):  # pluggy 1.5 leaves it registered, with its valid hooks
                pm.unregister(plugin, name=name)
            raise PluginError(_signature_message(name, err)) from err
        try:
            if not pm.get_hookcallers(plugin):
                raise PluginError(_no_hook_message(plugin))
            self._check_pending(name)
            self._meta[name] = _PluginMeta(name, str(getattr(plugin, "__version__", version)), None)
            families = self._collect(strict=name)
        except PluginError as err:
            pm.unregister(plugin, name=name)
            self._meta.pop(name, None)
            raise PluginError(f"Plugin {name!r} was not registered: {err}") from err
        self._families = families
        self.generation += 1
        return name

    def _check_registrable(self, plugin: Any, name: str) -> None:
        pm = self._pm
        if plugin is None or isinstance(plugin, (str, bytes, int, float)):
            raise PluginError(
                f"Plugin {name!r}: expected a module, class or instance whose gaussplug_register_families is "
                f"decorated with gaussplug.hookimpl; got {type(plugin).__name__} {plugin!r}."
            )
        try:
            hash(plugin)
        except TypeError as err:
            raise PluginError(
                f"Plugin {name!r}: expected a hashable plugin (a module, class or instance); got an unhashable "
                f"{type(plugin).__name__}. Put the hookimpl on a class or a module instead."
            ) from err
        if pm.has_plugin(name):
            raise PluginError(
                f"A plugin named {name!r} is already registered. To replace it (re-running a notebook cell, say), "
                f"call gaussplug.unregister({name!r}) first; to keep both, pass another name= (and give the new "
                "one's families other names)."
            )
        registered_as = pm.get_name(plugin)
        if registered_as is not None:
            raise PluginError(f"Plugin {name!r}: this object is already registered as {registered_as!r}.")

    def _check_pending(self, name: str) -> None:
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as err:
            raise PluginError(
                f"Plugin {name!r} defines an unknown hook: {str(err).rstrip('.')}. The only hook is {_HOOK_SIGNATURE}."
            ) from err

    def unregister(self, plugin_or_name: Any) -> None:
        """Remove a plugin registered earlier (by object or name).

        Raises:
          PluginError: No such plugin is registered (the message lists those that are).
        """
        pm = self.plugin_manager
        if isinstance(plugin_or_name, str):
            name = plugin_or_name
            plugin = pm.get_plugin(name)
        else:
            plugin = plugin_or_name
            name = pm.get_name(plugin)
        if plugin is None or name is None:
            what = repr(plugin_or_name) if isinstance(plugin_or_name, str) else type(plugin_or_name).__name__
            known = ", ".join(sorted(n for n, p in pm.list_name_plugin() if p is not None)) or "(none)"
            raise PluginError(f"Cannot unregister {what}: no such plugin is registered. Registered plugins: {known}.")
        pm.unregister(plugin, name=name)
        self._meta.pop(name, None)
        self._invalidate()

    def _invalidate(self) -> None:
        self._families = None
        self.generation += 1

    # -- families --------------------------------------------------------
    def families(self) -> dict[str, FamilyInfo]:
        """Name -> :class:`FamilyInfo` for every registered family."""
        if self._families is None:
            self._families = self._collect()
        return dict(self._families)

    def families_despite_clashes(self) -> tuple[dict[str, FamilyInfo], list[PluginError]]:
        """The families that load despite clashes, and the clashes (what ``gaussplug plugins`` shows).

        Returns:
          The families (a family two plugins provide is kept from the plugin registered first) and a
          :class:`PluginError` per clash, as :meth:`families` would raise it; empty when nothing clashes.
        """
        clashes: list[PluginError] = []
        return self._collect(clashes=clashes), clashes

    def _collect(self, strict: str | None = None, clashes: list[PluginError] | None = None) -> dict[str, FamilyInfo]:
        """Call every plugin's hook and gather its families.

        A plugin whose own hook is broken is skipped with a warning, except the
        plugin named ``strict`` (one being registered now), for which the
        :class:`PluginError` propagates. A family provided by two plugins is a
        :class:`PluginError` naming both (and their distributions), appended to
        ``clashes`` instead of raised when that list is given.
        """
        pm = self.plugin_manager
        found: dict[str, FamilyInfo] = {}
        # Registration order, so that a clash blames the later plugin. Each
        # implementation is called separately so each family knows its plugin.
        for impl in pm.hook.gaussplug_register_families.get_hookimpls():
            plugin_name = impl.plugin_name
            meta = self._meta.get(plugin_name, _PluginMeta(plugin_name, "unknown", None))
            try:
                collected = _call_hook(impl, _origin(meta))
            except PluginError as err:
                if plugin_name == strict:
                    raise
                _warn(f"{err} Its families are skipped.")
                continue
            for family in collected:
                if family.name in found:
                    other = found[family.name]
                    clash = PluginError(
                        f"Family {family.name!r} is registered by two plugins: plugin {plugin_name!r}"
                        f"{_from(meta.distribution)} registers it and plugin {other.plugin!r}"
                        f"{_from(other.distribution)} already provides it. {_clash_advice(other, meta.distribution)}"
                    )
                    if clashes is None:
                        raise clash
                    clashes.append(clash)
                    continue
                found[family.name] = FamilyInfo(
                    name=family.name,
                    plugin=plugin_name,
                    version=meta.version,
                    options=dict(family.options),
                    doc=family.doc,
                    family=family,
                    distribution=meta.distribution,
                )
        return found

    def get(self, name: str) -> Family:
        """The family called ``name``; a :class:`SpecError` suggests close names."""
        fams = self.families()
        if name in fams:
            return fams[name].family
        raise SpecError(unknown_family_message(name, fams) + self.skipped_hint())

    def list_plugins(self) -> list[dict[str, Any]]:
        """Each plugin's name, hooks and version (as llm's ``get_plugins``)."""
        pm = self.plugin_manager
        out = []
        for plugin in pm.get_plugins():
            name = pm.get_name(plugin)
            meta = self._meta.get(name, _PluginMeta(name, "unknown", None))
            hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
            out.append({"name": name, "hooks": hooks, "version": meta.version, "distribution": meta.distribution})
        return sorted(out, key=lambda d: d["name"])


def _clash_advice(other: FamilyInfo, distribution: str | None) -> str:
    """What to do when a plugin (of ``distribution``; None at run time) registers ``other``'s family again.

    Where either plugin was registered at run time, unregistering the first one replaces it in this
    process; two installed plugins need a rename, an uninstall or :data:`ALLOW_ENV`.
    """
    if other.distribution is None or distribution is None:
        whom = (f"run-time plugin {other.plugin!r} (re-running a notebook cell, say)" if other.distribution is None
                else f"plugin {other.plugin!r} with this one in this process")  # fmt: skip
        return f"To replace {whom}, call gaussplug.unregister({other.plugin!r}) first; or rename the family."
    return f"Rename the family, or uninstall one of the plugins ({ALLOW_ENV} lists the third-party plugins to load)."


def _warn(message: str, category: type[Warning] = GaussplugPluginWarning) -> None:
    """A warning attributed to the first caller outside gaussplug (not to the line in gaussplug that warns)."""
    frame, level = sys._getframe(1), 2
    package = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
