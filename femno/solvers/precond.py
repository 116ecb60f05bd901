"""Preconditioners: Jacobi, SSOR, ILU, incomplete Cholesky and algebraic multigrid.

Each one is a :class:`~femno.solvers.base.Preconditioner`: ``setup(A)`` builds it,
``apply(r)`` returns :math:`z = M^{-1} r`, ``update(A)`` takes new values on the
same sparsity pattern. Build them by name::

    pc = make_preconditioner("amg", strength="symmetric").setup(A)

========== ==================================================== =========
name       :math:`M`                                            symmetric
========== ==================================================== =========
none       :math:`I`                                            yes
jacobi     :math:`D = \\operatorname{diag}(A)`                   yes
ssor       :math:`\\frac{1}{\\omega(2-\\omega)}(D+\\omega L)D^{-1}(D+\\omega U)` yes
ilu        :math:`\\tilde L\\tilde U` (scipy ``spilu``, SuperLU ILUTP)   no
ic         :math:`\\tilde L\\tilde L^T` (ilupp IC(0) / ICholT)        yes
amg-sa     one smoothed-aggregation V-cycle (pyamg)             yes
amg-rs     one Ruge-Stuben V-cycle (pyamg)                      yes
========== ==================================================== =========

``"amg"`` is an alias of ``"amg-sa"``. ``"neural:PATH"`` loads a learned
preconditioner (:class:`femno.solvers.neural.NeuralPreconditioner`) from a model
file written by ``femno train precond``.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femno.errors import InputError, MissingDependencyError
from femno.registry import LiveView, check_plugin_name, remove_plugin
from femno.solvers.base import Preconditioner

__all__ = [
    "pc_key",
    "NoPreconditioner",
    "JacobiPreconditioner",
    "SSORPreconditioner",
    "ILUPreconditioner",
    "ICPreconditioner",
    "AMGPreconditioner",
    "PRECONDITIONERS",
    "make_preconditioner",
    "check_near_nullspace",
]


class NoPreconditioner(Preconditioner):
    """The identity, :math:`M = I`.

    >>> import numpy as np, scipy.sparse as sp
    >>> NoPreconditioner().setup(sp.eye(2)).apply(np.array([1.0, 2.0]))
    array([1., 2.])
    """

    name = "none"

    def _setup(self, A):
        pass

    def apply(self, r):
        return np.array(r, dtype=np.float64)


def _diagonal(A, who):
    d = A.diagonal()
    bad = np.flatnonzero(d == 0)
    if bad.size:
        raise InputError(f"{who} preconditioner: zero diagonal entry in row {bad[0]}")
    return d


class JacobiPreconditioner(Preconditioner):
    """Diagonal (Jacobi) scaling, :math:`z_i = r_i / a_{ii}`.

    >>> import numpy as np, scipy.sparse as sp
    >>> pc = JacobiPreconditioner().setup(sp.diags([2.0, 4.0]))
    >>> pc.apply(np.ones(2))
    array([0.5 , 0.25])
    """

    name = "jacobi"

    def _setup(self, A):
        self.inv_diag = 1.0 / _diagonal(A, "jacobi")

    def apply(self, r):
        return self.inv_diag * r


class SSORPreconditioner(Preconditioner):
    """One symmetric SOR sweep from a zero initial guess (pyamg's compiled kernel).

    For ``A = L + D + U`` this applies

    .. math:: M = \\frac{1}{\\omega(2-\\omega)} (D + \\omega L) D^{-1} (D + \\omega U),

    which is SPD for SPD ``A`` and :math:`0 < \\omega < 2`.

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(5, 5), format="csr")
    >>> z = SSORPreconditioner(omega=1.0).setup(A).apply(np.ones(5))
    >>> bool(np.all(z > 0))
    True
    """

    name = "ssor"

    def __init__(self, *, omega: float = 1.0):
        super().__init__()
        if not 0.0 < omega < 2.0:
            raise InputError(f"ssor: omega must lie in (0, 2), got {omega}")
        self.omega = float(omega)

    def _setup(self, A):
        from pyamg.relaxation.relaxation import sor

        _diagonal(A, "ssor")
        A = A.copy()
        A.sort_indices()
        self.A, self._sor = A, sor

    def apply(self, r):
        z = np.zeros_like(r, dtype=np.float64)
        self._sor(self.A, z, np.asarray(r, dtype=np.float64), self.omega, iterations=1,
            sweep="symmetric")
        return z


class ILUPreconditioner(Preconditioner):
    """Incomplete LU from scipy's :func:`~scipy.sparse.linalg.spilu` (SuperLU ILUTP).

    Entries below ``drop_tol`` (relative) are dropped and the factors hold at most
    ``fill_factor`` times the nonzeros of ``A``. The default ordering
    ``permc_spec="MMD_AT_PLUS_A"`` suits the structurally symmetric matrices of
    finite elements (SuperLU's COLAMD default exhausts ``fill_factor`` on a
    128^2 Laplacian and the truncated factors need ~50x more iterations;
    other ``spilu`` keywords pass through). Row/column pivoting makes
    :math:`M` nonsymmetric, so use it with GMRES/FGMRES/FCG, not CG/MINRES.

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(5, 5), format="csr")
    >>> pc = ILUPreconditioner(drop_tol=0.0, fill_factor=10).setup(A)
    >>> bool(np.allclose(A @ pc.apply(np.ones(5)), 1.0))
    True
    """

    name = "ilu"
    symmetric = False

    def __init__(self, *, drop_tol: float = 1e-4, fill_factor: float = 10.0,
                 permc_spec: str = "MMD_AT_PLUS_A", **spilu_options):
        super().__init__()
        unknown = set(spilu_options) - set(inspect.signature(spla.spilu).parameters)
        if unknown:
            raise TypeError(f"unexpected spilu options {sorted(unknown)}")
        self.options = dict(drop_tol=drop_tol, fill_factor=fill_factor, permc_spec=permc_spec,
                            **spilu_options)

    def _setup(self, A):
        try:
            self.ilu = spla.spilu(A.tocsc(), **self.options)
        except RuntimeError as exc:  # "Factor is exactly singular"
            raise InputError(f"ilu preconditioner failed: {exc}") from exc

    def apply(self, r):
        return self.ilu.solve(np.asarray(r, dtype=np.float64))


class _IluppPreconditioner(Preconditioner):
    """An ilupp factorization applied in place; subclasses set ``_what`` and ``_factor``."""

    _what = ""

    def __init__(self):
        super().__init__()
        try:
            import ilupp
        except ImportError as exc:
            raise MissingDependencyError("ilupp", "ic", self._what) from exc
        self._ilupp = ilupp

    def _factor(self, A):  # pragma: no cover - abstract
        raise NotImplementedError

    def _setup(self, A):
        A = sp.csr_matrix(A, copy=True)  # ilupp sorts indices in place
        self.factor = self._factor(A)
        if not np.all(np.isfinite(self.apply(np.ones(A.shape[0])))):
            raise InputError(f"{self.name} preconditioner: factorisation broke down "
                             f"({self._breakdown})")

    def apply(self, r):
        z = np.array(r, dtype=np.float64)
        self.factor.apply(z)
        return z


class ICPreconditioner(_IluppPreconditioner):
    """Incomplete Cholesky :math:`A \\approx \\tilde L \\tilde L^T` from ilupp.

    ``fill_in=0, threshold=0`` (default) is IC(0), same pattern as ``A``;
    otherwise ICholT (Lin & More 1999) with ``fill_in`` extra nonzeros per column
    and relative drop ``threshold``. ``A`` must be SPD; a failed factorisation
    (nonpositive pivot) raises :class:`~femno.errors.InputError`.

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(5, 5), format="csr")
    >>> pc = ICPreconditioner().setup(A)      # tridiagonal: IC(0) is exact
    >>> bool(np.allclose(A @ pc.apply(np.ones(5)), 1.0))
    True
    """

    name = "ic"
    _what, _breakdown = "incomplete Cholesky", "is A SPD?"

    def __init__(self, *, fill_in: int = 0, threshold: float = 0.0):
        super().__init__()
        self.fill_in, self.threshold = int(fill_in), float(threshold)

    def _factor(self, A):
        if self.fill_in == 0 and self.threshold == 0.0:
            return self._ilupp.IChol0Preconditioner(A)
        return self._ilupp.ICholTPreconditioner(A, self.fill_in, self.threshold)


class ILU0Preconditioner(_IluppPreconditioner):
    r"""ILU(0): incomplete LU with the sparsity pattern of :math:`A` (ilupp).

    The classical zero-fill ILU that PETSc's ``-pc_type ilu`` uses by default, and
    so the one to compare with published PETSc results; ``"ilu"`` (scipy's
    threshold ILU with fill) is a much stronger, costlier factorization.
    Nonsymmetric: use with GMRES/FGMRES/FCG. Needs the ``ic`` extra (ilupp).

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(5, 5), format="csr")
    >>> pc = ILU0Preconditioner().setup(A)   # tridiagonal: ILU(0) is exact
    >>> bool(np.allclose(A @ pc.apply(np.ones(5)), 1.0))
    True
    """

    name = "ilu0"
    symmetric = False
    _what, _breakdown = "ILU(0)", "zero pivot"

    def _factor(self, A):
        return self._ilupp.ILU0Preconditioner(A)


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


@contextlib.contextmanager
def _seeded_global_rng(seed: int):
    """Run with numpy's global generator seeded; its previous state is restored after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _scalar_levels_to_csr(ml) -> bool:
    """Store pyamg's 1x1-block BSR level matrices (A, P, R) as CSR; True if any changed.

    pyamg's SA keeps ``P``, ``R`` and the coarse ``A`` as BSR even for scalar problems;
    with 1x1 blocks a BSR product costs about 1.7x a CSR one (a V-cycle at 261k dofs:
    0.086 s against 0.050 s), the same numbers.  Real blocks (vector problems) stay BSR.
    """
    changed = False
    for level in ml.levels:
        for name in ("A", "P", "R"):
            M = getattr(level, name, None)
            if M is not None and sp.issparse(M) and M.format == "bsr" and M.blocksize == (1, 1):
                C = sp.csr_matrix(M)
                if hasattr(M, "symmetry"):
                    C.symmetry = M.symmetry
                setattr(level, name, C)
                changed = True
    return changed


