"""Data-parallel placement over a device mesh: the mesh, row-sharded data, replicated pytrees.

The recipe for any computation whose result is a sum (or mean) over data
rows, fine-tuning's minibatch loss and an EM's sufficient statistics alike:

1. ``mesh = data_mesh()``: a 1-D :class:`jax.sharding.Mesh` whose axis
   ``"data"`` runs over the devices (of every process, under
   ``jax.distributed``).
2. ``rows = shard_rows(x, mesh)``: the rows split across the devices along
   that axis, padded so any ``n`` works; ``rows.mask`` marks the real rows and
   ``rows.n`` counts them (over all processes).
3. ``params = replicate(params, mesh)``: every device holds the whole pytree.
4. A jitted function of these computes ``jnp.sum(jnp.where(rows.mask, f, 0))``
   per device and XLA adds the partial sums across devices (an all-reduce),
   so the result is replicated and equals the one-device result up to float
   rounding.

Under ``jax.distributed`` each process passes only its own rows; the helpers
agree on shapes across processes (:func:`agree`) and build global arrays from
the process-local pieces.

The warm start hands its mesh to the families' ``fit`` functions through a
context variable: :func:`fit_mesh` (public as ``gaussplug.fit_mesh``) returns
it during a fit, ``None`` otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gaussplug._context import set_within

__all__ = [
    "DATA_AXIS",
    "ShardedRows",
    "agree",
    "check_same",
    "choose_mesh",
    "data_axis",
    "data_mesh",
    "fit_mesh",
    "fitting_on",
    "gather_rows",
    "host_sum",
    "local_rows",
    "local_shards",
    "n_shards",
    "processes",
    "replicate",
    "shard_local",
    "shard_rows",
    "sharding_along",
    "spans_processes",
    "to_local",
    "warm_mesh",
]

#: Name of the mesh axis that data rows are split along.
DATA_AXIS = "data"

_FIT_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("gaussplug_fit_mesh", default=None)


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over the given devices.

    Args:
      devices: ``None`` or ``"all"`` for all devices of all processes (``jax.devices()``);
        an int ``k`` for the first ``k`` local devices; a sequence of
        ``jax.Device``; or a ``Mesh`` with a ``"data"`` axis (or a single
        axis), returned as is.

    Returns:
      The mesh. Devices are grouped by process, so each process holds a
      contiguous block of the data axis.

    Raises:
      TypeError: ``devices`` is none of the above.
      ValueError: ``k`` exceeds the local devices, the sequence is empty or
        repeats a device, or the mesh has no data axis.

    Example:
      >>> mesh = data_mesh()
      >>> mesh.axis_names
      ('data',)
    """
    if isinstance(devices, Mesh):
        data_axis(devices)
        return devices
    if devices is None or (isinstance(devices, str) and devices == "all"):
        devs = list(jax.devices())
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        local = jax.local_devices()
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices: expected 1 to {len(local)} (the local devices); got {devices}.")
        devs = local[: int(devices)]
    else:
        try:
            devs = list(devices)
        except TypeError:
            devs = None
        if not devs or not all(isinstance(d, jax.Device) for d in devs):
            raise TypeError(
                "devices: expected None, an int, a non-empty sequence of jax.Device, a jax.sharding.Mesh or 'all'; "
                f"got {devices!r}."
            )
        if len(set(devs)) != len(devs):
            raise ValueError(f"devices: expected distinct devices; got {devs}.")
    devs.sort(key=lambda d: d.process_index)  # stable: keeps the order within a process
    return Mesh(np.array(devs), (DATA_AXIS,))


def choose_mesh(devices, rows: int) -> Mesh | None:
    """The mesh ``fine_tune`` trains on, ``None`` meaning the default device alone.

    ``devices=None`` picks all local devices when there are several and they
    divide ``rows`` (the batch), or every process's devices under
    ``jax.distributed``; ``1`` picks the default device; anything else goes
    to :func:`data_mesh`.
    """
    if devices is None:
        if jax.process_count() > 1:
            return data_mesh()
        local = jax.local_devices()
        return data_mesh(local) if len(local) > 1 and rows % len(local) == 0 else None
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool) and devices == 1:
        return None
    return data_mesh(devices)


