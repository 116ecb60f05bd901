"""``femno solve``: assemble one sample of a problem family and solve it."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from femno.cli._output import print_json, print_table
from femno.errors import InputError

SOLVERS = ("auto", "cg", "fcg", "gmres", "fgmres", "minres", "dcdm", "direct")


def parse_key_values(items, *, what: str) -> dict:
    """Parse ``["a=1", "b=x"]`` into ``{"a": 1, "b": "x"}`` (numbers converted).

    >>> parse_key_values(["length=0.1", "k=3", "kind=grf"], what="option")
    {'length': 0.1, 'k': 3, 'kind': 'grf'}
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {item!r} is not of the form KEY=VALUE")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        out[key.strip().replace("-", "_") if what == "option" else key.strip()] = value
    return out


def choose_defaults(family, solver: str, pc: str, backend: str) -> tuple[str, str]:
    """Pick a Krylov method and preconditioner from the family's structure."""
    if solver == "auto":
        solver = "cg" if family.spd else ("minres" if family.symmetric else "gmres")
    if pc == "auto":
        if solver == "direct":
            pc = "lu"
        elif family.spd:
            pc = "amg" if backend == "scipy" else "gamg"
        else:
            pc = "ilu" if solver != "minres" else "jacobi"
    return solver, pc


