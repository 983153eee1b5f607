import json

import numpy as np
import pytest

import gaussplug
from gaussplug import SpecError


def spec(*layers, dim=2):
    return {"dim": dim, "layers": list(layers)}


def test_names_and_order_follow_spec():
    s = {
        "dim": 2,
        "layers": [
            {"family": "standardize"},
            {
                "repeat": 2,
                "layers": [
                    {"family": "householder", "reflectors": 2},
                    {"repeat": 2, "layers": [{"family": "standardize"}]},
                ],
            },
        ],
    }
    flow = gaussplug.build_flow(s)
    assert flow.layer_names == (
        "0_standardize",
        "1_householder",
        "2_standardize",
        "3_standardize",
        "4_householder",
        "5_standardize",
        "6_standardize",
    )
    assert flow.layers[3].path == "layers[1].layers[1].layers[0]"
    assert flow.spec == s


def test_json_and_yaml_files(tmp_path):
    s = spec({"repeat": 2, "layers": [{"family": "householder"}, {"family": "standardize"}]})
    (tmp_path / "a.json").write_text(json.dumps(s))
    (tmp_path / "a.yaml").write_text(
        "dim: 2\nlayers:\n  - repeat: 2\n    layers:\n      - family: householder\n      - family: standardize\n"
    )
    a = gaussplug.build_flow(tmp_path / "a.json")
    b = gaussplug.build_flow(str(tmp_path / "a.yaml"))
    assert a.layer_names == b.layer_names
    (tmp_path / "a.yml").write_text("dim: 2\nlayers: [{family: standardize}]\n")
    assert gaussplug.build_flow(tmp_path / "a.yml").layer_names == ("0_standardize",)


