import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussplug
from gaussplug._buckets import bucket, on_bucket, pad_rows


def test_buckets_add_less_than_an_eighth_with_eight_per_doubling():
    ns = np.arange(1, 70_000)
    b = np.array([bucket(n) for n in ns])
    assert (b >= ns).all() and (b < 1.125 * ns).all() and (np.diff(b) >= 0).all()
    np.testing.assert_array_equal(b[ns <= 16], ns[ns <= 16])  # small counts are their own bucket
    assert all(bucket(m) == m for m in set(b.tolist()))  # a bucket is its own bucket
    for k in range(5, 17):
        assert len(set(b[(ns > 2 ** (k - 1)) & (ns <= 2**k)].tolist())) == 8
    assert [bucket(n) for n in (17, 1000, 1024, 1025, 3000, 3100)] == [18, 1024, 1024, 1152, 3072, 3328]


def test_rows_too_large_to_copy_keep_their_count():
    from gaussplug._buckets import MAX_PADDED_BYTES, padded_rows

    assert padded_rows(1000, 64) == 1024
    n = MAX_PADDED_BYTES // 64  # a power of two: its own bucket, at the limit
    assert padded_rows(n, 64) == n and padded_rows(n + 1, 64) == n + 1  # its bucket would pass the limit
    assert padded_rows(n // 2 + 1, 64) == bucket(n // 2 + 1)


def test_pad_rows_appends_copies_of_the_first_row():
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(pad_rows(x, 5), [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]])
    assert pad_rows(x, 3) is x


def test_on_bucket_compiles_once_per_bucket_and_cuts_every_output_back():
    traced_shapes = []

    @jax.jit
    def f(a, x):
        traced_shapes.append(x.shape)
        return x * a, jnp.sum(x, axis=1)

    x = np.arange(3000.0, dtype=np.float32).reshape(1000, 3)
    for n in (1000, 980, 999):  # one bucket: 1024 rows
        y, s = on_bucket(f, (2.0,), x[:n])
        assert isinstance(y, jax.Array) and y.shape == (n, 3) and s.shape == (n,)
        np.testing.assert_array_equal(y, 2 * x[:n])
        np.testing.assert_array_equal(s, x[:n].sum(axis=1))
    assert traced_shapes == [(1024, 3)]
    jax.jit(lambda v: on_bucket(f, (2.0,), v))(x[:999])  # under jit: the shape as given, never padded
    assert traced_shapes[-1] == (999, 3)


def test_an_error_raised_for_the_padded_rows_is_raised_for_the_callers_rows():
    def checks(x):
        raise gaussplug.PluginError(f"got {x.shape[0]} rows")

    with pytest.raises(gaussplug.PluginError, match=r"^got 50 rows$"):
        on_bucket(checks, (), np.zeros((50, 2)))


def test_buckets_can_be_turned_off(monkeypatch):
    from gaussplug import _buckets

    monkeypatch.setattr(_buckets, "ENABLED", False)
    assert [bucket(n) for n in (5, 17, 1000)] == [5, 17, 1000]
    code = "from gaussplug._buckets import bucket; print(bucket(1000))"
    env = {**os.environ, "GAUSSPLUG_ROW_BUCKETS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1000"


SHARDED = """
import json, jax, numpy as np
from gaussplug._buckets import on_bucket
mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
x = jax.device_put(np.ones((1000, 2), np.float32), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
shapes = []
f = jax.jit(lambda v: shapes.append(v.shape) or 2 * v)
out = on_bucket(f, (), x)
print("RESULT " + json.dumps({"devices": len(out.sharding.device_set), "shapes": shapes, "sum": float(out.sum())}))
"""


def test_rows_spread_over_several_devices_are_not_gathered_to_pad_them(run_on_four_devices, tmp_path):
    got = run_on_four_devices(SHARDED, tmp_path)
    assert got == {"devices": 2, "shapes": [[1000, 2]], "sum": 4000.0}
