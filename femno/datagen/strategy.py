r"""Per-system solve strategies used by :func:`femno.datagen.solve_sequence`.

A strategy solves one system after another and keeps whatever can be reused
between them: a sparse LU factorization (identical matrix), a fill-reducing
ordering (same sparsity pattern), an AMG hierarchy (same pattern, new values), a
recycled Krylov subspace (any neighbour). ``strategy.solve(A, b, x0)`` returns
``(x, SolveStats)``; :class:`LUStrategy` also solves blocks of right-hand sides.

Sparse direct solves
--------------------
scipy's SuperLU (:func:`scipy.sparse.linalg.splu`) cannot reuse a *symbolic*
factorization, and reusing its ordering by hand fails under partial pivoting (a
nonsymmetric convection-diffusion matrix got 81M instead of 1.6M entries in
:math:`L+U`). :class:`LUStrategy` therefore uses the libraries made for it
(:mod:`femno.solvers.factor`: CHOLMOD, MUMPS), which analyse the pattern once and
then refactorize numerically, with a fill check; which backend runs on a sequence is
measured on its first systems, a fresh SuperLU (``spsolve``) included where it can
compete. With an identical matrix the numeric factorization itself is reused.

>>> import numpy as np, scipy.sparse as sp
>>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(30, 30), format="csr")
>>> lu = LUStrategy()
>>> x, st = lu.solve(A, np.ones(30)); x2, st2 = lu.solve(A, np.arange(30.0))
>>> lu.n_factorizations, st2.setup_s == 0.0, st.converged
(1, True, True)
"""

from __future__ import annotations

import time

import numpy as np

from femno.errors import InputError
from femno.solvers.base import report_nonconvergence
from femno.solvers.stats import SolveStats

__all__ = ["range_basis", "Strategy", "LUStrategy", "KrylovStrategy", "RecycleStrategy", "SequenceRun",
           "same_matrix", "same_pattern"]


#: at most this many steps of iterative refinement of a direct solve whose true residual
#: is above rtol (each must halve the residual; ill-conditioned matrices, e.g. the zoo's
#: high-contrast family at 2.5e5 dofs, need more than one: 1.8e-8 after the first)
REFINE_STEPS = 3


def _rel_residual(A, b, x) -> float:
    bn = float(np.linalg.norm(b))
    rn = float(np.linalg.norm(b - A @ x))
    return rn / bn if bn > 0 else rn


#: a fresh SuperLU factorization (what ``spsolve`` does) is probed too when the best
#: library backend's steady cost per system is below this many seconds (where fixed
#: overheads of a library call can matter; above it, the reused analysis saves more)
SUPERLU_PROBE_S = 0.25


def _spd_hint(A):
    """``(symmetric, positive_definite_hint)`` of a csr matrix: symmetric to 1e-12 relative;
    a symmetric matrix with a positive diagonal is taken to be SPD (CHOLMOD checks)."""
    diff = abs(A - A.T)
    scale = float(abs(A).max()) if A.nnz else 1.0
    sym = bool(diff.nnz == 0 or float(diff.max()) <= 1e-12 * scale)
    return sym, bool(sym and np.all(A.diagonal() > 0))


def same_pattern(A, B) -> bool:
    """Same shape and CSR pattern (``indptr``, ``indices``)."""
    return (A.shape == B.shape and A.nnz == B.nnz and np.array_equal(A.indptr, B.indptr)
            and np.array_equal(A.indices, B.indices))


def same_matrix(A, B) -> bool:
    """Same shape, pattern and values."""
    return A is B or (same_pattern(A, B) and np.array_equal(A.data, B.data))


class Strategy:
    """Base class: ``solve(A, b, x0=None) -> (x, SolveStats)``; ``label`` says what runs."""

    label = "base"
    iterative = False

    def solve(self, A, b, x0=None):  # pragma: no cover - abstract
        raise NotImplementedError


