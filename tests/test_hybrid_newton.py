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


def _linear_stress(lam, mu):
    def q(G, x):
        eps = 0.5 * (G + G.transpose(1, 2))
        tr = eps.diagonal(dim1=1, dim2=2).sum(1)
        return lam * tr[:, None, None] * torch.eye(2, dtype=G.dtype) + 2 * mu * eps
    return q


def _svk_stress(lam, mu):  # St Venant-Kirchhoff: P = F S, S = lam tr(E) I + 2 mu E
    def q(G, x):
        eye = torch.eye(2, dtype=G.dtype)
        F = eye + G
        E = 0.5 * (F.transpose(1, 2) @ F - eye)
        S = lam * E.diagonal(dim1=1, dim2=2).sum(1)[:, None, None] * eye + 2 * mu * E
        return F @ S
    return q


def _clamped_bar(n=8):
    from femno.fem.bc import boundary_dofs

    mesh = skfem.MeshTri.init_tensor(np.linspace(0, 2, 2 * n + 1), np.linspace(0, 1, n + 1))
    basis = skfem.Basis(mesh, skfem.ElementVector(skfem.ElementTriP1()))
    return basis, boundary_dofs(basis, lambda x: x[0] < 1e-12)


def test_vector_linear_law_reproduces_linear_elasticity_in_one_step():
    from skfem.models.elasticity import linear_elasticity

    basis, D = _clamped_bar()
    lam, mu = 1.2, 0.8
    load = np.array([0.0, -0.05])
    res = newton_solve(basis, flux=_linear_stress(lam, mu), source=load, dirichlet=D,
                       rtol=1e-12)
    assert res.converged and res.iterations <= 2

    @skfem.LinearForm
    def body(v, w):
        return load[0] * v[0] + load[1] * v[1]

    K, f = linear_elasticity(lam, mu).assemble(basis), body.assemble(basis)
    u = skfem.solve(*skfem.condense(K, f, D=D))
    assert np.linalg.norm(res.u - u) <= 1e-10 * np.linalg.norm(u)


def test_hyperelastic_law_quadratic_newton_and_small_load_limit():
    basis, D = _clamped_bar()
    lam, mu = 1.2, 0.8
    res = newton_solve(basis, flux=_svk_stress(lam, mu), source=np.array([0.0, -0.01]),
                       dirichlet=D, rtol=1e-12)
    assert res.converged and max(res.orders) > 1.8, (res.residuals, res.orders)
    lin = newton_solve(basis, flux=_linear_stress(lam, mu), source=np.array([0.0, -0.01]),
                       dirichlet=D, rtol=1e-12)
    assert np.linalg.norm(res.u - lin.u) > 1e-3 * np.linalg.norm(lin.u)  # really nonlinear
    small = [newton_solve(basis, flux=law(lam, mu), source=np.array([0.0, -1e-4]),
                          dirichlet=D, rtol=1e-12).u for law in (_svk_stress, _linear_stress)]
    assert np.linalg.norm(small[0] - small[1]) < 1e-3 * np.linalg.norm(small[1])


def test_vector_tangent_against_finite_differences():
    rng = np.random.default_rng(1)
    G = 0.2 * rng.standard_normal((20, 2, 2))
    u = rng.standard_normal((20, 2))
    x = rng.random((20, 2))
    law = _svk_stress(1.0, 0.5)
    q, Dt, _, _ = model_terms(law, None, G, u, x)
    assert q.shape == (20, 2, 2) and Dt.shape == (20, 2, 2, 2, 2)
    eps = 1e-6
    for k in range(2):
        for l in range(2):
            E = np.zeros((2, 2))
            E[k, l] = eps
            fd = (model_terms(law, None, G + E, u, x)[0] - model_terms(law, None, G - E, u, x)[0])
            assert np.allclose(fd / (2 * eps), Dt[:, :, :, k, l], atol=1e-7)
