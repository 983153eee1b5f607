"""Shared fixtures. Third-party plugins are not loaded under tests unless a test asks."""

from __future__ import annotations

import os

os.environ.setdefault("GAUSSPLUG_LOAD_PLUGINS", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gaussplug  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """After each test module, drop every compiled function (JAX's caches and gaussplug's).

    Each XLA:CPU executable holds memory mappings; the whole suite in one process compiles thousands of them, and
    near the kernel's limit (vm.max_map_count, 65530 by default) XLA's compiler crashes with a segfault.
    """
    yield
    gaussplug.clear_caches()


@pytest.fixture
def fresh_registry():
    """A private registry with only the built-ins, swapped in for the test."""
    from gaussplug._plugins import set_registry

    registry = gaussplug.Registry(load_entry_points=False)
    old = set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(old)


@pytest.fixture
def moons():
    """Standardised two-moons data (small)."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(600, noise=0.08, random_state=0)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


@pytest.fixture(scope="module")
def load_benchmark():
    """``load(name)``: imports ``benchmarks/<name>.py`` as a module (removed from ``sys.modules`` afterwards)."""
    import importlib.util
    import pathlib
    import sys

    loaded = []

    def load(name: str):
        path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        loaded.append(spec.name)
        spec.loader.exec_module(module)
        return module

    try:
        yield load
    finally:
        for name in loaded:
            sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def run_on_four_devices():
    """``run(script, path)``: runs ``script`` (with ``PATH = path`` prepended) in a subprocess with 4 CPU devices.

    The script prints one line ``RESULT <json>``; its parsed JSON is returned.
    """
    import json
    import subprocess
    import sys

    def run(script: str, path) -> dict:
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
        code = f"PATH = {str(path)!r}\n" + script
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT ") :])

    return run
