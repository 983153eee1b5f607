"""The on-device part of :func:`gaussplug._train.fine_tune`: a jitted chunk of optimiser steps.

One call of the compiled chunk runs ``chunk`` steps under ``jax.lax.scan``
over the chunk's minibatch row indices (drawn on the host, see
:mod:`gaussplug._batching`): the loss and its gradient, the optax update, the non-finite guard, and the
validation evaluations with best-parameter tracking and patience. Steps past
``steps`` (the last, partial chunk) or after a stop are skipped with
``lax.cond``, so every chunk has the same shapes and compiles once.
Evaluations (including the initial params') happen inside the chunk, so the
validation forward pass is compiled once too.

Params are split by the flow's trainable mask into two pytrees of the same
structure with ``None`` in place of the other part's leaves; only the
trainable part reaches the optimiser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

__all__ = ["BAD_GRADIENT", "BAD_LOSS", "BAD_UPDATE", "EARLY_STOP", "RUNNING", "Engine", "merge", "split"]

RUNNING, EARLY_STOP, BAD_LOSS, BAD_GRADIENT, BAD_UPDATE = range(5)


def _is_none(v) -> bool:
    return v is None


def split(params, mask):
    """``(trainable, frozen)``: two copies of ``params`` with ``None`` for the other part's leaves."""
    trainable = jax.tree.map(lambda p, m: p if m else None, params, mask)
    frozen = jax.tree.map(lambda p, m: None if m else p, params, mask)
    return trainable, frozen


def merge(trainable, frozen):
    """Inverse of :func:`split`."""
    return jax.tree.map(lambda t, f: f if t is None else t, trainable, frozen, is_leaf=_is_none)


def _all_finite(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])) if leaves else jnp.array(True)


def _where(cond, new, old):
    return jax.tree.map(lambda n, o: jnp.where(cond, n, o), new, old)


