"""Tests for ``gaussplug._train.fine_tune`` (maximum-likelihood fine-tuning)."""

import re
import warnings

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gaussplug
from gaussplug import DataError, _train
from gaussplug._train import TrainingWarning, fine_tune
from gaussplug._train_result import _SCALE_HINT, _warn_if_worse

# standardize -> householder -> rotation (frozen by default) -> standardize
SPEC = {
    "dim": 2,
    "layers": [
        {"family": "standardize"},
        {"family": "householder"},
        {"family": "rotation"},
        {"family": "standardize"},
    ],
}
# A cheaper flow with both trainable and frozen params (compiles fast).
LIGHT_SPEC = {"dim": 2, "layers": [{"family": "standardize"}, {"family": "rotation"}]}
SHIFT_SPEC = {"dim": 2, "layers": [{"family": "standardize"}]}
HISTORY_KEYS = {
    "loss",
    "val_nll",
    "val_step",
    "best_step",
    "best_val_nll",
    "steps_run",
    "stopped",
    "non_finite",
    "wall_time",
    "compile_time",
    "steps_per_second",
    "devices",
    "opt_state",
}


def data(n=200, seed=0, mean=(2.0, -1.0), dtype=np.float32):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    return (z @ np.array([[2.0, 0.0], [1.5, 0.5]]) + np.asarray(mean)).astype(dtype)


def leaves(flow):
    return jax.tree_util.tree_leaves_with_path(flow.params)


def assert_params_close(a, b, rtol=1e-6, atol=1e-7):
    for (path, x), (_, y) in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=str(path))


def assert_params_identical(a, b):
    for (path, x), (_, y) in zip(leaves(a), leaves(b), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), path


def val_nll(flow, x):
    return -float(np.mean(np.asarray(flow.log_prob(x), np.float64)))


def adam_overridden(override, lr=1e-2):
    """Adam whose update leaves ``u`` at step ``count`` (1-based) become ``override(count, u)``."""
    base = optax.adam(lr)

    def init(params):
        return base.init(params), jnp.zeros((), jnp.int32)

    def update(grads, state, params=None):
        updates, inner = base.update(grads, state[0], params)
        count = state[1] + 1
        return jax.tree.map(lambda u: override(count, u), updates), (inner, count)

    return optax.GradientTransformation(init, update)


def nan_after(k, lr=1e-2):
    """Adam whose updates turn NaN from step k + 1 on."""
    return adam_overridden(lambda count, u: jnp.where(count > k, jnp.nan, u), lr)


# -- a traced-call counter: a family whose make_bijector counts its traces --------
TRACES = {"n": 0}


class _CountingShift(gaussplug.VectorBijector):
    def __init__(self, dim, shift):
        super().__init__(dim)
        self.shift = shift

    def _forward_and_log_det(self, x):
        return x - self.shift, jnp.zeros(x.shape[:-1], x.dtype)

    def _inverse_and_log_det(self, y):
        return y + self.shift, jnp.zeros(y.shape[:-1], y.dtype)


def _make_counting_shift(dim):
    TRACES["n"] += 1
    shift = hk.get_parameter("shift", (dim,), jax.dtypes.canonicalize_dtype(jnp.float64), init=jnp.zeros)
    return _CountingShift(dim, shift)


class _CountingPlugin:
    @staticmethod
    @gaussplug.hookimpl
    def gaussplug_register_families(register):
        register(gaussplug.Family("test_counting_shift", _make_counting_shift))


@pytest.fixture(scope="module")
def counting_family():
    name = gaussplug.register(_CountingPlugin, name="test_train_counting")
    yield "test_counting_shift"
    gaussplug.unregister(name)


# -- behaviour ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned():
    """One fine-tuning run of the full SPEC (householder included), shared by several tests."""
    flow, x, xv = gaussplug.build_flow(SPEC, key=3), data(), data(n=100, seed=1)
    before = flow.params
    new, history = fine_tune(
        flow, x, steps=60, batch_size=64, peak_lr=0.05, validation=xv, eval_every=20, progress=False
    )
    return flow, before, x, xv, new, history


