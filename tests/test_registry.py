import importlib.metadata
import types
import warnings

import distrax
import haiku as hk
import jax.numpy as jnp
import numpy as np
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


def test_replacing_a_builtin_family(fresh_registry, tmp_path):
    spec = {"dim": 2, "layers": [{"family": "standardize"}]}
    old = gaussplug.build_flow(spec)
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    before = np.asarray(old.log_prob(x))
    gaussplug.unregister("standardize")
    assert "standardize" not in gaussplug.families()
    np.testing.assert_array_equal(np.asarray(old.log_prob(x)), before)  # a built flow keeps its layers
    with pytest.raises(gaussplug.SpecError, match="unknown family 'standardize'"):
        gaussplug.build_flow(spec)
    gaussplug.register(shift_plugin("standardize"), name="my-standardize")
    mine = gaussplug.build_flow(spec)
    assert gaussplug.families()["standardize"].plugin == "my-standardize"
    assert list(mine.params["0_standardize"]["~"]) == ["shift"]
    # The old flow never switches to the new family of the same name, and saves as what it is.
    np.testing.assert_array_equal(np.asarray(old.log_prob(x)), before)
    assert old.runtime.layers[0].plugin == "standardize" and mine.runtime.layers[0].plugin == "my-standardize"
    gaussplug.save(old, tmp_path / "old.npz")
    with pytest.raises(PluginError, match=rf"layer '0_standardize' \(family 'standardize'\) was saved with plugin "
                       rf"'standardize' {gaussplug.__version__}; plugin 'my-standardize' \(version unknown\) is "
                       r"installed now and its params differ: expected ~/shift \(2,\); the file has ~/log_scale "
                       r"\(2,\), ~/shift \(2,\)\.$"):  # fmt: skip
        gaussplug.load(tmp_path / "old.npz")  # its params do not fit the new family: refused, not misread


def test_registering_an_unrelated_plugin_keeps_existing_flows_compiled(fresh_registry):
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}]})
    runtime = flow.runtime
    gaussplug.register(shift_plugin(), name="shift-plugin")
    assert flow.runtime is runtime and flow.replace(params=flow.params).runtime is runtime
    again = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}]})
    assert again.runtime.layers[0].family is runtime.layers[0].family


def test_clash_with_installed_family_is_rejected_at_register_and_rolled_back(fresh_registry):
    with pytest.raises(
        PluginError,
        match=r"Plugin 'impostor' was not registered: Family 'householder' is registered by two plugins: "
        r"plugin 'impostor' registers it and plugin 'householder' \(distribution 'gaussplug'\) already provides it\. "
        r"To replace plugin 'householder' with this one in this process, call gaussplug\.unregister\('householder'\) "
        r"first; or rename the family\.",
    ):
        gaussplug.register(shift_plugin("householder"), name="impostor")
    # Rolled back: nothing is broken and the name is free again.
    assert "impostor" not in {p["name"] for p in gaussplug.list_plugins()}
    assert gaussplug.families()["householder"].plugin == "householder"
    assert gaussplug.build_flow({"dim": 2, "layers": [{"family": "mixture_cdf"}]}).layer_names == ("0_mixture_cdf",)
    assert gaussplug.register(shift_plugin("fine"), name="impostor") == "impostor"
    assert gaussplug.families()["fine"].plugin == "impostor"


def test_clash_between_two_run_time_plugins_names_both(fresh_registry):
    gaussplug.register(shift_plugin("shift"), name="first")
    with pytest.raises(PluginError, match=r"plugin 'second' registers it and plugin 'first' already provides it"):
        gaussplug.register(shift_plugin("shift"), name="second")
    assert gaussplug.families()["shift"].plugin == "first"


def test_register_rejects_non_family_and_rolls_back(fresh_registry):
    class Bad:
        @hookimpl
        def gaussplug_register_families(self, register):
            register("not a family")

    with pytest.raises(
        PluginError, match=r"Plugin 'bad' passed str 'not a family' to register\(\); expected a gaussplug.Family"
    ):
        gaussplug.register(Bad(), name="bad")
    assert "bad" not in {p["name"] for p in gaussplug.list_plugins()}
    assert BUILTINS <= set(gaussplug.families())


