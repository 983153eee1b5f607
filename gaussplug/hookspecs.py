"""Hook specifications for gaussplug plugins.

A plugin is any module or object with functions decorated by
:data:`hookimpl`. Third-party plugins advertise themselves through the
entry-point group ``gaussplug``::

    [project.entry-points.gaussplug]
    my_family = "my_package.my_module"

Example:
  >>> import gaussplug
  >>> class MyPlugin:
  ...     @gaussplug.hookimpl
  ...     def gaussplug_register_families(self, register):
  ...         pass  # register(gaussplug.Family(...)) once per family
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

__all__ = ["hookimpl", "hookspec", "gaussplug_register_families"]

hookspec = pluggy.HookspecMarker("gaussplug")
hookimpl = pluggy.HookimplMarker("gaussplug")


@hookspec
def gaussplug_register_families(register: Callable[..., None]) -> None:
    """Register the layer families this plugin provides.

    Args:
      register: Call ``register(family)`` once per :class:`gaussplug.Family`.
        Names must be unique across all installed plugins; a clash is an
        error that names both plugins.

    Returns:
      Nothing; families are collected through ``register``.
    """