def warm_mesh(devices) -> Mesh | None:
    """The mesh the warm start fits on, ``None`` meaning the default device alone (the plain path).

    Accepts what ``fine_tune`` accepts, except that ``None`` means one device
    (``fine_tune``'s ``None`` picks several when they divide the batch):
    ``"all"`` is every device of every process, an int ``k`` the first ``k``
    local devices, or a sequence of ``jax.Device`` or a ``Mesh`` (see
    :func:`data_mesh`). A mesh whose data axis has one slice is ``None``.

    Example:
      >>> warm_mesh(None) is None and warm_mesh(1) is None
      True
    """
    if devices is None:
        return None
    mesh = data_mesh(devices)
    return mesh if n_shards(mesh) > 1 else None


def fit_mesh() -> Mesh | None:
    """The device mesh the current greedy ``fit`` call may reduce its row statistics over.

    ``gaussplug.warm_start(..., devices=...)`` sets it around each family's
    ``fit`` call when more than one device is in use; otherwise (one device,
    or outside a warm start) it is ``None``. A fit that sums over rows can
    then split its rows with ``shard_rows(x, mesh)``, compute per-device
    partial sums (e.g. in ``jax.shard_map`` over the ``"data"`` axis) and
    combine them with ``psum``/``pmax``. Under ``jax.distributed`` the ``x`` a
    fit receives holds this process's rows only; a fit that ignores the mesh
    then sees only those rows.

    Returns:
      A :class:`jax.sharding.Mesh` with a ``"data"`` axis of more than one
      device, or ``None``.

    Example:
      >>> import gaussplug
      >>> gaussplug.fit_mesh() is None
      True
    """
    return _FIT_MESH.get()


@contextlib.contextmanager
def fitting_on(mesh: Mesh | None):
    """Context in which :func:`fit_mesh` returns ``mesh`` (restored on exit)."""
    with set_within(_FIT_MESH, mesh):
        yield mesh


def data_axis(mesh: Mesh) -> str:
    """The axis rows are split along: ``"data"``, or the only axis of a 1-D mesh."""
    names = tuple(mesh.axis_names)
    if DATA_AXIS in names:
        return DATA_AXIS
    if len(names) == 1:
        return names[0]
    raise ValueError(f"mesh: expected a 1-D mesh or one with a {DATA_AXIS!r} axis; got axes {names}.")


def n_shards(mesh: Mesh) -> int:
    """Number of slices the data axis cuts the rows into."""
    return int(mesh.shape[data_axis(mesh)])


def processes(mesh: Mesh) -> list[int]:
    """Sorted indices of the processes owning the mesh's devices."""
    return sorted({d.process_index for d in mesh.devices.flat})


def spans_processes(mesh: Mesh | None) -> bool:
    """Whether the mesh has devices of more than one process (multi-host)."""
    return mesh is not None and len(processes(mesh)) > 1


def local_shards(mesh: Mesh) -> int:
    """Slices of the data axis held by each process."""
    return n_shards(mesh) // len(processes(mesh))


def agree(value: int, how: str, mesh: Mesh | None) -> int:
    """``value`` combined over the mesh's processes: ``"min"``, ``"max"`` or ``"sum"``.

    A collective: every process must call it. Returns ``value`` unchanged when
    the mesh lives in one process.
    """
    if not spans_processes(mesh):
        return int(value)
    from jax.experimental import multihost_utils

    values = np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int64)))
    return int({"min": values.min, "max": values.max, "sum": values.sum}[how]())


def check_same(values: dict[str, int], mesh: Mesh | None) -> None:
    """Raises ValueError unless every process passes equal ``values`` (a collective)."""
    if not spans_processes(mesh):
        return
    from jax.experimental import multihost_utils

    mine = np.asarray(list(values.values()), np.int64)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, mine.size)
    differ = [name for i, name in enumerate(values) if len(set(every[:, i].tolist())) > 1]
    if differ:
        got = {name: every[:, list(values).index(name)].tolist() for name in differ}
        raise ValueError(f"expected the same settings on every process; per process got {got}.")


def sharding_along(mesh: Mesh, ndim: int, dim: int | None) -> NamedSharding:
    spec = [None] * ndim
    if dim is not None:
        spec[dim] = data_axis(mesh)
    return NamedSharding(mesh, P(*spec))


