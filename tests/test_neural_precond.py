"""Learned preconditioners: DCDM, neural FCG (scipy and PETSc), SPD factor, training, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from femno.errors import ConvergenceError, InputError
from femno.fem import get_family, sample_system
from femno.fem.mesh import lshape
from femno.operators.checkpoint import load_model, register_model, save_model
from femno.operators.fe_torch import to_torch_csr
from femno.operators.precond_graph import DofGraphNet, LearnedIC
from femno.operators.precond_grid import GridLayout, grid_stencil, scaled_matrix
from femno.operators.precond_nets import MGCNN
from femno.operators.precond_train import anorm_loss, dcdm_loss, train_precond
from femno.solvers import krylov, make_preconditioner
from femno.solvers.krylov import fcg
from femno.solvers.neural import NeuralPreconditioner, dcdm

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def darcy():
    s = sample_system(get_family("darcy", n=12), 0)
    return s.A, s.b, s


def _true_rel(A, x, b):
    return np.linalg.norm(b - A @ x) / np.linalg.norm(b)


@pytest.mark.parametrize("net", [MGCNN(channels=4, seed=3), DofGraphNet(channels=8, seed=3)])
def test_dcdm_random_network_converges_through_safeguard(darcy, net):
    A, b, _ = darcy
    pc = NeuralPreconditioner(net).setup(A)
    x, info = dcdm(A, b, M=pc.apply, rtol=1e-9)
    assert info["reason"] == "rtol"
    assert _true_rel(A, x, b) <= 1e-9
    assert np.allclose(x, spla.spsolve(A.tocsc(), b), rtol=0, atol=1e-7 * np.abs(x).max())
    assert info["stalls"] >= 1 or info["fallbacks"] >= 1  # the untrained net needed help
    assert info["residuals"][-1] == pytest.approx(_true_rel(A, x, b))


def test_dcdm_good_directions_and_k(darcy):
    """With exact directions (M = A^{-1}) DCDM is a direct solve; k=0 still converges."""
    A, b, _ = darcy
    lu = spla.splu(A.tocsc())
    x, info = dcdm(A, b, M=lu.solve, rtol=1e-10)
    assert info["iterations"] <= 2 and _true_rel(A, x, b) <= 1e-10
    x0, info0 = dcdm(A, b, k=0, rtol=1e-8, maxiter=5000)
    assert info0["reason"] == "rtol" and _true_rel(A, x0, b) <= 1e-8
    _, info2 = dcdm(A, b, k=2, rtol=1e-8)
    assert info2["iterations"] < info0["iterations"]  # conjugacy pays


def test_dcdm_torch_path_matches_numpy(darcy):
    A, b, _ = darcy
    pc = NeuralPreconditioner(MGCNN(channels=4, seed=1)).setup(A)
    x, info = dcdm(A, b, M=pc.apply, rtol=1e-8)
    xt, info_t = dcdm(to_torch_csr(A), torch.as_tensor(b), M=pc.apply, rtol=1e-8)
    assert abs(info_t["iterations"] - info["iterations"]) <= 1
    assert np.linalg.norm(xt.numpy() - x) <= 1e-7 * np.linalg.norm(x)


def test_dcdm_through_factory_and_bad_matrices(darcy):
    A, b, _ = darcy
    solver = krylov("dcdm", pc=NeuralPreconditioner(MGCNN(channels=4)), rtol=1e-8)
    solver(A, b)
    assert solver.stats.method == "dcdm" and solver.stats.converged
    assert solver.stats.residual <= 1e-8
    with pytest.raises(InputError, match="not SPD"):
        dcdm(-A, b)
    # positive diagonal, many negative eigenvalues: detected as breakdown
    P = sample_system(get_family("poisson", n=12), 0).A  # 5-point: eigenvalues in (0, 8)
    indefinite = (P - 3.0 * sp.eye(P.shape[0])).tocsr()
    assert np.all(indefinite.diagonal() > 0)
    _, info = dcdm(indefinite, b, rtol=1e-8)
    assert info["reason"] == "breakdown"
    with pytest.raises(ConvergenceError, match="breakdown"):
        krylov("dcdm", pc=NeuralPreconditioner(MGCNN(channels=4)))(indefinite, b)
    with pytest.raises(InputError):
        NeuralPreconditioner(MGCNN()).setup(-A)


def test_grid_layout_from_coordinates_and_errors(darcy):
    A, b, s = darcy
    lay = GridLayout.from_system(s)
    assert lay.shape == (11, 11) and lay.identity  # femno's meshes: lexicographic
    rng = np.random.default_rng(0)
    perm = rng.permutation(A.shape[0])
    p = s.basis.doflocs[:2, s.free][:, perm]
    lay2 = GridLayout.from_coordinates(p)
    v = torch.as_tensor(rng.standard_normal(A.shape[0]))
    img = lay.to_image(v)
    assert torch.equal(lay2.to_image(v[perm]), img)
    assert torch.equal(lay2.from_image(lay2.to_image(v)), v)
    Q1 = sample_system(get_family("poisson", n=8, cell="quad", element="Q1"), 0)
    assert GridLayout.from_matrix(Q1.A).shape == (7, 7)  # 9-point stencil accepted
    Ls = sample_system(get_family("poisson", mesh=lshape(8)), 0)
    with pytest.raises(InputError, match="structured"):
        GridLayout.from_system(Ls)
    with pytest.raises(InputError, match="structured grid"):
        NeuralPreconditioner(MGCNN()).setup(Ls.A)
    P2 = sample_system(get_family("poisson", n=4, element="P2"), 0)
    with pytest.raises(InputError):
        NeuralPreconditioner(MGCNN()).setup(P2.A)
    # the message-passing net runs on any mesh
    pc = NeuralPreconditioner(DofGraphNet(channels=4)).setup(Ls.A)
    assert pc.apply(Ls.b).shape == Ls.b.shape


def test_cnn_any_grid_size_and_homogeneous():
    net = MGCNN(channels=4, seed=0)
    for n in (5, 17, 40):
        T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
        A = (sp.kron(T, sp.eye(n)) + sp.kron(sp.eye(n), T)).tocsr()
        ctx = net.prepare(A)
        x = torch.randn(2, n * n)
        with torch.no_grad():
            q = net(x, ctx)
            assert torch.allclose(net(2.5 * x, ctx), 2.5 * q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", ["linear", "leaky"])
def test_cnn_inference_plan_matches_training_path(act):
    """Inference (channels_last on large levels, dense coarse map for linear nets) is
    the same map as the autograd path; the dense matrix is the sub-network's."""
    net = MGCNN(channels=4, act=act, seed=1)
    torch.nn.init.normal_(net.gate[-1].weight, std=0.5)
    n = 61  # levels 61, 31, 15, 7, 3: both memory formats, dense from 7x7 down
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    A = (sp.kron(T, sp.eye(n)) + sp.kron(sp.eye(n), T) + sp.diags(np.linspace(0, 1, n * n)))
    ctx = net.prepare(A.tocsr())
    x = torch.randn(3, n * n, generator=torch.Generator().manual_seed(0))
    ref = net(x, ctx).detach()  # grad enabled: no plan, NCHW
    with torch.inference_mode():
        fast = net(x, ctx)
    plan = ctx["_plan"]
    assert plan["formats"][0] == torch.channels_last and plan["formats"][-1] != torch.channels_last
    if act == "linear":
        assert plan["dense_level"] == 3 and plan["dense"].shape == (49, 49)
    else:
        assert plan["dense"] is None
    assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_grid_stencil_and_gates(darcy):
    P = sample_system(get_family("poisson", n=6), 0).A
    st = grid_stencil(scaled_matrix(P)[0], GridLayout.from_matrix(P))
    assert st.shape == (8, 5, 5)
    assert np.allclose(st[[1, 3, 4, 6], 1:-1, 1:-1], -0.25)  # 5-point neighbours
    assert np.allclose(st[[0, 2, 5, 7]], 0.0) and np.allclose(st[1, 0], 0.0)  # none / boundary
    A, b, _ = darcy
    net = MGCNN(channels=4, seed=0)
    torch.nn.init.normal_(net.gate[-1].weight, std=0.5)
    ctx = net.prepare(A)
    with torch.no_grad():
        q1 = net(torch.as_tensor(b[None], dtype=torch.float32), ctx)
        q2 = net(torch.as_tensor(b[None], dtype=torch.float32), net.prepare(2.0 * A))
    assert "_gates" in ctx
    assert torch.allclose(q1, 2.0 * q2, rtol=1e-4, atol=1e-6)  # z(cA) = z(A) / c


