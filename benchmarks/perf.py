"""Performance targets of issue 5: warm start, fine-tune, sampling and cost against size (CPU, float32).

    python benchmarks/perf.py                   # full run (about 15 min on 2 CPU cores)
    python benchmarks/perf.py --quick --out DIR # smoke mode: tiny sizes, one repeat, numbers not comparable
    python benchmarks/perf.py --only warm --only sample   # some targets only (repeatable)
    python benchmarks/perf.py --full-sklearn    # compare all 64 dims per layer with scikit-learn (~10 min more)

Targets (``Sizes`` holds every size):

1. ``warm``: ``warm_start`` of ``gaussianization_flow(64, n_layers=8, n_components=8)`` on 20,000 rows
   in at most 5 s (warm: median of repeats after a first, compile-inclusive run); every mixture layer's
   per-dimension mean log-likelihood at least that of scikit-learn's ``GaussianMixture(8)`` fitted on the
   same column (the data arriving at the layer).
2. ``finetune``: the seed experiment 1 (moons, 3000 steps, batch 512) fine-tune in at most 10 s including
   compilation, in a fresh process.
3. ``sample``: 1,000,000 samples of an 8-block 8-D flow in at most 3 s (warm), with a round-trip error
   ``|forward(inverse(z)) - z| / max(1, |z|)`` of at most 1e-5.
4. ``scaling``: warm-start time and peak memory against ``n`` (D = 16) and ``D`` (n = 10,000), fine-tune
   time per 1000 steps against ``D``; every point in a fresh process. 5: the n = 1e6 point must stay
   within 4x the data's size of extra memory.

Data: the ``sources`` family of ``benchmarks/known_densities.py`` (independent Laplace / logistic /
Student-t3 / Gumbel / bimodal sources under a Haar-random rotation), drawn in row chunks straight
into a float32 array. Timings use ``jax.block_until_ready``. Prints the tables and replaces the
section between ``<!-- perf:start -->`` and ``<!-- perf:end -->`` in ``OUT/benchmarks.md``
(appending it if missing) and writes ``OUT/img/perf_*.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import resource
import shlex
import subprocess
import sys
import threading
import time
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _sections  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = _sections.markers("perf")
TARGETS = ("warm", "finetune", "sample", "scaling")
RESULT = "PERF-RESULT "
MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size, repeat count and limit of a run."""

    repeats: int = 3
    layers: int = 8
    components: int = 8
    warm_n: int = 20_000
    warm_dim: int = 64
    warm_limit_s: float = 5.0
    sk_dims: int = 8
    moons_n: int = 3000
    ft_steps: int = 3000
    ft_processes: int = 3
    ft_limit_s: float = 10.0
    sample_n: int = 1_000_000
    sample_dim: int = 8
    sample_fit_n: int = 20_000
    sample_limit_s: float = 3.0
    sample_tol: float = 1e-5
    scale_ns: tuple[int, ...] = (1000, 10_000, 100_000, 1_000_000)
    scale_n_dim: int = 16
    scale_dims: tuple[int, ...] = (2, 8, 32, 64, 128, 256)
    scale_dim_n: int = 10_000
    scale_ft_steps: int = 200
    memory_ratio: float = 4.0
    diagnose: bool = True  # per-layer inverse errors (target 3) and the memory breakdown (target 5)
    fresh: bool = True  # scaling points and target children in fresh processes


FULL = Sizes()
QUICK = Sizes(
    repeats=1, layers=2, warm_n=600, warm_dim=3, sk_dims=2, moons_n=600, ft_steps=20, ft_processes=1,
    sample_n=3000, sample_dim=3, sample_fit_n=600, scale_ns=(600,), scale_n_dim=3, scale_dims=(3,),
    scale_dim_n=600, scale_ft_steps=20, fresh=False, diagnose=False,
)  # fmt: skip


# ----------------------------------------------------------------------------- measuring helpers


def vmrss() -> int:
    """Resident set size of this process now, in bytes (from /proc/self/status; 0 where unavailable)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss() -> int:
    """High-water mark of this process's resident set size, in bytes (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Polls VmRSS in a thread; ``peak`` is the largest value seen since the last ``reset``."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, vmrss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, vmrss())
            time.sleep(self.interval)

    def reset(self) -> int:
        """Starts a new measurement from the current RSS, which it returns."""
        now = vmrss()
        self.peak = now
        return now

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(fn):
    """``(seconds, result)`` of ``fn()``, waiting for every array in the result."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def repeat_times(fn, repeats: int) -> tuple[float, list[float], object]:
    """Times a first (compile-inclusive) call of ``fn``, then ``repeats`` warm calls; returns the last result."""
    first, out = timed(fn)
    warm = []
    for _ in range(repeats):
        seconds, out = timed(fn)
        warm.append(seconds)
    return first, warm, out


def sources(n: int, dim: int, seed: int, chunk: int = 1 << 16) -> np.ndarray:
    """``n`` float32 rows of the ``sources`` known density, drawn in row chunks (no float64 copy of it all)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from known_densities import make
    finally:
        sys.path.pop(0)
    density, rng = make("sources", dim, seed=seed), np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = density.draw(rng, stop - start)
    return out