def test_yaml_exponent_floats_are_numbers_as_in_json(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-2 as the string '1e-2'; a spec file means the number, as JSON would.
    from gaussplug._spec import load_spec

    (tmp_path / "t.yaml").write_text("dim: 2\nlayers:\n  - {family: mixture_cdf, components: 4, tail_weight: 1e-2}\n")
    assert load_spec(tmp_path / "t.yaml")["layers"][0]["tail_weight"] == 0.01
    assert gaussplug.build_flow(tmp_path / "t.yaml").layer_names == ("0_mixture_cdf",)
    (tmp_path / "q.yaml").write_text(
        "a: '1e-2'\nb: 1e3\nc: 2\nd: 0.5\ne: 1.0e3\nf: 2.5E2\ng: .5e2\nh: -1.5e-1\ni: 1.2.3\n"
    )
    assert load_spec(tmp_path / "q.yaml") == {  # quoted stays a string, as does what is not a number
        "a": "1e-2", "b": 1000.0, "c": 2, "d": 0.5, "e": 1000.0, "f": 250.0, "g": 50.0, "h": -0.15, "i": "1.2.3"}


def test_unknown_family_lists_known_and_suggests():
    with pytest.raises(
        SpecError, match=r"layers\[0\]\.layers\[1\]: unknown family 'householdr'\. Did you mean 'householder'\?"
    ) as e:
        gaussplug.build_flow(spec({"repeat": 1, "layers": [{"family": "standardize"}, {"family": "householdr"}]}))
    assert "Known families:" in str(e.value) and "standardize" in str(e.value)


def test_unknown_option_names_path_option_and_accepted():
    with pytest.raises(
        SpecError,
        match=r"layers\[0\] \(householder\): unknown option 'reflector'\. Did you mean 'reflectors'\? "
        r"Family 'householder' accepts: reflectors=",
    ):
        gaussplug.build_flow(spec({"family": "householder", "reflector": 2}))


def test_bad_option_value_is_spec_error_with_path():
    with pytest.raises(SpecError, match=r"layers\[1\] \(householder\):.*reflectors"):
        gaussplug.build_flow(spec({"family": "standardize"}, {"family": "householder", "reflectors": 0}))


def test_coupling_needs_two_dims():
    with pytest.raises(
        SpecError,
        match=r"layers\[0\] \(mixture_cdf_coupling\): family 'mixture_cdf_coupling' needs dim >= 2; the spec has dim 1",
    ):
        gaussplug.build_flow(spec({"family": "mixture_cdf_coupling"}, dim=1))


@pytest.mark.parametrize("repeat", [0, -1, 1.5, True, "2"])
def test_non_positive_repeat(repeat):
    with pytest.raises(SpecError, match=r"layers\[0\]: 'repeat' must be a positive integer; got"):
        gaussplug.build_flow(spec({"repeat": repeat, "layers": [{"family": "standardize"}]}))


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ({"layers": [{"family": "standardize"}]}, r"missing required key 'dim'"),
        ({"dim": 0, "layers": [{"family": "standardize"}]}, r"'dim' must be a positive integer; got 0"),
        ({"dim": 2}, r"missing required key 'layers'"),
        ({"dim": 2, "layers": []}, r"'layers' is empty"),
        ({"dim": 2, "layer": []}, r"unknown top-level key 'layer'\. Did you mean 'layers'\?"),
        ({"dim": 2, "layers": {"family": "standardize"}}, r"layers: expected a list of layers"),
        ({"dim": 2, "layers": ["standardize"]}, r"layers\[0\]: expected a layer"),
        (
            {"dim": 2, "layers": [{"famly": "standardize"}]},
            r"layers\[0\]: expected a 'family' key.*Did you mean 'family'\?",
        ),
        (
            {"dim": 2, "layers": [{"repeat": 2, "layers": [], "x": 1}]},
            r"layers\[0\]: unknown key 'x' in a repeat group",
        ),
        ({"dim": 2, "layers": [{"family": "standardize", "layers": []}]}, r"either a layer .* or a group"),
        (
            {"dim": 2, "layers": [{"family": "standardize"}, {"repeat": 2, "layers": []}]},
            r"^layers\[1\]\.layers: a repeat group needs at least one layer; got an empty list\.$",
        ),
        (
            {"dim": 2, "layers": [{"repeat": 2, "layers": [{"family": "standardize"}, {"layers": []}]}]},
            r"^layers\[0\]\.layers\[1\]\.layers: a repeat group needs at least one layer",
        ),
        ({"dim": 2, "layers": [{"repeat": 2}]}, r"^layers\[0\]: a repeat group needs a 'layers' list, e.g\."),
        ({"dim": 2, "name": 5, "layers": [{"family": "standardize"}]}, r"^spec: 'name' must be a string; got int 5\.$"),
        (
            {"dim": 2, "meta": "x", "layers": [{"family": "standardize"}]},
            r"^spec: 'meta' must be a mapping of your own notes; got str 'x'\.$",
        ),
    ],
)
def test_structural_errors(bad, pattern):
    with pytest.raises(SpecError, match=pattern):
        gaussplug.build_flow(bad)


def test_repeat_without_layers_gives_no_misleading_hint():
    with pytest.raises(SpecError) as e:
        gaussplug.build_flow({"dim": 2, "layers": [{"repeat": 2}]})
    assert "Did you mean" not in str(e.value)


