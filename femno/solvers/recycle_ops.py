"""Pluggable vector operations shared by the recycling Krylov methods.

The recycling solvers (:mod:`femno.solvers.recycle`, :mod:`femno.solvers.recycle_cg`)
never touch a matrix or an inner product directly: they call an *ops* object, so
the same algorithm runs on a serial numpy system (:class:`SerialOps`) and on the
locally owned rows of a distributed PETSc system
(:class:`femno.solvers.recycle_petsc.PetscOps`).

Blocks of vectors are stored **row-wise**, as arrays of shape ``(p, n_local)``
(vector ``i`` is the contiguous row ``X[i]``). An ops object provides

``matvec(v)``      ``A v`` (local rows of the result)
``precond(v)``     ``M^{-1} v``
``dots(X, v)``     ``X v`` reduced over all ranks (shape ``(p,)``)
``gram(X, Y)``     ``X Y^T`` reduced over all ranks (shape ``(p, q)``)
``norm(v)``        ``||v||_2`` (global)
``fingerprint()``  a record of the operator, kept by a recycle space
``matches(key)``   whether ``key`` is the fingerprint of this operator (global answer)
``n``              the global number of unknowns

and optionally (used when present, with the loops / :meth:`gram` above as fallback)
``precond_rows(X)`` / ``matvec_rows(X)`` (a row block at once), ``row_norms2(X)``
(:math:`\\|x_i\\|^2` per row), ``identity_pc`` (``True``: ``precond`` is the identity,
so ``Z = U`` and ``M^{-1}`` images need not be stored) and ``local_only`` (``True``:
no collective operations, so work may be deferred to any later call).

Every reduction is a single collective, so small dense matrices built from its
results are identical on every rank and the control flow stays in lock-step.

>>> import numpy as np, scipy.sparse as sp
>>> ops = SerialOps(sp.eye(3, format="csr") * 2.0)
>>> ops.matvec(np.ones(3)), ops.dots(np.eye(3)[:2], np.arange(3.0))
(array([2., 2., 2.]), array([0., 1.]))
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from femno.errors import InputError

__all__ = ["SerialOps", "MatrixFingerprint", "orthonormalize_block", "same_operator", "CarriedSpace",
           "precond_rows", "matvec_rows", "row_norms2", "identity_pc", "check_system"]

_EPS = np.finfo(np.float64).eps


class MatrixFingerprint:
    """Cheap identity of a matrix: same object *or* equal shape, pattern and values.

    Keeps copies of the CSR arrays (one matrix worth of memory) so that in-place
    changes of the values are noticed; comparison costs ``O(nnz)``, far below one
    Krylov iteration's worth of work. Objects that are neither sparse nor dense
    arrays (``LinearOperator``, callables) compare by identity only.
    """

    def __init__(self, A):
        self.ref = A
        self.arrays = None
        if sp.issparse(A):
            A = A.tocsr() if A.format != "csr" else A
            self.arrays = (A.shape, A.indptr.copy(), A.indices.copy(), A.data.copy())
        elif isinstance(A, np.ndarray):
            self.arrays = (A.shape, A.copy())

    def __eq__(self, other):
        if not isinstance(other, MatrixFingerprint):
            return NotImplemented
        if self.arrays is None or other.arrays is None:
            return self.ref is other.ref
        if len(self.arrays) != len(other.arrays) or self.arrays[0] != other.arrays[0]:
            return False
        return all(np.array_equal(a, b) for a, b in zip(self.arrays[1:], other.arrays[1:], strict=True))

    __hash__ = None

    def matches(self, A) -> bool:
        """``self == MatrixFingerprint(A)`` without copying ``A``'s arrays."""
        if self.ref is A and self.arrays is None:
            return True
        if self.arrays is None:
            return False
        if sp.issparse(A):
            A = A.tocsr() if A.format != "csr" else A
            arrays = (A.shape, A.indptr, A.indices, A.data)
        elif isinstance(A, np.ndarray):
            arrays = (A.shape, A)
        else:
            return False
        if len(arrays) != len(self.arrays) or arrays[0] != self.arrays[0]:
            return False
        return all(np.array_equal(a, b) for a, b in zip(self.arrays[1:], arrays[1:], strict=True))


