r"""Warm starts in time to accuracy: a neural initial guess against the neighbour's solution
and against zero (issue 18, item 5; no pass/fail threshold).

One process: a Darcy dataset (``femno generate``), a SPON trained on it for ``--epochs``,
then ``--systems`` new systems (parameters the network never saw) solved by CG and
AMG-PCG at rtol 1e-4, 1e-6 and 1e-8 from

* ``zero``: :math:`x_0 = 0`;
* ``neighbour``: the previous solution of the greedy-sorted sequence (``warm_start=True``);
* ``neural``: the network's prediction (``x0=NeuralInitialGuess``; the inference time
  counts in the solve time).

Per cell: mean iterations and mean seconds per system (inference included), and the
speed-up over ``zero``. Writes ``benchmarks/results/warm-time.{json,md}``::

    OMP_NUM_THREADS=1 python benchmarks/bench_warm_time.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--systems", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    from femno.datagen.generate import generate_dataset
    from femno.datagen.sequence import solve_sequence
    from femno.operators.checkpoint import save_model
    from femno.operators.fe_data import FEData
    from femno.operators.fe_training import evaluate_operator, fit_operator
    from femno.operators.spon import make_spon
    from femno.operators.surrogate import NeuralInitialGuess, Surrogate, data_meta

    work = tempfile.mkdtemp(prefix="femno_warmtime_")
    path = os.path.join(work, "darcy.femno")
    generate_dataset("darcy", samples=a.samples, out=path,
                     family_options={"n": a.n, "length": 0.2}, seed=a.seed, progress=False)
    data = FEData.from_dataset(path)
    train, val = data.train_val_test_split((0.9, 0.1), seed=a.seed)
    model = make_spon("spon", train, width=32, layers=4, seed=a.seed)
    fit = fit_operator(model, train, val, epochs=a.epochs, batch_size=16, lr=2e-3,
                       seed=a.seed, device="cpu", progress=False)
    ev = evaluate_operator(model, val)
    model.meta = {"data": data_meta(data)}
    sur = Surrogate.load(save_model(model, os.path.join(work, "spon.pt")))
    print(f"SPON: {fit.epochs} epochs, {fit.seconds:.0f} s, validation relative L2 "
          f"{ev['rel_l2']:.3f}", flush=True)
    fam = sur.family
    rng = np.random.default_rng(12345)
    systems = [fam.assemble(fam.sample(rng)) for _ in range(a.systems)]
    guesses = {"zero": {}, "neighbour": {"sort": "greedy", "warm_start": True},
               "neural": {"x0": NeuralInitialGuess(sur)}}
    rows = []
    for method, pc in (("cg", "none"), ("amg-cg", "amg")):
        for rtol in (1e-4, 1e-6, 1e-8):
            cells = {}
            for g, kw in guesses.items():
                solve_sequence(systems[:2], method=method, pc=pc, rtol=rtol, **kw)  # warm-up
                r = solve_sequence(systems, method=method, pc=pc, rtol=rtol, **kw)
                cells[g] = {"its": float(r.iterations.mean()),
                            "s": float(np.mean(r.times)),
                            "residual_max": float(r.residuals.max())}
            for g in cells:
                cells[g]["speedup"] = cells["zero"]["s"] / cells[g]["s"]
            rows.append({"method": method, "rtol": rtol, **cells})
            print(json.dumps(rows[-1]), flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    info = {"machine": machine, "n": a.n, "dofs": int(systems[0].dofs),
            "samples": a.samples, "epochs": fit.epochs, "train_s": fit.seconds,
            "val_rel_l2": ev["rel_l2"], "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "warm-time.json").write_text(json.dumps(info, indent=1))
    lines = ["# Warm starts in time to accuracy (neural guess, neighbour, zero)", "",
             f"`python benchmarks/bench_warm_time.py` on {machine}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Darcy n={a.n} "
             f"({info['dofs']:,} free dofs); SPON trained on {a.samples} samples for "
             f"{fit.epochs} epochs ({fit.seconds:.0f} s), validation relative L2 error "
             f"{ev['rel_l2']:.3f}; {a.systems} unseen systems. Cells: mean iterations / mean "
             "ms per system (the network's inference included) / speed-up over zero.", "",
             "| solver | rtol | zero | neighbour | neural |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[g]['its']:.1f} / {r[g]['s'] * 1e3:.2f} / {r[g]['speedup']:.2f}x"
                 for g in ("zero", "neighbour", "neural")]
        lines.append(f"| {r['method']} | {r['rtol']:g} | " + " | ".join(cells) + " |")
    (a.out / "warm-time.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out / 'warm-time.md'}")


if __name__ == "__main__":
    main()
