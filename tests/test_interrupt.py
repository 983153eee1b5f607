"""Ctrl-C under the command line's handler: raised at once, deferred to a checkpoint, or raised again if lost."""

import gc
import os
import signal
import threading

import distrax
import haiku as hk
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug import Family, _interrupt, hookimpl


def _ctrl_c():
    """Sends SIGINT to this process (from any thread); Python runs the handler in the main thread soon after."""
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(100))


def _ctrl_c_lost_in_gc():
    """A Ctrl-C raised inside a garbage-collection callback, which reports it as "Exception ignored" and drops it."""

    def callback(phase, info):
        if phase == "start":
            _ctrl_c()

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)


def test_outside_a_deferred_block_it_raises_at_once():
    with _interrupt.sigint_handled(), pytest.raises(KeyboardInterrupt):
        _ctrl_c()


def test_inside_a_deferred_block_it_waits_for_the_checkpoint_once():
    with _interrupt.sigint_handled(), _interrupt.deferred():
        _ctrl_c()  # recorded, not raised
        with pytest.raises(KeyboardInterrupt):
            _interrupt.checkpoint()
        _interrupt.checkpoint()  # raised once


def test_a_second_ctrl_c_raises_at_once_inside_a_deferred_block():
    with _interrupt.sigint_handled(), _interrupt.deferred():
        _ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_lost_in_a_gc_callback_is_raised_by_the_next_checkpoint():
    with _interrupt.sigint_handled():
        _ctrl_c_lost_in_gc()
        with pytest.raises(KeyboardInterrupt):
            _interrupt.checkpoint()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_command_line_exits_130_for_an_interrupt_lost_in_a_gc_callback(capsys, monkeypatch):
    # Seen once in 14 interrupted fits: the KeyboardInterrupt landed in JAX's garbage-collection callback, was
    # dropped, and `gaussplug fit` ran on to its end and exited 0.
    import gaussplug.cli as cli

    def command(args):
        _ctrl_c_lost_in_gc()
        return 0

    monkeypatch.setattr(cli, "_plugins", command)
    assert cli.main(["plugins"]) == 130
    assert capsys.readouterr().err.strip().endswith("gaussplug: interrupted")


def test_the_previous_handler_comes_back_and_library_use_is_untouched():
    before = signal.getsignal(signal.SIGINT)
    with _interrupt.sigint_handled():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
    with _interrupt.deferred():  # no handler installed: nothing is recorded, nothing raised
        _interrupt.checkpoint()


def test_from_another_thread_nothing_is_installed():
    seen = []

    def run():
        with _interrupt.sigint_handled():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before]


def test_warm_start_stops_after_the_layer_being_fitted(fresh_registry):
    fits = []

    def make(dim):
        return distrax.Block(distrax.ScalarAffine(shift=-hk.get_parameter("shift", (dim,), init=jnp.zeros)), 1)

    def fit(x, params, *, key):
        fits.append(len(fits))
        if len(fits) == 1:
            _ctrl_c()  # inside the deferred block (the command line's): recorded, the fit goes on
        return {"~": {"shift": jnp.asarray(x.mean(0))}}

    class Plugin:
        @hookimpl
        def gaussplug_register_families(self, register):
            register(Family("ctrl_c_shift", make, fit=fit))

    gaussplug.register(Plugin(), name="ctrl-c-plugin")
    flow = gaussplug.build_flow({"dim": 2, "layers": [{"family": "ctrl_c_shift"}] * 3})
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    with _interrupt.sigint_handled(), _interrupt.deferred(), pytest.raises(KeyboardInterrupt) as info:
        gaussplug.warm_start(flow, x, progress=False)
    assert fits == [0] and info.traceback[-1].name == "checkpoint"


def test_fine_tune_stops_at_a_chunk_boundary(moons):
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1), key=0)
    gaussplug.fine_tune(flow, moons, steps=400, batch_size=64, progress=False)  # compiles what the run below uses
    timer = threading.Timer(2.0, _ctrl_c)
    with _interrupt.sigint_handled(), _interrupt.deferred(), pytest.raises(KeyboardInterrupt) as info:
        timer.start()
        gaussplug.fine_tune(flow, moons, steps=400_000, batch_size=64, progress=False)
    timer.join()
    assert info.traceback[-1].name == "checkpoint"  # not wherever the signal landed


