"""Demo: train a learned preconditioner on small Darcy grids, use it on larger ones.

Run ``python demos/neural_precond.py [--train 16 32] [--sizes 64 128] [--epochs 20]``
(about two minutes on one CPU core; ``--model FILE`` reuses a trained model).

1. Trains a multilevel CNN (``femno.operators.precond_nets.MGCNN``) without labels:
   training vectors are Ritz vectors of Darcy matrices, CG residuals and noise, the
   loss the relative A-norm error of the preconditioned residual.
2. Solves Darcy problems on grids larger than the training grids, with coefficient
   fields it never saw, to rtol 1e-8 with: CG, IC(0)-PCG, SA-AMG-PCG, DCDM with the
   network's directions and flexible CG with the network as preconditioner (also
   below two Jacobi two-grid levels, ``smooth_levels=2``: the network runs on a 16x
   smaller grid), and prints iterations and setup/solve seconds.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from femno.fem import get_family
from femno.operators.checkpoint import load_model
from femno.operators.precond_train import train_precond
from femno.solvers import krylov
from femno.solvers.neural import NeuralPreconditioner


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, nargs="+", default=[16, 32], help="training grids")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="test grids")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--model", help="use this trained model instead of training")
    p.add_argument("--out", help="save the trained model here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    if args.model:
        model = load_model(args.model)
    else:
        print(f"training on Darcy grids {args.train} ({args.epochs} epochs) ...", flush=True)
        model, result, meta = train_precond("darcy", n=args.train, kind="fcg",
                                            epochs=args.epochs, systems=3, per_system=16,
                                            seed=args.seed, device="cpu", out=args.out,
                                            progress=False)
        print(f"  loss {result.history[0]['loss']:.3f} -> {result.history[-1]['loss']:.3f}, "
              f"{result.seconds:.0f} s")
    print(f"\n{'n':>5} {'unknowns':>9}  {'method':<18} {'iters':>6} {'setup s':>8} "
          f"{'solve s':>8}  status")
    for n in args.sizes:
        fam = get_family("darcy", n=n)
        system = fam.assemble(fam.sample(np.random.default_rng(10_000 + args.seed)))
        runs = {
            "CG": krylov("cg", rtol=1e-8, on_fail="ignore"),
            "IC(0)-PCG": krylov("cg", pc="ic", rtol=1e-8, on_fail="ignore"),
            "SA-AMG-PCG": krylov("cg", pc="amg", rtol=1e-8, on_fail="ignore"),
            "DCDM (CNN)": krylov("dcdm", pc=NeuralPreconditioner(model), rtol=1e-8,
                                 on_fail="ignore"),
            "FCG(30) + CNN": krylov("fcg", pc=NeuralPreconditioner(model), mmax=30, rtol=1e-8,
                                    maxiter=500, on_fail="ignore"),  # no safeguard: cap it
            # the same network below two Jacobi two-grid levels: 2-4x cheaper at 512^2
            "FCG(30) + CNN, k=2": krylov("fcg", pc=NeuralPreconditioner(model, smooth_levels=2),
                                         mmax=30, rtol=1e-8, maxiter=500, on_fail="ignore"),
        }
        for label, solver in runs.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                solver(system.A, system.b)
            st = solver.stats
            state = "converged" if st.converged else f"NOT converged ({st.reason})"
            print(f"{n:>5} {system.dofs:>9}  {label:<18} {st.iterations:>6} {st.setup_s:>8.3f} "
                  f"{st.solve_s:>8.3f}  {state}", flush=True)


if __name__ == "__main__":
    main()
