r"""The solver of a time loop whose step matrix changes at every step.

With a time-dependent coefficient (:class:`~femno.fem.families.transient.HeatVarying`)
the θ-scheme solves :math:`A_n x^{n+1} = b^n` with a new matrix :math:`A_n` of one
sparsity pattern at every step, and :math:`x^n` (the previous step) is a good initial
guess. What a fixed step matrix allows (:mod:`femno.datagen.step_solver`: one
factorization) is gone; three ways still reuse work from step to step
(:mod:`femno.datagen.strategy`):

* ``factor``: a numeric refactorization per step with the symbolic analysis reused
  (CHOLMOD for SPD, MUMPS/SuperLU otherwise; :class:`~femno.datagen.strategy.LUStrategy`);
* ``amg``: one AMG hierarchy whose aggregates and prolongation are kept and whose
  coarse operators are updated for each :math:`A_n`, CG (SPD) / GMRES from
  :math:`x^n` (:class:`~femno.datagen.strategy.KrylovStrategy`, ``reuse_pc``);
* ``recycle``: the same AMG, and a Krylov space carried from step to step: deflated CG
  (SPD) or GCRO-DR (:class:`~femno.datagen.strategy.RecycleStrategy`), from :math:`x^n`;
* ``hypre``: CG/GMRES with hypre's BoomerAMG through PETSc, set up for each
  :math:`A_n` (a cheap set-up, few iterations), from :math:`x^n`; where petsc4py has
  hypre (:func:`femno.datagen.auto.hypre_available`).

``auto`` measures instead of guessing. Each candidate (``hypre`` first where it is
available, then ``amg``, ``recycle``, ``factor``) solves two real steps in turn
(the first pays its set-up, the second gives its steady per-step cost); ``factor`` is
first projected from two patches of :math:`A_n`
(:func:`femno.solvers.factor.project_factor_seconds`) and only tried when the
projected refactorization + substitution is below :data:`FACTOR_MARGIN` times the
best measured step; the lowest measured per-step cost solves the remaining steps.
Every step of the probe is a real, checked solve, so the probe costs only the
losers' excess, and that excess is bounded: a candidate is not tried once the excess so
far plus its expected set-up step would pass :data:`PROBE_SHARE` of the projected
total (steps x the best measured step). A step an iterative candidate does not converge is re-solved by the
factorization (never a silent wrong step), and that candidate is dropped.

>>> import numpy as np, scipy.sparse as sp
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(2000, 2000), format="csr")
>>> s = varying_step_solver(spd=True, steps=10, method="auto")
>>> x = np.zeros(2000)
>>> for n in range(10):
...     A = (sp.eye(2000) + (5.0 + n) * T).tocsr()
...     x = s.solve(A, np.ones(2000), x)
>>> s.choice in VARYING_METHODS, bool(s.residual(A, np.ones(2000), x) < 1e-10)
(True, True)
"""

from __future__ import annotations

import time

import numpy as np

from femno.datagen.step_solver import SMALL_N  # below it auto factorizes without measuring
from femno.errors import InputError

__all__ = ["VARYING_METHODS", "VaryingStepSolver", "varying_step_solver", "FACTOR_MARGIN",
           "PROBE_SHARE"]

#: ``factor``, ``amg``, ``recycle``, ``hypre`` or ``auto`` (measured; module docstring)
VARYING_METHODS = ("factor", "amg", "recycle", "hypre", "auto")
#: ``auto`` tries the refactorization only when its projected per-step cost is below
#: this many times the best measured iterative step (the projection is good to ~2x)
FACTOR_MARGIN = 2.0
#: steps each candidate solves in ``auto``'s probe: set-up step + timed step
PROBE_STEPS = 2
#: the probe's steps may cost at most this share of the projected total (steps x best
#: measured step) beyond what the best way would have cost; a candidate that would not
#: fit is not probed (the bound of :mod:`femno.datagen.auto`, issue 23)
PROBE_SHARE = 0.1



