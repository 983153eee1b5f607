"""Multi-host data-parallel fine-tuning, run as two processes on one machine (CPU, localhost).

    python benchmarks/multihost_example.py              # launches processes 0 and 1, waits, exits 0 if both did
    python benchmarks/multihost_example.py PID PORT     # one process (what the launcher runs)

Each process calls ``jax.distributed.initialize`` with the coordinator on
``localhost:PORT``, ``num_processes=2`` and its ``process_id``; with
``--xla_force_host_platform_device_count=2`` each has 2 CPU devices, so the
global mesh has 4. Every process holds only its shard of the data (here
every other row of one synthetic draw, standing in for per-host files) and
its shard of the validation rows. Process 0 warm-starts the flow on its
shard and broadcasts the params, so both start from the same flow; then both
call ``gaussplug.fine_tune`` with their own rows: each step's 256-row batch
is 128 rows from each process, the gradient is all-reduced over the 4
devices, and both processes end with the same params.

On a real cluster run the worker part once per host with the coordinator's
address (or let ``jax.distributed.initialize()`` read it from the cluster
environment: SLURM, Open MPI, Cloud TPU), without the device-count flag.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

N_PROCESSES = 2
LOCAL_DEVICES = 2
TIMEOUT = 600


def launch() -> int:
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
        "GAUSSPLUG_LOAD_PLUGINS": os.environ.get("GAUSSPLUG_LOAD_PLUGINS", ""),
    }
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port)], env=env) for i in range(N_PROCESSES)]
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=TIMEOUT))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    print(f"launcher: exit codes {codes}, {time.perf_counter() - start:.1f} s", flush=True)
    return 0 if codes == [0] * N_PROCESSES else 1


def worker(process_id: int, port: int) -> None:
    import jax

    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=N_PROCESSES, process_id=process_id
    )
    import numpy as np
    from jax.experimental import multihost_utils

    import gaussplug
    from gaussplug import specs

    def say(*args):
        print(f"[process {process_id}]", *args, flush=True)

    say(f"{jax.process_count()} processes, local devices {jax.local_devices()}, {jax.device_count()} in all")
    # One synthetic draw; each process keeps every N_PROCESSES-th row from its index on.
    rng = np.random.default_rng(0)
    z = rng.standard_t(5, size=(8000, 2))
    x_all = np.stack([z[:, 0], 0.5 * z[:, 0] ** 2 + 0.5 * z[:, 1]], axis=1).astype(np.float32)
    x_train, x_val = x_all[:6000], x_all[6000:]
    x_local, xv_local = x_train[process_id::N_PROCESSES], x_val[process_id::N_PROCESSES]
    say(f"holds {len(x_local)} training and {len(xv_local)} validation rows")

    flow = gaussplug.build_flow(specs.gaussianization_flow(2, n_layers=3), key=0)
    if process_id == 0:
        flow = gaussplug.warm_start(flow, x_local, progress=False)
    params = multihost_utils.broadcast_one_to_all(flow.params)
    flow = flow.replace(params=jax.tree.map(np.asarray, params))

    tuned, h = gaussplug.fine_tune(
        flow, x_local, steps=300, batch_size=256, peak_lr=2e-3, validation=xv_local, progress=False
    )
    checksum = float(sum(np.abs(np.asarray(a, np.float64)).sum() for a in jax.tree.leaves(tuned.params)))
    say(
        f"devices {h['devices']}, steps {h['steps_run']} ({h['stopped']}), "
        f"loss {np.mean(h['loss'][:20]):.4f} -> {np.mean(h['loss'][-20:]):.4f}, "
        f"val NLL {h['val_nll'][0]:.4f} -> best {h['best_val_nll']:.4f} at step {h['best_step']}, "
        f"params checksum {checksum:.6f}, {h['steps_per_second']:.0f} steps/s"
    )
    # Checks: both processes hold the same params, and the validation NLL that fine_tune
    # reduced over the 4 devices is the mean of the per-process NLLs (equal shard sizes).
    local_nll = -float(np.mean(np.asarray(tuned.log_prob(xv_local), np.float64)))
    every = multihost_utils.process_allgather(np.array([checksum, local_nll]))
    same = bool(np.all(every[:, 0] == every[0, 0]))
    pooled = float(np.mean(every[:, 1]))
    say(f"NLL on own validation rows {local_nll:.4f}; mean over processes {pooled:.4f}")
    matches = abs(pooled - h["best_val_nll"]) < 1e-4
    if process_id == 0:
        say(f"same params on every process: {same}; pooled NLL equals best_val_nll: {matches}")
    jax.distributed.shutdown()
    if not (same and matches):
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) == 1:
        sys.exit(launch())
    worker(int(sys.argv[1]), int(sys.argv[2]))