def test_optional_top_keys_of_the_right_type_are_kept():
    flow = gaussplug.build_flow({"dim": 2, "name": "mine", "meta": {"a": 1}, "layers": [{"family": "standardize"}]})
    assert flow.spec["name"] == "mine" and flow.spec["meta"] == {"a": 1}


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match=r"expected a \.json, \.yaml or \.yml file; got extension '\.txt'"):
        gaussplug.build_flow(tmp_path / "s.txt")
    with pytest.raises(SpecError, match="does not exist"):
        gaussplug.build_flow(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="could not be parsed"):
        gaussplug.build_flow(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping at the top; got list"):
        gaussplug.build_flow(tmp_path / "list.yaml")
    with pytest.raises(SpecError, match="Expected a spec dict or a path to a .json/.yaml file; got int"):
        gaussplug.build_flow(42)
    for name in ("empty.json", "empty.yaml"):
        (tmp_path / name).write_text(" \n")
        with pytest.raises(SpecError, match=rf"{name}' is empty; expected a mapping with 'dim' and 'layers'"):
            gaussplug.build_flow(tmp_path / name)
    (tmp_path / "broken.yaml").write_text("dim: 2\nlayers: [\n")
    with pytest.raises(SpecError, match=r"(?s)broken\.yaml' could not be parsed: .*broken\.yaml', line 3") as err:
        gaussplug.build_flow(tmp_path / "broken.yaml")
    assert "<unicode string>" not in str(err.value)


def test_spec_files_with_duplicate_keys_are_refused(tmp_path):
    (tmp_path / "dup.json").write_text('{"dim": 2, "dim": 3, "layers": [{"family": "standardize"}]}')
    with pytest.raises(SpecError, match=r"dup\.json' could not be parsed: duplicate key 'dim' in one object"):
        gaussplug.build_flow(tmp_path / "dup.json")
    (tmp_path / "dup.yaml").write_text("dim: 2\nlayers:\n  - family: rotation\n    method: pca\n    method: random\n")
    with pytest.raises(SpecError, match=r"(?s)duplicate key 'method' \(first given on line 4; .*line 5, column 5"):
        gaussplug.build_flow(tmp_path / "dup.yaml")
    (tmp_path / "flow.yaml").write_text("dim: 2\nlayers: [{family: standardize, trainable: true, trainable: false}]\n")
    with pytest.raises(SpecError, match=r"(?s)duplicate key 'trainable' \(first given on line 2, column 32; "):
        gaussplug.build_flow(tmp_path / "flow.yaml")  # one line, a flow mapping: it used to keep the last value
    (tmp_path / "merge.yaml").write_text(  # a YAML merge key overriding a value is not a duplicate
        "base: &b {family: rotation, method: pca}\ndim: 2\nlayers:\n  - <<: *b\n    method: random\n"
    )
    with pytest.raises(SpecError, match="unknown top-level key 'base'"):
        gaussplug.build_flow(tmp_path / "merge.yaml")


def test_spec_file_encoding_and_read_errors(tmp_path):
    spec = '{"dim": 2, "name": "caf\u00e9", "layers": [{"family": "standardize"}]}'
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + spec.encode())
    assert gaussplug.build_flow(tmp_path / "bom.json").layer_names == ("0_standardize",)
    (tmp_path / "latin.json").write_bytes(spec.encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin\.json' is not UTF-8 text \(invalid continuation byte at byte 23\); "
                       r"save it as UTF-8\."):
        gaussplug.build_flow(tmp_path / "latin.json")
    (tmp_path / "adir.json").mkdir()
    with pytest.raises(SpecError, match=r"adir\.json' could not be read: Is a directory\."):
        gaussplug.build_flow(tmp_path / "adir.json")


