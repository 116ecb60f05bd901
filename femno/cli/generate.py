"""``femno generate``: a resumable dataset of solved systems of a parametric family."""

from __future__ import annotations

import argparse

from femno.cli._output import print_json, print_table
from femno.cli.solve import check_memory, parse_key_values

EPILOG = """\
The samples are sorted once (greedy chain on their features), cut into blocks of
--block samples, and each block is solved with a fresh sequence solver; blocks are
written with an atomic completion marker.  Re-running the same command resumes an
interrupted dataset (finished blocks are kept) and is a no-op on a complete one;
different settings on an existing dataset are an error.  The dataset is identical
for any --workers / --scheduler.

families: femno.fem families (darcy, poisson, helmholtz, ...), data_gen recipes
(skr-darcy, skr-thermal, skr-poisson, skr-helmholtz, darcy3d) or FILE.py:NAME.

examples:
  femno generate darcy --n 64 --samples 1000 --out darcy.femno --workers 4
  femno generate skr-thermal --samples 100 --out thermal.femno --method skr --pc ssor
  femno generate darcy --samples 10000 --out big.femno --scheduler tcp://host:8786
  femno dataset inspect darcy.femno
  femno generate darcy --n 64 --samples 1000 --out more.femno --method cg --warm-start spon.pt

trajectories (--steps T): each sample is a time series of T theta-scheme steps from the
family's initial condition, stored as [sample, time, dof] with every step's true
residual and discrete energy-balance defect (families with a time-dependent form: heat):
  femno generate heat --n 128 --samples 64 --steps 100 --theta 0.5 --out heat-traj.femno

geometries (--geometry): each sample draws its own domain (disk with a perturbed
boundary, L, T, square with holes), meshes it with Triangle (femno[geometry]) at edge
length --h, and stores that mesh with the solution (problems: poisson, darcy,
elasticity). Hold shapes out with --shapes to test a surrogate on unseen geometries:
  femno generate darcy --geometry --shapes disk lshape holes --samples 400 --out train.femno
  femno generate darcy --geometry --shapes tshape --h 0.02 --samples 50 --out test.femno
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate a dataset of solved systems (resumable, parallel)",
        description="Generate a training dataset: sample a parametric family, sort, solve "
        "in blocks with a sequence strategy, and store inputs, solutions and solver "
        "statistics in a zarr dataset directory.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("family", help="family or recipe name, or FILE.py:NAME")
    p.add_argument("--samples", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, metavar="PATH", help="dataset directory")
    p.add_argument("--n", type=int, default=None, help="mesh resolution (family option n)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="family option, e.g. -o length=0.1 (repeatable)")
    p.add_argument("--method", default="auto",
                   help="sequence strategy: auto, skr, recycle, gcrodr, gmres, cg, amg-cg, "
                   "direct, block, dcg (default auto)")
    p.add_argument("--pc", default="auto", help="preconditioner (default auto)")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (default 1e-8)")
    p.add_argument("--sort", default="greedy", choices=("greedy", "grouped", "none"),
                   help="global ordering of the samples (default greedy)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address (needs femno[dist]); overrides --workers")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--block", type=int, default=32, help="samples per block (default 32)")
    p.add_argument("--warm-start", metavar="MODEL", default=None,
                   help="neural warm start: a model trained on this family and mesh (femno "
                   "train ...) gives every Krylov solve its initial guess")
    p.add_argument("--steps", type=int, default=None, metavar="T",
                   help="trajectory mode: T time steps per sample; --method then is auto (the "
                   "default: per trajectory the cheaper of one factorization and one AMG "
                   "hierarchy, measured), reuse|direct (one factorization), amg|amg-cg, "
                   "recycle (a family whose step matrix changes, e.g. heat-varying: AMG + "
                   "a deflation space carried across steps), hypre (the same: BoomerAMG "
                   "per step) or naive (assembly + spsolve per step)")
    p.add_argument("--theta", type=float, default=1.0,
                   help="trajectory mode: theta-scheme, 1 implicit Euler (default), 0.5 "
                   "Crank-Nicolson")
    p.add_argument("--dt", type=float, default=None,
                   help="trajectory mode: time step (default: the family's dt option)")
    p.add_argument("--geometry", action="store_true",
                   help="geometry mode: a random domain and mesh per sample (poisson, darcy, "
                   "elasticity); see --shapes and --h")
    p.add_argument("--shapes", nargs="+", default=None, metavar="SHAPE",
                   help="geometry mode: shapes to draw from (default: disk lshape tshape holes)")
    p.add_argument("--h", type=float, nargs="+", default=[0.04], metavar="H",
                   help="geometry mode: target mesh edge length (default 0.04), or two values "
                   "LO HI: each sample draws its own from that range")
    p.add_argument("--mesh", metavar="FILE", default=None,
                   help="geometry mode: solve every sample on this 2-D triangle mesh (any file "
                   "meshio reads) instead of random domains, e.g. to check a geometry "
                   "surrogate on your mesh with femno eval")
    p.add_argument("--json", action="store_true", help="print one JSON summary, no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from femno.datagen.generate import generate_dataset

    options = parse_key_values(args.option, what="option")
    if args.n is not None:
        options["n"] = args.n
    if args.mesh is not None and not args.geometry:
        from femno.errors import InputError

        raise InputError("--mesh is for geometry mode (--geometry); a steady family takes "
                         "its mesh as -o mesh=FILE")
    if args.geometry:
        from femno.datagen.generate_geometry import generate_geometry_dataset
        from femno.errors import InputError
        from femno.fem.geometry import SHAPES

        if args.steps is not None or options or args.method != "auto":
            raise InputError("--geometry takes --shapes, --h, --mesh, --samples, --seed, "
                             "--block and --rtol; not --steps, --n, -o or --method")
        summary = generate_geometry_dataset(
            args.family, samples=args.samples, out=args.out, shapes=args.shapes or SHAPES,
            h=args.h, seed=args.seed, block=args.block, mesh=args.mesh,
            rtol=args.rtol, progress=not args.json)
    elif args.steps is not None:
        check_memory(args.family, options)
        from femno.datagen.generate_trajectory import generate_trajectories

        summary = generate_trajectories(
            args.family, samples=args.samples, steps=args.steps, out=args.out, dt=args.dt,
            theta=args.theta, method={"direct": "reuse", "amg-cg": "amg"}.get(args.method,
                                                                             args.method),
            rtol=args.rtol, seed=args.seed, block=args.block, family_options=options,
            progress=not args.json)
    else:
        check_memory(args.family, options)
        summary = generate_dataset(
            args.family, samples=args.samples, out=args.out, method=args.method, pc=args.pc,
            rtol=args.rtol, seed=args.seed, workers=args.workers, scheduler=args.scheduler,
            block=args.block, family_options=options, sort=args.sort, progress=not args.json,
            warm_start=args.warm_start)
    if args.json:
        print_json(summary)
    else:
        print_table(summary.items(), title=f"femno generate {args.family}")
    return 0

