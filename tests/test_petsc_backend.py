"""Tests of the PETSc backend (femno.solvers.petsc_backend)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femno.errors import ConvergenceError, InputError, MissingDependencyError
from femno.solvers import petsc_backend as pb
from femno.solvers.base import Preconditioner

petsc = pytest.mark.petsc


# ------------------------------------------------------------------------ matrices


def poisson2d(m: int) -> sp.csr_matrix:
    """5-point Laplacian on an m x m interior grid (SPD, n = m^2)."""
    T = sp.diags([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1])
    I = sp.identity(m)
    return sp.csr_matrix(sp.kron(I, T) + sp.kron(T, I))


def darcy_like(m: int, seed: int = 0) -> sp.csr_matrix:
    """Finite-volume -div(k grad u) with a log-normal k (contrast ~1e2), Dirichlet BC."""
    rng = np.random.default_rng(seed)
    k = np.exp(1.2 * rng.standard_normal((m + 2, m + 2)))
    idx = np.arange(m * m).reshape(m, m)
    rows, cols, vals = [], [], []
    diag = np.zeros((m, m))
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        kc = k[1:-1, 1:-1]
        kn = k[1 + di : m + 1 + di, 1 + dj : m + 1 + dj]
        t = 2 * kc * kn / (kc + kn)  # harmonic mean transmissibility
        diag += t
        ii, jj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        ni, nj = ii + di, jj + dj
        inside = (ni >= 0) & (ni < m) & (nj >= 0) & (nj < m)
        rows.append(idx[ii[inside], jj[inside]])
        cols.append(idx[ni[inside], nj[inside]])
        vals.append(-t[inside])
    rows.append(idx.ravel())
    cols.append(idx.ravel())
    vals.append(diag.ravel())
    n = m * m
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


@pytest.fixture(scope="module")
def spd():
    A = darcy_like(40)
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    return A, b, spla.spsolve(A.tocsc(), b)


@pytest.fixture(scope="module")
def indefinite():
    m = 30
    A = poisson2d(m)
    s = 4 * np.sin(np.arange(1, m + 1) * np.pi / (2 * (m + 1))) ** 2
    lam = np.sort(np.add.outer(s, s).ravel())  # exact eigenvalues of the 5-point Laplacian
    shift = 0.5 * (lam[40] + lam[41])  # between two eigenvalues: symmetric indefinite
    A = sp.csr_matrix(A - shift * sp.identity(A.shape[0]))
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    return A, b, spla.spsolve(A.tocsc(), b)


def relerr(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


class FemnoJacobi(Preconditioner):
    """Jacobi written as a femno Preconditioner (to run inside PETSc)."""

    name = "femno-jacobi"

    def __init__(self):
        super().__init__()
        self.updates = 0

    def _setup(self, A):
        self.dinv = 1.0 / A.diagonal()

    def update(self, A):
        self.updates += 1
        return super().update(A)

    def apply(self, r):
        return self.dinv * r


# --------------------------------------------------------------------- no petsc4py


def test_missing_petsc4py_raises(monkeypatch):
    monkeypatch.setattr(pb, "_PETSC", None)
    monkeypatch.setitem(sys.modules, "petsc4py", None)
    monkeypatch.setitem(sys.modules, "petsc4py.PETSc", None)
    with pytest.raises(MissingDependencyError, match="femno\\[petsc\\]"):
        pb.PetscKrylov("cg")(sp.identity(3, format="csr"), np.ones(3))
    info = pb.petsc_info()
    assert info["available"] is False


# ------------------------------------------------------------------- agreement


CASES = [
    ("cg", "none"),
    ("cg", "jacobi"),
    ("cg", "sor"),
    ("cg", "icc"),
    ("cg", "gamg"),
    ("cg", "amg"),
    ("cg", "hypre"),
    ("fcg", "jacobi"),
    ("gmres", "ilu"),
    ("gmres", "hypre"),
    ("fgmres", "gamg"),
    ("bicgstab", "ilu"),
    ("minres", "jacobi"),
    ("preonly", "lu"),
]


@petsc
@pytest.mark.parametrize("method,pc", CASES)
def test_matches_spsolve_spd(spd, method, pc):
    A, b, xref = spd
    solver = pb.PetscKrylov(method, pc=pc, rtol=1e-12)
    x = solver(A, b)
    assert x.dtype == np.float64 and x.shape == b.shape
    assert relerr(x, xref) < 1e-8
    st = solver.stats
    assert st.backend == "petsc" and st.method == method and st.pc == pc
    assert st.converged and st.n == A.shape[0] and st.rtol == 1e-12
    assert st.residual <= 1e-11
    assert st.setup_s > 0 and st.solve_s > 0
    assert st.reason in ("rtol", "direct")
    assert solver.history == st.residuals and len(st.residuals) >= 2
    if method != "preonly":
        assert st.residuals[0] == pytest.approx(1.0)
        assert st.iterations == len(st.residuals) - 1


@petsc
def test_minres_symmetric_indefinite(indefinite):
    A, b, xref = indefinite
    solver = pb.PetscKrylov("minres", pc="none", rtol=1e-12, maxiter=5000)
    x = solver(A, b)
    assert relerr(x, xref) < 1e-8
    assert solver.stats.converged
    # CG is not meant for indefinite matrices; GMRES is, and agrees
    x2 = pb.PetscKrylov("gmres", pc="none", rtol=1e-12, restart=200, maxiter=5000)(A, b)
    assert relerr(x2, xref) < 1e-8


@petsc
def test_same_stopping_test_as_scipy(spd):
    """Unpreconditioned norms: PETSc stops where scipy's ||r|| <= rtol ||b|| stops."""
    A, b, _ = spd
    dinv = 1.0 / A.diagonal()
    M = spla.LinearOperator(A.shape, matvec=lambda r: dinv * r)
    for pc, Mop in (("none", None), ("jacobi", M)):
        iterates = []
        x_s, info = spla.cg(A, b, rtol=1e-6, M=Mop, maxiter=10_000, callback=iterates.append)
        assert info == 0
        count = [len(iterates)]
        solver = pb.PetscKrylov("cg", pc=pc, rtol=1e-6)
        x_p = solver(A, b)
        # the same test; rounding in a 250-iteration unpreconditioned run moves the
        # stopping iteration by a few (254 vs 252 seen with another BLAS)
        tol = max(1, int(0.02 * count[0]))
        assert abs(solver.stats.iterations - count[0]) <= tol, (pc, solver.stats.iterations, count)
        assert relerr(x_p, x_s) < 1e-4
        assert solver.stats.residual_kind == "recursive"
        # the recorded residuals are ||b - A x_k|| / ||b|| up to round-off
        assert solver.history[-1] <= 1e-6
        assert solver.stats.residual == pytest.approx(solver.history[-1], rel=1e-3)