def replicate(tree, mesh: Mesh):
    """Every leaf of ``tree`` as an array held whole by every device of ``mesh``.

    ``None`` leaves stay ``None``. Across processes each process must pass the
    same values.
    """

    def put(a):
        sharding = sharding_along(mesh, np.ndim(a), None)
        if not spans_processes(mesh):
            return jax.device_put(a, sharding)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def shard_local(local, mesh: Mesh, dim: int = 0) -> jax.Array:
    """A global array split along axis ``dim`` over the data axis, from this process's piece.

    In one process ``local`` is the whole array. Across processes each passes
    its block (equal shapes everywhere) and the global array stacks the
    blocks in process order. ``local.shape[dim]`` must be a multiple of
    :func:`local_shards`.
    """
    local = np.asarray(local)
    sharding = sharding_along(mesh, local.ndim, dim)
    if not spans_processes(mesh):
        return jax.device_put(local, sharding)
    shape = list(local.shape)
    shape[dim] *= len(processes(mesh))
    return jax.make_array_from_process_local_data(sharding, local, tuple(shape))


class ShardedRows(NamedTuple):
    """Rows split across a mesh's data axis (see :func:`shard_rows`)."""

    #: ``(n_padded, ...)`` rows; padding repeats a real row, so it stays finite.
    x: jax.Array
    #: ``(n_padded,)`` bool, True on real rows; sharded like ``x``.
    mask: jax.Array
    #: Real rows over all processes.
    n: int


def shard_rows(x, mesh: Mesh) -> ShardedRows:
    """Splits the rows of ``x`` across the data axis, padding so that any row count works.

    Each device gets an equal slice; the last slices carry copies of a real
    row, marked False in the mask. Reduce with the mask, e.g.
    ``jnp.sum(jnp.where(rows.mask[:, None], f(rows.x), 0), axis=0) / rows.n``.

    Args:
      x: Array ``(n, ...)`` on the host or a device (a device array is
        padded there); under ``jax.distributed`` this process's rows (counts
        may differ between processes).
      mesh: From :func:`data_mesh`.

    Returns:
      A :class:`ShardedRows` ``(x, mask, n)``.

    Example:
      >>> import numpy as np
      >>> rows = shard_rows(np.arange(10.0).reshape(5, 2), data_mesh())
      >>> rows.n, int(rows.mask.sum()), float(jnp.sum(jnp.where(rows.mask[:, None], rows.x, 0)))
      (5, 5, 45.0)
    """
    on_device = isinstance(x, jax.Array) and not spans_processes(mesh)  # pad there, no host round trip
    xp = jnp if on_device else np
    x = xp.asarray(x)
    n_local = x.shape[0]
    per = local_shards(mesh)
    width = max(per, -(-agree(n_local, "max", mesh) // per) * per)
    fill = x[:1] if n_local else xp.zeros((1, *x.shape[1:]), x.dtype)
    padded = xp.concatenate([x, xp.repeat(fill, width - n_local, axis=0)])
    mask = xp.arange(width) < n_local
    if on_device:
        return ShardedRows(jax.device_put(padded, sharding_along(mesh, x.ndim, 0)), shard_local(mask, mesh), n_local)
    return ShardedRows(shard_local(padded, mesh), shard_local(mask, mesh), agree(n_local, "sum", mesh))


def local_rows(a: jax.Array, n_local: int) -> np.ndarray:
    """This process's first ``n_local`` rows of a row-sharded array, on the host.

    The inverse of :func:`shard_rows`, padding dropped.
    """
    if a.is_fully_addressable:
        return np.asarray(a)[:n_local]
    blocks = {}
    for s in a.addressable_shards:  # replicas along other mesh axes hold the same block
        blocks.setdefault(s.index[0].start or 0, s)
    return np.concatenate([np.asarray(blocks[k].data) for k in sorted(blocks)])[:n_local]


def gather_rows(x, mesh: Mesh | None) -> np.ndarray:
    """The rows of every process stacked in process order (``x`` itself in one process; a collective)."""
    if not spans_processes(mesh):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    x = np.asarray(x)
    width = agree(x.shape[0], "max", mesh)
    padded = np.concatenate([x, np.zeros((width - x.shape[0], *x.shape[1:]), x.dtype)])
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(-1, width, *x.shape[1:])
    counts = np.asarray(multihost_utils.process_allgather(np.asarray(x.shape[0], np.int64))).reshape(-1)
    return np.concatenate([block[:c] for block, c in zip(every, counts, strict=True)])


def host_sum(a, mesh: Mesh | None) -> np.ndarray:
    """A host array summed over the mesh's processes (``a`` itself in one process; a collective)."""
    if not spans_processes(mesh):
        return np.asarray(a)
    from jax.experimental import multihost_utils

    a = np.asarray(a)
    return np.asarray(multihost_utils.process_allgather(a)).reshape(-1, *a.shape).sum(axis=0)


def to_local(tree):
    """Replicated arrays back as ordinary arrays on the default device (``None`` stays)."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), tree)