def moons(n: int) -> np.ndarray:
    """``make_moons(n, noise=0.08, random_state=0)``, standardised, float32 (seed experiment 1)."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.08, random_state=0)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


def flow_for(dim: int, sizes: Sizes):
    import gaussplug

    spec = gaussplug.specs.gaussianization_flow(dim, n_layers=sizes.layers, n_components=sizes.components)
    return gaussplug.build_flow(spec, key=0)


def warm(flow, x):
    import gaussplug

    return gaussplug.warm_start(flow, x, progress=False)


# ----------------------------------------------------------------------------- child: target 1


def layer_inputs(flow, x, suffix: str):
    """``(name, data arriving at the layer)`` for the layers whose name ends with ``suffix``.

    Walks the layers with ``flow.layer_forward`` (the per-layer jits the warm start compiled for this shape,
    as long as ``n <= 2**22 / dim``), holding one stage at a time.
    """
    for name in flow.layer_names:
        if name.endswith(suffix):
            yield name, np.asarray(x)
        x = flow.layer_forward(name, x)[0]


def sklearn_compare(flow, x, n_dims: int | None, components: int) -> dict:
    """Per mixture layer: our fitted mixture vs ``GaussianMixture`` on the same columns (mean log-lik)."""
    import jax.numpy as jnp
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from gaussplug._mixture import mixture_log_pdf

    dims = np.arange(x.shape[1]) if n_dims is None else np.unique(np.linspace(0, x.shape[1] - 1, n_dims).astype(int))
    layers, sk_seconds, not_converged = [], [], 0
    for name, xin in layer_inputs(flow, x, "_mixture_cdf"):
        xin = xin[:, dims]
        p = {k: jnp.asarray(v)[dims] for k, v in flow.params[name]["~"].items()}
        ours = np.asarray(jnp.mean(mixture_log_pdf(jnp.asarray(xin), p["logits"], p["loc"], p["log_scale"]), axis=0))
        theirs = []
        for j in range(len(dims)):
            col = xin[:, j : j + 1].astype(np.float64)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                gm = GaussianMixture(components, random_state=0).fit(col)
            sk_seconds.append(time.perf_counter() - t0)
            not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
            theirs.append(float(gm.score(col)))
        diff = ours.astype(np.float64) - np.asarray(theirs)
        layers.append({"layer": name, "ours": ours.tolist(), "sklearn": theirs, "diff": diff.tolist()})
    return {"dims": dims.tolist(), "layers": layers, "sk_seconds": sk_seconds, "sk_not_converged": not_converged}


def child_warm(cfg: dict) -> dict:
    sizes = Sizes(**cfg["sizes"])
    x = sources(sizes.warm_n, sizes.warm_dim, seed=1)
    flow0 = flow_for(sizes.warm_dim, sizes)
    first, times, flow = repeat_times(lambda: warm(flow0, x), sizes.repeats)
    history = flow.metadata["warm_start"]
    fit = [s for s, f in zip(history["fit_seconds"], history["family"], strict=True) if f == "mixture_cdf"]
    rot = [s for s, f in zip(history["fit_seconds"], history["family"], strict=True) if f == "householder"]
    quality = sklearn_compare(flow, x, None if cfg["full_sklearn"] else sizes.sk_dims, sizes.components)
    return {
        "first": first, "times": times, "final_ll": history["log_likelihood"][-1],
        "initial_ll": history["initial_log_likelihood"], "mixture_layer_s": fit, "householder_layer_s": rot,
        **quality,
    }  # fmt: skip


# ----------------------------------------------------------------------------- child: target 2


def child_finetune(cfg: dict) -> dict:
    import jax

    import gaussplug

    sizes = Sizes(**cfg["sizes"])
    x = moons(sizes.moons_n)
    t_warm, flow = timed(lambda: warm(flow_for(2, sizes), x))
    t0 = time.perf_counter()
    tuned, history = gaussplug.fine_tune(
        flow, x, steps=sizes.ft_steps, batch_size=512, peak_lr=1e-3, clip_norm=1.0, progress=False
    )
    jax.block_until_ready(tuned)
    wall = time.perf_counter() - t0
    loss = np.asarray(history["loss"], np.float64)
    return {
        "warm_start_s": t_warm, "fine_tune_s": wall, "history_wall_s": history["wall_time"],
        "compile_s": history.get("compile_time"), "steps_per_second": history["steps_per_second"],
        "steps": int(history["steps_run"]), "final_loss": float(loss[-1]),
        "last100_loss": float(np.nanmean(loss[-100:])), "train_nll": float(-np.mean(np.asarray(tuned.log_prob(x)))),
        "since_start_s": time.perf_counter() - cfg.get("t_import", t0),
    }  # fmt: skip


# ----------------------------------------------------------------------------- child: target 3


def inverse_by_layer(flow, z, iters: int = 30) -> list[dict]:
    """Per layer, walking ``z`` back: max ``|forward(inverse(y)) - y| / max(1, |y|)`` of that layer alone.

    Mixture layers are also solved with the general pointwise solver (``num_iter=iters``, no table) to
    tell the solver's error from the conditioning of the map.
    """
    from gaussplug._mixture import gaussianize, gaussianize_inverse

    def err(back, y):
        return float(np.max(np.abs(np.asarray(back) - np.asarray(y)) / np.maximum(1.0, np.abs(np.asarray(y)))))

    out, y = [], z
    for name in reversed(flow.layer_names):
        x = flow.layer_inverse(name, y)[0]
        row = {"layer": name, "table": err(flow.layer_forward(name, x)[0], y)}
        if name.endswith("_mixture_cdf"):
            p = flow.params[name]["~"]
            xp = gaussianize_inverse(y, p["logits"], p["loc"], p["log_scale"], num_iter=iters)[0]
            row["pointwise"] = err(gaussianize(xp, p["logits"], p["loc"], p["log_scale"])[0], y)
        out.append(row)
        y = x
    return out


def child_sample(cfg: dict) -> dict:
    import jax

    sizes = Sizes(**cfg["sizes"])
    x = sources(sizes.sample_fit_n, sizes.sample_dim, seed=2)
    flow = warm(flow_for(sizes.sample_dim, sizes), x)
    n = sizes.sample_n
    first, _ = timed(lambda: flow.sample(0, n))
    times = [timed(lambda k=k: flow.sample(k, n))[0] for k in range(1, sizes.repeats + 1)]
    z = jax.random.normal(jax.random.PRNGKey(123), (n, sizes.sample_dim), flow.dtype)
    inv_first, xs = timed(lambda: flow.inverse(z))
    inv_warm, _ = timed(lambda: flow.inverse(z))
    back = np.asarray(flow.forward(xs), np.float64)
    zz = np.asarray(z, np.float64)
    err = np.abs(back - zz) / np.maximum(1.0, np.abs(zz))
    worst = np.unravel_index(np.argmax(err), err.shape)
    layers = inverse_by_layer(flow, z[: min(n, 200_000)]) if sizes.diagnose else []
    return {
        "layers": layers,
        "first": first, "times": times, "inverse_first": inv_first, "inverse_warm": inv_warm,
        "err_max": float(err.max()), "err_median": float(np.median(err)),
        "err_p999": float(np.quantile(err, 0.999)), "frac_over": float(np.mean(err > sizes.sample_tol)),
        "worst_z": float(zz[worst]), "worst_dim": int(worst[1]), "finite": bool(np.isfinite(back).all()),
    }  # fmt: skip


# ----------------------------------------------------------------------------- child: target 4 / 5


def child_scale(cfg: dict) -> dict:
    import jax
    import jax.numpy as jnp

    import gaussplug

    sizes, n, dim = Sizes(**cfg["sizes"]), cfg["n"], cfg["dim"]
    gaussplug.get_registry()  # plugins imported and the CPU client started before the baseline
    jnp.zeros(1).block_until_ready()
    base = vmrss()
    x = sources(n, dim, seed=3)
    with_data = vmrss()
    flow0 = flow_for(dim, sizes)
    first, times, flow = repeat_times(lambda: warm(flow0, x), sizes.repeats)
    peak = peak_rss()
    out = {"n": n, "dim": dim, "base": base, "with_data": with_data, "peak": peak, "data_bytes": x.nbytes,
           "first": first, "times": times}  # fmt: skip
    if cfg.get("ft_steps"):
        tuned, history = gaussplug.fine_tune(flow, x, steps=cfg["ft_steps"], batch_size=512, progress=False)
        jax.block_until_ready(tuned)
        out.update(ft_wall=history["wall_time"], ft_compile=history["compile_time"],
                   ft_steps_per_second=history["steps_per_second"])  # fmt: skip
    return out


def child_memory(cfg: dict) -> dict:
    """Where a large warm start's memory goes: the whole warm start (first and second run) and one block's fits."""
    import jax
    import jax.numpy as jnp

    import gaussplug

    sizes, n, dim = Sizes(**cfg["sizes"]), cfg["n"], cfg["dim"]
    gaussplug.get_registry()
    jnp.zeros(1).block_until_ready()
    x = sources(n, dim, seed=3)
    flow = flow_for(dim, sizes)
    runtime, params, key = flow.runtime, flow.params, jax.random.PRNGKey(0)
    steps = {}
    with RssSampler() as s:

        def measure(label, fn):
            for _ in range(2):  # the first run compiles; the second is measured
                rss = s.reset()
                out = jax.block_until_ready(fn())
                steps[label] = (s.peak - rss, vmrss() - rss)
            return out

        warm_first = s.reset()
        warm(flow, x)
        steps["whole warm_start, first run (compiling)"] = (s.peak - warm_first, vmrss() - warm_first)
        measure("whole warm_start, second run", lambda: warm(flow, x))
        for lr in runtime.layers[:2]:
            measure(f"{lr.family.name} fit (first block)",
                    lambda lr=lr: lr.family.fit(x, params[lr.name], key=key, **lr.options))  # fmt: skip
    return {"steps": steps, "data_bytes": x.nbytes}


CHILDREN = {"warm": child_warm, "finetune": child_finetune, "sample": child_sample, "scale": child_scale,
            "memory": child_memory}  # fmt: skip


def run_child(cfg: dict, fresh: bool) -> dict:
    """Runs ``CHILDREN[cfg['kind']]`` in a fresh Python process (or here), returning its result dict."""
    if not fresh:
        return CHILDREN[cfg["kind"]](cfg)
    t0 = time.perf_counter()
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", json.dumps(cfg)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {cfg['kind']} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len(RESULT) :])
    result["process_s"] = time.perf_counter() - t0
    return result


def child_main(text: str) -> None:
    t_import = time.perf_counter()
    import jax  # noqa: F401  (import time is part of the child, not of its measurements)

    import gaussplug  # noqa: F401

    cfg = json.loads(text)
    cfg["t_import"] = t_import
    print(RESULT + json.dumps(CHILDREN[cfg["kind"]](cfg)), flush=True)


# ----------------------------------------------------------------------------- targets (parent side)


def median(v) -> float:
    return float(np.median(v)) if len(v) else float("nan")


def target_warm(sizes: Sizes, full_sklearn: bool) -> dict:
    cfg = {"kind": "warm", "sizes": dataclasses.asdict(sizes), "full_sklearn": full_sklearn}
    r = run_child(cfg, sizes.fresh)
    diffs = np.concatenate([layer["diff"] for layer in r["layers"]])
    r.update(median=median(r["times"]), mean_diff=float(diffs.mean()), min_diff=float(diffs.min()),
             frac_ok=float(np.mean(diffs >= -1e-3)), sk_per_dim=median(r["sk_seconds"]))  # fmt: skip
    r["sk_total_extrapolated"] = r["sk_per_dim"] * sizes.warm_dim * sizes.layers
    r["met_time"] = r["median"] <= sizes.warm_limit_s
    r["met_quality"] = r["frac_ok"] == 1.0
    return r


def target_finetune(sizes: Sizes) -> dict:
    cfg = {"kind": "finetune", "sizes": dataclasses.asdict(sizes)}
    runs = [run_child(cfg, True) for _ in range(sizes.ft_processes)]
    keys = ("warm_start_s", "fine_tune_s", "compile_s", "steps_per_second", "process_s", "since_start_s")
    r = {k: median([run[k] for run in runs]) for k in keys}
    r.update(runs=runs, final_loss=runs[0]["final_loss"], last100_loss=runs[0]["last100_loss"],
             train_nll=runs[0]["train_nll"], steps=runs[0]["steps"])  # fmt: skip
    r["met"] = r["fine_tune_s"] <= sizes.ft_limit_s
    return r


def target_sample(sizes: Sizes) -> dict:
    r = run_child({"kind": "sample", "sizes": dataclasses.asdict(sizes)}, sizes.fresh)
    r["median"] = median(r["times"])
    r["met_time"] = r["median"] <= sizes.sample_limit_s
    r["met_error"] = r["err_max"] <= sizes.sample_tol and r["finite"]
    return r


def scale_point(sizes: Sizes, n: int, dim: int, ft_steps: int) -> dict:
    cfg = {"kind": "scale", "sizes": dataclasses.asdict(sizes), "n": n, "dim": dim, "ft_steps": ft_steps}
    r = run_child(cfg, sizes.fresh)
    r["median"] = median(r["times"])
    r["increase"] = r["peak"] - r["base"]
    r["ratio"] = r["increase"] / r["data_bytes"]
    if "ft_steps_per_second" in r:
        r["ft_per_1000"] = 1000.0 / r["ft_steps_per_second"]
    print(f"  scaling n={n} D={dim}: warm {r['median']:.2f} s, +{r['increase'] / MB:.0f} MB", flush=True)
    return r


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) > 1 else float("nan")


def target_scaling(sizes: Sizes) -> dict:
    by_n = [scale_point(sizes, n, sizes.scale_n_dim, 0) for n in sizes.scale_ns]
    by_dim = [scale_point(sizes, sizes.scale_dim_n, d, sizes.scale_ft_steps) for d in sizes.scale_dims]
    big = by_n[-1]
    r = {"by_n": by_n, "by_dim": by_dim, "big": big}
    r["slope_n"] = slope([p["n"] for p in by_n], [p["median"] for p in by_n])
    r["slope_dim"] = slope([p["dim"] for p in by_dim], [p["median"] for p in by_dim])
    r["slope_ft_dim"] = slope([p["dim"] for p in by_dim], [p["ft_per_1000"] for p in by_dim])
    r["met_memory"] = big["ratio"] <= sizes.memory_ratio
    cfg = {"kind": "memory", "sizes": dataclasses.asdict(sizes), "n": big["n"], "dim": big["dim"]}
    r["memory"] = run_child(cfg, sizes.fresh) if sizes.diagnose else {"steps": {}, "data_bytes": big["data_bytes"]}
    return r


# ----------------------------------------------------------------------------- report


def machine() -> dict:
    pkgs = ("jax", "jaxlib", "numpy", "scikit-learn", "gaussplug")
    return {
        "cpu": _sections.cpu_label(),
        "cores": os.cpu_count(),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        "versions": _sections.versions(pkgs).replace(", ", "; ", 1),
    }


def yes(flag: bool) -> str:
    return "yes" if flag else "**NO**"


def summary_rows(res: dict, sizes: Sizes) -> list[tuple[str, ...]]:
    """``(target, limit, measured, compile / first run, met, gap and note)`` per target."""
    rows = []
    if "warm" in res:
        w = res["warm"]
        gap = "" if w["met_time"] else f"{w['median'] - sizes.warm_limit_s:+.2f} s"
        rows.append((f"1 warm start, {sizes.warm_dim}-D, n = {sizes.warm_n:,}, {sizes.layers} blocks (warm)",
                     f"<= {sizes.warm_limit_s:g} s", f"{w['median']:.2f} s",
                     f"first run {w['first']:.2f} s (compile ~{w['first'] - w['median']:.1f} s)",
                     yes(w["met_time"]), gap))  # fmt: skip
        rows.append(("1 per-dim mean log-lik vs sklearn GaussianMixture(8), every compared dim",
                     "ours >= sklearn - 1e-3", f"{100 * w['frac_ok']:.0f}% of dims; mean {w['mean_diff']:+.4f} nats, "
                     f"min {w['min_diff']:+.4f}", "—", yes(w["met_quality"]),
                     "" if w["met_quality"] else f"worst dim {w['min_diff']:+.4f} nats"))  # fmt: skip
    if "finetune" in res:
        f = res["finetune"]
        gap = "" if f["met"] else f"{f['fine_tune_s'] - sizes.ft_limit_s:+.1f} s"
        rows.append((f"2 moons fine-tune, {sizes.ft_steps} steps, batch 512, fresh process (incl. compile)",
                     f"<= {sizes.ft_limit_s:g} s", f"{f['fine_tune_s']:.1f} s",
                     f"compile {f['compile_s']:.1f} s; {f['steps_per_second']:.0f} steps/s after",
                     yes(f["met"]), gap))  # fmt: skip
    if "sample" in res:
        s = res["sample"]
        gap = "" if s["met_time"] else f"{s['median'] - sizes.sample_limit_s:+.2f} s"
        rows.append((f"3 sample {sizes.sample_n:,} points, {sizes.sample_dim}-D, {sizes.layers} blocks (warm)",
                     f"<= {sizes.sample_limit_s:g} s", f"{s['median']:.2f} s", f"first call {s['first']:.2f} s",
                     yes(s["met_time"]), gap))  # fmt: skip
        rows.append(("3 round-trip error max (median) of \\|forward(inverse(z)) - z\\| / max(1, \\|z\\|)",
                     f"<= {sizes.sample_tol:g}", f"{s['err_max']:.1e} ({s['err_median']:.1e})", "—",
                     yes(s["met_error"]), "" if s["met_error"] else
                     f"{s['err_max'] / sizes.sample_tol:.0f}x; {100 * s['frac_over']:.3f}% entries over"))  # fmt: skip
    if "scaling" in res:
        c = res["scaling"]
        big = c["big"]
        rows.append((f"4 warm-start time vs n (D = {sizes.scale_n_dim}), log-log slope", "info",
                     f"{c['slope_n']:.2f}", "—", "info", ""))  # fmt: skip
        rows.append((f"4 warm-start / fine-tune time vs D (n = {sizes.scale_dim_n:,}), log-log slope", "info",
                     f"{c['slope_dim']:.2f} / {c['slope_ft_dim']:.2f}", "—", "info", ""))  # fmt: skip
        rows.append((f"5 warm start peak memory, {big['n']:,} x {big['dim']} float32 "
                     f"({big['data_bytes'] / MB:.0f} MB)", f"<= {sizes.memory_ratio:g}x data",
                     f"+{big['increase'] / MB:.0f} MB = {big['ratio']:.1f}x data", "—", yes(c["met_memory"]),
                     "" if c["met_memory"] else
                     f"+{(big['increase'] - sizes.memory_ratio * big['data_bytes']) / MB:.0f} MB over"))  # fmt: skip
    return rows


def table(header: tuple[str, ...], rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)])


SUMMARY_HEADER = ("target", "limit", "measured (median)", "compile / first run", "met?", "gap")


def warm_text(w: dict, sizes: Sizes) -> list[str]:
    rows = [(layer["layer"], f"{np.mean(layer['diff']):+.4f}", f"{np.min(layer['diff']):+.4f}",
             f"{np.mean(np.asarray(layer['diff']) >= -1e-3) * 100:.0f}%", f"{np.mean(layer['ours']):.4f}")
            for layer in w["layers"]]  # fmt: skip
    n_cmp = len(w["dims"])
    which = "all dims" if n_cmp == sizes.warm_dim else f"dims {w['dims']} of each layer"
    return [
        "### 1. Warm start",
        "",
        f"Warm times (s): {', '.join(f'{t:.2f}' for t in w['times'])}; first (compile-inclusive) run "
        f"{w['first']:.2f} s. Per-layer fit+push seconds of the last run: mixture_cdf "
        f"{', '.join(f'{t:.2f}' for t in w['mixture_layer_s'])}; householder "
        f"{', '.join(f'{t:.2f}' for t in w['householder_layer_s'])}. Mean log-likelihood "
        f"{w['initial_ll']:.2f} -> {w['final_ll']:.2f} nats.",
        "",
        f"Quality ({which}; data arriving at each mixture layer, pushed through the warm-started layers before "
        "it; ours = `mixture_log_pdf` of the fitted params, sklearn = "
        "`GaussianMixture(8, random_state=0).fit(col).score(col)`, both mean log-likelihood per row, nats; "
        "difference = ours - sklearn):",
        "",
        table(("layer", "mean diff", "min diff", "dims with ours >= sklearn - 1e-3", "ours, mean"), rows),
        "",
        f"scikit-learn: median {w['sk_per_dim']:.2f} s per dimension per layer "
        f"({w['sk_not_converged']} of {len(w['sk_seconds'])} fits hit max_iter); the recipe for all "
        f"{sizes.warm_dim} dims x {sizes.layers} layers would take about {w['sk_total_extrapolated']:.0f} s "
        f"(**extrapolated** from the {len(w['sk_seconds'])} fits timed, not measured), vs our "
        f"{w['median']:.2f} s for the whole warm start.",
    ]


def finetune_text(f: dict, sizes: Sizes) -> list[str]:
    rows = [(i + 1, f"{r['warm_start_s']:.1f}", f"{r['fine_tune_s']:.1f}", f"{r['compile_s']:.1f}",
             f"{r['steps_per_second']:.0f}", f"{r['process_s']:.1f}") for i, r in enumerate(f["runs"])]  # fmt: skip
    return [
        "### 2. Moons fine-tune (seed experiment 1)",
        "",
        f"`make_moons({sizes.moons_n}, noise=0.08, random_state=0)` standardised, "
        f"`gaussianization_flow(2, n_layers={sizes.layers}, n_components={sizes.components})`, warm start, then "
        f"`fine_tune(steps={sizes.ft_steps}, batch_size=512, peak_lr=1e-3, clip_norm=1.0)`; each run a fresh "
        "Python process. 'fine_tune' = wall time of the call (compilation included); 'process' = the whole child "
        "(interpreter start, imports, data, warm start, fine_tune, final NLL).",
        "",
        table(
            ("run", "warm start (s)", "fine_tune (s)", "of which compile (s)", "steps/s after compile", "process (s)"),
            rows,
        ),  # fmt: skip
        "",
        f"Final minibatch loss {f['final_loss']:.3f} (mean of the last 100 steps {f['last100_loss']:.3f}); "
        f"training NLL after {f['steps']} steps {f['train_nll']:.3f} nats.",
    ]


def sample_text(s: dict, sizes: Sizes) -> list[str]:
    lines = [
        "### 3. Sampling",
        "",
        f"Flow: `gaussianization_flow({sizes.sample_dim}, n_layers={sizes.layers})` warm-started on "
        f"{sizes.sample_fit_n:,} rows of {sizes.sample_dim}-D sources. `flow.sample(key, {sizes.sample_n:,})` "
        f"warm times (s): {', '.join(f'{t:.2f}' for t in s['times'])}; first call {s['first']:.2f} s. "
        f"`flow.inverse(z)` on the same shape: first {s['inverse_first']:.2f} s, warm {s['inverse_warm']:.2f} s.",
        "",
        "Round-trip error: `z ~ N(0, I)` ({:,} x {}, float32), `x = flow.inverse(z)`, `e = |flow.forward(x) - z| / "
        "max(1, |z|)` elementwise (absolute for |z| <= 1, relative beyond). max {:.2e}, median {:.2e}, "
        "99.9% quantile {:.2e}; {:.4f}% of entries above {:g}; worst entry at z = {:.3f} (dimension {}).".format(
            sizes.sample_n,
            sizes.sample_dim,
            s["err_max"],
            s["err_median"],
            s["err_p999"],
            100 * s["frac_over"],
            sizes.sample_tol,
            s["worst_z"],
            s["worst_dim"],
        ),
    ]
    if not s["layers"]:
        return lines
    return [
        *lines,
        "",
        f"Per layer alone ({min(sizes.sample_n, 200_000):,} latents walked back through the inverse; error of that "
        "layer's round trip; 'pointwise' = the mixture inverse solved by the general solver, `num_iter=30`, "
        "instead of the table):",
        "",
        table(("layer", "table inverse (default)", "pointwise solver"),
              [(r["layer"], f"{r['table']:.1e}", f"{r['pointwise']:.1e}" if "pointwise" in r else "—")
               for r in s["layers"]]),
    ]  # fmt: skip


def scaling_text(c: dict, sizes: Sizes, images: list[str]) -> list[str]:
    def rows(points, ft: bool):
        out = []
        for p in points:
            row = [f"{p['n']:,}", p["dim"], f"{p['data_bytes'] / MB:.1f}", f"{p['median']:.2f}", f"{p['first']:.2f}",
                   f"{p['increase'] / MB:.0f}", f"{p['ratio']:.1f}"]  # fmt: skip
            if ft:
                row += [f"{p['ft_per_1000']:.1f}", f"{p['ft_compile']:.1f}"]
            out.append(row)
        return out

    head = ("n", "D", "data (MB)", "warm start (s)", "first run (s)", "peak RSS increase (MB)", "increase / data")
    ft_head = (*head, "fine-tune s / 1000 steps (batch 512)", "fine-tune compile (s)")
    mem = c["memory"]
    mem_rows = [(k, f"{v[0] / MB:.0f}", f"{v[1] / MB:.0f}") for k, v in mem["steps"].items()]
    return [
        "### 4-5. Cost against size",
        "",
        "Every point runs in a fresh process: baseline VmRSS after importing jax and gaussplug (plugins loaded, "
        "CPU client started), then the data are drawn (float32, in chunks), then the warm start runs "
        f"1 + {sizes.repeats} times; 'peak RSS increase' = `ru_maxrss` after the warm starts minus the baseline "
        "(it includes the data itself and XLA compilation). Fine-tune timings (after the memory reading) are "
        f"{sizes.scale_ft_steps} steps at batch 512 (not 1000, to keep the run short on the shared box); the "
        "per-1000-step figure is 1000 / (steps per second after compilation).",
        "",
        f"Against n (D = {sizes.scale_n_dim}); warm-start time ~ n^{c['slope_n']:.2f}:",
        "",
        table(head, rows(c["by_n"], False)),
        "",
        f"Against D (n = {sizes.scale_dim_n:,}); warm-start time ~ D^{c['slope_dim']:.2f}, fine-tune time ~ "
        f"D^{c['slope_ft_dim']:.2f}:",
        "",
        table(ft_head, rows(c["by_dim"], True)),
        "",
        *(f"![{name}](img/{name})" for name in images),
        "",
        f"Where the memory goes at n = {c['big']['n']:,}, D = {c['big']['dim']} (data {mem['data_bytes'] / MB:.0f} MB; "
        "one fresh process, VmRSS polled every 2 ms; the pieces of the first block as warm_start runs them, each "
        "run twice and the second measured; 'peak' = highest VmRSS during the step minus VmRSS before it, 'kept' "
        "= VmRSS after it minus before; the caller's data are not included):",
        "",
        table(("step", "peak above start (MB)", "kept (MB)"), mem_rows) if mem_rows else "(skipped in `--quick`)",
    ]


def explanations(res: dict, sizes: Sizes) -> list[str]:
    """Short notes for the targets that were missed (filled from the measurements)."""
    notes = []
    if "warm" in res and not res["warm"]["met_time"]:
        w = res["warm"]
        notes.append(
            f"- Target 1 (time): {w['median']:.2f} s against {sizes.warm_limit_s:g} s; in the last warm run the "
            f"mixture layers took {sum(w['mixture_layer_s']):.2f} s and the householder (PCA) layers "
            f"{sum(w['householder_layer_s']):.2f} s (fit and push each)."
        )
    if "warm" in res and not res["warm"]["met_quality"]:
        notes.append(
            f"- Target 1 (quality): on {100 * (1 - res['warm']['frac_ok']):.0f}% of the compared dims our mixture "
            "scores below sklearn's by more than 1e-3 nats (see the per-layer table)."
        )
    if "finetune" in res and not res["finetune"]["met"]:
        f = res["finetune"]
        run_s = sizes.ft_steps / f["steps_per_second"]
        notes.append(
            f"- Target 2: {f['compile_s']:.1f} s of compilation plus {sizes.ft_steps} steps at "
            f"{f['steps_per_second']:.0f} steps/s ({run_s:.1f} s); meeting 10 s needs both a faster compile "
            f"and about {sizes.ft_steps / max(0.1, sizes.ft_limit_s - f['compile_s']):.0f} steps/s."
        )
    if "sample" in res and not res["sample"]["met_time"]:
        notes.append(f"- Target 3 (time): {res['sample']['median']:.2f} s against {sizes.sample_limit_s:g} s.")
    if "sample" in res and not res["sample"]["met_error"]:
        s = res["sample"]
        notes.append(
            f"- Target 3 (error): worst entry {s['err_max']:.1e} at z = {s['worst_z']:.2f}. "
            + inverse_note(s["layers"], sizes.sample_tol)
        )
    if "scaling" in res and not res["scaling"]["met_memory"]:
        big = res["scaling"]["big"]
        notes.append(
            f"- Target 5: +{big['increase'] / MB:.0f} MB against {sizes.memory_ratio * big['data_bytes'] / MB:.0f} MB "
            "allowed; see the memory breakdown in section 4-5. " + memory_note(res["scaling"]["memory"])
        )
    return notes


def memory_note(mem: dict) -> str:
    """The largest pieces of the memory breakdown, relative to the data."""
    pieces = {k: v[0] for k, v in mem["steps"].items() if not k.startswith("whole")}
    if not pieces:
        return ""
    top = sorted(pieces.items(), key=lambda kv: -kv[1])[:2]
    warm2 = mem["steps"].get("whole warm_start, second run", (float("nan"),))[0]
    first = mem["steps"].get("whole warm_start, first run (compiling)", (float("nan"),))[0]
    return (
        f"Without compilation (a second warm start in the same process) the peak is {warm2 / MB:.0f} MB "
        f"({warm2 / mem['data_bytes']:.1f}x the data) above the data; the first, compiling run {first / MB:.0f} MB. "
        "Largest pieces: " + "; ".join(f"{k} +{v / MB:.0f} MB ({v / mem['data_bytes']:.1f}x)" for k, v in top) + "."
    )


def inverse_note(layers: list[dict], tol: float) -> str:
    """Which layers' inverses miss ``tol`` alone, and whether the pointwise solver would meet it."""
    bad = [r for r in layers if r["table"] > tol]
    if not bad:
        return "No single layer misses the tolerance alone; the error builds up over the layers."
    parts = [
        f"`{r['layer']}` {r['table']:.1e}" + (f" (pointwise solver {r['pointwise']:.1e})" if "pointwise" in r else "")
        for r in bad
    ]
    table_limited = [r for r in bad if "pointwise" in r and r["pointwise"] <= tol]
    if table_limited:
        cause = (
            "Where the general solver meets the tolerance and the table does not, the error is the inverse's table "
            "path (cubic Hermite start + one float32 Newton step), not the conditioning of the map."
        )
    else:
        cause = (
            "No mixture layer's table inverse is the cause: the error is float32 rounding. An orthogonal layer's "
            "round trip errs by about eps * |row| per entry, so on rows of large norm (heavy-tailed data, before "
            "the first marginal layer) entries near 0 are off by ~1e-5 in this absolute-below-1 metric."
        )
    return (
        "Layers whose inverse alone misses the tolerance (on 200,000 latents, walked back layer by layer; in "
        "brackets the same layer solved by `gaussianize_inverse(..., num_iter=30)`, the general solver without "
        "the table): " + ", ".join(parts) + ". " + cause
    )


