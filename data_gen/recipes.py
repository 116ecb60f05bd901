"""The recipe scripts' command line (``python data_gen/<recipe>.py``).

The recipes themselves (families and :data:`RECIPES`) live in the package,
:mod:`femno.fem.families.recipes`, so that ``femno generate skr-darcy`` works in an
installed femno too; this file only adds each script's paper-matching defaults.
"""

from __future__ import annotations

from femno.fem.families.recipes import *  # noqa: F401,F403  (the recipe classes)
from femno.fem.families.recipes import RECIPES  # noqa: F401  (the registry, re-exported)

# paper-matching defaults for each recipe when run as a script
DEFAULTS = {
    "skr-darcy": {"method": "auto", "rtol": 1e-8},
    "skr-darcy-paper": {"method": "auto", "rtol": 1e-8},
    "skr-thermal": {"method": "auto", "rtol": 1e-8},
    "skr-poisson": {"method": "auto", "rtol": 1e-8},
    "skr-helmholtz": {"method": "auto", "rtol": 1e-7},
    "darcy3d": {"method": "amg-cg", "rtol": 1e-8},
}


def main(name: str, argv=None) -> int:
    """Command line of the recipe scripts: ``python data_gen/<recipe>.py --samples N --out P``."""
    import argparse
    import json
    import sys

    from femno.datagen.generate import generate_dataset
    from femno.errors import FemnoError

    d = DEFAULTS[name]
    p = argparse.ArgumentParser(prog=f"data_gen/{name.replace('-', '_')}.py",
                                description=RECIPES[name].__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=None, help="mesh resolution (default: paper size)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--scheduler", default=None, help="Dask scheduler address")
    p.add_argument("--method", default=d["method"])
    p.add_argument("--pc", default="auto")
    p.add_argument("--rtol", type=float, default=d["rtol"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    options = {} if args.n is None else {"n": args.n}
    try:
        summary = generate_dataset(
            name, samples=args.samples, out=args.out,
            method=args.method, pc=args.pc, rtol=args.rtol, seed=args.seed,
            workers=args.workers, scheduler=args.scheduler, block=args.block,
            family_options=options, progress=not args.json)
    except FemnoError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0
