"""Near-nullspace (rigid-body) modes for AMG on elasticity: the modes, their checks,
and that every AMG path that takes them (pyamg SA, PETSc GAMG, hypre nodal) converges
in far fewer iterations with them than without, to the same solution."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import skfem
from skfem.models.elasticity import lame_parameters, linear_elasticity

from femno.datagen import solve_sequence
from femno.errors import InputError
from femno.fem import Elasticity
from femno.fem.mesh import unit_square
from femno.fem.nullspace import node_block_size, rigid_body_modes
from femno.solvers import krylov
from femno.solvers.precond import check_near_nullspace


@pytest.mark.parametrize("mesh, elem, r", [
    (unit_square(4), skfem.ElementTriP1(), 3),
    (unit_square(3), skfem.ElementTriP2(), 3),
    (skfem.MeshQuad.init_tensor(np.linspace(0, 1, 4), np.linspace(0, 2, 3)), skfem.ElementQuad2(), 3),
    (skfem.MeshTet.init_tensor(*(np.linspace(0, 1, 4),) * 3), skfem.ElementTetP1(), 6),
    (skfem.MeshTet.init_tensor(*(np.linspace(0, 1, 3),) * 3), skfem.ElementTetP2(), 6),
])
def test_rigid_body_modes_are_the_kernel_of_the_free_stiffness(mesh, elem, r):
    basis = skfem.Basis(mesh, skfem.ElementVector(elem))
    K = linear_elasticity(*lame_parameters(1.0, 0.3)).assemble(basis)
    B = rigid_body_modes(basis)
    assert B.shape == (basis.N, r) and B.dtype == np.float64
    # the unconstrained stiffness has exactly these modes as its kernel (energy zero)
    assert np.abs(K @ B).max() < 1e-10 * abs(K).max()
    assert np.linalg.matrix_rank(B) == r
    # and nothing else: the (r+1)-th smallest eigenvalue is far from zero
    ev = np.linalg.eigvalsh(K.toarray())
    assert ev[r] > 1e-6 * ev[-1] and abs(ev[r - 1]) < 1e-9 * ev[-1]
    assert node_block_size(basis) == mesh.dim()


def test_block_size_of_condensed_dofs():
    basis = skfem.Basis(unit_square(3), skfem.ElementVector(skfem.ElementTriP1()))
    left = basis.get_dofs(lambda x: x[0] < 1e-12).all()
    free = np.setdiff1d(np.arange(basis.N), left)
    assert node_block_size(basis, free) == 2  # whole nodes clamped: blocks stay
    only_x = basis.get_dofs(lambda x: x[0] < 1e-12).all("u^1")
    free = np.setdiff1d(np.arange(basis.N), only_x)
    assert node_block_size(basis, free) == 1  # one component of a node removed
    with pytest.raises(InputError, match="vector basis"):
        rigid_body_modes(skfem.Basis(unit_square(2), skfem.ElementTriP1()))


def test_check_near_nullspace_rejects_bad_input():
    B = np.random.default_rng(0).standard_normal((10, 2))
    C, _ = check_near_nullspace(B, 2, n=10)
    assert C.shape == (10, 2) and not C.flags.writeable and C is not B
    assert check_near_nullspace(C, 2)[0] is C  # checked once, passed on without a copy
    with pytest.raises(InputError, match="rows for a system"):
        check_near_nullspace(C, n=12)  # the sizes are still checked on the fast path
    with pytest.raises(InputError, match="does not divide"):
        check_near_nullspace(C, 3)
    with pytest.raises(InputError, match="NaN"):
        check_near_nullspace(np.full((10, 2), np.nan))
    with pytest.raises(InputError, match="linearly dependent"):
        check_near_nullspace(np.column_stack([B[:, 0], 2 * B[:, 0]]))
    with pytest.raises(InputError, match="rows for a system"):
        check_near_nullspace(B, n=12)
    with pytest.raises(InputError, match="does not divide"):
        check_near_nullspace(B, 3)
    with pytest.raises(InputError, match="shape"):
        check_near_nullspace(np.ones((2, 3, 4)))
    with pytest.raises(InputError, match="block_size applies"):
        krylov("cg", pc="amg", block_size=2)


@pytest.fixture(scope="module")
def elasticity():
    fam = Elasticity(n=40)
    s = fam.assemble(fam.sample(np.random.default_rng(3)))
    B, bs = fam.near_nullspace()
    assert B.shape == (s.dofs, 3) and bs == 2
    return s.A, s.b, B, bs, spla.spsolve(s.A.tocsc(), s.b)


def test_pyamg_with_rigid_body_modes(elasticity):
    A, b, B, bs, xref = elasticity
    plain = krylov("cg", pc="amg", rtol=1e-8)
    x0 = plain(A, b)
    rbm = krylov("cg", pc="amg", rtol=1e-8, near_nullspace=B, block_size=bs)
    x1 = rbm(A, b)
    assert rbm.stats.converged and plain.stats.converged
    # 3 modes: 16 vs 83 iterations here; demand at least 3x fewer
    assert rbm.stats.iterations * 3 < plain.stats.iterations
    for x in (x0, x1):
        assert np.linalg.norm(x - xref) < 1e-6 * np.linalg.norm(xref)


@pytest.mark.petsc
@pytest.mark.parametrize("pc", ["gamg", "hypre"])
def test_petsc_amg_with_near_nullspace(elasticity, pc):
    A, b, B, bs, xref = elasticity
    from femno.datagen.auto import hypre_available

    if pc == "hypre" and not hypre_available():
        pytest.skip("PETSc without hypre")
    plain = krylov("cg", pc=pc, rtol=1e-8, backend="petsc")
    x0 = plain(A, b)
    nns = krylov("cg", pc=pc, rtol=1e-8, backend="petsc", near_nullspace=B, block_size=bs)
    x1 = nns(A, b)
    assert plain.stats.converged and nns.stats.converged
    assert nns.stats.iterations * 1.5 < plain.stats.iterations
    assert nns.ksp.getOperators()[0].getBlockSize() == bs
    if pc == "gamg":
        assert nns.ksp.getOperators()[0].getNearNullSpace() is not None
    for x in (x0, x1):  # the same solution as the direct solve (independent backend)
        assert np.linalg.norm(x - xref) < 1e-6 * np.linalg.norm(xref)
    nns.close()
    plain.close()


@pytest.mark.petsc
def test_solve_sequence_and_auto_take_the_near_nullspace(elasticity, probe_always):
    A, b, B, bs, xref = elasticity
    systems = [(A * (1.0 + 0.1 * i), b) for i in range(8)]
    res = solve_sequence(systems, method="cg", pc="gamg", near_nullspace=B, block_size=bs)
    assert res.method == "cg+gamg" and all(res.converged)
    assert np.linalg.norm(res.solutions[0] - xref) < 1e-6 * np.linalg.norm(xref)
    auto = solve_sequence(systems, method="auto", near_nullspace=B, block_size=bs)
    assert "cg+gamg" in auto.probe and all(auto.converged)
    plain = solve_sequence(systems, method="auto")
    assert "cg+gamg" not in plain.probe
    with pytest.raises(InputError, match="rows for a system"):
        solve_sequence(systems, method="cg", near_nullspace=B[:-2], block_size=bs)
    with pytest.raises(InputError, match="block_size applies"):
        solve_sequence(systems, method="cg", block_size=2)
    with pytest.raises(InputError, match="runs with method 'cg'"):
        solve_sequence(systems, method="dcg", pc="gamg")


def test_family_near_nullspace_default_none():
    from femno.fem import Darcy

    assert Darcy(n=4).near_nullspace() is None
    fam = Elasticity(n=4, element="P2")
    B, bs = fam.near_nullspace()
    s = fam.assemble(fam.sample(np.random.default_rng(0)))
    assert B.shape == (s.dofs, 3) and bs == 2
    assert sp.issparse(s.A)



@pytest.mark.petsc
def test_gamg_reuse_follows_each_matrix():
    """GAMG keeps its prolongators along a sequence, but the smoothers' Chebyshev bounds
    must follow each matrix: with the first matrix's SA eigenvalue estimate kept, the
    second sample of this 3-D elasticity family (882 dofs) made the V-cycle indefinite
    and CG broke down after 5 iterations (relative residual 3.5)."""
    from pathlib import Path

    from femno.datagen.runner import load_family, nullspace_options, sample_params

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_families.py"
    fam = load_family(f"{path}:Elasticity3D", {"n": 6})
    systems = [fam.assemble(sample_params(fam, 0, i)) for i in range(3)]
    res = solve_sequence(systems, method="cg", pc="gamg", on_fail="ignore",
                         **nullspace_options(fam))
    assert all(res.converged), res.residuals
    for x, s in zip(res.solutions, systems, strict=True):
        assert np.linalg.norm(s.A @ x - s.b) <= 1.01e-8 * np.linalg.norm(s.b)
    assert max(res.iterations) <= 2 * min(res.iterations)  # the same quality for each
