"""Learned smoothed aggregation: SA reproduced, structure kept, training helps, plug points."""

from __future__ import annotations

import json

import numpy as np
import pyamg
import pytest
import scipy.sparse as sp
import torch

from femno.errors import InputError
from femno.operators.checkpoint import load_model, save_model
from femno.operators.precond_amg import (
    LearnedSA,
    pcg_iterations,
    sa_hierarchy,
    sa_level,
    train_learned_sa,
    unstructured_family_matrices,
)
from femno.solvers import krylov
from femno.solvers.neural import NeuralPreconditioner


@pytest.fixture(scope="module")
def darcy():
    """Darcy on a jittered Delaunay mesh (1521 dofs) with a seeded rhs."""
    (A,) = unstructured_family_matrices("darcy", sizes=(40,), samples=1, seed=3)
    return A, np.random.default_rng(0).standard_normal(A.shape[0])


@pytest.fixture(scope="module")
def trained():
    mats = unstructured_family_matrices("darcy", sizes=(12, 20), samples=2, seed=0)
    return train_learned_sa(mats, epochs=4, seed=0, progress=False)


def test_classical_hierarchy_is_pyamg_sa(darcy):
    A, _ = darcy
    ours = sa_hierarchy(A)
    ref = pyamg.smoothed_aggregation_solver(A)
    assert [lv.A.shape for lv in ours.levels] == [lv.A.shape for lv in ref.levels]
    # pyamg's rho estimate starts from an unseeded random vector: P agrees to that noise
    assert abs(ours.operator_complexity() - ref.operator_complexity()) < 2e-3
    P, Q = ours.levels[0].P, ref.levels[0].P
    assert sp.linalg.norm(P - Q) <= 0.05 * sp.linalg.norm(Q)
    assert abs(pcg_iterations(ours, A) - pcg_iterations(ref, A)) <= 1
    # an untrained network (zero last layer) is exactly the classical hierarchy
    un = LearnedSA(seed=5).hierarchy(A)
    assert sp.linalg.norm(un.levels[0].P - P) <= 1e-12 * sp.linalg.norm(P)


def test_damping_keeps_pattern_and_nullspace_identity(darcy):
    A, _ = darcy
    lv = sa_level(A, np.ones((A.shape[0], 1)))
    rng = np.random.default_rng(1)
    w = rng.uniform(0.3, 1.2, A.shape[0])
    P = lv["T"] - sp.diags(w) @ lv["G"]
    # P Bc = T Bc - Omega D^-1 A B for any per-row damping (SA's near-nullspace argument)
    lhs = P @ lv["Bc"]
    rhs = lv["T"] @ lv["Bc"] - (w / A.diagonal())[:, None] * (A @ lv["B"])
    assert np.allclose(lhs, rhs, atol=1e-12)
    assert np.allclose(lv["T"] @ lv["Bc"], lv["B"], atol=1e-12)
    classical = (lv["T"] - (4 / 3) / lv["rho"] * lv["G"]).tocsr()
    assert set(zip(*P.nonzero(), strict=False)) <= set(zip(*classical.nonzero(), strict=False)) | set(zip(*lv["T"].nonzero(), strict=False))


def test_training_lowers_two_grid_rate(trained):
    model, hist = trained
    assert hist["items"] >= 4
    assert hist["rate_learned"] < hist["rate_classical"]
    assert hist["loss"][-1] < 0
    # and the model really moved off SA's damping, within its bounded span
    A = unstructured_family_matrices("darcy", sizes=(16,), samples=1, seed=50)[0]
    lv = sa_level(A, np.ones((A.shape[0], 1)))
    ratio = model.omega(A, lv) * lv["rho"] / (4 / 3)
    assert ratio.std() > 1e-3 and np.all((ratio > np.exp(-0.5)) & (ratio < np.exp(0.5)))


def test_vcycle_is_symmetric_and_cg_converges(darcy, trained, tmp_path):
    A, b = darcy
    model, _ = trained
    pc = NeuralPreconditioner(model)
    assert pc.symmetric
    pc.setup(A)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, A.shape[0]))
    assert abs(y @ pc.apply(x) - x @ pc.apply(y)) <= 1e-10 * abs(x @ pc.apply(x))
    assert x @ pc.apply(x) > 0
    path = save_model(model, tmp_path / "sa.pt")
    solve = krylov("cg", pc=f"neural:{path}", rtol=1e-8)
    u = solve(A, b)
    assert solve.stats.converged
    assert np.linalg.norm(b - A @ u) <= 1e-8 * np.linalg.norm(b)
    ref = krylov("cg", pc="amg-sa", rtol=1e-8)
    ref(A, b)
    assert solve.stats.iterations <= ref.stats.iterations + 1
    assert load_model(path).model_kind == "precond-amg"


