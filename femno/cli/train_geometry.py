"""``femno train geometry``: a surrogate trained across domains (one mesh per sample)."""

from __future__ import annotations

import argparse

EPILOG = """\
The dataset is one written by `femno generate PROBLEM --geometry` (a domain and mesh
per sample). Two models, trained in the same time budget:
  spon-mg       SPON-MG with geometry features: coefficient and signed distance at the
                vertices, absolute positions and edge vectors; exact Dirichlet data.
  sdf-deeponet  DeepONet with a signed-distance trunk; the output vanishes on the
                boundary.
The model records what it was trained on (shapes, mesh sizes, coefficient range, box);
`femno eval` warns where new data lies outside it.

examples:
  femno generate darcy --geometry --shapes disk lshape holes --samples 200 --out train.femno
  femno generate darcy --geometry --shapes tshape --samples 40 --out test.femno
  femno train geometry --data train.femno --arch spon-mg --minutes 5 --out geo.pt
  femno train geometry --data train.femno --arch spon-mg --minutes 5 --out geo.pt --resume
                (after an interruption: continues from geo.pt.state)
  femno eval --model geo.pt --data test.femno --plot test.png
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "geometry", help="train a surrogate across geometries (SPON-MG or SDF-DeepONet)",
        description="Train a geometry-aware operator model on a geometry dataset within a "
        "time budget (cosine schedule over the budget) and save it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DATASET", help="geometry dataset")
    p.add_argument("--allow-partial", action="store_true",
                   help="train on the finished samples of an incomplete dataset")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt)")
    p.add_argument("--arch", default="spon-mg", choices=("spon-mg", "sdf-deeponet"),
                   help="model (default spon-mg)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="training time budget in minutes (default 5)")
    p.add_argument("--width", type=int, default=None,
                   help="hidden width (default 32 for spon-mg, 128 for sdf-deeponet)")
    p.add_argument("--no-geometry-features", action="store_true",
                   help="spon-mg ablation: coefficient only, per-mesh positions and edges")
    p.add_argument("--seed", type=int, default=0, help="seed (weights, shuffling)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from MODEL.state (written during "
                   "training); the time it had spent counts against --minutes")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from femno.cli._output import print_json, print_table
    from femno.datagen.store import require_complete
    from femno.errors import InputError
    from femno.operators.geometry_surrogate import train_geometry_model

    if args.width is not None and args.width < 1:
        raise InputError("--width must be >= 1")
    require_complete(args.data, allow_partial=args.allow_partial)

    def log(msg):
        if not args.json:
            print(msg, file=sys.stderr)

    _, summary = train_geometry_model(
        args.data, arch=args.arch, out=args.out, minutes=args.minutes, seed=args.seed,
        width=args.width, geometry_features=not args.no_geometry_features, log=log,
        resume=args.resume)
    if args.json:
        print_json(summary)
    else:
        print_table(list(summary.items()), title="femno train geometry")
    return 0
