"""NaN outputs of a flow for finite inputs: a warning naming the first layer that produced them.

Every built-in family maps finite inputs to finite (or, far out, infinite) outputs; a NaN comes
from a plugin's bijector or from NaN params. :meth:`gaussplug.Flow.log_prob` and the other eager
maps check their result (one host sync per call; skipped under ``jax.jit``, where the values are
not known) and, when rows came out NaN, replay a few of those rows layer by layer to find the
first layer whose output or log-det is NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np

from gaussplug._errors import NonFiniteWarning
from gaussplug._param_checks import non_finite_param
from gaussplug._registry import GaussplugPluginWarning, _warn

if TYPE_CHECKING:
    from gaussplug._flow import Flow

__all__ = ["warn_inf_samples", "warn_nan_rows"]

#: Rows replayed layer by layer to find the culprit.
_REPLAY = 16


def warn_nan_rows(flow: Flow, outs, x, what: str, *, inverse: bool = False, source: str = "finite input") -> None:
    """Warn when rows of finite input ``x`` came out NaN in any of ``outs``.

    Args:
      flow: The flow that computed ``outs``.
      outs: Its results, each per-row values ``(...)`` or per-row vectors ``(..., dim)``.
      x: The (finite, checked) input, shape ``(..., dim)``.
      what: The method's name, for the message.
      inverse: ``outs`` came from the latent-to-data direction.
      source: What ``x`` is, for the message.
    """
    if any(isinstance(a, jax.core.Tracer) for a in (*outs, x)):
        return
    nan = np.zeros(np.shape(x)[:-1], bool)
    for out in outs:
        bad = np.isnan(np.asarray(out))
        nan |= bad.any(axis=-1) if bad.ndim == np.ndim(x) else bad
    nan = nan.reshape(-1)
    count = int(np.count_nonzero(nan))
    if not count:
        return
    rows = np.flatnonzero(nan)
    culprit = _first_nan_layer(flow, np.asarray(x).reshape(-1, flow.dim)[rows[:_REPLAY]], inverse)
    _warn(
        f"{what}: {count} of {nan.size} rows came out NaN for {source} (first: row index {int(rows[0])}). "
        f"{culprit} Those rows' values are NaN in the result.",
        GaussplugPluginWarning,
    )


def warn_inf_samples(flow: Flow, samples, z) -> None:
    """Warn (``RuntimeWarning``) when samples that are not NaN came out +-inf: the flow overflowed.

    A flow whose inverse stretches the latent's tails beyond the float range (an untrained or
    badly fitted one) maps some finite latent draws ``z`` to infinity. The message counts those
    samples and names the first layer, in the latent-to-data direction, whose output is infinite.
    """
    if isinstance(samples, jax.core.Tracer):
        return
    s = np.asarray(samples)
    inf = np.isinf(s).any(axis=-1) & ~np.isnan(s).any(axis=-1)
    count = int(np.count_nonzero(inf))
    if not count:
        return
    rows = np.flatnonzero(inf)
    y, where = np.asarray(z)[rows[:_REPLAY]], "the latent draws themselves"
    for lr in reversed(flow.runtime.layers):
        y = np.asarray(flow.runtime.layer_inverse(lr.name, flow.params[lr.name], y)[0])
        if np.isinf(y).any():
            where = lr.label
            break
    _warn(
        f"sample: {count} of {s.shape[0]} samples are +-inf (first: row index {int(rows[0])}): the flow "
        f"maps those latent draws beyond the {s.dtype} range (first infinite at {where}). The model puts that much "
        "mass unboundedly far out (typical of an untrained or badly fitted flow); fit or fine-tune it, or drop "
        "those rows.",
        NonFiniteWarning,
    )


def _first_nan_layer(flow: Flow, rows: np.ndarray, inverse: bool) -> str:
    """A sentence naming the first layer (in the direction of the map) whose output or log-det is NaN."""
    runtime = flow.runtime
    order = reversed(runtime.layers) if inverse else runtime.layers
    step = runtime.layer_inverse if inverse else runtime.layer_forward
    z = rows
    for lr in order:
        y, log_det = (np.asarray(a) for a in step(lr.name, flow.params[lr.name], z))
        bad_y, bad_ld = np.isnan(y).any(), np.isnan(log_det).any()
        if bad_y or bad_ld:
            parts = " and ".join(p for p, b in (("output", bad_y), ("log-det", bad_ld)) if b)
            bad_param = non_finite_param({lr.name: flow.params[lr.name]})
            cause = (
                f"its param {bad_param[1]}/{bad_param[2]} has {bad_param[3]} NaN/inf "
                f"{'entry' if bad_param[3] == 1 else 'entries'} of {bad_param[4]}"
                if bad_param
                else "its params are finite, so the family's bijector is at fault (check the plugin)"
            )
            direction = "inverse" if inverse else "forward"
            return f"{lr.label} is the first layer whose {direction} {parts} is NaN on those rows: {cause}."
        z = y
    return "No single layer's output is NaN: the layers' log-dets sum to NaN (+inf from one layer, -inf from another)."
