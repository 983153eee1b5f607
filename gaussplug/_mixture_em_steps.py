"""The EM iterations of :func:`gaussplug._mixture_em.fit_mixture` on weighted points, accelerated by SQUAREM.

:func:`_e_step` gathers the sufficient statistics of weighted points (bins, or
rows) under ``(D, K)`` mixture params, :func:`_m_step` turns them into new
params with floored scales, and :func:`_squarem` iterates the two per column
(SQUAREM, Varadhan & Roland 2008, scheme S3) until the log-likelihood settles.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def _e_step(u, count, m2, logits, loc, log_scale):
    """Sufficient statistics of one E-step on weighted points, one pass per component.

    ``u``: ``(D, rows)`` point values (bin means); ``count``: their weights
    (bin counts), broadcasting against ``u``; ``m2``: within-point sums of
    squared deviations (or None); params ``(D, K)``. Returns ``(log_lik,
    n_k, sum_z, sum_zz)`` summed over rows: ``(D,)`` and three ``(K, D)``,
    with ``z = (u - loc) / scale`` of the current components (so the variance
    update does not cancel for far-out narrow components). Components are
    scanned (one elementwise loop each, rows on the minor axis), which XLA-CPU
    runs several times faster than a reduction over a short ``K`` axis.
    """
    log_w = jax.nn.log_softmax(logits, axis=-1)
    comps = ((log_w - log_scale).T[:, :, None], loc.T[:, :, None], jnp.exp(-log_scale).T[:, :, None])

    def log_joint(comp):
        lwd, mu, inv_s = comp
        z = (u - mu) * inv_s
        return z, lwd - 0.5 * z * z

    def peak_step(carry, comp):
        return jnp.maximum(carry, log_joint(comp)[1]), None

    peak = jax.lax.scan(peak_step, jnp.full(u.shape, -jnp.inf, u.dtype), comps)[0]

    def total_step(carry, comp):
        return carry + jnp.exp(log_joint(comp)[1] - peak), None

    total = jax.lax.scan(total_step, jnp.zeros(u.shape, u.dtype), comps)[0]
    count = jnp.broadcast_to(count, u.shape)
    log_lik = jnp.sum(count * (peak + jnp.log(total) - 0.5 * _LOG_2PI), axis=1)
    scaled = count / total

    def stats_step(_, comp):
        z, lj = log_joint(comp)
        e = jnp.exp(lj - peak)
        r = e * scaled
        rz = r * z
        second = rz * z if m2 is None else rz * z + (e / total) * m2 * (comp[2] * comp[2])
        return None, (jnp.sum(r, axis=1), jnp.sum(rz, axis=1), jnp.sum(second, axis=1))

    _, (n_k, sum_z, sum_zz) = jax.lax.scan(stats_step, None, comps)
    return log_lik, n_k, sum_z, sum_zz


def _m_step(stats, params, floor, n):
    """EM update from :func:`_e_step` statistics (``n`` points per column); scales floored at ``floor``."""
    _, loc, log_scale = params
    _, n_k, sum_z, sum_zz = (s if s.ndim == 1 else s.T for s in stats)
    counts = n_k + 10 * jnp.finfo(n_k.dtype).eps
    mean_z = sum_z / counts
    var_z = jnp.maximum(sum_zz / counts - mean_z * mean_z, 0.0)
    scale = jnp.exp(log_scale)
    new_log_scale = 0.5 * jnp.log(jnp.maximum(var_z * scale * scale, floor[:, None] ** 2))
    return (jnp.log(counts / n), loc + scale * mean_z, new_log_scale)


def _squarem(em, params, floor, tol, max_iter: int):
    """SQUAREM (S3) around ``em(params) -> (new_params, log_lik(params))``, per column.

    A cycle takes two EM steps ``p1 = em(p0)``, ``p2 = em(p1)``, extrapolates
    ``p' = p0 - 2 a r + a^2 v`` (``r = p1 - p0``, ``v = p2 - 2 p1 + p0``, ``a =
    -max(1, |r| / |v|)`` capped by a bound that grows while it binds) and
    takes one EM step from ``p'``; it keeps that step if ``p'`` is at least as
    likely as ``p1``, else falls back to ``p2`` (and shrinks the bound).
    Columns stop when their log-likelihood gains less than ``tol`` in a cycle;
    the loop stops when all have or after ``max_iter`` EM steps. The loop body
    holds a single EM step (a three-phase state machine), so it compiles once.
    """
    d = floor.shape[0]
    log_floor = jnp.log(floor)[:, None]

    def flat(p):
        return jnp.concatenate(p, axis=-1)

    def unflat(v):
        logits, loc, log_scale = jnp.split(v, 3, axis=-1)
        return jax.nn.log_softmax(logits, axis=-1), loc, jnp.maximum(log_scale, log_floor)

    def cond(s):  # once all columns are done, one more step gives the log-likelihood of the final point
        return (s["it"] < max_iter) & ~(jnp.all(s["done"]) & (s["phase"] == 1))

    def body(s):
        new, ll = em(unflat(s["cur"]))
        new = flat(new)
        phase, cur = s["phase"], s["cur"]
        # phase 1: extrapolate from (p0, p1, p2 = new).
        r, v = s["p1"] - s["p0"], new - 2 * s["p1"] + s["p0"]
        rr, vv = jnp.sum(r * r, axis=-1), jnp.sum(v * v, axis=-1)
        step = jnp.clip(jnp.where(vv > 0, jnp.sqrt(rr / jnp.where(vv > 0, vv, 1.0)), 1.0), 1.0, s["bound"])
        ext = flat(unflat(s["p0"] + 2 * step[:, None] * r + (step * step)[:, None] * v))
        # phase 2: keep em(p') if p' is at least as likely as p1, else p2.
        ok = ll >= s["ll1"]  # False for NaN
        chosen = jnp.where(ok[:, None], new, s["p2"])
        ll_now = jnp.where(ok, ll, s["ll1"])
        bound = jnp.where(
            ok, jnp.where(s["step"] >= s["bound"], 4 * s["bound"], s["bound"]), jnp.maximum(1.0, s["bound"] / 4)
        )
        chosen = jnp.where(s["done"][:, None], s["p0"], chosen)
        done = s["done"] | (jnp.abs(ll_now - s["ll_prev"]) <= tol) | (jnp.abs(ll_now - s["ll0"]) <= tol)
        p0, p1, p2 = (
            jnp.where(phase == 0, cur, s["p0"]),
            jnp.where(phase == 0, new, s["p1"]),
            jnp.where(phase == 1, new, s["p2"]),
        )
        return {
            "it": s["it"] + 1,
            "phase": (phase + 1) % 3,
            "cur": jnp.select([phase == 0, phase == 1], [new, ext], chosen),
            "p0": p0,
            "p1": p1,
            "p2": p2,
            "ll0": jnp.where(phase == 0, ll, s["ll0"]),
            "ll1": jnp.where(phase == 1, ll, s["ll1"]),
            "step": jnp.where(phase == 1, step, s["step"]),
            "bound": jnp.where(phase == 2, bound, s["bound"]),
            "ll_prev": jnp.where(phase == 2, jnp.where(done, s["ll_prev"], ll_now), s["ll_prev"]),
            "done": jnp.where(phase == 2, done, s["done"]),
        }

    dtype = params[0].dtype
    f = flat(params)
    vec = lambda value: jnp.full((d,), value, dtype)  # noqa: E731
    init = {
        "it": jnp.zeros((), jnp.int32), "phase": jnp.zeros((), jnp.int32), "cur": f, "p0": f, "p1": f, "p2": f,
        "ll0": vec(-jnp.inf), "ll1": vec(-jnp.inf), "step": vec(1.0), "bound": vec(1.0), "ll_prev": vec(-jnp.inf),
        "done": jnp.zeros((d,), bool),
    }  # fmt: skip
    s = jax.lax.while_loop(cond, body, init)
    # The last point, with a lower bound of its log-likelihood (an EM step never lowers it).
    phase = s["phase"]
    last = jnp.select([phase == 1, phase == 2], [s["p1"], s["p2"]], s["cur"])
    log_lik = jnp.select([phase == 1, phase == 2], [s["ll0"], s["ll1"]], s["ll_prev"])
    return unflat(last), log_lik, s["it"]
