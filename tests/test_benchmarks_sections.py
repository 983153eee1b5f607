"""benchmarks/_sections.py through each script's ``write_section``: its own section of docs/benchmarks.md only."""

import pytest

SCRIPTS = [("seeds", "seeds"), ("perf", "perf"), ("suite_report", "suite")]


@pytest.fixture(params=SCRIPTS, ids=[s for s, _ in SCRIPTS])
def script(request, load_benchmark):
    module_name, section = request.param
    return load_benchmark(module_name), section


def test_section_replaces_only_between_its_markers(script, tmp_path):
    mod, _ = script
    path = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n<!-- other:start -->\nother text\n<!-- other:end -->\n\n"
    after = "\n\n## Later\nkeep me too\n"
    path.write_text(f"{before}{mod.START}\nold text\n{mod.END}{after}")
    mod.write_section(path, "## Section\nnew")
    assert path.read_text() == f"{before}{mod.START}\n## Section\nnew\n{mod.END}{after}"
    mod.write_section(path, "## Section\nnewer")  # idempotent shape
    text = path.read_text()
    assert text.count(mod.START) == 1 and "newer" in text and text.endswith(after)


def test_section_created_or_appended(script, tmp_path):
    mod, _ = script
    created = tmp_path / "sub" / "new.md"
    mod.write_section(created, "body")
    assert created.read_text() == f"# Benchmarks\n\n{mod.START}\nbody\n{mod.END}\n"
    other = tmp_path / "other.md"
    other.write_text("# Benchmarks\n\n## Someone else's\ntext\n")
    mod.write_section(other, "body")
    assert other.read_text() == f"# Benchmarks\n\n## Someone else's\ntext\n\n{mod.START}\nbody\n{mod.END}\n"


def test_malformed_markers_refused(script, tmp_path):
    mod, section = script
    path = tmp_path / "b.md"
    original = f"x\n{mod.END}\ny\n{mod.START}\n"
    path.write_text(original)
    with pytest.raises(SystemExit, match=f"malformed {section} markers"):
        mod.write_section(path, "body")
    assert path.read_text() == original


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu sse2 avx avx2 avx512f avx512bw", "AVX-512"), ("fpu sse2 avx avx2 fma", "AVX2"), ("sse2 avx", "AVX"),
     ("fp asimd sve", None), ("", None)],
)  # fmt: skip
def test_vector_isa_names_the_widest_extension(load_benchmark, flags, expected):
    assert load_benchmark("_sections").vector_isa(flags) == expected


def test_machine_line_names_the_vector_extension(load_benchmark, monkeypatch):
    sections = load_benchmark("_sections")
    monkeypatch.setattr(sections, "_cpuinfo", {"model name": "Some CPU", "flags": "sse2 avx avx2"}.get)
    assert sections.cpu_label() == "Some CPU (AVX2)"
    assert sections.cpu().startswith("Some CPU (AVX2), ")
    monkeypatch.setattr(sections, "_cpuinfo", {"model name": "Other CPU"}.get)
    assert sections.cpu_label() == "Other CPU"
