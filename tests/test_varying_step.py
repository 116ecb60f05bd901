"""Time loops whose step matrix changes every step: heat-varying and the varying-step
solver (refactorization, updated AMG, recycling, measured)."""

import numpy as np
import pytest
import scipy.sparse as sp

import femno.solvers.factor as factor_mod
from femno.datagen.trajectory import solve_trajectory
from femno.datagen.varying_step import varying_step_solver
from femno.errors import InputError
from femno.fem.families import get_family


def test_heat_varying_coefficient_moves_and_assembles_consistently():
    fam = get_family("heat-varying", n=12)
    p = fam.sample(np.random.default_rng(3))
    a0, a1 = fam.coefficient_at(p, 0.0), fam.coefficient_at(p, 0.05)
    base = fam.coefficient(p["a"], "a")
    beta = fam.options["beta"]
    ratio = a0 / base  # exp(beta sin(.)) in [e^-beta, e^beta]
    assert ratio.min() >= np.exp(-beta) - 1e-12 and ratio.max() <= np.exp(beta) + 1e-12
    assert np.abs(np.log(a1 / a0)).max() > 0.1  # it moved
    # one period later the coefficient is back
    assert np.allclose(fam.coefficient_at(p, fam.options["period"]), a0, rtol=1e-12)
    free = fam.free_dofs()
    M, K, F = fam.condensed_operators_at(p, 0.05)
    Ms, Ks, Fs = fam.operators_at(p, 0.05)
    assert abs(K - Ks[free][:, free]).max() <= 1e-12 * abs(K).max()
    assert abs(M - Ms[free][:, free]).max() <= 1e-12 * abs(M).max()
    assert np.allclose(F, Fs[free])
    # the steady family is the first implicit Euler step at t = dt
    s = fam.assemble(p)
    dt = fam.options["dt"]
    A = (Ms + dt * fam.operators_at(p, dt)[1])[free][:, free]
    assert abs(s.A - A).max() <= 1e-12 * abs(A).max()
    with pytest.raises(InputError, match="direction"):
        fam.coefficient_at({**p, "direction": np.ones(3)}, 0.0)
    with pytest.raises(InputError, match="period"):
        get_family("heat-varying", n=4, period=0.0)


def test_heat_varying_trajectory_agrees_with_the_users_loop_every_way():
    """Every method gives the trajectory of scikit-fem assembly + spsolve per step, each
    step to its tolerance, with the energy identity of the varying-K θ-scheme kept; a
    wrong stiffness in the energy check (the old K) would show as an O(1e-3) defect."""
    fam = get_family("heat-varying", n=40)  # 1,521 free dofs
    p = fam.sample(np.random.default_rng(1))
    from femno.datagen.auto import hypre_available

    methods = ("naive", "reuse", "amg", "recycle", "auto") + (("hypre",) if hypre_available()
                                                              else ())
    runs = {m: solve_trajectory(fam, p, steps=10, dt=0.01, theta=0.5, method=m)
            for m in methods}
    ref = runs["naive"].u
    for m, tr in runs.items():
        assert tr.residuals.max() <= 1e-10, m
        assert np.abs(tr.energy_residual).max() <= 1e-9, m
        assert np.abs(tr.u - ref).max() <= 1e-8 * np.abs(ref).max(), m
    assert runs["reuse"].solver == "factor" and runs["reuse"].factorizations == 10
    assert runs["amg"].solver == "amg" and runs["amg"].factorizations == 0
    assert runs["recycle"].solver == "recycle"
    assert runs["auto"].solver in ("factor", "amg", "recycle", "hypre")
    assert "measured per step" in runs["auto"].explanation
    # the energy check is sharp: with K frozen at t = 0 it fails
    from femno.datagen.trajectory import _energy_defect
    M, K0, F = fam.condensed_operators_at(p, 0.0)
    x, xn = runs["naive"].u[0, fam.free_dofs()], runs["naive"].u[1, fam.free_dofs()]
    K1 = fam.condensed_operators_at(p, 0.01)[1]
    assert abs(_energy_defect(M, K0, F, x, xn, 0.01, 0.5, K1=K1)) <= 1e-10
    assert abs(_energy_defect(M, K0, F, x, xn, 0.01, 0.5)) > 1e-6


def _family_of_matrices(n=60):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    L = sp.csr_matrix(sp.kron(T, sp.eye(n)) + sp.kron(sp.eye(n), T))
    return lambda k: (sp.eye(n * n) + (20.0 + 2.0 * k) * L).tocsr()


@pytest.mark.parametrize("projected, tried", [(1e6, False), (0.0, True)])
def test_auto_tries_the_refactorization_only_when_its_projection_can_win(
        monkeypatch, projected, tried):
    import femno.datagen.varying_step as vs

    monkeypatch.setattr(vs, "PROBE_SHARE", np.inf)  # every candidate gets its two steps
    monkeypatch.setattr(factor_mod, "project_factor_seconds",
                        lambda A, **kw: factor_mod.FactorProjection(projected, 2.0, 0.0))
    A_of = _family_of_matrices()
    s = varying_step_solver(spd=True, steps=14, method="auto")
    x, rng = np.zeros(3600), np.random.default_rng(0)
    for k in range(14):
        A = A_of(k)
        b = A @ x + 1e-2 * rng.standard_normal(3600)
        x = s.solve(A, b, x)
        assert s.residual(A, b, x) <= 1e-10
    assert s.decided and ("factor" in s.costs) == tried
    assert set(s.costs) >= {"amg", "recycle"}  # (and hypre, where PETSc has it)
    assert s.choice == min(s.costs, key=s.costs.get)
    if not tried:
        assert "not tried" in s.explanation and s.factorizations == 0


