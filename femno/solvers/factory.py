"""The public solver factory, :func:`krylov` (scikit-fem's solver-factory idiom).

>>> import numpy as np, scipy.sparse as sp
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(20, 20))
>>> A = (sp.kron(T, sp.eye(20)) + sp.kron(sp.eye(20), T)).tocsr()
>>> solver = krylov("cg", pc="amg", rtol=1e-10)
>>> x = solver(A, np.ones(400))
>>> solver.stats.converged, solver.stats.iterations < 20
(True, True)
"""

from __future__ import annotations

import time

import numpy as np

from femno.errors import InputError, MissingDependencyError
from femno.registry import LiveView
from femno.solvers import recycle as _rc
from femno.solvers.base import Preconditioner, check_system, check_tolerances, report_nonconvergence
from femno.solvers.methods import KRYLOV_METHODS, krylov_method
from femno.solvers.precond import SYMMETRIC, check_near_nullspace, make_preconditioner, pc_key
from femno.solvers.stats import SolveStats

__all__ = ["krylov", "KrylovSolver", "METHODS", "BACKENDS"]


#: method name -> numpy implementation (a live view of the method registry)
METHODS = LiveView(lambda: {k: m.solve for k, m in KRYLOV_METHODS.items()}, "METHODS")
BACKENDS = ("scipy", "petsc")


def _check_pc_symmetry(method: str, name: str, symmetric: bool):
    if method in KRYLOV_METHODS and KRYLOV_METHODS[method].symmetric_pc and not symmetric:
        raise InputError(
            f"preconditioner {name!r} is not symmetric, so {method!r} cannot use it; "
            "use method='fcg' (SPD matrices) or 'fgmres'/'gmres'"
        )


class KrylovSolver:
    """A configured Krylov solver: ``solver(A, b, x0=None) -> x``.

    Build it with :func:`krylov`. Each call validates the system, sets up (or
    updates, or reuses) the preconditioner, iterates, recomputes the true final
    relative residual :math:`\\|b - A x\\|_2 / \\|b\\|_2`, stores a
    :class:`~femno.solvers.stats.SolveStats` in ``solver.stats`` and appends it to
    ``solver.history``. Extra keyword arguments (as passed by ``skfem.solve``)
    are ignored.

    Attributes
    ----------
    pc : Preconditioner
        The preconditioner instance (created at the first call for a name).
    stats : SolveStats or None
        Statistics of the last solve.
    history : list of SolveStats
        Statistics of all solves.
    info : dict
        The raw ``info`` dict of the last method call.
    """

    def __init__(self, method, *, pc, rtol, atol, maxiter, restart, on_fail, reuse_pc,
                 pc_options, callback, mmax=30, recycle=False, k=None):
        self.method = method
        self.rtol, self.atol, self.maxiter, self.restart = rtol, atol, maxiter, restart
        self.on_fail, self.reuse_pc, self.callback, self.mmax = on_fail, reuse_pc, callback, mmax
        self.pc_options = dict(pc_options or {})
        if isinstance(pc, Preconditioner):
            self.pc, self.pc_name = pc, pc.name
            _check_pc_symmetry(method, pc.name, pc.symmetric)
        else:
            self.pc_name = pc_key(pc)
            self.pc = make_preconditioner(self.pc_name, **self.pc_options)
            _check_pc_symmetry(method, self.pc_name,
                               SYMMETRIC.get(self.pc_name, self.pc.symmetric))
        self.stats: SolveStats | None = None
        self.history: list[SolveStats] = []
        self.info: dict = {}
        self._key = None  # (indptr, indices, data) of the matrix the pc was built for
        self.recycle, self.k = bool(recycle), k
        self.recycle_space = None
        self.reset_recycle()

    def reset_recycle(self):
        """Forget the carried recycle/deflation space (``gcrodr``/``dcg`` with ``recycle=True``)."""
        if self.method == "gcrodr":
            self.recycle_space = _rc.RecycleSpace()
        elif self.method == "dcg":
            self.recycle_space = _rc.DeflationSpace()

    def __repr__(self):
        return (f"KrylovSolver({self.method!r}, pc={self.pc_name!r}, rtol={self.rtol}, "
                f"atol={self.atol}, maxiter={self.maxiter}, reuse_pc={self.reuse_pc})")

    def _prepare_pc(self, A) -> float:
        """Setup / update / skip; returns the seconds spent."""
        pc = self.pc
        key = self._key
        same_pattern = (
            self.reuse_pc and key is not None and pc.shape == A.shape
            and np.array_equal(key[0], A.indptr) and np.array_equal(key[1], A.indices)
        )
        if same_pattern and np.array_equal(key[2], A.data):
            return 0.0
        if same_pattern:
            pc.update(A)
        else:
            pc.setup(A)
        self._key = (A.indptr.copy(), A.indices.copy(), A.data.copy()) if self.reuse_pc else None
        _check_pc_symmetry(self.method, self.pc_name, pc.symmetric)
        return pc.setup_s

    def __call__(self, A, b, x0=None, **ignored):
        A, b, x0 = check_system(A, b, x0)
        setup_s = self._prepare_pc(A)
        M = None if self.pc.name == "none" else self.pc.apply
        entry = KRYLOV_METHODS[self.method]
        opts = entry.options(self)
        t = time.perf_counter()
        x, info = entry.solve(A, b, x0=x0, M=M, rtol=self.rtol, atol=self.atol,
                              maxiter=self.maxiter, callback=self.callback, **opts)
        solve_s = time.perf_counter() - t
        self.info = info
        bnorm = float(np.linalg.norm(b))
        rnorm = float(np.linalg.norm(b - A @ x))
        residual = rnorm / bnorm if bnorm > 0 else rnorm
        converged = bool(rnorm <= max(self.rtol * bnorm, self.atol))
        reason = info["reason"]
        if not converged and reason == "rtol":
            reason = "rtol not met by true residual"
        self.stats = SolveStats(
            method=self.method, pc=self.pc_name, backend="scipy", n=A.shape[0],
            rtol=self.rtol, iterations=info["iterations"], residuals=list(info["residuals"]),
            residual=residual, residual_kind=info["residual_kind"], converged=converged,
            setup_s=setup_s, solve_s=solve_s, reason=reason,
        )
        self.history.append(self.stats)
        if not converged:
            msg = (f"{self.method} with preconditioner {self.pc_name!r} did not converge: "
                   f"{info['iterations']} iterations, relative residual {residual:.3e} > "
                   f"rtol {self.rtol:.1e} (reason: {reason})")
            if entry.spd:
                hint = spd_hint(A, x=x, b=b, reason=reason)
                msg += f"; {hint}" if hint else ""
            report_nonconvergence(msg, on_fail=self.on_fail, stats=self.stats, x=x)
        return x


