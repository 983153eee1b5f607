"""Seed experiments: rerun the seed's two-moons results with the same data and budgets, compare.

    python benchmarks/seeds.py            # full budgets (several minutes on 2 CPU cores)
    python benchmarks/seeds.py --quick    # smoke mode: few steps, numbers not comparable
    python benchmarks/seeds.py --out DIR  # writes DIR/benchmarks.md and DIR/img/seeds_*.png

1. Seed flow (8 x Householder + mixture_cdf, K=8) on ``make_moons(3000, noise=0.08)``:
   cold start (random init, peak lr 3e-3) vs greedy RBIG alone vs RBIG warm start (peak lr
   1e-3); fine_tune's default optimiser (clip 1.0, one-cycle cosine), batch 512, 3000 steps.
2. Diagonal flow (8 blocks, 2 reflectors, K=8) on ``make_moons(5000, noise=0.05)``, Adam 5e-3,
   batch 512, 150 epochs; random init vs warm start.
3. Coupling flow (4 x PCA rotation + mixture-CDF coupling, MLP 64-64) on the same data, Adam
   3e-3, batch 512, 100 epochs; plus the zero-kernel contract right after the warm start.

In experiments 1 and 2 the warm start fits the Householder rotations by FastICA
(``rotation="ica"``, see :data:`ROTATION`); the greedy likelihood with ``fit_rbig``'s default
PCA rotations is reported beside it.

Data are standardised with the training mean and std; the held-out set is a second draw
(``random_state=1``, same n) standardised with the *training* statistics. NLL is the mean
negative log-likelihood in nats per sample in that space. The true density's NLL on both sets
(:func:`oracle`, the exact law of a ``make_moons`` row) is reported as the floor. Cold and warm
runs of one experiment use the same fine_tune key, so they see the same minibatches in the same
order and their per-step losses can be compared step by step; experiment 1 also evaluates the
NLL of the whole training set after every step (``fine_tune(validation=x_train, eval_every=1)``),
the quantity the seed's figures are. An "epoch" here is ``ceil(n / batch)`` optimiser
steps (Keras's count, as in the seed); fine_tune always draws full batches of 512 rows, so
150 such epochs are 1500 steps (153.6 passes over the rows).

Prints the results table and replaces the section between ``<!-- seeds:start -->`` and
``<!-- seeds:end -->`` in ``OUT/benchmarks.md`` (creating the file if needed).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import math
import pathlib
import sys
import time

import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _sections  # noqa: E402

import gaussplug  # noqa: E402
from gaussplug._mixture import fit_mixture, flatten_mixture_params, gaussianize  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = _sections.markers("seeds")
BATCH = 512
#: How the warm start fits the Householder rotations of experiments 1 and 2. After the first
#: marginal layer the data are nearly white, so PCA axes are set by sampling noise (see
#: seeds_sensitivity.py); FastICA picks the most non-Gaussian directions, which is what the next
#: marginal layer can Gaussianize.
ROTATION = "ica"
#: Experiment 2 is also run with this ``tail_weight`` (a fixed N(0, 1) component in every mixture CDF), for information.
TAIL_WEIGHT = 0.01

#: The seed's figures (and, marked "peers", held-out figures from docs PEERS.md: gauss_keras W2).
REF = {
    "e1_cold_start": 16.93, "e1_cold_end": 1.978, "e1_greedy": 1.957, "e1_warm_start": 1.93,
    "e1_warm_end": 1.657,
    "e2_ll_random": -881.5, "e2_ll_warm": -1.652, "e2_loss_random": 1.232, "e2_loss_warm": 1.149,
    "e2_test_random": 2.92, "e2_test_warm": 1.192, "e2_worst_random": 1049.0, "e2_worst_warm": 21.0,
    "e3_loss_random": 1.400, "e3_loss_warm": 1.092, "e3_test_warm": 1.227,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Budget:
    """Steps and epochs per experiment."""

    seed_steps: int = 3000
    diag_epochs: int = 150
    coupling_epochs: int = 100


FULL, QUICK = Budget(), Budget(seed_steps=10, diag_epochs=1, coupling_epochs=1)


def raw_moons(n: int, noise: float):
    """``(train, test)`` as ``make_moons`` draws them: ``random_state`` 0 and 1, float64, not standardised."""
    from sklearn.datasets import make_moons

    return make_moons(n, noise=noise, random_state=0)[0], make_moons(n, noise=noise, random_state=1)[0]


def moons(n: int, noise: float):
    """``(train, test)``: :func:`raw_moons`, both standardised with the training statistics."""
    tr, te = raw_moons(n, noise)
    mu, sd = tr.mean(0), tr.std(0)
    return ((tr - mu) / sd).astype(np.float32), ((te - mu) / sd).astype(np.float32)


def moons_log_prob(x, n: int, noise: float, rows: int = 1000) -> np.ndarray:
    """Exact log-density of one row of ``make_moons(n, noise=noise)`` at raw (unstandardised) points.

    ``make_moons`` puts ``n // 2`` and ``n - n // 2`` centres evenly along its two half circles and adds
    ``N(0, noise^2 I)``; shuffled, each row is a uniformly chosen centre plus that noise, so its law is the
    equal-weight mixture of ``n`` isotropic Gaussians at the centres. Evaluated with ``logsumexp`` in
    blocks of ``rows`` points (float64).
    """
    from scipy.special import logsumexp
    from sklearn.datasets import make_moons

    centres, _ = make_moons(n, noise=0.0, shuffle=False)
    x = np.asarray(x, np.float64)
    const = -math.log(n) - math.log(2 * math.pi * noise**2)
    out = [
        logsumexp(-((blk[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * noise**2), axis=1) + const
        for blk in np.array_split(x, max(1, -(-len(x) // rows)))
    ]
    return np.concatenate(out)


def oracle(n: int, noise: float) -> dict:
    """NLL of the true density on :func:`moons`' training and held-out sets, in their standardised space.

    The floor no model can beat on average; a model's excess over it is what it loses. Standardising
    divides by the training std, which adds ``sum(log std)`` to every log-density.
    """
    tr, te = raw_moons(n, noise)
    log_sd = float(np.log(tr.std(0)).sum())
    return {name: float(-moons_log_prob(x, n, noise).mean() - log_sd) for name, x in (("train", tr), ("test", te))}


def point_nll(flow, x, rows: int | None = None) -> np.ndarray:
    """Per-row NLL; with ``rows``, in zero-padded blocks of that many rows (reuses the compiled shape)."""
    if rows is None:
        return -np.asarray(flow.log_prob(x), np.float64)
    pad = np.zeros((-len(x) % rows, x.shape[1]), x.dtype)
    blocks = np.concatenate([x, pad]).reshape(-1, rows, x.shape[1])
    return np.concatenate([point_nll(flow, blk) for blk in blocks])[: len(x)]


def scores(flow, tr, te) -> dict:
    """Training and held-out NLL, and the worst held-out point's NLL."""
    test = point_nll(flow, te)
    return {"train": float(point_nll(flow, tr).mean()), "test": float(test.mean()), "worst": float(test.max())}


