"""Depth selection in fit_rbig(n_layers="auto"): structure, equivalence to fixed depth, stopping rules."""

import warnings

import jax
import numpy as np
import pytest

import gaussplug
from gaussplug import specs


@pytest.fixture(scope="module")
def mixed():
    rng = np.random.default_rng(0)
    s = np.stack([rng.gamma(1.5, size=2000), rng.uniform(-2, 2, 2000), rng.standard_t(5, 2000)], 1)
    x = s @ np.array([[1.0, 0.5, 0.0], [0.3, 1.0, 0.4], [0.0, 0.6, 1.0]])
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


@pytest.fixture(scope="module")
def auto_flow(mixed):
    return gaussplug.fit_rbig(mixed, n_layers="auto", n_components=4, max_layers=12, patience=2)


def test_auto_has_the_structure_of_the_chosen_depth(auto_flow):
    sel = auto_flow.metadata["depth_selection"]
    chosen = sel["chosen"]
    assert 1 <= chosen <= sel["n_evaluated"] <= 12
    want = gaussplug.build_flow(specs.gaussianization_flow(3, n_layers=chosen, n_components=4))
    assert auto_flow.spec == want.spec
    assert auto_flow.layer_names == want.layer_names
    assert len(auto_flow.metadata["warm_start"]["layer"]) == 2 * chosen


def test_auto_equals_fixed_depth_fit(auto_flow, mixed):
    chosen = auto_flow.metadata["depth_selection"]["chosen"]
    fixed = gaussplug.fit_rbig(mixed, n_layers=chosen, n_components=4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), auto_flow.params, fixed.params)
    np.testing.assert_allclose(
        auto_flow.metadata["warm_start"]["log_likelihood"], fixed.metadata["warm_start"]["log_likelihood"], atol=1e-3
    )


def test_tail_weight_reaches_fixed_and_auto_depth_fits(mixed):
    x = mixed[:600]
    fixed = gaussplug.fit_rbig(x, n_layers=2, n_components=3, tail_weight=0.01)
    assert fixed.spec == specs.gaussianization_flow(3, n_layers=2, n_components=3, tail_weight=0.01)
    plain = gaussplug.fit_rbig(x, n_layers=2, n_components=3)
    assert np.max(np.abs(np.asarray(fixed.log_prob(x)) - np.asarray(plain.log_prob(x)))) > 1e-4
    with warnings.catch_warnings():  # the rule may hit this small cap; the cap warning is tested elsewhere
        warnings.simplefilter("ignore", gaussplug.WarmStartWarning)
        auto = gaussplug.fit_rbig(x, n_layers="auto", n_components=3, max_layers=3, patience=1, tail_weight=0.01)
    chosen = auto.metadata["depth_selection"]["chosen"]
    assert auto.spec == specs.gaussianization_flow(3, n_layers=chosen, n_components=3, tail_weight=0.01)
    same = gaussplug.fit_rbig(x, n_layers=chosen, n_components=3, tail_weight=0.01)
    np.testing.assert_allclose(auto.log_prob(x), same.log_prob(x), rtol=1e-4, atol=1e-4)


def test_rbig_rule_record_and_stopping(auto_flow):
    sel = auto_flow.metadata["depth_selection"]
    assert sel["criterion"] == "information_reduction" and sel["patience"] == 2
    assert 0 < sel["tol"] < 0.1
    red = np.array(sel["non_gaussianity_reduction"])
    assert len(red) == len(sel["tc_reduction"]) == sel["n_evaluated"]
    assert len(sel["fit_log_likelihood"]) == sel["n_evaluated"] + 1
    chosen = sel["chosen"]
    assert red[chosen - 1] >= sel["tol"] or chosen == 1
    assert np.all(red[chosen:] < sel["tol"])  # everything trimmed was below tol
    if sel["stopped"] == "patience":
        assert sel["n_evaluated"] - chosen == 2
    assert np.all(np.diff(sel["fit_log_likelihood"]) > -1e-3)  # greedy blocks never lower the likelihood
    assert sel["validation_log_likelihood"] is None


def test_auto_defaults_are_recorded():
    from gaussplug._warm import AUTO_MAX_LAYERS, AUTO_PATIENCE

    x = np.random.default_rng(3).normal(size=(300, 2))
    sel = gaussplug.fit_rbig(x, n_layers="auto", n_components=2).metadata["depth_selection"]
    assert (sel["max_layers"], sel["patience"]) == (AUTO_MAX_LAYERS, AUTO_PATIENCE) == (50, 3)


def test_gaussian_data_needs_one_block():
    cov = np.array([[1.0, 0.7, 0.2], [0.7, 1.0, 0.5], [0.2, 0.5, 1.0]])
    x = np.random.default_rng(1).multivariate_normal(np.zeros(3), cov, size=3000)
    flow = gaussplug.fit_rbig(x, n_layers="auto", n_components=4)
    sel = flow.metadata["depth_selection"]
    assert sel["chosen"] == 1, sel["non_gaussianity_reduction"]
    tc = -0.5 * np.log(np.linalg.det(cov))
    assert sel["tc_reduction"][0] == pytest.approx(tc, abs=0.05)  # PCA removes all of it
    # KL(N(0, cov) || N(0, I)) = TC here (unit variances): the first block removes it all.
    assert sel["non_gaussianity_reduction"][0] == pytest.approx(tc, abs=0.05)


