import jax.numpy as jnp
from gaussplug_plugins.standardize import StandardizeBijector


def test_same_as_follows_distrax_exact_type_and_param_identity():
    shift, log_scale = jnp.zeros(2), jnp.zeros(2)
    a = StandardizeBijector(2, shift, log_scale)
    assert a.same_as(a)
    assert a.same_as(StandardizeBijector(2, shift, log_scale))  # built from the same params
    assert not a.same_as(StandardizeBijector(2, jnp.zeros(2), log_scale))  # equal values, other arrays: not known
    assert not a.same_as(StandardizeBijector(3, jnp.zeros(3), jnp.zeros(3)))

    class Sub(StandardizeBijector):
        pass

    assert not a.same_as(Sub(2, shift, log_scale))  # exact type, as distrax