@dataclasses.dataclass(frozen=True)
class Engine:
    """Pure ``init`` and ``chunk`` functions for one training run (jit them with AOT lowering).

    Args:
      log_prob: ``log_prob(params, x) -> (n,)``, un-jitted.
      optimizer: The optax transformation applied to the trainable params.
      steps: Total number of optimiser steps.
      chunk: Steps per call of :meth:`chunk_fn`.
      n_train: Number of training rows.
      batch_size: Rows per step (``<= n_train``; equal means full batch, ``idx`` unused).
      eval_every: Validation period in steps (``None``: no validation).
      patience: Evaluations without improvement before stopping (``None``: never).
    """

    log_prob: Callable
    optimizer: optax.GradientTransformation
    steps: int
    chunk: int
    n_train: int
    batch_size: int
    eval_every: int | None
    patience: int | None

    def _nll(self, trainable, frozen, x):
        return -jnp.mean(self.log_prob(merge(trainable, frozen), x))

    def _val_nll(self, trainable, frozen, xv, wv):
        params = merge(trainable, frozen)

        def block(xw):
            lp = self.log_prob(params, xw[0])
            return jnp.sum(jnp.where(xw[1] > 0, lp, 0) * xw[1])

        if xv.shape[0] == 1:
            return -block((xv[0], wv[0]))
        return -jnp.sum(jax.lax.map(block, (xv, wv)))

    def init(self, trainable):
        """The scan carry before step 1."""
        carry = {
            "params": trainable,
            "opt": self.optimizer.init(trainable),
            "t": jnp.zeros((), jnp.int32),
            "halt": jnp.zeros((), jnp.int32),
        }
        if self.eval_every is not None:
            carry.update(
                best=trainable,
                best_val=jnp.full((), jnp.inf, jnp.result_type(float)),
                best_step=jnp.full((), -1, jnp.int32),
                since=jnp.zeros((), jnp.int32),
                evaluated=jnp.full((), -1, jnp.int32),
            )
        return carry

    def _evaluate(self, carry, frozen, xv, wv):
        t = carry["t"]
        val = self._val_nll(carry["params"], frozen, xv, wv)
        better = val < carry["best_val"]
        since = jnp.where(better, 0, carry["since"] + 1).astype(jnp.int32)
        new = {
            "best": _where(better, carry["params"], carry["best"]),
            "best_val": jnp.where(better, val, carry["best_val"]).astype(carry["best_val"].dtype),
            "best_step": jnp.where(better, t, carry["best_step"]).astype(jnp.int32),
            "since": since,
            "evaluated": t,
        }
        if self.patience is not None:
            new["halt"] = jnp.where(
                (carry["halt"] == RUNNING) & (since >= self.patience), EARLY_STOP, carry["halt"]
            ).astype(jnp.int32)
        return {**carry, **new}, val.astype(carry["best_val"].dtype)

    def _maybe_evaluate(self, carry, frozen, xv, wv):
        """Evaluates the current params if due, at most once per step.

        Due at step 0, every ``eval_every`` steps, at the last step, and after
        a bad step (then the current params are the last good ones).
        """
        t = carry["t"]
        due = (t % self.eval_every == 0) | (t == self.steps) | (carry["halt"] >= BAD_LOSS)
        due = due & (carry["evaluated"] != t)
        nan = jnp.full((), jnp.nan, carry["best_val"].dtype)
        carry, val = jax.lax.cond(due, lambda c: self._evaluate(c, frozen, xv, wv), lambda c: (c, nan), carry)
        return carry, val, jnp.where(due, t, -1).astype(jnp.int32)

    def _step(self, carry, frozen, idx, x):
        old = carry["params"]
        xb = x if self.batch_size >= self.n_train else jnp.take(x, idx, axis=0)
        loss, grads = jax.value_and_grad(self._nll)(old, frozen, xb)
        updates, opt = self.optimizer.update(grads, carry["opt"], old)
        new = jax.tree.map(lambda n, o: n.astype(o.dtype), optax.apply_updates(old, updates), old)
        code = jnp.where(
            ~jnp.isfinite(loss),
            BAD_LOSS,
            jnp.where(~_all_finite(grads), BAD_GRADIENT, jnp.where(~_all_finite(new), BAD_UPDATE, RUNNING)),
        ).astype(jnp.int32)
        ok = code == RUNNING
        t = carry["t"]
        carry = {
            **carry,
            "params": _where(ok, new, old),
            "opt": _where(ok, opt, carry["opt"]),
            "t": jnp.where(ok, t + 1, t).astype(jnp.int32),
            "halt": code,
        }
        return carry, jnp.where(ok, loss, jnp.nan).astype(x.dtype)

    def chunk_fn(self, carry, frozen, idx, x, xv, wv):
        """Runs up to ``chunk`` steps; returns the carry and per-slot (loss, val NLL, val step).

        ``idx`` is ``(chunk, batch_size)`` int32 row indices into ``x`` (any
        ``(chunk, k)`` array in full-batch mode). With validation, each slot
        first evaluates the current params if due, then steps, and one extra
        slot at the end only evaluates, so the validation forward pass is
        compiled once, here, and the last step's params are always evaluated.
        """
        nan = jnp.full((), jnp.nan, x.dtype)
        has_val = self.eval_every is not None
        slots = self.chunk + int(has_val)
        idx = jnp.concatenate([idx, idx[:1]]) if has_val else idx

        def body(c, xs):
            slot, idx_t = xs
            val, at = nan, jnp.int32(-1)
            if has_val:
                c, val, at = self._maybe_evaluate(c, frozen, xv, wv)
            active = (slot < self.chunk) & (c["t"] < self.steps) & (c["halt"] == RUNNING)
            c, loss = jax.lax.cond(active, lambda c: self._step(c, frozen, idx_t, x), lambda c: (c, nan), c)
            return c, (loss, val, at)

        return jax.lax.scan(body, carry, (jnp.arange(slots), idx))
