import warnings

import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import Family, PluginError, hookimpl


def test_round_trip_exact(tmp_path):
    x = np.random.default_rng(0).gamma(2.0, size=(200, 3))
    flow = gaussplug.warm_start(
        gaussplug.build_flow(
            {"dim": 3, "layers": [{"family": "standardize"}, {"family": "householder"}, {"family": "rotation"}]}
        ),
        x,
        progress=False,
    )
    path = gaussplug.save(flow, tmp_path / "m.npz")
    back = gaussplug.load(path)
    assert back.spec == flow.spec and back.layer_names == flow.layer_names
    for a, b in zip(jax.tree.leaves(flow.params), jax.tree.leaves(back.params), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert back.metadata == flow.metadata
    np.testing.assert_array_equal(back.log_prob(x), flow.log_prob(x))


def test_round_trip_float64(tmp_path):
    with jax.enable_x64(True):
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}]}, key=5)
        back = gaussplug.load(gaussplug.save(flow, tmp_path / "m.npz"))
        assert back.dtype == jnp.float64
        np.testing.assert_array_equal(
            back.params["0_householder"]["~"]["vectors"], flow.params["0_householder"]["~"]["vectors"]
        )


def test_no_pickle(tmp_path):
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    path = gaussplug.save(flow, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_missing_family_names_family_and_plugin(tmp_path, fresh_registry):
    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            def make(dim):
                b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
                return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

            register(Family("tmp_shift", make))

    gaussplug.register(Plugin(), name="tmp-shift-plugin")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "tmp_shift"}]})
    path = gaussplug.save(flow, tmp_path / "m.npz")
    gaussplug.unregister("tmp-shift-plugin")
    with pytest.raises(
        PluginError,
        match=r"needs layer family 'tmp_shift', provided by plugin 'tmp-shift-plugin' "
        r"\(version unknown\), which is not loaded\. Register it \(gaussplug\.register, for a plugin defined at "
        r"run time\) or install it, and retry\.",
    ):
        gaussplug.load(path)


