"""``femno solve``: assemble one sample of a problem family and solve it."""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

from femno.cli._output import print_json, print_table
from femno.errors import InputError


def solver_choices() -> tuple:
    """``--solver`` choices: auto, every registered Krylov method the CLI offers, direct."""
    from femno.solvers.methods import KRYLOV_METHODS

    return ("auto", *(n for n, m in KRYLOV_METHODS.items() if m.cli), "direct")

#: options whose value must be > 0 (the message families give for them)
POSITIVE_OPTIONS = ("variance", "length", "mean", "dt", "E", "nu_scale", "contrast")


def parse_key_values(items, *, what: str) -> dict:
    """Parse ``["a=1", "b=x"]`` into ``{"a": 1, "b": "x"}`` (numbers converted).

    NaN and infinite numbers are refused with :class:`InputError` (``option KEY must
    be finite``; ``variance must be positive and finite`` for variance-like keys),
    before they reach a family or a JSON manifest.

    >>> parse_key_values(["length=0.1", "k=3", "kind=grf"], what="option")
    {'length': 0.1, 'k': 3, 'kind': 'grf'}
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"{what} {item!r} is not of the form KEY=VALUE")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        if isinstance(value, float) and not np.isfinite(value):
            name = key.replace("-", "_")
            if name in POSITIVE_OPTIONS:
                raise InputError(f"{name} must be positive and finite, got {item.partition('=')[2]}")
            raise InputError(f"{what} {key} must be finite, got {item.partition('=')[2]}")
        out[key.replace("-", "_") if what == "option" else key] = value
    return out


def _physical_memory() -> int | None:
    """Bytes of RAM of this machine (psutil if installed, else sysconf), or None."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000


#: (cells per n^d block, local dofs per cell) of the default elements
_CELLS = {"tri": (2, {"P1": 3, "P2": 6}), "quad": (1, {"Q1": 4, "Q2": 9, "Q8": 8}),
          "tet": (6, {"P1": 4, "P2": 10}), "hex": (1, {"Q1": 8, "Q2": 27})}


def estimate_memory(cls, options: dict) -> tuple[float, int, int]:
    """Rough bytes needed to mesh and assemble family ``cls`` with ``options``.

    Uses the built-in mesh (``n`` cells per side) of the cell type the family builds
    (``cell`` option or constructor default), its element and vector size: the
    element matrices in COO form (value + row + column, twice for the CSR
    conversion) dominate.  Returns ``(bytes, n_elements)``.
    """
    import inspect

    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}

    def default(name, fallback):
        p = params.get(name)
        return p.default if p is not None and p.default is not inspect.Parameter.empty else fallback

    n = options.get("n", default("n", 64))
    cell = str(options.get("cell", default("cell", "tri")))
    per_block, local = _CELLS.get(cell, _CELLS["tri"])
    dim = 3 if cell in ("tet", "hex") else 2
    element = str(options.get("element") or next(iter(local))).upper()
    nloc = local.get(element, max(local.values())) * (dim if getattr(cls, "vector", False) else 1)
    n = int(n)
    n_elements = per_block * n**dim
    return float(n_elements) * nloc**2 * 24 * 2 + 64.0 * (n + 1) ** dim, n_elements


