"""Spec dicts (or JSON/YAML files) -> a checked, flattened layer plan.

A spec looks like::

    {"dim": 2,
     "layers": [{"repeat": 8, "layers": [{"family": "householder", "reflectors": 2},
                                         {"family": "mixture_cdf", "components": 8}]}]}

Layers are listed in data-to-latent order: the first entry acts on the data
first (like flowjax's Chain, unlike distrax's). ``repeat`` groups nest. Every
problem is reported once, on the way in, as a :class:`gaussplug.SpecError`
naming the layer path (``layers[0].layers[1]``), the bad key and the choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Mapping
from typing import Any

from gaussplug._errors import GaussplugError, PluginError, SpecError
from gaussplug._family import Family
from gaussplug._json import to_json
from gaussplug._plugin_hooks import unknown_family_message
from gaussplug._registry import Registry

__all__ = ["Layer", "Plan", "load_spec", "make_plan"]

#: Largest 'dim' a spec may give (XLA indexes an array's axes with int32 on the CPU).
MAX_DIM = 2**31 - 1
_TOP_KEYS = {"dim": "a positive integer", "layers": "a list of layers and repeat groups"}
_OPTIONAL_TOP_KEYS = {"name": "a string", "meta": "a mapping of your own notes"}
_GROUP_KEYS = ("repeat", "layers")
#: Most layers a spec may expand to (``repeat`` counts multiply when groups nest): far beyond any useful
#: flow, and a typo such as ``repeat: 100000000`` is refused at once instead of filling the memory.
MAX_LAYERS = 10_000
#: Most levels of nested repeat groups (a deeper spec is refused, not a RecursionError).
MAX_DEPTH = 64


@dataclasses.dataclass(frozen=True)
class Layer:
    """One resolved layer: name, family, full options and where it came from."""

    name: str
    family: str
    options_json: str
    path: str

    @property
    def options(self) -> dict[str, Any]:
        """The layer's options, defaults filled in (a fresh dict)."""
        return json.loads(self.options_json)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The flattened, checked form of a spec (hashable, so jit can key on it)."""

    dim: int
    layers: tuple[Layer, ...]
    spec_json: str

    @property
    def spec(self) -> dict[str, Any]:
        """The spec as given (a fresh dict)."""
        return json.loads(self.spec_json)


#: Most values a YAML spec may expand to once its aliases are resolved (a "billion laughs" file is refused).
MAX_YAML_NODES = 1_000_000


def _expanded_size(node, memo: dict) -> int:
    """How many values the YAML node ``node`` stands for with every alias expanded (each node's size memoised)."""
    import yaml

    key = id(node)
    if key not in memo:
        memo[key] = 1  # (a node that contains itself counts once; the JSON copy refuses it later)
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    return memo[key]


def _yaml_load(text: str):
    """``yaml.safe_load``, except that exponent floats (``1e-2``, ``1.0e3``, ``.5e2``) are numbers, as in JSON.

    PyYAML follows YAML 1.1, which reads a float without a dot or with an unsigned exponent
    (``tail_weight: 1e-2``, ``1.0e3``) as a string.
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            """The mapping, or an error naming a key given twice (PyYAML would keep the last silently)."""
            first = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' may be overridden, by design
                    continue
                key = self.construct_object(key_node, deep=deep)
                mark = key_node.start_mark
                try:
                    line, column = first.setdefault(key, (mark.line, mark.column))
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                if (line, column) != (mark.line, mark.column):  # also on one line: {a: 1, a: 2}
                    where = f"line {line + 1}" + (f", column {column + 1}" if line == mark.line else "")
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on {where}; YAML would keep only "
                        "the last value): remove one", mark)
            return super().construct_mapping(node, deep)

        def construct_document(self, node):
            """The document, unless its aliases expand it beyond ``MAX_YAML_NODES`` values (an alias bomb)."""
            size = _expanded_size(node, {})
            if size > MAX_YAML_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"its aliases (*name) expand it to {size:,} values; at most {MAX_YAML_NODES:,} are "
                    "read (write the values out, or use 'repeat' groups)", node.start_mark)
            return super().construct_document(node)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def _no_duplicate_keys(pairs):
    """``json.loads``'s ``object_pairs_hook``: a dict, or ValueError naming a key given twice."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in one object (JSON would keep only the last value): remove one")
        out[key] = value
    return out


def load_spec(spec: Any) -> dict[str, Any]:
    """Return a spec dict from a dict or a ``.json`` / ``.yaml`` / ``.yml`` path."""
    if isinstance(spec, Mapping):
        return _jsonable(dict(spec), "spec")
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".json", ".yaml", ".yml"):
            text = isinstance(spec, str) and spec.lstrip()[:1] in ("{", "[")
            hint = (" A string is taken as a file path; for JSON text, pass json.loads(text) (a dict) instead."
                    if text else "")  # fmt: skip
            raise SpecError(f"spec file {path[:200]!r}: expected a .json, .yaml or .yml file; got extension "
                            f"{ext[:40]!r}.{hint}")  # fmt: skip
        if not os.path.exists(path):
            raise SpecError(f"spec file {path!r} does not exist.")
        try:
            with open(path, encoding="utf-8-sig") as fh:  # (-sig: a leading byte-order mark is skipped)
                text = fh.read()
        except UnicodeDecodeError as err:
            raise SpecError(
                f"spec file {path!r} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8."
            ) from err
        except OSError as err:
            raise SpecError(f"spec file {path!r} could not be read: {err.strerror or err}.") from err
        if not text.strip():
            raise SpecError(f"spec file {path!r} is empty; expected a mapping with 'dim' and 'layers'.")
        try:
            if ext == ".json":
                loaded = json.loads(text, object_pairs_hook=_no_duplicate_keys)
            else:
                loaded = _yaml_load(text)
        except Exception as err:
            detail = str(err).replace('"<unicode string>"', repr(path))  # PyYAML's name for a parsed string
            raise SpecError(f"spec file {path!r} could not be parsed: {detail}") from err
        if not isinstance(loaded, Mapping):
            raise SpecError(f"spec file {path!r}: expected a mapping at the top; got {type(loaded).__name__}.")
        return _jsonable(dict(loaded), "spec")
    raise SpecError(f"Expected a spec dict or a path to a .json/.yaml file; got {type(spec).__name__}.")