def test_loss_decreases_and_input_flow_untouched(tuned):
    flow, before, x, _, new, history = tuned
    loss = history["loss"]
    assert loss.shape == (60,) and np.isfinite(loss).all()
    assert loss[-10:].mean() < loss[:10].mean() - 0.5
    assert val_nll(new, x) < val_nll(flow, x) - 0.5
    assert new is not flow
    assert_params_identical(gaussplug.Flow(flow.plan, before), flow)
    assert history["stopped"] == "completed" and history["steps_run"] == 60
    assert new.metadata["fine_tune"] == {
        "steps_run": 60,
        "stopped": "completed",
        "best_step": history["best_step"],
        "best_val_nll": history["best_val_nll"],
    }


def test_trainable_params_change_and_frozen_stay_bit_identical(tuned):
    flow, _, _, _, new, history = tuned
    assert history["best_step"] > 0
    mask = flow.trainable_mask()
    assert mask["2_rotation"]["~"]["matrix"] is False
    flat_mask = jax.tree.leaves(mask)
    for trainable, (path, old), (_, got) in zip(flat_mask, leaves(flow), leaves(new), strict=True):
        old, got = np.asarray(old), np.asarray(got)
        assert got.dtype == old.dtype and got.shape == old.shape
        if trainable:
            assert np.all(got != old), path
        else:
            assert got.tobytes() == old.tobytes(), path


def test_validation_array(tuned):
    _, _, _, xv, new, h = tuned
    assert h["val_step"] == [0, 20, 40, 60]
    assert len(h["val_nll"]) == 4 and np.isfinite(h["val_nll"]).all()
    assert h["best_val_nll"] == min(h["val_nll"])
    assert h["best_step"] == h["val_step"][int(np.argmin(h["val_nll"]))]
    np.testing.assert_allclose(val_nll(new, xv), h["best_val_nll"], rtol=1e-5)


def test_custom_optimizer_matches_manual_full_batch_sgd():
    flow, x = gaussplug.build_flow(LIGHT_SPEC, key=1), data(n=64)
    new, history = fine_tune(flow, x, steps=5, batch_size=1000, optimizer=optax.sgd(0.05), progress=False)
    mask = flow.trainable_mask()
    params = flow.params
    grad = jax.jit(jax.grad(lambda p: -jnp.mean(flow.runtime._log_prob(p, jnp.asarray(x)))))
    losses = []
    for _ in range(5):
        losses.append(-float(jnp.mean(flow.runtime._log_prob(params, jnp.asarray(x)))))
        g = grad(params)
        params = jax.tree.map(lambda p, gi, m: p - 0.05 * gi if m else p, params, g, mask)
    assert_params_close(new, flow.replace(params=params), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-5)


def test_opt_state_resumes_a_run_where_it_stopped():
    # Full batches (every step uses all rows), so 20 + 20 resumed steps are the very steps of one 40-step run.
    flow, x = gaussplug.build_flow(SPEC, key=1), data(n=64)
    opt = optax.adam(0.05)
    kw = {"batch_size": 1000, "optimizer": opt, "progress": False}
    whole, hw = fine_tune(flow, x, steps=40, **kw)
    first, h1 = fine_tune(flow, x, steps=20, **kw)
    count = jax.tree.leaves(h1["opt_state"])[0]
    assert int(count) == 20  # Adam's step count: the state after the last step
    resumed, h2 = fine_tune(first, x, steps=20, opt_state=h1["opt_state"], **kw)
    assert_params_close(resumed, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([h1["loss"], h2["loss"]]), hw["loss"], rtol=1e-5)
    restarted, _ = fine_tune(first, x, steps=20, **kw)  # a fresh Adam state (bias correction restarts) differs
    gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for (_, a), (_, b) in zip(leaves(restarted), leaves(whole), strict=True))  # fmt: skip
    assert gap > 1e-3
    # A host copy of the state (NumPy arrays, as pickled in the guide) resumes the same way.
    again, _ = fine_tune(first, x, steps=20, opt_state=jax.tree.map(np.asarray, h1["opt_state"]), **kw)
    assert_params_close(again, resumed, rtol=0, atol=0)


