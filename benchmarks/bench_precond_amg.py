"""Learned smoothed aggregation against pyamg SA and its own ablation (issue 17).

Rows: femno Darcy (log-normal coefficient) on jittered Delaunay meshes of the unit
square, ``--sizes`` cells per side (none of them seen in training: the model trains on
12-32 cells per side, seeds 0-7), and 3-D Poisson-type Darcy on tetrahedra of the unit
cube (``--sizes3d``; the 2-D model, never trained in 3-D).  Three columns, all PCG to
the true relative residual 1e-8 from a seeded random b, one thread, in one process:

* ``pyamg SA``: ``pyamg.smoothed_aggregation_solver(A)`` (the library, defaults);
* ``ablation``: femno's SA hierarchy with SA's classical damping, i.e. the learned
  method's structure without its learned part (same code path as the learned one);
* ``learned``: :class:`femno.operators.precond_amg.LearnedSA` from ``--model``;
* ``tuned theta`` (models with a learned strength, ``femno train precond --kind amg
  --strength``): femno's SA hierarchy with the classical symmetric strength at the
  threshold the model's training found best (``meta["strength"]["theta_tuned"]``): the
  learned strength against the classical rule tuned on the same data.

Setup (hierarchy, including the network) and solve are timed apart (CPU time).
``--oracle`` adds the upper bound of the structure on one 961-dof matrix: per-row
damping optimised for that matrix alone (free parameters, Adam on the two-grid rate).

Usage::

    femno train precond --family darcy --kind amg --out build/darcy_sa.pt
    python benchmarks/bench_precond_amg.py --model build/darcy_sa.pt --sizes 128 256 512 1000 \
        --sizes3d 16 24 40 --oracle

Writes ``benchmarks/results/precond-amg.json`` and the table ``precond-amg.table.md``
(``--out`` elsewhere); ``precond-amg.md`` is the page that reads them.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyamg  # noqa: E402
import torch  # noqa: E402

from femno import __version__  # noqa: E402
from femno.operators.checkpoint import load_model  # noqa: E402
from femno.operators.precond_amg import pcg_iterations, sa_hierarchy, sa_level, two_grid_rate  # noqa: E402
from femno.operators.precond_strength import threshold_strength  # noqa: E402

RTOL = 1e-8


def darcy2d(n: int, seed: int):
    from femno.fem import get_family, unstructured_square

    fam = get_family("darcy", mesh=unstructured_square(n, seed=seed))
    return fam.assemble(fam.sample(np.random.default_rng(seed))).A.tocsr()


def darcy3d(n: int, seed: int):
    import skfem

    from femno.fem import get_family

    fam = get_family("darcy", mesh=skfem.MeshTet.init_tensor(*(np.linspace(0, 1, n + 1),) * 3),
                     element=skfem.ElementTetP1())
    return fam.assemble(fam.sample(np.random.default_rng(seed))).A.tocsr()


def timed(build, A, seed):
    t0 = time.process_time()
    ml = build(A)
    t1 = time.process_time()
    b = np.random.default_rng(seed).standard_normal(A.shape[0])
    res: list = []
    x = ml.solve(b, tol=RTOL, accel="cg", residuals=res, maxiter=1000)
    t2 = time.process_time()
    rel = float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))
    return {"its": len(res) - 1, "setup": t1 - t0, "solve": t2 - t1, "total": t2 - t0,
            "complexity": float(ml.operator_complexity()), "residual": rel,
            "converged": rel <= RTOL * 1.01}


def row(name, A, model, seed):
    methods = {"pyamg SA": lambda M: pyamg.smoothed_aggregation_solver(M),
               "ablation": lambda M: sa_hierarchy(M),
               "learned": lambda M: model.hierarchy(M)}
    theta = tuned_theta(model)
    if theta is not None:  # the learned strength's classical rival: the tuned threshold
        methods["tuned theta"] = lambda M: sa_hierarchy(M, strength=threshold_strength(theta))
    out = {"problem": name, "dofs": int(A.shape[0]), "nnz": int(A.nnz)}
    for key, build in methods.items():
        out[key] = timed(build, A, seed)
        r = out[key]
        print(f"{name:>16s} {A.shape[0]:>8d}  {key:>9s}: {r['its']:>3d} its  setup "
              f"{r['setup']:6.2f} s  solve {r['solve']:6.2f} s  OC {r['complexity']:.3f}",
              flush=True)
    return out


def tuned_theta(model):
    """The classical threshold a learned-strength model's training found, or None."""
    if getattr(model, "strength_head", None) is None:
        return None
    return float((getattr(model, "meta", None) or {}).get("strength", {}).get("theta_tuned", 0.0))