def test_spd_variant_is_spd_and_pcg_converges(darcy):
    A, b, _ = darcy
    pc = NeuralPreconditioner(LearnedIC(seed=2)).setup(A)
    assert pc.symmetric
    P = np.array([pc.apply(e) for e in np.eye(A.shape[0])]).T  # P = M^{-1}
    assert np.abs(P - P.T).max() <= 1e-12 * np.abs(P).max()
    assert np.linalg.eigvalsh(0.5 * (P + P.T)).min() > 0
    L = pc.L
    assert sp.triu(L, 1).nnz == 0 and np.all(L.diagonal() > 0)
    low = lambda M: set(map(tuple, np.transpose(sp.tril(M, -1).nonzero())))  # noqa: E731
    assert low(L) <= low(A)
    solver = krylov("cg", pc=pc, rtol=1e-10)
    x = solver(A, b)
    assert solver.stats.converged and _true_rel(A, x, b) <= 1e-10


def test_cg_rejects_nonlinear_neural_pc(darcy, tmp_path):
    path = tmp_path / "cnn.pt"
    save_model(MGCNN(channels=4), path)
    with pytest.raises(InputError, match="not symmetric"):
        krylov("cg", pc=f"neural:{path}")
    assert krylov("fcg", pc=f"neural:{path}").pc.kind == "precond-cnn"