def test_opt_state_errors_name_what_is_wrong():
    flow, x = gaussplug.build_flow(SPEC, key=1), data(n=64)
    opt = optax.adam(0.05)
    kw = {"batch_size": 1000, "progress": False}
    _, h = fine_tune(flow, x, steps=2, optimizer=opt, **kw)
    state = h["opt_state"]
    with pytest.raises(ValueError, match=r"^opt_state: resuming needs the optimizer that made the state"):
        fine_tune(flow, x, steps=2, opt_state=state, **kw)  # the default optimiser
    other = gaussplug.build_flow(LIGHT_SPEC)
    with pytest.raises(ValueError, match=r"^opt_state: expected the state of this optimizer .* structure differs"):
        fine_tune(other, x, steps=2, optimizer=opt, opt_state=state, **kw)
    with pytest.raises(ValueError, match=r"structure differs"):
        fine_tune(flow, x, steps=2, optimizer=optax.sgd(0.1, momentum=0.9), opt_state=state, **kw)
    leaves_, treedef = jax.tree.flatten(state)
    i = next(j for j, a in enumerate(leaves_) if np.ndim(a) > 0)
    path = jax.tree_util.keystr(jax.tree_util.tree_leaves_with_path(state)[i][0])
    for bad, what in ((np.zeros(np.shape(leaves_[i]) + (2,), np.float32), "expected shape"),
                      (np.full(np.shape(leaves_[i]), np.nan, np.float32), "expected finite values; .* NaN or inf")):
        broken = jax.tree.unflatten(treedef, [bad if j == i else a for j, a in enumerate(leaves_)])
        with pytest.raises(ValueError, match=rf"^opt_state{re.escape(path)}: {what}"):
            fine_tune(flow, x, steps=2, optimizer=opt, opt_state=broken, **kw)
    floats = jax.tree.unflatten(treedef, [np.asarray(a, np.float32) for a in leaves_])  # the int count as float
    with pytest.raises(ValueError, match=r"dtype int32 .* got shape \(\) and dtype float32"):
        fine_tune(flow, x, steps=2, optimizer=opt, opt_state=floats, **kw)


def test_validation_fraction_default_eval_every_and_last_step():
    flow, x = gaussplug.build_flow(LIGHT_SPEC), data()
    _, h = fine_tune(flow, x, steps=25, batch_size=32, peak_lr=0.05, validation=0.25, key=7, progress=False)
    assert h["val_step"] == [0, 25]  # initial params and once per chunk (here: the only chunk)
    assert h["best_step"] in (0, 25)


def test_default_eval_every_does_not_follow_a_chunk_shrunk_by_wide_rows(monkeypatch):
    # Wide rows shrink the steps per dispatch (here to 1); the validation period stays min(steps, 200).
    monkeypatch.setattr(_train, "_MAX_CHUNK_INDICES", 64)
    flow, x = gaussplug.build_flow(LIGHT_SPEC), data()
    _, h = fine_tune(flow, x, steps=25, batch_size=32, peak_lr=0.05, validation=0.25, key=7, progress=False)
    assert h["val_step"] == [0, 25]


def test_patience_stops_early_and_keeps_best_params():
    # Train towards mean 3 from the identity; validation data centred at 1.5:
    # the validation NLL falls, then rises once the shift overshoots 1.5.
    flow = gaussplug.build_flow(SHIFT_SPEC)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(100, 2)) + 3.0).astype(np.float32)
    xv = (rng.normal(size=(100, 2)) + 1.5).astype(np.float32)
    opt = optax.adam(0.05)
    tuned, h = fine_tune(
        flow, x, steps=400, batch_size=1000, optimizer=opt, validation=xv, eval_every=2, patience=4,
        progress=False,
    )
    assert h["stopped"] == "early_stopping"
    best = h["best_step"]
    assert 0 < best < h["steps_run"] < 400
    assert h["val_step"][-5] == best and len(h["val_step"]) - h["val_step"].index(best) - 1 == 4
    assert h["best_val_nll"] == min(h["val_nll"])
    np.testing.assert_allclose(val_nll(tuned, xv), h["best_val_nll"], rtol=1e-5)
    # Same trajectory without validation, stopped at the best step.
    ref, _ = fine_tune(flow, x, steps=best, batch_size=1000, optimizer=opt, progress=False)
    assert_params_close(tuned, ref)


def test_best_step_zero_returns_initial_params_exactly():
    flow = gaussplug.build_flow(SHIFT_SPEC)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(100, 2)) + 3.0).astype(np.float32)
    xv = (rng.normal(size=(100, 2)) * 0.3).astype(np.float32)
    with pytest.warns(TrainingWarning, match=r"no evaluation improved on the starting params' validation NLL"):
        tuned, h = fine_tune(
            flow,
            x,
            steps=50,
            batch_size=1000,
            optimizer=optax.adam(0.05),
            validation=xv,
            eval_every=5,
            patience=2,
            progress=False,
        )
    assert h["best_step"] == 0 and h["stopped"] == "early_stopping" and h["steps_run"] == 10
    assert_params_identical(tuned, flow)


