"""Saving and loading flows: spec + params in one ``.npz``, no pickled code.

The checks that :func:`load` runs on a file (header, families, params) live in :mod:`gaussplug._io_checks`.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from gaussplug._data import default_dtype
from gaussplug._errors import GaussplugError, SpecError
from gaussplug._flow import Flow, require_flow
from gaussplug._io_checks import (
    _HEADER,
    FORMAT,
    FORMAT_VERSION,
    _check_changed_options,
    _check_families,
    _check_shapes,
    _damaged,
    _header,
    _nest,
    _reason,
    _warn_changed,
    refuse_beyond_float32,
    warn_float64_rounded,
)
from gaussplug._param_checks import non_finite_param
from gaussplug._paths import special_file_kind
from gaussplug._plugins import get_registry
from gaussplug._registry import Registry
from gaussplug._runtime import get_runtime
from gaussplug._spec import make_plan

__all__ = ["load", "save"]


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
      IsADirectoryError: ``path`` is a folder.
      OSError: The file cannot be written (the message names ``path`` and why).

    Example:
      >>> import gaussplug, tempfile, os
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
      >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
      >>> _ = gaussplug.save(flow, path)
      >>> gaussplug.load(path).layer_names
      ('0_standardize',)
    """
    from gaussplug import __version__

    require_flow(flow, "save")
    _require_path(path, "save")
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
        "families": {name: infos[name].provenance() for name in used if name in infos},
        "params": index,
        "metadata": flow.metadata,
    }
    arrays[_HEADER] = np.array(json.dumps(header))
    path = os.fspath(path)
    _write_atomically(path, lambda fh: np.savez(fh, **arrays))
    return path


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
    if os.path.isdir(target):
        raise IsADirectoryError(f"{path!r} is a folder; expected the path of a file to write, such as "
                                f"{os.path.join(path, 'model.npz')!r}.")  # fmt: skip
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path!r}: the folder {os.path.dirname(path) or '.'!r} does not exist.")
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except PermissionError:
        try:
            with open(target, "wb") as fh:  # not atomic, but the only way to write there
                write(fh)
        except OSError as err:
            raise type(err)(f"{path!r} cannot be written: {err.strerror or err}.") from err
        return
    except OSError as err:  # a folder that takes no files (/proc, /sys), a full disk, a name too long
        raise type(err)(f"{path!r} cannot be written: {err.strerror or err} (creating a file in "
                        f"{os.path.dirname(path) or '.'!r}).") from err  # fmt: skip
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # the data are on disk before the rename makes them the file
        links = os.stat(target).st_nlink if os.path.isfile(target) else 1  # a new file (a folder was refused)
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