def test_a_deferred_ctrl_c_says_so_on_stderr(capfd):
    with _interrupt.sigint_handled(), _interrupt.deferred():
        _ctrl_c()
        assert _interrupt.NOTICE in capfd.readouterr().err  # so the first Ctrl-C does not look ignored
        with pytest.raises(KeyboardInterrupt):
            _interrupt.checkpoint()


def test_batches_of_rows_stop_between_batches(moons):
    from gaussplug import _data

    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1), key=0)
    seen = []
    with _interrupt.sigint_handled(), _interrupt.deferred():
        _ctrl_c()
        with pytest.raises(KeyboardInterrupt) as info:
            for start, _m, _block in _data.padded_batches(np.asarray(moons), 64):
                seen.append(start)  # the block is used before the next is asked for
        assert seen == [0] and info.traceback[-1].name == "checkpoint"
        for call in (lambda: flow.log_prob(moons, batch_size=64), lambda: flow.sample(0, 300, batch_size=64)):
            _ctrl_c()
            with pytest.raises(KeyboardInterrupt) as info:
                call()
            assert info.traceback[-1].name == "checkpoint"


def test_fine_tune_stops_right_after_compiling(moons, monkeypatch):
    # Interrupted 2 s into fine-tuning (probably while JAX compiled), the command line once crashed (SIGSEGV).
    from gaussplug import _train

    ran = []
    real = _train._compiled

    def compiled(*args):
        init_fn, chunk_fn, seconds = real(*args)
        _ctrl_c()  # as if it had landed during the compile

        def counted(*a):
            ran.append(1)
            return chunk_fn(*a)

        return init_fn, counted, seconds

    monkeypatch.setattr(_train, "_compiled", compiled)
    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1), key=0)
    with _interrupt.sigint_handled(), _interrupt.deferred(), pytest.raises(KeyboardInterrupt) as info:
        gaussplug.fine_tune(flow, moons, steps=50, batch_size=64, progress=False)
    assert info.traceback[-1].name == "checkpoint" and info.traceback[-2].name == "fine_tune"
    assert ran == []  # no training ran


def test_depth_selection_stops_after_the_block_being_fitted(moons, monkeypatch):
    from gaussplug import _depth

    blocks = []
    real = _depth._fit_block

    def fit_block(*args):
        blocks.append(1)
        out = real(*args)
        _ctrl_c()
        return out

    monkeypatch.setattr(_depth, "_fit_block", fit_block)
    for validation in (0.25, None):  # with None, the first blocks fitted are null_tol's, on simulated noise
        blocks.clear()
        with _interrupt.sigint_handled(), _interrupt.deferred(), pytest.raises(KeyboardInterrupt) as info:
            gaussplug.fit_rbig(np.asarray(moons), n_layers="auto", validation=validation, progress=False)
        assert blocks == [1] and info.traceback[-1].name == "checkpoint"


def test_the_command_line_runs_a_command_to_its_next_checkpoint(capfd, monkeypatch):
    import gaussplug.cli as cli

    steps = []

    def command(args):
        _ctrl_c()  # deferred for the whole command: it goes on to its end, then main's checkpoint raises
        steps.append("after the Ctrl-C")
        return 0

    monkeypatch.setattr(cli, "_plugins", command)
    assert cli.main(["plugins"]) == 130
    assert steps == ["after the Ctrl-C"]
    err = capfd.readouterr().err
    assert _interrupt.NOTICE in err and err.strip().endswith("gaussplug: interrupted")


def test_fit_stops_between_its_stages(tmp_path, monkeypatch, capfd):
    import gaussplug.cli as cli

    real_warm, tuned = gaussplug.warm_start, []

    def warm_start(*args, **kwargs):
        flow = real_warm(*args, **kwargs)
        _ctrl_c()  # after the last layer's checkpoint: the next is between the stages
        return flow

    monkeypatch.setattr(gaussplug, "warm_start", warm_start)
    monkeypatch.setattr(gaussplug, "fine_tune", lambda *a, **k: tuned.append(1))
    out = tmp_path / "o"
    assert cli.main(["fit", "--quiet", "--layers", "1", "--steps", "10", "--out", str(out)]) == 130
    assert tuned == [] and not (out / "model.npz").exists()  # stopped before fine-tuning, nothing half-written
    assert capfd.readouterr().err.strip().endswith("gaussplug: interrupted")
