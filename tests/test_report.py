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
        assert np.isfinite([lo, hi]).all() and lo < -3e32 and hi > -2.1
        labels = ax.get_legend_handles_labels()[1]
        assert "not finite (-inf / NaN)" in labels
        assert ("after fine-tuning" in labels) == (final == 1.5)
        marked = [c for c in ax.collections if c.get_label() == "not finite (-inf / NaN)"][0]
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
