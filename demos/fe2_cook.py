"""FE² demo: Cook's membrane with pluggable micro models, in a few seconds.

The macro problem is Cook's membrane (mm, N/mm, MPa).  Every macro integration point
asks its micro model for stress and consistent tangent in one batched call; here the
micro models are closed-form (the nonlinear elastic matrix law of SPEC §2 and its
small-strain linearization), so the demo runs on a laptop in seconds.  Swap in
``"fe"`` (full FE RVE at every point, parallel) or ``"equino:MODEL"`` (a trained
surrogate) for real FE² — the macro code does not change::

    python demos/fe2_cook.py                       # closed-form micro models
    python demos/fe2_cook.py --micro fe --n 2 --steps 2 --rve RVE3   # full FE² (minutes)

Prints the Newton residual norms of every load step (quadratic convergence) and saves
a figure with the force-displacement curves and the macro stress field.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402

from femno.multiscale.fe2 import plot_fe2, run_fe2  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12, help="macro elements per side (default 12)")
    ap.add_argument("--steps", type=int, default=8, help="load steps (default 8)")
    ap.add_argument("--load", type=float, default=60.0, help="total shear load, N/mm (default 60)")
    ap.add_argument("--micro", default="matrix", help="matrix | linear | fe | equino:MODEL")
    ap.add_argument("--rve", default="RVE1", help="RVE of --micro fe")
    ap.add_argument("--out", default="fe2_cook.png", help="figure file (default fe2_cook.png)")
    args = ap.parse_args(argv)

    print(f"Cook's membrane, {args.n}x{args.n} Q1 elements, load {args.load} N/mm, "
          f"{args.steps} load steps, micro model {args.micro!r}")
    res = run_fe2("cook", args.micro, steps=args.steps, n=args.n, load=args.load, rve=args.rve)
    for lam, hist in zip(res.load_factor[1:], res.residuals, strict=True):
        print(f"  load factor {lam:5.3f}: Newton residuals " + " ".join(f"{r:.1e}" for r in hist))
    lin = run_fe2("cook", "linear", steps=args.steps, n=args.n, load=args.load)
    print(f"tip displacement {res.displacement[-1]:.4f} mm ({args.micro}) vs "
          f"{lin.displacement[-1]:.4f} mm (linear), reaction {res.reaction[-1]:.4f} N/mm")
    print(f"micro model {res.micro_s:.3f} s, macro assembly + solves {res.macro_s:.3f} s")
    plot_fe2(res, args.out, others=[("linear (small-strain tangent)", lin)],
             title=f"Cook's membrane, micro model {args.micro!r}")
    print(f"figure saved to {args.out}")


if __name__ == "__main__":
    main()
