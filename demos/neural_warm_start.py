"""Demo: a neural surrogate in place of a solve, and as the Krylov initial guess.

Run ``python demos/neural_warm_start.py [--arch spon|spon-mg|fno|deeponet] [--quick]``
(about a minute with ``--quick`` on a laptop CPU).  It

1. generates a small Darcy dataset (``femno generate`` as a library call),
2. trains an operator network on it (``femno train ...``'s loop: relative L2 error in
   the FE mass-matrix norm) and saves it in femno's model format,
3. loads it as a :class:`femno.operators.surrogate.Surrogate`: ``predict(params)`` gives
   an FE function for new parameters without a solve (error and boundary error printed),
4. solves new systems to rtol 1e-8 with CG and AMG-PCG from x0 = 0, from the previous
   neighbour's solution and from the network's prediction (``solve_sequence(x0=...)``),
   and prints iterations: the answer always meets the tolerance, the guess only saves
   iterations.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="spon", choices=("spon", "spon-mg", "fno", "deeponet"))
    p.add_argument("--n", type=int, default=16, help="mesh cells per side (default 16)")
    p.add_argument("--samples", type=int, default=160, help="training samples (default 160)")
    p.add_argument("--epochs", type=int, default=60, help="training epochs (default 60)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    p.add_argument("--workdir", default=None, help="where data and model go (default: tmp)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.samples, args.epochs = 8, 40, 5
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    from femno.datagen.generate import generate_dataset
    from femno.datagen.sequence import solve_sequence
    from femno.operators.baselines import build_baseline
    from femno.operators.checkpoint import save_model
    from femno.operators.fe_data import FEData
    from femno.operators.fe_training import evaluate_operator, fit_operator
    from femno.operators.surrogate import NeuralInitialGuess, Surrogate, data_meta

    work = args.workdir or tempfile.mkdtemp(prefix="femno_warm_")
    path = os.path.join(work, f"darcy_n{args.n}_s{args.samples}.femno")
    opts = {"n": args.n, "length": 0.2}
    t = time.perf_counter()
    generate_dataset("darcy", samples=args.samples, out=path, family_options=opts,
                     seed=args.seed, progress=False)
    print(f"1. dataset: {args.samples} Darcy samples on a {args.n}x{args.n} mesh "
          f"({time.perf_counter() - t:.1f} s) -> {path}")

    data = FEData.from_dataset(path)
    train, val = data.train_val_test_split((0.9, 0.1), seed=args.seed)
    if args.arch.startswith("spon"):
        from femno.operators.spon import make_spon

        model = make_spon(args.arch, train, width=32, layers=4, seed=args.seed)
    else:
        model = build_baseline(args.arch, train, resolution=2 * args.n, seed=args.seed)
    res = fit_operator(model, train, val, epochs=args.epochs, batch_size=16, lr=2e-3,
                       seed=args.seed, device="cpu", progress=False)
    ev = evaluate_operator(model, val)
    model.meta = {"data": data_meta(data)}
    mpath = save_model(model, os.path.join(work, f"{args.arch}.pt"))
    print(f"2. trained {args.arch} for {res.epochs} epochs ({res.seconds:.1f} s): validation "
          f"relative L2 error {ev['rel_l2']:.3f}, Dirichlet error {ev['boundary_max']:.1e} "
          f"-> {mpath}")

    sur = Surrogate.load(mpath)                 # the family is rebuilt from the model record
    fam = sur.family
    rng = np.random.default_rng(12345)          # parameters the network has never seen
    systems = [fam.assemble(fam.sample(rng)) for _ in range(8)]
    t = time.perf_counter()
    preds = [sur.predict(s.params) for s in systems]
    t_pred = (time.perf_counter() - t) / len(systems)
    exact = solve_sequence(systems, method="direct").solutions
    errs = [data.rel_l2(u, s.expand(x)) for u, s, x in zip(preds, systems, exact, strict=True)]
    bnd = max(float(np.abs(u[sur.dirichlet]).max()) for u in preds)
    print(f"3. surrogate on 8 new samples: relative L2 error {np.mean(errs):.3f} (mean), "
          f"Dirichlet error {bnd:.1e}, {t_pred * 1e3:.1f} ms per prediction")

    print("4. warm start (rtol 1e-8, true residual):")
    print(f"   {'solver':8s} {'x0':28s} {'mean its':>9s} {'max residual':>13s}")
    for method, pc in (("cg", "none"), ("amg-cg", "amg")):
        for label, kw in (("zero", {}), ("previous neighbour (sorted)",
                                          {"sort": "greedy", "warm_start": True}),
                          (f"{args.arch} prediction", {"x0": NeuralInitialGuess(sur)})):
            r = solve_sequence(systems, method=method, pc=pc, rtol=1e-8, **kw)
            print(f"   {method:8s} {label:28s} {r.iterations.mean():9.1f} "
                  f"{r.residuals.max():13.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