def test_plugin_registering_a_family_twice_says_so(fresh_registry):
    class Dup:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("twice", make_shift))
            register(Family("twice", make_shift))

    with pytest.raises(PluginError, match=r"Plugin 'dup' registers family 'twice' twice") as e:
        gaussplug.register(Dup(), name="dup")
    assert "two plugins" not in str(e.value)
    assert "twice" not in gaussplug.families()


def test_hook_returning_families_instead_of_registering(fresh_registry):
    class Returns:
        @hookimpl
        def gaussplug_register_families(self, register):
            return [Family("returned", make_shift)]

    with pytest.raises(
        PluginError, match=r"Plugin 'returns': gaussplug_register_families returned list; expected None"
    ):
        gaussplug.register(Returns(), name="returns")


def test_misspelled_hook_rejected(fresh_registry):
    class Typo:
        @hookimpl
        def gaussplug_register_familes(self, register):
            pass

    with pytest.raises(PluginError, match=r"unknown hook 'gaussplug_register_familes' in plugin .*>\. The only "
                       r"hook is"):  # fmt: skip
        gaussplug.register(Typo(), name="typo")
    assert "typo" not in {p["name"] for p in gaussplug.list_plugins()}


def test_a_plugin_without_a_hook_is_rejected(fresh_registry):
    class NoHook:
        def gaussplug_register_families(self, register):  # not decorated with hookimpl
            pass

    with pytest.raises(PluginError, match=r"Plugin 'nohook' was not registered: it has no hook: expected a "
                       r"gaussplug_register_families\(register\) function or method decorated with"):
        gaussplug.register(NoHook(), name="nohook")
    assert "nohook" not in {p["name"] for p in gaussplug.list_plugins()}


def test_a_family_given_in_place_of_its_plugin_is_named_as_such(fresh_registry, monkeypatch):
    family = Family("lonely", make_shift)
    with pytest.raises(PluginError, match=r"Plugin 'lonely' was not registered: it is the gaussplug\.Family 'lonely' "
                       r"itself, not a plugin: point the entry point \(or gaussplug\.register\) at the module"):
        gaussplug.register(family, name="lonely")
    # The same mistake in an entry point (``name = "pkg.mod:FAMILY"``): a warning that says so.
    _fake_entry_points(monkeypatch, [_FakeEP("objep", "pkg.mod:FAMILY", lambda: family)])
    monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    with pytest.warns(gaussplug.GaussplugPluginWarning, match=r"plugin 'objep' \(entry point 'pkg\.mod:FAMILY', "
                      r"distribution 'dist-objep'\) was not loaded: it is the gaussplug\.Family 'lonely' itself"):
        assert "lonely" not in gaussplug.Registry().families()


@pytest.mark.parametrize("name", ["", "  ", 5, b"x"])
def test_register_name_must_be_a_non_empty_string(fresh_registry, name):
    with pytest.raises(PluginError, match=rf"name: expected a non-empty string or None; got {type(name).__name__} "):
        gaussplug.register(shift_plugin(), name=name)
    assert "shift" not in gaussplug.families()


def test_wrong_hook_signature_is_plugin_error(fresh_registry):
    class BadSig:
        @hookimpl
        def gaussplug_register_families(self, register, extra):
            pass

    with pytest.raises(
        PluginError,
        match=r"Plugin 'badsig': its hook has the wrong signature\. Expected gaussplug_register_families\(register\)",
    ):
        gaussplug.register(BadSig(), name="badsig")
    assert "badsig" not in {p["name"] for p in gaussplug.list_plugins()}


def test_same_object_under_a_second_name(fresh_registry):
    plugin = shift_plugin()
    gaussplug.register(plugin, name="o1")
    with pytest.raises(PluginError, match=r"Plugin 'o2': this object is already registered as 'o1'\.$"):
        gaussplug.register(plugin, name="o2")
    with pytest.raises(PluginError, match=r"A plugin named 'o1' is already registered\. To replace it \(re-running "
                       r"a notebook cell, say\), call gaussplug\.unregister\('o1'\) first"):
        gaussplug.register(shift_plugin("other"), name="o1")