class AMGPreconditioner(Preconditioner):
    """One algebraic-multigrid cycle (pyamg) as preconditioner.

    ``kind="sa"`` uses :func:`pyamg.smoothed_aggregation_solver`, ``kind="rs"``
    :func:`pyamg.ruge_stuben_solver`; other keywords go to that function. With the
    default symmetric smoothers the V-cycle is a fixed SPD operator for SPD ``A``.
    pyamg draws the start vectors of its spectral-radius estimates from numpy's global
    generator; setup and :meth:`update` run with it seeded by ``seed`` (and restored
    afterwards), so the same matrix always gives the same hierarchy and iterates.

    :meth:`update` with a matrix on the same sparsity pattern *keeps the
    hierarchy* (aggregates/C-F splitting and the prolongators :math:`P_l`,
    :math:`R_l`) and only recomputes the Galerkin operators
    :math:`A_{l+1} = R_l A_l P_l`, the smoothers and the coarse-grid solver.
    For a different pattern it falls back to a full setup.

    >>> import numpy as np, scipy.sparse as sp
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(30, 30))
    >>> A = (sp.kron(T, sp.eye(30)) + sp.kron(sp.eye(30), T)).tocsr()
    >>> pc = AMGPreconditioner("sa").setup(A)
    >>> P0 = pc.ml.levels[0].P
    >>> pc = pc.update(2.0 * A)
    >>> pc.ml.levels[0].P is P0, pc.reused
    (True, True)
    """

    symmetric = True

    def __init__(self, kind: str = "sa", *, cycle: str = "V", seed: int = 0, **options):
        super().__init__()
        self.seed = int(seed)
        import pyamg

        if kind == "sa":
            self._build = pyamg.smoothed_aggregation_solver
        elif kind == "rs":
            self._build = pyamg.ruge_stuben_solver
        else:
            raise InputError(f"AMG kind must be 'sa' or 'rs', got {kind!r}")
        allowed = set(inspect.signature(self._build).parameters) - {"A", "kwargs"}
        unknown = set(options) - allowed - {"coarse_solver"}
        if unknown:
            raise TypeError(f"unexpected pyamg options {sorted(unknown)}")
        self.kind, self.name = kind, f"amg-{kind}"
        self.cycle = str(cycle).upper()
        self.options = options
        self.presmoother = options.get("presmoother", _default(self._build, "presmoother"))
        self.postsmoother = options.get("postsmoother", _default(self._build, "postsmoother"))
        self.coarse_solver = options.get("coarse_solver", "pinv")
        self.ml = None
        self.reused = False
        self._pattern = None

    def _setup(self, A):
        try:
            with _seeded_global_rng(self.seed):
                self.ml = self._build(A, **self.options)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{self.name} setup failed: {exc}") from exc
        if _scalar_levels_to_csr(self.ml):  # smoothers are bound to a level's matrix format
            from pyamg.relaxation.smoothing import change_smoothers

            with _seeded_global_rng(self.seed):
                change_smoothers(self.ml, self.presmoother, self.postsmoother)
        self.reused = False
        self.symmetric = bool(getattr(self.ml, "symmetric_smoothing", True))
        self._pattern = (A.indptr.copy(), A.indices.copy())

    def update(self, A):
        """Same pattern: keep the prolongators, redo Galerkin products, smoothers and coarse solve."""
        import time

        from pyamg.multilevel import coarse_grid_solver
        from pyamg.relaxation.smoothing import change_smoothers

        A = sp.csr_matrix(A, dtype=np.float64)
        if (self.ml is None or self._pattern is None or A.shape != self.shape
                or not np.array_equal(A.indptr, self._pattern[0])
                or not np.array_equal(A.indices, self._pattern[1])):
            return self.setup(A)
        t = time.perf_counter()
        levels = self.ml.levels
        old = levels[0].A
        A = A.copy()
        if hasattr(old, "symmetry"):
            A.symmetry = old.symmetry
        levels[0].A = A
        for fine, coarse in zip(levels[:-1], levels[1:], strict=True):
            Ac = fine.R @ fine.A @ fine.P
            if hasattr(coarse.A, "symmetry"):
                Ac.symmetry = coarse.A.symmetry
            coarse.A = Ac
        with _seeded_global_rng(self.seed):
            change_smoothers(self.ml, self.presmoother, self.postsmoother)
        self.ml.coarse_solver = coarse_grid_solver(self.coarse_solver)  # drops cached LU/pinv
        self.reused = True
        self.setup_s = time.perf_counter() - t
        return self

    def apply(self, r):
        r = np.asarray(r, dtype=np.float64)
        if self.cycle != "V":
            return self.ml.solve(r, maxiter=1, cycle=self.cycle, tol=1e-300)
        return self._vcycle(0, r)

    def _vcycle(self, lvl, b):
        """V-cycle from a zero initial guess (what pyamg's ``solve(maxiter=1)`` does,
        without its two residual-norm evaluations)."""
        levels = self.ml.levels
        level = levels[lvl]
        x = np.zeros_like(b)
        level.presmoother(level.A, x, b)
        coarse_b = level.R @ (b - level.A @ x)
        if lvl == len(levels) - 2:
            coarse_x = self.ml.coarse_solver(levels[-1].A, coarse_b)
        else:
            coarse_x = self._vcycle(lvl + 1, coarse_b)
        x += level.P @ coarse_x
        level.postsmoother(level.A, x, b)
        return x

    @property
    def n_levels(self) -> int:
        return 0 if self.ml is None else len(self.ml.levels)


