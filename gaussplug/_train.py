"""Maximum-likelihood fine-tuning of a flow's Haiku params with optax: :func:`fine_tune`."""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gaussplug import _interrupt as interrupt
from gaussplug import _optim
from gaussplug import _sharding as shd
from gaussplug import _train_loop as loop
from gaussplug._batching import GatherFeed, IndexFeed, IterFeed, open_source, validation_blocks
from gaussplug._flow import Flow, require_flow
from gaussplug._keys import as_key
from gaussplug._param_checks import non_finite_count, non_finite_param
from gaussplug._progress import progress_bar
from gaussplug._scalars import as_flag, int_at_least, positive_number
from gaussplug._spec import _short
from gaussplug._train_result import BAD_WHAT, TrainingWarning, finish, probe_rows

__all__ = ["TrainingWarning", "fine_tune"]

#: Most optimiser steps per compiled call (one ``lax.scan``).
_MAX_CHUNK = 200
#: Most minibatch indices (or gathered values) sent to the device per chunk (caps the chunk for huge batches).
_MAX_CHUNK_INDICES = 1 << 22
#: Validation rows per block of the validation NLL (bounds its memory).
_VAL_BLOCK = 4096
#: Compiled (init, chunk) pairs of recent runs, keyed by engine and argument shapes.
_COMPILED: OrderedDict[tuple, tuple] = OrderedDict()
_COMPILED_SIZE = 8
#: Most steps one fine_tune call runs (its step counter is an int32).
MAX_STEPS = 2**31 - 1

def _compiled(engine: loop.Engine, mesh, trainable, opt_settings, frozen, batch, data, xv, wv, end):
    """``(init, chunk, compile_seconds)``: the engine's functions compiled ahead of time (cached).

    On a mesh the arguments carry their shardings, and the carry and outputs
    are replicated.
    """
    args = (trainable, opt_settings, frozen, batch, data, xv, wv, end)
    signature = (
        engine,
        mesh,
        jax.config.jax_enable_x64,
        jax.tree.structure(args),
        tuple((a.shape, jnp.dtype(a.dtype).name) for a in jax.tree.leaves(args)),
    )
    try:
        hit = _COMPILED.get(signature)
    except TypeError:  # an unhashable custom optimizer: compile without caching
        hit, signature = None, None
    if hit is not None:
        _COMPILED.move_to_end(signature)
        return (*hit, 0.0)
    t0 = time.perf_counter()
    out = {} if mesh is None else {"out_shardings": _replicated(mesh)}
    init = jax.jit(engine.init, **out).lower(trainable, opt_settings).compile()
    carry = jax.eval_shape(engine.init, trainable, opt_settings)
    if mesh is not None:
        carry = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=_replicated(mesh)), carry)
    chunk = jax.jit(engine.chunk_fn, **out).lower(carry, frozen, batch, data, xv, wv, end).compile()
    if signature is not None:
        _COMPILED[signature] = (init, chunk)
        if len(_COMPILED) > _COMPILED_SIZE:
            _COMPILED.popitem(last=False)
    return init, chunk, time.perf_counter() - t0


def _replicated(mesh):
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _check_finite_params(flow: Flow) -> None:
    """Raises ``ValueError`` naming the first param of ``flow`` with NaN or inf values.

    Training from such params gives NaN from the first step, and the "last good params" that
    ``fine_tune`` falls back on would be these very params.
    """
    found = non_finite_param(flow.params)
    if found:
        layer, module, name, bad, size = found
        raise ValueError(
            f"flow: layer {layer!r}, param {module}/{name}: expected finite params; {bad} of {size} values are "
            "NaN or inf. Start from build_flow, warm_start or a saved model (these never hold non-finite params), "
            "or replace that layer's params."
        )


