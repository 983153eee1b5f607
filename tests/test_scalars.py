"""0-d NumPy and JAX arrays are taken as the scalars they hold, by every argument check (values from a JAX sweep)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import specs
from gaussplug._scalars import as_scalar


def test_as_scalar():
    assert type(as_scalar(jnp.float32(0.5))) is np.float32 and as_scalar(jnp.float32(0.5)) == 0.5
    assert type(as_scalar(np.array(3))) is np.int64
    assert type(as_scalar(jnp.array(True))) is np.bool_  # still not an int: the checks refuse bools
    for unchanged in (7, 0.5, None, "auto", np.zeros(2), jnp.zeros((1,))):
        assert as_scalar(unchanged) is unchanged
    jax.jit(lambda t: as_scalar(t) * 2)(1.0)  # a tracer is left alone


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
    (lambda f, x: f.sample(0, jnp.array(True)), r"sample: expected a non-negative integer n; got np\.True_"),
    (lambda f, x: f.sample(0, -1), r"sample: expected a non-negative integer n; got -1"),
    (lambda f, x: f.sample(0, 2, batch_size=jnp.int32(0)), r"batch_size to be None or a positive integer; got "),
    (lambda f, x: gaussplug.fine_tune(f, x, steps=5, validation=jnp.array(True)), r"got the bool np\.True_"),
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
