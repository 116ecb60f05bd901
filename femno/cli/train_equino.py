"""``femno train equino``: fit an EquiNO surrogate of an RVE from FE snapshots."""

from __future__ import annotations

import argparse

from femno.cli._output import print_json, print_table

EPILOG = """\
The POD bases (r modes, plain SVD) come from the snapshots' fluctuation and
integration-point stress; the two MLPs are trained with the physics-informed
constitutive loss only (no stress labels), Adam then L-BFGS, float64.  Training
strains: the snapshot strains plus --collocation extra Latin-hypercube strains.

--init lm (recommended; see benchmarks/results/equino.md): first solve the same
physics loss per training strain to convergence (Levenberg-Marquardt on the r
displacement coefficients, the stress coefficients eliminated; ~0.2 s per strain for
RVE3 on one core, no FE solve), fit the networks to those coefficients (supervised,
--fit-epochs Adam + --fit-lbfgs-iters L-BFGS), then optionally the physics phase
(--epochs, --lbfgs-iters; default 0 0: it did not help on RVE3).  Use many
--collocation strains with it (e.g. 1000; ~0.2 s each for RVE3 on one core).

For FE2 (macro problems mostly see small strains) add --zero-origin (zero stress at
zero strain, exactly), --collocation-small 300 (strains at 1-50 % of the box) and
--fit-weighting relative (every strain's relative error counts alike): on RVE1 this
took the force-displacement difference against full FE2 from 1.03 % to below 0.5 %
(benchmarks/results/fe2.md).

examples:
  femno rve snapshots --rve RVE1 --samples 100 --out /tmp/rve1-train
  femno train equino --rve RVE1 --snapshots /tmp/rve1-train --out /tmp/rve1.pt --device cuda
  femno train equino --rve RVE3 --snapshots /tmp/rve3-train --out /tmp/rve3-lm.pt \\
      --init lm --collocation 1000
  femno train equino --rve RVE1 --snapshots /tmp/rve1-train --out /tmp/rve1-fe2.pt \\
      --init lm --collocation 1000 --collocation-small 300 --fit-weighting relative \\
      --zero-origin --fit-lbfgs-iters 20000
"""


def add_parser(sub) -> None:
    p = sub.add_parser("equino", help="physics-informed POD operator of an RVE (EquiNO)",
                       description="Train EquiNO on RVE snapshots (femno rve snapshots).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rve", help="expected RVE name (checked against the snapshots)")
    p.add_argument("--snapshots", required=True, metavar="PATH", help="snapshot dataset")
    p.add_argument("--allow-partial", action="store_true",
                   help="train on the finished samples of an incomplete snapshot dataset "
                   "(default: refuse it)")
    p.add_argument("--out", required=True, metavar="MODEL", help="output model file (.pt)")
    p.add_argument("--modes", type=int, default=16, help="POD modes per field (16)")
    p.add_argument("--epochs", type=int, default=None,
                   help="Adam epochs of the physics loss (3000; 0 with --init lm)")
    p.add_argument("--lbfgs-iters", type=int, default=None,
                   help="L-BFGS iterations of the physics loss (1000; 0 with --init lm)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    p.add_argument("--batch-size", type=int, default=None, help="strains per batch (all)")
    p.add_argument("--collocation", type=int, default=0,
                   help="extra Latin-hypercube training strains (default 0)")
    p.add_argument("--loss", default="stress", choices=("stress", "compliance"),
                   help="residual norm: 'stress' (published, default) or 'compliance' "
                   "(weighted by each material's inverse elastic tangent; see "
                   "benchmarks/results/equino-compliance.md)")
    p.add_argument("--init", default="random", choices=("random", "lm"),
                   help="network initialization: 'random' (published) or 'lm' (fit to "
                   "per-strain Levenberg-Marquardt minimizers of the physics loss; see below)")
    p.add_argument("--lm-iters", type=int, default=40, help="LM iterations per strain (40)")
    p.add_argument("--fit-epochs", type=int, default=500,
                   help="--init lm: Adam epochs of the coefficient fit (500)")
    p.add_argument("--fit-lbfgs-iters", type=int, default=10000,
                   help="--init lm: L-BFGS iterations of the coefficient fit (10000; RVE1 and RVE3 improve on every field over 4000)")
    p.add_argument("--collocation-small", type=int, default=0,
                   help="further collocation strains with log-uniform magnitudes between 1%% "
                   "and 50%% of the box: the small strains a macro problem mostly sees (0)")
    p.add_argument("--fit-weighting", default="absolute", choices=("absolute", "relative"),
                   help="--init lm: weigh each strain's coefficient-fit error absolutely or "
                   "relative to its own size (the accuracy metric; needs --zero-origin to "
                   "pay at small strains)")
    p.add_argument("--zero-origin", action="store_true",
                   help="networks output net(x) - net(0): zero stress at zero strain, exactly")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from MODEL.state")
    p.add_argument("--json", action="store_true", help="print one JSON summary, no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from femno.datagen.store import require_complete
    from femno.operators.equino_train import train_equino

    require_complete(args.snapshots, allow_partial=args.allow_partial)

    res = train_equino(args.snapshots, out=args.out, modes=args.modes, epochs=args.epochs,
                       lbfgs_iters=args.lbfgs_iters, lr=args.lr, batch_size=args.batch_size,
                       collocation=args.collocation, seed=args.seed, device=args.device,
                       progress=not args.json, expect_rve=args.rve,
                       loss=args.loss, resume=args.resume, init=args.init,
                       lm_iters=args.lm_iters, fit_epochs=args.fit_epochs,
                       fit_lbfgs_iters=args.fit_lbfgs_iters,
                       collocation_small=args.collocation_small,
                       fit_weighting=args.fit_weighting, zero_origin=args.zero_origin)
    if args.json:
        print_json(res)
    else:
        print_table([(k, v) for k, v in res.items() if not isinstance(v, (list, dict))],
                    title="femno train equino")
    return 0
