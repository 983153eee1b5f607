"""gaussplug.clear_caches drops gaussplug's compiled functions and JAX's; flows stay usable."""

import numpy as np

import gaussplug
from gaussplug import _runtime, _train, _warm_data


def test_clear_caches_drops_compiled_code_and_flows_recompile():
    x = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    flow = gaussplug.fit_rbig(x, n_layers=1, n_components=2)
    tuned, first = gaussplug.fine_tune(flow, x, steps=20, batch_size=64, progress=False)
    _, again = gaussplug.fine_tune(flow, x, steps=20, batch_size=64, progress=False)
    assert first["compile_time"] > 0 and again["compile_time"] == 0.0  # reused before clearing
    assert _train._COMPILED and _runtime._CACHE
    lp = np.asarray(tuned.log_prob(x))

    gaussplug.clear_caches()
    assert not _train._COMPILED and not _runtime._CACHE and _warm_data._sharded_forward.cache_info().currsize == 0
    np.testing.assert_array_equal(np.asarray(tuned.log_prob(x)), lp)  # usable, same numbers
    retuned, after = gaussplug.fine_tune(flow, x, steps=20, batch_size=64, progress=False)
    assert after["compile_time"] > 0  # compiled anew
    np.testing.assert_array_equal(after["loss"], first["loss"])
    np.testing.assert_array_equal(np.asarray(retuned.log_prob(x)), lp)
