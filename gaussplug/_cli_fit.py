"""The ``gaussplug fit`` command: fit a flow to data, then write the model, its metrics and a report.

Also the fit's pieces: the spec with its standardisation layer (:data:`STANDARDIZE`), the NLL at each stage,
``metrics.json``, the summary table printed at the end, and the warnings for non-finite NLLs and overfitting.
:mod:`gaussplug.cli` parses the arguments and turns errors into exit codes.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

from gaussplug._cli_model import COLUMNS

#: The first layer of every flow ``gaussplug fit`` builds: the model keeps the
#: data's standardisation, so its densities are in the original data units.
STANDARDIZE = {"family": "standardize", "trainable": False}
#: ``--patience`` default: validation checks (one per 200 steps) without improvement before fine-tuning stops.
DEFAULT_PATIENCE = 5
#: fine_tune's advice in its warnings, in this command's terms (the data are standardised already).
CLI_ADVICE = {"lower_lr": "Try a lower --lr.",
              "scale": "gaussplug fit standardises the data already, so try a lower --lr."}
#: The default model's flags: ``args`` attribute -> :func:`gaussplug.specs.gaussianization_flow` argument.
MODEL_FLAGS = {"layers": "n_layers", "components": "n_components", "tail_weight": "tail_weight",
               "rotation": "rotation"}


def _fit(args) -> int:
    """``gaussplug fit``: returns 0, or 1 if a stage's NLL is not finite (the outputs are still written)."""
    import gaussplug
    from gaussplug import _datasets, _outputs
    from gaussplug import _interrupt as interrupt
    from gaussplug._errors import DataError
    from gaussplug._report import write_report
    from gaussplug._warm import discrete_warning_as, fit_rows_advice_as
    from gaussplug.cli import UsageError

    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    options = _model_options(args)
    _outputs.check_output_dir(args.out)
    if args.data is None:
        if args.key is not None:
            raise UsageError("--key needs a DATA file (.npz).")
        dataset = _datasets.two_moons()
    else:
        dataset = _datasets.load_data(args.data, key=args.key)
    _check_fit_data(dataset, args.data or dataset.name)
    n, dim = dataset.x.shape
    auto = options.get("n_layers") == "auto"
    spec = _model_spec(args.spec, dim, {**options, "n_layers": 1} if auto else options)  # checked before any work
    if args.patience and args.validation == 0:
        raise UsageError("--patience needs a validation set; use --validation > 0.")
    if args.patience is None:  # the default: stop once the validation NLL has not improved for a while
        args.patience = DEFAULT_PATIENCE if args.validation > 0 else 0
    x_train, x_val = _datasets.split(dataset.x, args.validation, args.seed)
    interrupt.checkpoint()  # the data are loaded and checked
    say(f"data: {dataset.name}, {n} rows x {dim} dims ({len(x_train)} train / {n - len(x_train)} validation)")

    flow = gaussplug.build_flow(spec, key=args.seed)  # checks the spec before anything is written
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:  # a folder that takes no folders (/proc, /sys), a full disk, a name too long
        raise DataError(f"--out: cannot create {args.out!r}: {err.strerror or err}.") from err
    t0 = time.perf_counter()
    depth = None
    in_cli_terms = fit_rows_advice_as("--max-fit-samples", "Fit on more rows (a larger --max-fit-samples, or leave "
                                      "it out), or bound the tails with --tail-weight 0.01.")
    with discrete_warning_as(""), in_cli_terms:  # _check_fit_data has named discrete columns, in the file's terms
        if auto:
            say("choosing the depth: adding blocks until the " + (
                "validation NLL stops improving" if x_val is not None else "RBIG information reduction stops"))
            depth = _auto_depth(x_train, x_val, options, args)
            say(f"depth: {depth['chosen']} of {depth['n_evaluated']} blocks (stopped by {depth['stopped']})")
            options = {**options, "n_layers": depth["chosen"]}
            spec = _model_spec(None, dim, options)
            flow = gaussplug.build_flow(spec, key=args.seed)
        if args.warm_start:
            say(f"warm start: {len(flow.layer_names)} layers")
            flow = gaussplug.warm_start(flow, x_train, key=args.seed, max_fit_samples=args.max_fit_samples,
                                        progress=not args.quiet)
        else:  # still standardise, so the untrained layers see unit-scale data
            first = _standardizer(x_train, args.seed)
            flow = flow.with_layer_params(flow.layer_names[0], first.params[first.layer_names[0]])
    warm_s = time.perf_counter() - t0
    log_std_sum = -float(np.asarray(flow.layer_forward(flow.layer_names[0], x_train[:1])[1])[0])
    initial = _nll_stage(flow, x_train, x_val, log_std_sum, "warm_start" if args.warm_start else "untrained")

    history = None
    interrupt.checkpoint()  # between stages: a Ctrl-C during the greedy NLL stops here, not after a compile
    if args.steps > 0:
        from gaussplug import TrainingWarning, fine_tune

        lr = args.lr if args.lr is not None else (1e-3 if args.warm_start else 3e-3)
        say(f"fine-tune: {args.steps} steps, batch {args.batch_size}, peak lr {lr:g}")
        from gaussplug._train_result import advice_as

        with warnings.catch_warnings(), advice_as(**CLI_ADVICE):  # the summary says so, in the command line's terms
            warnings.filterwarnings("ignore", "fine_tune: no evaluation improved", TrainingWarning)
            flow, history = fine_tune(flow, x_train, steps=args.steps, batch_size=args.batch_size, peak_lr=lr,
                                      validation=x_val, patience=args.patience or None, key=args.seed,
                                      progress=not args.quiet)
    final = initial if history is None else _nll_stage(flow, x_train, x_val, log_std_sum, "fine_tune")
    interrupt.checkpoint()  # before the model is written (once written, it is written whole)

    stages = (initial, final)
    metrics = _metrics(args, dataset, spec, flow, x_train, x_val, log_std_sum, stages, history, warm_s)
    metrics["depth_selection"] = depth
    paths = {name: os.path.join(args.out, name) for name in ("model.npz", "metrics.json", "report.png")}
    earlier = [name for name, path in paths.items() if os.path.exists(path)]
    if earlier:
        say(f"replacing {', '.join(earlier)} of an earlier run in {args.out}")
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
    _warn_overfit(final, dim, len(x_train), auto=auto, fit_rows=args.max_fit_samples)
    return _warn_non_finite(stages)


