"""EquiNO benchmark: accuracy against FE test snapshots and stress+tangent evaluation cost.

For every RVE: FE snapshots at Latin-hypercube strains (training seed 0, test seed 1;
published setup: 100 training and 100 test samples), EquiNO trained on the training
snapshots (physics-informed loss, Adam then L-BFGS, float64), then

* median relative L2 errors (%) of u_x, u_y, sigma_xx, sigma_yy, sigma_xy and of the
  homogenized stress on the test snapshots, next to the published EquiNO numbers
  (SPEC §2);
* time per point of stress + tangent: ``RVESolver`` (full FE, one point at a time),
  EquiNO (batched, autodiff tangent) and a bare MLP 3 -> 4x64 SiLU -> 3 of the same
  size with its autodiff tangent, on ``--device``.

Snapshots are cached as ``.npz`` under ``--data-dir`` (default /tmp), solved in
``--workers`` processes.

Usage::

    python benchmarks/bench_equino.py --rves RVE1 --train 100 --test 100 --workers 16 --device cuda
    python benchmarks/bench_equino.py --rves RVE3 --train 8 --test 4 --epochs 50 --lbfgs-iters 20 \\
        --out /tmp/eq   # quick check
    python benchmarks/bench_equino.py --rves RVE3 --init lm --collocation 1000 --epochs 0 \\
        --lbfgs-iters 0   # LM-initialized EquiNO (see results/equino.md)
    python benchmarks/bench_equino.py --rves RVE1 --tangent-timing 16 64 1024 --out /tmp/tt
        # CPU time per stress_and_tangent call, methods ad / forward / numpy

Results: ``benchmarks/results/equino.{json,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from femno import __version__
from femno.multiscale.rve_solver import RVESolver
from femno.multiscale.snapshots import lhs_strains
from femno.operators.equino import mlp
from femno.operators.equino_train import relative_errors, train_equino

PUBLISHED = {  # SPEC §2, EquiNO median relative L2 error in %
    "RVE1": {"u_x": 1.47, "u_y": 0.84, "sigma_xx": 0.68, "sigma_yy": 0.93, "sigma_xy": 4.64},
    "RVE2": {"u_x": 0.70, "u_y": 0.80, "sigma_xx": 1.41, "sigma_yy": 1.54, "sigma_xy": 6.36},
    "RVE3": {"u_x": 0.92, "u_y": 3.24, "sigma_xx": 0.70, "sigma_yy": 0.58, "sigma_xy": 6.35},
}
_SOLVER = {}


def _init(rve):
    torch.set_num_threads(1)
    _SOLVER["s"] = RVESolver(rve)


def _solve(e):
    r = _SOLVER["s"].solve(e, tangent=False)
    return r.fluctuation, r.stress_ip, r.stress, r.newton_iterations, r.seconds


def snapshots(rve: str, n: int, seed: int, workers: int, data_dir: Path) -> dict:
    path = data_dir / f"equino-{rve}-n{n}-s{seed}.npz"
    if not path.is_file():
        E = lhs_strains(n, seed=seed)
        ctx = mp.get_context("forkserver")
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(rve,)) as pool:
            res = list(pool.map(_solve, E))
        np.savez(path, strain=E, fluctuation=np.stack([r[0] for r in res]),
                 stress_ip=np.stack([r[1] for r in res]), stress=np.stack([r[2] for r in res]),
                 iterations=np.array([r[3] for r in res]), seconds=np.array([r[4] for r in res]))
    z = np.load(path)
    return {k: z[k] for k in z.files}


def pod_projection_errors(model, data) -> dict:
    """Median relative L2 error (%) of the best POD approximation of the test fields."""
    pu, ps = model.phi_u.cpu().numpy(), model.phi_s.cpu().numpy()
    S = data["strain"].shape[0]
    U, Sg = data["fluctuation"].reshape(S, -1), data["stress_ip"].reshape(S, -1)
    Up, Sp = (U @ pu) @ pu.T, (Sg @ ps) @ ps.T

    def med(a, b):
        return float(np.median(100 * np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))

    out = {"u_x": med(Up[:, 0::2], U[:, 0::2]), "u_y": med(Up[:, 1::2], U[:, 1::2])}
    for j, f in enumerate(("sigma_xx", "sigma_yy", "sigma_xy")):
        out[f] = med(Sp[:, j::3], Sg[:, j::3])
    return out


def loss_of_fe_solution(model, data) -> dict:
    """Physics loss on the test strains: trained networks vs POD projection of the FE fields."""
    dev = model.phi_u.device
    S = data["strain"].shape[0]
    e = torch.as_tensor(data["strain"], device=dev)
    U = torch.as_tensor(data["fluctuation"].reshape(S, -1), device=dev)
    Sg = torch.as_tensor(data["stress_ip"].reshape(S, -1), device=dev)
    with torch.no_grad():
        fe = (model.residual(e, (U @ model.phi_u, Sg @ model.phi_s)) ** 2).sum(-1).mean()
        net = model.loss(e)
    return {"networks": float(net), "fe_projection": float(fe)}


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_per_point(fn, x, device, repeats=3) -> float:
    fn(x)  # warm-up
    _sync(device)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best / x.shape[0]


def eval_timings(model, device, points: int, solver: RVESolver, fe_points: int) -> dict:
    from torch.func import jacfwd, vmap

    model = model.to(device).eval()
    x = torch.as_tensor(lhs_strains(points, seed=7), device=device)
    t_eq = time_per_point(model.stress_and_tangent_torch, x, device)  # forward-mode tangent
    t_ad = time_per_point(lambda e: model.stress_and_tangent_torch(e, method="ad"), x, device)
    torch.manual_seed(0)
    bare = mlp(3, 3).to(device)

    def bare_fn(e):
        def one(v):
            s = bare(v[None] / 0.04)[0]
            return s, s

        with torch.no_grad():
            return vmap(jacfwd(one, has_aux=True))(e)

    t_mlp = time_per_point(bare_fn, x, device)
    E = lhs_strains(fe_points, seed=8)
    t = time.perf_counter()
    solver.stress_and_tangent(E)
    t_fe = (time.perf_counter() - t) / fe_points
    return {"points": points, "equino_s_per_point": t_eq, "equino_ad_s_per_point": t_ad,
            "bare_mlp_s_per_point": t_mlp,
            "equino_over_mlp": t_eq / t_mlp, "fe_points": fe_points, "fe_s_per_point": t_fe,
            "fe_over_equino": t_fe / t_eq}


def tangent_timings(rve: str, batches, *, repeats: int = 50, modes: int = 16) -> dict:
    """Seconds per ``EquiNO.stress_and_tangent`` call on CPU (threads as set), per method.

    The cost does not depend on the weights or the POD bases, so the model is built from
    random "snapshots" of ``rve`` (untrained).  Best of ``repeats`` calls.
    """
    from femno.operators.equino import EquiNO

    solver = RVESolver(rve)
    rng = np.random.default_rng(0)
    model = EquiNO.from_snapshots(solver, rng.normal(size=(modes, solver.rve.n_nodes, 2)),
                                  rng.normal(size=(modes, solver.n_ip, 3)), modes=modes)
    out = {}
    for n in batches:
        e = lhs_strains(int(n), seed=3)
        row = {}
        for method in ("ad", "forward", "numpy"):
            model.stress_and_tangent(e, method=method)
            best = np.inf
            for _ in range(repeats):
                t = time.perf_counter()
                model.stress_and_tangent(e, method=method)
                best = min(best, time.perf_counter() - t)
            row[method] = best
        row["ad_over_numpy"] = row["ad"] / row["numpy"]
        out[int(n)] = row
        print(f"batch {n}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rves", nargs="+", default=["RVE1", "RVE2", "RVE3"])
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--modes", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3000)
    p.add_argument("--lbfgs-iters", type=int, default=1000)
    p.add_argument("--collocation", type=int, default=0)
    p.add_argument("--loss", default="stress", choices=("stress", "compliance"))
    p.add_argument("--init", default="random", choices=("random", "lm"),
                   help="train_equino init (lm: fit to per-strain LM minimizers first)")
    p.add_argument("--fit-lbfgs-iters", type=int, default=10000, help="--init lm fit budget")
    p.add_argument("--collocation-small", type=int, default=0,
                   help="small-magnitude collocation strains (train_equino collocation_small)")
    p.add_argument("--fit-weighting", default="absolute", choices=("absolute", "relative"))
    p.add_argument("--zero-origin", action="store_true", help="networks exactly 0 at zero strain")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--points", type=int, default=100000, help="batch of the evaluation timing")
    p.add_argument("--fe-points", type=int, default=2, help="points of the FE timing")
    p.add_argument("--save-models", default=None, metavar="DIR",
                   help="save each trained model as DIR/equino-RVE.pt (for bench_fe2 --model)")
    p.add_argument("--data-dir", default="/tmp", help="snapshot cache directory")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--note", default="", help="remark recorded with the results (e.g. shared machine)")
    p.add_argument("--tangent-timing", nargs="*", type=int, metavar="BATCH", default=None,
                   help="only time stress_and_tangent per call on CPU (one thread) for the "
                   "methods ad / forward / numpy at these batches (e.g. 16 64 1024); writes "
                   "equino-tangent-cpu.json under --out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.tangent_timing is not None:
        batches = args.tangent_timing or [16, 64, 1024]
        res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "numpy": np.__version__, "note": args.note},
               "rve": args.rves[0], "seconds_per_call": tangent_timings(args.rves[0], batches)}
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "equino-tangent-cpu.json").write_text(json.dumps(res, indent=1))
        return 0
    data_dir, out = Path(args.data_dir), Path(args.out)
    data_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "cpus": os.cpu_count(), "torch": torch.__version__, "femno": __version__,
               "device": args.device,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    results = {"machine": machine, "settings": vars(args), "rves": {}}
    for rve in args.rves:
        t = time.perf_counter()
        tr = snapshots(rve, args.train, 0, args.workers, data_dir)
        te = snapshots(rve, args.test, 1, args.workers, data_dir)
        snap_s = time.perf_counter() - t
        solver = RVESolver(rve)
        te["rve"] = solver.rve
        tr["rve"], tr["settings"] = solver.rve, {"bound": 0.04}
        res = train_equino(tr, modes=args.modes, epochs=args.epochs, lbfgs_iters=args.lbfgs_iters,
                           collocation=args.collocation, device=args.device, progress=False,
                           loss=args.loss, init=args.init, fit_lbfgs_iters=args.fit_lbfgs_iters,
                           collocation_small=args.collocation_small,
                           fit_weighting=args.fit_weighting, zero_origin=args.zero_origin)
        model = res.pop("model")
        if args.save_models:
            from femno.operators.checkpoint import save_model

            Path(args.save_models).mkdir(parents=True, exist_ok=True)
            save_model(model, Path(args.save_models) / f"equino-{rve}.pt",
                       meta={"train_seconds": res.get("train_seconds"), "rve": rve,
                                 "settings": {k: v for k, v in vars(args).items()
                                              if isinstance(v, (int, float, str, type(None)))}})
        errs = relative_errors(model, te)
        proj = pod_projection_errors(model, te)
        losses = loss_of_fe_solution(model, te)
        entry = {"median_error_pct": {k: float(np.median(v)) for k, v in errs.items()},
                 "mean_error_pct": {k: float(np.mean(v)) for k, v in errs.items()},
                 "published_pct": PUBLISHED.get(rve), "pod_projection_median_pct": proj,
                 "test_loss": losses, "train_seconds": res["train_seconds"],
                 "initial_loss": res["initial_loss"], "final_loss": res["final_loss"],
                 "snapshot_seconds_wall": snap_s,
                 "fe_mean_newton_iterations": float(tr["iterations"].mean()),
                 "fe_mean_solve_seconds": float(tr["seconds"].mean()),
                 "timing": eval_timings(model, args.device, args.points, solver, args.fe_points)}
        results["rves"][rve] = entry
        print(rve, json.dumps(entry, indent=1), flush=True)
        (out / "equino.json").write_text(json.dumps(results, indent=1))
        (out / "equino.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results) -> str:
    s = results["settings"]
    lines = ["# EquiNO benchmark", "",
             f"Machine: {results['machine']}.", "",
             f"Setup: {s['train']} training / {s['test']} test FE snapshots (LHS in [-0.04, 0.04]^3), "
             f"r = {s['modes']} POD modes, Adam {s['epochs']} epochs + L-BFGS {s['lbfgs_iters']} "
             f"iterations, float64, {s['collocation']} extra collocation strains, loss "
             f"{s.get('loss', 'stress')}, init {s.get('init', 'random')}. {s['note']}", "",
             "## Median relative L2 error (%) on the test snapshots (femno / published EquiNO)", "",
             "| field | " + " | ".join(results["rves"]) + " |",
             "|---|" + "---|" * len(results["rves"])]
    for f in ("u_x", "u_y", "sigma_xx", "sigma_yy", "sigma_xy", "stress", "u_x_total", "u_y_total"):
        row = []
        for e in results["rves"].values():
            pub = (e["published_pct"] or {}).get(f)
            row.append(f"{e['median_error_pct'][f]:.2f}" + (f" / {pub:.2f}" if pub else ""))
        lines.append(f"| {f} | " + " | ".join(row) + " |")
    lines += ["", "POD best-approximation error (%, median over the test set, r modes): "
              + "; ".join(f"{r}: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                e["pod_projection_median_pct"].items())
                          for r, e in results["rves"].items())]
    lines += ["", "## Training and evaluation cost", "",
              "| RVE | train s | FE s/point (stress+tangent) | EquiNO s/point | EquiNO AD s/point "
              "| bare MLP s/point | EquiNO/MLP | FE/EquiNO |", "|---|---|---|---|---|---|---|---|"]
    for r, e in results["rves"].items():
        t = e["timing"]
        lines.append(f"| {r} | {e['train_seconds']:.1f} | {t['fe_s_per_point']:.3g} | "
                     f"{t['equino_s_per_point']:.3g} | {t.get('equino_ad_s_per_point', np.nan):.3g} | "
                     f"{t['bare_mlp_s_per_point']:.3g} | "
                     f"{t['equino_over_mlp']:.2f} | {t['fe_over_equino']:.3g} |")
    lines += ["", f"Evaluation batch: {s['points']} points on {s['device']}; FE: "
              f"{s['fe_points']} points with RVESolver (serial, one CPU core).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