def timing(h: dict) -> dict:
    keys = ("wall_time", "compile_time", "steps_per_second", "steps_run")
    return {k: h[k] for k in keys}


def tune(flow, x, steps, **kw):
    flow, h = gaussplug.fine_tune(flow, x, steps=steps, batch_size=BATCH, key=0, progress=False, **kw)
    if h["stopped"] != "completed":
        print(f"warning: fine_tune stopped: {h['stopped']} {h['non_finite']}", file=sys.stderr)
    return flow, h


def diagonal_spec(rotation: str = ROTATION, reflectors: int | None = 2, tail_weight: float = 0.0) -> dict:
    """Experiment 2's flow (experiment 1's with ``reflectors=None``)."""
    return gaussplug.specs.gaussianization_flow(
        2, n_layers=8, n_components=8, reflectors=reflectors, rotation=rotation, tail_weight=tail_weight
    )


def coupling_spec(n_layers: int = 4) -> dict:
    """Experiment 3's flow (``n_layers`` coupling blocks, 8 components, hidden (64, 64))."""
    return gaussplug.specs.coupling_flow(2, n_layers=n_layers, n_components=8, hidden=(64, 64))


def greedy_pca(n: int, noise: float, reflectors: int | None) -> dict:
    """Greedy RBIG scores with ``fit_rbig``'s default PCA rotations (for comparison with :data:`ROTATION`)."""
    tr, te = moons(n, noise)
    flow, _ = warm(diagonal_spec("pca", reflectors), tr)
    return scores(flow, tr, te)


def warm(spec, x):
    t0 = time.perf_counter()
    flow = gaussplug.warm_start(gaussplug.build_flow(spec, key=0), x, progress=False)
    return flow, time.perf_counter() - t0


