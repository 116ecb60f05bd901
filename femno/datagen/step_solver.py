r"""The solver of a time loop whose step matrix is fixed: factorize, AMG, or measured.

A linear time scheme with a fixed step (θ-scheme, Newmark) solves :math:`A x^{n+1} =
b^n` with one matrix :math:`A` for all :math:`T` steps of a trajectory. Two ways pay
their set-up once:

* ``factor``: one sparse factorization (CHOLMOD for SPD, else MUMPS/SuperLU LU), then
  a forward and a back substitution per step: cost :math:`t_f + T t_{tri}`;
* ``amg``: one AMG hierarchy (pyamg smoothed aggregation), then CG (SPD) or GMRES
  per step from the previous step's solution (the natural initial guess of a time
  loop): cost :math:`t_{s} + T t_{it}`, to ``rtol`` (default 1e-10).

On 2-D meshes the factorization wins (a substitution costs less than one V-cycle);
on 3-D meshes its fill makes :math:`t_f` grow like :math:`n^2`, and AMG wins from a
size on that depends on :math:`T`. ``auto`` measures instead of guessing:

1. the first step is solved by AMG-CG/GMRES: set-up :math:`t_s` and one warm-started
   solve :math:`t_{it}`, measured;
2. the factorization is projected from two patches of :math:`A`
   (:func:`femno.solvers.factor.project_factor_seconds`: :math:`\hat t_f`,
   :math:`\hat t_{tri}`); with :math:`R` steps left, it is made only when
   :math:`\hat t_f + R\,\hat t_{tri} < R\,t_{it}`;
3. once made, one substitution is timed; the rest of the steps use whichever of the
   two measured per-step costs is lower.

Below :data:`SMALL_N` unknowns ``auto`` factorizes at once. Its choice depends on
measured times, so two runs may solve a trajectory differently; the solutions then
differ at the AMG tolerance. ``factor`` is bit-for-bit reproducible.

>>> import numpy as np, scipy.sparse as sp
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(200, 200), format="csr")
>>> s = step_solver(sp.eye(200, format="csr") + 10.0 * T, spd=True, steps=5, method="auto")
>>> x = s.solve(np.ones(200), np.zeros(200))
>>> s.choice in ("factor", "amg"), bool(s.residual(np.ones(200), x) < 1e-10)
(True, True)
"""

from __future__ import annotations

import time

import numpy as np

from femno.errors import InputError

__all__ = ["STEP_METHODS", "StepSolver", "step_solver"]

#: ``factor`` (reuse), ``amg``, ``auto`` (measured, module docstring)
STEP_METHODS = ("factor", "amg", "auto")
#: below this many unknowns ``auto`` factorizes without measuring (a factorization
#: costs well under a millisecond there, and the projection needs larger patches)
SMALL_N = 1024


