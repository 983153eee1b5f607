"""gaussplug's entries in the suite: greedy RBIG, and warm start + fine_tune under a wall-clock budget.

Budgeted fine-tuning: fine_tune has a step count, not a deadline, and a new step count
means a new compilation (10-20 s on this machine). So the runner calls
``fine_tune`` in rounds of ``ROUND`` steps (one compiled chunk, reused by every round
and by later data sets of the same shape), each round a full one-cycle cosine schedule
starting from the previous round's best validated params (cyclic "warm restarts").
Each round validates every ``EVAL_EVERY`` steps and keeps its best params, so the
validation NLL never rises. A round starts only if the last one's duration says it
ends inside the budget; rounds stop after ``PATIENCE`` rounds without a validation gain.
Warm start, compilation and every round count against the budget. Above ``HIGH_DIM``
dimensions rounds are ``HIGH_DIM_ROUND`` steps and greedy RBIG stops at
``HIGH_DIM_MAX_BLOCKS`` blocks, so that one round or the greedy fit stays near a budget.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

import gaussplug

ROUND, EVAL_EVERY, PATIENCE, BATCH, PEAK_LR = 200, 50, 2, 512, 1e-3
#: Above HIGH_DIM a step costs ~D^3 per Householder layer: shorter rounds, fewer greedy blocks at most.
HIGH_DIM, HIGH_DIM_ROUND, HIGH_DIM_MAX_BLOCKS = 64, 50, 12
GF_LAYERS, COUPLING_LAYERS, COUPLING_MAX_DIM = 8, 4, 64


class Fit:
    """What a runner returns: per-point test NLL (model space), fit seconds, a note, and the mean validation NLL."""

    def __init__(self, test_nll, seconds: float, note: str = "", val_nll: float | None = None):
        self.test_nll = np.asarray(test_nll, np.float64)
        self.seconds = float(seconds)
        self.note = note
        self.val_nll = val_nll


def flow_nll(flow, x, block: int = 4096) -> np.ndarray:
    """Per-row NLL of ``x`` under a gaussplug flow, in blocks (NaN/inf kept as they come)."""
    out = [-np.asarray(flow.log_prob(x[i : i + block]), np.float64) for i in range(0, len(x), block)]
    return np.concatenate(out)


def _mean(nll) -> float:
    return float(np.mean(nll)) if np.all(np.isfinite(nll)) else float("inf")


def budgeted_fine_tune(flow, task, budget: float, start: float):
    """Rounds of fine_tune until the budget (measured from ``start``) or the patience runs out."""
    rounds, best, stale, compile_s, last = 0, np.inf, 0, 0.0, None
    size = ROUND if task.dim <= HIGH_DIM else HIGH_DIM_ROUND
    while True:
        elapsed = time.perf_counter() - start
        if rounds and (elapsed + last > budget or stale >= PATIENCE):
            break
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flow, h = gaussplug.fine_tune(
                flow, task.train, steps=size, batch_size=BATCH, peak_lr=PEAK_LR, validation=task.val,
                eval_every=EVAL_EVERY, key=rounds, progress=False,
            )  # fmt: skip
        last = time.perf_counter() - t0 - h["compile_time"]
        compile_s += h["compile_time"]
        rounds += 1
        val = h["best_val_nll"] if h["best_val_nll"] is not None else np.inf
        stale = 0 if val < best - 1e-4 else stale + 1
        best = min(best, val)
        if h["stopped"] == "non_finite" and h["best_step"] in (None, 0):
            stale = PATIENCE  # nothing trains from here
    reason = "patience" if stale >= PATIENCE else "budget"
    return flow, f"{rounds} x {size} steps ({reason}), compile {compile_s:.0f} s"


def _warm_then_tune(spec, task, budget: float) -> Fit:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flow = gaussplug.warm_start(gaussplug.build_flow(spec, key=0), task.train, progress=False)
    warm = time.perf_counter() - start
    flow, note = budgeted_fine_tune(flow, task, budget, start)
    seconds = time.perf_counter() - start
    return Fit(flow_nll(flow, task.test), seconds, f"warm {warm:.0f} s; {note}", _mean(flow_nll(flow, task.val)))


def gaussplug_rbig(task, budget: float) -> Fit:
    """``fit_rbig(n_layers="auto", validation=val)``: greedy only, depth by held-out likelihood."""
    del budget  # greedy: it takes what it takes (reported)
    max_blocks = 50 if task.dim <= HIGH_DIM else HIGH_DIM_MAX_BLOCKS  # 50: fit_rbig's default
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flow = gaussplug.fit_rbig(task.train, n_layers="auto", validation=task.val, key=0, max_layers=max_blocks)
    seconds = time.perf_counter() - start
    chosen = flow.metadata["depth_selection"]["chosen"]
    note = f"{chosen} blocks (auto, validation)" + (f", at most {max_blocks}" if task.dim > HIGH_DIM else "")
    return Fit(flow_nll(flow, task.test), seconds, note, _mean(flow_nll(flow, task.val)))


def gaussplug_gf(task, budget: float) -> Fit:
    """``gaussianization_flow(D, n_layers=8)``: RBIG warm start, then budgeted fine_tune."""
    return _warm_then_tune(gaussplug.specs.gaussianization_flow(task.dim, n_layers=GF_LAYERS), task, budget)


def gaussplug_coupling(task, budget: float) -> Fit | str:
    """``coupling_flow(D, n_layers=4)`` (MLP 64-64): warm start, then budgeted fine_tune (2 <= D <= 64)."""
    if not 2 <= task.dim <= COUPLING_MAX_DIM:
        return f"skipped: coupling flow run for 2 <= D <= {COUPLING_MAX_DIM} only"
    return _warm_then_tune(gaussplug.specs.coupling_flow(task.dim, n_layers=COUPLING_LAYERS), task, budget)


MODELS = {
    "gaussplug RBIG (greedy)": gaussplug_rbig,
    "gaussplug GF (warm + tune)": gaussplug_gf,
    "gaussplug coupling (warm + tune)": gaussplug_coupling,
}
