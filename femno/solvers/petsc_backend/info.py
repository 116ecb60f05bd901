"""What the installed PETSc offers: :func:`petsc_info` (for ``femno info``)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from femno.errors import MissingDependencyError
from femno.solvers.petsc_backend._import import get_petsc
from femno.solvers.petsc_backend.convert import to_petsc_mat

__all__ = ["petsc_info", "external_packages"]

_EXTERNAL_CACHE: dict = {}


def external_packages() -> dict:
    """Which external packages this PETSc really has (tries to create/use them)."""
    if _EXTERNAL_CACHE:
        return _EXTERNAL_CACHE
    PETSc = get_petsc()
    out = {}
    for pkg in ("hypre", "mumps", "superlu", "superlu_dist", "ml", "scalapack"):
        try:
            out[pkg] = bool(PETSc.Sys.hasExternalPackage(pkg))
        except Exception:  # pragma: no cover - very old petsc4py
            out[pkg] = False
    A = to_petsc_mat(sp.csr_matrix(np.array([[2.0, -1.0], [-1.0, 2.0]])))
    b = A.createVecLeft()
    b.set(1.0)

    def _works(configure) -> bool:
        ksp = PETSc.KSP().create(PETSc.COMM_SELF)
        try:
            ksp.setOperators(A)
            ksp.setType("preonly")
            configure(ksp.getPC())
            x = b.duplicate()
            ksp.solve(b, x)
            return bool(np.allclose(x.getArray(), 1.0, atol=0.5))
        except Exception:
            return False
        finally:
            ksp.destroy()

    def _lu(solver):
        def conf(pc):
            pc.setType("lu")
            pc.setFactorSolverType(solver)

        return conf

    def _hypre(pc):
        pc.setType("hypre")
        pc.setHYPREType("boomeramg")

    out["hypre"] = _works(_hypre)
    for solver in ("mumps", "superlu", "superlu_dist"):
        out[solver] = _works(_lu(solver))
    A.destroy()
    b.destroy()
    _EXTERNAL_CACHE.update(out)
    return _EXTERNAL_CACHE


def petsc_info() -> dict:
    """Describe the PETSc installation (for ``femno info``).

    Returns
    -------
    dict
        ``available`` (bool); when available also ``petsc_version``,
        ``petsc4py_version``, ``petsc_dir``, ``petsc_arch``, ``scalar``,
        ``int_bytes``, ``external_packages`` (``{"hypre": True, "mumps": ...}``, each
        checked by creating and using it) and ``mpi_size``; otherwise ``reason``.
    """
    try:
        PETSc = get_petsc()
    except MissingDependencyError as exc:
        return {"available": False, "reason": str(exc)}
    import petsc4py

    cfg = {}
    try:
        cfg = petsc4py.get_config()
    except Exception:  # pragma: no cover
        pass
    major, minor, sub = PETSc.Sys.getVersion()
    return {
        "available": True,
        "petsc_version": f"{major}.{minor}.{sub}",
        "petsc4py_version": petsc4py.__version__,
        "petsc_dir": cfg.get("PETSC_DIR", ""),
        "petsc_arch": cfg.get("PETSC_ARCH", ""),
        "scalar": np.dtype(PETSc.ScalarType).name,
        "int_bytes": np.dtype(PETSc.IntType).itemsize,
        "external_packages": dict(external_packages()),
        "mpi_size": PETSc.COMM_WORLD.getSize(),
    }
