"""Saving and loading flows: spec + params in one ``.npz``, no pickled code."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from gaussplug._errors import GaussplugError, PluginError, SpecError
from gaussplug._flow import Flow, non_finite_count, non_finite_param
from gaussplug._plugins import get_registry
from gaussplug._registry import ALLOW_ENV, Registry, _warn
from gaussplug._runtime import get_runtime
from gaussplug._spec import make_plan

__all__ = ["load", "save"]

FORMAT = "gaussplug-flow"
FORMAT_VERSION = 1
_HEADER = "__gaussplug__"
#: Required header entries and their JSON types; every ``params`` entry names these keys.
_HEADER_KEYS = {"spec": (dict, "object"), "families": (dict, "object"), "params": (list, "array")}
_ENTRY_KEYS = ("key", "layer", "module", "name")


def save(flow: Flow, path: str | os.PathLike) -> str:
    """Write ``flow`` (spec, params, metadata) to ``path`` as a portable ``.npz``.

    Arrays are stored bit-exactly with their dtypes; the spec and the name,
    plugin, version and (for an installed plugin) pip distribution of every
    family used go into a JSON header, so no Python objects are pickled.
    Params must be finite.

    The whole file is first written (and synced) to a temp file beside the
    target, so a failed save (a full disk, an error while serialising) never
    touches an existing file. Then:

    * A symlink is followed: its target file gets the new model and the link
      stays a link (never replaced by a regular file).
    * A file with one link (the usual case), or a new file, is replaced by
      renaming the temp file over it: atomic, so readers see the old model or
      the new one, never half of one. The file's permission bits are kept, but
      it is a new inode (a process holding the old file open keeps reading the
      old model).
    * A file with several hard links is overwritten in place from the complete
      temp file, so every link sees the new model and the file keeps its inode,
      owner and permissions; renaming would silently detach ``path`` from its
      other links, which would keep the old model. This copy is not atomic: if
      it fails midway the file may be incomplete, and the ``OSError`` names the
      temp file, which is kept and holds the complete model.
    * Where no temp file can be made beside it (a read-only folder holding a
      writable file), the file is written in place.

    Args:
      flow: The flow to save.
      path: Destination file; written exactly as given (conventionally ``.npz``).

    Returns:
      The path written.

    Raises:
      TypeError: ``flow`` is not a :class:`gaussplug.Flow`.
      ValueError: A param holds NaN or inf (nothing is written).
      FileNotFoundError: The folder of ``path`` does not exist.
      OSError: The file cannot be written.

    Example:
      >>> import gaussplug, tempfile, os
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
      >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
      >>> _ = gaussplug.save(flow, path)
      >>> gaussplug.load(path).layer_names
      ('0_standardize',)
    """
    from gaussplug import __version__

    if not isinstance(flow, Flow):
        raise TypeError(f"flow: expected a gaussplug.Flow; got {type(flow).__name__}.")
    infos = flow.runtime.families  # the families the flow computes with, even if unregistered since
    host = {layer: {m: {k: np.asarray(v) for k, v in leaves.items()} for m, leaves in modules.items()}
            for layer, modules in flow.params.items()}  # fmt: skip (each param read off the device once)
    found = non_finite_param(host)
    if found:
        layer, module, name, bad, size = found
        raise ValueError(
            f"layer {layer!r}, param {module}/{name}: {bad} of {size} values are NaN or "
            "inf; a model with non-finite params cannot be used or loaded, so it is not saved."
        )
    arrays: dict[str, np.ndarray] = {}
    index = []
    for layer, modules in host.items():
        for module, leaves in modules.items():
            for name, value in leaves.items():
                key = f"p{len(index)}"
                arrays[key] = value
                index.append({"key": key, "layer": layer, "module": module, "name": name})
    used = sorted({layer.family for layer in flow.layers})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gaussplug_version": __version__,
        "spec": flow.spec,
        "families": {name: _provenance(infos[name]) for name in used if name in infos},
        "params": index,
        "metadata": flow.metadata,
    }
    arrays[_HEADER] = np.array(json.dumps(header))
    path = os.fspath(path)
    _write_atomically(path, lambda fh: np.savez(fh, **arrays))
    return path


def _provenance(info) -> dict[str, str]:
    """A family's header entry: its plugin, version and, where known, pip distribution (absent in older files)."""
    entry = {"plugin": info.plugin, "version": info.version}
    if info.distribution:
        entry["distribution"] = info.distribution
    return entry


