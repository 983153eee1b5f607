"""The ``gaussplug`` command line: ``plugins``, ``fit``, ``sample``, ``score`` and ``inspect``.

This module parses the arguments, runs the command and reports its errors; the commands themselves are in
:mod:`gaussplug._cli_fit`, :mod:`gaussplug._cli_model` (``sample``, ``score``, ``inspect``) and
:mod:`gaussplug._cli_plugins`.

Run ``gaussplug --help`` (or ``gaussplug fit --help``) for usage. Exit codes (:func:`exit_code`):

* 0: success.
* 1: the command ran and wrote its outputs, but the result is not usable: ``fit``
  gave a non-finite training or validation NLL at some stage, or ``score`` gave
  NaN or +inf log-likelihoods for some rows. A warning on stderr says which.
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
* 70: an error gaussplug did not expect (a bug, or a numerical failure deep in a
  library), printed with its traceback and a last line saying so (``EX_SOFTWARE``
  of BSD's ``sysexits.h``).
* 130: interrupted (Ctrl-C; the command stops at the next safe point: after the current warm-start
  layer, fine-tuning chunk or compile, or batch of rows; a second Ctrl-C stops it at once; see
  :mod:`gaussplug._interrupt`).
* 141: the reader of standard output went away (e.g. ``gaussplug plugins | head -1``);
  nothing more is printed, as for a program stopped by ``SIGPIPE``.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import traceback
import warnings

from gaussplug import _interrupt as interrupt
from gaussplug._cli_fit import _fit
from gaussplug._cli_model import _inspect, _sample, _score
from gaussplug._cli_plugins import _plugins
from gaussplug._errors import FitError, GaussplugError, PluginError
from gaussplug.specs import ROTATIONS

__all__ = ["UsageError", "build_parser", "exit_code", "main"]

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_RUNTIME, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 3, 70, 130, 141
EXIT_CODES = (
    "exit codes: 0 success; 1 the result is not usable (a warning says why); 2 an input error: bad arguments, "
    "files, data or spec (one line); 3 a plugin or a layer family failed (PluginError, FitError: one line naming "
    "the layer and plugin; add --traceback before the command for the traceback); 70 an unexpected internal error "
    "(printed with its traceback); 130 interrupted; 141 standard output closed by its reader."
)


class UsageError(GaussplugError, ValueError):
    """Command-line arguments that do not fit together (exit code 2), e.g. ``--patience`` without validation."""


def exit_code(err: BaseException) -> int:
    """The exit code for an error a command raised (see the module docstring).

    Args:
      err: The exception.

    Returns:
      3 (:data:`EXIT_RUNTIME`) for :class:`gaussplug.PluginError` and :class:`gaussplug.FitError`; 2
      (:data:`EXIT_INPUT`) for every other :class:`gaussplug.GaussplugError` (bad data, spec, model file or
      arguments) and for ``OSError`` (missing or unreadable files); 130 for ``KeyboardInterrupt``; 70
      (:data:`EXIT_INTERNAL`) for anything else, such as a bare ``ValueError`` from inside a library. (1,
      :data:`EXIT_FAILED`, is for a command that ran but whose result is not usable, never for an error.)
    """
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, (PluginError, FitError)):
        return EXIT_RUNTIME
    if isinstance(err, (GaussplugError, OSError)):
        return EXIT_INPUT
    return EXIT_INTERNAL


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
    from gaussplug._keys import SEED_LIMIT

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


def _in_unit_interval(noun: str):
    """A parser of numbers in [0, 1); its errors call them ``noun`` s (a fraction, a weight)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
        if not 0.0 <= value < 1.0:  # NaN fails too
            raise argparse.ArgumentTypeError(f"expected a {noun} in [0, 1); got {text}")
        return value

    return parse


_fraction = _in_unit_interval("fraction")
_tail_weight = _in_unit_interval("weight")


def _layers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _int_at_least(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto'; got {text!r}") from None


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
        ("--patience", "P", _int_at_least(0), None,
         "stop after P validation checks (one per 200 steps) without improvement (default 5; 0 never stops early)"),
        ("--seed", "S", _seed, 0, "seed for the split, warm start and minibatches (default 0)"),
        ("--max-fit-samples", "M", _int_at_least(2), None, "rows each greedy fit uses (default all)"),
    ]:
        p.add_argument(flag, metavar=metavar, type=kind, default=default, help=text)
    model = p.add_argument_group("default model", "Options of specs.gaussianization_flow, the model fitted without "
                                 "--spec (a spec file sets them itself).")
    model.add_argument("--layers", metavar="N", type=_layers, default=None,
                       help="(rotation, marginal) blocks (default 8), or 'auto': add blocks until the validation "
                            "NLL stops improving (the RBIG information rule with --validation 0)")
    model.add_argument("--components", metavar="K", type=_int_at_least(1), default=None,
                       help="Gaussian-mixture components per dimension (default 8)")
    model.add_argument("--tail-weight", metavar="W", type=_tail_weight, default=None,
                       help="weight of a fixed N(0, 1) component in every mixture CDF, in [0, 1) (default 0); "
                            "a small one (0.01) bounds the density's tails against outliers")
    model.add_argument("--rotation", choices=ROTATIONS, default=None,
                       help="how the warm start fits each rotation (default pca)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")

    p = add("sample", help="draw samples from a saved model", description="Draw samples.")
    p.add_argument("model", metavar="MODEL", help="model.npz written by `gaussplug fit`")
    p.add_argument("-n", type=_int_at_least(1), required=True, help="number of samples")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output .npy or .csv (the CSV header: the model's column names, else x0,x1,...)")
    p.add_argument("--seed", metavar="S", type=_seed, default=0,
                   help="random seed in [0, 2**32) (default 0); the samples are those of flow.sample(S, N) in Python")

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
        with warnings.catch_warnings(), interrupt.sigint_handled(), interrupt.deferred():  # raised at checkpoints
            warnings.showwarning = functools.partial(_show_warning, args.command, warnings.showwarning)
            code = handler(args)
            interrupt.checkpoint()  # a Ctrl-C deferred past the last checkpoint, or lost where it was raised
            return code
    except KeyboardInterrupt:
        print("gaussplug: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `gaussplug plugins | head -1`: the reader has all it wanted
        _silence_stdout()
        return EXIT_PIPE
    except Exception as err:
        return _report_error(args.command, err, show_traceback=args.traceback)


def entry() -> None:
    """The ``gaussplug`` console script: :func:`main`, then exit with its code.

    After an interrupt the process ends at once (``os._exit``) once its streams are flushed: the
    interpreter's normal shutdown would run while XLA's threads are still mid-computation, and crashed
    there (a segmentation fault, exit 139 instead of 130).
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


def _silence_stdout() -> None:
    """Points standard output at ``os.devnull``, so that flushing it at exit does not raise the broken pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. captured by a test)
        pass


def _report_error(command: str, err: Exception, *, show_traceback: bool = False) -> int:
    """Prints ``err`` on stderr as its exit code calls for (see :func:`exit_code`); returns that code.

    Input errors (2) and plugin or fit failures (3) are one line; any other error is a
    bug or a failure gaussplug did not foresee, so its traceback comes first.
    """
    code = exit_code(err)
    message = " ".join(str(err).split()) or type(err).__name__
    if show_traceback or code == EXIT_INTERNAL:
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


if __name__ == "__main__":  # pragma: no cover
    entry()
