"""Every registered family passes the shared conformance suite."""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug.testing import IsolatedLayer, check_family, conformance_data


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


class _Scale(gaussplug.VectorBijector):
    """``y = x exp(s)``: a correct layer unless told to misbehave (for the kit's own tests)."""

    def __init__(self, dim, s, summed, raise_in):
        super().__init__(dim)
        self.s, self.summed, self.raise_in = s, summed, raise_in

    def _forward_and_log_det(self, x):
        if self.raise_in == "forward":
            raise RuntimeError("boom")
        ld = jnp.broadcast_to(self.s, x.shape)
        return x * jnp.exp(self.s), jnp.sum(ld, -1) if self.summed else ld

    def _inverse_and_log_det(self, y):
        if self.raise_in == "inverse":
            raise RuntimeError("boom")
        ld = -jnp.broadcast_to(self.s, y.shape)
        return y * jnp.exp(-self.s), jnp.sum(ld, -1) if self.summed else ld


def _make_scale(dim, summed=True, raise_in=""):
    """A :class:`_Scale` that raises in ``raise_in`` (at dim 2 only) and leaves its log-det unsummed if told."""
    if raise_in == "make_bijector" and dim == 2:
        raise RuntimeError("boom")
    s = hk.get_parameter("s", (dim,), init=jnp.zeros)
    return _Scale(dim, s, summed, raise_in if dim == 2 else "")


def _fit_scale(x, params, *, key, summed=True, raise_in=""):
    """Sets the scale to the data's root mean square."""
    del key, summed
    if raise_in == "fit" and x.shape[1] == 2:
        raise RuntimeError("boom")
    s = params["~"]["s"]
    return {"~": {"s": jnp.asarray(-np.log(np.sqrt(np.mean(np.square(x), 0))), s.dtype)}}


_SCALE = gaussplug.Family("scale", _make_scale, fit=_fit_scale, options={"summed": True, "raise_in": ""})


def test_kit_reports_an_unsummed_log_det_and_skips_what_needs_its_shape():
    with pytest.raises(AssertionError) as info:
        check_family(_SCALE, dims=(2,), dtypes=("float32",), options={"summed": False})
    message = str(info.value)
    assert re.search(
        r"FAIL dim=2 float32 forward shapes: .*expected an output of shape \(260, 2\) and a log-det of shape \(260,\)"
        r".*got \(260, 2\) and \(260, 2\)",
        message,
    ), message
    assert "skipped because the forward shapes are wrong" in message
    assert "1 failed" in message


class _NeverSame(_Scale):
    def same_as(self, other):  # distrax.Bijector's default: never the same, not even as itself
        return False


def test_kit_reports_a_bijector_not_same_as_itself():
    family = gaussplug.Family("never_same", lambda dim: _NeverSame(dim, hk.get_parameter("s", (dim,), init=jnp.zeros),
                                                                 True, ""))
    with pytest.raises(AssertionError) as info:
        check_family(family, dims=(2,), dtypes=("float32",))
    message = str(info.value)
    assert "FAIL dim=2 float32 same_as itself: bijector.same_as(bijector) returned False; expected True" in message
    assert "1 failed" in message, message


@jax.custom_jvp
def _unscale(y, s):
    return y * jnp.exp(-s)


@_unscale.defjvp
def _unscale_wrong_jvp(primals, tangents):
    (y, s), (dy, ds) = primals, tangents
    x = _unscale(y, s)
    return x, dy * jnp.exp(-s) - 0.5 * x * ds  # the derivative in s is -x: half of it is missing


class _WrongInverseGrad(_Scale):
    def _inverse_and_log_det(self, y):
        return _unscale(y, self.s), -jnp.sum(jnp.broadcast_to(self.s, y.shape), -1)