def _amg_sa(**options):
    return AMGPreconditioner("sa", **options)


def _amg_rs(**options):
    return AMGPreconditioner("rs", **options)


_amg_sa.symmetric = _amg_rs.symmetric = True

#: name -> constructor (keyword options only) with a ``symmetric`` attribute (the class's
#: own for classes); fill with :func:`register_preconditioner`
PRECONDITIONERS = {
    "none": NoPreconditioner,
    "jacobi": JacobiPreconditioner,
    "ssor": SSORPreconditioner,
    "ilu": ILUPreconditioner,
    "ilu0": ILU0Preconditioner,
    "ic": ICPreconditioner,
    "amg": _amg_sa,
    "amg-sa": _amg_sa,
    "amg-rs": _amg_rs,
}
_BUILTIN_PCS = frozenset(PRECONDITIONERS)

#: whether each registered preconditioner is a fixed SPD operator (CG/MINRES may use it):
#: a live view of the constructors' ``symmetric`` attributes
SYMMETRIC = LiveView(lambda: {k: bool(getattr(f, "symmetric", False))
                              for k, f in PRECONDITIONERS.items()}, "SYMMETRIC")


def register_preconditioner(name: str, factory, *, symmetric: bool | None = None,
                            replace: bool = False) -> None:
    """Add a preconditioner: ``make_preconditioner(name, **options)`` calls ``factory(**options)``.

    ``factory`` returns a :class:`~femno.solvers.base.Preconditioner` (not set up);
    ``symmetric`` says whether it is a fixed SPD operator for SPD matrices, so that
    ``krylov("cg", pc=name)`` may use it (default: the factory's ``symmetric``
    attribute, as a Preconditioner subclass has).  ``krylov(pc=name)``,
    ``femno solve --pc name`` and datagen's Krylov strategies then accept it.

    >>> from femno.solvers.precond import JacobiPreconditioner
    >>> register_preconditioner("my-jacobi", JacobiPreconditioner)
    >>> make_preconditioner("my-jacobi").symmetric, SYMMETRIC["my-jacobi"]
    (True, True)
    >>> unregister_preconditioner("my-jacobi")
    """
    key = check_plugin_name(name, table=PRECONDITIONERS, builtin=_BUILTIN_PCS, replace=replace,
                            what="preconditioner")
    if not callable(factory):
        raise InputError(f"preconditioner factory for {key!r} must be callable")
    if symmetric is None:
        if not hasattr(factory, "symmetric"):
            raise InputError(f"say whether preconditioner {key!r} is symmetric (symmetric=...)")
        symmetric = bool(factory.symmetric)

    def make(**options):
        return factory(**options)

    make.symmetric = bool(symmetric)
    PRECONDITIONERS[key] = make


