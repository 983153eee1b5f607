"""Tests for ``gaussplug._optim`` (fine_tune's default optimiser with run-time settings)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gaussplug import _optim


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 200, 3001])
@pytest.mark.parametrize("peak_lr", [1e-3, 0.37])
def test_schedule_is_optax_onecycle(steps, peak_lr):
    s = _optim.settings(steps, peak_lr, 1.0)
    count = jnp.arange(steps + 3)
    ours = jax.jit(jax.vmap(lambda c: _optim._schedule(c, s["init_lr"], s["warmup_end"], s["steps"])))(count)
    ref = jax.vmap(optax.cosine_onecycle_schedule(steps, peak_lr))(count)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=2e-6, atol=0)
    assert float(ours[int(0.3 * steps)]) == pytest.approx(peak_lr, rel=1e-6)  # the peak, at 30 % of the steps
    if steps >= 4:  # (shorter runs start at the peak, as optax's do)
        assert float(ours[0]) == pytest.approx(peak_lr / 25, rel=1e-6)


def test_with_settings_replaces_the_placeholders_in_the_state_dtype():
    params = {"w": jnp.zeros(3)}
    state = _optim.with_settings(_optim.DEFAULT.init(params), _optim.settings(450, 2e-3, 0.5))
    hp = state.hyperparams
    assert int(hp["steps"]) == 450 and int(hp["warmup_end"]) == 135
    assert float(hp["init_lr"]) == pytest.approx(2e-3 / 25) and float(hp["clip_norm"]) == 0.5
    assert hp["init_lr"].dtype == jnp.float32 and hp["steps"].dtype == jnp.int32


def test_updates_match_optax_clip_and_adam():
    params = {"w": jnp.array([0.5, -1.0, 2.0])}
    grads = {"w": jnp.array([3.0, -4.0, 12.0])}  # global norm 13: clipped to 0.5
    ref = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(optax.cosine_onecycle_schedule(20, 0.1)))
    state = _optim.with_settings(_optim.DEFAULT.init(params), _optim.settings(20, 0.1, 0.5))
    ref_state = ref.init(params)
    for _ in range(8):
        ours, state = _optim.DEFAULT.update(grads, state, params)
        theirs, ref_state = ref.update(grads, ref_state, params)
        np.testing.assert_allclose(ours["w"], theirs["w"], rtol=1e-6)
