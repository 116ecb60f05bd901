"""Demo: one Darcy problem, several solvers, residual histories side by side.

Run ``python demos/darcy_solvers.py [--n 128] [--out darcy_solvers.png]`` (a few seconds).
It samples a log-normal permeability, solves -div(a grad u) = 1 with CG, IC-PCG and
AMG-PCG (and PETSc BoomerAMG when petsc4py is installed), prints a table and writes a
plot of the permeability, the pressure and the convergence histories.
"""

from __future__ import annotations

import argparse

import numpy as np

from femno.fem import get_family
from femno.solvers import krylov


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128, help="cells per side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="darcy_solvers.png", help="output PNG ('' for none)")
    args = p.parse_args(argv)

    family = get_family("darcy", n=args.n)
    system = family.assemble(family.sample(np.random.default_rng(args.seed)))
    print(f"Darcy, {system.dofs} unknowns")
    runs = {
        "CG": krylov("cg", rtol=1e-8, on_fail="warn"),
        "IC(0)-PCG": krylov("cg", pc="ic", rtol=1e-8),
        "SA-AMG-PCG": krylov("cg", pc="amg", rtol=1e-8),
    }
    try:
        import petsc4py  # noqa: F401

        runs["PETSc BoomerAMG-PCG"] = krylov("cg", pc="hypre", backend="petsc", rtol=1e-8)
    except ImportError:
        pass
    x = None
    for name, solver in runs.items():
        x = solver(system.A, system.b)
        print(f"  {name:<22} {solver.stats.summary()}")
    if not args.out:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    u = system.expand(x)
    mesh = system.basis.mesh
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    # params["a"]: permeability at the quadrature points, shape (n_elements, n_qp)
    log_a = np.log(np.asarray(system.params["a"])).reshape(mesh.t.shape[1], -1).mean(axis=1)
    c = ax[0].tripcolor(mesh.p[0], mesh.p[1], mesh.t.T, facecolors=log_a, cmap="magma")
    fig.colorbar(c, ax=ax[0])
    ax[0].set_title("log permeability")
    c = ax[1].tripcolor(mesh.p[0], mesh.p[1], mesh.t.T, u[system.basis.nodal_dofs[0]], shading="gouraud")
    fig.colorbar(c, ax=ax[1])
    ax[1].set_title("pressure u")
    for name, solver in runs.items():
        ax[2].semilogy(solver.stats.residuals, label=f"{name} ({solver.stats.iterations} it)")
    ax[2].set_xlabel("iteration")
    ax[2].set_ylabel("||b - A x|| / ||b||")
    ax[2].legend()
    ax[2].grid(True, which="both", alpha=0.3)
    for a in ax[:2]:
        a.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
