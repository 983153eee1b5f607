"""The ``gaussplug`` command line, run in-process through ``main`` (plus one console-script run).

Compilation dominates the cost of a fit, so only the shared ``fitted`` fixture
uses the default (mixture-CDF) spec; the data-format tests share one small
spec, and with it one set of compiled functions.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import gaussplug
from gaussplug import _csv, _datasets
from gaussplug.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--steps", "30", "--batch-size", "64", "--quiet"]
SMALL_SPEC = {"dim": 2, "layers": [{"repeat": 2, "layers": [{"family": "householder", "reflectors": 1}]}]}


def _moons(n=240, seed=0):
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.08, random_state=seed)
    return x * [3.0, 0.5] + [10.0, -2.0]  # not standardised: the model must keep the scale


def _finite_numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _finite_numbers(v)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


def _fit(tmp_path, *args, out="out"):
    out_dir = tmp_path / out
    code = main(["fit", *map(str, args), "--out", str(out_dir), *FAST])
    return code, out_dir


def _check_outputs(out_dir, *, n_train, n_val, dim, stage="warm_start"):
    assert (out_dir / "model.npz").is_file()
    assert (out_dir / "report.png").read_bytes()[:8] == PNG_MAGIC
    m = json.loads((out_dir / "metrics.json").read_text())
    for key in ("dataset", "n_train", "n_val", "dim", "spec", "user_spec", "nll", "timings", "versions", "fine_tune"):
        assert key in m
    assert (m["n_train"], m["n_val"], m["dim"]) == (n_train, n_val, dim)
    assert m["spec"]["layers"][0]["family"] == "standardize"
    assert m["user_spec"] == {**m["spec"], "layers": m["spec"]["layers"][1:]}
    assert m["nll"]["initial"]["stage"] == stage and m["nll"]["final"]["stage"] == "fine_tune"
    for st in ("initial", "final"):
        for units in ("data", "standardized"):
            for part in ("train", "val"):
                assert math.isfinite(m["nll"][st][units][part])
        assert m["nll"][st]["standardized"]["train"] == pytest.approx(
            m["nll"][st]["data"]["train"] - m["nll"]["log_std_sum"])
    for key in ("warm_start_s", "fine_tune_wall_s", "compile_s", "steps_per_second", "total_s"):
        assert m["timings"][key] >= 0
    assert m["versions"]["gaussplug"] == gaussplug.__version__ and m["versions"]["jax"]
    assert m["fine_tune"]["steps_run"] == 30
    assert all(math.isfinite(v) for v in _finite_numbers(m["nll"]))
    return m


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit on the built-in data with the default spec, shared by the sample/score tests.

    Returns ``(dir, data, printed)``: ``dir/out`` holds the outputs, ``dir/data.npy`` the data.
    """
    from gaussplug._datasets import two_moons

    tmp = tmp_path_factory.mktemp("fitted")
    x = two_moons().x
    np.save(tmp / "data.npy", x)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["fit", "--out", str(tmp / "out"), *FAST])
    assert code == 0
    return tmp, x, printed.getvalue()


# -- fit ------------------------------------------------------------------------------
def test_fit_builtin_data_default_spec(fitted):
    tmp, x, printed = fitted
    m = _check_outputs(tmp / "out", n_train=2700, n_val=300, dim=2)
    assert m["dataset"]["source"] == "builtin:two_moons" and m["dataset"]["n_rows"] == 3000
    assert m["spec"]["layers"][1:] == gaussplug.specs.gaussianization_flow(2)["layers"]
    assert len(gaussplug.load(tmp / "out" / "model.npz").metadata["warm_start"]["layer"]) == 17
    # The stored standardisation matches the data's scale: log_std_sum = sum(log std).
    assert m["nll"]["log_std_sum"] == pytest.approx(np.log(x.std(0)).sum(), abs=0.02)
    assert "two moons" in printed and "model.npz" in printed and "greedy warm start" in printed


def test_fit_npy_and_spec_json(tmp_path):
    np.save(tmp_path / "d.npy", _moons())
    # The largest seed: the report's sample key (seed + 1) wraps instead of leaving [0, 2**32).
    code, out = _fit(tmp_path, tmp_path / "d.npy", "--spec", _spec_file(tmp_path), "--seed", str(2**32 - 1))
    assert code == 0
    m = _check_outputs(out, n_train=216, n_val=24, dim=2)
    assert m["dataset"]["format"] == "npy" and m["dataset"]["n_rows"] == 240 and m["settings"]["seed"] == 2**32 - 1
    assert m["spec"]["layers"][1:] == SMALL_SPEC["layers"]
    names = gaussplug.load(out / "model.npz").layer_names
    assert names == ("0_standardize", "1_householder", "2_householder")
    # Data far from unit scale: the model keeps the standardisation (data units).
    assert m["nll"]["log_std_sum"] == pytest.approx(np.log(_moons().std(0)).sum(), abs=0.05)


def test_fit_npz_single_array_and_key(tmp_path):
    x = _moons()
    np.savez(tmp_path / "one.npz", data=x)
    np.savez(tmp_path / "two.npz", a=x, b=x[:, :1])
    code, out = _fit(tmp_path, tmp_path / "one.npz", "--spec", _spec_file(tmp_path))
    assert code == 0
    assert _check_outputs(out, n_train=216, n_val=24, dim=2)["dataset"]["key"] == "data"
    code, out = _fit(tmp_path, tmp_path / "two.npz", "--key", "a", "--spec", _spec_file(tmp_path), out="o2")
    assert code == 0
    assert _check_outputs(out, n_train=216, n_val=24, dim=2)["dataset"]["key"] == "a"


@pytest.mark.parametrize("header", [True, False])
def test_fit_csv(tmp_path, header):
    x = _moons(120)
    np.savetxt(tmp_path / "d.csv", x, delimiter=",", header="lon,lat" if header else "", comments="")
    code, out = _fit(tmp_path, tmp_path / "d.csv", "--spec", _spec_file(tmp_path))
    assert code == 0
    m = _check_outputs(out, n_train=108, n_val=12, dim=2)
    assert m["dataset"].get("columns") == (["lon", "lat"] if header else None)
    # The model keeps the header, in order, so score and inspect can check data against it; no header, no entry.
    metadata = gaussplug.load(out / "model.npz").metadata
    assert metadata.get("columns") == (["lon", "lat"] if header else None)
    assert header or "columns" not in metadata