def spd_hint(A, *, x=None, b=None, reason: str = "", seed: int = 0) -> str:
    """A cheap diagnosis of why CG failed on ``A``: not symmetric, or indefinite.

    Symmetry: for random ``u, v``, :math:`|u^T A v - v^T A u|` relative to
    :math:`\\|u\\| \\|A v\\| + \\|v\\| \\|A u\\|` (three matvecs).  Definiteness:
    :math:`w^T A w \\le 0` for ``w`` among ``u``, the last iterate and its residual
    proves ``A`` indefinite; a breakdown (:math:`p^T A p \\le 0`) on a symmetric
    ``A`` says it may be.  Returns ``""`` when nothing suspicious is found.
    """
    try:
        n = A.shape[0]
        rng = np.random.default_rng(seed)
        u, v = rng.standard_normal(n), rng.standard_normal(n)
        Au, Av = A @ u, A @ v
        scale = np.linalg.norm(u) * np.linalg.norm(Av) + np.linalg.norm(v) * np.linalg.norm(Au)
        if scale > 0 and abs(u @ Av - v @ Au) > 1e-8 * scale:
            return "the matrix is not symmetric (CG needs SPD); use gmres"
        tests = [(u, Au)]
        if x is not None and np.any(x):
            tests.append((x, A @ x))
            if b is not None:
                r = b - tests[-1][1]
                tests.append((r, A @ r))
        if any(w @ Aw <= 0 for w, Aw in tests if np.any(w)):
            return ("the matrix is indefinite (w·Aw <= 0 for some w; CG needs SPD); "
                    "use minres/gmres or a direct solver")
        if reason == "breakdown":
            return ("the matrix may be indefinite (breakdown: p·Ap <= 0) or the "
                    "preconditioner not SPD; use minres/gmres or a direct solver")
    except Exception:  # noqa: BLE001 - a hint must never hide the real error
        return ""
    return ""