def same_operator(M1, M2) -> bool:
    """Whether two preconditioner callables are the same (``None`` = identity).

    Bound methods of one object compare equal (``pc.apply == pc.apply``), so a
    preconditioner object that is re-set-up for a new matrix counts as "the same";
    the recycle space is refreshed anyway in that case because the matrix changed.
    """
    if M1 is None or M2 is None:
        return M1 is None and M2 is None
    return M1 is M2 or M1 == M2


class SerialOps:
    """Operations on a serial system: ``A`` with ``A @ x`` and ``M`` a callable or None."""

    local_only = True  # no collectives: work may be deferred (RecycleSpace's final pass)

    def __init__(self, A, M=None):
        self.A = A
        self.M = M
        self.n = int(A.shape[0])  # global size
        self.identity_pc = M is None
        self._block_solve = _superlu_block_solve(M)

    def matvec(self, v):
        return np.asarray(self.A @ v, dtype=np.float64).ravel()

    def precond(self, v):
        if self.M is None:
            return np.array(v, dtype=np.float64)
        return np.asarray(self.M(v), dtype=np.float64).ravel()

    def precond_rows(self, X):
        """``M^{-1}`` applied to every row of ``X`` (one SuperLU call for an ILU)."""
        if self.M is None:
            return np.array(X, dtype=np.float64)
        if self._block_solve is not None and len(X):
            return np.ascontiguousarray(self._block_solve(np.asfortranarray(X.T)).T)
        return np.array([self.precond(x) for x in X]).reshape(len(X), -1)

    def matvec_rows(self, X):
        """``A`` applied to every row of ``X`` (row by row: faster than a CSR block product)."""
        return np.array([self.matvec(x) for x in X]).reshape(len(X), -1)

    def row_norms2(self, X):
        return np.einsum("ij,ij->i", X, X)

    def dots(self, X, v):
        return X @ v

    def gram(self, X, Y):
        return X @ Y.T

    def norm(self, v):
        return float(np.sqrt(v @ v))

    def fingerprint(self):
        return MatrixFingerprint(self.A)

    def matches(self, key) -> bool:
        """Whether ``key`` (an earlier :meth:`fingerprint`) is this operator's."""
        return key is not None and key.matches(self.A)


def _superlu_block_solve(M):
    """``M``'s SuperLU ``solve`` when ``M`` is :meth:`ILUPreconditioner.apply` (else None).

    SuperLU solves several right-hand sides in one call (supernodal block
    triangular solves, bit-for-bit the column-by-column result).
    """
    owner = getattr(M, "__self__", None)
    if owner is None or getattr(M, "__func__", None) is None:
        return None
    from femno.solvers.precond import ILUPreconditioner

    if not isinstance(owner, ILUPreconditioner) or M.__func__ is not ILUPreconditioner.apply:
        return None
    ilu = getattr(owner, "ilu", None)
    return None if ilu is None else ilu.solve


def identity_pc(ops) -> bool:
    """Whether ``ops.precond`` is the identity (``Z = U``, no images to store)."""
    return bool(getattr(ops, "identity_pc", False))


def precond_rows(ops, X):
    """``M^{-1} x`` for every row ``x`` of ``X`` (block call when ``ops`` has one)."""
    f = getattr(ops, "precond_rows", None)
    return f(X) if f is not None else np.array([ops.precond(x) for x in X]).reshape(len(X), -1)


def matvec_rows(ops, X):
    """``A x`` for every row ``x`` of ``X``."""
    f = getattr(ops, "matvec_rows", None)
    return f(X) if f is not None else np.array([ops.matvec(x) for x in X]).reshape(len(X), -1)


def row_norms2(ops, X):
    """Squared global norms of the rows of ``X`` (``diag(gram(X, X))`` as fallback)."""
    f = getattr(ops, "row_norms2", None)
    return f(X) if f is not None else np.diag(ops.gram(X, X)).copy()


