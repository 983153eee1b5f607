"""A child forked after JAX started gets a clear error from gaussplug instead of waiting forever."""

import multiprocessing
import pickle
import sys
import warnings

import numpy as np
import pytest

import gaussplug

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")


def _score(blob):
    try:
        flow = pickle.loads(blob)
        return "scored", float(np.mean(flow.log_prob(np.zeros((4, 2)))))
    except gaussplug.GaussplugError as err:
        return "refused", str(err)


_FLOW = {}  # the parent's flow, inherited by a forked child


def _sample(blob):
    del blob
    try:
        return "sampled", _FLOW["flow"].sample(0, 3).shape
    except gaussplug.GaussplugError as err:
        return "refused", str(err)


def test_forked_children_are_refused_and_spawned_ones_work():
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "householder"}, {"family": "mixture_cdf"}]})
    want = float(np.mean(flow.log_prob(np.zeros((4, 2)))))  # JAX has started in this process
    blob = pickle.dumps(flow)
    _FLOW["flow"] = flow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX's and Python's own fork warnings
        with multiprocessing.get_context("fork").Pool(1) as pool:  # these used to hang in XLA's compiler
            for fn in (_score, _sample):  # a flow unpickled by Pool itself would fail before fn runs
                status, message = pool.apply_async(fn, (blob,)).get(timeout=120)
                assert status == "refused", message
                assert "forked (os.fork, or multiprocessing's 'fork' start method) after JAX had started" in message
                assert "'spawn' or 'forkserver'" in message
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply_async(_score, (blob,)).get(timeout=300) == ("scored", pytest.approx(want, abs=1e-6))