def section(res: dict, sizes: Sizes, meta: dict, images: list[str]) -> str:
    lines = ["## Performance targets (issue 5)", ""]
    if meta["quick"]:
        lines += ["**Quick smoke run (`--quick`): tiny sizes, one repeat; the numbers are NOT the targets'.**", ""]
    if set(res) != set(TARGETS):
        lines += [f"**Partial run: only {', '.join(res)}.**", ""]
    m = meta["machine"]
    lines += [
        f"Run {meta['when']} with `{meta['command']}` ({meta['elapsed'] / 60:.1f} min in all) on {m['cpu']}, "
        f"{m['cores']} cores (`os.cpu_count()`), no GPU (JAX on CPU), load average {m['load']:.1f} at start and "
        f"{meta['load_end']:.1f} at the end; "
        f"{m['versions']}. float32 throughout. Times: `jax.block_until_ready`, median of {sizes.repeats} runs "
        "after a first, compile-inclusive run (reported separately); the box is shared, so expect noise.",
        "",
        table(SUMMARY_HEADER, summary_rows(res, sizes)),
        "",
    ]
    notes = explanations(res, sizes)
    if notes:
        lines += ["**Missed targets:**", "", *notes, ""]
    texts = {"warm": warm_text, "finetune": finetune_text, "sample": sample_text}
    for key, fn in texts.items():
        if key in res:
            lines += [*fn(res[key], sizes), ""]
    if "scaling" in res:
        lines += scaling_text(res["scaling"], sizes, images)
    return "\n".join(lines)


