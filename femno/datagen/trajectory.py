r"""Time-dependent trajectories: the θ-scheme for the heat family, validated per step.

A trajectory of the heat equation :math:`u_t - \nabla\cdot(a\nabla u) = f`
(homogeneous Dirichlet data; :class:`femno.fem.families.scalar.Heat` draws the
coefficient :math:`a` and the initial condition :math:`u^0`) on a fixed mesh is

.. math:: (M + \theta\,\Delta t\,K)\,u^{n+1} = (M - (1-\theta)\,\Delta t\,K)\,u^n
          + \Delta t\,F, \qquad n = 0, \dots, T-1,

with ``theta = 1`` implicit Euler (first order) and ``theta = 1/2`` Crank--Nicolson
(second order). The matrix :math:`A = M + \theta\Delta t K` is the same at every step
of a sample, so :func:`solve_trajectory` factorizes it once (CHOLMOD where available,
:func:`femno.solvers.factor.sparse_factor`) and pays two triangular solves per step;
``method="naive"`` is the loop a user would write (scikit-fem assembly of the step
matrix and ``spsolve`` at every step), kept as the benchmark's baseline.

Validation, recorded for every step:

* the true relative residual :math:`\|A u^{n+1} - b^n\| / \|b^n\|` of the step system;
* the discrete energy balance. With :math:`u_\theta = \theta u^{n+1} + (1-\theta)u^n`,
  :math:`E^n = \tfrac12 (u^n)^T M u^n` and :math:`\delta = u^{n+1} - u^n`, the scheme
  implies exactly

  .. math:: E^{n+1} - E^n + (\theta - \tfrac12)\,\delta^T M \delta
            + \Delta t\, u_\theta^T K u_\theta - \Delta t\, F^T u_\theta = 0,

  whose left side, relative to :math:`E^n + E^{n+1} + \Delta t |u_\theta^T K u_\theta|`,
  is stored as ``energy_residual`` (rounding-level for a correct step; a wrong matrix,
  time step or scheme shows up as O(1)).

>>> from femno.fem.families import get_family
>>> fam = get_family("heat", n=8)
>>> tr = solve_trajectory(fam, fam.sample(np.random.default_rng(0)), steps=4, dt=0.01)
>>> tr.u.shape, bool(tr.residuals.max() < 1e-10), bool(np.abs(tr.energy_residual).max() < 1e-10)
((5, 81), True, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg as spla

from femno.errors import InputError
from femno.fem.families.base import positive_number

__all__ = ["Trajectory", "solve_trajectory", "time_operators", "initial_condition",
           "check_trajectory_method", "TRAJECTORY_METHODS"]

#: ``reuse``: one factorization per sample (a changing step matrix: its symbolic
#: analysis, refactorized per step); ``amg``: one AMG hierarchy (updated per step where
#: the matrix changes), CG/GMRES per step from the previous step; ``recycle`` (changing
#: step matrices only): AMG and a Krylov space carried across steps; ``hypre`` (changing
#: step matrices, PETSc with hypre): BoomerAMG set up per step; ``auto``: measured
#: (:mod:`femno.datagen.step_solver`, :mod:`femno.datagen.varying_step`); ``naive``:
#: assemble + ``spsolve`` per step
TRAJECTORY_METHODS = ("reuse", "amg", "recycle", "hypre", "auto", "naive")


@dataclass
class Trajectory:
    """One sample's trajectory.

    Attributes
    ----------
    times : ndarray, shape (T + 1,)
        :math:`t_n = n\\,\\Delta t`.
    u : ndarray, shape (T + 1, n_dofs), float64
        Full FE coefficient vectors (Dirichlet dofs included), ``u[0]`` the initial condition.
    residuals : ndarray, shape (T,)
        True relative residual of each step's system.
    energy_residual : ndarray, shape (T,)
        Relative defect of the discrete energy balance of each step (module docstring).
    setup_s, solve_s : float
        Seconds in assembly + factorization, and in the time steps.
    factorizations : int
        Sparse factorizations made (0 for ``naive``).
    solver : str
        What solved the steps: ``factor``, ``amg``, ``recycle`` / ``hypre`` (changing
        step matrices), ``chord+factor`` / ``chord+amg`` (nonlinear) or ``naive``;
        ``explanation`` says why (``auto``: the measured costs).
    """

    times: np.ndarray
    u: np.ndarray
    residuals: np.ndarray
    energy_residual: np.ndarray
    setup_s: float
    solve_s: float
    factorizations: int = 0
    solver: str = ""
    explanation: str = ""


def time_operators(fam, params):
    """``(M, K, F)`` of a time-dependent family's sample: full mass, stiffness and load.

    Shapes ``(n_dofs, n_dofs)`` (CSR, float64) and ``(n_dofs,)``; the family's Dirichlet
    dofs are not eliminated here.
    """
    ops = getattr(fam, "operators", None)
    if ops is None:
        raise InputError(f"family {getattr(fam, 'name', type(fam).__name__)!r} has no time-"
                         "dependent form (operators(params) -> (M, K, F), or "
                         "time_dependent = True and operators_at(params, t)); trajectories "
                         "are available for: heat, advection-diffusion, wave, allen-cahn, "
                         "heat-varying")
    return ops(params)


def initial_condition(fam, params) -> np.ndarray:
    """The full FE vector ``params["u_prev"]`` (shape ``(n_dofs,)``), checked.

    A user family with ``operators(params)`` puts its initial condition there; the
    Dirichlet entries are set to 0 by the time steppers (homogeneous data).
    """
    u = np.asarray(params.get("u_prev") if isinstance(params, dict) else None, dtype=np.float64)
    if u.shape != (fam.basis.N,) or not np.all(np.isfinite(u)):
        raise InputError(f"params['u_prev'] (the initial condition) must be a finite vector of "
                         f"length {fam.basis.N}, got shape {u.shape}")
    return u


def _condensed(fam, params, steps):
    """Free dofs, ``(M, K, F)`` on them, and the ``(steps + 1, n_dofs)`` trajectory array
    with ``u[0]`` the initial condition (Dirichlet entries 0: homogeneous data)."""
    free = fam.free_dofs()
    M, K, F = time_operators(fam, params)
    u = np.zeros((steps + 1, fam.basis.N))
    u[0, free] = initial_condition(fam, params)[free]
    return free, M[free][:, free].tocsr(), K[free][:, free].tocsr(), F[free], u


def check_trajectory_method(fam, method) -> None:
    """Refuse, before any work, a method the family's time loop has no use for:
    ``recycle`` and ``hypre`` are for step matrices that change (``time_dependent``)."""
    if method in ("recycle", "hypre") and not getattr(fam, "time_dependent", False):
        raise InputError(f"method {method!r} is for step matrices that change (time-"
                         "dependent coefficients, e.g. heat-varying); this family's step "
                         "matrix is fixed: use reuse, amg or auto")


def _check(steps, dt, theta, method):
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    dt = positive_number(dt, "dt")
    theta = float(theta)
    if not 0.5 <= theta <= 1.0:
        raise InputError(f"theta must lie in [0.5, 1] (unconditionally stable schemes), got {theta}")
    if method not in TRAJECTORY_METHODS:
        raise InputError(f"method must be one of {TRAJECTORY_METHODS}, got {method!r}")
    return int(steps), dt, theta


def solve_trajectory(fam, params, *, steps, dt=None, theta=1.0, method="reuse"):
    r"""Run the θ-scheme from ``params['u_prev']`` (the initial condition) for ``steps`` steps.

    Parameters
    ----------
    fam : a family with ``operators(params) -> (M, K, F)``: ``heat``
        (:class:`~femno.fem.families.scalar.Heat`), ``advection-diffusion``
        (:class:`~femno.fem.families.transient.AdvectionDiffusion`, nonsymmetric ``K``:
        LU instead of Cholesky), ``wave`` (:class:`~femno.fem.families.transient.Wave`,
        ``time_order = 2``: average-acceleration Newmark; ``theta`` is not used) or
        ``allen-cahn`` (:class:`~femno.fem.families.transient.AllenCahn`, nonlinear:
        implicit Euler with Newton; ``theta`` is not used)
    params : dict
        One sample, ``fam.sample(rng)``: coefficient ``a`` and initial condition ``u_prev``.
    steps : int, keyword-only
        Number of time steps ``T``.
    dt : float, optional, keyword-only
        Time step (default: the family's ``dt`` option).
    theta : float in [1/2, 1], keyword-only
        1 = implicit Euler, 1/2 = Crank--Nicolson.
    method : {"reuse", "amg", "recycle", "hypre", "auto", "naive"}, keyword-only
        ``reuse`` factorizes the step matrix once; ``amg`` builds one AMG hierarchy and
        runs CG (SPD) / GMRES per step from the previous step (rtol 1e-10); ``auto``
        measures both on the first steps and keeps the cheaper
        (:mod:`femno.datagen.step_solver`; nonlinear families use chord Newton, its
        Jacobian solved the same three ways); ``naive`` assembles the step matrix with scikit-fem and calls
        ``spsolve`` at every step (the baseline of ``bench_trajectory.py``). A family
        whose coefficients change in time (``time_dependent``, e.g. ``heat-varying``)
        gets a new step matrix every step: ``reuse`` refactorizes it (analysis reused),
        ``amg`` updates one hierarchy, ``recycle`` also carries a Krylov space,
        ``hypre`` sets up BoomerAMG per step, and ``auto`` measures them
        (:mod:`femno.datagen.varying_step`).

    Returns
    -------
    Trajectory
    """
    steps, dt, theta = _check(steps, fam.options["dt"] if dt is None else dt, theta, method)
    check_trajectory_method(fam, method)
    if getattr(fam, "time_dependent", False):
        return _varying_theta(fam, params, steps=steps, dt=dt, theta=theta, method=method)
    if getattr(fam, "time_order", 1) == 2:
        return _newmark(fam, params, steps=steps, dt=dt, method=method)
    if getattr(fam, "nonlinear", False):
        return _newton_euler(fam, params, steps=steps, dt=dt, method=method)
    t0 = time.perf_counter()
    free, Mf, Kf, Ff, u = _condensed(fam, params, steps)
    res = np.empty(steps)
    energy = np.empty(steps)
    A = (Mf + theta * dt * Kf).tocsr()
    B = (Mf - (1.0 - theta) * dt * Kf).tocsr()
    stepper = _stepper(fam, A, steps, method)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    x = u[0, free].copy()
    for n in range(steps):
        b = B @ x + dt * Ff
        if method == "naive":  # what a user writes: assemble the step matrix, spsolve
            Mn, Kn, _ = time_operators(fam, params)
            An = (Mn + theta * dt * Kn)[free][:, free].tocsc()
            xn = spla.spsolve(An, b)
        else:
            xn = stepper.solve(b, x)
        bn = np.linalg.norm(b)
        res[n] = np.linalg.norm(A @ xn - b) / (bn if bn > 0 else 1.0)
        energy[n] = _energy_defect(Mf, Kf, Ff, x, xn, dt, theta)
        x = xn
        u[n + 1, free] = x
    return _linear_result(dt, steps, u, res, energy, setup, time.perf_counter() - t1, stepper)


def _energy_defect(M, K, F, x, xn, dt, theta, K1=None) -> float:
    r"""Relative defect of the discrete energy identity of one θ-step (module docstring).

    ``K1``: the stiffness at the new time where it changes (then the dissipation term is
    :math:`\Delta t\, u_\theta^T(\theta K_1 u^{n+1} + (1-\theta) K_0 u^n)`)."""
    ut = theta * xn + (1.0 - theta) * x
    d = xn - x
    e0, e1 = 0.5 * x @ (M @ x), 0.5 * xn @ (M @ xn)
    diss = dt * ut @ (K @ ut) if K1 is None else \
        dt * ut @ (theta * (K1 @ xn) + (1.0 - theta) * (K @ x))
    lhs = e1 - e0 + (theta - 0.5) * d @ (M @ d) + diss - dt * F @ ut
    scale = e0 + e1 + abs(diss) + abs(dt * F @ ut)
    return float(lhs / scale) if scale > 0 else float(lhs)



def _condensed_at(fam, params, t, free):
    """``(M, K(t), F)`` on the free dofs of a time-dependent family: its own value-only
    path (``condensed_operators_at``) or ``operators_at`` and condensation."""
    fast = getattr(fam, "condensed_operators_at", None)
    if fast is not None:
        return fast(params, t)
    M, K, F = fam.operators_at(params, t)
    return M[free][:, free].tocsr(), K[free][:, free].tocsr(), np.asarray(F)[free]


def _varying_theta(fam, params, *, steps, dt, theta, method):
    r"""The θ-scheme with a time-dependent stiffness :math:`K_n = K(t_n)`
    (``fam.time_dependent``; ``fam.operators_at(params, t) -> (M, K, F)``):

    .. math:: (M + \theta\Delta t K_{n+1}) u^{n+1} = (M - (1-\theta)\Delta t K_n) u^n
              + \Delta t F,

    a new step matrix at every step, solved as :mod:`femno.datagen.varying_step`
    chooses (``reuse``: refactorization with the analysis reused; ``amg``;
    ``recycle``; ``auto``: measured), or by scikit-fem assembly + ``spsolve``
    (``naive``). The energy identity holds with the dissipation term
    :math:`\Delta t\,u_\theta^T(\theta K_{n+1}u^{n+1} + (1-\theta)K_n u^n)`.
    """
    from femno.datagen.varying_step import varying_step_solver

    t0 = time.perf_counter()
    free = fam.free_dofs()
    Mf, K0, Ff = _condensed_at(fam, params, 0.0, free)
    u = np.zeros((steps + 1, fam.basis.N))
    u[0, free] = initial_condition(fam, params)[free]
    stepper = None if method == "naive" else varying_step_solver(
        spd=bool(getattr(fam, "spd", False)), steps=steps,
        method="factor" if method == "reuse" else method)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    res, energy = np.empty(steps), np.empty(steps)
    x = u[0, free].copy()
    for n in range(steps):
        b = Mf @ x - (1.0 - theta) * dt * (K0 @ x) + dt * Ff
        if method == "naive":  # the user's loop: scikit-fem assembly + spsolve per step
            Mn, Kn, _ = fam.operators_at(params, (n + 1) * dt)
            K1 = Kn[free][:, free].tocsr()
            A = (Mn[free][:, free] + theta * dt * K1).tocsr()
            xn = spla.spsolve(A.tocsc(), b)
        else:
            _, K1, _ = _condensed_at(fam, params, (n + 1) * dt, free)
            A = (Mf + theta * dt * K1).tocsr()
            xn = stepper.solve(A, b, x)
        bn = np.linalg.norm(b)
        res[n] = np.linalg.norm(A @ xn - b) / (bn if bn > 0 else 1.0)
        energy[n] = _energy_defect(Mf, K0, Ff, x, xn, dt, theta, K1=K1)
        x, K0 = xn, K1
        u[n + 1, free] = x
    return _linear_result(dt, steps, u, res, energy, setup, time.perf_counter() - t1, stepper)


def _stepper(fam, A, steps, method):
    """The fixed step matrix's solver (None for ``naive``)."""
    from femno.datagen.step_solver import step_solver

    if method == "naive":
        return None
    return step_solver(A, spd=bool(getattr(fam, "spd", False)), steps=steps,
                       method="factor" if method == "reuse" else method)


def _linear_result(dt, steps, u, res, energy, setup, solve_s, stepper):
    if stepper is None:
        return Trajectory(times=dt * np.arange(steps + 1), u=u, residuals=res,
                          energy_residual=energy, setup_s=setup, solve_s=solve_s,
                          solver="naive", explanation="scikit-fem assembly + spsolve per step")
    # the first steps of amg/auto build their hierarchy or factor inside the time loop
    return Trajectory(times=dt * np.arange(steps + 1), u=u, residuals=res,
                      energy_residual=energy, setup_s=setup + stepper.setup_s,
                      solve_s=solve_s - stepper.setup_s, factorizations=stepper.factorizations,
                      solver=stepper.choice, explanation=stepper.explanation)


def _jacobian_solver(A, method, solves, previous):
    """The solver of a chord Jacobian ``A`` (SPD for dt < 1): a factorization (``reuse``),
    AMG-CG (``amg``) or, for ``auto``, the measured choice of
    :mod:`~femno.datagen.step_solver` made on the first Jacobian and kept for the
    refreshed ones (``solves``: the expected number of chord solves, 3 per step)."""
    from femno.datagen.step_solver import step_solver

    if method == "auto" and previous is not None and previous.decided:
        method = previous.choice  # measured on an earlier Jacobian: kept
    return step_solver(A, spd=True, steps=solves, method="factor" if method == "reuse" else method)


def _newmark(fam, params, *, steps, dt, method):
    r"""Average-acceleration Newmark (:math:`\beta = 1/4`, :math:`\gamma = 1/2`) for
    :math:`M\ddot u + K u = F`, from :math:`u^0` = ``u_prev`` at rest.

    Each step solves :math:`(M + \beta\Delta t^2 K)\,a^{n+1} = F - K\tilde u` with the
    predictor :math:`\tilde u = u^n + \Delta t v^n + (\tfrac12 - \beta)\Delta t^2 a^n`.
    ``energy_residual`` is the relative change of the conserved
    :math:`\Pi = \tfrac12 v^T M v + \tfrac12 u^T K u - F^T u` over the step (exactly 0
    for this scheme: it is the trapezoidal rule on :math:`(u, v)`).
    """
    beta, gamma = 0.25, 0.5
    t0 = time.perf_counter()
    free, Mf, Kf, Ff, u = _condensed(fam, params, steps)
    A = (Mf + beta * dt * dt * Kf).tocsr()
    x = u[0, free].copy()
    v = np.zeros_like(x)
    acc = spla.spsolve(Mf.tocsc(), Ff - Kf @ x)  # initial acceleration (one mass solve)
    stepper = _stepper(fam, A, steps, method)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    res, energy = np.empty(steps), np.empty(steps)

    def quadratic(x, v):  # kinetic + strain energy; Pi = quadratic - F^T u
        return 0.5 * v @ (Mf @ v) + 0.5 * x @ (Kf @ x)

    for n in range(steps):
        pred = x + dt * v + (0.5 - beta) * dt * dt * acc
        b = Ff - Kf @ pred
        if method == "naive":
            Mn, Kn, _ = time_operators(fam, params)
            an = spla.spsolve((Mn + beta * dt * dt * Kn)[free][:, free].tocsc(), b)
        else:
            an = stepper.solve(b, acc)
        bn = np.linalg.norm(b)
        res[n] = np.linalg.norm(A @ an - b) / (bn if bn > 0 else 1.0)
        xn = pred + beta * dt * dt * an
        vn = v + (1.0 - gamma) * dt * acc + gamma * dt * an
        q0, q1 = quadratic(x, v), quadratic(xn, vn)
        change = (q1 - Ff @ xn) - (q0 - Ff @ x)
        scale = q0 + q1 + abs(Ff @ x) + abs(Ff @ xn)
        energy[n] = float(change / scale) if scale > 0 else float(change)
        x, v, acc = xn, vn, an
        u[n + 1, free] = x
    return _linear_result(dt, steps, u, res, energy, setup, time.perf_counter() - t1, stepper)


#: Newton: stop when the step residual is below this (relative to ||M u^n|| / dt)
NEWTON_RTOL = 1e-10
#: chord iterations with a kept factorization before it is refreshed at the current iterate
CHORD_MAXITER = 6
#: ... or as soon as one iteration reduces the residual by less than this factor
CHORD_RATE = 0.25


def _newton_euler(fam, params, *, steps, dt, method, maxiter=30):
    r"""Implicit Euler with Newton for a nonlinear family (``fam.nonlinear_terms``).

    ``method="naive"``: full Newton, the Jacobian assembled by scikit-fem and solved by
    ``spsolve`` at every iteration. Otherwise chord Newton: one Jacobian kept across
    iterations *and steps* and refreshed at the current iterate when an iteration
    contracts the residual by less than :data:`CHORD_RATE` or after
    :data:`CHORD_MAXITER` iterations in a step; it is solved by one factorization
    (``reuse``), by AMG-CG with one hierarchy per Jacobian (``amg``), or as measured on
    the first Jacobian (``auto``, :mod:`~femno.datagen.step_solver`). Both start each step from the previous
    solution and stop at the relative residual :data:`NEWTON_RTOL`.

    ``energy_residual`` records the violation (positive part, relative to :math:`E^n`) of
    the dissipation inequality :math:`E^{n+1} - E^n + (\tfrac1{\Delta t} - \tfrac12)
    \|u^{n+1} - u^n\|_M^2 \le 0` (0 for a correct step).
    """
    t0 = time.perf_counter()
    free, Mf, Kf, _, u = _condensed(fam, params, steps)
    full = u[0].copy()  # work vector: the current iterate with its Dirichlet zeros
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    res, energy = np.empty(steps), np.empty(steps)
    solve, stepper, factorizations, kinds = None, None, 0, []

    def state(x, jacobian):
        """Step-independent parts at ``x``: N(x), its Jacobian (or None), energy E(x)."""
        full[free] = x
        Nl, J, well = fam.nonlinear_terms(full, jacobian=jacobian)
        return Nl[free], (None if J is None else J[free][:, free]), well + 0.5 * x @ (Kf @ x)

    x = u[0, free].copy()
    Nl, _, e_old = state(x, False)
    for n in range(steps):
        xn_prev = x.copy()
        scale = max(np.linalg.norm(Mf @ xn_prev) / dt, np.finfo(float).tiny)
        r = Kf @ x + Nl  # (x = u^n: no mass term yet)
        rn, its, e_new = np.linalg.norm(r), 0, e_old
        while rn > NEWTON_RTOL * scale and its < maxiter:
            if method == "naive" or solve is None:  # a Jacobian at the current iterate
                _, J, _ = state(x, True)
                A = (Mf / dt + Kf + J).tocsr()
                if method == "naive":
                    dx = spla.spsolve(A.tocsc(), -r)
                else:
                    if stepper is not None:
                        factorizations += stepper.factorizations
                    stepper = solve = _jacobian_solver(A, method, 3 * steps, stepper)
                    kinds.append(stepper)
            if method != "naive":
                dx = solve.solve(-r)
            x = x + dx
            its += 1
            Nl, _, e_new = state(x, False)
            r = (Mf @ (x - xn_prev)) / dt + Kf @ x + Nl
            r_new = np.linalg.norm(r)
            if method != "naive" and (r_new > CHORD_RATE * rn or its >= CHORD_MAXITER):
                solve = None  # refresh at the current iterate on the next iteration
            rn = r_new
        res[n] = rn / scale
        d = x - xn_prev
        excess = e_new - e_old + (1.0 / dt - 0.5) * d @ (Mf @ d)
        energy[n] = max(excess, 0.0) / max(abs(e_old), np.finfo(float).tiny)
        e_old = e_new
        u[n + 1, free] = x
    return Trajectory(times=dt * np.arange(steps + 1), u=u, residuals=res,
                      energy_residual=energy, setup_s=setup, solve_s=time.perf_counter() - t1,
                      factorizations=factorizations + (stepper.factorizations if stepper else 0),
                      solver="naive" if method == "naive" else f"chord+{kinds[-1].choice}",
                      explanation="full Newton, spsolve" if method == "naive" else
                      f"chord Newton, {len(kinds)} Jacobian(s) kept across iterations and "
                      f"steps, solved by {kinds[-1].choice} (first: {kinds[0].explanation})")
