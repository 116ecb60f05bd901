"""``femno rve``: solve a periodic RVE, generate snapshots, evaluate an EquiNO model."""

from __future__ import annotations

import argparse

from femno.cli._output import print_json, print_table

EPILOG = """\
RVEs: RVE1, RVE2, RVE3 (shipped, SPEC §2) or a prefix P of your own files
P.nodes.csv (x, y per node) and P.elems.csv (id, material, 8 node ids; 1 = matrix,
2 = fibre); the mesh must be periodic (matching nodes on opposite edges).
Strains are [eps_xx, eps_yy, gamma_xy] with engineering shear.

examples:
  femno rve solve --rve RVE1 --strain 0.01 0 0 --json
  femno rve snapshots --rve RVE1 --samples 100 --out /tmp/rve1-train --seed 0 --workers 2
  femno train equino --rve RVE1 --snapshots /tmp/rve1-train --out /tmp/rve1.pt
  femno rve evaluate /tmp/rve1.pt --test /tmp/rve1-test --json
"""


def add_parser(sub) -> None:
    p = sub.add_parser("rve", help="periodic RVE: solve, snapshots, evaluate EquiNO",
                       description="Periodic RVE problems (8-node quads, Newton, homogenization).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    rsub = p.add_subparsers(dest="rve_command", metavar="ACTION", required=True)

    s = rsub.add_parser("solve", help="solve one RVE problem: homogenized stress and macro tangent",
                        description="Newton solve of the periodic RVE at one macro strain; prints "
                        "the homogenized stress, the 3x3 macro tangent d<sigma>/de and the "
                        "Newton residual norms.")
    s.add_argument("--rve", required=True, help="RVE1, RVE2, RVE3 or a file prefix")
    s.add_argument("--strain", type=float, nargs=3, required=True, metavar=("EXX", "EYY", "GXY"),
                   help="macro strain (engineering shear)")
    s.add_argument("--tol", type=float, default=1e-10, help="relative Newton tolerance (1e-10)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=run_solve)

    g = rsub.add_parser("snapshots", help="FE snapshots at Latin-hypercube strains (resumable)",
                        description="Solve the RVE at N Latin-hypercube strains in "
                        "[-bound, bound]^3 and store strains, homogenized stress and tangent, "
                        "nodal fluctuation and integration-point stress in a zarr dataset "
                        "directory.  Re-running the same command resumes.")
    g.add_argument("--rve", required=True, help="RVE1, RVE2, RVE3 or a file prefix")
    g.add_argument("--samples", type=int, required=True, help="number of strains")
    g.add_argument("--out", required=True, metavar="PATH", help="dataset directory")
    g.add_argument("--seed", type=int, default=0, help="Latin hypercube seed (default 0)")
    g.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    g.add_argument("--block", type=int, default=4, help="samples per checkpoint block (4)")
    g.add_argument("--bound", type=float, default=0.04, help="strain range (default 0.04)")
    g.add_argument("--json", action="store_true", help="print one JSON summary, no progress bar")
    g.set_defaults(func=run_snapshots)

    e = rsub.add_parser("evaluate", help="median relative L2 errors of an EquiNO model",
                        description="Compare an EquiNO model with FE test snapshots: relative L2 "
                        "errors (%%) of the fluctuation u_x, u_y, the integration-point stresses "
                        "and the homogenized stress; median, mean and max over the samples.")
    e.add_argument("model", help="EquiNO model file (femno train equino)")
    e.add_argument("--test", required=True, metavar="PATH", help="snapshot dataset")
    e.add_argument("--device", default="cpu", help="torch device (default cpu)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run_evaluate)


def check_rve_name(name: str) -> None:
    """Refuse an RVE that is neither a reference name nor a prefix of existing files."""
    import os
    from pathlib import Path

    from femno.errors import InputError
    from femno.fem.rve import REFERENCE_RVES

    if name in REFERENCE_RVES or Path(os.fspath(name) + ".nodes.csv").is_file():
        return
    hint = f" (did you mean {name.upper()}?)" if name.upper() in REFERENCE_RVES else ""
    raise InputError(
        f"unknown RVE {name!r}{hint}; valid: {', '.join(REFERENCE_RVES)} or a file prefix "
        f"P of P.nodes.csv and P.elems.csv (no {name}.nodes.csv here)"
    )


def run_solve(args) -> int:
    from femno.multiscale.rve_solver import RVESolver

    check_rve_name(args.rve)
    solver = RVESolver(args.rve, tol=args.tol)
    r = solver.solve(args.strain)
    out = {"rve": solver.rve.name, "strain": r.strain, "stress": r.stress, "tangent": r.tangent,
           "newton_iterations": r.newton_iterations, "residual_norms": r.residual_norms,
           "factorizations": r.factorizations, "krylov_iterations": r.krylov_iterations,
           "seconds": r.seconds, "dofs": solver.n_red}
    if args.json:
        print_json(out)
        return 0
    rows = [("rve", out["rve"]), ("dofs", solver.n_red), ("newton iterations", r.newton_iterations),
            ("seconds", r.seconds)]
    rows += [(f"stress[{k}]", float(r.stress[i])) for i, k in enumerate(("xx", "yy", "xy"))]
    print_table(rows, title=f"femno rve solve {solver.rve.name}")
    print("  residual norms  " + " ".join(f"{x:.2e}" for x in r.residual_norms))
    print("  tangent d<sigma>/de:")
    for row in r.tangent:
        print("    " + " ".join(f"{x:12.5g}" for x in row))
    return 0


def run_snapshots(args) -> int:
    from femno.multiscale.snapshots import generate_snapshots

    check_rve_name(args.rve)
    summary = generate_snapshots(args.rve, samples=args.samples, out=args.out, seed=args.seed,
                                 workers=args.workers, block=args.block, bound=args.bound,
                                 progress=not args.json)
    if args.json:
        print_json(summary)
    else:
        print_table(summary.items(), title=f"femno rve snapshots {summary['rve']}")
    return 0


def evaluate(model_path, test_path, *, device="cpu") -> dict:
    """Median/mean/max relative L2 errors (%) of an EquiNO model on a snapshot dataset."""
    import numpy as np

    from femno.errors import InputError
    from femno.multiscale.snapshots import load_snapshots
    from femno.operators.checkpoint import load_model
    from femno.operators.equino_train import relative_errors

    model = load_model(model_path, kind="equino", device=device)
    data = load_snapshots(test_path)
    cfg = model.config
    if data["fluctuation"].shape[1] != cfg["n_nodes"] or data["stress_ip"].shape[1] != cfg["n_ip"]:
        raise InputError(f"test snapshots of RVE {data['settings']['rve']!r} do not match the "
                         f"model's RVE {cfg['rve']!r}")
    errs = relative_errors(model, data)
    return {"model": str(model_path), "test": str(test_path), "rve": cfg["rve"],
            "samples": int(data["strain"].shape[0]),
            "median": {k: float(np.median(v)) for k, v in errs.items()},
            "mean": {k: float(np.mean(v)) for k, v in errs.items()},
            "max": {k: float(np.max(v)) for k, v in errs.items()}}


def run_evaluate(args) -> int:
    out = evaluate(args.model, args.test, device=args.device)
    if args.json:
        print_json(out)
        return 0
    print(f"EquiNO {out['rve']}: relative L2 errors (%) over {out['samples']} test samples")
    print(f"  {'field':<10} {'median':>9} {'mean':>9} {'max':>9}")
    for k in out["median"]:
        print(f"  {k:<10} {out['median'][k]:9.3f} {out['mean'][k]:9.3f} {out['max'][k]:9.3f}")
    return 0