# -- non-finite guard -----------------------------------------------------------------
def test_non_finite_update_skipped_and_last_good_params_returned():
    flow, x = gaussplug.build_flow(LIGHT_SPEC), data()
    with pytest.warns(TrainingWarning, match=r"stopped at step 6 of 50: non-finite parameters.*Try a smaller learning "
                      r"rate \(or gradient clipping\) in the optimizer passed\.$"):  # (not peak_lr: it was not used)
        tuned, h = fine_tune(flow, x, steps=50, batch_size=64, optimizer=nan_after(5), progress=False)
    assert h["stopped"] == "non_finite" and h["steps_run"] == 5
    assert h["non_finite"] == {"step": 6, "what": "non-finite parameters after the optimiser update"}
    assert h["loss"].shape == (6,) and np.isfinite(h["loss"][:5]).all() and np.isnan(h["loss"][5])
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(tuned.params))
    ref, _ = fine_tune(flow, x, steps=5, batch_size=64, optimizer=optax.adam(1e-2), progress=False)
    assert_params_close(tuned, ref)


@pytest.mark.parametrize("custom", [False, True], ids=["default-optimizer", "custom-optimizer"])
def test_a_non_finite_stop_after_diverging_says_the_params_fit_worse(custom):
    # Three steps of a huge learning rate take the loss from 3 to hundreds before it overflows: a short run that
    # the late-loss divergence check (it needs 10 finite losses) cannot see.
    x = np.random.default_rng(0).standard_t(5, size=(2000, 2)).astype(np.float32)
    flow = gaussplug.fit_rbig(x, n_layers=2)
    kwargs = {"optimizer": optax.sgd(1e2)} if custom else {"peak_lr": 1e3, "clip_norm": 1e9}
    hint = "Try a smaller learning rate" if custom else "Try a lower peak_lr or clip_norm"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned, h = fine_tune(flow, x, steps=100, progress=False, **kwargs)
    assert h["stopped"] == "non_finite"
    message = next(str(w.message) for w in caught if "stopped at step" in str(w.message))
    assert re.search(r"The steps had diverged before that: the last finite training loss, [\d.]+, is far above the "
                     r"first step's, 3\.\d+ \(at the starting params\), so the params returned may fit much worse "
                     rf"than the starting ones\. {hint}", message), message
    assert -float(tuned.log_prob(x).mean()) > -float(flow.log_prob(x).mean()) + 10


def jump_after(k, lr=1e-2):
    """Adam whose update k is a finite jump of -1e4 (the standardize scale then overflows: non-finite loss)."""
    return adam_overridden(lambda count, u: jnp.where(count == k, -1e4, u), lr)


def test_finite_params_with_non_finite_loss_are_rolled_back():
    flow, x = gaussplug.build_flow(LIGHT_SPEC), data()
    with pytest.warns(TrainingWarning, match=r"step 5 of 50: a non-finite training loss at the params after step 4, "
                      r"so step 4's update was undone\. Returning the last good params \(step 3\)"):
        tuned, h = fine_tune(flow, x, steps=50, batch_size=64, optimizer=jump_after(4), progress=False)
    assert h["stopped"] == "non_finite" and h["steps_run"] == 3
    assert h["non_finite"] == {"step": 5, "what": "a non-finite training loss"}
    assert h["loss"].shape == (5,) and np.isfinite(h["loss"][:4]).all() and np.isnan(h["loss"][4])
    assert np.isfinite(np.asarray(tuned.log_prob(x))).all()
    ref, _ = fine_tune(flow, x, steps=3, batch_size=64, optimizer=optax.adam(1e-2), progress=False)
    assert_params_close(tuned, ref)


