"""Every registered family passes the shared conformance suite."""

import pytest

import gaussplug
from gaussplug.testing import check_family, conformance_data


@pytest.mark.parametrize("name", sorted(gaussplug.families()))
def test_family_conforms(name):
    report = check_family(name)
    assert report.passed and not report.failed


def test_kit_catches_a_wrong_log_det(fresh_registry):
    import distrax
    import haiku as hk
    import jax.numpy as jnp

    def make(dim):
        s = hk.get_parameter("log_scale", (dim,), init=jnp.zeros)

        class Wrong(gaussplug.VectorBijector):
            def _forward_and_log_det(self, x):
                return x * jnp.exp(s) + 0.1 * x**3, jnp.sum(s) * jnp.ones(x.shape[:-1])

            def _inverse_and_log_det(self, y):
                return y, -jnp.sum(s) * jnp.ones(y.shape[:-1])

        return Wrong(dim)

    fam = gaussplug.Family("wrong", make)
    with pytest.raises(AssertionError, match=r"log-det matches jax.jacobian|round trip"):
        check_family(fam, dims=(2,), dtypes=("float32",))
    del distrax


def test_conformance_data_shapes():
    assert conformance_data(5, 100).shape == (100, 5)
