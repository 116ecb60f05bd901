"""The fixed-step solver of time loops: factorization, AMG, and the measured choice."""

import numpy as np
import pytest
import scipy.sparse as sp
import skfem

import femno.solvers.factor as factor_mod
from femno.datagen.step_solver import step_solver
from femno.datagen.trajectory import solve_trajectory
from femno.errors import InputError
from femno.fem.families import get_family


def _heat3d_step(m=14, dt=1e-3):
    """M + dt K of P1 on a 3-D tet mesh (interior dofs), SPD, n = (m-1)^3."""
    fam = get_family("heat", mesh=skfem.MeshTet.init_tensor(*[np.linspace(0, 1, m + 1)] * 3))
    M, K, _ = fam.operators(fam.sample(np.random.default_rng(0)))
    free = fam.free_dofs()
    return (M + dt * K)[free][:, free].tocsr()


def _march(s, A, steps, seed=0):
    rng = np.random.default_rng(seed)
    x, out = np.zeros(A.shape[0]), []
    for _ in range(steps):
        b = A @ x + 1e-3 * rng.standard_normal(A.shape[0])  # a slowly moving solution
        x = s.solve(b, x)
        out.append((b, x.copy()))
    return out


def test_every_way_solves_each_step_to_its_tolerance():
    A = _heat3d_step()
    ref = None
    for method in ("factor", "amg", "auto"):
        s = step_solver(A, spd=True, steps=6, method=method)
        out = _march(s, A, 6)
        for b, x in out:
            assert s.residual(b, x) <= 1e-10
        xs = np.array([x for _, x in out])
        if ref is None:
            ref = xs
        assert np.abs(xs - ref).max() <= 1e-8 * np.abs(ref).max()
        if method == "amg":
            assert s.factorizations == 0 and len(s.iterations) == 6
            assert max(s.iterations[1:]) <= 20  # warm-started from the previous step
        if method == "auto":
            assert s.choice in ("factor", "amg") and "measured" in s.explanation


@pytest.mark.parametrize("projected, choice, factorizations", [(1e6, "amg", 0), (0.0, "factor", 1)])
def test_auto_makes_the_factorization_only_when_its_projection_pays(
        monkeypatch, projected, choice, factorizations):
    monkeypatch.setattr(factor_mod, "project_factor_seconds",
                        lambda A, **kw: factor_mod.FactorProjection(projected, 2.0, 0.0))
    A = _heat3d_step(m=12)
    s = step_solver(A, spd=True, steps=10, method="auto")
    out = _march(s, A, 10)
    assert s.factorizations == factorizations
    assert s.choice == choice or (choice == "factor" and s.choice == "amg")  # measured after
    assert len(s.iterations) == (10 if choice == "amg" else 1 + 8 * (s.choice == "amg"))
    for b, x in out:
        assert s.residual(b, x) <= 1e-10


def test_amg_that_fails_hands_over_to_the_factorization():
    """CG with AMG on a symmetric indefinite matrix does not converge: the step is
    solved by the factorization instead, never returned unconverged."""
    m = 40
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    L = sp.csr_matrix(sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T))
    A = (L - 0.5 * sp.eye(m * m)).tocsr()  # eigenvalues on both sides of 0
    s = step_solver(A, spd=False, steps=3, method="amg")
    out = _march(s, A, 3)
    assert s.choice == "factor" and s.factorizations == 1 and "missed rtol" in s.explanation
    for b, x in out:
        assert s.residual(b, x) <= 1e-10
    with pytest.raises(InputError, match="step method"):
        step_solver(A, spd=False, steps=3, method="magic")


@pytest.mark.parametrize("family", ["heat", "wave", "advection-diffusion"])
def test_trajectories_agree_across_step_solvers(family):
    fam = get_family(family, n=40)  # 1,681 dofs: above auto's small-matrix shortcut
    params = fam.sample(np.random.default_rng(1))
    runs = {m: solve_trajectory(fam, params, steps=8, dt=1e-3, method=m)
            for m in ("reuse", "amg", "auto")}
    ref = runs["reuse"].u
    for m, tr in runs.items():
        assert tr.residuals.max() <= 1e-10 and np.abs(tr.energy_residual).max() <= 1e-8, m
        assert np.abs(tr.u - ref).max() <= 1e-8 * np.abs(ref).max(), m
    assert runs["reuse"].solver == "factor" and runs["reuse"].factorizations == 1
    assert runs["amg"].solver == "amg" and runs["amg"].factorizations == 0
    assert runs["auto"].solver in ("factor", "amg") and runs["auto"].explanation


def test_nonlinear_chord_jacobian_solved_each_way():
    """Allen-Cahn: chord Newton with its Jacobian factorized, AMG-solved or measured gives
    the same trajectory as full Newton with spsolve, every step to Newton's tolerance and
    with the dissipation inequality kept."""
    fam = get_family("allen-cahn", n=40)
    params = fam.sample(np.random.default_rng(1))
    runs = {m: solve_trajectory(fam, params, steps=6, method=m)
            for m in ("naive", "reuse", "amg", "auto")}
    ref = runs["naive"].u
    for m, tr in runs.items():
        assert tr.residuals.max() <= 1e-10 and np.abs(tr.energy_residual).max() <= 1e-10, m
        assert np.abs(tr.u - ref).max() <= 1e-8 * np.abs(ref).max(), m
    assert runs["reuse"].solver == "chord+factor" and runs["reuse"].factorizations >= 1
    assert runs["amg"].solver == "chord+amg" and runs["amg"].factorizations == 0
    assert runs["auto"].solver in ("chord+factor", "chord+amg")