def _model_options(args) -> dict[str, Any]:
    """The default model's options given on the command line (``--layers`` etc.), checked against the other flags."""
    from gaussplug.cli import UsageError

    given = {flag: getattr(args, flag) for flag in MODEL_FLAGS if getattr(args, flag, None) is not None}
    names = ["--" + flag.replace("_", "-") for flag in given]
    flags = " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]
    if given and args.spec is not None:
        raise UsageError(f"{flags} set{'s' if len(given) == 1 else ''} the default model; with --spec, set "
                         f"{'it' if len(given) == 1 else 'them'} in the spec file instead.")
    if given.get("layers") == "auto" and not args.warm_start:
        raise UsageError("--layers auto chooses the depth with the greedy fit; it cannot be combined with "
                         "--no-warm-start (give a number of layers).")
    return {MODEL_FLAGS[flag]: value for flag, value in given.items()}


def _default_model_used(args) -> dict[str, Any]:
    """The default model's options by flag name: those given, else gaussianization_flow's defaults (as used)."""
    import inspect

    from gaussplug.specs import gaussianization_flow

    defaults = inspect.signature(gaussianization_flow).parameters
    return {flag: value if (value := getattr(args, flag, None)) is not None else defaults[option].default
            for flag, option in MODEL_FLAGS.items()}


def _standardizer(x_train, seed: int):
    """A one-layer flow: the frozen standardisation layer, fitted to ``x_train``."""
    import gaussplug

    first = gaussplug.build_flow({"dim": x_train.shape[1], "layers": [STANDARDIZE]})
    return gaussplug.warm_start(first, x_train, key=seed, progress=False)