def test_save_load_roundtrip_and_wrong_kind(darcy, tmp_path):
    A, b, _ = darcy
    for net in (MGCNN(channels=4, seed=5), DofGraphNet(channels=4, seed=5), LearnedIC(seed=5)):
        path = tmp_path / f"{net.model_kind}.pt"
        save_model(net, path, meta={"note": "t"})
        pc1 = NeuralPreconditioner(net).setup(A)
        pc2 = make_preconditioner(f"neural:{path}").setup(A)
        assert np.array_equal(pc1.apply(b), pc2.apply(b))
        assert load_model(path).meta["note"] == "t"

    @register_model("test-not-a-precond")
    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = {}
            self.w = torch.nn.Linear(1, 1)

    save_model(Other(), tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a learned preconditioner"):
        make_preconditioner(f"neural:{tmp_path / 'other.pt'}")
    with pytest.raises(InputError, match="does not exist"):
        make_preconditioner(f"neural:{tmp_path / 'missing.pt'}")


def test_losses_match_definitions():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((6, 6))
    A = M @ M.T + 6 * np.eye(6)
    r = torch.as_tensor(rng.standard_normal((3, 6)))
    z = torch.as_tensor(rng.standard_normal((3, 6)))
    e = torch.linalg.solve(torch.as_tensor(A), r.T).T
    At = torch.as_tensor(A)
    # A-norm loss = min_s ||e - s z||_A^2 / ||e||_A^2
    for i in range(3):
        zi, ei = z[i].numpy(), e[i].numpy()
        s = (ei @ A @ zi) / (zi @ A @ zi)
        ref = ((ei - s * zi) @ A @ (ei - s * zi)) / (ei @ A @ ei)
        assert float(anorm_loss(z[i:i + 1], r[i:i + 1], e[i:i + 1], At)) == pytest.approx(ref)
        ri = r[i].numpy()
        alpha = (zi @ ri) / (zi @ A @ zi)
        ref = np.sum((ri - alpha * A @ zi) ** 2) / np.sum(ri**2)
        assert float(dcdm_loss(z[i:i + 1], r[i:i + 1], At)) == pytest.approx(ref)
    assert float(anorm_loss(e, r, e, At)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind,loss", [("dcdm", "dcdm"), ("fcg", "anorm"), ("spd", "anorm")])
def test_training_reduces_loss(kind, loss, tmp_path):
    model, res, meta = train_precond("darcy", n=(8,), kind=kind, loss=loss, epochs=6,
                                     systems=2, per_system=8, lr=1e-2, progress=False,
                                     out=tmp_path / "m.pt")
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert meta["train_sizes"] == [8] and (tmp_path / "m.pt").is_file()


def test_fcg_scipy_and_petsc_agree(darcy):
    pytest.importorskip("petsc4py")
    A, b, _ = darcy
    # a random CNN (also below Jacobi levels): the same iterates step by step
    # (nonlinear preconditioner), with mmax 1, 3 and femno's default 30 (standard
    # truncation: femno passes both to PETSc)
    for k, mmax in ((0, 1), (2, 1), (2, 3), (2, 30)):
        pc = NeuralPreconditioner(MGCNN(channels=4, seed=1), smooth_levels=k)
        for it in (3, 12):
            a = krylov("fcg", pc=pc, maxiter=it, on_fail="ignore", mmax=mmax)
            p = krylov("fcg", pc=pc, maxiter=it, on_fail="ignore", backend="petsc", mmax=mmax)
            xa, xp = a(A, b), p(A, b)
            assert a.stats.iterations == p.stats.iterations == it
            assert np.linalg.norm(xa - xp) <= 1e-8 * np.linalg.norm(xa)
    # PETSc's own defaults (mmax 30, Notay truncation) give other iterates than mmax 1
    xa = krylov("fcg", pc=pc, maxiter=5, on_fail="ignore", mmax=1)(A, b)
    p = krylov("fcg", pc=pc, maxiter=5, on_fail="ignore", backend="petsc",
               petsc_options={"ksp_fcg_mmax": 30, "ksp_fcg_truncation_type": "notay"})
    assert np.linalg.norm(p(A, b) - xa) > 1e-6 * np.linalg.norm(xa)
    # a converging learned preconditioner: same count (within 1) and solution
    from conftest import assert_scipy_petsc_agree

    assert_scipy_petsc_agree("fcg", NeuralPreconditioner(LearnedIC(seed=0)), A, b,
                             solution_tol=1e-8)


test_fcg_scipy_and_petsc_agree = pytest.mark.petsc(test_fcg_scipy_and_petsc_agree)


def test_cli_train_and_solve(tmp_path, capsys):
    from femno.cli.main import main

    out = tmp_path / "pc.pt"
    rc = main(["train", "precond", "--family", "poisson", "--n", "8", "--kind", "spd",
               "--epochs", "2", "--samples", "1", "--per-system", "8", "--out", str(out),
               "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "spd" and out.is_file()
    rc = main(["solve", "poisson", "--n", "16", "--solver", "cg", "--pc", f"neural:{out}",
               "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["converged"] and res["pc"] == f"neural:{out}"
    rc = main(["solve", "poisson", "--n", "16", "--solver", "fcg", "--pc",
               f"neural:{tmp_path / 'nope.pt'}", "--json"])
    assert rc == 2


def test_demo_runs(capsys, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "demos" / "neural_precond.py"
    spec = importlib.util.spec_from_file_location("neural_precond_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    save_model(MGCNN(channels=4), tmp_path / "random.pt")  # training is tested above
    demo.main(["--model", str(tmp_path / "random.pt"), "--sizes", "16"])
    out = capsys.readouterr().out
    lines = {line.split()[2]: line for line in out.splitlines() if line.strip().startswith("16 ")}
    assert "FCG(30)" in lines  # untrained: FCG may miss rtol, DCDM's safeguard may not
    assert lines["DCDM"].rstrip().endswith("converged") and "NOT" not in lines["DCDM"]
    assert "NOT" not in lines["IC(0)-PCG"]


# --- Jacobi two-grid levels (MGCNN smooth_levels) ---------------------------------------

def _darcy_image_system(n=24, seed=0):
    s = sample_system(get_family("darcy", n=n), seed)
    return s.A, s.b


def test_jacobi_levels_transfer_galerkin_and_vcycle_formula():
    """R of the hierarchy is the network's restriction, P its adjoint; the stencil
    operators are the Galerkin matrices; one Jacobi two-grid level equals the formula
    evaluated independently with scipy matrices (float64)."""
    from femno.operators.precond_grid import (
        _restriction_1d,
        _stencil_apply,
        galerkin_hierarchy,
        stencil_levels,
    )

    A, _ = _darcy_image_system()
    net = MGCNN(channels=4, seed=2, smooth_levels=1)
    torch.nn.init.normal_(net.gate[-1].weight, std=0.5)
    At, s = scaled_matrix(A)
    lay = GridLayout.from_matrix(A)
    H, W = lay.shape
    R = sp.kron(_restriction_1d(H), _restriction_1d(W), format="csr")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(H * W), rng.standard_normal(R.shape[0])
    img = torch.tensor(x, dtype=torch.float32).reshape(1, 1, H, W)
    cimg = torch.tensor(y, dtype=torch.float32).reshape(1, 1, H // 2, W // 2)
    assert np.allclose(net._restrict(img).numpy().ravel(), R @ x, atol=1e-5)
    assert np.allclose(net._prolong(cimg, H, W).numpy().ravel(), R.T @ y, atol=1e-5)
    levels = stencil_levels(galerkin_hierarchy(At, lay, 3))
    mats = [At]
    for st, d in levels:
        Al = mats[-1]
        h = math.isqrt(Al.shape[0])
        v = rng.standard_normal(h * h)
        got = _stencil_apply(torch.tensor(v, dtype=torch.float32).reshape(1, 1, h, h), st, d)
        assert np.allclose(got.numpy().ravel(), Al @ v, atol=1e-5 * np.abs(Al @ v).max())
        Rl = sp.kron(_restriction_1d(h), _restriction_1d(h), format="csr")
        mats.append(Rl @ Al @ Rl.T)
    # one Jacobi level by hand: x1 = w r, e = P N(R r1), alpha = e.r1 / e.A e
    ctx = net.prepare(A)
    assert len(ctx["smooth"]) == 1
    r = rng.standard_normal(H * W)
    with torch.no_grad():
        got = net(torch.tensor(r / s, dtype=torch.float32)[None], ctx)[0].numpy() / s
        gates = net._gates(ctx["stencil"], 1)
        w = net.config["omega"]
        x1 = w * r
        r1 = r - At @ x1
        c = net._net(torch.tensor(R @ r1, dtype=torch.float32).reshape(1, 1, H // 2, W // 2),
                     gates, 1).numpy().ravel()
    e = R.T @ c
    alpha = (e @ r1) / (e @ (At @ e))
    want = x1 + alpha * e + w * (r1 - alpha * (At @ e))
    assert np.allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_jacobi_levels_inference_plan_matches_plain_path_and_homogeneous():
    A, _ = _darcy_image_system(n=62)  # levels 61, 30, 15, 7, 3
    for k in (1, 2):
        net = MGCNN(channels=4, seed=1, smooth_levels=k)
        torch.nn.init.normal_(net.gate[-1].weight, std=0.5)
        ctx = net.prepare(A)
        x = torch.randn(3, A.shape[0], generator=torch.Generator().manual_seed(0))
        ref = net(x, ctx).detach()  # autograd path: no plan, NCHW, gates recomputed
        with torch.inference_mode():
            fast = net(x, ctx)
            plain = net(x, ctx, fast=False)
            assert torch.allclose(net(2.5 * x, ctx), 2.5 * fast, rtol=1e-4,
                                  atol=1e-5 * float(fast.abs().max()))
        plan = ctx["_plan"]
        assert ctx["_gates"][:k] == [None] * k and ctx["_gates"][k] is not None
        assert plan["dense_level"] == 3 and plan["dense"].shape == (49, 49)
        tol = 1e-5 * float(ref.abs().max())
        assert torch.allclose(fast, ref, rtol=1e-4, atol=tol)
        assert torch.allclose(plain, ref, rtol=1e-4, atol=tol)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_numpy_inference_path_matches_torch_path_any_layout(k):
    """apply_numpy (Jacobi levels in float64 scipy, network below) is the forward map
    of the torch image path up to float32 rounding, also for a permuted dof order;
    NeuralPreconditioner routes numpy residuals through it, FCG iterations unchanged."""
    A, b = _darcy_image_system(n=34)  # levels 33, 16, 8, 4
    net = MGCNN(channels=4, seed=3, smooth_levels=k)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.nn.init.normal_(net.gate[-1].weight, std=0.5)
    rng = np.random.default_rng(3)
    perm = rng.permutation(A.shape[0])  # dof i of the permuted system = grid dof perm[i]
    Ap = A[perm][:, perm]
    side = math.isqrt(A.shape[0])
    inv = np.argsort(perm)
    lay = GridLayout(inv, (side, side))  # image pixel j holds permuted dof inv[j]
    for mat, layout in ((A, None), (Ap, lay)):
        ctx = net.prepare(mat, layout=layout)
        r = rng.standard_normal(mat.shape[0])
        with torch.inference_mode():
            want = net(torch.tensor(r, dtype=torch.float32)[None], ctx)[0].double().numpy()
        got = net.apply_numpy(r, ctx)
        assert got.dtype == np.float64
        assert np.allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    assert np.allclose(net.apply_numpy(2.5 * r, ctx), 2.5 * net.apply_numpy(r, ctx), rtol=1e-12)
    if k == 0:  # a random network alone is too weak a preconditioner for FCG
        return
    its = []
    for fast in (True, False):
        pc = NeuralPreconditioner(net, fast=fast).setup(A)
        x, info = fcg(A, b, M=pc.apply, mmax=3, rtol=1e-9, maxiter=1000)
        assert info["reason"] == "rtol" and _true_rel(A, x, b) <= 1e-9
        its.append(info["iterations"])
    assert abs(its[0] - its[1]) <= 1 + its[1] // 50


@pytest.mark.parametrize("k", [1, 2])
def test_jacobi_levels_fcg_and_dcdm_converge_with_random_weights(k):
    A, b = _darcy_image_system()
    xd = spla.spsolve(A.tocsc(), b)
    pc = NeuralPreconditioner(MGCNN(channels=4, seed=3), smooth_levels=k).setup(A)
    assert len(pc.ctx["smooth"]) == k
    x, info = fcg(A, b, M=pc.apply, mmax=3, rtol=1e-9, maxiter=400)
    assert info["reason"] == "rtol" and _true_rel(A, x, b) <= 1e-9
    assert np.allclose(x, xd, rtol=0, atol=1e-7 * np.abs(xd).max())
    x, info = dcdm(A, b, M=pc.apply, rtol=1e-9)
    assert info["reason"] == "rtol" and _true_rel(A, x, b) <= 1e-9
    assert np.allclose(x, xd, rtol=0, atol=1e-7 * np.abs(xd).max())


def test_jacobi_levels_save_load_override_and_errors(tmp_path):
    A, b = _darcy_image_system()
    net = MGCNN(channels=4, seed=5, smooth_levels=2)
    path = tmp_path / "k2.pt"
    save_model(net, path)
    loaded = load_model(path)
    assert loaded.config["smooth_levels"] == 2 and loaded.config["omega"] == 0.8
    p1 = NeuralPreconditioner(net).setup(A)
    p2 = make_preconditioner(f"neural:{path}").setup(A)
    assert np.array_equal(p1.apply(b), p2.apply(b))
    # a model saved before the option existed (config without the keys) still loads as k=0
    obj = torch.load(path, weights_only=False)
    for key in ("smooth_levels", "omega"):
        obj["config"].pop(key)
    torch.save(obj, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert old.config["smooth_levels"] == 0
    assert NeuralPreconditioner(old).setup(A).ctx["smooth"] == []
    # the inference override: same weights, the k of the caller (clamped to the levels)
    p3 = NeuralPreconditioner(old, smooth_levels=2).setup(A)
    assert np.allclose(p3.apply(b), p1.apply(b), rtol=0, atol=1e-12 + 1e-6 * np.abs(p1.apply(b)).max())
    assert len(NeuralPreconditioner(old, smooth_levels=99).setup(A).ctx["smooth"]) == 3
    with pytest.raises(InputError, match="smooth_levels"):
        MGCNN(smooth_levels=-1)
    with pytest.raises(InputError, match="smooth_levels"):
        NeuralPreconditioner(LearnedIC(seed=0), smooth_levels=1)
    with pytest.raises(InputError, match="smooth_levels"):
        train_precond("darcy", n=8, kind="spd", smooth_levels=1, epochs=1, progress=False)


def test_grid_stencil_lexicographic_fast_path_matches_general_path():
    s = sample_system(get_family("darcy", n=14), 1)
    At, _ = scaled_matrix(s.A)
    lay = GridLayout.from_matrix(s.A)
    assert lay.identity
    general = GridLayout(lay.perm, lay.shape)
    general.identity = False  # force the fancy-indexing path
    assert np.array_equal(grid_stencil(At, lay), grid_stencil(At, general))


def test_cli_smooth_levels_and_fine_tuning(tmp_path, capsys):
    """``--smooth-levels`` is stored in the model; ``--init`` starts from given weights
    and rejects weights of another width or kind."""
    from femno.cli.main import main

    start = MGCNN(channels=4, seed=7)
    save_model(start, tmp_path / "start.pt")
    out = tmp_path / "k1.pt"
    rc = main(["train", "precond", "--family", "poisson", "--n", "16", "--kind", "fcg",
               "--channels", "4", "--smooth-levels", "1", "--init", str(tmp_path / "start.pt"),
               "--epochs", "1", "--samples", "1", "--per-system", "4", "--out", str(out),
               "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["smooth_levels"] == 1 and summary["init"] == str(tmp_path / "start.pt")
    trained = load_model(out)
    assert trained.config["smooth_levels"] == 1
    assert not torch.equal(trained.lift.weight, start.lift.weight)  # trained from there
    with pytest.raises(InputError, match="do not fit"):
        train_precond("poisson", n=8, kind="fcg", channels=8, init=start, epochs=1,
                      progress=False)
    with pytest.raises(InputError, match="init"):
        train_precond("poisson", n=8, kind="fcg", channels=4, init=LearnedIC(seed=0),
                      epochs=1, progress=False)
    assert main(["train", "precond", "--n", "8", "--smooth-levels", "-1", "--out",
                 str(tmp_path / "x.pt")]) == 2


def test_neural_pc_path_keeps_its_case(darcy, tmp_path):
    """Issue 23 item 6: ``neural:PATH`` lower-cased PATH, so a model under a directory
    with capital letters was reported as missing."""
    d = tmp_path / "Models" / "RunA"
    d.mkdir(parents=True)
    save_model(MGCNN(channels=4), d / "PC.pt")
    spec = f"Neural:{d / 'PC.pt'}"
    solver = krylov("fcg", pc=spec)
    assert solver.pc.kind == "precond-cnn" and "Models/RunA/PC.pt" in solver.pc_name
    with pytest.raises(InputError, match="Models/RunA/Missing.pt"):
        make_preconditioner(f"neural:{d / 'Missing.pt'}")
