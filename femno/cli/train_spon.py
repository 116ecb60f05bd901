"""``femno train spon``: train a structure-preserving operator network on a dataset."""

from __future__ import annotations

import argparse

#: Global layers and position features of a new model (``--global-rank``,
#: ``--input-rank``, ``--fourier``, ``--input-skip``; also ``benchmarks/bench_spon.py``'s
#: defaults).  On Poisson (n=16, 700 training samples, ~300 s CPU) the first three take
#: spon-mg from 8.3 % to 2.8 % test error; the input skip then 4.3 % -> 3.0 % at 10
#: epochs (benchmarks/results/spon-ablation.md).  The model classes default to off so
#: that older checkpoints load unchanged.
SPON_RECIPE = {"global_rank": 32, "input_rank": 32, "fourier": 4, "input_skip": True}

EPILOG = """\
The dataset is one written by `femno generate`.  Inputs are encoded in an FE space on
the dataset's mesh (--encode l2: L2 projection, interp: lumped quasi-interpolation);
the network predicts the interior dofs and the Dirichlet data are copied exactly.
Loss and reported errors: relative L2 error in the FE mass-matrix norm.  A training
state is written to MODEL.state after every epoch; --resume continues it.  The saved
model applies to other meshes of the same family (femno.operators.spon: model.bind).

examples:
  femno generate darcy --n 32 --samples 200 --out darcy.femno
  femno train spon --data darcy.femno --out darcy-spon.pt --epochs 100
  femno train spon --data darcy.femno --out darcy-mg.pt --arch spon-mg --json
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "spon", help="train a structure-preserving operator network (SPON) on a dataset",
        description="Train SPON (message passing on the FE dofs, exact Dirichlet data) or "
        "its multigrid variant on a femno dataset.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DATASET", help="dataset directory")
    p.add_argument("--allow-partial", action="store_true",
                   help="train on the finished samples of an incomplete dataset (default: "
                   "refuse it)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt)")
    p.add_argument("--arch", default="spon", choices=("spon", "spon-mg"),
                   help="plain SPON or the multigrid variant (default spon)")
    p.add_argument("--inputs", nargs="+", metavar="NAME",
                   help="input fields to use (names under inputs/; default all)")
    p.add_argument("--encode", default="l2", choices=("l2", "interp"),
                   help="input encoding (default l2)")
    p.add_argument("--epochs", type=int, default=100, help="Adam epochs (default 100)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (default 2e-3)")
    p.add_argument("--width", type=int, default=64, help="hidden width (default 64)")
    p.add_argument("--layers", type=int, default=6,
                   help="message-passing layers (coarse layers for spon-mg; default 6)")
    p.add_argument("--fine-layers", type=int, default=2,
                   help="spon-mg: fine layers before and after the coarse level (default 2)")
    p.add_argument("--levels", type=int, default=None,
                   help="spon-mg: fixed number of coarse levels of the V-cycle (about 3.5x "
                   "fewer nodes each; default: per mesh, down to about --coarsest nodes)")
    p.add_argument("--coarsest", type=int, default=64,
                   help="spon-mg: target node count of the coarsest level (default 64)")
    p.add_argument("--global-rank", type=int, default=SPON_RECIPE["global_rank"], metavar="R",
                   help="add a global low-rank kernel-integral layer (GlobalMix, rank R) after "
                   "each heavy message-passing layer: the whole mesh in one step, weighted "
                   "by the lumped FE mass (default %(default)s; 0: off)")
    p.add_argument("--input-rank", type=int, default=SPON_RECIPE["input_rank"], metavar="R",
                   help="add a rank-R integral of the input (InputKernel, linear in the input, "
                   "lumped-mass quadrature) to the encoded features (default %(default)s; 0: off)")
    p.add_argument("--input-skip", action=argparse.BooleanOptionalAction, default=None,
                   help="also add the input integral to the output through a linear map: a "
                   "path linear end to end, the form of a linear PDE's solution operator "
                   "(needs --input-rank > 0; default: on when --input-rank > 0)")
    p.add_argument("--fourier", type=int, default=SPON_RECIPE["fourier"], metavar="K",
                   help="add sin/cos(j pi x) of the box-scaled dof position, j = 1..K, to the "
                   "node features (default %(default)s; 0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed (split, weights, shuffling)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out fraction for validation (default 0.1)")
    p.add_argument("--resume", action="store_true", help="continue from MODEL.state")
    p.add_argument("--json", action="store_true", help="print one JSON summary, no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from femno.datagen.store import require_complete

    require_complete(args.data, allow_partial=args.allow_partial)
    from femno.cli._output import print_json, print_table
    from femno.operators.fe_data import FEData
    from femno.operators.spon_train import train_spon

    data = FEData.from_dataset(args.data, inputs=args.inputs, encode=args.encode)
    opts = ({"fine_layers": args.fine_layers, "levels": args.levels, "coarsest": args.coarsest}
            if args.arch == "spon-mg" else {})
    opts.update({k: v for k, v in (("global_rank", args.global_rank),
                                    ("input_rank", args.input_rank),
                                    ("fourier", args.fourier),
                                    ("input_skip", args.input_skip)) if v})
    if args.input_skip is None and args.input_rank > 0:
        opts["input_skip"] = SPON_RECIPE["input_skip"]
    _, summary = train_spon(
        data, arch=args.arch, width=args.width, layers=args.layers, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        val_fraction=args.val_fraction, out=args.out, resume=args.resume,
        progress=not args.json, model_options=opts)
    if args.json:
        print_json(summary)
        return 0
    val = summary["val"] or {}
    print_table([("model", summary["out"]), ("arch", summary["arch"]),
                 ("family", summary["family"]), ("samples (train/val)",
                 f"{summary['train_samples']}/{summary['val_samples']}"),
                 ("epochs", summary["epochs"]), ("seconds", summary["seconds"]),
                 ("train rel L2 (mean)", summary["train"]["rel_l2_mean"]),
                 ("val rel L2 (mean)", val.get("rel_l2_mean", float("nan"))),
                 ("boundary error", summary["boundary_error"])],
                title="femno train spon")
    return 0
