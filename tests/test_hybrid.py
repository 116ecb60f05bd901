"""femno.hybrid: the adjoint of the sparse solve against finite differences
(torch.autograd.gradcheck), Krylov gradients against direct ones, reuse of the forward's
work in the backward, and differentiable assembly against scikit-fem's matrices."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from femno.errors import InputError
from femno.fem import Darcy, Elasticity, Heat
from femno.hybrid import AdjointSolver, TorchAssembler, csr_tensor, linear_solve


def _nonsymmetric(n=12, seed=0):
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=0.25, random_state=seed) + sp.diags(4.0 + rng.random(n))
    return sp.csr_matrix(A)


def _spd(n=12):
    T = sp.diags([-1.0, 2.2, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    return sp.csr_matrix(T + sp.diags(np.linspace(0.1, 1.0, n)))


def _as_coo(A, values):
    Ac = A.tocoo()
    return torch.sparse_coo_tensor(np.vstack([Ac.row, Ac.col]), values, A.shape)


@pytest.mark.parametrize("kind", ["spd", "nonsymmetric"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("batch", [False, True])
def test_gradcheck_direct(kind, layout, batch):
    A = _spd() if kind == "spd" else _nonsymmetric()
    A.sort_indices()
    n = A.shape[0]
    rng = np.random.default_rng(1)
    b = torch.tensor(rng.standard_normal((3, n) if batch else n), requires_grad=True)
    if layout == "coo":
        Ac = A.tocoo()
        order = np.lexsort((Ac.col, Ac.row))  # coalesced order: row-major
        v0 = Ac.data[order]
    else:
        v0 = A.data
    v = torch.tensor(v0, requires_grad=True)

    def f(v, b):
        M = _as_coo(A, v) if layout == "coo" else csr_tensor(A.indptr, A.indices, v, A.shape)
        return linear_solve(M, b)

    assert torch.autograd.gradcheck(f, (v, b), eps=1e-6, atol=1e-8)


def test_krylov_gradients_match_direct_and_reuse_the_setup():
    for A, method, pc in ((_spd(40), "cg", "amg"), (_nonsymmetric(40, 3), "gmres", "ilu")):
        b0 = np.random.default_rng(2).standard_normal(40)
        grads = {}
        for m in ("direct", method):
            v = torch.tensor(A.data, requires_grad=True)
            b = torch.tensor(b0, requires_grad=True)
            solver = AdjointSolver(m, pc=pc if m != "direct" else "none", rtol=1e-12)
            x = linear_solve(csr_tensor(A.indptr, A.indices, v, A.shape), b, solver=solver)
            (x * torch.arange(40.0, dtype=torch.float64)).sum().backward()
            grads[m] = (v.grad.numpy(), b.grad.numpy())
            # the backward set up nothing new for a symmetric matrix, one A^T solver else
            assert solver.n_adjoint_setups == (0 if solver.symmetric or m == "direct" else 1)
            if m == "direct":
                assert solver.n_factorizations == 1
        for gd, gk in zip(grads["direct"], grads[method], strict=True):
            assert np.linalg.norm(gd - gk) <= 1e-7 * np.linalg.norm(gd)


def test_solver_kept_between_calls_refactorizes_only_for_new_values():
    A = _spd(30)
    solver = AdjointSolver("direct")
    b = torch.ones(30, dtype=torch.float64)
    for scale in (1.0, 1.0, 2.0):
        v = torch.tensor(scale * A.data, requires_grad=True)
        x = linear_solve(csr_tensor(A.indptr, A.indices, v, A.shape), b, solver=solver)
        x.sum().backward()
        assert np.allclose((scale * A) @ x.detach().numpy(), 1.0)
    assert solver.n_factorizations == 2  # the repeated values reused the factor


def test_input_errors():
    A = _spd(5)
    b = torch.ones(5, dtype=torch.float64)
    with pytest.raises(InputError, match="sparse tensor"):
        linear_solve(torch.eye(5, dtype=torch.float64), b)
    with pytest.raises(InputError, match="float64"):
        linear_solve(A, b.float())
    with pytest.raises(InputError, match="shape"):
        linear_solve(A, torch.ones(4, dtype=torch.float64))
    with pytest.raises(InputError, match="NaN"):
        linear_solve(A, torch.full((5,), float("nan"), dtype=torch.float64))
    with pytest.raises(InputError, match="adjoint"):
        AdjointSolver().adjoint(np.ones(5))


@pytest.mark.parametrize("family", [Darcy(n=5), Heat(n=5), Elasticity(n=4), Darcy(n=3, element="P2")])
def test_torch_assembly_equals_the_family_matrix(family):
    p = family.sample(np.random.default_rng(0))
    asm = TorchAssembler.from_family(family)
    coefs = [torch.as_tensor(np.broadcast_to(c, family.qp_shape).copy())
             for c in family.matrix_coefficients(p)]
    A = family.assemble(p, fast=False).A
    M = asm.scipy(coefs)
    assert M.shape == A.shape and abs(M - A).max() <= 1e-13 * abs(A).max()


def test_end_to_end_gradcheck_coefficient_to_loss():
    fam = Darcy(n=3)
    asm = TorchAssembler.from_family(fam)
    s = fam.assemble(fam.sample(np.random.default_rng(4)))
    b = torch.tensor(s.b)
    target = torch.linspace(0.0, 1.0, s.dofs, dtype=torch.float64)

    def loss(log_a):
        x = linear_solve(asm([torch.exp(log_a)]), b)
        return ((x - target) ** 2).sum()

    log_a = torch.tensor(0.3 * np.random.default_rng(5).standard_normal(fam.qp_shape),
                         requires_grad=True)
    assert torch.autograd.gradcheck(loss, (log_a,), eps=1e-6, atol=1e-9)
    with pytest.raises(InputError, match="quadrature points"):
        asm([torch.ones(7, dtype=torch.float64)])


def test_torch_made_csr_with_grad_is_refused_where_its_backward_would_densify(monkeypatch):
    import femno.hybrid.solve as hs

    A = _spd(40)
    v = torch.tensor(A.data, requires_grad=True)
    M = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices), v, A.shape)
    b = torch.ones(40, dtype=torch.float64)
    linear_solve(M, b).sum().backward()  # small: allowed, and the gradient is right
    v2 = torch.tensor(A.data, requires_grad=True)
    linear_solve(csr_tensor(A.indptr, A.indices, v2, A.shape), b).sum().backward()
    assert torch.allclose(v.grad, v2.grad)
    monkeypatch.setattr(hs, "DENSE_GRAD_LIMIT", 1000)
    with pytest.raises(InputError, match="csr_tensor"):
        linear_solve(M, b)
