"""Data-parallel and out-of-core fine-tuning (``devices=``, memory maps, iterators) and ``_sharding``."""

import pathlib
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gaussplug
from gaussplug import DataError, _batching, _sharding
from gaussplug._train import TrainingWarning, fine_tune

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = {"dim": 2, "layers": [{"family": "standardize"}, {"family": "rotation"}]}
SHIFT_SPEC = {"dim": 2, "layers": [{"family": "standardize"}]}


@pytest.fixture(autouse=True)
def _slow_only_when_selected(request):
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow: run with -m slow")


def data(n=200, seed=0):
    z = np.random.default_rng(seed).normal(size=(n, 2))
    return (z @ np.array([[2.0, 0.0], [1.5, 0.5]]) + [2.0, -1.0]).astype(np.float32)


def same_bits(a, b):
    return all(np.asarray(p).tobytes() == np.asarray(q).tobytes() for p, q in zip(a, b, strict=True))


@pytest.fixture
def npy(tmp_path):
    def write(x):
        np.save(tmp_path / "x.npy", x)
        return np.load(tmp_path / "x.npy", mmap_mode="r")

    return write


# -- four CPU devices, in a subprocess (the device count is fixed when jax starts) ----------
FOUR_DEVICES = textwrap.dedent(
    """
    import json, warnings
    import jax, numpy as np, optax, gaussplug
    from gaussplug import _sharding, fine_tune
    # Trainable and frozen (rotation) params; no scale-invariant ones, whose zero-gradient
    # coordinates Adam would turn float noise into steps along.
    spec = {"dim": 2, "layers": [{"family": "standardize"}, {"family": "rotation"}]}
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(302, 2)) @ [[2.0, 0.0], [1.5, 0.5]] + 1.0).astype(np.float32)
    np.save(PATH, x)
    mm = np.load(PATH, mmap_mode="r")
    flow = gaussplug.build_flow(spec, key=3)
    out = {"devices": len(jax.devices())}

    def run(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuned, h = fine_tune(flow, progress=False, **kw)
        h["log_prob"] = np.asarray(tuned.log_prob(x[:20])).tolist()
        return [np.asarray(a).tolist() for a in jax.tree.leaves(tuned.params)], h

    def compare(name, ref, **kw):
        (p1, h1), (p4, h4) = run(**ref), run(**kw)
        out[name] = {"p1": p1, "p4": p4, "loss1": h1["loss"].tolist(), "loss4": h4["loss"].tolist(),
                     "val1": h1["val_nll"], "val4": h4["val_nll"], "n": h4["devices"],
                     "lp1": h1["log_prob"], "lp4": h4["log_prob"],
                     "stopped": [h1["stopped"], h4["stopped"]], "compile": h4["compile_time"]}

    val = dict(x=x, steps=24, peak_lr=0.05, validation=0.2, eval_every=5)
    # Batch 64 divides over 4 devices: devices=None picks all four (data on each device, indices split).
    compare("index", dict(val, batch_size=64, devices=1), **dict(val, batch_size=64))
    out["index_again"] = run(**dict(val, batch_size=64))[1]["compile_time"]
    # A memory map, batch 30 padded to 32 (rows gathered on the host, split across devices).
    compare("memmap", dict(val, batch_size=30, devices=1), **dict(val, x=mm, batch_size=30, devices=4))
    # Full batch: 302 rows split 76 per device with two padding rows.
    full = dict(x=x, steps=12, batch_size=1000, optimizer=optax.adam(0.05))
    compare("full", dict(full, devices=1), **dict(full, devices=jax.devices()))
    # Batches from an iterator (the last one shorter), run out after 8 steps.
    batches = [x[i : i + 40] for i in range(0, 302, 40)]
    it = dict(steps=20, validation=x[:50], optimizer=optax.adam(0.05))
    compare("iterator", dict(it, x=iter(batches), devices=1), **dict(it, x=iter(batches), devices=4))
    # A state from four devices resumes on four devices: the 6 + 6 steps are one device's 12.
    ft = dict(x=x, batch_size=1000, optimizer=optax.adam(0.05), progress=False)
    a, ha = fine_tune(flow, steps=6, devices=4, **ft)
    b, _ = fine_tune(a, steps=6, devices=4, opt_state=ha["opt_state"], **ft)
    w, _ = fine_tune(flow, steps=12, devices=1, **ft)
    out["resume"] = max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
                        for p, q in zip(jax.tree.leaves(b.params), jax.tree.leaves(w.params)))
    # Not dividing the batch, devices=None stays on one device.
    out["auto_single"] = run(x=x, steps=2, batch_size=30)[1]["devices"]
    rows = _sharding.shard_rows(np.arange(20.0).reshape(10, 2), _sharding.data_mesh())
    out["shard_rows"] = {"shape": list(rows.x.shape), "n": rows.n, "mask": int(rows.mask.sum()),
                         "spec": list(rows.x.sharding.spec),
                         "per_device": [s.data.shape[0] for s in rows.x.addressable_shards],
                         "masked_sum": float(jax.numpy.sum(jax.numpy.where(rows.mask[:, None], rows.x, 0)))}
    on_dev = _sharding.shard_rows(jax.numpy.arange(20.0).reshape(10, 2), _sharding.data_mesh())
    out["shard_rows_device"] = [[s.data.shape[0] for s in on_dev.x.addressable_shards], on_dev.n,
                                float(jax.numpy.sum(jax.numpy.where(on_dev.mask[:, None], on_dev.x, 0)))]
    rep = _sharding.replicate({"a": np.ones(3), "b": None}, _sharding.data_mesh())
    out["replicated"] = rep["a"].sharding.is_fully_replicated and rep["b"] is None
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory, run_on_four_devices):
    return run_on_four_devices(FOUR_DEVICES, tmp_path_factory.mktemp("four") / "x.npy")


@pytest.mark.parametrize("case", ["index", "memmap", "full", "iterator"])
def test_four_devices_match_one_device(four_devices, case):
    assert four_devices["devices"] == 4
    r = four_devices[case]
    assert r["n"] == 4
    for a, b in zip(r["p1"], r["p4"], strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r["loss4"], r["loss1"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r["val4"], r["val1"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r["lp4"], r["lp1"], rtol=1e-5, atol=1e-5)
    assert r["stopped"][0] == r["stopped"][1]


def test_four_devices_compile_once_auto_rule_and_helpers(four_devices):
    assert four_devices["iterator"]["stopped"] == ["data_exhausted", "data_exhausted"]
    assert four_devices["index"]["compile"] > 0 and four_devices["index_again"] == 0.0
    assert four_devices["auto_single"] == 1
    assert four_devices["shard_rows"] == {
        "shape": [12, 2],
        "n": 10,
        "mask": 10,
        "spec": ["data", None],
        "per_device": [3, 3, 3, 3],
        "masked_sum": 190.0,
    }
    assert four_devices["shard_rows_device"] == [[3, 3, 3, 3], 10, 190.0]
    assert four_devices["replicated"] is True
    assert four_devices["resume"] < 1e-5


@pytest.mark.slow
def test_multihost_example_runs_two_processes():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "multihost_example.py")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "same params on every process: True; pooled NLL equals best_val_nll: True" in proc.stdout


# -- one device: helpers and the devices argument -------------------------------------------
def test_helpers_on_one_device():
    mesh = _sharding.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == 1
    rows = _sharding.shard_rows(np.ones((5, 2), np.float32), mesh)
    assert rows.x.shape == (5, 2) and rows.n == 5 and bool(rows.mask.all())
    assert _sharding.data_mesh(mesh) is mesh and _sharding.data_mesh(1).devices.size == 1
    assert _sharding.choose_mesh(None, 7) is None and _sharding.choose_mesh(1, 7) is None


def test_devices_one_and_explicit_one_device_mesh_match_default():
    flow, x = gaussplug.build_flow(SPEC, key=1), data()
    kw = dict(steps=12, batch_size=32, peak_lr=0.05, validation=0.25, eval_every=4, progress=False)
    a, ha = fine_tune(flow, x, **kw)
    b, hb = fine_tune(flow, x, devices=1, **kw)
    c, hc = fine_tune(flow, x, devices=jax.devices()[:1], **kw)
    assert same_bits(jax.tree.leaves(a.params), jax.tree.leaves(b.params))
    assert ha["devices"] == hb["devices"] == hc["devices"] == 1
    for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params), strict=True):
        np.testing.assert_allclose(np.asarray(q), np.asarray(p), rtol=1e-6, atol=1e-6)
    assert all(isinstance(p, jax.Array) for p in jax.tree.leaves(c.params))


@pytest.mark.parametrize(
    ("devices", "error", "match"),
    [
        (5, ValueError, r"devices: expected 1 to 1 \(the local devices\); got 5"),
        (0, ValueError, r"devices: expected 1 to 1"),
        ("cpu", TypeError, r"devices: expected None, an int, a non-empty sequence of jax.Device"),
        ([], TypeError, r"devices: expected None"),
    ],
)
def test_bad_devices(devices, error, match):
    with pytest.raises(error, match=match):
        fine_tune(gaussplug.build_flow(SHIFT_SPEC), data(n=20), steps=2, devices=devices, progress=False)


# -- memory-mapped .npy -----------------------------------------------------------------------
class _SpyMemmap(np.memmap):
    reads: list = []

    def __getitem__(self, index):
        out = super().__getitem__(index)
        if isinstance(index, np.ndarray):
            _SpyMemmap.reads.append(index.size)
        return out


def test_memmap_matches_in_memory_and_reads_only_drawn_rows(npy):
    flow, x = gaussplug.build_flow(SPEC, key=1), data(n=300)
    mm = npy(x).view(_SpyMemmap)
    _SpyMemmap.reads = []
    kw = dict(steps=30, batch_size=16, peak_lr=0.05, validation=0.2, eval_every=10, progress=False)
    a, ha = fine_tune(flow, x, **kw)
    b, hb = fine_tune(flow, mm, **kw)
    assert same_bits(jax.tree.leaves(a.params), jax.tree.leaves(b.params))
    np.testing.assert_array_equal(ha["loss"], hb["loss"])
    assert ha["val_nll"] == hb["val_nll"]
    # Reads: the 60 validation rows, then one gather of 30 steps x 16 rows (one chunk).
    assert _SpyMemmap.reads == [60, 480]


def test_memmap_float64_file_and_int_file_train_in_flow_dtype(npy):
    flow = gaussplug.build_flow(SHIFT_SPEC, dtype=jnp.float32)  # explicit: a float64 file must not upcast it
    tuned, h = fine_tune(flow, npy(data().astype(np.float64)), steps=5, batch_size=16, progress=False)
    assert h["loss"].dtype == flow.dtype == np.float32 and np.isfinite(h["loss"]).all()
    tuned, h = fine_tune(flow, npy(np.arange(40).reshape(20, 2)), steps=3, batch_size=4, progress=False)
    assert np.isfinite(h["loss"]).all()


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((10, 3), np.float32), r"x: expected a memory-mapped array of shape \(n >= 2, 2\).*\(10, 3\)"),
        (np.zeros((1, 2), np.float32), r"got shape \(1, 2\)"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), r"x: expected finite values; row index 1 contains NaN"),
    ],
)
def test_bad_memmap(npy, x, match):
    with pytest.raises(DataError, match=match):
        fine_tune(gaussplug.build_flow(SHIFT_SPEC), npy(x), steps=2, batch_size=3, progress=False)


# -- iterators and iterables of batches -------------------------------------------------------
def test_repeated_full_batch_iterator_matches_full_batch_array():
    flow, x = gaussplug.build_flow(SPEC, key=1), data(n=64)
    opt = optax.sgd(0.05)
    a, ha = fine_tune(flow, x, steps=6, batch_size=1000, optimizer=opt, progress=False)
    b, hb = fine_tune(flow, (x for _ in range(100)), steps=6, optimizer=opt, progress=False)
    for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(q), np.asarray(p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-5)
    assert hb["stopped"] == "completed" and hb["steps_run"] == 6


def test_short_batches_are_weighted_by_their_own_size():
    flow, x = gaussplug.build_flow(SPEC, key=1), data(n=10)
    batches = [x[:4], x[4:8], x[8:]]
    _, h = fine_tune(flow, iter(batches), steps=3, optimizer=optax.sgd(0.0), progress=False)
    expected = [-float(jnp.mean(flow.log_prob(b))) for b in batches]
    np.testing.assert_allclose(h["loss"], expected, rtol=1e-6)


def test_iterator_running_out_stops_with_warning_and_final_evaluation():
    flow, x = gaussplug.build_flow(SPEC, key=1), data(n=70)
    batches = (x[i : i + 10] for i in range(0, 70, 10))  # 7 batches
    with pytest.warns(TrainingWarning, match=r"batches ran out after 7 of 20 steps"):
        _, h = fine_tune(flow, batches, steps=20, validation=data(n=30, seed=1), eval_every=3, progress=False)
    assert h["stopped"] == "data_exhausted" and h["steps_run"] == 7 and h["loss"].shape == (7,)
    assert h["val_step"] == [0, 3, 6, 7]


def test_iterator_running_out_on_a_chunk_boundary_still_evaluates_last_step(monkeypatch):
    monkeypatch.setattr(gaussplug._train, "_MAX_CHUNK", 4)
    flow, x = gaussplug.build_flow(SHIFT_SPEC), data(n=80)
    batches = iter([x[i : i + 10] for i in range(0, 80, 10)])  # 8 batches = 2 chunks of 4
    with pytest.warns(TrainingWarning, match=r"ran out after 8 of 12 steps"):
        _, h = fine_tune(flow, batches, steps=12, validation=data(n=30, seed=1), eval_every=3, progress=False)
    assert h["steps_run"] == 8 and h["val_step"] == [0, 3, 6, 8]


def test_reiterable_source_is_iterated_again():
    class Loader:
        def __init__(self, x):
            self.x, self.passes = x, 0

        def __iter__(self):
            self.passes += 1
            return iter([self.x[:8], self.x[8:16]])

    loader = Loader(data(n=16))
    _, h = fine_tune(gaussplug.build_flow(SHIFT_SPEC), loader, steps=7, progress=False)
    assert h["stopped"] == "completed" and h["steps_run"] == 7 and loader.passes == 4


@pytest.mark.parametrize(
    ("batches", "kwargs", "error", "match"),
    [
        ([], {}, DataError, r"expected batches of shape \(b, 2\); the list_iterator yielded none"),
        ([np.zeros((4, 3))], {}, DataError, r"batch 0 of the iterator: expected shape \(b, 2\) with b >= 1"),
        ([np.zeros((4, 2)), np.zeros((5, 2))], {}, DataError, r"batch 1 .*1 <= b <= 4 \(the first batch's rows\)"),
        ([np.zeros((4, 2)), np.full((2, 2), np.inf)], {}, DataError, r"batch 1 .*finite values; row index 0"),
        ([np.array([["a", "b"]])], {}, DataError, r"batch 0 .*expected a numeric array"),
        ([np.zeros((4, 2))], {"validation": 0.2}, ValueError, r"validation: with x an iterator .* got 0.2"),
        ([np.zeros((4, 2))], {"patience": 2}, ValueError, r"need validation data"),
    ],
)
def test_bad_batches(batches, kwargs, error, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        with pytest.raises(error, match=match):
            fine_tune(gaussplug.build_flow(SHIFT_SPEC), iter(batches), steps=3, progress=False, **kwargs)


def test_gather_reads_rows_in_increasing_order():
    x = np.arange(20.0).reshape(10, 2)
    idx = np.array([[7, 1], [3, 7]])
    np.testing.assert_array_equal(_batching._gather(x, idx, np.float32, what="x"), x[idx])
