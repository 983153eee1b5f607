import importlib.metadata
import types
import warnings

import distrax
import haiku as hk
import jax.numpy as jnp
import pytest

import gaussplug
from gaussplug import Family, PluginError, hookimpl

BUILTINS = {"householder", "rotation", "mixture_cdf", "mixture_cdf_coupling", "standardize"}


def make_shift(dim):
    b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
    return distrax.Block(distrax.ScalarAffine(shift=-b), 1)


def shift_plugin(name="shift"):
    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family(name, make_shift, options={}, doc="A learned shift."))

    return Plugin()


def test_builtins_registered_with_info(fresh_registry):
    fams = gaussplug.families()
    assert BUILTINS <= set(fams)
    info = fams["householder"]
    assert info.plugin == "householder" and info.version == gaussplug.__version__
    assert info.options == {"reflectors": None, "method": "pca"}
    assert info.doc


def test_builtins_come_through_entry_points():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="gaussplug")}
    for name in BUILTINS:
        assert eps[name] == f"gaussplug_plugins.{name}"
    registry = gaussplug.Registry(default_plugins=())  # entry points only
    assert BUILTINS <= set(registry.families())


def test_runtime_registration_and_use(fresh_registry):
    name = gaussplug.register(shift_plugin(), name="shift-plugin")
    assert name == "shift-plugin"
    fams = gaussplug.families()
    assert fams["shift"].plugin == "shift-plugin"
    flow = gaussplug.build_flow({"dim": 3, "layers": [{"family": "shift"}]})
    assert list(flow.params) == ["0_shift"] and list(flow.params["0_shift"]["~"]) == ["shift"]
    assert flow.forward(jnp.ones((4, 3))).shape == (4, 3)
    assert {p["name"] for p in gaussplug.list_plugins()} >= {"shift-plugin", "householder"}
    gaussplug.unregister("shift-plugin")
    assert "shift" not in gaussplug.families()


def test_duplicate_family_names_both_plugins(fresh_registry):
    gaussplug.register(shift_plugin("householder"), name="impostor")
    with pytest.raises(PluginError, match=r"Family 'householder' is registered by two plugins: '.*' and '.*'") as e:
        gaussplug.families()
    assert "impostor" in str(e.value) and "'householder'" in str(e.value)


def test_register_rejects_non_family(fresh_registry):
    class Bad:
        @hookimpl
        def gaussplug_register_families(self, register):
            register("not a family")

    gaussplug.register(Bad(), name="bad")
    with pytest.raises(PluginError, match=r"Plugin 'bad' passed str to register\(\); expected a gaussplug.Family"):
        gaussplug.families()


def test_misspelled_hook_rejected(fresh_registry):
    class Typo:
        @hookimpl
        def gaussplug_register_familes(self, register):
            pass

    with pytest.raises(PluginError, match="unknown hook"):
        gaussplug.register(Typo(), name="typo")


def test_plugin_raising_during_registration_is_skipped_with_warning(fresh_registry):
    class Raises:
        @hookimpl
        def gaussplug_register_families(self, register):
            raise RuntimeError("boom")

    gaussplug.register(Raises(), name="raises")
    with pytest.warns(
        gaussplug.GaussplugPluginWarning, match="'raises' raised while registering families: RuntimeError: boom"
    ):
        fams = gaussplug.families()
    assert BUILTINS <= set(fams)


class _FakeEP:
    def __init__(self, name, value, loader):
        self.name, self.value, self._loader = name, value, loader
        self.dist = types.SimpleNamespace(metadata={"Name": f"dist-{name}"}, version="9.9")

    def load(self):
        return self._loader()


def _fake_entry_points(monkeypatch, eps):
    real = importlib.metadata.entry_points

    def fake(**kw):
        if kw.get("group") == "gaussplug":
            return list(eps)
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)


def test_broken_entry_point_warns_and_others_load(monkeypatch):
    def broken():
        raise ImportError("no module named 'nonexistent_dep'")

    good = types.ModuleType("good_plugin")
    plugin = shift_plugin("good_shift")
    good.gaussplug_register_families = plugin.gaussplug_register_families
    _fake_entry_points(
        monkeypatch, [_FakeEP("broken", "broken_pkg", broken), _FakeEP("good", "good_plugin", lambda: good)]
    )
    monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    registry = gaussplug.Registry()
    with pytest.warns(gaussplug.GaussplugPluginWarning, match=r"plugin 'broken' .*failed to import: ImportError"):
        fams = registry.families()
    assert "good_shift" in fams and BUILTINS <= set(fams)
    assert fams["good_shift"].version == "9.9"


def test_allow_list_env(monkeypatch):
    good = types.ModuleType("good_plugin")
    good.gaussplug_register_families = shift_plugin("good_shift").gaussplug_register_families
    _fake_entry_points(monkeypatch, [_FakeEP("good", "good_plugin", lambda: good)])
    monkeypatch.setenv("GAUSSPLUG_LOAD_PLUGINS", "")
    assert "good_shift" not in gaussplug.Registry().families()
    monkeypatch.setenv("GAUSSPLUG_LOAD_PLUGINS", "good")
    assert "good_shift" in gaussplug.Registry().families()


def test_broken_builtin_import_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = gaussplug.Registry(load_entry_points=False, default_plugins=("gaussplug_plugins.nope",))
        assert registry.families() == {}
    assert any("gaussplug_plugins.nope" in str(w.message) for w in caught)


def test_family_validation():
    with pytest.raises(ValueError, match="identifier"):
        Family("bad name", make_shift)
    with pytest.raises(TypeError, match="make_bijector must be callable"):
        Family("ok", 3)