def _jsonable(value: Any, where: str) -> Any:
    """Deep-copy to plain JSON types (tuples become lists), or raise :class:`SpecError`."""
    return to_json(value, where, SpecError)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_option_message(key: Any, family: Family) -> str:
    """``"unknown option 'k'. Did you mean ...? Family 'f' accepts: ..."`` (shared by specs and the test kit)."""
    accepted = ", ".join(f"{k}={v!r}" for k, v in family.options.items()) or "no options"
    hint = _suggest(key, family.options) if isinstance(key, str) else ""
    return f"unknown option {key!r}.{hint} Family {family.name!r} accepts: {accepted}."


def make_plan(spec: Any, registry: Registry) -> Plan:
    """Check ``spec`` against the registry and flatten it into a :class:`Plan`."""
    spec = load_spec(spec)
    for key in spec:
        if key not in _TOP_KEYS and key not in _OPTIONAL_TOP_KEYS:
            accepted = ", ".join(f"{k!r} ({d})" for k, d in {**_TOP_KEYS, **_OPTIONAL_TOP_KEYS}.items())
            raise SpecError(f"spec: unknown top-level key {key!r}.{_suggest(key, _TOP_KEYS)} Accepted: {accepted}.")
    for key, desc in _TOP_KEYS.items():
        if key not in spec:
            raise SpecError(f"spec: missing required key {key!r} ({desc}).")
    dim = spec["dim"]
    if not _is_int(dim) or dim < 1:
        raise SpecError(f"spec: 'dim' must be a positive integer; got {dim!r}.")
    if dim > MAX_DIM:
        shown = f"{dim:,}" if dim < 10**30 else f"a {len(str(dim))}-digit number"
        raise SpecError(f"spec: 'dim' must be at most {MAX_DIM:,} (arrays are indexed with int32); got {shown}.")
    _check_optional_top_keys(spec)
    entries: list[tuple[str, dict[str, Any]]] = []
    _walk(spec["layers"], "layers", entries)
    if not entries:
        raise SpecError("spec: 'layers' is empty; a flow needs at least one layer.")
    families = registry.families()
    occurrences: dict[str, int] = {}
    layers = []
    for index, (path, entry) in enumerate(entries):
        name = entry["family"]
        if not isinstance(name, str) or name not in families:
            raise SpecError(unknown_family_message(name, families, where=f"{path}: ") + registry.skipped_hint())
        family = families[name].family
        options = {k: v for k, v in entry.items() if k != "family"}
        for key in options:
            if key not in family.options:
                raise SpecError(f"{path} ({name}): {unknown_option_message(key, family)}")
        if dim < family.min_dim:
            raise SpecError(f"{path} ({name}): family {name!r} needs dim >= {family.min_dim}; the spec has dim {dim}.")
        full = {**_jsonable(dict(family.options), f"{name} defaults"), **options}
        occurrence = occurrences.get(name, 0)
        occurrences[name] = occurrence + 1
        if family.resolve is not None:
            full = _resolved(families[name], full, occurrence, path)
        if family.validate is not None:
            _run_hook(families[name], "validate", path, dim, dict(full))
        layers.append(Layer(f"{index}_{name}", name, json.dumps(full, sort_keys=True), path))
    return Plan(dim=dim, layers=tuple(layers), spec_json=json.dumps(spec, sort_keys=True))