def oracle(seed: int = 1, steps: int = 150) -> dict:
    """Per-matrix optimal level-0 damping of one 961-dof matrix: the structure's bound."""
    A = darcy2d(32, seed)
    lv = sa_level(A, np.ones((A.shape[0], 1)))
    w0 = (4.0 / 3.0) / lv["rho"]
    Ad, Td, Gd = (torch.as_tensor(M.toarray()) for M in (A, lv["T"], lv["G"]))
    w = torch.full((A.shape[0],), w0, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([w], lr=0.02)
    for _ in range(steps):
        X = torch.randn(A.shape[0], 32, generator=gen, dtype=torch.float64)
        loss = two_grid_rate(Ad, Td - w[:, None] * Gd, X, k=8)
        opt.zero_grad()
        loss.backward()
        opt.step()
    X = torch.randn(A.shape[0], 64, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        r_cl = float(np.exp(float(two_grid_rate(Ad, Td - w0 * Gd, X, k=25))))
        r_opt = float(np.exp(float(two_grid_rate(Ad, Td - w[:, None] * Gd, X, k=25))))
    wopt = w.detach().numpy()

    def omega(M, level):
        if M.shape[0] == A.shape[0]:
            return wopt
        return np.full(M.shape[0], (4.0 / 3.0) / level["rho"])

    return {"dofs": int(A.shape[0]), "two_grid_rate_classical": r_cl,
            "two_grid_rate_optimal": r_opt,
            "its_classical": pcg_iterations(sa_hierarchy(A), A, seed=seed),
            "its_optimal_level0": pcg_iterations(sa_hierarchy(A, omega=omega), A, seed=seed)}


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "pyamg": pyamg.__version__,
            "femno": __version__, "threads": torch.get_num_threads()}


def fmt(r):
    return f"{r['its']} / {r['total']:.2f} s" + ("" if r["converged"] else " (not converged)")


def write(records, orc, args, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": str(args.model), "machine": machine(), "rtol": RTOL,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model_meta":
            getattr(load_model(args.model), "meta", {})}
    path.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "rows": records, "oracle": orc}, indent=1, default=str))
    tuned = any("tuned theta" in r for r in records)
    lines = ["| problem | dofs | pyamg SA its / CPU s | ablation (SA values, same code) "
             + ("| tuned theta (classical) " if tuned else "")
             + "| learned | learned/SA its | learned/ablation its "
             + ("| learned/tuned its " if tuned else "")
             + "| learned/SA time | OC SA / " + ("tuned / " if tuned else "") + "learned |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if tuned else "")]
    for r in records:
        s, a, lr = r["pyamg SA"], r["ablation"], r["learned"]
        t = r.get("tuned theta")
        lines.append(f"| {r['problem']} | {r['dofs']:,} | {fmt(s)} | {fmt(a)} | "
                     + (f"{fmt(t)} | " if t else "") + f"{fmt(lr)} | "
                     f"{lr['its'] / s['its']:.2f} | {lr['its'] / a['its']:.2f} | "
                     + (f"{lr['its'] / t['its']:.2f} | " if t else "")
                     + f"{lr['total'] / s['total']:.2f} | {s['complexity']:.3f} / "
                     + (f"{t['complexity']:.3f} / " if t else "")
                     + f"{lr['complexity']:.3f} |")
    table = "\n".join(lines)
    path.with_name(path.name + ".table.md").write_text(table + "\n")
    print(table)
    if orc:
        print(json.dumps(orc, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--model", required=True, help="LearnedSA model (femno train precond --kind amg)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[128, 256, 512],
                    help="2-D Darcy: cells per side of the Delaunay square (default 128 256 512)")
    ap.add_argument("--sizes3d", type=int, nargs="*", default=[16, 24],
                    help="3-D Darcy: cells per side of the cube (default 16 24)")
    ap.add_argument("--oracle", action="store_true", help="add the per-matrix optimum bound")
    ap.add_argument("--seed", type=int, default=101, help="mesh/sample seed (default 101)")
    ap.add_argument("--out", default="benchmarks/results/precond-amg",
                    help="output stem (default benchmarks/results/precond-amg)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model, kind="precond-amg")
    records = [row("darcy 2-D", darcy2d(n, args.seed), model, args.seed) for n in args.sizes]
    records += [row("darcy 3-D", darcy3d(n, args.seed), model, args.seed) for n in args.sizes3d]
    orc = oracle() if args.oracle else None
    write(records, orc, args, Path(args.out))


if __name__ == "__main__":
    main()
