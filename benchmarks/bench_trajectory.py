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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="heat",
                   choices=("heat", "advection-diffusion", "wave", "allen-cahn"),
                   help="heat (CHOLMOD), advection-diffusion (nonsymmetric: LU), wave "
                   "(Newmark; --theta unused) or allen-cahn (Newton: chord reuse vs full "
                   "Newton with spsolve; --theta unused)")
    p.add_argument("--n", type=int, default=316, help="cells per side (default 316: 100,489 dofs)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--samples", type=int, default=2, help="trajectories per method (default 2)")
    p.add_argument("--theta", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--dt", type=float, default=0.001)
    p.add_argument("--out", default=str(HERE / "results" / "trajectory"))
    a = p.parse_args(argv)
    fam = get_family(a.family, n=a.n)
    warm = get_family(a.family, n=8)  # imports and first-call costs (CHOLMOD, scikit-fem) untimed
    for method in ("reuse", "naive"):
        solve_trajectory(warm, sample_params(warm, 0, 0), steps=1, method=method)
    rows = []
    for theta in a.theta:
        row = {"theta": theta, "dofs": int(fam.basis.N), "steps": a.steps, "samples": a.samples}
        us = {}
        for method in ("reuse", "naive"):
            secs, res, en, setup = [], 0.0, 0.0, []
            for i in range(a.samples):
                params = sample_params(fam, 0, i)
                t = time.perf_counter()
                tr = solve_trajectory(fam, params, steps=a.steps, dt=a.dt, theta=theta, method=method)
                secs.append(time.perf_counter() - t)
                setup.append(tr.setup_s)
                res, en = max(res, tr.residuals.max()), max(en, np.abs(tr.energy_residual).max())
                us.setdefault(method, []).append(tr.u)
            row[method] = {"s_per_trajectory": float(np.mean(secs)), "setup_s": float(np.mean(setup)),
                           "max_residual": float(res), "max_energy_residual": float(en)}
            print(f"theta {theta} {method:6s} {np.mean(secs):8.2f} s/trajectory "
                  f"(setup {np.mean(setup):.2f} s)", flush=True)
        row["ratio_naive_over_reuse"] = row["naive"]["s_per_trajectory"] / row["reuse"]["s_per_trajectory"]
        row["max_difference"] = float(max(np.abs(x - y).max() / np.abs(y).max()
                                          for x, y in zip(us["reuse"], us["naive"], strict=True)))
        rows.append(row)
    out = {"machine": machine(), "family": a.family, "n": a.n, "dt": a.dt, "rows": rows,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(a.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    Path(a.out + ".md").write_text(markdown(out) + "\n")
    print(f"wrote {a.out}.json / .md")


def markdown(d) -> str:
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
        lines.append(
            f"| {r['theta']:g} | {r['dofs']:,} | {r['steps']} | {r['samples']} "
            f"| {r['naive']['s_per_trajectory']:.3g} | {r['reuse']['s_per_trajectory']:.3g} "
            f"| {r['reuse']['setup_s']:.3g} | **{r['ratio_naive_over_reuse']:.1f}x** "
            f"| {r['reuse']['max_residual']:.1e} / {r['naive']['max_residual']:.1e} "
            f"| {r['reuse']['max_energy_residual']:.1e} / {r['naive']['max_energy_residual']:.1e} "
            f"| {r['max_difference']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