def _run_hook(info, hook: str, path: str, *args):
    """Calls the family's ``hook`` (``validate`` or ``resolve``) and returns its result.

    A ``ValueError``/``TypeError`` means bad option values: a :class:`SpecError` naming the layer's
    path. gaussplug's own errors pass through; anything else is a plugin fault, a :class:`PluginError`.
    """
    try:
        return getattr(info.family, hook)(*args)
    except (ValueError, TypeError) as err:
        raise SpecError(f"{path} ({info.name}): {err}") from err
    except GaussplugError:
        raise
    except Exception as err:
        raise PluginError(
            f"{path} ({info.name}): {hook} of family {info.name!r} (plugin {info.plugin!r}) raised "
            f"{type(err).__name__}: {err}"
        ) from err


def _resolved(info, options: dict[str, Any], occurrence: int, path: str) -> dict[str, Any]:
    """The family's ``resolve`` applied to a layer's options; plugin faults become :class:`PluginError`."""
    out = _run_hook(info, "resolve", path, dict(options), occurrence)
    if not isinstance(out, Mapping):
        raise PluginError(
            f"{path} ({info.name}): resolve of family {info.name!r} (plugin {info.plugin!r}) returned "
            f"{type(out).__name__} {out!r:.60}; expected the layer's options mapping."
        )
    try:
        return to_json(dict(out), f"{path} ({info.name}) options after resolve", ValueError)
    except ValueError as err:
        raise PluginError(f"{err} (resolve of family {info.name!r}, plugin {info.plugin!r})") from None


def _check_optional_top_keys(spec: dict[str, Any]) -> None:
    """``name`` must be a string and ``meta`` a mapping, as documented."""
    if "name" in spec and not isinstance(spec["name"], str):
        raise SpecError(f"spec: 'name' must be a string; got {type(spec['name']).__name__} {spec['name']!r}.")
    if "meta" in spec and not isinstance(spec["meta"], Mapping):
        raise SpecError(
            f"spec: 'meta' must be a mapping of your own notes; got {type(spec['meta']).__name__} {spec['meta']!r}."
        )


def _walk(items: Any, path: str, out: list, depth: int = 0) -> None:
    if not isinstance(items, list):
        raise SpecError(f"{path}: expected a list of layers; got {type(items).__name__} {_short(items)}.")
    if depth > MAX_DEPTH:
        raise SpecError(f"{path}: repeat groups nested {depth} deep; at most {MAX_DEPTH} levels are supported.")
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise SpecError(
                f"{here}: expected a layer {{'family': ..., options}} or a group "
                f"{{'repeat': n, 'layers': [...]}}; got {type(item).__name__} {item!r}."
            )
        if "family" in item:
            if "layers" in item or "repeat" in item:
                raise SpecError(
                    f"{here}: an entry is either a layer (with 'family') or a group (with 'repeat' and "
                    f"'layers'), not both; got keys {sorted(item)}."
                )
            if len(out) >= MAX_LAYERS:
                raise SpecError(f"{here}: the spec has more than {MAX_LAYERS:,} layers here; at most "
                                f"{MAX_LAYERS:,} are supported.")
            out.append((here, item))
            continue
        if "layers" not in item:
            raise SpecError(_missing_layers_message(here, item))
        extra = [k for k in item if k not in _GROUP_KEYS]
        if extra:
            raise SpecError(
                f"{here}: unknown key {extra[0]!r} in a repeat group.{_suggest(extra[0], _GROUP_KEYS)} "
                "A group accepts 'repeat' (a positive integer, default 1) and 'layers'."
            )
        repeat = item.get("repeat", 1)
        if not _is_int(repeat) or repeat < 1:
            raise SpecError(f"{here}: 'repeat' must be a positive integer; got {repeat!r}.")
        if item["layers"] == []:
            raise SpecError(f"{here}.layers: a repeat group needs at least one layer; got an empty list.")
        inner: list = []
        _walk(item["layers"], f"{here}.layers", inner, depth + 1)
        total = len(out) + repeat * len(inner)
        if total > MAX_LAYERS:
            raise SpecError(
                f"{here}: the spec expands to at least {total:,} layers here ('repeat': {repeat:,} times "
                f"{len(inner):,} layer{'s' if len(inner) != 1 else ''}); at most {MAX_LAYERS:,} are supported."
            )
        out.extend(inner * repeat)


def _short(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters for a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _missing_layers_message(here: str, item: dict[str, Any]) -> str:
    """Why an entry with neither 'family' nor 'layers' is wrong."""
    if "repeat" in item:
        return (
            f"{here}: a repeat group needs a 'layers' list, e.g. {{'repeat': {item['repeat']!r}, "
            f"'layers': [{{'family': ...}}]}}; got keys {sorted(item)}."
        )
    hint = _suggest(next(iter(item), ""), ("family", "layers", "repeat"))
    return (
        f"{here}: expected a 'family' key (a layer) or a 'layers' key (a repeat group); got keys {sorted(item)}.{hint}"
    )
