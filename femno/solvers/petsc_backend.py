"""PETSc backend: Krylov solvers and preconditioners of PETSc behind femno's solver API.

Everything here works on numpy/scipy data at the boundary (``PetscKrylov(A, b) -> x``
with a scipy sparse ``A`` and numpy ``b``), so a PETSc solver is a drop-in replacement
for the scipy backend of :func:`femno.solvers.krylov`.  In parallel (``mpiexec``) each
rank owns a contiguous block of rows taken from PETSc's default layout
(:func:`ownership_range`); see :mod:`femno.solvers.petsc_mpi`.

petsc4py is imported lazily: importing this module never fails, using it without
petsc4py raises :class:`~femno.errors.MissingDependencyError`.  PETSc is initialised
with no command-line arguments (so femno's own flags never reach PETSc's option
parser); global PETSc options can still be given through the ``PETSC_OPTIONS``
environment variable, per-solver options through ``petsc_options``.

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
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

from femno.errors import ConvergenceError, InputError, MissingDependencyError
from femno.solvers.base import Preconditioner, check_system
from femno.solvers.stats import SolveStats

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

#: femno method name -> (PETSc KSP type, PC side, norm type); side/norm as strings.
METHODS = {
    "cg": ("cg", "left", "unpreconditioned"),
    "fcg": ("fcg", "left", "unpreconditioned"),
    "gmres": ("gmres", "right", "unpreconditioned"),
    "fgmres": ("fgmres", "right", "unpreconditioned"),
    "minres": ("minres", "left", "preconditioned"),
    "bicgstab": ("bcgs", "right", "unpreconditioned"),
    "preonly": ("preonly", "left", "none"),
}

#: femno preconditioner name -> PETSc PC type (``"petsc:<type>"`` passes any PETSc type).
PCS = {
    "none": "none",
    "jacobi": "jacobi",
    "sor": "sor",
    "ilu": "ilu",
    "ic": "icc",
    "icc": "icc",
    "gamg": "gamg",
    "amg": "gamg",
    "hypre": "hypre",
    "boomeramg": "hypre",
    "lu": "lu",
    "cholesky": "cholesky",
}

# prefix that pc_options keys get for each PETSc PC type
_PC_OPTION_PREFIX = {
    "jacobi": "pc_jacobi_",
    "sor": "pc_sor_",
    "ilu": "pc_factor_",
    "icc": "pc_factor_",
    "lu": "pc_factor_",
    "cholesky": "pc_factor_",
    "gamg": "pc_gamg_",
    "hypre": "pc_hypre_",
}

_DIRECT_PCS = ("lu", "cholesky")

#: How often a solve is restarted from its iterate when PETSc reports convergence but
#: the true residual is still above the tolerance.
MAX_RESTARTS = 3

_PREFIX_COUNTER = itertools.count()
_PETSC = None
_EXTERNAL_CACHE: dict = {}


# ----------------------------------------------------------------------------- import


def get_petsc():
    """Return the ``petsc4py.PETSc`` module, initialising PETSc on first use.

    Raises
    ------
    MissingDependencyError
        If petsc4py is not installed.
    """
    global _PETSC
    if _PETSC is None:
        try:
            import petsc4py

            if "petsc4py.PETSc" not in sys.modules:
                petsc4py.init(["femno"])  # keep femno's argv away from PETSc's parser
            from petsc4py import PETSc
        except ImportError as exc:
            raise MissingDependencyError("petsc4py", "petsc", "the PETSc backend") from exc
        _PETSC = PETSc
    return _PETSC


def have_petsc() -> bool:
    """True when petsc4py can be imported (does not initialise PETSc)."""
    import importlib.util

    return importlib.util.find_spec("petsc4py") is not None


def _comm(comm):
    PETSc = get_petsc()
    return PETSc.COMM_SELF if comm is None else comm


# ----------------------------------------------------------------------- conversion


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


def to_petsc_mat(A, comm=None, *, global_rows: bool = False):
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
    M = PETSc.Mat().createAIJ(size=((nloc, N), (nloc, N)), csr=csr, comm=comm)
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


def _local_csr(M) -> sp.csr_matrix:
    """The square matrix a Python PC sees: the whole matrix in serial, the diagonal
    (own rows x own columns) block in parallel."""
    if M.getComm().getSize() > 1:
        M = M.getDiagonalBlock()
    indptr, indices, data = M.getValuesCSR()
    n = M.getLocalSize()[0]
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


# -------------------------------------------------------------------- Python bridge


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


# --------------------------------------------------------------------------- solver


def _reason_names():
    PETSc = get_petsc()
    out = {}
    for name in dir(PETSc.KSP.ConvergedReason):
        if name.startswith(("CONVERGED_", "DIVERGED_")):
            out.setdefault(getattr(PETSc.KSP.ConvergedReason, name), name)
    return out


def _short_reason(name: str) -> str:
    if name in ("CONVERGED_RTOL", "CONVERGED_RTOL_NORMAL"):
        return "rtol"
    if name in ("CONVERGED_ATOL", "CONVERGED_ATOL_NORMAL"):
        return "atol"
    if name == "CONVERGED_ITS":
        return "direct"
    if name == "CONVERGED_HAPPY_BREAKDOWN":
        return "rtol"
    if name in ("DIVERGED_MAX_IT", "DIVERGED_ITS"):
        return "maxiter"
    if name.startswith("DIVERGED_BREAKDOWN"):
        return "breakdown"
    if name.startswith("DIVERGED_INDEFINITE"):
        return "indefinite"
    return name.lower()


def _default_maxiter(n: int) -> int:
    try:  # the scipy backend's default, so both backends stop at the same count
        from femno.solvers.krylov import default_maxiter
    except ImportError:  # pragma: no cover - scipy layer not present
        return min(max(10 * n, 20), 20_000)
    return int(default_maxiter(n))


def _option_value(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


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
        (some, like ``mat_mumps_icntl_*``, are read during ``PCSetUp``).
    callback : callable, optional, keyword-only
        ``callback(iteration, relative_residual)`` from a KSP monitor.
    comm : PETSc.Comm, optional, keyword-only
        Default ``PETSc.COMM_SELF``.  With ``PETSc.COMM_WORLD`` under ``mpiexec`` every
        rank passes the same global ``A``, ``b`` and keeps its own rows (or passes a
        distributed PETSc ``Mat``/``Vec`` directly); every rank gets the full solution.

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
        on_fail: str = "raise",
        reuse_pc=False,
        pc_options: dict | None = None,
        petsc_options: dict | None = None,
        callback=None,
        comm=None,
    ):
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise InputError(
                f"unknown PETSc Krylov method {method!r}; choose one of {sorted(METHODS)}"
            )
        self.method = method.lower()
        if isinstance(pc, str):
            key = pc.lower()
            if key.startswith("petsc:") and len(key) > 6:
                self._pc_type = key[6:]
            elif key in PCS:
                self._pc_type = PCS[key]
            else:
                raise InputError(
                    f"unknown PETSc preconditioner {pc!r}; choose one of {sorted(PCS)}, "
                    "'petsc:<type>' or a femno Preconditioner instance"
                )
            self.pc_name = key
            self._pc_obj = None
        elif pc is None:
            self._pc_type, self.pc_name, self._pc_obj = "none", "none", None
        elif isinstance(pc, Preconditioner) or (
            callable(getattr(pc, "setup", None)) and callable(getattr(pc, "apply", None))
        ):
            self._pc_type = "python"
            self.pc_name = str(getattr(pc, "name", type(pc).__name__))
            self._pc_obj = pc
        else:
            raise InputError(
                f"pc must be a name or a femno Preconditioner, got {type(pc).__name__}"
            )
        for label, val in (("rtol", rtol), ("atol", atol)):
            if not isinstance(val, (int, float, np.floating)) or not math.isfinite(val) or val < 0:
                raise InputError(f"{label} must be a finite number >= 0, got {val!r}")
        if rtol == 0 and atol == 0:
            raise InputError("rtol and atol cannot both be 0")
        if maxiter is not None and (not isinstance(maxiter, (int, np.integer)) or maxiter < 1):
            raise InputError(f"maxiter must be a positive integer or None, got {maxiter!r}")
        if not isinstance(restart, (int, np.integer)) or restart < 1:
            raise InputError(f"restart must be a positive integer, got {restart!r}")
        if on_fail not in ("raise", "warn", "ignore"):
            raise InputError(f"on_fail must be 'raise', 'warn' or 'ignore', got {on_fail!r}")
        if reuse_pc not in (False, True, "frozen"):
            raise InputError(f"reuse_pc must be True, False or 'frozen', got {reuse_pc!r}")
        for label, opts in (("pc_options", pc_options), ("petsc_options", petsc_options)):
            if opts is not None and (
                not isinstance(opts, dict) or not all(isinstance(k, str) for k in opts)
            ):
                raise InputError(f"{label} must be a dict with string keys")
        if pc_options and self._pc_obj is not None:
            raise InputError(
                "pc_options cannot be used with a Preconditioner instance; configure "
                "the instance itself"
            )
        if callback is not None and not callable(callback):
            raise InputError("callback must be callable")
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.maxiter = None if maxiter is None else int(maxiter)
        self.restart = int(restart)
        self.on_fail = on_fail
        self.reuse_pc = reuse_pc
        self.pc_options = dict(pc_options or {})
        self.petsc_options = dict(petsc_options or {})
        self.callback = callback
        self.comm = comm
        self.prefix = f"femno{next(_PREFIX_COUNTER)}_"
        self._options_set: list[str] = []
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
        PETSc = _PETSC
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
        entries: dict = {}
        t = self._pc_type
        if size > 1 and t in ("ilu", "icc"):
            entries["sub_pc_type"] = t
        if t == "gamg" and self.reuse_pc:
            entries["pc_gamg_reuse_interpolation"] = True
        prefix = _PC_OPTION_PREFIX.get(t, "pc_")
        for key, val in self.pc_options.items():
            key = key.lstrip("-")
            if t in _DIRECT_PCS and key == "solver":
                entries["pc_factor_mat_solver_type"] = val
            elif key.startswith("pc_") or key.startswith("sub_"):
                entries[key] = val
            else:
                entries[prefix + key] = val
        for key, val in self.petsc_options.items():
            entries[key.lstrip("-")] = val
        for key, val in entries.items():
            name = "-" + self.prefix + key
            opts.setValue(name, _option_value(val))
            self._options_set.append(name)

    def _direct_solver_type(self, size: int) -> str:
        ext = _external_packages()
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
            elif t in _DIRECT_PCS:
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
        maxiter = self.maxiter if self.maxiter is not None else _default_maxiter(n)
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

    def _global_agree(self, flag: bool, comm) -> bool:
        if comm.getSize() == 1:
            return flag
        PETSc = get_petsc()
        v = PETSc.Vec().createMPI((1, PETSc.DECIDE), comm=comm)
        v.set(1.0 if flag else 0.0)
        ok = v.min()[1] > 0.5
        v.destroy()
        return ok

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
        same = self._global_agree(bool(same), comm)
        if same:
            unchanged = self._global_agree(bool(np.array_equal(self._data, block.data)), comm)
            if not unchanged:
                # overwrite the values in place: same Mat, new state -> PC re-setup
                # with SAME_NONZERO_PATTERN
                self._set_rows(block)
                self._mat.assemble()
                self._data = block.data.copy()
            return self._mat, N, False
        if self._mat is not None:
            self._mat.destroy()
        self._mat = to_petsc_mat(block, comm)
        self._pattern = (block.indptr.copy(), block.indices.copy())
        self._data = block.data.copy()
        return self._mat, N, True

    def _set_rows(self, block):
        # petsc4py's setValuesCSR numbers the rows 0..nloc-1 and offsets them by the
        # ownership start itself; columns are global.
        PETSc = get_petsc()
        it = PETSc.IntType
        self._mat.setValuesCSR(
            np.ascontiguousarray(block.indptr, dtype=it),
            np.ascontiguousarray(block.indices, dtype=it),
            np.ascontiguousarray(block.data, dtype=np.float64),
            addv=PETSc.InsertMode.INSERT_VALUES,
        )

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
        comm = _comm(self.comm)
        if isinstance(A, PETSc.Mat):
            comm = A.getComm()
            N, M = A.getSize()
            if N != M:
                raise InputError(f"matrix must be square, got shape {N} x {M}")
            b_np = None if isinstance(b, PETSc.Vec) else np.asarray(b, dtype=np.float64)
            if b_np is not None and (b_np.ndim != 1 or b_np.shape[0] != N):
                raise InputError(
                    f"right-hand side has shape {b_np.shape} but the matrix is {N} x {N}"
                )
            if isinstance(b, PETSc.Vec) and b.getSize() != N:
                raise InputError(
                    f"right-hand side has length {b.getSize()} but the matrix is {N} x {N}"
                )
            Acsr = A
        else:
            Acsr, b_np, x0 = check_system(A, b, None if isinstance(x0, PETSc.Vec) else x0)
            N = Acsr.shape[0]
        Amat, n, new = self._prepare_matrix(Acsr, comm)
        xvec, bvec = Amat.createVecs()
        if isinstance(b, PETSc.Vec):
            b.copy(bvec)
        else:
            rstart, rend = bvec.getOwnershipRange()
            bvec.getArray()[:] = b_np[rstart:rend]
        nonzero_guess = x0 is not None
        if isinstance(x0, PETSc.Vec):
            x0.copy(xvec)
        elif x0 is not None:
            rstart, rend = xvec.getOwnershipRange()
            xvec.getArray()[:] = np.asarray(x0, dtype=np.float64)[rstart:rend]
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
        direct = ksp.getType() == "preonly" and ksp.getPC().getType() in _DIRECT_PCS
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
        stats.solve_s = solve_s
        true_res = rnorm / bnorm
        name = _reason_names().get(code, f"REASON_{code}")
        self.petsc_reason = name
        self.restarts = restarts
        x = from_petsc_vec(xvec)

        NT = PETSc.KSP.NormType
        kind = {
            NT.UNPRECONDITIONED: "recursive",
            NT.PRECONDITIONED: "preconditioned",
            NT.NATURAL: "natural",
            NT.NONE: "true",
        }.get(ksp.getNormType(), "unknown")
        if self._pc_type == "none" and kind == "preconditioned":
            kind = "recursive"
        elif kind == "preconditioned" and hist:
            # PETSc logs ||M^-1 r_k||: make it relative to ||M^-1 b|| (entry 0 is 1 for
            # a zero initial guess)
            z = bvec.duplicate()
            ksp.getPC().apply(bvec, z)
            pbnorm = z.norm()
            z.destroy()
            if pbnorm > 0:
                hist = [h * bnorm / pbnorm for h in hist]
        if not hist:  # no norm computed (preonly): report the true residuals
            hist = [1.0 if not nonzero_guess else math.nan, float(true_res)]
        if code > 0:
            converged = bool(np.isfinite(true_res)) if direct else bool(rnorm <= tol_abs)
            short = _short_reason(name) if converged else "rtol not met by true residual"
        else:
            converged = False
            short = _short_reason(name)

        stats.iterations = its
        stats.residuals = hist
        stats.residual = float(true_res)
        stats.residual_kind = kind
        stats.converged = converged
        stats.reason = short
        self.stats = stats
        self.history = hist

        if not converged and self.on_fail != "ignore":
            msg = (
                f"PETSc {self.method} with preconditioner {self.pc_name!r} did not converge: "
                f"KSP_{name} after {its} iterations, true relative residual {true_res:.3e} "
                f"(rtol {self.rtol:.1e})"
            )
            if code > 0:
                msg += (
                    f"; PETSc converged on its {kind} residual but the true residual "
                    f"stayed above the tolerance after {restarts} restart(s)"
                )
            if self.on_fail == "raise":
                raise ConvergenceError(msg, stats=stats, x=x)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return x


# ----------------------------------------------------------------------------- info


def _external_packages() -> dict:
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
        "external_packages": dict(_external_packages()),
        "mpi_size": PETSc.COMM_WORLD.getSize(),
    }