def test_a_family_now_from_another_plugin_is_warned_about(tmp_path, fresh_registry):
    def plugin(sign):
        class Plugin:
            @hookimpl
            def gaussplug_register_families(self, register):
                def make(dim):
                    b = hk.get_parameter("shift", (dim,), init=jnp.ones)
                    return distrax.Block(distrax.ScalarAffine(shift=sign * b), 1)

                register(Family("swap", make))

        return Plugin()

    gaussplug.register(plugin(1.0), name="plugin-a")
    path = gaussplug.save(gaussplug.build_flow({"dim": 2, "layers": [{"family": "swap"}]}), tmp_path / "m.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaussplug.load(path)  # the same plugin: silent
    gaussplug.unregister("plugin-a")
    gaussplug.register(plugin(-1.0), name="plugin-b")
    with pytest.warns(
        gaussplug.GaussplugPluginWarning,
        match=r"saved with layer family 'swap' from plugin 'plugin-a' \(version unknown\); it is now provided by "
        r"plugin 'plugin-b'",
    ):
        gaussplug.load(path)


def test_not_a_model(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(3))
    with pytest.raises(gaussplug.GaussplugError, match="not a gaussplug model"):
        gaussplug.load(tmp_path / "x.npz")
    (tmp_path / "y.npz").write_text("garbage")
    with pytest.raises(gaussplug.GaussplugError, match="is not a gaussplug model file"):
        gaussplug.load(tmp_path / "y.npz")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(gaussplug.GaussplugError, match=r"data\.csv' is not a gaussplug model file: it is not an \.npz "
                       r"archive \(it starts like a text file, e\.g\. a CSV\)\. Pass the model\.npz") as info:
        gaussplug.load(tmp_path / "data.csv")
    assert "pickle" not in str(info.value)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(gaussplug.GaussplugError, match=r"it starts like an empty file"):
        gaussplug.load(tmp_path / "empty.npz")


# -- damaged and foreign files ---------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    """``(path, arrays, header)`` of a small saved model; ``arrays`` excludes the header."""
    import json

    flow = gaussplug.build_flow({"dim": 3, "layers": [{"family": "standardize"}, {"family": "householder"}]})
    path = gaussplug.save(flow, tmp_path / "m.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return path, arrays, json.loads(str(arrays.pop("__gaussplug__")))


def _rewrite(path, arrays, header):
    import json

    header = header if isinstance(header, str) else json.dumps(header)
    np.savez(path, **arrays, __gaussplug__=np.array(header))
    return path


def _key_of(header, layer, name):
    return next(e["key"] for e in header["params"] if e["layer"] == layer and e["name"] == name)


def test_load_npy_file_is_not_a_model(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    with pytest.raises(gaussplug.GaussplugError, match=r"x\.npy' is not a gaussplug model file: it holds a single"):
        gaussplug.load(tmp_path / "x.npy")


def test_load_flipped_bytes_is_damaged(saved):
    import zipfile

    path, arrays, header = saved
    with zipfile.ZipFile(path) as z:  # the archive is stored uncompressed: flip the last data byte of a member
        info = z.getinfo(f"{_key_of(header, '1_householder', 'vectors')}.npy")
    data = bytearray(open(path, "rb").read())
    at = info.header_offset  # local header: 30 bytes, then the name and extra field (lengths at 26 and 28)
    name_len, extra_len = (int.from_bytes(data[at + o : at + o + 2], "little") for o in (26, 28))
    data[at + 30 + name_len + extra_len + info.compress_size - 1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(gaussplug.GaussplugError, match=r"m\.npz' is damaged or not a gaussplug model.*Bad CRC"):
        gaussplug.load(path)


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (lambda a, h: (a, "{not json"), "header is not valid JSON"),
        (lambda a, h: (a, "[1, 2]"), "must be a JSON object; got list"),
        (lambda a, h: (a, {k: v for k, v in h.items() if k != "families"}), "'families' entry .* it is missing"),
        (lambda a, h: (a, {**h, "params": [{"key": "p0"}]}), "a 'params' entry should name key, layer"),
        (lambda a, h: ({k: v for k, v in a.items() if k != "p1"}, h), "lists array 'p1' .* does not hold it"),
        (lambda a, h: (a, {**h, "metadata": [1, 2]}), "'metadata' entry should be a JSON object; it is a list"),
        (lambda a, h: (a, "[" * 100_000 + "]" * 100_000), "header is nested too deeply"),  # not a RecursionError
        (lambda a, h: (a, {**h, "params": h["params"] + h["params"][-1:]}),  # the second entry used to win silently
         r"lists layer '1_householder', param ~/vectors twice \(arrays 'p\d' and 'p\d'\)"),
        (lambda a, h: (a, {**h, "format_version": True}), "'format_version' should be a positive integer; it is True"),
        (lambda a, h: (a, {**h, "format_version": "1"}), "'format_version' should be a positive integer; it is '1'"),
        (lambda a, h: (a, {**h, "params": [{"key": "x" * 10_000}]}),  # a message shows a bounded part of it
         r"a 'params' entry should name key, layer, module, name; got \{'key': 'xxxx+\.\.\. \(10,011 characters\)"),
    ],
    ids=["bad-json", "not-an-object", "no-families", "bad-params-entry", "missing-array", "bad-metadata", "deep",
         "duplicate-entry", "bool-version", "str-version", "long-entry"],
)
def test_load_damaged_header_raises_gaussplug_error(saved, tamper, needle):
    path, arrays, header = saved
    _rewrite(path, *tamper(arrays, header))
    with pytest.raises(gaussplug.GaussplugError, match=rf"m\.npz' is damaged or not a gaussplug model.*{needle}"):
        gaussplug.load(path)


def test_newer_or_foreign_formats_say_so(saved):
    path, arrays, header = saved
    _rewrite(path, arrays, {**header, "format_version": 2})
    with pytest.raises(gaussplug.GaussplugError, match=r"m\.npz' was written in gaussplug-flow v2, a newer format than "
                       r"this gaussplug reads \(v<=1\); upgrade gaussplug"):
        gaussplug.load(path)
    _rewrite(path, arrays, {**header, "format": "other" * 100})
    with pytest.raises(gaussplug.GaussplugError, match=r"unsupported model format "
                       r"'otherother.*\.\.\. \(502 characters\); this gaussplug reads gaussplug-flow v<=1\.$"):
        gaussplug.load(path)
    _rewrite(path, arrays, {k: v for k, v in header.items() if k != "format_version"})
    assert gaussplug.load(path).layer_names == ("0_standardize", "1_householder")  # v1 when not given


def test_a_truncated_model_is_called_damaged(saved):
    # It used to read "not a gaussplug model file (.npz): BadZipFile", as if it were the wrong file.
    path = saved[0]
    whole = open(path, "rb").read()
    for cut in (len(whole) // 2, len(whole) - 10):
        open(path, "wb").write(whole[:cut])
        with pytest.raises(gaussplug.GaussplugError, match=r"m\.npz' is damaged or not a gaussplug model file: the "
                           r"archive is incomplete, truncated perhaps \(a copy or a save cut short; BadZipFile"):
            gaussplug.load(path)


def test_load_refuses_special_files_instead_of_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "m.npz")  # np.load used to wait for a writer here, forever
    with pytest.raises(gaussplug.GaussplugError, match=r"m\.npz' is not a gaussplug model file: it is a named pipe "
                       r"\(FIFO\)\. Pass the model\.npz"):
        gaussplug.load(tmp_path / "m.npz")
    with pytest.raises(gaussplug.GaussplugError, match=r"it is a directory"):
        gaussplug.load(tmp_path)


def test_only_the_listed_arrays_are_decompressed_and_each_is_bounded(saved, monkeypatch):
    # A 5 MB file with a 5 GiB member used to be inflated whole (17 s, 5 GB) before any check.
    import gaussplug._io as io

    path, arrays, header = saved
    _rewrite(path, {**arrays, "junk": np.array([object()], dtype=object)}, header)  # unlisted, and a pickle
    flow = gaussplug.load(path)  # never read
    assert flow.layer_names == ("0_standardize", "1_householder")
    monkeypatch.setattr(io, "MAX_MEMBER_BYTES", 100)  # every .npy member is larger (its header alone is 128 bytes)
    with pytest.raises(gaussplug.GaussplugError, match=r"damaged or not a gaussplug model file: array 'p\d+' would "
                       r"inflate to [\d,]+ bytes, more than a model's array holds here \(100\)"):
        gaussplug.load(path)


def test_float64_params_beyond_float32_range_are_refused_without_x64(saved):
    # They used to load as inf (a warning only), and sample gave NaN everywhere.
    import jax

    if jax.config.jax_enable_x64:
        pytest.skip("float64 holds these values")
    path, arrays, header = saved
    arrays = {k: v.astype(np.float64) for k, v in arrays.items()}
    key = _key_of(header, "1_householder", "vectors")
    arrays[key] = arrays[key].copy()
    arrays[key][0, 0] = 1e300
    _rewrite(path, arrays, header)
    with pytest.raises(gaussplug.GaussplugError, match=r"layer '1_householder', param ~/vectors holds float64 values "
                       r"beyond float32's range \(largest 1e\+300\); .* \(JAX_ENABLE_X64=1\)"):  # fmt: skip
        gaussplug.load(path)


def test_load_checks_param_shapes_and_names(saved):
    path, arrays, header = saved
    key = _key_of(header, "1_householder", "vectors")
    expected = arrays[key].shape
    _rewrite(path, {**arrays, key: np.zeros(7, np.float32)}, header)
    with pytest.raises(
        gaussplug.GaussplugError,
        match=rf"layer '1_householder', param ~/vectors: expected shape \({expected[0]}, {expected[1]}\); "
        r"found \(7,\)",
    ):
        gaussplug.load(path)
    renamed = {**header, "params": [{**e, "name": "other"} if e["key"] == key else e for e in header["params"]]}
    _rewrite(path, arrays, renamed)
    with pytest.raises(gaussplug.GaussplugError, match=r"damaged or not a gaussplug model file: layer '1_householder' "
                       r"has no stored param ~/vectors \(the file stores ~/other \(\d+, \d+\) for it\)\. If plugin "
                       r"'householder' has been changed since the model was saved"):  # fmt: skip
        gaussplug.load(path)

@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (lambda v: v.astype("U3"), r"expected float32 or float64 values; found dtype <U3"),
        (lambda v: v.astype(np.float16), r"expected float32 or float64 values; found dtype float16"),
        (lambda v: v.astype(np.int32), r"expected float32 or float64 values; found dtype int32"),
        (lambda v: np.where(np.arange(v.size).reshape(v.shape) < 2, np.nan, v).astype(v.dtype),
         r"2 of \d+ values are NaN or inf"),
    ],
    ids=["strings", "float16", "int", "nan"],
)
def test_load_checks_param_dtypes_and_values(saved, value, needle):
    # Arrays that pass the CRC check but could only fail later, deep inside JAX (or give silent NaN).
    path, arrays, header = saved
    key = _key_of(header, "1_householder", "vectors")
    _rewrite(path, {**arrays, key: value(arrays[key])}, header)
    with pytest.raises(gaussplug.GaussplugError, match=rf"layer '1_householder', param ~/vectors: {needle}"):
        gaussplug.load(path)