def orthonormalize_block(ops, C, *others, drop_tol=1e-10, passes=2):
    """Orthonormalise the rows of ``C`` and apply the same transform to ``others``.

    CholeskyQR2: ``G = C C^T = L L^T``, ``C <- L^{-1} C``, done twice (two
    reductions); the ``others`` get the product of the pass transforms,
    :math:`T = L_2^{-1} L_1^{-1}`, in one product each; when ``G`` is numerically singular the block is reduced with an
    eigen-decomposition of ``G`` that drops directions with relative eigenvalue
    below ``drop_tol**2``. ``passes=1`` is enough for a nearly orthonormal block. Keeping ``U`` and ``Z`` transformed like ``C``
    preserves ``A M^{-1} U = A Z = C``.

    Returns the new ``(C, *others)`` (row blocks with possibly fewer rows).
    """
    T_all = None
    for _ in range(passes):
        if C.shape[0] == 0:
            break
        G = ops.gram(C, C)
        G = 0.5 * (G + G.T)
        try:
            L = np.linalg.cholesky(G)
            d = np.abs(np.diag(L))
            if d.min() <= drop_tol * d.max():
                raise np.linalg.LinAlgError("ill-conditioned block")
            T = np.linalg.inv(L)  # C <- L^{-1} C  (G = L L^T)
        except np.linalg.LinAlgError:
            w, Q = np.linalg.eigh(G)
            keep = w > (drop_tol**2) * max(w.max(), 0.0) if w.size else w > 0
            if not np.any(keep):
                T = np.zeros((0, C.shape[0]))
            else:
                T = (Q[:, keep] / np.sqrt(w[keep])).T
        C = T @ C
        T_all = T if T_all is None else T @ T_all
    if T_all is not None:
        others = tuple(T_all @ X for X in others)
    return (C, *others)


def check_system(A, b, x0):
    """Validate a serial system ``(A, b, x0)`` for the recycling solvers; ``b``, ``x0`` as float64 vectors."""
    b = np.asarray(b, dtype=np.float64).ravel()
    if getattr(A, "shape", None) is None or len(A.shape) != 2 or A.shape[0] != A.shape[1]:
        raise InputError("A must be a square matrix or operator")
    if A.shape[0] != b.shape[0]:
        raise InputError(f"right-hand side has length {b.shape[0]} but A is {A.shape[0]} x {A.shape[1]}")
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64).ravel()
        if x0.shape != b.shape:
            raise InputError(f"initial guess has shape {x0.shape}, expected {b.shape}")
    return A, b, x0


class CarriedSpace:
    """Base of the subspaces a Krylov method carries from solve to solve.

    :class:`~femno.solvers.recycle.RecycleSpace` (GCRO-DR's ``U``, ``C``) and
    :class:`~femno.solvers.recycle_cg.DeflationSpace` (deflated CG's ``W``) share this
    bookkeeping: a row-wise basis (``k x n``, attribute :attr:`BASIS`) built from an
    optional ``(n, k)`` start array, the operator fingerprint and preconditioner it is
    valid for, and refresh counters.  Subclasses implement ``prepare(ops, *, M, force)``.
    """

    #: attribute holding the row-wise basis, and its name in messages
    BASIS, LABEL = "Ur", "U"

    def __init__(self, X=None):
        self.clear()
        if X is not None:
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2:
                raise InputError(f"{self.LABEL} must be a 2-D array (n, k), got shape {X.shape}")
            setattr(self, self.BASIS, np.ascontiguousarray(X.T))

    def clear(self):
        """Forget the space and its validity (subclasses drop their own arrays too)."""
        setattr(self, self.BASIS, None)
        self._key = None
        self._M = None
        self.refreshes = 0
        self.last_setup_matvecs = 0

    @property
    def k(self) -> int:
        """Number of basis vectors (0 when empty)."""
        X = getattr(self, self.BASIS)
        return 0 if X is None else int(X.shape[0])

    def for_matrix(self, A, M=None):
        """Make the space valid for ``A`` and ``M`` (skipped if it already is); returns self."""
        return self.prepare(SerialOps(A, M), M=M)

    def prepare(self, ops, *, M=None, force=False):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        X = getattr(self, self.BASIS)
        n = None if X is None else X.shape[1]
        return f"{type(self).__name__}(k={self.k}, n={n}, refreshes={self.refreshes})"