def range_basis(B, *, tol: float = 1e-7) -> np.ndarray | None:
    r"""Orthonormal basis of the numerical range of ``B`` if it is at most half its width.

    The rank is read from the eigenvalues :math:`\lambda_j = \sigma_j^2` of the Gram
    matrix :math:`B^T B` (one GEMM): :math:`r = \#\{\sigma_j > \mathrm{tol}\,
    \sigma_1\}`; the Gram matrix resolves singular values down to about
    :math:`\sqrt{\varepsilon}\,\sigma_1`, hence the default ``tol``. Callers must
    check what the basis misses column by column.

    Parameters
    ----------
    B : ndarray, shape (n, m), float64
    tol : float, keyword-only

    Returns
    -------
    ndarray, shape (n, r), or None
        ``None`` when ``m < 4`` or ``r > m / 2`` (no gain).

    >>> rng = np.random.default_rng(0)
    >>> B = rng.standard_normal((100, 2)) @ rng.standard_normal((2, 30))
    >>> Q = range_basis(B)
    >>> Q.shape, bool(np.allclose(Q @ (Q.T @ B), B))
    ((100, 2), True)
    >>> range_basis(rng.standard_normal((100, 30))) is None
    True
    """
    m = B.shape[1]
    if m < 4:
        return None
    w, V = np.linalg.eigh(B.T @ B)
    w, V = w[::-1], V[:, ::-1]
    if not np.isfinite(w).all() or w[0] <= 0:
        return None
    r = int(np.count_nonzero(w > tol**2 * w[0]))
    if r > m // 2:
        return None
    Q, _ = np.linalg.qr(B @ V[:, :r])
    return Q