def test_save_refuses_what_is_not_a_flow_and_never_leaves_half_a_file(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match=r"save: expected a gaussplug.Flow as flow; got dict\."):
        gaussplug.save({"a": 1}, tmp_path / "x.npz")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    path = gaussplug.save(flow, tmp_path / "m.npz")
    before = open(path, "rb").read()

    def broken(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        gaussplug.save(flow, path)
    assert open(path, "rb").read() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_save_follows_symlinks_keeps_the_mode_and_names_a_missing_folder(tmp_path):
    import os
    import stat

    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    real = gaussplug.save(flow, tmp_path / "real.npz")
    os.chmod(real, 0o600)  # a private model stays private when saved over
    (tmp_path / "link.npz").symlink_to(real)
    gaussplug.save(flow.replace(params={"0_standardize": {"~": {
        "shift": jnp.ones(2), "log_scale": jnp.zeros(2)}}}), tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink()
    np.testing.assert_array_equal(gaussplug.load(real).params["0_standardize"]["~"]["shift"], 1.0)
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]  # no temp file left
    with pytest.raises(FileNotFoundError, match=r"'.*nope/m\.npz': the folder '.*nope' does not exist"):
        gaussplug.save(flow, tmp_path / "nope" / "m.npz")


def test_save_names_a_folder_given_as_the_path_and_a_folder_that_takes_no_files(tmp_path, monkeypatch):
    import errno
    import os

    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    (tmp_path / "run").mkdir()
    with pytest.raises(IsADirectoryError, match=r"'.*run' is a folder; expected the path of a file to write, such "
                       r"as '.*run/model\.npz'\.$"):  # fmt: skip
        gaussplug.save(flow, tmp_path / "run")
    real_open = os.open

    def no_space(path, *args, **kwargs):  # as on a full disk, or in /proc: the temp file cannot be made
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_space)
    with pytest.raises(OSError, match=r"'.*m\.npz' cannot be written: No space left on device \(creating a file in "
                       r"'.*'\)\.$"):  # fmt: skip (not the hidden temp file's name)
        gaussplug.save(flow, tmp_path / "m.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_load_names_bytes_that_are_a_files_contents(tmp_path):
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    path = gaussplug.save(flow, tmp_path / "m.npz")
    with open(path, "rb") as fh:
        contents = fh.read()
    with pytest.raises(TypeError, match=r"load: expected a file path .*; got bytes that are not a path \([\d,]+ "
                       r"bytes holding NUL, e.g. a file's contents: pass its name instead\)\."):  # fmt: skip
        gaussplug.load(contents)
    assert gaussplug.load(path.encode()).layer_names == ("0_standardize",)  # a path as bytes is still a path


def test_save_refuses_non_finite_params(tmp_path):
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    bad = flow.replace(params={"0_standardize": {"~": {"shift": jnp.array([0.0, jnp.inf]), "log_scale": jnp.zeros(2)}}})
    with pytest.raises(ValueError, match=r"layer '0_standardize', param ~/shift: 1 of 2 values are NaN or inf"):
        gaussplug.save(bad, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def _shifted(flow, value):
    return flow.replace(params={"0_standardize": {"~": {"shift": jnp.full(2, value), "log_scale": jnp.zeros(2)}}})


def _shift_of(path):
    return float(gaussplug.load(path).params["0_standardize"]["~"]["shift"][0])


def test_save_over_a_hard_link_writes_in_place_so_every_link_sees_it(tmp_path):
    import os

    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    real = gaussplug.save(_shifted(flow, 0.0), tmp_path / "real.npz")
    os.link(real, tmp_path / "twin.npz")
    os.chmod(real, 0o640)
    inode = os.stat(real).st_ino
    (tmp_path / "via_symlink.npz").symlink_to(tmp_path / "twin.npz")
    for value, name in [(1.0, "real.npz"), (2.0, "twin.npz"), (3.0, "via_symlink.npz")]:
        gaussplug.save(_shifted(flow, value), tmp_path / name)
        assert os.stat(real).st_ino == inode and os.stat(real).st_nlink == 2, name  # still one file, two links
        assert _shift_of(real) == _shift_of(tmp_path / "twin.npz") == value
    assert (tmp_path / "via_symlink.npz").is_symlink() and oct(os.stat(real).st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.npz", "twin.npz", "via_symlink.npz"]


def test_save_in_place_that_fails_keeps_the_complete_temp_file(tmp_path, monkeypatch):
    import os
    import shutil

    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    real = gaussplug.save(_shifted(flow, 0.0), tmp_path / "real.npz")
    os.link(real, tmp_path / "twin.npz")

    def broken(src, dst):
        dst.write(src.read(10))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", broken)
    with pytest.raises(OSError, match=r"real\.npz': writing the model in place \(the file has 2 hard links\) failed: "
                                      r"OSError: disk full\. .* may be incomplete; the complete model is in '(.*)'\.$"
                       ) as info:
        gaussplug.save(_shifted(flow, 5.0), real)
    kept = str(info.value).rsplit("the complete model is in ", 1)[1][1:-2]
    monkeypatch.undo()
    assert os.path.dirname(kept) == str(tmp_path) and _shift_of(kept) == 5.0


def test_loading_float64_params_without_x64_warns(tmp_path):
    with jax.enable_x64(True):
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}]}, key=5)
        path = gaussplug.save(flow, tmp_path / "m.npz")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gaussplug.load(path)  # float64 in a float64 process: exact, quiet
    with (
        jax.enable_x64(False),
        pytest.warns(gaussplug.DataWarning, match=r"holds float64 params, but this process runs JAX in float32") as w,
    ):
        back = gaussplug.load(path)
        assert back.dtype == jnp.float32 and w[0].filename == __file__