@petsc
def test_initial_guess_and_zero_rhs(spd):
    A, b, xref = spd
    solver = pb.PetscKrylov("cg", pc="jacobi", rtol=1e-10)
    solver(A, b, x0=xref)
    assert solver.stats.iterations == 0 and solver.stats.converged
    x = solver(A, np.zeros_like(b))
    assert np.all(x == 0) and solver.stats.converged and solver.stats.reason == "zero rhs"


# ----------------------------------------------------------------- options


@petsc
def test_petsc_options_reach_petsc(spd):
    A, b, _ = spd
    solver = pb.PetscKrylov("cg", pc="jacobi", rtol=1e-12, petsc_options={"ksp_max_it": 3})
    with pytest.raises(ConvergenceError, match="DIVERGED_MAX_IT"):
        solver(A, b)
    assert solver.stats.iterations == 3 and solver.stats.reason == "maxiter"
    # the user's option beats femno's own setting (maxiter=1000) and a leading '-' is fine
    s2 = pb.PetscKrylov(
        "cg", pc="jacobi", maxiter=1000, on_fail="ignore", petsc_options={"-ksp_max_it": 5}
    )
    s2(A, b)
    assert s2.stats.iterations == 5 and not s2.stats.converged


@petsc
def test_hypre_options_change_iterations(spd):
    A, b, xref = spd
    its = {}
    for theta in (0.25, 0.9):
        solver = pb.PetscKrylov(
            "cg",
            pc="hypre",
            rtol=1e-10,
            petsc_options={"pc_hypre_boomeramg_strong_threshold": theta},
        )
        assert relerr(solver(A, b), xref) < 1e-7
        its[theta] = solver.stats.iterations
    assert its[0.25] != its[0.9], its
    # pc_options are the same options without the "pc_hypre_" prefix
    s = pb.PetscKrylov("cg", pc="hypre", rtol=1e-10, pc_options={"boomeramg_strong_threshold": 0.9})
    s(A, b)
    assert s.stats.iterations == its[0.9]


