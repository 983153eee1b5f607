"""The fit report's panels draw whatever the run produced, including non-finite stages."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from gaussplug._report import _warm_start_panel  # noqa: E402


def _metrics(final_train):
    return {"nll": {"final": {"stage": "fine_tune", "data": {"train": final_train, "val": None}}}}


@pytest.mark.parametrize("final", [math.inf, None, 1.5])
def test_warm_start_panel_marks_non_finite_layers_instead_of_failing(final):
    # A subsampled greedy fit can send the full data's log-likelihood to -1e32 and then -inf.
    ws = {"log_likelihood": [-2.8, -2.1, -3e32, -math.inf, math.nan], "layer": list("abcde"),
          "family": ["standardize", "householder", "mixture_cdf", "householder", "mixture_cdf"]}
    fig, ax = plt.subplots()
    try:
        _warm_start_panel(ax, ws, _metrics(final))
        lo, hi = ax.get_ylim()
        assert np.isfinite([lo, hi]).all() and lo < 2.1 and hi > 3e32  # the panel shows NLL = -log-likelihood
        labels = ax.get_legend_handles_labels()[1]
        assert "not finite (inf / NaN)" in labels
        assert ("after fine-tuning" in labels) == (final == 1.5)
        marked = [c for c in ax.collections if c.get_label() == "not finite (inf / NaN)"][0]
        assert len(marked.get_offsets()) == 2
    finally:
        plt.close(fig)


def test_warm_start_panel_with_no_finite_value_still_draws():
    ws = {"log_likelihood": [-math.inf, -math.inf], "layer": ["a", "b"], "family": ["mixture_cdf"] * 2}
    fig, ax = plt.subplots()
    try:
        _warm_start_panel(ax, ws, _metrics(math.inf))
        fig.canvas.draw()
        assert np.isfinite(ax.get_ylim()).all()
    finally:
        plt.close(fig)


def test_log_prob_in_batches_promotes_like_log_prob(moons):
    import jax

    import gaussplug
    from gaussplug._report import log_prob_in_batches

    flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1), dtype="float32")
    flow = gaussplug.warm_start(flow, moons, progress=False)
    x = np.asarray(moons[:5], np.float64)
    x[0, 0] = 1e300  # beyond float32: under x64 a float32 model computes it in float64, like flow.log_prob
    with jax.enable_x64(True):
        got = log_prob_in_batches(flow, x, batch=8)
        want = np.asarray(flow.log_prob(x), np.float64)
    # Equal to rounding (log_prob's contract for batch_size): in float64, not float32's 1e-7.
    assert got[0] == want[0] == -np.inf
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-13)
    assert np.isfinite(got[1:]).all()
    ints = np.round(moons[:5] * 3).astype(np.int64)  # integers score in the model's dtype, as log_prob does
    np.testing.assert_array_equal(log_prob_in_batches(flow, ints, batch=8), np.asarray(flow.log_prob(ints)))


def test_limits_stay_inside_the_float_range_for_data_near_its_top():
    from gaussplug._report import _limits

    x = np.clip(np.random.default_rng(0).normal(size=(400, 2)) * 1e38, -3e38, 3e38).astype(np.float32)
    lo, hi = _limits(x)  # padded by 12 % of the span, which would pass float32's largest value
    big = np.finfo(np.float32).max / 2
    assert np.all(lo >= -big) and np.all(hi <= big) and np.all(lo < hi)
    np.testing.assert_allclose(_limits(np.array([[0.0], [1.0]]))[1], [0.995 + 0.12 * 0.99], rtol=1e-6)  # unchanged


def test_write_report_keeps_glyph_warnings_to_itself_and_leaves_no_figure_open(tmp_path, moons, monkeypatch):
    import warnings

    import gaussplug
    from gaussplug import _report

    flow = gaussplug.warm_start(gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=1)), moons,
                                progress=False)  # fmt: skip
    flow = flow.replace(metadata={**flow.metadata, "columns": ["温度", "größe"]})  # CJK: not in DejaVu Sans
    stage = {"stage": "warm_start", "data": {"train": 1.0, "val": None}}
    metrics = {"dataset": {"name": "moons", "source": "moons"}, "n_train": len(moons), "n_val": 0, "dim": 2,
               "nll": {"initial": stage, "final": stage}}
    open_before = plt.get_fignums()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _report.write_report(tmp_path / "r.png", flow=flow, x_train=moons, history=None, metrics=metrics)
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG" and plt.get_fignums() == open_before

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(_report, "_training_curve", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        _report.write_report(tmp_path / "r2.png", flow=flow, x_train=moons, history=None, metrics=metrics)
    assert plt.get_fignums() == open_before  # the half-drawn figure was closed
