"""The commands that use a saved model: ``gaussplug sample``, ``gaussplug score`` and ``gaussplug inspect``.

Each loads a ``model.npz`` written by ``gaussplug fit``, checks a CSV header against the column names the
model stored (:data:`COLUMNS`), and prints its results; :mod:`gaussplug.cli` parses the arguments and turns
errors into exit codes.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from gaussplug._errors import GaussplugError
from gaussplug._flow import _check_sample_size

#: The model metadata key under which ``gaussplug fit`` stores a CSV header's column names (in order). Absent
#: when the data had no header (a headerless CSV, ``.npy``, ``.npz``, the built-in data): columns then go by
#: position only.
COLUMNS = "columns"

_SAMPLE_BATCH = 65536  # most rows per dispatch of `gaussplug sample` (fewer are not padded up: one process, one n)


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
    """``gaussplug sample``: exactly ``flow.sample(seed, n)``, pushed through the model in batches of 65,536 rows."""
    from gaussplug._outputs import check_output_path, write_array

    check_output_path(args.output)
    flow = _load_model(args.model)
    columns = _model_columns(flow, args.model)  # the CSV header: the names the model was fit on, else x0, x1, ...
    try:  # float64: the file's values
        _check_sample_size(args.n, flow.dim, np.float64, what=f"-n {args.n}", seeds="--seed values")
    except ValueError as err:
        raise GaussplugError(str(err)) from None
    samples = np.asarray(flow.sample(args.seed, args.n, batch_size=min(args.n, _SAMPLE_BATCH)), np.float64)
    write_array(args.output, samples, column="x", columns=columns)
    print(f"wrote {args.n} samples (dim {flow.dim}) to {args.output}")
    return 0


def _score(args) -> int:
    """``gaussplug score``: the summary covers rows with a finite log-likelihood.

    A CSV header must name the model's columns (if it stored them) in its order (input error otherwise).
    Rows whose log-likelihood is -inf (zero density) or NaN are counted in a
    warning on stderr and left out of the mean and percentiles; ``-o`` still
    writes every row's value. Returns 1 if any row is NaN (or +inf), else 0.
    """
    from gaussplug._csv import check_columns
    from gaussplug._data import default_dtype
    from gaussplug._data_checks import check_fits_dtype
    from gaussplug._datasets import check_data, load_data
    from gaussplug._outputs import check_not_an_input, check_output_path, write_array
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
    from gaussplug._csv import check_columns, csv_header
    from gaussplug._inspect import run_inspect
    from gaussplug._outputs import check_output_dir

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