def run(args) -> int:
    from femno.fem import get_family
    from femno.solvers import direct, krylov

    if args.rtol <= 0 or not np.isfinite(args.rtol):
        raise InputError(f"--rtol must be a positive number, got {args.rtol}")
    options = parse_key_values(args.option, what="option")
    petsc_options = parse_key_values(args.petsc_option, what="PETSc option")
    if petsc_options and args.backend != "petsc":
        raise InputError("--petsc-option needs --backend petsc")
    if args.mesh is not None:
        options["mesh"] = args.mesh
    else:
        options["n"] = args.n
    if args.element:
        options["element"] = args.element

    t0 = time.perf_counter()
    family = get_family(args.family, **options)
    params = family.sample(np.random.default_rng(args.seed))
    system = family.assemble(params)
    assemble_s = time.perf_counter() - t0

    method, pc = choose_defaults(family, args.solver, args.pc, args.backend)
    if method == "direct" and args.backend == "scipy":
        solver = direct()
    else:  # PETSc's direct solve is KSPPREONLY + PCLU inside krylov()
        solver = krylov(
            method, pc=pc, rtol=args.rtol, maxiter=args.maxiter, backend=args.backend,
            on_fail="warn", petsc_options=petsc_options or None, mmax=args.mmax,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # reported below instead
        x = solver(system.A, system.b)
    stats = solver.stats
    result = {
        "family": args.family,
        "mesh": args.mesh or f"built-in, n={args.n}",
        "element": system.meta.get("element", args.element),
        "dofs": int(system.dofs),
        "seed": args.seed,
        "solver": method,
        "pc": stats.pc,
        "backend": stats.backend,
        "rtol": args.rtol,
        "iterations": int(stats.iterations),
        "residual": float(stats.residual),
        "converged": bool(stats.converged),
        "reason": stats.reason,
        "assemble_s": assemble_s,
        "setup_s": float(stats.setup_s),
        "solve_s": float(stats.solve_s),
    }
    if args.history:
        result["residual_history"] = list(map(float, stats.residuals))
    field = system.expand(x)
    if args.save:
        _save_field(system, field, args.save)
        result["saved"] = args.save
    if args.plot:
        _plot(system, field, stats, args.plot)
        result["plot"] = args.plot

    if args.json:
        print_json(result)
    else:
        print_table(result.items(), title=f"femno solve {args.family}")
    if not stats.converged:
        print(
            f"femno: error: {method}+{stats.pc} did not converge ({stats.reason}): relative "
            f"residual {stats.residual:.3e} > rtol {args.rtol:g} after {stats.iterations} iterations",
            file=sys.stderr,
        )
        return 3
    return 0


def _nodal_values(system, field):
    basis = system.basis
    nodal = basis.nodal_dofs  # (components, n_vertices)
    return {f"u{i}" if nodal.shape[0] > 1 else "u": field[nodal[i]] for i in range(nodal.shape[0])}


def _save_field(system, field, path) -> None:
    try:
        system.basis.mesh.save(path, point_data=_nodal_values(system, field))
    except Exception as exc:  # meshio raises many kinds for unknown formats
        raise InputError(f"could not write {path!r}: {exc}") from exc


def _plot(system, field, stats, path) -> None:
    from femno.errors import optional_import

    optional_import("matplotlib", extra="plot", purpose="--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    mesh = system.basis.mesh
    components = _nodal_values(system, field)
    if len(components) > 1:  # vector field: plot the magnitude
        values = np.sqrt(sum(c**2 for c in components.values()))
        label = f"|u| ({len(components)} components, {system.dofs} dofs)"
    else:
        values = next(iter(components.values()))
        label = f"solution ({system.dofs} dofs)"
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    if mesh.t.shape[0] == 4:  # quads: split into triangles for plotting
        t = mesh.t[:3].T
        t = np.vstack([t, mesh.t[[0, 2, 3]].T])
    else:
        t = mesh.t[:3].T
    tri = mtri.Triangulation(mesh.p[0], mesh.p[1], t)
    cs = ax0.tripcolor(tri, values, shading="gouraud", cmap="viridis")
    fig.colorbar(cs, ax=ax0)
    ax0.set_aspect("equal")
    ax0.set_title(label)
    ax1.semilogy(stats.residuals, ".-")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("relative residual")
    ax1.set_title(f"{stats.method}+{stats.pc} [{stats.backend}]")
    ax1.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_parser(sub) -> None:
    from femno.fem import FAMILIES
    from femno.solvers import PRECONDITIONERS

    p = sub.add_parser(
        "solve",
        help="assemble one sample of a PDE family and solve it",
        description="Assemble one sample (deterministic by --seed) of a parametric PDE family "
        "with scikit-fem and solve the linear system. Prints iterations, final relative "
        "residual ||b - Ax||/||b||, whether it converged and setup/solve times. Exit code 3 "
        "if the solver did not converge.",
        epilog="families: " + ", ".join(FAMILIES) + "\npreconditioners (scipy): "
        + ", ".join(PRECONDITIONERS) + "\npreconditioners (petsc): none, jacobi, sor, ilu, "
        "ic, gamg, hypre, lu\nexample: femno solve darcy --n 256 --pc amg --json",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("family", help="problem family, e.g. darcy, poisson, helmholtz, heat, elasticity")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--n", type=int, default=64, help="cells per side of the built-in unit-square mesh (default 64)")
    where.add_argument("--mesh", metavar="FILE", help="mesh file (any format meshio reads) instead of the built-in mesh")
    p.add_argument("--element", help="finite element: P1, P2 (triangles), Q1, Q2, Q8 (quads)")
    p.add_argument("--solver", choices=SOLVERS, default="auto",
                   help="Krylov method or direct (default auto: cg for SPD, minres symmetric, else gmres)")
    p.add_argument("--pc", default="auto", help="preconditioner (default auto: AMG for SPD, else ILU)")
    p.add_argument("--backend", choices=("scipy", "petsc"), default="scipy", help="linear-algebra backend")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative residual tolerance (default 1e-8)")
    p.add_argument("--maxiter", type=int, default=None, help="iteration limit")
    p.add_argument("--mmax", type=int, default=30,
                   help="fcg: past directions kept for orthogonalisation (default 30, as PETSc's "
                   "KSPFCG; with a neural preconditioner 30 needs ~half the iterations of 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sample (default 0)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="family option, e.g. -o length=0.1 -o variance=1.0 (repeatable)")
    p.add_argument("--petsc-option", action="append", metavar="KEY=VALUE",
                   help="PETSc options-database entry without the leading dash (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--history", action="store_true", help="include the residual history in the output")
    p.add_argument("--save", metavar="FILE", help="write mesh and solution (e.g. out.vtu; meshio formats)")
    p.add_argument("--plot", metavar="PNG", help="plot solution and residual history (needs matplotlib)")
    p.set_defaults(func=run)
