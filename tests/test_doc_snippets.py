"""The ```python blocks of README.md and docs/*.md run, so the examples cannot rot.

A page's blocks run in order in one shared namespace (a later block may use names from an earlier
one), in a temporary working directory. A failure names the page and the line of the block's
opening fence, and the traceback points at the page's own line numbers.

Opting a block out: put ``<!-- doc-test: skip (reason) -->`` on the line right before its fence.
Keep that for blocks that cannot run here (several processes, a fresh interpreter, a GPU, the
network); a reason is required.

Two things the pages leave to the reader are supplied here, per page, and are kept small:

* ``CONTEXT``: the names a page's prose presumes (the reader's data ``x``, their ``flow``), made
  in a namespace of their own; only the listed names are passed on, so a page must still import
  what it uses.
* ``SHRINK``: training budgets (``steps=``) cut for the test. Each replaced text must still occur on
  its page, so a change to the page shows up here instead of silently running the full budget.
"""

from __future__ import annotations

import dataclasses
import linecache
import os
import pathlib
import re
import textwrap
import warnings

import pytest

import gaussplug

ROOT = pathlib.Path(__file__).resolve().parents[1]

_OPEN_FENCE = re.compile(r"^(`{3,})\s*(\S*)")
_MARKER = re.compile(r"^<!--\s*doc-test:\s*skip\s*\((?P<reason>.*)\)\s*-->$")

# Names the pages' prose presumes: page -> (names passed on, code that makes them).
CONTEXT: dict[str, tuple[tuple[str, ...], str]] = {
    "docs/scaling.md": (
        ("x", "x_val", "flow", "shard_paths"),
        """
        import numpy as np
        from sklearn.datasets import make_moons

        import gaussplug

        data, _ = make_moons(3500, noise=0.08, random_state=0)
        data = ((data - data.mean(0)) / data.std(0)).astype(np.float32)
        x, x_val = data[:3000], data[3000:]
        flow = gaussplug.build_flow(gaussplug.specs.gaussianization_flow(2, n_layers=8))
        np.save("train.npy", x)
        shard_paths = []
        for i in range(2):                    # two shards of 1024 rows: two batches of 512 each
            np.save(f"shard{i}.npy", x[1024 * i : 1024 * (i + 1)])
            shard_paths.append(f"shard{i}.npy")
        """,
    ),
}

# Training budgets cut for the test: page -> {text on the page: replacement}.
SHRINK: dict[str, dict[str, str]] = {
    "README.md": {"steps=3000": "steps=100"},
    "docs/guide.md": {"steps=3000": "steps=100"},
    "docs/scaling.md": {
        "steps=3000": "steps=50",
        "steps=20_000": "steps=50",
        "steps=5000": "steps=4",  # the four batches the two context shards hold
    },
}

# Pages whose blocks, even with SHRINK, cost 25 s or more (mostly compiling several fine-tuning runs):
# run by `pytest -m slow` / `nox -s slow`, not by default. The guide, the page most read, runs by default.
SLOW = {"docs/scaling.md"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One ```python block: where its fence is, its code, and why it is opted out (``None``: it runs)."""

    fence_line: int
    source: str
    skip: str | None


def parse_blocks(text: str, name: str) -> list[Block]:
    """The ```python blocks of a markdown text, in order; raises ``ValueError`` for a misplaced or bad marker."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("<!--") and "doc-test" in line:
            match = _MARKER.match(line)
            if match is None:
                raise ValueError(f"{name}:{i + 1}: malformed marker {line!r}; write <!-- doc-test: skip (reason) -->")
            if not match["reason"].strip():
                raise ValueError(f"{name}:{i + 1}: a doc-test skip needs a reason")
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if _OPEN_FENCE.match(following) is None or _OPEN_FENCE.match(following)[2] != "python":
                raise ValueError(f"{name}:{i + 1}: a doc-test marker must be right before a ```python fence")
        fence = _OPEN_FENCE.match(line)
        if fence is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence[1]:
            end += 1
        if end == len(lines):
            raise ValueError(f"{name}:{i + 1}: code fence never closed")
        if fence[2] == "python":
            marker = _MARKER.match(lines[i - 1].strip()) if i > 0 else None
            source = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(i + 1, source, marker["reason"].strip() if marker else None))
        i = end + 1
    return blocks