def _auto_depth(x_train, x_val, options: dict[str, Any], args) -> dict[str, Any]:
    """``--layers auto``: ``fit_rbig(n_layers="auto")`` on the standardised data; returns its depth selection record.

    With a validation split, blocks are added until its NLL stops improving (the split fine-tuning validates on);
    without one, the RBIG information-reduction rule decides. ``--max-fit-samples`` bounds the rows fitted.
    """
    import gaussplug

    first = _standardizer(x_train, args.seed)
    name = first.layer_names[0]
    z_fit = np.asarray(first.layer_forward(name, x_train)[0])
    z_val = None if x_val is None else np.asarray(first.layer_forward(name, x_val)[0])
    if args.max_fit_samples is not None and len(z_fit) > args.max_fit_samples:
        rows = np.random.default_rng(args.seed).choice(len(z_fit), args.max_fit_samples, replace=False)
        z_fit = z_fit[np.sort(rows)]
    rest = {k: v for k, v in options.items() if k != "n_layers"}
    with warnings.catch_warnings():  # the warm start of the chosen depth repeats the fits' warnings; the cap is below
        warnings.simplefilter("ignore", gaussplug.WarmStartWarning)
        auto = gaussplug.fit_rbig(z_fit, n_layers="auto", key=args.seed, validation=z_val, progress=not args.quiet,
                                  **rest)
    depth = dict(auto.metadata["depth_selection"])
    chosen, val = depth["chosen"], depth.get("validation_log_likelihood")
    if depth["stopped"] == "max_layers":
        print(f"gaussplug fit: warning: --layers auto: the depth rule did not stop within {depth['max_layers']} "
              f"blocks, so the depth {chosen} is a cap, not a choice; give --layers N to go deeper.", file=sys.stderr)
    if val is not None and val[0] >= val[chosen]:  # at least 1 block is chosen: say when none would do better
        print(f"gaussplug fit: warning: --layers auto: no number of blocks scored better on the validation rows "
              f"than the standardisation alone (mean log-likelihood {val[0]:.4g}; with {chosen} "
              f"block{'s' if chosen != 1 else ''}, the least a model has: {val[chosen]:.4g}). The data are too few "
              "for these blocks: try --components 1 or 2 (--components 1 with --layers 1 is close to a Gaussian).",
              file=sys.stderr)
    return depth


def _check_fit_data(dataset, what: str) -> None:
    """Raises DataError for values beyond JAX's float range or constant columns (before any work).

    Also warns (stderr) about columns that hold the row numbers (an index), take only a few distinct values, or put
    many rows on one value (a point mass).
    """
    from gaussplug import _data_checks
    from gaussplug._data import default_dtype

    _data_checks.check_fits_dtype(dataset.x, what, default_dtype(), where=dataset.where)
    _data_checks.check_no_constant_columns(dataset.x, what, default_dtype(), where=dataset.where)
    discrete = functools.partial(_data_checks.discrete_columns_message, dtype=default_dtype())  # as the flow sees it
    for check in (_data_checks.row_counter_columns_message, discrete, _data_checks.point_mass_columns_message):
        message = check(dataset.x, what, where=dataset.where)
        if message:
            print(f"gaussplug fit: warning: {message} [WarmStartWarning]", file=sys.stderr)  # as warm_start says it


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


def _warn_overfit(stage, dim: int, n_train: int, auto: bool = False, fit_rows: int | None = None) -> None:
    """Warns on stderr when the validation NLL is far above the training NLL (the exit code is unchanged).

    ``auto``: the depth was chosen by ``--layers auto`` already, so the advice is fewer components. ``fit_rows``:
    ``--max-fit-samples``, named when the greedy fits saw fewer rows than the training set.
    """
    train, val = stage["data"]["train"], stage["data"]["val"]
    if val is None or not (math.isfinite(train) and math.isfinite(val)):
        return
    gap = val - train
    if gap > OVERFIT_NATS_PER_DIM * dim:
        print(f"gaussplug fit: warning: the validation NLL ({val:.4g}) is {gap:.4g} nats per row above the training "
              f"NLL ({train:.4g}), over {OVERFIT_NATS_PER_DIM:g} per dimension: the model overfits its {n_train} "
              "training rows" + (f" (the greedy fits saw {fit_rows} of them: --max-fit-samples; fit on more)"
                                 if fit_rows is not None and fit_rows < n_train else "") + ". " + (
                  "Try fewer --components (1 or 2), --tail-weight 0.01 against outliers, or more data."
                  if auto else
                  "Try a smaller model (--layers auto, or fewer --layers or --components; the same options in a "
                  "--spec file), --tail-weight 0.01 against outliers, or more data."), file=sys.stderr)


