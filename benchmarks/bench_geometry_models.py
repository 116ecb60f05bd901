"""Surrogates on geometries and resolutions they were not trained on (issue 22, items 2-3).

One geometry dataset for training (Darcy on random disks, L-shapes and holed squares,
mesh size h = 0.04), three test sets never used in training or tuning:

* ``in-distribution``: the training shapes and h, new seeds;
* ``held-out shape``: T-shapes (never seen), same h;
* ``finer mesh``: the training shapes at h = 0.02 (4x the vertices).

Three models with the same wall-clock training budget on the same data: SPON-MG with
geometry features (signed distance, absolute positions), its ablation (the same network
without them: SPON-MG's single-mesh defaults) and the SDF-trunk DeepONet
(:mod:`femno.operators.geometry_models`). Reported: median and 90th percentile of the
relative L2 (mass-norm) error per test set and the ratios to the in-distribution error
(targets: held-out <= 2x in-distribution and <= 5 %; finer mesh <= 1.5x).

    python benchmarks/bench_geometry_models.py --train 200 --budget 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from femno.datagen.generate_geometry import generate_geometry_dataset
from femno.operators.geometry_models import (
    deeponet_predict,
    geometry_samples,
    relative_errors,
    spon_predict,
    train_geometry_spon,
    train_sdf_deeponet,
)

HERE = Path(__file__).resolve().parent
TRAIN_SHAPES = ["disk", "lshape", "holes"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="darcy", choices=["poisson", "darcy", "elasticity"])
    ap.add_argument("--train", type=int, default=200, help="training samples")
    ap.add_argument("--test", type=int, default=40, help="samples per test set")
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per model")
    ap.add_argument("--train-h", type=float, nargs="+", default=[0.04], metavar="H",
                    help="mesh size of the training set: one value, or LO HI (each training "
                    "sample draws its own; the test sets keep h 0.04 and 0.02)")
    ap.add_argument("--tag", default="", help="suffix of the results file names")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="femno-geo-"))
    train_h = a.train_h[0] if len(a.train_h) == 1 else list(a.train_h)
    sets = {"train": dict(shapes=TRAIN_SHAPES, h=train_h, seed=0, samples=a.train),
            "in-distribution": dict(shapes=TRAIN_SHAPES, h=0.04, seed=1, samples=a.test),
            "held-out shape (tshape)": dict(shapes=["tshape"], h=0.04, seed=2, samples=a.test),
            "finer mesh (h 0.02)": dict(shapes=TRAIN_SHAPES, h=0.02, seed=3,
                                        samples=max(10, a.test // 2))}
    items, gen = {}, {}
    for name, kw in sets.items():
        d = work / name.split()[0]
        s = generate_geometry_dataset(a.problem, out=d, progress=False, **kw)
        gen[name] = {"samples": s["done"], "seconds": s["total_s"], "max_points": s["max_points"],
                     "max_residual": s["max_residual"], **kw}
        items[name] = geometry_samples(d)
        print(f"{name}: {s['done']} samples in {s['total_s']:.1f} s (<= {s['max_points']} vertices)")
    budget = a.budget
    models = {}
    t = time.perf_counter()
    m, h = train_geometry_spon(items["train"], epochs=10_000, time_limit=budget, log=None)
    models["spon-mg (sdf, absolute positions)"] = (lambda it, m=m: spon_predict(m, it), h)
    print(f"spon-mg: {len(h['loss'])} epochs, {time.perf_counter() - t:.0f} s, loss {h['loss'][-1]:.3e}")
    t = time.perf_counter()
    m0, h = train_geometry_spon(items["train"], epochs=10_000, time_limit=budget,
                                geometry_features=False)
    models["spon-mg ablation (no sdf, box positions)"] = (lambda it, m=m0: spon_predict(m, it), h)
    print(f"spon-mg ablation: {len(h['loss'])} epochs, {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    d, h = train_sdf_deeponet(items["train"], epochs=10_000, time_limit=budget, log=None)
    models["sdf-deeponet"] = (lambda it, d=d: deeponet_predict(d, it), h)
    print(f"sdf-deeponet: {len(h['loss'])} epochs, {time.perf_counter() - t:.0f} s, loss {h['loss'][-1]:.3e}")
    rows = []
    for mname, (pred, h) in models.items():
        res = {}
        for name in list(sets)[1:]:
            e = relative_errors(pred, items[name])
            res[name] = {"median": float(np.median(e)), "p90": float(np.quantile(e, 0.9)),
                         "max": float(e.max())}
        base = res["in-distribution"]["median"]
        rows.append({"model": mname, "epochs": len(h["loss"]), "train_s": h["seconds"],
                     "final_loss": h["loss"][-1], "errors": res,
                     "ratio_held_out": res["held-out shape (tshape)"]["median"] / base,
                     "ratio_finer": res["finer mesh (h 0.02)"]["median"] / base})
        print(mname, {k: f"{v['median']:.3%}" for k, v in res.items()})
    out = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                      f"torch {torch.__version__}, one thread",
           "problem": a.problem, "budget_s": budget, "datasets": gen, "models": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = ("geometry-models" if a.problem == "darcy" else f"geometry-models-{a.problem}") \
        + (f"-{a.tag}" if a.tag else "")
    (a.out / f"{stem}.json").write_text(json.dumps(out, indent=1))
    (a.out / f"{stem}.md").write_text(markdown(out))
    print(f"wrote {a.out / stem}.md")


def markdown(d) -> str:
    sets = list(d["models"][0]["errors"])
    lines = [f"# {d['problem']} surrogates on unseen geometries and resolutions", "",
             f"Generated by `benchmarks/bench_geometry_models.py` on {d['date']}; {d['machine']}.",
             f"Each model trained for {d['budget_s']:.0f} s of wall time on the same "
             f"{d['datasets']['train']['samples']} samples ({', '.join(d['datasets']['train']['shapes'])}, "
             f"h {d['datasets']['train']['h']}); no test set was used in training or tuning. "
             "Errors: relative L2 in the FE mass norm on each sample's own mesh. Targets "
             "(issue 22): held-out <= 2x in-distribution and <= 5 % (Darcy); finer mesh <= 1.5x.", "",
             "| model | epochs | " + " | ".join(f"{s} median / p90" for s in sets)
             + " | held-out / in-dist. | finer / in-dist. |",
             "|---|---|" + "---|" * len(sets) + "---|---|"]
    for r in d["models"]:
        cells = [f"{r['errors'][s]['median']:.1%} / {r['errors'][s]['p90']:.1%}" for s in sets]
        lines.append(f"| {r['model']} | {r['epochs']} | " + " | ".join(cells)
                     + f" | {r['ratio_held_out']:.2f} | {r['ratio_finer']:.2f} |")
    lines += ["", "Against the targets (computed from the table):", ""]
    for r in d["models"]:
        held = r["errors"]["held-out shape (tshape)"]["median"]
        checks = [f"held-out/in-dist. {r['ratio_held_out']:.2f} "
                  f"({'met' if r['ratio_held_out'] <= 2 else 'missed'})",
                  f"held-out {held:.1%} vs 5 % ({'met' if held <= 0.05 else f'missed by {held / 0.05:.1f}x'})",
                  f"finer/in-dist. {r['ratio_finer']:.2f} "
                  f"({'met' if r['ratio_finer'] <= 1.5 else 'missed'})"]
        base = r["errors"]["in-distribution"]["median"]
        if base > 0.2:  # a ratio of two failures is no evidence of transfer
            checks.append(f"in-distribution {base:.0%}: the model has not learned the "
                          "problem at this budget, so its ratios say nothing about transfer")
        lines.append(f"* {r['model']}: " + "; ".join(checks) + f"; final training loss "
                     f"(mean squared relative error) {r['final_loss']:.2e}")
    lines += ["", "Datasets (generated in the run, femno generate --geometry):", ""]
    for name, g in d["datasets"].items():
        lines.append(f"* {name}: {g['samples']} samples, shapes {', '.join(g['shapes'])}, h {g['h']}, "
                     f"seed {g['seed']}, <= {g['max_points']} vertices, max residual "
                     f"{g['max_residual']:.1e}, {g['seconds']:.1f} s")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
