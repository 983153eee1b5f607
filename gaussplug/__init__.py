"""gaussplug: plugin-based Gaussianization flows on JAX + Distrax.

Only the names re-exported here are public; modules starting with an
underscore are private.
"""

from gaussplug import information, specs, testing  # noqa: E402  (public submodules)
from gaussplug._bijector import VectorBijector, clip_overflow
from gaussplug._caches import clear_caches
from gaussplug._errors import (
    DataError,
    DataWarning,
    FitError,
    GaussplugError,
    NonFiniteWarning,
    PluginError,
    SpecError,
)
from gaussplug._family import Family
from gaussplug._flow import Flow, build_flow
from gaussplug._inspect import InspectionReport, inspect, pushforward
from gaussplug._io import load, save
from gaussplug._plugins import families, get_registry, list_plugins, register, unregister
from gaussplug._registry import FamilyInfo, GaussplugPluginWarning, Registry
from gaussplug._sharding import fit_mesh
from gaussplug._train import TrainingWarning, fine_tune
from gaussplug._warm import WarmStartWarning, fit_rbig, warm_start, warm_start_history
from gaussplug.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DataWarning",
    "Family",
    "FamilyInfo",
    "FitError",
    "Flow",
    "GaussplugError",
    "GaussplugPluginWarning",
    "InspectionReport",
    "NonFiniteWarning",
    "PluginError",
    "Registry",
    "SpecError",
    "TrainingWarning",
    "VectorBijector",
    "WarmStartWarning",
    "build_flow",
    "clear_caches",
    "clip_overflow",
    "families",
    "fine_tune",
    "fit_mesh",
    "fit_rbig",
    "get_registry",
    "hookimpl",
    "information",
    "inspect",
    "list_plugins",
    "load",
    "pushforward",
    "register",
    "save",
    "specs",
    "testing",
    "unregister",
    "warm_start",
    "warm_start_history",
]
