"""Shared fixtures. Third-party plugins are not loaded under tests unless a test asks."""

from __future__ import annotations

import os

os.environ.setdefault("GAUSSPLUG_LOAD_PLUGINS", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gaussplug  # noqa: E402


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
