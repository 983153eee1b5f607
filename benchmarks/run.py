"""Benchmark suite: gaussplug vs its peers on known densities and real data, at equal wall-clock budgets.

    python benchmarks/run.py                          # full suite (D = 2, 8, 32, 64; real data)
    python benchmarks/run.py --quick                  # smoke run (< 2 min on an idle 2-core box): gmm8 in 2-D
    python benchmarks/run.py --dims 2 8 --budget 30   # a subset, 30 s per model per data set
    python benchmarks/run.py --data my.npy --data my_images_uint8.npy --no-known

Known densities (``known_densities.py``): the oracle is the exact mean test NLL, so the
gap ``NLL - oracle`` (nats/dim) is each model's excess. Real data: ``--data PATH``
(repeatable; default ``../shared/data/galaxy_100k_7d.npy`` and ``mnist_5k_uint8.npy``
relative to the repository): uint8 arrays are treated as images (dequantised, logit,
bits/dim with every Jacobian), anything else as tabular (standardised, nats/dim);
scikit-learn's digits is added unless ``--no-digits``.

Every model gets the same train / validation / test split and the same budget
(``--budget`` seconds for its whole fit: warm start, compilation and training; see
``suite_ours.py`` and ``suite_peers.py`` for how each runner spends it). Prints the
tables and replaces the section between ``<!-- suite:start -->`` and
``<!-- suite:end -->`` in ``OUT/benchmarks.md`` (default ``docs/``), creating it if needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import pathlib
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import known_densities as kd  # noqa: E402
import suite_data as data  # noqa: E402
import suite_ours as ours  # noqa: E402
import suite_peers as peers  # noqa: E402
import suite_report as rep  # noqa: E402

MODELS = {**ours.MODELS, **peers.MODELS}
FULL = dict(dims=(2, 8, 32, 64), families=kd.FAMILIES, n=(10_000, 2_000, 5_000), budget=60.0)
QUICK = dict(dims=(2,), families=("gmm8",), n=(1_000, 300, 1_000), budget=4.0)


def run_model(task, name: str, fn, budget: float) -> rep.Row:
    base = dict(task=task.name, dim=task.dim, unit=task.unit, model=name, oracle=task.oracle_nll, budget=budget)
    try:
        fit = fn(task, budget)
    except Exception as err:  # a failing model is a result, not the end of the suite
        traceback.print_exc()
        msg = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
        return rep.Row(**base, nll=math.nan, seconds=math.nan, note=msg, status="failed")
    if isinstance(fit, str):
        return rep.Row(**base, nll=math.nan, seconds=math.nan, note=fit, status="skipped")
    mean = float(np.mean(fit.test_nll)) if np.all(np.isfinite(fit.test_nll)) else math.inf
    note = fit.note if math.isfinite(mean) else f"{fit.note}; {int(np.sum(~np.isfinite(fit.test_nll)))} non-finite"
    return rep.Row(**base, nll=task.report(mean), seconds=fit.seconds, note=note, val=fit.val_nll)


def real_paths(args) -> list:
    """The real data files this run reads: ``--data``, else the shared defaults (none with --quick or --no-real)."""
    if args.no_real:
        return []
    return args.data if args.data is not None else ([] if args.quick else list(data.DEFAULT_DATA))


def tasks(args, plan):
    n_tr, n_va, n_te = plan["n"]
    if not args.no_known:
        for dim in args.dims or plan["dims"]:
            for fam in args.families or plan["families"]:
                if fam == "banana" and dim % 2:
                    continue
                yield lambda f=fam, d=dim: data.known_task(f, d, n_train=n_tr, n_val=n_va, n_test=n_te)
    if args.no_real:
        return
    for p in real_paths(args):
        yield lambda p=p: data.load_real(pathlib.Path(p), max_rows=args.max_rows)
    if not (args.no_digits or args.quick):
        yield data.digits_task


def section(rows, args, plan, budget, elapsed, notes, commands) -> str:
    known = [r for r in rows if r.oracle is not None]
    real = [r for r in rows if r.oracle is None]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "`; `".join(c.strip() for c in commands)
    lines = ["## Suite: held-out NLL against the oracle and the peers, equal wall-clock budgets", ""]
    if args.quick:
        lines += ["**Quick smoke run (`--quick`): tiny data and budgets; the numbers mean nothing.**", ""]
    n_tr, n_va, n_te = plan["n"]
    lines += [
        f"Run {when} with `{cmd}` ({elapsed / 60:.1f} min in all; later invocations replace rows of earlier "
        f"ones given to `--merge`) on {rep.machine()}; {rep.versions()}. "
        "float32 models. The machine is shared: other jobs ran beside the suite, so wall times (and what a "
        "budget buys) are noisy.",
        "",
        f"Budget ('budget s' below; this invocation's: {budget:g} s): wall clock per model per data set, "
        "covering everything the fit does (greedy "
        "warm start, JIT compilation, training, model selection). A runner starts no new round / epoch / K / "
        "layer that its last one's duration says would end past the budget, so a first round can overrun "
        "('over'). gaussplug GF = `gaussianization_flow(D, n_layers=8)`, coupling = `coupling_flow(D, "
        f"n_layers=4)`; fine-tuning in rounds of {ours.ROUND} steps ({ours.HIGH_DIM_ROUND} above D = "
        f"{ours.HIGH_DIM}; batch {ours.BATCH}, one-cycle peak lr "
        f"{ours.PEAK_LR:g}, validation every {ours.EVAL_EVERY} steps, best kept), stopping after "
        f"{ours.PATIENCE} rounds without a validation gain. 'gaussplug (picked on validation)' is the "
        "gaussplug model with the lowest validation NLL (never the test NLL). gaussplug RBIG = "
        "`fit_rbig(n_layers='auto', validation=val)`, greedy only and not budgeted (its time is reported). Peers: see "
        "`benchmarks/suite_peers.py` (flowjax: `fit_to_data` defaults, RQS 8 knots on [-4, 4]).",
        "",
        f"Known densities (`benchmarks/known_densities.py`): n = {n_tr} train / {n_va} validation / {n_te} "
        "test, standardised with the training mean/std for every model; NLL in nats/dim of the original "
        f"variables (standardisation's Jacobian added back). Goal: gap <= {rep.TOL_SMALL} nats/dim for D <= 8, "
        f"<= {rep.TOL_LARGE} for D <= 64.",
        "",
    ]
    for what, rs in (("Known densities", known), ("Real data", real)):
        if not rs:
            continue
        summary, short = rep.summary_rows(rs)
        lines += [f"### {what}: summary", "", rep.table(rep.SUMMARY_HEADER, summary), ""]
        if short:
            lines += ["**Falls short:** " + "; ".join(short) + ".", ""]
    if real:
        lines += ["Real data sets:", "", *(f"- {n}" for n in notes), ""]
    lines += ["### All results", "", rep.table(rep.FULL_HEADER, rep.full_rows(rows))]
    return "\n".join(lines)


def main(argv=None) -> list[rep.Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: gmm8 in 2-D, tiny data and budgets")
    parser.add_argument("--dims", type=int, nargs="+", help="known-density dimensions (default 2 8 32 64)")
    parser.add_argument("--families", nargs="+", choices=kd.FAMILIES, help="known-density families (default all)")
    parser.add_argument("--budget", type=float, help="seconds per model per data set (default 60; quick 4)")
    parser.add_argument("--data", action="append", help="real data .npy (repeatable; default the shared files)")
    parser.add_argument("--max-rows", type=int, help="subsample real data sets to at most this many rows")
    parser.add_argument("--no-digits", action="store_true", help="leave out scikit-learn's digits")
    parser.add_argument("--no-known", action="store_true", help="leave out the known-density suite")
    parser.add_argument("--no-real", action="store_true", help="leave out the real data sets (digits included)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), metavar="MODEL", help="subset of models")
    parser.add_argument("--out", help="folder for benchmarks.md (default docs/; with --quick, out/, which git ignores)")
    parser.add_argument("--json", help="also save the result rows here (rewritten after every model)")
    parser.add_argument(
        "--merge", nargs="+", default=[], help="earlier --json files (later ones, then this run, replace a row)"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.out is None:  # a smoke run never replaces the published tables
        args.out = str(data.ROOT / ("out" if args.quick else "docs"))
    missing = [str(p) for p in real_paths(args) if not pathlib.Path(p).is_file()]
    if missing:  # before hours of known-density runs, not after
        given = "given with --data" if args.data is not None else "default real data: ../shared/data beside the repo"
        parser.error(f"{', '.join(missing)}: no such file ({given}); pass --data PATH for each real data set, "
                     "or --no-real to leave them out.")
    plan = QUICK if args.quick else FULL
    budget = args.budget if args.budget is not None else plan["budget"]
    models = {k: v for k, v in MODELS.items() if args.models is None or k in args.models}
    t0 = time.perf_counter()
    rows, notes, elapsed0, commands = [], [], 0.0, []
    for path in args.merge:
        saved = json.loads(pathlib.Path(path).read_text())
        rows = rep.merge_rows(rows, [rep.Row(**r) for r in saved["rows"]])
        notes += [n for n in saved["notes"] if n not in notes]
        elapsed0 += saved["elapsed"]
        commands += saved.get("commands", [])
    commands.append("python benchmarks/run.py " + " ".join(args.argv))
    for make in tasks(args, plan):
        task = make()
        if task.kind == "real" and task.description not in notes:
            notes.append(task.description)
        print(f"\n== {task.name} (D = {task.dim}): {task.description}", flush=True)
        for name, fn in models.items():
            row = run_model(task, name, fn, budget)
            rows = rep.merge_rows(rows, [row])
            print(f"  {name:45s} {rep.fmt(row.nll)} {task.unit}  gap {rep.fmt(row.gap)}  "
                  f"{rep.fmt(row.seconds, 1)} s  {row.note}", flush=True)  # fmt: skip
            if args.json:
                saved = {"rows": [dataclasses.asdict(r) for r in rows], "notes": notes, "commands": commands,
                         "elapsed": elapsed0 + time.perf_counter() - t0}  # fmt: skip
                pathlib.Path(args.json).write_text(json.dumps(saved, indent=1))
    elapsed = elapsed0 + time.perf_counter() - t0
    body = section(rows, args, plan, budget, elapsed, notes, commands)
    out = pathlib.Path(args.out) / "benchmarks.md"
    rep.write_section(out, body)
    print("\n" + body.split("### All results")[0])
    print(rep.table(rep.FULL_HEADER, rep.full_rows(rows)))
    print(f"\nwrote {out} ({elapsed / 60:.1f} min)")
    return rows


if __name__ == "__main__":
    main()
