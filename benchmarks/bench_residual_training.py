r"""Solver-in-the-loop training: a SPON trained with the FE-residual loss (issue 18, item 4b).

Darcy on an ``n`` x ``n`` mesh, ``--samples`` parameters (80 % train, 20 % held out),
one SPON architecture, one seed, the same initial weights and the same number of
Adam epochs for

1. ``supervised``: the existing loss (mean relative L2 error in the mass norm against
   the FE solution), all training labels;
2. ``residual``: :class:`femno.hybrid.residual_loss.ResidualLoss` only (relative
   residual :math:`\|A(a)\hat u - b\|_{K_0^{-1}} / \|b\|_{K_0^{-1}}`, no solution labels;
   the output scale is that of the solution of the mean-coefficient problem, one
   label-free solve);
3. ``hybrid``: residual loss on all + data loss on ``--labelled`` (10 %) of the
   training samples.

No validation-based model selection (the residual run has no labels): the final
weights are evaluated.  Reported on the held-out samples: relative L2 error (mass
norm) against the FE solution, the relative dual-norm and Euclidean residuals, and
the training seconds.  Writes ``benchmarks/results/residual-training.{json,md}``::

    OMP_NUM_THREADS=1 python benchmarks/bench_residual_training.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as spla
import torch

HERE = Path(__file__).resolve().parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--labelled", type=float, default=0.1)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "residual-training"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from femno.fem import Darcy
    from femno.hybrid.residual_loss import ResidualLoss
    from femno.operators.fe_data import FEData, rel_l2
    from femno.operators.spon import make_spon
    from femno.operators.surrogate import model_forward
    from femno.operators.training import fit

    t0 = time.perf_counter()
    fam = Darcy(n=args.n, length=0.2)
    rng = np.random.default_rng(args.seed)
    params = [fam.sample(rng) for _ in range(args.samples)]
    systems = [fam.assemble(q) for q in params]
    sols = np.stack([s.expand(spla.spsolve(s.A.tocsc(), s.b)) for s in systems])
    data = FEData.from_family(fam, params, solutions=sols)
    a = torch.as_tensor(np.stack([q["a"] for q in params]))
    b = torch.as_tensor(np.stack([s.b for s in systems]))
    res = ResidualLoss.from_family(fam)                      # dual norm, K0 = A(1)
    res_l2 = ResidualLoss.from_family(fam, norm="l2")
    V = res.matrix_values(a).detach()                        # (S, nnz), once
    t_data = time.perf_counter() - t0

    tr_idx, te_idx = data.split_indices((0.8, 0.2), seed=args.seed)
    train, test = data.subset(tr_idx), data.subset(te_idx)
    n_lab = max(1, int(round(args.labelled * len(tr_idx))))
    lab = np.zeros(len(tr_idx), bool)
    lab[np.random.default_rng(args.seed + 1).permutation(len(tr_idx))[:n_lab]] = True
    M = train.mass_torch(dtype=torch.float64)
    # label-free output scale: the solution of the geometric-mean-coefficient problem
    abar = float(torch.exp(torch.log(a[tr_idx]).mean()))
    u_ref = systems[0].expand(spla.spsolve(res.asm.scipy([abar]).tocsc(), systems[0].b))
    free = torch.as_tensor(fam.free_dofs())

    ds = torch.utils.data.TensorDataset(train.X, train.lift, train.Y,
                                        torch.as_tensor(tr_idx), torch.as_tensor(lab))

    def data_loss(u, Y):
        return rel_l2(u, Y, M).mean()

    def residual_loss(u, idx):
        return res(u[:, free], b[idx], values=V[idx])

    def loss_for(kind):
        def loss_fn(m, batch):
            X, L, Y, idx, is_lab = batch
            u = model_forward(m, X, L)
            if kind == "supervised":
                return data_loss(u, Y)
            loss = residual_loss(u, idx)
            if kind == "hybrid" and bool(is_lab.any()):
                loss = loss + data_loss(u[is_lab], Y[is_lab])
            return loss
        return loss_fn

    def evaluate(model):
        with torch.no_grad():
            u = model.predict(test)
        idx = torch.as_tensor(te_idx)
        return {"rel_l2": float(test.rel_l2(u).mean()),
                "rel_l2_max": float(test.rel_l2(u).max()),
                "residual_dual": float(res.relative(u[:, free], b[idx], values=V[idx]).mean()),
                "residual_l2": float(res_l2.relative(u[:, free], b[idx], values=V[idx]).mean())}

    rows = {}
    for kind in ("supervised", "residual", "hybrid"):
        model = make_spon("spon", train, width=args.width, layers=args.layers, seed=args.seed)
        if kind == "residual":      # no labels: scale from the mean-coefficient solution
            model.fit_normalization(train.X, torch.as_tensor(u_ref)[None])
        elif kind == "hybrid":      # the labelled 10 % only
            model.fit_normalization(train.X, train.Y[torch.as_tensor(lab)])
        r = fit(model, loss_for(kind), ds, epochs=args.epochs, batch_size=16, lr=2e-3,
                seed=args.seed, device="cpu", progress=False)
        ev = evaluate(model)
        ev.update(train_seconds=r.seconds, final_loss=r.history[-1]["loss"],
                  labels=len(tr_idx) if kind == "supervised" else (0 if kind == "residual"
                                                                     else n_lab))
        rows[kind] = ev
        print(kind, {k: (round(v, 5) if isinstance(v, float) else v) for k, v in ev.items()},
              flush=True)

    exact = torch.as_tensor(sols[te_idx])
    idx = torch.as_tensor(te_idx)
    fe_res = float(res.relative(exact[:, free], b[idx], values=V[idx]).max())
    out = {"settings": vars(args) | {"n_train": len(tr_idx), "n_test": len(te_idx),
                                     "n_free": res.n_free, "arch": "spon", "lr": 2e-3,
                                     "batch_size": 16},
           "fe_solution_residual_dual_max": fe_res, "data_seconds": t_data,
           "results": rows, "platform": platform.platform(), "torch": torch.__version__,
           "total_seconds": time.perf_counter() - t0}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2))
    lines = [f"# Residual-loss training (Darcy n={args.n}, {res.n_free} free dofs, "
             f"{len(tr_idx)} train / {len(te_idx)} held out, SPON w{args.width} "
             f"l{args.layers}, {args.epochs} epochs, seed {args.seed}, 1 CPU thread)", "",
             "| training | labels | rel. L2 error | max | rel. residual (K0^-1) | "
             "rel. residual (l2) | train s |", "|---|---|---|---|---|---|---|"]
    for kind, ev in rows.items():
        lines.append(f"| {kind} | {ev['labels']} | {ev['rel_l2']:.4f} | {ev['rel_l2_max']:.4f} "
                     f"| {ev['residual_dual']:.4f} | {ev['residual_l2']:.4f} | "
                     f"{ev['train_seconds']:.1f} |")
    lines += ["", f"FE solution's relative residual (max): {fe_res:.1e}."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
