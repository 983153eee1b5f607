"""Docs stay true: every hook is documented, the README's commands are the ones CI runs."""

import inspect
import pathlib
import re

from gaussplug import hookspecs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_hook_documented_with_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("gaussplug_") and callable(f)]
    assert hooks
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({params})`" in doc, name


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    test_cmd = [c.strip() for c in commands if "pytest" in c]
    assert test_cmd, "README must give the test command in a bash block"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd[0] in ci
