r"""Sparse direct factorizations that reuse the symbolic analysis: :func:`sparse_factor`.

A sequence of matrices with one sparsity pattern (a parametric FE family on a fixed
mesh) needs the fill-reducing ordering and the symbolic factorization (elimination
tree, supernodes, memory) only once; each new matrix then pays only the numeric
factorization. scipy's SuperLU cannot do that, the libraries made for it can:

============ ====================================== ======================== ==========
backend      library                                matrices                 extra
============ ====================================== ======================== ==========
``cholmod``  CHOLMOD (scikit-sparse), supernodal    symmetric positive       ``direct``
             :math:`LL^T`, analysis reused          definite
``mumps``    MUMPS through PETSc (``PCLU`` /        any (LU with threshold   ``petsc``
             ``PCCHOLESKY``, ``SAME_NONZERO_        pivoting; Cholesky for
             PATTERN``: analysis reused)            symmetric ones)
``superlu``  scipy's SuperLU, COLAMD, fresh per     any                      --
             matrix (what ``spsolve`` does)
============ ====================================== ======================== ==========

Threshold pivoting can make a reused analysis a poor fit for a later matrix (MUMPS
then delays pivots and the factor grows). :class:`SparseFactor` checks the factor
size (MUMPS ``INFOG(29)``, entries of the factors) after each refactorization and
redoes the analysis when it grew more than :data:`FILL_GROWTH` times over the first
one; a CHOLMOD factorization that finds the matrix not positive definite falls back
to the next backend.

>>> import numpy as np, scipy.sparse as sp
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50), format="csr")
>>> f = sparse_factor(backend="superlu")
>>> f.factorize(T); x = f.solve(np.ones(50))
>>> bool(np.allclose(T @ x, 1.0)), f.backend
(True, 'superlu')
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femno.errors import InputError, MissingDependencyError

__all__ = ["sparse_factor", "SparseFactor", "available_backends", "FILL_GROWTH",
           "DIRECT_BACKENDS", "project_factor_seconds", "FactorProjection"]

#: redo the symbolic analysis when a refactorization's factor holds more than this
#: many times the entries of the first one (pivoting destroyed the reused ordering)
FILL_GROWTH = 1.5
DIRECT_BACKENDS = ("auto", "cholmod", "mumps", "superlu")


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # pragma: no cover
        return False


def available_backends() -> dict:
    """Which backends can run here: ``{"cholmod": bool, "mumps": bool, "superlu": True}``.

    ``mumps`` needs petsc4py with a PETSc configured with MUMPS (Debian's is).
    """
    mumps = False
    if _have("petsc4py"):
        from femno.solvers.petsc_backend.info import external_packages

        mumps = bool(external_packages().get("mumps"))
    return {"cholmod": _have("sksparse"), "mumps": mumps, "superlu": True}


def _singular(exc):
    return InputError(f"direct solver: matrix is singular ({exc})")


class _SuperLU:
    """Fresh COLAMD SuperLU per matrix (the ``spsolve`` baseline); no analysis to reuse."""

    name = "superlu"

    def __init__(self, symmetric):
        self._lu = None

    def factorize(self, A, same_pattern):
        try:
            self._lu = spla.splu(sp.csc_matrix(A), permc_spec="COLAMD")
        except RuntimeError as exc:  # "Factor is exactly singular"
            raise _singular(exc) from exc
        return False

    def nnz(self):
        return int(self._lu.L.nnz + self._lu.U.nnz)

    def solve(self, B, transpose=False):
        return self._lu.solve(np.asfortranarray(B) if B.ndim == 2 else B,
                              trans="T" if transpose else "N")


class _NotPositiveDefinite(Exception):
    pass


class _Cholmod:
    """CHOLMOD supernodal Cholesky; ``analyze`` once per pattern, numeric in place."""

    name = "cholmod"

    def __init__(self, symmetric):
        if not symmetric:
            raise InputError("backend 'cholmod' needs a symmetric matrix (use 'mumps' or "
                             "'superlu')")
        try:
            from sksparse import cholmod
        except ImportError as exc:
            raise MissingDependencyError("scikit-sparse", "direct",
                                         "CHOLMOD direct solves") from exc
        self._cholmod = cholmod
        self._f = None

    def factorize(self, A, same_pattern):
        C = sp.csc_matrix(A)
        reused = same_pattern and self._f is not None
        try:
            if reused:
                self._f.cholesky_inplace(C)
            else:
                self._f = self._cholmod.cholesky(C)
        except self._cholmod.CholmodNotPositiveDefiniteError as exc:
            raise _NotPositiveDefinite(str(exc)) from exc
        return reused

    def nnz(self):
        return None  # L() would copy the whole factor; CHOLMOD never pivots: no growth

    def solve(self, B, transpose=False):  # symmetric: A^T = A
        return self._f(B)


class _Mumps:
    """MUMPS through PETSc: ``KSPPREONLY`` + ``PCLU``/``PCCHOLESKY``; one Mat whose values
    are overwritten, so PETSc's ``SAME_NONZERO_PATTERN`` path skips the analysis."""

    name = "mumps"

    def __init__(self, symmetric):
        from femno.solvers.petsc_backend import get_petsc

        self.PETSc = get_petsc()
        if not available_backends()["mumps"]:
            raise MissingDependencyError("MUMPS (in PETSc)", "petsc", "MUMPS direct solves")
        self.symmetric = bool(symmetric)
        self._M = self._ksp = self._b = self._x = None
        self._n = None

    def _new(self, A):
        from femno.solvers.petsc_backend.convert import to_petsc_mat

        PETSc = self.PETSc
        self.close()
        self._M = to_petsc_mat(A)
        if self.symmetric:
            self._M.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        ksp = PETSc.KSP().create(PETSc.COMM_SELF)
        ksp.setOperators(self._M)
        ksp.setType("preonly")
        pc = ksp.getPC()
        pc.setType("cholesky" if self.symmetric else "lu")
        pc.setFactorSolverType("mumps")
        self._ksp = ksp
        self._b, self._x = self._M.createVecLeft(), self._M.createVecRight()
        self._n = A.shape[0]

    def factorize(self, A, same_pattern):
        reused = same_pattern and self._M is not None
        if reused:
            it = self.PETSc.IntType
            self._M.setValuesCSR(np.ascontiguousarray(A.indptr, dtype=it),
                                 np.ascontiguousarray(A.indices, dtype=it),
                                 np.ascontiguousarray(A.data, dtype=np.float64))
            self._M.assemble()
            self._ksp.setOperators(self._M)
        else:
            self._new(A)
        try:
            self._ksp.setUp()
        except self.PETSc.Error as exc:
            raise _singular(f"MUMPS: {exc}".splitlines()[0]) from None
        info = self._infog(1)
        if info is not None and info < 0:
            raise _singular(f"MUMPS INFOG(1)={info}")
        return reused

    def _infog(self, i):
        try:
            return int(self._ksp.getPC().getFactorMatrix().getMumpsInfog(i))
        except Exception:  # pragma: no cover - old petsc4py
            return None

    def nnz(self):
        v = self._infog(29)  # effective number of entries in the factors
        if v is not None and v < 0:  # reported in millions when it overflows int32
            v = -v * 1_000_000
        return v

    def solve(self, B, transpose=False):
        if B.ndim == 1:
            self._b.getArray()[:] = B
            if transpose and not self.symmetric:
                self._ksp.solveTranspose(self._b, self._x)
            else:
                self._ksp.solve(self._b, self._x)
            return self._x.getArray().copy()
        X = np.empty_like(B, dtype=np.float64)
        for j in range(B.shape[1]):  # MUMPS multi-rhs via MatMatSolve is no faster here
            X[:, j] = self.solve(np.ascontiguousarray(B[:, j]), transpose)
        return X

    def close(self):
        for obj in (self._ksp, self._M, self._b, self._x):
            if obj is not None:
                obj.destroy()
        self._M = self._ksp = self._b = self._x = None


_BACKENDS = {"cholmod": _Cholmod, "mumps": _Mumps, "superlu": _SuperLU}


class SparseFactor:
    r"""A sparse factorization that keeps its symbolic analysis for the same pattern.

    Use :func:`sparse_factor` to make one. ``factorize(A)`` computes the factor of a
    csr matrix (numeric only when ``A`` has the pattern of the previous one and the
    backend can reuse); ``solve(B)`` applies :math:`A^{-1}` to ``B`` of shape
    ``(n,)`` or ``(n, k)`` (float64).

    Attributes
    ----------
    backend : str
        The backend in use (may change from ``cholmod`` to the fallback when a
        matrix is not positive definite).
    n_factorizations, n_analyses : int
        Numeric factorizations, and symbolic analyses among them.
    fill_reanalyses : int
        Analyses redone because the factor grew more than :data:`FILL_GROWTH`
        times over the first factorization of the pattern.
    history : list of str
        Why the backend changed, if it did.
    """

    def __init__(self, backend: str, *, symmetric: bool, fallback: str):
        self.backend = backend
        self.symmetric = bool(symmetric)
        self.fallback = fallback
        self._impl = _BACKENDS[backend](self.symmetric)
        self._pattern = None
        self._nnz0 = None
        self.n_factorizations = 0
        self.n_analyses = 0
        self.fill_reanalyses = 0
        self.history: list[str] = []

    def _same_pattern(self, A) -> bool:
        p = self._pattern
        return (p is not None and A.shape == p[0] and A.nnz == p[1].size
                and np.array_equal(A.indices, p[1]) and np.array_equal(A.indptr, p[2]))

    def factorize(self, A) -> None:
        """Factorize ``A`` (csr, square, float64)."""
        A = sp.csr_matrix(A)
        if not A.has_sorted_indices:
            A = A.sorted_indices()
        same = self._same_pattern(A)
        try:
            reused = self._impl.factorize(A, same)
        except _NotPositiveDefinite as exc:
            self.history.append(f"{self.backend}: {exc}; switched to {self.fallback}")
            self.backend = self.fallback
            self._impl = _BACKENDS[self.fallback](self.symmetric)
            self._pattern = None
            reused = self._impl.factorize(A, False)
        self.n_factorizations += 1
        if not reused:
            self.n_analyses += 1
            self._pattern = (A.shape, A.indices.copy(), A.indptr.copy())
            self._nnz0 = self._impl.nnz() if self.backend != "superlu" else None
        elif self._nnz0:
            nnz = self._impl.nnz()
            if nnz is not None and nnz > FILL_GROWTH * self._nnz0:
                # pivoting grew the factor past the reused analysis: analyse this matrix
                self.fill_reanalyses += 1
                self.n_analyses += 1
                self._impl.factorize(A, False)
                self._nnz0 = self._impl.nnz()

    def solve(self, B, *, transpose: bool = False):
        """``A^{-1} B`` (``A^{-T} B`` with ``transpose``, the same factor) for ``B`` of
        shape ``(n,)`` or ``(n, k)``."""
        return self._impl.solve(np.asarray(B, dtype=np.float64), transpose=bool(transpose))

    def factor_nnz(self):
        """Entries in the factors, or None where the backend does not say cheaply."""
        return self._impl.nnz()

    def close(self):
        """Free library objects (PETSc ones) now rather than at garbage collection."""
        close = getattr(self._impl, "close", None)
        if close is not None:
            close()


def sparse_factor(*, backend: str = "auto", symmetric: bool = False,
                  positive_definite: bool = False) -> SparseFactor:
    r"""Make a :class:`SparseFactor`.

    Parameters
    ----------
    backend : {"auto", "cholmod", "mumps", "superlu"}, keyword-only
        ``"auto"``: CHOLMOD for a symmetric positive definite matrix when
        scikit-sparse is installed, else MUMPS when PETSc has it, else SuperLU
        (fresh COLAMD per matrix, i.e. what ``spsolve`` does: never slower than it).
    symmetric, positive_definite : bool, keyword-only
        What the caller knows of the matrices (e.g. from
        :func:`femno.datagen.auto.analyze`): a symmetric matrix lets MUMPS use its
        :math:`LDL^T`; CHOLMOD needs both (a matrix that turns out not to be positive
        definite falls back to MUMPS or SuperLU).

    Returns
    -------
    SparseFactor

    >>> f = sparse_factor(backend="superlu", symmetric=True)
    >>> f.backend
    'superlu'
    >>> sparse_factor(backend="magic")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: unknown direct backend 'magic'; valid: auto, cholmod, mumps, superlu
    """
    if backend not in DIRECT_BACKENDS:
        raise InputError(f"unknown direct backend {backend!r}; valid: {', '.join(DIRECT_BACKENDS)}")
    have = available_backends()
    fallback = "mumps" if have["mumps"] else "superlu"
    if backend == "auto":
        backend = ("cholmod" if symmetric and positive_definite and have["cholmod"]
                   else fallback)
    elif backend == "cholmod" and not symmetric:
        raise InputError("backend 'cholmod' needs a symmetric positive definite matrix; "
                         "use 'mumps' or 'superlu'")
    elif not have[backend]:
        extra = {"cholmod": "direct", "mumps": "petsc"}[backend]
        raise MissingDependencyError({"cholmod": "scikit-sparse", "mumps": "MUMPS (in PETSc)"}
                                     [backend], extra, f"the {backend!r} direct backend")
    return SparseFactor(backend, symmetric=symmetric, fallback=fallback)


class FactorProjection(NamedTuple):
    """What :func:`project_factor_seconds` projects for the full matrix."""

    seconds: float  #: first factorization (analysis + numeric)
    alpha: float  #: growth exponent of the factorization time
    solve_seconds: float  #: one solve with the factor (forward + back substitution)


def project_factor_seconds(A, *, backend: str = "auto", symmetric: bool = False,
                           positive_definite: bool = False,
                           fractions=(1 / 16, 1 / 4)) -> FactorProjection | None:
    r"""Projected seconds of a first factorization of ``A``, measured on two subproblems.

    The principal submatrices of ``A`` on the first :math:`m_1 < m_2` nodes of a
    reverse Cuthill-McKee order (``fractions`` of :math:`n`: connected patches of the
    same mesh, of the same dimension) are factorized with the same backend; their times
    give the growth exponent :math:`\alpha = \log(t_2/t_1) / \log(m_2/m_1)`, clipped to
    [1, 2.5] (nested dissection costs :math:`O(n^{1.5})` flops on 2-D meshes,
    :math:`O(n^2)` on 3-D ones), and :math:`t(n) \approx t_2 (n/m_2)^{\alpha}`.  The
    solve time is projected the same way (exponent clipped to [1, 1.5]: the factor
    holds :math:`O(n \log n)` entries in 2-D, :math:`O(n^{4/3})` in 3-D).  It costs
    about :math:`(m_2/n)^{\alpha}` of the full factorization (6 % on a 3-D mesh), so a
    caller can tell a factorization that cannot pay before paying for it.

    Returns a :class:`FactorProjection`, or None when ``A`` is too small (below 1024
    rows) or a submatrix cannot be factorized (singular).

    >>> import scipy.sparse as sp
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(4096, 4096), format="csr")
    >>> p = project_factor_seconds(T, backend="superlu")
    >>> p.seconds > 0, p.solve_seconds > 0, 1.0 <= p.alpha <= 2.5
    (True, True, True)
    """
    from time import perf_counter

    from scipy.sparse.csgraph import reverse_cuthill_mckee

    A = sp.csr_matrix(A)
    n = A.shape[0]
    if n < 1024:
        return None
    perm = reverse_cuthill_mckee((abs(A) + abs(A).T).tocsr(), symmetric_mode=True)
    sizes, times, solves = [], [], []
    for frac in fractions:
        m = max(int(n * frac), 64)
        idx = np.sort(perm[:m])
        B = A[idx][:, idx].tocsr()
        f = sparse_factor(backend=backend, symmetric=symmetric,
                          positive_definite=positive_definite)
        try:
            t = perf_counter()
            f.factorize(B)
            times.append(perf_counter() - t)
            rhs = np.ones(m)
            t = perf_counter()
            for _ in range(3):
                f.solve(rhs)
            solves.append((perf_counter() - t) / 3)
        except Exception:  # noqa: BLE001 - a singular patch: no projection
            return None
        finally:
            f.close()
        sizes.append(m)

    def grow(t, lo, hi):
        return float(np.clip(np.log(max(t[1], 1e-9) / max(t[0], 1e-9))
                             / np.log(sizes[1] / sizes[0]), lo, hi))

    alpha = grow(times, 1.0, 2.5)
    return FactorProjection(times[1] * (n / sizes[1]) ** alpha, alpha,
                            solves[1] * (n / sizes[1]) ** grow(solves, 1.0, 1.5))
