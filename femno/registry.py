"""One mechanism for femno's plug points: a name -> entry table that a higher layer fills.

A lower layer (solvers, datagen, multiscale) that must call something a higher layer
provides (a neural preconditioner's model loader, a neural initial guess, an EquiNO micro
model) keeps a :class:`Registry`; the higher layer registers its entry when imported.
``plugins`` names, per entry, the module whose import registers it: asked for an entry
not yet registered, the registry imports that module by name (lazy plugin loading, so a
plain ``import femno`` suffices; not an import dependency of the lower layer). With the
plugin absent (no torch, say) or the name unknown it raises
:class:`~femno.errors.FemnoError` saying what to register.

>>> reg = Registry({}, {}, what="toy loader", hint="register_toy")
>>> reg.register("a", len)
>>> reg.get("a") is len
True
>>> reg.get("b")
Traceback (most recent call last):
...
femno.errors.FemnoError: no toy loader registered as 'b' (known: ['a']); register one with register_toy
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from femno.errors import FemnoError, InputError

__all__ = ["Registry", "LiveView", "check_plugin_name", "remove_plugin"]


class Registry:
    """A table of named entries, filled by registration or by importing a plugin module.

    Parameters
    ----------
    entries, plugins : dict
        The tables themselves (kept by reference: module-level dicts stay the registry).
    what : str
        What an entry is, for messages (``"neural model loader"``).
    hint : str
        The function that registers one, for messages.
    unavailable : str, optional
        Message start when a plugin module cannot be imported (default
        ``"<what> <name> is not available"``).
    """

    def __init__(self, entries: dict, plugins: dict, *, what: str, hint: str,
                 unavailable: str | None = None):
        self.entries, self.plugins = entries, plugins
        self.what, self.hint, self.unavailable = what, hint, unavailable

    def register(self, name, entry) -> None:
        """Register ``entry`` (must be callable) under ``name``."""
        if not callable(entry):
            raise InputError(f"{self.what} {name!r} must be callable, got {entry!r}")
        self.entries[str(name)] = entry

    def get(self, name):
        """The entry ``name``, importing its plugin module on first use."""
        if name not in self.entries and name in self.plugins:
            try:
                importlib.import_module(self.plugins[name])
            except ImportError as exc:
                msg = self.unavailable or f"{self.what} {name!r} is not available"
                raise FemnoError(f"{msg}: {exc}") from exc
        try:
            return self.entries[name]
        except KeyError:
            raise FemnoError(f"no {self.what} registered as {name!r} (known: "
                             f"{sorted(self.entries)}); register one with {self.hint}") from None


class LiveView(Mapping):
    """A read-only mapping rebuilt from the registry on every access (``build() -> dict``),
    so that tables derived from a registry (``KRYLOV_METHODS``, ``PRECONDITIONERS``)
    see later registrations.

    >>> table = {"a": 1}
    >>> view = LiveView(lambda: {k: 2 * v for k, v in table.items()})
    >>> table["b"] = 5
    >>> view["b"], "a" in view, len(view)
    (10, True, 2)
    """

    def __init__(self, build: Callable[[], dict], what: str = "table"):
        self._build, self._what = build, what

    def __getitem__(self, key):
        return self._build()[key]

    def __iter__(self):
        return iter(self._build())

    def __len__(self):
        return len(self._build())

    def __repr__(self):
        return f"{self._what}({dict(self._build())!r})"


def check_plugin_name(name, *, table: dict, builtin, replace: bool, what: str) -> str:
    """The rules every plug-in table (Krylov methods, preconditioners, sequence methods)
    applies to a new entry's name: a non-empty lower-case string without ``:``, not a
    built-in (``builtin``), not taken unless ``replace``.

    >>> check_plugin_name("mine", table={}, builtin={"cg"}, replace=False, what="Krylov method")
    'mine'
    >>> check_plugin_name("cg", table={}, builtin={"cg"}, replace=False, what="Krylov method")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: 'cg' is a built-in Krylov method and cannot be registered
    """
    if not isinstance(name, str) or not name or name != name.lower() or ":" in name:
        raise InputError(f"{what} names are non-empty lower-case strings without ':', "
                         f"got {name!r}")
    if name in builtin:
        raise InputError(f"{name!r} is a built-in {what} and cannot be registered")
    if name in table and not replace:
        raise InputError(f"{what} {name!r} is already registered (replace=True)")
    return name


def remove_plugin(name, *, table: dict, builtin) -> None:
    """Remove a registered entry; built-ins stay (:class:`InputError`)."""
    if name in builtin:
        raise InputError(f"{name!r} is built in and cannot be removed")
    table.pop(name, None)