def _model_spec(path: str | None, dim: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The user's spec (or the default, with ``options``) with the frozen standardisation layer in front.

    The user's spec is checked on its own first, so error paths (``layers[0]``)
    match the user's file.
    """
    from gaussplug import get_registry, specs
    from gaussplug._errors import SpecError
    from gaussplug._spec import load_spec, make_plan

    if path is None:
        user = specs.gaussianization_flow(dim, **(options or {}))
        return {**user, "layers": [dict(STANDARDIZE), *user["layers"]]}
    if not os.path.exists(path):
        raise FileNotFoundError(f"spec file {path!r} does not exist.")
    user = load_spec(path)  # a SpecError naming the file if it is not UTF-8 text or cannot be parsed
    if isinstance(user.get("user_spec"), dict) and "layers" not in user:  # a metrics.json of gaussplug fit
        user = user["user_spec"]  # (its "spec" has this command's standardisation layer in front already)
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
    first = user["layers"][0] if user["layers"] else None
    if isinstance(first, dict) and first.get("family") == "standardize":
        print(f"gaussplug fit: warning: spec file {path!r} starts with a standardize layer, but gaussplug fit puts "
              "its own in front of every spec, so the model will have two (the second fitted to standardised data). "
              "Leave it out "
              "(metrics.json's \"user_spec\", or the metrics.json file itself, is the spec without it).",
              file=sys.stderr)
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
        "spec": spec,  # the model's: the frozen standardisation layer, then the user's layers
        "user_spec": {**spec, "layers": spec["layers"][1:]},  # what --spec takes to fit the same model again
        "settings": {
            "steps": args.steps, "warm_start": args.warm_start, "batch_size": args.batch_size,
            "lr": args.lr if args.lr is not None else (1e-3 if args.warm_start else 3e-3),
            "validation": args.validation, "patience": args.patience, "seed": args.seed,
            "max_fit_samples": args.max_fit_samples,
            "default_model": None if args.spec is not None else _default_model_used(args),
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
        how = {"completed": "completed", "early_stopping": "stopped early (no validation improvement)",
               "non_finite": "stopped at a non-finite value (see the warning above)",
               "data_exhausted": "stopped: the batches ran out"}
        best = "" if ft.get("best_step") is None else f"; kept the best validated params (step {ft['best_step']})"
        lines.append(f"  fine-tune: {ft['steps_run']} steps, {how.get(ft['stopped'], ft['stopped'])}{best}")
        if ft.get("best_step") is not None and ft["steps_run"] > 0 and ft["best_step"] == ft["steps_run"]:
            lines.append("  the validation NLL was still falling at the last step: more --steps may fit better")
        elif ft.get("best_step") == 0 and ft["steps_run"] > 0:
            lines.append(f"  fine-tuning never improved on the {first}'s validation NLL, so the model is the {first}: "
                         "more rows, a smaller model (--layers, --components or --spec) or a lower --lr may do better")
    depth = m.get("depth_selection")
    if depth:
        rule = "validation NLL" if depth["criterion"] == "validation" else "RBIG information reduction"
        blocks = f"{depth['chosen']} block{'s' if depth['chosen'] != 1 else ''}"
        lines.append(f"  depth: --layers auto chose {blocks} of the {depth['n_evaluated']} fitted "
                     f"({rule}; stopped by {depth['stopped']})")
    lines.append(timing + f", total {t['total_s']:.1f} s")
    lines.append(f"  wrote {paths['model.npz']}, {paths['metrics.json']}, {paths['report.png']}")
    return "\n".join(lines)