def check_memory(spec, options: dict) -> None:
    """Refuse (:class:`InputError`) a built-in mesh whose assembly cannot fit in RAM."""
    if "mesh" in options or not isinstance(options.get("n", 64), (int, np.integer)):
        return
    if isinstance(options.get("n"), (int, np.integer)) and options["n"] < 1:
        return  # the family's own message ("n must be an integer >= 1")
    from femno.fem.families.resolve import _family_class

    cls = _family_class(spec) if isinstance(spec, str) else spec
    if not isinstance(cls, type):
        return
    need, n_elements = estimate_memory(cls, options)
    ram = _physical_memory()
    if ram is not None and need > ram:
        n = options.get("n")
        raise InputError(
            f"--n {n} needs about {_human(need)} of memory to mesh and assemble "
            f"(~{n_elements:.2g} elements), more than this machine's {_human(ram)}; "
            "use a smaller --n"
        )


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
    from femno.fem.families.resolve import load_family
    from femno.solvers import direct, krylov
    from femno.solvers.base import check_tolerances

    args.rtol, _ = check_tolerances(args.rtol, what="--rtol")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
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

    stored = None
    t0 = time.perf_counter()
    if args.dataset is not None:
        stored = _dataset_sample(args)
        family, params, system = stored["family"], stored["params"], stored["system"]
        args.family, args.seed = stored["settings"]["family_spec"], stored["settings"]["seed"]
        fopts = stored["settings"].get("family_options") or {}
        args.n, args.mesh = fopts.get("n", "the family's default"), fopts.get("mesh")
    else:
        if args.family is None:
            raise InputError("give a FAMILY (or --dataset PATH --sample I)")
        check_memory(args.family, options)
        family = load_family(args.family, options)
        params, system = _sample_and_assemble(args.family, family, args.seed, args.sample)
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
        "sample": args.sample,
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
    result.update(solution_norms(system, field))
    if stored is not None:
        from femno.datagen.reproduce import compare_with_stored

        st = stored["settings"]
        result["dataset"] = args.dataset
        result["dataset_solver"] = f"{st.get('method')}+{st.get('pc')} rtol {st.get('rtol')}"
        result.update(compare_with_stored(stored, field))
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
        hint = ""
        from femno.solvers.methods import KRYLOV_METHODS

        if method in KRYLOV_METHODS and KRYLOV_METHODS[method].spd:
            from femno.solvers.factory import spd_hint

            hint = spd_hint(system.A, x=x, b=system.b, reason=stats.reason)
        print(
            f"femno: error: {method}+{stats.pc} did not converge ({stats.reason}): relative "
            f"residual {stats.residual:.3e} > rtol {args.rtol:g} after {stats.iterations} "
            f"iterations{'; ' + hint if hint else ''}",
            file=sys.stderr,
        )
        return 3
    return 0


def solution_norms(system, field) -> dict:
    """``max_abs_u`` and the discrete L2 norm of the full solution vector.

    ``l2_norm_u_mass`` is :math:`\\sqrt{u^T M u}` with the mass matrix ``M`` of the
    system's basis (the FE L2 norm of :math:`u_h`); without a basis the Euclidean
    norm scaled by :math:`\\sqrt{h^d}` is given as ``l2_norm_u_scaled_euclid``.
    """
    field = np.asarray(field, dtype=np.float64)
    out = {"max_abs_u": float(np.max(np.abs(field))) if field.size else 0.0}
    try:
        import skfem

        @skfem.BilinearForm
        def _mass(u, v, w):
            uv = np.asarray(u * v)
            return uv.sum(axis=0) if uv.ndim == 3 else uv  # vector fields: u . v

        M = _mass.assemble(system.basis)
        out["l2_norm_u_mass"] = float(np.sqrt(max(field @ (M @ field), 0.0)))
    except Exception:  # noqa: BLE001 - basis without a mass form: fall back
        mesh = getattr(getattr(system, "basis", None), "mesh", None)
        d = mesh.p.shape[0] if mesh is not None else 2
        h = 1.0 / max(field.size ** (1.0 / d) - 1.0, 1.0)
        out["l2_norm_u_scaled_euclid"] = float(np.linalg.norm(field) * np.sqrt(h**d))
    return out


def _dataset_sample(args) -> dict:
    """``--dataset PATH --sample I``: the dataset's family and sample I, rebuilt."""
    from femno.datagen.reproduce import dataset_sample

    if args.sample is None:
        raise InputError("--dataset needs --sample I (which sample to rebuild)")
    given = [name for name, v in (("--mesh", args.mesh), ("--element", args.element),
                                  ("--option", args.option)) if v]
    if given:
        raise InputError(f"{', '.join(given)}: the family and its options come from the "
                         "dataset's manifest with --dataset")
    sample = dataset_sample(args.dataset, args.sample)
    spec = sample["settings"]["family_spec"]
    if args.family is not None and args.family != spec:
        raise InputError(f"family {args.family!r} given, but {args.dataset!r} holds {spec!r}")
    return sample


