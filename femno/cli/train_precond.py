"""``femno train precond``: train a learned preconditioner on a problem family."""

from __future__ import annotations

import argparse

from femno.cli._output import print_json, print_table

EPILOG = """\
kinds:
  dcdm  CNN direction network for the deep conjugate direction method, selected by
        DCDM iterations (Python: krylov("dcdm", pc="neural:MODEL"))
  fcg   the same CNN selected by flexible-CG iterations
        (femno solve FAMILY --solver fcg --pc neural:MODEL)
  Both train on the relative A-norm error of the preconditioned residual by default
  (--loss dcdm: the DCDM paper's residual loss).
  spd   learned IC(0)-pattern factor L, M = L L^T SPD: plain CG
        (femno solve FAMILY --solver cg --pc neural:MODEL)
  amg   learned smoothed aggregation: a graph network sets the prolongation damping
        of every level of pyamg's SA hierarchy (any mesh, no grid assumed); trained on
        the two-grid rate on jittered Delaunay meshes (squares and disks) of --n cells
        per side (default 12 16 24 32); an SA V-cycle: plain CG
        (krylov("cg", pc="neural:MODEL")); about 1 minute on 2 cores

Training needs no solutions: right-hand sides are combinations of the smallest
Ritz vectors of the family's matrices, CG residuals and noise.  The CNN is fully
convolutional with weight-shared coarse levels: train at small --n (several sizes
help it generalise), use at any size of a structured P1/Q1 grid.
--smooth-levels K replaces the K finest levels by Jacobi two-grid steps on Galerkin
operators (the network runs on a 4^K times smaller grid; 3.8x cheaper at 512^2 for
K=2).  A model trained with K=0 can be used with K>0 without retraining
(NeuralPreconditioner(model, smooth_levels=K)); --init fine-tunes from a model.

examples:
  femno train precond --family darcy --n 16 32 64 --epochs 40 --samples 4 --per-system 16 --out darcy_cnn.pt
  femno train precond --family poisson --n 32 --kind fcg --epochs 40 --out pois.pt --json
  femno solve darcy --n 256 --solver fcg --pc neural:darcy_fcg.pt
  femno train precond --family darcy --kind amg --out darcy_sa.pt
  femno train precond --family darcy --kind amg --strength --out darcy_sa_strength.pt
  femno train precond --family darcy --n 32 64 128 --kind fcg --smooth-levels 2 --init darcy_cnn.pt --lr 1e-3 --out darcy_k2.pt
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "precond", help="train a learned preconditioner (DCDM, neural FCG, SPD factor)",
        description="Train a learned preconditioner from a parametric PDE family without "
        "labels and save it in femno's model format.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="darcy", help="SPD family (default darcy)")
    p.add_argument("--n", type=int, nargs="+", default=None,
                   help="training grid size(s), cells per side (default 16 32 64; "
                   "--kind amg: 12 16 24 32)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt)")
    p.add_argument("--kind", choices=("dcdm", "fcg", "spd", "amg"), default="dcdm",
                   help="objective / model (default dcdm)")
    p.add_argument("--net", choices=("cnn", "gnn"), default="cnn",
                   help="residual network: cnn (structured grid) or gnn (any mesh)")
    p.add_argument("--strength", action="store_true",
                   help="--kind amg: also learn the strength of connection that forms the "
                   "aggregates (a tuned classical threshold, then an evolution strategy on "
                   "PCG work; femno.operators.precond_strength)")
    p.add_argument("--strength-n", type=int, nargs="+", default=[48, 64],
                   help="--strength: training mesh sizes, cells per side (default 48 64)")
    p.add_argument("--strength-iterations", type=int, default=15,
                   help="--strength: evolution-strategy iterations (default 15)")
    p.add_argument("--strength-max-complexity", type=float, default=None, metavar="R",
                   help="--strength: penalise operator complexity above R x that of "
                   "pyamg's default strength (e.g. 1.03); default: no cap")
    p.add_argument("--epochs", type=int, default=None,
                   help="Adam epochs (default 60; --kind amg: 40)")
    p.add_argument("--samples", type=int, default=None,
                   help="sampled matrices per grid size (default 8; --kind amg: 2)")
    p.add_argument("--per-system", type=int, default=32,
                   help="training vectors per matrix (default 32)")
    p.add_argument("--channels", type=int, default=8, help="CNN channels (default 8)")
    p.add_argument("--loss", choices=("anorm", "dcdm"), default="anorm",
                   help="objective: relative A-norm error (default) or the DCDM paper's "
                   "residual loss (measured worse)")
    p.add_argument("--act", choices=("linear", "leaky"), default="linear",
                   help="activation of the residual network (default linear: fewer "
                   "iterations measured; leaky: a nonlinear network)")
    p.add_argument("--smooth-levels", type=int, default=0, metavar="K",
                   help="CNN: the K finest levels are Jacobi two-grid steps, the network "
                   "runs from level K down (default 0; 2 is 2-4x cheaper per application "
                   "at 512^2, see MGCNN); also an inference option of NeuralPreconditioner")
    p.add_argument("--init", metavar="MODEL", default=None,
                   help="start from this model's weights (fine-tuning, e.g. with another "
                   "--smooth-levels); same kind and --channels")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="family option, e.g. -o length=0.1 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print one JSON summary, no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from femno.errors import InputError

    amg = args.kind == "amg"
    args.n = args.n or ([12, 16, 24, 32] if amg else [16, 32, 64])
    args.epochs = args.epochs or (40 if amg else 60)
    args.samples = args.samples or (2 if amg else 8)
    for name in ("epochs", "samples", "per_system", "channels"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if args.smooth_levels < 0:
        raise InputError("--smooth-levels must be >= 0")
    if any(v < 2 for v in args.n):
        raise InputError("--n must be >= 2")
    torch.manual_seed(args.seed)
    if amg:
        meta = _train_amg(args)
        title = "femno train precond --kind amg"
    else:
        meta = _train_net(args)
        title = "femno train precond"
    summary = {"out": args.out, **meta}
    if args.json:
        print_json(summary)
    else:
        print_table(summary.items(), title=title)
    return 0


def _train_net(args) -> dict:
    """The residual networks and the SPD factor (``--kind dcdm|fcg|spd``)."""
    from femno.cli.solve import parse_key_values
    from femno.operators.precond_train import train_precond

    _, _result, meta = train_precond(
        args.family, n=args.n, kind=args.kind, net=args.net, epochs=args.epochs,
        systems=args.samples, per_system=args.per_system, channels=args.channels, act=args.act, loss=args.loss,
        lr=args.lr, smooth_levels=args.smooth_levels, init=args.init,
        seed=args.seed, device=args.device,
        family_options=parse_key_values(args.option, what="option"),
        progress=not args.json, out=args.out)
    return meta


def _train_amg(args) -> dict:
    """``--kind amg``: learned smoothed aggregation on unstructured meshes."""
    from femno.cli.solve import parse_key_values
    from femno.operators.checkpoint import save_model
    from femno.operators.precond_amg import train_learned_sa, unstructured_family_matrices

    opts = parse_key_values(args.option, what="option")
    train = unstructured_family_matrices(args.family, sizes=args.n, samples=args.samples,
                                         seed=args.seed, options=opts)
    held = unstructured_family_matrices(args.family, sizes=(2 * max(args.n),), samples=2,
                                        seed=args.seed + 1000, options=opts)
    head, strength = None, None
    if args.strength:  # the aggregation's strength first (its own larger meshes), by ES
        from femno.operators.precond_strength_train import train_strength

        smats = unstructured_family_matrices(args.family, sizes=args.strength_n, samples=2,
                                             seed=args.seed + 500, options=opts)
        head, sh = train_strength(smats, iterations=args.strength_iterations, seed=args.seed,
                                  max_complexity=args.strength_max_complexity,
                                  progress=not args.json)
        strength = {"n": list(args.strength_n), "theta_tuned": sh["theta"],
                    "work_theta0": 1.0, "work_tuned": round(sh["work_tuned"], 4),
                    "work_learned": round(sh["work_learned"], 4),
                    "max_complexity": args.strength_max_complexity,
                    "seconds": round(sh["seconds"], 1)}
    model, hist = train_learned_sa(train, validation=held, epochs=args.epochs, lr=args.lr,
                                   seed=args.seed, progress=not args.json,
                                   strength_head=head)
    meta = {"family": args.family, "kind": "amg", "n": list(args.n), "samples": args.samples,
            "epochs": args.epochs, "training_levels": hist["items"],
            "two_grid_rate_classical": round(hist["rate_classical"], 4),
            "two_grid_rate_learned": round(hist["rate_learned"], 4),
            "held_out": hist["validation"]}
    if strength is not None:
        meta["strength"] = strength
    save_model(model, args.out, meta=meta)
    return meta
