"""Darcy solver benchmark: every femno solver side by side in one process.

Problem: -div(a grad u) = 1 on the unit square, u = 0 on the boundary, a log-normal
Gaussian random field (femno family ``darcy``, seed 0), P1 elements on an n x n
triangle mesh. Each solver gets the same (A, b) and rtol; the table reports setup
time (preconditioner or factorization), solve time, iterations, final true relative
residual and the time ratio against the fastest converged solver of that size.

Usage::

    python benchmarks/bench_darcy.py                       # n = 128, 256, 512, 1000
    python benchmarks/bench_darcy.py --sizes 64 128 --out /tmp/r   # quick run

Results are written to ``benchmarks/results/darcy.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from femno import __version__
from femno.fem import get_family
from femno.solvers import direct, krylov

HAVE_PETSC = True
try:  # noqa: SIM105
    import petsc4py  # noqa: F401
except ImportError:
    HAVE_PETSC = False


def competitors(n_dofs: int):
    """(label, factory) pairs; unpreconditioned CG gets an iteration cap on big grids."""
    cap = 20000
    out = [
        ("CG (no pc)", lambda: krylov("cg", pc="none", rtol=RTOL, maxiter=cap, on_fail="warn")),
        ("CG + Jacobi", lambda: krylov("cg", pc="jacobi", rtol=RTOL, maxiter=cap, on_fail="warn")),
        ("IC(0)-PCG", lambda: krylov("cg", pc="ic", rtol=RTOL, on_fail="warn")),
        ("ILU-GMRES(30)", lambda: krylov("gmres", pc="ilu", rtol=RTOL, on_fail="warn")),
        ("pyamg SA-AMG-PCG", lambda: krylov("cg", pc="amg-sa", rtol=RTOL, on_fail="warn")),
        ("pyamg RS-AMG-PCG", lambda: krylov("cg", pc="amg-rs", rtol=RTOL, on_fail="warn")),
    ]
    if HAVE_PETSC:
        out += [
            ("PETSc CG + GAMG", lambda: krylov("cg", pc="gamg", rtol=RTOL, backend="petsc", on_fail="warn")),
            ("PETSc CG + BoomerAMG", lambda: krylov("cg", pc="hypre", rtol=RTOL, backend="petsc", on_fail="warn")),
        ]
    out.append(("scipy sparse LU (SuperLU)", lambda: direct(backend="scipy")))
    if HAVE_PETSC:
        out.append(("PETSc LU (MUMPS)", lambda: krylov(
            "direct", backend="petsc", petsc_options={"pc_factor_mat_solver_type": "mumps"})))
    return out


RTOL = 1e-8


def run(sizes, out_dir: Path, skip: set[str]):
    records = []
    for n in sizes:
        t0 = time.perf_counter()
        fam = get_family("darcy", n=n)
        system = fam.assemble(fam.sample(np.random.default_rng(0)))
        assemble_s = time.perf_counter() - t0
        A, b = system.A, system.b
        print(f"\n== Darcy n={n}: {system.dofs} dofs, nnz {A.nnz}, assembly {assemble_s:.2f} s", flush=True)
        x_ref = None
        for label, make in competitors(system.dofs):
            if label in skip or (label.startswith("ILU") and system.dofs > 300_000):
                # spilu's fill on ~1M dofs costs minutes and GBs: listed as skipped, not hidden
                records.append(dict(n=n, dofs=system.dofs, solver=label, skipped=True))
                print(f"  {label:<28} skipped")
                continue
            solver = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    x = solver(A, b)
                except MemoryError:
                    records.append(dict(n=n, dofs=system.dofs, solver=label, skipped=True, note="out of memory"))
                    continue
            s = solver.stats
            if x_ref is None and s.converged:
                x_ref = x
            err = float(np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref)) if x_ref is not None else float("nan")
            rec = dict(
                n=n, dofs=int(system.dofs), nnz=int(A.nnz), solver=label, backend=s.backend,
                iterations=int(s.iterations), residual=float(s.residual), converged=bool(s.converged),
                setup_s=float(s.setup_s), solve_s=float(s.solve_s), total_s=float(s.setup_s + s.solve_s),
                diff_to_first=err,
            )
            records.append(rec)
            print(
                f"  {label:<28} it {rec['iterations']:>6}  setup {rec['setup_s']:8.3f} s  solve "
                f"{rec['solve_s']:8.3f} s  total {rec['total_s']:8.3f} s  res {rec['residual']:.1e}"
                f"{'' if rec['converged'] else '  NOT CONVERGED'}",
                flush=True,
            )
    write(records, out_dir)
    return records


def machine() -> dict:
    import pyamg
    import scipy
    import skfem

    info = dict(
        python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count(),
        processor=platform.processor() or platform.machine(), femno=__version__,
        numpy=np.__version__, scipy=scipy.__version__, pyamg=pyamg.__version__, skfem=skfem.__version__,
    )
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    if HAVE_PETSC:
        from femno.solvers.petsc_backend import petsc_info

        info["petsc"] = petsc_info().get("petsc_version")
    return info


def write(records, out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    m = machine()
    (out_dir / "darcy.json").write_text(json.dumps(dict(machine=m, rtol=RTOL, results=records), indent=1))
    lines = [
        "# Darcy benchmark: -div(a grad u) = 1, log-normal a, P1, rtol 1e-8",
        "",
        f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpus']} cores, {m.get('mem_gib', '?')} GiB; "
        f"Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, pyamg {m['pyamg']}, "
        f"scikit-fem {m['skfem']}, PETSc {m.get('petsc', 'not installed')}; femno {m['femno']}.",
        "Command: `python benchmarks/bench_darcy.py` (all solvers in one process, one run each, serial).",
        "Ratio = total time / total time of the fastest converged solver at that size.",
        "",
    ]
    for n in sorted({r["n"] for r in records}):
        rows = [r for r in records if r["n"] == n]
        done = [r for r in rows if not r.get("skipped")]
        best = min((r["total_s"] for r in done if r["converged"]), default=float("nan"))
        lines += [f"## n = {n} ({rows[0]['dofs']:,} dofs)", "",
                  "| solver | iterations | setup s | solve s | total s | ratio | rel. residual | converged |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("skipped"):
                lines.append(f"| {r['solver']} | skipped {r.get('note', '(too slow/large at this size)')} | | | | | | |")
                continue
            lines.append(
                f"| {r['solver']} | {r['iterations']} | {r['setup_s']:.3f} | {r['solve_s']:.3f} | "
                f"{r['total_s']:.3f} | {r['total_s'] / best:.1f} | {r['residual']:.1e} | "
                f"{'yes' if r['converged'] else '**no**'} |"
            )
        lines.append("")
    (out_dir / "darcy.md").write_text("\n".join(lines))
    print(f"\nwrote {out_dir / 'darcy.md'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1000],
                   help="cells per side (dofs ~ (n-1)^2)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--skip", nargs="*", default=[], help="solver labels to skip")
    args = p.parse_args(argv)
    run(args.sizes, args.out, set(args.skip))


if __name__ == "__main__":
    sys.exit(main())
