"""The end of a :func:`~gaussplug.fine_tune` run: the params to return, its warnings and its history."""

from __future__ import annotations

import contextvars
import time
import warnings
from types import MappingProxyType

import jax.numpy as jnp
import numpy as np

from gaussplug import _sharding as shd
from gaussplug import _train_loop as loop
from gaussplug._context import set_within
from gaussplug._flow import Flow
from gaussplug._runtime import standard_normal_log_prob

__all__ = ["BAD_WHAT", "TrainingWarning", "advice_as", "finish", "probe_rows"]


class TrainingWarning(UserWarning):
    """Fine-tuning stopped early or its validation could not rank the parameters."""


BAD_WHAT = {
    loop.BAD_LOSS: "a non-finite training loss",
    loop.BAD_GRADIENT: "non-finite gradients",
    loop.BAD_UPDATE: "non-finite parameters after the optimiser update",
}

_PROBE_ROWS = 4096


def probe_rows(flow: Flow, x_src, train_rows) -> str:
    """Where the flow's starting params first give NaN/inf on (up to 4096 of) the training rows, as a sentence.

    Walks the rows through the layers one at a time; names the first layer whose output or log-det is
    not finite on some row, else says whether the latent's density underflows; ``""`` if all is finite.
    """
    idx = np.arange(min(_PROBE_ROWS, x_src.shape[0])) if train_rows is None else np.asarray(train_rows[:_PROBE_ROWS])
    y = jnp.asarray(np.asarray(x_src[np.sort(idx)]), flow.dtype)
    n, total = y.shape[0], jnp.zeros(y.shape[0], flow.dtype)
    for lr in flow.runtime.layers:
        y, log_det = flow.runtime.layer_forward(lr.name, flow.params[lr.name], y)
        bad = ~(jnp.isfinite(y).all(axis=-1) & jnp.isfinite(log_det))
        if bool(bad.any()):
            return (f" On the first {n} training rows, the first layer to give NaN/inf is {lr.label}: "
                    f"{int(bad.sum())} of {n} rows (first: row index {int(jnp.argmax(bad))} of those).")  # fmt: skip
        total = total + log_det
    log_prob = total + standard_normal_log_prob(y)
    bad = ~jnp.isfinite(log_prob)
    if bool(bad.any()):
        return (f" On the first {n} training rows every layer is finite, but {int(bad.sum())} rows land so far "
                "out in the latent space that their log-density is not finite.")  # fmt: skip
    return ""


def finish(flow, frozen, carry, losses, val_nll, val_step, has_val, counts, times, probe=None, *,
           custom_optimizer=False):
    """Picks the params to return, warns where needed and assembles the history.

    ``custom_optimizer``: the caller passed its own optimiser (so hints do not name ``peak_lr`` / ``clip_norm``).
    """
    start, compile_time, run_time = times
    steps, mesh = counts
    t, halt, rolled = int(carry["t"]), int(carry["halt"]), int(carry["rolled"])
    best_step = int(carry["best_step"]) if has_val else None
    best_val = float(carry["best_val"]) if has_val else None
    on_mesh = mesh is not None
    chosen = shd.to_local(carry["params"]) if on_mesh else carry["params"]
    non_finite = None
    if halt in BAD_WHAT:
        bad = t + 1 + rolled
        non_finite = {"step": bad, "what": BAD_WHAT[halt]}
        kept = (
            f"the best validated params (step {best_step})"
            if has_val and best_step >= 0
            else f"the last good params (step {t})"
        )
        what = (
            f"{BAD_WHAT[halt]} at the params after step {bad - 1}, so step {bad - 1}'s update was undone"
            if rolled
            else f"{BAD_WHAT[halt]}; that update was skipped"
        )
        if bad == 1 and not rolled and halt in (loop.BAD_LOSS, loop.BAD_GRADIENT):
            # Nothing was updated yet: the starting params and the first batch give it, not the step size.
            hint = ("The starting params already give it on the first batch, so a smaller step cannot help: check the "
                    "data (rows far outside the rest, where the density underflows) and the warm start.")
            hint += probe() if probe is not None else ""
        else:
            hint = ("Try a smaller learning rate (or gradient clipping) in the optimizer passed." if custom_optimizer
                    else _ADVICE.get()["lower_lr"])
            hint = _diverged_before(losses, flow.dim, kept_start=has_val and best_step == 0) + hint
        warnings.warn(
            f"fine_tune stopped at step {bad} of {steps}: {what}. Returning {kept}. {hint}",
            TrainingWarning,
            stacklevel=3,
        )
    exhausted = halt == loop.RUNNING and t < steps
    if exhausted:
        warnings.warn(
            f"fine_tune: the batches ran out after {t} of {steps} steps; stopping there.",
            TrainingWarning,
            stacklevel=3,
        )
    if has_val and best_step >= 0:
        chosen = shd.to_local(carry["best"]) if on_mesh else carry["best"]
    elif has_val:
        best_step = best_val = None
        warnings.warn(
            "fine_tune: the validation NLL was never finite, so no params could be ranked; "
            f"returning the params after step {t}.",
            TrainingWarning,
            stacklevel=3,
        )
    # ``frozen`` holds the input flow's own arrays (never round-tripped): bit-identical.
    params = loop.merge(chosen, frozen)
    stopped = {loop.RUNNING: "completed", loop.EARLY_STOP: "early_stopping"}.get(halt, "non_finite")
    stopped = "data_exhausted" if exhausted else stopped
    history = {
        "loss": np.concatenate(losses) if losses else np.zeros(0),
        "val_nll": val_nll,
        "val_step": val_step,
        "best_step": best_step,
        "best_val_nll": best_val,
        "steps_run": t,
        "stopped": stopped,
        "non_finite": non_finite,
        "wall_time": time.perf_counter() - start,
        "compile_time": compile_time,
        "steps_per_second": t / run_time if run_time > 0 else float("nan"),
        "devices": 1 if mesh is None else int(mesh.devices.size),
        "opt_state": shd.to_local(carry["opt"]) if on_mesh else carry["opt"],
    }
    _warn_if_worse(history, flow.dim, val_nll)
    summary = {k: history[k] for k in ("steps_run", "stopped", "best_step", "best_val_nll")}
    return flow.replace(params=params, metadata={**flow.metadata, "fine_tune": summary}), history