def test_explicit_tol(mixed):
    flow = gaussplug.fit_rbig(mixed, n_layers="auto", n_components=4, tol=1e9, patience=1)
    sel = flow.metadata["depth_selection"]
    assert sel["tol"] == 1e9 and sel["chosen"] == 1 and sel["n_evaluated"] == 1


@pytest.mark.parametrize("validation", [0.25, "array"])
def test_validation_rule(mixed, validation):
    held = np.random.default_rng(9).permutation(mixed)[:400] if validation == "array" else validation
    with warnings.catch_warnings():  # the rule may hit the cap on this data; the cap warning is tested elsewhere
        warnings.simplefilter("ignore", gaussplug.WarmStartWarning)
        flow = gaussplug.fit_rbig(mixed, n_layers="auto", n_components=4, max_layers=8, patience=2, validation=held)
    sel = flow.metadata["depth_selection"]
    assert sel["criterion"] == "validation"
    val = np.array(sel["validation_log_likelihood"])
    assert len(val) == sel["n_evaluated"] + 1
    chosen, tol = sel["chosen"], sel["tol"]
    assert val[chosen] == val[1 : chosen + 1].max()  # the best depth so far ...
    assert np.all(val[chosen + 1 :] <= val[chosen] + tol)  # ... and nothing later beat it by more than tol
    assert sel["n_validation_rows"] == (500 if validation == 0.25 else 400)
    assert sel["n_fit_rows"] == (1500 if validation == 0.25 else 2000)
    assert len(flow.layer_names) == 2 * sel["chosen"]


def test_fixed_depth_unchanged_and_argument_errors(mixed):
    flow = gaussplug.fit_rbig(mixed, n_layers=2, n_components=4)
    assert "depth_selection" not in flow.metadata and len(flow.layer_names) == 4
    with pytest.raises(ValueError, match="only with n_layers='auto'"):
        gaussplug.fit_rbig(mixed, n_layers=2, validation=0.2)
    # every depth-choosing option is refused with a fixed depth, never silently ignored; the error names them all
    for name, value in (("patience", 7), ("max_layers", 3), ("tol", 0.01)):
        with pytest.raises(ValueError, match=rf"fit_rbig: {name} applies only with n_layers='auto' .*n_layers=2"):
            gaussplug.fit_rbig(mixed, n_layers=2, **{name: value})
    with pytest.raises(ValueError, match=r"fit_rbig: max_layers, patience apply only .* Drop max_layers and patience"):
        gaussplug.fit_rbig(mixed, n_layers=np.int64(2), max_layers=3, patience=1)
    with pytest.raises(ValueError, match="'auto'"):
        gaussplug.fit_rbig(mixed, n_layers="deep")
    with pytest.raises(ValueError, match="fraction in"):
        gaussplug.fit_rbig(mixed, n_layers="auto", validation=1.5)
    with pytest.raises(ValueError, match="patience"):
        gaussplug.fit_rbig(mixed, n_layers="auto", patience=0)
    with pytest.raises(gaussplug.DataError, match="validation"):
        gaussplug.fit_rbig(mixed, n_layers="auto", validation=np.zeros((5, 2)))


def _heldout_curve(flow, x):
    """Held-out mean NLL after 0, 1, ..., n_blocks blocks (one pass)."""
    from gaussplug._inspect import pushforward

    push = pushforward(flow, x)
    data, ld = np.asarray(push.data, np.float64), np.asarray(push.log_dets, np.float64)
    cum = np.concatenate([np.zeros((1, len(x))), np.cumsum(ld, 0)])
    d = x.shape[1]
    return np.array(
        [np.mean(0.5 * (data[k] ** 2).sum(1) + 0.5 * d * np.log(2 * np.pi) - cum[k]) for k in range(0, len(data), 2)]
    )


def _check_depth_near_heldout_optimum(train, test, max_blocks, slack):
    curve = _heldout_curve(gaussplug.fit_rbig(train, n_layers=max_blocks), test)
    auto = gaussplug.fit_rbig(train, n_layers="auto", max_layers=max_blocks)
    chosen = auto.metadata["depth_selection"]["chosen"]
    best = curve.min()
    gain = curve[0] - best
    # The chosen depth captures all but `slack` of the achievable held-out gain.
    assert curve[chosen] - best <= slack * gain, (chosen, curve.round(3).tolist())
    nll = -float(np.mean(np.asarray(auto.log_prob(test), np.float64)))
    assert nll == pytest.approx(curve[chosen], abs=1e-2)
    return chosen, curve


