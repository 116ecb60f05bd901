"""Demo: a learned reaction law inside a nonlinear FE solve (femno.hybrid.newton_solve).

Run ``python demos/hybrid_neural_law.py [--n 32] [--steps 1500]`` (seconds on a CPU). It

1. fits a small MLP :math:`s_\\theta(u)` to noisy samples of the law :math:`s(u) = u^3`
   (what a user would have from experiments),
2. solves :math:`-\\Delta u + s(u) = f` on the unit square (P1, :math:`u = 0` on the
   boundary, :math:`f` manufactured from :math:`u^\\star = \\sin\\pi x \\sin\\pi y`) by Newton
   with the MLP evaluated batched at all quadrature points and its autograd tangent,
3. prints the Newton residual history (quadratic: the estimated order is about 2) and
   compares with the same solve using the exact law and with :math:`u^\\star`.
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
    return res


if __name__ == "__main__":
    main()
