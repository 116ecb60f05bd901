"""Demo: a learned reaction law inside a nonlinear FE solve (femno.hybrid.newton_solve).

Run ``python demos/hybrid_neural_law.py [--n 32] [--steps 1500]`` (seconds on a CPU). It

1. fits a small MLP :math:`s_\\theta(u)` to noisy samples of the law :math:`s(u) = u^3`
   (what a user would have from experiments),
2. solves :math:`-\\Delta u + s(u) = f` on the unit square (P1, :math:`u = 0` on the
   boundary, :math:`f` manufactured from :math:`u^\\star = \\sin\\pi x \\sin\\pi y`) by Newton
   with the MLP evaluated batched at all quadrature points and its autograd tangent,
3. prints the Newton residual history (quadratic: the estimated order is about 2) and
   compares with the same solve using the exact law and with :math:`u^\\star`;
4. (``--hyperelastic``) fits a neural strain energy :math:`W_\\theta(\\mathrm{tr}\\,E,
   \\mathrm{tr}\\,E^2)` (isotropic, objective by construction) to St Venant-Kirchhoff
   energies and stresses, and bends a clamped 2 x 1 bar with the stress
   :math:`P = \\partial W_\\theta / \\partial F` from autograd (the tangent is its second
   derivative, also from autograd), against the same bar with the exact law.
"""

from __future__ import annotations

import argparse

import numpy as np
import skfem
import torch

from femno.fem.mesh import unit_square
from femno.hybrid import newton_solve


def exact(x):
    return np.sin(np.pi * x[..., 0]) * np.sin(np.pi * x[..., 1])


def source(x):
    u = exact(x)
    return 2 * np.pi**2 * u + u**3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32, help="mesh cells per side (default 32)")
    p.add_argument("--steps", type=int, default=1500, help="Adam steps fitting the law")
    p.add_argument("--noise", type=float, default=0.01, help="noise of the law samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hyperelastic", action="store_true",
                   help="also the neural hyperelastic bar (part 4)")
    a = p.parse_args(argv)
    if a.n < 2 or a.steps < 1 or a.noise < 0:
        p.error("need --n >= 2, --steps >= 1, --noise >= 0")
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    us = torch.tensor(rng.uniform(-1.5, 1.5, 400))
    ss = us**3 + a.noise * torch.tensor(rng.standard_normal(400))
    net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, 1)).double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(a.steps):
        opt.zero_grad()
        loss = ((net(us[:, None])[:, 0] - ss) ** 2).mean()
        loss.backward()
        opt.step()
    grid = torch.linspace(-1, 1, 201, dtype=torch.float64)
    with torch.no_grad():
        law_err = float((net(grid[:, None])[:, 0] - grid**3).abs().max())
    print(f"fitted s(u) ~ u^3 on [-1.5, 1.5] ({a.steps} Adam steps): max error on [-1, 1] "
          f"{law_err:.2e}")

    def neural(u, x):
        return net(u[:, None])[:, 0]

    basis = skfem.Basis(unit_square(a.n), skfem.ElementTriP1(), intorder=4)
    res = newton_solve(basis, reaction=neural, source=source, rtol=1e-12)
    ref = newton_solve(basis, reaction=lambda u, x: u**3, source=source, rtol=1e-12)
    print(f"Newton with the MLP law ({basis.N} dofs, the MLP at {basis.dx.size} quadrature "
          f"points per evaluation): {res.iterations} iterations")
    for k, r in enumerate(res.residuals):
        print(f"  iteration {k}: |R| = {r:.3e}")
    print("  estimated orders: " + ", ".join(f"{o:.2f}" for o in res.orders))
    xq = np.moveaxis(basis.mapping.F(basis.X), 0, -1)

    def l2(v):
        return float(np.sqrt(np.sum(basis.dx * v**2)))

    un, ue = np.array(basis.interpolate(res.u)), np.array(basis.interpolate(ref.u))
    print(f"L2 difference neural-law vs exact-law solution: {l2(un - ue) / l2(ue):.2e} "
          f"(relative); FE error of the exact-law solution vs u*: "
          f"{l2(ue - exact(xq)) / l2(exact(xq)):.2e}")
    if a.hyperelastic:
        hyperelastic(a)
    return res


LAM, MU = 1.2, 0.8


def svk_energy(E):
    tr = E.diagonal(dim1=-2, dim2=-1).sum(-1)
    return 0.5 * LAM * tr**2 + MU * (E * E).sum((-2, -1))


def green(F):
    eye = torch.eye(2, dtype=F.dtype)
    return 0.5 * (F.transpose(-2, -1) @ F - eye)


def stress_law(W):
    """P(grad u) = dW/dF at F = I + grad u, with the graph kept for the tangent."""
    def q(G, x):
        F = (torch.eye(2, dtype=G.dtype) + G)
        if not F.requires_grad:
            F.requires_grad_(True)
        (P,) = torch.autograd.grad(W(green(F)).sum(), F, create_graph=True)
        return P
    return q


def hyperelastic(a):
    from femno.fem.bc import boundary_dofs

    rng = np.random.default_rng(a.seed + 1)
    Fs = torch.tensor(np.eye(2) + 0.25 * rng.standard_normal((600, 2, 2)), requires_grad=True)
    E = green(Fs)
    W_true = svk_energy(E)
    (P_true,) = torch.autograd.grad(W_true.sum(), Fs)
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Softplus(),
                              torch.nn.Linear(32, 1)).double()

    def W_net(E):
        tr = E.diagonal(dim1=-2, dim2=-1).sum(-1)
        feats = torch.stack([tr, (E * E).sum((-2, -1))], dim=-1)
        zero = torch.zeros(1, 2, dtype=E.dtype)
        return (net(feats) - net(zero))[..., 0]  # W(0) = 0

    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(a.steps):
        opt.zero_grad()
        (P,) = torch.autograd.grad(W_net(green(Fs)).sum(), Fs, create_graph=True)
        loss = ((P - P_true) ** 2).mean() / (P_true**2).mean()
        loss.backward()
        opt.step()
    print(f"neural strain energy W(tr E, tr E^2) fitted to St Venant-Kirchhoff stresses: "
          f"relative mean-square stress error {float(loss.detach()):.2e}")
    mesh = skfem.MeshTri.init_tensor(np.linspace(0, 2, 2 * a.n + 1), np.linspace(0, 1, a.n + 1))
    basis = skfem.Basis(mesh, skfem.ElementVector(skfem.ElementTriP1()))
    D = boundary_dofs(basis, lambda x: x[0] < 1e-12)
    load = np.array([0.0, -0.01])
    res = newton_solve(basis, flux=stress_law(W_net), source=load, dirichlet=D, rtol=1e-11)
    ref = newton_solve(basis, flux=stress_law(svk_energy), source=load, dirichlet=D,
                       rtol=1e-11)
    print(f"clamped bar, body force {load[1]}: Newton {res.iterations} iterations with the "
          f"neural law (residuals " + ", ".join(f"{r:.1e}" for r in res.residuals) + ")")
    tip = np.abs(ref.u).max()
    print(f"max displacement {tip:.3f} (exact law); relative difference neural vs exact law "
          f"{np.linalg.norm(res.u - ref.u) / np.linalg.norm(ref.u):.2e}")


if __name__ == "__main__":
    main()
