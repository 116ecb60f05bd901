"""Demo: periodic RVE -> FE snapshots -> physics-informed EquiNO -> stress field and tangent.

Run ``python demos/rve_equino.py [--rve RVE3] [--samples 12] [--epochs 300]
[--out rve_equino.png]`` (2-4 minutes on one CPU core).  It

1. solves the RVE at one macro strain with the periodic FE solver (Newton residuals,
   homogenized stress, condensed macro tangent);
2. computes a few FE snapshots at Latin-hypercube strains in [-0.04, 0.04]^3;
3. trains EquiNO (POD bases + two MLPs, physics-informed loss, Adam then L-BFGS);
4. compares EquiNO's homogenized stress and autodiff tangent with the FE ones at the
   first strain, and plots the integration-point stress sigma_xx of both (matplotlib,
   optional).

Use ``femno rve snapshots`` / ``femno train equino`` / ``femno rve evaluate`` for the full
workflow (see ``benchmarks/bench_equino.py`` for the published 100/100 setup).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from femno.multiscale.rve_solver import RVESolver
from femno.multiscale.snapshots import lhs_strains
from femno.operators.equino_train import relative_errors, train_equino


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rve", default="RVE3", help="RVE1, RVE2, RVE3 or a file prefix")
    p.add_argument("--samples", type=int, default=16, help="FE snapshots")
    p.add_argument("--modes", type=int, default=8, help="POD modes")
    p.add_argument("--epochs", type=int, default=300, help="Adam epochs")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--lbfgs-iters", type=int, default=150)
    p.add_argument("--loss", default="compliance", choices=("stress", "compliance"),
                   help="physics residual norm (default compliance; 'stress' is the published one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="rve_equino.png", help="output PNG ('' for none)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    solver = RVESolver(args.rve)
    e0 = np.array([0.01, -0.005, 0.01])
    res = solver.solve(e0)
    print(f"{solver.rve.name}: {solver.rve.n_elements} Q8 elements, {solver.n_red} periodic dofs")
    print(f"FE solve at strain {e0.tolist()}: {res.newton_iterations} Newton iterations, "
          f"{res.seconds:.2f} s, residuals " + " ".join(f"{r:.1e}" for r in res.residual_norms))

    t = time.perf_counter()
    E = np.vstack([e0, lhs_strains(args.samples - 1, seed=args.seed)])
    snaps = [res] + [solver.solve(e, tangent=False) for e in E[1:]]
    print(f"{args.samples} FE snapshots in {time.perf_counter() - t:.1f} s")
    data = {"rve": solver.rve, "strain": E, "settings": {"bound": 0.04},
            "fluctuation": np.stack([s.fluctuation for s in snaps]),
            "stress_ip": np.stack([s.stress_ip for s in snaps]),
            "stress": np.stack([s.stress for s in snaps])}
    out = train_equino(data, modes=args.modes, epochs=args.epochs, lbfgs_iters=args.lbfgs_iters,
                       lr=args.lr, seed=args.seed, device="cpu", progress=False,
                       loss=args.loss)
    model = out["model"]
    print(f"EquiNO ({args.loss} loss) trained in {out['train_seconds']:.1f} s: physics loss "
          f"{out['initial_loss']:.3e} -> {out['final_loss']:.3e}")
    errs = relative_errors(model, data)
    print("median relative L2 errors on the training snapshots (%): "
          + ", ".join(f"{k} {np.median(v):.2f}" for k, v in errs.items()))
    s, C = model.stress_and_tangent(e0)
    np.set_printoptions(precision=1, suppress=True)
    print("homogenized stress  FE:", res.stress, " EquiNO:", s[0])
    print("macro tangent FE:\n", res.tangent, "\nEquiNO (autodiff):\n", C[0])

    if args.out:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not installed: no plot")
            return 0
        f = model.fields(e0)
        x = solver.x_ip.reshape(-1, 2)
        fig, ax = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
        lim = (res.stress_ip[:, 0].min(), res.stress_ip[:, 0].max())
        for a, val, title in ((ax[0], res.stress_ip[:, 0], "FE"), (ax[1], f["stress_ip"][0, :, 0], "EquiNO")):
            sc = a.scatter(x[:, 0], x[:, 1], c=val, s=2, vmin=lim[0], vmax=lim[1], cmap="viridis")
            a.set_aspect("equal")
            a.set_title(f"{title}: sigma_xx at the integration points")
        fig.colorbar(sc, ax=ax, shrink=0.8, label="MPa")
        fig.suptitle(f"{solver.rve.name}, macro strain {e0.tolist()}")
        fig.savefig(args.out, dpi=120)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
