"""The ``gaussplug`` command line: ``plugins``, ``fit``, ``sample``, ``score`` and ``inspect``.

Run ``gaussplug --help`` (or ``gaussplug fit --help``) for usage. Exit codes (:func:`exit_code`):

* 0: success.
* 1: the command ran and wrote its outputs, but the result is not usable: ``fit``
  gave a non-finite training or validation NLL at some stage, or ``score`` gave
  NaN or +inf log-likelihoods for some rows. A warning on stderr says which.
  Also 1: an error gaussplug did not expect (a bug, or a numerical failure deep
  in a library), printed with its traceback and a last line saying so.
* 2: input errors: bad arguments (argparse's usage errors, :class:`UsageError`),
  missing or unreadable files (``OSError``), bad data (:class:`gaussplug.DataError`),
  bad specs (:class:`gaussplug.SpecError`) and files that are not gaussplug models
  (:class:`gaussplug.GaussplugError`), printed to stderr as one line, without a
  traceback.
* 3: a plugin or a layer family failed: a needed plugin is missing, or one is
  broken (:class:`gaussplug.PluginError`), or a family's greedy fit failed
  (:class:`gaussplug.FitError`). One line naming the layer, family and plugin,
  ending with the error class; ``gaussplug --traceback COMMAND ...`` also prints
  the traceback (with the plugin's own error).
* 130: interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import time
import traceback
import warnings
from typing import Any

import numpy as np

from gaussplug._errors import FitError, GaussplugError, PluginError

__all__ = ["UsageError", "build_parser", "exit_code", "main"]

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_RUNTIME, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = (
    "exit codes: 0 success; 1 the result is not usable (a warning says why), or an unexpected internal error "
    "(printed with its traceback); 2 an input error: bad arguments, files, data or spec (one line); 3 a plugin or "
    "a layer family failed (PluginError, FitError: one line naming the layer and plugin; add --traceback before "
    "the command for the traceback); 130 interrupted."
)

#: The first layer of every flow ``gaussplug fit`` builds: the model keeps the
#: data's standardisation, so its densities are in the original data units.
STANDARDIZE = {"family": "standardize", "trainable": False}

#: The model metadata key under which ``gaussplug fit`` stores a CSV header's column names (in order). Absent
#: when the data had no header (a headerless CSV, ``.npy``, ``.npz``, the built-in data): columns then go by
#: position only.
COLUMNS = "columns"


class UsageError(GaussplugError, ValueError):
    """Command-line arguments that do not fit together (exit code 2), e.g. ``--patience`` without validation."""


def exit_code(err: BaseException) -> int:
    """The exit code for an error a command raised (see the module docstring).

    Args:
      err: The exception.

    Returns:
      3 (:data:`EXIT_RUNTIME`) for :class:`gaussplug.PluginError` and :class:`gaussplug.FitError`; 2
      (:data:`EXIT_INPUT`) for every other :class:`gaussplug.GaussplugError` (bad data, spec, model file or
      arguments) and for ``OSError`` (missing or unreadable files); 130 for ``KeyboardInterrupt``; 1
      (:data:`EXIT_FAILED`) for anything else, such as a bare ``ValueError`` from inside a library.
    """
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, (PluginError, FitError)):
        return EXIT_RUNTIME
    if isinstance(err, (GaussplugError, OSError)):
        return EXIT_INPUT
    return EXIT_FAILED


# -- argument types -------------------------------------------------------------
def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {value}")
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed; got {text!r}") from None
    from gaussplug._flow import SEED_LIMIT

    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**32); got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1); got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``gaussplug`` argument parser (one subparser per command)."""
    parser = argparse.ArgumentParser(
        prog="gaussplug", description="Plugin-based Gaussianization flows: fit, sample and score densities.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--traceback", action="store_true",
                        help="print the traceback of any error, not just of unexpected ones (for debugging plugins)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = functools.partial(sub.add_parser, epilog=EXIT_CODES)  # every command's --help lists the exit codes

    p = add("plugins", help="list the registered layer families", description="List families.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("fit", help="fit a flow to data", description=(
        "Fit a Gaussianization flow: standardise, greedy warm start, then maximum-likelihood fine-tuning. "
        "Writes model.npz, metrics.json and report.png to --out."))
    p.add_argument("data", nargs="?", metavar="DATA",
                   help=".npy, .npz or .csv file of shape (n, dim); default: built-in two-moons data")
    p.add_argument("--key", metavar="NAME", help="array name inside an .npz file")
    p.add_argument("--spec", help=".json/.yaml flow spec (default: specs.gaussianization_flow(dim))")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false", help="skip the greedy fit")
    for flag, metavar, kind, default, text in [
        ("--steps", "N", _int_at_least(0), 3000, "fine-tuning steps (default 3000; 0 skips)"),
        ("--out", "DIR", str, "gaussplug-out", "output directory (default ./gaussplug-out)"),
        ("--batch-size", "B", _int_at_least(1), 512, "rows per step (default 512)"),
        ("--lr", "LR", _positive_float, None, "peak learning rate (1e-3; 3e-3 with --no-warm-start)"),
        ("--validation", "FRAC", _fraction, 0.1, "held-out fraction (default 0.1; 0 for none)"),
        ("--patience", "P", _int_at_least(1), None, "stop after P evaluations without improvement"),
        ("--seed", "S", _seed, 0, "seed for the split, warm start and minibatches (default 0)"),
        ("--max-fit-samples", "M", _int_at_least(2), None, "rows each greedy fit uses (default all)"),
    ]:
        p.add_argument(flag, metavar=metavar, type=kind, default=default, help=text)
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")

    p = add("sample", help="draw samples from a saved model", description="Draw samples.")
    p.add_argument("model", metavar="MODEL", help="model.npz written by `gaussplug fit`")
    p.add_argument("-n", type=_int_at_least(1), required=True, help="number of samples")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output .npy or .csv (the CSV header: the model's column names, else x0,x1,...)")
    p.add_argument("--seed", metavar="S", type=_seed, default=0, help="random seed in [0, 2**32) (default 0)")

    p = add("score", help="log-likelihood of data under a model", description="Score data.")
    p.add_argument("model", metavar="MODEL", help="model.npz written by `gaussplug fit`")
    p.add_argument("data", metavar="DATA", help=".npy, .npz or .csv file (a CSV header must list the model's "
                                                "column names, if it has them, in its order)")
    p.add_argument("--key", metavar="NAME", help="array name inside an .npz file")
    p.add_argument("-o", "--output", metavar="FILE", help="write per-row log-likelihood (.npy or .csv)")

    p = add("inspect", help="per-layer diagnostics of a model on data", description=(
        "Per layer: log-det, cumulative log-likelihood and Gaussianity diagnostics; writes a table, JSON and plots."))
    p.add_argument("model", metavar="MODEL", help="model.npz written by `gaussplug fit`")
    p.add_argument("data", metavar="DATA", help=".npy, .npz or .csv file (a CSV header is checked as by score)")
    p.add_argument("--key", metavar="NAME", help="array name inside an .npz file")
    p.add_argument("--out", metavar="DIR", default="gaussplug-inspect", help="output folder (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (see :func:`exit_code` and the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_INPUT
    handler = {"plugins": _plugins, "fit": _fit, "sample": _sample, "score": _score, "inspect": _inspect}[
        args.command
    ]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, args.command, warnings.showwarning)
            return handler(args)
    except KeyboardInterrupt:
        print("gaussplug: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        return _report_error(args.command, err, show_traceback=args.traceback)


def _report_error(command: str, err: Exception, *, show_traceback: bool = False) -> int:
    """Prints ``err`` on stderr as its exit code calls for (see :func:`exit_code`); returns that code.

    Input errors (2) and plugin or fit failures (3) are one line; any other error is a
    bug or a failure gaussplug did not foresee, so its traceback comes first.
    """
    code = exit_code(err)
    message = " ".join(str(err).split()) or type(err).__name__
    if show_traceback or code == EXIT_FAILED:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    if code == EXIT_INPUT:
        line = f"error: {message}"
    elif code == EXIT_RUNTIME:
        line = f"error: {message} [{type(err).__name__}]"
    else:
        line = (f"internal error: {type(err).__name__}: {message} (unexpected: not a problem gaussplug checks "
                "your input for, so possibly a bug; the traceback above shows where it was raised)")
    print(f"gaussplug {command}: {line}", file=sys.stderr)
    return code


def _show_warning(command, fallback, message, category, filename, lineno, file=None, line=None) -> None:
    """Prints gaussplug's own warnings as one ``gaussplug CMD: warning: ...`` line, others through ``fallback``."""
    if category.__module__.split(".")[0] == "gaussplug":
        text = " ".join(str(message).split())
        print(f"gaussplug {command}: warning: {text} [{category.__name__}]", file=sys.stderr if file is None else file)
    else:
        fallback(message, category, filename, lineno, file, line)


def _version() -> str:
    from gaussplug import __version__

    return __version__


# -- plugins ----------------------------------------------------------------------
def _plugins(args) -> int:
    import gaussplug

    rows = [
        {"name": i.name, "plugin": i.plugin, "version": i.version, "options": dict(i.options), "doc": i.doc}
        for i in sorted(gaussplug.families().values(), key=lambda i: i.name)
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    table = [("FAMILY", "PLUGIN", "VERSION", "OPTIONS (defaults)", "DESCRIPTION")]
    for r in rows:
        options = ", ".join(f"{k}={v!r}" for k, v in r["options"].items()) or "-"
        table.append((r["name"], r["plugin"], r["version"], options, _first_sentence(r["doc"])))
    widths = [max(len(row[c]) for row in table) for c in range(4)]
    # Cut descriptions to the terminal's width; piped output keeps them whole.
    room = max(shutil.get_terminal_size().columns - sum(widths) - 8, 30) if sys.stdout.isatty() else 10**6
    for row in table:
        doc = row[4] if len(row[4]) <= room else row[4][: room - 3] + "..."
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + doc)
    if not rows:
        print("(no layer families are registered)")
    return 0


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


# -- fit --------------------------------------------------------------------------
def _fit(args) -> int:
    """``gaussplug fit``: returns 0, or 1 if a stage's NLL is not finite (the outputs are still written)."""
    import gaussplug
    from gaussplug import _datasets
    from gaussplug._report import write_report

    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    _datasets.check_output_dir(args.out)
    if args.data is None:
        if args.key is not None:
            raise UsageError("--key needs a DATA file (.npz).")
        dataset = _datasets.two_moons()
    else:
        dataset = _datasets.load_data(args.data, key=args.key)
    _check_fit_data(dataset, args.data or dataset.name)
    n, dim = dataset.x.shape
    spec = _model_spec(args.spec, dim)
    if args.patience is not None and args.validation == 0:
        raise UsageError("--patience needs a validation set; use --validation > 0.")
    x_train, x_val = _datasets.split(dataset.x, args.validation, args.seed)
    say(f"data: {dataset.name}, {n} rows x {dim} dims ({len(x_train)} train / {n - len(x_train)} validation)")

    flow = gaussplug.build_flow(spec, key=args.seed)  # checks the spec before anything is written
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.warm_start:
        say(f"warm start: {len(flow.layer_names)} layers")
        flow = gaussplug.warm_start(flow, x_train, key=args.seed, max_fit_samples=args.max_fit_samples,
                                    progress=not args.quiet)
    else:  # still standardise, so the untrained layers see unit-scale data
        first = gaussplug.build_flow({"dim": dim, "layers": [STANDARDIZE]})
        first = gaussplug.warm_start(first, x_train, key=args.seed, progress=False)
        flow = flow.with_layer_params(flow.layer_names[0], first.params[first.layer_names[0]])
    warm_s = time.perf_counter() - t0
    log_std_sum = -float(np.asarray(flow.layer_forward(flow.layer_names[0], x_train[:1])[1])[0])
    initial = _nll_stage(flow, x_train, x_val, log_std_sum, "warm_start" if args.warm_start else "untrained")

    history = None
    if args.steps > 0:
        from gaussplug import fine_tune

        lr = args.lr if args.lr is not None else (1e-3 if args.warm_start else 3e-3)
        say(f"fine-tune: {args.steps} steps, batch {args.batch_size}, peak lr {lr:g}")
        flow, history = fine_tune(flow, x_train, steps=args.steps, batch_size=args.batch_size, peak_lr=lr,
                                  validation=x_val, patience=args.patience, key=args.seed,
                                  progress=not args.quiet)
    final = initial if history is None else _nll_stage(flow, x_train, x_val, log_std_sum, "fine_tune")

    stages = (initial, final)
    metrics = _metrics(args, dataset, spec, flow, x_train, x_val, log_std_sum, stages, history, warm_s)
    paths = {name: os.path.join(args.out, name) for name in ("model.npz", "metrics.json", "report.png")}
    if dataset.description.get("columns") is not None:  # a CSV header: score and inspect check data against it
        flow = flow.replace(metadata={**flow.metadata, COLUMNS: list(dataset.description["columns"])})
    gaussplug.save(flow, paths["model.npz"])
    say("writing report")
    t0 = time.perf_counter()
    try:
        write_report(paths["report.png"], flow=flow, x_train=x_train, history=history, metrics=metrics,
                     seed=args.seed)
    finally:  # the metrics are written even if drawing the report fails
        metrics["timings"]["report_s"] = time.perf_counter() - t0
        metrics["timings"]["total_s"] = time.perf_counter() - t_start
        with open(paths["metrics.json"], "w", encoding="utf-8") as fh:
            json.dump(_clean(metrics), fh, indent=2, allow_nan=False)
            fh.write("\n")
    print(_summary(metrics, paths))
    _warn_overfit(final, dim, len(x_train))
    return _warn_non_finite(stages)


def _check_fit_data(dataset, what: str) -> None:
    """Raises DataError for values beyond JAX's float range or constant columns (before any work).

    Also warns (stderr) about columns that take only a few distinct values.
    """
    from gaussplug import _datasets
    from gaussplug._data import default_dtype

    _datasets.check_fits_dtype(dataset.x, what, default_dtype(), where=dataset.where)
    _datasets.check_no_constant_columns(dataset.x, what, default_dtype(), where=dataset.where)
    message = _datasets.discrete_columns_message(dataset.x, what, where=dataset.where)
    if message:
        print(f"gaussplug fit: warning: {message}", file=sys.stderr)


def _warn_non_finite(stages) -> int:
    """Prints a warning per stage whose train or validation NLL is not finite; returns the exit code (0 or 1)."""
    bad = {(s["stage"], part): v for s in stages for part, v in s["data"].items()
           if v is not None and not math.isfinite(v)}
    for (stage, part), value in bad.items():
        print(f"gaussplug fit: warning: the {part} NLL after stage {stage!r} is {value}, not a finite number; "
              "the saved model is not usable (metrics.json stores it as null).", file=sys.stderr)
    return 1 if bad else 0


#: A validation NLL more than this many nats per dimension above the training NLL is reported as overfitting.
OVERFIT_NATS_PER_DIM = 1.0


def _warn_overfit(stage, dim: int, n_train: int) -> None:
    """Warns on stderr when the validation NLL is far above the training NLL (the exit code is unchanged)."""
    train, val = stage["data"]["train"], stage["data"]["val"]
    if val is None or not (math.isfinite(train) and math.isfinite(val)):
        return
    gap = val - train
    if gap > OVERFIT_NATS_PER_DIM * dim:
        print(f"gaussplug fit: warning: the validation NLL ({val:.4g}) is {gap:.4g} nats per row above the training "
              f"NLL ({train:.4g}), over {OVERFIT_NATS_PER_DIM:g} per dimension: the model overfits its {n_train} "
              "training rows. Try fewer layers or components (--spec), more data, or --patience.", file=sys.stderr)


def _model_spec(path: str | None, dim: int) -> dict[str, Any]:
    """The user's spec (or the default) with the frozen standardisation layer in front.

    The user's spec is checked on its own first, so error paths (``layers[0]``)
    match the user's file.
    """
    from gaussplug import get_registry, specs
    from gaussplug._errors import SpecError
    from gaussplug._spec import load_spec, make_plan

    if path is None:
        user = specs.gaussianization_flow(dim)
        return {**user, "layers": [dict(STANDARDIZE), *user["layers"]]}
    if not os.path.exists(path):
        raise FileNotFoundError(f"spec file {path!r} does not exist.")
    try:
        user = load_spec(path)
    except UnicodeDecodeError as err:
        raise SpecError(f"spec file {path!r}: not UTF-8 text ({err.reason}); save it as UTF-8.") from err
    if "dim" not in user:
        raise SpecError(f"spec file {path!r} has no 'dim'; the data needs \"dim\": {dim}.")
    try:
        make_plan(user, get_registry())
    except SpecError as err:
        raise SpecError(f"spec file {path!r}: {str(err).removeprefix('spec: ')}") from err
    if user["dim"] != dim:
        raise SpecError(
            f"spec file {path!r} is for dim {user['dim']!r}, but the data has {dim} column{'s' if dim != 1 else ''}."
        )
    return {**user, "layers": [dict(STANDARDIZE), *user["layers"]]}


def _nll_stage(flow, x_train, x_val, log_std_sum: float, stage: str) -> dict[str, Any]:
    from gaussplug._report import log_prob_in_batches

    data = {"train": -float(np.mean(log_prob_in_batches(flow, x_train)))}
    data["val"] = None if x_val is None else -float(np.mean(log_prob_in_batches(flow, x_val)))
    std = {k: (None if v is None else v - log_std_sum) for k, v in data.items()}
    return {"stage": stage, "data": data, "standardized": std}


def _metrics(args, dataset, spec, flow, x_train, x_val, log_std_sum, stages, history, warm_s):
    import jax

    import gaussplug

    h = history or {}
    fine = {k: h.get(k) for k in ("steps_run", "stopped", "best_step", "best_val_nll")}
    return {
        "dataset": dataset.description,
        "n_train": int(len(x_train)),
        "n_val": 0 if x_val is None else int(len(x_val)),
        "dim": int(flow.dim),
        "spec": spec,
        "settings": {
            "steps": args.steps, "warm_start": args.warm_start, "batch_size": args.batch_size,
            "lr": args.lr if args.lr is not None else (1e-3 if args.warm_start else 3e-3),
            "validation": args.validation, "patience": args.patience, "seed": args.seed,
            "max_fit_samples": args.max_fit_samples,
        },
        "nll": {
            "unit": "mean negative log-likelihood, nats per row",
            "standardized_note": "standardized = data - log_std_sum (log-density of the standardised data)",
            "log_std_sum": log_std_sum,
            "initial": stages[0],
            "final": stages[1],
        },
        "fine_tune": fine if history is not None else None,
        "timings": {
            "warm_start_s": warm_s,
            "fine_tune_wall_s": h.get("wall_time"),
            "compile_s": h.get("compile_time"),
            "steps_per_second": h.get("steps_per_second"),
        },
        "versions": {"gaussplug": gaussplug.__version__, "jax": jax.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0], "backend": jax.default_backend()},
    }


def _clean(value):
    """JSON-ready copy: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value) -> str:
    """A table cell: 4 decimals, or scientific notation for magnitudes of 1e6 and more."""
    if value is None:
        return "-"
    return format(value, ".4e" if math.isfinite(value) and abs(value) >= 1e6 else ".4f")


def _table(rows: list[list[str]], gap: int = 2) -> list[str]:
    """Rows of cells as aligned lines: first column left-aligned, the rest right; at least ``gap`` spaces apart."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  " + (" " * gap).join(cell.ljust(w) if c == 0 else cell.rjust(w)
                                    for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def _summary(m: dict[str, Any], paths: dict[str, str]) -> str:
    nll, t, ft = m["nll"], m["timings"], m["fine_tune"]
    first = "greedy warm start" if nll["initial"]["stage"] == "warm_start" else "before fine-tuning"
    lines = [
        f"gaussplug fit: {m['dataset'].get('name') or m['dataset']['source']} - {m['n_train']} train / "
        f"{m['n_val']} validation rows, dim {m['dim']}",
    ]
    table = [["NLL (nats/row)", "train", "val", "standardised: train", "val"]]
    stages = [(first, nll["initial"])] + ([("after fine-tuning", nll["final"])] if ft else [])
    for label, s in stages:
        d, z = s["data"], s["standardized"]
        table.append([label, _fmt(d["train"]), _fmt(d["val"]), _fmt(z["train"]), _fmt(z["val"])])
    lines += _table(table)
    first_step = "warm start" if m["settings"]["warm_start"] else "standardisation fit"
    timing = f"  time: {first_step} {t['warm_start_s']:.1f} s"
    if ft:
        timing += (f", fine-tune {t['fine_tune_wall_s']:.1f} s (compile {t['compile_s']:.1f} s, "
                   f"{t['steps_per_second']:.0f} steps/s)")
        how = {"completed": "completed", "early_stopping": "stopped early (no validation improvement)"}
        best = "" if ft.get("best_step") is None else f"; kept the best validated params (step {ft['best_step']})"
        lines.append(f"  fine-tune: {ft['steps_run']} steps, {how.get(ft['stopped'], ft['stopped'])}{best}")
        if ft.get("best_step") is not None and ft["steps_run"] > 0 and ft["best_step"] == ft["steps_run"]:
            lines.append("  the validation NLL was still falling at the last step: more --steps may fit better")
    lines.append(timing + f", total {t['total_s']:.1f} s")
    lines.append(f"  wrote {paths['model.npz']}, {paths['metrics.json']}, {paths['report.png']}")
    return "\n".join(lines)


# -- sample / score ----------------------------------------------------------------
def _load_model(path: str):
    import gaussplug

    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist.")
    return gaussplug.load(path)


def _model_columns(flow, path: str) -> list[str] | None:
    """The column names stored by ``gaussplug fit`` (metadata ``"columns"``), or None if it stored none.

    Raises:
      GaussplugError: The entry is not a list of ``flow.dim`` strings (a damaged or hand-edited model).
    """
    names = flow.metadata.get(COLUMNS)
    if names is None:
        return None
    if not (isinstance(names, list) and len(names) == flow.dim and all(isinstance(n, str) for n in names)):
        shown = repr(names) if len(repr(names)) <= 200 else repr(names)[:200] + "..."
        raise GaussplugError(f"{path!r}: the model's metadata {COLUMNS!r} should be a list of {flow.dim} column "
                             f"names (strings); it is {shown}.")
    return names


def _sample(args) -> int:
    import jax

    from gaussplug._datasets import check_output_path, write_array

    check_output_path(args.output)
    flow = _load_model(args.model)
    columns = _model_columns(flow, args.model)  # the CSV header: the names the model was fit on, else x0, x1, ...
    chunk, key = 65536, jax.random.PRNGKey(args.seed)
    parts = [np.asarray(flow.sample(jax.random.fold_in(key, i), min(chunk, args.n - start)))
             for i, start in enumerate(range(0, args.n, chunk))]
    write_array(args.output, np.concatenate(parts).astype(np.float64), column="x", columns=columns)
    print(f"wrote {args.n} samples (dim {flow.dim}) to {args.output}")
    return 0


def _score(args) -> int:
    """``gaussplug score``: the summary covers rows with a finite log-likelihood.

    A CSV header must name the model's columns (if it stored them) in its order (input error otherwise).
    Rows whose log-likelihood is -inf (zero density) or NaN are counted in a
    warning on stderr and left out of the mean and percentiles; ``-o`` still
    writes every row's value. Returns 1 if any row is NaN (or +inf), else 0.
    """
    from gaussplug._data import default_dtype
    from gaussplug._datasets import (
        check_columns,
        check_data,
        check_fits_dtype,
        check_not_an_input,
        check_output_path,
        load_data,
        write_array,
    )
    from gaussplug._report import log_prob_in_batches

    if args.output is not None:
        check_output_path(args.output)
        check_not_an_input(args.output, {"DATA": args.data, "MODEL": args.model})
    flow = _load_model(args.model)
    dataset = load_data(args.data, key=args.key, min_rows=1)
    check_columns(dataset.description.get("columns"), _model_columns(flow, args.model), args.data)
    x = check_data(dataset.x, args.data, min_rows=1, dim=flow.dim, where=dataset.where)
    check_fits_dtype(x, args.data, default_dtype(), where=dataset.where)
    lp = log_prob_in_batches(flow, x)
    print(f"{args.data}: {len(x)} rows, dim {flow.dim}, model {args.model}")
    code = _warn_non_finite_rows(lp, dataset.where)
    finite = lp[np.isfinite(lp)]
    if len(finite) == 0:
        print("mean log-likelihood: undefined (no row has a finite log-likelihood)")
    else:
        mean = float(np.mean(finite))
        over = "" if len(finite) == len(lp) else f", over the {len(finite)} rows with a finite value"
        print(f"mean log-likelihood: {mean:.4f} nats per row ({mean / flow.dim:.4f} per dimension){over}")
    if len(finite):
        q = np.percentile(finite, [0, 5, 50, 95, 100])
        print("per-row log-likelihood: min {:.3f}, 5% {:.3f}, median {:.3f}, 95% {:.3f}, max {:.3f}"
              .format(*q))
    if args.output is not None:
        write_array(args.output, lp, column="log_prob")
        print(f"wrote per-row log-likelihood to {args.output}")
    return code


def _warn_non_finite_rows(lp: np.ndarray, where) -> int:
    """Warns on stderr about NaN, -inf and +inf rows (the first named by ``where``); returns 1 if any is NaN or +inf.

    Args:
      lp: Per-row log-likelihoods.
      where: A :class:`gaussplug._data.Locator` naming the data's rows (file lines for CSV files).
    """
    kinds = [("NaN", np.isnan(lp), "the model is numerically broken there"),
             ("-inf", np.isneginf(lp), "zero density under the model"),
             ("+inf", np.isposinf(lp), "an infinite density, a numerical failure")]
    for name, mask, meaning in kinds:
        if mask.any():
            first = where.row(int(np.argmax(mask)))
            print(f"gaussplug score: warning: {int(mask.sum())} of {len(lp)} rows have log-likelihood {name} "
                  f"({meaning}; first: {first}); the summary leaves them out.", file=sys.stderr)
    return 1 if (kinds[0][1].any() or kinds[2][1].any()) else 0


def _inspect(args) -> int:
    from gaussplug._datasets import check_columns, check_output_dir, csv_header
    from gaussplug._inspect import run_inspect

    if not os.path.exists(args.model):
        raise FileNotFoundError(f"model file {args.model!r} does not exist.")
    if os.path.splitext(args.data)[1].lower() == ".csv":  # as score: a CSV header must match the model's names
        check_output_dir(args.out)  # run_inspect's checks, in its order: --out, the model, then the data
        header = csv_header(args.data)
        if header is not None:
            check_columns(header, _model_columns(_load_model(args.model), args.model), args.data)
    result = run_inspect(args.model, args.data, args.out, key=args.key)
    print(f"{args.data}: {result['n_rows']} rows, dim {result['dim']}, model {args.model}")
    print(open(os.path.join(args.out, "inspect.txt"), encoding="utf-8").read().rstrip())
    print("wrote " + ", ".join(result["files"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