class LUStrategy(Strategy):
    """Sparse direct solves with the symbolic factorization reused for one pattern.

    ``reuse=True`` (``direct`` / ``direct-reuse``): the factor is reused for an
    identical matrix; for a new matrix of the same pattern only the numeric
    factorization is computed, by the libraries made for it
    (:func:`femno.solvers.factor.sparse_factor`: CHOLMOD for symmetric positive
    definite matrices, MUMPS through PETSc for any). Which backend runs is
    *measured*: each available one (CHOLMOD only for SPD-looking matrices) solves
    two systems, the first paying its analysis, the second timing its steady
    numeric cost; when the best of those costs is below :data:`SUPERLU_PROBE_S`
    (where a library's fixed overhead can matter) a fresh SuperLU factorization --
    what ``spsolve`` does -- is timed too. The cheapest steady cost solves the rest,
    so the strategy is never slower than ``spsolve`` beyond the measurement noise
    of the probe. ``reuse=False`` (``direct-fresh``): a fresh COLAMD ``splu`` per
    system (the ``spsolve`` baseline).

    Parameters
    ----------
    reuse : bool, keyword-only
    rtol : float, keyword-only
        If the true relative residual exceeds ``rtol``, one step of iterative
        refinement is done; ``stats.converged`` compares the final residual with it.
    lowrank : bool, keyword-only
        Block solves (:meth:`solve_block`) of right-hand sides that span a
        low-dimensional space solve only for a basis of that space (see
        :meth:`_apply_lowrank`); every column's true residual is still checked.
    backend : {"auto", "cholmod", "mumps", "superlu"}, keyword-only
        ``"auto"``: the measured choice above; a name pins that backend.

    Attributes
    ----------
    n_factorizations : int
    symbolic_reused : int
        Numeric factorizations that reused a symbolic analysis.
    backend : str or None
        The backend chosen (None until the probe has decided).
    probe : dict
        Measured steady seconds per system (factorization + solve) per backend.
    """

    iterative = False

    def __init__(self, *, reuse: bool = True, rtol: float = 1e-8, lowrank: bool = True,
                 backend: str = "auto"):
        from femno.solvers.factor import DIRECT_BACKENDS

        if backend not in DIRECT_BACKENDS:
            raise InputError(f"unknown direct backend {backend!r}; valid: "
                             f"{', '.join(DIRECT_BACKENDS)}")
        self.reuse = bool(reuse)
        self.lowrank = bool(lowrank)
        self.last_rank = None
        self.rtol = float(rtol)
        self.label = "direct-reuse" if reuse else "direct-fresh"
        self.n_factorizations = 0
        self.symbolic_reused = 0
        self.requested = backend if reuse else "superlu"
        self.backend = None if self.requested == "auto" else self.requested
        self.probe: dict = {}
        self._A = None
        self._f = None  # the SparseFactor in use
        self._factors: dict = {}  # backend -> SparseFactor (during the probe)
        self._plan = None  # backends still to probe, in order
        self._probe_t = None

    @property
    def ordering_reused(self) -> int:  # the name of earlier versions
        return self.symbolic_reused

    def _make(self, name, A):
        from femno.solvers.factor import sparse_factor

        if name not in self._factors:
            sym, pd = _spd_hint(A)
            self._factors[name] = sparse_factor(backend=name, symmetric=sym,
                                                positive_definite=pd)
        return self._factors[name]

    def _next_backend(self, A) -> str:
        """The backend that factorizes the next new matrix (probing while undecided)."""
        if self.backend is not None:
            return self.backend
        if self._plan is None:
            from femno.solvers.factor import available_backends

            have = available_backends()
            sym, pd = _spd_hint(A)
            libs = [b for b in ("cholmod", "mumps") if have[b] and (b != "cholmod" or pd)]
            self._plan = [b for b in libs for _ in range(2)]
            if not self._plan:
                self._plan = ["superlu"]
        return self._plan[0]

    def _decide(self):
        """Pick the backend once the library backends (and, where it can compete, a fresh
        SuperLU) have a measured steady cost."""
        if self._plan or self.backend is not None or not self.probe:
            return
        best = min(self.probe, key=self.probe.get)
        if "superlu" not in self.probe and self.probe[best] < SUPERLU_PROBE_S:
            self._plan = ["superlu"]
            return
        self.backend = best
        if self._f is not None and self._f.backend != best:
            self._A = self._f = None  # the next matrix is factorized by the chosen one
        self._release(keep=best)

    def finish_probe(self):
        """End the backend probe now: the cheapest backend measured so far (or the one in
        use, when none has a steady cost yet) solves the rest."""
        if self.backend is not None:
            return
        self._plan = []
        if self.probe:
            best = min(self.probe, key=self.probe.get)
        else:
            best = self._f.backend if self._f is not None else "superlu"
        self.backend = best
        if self._f is not None and self._f.backend != best:
            self._A = self._f = None  # the next matrix is factorized by the chosen one
        self._release(keep=best)

    def projected_factor_seconds(self, A) -> float | None:
        """Projected seconds of this strategy's first factorization of ``A`` on the backend
        it would use (:func:`femno.solvers.factor.project_factor_seconds`), or None."""
        from femno.solvers.factor import project_factor_seconds

        sym, pd = _spd_hint(A)
        out = project_factor_seconds(A, backend=self._next_backend(A), symmetric=sym,
                                     positive_definite=pd)
        return None if out is None else out.seconds

    @property
    def decided(self) -> bool:
        """Whether the backend probe is over (a pinned backend is decided from the start)."""
        return self.backend is not None

    def _release(self, keep):
        for name, f in list(self._factors.items()):
            if name != keep:
                f.close()
                del self._factors[name]

    def factorize(self, A) -> float:
        """Factorize ``A`` (csr) unless the stored factor is for it; returns seconds."""
        if self.reuse and self._A is not None and same_matrix(A, self._A):
            return 0.0
        t = time.perf_counter()
        name = self._next_backend(A)
        f = self._make(name, A)
        before = f.n_analyses
        f.factorize(A)
        if f.n_analyses == before:
            self.symbolic_reused += 1
        if f.backend != name:  # CHOLMOD found the matrix indefinite: that backend is out
            self._factors[f.backend] = self._factors.pop(name)
            if self._plan:
                self._plan = [b for b in self._plan if b != name]
            name = f.backend
        self._f = f
        self._A = A
        self.n_factorizations += 1
        self._probe_t = (name, t, f.n_analyses == before or name == "superlu")
        return time.perf_counter() - t

    def _probed(self):
        """After a solve during the probe: record the steady cost it measured."""
        if self._probe_t is None or self.backend is not None:
            return
        name, t0, steady = self._probe_t
        self._probe_t = None
        if self._plan and self._plan[0] == name:
            self._plan.pop(0)
        elif self._plan:
            self._plan = [b for b in self._plan if b != name]
        if steady:
            self.probe[name] = time.perf_counter() - t0
        self._decide()

    def _apply(self, B):
        return self._f.solve(B)

    def solve(self, A, b, x0=None):
        setup_s = self.factorize(A)
        t = time.perf_counter()
        x = self._apply(b)
        res = _rel_residual(A, b, x)
        for _ in range(REFINE_STEPS):  # iterative refinement while it helps
            if not (res > self.rtol and np.isfinite(res)):
                break
            x1 = x + self._apply(b - A @ x)
            res1 = _rel_residual(A, b, x1)
            if not res1 < 0.5 * res:  # stagnates at the rounding floor of an ill-conditioned A
                if res1 < res:
                    x, res = x1, res1
                break
            x, res = x1, res1
        self._probed()
        return x, self._stats(A, res, setup_s, time.perf_counter() - t)

    def solve_block(self, A, B):
        """Solve ``A X = B`` for ``B`` of shape ``(n, m)`` with one factorization.

        Returns ``(X, setup_s, solve_s, residuals)``.
        """
        setup_s = self.factorize(A)
        t = time.perf_counter()
        B = np.asfortranarray(B)  # SuperLU's block solve is ~8x slower on C-ordered B
        X = self._apply_lowrank(B)
        bn = np.linalg.norm(B, axis=0)
        R = B - A @ X
        res = np.linalg.norm(R, axis=0) / np.where(bn > 0, bn, 1.0)
        for _ in range(REFINE_STEPS):  # refinement of the columns above rtol
            bad = np.flatnonzero(res > self.rtol)
            if not len(bad):
                break
            X1 = X[:, bad] + self._apply(np.asfortranarray(R[:, bad]))
            R1 = B[:, bad] - A @ X1
            res1 = np.linalg.norm(R1, axis=0) / np.where(bn[bad] > 0, bn[bad], 1.0)
            better, halved = res1 < res[bad], res1 < 0.5 * res[bad]
            X[:, bad[better]], R[:, bad[better]] = X1[:, better], R1[:, better]
            res[bad[better]] = res1[better]
            if not halved.any():
                break
        return X, setup_s, time.perf_counter() - t, res

    def _apply_lowrank(self, B):
        r"""``A^{-1} B`` through an orthonormal basis of the numerical range of ``B``.

        When the ``m`` right-hand sides span an ``r``-dimensional space with
        ``r <= m / 2`` (fixed-matrix families whose data enter linearly through a few
        coefficients: boundary temperatures, Chebyshev coefficients), only ``r``
        triangular solves are needed: :math:`X = (A^{-1} Q)(Q^T B)` with
        :math:`Q` from :func:`range_basis`. A column that the basis misses fails
        :meth:`solve_block`'s true-residual check and gets a direct correction
        solve there. Sets ``last_rank``.
        """
        self.last_rank = None
        Q = range_basis(B) if self.lowrank else None
        if Q is None:
            return self._apply(B)
        X = np.asfortranarray(self._apply(np.asfortranarray(Q)) @ (Q.T @ B))
        self.last_rank = int(Q.shape[1])
        return X

    def close(self):
        """Free the factorizations' library objects."""
        self._release(keep=None)
        self._f = None

    def _stats(self, A, res, setup_s, solve_s):
        backend = self._f.backend if self._f is not None else "superlu"
        return SolveStats(method="direct", pc="lu", backend=backend, n=A.shape[0], rtol=self.rtol,
                          iterations=0, residuals=[1.0, res], residual=res,
                          residual_kind="true", converged=bool(res <= self.rtol),
                          setup_s=setup_s, solve_s=solve_s,
                          reason=("breakdown" if not np.isfinite(res) else "direct"
                                  if res <= self.rtol else
                                  "iterative refinement stagnated above rtol (the rounding "
                                  "floor of this matrix; a larger rtol is needed)"))


