"""The PETSc KSP solver behind femno's solver interface: :class:`PetscKrylov`.

Stopping test
-------------
The solvers are configured so that PETSc's test is scipy's
``||b - A x_k||_2 <= max(rtol ||b||_2, atol)`` on the *unpreconditioned* residual:

============  ==========  =================  ==========================================
method        KSP type    PC side            norm type
============  ==========  =================  ==========================================
cg            ``cg``      left               unpreconditioned (CG computes an extra
                                             ``||r_k||`` per iteration)
fcg           ``fcg``     left               unpreconditioned
gmres         ``gmres``   **right**          unpreconditioned (left PC only supports
                                             the preconditioned norm)
fgmres        ``fgmres``  right              unpreconditioned (right only)
minres        ``minres``  left               preconditioned (the only norm PETSc
                                             3.18's MINRES supports with a PC; with
                                             ``pc="none"`` it is the true norm)
bicgstab      ``bcgs``    right              unpreconditioned
preonly       ``preonly`` left               none (one PC application: a direct solve
                                             with ``pc="lu"``)
============  ==========  =================  ==========================================

The residuals PETSc monitors are *recursively updated* (CG) or least-squares
estimates (GMRES); they equal the true residual in exact arithmetic.  After every
solve the true residual ``||b - A x|| / ||b||`` is recomputed and stored in
``stats.residual``; a solve counts as converged when PETSc reports convergence and the
true residual is within ``GAP_FACTOR`` (10) times the tolerance (round-off gap).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings

import numpy as np

from femno.errors import InputError
from femno.solvers.base import report_nonconvergence
from femno.solvers.petsc_backend._import import comm_or_self as _comm
from femno.solvers.petsc_backend._import import get_petsc, loaded_petsc
from femno.solvers.petsc_backend.convert import (
    all_ranks,
    check_system_petsc,
    fill_local,
    from_petsc_vec,
    ownership_range,
    set_csr_rows,
    to_petsc_mat,
    to_petsc_vec,
)
from femno.solvers.petsc_backend.info import external_packages
from femno.solvers.petsc_backend.options import (
    DIRECT_PCS,
    METHODS,
    check_method,
    check_settings,
    default_maxiter,
    option_entries,
    option_value,
    resolve_pc,
    unused_options,
)
from femno.solvers.petsc_backend.pcbridge import python_pc
from femno.solvers.petsc_backend.report import (
    failure_message,
    reason_name,
    residual_history,
    short_reason,
)
from femno.solvers.precond import check_near_nullspace
from femno.solvers.stats import SolveStats

__all__ = ["PetscKrylov", "MAX_RESTARTS"]

#: How often a solve is restarted from its iterate when PETSc reports convergence but
#: the true residual is still above the tolerance.
MAX_RESTARTS = 3

_PREFIX_COUNTER = itertools.count()


class PetscKrylov:
    """A PETSc KSP solver with femno's solver interface: ``x = solver(A, b, x0)``.

    Parameters
    ----------
    method : str
        ``"cg"``, ``"fcg"``, ``"gmres"``, ``"fgmres"``, ``"minres"``, ``"bicgstab"``, or
        ``"preonly"`` (one PC application; with ``pc="lu"`` a direct solve).
    pc : str or Preconditioner, keyword-only
        ``"none"``, ``"jacobi"``, ``"sor"`` (symmetric SOR), ``"ilu"``, ``"ic"``/``"icc"``,
        ``"gamg"``/``"amg"`` (PETSc's smoothed aggregation), ``"hypre"`` (BoomerAMG),
        ``"lu"``/``"cholesky"`` (MUMPS when PETSc has it, else SuperLU(_dist), else
        PETSc's own), ``"petsc:<type>"`` for any other PETSc PC type, or a femno
        :class:`Preconditioner` instance run through :func:`python_pc`.  In parallel
        ``ilu``/``icc`` become block Jacobi with ILU(0)/ICC(0) blocks.
    rtol, atol : float, keyword-only
        Stop when ``||b - A x|| <= max(rtol ||b||, atol)``.
    maxiter : int, optional, keyword-only
        Iteration limit (Krylov iterations, all restarts together); default that of the
        scipy backend, ``10 n`` clipped to ``[20, 20000]``.
    restart : int, keyword-only
        GMRES/FGMRES restart length.
    mmax : int, keyword-only
        FCG: directions kept for the A-orthogonalization, with PETSc's ``standard``
        truncation (``-ksp_fcg_mmax``, ``-ksp_fcg_truncation_type``), so that the
        iterates are those of femno's :func:`femno.solvers.krylov.fcg` with the same
        ``mmax`` (default 30 as in :func:`femno.solvers.krylov`'s factory; PETSc's own
        truncation default, ``notay``, differs).
    on_fail : {"raise", "warn", "ignore"}, keyword-only
        What a solve that does not converge does: raise
        :class:`~femno.errors.ConvergenceError`, warn, or only record it in ``stats``.
    reuse_pc : bool or "frozen", keyword-only
        ``True``: a matrix with the *same sparsity pattern* as the previous call keeps
        the PETSc ``Mat``/``KSP``/``PC``; its values are overwritten in place and PETSc
        redoes ``PCSetUp`` with ``SAME_NONZERO_PATTERN``, which keeps what the PC can
        keep: ILU/ICC/LU keep the symbolic factorisation (and MUMPS its analysis),
        GAMG keeps its aggregates and prolongators (``pc_gamg_reuse_interpolation``
        is set; only the Galerkin coarse operators are recomputed), hypre redoes its
        whole setup (BoomerAMG reuses nothing), a femno preconditioner gets
        ``update(A)``.  Identical values (same pattern and bitwise equal data) skip the
        PC setup entirely.  ``"frozen"``: like ``True`` but PETSc's
        ``PCSetReusePreconditioner`` keeps the old preconditioner *unchanged* for new
        values (a lagged preconditioner; the Krylov method uses the new matrix).
    pc_options : dict, optional, keyword-only
        Options of a named PC, given without the PC's option prefix: for ``gamg``
        ``{"threshold": 0.05}`` means ``-pc_gamg_threshold 0.05``; the prefixes are
        ``pc_jacobi_``, ``pc_sor_``, ``pc_factor_`` (ilu/icc/lu/cholesky), ``pc_gamg_``
        and ``pc_hypre_`` (e.g. ``{"boomeramg_strong_threshold": 0.5}``).  For
        ``lu``/``cholesky``, ``{"solver": "superlu"}`` picks the factorisation package.
        Not allowed with a Preconditioner instance (configure the instance).
    petsc_options : dict, optional, keyword-only
        Raw PETSc options ``{name: value}`` (leading ``-`` optional, ``None`` for a
        flag, booleans as ``true``/``false``), e.g. ``{"ksp_max_it": 5}`` or
        ``{"pc_hypre_boomeramg_strong_threshold": 0.5}``.  They are put into PETSc's
        options database under a prefix unique to this solver (``femno<k>_``) and
        applied by ``KSPSetFromOptions`` *after* femno's own settings, so they win.
        They stay in the database until the solver is closed/garbage collected
        (some, like ``mat_mumps_icntl_*``, are read during ``PCSetUp``).  After the
        first solve, ``petsc_options`` and ``pc_options`` that PETSc never read (misspelled, or meant for another KSP/PC type) are reported in a
        :class:`UserWarning`.
    callback : callable, optional, keyword-only
        ``callback(iteration, relative_residual)`` from a KSP monitor.
    comm : PETSc.Comm, optional, keyword-only
        Default ``PETSc.COMM_SELF``.  With ``PETSc.COMM_WORLD`` under ``mpiexec`` every
        rank passes the same global ``A``, ``b`` and keeps its own rows (or passes a
        distributed PETSc ``Mat``/``Vec`` directly); every rank gets the full solution.
    near_nullspace : ndarray, shape (n, r), optional, keyword-only
        Near-nullspace modes (e.g. rigid-body motions) set on the matrix with
        ``MatSetNearNullSpace`` (orthonormalised first): GAMG builds its prolongators
        from them. Needs scipy matrices (not a PETSc ``Mat`` passed in).
    block_size : int, keyword-only
        Rows per mesh node, with ``near_nullspace``: the matrix gets this block size
        (GAMG aggregates nodes), and ``pc="hypre"`` coarsens by nodes
        (``-pc_hypre_boomeramg_nodal_coarsen 6``: 2-D elasticity at 260k dofs needs
        34 instead of several hundred CG iterations).

    Attributes
    ----------
    stats : SolveStats
        Statistics of the last solve (``backend="petsc"``); ``setup_s`` is
        ``KSPSetUp`` (which runs ``PCSetUp``), ``solve_s`` is ``KSPSolve``.
    history : list of float
        Relative residual history ``||r_k|| / ||b||`` of the last solve (the norm in
        ``stats.residual_kind``), entry 0 for the initial guess.
    petsc_reason : str
        PETSc's ``KSPConvergedReason`` name of the last solve (e.g. ``"DIVERGED_MAX_IT"``).
    convert_s : float
        Seconds spent converting numpy/scipy data to PETSc in the last call.
    restarts : int
        Continuations of the last solve because the true residual was above the
        tolerance when PETSc stopped (normally 0).
    ksp : PETSc.KSP or None
        The KSP of the last solve (for inspection, e.g. ``solver.ksp.view()``).
    """

    def __init__(
        self,
        method: str = "cg",
        *,
        pc="none",
        rtol: float = 1e-8,
        atol: float = 0.0,
        maxiter: int | None = None,
        restart: int = 30,
        mmax: int = 30,
        on_fail: str = "raise",
        reuse_pc=False,
        pc_options: dict | None = None,
        petsc_options: dict | None = None,
        callback=None,
        comm=None,
        near_nullspace=None,
        block_size: int = 1,
    ):
        self.method = check_method(method)
        self._pc_type, self.pc_name, self._pc_obj = resolve_pc(pc)
        check_settings(
            rtol=rtol,
            atol=atol,
            maxiter=maxiter,
            restart=restart,
            on_fail=on_fail,
            reuse_pc=reuse_pc,
            pc_options=pc_options,
            petsc_options=petsc_options,
            callback=callback,
            pc_instance=self._pc_obj is not None,
        )
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.maxiter = None if maxiter is None else int(maxiter)
        self.restart = int(restart)
        if int(mmax) != mmax or mmax < 1:
            raise InputError(f"mmax must be a positive integer, got {mmax!r}")
        self.mmax = int(mmax)
        self.on_fail = on_fail
        self.reuse_pc = reuse_pc
        self.pc_options = dict(pc_options or {})
        self.petsc_options = dict(petsc_options or {})
        self.callback = callback
        self.comm = comm
        self.block_size = 1
        self._nullspace = None  # orthonormal near-nullspace columns (n, r)
        if near_nullspace is not None:
            B, self.block_size = check_near_nullspace(near_nullspace, block_size)
            self._nullspace = np.linalg.qr(B)[0]  # MatNullSpace wants orthonormal vectors
        elif block_size != 1:
            raise InputError("block_size applies together with near_nullspace")
        self.prefix = f"femno{next(_PREFIX_COUNTER)}_"
        self._options_set: list[str] = []
        self._user_options: dict = {}  # full option name -> where the user gave it
        self._options_checked = False  # unused user options looked for (first solve)
        self.stats = SolveStats(
            method=self.method, pc=self.pc_name, backend="petsc", rtol=self.rtol
        )
        self.history: list = []
        self.petsc_reason = ""
        self.convert_s = 0.0
        self.restarts = 0
        self.ksp = None
        self._mat = None
        self._pattern = None
        self._data = None

    # ------------------------------------------------------------------ housekeeping

    def __repr__(self):
        return (
            f"PetscKrylov({self.method!r}, pc={self.pc_name!r}, rtol={self.rtol:g}, "
            f"atol={self.atol:g}, maxiter={self.maxiter})"
        )

    def close(self):
        """Destroy the PETSc objects and remove this solver's options from the database."""
        PETSc = loaded_petsc()  # never import PETSc just to clean up
        if PETSc is None:
            return
        try:
            if PETSc.Sys.isFinalized():
                return
            opts = PETSc.Options()
            for name in self._options_set:
                opts.delValue(name)
            self._options_set = []
            if self.ksp is not None:
                self.ksp.destroy()
            if self._mat is not None:
                self._mat.destroy()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
        self.ksp = None
        self._mat = None
        self._pattern = None
        self._data = None

    def __del__(self):
        self.close()

    # ---------------------------------------------------------------- configuration

    def _push_options(self, size: int, n: int):
        """Fill the options database under this solver's prefix: femno defaults first,
        then pc_options, then petsc_options (the user's options win)."""
        PETSc = get_petsc()
        opts = PETSc.Options()
        for name in self._options_set:
            opts.delValue(name)
        self._options_set = []
        entries, origin = option_entries(
            self._pc_type, self.pc_options, self.petsc_options, size=size, reuse_pc=self.reuse_pc
        )
        if self.method == "fcg":  # femno's fcg truncation; the user's options still win
            entries = {"ksp_fcg_mmax": self.mmax, "ksp_fcg_truncation_type": "standard",
                       **entries}
        if self._pc_type == "hypre" and self.block_size > 1:  # nodal coarsening, user wins
            entries = {"pc_hypre_boomeramg_nodal_coarsen": 6, **entries}
        self._user_options = {}
        for key, val in entries.items():
            name = "-" + self.prefix + key
            opts.setValue(name, option_value(val))
            self._options_set.append(name)
            if key in origin:
                self._user_options[name] = origin[key]

    def _warn_unused_options(self):
        """Warn (after the first solve) about user options PETSc never read: a
        misspelled name or an option of another KSP/PC type would otherwise be ignored
        silently.  Every KSP of this solver gets the same options and configuration,
        so one check per solver suffices."""
        if self._options_checked:
            return
        self._options_checked = True
        unused = unused_options(list(self._user_options)) if self._user_options else None
        if unused:
            names = ", ".join(f"{name} (from {self._user_options[name]})" for name in unused)
            warnings.warn(
                f"{self!r}: PETSc never used option(s) {names}; misspelled, or not "
                f"applicable to KSP {METHODS[self.method][0]!r} with PC {self._pc_type!r}?",
                UserWarning,
                stacklevel=3,
            )

    def _direct_solver_type(self, size: int) -> str:
        ext = external_packages()
        if ext.get("mumps"):
            return "mumps"
        if size > 1:
            return "superlu_dist" if ext.get("superlu_dist") else "mumps"
        return "superlu" if ext.get("superlu") and self._pc_type == "lu" else "petsc"

    def _make_ksp(self, Amat, n: int):
        PETSc = get_petsc()
        comm = Amat.getComm()
        size = comm.getSize()
        ksp = PETSc.KSP().create(comm)
        ksp.setOptionsPrefix(self.prefix)
        ktype, side, norm = METHODS[self.method]
        ksp.setType(ktype)
        ksp.setOperators(Amat, Amat)
        pc = ksp.getPC()
        t = self._pc_type
        if t == "python":
            python_pc(self._pc_obj, reuse=bool(self.reuse_pc), ksp_pc=pc)
        elif size > 1 and t in ("ilu", "icc"):
            pc.setType("bjacobi")
        else:
            pc.setType(t)
            if t == "hypre":
                pc.setHYPREType("boomeramg")

            elif t in DIRECT_PCS:
                pc.setFactorSolverType(self._direct_solver_type(size))
        ksp.setPCSide({"left": PETSc.PC.Side.LEFT, "right": PETSc.PC.Side.RIGHT}[side])
        ksp.setNormType(
            {
                "unpreconditioned": PETSc.KSP.NormType.UNPRECONDITIONED,
                "preconditioned": PETSc.KSP.NormType.PRECONDITIONED,
                "none": PETSc.KSP.NormType.NONE,
            }[norm]
        )
        if self.method in ("gmres", "fgmres"):
            ksp.setGMRESRestart(self.restart)
        maxiter = self.maxiter if self.maxiter is not None else default_maxiter(n)
        ksp.setTolerances(rtol=self.rtol, atol=self.atol, divtol=1e50, max_it=maxiter)
        ksp.setInitialGuessNonzero(False)
        ksp.setConvergenceHistory(length=min(maxiter, 100_000) + 1, reset=True)
        if self.callback is not None:
            ksp.setMonitor(self._monitor)
        self._push_options(size, n)
        ksp.setFromOptions()
        if self.reuse_pc == "frozen":
            ksp.getPC().setReusePreconditioner(True)
        return ksp

    def _monitor(self, ksp, it, rnorm):
        bnorm = getattr(self, "_bnorm", 1.0) or 1.0
        self.callback(int(it), float(rnorm) / bnorm)

    # ------------------------------------------------------------------------- solve

    def _prepare_matrix(self, A, comm):
        """Return (Amat, n, new) where new says whether a fresh KSP is needed."""
        PETSc = get_petsc()
        if isinstance(A, PETSc.Mat):
            self._pattern = None
            self._data = None
            return A, A.getSize()[0], True
        N = A.shape[0]
        if comm.getSize() > 1:
            rstart, rend = ownership_range(N, comm)
            block = A[rstart:rend]
        else:
            block = A
        if not block.has_sorted_indices:
            block = block.sorted_indices()
        same = (
            self.reuse_pc
            and self._mat is not None
            and self.ksp is not None
            and self._pattern is not None
            and self._pattern[0].shape == block.indptr.shape
            and self._pattern[1].shape == block.indices.shape
            and self._mat.getSize() == (N, N)
            and np.array_equal(self._pattern[0], block.indptr)
            and np.array_equal(self._pattern[1], block.indices)
        )
        same = all_ranks(bool(same), comm)
        if same:
            unchanged = all_ranks(bool(np.array_equal(self._data, block.data)), comm)
            if not unchanged:
                # overwrite the values in place: same Mat, new state -> PC re-setup
                # with SAME_NONZERO_PATTERN
                set_csr_rows(self._mat, block)
                self._mat.assemble()
                self._data = block.data.copy()
            return self._mat, N, False
        if self._mat is not None:
            self._mat.destroy()
        self._mat = to_petsc_mat(block, comm, block_size=self.block_size)
        if self._nullspace is not None:
            self._set_near_nullspace(self._mat, N, comm)
        self._pattern = (block.indptr.copy(), block.indices.copy())
        self._data = block.data.copy()
        return self._mat, N, True

    def _set_near_nullspace(self, Amat, N, comm):
        PETSc = get_petsc()
        if self._nullspace.shape[0] != N:
            raise InputError(f"near_nullspace has {self._nullspace.shape[0]} rows for a "
                             f"system of size {N}")
        rstart, rend = Amat.getOwnershipRange()
        vecs = [to_petsc_vec(np.ascontiguousarray(col[rstart:rend]), comm)
                for col in self._nullspace.T]
        Amat.setNearNullSpace(PETSc.NullSpace().create(vectors=vecs, comm=comm))

    def __call__(self, A, b, x0=None, **ignored):
        """Solve ``A x = b``.

        Parameters
        ----------
        A : scipy sparse matrix, 2-D array or PETSc.Mat
            The system matrix (the same global matrix on every rank in parallel, or a
            distributed PETSc ``Mat`` on ``comm``).
        b : array_like or PETSc.Vec
            Right-hand side (global on every rank, or a PETSc ``Vec`` laid out like
            ``A``'s rows).
        x0 : array_like or PETSc.Vec, optional
            Initial guess (default zero).

        Returns
        -------
        ndarray
            The solution (the full vector on every rank).

        Raises
        ------
        InputError
            Malformed system.
        ConvergenceError
            The solve did not converge and ``on_fail="raise"``.
        """
        PETSc = get_petsc()
        t0 = time.perf_counter()
        Acsr, b_np, x0, comm = check_system_petsc(A, b, x0, _comm(self.comm))
        Amat, n, new = self._prepare_matrix(Acsr, comm)
        xvec, bvec = Amat.createVecs()
        fill_local(bvec, b if isinstance(b, PETSc.Vec) else b_np)
        nonzero_guess = x0 is not None
        if nonzero_guess:
            fill_local(xvec, x0)
        else:
            xvec.set(0.0)
        self.convert_s = time.perf_counter() - t0

        bnorm = bvec.norm()
        self._bnorm = bnorm
        stats = SolveStats(
            method=self.method, pc=self.pc_name, backend="petsc", n=int(n), rtol=self.rtol
        )
        if bnorm == 0.0:
            x = np.zeros(n)
            stats.residuals = [0.0]
            stats.residual = 0.0
            stats.converged = True
            stats.reason = "zero rhs"
            self.stats, self.history, self.petsc_reason = stats, [0.0], "ZERO_RHS"
            return x

        if new or self.ksp is None:
            if self.ksp is not None:
                self.ksp.destroy()
            self.ksp = self._make_ksp(Amat, n)
        ksp = self.ksp
        ksp.setInitialGuessNonzero(nonzero_guess)

        t = time.perf_counter()
        ksp.setUp()
        # KSPSetUp does not redo PCSetUp for new values of an already set up operator
        # (KSPSolve would, inside its timing): do it here so setup_s measures it
        ksp.getPC().setUp()
        stats.setup_s = time.perf_counter() - t

        rtol0, _, _, maxiter = ksp.getTolerances()  # after setFromOptions: the user's win
        tol_abs = max(self.rtol * bnorm, self.atol)
        direct = ksp.getType() == "preonly" and ksp.getPC().getType() in DIRECT_PCS
        r = bvec.duplicate()
        its, hist, restarts, solve_s = 0, [], 0, 0.0
        try:
            while True:
                t = time.perf_counter()
                ksp.solve(bvec, xvec)
                solve_s += time.perf_counter() - t
                code = int(ksp.getConvergedReason())
                its += int(ksp.getIterationNumber())
                h = [float(v) / bnorm for v in ksp.getConvergenceHistory()]
                hist.extend(h if not hist else h[1:])
                Amat.mult(xvec, r)
                r.aypx(-1.0, bvec)  # r = b - A x
                rnorm = r.norm()
                if (
                    direct
                    or code <= 0
                    or rnorm <= tol_abs
                    or restarts >= MAX_RESTARTS
                    or its >= maxiter
                ):
                    break
                # PETSc stopped on its recursive/preconditioned residual but the true one
                # is above the tolerance: continue from the current iterate (this resets
                # the recursive residual to the true one).  A preconditioned norm is
                # not the true one at all: tighten its tolerance by the observed gap.
                restarts += 1
                ksp.setInitialGuessNonzero(True)
                if ksp.getNormType() == PETSc.KSP.NormType.PRECONDITIONED:
                    cur_rtol = ksp.getTolerances()[0]
                    ksp.setTolerances(rtol=cur_rtol * min(0.5, 0.5 * tol_abs / rnorm))
                ksp.setTolerances(max_it=maxiter - its)
        finally:
            r.destroy()
            if restarts:
                ksp.setTolerances(rtol=rtol0, max_it=maxiter)
        self._warn_unused_options()
        stats.solve_s = solve_s
        true_res = rnorm / bnorm
        name = reason_name(code)
        self.petsc_reason = name
        self.restarts = restarts
        x = from_petsc_vec(xvec)

        kind, hist = residual_history(ksp, bvec, bnorm, hist, self._pc_type)
        if not hist:  # no norm computed (preonly): report the true residuals
            hist = [1.0 if not nonzero_guess else math.nan, float(true_res)]
        if code > 0:
            converged = bool(np.isfinite(true_res)) if direct else bool(rnorm <= tol_abs)
            short = short_reason(name) if converged else "rtol not met by true residual"
        else:
            converged = False
            short = short_reason(name)

        stats.iterations = its
        stats.residuals = hist
        stats.residual = float(true_res)
        stats.residual_kind = kind
        stats.converged = converged
        stats.reason = short
        self.stats = stats
        self.history = hist

        if not converged:
            msg = failure_message(self, name, its, true_res, code, kind)
            report_nonconvergence(msg, on_fail=self.on_fail, stats=stats, x=x)
        return x
