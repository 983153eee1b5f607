"""benchmarks/seeds.py: verdicts and the quick smoke run end to end (docs section: test_benchmarks_sections)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "seeds.py"


@pytest.fixture(scope="module")
def seeds(load_benchmark):
    return load_benchmark("seeds")


def test_verdict_uses_reference_precision(seeds):
    assert seeds.verdict(1.6574, 1.657) == "yes"
    assert "NO" in seeds.verdict(1.6576, 1.657)
    assert seeds.verdict(-1.6, -1.652, higher=True) == "yes"
    assert "NO" in seeds.verdict(-1.7, -1.652, higher=True)
    # Information-only rows never say NO, so they do not count as a miss in the summary.
    assert seeds.info_verdict(-1.6, -1.652, higher=True) == "info: as good"
    assert seeds.info_verdict(-1.7, -1.652, higher=True) == "info: worse"


def test_moons_log_prob_is_a_normalised_density_centred_on_the_moons(seeds):
    noise, step = 0.1, 0.02
    gx, gy = np.meshgrid(np.arange(-1.7, 2.7, step), np.arange(-1.2, 1.7, step))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    density = np.exp(seeds.moons_log_prob(grid, 200, noise))
    assert density.sum() * step**2 == pytest.approx(1.0, abs=1e-3)
    # The top of the outer moon (a centre) is far likelier than the empty middle between the moons.
    top, hole = seeds.moons_log_prob(np.array([[0.0, 1.0], [0.5, 0.25]]), 200, noise)
    assert top - hole > 5
    # Blocking does not change the values.
    np.testing.assert_allclose(seeds.moons_log_prob(grid[:50], 200, noise, rows=7),
                               seeds.moons_log_prob(grid[:50], 200, noise), rtol=1e-12)  # fmt: skip


def test_lead_text_states_the_lead_every_step_would_take(seeds):
    cold = np.full(600, 1.7)
    warm = cold - 0.05 + np.tile([0.01, -0.01], 300)  # last 500 steps: mean -0.05, sd exactly 0.01
    r1 = {"loss_cold": cold, "loss_warm": warm, "cold": {"train": 1.650}, "oracle": {"train": 1.611}}
    text = seeds.lead_text(r1)
    # z = Phi^-1(1 - 0.5 / 500) = 3.09: a lead of 0.031 nats, so warm at about 1.650 - 0.031 = 1.619.
    assert "is -0.050 with sd 0.010" in text and "a lead of 3.1 sd = 0.031" in text
    assert "about 1.619 against the cold run's 1.650, where the true density's is 1.611" in text
    assert seeds.lead_text({**r1, "loss_cold": cold[:1], "loss_warm": warm[:1]}) == ""


def test_every_step_rows_judge_the_training_nll_and_report_the_minibatch_count(seeds):
    cold = np.array([2.0, 1.8, 1.7, 1.66])  # step 0 and after each of 3 steps
    r1 = {"nll_cold": cold, "nll_warm": cold - [0.9, 0.1, 0.04, 0.03], "loss_cold": np.ones(3),
          "behind_steps": np.array([2])}  # fmt: skip
    (nll, batch) = seeds.every_step_rows(r1)
    assert nll[1:] == ("yes", "yes (smallest lead 0.030 nats)", "yes")
    assert batch[2:] == ("behind at 1 of 3 steps", "info: worse (minibatch noise, see below)")
    # One point with warm not below cold (a tie counts as behind) is a miss.
    r1["nll_warm"] = cold - [0.9, 0.1, 0.0, 0.03]
    nll, batch = seeds.every_step_rows({**r1, "behind_steps": np.array([], int)})
    assert nll[2:] == ("**NO**: behind at 1 of 4", "**NO**")
    assert batch[2:] == ("behind at 0 of 3 steps", "info: as good")


def test_oracle_is_the_true_nll_in_the_standardised_space_of_moons(seeds):
    from sklearn.datasets import make_moons

    n, noise = 400, 0.1
    tr_std, te_std = seeds.moons(n, noise)
    raw, _ = make_moons(n, noise=noise, random_state=0)
    mu, sd = raw.mean(0), raw.std(0)
    got = seeds.oracle(n, noise)
    for name, z in (("train", tr_std), ("test", te_std)):
        # Change of variables: p_z(z) = p_x(z * sd + mu) * prod(sd).
        want = -(seeds.moons_log_prob(z.astype(np.float64) * sd + mu, n, noise) + np.log(sd).sum()).mean()
        assert got[name] == pytest.approx(want, abs=1e-5)  # z is float32


# Four fine_tune compilations (about 10 s each on the 2-core CI box) plus three warm starts:
# 45-50 s on an idle machine, 75-110 s while other jobs share it, so not in the default run.
@pytest.mark.slow
def test_quick_run_writes_table_section_and_plots(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Someone else's section\nuntouched\n")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| experiment: quantity | seed / reference | ours | at least as good? |" in out
    for row in ("1 warm: train NLL after 10 steps", "2 warm: final loss", "3 warm: held-out NLL",
                "2 the same with PCA rotations", "1 warm below cold on the 50-step moving average",
                "1 warm below cold at every step: training NLL (full training set) after each step",
                "1 the same per minibatch: each step's minibatch loss (same minibatches)",
                "1 true density (oracle): train / held-out NLL", "2, 3 true density (oracle)",
                "2 warm with tail_weight=0.01: final loss / held-out NLL / worst held-out point"):
        assert row in out
    assert "| run | warm start (s) |" in out and "steps/s" in out
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\n## Someone else's section\nuntouched\n")
    section = text[text.index("<!-- seeds:start -->") : text.index("<!-- seeds:end -->")]
    assert "## Seed experiments" in section and "Quick smoke run" in section
    assert "| experiment: quantity |" in section and "final kernel == 0" in section
    assert "**holds**" in section  # the zero-kernel contract right after warm start
    assert "takes a lead of" in section and "where the true density's is" in section
    assert "training NLL of the whole training set (evaluated at step 0 and after each of the 10 steps)" in section
    assert "Held-out NLL above the true density's" in section and "gauss_keras (PEERS.md): 2 warm +0.050" in section
    for name in ("seeds_curves.png", "seeds_epochs.png", "seeds_densities.png"):
        png = tmp_path / "img" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](img/{name})" in section


@pytest.mark.slow
def test_sensitivity_quick_run_writes_its_section_and_restores_the_fit(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n<!-- seeds:start -->\nseeds\n<!-- seeds:end -->\n")
    script = ROOT / "benchmarks" / "seeds_sensitivity.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\n<!-- seeds:start -->\nseeds\n<!-- seeds:end -->\n")
    section = text[text.index("<!-- sensitivity:start -->") : text.index("<!-- sensitivity:end -->")]
    assert "| experiment | rotations | mixture EM | greedy train NLL | greedy held-out NLL |" in section
    assert section.count("| 2 | pca | ") == 4 and section.count("| 2 | ica | ") == 4 and "Quick smoke run" in section
    assert "| experiment | budget | steps | epoch loss | last 10 | held-out NLL |" in section
    assert all(f"| {e} | {k}x | " in section for e in "23" for k in range(1, 5))
    assert "experiment 2's epoch loss" in section and "experiment 3's epoch loss" in section
    assert "| experiment | run | key | greedy train NLL | final loss (last epoch) |" in section
    assert section.count("| 2 | reference recipe | 0 | ") == 1 and section.count("| 3 | reference recipe | 0 | ") == 1
    assert "Experiment 3: the recipe gives a final loss of " in section
    assert "| experiment | variant | fine_tune key | final loss (last epoch) | train NLL | held-out NLL |" in section
    assert section.count("| 2 | loc x 0.5 | ") == 2 and section.count("| 3 | 4 blocks of 2 couplings | ") == 2
    one_cycle = "fine_tune's default optimiser, peak = the seed's rate"
    assert section.count(f"| 2 | {one_cycle} | ") == 2 and section.count(f"| 3 | {one_cycle} | ") == 2
    assert "Experiment 2: 0 of 10 runs reach the seed's final loss 1.149" in section  # quick: one epoch
    assert "With fine_tune's default optimiser, same keys: experiment 2's final loss is " in section
    assert "; experiment 3's final loss is " in section and "(constant Adam " in section
