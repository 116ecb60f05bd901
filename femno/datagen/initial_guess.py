"""Plug point for learned initial guesses (``generate_dataset(..., warm_start=MODEL)``).

Data generation sits below :mod:`femno.operators`, so it does not import the trained
models that provide warm starts.  It defines the protocol and a registry instead:

* an *initial guess* is any object with ``guess(system) -> x0`` (``system`` an
  assembled :class:`~femno.fem.families.base.System`, ``x0`` on its free dofs);
* a *provider* registered under a name with :func:`register_initial_guess` gives
  ``load(path, family) -> initial guess`` (called in every worker, so it should cache
  per process) and optionally ``check(path, family)``, which raises
  :class:`~femno.errors.InputError` early when the model file does not fit the family.

:mod:`femno.operators.surrogate` registers the provider ``"surrogate"`` (the default) at
import.  Lazy plugin loading: when a provider is asked for and not registered,
:func:`provider` imports the module named in :data:`PLUGINS` by name (``importlib``), so
``femno generate ... --warm-start MODEL`` works after a plain ``import femno``; this is
not an import dependency of the data layer, and with the plugin absent (no torch, say)
it raises :class:`~femno.errors.FemnoError`.

>>> class Zero:
...     def guess(self, system):
...         return system.b * 0.0
>>> register_initial_guess("doctest-zero", lambda path, family: Zero())
>>> type(load_initial_guess("any.pt", None, name="doctest-zero")).__name__
'Zero'
>>> del PROVIDERS["doctest-zero"]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np

from femno.errors import InputError
from femno.registry import Registry

__all__ = ["InitialGuess", "Provider", "PROVIDERS", "PLUGINS", "DEFAULT_PROVIDER",
           "register_initial_guess", "provider", "load_initial_guess", "check_initial_guess"]


class InitialGuess(Protocol):
    """What a warm start gives the solver: an initial iterate per assembled system."""

    def guess(self, system) -> np.ndarray: ...


class Provider(NamedTuple):
    """``load(path, family) -> InitialGuess``; ``check(path, family)`` (``None``: ``load``)."""

    load: Callable
    check: Callable | None = None


#: Registered providers, by name.
PROVIDERS: dict[str, Provider] = {}

#: Lazy plugin loading: provider name -> module whose import registers it.
PLUGINS: dict[str, str] = {"surrogate": "femno.operators.surrogate"}

#: The provider used for ``warm_start=`` paths.
DEFAULT_PROVIDER = "surrogate"


def register_initial_guess(name: str, load: Callable, *, check: Callable | None = None) -> None:
    """Register the provider ``name``: ``load(path, family)`` and optional ``check``."""
    if not callable(load) or (check is not None and not callable(check)):
        raise InputError(f"initial-guess provider {name!r} needs callable load/check")
    PROVIDERS[str(name)] = Provider(load, check)


def _providers():
    """The registry over the module's current tables (tests may rebind them)."""
    return Registry(PROVIDERS, PLUGINS, what="initial-guess provider",
                    hint="femno.datagen.initial_guess.register_initial_guess",
                    unavailable="neural warm starts are not available")


def provider(name: str = DEFAULT_PROVIDER) -> Provider:
    """The provider ``name``, importing its plugin module (:data:`PLUGINS`) on first use."""
    return _providers().get(name)


def load_initial_guess(path, family, *, name: str = DEFAULT_PROVIDER) -> InitialGuess:
    """The initial guess of the model file ``path`` for ``family`` (provider ``name``)."""
    return provider(name).load(path, family)


def check_initial_guess(path, family, *, name: str = DEFAULT_PROVIDER) -> None:
    """Raise :class:`~femno.errors.InputError` unless ``path`` can warm-start ``family``."""
    p = provider(name)
    (p.check or p.load)(path, family)
