r"""Solve a sequence of linear systems as fast as possible: :func:`solve_sequence`.

Given :math:`N` systems :math:`A_i x_i = b_i` of a parametric family, the total
time :math:`T = T_\text{sort} + \sum_i T_i` depends far more on what is *reused*
between systems than on the Krylov method:

================== ========================================================== =========
method             what runs                                                   reuse
================== ========================================================== =========
``skr``            sort (greedy chain) + GCRO-DR(m, k), recycle space carried  U, C
``recycle``        GCRO-DR(m, k), space carried, caller's order                U, C
``gcrodr``         GCRO-DR(m, k), fresh per system                             none
``gmres``          GMRES(m) per system (the SKR paper's baseline)              pc
``cg``             PCG per system (default pc AMG)                             pc
``amg-cg``         AMG-PCG; hierarchy updated in place for a new matrix        hierarchy
``amg-cg-fresh``   AMG-PCG, new hierarchy per system                           none
``dcg``            deflated PCG, deflation space carried (SPD)                 W
``direct``         sparse LU/Cholesky (CHOLMOD, MUMPS, SuperLU: measured);       factor /
                   factor reused for an identical matrix, analysis per pattern  analysis
``direct-reuse``   alias of ``direct`` (the name ``auto`` reports)           same
``direct-fresh``   ``splu`` per system with scipy's defaults (like ``spsolve``) none
``block``          fixed matrix: one LU, all right-hand sides as one block      factor
``auto``           structure + a short timed probe pick one of the above       --
================== ========================================================== =========

Results come back in the caller's order whatever order the systems were solved in.

For SPD families the sorted-recycling counterpart of ``skr`` is ``dcg`` with
``sort="greedy"`` (the same chain, a deflation space carried along it): the recycling
method made for SPD matrices, and the one that reaches the SKR paper's speedups over
GMRES(40) on Darcy, thermal and Poisson, where GCRO-DR does not on Darcy
(``benchmarks/results/datagen.md``).

>>> import numpy as np, scipy.sparse as sp
>>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(40, 40), format="csr")
>>> bs = np.random.default_rng(0).standard_normal((5, 40))
>>> res = solve_sequence([(A, b) for b in bs], method="auto")
>>> res.method, bool(np.allclose(A @ res.solutions[3], bs[3]))
('auto->block', True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from femno.datagen.sequence_methods import (
    AMG_PCS,
    PETSC_PCS,
    StrategyOptions,
    sequence_registry,
)
from femno.datagen.sorting import SORT_METHODS, check_features, check_permutation, sort_systems
from femno.datagen.strategy import LUStrategy, SequenceRun, same_matrix
from femno.datagen.strategy import same_pattern as _same_pattern
from femno.errors import InputError
from femno.registry import LiveView
from femno.solvers.base import Preconditioner, check_system, check_tolerances

__all__ = ["solve_sequence", "SequenceResult", "SEQUENCE_METHODS", "sequence_methods",
           "check_sequence_options", "load_systems",
           "default_features"]

#: method -> (default pc, sorts by default): a live view of
#: :func:`~femno.datagen.sequence_methods.sequence_registry`
SEQUENCE_METHODS = LiveView(lambda: {n: (m.default_pc, m.sorts)
                                     for n, m in sequence_registry().items()},
                            "SEQUENCE_METHODS")


def sequence_methods() -> dict:
    """method -> (default pc, sorts by default), every registered sequence method
    (:mod:`femno.datagen.sequence_methods`, including Krylov methods with a ``sequence_pc``)."""
    return dict(SEQUENCE_METHODS)


@dataclass
class SequenceResult:
    """What :func:`solve_sequence` did; every per-system array is in the caller's order.

    Attributes
    ----------
    solutions : list of ndarray
        ``solutions[i]`` solves system ``i``.
    iterations : ndarray of int, shape (N,)
        Krylov iterations per system (0 for direct solves).
    times : ndarray of float, shape (N,)
        Wall-clock seconds per system, including its preconditioner / factorization
        setup (a block solve's time is shared equally by its systems).
    residuals : ndarray of float, shape (N,)
        Final true relative residuals :math:`\\|b_i - A_i x_i\\|_2/\\|b_i\\|_2`.
    converged : ndarray of bool, shape (N,)
    order : ndarray of int, shape (N,)
        The solve order: ``order[t]`` was solved ``t``-th.
    sort_s, total_s : float
        Seconds spent sorting (features included) and in the whole call.
    method : str
        What ran, e.g. ``"skr"`` or ``"auto->direct-reuse"``.
    explanation : str
        Why (for ``auto``: the structure found and the probe timings).
    stats : list of SolveStats
        Per system, caller's order.
    probe : dict
        ``auto`` only: measured seconds per system of each probed candidate.
    direct_backend : str or None
        The factorization library a direct method chose (the fastest it measured when
        the sequence ended during its probe; ``None`` for other methods).
    """

    solutions: list
    iterations: np.ndarray
    times: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    order: np.ndarray
    sort_s: float
    total_s: float
    method: str
    explanation: str
    stats: list
    probe: dict = field(default_factory=dict)
    direct_backend: str | None = None

    def __len__(self) -> int:
        return len(self.solutions)

    def as_dict(self, *, solutions: bool = False) -> dict:
        """JSON-ready summary (``solutions=True`` adds them as nested lists)."""
        d = {
            "method": self.method, "explanation": self.explanation, "n_systems": len(self),
            "total_s": self.total_s, "sort_s": self.sort_s,
            "iterations": self.iterations.tolist(), "times": self.times.tolist(),
            "residuals": self.residuals.tolist(), "converged": self.converged.tolist(),
            "order": self.order.tolist(),
            "mean_iterations": float(self.iterations.mean()) if len(self) else 0.0,
            "stats": [s.as_dict(history=False) if s is not None else None for s in self.stats],
            "probe": dict(self.probe),
        }
        if solutions:
            d["solutions"] = [x.tolist() if x is not None else None for x in self.solutions]
        return d

    def summary(self) -> str:
        n = len(self)
        return (f"{self.method}: {n} systems in {self.total_s:.3f} s "
                f"({n / self.total_s if self.total_s > 0 else math.inf:.1f} systems/s), "
                f"mean {self.iterations.mean() if n else 0:.1f} iterations, "
                f"{int(self.converged.sum())}/{n} converged, sort {self.sort_s:.3f} s")


# ------------------------------------------------------------------------- input checking
def load_systems(systems):
    """Validate every system before anything is solved; return ``(As, bs)`` (csr, float64).

    Items are ``(A, b)`` pairs or objects with ``.A`` and ``.b``; errors name the index.

    >>> import numpy as np, scipy.sparse as sp
    >>> load_systems([(sp.eye(2), np.ones(2)), (sp.eye(3), np.ones(2))])
    Traceback (most recent call last):
    ...
    femno.errors.InputError: system 1: right-hand side has length 2 but the matrix is 3 x 3
    """
    try:
        N = len(systems)
    except TypeError:
        raise InputError("systems must be a sequence (len and indexing) of (A, b) pairs or "
                         f"objects with .A and .b, got {type(systems).__name__}") from None
    if N == 0:
        raise InputError("systems is empty: nothing to solve")
    As, bs = [], []
    n0 = None
    for i in range(N):
        item = systems[i]
        if hasattr(item, "A") and hasattr(item, "b"):
            A, b = item.A, item.b
        else:
            try:
                A, b = item
            except (TypeError, ValueError):
                raise InputError(f"system {i}: expected an (A, b) pair or an object with .A "
                                 f"and .b, got {type(item).__name__}") from None
        try:
            A, b, _ = check_system(A, b)
        except InputError as exc:
            raise InputError(f"system {i}: {exc}") from None
        if n0 is None:
            n0 = A.shape[0]
        if not A.has_sorted_indices:
            A = A.sorted_indices()
        As.append(A)
        bs.append(b)
    return As, bs


def default_features(As, bs, *, max_dim: int = 4096, sketch_dim: int = 1024):
    r"""Sort features: matrix values and right-hand side, or the right-hand side only.

    When all matrices share a sparsity pattern (and are not all equal) the row of
    system :math:`i` is :math:`[\,a_i / s_A,\ b_i / s_b\,]` with :math:`a_i` the
    CSR values and :math:`s_A, s_b` the norms of system 0's blocks (so both blocks
    weigh alike); otherwise (or for a fixed matrix) it is :math:`b_i`. Rows longer
    than ``max_dim`` are compressed by a seeded CountSketch to ``sketch_dim``
    entries (a random signed bucket sum, which preserves distances in expectation).
    """
    N = len(As)
    A0 = As[0]
    shared = all(A.shape == A0.shape and _same_pattern(A, A0) for A in As[1:])
    fixed = shared and all(np.array_equal(A.data, A0.data) for A in As[1:])
    use_a = shared and not fixed
    sa = (float(np.linalg.norm(A0.data)) or 1.0) if use_a else 1.0
    sb = max((float(np.linalg.norm(b)) for b in bs), default=1.0) or 1.0
    dim = (A0.nnz if use_a else 0) + (A0.shape[0] if bs else 0)
    if dim > max_dim:
        rng = np.random.default_rng(12345)
        bucket = rng.integers(0, sketch_dim, size=dim)
        sign = rng.choice([-1.0, 1.0], size=dim)
        F = np.empty((N, sketch_dim))
    else:
        F = np.empty((N, dim))
    for i in range(N):
        row = np.concatenate([As[i].data / sa, bs[i] / sb]) if use_a else bs[i] / sb
        F[i] = (np.bincount(bucket, weights=sign * row, minlength=sketch_dim)
                if dim > max_dim else row)
    return F


def _resolve_order(sort, method, features, As, bs):
    N = len(As)
    if sort is None:
        sort = "greedy" if sequence_methods()[method][1] else "none"
    if isinstance(sort, str):
        if sort not in SORT_METHODS:
            raise InputError(f"unknown sort {sort!r}; valid: {', '.join(SORT_METHODS)}, "
                             "or an explicit permutation")
        if sort == "none":
            return np.arange(N, dtype=np.int64), 0.0, "none"
        t = time.perf_counter()
        F = default_features(As, bs) if features is None else features
        order, _ = sort_systems(F, method=sort)
        return order, time.perf_counter() - t, sort
    return check_permutation(sort, N), 0.0, "explicit"


def check_sequence_options(method="auto", pc="auto", rtol=1e-8, **solver_options) -> float:
    """Validate :func:`solve_sequence` settings without systems (``femno generate`` calls
    it before any work); returns ``rtol`` as a float.  ``solver_options`` are the other
    keywords of :func:`solve_sequence`; an unknown one is an :class:`InputError`.

    >>> check_sequence_options("skr", rtol=1e-6, k=10, restart=30)
    1e-06
    >>> check_sequence_options("skr", k=50, restart=30)
    Traceback (most recent call last):
    ...
    femno.errors.InputError: GCRO-DR needs k < restart, got k=50, restart=30
    """
    import inspect

    params = inspect.signature(solve_sequence).parameters
    unknown = sorted(set(solver_options) - set(params) - {"near_nullspace", "block_size"})
    if unknown:
        raise InputError(f"unknown solver options {unknown}; solve_sequence takes "
                         f"{', '.join(p for p in params if p not in ('systems',))}")
    backend = solver_options.get("direct_backend", "auto")
    from femno.solvers.factor import DIRECT_BACKENDS

    if backend not in DIRECT_BACKENDS:
        raise InputError(f"unknown direct backend {backend!r}; valid: {', '.join(DIRECT_BACKENDS)}")
    opts = {name: solver_options.get(name, params[name].default)
            for name in ("k", "restart", "maxiter", "on_fail", "callback")}
    return _check_options(method, pc, rtol, **opts)


def _check_options(method, pc, rtol, k, restart, maxiter, on_fail, callback):
    if not isinstance(method, str) or method not in sequence_methods():
        raise InputError(f"unknown method {method!r}; valid: {', '.join(sequence_methods())}")
    rtol, _ = check_tolerances(rtol)
    for name, v, lo in (("k", k, 0), ("restart", restart, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
    entry = sequence_registry()[method]
    if entry.needs_k_below_restart and not k < restart:
        raise InputError(f"GCRO-DR needs k < restart, got k={k}, restart={restart}")
    if maxiter is not None and (isinstance(maxiter, bool) or int(maxiter) != maxiter
                                or maxiter < 1):
        raise InputError(f"maxiter must be a positive integer or None, got {maxiter!r}")
    if on_fail not in ("raise", "warn", "ignore"):
        raise InputError(f"on_fail must be 'raise', 'warn' or 'ignore', got {on_fail!r}")
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be callable, got {type(callback).__name__}")
    if not (pc == "auto" or pc is None or isinstance(pc, (str, Preconditioner))):
        raise InputError(f"pc must be 'auto', a preconditioner name or instance, got {pc!r}")
    if isinstance(pc, str) and pc != "auto":
        from femno.solvers.precond import PRECONDITIONERS, pc_key

        key = pc_key(pc)
        if key in PETSC_PCS:
            what = {"hypre": "BoomerAMG", "gamg": "GAMG"}[key]
            if not entry.petsc_pcs:
                ok = sorted(repr(n) for n, m in sequence_registry().items() if m.petsc_pcs)
                ok = " or ".join([", ".join(ok[:-1]), ok[-1]] if len(ok) > 1 else ok)
                raise InputError(f"pc={key!r} ({what} through PETSc) runs with method {ok}, "
                                 f"not {method!r}")
            from femno.datagen.auto import gamg_available, hypre_available

            if not (hypre_available() if key == "hypre" else gamg_available()):
                raise InputError(f"pc={key!r} needs petsc4py"
                                 + (" built with hypre" if key == "hypre" else "")
                                 + " (bash .ci/install --petsc, or pip install femno[petsc])")
        elif key not in PRECONDITIONERS and not key.startswith("neural:"):
            raise InputError(f"unknown preconditioner {pc!r}; valid: auto, hypre, gamg "
                             f"(cg/gmres on PETSc), {', '.join(PRECONDITIONERS)}")
    if entry.direct and pc not in ("auto", None, "none"):
        raise InputError(f"method {method!r} is a direct solver; pc={pc!r} does not apply")
    if entry.pcs is not None and not (pc in ("auto", None) or
                                      (isinstance(pc, str) and pc.lower() in entry.pcs)):
        what = "AMG" if set(entry.pcs) <= set(AMG_PCS) else "the preconditioners"
        raise InputError(f"method {method!r} uses {what} ({', '.join(entry.pcs)}); got "
                         f"pc={pc!r} (use method='cg')")
    return rtol


def make_strategy(method, *, pc="auto", rtol=1e-8, k=20, restart=40, maxiter=None,
                  near_nullspace=None, block_size=1, direct_backend="auto"):
    """The :class:`~femno.datagen.strategy.Strategy` of a (non-``auto``) method name.

    ``near_nullspace`` / ``block_size`` go to the AMG preconditioners
    (:func:`femno.solvers.krylov`); the other strategies ignore them.
    """
    entry = sequence_registry()[method]
    if entry.build is None:
        raise InputError(f"method {method!r} has no single strategy (solve_sequence chooses)")
    if pc in ("auto", None):
        pc = entry.default_pc
    nns = {} if near_nullspace is None else {"near_nullspace": near_nullspace,
                                             "block_size": block_size}
    return entry.build(StrategyOptions(method=method, pc=pc, rtol=rtol, k=k, restart=restart,
                                       maxiter=maxiter, nns=nns, direct_backend=direct_backend))


def solve_sequence(systems, *, method="auto", pc="auto", rtol=1e-8, sort=None, features=None,
                   warm_start=False, x0=None, k=20, restart=40, maxiter=None, progress=False,
                   on_fail="raise", callback=None, auto_total=None, near_nullspace=None,
                   block_size=1, direct_backend="auto") -> SequenceResult:
    r"""Solve :math:`A_i x_i = b_i`, :math:`i = 0..N-1`, reusing work between systems.

    Every system is validated before anything is solved. Each solution meets
    :math:`\|b_i - A_i x_i\|_2 \le \mathrm{rtol}\,\|b_i\|_2` (true residual).

    Parameters
    ----------
    systems : sequence
        ``len(systems)`` and ``systems[i]`` give ``(A, b)`` pairs (scipy sparse or
        dense ``A``, 1-D ``b``) or objects with ``.A`` and ``.b`` (a
        :class:`~femno.fem.families.LinearSystem`).
    method : str, keyword-only
        See the module table; ``"auto"`` picks from the structure and a timed probe
        (:mod:`femno.datagen.auto`).
    pc : str or Preconditioner, keyword-only
        Preconditioner of Krylov methods; ``"auto"``: none for ``skr``, ``recycle``,
        ``gcrodr``, ``gmres`` (as in the SKR paper), AMG for ``cg``, ``amg-cg*``
        and ``dcg``; ``"hypre"``: BoomerAMG through PETSc for ``cg`` and ``gmres``
        (petsc4py with hypre; ``auto`` may pick it); ``"gamg"``: PETSc's smoothed
        aggregation (with ``near_nullspace``). Direct methods take none.
    rtol : float, keyword-only
    near_nullspace : ndarray, shape (n, r), optional, keyword-only
        Near-nullspace modes shared by all systems (e.g. rigid-body motions,
        :meth:`femno.fem.Family.near_nullspace`) for the AMG preconditioners (pyamg's
        ``B``, PETSc GAMG's ``MatSetNearNullSpace``); with it ``auto`` also probes
        CG with GAMG. ``block_size``: rows per mesh node (nodal coarsening).
    block_size : int, keyword-only
    sort : None, str or array_like of int, keyword-only
        ``None``: the method's default (``skr`` sorts by the greedy chain, the others
        keep the caller's order); a name from
        :data:`~femno.datagen.sorting.SORT_METHODS`; or an explicit permutation.
    features : array_like, shape (N, d), optional, keyword-only
        Sort features (e.g. ``family.features(params)`` rows); default
        :func:`default_features`.
    warm_start : bool, keyword-only
        Krylov methods start from the previously solved (neighbour) solution.
    x0 : None, sequence or callable, keyword-only
        Initial guesses of Krylov methods, per system in the caller's order: a
        sequence of ``N`` arrays of shape ``(m_i,)`` (or ``None`` entries), or a
        callable ``x0(i, systems[i]) -> array or None`` called just before system
        ``i`` is solved (its time counts in ``times[i]``), e.g. a
        :class:`femno.operators.surrogate.NeuralInitialGuess` (neural warm start;
        combine with ``method="recycle"``/``"skr"`` for warm start plus
        recycling).  A guess takes precedence over ``warm_start``, which fills in
        where it gives ``None``. Direct methods ignore it.
    k, restart : int, keyword-only
        Recycle dimension and restart length (GCRO-DR(restart, k), GMRES(restart),
        deflated CG(k)).
    maxiter : int, optional, keyword-only
        Iteration limit per system.
    progress : bool, keyword-only
        Show a tqdm progress bar (systems/s).
    on_fail : {"raise", "warn", "ignore"}, keyword-only
        A system that misses ``rtol`` raises :class:`~femno.errors.ConvergenceError`
        naming its index (systems later in the order are not attempted), or warns,
        or is only recorded in ``converged``.
    callback : callable, optional, keyword-only
        ``callback(i, x, stats)`` after each solved system (``i``: caller's index).
    direct_backend : {"auto", "cholmod", "mumps", "superlu"}, keyword-only
        Direct methods (``direct``, ``direct-reuse``): ``"auto"`` measures the
        factorization libraries on the first systems
        (:class:`~femno.datagen.strategy.LUStrategy`); a name pins one (``femno generate``
        pins the measured one for all blocks of a dataset).
    auto_total : int, optional, keyword-only
        Number of systems ``auto``'s choice will serve (default ``N``): its probe may
        spend at most ``PROBE_SHARE`` of ``auto_total`` x the cheapest per-system cost on
        solves by losing candidates (:mod:`femno.datagen.auto`).  ``femno generate``
        probes a few systems and passes the dataset size.

    Returns
    -------
    SequenceResult

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(30, 30), format="csr")
    >>> systems = [((1.0 + 0.1 * s) * T, np.ones(30)) for s in range(4)]
    >>> res = solve_sequence(systems, method="direct", sort=[3, 1, 0, 2])
    >>> res.order.tolist(), bool(np.allclose(systems[2][0] @ res.solutions[2], 1.0))
    ([3, 1, 0, 2], True)
    >>> solve_sequence(systems, method="magic")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: unknown method 'magic'; valid: auto, skr, recycle, gcrodr, gmres, cg, amg-cg, amg-cg-fresh, dcg, direct, direct-reuse, direct-fresh, block
    """
    t_start = time.perf_counter()
    rtol = _check_options(method, pc, rtol, k, restart, maxiter, on_fail, callback)
    if auto_total is not None and (isinstance(auto_total, bool) or not isinstance(
            auto_total, (int, np.integer)) or auto_total < 1):
        raise InputError(f"auto_total must be a positive integer or None, got {auto_total!r}")
    As, bs = load_systems(systems)
    N = len(As)
    nns = {}
    if near_nullspace is not None:
        from femno.solvers.precond import check_near_nullspace

        B, bsize = check_near_nullspace(near_nullspace, block_size,
                                        n=As[0].shape[0] if N else None)
        if any(A.shape[0] != B.shape[0] for A in As):
            raise InputError("near_nullspace needs every system to have its "
                             f"{B.shape[0]} rows")
        nns = {"near_nullspace": B, "block_size": bsize}
    elif block_size != 1:
        raise InputError("block_size applies together with near_nullspace")
    if features is not None:
        features = check_features(features, N)
    if sort is not None and not isinstance(sort, str):
        check_permutation(sort, N)  # fail before any feature work
    strategy = None
    if method not in ("auto", "block"):
        strategy = make_strategy(method, pc=pc, rtol=rtol, k=k, restart=restart,
                                 maxiter=maxiter, direct_backend=direct_backend, **nns)
    if method == "block" and not all(same_matrix(A, As[0]) for A in As[1:]):
        raise InputError("method 'block' needs the same matrix for every system "
                         "(only the right-hand side may change); use 'direct'")
    order, sort_s, sort_name = _resolve_order(sort, method, features, As, bs)
    guess = _guess_provider(x0, systems, bs)
    run = SequenceRun(As, bs, order, rtol=rtol, on_fail=on_fail, callback=callback,
                      warm_start=bool(warm_start), progress=progress)
    run.guess = guess
    probe = {}
    try:
        if method == "auto":
            from femno.datagen.auto import run_auto

            label, explanation, probe = run_auto(run, pc=pc, k=k, restart=restart,
                                                 maxiter=maxiter, total=auto_total, **nns)
        elif method == "block":
            strategy = LUStrategy(reuse=True, rtol=rtol)
            run.solve_block(strategy, range(N))
            label = "block"
            explanation = f"one LU factorization, {N} right-hand sides solved as a block"
        else:
            for t in range(N):
                run.solve(strategy, t)
            label = strategy.label if method in ("gmres", "cg", "dcg") else method
            explanation = _explain(method, strategy, sort_name, warm_start, x0 is not None)
    finally:
        run.close()
    return SequenceResult(
        solutions=run.solutions, iterations=run.iterations, times=run.times,
        residuals=run.residuals, converged=run.converged, order=order, sort_s=sort_s,
        total_s=time.perf_counter() - t_start, method=label, explanation=explanation,
        stats=run.stats, probe=probe,
        direct_backend=_lu_choice(strategy))


def _lu_choice(strategy) -> str | None:
    """The library an LU strategy chose, or the fastest it measured if the run ended
    inside its probe; ``None`` for other strategies."""
    if not isinstance(strategy, LUStrategy):
        return None
    if strategy.backend is None and strategy.probe:
        return min(strategy.probe, key=strategy.probe.get)
    return strategy.backend


def _check_guess(g, i, n):
    if g is None:
        return None
    try:
        g = np.asarray(g, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"x0[{i}] must be a numeric array, got {type(g).__name__}") from None
    if g.shape != (n,):
        raise InputError(f"x0[{i}] has shape {g.shape}, expected ({n},)")
    if not np.all(np.isfinite(g)):
        raise InputError(f"x0[{i}] contains NaN or inf")
    return g


def _guess_provider(x0, systems, bs):
    """``None`` or a callable ``i -> checked initial guess or None`` from ``x0``."""
    if x0 is None:
        return None
    if callable(x0):
        return lambda i: _check_guess(x0(i, systems[i]), i, bs[i].shape[0])
    if isinstance(x0, np.ndarray) and x0.ndim == 2:
        x0 = list(x0)
    try:
        n = len(x0)
    except TypeError:
        raise InputError("x0 must be None, a sequence of N initial guesses or a callable "
                         f"x0(i, system), got {type(x0).__name__}") from None
    if n != len(bs):
        raise InputError(f"x0 has {n} entries for {len(bs)} systems")
    guesses = [_check_guess(g, i, b.shape[0]) for i, (g, b) in enumerate(zip(x0, bs,
                                                                            strict=True))]
    return guesses.__getitem__


def _explain(method, strategy, sort_name, warm_start, guess=False) -> str:
    parts = [f"method {method!r} as requested ({strategy.label})"]
    if guess and strategy.iterative:
        parts.append("initial guesses from x0")
    if isinstance(strategy, LUStrategy):
        parts.append(f"{strategy.n_factorizations} factorizations, "
                     f"{strategy.symbolic_reused} reusing a symbolic analysis"
                     + (f", backend {strategy.backend}" if strategy.backend else "")
                     + (", probed " + ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in
                                                strategy.probe.items())
                        if strategy.probe else ""))
    if sort_name != "none":
        parts.append(f"sorted: {sort_name}")
    if warm_start and strategy.iterative:
        parts.append("warm start from the previous solution")
    return "; ".join(parts)
