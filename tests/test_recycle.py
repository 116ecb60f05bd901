"""Krylov subspace recycling: GCRO-DR and deflated CG (numpy backend, factory)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femno.errors import ConvergenceError, InputError
from femno.solvers import krylov
from femno.solvers.krylov import gmres
from femno.solvers.precond import make_preconditioner
from femno.solvers.recycle import DeflationSpace, RecycleSpace, deflated_cg, gcrodr


def _darcy(n, seed):
    from femno.fem import get_family

    fam = get_family("darcy", n=n)
    s = fam.assemble(fam.sample(np.random.default_rng(seed)))
    return sp.csr_matrix(s.A), np.asarray(s.b, dtype=np.float64)


def _convdiff(m=30, eps=0.02, w=(1.0, 0.6)):
    """-eps lap u + w . grad u on an m x m grid, first-order upwind (nonsymmetric)."""
    h = 1.0 / (m + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m)) * (eps / h**2)
    D = sp.diags([-1.0, 1.0], [-1, 0], shape=(m, m)) / h  # backward difference (w > 0)
    eye = sp.eye(m)
    A = sp.kron(eye, T) + sp.kron(T, eye) + w[0] * sp.kron(eye, D) + w[1] * sp.kron(D, eye)
    x = np.linspace(h, 1 - h, m)
    b = np.outer(np.sin(np.pi * x), np.ones(m)).ravel() + 1.0
    return sp.csr_matrix(A), b


def _M(name, A):
    return None if name == "none" else make_preconditioner(name).setup(A).apply


def _relerr(x, xref):
    return np.linalg.norm(x - xref) / np.linalg.norm(xref)


@pytest.mark.parametrize("problem", ["darcy", "convdiff"])
@pytest.mark.parametrize("pc", ["none", "jacobi", "ilu", "amg"])
def test_gcrodr_matches_spsolve(problem, pc):
    A, b = _darcy(20, 0) if problem == "darcy" else _convdiff()
    xref = spla.spsolve(A.tocsc(), b)
    space = RecycleSpace()
    x, info = gcrodr(A, b, M=_M(pc, A), rtol=1e-11, m=30, k=10, recycle=space)
    assert info["reason"] == "rtol" and info["residual_kind"] == "true"
    assert np.linalg.norm(b - A @ x) <= 1.01e-11 * np.linalg.norm(b)
    assert _relerr(x, xref) < 1e-7
    assert len(info["residuals"]) >= info["iterations"] + 1
    # second solve from the carried space (same matrix, new rhs)
    b2 = np.random.default_rng(1).standard_normal(len(b))
    x2, info2 = gcrodr(A, b2, M=_M(pc, A), rtol=1e-11, m=30, k=10, recycle=space)
    assert info2["reason"] == "rtol" and _relerr(x2, spla.spsolve(A.tocsc(), b2)) < 1e-7


@pytest.mark.parametrize("pc", ["none", "jacobi", "amg"])
def test_deflated_cg_matches_spsolve(pc):
    space = DeflationSpace()
    for seed in (0, 1):
        A, b = _darcy(20, seed)
        x, info = deflated_cg(A, b, M=_M(pc, A), rtol=1e-11, k=6, recycle=space)
        assert info["reason"] == "rtol"
        assert np.linalg.norm(b - A @ x) <= 1.01e-11 * np.linalg.norm(b)
        assert _relerr(x, spla.spsolve(A.tocsc(), b)) < 1e-7
    assert space.k == 6 and np.allclose(space.W.T @ (A @ space.W), np.eye(6), atol=1e-8)


@pytest.mark.parametrize("method", ["gcrodr", "dcg"])
@pytest.mark.parametrize("pc", ["none", "jacobi"])
def test_fixed_matrix_many_rhs_recycling_pays(method, pc):
    A, _ = _darcy(32, 3)
    M = _M(pc, A)
    B = np.random.default_rng(7).standard_normal((6, A.shape[0]))
    if method == "gcrodr":
        solve = lambda b, s: gcrodr(A, b, M=M, m=40, k=20, recycle=s)  # noqa: E731
        make = RecycleSpace
    else:
        solve = lambda b, s: deflated_cg(A, b, M=M, k=10, recycle=s)  # noqa: E731
        make = DeflationSpace
    fresh = [solve(b, None)[1]["iterations"] for b in B]
    space = make()
    carried = []
    for b in B:
        x, info = solve(b, space)
        assert info["reason"] == "rtol"
        carried.append(info["iterations"])
    print(method, pc, "fresh", fresh, "carried", carried)
    assert sum(carried) < 0.8 * sum(fresh)


def test_changing_matrices_carried_space_converges():
    space, fresh, carried = RecycleSpace(), [], []
    for seed in range(4):
        A, b = _darcy(24, seed)
        M = _M("jacobi", A)
        fresh.append(gcrodr(A, b, M=M, m=30, k=10)[1]["iterations"])
        x, info = gcrodr(A, b, M=M, m=30, k=10, recycle=space)
        assert info["reason"] == "rtol"
        assert _relerr(x, spla.spsolve(A.tocsc(), b)) < 1e-6
        carried.append(info["iterations"])
        assert info["setup_matvecs"] == (10 if seed else 0)
    print("darcy seeds: fresh", fresh, "carried", carried)
    assert space.refreshes == 3
    # a small perturbation of one matrix: the carried space stays useful
    A, b = _darcy(24, 0)
    space = RecycleSpace()
    gcrodr(A, b, m=30, k=10, recycle=space)
    Ap = (A + 1e-3 * sp.diags(A.diagonal())).tocsr()
    bp = np.random.default_rng(3).standard_normal(len(b))
    it_fresh = gcrodr(Ap, bp, m=30, k=10)[1]["iterations"]
    x, info = gcrodr(Ap, bp, m=30, k=10, recycle=space)
    print("perturbed: fresh", it_fresh, "carried", info["iterations"])
    assert info["reason"] == "rtol" and info["iterations"] < it_fresh


@pytest.mark.parametrize("pc", ["none", "jacobi"])
def test_k0_is_gmres(pc):
    A, b = _convdiff(20)
    M = _M(pc, A)
    for m in (10, 25):
        x, info = gcrodr(A, b, M=M, m=m, k=0, rtol=1e-9)
        _, ginfo = gmres(A, b, M=M, restart=m, rtol=1e-9)
        assert abs(info["iterations"] - ginfo["iterations"]) <= 1
        assert info["recycle"].k == 0


def test_first_cycle_is_gmres_without_recycle_space():
    A, b = _convdiff(20)
    M = _M("ilu", A)
    _, info = gcrodr(A, b, M=M, m=40, k=10, rtol=1e-9)
    _, ginfo = gmres(A, b, M=M, restart=40, rtol=1e-9)
    assert ginfo["iterations"] < 40 and abs(info["iterations"] - ginfo["iterations"]) <= 1


def test_recycle_space_update_invariants():
    A, b = _convdiff(16)
    space = RecycleSpace()
    gcrodr(A, b, m=20, k=6, recycle=space)
    assert space.k == 6
    assert np.allclose(space.C.T @ space.C, np.eye(6), atol=1e-10)
    assert np.allclose(A @ space.U, space.C, atol=1e-8)
    A2 = (A + 0.1 * sp.eye(A.shape[0])).tocsr()
    space.update_matrix(A2)
    assert space.refreshes == 1 and space.last_setup_matvecs == 6
    assert np.allclose(space.C.T @ space.C, np.eye(6), atol=1e-10)
    assert np.allclose(A2 @ space.U, space.C, atol=1e-8)
    # with a preconditioner: C = A M^{-1} U, Z = M^{-1} U
    M = _M("jacobi", A2)
    space.for_matrix(A2, M)
    assert space.refreshes == 2
    assert np.allclose(np.column_stack([M(u) for u in space.U.T]), space.Z, atol=1e-10)
    assert np.allclose(A2 @ space.Z, space.C, atol=1e-8)
    # same values in a new object: no refresh
    space.for_matrix(A2.copy(), M)
    assert space.refreshes == 2
    # values changed in place: refresh
    A2.data *= 2.0
    space.for_matrix(A2, M)
    assert space.refreshes == 3


def test_bad_input():
    A, b = _convdiff(8)
    for m, k in ((10, 10), (10, 12), (10, -1), (0, 0), (10, 1.5)):
        with pytest.raises(InputError):
            gcrodr(A, b, m=m, k=k)
    with pytest.raises(InputError):
        deflated_cg(A, b, k=-1)
    with pytest.raises(InputError):
        krylov("gcrodr", restart=20, k=20)
    with pytest.raises(InputError):
        krylov("gmres", recycle=True)
    with pytest.raises(InputError):
        krylov("dcg", pc="ilu")


def test_maxiter_and_zero_rhs():
    A, b = _convdiff(20)
    x, info = gcrodr(A, b, m=10, k=4, maxiter=7)
    assert info["reason"] == "maxiter" and info["iterations"] == 7
    x, info = deflated_cg(*_darcy(16, 0), k=4, maxiter=3)
    assert info["reason"] == "maxiter" and info["iterations"] == 3
    with pytest.raises(ConvergenceError) as err:
        krylov("gcrodr", restart=10, k=4, maxiter=7)(A, b)
    assert err.value.stats.reason == "maxiter" and err.value.stats.iterations == 7
    x, info = gcrodr(A, np.zeros_like(b), m=10, k=4)
    assert info["reason"] == "zero rhs" and not x.any()


@pytest.mark.parametrize("method,pc", [("gcrodr", "ilu"), ("gcrodr", "none"), ("dcg", "jacobi")])
def test_factory_keeps_recycle_space(method, pc):
    solver = krylov(method, pc=pc, rtol=1e-9, recycle=True, k=8, restart=30)
    fresh = krylov(method, pc=pc, rtol=1e-9, recycle=False, k=8, restart=30)
    A, _ = _darcy(24, 1)
    its = []
    for b in np.random.default_rng(0).standard_normal((3, A.shape[0])):
        solver(A, b)
        fresh(A, b)
        st = solver.stats
        assert st.method == method and st.pc == pc and st.converged and st.residual <= 1e-9
        assert st.iterations > 0 and st.solve_s > 0 and st.residual_kind in ("true", "recursive")
        its.append(st.iterations)
        assert fresh.recycle_space.k == 0
    assert solver.recycle_space.k == 8
    assert sum(its) <= sum(s.iterations for s in fresh.history)
    solver.reset_recycle()
    assert solver.recycle_space.k == 0
    assert len(solver.history) == 3


def test_deflated_cg_harvest0_reuses_space():
    A, b = _darcy(24, 2)
    M = _M("jacobi", A)
    space = DeflationSpace()
    it0 = deflated_cg(A, b, M=M, k=8, recycle=space)[1]["iterations"]
    W = space.W.copy()
    b2 = np.random.default_rng(4).standard_normal(len(b))
    x, info = deflated_cg(A, b2, M=M, k=8, recycle=space, harvest=0)
    assert info["reason"] == "rtol" and info["iterations"] < it0
    assert np.array_equal(space.W, W) and info["setup_matvecs"] == 0
    with pytest.raises(InputError):
        deflated_cg(A, b, k=2, harvest=-1)


def test_deflated_cg_adaptive_harvest_schedule():
    """Default harvest: the first YOUNG solves harvest, then only when iterations drift up."""
    A, _ = _darcy(24, 2)
    M = _M("jacobi", A)
    B = np.random.default_rng(5).standard_normal((7, A.shape[0]))
    space = DeflationSpace()
    Ws = []
    for b in B:
        x, info = deflated_cg(A, b, M=M, k=8, recycle=space)
        assert info["reason"] == "rtol"
        assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
        Ws.append(space.W.copy())
    assert space.solves == 7 and space.harvests == DeflationSpace.YOUNG
    # the space is frozen after the young phase (same matrix: no drift)
    assert np.array_equal(Ws[-1], Ws[DeflationSpace.YOUNG - 1])
    # an explicit harvest size always harvests
    deflated_cg(A, B[0], M=M, k=8, recycle=space, harvest=16)
    assert space.harvests == DeflationSpace.YOUNG + 1
    # schedule: a solve needing more than DRIFT x the reference iterations re-arms it
    s = DeflationSpace()
    s.harvests = DeflationSpace.YOUNG
    s._schedule(False, 40)  # first solve after the last harvest: the reference
    assert s.ref_its == 40 and not s.harvest_next
    s._schedule(False, 44)
    assert not s.harvest_next
    s._schedule(False, int(40 * DeflationSpace.DRIFT) + 1)
    assert s.harvest_next


def test_deflated_cg_thick_restart_and_window_both_converge():
    A, b = _darcy(24, 3)
    xref = spla.spsolve(A.tocsc(), b)
    for thick in (True, False):
        space = DeflationSpace()
        for rhs in (b, 2.0 * b + 1.0):
            x, info = deflated_cg(A, rhs, k=6, recycle=space, thick_restart=thick, harvest=12)
            assert info["reason"] == "rtol"
        assert _relerr(x, spla.spsolve(A.tocsc(), 2.0 * b + 1.0)) < 1e-6
        assert space.k == 6 and np.allclose(space.W.T @ (A @ space.W), np.eye(6), atol=1e-8)
    assert _relerr(deflated_cg(A, b, k=6)[0], xref) < 1e-6


def test_recycle_and_deflation_spaces_share_one_base():
    from femno.solvers.recycle import RecycleSpace
    from femno.solvers.recycle_cg import DeflationSpace
    from femno.solvers.recycle_ops import CarriedSpace

    A = sp.diags(np.arange(1.0, 31.0), format="csr")
    U = np.random.default_rng(0).standard_normal((30, 4))
    for cls, label in ((RecycleSpace, "U"), (DeflationSpace, "W")):
        space = cls(U)
        assert isinstance(space, CarriedSpace) and space.k == 4 and space.refreshes == 0
        assert space.for_matrix(A) is space and space.refreshes == 1
        assert space.for_matrix(A).refreshes == 1  # already valid: no refresh
        assert repr(space) == f"{cls.__name__}(k=4, n=30, refreshes=1)"
        space.clear()
        assert space.k == 0 and space.refreshes == 0
        with pytest.raises(InputError, match=f"{label} must be a 2-D array"):
            cls(np.ones(5))
