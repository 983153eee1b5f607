"""Exceptions raised, and general warnings issued, by gaussplug, and how their messages show a value."""

from __future__ import annotations


class GaussplugError(Exception):
    """Base class of every error gaussplug raises on purpose."""


class SpecError(GaussplugError, ValueError):
    """A flow spec (dict, JSON or YAML) is malformed.

    The message names the offending layer path (e.g. ``layers[0].layers[1]``),
    the bad key or value, and what would have been accepted.
    """


class PluginError(GaussplugError):
    """A plugin is broken, clashes with another, or is missing."""


class DataError(GaussplugError, ValueError):
    """Input data cannot be used as given.

    Wrong shape or dtype, NaN or inf values, values beyond the float32 range of a float32 flow,
    constant columns where a fit needs spread, or a data file that cannot be read. The message
    names how many rows are affected and the first one.
    """


class FitError(GaussplugError):
    """A family's greedy ``fit`` failed: it raised, or returned params of the wrong structure or non-finite ones.

    Also raised when the data reach a layer with a log-likelihood of -inf. The message names the
    layer, its family and plugin.
    """


class DataWarning(UserWarning):
    """Data or params that gaussplug accepts but had to change, or that look wrong for the task.

    For example: float64 params rounded to float32 on load, or tied columns passed to an
    information estimate. The message says what happened and how to avoid it.
    """


class NonFiniteWarning(RuntimeWarning):
    """A result gaussplug returns holds +-inf or NaN that it could not avoid (e.g. samples beyond the float range)."""


#: Longest value an error message shows whole: a damaged file or a stray cell may hold anything.
SHOWN_CHARS = 80


def shown(value) -> str:
    """``repr(value)`` as messages show it: cut to :data:`SHOWN_CHARS` characters, saying how long it was.

    Example:
      >>> shown("x" * 100)
      "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (102 characters)"
    """
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"
