r"""Family resolution and per-sample seeding, shared by every entry point.

``load_family(spec, options)`` turns a family *spec* into a (cached) instance:

* a registered name (:data:`femno.fem.FAMILIES`),
* ``"path/to/file.py:Name"`` or ``"package.module:Name"`` (``Name`` an attribute that is a
  :class:`~femno.fem.Family` subclass or a key of the module's ``RECIPES`` dict),
* a recipe name: :data:`femno.fem.families.recipes.RECIPES` (shipped in the package) plus
  the ``RECIPES`` of ``$FEMNO_RECIPES`` (a ``.py`` file; its entries override).

Sample ``i`` of a dataset with seed ``s`` has the parameters
``family.sample(np.random.default_rng([s, i]))`` (:func:`sample_params`), whatever the
worker count or order; ``femno generate``, ``femno solve --sample`` and
:func:`femno.datagen.reproduce.dataset_sample` all draw them here.

>>> fam = load_family("poisson", {"n": 4})
>>> a = sample_params(fam, 0, 3)["coef"]
>>> b = load_family("poisson", {"n": 4}).sample(np.random.default_rng([0, 3]))["coef"]
>>> bool(np.array_equal(a, b))
True
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

from femno.errors import InputError

__all__ = ["load_family", "recipe_registry", "sample_params", "input_arrays"]

_FAMILY_CACHE: dict = {}


# -- families ------------------------------------------------------------------------------
def _recipes_path() -> Path | None:
    env = os.environ.get("FEMNO_RECIPES")
    return Path(env).expanduser().resolve() if env else None


def _load_module(target: str):
    """Import a family module: a ``.py`` path or a dotted module name.

    Every failure is an :class:`InputError` naming the file: missing file, or
    ``cannot import FILE: <ExceptionType>: reason`` for an error raised while
    the module runs (syntax error, failing import, ...).
    """
    if target.endswith(".py") or os.sep in target:
        path = Path(target).expanduser().resolve()
        if not path.exists():
            where = "" if str(path) == target else f" (resolved to {str(path)!r})"
            raise InputError(f"family file {target!r} does not exist{where}")
        if not path.is_file():
            raise InputError(f"family file {target!r} is not a file")
        name = "femno_recipes_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise InputError(f"cannot import {target}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException as exc:
                del sys.modules[name]
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                raise InputError(f"cannot import {target}: {_describe(exc)}") from exc
        return sys.modules[name]
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise InputError(f"cannot import family module {target!r}: {exc}") from exc
    except Exception as exc:
        raise InputError(f"cannot import {target}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line (with the line of a SyntaxError)."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, SyntaxError) and exc.lineno and f"line {exc.lineno}" not in msg:
        msg += f" (line {exc.lineno})"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _family_names(module) -> list[str]:
    """Names of the Family subclasses (and RECIPES keys) a module defines."""
    from femno.fem import Family

    names = sorted(k for k, v in vars(module).items()
                   if isinstance(v, type) and issubclass(v, Family) and v is not Family
                   and not k.startswith("_"))
    recipes = getattr(module, "RECIPES", None)
    if isinstance(recipes, dict):
        names += sorted(str(k) for k in recipes if k not in names)
    return names


def recipe_registry() -> dict:
    """Recipe name -> Family subclass: the package's recipes and ``$FEMNO_RECIPES``'s."""
    from femno.fem.families.recipes import RECIPES

    out = dict(RECIPES)
    path = _recipes_path()
    if path is not None:
        if not path.is_file():
            raise InputError(f"FEMNO_RECIPES={str(path)!r} is not a file")
        out.update(getattr(_load_module(str(path)), "RECIPES", {}))
    return out


def _family_class(spec: str):
    from femno.fem import FAMILIES

    if spec in FAMILIES:
        return FAMILIES[spec]
    if ":" in spec:
        target, _, attr = spec.rpartition(":")
        if not target or not attr:
            raise InputError(f"family {spec!r} must be of the form FILE.py:NAME or module:NAME")
        module = _load_module(target)
        recipes = getattr(module, "RECIPES", None)
        cls = recipes.get(attr) if isinstance(recipes, dict) else None
        if cls is None:
            cls = getattr(module, attr, None)
        if cls is None:
            names = _family_names(module)
            raise InputError(
                f"{target} defines no {attr!r}; Family classes there: "
                + (", ".join(names) if names else "none (define a subclass of femno.fem.Family)")
            )
        return cls
    recipes = recipe_registry()
    if spec in recipes:
        return recipes[spec]
    raise InputError(
        f"unknown family {spec!r}; valid names: {sorted(FAMILIES) + sorted(recipes)} "
        "(or 'path/file.py:Name', 'package.module:Name')"
    )


def load_family(spec, options: dict | None = None):
    """Build (and cache per process) the family ``spec`` with constructor ``options``.

    Parameters
    ----------
    spec : str or type
        See the module docstring; a :class:`~femno.fem.Family` subclass is accepted
        in-process (workers need a string).
    options : dict, optional
        Keyword arguments of the family constructor (``n``, ``element``, options).

    Returns
    -------
    femno.fem.Family
    """
    from femno.fem import Family

    options = dict(options or {})
    key = (spec if isinstance(spec, str) else id(spec), json.dumps(options, sort_keys=True, default=str))
    if key in _FAMILY_CACHE:
        return _FAMILY_CACHE[key]
    cls = _family_class(spec) if isinstance(spec, str) else spec
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        what = f"the class {cls.__name__}" if isinstance(cls, type) else f"an object of type {type(cls).__name__}"
        raise InputError(
            f"family {spec!r} is {what}, not a subclass of femno.fem.Family "
            "(see docs/own-family.md)"
        )
    try:
        family = cls(**options)
    except TypeError as exc:
        raise InputError(f"bad options for family {spec!r}: {exc}") from exc
    if len(_FAMILY_CACHE) > 8:
        _FAMILY_CACHE.clear()
    _FAMILY_CACHE[key] = family
    return family


# -- per-sample work -----------------------------------------------------------------------
def sample_params(family, seed: int, index: int) -> dict:
    """Parameters of sample ``index``: ``family.sample(np.random.default_rng([seed, index]))``."""
    return family.sample(np.random.default_rng([int(seed), int(index)]))


def input_arrays(params: dict) -> dict:
    """The numeric parameters of a sample as float64 arrays (its stored input fields)."""
    out = {}
    for name in sorted(params):
        value = params[name]
        if callable(value) or isinstance(value, (str, bytes)):
            continue
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        out[name] = arr
    return out