def krylov(method: str = "cg", *, pc="none", rtol: float = 1e-8, atol: float = 0.0,
           maxiter: int | None = None, restart: int = 30, backend: str = "scipy",
           on_fail: str = "raise", reuse_pc: bool = False, pc_options: dict | None = None,
           petsc_options: dict | None = None, callback=None, mmax: int = 30,
           recycle: bool = False, k: int | None = None, near_nullspace=None,
           block_size: int = 1):
    """Krylov solver factory: ``skfem.solve(A, b, solver=krylov("cg", pc="amg"))``.

    Solves :math:`A x = b` until :math:`\\|b - A x\\|_2 \\le \\max(\\mathrm{rtol}\\,
    \\|b\\|_2, \\mathrm{atol})`.

    Parameters
    ----------
    method : {"cg", "fcg", "gmres", "fgmres", "minres", "gcrodr", "dcg", "dcdm", "direct"}
        ``cg``: SPD ``A``, SPD fixed ``M``; ``fcg``: SPD ``A``, any (even
        variable) ``M``; ``gmres``/``fgmres``: general ``A``, right
        preconditioning (``fgmres`` for variable ``M``); ``minres``: symmetric
        indefinite ``A``, SPD ``M``; ``gcrodr``: GMRES with deflated restarting
        and recycling (:func:`~femno.solvers.recycle.gcrodr`, right PC); ``dcg``:
        deflated PCG for SPD sequences (:func:`~femno.solvers.recycle.deflated_cg`);
        ``dcdm``: deep conjugate directions for SPD ``A`` with the directions of
        ``pc`` (a learned ``"neural:MODEL"``; :func:`~femno.solvers.neural.dcdm`);
        ``direct``: returns :func:`~femno.solvers.direct`.
    pc : str or Preconditioner
        A name from :data:`~femno.solvers.precond.PRECONDITIONERS` (``"none"``,
        ``"jacobi"``, ``"ssor"``, ``"ilu"``, ``"ic"``, ``"amg"``/``"amg-sa"``,
        ``"amg-rs"``), ``"neural:PATH"`` (a learned preconditioner from a model
        file of ``femno train precond``; nonlinear ones need ``fcg``/``fgmres``/``dcdm``,
        the SPD factor model also allows ``cg``) or an instance.
    rtol, atol : float
        Relative (``> 0``) and absolute tolerance.
    maxiter : int, optional
        Iteration limit (default ``min(max(10 n, 20), 20000)``).
    restart : int
        GMRES/FGMRES restart length ``m``.
    backend : {"scipy", "petsc"}
        ``"petsc"`` returns ``femno.solvers.petsc_backend.PetscKrylov`` with the
        same options (it validates method and pc itself, accepts more of both, and
        raises :class:`~femno.errors.MissingDependencyError` without petsc4py when
        used); ``method="direct"`` maps to PETSc ``preonly`` with ``pc="lu"``.
    on_fail : {"raise", "warn", "ignore"}
        Non-convergence raises :class:`~femno.errors.ConvergenceError` (with
        ``stats`` and the last ``x``), or warns (``RuntimeWarning``) and returns
        ``x``, or only records it in ``stats.converged``.
    reuse_pc : bool
        Keep the preconditioner between calls: identical matrix -> no setup,
        same sparsity pattern with new values -> ``pc.update(A)`` (AMG keeps its
        hierarchy), otherwise a new setup.
    pc_options : dict, optional
        Keyword options of the preconditioner (``drop_tol``, ``strength``, ...).
    petsc_options : dict, optional
        Extra PETSc options database entries (PETSc backend only).
    callback : callable, optional
        ``callback(x)`` after each iteration (each restart cycle for GMRES/FGMRES).
        (The PETSc backend calls ``callback(iteration, relative_residual)``.)
    mmax : int
        FCG truncation: the number of past directions each new one is
        :math:`A`-orthogonalised against (default 30, PETSc's ``KSPFCG`` default;
        costs 2 mmax stored vectors).  With a neural
        preconditioner it matters: Darcy 64^2-1024^2 needs 22-27 iterations at
        30 against 37-50 at 3 (``benchmarks/results/precond.md``).  ``1`` is the
        Polak-Ribiere-like variant.
    recycle : bool
        ``gcrodr``/``dcg``: keep the recycle (deflation) space across calls, refreshed
        for each new matrix (``solver.reset_recycle()`` clears it); ``False``: a
        fresh space per system (``gcrodr`` still restarts with deflation, ``dcg``
        is plain PCG).
    k : int, optional
        Recycle/deflation dimension (default ``min(20, restart // 2)`` for
        ``gcrodr``, ``10`` for ``dcg``); ``gcrodr`` needs ``k < restart``.
        For ``dcdm``: directions to ``A``-orthogonalise against (default 2).
    near_nullspace : ndarray, shape (n, r), optional
        Modes the operator nearly annihilates (rigid-body motions for elasticity,
        :func:`femno.fem.nullspace.rigid_body_modes`), for the AMG preconditioners:
        pyamg's ``B`` for ``"amg"``/``"amg-sa"`` (and a learned SA ``"neural:MODEL"``),
        ``MatSetNearNullSpace`` for PETSc's
        ``"gamg"`` (and the matrix block size for ``"hypre"``'s nodal coarsening).
        Other preconditioners ignore it. See :func:`~femno.solvers.precond.check_near_nullspace`.
    block_size : int
        Consecutive rows per mesh node (the vector components of one point), with
        ``near_nullspace``; PETSc's GAMG and hypre coarsen by these blocks.

    Returns
    -------
    KrylovSolver
        (or a :class:`~femno.solvers.direct.DirectSolver` for ``method="direct"``,
        or a ``PetscKrylov`` for ``backend="petsc"``).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(100, 100), format="csr")
    >>> solver = krylov("gmres", pc="ilu", restart=10)
    >>> x = solver(A, np.ones(100))
    >>> solver.stats.method, solver.stats.pc, solver.stats.converged
    ('gmres', 'ilu', True)
    >>> krylov("cg", pc="ilu")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: preconditioner 'ilu' is not symmetric, so 'cg' cannot use it; use method='fcg' (SPD matrices) or 'fgmres'/'gmres'
    """
    method = str(method).lower()
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "scipy" and method != "direct":
        krylov_method(method)  # InputError naming the valid ones
    rtol, atol = check_tolerances(rtol, atol)
    if maxiter is not None and (int(maxiter) != maxiter or maxiter < 1):
        raise InputError(f"maxiter must be a positive integer or None, got {maxiter!r}")
    if int(restart) != restart or restart < 1:
        raise InputError(f"restart must be a positive integer, got {restart!r}")
    if int(mmax) != mmax or mmax < 1:
        raise InputError(f"mmax must be a positive integer, got {mmax!r}")
    if method == "dcdm":
        k = 2 if k is None else k
        if isinstance(k, bool) or int(k) != k or k < 0:
            raise InputError(f"k must be a non-negative integer, got {k!r}")
        k = int(k)
    elif method in KRYLOV_METHODS and KRYLOV_METHODS[method].recycling:
        if k is None:
            k = min(20, int(restart) // 2) if method == "gcrodr" else 10
        if isinstance(k, bool) or int(k) != k or k < 0:
            raise InputError(f"k must be a non-negative integer, got {k!r}")
        if method == "gcrodr" and k >= restart:
            raise InputError(f"k={k} must be smaller than restart={restart} for gcrodr")
        k = int(k)
    elif recycle or k is not None:
        raise InputError("recycle and k apply to methods 'gcrodr', 'dcg' (and k to 'dcdm') only")
    if on_fail not in ("raise", "warn", "ignore"):
        raise InputError(f"on_fail must be 'raise', 'warn' or 'ignore', got {on_fail!r}")
    if isinstance(pc, Preconditioner) and pc_options:
        raise InputError("pc_options only apply when pc is given by name")
    if petsc_options and backend != "petsc":
        raise InputError("petsc_options need backend='petsc'")

    if near_nullspace is not None:
        near_nullspace, block_size = check_near_nullspace(near_nullspace, block_size)
        if backend != "petsc" and isinstance(pc, str) and pc_key(pc) in ("amg", "amg-sa"):
            pc_options = {**(pc_options or {}), "B": near_nullspace}
        elif isinstance(pc, str) and pc_key(pc).startswith("neural:"):  # learned SA's B
            pc_options = {**(pc_options or {}), "near_nullspace": near_nullspace}
    elif block_size != 1:
        raise InputError("block_size applies together with near_nullspace")

    if backend == "petsc" and method == "gcrodr":  # femno's GCRO-DR on PETSc objects
        from femno.solvers.recycle_petsc import PetscGCRODR

        return PetscGCRODR(pc=pc, rtol=rtol, atol=atol, maxiter=maxiter, restart=restart,
                           k=k, recycle=recycle, on_fail=on_fail)
    if backend == "petsc":
        if isinstance(pc, str) and pc_key(pc).startswith("neural:"):  # femno PC via PCPYTHON
            pc = make_preconditioner(pc, **(pc_options or {}))
            pc_options = None
        try:  # lazy: petsc_backend imports petsc4py only when used
            from femno.solvers.petsc_backend import PetscKrylov
        except ModuleNotFoundError as exc:  # pragma: no cover - module ships with femno
            raise MissingDependencyError("petsc4py", "petsc", "the PETSc backend") from exc
        if method == "direct":
            method, pc = "preonly", ("lu" if isinstance(pc, str) and pc == "none" else pc)
        return PetscKrylov(method, pc=pc, rtol=rtol, atol=atol, maxiter=maxiter,
                           restart=restart, mmax=int(mmax), on_fail=on_fail, reuse_pc=reuse_pc,
                           pc_options=pc_options, petsc_options=petsc_options,
                           callback=callback, near_nullspace=near_nullspace,
                           block_size=block_size)
    if method == "direct":
        from femno.solvers.direct import direct

        return direct(backend="scipy")
    return KrylovSolver(method, pc=pc, rtol=rtol, atol=atol,
                        maxiter=None if maxiter is None else int(maxiter),
                        restart=int(restart), on_fail=on_fail, reuse_pc=bool(reuse_pc),
                        pc_options=pc_options, callback=callback, mmax=int(mmax),
                        recycle=recycle, k=k)
