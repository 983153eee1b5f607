"""The :class:`Family` record: one registered kind of layer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gaussplug._json import to_json

__all__ = ["FIT_WROTE_INPUT", "Family", "fit_input", "fit_wrote_input"]

MakeBijector = Callable[..., Any]
FitFn = Callable[..., Any]
#: Said when a family's ``fit`` writes into the data it is given (see :func:`fit_input`).
FIT_WROTE_INPUT = (
    "fit must not modify the data x it is given (gaussplug passes it read-only: it is the caller's array or the "
    "warm start's own buffer); work on a copy instead, e.g. x = np.array(x)"
)


def fit_input(x) -> np.ndarray:
    """``x`` as a family's ``fit`` receives it: a read-only NumPy view of the same memory (no copy).

    The rows given to ``fit`` are the caller's array (the first layer) or the buffer the warm start
    pushes through the later layers; a ``fit`` that wrote into them would change the user's data and
    every layer after it. A read-only view makes such a write fail at once, where it is made.

    Example:
      >>> import numpy as np
      >>> x = np.zeros((3, 2))
      >>> fit_input(x).flags.writeable, np.shares_memory(fit_input(x), x), x.flags.writeable
      (False, True, True)
    """
    view = np.asarray(x).view()
    view.flags.writeable = False
    return view


def fit_wrote_input(err: BaseException) -> bool:
    """Whether ``err`` is NumPy's error for a write into a read-only array (a ``fit`` writing into its ``x``)."""
    return isinstance(err, ValueError) and "read-only" in str(err)


#: Option names that would clash with the spec's "family" key or make_bijector's first argument.
_RESERVED_OPTIONS = ("family", "dim")