def _require_path(path, caller: str):
    """``path`` if it is a file path (str, bytes or os.PathLike); else a ``TypeError`` naming ``caller``'s argument."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{caller}: expected a file path (str or os.PathLike) as path; got {type(path).__name__}.")
    if isinstance(path, bytes) and b"\0" in path:  # no path holds a NUL byte: a file's contents, not its name
        raise TypeError(f"{caller}: expected a file path (str or os.PathLike) as path; got bytes that are not a "
                        f"path ({len(path):,} bytes holding NUL, e.g. a file's contents: pass its name "
                        "instead).")  # fmt: skip
    return path


def load(path: str | os.PathLike, *, registry: Registry | None = None) -> Flow:
    """Read a flow written by :func:`save` (exact round trip).

    The stored params are checked against the structure the stored spec builds
    (layer, module and param names, shapes, float32/float64 dtypes, finite
    values), so a damaged or tampered file fails here rather than on first use.
    A family whose plugin or plugin version is not the one that saved the
    model loads with a :class:`GaussplugPluginWarning` if its stored options
    and params still fit the installed family, and is a :class:`PluginError`
    if they do not. A model saved in float64 and loaded while JAX runs in
    float32 (x64 off) is rounded to float32 with a :class:`gaussplug.DataWarning` saying so;
    set ``JAX_ENABLE_X64=1`` to load it exactly.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      PluginError: The model uses a family that is not installed; the message
        names the family and the plugin (version, distribution) that provided
        it. Or a family's plugin or version changed since the model was saved
        and the stored options or params no longer fit it; the message names
        the layer, both plugin versions and what differs.
      GaussplugError: The file is not a gaussplug model or is damaged; the
        message names the path (and, for a wrong shape, the layer and param).

    Example:
      >>> import gaussplug, numpy as np, os, tempfile
      >>> flow = gaussplug.fit_rbig(np.random.default_rng(0).normal(size=(300, 2)), n_layers=1, n_components=2)
      >>> path = gaussplug.save(flow, os.path.join(tempfile.mkdtemp(), "model.npz"))
      >>> back = gaussplug.load(path)
      >>> back.layer_names == flow.layer_names, bool(np.array_equal(back.log_prob(np.ones((3, 2))),
      ...                                                           flow.log_prob(np.ones((3, 2)))))
      (True, True)
    """
    registry = registry if registry is not None else get_registry()
    path = os.fspath(_require_path(path, "load"))
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
    import jax.numpy as jnp

    if default_dtype() != np.float64 and any(a.dtype == np.float64 for a in stored.values()):
        refuse_beyond_float32(path, ((f"layer {e['layer']!r}, param {e['module']}/{e['name']}", stored[e["key"]])
                                     for e in header["params"]))  # finite in float64 (checked), inf after rounding
        warn_float64_rounded(path, "saved model")
    params = {
        name: {m: {k: jnp.asarray(v) for k, v in d.items()} for m, d in mods.items()} for name, mods in params.items()
    }
    return Flow(plan, params, registry=registry, metadata=header.get("metadata"))  # _check_shapes checked them


#: Largest array member a model file may hold once decompressed (a zip bomb is refused before it is inflated).
MAX_MEMBER_BYTES = 2**31


def _read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checked JSON header and the arrays it lists (others are never decompressed), read eagerly."""
    kind = special_file_kind(path)
    if kind is not None:
        raise GaussplugError(f"{path!r} is not a gaussplug model file: it is {kind}. Pass the model.npz that "
                             "gaussplug fit or gaussplug.save wrote.")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise GaussplugError(f"{path!r} cannot be read as a gaussplug model file: {_reason(err)}") from err
    if not magic.startswith((b"PK", b"\x93NUMPY")):  # neither .npz (a zip) nor .npy: not numpy's pickle advice
        text = bool(magic) and all(32 <= b < 127 or b in (9, 10, 13) for b in magic)
        raise GaussplugError(
            f"{path!r} is not a gaussplug model file: it is not an .npz archive (it starts like "
            f"{'a text file, e.g. a CSV' if text else 'an empty file' if not magic else 'some other binary file'}). "
            "Pass the model.npz that gaussplug fit or gaussplug.save wrote."
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except zipfile.BadZipFile as err:  # it starts like a zip, but its directory (at the end) is missing
        raise _damaged(path, f"the archive is incomplete, truncated perhaps (a copy or a save cut short; "
                             f"{_reason(err)}).") from err
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
            header = _header(path, np.array(archive[_HEADER]))
            listed = {e["key"] for e in header["params"]}  # _header checked that every entry names its key
            stored = {}
            for key in sorted(listed & set(archive.files)):
                size = archive.zip.getinfo(f"{key}.npy").file_size
                if size > MAX_MEMBER_BYTES:
                    raise _damaged(path, f"array {key!r} would inflate to {size:,} bytes, more than a model's "
                                         f"array holds here ({MAX_MEMBER_BYTES:,}).")
                stored[key] = np.array(archive[key])
        except GaussplugError:
            raise
        except Exception as err:  # BadZipFile (bad CRC), zlib errors, truncated members, pickled arrays
            raise _damaged(path, f"an array cannot be read ({_reason(err)}).") from err
    return header, stored
