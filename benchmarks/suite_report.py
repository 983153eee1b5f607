"""Tables and the docs section for the benchmark suite (``<!-- suite:start -->`` ... ``<!-- suite:end -->``)."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _sections  # noqa: E402

START, END = _sections.markers("suite")
OURS_PREFIX = "gaussplug"
#: Goal: gap to the oracle (nats/dim) for D <= 8, and for D <= 64.
TOL_SMALL, TOL_LARGE = 0.02, 0.05


@dataclasses.dataclass
class Row:
    """One (task, model) result in reported units (NaN / inf where a model failed)."""

    task: str
    dim: int
    unit: str
    model: str
    nll: float  # reported unit
    oracle: float | None
    seconds: float
    note: str
    budget: float = math.nan  # seconds allowed
    val: float | None = None  # mean model-space validation NLL (gaussplug models, for selection)
    status: str = "ok"  # ok | skipped | failed

    @property
    def ours(self) -> bool:
        return self.model.startswith(OURS_PREFIX)

    @property
    def gap(self) -> float | None:
        return None if self.oracle is None or self.unit != "nats/dim" else self.nll - self.oracle


def tolerance(dim: int) -> float | None:
    """The oracle-gap goal for a dimension (None above 64)."""
    return TOL_SMALL if dim <= 8 else TOL_LARGE if dim <= 64 else None


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _ok(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.status == "ok"]


def pick_ours(rows: list[Row]) -> Row | None:
    """gaussplug's entry for a task: the gaussplug model with the best *validation* NLL."""
    ours = [r for r in _ok(rows) if r.ours and r.val is not None and math.isfinite(r.val)]
    return min(ours, key=lambda r: r.val) if ours else None


def best_peer(rows: list[Row]) -> Row | None:
    peers = [r for r in _ok(rows) if not r.ours and math.isfinite(r.nll)]
    return min(peers, key=lambda r: r.nll) if peers else None


def merge_rows(rows: list[Row], new: list[Row]) -> list[Row]:
    """``rows`` with each of ``new`` replacing the row of the same (task, model) in place, or appended."""
    out = list(rows)
    for r in new:
        at = [i for i, o in enumerate(out) if (o.task, o.model) == (r.task, r.model)]
        if at:
            out[at[0]] = r
        else:
            out.append(r)
    return out


def by_task(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.task, []).append(r)
    return out


def summary_rows(rows: list[Row]) -> tuple[list[list[str]], list[str]]:
    """Per task: ours (picked on validation) vs the best peer, and the oracle goal; plus shortfalls."""
    out, short = [], []
    for task, rs in by_task(rows).items():
        ours, peer = pick_ours(rs), best_peer(rs)
        first = rs[0]
        beats = ours is not None and (peer is None or ours.nll < peer.nll)
        verdict = "yes" if beats else "**NO**"
        if not beats:
            short.append(f"{task}: {peer.model if peer else '?'} beats gaussplug")
        gap, tol = (ours.gap if ours else None), tolerance(first.dim)
        if gap is None or tol is None:
            within = "—"
        else:
            within = "yes" if gap <= tol else "**NO**"
            if gap > tol:
                short.append(f"{task}: oracle gap {gap:.3f} > {tol} nats/dim")
        over = ours is not None and ours.seconds > 1.1 * ours.budget
        out.append([
            task, str(first.dim), first.unit, fmt(first.oracle),
            f"{fmt(ours.nll) if ours else '—'} ({ours.model.removeprefix('gaussplug ') if ours else 'none'})",
            fmt(gap) + (f" / {tol}" if tol is not None and gap is not None else ""), within,
            f"{fmt(peer.nll) if peer else '—'} ({peer.model if peer else 'none'})", verdict,
            f"{ours.seconds:.0f}{' (over)' if over else ''}" if ours else "—", f"{first.budget:g}",
        ])  # fmt: skip
    return out, short


SUMMARY_HEADER = [
    "data", "D", "unit", "oracle", "gaussplug (picked on validation)", "gap/dim / goal", "gap goal met",
    "best peer", "gaussplug beats every peer", "gaussplug s", "budget s",
]  # fmt: skip
FULL_HEADER = ["data", "model", "held-out NLL", "oracle", "NLL − oracle", "wall s", "note"]


def full_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.status != "ok":
            out.append([r.task, r.model, "—", fmt(r.oracle), "—", "—", r.note])
            continue
        mark = " (over)" if r.seconds > 1.1 * r.budget and "closed form" not in r.note else ""
        out.append([r.task, r.model, fmt(r.nll), fmt(r.oracle), fmt(r.gap), f"{r.seconds:.1f}{mark}", r.note])
    return out


def machine() -> str:
    return _sections.cpu()


def versions() -> str:
    return _sections.versions(("gaussplug", "jax", "jaxlib", "flowjax", "scikit-learn", "numpy"))


def write_section(path: pathlib.Path, body: str) -> None:
    """Replaces the text between the suite markers (or appends / creates), leaving the rest untouched."""
    _sections.write_section(path, "suite", body)