@pytest.mark.parametrize(
    "layers, pattern",
    [
        ([{"repeat": 10**9, "layers": [{"family": "standardize"}]}],
         r"layers\[0\]: the spec expands to at least 1,000,000,000 layers here \('repeat': 1,000,000,000 times 1 "
         r"layer\); at most 10,000 are supported\."),
        ([{"repeat": 200, "layers": [{"repeat": 200, "layers": [{"family": "standardize"}]}]}],
         r"layers\[0\]: .* at least 40,000 layers here \('repeat': 200 times 200 layers\)"),
        ([{"family": "standardize"}, {"repeat": 5000, "layers": [{"family": "rotation"}, {"family": "standardize"}]}],
         r"layers\[1\]: the spec expands to at least 10,001 layers"),
    ],
    ids=["huge", "nested", "one-over"],
)
def test_layer_count_is_capped_before_expanding(layers, pattern):
    with pytest.raises(SpecError, match=pattern):
        gaussplug.build_flow({"dim": 2, "layers": layers})
    from gaussplug._spec import MAX_LAYERS, make_plan

    pair = [{"family": "rotation"}, {"family": "standardize"}]
    spec = {"dim": 2, "layers": [{"repeat": MAX_LAYERS // 2, "layers": pair}]}
    assert len(make_plan(spec, gaussplug.get_registry()).layers) == MAX_LAYERS


def test_dim_beyond_int32_and_params_beyond_memory_are_spec_errors(monkeypatch):
    # dim 10**100 used to be a PluginError with an MLIR dump; oversized options built, then failed on first use
    # with XLA's out-of-memory error (allocation is asynchronous).
    with pytest.raises(SpecError, match=r"'dim' must be at most 2,147,483,647 .*; got a 101-digit number\.$"):
        gaussplug.build_flow({"dim": 10**100, "layers": [{"family": "rotation"}]})
    with pytest.raises(SpecError, match=r"'dim' must be at most 2,147,483,647 .*; got 2,147,483,648\.$"):
        gaussplug.build_flow({"dim": 2**31, "layers": [{"family": "rotation"}]})
    import gaussplug._memory as memory

    spec = gaussplug.specs.coupling_flow(2, n_layers=1, hidden=(256, 512))
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**19)  # a 512 KiB machine
    with pytest.raises(SpecError, match=r"spec: the flow's params alone would take 564.\d KiB \(144,\d+ float32 "
                       r"values\), more than this machine's 512.0 KiB of memory; the largest is layer "
                       r"'1_mixture_cdf_coupling' \(family 'mixture_cdf_coupling', options .*\"hidden\": "
                       r"\[256, 512\].*\)\. Use smaller options"):
        gaussplug.build_flow(spec)
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**20)
    assert gaussplug.build_flow(spec).dim == 2  # fits in 1 MiB


def test_flat_layer_lists_and_deep_nesting_are_capped():
    # A flat list counts too (it used to build 20,000 layers in a minute), and deep nesting is a SpecError,
    # not a RecursionError.
    from gaussplug._json import MAX_NESTING
    from gaussplug._spec import MAX_DEPTH, MAX_LAYERS

    with pytest.raises(SpecError, match=rf"layers\[{MAX_LAYERS}\]: the spec has more than 10,000 layers here"):
        gaussplug.build_flow({"dim": 2, "layers": [{"family": "rotation"}] * (MAX_LAYERS + 1)})

    def nested(depth):
        item = {"family": "rotation"}
        for _ in range(depth):
            item = {"layers": [item]}
        return {"dim": 2, "layers": [item]}

    assert gaussplug.build_flow(nested(MAX_DEPTH)).layer_names == ("0_rotation",)
    with pytest.raises(SpecError, match=rf"repeat groups nested {MAX_DEPTH + 1} deep; at most {MAX_DEPTH} levels"):
        gaussplug.build_flow(nested(MAX_DEPTH + 1))
    with pytest.raises(SpecError, match=rf"nested more than {MAX_NESTING} levels deep; expected a flatter value"):
        gaussplug.build_flow(nested(1000))


def test_yaml_alias_bombs_are_refused_before_expanding(tmp_path):
    # "Billion laughs": 405 bytes that expand to 490 million strings (it took minutes and gigabytes).
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("dim: 2\nlayers: [{family: rotation}]\nmeta:\n" + "".join(f"  {line}\n" for line in lines))
    with pytest.raises(SpecError, match=r"could not be parsed: its aliases \(\*name\) expand it to 490,329,073 values; "
                       r"at most 1,000,000 are read"):  # fmt: skip
        gaussplug.build_flow(str(bomb))
    ok = tmp_path / "ok.yaml"  # aliases in moderation (merge keys, shared blocks) still work
    ok.write_text("dim: 2\nblock: &b {family: rotation}\nlayers: [*b, *b]\n")
    with pytest.raises(SpecError, match="unknown top-level key 'block'"):
        gaussplug.build_flow(str(ok))


def test_json_text_in_place_of_a_spec_file_says_that_strings_are_paths():
    with pytest.raises(SpecError, match=r"spec file '\{\"dim\": 2, \"layers\": \[\]\}': expected a \.json, \.yaml or "
                       r"\.yml file; got extension ''\. A string is taken as a file path; for JSON text, pass "
                       r"json\.loads\(text\) \(a dict\) instead\."):  # fmt: skip
        gaussplug.build_flow('{"dim": 2, "layers": []}')
    with pytest.raises(SpecError, match=r"got extension '\.txt'\.$"):  # a path: no hint about JSON text
        gaussplug.build_flow("spec.txt")


def test_non_json_values_rejected():
    pattern = r"spec\.layers\[0\]\.reflectors: expected JSON-compatible values .*; got object"
    with pytest.raises(SpecError, match=pattern):
        gaussplug.build_flow(spec({"family": "householder", "reflectors": object()}))
    # NaN and infinity are not JSON: a strict JSON file cannot hold them, and metrics.json would write null.
    for bad in (float("nan"), float("inf"), np.float32("-inf")):
        with pytest.raises(SpecError, match=r"spec\.layers\[0\]\.tail_weight: expected a finite number \(JSON has "
                           rf"no NaN or Infinity\); got {float(bad)!r}"):  # fmt: skip
            gaussplug.build_flow(spec({"family": "mixture_cdf", "tail_weight": bad}))


def _faulty_family(name, **hooks):
    """A shift family with the given hooks, registered by run-time plugin 'faulty'."""
    import distrax
    import haiku as hk
    import jax.numpy as jnp

    def make(dim, k=1):
        b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

    return gaussplug.Family(name, make, options={"k": 1}, **hooks)


def _register_faulty(*families):
    class Plugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            for family in families:
                register(family)

    gaussplug.register(Plugin(), name="faulty")


def _raise(err):
    raise err


def test_plugin_hook_faults_name_layer_family_and_plugin(fresh_registry):
    _register_faulty(
        _faulty_family("badvalidate", validate=lambda dim, o: _raise(KeyError("grid"))),
        _faulty_family("badresolve", resolve=lambda o, i: _raise(RuntimeError("boom"))),
        _faulty_family("noneresolve", resolve=lambda o, i: None),
        _faulty_family("arrayresolve", resolve=lambda o, i: {**o, "k": object()}),
        _faulty_family("userresolve", resolve=lambda o, i: _raise(ValueError("k must be odd"))),
        _faulty_family("badfrozen", frozen=lambda o, m, p: _raise(KeyError("mask"))),
    )
    head = r"layers\[0\] \({0}\): {1} of family '{0}' \(plugin 'faulty'\) "
    cases = {
        "badvalidate": head.format("badvalidate", "validate") + r"raised KeyError: 'grid'",
        "badresolve": head.format("badresolve", "resolve") + r"raised RuntimeError: boom",
        "noneresolve": head.format("noneresolve", "resolve") + r"returned NoneType None; expected the layer's options",
        "arrayresolve": r"layers\[0\] \(arrayresolve\) options after resolve\.k: expected JSON-compatible .*"
        r"\(resolve of family 'arrayresolve', plugin 'faulty'\)",
    }
    for family, pattern in cases.items():
        with pytest.raises(gaussplug.PluginError, match=pattern):
            gaussplug.build_flow(spec({"family": family}))
    # A ValueError from resolve is about the user's values, like validate's: a SpecError naming the layer.
    with pytest.raises(SpecError, match=r"layers\[0\] \(userresolve\): k must be odd"):
        gaussplug.build_flow(spec({"family": "userresolve"}))
    flow = gaussplug.build_flow(spec({"family": "badfrozen"}))
    with pytest.raises(gaussplug.PluginError, match=r"Layer '0_badfrozen' \(family 'badfrozen', plugin 'faulty'\): "
                       r"the family's frozen\(\) raised KeyError: 'mask'"):  # fmt: skip
        flow.trainable_mask()


def test_family_defaults_are_json_values():
    make = _faulty_family("x").make_bijector
    fam = gaussplug.Family("tupledefault", make, options={"hidden": (4, 4), "k": np.int64(2)})
    assert fam.options == {"hidden": [4, 4], "k": 2} and type(fam.options["k"]) is int
    with pytest.raises(ValueError, match=r"Family 'npdefault': options\.grid: expected JSON-compatible values .*"
                       r"got ndarray .*Option defaults are stored in specs and saved models as JSON"):  # fmt: skip
        gaussplug.Family("npdefault", make, options={"grid": np.arange(3)})
    with pytest.raises(ValueError, match=r"Family 'nandefault': options\.lo: expected a finite number \(JSON has no "
                       r"NaN or Infinity\); got nan\. Option defaults are stored"):  # fmt: skip
        gaussplug.Family("nandefault", make, options={"lo": float("nan")})
