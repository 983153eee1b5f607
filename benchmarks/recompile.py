"""Row buckets: what calls on a new number of rows cost, with buckets and without (``GAUSSPLUG_ROW_BUCKETS=0``).

    python benchmarks/recompile.py               # writes its section of docs/benchmarks.md
    python benchmarks/recompile.py --quick --out DIR   # smoke mode: tiny sizes, numbers not comparable

Each mode (buckets on, buckets off) runs in a fresh process. It fits one flow untimed
(``fit_rbig`` of ``gaussianization_flow(16)``, 8 blocks, on 4,000 rows), then times each call
on ``N1`` rows (the first: it compiles), on ``N2`` rows (another count in the same row bucket)
and on ``N3`` rows (a count in another bucket): ``log_prob``, ``sample``, ``warm_start`` of a
fresh flow, and ``fine_tune`` (200 steps, batch 256, ``validation=0.2``). Besides the wall time
it reports the seconds XLA spent compiling during the call (``jax.monitoring``'s backend-compile
events). Data: the ``sources`` family of ``benchmarks/known_densities.py`` (as in ``perf.py``),
16-D, float32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _sections  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT = "RECOMPILE-RESULT "
CALLS = ("log_prob", "sample", "warm_start", "fine_tune")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def sizes(quick: bool) -> dict:
    if quick:
        return {"dim": 3, "layers": 2, "fit_rows": 600, "rows": (700, 690, 900), "steps": 10}
    return {"dim": 16, "layers": 8, "fit_rows": 4000, "rows": (3000, 2900, 3500), "steps": 200}


def child(cfg: dict) -> dict:
    """One mode in this (fresh) process: per call and row count, wall seconds and XLA compile seconds."""
    import jax
    import numpy as np
    from perf import sources  # noqa: E402  (benchmarks/perf.py: the same data)

    import gaussplug
    from gaussplug import specs

    compiled = []

    def listen(event, secs, **_):
        if event == COMPILE_EVENT:
            compiled.append(secs)

    jax.monitoring.register_event_duration_secs_listener(listen)
    dim, layers = cfg["dim"], cfg["layers"]
    x = sources(cfg["fit_rows"] + 2 * max(cfg["rows"]), dim, seed=0)
    fit, rest = x[: cfg["fit_rows"]], x[cfg["fit_rows"] :]
    flow = gaussplug.fit_rbig(fit, n_layers=layers, progress=False)
    spec = specs.gaussianization_flow(dim, n_layers=layers)

    calls = {
        "log_prob": lambda n: flow.log_prob(rest[:n]),
        "sample": lambda n: flow.sample(1, n),
        "warm_start": lambda n: gaussplug.warm_start(gaussplug.build_flow(spec), rest[:n], progress=False).params,
        "fine_tune": lambda n: gaussplug.fine_tune(flow, rest[:n], steps=cfg["steps"], batch_size=256,
                                                    validation=0.2, progress=False)[0].params,
    }
    out = {}
    for name in CALLS:
        for n in cfg["rows"]:
            before = len(compiled)
            t0 = time.perf_counter()
            jax.block_until_ready(calls[name](n))
            wall = time.perf_counter() - t0
            out[f"{name}/{n}"] = {"wall": wall, "compile": float(np.sum(compiled[before:])),
                                  "compiles": len(compiled) - before}
    return out


def run_mode(cfg: dict, buckets: bool) -> dict:
    env = {**os.environ, "GAUSSPLUG_ROW_BUCKETS": "1" if buckets else "0", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child ({'buckets' if buckets else 'no buckets'}) failed:\n{proc.stderr[-3000:]}")
    line = next(s for s in proc.stdout.splitlines() if s.startswith(RESULT))
    return json.loads(line[len(RESULT) :])


def table(cfg: dict, on: dict, off: dict) -> str:
    n1, n2, n3 = cfg["rows"]

    def cell(res, name, n):
        r = res[f"{name}/{n}"]
        return f"{r['wall']:.2f} s ({r['compile']:.2f} s, {r['compiles']})"

    lines = [
        f"| call | {n1} rows, first call: buckets / none | {n2} rows (same bucket): buckets / none "
        f"| {n3} rows (new bucket): buckets / none | {n2} rows: time saved |",
        "|---|---|---|---|---|",
    ]
    for name in CALLS:
        saved = off[f"{name}/{n2}"]["wall"] / max(on[f"{name}/{n2}"]["wall"], 1e-9)
        lines.append(f"| `{name}` | {cell(on, name, n1)} / {cell(off, name, n1)} | {cell(on, name, n2)} / "
                     f"{cell(off, name, n2)} | {cell(on, name, n3)} / {cell(off, name, n3)} | {saved:.1f}x faster |")
    return "\n".join(lines)


def summary(cfg: dict, on: dict, off: dict) -> str:
    """One sentence: all four calls on the second row count, with buckets and without."""
    n2 = cfg["rows"][1]

    def total(res, key):
        return sum(res[f"{name}/{n2}"][key] for name in CALLS)

    return (f"All four calls on {n2:,} rows after {cfg['rows'][0]:,}: {total(on, 'wall'):.2f} s with row buckets "
            f"({total(on, 'compiles')} compilations, {total(on, 'compile'):.2f} s), {total(off, 'wall'):.2f} s "
            f"without ({total(off, 'compiles')}, {total(off, 'compile'):.2f} s).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test; numbers not comparable)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="directory holding benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(RESULT + json.dumps(child(json.loads(args.child))))
        return
    cfg = sizes(args.quick)
    t0 = time.perf_counter()
    on, off = run_mode(cfg, True), run_mode(cfg, False)
    minutes = (time.perf_counter() - t0) / 60
    body = table(cfg, on, off)
    print(body)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/recompile.py" + (f" --quick --out {args.out}" if args.quick else "")
    header = [
        "## Row buckets: calls on a new number of rows",
        "",
        *(["**Quick smoke run: tiny sizes, the numbers are not comparable.**", ""] if args.quick else []),
        f"Run {when} with `{command}` ({minutes:.1f} min in all) on {_sections.cpu()}; "
        f"{_sections.versions(['jax', 'jaxlib', 'gaussplug'])}. float32, one fresh process per mode.",
        "",
        f"One flow (`gaussianization_flow({cfg['dim']})`, {cfg['layers']} blocks) is fitted untimed on "
        f"{cfg['fit_rows']:,} rows; then each call runs on {cfg['rows'][0]:,}, {cfg['rows'][1]:,} and "
        f"{cfg['rows'][2]:,} rows of the same {cfg['dim']}-D `sources` data, in that order: `log_prob`, `sample` "
        f"(that many draws), `warm_start` of a fresh flow of the same spec, and `fine_tune` of the fitted flow "
        f"({cfg['steps']} steps, batch 256, `validation=0.2`). Each cell: wall time (XLA compile seconds within "
        "it, compilations), with row buckets (the default) / without (`GAUSSPLUG_ROW_BUCKETS=0`, every row "
        f"count compiled on its own). {cfg['rows'][0]:,} and {cfg['rows'][1]:,} rows share a bucket; "
        f"{cfg['rows'][2]:,} rows fall in another, so there both modes compile.",
        "",
    ]
    _sections.write_section(pathlib.Path(args.out) / "benchmarks.md", "recompile",
                            "\n".join(header) + body + "\n\n" + summary(cfg, on, off))


if __name__ == "__main__":
    main()