@dataclasses.dataclass(frozen=True)
class Family:
    """A layer family: how to build its bijector and how to fit it greedily.

    Args:
      name: Registry name used in spec dicts (``{"family": name, ...}``).
      make_bijector: ``make_bijector(dim, **options) -> distrax.Bijector``.
        Called inside a Haiku transform; it creates its parameters with
        ``hk.get_parameter`` or Haiku modules and returns a *data-to-latent*
        bijector acting on vectors of size ``dim`` (event_ndims_in=1).
        Parameters must be created eagerly (when ``make_bijector`` runs), so
        that ``hk.transform(lambda: make_bijector(dim, **options)).init(key)``
        yields the layer's full params.
      fit: Optional greedy initialiser
        ``fit(x, params, *, key, **options) -> params``. ``x`` is the data
        arriving at the layer, shape ``(n, dim)``; ``params`` the layer's
        current Haiku params. It returns *new* params of the same structure,
        shapes and dtypes (never mutating its inputs: ``x`` arrives read-only,
        and the conformance suite checks that ``params`` is left as it was).
      options: Accepted options and their defaults. Options not listed here
        are rejected by the spec checker. Defaults must be JSON values
        (numbers, strings, bools, None, lists, string-keyed mappings), since
        specs and saved models store options as JSON; they are stored as
        such, so ``make_bijector`` and ``fit`` see a default ``(64, 64)`` as
        the list ``[64, 64]``, as they would when read from a spec file.
      doc: One-paragraph description shown by ``gaussplug plugins``.
      min_dim: Smallest data dimension the family supports.
      frozen: Optional ``frozen(options, module_name, param_name) -> bool``
        marking parameters that fine-tuning must leave bit-identical.
      validate: Optional ``validate(dim, options)`` that raises
        ``ValueError`` or ``TypeError`` with a helpful message for bad option
        *values*; the spec checker re-raises it as a
        :class:`gaussplug.SpecError` naming the layer path (any other
        exception is a :class:`gaussplug.PluginError`).
      resolve: Optional ``resolve(options, occurrence) -> options`` called
        when a flow is built, with ``occurrence`` the index of this layer
        among the flow's layers of the same family. Lets a family make
        successive layers differ (e.g. coupling masks that alternate).

    Example:
      >>> import distrax, haiku as hk, jax.numpy as jnp
      >>> import gaussplug
      >>> def make_shift(dim):
      ...     b = hk.get_parameter("shift", (dim,), init=jnp.zeros)
      ...     return distrax.Block(distrax.ScalarAffine(shift=-b), 1)
      >>> fam = gaussplug.Family("shift", make_shift, doc="Adds a learned shift.")
      >>> fam.name
      'shift'
    """

    name: str
    make_bijector: MakeBijector
    fit: FitFn | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    doc: str = ""
    min_dim: int = 1
    frozen: Callable[[Mapping[str, Any], str, str], bool] | None = None
    validate: Callable[[int, Mapping[str, Any]], None] | None = None
    resolve: Callable[[Mapping[str, Any], int], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Family name must be a Python identifier such as 'mixture_cdf'; got {self.name!r}.")
        if not callable(self.make_bijector):
            raise TypeError(
                f"Family {self.name!r}: make_bijector must be callable; got {type(self.make_bijector).__name__}."
            )
        for field in ("fit", "frozen", "validate", "resolve"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise TypeError(f"Family {self.name!r}: {field} must be callable or None; got {type(value).__name__}.")
        object.__setattr__(self, "options", self._checked_options())
        object.__setattr__(self, "min_dim", self._checked_min_dim())
        if self.doc is None:
            object.__setattr__(self, "doc", "")
        if not isinstance(self.doc, str):
            raise TypeError(f"Family {self.name!r}: doc must be a string; got {type(self.doc).__name__}.")

    def __hash__(self) -> int:
        """Hashable like any frozen dataclass, although ``options`` is a dict: equal families hash equal."""
        options = json.dumps(self.options, sort_keys=True)
        return hash((self.name, self.make_bijector, self.fit, options, self.doc, self.min_dim, self.frozen,
                     self.validate, self.resolve))

    def _checked_options(self) -> dict[str, Any]:
        options = self.options
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise TypeError(
                f"Family {self.name!r}: options must be a mapping of option name to default value, e.g. "
                f"{{'components': 8}}; got {type(options).__name__} {options!r}."
            )
        bad = [k for k in options if not isinstance(k, str) or k in _RESERVED_OPTIONS]
        if bad:
            raise ValueError(
                f"Family {self.name!r}: option names must be strings other than 'family' (the spec's key) and "
                f"'dim' (make_bijector's first argument); got {bad[0]!r}."
            )
        try:
            return to_json(dict(options), "options")
        except ValueError as err:
            raise ValueError(
                f"Family {self.name!r}: {err} Option defaults are stored in specs and saved models as JSON."
            ) from None

    def _checked_min_dim(self) -> int:
        min_dim = self.min_dim
        if not isinstance(min_dim, (int, np.integer)) or isinstance(min_dim, bool):
            raise TypeError(
                f"Family {self.name!r}: min_dim must be a positive integer; got {type(min_dim).__name__} {min_dim!r}."
            )
        if min_dim < 1:
            raise ValueError(f"Family {self.name!r}: min_dim must be a positive integer; got {min_dim!r}.")
        return int(min_dim)

    def is_frozen(self, options: Mapping[str, Any], module_name: str, param_name: str) -> bool:
        """Whether fine-tuning must keep this parameter fixed.

        Raises:
          TypeError: ``frozen`` returned something other than a bool (``bool("no")`` would be True,
            freezing a parameter the plugin meant to train).
        """
        if self.frozen is None:
            return False
        answer = self.frozen(options, module_name, param_name)
        if not isinstance(answer, (bool, np.bool_)):
            raise TypeError(
                f"frozen({module_name!r}, {param_name!r}) returned {type(answer).__name__} {answer!r}; expected True "
                "(keep the parameter fixed) or False (train it)."
            )
        return bool(answer)