def fine_tune(
    flow: Flow,
    x,
    *,
    steps: int,
    batch_size: int = 512,
    peak_lr: float = 1e-3,
    clip_norm: float = 1.0,
    optimizer: optax.GradientTransformation | None = None,
    validation=None,
    patience: int | None = None,
    key=0,
    progress: bool = True,
    eval_every: int | None = None,
    devices=None,
    opt_state=None,
) -> tuple[Flow, dict[str, Any]]:
    """Trains a flow's params by maximum likelihood (minibatch NLL with optax).

    The flow is not changed; a new one is returned. Parameters that the
    flow's families freeze (``flow.trainable_mask()``) never reach the
    optimiser and come back bit-identical. Steps run on the device in chunks of
    up to 200 (``jax.lax.scan``), compiled once and reused by later calls with
    the same plan, shapes, ``optimizer`` object, ``batch_size``,
    ``eval_every`` and ``patience``: with the default optimiser, ``peak_lr``,
    ``clip_norm`` and ``steps`` (from 200 on) are run-time values, so a sweep
    over them compiles once; a custom ``optimizer`` is compiled per object, so
    build it once and reuse it. Each epoch visits the training rows in
    a fresh random order (``n // batch_size`` batches); a batch larger than the
    data uses all rows.

    **Devices.** With several local devices (or under ``jax.distributed``)
    training is data-parallel: a :class:`jax.sharding.Mesh` with a ``"data"``
    axis, each minibatch split along it (padded to a multiple of the devices
    with zero-weight rows), params and optimiser state replicated; XLA
    all-reduces the gradient. The minibatches are the same as on one device,
    so results agree with it up to float rounding. See ``docs/scaling.md``.

    **Data that does not fit in memory.** ``x`` may be a memory map
    (``np.load(path, mmap_mode="r")``): it is never read whole; each chunk's
    minibatch rows are gathered on the host by index and only they are sent.
    ``x`` may also be an iterator or iterable of batches ``(b, dim)``: one
    optimiser step per batch, ``steps`` still bounds the run; an iterator is
    used once (if it runs out first, training stops there with a
    :class:`TrainingWarning`), any other iterable is iterated again
    whenever it is exhausted. A list or tuple whose items are all 2-D (e.g.
    ``[x[i:i + 64] for i in ...]``) is such an iterable of batches; one of
    rows (1-D items) is an array.

    A step whose loss, gradients or updated params are not finite is skipped
    and training stops with a :class:`TrainingWarning` naming the step; the
    last good params (or, with validation, the best validated ones) are
    returned, so the result is always finite. A non-finite loss or gradient
    condemns the params it was computed at, although they are finite: the
    update that produced them is undone as well, so the params returned are
    ones whose training loss and gradients were finite.

    Args:
      flow: The flow to train (e.g. a greedy warm start).
      x: Training data: an array ``(n >= 2, dim)``; a ``np.memmap`` of that
        shape (out of core; non-finite rows are reported when first drawn);
        or an iterator/iterable of array-like batches ``(b, dim)`` (the first
        fixes the compiled width; later ones may be smaller, not larger).
        Under ``jax.distributed``: this process's rows (array or memmap).
      steps: Number of optimiser steps.
      batch_size: Rows per step (over all processes); capped at the number
        of training rows. Unused with batches from an iterator.
      peak_lr: Peak learning rate of the default one-cycle cosine schedule.
      clip_norm: Global gradient-norm clip of the default optimiser.
      optimizer: Any ``optax.GradientTransformation``; replaces the default
        ``chain(clip_by_global_norm(clip_norm),
        adam(cosine_onecycle_schedule(steps, peak_lr)))`` (``peak_lr`` and
        ``clip_norm`` are then unused). A ``GradientTransformationExtraArgs``
        gets ``value``, ``grad`` and ``value_fn`` (the minibatch's loss, its
        gradient and the loss as a function of the params), which line-search
        optimisers such as ``optax.lbfgs()`` need.
      validation: ``None``; a fraction in (0, 1) of ``x`` held out at random
        (seeded by ``key``, so resuming on the same ``x`` with the same
        ``key`` keeps the same rows out of training, while another ``key``
        would train on earlier validation rows; not with batches from an
        iterator), leaving at least 2 training rows; or a held-out array
        ``(m, dim)`` (under ``jax.distributed``, this process's). With
        validation, the mean validation NLL is computed for the initial params
        and every ``eval_every`` steps (and at the last step), and the best
        validated params are returned (the initial ones if none improved).
      patience: Stop after this many evaluations without improvement
        (requires ``validation``); ``None`` never stops early.
      key: Int seed or PRNG key for the validation split and minibatches.
      progress: Show a tqdm bar with the loss and validation NLL (on a terminal or in a Jupyter notebook;
        cleared when done; logs and pipes get none).
      eval_every: Steps between validation evaluations (requires
        ``validation``); default ``min(steps, 200)``.
      devices: ``None``: all local devices when there are several and they
        divide the batch (under ``jax.distributed``: every process's devices),
        else the default device; ``1``: the default device; an int ``k``: the
        first ``k`` local devices; a sequence of ``jax.Device``; or a
        ``jax.sharding.Mesh`` with a ``"data"`` axis (or a single axis).
      opt_state: Resume training: the ``history["opt_state"]`` of an earlier
        call with the same ``optimizer`` object on a flow of the same
        structure (its result, say); the optimiser starts from it instead of
        ``optimizer.init`` (Adam's moments and step count carry over). Needs
        ``optimizer``: the default one-cycle schedule spans one call's
        ``steps``. Pass another ``key`` to draw other minibatches.

    Returns:
      ``(new_flow, history)``. ``history`` holds ``"loss"`` (NumPy array, one
      entry per attempted step, NaN for a skipped one), ``"val_nll"`` and
      ``"val_step"`` (lists; step 0 is the initial params), ``"best_step"`` and
      ``"best_val_nll"`` (``None`` without validation), ``"steps_run"``
      (successful updates), ``"stopped"`` (``"completed"``,
      ``"early_stopping"`` or ``"non_finite"``), ``"non_finite"`` (``None`` or
      ``{"step": s, "what": ...}``), ``"wall_time"``, ``"compile_time"``,
      ``"steps_per_second"`` (after compilation), ``"devices"`` (how many
      devices trained), ``"train_rows"`` (``None`` for batches from an
      iterator) and ``"validation_rows"``. ``"stopped"`` is ``"data_exhausted"`` when an iterator of
      batches ran out before ``steps``. ``"opt_state"`` is the optimiser's
      state after the last step taken (with validation, possibly later than
      the params returned), for ``opt_state=`` of a later call. A summary is also stored in
      ``new_flow.metadata["fine_tune"]``.

    Raises:
      TypeError: ``flow`` is not a Flow, ``optimizer`` not an optax
        transformation, or ``devices`` of none of the accepted types.
      DataError: ``x``, one of its batches or a validation array has the
        wrong shape or non-finite values.
      ValueError: ``flow`` has NaN or inf params (the message names them), a
        bad ``steps``, ``batch_size``, ``peak_lr``, ``clip_norm``,
        ``validation``, ``patience``, ``eval_every``, ``progress`` or ``devices``, a
        validation fraction with batches from an iterator, settings that
        differ between processes, or an ``opt_state`` without ``optimizer``
        or not of its structure for this flow (the message names the first
        leaf that differs).

    Example:
      >>> import gaussplug, numpy as np
      >>> from gaussplug import fine_tune
      >>> x = np.random.default_rng(0).normal(size=(256, 2)) * [1.0, 3.0] + 2.0
      >>> flow = gaussplug.build_flow({"dim": 2, "layers": [
      ...     {"family": "householder"}, {"family": "standardize"}]})
      >>> tuned, history = fine_tune(flow, x, steps=100, batch_size=64, peak_lr=0.05, progress=False)
      >>> history["stopped"], history["loss"].shape
      ('completed', (100,))
      >>> bool(tuned.log_prob(x).mean() > flow.log_prob(x).mean())
      True
    """
    start = time.perf_counter()
    require_flow(flow, "fine_tune")
    progress = as_flag("progress", progress)
    _check_finite_params(flow)
    steps = int_at_least("steps", steps)
    if steps > MAX_STEPS:  # the step counter is an int32 on the device
        raise ValueError(f"steps: expected at most {MAX_STEPS:,} (2**31 - 1) per call; got {steps:,}.")
    batch_size = int_at_least("batch_size", batch_size)
    patience = int_at_least("patience", patience, none_ok=True)
    eval_every = int_at_least("eval_every", eval_every, none_ok=True)
    if validation is None and (patience is not None or eval_every is not None):
        raise ValueError(
            f"patience and eval_every need validation data; got validation=None with "
            f"patience={patience!r}, eval_every={eval_every!r}."
        )
    custom_optimizer = optimizer is not None
    opt_settings = None
    if optimizer is None:  # one optimiser object, this run's settings as arrays: a sweep compiles once
        optimizer = _optim.DEFAULT
        peak_lr, clip_norm = positive_number("peak_lr", peak_lr), positive_number("clip_norm", clip_norm)
        opt_settings = _optim.settings(steps, peak_lr, clip_norm)
    elif not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        got = type(optimizer).__name__
        raise TypeError(f"optimizer: expected an optax.GradientTransformation; got {got}.")
    if opt_state is not None and not custom_optimizer:
        raise ValueError(
            "opt_state: resuming needs the optimizer that made the state, passed as optimizer= to both calls "
            "(e.g. optax.adam(1e-3)); the default optimiser's one-cycle schedule spans one call's steps."
        )
    key = as_key(key)
    batch_key = jax.random.split(key)[1]  # [0] holds out the validation rows (_batching.holdout_rows)
    dtype = flow.dtype
    kind, x_src, train_rows, x_val = open_source(x, flow.dim, dtype, validation, key)
    probe = None if kind == "batches" else functools.partial(probe_rows, flow, x_src, train_rows)
    if kind == "batches":
        feed = IterFeed(x_src, flow.dim, dtype)
        rows = feed.batch_size
    else:
        rows = min(batch_size, x_src.shape[0] if train_rows is None else len(train_rows))
    mesh = shd.choose_mesh(devices, rows)
    if kind == "batches":
        if shd.spans_processes(mesh):
            raise ValueError(
                "x: batches from an iterator are not supported across processes; pass each process's rows "
                "as an array or a memory-mapped .npy."
            )
        feed.place(mesh)
    elif kind == "memmap" or shd.spans_processes(mesh):  # caps the batch itself (over all processes)
        feed = GatherFeed(x_src, train_rows, batch_size, batch_key, dtype, mesh)
    else:
        feed = IndexFeed(x_src, rows, batch_key, mesh)
    per_step = feed.width * (flow.dim if feed.layout == "rows" else 1)
    chunk = max(1, min(steps, _MAX_CHUNK, _MAX_CHUNK_INDICES // per_step))
    has_val = x_val is not None
    if has_val and eval_every is None:  # not the chunk: wide rows shrink it, to 1 step at 7000 x 600
        eval_every = min(steps, _MAX_CHUNK)
    settings = {"steps": steps, "chunk": chunk, "width": feed.width, "rows_layout": int(feed.layout == "rows")}
    settings.update(eval_every=eval_every or 0, patience=patience or 0)
    shd.check_same(settings, mesh)
    batch_sharding = None if mesh is None else shd.sharding_along(mesh, 2, 0)
    engine = loop.Engine(
        log_prob=flow.runtime._log_prob,
        optimizer=optimizer,
        chunk=chunk,
        layout=feed.layout,
        eval_every=eval_every,
        patience=patience,
        batch_sharding=batch_sharding,
    )
    if has_val:
        xv, wv = validation_blocks(x_val, _VAL_BLOCK, dtype, mesh)
    else:
        xv, wv = jnp.zeros((1, 1, flow.dim), dtype), jnp.zeros((1, 1), dtype)
    trainable, frozen = loop.split(flow.params, flow.trainable_mask())
    on_mesh = trainable, opt_settings, frozen
    if mesh is not None:
        on_mesh = shd.replicate(on_mesh, mesh)
        if not has_val:
            xv, wv = shd.replicate((xv, wv), mesh)
    if opt_state is not None:  # checked before compiling; replaces the fresh state once the carry is built
        opt_state = _resumed_state(opt_state, jax.eval_shape(engine.init, *on_mesh[:2])["opt"])
        if mesh is not None:
            opt_state = shd.replicate(opt_state, mesh)
    batch, offered = feed.take(chunk)
    end = steps if not feed.exhausted else min(steps, offered)
    end_arr = _scalar(end, mesh)
    init_fn, chunk_fn, compile_time = _compiled(engine, mesh, *on_mesh, batch, feed.data, xv, wv, end_arr)
    interrupt.checkpoint()  # compiled, nothing run yet: a Ctrl-C in the command line stops here

    run_start = time.perf_counter()
    carry = init_fn(*on_mesh[:2])
    if opt_state is not None:
        carry = {**carry, "opt": opt_state}
    losses, val_nll, val_step, done = [], [], [], 0
    with progress_bar(steps, progress, desc="fine_tune", unit="step") as bar:
        n_chunks = -(-steps // chunk)
        for i in range(n_chunks):
            carry, (loss, val, at) = chunk_fn(carry, on_mesh[2], batch, feed.data, xv, wv, end_arr)
            if i + 1 < n_chunks and not feed.exhausted:  # drawn while the device runs
                batch, avail = feed.take(chunk)
                offered += avail
            loss, val, at, t, halt, rolled = jax.device_get(
                (loss, val, at, carry["t"], carry["halt"], carry["rolled"])
            )
            interrupt.checkpoint()  # the chunk is done: a Ctrl-C in the command line stops here
            t, halt = int(t), int(halt)
            losses.append(loss[: t - done + int(rolled) + (halt in BAD_WHAT)])  # steps tried in this chunk
            done = t
            val_nll += [float(v) for v in val[at >= 0]]
            val_step += [int(s) for s in at[at >= 0]]
            bar.update(max(t - bar.n, 0))
            post = {"loss": f"{np.nanmean(loss):.4g}" if np.isfinite(loss).any() else "nan"}
            if val_nll:
                post["val_nll"] = f"{val_nll[-1]:.4g}"
            bar.set_postfix(post, refresh=False)
            if halt != loop.RUNNING or t >= end:
                break
            if feed.exhausted and min(steps, offered) != end:  # the batches ran out: stop there
                end = min(steps, offered)
                end_arr = _scalar(end, mesh)
                if end == t and not has_val:
                    break  # nothing left to run (with validation, one more chunk evaluates step ``end``)
    run_time = time.perf_counter() - run_start
    times = (start, compile_time, run_time)
    tuned, history = finish(flow, frozen, carry, losses, val_nll, val_step, has_val, (steps, mesh), times, probe,
                            custom_optimizer=custom_optimizer)
    n_train = None if kind == "batches" else x_src.shape[0] if train_rows is None else len(train_rows)
    history["train_rows"] = None if n_train is None else int(n_train)
    history["validation_rows"] = 0 if x_val is None else int(x_val.shape[0])
    return tuned, history


def _resumed_state(opt_state, fresh):
    """``opt_state`` (an earlier run's ``history["opt_state"]``) checked against ``fresh`` (this run's init state).

    ``fresh`` may be shapes only (``jax.eval_shape``). Leaves take ``fresh``'s dtypes. Raises ``ValueError``
    naming the first leaf whose structure, shape or dtype kind differs, or whose values are not finite.
    """
    got, want = jax.tree.structure(opt_state), jax.tree.structure(fresh)
    if got != want:
        raise ValueError(
            "opt_state: expected the state of this optimizer for this flow's trainable params (an earlier "
            f"fine_tune's history['opt_state'] with the same optimizer object and flow structure); its structure "
            f"differs: expected {_short(want, 160)}, got {_short(got, 160)}."
        )
    out = []
    for (path, new), ref in zip(jax.tree_util.tree_leaves_with_path(opt_state), jax.tree.leaves(fresh), strict=True):
        name = jax.tree_util.keystr(path)
        a = np.asarray(new)
        want_kind = np.dtype(ref.dtype).kind
        kind_ok = a.dtype.kind == want_kind or (a.dtype.kind in "iu" and want_kind in "iuf")
        if a.shape != ref.shape or not kind_ok:
            raise ValueError(
                f"opt_state{name}: expected shape {tuple(ref.shape)} and dtype {ref.dtype} (this optimizer's state "
                f"for this flow); got shape {a.shape} and dtype {a.dtype}."
            )
        bad = non_finite_count(a)
        if bad:
            raise ValueError(f"opt_state{name}: expected finite values; {bad} are NaN or inf.")
        out.append(jnp.asarray(a, ref.dtype))
    return jax.tree.unflatten(want, out)


def _scalar(value: int, mesh):
    """An int32 scalar argument (replicated on a mesh)."""
    value = np.int32(value)
    return value if mesh is None else shd.replicate(value, mesh)
