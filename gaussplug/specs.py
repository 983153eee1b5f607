"""Ready-made spec dicts for common architectures.

Example:
  >>> from gaussplug import specs
  >>> spec = specs.gaussianization_flow(2, n_layers=3)
  >>> spec["layers"][0]["repeat"]
  3
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gaussplug._mixture import MAX_COMPONENTS
from gaussplug._scalars import as_scalar, int_at_least, is_number

__all__ = ["ROTATIONS", "coupling_flow", "gaussianization_flow"]

#: How the warm start can fit a rotation (the ``householder`` and ``rotation`` families' ``method`` option).
ROTATIONS = ("pca", "random", "ica")


def _rotation(value: Any) -> str:
    if not isinstance(value, str) or value not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}; got {value!r}.")
    return value


def _hidden(value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ValueError(f"hidden: expected a sequence of positive integers (the MLP's hidden sizes, e.g. (64, 64)); "
                         f"got {value!r}.")
    return [int_at_least(f"hidden[{i}]", h) for i, h in enumerate(value)]


def _components(value: Any) -> int:
    k = int_at_least("n_components", value)
    if k > MAX_COMPONENTS:
        raise ValueError(f"n_components: expected at most {MAX_COMPONENTS} per dimension (the mixture families' "
                         f"limit); got {k}.")
    return k


def _tail_weight(value: Any) -> float:
    value = as_scalar(value)
    if not (is_number(value) and 0 <= value < 1):  # NaN fails 0 <= value
        raise ValueError(f"tail_weight: expected a number in [0, 1) (the weight of the fixed N(0, 1) component in "
                         f"every mixture CDF; 0 for none); got {value!r}.")
    return float(value)


def gaussianization_flow(
    dim: int,
    *,
    n_layers: int = 8,
    n_components: int = 8,
    reflectors: int | None = None,
    rotation: str = "pca",
    tail_weight: float = 0.0,
) -> dict[str, Any]:
    """RBIG-style blocks: a Householder rotation, then per-dimension mixture CDFs.

    Args:
      dim: Data dimension.
      n_layers: Number of (rotation, marginal) blocks.
      n_components: Gaussian-mixture components per dimension.
      reflectors: Householder reflectors per rotation (default: ``dim``).
      rotation: How the warm start fits each rotation: ``"pca"``, ``"random"`` or ``"ica"``.
      tail_weight: Weight of the fixed ``N(0, 1)`` component in every mixture CDF
        (``mixture_cdf`` option; ``0``, the default, leaves it out of the spec).

    Returns:
      A spec dict for :func:`gaussplug.build_flow`.

    Raises:
      ValueError: An argument out of range, named in the message (checked here,
        not first when the spec is built).

    Example:
      >>> from gaussplug import specs
      >>> specs.gaussianization_flow(2, n_layers=4, n_components=3, tail_weight=0.01)  # doctest: +NORMALIZE_WHITESPACE
      {'dim': 2, 'layers': [{'repeat': 4, 'layers': [{'family': 'householder'},
                             {'family': 'mixture_cdf', 'components': 3, 'tail_weight': 0.01}]}]}
    """
    dim = int_at_least("dim", dim)
    householder: dict[str, Any] = {"family": "householder"}
    if reflectors is not None:
        householder["reflectors"] = int_at_least("reflectors", reflectors)
        if householder["reflectors"] > dim:
            raise ValueError(f"reflectors: expected at most dim = {dim} (any rotation is a product of at most dim "
                             f"reflections); got {householder['reflectors']}.")
    if _rotation(rotation) != "pca":
        householder["method"] = rotation
    marginal: dict[str, Any] = {"family": "mixture_cdf", "components": _components(n_components)}
    if _tail_weight(tail_weight) != 0:
        marginal["tail_weight"] = float(tail_weight)
    block = [householder, marginal]
    return {"dim": dim, "layers": [{"repeat": int_at_least("n_layers", n_layers), "layers": block}]}


def coupling_flow(
    dim: int,
    *,
    n_layers: int = 4,
    n_components: int = 8,
    hidden: Sequence[int] = (64, 64),
    tail_weight: float = 0.0,
) -> dict[str, Any]:
    """Blocks of a fixed PCA rotation followed by a mixture-CDF coupling layer.

    Successive coupling layers alternate which half they transform.

    Args:
      dim: Data dimension (at least 2).
      n_layers: Number of (rotation, coupling) blocks.
      n_components: Gaussian-mixture components per transformed dimension.
      hidden: Hidden sizes of each coupling layer's MLP conditioner.
      tail_weight: Weight of the fixed ``N(0, 1)`` component in every mixture CDF
        (``mixture_cdf_coupling`` option; ``0``, the default, leaves it out of the spec).

    Returns:
      A spec dict for :func:`gaussplug.build_flow`.

    Raises:
      ValueError: An argument out of range, named in the message (checked here,
        not first when the spec is built).

    Example:
      >>> from gaussplug import specs
      >>> specs.coupling_flow(2, n_layers=2, hidden=(32,))  # doctest: +NORMALIZE_WHITESPACE
      {'dim': 2, 'layers': [{'repeat': 2, 'layers': [{'family': 'rotation', 'method': 'pca'},
                             {'family': 'mixture_cdf_coupling', 'components': 8, 'hidden': [32]}]}]}
    """
    dim = int_at_least("dim", dim)
    if dim < 2:
        raise ValueError(f"dim: a coupling flow needs at least 2 dimensions; got {dim}.")
    coupling: dict[str, Any] = {
        "family": "mixture_cdf_coupling",
        "components": _components(n_components),
        "hidden": _hidden(hidden),
    }
    if _tail_weight(tail_weight) != 0:
        coupling["tail_weight"] = float(tail_weight)
    block = [{"family": "rotation", "method": "pca"}, coupling]
    return {"dim": dim, "layers": [{"repeat": int_at_least("n_layers", n_layers), "layers": block}]}
