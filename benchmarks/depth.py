"""Depth selection for greedy RBIG: chosen depth vs the held-out NLL curve.

    python benchmarks/depth.py [moons gmm16 digits]

For each data set: one fixed-depth RBIG fit of ``MAX`` blocks gives the
held-out NLL after every depth in one pass (a fixed-depth fit's first k
blocks are exactly the depth-k fit); ``fit_rbig(n_layers="auto")`` then picks
a depth by the RBIG rule (training data only) and by the validation rule (20 %
of the training rows held out). Prints a markdown table (nats per sample).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import gaussplug
from gaussplug._inspect import pushforward

MAX = 16


def moons():
    from sklearn.datasets import make_moons

    tr, _ = make_moons(3000, noise=0.08, random_state=0)
    te, _ = make_moons(3000, noise=0.08, random_state=1)
    return tr, te


def gmm16():
    rng = np.random.default_rng(0)
    k, d = 5, 16
    means = rng.normal(0, 2.0, (k, d))
    chols = [np.linalg.cholesky(a @ a.T / d + 0.2 * np.eye(d)) for a in rng.normal(size=(k, d, d))]
    w = rng.dirichlet(np.ones(k) * 3)

    def draw(n, seed):
        r = np.random.default_rng(seed)
        c = r.choice(k, n, p=w)
        return np.stack([means[j] + chols[j] @ r.standard_normal(d) for j in c])

    return draw(10000, 1), draw(5000, 2)


def digits():
    from sklearn.datasets import load_digits

    x = load_digits().data + np.random.default_rng(0).uniform(size=(1797, 64))
    perm = np.random.default_rng(1).permutation(len(x))
    return x[perm[:1437]], x[perm[1437:]]


def depth_curve(flow, x):
    """Mean held-out NLL after 0, 1, ..., n_blocks blocks."""
    push = pushforward(flow, x)
    data, ld = np.asarray(push.data, np.float64), np.asarray(push.log_dets, np.float64)
    cum = np.concatenate([np.zeros((1, x.shape[0])), np.cumsum(ld, axis=0)])
    d = x.shape[1]
    nll = []
    for k in range(0, data.shape[0], 2):
        z = data[k]
        nll.append(float(np.mean(0.5 * np.sum(z * z, 1) + 0.5 * d * np.log(2 * np.pi) - cum[k])))
    return np.array(nll)


def run(name, tr, te):
    mu, sd = tr.mean(0), tr.std(0)
    tr, te = (tr - mu) / sd, (te - mu) / sd
    t0 = time.perf_counter()
    full = gaussplug.fit_rbig(tr, n_layers=MAX)
    curve = depth_curve(full, te)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    tc = gaussplug.fit_rbig(tr, n_layers="auto", max_layers=MAX)
    t_tc = time.perf_counter() - t0
    val = gaussplug.fit_rbig(tr, n_layers="auto", max_layers=MAX, validation=0.2)
    sel_tc, sel_val = tc.metadata["depth_selection"], val.metadata["depth_selection"]
    nll_tc, nll_val = (-float(np.mean(np.asarray(f.log_prob(te), np.float64))) for f in (tc, val))
    best = int(np.argmin(curve))
    plateau = int(np.argmax(curve - curve[best] <= 0.02 * (curve[0] - curve[best])))  # 98 % of the gain
    return {
        "data": name, "n_train": len(tr), "dim": tr.shape[1], "curve": curve,
        "best": best, "plateau": plateau, "tc": sel_tc["chosen"], "val": sel_val["chosen"],
        "tc_reduction": sel_tc["tc_reduction"], "ng_reduction": sel_tc["non_gaussianity_reduction"],
        "tol": sel_tc["tol"], "nll_tc": nll_tc, "nll_val": nll_val,
        "val_curve": [-v for v in sel_val["validation_log_likelihood"]],
        "t_full": t_full, "t_tc": t_tc,
    }  # fmt: skip


def main(names):
    sets = {"moons": moons, "gmm16": gmm16, "digits": digits}
    rows = [run(n, *sets[n]()) for n in names]
    print(
        "| data | n train x dim | held-out NLL by depth (0, 1, 2, ...) | best depth | 98 % of the gain from "
        "| RBIG rule | validation rule |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["curve"]
        curve = " ".join(f"{v:.2f}" for v in c)
        print(
            f"| {r['data']} | {r['n_train']} x {r['dim']} | {curve} | {r['best']} ({c[r['best']]:.3f}) "
            f"| {r['plateau']} | {r['tc']} ({r['nll_tc']:.3f}) | {r['val']} ({r['nll_val']:.3f}) |"
        )
    for r in rows:
        red = " ".join(f"{v:.3f}" for v in r["ng_reduction"])
        tcr = " ".join(f"{v:.3f}" for v in r["tc_reduction"])
        val = " ".join(f"{v:.2f}" for v in r["val_curve"])
        print(f"\n{r['data']}: non-Gaussianity reductions per block {red}; tol {r['tol']:.4f}; "
              f"TC reductions {tcr}; "
              f"validation-split NLL by depth {val}; fit {MAX} blocks {r['t_full']:.1f} s, auto {r['t_tc']:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["moons", "gmm16", "digits"])