def _spec_file(tmp_path, spec=None, name="spec.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec or SMALL_SPEC))
    return path


def test_fit_no_warm_start(tmp_path, capsys):
    np.save(tmp_path / "d.npy", _moons())
    code, out = _fit(tmp_path, tmp_path / "d.npy", "--spec", _spec_file(tmp_path), "--no-warm-start")
    assert code == 0
    m = _check_outputs(out, n_train=216, n_val=24, dim=2, stage="untrained")
    assert m["settings"]["lr"] == 3e-3 and m["timings"]["warm_start_s"] >= 0
    assert "warm_start" not in gaussplug.load(out / "model.npz").metadata
    printed = capsys.readouterr().out
    assert "time: standardisation fit " in printed and "warm start" not in printed


def test_fit_says_it_replaces_an_earlier_run_and_names_an_out_folder_it_cannot_make(tmp_path, capsys, monkeypatch):
    import errno

    import gaussplug._cli_fit as cli_fit

    np.save(tmp_path / "d.npy", _moons())
    argv = ["fit", str(tmp_path / "d.npy"), "--spec", str(_spec_file(tmp_path)), "--steps", "0", "--validation", "0",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    assert "earlier run" not in capsys.readouterr().err
    assert main(argv) == 0
    assert f"replacing model.npz, metrics.json, report.png of an earlier run in {tmp_path / 'out'}" in (
        capsys.readouterr().err)

    def refuse(path, exist_ok=False):  # as /proc or /sys refuse a folder, even to root
        raise OSError(errno.EPERM, "Operation not permitted", path)

    monkeypatch.setattr(cli_fit.os, "makedirs", refuse)
    err = _error(capsys, "fit", tmp_path / "d.npy", "--spec", _spec_file(tmp_path), "--out", tmp_path / "new",
                 "--quiet")
    assert f"--out: cannot create '{tmp_path / 'new'}': Operation not permitted." in err


def test_fit_zero_steps_keeps_the_warm_start(tmp_path, capsys):
    np.save(tmp_path / "d.npy", _moons())
    code = main(["fit", str(tmp_path / "d.npy"), "--spec", str(_spec_file(tmp_path)), "--steps", "0",
                 "--validation", "0", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["fine_tune"] is None and m["nll"]["final"] == m["nll"]["initial"]
    assert (m["n_train"], m["n_val"], m["nll"]["final"]["data"]["val"]) == (240, 0, None)
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == PNG_MAGIC
    assert "after fine-tuning" not in capsys.readouterr().out


def test_fit_default_model_flags_reach_the_spec(tmp_path):
    np.save(tmp_path / "d.npy", _moons())
    code, out = _fit(tmp_path, tmp_path / "d.npy", "--layers", "2", "--components", "3", "--tail-weight", "0.01",
                     "--rotation", "ica")
    assert code == 0
    m = _check_outputs(out, n_train=216, n_val=24, dim=2)
    expected = gaussplug.specs.gaussianization_flow(2, n_layers=2, n_components=3, tail_weight=0.01, rotation="ica")
    assert m["user_spec"] == expected
    assert m["settings"]["default_model"] == {"layers": 2, "components": 3, "tail_weight": 0.01, "rotation": "ica"}
    assert m["depth_selection"] is None
    flow = gaussplug.load(out / "model.npz")
    assert len(flow.layer_names) == 5 and flow.layers[2].options["tail_weight"] == 0.01


@pytest.mark.parametrize("validation, criterion", [("0.1", "validation"), ("0", "information_reduction")])
def test_fit_layers_auto_chooses_the_depth_and_records_it(tmp_path, capsys, validation, criterion):
    np.save(tmp_path / "d.npy", _moons(400))
    code = main(["fit", str(tmp_path / "d.npy"), "--layers", "auto", "--components", "2", "--steps", "0",
                 "--validation", validation, "--out", str(tmp_path / "out")])
    assert code == 0
    captured = capsys.readouterr()
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    depth = m["depth_selection"]
    assert depth["criterion"] == criterion and 1 <= depth["chosen"] <= depth["n_evaluated"]
    assert m["user_spec"] == gaussplug.specs.gaussianization_flow(2, n_layers=depth["chosen"], n_components=2)
    # the options used, by flag: those given, and the defaults (they were recorded as null)
    assert m["settings"]["default_model"] == {"layers": "auto", "components": 2, "tail_weight": 0.0, "rotation": "pca"}
    assert len(gaussplug.load(tmp_path / "out" / "model.npz").layer_names) == 1 + 2 * depth["chosen"]
    assert f"depth: --layers auto chose {depth['chosen']} block" in captured.out
    assert "choosing the depth" in captured.err
    # metrics.json itself is a spec: its user_spec refits the same model (its spec would nest two standardisations)
    code = main(["fit", str(tmp_path / "d.npy"), "--spec", str(tmp_path / "out" / "metrics.json"), "--steps", "0",
                 "--out", str(tmp_path / "again"), "--quiet"])
    assert code == 0 and "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["user_spec"] == m["user_spec"]


def test_layers_auto_says_each_data_warning_once_and_when_no_block_helps(tmp_path, capsys):
    from sklearn.datasets import load_wine

    rows = np.random.default_rng(0).permutation(178)[:50]
    x = load_wine().data[rows]
    x[:, 2] = np.where(np.arange(50) < 20, 0.0, x[:, 2])  # a point mass: said once, in the file's terms
    np.savetxt(tmp_path / "w.csv", x, delimiter=",", header=",".join(f"c{i}" for i in range(13)), comments="")
    code = main(["fit", str(tmp_path / "w.csv"), "--layers", "auto", "--tail-weight", "0.01", "--steps", "0",
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("single value") == 1 and "column 3 ('c2')" in err and "fit_rbig" not in err
    assert err.count("warm_start: fitting on") <= 1
    depth = json.loads((tmp_path / "out" / "metrics.json").read_text())["depth_selection"]
    val = depth["validation_log_likelihood"]
    assert depth["chosen"] == 1 and val[0] > val[1]  # standardisation alone scores best; a model has >= 1 block
    assert ("--layers auto: no number of blocks scored better on the validation rows than the standardisation "
            "alone") in err
    assert "try --components 1 or 2" in err
    if "overfits" in err:  # --layers auto was used: the advice is fewer components, not --layers auto again
        assert "Try fewer --components (1 or 2)" in err and "Try a smaller model (--layers auto" not in err


def test_a_spec_starting_with_standardize_warns_that_fit_adds_one(tmp_path, capsys):
    np.save(tmp_path / "d.npy", _moons())
    spec = {"dim": 2, "layers": [{"family": "standardize", "trainable": False}, *SMALL_SPEC["layers"]]}
    code, _ = _fit(tmp_path, tmp_path / "d.npy", "--spec", _spec_file(tmp_path, spec))
    assert code == 0
    err = capsys.readouterr().err
    assert "starts with a standardize layer, but gaussplug fit puts its own in front" in err
    assert "metrics.json's \"user_spec\"" in err


def test_default_model_flag_errors(files, capsys):
    err = _error(capsys, "fit", files / "ok.npy", "--spec", _spec_file(files), "--layers", "3", "--tail-weight", "0.1")
    assert "--layers and --tail-weight set the default model; with --spec, set them in the spec file instead" in err
    err = _error(capsys, "fit", files / "ok.npy", "--spec", _spec_file(files), "--layers", "3", "--components", "2",
                 "--rotation", "ica")
    assert "--layers, --components and --rotation set the default model" in err
    err = _error(capsys, "fit", files / "ok.npy", "--spec", _spec_file(files), "--components", "3")
    assert "--components sets the default model; with --spec, set it in the spec file instead" in err
    err = _error(capsys, "fit", files / "ok.npy", "--layers", "auto", "--no-warm-start")
    assert "--layers auto chooses the depth with the greedy fit; it cannot be combined with --no-warm-start" in err
    for flag, value, needle in [("--layers", "0", "expected a positive integer or 'auto'; got '0'"),
                                ("--layers", "deep", "expected a positive integer or 'auto'; got 'deep'"),
                                ("--components", "0", "expected an integer >= 1"),
                                ("--tail-weight", "1", "expected a weight in [0, 1); got 1"),
                                ("--tail-weight", "nan", "expected a weight in [0, 1); got nan"),
                                ("--rotation", "svd", "invalid choice: 'svd'")]:
        assert main(["fit", str(files / "ok.npy"), flag, value]) == 2
        assert needle in capsys.readouterr().err
    assert not (files / "o").exists()


def test_fit_five_dims_writes_pairs_report(tmp_path):
    x = np.random.default_rng(0).standard_t(5, size=(150, 5)) * np.arange(1, 6)
    np.save(tmp_path / "d.npy", x)
    spec = {"dim": 5, "layers": [{"family": "householder"}]}
    code, out = _fit(tmp_path, tmp_path / "d.npy", "--spec", _spec_file(tmp_path, spec))
    assert code == 0
    _check_outputs(out, n_train=135, n_val=15, dim=5)


# -- sample / score -------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["npy", "csv"])
def test_sample_round_trip(fitted, tmp_path, ext, capsys):
    tmp = fitted[0]
    path = tmp_path / f"s.{ext}"
    assert main(["sample", str(tmp / "out" / "model.npz"), "-n", "50", "-o", str(path), "--seed", "3"]) == 0
    samples = np.load(path) if ext == "npy" else np.loadtxt(path, delimiter=",", skiprows=1)
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    if ext == "csv":  # a model fit without a header (the built-in data) has no column names
        assert path.read_text().splitlines()[0] == "x0,x1"
    assert "50 samples" in capsys.readouterr().out


def test_sample_is_flow_sample_with_the_same_seed(fitted, tmp_path, capsys):
    model = fitted[0] / "out" / "model.npz"
    path = tmp_path / "s.npy"
    assert main(["sample", str(model), "-n", "70000", "-o", str(path), "--seed", "5"]) == 0  # two batches
    expected = np.asarray(gaussplug.load(model).sample(5, 70000))
    np.testing.assert_allclose(np.load(path), expected, rtol=1e-5, atol=1e-6)


def test_score_matches_metrics_in_data_units(fitted, capsys):
    tmp, x, _ = fitted
    m = json.loads((tmp / "out" / "metrics.json").read_text())
    assert main(["score", str(tmp / "out" / "model.npz"), str(tmp / "data.npy")]) == 0
    printed = capsys.readouterr().out
    mean = float(printed.split("mean log-likelihood:")[1].split()[0])
    final = m["nll"]["final"]["data"]
    expected = -(m["n_train"] * final["train"] + m["n_val"] * final["val"]) / len(x)
    assert mean == pytest.approx(expected, abs=2e-3)
    assert "per dimension" in printed and "median" in printed


def test_score_writes_per_row(fitted, tmp_path, capsys):
    tmp, x, _ = fitted
    model = gaussplug.load(tmp / "out" / "model.npz")
    rows = []
    for ext in ("npy", "csv"):
        out = tmp_path / f"lp.{ext}"
        assert main(["score", str(tmp / "out" / "model.npz"), str(tmp / "data.npy"), "-o", str(out)]) == 0
        rows.append(np.load(out) if ext == "npy" else np.loadtxt(out, delimiter=",", skiprows=1))
        printed = capsys.readouterr().out  # the summary is printed with -o as well
        assert "mean log-likelihood:" in printed and "median" in printed and f"to {out}" in printed
    assert rows[0].shape == (len(x),)
    np.testing.assert_allclose(rows[1], rows[0], rtol=1e-6, atol=1e-6)
    # 4096 rows: the batch shape the CLI has already compiled for this model.
    np.testing.assert_allclose(rows[0][:4096], np.asarray(model.log_prob(np.resize(x, (4096, 2))))[: len(x)],
                               rtol=1e-5, atol=1e-4)


# -- plugins --------------------------------------------------------------------------
def test_plugins_table_and_json(capsys):
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("FAMILY") and "householder" in table and "reflectors=None" in table
    header, householder = table.splitlines()[0].split(), next(r for r in table.splitlines() if r.startswith("house"))
    assert header[:4] == ["FAMILY", "PLUGIN", "VERSION", "DISTRIBUTION"] and householder.split()[3] == "gaussplug"
    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(gaussplug.families())
    assert {"plugin", "version", "distribution", "options", "doc"} <= set(rows["householder"])
    assert rows["householder"]["distribution"] == "gaussplug"


def test_console_script_plugins():
    script = Path(sys.executable).with_name("gaussplug")
    env = {**os.environ, "GAUSSPLUG_LOAD_PLUGINS": ""}
    done = subprocess.run([str(script), "plugins", "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "standardize" in {r["name"] for r in json.loads(done.stdout)}


# -- errors ---------------------------------------------------------------------------
def _error(capsys, *argv, code=2):
    """Runs the CLI, checks it exits with ``code`` and one line on stderr (no traceback); returns stderr."""
    got = main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


@pytest.fixture
def files(tmp_path):
    x = _moons(40)
    np.save(tmp_path / "ok.npy", x)
    np.save(tmp_path / "d3.npy", np.c_[x, x[:, :1]])
    np.save(tmp_path / "few.npy", x[:5])
    np.save(tmp_path / "flat.npy", x[:, 0])
    bad = x.copy()
    bad[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    (tmp_path / "bad.csv").write_text("a,b\n1.0,2.0\n3.0,oops\n")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    (tmp_path / "data.txt").write_text("1 2\n")
    (tmp_path / "semi.csv").write_text("1.5;2.5\n3.0;4.0\n")
    (tmp_path / "tab.csv").write_text("x\ty\n1.5\t2.5\n")
    whole = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[: len(whole) - 100])  # truncated
    np.savez(tmp_path / "many.npz", **{f"a{i}": x for i in range(50)})
    (tmp_path / "long.csv").write_text("a,b\n1.0,2.0\n3.0," + "z" * 100_000 + "\n")
    os.mkfifo(tmp_path / "pipe.npy")
    (tmp_path / "text.npy").write_text("hello\n")  # np.load takes any file it does not know for a pickle
    np.savez(tmp_path / "empty.npz")
    (tmp_path / "void.npy").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "extra", "needle"),
    [
        ("missing.npy", [], "does not exist"),
        ("data.txt", [], "unsupported data file extension '.txt'"),
        ("few.npy", [], "at least 10 rows; got 5"),
        ("flat.npy", [], "got shape (40,)"),
        ("nan.npy", [], "NaN or inf (first: row index 7, column index 1, value nan)"),
        ("two.npz", [], "2 arrays (a, b); pick one with --key"),
        ("two.npz", ["--key", "c"], "no array named 'c'"),
        ("bad.csv", [], "bad.csv: line 3, column 2 ('b') holds 'oops', which is not a finite number"),
        ("ragged.csv", [], "ragged.csv: line 2 has 1 column; expected 2 (as on line 1)"),
        ("ok.npy", ["--key", "a"], "--key picks an array inside an .npz file; this is a .npy file"),
        ("ok.npy", ["--patience", "3", "--validation", "0"], "--patience needs a validation set"),
        ("ok.npy", ["--validation", "0.9"], "--validation 0.9 holds out 36 of 40 rows, leaving 4 to train on; "
                                            "expected at least 10 training rows"),
        ("semi.csv", [], "semi.csv: line 1 is one cell, '1.5;2.5'; the file looks ';'-separated, but data files "
                         "must be comma-separated"),
        ("tab.csv", [], "tab.csv: line 1 is one cell, 'x\\ty'; the file looks tab-separated"),
        # These used to blame pickle, list every name, echo the whole cell, and wait for a writer, forever.
        ("cut.npy", [], "cut.npy: not a readable .npy file, truncated or damaged ("),  # numpy 2.0: "cannot reshape"
        ("many.npz", [], "the archive holds 50 arrays (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, "
                         "a13, a14, a15, a16, a17, a18, a19, ... (30 more)); pick one with --key"),
        ("long.csv", [], "long.csv: line 3, column 2 ('b') holds 'zzzz"),
        ("long.csv", [], "zzz... (100,002 characters), which is not a finite number"),
        ("pipe.npy", [], "pipe.npy: expected a data file; got a named pipe (FIFO)."),
        ("text.npy", [], "text.npy: not a .npy array file: it does not begin as one (first bytes b'hello\\n'); "
                         "expected a file written by numpy.save."),
        ("empty.npz", [], "empty.npz: the archive holds no arrays; expected one array of data."),
        ("void.npy", [], "void.npy: the file is empty."),
    ],
)
def test_fit_data_errors(files, capsys, name, extra, needle):
    err = _error(capsys, "fit", files / name, "--out", files / "o", "--quiet", *extra)
    assert needle in err and len(err) < 1000


def test_fit_spec_errors(files, capsys, monkeypatch):
    monkeypatch.chdir(files)  # a failed fit must not leave ./gaussplug-out behind
    spec3 = _spec_file(files, {**SMALL_SPEC, "dim": 3}, "s3.json")
    err = _error(capsys, "fit", files / "ok.npy", "--spec", spec3)
    assert "is for dim 3, but the data has 2 columns" in err
    nodim = _spec_file(files, {"layers": SMALL_SPEC["layers"]}, "nodim.json")
    assert "has no 'dim'" in _error(capsys, "fit", files / "ok.npy", "--spec", nodim)
    unknown = _spec_file(files, {"dim": 2, "layers": [{"family": "nope"}]}, "unknown.json")
    assert "unknown family 'nope'" in _error(capsys, "fit", files / "ok.npy", "--spec", unknown, "--quiet")
    assert "does not exist" in _error(capsys, "fit", files / "ok.npy", "--spec", files / "missing.json")
    assert not (files / "gaussplug-out").exists()


def test_usage_errors_exit_2(capsys):
    assert main(["fit", "--steps", "-1"]) == 2
    assert "expected an integer >= 0" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_sample_and_score_errors(fitted, files, capsys):
    model = fitted[0] / "out" / "model.npz"
    assert "expected .npy or .csv" in _error(capsys, "sample", model, "-n", "5", "-o", files / "s.txt")
    assert "does not exist" in _error(capsys, "sample", files / "none.npz", "-n", "5", "-o", files / "s.npy")
    assert "3 columns but the model is 2-dimensional" in _error(capsys, "score", model, files / "d3.npy")
    np.save(files / "d1.npy", np.ones((5, 1)))
    assert "the data has 1 column but the model is 2-dimensional" in _error(capsys, "score", model, files / "d1.npy")
    assert "not a gaussplug model" in _error(capsys, "score", files / "two.npz", files / "ok.npy")
    # more samples than one array holds: an input error (exit 2), not an abort inside XLA
    assert ("-n 2000000000: n * dim = 2,000,000,000 * 2 = 4,000,000,000 values, more than one array holds "
            "(2,147,483,647); draw them in several calls with different --seed values.") in _error(
        capsys, "sample", model, "-n", "2000000000", "-o", files / "s.npy")
    assert not (files / "s.npy").exists()
    for argv in (["sample", model, "-n", "5", "-o", files / "s.npy"], ["fit", "--out", files / "o"]):
        for seed in ("-1", "4294967296", "99999999999999999999"):  # JAX keeps 32 bits of a seed
            assert main([*map(str, argv), "--seed", seed]) == 2
            err = capsys.readouterr().err
            assert f"argument --seed: expected a seed in [0, 2**32); got {seed}" in err and "Traceback" not in err


def test_score_model_with_missing_plugin(files, capsys):
    import distrax
    import haiku as hk
    import jax.numpy as jnp

    def make(dim):
        b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

    class TempPlugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("cli_test_shift", make))

    name = gaussplug.register(TempPlugin(), name="cli_test_plugin")
    try:
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "cli_test_shift"}]})
        gaussplug.save(flow, files / "needs_plugin.npz")
    finally:
        gaussplug.unregister(name)
    err = _error(capsys, "score", files / "needs_plugin.npz", files / "ok.npy", code=3)
    assert "cli_test_shift" in err and "cli_test_plugin" in err and err.rstrip().endswith("[PluginError]")


def test_inspect_command(tmp_path, capsys):
    import gaussplug
    from gaussplug.cli import main as cli_main

    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, size=(300, 2))
    flow = gaussplug.fit_rbig(x, n_layers=2, n_components=3)
    model = gaussplug.save(flow, tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "insp"
    assert cli_main(["inspect", str(model), str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1_mixture_cdf" in printed and "KS_max" in printed
    assert (out / "inspect.json").exists() and (out / "inspect_curves.png").exists()
    assert cli_main(["inspect", str(tmp_path / "missing.npz"), str(tmp_path / "x.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_spec_errors_name_the_users_layer_paths(files, capsys):
    def err_for(spec):
        path = _spec_file(files, spec, "user.json")
        return _error(capsys, "fit", files / "ok.npy", "--spec", path, "--out", files / "o", "--quiet")

    bad_option = {"dim": 2, "layers": [{"family": "householder", "reflektors": 1}]}
    assert "user.json': layers[0] (householder): unknown option 'reflektors'" in err_for(bad_option)
    nested = {"dim": 2, "layers": [{"family": "householder"},
                                   {"repeat": 2, "layers": [{"family": "mixture_cdf", "components": "x"}]}]}
    assert "layers[1].layers[0] (mixture_cdf):" in err_for(nested)
    dim_text = {"dim": "2", "layers": [{"family": "householder"}]}
    assert "'dim' must be a positive integer; got '2'" in err_for(dim_text)
    assert not (files / "o").exists()


def test_fit_non_finite_nll_warns_and_exits_1(tmp_path, capsys, monkeypatch):
    from gaussplug import _cli_fit

    real = _cli_fit._nll_stage

    def nan_after_fine_tune(*args):
        stage = real(*args)
        if stage["stage"] == "fine_tune":
            stage["data"]["val"] = float("nan")
        return stage

    monkeypatch.setattr(_cli_fit, "_nll_stage", nan_after_fine_tune)
    np.save(tmp_path / "d.npy", _moons())
    code, out = _fit(tmp_path, tmp_path / "d.npy", "--spec", _spec_file(tmp_path))
    assert code == 1
    err = capsys.readouterr().err
    assert "warning: the val NLL after stage 'fine_tune' is nan, not a finite number" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    m = json.loads((out / "metrics.json").read_text())  # the outputs are still written, for inspection
    assert m["nll"]["final"]["data"]["val"] is None and (out / "model.npz").is_file()


@pytest.mark.parametrize("val", [3.0, 1e5])
def test_fit_warns_when_validation_is_far_above_training(tmp_path, capsys, monkeypatch, val):
    from gaussplug import _cli_fit

    real = _cli_fit._nll_stage

    def gap(*args):
        stage = real(*args)
        stage["data"].update(train=1.0, val=val)  # 2-D: a gap over 2 nats per row is flagged
        return stage

    monkeypatch.setattr(_cli_fit, "_nll_stage", gap)
    np.save(tmp_path / "d.npy", _moons())
    code, _ = _fit(tmp_path, tmp_path / "d.npy", "--spec", _spec_file(tmp_path))
    err = capsys.readouterr().err
    assert code == 0  # a warning, not a failure
    flagged = "warning: the validation NLL (1e+05) is 1e+05 nats per row above the training NLL (1)" in err
    assert flagged == (val == 1e5) and ("overfits its 216 training rows" in err) == (val == 1e5)


def test_fit_on_a_tiny_subsample_warns_in_the_command_lines_terms(tmp_path, capsys):
    # --max-fit-samples 20 of 216 training rows: the layers fitted on the subsample lower the likelihood of the
    # rest. One warning names the layers and the flag (not the API's max_fit_samples / tail_weight), and the
    # overfit warning says that the greedy fits saw 20 of the training rows.
    np.save(tmp_path / "d.npy", _moons())
    code, out = _fit(tmp_path, tmp_path / "d.npy", "--layers", "3", "--components", "4", "--max-fit-samples", "20")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0, err
    assert err.count("lowered the mean log-likelihood") == 1
    assert "fitted layers lowered the mean log-likelihood of the rows" in err
    assert "subsample of 20 of the 216 rows (--max-fit-samples)" in err
    assert "a larger --max-fit-samples, or leave it out), or bound the tails with --tail-weight 0.01." in err
    assert "max_fit_samples" not in err and "tail_weight" not in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["max_fit_samples"] == 20
    from gaussplug._cli_fit import _warn_overfit

    for fit_rows, said in ((20, True), (216, False), (None, False)):
        _warn_overfit({"data": {"train": 1.0, "val": 1e5}}, 2, 216, fit_rows=fit_rows)
        err = " ".join(capsys.readouterr().err.split())
        assert "overfits its 216 training rows" in err
        assert ("overfits its 216 training rows (the greedy fits saw 20 of them: --max-fit-samples; fit on more). "
                in err) is said


def test_fit_keeps_model_and_metrics_when_the_report_fails(tmp_path, capsys, monkeypatch):
    import gaussplug._report as report

    def broken(path, **kw):
        raise ValueError("Axis limits cannot be NaN or Inf")

    monkeypatch.setattr(report, "write_report", broken)
    np.save(tmp_path / "d.npy", _moons())
    out = tmp_path / "out"
    code = main(["fit", str(tmp_path / "d.npy"), "--spec", str(_spec_file(tmp_path)), "--steps", "5",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err  # an unexpected error inside a library: exit 70 with its traceback
    assert code == 70 and "Traceback" in err and "in broken" in err
    assert "gaussplug fit: internal error: ValueError: Axis limits cannot be NaN or Inf (unexpected" in err
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "model.npz").is_file() and m["timings"]["report_s"] >= 0


def test_score_non_finite_rows_are_counted_and_left_out(fitted, tmp_path, capsys, monkeypatch):
    import gaussplug._report as report

    tmp, x, _ = fitted
    lp = np.full(len(x), -2.0)
    lp[[4, 9]] = -np.inf
    monkeypatch.setattr(report, "log_prob_in_batches", lambda flow, data: lp.copy())
    argv = ["score", str(tmp / "out" / "model.npz"), str(tmp / "data.npy")]
    assert main(argv) == 0  # zero density is a legitimate answer
    out = capsys.readouterr()
    assert "rows have log-likelihood -inf (zero density under the model; first: row index 4)" in out.err
    assert "mean log-likelihood: -2.0000 nats per row" in out.out and "over the 2998 rows" in out.out
    assert "median -2.000" in out.out
    lp[7] = np.nan
    assert main([*argv, "-o", str(tmp_path / "lp.npy")]) == 1
    out = capsys.readouterr()
    assert "warning: 1 of 3000 rows have log-likelihood NaN" in out.err and "first: row index 7" in out.err
    assert "over the 2997 rows" in out.out and "nan" not in out.out
    saved = np.load(tmp_path / "lp.npy")  # -o keeps every row's value
    assert np.isnan(saved[7]) and np.isneginf(saved[4]) and saved[0] == -2.0


def test_values_beyond_float32_range(fitted, files, capsys):
    from gaussplug._data import default_dtype

    if default_dtype() != np.float32:
        pytest.skip("float32 range applies only without JAX_ENABLE_X64")
    x = _moons(40)
    x[3, 1] = -2e39
    np.save(files / "huge.npy", x)
    needle = ("huge.npy: the value largest in magnitude, -2e+39 (row index 3, column index 1), is beyond the "
              "float32 range (max 3.40282e+38)")
    err = _error(capsys, "fit", files / "huge.npy", "--out", files / "o", "--quiet")
    assert needle in err and "JAX_ENABLE_X64=1" in err
    assert needle in _error(capsys, "score", fitted[0] / "out" / "model.npz", files / "huge.npy")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda x: np.c_[x, np.full(len(x), 5.0)], "constant column: column index 2 = 5."),
        (lambda x: x + 1e30, "constant columns: column index 0 = 1e+30, column index 1 = 1e+30."),
        (lambda x: np.c_[x > x.mean(0), np.ones(len(x), bool)], "constant column: column index 2 = 1."),
    ],
    ids=["value", "float64-rounding", "bool"],
)
def test_fit_rejects_constant_columns(files, capsys, make, needle):
    np.save(files / "c.npy", make(_moons(40)))
    err = _error(capsys, "fit", files / "c.npy", "--out", files / "o", "--quiet")
    assert f"c.npy: {needle}" in err and "degenerate; drop the column" in err


def test_fit_constant_column_names_csv_header(files, capsys):
    (files / "c.csv").write_text("a,b\n" + "".join(f"{i},7\n" for i in range(12)))
    assert "constant column: column 2 ('b') = 7." in _error(capsys, "fit", files / "c.csv", "--out", files / "o")


def test_python_dash_m_gaussplug_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "gaussplug", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"gaussplug {gaussplug.__version__}"


def test_every_gaussplug_warning_prints_as_one_cli_line(tmp_path, capsys):
    """A float64 model in a float32 process: the rounding warning is a gaussplug line, not a raw UserWarning."""
    import jax

    with jax.enable_x64(True):
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}]}, key=5)
        model = gaussplug.save(flow, tmp_path / "m.npz")
    with jax.enable_x64(False):
        assert main(["sample", str(model), "-n", "3", "-o", str(tmp_path / "s.npy")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("gaussplug sample: warning: ") and err.rstrip().endswith("[DataWarning]"), err
    assert "UserWarning" not in err and err.count("\n") == 1


def test_output_files_get_exactly_the_given_name(fitted, tmp_path):
    tmp = fitted[0]
    model = str(tmp / "out" / "model.npz")
    assert main(["sample", model, "-n", "5", "-o", str(tmp_path / "s.NPY")]) == 0
    assert main(["score", model, str(tmp / "data.npy"), "-o", str(tmp_path / "lp.NPY")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["lp.NPY", "s.NPY"]
    assert np.load(tmp_path / "s.NPY").shape == (5, 2) and np.load(tmp_path / "lp.NPY").shape == (3000,)


def test_output_paths_checked_before_any_work(fitted, files, capsys, monkeypatch):
    from gaussplug import _cli_model

    monkeypatch.setattr(_cli_model, "_load_model", lambda path: pytest.fail("loaded the model before checking -o"))
    model = fitted[0] / "out" / "model.npz"
    err = _error(capsys, "sample", model, "-n", "5", "-o", files / "nodir" / "s.npy")
    assert "s.npy: the output directory" in err and "nodir' does not exist" in err
    assert "nodir' does not exist" in _error(capsys, "score", model, files / "ok.npy", "-o", files / "nodir" / "l.csv")
    (files / "dir.npy").mkdir()
    assert "got an existing directory" in _error(capsys, "sample", model, "-n", "5", "-o", files / "dir.npy")
    err = _error(capsys, "score", model, files / "ok.npy", "-o", model / "l.npy")
    assert f"{model / 'l.npy'}: {str(model)!r} is a file, not a directory." in err
    victim = files / "victim.csv"
    np.savetxt(victim, _moons(20), delimiter=",")
    before = victim.read_bytes()
    err = _error(capsys, "score", model, victim, "-o", victim)
    assert f"{victim}: this is the DATA file being read; write the output to another path." in err
    (files / "link.csv").symlink_to(victim)
    assert "this is the DATA file being read" in _error(capsys, "score", model, victim, "-o", files / "link.csv")
    assert victim.read_bytes() == before


def test_fit_out_must_be_a_directory(files, capsys, monkeypatch):
    from gaussplug import _datasets

    monkeypatch.setattr(_datasets, "load_data", lambda *a, **k: pytest.fail("read the data before checking --out"))
    err = _error(capsys, "fit", files / "ok.npy", "--out", files / "ok.npy", "--quiet")
    assert f"--out: expected a directory; {str(files / 'ok.npy')!r} is an existing file." in err
    err = _error(capsys, "fit", files / "ok.npy", "--out", files / "ok.npy" / "sub", "--quiet")
    assert "is a file, not a directory" in err and "ok.npy" in err
    assert "--out: expected a directory path; got ''." in _error(capsys, "fit", "--out", "", "--quiet")


def test_summary_keeps_columns_apart_for_large_values():
    import re

    from gaussplug._cli_fit import _summary

    def stage(name, v):
        return {"stage": name, "data": {"train": v, "val": 2.5}, "standardized": {"train": v - 1, "val": 1.5}}

    m = {"dataset": {"name": "d"}, "n_train": 9, "n_val": 1, "dim": 2, "settings": {"warm_start": True},
         "nll": {"initial": stage("warm_start", -66.91483432420737), "final": stage("fine_tune", -7.02e13)},
         "timings": {"warm_start_s": 0.5, "fine_tune_wall_s": 1.0, "compile_s": 0.2, "steps_per_second": 100.0,
                     "total_s": 2.0},
         "fine_tune": {"steps_run": 30, "stopped": "completed", "best_step": None}}
    lines = _summary(m, {"model.npz": "a", "metrics.json": "b", "report.png": "c"}).splitlines()
    table = [re.split(r"\s{2,}", line.strip()) for line in lines[1:4]]
    assert table[1] == ["greedy warm start", "-66.9148", "2.5000", "-67.9148", "1.5000"]
    assert table[2] == ["after fine-tuning", "-7.0200e+13", "2.5000", "-7.0200e+13", "1.5000"]
    assert len(table[0]) == 5 and "time: warm start 0.5 s" in lines[-2]
    assert not any("still falling" in line for line in lines)
    for best, hint in ((30, True), (20, False)):
        m["fine_tune"]["best_step"] = best
        text = _summary(m, {"model.npz": "a", "metrics.json": "b", "report.png": "c"})
        assert ("validation NLL was still falling at the last step: more --steps may fit better" in text) is hint
    for best, hint in ((0, True), (20, False), (None, False)):
        m["fine_tune"]["best_step"] = best
        text = _summary(m, {"model.npz": "a", "metrics.json": "b", "report.png": "c"})
        assert ("fine-tuning never improved on the greedy warm start's validation NLL, so the model is the greedy "
                "warm start" in text) is hint


@pytest.mark.parametrize(
    "extra, expected",
    [([], 5), (["--patience", "2"], 2), (["--patience", "0"], None), (["--validation", "0"], None),
     (["--validation", "0", "--patience", "0"], None)],
)
def test_fit_patience_defaults_to_5_with_validation(tmp_path, monkeypatch, extra, expected):
    """By default fine-tuning stops after 5 validation checks without improvement; 0 never stops early."""
    seen, real = [], gaussplug.fine_tune

    def spy(*args, **kwargs):
        seen.append(kwargs["patience"])
        return real(*args, **kwargs)

    monkeypatch.setattr(gaussplug, "fine_tune", spy)
    np.save(tmp_path / "d.npy", _moons())
    code = main(["fit", str(tmp_path / "d.npy"), "--spec", str(_spec_file(tmp_path)), "--steps", "3",
                 "--out", str(tmp_path / "out"), "--quiet", *extra])
    assert code == 0 and seen == [expected]
    settings = json.loads((tmp_path / "out" / "metrics.json").read_text())["settings"]
    assert settings["patience"] == (expected or 0)


def test_fit_training_warnings_advise_its_flags(tmp_path, capsys):
    np.save(tmp_path / "d.npy", _moons())
    code = main(["fit", str(tmp_path / "d.npy"), "--layers", "2", "--lr", "1000", "--steps", "60",
                 "--batch-size", "64", "--out", str(tmp_path / "out")])
    assert code == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "gaussplug fit: warning: fine_tune" in err and "Try a lower --lr. [TrainingWarning]" in err
    assert "peak_lr" not in err and "clip_norm" not in err
    assert err.count("[TrainingWarning]") == 1  # the divergence is said once, by the stop's warning
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["fine_tune"]["stopped"] == "non_finite"
    assert "stopped at a non-finite value (see the warning above)" in captured.out
    if m["fine_tune"]["best_step"] == 0:  # the starting params are returned: not "may fit much worse" than them
        assert "no step improved on the starting params, which are returned" in err
        assert "may fit much worse" not in err


def test_fit_leaves_the_never_improved_warning_to_its_summary(tmp_path, monkeypatch, capsys):
    """fine_tune's 'no evaluation improved' warning speaks the API's terms; fit's summary line says it instead."""
    import warnings

    real = gaussplug.fine_tune

    def spy(*args, **kwargs):
        warnings.warn("fine_tune: no evaluation improved on the starting params' validation NLL (1)",
                      gaussplug.TrainingWarning, stacklevel=2)
        warnings.warn("fine_tune: another training warning", gaussplug.TrainingWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(gaussplug, "fine_tune", spy)
    np.save(tmp_path / "d.npy", _moons())
    assert main(["fit", str(tmp_path / "d.npy"), "--spec", str(_spec_file(tmp_path)), "--steps", "3",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "no evaluation improved" not in err
    assert "gaussplug fit: warning: fine_tune: another training warning [TrainingWarning]" in err


def test_fit_warns_about_a_row_counter_column(files, capsys):
    """A pandas index (to_csv() with the default index=True) was silently fitted as a variable."""
    x = np.random.default_rng(0).normal(size=(60, 2))
    lines = [",a,b"] + [f"{i},{u},{v}" for i, (u, v) in enumerate(x)]
    (files / "p.csv").write_text("\n".join(lines) + "\n")
    assert main(["fit", str(files / "p.csv"), "--steps", "0", "--out", str(files / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "p.csv: column 1 ('') (0 to 59) holds the row numbers in order: it looks like an index" in err
    assert "Drop it (to_csv(index=False))" in err
    np.savetxt(files / "q.csv", np.c_[x, np.arange(1, 61) + 0.5], delimiter=",")  # not a counter: no warning
    assert main(["fit", str(files / "q.csv"), "--steps", "0", "--out", str(files / "o2"), "--quiet"]) == 0
    assert "row numbers" not in capsys.readouterr().err


def test_fit_warns_about_discrete_columns(files, capsys):
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=200), rng.integers(0, 2, 200), rng.normal(size=200)])
    np.save(files / "d.npy", x)
    assert main(["fit", str(files / "d.npy"), "--steps", "0", "--out", str(files / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "d.npy: 1 of 3 columns take only a few distinct values (column index 1: 2 values (0, 1))" in err
    assert err.count("distinct values") == 1  # named once, in the file's terms (warm_start's own warning is muted)
    assert "dequantisation noise" in err and err.rstrip().endswith("[WarmStartWarning]")  # tagged as the others
    x[:, 1] += rng.uniform(size=200)  # dequantised: no warning
    np.save(files / "d.npy", x)
    assert main(["fit", str(files / "d.npy"), "--steps", "0", "--out", str(files / "o"), "--quiet"]) == 0
    assert "distinct values" not in capsys.readouterr().err


def test_fit_warns_about_a_point_mass(files, capsys):
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=300), np.where(rng.uniform(size=300) < 0.4, 0.0, rng.gamma(2.0, size=300))])
    lines = ["rain,wind"] + [f"{a},{b}" for b, a in x]
    (files / "pm.csv").write_text("\n".join(lines) + "\n")
    assert main(["fit", str(files / "pm.csv"), "--steps", "0", "--out", str(files / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    k = int(np.sum(x[:, 1] == 0))
    assert (f"pm.csv: 1 of 2 columns put many rows on a single value (column 1 ('rain'): 0 in {k} of 300 rows "
            f"({100 * k / 300:.0f} %)). A continuous density has no point masses") in err
    assert err.count("single value") == 1  # named once, in the file's terms (warm_start's own warning is muted)



def test_fit_out_under_a_read_only_directory(tmp_path, capsys, monkeypatch):
    # Root may write anywhere, so the permission answer is stubbed rather than set with chmod.
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != str(tmp_path))
    err = _error(capsys, "fit", "--out", tmp_path / "new" / "out", "--quiet")
    assert f"--out: {str(tmp_path / 'new' / 'out')!r} is not writable: the directory {str(tmp_path)!r}" in err


def test_gaussplug_warnings_print_as_one_line(monkeypatch, capsys):
    import importlib.metadata
    import types

    from gaussplug._plugins import set_registry

    bare = types.ModuleType("bare_plugin")
    bare.gaussplug_register_families = lambda register: None  # no @hookimpl
    ep = types.SimpleNamespace(name="bare", value="bare_plugin", load=lambda: bare,
                               dist=types.SimpleNamespace(metadata={"Name": "bare-dist"}, version="1.0"))  # fmt: skip
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == "gaussplug" else real(**kw))  # fmt: skip
    monkeypatch.delenv("GAUSSPLUG_LOAD_PLUGINS", raising=False)
    old = set_registry(gaussplug.Registry())
    try:
        assert main(["plugins"]) == 0
    finally:
        set_registry(old)
    err = capsys.readouterr().err
    assert err.startswith("gaussplug plugins: warning: gaussplug plugin 'bare' (entry point 'bare_plugin', "
                          "distribution 'bare-dist') was not loaded: it has no hook")  # fmt: skip
    assert err.rstrip().endswith("[GaussplugPluginWarning]") and err.count("\n") == 1


def test_plugins_with_a_family_clash_prints_what_loads_then_the_clash(monkeypatch, capsys):
    import types

    from gaussplug._plugins import set_registry
    from gaussplug._registry import DEFAULT_PLUGINS

    impostor = types.ModuleType("impostor")  # loaded after the built-ins, as an installed plugin would be
    impostor.gaussplug_register_families = gaussplug.hookimpl(
        lambda register: register(gaussplug.Family("householder", lambda dim: None, doc="An impostor."))
    )
    monkeypatch.setitem(sys.modules, "impostor", impostor)
    old = set_registry(gaussplug.Registry(load_entry_points=False, default_plugins=(*DEFAULT_PLUGINS, "impostor")))
    try:
        assert main(["plugins"]) == 3
        out, err = capsys.readouterr()
        assert main(["plugins", "--json"]) == 3
        rows = json.loads(capsys.readouterr().out)
    finally:
        set_registry(old)
    assert out.startswith("FAMILY") and "mixture_cdf" in out and "An impostor" not in out
    assert {r["name"]: r["plugin"] for r in rows}["householder"] == "householder"  # the plugin loaded first
    assert err == (
        "gaussplug plugins: error: Family 'householder' is registered by two plugins: plugin 'impostor' (distribution "
        "'gaussplug') registers it and plugin 'householder' (distribution 'gaussplug') already provides it. "
        "Rename the family, or uninstall one of the plugins (GAUSSPLUG_LOAD_PLUGINS lists the third-party plugins "
        "to load). [PluginError]\n"
    )


def test_score_model_whose_plugin_changed_its_params_exits_3(files, capsys):
    import distrax
    import haiku as hk
    import jax.numpy as jnp

    def plugin(version, param):
        class Versioned:
            __version__ = version

            @gaussplug.hookimpl
            def gaussplug_register_families(self, register):
                def make(dim):
                    return distrax.Block(distrax.ScalarAffine(shift=hk.get_parameter(param, (dim,), init=jnp.zeros)), 1)

                register(gaussplug.Family("cli_versioned", make))

        return Versioned()

    name = gaussplug.register(plugin("0.2.0", "delta"), name="cli_versioned_plugin")
    try:
        flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "cli_versioned"}]})
        gaussplug.save(flow, files / "old.npz")
    finally:
        gaussplug.unregister(name)
    name = gaussplug.register(plugin("0.3.0", "log_delta"), name="cli_versioned_plugin")
    try:
        err = _error(capsys, "score", files / "old.npz", files / "ok.npy", code=3)
    finally:
        gaussplug.unregister(name)
    assert "layer '0_cli_versioned' (family 'cli_versioned') was saved with plugin 'cli_versioned_plugin' 0.2.0; " \
           "plugin 'cli_versioned_plugin' 0.3.0 is installed now and its params differ: expected ~/log_delta (2,); " \
           "the file has ~/delta (2,)." in err and err.rstrip().endswith("[PluginError]")  # fmt: skip


# -- exit codes -----------------------------------------------------------------------
def test_exit_codes_for_input_runtime_and_unexpected_errors():
    from gaussplug.cli import UsageError, exit_code

    assert exit_code(UsageError("x")) == exit_code(gaussplug.DataError("x")) == exit_code(gaussplug.SpecError("x"))
    assert exit_code(gaussplug.GaussplugError("not a model")) == exit_code(FileNotFoundError("x")) == 2
    assert exit_code(gaussplug.PluginError("x")) == exit_code(gaussplug.FitError("x")) == 3
    assert exit_code(ValueError("deep inside a library")) == exit_code(TypeError("a bug")) == 70  # not 1: unusable
    assert issubclass(UsageError, ValueError) and issubclass(UsageError, gaussplug.GaussplugError)


def test_closed_stdout_pipe_exits_141_quietly(capsys, monkeypatch):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["plugins"]) == 141
    assert capsys.readouterr().err == ""
    # The real thing: the reader exits before the command prints (it was exit code 2 with "error: Broken pipe").
    script = f"{sys.executable} -m gaussplug.cli plugins | true; echo rc=${{PIPESTATUS[0]}}"
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={**os.environ, "GAUSSPLUG_LOAD_PLUGINS": ""}, timeout=300)
    assert (run.stdout.strip(), run.stderr) == ("rc=141", "")


def test_interrupt_mid_training_exits_130(tmp_path):
    # The interpreter's shutdown used to run with XLA's threads mid-computation and crash (exit 139, not 130).
    import signal

    cmd = [sys.executable, "-m", "gaussplug", "fit", "--out", str(tmp_path / "o"), "--steps", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GAUSSPLUG_LOAD_PLUGINS": ""})
    try:
        for line in proc.stderr:
            if line.startswith("fine-tune:"):
                break
        time.sleep(2)  # compiling or training
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 130, err
        assert err.strip().endswith("gaussplug: interrupted")
    finally:
        proc.kill()


def test_unexpected_value_error_is_not_an_input_error(fitted, capsys, monkeypatch):
    import gaussplug._report as report

    def numerical_failure(flow, data):
        raise ValueError("eigh did not converge")

    monkeypatch.setattr(report, "log_prob_in_batches", numerical_failure)
    code = main(["score", str(fitted[0] / "out" / "model.npz"), str(fitted[0] / "data.npy")])
    err = capsys.readouterr().err
    assert code == 70, err
    assert err.startswith("Traceback") and "in numerical_failure" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("gaussplug score: internal error: ValueError: eigh did not converge (unexpected")


def test_user_input_value_errors_still_exit_2(files, capsys):
    from gaussplug import _datasets

    assert "--key needs a DATA file (.npz)" in _error(capsys, "fit", "--key", "a", "--out", files / "o")
    with pytest.raises(gaussplug.DataError, match=r"--validation 0\.5 holds out 4 of 8 rows"):
        _datasets.split(np.zeros((8, 2)), 0.5, 0)
    (files / "latin1.json").write_bytes(b'{"dim": 2, "layers": [{"family": "householder"}], "note": "\xe9"}')
    err = _error(capsys, "fit", files / "ok.npy", "--spec", files / "latin1.json", "--out", files / "o")
    assert "latin1.json' is not UTF-8 text (invalid continuation byte at byte " in err and "save it as UTF-8." in err


def test_fit_error_from_a_plugin_exits_3_naming_layer_and_plugin(files, capsys):
    import distrax
    import haiku as hk
    import jax.numpy as jnp

    def make(dim):
        b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

    def fit(x, params, *, key):
        raise ValueError("the fit did not converge")

    class BadFitPlugin:
        @gaussplug.hookimpl
        def gaussplug_register_families(self, register):
            register(gaussplug.Family("cli_test_bad_fit", make, fit=fit))

    spec = _spec_file(files, {"dim": 2, "layers": [{"family": "cli_test_bad_fit"}]}, "bad_fit.json")
    name = gaussplug.register(BadFitPlugin(), name="cli_test_bad_fit_plugin")
    try:
        argv = ["fit", files / "ok.npy", "--spec", spec, "--steps", "0", "--out", files / "o", "--quiet"]
        err = _error(capsys, *argv, code=3)
        assert "cli_test_bad_fit" in err and "fit raised ValueError: the fit did not converge" in err
        assert err.rstrip().endswith("[FitError]")
        assert main(["--traceback", *map(str, argv)]) == 3
        err = capsys.readouterr().err
        assert "Traceback" in err and "in fit" in err and err.rstrip().endswith("[FitError]")
    finally:
        gaussplug.unregister(name)


def test_help_lists_the_exit_codes(capsys):
    for argv in (["--help"], ["fit", "--help"]):
        assert main(argv) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "exit codes: 0 success; 1 the result is not usable" in text
        assert "2 an input error" in text and "3 a plugin or a layer family failed" in text


# -- where messages point in a data file ----------------------------------------------
def test_csv_messages_count_file_lines_and_columns_from_1(files, capsys):
    # A header cell spanning two lines and a blank line: line numbers are the file's, not record counts.
    (files / "q.csv").write_text('"lon\ngitude",lat\n1,2\n\n3,x\n')
    assert "q.csv: line 5, column 2 ('lat') holds 'x'" in _error(capsys, "fit", files / "q.csv", "--out", files / "o")
    (files / "r.csv").write_text("1,2\n3,4\n\n5\n")
    assert "r.csv: line 4 has 1 column; expected 2 (as on line 1)" in _error(capsys, "fit", files / "r.csv")
    (files / "u.csv").write_bytes(b"a,b\n1,2\n3,\xff\n")
    assert "u.csv: line 3 is not UTF-8 text (invalid start byte at byte 10)" in _error(capsys, "fit", files / "u.csv")
    (files / "m.csv").write_text("a,b\n1,2\n3," + "9" * 200_000 + "\n")  # over the csv module's field limit
    assert "m.csv: line 3: malformed CSV (field larger than field limit" in _error(capsys, "fit", files / "m.csv")


def test_csv_with_several_bad_cells_counts_them_all(files, capsys):
    rows = ["a,b,c,d,e,f,g"] + [",".join(["1"] * 7)] * 3 + ["x,2,3,4,5,6,7", "1,,3,4,5,6,inf"]
    rows += [",".join(["n/a"] * 7)] * 6
    (files / "many.csv").write_text("\n".join(rows) + "\n")
    err = _error(capsys, "fit", files / "many.csv", "--out", files / "o")
    assert ("many.csv: line 5, column 1 ('a') holds 'x', which is not a finite number. 44 more cells are empty or "
            "not a finite number: on lines 6, 7, 8, 9, 10 and 2 more; in columns 1 ('a'), 2 ('b'), 3 ('c'), 4 ('d'), "
            "5 ('e') and 2 more.") in err
    (files / "one_more.csv").write_text("1,2\n3,4\n5,\n7,8\nz,1\n")
    assert ("one_more.csv: line 3, column 2 is empty. 1 more cell is empty or not a finite number: on line 5; in "
            "column 1.") in _error(capsys, "fit", files / "one_more.csv", "--out", files / "o")
    (files / "ragged_later.csv").write_text("1,2\nx,4\n5\n")  # a row of the wrong width is the first thing said
    assert "line 3 has 1 column; expected 2" in _error(capsys, "fit", files / "ragged_later.csv", "--out", files / "o")


def test_csv_separator_and_empty_column_hints(files, capsys):
    (files / "euro.csv").write_text("a;b;c\n0,123;-1,234;0,5\n1,5;2,5;3,5\n")
    assert ("euro.csv: line 1 is one cell, 'a;b;c', but line 2 splits into 4 cells at its commas: the file looks "
            "';'-separated with decimal commas") in _error(capsys, "fit", files / "euro.csv", "--out", files / "o")
    (files / "trail.csv").write_text("a,b,\n" + "1,2,\n" * 12)
    err = _error(capsys, "fit", files / "trail.csv", "--out", files / "o")
    assert "Column 3 ('') holds no number on any line (a comma at the end of every line?): remove it." in err
    (files / "na.csv").write_text("a,b,c\n" + "1,NA,2\n" * 12)
    err = _error(capsys, "fit", files / "na.csv", "--out", files / "o")
    assert "Column 2 ('b') holds no number on any line: remove it." in err and "end of every line" not in err


def test_csv_header_repeating_a_name_warns(files):
    x = _moons(40)
    lines = ["lon,lat,lon"] + [f"{a},{b},{a + 1}" for a, b in x]
    (files / "dup.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(gaussplug.DataWarning, match=r"dup\.csv: line 1, the header repeats column names \('lon' in "
                                                   r"columns 1, 3\)\. .*give each column its own name"):
        data = _datasets.load_data(str(files / "dup.csv"))
    assert data.description["columns"] == ["lon", "lat", "lon"] and data.x.shape == (40, 3)


def test_decimal_commas_without_a_header_are_named_as_such(files, capsys):
    # The advice was "column 2 holds no number on any line: remove it" and "if line 1 is a header ...".
    (files / "dc.csv").write_text("0,5;1,25\n0,7;2,5\n1,5;3,5\n" * 5)
    err = _error(capsys, "fit", files / "dc.csv", "--out", files / "o")
    assert "dc.csv: line 1, column 2 holds '5;1', which is not a finite number." in err
    assert "looks ';'-separated with decimal commas" in err and "remove it" not in err and "header" not in err


def test_csv_line_endings_quoted_line_breaks_and_blank_lines(files):
    # Records are read one at a time (no whole-file StringIO copy, no string per cell kept): the lines must
    # still split at LF, CR LF and a lone CR, a quoted cell may span lines, and blank records are skipped.
    (files / "cr.csv").write_bytes(b"a,b\r1,2\r\n3,4\r\r5,\"6\"\n, \n7,\"8\n\"\n9,10")
    data = _datasets.load_data(str(files / "cr.csv"), min_rows=1)
    np.testing.assert_array_equal(data.x, [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
    assert list(data.where.lines) == [2, 3, 5, 7, 9] and data.description["columns"] == ["a", "b"]
    (files / "bad.csv").write_bytes(b"a,b\n1,2\n3,x\n4,\n" + b"5,6\n" * 5 + b"7\n")
    with pytest.raises(gaussplug.DataError, match=r"bad\.csv: line 10 has 1 column; expected 2 \(as on line 1\)"):
        _datasets.load_data(str(files / "bad.csv"), min_rows=1)  # a ragged line is reported before bad cells


def test_pandas_unnamed_column_header_is_read_as_a_header_and_said(files):
    # DataFrame(arr).to_csv(index=False) writes the header 0,1,2: it was read as a data row, silently.
    x = np.random.default_rng(0).normal(size=(40, 3))
    (files / "p.csv").write_text("0,1,2\n" + "".join(",".join(map(str, r)) + "\n" for r in x))
    with pytest.warns(gaussplug.DataWarning, match=r"p.csv: line 1 reads 0,1,2, the header pandas writes"):
        data = _datasets.load_data(str(files / "p.csv"))
    assert data.x.shape == (40, 3) and data.description["columns"] == ["0", "1", "2"]
    assert _csv.csv_header(files / "p.csv") == ("0", "1", "2")
    # DataFrame(arr).to_csv(), its default: the index column under an empty header cell, then 0,1,2.
    (files / "i.csv").write_text(",0,1,2\n" + "".join(f"{i}," + ",".join(map(str, r)) + "\n" for i, r in enumerate(x)))
    with pytest.warns(gaussplug.DataWarning) as caught:
        data = _datasets.load_data(str(files / "i.csv"))
    assert data.x.shape == (40, 4) and data.description["columns"] == ["", "0", "1", "2"]
    said = " ".join(str(w.message) for w in caught)
    assert "i.csv: line 1 reads ,0,1,..., the header pandas writes" in said, said  # (fit then warns of the index)
    (files / "d.csv").write_text("0,2,1\n" + "".join(",".join(map(str, r)) + "\n" for r in x))  # data after all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _datasets.load_data(str(files / "d.csv")).x.shape == (41, 3)


def test_a_header_with_numeric_names_is_explained(files, capsys):
    (files / "h.csv").write_text("x,1,2\n" + "1,2,3\n" * 20)
    err = _error(capsys, "fit", files / "h.csv", "--out", files / "o")
    assert "h.csv: line 1, column 1 holds 'x', which is not a finite number. If line 1 is a header" in err


def test_checks_after_parsing_use_the_csv_convention(files, capsys):
    rows = "".join(f"{i},7\n" for i in range(12))
    (files / "h.csv").write_text("a,b\n" + rows)
    (files / "n.csv").write_text(rows)
    assert "h.csv: constant column: column 2 ('b') = 7." in _error(capsys, "fit", files / "h.csv", "--out", files / "o")
    assert "n.csv: constant column: column 2 = 7." in _error(capsys, "fit", files / "n.csv", "--out", files / "o")
    x = np.random.default_rng(0).normal(size=(60, 2))
    (files / "disc.csv").write_text("u,v\n" + "".join(f"{a},{int(b > 0)}\n" for a, b in x))
    assert main(["fit", str(files / "disc.csv"), "--steps", "0", "--out", str(files / "o"), "--quiet"]) == 0
    assert "disc.csv: 1 of 2 columns take only a few distinct values (column 2 ('v'): 2 values" in (
        capsys.readouterr().err)


def test_a_column_discrete_only_once_rounded_to_float32_warns(files, capsys):
    # 1e6 + N(0, 0.01): continuous in float64, two values in float32 (tabular QA: NLL -10.4 with no warning).
    r = np.random.default_rng(0)
    x = np.c_[r.normal(size=500), 1e6 + r.normal(0, 0.01, 500), r.normal(size=500)]
    x[0, 1] = 1e6 + 0.07  # the one row that rounds to the next float32 (1e6 + 0.0625)
    np.save(files / "off.npy", x)
    assert main(["fit", str(files / "off.npy"), "--steps", "0", "--out", str(files / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "column index 1: 2 values once rounded to float32 (1000000, 1000000.1)" in err
    assert "centre and rescale them, or enable float64 with JAX_ENABLE_X64=1" in err


def test_float32_overflow_in_csv_names_the_file_line(files, capsys):
    from gaussplug._data import default_dtype

    if default_dtype() != np.float32:
        pytest.skip("float32 range applies only without JAX_ENABLE_X64")
    lines = ["a,b"] + [f"{i},{i % 7}.5" for i in range(20)]
    lines.insert(3, "")
    lines[6] = "4,-2e39"  # the fifth data row, on line 7
    (files / "huge.csv").write_text("\n".join(lines) + "\n")
    err = _error(capsys, "fit", files / "huge.csv", "--out", files / "o", "--quiet")
    assert "huge.csv: the value largest in magnitude, -2e+39 (line 7, column 2 ('b')), is beyond" in err


def test_score_names_non_finite_csv_rows_by_file_line(fitted, tmp_path, capsys, monkeypatch):
    import gaussplug._report as report

    x = fitted[1][:20]
    text = "x,y\n" + "".join(f"{a},{b}\n" for a, b in x[:3]) + "\n" + "".join(f"{a},{b}\n" for a, b in x[3:])
    (tmp_path / "d.csv").write_text(text)
    lp = np.full(len(x), -2.0)
    lp[4] = np.nan  # the fifth data row: line 1 is the header and line 5 is blank, so it is on line 7
    monkeypatch.setattr(report, "log_prob_in_batches", lambda flow, data: lp.copy())
    assert main(["score", str(fitted[0] / "out" / "model.npz"), str(tmp_path / "d.csv")]) == 1
    assert "1 of 20 rows have log-likelihood NaN (the model is numerically broken there; first: line 7)" in (
        capsys.readouterr().err)


# -- column names: a model fit on a CSV header checks the header of the data it scores --------
@pytest.fixture(scope="module")
def csv_model(tmp_path_factory):
    """A model fit on a CSV file with the header ``lon,lat``; returns ``(dir, model path, data)``."""
    tmp = tmp_path_factory.mktemp("csv_model")
    x = _moons(120)
    np.savetxt(tmp / "d.csv", x, delimiter=",", header="lon,lat", comments="")
    spec = tmp / "spec.json"
    spec.write_text(json.dumps(SMALL_SPEC))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["fit", str(tmp / "d.csv"), "--spec", str(spec), "--out", str(tmp / "out"), *FAST]) == 0
    return tmp, tmp / "out" / "model.npz", x


def _score_mean(capsys, model, data) -> float:
    assert main(["score", str(model), str(data)]) == 0
    return float(capsys.readouterr().out.split("mean log-likelihood:")[1].split()[0])


def test_score_checks_csv_header_against_the_models_columns(csv_model, tmp_path, capsys):
    tmp, model, x = csv_model
    assert gaussplug.load(model).metadata["columns"] == ["lon", "lat"]
    mean = _score_mean(capsys, model, tmp / "d.csv")
    # The same columns in another order: scoring by position would be silently wrong, so it is an input error.
    np.savetxt(tmp_path / "swapped.csv", x[:, ::-1], delimiter=",", header="lat,lon", comments="")
    err = _error(capsys, "score", model, tmp_path / "swapped.csv")
    assert ("swapped.csv: the header names the model's columns in another order, but columns are matched by "
            "position, not by name: column 1 is 'lat' where the model has 'lon', column 2 is 'lon' where the "
            "model has 'lat'. Reorder the file's columns so that its header reads: lon,lat") in err
    # Other names: expected vs received.
    np.savetxt(tmp_path / "other.csv", x, delimiter=",", header="lon,height", comments="")
    err = _error(capsys, "score", model, tmp_path / "other.csv")
    assert ("other.csv: the header's column names are not those the model was fit on: expected 2 ('lon', 'lat'), "
            "got 2 ('lon', 'height'); not in the file: 'lat'; not in the model: 'height'.") in err
    # A missing column is named too (rather than only counted).
    np.savetxt(tmp_path / "one.csv", x[:, :1], delimiter=",", header="lon", comments="")
    assert "expected 2 ('lon', 'lat'), got 1 ('lon'); not in the file: 'lat'." in _error(
        capsys, "score", model, tmp_path / "one.csv")
    # No header, or array files: columns go by position, as before.
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
    np.save(tmp_path / "x.npy", x)
    assert _score_mean(capsys, model, tmp_path / "plain.csv") == pytest.approx(mean, abs=1e-4)
    assert _score_mean(capsys, model, tmp_path / "x.npy") == pytest.approx(mean, abs=1e-4)


def test_score_without_model_columns_ignores_the_header(fitted, tmp_path, capsys):
    model = fitted[0] / "out" / "model.npz"  # fit on the built-in data: no column names
    np.savetxt(tmp_path / "h.csv", fitted[1][:50], delimiter=",", header="b,a", comments="")
    assert main(["score", str(model), str(tmp_path / "h.csv")]) == 0
    assert capsys.readouterr().err == ""


def test_sample_csv_header_is_the_models_columns(csv_model, tmp_path, capsys):
    tmp, model, _ = csv_model
    path = tmp_path / "s.csv"
    assert main(["sample", str(model), "-n", "20", "-o", str(path)]) == 0
    assert path.read_text().splitlines()[0] == "lon,lat"
    capsys.readouterr()
    assert main(["score", str(model), str(path)]) == 0  # so the samples score against the model as they are


def test_column_names_with_commas_round_trip_through_sample(fitted, tmp_path, capsys):
    flow = gaussplug.load(fitted[0] / "out" / "model.npz")
    model = gaussplug.save(flow.replace(metadata={**flow.metadata, "columns": ["a,b", 'say "hi"']}),
                           tmp_path / "m.npz")
    assert main(["sample", str(model), "-n", "12", "-o", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == '"a,b","say ""hi"""'
    assert main(["score", str(model), str(tmp_path / "s.csv")]) == 0
    capsys.readouterr()
    (tmp_path / "r.csv").write_text('"say ""hi""","a,b"\n1,2\n')
    assert "its header reads: \"a,b\",\"say \"\"hi\"\"\"" in _error(capsys, "score", model, tmp_path / "r.csv")


def test_model_with_bad_columns_metadata_is_an_input_error(fitted, tmp_path, capsys):
    flow = gaussplug.load(fitted[0] / "out" / "model.npz")
    model = gaussplug.save(flow.replace(metadata={**flow.metadata, "columns": ["only"]}), tmp_path / "m.npz")
    np.savetxt(tmp_path / "h.csv", fitted[1][:20], delimiter=",", header="a,b", comments="")
    err = _error(capsys, "score", model, tmp_path / "h.csv")
    assert "the model's metadata 'columns' should be a list of 2 column names (strings); it is ['only']." in err
    assert "metadata 'columns'" in _error(capsys, "sample", model, "-n", "3", "-o", tmp_path / "s.csv")


def test_check_columns_lists_what_is_out_of_place():
    from gaussplug._csv import check_columns
    from gaussplug._errors import DataError

    names = [f"c{i}" for i in range(30)]
    check_columns(None, names, "d.csv")  # no header
    check_columns(names, None, "d.csv")  # a model without names
    check_columns(names, names, "d.csv")
    with pytest.raises(DataError, match=r"column 1 is 'c29' where the model has 'c0', .*\(25 more\)\. Reorder"):
        check_columns(names[::-1], names, "d.csv")
    # Duplicate names count: the same set with one name twice is not the same columns.
    with pytest.raises(DataError, match=r"not in the file: 'b'; not in the model: 'a'\."):
        check_columns(["a", "a"], ["a", "b"], "d.csv")


def test_inspect_checks_csv_header_against_the_models_columns(csv_model, tmp_path, capsys):
    tmp, model, x = csv_model
    np.savetxt(tmp_path / "swapped.csv", x[:, ::-1], delimiter=",", header="lat,lon", comments="")
    out = tmp_path / "insp"
    err = _error(capsys, "inspect", model, tmp_path / "swapped.csv", "--out", out)
    assert "swapped.csv: the header names the model's columns in another order" in err and "reads: lon,lat" in err
    assert not out.exists()  # refused before any work
    assert main(["inspect", str(model), str(tmp / "d.csv"), "--out", str(out)]) == 0
    assert "1_householder" in capsys.readouterr().out