def test_re_registering_a_run_time_family_says_how_to_replace_it(fresh_registry):
    # A notebook cell re-run under another name: the advice is unregister, not "uninstall".
    gaussplug.register(shift_plugin("shift_nb"), name="first")
    with pytest.raises(PluginError, match=r"plugin 'second' registers it and plugin 'first' already provides it\. To "
                       r"replace run-time plugin 'first' \(re-running a notebook cell, say\), call "
                       r"gaussplug\.unregister\('first'\) first; or rename the family\.$"):  # fmt: skip
        gaussplug.register(shift_plugin("shift_nb"), name="second")
    gaussplug.unregister("first")
    gaussplug.register(shift_plugin("shift_nb"), name="second")  # as the message says
    assert gaussplug.families()["shift_nb"].plugin == "second"


def test_unregister_unknown_plugin(fresh_registry):
    with pytest.raises(
        PluginError,
        match=r"Cannot unregister object: no such plugin is registered\. "
        r"Registered plugins: householder, ",
    ):
        gaussplug.unregister(object())
    with pytest.raises(PluginError, match=r"Cannot unregister 'nope': no such plugin"):
        gaussplug.unregister("nope")
    plugin = shift_plugin()
    gaussplug.register(plugin, name="by-object")
    gaussplug.unregister(plugin)
    assert "shift" not in gaussplug.families()


def test_unhashable_plugin_rejected(fresh_registry):
    ns = types.SimpleNamespace(gaussplug_register_families=hookimpl(lambda register: None))
    with pytest.raises(PluginError, match=r"Plugin 'ns': expected a hashable plugin.*unhashable SimpleNamespace"):
        gaussplug.register(ns, name="ns")
    assert "ns" not in {p["name"] for p in gaussplug.list_plugins()}


def test_plugin_raising_during_registration_is_rejected(fresh_registry):
    class Raises:
        @hookimpl
        def gaussplug_register_families(self, register):
            raise RuntimeError("boom")

    with pytest.raises(PluginError, match="'raises' raised while registering families: RuntimeError: boom") as e:
        gaussplug.register(Raises(), name="raises")
    assert isinstance(e.value.__cause__.__cause__, RuntimeError)
    assert "raises" not in {p["name"] for p in gaussplug.list_plugins()}


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
        raise ImportError("no module named 'nonexistent_dep'.")  # a message ending in a full stop: not doubled

    good = types.ModuleType("good_plugin")
    plugin = shift_plugin("good_shift")
    good.gaussplug_register_families = plugin.gaussplug_register_families
    _fake_entry_points(
        monkeypatch, [_FakeEP("broken", "broken_pkg", broken), _FakeEP("good", "good_plugin", lambda: good)]
    )
    monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    registry = gaussplug.Registry()
    with pytest.warns(gaussplug.GaussplugPluginWarning, match=r"plugin 'broken' .*failed to import: ImportError: no "
                      r"module named 'nonexistent_dep'\. The other plugins are still loaded\.$"):
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


def _module_plugin(name, hook):
    module = types.ModuleType(name)
    module.gaussplug_register_families = hook if hasattr(hook, "gaussplug_impl") else hookimpl(hook)
    return module


@pytest.mark.parametrize(
    "hook, pattern",
    [
        (lambda register: register("x"), r"'broken' \(entry point 'broken_plugin', distribution 'dist-broken'\) "
                                          r"passed str 'x' to register\(\).*Its families are skipped"),  # fmt: skip
        (lambda register: 1 / 0, r"^Plugin 'broken' \(entry point 'broken_plugin', distribution 'dist-broken'\) "
                                 r"raised while registering families: ZeroDivisionError"),  # fmt: skip
        (
            lambda register: [register(Family("twice", make_shift)) for _ in range(2)],
            r"'broken' \(entry point 'broken_plugin', distribution 'dist-broken'\) registers family 'twice' twice",
        ),
    ],
    ids=["non-family", "raises", "twice"],
)
def test_broken_entry_point_hook_warns_and_others_load(monkeypatch, hook, pattern):
    good = _module_plugin("good_plugin", shift_plugin("good_shift").gaussplug_register_families)
    broken = _module_plugin("broken_plugin", hook)
    _fake_entry_points(
        monkeypatch, [_FakeEP("broken", "broken_plugin", lambda: broken), _FakeEP("good", "good_plugin", lambda: good)]
    )
    monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    with pytest.warns(gaussplug.GaussplugPluginWarning, match=pattern):
        fams = gaussplug.Registry().families()
    assert "good_shift" in fams and BUILTINS <= set(fams) and "twice" not in fams