# -- a family's plugin upgraded or replaced since the model was saved --------------------------------------
def _versioned_plugin(version, param="shift", options=None):
    """A run-time plugin ``p`` at ``version`` providing family ``x`` with one param and the given options."""

    class Plugin:
        __version__ = version

        @hookimpl
        def gaussplug_register_families(self, register):
            def make(dim, **_):
                b = hk.get_parameter(param, (dim,), init=jnp.zeros)
                return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

            register(Family("x", make, options=options))

    return Plugin()


def _saved_with(tmp_path, plugin, spec_layer):
    gaussplug.register(plugin, name="p")
    spec = {"dim": 2, "layers": [{"family": "standardize"}, spec_layer]}
    path = gaussplug.save(gaussplug.build_flow(spec), tmp_path / "m.npz")
    gaussplug.unregister("p")
    return path


def test_upgraded_plugin_with_renamed_param_is_a_plugin_error(tmp_path, fresh_registry):
    path = _saved_with(tmp_path, _versioned_plugin("0.2.0", param="delta"), {"family": "x"})
    gaussplug.register(_versioned_plugin("0.3.0", param="log_delta"), name="p")
    with pytest.raises(PluginError) as info:
        gaussplug.load(path)
    assert str(info.value) == (
        f"{str(path)!r}: layer '1_x' (family 'x') was saved with plugin 'p' 0.2.0; plugin 'p' 0.3.0 is installed now "
        "and its params differ: expected ~/log_delta (2,); the file has ~/delta (2,)."
    )