def seed_experiment(b: Budget) -> dict:
    tr, te = moons(3000, 0.08)
    spec = diagonal_spec(reflectors=None)
    cold0 = gaussplug.build_flow(spec, key=0)
    # The training set as "validation", evaluated after every step: the training NLL the seed's
    # figures (1.93 -> 1.657) are, at every step. It does not change the steps taken; the params
    # returned are those with the lowest training NLL on that trace (reported beside the last step's).
    trace = {"validation": tr, "eval_every": 1}
    cold, hc = tune(cold0, tr, b.seed_steps, peak_lr=3e-3, clip_norm=1.0, **trace)
    warm0, t_warm = warm(spec, tr)
    tuned, hw = tune(warm0, tr, b.seed_steps, peak_lr=1e-3, clip_norm=1.0, **trace)
    lc, lw = hc["loss"], hw["loss"]
    nc, nw = np.asarray(hc["val_nll"]), np.asarray(hw["val_nll"])
    assert list(hc["val_step"]) == list(hw["val_step"]) == list(range(b.seed_steps + 1)), "one NLL per step"
    behind = np.flatnonzero(~(lw < lc))  # same minibatches at every step
    win = min(50, len(lc))
    smooth = np.convolve(lw - lc, np.ones(win) / win, mode="valid")
    return {
        "tr": tr, "te": te, "flows": {"cold": cold, "warm": tuned},
        "cold0": scores(cold0, tr, te), "cold": scores(cold, tr, te), "greedy": scores(warm0, tr, te),
        "warm": scores(tuned, tr, te), "loss_cold": lc, "loss_warm": lw,
        "first_loss": (float(lc[0]), float(lw[0])), "behind_steps": behind, "smooth_behind": int(np.sum(smooth >= 0)),
        "nll_cold": nc, "nll_warm": nw,
        "best_step": {"cold": hc["best_step"], "warm": hw["best_step"]},
        "time": {"cold": timing(hc), "warm": {**timing(hw), "warm_start": t_warm}},
        "greedy_pca": greedy_pca(3000, 0.08, None), "oracle": oracle(3000, 0.08),
    }  # fmt: skip