def test_installed_plugins_clashing_raise_naming_both(monkeypatch):
    impostor = _module_plugin("impostor_plugin", shift_plugin("householder").gaussplug_register_families)
    _fake_entry_points(monkeypatch, [_FakeEP("impostor", "impostor_plugin", lambda: impostor)])
    monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    with pytest.raises(PluginError, match=r"plugin 'impostor' \(distribution 'dist-impostor'\) registers it and "
                       r"plugin 'householder' \(distribution 'gaussplug'\) already provides"):  # fmt: skip
        gaussplug.Registry().families()


def test_two_installed_plugins_clashing_name_both_distributions(monkeypatch):
    first, second = (_module_plugin(f"{n}_plugin", shift_plugin("same").gaussplug_register_families)
                     for n in ("first", "second"))  # fmt: skip
    eps = [_FakeEP("first", "first_plugin", lambda: first), _FakeEP("second", "second_plugin", lambda: second)]
    _fake_entry_points(monkeypatch, eps)
    monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    registry = gaussplug.Registry()
    with pytest.raises(PluginError, match=r"Family 'same' is registered by two plugins: plugin 'second' \(distribution "
                       r"'dist-second'\) registers it and plugin 'first' \(distribution 'dist-first'\) already "
                       r"provides it\.") as info:  # fmt: skip
        registry.families()
    families, clashes = registry.families_despite_clashes()  # what `gaussplug plugins` shows
    assert families["same"].plugin == "first" and BUILTINS <= set(families)
    assert [str(c) for c in clashes] == [str(info.value)]


