"""Saving and loading flows: spec + params in one ``.npz``, no pickled code."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from gaussplug._errors import GaussplugError, PluginError
from gaussplug._flow import Flow
from gaussplug._plugins import get_registry
from gaussplug._registry import Registry
from gaussplug._runtime import get_runtime
from gaussplug._spec import make_plan

__all__ = ["load", "save"]

FORMAT = "gaussplug-flow"
FORMAT_VERSION = 1
_HEADER = "__gaussplug__"


def save(flow: Flow, path: str | os.PathLike) -> str:
    """Write ``flow`` (spec, params, metadata) to ``path`` as a portable ``.npz``.

    Arrays are stored bit-exactly with their dtypes; the spec and the name,
    plugin and version of every family used go into a JSON header, so no
    Python objects are pickled.

    Args:
      flow: The flow to save.
      path: Destination file; written exactly as given (conventionally ``.npz``).

    Returns:
      The path written.

    Example:
      >>> import gaussplug, tempfile, os
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
      >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
      >>> _ = gaussplug.save(flow, path)
      >>> gaussplug.load(path).layer_names
      ('0_standardize',)
    """
    from gaussplug import __version__

    infos = flow.registry.families()
    arrays: dict[str, np.ndarray] = {}
    index = []
    for layer, modules in flow.params.items():
        for module, leaves in modules.items():
            for name, value in leaves.items():
                key = f"p{len(index)}"
                arrays[key] = np.asarray(value)
                index.append({"key": key, "layer": layer, "module": module, "name": name})
    used = sorted({layer.family for layer in flow.layers})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gaussplug_version": __version__,
        "spec": flow.spec,
        "families": {
            name: {"plugin": infos[name].plugin, "version": infos[name].version} for name in used if name in infos
        },
        "params": index,
        "metadata": flow.metadata,
    }
    arrays[_HEADER] = np.array(json.dumps(header))
    path = os.fspath(path)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load(path: str | os.PathLike, *, registry: Registry | None = None) -> Flow:
    """Read a flow written by :func:`save` (exact round trip).

    Raises:
      PluginError: The model uses a family that is not installed; the message
        names the family and the plugin (and version) that provided it.
      GaussplugError: The file is not a gaussplug model or is damaged.
    """
    registry = registry if registry is not None else get_registry()
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise GaussplugError(f"{path!r} is not a gaussplug model file (.npz): {err}") from err
    with archive:
        if _HEADER not in archive.files:
            raise GaussplugError(f"{path!r} is an .npz file but not a gaussplug model (no {_HEADER} header).")
        header: dict[str, Any] = json.loads(str(archive[_HEADER]))
        if header.get("format") != FORMAT or header.get("format_version", 0) > FORMAT_VERSION:
            raise GaussplugError(
                f"{path!r}: unsupported model format {header.get('format')!r} "
                f"v{header.get('format_version')}; this gaussplug reads {FORMAT} v<={FORMAT_VERSION}."
            )
        installed = registry.families()
        for family, info in header["families"].items():
            if family not in installed:
                raise PluginError(
                    f"{path!r} needs layer family {family!r}, provided by plugin {info['plugin']!r} "
                    f"(version {info['version']}), which is not installed. Install that plugin and retry. "
                    f"Installed families: {', '.join(sorted(installed))}."
                )
        params: dict[str, dict[str, dict[str, Any]]] = {}
        for entry in header["params"]:
            params.setdefault(entry["layer"], {}).setdefault(entry["module"], {})[entry["name"]] = np.array(
                archive[entry["key"]]
            )
    import jax.numpy as jnp

    plan = make_plan(header["spec"], registry)
    get_runtime(plan, registry)  # fail early if a family cannot be built
    params = {
        name: {m: {k: jnp.asarray(v) for k, v in d.items()} for m, d in mods.items()} for name, mods in params.items()
    }
    template = Flow(plan, params, registry=registry, metadata=header.get("metadata"))
    return template.replace(params=params)
