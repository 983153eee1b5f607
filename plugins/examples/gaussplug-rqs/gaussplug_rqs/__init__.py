"""gaussplug-rqs: an example third-party gaussplug plugin.

It provides one layer family, ``rqs_spline``: per-dimension monotone
rational-quadratic splines built on ``distrax.RationalQuadraticSpline``, with
a quantile-matching greedy fit. gaussplug finds it through the entry point
``[project.entry-points.gaussplug] rqs_spline = "gaussplug_rqs"``; this module
holds the ``gaussplug_register_families`` hookimpl.
"""

from gaussplug_rqs._rqs import (
    FAMILY,
    MIN_BIN_SIZE,
    MIN_KNOT_SLOPE,
    RQSplineBijector,
    fit_rqs_spline,
    gaussplug_register_families,
    make_rqs_spline,
    raw_spline_params,
    validate,
)

__version__ = "0.1.0"

__all__ = [
    "FAMILY",
    "MIN_BIN_SIZE",
    "MIN_KNOT_SLOPE",
    "RQSplineBijector",
    "fit_rqs_spline",
    "gaussplug_register_families",
    "make_rqs_spline",
    "raw_spline_params",
    "validate",
]
