"""Neural terms in a nonlinear FE solve: manufactured solution and its h^2 rate, quadratic
Newton convergence with the autograd tangent, the tangent against finite differences,
the residual against an independent numpy assembly, and bad models refused."""

import numpy as np
import pytest
import skfem
import torch
from skfem.helpers import dot, grad

from femno.errors import ConvergenceError, InputError
from femno.fem.mesh import unit_square
from femno.hybrid import newton_solve
from femno.hybrid.newton import model_terms


def _exact(x):
    return np.sin(np.pi * x[..., 0]) * np.sin(np.pi * x[..., 1])


def _source(x):  # -Δu + u^3 for u = sin(pi x) sin(pi y)
    u = _exact(x)
    return 2 * np.pi**2 * u + u**3


def test_manufactured_solution_converges_at_h2_with_quadratic_newton():
    errs = []
    for n in (8, 16, 32):
        basis = skfem.Basis(unit_square(n), skfem.ElementTriP1(), intorder=4)
        res = newton_solve(basis, reaction=lambda u, x: u**3, source=_source, rtol=1e-12)
        assert res.converged and res.iterations <= 6
        ui = np.array(basis.interpolate(res.u))
        xq = np.moveaxis(basis.mapping.F(basis.X), 0, -1)
        errs.append(np.sqrt(np.sum(basis.dx * (ui - _exact(xq)) ** 2)))
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(rates > 1.8), rates
    assert max(res.orders) > 1.8  # quadratic convergence seen in the history


class _MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(),
                                       torch.nn.Linear(16, 1)).double()

    def forward(self, u, x):  # monotone: u + softplus-like learned term
        return u + 0.5 * torch.tanh(self.net(u[:, None]))[:, 0] * u


def test_neural_reaction_and_nonlinear_flux_quadratic_and_residual_independent():
    basis = skfem.Basis(unit_square(12), skfem.ElementTriP1())
    flux = lambda g, x: (1.0 + (g**2).sum(1, keepdim=True)) * g  # noqa: E731
    model = _MLP()
    res = newton_solve(basis, flux=flux, reaction=model, source=20.0, rtol=1e-12)
    assert res.converged
    r = res.residuals
    assert r[-1] <= 1e-12 * r[0]
    assert max(res.orders) > 1.8, res.orders
    # the residual at the solution, assembled independently (numpy flux, torch reaction)
    ui = basis.interpolate(res.u)
    with torch.no_grad():
        s = model(torch.from_numpy(np.array(ui).ravel()), None).numpy().reshape(basis.dx.shape)

    @skfem.LinearForm
    def R(v, w):
        g = grad(w.u)
        return dot((1 + dot(g, g)) * g, grad(v)) + w.s * v - 20.0 * v

    Rv = R.assemble(basis, u=ui, s=s)
    D = basis.get_dofs().all()
    Rv[D] = 0.0
    assert np.linalg.norm(Rv) <= 1e-10 * np.linalg.norm(R.assemble(basis, u=basis.interpolate(0 * res.u), s=0 * s))


def test_tangent_against_finite_differences():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((50, 2))
    u = rng.standard_normal(50)
    x = rng.random((50, 2))
    flux = lambda G, X: (1.0 + (G**2).sum(1, keepdim=True)) * G + 0.3 * G[:, [1, 0]] * X  # noqa: E731
    model = _MLP()
    q, D, s, c = model_terms(flux, model, g, u, x)
    eps = 1e-6
    for j in range(2):
        e = np.zeros(2)
        e[j] = eps
        qp = model_terms(flux, None, g + e, u, x)[0]
        qm = model_terms(flux, None, g - e, u, x)[0]
        assert np.allclose((qp - qm) / (2 * eps), D[:, :, j], atol=1e-7)
    sp_ = model_terms(None, model, g, u + eps, x)[2]
    sm = model_terms(None, model, g, u - eps, x)[2]
    assert np.allclose((sp_ - sm) / (2 * eps), c, atol=1e-7)


def test_bad_models_and_non_convergence():
    basis = skfem.Basis(unit_square(4), skfem.ElementTriP1())
    with pytest.raises(InputError, match="flux must return"):
        newton_solve(basis, flux=lambda g, x: g[:, 0], source=1.0)
    with pytest.raises(InputError, match="NaN"):
        newton_solve(basis, reaction=lambda u, x: torch.log(u - 10.0), source=1.0)
    with pytest.raises(ConvergenceError) as exc:
        newton_solve(basis, reaction=lambda u, x: torch.exp(3 * u), source=50.0, maxiter=1)
    assert exc.value.x is not None