def test_non_finite_loss_at_the_first_step_returns_the_input_params():
    flow, x = gaussplug.build_flow(LIGHT_SPEC), data()
    bad = flow.replace(params={**flow.params, "0_standardize": {"~": {
        "shift": jnp.zeros(2), "log_scale": jnp.full(2, -1e4)}}})
    with pytest.warns(TrainingWarning, match=r"step 1 of 5: a non-finite training loss; that update was skipped") as w:
        tuned, h = fine_tune(bad, x, steps=5, batch_size=64, progress=False)
    # The step size is not the cause, so the hint points at the data and the starting params instead.
    text = str(w[0].message)
    assert "so a smaller step cannot help: check the data" in text and "peak_lr" not in text
    assert h["steps_run"] == 0 and h["loss"].shape == (1,)
    assert_params_identical(tuned, bad)
    # Every layer is finite there; the latent is too far out for its log-density.
    assert "On the first 200 training rows every layer is finite, but 200 rows land so far out in the latent" in text


class _SqrtShift(gaussplug.VectorBijector):
    """``y = sqrt(x - shift)``: NaN for rows below the shift (a broken plugin)."""

    def __init__(self, dim, shift):
        super().__init__(dim)
        self.shift = shift

    def _forward_and_log_det(self, x):
        y = jnp.sqrt(x - self.shift)
        return y, jnp.sum(-jnp.log(2 * y), axis=-1)

    def _inverse_and_log_det(self, y):
        return y * y + self.shift, jnp.sum(jnp.log(2 * y), axis=-1)


class _SqrtPlugin:
    @staticmethod
    @gaussplug.hookimpl
    def gaussplug_register_families(register):
        register(gaussplug.Family("test_sqrt", lambda dim: _SqrtShift(dim, hk.get_parameter(
            "shift", (dim,), jax.dtypes.canonicalize_dtype(jnp.float64), init=jnp.zeros))))


def test_non_finite_at_the_first_step_names_the_first_layer_giving_nan(fresh_registry):
    gaussplug.register(_SqrtPlugin, name="sqrt_plugin")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}, {"family": "test_sqrt"}]})
    with pytest.warns(TrainingWarning, match=r"step 1 of 5: .*On the first 200 training rows, the first layer to give "
                      r"NaN/inf is Layer '1_test_sqrt' \(family 'test_sqrt', plugin 'sqrt_plugin'\): \d+ of 200 rows"):
        fine_tune(flow, data(mean=(-5.0, -5.0)), steps=5, batch_size=64, progress=False)


def test_non_finite_with_validation_returns_best_validated_params():
    flow, x, xv = gaussplug.build_flow(LIGHT_SPEC), data(), data(n=50, seed=2)
    with pytest.warns(TrainingWarning, match="best validated params"):
        tuned, h = fine_tune(
            flow,
            x,
            steps=50,
            batch_size=64,
            optimizer=nan_after(7, lr=0.05),
            validation=xv,
            eval_every=3,
            progress=False,
        )
    # Evaluations at 0, 3, 6, plus the last good params (step 7) on the bad step 8.
    assert h["val_step"] == [0, 3, 6, 7] and h["stopped"] == "non_finite"
    np.testing.assert_allclose(val_nll(tuned, xv), h["best_val_nll"], rtol=1e-5)


def test_huge_learning_rate_gives_finite_params_and_warning():
    flow, x = gaussplug.build_flow(LIGHT_SPEC), data()
    with pytest.warns(TrainingWarning, match=r"stopped at step \d+ of 100"):
        tuned, h = fine_tune(flow, x, steps=100, batch_size=64, peak_lr=1e30, progress=False)
    assert h["stopped"] == "non_finite" and h["steps_run"] < 100
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(tuned.params))


