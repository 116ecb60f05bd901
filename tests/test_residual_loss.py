"""FE-residual loss (femno.hybrid.residual_loss): exactness, gradients, training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from femno.errors import InputError
from femno.fem import Darcy
from femno.hybrid.residual_loss import ResidualLoss

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def problem():
    fam = Darcy(n=6, length=0.3)
    params = [fam.sample(np.random.default_rng(k)) for k in range(4)]
    systems = [fam.assemble(p) for p in params]
    a = torch.as_tensor(np.stack([p["a"] for p in params]))
    b = torch.as_tensor(np.stack([s.b for s in systems]))
    x = torch.as_tensor(np.stack([spla.spsolve(s.A.tocsc(), s.b) for s in systems]))
    return fam, systems, a, b, x


@pytest.mark.parametrize("norm", ["dual", "l2"])
def test_exact_solution_has_zero_residual(problem, norm):
    fam, systems, a, b, x = problem
    res = ResidualLoss.from_family(fam, norm=norm)
    r = res.residual(x, b, coefficients=a)
    # the matrix is the family's condensed matrix
    for k, s in enumerate(systems):
        assert np.allclose(res.matvec(res.matrix_values(a[k:k + 1]), x[k:k + 1]).numpy()[0],
                           s.A @ x[k].numpy(), rtol=1e-13, atol=1e-15)
    assert float(res.relative(x, b, coefficients=a).max()) < 1e-12
    assert float(r.abs().max()) < 1e-12 * float(b.abs().max())
    full = torch.zeros(len(systems), fam.basis.N, dtype=torch.float64)
    full[:, torch.as_tensor(fam.free_dofs())] = x
    assert float(res.relative(full, b, coefficients=a).max()) < 1e-12


def test_dual_norm_is_equivalent_to_energy_error(problem):
    fam, systems, a, b, x = problem
    res = ResidualLoss.from_family(fam)
    e = torch.as_tensor(np.random.default_rng(0).standard_normal(x.shape))
    r = res.residual(x + e, b, coefficients=a)
    dual = res.norm(r).numpy() ** 2
    for k, s in enumerate(systems):
        energy = e[k].numpy() @ (s.A @ e[k].numpy())
        amin, amax = float(a[k].min()), float(a[k].max())
        assert amin * energy * (1 - 1e-10) <= dual[k] <= amax * energy * (1 + 1e-10)


@pytest.mark.parametrize("norm", ["dual", "l2"])
def test_gradient_matches_analytic_and_finite_differences(problem, norm):
    fam, systems, a, b, x = problem
    res = ResidualLoss.from_family(fam, norm=norm)
    vals = res.matrix_values(a)
    u0 = x + 0.1 * torch.as_tensor(np.random.default_rng(1).standard_normal(x.shape))
    u = u0.clone().requires_grad_(True)
    loss = res(u, b, values=vals)
    loss.backward()
    # analytic: d/du_k mean_k ||r_k||_W / ||b_k||_W = A_k^T W r_k / (B ||r_k||_W ||b_k||_W)
    B = len(systems)
    for k, s in enumerate(systems):
        rk = s.A @ u0[k].numpy() - s.b
        W = (lambda v: spla.spsolve(res.K0.tocsc(), v)) if norm == "dual" else (lambda v: v)
        nr, nb = np.sqrt(rk @ W(rk)), np.sqrt(s.b @ W(s.b))
        g = s.A.T @ W(rk) / (B * nr * nb)
        assert np.allclose(u.grad[k].numpy(), g, rtol=1e-8, atol=1e-12)
    f = lambda v: res(v, b, values=vals)  # noqa: E731
    assert torch.autograd.gradcheck(f, (u0.clone().requires_grad_(True),), eps=1e-6, atol=1e-7)


def test_gradient_in_the_coefficient(problem):
    fam, systems, a, b, x = problem
    res = ResidualLoss.from_family(fam)
    a1 = a[:1].clone().requires_grad_(True)
    f = lambda c: res(x[:1] + 0.01, b[:1], coefficients=c)  # noqa: E731
    assert torch.autograd.gradcheck(f, (a1,), eps=1e-6, atol=1e-7)


def test_training_steps_reduce_the_residual(problem):
    fam, systems, a, b, x = problem
    res = ResidualLoss.from_family(fam)
    vals = res.matrix_values(a)
    torch.manual_seed(0)
    n = res.n_free
    net = torch.nn.Sequential(torch.nn.Linear(a.shape[1] * a.shape[2], 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, n)).double()
    inp = torch.log(a).reshape(len(a), -1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = res(0.05 * net(inp), b, values=vals)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_bad_inputs(problem):
    fam, systems, a, b, x = problem
    res = ResidualLoss.from_family(fam)
    with pytest.raises(InputError, match="entries per sample"):
        res.residual(x[:, :-1], b, coefficients=a)
    with pytest.raises(InputError, match="float64"):
        res.residual(x.float(), b, coefficients=a)
    with pytest.raises(InputError, match="loads must have shape"):
        res.residual(x, b[:, :-1], coefficients=a)
    with pytest.raises(InputError, match="exactly one"):
        res.residual(x, b)
    with pytest.raises(InputError, match="coefficient"):
        res.residual(x, b, coefficients=a[:, :3])
    with pytest.raises(InputError, match="values must have shape"):
        res.residual(x, b, values=torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(InputError, match="unknown residual norm"):
        ResidualLoss.from_family(fam, norm="h2")
