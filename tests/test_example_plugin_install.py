"""The example plugin in plugins/examples/gaussplug-rqs installs with pip and is found by entry point.

The plugin is pip-installed (``--no-deps --target``, no network) into a temporary
folder, and a fresh interpreter with ``PYTHONPATH`` set to that folder checks
what ``gaussplug.families()`` sees under ``GAUSSPLUG_LOAD_PLUGINS``.

The install is ``pip install --no-deps --no-index --no-build-isolation --target DIR
plugins/examples/gaussplug-rqs`` (no network; the test extra pins a setuptools
that builds wheels itself).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "plugins" / "examples" / "gaussplug-rqs"
TIMEOUT = 120

# Run in a fresh interpreter: prints the sorted family names, then one JSON line
# about the installed plugin and (if it is loaded) a flow that uses it.
PROBE = textwrap.dedent(
    """
    import json, warnings
    warnings.simplefilter("ignore")
    import numpy as np
    import gaussplug
    fams = gaussplug.families()
    print(json.dumps(sorted(fams)))
    info = {"plugins": sorted(p["name"] for p in gaussplug.list_plugins())}
    if "rqs_spline" in fams:
        import gaussplug_rqs
        info["module"] = gaussplug_rqs.__file__
        info["version"] = fams["rqs_spline"].version
        spec = {"dim": 2, "layers": [{"family": "householder"}, {"family": "rqs_spline", "bins": 4}]}
        flow = gaussplug.build_flow(spec)
        x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
        info["layers"] = list(flow.layer_names)
        info["log_prob_finite"] = bool(np.isfinite(np.asarray(flow.log_prob(x))).all())
    print(json.dumps(info))
    """
)


def _pip(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A folder holding the example plugin as pip installed it (``--target``)."""
    work = tmp_path_factory.mktemp("rqs-install")
    # Build from a copy, so that pip's in-tree build leaves no build/ or *.egg-info in the repo.
    src = work / "src"
    shutil.copytree(
        PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests")
    )
    target = work / "site"
    common = ("install", "--no-deps", "--no-index", "--target", str(target))
    _pip(*common, "--no-build-isolation", str(src), cwd=work)
    assert (target / "gaussplug_rqs" / "__init__.py").exists()
    assert (target / "gaussplug_rqs-0.1.0.dist-info" / "entry_points.txt").exists()
    return target


def probe(target: Path, allow: str | None) -> tuple[list[str], dict]:
    """Runs :data:`PROBE` with ``PYTHONPATH=target`` and the given allow-list."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GAUSSPLUG_LOAD_PLUGINS")}
    env["PYTHONPATH"] = str(target)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if allow is not None:
        env["GAUSSPLUG_LOAD_PLUGINS"] = allow
    res = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=target.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, f"probe failed:\n{res.stdout}\n{res.stderr}"
    families_line, info_line = res.stdout.strip().splitlines()[-2:]
    return json.loads(families_line), json.loads(info_line)


def test_entry_point_metadata_as_installed(installed):
    dist = importlib.metadata.Distribution.at(installed / "gaussplug_rqs-0.1.0.dist-info")
    assert dist.metadata["Name"] == "gaussplug-rqs" and dist.version == "0.1.0"
    (ep,) = [ep for ep in dist.entry_points if ep.group == "gaussplug"]
    assert (ep.name, ep.value) == ("rqs_spline", "gaussplug_rqs")
    assert any(req.startswith("gaussplug") for req in dist.requires or [])


@pytest.mark.parametrize("allow", ["rqs_spline", None], ids=["allow-listed", "env-unset"])
def test_installed_plugin_is_loaded_and_usable(installed, allow):
    families, info = probe(installed, allow)
    assert {"rqs_spline", "householder"} <= set(families)
    assert "rqs_spline" in info["plugins"]
    assert Path(info["module"]).resolve().is_relative_to(installed.resolve())
    assert info["version"] == "0.1.0"
    assert info["layers"] == ["0_householder", "1_rqs_spline"]
    assert info["log_prob_finite"]


@pytest.mark.parametrize("allow", ["", "some_other_plugin"], ids=["empty", "other-name"])
def test_installed_plugin_is_not_loaded_unless_allowed(installed, allow):
    families, info = probe(installed, allow)
    assert "householder" in families
    assert "rqs_spline" not in families
    assert "rqs_spline" not in info["plugins"]