def run_blocks(name: str, blocks: list[Block], namespace: dict, shrink: dict[str, str] | None = None) -> None:
    """Runs the blocks not opted out, in order, in ``namespace``; a failure names the page and the block's line."""
    shrink = shrink or {}
    for old in shrink:
        assert any(old in b.source for b in blocks if b.skip is None), (
            f"{name}: SHRINK expects {old!r} on the page; update SHRINK in {pathlib.Path(__file__).name}"
        )
    for block in blocks:
        if block.skip is not None:
            continue
        source = block.source
        for old, new in shrink.items():
            source = source.replace(old, new)
        filename = f"{name} (block at line {block.fence_line})"
        # Pad so that traceback line numbers are the page's; register the text so tracebacks show it.
        padded = "\n" * block.fence_line + source
        linecache.cache[filename] = (len(padded), None, padded.splitlines(True), filename)
        try:
            with warnings.catch_warnings():
                if shrink:  # a cut budget can leave the warm start unbeaten on validation: that warning is the cut's
                    warnings.filterwarnings("ignore", "fine_tune: no evaluation improved", gaussplug.TrainingWarning)
                exec(compile(padded, filename, "exec"), namespace)
        except Exception as err:
            raise AssertionError(
                f"{name}, block at line {block.fence_line} failed: {type(err).__name__}: {err}"
            ) from err


def _pages() -> list[str]:
    pages = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
    # Only look for a fence here: a bad marker then fails its page's test, not the collection.
    return [p for p in pages if re.search(r"^```python", (ROOT / p).read_text(), flags=re.M)]


PAGES = _pages()


def test_pages_found():
    """The pages with examples are all collected, and every CONTEXT/SHRINK/SLOW entry names one of them."""
    names = ("guide", "plugins", "design", "information", "inspection", "scaling")
    assert {"README.md", *(f"docs/{n}.md" for n in names)} <= set(PAGES)
    assert set(CONTEXT) | set(SHRINK) | SLOW <= set(PAGES)


@pytest.mark.filterwarnings("error::gaussplug.TrainingWarning")
@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p for p in PAGES])
def test_doc_snippets(page, tmp_path, monkeypatch, fresh_registry):
    """Runs ``page``'s ```python blocks in order in one namespace, in a temporary directory."""
    blocks = parse_blocks((ROOT / page).read_text(), page)
    if all(b.skip is not None for b in blocks):
        pytest.skip(f"{page}: every block opted out: " + "; ".join(b.skip for b in blocks))
    monkeypatch.chdir(tmp_path)
    environ = dict(os.environ)
    try:
        namespace = {"__name__": "__doc_snippets__"}
        if page in CONTEXT:
            names, setup = CONTEXT[page]
            made: dict = {}
            exec(textwrap.dedent(setup), made)
            namespace.update({n: made[n] for n in names})
        run_blocks(page, blocks, namespace, SHRINK.get(page))
    finally:
        if dict(os.environ) != environ:  # a block must not leak settings into later tests
            os.environ.clear()
            os.environ.update(environ)


def test_markers_and_failures_are_reported():
    """Skipped blocks do not run, bad markers are refused, and a failure names the page and the block's line."""
    text = textwrap.dedent(
        """\
        # Page

        ```python
        a = 1
        ```

        <!-- doc-test: skip (needs a cluster) -->
        ```python
        raise RuntimeError("opted out, never run")
        ```

        ```bash
        echo not python
        ```

        ```python
        b = a + 1
        c = b / 0
        ```
        """
    )
    blocks = parse_blocks(text, "page.md")
    assert [(b.fence_line, b.skip) for b in blocks] == [(3, None), (8, "needs a cluster"), (16, None)]
    namespace: dict = {}
    with pytest.raises(AssertionError, match=r"page\.md, block at line 16 failed: ZeroDivisionError") as info:
        run_blocks("page.md", blocks, namespace)
    assert namespace["b"] == 2  # the later block saw the earlier one's names
    tb = info.value.__cause__.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_filename == "page.md (block at line 16)" and tb.tb_lineno == 18

    for bad in ("<!-- doc-test: skip () -->\n```python\n```\n", "<!-- doc-test: skip (x) -->\n\n```python\n```\n"):
        with pytest.raises(ValueError, match="page.md:1"):
            parse_blocks(bad, "page.md")
    with pytest.raises(AssertionError, match="SHRINK expects 'steps=9'"):
        run_blocks("page.md", blocks, {}, {"steps=9": "steps=1"})
