"""Conversion between scipy/numpy data and PETSc ``Mat``/``Vec`` objects.

Values are always copied.  In parallel each rank owns a contiguous block of rows taken
from PETSc's default layout (:func:`ownership_range`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from femno.errors import InputError
from femno.solvers.base import check_system
from femno.solvers.petsc_backend._import import comm_or_self as _comm
from femno.solvers.petsc_backend._import import get_petsc

__all__ = ["ownership_range", "to_petsc_mat", "to_petsc_vec", "from_petsc_vec"]


def ownership_range(n: int, comm=None) -> tuple[int, int]:
    """Rows ``[rstart, rend)`` this rank owns in PETSc's default layout of ``n`` rows.

    This is the layout :class:`PETSc.Vec` and :class:`PETSc.Mat` use with
    ``PETSC_DECIDE`` local sizes (``n // size`` rows each, the first ``n % size``
    ranks one more).

    Parameters
    ----------
    n : int
        Global number of rows.
    comm : PETSc.Comm, optional
        Communicator; default ``PETSc.COMM_SELF`` (everything local).
    """
    PETSc = get_petsc()
    comm = _comm(comm)
    v = PETSc.Vec().createMPI((PETSc.DECIDE, int(n)), comm=comm)
    try:
        return tuple(int(i) for i in v.getOwnershipRange())
    finally:
        v.destroy()


def to_petsc_mat(A, comm=None, *, global_rows: bool = False, block_size: int = 1):
    """Convert a scipy sparse matrix to a PETSc AIJ matrix (values are copied).

    Parameters
    ----------
    A : scipy.sparse matrix
        Serial (``comm`` of size 1): the whole square matrix. In parallel: this rank's
        own row block ``A_global[rstart:rend]`` of shape ``(nloc, N)`` with *global*
        column indices, unless ``global_rows=True``.
    comm : PETSc.Comm, optional
        Default ``PETSc.COMM_SELF`` (a sequential AIJ matrix).
    global_rows : bool, keyword-only
        ``A`` is the full ``N x N`` matrix replicated on every rank; each rank keeps its
        rows from :func:`ownership_range`.
    block_size : int, keyword-only
        Matrix block size (rows per mesh node, for nodal AMG); it must divide the local
        row count, else 1 is used.

    Returns
    -------
    PETSc.Mat
        Assembled ``aij`` matrix (``seqaij``/``mpiaij``) with square row/column layout
        ``((nloc, N), (nloc, N))``.
    """
    PETSc = get_petsc()
    comm = _comm(comm)
    if not sp.issparse(A):
        raise InputError(f"expected a scipy sparse matrix, got {type(A).__name__}")
    A = sp.csr_matrix(A, dtype=np.float64)
    N = A.shape[1]
    if global_rows:
        if A.shape[0] != N:
            raise InputError(f"matrix must be square, got shape {A.shape[0]} x {N}")
        rstart, rend = ownership_range(N, comm)
        A = A[rstart:rend]
    if comm.getSize() == 1 and A.shape[0] != N:
        raise InputError(f"matrix must be square, got shape {A.shape[0]} x {N}")
    if not A.has_sorted_indices:
        A = A.sorted_indices()  # a copy: never reorder the caller's arrays
    nloc = A.shape[0]
    it = PETSc.IntType
    csr = (
        np.ascontiguousarray(A.indptr, dtype=it),
        np.ascontiguousarray(A.indices, dtype=it),
        np.ascontiguousarray(A.data, dtype=PETSc.ScalarType),
    )
    bs = int(block_size) if block_size > 1 and all_ranks(nloc % block_size == 0, comm) else None
    M = PETSc.Mat().createAIJ(size=((nloc, N), (nloc, N)), csr=csr, comm=comm, bsize=bs)
    M.assemble()
    return M


def to_petsc_vec(b, comm=None, *, global_rows: bool = False):
    """Convert a 1-D numpy array to a PETSc vector (values are copied).

    Parameters
    ----------
    b : array_like, shape (nloc,) or (N,)
        This rank's entries (serial: all of them) or, with ``global_rows=True``, the
        full replicated vector from which each rank takes its own block.
    comm : PETSc.Comm, optional
        Default ``PETSc.COMM_SELF``.
    global_rows : bool, keyword-only
        See above.
    """
    PETSc = get_petsc()
    comm = _comm(comm)
    b = np.asarray(b, dtype=np.float64)
    if b.ndim != 1:
        raise InputError(f"expected a 1-D vector, got shape {b.shape}")
    if global_rows:
        rstart, rend = ownership_range(b.shape[0], comm)
        b = b[rstart:rend]
    v = PETSc.Vec().createMPI((b.shape[0], PETSc.DECIDE), comm=comm)
    v.getArray()[:] = b
    return v


def from_petsc_vec(v, *, root: int | None = None) -> np.ndarray | None:
    """Gather a (possibly distributed) PETSc vector into a numpy array.

    Parameters
    ----------
    v : PETSc.Vec
    root : {None, 0}, keyword-only
        ``None``: every rank gets the full vector (``VecScatterCreateToAll``);
        ``0``: rank 0 gets it, the others get ``None`` (``VecScatterCreateToZero``).

    Returns
    -------
    ndarray of float64 or None
    """
    PETSc = get_petsc()
    if v.getComm().getSize() == 1:
        return np.array(v.getArray(readonly=True), dtype=np.float64)
    if root not in (None, 0):
        raise InputError(f"root must be None or 0, got {root!r}")
    scatter, out = (PETSc.Scatter.toAll if root is None else PETSc.Scatter.toZero)(v)
    try:
        scatter.scatter(v, out, addv=PETSc.InsertMode.INSERT_VALUES, mode=PETSc.ScatterMode.FORWARD)
        if root == 0 and v.getComm().getRank() != 0:
            return None
        return np.array(out.getArray(readonly=True), dtype=np.float64)
    finally:
        scatter.destroy()
        out.destroy()


def local_csr(M) -> sp.csr_matrix:
    """The square matrix a Python PC sees: the whole matrix in serial, the diagonal
    (own rows x own columns) block in parallel."""
    if M.getComm().getSize() > 1:
        M = M.getDiagonalBlock()
    indptr, indices, data = M.getValuesCSR()
    n = M.getLocalSize()[0]
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


def set_csr_rows(M, block) -> None:
    """Overwrite the values of this rank's rows of ``M`` (same sparsity pattern) with
    those of the CSR row block ``block`` (global column indices); ``M`` is left
    unassembled."""
    # petsc4py's setValuesCSR numbers the rows 0..nloc-1 and offsets them by the
    # ownership start itself; columns are global.
    PETSc = get_petsc()
    it = PETSc.IntType
    M.setValuesCSR(
        np.ascontiguousarray(block.indptr, dtype=it),
        np.ascontiguousarray(block.indices, dtype=it),
        np.ascontiguousarray(block.data, dtype=np.float64),
        addv=PETSc.InsertMode.INSERT_VALUES,
    )


def all_ranks(flag: bool, comm) -> bool:
    """True when ``flag`` is true on every rank of ``comm`` (collective)."""
    if comm.getSize() == 1:
        return flag
    PETSc = get_petsc()
    v = PETSc.Vec().createMPI((1, PETSc.DECIDE), comm=comm)
    v.set(1.0 if flag else 0.0)
    ok = v.min()[1] > 0.5
    v.destroy()
    return ok


def check_system_petsc(A, b, x0, comm):
    """Validate a system given as scipy/numpy data or as PETSc ``Mat``/``Vec``.

    Returns
    -------
    A, b, x0, comm
        ``A`` as a scipy CSR matrix (or the PETSc ``Mat`` itself, whose communicator
        replaces ``comm``), ``b`` as a float64 array (None when it is a PETSc ``Vec``)
        and ``x0`` (an array, a PETSc ``Vec`` with a PETSc ``A``, or None).
    """
    PETSc = get_petsc()
    if not isinstance(A, PETSc.Mat):
        if isinstance(x0, PETSc.Vec) or isinstance(b, PETSc.Vec):
            raise InputError(
                "b and x0 must be numpy arrays when A is a scipy matrix "
                "(pass a PETSc Mat to use PETSc vectors)"
            )
        A, b_np, x0 = check_system(A, b, x0)
        return A, b_np, x0, comm
    N, M = A.getSize()
    if N != M:
        raise InputError(f"matrix must be square, got shape {N} x {M}")
    b_np = None if isinstance(b, PETSc.Vec) else np.asarray(b, dtype=np.float64)
    if b_np is not None and (b_np.ndim != 1 or b_np.shape[0] != N):
        raise InputError(f"right-hand side has shape {b_np.shape} but the matrix is {N} x {N}")
    if isinstance(b, PETSc.Vec) and b.getSize() != N:
        raise InputError(f"right-hand side has length {b.getSize()} but the matrix is {N} x {N}")
    return A, b_np, x0, A.getComm()


def fill_local(vec, src) -> None:
    """Copy a PETSc ``Vec`` into ``vec``, or this rank's rows of a global array."""
    PETSc = get_petsc()
    if isinstance(src, PETSc.Vec):
        src.copy(vec)
    else:
        rstart, rend = vec.getOwnershipRange()
        vec.getArray()[:] = np.asarray(src, dtype=np.float64)[rstart:rend]