def test_kit_catches_a_wrong_gradient_through_the_inverse():
    # Values, log-dets and the forward's gradients are right; only differentiating the inverse is wrong, which the
    # float64 finite-difference check (run through the inverse the kit has already compiled) must catch.
    def make(dim):
        return _WrongInverseGrad(dim, hk.get_parameter("s", (dim,), init=jnp.zeros), True, "")

    family = gaussplug.Family("wrong_inverse_grad", make, fit=_fit_scale)
    with pytest.raises(AssertionError) as info:
        check_family(family, dims=(2,), dtypes=("float32", "float64"))
    message = str(info.value)
    assert re.search(r"FAIL dim=2 float64 grad of inverse matches finite differences: autodiff \S+ vs finite "
                     r"differences \S+", message), message
    assert "1 failed" in message, message  # float32 has no finite-difference check; everything else passes
    check_family(_SCALE, dims=(2,), dtypes=("float64",))  # the correct inverse passes the same check


@pytest.mark.parametrize("stage", ["make_bijector", "forward", "inverse", "fit"])
def test_kit_reports_a_stage_that_raises_and_goes_on(stage):
    with pytest.raises(AssertionError) as info:
        check_family(_SCALE, dims=(2, 1), dtypes=("float32",), options={"raise_in": stage})
    message = str(info.value)
    assert f"FAIL dim=2 float32 {stage}: raised RuntimeError: boom" in message, message
    assert "1 failed" in message and " 0 passed" not in message, message  # dim=1 still ran, and passed
    assert "dim=1 float32 round trip" not in message  # passed checks are not listed as failures


def _fit_scale_in_place(x, params, *, key, summed=True, raise_in=""):
    """The mistake the kit must catch: a fit that standardises its data in place before fitting."""
    x /= np.sqrt(np.mean(np.square(x), 0))
    return _fit_scale(x, params, key=key)


def _fit_scale_into_params(x, params, *, key, summed=True, raise_in=""):
    """The other mistake: a fit that writes its result into the params it was given and returns them."""
    params["~"]["s"] = _fit_scale(x, params, key=key)["~"]["s"]
    return params


@pytest.mark.parametrize(
    "fit, failure",
    [(_fit_scale_in_place, r"fit leaves its data x unchanged: raised ValueError: .*read-only.*x = np.array\(x\)"),
     (_fit_scale_into_params, r"fit leaves its params argument unchanged: the params passed to fit changed at "
                              r"\['~'\]\['s'\]: fit must return new params")],
    ids=["writes-into-x", "writes-into-params"],
)  # fmt: skip
def test_kit_catches_a_fit_that_writes_into_its_inputs(fit, failure):
    family = gaussplug.Family("scale", _make_scale, fit=fit, options={"summed": True, "raise_in": ""})
    with pytest.raises(AssertionError) as info:
        check_family(family, dims=(2,), dtypes=("float32",))
    message = str(info.value)
    assert re.search(f"FAIL dim=2 float32 {failure}", message), message
    assert "1 failed" in message, message  # and not a wrong diagnosis further on (the likelihood gain)
    assert "skipped because fit wrote into its" in message, message
    check_family(_SCALE, dims=(2,), dtypes=("float32",))  # the same fit, written correctly, passes


@pytest.mark.parametrize(
    "kwargs, shown",
    [({"dims": (1,)}, "dims=(1,)"), ({"dims": ()}, "dims=()"), ({"dtypes": ()}, "dtypes=()")],
    ids=["below-min-dim", "no-dims", "no-dtypes"],
)
def test_kit_refuses_to_check_nothing(kwargs, shown):
    with pytest.raises(ValueError, match=rf"check_family\('mixture_cdf_coupling'\): nothing to check with .*"
                       rf"{re.escape(shown)}.*one dim >= 2 \(the family's min_dim\)"):
        check_family("mixture_cdf_coupling", **kwargs)


@pytest.mark.parametrize("bad", [3.0, "3", True])
def test_kit_names_a_dim_that_is_not_an_int(bad):
    with pytest.raises(ValueError, match=rf"check_family: dims: expected ints; got {re.escape(repr(bad))} "):
        check_family("standardize", dims=(2, bad))