@pytest.mark.slow
def test_moons_depth_near_heldout_optimum():
    from sklearn.datasets import make_moons

    tr, _ = make_moons(3000, noise=0.08, random_state=0)
    te, _ = make_moons(3000, noise=0.08, random_state=1)
    mu, sd = tr.mean(0), tr.std(0)
    chosen, curve = _check_depth_near_heldout_optimum((tr - mu) / sd, (te - mu) / sd, 16, slack=0.05)
    assert chosen >= 8  # moons needs many blocks; the rule must not stop at the first stall


@pytest.mark.slow
def test_digits_depth_near_heldout_optimum():
    from sklearn.datasets import load_digits

    x = load_digits().data + np.random.default_rng(0).uniform(size=(1797, 64))
    perm = np.random.default_rng(1).permutation(len(x))
    tr, te = x[perm[:1437]], x[perm[1437:]]
    mu, sd = tr.mean(0), tr.std(0)
    chosen, curve = _check_depth_near_heldout_optimum((tr - mu) / sd, (te - mu) / sd, 12, slack=0.01)
    assert chosen <= 6  # small data overfits: deep RBIG gets worse (PEERS lesson 2)
    assert curve[-1] > curve.min() + 1.0


def test_auto_depth_argument_and_data_checks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    for kwargs, error, match in [
        ({"tol": float("nan")}, ValueError, r"tol: expected a finite number >= 0 \(nats per block\) or None; got nan"),
        ({"tol": "abc"}, ValueError, r"tol: expected a finite number >= 0 .*; got 'abc'"),
        ({"tol": -1.0}, ValueError, r"tol: expected a finite number >= 0 .*; got -1\.0"),  # could never stop
        ({"progress": "no"}, ValueError, r"progress: expected True or False; got 'no'"),
        ({"validation": True}, ValueError, r"validation: expected a fraction in \(0, 1\), an array or None; got True"),
    ]:
        with pytest.raises(error, match=match):
            gaussplug.fit_rbig(x, n_layers="auto", **kwargs)
    with pytest.raises(gaussplug.DataError, match=r"n_layers='auto' needs at least 4 rows .*; got 3"):
        gaussplug.fit_rbig(x[:3], n_layers="auto")
    c = x.copy()
    c[:, 1] = 5.0
    with pytest.raises(gaussplug.DataError, match=r"x: constant column\(s\) 1 \(= 5\)"):
        gaussplug.fit_rbig(c, n_layers="auto", validation=0.2)


def test_reaching_max_layers_warns_that_the_depth_is_a_cap(mixed):
    # patience=3 can never be met within 2 blocks: the depth returned is the cap, and the user is told so.
    with pytest.warns(gaussplug.WarmStartWarning, match=r"did not stop within max_layers=2 .* is a cap") as seen:
        flow = gaussplug.fit_rbig(mixed, n_layers="auto", n_components=3, max_layers=2)
    assert flow.metadata["depth_selection"]["stopped"] == "max_layers"
    assert seen[0].filename == __file__  # attributed to the caller, not to a line inside gaussplug
    with pytest.warns(gaussplug.WarmStartWarning, match=r"validation log-likelihood gains"):
        gaussplug.fit_rbig(mixed, n_layers="auto", n_components=3, max_layers=2, validation=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gaussplug.WarmStartWarning)
        gaussplug.fit_rbig(mixed, n_layers="auto", n_components=3, max_layers=12, patience=1)  # stops by the rule
        gaussplug.information.estimate(mixed[:400], max_layers=2)  # its phases hand on: no cap warning


def test_a_validation_fraction_holds_out_the_rows_fine_tune_holds_out(mixed):
    # fit_rbig(n_layers="auto", validation=f, key=k) and fine_tune(..., validation=f, key=k) keep the same rows
    # out, so the flow chosen on held-out rows is not then fine-tuned on them. Depth 0 is the identity, so
    # fit_rbig's first validation log-likelihood is the standard normal's on its held-out rows; fine_tune's
    # step-0 validation NLL is the input flow's on its own.
    from gaussplug._batching import holdout_rows
    from gaussplug._keys import as_key

    x = np.asarray(mixed[:600], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gaussplug.WarmStartWarning)
        chosen = gaussplug.fit_rbig(x, n_layers="auto", n_components=2, max_layers=1, patience=1, validation=0.2, key=5)
    _, rows = holdout_rows(as_key(5), x.shape[0], 120)
    normal = -0.5 * np.sum(x.astype(np.float64) ** 2, axis=1) - 0.5 * x.shape[1] * np.log(2 * np.pi)
    val0 = chosen.metadata["depth_selection"]["validation_log_likelihood"][0]
    assert val0 == pytest.approx(normal[rows].mean(), abs=1e-6)
    others = np.setdiff1d(np.arange(x.shape[0]), rows)[:120]
    assert abs(normal[others].mean() - val0) > 1e-3  # another set of rows would show

    flow = gaussplug.build_flow(specs.gaussianization_flow(x.shape[1], n_layers=1, n_components=2), key=1)
    _, hist = gaussplug.fine_tune(flow, x, steps=1, validation=0.2, key=5, progress=False)
    per_row = -np.asarray(flow.log_prob(x), np.float64)
    assert hist["val_nll"][0] == pytest.approx(per_row[rows].mean(), rel=1e-5)