def plots(c: dict, img: pathlib.Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    names = []
    for key, var, label, fname in (("by_n", "n", "rows n", "perf_vs_n.png"), ("by_dim", "dim", "dimension D",
                                                                               "perf_vs_dim.png")):  # fmt: skip
        pts = c[key]
        xs = np.array([p[var] for p in pts], float)
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot(xs, [p["median"] for p in pts], "o-", label="warm start (warm)")
        a.plot(xs, [p["first"] for p in pts], "s--", alpha=0.6, label="warm start, first run (compile)")
        if key == "by_dim":
            a.plot(xs, [p["ft_per_1000"] for p in pts], "^-", label="fine-tune, s per 1000 steps")
        a.set(xscale="log", yscale="log", xlabel=label, ylabel="seconds", title=f"time vs {var}")
        a.legend(fontsize=8)
        b.plot(xs, [p["increase"] / MB for p in pts], "o-", label="peak RSS increase")
        b.plot(xs, [p["data_bytes"] / MB for p in pts], "k:", label="data size")
        b.plot(xs, [4 * p["data_bytes"] / MB for p in pts], "r:", label="4x data size")
        b.set(xscale="log", yscale="log", xlabel=label, ylabel="MB", title=f"peak memory vs {var}")
        b.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / fname, dpi=100)
        plt.close(fig)
        names.append(fname)
    return names


