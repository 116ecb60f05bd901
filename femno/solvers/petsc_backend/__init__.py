"""PETSc backend: Krylov solvers and preconditioners of PETSc behind femno's solver API.

Everything here works on numpy/scipy data at the boundary (``PetscKrylov(A, b) -> x``
with a scipy sparse ``A`` and numpy ``b``), so a PETSc solver is a drop-in replacement
for the scipy backend of :func:`femno.solvers.krylov`.  In parallel (``mpiexec``) each
rank owns a contiguous block of rows taken from PETSc's default layout
(:func:`ownership_range`); see :mod:`femno.solvers.petsc_mpi`.

petsc4py is imported lazily: importing this package never fails, using it without
petsc4py raises :class:`~femno.errors.MissingDependencyError`.  PETSc is initialised
with no command-line arguments (so femno's own flags never reach PETSc's option
parser); global PETSc options can still be given through the ``PETSC_OPTIONS``
environment variable, per-solver options through ``petsc_options``.

Modules
-------
``_import``    lazy petsc4py import (:func:`get_petsc`, :func:`have_petsc`)
``convert``    scipy/numpy <-> PETSc ``Mat``/``Vec`` (:func:`to_petsc_mat`, ...)
``options``    method/PC name tables, argument checks, the options database
``ksp``        :class:`PetscKrylov` (its docstring describes the stopping test)
``report``     convergence reasons and residual histories in femno's terms
``pcbridge``   femno preconditioners as PETSc ``PCPYTHON`` (:func:`python_pc`)
``info``       :func:`petsc_info` for ``femno info``
"""

from __future__ import annotations

from femno.solvers.petsc_backend._import import get_petsc, have_petsc
from femno.solvers.petsc_backend.convert import (
    from_petsc_vec,
    ownership_range,
    to_petsc_mat,
    to_petsc_vec,
)
from femno.solvers.petsc_backend.info import petsc_info
from femno.solvers.petsc_backend.ksp import MAX_RESTARTS as MAX_RESTARTS  # as before the split
from femno.solvers.petsc_backend.ksp import PetscKrylov
from femno.solvers.petsc_backend.options import METHODS, PCS
from femno.solvers.petsc_backend.pcbridge import python_pc

__all__ = [
    "get_petsc",
    "have_petsc",
    "ownership_range",
    "to_petsc_mat",
    "to_petsc_vec",
    "from_petsc_vec",
    "python_pc",
    "PetscKrylov",
    "petsc_info",
    "METHODS",
    "PCS",
]

#: Unused: get_petsc() keeps no cache of its own (``sys.modules`` is the cache).  Kept
#: because tests reset it (``monkeypatch.setattr(petsc_backend, "_PETSC", None)``).
_PETSC = None