def test_kit_rejects_a_misspelt_option_up_front():
    with pytest.raises(
        ValueError,
        match=r"\(scale\): unknown option 'sumed'\. Did you mean 'summed'\? "
        r"Family 'scale' accepts: summed=True, raise_in=''",
    ):
        check_family(_SCALE, options={"sumed": False})
    with pytest.raises(ValueError, match=r"summed: expected JSON-compatible values.*ndarray"):
        check_family(_SCALE, options={"summed": np.arange(3)})


def test_isolated_layer_passes_options_as_build_flow_does():
    seen = []

    def make(dim, sizes=(2, 3)):
        seen.append(sizes)
        return _make_scale(dim)

    family = gaussplug.Family("sizes", make, options={"sizes": (2, 3)})
    layer = IsolatedLayer(family, dim=2)
    layer.forward(sizes=(4, 5))(layer.init(sizes=(4, 5)), jnp.ones((3, 2)))
    assert seen and all(s == [4, 5] for s in seen)  # a tuple arrives as a list, as from a spec file
    with pytest.raises(ValueError, match=r"IsolatedLayer \(sizes\): unknown option 'size'\. Did you mean 'sizes'"):
        layer.init(size=(4,))


def test_kit_passes_options_as_build_flow_does():
    def make_tuple_only(dim, sizes=(4, 4)):
        if not isinstance(sizes, tuple):
            raise TypeError(f"sizes must be a tuple; got {sizes!r}")
        return _make_scale(dim)

    fam = gaussplug.Family("tuple_only", make_tuple_only, options={"sizes": (4, 4)})
    for options in ({"sizes": (4, 4)}, None):  # from the caller, and the default
        with pytest.raises(
            AssertionError, match=r"make_bijector: raised TypeError: sizes must be a tuple; got \[4, 4\]"
        ):
            check_family(fam, dims=(2,), dtypes=("float32",), options=options)


def test_kit_reports_a_default_that_json_cannot_carry():
    fam = gaussplug.Family("array_default", _make_scale, options={"summed": True})
    fam.options["summed"] = np.arange(3)  # Family may itself reject such a default; the kit must not rely on it
    with pytest.raises(AssertionError) as info:
        check_family(fam, dims=(2,), dtypes=("float32",))
    message = str(info.value)
    assert "FAIL options: option 'summed' default: expected JSON-compatible values" in message, message
    assert "ndarray" in message and "Option values must be JSON-compatible" in message


def test_kit_takes_a_key_like_every_other_function_and_seed_is_its_deprecated_name():
    import jax

    by_int = check_family("householder", dims=(2,), dtypes=("float32",), key=3)
    by_key = check_family("householder", dims=(2,), dtypes=("float32",), key=jax.random.key(3))
    assert by_int.passed and not by_int.failed and by_key.passed and not by_key.failed
    np.testing.assert_array_equal(conformance_data(2, 50, key=3), conformance_data(2, 50, 3))
    assert not np.array_equal(conformance_data(2, 50, key=3), conformance_data(2, 50, key=4))
    with pytest.warns(DeprecationWarning, match=r"check_family\(seed=\.\.\.\) is deprecated; pass key=\.\.\.") as rec:
        old = check_family("householder", dims=(2,), dtypes=("float32",), seed=3)
    assert rec[0].filename == __file__  # points at the caller
    assert old.passed == by_int.passed
    with pytest.warns(DeprecationWarning, match=r"conformance_data\(seed=\.\.\.\) is deprecated"):
        np.testing.assert_array_equal(conformance_data(2, 50, seed=3), conformance_data(2, 50, key=3))
    with pytest.raises(TypeError, match=r"check_family: got both key=1 and seed=2; pass key only"):
        check_family("householder", key=1, seed=2)
    with pytest.raises(TypeError, match=r"key: expected an int seed or a jax.random key; got float 1.5"):
        check_family("householder", key=1.5)