def _write_atomically(path: str, write) -> None:
    """``write(fh)`` into a temp file beside ``path``'s target, then moves it into place (see :func:`save`).

    A symlink is followed. A file with one link is replaced by renaming the temp file over it (atomic,
    keeping its permission bits; a new file gets 0o666 less the umask). A file with several hard links
    is overwritten in place from the complete temp file, so every link sees the new model. Where no
    temp file can be made (a read-only folder holding a writable file), the file is written in place.
    """
    import shutil
    import uuid

    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path!r}: the folder {os.path.dirname(path) or '.'!r} does not exist.")
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except PermissionError:
        with open(target, "wb") as fh:  # not atomic, but the only way to write there
            write(fh)
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # the data are on disk before the rename makes them the file
        links = os.stat(target).st_nlink if os.path.isfile(target) else 1  # a folder's count is not links
        if links == 1:
            if os.path.exists(target):
                shutil.copymode(target, tmp)
            os.replace(tmp, target)
            return
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _copy_in_place(tmp, target, path, links)


def _copy_in_place(tmp: str, target: str, path: str, links: int) -> None:
    """Overwrites ``target`` (a file with ``links`` hard links) with the complete file ``tmp``, then removes ``tmp``.

    If the copy fails, ``tmp`` is kept and the error names it, since ``target`` may then be incomplete.
    """
    import shutil

    try:
        with open(tmp, "rb") as src, open(target, "r+b") as dst:
            shutil.copyfileobj(src, dst)
            dst.truncate()
            dst.flush()
            os.fsync(dst.fileno())
    except Exception as err:
        raise OSError(
            f"{path!r}: writing the model in place (the file has {links} hard links) failed: {_reason(err)}. "
            f"{target!r} may be incomplete; the complete model is in {tmp!r}."
        ) from err
    os.remove(tmp)


def load(path: str | os.PathLike, *, registry: Registry | None = None) -> Flow:
    """Read a flow written by :func:`save` (exact round trip).

    The stored params are checked against the structure the stored spec builds
    (layer, module and param names, shapes, float32/float64 dtypes, finite
    values), so a damaged or tampered file fails here rather than on first use.
    A family whose plugin or plugin version is not the one that saved the
    model loads with a :class:`GaussplugPluginWarning` if its stored options
    and params still fit the installed family, and is a :class:`PluginError`
    if they do not.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      PluginError: The model uses a family that is not installed; the message
        names the family and the plugin (version, distribution) that provided
        it. Or a family's plugin or version changed since the model was saved
        and the stored options or params no longer fit it; the message names
        the layer, both plugin versions and what differs.
      GaussplugError: The file is not a gaussplug model or is damaged; the
        message names the path (and, for a wrong shape, the layer and param).
    """
    registry = registry if registry is not None else get_registry()
    path = os.fspath(path)
    header, stored = _read(path)
    changed = _check_families(path, header["families"], registry)
    try:
        plan = make_plan(header["spec"], registry)
    except SpecError as err:
        _check_changed_options(path, header["spec"], changed, err)
        raise SpecError(f"{path!r}: the stored spec is invalid: {err}") from err
    runtime = get_runtime(plan, registry)  # fail early if a family cannot be built
    params = _nest(path, header["params"], stored)
    _check_shapes(path, params, runtime, changed)
    _warn_changed(path, changed)  # they fit: the model loads, but its families' code changed
    import jax
    import jax.numpy as jnp

    x64 = jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64
    if not x64 and any(a.dtype == np.float64 for a in stored.values()):
        _warn(
            f"{path!r} holds float64 params, but this process runs JAX in float32 (JAX_ENABLE_X64 is off), so "
            "they are rounded to float32 and its densities may differ slightly from the saved model's. Set "
            "JAX_ENABLE_X64=1 (or jax.config.update('jax_enable_x64', True) before using JAX) to load them exactly.",
            UserWarning,
        )
    params = {
        name: {m: {k: jnp.asarray(v) for k, v in d.items()} for m, d in mods.items()} for name, mods in params.items()
    }
    return Flow(plan, params, registry=registry, metadata=header.get("metadata"))  # _check_shapes checked them