def _sample_and_assemble(spec: str, family, seed: int, index: int | None = None):
    """``family.sample`` then ``family.assemble``; a user family's own bug (``FILE:NAME``)
    is reported as bad input naming the hook, not as an internal error of femno.
    ``index`` given: the parameters of dataset sample ``index`` (``default_rng([seed, index])``,
    :func:`femno.datagen.runner.sample_params`)."""
    from femno.fem.families.resolve import sample_params

    if index is not None and index < 0:
        raise InputError(f"--sample must be >= 0, got {index}")
    user = ":" in spec
    hook = "sample"
    try:
        params = (family.sample(np.random.default_rng(seed)) if index is None
                  else sample_params(family, seed, index))
        hook = "assemble_full"
        return params, family.assemble(params)
    except (InputError, MemoryError):
        raise
    except Exception as exc:
        if not user:
            raise
        msg = " ".join(str(exc).split())
        raise InputError(f"family {spec} failed in {hook}(): {type(exc).__name__}: {msg}") from exc


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
        "ic, gamg, hypre, lu\nexamples:\n  femno solve darcy --n 256 --pc amg --json\n"
        "  femno solve --dataset data/darcy --sample 17 --json   # re-solve a dataset sample",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("family", nargs="?", default=None,
                   help="problem family (darcy, poisson, helmholtz, heat, elasticity), "
                   "a data_gen recipe (skr-darcy, darcy3d, ...) or FILE.py:NAME "
                   "(docs/own-family.md); omitted with --dataset")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--n", type=int, default=64, help="cells per side of the built-in unit-square mesh (default 64)")
    where.add_argument("--mesh", metavar="FILE", help="mesh file (any format meshio reads) instead of the built-in mesh")
    p.add_argument("--element", help="finite element: P1, P2 (triangles), Q1, Q2, Q8 (quads)")
    p.add_argument("--solver", choices=solver_choices(), default="auto",
                   help="Krylov method or direct (default auto: cg for SPD, minres symmetric, else gmres)")
    p.add_argument("--pc", default="auto", help="preconditioner (default auto: AMG for SPD, else ILU)")
    p.add_argument("--backend", choices=("scipy", "petsc"), default="scipy", help="linear-algebra backend")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative residual tolerance (default 1e-8)")
    p.add_argument("--maxiter", type=int, default=None, help="iteration limit")
    p.add_argument("--mmax", type=int, default=30,
                   help="fcg: past directions kept for orthogonalisation (default 30, as PETSc's "
                   "KSPFCG; with a neural preconditioner 30 needs ~half the iterations of 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sample (default 0)")
    p.add_argument("--sample", type=int, default=None, metavar="I",
                   help="draw the parameters of dataset sample I (default_rng([seed, I]), "
                   "as femno generate does) instead of default_rng(seed)")
    p.add_argument("--dataset", metavar="PATH", default=None,
                   help="with --sample I: rebuild sample I of this femno generate dataset "
                   "(family, options and seed from its manifest), re-solve it and report "
                   "how it matches the stored row (inputs_identical, solution_rel_diff)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="family option, e.g. -o length=0.1 -o variance=1.0 (repeatable)")
    p.add_argument("--petsc-option", action="append", metavar="KEY=VALUE",
                   help="PETSc options-database entry without the leading dash (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--history", action="store_true", help="include the residual history in the output")
    p.add_argument("--save", metavar="FILE", help="write mesh and solution (e.g. out.vtu; meshio formats)")
    p.add_argument("--plot", metavar="PNG", help="plot solution and residual history (needs matplotlib)")
    p.set_defaults(func=run)
