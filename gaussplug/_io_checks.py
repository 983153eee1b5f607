"""The checks of a saved model as :func:`gaussplug.load` reads it: its header, its families and its params.

The file format's constants live here too: :func:`gaussplug.save` writes what
:func:`_header` checks. Each check raises a :class:`gaussplug.GaussplugError`
naming the path for a damaged file, or a :class:`gaussplug.PluginError` for a
family that is not installed or no longer fits the stored options and params;
:func:`_warn_changed` warns of a family whose plugin or version changed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from gaussplug._errors import DataWarning, GaussplugError, PluginError, SpecError
from gaussplug._errors import shown as _shown
from gaussplug._param_checks import non_finite_count
from gaussplug._registry import ALLOW_ENV, Registry, _warn

FORMAT = "gaussplug-flow"
FORMAT_VERSION = 1
_HEADER = "__gaussplug__"
#: Required header entries and their JSON types; every ``params`` entry names these keys.
_HEADER_KEYS = {"spec": (dict, "object"), "families": (dict, "object"), "params": (list, "array")}
_ENTRY_KEYS = ("key", "layer", "module", "name")


def _damaged(path: str, what: str) -> GaussplugError:
    return GaussplugError(f"{path!r} is damaged or not a gaussplug model file: {what}")


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split()).rstrip('.')}"


def _header(path: str, raw: np.ndarray) -> dict[str, Any]:
    try:
        header = json.loads(str(raw))
    except RecursionError as err:
        raise _damaged(path, f"the {_HEADER} header is nested too deeply to be a gaussplug header.") from err
    except ValueError as err:
        raise _damaged(path, f"the {_HEADER} header is not valid JSON ({err}).") from err
    if not isinstance(header, dict):
        raise _damaged(path, f"the {_HEADER} header must be a JSON object; got {type(header).__name__}.")
    version = header.get("format_version", 1)
    if header.get("format") != FORMAT:
        raise GaussplugError(
            f"{path!r}: unsupported model format {_shown(header.get('format'))}; this gaussplug reads "
            f"{FORMAT} v<={FORMAT_VERSION}."
        )
    if type(version) is not int or version < 1:  # bool is an int subclass: not a version
        raise _damaged(path, f"the header's 'format_version' should be a positive integer; it is {_shown(version)}.")
    if version > FORMAT_VERSION:
        raise GaussplugError(
            f"{path!r} was written in {FORMAT} v{version}, a newer format than this gaussplug reads "
            f"(v<={FORMAT_VERSION}); upgrade gaussplug to load it."
        )
    for key, (kind, name) in _HEADER_KEYS.items():
        if not isinstance(header.get(key), kind):
            found = "missing" if key not in header else f"a {type(header[key]).__name__}"
            raise _damaged(path, f"the header's {key!r} entry should be a JSON {name}; it is {found}.")
    if not isinstance(header.get("metadata", {}), (dict, type(None))):
        raise _damaged(path, f"the header's 'metadata' entry should be a JSON object; it is a "
                             f"{type(header['metadata']).__name__}.")
    seen: dict[tuple[str, str, str], str] = {}
    for entry in header["params"]:
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in _ENTRY_KEYS)):
            raise _damaged(path, f"a 'params' entry should name {', '.join(_ENTRY_KEYS)}; got {_shown(entry)}.")
        where = (entry["layer"], entry["module"], entry["name"])
        if where in seen:
            raise _damaged(path, f"the header lists layer {where[0]!r}, param {where[1]}/{where[2]} twice "
                                 f"(arrays {seen[where]!r} and {entry['key']!r}).")
        seen[where] = entry["key"]
    return header


def _check_families(path: str, families: dict[str, Any], registry: Registry) -> dict[str, tuple[dict, Any]]:
    """Raises :class:`PluginError` for a family that is not installed.

    Returns:
      The families whose installed plugin or version is not the stored one: name -> (stored header
      entry, installed :class:`FamilyInfo`).
    """
    installed = registry.families()
    changed = {}
    for family, info in families.items():
        info = info if isinstance(info, dict) else {}
        now = installed.get(family)
        version = str(info.get("version", "unknown"))
        if now is not None and "plugin" in info and (info["plugin"], version) != (now.plugin, now.version):
            changed[family] = (info, now)
        if family not in installed:
            plugin = info.get("plugin", "unknown")
            dist = info.get("distribution")
            if plugin in registry.skipped_plugins():
                why = (f"which is installed but not loaded: {ALLOW_ENV}={os.environ.get(ALLOW_ENV, '')!r} does "
                       "not list it. Add it there, or unset the variable, and retry.")  # fmt: skip
            else:
                pin = "" if version == "unknown" else f"=={version}"
                pip = f" (pip install '{dist}{pin}')" if dist else ""
                why = (f"which is not installed. Install that plugin{pip} and retry." if dist else
                       "which is not loaded. Register it (gaussplug.register, for a plugin defined at run time) or "
                       "install it, and retry.") + registry.skipped_hint()
            raise PluginError(
                f"{path!r} needs layer family {family!r}, provided by plugin {plugin!r} (version {version}"
                f"{f', distribution {dist!r}' if dist else ''}), {why} Installed families: "
                f"{', '.join(sorted(installed))}."
            )
    return changed


def refuse_beyond_float32(path: str, params) -> None:
    """A :class:`GaussplugError` for float64 params that rounding to float32 would turn into inf.

    Args:
      path: The source, shown with ``!r`` (a model file's path).
      params: ``(where, array)`` pairs, ``where`` naming the layer and param for the message.
    """
    limit = np.finfo(np.float32).max
    for where, value in params:
        if np.dtype(value.dtype) == np.float64 and np.any(np.abs(value) > limit):
            raise GaussplugError(
                f"{path!r}: {where} holds float64 values beyond float32's range (largest {np.abs(value).max():.3g}); "
                "they would load as inf with JAX in float32. Load it with float64 enabled (JAX_ENABLE_X64=1)."
            )


def warn_float64_rounded(path: str, original: str) -> None:
    """The :class:`~gaussplug.DataWarning` for float64 params read into a float32 process (rounded to float32).

    Args:
      path: The source, shown with ``!r`` (a model file's path).
      original: What the rounded model differs from (``"saved model"``).
    """
    _warn(
        f"{path!r} holds float64 params, but this process runs JAX in float32 (JAX_ENABLE_X64 is off), so "
        f"they are rounded to float32 and its densities differ from the {original}'s: slightly for most models, "
        "by many nats where the data have spread near float32's resolution. Its samples and transforms for a "
        "given seed differ too (float32 latent draws, float32 arithmetic). Set "
        "JAX_ENABLE_X64=1 (or jax.config.update('jax_enable_x64', True) before using JAX) to load them exactly.",
        DataWarning,
    )


def _warn_changed(path: str, changed: dict[str, tuple]) -> None:
    """A :class:`GaussplugPluginWarning` per family whose plugin or version changed (see :func:`_check_families`).

    A built-in family that only changed version (gaussplug itself was upgraded) does not warn: gaussplug
    keeps reading the params of its own families as they were saved, or refuses the file (format version).
    """
    for family, (info, now) in changed.items():
        version = info.get("version", "unknown")
        if info["plugin"] == now.plugin and now.distribution == "gaussplug":
            continue
        if info["plugin"] != now.plugin:
            _warn(
                f"{path!r} was saved with layer family {family!r} from plugin {info['plugin']!r} (version "
                f"{version}); it is now provided by plugin {now.plugin!r} (version {now.version}), so the stored "
                "params may mean something else and the density may differ."
            )
        else:
            _warn(
                f"{path!r} was saved with layer family {family!r} from plugin {now.plugin!r} version {version}; "
                f"version {now.version} is installed now. The stored options and params fit it, but the density "
                "may differ if the new version changed what they mean."
            )


def _changed(path: str, layer: str, family: str, info: dict, now, what: str) -> PluginError:
    """The error for a layer whose family's plugin or version changed and whose stored ``what`` no longer fits."""
    version = str(info.get("version", "unknown"))
    dist = info.get("distribution")
    hint = ""
    if info["plugin"] == now.plugin and dist and version != "unknown":
        hint = f" To load this model, install the version it was saved with: pip install '{dist}=={version}'."
    return PluginError(
        f"{path!r}: layer {layer!r} (family {family!r}) was saved with {_plugin_version(info['plugin'], version)}; "
        f"{_plugin_version(now.plugin, now.version)} is installed now and its {what}.{hint}"
    )


def _plugin_version(plugin: str, version: str) -> str:
    return f"plugin {plugin!r} {version}" if version != "unknown" else f"plugin {plugin!r} (version unknown)"


def _check_changed_options(path: str, spec: dict[str, Any], changed: dict[str, tuple], err: SpecError) -> None:
    """Raises :class:`PluginError` if ``err``, from planning the stored spec, is about a layer of a changed family.

    Such a layer's stored options do not fit the installed version of its family (an option renamed or
    removed, a value it now rejects); the file itself is intact.
    """
    from gaussplug._spec import _walk

    entries: list = []
    try:
        _walk(spec.get("layers"), "layers", entries)
    except SpecError:
        return
    for index, (where, entry) in enumerate(entries):
        family = entry["family"]
        prefix = f"{where} ({family}): "
        if isinstance(family, str) and family in changed and str(err).startswith(prefix):
            options = ", ".join(f"{k}={v!r}" for k, v in entry.items() if k != "family") or "no options"
            what = f"options differ: {str(err)[len(prefix):].rstrip('.')}; the file has {options} at {where}"
            raise _changed(path, f"{index}_{family}", family, *changed[family], what) from err


def _nest(path: str, index: list[dict[str, str]], stored: dict[str, np.ndarray]):
    """Stored arrays as ``layer -> module -> name``, as the header's index lists them."""
    params: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for entry in index:
        if entry["key"] not in stored:
            raise _damaged(
                path,
                f"the header lists array {entry['key']!r} (layer {entry['layer']!r}, param "
                f"{entry['module']}/{entry['name']}) but the archive does not hold it.",
            )
        params.setdefault(entry["layer"], {}).setdefault(entry["module"], {})[entry["name"]] = stored[entry["key"]]
    return params


def _check_shapes(path: str, params, runtime, changed: dict[str, tuple]) -> None:
    """Raises GaussplugError unless ``params`` has the names, shapes and dtypes the runtime's layers expect.

    Floating params must be float32 or float64 (either loads: the flow takes the stored dtype) and finite.
    A layer of a family in ``changed`` (see :func:`_check_families`) whose param names or shapes are not
    the installed family's is a :class:`PluginError` instead: the plugin changed, not the file. With the
    plugin and version it was saved with, a missing param is the file's fault, unless the plugin was
    edited without a new version (a plugin author's edit-and-reload loop): the message says both.
    """
    import jax

    from gaussplug._data import default_dtype

    want = jax.eval_shape(lambda: runtime.init_params(jax.random.PRNGKey(0), default_dtype()))
    expected = {(layer, m, k): tuple(v.shape) for layer, mods in want.items() for m, d in mods.items()
                for k, v in d.items()}
    found = {(layer, m, k): tuple(np.shape(v)) for layer, mods in params.items() for m, d in mods.items()
             for k, v in d.items()}
    for lr in runtime.layers:
        layer = lr.layer
        want_here, found_here = ({(m, k): shape for (name, m, k), shape in d.items() if name == layer.name}
                                 for d in (expected, found))  # fmt: skip
        if layer.family in changed and want_here != found_here:
            what = f"params differ: expected {_listing(want_here)}; the file has {_listing(found_here)}"
            raise _changed(path, layer.name, layer.family, *changed[layer.family], what)
        missing = sorted(set(want_here) - set(found_here))
        if missing:  # from the plugin and version saved with: the file's fault, or an edit to the plugin
            raise _damaged(
                path,
                f"layer {layer.name!r} has no stored param {'/'.join(missing[0])} (the file stores "
                f"{_listing(found_here)} for it). If plugin {lr.plugin!r} has been changed since the model was "
                "saved, its params no longer fit the file: a plugin whose params change needs a new version, so "
                "that files name the version they need.",
            )
    for key in expected:  # every key is stored: the loop above raised for a layer missing one
        where = f"layer {key[0]!r}, param {key[1]}/{key[2]}"
        if found[key] != expected[key]:
            raise _damaged(path, f"{where}: expected shape {expected[key]}; found {found[key]}.")
        value = params[key[0]][key[1]][key[2]]
        want_dtype = np.dtype(want[key[0]][key[1]][key[2]].dtype)
        if want_dtype.kind == "f":
            if value.dtype not in (np.float32, np.float64):
                raise _damaged(path, f"{where}: expected float32 or float64 values; found dtype {value.dtype}.")
            bad = non_finite_count(value)
            if bad:
                raise _damaged(path, f"{where}: {bad} of {np.size(value)} values are NaN or inf.")
        elif value.dtype.kind != want_dtype.kind:
            raise _damaged(path, f"{where}: expected {want_dtype} values; found dtype {value.dtype}.")
    extra = sorted(set(found) - set(expected))
    if extra:
        layer, module, name = extra[0]
        raise _damaged(path, f"layer {layer!r} has a param {module}/{name} that the spec's layers do not use.")


def _listing(shapes: dict[tuple[str, str], tuple]) -> str:
    """``"~/log_scale (2,), ~/shift (2,)"``: one layer's param names and shapes."""
    return ", ".join(f"{module}/{name} {shape}" for (module, name), shape in sorted(shapes.items())) or "no params"
