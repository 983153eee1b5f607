"""The on-device part of :func:`gaussplug._train.fine_tune`: a jitted chunk of optimiser steps.

One call of the compiled chunk runs ``chunk`` steps under ``jax.lax.scan``
over the chunk's minibatches (see :mod:`gaussplug._batching` for how they are
drawn): the loss and its gradient, the optax update, the non-finite guard, and
the validation evaluations with best-parameter tracking and patience. Steps at
or past ``end`` (``steps``, or fewer when an iterator of batches ran out) or
after a stop are skipped with ``lax.cond``, so every chunk has the same shapes
and compiles once. Evaluations (including the initial params') happen inside
the chunk, so the validation forward pass is compiled once too.

Minibatches come in one of three layouts (:attr:`Engine.layout`):
``"index"`` (rows on the device once, ``(chunk, batch)`` row indices per
chunk), ``"full"`` (every step uses all rows) and ``"rows"`` (the chunk's
``(chunk, batch, dim)`` rows gathered on the host, with per-row weights).
On a device mesh the batch axis is split over the data axis and the params
are replicated, so the mean over the batch is an all-reduce.

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

from gaussplug._optim import with_settings

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
      chunk: Steps per call of :meth:`chunk_fn`.
      layout: How minibatches arrive: ``"index"``, ``"full"`` or ``"rows"``
        (see the module docstring and :meth:`chunk_fn`).
      eval_every: Validation period in steps (``None``: no validation).
      patience: Evaluations without improvement before stopping (``None``: never).
      batch_sharding: On a device mesh, the sharding of one ``(batch, dim)``
        minibatch (split along the data axis); ``None`` on one device.
    """

    log_prob: Callable
    optimizer: optax.GradientTransformation
    chunk: int
    layout: str
    eval_every: int | None
    patience: int | None
    batch_sharding: jax.sharding.Sharding | None = None

    def _nll(self, trainable, frozen, x, w):
        lp = self.log_prob(merge(trainable, frozen), x)
        return -jnp.mean(lp) if w is None else -jnp.sum(lp * w)

    def _val_nll(self, trainable, frozen, xv, wv):
        params = merge(trainable, frozen)

        def block(xw):
            lp = self.log_prob(params, xw[0])
            return jnp.sum(jnp.where(xw[1] > 0, lp, 0) * xw[1])

        if xv.shape[0] == 1:
            return -block((xv[0], wv[0]))
        return -jnp.sum(jax.lax.map(block, (xv, wv)))

    def init(self, trainable, settings=None):
        """The scan carry before step 1 (``settings``: the default optimiser's, see :mod:`gaussplug._optim`)."""
        opt = self.optimizer.init(trainable)
        carry = {
            "params": trainable,
            "prev": trainable,
            "opt": opt if settings is None else with_settings(opt, settings),
            "t": jnp.zeros((), jnp.int32),
            "halt": jnp.zeros((), jnp.int32),
            "rolled": jnp.zeros((), jnp.int32),
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

    def _maybe_evaluate(self, carry, frozen, xv, wv, end):
        """Evaluates the current params if due, at most once per step.

        Due at step 0, every ``eval_every`` steps, at the last step (``end``),
        and after a bad step (then the current params are the last good ones).
        """
        t = carry["t"]
        due = (t % self.eval_every == 0) | (t == end) | (carry["halt"] >= BAD_LOSS)
        due = due & (carry["evaluated"] != t)
        nan = jnp.full((), jnp.nan, carry["best_val"].dtype)
        carry, val = jax.lax.cond(due, lambda c: self._evaluate(c, frozen, xv, wv), lambda c: (c, nan), carry)
        return carry, val, jnp.where(due, t, -1).astype(jnp.int32)

    def _minibatch(self, batch_t, data):
        """``(rows, weights or None)`` of one step from its scanned slice and the static data."""
        if self.layout == "index":
            x, w = data
            xb = jnp.take(x, batch_t, axis=0)
        elif self.layout == "full":
            xb, w = data
        else:
            xb, w = batch_t
        if self.batch_sharding is not None and self.layout != "full":
            xb = jax.lax.with_sharding_constraint(xb, self.batch_sharding)
        return xb, w

    def _step(self, carry, frozen, batch_t, data):
        """One optimiser step, or a stop with the last good params.

        A non-finite loss or gradient at the current params means the update
        that produced them went wrong, although they are finite: they are
        replaced by the params before it (``prev``, whose loss and gradients
        were finite), ``t`` steps back by one and ``rolled`` is 1. A non-finite
        update is skipped and the current params are kept.
        """
        old = carry["params"]
        xb, w = self._minibatch(batch_t, data)
        loss, grads = jax.value_and_grad(self._nll)(old, frozen, xb, w)
        if isinstance(self.optimizer, optax.GradientTransformationExtraArgs):
            # What line-search optimisers (optax.lbfgs) ask for; the others ignore the extra arguments.
            value_fn = lambda p: self._nll(p, frozen, xb, w)  # noqa: E731
            updates, opt = self.optimizer.update(
                grads, carry["opt"], old, value=loss, grad=grads, value_fn=value_fn
            )
        else:
            updates, opt = self.optimizer.update(grads, carry["opt"], old)
        new = jax.tree.map(lambda n, o: n.astype(o.dtype), optax.apply_updates(old, updates), old)
        code = jnp.where(
            ~jnp.isfinite(loss),
            BAD_LOSS,
            jnp.where(~_all_finite(grads), BAD_GRADIENT, jnp.where(~_all_finite(new), BAD_UPDATE, RUNNING)),
        ).astype(jnp.int32)
        ok = code == RUNNING
        t = carry["t"]
        back = ((code == BAD_LOSS) | (code == BAD_GRADIENT)) & (t > 0)
        carry = {
            **carry,
            "params": _where(ok, new, _where(back, carry["prev"], old)),
            "prev": _where(ok, old, carry["prev"]),
            "opt": _where(ok, opt, carry["opt"]),
            "t": jnp.where(ok, t + 1, jnp.where(back, t - 1, t)).astype(jnp.int32),
            "halt": code,
            "rolled": back.astype(jnp.int32),
        }
        return carry, jnp.where(ok, loss, jnp.nan).astype(xb.dtype)

    def chunk_fn(self, carry, frozen, batch, data, xv, wv, end):
        """Runs up to ``chunk`` steps; returns the carry and per-slot (loss, val NLL, val step).

        By layout, ``batch`` (leading axis ``chunk``, one slice per step) and
        ``data`` (the same every step) are: ``"index"``: ``(chunk, batch)``
        int32 row indices into ``data = (x, w)``; ``"full"``: ``None`` and
        ``data = (x, w)``; ``"rows"``: ``((chunk, batch, dim) rows,
        (chunk, batch) weights or None)`` and ``data = None``. Weights ``w``
        replace the batch mean by ``sum(w * log_prob)`` (zero on padding);
        ``None`` means the plain mean. Steps run while ``t < end``
        (an int32 scalar, at most ``steps``).

        With validation, each slot first evaluates the current params if due,
        then steps, and one extra slot at the end only evaluates, so the
        validation forward pass is compiled once, here, and the last step's
        params are always evaluated.
        """
        nan = jnp.full((), jnp.nan, xv.dtype)
        has_val = self.eval_every is not None
        slots = self.chunk + int(has_val)
        if has_val:
            batch = jax.tree.map(lambda a: jnp.concatenate([a, a[:1]]), batch)

        def body(c, xs):
            slot, batch_t = xs
            val, at = nan, jnp.int32(-1)
            if has_val:
                c, val, at = self._maybe_evaluate(c, frozen, xv, wv, end)
            active = (slot < self.chunk) & (c["t"] < end) & (c["halt"] == RUNNING)
            c, loss = jax.lax.cond(active, lambda c: self._step(c, frozen, batch_t, data), lambda c: (c, nan), c)
            return c, (loss, val, at)

        return jax.lax.scan(body, carry, (jnp.arange(slots), batch))