def test_two_distributions_declaring_one_entry_point_name_say_which_loaded(monkeypatch):
    first = _module_plugin("first_mod", shift_plugin("from_first").gaussplug_register_families)
    second = _module_plugin("second_mod", shift_plugin("from_second").gaussplug_register_families)
    eps = [_FakeEP("x", "first_mod", lambda: first), _FakeEP("x", "second_mod", lambda: second)]
    eps[0].dist.metadata, eps[1].dist.metadata = {"Name": "dist-one"}, {"Name": "dist-two"}
    _, fams, caught = _load_with(monkeypatch, eps)
    assert "from_first" in fams and "from_second" not in fams
    (message,) = [str(w.message) for w in caught if issubclass(w.category, gaussplug.GaussplugPluginWarning)]
    assert message == (
        "gaussplug plugin 'x' (entry point 'second_mod', distribution 'dist-two') was not loaded: distributions "
        "'dist-two' and 'dist-one' both declare entry point 'x' in group 'gaussplug', and plugin names must be "
        "unique; the one from 'dist-one' was loaded. Uninstall one of the two distributions."
    )
    assert "pass another name=" not in message


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


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"min_dim": "2"}, TypeError, r"Family 'ok': min_dim must be a positive integer; got str '2'"),
        ({"min_dim": True}, TypeError, r"min_dim must be a positive integer; got bool True"),
        ({"min_dim": 0}, ValueError, r"min_dim must be a positive integer; got 0"),
        ({"options": ["a"]}, TypeError, r"Family 'ok': options must be a mapping .*; got list \['a'\]"),
        ({"options": {"dim": 2}}, ValueError, r"option names must be strings other than .*; got 'dim'"),
        ({"options": {1: 2}}, ValueError, r"option names must be strings .*; got 1"),
        ({"doc": 3}, TypeError, r"Family 'ok': doc must be a string; got int"),
        ({"fit": 3}, TypeError, r"Family 'ok': fit must be callable or None; got int"),
        ({"validate": "x"}, TypeError, r"Family 'ok': validate must be callable or None; got str"),
        ({"frozen": 1}, TypeError, r"frozen must be callable or None"),
        ({"resolve": 1}, TypeError, r"resolve must be callable or None"),
    ],
)
def test_family_fields_checked_at_construction(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Family("ok", make_shift, **kwargs)


def test_family_accepts_numpy_min_dim_and_none_options():
    fam = Family("ok", make_shift, min_dim=np.int64(2), options=None, doc=None)
    assert fam.min_dim == 2 and type(fam.min_dim) is int and fam.options == {} and fam.doc == ""


def _load_with(monkeypatch, eps, allow=None):
    """A fresh registry's families with fake entry points ``eps``; warnings recorded."""
    _fake_entry_points(monkeypatch, eps)
    if allow is None:
        monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("GAUSSPLUG_LOAD_PLUGINS", allow)
    registry = gaussplug.Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fams = registry.families()
    return registry, fams, caught


def test_entry_point_plugin_without_hookimpl_warns_and_is_not_loaded(monkeypatch):
    bare = types.ModuleType("bare_plugin")
    bare.gaussplug_register_families = lambda register: register(Family("bare", make_shift))  # no @hookimpl
    registry, fams, caught = _load_with(monkeypatch, [_FakeEP("bare", "bare_plugin", lambda: bare)])
    assert "bare" not in fams and BUILTINS <= set(fams)
    assert "bare" not in {p["name"] for p in registry.list_plugins()}
    (w,) = [w for w in caught if issubclass(w.category, gaussplug.GaussplugPluginWarning)]
    assert "gaussplug plugin 'bare' (entry point 'bare_plugin', distribution 'dist-bare') was not loaded: it has " \
           "no hook: expected a gaussplug_register_families(register) function or method decorated with " \
           "gaussplug.hookimpl" in str(w.message)  # fmt: skip
    # Attributed to the caller outside gaussplug (this test), not to a line of the registry.
    assert w.filename == __file__


def test_entry_point_hook_with_wrong_signature_gets_the_expected_signature(monkeypatch):
    @hookimpl
    def gaussplug_register_families(register, extra):
        pass

    odd = types.ModuleType("odd_plugin")
    odd.gaussplug_register_families = gaussplug_register_families
    _, fams, caught = _load_with(monkeypatch, [_FakeEP("odd", "odd_plugin", lambda: odd)])
    messages = [str(w.message) for w in caught if issubclass(w.category, gaussplug.GaussplugPluginWarning)]
    assert len(messages) == 1 and BUILTINS <= set(fams)
    assert messages[0].startswith("gaussplug plugin 'odd' (entry point 'odd_plugin', distribution 'dist-odd') was "
                                  "not loaded: its hook has the wrong signature. Expected "
                                  "gaussplug_register_families(register)")  # fmt: skip
    assert "\n" not in messages[0]


def test_allow_list_names_no_entry_point_warns_and_filtered_families_are_hinted(monkeypatch, tmp_path):
    good = _module_plugin("good_plugin", shift_plugin("good_shift").gaussplug_register_families)
    eps = [_FakeEP("good", "good_plugin", lambda: good)]
    # The family's name instead of the plugin's: a warning says what the variable lists.
    registry, fams, caught = _load_with(monkeypatch, eps, allow="good_shift")
    assert "good_shift" not in fams and registry.skipped_plugins() == ("good",)
    (w,) = [str(w.message) for w in caught if issubclass(w.category, gaussplug.GaussplugPluginWarning)]
    assert "GAUSSPLUG_LOAD_PLUGINS='good_shift' names 'good_shift', which is not the entry-point name of any " \
           "installed third-party plugin (installed: good); the variable lists plugin (entry-point) names" in w
    # An unknown family says which installed plugins the variable keeps out.
    from gaussplug._plugins import set_registry

    old = set_registry(registry)
    try:
        with pytest.raises(gaussplug.SpecError, match=r"unknown family 'good_shift'.*GAUSSPLUG_LOAD_PLUGINS="
                           r"'good_shift' keeps these installed plugins from loading: good\."):  # fmt: skip
            gaussplug.build_flow({"dim": 2, "layers": [{"family": "good_shift"}]})
    finally:
        set_registry(old)
    # A saved model that needs the filtered plugin: "installed but not loaded", not "not installed".
    loaded, _, _ = _load_with(monkeypatch, eps, allow="good")
    old = set_registry(loaded)
    try:
        path = tmp_path / "m.npz"
        gaussplug.save(gaussplug.build_flow({"dim": 2, "layers": [{"family": "good_shift"}]}), path)
    finally:
        set_registry(old)
    filtered, _, _ = _load_with(monkeypatch, eps, allow="")
    old = set_registry(filtered)
    try:
        with pytest.raises(PluginError, match=r"provided by plugin 'good' \(version 9\.9, distribution "
                           r"'dist-good'\), which is installed but not loaded: GAUSSPLUG_LOAD_PLUGINS='' does not "
                           r"list it"):  # fmt: skip
            gaussplug.load(path)
    finally:
        set_registry(old)


def test_class_with_an_instance_method_hook_says_register_an_instance(fresh_registry):
    class MyPlugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("mine", make_shift))

    with pytest.raises(PluginError, match=r"Plugin 'MyPlugin' is the class MyPlugin, whose gaussplug_register_"
                       r"families is an instance method \(it takes self\)\. Register an instance, MyPlugin\(\), or "
                       r"make the hook a @staticmethod\."):  # fmt: skip
        gaussplug.register(MyPlugin)
    assert gaussplug.register(MyPlugin()) == "MyPlugin" and "mine" in gaussplug.families()

    class Static:
        @staticmethod
        @hookimpl
        def gaussplug_register_families(register):
            register(Family("static_mine", make_shift))

    gaussplug.register(Static)
    assert "static_mine" in gaussplug.families()


