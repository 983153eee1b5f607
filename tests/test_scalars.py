"""0-d NumPy and JAX arrays are taken as the scalars they hold, by every argument check (values from a JAX sweep)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import specs
from gaussplug._scalars import as_scalar, int_at_least, is_int, is_number, positive_number


def test_as_scalar():
    assert type(as_scalar(jnp.float32(0.5))) is np.float32 and as_scalar(jnp.float32(0.5)) == 0.5
    assert type(as_scalar(np.array(3))) is np.int64
    assert type(as_scalar(jnp.array(True))) is np.bool_  # still not an int: the checks refuse bools
    for unchanged in (7, 0.5, None, "auto", np.zeros(2), jnp.zeros((1,))):
        assert as_scalar(unchanged) is unchanged
    jax.jit(lambda t: as_scalar(t) * 2)(1.0)  # a tracer is left alone


def test_int_at_least():
    assert int_at_least("n", np.int64(3)) == 3 and type(int_at_least("n", jnp.int32(3))) is int
    assert int_at_least("n", 0, 0) == 0 and int_at_least("n", 2, 2) == 2
    assert int_at_least("n", None, none_ok=True) is None
    for bad, minimum, none_ok, expected in [
        (0, 1, False, "a positive integer"), (-1, 0, False, "a non-negative integer"),
        (1, 2, True, "an integer >= 2 or None"), (None, 1, False, "a positive integer"),
        (True, 1, False, "a positive integer"), (np.True_, 0, False, "a non-negative integer"),
        (2.0, 1, False, "a positive integer"), ("3", 1, True, "a positive integer or None"),
    ]:
        with pytest.raises(ValueError, match=f"^steps: expected {expected}; got {bad!r}"):
            int_at_least("steps", bad, minimum, none_ok=none_ok)


def test_number_predicates():
    assert is_int(3) and is_int(np.int8(3)) and not is_int(True) and not is_int(np.True_) and not is_int(3.0)
    assert is_number(2.5) and is_number(np.float32(1)) and is_number(float("nan")) and not is_number(False)
    assert not is_number("1") and not is_number(None) and not is_number(np.zeros(2))
    assert positive_number("lr", jnp.float32(0.5)) == 0.5 and type(positive_number("lr", 1)) is float
    for bad in (0, -1e-3, float("nan"), float("inf"), True, "1e-3", None):
        with pytest.raises(ValueError, match=r"^lr: expected a positive finite number; got"):
            positive_number("lr", bad)


def test_public_arguments_take_0d_arrays():
    x = np.random.default_rng(0).normal(size=(200, 2))
    spec = specs.gaussianization_flow(jnp.int32(2), n_layers=jnp.int32(1), n_components=np.array(2),
                                      tail_weight=jnp.float32(0.5))
    assert spec == specs.gaussianization_flow(2, n_layers=1, n_components=2, tail_weight=0.5)
    assert type(spec["dim"]) is int  # JSON-ready
    flow = gaussplug.build_flow(spec)
    assert flow.sample(0, jnp.int32(3), batch_size=jnp.int32(2)).shape == (3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gaussplug.TrainingWarning)
        _, history = gaussplug.fine_tune(flow, x, steps=jnp.int32(4), batch_size=jnp.int32(32),
                                         peak_lr=jnp.float32(1e-3), clip_norm=jnp.float32(1.0),
                                         validation=jnp.float32(0.2), progress=False)
    assert history["steps_run"] == 4
    assert gaussplug.fit_rbig(x, n_layers=jnp.int32(1), n_components=2).layer_names == ("0_householder",
                                                                                       "1_mixture_cdf")
    auto = gaussplug.fit_rbig(x, n_layers="auto", n_components=2, validation=jnp.float32(0.2),
                              max_layers=jnp.int32(2), patience=jnp.int32(1))
    assert auto.metadata["depth_selection"]["max_layers"] == 2
    gaussplug.warm_start(flow, x, max_fit_samples=jnp.int32(150), progress=False)


@pytest.mark.parametrize("call, match", [
    (lambda f, x: f.sample(0, jnp.array(True)), r"sample: n: expected a non-negative integer; got (np\.)?True_?"),
    (lambda f, x: f.sample(0, -1), r"sample: n: expected a non-negative integer; got -1"),
    (lambda f, x: f.sample(0, 2, batch_size=jnp.int32(0)), r"sample: batch_size: expected a positive integer or None"),
    (lambda f, x: gaussplug.fine_tune(f, x, steps=5, validation=jnp.array(True)), r"got the bool (np\.)?True_?"),
    (lambda f, x: gaussplug.fine_tune(f, x, steps=5, peak_lr=jnp.float32(-1.0)), r"peak_lr: expected a positive"),
    (lambda f, x: specs.gaussianization_flow(2, n_layers=jnp.int32(0)), r"n_layers: expected a positive integer"),
])
def test_0d_arrays_are_checked_as_their_values(call, match):
    flow = gaussplug.build_flow(specs.gaussianization_flow(2, n_layers=1, n_components=2))
    x = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(ValueError, match=match):
        call(flow, x)


def test_progress_must_be_a_flag():
    from gaussplug._scalars import as_flag

    assert as_flag("progress", np.bool_(False)) is False and as_flag("progress", jnp.array(True)) is True
    flow = gaussplug.build_flow(specs.gaussianization_flow(2, n_layers=1, n_components=2))
    x = np.random.default_rng(0).normal(size=(100, 2))
    for call in (lambda: gaussplug.warm_start(flow, x, progress="no"),
                 lambda: gaussplug.fine_tune(flow, x, steps=2, progress=0),
                 lambda: gaussplug.fit_rbig(x, n_layers=1, progress=None)):
        with pytest.raises(ValueError, match=r"^progress: expected True or False; got "):
            call()
