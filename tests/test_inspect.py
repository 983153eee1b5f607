"""Layer-wise inspection: pushforward, diagnostics on data with known answers, report formats, plots."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import _estimators as est
from gaussplug import specs
from gaussplug._inspect import InspectionReport, inspect, pushforward, run_inspect
from gaussplug._inspect_plots import plot_curves, plot_layers, write_plots

CORR = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
TC_CORR = -0.5 * math.log(np.linalg.det(CORR))


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(0).multivariate_normal(np.zeros(3), CORR, size=5000)


@pytest.fixture(scope="module")
def skewed():
    rng = np.random.default_rng(1)
    s = np.stack([rng.gamma(1.5, size=3000), rng.uniform(-2, 2, 3000), rng.standard_t(5, 3000)], 1)
    return s @ np.linalg.qr(rng.standard_normal((3, 3)))[0]


@pytest.fixture(scope="module")
def rbig_flow(skewed):
    return gaussplug.fit_rbig(skewed, n_layers=3, n_components=6)


@pytest.fixture(scope="module")
def moons_flow():
    from sklearn.datasets import make_moons

    x, _ = make_moons(600, noise=0.08, random_state=0)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return gaussplug.fit_rbig(x, n_layers=2, n_components=4), x


# -- pushforward -------------------------------------------------------------------------------


def test_pushforward_equals_layers_one_by_one(rbig_flow, skewed):
    push = pushforward(rbig_flow, skewed)
    assert push.names == ("input", *rbig_flow.layer_names)
    assert push.data.shape == (len(rbig_flow.layer_names) + 1, *skewed.shape)
    assert push.log_dets.shape == (len(rbig_flow.layer_names), skewed.shape[0])
    x = jnp.asarray(skewed)
    np.testing.assert_array_equal(push.data[0], x)
    for i, name in enumerate(rbig_flow.layer_names):
        x, ld = rbig_flow.layer_forward(name, x)
        np.testing.assert_allclose(push[name], x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(push.log_dets[i], ld, rtol=1e-5, atol=1e-5)
    z, log_det = rbig_flow.forward_and_log_det(skewed)
    np.testing.assert_allclose(push.data[-1], z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(push.log_dets.sum(0), log_det, rtol=1e-4, atol=1e-4)


def test_pushforward_access(rbig_flow, skewed):
    push = pushforward(rbig_flow, skewed)
    stages = push.as_list()
    assert len(stages) == len(push) == len(rbig_flow.layer_names) + 1
    np.testing.assert_array_equal(stages[2], push["1_mixture_cdf"])
    with pytest.raises(KeyError, match="No layer named 'nope'"):
        push["nope"]
    # A bare notebook cell shows names and shapes, not the arrays.
    assert repr(push) == ("Pushforward(7 stages: [input, 0_householder, 1_mixture_cdf, 2_householder, ... "
                          f"5_mixture_cdf], data (7, 3000, 3) {push.data.dtype}, log_dets (6, 3000))")
    assert len(repr(push)) < 200


def test_pushforward_compiles_once_per_plan(rbig_flow, skewed):
    from gaussplug._inspect import _push_fn

    fn = _push_fn(rbig_flow.runtime)
    pushforward(rbig_flow, skewed)
    before = fn._cache_size()
    pushforward(rbig_flow.replace(params=rbig_flow.params), skewed)
    assert fn._cache_size() == before


# -- estimators on known answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "draw, truth",
    [
        (lambda r, n: r.standard_normal(n), 0.5 * math.log(2 * math.pi * math.e)),
        (lambda r, n: r.uniform(0, 3, n), math.log(3)),
        (lambda r, n: r.exponential(2.0, n), 1 + math.log(2)),
    ],
    ids=["normal", "uniform", "exponential"],
)
def test_marginal_entropy_known(draw, truth):
    x = draw(np.random.default_rng(5), (4000, 4))
    np.testing.assert_allclose(est.marginal_entropy(x), truth, atol=0.05)


def test_gaussian_diagnostics(gaussian):
    assert abs(est.marginal_negentropy(gaussian).sum()) < 0.05
    assert est.ks_normal(gaussian).max() < 0.03
    assert est.gaussian_copula_tc(gaussian) == pytest.approx(TC_CORR, abs=0.03)
    u = np.random.default_rng(2).uniform(size=(5000, 2))
    assert est.marginal_negentropy(u) == pytest.approx(0.5 * math.log(2 * math.pi * math.e / 12), abs=0.03)
    assert est.ks_normal(u).max() > 0.4


def test_inspect_gaussian_data_known_answers(gaussian):
    flow = gaussplug.warm_start(gaussplug.build_flow({"dim": 3, "layers": [{"family": "householder"}]}), gaussian)
    cols = inspect(flow, gaussian).to_dict()
    assert cols["layer"] == ["input", "0_householder"]
    assert abs(cols["negentropy"][0]) < 0.05
    assert cols["total_correlation"][0] == pytest.approx(TC_CORR, abs=0.05)
    assert cols["tc_gaussian"][0] == pytest.approx(TC_CORR, abs=0.03)
    assert abs(cols["total_correlation"][1]) < 0.03  # PCA leaves independent Gaussians
    assert cols["ks_max"][0] < 0.03
    assert cols["mean_norm"][0] < 0.05
    assert cols["cov_dist"][0] == pytest.approx(np.linalg.norm(CORR - np.eye(3)), abs=0.1)
    ll = float(jnp.mean(flow.log_prob(gaussian)))
    assert cols["log_likelihood"][-1] == pytest.approx(ll, abs=1e-3)


def test_rotation_push_pull_known_answer():
    """Independent uniforms rotated by 45 degrees, and a rotation layer that undoes it.

    Input marginals are triangular: negentropy 2 (0.5 log(2 pi e) - 0.5 - 0.5 log 6) = 0.046,
    TC = 1 - log 2 = 0.307. After un-rotating: uniform marginals, negentropy
    2 (0.5 log(2 pi e) - log(2 sqrt 3)) = 0.353, TC = 0. Their sum is the same.
    """
    s = np.random.default_rng(4).uniform(-math.sqrt(3), math.sqrt(3), size=(8000, 2))
    c = math.sqrt(0.5)
    r45 = np.array([[c, -c], [c, c]])
    x = s @ r45
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "rotation"}]})
    flow = flow.with_layer_params("0_rotation", {"~": {"matrix": jnp.asarray(r45.T, flow.dtype)}})
    cols = inspect(flow, x).to_dict()
    h_gauss = 0.5 * math.log(2 * math.pi * math.e)
    assert cols["negentropy"][0] == pytest.approx(2 * (h_gauss - 0.5 - 0.5 * math.log(6)), abs=0.02)
    assert cols["negentropy"][1] == pytest.approx(2 * (h_gauss - math.log(2 * math.sqrt(3))), abs=0.02)
    assert cols["total_correlation"][0] == pytest.approx(1 - math.log(2), abs=0.03)
    assert cols["total_correlation"][1] == pytest.approx(0.0, abs=0.02)
    assert cols["non_gaussianity"][0] == pytest.approx(cols["non_gaussianity"][1], abs=1e-6)
    neg_tc = [n + t for n, t in zip(cols["negentropy"], cols["total_correlation"], strict=True)]
    assert neg_tc[0] == pytest.approx(neg_tc[1], abs=0.01)  # moments are unchanged here


def test_random_rotations_keep_total_non_gaussianity(skewed):
    spec = {"dim": 3, "layers": [{"family": "standardize"}, {"family": "rotation", "method": "random"},
                                 {"family": "householder"}]}  # fmt: skip
    flow = gaussplug.warm_start(gaussplug.build_flow(spec), skewed, key=3)
    cols = inspect(flow, skewed).to_dict()
    total, neg = np.array(cols["non_gaussianity"]), np.array(cols["negentropy"])
    np.testing.assert_allclose(total[1:], total[1], atol=1e-3)  # rotations keep KL(p || N(0, I)) ...
    assert np.ptp(neg[1:]) > 0.02  # ... while moving it between marginal and joint terms
    assert cols["log_det"][2:] == [0.0, 0.0]


def test_marginal_layers_remove_negentropy(rbig_flow, skewed):
    cols = inspect(rbig_flow, skewed).to_dict()
    for i, fam in enumerate(cols["family"]):
        if fam == "mixture_cdf":
            assert cols["negentropy"][i] < 0.5 * cols["negentropy"][i - 1] + 0.01, cols["layer"][i]
            assert cols["non_gaussianity"][i] < cols["non_gaussianity"][i - 1]
            assert cols["ks_max"][i] < 0.05
            assert cols["log_likelihood"][i] > cols["log_likelihood"][i - 1]
    assert cols["non_gaussianity"][-1] < 0.25 * cols["non_gaussianity"][0]
    assert all(tc >= tcg - 1e-9 for tc, tcg in zip(cols["total_correlation"], cols["tc_gaussian"], strict=True))
    ws = rbig_flow.metadata["warm_start"]["log_likelihood"]
    np.testing.assert_allclose(cols["log_likelihood"][1:], ws, atol=2e-3)


# -- formats and files ---------------------------------------------------------------------------


def test_report_formats(rbig_flow, skewed):
    report = inspect(rbig_flow, skewed)
    assert isinstance(report, InspectionReport) and len(report) == 7
    d = report.to_dict()
    assert set(d) >= {"layer", "family", "log_det", "log_likelihood", "negentropy", "total_correlation",
                      "non_gaussianity", "ks_max", "mean_norm", "cov_dist"}  # fmt: skip
    assert all(len(v) == 7 for v in d.values())
    assert d["log_det"][0] is None and d["family"][0] == "-"
    d["layer"].append("x")
    assert len(report.to_dict()["layer"]) == 7  # to_dict returns copies
    loaded = json.loads(report.to_json())
    assert loaded["n_rows"] == 3000 and loaded["dim"] == 3 and loaded["layers"]["layer"] == report.columns["layer"]
    lines = str(report).splitlines()
    assert len(lines) == 3 + 7
    header = lines[1].split()
    assert header[:4] == ["layer", "family", "log_det", "loglik"] and "TC" in header
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    # repr is one line; IPython / Jupyter pretty-printing shows the table.
    assert repr(report) == "InspectionReport(7 rows: input and 6 layers; 3000 samples, dim 3; print() it for the table)"

    class Printer:
        def text(self, t):
            self.out = t

    printer = Printer()
    report._repr_pretty_(printer, False)
    assert printer.out == str(report)


def test_plots_write_files(tmp_path, rbig_flow, skewed, moons_flow):
    report = inspect(rbig_flow, skewed)
    paths = write_plots(report, tmp_path / "three")
    assert [p.endswith("inspect_curves.png") for p in paths] == [True]
    flow2, moons = moons_flow
    push = pushforward(flow2, moons)
    assert len(plot_layers(push).axes) == 5 + 1  # panels and the colour bar
    assert len(plot_curves(inspect(flow2, moons)).axes) == 2
    paths = write_plots(inspect(flow2, moons), tmp_path / "two", push=push)
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["inspect_curves.png", "inspect_layers.png"]
    for p in paths:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2-D"):
        plot_layers(pushforward(rbig_flow, skewed))


@pytest.mark.parametrize("ext", [".npy", ".csv"])
def test_run_inspect(tmp_path, moons_flow, ext):
    flow, moons = moons_flow
    model = gaussplug.save(flow, tmp_path / "m.npz")
    data = tmp_path / f"x{ext}"
    if ext == ".npy":
        np.save(data, moons)
    else:
        np.savetxt(data, moons, delimiter=",", header="a,b", comments="")
    out = run_inspect(model, data, tmp_path / "out")
    names = sorted(p.rsplit("/", 1)[1] for p in out["files"])
    assert names == ["inspect.json", "inspect.txt", "inspect_curves.png", "inspect_layers.png"]
    assert out["n_rows"] == len(moons) and out["dim"] == 2
    text = (tmp_path / "out" / "inspect.txt").read_text()
    assert "1_mixture_cdf" in text and "neg+mom+TC" in text
    assert json.loads((tmp_path / "out" / "inspect.json").read_text())["layers"]["layer"] == out["report"]["layer"]


def test_run_inspect_wrong_dimension(tmp_path, moons):
    flow = gaussplug.build_flow(specs.gaussianization_flow(3, n_layers=1))
    model = gaussplug.save(flow, tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", moons)
    with pytest.raises(gaussplug.DataError, match="3-dimensional"):
        run_inspect(model, tmp_path / "x.npy", tmp_path / "out")


def test_run_inspect_checks_out_and_constant_columns_before_any_work(tmp_path, moons):
    flow = gaussplug.build_flow(specs.gaussianization_flow(2, n_layers=1))
    model = gaussplug.save(flow, tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", moons)
    (tmp_path / "afile").write_text("")
    for out, match in [
        (tmp_path / "afile", r"--out: expected a directory; '.*afile' is an existing file"),
        (tmp_path / "afile" / "sub", r"--out: cannot create '.*sub': '.*afile' is a file"),
        ("", r"--out: expected a directory path; got ''"),
    ]:
        with pytest.raises(gaussplug.DataError, match=match):
            run_inspect(tmp_path / "missing.npz", tmp_path / "x.npy", out)  # fails before the model is read
    const = moons.copy()
    const[:, 1] = 3.0
    np.save(tmp_path / "c.npy", const)
    needle = r"c.npy: constant column: column index 1 = 3\. A density over a constant column"
    with pytest.raises(gaussplug.DataError, match=needle):
        run_inspect(model, tmp_path / "c.npy", tmp_path / "out")
    # A CSV file is named as an editor shows it: 1-based columns (with the header's name if any), file lines.
    np.savetxt(tmp_path / "c.csv", const, delimiter=",")
    with pytest.raises(gaussplug.DataError, match=r"c.csv: constant column: column 2 = 3\. "):
        run_inspect(model, tmp_path / "c.csv", tmp_path / "out")
    bad = moons.copy()
    bad[4, 0] = np.nan
    np.savetxt(tmp_path / "n.csv", bad, delimiter=",", header="a,b", comments="")
    with pytest.raises(gaussplug.DataError, match=r"n.csv: line 6, column 1 \('a'\) holds 'nan'"):
        run_inspect(model, tmp_path / "n.csv", tmp_path / "out")


def test_inspect_json_is_strict_json_with_null_for_non_finite_values(moons_flow):
    flow, moons = moons_flow
    report = inspect(flow, moons[:200])
    report.columns["tc_gaussian"][0] = math.inf
    text = report.to_json()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["layers"]["tc_gaussian"][0] is None


def test_one_dimensional_data_has_zero_total_correlation():
    x = np.random.default_rng(0).standard_t(3, size=(800, 1)).astype(np.float32)
    flow = gaussplug.warm_start(gaussplug.build_flow(specs.gaussianization_flow(1, n_layers=2)), x, progress=False)
    cols = inspect(flow, x).columns
    assert cols["total_correlation"] == [0.0] * 5  # one variable: no dependence, so TC = 0 by definition
    np.testing.assert_allclose(cols["non_gaussianity"], np.add(cols["negentropy"], cols["moment_kl"]))
    assert cols["non_gaussianity"][0] > 0.1 > abs(cols["non_gaussianity"][-1])  # Student-t(3) tails, then Gaussian


def test_the_docs_name_every_to_dict_key():
    import pathlib

    from gaussplug._inspect import _COLUMNS

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "inspection.md").read_text()
    assert all(f"`{key}`" in text for key, _, _ in _COLUMNS)