def write_section(path: pathlib.Path, body: str) -> None:
    """Replaces the text between the perf markers (or appends / creates), leaving the rest untouched."""
    _sections.write_section(path, "perf", body)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one repeat")
    parser.add_argument("--only", action="append", choices=TARGETS, help="run only this target (repeatable)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.md and img/ (docs/)")
    parser.add_argument("--full-sklearn", action="store_true", help="compare every dimension with sklearn")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    if args.child:
        child_main(args.child)
        return {}
    sizes = QUICK if args.quick else FULL
    only = [t for t in TARGETS if t in (args.only or TARGETS)]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    argv_used = sys.argv[1:] if argv is None else list(argv)
    meta = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": shlex.join(["python", "benchmarks/perf.py", *argv_used]),
        "quick": args.quick,
    }
    t0 = time.perf_counter()
    res, images = {}, []
    runners = {"warm": lambda: target_warm(sizes, args.full_sklearn), "finetune": lambda: target_finetune(sizes),
               "sample": lambda: target_sample(sizes), "scaling": lambda: target_scaling(sizes)}  # fmt: skip
    for name in only:
        t = time.perf_counter()
        res[name] = runners[name]()
        print(f"[perf] {name}: {time.perf_counter() - t:.0f} s", flush=True)
    if "scaling" in res:
        images = plots(res["scaling"], out / "img")
    meta["elapsed"] = time.perf_counter() - t0
    meta["load_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    body = section(res, sizes, meta, images)
    write_section(out / "benchmarks.md", body)
    print(table(SUMMARY_HEADER, summary_rows(res, sizes)))
    print(f"\nwrote {out / 'benchmarks.md'} and {len(images)} PNGs under {out / 'img'} ({meta['elapsed']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