class VaryingStepSolver:
    """``solve(A, b, x0) -> x`` for a new step matrix ``A`` (csr, (n, n)) at each step.

    Attributes
    ----------
    choice : str
        ``"factor"``, ``"amg"``, ``"recycle"`` or ``"hypre"``: what solves the steps now.
    explanation : str
        Why (``auto``: the measured per-step costs).
    costs : dict
        ``auto``: measured steady seconds per step of each candidate tried.
    factorizations : int
        Numeric factorizations made.
    iterations : list of int
        Krylov iterations of each iteratively solved step.
    setup_s : float
        Seconds in preconditioner set-ups/updates, analyses and the projection.
    """

    def __init__(self, *, spd: bool, steps: int, method: str = "auto", rtol: float = 1e-10,
                 near_nullspace=None, block_size: int = 1):
        if method not in VARYING_METHODS:
            raise InputError(f"varying-step method must be one of {VARYING_METHODS}, "
                             f"got {method!r}")
        self.spd, self.rtol, self.method = bool(spd), float(rtol), method
        self._nns = ({} if near_nullspace is None else
                     {"near_nullspace": near_nullspace, "block_size": int(block_size)})
        self._strategies: dict = {}
        self.factorizations, self.iterations, self.setup_s = 0, [], 0.0
        self.costs: dict = {}
        if method == "auto":
            from femno.datagen.auto import hypre_available

            self._plan = (["hypre"] if hypre_available() else []) + ["amg", "recycle", "factor"]
            self.choice = "amg"
            self.explanation = "auto: measuring"
        else:
            self._plan = []
            self.choice = method
            self.explanation = {"factor": "a numeric refactorization per step (analysis reused)",
                                "amg": "one AMG hierarchy updated per step, warm-started",
                                "recycle": ("deflated CG" if spd else "GCRO-DR") +
                                " with AMG and a carried space, warm-started",
                                "hypre": "BoomerAMG (PETSc) set up per step, warm-started",
                                }[method]
        self._probe_count = 0
        self._projected = False
        self._steps_total = int(steps)
        self._probe_seconds: list = []  # every probe step's seconds
        self._first_seconds: list = []  # each iterative candidate's first (set-up) step

    # -- the ways --------------------------------------------------------------------------
    def _strategy(self, name):
        from femno.datagen.strategy import KrylovStrategy, LUStrategy, RecycleStrategy

        if name not in self._strategies:
            if name == "factor":
                self._strategies[name] = LUStrategy(reuse=True, rtol=self.rtol)
            elif name in ("amg", "hypre"):
                petsc = {"backend": "petsc"} if name == "hypre" else {}
                self._strategies[name] = KrylovStrategy("cg" if self.spd else "gmres", pc=name,
                                                        rtol=self.rtol, restart=40,
                                                        reuse_pc=True, **petsc, **self._nns)
            else:
                self._strategies[name] = RecycleStrategy("dcg" if self.spd else "gcrodr",
                                                         pc="amg", rtol=self.rtol, k=10,
                                                         restart=40, **self._nns)
        return self._strategies[name]

    def _run(self, name, A, b, x0):
        """One step by ``name``: ``(x, seconds, converged)``."""
        s = self._strategy(name)
        t = time.perf_counter()
        x, st = s.solve(A, b, None if name == "factor" else x0)
        seconds = time.perf_counter() - t
        self.setup_s += float(st.setup_s)
        if name == "factor":
            self.factorizations += 1
        else:
            self.iterations.append(int(st.iterations))
        return x, seconds, bool(st.converged)

    # -- one step ----------------------------------------------------------------------
    def solve(self, A, b, x0=None) -> np.ndarray:
        """Solve the next step ``A x = b`` (``A`` csr (n, n), ``b`` (n,) float64) from
        ``x0`` (the previous step: the iterative candidates' initial guess)."""
        A = A.tocsr()
        b = np.asarray(b, dtype=np.float64)
        if self._plan and A.shape[0] < SMALL_N:  # a factorization costs under a millisecond
            self._plan, self.choice = [], "factor"
            self.explanation = f"auto: n = {A.shape[0]} < {SMALL_N}, refactorization per step"
        if self._plan:
            return self._probe(A, b, x0)
        return self._solve_chosen(A, b, x0)

    def _rescue(self, A, b, name):
        """A step ``name`` did not converge: the factorization solves it and the rest."""
        self.explanation += (f"; {name} missed rtol {self.rtol:g}: refactorization from "
                             "here on")
        self._plan = []
        self.choice = "factor"
        return self._run("factor", A, b, None)[0]

    def _affordable(self, name) -> bool:
        """Whether an untried iterative candidate fits in the probe's allowance: the
        excess so far plus its expected first step (the mean first step of those tried)
        over the best steady cost, within PROBE_SHARE x steps x best."""
        if name == "factor" or self._probe_count or not self.costs or not self._first_seconds:
            return True
        best = min(self.costs.values())
        waste = sum(self._probe_seconds) - len(self._probe_seconds) * best
        need = float(np.mean(self._first_seconds)) - best
        return waste + need <= PROBE_SHARE * self._steps_total * best

    def _probe(self, A, b, x0):
        name = self._plan[0]
        if name == "factor" and not self._factor_can_win(A):
            self._plan.pop(0)
            return self._finish_probe(A, b, x0)
        if not self._affordable(name):
            self._plan.pop(0)
            self.explanation += (f"; {name} not probed (the probe's allowance, "
                                 f"{PROBE_SHARE:.0%} of {self._steps_total} steps, is spent)")
            return self._finish_probe(A, b, x0)
        x, seconds, ok = self._run(name, A, b, x0)
        self._probe_seconds.append(seconds)
        if self._probe_count == 0 and name != "factor":
            self._first_seconds.append(seconds)
        self._probe_count += 1
        if not ok:
            if name == "factor":
                raise InputError("the refactorization missed rtol (see the stats): the step "
                                 "matrix is too ill-conditioned for rtol "
                                 f"{self.rtol:g}")
            self._plan.pop(0)
            self._probe_count = 0
            self.costs.pop(name, None)
            self.explanation += f"; {name} missed rtol {self.rtol:g} (dropped)"
            if not self._plan:  # nothing left to try: the factorization takes over
                self._decide()
                return self._rescue(A, b, name) if self.choice != "factor" else \
                    self._run("factor", A, b, None)[0]
            return self._probe(A, b, x)  # the next candidate re-solves this step
        done = self._probe_count >= PROBE_STEPS
        if name == "factor" and done:  # its backend: the one timed (no backend race here)
            lu = self._strategy("factor")
            lu.finish_probe()
            if lu.probe:
                seconds = min(lu.probe.values())
        if done:
            self.costs[name] = seconds
            self._plan.pop(0)
            self._probe_count = 0
            if not self._plan:
                self._decide()
        return x

    def _finish_probe(self, A, b, x0):
        if self._plan:
            return self._probe(A, b, x0)
        self._decide()
        return self._solve_chosen(A, b, x0)

    def _solve_chosen(self, A, b, x0):
        x, _, ok = self._run(self.choice, A, b, x0)
        if not ok and self.choice != "factor":
            return self._rescue(A, b, self.choice)
        return x

    def _factor_can_win(self, A) -> bool:
        from femno.solvers.factor import project_factor_seconds

        best = min(self.costs.values(), default=np.inf)
        if self._projected or not np.isfinite(best):  # projected once, before its first try
            return True
        self._projected = True
        t = time.perf_counter()
        p = project_factor_seconds(A, symmetric=self.spd, positive_definite=self.spd)
        self.setup_s += time.perf_counter() - t
        if p is None:
            return True
        per_step = p.seconds + p.solve_seconds
        ok = per_step < FACTOR_MARGIN * best
        self.explanation += (f"; refactorization projected {per_step * 1e3:.3g} ms per step"
                             + ("" if ok else " (not tried)"))
        return ok

    def _decide(self):
        self.choice = min(self.costs, key=self.costs.get) if self.costs else "factor"
        measured = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in self.costs.items())
        self.explanation = (f"auto: measured per step {measured}: {self.choice}"
                            + self.explanation[len("auto: measuring"):])
        for name in list(self._strategies):  # free the losers (factors, hierarchies)
            if name != self.choice:
                close = getattr(self._strategies.pop(name), "close", None)
                if close is not None:
                    close()

    @property
    def decided(self) -> bool:
        """Whether ``choice`` is final (always, unless ``auto`` is still measuring)."""
        return not self._plan

    @staticmethod
    def residual(A, b, x) -> float:
        """True relative residual :math:`\\|b - Ax\\| / \\|b\\|`."""
        nb = np.linalg.norm(b)
        return float(np.linalg.norm(b - A @ x) / (nb if nb > 0 else 1.0))


def varying_step_solver(*, spd: bool, steps: int, method: str = "auto", rtol: float = 1e-10,
                        near_nullspace=None, block_size: int = 1) -> VaryingStepSolver:
    """A :class:`VaryingStepSolver` for ``steps`` steps with a new matrix each (solver
    factory: ``s = varying_step_solver(...); x = s.solve(A_n, b_n, x_prev)``)."""
    return VaryingStepSolver(spd=spd, steps=steps, method=method, rtol=rtol,
                             near_nullspace=near_nullspace, block_size=block_size)
