"""What every benchmark script shares: its own section of ``docs/benchmarks.md``, and the machine it ran on."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform


def markers(name: str) -> tuple[str, str]:
    """The ``<!-- name:start -->`` / ``<!-- name:end -->`` pair that delimits a script's section."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: pathlib.Path, name: str, body: str) -> None:
    """Replaces the text between ``name``'s markers in ``path`` (or appends / creates), leaving the rest untouched.

    Raises:
      SystemExit: If the markers are there but malformed (one missing, swapped or repeated).
    """
    start, end = markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    path = pathlib.Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Benchmarks\n\n{block}\n")
        return
    text = path.read_text()
    i, j = text.find(start), text.find(end)
    if i < 0 and j < 0:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    elif i < 0 or j < i or text.count(start) > 1 or text.count(end) > 1:
        raise SystemExit(f"{path}: malformed {name} markers; expected one {start} followed by one {end}.")
    else:
        text = text[:i] + block + text[j + len(end) :]
    path.write_text(text)


def _cpuinfo(key: str) -> str | None:
    """The first ``key`` field of ``/proc/cpuinfo`` (``None`` where there is no such file or field)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` where there is one)."""
    return _cpuinfo("model name") or platform.processor() or "unknown CPU"


def vector_isa(flags: str | None = None) -> str | None:
    """The widest x86 vector extension among ``flags`` (``/proc/cpuinfo``'s by default): ``"AVX-512"`` ...

    XLA and the BLAS compile for what the CPU has, so float results can differ in the last bits between
    machines with the same model name; chaotic computations (greedy RBIG on two moons) amplify that.

    Example:
      >>> vector_isa("fpu sse2 avx avx2 fma"), vector_isa("fp asimd"), vector_isa("")
      ('AVX2', None, None)
    """
    words = set(((_cpuinfo("flags") or "") if flags is None else flags).split())
    for name, flag in (("AVX-512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx")):
        if flag in words:
            return name
    return None


def cpu_label() -> str:
    """The CPU's model name with its widest vector extension, e.g. ``"AMD EPYC (AVX-512)"``."""
    isa = vector_isa()
    return f"{cpu_model()} ({isa})" if isa else cpu_model()


def cpu() -> str:
    """:func:`cpu_label`, usable cores and the load average when called (the machine is shared)."""
    model = cpu_label()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f"; load average at start {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{model}, {cores} cores{load}"


def versions(packages) -> str:
    """``Python X, pkg version, ...`` for the given distributions (``not installed`` where missing)."""
    out = [f"Python {platform.python_version()}"]
    for p in packages:
        try:
            out.append(f"{p} {importlib.metadata.version(p)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{p} not installed")
    return ", ".join(out)