def _damaged(path: str, what: str) -> GaussplugError:
    return GaussplugError(f"{path!r} is damaged or not a gaussplug model file: {what}")


def _read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checked JSON header and every array of the archive, read eagerly."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise GaussplugError(f"{path!r} is not a gaussplug model file (.npz): {_reason(err)}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise GaussplugError(
            f"{path!r} is not a gaussplug model file: it holds a single array (a .npy file), not an .npz archive."
        )
    with archive:
        if _HEADER not in archive.files:
            raise GaussplugError(f"{path!r} is an .npz file but not a gaussplug model (no {_HEADER} header).")
        try:
            stored = {key: np.array(archive[key]) for key in archive.files}
        except Exception as err:  # BadZipFile (bad CRC), zlib errors, truncated members, pickled arrays
            raise _damaged(path, f"an array cannot be read ({_reason(err)}).") from err
    return _header(path, stored.pop(_HEADER)), stored


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split()).rstrip('.')}"


def _header(path: str, raw: np.ndarray) -> dict[str, Any]:
    try:
        header = json.loads(str(raw))
    except ValueError as err:
        raise _damaged(path, f"the {_HEADER} header is not valid JSON ({err}).") from err
    if not isinstance(header, dict):
        raise _damaged(path, f"the {_HEADER} header must be a JSON object; got {type(header).__name__}.")
    if header.get("format") != FORMAT or not isinstance(header.get("format_version", 0), int) or (
        header.get("format_version", 0) > FORMAT_VERSION
    ):
        raise GaussplugError(
            f"{path!r}: unsupported model format {header.get('format')!r} "
            f"v{header.get('format_version')}; this gaussplug reads {FORMAT} v<={FORMAT_VERSION}."
        )
    for key, (kind, name) in _HEADER_KEYS.items():
        if not isinstance(header.get(key), kind):
            found = "missing" if key not in header else f"a {type(header[key]).__name__}"
            raise _damaged(path, f"the header's {key!r} entry should be a JSON {name}; it is {found}.")
    if not isinstance(header.get("metadata", {}), (dict, type(None))):
        raise _damaged(path, f"the header's 'metadata' entry should be a JSON object; it is a "
                             f"{type(header['metadata']).__name__}.")
    for entry in header["params"]:
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in _ENTRY_KEYS)):
            raise _damaged(path, f"a 'params' entry should name {', '.join(_ENTRY_KEYS)}; got {entry!r}.")
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
                why = f"which is not installed. Install that plugin{pip} and retry.{registry.skipped_hint()}"
            raise PluginError(
                f"{path!r} needs layer family {family!r}, provided by plugin {plugin!r} (version {version}"
                f"{f', distribution {dist!r}' if dist else ''}), {why} Installed families: "
                f"{', '.join(sorted(installed))}."
            )
    return changed


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
    the installed family's is a :class:`PluginError` instead: the plugin changed, not the file.
    """
    import jax

    from gaussplug._data import default_dtype

    want = jax.eval_shape(lambda: runtime.init_params(jax.random.PRNGKey(0), default_dtype()))
    expected = {(layer, m, k): tuple(v.shape) for layer, mods in want.items() for m, d in mods.items()
                for k, v in d.items()}
    found = {(layer, m, k): tuple(np.shape(v)) for layer, mods in params.items() for m, d in mods.items()
             for k, v in d.items()}
    for layer in runtime.plan.layers:
        if layer.family in changed:
            want_here, found_here = ({(m, k): shape for (name, m, k), shape in d.items() if name == layer.name}
                                     for d in (expected, found))  # fmt: skip
            if want_here != found_here:
                what = f"params differ: expected {_listing(want_here)}; the file has {_listing(found_here)}"
                raise _changed(path, layer.name, layer.family, *changed[layer.family], what)
    for key in expected:
        if key not in found:
            raise _damaged(path, f"layer {key[0]!r} has no stored param {key[1]}/{key[2]}.")
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
