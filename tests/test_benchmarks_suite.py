"""benchmarks/run.py and helpers: units and Jacobians, peer skipping, a quick run."""

import importlib
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The benchmark modules, imported the way run.py imports them (benchmarks/ on sys.path)."""
    names = ("known_densities", "suite_data", "suite_ours", "suite_peers", "suite_report")
    sys.path.insert(0, str(BENCH))
    try:
        yield {n: importlib.import_module(n) for n in names}
    finally:
        sys.path.remove(str(BENCH))
        for n in names:
            sys.modules.pop(n, None)


def test_known_task_oracle_is_the_true_density_in_reported_units(bench):
    data, kd = bench["suite_data"], bench["known_densities"]
    task = data.known_task("student", 3, n_train=2000, n_val=10, n_test=500)
    dens = kd.make("student", 3)
    # Rebuild the test points in the original space and score the true density in model space.
    x_tr, x_te = dens.sample(2000, seed=1), dens.sample(500, seed=3)
    mu, sd = x_tr.mean(0), x_tr.std(0)
    np.testing.assert_allclose(task.test, (x_te - mu) / sd, rtol=1e-5, atol=1e-5)
    model_space_nll = -(dens.log_prob(x_te) + np.sum(np.log(sd)))
    assert task.report(float(model_space_nll.mean())) == pytest.approx(task.oracle_nll, abs=1e-9)


def test_image_task_uniform_pixels_score_8_bits(bench, tmp_path):
    """A density uniform on the dequantised pixel cube [0, 256)^D must score exactly 8 bits/dim.

    Its model-space log-density at a test point is the log-Jacobian d(pixels)/dz, computed here
    independently with finite differences of the logit and the training rows' standard deviation.
    """
    data = bench["suite_data"]
    rng = np.random.default_rng(0)
    v = rng.integers(0, 256, size=(200, 6)).astype(np.uint8)
    v[:, 0] = 0  # a constant pixel, as MNIST's borders
    path = tmp_path / "imgs.npy"
    np.save(path, v)
    task = data.load_real(path)
    assert task.unit == "bits/dim" and task.dim == 6
    x = (v + np.random.default_rng(1).uniform(size=v.shape)) / 256.0
    itr, _, ite = data._split(200, 20, 40, 0)
    logit = lambda t: np.log(data.ALPHA + (1 - 2 * data.ALPHA) * t) - np.log1p(-(data.ALPHA + (1 - 2 * data.ALPHA) * t))
    h = 1e-7
    dydx = (logit(x[ite] + h) - logit(x[ite] - h)) / (2 * h)
    s = logit(x[itr]).std(0)
    log_dpix_dz = np.sum(np.log(256.0 / dydx * s), axis=1)  # pixels = 256 x, x = x(y), y = m + s z
    uniform_nll = -(log_dpix_dz - 6 * math.log(256))
    assert task.report(float(uniform_nll.mean())) == pytest.approx(8.0, abs=1e-4)


def test_tabular_task_split_and_scale(bench, tmp_path):
    data = bench["suite_data"]
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4))
    np.save(tmp_path / "tab.npy", x)
    task = data.load_real(tmp_path / "tab.npy")
    assert (len(task.train), len(task.val), len(task.test)) == (800, 100, 100)
    np.testing.assert_allclose(task.train.mean(0), 0, atol=1e-5)
    assert task.unit == "nats/dim" and task.report(4.0) == pytest.approx(1.0)


def test_sklearn_rbig_recipe_is_a_normalised_density(bench):
    """The per-dimension RBIG peer's log-dets are right: exp(-NLL) integrates to about 1 on a grid."""
    data, peers, kd = bench["suite_data"], bench["suite_peers"], bench["known_densities"]
    task = data.known_task("banana", 2, n_train=1500, n_val=500, n_test=10)
    g = np.linspace(-7, 7, 141, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    fit = peers.sklearn_rbig(data.Task(**{**task.__dict__, "test": grid}), budget=60.0)
    mass = np.sum(np.exp(-fit.test_nll)) * (g[1] - g[0]) ** 2
    assert 0.97 < mass < 1.01
    assert "layers (validation)" in fit.note
    del kd


def test_gaussian_floor_matches_scipy(bench):
    from scipy import stats

    data, peers = bench["suite_data"], bench["suite_peers"]
    task = data.known_task("gaussian", 3, n_train=500, n_val=10, n_test=50)
    fit = peers.gaussian(task, budget=1.0)
    x = task.train.astype(np.float64)
    ref = -stats.multivariate_normal(x.mean(0), np.cov(x.T, bias=True) + 1e-6 * np.eye(3)).logpdf(task.test)
    np.testing.assert_allclose(fit.test_nll, ref, rtol=1e-6)


def test_missing_flowjax_is_skipped_with_a_note(bench, monkeypatch):
    data, peers = bench["suite_data"], bench["suite_peers"]
    monkeypatch.setitem(sys.modules, "flowjax", None)  # import flowjax -> ImportError
    monkeypatch.setitem(sys.modules, "flowjax.distributions", None)
    task = data.known_task("gaussian", 2, n_train=50, n_val=10, n_test=10)
    for fn in (peers.flowjax_coupling, peers.flowjax_maf):
        out = fn(task, 1.0)
        assert isinstance(out, str) and out.startswith("skipped: flowjax not installed")


def _row(rep, model, nll, val=None, **kw):
    base = dict(task="t-2", dim=2, unit="nats/dim", oracle=1.0, seconds=1.0, note="", budget=10.0)
    return rep.Row(**{**base, **kw}, model=model, nll=nll, val=val)


def test_summary_picks_ours_on_validation_and_flags_shortfalls(bench):
    rep = bench["suite_report"]
    rows = [
        _row(rep, "gaussplug A", 1.05, val=2.0),  # best on test, worse on validation
        _row(rep, "gaussplug B", 1.03, val=1.0),
        _row(rep, "peer X", 1.04),
        _row(rep, "peer Y", math.nan, status="skipped"),
    ]
    (line,), short = rep.summary_rows(rows)
    assert "gaussplug B" not in line[4] and line[4].startswith("1.030 (B)")
    assert line[5] == "0.030 / 0.02" and line[6] == "**NO**" and line[8] == "yes"
    assert short == ["t-2: oracle gap 0.030 > 0.02 nats/dim"]
    rows[2] = _row(rep, "peer X", 1.01)
    (line,), short = rep.summary_rows(rows)
    assert line[8] == "**NO**" and short[0] == "t-2: peer X beats gaussplug"
    assert rep.tolerance(8) == 0.02 and rep.tolerance(64) == 0.05 and rep.tolerance(65) is None


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """``run.py --quick`` fits every model (peers skipped if missing) and writes the section."""
    out = tmp_path / "docs"
    saved = tmp_path / "rows.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(out), "--json", str(saved)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "benchmarks.md").read_text()
    assert "<!-- suite:start -->" in text and "Quick smoke run" in text and "gmm8-2" in text
    rows = json.loads(saved.read_text())["rows"]
    assert {r["status"] for r in rows} <= {"ok", "skipped"}
    ok = {r["model"] for r in rows if r["status"] == "ok"}
    assert {"gaussplug RBIG (greedy)", "gaussplug GF (warm + tune)", "sklearn GMM, full, K by validation"} <= ok
    for r in rows:
        if r["status"] == "ok":
            assert math.isfinite(r["nll"]) and r["nll"] > r["oracle"] - 0.05  # nobody beats the truth by much


def test_missing_real_data_is_refused_before_any_run(tmp_path):
    # The full suite used to run the known densities for hours, then die on the first missing data file.
    cmd = [sys.executable, str(BENCH / "run.py"), "--data", str(tmp_path / "none.npy"), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2 and "none.npy: no such file (given with --data); pass --data PATH" in proc.stderr
    assert "==" not in proc.stdout and not (tmp_path / "benchmarks.md").exists()