def test_iterative_miss_is_resolved_by_the_factorization():
    """CG on a symmetric indefinite step matrix fails: the step is re-solved by the
    refactorization, never returned unconverged."""
    m = 40
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    L = sp.csr_matrix(sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T))
    for method in ("amg", "auto"):
        s = varying_step_solver(spd=True, steps=4, method=method)
        x = np.zeros(m * m)
        for k in range(4):
            A = (L - (0.5 + 0.01 * k) * sp.eye(m * m)).tocsr()
            b = np.ones(m * m)
            x = s.solve(A, b, x)
            assert s.residual(A, b, x) <= 1e-10
        assert s.choice == "factor" and "missed rtol" in s.explanation, method
    with pytest.raises(InputError, match="varying-step method"):
        varying_step_solver(spd=True, steps=3, method="magic")


def test_recycle_is_refused_where_the_step_matrix_is_fixed(tmp_path):
    from femno.datagen.generate_trajectory import generate_trajectories

    fam = get_family("heat", n=8)
    with pytest.raises(InputError, match="recycle"):
        solve_trajectory(fam, fam.sample(np.random.default_rng(0)), steps=2, method="recycle")
    with pytest.raises(InputError, match="hypre"):  # refused before a dataset is created
        generate_trajectories("heat", samples=1, steps=2, out=tmp_path / "d", method="hypre",
                              family_options={"n": 8}, progress=False)
    assert not (tmp_path / "d").exists()


def test_a_user_family_with_a_time_dependent_stiffness(tmp_path):
    """The module:Name hook: ``time_dependent = True`` and ``operators_at(params, t)``.
    A uniform conductivity k(t) = 1 + 0.5 sin(2 pi t) on the first sine mode: implicit
    Euler divides it by 1 + dt lambda k(t_{n+1}) per step, so (u_n / u_{n+1} - 1) /
    (dt k(t_{n+1})) is the same lambda at every step (with k(t_n) instead it is not)."""
    from femno.datagen import generate_trajectory as gt
    from femno.datagen.store import DatasetStore

    src = tmp_path / "pulse.py"
    src.write_text('''
import numpy as np
from skfem.models.poisson import laplace, mass
from femno.fem.families.base import Family


class Pulsing(Family):
    name = "pulsing"
    OPTIONS = {"dt": 0.02}
    spd = symmetric = True
    time_dependent = True

    def sample(self, rng):
        x, y = self.basis.doflocs
        return {"u_prev": rng.uniform(0.5, 2.0) * np.sin(np.pi * x) * np.sin(np.pi * y)}

    def operators_at(self, params, t):
        k = 1.0 + 0.5 * np.sin(2.0 * np.pi * t)
        return (mass.assemble(self.basis).tocsr(), k * laplace.assemble(self.basis).tocsr(),
                np.zeros(self.basis.N))

    def assemble_full(self, params, *, matrix=True):
        M, K, F = self.operators_at(params, self.options["dt"])
        A = (M + self.options["dt"] * K) if matrix else None
        return A, M @ params["u_prev"]

    def features(self, params):
        return np.array([params["u_prev"].max()])
''')
    steps, dt = 25, 0.02
    s = gt.generate_trajectories(f"{src}:Pulsing", samples=2, steps=steps, out=tmp_path / "p",
                                 family_options={"n": 8}, progress=False)
    assert s["done"] == 2 and s["failures"] == 0 and s["max_energy_residual"] < 1e-12
    U = DatasetStore.open(tmp_path / "p").root["solution"][:]
    k_next = 1.0 + 0.5 * np.sin(2.0 * np.pi * dt * np.arange(1, steps + 1))
    peak = U.max(axis=2)
    lam = (peak[:, :-1] / peak[:, 1:] - 1.0) / (dt * k_next)
    assert np.allclose(lam, lam[0, 0], rtol=2e-3) and abs(lam[0, 0] / (2 * np.pi**2) - 1) < 0.1
    k_prev = 1.0 + 0.5 * np.sin(2.0 * np.pi * dt * np.arange(steps))
    wrong = (peak[:, :-1] / peak[:, 1:] - 1.0) / (dt * k_prev)
    assert not np.allclose(wrong, wrong[0, 0], rtol=0.05)


def test_a_probe_without_allowance_keeps_the_first_candidate(monkeypatch):
    """PROBE_SHARE = 0: after the first candidate's two steps no other iterative one is
    tried (a short run cannot amortize a race), and the explanation says so."""
    import femno.datagen.varying_step as vs

    monkeypatch.setattr(vs, "PROBE_SHARE", 0.0)
    monkeypatch.setattr(factor_mod, "project_factor_seconds",
                        lambda A, **kw: factor_mod.FactorProjection(1e6, 2.0, 0.0))
    A_of = _family_of_matrices()
    s = varying_step_solver(spd=True, steps=8, method="auto")
    x = np.zeros(3600)
    for k in range(8):
        A = A_of(k)
        b = A @ x + 1e-2
        x = s.solve(A, b, x)
        assert s.residual(A, b, x) <= 1e-10
    assert s.decided and len(s.costs) == 1 and "allowance" in s.explanation
    assert s.choice == next(iter(s.costs))