def test_upgraded_plugin_with_renamed_option_is_a_plugin_error(tmp_path, fresh_registry):
    path = _saved_with(tmp_path, _versioned_plugin("0.2.0", options={"steps": 3}), {"family": "x", "steps": 5})
    gaussplug.register(_versioned_plugin("0.3.0", options={"iters": 3}), name="p")
    with pytest.raises(PluginError) as info:
        gaussplug.load(path)
    assert str(info.value) == (
        f"{str(path)!r}: layer '1_x' (family 'x') was saved with plugin 'p' 0.2.0; plugin 'p' 0.3.0 is installed now "
        "and its options differ: unknown option 'steps'. Did you mean 'iters'? Family 'x' accepts: iters=3; the file "
        "has steps=5 at layers[1]."
    )
    assert isinstance(info.value.__cause__, gaussplug.SpecError)


def test_upgraded_plugin_that_still_fits_loads_with_a_warning(tmp_path, fresh_registry):
    path = _saved_with(tmp_path, _versioned_plugin("0.2.0", options={"steps": 3}), {"family": "x", "steps": 5})
    gaussplug.register(_versioned_plugin("0.3.0", options={"steps": 3}), name="p")
    with pytest.warns(gaussplug.GaussplugPluginWarning) as seen:
        flow = gaussplug.load(path)
    assert flow.layer_names == ("0_standardize", "1_x") and len(seen) == 1 and seen[0].filename == __file__
    assert str(seen[0].message) == (
        f"{str(path)!r} was saved with layer family 'x' from plugin 'p' version 0.2.0; version 0.3.0 is installed "
        "now. The stored options and params fit it, but the density may differ if the new version changed what "
        "they mean."
    )


