"""Progress bars: shown on a terminal or in a Jupyter kernel, never in logs; closed when a call fails."""

import io

import distrax
import haiku as hk
import jax.numpy as jnp
import numpy as np
import pytest
import tqdm

import gaussplug
from gaussplug import Family, FitError, hookimpl
from gaussplug._progress import _watched, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _KernelStream(io.StringIO):  # what ipykernel's OutStream looks like to the check: not a TTY
    def isatty(self):
        return False


_KernelStream.__module__ = "ipykernel.iostream"


def test_watched_streams():
    assert _watched(_Terminal()) and _watched(_KernelStream())
    assert not _watched(io.StringIO()) and not _watched(object())
    real = open(__file__)  # noqa: SIM115  (a closed file's isatty raises ValueError)
    real.close()
    assert not _watched(real)


@pytest.mark.parametrize("stream, progress, shown", [
    (_Terminal, True, True), (_KernelStream, True, True), (io.StringIO, True, False), (_Terminal, False, False),
])  # fmt: skip
def test_bar_is_drawn_where_a_person_watches(monkeypatch, stream, progress, shown):
    err = stream()
    monkeypatch.setattr("sys.stderr", err)
    with progress_bar(3, progress, desc="demo", unit="step") as bar:
        bar.update(3)
        assert bar.disable is not shown  # (closing disables it)
    assert ("demo" in err.getvalue()) is shown


def _broken_fit_plugin():
    def make(dim):
        b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
        return distrax.Block(distrax.ScalarAffine(shift=-b), 1)

    def fit(x, params, *, key):
        raise FitError("this fit always fails")

    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("failing", make, fit=fit))

    gaussplug.register(Plugin(), name="failing-fit")


def test_a_failing_warm_start_closes_its_bar(fresh_registry, monkeypatch):
    # An open bar left behind keeps drawing every later bar one line lower (and glues text onto its line).
    _broken_fit_plugin()
    monkeypatch.setattr("sys.stderr", _Terminal())
    x = np.random.default_rng(0).normal(size=(200, 2))
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "standardize"}, {"family": "failing"}]})
    before = len(tqdm.tqdm._instances)
    with pytest.raises(FitError, match="this fit always fails"):
        gaussplug.warm_start(flow, x, progress=True)
    assert len(tqdm.tqdm._instances) == before


def test_an_interrupted_depth_search_closes_its_bar(monkeypatch):
    import gaussplug._depth as depth

    monkeypatch.setattr("sys.stderr", _Terminal())

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(depth, "_fit_block", interrupt)
    before = len(tqdm.tqdm._instances)
    with pytest.raises(KeyboardInterrupt):
        gaussplug.fit_rbig(np.random.default_rng(0).normal(size=(200, 2)), n_layers="auto", progress=True)
    assert len(tqdm.tqdm._instances) == before