def unregister_preconditioner(name: str) -> None:
    """Remove a registered (non built-in) preconditioner."""
    remove_plugin(name, table=PRECONDITIONERS, builtin=_BUILTIN_PCS)


def pc_key(name) -> str:
    """Canonical form of a preconditioner spec: the name lower-cased, a path kept as given.

    ``"ILU"`` -> ``"ilu"``, ``"Neural:/Models/PC.pt"`` -> ``"neural:/Models/PC.pt"``
    (file systems are case-sensitive), ``"PETSc:GAMG"`` -> ``"petsc:gamg"``.

    >>> pc_key("Neural:/Data/Run1/pc.pt")
    'neural:/Data/Run1/pc.pt'
    >>> pc_key("AMG")
    'amg'
    """
    name = str(name)
    head, sep, tail = name.partition(":")
    if sep and head.lower() == "neural":
        return "neural:" + tail
    return name.lower()


def make_preconditioner(name: str, **options) -> Preconditioner:
    """Build a preconditioner by registry name (not yet set up).

    >>> make_preconditioner("jacobi").name
    'jacobi'
    >>> make_preconditioner("foo")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: unknown preconditioner 'foo'; valid: none, jacobi, ssor, ilu, ilu0, ic, amg, amg-sa, amg-rs
    """
    key = pc_key(name)
    if key.startswith("neural:"):  # a learned preconditioner from its model file
        from femno.solvers.neural import load_neural_preconditioner

        return load_neural_preconditioner(key[len("neural:"):], **options)
    if key not in PRECONDITIONERS:
        raise InputError(
            f"unknown preconditioner {name!r}; valid: {', '.join(PRECONDITIONERS)}"
        )
    try:
        return PRECONDITIONERS[key](**options)
    except TypeError as exc:
        raise InputError(f"bad options for preconditioner {name!r}: {exc}") from exc


