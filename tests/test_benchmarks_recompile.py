"""benchmarks/recompile.py: the quick smoke run end to end (no timing assertions)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "recompile.py"


@pytest.mark.slow
def test_quick_run_writes_its_table_into_its_own_section(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Someone else's section\nuntouched\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True,
                          text=True, env=dict(os.environ), timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\n## Someone else's section\nuntouched\n")
    section = text[text.index("<!-- recompile:start -->") : text.index("<!-- recompile:end -->")]
    assert "Quick smoke run" in section and "python benchmarks/recompile.py --quick --out" in section
    for call in ("`log_prob`", "`sample`", "`warm_start`", "`fine_tune`"):
        assert section.count(f"| {call} |") == 1, call
    assert "690 rows (same bucket): buckets / none" in section and "x faster |" in section
