r"""How accurate must an initial guess be to cut Krylov iterations 2x at rtol 1e-8?

Issue 6 asks a neural warm start to halve the iterations against a zero guess.  This
script measures the iterations as a function of the guess's error, with no network:
the exact FE solution of each test system plus a perturbation of relative size ``e``
(Euclidean norm on the free dofs), of two kinds:

* ``rough``: independent Gaussian noise per dof (what a network's per-dof error
  looks like to the solver: its residual is amplified by the large eigenvalues);
* ``smooth``: :math:`A^{-1}\xi` for white noise :math:`\xi` (an error made only of
  low modes, the best case for a given size).

For each level and kind it runs CG and AMG-PCG (:func:`femno.datagen.solve_sequence`,
true residual, rtol relative to :math:`\|b\|`) and reports mean iterations and the
ratio to the zero guess.  Conjugate gradients need about
:math:`\tfrac{\sqrt{\kappa}}{2}\ln(2/\epsilon)` iterations to reduce the energy error
by :math:`\epsilon`; a guess with relative energy error :math:`\eta` turns
:math:`\epsilon = 10^{-8}` into :math:`10^{-8}/\eta`, so halving the count needs
:math:`\eta \approx 10^{-4}` whatever the method.  The table shows where the
measured counts cross 2x.

Writes ``benchmarks/results/warmstart.md`` and ``.json``::

    python benchmarks/bench_warmstart.py --n 16 48 --systems 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

LEVELS = (3e-1, 1e-1, 3e-2, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
SOLVERS = {"cg": ("cg", "none"), "amg-cg": ("amg-cg", "amg")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="darcy,poisson", help="comma list (default darcy,poisson)")
    p.add_argument("--n", type=int, nargs="+", default=[16, 48],
                   help="unstructured mesh resolutions (default 16 48)")
    p.add_argument("--systems", type=int, default=10, help="test systems per family (default 10)")
    p.add_argument("--levels", type=float, nargs="+", default=list(LEVELS),
                   help="relative guess errors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "warmstart"))
    return p.parse_args(argv)


def perturbed_guesses(systems, refs, level, kind, rng):
    """Guesses ``x + e ||x|| d / ||d||`` with ``d`` rough (white) or smooth (A^{-1} white)."""
    import scipy.sparse.linalg as sla

    out = []
    for s, x in zip(systems, refs, strict=True):
        d = rng.standard_normal(x.shape[0])
        if kind == "smooth":
            d = sla.spsolve(s.A.tocsc(), d)
        out.append(x + level * np.linalg.norm(x) * d / np.linalg.norm(d))
    return out


def run_family(family, n, args):
    import scipy.sparse.linalg as sla

    from femno.datagen.runner import load_family, sample_params
    from femno.datagen.sequence import solve_sequence
    from femno.fem.mesh import unstructured_square

    fam = load_family(family, {"mesh": unstructured_square(n, seed=args.seed)})
    systems = [fam.assemble(sample_params(fam, args.seed, i)) for i in range(args.systems)]
    refs = [sla.spsolve(s.A.tocsc(), s.b) for s in systems]
    rows = []
    for solver, (method, pc) in SOLVERS.items():
        def its(x0, method=method, pc=pc):
            r = solve_sequence(systems, method=method, pc=pc, rtol=1e-8, x0=x0, on_fail="warn")
            return float(r.iterations.mean()), int(r.converged.sum())

        zero, _ = its(None)
        rows.append({"solver": solver, "kind": "zero", "level": None, "iterations": zero,
                     "ratio": 1.0})
        for kind in ("rough", "smooth"):
            rng = np.random.default_rng([args.seed, len(rows)])
            for e in args.levels:
                m, conv = its(perturbed_guesses(systems, refs, e, kind, rng))
                rows.append({"solver": solver, "kind": kind, "level": e, "iterations": m,
                             "ratio": zero / max(m, 1e-12), "converged": conv})
        print(f"[{family} n={n}] {solver}: zero {zero:.1f} its", file=sys.stderr, flush=True)
    return {"family": family, "n": n, "dofs": int(systems[0].dofs), "rows": rows}


def crossing(rows, solver, kind):
    """Largest error level whose iteration ratio is >= 2, or None."""
    ok = [r["level"] for r in rows if r["solver"] == solver and r["kind"] == kind
          and r["ratio"] >= 2.0]
    return max(ok) if ok else None


def markdown(res) -> str:
    lines = ["# Warm start: iterations against the accuracy of the initial guess", "",
             f"Command: `python benchmarks/bench_warmstart.py {res['argv']}`", "",
             f"Machine: {res['machine']}.", "",
             "Exact FE solution plus a perturbation of relative Euclidean size e on the free "
             "dofs (rough: white noise; smooth: A^-1 of white noise); rtol 1e-8 on the true "
             "residual relative to ||b||; mean over the systems.  Iteration counts do not "
             "depend on the machine.", ""]
    for f in res["families"]:
        levels = sorted({r["level"] for r in f["rows"] if r["level"] is not None}, reverse=True)
        lines += [f"## {f['family']}, unstructured n={f['n']} ({f['dofs']} free dofs)", "",
                  "| solver | guess | " + " | ".join(f"e={e:g}" for e in levels) + " |",
                  "|---|---|" + "---|" * len(levels)]
        for solver in SOLVERS:
            zero = next(r for r in f["rows"] if r["solver"] == solver and r["kind"] == "zero")
            lines.append(f"| {solver} | zero: {zero['iterations']:.1f} its | "
                         + " | ".join("" for _ in levels) + " |")
            for kind in ("rough", "smooth"):
                cells = []
                for e in levels:
                    r = next(q for q in f["rows"] if q["solver"] == solver and
                             q["kind"] == kind and q["level"] == e)
                    cells.append(f"{r['iterations']:.1f} ({r['ratio']:.2f}x)")
                lines.append(f"| {solver} | {kind} | " + " | ".join(cells) + " |")
        cross = [f"{s} {k}: {crossing(f['rows'], s, k):g}" if crossing(f["rows"], s, k)
                 else f"{s} {k}: none" for s in SOLVERS for k in ("rough", "smooth")]
        lines += ["", "Largest error with >= 2x fewer iterations: " + "; ".join(cross) + ".", ""]
    return "\n".join(lines) + "\n"


def main(argv=None):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = parse_args(argv)
    res = {"argv": " ".join(sys.argv[1:] if argv is None else argv), "args": vars(args),
           "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, python "
                      f"{platform.python_version()}", "families": []}
    for family in [f for f in args.families.split(",") if f]:
        for n in args.n:
            res["families"].append(run_family(family, n, args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