def _diverged_before(losses, dim: int, *, kept_start: bool = False) -> str:
    """A sentence for a non-finite stop when the last finite loss already sat far above the first (else "").

    ``kept_start``: the params returned are the starting ones (validation never improved on them).
    """
    loss = np.concatenate(losses) if losses else np.zeros(0)
    loss = loss[np.isfinite(loss)]
    if len(loss) < 2 or loss[-1] - loss[0] <= DIVERGED_NATS_PER_DIM * dim:
        return ""
    outcome = ("no step improved on the starting params, which are returned" if kept_start
               else "the params returned may fit much worse than the starting ones")
    return (f"The steps had diverged before that: the last finite training loss, {loss[-1]:.4g}, is far above the "
            f"first step's, {loss[0]:.4g} (at the starting params), so {outcome}. ")


#: A training loss ending this many nats per dimension (plus 3 minibatch spreads) above its start has diverged.
DIVERGED_NATS_PER_DIM = 0.5
_SCALE_HINT = (
    "The optimiser's steps are in the params' units, which for the mixture layers are the data's: columns far from "
    "unit scale (say std 1e-3 or 1e3) need standardising first (a frozen standardize layer in front, as "
    "gaussplug fit uses), or use a lower peak_lr."
)
#: The advice the warnings end with, in the caller's terms: the API's, unless :func:`advice_as` says otherwise.
_API_ADVICE = MappingProxyType({"lower_lr": "Try a lower peak_lr or clip_norm.", "scale": _SCALE_HINT})
_ADVICE = contextvars.ContextVar("gaussplug_train_advice", default=_API_ADVICE)


def advice_as(*, lower_lr: str, scale: str):
    """Within the block, fine_tune's warnings advise in other terms (``gaussplug fit``'s flags, say).

    Args:
      lower_lr: Replaces "Try a lower peak_lr or clip_norm." (after the steps diverged).
      scale: Replaces the hint on standardising the data or lowering ``peak_lr``.
    """
    return set_within(_ADVICE, {"lower_lr": lower_lr, "scale": scale})


def _warn_if_worse(history, dim: int, val_nll) -> None:
    """A :class:`TrainingWarning` when the training loss rose over the run, or validation never improved."""
    loss = np.asarray(history["loss"], np.float64)
    loss = loss[np.isfinite(loss)]
    k = max(5, min(50, len(loss) // 10))
    # The first step's loss is the starting params' (divergence can set in at the second); a non-finite stop has
    # said that the steps diverged already.
    if len(loss) >= 2 * k and history.get("stopped") != "non_finite":
        first, tail = float(loss[0]), loss[-k:]
        last = float(np.median(tail))
        margin = DIVERGED_NATS_PER_DIM * dim
        spread = 1.4826 * float(np.median(np.abs(tail - last)))  # one late minibatch loss's spread (robust)
        # Diverged: the late losses sit above the start by more than their own spread allows (a small batch's first
        # loss can be a lucky draw), or nearly all of them sit far above it (a blown-up model's losses spread widely).
        if last - first > margin + 3.0 * spread or np.mean(tail > first + 20.0 * margin) >= 0.8:
            kept = (
                f"returning the best validated params (step {history['best_step']})"
                if history["best_step"] is not None
                else "returning the last params, which fit worse than the starting ones"
            )
            warnings.warn(
                f"fine_tune: the training loss rose from {first:.4g} (the first step's, at the starting params) to "
                f"{last:.4g} (median of the last {k} steps): the steps diverged; {kept}. {_ADVICE.get()['scale']}",
                TrainingWarning,
                stacklevel=4,
            )
            return
    if history["best_step"] == 0 and history["steps_run"] > 0 and val_nll:
        warnings.warn(
            f"fine_tune: no evaluation improved on the starting params' validation NLL ({val_nll[0]:.4g}), so they "
            "are returned unchanged. The starting params may already fit as well as the training rows support "
            "(few rows for the model), or the steps are too large. " + _ADVICE.get()["scale"],
            TrainingWarning,
            stacklevel=4,
        )
