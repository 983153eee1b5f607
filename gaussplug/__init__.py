"""gaussplug: plugin-based Gaussianization flows on JAX + Distrax."""

from gaussplug._bijector import VectorBijector
from gaussplug._errors import DataError, FitError, GaussplugError, PluginError, SpecError
from gaussplug._family import Family
from gaussplug.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "Family",
    "FitError",
    "GaussplugError",
    "PluginError",
    "SpecError",
    "VectorBijector",
    "hookimpl",
]
