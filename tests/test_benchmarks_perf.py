"""benchmarks/perf.py: the quick smoke run end to end (no timing assertions)."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "perf.py"


def test_quick_run_writes_table_section_and_plots(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Someone else's section\nuntouched\n")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| target | limit | measured (median) |" in proc.stdout
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\n## Someone else's section\nuntouched\n")
    section = text[text.index("<!-- perf:start -->") : text.index("<!-- perf:end -->")]
    assert "Quick smoke run" in section and "python benchmarks/perf.py --quick --out" in section
    for needle in ("1 warm start", "sklearn", "2 moons fine-tune", "3 sample", "round-trip error",
                   "5 warm start peak memory", "log-log slope", "Where the memory goes"):  # fmt: skip
        assert needle in section, needle
    for name in ("perf_vs_n.png", "perf_vs_dim.png"):
        assert (tmp_path / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](img/{name})" in section
