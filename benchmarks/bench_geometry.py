"""A surrogate off its training mesh: SPON trained on one mesh, evaluated on others (issue 22).

Reproduces the issue's measurement with femno's own tools: ``femno generate darcy``
(``--train-samples`` samples on the unit square with ``--n`` cells per side),
``femno train spon --arch spon-mg`` (``--epochs``), then
:func:`femno.operators.evaluation.evaluate_model` (what ``femno eval`` runs) on
``--test-samples`` samples of each test mesh: the training mesh itself (new samples), a
finer unit square, a jittered Delaunay square, an L-shape and a Delaunay disk.  Reports
median and max relative L2 errors (mass norm) and the extrapolation warnings.

Usage::

    python benchmarks/bench_geometry.py                      # the issue's recipe (~10 min)
    python benchmarks/bench_geometry.py --train-samples 100 --epochs 10 --out /tmp/geo

Writes ``benchmarks/results/geometry.{md,json}`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from femno import __version__


def test_meshes(n: int) -> dict:
    from femno.fem.mesh import lshape, unit_square, unstructured_disk, unstructured_square

    return {f"unit square {n} (training mesh, new samples)": unit_square(n),
            f"unit square {2 * n} (finer)": unit_square(2 * n),
            f"unstructured square {n}": unstructured_square(n, seed=0),
            f"L-shape {3 * n // 4}": lshape(3 * n // 4),
            f"unstructured disk {n}": unstructured_disk(n, seed=0)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--n", type=int, default=32, help="training mesh cells per side (32)")
    ap.add_argument("--train-samples", type=int, default=400, help="training samples (400)")
    ap.add_argument("--test-samples", type=int, default=20, help="samples per test mesh (20)")
    ap.add_argument("--epochs", type=int, default=60, help="SPON epochs (60)")
    ap.add_argument("--work", default=None, help="directory for datasets and the model")
    ap.add_argument("--out", default="benchmarks/results/geometry", help="output stem")
    args = ap.parse_args(argv)

    from femno.cli.main import main as femno
    from femno.datagen import generate_dataset
    from femno.operators.checkpoint import load_model
    from femno.operators.evaluation import evaluate_model
    from femno.operators.fe_data import FEData

    work = Path(args.work or tempfile.mkdtemp(prefix="femno-geo-"))
    train = work / "train.femno"
    t0 = time.perf_counter()
    generate_dataset("darcy", samples=args.train_samples, out=train,
                     family_options={"n": args.n}, method="direct", progress=False)
    model_path = work / "spon.pt"
    t1 = time.perf_counter()
    rc = femno(["train", "spon", "--data", str(train), "--out", str(model_path), "--arch",
                "spon-mg", "--epochs", str(args.epochs), "--json"])
    if rc != 0:
        raise SystemExit(f"training failed ({rc})")
    train_s = time.perf_counter() - t1
    model = load_model(model_path)
    rows = []
    for i, (name, mesh) in enumerate(test_meshes(args.n).items()):
        path = work / f"test{i}.femno"
        mfile = work / f"test{i}.msh"
        mesh.save(str(mfile))
        generate_dataset("darcy", samples=args.test_samples, out=path, seed=1000 + i,
                         family_options={"mesh": str(mfile)}, method="direct", progress=False)
        data = FEData.from_dataset(path)
        try:
            r = evaluate_model(model, data)
            r.pop("rel_l2")
            rows.append({"mesh": name, "dofs": int(data.n_dofs), **r})
        except Exception as exc:  # noqa: BLE001 - a refusal is a result here
            rows.append({"mesh": name, "dofs": int(data.n_dofs), "error": str(exc)})
        print(json.dumps(rows[-1], default=str)[:300], flush=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count(),
                        "torch": torch.__version__, "femno": __version__},
            "args": vars(args), "train_s": train_s, "generate_s": t1 - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1,
                                                   default=str))
    lines = ["| test mesh | dofs | median rel. L2 | max | ratio to training mesh | warnings |",
             "|---|---|---|---|---|---|"]
    base = rows[0].get("rel_l2_median", np.nan)
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mesh']} | {r['dofs']:,} | refused: {r['error'][:80]} | | | |")
            continue
        lines.append(f"| {r['mesh']} | {r['dofs']:,} | {100 * r['rel_l2_median']:.1f} % | "
                     f"{100 * r['rel_l2_max']:.1f} % | {r['rel_l2_median'] / base:.1f}x | "
                     f"{'; '.join(w.split(':')[-1].strip()[:40] for w in r['warnings']) or '-'} |")
    table = "\n".join(lines)
    out.with_name(out.name + ".table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
