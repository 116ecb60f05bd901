"""Lazy import of petsc4py: :func:`get_petsc` and :func:`have_petsc`.

Importing femno never imports petsc4py; the first :func:`get_petsc` does, and
initialises PETSc with no command-line arguments (so femno's own flags never reach
PETSc's option parser).  ``sys.modules`` is the only cache: hiding petsc4py
(``sys.modules["petsc4py"] = None``) makes the next :func:`get_petsc` raise.
"""

from __future__ import annotations

import importlib.util
import sys

from femno.errors import MissingDependencyError

__all__ = ["get_petsc", "have_petsc"]


def get_petsc():
    """Return the ``petsc4py.PETSc`` module, initialising PETSc on first use.

    Raises
    ------
    MissingDependencyError
        If petsc4py is not installed.
    """
    try:
        import petsc4py

        if "petsc4py.PETSc" not in sys.modules:
            petsc4py.init(["femno"])  # keep femno's argv away from PETSc's parser
        from petsc4py import PETSc
    except ImportError as exc:
        raise MissingDependencyError("petsc4py", "petsc", "the PETSc backend") from exc
    return PETSc


def loaded_petsc():
    """``petsc4py.PETSc`` if it has been imported already, else None (imports nothing)."""
    return sys.modules.get("petsc4py.PETSc")


def have_petsc() -> bool:
    """True when petsc4py can be imported (does not initialise PETSc)."""
    try:
        return importlib.util.find_spec("petsc4py") is not None
    except (ImportError, ValueError):  # pragma: no cover - broken/odd installs
        return False


def comm_or_self(comm):
    """``comm``, or ``PETSc.COMM_SELF`` when it is None."""
    PETSc = get_petsc()
    return PETSc.COMM_SELF if comm is None else comm
