"""A plugin as the family registry sees it: its metadata, its hook, and the messages that name it.

:class:`_PluginMeta` records where a plugin came from (name, version, pip
distribution, entry point); :func:`_check_hook_owner` and :func:`_call_hook`
check and call its ``gaussplug_register_families`` hook; the other helpers word
the errors and warnings of :class:`gaussplug._registry.Registry`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
from collections.abc import Mapping
from typing import Any

from gaussplug._errors import PluginError
from gaussplug._family import Family

_HOOK_SIGNATURE = "gaussplug_register_families(register)"


@dataclasses.dataclass(frozen=True)
class _PluginMeta:
    name: str
    version: str
    distribution: str | None
    entry_point: str | None = None


def _gaussplug_version() -> str:
    from gaussplug import __version__

    return __version__


def _short_name(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


def _call_hook(impl, origin: str = "") -> list[Family]:
    """One plugin's families, or a :class:`PluginError` saying what is wrong with its hook.

    ``origin`` (see :func:`_origin`) follows the plugin's name in the messages.
    """
    plugin = f"{impl.plugin_name!r}{origin}"
    collected: list[Family] = []

    def register(family: Family) -> None:
        if not isinstance(family, Family):
            raise PluginError(
                f"Plugin {plugin} passed {type(family).__name__} {family!r} to register(); expected a "
                "gaussplug.Family."
            )
        if any(f.name == family.name for f in collected):
            raise PluginError(
                f"Plugin {plugin} registers family {family.name!r} twice; call register() once per family."
            )
        collected.append(family)

    try:
        returned = impl.function(register=register)
    except PluginError:
        raise
    except Exception as err:
        raise PluginError(f"Plugin {plugin} raised while registering families: {type(err).__name__}: {err}.") from err
    if returned is not None:
        raise PluginError(
            f"Plugin {plugin}: gaussplug_register_families returned {type(returned).__name__}; expected None. "
            "Call register(family) once per family instead of returning them."
        )
    return collected


def unknown_family_message(name: str, fams: Mapping[str, Any], where: str = "") -> str:
    """A message for an unknown family name listing known ones and the closest."""
    known = sorted(fams)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{where}unknown family {name!r}.{hint} Known families: {', '.join(known) or '(none installed)'}."


_NO_HOOK = (
    f"it has no hook: expected a {_HOOK_SIGNATURE} function or method decorated with gaussplug.hookimpl, "
    "which a plugin needs to provide families."
)


def _no_hook_message(plugin: Any) -> str:
    """Why ``plugin`` has no hook; a :class:`Family` given in place of its plugin is named as such."""
    if isinstance(plugin, Family):
        return (
            f"it is the gaussplug.Family {plugin.name!r} itself, not a plugin: point the entry point (or "
            f"gaussplug.register) at the module or object whose {_HOOK_SIGNATURE} hook, decorated with "
            "gaussplug.hookimpl, calls register(...) with it."
        )
    return _NO_HOOK


def _origin(meta: _PluginMeta) -> str:
    """`` (entry point 'pkg.mod', distribution 'dist')`` for entry-point plugins, else ``""``."""
    if meta.entry_point is None:
        return ""
    dist = f", distribution {meta.distribution!r}" if meta.distribution else ""
    return f" (entry point {meta.entry_point!r}{dist})"


def _from(distribution: str | None) -> str:
    """`` (distribution 'dist')``, or ``""`` where the distribution is not known (a run-time plugin)."""
    return f" (distribution {distribution!r})" if distribution else ""


def _strip_name(err: Exception, name: str) -> str:
    """An error's text without a leading ``Plugin 'name': `` (the warning names the plugin already)."""
    text = str(err)
    prefix = f"Plugin {name!r}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _signature_message(name: str, err: Exception) -> str:
    return (
        f"Plugin {name!r}: its hook has the wrong signature. Expected {_HOOK_SIGNATURE} (a method may also take "
        f"self); pluggy says: {' '.join(str(err).split())}"
    )


def _check_hook_owner(plugin: Any, name: str) -> None:
    """Refuses a class whose hook is an instance method: pluggy would call it without ``self``."""
    if not inspect.isclass(plugin):
        return
    hook = inspect.getattr_static(plugin, "gaussplug_register_families", None)
    if isinstance(hook, types.FunctionType):
        raise PluginError(
            f"Plugin {name!r} is the class {plugin.__name__}, whose gaussplug_register_families is an instance "
            f"method (it takes self). Register an instance, {plugin.__name__}(), or make the hook a @staticmethod."
        )