class KrylovStrategy(Strategy):
    """A :func:`femno.solvers.krylov` solver used system after system.

    ``reuse_pc=True`` keeps the preconditioner (AMG: hierarchy updated in place for a
    new matrix with the same pattern); ``False`` builds it fresh for every system.
    Extra keywords (``recycle``, ``k``) go to :func:`~femno.solvers.krylov`.
    """

    iterative = True

    def __init__(self, method, *, pc, rtol, restart=40, maxiter=None, reuse_pc=True,
                 label=None, **options):
        from femno.solvers import krylov

        petsc = options.get("backend") == "petsc"
        if petsc:  # PETSc registers its monitor once, when the KSP is made: hook it now
            options["callback"] = self._on_iteration
        self.on_iteration = None  # set by auto's probe: called after each iteration
        self.solver = krylov(method, pc=pc, rtol=rtol, restart=restart, maxiter=maxiter,
                             on_fail="ignore", reuse_pc=reuse_pc, **options)
        self.label = label or f"{method}+{self.solver.pc_name}"
        self.per_iteration_hook = petsc

    def _on_iteration(self, *args):
        if self.on_iteration is not None:
            self.on_iteration(args)

    def solve(self, A, b, x0=None):
        x = self.solver(A, b, x0=x0)
        return x, self.solver.stats


class RecycleStrategy(KrylovStrategy):
    """GCRO-DR (``kind="gcrodr"``) or deflated CG (``kind="dcg"``) with a carried space.

    ``krylov(kind, recycle=recycle, k=k, restart=restart)``: with ``recycle=True``
    the recycle space ``U`` (GCRO-DR; ``C = A M^{-1} U`` is recomputed for each new
    matrix) or deflation space ``W`` (deflated CG) is carried from system to system;
    ``False`` starts each system from an empty space (GCRO-DR then still deflates
    within its own restarts). The preconditioner is kept and updated for a new
    matrix with the same pattern.
    """

    def __init__(self, kind, *, pc, rtol, k=20, restart=40, maxiter=None, recycle=True,
                 label=None, **options):
        pc_name = pc if isinstance(pc, str) else pc.name
        super().__init__(kind, pc=pc, rtol=rtol, restart=restart, maxiter=maxiter,
                         reuse_pc=True, recycle=bool(recycle), k=int(k),
                         label=label or f"{kind}{'' if recycle else '-fresh'}+{pc_name}",
                         **options)

    def reset_recycle(self):
        """Forget the carried space."""
        self.solver.reset_recycle()