# -- input checks -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, r"steps: expected a positive integer; got 0"),
        ({"steps": 2.5}, ValueError, r"steps: expected a positive integer; got 2.5"),
        ({"steps": 10**12}, ValueError, r"steps: expected at most 2,147,483,647 \(2\*\*31 - 1\) per call; got "
         r"1,000,000,000,000"),
        ({"batch_size": 0}, ValueError, r"batch_size: expected a positive integer; got 0"),
        ({"validation": 1.5}, ValueError, r"validation: expected a fraction in \(0, 1\).*got 1.5"),
        ({"validation": 0.0}, ValueError, r"validation: expected a fraction in \(0, 1\).*got 0.0"),
        ({"validation": 0.2, "patience": 0}, ValueError, r"patience: expected a positive integer or None"),
        ({"patience": 3}, ValueError, r"need validation data; got validation=None with patience=3"),
        ({"peak_lr": -1.0}, ValueError, r"peak_lr: expected a positive finite number; got -1.0"),
        ({"optimizer": "adam"}, TypeError, r"optimizer: expected an optax.GradientTransformation; got str"),
        ({"validation": np.zeros((3, 5))}, DataError, r"validation: expected shape \(n, 2\) for this 2-D flow"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    flow = gaussplug.build_flow(SHIFT_SPEC)
    args = {"steps": 5, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        fine_tune(flow, data(n=10), **args)


def test_validation_fraction_must_leave_two_training_rows():
    flow = gaussplug.build_flow(SHIFT_SPEC)
    with pytest.raises(ValueError, match=r"leaving at least 2 training rows \(as x needs\); got 0.9.*2 of the 2 rows"):
        fine_tune(flow, data(n=2), steps=5, validation=0.9, progress=False)
    with pytest.raises(ValueError, match=r"got 0.9995, which takes 1999 of the 2000 rows"):
        fine_tune(flow, data(n=2000), steps=5, validation=0.9995, progress=False)
    with pytest.raises(ValueError, match=r"expected a fraction in \(0, 1\), an array or None; got the bool True"):
        fine_tune(flow, data(n=20), steps=5, validation=True, progress=False)
    _, h = fine_tune(flow, data(n=20), steps=2, validation=0.25, progress=False)
    assert (h["train_rows"], h["validation_rows"]) == (15, 5)
    _, h = fine_tune(flow, data(n=20), steps=2, progress=False)
    assert (h["train_rows"], h["validation_rows"]) == (20, 0)


def test_non_finite_params_are_refused_up_front():
    flow = gaussplug.build_flow(SHIFT_SPEC)
    name = flow.layer_names[0]
    (module, leaves), = flow.params[name].items()
    leaf = next(iter(leaves))
    bad = {name: {module: {**leaves, leaf: leaves[leaf].at[0].set(jnp.nan)}}}
    with pytest.raises(ValueError, match=rf"layer '{name}', param {module}/{leaf}: expected finite params; 1 of"):
        fine_tune(flow.replace(params=bad), data(n=20), steps=2, progress=False)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((10, 3)), r"expected shape \(n, 2\) for this 2-D flow; got shape \(10, 3\)"),
        (np.zeros((1, 2)), r"at least 2 rows"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), r"1 of 3 rows contain NaN"),
    ],
)
def test_bad_data(x, match):
    with pytest.raises(DataError, match=match):
        fine_tune(gaussplug.build_flow(SHIFT_SPEC), x, steps=5, progress=False)


# -- history, dtypes, compilation, output -------------------------------------------------
def test_history_keys_and_types():
    _, h = fine_tune(gaussplug.build_flow(SHIFT_SPEC), data(n=50), steps=10, batch_size=8, progress=False)
    assert HISTORY_KEYS <= set(h)
    assert isinstance(h["loss"], np.ndarray) and h["loss"].shape == (10,)
    assert h["val_nll"] == [] and h["val_step"] == [] and h["best_step"] is None and h["best_val_nll"] is None
    assert h["steps_run"] == 10 and h["stopped"] == "completed" and h["non_finite"] is None
    assert h["wall_time"] >= h["compile_time"] > 0 and h["steps_per_second"] > 0


def test_batch_larger_than_data_uses_all_rows_with_progress_bar():
    _, h = fine_tune(gaussplug.build_flow(SHIFT_SPEC), data(n=20), steps=3, batch_size=10_000, progress=True)
    assert h["steps_run"] == 3


def test_float64():
    with jax.enable_x64(True):
        flow = gaussplug.build_flow(LIGHT_SPEC)
        assert flow.dtype == jnp.float64
        x = data(dtype=np.float64)
        tuned, h = fine_tune(flow, x, steps=20, batch_size=64, peak_lr=0.05, validation=0.2, progress=False)
        assert all(np.asarray(a).dtype == np.float64 for a in jax.tree.leaves(tuned.params))
        assert h["loss"].dtype == np.float64 and np.isfinite(h["loss"]).all()
        assert val_nll(tuned, x) < val_nll(flow, x)