def epoch_experiment(spec, lr: float, epochs: int, n: int = 5000) -> dict:
    tr, te = moons(n, 0.05)
    per_epoch = math.ceil(n / BATCH)
    opt = optax.adam(lr)  # one object for both runs, so they share the compiled chunk
    rand0 = gaussplug.build_flow(spec, key=0)
    warm0, t_warm = warm(spec, tr)
    out = {"tr": tr, "te": te, "steps": epochs * per_epoch, "per_epoch": per_epoch, "flows": {}, "time": {}}
    out["oracle"] = oracle(n, 0.05)
    for name, flow0 in (("random", rand0), ("warm", warm0)):
        start = scores(flow0, tr, te)
        flow, h = tune(flow0, tr, epochs * per_epoch, optimizer=opt)
        loss = h["loss"]
        out[name] = {
            **scores(flow, tr, te),
            "ll_before": -start["train"],
            "start": start,
            "final_loss": float(np.mean(loss[-per_epoch:])),
            "epoch_loss": loss[: len(loss) // per_epoch * per_epoch].reshape(-1, per_epoch).mean(1),
        }
        out["flows"][name] = flow
        out["time"][name] = timing(h) | ({"warm_start": t_warm} if name == "warm" else {})
    out["warm0"] = warm0
    if spec == diagonal_spec():
        out["greedy_pca"] = greedy_pca(n, 0.05, 2)
        tail0, _ = warm(diagonal_spec(tail_weight=TAIL_WEIGHT), tr)
        tail, h = tune(tail0, tr, epochs * per_epoch, optimizer=opt)
        out["tail"] = {**scores(tail, tr, te), "final_loss": float(np.mean(h["loss"][-per_epoch:]))}
    return out


def _final_kernel(modules) -> str:
    names = [m for m in modules if m.startswith("conditioner/~/linear_")]
    return max(names, key=lambda m: int(m.rsplit("_", 1)[1]))


def coupling_contract(flow, x) -> list[dict]:
    """Per coupling layer, right after warm start: zero final kernel, layer == refitted diagonal marginal."""
    from gaussplug_plugins.mixture_cdf_coupling import split_dims

    rows, rng = [], np.random.default_rng(0)
    for lr in flow.layers:
        if lr.family == "mixture_cdf_coupling":
            opts = lr.options
            k = opts["components"]
            cond, trans = split_dims(flow.dim, opts["mask"], opts["flip"])
            mod = flow.params[lr.name][_final_kernel(flow.params[lr.name])]
            fitted = fit_mixture(x[:, trans], k)  # what the greedy fit saw: the data arriving here
            y, ld = (np.asarray(a, np.float64) for a in flow.layer_forward(lr.name, x))
            yd, ldd = (np.asarray(a, np.float64) for a in gaussianize(x[:, trans], *fitted))
            x2 = x.copy()
            x2[:, cond] += rng.normal(size=(len(x), cond.size)).astype(x.dtype)
            y2 = np.asarray(flow.layer_forward(lr.name, x2)[0], np.float64)
            rows.append({
                "layer": lr.name, "kernel_zero": bool(np.all(np.asarray(mod["w"]) == 0)),
                "bias_is_fit": float(np.max(np.abs(np.asarray(mod["b"]) - flatten_mixture_params(*fitted)))),
                "max_dy": float(np.max(np.abs(y[:, trans] - yd))),
                "max_dlogdet": float(np.max(np.abs(ld - ldd.sum(-1)))),
                "cond_passthrough": bool(np.array_equal(y[:, cond], x[:, cond])),
                "cond_invariant": float(np.max(np.abs(y2[:, trans] - y[:, trans]))),
            })  # fmt: skip
        x = np.asarray(flow.layer_forward(lr.name, x)[0])
    return rows


def kernel_norms(flow) -> dict[str, float]:
    return {
        lr.name: float(np.linalg.norm(np.asarray(flow.params[lr.name][_final_kernel(flow.params[lr.name])]["w"])))
        for lr in flow.layers
        if lr.family == "mixture_cdf_coupling"
    }


def verdict(ours: float, ref: float, higher: bool = False) -> str:
    """Is ours at least as good as the reference, compared at the reference's printed precision?"""
    digits = max(0, len(f"{ref}".split(".")[1]) if "." in f"{ref}" else 0)
    o = round(ours, digits)
    good = o >= ref if higher else o <= ref
    return "yes" if good else "**NO (worse)**"


def info_verdict(ours: float, ref: float, higher: bool = False) -> str:
    """A comparison shown for information only (not the configuration the seed figure is matched with)."""
    return "info: " + ("as good" if verdict(ours, ref, higher) == "yes" else "worse")


def nll_behind(r1: dict) -> np.ndarray:
    """Experiment 1's points (step 0, then after each step) where warm's training NLL is not below cold's."""
    return np.flatnonzero(~(np.asarray(r1["nll_warm"]) < np.asarray(r1["nll_cold"])))


def every_step_rows(r1: dict) -> list[tuple[str, str, str, str]]:
    """Experiment 1's "warm ahead of cold at every step": on the training NLL (the seed's quantity), and per minibatch.

    ``r1["nll_cold"]``/``["nll_warm"]`` are the whole training set's NLL at step 0 and after every
    step; ``r1["behind_steps"]`` the steps whose minibatch loss was not lower for warm.
    """
    nc, nw = np.asarray(r1["nll_cold"]), np.asarray(r1["nll_warm"])
    n_nll, n_batch, steps = len(nll_behind(r1)), len(r1["behind_steps"]), len(r1["loss_cold"])
    lead = f"yes (smallest lead {np.min(nc - nw):.3f} nats)"
    ahead = lead if n_nll == 0 else f"**NO**: behind at {n_nll} of {nc.size}"
    return [
        ("1 warm below cold at every step: training NLL (full training set) after each step", "yes", ahead,
         "yes" if n_nll == 0 else "**NO**"),
        ("1 the same per minibatch: each step's minibatch loss (same minibatches)", "yes",
         f"behind at {n_batch} of {steps} steps",
         "info: " + ("as good" if n_batch == 0 else "worse (minibatch noise, see below)")),
    ]  # fmt: skip


def table_rows(r1: dict, r2: dict, r3: dict, steps1: int) -> list[tuple[str, str, str, str]]:
    """``(quantity, reference, ours, at least as good?)``; "info" rows have no fair comparison."""
    f = lambda v: f"{v:.3f}"
    info = "info (other random init)"
    rows = [
        ("1 cold: train NLL at init", "16.93", f(r1["cold0"]["train"]), info),
        (f"1 cold: train NLL after {steps1} steps", "1.978", f(r1["cold"]["train"]),
         verdict(r1["cold"]["train"], REF["e1_cold_end"])),
        ("1 greedy RBIG alone: train NLL", "1.957", f(r1["greedy"]["train"]), verdict(r1["greedy"]["train"], 1.957)),
        ("1 greedy RBIG with PCA rotations (fit_rbig default): train NLL", "1.957", f(r1["greedy_pca"]["train"]),
         info_verdict(r1["greedy_pca"]["train"], 1.957)),
        ("1 warm: train NLL at start", "1.93", f(r1["greedy"]["train"]), verdict(r1["greedy"]["train"], 1.93)),
        (f"1 warm: train NLL after {steps1} steps", "1.657", f(r1["warm"]["train"]),
         verdict(r1["warm"]["train"], 1.657)),
        *every_step_rows(r1),
        ("1 warm below cold on the 50-step moving average", "yes", "yes" if r1["smooth_behind"] == 0 else
         f"**NO**: behind at {r1['smooth_behind']} points", "yes" if r1["smooth_behind"] == 0 else "**NO**"),
        ("1 held-out NLL: cold / greedy / warm", "—",
         " / ".join(f(r1[k]["test"]) for k in ("cold", "greedy", "warm")), "no reference"),
        ("1 true density (oracle): train / held-out NLL", "—", f"{f(r1['oracle']['train'])} / "
         f"{f(r1['oracle']['test'])}", "the floor"),
        ("2 random: mean log-lik before training", "-881.5", f(r2["random"]["ll_before"]), info),
        ("2 warm: mean log-lik before training", "-1.652", f(r2["warm"]["ll_before"]),
         verdict(r2["warm"]["ll_before"], REF["e2_ll_warm"], higher=True)),
        ("2 the same with PCA rotations (fit_rbig default)", "-1.652", f(-r2["greedy_pca"]["train"]),
         info_verdict(-r2["greedy_pca"]["train"], REF["e2_ll_warm"], higher=True)),
        ("2 random: final loss (last-epoch mean)", "1.232", f(r2["random"]["final_loss"]),
         verdict(r2["random"]["final_loss"], REF["e2_loss_random"])),
        ("2 warm: final loss (last-epoch mean)", "1.149", f(r2["warm"]["final_loss"]),
         verdict(r2["warm"]["final_loss"], REF["e2_loss_warm"])),
        ("2 train NLL after, full set: random / warm", "—", f"{f(r2['random']['train'])} / {f(r2['warm']['train'])}",
         "no reference"),
        ("2, 3 true density (oracle): train / held-out NLL", "—", f"{f(r2['oracle']['train'])} / "
         f"{f(r2['oracle']['test'])}", "the floor"),
        ("2 random: held-out NLL", "2.92 (peers)", f(r2["random"]["test"]), verdict(r2["random"]["test"], 2.92)),
        ("2 warm: held-out NLL", "1.192 (peers)", f(r2["warm"]["test"]), verdict(r2["warm"]["test"], 1.192)),
        ("2 worst held-out point NLL: random / warm", "~1049 / ~21 (peers)",
         f"{r2['random']['worst']:.1f} / {r2['warm']['worst']:.1f}",
         verdict(r2["warm"]["worst"], 21.0) + " (warm)"),
        (f"2 warm with tail_weight={TAIL_WEIGHT}: final loss / held-out NLL / worst held-out point",
         "1.149 / 1.192 / ~21", f"{f(r2['tail']['final_loss'])} / {f(r2['tail']['test'])} / {r2['tail']['worst']:.1f}",
         "info: " + " / ".join("as good" if verdict(r2["tail"][k], ref) == "yes" else "worse"
                               for k, ref in (("final_loss", 1.149), ("test", 1.192), ("worst", 21.0)))),
        ("3 random: final loss (last-epoch mean)", "1.400", f(r3["random"]["final_loss"]),
         verdict(r3["random"]["final_loss"], REF["e3_loss_random"])),
        ("3 warm: final loss (last-epoch mean)", "1.092", f(r3["warm"]["final_loss"]),
         verdict(r3["warm"]["final_loss"], REF["e3_loss_warm"])),
        ("3 train NLL after, full set: random / warm", "—", f"{f(r3['random']['train'])} / {f(r3['warm']['train'])}",
         "no reference"),
        ("3 random: held-out NLL", "—", f(r3["random"]["test"]), "no reference"),
        ("3 warm: held-out NLL", "1.227 (peers)", f(r3["warm"]["test"]), verdict(r3["warm"]["test"], 1.227)),
    ]  # fmt: skip
    return rows


def markdown_table(rows) -> str:
    lines = ["| experiment: quantity | seed / reference | ours | at least as good? |", "|---|---|---|---|"]
    return "\n".join([*lines, *(f"| {' | '.join(r)} |" for r in rows)])


def timing_table(r1, r2, r3) -> str:
    lines = [
        "| run | warm start (s) | fine_tune wall (s) | of which compile (s) | steps | steps/s |",
        "|---|---|---|---|---|---|",
    ]
    for label, t in (("1 cold", r1["time"]["cold"]), ("1 warm", r1["time"]["warm"]),
                     ("2 random", r2["time"]["random"]), ("2 warm", r2["time"]["warm"]),
                     ("3 random", r3["time"]["random"]), ("3 warm", r3["time"]["warm"])):  # fmt: skip
        ws = f"{t['warm_start']:.1f}" if "warm_start" in t else "—"
        lines.append(
            f"| {label} | {ws} | {t['wall_time']:.1f} | {t['compile_time']:.1f} | {t['steps_run']} "
            f"| {t['steps_per_second']:.1f} |"
        )
    return "\n".join(lines)


def contract_text(rows: list[dict], norms: dict[str, float]) -> str:
    lines = [
        "| layer | final kernel == 0 | max \\|bias - refit\\| | max \\|y - diagonal\\| | max \\|logdet - diagonal\\| "
        "| x_cond passed through | max \\|Δy\\| when x_cond perturbed | kernel norm after training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['kernel_zero']} | {r['bias_is_fit']:.1e} | {r['max_dy']:.1e} "
            f"| {r['max_dlogdet']:.1e} | {r['cond_passthrough']} | {r['cond_invariant']:.1e} "
            f"| {norms[r['layer']]:.3f} |"
        )
    return "\n".join(lines)


def contract_holds(rows, norms, tol: float = 1e-4) -> tuple[bool, bool]:
    ok = all(
        r["kernel_zero"] and r["cond_passthrough"] and r["cond_invariant"] == 0 and r["bias_is_fit"] <= tol
        and r["max_dy"] <= tol and r["max_dlogdet"] <= tol for r in rows
    )  # fmt: skip
    return ok, all(v > 0 for v in norms.values())


def machine() -> str:
    pkgs = ("jax", "jaxlib", "distrax", "dm-haiku", "optax", "gaussplug")
    return f"{_sections.cpu()}; {_sections.versions(pkgs)}; {source_digest()}"


def source_digest() -> str:
    """SHA-256 of the package and built-in plugin sources: which code state the numbers belong to."""
    h = hashlib.sha256()
    for path in sorted([*(ROOT / "gaussplug").glob("*.py"), *(ROOT / "plugins").glob("*.py")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"source sha256 {h.hexdigest()[:12]} (gaussplug/*.py + plugins/*.py)"


def plots(r1, r2, r3, img: pathlib.Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    win = min(50, len(r1["loss_cold"]))
    ma = lambda v: np.convolve(v, np.ones(win) / win, mode="valid")
    runs = (("loss_cold", "cold start (peak lr 3e-3)", "C3"), ("loss_warm", "RBIG warm start (1e-3)", "C0"))
    for key, label, c in runs:
        a.plot(r1[key], color=c, alpha=0.25, lw=0.6)
        a.plot(np.arange(win - 1, len(r1[key])), ma(r1[key]), color=c, label=label)
    a.axhline(REF["e1_warm_end"], color="k", ls=":", lw=1, label="seed warm end 1.657")
    a.set(yscale="log", xlabel="step", ylabel="minibatch NLL (nats)", title="1: seed flow on two moons")
    a.legend()
    b.plot(np.arange(1, len(r1["loss_cold"]) + 1), r1["loss_cold"] - r1["loss_warm"], color="C2", lw=0.6,
           alpha=0.5, label="minibatch loss (same minibatch)")
    b.plot(r1["nll_cold"] - r1["nll_warm"], color="k", lw=1.2, label="training NLL, full training set")
    b.axhline(0, color="k", lw=1, ls=":")
    b.set(xlabel="step", ylabel="cold - warm NLL (nats)", title="above 0: warm ahead")
    b.legend()
    b.set_yscale("symlog", linthresh=0.05)
    fig.tight_layout()
    fig.savefig(img / "seeds_curves.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    runs = ((axes[0], r2, "2: diagonal flow, Adam 5e-3", "e2_loss_random", "e2_loss_warm"),
            (axes[1], r3, "3: coupling flow, Adam 3e-3", "e3_loss_random", "e3_loss_warm"))  # fmt: skip
    for ax, r, title, key_r, key_w in runs:
        for name, c, ref in (("random", "C3", REF[key_r]), ("warm", "C0", REF[key_w])):
            ep = r[name]["epoch_loss"]
            ax.plot(np.arange(1, len(ep) + 1), ep, color=c, label=f"{name} init")
            ax.axhline(ref, color=c, ls=":", lw=1, label=f"seed {name} final {ref}")
        ax.set(yscale="log", xlabel="epoch", ylabel="epoch-mean training loss (nats)", title=title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(img / "seeds_epochs.png", dpi=110)
    plt.close(fig)

    panels = [("1 cold", r1, "cold"), ("1 warm", r1, "warm"), ("2 random", r2, "random"), ("2 warm", r2, "warm"),
              ("3 random", r3, "random"), ("3 warm", r3, "warm")]  # fmt: skip
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    for ax, (title, r, name) in zip(axes.T.ravel(), panels, strict=True):
        g = np.linspace(-2.6, 2.6, 120, dtype=np.float32)
        pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        lp = -point_nll(r["flows"][name], pts, rows=len(r["tr"])).reshape(len(g), len(g))
        ax.contourf(g, g, np.clip(lp, -8, None), levels=30, cmap="viridis")
        ax.scatter(*r["te"][:400].T, s=1, c="w", alpha=0.5)
        ax.set(title=f"{title}: held-out NLL {r[name]['test']:.3f}", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(img / "seeds_densities.png", dpi=90)
    plt.close(fig)
    return ["seeds_curves.png", "seeds_epochs.png", "seeds_densities.png"]


def _runs(r1, r2, r3):
    """``(label, result, run key)`` for the six fine-tuned runs of the three experiments."""
    return (("1 cold", r1, "cold"), ("1 warm", r1, "warm"), ("2 random", r2, "random"),
            ("2 warm", r2, "warm"), ("3 random", r3, "random"), ("3 warm", r3, "warm"))  # fmt: skip


def noise_text(r1, r2, r3) -> str:
    """Train/held-out gaps and how much the constant-lr epoch loss still moves at the end."""
    gaps = [
        f"{label} {r[k]['test'] - r[k]['train']:+.3f}" for label, r, k in _runs(r1, r2, r3)
    ]
    spread = [
        f"{label}: sd {np.std(r[k]['epoch_loss'][-10:]):.3f}, lowest epoch {np.min(r[k]['epoch_loss']):.3f}"
        for label, r, k in (("2 random", r2, "random"), ("2 warm", r2, "warm"),
                            ("3 random", r3, "random"), ("3 warm", r3, "warm"))
    ]  # fmt: skip
    return (
        "Held-out minus training NLL: " + ", ".join(gaps) + ". With a constant learning rate (2, 3) the epoch "
        "loss keeps fluctuating, so one final-epoch figure is a noisy sample; last 10 epochs' "
        + "; ".join(spread)
        + "."
    )


def lead_text(r1, last: int = 500) -> str:
    """What 'ahead at every step' asks of the warm run, given the spread of the per-step difference.

    Per-step warm-minus-cold losses over the last ``last`` steps have mean ``m`` and sd ``s``. With
    normal differences, fewer than 0.5 steps behind is expected only for a lead of at least ``z s``,
    ``z`` the normal quantile of ``0.5 / last``; the warm run's training NLL would then be about the
    cold run's minus that lead, set beside the true density's.
    """
    from scipy.stats import norm

    d = (r1["loss_warm"] - r1["loss_cold"])[-last:]
    if len(d) < 2:
        return ""
    z = float(norm.isf(0.5 / len(d)))
    need = z * float(np.std(d))
    return (
        f"Over the last {len(d)} steps the per-step difference (warm - cold) is {np.mean(d):+.3f} with sd "
        f"{np.std(d):.3f}; expecting fewer than 0.5 steps behind there takes a lead of {z:.1f} sd = {need:.3f}, "
        f"i.e. a warm training NLL of about {r1['cold']['train'] - need:.3f} against the cold run's "
        f"{r1['cold']['train']:.3f}, where the true density's is {r1['oracle']['train']:.3f}."
    )


def oracle_text(r1, r2, r3) -> str:
    """Held-out NLL above the true density's, ours and the peers' (gauss_keras, PEERS.md)."""
    ours = [
        f"{label} {r[k]['test'] - r['oracle']['test']:+.3f}" for label, r, k in _runs(r1, r2, r3)
    ]
    peers = ", ".join(
        f"{label} {REF[k] - r2['oracle']['test']:+.3f}"
        for label, k in (("2 warm", "e2_test_warm"), ("3 warm", "e3_test_warm"))
    )
    return (
        "Held-out NLL above the true density's (`moons_log_prob`: the law of one `make_moons` row, an "
        "equal-weight mixture of isotropic Gaussians at its evenly spaced centres): " + ", ".join(ours)
        + f"; gauss_keras (PEERS.md): {peers}. The two draws differ: the held-out set's true NLL is "
        f"{r2['oracle']['test'] - r2['oracle']['train']:+.3f} (2, 3) and "
        f"{r1['oracle']['test'] - r1['oracle']['train']:+.3f} (1) above the training set's."
    )


def section(r1, r2, r3, budget: Budget, quick: bool, contract, norms, images, run: tuple[str, str, float]) -> str:
    rows = table_rows(r1, r2, r3, budget.seed_steps)
    worse = [r[0] for r in rows if "NO" in r[3]]
    ok, moved = contract_holds(contract, norms)
    when, where, elapsed = run
    head = "## Seed experiments"
    lines = [head, ""]
    if quick:
        lines += ["**Quick smoke run (`--quick`): a few steps only; the numbers are NOT comparable with the seed's.**"]
        lines += [""]
    lines += [
        f"Run {when} with `python benchmarks/seeds.py{' --quick' if quick else ''}` "
        f"({elapsed / 60:.1f} min in all) on {where}. float32.",
        "",
        "Data: standardised with the training mean/std; held-out = a second draw (`random_state=1`, same n) "
        "standardised with the training statistics. NLL = mean nats per sample. Budgets: "
        f"(1) {budget.seed_steps} steps, batch {BATCH}, clip 1.0, one-cycle cosine; "
        f"(2) Adam 5e-3, {budget.diag_epochs} epochs = {r2['steps']} steps; "
        f"(3) Adam 3e-3, {budget.coupling_epochs} epochs = {r3['steps']} steps. An epoch is ceil(n/512) = "
        f"{r2['per_epoch']} steps (Keras's count); fine_tune's batches are always full, so an epoch here sees "
        f"{r2['per_epoch'] * BATCH} rows of 5000. 'Final loss' is the mean minibatch loss of the last epoch, as "
        "Keras reports it. Cold/random and warm runs of an experiment share the fine_tune key, hence the "
        "minibatch order. 'peers' references are held-out figures from PEERS.md (gauss_keras on W2). "
        f"Experiments 1 and 2 warm-start with Householder rotations fitted by FastICA (`rotation=\"{ROTATION}\"`): "
        "after the first marginal layer the data are nearly white and PCA axes are set by sampling noise; the "
        "greedy figure with `fit_rbig`'s default PCA rotations is given beside it. Random init: each "
        "`mixture_cdf` layer starts near the identity (a Gauss-Hermite mixture for N(0, 1); see "
        "`make_mixture_cdf`).",
        "",
        markdown_table(rows),
        "",
        (
            "All compared figures are at least as good as the seed's."
            if not worse
            else "**Not as good as the seed/reference:** " + "; ".join(worse) + "."
        ),
        "",
        f"Warm vs cold at every step: on the training NLL of the whole training set (evaluated at step 0 and "
        f"after each of the {len(r1['nll_cold']) - 1} steps) warm is behind at {len(nll_behind(r1))} points, "
        f"with a lead of {np.min(r1['nll_cold'] - r1['nll_warm']):.3f} nats at its smallest (median "
        f"{np.median(r1['nll_cold'] - r1['nll_warm']):.3f}). Each run returns the params with the lowest training "
        f"NLL on that trace (steps {r1['best_step']['cold']} and {r1['best_step']['warm']}; the last step's NLL is "
        f"higher by {r1['nll_cold'][-1] - r1['nll_cold'].min():.1e} and "
        f"{r1['nll_warm'][-1] - r1['nll_warm'].min():.1e}). "
        f"Per minibatch (the same minibatch for both): warm is behind at {len(r1['behind_steps'])} of "
        f"{len(r1['loss_cold'])} steps"
        + (f" (first at step {int(r1['behind_steps'][0]) + 1})" if len(r1["behind_steps"]) else "")
        + f"; on a {min(50, len(r1['loss_cold']))}-step moving average it is behind at {r1['smooth_behind']} points. "
        f"First-step minibatch loss: cold {r1['first_loss'][0]:.3f}, warm {r1['first_loss'][1]:.3f}. "
        + lead_text(r1),
        "",
        noise_text(r1, r2, r3),
        "",
        oracle_text(r1, r2, r3),
        "",
        "Coupling flow, zero-kernel contract right after warm start (data pushed to each layer; 'diagonal' = "
        "`gaussianize` with a mixture refitted to the transformed coordinates arriving there): "
        + ("**holds**" if ok else "**VIOLATED**")
        + "; final kernels after training "
        + ("all moved (norm > 0)." if moved else "**did not all move**."),
        "",
        contract_text(contract, norms),
        "",
        "Timings (fine_tune history; wall includes compile; a compile of 0.0 reused the chunk compiled for the "
        "other run of the same experiment; experiment 1's runs also evaluate the whole training set's NLL after "
        "every step, hence their lower steps/s; the box is shared, so expect noise):",
        "",
        timing_table(r1, r2, r3),
        "",
        *(f"![{name}](img/{name})" for name in images),
    ]
    return "\n".join(lines)


def write_section(path: pathlib.Path, body: str) -> None:
    """Replaces the text between the seeds markers (or appends/creates), leaving the rest untouched."""
    _sections.write_section(path, "seeds", body)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: a few steps per run")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.md and img/ (docs/)")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()  # before the runs: the load and the sources they started with
    t0 = time.perf_counter()
    r1 = seed_experiment(budget)
    r2 = epoch_experiment(diagonal_spec(), 5e-3, budget.diag_epochs)
    r3 = epoch_experiment(coupling_spec(), 3e-3, budget.coupling_epochs)
    contract = coupling_contract(r3["warm0"], r3["tr"])
    norms = kernel_norms(r3["flows"]["warm"])
    images = plots(r1, r2, r3, out / "img")
    elapsed = time.perf_counter() - t0
    body = section(r1, r2, r3, budget, args.quick, contract, norms, images, (when, where, elapsed))
    write_section(out / "benchmarks.md", body)
    print(markdown_table(table_rows(r1, r2, r3, budget.seed_steps)))
    print()
    print(timing_table(r1, r2, r3))
    print()
    print(contract_text(contract, norms))
    print(f"\nwrote {out / 'benchmarks.md'} and {len(images)} PNGs under {out / 'img'} ({elapsed:.0f} s)")
    return {"seed": r1, "diagonal": r2, "coupling": r3, "contract": contract, "kernel_norms": norms}


if __name__ == "__main__":
    main()