class StepSolver:
    """``solve(b, x0) -> x`` for a fixed step matrix ``A`` (csr, (n, n)), ``steps`` steps.

    Attributes
    ----------
    choice : str
        ``"factor"`` or ``"amg"``: what solves the steps now.
    explanation : str
        Why (``auto``: the measured and projected costs).
    factorizations : int
    iterations : list of int
        Krylov iterations of each AMG-solved step.
    setup_s : float
        Seconds in factorization, AMG set-up and projection.
    """

    def __init__(self, A, *, spd: bool, steps: int, method: str = "auto", rtol: float = 1e-10):
        if method not in STEP_METHODS:
            raise InputError(f"step method must be one of {STEP_METHODS}, got {method!r}")
        self.A, self.spd, self.rtol, self.method = A.tocsr(), bool(spd), float(rtol), method
        self.steps_left = int(steps)
        self.factorizations, self.iterations, self.setup_s = 0, [], 0.0
        self._factor = self._krylov = None
        self.choice = "amg" if method in ("amg", "auto") else "factor"
        self.explanation = {"factor": "one factorization", "amg": "one AMG hierarchy"}.get(
            method, "auto: measuring")
        self._state = "probe" if method == "auto" else "final"
        self._costs: dict = {}  # measured per-step seconds of each way

    # -- the two ways ------------------------------------------------------------------
    def _make_factor(self):
        from femno.solvers.factor import sparse_factor

        t = time.perf_counter()
        self._factor = sparse_factor(symmetric=self.spd, positive_definite=self.spd)
        self._factor.factorize(self.A)
        self.factorizations += 1
        self.setup_s += time.perf_counter() - t

    def _by_factor(self, b):
        if self._factor is None:
            self._make_factor()
        return self._factor.solve(b)

    def _by_amg(self, b, x0):
        """One AMG-preconditioned CG/GMRES solve (hierarchy built on the first call);
        returns x and the solve's seconds without the set-up."""
        from femno.solvers import krylov

        if self._krylov is None:
            self._krylov = krylov("cg" if self.spd else "gmres", pc="amg", rtol=self.rtol,
                                  restart=40, on_fail="ignore", reuse_pc=True)
        x = self._krylov(self.A, b, x0=x0)
        st = self._krylov.stats
        self.setup_s += float(st.setup_s)
        self.iterations.append(int(st.iterations))
        if not st.converged:  # never a silent wrong step: the factorization takes over
            self.choice, self._state = "factor", "final"
            self.explanation += (f"; AMG missed rtol {self.rtol:g} after {st.iterations} "
                                 "iterations, factorization from here on")
            return self._by_factor(b), np.inf
        return x, float(st.solve_s)

    # -- one step ----------------------------------------------------------------------
    def solve(self, b, x0=None) -> np.ndarray:
        """Solve the next step, ``A x = b`` (b: (n,) float64), from ``x0`` (AMG's guess)."""
        b = np.asarray(b, dtype=np.float64)
        self.steps_left -= 1
        if self._state == "probe" and self.A.shape[0] < SMALL_N:  # factorizing is cheap
            self.choice, self._state = "factor", "final"
            self.explanation = f"auto: n = {self.A.shape[0]} < {SMALL_N}, factorization"
        if self._state == "probe":  # auto, step 1: AMG measured, the factor projected
            x, self._costs["amg"] = self._by_amg(b, x0)
            if self._state == "probe":
                self._project()
            return x
        if self._state == "try-factor":  # auto, step 2: factorize, time one substitution
            self._make_factor()
            t = time.perf_counter()
            x = self._factor.solve(b)
            self._costs["factor"] = time.perf_counter() - t
            self.choice = min(self._costs, key=self._costs.get)
            self._state = "final"
            self.explanation += (f"; measured per step: factor {self._costs['factor'] * 1e3:.3g}"
                                 f" ms, amg {self._costs['amg'] * 1e3:.3g} ms: {self.choice}")
            return x
        return self._by_factor(b) if self.choice == "factor" else self._by_amg(b, x0)[0]

    def _project(self):
        """After step 1: make the factorization only if its projection can pay."""
        from femno.solvers.factor import project_factor_seconds

        t = time.perf_counter()
        p = project_factor_seconds(self.A, symmetric=self.spd, positive_definite=self.spd)
        self.setup_s += time.perf_counter() - t
        R, t_it = self.steps_left, self._costs["amg"]
        if R <= 0:
            self._state = "final"
            return
        if p is None:  # a patch could not be factorized: measure the factor itself
            self._state = "try-factor"
            self.explanation = (f"auto: AMG {t_it * 1e3:.3g} ms per step measured; no "
                                "projection of the factorization")
            return
        self.explanation = (f"auto: AMG {t_it * 1e3:.3g} ms per step measured; factorization "
                            f"projected {p.seconds * 1e3:.3g} ms + {p.solve_seconds * 1e3:.3g} "
                            f"ms per step, {R} steps left")
        if p.seconds + R * p.solve_seconds < R * t_it:
            self._state = "try-factor"
        else:
            self._state = "final"
            self.explanation += ": AMG for the rest"

    @property
    def decided(self) -> bool:
        """Whether ``choice`` is final (always, unless ``auto`` is still measuring)."""
        return self._state == "final"

    def residual(self, b, x) -> float:
        """True relative residual :math:`\\|b - Ax\\| / \\|b\\|`."""
        nb = np.linalg.norm(b)
        return float(np.linalg.norm(b - self.A @ x) / (nb if nb > 0 else 1.0))


def step_solver(A, *, spd: bool, steps: int, method: str = "auto",
                rtol: float = 1e-10) -> StepSolver:
    """A :class:`StepSolver` for the fixed step matrix ``A`` of ``steps`` time steps
    (solver factory: ``s = step_solver(A, ...); x = s.solve(b, x_prev)``)."""
    return StepSolver(A, spd=spd, steps=steps, method=method, rtol=rtol)