def test_chunks_compile_once(monkeypatch, counting_family):
    monkeypatch.setattr(_train, "_MAX_CHUNK", 4)
    spec = {"dim": 2, "layers": [{"family": counting_family}, {"family": "standardize"}]}
    flow, x = gaussplug.build_flow(spec), data(n=40)
    traces = []
    for steps in (4, 15):  # one chunk; four chunks, the last one partial
        TRACES["n"] = 0
        _, h = fine_tune(flow, x, steps=steps, batch_size=8, validation=0.25, eval_every=3, progress=False)
        assert h["steps_run"] == steps
        traces.append(TRACES["n"])
    assert traces[0] > 0 and traces[1] == 0  # same chunk length: the step count is a run-time value
    assert h["val_step"] == [0, 3, 6, 9, 12, 15]
    # A second run with the same settings and shapes reuses the compiled chunk (other data, key).
    TRACES["n"] = 0
    _, h2 = fine_tune(
        flow, data(n=40, seed=5), steps=15, batch_size=8, validation=0.25, eval_every=3, key=1, progress=False
    )
    assert TRACES["n"] == 0 and h2["compile_time"] == 0.0 and h2["steps_run"] == 15


def test_a_sweep_of_default_optimizer_settings_compiles_once_and_each_takes_effect(monkeypatch, counting_family):
    monkeypatch.setattr(_train, "_MAX_CHUNK", 4)
    spec = {"dim": 2, "layers": [{"family": counting_family}, {"family": "householder"}, {"family": "standardize"}]}
    flow, x = gaussplug.build_flow(spec), data(n=40)
    fine_tune(flow, x, steps=8, batch_size=8, progress=False)  # compiles
    TRACES["n"] = 0
    sweep = [(8, 0.1, 1.0), (8, 0.01, 1.0), (8, 0.1, 1e-3), (13, 0.1, 1.0)]  # peak_lr, clip_norm, steps vary
    runs = [fine_tune(flow, x, steps=s, batch_size=8, peak_lr=lr, clip_norm=c, progress=False) for s, lr, c in sweep]
    assert TRACES["n"] == 0 and all(h["compile_time"] == 0.0 for _, h in runs)
    for (tuned, h), (s, lr, c) in zip(runs, sweep, strict=True):  # each run is optax's recipe with its settings
        ref = optax.chain(optax.clip_by_global_norm(c), optax.adam(optax.cosine_onecycle_schedule(s, lr)))
        expected, he = fine_tune(flow, x, steps=s, batch_size=8, optimizer=ref, progress=False)
        assert h["steps_run"] == s
        np.testing.assert_allclose(h["loss"], he["loss"], rtol=1e-5)
        assert_params_close(tuned, expected, rtol=1e-5, atol=1e-6)
    assert len({float(h["loss"][-1]) for _, h in runs}) == len(sweep)


def test_progress_false_prints_nothing(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fine_tune(gaussplug.build_flow(SHIFT_SPEC), data(n=30), steps=5, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_deterministic_given_key():
    flow, x = gaussplug.build_flow(SHIFT_SPEC), data(n=60)
    a, ha = fine_tune(flow, x, steps=12, batch_size=16, peak_lr=0.1, key=0, progress=False)
    b, hb = fine_tune(flow, x, steps=12, batch_size=16, peak_lr=0.1, key=0, progress=False)
    c, hc = fine_tune(flow, x, steps=12, batch_size=16, peak_lr=0.1, key=jax.random.key(1), progress=False)
    assert_params_identical(a, b)
    np.testing.assert_array_equal(ha["loss"], hb["loss"])
    assert hb["compile_time"] == 0.0 and hc["compile_time"] == 0.0  # same shapes: compiled once
    assert not np.array_equal(ha["loss"], hc["loss"])


def test_a_list_of_2d_batches_is_iterated_and_a_list_of_rows_is_an_array():
    flow, x = gaussplug.build_flow(LIGHT_SPEC), data(n=600)
    batches = [x[i : i + 64] for i in range(0, 600, 64)]  # the last batch is smaller
    _, h = fine_tune(flow, batches, steps=20, optimizer=optax.adam(1e-2), progress=False)
    assert h["steps_run"] == 20 and h["stopped"] == "completed"
    _, h = fine_tune(flow, tuple(batches[:9]), steps=12, optimizer=optax.adam(1e-2), progress=False)
    assert h["steps_run"] == 12
    tuned, _ = fine_tune(flow, x.tolist(), steps=3, batch_size=64, optimizer=optax.adam(1e-2), progress=False)
    ref, _ = fine_tune(flow, x, steps=3, batch_size=64, optimizer=optax.adam(1e-2), progress=False)
    assert_params_close(tuned, ref)


def test_line_search_optimizers_get_what_they_ask_for():
    # optax.lbfgs's update needs value, grad and value_fn (it crashed inside optax); others ignore them.
    x = data()
    flow = gaussplug.warm_start(gaussplug.build_flow(SHIFT_SPEC), x + 3.0, progress=False)  # a poor start for x
    tuned, history = fine_tune(flow, x, steps=10, batch_size=200, optimizer=optax.lbfgs(), progress=False)
    assert history["stopped"] == "completed"
    assert history["loss"][-1] < history["loss"][0] - 1.0


@pytest.mark.parametrize("validation", [None, 0.2])
def test_diverging_steps_warn_with_the_scale_hint(validation):
    """Steps far too large for the data's scale (std 1e-3 columns, peak_lr 1.0) raised the loss 1000-fold silently."""
    x = np.random.default_rng(0).normal(size=(600, 2)) * 1e-3
    flow = gaussplug.warm_start(gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}]}), x,
                                progress=False)
    kept = "the best validated params \\(step 0\\)" if validation else "the last params, which fit worse"
    pattern = (r"fine_tune: the training loss rose from -?\d.* \(the first step's, at the starting params\) to .* "
               rf"the steps diverged; returning {kept}.*standardising first")
    with pytest.warns(TrainingWarning, match=pattern) as seen:
        tuned, history = fine_tune(flow, x, steps=40, batch_size=64, peak_lr=1.0, validation=validation,
                                   progress=False)
    assert seen[0].filename == __file__
    assert history["loss"][-1] > history["loss"][0] + 1.0


