"""Run a femno :class:`~femno.solvers.base.Preconditioner` inside PETSc as a ``PCPYTHON``."""

from __future__ import annotations

import numpy as np

from femno.errors import InputError
from femno.solvers.petsc_backend._import import comm_or_self as _comm
from femno.solvers.petsc_backend._import import get_petsc
from femno.solvers.petsc_backend.convert import local_csr as _local_csr

__all__ = ["python_pc"]


class _FemnoPCContext:
    """``PCPYTHON`` context that runs a femno :class:`Preconditioner` inside PETSc."""

    def __init__(self, pc, *, reuse: bool = False):
        self.pc = pc
        self.reuse = reuse
        self.ready = False
        self.setup_calls = 0
        self.update_calls = 0
        self.apply_calls = 0

    def setUp(self, pc):  # noqa: N802 - petsc4py protocol
        _, P = pc.getOperators()
        A = _local_csr(P)
        shape = getattr(self.pc, "shape", None)
        if self.reuse and self.ready and shape == A.shape and hasattr(self.pc, "update"):
            self.pc.update(A)
            self.update_calls += 1
        else:
            self.pc.setup(A)
            self.setup_calls += 1
        self.ready = True

    def apply(self, pc, x, y):
        r = x.getArray(readonly=True)
        z = np.asarray(self.pc.apply(np.array(r, dtype=np.float64)), dtype=np.float64)
        y.getArray()[:] = z.reshape(-1)
        self.apply_calls += 1

    def applyTranspose(self, pc, x, y):  # noqa: N802 - symmetric preconditioners only
        self.apply(pc, x, y)

    def view(self, pc, viewer):
        name = getattr(self.pc, "name", type(self.pc).__name__)
        viewer.printfASCII(f"  femno Python preconditioner {name!r}\n")


def python_pc(pc, *, reuse: bool = False, comm=None, ksp_pc=None):
    """Wrap a femno :class:`Preconditioner` as a PETSc ``PCPYTHON``.

    PETSc calls ``pc.setup(A)`` (``A`` as a scipy CSR matrix) in ``PCSetUp`` whenever
    the operator changed, or ``pc.update(A)`` with ``reuse=True`` once it has been set
    up for a matrix of the same shape, and ``pc.apply(r)`` in every ``PCApply``.
    In parallel the femno preconditioner sees this rank's diagonal block only (own rows
    and columns): it acts as a block-Jacobi preconditioner with one femno
    preconditioner per rank.

    Parameters
    ----------
    pc : Preconditioner
        Any object with ``setup(A)`` and ``apply(r)`` (and optionally ``update(A)``).
    reuse : bool, keyword-only
        Call ``update`` instead of ``setup`` on later set-ups.
    comm : PETSc.Comm, optional
        Communicator of the new PC (ignored with ``ksp_pc``).
    ksp_pc : PETSc.PC, optional
        Configure this existing PC (e.g. ``ksp.getPC()``) instead of creating one.

    Returns
    -------
    PETSc.PC
        The PC; its Python context is ``pc.getPythonContext()``.
    """
    PETSc = get_petsc()
    if not (callable(getattr(pc, "setup", None)) and callable(getattr(pc, "apply", None))):
        raise InputError(
            f"preconditioner must have setup(A) and apply(r) methods, got {type(pc).__name__}"
        )
    if ksp_pc is None:
        ksp_pc = PETSc.PC().create(_comm(comm))
    ksp_pc.setType(PETSc.PC.Type.PYTHON)
    ksp_pc.setPythonContext(_FemnoPCContext(pc, reuse=reuse))
    return ksp_pc
