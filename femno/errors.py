"""Exceptions raised by femno.

Every error a user can trigger with bad input derives from :class:`FemnoError`, so
that the command-line interface can turn it into a one-line message and a non-zero
exit code instead of a traceback.
"""

from __future__ import annotations

__all__ = [
    "FemnoError",
    "InputError",
    "ConvergenceError",
    "MissingDependencyError",
]


class FemnoError(Exception):
    """Base class of all femno errors."""


class InputError(FemnoError, ValueError):
    """Bad user input: wrong shape, NaN, unknown name, unreadable file, ..."""


class ConvergenceError(FemnoError, RuntimeError):
    """An iterative solver stopped before reaching its tolerance.

    Attributes
    ----------
    stats : femno.solvers.SolveStats
        Statistics of the failed solve (iterations, residual history, ...).
    x : ndarray or None
        The last iterate, so that nothing computed is lost.
    """

    def __init__(self, message: str, stats=None, x=None):
        super().__init__(message)
        self.stats = stats
        self.x = x


class MissingDependencyError(FemnoError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, purpose: str = ""):
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"{package} is not installed{what}; install it with "
            f"`pip install 'femno[{extra}]'`"
            + (" (see README: PETSc needs a system PETSc first)" if extra == "petsc" else "")
        )
        self.package = package
        self.extra = extra


def optional_import(module: str, *, extra: str, purpose: str = ""):
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    >>> np = optional_import("numpy", extra="core")
    >>> np.__name__
    'numpy'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc
