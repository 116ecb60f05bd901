"""Demo: recover a Darcy coefficient from noisy point observations, by gradient descent
through the finite-element solve (femno.hybrid).

Run ``python demos/hybrid_inverse_darcy.py [--n 24] [--obs 100] [--noise 0.01] [--out fig.png]``
(seconds on a laptop CPU). It

1. draws a "true" log-normal coefficient :math:`a^\\star` (femno's Darcy family, a Gaussian
   random field at the quadrature points) and solves :math:`-\\nabla\\cdot(a^\\star\\nabla u) = f`,
2. observes :math:`u` at ``--obs`` random points with ``--noise`` relative Gaussian noise,
3. fits :math:`\\log a(x) = \\sum_{k,l<K} \\theta_{kl}\\cos(k\\pi x)\\cos(l\\pi y)` by L-BFGS on
   :math:`\\|P u(\\theta) - d\\|^2/\\|d\\|^2 + \\beta \\sum (k^2+l^2)\\theta_{kl}^2`, each
   gradient one forward and one adjoint solve (:func:`femno.hybrid.linear_solve`) through
   the differentiable assembly (:class:`femno.hybrid.TorchAssembler`),
4. prints the coefficient error against the truth, against the best the basis can do
   (the L2 projection of :math:`\\log a^\\star`), and the solution error.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from femno.fem import Darcy
from femno.hybrid import AdjointSolver, TorchAssembler, csr_tensor, linear_solve


def cosine_basis(points, K):
    """Phi (npoints, K*K): cos(k pi x) cos(l pi y) on the unit square, k, l < K."""
    x, y = points[:, 0], points[:, 1]
    return np.stack([np.cos(k * np.pi * x) * np.cos(l * np.pi * y)
                     for k in range(K) for l in range(K)], axis=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24, help="mesh cells per side (default 24)")
    p.add_argument("--obs", type=int, default=100, help="observation points (default 100)")
    p.add_argument("--noise", type=float, default=0.01, help="relative noise (default 0.01)")
    p.add_argument("--modes", type=int, default=5, help="K: K*K cosine modes (default 5)")
    p.add_argument("--beta", type=float, default=1e-6, help="smoothness weight (default 1e-6)")
    p.add_argument("--iters", type=int, default=60, help="L-BFGS iterations (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write a figure (needs matplotlib)")
    a = p.parse_args(argv)
    if a.n < 2 or a.obs < 1 or a.modes < 1 or a.noise < 0 or a.iters < 1:
        p.error("need --n >= 2, --obs >= 1, --modes >= 1, --noise >= 0, --iters >= 1")
    rng = np.random.default_rng(a.seed)

    fam = Darcy(n=a.n, length=0.3)
    truth = fam.sample(rng)
    sys_true = fam.assemble(truth)
    solver = AdjointSolver("direct")
    b = torch.tensor(sys_true.b)
    asm = TorchAssembler.from_family(fam)
    u_true = sys_true.expand(solver.forward(sys_true.A, sys_true.b))

    pts = rng.uniform(0.05, 0.95, size=(a.obs, 2))
    P = fam.basis.probes(pts.T).tocsr()[:, sys_true.free]  # (obs, n_free): u = 0 on the boundary
    clean = P @ u_true[sys_true.free]
    data = clean + a.noise * np.std(clean) * rng.standard_normal(a.obs)
    print(f"Darcy n={a.n}: {sys_true.dofs} free dofs, {a.obs} observations, "
          f"noise {a.noise:.0%}; unknown: {a.modes}x{a.modes} cosine modes of log a")

    qp, dx = fam.quadrature_points, fam.basis.dx.ravel()
    Phi = cosine_basis(qp, a.modes)
    Phi_t = torch.tensor(Phi)
    P_t = csr_tensor(P.indptr, P.indices, P.data, P.shape)
    d = torch.tensor(data)
    kk = np.array([k * k + l * l for k in range(a.modes) for l in range(a.modes)], float)
    w = torch.tensor(kk)
    log_true = np.log(truth["a"]).ravel()
    # the best the basis can do: the L2(dx) projection of the true log a
    G = Phi.T @ (Phi * dx[:, None])
    theta_best = np.linalg.solve(G, Phi.T @ (dx * log_true))

    def coef_error(theta):
        e = Phi @ theta - log_true
        return float(np.sqrt((dx * e**2).sum() / (dx * log_true**2).sum()))

    theta = torch.zeros(a.modes * a.modes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=a.iters, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)
    calls, history = [0], []
    d2 = float(d @ d)

    def closure():
        opt.zero_grad()
        log_a = (Phi_t @ theta).reshape(fam.qp_shape)
        x = linear_solve(asm([torch.exp(log_a)]), b, solver=solver)
        r = P_t @ x - d
        loss = (r @ r) / d2 + a.beta * (w * theta**2).sum()
        loss.backward()
        calls[0] += 1
        history.append(float(loss.detach()))
        return loss

    err0 = coef_error(theta.detach().numpy())
    t = time.perf_counter()
    opt.step(closure)
    el = time.perf_counter() - t
    th = theta.detach().numpy()
    err = coef_error(th)
    a_fit = np.exp(Phi @ th).reshape(fam.qp_shape)
    s_fit = fam.assemble({"a": a_fit})
    u_fit = s_fit.expand(solver.forward(s_fit.A, s_fit.b))
    u_err = np.linalg.norm(u_fit - u_true) / np.linalg.norm(u_true)
    print(f"L-BFGS: {calls[0]} loss+gradient evaluations (one forward + one adjoint solve "
          f"each) in {el:.2f} s ({el / calls[0] * 1e3:.1f} ms each); "
          f"loss {history[0]:.3e} -> {history[-1]:.3e}")
    print(f"relative L2 error of log a: start (constant) {err0:.3f}, recovered {err:.3f}, "
          f"best in the basis {coef_error(theta_best):.3f}")
    print(f"relative error of u: {u_err:.2e}; data misfit "
          f"{np.linalg.norm(P @ u_fit[s_fit.free] - data) / np.linalg.norm(data):.2e} "
          f"(noise level {a.noise * np.std(clean) * np.sqrt(a.obs) / np.linalg.norm(data):.2e})")
    if a.out:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise SystemExit("--out needs matplotlib (pip install 'femno[plot]')") from None
        fig, ax = plt.subplots(1, 3, figsize=(13, 4))
        for axis, val, title in ((ax[0], log_true, "true log a"),
                                 (ax[1], Phi @ theta_best, "best in the basis"),
                                 (ax[2], Phi @ th, f"recovered (error {err:.2f})")):
            im = axis.tricontourf(qp[:, 0], qp[:, 1], val, levels=30)
            axis.set_title(title)
            axis.set_aspect("equal")
            fig.colorbar(im, ax=axis)
        ax[2].plot(pts[:, 0], pts[:, 1], "k.", ms=3)
        fig.tight_layout()
        fig.savefig(a.out, dpi=110)
        print(f"wrote {a.out}")
    return err, coef_error(theta_best), err0


if __name__ == "__main__":
    main()
