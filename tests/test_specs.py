"""gaussplug.specs: the ready-made spec dicts, and their argument checks (made when the spec is made)."""

import numpy as np
import pytest

import gaussplug
from gaussplug import specs


def test_specs_build_the_documented_structures():
    flow = gaussplug.build_flow(specs.gaussianization_flow(3, n_layers=2, n_components=4, reflectors=2,
                                                           rotation="ica", tail_weight=0.01))
    assert flow.layer_names == ("0_householder", "1_mixture_cdf", "2_householder", "3_mixture_cdf")
    coupling = specs.coupling_flow(3, n_layers=1, hidden=np.array([8, 4]), tail_weight=np.float32(0.5))
    assert coupling["layers"][0]["layers"][1] == {"family": "mixture_cdf_coupling", "components": 8,
                                                  "hidden": [8, 4], "tail_weight": 0.5}
    assert type(coupling["layers"][0]["layers"][1]["tail_weight"]) is float  # JSON-ready, not a NumPy scalar
    assert gaussplug.build_flow(coupling).layer_names == ("0_rotation", "1_mixture_cdf_coupling")
    # the defaults leave the optional keys out
    assert specs.gaussianization_flow(2)["layers"][0]["layers"] == [
        {"family": "householder"}, {"family": "mixture_cdf", "components": 8}]


def test_rotations_are_the_rotation_families_methods():
    from gaussplug_plugins import rotation

    assert specs.ROTATIONS == rotation.METHODS


def test_the_largest_component_count_the_specs_accept_builds():
    for make in (specs.gaussianization_flow, specs.coupling_flow):
        gaussplug.build_flow(make(2, n_layers=1, n_components=256, hidden=(4,)) if make is specs.coupling_flow
                             else make(2, n_layers=1, n_components=256))


@pytest.mark.parametrize("make", [specs.gaussianization_flow, specs.coupling_flow])
@pytest.mark.parametrize("kwargs, match", [
    ({"n_layers": 0}, r"n_layers: expected a positive integer; got 0"),
    ({"n_components": 2.0}, r"n_components: expected a positive integer; got 2.0"),
    ({"n_components": 257}, r"n_components: expected at most 256 per dimension .*got 257"),
    ({"tail_weight": 1.0}, r"tail_weight: expected a number in \[0, 1\) .*got 1.0"),
    ({"tail_weight": float("nan")}, r"tail_weight: expected a number in \[0, 1\) .*got nan"),
    ({"tail_weight": True}, r"tail_weight: .*got True"),
    ({"tail_weight": "0.1"}, r"tail_weight: .*got '0.1'"),
])
def test_bad_arguments_are_named_when_the_spec_is_made(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(3, **kwargs)


def test_gaussianization_flow_argument_errors():
    match = r"rotation: expected one of \('pca', 'random', 'ica'\); got 'svd'"
    with pytest.raises(ValueError, match=match):
        specs.gaussianization_flow(3, rotation="svd")
    with pytest.raises(ValueError, match=match):  # fit_rbig builds the same spec: the same error, before any fit
        gaussplug.fit_rbig(np.random.default_rng(0).normal(size=(50, 3)), n_layers=1, rotation="svd")
    with pytest.raises(ValueError, match=r"reflectors: expected a positive integer; got -1"):
        specs.gaussianization_flow(3, reflectors=-1)
    with pytest.raises(ValueError, match=r"reflectors: expected at most dim = 3 .*; got 4"):
        specs.gaussianization_flow(3, reflectors=4)


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden": 64}, r"hidden: expected a sequence of positive integers .*got 64"),
    ({"hidden": "64"}, r"hidden: expected a sequence .*got '64'"),
    ({"hidden": (64, 0)}, r"hidden\[1\]: expected a positive integer; got 0"),
])
def test_coupling_flow_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        specs.coupling_flow(3, **kwargs)
    with pytest.raises(ValueError, match=r"dim: a coupling flow needs at least 2 dimensions; got 1"):
        specs.coupling_flow(1)