def test_petsc_cg_with_learned_sa(darcy, trained):
    pytest.importorskip("petsc4py")
    from conftest import assert_scipy_petsc_agree

    A, b = darcy
    assert_scipy_petsc_agree("cg", NeuralPreconditioner(trained[0]), A, b, solution_tol=1e-7)


test_petsc_cg_with_learned_sa = pytest.mark.petsc(test_petsc_cg_with_learned_sa)


def test_bad_input():
    with pytest.raises(InputError):
        sa_hierarchy(sp.random(5, 4, density=0.5, format="csr"))
    with pytest.raises(InputError, match="SPD"):
        sa_hierarchy(-sp.eye(20, format="csr"))
    with pytest.raises(InputError, match="rows"):
        sa_hierarchy(sp.eye(20, format="csr"), B=np.ones(7))
    with pytest.raises(InputError):
        LearnedSA(channels=0)
    with pytest.raises(InputError, match="training level"):
        train_learned_sa([sp.eye(10, format="csr") * 2.0], epochs=1, progress=False)


def test_cli_train_amg(tmp_path, capsys):
    from femno.cli.main import main

    out = tmp_path / "sa.pt"
    rc = main(["train", "precond", "--family", "darcy", "--kind", "amg", "--n", "8", "12",
               "--epochs", "2", "--samples", "1", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "amg" and out.is_file()
    assert summary["held_out"][0]["dofs"] > 0
    torch.manual_seed(0)
    rc = main(["solve", "darcy", "--n", "24", "--solver", "cg", "--pc", f"neural:{out}",
               "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["converged"]


def test_learned_sa_takes_the_rigid_body_modes(trained, tmp_path):
    """Elasticity: with the near-nullspace passed through krylov(), learned SA is SA-quality
    (as many iterations as SA with B, a fraction of those without)."""
    from femno.fem import get_family

    fam = get_family("elasticity", n=16)
    system = fam.assemble(fam.sample(np.random.default_rng(0)))
    B, bs = fam.near_nullspace()
    pc = NeuralPreconditioner(trained[0])
    its = {}
    for label, kw in (("none", {}), ("modes", {"near_nullspace": B, "block_size": bs})):
        for name, p in (("sa", "amg-sa"), ("learned", pc)):
            if name == "learned" and kw:
                s = krylov("cg", pc=NeuralPreconditioner(trained[0], near_nullspace=B))
            else:
                s = krylov("cg", pc=p, **kw)
            x = s(system.A, system.b)
            assert np.linalg.norm(system.b - system.A @ x) <= 1e-8 * np.linalg.norm(system.b)
            its[name, label] = s.stats.iterations
    assert its["learned", "modes"] <= its["sa", "modes"] + 2
    assert 2 * its["learned", "modes"] < its["learned", "none"]
    # the same through the model file and krylov's near_nullspace keyword
    path = save_model(trained[0], tmp_path / "sa.pt")
    s = krylov("cg", pc=f"neural:{path}", near_nullspace=B, block_size=bs)
    s(system.A, system.b)
    assert s.stats.converged and s.stats.iterations == its["learned", "modes"]


def test_unaggregated_rows_get_their_own_aggregate(trained):
    """A decoupled dof (no strong coupling) is left out of pyamg's aggregates: features and
    the learned hierarchy still cover every row and PCG converges."""
    (A,) = unstructured_family_matrices("darcy", sizes=(12,), samples=1, seed=0)
    A = A.tolil()
    A[5, :] = 0
    A[:, 5] = 0
    A[5, 5] = 3.0
    A = sp.csr_matrix(A)
    A.eliminate_zeros()
    lv = sa_level(A, np.ones((A.shape[0], 1)))
    assert lv["agg"][5] >= lv["n_aggregates"] and len(lv["agg"]) == A.shape[0]
    b = np.ones(A.shape[0])
    s = krylov("cg", pc=NeuralPreconditioner(trained[0]), rtol=1e-10)
    x = s(A, b)
    assert s.stats.converged and abs(x[5] - 1 / 3) < 1e-9  # rtol 1e-10 of ||b|| = 11
