"""Linear solvers: numpy Krylov methods, preconditioners, direct LU, PETSc backend.

The entry points are the factories :func:`krylov` and :func:`direct`, which return
scikit-fem-compatible solvers (``skfem.solve(A, b, solver=krylov("cg", pc="amg"))``)
that keep the :class:`SolveStats` of their last solve in ``solver.stats``.

>>> import numpy as np, scipy.sparse as sp
>>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50), format="csr")
>>> solver = krylov("cg", pc="jacobi", rtol=1e-10)
>>> x = solver(A, np.ones(50))
>>> solver.stats.converged, solver.stats.method, solver.stats.pc
(True, 'cg', 'jacobi')
"""

from femno.solvers.base import Preconditioner, check_system
from femno.solvers.direct import DirectSolver, direct
from femno.solvers.factory import BACKENDS, METHODS, KrylovSolver, krylov
from femno.solvers.krylov import cg, fcg, fgmres, gmres, minres
from femno.solvers.precond import (
    PRECONDITIONERS,
    AMGPreconditioner,
    ICPreconditioner,
    ILU0Preconditioner,
    ILUPreconditioner,
    JacobiPreconditioner,
    NoPreconditioner,
    SSORPreconditioner,
    make_preconditioner,
)
from femno.solvers.recycle import DeflationSpace, RecycleSpace, deflated_cg, gcrodr
from femno.solvers.stats import SolveStats

__all__ = [
    "krylov",
    "direct",
    "KrylovSolver",
    "DirectSolver",
    "SolveStats",
    "Preconditioner",
    "make_preconditioner",
    "PRECONDITIONERS",
    "METHODS",
    "BACKENDS",
    "check_system",
    "cg",
    "fcg",
    "gmres",
    "fgmres",
    "minres",
    "gcrodr",
    "deflated_cg",
    "RecycleSpace",
    "DeflationSpace",
    "NoPreconditioner",
    "JacobiPreconditioner",
    "SSORPreconditioner",
    "ILU0Preconditioner",
    "ILUPreconditioner",
    "ICPreconditioner",
    "AMGPreconditioner",
]