@petsc
def test_unused_options_warn(spd):
    A, b, xref = spd
    solver = pb.PetscKrylov(
        "cg",
        pc="jacobi",
        rtol=1e-10,
        pc_options={"treshold": 1.0},  # -> pc_jacobi_treshold: misspelled
        petsc_options={
            "ksp_max_it": 500,  # used
            "-ksp_mx_it": 3,  # misspelled
            "ksp_gmres_restart": 10,  # a GMRES option on CG: never read
        },
    )
    with pytest.warns(UserWarning, match="never used") as rec:
        x = solver(A, b)
    assert relerr(x, xref) < 1e-7  # the solve itself is unaffected
    msgs = [str(w.message) for w in rec if "never used" in str(w.message)]
    assert len(msgs) == 1
    msg = msgs[0]
    p = solver.prefix
    assert f"-{p}ksp_mx_it (from petsc_options['-ksp_mx_it'])" in msg
    assert f"-{p}ksp_gmres_restart (from petsc_options['ksp_gmres_restart'])" in msg
    assert f"-{p}pc_jacobi_treshold (from pc_options['treshold'])" in msg
    assert "ksp_max_it" not in msg
    # checked once per solver: later solves (here with a new KSP each) do not warn again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solver(A, 2 * b)


@petsc
def test_used_options_do_not_warn(spd):
    A, b, xref = spd
    ext = pb.petsc_info()["external_packages"]
    cases = [
        dict(method="cg", pc="jacobi", petsc_options={"ksp_max_it": 500}),
        dict(method="gmres", pc="ilu", petsc_options={"ksp_gmres_restart": 20}),
        dict(method="cg", pc="sor", pc_options={"omega": 1.2}),
        dict(method="cg", pc="gamg", pc_options={"threshold": 0.02}),
    ]
    if ext.get("hypre"):
        cases.append(dict(method="cg", pc="hypre", pc_options={"boomeramg_strong_threshold": 0.5}))
    if ext.get("mumps"):
        # read only during PCSetUp (by MUMPS), after KSPSetFromOptions
        cases.append(
            dict(
                method="preonly",
                pc="lu",
                pc_options={"solver": "mumps"},
                petsc_options={"mat_mumps_icntl_14": 50},
            )
        )
    for kw in cases:
        solver = pb.PetscKrylov(kw.pop("method"), rtol=1e-10, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            assert relerr(solver(A, b), xref) < 1e-6, kw
        solver.close()


@petsc
def test_options_are_private_and_cleaned_up(spd):
    A, b, _ = spd
    PETSc = pb.get_petsc()
    s1 = pb.PetscKrylov("cg", pc="jacobi", petsc_options={"ksp_max_it": 2}, on_fail="ignore")
    s2 = pb.PetscKrylov("cg", pc="jacobi")
    s1(A, b)
    s2(A, b)
    assert s1.stats.iterations == 2 and s2.stats.converged  # no leak between solvers
    name = s1.prefix + "ksp_max_it"
    assert PETSc.Options().hasName(name)
    s1.close()
    assert not PETSc.Options().hasName(name)


# ------------------------------------------------------- femno PC inside PETSc


@petsc
def test_python_preconditioner_matches_petsc_jacobi(spd):
    A, b, xref = spd
    native = pb.PetscKrylov("cg", pc="jacobi", rtol=1e-10)
    x_native = native(A, b)
    mine = FemnoJacobi()
    bridged = pb.PetscKrylov("cg", pc=mine, rtol=1e-10)
    x_bridged = bridged(A, b)
    assert bridged.stats.iterations == native.stats.iterations
    assert relerr(x_bridged, x_native) < 1e-10
    assert relerr(x_bridged, xref) < 1e-8
    assert bridged.stats.pc == "femno-jacobi"
    ctx = bridged.ksp.getPC().getPythonContext()
    assert ctx.setup_calls == 1 and ctx.apply_calls >= bridged.stats.iterations


@petsc
def test_python_pc_standalone():
    A = poisson2d(10)
    PETSc = pb.get_petsc()
    pc = pb.python_pc(FemnoJacobi())
    Am = pb.to_petsc_mat(A)
    pc.setOperators(Am, Am)
    pc.setUp()
    x = pb.to_petsc_vec(np.arange(100.0))
    y = x.duplicate()
    pc.apply(x, y)
    np.testing.assert_allclose(pb.from_petsc_vec(y), np.arange(100.0) / 4.0)
    assert isinstance(pc, PETSc.PC)
    with pytest.raises(InputError):
        pb.python_pc(object())


# ------------------------------------------------------------------- failures


@petsc
def test_nonconvergence_raises_with_petsc_reason(spd):
    A, b, _ = spd
    solver = pb.PetscKrylov("cg", pc="none", rtol=1e-12, maxiter=4)
    with pytest.raises(ConvergenceError, match="KSP_DIVERGED_MAX_IT") as exc:
        solver(A, b)
    assert exc.value.stats is solver.stats and not exc.value.stats.converged
    assert exc.value.x is not None and exc.value.x.shape == b.shape
    assert solver.petsc_reason == "DIVERGED_MAX_IT"
    warn = pb.PetscKrylov("cg", pc="none", rtol=1e-12, maxiter=4, on_fail="warn")
    with pytest.warns(RuntimeWarning, match="DIVERGED_MAX_IT"):
        warn(A, b)


@petsc
def test_indefinite_pc_detected(indefinite):
    A, b, _ = indefinite
    # ICC of an indefinite matrix / CG on it: PETSc reports an indefinite breakdown
    solver = pb.PetscKrylov("cg", pc="none", rtol=1e-12, maxiter=2000)
    with pytest.raises(ConvergenceError, match="KSP_DIVERGED"):
        solver(A, b)


@petsc
@pytest.mark.parametrize(
    "bad",
    [
        lambda: pb.PetscKrylov("bogus"),
        lambda: pb.PetscKrylov("cg", pc="bogus"),
        lambda: pb.PetscKrylov("cg", pc=3.0),
        lambda: pb.PetscKrylov("cg", rtol=-1.0),
        lambda: pb.PetscKrylov("cg", rtol=float("nan")),
        lambda: pb.PetscKrylov("cg", maxiter=0),
        lambda: pb.PetscKrylov("cg", restart=0),
        lambda: pb.PetscKrylov("cg", on_fail="explode"),
        lambda: pb.PetscKrylov("cg", reuse_pc="sometimes"),
        lambda: pb.PetscKrylov("cg", petsc_options=["ksp_max_it"]),
        lambda: pb.PetscKrylov("cg", pc=FemnoJacobi(), pc_options={"omega": 1.0}),
        lambda: pb.PetscKrylov("cg")(sp.random(3, 4, density=1.0, format="csr"), np.ones(3)),
        lambda: pb.PetscKrylov("cg")(sp.identity(3, format="csr"), np.ones(4)),
        lambda: pb.PetscKrylov("cg")(sp.identity(3, format="csr"), np.array([1.0, np.nan, 1.0])),
        lambda: pb.PetscKrylov("cg")(sp.identity(3, format="csr"), np.ones(3), x0=np.ones(2)),
        lambda: pb.PetscKrylov("cg")("not a matrix", np.ones(3)),
    ],
)
def test_bad_input(bad):
    with pytest.raises(InputError):
        bad()


# ---------------------------------------------------------------------- reuse


@petsc
@pytest.mark.parametrize("pc", ["gamg", "hypre", "ilu", "lu"])
def test_reuse_pc_same_pattern(spd, pc):
    A, b, xref = spd
    method = "preonly" if pc == "lu" else "cg" if pc != "ilu" else "gmres"
    solver = pb.PetscKrylov(method, pc=pc, rtol=1e-12, reuse_pc=True)
    solver(A, b)
    ksp = solver.ksp
    A2 = sp.csr_matrix(A * 3.0 + sp.identity(A.shape[0], format="csr"))
    x2 = solver(A2, b)
    assert solver.ksp is ksp  # same KSP/PC, values replaced in place
    assert relerr(x2, spla.spsolve(A2.tocsc(), b)) < 1e-8
    x3 = solver(A2, b)  # identical values: no PC setup at all
    assert np.allclose(x3, x2)
    # a different pattern gets a fresh KSP
    x4 = solver(poisson2d(12), np.ones(144))
    assert solver.ksp is not ksp
    assert relerr(x4, spla.spsolve(poisson2d(12).tocsc(), np.ones(144))) < 1e-8


@petsc
def test_reuse_python_pc_update_and_frozen(spd):
    A, b, _ = spd
    A2 = sp.csr_matrix(2.0 * A)
    mine = FemnoJacobi()
    solver = pb.PetscKrylov("cg", pc=mine, rtol=1e-10, reuse_pc=True)
    solver(A, b)
    ctx = solver.ksp.getPC().getPythonContext()
    solver(A, b)  # identical matrix: PETSc does not call setUp again
    assert (ctx.setup_calls, ctx.update_calls) == (1, 0)
    x2 = solver(A2, b)  # new values: femno's update(A)
    assert (ctx.setup_calls, ctx.update_calls) == (1, 1) and mine.updates == 1
    assert relerr(x2, spla.spsolve(A2.tocsc(), b)) < 1e-8

    frozen = FemnoJacobi()
    fsolver = pb.PetscKrylov("cg", pc=frozen, rtol=1e-10, reuse_pc="frozen")
    fsolver(A, b)
    fctx = fsolver.ksp.getPC().getPythonContext()
    x2f = fsolver(A2, b)  # PC kept as built for A (lagged), Krylov uses A2
    assert (fctx.setup_calls, fctx.update_calls) == (1, 0)
    assert relerr(x2f, spla.spsolve(A2.tocsc(), b)) < 1e-8


# ---------------------------------------------------------------- conversion/info


@petsc
def test_conversion_roundtrip():
    A = darcy_like(8)
    M = pb.to_petsc_mat(A)
    assert M.getSize() == A.shape and M.getType() == "seqaij"
    indptr, indices, data = M.getValuesCSR()
    np.testing.assert_array_equal(
        sp.csr_matrix((data, indices, indptr), shape=A.shape).toarray(), A.toarray()
    )
    v = pb.to_petsc_vec(np.linspace(0, 1, 64))
    np.testing.assert_array_equal(pb.from_petsc_vec(v), np.linspace(0, 1, 64))
    assert pb.ownership_range(64) == (0, 64)
    with pytest.raises(InputError):
        pb.to_petsc_mat(np.eye(3))


@petsc
def test_petsc_info():
    info = pb.petsc_info()
    assert info["available"] is True
    assert info["petsc_version"].count(".") == 2
    assert info["mpi_size"] >= 1
    assert set(info["external_packages"]) >= {"hypre", "mumps", "superlu"}
    assert all(isinstance(v, bool) for v in info["external_packages"].values())
