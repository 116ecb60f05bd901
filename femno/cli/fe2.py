"""``femno fe2``: FE² with a pluggable micro model (full FE RVE, EquiNO, closed form)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from femno.cli._output import _jsonable, print_json, print_table
from femno.errors import InputError

DESCRIPTION = """\
Solve a plane-strain macro problem whose stress and tangent at every macro integration
point come from a micro model, with load stepping and Newton (consistent tangent).

macro problems (units mm, N per mm thickness, MPa):
  cook       Cook's membrane (0,0),(48,44),(48,60),(0,44), clamped at x=0, shear load on
             x=48 (default total load 400 N/mm: macro strains of a few % with RVE1; keep
             them in the EquiNO training range [-0.04, 0.04]: see max_abs_strain)
  lprofile   L-profile of side 20 mm, clamped on top, downward load on the right end
             (default 250 N/mm)

micro models (--micro):
  fe             full periodic FE solve of the RVE (--rve) at every point, in parallel over
                 points: --workers local processes (default: all cores) or --scheduler ADDR
  equino:MODEL   a trained EquiNO checkpoint (femno train equino), batched, --device
  linear         isotropic linear elasticity (matrix small-strain moduli K=4780, G=416.7)
  matrix         the nonlinear elastic matrix law of SPEC 2 (use --load ~30 for cook)
  fibre          the linear elastic fibre law of SPEC 2

output: per load step the Newton residual norms, the force-displacement curve (reaction
of the clamped edge vs tip displacement), seconds in the micro model and in the macro
(assembly + linear solves).  With --micro equino, strains outside the model's training
range give a warning on stderr and are listed in the output (JSON: out_of_range, a list
of {component, value, range}; empty when all strains stayed inside).

examples:
  femno fe2 --macro cook --micro matrix --load 30 --steps 5 --plot cook.png
  femno fe2 --macro cook --micro fe --rve RVE1 --n 2 --steps 2 --workers 16 --json
  femno fe2 --macro lprofile --micro equino:/tmp/rve1.pt --steps 10 --out result.json
"""


def add_parser(sub) -> None:
    p = sub.add_parser("fe2", help="FE² macro solve with FE, EquiNO or closed-form micro models",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--macro", default="cook", help="macro problem: cook | lprofile (default cook)")
    p.add_argument("--micro", default="linear",
                   help="micro model: fe | equino:MODEL | linear | matrix (default linear)")
    p.add_argument("--rve", default="RVE1", help="RVE of --micro fe (name or mesh prefix)")
    p.add_argument("--steps", type=int, default=5, help="load steps (default 5)")
    p.add_argument("--n", type=int, default=4, help="macro elements per side (default 4)")
    p.add_argument("--cell", default="quad", help="macro cells: quad (Q1, 2x2 Gauss) | tri (P1)")
    p.add_argument("--load", type=float, default=None, help="total load in N/mm (default per problem)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes of --micro fe (default: all cores)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address for --micro fe")
    p.add_argument("--tol", type=float, default=1e-10, help="RVE Newton tolerance (default 1e-10)")
    p.add_argument("--rtol", type=float, default=1e-8, help="macro Newton tolerance (default 1e-8)")
    p.add_argument("--maxiter", type=int, default=15, help="macro Newton iterations per step")
    p.add_argument("--device", default=None, help="torch device of --micro equino (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="save force-displacement curve and stress field (needs matplotlib)")
    p.add_argument("--out", default=None, metavar="JSON", help="also write the JSON result here")
    p.add_argument("--quiet", action="store_true", help="no per-step progress on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from femno.multiscale.fe2 import plot_fe2, run_fe2

    if args.plot:  # fail before a long run, not after
        from femno.errors import optional_import

        optional_import("matplotlib", extra="plot", purpose="--plot")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")

    def progress(info):
        if not args.quiet:
            print(f"load factor {info['load_factor']:.4g}: {info['iterations']} Newton iterations, "
                  f"residuals {' '.join(f'{r:.2e}' for r in info['residuals'])}", file=sys.stderr)

    res = run_fe2(args.macro, args.micro, steps=args.steps, n=args.n, cell=args.cell,
                  load=args.load, rve=args.rve, workers=args.workers, scheduler=args.scheduler,
                  tol=args.tol, device=args.device, rtol=args.rtol, maxiter=args.maxiter,
                  progress=progress)
    out = res.to_dict()
    out["rve"] = args.rve if args.micro == "fe" else None
    if args.plot:
        plot_fe2(res, args.plot)
        out["plot"] = args.plot
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(_jsonable(out), indent=2, allow_nan=False))
    if args.json:
        print_json(out)
        return 0
    print_table([
        ("macro problem", res.problem), ("micro model", (res.micro or {}).get("name")),
        ("macro dofs", res.n_dofs), ("macro integration points", res.n_points),
        ("load steps (incl. cut-backs)", len(res.iterations)), ("cut-backs", res.cutbacks),
        ("Newton iterations per step", " ".join(map(str, res.iterations))),
        ("final reaction [N/mm]", res.reaction[-1]), ("tip displacement [mm]", res.displacement[-1]),
        ("micro seconds", res.micro_s), ("macro seconds", res.macro_s),
        *([("OUTSIDE training range", "; ".join(
            f"{v['component']}={v['value']:.4g} not in [{v['range'][0]:.4g}, {v['range'][1]:.4g}]"
            for v in res.out_of_range))] if res.out_of_range else []),
    ], title="femno fe2")
    print("\n  load factor   displacement [mm]   reaction [N/mm]")
    for lam, d, f in zip(res.load_factor, res.displacement, res.reaction, strict=True):
        print(f"  {lam:11.4g}   {d:17.6g}   {f:15.6g}")
    return 0