def _with_registry(registry, action):
    """``action()`` with ``registry`` as the process-wide registry."""
    from gaussplug._plugins import set_registry

    old = set_registry(registry)
    try:
        return action()
    finally:
        set_registry(old)


def _shift_module(param):
    def hook(register):
        def make(dim):
            b = hk.get_parameter(param, (dim,), init=jnp.zeros)
            return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

        register(Family("good_shift", make))

    return _module_plugin("good_plugin", hook)


def test_saved_header_names_the_distribution_and_load_says_what_to_pip_install(monkeypatch, tmp_path):
    import json

    ep = _FakeEP("good", "good_plugin", lambda: _shift_module("shift"))
    registry, fams, _ = _load_with(monkeypatch, [ep], allow="good")
    assert fams["good_shift"].distribution == "dist-good" and fams["householder"].distribution == "gaussplug"
    spec = {"dim": 2, "layers": [{"family": "good_shift"}]}
    path = _with_registry(registry, lambda: gaussplug.save(gaussplug.build_flow(spec), tmp_path / "m.npz"))
    with np.load(path) as z:
        header = json.loads(str(z["__gaussplug__"]))
    assert header["families"] == {"good_shift": {"plugin": "good", "version": "9.9", "distribution": "dist-good"}}
    with pytest.raises(PluginError, match=r"needs layer family 'good_shift', provided by plugin 'good' \(version 9\.9, "
                       r"distribution 'dist-good'\), which is not installed\. Install that plugin \(pip install "
                       r"'dist-good==9\.9'\) and retry\."):  # fmt: skip
        _with_registry(gaussplug.Registry(load_entry_points=False), lambda: gaussplug.load(path))
    # A newer version whose param was renamed: a PluginError that says which version to install.
    newer = _FakeEP("good", "good_plugin", lambda: _shift_module("log_shift"))
    newer.dist.version = "10.0"
    upgraded, _, _ = _load_with(monkeypatch, [newer], allow="good")
    with pytest.raises(PluginError, match=r"layer '0_good_shift' \(family 'good_shift'\) was saved with plugin 'good' "
                       r"9\.9; plugin 'good' 10\.0 is installed now and its params differ: expected ~/log_shift "
                       r"\(2,\); the file has ~/shift \(2,\)\. To load this model, install the version it was saved "
                       r"with: pip install 'dist-good==9\.9'\.$"):  # fmt: skip
        _with_registry(upgraded, lambda: gaussplug.load(path))


def test_families_are_hashable_and_equal_ones_hash_equal():
    import dataclasses

    family = gaussplug.families()["mixture_cdf"].family
    twin = dataclasses.replace(family)  # equal, another object (its options dict too)
    assert twin == family and hash(twin) == hash(family) and {family: "a"}[twin] == "a"
    other = dataclasses.replace(family, options={**family.options, "components": 3})
    assert other != family and len({family, twin, other}) == 2
