r"""Trajectories along time: femno's factorization reuse against the loop a user writes.

Issue 20, item 2. For heat trajectories (:func:`femno.datagen.trajectory.solve_trajectory`,
θ-scheme, P1 on the unit square, random log-normal coefficient and initial condition per
sample) it runs, in one process, on the same samples:

* ``naive``: at every step scikit-fem assembles the step matrix
  :math:`M + \theta\Delta t K(a)` and ``scipy.sparse.linalg.spsolve`` solves it
  (``method="naive"``);
* ``reuse``: the step matrix is assembled and factorized once per trajectory (CHOLMOD
  where installed), then two triangular solves per step (``method="reuse"``);

and reports seconds per trajectory, the ratio naive / reuse (the issue's target: >= 5x at
>= 1e5 dofs and 100 steps), the largest step residual and energy-balance defect of each,
and the largest difference between the two trajectories. Writes
``benchmarks/results/trajectory.{json,md}``::

    python benchmarks/bench_trajectory.py                  # n = 316 (100,489 dofs), 100 steps
    python benchmarks/bench_trajectory.py --n 64 --steps 20 --out /tmp/traj
    python benchmarks/bench_trajectory.py --family advection-diffusion \
        --out benchmarks/results/trajectory-advection
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from femno.datagen.runner import sample_params  # noqa: E402
from femno.datagen.trajectory import solve_trajectory  # noqa: E402
from femno.fem.families import get_family  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_recycle import machine  # noqa: E402  (one description of the machine)


def _family(a):
    if a.dim == 2:
        return get_family(a.family, n=a.n)
    import skfem

    mesh = skfem.MeshTet.init_tensor(*[np.linspace(0, 1, a.n + 1)] * 3)
    return get_family(a.family, mesh=mesh)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="heat",
                   choices=("heat", "advection-diffusion", "wave", "allen-cahn",
                            "heat-varying"),
                   help="heat (CHOLMOD), advection-diffusion (nonsymmetric: LU), wave "
                   "(Newmark; --theta unused), allen-cahn (Newton: chord reuse vs full "
                   "Newton with spsolve; --theta unused) or heat-varying (a travelling "
                   "coefficient: a new step matrix every step; use --dt 0.01)")
    p.add_argument("--n", type=int, default=316, help="cells per side (default 316: 100,489 dofs)")
    p.add_argument("--dim", type=int, default=2, choices=(2, 3),
                   help="2: unit square (triangles); 3: unit cube (tetrahedra; --n 46: 103,823 dofs)")
    p.add_argument("--methods", nargs="+", default=["reuse", "naive"],
                   choices=("reuse", "amg", "recycle", "hypre", "auto", "naive"),
                   help="step solvers to run (default reuse naive); the first is the reference")
    p.add_argument("--naive-steps", type=int, default=None, metavar="K",
                   help="run naive for K steps only and scale its per-step time to --steps "
                   "(for sizes where it would take hours; recorded as extrapolated)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--samples", type=int, default=2, help="trajectories per method (default 2)")
    p.add_argument("--theta", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--dt", type=float, default=0.001)
    p.add_argument("--out", default=str(HERE / "results" / "trajectory"))
    a = p.parse_args(argv)
    fam = _family(a)
    # imports and first-call costs (CHOLMOD, scikit-fem, pyamg) untimed, on the same kind of mesh
    warm = _family(argparse.Namespace(family=a.family, dim=a.dim, n=8 if a.dim == 2 else 4))
    for method in a.methods:
        solve_trajectory(warm, sample_params(warm, 0, 0), steps=1, method=method)
    rows = []
    for theta in a.theta:
        row = {"theta": theta, "dofs": int(fam.basis.N), "steps": a.steps, "samples": a.samples}
        us = {}
        for method in a.methods:
            steps = a.naive_steps if method == "naive" and a.naive_steps else a.steps
            secs, res, en, setup, solvers = [], 0.0, 0.0, [], []
            for i in range(a.samples):
                params = sample_params(fam, 0, i)
                t = time.perf_counter()
                tr = solve_trajectory(fam, params, steps=steps, dt=a.dt, theta=theta, method=method)
                dt_ = time.perf_counter() - t
                if steps < a.steps:  # setup once, steps scaled
                    dt_ = tr.setup_s + (dt_ - tr.setup_s) * a.steps / steps
                secs.append(dt_)
                setup.append(tr.setup_s)
                solvers.append(tr.solver)
                res, en = max(res, tr.residuals.max()), max(en, np.abs(tr.energy_residual).max())
                us.setdefault(method, []).append(tr.u)
            row[method] = {"s_per_trajectory": float(np.mean(secs)), "setup_s": float(np.mean(setup)),
                           "max_residual": float(res), "max_energy_residual": float(en),
                           "solver": sorted(set(solvers)), "explanation": tr.explanation,
                           "steps_run": steps}
            print(f"theta {theta} {method:6s} {np.mean(secs):8.2f} s/trajectory "
                  f"(setup {np.mean(setup):.2f} s; {tr.explanation})", flush=True)
        ref = a.methods[0]
        if "naive" in row and ref != "naive":
            row["ratio_naive_over_reuse"] = (row["naive"]["s_per_trajectory"]
                                             / row[ref]["s_per_trajectory"])
        best = min((m for m in a.methods if m not in ("naive", "auto")),
                   key=lambda m: row[m]["s_per_trajectory"], default=None)
        row["best"] = best
        if "auto" in row and best:
            row["auto_over_best"] = row["auto"]["s_per_trajectory"] / row[best]["s_per_trajectory"]
        if "naive" in row and best:
            row["naive_over_best"] = row["naive"]["s_per_trajectory"] / row[best]["s_per_trajectory"]
        row["max_difference"] = {
            m: float(max(np.abs(x - y[: len(x)]).max() / np.abs(y).max()
                         for x, y in zip(us[m], us[ref], strict=True)))
            for m in a.methods if m != ref}
        rows.append(row)
    out = {"machine": machine(), "family": a.family, "n": a.n, "dim": a.dim, "dt": a.dt,
           "methods": a.methods, "rows": rows,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(a.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    Path(a.out + ".md").write_text(markdown(out) + "\n")
    print(f"wrote {a.out}.json / .md")


def markdown(d) -> str:
    if d.get("methods", ["reuse", "naive"]) != ["reuse", "naive"]:
        return markdown_methods(d)
    lines = [f"# {d.get('family', 'heat')} trajectories: one factorization per trajectory "
             "vs the user's loop", "",
             f"Generated by `benchmarks/bench_trajectory.py` on {d['date']}. Machine: {d['machine']}.",
             f"P1 on the unit square, n = {d['n']}, dt = {d['dt']:g}; seconds per trajectory, "
             "mean over the samples; naive = scikit-fem assembly + `spsolve` every step; "
             "reuse = one assembly + one sparse factorization per trajectory (CHOLMOD for heat "
             "and wave, MUMPS/SuperLU LU for the nonsymmetric advection-diffusion), two "
             "triangular solves per step; for allen-cahn (nonlinear) naive is full Newton with "
             "scikit-fem's Jacobian and `spsolve` at every iteration, reuse is chord Newton with "
             "one Jacobian factorization kept across iterations and steps. wave uses Newmark and "
             "allen-cahn implicit Euler whatever the theta column says. Target: naive / reuse "
             ">= 5 at >= 1e5 dofs and 100 steps.", "",
             "| theta | dofs | steps | samples | naive s | reuse s | reuse setup s | naive / reuse "
             "| max step residual (reuse / naive) | max energy defect (reuse / naive) "
             "| max rel. difference |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        diff = r["max_difference"]
        diff = diff.get("naive", 0.0) if isinstance(diff, dict) else diff
        lines.append(
            f"| {r['theta']:g} | {r['dofs']:,} | {r['steps']} | {r['samples']} "
            f"| {r['naive']['s_per_trajectory']:.3g} | {r['reuse']['s_per_trajectory']:.3g} "
            f"| {r['reuse']['setup_s']:.3g} | **{r['ratio_naive_over_reuse']:.1f}x** "
            f"| {r['reuse']['max_residual']:.1e} / {r['naive']['max_residual']:.1e} "
            f"| {r['reuse']['max_energy_residual']:.1e} / {r['naive']['max_energy_residual']:.1e} "
            f"| {diff:.1e} |")
    return "\n".join(lines)


def markdown_methods(d) -> str:
    """The table of a run over several step solvers (--methods)."""
    where = "unit cube, P1 tetrahedra" if d.get("dim") == 3 else "unit square, P1 triangles"
    lines = [f"# {d['family']} trajectories: which step solver pays ({where})", "",
             f"Generated by `benchmarks/bench_trajectory.py` on {d['date']}. Machine: {d['machine']}.",
             f"n = {d['n']} cells per side, dt = {d['dt']:g}; seconds per trajectory (mean over "
             "the samples), set-up included. reuse: one sparse factorization per trajectory, "
             "two triangular solves per step; amg: one pyamg SA hierarchy, CG (GMRES for "
             "nonsymmetric) per step from the previous step, rtol 1e-10; auto: AMG on step 1, "
             "the factorization projected from two patches of the step matrix and made only "
             "where it can pay, then the cheaper measured way "
             "(`femno.datagen.step_solver`); naive: scikit-fem assembly + `spsolve` every step "
             "(the loop a user writes; `extrapolated` = run for fewer steps, per-step time "
             "scaled). allen-cahn (nonlinear): implicit Euler with chord Newton, its kept "
             "Jacobian solved by each way; naive is full Newton with `spsolve`; the theta "
             "column does not apply to it. heat-varying (a new step matrix every step): "
             "reuse refactorizes each step with the symbolic analysis kept, amg updates the "
             "hierarchy's coarse operators for each step matrix, recycle adds a deflation "
             "space carried across steps (deflated CG), hypre sets up BoomerAMG (PETSc) "
             "per step, auto measures the four "
             "(`femno.datagen.varying_step`); naive assembles with scikit-fem and calls "
             "`spsolve`. Targets (issue 20): >= 5x over naive; auto near the best.", "",
             "| theta | dofs | steps | " + " | ".join(f"{m} s" for m in d["methods"])
             + " | best | auto / best | naive / best | auto chose | max rel. difference to "
             + d["methods"][0] + " |",
             "|---|---|---|" + "---|" * (len(d["methods"]) + 5)]
    for r in d["rows"]:
        cells = []
        for m in d["methods"]:
            c = f"{r[m]['s_per_trajectory']:.3g}"
            if r[m].get("steps_run", r["steps"]) < r["steps"]:
                c += f" (extrapolated from {r[m]['steps_run']} steps)"
            cells.append(c)
        auto = r.get("auto", {})
        lines.append(
            f"| {r['theta']:g} | {r['dofs']:,} | {r['steps']} | " + " | ".join(cells)
            + f" | {r.get('best')} | {r.get('auto_over_best', float('nan')):.2f} "
            f"| {r.get('naive_over_best', float('nan')):.1f}x "
            f"| {', '.join(auto.get('solver', [])) or '-'} "
            f"| {', '.join(f'{k} {v:.1e}' for k, v in r['max_difference'].items())} |")
    lines += ["", "auto's reasons (last sample of each row):", ""]
    lines += [f"* theta {r['theta']:g}: {r['auto']['explanation']}" for r in d["rows"] if "auto" in r]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