def test_same_plugin_and_version_missing_param_is_still_damaged(tmp_path, fresh_registry):
    path = _saved_with(tmp_path, _versioned_plugin("0.2.0", param="delta"), {"family": "x"})
    gaussplug.register(_versioned_plugin("0.2.0", param="log_delta"), name="p")  # the same version: the file's fault
    with pytest.raises(gaussplug.GaussplugError, match=r"is damaged or not a gaussplug model file: layer '1_x' has "
                       r"no stored param ~/log_delta \(the file stores ~/delta \(2,\) for it\)\. If plugin 'p' has "
                       r"been changed since the model was saved, its params no longer fit the file: a plugin whose "
                       r"params change needs a new version") as info:  # fmt: skip
        gaussplug.load(path)
    assert not isinstance(info.value, PluginError)


def test_replaced_builtin_whose_options_differ_is_a_plugin_error(tmp_path, fresh_registry):
    spec = {"dim": 2, "layers": [{"family": "standardize", "trainable": False}]}
    path = gaussplug.save(gaussplug.build_flow(spec), tmp_path / "m.npz")
    gaussplug.unregister("standardize")  # replaced at run time by a family of the same name without options

    class Mine:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("standardize", lambda dim: distrax.Block(distrax.ScalarAffine(shift=0.0), 1)))

    gaussplug.register(Mine(), name="my-standardize")
    with pytest.raises(PluginError, match=rf"layer '0_standardize' \(family 'standardize'\) was saved with plugin "
                       rf"'standardize' {gaussplug.__version__}; plugin 'my-standardize' \(version unknown\) is "
                       r"installed now and its options differ: unknown option 'trainable'\. Family 'standardize' "
                       r"accepts: no options; the file has trainable=False at layers\[0\]\.$"):  # fmt: skip
        gaussplug.load(path)


def test_files_without_a_distribution_in_the_header_still_load(saved):
    path, arrays, header = saved
    assert header["families"]["standardize"] == {
        "plugin": "standardize", "version": gaussplug.__version__, "distribution": "gaussplug"
    }  # fmt: skip
    older = {name: {k: v for k, v in e.items() if k != "distribution"} for name, e in header["families"].items()}
    _rewrite(path, arrays, {**header, "families": older})  # as gaussplug wrote them before it stored distributions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gaussplug.load(path).layer_names == ("0_standardize", "1_householder")


def test_a_gaussplug_upgrade_does_not_warn_for_builtin_families(saved):
    path, arrays, header = saved
    older = {name: {**e, "version": "0.0.1"} for name, e in header["families"].items()}
    _rewrite(path, arrays, {**header, "families": older})  # saved by an older gaussplug
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gaussplug.load(path).layer_names == ("0_standardize", "1_householder")


def test_save_and_load_name_a_path_that_is_not_one(tmp_path):
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]})
    for bad in (None, 3):
        with pytest.raises(TypeError, match=rf"^save: expected a file path \(str or os.PathLike\) as path; got "
                                            rf"{type(bad).__name__}\.$"):
            gaussplug.save(flow, bad)
        with pytest.raises(TypeError, match=r"^load: expected a file path .* as path; got "):
            gaussplug.load(bad)
    assert not list(tmp_path.iterdir())