def check_near_nullspace(vectors, block_size=1, *, n=None):
    r"""Validate near-nullspace modes for AMG: ``(B, block_size)``, ``B`` float64 (n, r).

    ``vectors`` of shape ``(n, r)`` (or ``(n,)``, one mode) are the modes the operator
    nearly annihilates (e.g. :func:`femno.fem.nullspace.rigid_body_modes`);
    ``block_size`` the number of consecutive rows per mesh node (divides ``n``).
    Raises :class:`~femno.errors.InputError` for NaN/inf, a zero or rank-deficient
    ``B``, or sizes that do not fit ``n``.

    >>> import numpy as np
    >>> B, bs = check_near_nullspace(np.ones(6), 2)
    >>> B.shape, bs
    ((6, 1), 2)
    """
    if isinstance(vectors, np.ndarray) and _CHECKED.get(id(vectors)) is vectors:
        B = vectors  # validated before and read-only since: only the sizes are new
        if n is not None and B.shape[0] != n:
            raise InputError(f"near_nullspace has {B.shape[0]} rows for a system of size {n}")
        return B, _check_block_size(B, block_size)
    try:
        B = np.array(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"near_nullspace must be a numeric array (n, r), got "
                         f"{type(vectors).__name__}") from None
    if B.ndim == 1:
        B = B[:, None]
    if B.ndim != 2 or B.shape[1] < 1 or B.shape[0] < B.shape[1]:
        raise InputError(f"near_nullspace must have shape (n, r) with 1 <= r <= n, got {B.shape}")
    if not np.all(np.isfinite(B)):
        raise InputError("near_nullspace contains NaN or inf")
    if n is not None and B.shape[0] != n:
        raise InputError(f"near_nullspace has {B.shape[0]} rows for a system of size {n}")
    block_size = _check_block_size(B, block_size)
    s = np.linalg.svd(B, compute_uv=False)
    if s[-1] <= 1e-12 * max(s[0], np.finfo(float).tiny):
        raise InputError(f"near_nullspace columns are linearly dependent (or zero): "
                         f"singular values {s[0]:.3g} .. {s[-1]:.3g}")
    # solve_sequence, krylov and the PETSc backend each check what they are given: the
    # returned copy is read-only and remembered, so passing it on skips the SVD (18 ms at
    # 260k x 3, once per candidate strategy of auto otherwise)
    B.flags.writeable = False
    _CHECKED[id(B)] = B
    return B, block_size


def _check_block_size(B, block_size) -> int:
    if isinstance(block_size, bool) or int(block_size) != block_size or block_size < 1:
        raise InputError(f"block_size must be a positive integer, got {block_size!r}")
    block_size = int(block_size)
    if B.shape[0] % block_size:
        raise InputError(f"block_size {block_size} does not divide the {B.shape[0]} rows")
    return block_size


#: arrays check_near_nullspace returned (read-only), by id; entries vanish with the arrays
_CHECKED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