def test_validation_that_never_improves_warns():
    history = {"loss": np.full(20, 1.0), "best_step": 0, "steps_run": 20}
    with pytest.warns(TrainingWarning, match=r"no evaluation improved on the starting params' validation NLL \(1\.5\)"):
        _warn_if_worse(history, 2, [1.5, 1.6])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        _warn_if_worse({**history, "best_step": 20}, 2, [1.5, 1.4])  # improved: silent
        _warn_if_worse({**history, "best_step": None}, 2, [])  # no validation: silent


def test_warnings_advise_in_the_callers_terms():
    from gaussplug._train_result import advice_as

    rising = {"loss": np.r_[np.full(50, 1.0), np.full(50, 9.0)], "best_step": 0, "steps_run": 100}
    flat = {"loss": np.full(20, 1.0), "best_step": 0, "steps_run": 20}
    for history in (rising, flat):
        with pytest.warns(TrainingWarning, match="or use a lower peak_lr") as api:
            _warn_if_worse(history, 2, [1.5, 1.6])
        with advice_as(lower_lr="LOWER --lr.", scale="SCALED."), pytest.warns(TrainingWarning) as cli:
            _warn_if_worse(history, 2, [1.5, 1.6])
        assert str(cli[0].message) == str(api[0].message).replace(_SCALE_HINT, "SCALED.")
        assert str(cli[0].message).endswith("SCALED.") and "peak_lr" not in str(cli[0].message)
    with pytest.warns(TrainingWarning, match="or use a lower peak_lr"):  # the API's terms again after the block
        _warn_if_worse(flat, 2, [1.5, 1.6])



def test_another_row_count_in_the_same_bucket_reuses_the_compiled_chunk_and_trains_the_same(monkeypatch):
    flow = gaussplug.build_flow(LIGHT_SPEC)
    settings = {"steps": 12, "batch_size": 64, "peak_lr": 0.05, "validation": 0.2, "progress": False}
    fine_tune(flow, data(n=1000), **settings)  # 800 / 200 rows: buckets of 832 and 208
    tuned, h = fine_tune(flow, data(n=1010), **settings)  # 808 / 202 rows: the same buckets
    assert (h["train_rows"], h["validation_rows"]) == (808, 202) and h["compile_time"] == 0.0
    from gaussplug import _buckets

    monkeypatch.setattr(_buckets, "ENABLED", False)  # unpadded: the same minibatches, the same result
    exact, he = fine_tune(flow, data(n=1010), **settings)
    assert he["compile_time"] > 0
    np.testing.assert_allclose(h["loss"], he["loss"], rtol=1e-6)
    np.testing.assert_allclose(h["val_nll"], he["val_nll"], rtol=1e-6)
    assert_params_close(tuned, exact, rtol=1e-6, atol=1e-7)