class SequenceRun:
    """Book-keeping of one :func:`solve_sequence` call (used by the ``auto`` module too).

    Positions ``t`` index the solve order, ``order[t]`` is the caller's index.
    """

    def __init__(self, As, bs, order, *, rtol, on_fail, callback, warm_start, progress):
        self.As, self.bs, self.order = As, bs, order
        self.rtol, self.on_fail, self.callback = rtol, on_fail, callback
        self.warm_start = warm_start
        self.guess = None  # optional callable i -> initial guess or None (neural warm start)
        N = len(As)
        self.solutions = [None] * N
        self.iterations = np.zeros(N, dtype=np.int64)
        self.times = np.zeros(N)
        self.residuals = np.full(N, np.nan)
        self.converged = np.zeros(N, dtype=bool)
        self.stats = [None] * N
        self.done = 0
        self._last = None
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=N, unit="system", desc="solve_sequence")

    def close(self):
        if self.bar is not None:
            self.bar.close()

    @property
    def fixed_matrix(self) -> bool:
        A0 = self.As[0]
        return all(same_matrix(A, A0) for A in self.As[1:])

    def solve(self, strategy, t: int):
        """Solve the system at position ``t`` of the order; returns its seconds."""
        i = int(self.order[t])
        A, b = self.As[i], self.bs[i]
        t0 = time.perf_counter()  # the time includes computing the initial guess
        x0 = self.initial_guess(i, strategy)
        x, stats = strategy.solve(A, b, x0)
        dt = time.perf_counter() - t0
        self._record(i, t, x, stats, dt, A, b)
        return dt

    def initial_guess(self, i: int, strategy):
        """x0 for system ``i``: ``guess(i)`` if given and not None, else the previous
        solution with ``warm_start``, else None (direct strategies ignore it)."""
        if not strategy.iterative:
            return None
        x0 = self.guess(i) if self.guess is not None else None
        if x0 is None and self.warm_start:
            x0 = self._last
        return x0

    def solve_block(self, strategy, positions, *, chunk: int = 256):
        """Solve the systems at ``positions`` (same matrix) as blocks of right-hand sides."""
        positions = list(positions)
        for s in range(0, len(positions), chunk):
            part = positions[s:s + chunk]
            idx = [int(self.order[t]) for t in part]
            A = self.As[idx[0]]
            B = np.empty((A.shape[0], len(idx)), order="F")
            for j, i in enumerate(idx):
                B[:, j] = self.bs[i]
            t0 = time.perf_counter()
            X, setup_s, solve_s, res = strategy.solve_block(A, B)
            share = (time.perf_counter() - t0) / len(idx)
            for j, (t, i) in enumerate(zip(part, idx, strict=True)):
                r = float(res[j])
                st = SolveStats(method="block", pc="lu", backend="scipy", n=A.shape[0],
                                rtol=self.rtol, iterations=0, residuals=[1.0, r], residual=r,
                                converged=bool(r <= self.rtol), setup_s=setup_s / len(idx),
                                solve_s=solve_s / len(idx), reason="direct")
                self._record(i, t, np.ascontiguousarray(X[:, j]), st, share, A, self.bs[i],
                             residual=r)

    def _record(self, i, t, x, stats, dt, A, b, residual=None):
        if residual is None:
            bn = float(np.linalg.norm(b))
            rn = float(np.linalg.norm(b - A @ x))
            residual = rn / bn if bn > 0 else rn
        conv = bool(residual <= self.rtol)
        self.solutions[i] = x
        self.iterations[i] = int(stats.iterations)
        self.times[i] = dt
        self.residuals[i] = residual
        self.converged[i] = conv
        self.stats[i] = stats
        self.done += 1
        self._last = x
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(i, x, stats)
        if not conv:
            msg = (f"system {i} (solve position {t}) did not converge: {stats.iterations} "
                   f"iterations, relative residual {residual:.3e} > rtol {self.rtol:.1e} "
                   f"({stats.method}+{stats.pc}, reason: {stats.reason})")
            report_nonconvergence(msg, on_fail=self.on_fail, stats=stats, x=x, stacklevel=4)
